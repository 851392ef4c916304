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
	if (l->pubs_per_topic > TAKT_MAX_PUBS_PER_TOPIC || l->subs_per_topic > TAKT_MAX_SUBS_PER_TOPIC ||
	    l->pubs_per_topic == 0 || l->subs_per_topic == 0)
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
	if (lay.size > mgmt_size || h->ret_slots != lay.ret_slots || h->off_pub_conns != lay.off_pub_conns ||
	    h->off_sub_conns != lay.off_sub_conns)
		return -EPROTO;
	v->hdr = h;
	v->mgmt_size = mgmt_size;
	v->ret_slots = lay.ret_slots;
	v->procs = (struct takt_proc *)(b + lay.off_procs);
	v->topics = (struct takt_topic *)(b + lay.off_topics);
	v->pubs = (struct takt_pub_port *)(b + lay.off_pubs);
	v->subs = (struct takt_sub_port *)(b + lay.off_subs);
	v->conns = (struct takt_conn *)(b + lay.off_conns);
	v->pub_conns = (_Atomic uint32_t *)(b + lay.off_pub_conns);
	v->sub_conns = (_Atomic uint32_t *)(b + lay.off_sub_conns);
	v->events = (struct takt_event_slot *)(b + lay.off_events);
	return 0;
}

void seg_listener_header_fill(struct takt_listener_queue *q, const struct seg_view *v, uint32_t event,
			      uint32_t listener)
{
	q->magic = TAKT_LISTENER_MAGIC;
	q->abi_version = TAKT_ABI_VERSION;
	q->event = event;
	q->listener = listener;
	q->lanes = v->lim.processes;
}

int seg_listener_check(const struct seg_view *v, uint32_t event, uint32_t listener, void *base, size_t size,
		       struct seg_listener *out)
{
	const struct takt_listener_queue *q = base;
	struct takt_layout lay;

	layout_compute(&v->lim, &lay);
	if (size < lay.listener_size || q->magic != TAKT_LISTENER_MAGIC || q->abi_version != TAKT_ABI_VERSION ||
	    q->event != event || q->listener != listener || q->lanes != v->lim.processes)
		return -EPROTO;
	*out = (struct seg_listener){.q = base, .size = size, .lanes = v->lim.processes,
				     .hint_words = (v->lim.processes + 63) / 64,
				     .lane0 = (struct takt_lane *)((uint8_t *)base + lay.lanes_off)};
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
	h->off_pub_conns = lay.off_pub_conns;
	h->off_sub_conns = lay.off_sub_conns;
	h->off_events = lay.off_events; /* in the events segment */
	/* TG0: a new broker's generation differs from its predecessor's
	 * (almost surely; takt_node_epoch tells for sure) */
	atomic_store_explicit(&h->topics_gen, (uint32_t)spec->epoch, memory_order_relaxed);
	snprintf(h->domain, sizeof(h->domain), "%s", spec->domain);
}

void seg_pool_header_fill(struct takt_pool_header *ph, const struct seg_view *v, const struct takt_pub_port *pp,
			  uint64_t epoch)
{
	struct takt_pool_layout pl;

	layout_pool(&v->lim, &pl);
	*ph = (struct takt_pool_header){
		.magic = TAKT_POOL_MAGIC,
		.abi_version = TAKT_ABI_VERSION,
		.n_chunks_max = pp->n_chunks_max,
		.publisher_id = pp->id,
		.epoch = epoch,
		.payload_size = pp->payload_size,
		.chunk_stride = pp->chunk_stride,
		.layout_digest = v->hdr->layout_digest,
		.n_slots = pl.n_slots,
		.conns_off = pl.conns_off,
		.ring_off = pl.ring_off,
		.ring_region = pl.ring_region,
		.chunk_off = pl.chunk_off,
	};
}

void seg_pool_at(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		 struct seg_pool *out)
{
	struct takt_pool_layout pl;

	layout_pool(&v->lim, &pl);
	*out = (struct seg_pool){.base = base, .size = size, .stride = pp->chunk_stride,
				 .payload_size = pp->payload_size, .n_max = pp->n_chunks_max,
				 .n_slots = pl.n_slots, .chunk_off = pl.chunk_off, .ring_off = pl.ring_off,
				 .ring_region = pl.ring_region,
				 .live = (struct takt_pub_live *)((uint8_t *)base + pl.live_off),
				 .conns = (struct takt_conn_pub *)((uint8_t *)base + pl.conns_off)};
}

int seg_pool_check(const struct seg_view *v, const struct takt_pub_port *pp, void *base, size_t size,
		   struct seg_pool *out)
{
	const struct takt_pool_header *ph = base;
	struct takt_pool_layout pl;
	/* The geometry comes from the registry (the broker wrote it); the
	 * segment's own header must agree, and the mapping must cover it. */
	uint64_t stride = pp->chunk_stride, n_max = pp->n_chunks_max, payload = pp->payload_size;

	layout_pool(&v->lim, &pl);
	if (stride != layout_chunk_stride(payload) || n_max == 0 || size < sizeof(*ph) ||
	    pl.chunk_off + stride * n_max > size)
		return -EPROTO;
	if (ph->magic != TAKT_POOL_MAGIC || ph->abi_version != TAKT_ABI_VERSION || ph->publisher_id != pp->id ||
	    ph->chunk_stride != stride || ph->n_chunks_max != n_max || ph->payload_size != payload ||
	    ph->layout_digest != v->hdr->layout_digest || ph->n_slots != pl.n_slots ||
	    ph->conns_off != pl.conns_off || ph->ring_off != pl.ring_off || ph->ring_region != pl.ring_region ||
	    ph->chunk_off != pl.chunk_off)
		return -EPROTO;
	seg_pool_at(v, pp, base, size, out);
	return 0;
}

void seg_subseg_header_fill(struct takt_subseg_header *h, const struct seg_view *v, uint32_t sub,
			    uint64_t epoch)
{
	struct takt_subseg_layout sl;

	layout_subseg(&v->lim, &sl);
	*h = (struct takt_subseg_header){
		.magic = TAKT_SUBSEG_MAGIC,
		.abi_version = TAKT_ABI_VERSION,
		.sub = sub,
		.epoch = epoch,
		.layout_digest = v->hdr->layout_digest,
		.n_slots = sl.n_slots,
		.conns_off = sl.conns_off,
		.ret_off = sl.ret_off,
		.ret_region = sl.ret_region,
	};
}

int seg_subseg_check(const struct seg_view *v, uint32_t sub, void *base, size_t size, struct seg_subseg *out)
{
	const struct takt_subseg_header *h = base;
	struct takt_subseg_layout sl;

	layout_subseg(&v->lim, &sl);
	if (size < sl.size || h->magic != TAKT_SUBSEG_MAGIC || h->abi_version != TAKT_ABI_VERSION ||
	    h->sub != sub || h->layout_digest != v->hdr->layout_digest || h->n_slots != sl.n_slots ||
	    h->conns_off != sl.conns_off || h->ret_off != sl.ret_off || h->ret_region != sl.ret_region)
		return -EPROTO;
	*out = (struct seg_subseg){.base = base, .size = size, .n_slots = sl.n_slots, .ret_off = sl.ret_off,
				   .ret_region = sl.ret_region,
				   .live = (struct takt_sub_live *)((uint8_t *)base + sl.live_off),
				   .conns = (struct takt_conn_sub *)((uint8_t *)base + sl.conns_off)};
	return 0;
}
