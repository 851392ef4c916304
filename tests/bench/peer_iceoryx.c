/* peer_iceoryx.c - iceoryx 2.0.3 through its C binding: the same ping-pong.
 *
 * Each side is its own iceoryx runtime (registered with iox-roudi, which
 * scripts/bench starts), with a publisher on its direction and a subscriber
 * on the other, as in iceoryx's own iceperf. Polling spins on
 * iox_sub_take_chunk; blocking sleeps in a WaitSet with the subscriber's
 * HAS_DATA state attached. Only the first 8 bytes of each chunk are written
 * and read, like takt's zero-copy figures.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <iceoryx_binding_c/log.h>
#include <iceoryx_binding_c/publisher.h>
#include <iceoryx_binding_c/runtime.h>
#include <iceoryx_binding_c/subscriber.h>
#include <iceoryx_binding_c/wait_set.h>

struct iox_state {
	iox_pub_storage_t pub_storage;
	iox_sub_storage_t sub_storage;
	iox_ws_storage_t ws_storage;
	iox_pub_t pub;
	iox_sub_t sub;
	iox_ws_t ws;
	bool runtime;
};

static int iox_open(struct side *s)
{
	struct iox_state *t = calloc(1, sizeof *t);
	iox_pub_options_t po;
	iox_sub_options_t so;
	char name[64];

	if (!t)
		return bench_fail(s, -ENOMEM, "state");
	s->impl = t;
	iox_set_loglevel(Iceoryx_LogLevel_Warn);
	/* Runtime names are unique per process while it lives. */
	snprintf(name, sizeof name, "takt-bench-%c-%d", s->is_a ? 'a' : 'b', (int)getpid());
	iox_runtime_init(name); /* waits for iox-roudi: the caller promised it runs */
	t->runtime = true;
	iox_pub_options_init(&po);
	po.historyCapacity = 0;
	iox_sub_options_init(&so);
	so.queueCapacity = 16;
	so.historyRequest = 0;
	t->pub = iox_pub_init(&t->pub_storage, "takt-bench", s->prefix, s->is_a ? "ping" : "pong", &po);
	t->sub = iox_sub_init(&t->sub_storage, "takt-bench", s->prefix, s->is_a ? "pong" : "ping", &so);
	if (!t->pub || !t->sub)
		return bench_fail(s, -EIO, "iox_pub_init/iox_sub_init");
	if (s->f->p.blocking) {
		t->ws = iox_ws_init(&t->ws_storage);
		if (!t->ws || iox_ws_attach_subscriber_state(t->ws, t->sub, SubscriberState_HAS_DATA, 0, NULL) !=
				      WaitSetResult_SUCCESS)
			return bench_fail(s, -EIO, "iox_ws_attach_subscriber_state");
	}
	return 0;
}

static void iox_close(struct side *s)
{
	struct iox_state *t = s->impl;

	if (!t)
		return;
	if (t->ws) {
		iox_ws_detach_subscriber_state(t->ws, t->sub, SubscriberState_HAS_DATA);
		iox_ws_deinit(t->ws);
	}
	if (t->sub)
		iox_sub_deinit(t->sub);
	if (t->pub)
		iox_pub_deinit(t->pub);
	if (t->runtime)
		iox_runtime_shutdown();
	free(t);
	s->impl = NULL;
}

/* Both directions connected: our subscriber subscribed, our publisher has
 * the other side's subscriber. */
static int iox_connect(struct side *s, struct iox_state *t)
{
	uint64_t deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;

	while (iox_sub_get_subscription_state(t->sub) != SubscribeState_SUBSCRIBED || !iox_pub_has_subscribers(t->pub)) {
		if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "iceoryx: no connection on '%s'", s->prefix);
		bench_sleep_ms(1);
	}
	return 0;
}

static int iox_send(struct side *s, struct iox_state *t, uint64_t v)
{
	void *p;
	enum iox_AllocationResult r = iox_pub_loan_chunk(t->pub, &p, sizeof v);

	if (r != AllocationResult_SUCCESS)
		return bench_fail(s, -ENOBUFS, "iox_pub_loan_chunk: %d", (int)r);
	memcpy(p, &v, sizeof v);
	iox_pub_publish_chunk(t->pub, p);
	return 0;
}

static int iox_recv(struct side *s, struct iox_state *t, uint64_t *v)
{
	iox_notification_info_t info[1];
	uint64_t missed;
	const void *p;
	enum iox_ChunkReceiveResult r;

	while ((r = iox_sub_take_chunk(t->sub, &p)) == ChunkReceiveResult_NO_CHUNK_AVAILABLE) {
		if (t->ws)
			iox_ws_wait(t->ws, info, 1, &missed);
		else
			bench_spin(s);
	}
	if (r != ChunkReceiveResult_SUCCESS)
		return bench_fail(s, -EIO, "iox_sub_take_chunk: %d", (int)r);
	memcpy(v, p, sizeof *v);
	iox_sub_release_chunk(t->sub, p);
	return 0;
}

static int iox_ping(struct side *s)
{
	struct iox_state *t = s->impl;
	uint64_t t0, v;

	if (iox_connect(s, t) < 0)
		return s->err;
	t0 = bench_now_ns();
	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		if (iox_send(s, t, i) < 0 || iox_recv(s, t, &v) < 0)
			return s->err;
		if (v != i)
			return bench_fail(s, -EPROTO, "iceoryx pong carried %llu, expected %llu", (unsigned long long)v,
					  (unsigned long long)i);
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	if (iox_send(s, t, BENCH_STOP) < 0)
		return s->err;
	/* Stay until B has the stop (w[3]): a publisher that goes away may take
	 * its last chunk with it. */
	for (int ms = 0; ms < 1000 && !atomic_load_explicit(&s->sh->w[3].v, memory_order_acquire); ms++)
		bench_sleep_ms(1);
	return 0;
}

static int iox_echo(struct side *s)
{
	struct iox_state *t = s->impl;
	uint64_t v;

	if (iox_connect(s, t) < 0)
		return s->err;
	for (;;) {
		if (iox_recv(s, t, &v) < 0)
			return s->err;
		if (v == BENCH_STOP) {
			atomic_store_explicit(&s->sh->w[3].v, 1, memory_order_release); /* A may leave */
			return 0;
		}
		if (iox_send(s, t, v) < 0)
			return s->err;
	}
}

const struct impl iox_pingpong = { .open = iox_open, .run_a = iox_ping, .run_b = iox_echo, .close = iox_close };
