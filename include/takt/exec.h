/* takt/exec.h - an executor that dispatches chains and graphs of callbacks
 * on timers, sample arrival, events, file descriptors and deadlines.
 *
 * Build once (create, add tasks), then run. After the first wake phase
 * nothing allocates, on the dispatch thread or the workers: every task's
 * dispatch job, every graph's runtime state and the pool's queue are sized
 * when tasks are added.
 *
 * Conventions as in ipc.h: 0 (or an id/count) on success, a negative errno
 * on failure, out-parameters untouched on failure, nothing prints.
 */
#ifndef TAKT_EXEC_H
#define TAKT_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include <takt/ipc.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct takt_exec takt_exec;
typedef struct takt_triggers takt_triggers; /* only valid inside declare() */
typedef struct takt_ctx takt_ctx;           /* only valid inside execute() */
typedef struct takt_graph takt_graph;

enum { TAKT_CONTINUE = 0, TAKT_STOP_CHAIN = 1 }; /* or a negative errno */

struct takt_item {
	const char *name;
	int (*declare)(takt_triggers *t, void *user); /* optional */
	int (*execute)(takt_ctx *ctx, void *user);
	void *user;
	/* Optional execution-time budget: a run of this item that takes
	 * longer (CLOCK_MONOTONIC, from the call of execute to its return) is
	 * an overrun, counted and told to the monitor. 0: none. */
	uint64_t budget_ns;
};

/* Trigger declarations, made by an item's declare(). A task's triggers are
 * declared by its head item (chain) or its roots (graph).
 * -EINVAL bad argument, or a second interval on one task; -ENOSPC too many
 * triggers on one task (TAKT_EXEC_MAX_TRIGGERS). */
#define TAKT_EXEC_MAX_TRIGGERS 16
TAKT_API int takt_trigger_interval(takt_triggers *t, uint64_t period_ns); /* one per task */
TAKT_API int takt_trigger_subscriber(takt_triggers *t, takt_sub *sub);
/* The task runs when a sample arrives, and with takt_ctx_deadline_missed()
 * true when none arrived for deadline_ns. */
TAKT_API int takt_trigger_deadline(takt_triggers *t, takt_sub *sub, uint64_t deadline_ns);
TAKT_API int takt_trigger_event(takt_triggers *t, takt_event *ev);
/* The task runs when requests wait for the server (takt_server_take until
 * -EAGAIN), or responses (or resets) for the client. */
TAKT_API int takt_trigger_server(takt_triggers *t, takt_server *srv);
TAKT_API int takt_trigger_client(takt_triggers *t, takt_client *cli);
/* Any pollable fd; the task must consume what makes it readable. */
TAKT_API int takt_trigger_fd(takt_triggers *t, int fd);

/* Logical execution time (LET), for a task with an interval and no other
 * trigger: a run for the deadline d (takt_ctx_scheduled_ns) belongs to the
 * period [d, d + period). Its inputs are sampled at d: takes from a LET
 * input see only samples published at or before d (takt_sub_set_cutoff).
 * Its outputs become visible at d + period: publishes on a LET output are
 * held (takt_pub_hold, from the add on) and released at that boundary by
 * the dispatch thread, stamped with it as publish_ns, before any run
 * that starts at the same boundary (a release never waits: a blocking
 * subscriber with a full queue misses it, counted as its drop); so
 * downstream timing does not depend on how long the run took. A run that
 * ends after d + period overran (also one whose end reached the dispatch
 * thread only after it started that boundary's runs): it is counted and
 * told to the monitor (budget_overrun from the dispatch thread, item NULL,
 * against the period), its outputs are released at the first boundary at
 * or after its end (then the next one), and its next run starts there
 * (the deadlines in between are skipped cycles). Outputs whose boundary is
 * still ahead when run() returns are released by the next run, or by
 * takt_exec_destroy, which makes its LET ports ordinary again (held
 * outputs published, cutoffs removed): destroy the executor before you
 * close them. Each port is a LET port of one task;
 * -EINVAL bad argument, -ENOSPC more than TAKT_EXEC_MAX_LET ports of a kind
 * on one task; the add fails with -EINVAL if the task has no interval or
 * another trigger, -EBUSY if another task uses the port. */
#define TAKT_EXEC_MAX_LET 16
TAKT_API int takt_let_input(takt_triggers *t, takt_sub *sub);
TAKT_API int takt_let_output(takt_triggers *t, takt_pub *pub);

TAKT_API uint64_t takt_ctx_now_ns(const takt_ctx *ctx); /* CLOCK_MONOTONIC at wake-up */
/* The interval deadline this run is for (CLOCK_MONOTONIC, on the task's
 * grid: the executor's anchor + k x period), 0 if its interval did not
 * make it run. After a stall it is the latest deadline that passed. */
TAKT_API uint64_t takt_ctx_scheduled_ns(const takt_ctx *ctx);
TAKT_API int takt_ctx_task(const takt_ctx *ctx);
TAKT_API int takt_ctx_deadline_missed(const takt_ctx *ctx);

struct takt_monitor {
	void (*pre_execute)(void *user, int task, const char *item);
	void (*post_execute)(void *user, int task, const char *item, uint64_t start_ns, uint64_t took_ns,
			     int rc);
	void (*deadline_missed)(void *user, int task, uint64_t late_ns);
	void (*skipped_cycles)(void *user, uint64_t cycles); /* an interval task fell behind */
	void *user;
	/* The same, naming the task (called after skipped_cycles). */
	void (*task_skipped_cycles)(void *user, int task, uint64_t cycles);
	/* An item (item: its name) or a whole task run (item: NULL) took
	 * longer than its budget; on the thread that ran it (the task's: the
	 * thread of its last item, or the dispatch thread for a graph). */
	void (*budget_overrun)(void *user, int task, const char *item, uint64_t took_ns, uint64_t budget_ns);
};

struct takt_exec_opts {
	unsigned worker_threads; /* 0: items run inline on the dispatch thread */
	const char *thread_name_prefix;
	const int *cpu_affinity; /* worker CPUs, n_cpu_affinity entries */
	size_t n_cpu_affinity;
	int sched_fifo_priority; /* 0: SCHED_OTHER; failure is tolerated and reported */
	const struct takt_monitor *monitor;
	int handle_signals;      /* 1: SIGINT/SIGTERM end run() (default); -1: leave signals alone */
	/* The dispatch thread (the caller of run) while run() runs, restored
	 * after: SCHED_FIFO at this priority (0: unchanged; refusal tolerated
	 * and counted in sched_fifo_refused), and pinned to dispatch_cpu if
	 * pin_dispatch. */
	int dispatch_sched_fifo_priority;
	int pin_dispatch;
	int dispatch_cpu;
	int lock_memory;         /* 1: mlockall(MCL_CURRENT | MCL_FUTURE) at create; its error fails create */
};

/* -EINVAL bad options; -ENOMEM; -errno of thread or fd creation. */
TAKT_API int takt_exec_create(const struct takt_exec_opts *opts, takt_exec **out);
/* Stops and joins workers; gives LET ports back (see takt_let_input).
 * Must not be called while run() runs. NULL is fine. */
TAKT_API void takt_exec_destroy(takt_exec *ex);
/* Adds a task; returns its id. -EINVAL (bad item, a second interval),
 * -EBUSY while running, -ENOMEM; an error of the item's declare(). */
TAKT_API int takt_exec_add(takt_exec *ex, const struct takt_item *item);
TAKT_API int takt_exec_add_chain(takt_exec *ex, const struct takt_item *items, size_t n);
TAKT_API int takt_graph_create(takt_graph **out);
TAKT_API void takt_graph_destroy(takt_graph *g); /* only for a graph never added */
TAKT_API int takt_graph_vertex(takt_graph *g, const struct takt_item *item); /* vertex id */
TAKT_API int takt_graph_edge(takt_graph *g, int from, int to);             /* -EINVAL unknown vertex */
/* Takes g (also on failure); -ELOOP on a cycle, -EINVAL empty graph. */
TAKT_API int takt_exec_add_graph(takt_exec *ex, takt_graph *g);
TAKT_API int takt_exec_set_fault_handler(takt_exec *ex, int task, const struct takt_item *handler);
/* A budget for each whole run of the task (its first item's start to its
 * last item's end; a graph's first vertex to its last): a longer run is an
 * overrun (see takt_item.budget_ns for one item). 0 removes it. -EINVAL
 * unknown task, -EBUSY while running. */
TAKT_API int takt_exec_set_budget(takt_exec *ex, int task, uint64_t budget_ns);
/* An item that runs `item` only when pred(pred_user) is true; false counts
 * as TAKT_STOP_CHAIN. The returned item refers to a copy kept by the
 * executor library until takt_exec_destroy of the executor it is added to
 * (or forever if never added). NULL execute on allocation failure. */
TAKT_API struct takt_item takt_item_when(struct takt_item item, int (*pred)(void *), void *pred_user);

/* Runs until stop(), SIGINT or SIGTERM: 0. */
TAKT_API int takt_exec_run(takt_exec *ex);
/* Runs n wake phases: 0, or 0 early on stop(). */
TAKT_API int takt_exec_run_n(takt_exec *ex, uint64_t n);
/* Runs for ns nanoseconds (or until stop()). */
TAKT_API int takt_exec_run_for(takt_exec *ex, uint64_t ns);
/* What takt_exec_run_until_idle ran. task_dispatches: the caller's array
 * of n_task_dispatches entries (or NULL), filled with each task's
 * dispatches in this call, by task id. */
struct takt_exec_summary {
	uint64_t phases, dispatches, errors, deadline_misses, skipped_cycles, overruns;
	uint64_t *task_dispatches;
	size_t n_task_dispatches;
};
/* Runs wake phases while any task is ready (a trigger fired, samples wait,
 * an interval deadline passed) and returns once none is and nothing is in
 * flight: 0 idle (or stopped), -ETIMEDOUT when timeout_ns passed first,
 * -EBUSY while another run runs. *summary (optional) says what ran, in
 * either case. Future interval deadlines do not keep it running. */
TAKT_API int takt_exec_run_until_idle(takt_exec *ex, uint64_t timeout_ns, struct takt_exec_summary *summary);
/* Stops taking triggers and lets work in flight finish: 0, or -ETIMEDOUT. */
TAKT_API int takt_exec_drain(takt_exec *ex, uint64_t timeout_ns);
/* Any thread, or a signal handler (an eventfd write). */
TAKT_API void takt_exec_stop(takt_exec *ex);

struct takt_exec_stats {
	uint64_t phases, dispatches, errors, stop_chains, deadline_misses, skipped_cycles;
	uint64_t longest_item_ns;
	uint64_t sched_fifo_refused; /* workers (and runs of the dispatch thread) that asked for
	                                SCHED_FIFO and kept their policy */
	uint64_t overruns;           /* item and task runs longer than their budgets */
};
/* Lock-free, no allocation, any thread. */
TAKT_API int takt_exec_stats(const takt_exec *ex, struct takt_exec_stats *out);
/* Dispatches of one task so far. */
TAKT_API int64_t takt_exec_task_dispatches(const takt_exec *ex, int task);
/* Interval deadlines of one task that passed without a run of it (it runs
 * once after a stall, for the latest); -EINVAL for an unknown task. */
TAKT_API int64_t takt_exec_task_skipped(const takt_exec *ex, int task);
/* Budget overruns of one task (its items' and its own); -EINVAL unknown. */
TAKT_API int64_t takt_exec_task_overruns(const takt_exec *ex, int task);
/* The first error (negative errno) an item returned in the task's last
 * finished run, 0 if none; -EINVAL for an unknown task. Not meant to be read
 * while run() runs on another thread. */
TAKT_API int takt_exec_task_last_error(const takt_exec *ex, int task);

#ifdef __cplusplus
}
#endif
#endif
