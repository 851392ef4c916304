/* gateway.h - takt-gateway: bridges chosen topics between a takt domain and
 * Eclipse Cyclone DDS (docs/gateway.md). Built on takt's public API only.
 *
 * Threads: the outbound thread owns every takt subscriber (discovery by
 * pattern, takes, DDS writes); the inbound thread owns every takt
 * publisher (DDS discovery by pattern, takes, publishes); the main thread
 * handles signals and publishes the counters. Counters are the only words
 * they share (relaxed atomics: statistics).
 */
#ifndef TAKT_GATEWAY_H
#define TAKT_GATEWAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <takt/ipc.h>

#define GW_MAX_RULES 64
#define GW_MAX_BRIDGES 256
#define GW_SEEN 64               /* remote publishers remembered per inbound topic (seen.c) */
#define GW_BATCH_MAX 64          /* takt samples in one DDS sample at most */
#define GW_BATCH_DEFAULT 8192    /* [out] batch when not set (and late_joiners = 0) */
#define GW_DDS_PREFIX "takt/"
#define GW_STATS_PREFIX "_gateway/"
#define GW_STATS_TYPE "takt.gateway.Stats"

enum gw_dir { GW_OUT, GW_IN };

/* One [out PATTERN] or [in PATTERN] section. */
struct gw_rule {
	enum gw_dir dir;
	char pattern[TAKT_TOPIC_NAME_MAX];
	unsigned line;           /* of its section header, for messages */
	bool reliable;           /* reliability = reliable | best-effort */
	unsigned depth;          /* history = N (KEEP_LAST N); 0: all (KEEP_ALL) */
	unsigned late_joiners;   /* takt history <-> DDS transient-local depth; 0: volatile */
	bool lz4;
	bool lossless;           /* outbound takt subscriber blocks its publishers */
	uint64_t max_payload;    /* bytes */
	unsigned queue_depth;    /* outbound takt subscriber's queue */
	uint64_t batch;          /* out: payload bytes after which a DDS sample takes no more takt samples */
};

struct gw_config {
	char name[32];           /* [gateway] name: node name, stats topic */
	char domain[48];         /* [gateway] domain: takt domain ("" : $TAKT_DOMAIN) */
	uint32_t origin;         /* [gateway] origin: tag of what it imports (!= 0) */
	unsigned stats_ms;       /* [gateway] stats_interval_ms */
	uint32_t dds_domain;     /* [dds] domain */
	char dds_interface[32];  /* [dds] interface */
	char dds_config[512];    /* [dds] config: Cyclone XML or a file:// URI */
	struct gw_rule rules[GW_MAX_RULES];
	unsigned n_rules;
};

/* Loads path into c: 0, or -EINVAL with "path:line: reason" in err. */
int gw_config_load(struct gw_config *c, const char *path, char *err, size_t errlen);
/* The first rule of direction dir whose pattern matches a takt topic name. */
const struct gw_rule *gw_rule_match(const struct gw_config *c, enum gw_dir dir, const char *topic);
/* `*` matches within one '/'-separated segment, `**` across them. */
bool gw_glob(const char *pat, const char *name);

/* Counters of one bridged topic and direction (docs/gateway.md). */
struct gw_counters {
	_Atomic uint64_t samples, bytes, wire_bytes, drops, write_errors, late_joiners, duplicates, skipped;
};

struct gw_bridge {
	enum gw_dir dir;
	char topic[TAKT_TOPIC_NAME_MAX];
	const struct gw_rule *rule;
	struct gw_counters c;
	_Atomic bool used;       /* set once the slot is filled (release) */
};

struct gw_seen_file;
struct gw_seen_topic;
struct gw_seen_entry;

struct gw {
	struct gw_config cfg;
	takt_node *node;
	int participant;         /* dds_entity_t */
	struct gw_bridge bridges[GW_MAX_BRIDGES];
	_Atomic unsigned n_bridges;
	/* Set by the main thread (seq_cst) before it writes stop_fd and
	 * triggers stop_guard; the threads load it relaxed at each wake-up:
	 * a flag that publishes nothing, and the wake-up's syscall orders the
	 * store before their next look. */
	_Atomic bool stop;
	int stop_fd;             /* eventfd: wakes the outbound thread */
	int stop_guard;          /* dds guard condition: wakes the inbound thread */
	struct gw_seen_file *seen; /* seen.c: remote publishers' last seq, per inbound topic */
};

/* A slot for a new bridge (the calling thread fills it, then marks it used). */
struct gw_bridge *gw_bridge_new(struct gw *g, enum gw_dir dir, const char *topic, const struct gw_rule *r);

/* DDS topic names allow [A-Za-z0-9_/]: a takt name maps to GW_DDS_PREFIX
 * + the name with '_' as "__", '.' as "_d" and '-' as "_h" (reversible). */
void gw_dds_name(const char *topic, char *out, size_t size);
/* The takt name of a DDS topic name, or -EINVAL when it is not one. */
int gw_takt_name(const char *dds, char *out, size_t size);
/* The QoS of a rule, for its writers and readers (dds_qos_t *). */
void *gw_qos(const struct gw_rule *r);

/* seen.c: maps the table of what the inbound side published (shared
 * memory named after the takt domain and the gateway's name, so that it
 * outlives a restart; in the process if that fails): 0 or -ENOMEM. */
int gw_seen_open(struct gw *g, const char *domain);
/* A topic's part of it (found, or claimed; the process's own when the
 * table is full), or NULL (out of memory). */
struct gw_seen_topic *gw_seen_topic(struct gw *g, const char *topic);
/* The entry of remote publisher id in a topic's table, or NULL (none
 * yet, or id 0). */
struct gw_seen_entry *gw_seen_find(struct gw_seen_topic *t, uint64_t id);
/* true: seq of that entry's publisher was published already. */
bool gw_seen_dup(const struct gw_seen_entry *e, uint64_t seq);
/* Remembers that seq of remote publisher id was published (or dropped):
 * in its entry e, or (NULL) in a new one. */
void gw_seen_mark(struct gw_seen_topic *t, struct gw_seen_entry *e, uint64_t id, uint64_t seq);

void *gw_out_thread(void *g);
void *gw_in_thread(void *g);

/* Counters as JSON text (a NUL-terminated string the caller frees). */
char *gw_stats_json(struct gw *g);
/* --stats: reads the counters every gateway of the domain publishes. */
int gw_stats_print(const char *domain, const char *name, bool json);

#endif
