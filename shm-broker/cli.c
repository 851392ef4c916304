/* cli.c - `takt`: the command table, the common options, and the ways a
 * command reaches the domain (a request to the broker, the registry
 * mapped read-only, or a node of its own). */
#include "cli.h"

#include <takt/takt.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static const struct cli_cmd commands[] = {
	{"status", "", "whether the broker runs: its pid, epoch, restarts, memory and limits", cli_status},
	{"pools", "", "each publisher's pool: chunk size, chunks reserved, free, in flight, bytes", cli_pools},
	{"topic list", "", "the topics open: name, type, publishers, subscribers", cli_topic_list},
	{"topic info", "TOPIC", "a topic's publishers and subscribers: processes, queues, drops, memory", cli_topic_info},
	{"topic echo", "TOPIC [--count N] [--duration S] [--hex] [--type T]",
	 "prints each sample: text, or a hexdump; --json: seq, publisher_id, publish_ns, size, data (base64)",
	 cli_topic_echo},
	{"topic hz", "TOPIC [--window N] [--count N] [--duration S]",
	 "the rate, and min/max/std dev of the period over the last N samples, each second", cli_topic_hz},
	{"topic bw", "TOPIC [--window N] [--count N] [--duration S]",
	 "the bandwidth and sample sizes over the last N samples, each second", cli_topic_bw},
	{"topic pub", "TOPIC DATA [--rate HZ] [--count N] [--duration S] [--hex] [--type T]",
	 "publishes DATA (text, or --hex digits) once, N times, or at HZ until stopped", cli_topic_pub},
	{"node list", "", "the processes attached: index, pid, name, user, ports", cli_node_list},
	{"service list", "", "the request/response services: request type, server, clients", cli_service_list},
	{"service info", "SERVICE", "a service's server and clients, with their queued requests and responses",
	 cli_service_info},
	{"service call", "SERVICE DATA [--timeout S]", "sends DATA as a request and prints the first response",
	 cli_service_call},
	{"top", "[--interval S] [--once]",
	 "a live view: topics by drops and full queues, processes by pool use; q quits", cli_top},
	{"record", "-o FILE [TOPIC|PATTERN...|--all] [OPTIONS]",
	 "record topics into an MCAP file until Ctrl-C (--duration S, --max-bytes N end it too)", cli_record},
	{"record --recover", "IN OUT", "rewrite a recording cut short (a crash) whole, up to its last chunk", cli_recover},
	{"play", "FILE [--rate X] [--loop] [--topics T,...]",
	 "republish a recording with its timing (--rate scales it, --duration S ends it)", cli_play},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *f)
{
	fprintf(f, "Usage: takt [--domain D] [--json] COMMAND [ARGS]\n"
		   "Looks at and works with a takt domain.\n\nCommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++) {
		char line[64];

		snprintf(line, sizeof(line), "%s %s", commands[i].name, commands[i].args);
		fprintf(f, "  %-34s %s\n", line, commands[i].summary);
	}
	fprintf(f, "\nOptions (anywhere on the line):\n"
		   "  -d, --domain D   domain (default: $TAKT_DOMAIN, else \"default\")\n"
		   "  -j, --json       machine-readable output (JSON)\n"
		   "  -h, --help       this text, or a command's (takt COMMAND --help)\n"
		   "  -V, --version    print the version\n\n"
		   "Exit status: 0 ok, 1 no broker runs for the domain or the command failed, 2 usage error.\n");
}

static void cmd_usage(FILE *f, const struct cli_cmd *cmd)
{
	fprintf(f, "Usage: takt %s %s\n%s\n", cmd->name, cmd->args, cmd->summary);
}

int cli_usage_error(const struct cli *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "takt %s: ", c->cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	cmd_usage(stderr, c->cmd);
	return 2;
}

void cli_json_print(struct json_object *o)
{
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(o);
}

struct json_object *cli_json_u64(uint64_t v)
{
	return json_object_new_uint64(v);
}

static int no_broker(const struct cli *c, int r)
{
	fprintf(stderr, "takt: no broker runs for domain '%s' (%s); start one with: takt-broker --domain %s\n",
		c->domain, strerror(-r), c->domain);
	return 1;
}

static int call_fd(const struct cli *c, void *req, size_t req_size, uint16_t type, void *reply, size_t reply_size,
		   int *ret_fd)
{
	unsigned n_fds = 0;
	int sock, r, fds[TAKT_PROTO_MAX_FDS];

	r = proto_connect(c->domain, &sock);
	if (r < 0)
		return no_broker(c, r);
	proto_hdr_init(req, type, (uint32_t)req_size, 1);
	r = proto_call(sock, req, req_size, reply, reply_size, fds, TAKT_PROTO_MAX_FDS, &n_fds, 5000, NULL, NULL);
	close(sock);
	for (unsigned i = ret_fd ? 1 : 0; i < n_fds; i++)
		close(fds[i]);
	if (r == 0 && ret_fd) {
		if (n_fds == 0)
			r = -EPROTO;
		else
			*ret_fd = fds[0];
	}
	if (r < 0) {
		fprintf(stderr, "takt: the broker of domain '%s' did not answer: %s\n", c->domain, strerror(-r));
		return 1;
	}
	return 0;
}

int cli_call(const struct cli *c, void *req, size_t req_size, uint16_t type, void *reply, size_t reply_size)
{
	return call_fd(c, req, req_size, type, reply, reply_size, NULL);
}

int cli_node(const struct cli *c, const char *what, takt_node **out)
{
	char name[32];
	int r;

	snprintf(name, sizeof(name), "takt-%s", what);
	r = takt_node_open(&(struct takt_node_opts){.domain = c->domain, .name = name}, out);
	if (r == -ENOENT || r == -ECONNREFUSED)
		return no_broker(c, r);
	if (r < 0) {
		fprintf(stderr, "takt: cannot attach to domain '%s': %s\n", c->domain, strerror(-r));
		return 1;
	}
	return 0;
}

int cli_registry_open(const struct cli *c, struct cli_registry *reg)
{
	struct msg_empty req;
	struct proto_reply rep;
	int fd = -1, r;

	if (call_fd(c, &req, sizeof(req), MSG_MGMT_FD, &rep, sizeof(rep), &fd))
		return 1;
	r = seg_map_fd(fd, PROT_READ, &reg->base, &reg->size);
	close(fd);
	if (r == 0)
		r = seg_view_init(&reg->v, reg->base, reg->size);
	if (r < 0) {
		if (reg->base)
			munmap(reg->base, reg->size);
		fprintf(stderr, "takt: the registry of domain '%s' is not one this takt reads: %s\n", c->domain,
			strerror(-r));
		return 1;
	}
	return 0;
}

void cli_registry_close(struct cli_registry *reg)
{
	if (reg->base)
		munmap(reg->base, reg->size);
	reg->base = NULL;
}

/* ---- the registry ---------------------------------------------------------- */

bool cli_in_use(const _Atomic uint32_t *state)
{
	return atomic_load_explicit(state, memory_order_acquire) == SLOT_ACTIVE;
}

/* A registry name, NUL-terminated whatever is there. */
static void name_copy(char *dst, const char *src)
{
	memcpy(dst, src, TAKT_NAME_MAX);
	dst[TAKT_NAME_MAX - 1] = 0;
}

void cli_proc_name(const struct seg_view *v, uint32_t proc, char *name, int32_t *pid)
{
	*pid = 0;
	snprintf(name, TAKT_PROC_NAME_MAX, "?");
	if (proc < v->lim.processes && cli_in_use(&v->procs[proc].state)) {
		memcpy(name, v->procs[proc].name, TAKT_PROC_NAME_MAX);
		name[TAKT_PROC_NAME_MAX - 1] = 0;
		*pid = v->procs[proc].pid;
	}
}

static int row_cmp(const void *a, const void *b)
{
	return strcmp(((const struct cli_topic_row *)a)->name, ((const struct cli_topic_row *)b)->name);
}

/* The topics in use, sorted by name; how many (rows: malloc'ed). */
uint32_t cli_topic_rows(const struct seg_view *v, struct cli_topic_row **ret)
{
	struct cli_topic_row *rows = calloc(v->lim.topics, sizeof(*rows));
	uint32_t n = 0;

	for (uint32_t i = 0; rows && i < v->lim.topics; i++) {
		const struct takt_topic *t = &v->topics[i];

		if (!cli_in_use(&t->state))
			continue;
		name_copy(rows[n].name, t->name);
		name_copy(rows[n].type, t->type_name);
		rows[n].index = i;
		rows[n].pubs = t->n_pubs;
		rows[n].subs = t->n_subs;
		n++;
	}
	if (rows)
		qsort(rows, n, sizeof(*rows), row_cmp);
	*ret = rows;
	return n;
}

/* ---- what the broker reads: pools and queues, every page ---------------- */

int cli_stats_fetch(const struct cli *c, const struct seg_view *v, struct cli_stats *s)
{
	struct msg_index req = {.index = 0};
	struct msg_pools_reply pr;
	struct msg_conns_reply cr;

	s->n_pools = s->n_conns = 0;
	if (!s->pools)
		s->pools = calloc(v->lim.publishers, sizeof(*s->pools));
	if (!s->conns)
		s->conns = calloc(v->lim.connections, sizeof(*s->conns));
	if (!s->pools || !s->conns)
		return 1;
	do {
		if (cli_call(c, &req, sizeof(req), MSG_POOLS, &pr, sizeof(pr)))
			return 1;
		for (uint32_t k = 0; k < pr.r.index && k < PROTO_POOLS_PER_REPLY && s->n_pools < v->lim.publishers; k++)
			s->pools[s->n_pools++] = pr.pools[k];
		req.index = pr.next;
	} while (pr.next != TAKT_NONE);
	req.index = 0;
	do {
		if (cli_call(c, &req, sizeof(req), MSG_CONNS, &cr, sizeof(cr)))
			return 1;
		for (uint32_t k = 0; k < cr.r.index && k < PROTO_CONNS_PER_REPLY && s->n_conns < v->lim.connections; k++)
			s->conns[s->n_conns++] = cr.conns[k];
		req.index = cr.next;
	} while (cr.next != TAKT_NONE);
	return 0;
}

void cli_stats_free(struct cli_stats *s)
{
	free(s->pools);
	free(s->conns);
	s->pools = NULL;
	s->conns = NULL;
}

const struct proto_pool_stat *cli_pool_of(const struct cli_stats *s, uint32_t port)
{
	for (uint32_t i = 0; i < s->n_pools; i++)
		if (s->pools[i].port == port)
			return &s->pools[i];
	return NULL;
}

volatile sig_atomic_t cli_stop_signal;

static void on_stop(int sig)
{
	cli_stop_signal = sig;
}

void cli_stop_on_signals(void)
{
	struct sigaction sa = {.sa_handler = on_stop};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

uint64_t cli_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool cli_parse_double(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return errno == 0 && end != s && !*end && isfinite(*out) && *out > 0;
}

bool cli_parse_size(const char *s, uint64_t *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0 || !isfinite(v))
		return false;
	switch (*end) {
	case 'K': case 'k': v *= 1024; end++; break;
	case 'M': case 'm': v *= 1024 * 1024; end++; break;
	case 'G': case 'g': v *= 1024.0 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end || v >= 18446744073709551616.0)
		return false;
	*out = (uint64_t)v;
	return true;
}

/* The common options are taken out of argv, wherever they stand (before
 * "--"); the rest keeps its order. -1: exit with 0 (help, version). */
static int common_options(struct cli *c, int *argc, char **argv, bool *help)
{
	const char *domain = NULL;
	int k = 1;

	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--")) {
			while (i < *argc)
				argv[k++] = argv[i++];
			break;
		}
		if (!strcmp(a, "-d") || !strcmp(a, "--domain")) {
			if (i + 1 == *argc) {
				fprintf(stderr, "takt: %s needs a domain\n", a);
				return 2;
			}
			domain = argv[++i];
		} else if (!strncmp(a, "--domain=", 9)) {
			domain = a + 9;
		} else if (!strcmp(a, "-j") || !strcmp(a, "--json")) {
			c->json = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			*help = true;
		} else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
			printf("takt %s\n", TAKT_VERSION_STRING);
			return -1;
		} else {
			argv[k++] = argv[i];
		}
	}
	*argc = k;
	argv[k] = NULL;
	c->domain = proto_domain_default(domain);
	if (!proto_domain_ok(c->domain)) {
		fprintf(stderr, "takt: bad domain name '%s'\n", c->domain);
		return 2;
	}
	return 0;
}

/* The command whose words start argv (the longest match), and how many
 * words it took. */
static const struct cli_cmd *find(int argc, char **argv, int *words)
{
	const struct cli_cmd *best = NULL;

	for (size_t i = 0; i < N_COMMANDS; i++) {
		const char *name = commands[i].name;
		int w = 0;
		size_t at = 0;

		while (w < argc) {
			size_t len = strlen(argv[w]);

			if (strncmp(name + at, argv[w], len) || (name[at + len] != ' ' && name[at + len] != 0))
				break;
			at += len;
			w++;
			if (!name[at])
				break;
			at++;
		}
		if (!name[at] && (!best || w > *words)) {
			best = &commands[i];
			*words = w;
		}
	}
	return best;
}

/* `takt topic`: the commands of that object. */
static bool object_help(FILE *f, const char *object)
{
	size_t len = strlen(object);
	bool any = false;

	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strncmp(commands[i].name, object, len) && commands[i].name[len] == ' ') {
			if (!any)
				fprintf(f, "Commands of 'takt %s':\n", object);
			any = true;
			fprintf(f, "  takt %s %s\n      %s\n", commands[i].name, commands[i].args, commands[i].summary);
		}
	return any;
}

/* `takt __complete WORD...` (the bash completion, takt.bash): the words
 * that may follow those typed, one per line: the next word of a command,
 * or, after a command that takes a topic, the topics of the domain. */
static int complete(struct cli *c, int argc, char **argv)
{
	static const char *const takes_topic[] = {"topic info", "topic echo", "topic hz", "topic bw", "topic pub"};
	const struct cli_cmd *cmd;
	int words = 0;

	cmd = find(argc, argv, &words);
	if (cmd && words == argc) {
		for (size_t i = 0; i < sizeof(takes_topic) / sizeof(takes_topic[0]); i++)
			if (!strcmp(cmd->name, takes_topic[i]) && !getenv("TAKT_COMPLETE_NO_BROKER")) {
				struct cli_registry reg;
				struct cli_topic_row *rows;
				int err = dup(STDERR_FILENO);

				freopen("/dev/null", "w", stderr); /* no broker: no topics, quietly */
				if (cli_registry_open(c, &reg) == 0) {
					uint32_t n = cli_topic_rows(&reg.v, &rows);

					for (uint32_t k = 0; k < n; k++)
						printf("%s\n", rows[k].name);
					free(rows);
					cli_registry_close(&reg);
				}
				if (err >= 0)
					dup2(err, STDERR_FILENO);
			}
		return 0;
	}
	/* the next word of every command that starts with the words typed,
	 * each once (the table keeps an object's commands together) */
	const char *last = NULL;
	size_t last_len = 0;

	for (size_t i = 0; i < N_COMMANDS; i++) {
		const char *w = commands[i].name;
		size_t len;
		int k = 0;

		for (; k < argc; k++) {
			len = strlen(argv[k]);
			if (strncmp(w, argv[k], len) || (w[len] != ' ' && w[len] != 0))
				break;
			w += len + (w[len] == ' ');
		}
		len = strcspn(w, " ");
		if (k < argc || !len || (last && len == last_len && !strncmp(w, last, len)))
			continue;
		printf("%.*s\n", (int)len, w);
		last = w;
		last_len = len;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cli c = {0};
	bool help = false;
	int r = common_options(&c, &argc, argv, &help), words = 0;
	if (r)
		return r < 0 ? 0 : r;
	if (argc < 2) {
		usage(help ? stdout : stderr);
		return help ? 0 : 2;
	}
	if (!strcmp(argv[1], "__complete"))
		return complete(&c, argc - 2, argv + 2);
	c.cmd = find(argc - 1, argv + 1, &words);
	if (!c.cmd) {
		if (object_help(help ? stdout : stderr, argv[1]))
			return help ? 0 : 2;
		fprintf(stderr, "takt: unknown command '%s' (try takt --help)\n", argv[1]);
		return 2;
	}
	if (help) {
		cmd_usage(stdout, c.cmd);
		return 0;
	}
	/* argv[0] of the command: its last word */
	return c.cmd->run(&c, argc - words, argv + words);
}
