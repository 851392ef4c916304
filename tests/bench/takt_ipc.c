/* takt_ipc.c - takt's figures: ping-pong, throughput, fan-out.
 *
 *   ping-pong   A publishes a counter on <prefix>.ping, B takes it and
 *               publishes it back on <prefix>.pong. Polling spins on
 *               takt_sub_take; blocking sleeps in takt_sub_wait when take
 *               says -EAGAIN. Zero copy: only the first cache line of the
 *               payload is written and read, whatever its size; the
 *               bandwidth variant writes and reads all of it, both ways.
 *   throughput  A loans and publishes one message per publish as fast as
 *               it can; B takes and releases and times batches.
 *   fan-out     A publishes to N subscribers (all in B); each publish is
 *               timed alone, then A waits until B has taken it from all.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <takt/ipc.h>

#define MAX_SUBS 64
#define TAKT_BATCH 20000u

struct takt_state {
	takt_node *node;
	takt_pub *pub;
	takt_sub *sub[MAX_SUBS];
	unsigned nsubs;
	bool blocking;
};

static volatile uint64_t g_sink; /* what payload reads add up to: keeps them */

static int open_node(struct side *s, struct takt_state **ret)
{
	struct takt_state *t = calloc(1, sizeof *t);
	int r;

	if (!t)
		return bench_fail(s, -ENOMEM, "state");
	s->impl = t;
	t->blocking = s->f->p.blocking;
	r = bench_takt_node(s, &t->node);
	if (r < 0)
		return r;
	*ret = t;
	return 0;
}

int bench_takt_node(struct side *s, takt_node **out)
{
	const struct takt_node_opts no = { .domain = s->cfg->domain, .name = s->is_a ? BENCH_PROG : BENCH_PROG "-b" };
	int r = takt_node_open(&no, out);

	if (r < 0) {
		s->at_node_open = true;
		return bench_fail(s, r, "takt_node_open(domain '%s')", s->cfg->domain);
	}
	return 0;
}

static int open_pub(struct side *s, struct takt_state *t, const char *topic, size_t max_payload)
{
	const struct takt_pub_opts po = { .topic = topic, .max_payload = max_payload };
	int r = takt_pub_open(t->node, &po, &t->pub);

	return r < 0 ? bench_fail(s, r, "takt_pub_open('%s', %zu B)", topic, max_payload) : 0;
}

static int open_sub(struct side *s, struct takt_state *t, const char *topic, unsigned depth,
		    enum takt_overflow overflow)
{
	const struct takt_sub_opts so = { .topic = topic, .queue_depth = depth, .overflow = overflow };
	int r = takt_sub_open(t->node, &so, &t->sub[t->nsubs]);

	if (r < 0)
		return bench_fail(s, r, "takt_sub_open('%s') #%u", topic, t->nsubs + 1);
	t->nsubs++;
	return 0;
}

static void takt_close(struct side *s)
{
	struct takt_state *t = s->impl;

	if (!t)
		return;
	for (unsigned i = 0; i < t->nsubs; i++)
		takt_sub_close(t->sub[i]);
	takt_pub_close(t->pub);
	takt_node_close(t->node);
	free(t);
	s->impl = NULL;
}

/* Loans, writes v (the first word, or every byte when bandwidth) and
 * publishes: >= 0 subscribers reached. */
static int send_v(struct side *s, struct takt_state *t, uint64_t v, size_t size, bool all)
{
	void *p;
	int r = takt_pub_loan(t->pub, size, &p);

	if (r < 0)
		return bench_fail(s, r, "takt_pub_loan(%zu)", size);
	if (all)
		bench_fill(p, size, v);
	memcpy(p, &v, sizeof v);
	r = takt_pub_publish(t->pub, p);
	return r < 0 ? bench_fail(s, r, "takt_pub_publish") : r;
}

/* Takes the next sample of subscriber k, spinning (polling) or sleeping in
 * takt_sub_wait (blocking) while there is none. The caller releases it. */
static int recv_v(struct side *s, struct takt_state *t, unsigned k, uint64_t *v, const void **payload,
		  bool all)
{
	struct takt_sample_info info;
	int r;

	while ((r = takt_sub_take(t->sub[k], payload, &info)) == -EAGAIN) {
		if (!t->blocking) {
			bench_spin(s);
			continue;
		}
		r = takt_sub_wait(t->sub[k], -1);
		if (r < 0 && r != -EINTR)
			return bench_fail(s, r, "takt_sub_wait");
	}
	if (r < 0)
		return bench_fail(s, r, "takt_sub_take");
	if (info.size < sizeof *v) {
		takt_sub_release(t->sub[k], *payload);
		return bench_fail(s, -EBADMSG, "sample of %" PRIu32 " bytes", info.size);
	}
	memcpy(v, *payload, sizeof *v);
	if (all)
		g_sink += bench_read_all(*payload, info.size);
	return 0;
}

/* ---- ping-pong ------------------------------------------------------------- */

static int pp_open(struct side *s)
{
	struct takt_state *t;
	char out[96], in[96];
	int r = open_node(s, &t);

	if (r < 0)
		return r;
	snprintf(out, sizeof out, "%s.%s", s->prefix, s->is_a ? "ping" : "pong");
	snprintf(in, sizeof in, "%s.%s", s->prefix, s->is_a ? "pong" : "ping");
	r = open_pub(s, t, out, s->f->p.size);
	return r < 0 ? r : open_sub(s, t, in, 16, TAKT_OVERFLOW_DROP_OLDEST);
}

/* The broker connects a new subscriber a moment after it opened, and a
 * sample published before that reaches no one: publish 0 until it reaches
 * B, then wait for its echo. */
static int pp_connect(struct side *s, struct takt_state *t)
{
	uint64_t deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull, v;
	const void *p;
	int r;

	while ((r = send_v(s, t, 0, sizeof v, false)) == 0) {
		if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "no subscriber on '%s.ping'", s->prefix);
		bench_sleep_ms(1);
	}
	if (r < 0 || recv_v(s, t, 0, &v, &p, false) < 0)
		return s->err;
	takt_sub_release(t->sub[0], p);
	return v == 0 ? 0 : bench_fail(s, -EPROTO, "first pong carried %" PRIu64 ", expected 0", v);
}

static int pp_ping(struct side *s)
{
	struct takt_state *t = s->impl;
	size_t size = s->f->p.size;
	bool all = s->f->p.bandwidth;
	uint64_t t0, v;
	const void *p;

	if (pp_connect(s, t) < 0)
		return s->err;
	t0 = bench_now_ns();
	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		if (send_v(s, t, i, size, all) < 0 || recv_v(s, t, 0, &v, &p, all) < 0)
			return s->err;
		takt_sub_release(t->sub[0], p);
		if (v != i)
			return bench_fail(s, -EPROTO, "pong carried %" PRIu64 ", expected %" PRIu64, v, i);
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	return send_v(s, t, BENCH_STOP, sizeof v, false) < 0 ? s->err : 0;
}

/* Echoes v, republishing while A's subscriber is not connected yet (see
 * pp_connect); a sample that reached no one cannot arrive twice. */
static int pp_echo_send(struct side *s, struct takt_state *t, uint64_t v, size_t size, bool all)
{
	uint64_t deadline = 0;
	int r;

	while ((r = send_v(s, t, v, size, all)) == 0) {
		if (deadline == 0)
			deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;
		else if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "no subscriber on '%s.pong'", s->prefix);
		bench_sleep_ms(1);
	}
	return r < 0 ? r : 0;
}

static int pp_echo(struct side *s)
{
	struct takt_state *t = s->impl;
	bool all = s->f->p.bandwidth;
	const void *p;
	uint64_t v;
	int r;

	for (;;) {
		if (recv_v(s, t, 0, &v, &p, all) < 0)
			return s->err;
		/* Echo first, release after: a forwarding node's release is off
		 * the critical path, and here it overlaps A's take. */
		r = v == BENCH_STOP ? 0 : pp_echo_send(s, t, v, v ? s->f->p.size : sizeof v, all && v);
		takt_sub_release(t->sub[0], p);
		if (r < 0 || v == BENCH_STOP)
			return r;
	}
}

const struct impl takt_pingpong = { .open = pp_open, .run_a = pp_ping, .run_b = pp_echo, .close = takt_close };

/* ---- throughput ------------------------------------------------------------ */

static int tp_open(struct side *s)
{
	struct takt_state *t;
	char topic[96];
	int r = open_node(s, &t);

	if (r < 0)
		return r;
	snprintf(topic, sizeof topic, "%s.tp", s->prefix);
	if (s->is_a)
		return open_pub(s, t, topic, s->f->p.size);
	/* BLOCK: lossless, like the raw ring, whose producer waits for room. */
	return open_sub(s, t, topic, 256, TAKT_OVERFLOW_BLOCK);
}

/* Publisher: 1, 2, 3 ... (after probes of 0 until B is connected) until B
 * raises w[0]. */
static int tp_produce(struct side *s)
{
	struct takt_state *t = s->impl;
	_Atomic uint64_t *done = &s->sh->w[0].v;
	uint64_t deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;
	size_t size = s->f->p.size;
	int r;

	while ((r = send_v(s, t, 0, size, false)) == 0) {
		if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "no subscriber on '%s.tp'", s->prefix);
		bench_sleep_ms(1);
	}
	if (r < 0)
		return r;
	/* relaxed: written once, by the consumer; seeing it late costs nothing. */
	for (uint64_t i = 1; !atomic_load_explicit(done, memory_order_relaxed); i++) {
		void *p;

		while ((r = takt_pub_loan(t->pub, size, &p)) == -ENOBUFS) /* all chunks queued */
			if (atomic_load_explicit(done, memory_order_relaxed))
				return 0;
		if (r < 0)
			return bench_fail(s, r, "takt_pub_loan");
		memcpy(p, &i, sizeof i);
		r = takt_pub_publish(t->pub, p);
		if (r < 0)
			return bench_fail(s, r, "takt_pub_publish");
	}
	return 0;
}

static int tp_consume(struct side *s)
{
	struct takt_state *t = s->impl;
	uint64_t t0 = 0, total = (s->warmup + s->n) * TAKT_BATCH, last = 0, v;
	const void *p;

	s->sh->batch = TAKT_BATCH;
	for (uint64_t got = 0; got < total;) {
		if (recv_v(s, t, 0, &v, &p, false) < 0)
			return s->err;
		takt_sub_release(t->sub[0], p);
		if (v == 0)
			continue; /* a connection probe */
		if (v <= last)
			return bench_fail(s, -EPROTO, "sample %" PRIu64 " after %" PRIu64, v, last);
		last = v;
		if (++got % TAKT_BATCH == 0)
			bench_stamp(s, got / TAKT_BATCH, &t0, bench_now_ns());
	}
	s->sh->drops = takt_sub_dropped(t->sub[0]);
	s->sh->n_out = s->n;
	atomic_store_explicit(&s->sh->w[0].v, 1, memory_order_relaxed); /* the publisher stops */
	return 0;
}

const struct impl takt_throughput = { .open = tp_open, .run_a = tp_produce, .run_b = tp_consume, .close = takt_close };

/* ---- fan-out ------------------------------------------------------------------ */

static int fo_open(struct side *s)
{
	struct takt_state *t;
	char topic[96];
	int r = open_node(s, &t);

	if (r < 0)
		return r;
	snprintf(topic, sizeof topic, "%s.fan", s->prefix);
	if (s->is_a)
		return open_pub(s, t, topic, sizeof(uint64_t));
	for (unsigned i = 0; i < s->f->p.nsubs && r == 0; i++)
		r = open_sub(s, t, topic, 16, TAKT_OVERFLOW_DROP_OLDEST);
	return r;
}

/* A: publish i (timed: loan + write + publish), wait until B acked it. The
 * ack (w[0]) is written by B only; A's spin on it keeps the line shared. */
static int fo_publish(struct side *s)
{
	struct takt_state *t = s->impl;
	_Atomic uint64_t *ack = &s->sh->w[0].v;
	unsigned n = s->f->p.nsubs;
	uint64_t deadline = bench_now_ns() + BENCH_HANDSHAKE_MS * 1000000ull;
	int r;

	while ((r = send_v(s, t, 0, sizeof(uint64_t), false)) >= 0 && (unsigned)r < n) {
		if (bench_now_ns() > deadline)
			return bench_fail(s, -ETIMEDOUT, "%d of %u subscribers connected", r, n);
		bench_sleep_ms(1);
	}
	if (r < 0)
		return r;
	for (uint64_t i = 1; i <= s->warmup + s->n + 1; i++) {
		uint64_t v = i > s->warmup + s->n ? BENCH_STOP : i, t0, t1;
		void *p;

		t0 = bench_now_ns();
		r = takt_pub_loan(t->pub, sizeof v, &p);
		if (r < 0)
			return bench_fail(s, r, "takt_pub_loan");
		memcpy(p, &v, sizeof v);
		r = takt_pub_publish(t->pub, p);
		t1 = bench_now_ns();
		if (r != (int)n)
			return bench_fail(s, r < 0 ? r : -EPIPE, "publish reached %d of %u subscribers", r, n);
		if (v == BENCH_STOP)
			break;
		if (i > s->warmup)
			s->sh->samples[i - s->warmup - 1] = t1 - t0;
		/* F1: acquire pairs with B's release F2: B took i from all. */
		while (atomic_load_explicit(ack, memory_order_acquire) != i)
			bench_spin(s);
	}
	s->sh->n_out = s->n;
	return 0;
}

static int fo_consume(struct side *s)
{
	struct takt_state *t = s->impl;
	const void *p;
	uint64_t v = 0;

	for (;;) {
		for (unsigned k = 0; k < t->nsubs; k++) {
			do { /* probes (0) of the connection phase are skipped */
				if (recv_v(s, t, k, &v, &p, false) < 0)
					return s->err;
				takt_sub_release(t->sub[k], p);
			} while (v == 0);
		}
		if (v == BENCH_STOP)
			return 0;
		/* F2: release pairs with A's acquire F1. */
		atomic_store_explicit(&s->sh->w[0].v, v, memory_order_release);
	}
}

const struct impl takt_fanout = { .open = fo_open, .run_a = fo_publish, .run_b = fo_consume, .close = takt_close };
