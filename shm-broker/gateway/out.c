/* out.c - takt-gateway's outbound direction: takt topics matching an
 * [out PATTERN] rule, found by takt_node_topics and followed with its
 * generation (TG0), are subscribed to (zero copy: the DDS sample's payload
 * points into the takt chunk; DDS serialises from there) and written to
 * DDS. Samples another gateway imported (origin != 0) are never exported
 * again. This thread alone uses the subscribers. */
#include "gateway.h"
#include "sample.h"

#include <dds/dds.h>
#include <errno.h>
#include <lz4.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

struct out_topic {
	takt_sub *sub;
	dds_entity_t writer;
	struct gw_bridge *b;
	char *lz4buf;            /* the LZ4 arena of a batch */
	size_t lz4cap;
	uint64_t dropped_seen;   /* takt_sub_dropped already counted */
	char type_name[TAKT_TOPIC_NAME_MAX]; /* the topic's, as the registry says */
	_Atomic bool written;
};

/* The batch being filled: each entry's payload is still its takt chunk
 * (held until the write returns), or its LZ4 block in the topic's arena. */
struct out_batch {
	takt_gateway_Sample e[GW_BATCH_MAX];
	const void *held[GW_BATCH_MAX];
	unsigned n;
	uint64_t bytes, wire;    /* payload before and after compression */
	size_t arena_used;
};

struct out_state {
	struct gw *g;
	int ep;
	struct out_topic *t[GW_MAX_BRIDGES];
	unsigned n;
	uint32_t gen;
	uint64_t epoch;
	bool rescan;
	struct out_batch batch;
};

/* A reader matched a transient-local writer that has written: it is
 * served the history (a late joiner). Cyclone's thread: counters only. */
static void on_matched(dds_entity_t w, const dds_publication_matched_status_t st, void *arg)
{
	struct out_topic *t = arg;

	(void)w;
	if (st.current_count_change > 0 && atomic_load_explicit(&t->written, memory_order_relaxed))
		atomic_fetch_add_explicit(&t->b->c.late_joiners, (uint64_t)st.current_count_change,
					  memory_order_relaxed);
}

static bool out_has(const struct out_state *s, const char *topic)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->t[i]->b->topic, topic))
			return true;
	return false;
}

static void out_free(struct out_topic *t)
{
	if (t->writer > 0)
		dds_delete(t->writer);
	takt_sub_close(t->sub);
	free(t->lz4buf);
	free(t);
}

/* Opens the subscriber and the DDS writer of one topic: 0, or a negative
 * errno (logged; the next scan tries again). */
static int out_open(struct out_state *s, const struct takt_topic_info *ti, const struct gw_rule *r)
{
	struct gw *g = s->g;
	struct out_topic *t = calloc(1, sizeof(*t));
	const char *topic = ti->name;
	struct takt_sub_opts so = {.topic = topic, .queue_depth = r->queue_depth, .history = r->late_joiners,
				   .overflow = r->lossless ? TAKT_OVERFLOW_BLOCK : TAKT_OVERFLOW_DROP_OLDEST};
	char dname[256];
	dds_entity_t tp;
	dds_qos_t *q;
	dds_listener_t *l;
	int rc;

	if (!t || s->n == GW_MAX_BRIDGES) {
		free(t);
		return -ENOSPC;
	}
	rc = takt_sub_open(g->node, &so, &t->sub);
	if (rc < 0) {
		fprintf(stderr, "takt-gateway: out '%s': cannot subscribe: %s\n", topic, strerror(-rc));
		free(t);
		return rc;
	}
	memcpy(t->type_name, ti->type_name, sizeof(t->type_name));
	if (r->lz4) {
		/* the compressed entries of one batch: room for batch bytes
		 * and one more sample (one that finds no room goes raw) */
		t->lz4cap = (size_t)LZ4_compressBound((int)r->max_payload) + r->batch + r->batch / 64 + 16 * GW_BATCH_MAX;
		t->lz4buf = malloc(t->lz4cap);
	}
	gw_dds_name(topic, dname, sizeof(dname));
	tp = dds_create_topic(g->participant, &takt_gateway_Batch_desc, dname, NULL, NULL);
	q = gw_qos(r);
	l = dds_create_listener(t);
	dds_lset_publication_matched(l, on_matched);
	t->writer = tp < 0 ? tp : dds_create_writer(g->participant, tp, q, l);
	dds_delete_listener(l);
	dds_delete_qos(q);
	t->b = gw_bridge_new(g, GW_OUT, topic, r);
	if (t->writer < 0 || (r->lz4 && !t->lz4buf) || !t->b) {
		fprintf(stderr, "takt-gateway: out '%s': cannot create the DDS writer of '%s': %s\n", topic, dname,
			t->writer < 0 ? dds_strretcode(t->writer) : "out of memory or bridges");
		out_free(t);
		return -EIO;
	}
	/* edge-triggered: a wake-up costs no read of the eventfd */
	if (epoll_ctl(s->ep, EPOLL_CTL_ADD, takt_sub_fd_edge(t->sub),
		      &(struct epoll_event){.events = EPOLLIN | EPOLLET, .data.ptr = t})) {
		out_free(t);
		return -errno;
	}
	s->t[s->n++] = t;
	fprintf(stderr, "takt-gateway: out '%s' -> DDS '%s' (%s, %s%s)\n", topic, dname,
		r->reliable ? "reliable" : "best-effort", r->late_joiners ? "transient-local" : "volatile",
		r->lz4 ? ", lz4" : "");
	return 0;
}

/* Subscribes to every topic of the domain an [out] rule names and we do
 * not bridge yet. A failed open (the broker restarting, say) is retried
 * at the next scan. */
static void out_scan(struct out_state *s)
{
	struct takt_topic_info ti[256];
	int n;

	s->gen = takt_node_topics_gen(s->g->node);
	s->epoch = takt_node_epoch(s->g->node);
	s->rescan = false;
	n = takt_node_topics(s->g->node, NULL, ti, 256);
	for (int i = 0; i < n && i < 256; i++) {
		const struct gw_rule *r;

		if (!strncmp(ti[i].name, GW_STATS_PREFIX, strlen(GW_STATS_PREFIX)) || out_has(s, ti[i].name))
			continue;
		r = gw_rule_match(&s->g->cfg, GW_OUT, ti[i].name);
		if (r && out_open(s, &ti[i], r) < 0)
			s->rescan = true;
	}
}

/* One taken sample into the batch, or counted and released: false when
 * it did not join. */
static bool out_add(struct out_topic *t, struct out_batch *b, const void *p, const struct takt_sample_info *in)
{
	struct gw_counters *c = &t->b->c;
	takt_gateway_Sample *x = &b->e[b->n];

	if (in->origin || in->size > t->b->rule->max_payload) {
		/* imported by a gateway (never exported again), or too large */
		atomic_fetch_add_explicit(in->origin ? &c->skipped : &c->drops, 1, memory_order_relaxed);
		takt_sub_release(t->sub, p);
		return false;
	}
	*x = (takt_gateway_Sample){.publisher_id = in->publisher_id, .seq = in->seq, .publish_ns = in->publish_ns,
				   .size = in->size, .encoding = 0};
	x->payload = (dds_sequence_octet){._length = in->size, ._maximum = in->size, ._buffer = (uint8_t *)p};
	if (t->lz4buf && t->lz4cap - b->arena_used >= (size_t)LZ4_compressBound((int)in->size)) {
		/* (no room left in the arena: this one travels raw) */
		char *z = t->lz4buf + b->arena_used;
		int n = LZ4_compress_default(p, z, (int)in->size, LZ4_compressBound((int)in->size));

		if (n > 0 && (uint32_t)n < in->size) {
			x->encoding = 1;
			x->payload = (dds_sequence_octet){._length = (uint32_t)n, ._maximum = (uint32_t)n,
							  ._buffer = (uint8_t *)z};
			b->arena_used += (size_t)n;
		}
	}
	b->held[b->n++] = p;
	b->bytes += in->size;
	b->wire += x->payload._length;
	return true;
}

/* The batch to DDS as one sample, then its chunks back to takt. */
static void out_write(struct out_state *s, struct out_topic *t, struct out_batch *b)
{
	struct gw_counters *c = &t->b->c;
	takt_gateway_Batch x = {.origin = s->g->cfg.origin,
				.samples = {._length = b->n, ._maximum = b->n, ._buffer = b->e}};
	dds_return_t rc;

	_Static_assert(sizeof(x.type_name) == TAKT_TOPIC_NAME_MAX, "type names of the registry");
	memcpy(x.type_name, t->type_name, sizeof(x.type_name));
	while ((rc = dds_write(t->writer, &x)) == DDS_RETCODE_TIMEOUT && t->b->rule->lossless &&
	       !atomic_load_explicit(&s->g->stop, memory_order_relaxed))
		atomic_fetch_add_explicit(&c->write_errors, 1, memory_order_relaxed);
	for (unsigned i = 0; i < b->n; i++)
		takt_sub_release(t->sub, b->held[i]);
	if (rc < 0) {
		atomic_fetch_add_explicit(&c->write_errors, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->drops, b->n, memory_order_relaxed);
	} else {
		atomic_store_explicit(&t->written, true, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->samples, b->n, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->bytes, b->bytes, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->wire_bytes, b->wire, memory_order_relaxed);
	}
	b->n = 0;
	b->bytes = b->wire = 0;
	b->arena_used = 0;
}

/* Takes every waiting sample of every topic: how many. What queued up
 * travels in batches of at most [out] batch bytes (and GW_BATCH_MAX
 * samples, and as many as takt lets us hold: a take's -ENOBUFS); a lone
 * sample alone, at once. */
static unsigned out_drain(struct out_state *s)
{
	struct out_batch *b = &s->batch;
	unsigned total = 0;

	for (unsigned i = 0; i < s->n; i++) {
		struct out_topic *t = s->t[i];
		uint64_t cap = t->b->rule->batch, d;
		struct takt_sample_info info;
		unsigned k = 0;
		const void *p;

		for (;;) {
			while (b->n < GW_BATCH_MAX && takt_sub_take(t->sub, &p, &info) == 0) {
				k++;
				if (out_add(t, b, p, &info) && b->bytes >= cap)
					break;
			}
			/* none waiting, or the hold limit reached (-ENOBUFS:
			 * writing releases what we hold) */
			if (!b->n)
				break;
			out_write(s, t, b);
		}
		/* writes are batched too (gw_qos): what this drain wrote
		 * leaves now, in as few packets as fit */
		if (k)
			dds_write_flush(t->writer);
		total += k;
		d = takt_sub_dropped(t->sub);
		if (d != t->dropped_seen) {
			atomic_fetch_add_explicit(&t->b->c.drops, d - t->dropped_seen, memory_order_relaxed);
			t->dropped_seen = d;
		}
	}
	return total;
}

void *gw_out_thread(void *arg)
{
	struct out_state s = {.g = arg, .rescan = true};
	struct epoll_event ev[16];

	s.ep = epoll_create1(EPOLL_CLOEXEC);
	if (s.ep < 0 || epoll_ctl(s.ep, EPOLL_CTL_ADD, s.g->stop_fd, &(struct epoll_event){.events = EPOLLIN})) {
		fprintf(stderr, "takt-gateway: epoll: %s\n", strerror(errno));
		return NULL;
	}
	while (!atomic_load_explicit(&s.g->stop, memory_order_relaxed)) {
		bool waiting = false;

		if (s.rescan || takt_node_topics_gen(s.g->node) != s.gen || takt_node_epoch(s.g->node) != s.epoch)
			out_scan(&s);
		if (out_drain(&s))
			continue;
		for (unsigned i = 0; i < s.n; i++)
			waiting |= takt_sub_arm(s.t[i]->sub) == 1;
		/* a bounded sleep: topics are looked for again at least every
		 * 100 ms (a change of generation is seen at the next wake) */
		if (!waiting)
			epoll_wait(s.ep, ev, 16, 100);
	}
	for (unsigned i = 0; i < s.n; i++)
		out_free(s.t[i]);
	close(s.ep);
	return NULL;
}
