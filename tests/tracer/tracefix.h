/* tracefix.h - what the tracer tests share: a takt-trace process run beside a
 * real broker, and a publisher and a subscriber executor in child processes.
 *
 * Every wait is bounded. The tracer's stdout and stderr go to files in the
 * broker's private runtime directory, read after it exits.
 */
#ifndef TAKT_TEST_TRACEFIX_H
#define TAKT_TEST_TRACEFIX_H

#include "harness.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define TF_WAIT_MS 15000
#define TF_ASLEEP_MS 1000 /* a publish waits this long at most for the subscriber to sleep */
/* takt-trace's exit after SIGINT: it takes its uprobes off every process
 * that maps the libraries, each probe site a few RCU grace periods in the
 * kernel (perf_uprobe_destroy), which a loaded machine stretches to many
 * seconds in all; killed earlier, the kernel leaks the uprobes it was
 * taking off ("failed to unregister, leaking uprobe"). */
#define TF_STOP_MS 60000

/* Exits 77 with a message unless root. */
void tf_require_root(void);

struct tf_tracer {
	pid_t pid;
	char out[200], err[200];
};

/* Runs takt-trace with argv (NULL-terminated, argv[0] is the mode); waits
 * until it says it traces. 0, or -1 with a message (the tracer is stopped). */
int tf_tracer_start(struct tf_tracer *t, const char *rundir, const char *const *argv);
/* SIGINT, then its exit status (within TF_STOP_MS), or -1. */
int tf_tracer_stop(struct tf_tracer *t);
/* The whole of a file, NUL-terminated; NULL on failure. free() it. */
char *tf_slurp(const char *path);

/* A publisher and a subscriber executor, each its own process. */
struct tf_pubsub {
	const char *domain, *topic;
	unsigned count;     /* samples to publish */
	unsigned gap_us;    /* between publishes, at least; each one also waits (bounded) until
	                       the subscriber's dispatch thread sleeps in its epoll wait */
	pid_t pub_pid, sub_pid;
	pid_t sub_tid;      /* the subscriber's dispatch thread (it parks and runs the item) */
	unsigned received;  /* what the subscriber's item took, reported at the end */
	struct h_chan to_pub, to_sub, from_sub, from_pub;
};

/* Starts both; returns when both are attached and the subscriber waits. */
int tf_pubsub_start(struct tf_pubsub *ps);
/* Publishes everything and waits until the subscriber took it all. */
int tf_pubsub_run(struct tf_pubsub *ps);
/* Ends both children; 0 when both exited cleanly. */
int tf_pubsub_stop(struct tf_pubsub *ps);

/* Runs argv[0] (a path) with argv; its exit status within TF_WAIT_MS, or -1. */
int tf_run(const char *const *argv);
/* The number jq prints for filter over the JSON file path, or -1. */
long tf_jq_count(const char *filter, const char *path);

/* A check of one line of the tracer's output (a variable line in scope):
 * fails the cmocka test, printing the line. */
#define TF_CHECK(c)                                                                                \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "line: %s\n", line);                                       \
			fail_msg("%s", #c);                                                        \
		}                                                                                  \
	} while (0)

/* A number field of a flat JSON object: true and *out, false when missing or null. */
bool tf_json_num(const char *obj, const char *key, long long *out);
/* A string field: true and out (truncated to len). */
bool tf_json_str(const char *obj, const char *key, char *out, size_t len);

#endif
