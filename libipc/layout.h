/* layout.h - the memory layout of a takt domain's shared memory.
 *
 * Every segment has one writer process. The broker creates them all: one
 * management segment (the registry, written by the broker; and, in this
 * version, the event queues), one pool segment per publisher (written by
 * that publisher: its chunks, its live words, its words and sample ring of
 * each connection) and one segment per subscriber (written by that
 * subscriber: its park word and Q0 counter, its tail and return ring of
 * each connection). Every structure below lives in shared memory, so each
 * is fixed-size, made of fixed-width types, and pinned by _Static_asserts:
 * the layout digest in the header is computed from these sizes and the
 * domain's limits, and a client built against another layout refuses to
 * attach.
 *
 * Who writes what (docs/architecture.md has the full ownership table):
 *   registry words (state, names, port lists, pool sizes,
 *   regions, pub_quiet, broker_wakes)                       broker
 *   chunk headers, payloads, sample ring slots, head,
 *   ret_tail, floor, waiting, wake_at, dropped, wakes, pub active,
 *   statistics                                              the publisher
 *   return ring slots, ret_head, tail, park, sub active     the subscriber
 * Reference counts and free lists are private to each publisher: a chunk
 * comes back to its publisher through the connection's return ring.
 *
 * Cross-process references are indices, never pointers; every index read
 * from shared memory is bounds-checked by its reader (see segment.h).
 */
#ifndef TAKT_LAYOUT_H
#define TAKT_LAYOUT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TAKT_CACHELINE 64
#define TAKT_MGMT_MAGIC 0x544d474d544b4154ull /* "TAKTMGMT" */
#define TAKT_POOL_MAGIC 0x4c4f4f50544b4154ull /* "TAKTPOOL" */
#define TAKT_ABI_VERSION 8u

/* Compile-time caps. The broker config chooses limits at or below them. */
#define TAKT_NAME_MAX 64           /* topic, type and event names incl. NUL */
#define TAKT_PROC_NAME_MAX 32
/* Ceilings of [limits] publishers_per_topic and subscribers_per_topic:
 * sanity bounds, not array sizes (the connection lists are tables sized by
 * the limits, layout_compute). */
#define TAKT_MAX_PUBS_PER_TOPIC 4096
#define TAKT_MAX_SUBS_PER_TOPIC 4096
/* Ceilings of the [limits] held_max, loans_max and history_max: sanity
 * bounds, not array sizes (each handle allocates what the domain's limits
 * say, once, at open). */
#define TAKT_MAX_HELD 4096         /* samples one subscriber may hold */
#define TAKT_MAX_LOANS 4096        /* chunks one publisher may hold on loan */
#define TAKT_MAX_HISTORY 65536     /* samples a publisher keeps (delivered through a ring) */
#define TAKT_MAX_QUEUE_DEPTH 65536
#define TAKT_EVENT_QUEUE 64        /* ids queued per event (power of two) */

#define TAKT_NONE UINT32_MAX       /* "no index" in every index word */

#define TAKT_ALIGNED alignas(TAKT_CACHELINE)

enum takt_slot_state {
	SLOT_FREE = 0,
	SLOT_ACTIVE = 1,
	SLOT_CLOSING = 2, /* connections: retired, waiting for both ends to quiesce */
	SLOT_ORPHAN = 3,  /* connections: the publisher left; the subscriber still
	                     takes what it had sent, then the broker retires it */
};

/* Limits chosen by the broker config; copied into the header. */
struct takt_limits {
	uint32_t processes;
	uint32_t topics;
	uint32_t publishers;
	uint32_t subscribers;
	uint32_t pubs_per_topic;
	uint32_t subs_per_topic;
	uint32_t connections;
	uint32_t queue_depth_max; /* power of two */
	uint32_t history_max;
	uint32_t held_max;
	uint32_t loans_max;
	uint32_t events;
	uint32_t reserved;
	uint32_t flags;        /* TAKT_LIM_*: what the broker of this domain does */
};
/* The broker issues membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) between its
 * conn_gen bumps and its snapshots of `active` (Q0), so a client registered
 * for it may enter an operation with a plain store (see q0_enter). */
#define TAKT_LIM_MEMBARRIER 1u
_Static_assert(sizeof(struct takt_limits) == 56, "takt_limits layout");

/* Management-segment header, at offset 0. Offsets are from the segment start. */
struct takt_mgmt_header {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t header_size;
	uint64_t layout_digest;
	uint64_t epoch;           /* broker start, CLOCK_REALTIME ns: a new broker, a new epoch */
	uint64_t segment_size;
	_Atomic uint32_t broker_pid;
	uint32_t ret_slots;       /* return ring slots a connection has at most (power of two) */
	struct takt_limits limits;
	uint64_t off_procs, off_topics, off_pubs, off_subs, off_conns;
	uint64_t off_events;
	char domain[TAKT_NAME_MAX];
	uint64_t off_pub_conns, off_sub_conns; /* the ports' connection tables */
	/* TG0: bumped by the broker (release) after each change to a topic
	 * entry (topic_mirror, registry.c), then woken with a shared futex;
	 * starts at the low bits of the epoch. takt_node_topics_gen reads it. */
	_Atomic uint32_t topics_gen;
	uint8_t pad[20];
};
_Static_assert(sizeof(struct takt_mgmt_header) == 256, "takt_mgmt_header layout");

/* Registry entries: written only by the broker. */
struct takt_proc {
	_Atomic uint32_t state;
	int32_t pid;
	uint32_t uid, gid;
	uint64_t attached_ns;
	char name[TAKT_PROC_NAME_MAX];
	uint8_t pad[8];
};
_Static_assert(sizeof(struct takt_proc) == 64, "takt_proc layout");

struct takt_topic {
	_Atomic uint32_t state;
	uint32_t reserved0;
	uint32_t n_pubs, n_subs;
	char name[TAKT_NAME_MAX];
	char type_name[TAKT_NAME_MAX];
	char reply_type[TAKT_NAME_MAX]; /* a service's request topic (@/S/q): its response type, "" none */
	uint8_t pad[48];
};
_Static_assert(sizeof(struct takt_topic) % TAKT_CACHELINE == 0, "takt_topic layout");

/* A publisher port, written by the broker: registry and pool geometry.
 * What the publisher writes (its Q0 counter, statistics, rings) is in its
 * own pool segment (struct takt_pub_live, takt_pub_conn). */
struct takt_pub_port {
	_Atomic uint32_t state;
	uint32_t topic;
	uint32_t proc;
	uint32_t history;          /* history depth this publisher keeps */
	_Atomic uint32_t conn_gen; /* W1: broker bumps after changing conns[] or n_chunks */
	uint32_t n_chunks_max;     /* chunks its pool segment can hold (address space) */
	uint64_t id;               /* publisher id, unique in the domain (registry.c, I0) */
	uint64_t payload_size;     /* bytes per chunk: the publisher's max_payload */
	uint64_t chunk_stride;     /* payload rounded up to cache lines (layout_chunk_stride) */
	/* Chunks reserved in memory and usable, <= n_chunks_max: the broker
	 * grows it as subscribers connect (their depth + held_max each). */
	_Atomic uint32_t n_chunks;
	uint32_t reserved1;
	/* Its pool segment's inode (fstat): a publisher handing its pool back
	 * to a restarted broker must hand back this one (adopt.c). */
	uint64_t seg_ino;
	/* Its connections: subscribers_per_topic words (TAKT_NONE or a
	 * connection index) in the publishers' connection table
	 * (seg_pub_conns). */
};
_Static_assert(sizeof(struct takt_pub_port) == 64, "takt_pub_port layout");

/* A subscriber port, written by the broker. What the subscriber writes
 * (park, its Q0 counter, tails, returns) is in its own segment. */
struct takt_sub_port {
	_Atomic uint32_t state;
	uint32_t topic;
	uint32_t proc;
	uint32_t queue_depth;      /* samples queued at most per publisher (exact) */
	uint32_t overflow;         /* enum takt_overflow */
	uint32_t history;
	_Atomic uint32_t conn_gen; /* W1 */
	/* P3: bumped by the broker before it writes the eventfd for a
	 * publisher that died (registry.c, pub_wake_subs). */
	_Atomic uint32_t broker_wakes;
	uint64_t seg_ino;          /* its segment's inode, as seg_ino of a publisher */
	uint8_t pad0[24];
	/* Its connections: publishers_per_topic words in the subscribers'
	 * connection table (seg_sub_conns). */
};
_Static_assert(sizeof(struct takt_sub_port) == 64, "takt_sub_port layout");

/* A connection in the registry, written by the broker: which publisher
 * and subscriber, the ring geometry, and which region of each end's
 * segment holds its words (pub_slot in the publisher's pool segment,
 * sub_slot in the subscriber's segment). */
struct takt_conn {
	_Atomic uint32_t state;
	uint32_t pub;
	uint32_t sub;
	uint32_t mask;       /* sample slots - 1: the next power of two >= depth */
	uint32_t overflow;
	/* Bumped by the broker each time the slot is reused, so a client's
	 * local mirror of an earlier connection in the same slot is dropped. */
	_Atomic uint32_t incarnation;
	uint32_t depth;      /* samples queued at most, exactly what the subscriber asked */
	uint32_t ret_mask;   /* return slots - 1: the next power of two >= depth + held_max */
	uint32_t pub_slot;   /* its region in the publisher's pool segment */
	uint32_t sub_slot;   /* its region in the subscriber's segment */
	/* R2: 1 once the publisher left and quiesced (Q0), so it will never
	 * write this ring again: a claim it left open is the subscriber's. */
	_Atomic uint32_t pub_quiet;
	uint8_t pad0[20];
};
_Static_assert(sizeof(struct takt_conn) == 64, "takt_conn layout");
/* B0: a blocked publisher sleeps on the low half of the subscriber's tail. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "futex on the low half of tail");

/* The publisher's words of one connection, in its pool segment (region
 * pub_slot), written by the publisher alone (ring.h names the pairings). */
struct takt_conn_pub {
	/* Hot line: its sample ring position (for tools and tests), how far
	 * it has consumed returns, and which connection it initialised the
	 * region for (takt_conn_mark; release: the subscriber uses the ring
	 * only after). */
	_Atomic uint64_t head;
	_Atomic uint64_t ret_tail;
	_Atomic uint64_t mark;
	uint8_t pad0[40];
	/* Cold line, written only under overflow or when it blocks or wakes,
	 * so a subscriber reading it on every take keeps it cached.
	 * floor (R2): positions below it were taken back or consumed.
	 * waiting (B0): odd while the publisher sleeps for room, wake_at
	 * (B0H) how much room it sleeps for. dropped:
	 * samples this subscriber missed on this connection. */
	TAKT_ALIGNED _Atomic uint64_t floor;
	_Atomic uint64_t dropped;
	_Atomic uint32_t waiting;
	_Atomic uint32_t wakes; /* P2: eventfd writes to this subscriber, counted before each */
	/* B0H: the tail at which the subscriber wakes the waiting publisher
	 * (room for half the ring); 0 from a publisher that has none: at
	 * the first take. */
	_Atomic uint64_t wake_at;
	uint8_t pad1[32];
};
_Static_assert(offsetof(struct takt_conn_pub, floor) == 64, "floor line");
_Static_assert(sizeof(struct takt_conn_pub) == 128, "takt_conn_pub layout");

/* The subscriber's words of one connection, in its segment (region
 * sub_slot), written by the subscriber alone: what it has taken (tail, R1:
 * 2 x the position, + 1 while it decides a take with a drop-oldest
 * publisher, R2), returned (ret_head, T0), and which connection it
 * initialised the region for. */
struct takt_conn_sub {
	_Atomic uint64_t tail;
	_Atomic uint64_t ret_head;
	_Atomic uint64_t mark;  /* takt_conn_mark of the connection it initialised the region for */
	uint8_t pad[40];
};
_Static_assert(sizeof(struct takt_conn_sub) == 64, "takt_conn_sub layout");

/* Names one use of connection slot ci in a region's mark: a region is
 * reused by connections of other slots, whose incarnations count on their
 * own, so the incarnation alone could match a stale mark. Never 0 (an
 * incarnation starts at 1): 0 marks a region nobody initialised. */
static inline uint64_t takt_conn_mark(uint32_t ci, uint32_t incarnation)
{
	return (uint64_t)ci << 32 | incarnation;
}

/* What a publisher writes for everyone about itself, at the start of its
 * pool segment (after the header). */
struct takt_pub_live {
	/* Q0: odd while a publish runs. The broker waits for it to move before
	 * reusing a connection it removed (a grace period, see docs). */
	_Atomic uint64_t active;
	uint8_t pad0[56];
	/* Statistics the publisher keeps of its private pool (relaxed). */
	TAKT_ALIGNED _Atomic uint32_t stat_free;    /* chunks on its free list */
	_Atomic uint32_t stat_history;              /* chunks kept only for history */
	_Atomic uint32_t stat_loans;                /* chunks on loan */
	_Atomic uint32_t stat_bad_returns;          /* foreign, out-of-range or double returns refused */
	/* P1L: 1 while the publisher publishes without a fence before its
	 * park loads; a subscriber that parks then issues membarrier for it
	 * (pub.c). Read by parking subscribers only. */
	_Atomic uint32_t light;
	uint8_t pad1[44];
};
_Static_assert(sizeof(struct takt_pub_live) == 128, "takt_pub_live layout");

/* What a subscriber writes for everyone about itself, in its segment. */
struct takt_sub_live {
	/* P0: odd while the subscriber may sleep, a new value each time; a
	 * publisher that sees an odd value it has not woken after pushing
	 * counts a wake-up on its connection and writes the eventfd. */
	_Atomic uint32_t park;
	/* 1 when this subscriber's node is registered for membarrier:
	 * P1L: it issues membarrier(GLOBAL_EXPEDITED) as it parks if a
	 * publisher of it is light (a publisher goes light only if every
	 * subscriber it serves says so); B0L: its takes from a blocking
	 * connection store tail without a fence, and a publisher about to
	 * sleep for room issues membarrier for it. Written once, before any
	 * publisher maps the segment. */
	_Atomic uint32_t membarrier;
	uint8_t pad0[56];
	TAKT_ALIGNED _Atomic uint64_t active; /* Q0, subscriber side */
	uint8_t pad1[56];
};
_Static_assert(sizeof(struct takt_sub_live) == 128, "takt_sub_live layout");

/* A ring slot: the chunk and what the subscriber reports about it, so a take
 * reads one line written by the publisher. pos = position + 1 once filled
 * (R0); the broker zeroes the slots of a new connection. */
struct takt_ring_slot {
	_Atomic uint64_t pos;
	_Atomic uint32_t chunk;
	_Atomic uint32_t size;
	_Atomic uint64_t seq;
	_Atomic uint64_t publish_ns;
};
_Static_assert(sizeof(struct takt_ring_slot) == 32, "takt_ring_slot layout");

/* A chunk is its payload alone, in whole cache lines: what describes a
 * sample (seq, publish time, size) travels in the ring slot, and the
 * publisher keeps its own copy in private memory (pool.h). Chunks never
 * share a line: packing small ones (several samples per line) was
 * measured and is slower while a subscriber keeps up, since the publisher
 * then writes the line the subscriber is reading (docs/performance.md). */

/* A publisher's pool segment, written by its publisher alone (read-only
 * for everyone else): this header, its live words (takt_pub_live), one
 * takt_conn_pub per connection slot, one ring region per connection slot,
 * then n_chunks_max chunks of chunk_stride bytes (header, payload). Only
 * what is open is reserved in memory: the header part at once, a ring
 * region as a connection takes it (pow2(depth) slots), the first n_chunks
 * chunks (registry); the rest is address space. Offsets come from
 * layout_pool (the header repeats them, checked by every mapper). */
struct takt_pool_header {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t n_chunks_max;
	uint64_t publisher_id;
	uint64_t epoch;
	uint64_t payload_size;
	uint64_t chunk_stride;
	uint64_t layout_digest;
	uint32_t n_slots;       /* connection slots: subs_per_topic */
	/* takt_pub_set_origin: written by the publisher (0 until it sets one),
	 * read by subscribers at each take (relaxed: a tag, any value is valid,
	 * on a line nothing else writes after the broker filled it). */
	_Atomic uint32_t origin;
	uint64_t conns_off, ring_off, ring_region, chunk_off;
	uint8_t pad[32];
};
_Static_assert(offsetof(struct takt_pool_header, origin) < TAKT_CACHELINE, "origin on the header's first line");
_Static_assert(sizeof(struct takt_pool_header) == 128, "takt_pool_header layout");

/* A subscriber's segment, written by its subscriber alone: this header,
 * its live words (takt_sub_live), one takt_conn_sub per connection slot,
 * then one return ring region (u32 slots) per connection slot, reserved
 * as a connection takes it (pow2(depth + held_max) slots). */
#define TAKT_SUBSEG_MAGIC 0x53425553544b4154ull /* "TAKTSUBS" */
struct takt_subseg_header {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t sub;           /* its subscriber port */
	uint64_t epoch;
	uint64_t layout_digest;
	uint32_t n_slots;       /* connection slots: pubs_per_topic */
	uint32_t reserved;
	uint64_t conns_off, ret_off, ret_region;
	uint8_t pad[64];
};
_Static_assert(sizeof(struct takt_subseg_header) == 128, "takt_subseg_header layout");

/* Events. The registry entry of an event name (broker): its listeners.
 * Every listener has a queue segment of its own (takt_listener_queue):
 * every listener gets every id. */
#define TAKT_MAX_LISTENERS 32      /* listeners of one event name */
#define TAKT_LISTENER_MAGIC 0x4e54534c544b4154ull /* "TAKTLSTN" */
/* A listener of an event as the broker records it: whose it is, which
 * incarnation of the slot, and its queue segment's inode, so a restarted
 * broker gives the slot back to its owner only (adopt.c). proc is
 * TAKT_NONE while the slot is free. */
struct takt_event_lis {
	uint32_t proc;
	uint32_t inc;
	uint64_t seg_ino;
};
_Static_assert(sizeof(struct takt_event_lis) == 16, "takt_event_lis layout");

struct takt_event_slot {
	_Atomic uint32_t state;
	uint32_t refs;           /* opens across processes */
	char name[TAKT_NAME_MAX];
	uint32_t listeners;      /* how many listen now */
	uint8_t pad[52];
	struct takt_event_lis lis[TAKT_MAX_LISTENERS];
};
_Static_assert(sizeof(struct takt_event_slot) == 128 + 16 * TAKT_MAX_LISTENERS, "takt_event_slot layout");

/* One notifying process's lane in a listener's queue: an SPSC ring of ids
 * whose producer is the process at that process index (its threads take
 * turns, node-locally) and whose consumer is the listener. head and ids are
 * the notifier's, tail the listener's. Positions persist in the segment,
 * so a process that takes over the index of a dead one carries on from the
 * head it left: nothing a dead notifier half-wrote is ever published. */
struct takt_lane {
	_Atomic uint64_t head;                  /* notifier: ids published (E0) */
	_Atomic uint64_t lost;                  /* notifier: ids refused, the lane full */
	uint8_t pad0[48];
	TAKT_ALIGNED _Atomic uint64_t tail;     /* listener: ids taken (E1) */
	uint8_t pad1[56];
	TAKT_ALIGNED _Atomic uint64_t ids[TAKT_EVENT_QUEUE];
};
_Static_assert(sizeof(struct takt_lane) == 128 + 8 * TAKT_EVENT_QUEUE, "takt_lane layout");

/* A listener's queue segment: this header, hint words (bit p: lane p may
 * have ids; set by notifiers, taken by the listener), then one lane per
 * process index. Mapped read-write by the listener and by every node with
 * the event open (they notify): the one structure with several writers,
 * and all it holds is this listener's ids of this event. */
struct takt_listener_queue {
	uint64_t magic;
	uint32_t abi_version;
	uint32_t event;          /* its event slot */
	uint32_t listener;       /* its listener slot */
	uint32_t lanes;          /* = processes */
	uint8_t pad0[40];
	_Atomic uint64_t hint[]; /* (lanes + 63) / 64 words, then the lanes */
};
_Static_assert(sizeof(struct takt_listener_queue) == 64, "takt_listener_queue layout");

/* Offsets of every table, computed once from the limits. */
struct takt_layout {
	uint64_t off_procs, off_topics, off_pubs, off_subs, off_conns;
	uint64_t off_pub_conns, off_sub_conns; /* publishers x subs_per_topic, subscribers x pubs_per_topic words */
	uint64_t off_events, size;
	uint32_t ret_slots;
	uint64_t listener_size;   /* bytes of a listener's queue segment */
	uint64_t lanes_off;       /* offset of lane 0 in it */
};

/* Offsets within a pool segment and a subscriber's segment. */
struct takt_pool_layout {
	uint64_t live_off, conns_off, ring_off, ring_region, chunk_off;
	uint32_t n_slots;
};
struct takt_subseg_layout {
	uint64_t live_off, conns_off, ret_off, ret_region, size;
	uint32_t n_slots;
};
#define TAKT_PAGE 4096u

void layout_pool(const struct takt_limits *lim, struct takt_pool_layout *out);
void layout_subseg(const struct takt_limits *lim, struct takt_subseg_layout *out);
/* Bytes of ring region a connection of this depth reserves (whole pages). */
uint64_t layout_ring_bytes(uint32_t mask);
uint64_t layout_ret_bytes(uint32_t ret_mask);
/* The return ring size of a connection: the next power of two >= depth +
 * held_max, everything the subscriber can have out on it. */
uint32_t layout_conn_ret_slots(const struct takt_limits *lim, uint32_t depth);

/* Fills *out for the limits. */
void layout_compute(const struct takt_limits *lim, struct takt_layout *out);
/* FNV-1a over the structure sizes, offsets and the limits. */
uint64_t layout_digest(const struct takt_limits *lim);
/* Bytes per chunk: the payload rounded up to whole cache lines (at least
 * one); every payload starts on a cache line. */
uint64_t layout_chunk_stride(uint64_t payload_size);
/* Return ring slots per connection: room for everything one connection can
 * have outstanding (queue_depth_max queued + held_max taken), a power of
 * two, so a subscriber's return never finds the ring full unless its
 * publisher stopped consuming. */
uint32_t layout_ret_slots(const struct takt_limits *lim);
/* Chunks a publisher's pool needs: its loans and history, plus per
 * connection the subscriber's depth and held_max. */
static inline uint64_t layout_pool_base_chunks(const struct takt_limits *lim, uint32_t history)
{
	return (uint64_t)lim->loans_max + history;
}
static inline uint64_t layout_pool_conn_chunks(const struct takt_limits *lim, uint32_t depth)
{
	return (uint64_t)depth + lim->held_max;
}

#endif
