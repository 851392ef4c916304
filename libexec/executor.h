/* executor.h - libtakt-exec internals: tasks, jobs, the workers, graphs, intervals.
 *
 * The executor is built once: takt_exec_add* allocate everything a task
 * will ever need (its job, its context, a graph's runtime state) and size
 * the workers' queue. A run then moves pointers around: a wake phase collects
 * ready tasks and submits each task's pre-built job at most once. With
 * workers it does not wait for them (A1, dispatch.c): a task's run is in
 * flight until the dispatch thread collects it, so a task never runs
 * concurrently with itself, and the dispatch thread touches a task's
 * triggers (arms a subscriber, resets a deadline timer) only while it is
 * not in flight. Inline, every job has run when the submit returns.
 */
#ifndef TAKT_EXECUTOR_H
#define TAKT_EXECUTOR_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <takt/exec.h>

#include "sys.h"

struct takt_exec;
struct task;

/* A unit of work a worker runs, built once and submitted by pointer. */
struct job {
	void (*run)(struct job *job);
};

/* ---- workers.c: worker threads and their queue -------------------------- */

struct workers {
	unsigned n_workers;
	pthread_t *threads;
	struct job **slots;          /* queue of job pointers, Vyukov MPMC cells */
	_Atomic uint64_t *seqs;
	uint32_t mask;
	_Atomic uint64_t enq, deq;
	_Atomic uint32_t avail;      /* queued jobs not yet claimed (futex word) */
	_Atomic uint32_t sleepers;
	_Atomic int quit;
	_Atomic unsigned fifo_refused;
	_Atomic unsigned next_index;
	_Atomic uint32_t started;    /* workers done with their set-up (futex word) */
	struct takt_exec *ex;
	/* worker attributes, copied at start (the caller's options need not
	 * outlive takt_exec_create) and only read by the workers after */
	char name_prefix[12];
	cpu_set_t cpus;
	bool pin;
	int fifo_priority;
};

int workers_start(struct workers *p, struct takt_exec *ex, const struct takt_exec_opts *o);
void workers_stop(struct workers *p);
/* Sizes the queue for at least n jobs in flight; only while not running. */
int workers_reserve(struct workers *p, uint32_t n);
/* Runs the job on a worker, or inline when there are no workers. */
void workers_submit(struct workers *p, struct job *job);

/* ---- triggers ----------------------------------------------------------- */

enum trig_kind { TRIG_SUB, TRIG_DEADLINE, TRIG_EVENT, TRIG_FD };

struct trig {
	enum trig_kind kind;
	int fd;          /* our dup of the trigger's fd, registered in epoll */
	int timer_fd;    /* TRIG_DEADLINE: fires when no sample came for deadline_ns */
	/* TRIG_SUB, TRIG_DEADLINE: arms obj (a subscriber, a server, a
	 * client) before each sleep; 1: samples wait already */
	int (*arm)(void *obj);
	void *obj;
	uint64_t deadline_ns;
	uint64_t armed_at_ns; /* deadline timer start */
};

/* A task's LET ports (takt_let_input/output). */
struct let_ports {
	unsigned n_in, n_out;
	takt_sub *in[TAKT_EXEC_MAX_LET];
	takt_pub *out[TAKT_EXEC_MAX_LET];
};

struct takt_triggers {
	struct takt_exec *ex;
	uint64_t period_ns;
	unsigned n;
	int err;
	struct trig t[TAKT_EXEC_MAX_TRIGGERS];
	struct let_ports let;
};

/* ---- tasks -------------------------------------------------------------- */

enum task_kind { TASK_SINGLE, TASK_CHAIN, TASK_GRAPH };

struct takt_ctx {
	struct takt_exec *ex;
	int task;
	uint64_t now_ns;
	uint64_t scheduled_ns;   /* the interval deadline this run is for, or 0 */
	int deadline_missed;
};

struct task {
	int id;
	enum task_kind kind;
	struct takt_item *items; /* single: 1, chain: n */
	size_t n_items;
	struct takt_graph *graph;
	struct takt_item fault;
	bool has_fault;
	_Atomic uint64_t fault_phase; /* run_no of the last fault-handler run */
	uint64_t period_ns;
	uint64_t next_ns;        /* interval: the next deadline on its grid (timer.c) */
	uint64_t sched_ns;       /* interval: the deadline this phase runs it for, or 0 */
	_Atomic uint64_t skipped; /* interval: deadlines that passed without a run */
	uint64_t budget_ns;      /* a whole run's budget, 0: none */
	_Atomic uint64_t overruns; /* its items' and its own */
	uint64_t idle_base;      /* run_until_idle: dispatches when the call began */
	/* LET (timer.c): a task with LET ports */
	bool let;
	struct let_ports let_ports;
	uint64_t end_ns;         /* when its last run ended (by the thread that ran it; A0 orders it) */
	uint64_t release_ns;     /* its held outputs go out at this boundary; 0: none waits */
	struct trig trigs[TAKT_EXEC_MAX_TRIGGERS];
	unsigned n_trigs;
	struct job job;          /* submitted by pointer, built at add time */
	struct takt_ctx ctx;
	uint64_t phase_seen;     /* dedupe: phase + 1 it was marked ready in */
	uint64_t run_no;         /* its runs so far (set before a submit; the fault handler's once-per-run) */
	/* A1, with workers: a task's run is in flight until the dispatch
	 * thread collects it; meanwhile nothing of the dispatch thread touches
	 * its triggers, and a trigger that fires makes it due again. */
	bool in_flight, due;
	uint32_t disabled;       /* triggers whose fd fired while in flight: off in epoll until collected */
	_Atomic uint32_t finished; /* A0: the worker's end of a run (release), taken by the dispatch thread */
	bool deadline_fired;
	bool sample_woke;        /* a subscriber trigger fired in this phase */
	_Atomic int run_err;     /* first error of the run in progress */
	int last_err;            /* first error of the last finished run */
	_Atomic uint64_t dispatches;
};

/* ---- graphs (graph.c) ---------------------------------------------------- */

struct vjob {
	struct job job;
	struct takt_graph *g;
	uint32_t v;
};

struct takt_graph {
	struct takt_item *items;
	uint32_t n, cap;
	uint32_t *edge_from, *edge_to;
	uint32_t n_edges, edge_cap;
	bool finished;
	/* built by graph_finish, immutable after */
	uint32_t *succ_off, *succ, *in_degree;
	struct vjob *vjobs;
	struct task *task;
	/* runtime, reset (never reallocated) at the start of each run */
	_Atomic uint32_t *counters;
	_Atomic uint8_t *cancelled;
	_Atomic uint32_t pending;
	_Atomic uint32_t *ready;     /* MPSC ready ring of vertex indices */
	uint32_t ready_mask;
	_Atomic uint64_t ready_tail; /* producers: workers finishing a vertex */
	uint64_t ready_head;         /* consumer: the driver */
};

int graph_finish(struct takt_graph *g, struct task *t);
void graph_free(struct takt_graph *g);
/* Runs one graph run to completion; the caller is the driver thread. */
void graph_run(struct takt_exec *ex, struct takt_graph *g);

/* ---- the executor ------------------------------------------------------- */

struct exec_stats {
	_Atomic uint64_t phases, dispatches, errors, stop_chains, deadline_misses, skipped_cycles;
	_Atomic uint64_t longest_item_ns;
	_Atomic uint64_t dispatch_fifo_refused; /* runs whose dispatch thread kept its policy */
	_Atomic uint64_t overruns;
};

struct takt_exec {
	struct takt_exec_opts opts;
	struct takt_monitor monitor;
	bool has_monitor;
	struct task **tasks;
	uint32_t n_tasks, cap_tasks;
	struct task **ready;     /* per-phase ready list, n_tasks entries */
	uint32_t n_ready;
	int epfd, stop_fd, signal_fd;
	uint64_t anchor_ns;      /* intervals: every task's deadlines are anchor + k x period */
	uint64_t fired_ns;       /* LET: the time of the last timer_fire (its boundaries' runs began) */
	bool timed_dirty;        /* an interval task was added: a new anchor at the next run */
	bool no_pwait2;          /* the kernel lacks epoll_pwait2: millisecond timeouts */
	bool deadlines_armed;    /* deadline timers were armed by an earlier run */
	int done_fd;             /* A0: written by a worker that ends a run while the dispatch thread sleeps */
	_Atomic uint32_t disp_sleeping; /* A0: 1 while the dispatch thread is about to wait or waits */
	uint32_t n_in_flight;    /* runs submitted and not collected (dispatch thread only) */
	bool collected;          /* a run was collected in the current wake phase */
	struct workers workers;
	_Atomic uint32_t outstanding; /* jobs of this phase not finished (futex word) */
	_Atomic uint32_t wake_word;   /* bumped when a job finishes or a vertex is ready */
	_Atomic int stop_flag;
	_Atomic int running;
	_Atomic int draining;
	uint64_t phase;
	void **owned;            /* takt_item_when wrappers added to this executor */
	uint32_t n_owned;
	struct exec_stats st;
};

/* run.c */
/* Builds a single item's or a chain's job (once, at add time). */
void exec_task_init_job(struct task *t);
void exec_job_done(struct takt_exec *ex);
/* A single item's or a chain's run ended: A0 with workers, then exec_job_done. */
void exec_task_done(struct takt_exec *ex, struct task *t);
void exec_wake_driver(struct takt_exec *ex);
/* Runs one item with monitor and statistics; returns its outcome. */
int exec_run_item(struct takt_exec *ex, struct task *t, const struct takt_item *it);
/* A run of the task (item NULL) or of one of its items took took_ns against
 * budget_ns: counted, and told to the monitor. */
void exec_overrun(struct takt_exec *ex, struct task *t, const char *item, uint64_t took_ns, uint64_t budget_ns);
/* A task failed: its fault handler, at most once per phase. */
void exec_fault(struct takt_exec *ex, struct task *t);

/* timer.c: interval deadlines */
/* At the start of a run: a new anchor after adds; else, if skip_passed,
 * each task resumes at its first deadline ahead (run_until_idle keeps the
 * passed ones due). */
void timer_start(struct takt_exec *ex, uint64_t now, bool skip_passed);
/* The earliest interval deadline, UINT64_MAX without intervals. */
uint64_t timer_next(const struct takt_exec *ex);
/* Marks every interval task whose deadline passed, once, counting skips. */
void timer_fire(struct takt_exec *ex, uint64_t now, void (*mark)(struct takt_exec *, struct task *));
/* LET: before a run is submitted, its inputs' cutoff; after it ended, its
 * release boundary (and an overrun's next deadline); at a boundary, the
 * release of held outputs (every one due by now). */
void let_begin(struct task *t);
void let_ended(struct takt_exec *ex, struct task *t, uint64_t now);
void let_release(struct takt_exec *ex, uint64_t now);
/* takt_exec_destroy: outputs due released, the rest published now, hold
 * and cutoffs off: the ports are ordinary again. */
void let_give_back(struct takt_exec *ex);

/* trigger.c */
int trig_register(struct takt_exec *ex, struct task *t);
void trig_release(struct takt_exec *ex, struct task *t);
/* Checks a task's declarations against the executor's other tasks. */
int trig_validate(struct takt_exec *ex, const struct task *t);
/* Before sleeping: arm subscribers; true when one has samples waiting. */
bool trig_arm_all(struct takt_exec *ex, void (*mark)(struct takt_exec *, struct task *));
/* A1: turns trigger slot off (or every disabled one back on) in epoll. */
void trig_disable(struct takt_exec *ex, struct task *t, unsigned slot);
void trig_enable_disabled(struct takt_exec *ex, struct task *t);
void trig_after_run(struct task *t, uint64_t now_ns);
/* At run start: every deadline counts from now. */
void trig_start_deadlines(struct takt_exec *ex, uint64_t now_ns);

/* The clock and futexes (sys.h); the executor's words are process-private. */
static inline uint64_t exec_now_ns(void)
{
	return sys_mono_ns();
}

static inline void exec_futex_wait(_Atomic uint32_t *w, uint32_t val, int64_t timeout_ns)
{
	sys_futex_wait(w, val, timeout_ns, 0);
}

static inline void exec_futex_wake(_Atomic uint32_t *w, int n)
{
	sys_futex_wake(w, n, 0);
}

/* epoll data tags: task index << 8 | trigger slot (| TAG_DEADLINE_BIT on a
 * deadline's timerfd), or one of the reserved values. Encoded and decoded
 * here only. */
#define TAG_STOP UINT64_MAX
#define TAG_SIGNAL (UINT64_MAX - 1)
#define TAG_DONE (UINT64_MAX - 2)
#define TAG_DEADLINE_BIT 0x80u
_Static_assert(TAKT_EXEC_MAX_TRIGGERS <= 0x80, "a trigger slot fits below the deadline bit");

static inline uint64_t tag_make(uint32_t task, unsigned slot, bool deadline)
{
	return (uint64_t)task << 8 | (deadline ? TAG_DEADLINE_BIT : 0u) | slot;
}

static inline uint32_t tag_task(uint64_t tag)
{
	return (uint32_t)(tag >> 8);
}

static inline unsigned tag_slot(uint64_t tag)
{
	return (unsigned)tag & 0x7fu;
}

static inline bool tag_deadline(uint64_t tag)
{
	return (tag & TAG_DEADLINE_BIT) != 0;
}

#endif
