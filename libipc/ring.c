/* ring.c - SPSC receive ring; drop-oldest and blocking with one writer per word.
 *
 * Positions: head and tail are 64-bit counters that only grow; a slot is
 * position & mask, head - tail is the fill level even when the slot index
 * wraps (pos carries two flag bits, so positions stay below 2^62: 146
 * years at a billion samples a second). A filled
 * slot carries pos = position + 1; the broker zeroes the slots of a new
 * connection, so a stale pos from an earlier connection never matches.
 *
 * The consumer's tail word is 2t while it has taken everything below t,
 * and 2t + 1 while it is deciding whether position t is its own (drop-
 * oldest connections only, R2).
 *
 * Pairings (P = publisher process, C = subscriber process):
 *   R0  P: slot fields (relaxed), then slot.pos = h + 1 (release)
 *       C: slot.pos (acquire) == t + 1, then slot fields     -> sees them
 *   R1  C: slot fields read, then tail = 2(t + 1) (release)
 *       P: tail load (acquire) before overwriting slot t + capacity
 *          -> never overwrites a slot the consumer is still reading
 *   R2  drop-oldest, decided per position in the slot's pos word, which
 *       only P writes: t + 1 filled, | CLAIM while P takes t back, | TAKEN
 *       once it did.
 *       P: pos = (f + 1) | CLAIM (seq_cst), load tail (seq_cst); below
 *          2f + 1: P owns f, pos = (f + 1) | TAKEN (release), floor = f + 1
 *          (release); else C is taking or took f: pos = f + 1 again
 *          (release, the verdict "yours").
 *       C: read slot t, tail = 2t + 1 (seq_cst), load pos again (seq_cst):
 *          t + 1: C owns t; TAKEN or a later lap: P does; CLAIM: P's
 *          verdict decides (acquire, pairs with its release). Then
 *          tail = 2(t + 1) (release).
 *       Store-buffer litmus on tail and pos: P and C cannot both miss the
 *       other's store, so they cannot both own t; P decides from its one
 *       load, so when both saw each other P yields and C, seeing the
 *       claim, takes P's verdict: exactly one of them owns every position.
 *       P claims positions in order from max(floor, t) and never the one
 *       C is deciding, and it overwrites a slot only below max(tail,
 *       floor): so a later lap in slot t means P took t, and C's read of
 *       a slot P took is discarded (slot fields are atomics: no data race).
 *       floor tells a consumer whose tail slot holds a later lap how far P
 *       took everything back (acquire, pairs with P's release).
 *   B0  blocking: P: waiting = odd (seq_cst), load tail (seq_cst), futex
 *       wait on tail's low word for the value it saw. C: tail = 2(t + 1)
 *       (seq_cst), load waiting (seq_cst): odd and not woken yet -> wake
 *       (once its tail reached wake_at, B0H).
 *       Either P sees the new tail or C sees waiting; and the futex
 *       compares tail itself, so a pop between P's load and its sleep
 *       makes the sleep return at once.
 *   B0L the same store-buffer litmus with an asymmetric fence (liburcu's),
 *       when the consumer's node is registered for membarrier (its
 *       takt_sub_live.membarrier): C stores tail (release) and loads
 *       waiting with only a compiler barrier between, so a take carries no
 *       locked instruction (which would wait for the release's line, and
 *       every store before it, to reach the cache); P, about to sleep,
 *       stores waiting and calls membarrier(GLOBAL_EXPEDITED), a full
 *       barrier on every CPU running C, before it loads tail. If the kernel
 *       refuses it, P sleeps in slices of 1 ms instead (as if woken late).
 *       P spins a little before it announces anything (its publish,
 *       ring_spin_room): a consumer that keeps up makes room within a
 *       line transfer.
 *   B0H a blocked publisher sleeps for room for half the ring, not for one
 *       slot: before announcing, P stores wake_at = the tail it saw +
 *       max(1, depth / 2) (relaxed; its store of waiting, seq_cst, is the
 *       release); C, seeing a new odd waiting, fences (acquire: pairs with
 *       that release) and wakes P only once its tail reached wake_at. A
 *       consumer that keeps up would otherwise wake the publisher for
 *       every sample it takes, and the publisher sleep again after each
 *       (a membarrier, a futex wait and a futex wake per sample). No
 *       wake-up is lost: P's re-check after announcing sees any take made
 *       before it (the litmus of B0), its futex wait returns at once if
 *       the tail moved meanwhile, and one made after it moves the tail
 *       towards wake_at, which C reaches unless it stops taking with
 *       fewer than half the ring taken (its cutoff, or it closes): then
 *       P finds the room at the end of its slice (WAIT_SLICE_NS) or is
 *       woken by the close (B1).
 *   B1  the broker stores CLOSING (seq_cst) and wakes the futex; it writes
 *       no word of P's, so P sleeps in slices of at most 10 ms and looks
 *       at the state before each.
 *   T0  return ring, see ring.h: C writes slot, releases ret_head; P
 *       acquires ret_head, reads slots, releases ret_tail; C acquires
 *       ret_tail before reusing a slot.
 */
#include "ring.h"
#include "sys.h"

#include <errno.h>
#include <limits.h>
#include <linux/membarrier.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <takt/ipc.h>
#include <time.h>
#include <unistd.h>

#define WAIT_SLICE_NS 10000000ull /* B1: how late a blocked publisher may see a close */
#define UNFENCED_SLICE_NS 1000000ull /* B0L: sleep slices when the kernel refused our membarrier */
#define ROOM_SPINS 256            /* B0L: tail reloads before a producer announces that it waits */
#define VERDICT_SPINS 1024        /* R2: how long a take spins for the producer's verdict */

uint64_t takt_now_ns(void)
{
	return sys_mono_ns();
}

bool takt_membarrier(void)
{
	/* Only reached when the other side registered for GLOBAL_EXPEDITED,
	 * so the kernel has it; the plain global command (an RCU grace
	 * period) is the fallback. */
	return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 ||
	       syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

void ring_prod_init(struct ring_prod *p, const struct takt_conn *reg, struct takt_conn_pub *pw,
		    const struct takt_conn_sub *sw, struct takt_ring_slot *slots, uint32_t mask, uint32_t depth)
{
	p->reg = reg;
	p->pw = pw;
	p->sw = sw;
	p->slots = slots;
	p->mask = mask;
	p->depth = depth;
	p->nudge = false;
	p->fence_cons = false; /* B0L: the caller decides */
	/* relaxed: we are the only writer of head, floor and waiting (we set
	 * them when we initialised the region). */
	p->head = atomic_load_explicit(&pw->head, memory_order_relaxed);
	p->floor = atomic_load_explicit(&pw->floor, memory_order_relaxed);
	p->waiting = atomic_load_explicit(&pw->waiting, memory_order_relaxed) & ~1u;
	/* Not the subscriber's tail: its region may not be initialised yet.
	 * Everything below floor is gone, so floor is a safe lower bound. */
	p->cached_tail = p->floor;
}

void ring_cons_init(struct ring_cons *q, const struct takt_conn *reg, const struct takt_conn_pub *pw,
		    struct takt_conn_sub *sw, struct takt_ring_slot *slots, uint32_t mask, uint32_t overflow)
{
	q->reg = reg;
	q->pw = pw;
	q->sw = sw;
	q->slots = slots;
	q->mask = mask;
	q->overflow = overflow;
	q->pending = false;
	q->light = false; /* B0L: the caller decides */
	q->woken = 0;
	/* relaxed: we are the only writer of tail. */
	q->tail = atomic_load_explicit(&sw->tail, memory_order_relaxed) / 2;
}

/* The oldest position still queued as far as we know. */
static inline uint64_t prod_oldest(const struct ring_prod *p)
{
	return p->cached_tail > p->floor ? p->cached_tail : p->floor;
}

/* A position the consumer's tail word showed: a tail beyond head is
 * garbage, and the old one is kept. */
static inline void prod_seen_tail(struct ring_prod *p, uint64_t t)
{
	if (t <= p->head)
		p->cached_tail = t;
}

/* Reloads the consumer's tail; whether there is room now. */
static bool prod_room(struct ring_prod *p)
{
	/* R1: acquire pairs with the consumer's store of tail: its read of
	 * the slot we are about to overwrite happened before. */
	prod_seen_tail(p, atomic_load_explicit(&p->sw->tail, memory_order_acquire) / 2);
	return p->head - prod_oldest(p) < p->depth;
}

int ring_push_spsc(struct ring_prod *p, const struct ring_entry *e)
{
	struct takt_ring_slot *s;

	if (p->head - prod_oldest(p) >= p->depth && !prod_room(p))
		return -ENOSPC;
	s = &p->slots[p->head & p->mask];
	atomic_store_explicit(&s->chunk, e->chunk, memory_order_relaxed);
	atomic_store_explicit(&s->size, e->size, memory_order_relaxed);
	atomic_store_explicit(&s->seq, e->seq, memory_order_relaxed);
	atomic_store_explicit(&s->publish_ns, e->publish_ns, memory_order_relaxed);
	p->head++;
	/* R0: release pairs with the consumer's acquire load of pos. */
	atomic_store_explicit(&s->pos, p->head, memory_order_release);
	/* relaxed: a position for tools and tests; nothing is ordered by it. */
	atomic_store_explicit(&p->pw->head, p->head, memory_order_relaxed);
	return 0;
}

uint32_t ring_steal_oldest(struct ring_prod *p)
{
	/* R1: acquire pairs with the consumer's store of tail. */
	uint64_t tw = atomic_load_explicit(&p->sw->tail, memory_order_acquire), f;
	struct takt_ring_slot *s;
	uint32_t c;

	if (tw / 2 > p->head)
		return TAKT_NONE; /* garbage: steal nothing */
	p->cached_tail = tw / 2;
	f = prod_oldest(p);
	if (p->head - f < p->depth)
		return TAKT_NONE; /* the consumer made room */
	if (tw == 2 * f + 1) {
		p->nudge = true; /* it may wait for a verdict we gave: wake it */
		return TAKT_NONE; /* the consumer is deciding f: look again */
	}
	s = &p->slots[f & p->mask];
	/* relaxed: we wrote them; f >= head - depth, so not overwritten yet. */
	if (atomic_load_explicit(&s->pos, memory_order_relaxed) != f + 1)
		return TAKT_NONE;
	c = atomic_load_explicit(&s->chunk, memory_order_relaxed);
	/* R2: claim f, then look at the consumer's tail (both seq_cst). */
	atomic_store_explicit(&s->pos, (f + 1) | RING_POS_CLAIM, memory_order_seq_cst);
	tw = atomic_load_explicit(&p->sw->tail, memory_order_seq_cst);
	if (tw < 2 * f + 1) {
		/* R2: release: the verdict "ours" for a consumer waiting on it. */
		atomic_store_explicit(&s->pos, (f + 1) | RING_POS_TAKEN, memory_order_release);
		p->floor = f + 1;
		/* R2: release: a lapped consumer that acquires it jumps here. */
		atomic_store_explicit(&p->pw->floor, p->floor, memory_order_release);
		return c;
	}
	/* The consumer is taking or took f: its sample. If it saw our claim
	 * it may have given up waiting and parked (pending): the caller wakes
	 * it as after a push, since nothing may be pushed now. */
	atomic_store_explicit(&s->pos, f + 1, memory_order_release); /* R2: the verdict "yours" */
	p->nudge = true;
	prod_seen_tail(p, tw / 2);
	return TAKT_NONE;
}

void ring_count_drops(struct ring_prod *p, uint64_t n)
{
	/* relaxed: a statistic with one writer (us). */
	atomic_store_explicit(&p->pw->dropped, atomic_load_explicit(&p->pw->dropped, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* Futexes on the low word of the subscriber's tail: a read-only mapping
 * of it is enough for both (the kernel only reads the word). */
static long futex_wait(const _Atomic uint64_t *addr, uint32_t val, uint64_t rel_ns)
{
	return sys_futex_wait((const _Atomic uint32_t *)addr, val, (int64_t)rel_ns, 1);
}

static void futex_wake(const _Atomic uint64_t *addr)
{
	sys_futex_wake((const _Atomic uint32_t *)addr, INT_MAX, 1);
}

/* B0: we no longer wait (even). relaxed: nobody acts on an even value. */
static void prod_stop_waiting(struct ring_prod *p)
{
	p->waiting += 1;
	atomic_store_explicit(&p->pw->waiting, p->waiting, memory_order_relaxed);
}

/* B0L: room seen by spinning on the consumer's tail for a while. */
bool ring_spin_room(struct ring_prod *p)
{
	for (unsigned i = 0; i < ROOM_SPINS; i++) {
		if (prod_room(p))
			return true;
		cpu_relax();
	}
	return false;
}

int ring_wait_room(struct ring_prod *p, uint64_t deadline_ns)
{
	bool slept = false;

	for (;;) {
		uint64_t now, t, left, slice = WAIT_SLICE_NS;

		/* acquire: pairs with the broker's store of CLOSING (B1) */
		if (atomic_load_explicit(&p->reg->state, memory_order_acquire) != SLOT_ACTIVE) {
			if (slept)
				prod_stop_waiting(p);
			return -EPIPE;
		}
		/* Woken, or our slice ended: room now needs no new
		 * announcement (nor its membarrier). prod_room's acquire pairs
		 * with the consumer's release of its tail (R1). */
		if (slept && prod_room(p)) {
			prod_stop_waiting(p);
			return 0;
		}
		/* B0H: the room we sleep for; relaxed: released by the store
		 * of waiting below. */
		atomic_store_explicit(&p->pw->wake_at, prod_oldest(p) + (p->depth / 2 ? p->depth / 2 : 1),
				      memory_order_relaxed);
		/* B0: announce (a new odd value each round, so the consumer
		 * wakes each sleep once), then re-check (both seq_cst; B0L: the
		 * membarrier in between is the consumer's half of the fence). */
		p->waiting = (p->waiting | 1u) + 2u;
		atomic_store_explicit(&p->pw->waiting, p->waiting, memory_order_seq_cst);
		if (p->fence_cons && !takt_membarrier())
			slice = UNFENCED_SLICE_NS;
		t = atomic_load_explicit(&p->sw->tail, memory_order_seq_cst);
		prod_seen_tail(p, t / 2);
		/* B1: seq_cst, after our announcement: a close stored before it
		 * is seen here; one stored later wakes us or ends our slice. */
		if (atomic_load_explicit(&p->reg->state, memory_order_seq_cst) != SLOT_ACTIVE) {
			prod_stop_waiting(p);
			return -EPIPE;
		}
		if (p->head - prod_oldest(p) < p->depth) {
			prod_stop_waiting(p);
			return 0;
		}
		now = takt_now_ns();
		if (now >= deadline_ns) {
			prod_stop_waiting(p);
			return -ETIMEDOUT;
		}
		left = deadline_ns - now < slice ? deadline_ns - now : slice; /* B1, B0L */
		futex_wait(&p->sw->tail, (uint32_t)t, left);
		slept = true;
	}
}

void ring_wake_producer_closed(const struct takt_conn_sub *sw)
{
	/* B1: the caller stored the new state (seq_cst) before this. */
	futex_wake(&sw->tail);
}

/* pos without its flags: the position + 1 the slot was filled for. */
static inline uint64_t pos_value(uint64_t pos)
{
	return pos & ~(RING_POS_CLAIM | RING_POS_TAKEN);
}

static void slot_fields(const struct takt_ring_slot *s, struct ring_entry *out)
{
	out->chunk = atomic_load_explicit(&s->chunk, memory_order_relaxed);
	out->size = atomic_load_explicit(&s->size, memory_order_relaxed);
	out->seq = atomic_load_explicit(&s->seq, memory_order_relaxed);
	out->publish_ns = atomic_load_explicit(&s->publish_ns, memory_order_relaxed);
}

int ring_nonempty(const struct ring_cons *q)
{
	uint64_t t = q->tail, pos;

	/* R0: acquire pairs with the producer's release of pos. */
	pos = atomic_load_explicit(&q->slots[t & q->mask].pos, memory_order_acquire);
	if (pos == t + 1 || pos == ((t + 1) | RING_POS_TAKEN))
		return 1; /* ready, or taken back with something newer maybe behind */
	if (pos == ((t + 1) | RING_POS_CLAIM)) /* the producer wakes us after its verdict */
		/* ... unless it left with the claim open: then it is ours.
		 * acquire: pairs with the broker's release of pub_quiet. */
		return atomic_load_explicit(&q->reg->pub_quiet, memory_order_acquire) != 0;
	/* A later lap is one only if the producer took t back (R2: acquire
	 * pairs with its release of floor); else it is stale or garbage. */
	return pos_value(pos) > t + 1 && atomic_load_explicit(&q->pw->floor, memory_order_acquire) > t;
}

/* Stores our tail word: 2t, or 2t + 1 while we decide position t (R2). */
static void cons_set_tail(struct ring_cons *q, uint64_t t, bool deciding, memory_order mo)
{
	q->tail = t;
	atomic_store_explicit(&q->sw->tail, 2 * t + deciding, mo);
}

/* R2: the producer claims position t; waits a little for its verdict.
 * 1: ours, 0: taken back, -EAGAIN: still open (the producer was preempted
 * in its window; we look again later). */
static int cons_verdict(struct ring_cons *q, uint64_t t)
{
	const struct takt_ring_slot *s = &q->slots[t & q->mask];

	for (unsigned i = 0; i < VERDICT_SPINS; i++) {
		/* R2: acquire pairs with the producer's release of its verdict. */
		uint64_t pos = atomic_load_explicit(&s->pos, memory_order_acquire);

		if (pos != ((t + 1) | RING_POS_CLAIM))
			return pos == t + 1 ? 1 : 0;
		cpu_relax();
	}
	/* A producer that left and quiesced gives no verdict: nobody else can
	 * own it. acquire: pairs with the broker's release of pub_quiet. */
	return atomic_load_explicit(&q->reg->pub_quiet, memory_order_acquire) ? 1 : -EAGAIN;
}

/* R2: we announced that we decide position t (tail 2t + 1); settles it
 * with the producer. 1: ours, 0: taken back, -EAGAIN: no verdict yet (our
 * tail stays 2t + 1, so the producer leaves t alone meanwhile). */
static int cons_decide(struct ring_cons *q, uint64_t t)
{
	/* R2: seq_cst load pairs with the producer's claim. */
	uint64_t pos = atomic_load_explicit(&q->slots[t & q->mask].pos, memory_order_seq_cst);
	int r = pos == t + 1;

	if (pos == ((t + 1) | RING_POS_CLAIM)) {
		r = cons_verdict(q, t);
		if (r < 0)
			return -EAGAIN;
	}
	cons_set_tail(q, t + 1, false, memory_order_release); /* R1 */
	return r;
}

int ring_pop_shared(struct ring_cons *q, struct ring_entry *out, uint64_t cutoff)
{
	struct ring_entry e;

	if (q->pending) {
		int r = cons_decide(q, q->tail);

		if (r < 0)
			return -EAGAIN;
		q->pending = false;
		if (r == 1) {
			*out = q->pend;
			return 0;
		}
	}
	/* Each round consumes a position or returns: bounded by the ring. */
	for (uint32_t round = 0; round <= q->mask + 1; round++) {
		const struct takt_ring_slot *s = &q->slots[q->tail & q->mask];
		uint64_t t = q->tail, f;
		/* R0: acquire pairs with the producer's release of pos. */
		uint64_t pos = atomic_load_explicit(&s->pos, memory_order_acquire);
		int r;

		if (pos != t + 1) {
			if (q->overflow != TAKT_OVERFLOW_DROP_OLDEST || pos_value(pos) < t + 1)
				return -EAGAIN; /* empty (a later lap is garbage unless taken back) */
			if (pos == ((t + 1) | RING_POS_CLAIM)) {
				/* R2: being taken back before we announced: wait. */
				r = cons_verdict(q, t);
				if (r < 0)
					return -EAGAIN; /* still open: look again later */
				if (r == 0) {
					cons_set_tail(q, t + 1, false, memory_order_release); /* taken back */
					continue;
				}
				/* given back (or the producer is gone): take it as usual */
			} else if (pos_value(pos) > t + 1) {
				/* R2: a later lap: the producer took t back and
				 * refilled the slot. acquire pairs with its release
				 * of floor. */
				f = atomic_load_explicit(&q->pw->floor, memory_order_acquire);
				if (f <= t)
					return -EAGAIN; /* stale or garbage */
				cons_set_tail(q, f, false, memory_order_release); /* R1 */
				continue;
			} else {
				cons_set_tail(q, t + 1, false, memory_order_release); /* TAKEN: skip it */
				continue;
			}
		}
		slot_fields(s, &e);
		if (e.publish_ns > cutoff) {
			/* Newer than the caller wants: nothing stored, it stays
			 * queued. Unless the fields were a refill's (R2: taken back
			 * and the slot reused while we read them, older entries
			 * behind it): only pos still t + 1 after the reads vouches
			 * for them (the fence orders the field loads before the
			 * reload; the producer changes pos before it refills). */
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&s->pos, memory_order_relaxed) != t + 1)
				continue; /* look at position t again */
			return -EAGAIN;
		}
		if (q->overflow == TAKT_OVERFLOW_REJECT) {
			cons_set_tail(q, t + 1, false, memory_order_release); /* R1 */
			*out = e;
			return 0;
		}
		if (q->overflow == TAKT_OVERFLOW_BLOCK) {
			/* B0: seq_cst store, then seq_cst load of the producer's
			 * announcement. */
			uint32_t w;

			if (q->light) {
				/* B0L: release (R1); the producer's membarrier orders
				 * it before our load of waiting. */
				cons_set_tail(q, t + 1, false, memory_order_release);
				atomic_signal_fence(memory_order_seq_cst);
				w = atomic_load_explicit(&q->pw->waiting, memory_order_relaxed);
			} else {
				cons_set_tail(q, t + 1, false, memory_order_seq_cst);
				w = atomic_load_explicit(&q->pw->waiting, memory_order_seq_cst);
			}
			if ((w & 1) && w != q->woken) {
				/* B0H: acquire pairs with the producer's store of
				 * waiting (a release), so wake_at is the one it
				 * announced with w. */
				atomic_thread_fence(memory_order_acquire);
				if (t + 1 >= atomic_load_explicit(&q->pw->wake_at, memory_order_relaxed)) {
					q->woken = w;
					futex_wake(&q->sw->tail);
				}
			}
			*out = e;
			return 0;
		}
		/* R2: announce (seq_cst), then look at the slot again. */
		cons_set_tail(q, t, true, memory_order_seq_cst);
		r = cons_decide(q, t);
		if (r < 0) {
			q->pending = true;
			q->pend = e;
			return -EAGAIN;
		}
		if (r) {
			*out = e;
			return 0;
		}
		/* taken back: on to the next position */
	}
	return -EAGAIN;
}

bool ring_drained(const struct takt_conn_pub *pw, const struct takt_conn_sub *sw, const struct takt_ring_slot *slots,
		  uint32_t mask)
{
	/* acquire: pairs with the consumer's store of tail (R1) and the
	 * producer's release of its floor (R2). */
	uint64_t t = atomic_load_explicit(&sw->tail, memory_order_acquire) / 2;
	uint64_t f = atomic_load_explicit(&pw->floor, memory_order_acquire);

	if (f > t)
		t = f;
	/* Past entries taken back (a producer that died between marking one
	 * and raising floor leaves a TAKEN slot below newer entries). */
	for (uint32_t i = 0; i <= mask; i++, t++) {
		/* R0: acquire pairs with the producer's release of pos. */
		uint64_t pos = atomic_load_explicit(&slots[t & mask].pos, memory_order_acquire);

		if (pos == t + 1 || pos == ((t + 1) | RING_POS_CLAIM))
			return false; /* filled, or claimed by a producer that may be gone */
		if (pos != ((t + 1) | RING_POS_TAKEN))
			return true;
	}
	return true;
}

void ret_prod_init(struct ret_prod *r, struct takt_conn_sub *sw, const struct takt_conn_pub *pw,
		   _Atomic uint32_t *slots, uint32_t mask)
{
	r->sw = sw;
	r->pw = pw;
	r->slots = slots;
	r->mask = mask;
	/* relaxed: we are the only writer of ret_head. The publisher has
	 * consumed nothing we have not pushed: head is a safe lower bound of
	 * its ret_tail (whose region it may not have initialised yet). */
	r->head = atomic_load_explicit(&sw->ret_head, memory_order_relaxed);
	r->cached_tail = r->head;
}

void ret_cons_init(struct ret_cons *r, struct takt_conn_pub *pw, const struct takt_conn_sub *sw,
		   _Atomic uint32_t *slots, uint32_t mask)
{
	r->pw = pw;
	r->sw = sw;
	r->slots = slots;
	r->mask = mask;
	/* relaxed: we are the only writer of ret_tail. */
	r->tail = atomic_load_explicit(&pw->ret_tail, memory_order_relaxed);
}

int ret_push(struct ret_prod *r, uint32_t chunk)
{
	if (r->head - r->cached_tail > r->mask) {
		/* T0: acquire pairs with the publisher's release of ret_tail. */
		r->cached_tail = atomic_load_explicit(&r->pw->ret_tail, memory_order_acquire);
		if (r->head - r->cached_tail > r->mask)
			return -ENOSPC;
	}
	atomic_store_explicit(&r->slots[r->head & r->mask], chunk, memory_order_relaxed);
	r->head++;
	/* T0: release pairs with the publisher's acquire of ret_head. */
	atomic_store_explicit(&r->sw->ret_head, r->head, memory_order_release);
	return 0;
}

bool ret_pending(const struct ret_cons *r)
{
	/* relaxed: a hint; ret_pop acquires. */
	return atomic_load_explicit(&r->sw->ret_head, memory_order_relaxed) != r->tail;
}

unsigned ret_pop(struct ret_cons *r, uint32_t *out, unsigned max, bool *bad)
{
	/* T0: acquire pairs with the subscriber's release of ret_head. */
	uint64_t head = atomic_load_explicit(&r->sw->ret_head, memory_order_acquire);
	unsigned n = 0;

	if (head - r->tail > (uint64_t)r->mask + 1) { /* behind us, or beyond a ring: garbage */
		*bad = true;
		return 0;
	}
	while (r->tail != head && n < max)
		out[n++] = atomic_load_explicit(&r->slots[r->tail++ & r->mask], memory_order_relaxed);
	/* T0: release: our reads of the slots happen before the subscriber
	 * may overwrite them. */
	if (r->pw)
		atomic_store_explicit(&r->pw->ret_tail, r->tail, memory_order_release);
	return n;
}
