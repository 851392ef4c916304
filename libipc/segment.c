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
	if (!limits_ok(&v->lim) || h->layout_digest != layout_digest(&v->lim))
		return -EPROTO;
	layout_compute(&v->lim, &lay);
	if (lay.size > mgmt_size || h->ret_slots != lay.ret_slots)
		return -EPROTO;
	v->hdr = h;
	v->mgmt_size = mgmt_size;
	v->ret_slots = lay.ret_slots;
	v->procs = (struct takt_proc *)(b + lay.off_procs);
	v->topics = (struct takt_topic *)(b + lay.off_topics);
	v->pubs = (struct takt_pub_port *)(b + lay.off_pubs);
	v->subs = (struct takt_sub_port *)(b + lay.off_subs);
	v->conns = (struct takt_conn *)(b + lay.off_conns);
	v->rings = (struct takt_ring_slot *)(b + lay.off_rings);
	v->rets = (_Atomic uint32_t *)(b + lay.off_rets);
	v->events = (struct takt_event_slot *)(b + lay.off_events);
	return 0;
}

void seg_header_fill(struct takt_mgmt_header *h, const struct seg_spec *spec)
{
	struct takt_layout lay;

	layout_compute(&spec->lim, &lay);
	h->abi_version = TAKT_ABI_VERSION;
	h->header_size = sizeof(*h);
	h->layout_digest = layout_digest(&spec->lim);
	h->epoch = spec->epoch;
	h->segment_size = lay.size;
	h->ret_slots = lay.ret_slots;
	h->limits = spec->lim;
	h->off_procs = lay.off_procs;
	h->off_topics = lay.off_topics;
	h->off_pubs = lay.off_pubs;
	h->off_subs = lay.off_subs;
	h->off_conns = lay.off_conns;
	h->off_rings = lay.off_rings;
	h->off_rets = lay.off_rets;
	h->off_events = lay.off_events;
	snprintf(h->domain, sizeof(h->domain), "%s", spec->domain);
}

void seg_pool_header_fill(struct takt_pool_header *ph, const struct takt_pub_port *pp, uint64_t epoch,
			  uint64_t digest)
{
	*ph = (struct takt_pool_header){
		.magic = TAKT_POOL_MAGIC,
		.abi_version = TAKT_ABI_VERSION,
		.n_chunks_max = pp->n_chunks_max,
		.publisher_id = pp->id,
		.epoch = epoch,
		.payload_size = pp->payload_size,
		.chunk_stride = pp->chunk_stride,
		.layout_digest = digest,
	};
}

int seg_pool_check(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		   struct seg_pool *out)
{
	const struct takt_pool_header *ph = base;
	/* The geometry comes from the registry (the broker wrote it); the
	 * segment's own header must agree, and the mapping must cover it. */
	uint64_t stride = pp->chunk_stride, n_max = pp->n_chunks_max, payload = pp->payload_size;

	if (stride != layout_chunk_stride(payload) || n_max == 0 || seg_pool_bytes(stride, n_max) > size ||
	    size < sizeof(*ph))
		return -EPROTO;
	if (ph->magic != TAKT_POOL_MAGIC || ph->abi_version != TAKT_ABI_VERSION || ph->publisher_id != pp->id ||
	    ph->chunk_stride != stride || ph->n_chunks_max != n_max || ph->payload_size != payload ||
	    ph->layout_digest != v->hdr->layout_digest)
		return -EPROTO;
	*out = (struct seg_pool){.base = base, .size = size, .stride = stride, .payload_size = payload,
				 .n_max = (uint32_t)n_max};
	return 0;
}
