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
	_Atomic uint32_t *pub_conns, *sub_conns; /* use seg_pub_conns, seg_sub_conns */
	struct takt_event_slot *events;
};

/* Publisher port pi's connection list: subs_per_topic words, TAKT_NONE or
 * a connection index (written by the broker, W1). */
static inline _Atomic uint32_t *seg_pub_conns(const struct seg_view *v, uint32_t pi)
{
	return v->pub_conns + (size_t)pi * v->lim.subs_per_topic;
}

/* Subscriber port si's: pubs_per_topic words. */
static inline _Atomic uint32_t *seg_sub_conns(const struct seg_view *v, uint32_t si)
{
	return v->sub_conns + (size_t)si * v->lim.pubs_per_topic;
}

/* Builds the view from a mapped management segment. -EPROTO when the magic,
 * ABI version, digest or sizes do not match this build. */
int seg_view_init(struct seg_view *v, void *mgmt, size_t mgmt_size);
/* A listener's queue segment as a process maps it (read-write). */
struct seg_listener {
	struct takt_listener_queue *q;
	size_t size;
	uint32_t lanes, hint_words;
	struct takt_lane *lane0;
};
void seg_listener_header_fill(struct takt_listener_queue *q, const struct seg_view *v, uint32_t event,
			      uint32_t listener);
/* Validates a mapped listener queue of (event, listener); -EPROTO. Its
 * header is writable by every notifier: checked once, then never read
 * again (the geometry is the registry's). */
int seg_listener_check(const struct seg_view *v, uint32_t event, uint32_t listener, void *base, size_t size,
		       struct seg_listener *out);
static inline struct takt_lane *seg_lane(const struct seg_listener *l, uint32_t p)
{
	return &l->lane0[p];
}

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

/* A publisher's pool segment as a process maps it. */
struct seg_pool {
	uint8_t *base;          /* mapping of the pool segment */
	size_t size;
	uint64_t stride;
	uint64_t payload_size;
	uint32_t n_max;         /* chunks the segment can hold */
	uint32_t n_slots;       /* connection slots */
	uint64_t chunk_off, ring_off, ring_region;
	struct takt_pub_live *live;
	struct takt_conn_pub *conns;
};

/* A subscriber's segment as a process maps it. */
struct seg_subseg {
	uint8_t *base;
	size_t size;
	uint32_t n_slots;
	uint64_t ret_off, ret_region;
	struct takt_sub_live *live;
	struct takt_conn_sub *conns;
};

/* The header a publisher's pool segment starts with. */
void seg_pool_header_fill(struct takt_pool_header *ph, const struct seg_view *v, const struct takt_pub_port *pp,
			  uint64_t epoch);
/* Validates a mapped pool segment against the registry's publisher port
 * (geometry and id, both written by the broker) and fills *out. -EPROTO. */
int seg_pool_check(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		   struct seg_pool *out);
/* Fills *out for a pool segment mapped at base (size bytes) without
 * validating it: for the broker, which wrote it. */
void seg_pool_at(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		 struct seg_pool *out);
/* Bytes of a pool segment up to the end of its chunk n. */
static inline uint64_t seg_pool_bytes(const struct seg_view *v, uint64_t stride, uint64_t n)
{
	struct takt_pool_layout pl;

	layout_pool(&v->lim, &pl);
	return pl.chunk_off + stride * n;
}

void seg_subseg_header_fill(struct takt_subseg_header *h, const struct seg_view *v, uint32_t sub,
			    uint64_t epoch);
/* Validates a mapped subscriber's segment (of port sub) and fills *out. */
int seg_subseg_check(const struct seg_view *v, uint32_t sub, void *base, size_t size, struct seg_subseg *out);

/* Maps an fd received from the broker (whole file, MAP_SHARED). */
int seg_map_fd(int fd, int prot, void **ret_base, size_t *ret_size);

/* Chunk c must be < p->n_max. */
static inline void *seg_chunk_payload(const struct seg_pool *p, uint32_t c)
{
	return p->base + p->chunk_off + (uint64_t)c * p->stride;
}

/* The chunk whose payload starts at ptr, or TAKT_NONE. */
static inline uint32_t seg_chunk_of(const struct seg_pool *p, const void *ptr)
{
	const uint8_t *q = ptr;
	uint64_t off;

	if (!p->base || q < p->base + p->chunk_off || q >= p->base + p->size)
		return TAKT_NONE;
	off = (uint64_t)(q - p->base - p->chunk_off);
	if (off % p->stride != 0 || off / p->stride >= p->n_max)
		return TAKT_NONE;
	return (uint32_t)(off / p->stride);
}

/* Connection slot j of a pool (j < n_slots): the publisher's words and
 * its ring's slots. */
static inline struct takt_conn_pub *seg_pool_conn(const struct seg_pool *p, uint32_t j)
{
	return &p->conns[j];
}

static inline struct takt_ring_slot *seg_pool_ring(const struct seg_pool *p, uint32_t j)
{
	return (struct takt_ring_slot *)(p->base + p->ring_off + (uint64_t)j * p->ring_region);
}

/* Connection slot k of a subscriber's segment (k < n_slots). */
static inline struct takt_conn_sub *seg_subseg_conn(const struct seg_subseg *s, uint32_t k)
{
	return &s->conns[k];
}

static inline _Atomic uint32_t *seg_subseg_rets(const struct seg_subseg *s, uint32_t k)
{
	return (_Atomic uint32_t *)(s->base + s->ret_off + (uint64_t)k * s->ret_region);
}

#endif
