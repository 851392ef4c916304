/* exec.c - building an executor: create, add tasks, destroy, statistics.
 *
 * Everything a task needs at run time is allocated here, at add time: the
 * task, its copy of the items, its job, a graph's runtime state, room in
 * the workers' queue and in the per-phase ready list.
 */
#include "executor.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <unistd.h>

static int exec_fds(takt_exec *ex)
{
	struct epoll_event ev = {.events = EPOLLIN};
	sigset_t set;

	ex->epfd = epoll_create1(EPOLL_CLOEXEC);
	ex->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ex->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (ex->epfd < 0 || ex->stop_fd < 0 || ex->done_fd < 0)
		return -errno;
	ev.data.u64 = TAG_STOP;
	if (epoll_ctl(ex->epfd, EPOLL_CTL_ADD, ex->stop_fd, &ev) < 0)
		return -errno;
	ev.data.u64 = TAG_DONE;
	if (epoll_ctl(ex->epfd, EPOLL_CTL_ADD, ex->done_fd, &ev) < 0)
		return -errno;
	if (ex->opts.handle_signals < 0)
		return 0;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	ex->signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (ex->signal_fd < 0)
		return -errno;
	ev.data.u64 = TAG_SIGNAL;
	return epoll_ctl(ex->epfd, EPOLL_CTL_ADD, ex->signal_fd, &ev) < 0 ? -errno : 0;
}

int takt_exec_create(const struct takt_exec_opts *opts, takt_exec **out)
{
	struct takt_exec_opts none = {0};
	takt_exec *ex;
	int r;

	if (!out || (opts && opts->n_cpu_affinity && !opts->cpu_affinity) ||
	    (opts && opts->worker_threads > 256) ||
	    (opts && opts->sched_fifo_priority &&
	     (opts->sched_fifo_priority < sched_get_priority_min(SCHED_FIFO) ||
	      opts->sched_fifo_priority > sched_get_priority_max(SCHED_FIFO))) ||
	    (opts && opts->dispatch_sched_fifo_priority &&
	     (opts->dispatch_sched_fifo_priority < sched_get_priority_min(SCHED_FIFO) ||
	      opts->dispatch_sched_fifo_priority > sched_get_priority_max(SCHED_FIFO))) ||
	    (opts && opts->pin_dispatch && (opts->dispatch_cpu < 0 || opts->dispatch_cpu >= CPU_SETSIZE)))
		return -EINVAL;
	if (opts && opts->lock_memory && mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
		return -errno;
	ex = calloc(1, sizeof(*ex));
	if (!ex)
		return -ENOMEM;
	ex->opts = opts ? *opts : none;
	ex->epfd = ex->stop_fd = ex->signal_fd = ex->done_fd = -1;
	if (opts && opts->monitor) {
		ex->monitor = *opts->monitor;
		ex->has_monitor = true;
	}
	ex->opts.monitor = NULL;
	r = exec_fds(ex);
	if (r == 0)
		r = workers_start(&ex->workers, ex, &ex->opts);
	if (r < 0) {
		takt_exec_destroy(ex);
		return r;
	}
	/* The workers copied what they need: keep no pointer into the caller's options. */
	ex->opts.cpu_affinity = NULL;
	ex->opts.thread_name_prefix = NULL;
	*out = ex;
	return 0;
}

static void task_free(takt_exec *ex, struct task *t)
{
	if (!t)
		return;
	trig_release(ex, t);
	if (t->graph)
		graph_free(t->graph);
	free(t->items);
	free(t);
}

void takt_exec_destroy(takt_exec *ex)
{
	if (!ex)
		return;
	workers_stop(&ex->workers);
	let_give_back(ex);
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		task_free(ex, ex->tasks[i]);
	for (uint32_t i = 0; i < ex->n_owned; i++)
		free(ex->owned[i]);
	free(ex->owned);
	free(ex->tasks);
	free(ex->ready);
	if (ex->signal_fd >= 0)
		close(ex->signal_fd);
	if (ex->stop_fd >= 0)
		close(ex->stop_fd);
	if (ex->done_fd >= 0)
		close(ex->done_fd);
	if (ex->epfd >= 0)
		close(ex->epfd);
	free(ex);
}

/* Room for one more task and everything it may put in flight. */
static int exec_grow(takt_exec *ex, uint32_t jobs)
{
	struct task **tasks, **ready;
	uint32_t cap = ex->cap_tasks ? ex->cap_tasks : 8;
	uint32_t in_flight = jobs;

	if (ex->n_tasks == cap)
		cap *= 2;
	if (cap != ex->cap_tasks) {
		tasks = realloc(ex->tasks, cap * sizeof(*tasks));
		if (!tasks)
			return -ENOMEM;
		ex->tasks = tasks;
		ready = realloc(ex->ready, cap * sizeof(*ready));
		if (!ready)
			return -ENOMEM;
		ex->ready = ready;
		ex->cap_tasks = cap;
	}
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		in_flight += ex->tasks[i]->graph ? ex->tasks[i]->graph->n : 1;
	return workers_reserve(&ex->workers, in_flight + 1);
}

static bool item_ok(const struct takt_item *it)
{
	return it && it->execute;
}

/* Runs the head's (or roots') declare() into t's triggers. */
static int task_declare(takt_exec *ex, struct task *t, const struct takt_item *const *decl, size_t n)
{
	struct takt_triggers tr = {.ex = ex};
	int r;

	for (size_t i = 0; i < n; i++) {
		if (!decl[i]->declare)
			continue;
		r = decl[i]->declare(&tr, decl[i]->user);
		if (r < 0)
			return r;
		if (tr.err < 0)
			return tr.err;
	}
	t->period_ns = tr.period_ns;
	t->n_trigs = tr.n;
	memcpy(t->trigs, tr.t, sizeof(tr.t));
	t->let_ports = tr.let;
	t->let = tr.let.n_in || tr.let.n_out;
	return 0;
}

static void exec_take_ownership(takt_exec *ex, const struct takt_item *items, size_t n);
static int exec_check_ownership(takt_exec *ex, const struct takt_item *items, size_t n);

/* Common tail of every add: triggers, registration, bookkeeping. */
static int task_commit(takt_exec *ex, struct task *t, const struct takt_item *const *decl, size_t n_decl,
		       uint32_t jobs)
{
	int r;

	/* acquire: pairs with run_leave's release (build from the thread that runs) */
	if (atomic_load_explicit(&ex->running, memory_order_acquire))
		return -EBUSY;
	r = exec_grow(ex, jobs);
	if (r == 0)
		r = task_declare(ex, t, decl, n_decl);
	if (r == 0)
		r = trig_validate(ex, t);
	if (r == 0)
		r = exec_check_ownership(ex, t->graph ? t->graph->items : t->items,
					 t->graph ? t->graph->n : t->n_items);
	if (r == 0)
		r = trig_register(ex, t);
	if (r < 0)
		return r;
	t->id = (int)ex->n_tasks;
	t->ctx = (struct takt_ctx){.ex = ex, .task = t->id};
	exec_task_init_job(t);
	ex->tasks[ex->n_tasks++] = t;
	if (t->period_ns)
		ex->timed_dirty = true;
	/* LET: its outputs' publishes wait for their boundary from now on */
	for (unsigned i = 0; i < t->let_ports.n_out; i++)
		takt_pub_hold(t->let_ports.out[i], 1);
	exec_take_ownership(ex, t->items, t->n_items);
	return t->id;
}

int takt_exec_add_chain(takt_exec *ex, const struct takt_item *items, size_t n)
{
	struct task *t;
	const struct takt_item *head;
	int r;

	if (!ex || !items || n == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!item_ok(&items[i]))
			return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->items = malloc(n * sizeof(*items)))) {
		free(t);
		return -ENOMEM;
	}
	memcpy(t->items, items, n * sizeof(*items));
	t->n_items = n;
	t->kind = n == 1 ? TASK_SINGLE : TASK_CHAIN;
	head = &t->items[0];
	r = task_commit(ex, t, &head, 1, 1);
	if (r < 0) {
		trig_release(ex, t);
		free(t->items);
		free(t);
	}
	return r;
}

int takt_exec_add(takt_exec *ex, const struct takt_item *item)
{
	return takt_exec_add_chain(ex, item, 1);
}

int takt_exec_add_graph(takt_exec *ex, takt_graph *g)
{
	const struct takt_item **roots;
	size_t n_roots = 0;
	struct task *t;
	int r;

	if (!ex || !g)
		return -EINVAL;
	if (g->finished)
		return -EBUSY; /* added before: it belongs to that executor */
	t = calloc(1, sizeof(*t));
	roots = g->n ? calloc(g->n, sizeof(*roots)) : NULL;
	if (!t || (g->n && !roots)) {
		free(t);
		free(roots);
		graph_free(g);
		return -ENOMEM;
	}
	t->kind = TASK_GRAPH;
	t->graph = g;
	r = graph_finish(g, t);
	for (uint32_t v = 0; r == 0 && v < g->n; v++)
		if (g->in_degree[v] == 0)
			roots[n_roots++] = &g->items[v]; /* every root declares */
	if (r == 0)
		r = task_commit(ex, t, roots, n_roots, g->n);
	free(roots);
	if (r < 0) {
		task_free(ex, t);
		return r;
	}
	exec_take_ownership(ex, g->items, g->n);
	return r;
}

int takt_exec_set_fault_handler(takt_exec *ex, int task, const struct takt_item *handler)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks || !item_ok(handler))
		return -EINVAL;
	/* acquire: as in task_commit */
	if (atomic_load_explicit(&ex->running, memory_order_acquire) || exec_check_ownership(ex, handler, 1))
		return -EBUSY;
	ex->tasks[task]->fault = *handler;
	ex->tasks[task]->has_fault = true;
	exec_take_ownership(ex, handler, 1);
	return 0;
}

/* ---- conditional items -------------------------------------------------- */

struct when {
	struct takt_item item;
	int (*pred)(void *);
	void *pred_user;
	takt_exec *owner; /* the executor that frees it; only it may add it */
};

static int when_execute(takt_ctx *ctx, void *user)
{
	struct when *w = user;

	return w->pred(w->pred_user) ? w->item.execute(ctx, w->item.user) : TAKT_STOP_CHAIN;
}

static int when_declare(takt_triggers *t, void *user)
{
	struct when *w = user;

	return w->item.declare ? w->item.declare(t, w->item.user) : 0;
}

struct takt_item takt_item_when(struct takt_item item, int (*pred)(void *), void *pred_user)
{
	struct takt_item out = {.name = item.name, .budget_ns = item.budget_ns};
	struct when *w;

	if (!item.execute || !pred || !(w = calloc(1, sizeof(*w))))
		return out; /* execute NULL: refused by every add */
	*w = (struct when){.item = item, .pred = pred, .pred_user = pred_user};
	out.declare = when_declare;
	out.execute = when_execute;
	out.user = w;
	return out;
}

/* A wrapper belongs to the first executor it is added to, which frees it
 * at destroy; adding it to another executor is refused (-EBUSY). */
static int exec_check_ownership(takt_exec *ex, const struct takt_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (items[i].execute == when_execute && ((struct when *)items[i].user)->owner &&
		    ((struct when *)items[i].user)->owner != ex)
			return -EBUSY;
	return 0;
}

static void exec_take_ownership(takt_exec *ex, const struct takt_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct when *w = items[i].user;
		void **owned;

		if (items[i].execute != when_execute || w->owner)
			continue;
		owned = realloc(ex->owned, (ex->n_owned + 1) * sizeof(*owned));
		if (!owned)
			continue; /* leaks one wrapper rather than fail an add that worked */
		ex->owned = owned;
		ex->owned[ex->n_owned++] = w;
		w->owner = ex;
	}
}

/* ---- introspection ------------------------------------------------------ */

int takt_exec_stats(const takt_exec *ex, struct takt_exec_stats *out)
{
	if (!ex || !out)
		return -EINVAL;
	/* relaxed: counters, each monotonic; no snapshot across them is promised */
	out->phases = atomic_load_explicit(&ex->st.phases, memory_order_relaxed);
	out->dispatches = atomic_load_explicit(&ex->st.dispatches, memory_order_relaxed);
	out->errors = atomic_load_explicit(&ex->st.errors, memory_order_relaxed);
	out->stop_chains = atomic_load_explicit(&ex->st.stop_chains, memory_order_relaxed);
	out->deadline_misses = atomic_load_explicit(&ex->st.deadline_misses, memory_order_relaxed);
	out->skipped_cycles = atomic_load_explicit(&ex->st.skipped_cycles, memory_order_relaxed);
	out->longest_item_ns = atomic_load_explicit(&ex->st.longest_item_ns, memory_order_relaxed);
	out->overruns = atomic_load_explicit(&ex->st.overruns, memory_order_relaxed);
	out->sched_fifo_refused = atomic_load_explicit(&ex->workers.fifo_refused, memory_order_relaxed) +
				  atomic_load_explicit(&ex->st.dispatch_fifo_refused, memory_order_relaxed);
	return 0;
}

int64_t takt_exec_task_dispatches(const takt_exec *ex, int task)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks)
		return -EINVAL;
	return (int64_t)atomic_load_explicit(&ex->tasks[task]->dispatches, memory_order_relaxed);
}

int takt_exec_set_budget(takt_exec *ex, int task, uint64_t budget_ns)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks)
		return -EINVAL;
	/* acquire: pairs with run_leave's release (configured between runs) */
	if (atomic_load_explicit(&ex->running, memory_order_acquire))
		return -EBUSY;
	ex->tasks[task]->budget_ns = budget_ns;
	return 0;
}

int64_t takt_exec_task_overruns(const takt_exec *ex, int task)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks)
		return -EINVAL;
	/* relaxed: a statistic */
	return (int64_t)atomic_load_explicit(&ex->tasks[task]->overruns, memory_order_relaxed);
}

int64_t takt_exec_task_skipped(const takt_exec *ex, int task)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks)
		return -EINVAL;
	/* relaxed: a statistic */
	return (int64_t)atomic_load_explicit(&ex->tasks[task]->skipped, memory_order_relaxed);
}

int takt_exec_task_last_error(const takt_exec *ex, int task)
{
	if (!ex || task < 0 || (uint32_t)task >= ex->n_tasks)
		return -EINVAL;
	return ex->tasks[task]->last_err;
}
