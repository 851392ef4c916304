/* takt.c - the `takt` command-line tool: asks a domain's broker about itself. */
#include "proto.h"

#include <takt/takt.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: takt COMMAND [--domain D] [--json]\n"
		"Asks the broker of a takt domain about its state.\n\n"
		"Commands:\n"
		"  pools     each publisher's pool: chunk size, chunks reserved, free, in flight\n"
		"  status    whether the broker runs, its pid, epoch and limits\n\n"
		"Options:\n"
		"  -d, --domain D   domain (default: $TAKT_DOMAIN, else \"default\")\n"
		"  -j, --json       machine-readable output\n"
		"  -h, --help       this text\n"
		"  -V, --version    print the version\n\n"
		"Exit status: 0 ok, 1 no broker runs for the domain, 2 usage error.\n");
}

static int call_req(const char *domain, void *req, size_t req_size, uint16_t type, void *reply, size_t size)
{
	int sock, r;

	r = proto_connect(domain, &sock);
	if (r < 0) {
		fprintf(stderr, "takt: no broker runs for domain '%s' (%s); start one with: takt-broker --domain %s\n",
			domain, strerror(-r), domain);
		return 1;
	}
	proto_hdr_init(req, type, (uint32_t)req_size, 1);
	r = proto_call(sock, req, req_size, reply, size, NULL, 0, NULL, 5000, NULL, NULL);
	close(sock);
	if (r < 0) {
		fprintf(stderr, "takt: the broker of domain '%s' did not answer: %s\n", domain, strerror(-r));
		return 1;
	}
	return 0;
}

static int call(const char *domain, uint16_t type, void *reply, size_t size)
{
	struct msg_empty req;

	return call_req(domain, &req, sizeof(req), type, reply, size);
}

/* One object per publisher's pool, asked for page by page. */
static int cmd_pools(const char *domain, int json)
{
	struct msg_index req = {.index = 0};
	struct msg_pools_reply rep;
	unsigned shown = 0;

	if (!json)
		printf("%-24s %18s %7s %10s %7s %7s %9s %7s %10s\n", "TOPIC", "PUBLISHER_ID", "PID", "SIZE", "TOTAL",
		       "FREE", "IN_FLIGHT", "HISTORY", "BYTES");
	else
		printf("[");
	do {
		if (call_req(domain, &req, sizeof(req), MSG_POOLS, &rep, sizeof(rep)))
			return 1;
		for (uint32_t k = 0; k < rep.r.index && k < PROTO_POOLS_PER_REPLY; k++) {
			const struct proto_pool_stat *s = &rep.pools[k];
			char topic[TAKT_NAME_MAX];

			snprintf(topic, sizeof(topic), "%s", s->topic); /* NUL-terminated whatever came */
			if (json)
				printf("%s{\"topic\":\"%s\",\"publisher_id\":%llu,\"pid\":%d,\"size\":%llu,"
				       "\"total\":%u,\"free\":%u,\"in_flight\":%u,\"history\":%u,\"loans\":%u,"
				       "\"max\":%u,\"bytes\":%llu,\"bad_returns\":%u,\"light\":%s}",
				       shown ? "," : "", topic, (unsigned long long)s->publisher_id, s->pid,
				       (unsigned long long)s->payload_size, s->total, s->free, s->in_flight,
				       s->history, s->loans, s->max, (unsigned long long)s->bytes, s->bad_returns,
				       s->light ? "true" : "false");
			else
				printf("%-24s %#18llx %7d %10llu %7u %7u %9u %7u %10llu\n", topic,
				       (unsigned long long)s->publisher_id, s->pid, (unsigned long long)s->payload_size,
				       s->total, s->free, s->in_flight, s->history, (unsigned long long)s->bytes);
			shown++;
		}
		req.index = rep.next;
	} while (rep.next != TAKT_NONE);
	if (json)
		printf("]\n");
	return 0;
}

static int cmd_status(const char *domain, int json)
{
	struct msg_status_reply rep;
	const struct takt_limits *l = &rep.limits;

	if (call(domain, MSG_STATUS, &rep, sizeof(rep)))
		return 1;
	rep.domain[sizeof(rep.domain) - 1] = rep.version[sizeof(rep.version) - 1] = 0;
	if (json) {
		printf("{\"domain\":\"%s\",\"running\":true,\"pid\":%d,\"epoch\":%llu,\"version\":\"%s\","
		       "\"shm_bytes\":%llu,\"shm_bytes_idle\":%llu,"
		       "\"processes\":%u,\"topics\":%u,\"publishers\":%u,\"subscribers\":%u,"
		       "\"connections\":%u,\"events\":%u,\"limits\":{\"processes\":%u,\"topics\":%u,"
		       "\"publishers\":%u,\"subscribers\":%u,\"connections\":%u,\"queue_depth_max\":%u,"
		       "\"history_max\":%u,\"held_max\":%u,\"loans_max\":%u,\"events\":%u},"
		       "\"adopted\":{\"epoch\":%llu,\"processes\":%u,\"publishers\":%u,\"subscribers\":%u,"
		       "\"reclaimed\":%u,\"refused\":%u,\"ms\":%u}}\n",
		       rep.domain, rep.pid, (unsigned long long)rep.epoch, rep.version,
		       (unsigned long long)rep.shm_bytes, (unsigned long long)rep.shm_bytes_idle, rep.n_procs,
		       rep.n_topics, rep.n_pubs, rep.n_subs, rep.n_conns, rep.n_events, l->processes,
		       l->topics, l->publishers, l->subscribers, l->connections, l->queue_depth_max,
		       l->history_max, l->held_max, l->loans_max, l->events, (unsigned long long)rep.adopted_epoch,
		       rep.adopted_procs, rep.adopted_pubs, rep.adopted_subs, rep.adopted_reclaimed,
		       rep.adopted_refused, rep.adopted_ms);
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

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"domain", required_argument, NULL, 'd'}, {"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
		{0},
	};
	const char *domain = NULL, *cmd;
	int json = 0, c;

	while ((c = getopt_long(argc, argv, "d:jhV", opts, NULL)) != -1) {
		switch (c) {
		case 'd': domain = optarg; break;
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("takt %s\n", TAKT_VERSION_STRING); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	domain = proto_domain_default(domain);
	if (!proto_domain_ok(domain)) {
		fprintf(stderr, "takt: bad domain name '%s'\n", domain);
		return 2;
	}
	if (!strcmp(cmd, "pools"))
		return cmd_pools(domain, json);
	if (!strcmp(cmd, "status"))
		return cmd_status(domain, json);
	fprintf(stderr, "takt: unknown command '%s' (try --help)\n", cmd);
	return 2;
}
