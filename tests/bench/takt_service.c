/* takt_service.c - request/response round trips (libipc/service.c).
 *
 *   A is a client of service <prefix>.svc: it sends a counter as an 8-byte
 *   request and takes the response; B is the server: it takes the request,
 *   loans a response, writes the counter back and responds, then releases
 *   the request (after the respond: off the critical path, as the pub/sub
 *   echo does). Polling spins on take; blocking sleeps in
 *   takt_client_wait / takt_server_wait when take says -EAGAIN. The same
 *   shape as the pub/sub ping-pong it is compared with (takt_ipc.c).
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <takt/ipc.h>

struct svc_state {
	takt_node *node;
	takt_client *cli;
	takt_server *srv;
	bool blocking;
};

static int svc_open(struct side *s)
{
	struct svc_state *t = calloc(1, sizeof *t);
	char name[96];
	int r;

	if (!t)
		return bench_fail(s, -ENOMEM, "state");
	s->impl = t;
	t->blocking = s->f->p.blocking;
	r = bench_takt_node(s, &t->node);
	if (r < 0)
		return r;
	snprintf(name, sizeof name, "%s.svc", s->prefix);
	const struct takt_service_opts so = { .service = name, .max_request = s->f->p.size,
					      .max_response = s->f->p.size };
	r = s->is_a ? takt_client_open(t->node, &so, &t->cli) : takt_server_open(t->node, &so, &t->srv);
	return r < 0 ? bench_fail(s, r, "%s('%s')", s->is_a ? "takt_client_open" : "takt_server_open", name) : 0;
}

static void svc_close(struct side *s)
{
	struct svc_state *t = s->impl;

	if (!t)
		return;
	takt_client_close(t->cli);
	takt_server_close(t->srv);
	takt_node_close(t->node);
	free(t);
	s->impl = NULL;
}

/* Sends v: its request id; retries while the server is not there yet
 * (B opens it a moment after A's client). */
static int64_t svc_send(struct side *s, struct svc_state *t, uint64_t v)
{
	uint64_t deadline = 0;
	void *p;
	int64_t id;
	int r;

	for (;;) {
		r = takt_client_loan(t->cli, s->f->p.size, &p);
		if (r < 0)
			return bench_fail(s, r, "takt_client_loan(%zu)", s->f->p.size);
		memcpy(p, &v, sizeof v);
		id = takt_client_send(t->cli, p);
		if (id != -ENOTCONN)
			break;
		takt_client_discard(t->cli, p);
		if (deadline == 0)
			deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;
		else if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "no server of '%s.svc'", s->prefix);
		bench_sleep_ms(1);
	}
	return id < 0 ? bench_fail(s, (int)id, "takt_client_send") : id;
}

static int svc_ping(struct side *s)
{
	struct svc_state *t = s->impl;
	uint64_t t0 = 0;

	for (uint64_t i = 1; i <= s->warmup + s->n + 1; i++) {
		uint64_t v = i > s->warmup + s->n ? BENCH_STOP : i, got;
		struct takt_request_info info;
		const void *x;
		int64_t id;
		int r;

		if (i == 1)
			t0 = bench_now_ns();
		id = svc_send(s, t, v);
		if (id < 0)
			return s->err;
		while ((r = takt_client_take(t->cli, &x, &info)) == -EAGAIN) {
			if (!t->blocking) {
				bench_spin(s);
				continue;
			}
			r = takt_client_wait(t->cli, -1);
			if (r < 0 && r != -EINTR)
				return bench_fail(s, r, "takt_client_wait");
		}
		if (r < 0)
			return bench_fail(s, r, "takt_client_take");
		memcpy(&got, x, sizeof got);
		takt_client_release(t->cli, x);
		if (info.request_id != (uint64_t)id || got != v)
			return bench_fail(s, -EPROTO, "response %" PRIu64 " to %" PRIu64 ", expected %" PRIu64 " to %" PRId64,
					  got, info.request_id, v, id);
		if (v == BENCH_STOP)
			break;
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	return 0;
}

static int svc_echo(struct side *s)
{
	struct svc_state *t = s->impl;

	for (;;) {
		struct takt_request_info info;
		const void *q;
		uint64_t v;
		void *p;
		int r;

		while ((r = takt_server_take(t->srv, &q, &info)) == -EAGAIN) {
			if (!t->blocking) {
				bench_spin(s);
				continue;
			}
			r = takt_server_wait(t->srv, -1);
			if (r < 0 && r != -EINTR)
				return bench_fail(s, r, "takt_server_wait");
		}
		if (r < 0)
			return bench_fail(s, r, "takt_server_take");
		memcpy(&v, q, sizeof v);
		r = takt_server_loan(t->srv, &info, s->f->p.size, &p);
		if (r == 0) {
			memcpy(p, &v, sizeof v);
			r = takt_server_respond(t->srv, &info, p);
		}
		takt_server_release(t->srv, q);
		if (r < 0)
			return bench_fail(s, r, "respond");
		if (v == BENCH_STOP)
			return 0;
	}
}

const struct impl takt_service_pingpong = { .open = svc_open, .run_a = svc_ping, .run_b = svc_echo, .close = svc_close };
