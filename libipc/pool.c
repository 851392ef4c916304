/* pool.c - lock-free chunk free lists (ABA-tagged Treiber stacks) and
 * reference counts.
 *
 * Free-list head: tag << 32 | (local index + 1), 0 = empty. Every successful
 * CAS increments the tag, so a pop that read head H, stalled while H's chunk
 * was popped and pushed back, fails its CAS instead of installing a stale
 * next (ABA). The 32-bit tag would have to wrap exactly in that window.
 *
 * Pairings:
 *   F0 push: store next (relaxed) then CAS head (release)   -> F1
 *   F1 pop:  load head (acquire) then read next             <- F0
 *   C0 unref: CAS refs (acq_rel): release our payload accesses, acquire
 *      everyone else's, so the thread that frees sees all prior accesses.
 */
#include "pool.h"

static inline uint64_t head_pack(uint64_t tag, uint32_t local_plus1)
{
	return (tag << 32) | local_plus1;
}

uint32_t pool_pop_mpmc(const struct seg_view *v, uint32_t k)
{
	const struct seg_pool *p = &v->pool[k];
	_Atomic uint64_t *head = &v->hdr->pools[k].free_head;
	/* F1: acquire pairs with F0's release so next of the top chunk is visible. */
	uint64_t h = atomic_load_explicit(head, memory_order_acquire);

	for (;;) {
		uint32_t top = (uint32_t)h;
		uint32_t next;

		if (top == 0 || top > p->n)
			return TAKT_NONE; /* empty, or a corrupted head: refuse to follow it */
		/* relaxed: may be stale if top was popped meanwhile; the CAS then fails. */
		next = atomic_load_explicit(&v->chunks[p->first + top - 1].next, memory_order_relaxed);
		if (next > p->n)
			next = 0; /* corrupted link: cut the list rather than follow it */
		/* F1: acquire on success orders our later use of the chunk after the
		 * pusher's release; on failure reload head with acquire again. */
		if (atomic_compare_exchange_weak_explicit(head, &h, head_pack((h >> 32) + 1, next),
							  memory_order_acquire, memory_order_acquire))
			return p->first + top - 1;
	}
}

void pool_push_mpmc(const struct seg_view *v, uint32_t c)
{
	uint32_t k = seg_chunk_class(v, c);
	_Atomic uint64_t *head = &v->hdr->pools[k].free_head;
	uint32_t local_plus1 = c - v->pool[k].first + 1;
	/* relaxed: the CAS below validates what we read. */
	uint64_t h = atomic_load_explicit(head, memory_order_relaxed);

	do {
		/* F0: relaxed store made visible by the release CAS below. */
		atomic_store_explicit(&v->chunks[c].next, (uint32_t)h, memory_order_relaxed);
	} while (!atomic_compare_exchange_weak_explicit(head, &h, head_pack((h >> 32) + 1, local_plus1),
							memory_order_release, memory_order_relaxed));
}

uint32_t chunk_loan_init(const struct seg_view *v, uint32_t c)
{
	/* relaxed: the chunk is ours alone after the pop (F1 acquired it). */
	uint64_t old = atomic_load_explicit(&v->chunks[c].refs, memory_order_relaxed);
	uint32_t gen = (uint32_t)(old >> 32) + 1;

	if (gen == 0)
		gen = 1; /* generation 0 marks an empty history entry */
	/* C1: release pairs with chunk_pin's acquire CAS: a pinner that sees the
	 * new generation sees this chunk as a fresh loan. */
	atomic_store_explicit(&v->chunks[c].refs, (uint64_t)gen << 32 | 1, memory_order_release);
	return gen;
}

void chunk_ref_add(const struct seg_view *v, uint32_t c, uint32_t n)
{
	/* relaxed: the caller holds a reference, so the count cannot reach 0
	 * meanwhile; ordering comes from the ring push (R0) that hands it on. */
	atomic_fetch_add_explicit(&v->chunks[c].refs, n, memory_order_relaxed);
}

bool chunk_unref(const struct seg_view *v, uint32_t c)
{
	_Atomic uint64_t *r = &v->chunks[c].refs;
	uint64_t old = atomic_load_explicit(r, memory_order_relaxed);

	do {
		if ((uint32_t)old == 0)
			return false;
		/* C0: acq_rel, see the file comment. */
	} while (!atomic_compare_exchange_weak_explicit(r, &old, old - 1, memory_order_acq_rel,
							memory_order_relaxed));
	if ((uint32_t)old == 1)
		pool_push_mpmc(v, c);
	return true;
}

bool chunk_pin(const struct seg_view *v, uint32_t c, uint32_t gen)
{
	_Atomic uint64_t *r = &v->chunks[c].refs;
	/* C1: acquire pairs with chunk_loan_init's release. */
	uint64_t old = atomic_load_explicit(r, memory_order_acquire);

	do {
		if ((uint32_t)(old >> 32) != gen || (uint32_t)old == 0)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(r, &old, old + 1, memory_order_acq_rel,
							memory_order_acquire));
	return true;
}

uint32_t pool_count_free(const struct seg_view *v, uint32_t k)
{
	const struct seg_pool *p = &v->pool[k];
	/* acquire: pairs with F0 so the links we follow are initialised. */
	uint32_t cur = (uint32_t)atomic_load_explicit(&v->hdr->pools[k].free_head, memory_order_acquire);
	uint32_t n = 0;

	while (cur != 0 && cur <= p->n && n < p->n) {
		n++;
		cur = atomic_load_explicit(&v->chunks[p->first + cur - 1].next, memory_order_relaxed);
	}
	return n;
}

void pool_format(const struct seg_view *v)
{
	for (uint32_t k = 0; k < v->lim.n_classes; k++) {
		const struct seg_pool *p = &v->pool[k];

		atomic_store_explicit(&v->hdr->pools[k].free_head, 0, memory_order_relaxed);
		for (uint32_t i = p->n; i-- > 0;) {
			v->chunks[p->first + i].pool_class = k;
			atomic_store_explicit(&v->chunks[p->first + i].refs, 0, memory_order_relaxed);
			pool_push_mpmc(v, p->first + i);
		}
	}
}
