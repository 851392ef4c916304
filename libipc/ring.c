/* ring.c - SPSC receive ring with a producer-side drop-oldest steal.
 *
 * Positions: head and tail are 64-bit counters that only grow; a slot is
 * position & mask, head - tail is the fill level even when the slot index
 * wraps (the counters themselves would take centuries to wrap). A filled
 * slot carries pos = position + 1; the broker zeroes the slots of a new
 * connection, so a stale pos from an earlier connection never matches.
 *
 * Pairings (P = publisher process, C = subscriber process):
 *   R0  P: slot fields (relaxed), then slot.pos = h + 1 (release)
 *       C: slot.pos (acquire) == t + 1, then slot fields     -> sees them
 *   R1  C: slot fields read, then tail CAS t -> t + 1 (seq_cst)
 *       P: tail load (acquire) before overwriting slot t + capacity
 *          -> never overwrites a slot the consumer is still reading
 *   R2  P (steal): tail load (acquire), slot read, tail CAS: exactly one of
 *       P and C wins each position; the loser's read is discarded. Every
 *       slot field is an atomic so the losing read is not a data race.
 *   B0  P (blocking): waiting = 1 (seq_cst), reload tail, futex wait.
 *       C: tail CAS (seq_cst), then load waiting (seq_cst): if 1, wake.
 *       Both sides seq_cst: either P sees the new tail or C sees waiting
 *       (store-buffer litmus), so no wake-up is lost.
 *   T0  return ring, see ring.h: C writes slot, releases ret_head; P
 *       acquires ret_head, reads slots, releases ret_tail; C acquires
 *       ret_tail before reusing a slot.
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

void ring_prod_init(struct ring_prod *p, struct takt_conn *conn, struct takt_ring_slot *slots, uint32_t mask,
		    uint32_t depth)
{
	p->conn = conn;
	p->slots = slots;
	p->mask = mask;
	p->depth = depth;
	/* relaxed: we are the only writer of head; the broker set it before it
	 * published the connection (acquire of conn->state in the caller). */
	p->head = atomic_load_explicit(&conn->head, memory_order_relaxed);
	p->cached_tail = atomic_load_explicit(&conn->tail, memory_order_acquire); /* R1 */
}

void ring_cons_init(struct ring_cons *q, struct takt_conn *conn, struct takt_ring_slot *slots, uint32_t mask)
{
	q->conn = conn;
	q->slots = slots;
	q->mask = mask;
}

int ring_push_spsc(struct ring_prod *p, const struct ring_entry *e)
{
	struct takt_ring_slot *s;

	if (p->head - p->cached_tail >= p->depth) {
		/* R1: acquire pairs with the consumer's tail CAS: its read of the
		 * slot we are about to overwrite happened before. */
		p->cached_tail = atomic_load_explicit(&p->conn->tail, memory_order_acquire);
		if (p->head - p->cached_tail >= p->depth)
			return -ENOSPC;
	}
	s = &p->slots[p->head & p->mask];
	atomic_store_explicit(&s->chunk, e->chunk, memory_order_relaxed);
	atomic_store_explicit(&s->size, e->size, memory_order_relaxed);
	atomic_store_explicit(&s->seq, e->seq, memory_order_relaxed);
	atomic_store_explicit(&s->publish_ns, e->publish_ns, memory_order_relaxed);
	p->head++;
	/* R0: release pairs with the consumer's acquire load of pos. */
	atomic_store_explicit(&s->pos, p->head, memory_order_release);
	/* relaxed: read by the broker only after this publisher quiesced (Q0). */
	atomic_store_explicit(&p->conn->head, p->head, memory_order_relaxed);
	return 0;
}

uint32_t ring_steal_oldest(struct ring_prod *p)
{
	/* R2: acquire pairs with the consumer's tail CAS. */
	uint64_t t = atomic_load_explicit(&p->conn->tail, memory_order_acquire);

	for (;;) {
		uint32_t v;

		if (p->head - t < p->depth) {
			p->cached_tail = t;
			return TAKT_NONE; /* the consumer made room */
		}
		/* A tail beyond head, or a slot we did not fill for position t,
		 * means the consumer corrupted the ring: steal nothing. relaxed:
		 * we wrote pos ourselves. */
		if (t > p->head ||
		    atomic_load_explicit(&p->slots[t & p->mask].pos, memory_order_relaxed) != t + 1)
			return TAKT_NONE;
		v = atomic_load_explicit(&p->slots[t & p->mask].chunk, memory_order_relaxed);
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

		/* acquire: pairs with the broker's store of CLOSING (B1) */
		if (atomic_load_explicit(&p->conn->state, memory_order_acquire) != SLOT_ACTIVE)
			return -EPIPE;
		/* B0: announce, then re-check (both seq_cst). */
		atomic_store_explicit(&p->conn->producer_waiting, 1, memory_order_seq_cst);
		p->cached_tail = atomic_load_explicit(&p->conn->tail, memory_order_seq_cst);
		/* B1: the broker stores CLOSING (seq_cst) before its wake: either it
		 * sees waiting == 1 and wakes us, or we see the new state here. */
		if (atomic_load_explicit(&p->conn->state, memory_order_seq_cst) != SLOT_ACTIVE) {
			atomic_store_explicit(&p->conn->producer_waiting, 0, memory_order_relaxed);
			return -EPIPE;
		}
		if (p->head - p->cached_tail < p->depth) {
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

/* B0, consumer side. */
static void ring_wake_producer(struct takt_conn *conn)
{
	if (atomic_load_explicit(&conn->producer_waiting, memory_order_seq_cst) &&
	    atomic_exchange_explicit(&conn->producer_waiting, 0, memory_order_seq_cst))
		futex_wake(&conn->producer_waiting);
}

void ring_wake_producer_closed(struct takt_conn *conn)
{
	/* B1: the caller stored the new state (seq_cst) before this. */
	atomic_store_explicit(&conn->producer_waiting, 0, memory_order_seq_cst);
	futex_wake(&conn->producer_waiting);
}

static int slot_read(const struct ring_cons *q, uint64_t t, struct ring_entry *out)
{
	const struct takt_ring_slot *s = &q->slots[t & q->mask];

	/* R0: acquire pairs with the producer's release of pos. */
	if (atomic_load_explicit(&s->pos, memory_order_acquire) != t + 1)
		return -EAGAIN;
	out->chunk = atomic_load_explicit(&s->chunk, memory_order_relaxed);
	out->size = atomic_load_explicit(&s->size, memory_order_relaxed);
	out->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
	out->publish_ns = atomic_load_explicit(&s->publish_ns, memory_order_relaxed);
	return 0;
}

int ring_nonempty(const struct ring_cons *q)
{
	/* relaxed tail: we (or a stealing producer) wrote it; a stale value
	 * names an older slot whose pos no longer matches, so we look again. */
	uint64_t t = atomic_load_explicit(&q->conn->tail, memory_order_relaxed);

	return atomic_load_explicit(&q->slots[t & q->mask].pos, memory_order_acquire) == t + 1; /* R0 */
}

int ring_pop_shared(struct ring_cons *q, struct ring_entry *out)
{
	/* acquire: pairs with a stealing producer's CAS (R2). */
	uint64_t t = atomic_load_explicit(&q->conn->tail, memory_order_acquire);
	struct ring_entry e;

	for (;;) {
		if (slot_read(q, t, &e) < 0)
			return -EAGAIN;
		/* R1/R2: seq_cst CAS commits the pop; on failure (a drop-oldest
		 * steal) t is reloaded and we read the next slot. */
		if (atomic_compare_exchange_strong_explicit(&q->conn->tail, &t, t + 1,
							    memory_order_seq_cst, memory_order_acquire)) {
			ring_wake_producer(q->conn);
			*out = e;
			return 0;
		}
	}
}

void ret_prod_init(struct ret_prod *r, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask)
{
	r->conn = conn;
	r->slots = slots;
	r->mask = mask;
	/* relaxed: we are the only writer of ret_head. */
	r->head = atomic_load_explicit(&conn->ret_head, memory_order_relaxed);
	r->cached_tail = atomic_load_explicit(&conn->ret_tail, memory_order_acquire); /* T0 */
}

void ret_cons_init(struct ret_cons *r, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask)
{
	r->conn = conn;
	r->slots = slots;
	r->mask = mask;
	/* relaxed: we are the only writer of ret_tail. */
	r->tail = atomic_load_explicit(&conn->ret_tail, memory_order_relaxed);
}

int ret_push(struct ret_prod *r, uint32_t chunk)
{
	if (r->head - r->cached_tail > r->mask) {
		/* T0: acquire pairs with the publisher's release of ret_tail. */
		r->cached_tail = atomic_load_explicit(&r->conn->ret_tail, memory_order_acquire);
		if (r->head - r->cached_tail > r->mask)
			return -ENOSPC;
	}
	atomic_store_explicit(&r->slots[r->head & r->mask], chunk, memory_order_relaxed);
	r->head++;
	/* T0: release pairs with the publisher's acquire of ret_head. */
	atomic_store_explicit(&r->conn->ret_head, r->head, memory_order_release);
	return 0;
}

bool ret_pending(const struct ret_cons *r)
{
	/* relaxed: a hint; ret_pop acquires. */
	return atomic_load_explicit(&r->conn->ret_head, memory_order_relaxed) != r->tail;
}

unsigned ret_pop(struct ret_cons *r, uint32_t *out, unsigned max, bool *bad)
{
	/* T0: acquire pairs with the subscriber's release of ret_head. */
	uint64_t head = atomic_load_explicit(&r->conn->ret_head, memory_order_acquire);
	unsigned n = 0;

	if (head - r->tail > (uint64_t)r->mask + 1) { /* behind us, or beyond a ring: garbage */
		*bad = true;
		return 0;
	}
	while (r->tail != head && n < max)
		out[n++] = atomic_load_explicit(&r->slots[r->tail++ & r->mask], memory_order_relaxed);
	/* T0: release: our reads of the slots happen before the subscriber
	 * may overwrite them. */
	atomic_store_explicit(&r->conn->ret_tail, r->tail, memory_order_release);
	return n;
}
