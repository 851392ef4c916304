/* dispatch.c - the wake phase: collect ended runs, arm, wait, submit each
 * ready task once, repeat.
 *
 * One dispatch thread (the caller of run) waits in epoll on every trigger
 * fd, a stop eventfd, a signalfd and the done eventfd, until the earliest
 * interval deadline at most (epoll_pwait2's timeout, timer.c; with the
 * thread's timer slack at 1 ns while it runs intervals, so the wake is as
 * exact as the kernel's hrtimers). Each epoll_event carries the task index,
 * so a wake resolves in O(1); a task woken by several triggers in one
 * phase is submitted once (phase_seen), and its run drains them all.
 * Inline (no workers) every job has run when the submit returns. With
 * workers the dispatch thread does not wait for them (A1).
 *
 * Pairings:
 *   D0 a job's end: its writes, then outstanding fetch_sub (release) ->
 *      the driver's acquire load of outstanding == 0 sees them (the end of
 *      a run of the executor waits so for every job).
 *   D1 wake_word: bumped (seq_cst) after outstanding or a graph's pending
 *      count reached 0; the driver reads it (seq_cst) before re-checking
 *      and sleeps on the value it read, so a bump in between makes the wait
 *      return.
 *   A0 a run's end (run.c, exec_task_done): the worker stores the task's
 *      finished = 1 (seq_cst; it also releases the run's writes), then
 *      loads disp_sleeping (seq_cst): 1 -> it writes done_fd. The dispatch
 *      thread, before a wait with runs in flight, stores disp_sleeping = 1
 *      (seq_cst), then loads every in-flight task's finished (seq_cst): any
 *      1 -> it does not sleep. Store-buffer litmus: it sees the end, or the
 *      worker sees it asleep and wakes it. It takes a run back by
 *      exchanging finished to 0 (acquire: pairs with the worker's store),
 *      which hands it the run's writes, a LET run's end_ns among them.
 *   A1 in flight: from the submit to that exchange a task belongs to its
 *      run: the dispatch thread does not arm its subscribers, restart its
 *      deadline timers or submit it again; its fd triggers that fire are
 *      taken out of epoll until then (trig_disable), and its interval
 *      deadlines wait (timer.c).
 */
#include "executor.h"
#include "probes.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

static void mark_ready(struct takt_exec *ex, struct task *t)
{
	if (t->in_flight) {
		t->due = true; /* A1: runs again once its run is collected */
		return;
	}
	if (t->phase_seen == ex->phase + 1)
		return; /* already submitted this phase: its run drains every trigger */
	t->phase_seen = ex->phase + 1;
	ex->ready[ex->n_ready++] = t;
}

/* Waits until every job of the phase is done, driving graph runs. */
static void phase_wait(struct takt_exec *ex)
{
	for (;;) {
		uint32_t w = atomic_load_explicit(&ex->wake_word, memory_order_seq_cst); /* D1 */

		if (atomic_load_explicit(&ex->outstanding, memory_order_acquire) == 0) /* D0 */
			return;
		exec_futex_wait(&ex->wake_word, w, -1);
	}
}

/* After a task's run: its last error, its deadline timers restarted, a
 * LET task's release boundary. */
static void task_after_run(struct takt_exec *ex, struct task *t, uint64_t now)
{
	/* relaxed: the run's writes came with A0's exchange (or D0's acquire
	 * of outstanding, inline and for graphs) */
	t->last_err = atomic_load_explicit(&t->run_err, memory_order_relaxed);
	trig_after_run(t, now);
	if (t->let)
		let_ended(ex, t, now);
}

/* A1: takes back every run a worker finished (A0); if mark_due, a task
 * that became due meanwhile (or stayed due from an earlier run) is marked
 * ready for this phase. */
static void collect_finished(struct takt_exec *ex, bool mark_due)
{
	uint64_t now = ex->n_in_flight ? exec_now_ns() : 0;

	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		/* A0: acquire pairs with the worker's store: the run's writes */
		if (t->in_flight && atomic_exchange_explicit(&t->finished, 0, memory_order_acquire)) {
			t->in_flight = false;
			ex->n_in_flight--;
			ex->collected = true;
			task_after_run(ex, t, now);
			trig_enable_disabled(ex, t);
		}
		/* due stays set until the task is submitted: a stop in this
		 * wake discards the ready list, not the due run */
		if (mark_due && t->due && !t->in_flight)
			mark_ready(ex, t);
	}
}

/* A0: whether a worker finished a run we have not collected. */
static bool any_finished(const struct takt_exec *ex)
{
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		if (ex->tasks[i]->in_flight && atomic_load_explicit(&ex->tasks[i]->finished, memory_order_seq_cst))
			return true;
	return false;
}

static void phase_submit(struct takt_exec *ex, uint64_t now)
{
	bool async = ex->workers.n_workers > 0;
	uint32_t n_jobs = 0;

	for (uint32_t i = 0; i < ex->n_ready; i++)
		n_jobs += ex->ready[i]->kind != TASK_GRAPH;
	/* relaxed: the submits' release orders it before any job's end (D0) */
	atomic_fetch_add_explicit(&ex->outstanding, n_jobs, memory_order_relaxed);
	for (uint32_t i = 0; i < ex->n_ready; i++) {
		struct task *t = ex->ready[i];

		t->run_no++;
		t->ctx.now_ns = now;
		t->ctx.scheduled_ns = t->sched_ns;
		t->sched_ns = 0;
		t->ctx.deadline_missed = t->deadline_fired;
		t->deadline_fired = false; /* a miss while this run is in flight is the next run's */
		t->due = false;            /* submitted: what made it due is this run's */
		atomic_store_explicit(&t->run_err, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&t->dispatches, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&ex->st.dispatches, 1, memory_order_relaxed);
		if (t->let)
			let_begin(t);
		if (t->kind == TASK_GRAPH)
			continue;
		if (async) { /* A1 */
			t->in_flight = true;
			ex->n_in_flight++;
		}
		workers_submit(&ex->workers, &t->job);
	}
	/* Graphs are driven from this thread, each to completion, while the
	 * workers also run the phase's other jobs. */
	for (uint32_t i = 0; i < ex->n_ready; i++)
		if (ex->ready[i]->kind == TASK_GRAPH) {
			graph_run(ex, ex->ready[i]->graph);
			ex->ready[i]->end_ns = exec_now_ns();
		}
	if (async) {
		/* A1: the other runs go on while we wait for the next trigger;
		 * graphs ended here */
		now = exec_now_ns();
		for (uint32_t i = 0; i < ex->n_ready; i++)
			if (ex->ready[i]->kind == TASK_GRAPH)
				task_after_run(ex, ex->ready[i], now);
		return;
	}
	phase_wait(ex); /* inline: everything ran already */
	now = exec_now_ns(); /* deadlines restart when the run ends */
	for (uint32_t i = 0; i < ex->n_ready; i++)
		task_after_run(ex, ex->ready[i], now);
}

static void on_deadline(struct takt_exec *ex, struct task *t, struct trig *tr, uint64_t now)
{
	uint64_t n;

	if (read(tr->timer_fd, &n, sizeof(n)) != sizeof(n))
		return; /* re-armed meanwhile: not expired */
	/* A1: a run a sample started is in flight: its end restarts the wait
	 * (as inline, where the re-arm after the run discards this expiry), so
	 * a long run is no silence of the publisher */
	if (t->in_flight && t->sample_woke)
		return;
	t->deadline_fired = true;
	atomic_fetch_add_explicit(&ex->st.deadline_misses, 1, memory_order_relaxed);
	if (ex->has_monitor && ex->monitor.deadline_missed)
		ex->monitor.deadline_missed(ex->monitor.user, t->id,
					    now > tr->armed_at_ns + tr->deadline_ns ?
						    now - tr->armed_at_ns - tr->deadline_ns : 0);
	tr->armed_at_ns += tr->deadline_ns * n; /* the periodic timer moved on by n deadlines */
	mark_ready(ex, t);
}

/* Resolves one epoll event; returns false on stop. */
static bool phase_event(struct takt_exec *ex, uint64_t tag, uint64_t now)
{
	uint64_t v;

	if (tag == TAG_STOP) {
		if (read(ex->stop_fd, &v, sizeof(v)) < 0) {
			/* already drained by another wake */
		}
		return false;
	}
	if (tag == TAG_DONE) {
		if (read(ex->done_fd, &v, sizeof(v)) < 0) {
			/* already drained */
		}
		return true; /* collect_finished takes the runs */
	}
	if (tag == TAG_SIGNAL) {
		struct signalfd_siginfo si;

		return read(ex->signal_fd, &si, sizeof(si)) != sizeof(si);
	}
	uint32_t ti = tag_task(tag), slot = tag_slot(tag);

	if (ti >= ex->n_tasks || slot >= ex->tasks[ti]->n_trigs)
		return true;
	if (tag_deadline(tag)) {
		on_deadline(ex, ex->tasks[ti], &ex->tasks[ti]->trigs[slot], now);
	} else {
		enum trig_kind k = ex->tasks[ti]->trigs[slot].kind;

		/* A1: a level-triggered fd of a task in flight would wake us
		 * again and again: off until its run is collected, then epoll
		 * says again whether it is still readable (the run may have
		 * consumed what made it so) */
		if (ex->tasks[ti]->in_flight) {
			trig_disable(ex, ex->tasks[ti], slot);
			return true;
		}
		if (k == TRIG_SUB || k == TRIG_DEADLINE)
			ex->tasks[ti]->sample_woke = true;
		mark_ready(ex, ex->tasks[ti]);
	}
	return true;
}

/* Waits for events until wake_at (absolute; UINT64_MAX: no limit): one
 * syscall. Falls back to millisecond timeouts where epoll_pwait2 is missing. */
static int wait_events(struct takt_exec *ex, struct epoll_event *evs, int max, uint64_t wake_at)
{
	uint64_t now = exec_now_ns(), rel = wake_at > now ? wake_at - now : 0;
	struct timespec ts = {.tv_sec = (time_t)(rel / 1000000000), .tv_nsec = (long)(rel % 1000000000)};
	int n;

	if (!ex->no_pwait2) {
		n = epoll_pwait2(ex->epfd, evs, max, wake_at == UINT64_MAX ? NULL : &ts, NULL);
		if (n >= 0 || errno != ENOSYS)
			return n;
		ex->no_pwait2 = true;
	}
	return epoll_wait(ex->epfd, evs, max,
			  wake_at == UINT64_MAX ? -1 : rel >= (uint64_t)INT_MAX * 1000000 ? INT_MAX :
											     (int)((rel + 999999) / 1000000));
}

/* One wake phase, waiting until `until` at most (absolute; UINT64_MAX:
 * forever; idle: not at all while nothing is in flight). Returns 1 after a phase that ran tasks, 0 on a timeout with
 * nothing to do, -ECANCELED on stop. */
static int phase_once(struct takt_exec *ex, uint64_t until, bool idle)
{
	struct epoll_event evs[64];
	uint64_t now, wake_at;
	bool go = true;
	int n;

	ex->n_ready = 0;
	ex->collected = false;
	collect_finished(ex, true);
	if (idle && !ex->n_in_flight)
		until = 0; /* run_until_idle: look, never sleep, unless runs are in flight (their end may make tasks due) */
	wake_at = timer_next(ex); /* after the collection: collected tasks count again */
	if (until < wake_at)
		wake_at = until;
	if (trig_arm_all(ex, mark_ready) || ex->n_ready)
		wake_at = 0; /* samples already wait, or a collected task is due: no sleep */
	if (ex->n_in_flight) {
		/* A0: announce, then look (both seq_cst) */
		atomic_store_explicit(&ex->disp_sleeping, 1, memory_order_seq_cst);
		if (any_finished(ex))
			wake_at = 0;
	}
	TAKT_PROBE1(exec_park, ex->n_tasks);
	n = wait_events(ex, evs, 64, wake_at);
	TAKT_PROBE1(exec_wake, n);
	/* relaxed: a worker that still sees 1 writes done_fd once too often */
	atomic_store_explicit(&ex->disp_sleeping, 0, memory_order_relaxed);
	if (n < 0 && errno != EINTR)
		return -errno;
	collect_finished(ex, true);
	now = exec_now_ns();
	for (int i = 0; i < n; i++)
		go &= phase_event(ex, evs[i].data.u64, now);
	/* acquire: pairs with takt_exec_stop's release of stop_flag */
	go = go && !atomic_load_explicit(&ex->stop_flag, memory_order_acquire);
	/* LET outputs whose boundary came, also on a stop (their runs ended);
	 * before any run of this boundary starts */
	let_release(ex, now);
	/* Interval deadlines only in a phase that runs: on a stop they stay
	 * where they are (not run, not skipped). */
	if (go) {
		timer_fire(ex, now, mark_ready);
		ex->fired_ns = now; /* LET: a release due by now comes too late for these runs */
	}
	if (!go || ex->n_ready == 0) {
		/* Tasks marked in this wake but not run stay due: their triggers
		 * are level-triggered or re-armed, so the next phase finds them;
		 * a new phase number keeps the marks from hiding them. */
		ex->phase++;
		return go ? 0 : -ECANCELED;
	}
	phase_submit(ex, now);
	ex->phase++;
	atomic_fetch_add_explicit(&ex->st.phases, 1, memory_order_relaxed);
	return 1;
}

/* What run() changes on the calling thread, restored when it returns. */
struct run_saved {
	sigset_t sigs;
	int slack;              /* PR_GET_TIMERSLACK, or -1: unchanged */
	int policy;             /* -1: unchanged */
	struct sched_param param;
	cpu_set_t cpus;
	bool pinned;
};

/* Blocks SIGINT/SIGTERM on the dispatch thread so its signalfd receives
 * them; with intervals, timer slack 1 ns (the default 50 us would make
 * every interval wake up to 50 us late); the dispatch thread's own
 * SCHED_FIFO and CPU when asked for (refusals are counted, not fatal). */
static void run_enter(struct takt_exec *ex, struct run_saved *sv)
{
	sigset_t set;

	sigemptyset(&set);
	if (ex->signal_fd >= 0) {
		sigaddset(&set, SIGINT);
		sigaddset(&set, SIGTERM);
	}
	pthread_sigmask(SIG_BLOCK, &set, &sv->sigs);
	sv->slack = -1;
	if (timer_next(ex) != UINT64_MAX) {
		sv->slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
		if (sv->slack < 0 || prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) < 0)
			sv->slack = -1;
	}
	sv->policy = -1;
	if (ex->opts.dispatch_sched_fifo_priority) {
		struct sched_param sp = {.sched_priority = ex->opts.dispatch_sched_fifo_priority};

		if (pthread_getschedparam(pthread_self(), &sv->policy, &sv->param) != 0)
			sv->policy = -1;
		else if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) {
			sv->policy = -1;
			atomic_fetch_add_explicit(&ex->st.dispatch_fifo_refused, 1, memory_order_relaxed);
		}
	}
	sv->pinned = false;
	if (ex->opts.pin_dispatch && pthread_getaffinity_np(pthread_self(), sizeof(sv->cpus), &sv->cpus) == 0) {
		cpu_set_t one;

		CPU_ZERO(&one);
		CPU_SET(ex->opts.dispatch_cpu, &one);
		sv->pinned = pthread_setaffinity_np(pthread_self(), sizeof(one), &one) == 0;
	}
}

static int run_leave(struct takt_exec *ex, const struct run_saved *sv, int r)
{
	if (sv->pinned)
		pthread_setaffinity_np(pthread_self(), sizeof(sv->cpus), &sv->cpus);
	if (sv->policy >= 0)
		pthread_setschedparam(pthread_self(), sv->policy, &sv->param);
	if (sv->slack >= 0)
		prctl(PR_SET_TIMERSLACK, (unsigned long)sv->slack, 0, 0, 0);
	pthread_sigmask(SIG_SETMASK, &sv->sigs, NULL);
	atomic_store_explicit(&ex->stop_flag, 0, memory_order_relaxed);
	/* release: the run's work happens before drain()'s acquire load sees 0 */
	atomic_store_explicit(&ex->running, 0, memory_order_release);
	exec_futex_wake((_Atomic uint32_t *)&ex->running, INT_MAX); /* drain() waits on it */
	return r == -ECANCELED ? 0 : r;
}

/* Counts at the start of a run_until_idle (after it claimed the executor). */
static void summary_begin(struct takt_exec *ex, struct takt_exec_stats *base)
{
	takt_exec_stats(ex, base);
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		/* relaxed: ours alone while we run */
		ex->tasks[i]->idle_base = atomic_load_explicit(&ex->tasks[i]->dispatches, memory_order_relaxed);
}

static void summary_end(struct takt_exec *ex, const struct takt_exec_stats *a, struct takt_exec_summary *sum)
{
	struct takt_exec_stats b;

	takt_exec_stats(ex, &b);
	/* relaxed: this thread counts dispatches, and the run is still ours */
	for (size_t i = 0; sum->task_dispatches && i < sum->n_task_dispatches; i++)
		sum->task_dispatches[i] =
			i < ex->n_tasks ? atomic_load_explicit(&ex->tasks[i]->dispatches, memory_order_relaxed) -
						  ex->tasks[i]->idle_base :
					  0;
	sum->phases = b.phases - a->phases;
	sum->dispatches = b.dispatches - a->dispatches;
	sum->errors = b.errors - a->errors;
	sum->deadline_misses = b.deadline_misses - a->deadline_misses;
	sum->skipped_cycles = b.skipped_cycles - a->skipped_cycles;
	sum->overruns = b.overruns - a->overruns;
}

/* Runs phases until `phases` ran or `deadline` passed (UINT64_MAX: never),
 * or, if `idle` (run_until_idle), until a wake-up finds nothing ready (0;
 * -ETIMEDOUT when the deadline passed first, checked after each phase, so
 * what is ready now always runs), filling idle->sum if it has one. */
struct idle_run {
	struct takt_exec_summary *sum;
};

static int run_loop(struct takt_exec *ex, uint64_t phases, uint64_t deadline, struct idle_run *idle)
{
	struct takt_exec_stats base;
	struct run_saved sv;
	int r = 0, not_running = 0;

	/* one run at a time: the CAS both checks and claims */
	if (!atomic_compare_exchange_strong_explicit(&ex->running, &not_running, 1, memory_order_acq_rel,
						     memory_order_relaxed))
		return -EBUSY;
	if (idle && idle->sum)
		summary_begin(ex, &base);
	/* run_until_idle looks at what is due since the last call: deadline
	 * timers stay armed (once armed), and interval deadlines that passed
	 * run (once each, the rest counted skipped). Other runs start afresh:
	 * what passed while nobody ran is not a stall of theirs. */
	if (!idle || !ex->deadlines_armed)
		trig_start_deadlines(ex, exec_now_ns());
	ex->deadlines_armed = true;
	timer_start(ex, exec_now_ns(), !idle);
	run_enter(ex, &sv);
	for (uint64_t done = 0; done < phases;) {
		if (!idle && deadline != UINT64_MAX && exec_now_ns() >= deadline)
			break;
		/* acquire: pairs with drain()'s release of draining */
		if (atomic_load_explicit(&ex->draining, memory_order_acquire)) {
			r = -ECANCELED;
			break;
		}
		r = phase_once(ex, deadline, idle != NULL);
		if (r < 0)
			break;
		/* nothing was ready, nothing is in flight, and no run ended in
		 * this look (its triggers, back on, are looked at next time) */
		if (idle && r == 0 && !ex->n_in_flight && !ex->collected)
			break;
		done += (uint64_t)r;
		r = 0;
		if (idle && deadline != UINT64_MAX && exec_now_ns() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
	}
	/* A1: the run ends with nothing in flight (drain, destroy and the next
	 * run rely on it) */
	phase_wait(ex);
	collect_finished(ex, false); /* what is due stays due for the next run */
	let_release(ex, exec_now_ns()); /* boundaries still ahead: the next run's */
	if (idle && idle->sum) /* before run_leave lets another run start */
		summary_end(ex, &base, idle->sum);
	return run_leave(ex, &sv, r);
}

int takt_exec_run(takt_exec *ex)
{
	return ex ? run_loop(ex, UINT64_MAX, UINT64_MAX, NULL) : -EINVAL;
}

int takt_exec_run_n(takt_exec *ex, uint64_t n)
{
	return ex ? run_loop(ex, n, UINT64_MAX, NULL) : -EINVAL;
}

int takt_exec_run_for(takt_exec *ex, uint64_t ns)
{
	uint64_t now = exec_now_ns();

	return ex ? run_loop(ex, UINT64_MAX, ns > UINT64_MAX - now ? UINT64_MAX : now + ns, NULL) : -EINVAL;
}

int takt_exec_run_until_idle(takt_exec *ex, uint64_t timeout_ns, struct takt_exec_summary *sum)
{
	struct idle_run idle = {.sum = sum};
	uint64_t now = exec_now_ns();

	if (!ex || (sum && sum->n_task_dispatches && !sum->task_dispatches))
		return -EINVAL;
	return run_loop(ex, UINT64_MAX, timeout_ns > UINT64_MAX - now ? UINT64_MAX : now + timeout_ns, &idle);
}

void takt_exec_stop(takt_exec *ex)
{
	uint64_t one = 1;

	if (!ex)
		return;
	/* async-signal-safe: an atomic store and a write(2) */
	atomic_store_explicit(&ex->stop_flag, 1, memory_order_release);
	if (write(ex->stop_fd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow at one write per stop */
	}
}

int takt_exec_drain(takt_exec *ex, uint64_t timeout_ns)
{
	uint64_t deadline;

	if (!ex)
		return -EINVAL;
	deadline = exec_now_ns();
	deadline = timeout_ns > UINT64_MAX - deadline ? UINT64_MAX : deadline + timeout_ns;
	/* The loop finishes the phase in flight (its jobs run to the end) and
	 * takes no new trigger after it. */
	atomic_store_explicit(&ex->draining, 1, memory_order_release);
	takt_exec_stop(ex);
	for (;;) {
		uint64_t now = exec_now_ns();

		/* acquire: pairs with run_leave's release: the run's work is done */
		if (!atomic_load_explicit(&ex->running, memory_order_acquire))
			break;
		if (now >= deadline) {
			atomic_store_explicit(&ex->draining, 0, memory_order_release);
			return -ETIMEDOUT;
		}
		exec_futex_wait((_Atomic uint32_t *)&ex->running, 1, (int64_t)(deadline - now));
	}
	/* Leave no stop behind for the next run: drain() asked for this one. */
	uint64_t v;
	if (read(ex->stop_fd, &v, sizeof(v)) < 0) {
		/* nothing pending: run consumed our stop */
	}
	atomic_store_explicit(&ex->stop_flag, 0, memory_order_relaxed);
	atomic_store_explicit(&ex->draining, 0, memory_order_release);
	return 0;
}
