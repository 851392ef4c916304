/* cli_topic.c - `takt topic list|info`, `takt node list`: the domain as
 * its registry shows it (mapped read-only, no node of ours in it), with
 * what the broker reads of pools and queues (POOLS, CONNS).
 *
 * The registry changes while we read it: each entry counts once its
 * state (acquire: pairs with the broker's release of it, registry.c)
 * says it is in use, and every index read from it is bounds-checked.
 */
#include "cli.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *overflow_name(uint32_t o)
{
	static const char *const names[] = {"drop-oldest", "block", "reject"};

	return o < 3 ? names[o] : "?";
}

/* ---- takt topic list ------------------------------------------------------ */

int cli_topic_list(struct cli *c, int argc, char **argv)
{
	struct cli_registry reg;
	struct cli_topic_row *rows;
	uint32_t n;

	(void)argv;
	if (argc > 1)
		return cli_usage_error(c, "takes no arguments");
	if (cli_registry_open(c, &reg))
		return 1;
	n = cli_topic_rows(&reg.v, &rows);
	/* a service's topics are takt service list's */
	for (uint32_t k = 0; k < n;)
		if (rows[k].name[0] == '@')
			memmove(&rows[k], &rows[k + 1], (--n - k) * sizeof(*rows));
		else
			k++;
	if (c->json) {
		struct json_object *all = json_object_new_array();

		for (uint32_t i = 0; i < n; i++) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "name", json_object_new_string(rows[i].name));
			json_object_object_add(o, "type", json_object_new_string(rows[i].type));
			json_object_object_add(o, "publishers", json_object_new_int64(rows[i].pubs));
			json_object_object_add(o, "subscribers", json_object_new_int64(rows[i].subs));
			json_object_array_add(all, o);
		}
		cli_json_print(all);
	} else {
		printf("%-32s %-24s %5s %5s\n", "TOPIC", "TYPE", "PUBS", "SUBS");
		for (uint32_t i = 0; i < n; i++)
			printf("%-32s %-24s %5u %5u\n", rows[i].name, rows[i].type[0] ? rows[i].type : "-", rows[i].pubs,
			       rows[i].subs);
	}
	free(rows);
	cli_registry_close(&reg);
	return 0;
}

/* ---- takt topic info TOPIC ------------------------------------------------ */

static struct json_object *pub_json(const struct seg_view *v, uint32_t pi, const struct cli_stats *s, uint64_t *bytes)
{
	const struct takt_pub_port *p = &v->pubs[pi];
	const struct proto_pool_stat *ps = cli_pool_of(s, pi);
	struct json_object *o = json_object_new_object();
	char name[TAKT_PROC_NAME_MAX];
	int32_t pid;

	cli_proc_name(v, p->proc, name, &pid);
	json_object_object_add(o, "port", json_object_new_int64(pi));
	json_object_object_add(o, "publisher_id", cli_json_u64(p->id));
	json_object_object_add(o, "pid", json_object_new_int(pid));
	json_object_object_add(o, "process", json_object_new_string(name));
	json_object_object_add(o, "max_payload", cli_json_u64(p->payload_size));
	json_object_object_add(o, "history", json_object_new_int64(p->history));
	json_object_object_add(o, "chunks", json_object_new_int64(ps ? ps->total : 0));
	json_object_object_add(o, "in_flight", json_object_new_int64(ps ? ps->in_flight : 0));
	json_object_object_add(o, "loans", json_object_new_int64(ps ? ps->loans : 0));
	json_object_object_add(o, "bytes", cli_json_u64(ps ? ps->bytes : 0));
	*bytes += ps ? ps->bytes : 0;
	return o;
}

static struct json_object *sub_json(const struct seg_view *v, uint32_t si, const struct cli_stats *s, uint64_t *bytes)
{
	const struct takt_sub_port *p = &v->subs[si];
	struct json_object *o = json_object_new_object(), *conns = json_object_new_array();
	uint64_t queued = 0, dropped = 0, seg = 0;
	char name[TAKT_PROC_NAME_MAX];
	int32_t pid;

	cli_proc_name(v, p->proc, name, &pid);
	for (uint32_t i = 0; i < s->n_conns; i++) {
		const struct proto_conn_stat *cs = &s->conns[i];
		struct json_object *co;

		if (cs->sub != si)
			continue;
		co = json_object_new_object();
		json_object_object_add(co, "publisher_id", cli_json_u64(cs->publisher_id));
		json_object_object_add(co, "queued", cli_json_u64(cs->pushed - cs->taken));
		json_object_object_add(co, "dropped", cli_json_u64(cs->dropped));
		json_object_object_add(co, "orphan", json_object_new_boolean(cs->state == SLOT_ORPHAN));
		json_object_array_add(conns, co);
		queued += cs->pushed - cs->taken;
		dropped += cs->dropped;
		seg = cs->sub_bytes;
	}
	json_object_object_add(o, "port", json_object_new_int64(si));
	json_object_object_add(o, "pid", json_object_new_int(pid));
	json_object_object_add(o, "process", json_object_new_string(name));
	json_object_object_add(o, "queue_depth", json_object_new_int64(p->queue_depth));
	json_object_object_add(o, "overflow", json_object_new_string(overflow_name(p->overflow)));
	json_object_object_add(o, "history", json_object_new_int64(p->history));
	json_object_object_add(o, "queued", cli_json_u64(queued));
	json_object_object_add(o, "dropped", cli_json_u64(dropped));
	json_object_object_add(o, "bytes", cli_json_u64(seg));
	json_object_object_add(o, "connections", conns);
	*bytes += seg;
	return o;
}

/* The topic's description as JSON: what both outputs print from. */
static struct json_object *topic_json(const struct seg_view *v, const struct cli_topic_row *t, const struct cli_stats *s)
{
	struct json_object *o = json_object_new_object(), *pubs = json_object_new_array(),
			   *subs = json_object_new_array();
	uint64_t bytes = 0;

	for (uint32_t pi = 0; pi < v->lim.publishers; pi++)
		if (cli_in_use(&v->pubs[pi].state) && v->pubs[pi].topic == t->index)
			json_object_array_add(pubs, pub_json(v, pi, s, &bytes));
	for (uint32_t si = 0; si < v->lim.subscribers; si++)
		if (cli_in_use(&v->subs[si].state) && v->subs[si].topic == t->index)
			json_object_array_add(subs, sub_json(v, si, s, &bytes));
	json_object_object_add(o, "name", json_object_new_string(t->name));
	json_object_object_add(o, "type", json_object_new_string(t->type));
	json_object_object_add(o, "shm_bytes", cli_json_u64(bytes));
	json_object_object_add(o, "publishers", pubs);
	json_object_object_add(o, "subscribers", subs);
	return o;
}

static uint64_t jget_u64(struct json_object *o, const char *key)
{
	return json_object_get_uint64(json_object_object_get(o, key));
}

static const char *jget_str(struct json_object *o, const char *key)
{
	return json_object_get_string(json_object_object_get(o, key));
}

static void topic_print(struct json_object *o)
{
	struct json_object *pubs = json_object_object_get(o, "publishers"),
			   *subs = json_object_object_get(o, "subscribers");
	size_t np = json_object_array_length(pubs), ns = json_object_array_length(subs);

	printf("topic '%s', type %s: %zu publisher%s, %zu subscriber%s, %llu bytes of shared memory\n",
	       jget_str(o, "name"), *jget_str(o, "type") ? jget_str(o, "type") : "-", np, np == 1 ? "" : "s", ns,
	       ns == 1 ? "" : "s", (unsigned long long)jget_u64(o, "shm_bytes"));
	if (np)
		printf("\n  %-4s %-18s %7s %-20s %9s %7s %6s %9s %10s\n", "PORT", "PUBLISHER_ID", "PID", "PROCESS",
		       "PAYLOAD", "HISTORY", "CHUNKS", "IN_FLIGHT", "BYTES");
	for (size_t i = 0; i < np; i++) {
		struct json_object *p = json_object_array_get_idx(pubs, i);

		printf("  %-4llu %#-18llx %7lld %-20s %9llu %7llu %6llu %9llu %10llu\n",
		       (unsigned long long)jget_u64(p, "port"), (unsigned long long)jget_u64(p, "publisher_id"),
		       (long long)json_object_get_int64(json_object_object_get(p, "pid")), jget_str(p, "process"),
		       (unsigned long long)jget_u64(p, "max_payload"), (unsigned long long)jget_u64(p, "history"),
		       (unsigned long long)jget_u64(p, "chunks"), (unsigned long long)jget_u64(p, "in_flight"),
		       (unsigned long long)jget_u64(p, "bytes"));
	}
	if (ns)
		printf("\n  %-4s %7s %-20s %6s %-11s %7s %7s %10s\n", "PORT", "PID", "PROCESS", "DEPTH", "OVERFLOW",
		       "QUEUED", "DROPPED", "BYTES");
	for (size_t i = 0; i < ns; i++) {
		struct json_object *p = json_object_array_get_idx(subs, i);

		printf("  %-4llu %7lld %-20s %6llu %-11s %7llu %7llu %10llu\n", (unsigned long long)jget_u64(p, "port"),
		       (long long)json_object_get_int64(json_object_object_get(p, "pid")), jget_str(p, "process"),
		       (unsigned long long)jget_u64(p, "queue_depth"), jget_str(p, "overflow"),
		       (unsigned long long)jget_u64(p, "queued"), (unsigned long long)jget_u64(p, "dropped"),
		       (unsigned long long)jget_u64(p, "bytes"));
	}
}

/* The counters of every takt-gateway that bridges topic: each gateway
 * publishes them as JSON on _gateway/NAME (type takt.gateway.Stats,
 * history 1; shm-broker/gateway/stats.c, docs/gateway.md), so they are read
 * with a node of our own, only when a gateway runs. An array, possibly
 * empty. */
static struct json_object *gateway_json(const struct cli *c, const struct cli_topic_row *rows, uint32_t n,
					const char *topic)
{
	struct json_object *all = json_object_new_array();
	takt_node *node = NULL;

	for (uint32_t i = 0; i < n; i++) {
		struct takt_sub_opts so = {.topic = rows[i].name, .type_name = "takt.gateway.Stats", .queue_depth = 1,
					   .history = 1};
		struct takt_sample_info info;
		struct json_object *g, *bridges;
		const void *p;
		takt_sub *sub;

		if (strncmp(rows[i].name, "_gateway/", 9) || !rows[i].pubs ||
		    (!node && cli_node(c, "topic-info", &node)) || takt_sub_open(node, &so, &sub) < 0)
			continue;
		g = takt_sub_take(sub, &p, &info) == 0 ? json_tokener_parse(strndupa(p, info.size)) : NULL;
		if (g)
			takt_sub_release(sub, p);
		takt_sub_close(sub);
		bridges = g ? json_object_object_get(g, "bridges") : NULL;
		for (size_t k = 0; k < json_object_array_length(bridges); k++) {
			struct json_object *b = json_object_array_get_idx(bridges, k);

			if (strcmp(jget_str(b, "topic") ?: "", topic))
				continue;
			json_object_object_add(b, "gateway", json_object_get(json_object_object_get(g, "name")));
			json_object_array_add(all, json_object_get(b));
		}
		json_object_put(g);
	}
	takt_node_close(node);
	return all;
}

static void gateway_print(struct json_object *gws)
{
	for (size_t i = 0; i < json_object_array_length(gws); i++) {
		struct json_object *b = json_object_array_get_idx(gws, i);

		printf("%s  bridged %s by takt-gateway '%s'%s: %llu samples, %llu bytes (%llu on the wire), %llu dropped, "
		       "%llu DDS write errors, %llu late joiners served\n", i ? "" : "\n",
		       !strcmp(jget_str(b, "direction"), "out") ? "out" : "in", jget_str(b, "gateway"),
		       json_object_get_boolean(json_object_object_get(b, "lz4")) ? " (lz4)" : "",
		       (unsigned long long)jget_u64(b, "samples"), (unsigned long long)jget_u64(b, "bytes"),
		       (unsigned long long)jget_u64(b, "wire_bytes"), (unsigned long long)jget_u64(b, "drops"),
		       (unsigned long long)jget_u64(b, "write_errors"), (unsigned long long)jget_u64(b, "late_joiners"));
	}
}

int cli_topic_info(struct cli *c, int argc, char **argv)
{
	struct cli_registry reg;
	struct cli_stats s = {0};
	struct cli_topic_row *rows;
	uint32_t n, i;
	int r = 1;

	if (argc != 2)
		return cli_usage_error(c, "needs one topic name");
	if (cli_registry_open(c, &reg))
		return 1;
	n = cli_topic_rows(&reg.v, &rows);
	for (i = 0; i < n && strcmp(rows[i].name, argv[1]); i++)
		;
	if (i == n) {
		fprintf(stderr, "takt: no topic '%s' in domain '%s' (takt topic list shows them)\n", argv[1], c->domain);
	} else if (cli_stats_fetch(c, &reg.v, &s) == 0) {
		struct json_object *o = topic_json(&reg.v, &rows[i], &s);

		json_object_object_add(o, "gateways", gateway_json(c, rows, n, argv[1]));
		if (c->json) {
			cli_json_print(o);
		} else {
			topic_print(o);
			gateway_print(json_object_object_get(o, "gateways"));
			json_object_put(o);
		}
		r = 0;
	}
	cli_stats_free(&s);
	free(rows);
	cli_registry_close(&reg);
	return r;
}

/* ---- takt node list ------------------------------------------------------- */

int cli_node_list(struct cli *c, int argc, char **argv)
{
	const struct seg_view *v;
	struct cli_registry reg;
	struct json_object *all;

	(void)argv;
	if (argc > 1)
		return cli_usage_error(c, "takes no arguments");
	if (cli_registry_open(c, &reg))
		return 1;
	all = json_object_new_array();
	v = &reg.v;
	for (uint32_t i = 0; i < v->lim.processes; i++) {
		const struct takt_proc *p = &v->procs[i];
		struct json_object *o;
		const struct passwd *pw;
		uint32_t pubs = 0, subs = 0;
		char name[TAKT_PROC_NAME_MAX];
		int32_t pid;

		if (!cli_in_use(&p->state))
			continue;
		cli_proc_name(v, i, name, &pid);
		for (uint32_t k = 0; k < v->lim.publishers; k++)
			pubs += cli_in_use(&v->pubs[k].state) && v->pubs[k].proc == i;
		for (uint32_t k = 0; k < v->lim.subscribers; k++)
			subs += cli_in_use(&v->subs[k].state) && v->subs[k].proc == i;
		pw = getpwuid(p->uid);
		o = json_object_new_object();
		json_object_object_add(o, "index", json_object_new_int64(i));
		json_object_object_add(o, "name", json_object_new_string(name));
		json_object_object_add(o, "pid", json_object_new_int(pid));
		json_object_object_add(o, "uid", json_object_new_int64(p->uid));
		json_object_object_add(o, "user", json_object_new_string(pw ? pw->pw_name : "?"));
		json_object_object_add(o, "publishers", json_object_new_int64(pubs));
		json_object_object_add(o, "subscribers", json_object_new_int64(subs));
		json_object_object_add(o, "attached_ns", cli_json_u64(p->attached_ns));
		json_object_array_add(all, o);
	}
	if (c->json) {
		cli_json_print(all);
	} else {
		size_t n = json_object_array_length(all);

		printf("%-5s %7s %-20s %-12s %5s %5s\n", "INDEX", "PID", "NAME", "USER", "PUBS", "SUBS");
		for (size_t i = 0; i < n; i++) {
			struct json_object *o = json_object_array_get_idx(all, i);

			printf("%-5llu %7lld %-20s %-12s %5llu %5llu\n", (unsigned long long)jget_u64(o, "index"),
			       (long long)json_object_get_int64(json_object_object_get(o, "pid")), jget_str(o, "name"),
			       jget_str(o, "user"), (unsigned long long)jget_u64(o, "publishers"),
			       (unsigned long long)jget_u64(o, "subscribers"));
		}
		json_object_put(all);
	}
	cli_registry_close(&reg);
	return 0;
}
