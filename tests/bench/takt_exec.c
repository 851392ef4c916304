/* takt_exec.c - the executor's figures: dispatch overhead and timer lateness.
 *
 * Dispatch: the same item functions (a few multiply-adds each) run as
 *   direct    called one after the other in a loop, through their pointers
 *   epoll     the same calls after an epoll_wait on an always-readable
 *             eventfd: the kernel's share of a trigger-driven loop
 *   handoff   the same epoll_wait, then the calls on another thread: a
 *             futex wake there and one back when it is done, the kernel's
 *             share of running a chain on a worker
 *   executor  a chain of 3 (inline or on 2 workers) or a diamond graph
 *             (a -> b, a -> c, b -> d, c -> d; 2 workers), triggered by the
 *             same always-readable eventfd (level-triggered, never read),
 *             so every wake phase dispatches it again at once
 * The first item stamps the clock: a sample is the time from one dispatch
 * to the next, the whole cycle.
 *
 * Interval: a 1 kHz interval task stamps the clock; its lateness is the
 * time since the earliest tick not served yet (bench_lateness), exactly as
 * for the raw timerfd, counted from the deadline its first run was for
 * (takt_ctx_scheduled_ns), so the grid is where the executor put it. The
 * SCHED_FIFO figure runs the dispatch thread itself at that priority
 * (dispatch_sched_fifo_priority).
 */
#include "bench.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <takt/exec.h>

#define ITEM_PERIOD_NS 1000000ull /* the interval task: 1 kHz */

struct exec_run {
	struct side *s;
	uint64_t i, t0, start, next_due;
	_Atomic uint64_t acc; /* items of a diamond run concurrently */
};

/* A small, fixed amount of work: a few dependent multiply-adds. */
static int item_work(takt_ctx *ctx, void *user)
{
	struct exec_run *e = user;
	uint64_t x = atomic_load_explicit(&e->acc, memory_order_relaxed);

	(void)ctx;
	for (int k = 0; k < 8; k++)
		x = x * 6364136223846793005ull + 1442695040888963407ull;
	atomic_fetch_add_explicit(&e->acc, x, memory_order_relaxed);
	return TAKT_CONTINUE;
}

/* The first item: stamps the cycle, then works. Stops the executor when
 * every sample is in. */
static int item_first(takt_ctx *ctx, void *user)
{
	struct exec_run *e = user;

	bench_stamp(e->s, ++e->i, &e->t0, bench_now_ns());
	return item_work(ctx, user);
}

static int declare_fd(takt_triggers *t, void *user)
{
	struct exec_run *e = user;

	return takt_trigger_fd(t, e->s->fd[0]);
}

static int direct_loop(struct side *s, struct exec_run *e, const struct takt_item *items, size_t n, bool epoll)
{
	struct epoll_event ev = { .events = EPOLLIN };
	int ep = -1;

	if (epoll) {
		ep = epoll_create1(EPOLL_CLOEXEC);
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s->fd[0], &ev) < 0) {
			if (ep >= 0)
				close(ep);
			return bench_fail(s, -errno, "epoll");
		}
	}
	e->t0 = bench_now_ns();
	while (e->i < s->warmup + s->n) {
		if (epoll && epoll_wait(ep, &ev, 1, -1) != 1) {
			close(ep);
			return bench_fail(s, -errno, "epoll_wait");
		}
		for (size_t k = 0; k < n; k++)
			items[k].execute(NULL, items[k].user);
	}
	if (ep >= 0)
		close(ep);
	return 0;
}

/* ---- handoff: the kernel's share of running a chain on a worker --------- */

struct handoff {
	_Atomic uint32_t req;  /* bumped by the caller: run the chain once */
	_Atomic uint32_t done; /* set to req by the worker when it ran */
	_Atomic uint32_t quit;
	const struct takt_item *items;
	size_t n;
};

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
	syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static void *handoff_worker(void *arg)
{
	struct handoff *h = arg;
	uint32_t seen = 0;

	for (;;) {
		uint32_t r;

		/* H1: acquire pairs with the caller's release H0. */
		while ((r = atomic_load_explicit(&h->req, memory_order_acquire)) == seen) {
			if (atomic_load_explicit(&h->quit, memory_order_acquire))
				return NULL;
			futex_wait(&h->req, seen);
		}
		for (size_t k = 0; k < h->n; k++)
			h->items[k].execute(NULL, h->items[k].user);
		seen = r;
		/* H2: release pairs with the caller's acquire H3. */
		atomic_store_explicit(&h->done, r, memory_order_release);
		futex_wake(&h->done);
	}
}

static int handoff_loop(struct side *s, struct exec_run *e, const struct takt_item *items, size_t n)
{
	struct handoff h = { .items = items, .n = n };
	struct epoll_event ev = { .events = EPOLLIN };
	pthread_t th;
	int ep = epoll_create1(EPOLL_CLOEXEC), r = 0;

	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s->fd[0], &ev) < 0) {
		if (ep >= 0)
			close(ep);
		return bench_fail(s, -errno, "epoll");
	}
	if ((r = pthread_create(&th, NULL, handoff_worker, &h)) != 0) {
		close(ep);
		return bench_fail(s, -r, "pthread_create");
	}
	if (s->cfg->cpu_a >= 0 && s->cfg->cpu_b >= 0) { /* like the executor's workers */
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(s->cfg->cpu_a, &set);
		CPU_SET(s->cfg->cpu_b, &set);
		pthread_setaffinity_np(th, sizeof set, &set);
	}
	e->t0 = bench_now_ns();
	for (uint32_t req = 1; e->i < s->warmup + s->n; req++) {
		uint32_t d;

		if (epoll_wait(ep, &ev, 1, -1) != 1) {
			r = bench_fail(s, -errno, "epoll_wait");
			break;
		}
		/* H0: release pairs with the worker's acquire H1. */
		atomic_store_explicit(&h.req, req, memory_order_release);
		futex_wake(&h.req);
		/* H3: acquire pairs with the worker's release H2. */
		while ((d = atomic_load_explicit(&h.done, memory_order_acquire)) != req)
			futex_wait(&h.done, d);
	}
	atomic_store_explicit(&h.quit, 1, memory_order_release);
	atomic_fetch_add_explicit(&h.req, 0, memory_order_seq_cst);
	futex_wake(&h.req);
	pthread_join(th, NULL);
	close(ep);
	return r;
}

static int build_exec(struct side *s, struct exec_run *e, takt_exec **ret)
{
	const struct takt_item first = { .name = "first", .declare = declare_fd, .execute = item_first, .user = e }, work = { .name = "work", .declare = NULL, .execute = item_work, .user = e };
	const struct takt_item chain[3] = { first, work, work };
	int cpus[2] = { s->cfg->cpu_a, s->cfg->cpu_b };
	struct takt_exec_opts o = { .worker_threads = s->f->p.workers, .handle_signals = -1 };
	takt_graph *g;
	takt_exec *ex;
	int r, v[4];

	if (cpus[0] >= 0 && cpus[1] >= 0) { /* workers may use both CPUs; the dispatcher stays on A's */
		o.cpu_affinity = cpus;
		o.n_cpu_affinity = 2;
	}
	r = takt_exec_create(&o, &ex);
	if (r < 0)
		return bench_fail(s, r, "takt_exec_create");
	if (s->f->p.shape == SHAPE_CHAIN) {
		r = takt_exec_add_chain(ex, chain, 3);
	} else if ((r = takt_graph_create(&g)) == 0) {
		v[0] = takt_graph_vertex(g, &first);
		for (int k = 1; k < 4; k++)
			v[k] = takt_graph_vertex(g, &work);
		r = v[0] < 0 ? v[0] : v[3] < 0 ? v[3] : 0;
		if (r == 0)
			r = takt_graph_edge(g, v[0], v[1]);
		if (r == 0)
			r = takt_graph_edge(g, v[0], v[2]);
		if (r == 0)
			r = takt_graph_edge(g, v[1], v[3]);
		if (r == 0)
			r = takt_graph_edge(g, v[2], v[3]);
		if (r == 0)
			r = takt_exec_add_graph(ex, g); /* takes g, also on failure */
		else
			takt_graph_destroy(g);
	}
	if (r < 0) {
		takt_exec_destroy(ex);
		return bench_fail(s, r, "building the executor");
	}
	*ret = ex;
	return 0;
}

static int dispatch_prepare(struct side *s)
{
	uint64_t one = 1;

	/* Written once and never read: readable for good. */
	s->fd[0] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->fd[0] < 0 || write(s->fd[0], &one, sizeof one) != (ssize_t)sizeof one)
		return bench_fail(s, -errno, "eventfd");
	return 0;
}

static void dispatch_unprepare(struct side *s)
{
	if (s->fd[0] >= 0)
		close(s->fd[0]);
}

static int dispatch_run(struct side *s)
{
	const struct params *p = &s->f->p;
	struct exec_run *e = calloc(1, sizeof *e);
	takt_exec *ex = NULL;
	int r = 0;

	if (!e)
		return bench_fail(s, -ENOMEM, "state");
	e->s = s;
	const struct takt_item items[4] = {
		{ .name = "first", .declare = NULL, .execute = item_first, .user = e }, { .name = "work", .declare = NULL, .execute = item_work, .user = e },
		{ .name = "work", .declare = NULL, .execute = item_work, .user = e },	  { .name = "work", .declare = NULL, .execute = item_work, .user = e },
	};
	size_t n_items = p->shape == SHAPE_CHAIN ? 3 : 4;

	if (p->variant == VAR_HANDOFF) {
		r = handoff_loop(s, e, items, n_items);
	} else if (p->variant != VAR_EXEC) {
		r = direct_loop(s, e, items, n_items, p->variant == VAR_EPOLL);
	} else if ((r = build_exec(s, e, &ex)) == 0) {
		e->t0 = bench_now_ns();
		/* One dispatch per phase; the last phase's first item stamps the last sample. */
		r = takt_exec_run_n(ex, s->warmup + s->n);
		if (r < 0)
			bench_fail(s, r, "takt_exec_run_n");
		else if (e->i != s->warmup + s->n)
			r = bench_fail(s, -EPROTO, "%llu dispatches, expected %zu", (unsigned long long)e->i,
				       s->warmup + s->n);
		takt_exec_destroy(ex);
	}
	free(e);
	if (r == 0)
		s->sh->n_out = s->n;
	return r;
}

const struct impl exec_dispatch = { .prepare = dispatch_prepare, .unprepare = dispatch_unprepare, .run_a = dispatch_run };

/* ---- interval lateness -------------------------------------------------------- */

static int tick_declare(takt_triggers *t, void *user)
{
	(void)user;
	return takt_trigger_interval(t, ITEM_PERIOD_NS);
}

static int tick_execute(takt_ctx *ctx, void *user)
{
	struct exec_run *e = user;
	uint64_t now = bench_now_ns(), i = ++e->i, late;

	if (i == 1) { /* the grid: the first run's deadline, a period after its anchor */
		e->start = e->next_due = takt_ctx_scheduled_ns(ctx);
	}
	late = bench_lateness(now, e->start, ITEM_PERIOD_NS, &e->next_due);
	if (i > e->s->warmup && i <= e->s->warmup + e->s->n)
		e->s->sh->samples[i - e->s->warmup - 1] = late;
	return TAKT_CONTINUE;
}

static int interval_run(struct side *s)
{
	struct exec_run e = { .s = s };
	/* memory locked as cyclictest's -m locks its own: the same footing */
	const struct takt_exec_opts o = { .handle_signals = -1, .dispatch_sched_fifo_priority = s->f->p.fifo,
					  .lock_memory = 1 };
	const struct takt_item tick = { .name = "tick", .declare = tick_declare, .execute = tick_execute, .user = &e };
	struct takt_exec_stats st;
	takt_exec *ex;
	int r = takt_exec_create(&o, &ex);

	if (r < 0)
		return bench_fail(s, r, "takt_exec_create");
	r = takt_exec_add(ex, &tick);
	if (r >= 0)
		r = takt_exec_run_n(ex, s->warmup + s->n);
	if (r < 0)
		bench_fail(s, r, "interval task");
	else if (takt_exec_stats(ex, &st) == 0) {
		s->sh->drops = st.skipped_cycles;
		if (st.sched_fifo_refused)
			r = bench_fail(s, -EPERM, "SCHED_FIFO %d not permitted", s->f->p.fifo);
	}
	takt_exec_destroy(ex);
	if (r == 0 && e.i < s->warmup + s->n)
		r = bench_fail(s, -EPROTO, "%llu ticks, expected %zu", (unsigned long long)e.i, s->warmup + s->n);
	if (r == 0)
		s->sh->n_out = s->n;
	return r < 0 ? r : 0;
}

const struct impl exec_interval = { .run_a = interval_run };
