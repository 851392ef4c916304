/* in.c - takt-gateway's inbound direction: DDS topics of takt samples
 * (GW_DDS_PREFIX) whose takt name matches an [in PATTERN] rule, found
 * through DDS discovery (the DCPSPublication built-in topic), are read and
 * published into takt with one loan each: one copy, from the DDS buffer
 * (loaned by dds_take) into the chunk, or LZ4's decompression into it.
 * Each publisher is tagged with the gateway's origin, so no gateway
 * exports what it imported. A topic's samples are taken and published in
 * its reader's data-available listener, on Cyclone's receive thread (no
 * hand-off to another thread: as ddsperf does by default); Cyclone calls
 * one reader's listener from one thread at a time, so each publisher has
 * one user at a time. The inbound thread only discovers and creates. */
#include "gateway.h"
#include "sample.h"

#include <dds/dds.h>
#include <errno.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IN_BATCH 64
struct in_topic {
	struct gw *g;
	dds_entity_t reader;
	takt_pub *pub;
	struct gw_bridge *b;
	char type_name[TAKT_TOPIC_NAME_MAX];
	struct gw_seen_topic *seen; /* seen.c: what was published, per remote publisher */
	uint32_t lost_seen;      /* DDS sample-lost count already counted (inbound thread) */
};

struct in_state {
	struct gw *g;
	dds_entity_t ws, discovery, discovery_cond;
	struct in_topic *t[GW_MAX_BRIDGES];
	unsigned n;
};

static void in_free(struct in_topic *t)
{
	if (t->reader > 0)
		dds_delete(t->reader);
	takt_pub_close(t->pub);
	free(t);
}

static bool in_has(const struct in_state *s, const char *topic)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->t[i]->b->topic, topic))
			return true;
	return false;
}

static void in_take(dds_entity_t reader, void *arg);

/* A DDS writer of takt samples appeared on dname: read it if a rule says so. */
static void in_open(struct in_state *s, const char *dname, const char *dtype)
{
	char topic[TAKT_TOPIC_NAME_MAX];
	const struct gw_rule *r;
	struct in_topic *t;
	dds_listener_t *l;
	dds_entity_t tp;
	dds_qos_t *q;

	if (gw_takt_name(dname, topic, sizeof(topic)) < 0 || strcmp(dtype, "takt::gateway::Batch") ||
	    !strncmp(topic, GW_STATS_PREFIX, strlen(GW_STATS_PREFIX)) || in_has(s, topic) ||
	    !(r = gw_rule_match(&s->g->cfg, GW_IN, topic)) || s->n == GW_MAX_BRIDGES)
		return;
	t = calloc(1, sizeof(*t));
	if (!t)
		return;
	t->g = s->g;
	t->b = gw_bridge_new(s->g, GW_IN, topic, r);
	t->seen = gw_seen_topic(s->g, topic);
	tp = dds_create_topic(s->g->participant, &takt_gateway_Batch_desc, dname, NULL, NULL);
	q = gw_qos(r);
	l = dds_create_listener(t);
	dds_lset_data_available(l, in_take);
	/* filled in before the reader exists: its listener may run at once */
	t->reader = tp < 0 || !t->b || !t->seen ? -1 : dds_create_reader(s->g->participant, tp, q, l);
	dds_delete_listener(l);
	dds_delete_qos(q);
	if (t->reader < 0) {
		fprintf(stderr, "takt-gateway: in '%s': cannot read DDS '%s': %s\n", topic, dname,
			t->b ? dds_strretcode(t->reader) : "out of bridges");
		in_free(t);
		return;
	}
	s->t[s->n++] = t;
	fprintf(stderr, "takt-gateway: in DDS '%s' -> '%s' (%s, %s)\n", dname, topic,
		r->reliable ? "reliable" : "best-effort", r->late_joiners ? "transient-local" : "volatile");
}

static void in_discover(struct in_state *s)
{
	void *buf[IN_BATCH] = {NULL};
	dds_sample_info_t si[IN_BATCH];
	int n = dds_take(s->discovery, buf, si, IN_BATCH, IN_BATCH);

	for (int i = 0; i < n; i++) {
		const dds_builtintopic_endpoint_t *e = buf[i];

		if (si[i].valid_data && si[i].instance_state == DDS_ALIVE_INSTANCE_STATE)
			in_open(s, e->topic_name, e->type_name);
	}
	if (n > 0)
		dds_return_loan(s->discovery, buf, n);
}

/* The publisher, opened with the first sample's type name. */
static int in_pub(struct in_topic *t, const char *type)
{
	const struct gw_rule *r = t->b->rule;
	struct takt_pub_opts po = {.topic = t->b->topic, .type_name = type[0] ? type : NULL,
				   .max_payload = r->max_payload, .history = r->late_joiners,
				   .block_timeout_ns = 1000000000ull};
	int rc;

	if (t->pub)
		return 0;
	rc = takt_pub_open(t->g->node, &po, &t->pub);
	if (rc < 0) {
		fprintf(stderr, "takt-gateway: in '%s': cannot publish (type '%s'): %s\n", t->b->topic, type,
			strerror(-rc));
		return rc;
	}
	return takt_pub_set_origin(t->pub, t->g->cfg.origin);
}

/* A loan, waiting (bounded, 1 s) while subscribers hold the pool: the
 * receive thread waits, and reliable DDS writers with it (back-pressure). */
static int in_loan(struct in_topic *t, size_t size, void **out)
{
	for (int i = 0; i < 1000; i++) {
		int rc = takt_pub_loan(t->pub, size, out);

		if (rc != -ENOBUFS || atomic_load_explicit(&t->g->stop, memory_order_relaxed))
			return rc;
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	return -ENOBUFS;
}

/* One takt sample of a DDS sample into takt: checked like any input from
 * the network. */
static void in_publish(struct in_topic *t, const takt_gateway_Sample *x)
{
	struct gw_counters *c = &t->b->c;
	uint32_t wire = x->payload._length;
	void *p;

	if (x->size > t->b->rule->max_payload || x->encoding > 1 || (x->encoding == 0 && wire != x->size) ||
	    in_loan(t, x->size, &p) < 0) {
		atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
		return;
	}
	if (x->encoding == 1) {
		if (LZ4_decompress_safe((const char *)x->payload._buffer, p, (int)wire, (int)x->size) != (int)x->size) {
			takt_pub_discard(t->pub, p);
			atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
			return;
		}
	} else {
		memcpy(p, x->payload._buffer, x->size);
	}
	if (takt_pub_publish(t->pub, p) < 0) {
		atomic_fetch_add_explicit(&c->drops, 1, memory_order_relaxed);
		return;
	}
	atomic_fetch_add_explicit(&c->samples, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->bytes, x->size, memory_order_relaxed);
	atomic_fetch_add_explicit(&c->wire_bytes, wire, memory_order_relaxed);
}

/* The reader's data-available listener (Cyclone's receive thread). */
static void in_take(dds_entity_t reader, void *arg)
{
	struct in_topic *t = arg;
	void *buf[IN_BATCH];
	dds_sample_info_t si[IN_BATCH];
	int n;

	/* buf[0] NULL: Cyclone loans its buffers (it looks at buf[0] only;
	 * zeroing the whole array cost a memset per call, which is per
	 * sample when samples come one at a time) */
	buf[0] = NULL;
	do {
		if ((n = dds_take(reader, buf, si, IN_BATCH, IN_BATCH)) <= 0)
			break;
		for (int i = 0; i < n; i++) {
			const takt_gateway_Batch *x = buf[i];
			char type[TAKT_TOPIC_NAME_MAX];
			uint32_t k;

			if (!si[i].valid_data) /* an instance state change: no data */
				continue;
			k = x->samples._length;
			memcpy(type, x->type_name, sizeof(type));
			type[sizeof(type) - 1] = 0;
			if (in_pub(t, type) < 0) {
				atomic_fetch_add_explicit(&t->b->c.drops, k, memory_order_relaxed);
				continue;
			}
			for (uint32_t j = 0; j < k; j++) {
				const takt_gateway_Sample *e = &x->samples._buffer[j];
				struct gw_seen_entry *seen = gw_seen_find(t->seen, e->publisher_id);

				if (gw_seen_dup(seen, e->seq)) {
					atomic_fetch_add_explicit(&t->b->c.duplicates, 1, memory_order_relaxed);
					continue;
				}
				in_publish(t, e);
				/* after it is out: a gateway killed in between
				 * publishes it once more after its restart, never
				 * loses it */
				gw_seen_mark(t->seen, seen, e->publisher_id, e->seq);
			}
		}
		dds_return_loan(reader, buf, n);
		buf[0] = NULL;
		/* fewer than asked for: all there was. What arrives later calls
		 * this listener again (Cyclone calls it for every delivery,
		 * one call at a time), so no second, empty take */
	} while (n == IN_BATCH);
}

/* Samples DDS lost on the way (best effort): drops. Here, not in the
 * listener, which it would cost a status lock per call. */
static void in_count_lost(struct in_topic *t)
{
	dds_sample_lost_status_t lost;

	if (dds_get_sample_lost_status(t->reader, &lost) == 0 && lost.total_count != t->lost_seen) {
		atomic_fetch_add_explicit(&t->b->c.drops, lost.total_count - t->lost_seen, memory_order_relaxed);
		t->lost_seen = lost.total_count;
	}
}

void *gw_in_thread(void *arg)
{
	struct in_state s = {.g = arg};
	s.ws = dds_create_waitset(s.g->participant);
	s.discovery = dds_create_reader(s.g->participant, DDS_BUILTIN_TOPIC_DCPSPUBLICATION, NULL, NULL);
	s.discovery_cond = s.discovery < 0 ? s.discovery : dds_create_readcondition(s.discovery, DDS_ANY_STATE);
	if (s.ws < 0 || s.discovery_cond < 0 || dds_waitset_attach(s.ws, s.discovery_cond, 0) < 0 ||
	    dds_waitset_attach(s.ws, s.g->stop_guard, 0) < 0) {
		fprintf(stderr, "takt-gateway: DDS discovery: %s\n", dds_strretcode(s.discovery_cond));
		return NULL;
	}
	while (!atomic_load_explicit(&s.g->stop, memory_order_relaxed)) {
		dds_waitset_wait(s.ws, NULL, 0, DDS_MSECS(100));
		in_discover(&s);
		for (unsigned i = 0; i < s.n; i++)
			in_count_lost(s.t[i]);
	}
	for (unsigned i = 0; i < s.n; i++)
		in_free(s.t[i]);
	dds_delete(s.ws);
	return NULL;
}
