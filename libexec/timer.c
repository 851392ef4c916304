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

	/* A1: a task in flight is looked at again when its run is collected */
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		if (ex->tasks[i]->period_ns && !ex->tasks[i]->in_flight && ex->tasks[i]->next_ns < next)
			next = ex->tasks[i]->next_ns;
	return next;
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
		if (skipped) {
			/* relaxed: statistics */
			atomic_fetch_add_explicit(&t->skipped, skipped, memory_order_relaxed);
			atomic_fetch_add_explicit(&ex->st.skipped_cycles, skipped, memory_order_relaxed);
			if (ex->has_monitor && ex->monitor.skipped_cycles)
				ex->monitor.skipped_cycles(ex->monitor.user, skipped);
			if (ex->has_monitor && ex->monitor.task_skipped_cycles)
				ex->monitor.task_skipped_cycles(ex->monitor.user, t->id, skipped);
		}
		mark(ex, t);
	}
}
