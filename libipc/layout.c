/* layout.c - table offsets and the layout digest of the management segment.
 *
 * Broker and clients compute the same offsets from the limits in the header;
 * the digest folds in every structure size so a client built against another
 * layout is refused (-EPROTO) instead of misreading memory.
 */
#include "layout.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

uint64_t layout_chunk_stride(uint64_t payload_size)
{
	return payload_size ? align_up(payload_size, TAKT_CACHELINE) : TAKT_CACHELINE;
}

static uint32_t pow2_at_least(uint64_t v)
{
	uint64_t p = 1;

	while (p < v && p < (1ull << 31))
		p <<= 1;
	return (uint32_t)p;
}

uint32_t layout_ret_slots(const struct takt_limits *lim)
{
	return pow2_at_least((uint64_t)lim->queue_depth_max + lim->held_max);
}

void layout_compute(const struct takt_limits *lim, struct takt_layout *out)
{
	uint64_t off = sizeof(struct takt_mgmt_header);

	out->ret_slots = layout_ret_slots(lim);
	out->off_procs = off;
	off = align_up(off + (uint64_t)lim->processes * sizeof(struct takt_proc), TAKT_CACHELINE);
	out->off_topics = off;
	off = align_up(off + (uint64_t)lim->topics * sizeof(struct takt_topic), TAKT_CACHELINE);
	out->off_pubs = off;
	off = align_up(off + (uint64_t)lim->publishers * sizeof(struct takt_pub_port), TAKT_CACHELINE);
	out->off_subs = off;
	off = align_up(off + (uint64_t)lim->subscribers * sizeof(struct takt_sub_port), TAKT_CACHELINE);
	out->off_conns = off;
	off = align_up(off + (uint64_t)lim->connections * sizeof(struct takt_conn), TAKT_CACHELINE);
	out->off_pub_conns = off;
	off = align_up(off + (uint64_t)lim->publishers * lim->subs_per_topic * sizeof(uint32_t), TAKT_CACHELINE);
	out->off_sub_conns = off;
	off = align_up(off + (uint64_t)lim->subscribers * lim->pubs_per_topic * sizeof(uint32_t), TAKT_CACHELINE);
	out->off_events = off;
	off = align_up(off + (uint64_t)lim->events * sizeof(struct takt_event_slot), TAKT_CACHELINE);
	out->size = align_up(off, TAKT_PAGE);
	out->lanes_off = align_up(sizeof(struct takt_listener_queue) + ((uint64_t)lim->processes + 63) / 64 * 8,
				  TAKT_CACHELINE);
	out->listener_size = align_up(out->lanes_off + (uint64_t)lim->processes * sizeof(struct takt_lane), TAKT_PAGE);
}

void layout_pool(const struct takt_limits *lim, struct takt_pool_layout *out)
{
	out->n_slots = lim->subs_per_topic;
	out->live_off = sizeof(struct takt_pool_header);
	out->conns_off = out->live_off + sizeof(struct takt_pub_live);
	out->ring_off = align_up(out->conns_off + (uint64_t)out->n_slots * sizeof(struct takt_conn_pub), TAKT_PAGE);
	out->ring_region = align_up((uint64_t)lim->queue_depth_max * sizeof(struct takt_ring_slot), TAKT_PAGE);
	out->chunk_off = out->ring_off + (uint64_t)out->n_slots * out->ring_region;
}

void layout_subseg(const struct takt_limits *lim, struct takt_subseg_layout *out)
{
	out->n_slots = lim->pubs_per_topic;
	out->live_off = sizeof(struct takt_subseg_header);
	out->conns_off = out->live_off + sizeof(struct takt_sub_live);
	out->ret_off = align_up(out->conns_off + (uint64_t)out->n_slots * sizeof(struct takt_conn_sub), TAKT_PAGE);
	out->ret_region = align_up((uint64_t)layout_ret_slots(lim) * sizeof(uint32_t), TAKT_PAGE);
	out->size = out->ret_off + (uint64_t)out->n_slots * out->ret_region;
}

uint64_t layout_ring_bytes(uint32_t mask)
{
	return align_up(((uint64_t)mask + 1) * sizeof(struct takt_ring_slot), TAKT_PAGE);
}

uint64_t layout_ret_bytes(uint32_t ret_mask)
{
	return align_up(((uint64_t)ret_mask + 1) * sizeof(uint32_t), TAKT_PAGE);
}

uint32_t layout_conn_ret_slots(const struct takt_limits *lim, uint32_t depth)
{
	return pow2_at_least((uint64_t)depth + lim->held_max);
}

static uint64_t fnv(uint64_t h, uint64_t v)
{
	for (int i = 0; i < 8; i++) {
		h ^= (v >> (i * 8)) & 0xff;
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t layout_digest(const struct takt_limits *lim)
{
	const uint64_t sizes[] = {
		sizeof(struct takt_mgmt_header), sizeof(struct takt_pool_header),
		sizeof(struct takt_proc),        sizeof(struct takt_topic),
		sizeof(struct takt_pub_port),    sizeof(struct takt_sub_port),
		sizeof(struct takt_conn),        TAKT_CACHELINE,
		sizeof(struct takt_event_slot),  sizeof(struct takt_ring_slot),
		sizeof(struct takt_lane),        sizeof(struct takt_listener_queue), TAKT_MAX_LISTENERS,
		sizeof(struct takt_conn_pub),    sizeof(struct takt_conn_sub),
		sizeof(struct takt_pub_live),    sizeof(struct takt_sub_live),
		sizeof(struct takt_subseg_header), TAKT_PAGE,
		TAKT_MAX_PUBS_PER_TOPIC,         TAKT_MAX_SUBS_PER_TOPIC,
		TAKT_MAX_HELD,                   TAKT_MAX_LOANS,
		TAKT_MAX_HISTORY,                TAKT_EVENT_QUEUE,
	};
	const uint32_t *l = (const uint32_t *)lim;
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		h = fnv(h, sizes[i]);
	for (size_t i = 0; i < sizeof(*lim) / sizeof(uint32_t); i++)
		h = fnv(h, l[i]);
	return h;
}
