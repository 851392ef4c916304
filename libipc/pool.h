/* pool.h - chunk free lists and chunk reference counts.
 *
 * Each size class keeps its free chunks on a lock-free MPMC stack (Treiber)
 * whose 64-bit head packs an ABA tag with the top index. A chunk's
 * reference word packs a generation with the count: a loan starts a new
 * generation, and the last unref pushes the chunk back on its free list.
 */
#ifndef TAKT_POOL_H
#define TAKT_POOL_H

#include "segment.h"

#include <stdbool.h>

/* Pops a free chunk of class k: its global index, or TAKT_NONE when empty. */
uint32_t pool_pop_mpmc(const struct seg_view *v, uint32_t k);
/* Pushes chunk c (valid, refcount 0) back on its class's free list. */
void pool_push_mpmc(const struct seg_view *v, uint32_t c);

/* Makes a popped chunk a fresh loan: count 1, next generation. Returns the
 * generation. */
uint32_t chunk_loan_init(const struct seg_view *v, uint32_t c);
/* Adds n references to a chunk the caller already holds a reference on. */
void chunk_ref_add(const struct seg_view *v, uint32_t c, uint32_t n);
/* Drops one reference; frees the chunk when it was the last. Returns false
 * (and changes nothing) when the count was already 0: a double release or a
 * corrupted index, never a reason to corrupt the free list. */
bool chunk_unref(const struct seg_view *v, uint32_t c);
/* Takes a reference on chunk c only if it still is generation gen and alive. */
bool chunk_pin(const struct seg_view *v, uint32_t c, uint32_t gen);
static inline uint32_t chunk_refcount(const struct seg_view *v, uint32_t c)
{
	/* relaxed: a snapshot for introspection and tests only */
	return (uint32_t)atomic_load_explicit(&v->chunks[c].refs, memory_order_relaxed);
}

/* Counts the free list of class k by walking it (bounded by the class size).
 * Exact when nobody loans or releases concurrently; a snapshot otherwise. */
uint32_t pool_count_free(const struct seg_view *v, uint32_t k);
/* Builds the free lists of a fresh segment (broker, before anyone attaches). */
void pool_format(const struct seg_view *v);

#endif
