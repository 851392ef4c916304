/* ring.h - the receive ring of one publisher-subscriber connection.
 *
 * A bounded ring of slots in shared memory, each naming a chunk and the
 * sample's seq, size and publish time. One producer (the publisher) fills
 * slots; the consumer (the subscriber) advances tail with CAS, and so may
 * the producer when the subscriber asked for drop-oldest and the ring is
 * full: that is the only contended word, and only under overflow.
 * Per-publisher order is the ring's FIFO order.
 *
 * The consumer learns that a slot is filled from the slot itself (its pos
 * word), so a take reads the slot line and nothing else the producer wrote;
 * the producer caches tail and reloads it only when the cache says full.
 */
#ifndef TAKT_RING_H
#define TAKT_RING_H

#include "layout.h"

#include <stdbool.h>
#include <stdint.h>

struct ring_prod {
	struct takt_conn *conn;
	struct takt_ring_slot *slots;
	uint64_t head;        /* ours; mirrored to conn->head */
	uint64_t cached_tail; /* <= the real tail */
	uint32_t mask;
	uint32_t depth;       /* entries queued at most: 1 <= depth <= mask + 1 */
};

struct ring_cons {
	struct takt_conn *conn;
	struct takt_ring_slot *slots;
	uint32_t mask;
};

/* What travels in a slot besides the chunk. */
struct ring_entry {
	uint32_t chunk;
	uint32_t size;
	uint64_t seq;
	uint64_t publish_ns;
};

/* Binds to connection conn with the given slot mask and depth (validated by
 * the caller: 1 <= depth <= mask + 1). The ring holds at most depth
 * entries, so a subscriber gets exactly the queue it asked for while slot
 * indices stay a mask. The producer resumes from the shared head. */
void ring_prod_init(struct ring_prod *p, struct takt_conn *conn, struct takt_ring_slot *slots, uint32_t mask,
		    uint32_t depth);
void ring_cons_init(struct ring_cons *q, struct takt_conn *conn, struct takt_ring_slot *slots, uint32_t mask);

/* 0, or -ENOSPC when depth entries are queued. */
int ring_push_spsc(struct ring_prod *p, const struct ring_entry *e);
/* Full ring under drop-oldest: removes the oldest entry and returns its
 * chunk (an unchecked word from shared memory), or TAKT_NONE if room
 * appeared. */
uint32_t ring_steal_oldest(struct ring_prod *p);
/* Sleeps until the consumer pops (or the broker closes the connection) or
 * the deadline passes. 0 when there is room now, -ETIMEDOUT, -EPIPE closed. */
int ring_wait_room(struct ring_prod *p, uint64_t deadline_ns);
/* Broker: wakes a publisher blocked on a connection it is closing. */
void ring_wake_producer_closed(struct takt_conn *conn);

/* Pops the oldest entry into *out: 0, or -EAGAIN when nothing is ready at
 * the tail it read (empty, or a concurrent drop-oldest steal moved it: the
 * caller looks again before it sleeps). *out is untouched on -EAGAIN;
 * out->chunk is unchecked. The caller records the chunk as held after the pop; a crash
 * in between leaks that one reference (recording it before the commit
 * could, with a concurrent drop-oldest steal, release it twice). */
int ring_pop_shared(struct ring_cons *q, struct ring_entry *out);
/* Whether the oldest slot is filled. */
int ring_nonempty(const struct ring_cons *q);

/* The return ring of a connection: chunk indices from the subscriber back to
 * their publisher. T0: the subscriber writes a slot (relaxed) and then
 * ret_head (release); the publisher loads ret_head (acquire), reads the
 * slots, and stores ret_tail (release); the subscriber reloads ret_tail
 * (acquire) only when its cached copy says full, so a slot is never
 * overwritten before the publisher read it. Each side writes one word. */
struct ret_prod {
	struct takt_conn *conn;
	_Atomic uint32_t *slots;
	uint64_t head;        /* ours; mirrored to conn->ret_head */
	uint64_t cached_tail;
	uint32_t mask;
};

struct ret_cons {
	struct takt_conn *conn;
	_Atomic uint32_t *slots;
	uint64_t tail;        /* ours; mirrored to conn->ret_tail */
	uint32_t mask;
};

void ret_prod_init(struct ret_prod *r, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask);
void ret_cons_init(struct ret_cons *r, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask);
/* 0, or -ENOSPC when the publisher has not consumed mask + 1 returns. */
int ret_push(struct ret_prod *r, uint32_t chunk);
/* Whether returns wait (one load of the subscriber's line). */
bool ret_pending(const struct ret_cons *r);
/* Pops up to max returned indices into out (unchecked words from another
 * process); returns how many. A head that is behind the tail or more than a
 * ring ahead is garbage: nothing is popped and *bad is set. */
unsigned ret_pop(struct ret_cons *r, uint32_t *out, unsigned max, bool *bad);

/* CLOCK_MONOTONIC in ns (vDSO, no syscall). */
uint64_t takt_now_ns(void);

#endif
