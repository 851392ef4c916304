/* segment.c - validating and mapping a domain's segments. */
#include "segment.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

int seg_map_fd(int fd, int prot, void **ret_base, size_t *ret_size)
{
	struct stat st;
	void *p;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size < (off_t)sizeof(struct takt_pool_header))
		return -EPROTO;
	p = mmap(NULL, (size_t)st.st_size, prot, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		return -errno;
	*ret_base = p;
	*ret_size = (size_t)st.st_size;
	return 0;
}

static int limits_ok(const struct takt_limits *l)
{
	if (l->n_classes == 0 || l->n_classes > TAKT_MAX_CLASSES)
		return 0;
	if (l->pubs_per_topic > TAKT_MAX_PUBS_PER_TOPIC || l->subs_per_topic > TAKT_MAX_SUBS_PER_TOPIC)
		return 0;
	if (l->held_max > TAKT_MAX_HELD || l->loans_max > TAKT_MAX_LOANS ||
	    l->history_max > TAKT_MAX_HISTORY)
		return 0;
	if (l->queue_depth_max > TAKT_MAX_QUEUE_DEPTH || l->queue_depth_max == 0 ||
	    (l->queue_depth_max & (l->queue_depth_max - 1)))
		return 0;
	return 1;
}

int seg_view_init(struct seg_view *v, void *mgmt, size_t mgmt_size)
{
	struct takt_mgmt_header *h = mgmt;
	struct takt_layout lay;
	uint8_t *b = mgmt;

	if (mgmt_size < sizeof(*h) || h->magic != TAKT_MGMT_MAGIC ||
	    h->abi_version != TAKT_ABI_VERSION || h->header_size != sizeof(*h))
		return -EPROTO;
	memset(v, 0, sizeof(*v));
	v->lim = h->limits;
	v->n_chunks = h->n_chunks;
	if (!limits_ok(&v->lim) || h->layout_digest != layout_digest(&v->lim, v->n_chunks))
		return -EPROTO;
	layout_compute(&v->lim, v->n_chunks, &lay);
	if (lay.size > mgmt_size)
		return -EPROTO;
	v->hdr = h;
	v->mgmt_size = mgmt_size;
	v->procs = (struct takt_proc *)(b + lay.off_procs);
	v->topics = (struct takt_topic *)(b + lay.off_topics);
	v->pubs = (struct takt_pub_port *)(b + lay.off_pubs);
	v->subs = (struct takt_sub_port *)(b + lay.off_subs);
	v->conns = (struct takt_conn *)(b + lay.off_conns);
	v->rings = (struct takt_ring_slot *)(b + lay.off_rings);
	v->chunks = (struct takt_chunk_meta *)(b + lay.off_chunks);
	v->events = (struct takt_event_slot *)(b + lay.off_events);
	return 0;
}

int seg_view_add_pool(struct seg_view *v, uint32_t k, void *base, size_t size)
{
	const struct takt_pool_desc *d;
	const struct takt_pool_header *ph = base;
	uint64_t last_end = 0;

	if (k >= v->lim.n_classes)
		return -EPROTO;
	d = &v->hdr->pools[k];
	if (k > 0)
		last_end = (uint64_t)v->pool[k - 1].first + v->pool[k - 1].n;
	/* Classes tile [0, n_chunks) in order; checked once, trusted after. */
	if (d->first_chunk != last_end || (uint64_t)d->first_chunk + d->n_chunks > v->n_chunks ||
	    d->chunk_stride != layout_chunk_stride(d->payload_size) ||
	    seg_pool_bytes(d->chunk_stride, d->n_chunks) > size)
		return -EPROTO;
	if (ph->magic != TAKT_POOL_MAGIC || ph->abi_version != TAKT_ABI_VERSION ||
	    ph->pool_class != k || ph->layout_digest != v->hdr->layout_digest)
		return -EPROTO;
	v->pool[k] = (struct seg_pool){
		.base = base,
		.size = size,
		.stride = d->chunk_stride,
		.payload_size = d->payload_size,
		.first = d->first_chunk,
		.n = d->n_chunks,
	};
	return 0;
}

uint32_t seg_chunk_of(const struct seg_view *v, const void *ptr)
{
	const uint8_t *p = ptr;

	for (uint32_t k = 0; k < v->lim.n_classes; k++) {
		const struct seg_pool *sp = &v->pool[k];
		uint64_t off;

		if (!sp->base || p < sp->base + TAKT_CACHELINE || p >= sp->base + sp->size)
			continue;
		off = (uint64_t)(p - sp->base - TAKT_CACHELINE);
		if (off % sp->stride != sizeof(struct takt_chunk_header) || off / sp->stride >= sp->n)
			return TAKT_NONE;
		return sp->first + (uint32_t)(off / sp->stride);
	}
	return TAKT_NONE;
}

void seg_header_fill(struct takt_mgmt_header *h, const struct seg_spec *spec)
{
	struct takt_layout lay;
	uint32_t first = 0;

	layout_compute(&spec->lim, spec->n_chunks, &lay);
	h->abi_version = TAKT_ABI_VERSION;
	h->header_size = sizeof(*h);
	h->layout_digest = layout_digest(&spec->lim, spec->n_chunks);
	h->epoch = spec->epoch;
	h->segment_size = lay.size;
	h->n_chunks = spec->n_chunks;
	h->limits = spec->lim;
	h->off_procs = lay.off_procs;
	h->off_topics = lay.off_topics;
	h->off_pubs = lay.off_pubs;
	h->off_subs = lay.off_subs;
	h->off_conns = lay.off_conns;
	h->off_rings = lay.off_rings;
	h->off_chunks = lay.off_chunks;
	h->off_events = lay.off_events;
	snprintf(h->domain, sizeof(h->domain), "%s", spec->domain);
	/* Classes tile the chunk index space in order (checked by clients). */
	for (uint32_t k = 0; k < spec->lim.n_classes; k++) {
		struct takt_pool_desc *d = &h->pools[k];

		d->payload_size = spec->class_size[k];
		d->chunk_stride = layout_chunk_stride(d->payload_size);
		d->n_chunks = spec->class_count[k];
		d->first_chunk = first;
		d->segment_size = seg_pool_bytes(d->chunk_stride, d->n_chunks);
		first += d->n_chunks;
	}
}

void seg_pool_header_fill(void *base, uint32_t k, const struct takt_mgmt_header *h)
{
	*(struct takt_pool_header *)base = (struct takt_pool_header){
		.magic = TAKT_POOL_MAGIC,
		.abi_version = TAKT_ABI_VERSION,
		.pool_class = k,
		.layout_digest = h->layout_digest,
		.epoch = h->epoch,
	};
}
