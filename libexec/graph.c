/* graph.c - a DAG of items: independent vertices run in parallel.
 *
 * Built once (graph_finish): successor lists, the immutable in-degree of
 * each vertex, one pre-built job per vertex, the runtime counters and an
 * MPSC ready ring of next_power_of_two(n) slots. Each run resets the
 * counters from the in-degree; nothing is allocated.
 *
 * A run, driven by the dispatch thread:
 *   seed  the roots, chosen by the immutable in-degree (never the live
 *         counters: a fast root could drop a successor's counter to 0 and
 *         the seed loop would dispatch it a second time);
 *   each vertex, when done, decrements its successors' counters; the one
 *         that brings a counter to 0 makes that successor ready: with
 *         workers (W0) it runs one ready successor itself and submits the
 *         others (no round trip through the driver, which runs the first
 *         root itself and sleeps until the last vertex wakes it); inline it
 *         pushes them on the ready ring and the driver runs them in order. A vertex that stopped or failed
 *         (or was cancelled) marks its successors cancelled first: they
 *         complete without running, so the whole subtree below a stop is
 *         skipped while vertices already running finish.
 *
 * Pairings:
 *   G0 cancelled[s] store (relaxed) and the vertex's own writes, then
 *      counters[s] fetch_sub (acq_rel): the decrement that reaches 0
 *      acquires every predecessor's writes, including their cancel marks.
 *   W0 continuation: the thread whose decrement made s ready owns s's run
 *      (G0 gave it the predecessors' writes); a submit hands it to a worker
 *      through the queue's J0/J1 (workers.c).
 *   G1 ready ring (inline): a producer claims a position with fetch_add on tail,
 *      then stores the vertex (release); the driver loads the slot
 *      (acquire) until it is filled, then marks it empty again.
 *   G2 pending fetch_sub (release) after a vertex's last write; the driver
 *      reads pending (acquire) == 0 and the run is over.
 */
#include "executor.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define RING_EMPTY UINT32_MAX

int takt_graph_create(takt_graph **out)
{
	takt_graph *g;

	if (!out)
		return -EINVAL;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	*out = g;
	return 0;
}

void takt_graph_destroy(takt_graph *g)
{
	graph_free(g);
}

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
	void *n;
	uint32_t c = *cap ? *cap : 4;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	n = realloc(*p, c * elem);
	if (!n)
		return -ENOMEM;
	*p = n;
	*cap = c;
	return 0;
}

int takt_graph_vertex(takt_graph *g, const struct takt_item *item)
{
	if (!g || !item || !item->execute || g->finished)
		return -EINVAL;
	if (g->n >= 4096)
		return -ENOSPC; /* vertex ids fit the epoll tag and the ready ring */
	if (grow((void **)&g->items, &g->cap, g->n + 1, sizeof(*item)) < 0)
		return -ENOMEM;
	g->items[g->n] = *item;
	return (int)g->n++;
}

int takt_graph_edge(takt_graph *g, int from, int to)
{
	uint32_t cap;

	if (!g || g->finished || from < 0 || to < 0 || (uint32_t)from >= g->n || (uint32_t)to >= g->n)
		return -EINVAL;
	if (from == to)
		return -ELOOP;
	cap = g->edge_cap; /* both arrays grow together; edge_cap is updated by the second */
	if (grow((void **)&g->edge_from, &cap, g->n_edges + 1, sizeof(uint32_t)) < 0)
		return -ENOMEM;
	if (grow((void **)&g->edge_to, &g->edge_cap, g->n_edges + 1, sizeof(uint32_t)) < 0)
		return -ENOMEM;
	g->edge_from[g->n_edges] = (uint32_t)from;
	g->edge_to[g->n_edges++] = (uint32_t)to;
	return 0;
}

/* Kahn's algorithm on a scratch copy of the in-degrees: -ELOOP if some
 * vertex never reaches 0. */
static int graph_check_acyclic(const takt_graph *g)
{
	uint32_t *deg = malloc(g->n * sizeof(*deg)), *queue = malloc(g->n * sizeof(*queue));
	uint32_t head = 0, tail = 0;
	int r = 0;

	if (!deg || !queue) {
		r = -ENOMEM;
		goto out;
	}
	memcpy(deg, g->in_degree, g->n * sizeof(*deg));
	for (uint32_t v = 0; v < g->n; v++)
		if (deg[v] == 0)
			queue[tail++] = v;
	while (head < tail) {
		uint32_t v = queue[head++];

		for (uint32_t i = g->succ_off[v]; i < g->succ_off[v + 1]; i++)
			if (--deg[g->succ[i]] == 0)
				queue[tail++] = g->succ[i];
	}
	if (tail != g->n)
		r = -ELOOP;
out:
	free(deg);
	free(queue);
	return r;
}

static int graph_build_succ(takt_graph *g)
{
	g->succ_off = calloc(g->n + 1, sizeof(uint32_t));
	g->succ = malloc((g->n_edges ? g->n_edges : 1) * sizeof(uint32_t));
	g->in_degree = calloc(g->n, sizeof(uint32_t));
	if (!g->succ_off || !g->succ || !g->in_degree)
		return -ENOMEM;
	for (uint32_t e = 0; e < g->n_edges; e++) {
		g->succ_off[g->edge_from[e] + 1]++;
		g->in_degree[g->edge_to[e]]++;
	}
	for (uint32_t v = 0; v < g->n; v++)
		g->succ_off[v + 1] += g->succ_off[v];
	uint32_t *fill = calloc(g->n, sizeof(uint32_t));

	if (!fill)
		return -ENOMEM;
	for (uint32_t e = 0; e < g->n_edges; e++) {
		uint32_t f = g->edge_from[e];

		g->succ[g->succ_off[f] + fill[f]++] = g->edge_to[e];
	}
	free(fill);
	return 0;
}

static void vertex_job_run(struct job *job);

static int graph_alloc_runtime(takt_graph *g, struct task *t)
{
	uint32_t cap = 2;

	while (cap < g->n)
		cap <<= 1;
	g->counters = calloc(g->n, sizeof(*g->counters));
	g->cancelled = calloc(g->n, sizeof(*g->cancelled));
	g->vjobs = calloc(g->n, sizeof(*g->vjobs));
	g->ready = malloc(cap * sizeof(*g->ready));
	if (!g->counters || !g->cancelled || !g->vjobs || !g->ready)
		return -ENOMEM;
	g->ready_mask = cap - 1;
	for (uint32_t i = 0; i < cap; i++)
		atomic_init(&g->ready[i], RING_EMPTY);
	for (uint32_t v = 0; v < g->n; v++)
		g->vjobs[v] = (struct vjob){.job = {.run = vertex_job_run}, .g = g, .v = v};
	g->task = t;
	return 0;
}

int graph_finish(takt_graph *g, struct task *t)
{
	int r;

	if (g->finished || g->n == 0)
		return -EINVAL;
	r = graph_build_succ(g);
	if (r == 0)
		r = graph_check_acyclic(g);
	if (r == 0)
		r = graph_alloc_runtime(g, t);
	g->finished = r == 0;
	return r;
}

void graph_free(takt_graph *g)
{
	if (!g)
		return;
	free(g->items);
	free(g->edge_from);
	free(g->edge_to);
	free(g->succ_off);
	free(g->succ);
	free(g->in_degree);
	free(g->vjobs);
	free((void *)g->counters);
	free((void *)g->cancelled);
	free((void *)g->ready);
	free(g);
}

static void ready_push(takt_graph *g, uint32_t v)
{
	/* G1: claim, then publish. A run pushes each vertex at most once and
	 * the ring holds n or more, so a claimed slot is always empty. */
	uint64_t pos = atomic_fetch_add_explicit(&g->ready_tail, 1, memory_order_relaxed);

	atomic_store_explicit(&g->ready[pos & g->ready_mask], v, memory_order_release);
}

static bool ready_pop(takt_graph *g, uint32_t *v)
{
	_Atomic uint32_t *slot = &g->ready[g->ready_head & g->ready_mask];

	/* G1: a claimed position whose value has not landed reads EMPTY: the
	 * producer stores it before it wakes us, so we sleep instead of spin. */
	*v = atomic_load_explicit(slot, memory_order_acquire);
	if (*v == RING_EMPTY)
		return false;
	atomic_store_explicit(slot, RING_EMPTY, memory_order_relaxed);
	g->ready_head++;
	return true;
}

/* A vertex is finished (ran, or was cancelled): release its successors.
 * Inline (no workers) each ready successor goes on the ready ring for the
 * driver, which runs them in order. With workers (W0) the thread that
 * finished the vertex keeps one ready successor to run itself (returned;
 * RING_EMPTY if none), submits the others to the workers directly, and
 * only the last vertex of the run wakes the driver. */
static uint32_t vertex_complete(struct takt_exec *ex, takt_graph *g, uint32_t v, bool cancel)
{
	bool direct = ex->workers.n_workers > 0;
	uint32_t next = RING_EMPTY;

	for (uint32_t i = g->succ_off[v]; i < g->succ_off[v + 1]; i++) {
		uint32_t s = g->succ[i];

		if (cancel)
			atomic_store_explicit(&g->cancelled[s], 1, memory_order_relaxed); /* G0 */
		if (atomic_fetch_sub_explicit(&g->counters[s], 1, memory_order_acq_rel) != 1)
			continue;
		if (!direct)
			ready_push(g, s);
		else if (next == RING_EMPTY)
			next = s;
		else
			workers_submit(&ex->workers, &g->vjobs[s].job);
	}
	/* G2: release everything this vertex wrote to the driver. With
	 * workers only the run's last vertex wakes it (D1): the driver sleeps
	 * until then, or runs vertices itself. */
	if (atomic_fetch_sub_explicit(&g->pending, 1, memory_order_release) == 1 && direct)
		exec_wake_driver(ex);
	return next;
}

/* Runs vertex v, then (W0) the successor it made ready, and so on; a
 * cancelled vertex completes without running. */
static void vertex_run_from(struct takt_exec *ex, takt_graph *g, uint32_t v)
{
	while (v != RING_EMPTY) {
		/* G0: acquired through the counter's acq_rel (or the seed) */
		bool cancel = atomic_load_explicit(&g->cancelled[v], memory_order_relaxed);
		int rc = TAKT_CONTINUE;

		if (!cancel) {
			rc = exec_run_item(ex, g->task, &g->items[v]);
			if (rc < 0)
				exec_fault(ex, g->task); /* exec_run_item kept the run's first error */
		}
		v = vertex_complete(ex, g, v, cancel || rc != TAKT_CONTINUE);
	}
}

static void vertex_job_run(struct job *job)
{
	struct vjob *vj = (struct vjob *)job;

	vertex_run_from(vj->g->task->ctx.ex, vj->g, vj->v);
}

static void graph_reset(takt_graph *g)
{
	for (uint32_t v = 0; v < g->n; v++) {
		atomic_store_explicit(&g->counters[v], g->in_degree[v], memory_order_relaxed);
		atomic_store_explicit(&g->cancelled[v], 0, memory_order_relaxed);
	}
	atomic_store_explicit(&g->pending, g->n, memory_order_relaxed);
}

/* Inline: runs a ready vertex, or completes a cancelled one on the spot. */
static void graph_dispatch(struct takt_exec *ex, takt_graph *g, uint32_t v)
{
	if (atomic_load_explicit(&g->cancelled[v], memory_order_relaxed)) /* G0: acquired via counter */
		vertex_complete(ex, g, v, true);
	else
		workers_submit(&ex->workers, &g->vjobs[v].job);
}

void graph_run(struct takt_exec *ex, takt_graph *g)
{
	uint64_t t0 = g->task->budget_ns ? exec_now_ns() : 0;
	uint32_t v;

	graph_reset(g);
	/* Seed from the immutable in-degree, never the live counters. With
	 * workers (W0) the driver runs the first root itself instead of
	 * waking a worker for it and sleeping. */
	if (ex->workers.n_workers) {
		uint32_t first = RING_EMPTY;

		for (v = 0; v < g->n; v++)
			if (g->in_degree[v] == 0 && first == RING_EMPTY)
				first = v;
			else if (g->in_degree[v] == 0)
				workers_submit(&ex->workers, &g->vjobs[v].job);
		vertex_run_from(ex, g, first);
	} else {
		for (v = 0; v < g->n; v++)
			if (g->in_degree[v] == 0)
				workers_submit(&ex->workers, &g->vjobs[v].job);
	}
	for (;;) {
		uint32_t w = atomic_load_explicit(&ex->wake_word, memory_order_seq_cst); /* D1 */

		while (ready_pop(g, &v))
			graph_dispatch(ex, g, v);
		if (atomic_load_explicit(&g->pending, memory_order_acquire) == 0) /* G2 */
			break;
		/* D1: a vertex finishing after our read of w changed wake_word */
		exec_futex_wait(&ex->wake_word, w, -1);
	}
	if (g->task->budget_ns) {
		uint64_t took = exec_now_ns() - t0;

		if (took > g->task->budget_ns)
			exec_overrun(ex, g->task, NULL, took, g->task->budget_ns);
	}
}
