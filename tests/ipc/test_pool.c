/* test_pool.c - chunk free lists (ABA-tagged Treiber stacks) and the
 * generation|refcount word of each chunk (libipc/pool.c).
 *
 * The single-threaded cases pin down the contract: every chunk comes out of
 * a class exactly once, LIFO order, exact counts, generations, and that a
 * corrupted head or link word is refused rather than followed. The stress
 * cases run pop/push cycles from 4 threads and from 3 processes on a small
 * class, so the same few chunks are recycled constantly (the ABA pattern),
 * and check that no chunk is ever owned twice and none is lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fixture.h"
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STRESS_THREADS 4
#define STRESS_PROCS 3
#define STRESS_CLASS 1      /* 32 chunks: small enough that chunks recycle fast */
#define STRESS_MAX_HOLD 3   /* 4 workers x 3 < 32: the class can never run dry */
#define STRESS_POPS 1000000u /* per worker, before FIXTURE_SCALE */
#define STRESS_TIMEOUT_S 60
#define STRESS_OWNERS 512   /* >= chunks in the fixture */

/* Shared by the stress workers; lives in the fixture's MAP_SHARED scratch so
 * forked workers share it too. */
struct stress_shared {
	_Atomic uint32_t owner[STRESS_OWNERS]; /* per global chunk: worker id, 0 = free */
	_Atomic uint32_t ready;      /* workers at the start line */
	_Atomic uint32_t go;         /* opened once all are ready: they contend from the start */
	_Atomic uint64_t errors;
};

static int pool_teardown(void **state)
{
	fixture_destroy(*state);
	free(*state);
	return 0;
}

static int pool_setup(void **state)
{
	struct fixture_config cfg = fixture_default;
	struct fixture *f = calloc(1, sizeof(*f));

	cfg.scratch_size = sizeof(struct stress_shared);
	if (!f || fixture_init(f, &cfg) < 0) {
		free(f);
		return -1;
	}
	/* owner[] is indexed by global chunk index. */
	if (f->v.n_chunks > STRESS_OWNERS) {
		pool_teardown((void **)&f);
		return -1;
	}
	*state = f;
	return 0;
}

static const struct seg_view *view(void **state)
{
	return &((struct fixture *)*state)->v;
}

/* Pops class k dry; every index must belong to k and appear once. */
static uint32_t pop_all_distinct(const struct seg_view *v, uint32_t k, uint32_t *out)
{
	const struct seg_pool *p = &v->pool[k];
	uint8_t *seen = calloc(p->n, 1);
	uint32_t n = 0, c;

	assert_non_null(seen);
	while ((c = pool_pop_mpmc(v, k)) != TAKT_NONE) {
		assert_in_range(c, p->first, p->first + p->n - 1);
		assert_int_equal(seen[c - p->first], 0);
		seen[c - p->first] = 1;
		assert_true(n < p->n);
		out[n++] = c;
	}
	free(seen);
	return n;
}

static void test_pool_pop_until_empty_returns_each_chunk_once(void **state)
{
	const struct seg_view *v = view(state);

	for (uint32_t k = 0; k < v->lim.n_classes; k++) {
		uint32_t n = v->pool[k].n, *got = calloc(n, sizeof(*got));

		assert_non_null(got);
		assert_int_equal(pop_all_distinct(v, k, got), n);
		assert_int_equal(pool_pop_mpmc(v, k), TAKT_NONE); /* stays empty */
		assert_int_equal(pool_count_free(v, k), 0);
		for (uint32_t i = 0; i < n; i++)
			pool_push_mpmc(v, got[i]);
		assert_int_equal(pool_count_free(v, k), n);
		free(got);
	}
}

static void test_pool_push_pop_is_lifo(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t first = v->pool[0].first;
	uint32_t a = pool_pop_mpmc(v, 0), b = pool_pop_mpmc(v, 0), c = pool_pop_mpmc(v, 0);

	/* pool_format stacks the lowest index on top: loans start at chunk 0. */
	assert_int_equal(a, first);
	assert_int_equal(b, first + 1);
	assert_int_equal(c, first + 2);
	pool_push_mpmc(v, a);
	pool_push_mpmc(v, c);
	pool_push_mpmc(v, b);
	assert_int_equal(pool_pop_mpmc(v, 0), b);
	assert_int_equal(pool_pop_mpmc(v, 0), c);
	assert_int_equal(pool_pop_mpmc(v, 0), a);
	assert_int_equal(pool_pop_mpmc(v, 0), first + 3); /* the untouched rest follows */
}

static void test_pool_count_free_is_exact(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t n0 = v->pool[0].n, n1 = v->pool[1].n;
	const uint32_t takes[] = {0, 1, 5, 100, n0};

	for (size_t t = 0; t < sizeof(takes) / sizeof(takes[0]); t++) {
		uint32_t *got = calloc(n0, sizeof(*got));

		assert_non_null(got);
		for (uint32_t i = 0; i < takes[t]; i++)
			got[i] = pool_pop_mpmc(v, 0);
		assert_int_equal(pool_count_free(v, 0), n0 - takes[t]);
		assert_int_equal(pool_count_free(v, 1), n1); /* classes are independent */
		for (uint32_t i = 0; i < takes[t]; i++)
			pool_push_mpmc(v, got[i]);
		assert_int_equal(pool_count_free(v, 0), n0);
		free(got);
	}
}

static uint32_t refs_gen(const struct seg_view *v, uint32_t c)
{
	return (uint32_t)(atomic_load_explicit(&v->chunks[c].refs, memory_order_relaxed) >> 32);
}

static void test_pool_loan_init_bumps_generation(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t c = pool_pop_mpmc(v, 0), g1, g2;

	g1 = chunk_loan_init(v, c);
	assert_int_equal(chunk_refcount(v, c), 1);
	assert_int_equal(refs_gen(v, c), g1);
	assert_true(chunk_unref(v, c));
	assert_int_equal(refs_gen(v, c), g1); /* freeing keeps the generation */
	assert_int_equal(pool_pop_mpmc(v, 0), c);
	g2 = chunk_loan_init(v, c);
	assert_int_equal(g2, g1 + 1);

	/* Generation 0 means "empty history entry": the wrap skips it. */
	atomic_store_explicit(&v->chunks[c].refs, (uint64_t)UINT32_MAX << 32, memory_order_relaxed);
	assert_int_equal(chunk_loan_init(v, c), 1);
	assert_int_equal(chunk_refcount(v, c), 1);
}

static void test_pool_unref_frees_only_at_last_reference(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t c = pool_pop_mpmc(v, 0), before;

	chunk_loan_init(v, c);
	chunk_ref_add(v, c, 2);
	assert_int_equal(chunk_refcount(v, c), 3);
	before = pool_count_free(v, 0);
	for (uint32_t left = 2; left >= 1; left--) {
		assert_true(chunk_unref(v, c));
		assert_int_equal(chunk_refcount(v, c), left);
		assert_int_equal(pool_count_free(v, 0), before); /* still referenced */
	}
	assert_true(chunk_unref(v, c));
	assert_int_equal(chunk_refcount(v, c), 0);
	assert_int_equal(pool_count_free(v, 0), before + 1);
	assert_int_equal(pool_pop_mpmc(v, 0), c); /* it went on top */
}

static void test_pool_unref_at_zero_is_refused(void **state)
{
	const struct seg_view *v = view(state);
	_Atomic uint64_t *head = &v->hdr->pools[0].free_head;
	uint32_t c = pool_pop_mpmc(v, 0), never_loaned = pool_pop_mpmc(v, 0);
	uint32_t n = v->pool[0].n, *got = calloc(n, sizeof(*got));
	uint64_t h;

	assert_non_null(got);
	chunk_loan_init(v, c);
	assert_true(chunk_unref(v, c)); /* the real release */
	h = atomic_load(head);
	assert_false(chunk_unref(v, c)); /* a double release */
	assert_false(chunk_unref(v, never_loaned));
	/* Nothing pushed: the head word (tag included) did not move. */
	assert_int_equal(atomic_load(head), h);
	assert_int_equal(pool_count_free(v, 0), n - 1);
	assert_int_equal(chunk_refcount(v, c), 0);
	/* The list is intact: every free chunk exactly once, no cycle. */
	assert_int_equal(pop_all_distinct(v, 0, got), n - 1);
	free(got);
}

static void test_pool_pin_needs_generation_and_live_chunk(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t c = pool_pop_mpmc(v, 0), g, g2, free_before;

	g = chunk_loan_init(v, c);
	assert_true(chunk_pin(v, c, g));
	assert_int_equal(chunk_refcount(v, c), 2);
	assert_false(chunk_pin(v, c, g + 1));
	assert_false(chunk_pin(v, c, g - 1));
	assert_int_equal(chunk_refcount(v, c), 2); /* failed pins take nothing */
	assert_true(chunk_unref(v, c));
	assert_true(chunk_unref(v, c));
	free_before = pool_count_free(v, 0);
	/* Right generation, but dead: a pin must not resurrect a free chunk. */
	assert_false(chunk_pin(v, c, g));
	assert_int_equal(chunk_refcount(v, c), 0);
	assert_int_equal(pool_count_free(v, 0), free_before);
	assert_int_equal(pool_pop_mpmc(v, 0), c);
	g2 = chunk_loan_init(v, c);
	assert_false(chunk_pin(v, c, g)); /* alive again, but another sample */
	assert_true(chunk_pin(v, c, g2));
	assert_int_equal(chunk_refcount(v, c), 2);
}

static void test_pool_corrupt_head_index_returns_none(void **state)
{
	const struct seg_view *v = view(state);
	_Atomic uint64_t *head = &v->hdr->pools[1].free_head;
	uint64_t saved = atomic_load(head);
	/* Head words name local index + 1: all of these lie beyond class 1. */
	const uint64_t bad[] = {
		(5ull << 32) | (v->pool[1].n + 1), /* one past the class */
		(7ull << 32) | UINT32_MAX,
		(9ull << 32) | v->pool[0].n, /* would fit class 0, not class 1 */
	};

	assert_true(v->pool[0].n > v->pool[1].n);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		atomic_store(head, bad[i]);
		assert_int_equal(pool_pop_mpmc(v, 1), TAKT_NONE);
		assert_int_equal(pool_count_free(v, 1), 0);
		assert_int_equal(atomic_load(head), bad[i]); /* refused, not "fixed" */
	}
	assert_int_equal(pool_count_free(v, 0), v->pool[0].n); /* the other class is untouched */
	atomic_store(head, saved);
	assert_int_equal(pool_count_free(v, 1), v->pool[1].n);
}

static void test_pool_corrupt_next_link_is_cut(void **state)
{
	const struct seg_view *v = view(state);
	uint32_t first = v->pool[0].first, n = v->pool[0].n;

	/* Top of the fresh list is local 0; its link now points past the class. */
	atomic_store(&v->chunks[first].next, n + 5);
	assert_int_equal(pool_count_free(v, 0), 1); /* the walk stops at the bad link */
	assert_int_equal(pool_pop_mpmc(v, 0), first);
	/* The bad link was replaced by "end": the rest of the list is leaked,
	 * which is the price of never following a corrupted index. */
	assert_int_equal(atomic_load(&v->hdr->pools[0].free_head) & UINT32_MAX, 0);
	assert_int_equal(pool_pop_mpmc(v, 0), TAKT_NONE);
	assert_int_equal(pool_count_free(v, 0), 0);
}

/* ---- stress --------------------------------------------------------------- */

struct stress_worker {
	const struct seg_view *v;
	struct stress_shared *sh;
	uint32_t id;    /* 1.. */
	uint32_t pops;
	uint64_t errors; /* this worker's own count */
};

static void stress_error(struct stress_worker *w, const char *what, uint32_t c)
{
	/* Only the first few: a broken pool would flood the log. */
	if (w->errors++ < 5)
		fprintf(stderr, "pool stress worker %u: %s (chunk %u)\n", w->id, what, c);
	atomic_fetch_add_explicit(&w->sh->errors, 1, memory_order_relaxed);
}

/* Claims c for w. The owner flag is relaxed on purpose: happens-before
 * between successive owners must come from the pool's own F0/F1 pairing,
 * so TSan checks it through the plain payload stamp below. */
static void stress_take(struct stress_worker *w, uint32_t c, uint64_t stamp)
{
	uint32_t prev = atomic_exchange_explicit(&w->sh->owner[c], w->id, memory_order_relaxed);

	if (prev != 0)
		stress_error(w, "popped a chunk another worker owns", c);
	*(uint64_t *)seg_chunk_payload(w->v, c) = stamp;
}

static void stress_give(struct stress_worker *w, uint32_t c, uint64_t stamp)
{
	if (*(uint64_t *)seg_chunk_payload(w->v, c) != stamp)
		stress_error(w, "payload changed while owned", c);
	if (atomic_exchange_explicit(&w->sh->owner[c], 0, memory_order_relaxed) != w->id)
		stress_error(w, "owner flag changed while owned", c);
	pool_push_mpmc(w->v, c);
}

/* One cycle: pop 1..3 chunks, own them, push them back in a varying order
 * so the stack is reshuffled (a plain pop/push pair would leave it alone). */
static uint32_t stress_cycle(struct stress_worker *w, uint32_t i)
{
	uint32_t held[STRESS_MAX_HOLD], n = 1 + i % STRESS_MAX_HOLD;

	for (uint32_t j = 0; j < n; j++) {
		held[j] = pool_pop_mpmc(w->v, STRESS_CLASS);
		if (held[j] == TAKT_NONE || !seg_chunk_ok(w->v, held[j]) ||
		    seg_chunk_class(w->v, held[j]) != STRESS_CLASS) {
			/* At most 12 of 32 chunks are out: empty means one was lost. */
			stress_error(w, "pop returned none or a foreign index", held[j]);
			n = j;
			break;
		}
		stress_take(w, held[j], (uint64_t)w->id << 32 | i);
	}
	for (uint32_t j = 0; j < n; j++)
		stress_give(w, held[(i & 1) ? j : n - 1 - j], (uint64_t)w->id << 32 | i);
	return n;
}

static void *stress_run(void *arg)
{
	struct stress_worker *w = arg;
	uint32_t done = 0;

	atomic_fetch_add_explicit(&w->sh->ready, 1, memory_order_relaxed);
	/* acquire: pairs with the release that opens the start line. Yield so
	 * that, with more workers than cores, the late ones get to the line. */
	while (!atomic_load_explicit(&w->sh->go, memory_order_acquire))
		sched_yield();
	for (uint32_t i = 0; done < w->pops; i++)
		done += stress_cycle(w, i);
	return NULL;
}

/* After the workers: all owners clear, every chunk back exactly once. */
static void stress_check_end(const struct seg_view *v, struct stress_shared *sh)
{
	const struct seg_pool *p = &v->pool[STRESS_CLASS];
	uint32_t got[64];

	assert_int_equal(atomic_load(&sh->errors), 0);
	for (uint32_t c = p->first; c < p->first + p->n; c++)
		assert_int_equal(atomic_load(&sh->owner[c]), 0);
	assert_int_equal(pool_count_free(v, STRESS_CLASS), p->n);
	assert_int_equal(pop_all_distinct(v, STRESS_CLASS, got), p->n);
}

/* Opens the start line once n workers wait at it. */
static void stress_start(struct stress_shared *sh, uint32_t n)
{
	while (atomic_load_explicit(&sh->ready, memory_order_relaxed) < n)
		sched_yield();
	atomic_store_explicit(&sh->go, 1, memory_order_release);
}

static void test_pool_stress_threads_never_share_a_chunk(void **state)
{
	struct fixture *f = *state;
	struct stress_shared *sh = f->scratch;
	struct stress_worker w[STRESS_THREADS];
	pthread_t t[STRESS_THREADS];

	assert_true(f->v.pool[STRESS_CLASS].n > STRESS_THREADS * STRESS_MAX_HOLD);
	for (uint32_t i = 0; i < STRESS_THREADS; i++) {
		w[i] = (struct stress_worker){.v = &f->v, .sh = sh, .id = i + 1,
					      .pops = STRESS_POPS / FIXTURE_SCALE};
		assert_int_equal(pthread_create(&t[i], NULL, stress_run, &w[i]), 0);
	}
	stress_start(sh, STRESS_THREADS);
	for (uint32_t i = 0; i < STRESS_THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	stress_check_end(&f->v, sh);
}

static pid_t stress_fork(struct stress_worker *w)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	/* Child: no cmocka here, the result travels in the exit status. The
	 * alarm kills a child that a broken pool left spinning. */
	alarm(STRESS_TIMEOUT_S);
	stress_run(w);
	_exit(w->errors ? 1 : 0);
}

static void test_pool_stress_processes_never_share_a_chunk(void **state)
{
	struct fixture *f = *state;
	struct stress_shared *sh = f->scratch;
	pid_t pids[STRESS_PROCS];

	/* Runs under TSan too (the children start no threads), though TSan
	 * cannot see one process's accesses from another. */
	for (uint32_t i = 0; i < STRESS_PROCS; i++) {
		struct stress_worker w = {.v = &f->v, .sh = sh, .id = i + 1,
					  .pops = STRESS_POPS / FIXTURE_SCALE};

		pids[i] = stress_fork(&w);
		assert_true(pids[i] > 0);
	}
	stress_start(sh, STRESS_PROCS);
	assert_int_equal(fixture_wait_children(pids, STRESS_PROCS, STRESS_TIMEOUT_S + 5), 0);
	stress_check_end(&f->v, sh);
}

int main(void)
{
#define POOL_TEST(fn) cmocka_unit_test_setup_teardown(fn, pool_setup, pool_teardown)
	const struct CMUnitTest tests[] = {
		POOL_TEST(test_pool_pop_until_empty_returns_each_chunk_once),
		POOL_TEST(test_pool_push_pop_is_lifo),
		POOL_TEST(test_pool_count_free_is_exact),
		POOL_TEST(test_pool_loan_init_bumps_generation),
		POOL_TEST(test_pool_unref_frees_only_at_last_reference),
		POOL_TEST(test_pool_unref_at_zero_is_refused),
		POOL_TEST(test_pool_pin_needs_generation_and_live_chunk),
		POOL_TEST(test_pool_corrupt_head_index_returns_none),
		POOL_TEST(test_pool_corrupt_next_link_is_cut),
		POOL_TEST(test_pool_stress_threads_never_share_a_chunk),
		POOL_TEST(test_pool_stress_processes_never_share_a_chunk),
	};
	struct fixture probe;
	int r = fixture_init(&probe, &fixture_default);

	/* The whole suite needs anonymous shared memory; without it nothing runs. */
	if (r == -ENOMEM) {
		fprintf(stderr, "test_pool: cannot map anonymous shared memory: skipped\n");
		return 77;
	}
	if (r < 0) {
		fprintf(stderr, "test_pool: the fixture's segments do not validate (%d)\n", r);
		return 1;
	}
	fixture_destroy(&probe);
	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
