/* peer_zmq.c - ZeroMQ over ipc:// (a Unix socket): what many pick instead.
 *
 *   PAIR ping-pong   A's PAIR binds, B's connects; blocking send and recv of
 *                    8-byte messages, one round trip per sample
 *   PUB/SUB          A's PUB binds and sends 8-byte messages as fast as it
 *                    can, one zmq_send per message; B's SUB times batches.
 *                    Default high-water marks: a PUB that outruns its SUB
 *                    drops, and B counts the gaps as lost.
 * Each side's ZeroMQ I/O thread runs on that side's CPU with it.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#define ZMQ_BATCH 20000u

struct zmq_state {
	void *ctx, *sock;
	char path[128];
};

static int zmq_err(struct side *s, const char *what)
{
	return bench_fail(s, -zmq_errno(), "%s: %s", what, zmq_strerror(zmq_errno()));
}

static int zopen(struct side *s, int type)
{
	struct zmq_state *t = calloc(1, sizeof *t);
	char ep[160];
	int zero = 0, ivl = 10;

	if (!t)
		return bench_fail(s, -ENOMEM, "state");
	s->impl = t;
	/* One socket path per figure and run, under /tmp (sun_path < 108 bytes). */
	snprintf(t->path, sizeof t->path, "/tmp/%s.zmq", s->prefix);
	snprintf(ep, sizeof ep, "ipc://%s", t->path);
	t->ctx = zmq_ctx_new();
	if (!t->ctx)
		return zmq_err(s, "zmq_ctx_new");
	t->sock = zmq_socket(t->ctx, type);
	if (!t->sock)
		return zmq_err(s, "zmq_socket");
	zmq_setsockopt(t->sock, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(t->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl); /* B may connect before A binds */
	if (type == ZMQ_SUB && zmq_setsockopt(t->sock, ZMQ_SUBSCRIBE, "", 0) < 0)
		return zmq_err(s, "ZMQ_SUBSCRIBE");
	/* Lossless like the others: at the high-water mark send says EAGAIN
	 * (and we wait for room) instead of dropping. */
	if (type == ZMQ_PUB && zmq_setsockopt(t->sock, ZMQ_XPUB_NODROP, (int[]){ 1 }, sizeof(int)) < 0)
		return zmq_err(s, "ZMQ_XPUB_NODROP");
	if (s->is_a ? zmq_bind(t->sock, ep) < 0 : zmq_connect(t->sock, ep) < 0)
		return zmq_err(s, s->is_a ? "zmq_bind" : "zmq_connect");
	return 0;
}

static void zclose(struct side *s)
{
	struct zmq_state *t = s->impl;

	if (!t)
		return;
	if (t->sock)
		zmq_close(t->sock);
	if (t->ctx)
		zmq_ctx_term(t->ctx);
	if (s->is_a)
		unlink(t->path);
	free(t);
	s->impl = NULL;
}

static int zsend(struct side *s, uint64_t v, int flags)
{
	struct zmq_state *t = s->impl;

	while (zmq_send(t->sock, &v, sizeof v, flags) < 0)
		if (zmq_errno() != EINTR)
			return zmq_errno() == EAGAIN ? -EAGAIN : zmq_err(s, "zmq_send");
	return 0;
}

static int zrecv(struct side *s, uint64_t *v)
{
	struct zmq_state *t = s->impl;
	int k;

	while ((k = zmq_recv(t->sock, v, sizeof *v, 0)) < 0)
		if (zmq_errno() != EINTR)
			return zmq_err(s, "zmq_recv");
	return k == (int)sizeof *v ? 0 : bench_fail(s, -EBADMSG, "zmq message of %d bytes", k);
}

/* ---- PAIR ping-pong ------------------------------------------------------- */

static int pair_open(struct side *s)
{
	return zopen(s, ZMQ_PAIR);
}

/* A PAIR send blocks until the peer is connected: no probe needed. */
static int pair_ping(struct side *s)
{
	uint64_t t0 = bench_now_ns(), v;

	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		if (zsend(s, i, 0) < 0 || zrecv(s, &v) < 0)
			return s->err;
		if (v != i)
			return bench_fail(s, -EPROTO, "zmq pong carried %llu", (unsigned long long)v);
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	/* The stop, then B's word that it has it (so our close drops nothing). */
	return zsend(s, BENCH_STOP, 0) < 0 || zrecv(s, &v) < 0 ? s->err : 0;
}

static int pair_echo(struct side *s)
{
	uint64_t v;

	for (;;) {
		if (zrecv(s, &v) < 0 || zsend(s, v, 0) < 0)
			return s->err;
		if (v == BENCH_STOP)
			return 0;
	}
}

const struct impl zmq_pair_pingpong = { .open = pair_open, .run_a = pair_ping, .run_b = pair_echo, .close = zclose };

/* ---- REQ/REP round trips: the same loop, ZeroMQ's request/response -------- */

static int reqrep_open(struct side *s)
{
	return zopen(s, s->is_a ? ZMQ_REQ : ZMQ_REP);
}

const struct impl zmq_reqrep_pingpong = { .open = reqrep_open, .run_a = pair_ping, .run_b = pair_echo, .close = zclose };

/* ---- PUB/SUB throughput ------------------------------------------------------- */

static int ps_open(struct side *s)
{
	return zopen(s, s->is_a ? ZMQ_PUB : ZMQ_SUB);
}

/* A: probes of 0 until B heard one (w[1]), then 1, 2, 3 ... until B has its
 * samples (w[0]). */
static int ps_publish(struct side *s)
{
	_Atomic uint64_t *heard = &s->sh->w[1].v, *done = &s->sh->w[0].v;
	uint64_t deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;

	/* relaxed: each word is written once, by B; seeing it late costs nothing. */
	while (!atomic_load_explicit(heard, memory_order_relaxed)) {
		if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "zmq: no subscriber on '%s'", s->prefix);
		if (zsend(s, 0, 0) < 0)
			return s->err;
		bench_sleep_ms(1);
	}
	for (uint64_t i = 1; !atomic_load_explicit(done, memory_order_relaxed);) {
		int r = zsend(s, i, 0);

		if (r == 0) {
			i++;
		} else if (r == -EAGAIN) { /* at the high-water mark: sleep until there is room */
			zmq_pollitem_t it = { .socket = ((struct zmq_state *)s->impl)->sock, .events = ZMQ_POLLOUT };

			zmq_poll(&it, 1, 100);
		} else {
			return s->err;
		}
	}
	return 0;
}

static int ps_consume(struct side *s)
{
	uint64_t t0 = 0, total = (s->warmup + s->n) * ZMQ_BATCH, first = 0, v = 0;

	s->sh->batch = ZMQ_BATCH;
	for (uint64_t got = 0; got < total;) {
		if (zrecv(s, &v) < 0)
			return s->err;
		if (v == 0) { /* a probe */
			atomic_store_explicit(&s->sh->w[1].v, 1, memory_order_relaxed);
			continue;
		}
		if (!first)
			first = v;
		if (++got % ZMQ_BATCH == 0)
			bench_stamp(s, got / ZMQ_BATCH, &t0, bench_now_ns());
	}
	s->sh->drops = v - first + 1 - total;
	s->sh->n_out = s->n;
	atomic_store_explicit(&s->sh->w[0].v, 1, memory_order_relaxed); /* the publisher stops */
	return 0;
}

const struct impl zmq_pubsub = { .open = ps_open, .run_a = ps_publish, .run_b = ps_consume, .close = zclose };
