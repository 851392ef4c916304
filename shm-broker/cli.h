/* cli.h - the `takt` command-line tool: what its commands share.
 *
 * `takt [OPTIONS] OBJECT [COMMAND] [ARGS]`, as bpftool: one table
 * (cli.c) names every command, its arguments and its summary; the common
 * options (--domain, --json, --help) may stand anywhere and are taken out
 * before a command sees its arguments. JSON comes from json-c, one object
 * (or array) per command, or one object per line where a command streams.
 * Exit status: 0 ok, 1 the domain could not be reached or the command
 * failed, 2 a usage error.
 */
#ifndef TAKT_CLI_H
#define TAKT_CLI_H

#include "proto.h"
#include "segment.h"

#include <json-c/json.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <takt/ipc.h>

struct cli_cmd;

struct cli {
	const char *domain;        /* resolved: --domain, $TAKT_DOMAIN, "default" */
	bool json;
	const struct cli_cmd *cmd; /* the command running */
};

struct cli_cmd {
	const char *name;    /* "topic echo" */
	const char *args;    /* its arguments and options, for the usage line */
	const char *summary;
	/* argv[0] is the command's name; its own options follow, in any
	 * order with its arguments (getopt_long). Returns the exit status. */
	int (*run)(struct cli *c, int argc, char **argv);
};

/* The usage of c->cmd on stderr; returns 2. */
int cli_usage_error(const struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints o as one line of JSON and drops it. */
void cli_json_print(struct json_object *o);
/* A u64 JSON number (json-c's int64 cannot hold all of them). */
struct json_object *cli_json_u64(uint64_t v);

/* One request/reply with the broker (no node attached): 0, or 1 after a
 * message naming the domain (no broker, no answer). */
int cli_call(const struct cli *c, void *req, size_t req_size, uint16_t type, void *reply, size_t reply_size);
/* A node of the domain named "takt-<what>": 0, or 1 after a message. */
int cli_node(const struct cli *c, const char *what, takt_node **out);

/* The domain's registry, mapped read-only (MSG_MGMT_FD): what tools read
 * of processes, topics and ports without joining the domain. */
struct cli_registry {
	struct seg_view v;
	void *base;
	size_t size;
};
int cli_registry_open(const struct cli *c, struct cli_registry *r);
void cli_registry_close(struct cli_registry *r);
/* Whether a registry entry is in use (acquire: pairs with the broker's
 * release of its state, registry.c); its fields may be read after. */
bool cli_in_use(const _Atomic uint32_t *state);
/* Process proc's name and pid ("?" and 0 when not in use or out of range). */
void cli_proc_name(const struct seg_view *v, uint32_t proc, char *name, int32_t *pid);
/* The topics in use, sorted by name (*rows malloc'ed); how many. */
struct cli_topic_row {
	char name[TAKT_NAME_MAX], type[TAKT_NAME_MAX];
	uint32_t index, pubs, subs;
};
uint32_t cli_topic_rows(const struct seg_view *v, struct cli_topic_row **rows);

/* What the broker reads of pools (POOLS) and queues (CONNS), every page;
 * the arrays are sized by the registry's limits at the first fetch. */
struct cli_stats {
	struct proto_pool_stat *pools;
	uint32_t n_pools;
	struct proto_conn_stat *conns;
	uint32_t n_conns;
};
int cli_stats_fetch(const struct cli *c, const struct seg_view *v, struct cli_stats *s);
void cli_stats_free(struct cli_stats *s);
const struct proto_pool_stat *cli_pool_of(const struct cli_stats *s, uint32_t port);

/* SIGINT and SIGTERM end a command cleanly: the signal lands in
 * cli_stop_signal (0 until then), and a blocking wait returns EINTR at
 * once (no SA_RESTART). */
extern volatile sig_atomic_t cli_stop_signal;
void cli_stop_on_signals(void);
/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t cli_mono_ns(void);

/* A number with a unit suffix: "4K", "1.5M" (bytes); false when bad. */
bool cli_parse_size(const char *s, uint64_t *out);
/* A positive decimal number (a rate, a factor); false when bad. */
bool cli_parse_double(const char *s, double *out);

/* The commands (cli_*.c). */
int cli_status(struct cli *c, int argc, char **argv);
int cli_pools(struct cli *c, int argc, char **argv);
int cli_topic_list(struct cli *c, int argc, char **argv);
int cli_topic_info(struct cli *c, int argc, char **argv);
int cli_node_list(struct cli *c, int argc, char **argv);
int cli_topic_echo(struct cli *c, int argc, char **argv);
int cli_topic_hz(struct cli *c, int argc, char **argv);
int cli_topic_bw(struct cli *c, int argc, char **argv);
int cli_topic_pub(struct cli *c, int argc, char **argv);
int cli_top(struct cli *c, int argc, char **argv);
int cli_service_list(struct cli *c, int argc, char **argv);
int cli_service_info(struct cli *c, int argc, char **argv);
int cli_service_call(struct cli *c, int argc, char **argv);
int cli_record(struct cli *c, int argc, char **argv);
int cli_recover(struct cli *c, int argc, char **argv);
int cli_play(struct cli *c, int argc, char **argv);

#endif
