/* gw_harness.h - takt-gateway tests: real takt-brokers (tests/system's
 * harness), real takt-gateway processes, real Cyclone DDS and, as root,
 * real network namespaces joined by a veth pair. Every wait is bounded
 * and fails with a message; everything started is stopped in teardown,
 * also after a failure. */
#ifndef TAKT_GW_HARNESS_H
#define TAKT_GW_HARNESS_H

#include "harness.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Two network namespaces, A and B, joined by a veth pair (10.77.0.1/24 in
 * A on gw_net.veth_a, 10.77.0.2/24 in B on veth_b), loopback up. */
struct gw_net {
	char ns_a[32], ns_b[32], veth_a[16], veth_b[16];
	bool up;
};
/* 0; -EPERM when not root (the caller skips); -EIO when ip(8) failed. */
int gw_net_up(struct gw_net *n);
void gw_net_down(struct gw_net *n);
/* In a child: joins the network namespace named ns (NULL: stays). */
int gw_enter(const char *ns);
/* h_spawn, its child in network namespace ns first (NULL: none). */
pid_t gw_spawn_in(const char *ns, int (*fn)(void *), void *arg);

struct gw_proc {
	pid_t pid;
	char name[32], config[200], log[200], rundir[128], domain[64], ns[32];
};
/* Writes ini to BROKER_RUNDIR/NAME.ini and starts takt-gateway on b's
 * domain (in namespace ns, or NULL), its standard error in NAME.log next
 * to it; returns once its counters are published (10 s at most). */
int gw_start(struct gw_proc *g, const struct h_broker *b, const char *name, const char *ns, const char *ini);
/* Starts it again with the same configuration. */
int gw_restart(struct gw_proc *g);
/* SIGTERM and wait (5 s, then SIGKILL), or SIGKILL at once with kill
 * set: its exit status (0: a clean stop), -1 when it had to be killed. */
int gw_stop(struct gw_proc *g, bool kill);
/* Stops it (SIGTERM) and removes what it keeps across restarts (its
 * table of duplicates, /dev/shm/takt-gw-DOMAIN-NAME): for teardown. */
void gw_forget(struct gw_proc *g);
/* Prints the log of the gateway (after a failure). */
void gw_dump_log(const struct gw_proc *g);

struct gw_ctr {
	uint64_t samples, bytes, wire_bytes, drops, write_errors, late_joiners, duplicates, skipped;
};
/* The counters of the gateway's bridge of topic in direction dir ("out",
 * "in") from `takt-gateway --stats --json`: 0, or -ENOENT (no such bridge
 * yet), -EIO. */
int gw_counters(const struct gw_proc *g, const char *topic, const char *dir, struct gw_ctr *out);
/* Waits (bounded, timeout_ms) until the bridge's samples + duplicates
 * reach at least n: 0 or -ETIMEDOUT (with the counters printed). */
int gw_wait_count(const struct gw_proc *g, const char *topic, const char *dir, uint64_t n, int timeout_ms);

/* A sample of the bridged streams: its number and a pattern derived from
 * it over size bytes, so a subscriber checks order and content. */
void gw_fill(void *p, size_t size, uint64_t seq);
/* The number of a filled sample, or UINT64_MAX when its bytes are not
 * what gw_fill wrote. */
uint64_t gw_check(const void *p, size_t size);

/* Publishes samples first..last on topic (gw_fill, size bytes each) in
 * domain/rundir; with warmup, sends samples numbered 0 every 10 ms first
 * until a byte arrives on chan (the subscriber got one: the path is
 * matched end to end), then waits for another byte before it exits
 * (so its history stays). */
struct gw_pub_args {
	const char *rundir, *domain, *topic, *type;
	uint64_t first, last;
	size_t size;
	unsigned history;
	bool warmup;
	struct h_chan *chan, *done;
	/* after publishing each pause_at (0: none), says so on paused and
	 * waits for a byte on step */
	uint64_t pause_at[2];
	struct h_chan *paused, *step;
};
int gw_pub_child(void *a);
/* Subscribes and expects exactly first..last, in order, intact (samples
 * numbered 0 are warm-ups: the first one is signalled on chan). */
struct gw_sub_args {
	const char *rundir, *domain, *topic;
	uint64_t first, last;
	size_t size;
	unsigned history;
	struct h_chan *chan, *ready;
	uint64_t notify_at;      /* says so on progress once it took this one (0: never) */
	struct h_chan *progress;
};
int gw_sub_child(void *a);

#define GW_WAIT_MS 60000

#endif
