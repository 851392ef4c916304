/* test_ring.c - the SPSC receive ring of one connection (libipc/ring.c).
 *
 * Single-threaded cases pin the contract: FIFO, -ENOSPC at exactly the
 * capacity, -EAGAIN when empty, position-based readiness across wraparound
 * and against stale slots, the drop-oldest steal, and ring_wait_room's
 * timeout and close. Two cases stop the code at an exact instruction with a
 * write-protected page (see "fault injection") to force the races that a
 * stress run hits only by luck.
 *
 * Stress cases move millions of entries between a producer and a consumer
 * thread (and process) as a publisher and a subscriber do: chunks from the
 * producer's private pool (pool.h) go out through the sample ring and come
 * back through the return ring (T0), so the payload a consumer reads is
 * checked, TSan sees the R0/R1/T0 pairings through plain payload accesses,
 * and at the end every chunk is back in the pool exactly once.
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
#include <takt/ipc.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define RING_CONN 1  /* not 0: exercises the per-connection slot offset */
#define MS 1000000ull

static int ring_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f || fixture_init(f, &fixture_default) < 0) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int ring_teardown(void **state)
{
	fixture_destroy(*state);
	free(*state);
	return 0;
}

/* The fixture of the test running, for the words each end of RING_CONN
 * owns: PW the publisher's (in its pool), SW the subscriber's. */
static struct fixture *cur_f;
#define PW (fixture_pw(cur_f, RING_CONN))
#define SW (fixture_sw(cur_f, RING_CONN))

/* A connection of capacity cap whose consumer applies policy ov. */
static struct takt_conn *ring_open_ov(struct fixture *f, uint32_t cap, uint64_t start, struct ring_prod *p,
				      struct ring_cons *q, enum takt_overflow ov)
{
	struct takt_conn *c = fixture_conn_reset(f, RING_CONN, cap, start);
	struct takt_ring_slot *slots = fixture_ring(f, RING_CONN);

	cur_f = f;
	c->overflow = (uint32_t)ov;
	ring_prod_init(p, c, fixture_pw(f, RING_CONN), fixture_sw(f, RING_CONN), slots, cap - 1, cap);
	ring_cons_init(q, c, fixture_pw(f, RING_CONN), fixture_sw(f, RING_CONN), slots, cap - 1, (uint32_t)ov);
	return c;
}

/* Drop-oldest, the default policy. */
static struct takt_conn *ring_open(struct fixture *f, uint32_t cap, uint64_t start, struct ring_prod *p,
				   struct ring_cons *q)
{
	return ring_open_ov(f, cap, start, p, q, TAKT_OVERFLOW_DROP_OLDEST);
}

/* Every field derived from seq differently: a slot read that mixes two
 * pushes shows up as a mismatch. */
static struct ring_entry entry_for(uint64_t seq)
{
	return (struct ring_entry){.chunk = (uint32_t)seq ^ 0xc0ffeeu, .size = (uint32_t)(seq >> 1),
				   .seq = seq, .publish_ns = ~seq};
}

static void push_seq(struct ring_prod *p, uint64_t seq)
{
	struct ring_entry e = entry_for(seq);

	assert_int_equal(ring_push_spsc(p, &e), 0);
}

static void pop_expect(struct ring_cons *q, uint64_t seq)
{
	struct ring_entry e, want = entry_for(seq);

	assert_int_equal(ring_pop_shared(q, &e, UINT64_MAX), 0);
	assert_int_equal(e.seq, want.seq);
	assert_int_equal(e.chunk, want.chunk);
	assert_int_equal(e.size, want.size);
	assert_int_equal(e.publish_ns, want.publish_ns);
}

static void pop_expect_seq(struct ring_cons *q, uint64_t seq)
{
	struct ring_entry e;

	assert_int_equal(ring_pop_shared(q, &e, UINT64_MAX), 0);
	assert_int_equal(e.seq, seq);
}

static void expect_empty(struct ring_cons *q)
{
	struct ring_entry e = entry_for(1234), untouched = e;

	assert_int_equal(ring_pop_shared(q, &e, UINT64_MAX), -EAGAIN);
	assert_memory_equal(&e, &untouched, sizeof(e)); /* out is left alone */
	assert_false(ring_nonempty(q));
}

static void test_ring_fifo_order(void **state)
{
	struct ring_prod p;
	struct ring_cons q;

	ring_open(*state, 16, 0, &p, &q);
	for (uint64_t s = 0; s < 10; s++)
		push_seq(&p, 100 + s);
	assert_true(ring_nonempty(&q));
	for (uint64_t s = 0; s < 10; s++)
		pop_expect(&q, 100 + s);
	expect_empty(&q);
}

static void test_ring_full_at_exactly_capacity(void **state)
{
	const uint32_t caps[] = {1, 2, 8, 64};

	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		struct ring_entry e = entry_for(999);
		struct ring_prod p;
		struct ring_cons q;
		ring_open(*state, caps[i], 0, &p, &q);

		for (uint32_t s = 0; s < caps[i]; s++)
			push_seq(&p, s);
		assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
		assert_int_equal(atomic_load(&PW->head), caps[i]); /* the refused push wrote nothing */
		pop_expect(&q, 0);
		push_seq(&p, caps[i]); /* one pop, one slot */
		assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
		for (uint32_t s = 1; s <= caps[i]; s++)
			pop_expect(&q, s);
		expect_empty(&q);
	}
}

static void test_ring_empty_returns_eagain(void **state)
{
	struct ring_prod p;
	struct ring_cons q;

	ring_open(*state, 8, 0, &p, &q);
	expect_empty(&q);
	push_seq(&p, 7);
	pop_expect(&q, 7);
	expect_empty(&q);
}

/* Bursts of 1..cap entries, so head and tail cross the slot array at every
 * offset; starting near 2^40 shows only head - tail and pos matter. */
static void wrap_run(struct fixture *f, uint64_t start)
{
	const uint32_t cap = 8;
	struct ring_prod p;
	struct ring_cons q;
	ring_open(f, cap, start, &p, &q);
	uint64_t in = 0, out = 0;

	for (uint32_t round = 0; round < 1000; round++) {
		uint32_t burst = 1 + round % cap;

		for (uint32_t i = 0; i < burst; i++)
			push_seq(&p, in++);
		for (uint32_t i = 0; i < burst; i++)
			pop_expect(&q, out++);
	}
	expect_empty(&q);
	assert_true(in > 500 * cap);
	assert_int_equal(atomic_load(&PW->head), start + in);
	assert_int_equal(atomic_load(&SW->tail), 2 * (start + in)); /* ring.c: 2 x the position */
}

static void test_ring_wraps_by_position(void **state)
{
	wrap_run(*state, 0);
	wrap_run(*state, (1ull << 40) - 3);
	wrap_run(*state, (1ull << 62) - 5); /* floor holds 2 x a position: below 2^63 */
}

/* A pop with a cutoff leaves a newer entry queued, stores nothing (the
 * consumer's tail does not move), and takes it once the cutoff passes it;
 * under drop-oldest the producer can still take it back as usual. */
static void test_ring_cutoff_leaves_newer_entries_queued(void **state)
{
	static const enum takt_overflow ovs[] = {TAKT_OVERFLOW_DROP_OLDEST, TAKT_OVERFLOW_BLOCK,
						 TAKT_OVERFLOW_REJECT};

	for (size_t k = 0; k < sizeof(ovs) / sizeof(ovs[0]); k++) {
		struct ring_entry e, untouched;
		struct ring_prod p;
		struct ring_cons q;

		ring_open_ov(*state, 4, 0, &p, &q, ovs[k]);
		for (uint64_t s = 1; s <= 3; s++) {
			e = (struct ring_entry){.chunk = (uint32_t)s, .size = 8, .seq = s, .publish_ns = 1000 * s};
			assert_int_equal(ring_push_spsc(&p, &e), 0);
		}
		assert_int_equal(ring_pop_shared(&q, &e, 1500), 0);
		assert_int_equal(e.seq, 1);
		untouched = e;
		assert_int_equal(ring_pop_shared(&q, &e, 1500), -EAGAIN);
		assert_memory_equal(&e, &untouched, sizeof(e));
		assert_int_equal(atomic_load(&SW->tail), 2); /* seq 1 only (tail holds 2 x it) */
		assert_true(ring_nonempty(&q));
		if (ovs[k] == TAKT_OVERFLOW_DROP_OLDEST) {
			for (uint64_t s = 4; s <= 5; s++) {
				e = (struct ring_entry){.chunk = (uint32_t)s, .size = 8, .seq = s, .publish_ns = 1000 * s};
				assert_int_equal(ring_push_spsc(&p, &e), 0);
			}
			assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
			assert_int_equal(ring_steal_oldest(&p), 2); /* the held-back entry */
		}
		if (ovs[k] != TAKT_OVERFLOW_DROP_OLDEST) {
			assert_int_equal(ring_pop_shared(&q, &e, 2000), 0); /* at the cutoff: taken */
			assert_int_equal(e.seq, 2);
		}
		assert_int_equal(ring_pop_shared(&q, &e, 3000), 0);
		assert_int_equal(e.seq, 3);
		if (ovs[k] == TAKT_OVERFLOW_DROP_OLDEST) {
			assert_int_equal(ring_pop_shared(&q, &e, 3999), -EAGAIN);
			pop_expect_seq(&q, 4);
			pop_expect_seq(&q, 5);
		}
		expect_empty(&q);
	}
}

static void test_ring_steal_takes_the_oldest(void **state)
{
	struct ring_entry e = entry_for(99);
	struct ring_prod p;
	struct ring_cons q;
	ring_open(*state, 4, 0, &p, &q);

	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE); /* empty: nothing to steal */
	for (uint64_t s = 0; s < 3; s++)
		push_seq(&p, s);
	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE); /* room left: no steal */
	assert_int_equal(atomic_load(&SW->tail), 0);
	push_seq(&p, 3);
	assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
	assert_int_equal(ring_steal_oldest(&p), entry_for(0).chunk);
	/* R2: the producer marked the slot and raised its own floor; the
	 * consumer's tail is not its to write. */
	assert_int_equal(atomic_load(&q.slots[0].pos), 1 | RING_POS_TAKEN);
	assert_int_equal(atomic_load(&PW->floor), 1);
	assert_int_equal(atomic_load(&SW->tail), 0);
	push_seq(&p, 4); /* the stolen slot is reused at once */
	assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
	assert_int_equal(ring_steal_oldest(&p), entry_for(1).chunk);
	push_seq(&p, 5);
	for (uint64_t s = 2; s <= 5; s++)
		pop_expect(&q, s);
	expect_empty(&q);
}

/* R2, a claim before the consumer commits: the take waits for the
 * producer's verdict (in the slot's pos word) and, while there is none,
 * reports nothing ready without committing; each verdict then decides. */
static void test_ring_take_waits_for_the_producers_verdict(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct ring_entry e;
	ring_open(*state, 4, 0, &p, &q);

	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	pop_expect(&q, 0);
	atomic_store(&q.slots[1].pos, 2 | RING_POS_CLAIM); /* the producer claims position 1 */
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN);
	assert_int_equal(atomic_load(&SW->tail), 2 * 1); /* not announced */
	assert_false(ring_nonempty(&q));            /* its push will wake us */
	atomic_store(&q.slots[1].pos, 2);           /* verdict: given back */
	assert_true(ring_nonempty(&q));
	pop_expect(&q, 1);
	pop_expect(&q, 2);
	/* Again on position 3, and this time the producer keeps it. */
	atomic_store(&q.slots[3].pos, 4 | RING_POS_CLAIM);
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN);
	atomic_store(&q.slots[3].pos, 4 | RING_POS_TAKEN);
	assert_true(ring_nonempty(&q)); /* something may wait behind it: a pop looks */
	expect_empty(&q);
	assert_int_equal(atomic_load(&SW->tail), 2 * 4);
}

/* A producer that dies with its claim open gives no verdict; once the
 * broker has seen it leave and quiesce (pub_quiet) nobody else can own the
 * position, so the ring looks ready again (the broker wakes a parked
 * subscriber then) and the take completes instead of stalling for good. */
static void test_ring_open_claim_of_a_dead_producer_goes_to_the_consumer(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct ring_entry e;
	struct takt_conn *c = ring_open(*state, 4, 0, &p, &q);

	push_seq(&p, 0);
	push_seq(&p, 1);
	atomic_store(&q.slots[0].pos, 1 | RING_POS_CLAIM);
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN);
	assert_false(ring_nonempty(&q));
	assert_false(ring_drained(PW, SW, q.slots, q.mask));
	atomic_store_explicit(&c->state, SLOT_ORPHAN, memory_order_release);
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN); /* left, maybe not quiet yet */
	atomic_store_explicit(&c->pub_quiet, 1, memory_order_release);
	assert_true(ring_nonempty(&q));
	pop_expect(&q, 0);
	pop_expect(&q, 1);
	expect_empty(&q);
	assert_true(ring_drained(PW, SW, q.slots, q.mask));
}

/* A producer that died between marking an entry taken and raising its
 * floor leaves a TAKEN slot below newer entries: the broker must not take
 * the ring for drained (it would retire the connection under them), and the
 * consumer skips the mark. */
static void test_ring_taken_mark_below_newer_entries_is_not_drained(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	ring_open(*state, 4, 0, &p, &q);

	for (uint64_t s = 0; s < 3; s++)
		push_seq(&p, s);
	atomic_store(&q.slots[0].pos, 1 | RING_POS_TAKEN); /* floor still 0 */
	assert_false(ring_drained(PW, SW, q.slots, q.mask));
	assert_true(ring_nonempty(&q));
	pop_expect(&q, 1);
	pop_expect(&q, 2);
	expect_empty(&q);
	assert_true(ring_drained(PW, SW, q.slots, q.mask));
}

/* R2: a steal that finds the consumer deciding the oldest entry, or gives
 * it the verdict "yours", tells its caller to wake the consumer (nudge):
 * nothing may be pushed now, and the consumer may be parked waiting for
 * that verdict. */
static void test_ring_steal_meeting_a_deciding_consumer_nudges(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct ring_entry e = entry_for(99);
	ring_open(*state, 4, 0, &p, &q);

	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	atomic_store(&SW->tail, 2 * 0 + 1); /* the consumer announced it decides position 0 */
	p.nudge = false;
	assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE);
	assert_true(p.nudge);
	assert_int_equal(atomic_load(&q.slots[0].pos), 1); /* not claimed */
	atomic_store(&SW->tail, 0);
	p.nudge = false;
	assert_int_equal(ring_steal_oldest(&p), entry_for(0).chunk);
	assert_false(p.nudge);
}

/* A consumer far behind: the producer took back and refilled past it, so
 * its tail slot holds a later lap. It jumps to the producer's floor and
 * takes the newest `depth` entries, in order, each once. */
static void test_ring_lapped_consumer_jumps_to_the_floor(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	ring_open(*state, 4, 0, &p, &q);
	struct ring_entry e;

	for (uint64_t s = 0; s < 11; s++) {
		e = entry_for(s);
		while (ring_push_spsc(&p, &e) < 0)
			assert_int_not_equal(ring_steal_oldest(&p), TAKT_NONE);
	}
	assert_int_equal(atomic_load(&PW->floor), 7);
	assert_false(ring_drained(PW, SW, q.slots, q.mask));
	for (uint64_t s = 7; s < 11; s++)
		pop_expect(&q, s);
	expect_empty(&q);
	assert_true(ring_drained(PW, SW, q.slots, q.mask));
}

/* The broker zeroes a new connection's slots. These are worse than zero:
 * the pos words a previous connection (positions 1000..1007) left behind.
 * None equals t + 1 for the new connection, so none is taken. */
static void test_ring_stale_pos_from_previous_connection_not_taken(void **state)
{
	struct fixture *f = *state;
	struct takt_ring_slot *slots = fixture_ring(f, RING_CONN);
	struct ring_prod p;
	struct ring_cons q;

	ring_open(f, 8, 0, &p, &q);
	for (uint64_t pos = 1000; pos < 1008; pos++) {
		struct takt_ring_slot *s = &slots[pos & 7];

		atomic_store(&s->pos, pos + 1);
		atomic_store(&s->chunk, 5);
		atomic_store(&s->seq, pos);
	}
	expect_empty(&q);
	push_seq(&p, 0);
	pop_expect(&q, 0); /* a real push overwrites the stale pos */
	expect_empty(&q);  /* the next slot still holds a stale one */

	/* The same slots for a connection starting at 2^40: still not taken. */
	ring_open(f, 8, 1ull << 40, &p, &q);
	for (uint64_t pos = 0; pos < 8; pos++)
		atomic_store(&slots[pos].pos, pos + 1);
	expect_empty(&q);
}

static void test_ring_wait_room_times_out_when_full(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	ring_open(*state, 4, 0, &p, &q);
	uint64_t t0, waited;

	assert_int_equal(ring_wait_room(&p, takt_now_ns() + 1000 * MS), 0); /* room: no wait */
	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	t0 = takt_now_ns();
	assert_int_equal(ring_wait_room(&p, t0 + 50 * MS), -ETIMEDOUT);
	waited = takt_now_ns() - t0;
	assert_true(waited >= 50 * MS);
	assert_true(waited < 2000 * MS);
	assert_int_equal(atomic_load(&PW->waiting) & 1, 0); /* no stale announcement */
	assert_int_equal(ring_wait_room(&p, t0), -ETIMEDOUT);   /* deadline already past */
}

static void test_ring_wait_room_fails_when_closing(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct takt_conn *c = ring_open(*state, 4, 0, &p, &q);
	uint64_t t0;

	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	atomic_store(&c->state, SLOT_CLOSING);
	t0 = takt_now_ns();
	assert_int_equal(ring_wait_room(&p, t0 + 5000 * MS), -EPIPE);
	assert_true(takt_now_ns() - t0 < 1000 * MS); /* at once, not at the deadline */
	pop_expect(&q, 0); /* closing does not stop the consumer */
	assert_int_equal(ring_wait_room(&p, t0 + 5000 * MS), -EPIPE); /* even with room */
}

struct waiter {
	struct ring_prod *p;
	uint64_t deadline;
	int ret;
	uint64_t waited_ns;
};

static void *waiter_run(void *arg)
{
	struct waiter *w = arg;
	uint64_t t0 = takt_now_ns();

	w->ret = ring_wait_room(w->p, w->deadline);
	w->waited_ns = takt_now_ns() - t0;
	return NULL;
}

/* The broker's side of a close: a producer asleep on a full ring returns
 * -EPIPE long before its deadline. */
static void test_ring_close_wakes_blocked_producer(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct takt_conn *c = ring_open(*state, 2, 0, &p, &q);
	struct waiter w = {.p = &p, .deadline = takt_now_ns() + 10000 * MS};
	pthread_t t;

	push_seq(&p, 0);
	push_seq(&p, 1);
	assert_int_equal(pthread_create(&t, NULL, waiter_run, &w), 0);
	/* Give it time to fall asleep; the test holds without that, too. */
	for (int i = 0; i < 200 && !(atomic_load(&PW->waiting) & 1); i++)
		usleep(1000);
	usleep(20000);
	/* B1: the broker stores the state seq_cst, then wakes. */
	atomic_store_explicit(&c->state, SLOT_CLOSING, memory_order_seq_cst);
	ring_wake_producer_closed(SW);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.ret, -EPIPE);
	assert_true(w.waited_ns < 3000 * MS);
}

/* B0H, counted: a producer asleep on a full blocking ring of 8 is woken
 * by the take that frees half of it, not by the first: the consumer's
 * takes 1..3 wake nobody (its woken word stays), the 4th wakes it, and the
 * producer returns with room for 4. Then the same with a ring of 1 (half
 * of it rounds up to one take). A round in which the producer's slice
 * (10 ms) ended before the 4th take (this thread preempted that long: it
 * looks again, announcing anew) proves nothing and is run again. */
static int woken_at_half_round(struct fixture *f, uint32_t cap)
{
	uint32_t half = cap / 2 ? cap / 2 : 1, announced, woken0;
	struct ring_prod p;
	struct ring_cons q;
	struct waiter w;
	bool disturbed = false;
	pthread_t t;

	ring_open_ov(f, cap, 0, &p, &q, TAKT_OVERFLOW_BLOCK);
	for (uint64_t s = 0; s < cap; s++)
		push_seq(&p, s);
	w = (struct waiter){.p = &p, .deadline = takt_now_ns() + 30000 * MS};
	assert_int_equal(pthread_create(&t, NULL, waiter_run, &w), 0);
	/* until it announced (odd) and stored where it wants waking */
	for (int i = 0; i < 5000 && !(atomic_load(&PW->waiting) & 1); i++)
		usleep(1000);
	announced = atomic_load(&PW->waiting);
	assert_int_equal(announced & 1, 1);
	assert_int_equal(atomic_load(&PW->wake_at), half);
	woken0 = q.woken;
	assert_int_not_equal(woken0, announced);
	for (uint32_t i = 0; i < half; i++) {
		disturbed |= atomic_load(&PW->waiting) != announced;
		pop_expect(&q, i);
		/* nobody woken yet, or (the take of the half) the producer
		 * for its announcement */
		if (!disturbed)
			assert_int_equal(q.woken, i + 1 < half ? woken0 : announced);
	}
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(w.ret, 0);
	for (uint32_t i = 0; i < half; i++) /* room for half the ring */
		push_seq(&p, cap + i);
	assert_int_equal(ring_push_spsc(&p, &(struct ring_entry){.seq = 99}), -ENOSPC);
	return disturbed ? -EAGAIN : 0;
}

static void test_ring_blocked_producer_woken_at_half(void **state)
{
	static const uint32_t caps[] = {8, 1};

	for (unsigned k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
		int r = -EAGAIN;

		for (int tries = 0; tries < 20 && r == -EAGAIN; tries++)
			r = woken_at_half_round(*state, caps[k]);
		assert_int_equal(r, 0);
	}
}

/* ---- fault injection ------------------------------------------------------
 *
 * To stop a function at one exact instruction, the page holding the word it
 * writes next is made read-only: the write faults, the SIGSEGV handler makes
 * the page writable and runs the test's hook (the other side of the race)
 * at that instant, then returns; the write is retried and the function
 * carries on. The hooks only use lock-free atomics and futex syscalls,
 * which are safe in a signal handler.
 */
struct trap {
	uint8_t *page;
	size_t len;
	void (*hook)(void);
	int faults;
	struct sigaction old;
};

static struct trap trap;

static void trap_handler(int sig, siginfo_t *si, void *uc)
{
	uint8_t *a = si->si_addr;

	(void)uc;
	if (a < trap.page || a >= trap.page + trap.len) {
		/* Not ours: a real crash. Re-raise it with the default action. */
		sigaction(sig, &trap.old, NULL);
		return;
	}
	mprotect(trap.page, trap.len, PROT_READ | PROT_WRITE);
	trap.faults++;
	if (trap.hook)
		trap.hook();
}

/* Write-protects the page of addr; the next write to it runs hook. */
static void trap_arm(const void *addr, void (*hook)(void))
{
	struct sigaction sa = {.sa_sigaction = trap_handler, .sa_flags = SA_SIGINFO};
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	trap.page = (uint8_t *)((uintptr_t)addr & ~(uintptr_t)(pg - 1));
	trap.len = pg;
	trap.hook = hook;
	trap.faults = 0;
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGSEGV, &sa, &trap.old), 0);
	assert_int_equal(mprotect(trap.page, trap.len, PROT_READ), 0);
}

static void trap_disarm(void)
{
	mprotect(trap.page, trap.len, PROT_READ | PROT_WRITE);
	sigaction(SIGSEGV, &trap.old, NULL);
}

static int trap_unavailable(void)
{
	if (!FIXTURE_TSAN)
		return 0;
	/* The faulting CAS runs inside TSan's atomic interceptor, which holds
	 * TSan's lock on that word: the hook's atomics on the same word wait
	 * for it forever (seen: a deadlock in __tsan_atomic64_load). */
	print_message("skipped under TSan: page-fault injection deadlocks TSan's atomics\n");
	return 1;
}

/* What the hooks work on: file-scope because a signal handler has no
 * arguments. */
static struct {
	struct ring_prod *p;
	struct takt_conn *conn;
	uint32_t stolen;
	uint64_t tail_at_fault;
} at;

static void hook_producer_steals(void)
{
	at.tail_at_fault = atomic_load_explicit(&SW->tail, memory_order_relaxed);
	at.stolen = ring_steal_oldest(at.p);
}

/* R2: the consumer has read slot 0 and is at its committing CAS (the first
 * write to the tail's page) when a drop-oldest producer steals position 0.
 * The consumer's CAS must fail, its read of slot 0 be discarded, and the
 * pop return entry 1: position 0 belongs to the producer alone. */
static void test_ring_pop_losing_to_steal_takes_the_next_entry(void **state)
{
	struct ring_prod p;
	struct ring_cons q;

	if (trap_unavailable())
		skip();
	at.conn = ring_open(*state, 4, 0, &p, &q);
	at.p = &p;
	at.stolen = TAKT_NONE;
	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s); /* full, so the producer may steal */
	trap_arm(&SW->tail, hook_producer_steals);
	pop_expect(&q, 1);
	trap_disarm();
	assert_int_equal(trap.faults, 1);
	assert_int_equal(at.tail_at_fault, 0); /* the hook ran before the consumer committed */
	assert_int_equal(at.stolen, entry_for(0).chunk);
	assert_int_equal(atomic_load(&SW->tail), 2 * 2);
	pop_expect(&q, 2);
	pop_expect(&q, 3);
	expect_empty(&q);
}

static struct ring_cons *at_q;
static struct ring_entry at_taken;
static int at_pop;

static void hook_consumer_takes(void)
{
	at_pop = ring_pop_shared(at_q, &at_taken, UINT64_MAX);
}

/* R2, the other way: the producer is about to claim position 0 (its first
 * write to the connection's page) when the consumer takes it. The producer
 * then sees the consumer's tail, yields (TAKT_NONE: there is room now) and
 * leaves the floor where it was; the consumer keeps its sample. */
static void test_ring_steal_losing_to_pop_yields(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct ring_entry e = entry_for(99);

	if (trap_unavailable())
		skip();
	at.conn = ring_open(*state, 4, 0, &p, &q);
	at_q = &q;
	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC);
	trap_arm(&q.slots[0].pos, hook_consumer_takes);
	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE);
	trap_disarm();
	assert_int_equal(trap.faults, 1);
	assert_int_equal(at_pop, 0);
	assert_int_equal(at_taken.seq, entry_for(0).seq);
	assert_int_equal(atomic_load(&PW->floor), 0);
	assert_int_equal(atomic_load(&q.slots[0].pos), 1); /* given back */
	assert_true(p.nudge);                              /* and the consumer is woken */
	assert_int_equal(ring_push_spsc(&p, &e), 0); /* the room the consumer made */
	for (uint64_t s = 1; s < 4; s++)
		pop_expect(&q, s);
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), 0);
	assert_int_equal(e.seq, entry_for(99).seq);
}

static void hook_producer_claims(void)
{
	/* What ring_steal_oldest's claim stores, landing just before the
	 * consumer's commit: both sides will see each other. */
	atomic_store_explicit(&at_q->slots[1].pos, 2 | RING_POS_CLAIM, memory_order_seq_cst);
}

/* R2, the claim both sides saw: the consumer commits position 1 (its tail
 * store, trapped) just after the producer claimed it. The take waits for the
 * verdict and, while there is none, keeps its committed entry and reports
 * nothing ready; the verdict "given back" then hands it out. */
static void test_ring_commit_meeting_a_claim_waits_for_the_verdict(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	struct ring_entry e;

	if (trap_unavailable())
		skip();
	at.conn = ring_open(*state, 4, 0, &p, &q);
	at_q = &q;
	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	pop_expect(&q, 0);
	trap_arm(&SW->tail, hook_producer_claims);
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN);
	trap_disarm();
	assert_int_equal(trap.faults, 1);
	assert_int_equal(atomic_load(&SW->tail), 2 * 1 + 1); /* deciding position 1 */
	assert_false(ring_nonempty(&q));
	assert_int_equal(ring_pop_shared(&q, &e, UINT64_MAX), -EAGAIN);
	atomic_store(&q.slots[1].pos, 2); /* the producer saw the tail: given back */
	assert_true(ring_nonempty(&q));
	pop_expect(&q, 1);
	pop_expect(&q, 2);
	pop_expect(&q, 3);
	expect_empty(&q);
}

static void hook_broker_closes(void)
{
	/* What shm-broker/registry.c conn_retire does (B1: state seq_cst,
	 * then the wake), at the instant the producer is about to announce
	 * that it sleeps. */
	atomic_store_explicit(&at.conn->state, SLOT_CLOSING, memory_order_seq_cst);
	ring_wake_producer_closed(SW);
}

/* Regression (B1, fixed in a70fa56): ring_wait_room checked the state only
 * before announcing that it waits, so a close landing between that
 * check and the announcement was lost and the producer slept to its
 * deadline. Stopped exactly there, it must return -EPIPE at once. */
static void test_ring_wait_room_sees_close_between_check_and_announce(void **state)
{
	struct ring_prod p;
	struct ring_cons q;
	uint64_t t0, waited;
	int r;

	if (trap_unavailable())
		skip();
	at.conn = ring_open(*state, 2, 0, &p, &q);
	push_seq(&p, 0);
	push_seq(&p, 1);
	trap_arm(&PW->waiting, hook_broker_closes);
	t0 = takt_now_ns();
	r = ring_wait_room(&p, t0 + 1000 * MS);
	waited = takt_now_ns() - t0;
	trap_disarm();
	assert_int_equal(trap.faults, 1);
	assert_int_equal(r, -EPIPE);
	if (waited >= 500 * MS)
		fail_msg("close lost: ring_wait_room slept %.0f ms, to its deadline", (double)waited / 1e6);
	assert_int_equal(atomic_load(&PW->waiting) & 1, 0);
}

/* A consumer that corrupts its tail (beyond head, or onto a slot whose pos
 * the producer did not write for that position) must not make the producer
 * drop a reference it does not own. */
static void test_ring_steal_refuses_a_corrupted_tail(void **state)
{
	struct fixture *f = *state;
	struct ring_prod p;
	struct ring_cons q;
	ring_open(f, 4, 0, &p, &q);
	struct ring_entry e = entry_for(99);

	for (uint64_t s = 0; s < 4; s++)
		push_seq(&p, s);
	atomic_store(&SW->tail, 2 * 1000); /* beyond head */
	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE);
	assert_int_equal(ring_push_spsc(&p, &e), -ENOSPC); /* and no push over live slots */
	atomic_store(&SW->tail, 0);
	atomic_store(&fixture_ring(f, RING_CONN)[0].pos, 77); /* not 0 + 1 */
	assert_int_equal(ring_steal_oldest(&p), TAKT_NONE);
	assert_int_equal(atomic_load(&SW->tail), 0);
	atomic_store(&fixture_ring(f, RING_CONN)[0].pos, 1);
	assert_int_equal(ring_steal_oldest(&p), entry_for(0).chunk); /* intact again: steals */
}

/* ---- stress --------------------------------------------------------------- */

#define STRESS_ENTRIES 4000000ull /* per run, before FIXTURE_SCALE */
#define STRESS_TIMEOUT_S 60
#define STRESS_CAP 64
#define STRESS_STALL_NS (10000 * MS) /* no progress this long: a hang, fail */

enum stress_mode { STRESS_NO_OVERFLOW, STRESS_DROP_OLDEST };

/* One run's shared state; MAP_SHARED so the fork variant shares it too.
 * Each result field has one writer (producer or consumer); the checker
 * reads them after join/waitpid. */
struct stress {
	const struct seg_view *v;
	struct seg_pool pool;       /* the chunks, shared */
	struct pub_pool pp;         /* who holds them: the producer's alone */
	struct ring_prod p;
	struct ring_cons q;
	struct ret_prod rp;         /* consumer -> producer */
	struct ret_cons rc;
	_Atomic uint32_t consumer_done;
	enum stress_mode mode;
	uint64_t n;
	uint8_t *consumed, *stolen; /* per seq, drop-oldest runs only */
	_Atomic uint32_t ready, go, done;
	_Atomic uint32_t abort;     /* a side stalled: both stop */
	uint64_t n_consumed, n_stolen, n_produced;
	uint64_t p_errors, c_errors;
};

static void stress_fail(uint64_t *count, const char *side, const char *what, uint64_t seq)
{
	if ((*count)++ < 5)
		fprintf(stderr, "ring stress %s: %s (seq %llu)\n", side, what, (unsigned long long)seq);
}

/* Waiting for the other side, on its spins-th try since the last progress.
 * Short spins for the other core, then yield: with 2 cores and other load
 * the peer may not be running at all. Returns false once the run must
 * stop: the peer gave up, or nothing moved for STRESS_STALL_NS, so a broken
 * ring fails the test instead of hanging it. */
static bool stress_backoff(struct stress *st, uint32_t spins, uint64_t *idle_since, uint64_t *errors,
			   const char *side)
{
	if (spins > 32)
		sched_yield();
	if (spins == 0)
		*idle_since = takt_now_ns();
	else if ((spins & 255) == 0 && takt_now_ns() - *idle_since > STRESS_STALL_NS) {
		stress_fail(errors, side, "no progress for 10 s", 0);
		atomic_store_explicit(&st->abort, 1, memory_order_relaxed);
	}
	return !atomic_load_explicit(&st->abort, memory_order_relaxed);
}

static void stress_wait_go(struct stress *st)
{
	atomic_fetch_add_explicit(&st->ready, 1, memory_order_relaxed);
	/* acquire: pairs with stress_start's release. */
	while (!atomic_load_explicit(&st->go, memory_order_acquire))
		sched_yield();
}

static uint64_t *payload_word(const struct seg_pool *p, uint32_t c)
{
	return seg_chunk_payload(p, c);
}

/* The producer takes back what the consumer returned. */
static void stress_drain_returns(struct stress *st)
{
	uint32_t got[64];
	unsigned n;
	bool bad = false;

	while ((n = ret_pop(&st->rc, got, 64, &bad)) > 0)
		for (unsigned k = 0; k < n; k++)
			if (got[k] >= st->pool.n_max || !chunk_unref(&st->pp, got[k]))
				stress_fail(&st->p_errors, "producer", "bad or double return", got[k]);
	if (bad)
		stress_fail(&st->p_errors, "producer", "garbage return head", 0);
}

/* A drop-oldest producer's answer to a full ring: steal, account, retry.
 * false: nothing stolen (room appeared, or the consumer is deciding the
 * oldest entry right now: R2). */
static bool stress_steal(struct stress *st, uint64_t *last_stolen)
{
	uint32_t c = ring_steal_oldest(&st->p);
	uint64_t seq;

	if (c == TAKT_NONE)
		return false;
	if (c >= st->pool.n_max) {
		stress_fail(&st->p_errors, "producer", "stole an invalid chunk", c);
		return true;
	}
	seq = *payload_word(&st->pool, c); /* we wrote it; the consumer never writes */
	if (seq >= st->n || (*last_stolen != UINT64_MAX && seq <= *last_stolen))
		stress_fail(&st->p_errors, "producer", "stole out of order", seq);
	else
		st->stolen[seq] = 1;
	*last_stolen = seq;
	st->n_stolen++;
	chunk_unref(&st->pp, c);
	return true;
}

/* Loans a chunk, writes seq into its payload (plain: R0 must publish it),
 * pushes it; on a full ring waits or steals by mode. */
static void stress_produce_one(struct stress *st, uint64_t seq, uint64_t *last_stolen)
{
	struct ring_entry e;
	uint64_t idle_since = 0;
	uint32_t c = pub_pool_pop(&st->pp);

	for (uint32_t spins = 0; c == TAKT_NONE; spins++) { /* everything is out: wait for returns */
		stress_drain_returns(st);
		c = pub_pool_pop(&st->pp);
		if (c == TAKT_NONE && !stress_backoff(st, spins, &idle_since, &st->p_errors, "producer"))
			return;
	}
	chunk_loan_init(&st->pp, c);
	*payload_word(&st->pool, c) = seq;
	e = (struct ring_entry){.chunk = c, .size = (uint32_t)seq, .seq = seq, .publish_ns = ~seq};
	for (uint32_t spins = 0; ring_push_spsc(&st->p, &e) == -ENOSPC; spins++) {
		if (st->mode == STRESS_DROP_OLDEST && stress_steal(st, last_stolen)) {
			if (ring_push_spsc(&st->p, &e) != 0)
				stress_fail(&st->p_errors, "producer", "no room right after a steal", seq);
			break;
		}
		if (!stress_backoff(st, spins, &idle_since, &st->p_errors, "producer"))
			return;
	}
	st->n_produced++;
}

static void *stress_producer(void *arg)
{
	struct stress *st = arg;
	uint64_t last_stolen = UINT64_MAX;

	stress_wait_go(st);
	for (uint64_t seq = 0; seq < st->n && !atomic_load_explicit(&st->abort, memory_order_relaxed); seq++) {
		stress_produce_one(st, seq, &last_stolen);
		/* On a loaded machine the two sides may share one core: let
		 * the consumer run now and then, or a drop-oldest run would
		 * be all steals. */
		if ((seq & 4095) == 4095)
			sched_yield();
	}
	/* release: the consumer's acquire of done sees every push. */
	atomic_store_explicit(&st->done, 1, memory_order_release);
	/* Then everything comes back: the consumer returns all it took. */
	uint64_t idle_since = 0;

	for (uint32_t spins = 0;; spins++) {
		/* acquire: pairs with the consumer's release of consumer_done:
		 * its last return is in the ring. */
		uint32_t cdone = atomic_load_explicit(&st->consumer_done, memory_order_acquire);

		stress_drain_returns(st);
		if (cdone || atomic_load_explicit(&st->abort, memory_order_relaxed))
			break;
		if (!stress_backoff(st, spins, &idle_since, &st->p_errors, "producer"))
			break;
	}
	if (st->pp.n_free != st->pool.n_max)
		stress_fail(&st->p_errors, "producer", "chunks not back in the pool", st->pp.n_free);
	return NULL;
}

/* Checks one popped entry and releases its chunk, as a subscriber would. */
static void stress_check_entry(struct stress *st, const struct ring_entry *e, uint64_t *next)
{
	int bad_seq = st->mode == STRESS_NO_OVERFLOW ? e->seq != *next : e->seq < *next;

	if (bad_seq || e->seq >= st->n)
		stress_fail(&st->c_errors, "consumer", "out of order", e->seq);
	else if (e->size != (uint32_t)e->seq || e->publish_ns != ~e->seq || e->chunk >= st->pool.n_max)
		stress_fail(&st->c_errors, "consumer", "torn slot", e->seq);
	else if (*payload_word(&st->pool, e->chunk) != e->seq)
		stress_fail(&st->c_errors, "consumer", "chunk payload wrong", e->seq);
	else {
		if (st->consumed)
			st->consumed[e->seq] = 1;
		*next = e->seq + 1;
		st->n_consumed++;
		/* the return ring holds every chunk the pool has: never full */
		if (ret_push(&st->rp, e->chunk) != 0)
			stress_fail(&st->c_errors, "consumer", "return ring full", e->seq);
	}
}

/* Now and then the consumer lets the producer fill the ring (bounded), so
 * a drop-oldest run always has steals racing our pops, however the two
 * sides happen to be scheduled. */
static void stress_fall_behind(struct stress *st)
{
	for (int i = 0; i < 1000 && !atomic_load_explicit(&st->done, memory_order_relaxed); i++) {
		/* relaxed: a hint; the pops that follow synchronise properly. */
		uint64_t h = atomic_load_explicit(&st->q.pw->head, memory_order_relaxed);
		uint64_t t = atomic_load_explicit(&st->q.sw->tail, memory_order_relaxed) / 2;

		if (h - t > st->q.mask)
			return;
		sched_yield();
	}
}

static void *stress_consumer(void *arg)
{
	struct stress *st = arg;
	struct ring_entry e;
	uint64_t next = 0, idle_since = 0;
	uint32_t spins = 0;

	stress_wait_go(st);
	for (;;) {
		/* acquire: pairs with the producer's release of done. Loaded
		 * before the pop: if set, every push and steal is behind us, so
		 * -EAGAIN from this pop means empty for good. */
		uint32_t done = atomic_load_explicit(&st->done, memory_order_acquire);

		if (ring_pop_shared(&st->q, &e, UINT64_MAX) == 0) {
			stress_check_entry(st, &e, &next);
			spins = 0;
			if ((st->n_consumed & 4095) == 0)
				stress_fall_behind(st);
			continue;
		}
		if (done || !stress_backoff(st, spins++, &idle_since, &st->c_errors, "consumer"))
			break;
	}
	/* release: our returns happen before the producer's last drain. */
	atomic_store_explicit(&st->consumer_done, 1, memory_order_release);
	return NULL;
}

static struct stress *stress_new(struct fixture *f, enum stress_mode mode, uint64_t n)
{
	struct stress *st = fixture_map_shared(sizeof(*st));

	assert_non_null(st);
	st->v = &f->v;
	st->pool = f->pool;
	st->mode = mode;
	st->n = n;
	assert_int_equal(pub_pool_init(&st->pp, &f->pool), 0);
	pub_pool_grow(&st->pp, f->pool.n_max);
	if (mode == STRESS_DROP_OLDEST) {
		st->consumed = fixture_map_shared(n);
		st->stolen = fixture_map_shared(n);
		assert_non_null(st->consumed);
		assert_non_null(st->stolen);
	}
	/* A lossless run's consumer commits as a reject subscriber does (a
	 * release store); a drop-oldest run's with the R2 handshake. */
	ring_open_ov(f, STRESS_CAP, 0, &st->p, &st->q,
		     mode == STRESS_DROP_OLDEST ? TAKT_OVERFLOW_DROP_OLDEST : TAKT_OVERFLOW_REJECT);
	ret_prod_init(&st->rp, fixture_sw(f, RING_CONN), fixture_pw(f, RING_CONN), fixture_rets(f, RING_CONN),
		      f->v.ret_slots - 1);
	ret_cons_init(&st->rc, fixture_pw(f, RING_CONN), fixture_sw(f, RING_CONN), fixture_rets(f, RING_CONN),
		      f->v.ret_slots - 1);
	return st;
}

static void stress_free(struct stress *st)
{
	pub_pool_destroy(&st->pp);
	if (st->mode == STRESS_DROP_OLDEST) {
		fixture_unmap(st->consumed, st->n);
		fixture_unmap(st->stolen, st->n);
	}
	fixture_unmap(st, sizeof(*st));
}

static void stress_start(struct stress *st)
{
	while (atomic_load_explicit(&st->ready, memory_order_relaxed) < 2)
		sched_yield();
	atomic_store_explicit(&st->go, 1, memory_order_release);
}

/* After both sides stopped: every entry accounted for exactly once, every
 * chunk back in the pool. */
static void stress_check_end(struct stress *st)
{
	assert_int_equal(st->p_errors, 0);
	assert_int_equal(st->c_errors, 0);
	assert_int_equal(st->n_produced, st->n);
	assert_int_equal(st->n_consumed + st->n_stolen, st->n);
	if (st->mode == STRESS_NO_OVERFLOW) {
		assert_int_equal(st->n_stolen, 0);
		return;
	}
	for (uint64_t s = 0; s < st->n; s++)
		if (st->consumed[s] + st->stolen[s] != 1)
			fail_msg("seq %llu consumed %u times, stolen %u times", (unsigned long long)s,
				 st->consumed[s], st->stolen[s]);
	/* Both outcomes must have happened, or the race was not exercised. */
	assert_true(st->n_stolen > 0);
	assert_true(st->n_consumed > 0);
	print_message("%llu consumed, %llu stolen\n", (unsigned long long)st->n_consumed,
		      (unsigned long long)st->n_stolen);
}

static void stress_threads(struct fixture *f, enum stress_mode mode)
{
	struct stress *st = stress_new(f, mode, STRESS_ENTRIES / FIXTURE_SCALE);
	pthread_t prod, cons;

	assert_int_equal(pthread_create(&prod, NULL, stress_producer, st), 0);
	assert_int_equal(pthread_create(&cons, NULL, stress_consumer, st), 0);
	stress_start(st);
	assert_int_equal(pthread_join(prod, NULL), 0);
	assert_int_equal(pthread_join(cons, NULL), 0);
	stress_check_end(st);
	stress_free(st);
}

static void test_ring_stress_threads_keep_order(void **state)
{
	stress_threads(*state, STRESS_NO_OVERFLOW);
}

static void test_ring_stress_threads_drop_oldest_accounts_for_all(void **state)
{
	stress_threads(*state, STRESS_DROP_OLDEST);
}

static pid_t stress_fork(struct stress *st, void *(*fn)(void *))
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	/* Child: results travel in *st (shared) and the exit status. The
	 * alarm kills a child a broken ring left spinning. */
	alarm(STRESS_TIMEOUT_S);
	fn(st);
	_exit(st->p_errors || st->c_errors ? 1 : 0);
}

static void test_ring_stress_processes_drop_oldest_accounts_for_all(void **state)
{
	struct stress *st;
	pid_t pids[2];

	/* Runs under TSan too (the children start no threads), though TSan
	 * cannot see one process's accesses from another. */
	st = stress_new(*state, STRESS_DROP_OLDEST, STRESS_ENTRIES / 2 / FIXTURE_SCALE);
	pids[0] = stress_fork(st, stress_producer);
	assert_true(pids[0] > 0);
	pids[1] = stress_fork(st, stress_consumer);
	assert_true(pids[1] > 0);
	stress_start(st);
	assert_int_equal(fixture_wait_children(pids, 2, STRESS_TIMEOUT_S + 5), 0);
	stress_check_end(st);
	stress_free(st);
}

/* ---- blocking producer ------------------------------------------------------ */

#define BLOCK_ENTRIES 2000u

struct blocker {
	struct ring_prod *p;
	uint32_t n;
	_Atomic uint32_t done;
	uint32_t waits, errors;
	uint32_t slice_waits;    /* waits as long as a slice: a wake-up that did not come */
	uint64_t max_wait_ns;
};

static void *blocker_run(void *arg)
{
	struct blocker *b = arg;

	for (uint32_t s = 0; s < b->n; s++) {
		struct ring_entry e = entry_for(s);

		while (ring_push_spsc(b->p, &e) == -ENOSPC) {
			uint64_t t0 = takt_now_ns(), waited;
			/* A lost wake-up sleeps to the end of its slice (10 ms)
			 * and finds the room then. */
			int r = ring_wait_room(b->p, t0 + 3000 * MS);

			waited = takt_now_ns() - t0;
			b->waits++;
			b->slice_waits += waited >= 5 * MS;
			if (waited > b->max_wait_ns)
				b->max_wait_ns = waited;
			if (r != 0) {
				fprintf(stderr, "ring_wait_room: %s at seq %u\n", strerror(-r), s);
				b->errors++;
				goto out;
			}
		}
	}
out:
	atomic_store_explicit(&b->done, 1, memory_order_release);
	return NULL;
}

/* Waits until the producer refilled the ring up to want_head and announced
 * that it sleeps (B0): 1; or finished: 0. A producer whose wake-up was lost
 * never refills: -ETIMEDOUT after 2 s (a round takes well under 1 ms). */
static int consumer_await_sleeper(struct takt_conn *c, struct blocker *b, uint64_t want_head)
{
	uint64_t give_up = takt_now_ns() + 2000 * MS;

	(void)c; /* its words are the fixture's PW and SW */
	while (atomic_load_explicit(&PW->head, memory_order_relaxed) < want_head ||
	       !(atomic_load_explicit(&PW->waiting, memory_order_seq_cst) & 1)) {
		if (atomic_load_explicit(&b->done, memory_order_acquire))
			return 0;
		if (takt_now_ns() > give_up)
			return -ETIMEDOUT;
		usleep(20);
	}
	return 1;
}

static bool pop_matches(struct ring_cons *q, uint64_t seq)
{
	struct ring_entry e, want = entry_for(seq);

	return ring_pop_shared(q, &e, UINT64_MAX) == 0 && e.seq == want.seq && e.chunk == want.chunk &&
	       e.size == want.size && e.publish_ns == want.publish_ns;
}

/* Lockstep: the consumer takes half the ring (B0H: what the producer sleeps
 * for) only once the producer has filled it and sleeps (or is about to) in
 * ring_wait_room, so every round's last pop must wake it through the
 * futex; a lost wake-up costs the producer a whole slice. */
static void test_ring_blocking_producer_wakes_on_pop(void **state)
{
	const uint32_t cap = 8;
	struct ring_prod p;
	struct ring_cons q;
	struct takt_conn *c = ring_open_ov(*state, cap, 0, &p, &q, TAKT_OVERFLOW_BLOCK);
	struct blocker b = {.p = &p, .n = BLOCK_ENTRIES / (FIXTURE_TSAN ? 4 : 1)};
	uint32_t got = 0, rounds = 0, half = cap / 2;
	const char *failure = NULL;
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, blocker_run, &b), 0);
	while (got < b.n && !failure) {
		int r = consumer_await_sleeper(c, &b, got + cap);

		if (r < 0)
			failure = "the producer did not refill the ring: wake-up lost";
		for (uint32_t i = 0; i < half && !failure && got < b.n; i++) {
			if (!pop_matches(&q, got))
				failure = "entry missing or out of order";
			else
				got++;
		}
		rounds += r > 0;
	}
	/* No assertion before the producer is joined: teardown unmaps the
	 * ring under it. Closing releases it if it still waits. */
	atomic_store_explicit(&c->state, SLOT_CLOSING, memory_order_seq_cst);
	ring_wake_producer_closed(SW);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (failure)
		fail_msg("%s (after %u of %u entries)", failure, got, b.n);
	expect_empty(&q);
	assert_int_equal(b.errors, 0);
	assert_true(rounds >= (b.n - cap) / half - 1); /* every round but the drain woke a sleeper */
	assert_true(b.max_wait_ns < 1000 * MS);
	print_message("%u rounds, %u waits, longest %.3f ms, %u as long as a slice\n", rounds, b.waits,
		      (double)b.max_wait_ns / 1e6, b.slice_waits);
	/* Woken by the takes, not by its slices: with the wake-up gone every
	 * wait lasts a slice (10 ms); a round here takes well under 1 ms, so
	 * even a loaded machine or a sanitizer leaves most far below 5 ms. */
	assert_true(b.slice_waits * 2 < b.waits);
}

int main(void)
{
#define RING_TEST(fn) cmocka_unit_test_setup_teardown(fn, ring_setup, ring_teardown)
	const struct CMUnitTest tests[] = {
		RING_TEST(test_ring_fifo_order),
		RING_TEST(test_ring_full_at_exactly_capacity),
		RING_TEST(test_ring_empty_returns_eagain),
		RING_TEST(test_ring_wraps_by_position),
		RING_TEST(test_ring_cutoff_leaves_newer_entries_queued),
		RING_TEST(test_ring_steal_takes_the_oldest),
		RING_TEST(test_ring_take_waits_for_the_producers_verdict),
		RING_TEST(test_ring_open_claim_of_a_dead_producer_goes_to_the_consumer),
		RING_TEST(test_ring_lapped_consumer_jumps_to_the_floor),
		RING_TEST(test_ring_steal_losing_to_pop_yields),
		RING_TEST(test_ring_taken_mark_below_newer_entries_is_not_drained),
		RING_TEST(test_ring_steal_meeting_a_deciding_consumer_nudges),
		RING_TEST(test_ring_commit_meeting_a_claim_waits_for_the_verdict),
		RING_TEST(test_ring_stale_pos_from_previous_connection_not_taken),
		RING_TEST(test_ring_wait_room_times_out_when_full),
		RING_TEST(test_ring_wait_room_fails_when_closing),
		RING_TEST(test_ring_blocked_producer_woken_at_half),
		RING_TEST(test_ring_close_wakes_blocked_producer),
		RING_TEST(test_ring_pop_losing_to_steal_takes_the_next_entry),
		RING_TEST(test_ring_wait_room_sees_close_between_check_and_announce),
		RING_TEST(test_ring_steal_refuses_a_corrupted_tail),
		RING_TEST(test_ring_stress_threads_keep_order),
		RING_TEST(test_ring_stress_threads_drop_oldest_accounts_for_all),
		RING_TEST(test_ring_stress_processes_drop_oldest_accounts_for_all),
		RING_TEST(test_ring_blocking_producer_wakes_on_pop),
	};
	struct fixture probe;
	int r = fixture_init(&probe, &fixture_default);

	if (r == -ENOMEM) {
		fprintf(stderr, "test_ring: cannot map anonymous shared memory: skipped\n");
		return 77;
	}
	if (r < 0) {
		fprintf(stderr, "test_ring: the fixture's segments do not validate (%d)\n", r);
		return 1;
	}
	fixture_destroy(&probe);
	return cmocka_run_group_tests_name("ring", tests, NULL, NULL);
}
