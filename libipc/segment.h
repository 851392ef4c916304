/* segment.h - a process's validated view of a domain's segments.
 *
 * Both the broker and clients map the management segment and the payload
 * segments and build this view once. Limits are copied out of the header
 * after validation, so every later bounds check compares against values no
 * other process can change.
 */
#ifndef TAKT_SEGMENT_H
#define TAKT_SEGMENT_H

#include "layout.h"

#include <stdbool.h>
#include <stddef.h>

struct seg_pool {
	uint8_t *base;          /* payload segment mapping */
	size_t size;
	uint64_t stride;
	uint64_t payload_size;
	uint32_t first;         /* global index of local chunk 0 */
	uint32_t n;
};

struct seg_view {
	struct takt_mgmt_header *hdr;
	size_t mgmt_size;
	struct takt_limits lim;
	uint32_t n_chunks;
	struct takt_proc *procs;
	struct takt_topic *topics;
	struct takt_pub_port *pubs;
	struct takt_sub_port *subs;
	struct takt_conn *conns;
	struct takt_ring_slot *rings;
	struct takt_chunk_meta *chunks;
	struct takt_event_slot *events;
	struct seg_pool pool[TAKT_MAX_CLASSES];
};

/* Builds the view from a mapped management segment. -EPROTO when the magic,
 * ABI version, digest or sizes do not match this build. */
int seg_view_init(struct seg_view *v, void *mgmt, size_t mgmt_size);
/* Validates and records a mapped payload segment of class k. */
int seg_view_add_pool(struct seg_view *v, uint32_t k, void *base, size_t size);

/* What a management header is built from (the broker's config, or a test's). */
struct seg_spec {
	struct takt_limits lim;
	const uint64_t *class_size; /* payload bytes per class, lim.n_classes entries */
	const uint32_t *class_count;
	uint32_t n_chunks;
	uint64_t epoch;
	const char *domain;
};

/* Fills every field of a fresh management header but the magic, which the
 * creator stores last (after a release fence) so a half-written header
 * never validates. */
void seg_header_fill(struct takt_mgmt_header *h, const struct seg_spec *spec);
/* Writes the header line of payload segment k. */
void seg_pool_header_fill(void *base, uint32_t k, const struct takt_mgmt_header *h);

/* Maps an fd received from the broker (whole file, MAP_SHARED). */
int seg_map_fd(int fd, int prot, void **ret_base, size_t *ret_size);

static inline bool seg_chunk_ok(const struct seg_view *v, uint32_t c)
{
	return c < v->n_chunks;
}

static inline uint32_t seg_chunk_class(const struct seg_view *v, uint32_t c)
{
	for (uint32_t k = 0; k < v->lim.n_classes; k++)
		if (c - v->pool[k].first < v->pool[k].n)
			return k;
	return TAKT_NONE;
}

/* Chunk c must be valid (seg_chunk_ok). */
static inline struct takt_chunk_header *seg_chunk_header(const struct seg_view *v, uint32_t c)
{
	uint32_t k = seg_chunk_class(v, c);
	const struct seg_pool *p = &v->pool[k];

	return (struct takt_chunk_header *)(p->base + TAKT_CACHELINE +
					    (uint64_t)(c - p->first) * p->stride);
}

static inline void *seg_chunk_payload(const struct seg_view *v, uint32_t c)
{
	return (uint8_t *)seg_chunk_header(v, c) + sizeof(struct takt_chunk_header);
}

/* The chunk whose payload starts at ptr, or TAKT_NONE. */
uint32_t seg_chunk_of(const struct seg_view *v, const void *ptr);

static inline struct takt_ring_slot *seg_ring_slots(const struct seg_view *v, uint32_t conn)
{
	return v->rings + (uint64_t)conn * v->lim.queue_depth_max;
}

/* Payload segment offset of local chunk i: one header line, then chunks. */
static inline uint64_t seg_pool_bytes(uint64_t stride, uint32_t n)
{
	return TAKT_CACHELINE + stride * n;
}

#endif
