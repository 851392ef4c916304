/* harness.h - multi-process tests with a real takt-broker.
 *
 * Each test starts its own broker on a private domain in a private runtime
 * directory, so tests can run in parallel, and real child processes that
 * talk to it. Every wait is bounded and fails with a message.
 */
#ifndef TAKT_TEST_HARNESS_H
#define TAKT_TEST_HARNESS_H

#include "proto.h"

#include <stdbool.h>
#include <sys/types.h>
#include <takt/ipc.h>

struct h_broker {
	pid_t pid;
	char domain[TAKT_DOMAIN_MAX];
	char rundir[128];
	char config[160];
};

/* Starts takt-broker --foreground on a fresh domain named after tag; extra
 * INI text (or NULL) is written to a config file first. 0 when it serves. */
int h_broker_start(struct h_broker *b, const char *tag, const char *ini);
/* The same, with the broker's process made by spawn instead of h_spawn
 * (spawn(fn, arg) runs fn(arg) in a child as h_spawn does; a test puts the
 * broker in a container so). h_broker_stop sends SIGTERM to the pid spawn
 * returned and waits for it. */
int h_broker_start_with(struct h_broker *b, const char *tag, const char *ini,
			pid_t (*spawn)(int (*fn)(void *), void *arg));
void h_broker_stop(struct h_broker *b);
struct h_broker_opts {
	const char *log; /* the broker's standard error goes to this file */
	bool system_dir; /* no TAKT_RUNTIME_DIR: root's default (/run/takt) */
	pid_t (*spawn)(int (*)(void *), void *); /* makes its process; NULL: h_spawn */
};
int h_broker_start_opts(struct h_broker *b, const char *tag, const char *ini, const struct h_broker_opts *o);
/* Starts a new broker for b's domain, runtime directory and config (after
 * the last one was killed, say); 0 once it serves (for a restarted broker:
 * once it adopted what came back). */
int h_broker_restart(struct h_broker *b);
/* The same, its process made as o says (o->system_dir is ignored: the
 * runtime directory is b's). */
int h_broker_restart_opts(struct h_broker *b, const struct h_broker_opts *o);

/* Runs fn(arg) in a child process; its return value is the exit status. */
pid_t h_spawn(int (*fn)(void *), void *arg);
/* Runs fn(arg) as pid 1 of new namespaces, as `unshare --fork` does: the
 * child h_spawn makes calls unshare(flags) (CLONE_NEWPID among them, say)
 * and forks fn's process; it passes SIGTERM and SIGINT on to it and exits
 * with its status, so h_wait and kill work on the pid returned as on
 * h_spawn's. *ret_inner is fn's process as we see it (to SIGKILL it). The
 * pid, or a negative errno when the namespaces could not be made. */
pid_t h_spawn_ns(int (*fn)(void *), void *arg, int flags, pid_t *ret_inner);
/* Exit status of pid, or -1 after timeout_ms (the child is then killed). */
int h_wait(pid_t pid, int timeout_ms);

/* A one-byte-per-event pipe between parent and children. */
struct h_chan {
	int rd, wr;
};
int h_chan_open(struct h_chan *c);
void h_chan_close(struct h_chan *c);
int h_chan_send(struct h_chan *c, const void *buf, size_t n);
/* 0, or -ETIMEDOUT after timeout_ms. */
int h_chan_recv(struct h_chan *c, void *buf, size_t n, int timeout_ms);

/* Every publisher's pool from the broker (MSG_POOLS, all pages), at most
 * max: how many, or a negative errno. */
int h_pools(const char *domain, struct proto_pool_stat *out, int max);
/* The pool of one publisher: 0, or -ENOENT when it has none (closed). */
int h_pool_of(const char *domain, uint64_t publisher_id, struct proto_pool_stat *out);
/* Loans and discards on p (the publisher then notices departed
 * connections and takes returns back) until its pool has exactly
 * in_flight chunks out, for up to 5 s. 0, -ETIMEDOUT, or a loan's error; *out holds the
 * last statistics either way. */
int h_settle_pool(const char *domain, takt_pub *p, uint32_t in_flight, struct proto_pool_stat *out);
/* The broker's status (MSG_STATUS): 0 or a negative errno. */
int h_status(const char *domain, struct msg_status_reply *out);
/* Waits until every publisher's pool is whole: no loans, nothing out but
 * what its history keeps (bounded); 0 or -ETIMEDOUT. A publisher counts
 * what comes back when it next loans or publishes. */
int h_wait_pools_full(const char *domain, int timeout_ms);
/* In a forked child, as root: becomes another user (groups first, since
 * credentials are taken when the node connects). 0 or a negative errno. */
int h_become(uid_t uid, gid_t gid, const gid_t *groups, int n_groups);
/* A raw client of the broker (for hostile and protocol tests): its socket
 * after HELLO, the registry descriptor, its process index and epoch. */
struct h_raw {
	int sock, reg_fd;
	uint32_t proc;
	uint64_t epoch;
};
int h_raw_hello(const char *domain, struct h_raw *r);
/* One request of type (header filled in here) with nf descriptors; the
 * reply's status (-EPIPE: not sent, -EPROTO: no reply). The reply's first
 * descriptor goes to *ret_fd if asked for, the others are closed. */
int h_raw_call(int sock, void *req, size_t size, uint16_t type, const int *fds, unsigned nf, int *ret_fd);
/* Runs the takt command built in the tree, `takt --domain DOMAIN ARGS`
 * (ARGS a shell line: redirections work), for at most the runtime of the
 * command; its standard output in out (NUL-terminated, cut at size), its
 * exit status returned (-1: killed by a signal, or it could not run). */
int h_takt(const char *domain, char *out, size_t size, const char *args);
/* Opens a node on the domain with the given name; aborts the test on failure. */
takt_node *h_node(const char *domain, const char *name);

#define H_CHECK(cond)                                                                              \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
			return 1;                                                                  \
		}                                                                                  \
	} while (0)

#endif
