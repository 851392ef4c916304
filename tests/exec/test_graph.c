/* test_graph.c - graphs on the worker pool: ordering constraints hold run
 * after run, each vertex runs exactly once per run, a stop cancels the
 * subtree below it, cycles are refused. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>
#include <takt/exec.h>

#include "watchdog.h"

#define MAXV 16
#if defined(__SANITIZE_THREAD__)
#define RUNS 5000 /* ThreadSanitizer is ~50x slower; the orderings are the same */
#else
#define RUNS 100000
#endif

/* Shared by the vertices of one graph: which run each vertex last finished,
 * and how often each ran. A vertex checks its predecessors finished the
 * current run before it starts; violations are counted, not asserted, since
 * vertices run on worker threads. */
struct dag {
	int efd;                 /* the root's trigger: always readable while kicked */
	_Atomic uint64_t run;    /* current run, bumped by the root */
	_Atomic uint64_t done[MAXV];
	_Atomic uint64_t runs[MAXV];
	_Atomic uint64_t violations;
	int preds[MAXV][MAXV];
	int n_preds[MAXV];
	int outcome[MAXV];
	uint64_t stop_after;     /* the root stops draining its trigger after this many runs */
};

struct vtx {
	struct dag *d;
	int id;
};

static int root_declare(takt_triggers *t, void *u)
{
	return takt_trigger_fd(t, ((struct vtx *)u)->d->efd);
}

static int vtx_execute(takt_ctx *c, void *u)
{
	struct vtx *x = u;
	struct dag *d = x->d;
	uint64_t run;

	(void)c;
	if (d->n_preds[x->id] == 0) {
		run = atomic_fetch_add(&d->run, 1) + 1;
		if (run >= d->stop_after) {
			uint64_t v;

			if (read(d->efd, &v, sizeof(v)) < 0) {
				/* drained */
			}
		}
	} else {
		run = atomic_load(&d->run);
	}
	for (int i = 0; i < d->n_preds[x->id]; i++)
		if (atomic_load_explicit(&d->done[d->preds[x->id][i]], memory_order_acquire) != run)
			atomic_fetch_add(&d->violations, 1); /* ran before a predecessor */
	if (atomic_load(&d->done[x->id]) == run)
		atomic_fetch_add(&d->violations, 1); /* ran twice in one run */
	atomic_fetch_add(&d->runs[x->id], 1);
	atomic_store_explicit(&d->done[x->id], run, memory_order_release);
	return d->outcome[x->id];
}

struct built {
	takt_exec *ex;
	struct vtx v[MAXV];
	int task;
};

/* Builds a graph of n vertices with the given edges; vertex 0 is the root. */
static void build(struct built *b, struct dag *d, unsigned workers, int n, const int (*edges)[2], int n_edges)
{
	struct takt_exec_opts o = {.worker_threads = workers};
	takt_graph *g;

	d->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_int_equal(takt_exec_create(&o, &b->ex), 0);
	assert_int_equal(takt_graph_create(&g), 0);
	for (int i = 0; i < n; i++) {
		struct takt_item it = {.name = "v", .execute = vtx_execute, .user = &b->v[i]};

		b->v[i] = (struct vtx){.d = d, .id = i};
		if (i == 0)
			it.declare = root_declare;
		assert_int_equal(takt_graph_vertex(g, &it), i);
	}
	for (int e = 0; e < n_edges; e++) {
		int f = edges[e][0], t = edges[e][1];

		assert_int_equal(takt_graph_edge(g, f, t), 0);
		d->preds[t][d->n_preds[t]++] = f;
	}
	b->task = takt_exec_add_graph(b->ex, g);
	assert_true(b->task >= 0);
}

static void teardown_built(struct built *b, struct dag *d)
{
	takt_exec_destroy(b->ex);
	close(d->efd);
}

static void run_many(const int (*edges)[2], int n_edges, int n, uint64_t runs)
{
	static struct dag d;
	struct built b;
	uint64_t one = 1;

	memset(&d, 0, sizeof(d));
	d.stop_after = runs;
	build(&b, &d, 2, n, edges, n_edges);
	assert_int_equal(write(d.efd, &one, sizeof(one)), sizeof(one)); /* readable until the last run */
	assert_int_equal(takt_exec_run_n(b.ex, runs), 0);
	assert_int_equal(atomic_load(&d.violations), 0);
	for (int i = 0; i < n; i++)
		assert_int_equal(atomic_load(&d.runs[i]), runs); /* exactly once per run */
	assert_int_equal(takt_exec_task_dispatches(b.ex, b.task), runs);
	teardown_built(&b, &d);
}

/* 0 -> {1, 2} -> 3, 100k runs on 2 workers. Also the regression for the
 * seed race: seeding from the live counters instead of the immutable
 * in-degree lets a fast root's successor be dispatched twice. */
static void test_graph_diamond_100k_runs(void **state)
{
	static const int e[][2] = {{0, 1}, {0, 2}, {1, 3}, {2, 3}};

	(void)state;
	run_many(e, 4, 4, RUNS);
}

/* 0 -> 1..8 -> 9 */
static void test_graph_wide_fan_out_100k_runs(void **state)
{
	static const int e[][2] = {{0, 1}, {0, 2}, {0, 3}, {0, 4}, {0, 5}, {0, 6}, {0, 7}, {0, 8},
				   {1, 9}, {2, 9}, {3, 9}, {4, 9}, {5, 9}, {6, 9}, {7, 9}, {8, 9}};

	(void)state;
	run_many(e, 16, 10, RUNS);
}

/* 0 -> 1 -> 2, 0 -> 3 -> 4, and 1 -> 4: vertex 1 stops, so 2 and 4 (below
 * it, even through 4's other predecessor) are skipped; 3 runs. */
static void cancel_case(int outcome)
{
	static const int e[][2] = {{0, 1}, {1, 2}, {0, 3}, {3, 4}, {1, 4}};
	static struct dag d;
	struct takt_exec_stats st;
	struct built b;
	uint64_t one = 1;

	memset(&d, 0, sizeof(d));
	d.stop_after = 1;
	d.outcome[1] = outcome;
	build(&b, &d, 2, 5, e, 5);
	assert_int_equal(write(d.efd, &one, sizeof(one)), sizeof(one));
	assert_int_equal(takt_exec_run_n(b.ex, 1), 0);
	assert_int_equal(d.runs[0], 1);
	assert_int_equal(d.runs[1], 1);
	assert_int_equal(d.runs[2], 0);
	assert_int_equal(d.runs[3], 1);
	assert_int_equal(d.runs[4], 0);
	assert_int_equal(takt_exec_stats(b.ex, &st), 0);
	assert_int_equal(st.errors, outcome < 0);
	assert_int_equal(st.stop_chains, outcome == TAKT_STOP_CHAIN);
	teardown_built(&b, &d);
}

static void test_graph_stop_cancels_subtree(void **state)
{
	(void)state;
	cancel_case(TAKT_STOP_CHAIN);
	cancel_case(-EIO);
}

static int noop(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	return TAKT_CONTINUE;
}

static void test_graph_cycle_and_bad_edges_refused(void **state)
{
	struct takt_item it = {.name = "n", .execute = noop};
	takt_exec *ex;
	takt_graph *g;

	(void)state;
	assert_int_equal(takt_exec_create(NULL, &ex), 0);
	assert_int_equal(takt_graph_create(&g), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(takt_graph_vertex(g, &it), i);
	assert_int_equal(takt_graph_edge(g, 0, 7), -EINVAL); /* unknown vertex */
	assert_int_equal(takt_graph_edge(g, -1, 0), -EINVAL);
	assert_int_equal(takt_graph_edge(g, 1, 1), -ELOOP);
	assert_int_equal(takt_graph_edge(g, 0, 1), 0);
	assert_int_equal(takt_graph_edge(g, 1, 2), 0);
	assert_int_equal(takt_graph_edge(g, 2, 0), 0);
	assert_int_equal(takt_exec_add_graph(ex, g), -ELOOP); /* takes g either way */
	assert_int_equal(takt_graph_create(&g), 0);
	assert_int_equal(takt_exec_add_graph(ex, g), -EINVAL); /* empty */
	takt_exec_destroy(ex);
}

/* The fault handler runs once per phase even when two vertices fail on
 * two workers. */
static _Atomic int faults;

static int fault_exec(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	atomic_fetch_add(&faults, 1);
	return TAKT_CONTINUE;
}

static void test_graph_fault_handler_once_per_phase(void **state)
{
	static const int e[][2] = {{0, 1}, {0, 2}};
	static struct dag d;
	struct takt_item fh = {.name = "fault", .execute = fault_exec};
	struct takt_exec_stats st;
	struct built b;
	uint64_t one = 1;

	(void)state;
	memset(&d, 0, sizeof(d));
	d.stop_after = 3;
	d.outcome[1] = -EIO;
	d.outcome[2] = -EPIPE;
	build(&b, &d, 2, 3, e, 2);
	assert_int_equal(takt_exec_set_fault_handler(b.ex, b.task, &fh), 0);
	assert_int_equal(write(d.efd, &one, sizeof(one)), sizeof(one));
	assert_int_equal(takt_exec_run_n(b.ex, 3), 0);
	assert_int_equal(faults, 3);
	assert_int_equal(takt_exec_stats(b.ex, &st), 0);
	assert_int_equal(st.errors, 6);
	teardown_built(&b, &d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_graph_diamond_100k_runs),
		cmocka_unit_test(test_graph_wide_fan_out_100k_runs),
		cmocka_unit_test(test_graph_stop_cancels_subtree),
		cmocka_unit_test(test_graph_cycle_and_bad_edges_refused),
		cmocka_unit_test(test_graph_fault_handler_once_per_phase),
	};

	watchdog_arm(120);
	return cmocka_run_group_tests_name("graph", tests, NULL, NULL);
}
