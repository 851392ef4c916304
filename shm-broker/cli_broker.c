/* cli_broker.c - `takt status` and `takt pools`: what the broker says of
 * the domain as a whole and of each publisher's pool. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static struct json_object *limits_json(const struct takt_limits *l)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "processes", json_object_new_int64(l->processes));
	json_object_object_add(o, "topics", json_object_new_int64(l->topics));
	json_object_object_add(o, "publishers", json_object_new_int64(l->publishers));
	json_object_object_add(o, "subscribers", json_object_new_int64(l->subscribers));
	json_object_object_add(o, "connections", json_object_new_int64(l->connections));
	json_object_object_add(o, "queue_depth_max", json_object_new_int64(l->queue_depth_max));
	json_object_object_add(o, "history_max", json_object_new_int64(l->history_max));
	json_object_object_add(o, "held_max", json_object_new_int64(l->held_max));
	json_object_object_add(o, "loans_max", json_object_new_int64(l->loans_max));
	json_object_object_add(o, "events", json_object_new_int64(l->events));
	return o;
}

static void status_json(const struct msg_status_reply *rep)
{
	struct json_object *o = json_object_new_object(), *a = json_object_new_object();

	json_object_object_add(o, "domain", json_object_new_string(rep->domain));
	json_object_object_add(o, "running", json_object_new_boolean(1));
	json_object_object_add(o, "pid", json_object_new_int(rep->pid));
	json_object_object_add(o, "epoch", cli_json_u64(rep->epoch));
	json_object_object_add(o, "version", json_object_new_string(rep->version));
	json_object_object_add(o, "shm_bytes", cli_json_u64(rep->shm_bytes));
	json_object_object_add(o, "shm_bytes_idle", cli_json_u64(rep->shm_bytes_idle));
	json_object_object_add(o, "processes", json_object_new_int64(rep->n_procs));
	json_object_object_add(o, "topics", json_object_new_int64(rep->n_topics));
	json_object_object_add(o, "publishers", json_object_new_int64(rep->n_pubs));
	json_object_object_add(o, "subscribers", json_object_new_int64(rep->n_subs));
	json_object_object_add(o, "connections", json_object_new_int64(rep->n_conns));
	json_object_object_add(o, "events", json_object_new_int64(rep->n_events));
	json_object_object_add(o, "limits", limits_json(&rep->limits));
	json_object_object_add(a, "epoch", cli_json_u64(rep->adopted_epoch));
	json_object_object_add(a, "processes", json_object_new_int64(rep->adopted_procs));
	json_object_object_add(a, "publishers", json_object_new_int64(rep->adopted_pubs));
	json_object_object_add(a, "subscribers", json_object_new_int64(rep->adopted_subs));
	json_object_object_add(a, "reclaimed", json_object_new_int64(rep->adopted_reclaimed));
	json_object_object_add(a, "refused", json_object_new_int64(rep->adopted_refused));
	json_object_object_add(a, "ms", json_object_new_int64(rep->adopted_ms));
	json_object_object_add(o, "adopted", a);
	cli_json_print(o);
}

int cli_status(struct cli *c, int argc, char **argv)
{
	struct msg_status_reply rep;
	struct msg_empty req;
	const struct takt_limits *l = &rep.limits;

	(void)argv;
	if (argc > 1)
		return cli_usage_error(c, "takes no arguments");
	if (cli_call(c, &req, sizeof(req), MSG_STATUS, &rep, sizeof(rep)))
		return 1;
	rep.domain[sizeof(rep.domain) - 1] = rep.version[sizeof(rep.version) - 1] = 0;
	if (c->json) {
		status_json(&rep);
		return 0;
	}
	printf("domain '%s': broker running, pid %d, epoch %llu, version %s\n", rep.domain, rep.pid,
	       (unsigned long long)rep.epoch, rep.version);
	if (rep.adopted_epoch)
		printf("  restart: adopted the domain of epoch %llu after %u ms: %u processes, %u publishers, "
		       "%u subscribers came back; %u processes reclaimed, %u refused\n",
		       (unsigned long long)rep.adopted_epoch, rep.adopted_ms, rep.adopted_procs, rep.adopted_pubs,
		       rep.adopted_subs, rep.adopted_reclaimed, rep.adopted_refused);
	printf("  in use:  %u processes, %u topics, %u publishers, %u subscribers, %u connections, %u events\n",
	       rep.n_procs, rep.n_topics, rep.n_pubs, rep.n_subs, rep.n_conns, rep.n_events);
	printf("  memory:  %llu bytes of shared memory (%llu with no client attached)\n",
	       (unsigned long long)rep.shm_bytes, (unsigned long long)rep.shm_bytes_idle);
	printf("  limits:  %u processes, %u topics, %u publishers, %u subscribers, %u connections,\n"
	       "           queue depth <= %u, history <= %u, held <= %u, loans <= %u, %u events\n",
	       l->processes, l->topics, l->publishers, l->subscribers, l->connections, l->queue_depth_max,
	       l->history_max, l->held_max, l->loans_max, l->events);
	return 0;
}

static struct json_object *pool_json(const struct proto_pool_stat *s, const char *topic)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "topic", json_object_new_string(topic));
	json_object_object_add(o, "publisher_id", cli_json_u64(s->publisher_id));
	json_object_object_add(o, "pid", json_object_new_int(s->pid));
	json_object_object_add(o, "size", cli_json_u64(s->payload_size));
	json_object_object_add(o, "total", json_object_new_int64(s->total));
	json_object_object_add(o, "free", json_object_new_int64(s->free));
	json_object_object_add(o, "in_flight", json_object_new_int64(s->in_flight));
	json_object_object_add(o, "history", json_object_new_int64(s->history));
	json_object_object_add(o, "loans", json_object_new_int64(s->loans));
	json_object_object_add(o, "max", json_object_new_int64(s->max));
	json_object_object_add(o, "bytes", cli_json_u64(s->bytes));
	json_object_object_add(o, "bad_returns", json_object_new_int64(s->bad_returns));
	json_object_object_add(o, "light", json_object_new_boolean(s->light != 0));
	return o;
}

/* One entry per publisher's pool, asked for page by page. */
int cli_pools(struct cli *c, int argc, char **argv)
{
	struct msg_index req = {.index = 0};
	struct msg_pools_reply rep;
	struct json_object *all = c->json ? json_object_new_array() : NULL;

	(void)argv;
	if (argc > 1)
		return cli_usage_error(c, "takes no arguments");
	if (!c->json)
		printf("%-24s %18s %7s %10s %7s %7s %9s %7s %10s\n", "TOPIC", "PUBLISHER_ID", "PID", "SIZE", "TOTAL",
		       "FREE", "IN_FLIGHT", "HISTORY", "BYTES");
	do {
		if (cli_call(c, &req, sizeof(req), MSG_POOLS, &rep, sizeof(rep))) {
			json_object_put(all);
			return 1;
		}
		for (uint32_t k = 0; k < rep.r.index && k < PROTO_POOLS_PER_REPLY; k++) {
			const struct proto_pool_stat *s = &rep.pools[k];
			char topic[TAKT_NAME_MAX];

			snprintf(topic, sizeof(topic), "%s", s->topic); /* NUL-terminated whatever came */
			if (all)
				json_object_array_add(all, pool_json(s, topic));
			else
				printf("%-24s %#18llx %7d %10llu %7u %7u %9u %7u %10llu\n", topic,
				       (unsigned long long)s->publisher_id, s->pid, (unsigned long long)s->payload_size,
				       s->total, s->free, s->in_flight, s->history, (unsigned long long)s->bytes);
		}
		req.index = rep.next;
	} while (rep.next != TAKT_NONE);
	if (all)
		cli_json_print(all);
	return 0;
}
