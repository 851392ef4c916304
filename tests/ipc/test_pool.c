/* test_pool.c - a publisher's private pool (libipc/pool.c) and the return
 * ring (libipc/ring.c, T0).
 *
 * The pool: chunks are adopted as the broker reserves them, loaned in a
 * new generation, handed over to n holders, freed at the last reference
 * only, never twice; a pin needs the right generation and a live chunk.
 * The return ring: FIFO, full at exactly its capacity, and garbage written
 * by a hostile subscriber (a head behind the tail or more than a ring
 * ahead) is refused, not followed. A thread stress races the agent's pins
 * against the publishing thread's unrefs (C0/C1) under TSan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "fixture.h"
#include "pool.h"
#include "ring.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define CONN 2

static int pool_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || fixture_init(f, &fixture_default) < 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int pool_teardown(void **state)
{
	fixture_destroy(*state);
	free(*state);
	return 0;
}

/* As a publisher with history opens it (the agent may pin: C0 by CAS). */
static void pool_open(struct fixture *f, struct pub_pool *p, uint32_t adopt)
{
	assert_int_equal(pub_pool_init(p, &f->pool), 0);
	p->pinned = true;
	pub_pool_grow(p, adopt);
}

static void test_pool_grow_adopts_each_chunk_once(void **state)
{
	struct fixture *f = *state;
	struct pub_pool p;
	uint8_t seen[256] = {0};
	uint32_t c, n = 0;

	pool_open(f, &p, 10);
	pub_pool_grow(&p, 10); /* again: nothing new */
	pub_pool_grow(&p, 40);
	pub_pool_grow(&p, 1u << 30); /* beyond the segment: capped */
	while ((c = pub_pool_pop(&p)) != TAKT_NONE) {
		assert_true(c < f->pool.n_max);
		assert_int_equal(seen[c]++, 0);
		n++;
	}
	assert_int_equal(n, f->pool.n_max);
	assert_int_equal(p.n_have, f->pool.n_max);
	pub_pool_destroy(&p);
}

static void loan_hand_over_and_last_unref_frees(struct fixture *f, bool pinned)
{
	struct pub_pool p;
	uint32_t c, gen;

	pool_open(f, &p, 4);
	p.pinned = pinned;
	c = pub_pool_pop(&p);
	gen = chunk_loan_init(&p, c);
	assert_true(gen != 0);
	assert_int_equal(chunk_refcount(&p, c), 1);
	chunk_hand_over(&p, c, gen, 3); /* three connections */
	assert_int_equal(chunk_refcount(&p, c), 3);
	assert_true(chunk_unref(&p, c));
	assert_true(chunk_unref(&p, c));
	assert_int_equal(p.n_free, 3); /* still out */
	assert_true(chunk_unref(&p, c));
	assert_int_equal(p.n_free, 4); /* back */
	assert_false(chunk_unref(&p, c)); /* a double release changes nothing */
	assert_int_equal(p.n_free, 4);
	assert_int_equal(chunk_loan_init(&p, pub_pool_pop(&p)) , gen + 1); /* LIFO: the same chunk, next generation */
	pub_pool_destroy(&p);
}

static void test_pool_loan_hand_over_and_last_unref_frees(void **state)
{
	loan_hand_over_and_last_unref_frees(*state, true);
}

/* Without history nobody pins: the publishing thread counts alone, by
 * plain stores, with the same results. */
static void test_pool_unpinned_counts_the_same(void **state)
{
	loan_hand_over_and_last_unref_frees(*state, false);
}

static void test_pool_generation_skips_zero(void **state)
{
	struct pub_pool p;
	uint32_t c;

	pool_open(*state, &p, 1);
	c = pub_pool_pop(&p);
	atomic_store(&p.meta[c], (uint64_t)UINT32_MAX << 32); /* the last generation, free */
	/* Generation 0 means "empty history entry": the wrap skips it. */
	assert_int_equal(chunk_loan_init(&p, c), 1);
	pub_pool_destroy(&p);
}

static void test_pool_pin_needs_generation_and_live_chunk(void **state)
{
	struct pub_pool p;
	uint32_t c, gen;

	pool_open(*state, &p, 2);
	c = pub_pool_pop(&p);
	gen = chunk_loan_init(&p, c);
	assert_false(chunk_pin(&p, c, gen + 1)); /* another generation */
	assert_true(chunk_pin(&p, c, gen));
	assert_int_equal(chunk_refcount(&p, c), 2);
	assert_true(chunk_unref(&p, c));
	assert_true(chunk_unref(&p, c)); /* free now */
	assert_false(chunk_pin(&p, c, gen)); /* a free chunk is never pinned */
	assert_false(chunk_pin(&p, 1, 0));   /* never loaned */
	pub_pool_destroy(&p);
}

/* ---- the return ring ------------------------------------------------------- */

static void ret_open(struct fixture *f, struct ret_prod *rp, struct ret_cons *rc)
{
	struct takt_conn *c = fixture_conn_reset(f, CONN, 16, 0);

	ret_prod_init(rp, fixture_sw(f, CONN), fixture_pw(f, CONN), fixture_rets(f, CONN), c->ret_mask);
	ret_cons_init(rc, fixture_pw(f, CONN), fixture_sw(f, CONN), fixture_rets(f, CONN), c->ret_mask);
}

static void test_ret_fifo_and_full_at_capacity(void **state)
{
	struct fixture *f = *state;
	struct ret_prod rp;
	struct ret_cons rc;
	uint32_t got[512];
	bool bad = false;
	uint32_t cap = f->v.ret_slots;

	ret_open(f, &rp, &rc);
	assert_false(ret_pending(&rc));
	for (uint32_t i = 0; i < cap; i++)
		assert_int_equal(ret_push(&rp, i * 3), 0);
	assert_int_equal(ret_push(&rp, 99), -ENOSPC); /* exactly full */
	assert_true(ret_pending(&rc));
	assert_int_equal(ret_pop(&rc, got, 5, &bad), 5);
	for (uint32_t i = 0; i < 5; i++)
		assert_int_equal(got[i], i * 3);
	assert_int_equal(ret_push(&rp, 1000), 0); /* room again */
	assert_int_equal(ret_pop(&rc, got, 512, &bad), cap - 5 + 1);
	assert_int_equal(got[cap - 5], 1000);
	assert_false(bad);
	assert_false(ret_pending(&rc));
}

/* A subscriber writes garbage into its ret_head: the publisher takes
 * nothing from it and says so, instead of reading slots that were never
 * written or a ring's worth again. */
static void test_ret_garbage_head_is_refused(void **state)
{
	struct fixture *f = *state;
	struct ret_prod rp;
	struct ret_cons rc;
	uint32_t got[8];
	bool bad = false;

	ret_open(f, &rp, &rc);
	assert_int_equal(ret_push(&rp, 7), 0);
	assert_int_equal(ret_pop(&rc, got, 8, &bad), 1);
	atomic_store(&rp.sw->ret_head, 0); /* behind the tail */
	assert_int_equal(ret_pop(&rc, got, 8, &bad), 0);
	assert_true(bad);
	bad = false;
	atomic_store(&rp.sw->ret_head, 1 + (uint64_t)f->v.ret_slots + 1); /* beyond a ring */
	assert_int_equal(ret_pop(&rc, got, 8, &bad), 0);
	assert_true(bad);
}

/* ---- pins against unrefs (C0/C1), threads ------------------------------------ */

struct pinrace {
	struct pub_pool p;
	_Atomic uint64_t entry; /* like a history entry: gen << 32 | chunk, 0 none */
	_Atomic int stop;
	uint64_t pins, loans;
	int errors;
};

/* The agent: pins whatever the entry names and gives each pin back by
 * handing it to the publishing thread (here: counting it, released below
 * by the publisher via `owed`). */
static _Atomic uint64_t owed;

static void *pinner(void *a)
{
	struct pinrace *r = a;

	while (!atomic_load(&r->stop)) {
		/* acquire: pairs with the publisher's release of the entry */
		uint64_t w = atomic_load_explicit(&r->entry, memory_order_acquire);
		uint32_t c = (uint32_t)w;

		if (!w || !chunk_pin(&r->p, c, (uint32_t)(w >> 32)))
			continue;
		/* Pinned: the chunk is ours until the publisher drops it. Its
		 * payload must be the generation we pinned. */
		if (*(uint64_t *)seg_chunk_payload(&r->p.seg, c) != w)
			r->errors++;
		r->pins++;
		atomic_fetch_add(&owed, (uint64_t)1 << 32 | c); /* hand it back (one at a time) */
		while (atomic_load(&owed) && !atomic_load(&r->stop))
			sched_yield();
	}
	return NULL;
}

static void test_pool_pin_races_unref(void **state)
{
	struct pinrace *r = calloc(1, sizeof(*r));
	pthread_t t;
	uint32_t n = 20000 / FIXTURE_SCALE;

	pool_open(*state, &r->p, 8);
	atomic_store(&owed, 0);
	assert_int_equal(pthread_create(&t, NULL, pinner, r), 0);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t c = pub_pool_pop(&r->p), gen;
		uint64_t w, o;

		assert_true(c != TAKT_NONE);
		gen = chunk_loan_init(&r->p, c);
		w = (uint64_t)gen << 32 | c;
		*(uint64_t *)seg_chunk_payload(&r->p.seg, c) = w;
		/* Like history: the entry names it while it has a reference. */
		atomic_store_explicit(&r->entry, w, memory_order_release);
		sched_yield();
		/* Evict: the entry goes, then its reference. */
		atomic_store_explicit(&r->entry, 0, memory_order_release);
		assert_true(chunk_unref(&r->p, c));
		o = atomic_exchange(&owed, 0);
		if (o)
			assert_true(chunk_unref(&r->p, (uint32_t)o)); /* the pinner's reference */
		r->loans++;
	}
	atomic_store(&r->stop, 1);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (atomic_load(&owed))
		assert_true(chunk_unref(&r->p, (uint32_t)atomic_load(&owed)));
	assert_int_equal(r->errors, 0);
	assert_int_equal(r->p.n_free, 8); /* every chunk back exactly once */
	print_message("%llu loans, %llu pinned\n", (unsigned long long)r->loans, (unsigned long long)r->pins);
	pub_pool_destroy(&r->p);
	free(r);
}

/* Chunks are payload only (no header line), in whole cache lines, each on
 * its own. A pointer maps back to its chunk only at a chunk's start. */
static void test_pool_chunk_stride_is_payload_in_lines(void **state)
{
	static const uint64_t want[][2] = {
		{0, 64}, {1, 64}, {8, 64}, {64, 64}, {65, 128}, {100, 128}, {4096, 4096}, {4097, 4160},
	};
	struct seg_pool sp = {.chunk_off = 4096, .stride = 64, .n_max = 8};
	uint8_t *base = (uint8_t *)0x100000;

	(void)state;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		uint64_t s = layout_chunk_stride(want[i][0]);

		assert_int_equal(s, want[i][1]);
	}
	sp.base = base;
	sp.size = sp.chunk_off + sp.stride * sp.n_max;
	assert_ptr_equal(seg_chunk_payload(&sp, 3), base + 4096 + 192);
	assert_int_equal(seg_chunk_of(&sp, base + 4096 + 192), 3);
	assert_int_equal(seg_chunk_of(&sp, base + 4096 + 200), TAKT_NONE);  /* inside a chunk */
	assert_int_equal(seg_chunk_of(&sp, base + 4096 + 512), TAKT_NONE);  /* past n_max */
	assert_int_equal(seg_chunk_of(&sp, base + 4096 - 64), TAKT_NONE);   /* before the chunks */
}

#define POOL_TEST(fn) cmocka_unit_test_setup_teardown(fn, pool_setup, pool_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		POOL_TEST(test_pool_grow_adopts_each_chunk_once),
		cmocka_unit_test(test_pool_chunk_stride_is_payload_in_lines),
		POOL_TEST(test_pool_loan_hand_over_and_last_unref_frees),
		POOL_TEST(test_pool_unpinned_counts_the_same),
		POOL_TEST(test_pool_generation_skips_zero),
		POOL_TEST(test_pool_pin_needs_generation_and_live_chunk),
		POOL_TEST(test_ret_fifo_and_full_at_capacity),
		POOL_TEST(test_ret_garbage_head_is_refused),
		POOL_TEST(test_pool_pin_races_unref),
	};

	return cmocka_run_group_tests_name("pool", tests, NULL, NULL);
}
