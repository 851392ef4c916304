/* cli_service.c - `takt service list|info|call`: request/response
 * services (libipc/service.c), as the registry shows their topics: a
 * service S is "@/S/q" (its clients' requests, its server the one
 * subscriber) and "@/S/r/<client>" (each client's responses).
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The service of a request topic, or NULL. */
static const char *service_of(const struct cli_topic_row *t, char *svc)
{
	size_t len;

	if (proto_service_topic(t->name, TAKT_NAME_MAX, &len, NULL) != 'q')
		return NULL;
	memcpy(svc, t->name + 2, len);
	svc[len] = 0;
	return svc;
}

/* The process of the first port in use on topic ti (sub: a subscriber). */
static uint32_t port_proc(const struct seg_view *v, uint32_t ti, bool sub)
{
	uint32_t n = sub ? v->lim.subscribers : v->lim.publishers;

	for (uint32_t i = 0; i < n; i++) {
		const _Atomic uint32_t *st = sub ? &v->subs[i].state : &v->pubs[i].state;
		uint32_t topic = sub ? v->subs[i].topic : v->pubs[i].topic;

		if (cli_in_use(st) && topic == ti)
			return sub ? v->subs[i].proc : v->pubs[i].proc;
	}
	return TAKT_NONE;
}

static struct json_object *service_json(const struct seg_view *v, const struct cli_topic_row *t, const char *svc)
{
	struct json_object *o = json_object_new_object();
	uint32_t proc = port_proc(v, t->index, true);
	char name[TAKT_PROC_NAME_MAX], reply[TAKT_NAME_MAX];
	int32_t pid;

	json_object_object_add(o, "name", json_object_new_string(svc));
	memcpy(reply, v->topics[t->index].reply_type, sizeof(reply)); /* the registry: bounded */
	reply[sizeof(reply) - 1] = 0;
	json_object_object_add(o, "request_type", json_object_new_string(t->type));
	json_object_object_add(o, "response_type", json_object_new_string(reply));
	json_object_object_add(o, "server", json_object_new_boolean(t->subs > 0));
	if (t->subs) {
		cli_proc_name(v, proc, name, &pid);
		json_object_object_add(o, "server_pid", json_object_new_int(pid));
		json_object_object_add(o, "server_process", json_object_new_string(name));
	}
	json_object_object_add(o, "clients", json_object_new_int64(t->pubs));
	return o;
}

int cli_service_list(struct cli *c, int argc, char **argv)
{
	struct json_object *all;
	struct cli_topic_row *rows;
	struct cli_registry reg;
	char svc[TAKT_NAME_MAX];
	uint32_t n;

	(void)argv;
	if (argc > 1)
		return cli_usage_error(c, "takes no arguments");
	if (cli_registry_open(c, &reg))
		return 1;
	all = json_object_new_array();
	n = cli_topic_rows(&reg.v, &rows);
	for (uint32_t i = 0; i < n; i++)
		if (service_of(&rows[i], svc))
			json_object_array_add(all, service_json(&reg.v, &rows[i], svc));
	if (c->json) {
		cli_json_print(all);
	} else {
		printf("%-32s %-24s %-26s %7s\n", "SERVICE", "REQUEST_TYPE", "SERVER", "CLIENTS");
		for (size_t i = 0; i < json_object_array_length(all); i++) {
			struct json_object *o = json_object_array_get_idx(all, i), *v;
			char server[48] = "-";

			if (json_object_object_get_ex(o, "server_pid", &v))
				snprintf(server, sizeof(server), "%s (%d)",
					 json_object_get_string(json_object_object_get(o, "server_process")),
					 json_object_get_int(v));
			printf("%-32s %-24s %-26s %7lld\n", json_object_get_string(json_object_object_get(o, "name")),
			       *json_object_get_string(json_object_object_get(o, "request_type"))
				       ? json_object_get_string(json_object_object_get(o, "request_type"))
				       : "-",
			       server, (long long)json_object_get_int64(json_object_object_get(o, "clients")));
		}
		json_object_put(all);
	}
	free(rows);
	cli_registry_close(&reg);
	return 0;
}

/* service info: the server, and each client with its requests queued and
 * its responses queued (CONNS). */
int cli_service_info(struct cli *c, int argc, char **argv)
{
	struct cli_topic_row *rows;
	struct cli_registry reg;
	struct cli_stats s = {0};
	char svc[TAKT_NAME_MAX];
	struct json_object *o = NULL, *clients;
	const struct seg_view *v;
	uint32_t n, i;
	int r = 1;

	if (argc != 2)
		return cli_usage_error(c, "needs one service name");
	if (cli_registry_open(c, &reg))
		return 1;
	v = &reg.v;
	n = cli_topic_rows(v, &rows);
	for (i = 0; i < n; i++)
		if (service_of(&rows[i], svc) && !strcmp(svc, argv[1]))
			break;
	if (i == n) {
		fprintf(stderr, "takt: no service '%s' in domain '%s' (takt service list shows them)\n", argv[1],
			c->domain);
		goto out;
	}
	if (cli_stats_fetch(c, v, &s))
		goto out;
	o = service_json(v, &rows[i], svc);
	clients = json_object_new_array();
	for (uint32_t pi = 0; pi < v->lim.publishers; pi++) {
		struct json_object *j;
		char name[TAKT_PROC_NAME_MAX];
		uint64_t queued = 0, responses = 0;
		int32_t pid;

		if (!cli_in_use(&v->pubs[pi].state) || v->pubs[pi].topic != rows[i].index)
			continue;
		cli_proc_name(v, v->pubs[pi].proc, name, &pid);
		for (uint32_t k = 0; k < s.n_conns; k++) {
			const struct proto_conn_stat *cs = &s.conns[k];
			uint64_t client;
			uint32_t st = cs->sub < v->lim.subscribers ? v->subs[cs->sub].topic : TAKT_NONE;
			char topic[TAKT_NAME_MAX];

			if (cs->publisher_id == v->pubs[pi].id)
				queued += cs->pushed - cs->taken; /* its requests waiting for the server */
			if (st < v->lim.topics) {
				memcpy(topic, v->topics[st].name, TAKT_NAME_MAX);
				topic[TAKT_NAME_MAX - 1] = 0;
				if (proto_service_topic(topic, TAKT_NAME_MAX, NULL, &client) == 'r' &&
				    client == v->pubs[pi].id)
					responses += cs->pushed - cs->taken; /* responses waiting for it */
			}
		}
		j = json_object_new_object();
		json_object_object_add(j, "client_id", cli_json_u64(v->pubs[pi].id));
		json_object_object_add(j, "pid", json_object_new_int(pid));
		json_object_object_add(j, "process", json_object_new_string(name));
		json_object_object_add(j, "max_request", cli_json_u64(v->pubs[pi].payload_size));
		json_object_object_add(j, "requests_queued", cli_json_u64(queued));
		json_object_object_add(j, "responses_queued", cli_json_u64(responses));
		json_object_array_add(clients, j);
	}
	json_object_object_add(o, "client_list", clients);
	if (c->json) {
		cli_json_print(o);
	} else {
		struct json_object *pid;

		const char *rt = json_object_get_string(json_object_object_get(o, "response_type"));

		printf("service '%s', request type %s, response type %s: ", svc, rows[i].type[0] ? rows[i].type : "-",
		       rt && *rt ? rt : "-");
		if (json_object_object_get_ex(o, "server_pid", &pid))
			printf("served by %s (pid %d)",
			       json_object_get_string(json_object_object_get(o, "server_process")), json_object_get_int(pid));
		else
			printf("no server");
		printf(", %zu client%s\n", json_object_array_length(clients),
		       json_object_array_length(clients) == 1 ? "" : "s");
		if (json_object_array_length(clients))
			printf("\n  %-18s %7s %-20s %11s %9s %9s\n", "CLIENT_ID", "PID", "PROCESS", "MAX_REQUEST", "REQUESTS",
			       "RESPONSES");
		for (size_t k = 0; k < json_object_array_length(clients); k++) {
			struct json_object *j = json_object_array_get_idx(clients, k);

			printf("  %#-18llx %7d %-20s %11llu %9llu %9llu\n",
			       (unsigned long long)json_object_get_uint64(json_object_object_get(j, "client_id")),
			       json_object_get_int(json_object_object_get(j, "pid")),
			       json_object_get_string(json_object_object_get(j, "process")),
			       (unsigned long long)json_object_get_uint64(json_object_object_get(j, "max_request")),
			       (unsigned long long)json_object_get_uint64(json_object_object_get(j, "requests_queued")),
			       (unsigned long long)json_object_get_uint64(json_object_object_get(j, "responses_queued")));
		}
		json_object_put(o);
	}
	r = 0;
out:
	cli_stats_free(&s);
	free(rows);
	cli_registry_close(&reg);
	return r;
}

/* service call NAME DATA: one request, its first response printed. */
int cli_service_call(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"timeout", required_argument, NULL, 't'}, {"max-response", required_argument, NULL, 'm'}, {0},
	};
	double timeout = 5;
	uint64_t max_response = 65536;
	takt_node *n;
	takt_client *cli;
	char *resp;
	int opt, r;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 't' && cli_parse_double(optarg, &timeout))
			continue;
		if (opt == 'm' && cli_parse_size(optarg, &max_response) && max_response > 0 && max_response <= (1u << 30))
			continue;
		return cli_usage_error(c, "bad option '%s'", argv[optind - 1]);
	}
	if (argc - optind != 2)
		return cli_usage_error(c, "needs a service and the request's data");
	resp = malloc(max_response);
	if (!resp || cli_node(c, "call", &n)) {
		free(resp);
		return 1;
	}
	r = takt_client_open(n, &(struct takt_service_opts){.service = argv[optind],
							   .max_request = strlen(argv[optind + 1]) ? strlen(argv[optind + 1]) : 1},
			     &cli);
	if (r < 0) {
		fprintf(stderr, "takt: cannot call service '%s' in domain '%s': %s\n", argv[optind], c->domain,
			strerror(-r));
	} else {
		r = takt_client_call(cli, argv[optind + 1], strlen(argv[optind + 1]), resp, max_response,
				     (int64_t)(timeout * 1e9));
		if (r < 0)
			fprintf(stderr, "takt: service '%s': %s\n", argv[optind],
				r == -ENOTCONN ? "no server" : r == -ETIMEDOUT ? "no response in time" : strerror(-r));
		takt_client_close(cli);
	}
	if (r >= 0) {
		size_t len = (size_t)r < max_response ? (size_t)r : max_response;

		if (c->json) {
			struct json_object *j = json_object_new_object();
			char *b64 = malloc(len / 3 * 4 + 8);

			json_object_object_add(j, "service", json_object_new_string(argv[optind]));
			json_object_object_add(j, "size", json_object_new_int64(r));
			if (b64 && b64_ntop((const unsigned char *)resp, len, b64, len / 3 * 4 + 8) >= 0)
				json_object_object_add(j, "data", json_object_new_string(b64));
			free(b64);
			cli_json_print(j);
		} else {
			bool text = true;

			for (size_t i = 0; i < len; i++)
				text &= isprint((unsigned char)resp[i]) || resp[i] == '\n' || resp[i] == '\t' ||
					(i + 1 == len && resp[i] == 0);
			if (text)
				printf("%.*s\n", (int)(len && !resp[len - 1] ? len - 1 : len), resp);
			else
				for (size_t i = 0; i < len; i++)
					printf("%02x%s", (unsigned char)resp[i], i + 1 == len ? "\n" : " ");
		}
	}
	takt_node_close(n);
	free(resp);
	return r < 0 ? 1 : 0;
}
