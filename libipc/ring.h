/* ring.h - the receive ring of one publisher-subscriber connection.
 *
 * A bounded ring of slots in shared memory, each naming a chunk and the
 * sample's seq, size and publish time. Every word has one writer: the
 * producer (the publisher) writes the slots, head, floor and waiting; the
 * consumer (the subscriber) writes tail. Per-publisher order is the
 * ring's FIFO order.
 *
 * The consumer learns that a slot is filled from the slot itself (its pos
 * word), so a take reads the slot line and nothing else the producer
 * writes per sample; the producer caches tail and reloads it only when the
 * cache says full.
 *
 * Drop-oldest without writing the consumer's tail (R2): the producer takes
 * the oldest sample back by marking its slot (a word it owns), and the
 * consumer commits a take by storing its own tail; a Dekker handshake on
 * the two words (each side stores, fences, loads the other's) decides
 * which of them owns a position both went for, and the producer's verdict
 * settles the one case where each saw the other (ring.c).
 */
#ifndef TAKT_RING_H
#define TAKT_RING_H

#include "layout.h"

#include <stdbool.h>
#include <stdint.h>

/* Flags in a slot's pos word (R2): the producer is taking the entry back,
 * or has. Positions stay below 2^62. */
#define RING_POS_CLAIM (1ull << 63)
#define RING_POS_TAKEN (1ull << 62)

struct ring_prod {
	const struct takt_conn *reg;     /* the registry entry (state) */
	struct takt_conn_pub *pw;        /* our words */
	const struct takt_conn_sub *sw;  /* the subscriber's */
	struct takt_ring_slot *slots;
	uint64_t head;        /* ours; mirrored to pw->head */
	uint64_t cached_tail; /* <= the real tail */
	uint64_t floor;       /* ours: positions below it were taken back or consumed */
	uint32_t waiting;     /* ours: the last value stored in pw->waiting (B0) */
	bool nudge;           /* R2: a steal found the consumer deciding the oldest entry:
	                         it may be waiting for our verdict, wake it (the caller clears) */
	bool fence_cons;      /* B0L: the consumer stores tail without a fence; we fence it
	                         with membarrier before we sleep for room */
	uint32_t mask;
	uint32_t depth;       /* entries queued at most: 1 <= depth <= mask + 1 */
};

/* What travels in a slot besides the chunk. */
struct ring_entry {
	uint32_t chunk;
	uint32_t size;
	uint64_t seq;
	uint64_t publish_ns;
};

struct ring_cons {
	const struct takt_conn *reg;     /* the registry entry (pub_quiet) */
	const struct takt_conn_pub *pw;  /* the publisher's words */
	struct takt_conn_sub *sw;        /* ours */
	struct takt_ring_slot *slots;
	uint64_t tail;        /* ours; sw->tail holds 2 x it (+ 1 while deciding it, R2) */
	uint32_t mask;
	uint32_t overflow;    /* the connection's policy: what a take must check */
	uint32_t woken;       /* B0: the producer's last `waiting` we woke */
	bool pending;         /* R2: a take of position tail awaits the producer's verdict */
	bool light;           /* B0L: tail without a fence; the producer fences us (membarrier) */
	struct ring_entry pend; /* its entry, read before the commit */
};

/* Binds to a connection (its registry entry, each side's words, the
 * slots) with the given slot mask and depth (validated by
 * the caller: 1 <= depth <= mask + 1). The ring holds at most depth
 * entries, so a subscriber gets exactly the queue it asked for while slot
 * indices stay a mask. Each side resumes from its own shared words. */
void ring_prod_init(struct ring_prod *p, const struct takt_conn *reg, struct takt_conn_pub *pw,
		    const struct takt_conn_sub *sw, struct takt_ring_slot *slots, uint32_t mask, uint32_t depth);
void ring_cons_init(struct ring_cons *q, const struct takt_conn *reg, const struct takt_conn_pub *pw,
		    struct takt_conn_sub *sw, struct takt_ring_slot *slots, uint32_t mask, uint32_t overflow);

/* B0L, B0H: spins a little (ROOM_SPINS loads of the consumer's tail) for
 * room: true when there is some. No syscall. A publish calls it before it
 * polls the subscriber's pidfd and sleeps in ring_wait_room. */
bool ring_spin_room(struct ring_prod *p);

/* 0, or -ENOSPC when depth entries are queued. */
int ring_push_spsc(struct ring_prod *p, const struct ring_entry *e);
/* Full ring under drop-oldest: takes the oldest entry back and returns its
 * chunk (an unchecked word from shared memory), or TAKT_NONE if room
 * appeared or the consumer's tail is garbage. */
uint32_t ring_steal_oldest(struct ring_prod *p);
/* Waits until there is room (or the broker closes the connection) or the
 * deadline passes: announces, then sleeps until the consumer took half
 * the ring (B0H; the caller spun for room first, ring_spin_room). 0 when
 * there is room now, -ETIMEDOUT, -EPIPE closed. */
int ring_wait_room(struct ring_prod *p, uint64_t deadline_ns);
/* Broker: wakes a publisher blocked on a connection it is closing (after
 * storing the new state). */
void ring_wake_producer_closed(const struct takt_conn_sub *sw);
/* Adds n to the samples this connection's subscriber missed. */
void ring_count_drops(struct ring_prod *p, uint64_t n);

/* Pops the oldest entry into *out: 0, or -EAGAIN when nothing is ready
 * (empty, or the producer has not yet given its verdict on the entry at the
 * tail: the caller looks again later; the producer's next push wakes a
 * parked subscriber as usual), or when the oldest entry was published after
 * cutoff (publish_ns > cutoff: it stays queued, untouched; UINT64_MAX takes
 * anything). *out is untouched on -EAGAIN; out->chunk is unchecked. The
 * caller records the chunk as held after the pop; a crash in between costs
 * only what the publisher gets back when the connection ends. An entry whose
 * take began (R2: the pending verdict) was checked against the cutoff of that
 * call. */
int ring_pop_shared(struct ring_cons *q, struct ring_entry *out, uint64_t cutoff);
/* Whether an entry may be ready at the tail (a hint: a pop can still find
 * it taken back). */
int ring_nonempty(const struct ring_cons *q);
/* The broker's view, from the shared words alone: whether every position
 * was consumed or taken back. */
bool ring_drained(const struct takt_conn_pub *pw, const struct takt_conn_sub *sw, const struct takt_ring_slot *slots,
		  uint32_t mask);

/* The return ring of a connection: chunk indices from the subscriber back to
 * their publisher. T0: the subscriber writes a slot (relaxed) and then
 * ret_head (release); the publisher loads ret_head (acquire), reads the
 * slots, and stores ret_tail (release); the subscriber reloads ret_tail
 * (acquire) only when its cached copy says full, so a slot is never
 * overwritten before the publisher read it. Each side writes one word. */
struct ret_prod {
	struct takt_conn_sub *sw;        /* ours */
	const struct takt_conn_pub *pw;  /* the publisher's */
	_Atomic uint32_t *slots;
	uint64_t head;        /* ours; mirrored to sw->ret_head */
	uint64_t cached_tail;
	uint32_t mask;
};

struct ret_cons {
	struct takt_conn_pub *pw;        /* ours; NULL: the tail is not mirrored */
	const struct takt_conn_sub *sw;  /* the subscriber's */
	_Atomic uint32_t *slots;
	uint64_t tail;        /* ours; mirrored to pw->ret_tail */
	uint32_t mask;
};

void ret_prod_init(struct ret_prod *r, struct takt_conn_sub *sw, const struct takt_conn_pub *pw,
		   _Atomic uint32_t *slots, uint32_t mask);
void ret_cons_init(struct ret_cons *r, struct takt_conn_pub *pw, const struct takt_conn_sub *sw,
		   _Atomic uint32_t *slots, uint32_t mask);
/* 0, or -ENOSPC when the publisher has not consumed mask + 1 returns. */
int ret_push(struct ret_prod *r, uint32_t chunk);
/* Whether returns wait (one load of the subscriber's line). */
bool ret_pending(const struct ret_cons *r);
/* Pops up to max returned indices into out (unchecked words from another
 * process); returns how many. A head that is behind the tail or more than a
 * ring ahead is garbage: nothing is popped and *bad is set. */
unsigned ret_pop(struct ret_cons *r, uint32_t *out, unsigned max, bool *bad);

/* A full barrier on every CPU running a process registered for membarrier
 * (P1L: a parking subscriber's fence for light publishers; B0L: a
 * publisher's before it sleeps for room); false when the kernel refused
 * both forms (a seccomp filter, say). */
bool takt_membarrier(void);

/* CLOCK_MONOTONIC in ns (vDSO, no syscall). */
uint64_t takt_now_ns(void);

#endif
