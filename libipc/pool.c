/* pool.c - a publisher's private free stack and reference counts.
 *
 * Pairings (threads of the publishing process; no other process sees these):
 *   C0 unref: a CAS (acq_rel) by the publishing thread when the agent may
 *      pin (pinned: the publisher keeps history). The agent's pin is a CAS
 *      on the same word, so increments and decrements never get lost; the
 *      thread that reaches 0 (always the publishing thread) has acquired
 *      every holder's accesses before it reuses the chunk. Without history
 *      nobody pins: the publishing thread is the word's only writer and a
 *      plain decrement is exact. That matters beyond the RMW's own cost: a
 *      locked instruction waits for every store before it to reach the
 *      cache, and on the publish path those include the payload and ring
 *      slot lines a subscriber on another core has just read.
 *   C1 loan_init / hand_over store the word with release; chunk_pin loads
 *      and CASes with acquire, so a pin that sees the generation sees the
 *      chunk as that loan left it. A chunk at 0 references is on the free
 *      stack, and chunk_pin refuses a count of 0, so the agent never takes a
 *      reference on a free chunk; a chunk freed and loaned again has a new
 *      generation, so a pin of an old history entry fails.
 * Returns from subscribers are checked by the caller (pub.c) before they
 * reach chunk_unref: an index a subscriber sends is never trusted.
 */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int pub_pool_init(struct pub_pool *p, const struct seg_pool *seg)
{
	memset(p, 0, sizeof(*p));
	p->seg = *seg;
	p->meta = calloc(seg->n_max, sizeof(*p->meta));
	p->free = malloc((size_t)seg->n_max * sizeof(*p->free));
	p->info = calloc(seg->n_max, sizeof(*p->info));
	if (!p->meta || !p->free || !p->info) {
		pub_pool_destroy(p);
		return -ENOMEM;
	}
	return 0;
}

void pub_pool_destroy(struct pub_pool *p)
{
	free(p->meta);
	free(p->free);
	free(p->info);
	p->meta = NULL;
	p->free = NULL;
	p->info = NULL;
}

void pub_pool_grow(struct pub_pool *p, uint32_t n)
{
	if (n > p->seg.n_max)
		n = p->seg.n_max;
	/* Pushed in reverse so the lowest index is loaned first. */
	for (uint32_t c = n; c-- > p->n_have;)
		p->free[p->n_free++] = c;
	if (n > p->n_have)
		p->n_have = n;
}

uint32_t pub_pool_pop(struct pub_pool *p)
{
	return p->n_free ? p->free[--p->n_free] : TAKT_NONE;
}

uint32_t chunk_loan_init(struct pub_pool *p, uint32_t c)
{
	/* relaxed: the chunk is free, so nobody else touches its word. */
	uint32_t gen = (uint32_t)(atomic_load_explicit(&p->meta[c], memory_order_relaxed) >> 32) + 1;

	if (gen == 0)
		gen = 1; /* generation 0 marks an empty history entry */
	/* C1: release pairs with chunk_pin's acquire. */
	atomic_store_explicit(&p->meta[c], (uint64_t)gen << 32 | 1, memory_order_release);
	return gen;
}

void chunk_hand_over(struct pub_pool *p, uint32_t c, uint32_t gen, uint32_t n)
{
	/* C1: release. Not in history yet, so the agent cannot pin it
	 * meanwhile: a plain store is exact. */
	atomic_store_explicit(&p->meta[c], (uint64_t)gen << 32 | n, memory_order_release);
}

bool chunk_unref(struct pub_pool *p, uint32_t c)
{
	_Atomic uint64_t *m = &p->meta[c];
	/* relaxed: validated by the CAS below, or ours alone (C0). */
	uint64_t old = atomic_load_explicit(m, memory_order_relaxed);

	if (!p->pinned) {
		if ((uint32_t)old == 0)
			return false;
		/* relaxed: C0, no other writer and no reader in another thread */
		atomic_store_explicit(m, old - 1, memory_order_relaxed);
		if ((uint32_t)old == 1)
			p->free[p->n_free++] = c;
		return true;
	}
	do {
		if ((uint32_t)old == 0)
			return false;
		/* C0: acq_rel, see the file comment. */
	} while (!atomic_compare_exchange_weak_explicit(m, &old, old - 1, memory_order_acq_rel,
							memory_order_relaxed));
	if ((uint32_t)old == 1)
		p->free[p->n_free++] = c;
	return true;
}

bool chunk_pin(struct pub_pool *p, uint32_t c, uint32_t gen)
{
	_Atomic uint64_t *m = &p->meta[c];
	/* C1: acquire pairs with loan_init/hand_over's release. */
	uint64_t old = atomic_load_explicit(m, memory_order_acquire);

	do {
		if ((uint32_t)(old >> 32) != gen || (uint32_t)old == 0)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(m, &old, old + 1, memory_order_acq_rel,
							memory_order_acquire));
	return true;
}
