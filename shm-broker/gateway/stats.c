/* stats.c - takt-gateway's counters: per bridged topic and direction,
 * samples, bytes before and after compression, drops, DDS write errors,
 * late joiners served, duplicates and skipped (imported) samples. The
 * gateway publishes them as JSON on the takt topic _gateway/NAME (history
 * 1), so `takt-gateway --stats`, `takt topic info` and any subscriber
 * read them with the public API, from any process of the domain. */
#include "gateway.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_bridge *gw_bridge_new(struct gw *g, enum gw_dir dir, const char *topic, const struct gw_rule *r)
{
	/* both threads add bridges: the slot is claimed atomically, then
	 * filled, then marked used (release: the stats reader acquires) */
	unsigned i = atomic_fetch_add_explicit(&g->n_bridges, 1, memory_order_relaxed);
	struct gw_bridge *b;

	if (i >= GW_MAX_BRIDGES)
		return NULL;
	b = &g->bridges[i];
	b->dir = dir;
	b->rule = r;
	snprintf(b->topic, sizeof(b->topic), "%s", topic);
	atomic_store_explicit(&b->used, true, memory_order_release);
	return b;
}

#define COUNTERS(X) X(samples) X(bytes) X(wire_bytes) X(drops) X(write_errors) X(late_joiners) X(duplicates) X(skipped)

char *gw_stats_json(struct gw *g)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_array();
	char *s;

	json_object_object_add(o, "name", json_object_new_string(g->cfg.name));
	json_object_object_add(o, "origin", json_object_new_int64(g->cfg.origin));
	json_object_object_add(o, "dds_domain", json_object_new_int64(g->cfg.dds_domain));
	for (unsigned i = 0; i < GW_MAX_BRIDGES; i++) {
		struct gw_bridge *b = &g->bridges[i];
		struct json_object *e;

		if (!atomic_load_explicit(&b->used, memory_order_acquire))
			continue;
		e = json_object_new_object();
		json_object_object_add(e, "topic", json_object_new_string(b->topic));
		json_object_object_add(e, "direction", json_object_new_string(b->dir == GW_OUT ? "out" : "in"));
		json_object_object_add(e, "lz4", json_object_new_boolean(b->rule->lz4));
#define ADD(f) json_object_object_add(e, #f, json_object_new_int64((int64_t)atomic_load_explicit(&b->c.f, memory_order_relaxed)));
		COUNTERS(ADD)
#undef ADD
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "bridges", a);
	s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return s;
}

/* The latest counters of the gateway publishing on topic: parsed JSON, or NULL. */
static struct json_object *stats_read(takt_node *n, const char *topic)
{
	struct takt_sub_opts so = {.topic = topic, .type_name = GW_STATS_TYPE, .queue_depth = 1, .history = 1};
	struct takt_sample_info info;
	struct json_object *o = NULL;
	const void *p;
	takt_sub *s;

	if (takt_sub_open(n, &so, &s) < 0)
		return NULL;
	if (takt_sub_wait(s, 2000000000) == 0 && takt_sub_take(s, &p, &info) == 0) {
		char *txt = strndup(p, info.size);

		o = txt ? json_tokener_parse(txt) : NULL;
		free(txt);
		takt_sub_release(s, p);
	}
	takt_sub_close(s);
	return o;
}

static void stats_table(struct json_object *g)
{
	struct json_object *a = json_object_object_get(g, "bridges");

	printf("gateway '%s' (origin %s, DDS domain %s)\n", json_object_get_string(json_object_object_get(g, "name")),
	       json_object_get_string(json_object_object_get(g, "origin")),
	       json_object_get_string(json_object_object_get(g, "dds_domain")));
	printf("  %-28s %-3s %10s %12s %12s %7s %9s %6s %6s %8s\n", "TOPIC", "DIR", "SAMPLES", "BYTES", "WIRE_BYTES",
	       "DROPS", "WRITE_ERR", "LATE", "DUPS", "SKIPPED");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);
#define F(k) json_object_get_string(json_object_object_get(e, k))
		printf("  %-28s %-3s %10s %12s %12s %7s %9s %6s %6s %8s\n", F("topic"), F("direction"), F("samples"),
		       F("bytes"), F("wire_bytes"), F("drops"), F("write_errors"), F("late_joiners"), F("duplicates"),
		       F("skipped"));
#undef F
	}
}

int gw_stats_print(const char *domain, const char *name, bool json)
{
	struct takt_topic_info ti[64];
	struct json_object *all = json_object_new_array();
	char pattern[TAKT_TOPIC_NAME_MAX];
	takt_node *n;
	int rc, k;

	rc = takt_node_open(&(struct takt_node_opts){.domain = domain, .name = "takt-gateway-stats"}, &n);
	if (rc < 0) {
		fprintf(stderr, "takt-gateway: no broker runs for domain '%s' (%s)\n", domain ? domain : "(default)",
			strerror(-rc));
		json_object_put(all);
		return 1;
	}
	snprintf(pattern, sizeof(pattern), GW_STATS_PREFIX "%s", name ? name : "*");
	k = takt_node_topics(n, pattern, ti, 64);
	for (int i = 0; i < k && i < 64; i++) {
		struct json_object *o = ti[i].publishers ? stats_read(n, ti[i].name) : NULL;

		if (o)
			json_object_array_add(all, o);
	}
	takt_node_close(n);
	if (json)
		puts(json_object_to_json_string_ext(all, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	else if (!json_object_array_length(all))
		printf("no gateway runs in this domain%s%s\n", name ? " under the name " : "", name ? name : "");
	for (size_t i = 0; !json && i < json_object_array_length(all); i++)
		stats_table(json_object_array_get_idx(all, i));
	rc = json_object_array_length(all) || !name ? 0 : 1;
	json_object_put(all);
	return rc;
}
