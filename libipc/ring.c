/* ring.c - SPSC receive ring with a producer-side drop-oldest steal.
 *
 * Indices: head and tail are 64-bit counters that only grow; a slot is
 * counter & mask, and head - tail is the fill level even across wraparound
 * of the slot index (the counters themselves would take centuries to wrap).
 *
 * Pairings (P = producer/publisher process, C = consumer/subscriber process):
 *   R0  P: slot store (relaxed), then head store (release)
 *       C: head load (acquire), then slot load            -> sees the slot
 *   R1  C: slot load, then tail CAS (seq_cst, releases the slot)
 *       P: tail load (acquire) before overwriting a slot  -> never overwrites
 *          an entry the consumer is still reading
 *   R2  P (steal): tail load (acquire), slot load, tail CAS: exactly one of
 *       P and C wins each entry; the loser's slot read is discarded.
 *   B0  P (blocking): waiting=1 (seq_cst), reload tail, futex wait.
 *       C: tail CAS (seq_cst), then load waiting (seq_cst): if 1, wake.
 *       Both sides are seq_cst, so either P sees the new tail or C sees
 *       waiting=1 (store-buffer litmus): no lost wake-up.
 */
#include "ring.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint64_t takt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void ring_prod_init(struct ring_prod *p, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask)
{
	p->conn = conn;
	p->slots = slots;
	p->mask = mask;
	/* relaxed: we are the only writer of head; the broker set it before
	 * publishing the connection (W1 acquire in the caller). */
	p->head = atomic_load_explicit(&conn->head, memory_order_relaxed);
	p->cached_tail = atomic_load_explicit(&conn->tail, memory_order_acquire); /* R1 */
}

void ring_cons_init(struct ring_cons *q, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask)
{
	q->conn = conn;
	q->slots = slots;
	q->mask = mask;
	q->cached_head = atomic_load_explicit(&conn->head, memory_order_acquire); /* R0 */
}

int ring_push_spsc(struct ring_prod *p, uint32_t chunk)
{
	if (p->head - p->cached_tail > p->mask) {
		/* R1: acquire pairs with the consumer's tail CAS: its read of the
		 * slot we are about to overwrite happened before. */
		p->cached_tail = atomic_load_explicit(&p->conn->tail, memory_order_acquire);
		if (p->head - p->cached_tail > p->mask)
			return -ENOSPC;
	}
	atomic_store_explicit(&p->slots[p->head & p->mask], chunk, memory_order_relaxed);
	p->head++;
	/* R0: release pairs with the consumer's acquire load of head. */
	atomic_store_explicit(&p->conn->head, p->head, memory_order_release);
	return 0;
}

uint32_t ring_steal_oldest(struct ring_prod *p)
{
	/* R2: acquire pairs with the consumer's tail CAS. */
	uint64_t t = atomic_load_explicit(&p->conn->tail, memory_order_acquire);

	for (;;) {
		uint32_t v;

		if (p->head - t <= p->mask) {
			p->cached_tail = t;
			return TAKT_NONE; /* the consumer made room */
		}
		v = atomic_load_explicit(&p->slots[t & p->mask], memory_order_relaxed);
		/* R2: seq_cst CAS; on failure t is reloaded and we retry. */
		if (atomic_compare_exchange_strong_explicit(&p->conn->tail, &t, t + 1,
							    memory_order_seq_cst, memory_order_acquire)) {
			p->cached_tail = t + 1;
			return v;
		}
	}
}

static long futex_wait(_Atomic uint32_t *addr, uint32_t val, const struct timespec *rel)
{
	return syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, val, rel, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
	syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int ring_wait_room(struct ring_prod *p, uint64_t deadline_ns)
{
	for (;;) {
		uint64_t now;
		struct timespec rel;

		if (atomic_load_explicit(&p->conn->state, memory_order_acquire) != SLOT_ACTIVE)
			return -EPIPE;
		/* B0: announce, then re-check (both seq_cst). */
		atomic_store_explicit(&p->conn->producer_waiting, 1, memory_order_seq_cst);
		p->cached_tail = atomic_load_explicit(&p->conn->tail, memory_order_seq_cst);
		if (p->head - p->cached_tail <= p->mask) {
			atomic_store_explicit(&p->conn->producer_waiting, 0, memory_order_relaxed);
			return 0;
		}
		now = takt_now_ns();
		if (now >= deadline_ns) {
			atomic_store_explicit(&p->conn->producer_waiting, 0, memory_order_relaxed);
			return -ETIMEDOUT;
		}
		rel.tv_sec = (time_t)((deadline_ns - now) / 1000000000ull);
		rel.tv_nsec = (long)((deadline_ns - now) % 1000000000ull);
		futex_wait(&p->conn->producer_waiting, 1, &rel);
	}
}

/* B0 consumer side, and the broker when it closes a connection. */
static void ring_wake_producer(struct takt_conn *conn)
{
	if (atomic_load_explicit(&conn->producer_waiting, memory_order_seq_cst) &&
	    atomic_exchange_explicit(&conn->producer_waiting, 0, memory_order_seq_cst))
		futex_wake(&conn->producer_waiting);
}

void ring_wake_producer_closed(struct takt_conn *conn)
{
	atomic_store_explicit(&conn->producer_waiting, 0, memory_order_seq_cst);
	futex_wake(&conn->producer_waiting);
}

int ring_nonempty(struct ring_cons *q)
{
	/* relaxed tail: we (or a stealing producer) wrote it; staleness only
	 * makes us look again. */
	uint64_t t = atomic_load_explicit(&q->conn->tail, memory_order_relaxed);

	if (t < q->cached_head)
		return 1;
	q->cached_head = atomic_load_explicit(&q->conn->head, memory_order_acquire); /* R0 */
	return t < q->cached_head;
}

int ring_pop_shared(struct ring_cons *q, _Atomic uint32_t *held, uint32_t *out)
{
	uint64_t t = atomic_load_explicit(&q->conn->tail, memory_order_acquire); /* R2 */

	for (;;) {
		uint32_t v;

		if (t >= q->cached_head) {
			/* R0: acquire pairs with the producer's release of head. */
			q->cached_head = atomic_load_explicit(&q->conn->head, memory_order_acquire);
			if (t >= q->cached_head)
				return -EAGAIN;
		}
		v = atomic_load_explicit(&q->slots[t & q->mask], memory_order_relaxed);
		/* relaxed: read by the broker only after this process died. */
		atomic_store_explicit(held, v, memory_order_relaxed);
		/* R1/R2: seq_cst CAS commits the pop; on failure (a drop-oldest
		 * steal) t is reloaded and the held word overwritten next round. */
		if (atomic_compare_exchange_strong_explicit(&q->conn->tail, &t, t + 1,
							    memory_order_seq_cst, memory_order_acquire)) {
			ring_wake_producer(q->conn);
			*out = v;
			return 0;
		}
		atomic_store_explicit(held, TAKT_NONE, memory_order_relaxed);
	}
}
