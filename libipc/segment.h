/* segment.h - a process's validated view of a domain's segments.
 *
 * The broker and clients map the management segment and build this view
 * once; limits are copied out of the header after validation, so every
 * later bounds check compares against values no other process can change.
 * A publisher's pool segment is validated on its own (seg_pool_check) when
 * its publisher or a subscriber maps it.
 */
#ifndef TAKT_SEGMENT_H
#define TAKT_SEGMENT_H

#include "layout.h"

#include <stdbool.h>
#include <stddef.h>

struct seg_view {
	struct takt_mgmt_header *hdr;
	size_t mgmt_size;
	struct takt_limits lim;
	uint32_t ret_slots;
	struct takt_proc *procs;
	struct takt_topic *topics;
	struct takt_pub_port *pubs;
	struct takt_sub_port *subs;
	struct takt_conn *conns;
	struct takt_ring_slot *rings;
	_Atomic uint32_t *rets;
	struct takt_event_slot *events;
};

/* Builds the view from a mapped management segment. -EPROTO when the magic,
 * ABI version, digest or sizes do not match this build. */
int seg_view_init(struct seg_view *v, void *mgmt, size_t mgmt_size);

/* What a management header is built from (the broker's config, or a test's). */
struct seg_spec {
	struct takt_limits lim;
	uint64_t epoch;
	const char *domain;
};

/* Fills every field of a fresh management header but the magic, which the
 * creator stores last (after a release fence) so a half-written header
 * never validates. */
void seg_header_fill(struct takt_mgmt_header *h, const struct seg_spec *spec);

/* A publisher's pool as a client maps it. */
struct seg_pool {
	uint8_t *base;          /* mapping of the pool segment */
	size_t size;
	uint64_t stride;
	uint64_t payload_size;
	uint32_t n_max;         /* chunks the mapping covers */
};

/* The pool header line a publisher's pool segment starts with. */
void seg_pool_header_fill(struct takt_pool_header *ph, const struct takt_pub_port *pp, uint64_t epoch,
			  uint64_t digest);
/* Validates a mapped pool segment against the registry's publisher port
 * (geometry and id, both written by the broker) and fills *out. -EPROTO. */
int seg_pool_check(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		   struct seg_pool *out);
/* Bytes of a pool segment holding n chunks of stride bytes. */
static inline uint64_t seg_pool_bytes(uint64_t stride, uint64_t n)
{
	return sizeof(struct takt_pool_header) + stride * n;
}

/* Maps an fd received from the broker (whole file, MAP_SHARED). */
int seg_map_fd(int fd, int prot, void **ret_base, size_t *ret_size);

/* Chunk c must be < p->n_max. */
static inline struct takt_chunk_header *seg_chunk_header(const struct seg_pool *p, uint32_t c)
{
	return (struct takt_chunk_header *)(p->base + sizeof(struct takt_pool_header) + (uint64_t)c * p->stride);
}

static inline void *seg_chunk_payload(const struct seg_pool *p, uint32_t c)
{
	return (uint8_t *)seg_chunk_header(p, c) + sizeof(struct takt_chunk_header);
}

/* The chunk whose payload starts at ptr, or TAKT_NONE. */
static inline uint32_t seg_chunk_of(const struct seg_pool *p, const void *ptr)
{
	const uint8_t *q = ptr;
	uint64_t off;

	if (!p->base || q < p->base + sizeof(struct takt_pool_header) || q >= p->base + p->size)
		return TAKT_NONE;
	off = (uint64_t)(q - p->base - sizeof(struct takt_pool_header));
	if (off % p->stride != sizeof(struct takt_chunk_header) || off / p->stride >= p->n_max)
		return TAKT_NONE;
	return (uint32_t)(off / p->stride);
}

static inline struct takt_ring_slot *seg_ring_slots(const struct seg_view *v, uint32_t conn)
{
	return v->rings + (uint64_t)conn * v->lim.queue_depth_max;
}

static inline _Atomic uint32_t *seg_ret_slots(const struct seg_view *v, uint32_t conn)
{
	return v->rets + (uint64_t)conn * v->ret_slots;
}

#endif
