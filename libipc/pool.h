/* pool.h - a publisher's private chunk pool.
 *
 * The chunks live in the publisher's pool segment (shared, so subscribers
 * read them in place); who holds which chunk lives here, in the publisher's
 * own memory: a free stack the publishing thread alone pushes and pops, and
 * one reference word per chunk. A chunk is referenced by its loan, by each
 * connection it was pushed to and not yet returned, and by the history.
 * Only the publishing thread drops references; the node's agent adds them
 * (chunk_pin) when it hands history to a new connection. Nothing here is
 * visible to another process, so no other process can corrupt it.
 */
#ifndef TAKT_POOL_H
#define TAKT_POOL_H

#include "segment.h"

#include <stdbool.h>

/* What describes the sample in a chunk, in the publisher's memory (the
 * chunk itself is payload only): written by the publishing thread while
 * it holds the loan, before chunk_hand_over's release; read by the agent
 * only after chunk_pin's acquire (C1), so plain fields suffice. */
struct chunk_info {
	uint64_t seq;
	uint64_t publish_ns;
	uint32_t size;
};

struct pub_pool {
	struct seg_pool seg;    /* the mapping of the pool segment */
	_Atomic uint64_t *meta; /* per chunk: generation << 32 | references */
	struct chunk_info *info; /* per chunk */
	uint32_t *free;         /* stack of free chunk indices */
	uint32_t n_free;
	uint32_t n_have;        /* chunks adopted so far (the registry's n_chunks) */
	bool pinned;            /* C0: the agent may pin chunks (the publisher keeps history) */
};

/* Allocates the private tables for seg->n_max chunks; no chunk is usable
 * until pub_pool_grow. 0 or -ENOMEM. */
int pub_pool_init(struct pub_pool *p, const struct seg_pool *seg);
void pub_pool_destroy(struct pub_pool *p);
/* Adopts chunks [n_have, n) (the broker reserved them): onto the free stack. */
void pub_pool_grow(struct pub_pool *p, uint32_t n);

/* A free chunk, or TAKT_NONE. */
uint32_t pub_pool_pop(struct pub_pool *p);
/* Makes a popped chunk a fresh loan: one reference, a new generation
 * (never 0, which marks an empty history entry). Returns the generation. */
uint32_t chunk_loan_init(struct pub_pool *p, uint32_t c);
/* Hands a loaned chunk to n holders (the loan's reference is replaced). */
void chunk_hand_over(struct pub_pool *p, uint32_t c, uint32_t gen, uint32_t n);
/* Drops one reference; the last one puts the chunk back on the free stack.
 * false (and nothing changes) when the count was already 0. Publishing
 * thread only. */
bool chunk_unref(struct pub_pool *p, uint32_t c);
/* Agent: takes a reference on c only if it still is generation gen and
 * referenced (so it cannot be on the free stack). */
bool chunk_pin(struct pub_pool *p, uint32_t c, uint32_t gen);
static inline uint32_t chunk_refcount(const struct pub_pool *p, uint32_t c)
{
	/* relaxed: a snapshot for statistics and tests */
	return (uint32_t)atomic_load_explicit(&p->meta[c], memory_order_relaxed);
}

#endif
