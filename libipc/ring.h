/* ring.h - the receive ring of one publisher-subscriber connection.
 *
 * A bounded ring of global chunk indices in shared memory. One producer
 * (the publisher) advances head; the consumer (the subscriber) advances
 * tail with CAS, and so may the producer when the subscriber asked for
 * drop-oldest and the ring is full: that is the only contended word, and
 * only under overflow. Per-publisher order is the ring's FIFO order.
 *
 * Each side caches the other side's index in process-local memory and
 * reloads it only when the cache says full (producer) or empty (consumer),
 * so a push or pop in steady state touches the slot line and its own index.
 */
#ifndef TAKT_RING_H
#define TAKT_RING_H

#include "layout.h"

#include <stdint.h>

struct ring_prod {
	struct takt_conn *conn;
	_Atomic uint32_t *slots;
	uint64_t head;        /* ours; mirrored to conn->head */
	uint64_t cached_tail; /* <= the real tail */
	uint32_t mask;
};

struct ring_cons {
	struct takt_conn *conn;
	_Atomic uint32_t *slots;
	uint64_t cached_head; /* <= the real head */
	uint32_t mask;
};

/* Binds to connection conn with the given capacity mask (validated by the
 * caller). The producer resumes from the shared head. */
void ring_prod_init(struct ring_prod *p, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask);
void ring_cons_init(struct ring_cons *q, struct takt_conn *conn, _Atomic uint32_t *slots, uint32_t mask);

/* 0, or -ENOSPC when full. */
int ring_push_spsc(struct ring_prod *p, uint32_t chunk);
/* Full ring under drop-oldest: removes the oldest entry and returns it (an
 * unchecked word from shared memory), or TAKT_NONE if room appeared. */
uint32_t ring_steal_oldest(struct ring_prod *p);
/* Sleeps until the consumer pops (or the broker closes the connection) or
 * the timeout passes. 0 when there is room now, -ETIMEDOUT, -EPIPE closed. */
int ring_wait_room(struct ring_prod *p, uint64_t deadline_ns);
/* Broker: wakes a publisher blocked on a connection it is closing. */
void ring_wake_producer_closed(struct takt_conn *conn);

/* Pops the oldest entry into *out. Before the pop commits, the entry is
 * stored in *held so a crash at any point leaves the chunk findable by the
 * broker (in the ring, in held, or in both: the broker releases it once).
 * 0, or -EAGAIN when empty. *out is an unchecked word from shared memory. */
int ring_pop_shared(struct ring_cons *q, _Atomic uint32_t *held, uint32_t *out);
/* Whether anything is waiting (reloads head when the cache says empty). */
int ring_nonempty(struct ring_cons *q);

/* CLOCK_MONOTONIC in ns (vDSO, no syscall). */
uint64_t takt_now_ns(void);

#endif
