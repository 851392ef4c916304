/* timer.c - interval tasks: one absolute deadline per task.
 *
 * Every interval task keeps the absolute time of its next run on its own
 * grid, anchor + k x period, with one anchor for the executor (set when
 * tasks were added since the last run, at that run's start), so tasks with
 * related periods stay aligned (10 ms and 30 ms share every third deadline)
 * and unrelated periods (1 ms beside 1.05 ms) need no common tick. The
 * dispatch thread sleeps until the earliest deadline (timer_next) in the
 * same epoll_pwait2 that waits for its other triggers: one syscall per tick
 * when nothing else is ready, and no timer fd to read.
 *
 * A task found late (its deadline, and maybe later ones, passed while the
 * dispatch thread was busy or descheduled) runs once, for the latest
 * deadline that passed; the deadlines in between are its skipped cycles,
 * counted for that task and told to the monitor. Nothing runs early, and
 * nothing runs twice to catch up. The scan is over the executor's tasks:
 * no queue to allocate or maintain (executors have tens of tasks).
 */
#include "executor.h"

void timer_start(struct takt_exec *ex, uint64_t now, bool skip_passed)
{
	if (ex->timed_dirty) {
		/* new tasks: one fresh anchor for all, the first runs a period
		 * from now */
		ex->anchor_ns = now;
		for (uint32_t i = 0; i < ex->n_tasks; i++)
			ex->tasks[i]->next_ns = now + ex->tasks[i]->period_ns;
		ex->timed_dirty = false;
		return;
	}
	if (!skip_passed)
		return;
	/* Deadlines that passed while nobody ran are not a stall of ours:
	 * each task resumes at its first deadline still ahead, on its grid. */
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		if (t->period_ns && t->next_ns <= now)
			t->next_ns = ex->anchor_ns + ((now - ex->anchor_ns) / t->period_ns + 1) * t->period_ns;
	}
}

uint64_t timer_next(const struct takt_exec *ex)
{
	uint64_t next = UINT64_MAX;

	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		const struct task *t = ex->tasks[i];

		/* A1: a task in flight is looked at again when its run is collected */
		if (t->period_ns && !t->in_flight && t->next_ns < next)
			next = t->next_ns;
		if (t->release_ns && t->release_ns < next)
			next = t->release_ns; /* LET: held outputs wait for it */
	}
	return next;
}

/* n of the task's deadlines passed without a run of it. */
static void timer_skipped(struct takt_exec *ex, struct task *t, uint64_t n)
{
	/* relaxed: statistics */
	atomic_fetch_add_explicit(&t->skipped, n, memory_order_relaxed);
	atomic_fetch_add_explicit(&ex->st.skipped_cycles, n, memory_order_relaxed);
	if (ex->has_monitor && ex->monitor.skipped_cycles)
		ex->monitor.skipped_cycles(ex->monitor.user, n);
	if (ex->has_monitor && ex->monitor.task_skipped_cycles)
		ex->monitor.task_skipped_cycles(ex->monitor.user, t->id, n);
}

void timer_fire(struct takt_exec *ex, uint64_t now, void (*mark)(struct takt_exec *, struct task *))
{
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];
		uint64_t k, due, skipped;

		/* A1: deadlines that pass while its run is in flight wait for the
		 * run to end: then it runs once, the others count as skipped */
		if (!t->period_ns || t->in_flight || t->next_ns > now)
			continue;
		/* the latest deadline that passed: anchor + k x period <= now */
		k = (now - ex->anchor_ns) / t->period_ns;
		due = ex->anchor_ns + k * t->period_ns;
		skipped = (due - t->next_ns) / t->period_ns;
		t->sched_ns = due;
		t->next_ns = due + t->period_ns;
		if (skipped)
			timer_skipped(ex, t, skipped);
		mark(ex, t);
	}
}

/* ---- logical execution time ---------------------------------------------
 *
 * A LET task's run for deadline d reads its inputs as they stood at d (a
 * cutoff on each input subscriber, set on the dispatch thread before the
 * submit, whose release hands it to the worker) and its outputs are held
 * by their publishers until d + period. The dispatch thread releases them:
 * timer_next counts the boundary, and phase_once calls let_release before
 * timer_fire, so a run that starts at the boundary (of this task or
 * another on this executor) sees what was released at it. Releases are
 * stamped with the boundary, so a downstream LET input with the same grid
 * takes them at that boundary. A release that becomes due only after
 * timer_fire started the runs of its boundary (fired_ns: the run's end
 * reached the dispatch thread late) goes to the next boundary, so no run
 * sees an input appear while it runs. Nothing here allocates. */

void let_begin(struct task *t)
{
	for (unsigned i = 0; i < t->let_ports.n_in; i++)
		takt_sub_set_cutoff(t->let_ports.in[i], t->ctx.scheduled_ns); /* (only intervals run a LET task) */
}

void let_ended(struct takt_exec *ex, struct task *t, uint64_t now)
{
	uint64_t d = t->ctx.scheduled_ns, p = t->period_ns, end = t->end_ns, b = d + p;

	if (end > b)
		b = d + (end - d + p - 1) / p * p; /* overran: the first boundary at or after its end */
	if (b <= ex->fired_ns) {
		/* its end reached us after the runs of that boundary began
		 * (the worker was held up before it handed the run back): they
		 * must not see it appear, so the next boundary */
		b = d + ((ex->fired_ns - d) / p + 1) * p;
		if (now > end)
			end = now;
	}
	if (b > d + p) {
		/* late: counted, and its next run starts at the release; the
		 * deadlines in between are skipped */
		exec_overrun(ex, t, NULL, end - d, p);
		if (t->next_ns < b) {
			timer_skipped(ex, t, (b - t->next_ns) / p);
			t->next_ns = b;
		}
	}
	t->release_ns = b;
}

void let_give_back(struct takt_exec *ex)
{
	let_release(ex, exec_now_ns());
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		for (unsigned k = 0; k < t->let_ports.n_out; k++)
			takt_pub_hold(t->let_ports.out[k], 0); /* a boundary still ahead: out now */
		for (unsigned k = 0; k < t->let_ports.n_in; k++)
			takt_sub_set_cutoff(t->let_ports.in[k], 0);
		t->release_ns = 0;
	}
}

void let_release(struct takt_exec *ex, uint64_t now)
{
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		if (!t->release_ns || t->release_ns > now)
			continue;
		for (unsigned k = 0; k < t->let_ports.n_out; k++)
			takt_pub_flush(t->let_ports.out[k], t->release_ns);
		t->release_ns = 0;
	}
}
