/* run.c - running items: one item with its monitor calls, statistics,
 * budget and fault handling; a single item's or a chain's job; a job's end.
 * Used by the dispatch loop (dispatch.c) and graph runs (graph.c), and
 * calling neither.
 *
 * Pairings:
 *   D0 a job's end: its writes, then outstanding fetch_sub (release) ->
 *      the driver's acquire load of outstanding == 0 sees them (dispatch.c).
 *   D1 wake_word: bumped (seq_cst) after outstanding or a graph's ready ring
 *      changed; the driver reads it (seq_cst) before re-checking and sleeps
 *      on the value it read, so a bump in between makes the wait return.
 */
#include "executor.h"
#include "fault.h"
#include "probes.h"

#include <stddef.h>
#include <unistd.h>

static void stat_max(_Atomic uint64_t *m, uint64_t v)
{
	uint64_t cur = atomic_load_explicit(m, memory_order_relaxed);

	/* relaxed: a statistic, monotonic */
	while (v > cur && !atomic_compare_exchange_weak_explicit(m, &cur, v, memory_order_relaxed,
								 memory_order_relaxed))
		;
}

int exec_run_item(struct takt_exec *ex, struct task *t, const struct takt_item *it)
{
	uint64_t t0, took;
	int rc;

	if (ex->has_monitor && ex->monitor.pre_execute)
		ex->monitor.pre_execute(ex->monitor.user, t->id, it->name);
	TAKT_PROBE2(dispatch_begin, t->id, it->name);
	t0 = exec_now_ns();
	rc = it->execute(&t->ctx, it->user);
	took = exec_now_ns() - t0;
	TAKT_PROBE3(dispatch_end, t->id, it->name, rc);
	if (ex->has_monitor && ex->monitor.post_execute)
		ex->monitor.post_execute(ex->monitor.user, t->id, it->name, t0, took, rc);
	stat_max(&ex->st.longest_item_ns, took);
	if (it->budget_ns && took > it->budget_ns)
		exec_overrun(ex, t, it->name, took, it->budget_ns);
	if (rc < 0) {
		int none = 0;

		atomic_fetch_add_explicit(&ex->st.errors, 1, memory_order_relaxed);
		/* the first error of this run is kept (a graph's vertices race) */
		atomic_compare_exchange_strong_explicit(&t->run_err, &none, rc, memory_order_relaxed,
							memory_order_relaxed);
	} else if (rc > TAKT_CONTINUE) {
		rc = TAKT_STOP_CHAIN; /* any positive outcome stops, and counts as a stop */
		atomic_fetch_add_explicit(&ex->st.stop_chains, 1, memory_order_relaxed);
	}
	return rc;
}

void exec_overrun(struct takt_exec *ex, struct task *t, const char *item, uint64_t took_ns, uint64_t budget_ns)
{
	/* relaxed: statistics */
	atomic_fetch_add_explicit(&t->overruns, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&ex->st.overruns, 1, memory_order_relaxed);
	if (ex->has_monitor && ex->monitor.budget_overrun)
		ex->monitor.budget_overrun(ex->monitor.user, t->id, item, took_ns, budget_ns);
}

void exec_fault(struct takt_exec *ex, struct task *t)
{
	uint64_t want = t->run_no, seen = atomic_load_explicit(&t->fault_phase, memory_order_relaxed);

	if (!t->has_fault)
		return;
	/* At most once per run, even when several graph vertices fail on
	 * different workers: the CAS elects one. run_no was set before the run
	 * was submitted (the submit's release orders it). */
	while (seen != want) {
		if (atomic_compare_exchange_weak_explicit(&t->fault_phase, &seen, want, memory_order_relaxed,
							  memory_order_relaxed)) {
			exec_run_item(ex, t, &t->fault);
			return;
		}
	}
}

void exec_wake_driver(struct takt_exec *ex)
{
	atomic_fetch_add_explicit(&ex->wake_word, 1, memory_order_seq_cst); /* D1 */
	exec_futex_wake(&ex->wake_word, 1);
}

void exec_job_done(struct takt_exec *ex)
{
	/* D0: release our writes to the driver. */
	if (atomic_fetch_sub_explicit(&ex->outstanding, 1, memory_order_release) == 1 &&
	    ex->workers.n_workers)
		exec_wake_driver(ex);
}

/* The job of a single item or a chain: items in order, stop at the first
 * outcome that is not TAKT_CONTINUE. */
static void chain_job_run(struct job *job)
{
	struct task *t = container_of(job, struct task, job);
	struct takt_exec *ex = t->ctx.ex;
	uint64_t t0 = t->budget_ns ? exec_now_ns() : 0;

	for (size_t i = 0; i < t->n_items; i++) {
		int rc = exec_run_item(ex, t, &t->items[i]);

		if (rc == TAKT_CONTINUE)
			continue;
		if (rc < 0)
			exec_fault(ex, t);
		break;
	}
	if (t->budget_ns || t->let) {
		uint64_t end = exec_now_ns();

		if (t->budget_ns && end - t0 > t->budget_ns)
			exec_overrun(ex, t, NULL, end - t0, t->budget_ns);
		t->end_ns = end; /* LET: its release boundary (A0 hands it over) */
	}
	TAKT_FAULT("exec_run_ended");
	exec_task_done(ex, t);
}

void exec_task_done(struct takt_exec *ex, struct task *t)
{
	if (ex->workers.n_workers) {
		/* A0: seq_cst store, then seq_cst load of disp_sleeping, against
		 * the dispatch thread's store of disp_sleeping and its seq_cst
		 * scan of finished (store-buffer litmus): it sees our finish, or
		 * we see it asleep and write done_fd. The store also releases
		 * the run's writes to its acquire exchange. */
		atomic_store_explicit(&t->finished, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&ex->disp_sleeping, memory_order_seq_cst)) {
			uint64_t one = 1;

			if (write(ex->done_fd, &one, sizeof(one)) < 0) {
				/* the counter is far from overflow at one write per run */
			}
		}
	}
	exec_job_done(ex);
}

void exec_task_init_job(struct task *t)
{
	t->job.run = chain_job_run;
}
