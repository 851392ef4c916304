/* registry.c - the broker's registry: processes, topics, ports, connections,
 * and reclaiming what a closed or dead client held. Events are events.c's;
 * a registry taken over from a broker that died is adopt.c's.
 *
 * The registry lives in the broker's private memory (broker.h); every change
 * is mirrored into the management segment for clients to read, and the
 * broker never reads a registry word back from shared memory. The only
 * shared words it reads are data-path words (active counters, ring tails
 * and slots, pool statistics), each bounds-checked or only compared. It
 * never touches a chunk: each publisher keeps its pool's references and
 * free list in its own memory, and gets its chunks back through the return
 * rings; what a dead publisher held goes with its pool segment.
 *
 * A0, acks: an open that creates connections pushes each connection to
 * both ends' nodes (the publisher's needs the subscriber's eventfd, the
 * subscriber's the publisher's pool) and answers only when each node
 * confirmed with CONN_READY (its agent mapped the pool, or handed the
 * publisher's history to the new ring), or after [socket]
 * confirm_timeout_ms. So when
 * takt_sub_open or takt_pub_open returns, samples flow both ways at once.
 *
 * W1: the broker publishes a change of a port's connection list by bumping
 * its conn_gen (seq_cst) after rewriting the list; clients load conn_gen
 * (seq_cst) before reading the list.
 *
 * I0, ids: publisher ids (and later client ids) are 64-bit and never reused
 * in a domain, so (publisher_id, seq) names one sample for subscribers and
 * the tracer even across publisher restarts and broker restarts. An id is
 * base | n: base is the broker's start time in milliseconds since
 * 2024-01-01 UTC in the high 40 bits (good until 2058), n counts from 1 in
 * the low 24. A broker that hands out 2^24 - 1 ids moves its base to the
 * later of now and base + 1 ms; a new broker's base is its own start time,
 * so it cannot meet an id of an earlier broker unless it starts within the
 * same millisecond the earlier one's base reached (a restart takes far
 * longer: the lock, the socket, the segments).
 *
 * Q0, retiring a connection: the broker marks it CLOSING, removes it from
 * both ports' lists, bumps both conn_gens (seq_cst), then snapshots each
 * live end's `active` counter (seq_cst). A client increments `active`
 * (seq_cst RMW) before it loads conn_gen (seq_cst) and again when it is done
 * with the rings. All four are in the single total order of seq_cst
 * operations, so an even snapshot means every later operation of that
 * client sees the new list, and an odd one means an operation may still use
 * the ring and has finished once the counter moves (its final increment, a
 * release store, releases its ring accesses to our seq_cst load). Only then
 * is the ring drained and the slot reused. When the kernel has membarrier,
 * the client's first increment is a plain store and our membarrier between
 * bump and snapshot is the fence on its side (q0_fence, client.h).
 */
#include "broker.h"
#include "registry.h"
#include "pool.h"
#include "ring.h"
#include "sys.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>


void gen_bump(_Atomic uint32_t *gen)
{
	atomic_fetch_add_explicit(gen, 1, memory_order_seq_cst); /* W1, Q0 */
}

/* Q0: between the conn_gen bumps and the snapshots of `active`. Clients
 * that registered for it enter an operation with a plain store of `active`
 * and a compiler barrier only (client.h, q0_enter); this runs a full fence
 * on every CPU that runs one of them, so either their load of conn_gen sees
 * our bump or our snapshot sees their odd `active`. A few microseconds, once
 * per retired connection; never on the data path. */
void q0_fence(const struct broker *b)
{
	static bool warned;

	if (!(b->cfg.lim.flags & TAKT_LIM_MEMBARRIER) ||
	    syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 ||
	    syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0)
		return;
	if (!warned) /* the start-up probe succeeded, so this cannot happen */
		fprintf(stderr, "takt-broker: membarrier failed: %s\n", strerror(errno));
	warned = true;
}

#define ID_COUNTER_BITS 24
#define ID_EPOCH_2024_MS 1704067200000ull

static uint64_t id_base_now(void)
{
	struct timespec ts;
	uint64_t ms;

	clock_gettime(CLOCK_REALTIME, &ts);
	ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
	ms = ms > ID_EPOCH_2024_MS ? ms - ID_EPOCH_2024_MS : 1;
	return (ms & ((1ull << (64 - ID_COUNTER_BITS)) - 1)) << ID_COUNTER_BITS;
}

uint64_t reg_new_id(struct broker *b)
{
	if (b->id_base == 0 || b->id_next >= (1u << ID_COUNTER_BITS)) {
		uint64_t now = id_base_now(), next = b->id_base + (1ull << ID_COUNTER_BITS);

		b->id_base = now > next || b->id_base == 0 ? now : next;
		b->id_next = 1;
	}
	return b->id_base | b->id_next++;
}

/* relaxed/release store of a slot state for clients to read. */
void publish_state(_Atomic uint32_t *shm_state, uint32_t st)
{
	/* release: pairs with the clients' acquire of state; every field the
	 * state guards was written before. */
	atomic_store_explicit(shm_state, st, memory_order_release);
}

int reg_init(struct broker *b)
{
	const struct seg_view *v = &b->v;
	const struct takt_limits *l = &v->lim;

	/* Lists in 32-bit entries, each an even count so the bitmaps (64-bit
	 * words, 2 entries each) stay 8-byte aligned. */
	size_t pp = ((size_t)l->pubs_per_topic + 1) & ~(size_t)1, ss = ((size_t)l->subs_per_topic + 1) & ~(size_t)1;
	size_t pub_busy = ((size_t)l->subs_per_topic + 63) / 64 * 2, sub_busy = ((size_t)l->pubs_per_topic + 63) / 64 * 2;
	size_t n_lists = (size_t)l->topics * (pp + ss) + (size_t)l->publishers * (ss + pub_busy) +
			 (size_t)l->subscribers * (pp + sub_busy);
	uint32_t *at;

	for (uint32_t i = 0; i < l->publishers; i++)
		for (unsigned j = 0; j < l->subs_per_topic; j++)
			atomic_store_explicit(&seg_pub_conns(v, i)[j], TAKT_NONE, memory_order_relaxed);
	for (uint32_t i = 0; i < l->subscribers; i++)
		for (unsigned j = 0; j < l->pubs_per_topic; j++)
			atomic_store_explicit(&seg_sub_conns(v, i)[j], TAKT_NONE, memory_order_relaxed);
	/* The lists of topics and ports, sized by the limits: one table. */
	b->lists = calloc(n_lists, sizeof(uint32_t));
	b->sub_efd = malloc(sizeof(int) * l->subscribers);
	b->proc_state = calloc(l->processes, sizeof(*b->proc_state));
	b->proc_client = calloc(l->processes, sizeof(*b->proc_client));
	b->topics = calloc(l->topics, sizeof(*b->topics));
	b->pubs = calloc(l->publishers, sizeof(*b->pubs));
	b->subs = calloc(l->subscribers, sizeof(*b->subs));
	b->conns = calloc(l->connections, sizeof(*b->conns));
	b->events = calloc(l->events, sizeof(*b->events));
	if (!b->sub_efd || !b->proc_state || !b->proc_client || !b->topics || !b->pubs || !b->subs ||
	    !b->conns || !b->events || !b->lists)
		return -ENOMEM;
	at = b->lists;
	for (uint32_t i = 0; i < l->topics; i++) {
		b->topics[i].pubs = at;
		b->topics[i].subs = at += pp;
		at += ss;
	}
	for (uint32_t i = 0; i < l->publishers; i++) {
		b->pubs[i].slot_busy = (uint64_t *)(void *)at;
		b->pubs[i].conns = at += pub_busy;
		at += ss;
	}
	for (uint32_t i = 0; i < l->subscribers; i++) {
		b->subs[i].slot_busy = (uint64_t *)(void *)at;
		b->subs[i].conns = at += sub_busy;
		at += pp;
	}
	for (uint32_t i = 0; i < l->subscribers; i++) {
		b->sub_efd[i] = -1;
		b->subs[i].seg_fd = b->subs[i].seg_ro_fd = -1;
	}
	for (uint32_t i = 0; i < l->publishers; i++)
		b->pubs[i].pool_fd = b->pubs[i].pool_ro_fd = -1;
	for (uint32_t i = 0; i < l->events; i++)
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			b->v.events[i].lis[j].proc = TAKT_NONE;
	return 0;
}

void reg_free(struct broker *b)
{
	for (unsigned i = 0; i < b->n_left; i++)
		close(b->left[i].fd);
	free(b->left);
	free(b->maps);
	for (uint32_t i = 0; b->pubs && i < b->v.lim.publishers; i++) {
		if (b->pubs[i].pool_fd >= 0)
			close(b->pubs[i].pool_fd);
		if (b->pubs[i].pool_ro_fd >= 0)
			close(b->pubs[i].pool_ro_fd);
		if (b->pubs[i].pool.base)
			munmap(b->pubs[i].pool.base, b->pubs[i].pool_map_size);
	}
	for (uint32_t i = 0; b->subs && i < b->v.lim.subscribers; i++) {
		if (b->subs[i].seg_fd >= 0)
			close(b->subs[i].seg_fd);
		if (b->subs[i].seg_ro_fd >= 0)
			close(b->subs[i].seg_ro_fd);
		if (b->subs[i].seg.base)
			munmap(b->subs[i].seg.base, b->subs[i].seg.size);
	}
	free(b->sub_efd);
	free(b->proc_state);
	free(b->proc_client);
	free(b->lists);
	free(b->topics);
	free(b->pubs);
	free(b->subs);
	free(b->conns);
	free(b->events);
}

/* ---- processes ---------------------------------------------------------- */

static void pool_maps_drop(struct broker *b, uint64_t pub_id, uint32_t sub, uint32_t proc);

int reg_proc_add(struct broker *b, struct client *cl, const char *name)
{
	for (uint32_t i = 0; i < b->v.lim.processes; i++) {
		struct takt_proc *p = &b->v.procs[i];

		if (b->proc_state[i] != SLOT_FREE)
			continue;
		b->proc_state[i] = SLOT_ACTIVE;
		b->proc_client[i] = cl;
		p->pid = cl->pid;
		p->uid = cl->uid;
		p->gid = cl->gid;
		p->attached_ns = takt_now_ns();
		snprintf(p->name, sizeof(p->name), "%.*s", (int)sizeof(p->name) - 1, name);
		publish_state(&p->state, SLOT_ACTIVE);
		cl->proc = i;
		return (int)i;
	}
	return -EMFILE;
}

/* A publisher died, perhaps between seeing a subscriber parked and
 * writing its eventfd (pub.c, P1): that subscriber would sleep with samples
 * waiting. Wake every subscriber it was connected to; one spurious wake-up
 * each is the price (they find their rings as they are). */
static void sub_wake(struct broker *b, uint32_t si)
{
	const uint64_t one = 1;
	int efd = b->sub_efd[si];

	if (efd < 0)
		return;
	/* P3: release pairs with the subscriber's acquire load in
	 * takt_sub_arm: the write is counted before it is made (P2), so it
	 * cannot leave a stale wake-up behind. */
	atomic_fetch_add_explicit(&b->v.subs[si].broker_wakes, 1, memory_order_release);
	if (write(efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the count is near overflow, the fd is readable anyway */
	}
}

static void pub_wake_subs(struct broker *b, uint32_t pi)
{
	for (unsigned j = 0; j < b->v.lim.subs_per_topic; j++)
		if (b->pubs[pi].conns[j] != TAKT_NONE)
			sub_wake(b, b->conns[b->pubs[pi].conns[j]].sub);
}

void reg_proc_remove(struct broker *b, struct client *cl)
{
	const struct takt_limits *l = &b->v.lim;

	if (cl->pend) { /* nobody left to answer */
		cl->pend = false;
		b->n_pending--;
		if (cl->pend_fd >= 0)
			cl->pend_fd = -1;
	}
	for (uint32_t ci = 0; ci < l->connections; ci++)
		if (b->conns[ci].waiter == cl)
			b->conns[ci].waiter = NULL;
	if (cl->proc == TAKT_NONE)
		return;
	for (uint32_t ci = 0; ci < l->connections; ci++) { /* its agent prepares nothing any more */
		if (b->conns[ci].state != SLOT_FREE && b->pubs[b->conns[ci].pub].proc == cl->proc)
			b->conns[ci].prep_owed = false;
		if (b->conns[ci].state != SLOT_FREE && b->subs[b->conns[ci].sub].proc == cl->proc)
			b->conns[ci].sub_owed = false;
	}
	for (uint32_t i = 0; i < l->publishers; i++)
		if (b->pubs[i].state == SLOT_ACTIVE && b->pubs[i].proc == cl->proc) {
			pub_wake_subs(b, i);
			reg_pub_close(b, cl, i);
		}
	for (uint32_t i = 0; i < l->subscribers; i++)
		if (b->subs[i].state == SLOT_ACTIVE && b->subs[i].proc == cl->proc)
			reg_sub_close(b, cl, i);
	for (uint32_t i = 0; i < l->events; i++)
		while (cl->event_refs && cl->event_refs[i])
			reg_event_close(b, cl, i, 0);
	for (uint32_t i = 0; i < l->events; i++) /* its listeners (reg_event_close drops them) */
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			if (b->events[i].lis[j].cl == cl)
				listener_drop(b, i, j);
	pool_maps_drop(b, 0, TAKT_NONE, cl->proc); /* its mappings died with it */
	b->proc_state[cl->proc] = SLOT_FREE;
	b->proc_client[cl->proc] = NULL;
	publish_state(&b->v.procs[cl->proc].state, SLOT_FREE);
	cl->proc = TAKT_NONE;
}

/* ---- topics ------------------------------------------------------------- */

void topic_mirror(struct broker *b, uint32_t ti)
{
	const struct reg_topic *t = &b->topics[ti];
	struct takt_topic *m = &b->v.topics[ti];

	memcpy(m->name, t->name, TAKT_NAME_MAX);
	memcpy(m->type_name, t->type_name, TAKT_NAME_MAX);
	memcpy(m->reply_type, t->reply_type, TAKT_NAME_MAX);
	m->n_pubs = t->n_pubs;
	m->n_subs = t->n_subs;
	publish_state(&m->state, t->state);
	/* TG0 (layout.h): release pairs with takt_node_topics_gen's acquire,
	 * so a reader that sees the new generation sees the entry; then wake
	 * takt_node_topics_wait's sleepers (a shared futex on their read-only
	 * mapping of the registry). */
	atomic_fetch_add_explicit(&b->v.hdr->topics_gen, 1, memory_order_release);
	sys_futex_wake(&b->v.hdr->topics_gen, INT32_MAX, 1);
}

/* A type declared on a topic: the first that declares one names it, and a
 * port that declares another is refused (none fits any). */
static bool type_fits(const char *declared, const char *asked)
{
	return !asked[0] || !declared[0] || !strcmp(asked, declared);
}

static int topic_find_or_add(struct broker *b, const char *name, const char *type, const char *reply)
{
	int free_slot = -1;

	for (uint32_t i = 0; i < b->v.lim.topics; i++) {
		struct reg_topic *t = &b->topics[i];

		if (t->state == SLOT_FREE) {
			if (free_slot < 0)
				free_slot = (int)i;
			continue;
		}
		if (strcmp(t->name, name))
			continue;
		if (!type_fits(t->type_name, type)) {
			fprintf(stderr, "takt-broker: topic '%s' exists with type '%s', a client asked for '%s'\n",
				name, t->type_name, type);
			return -EPROTOTYPE;
		}
		if (!type_fits(t->reply_type, reply)) {
			fprintf(stderr, "takt-broker: service '%.*s' answers with type '%s', a client asked for '%s'\n",
				(int)strlen(name) - 4, name + 2, t->reply_type, reply);
			return -EPROTOTYPE;
		}
		if (type[0] && !t->type_name[0])
			memcpy(t->type_name, type, TAKT_NAME_MAX);
		if (reply[0] && !t->reply_type[0])
			memcpy(t->reply_type, reply, TAKT_NAME_MAX);
		return (int)i;
	}
	if (free_slot < 0)
		return -ENOSPC;
	struct reg_topic *t = &b->topics[free_slot];

	/* n_pubs and n_subs are 0: the lists keep their tables. */
	*t = (struct reg_topic){.pubs = t->pubs, .subs = t->subs};
	memcpy(t->name, name, TAKT_NAME_MAX);
	memcpy(t->type_name, type, TAKT_NAME_MAX);
	memcpy(t->reply_type, reply, TAKT_NAME_MAX);
	t->state = SLOT_ACTIVE;
	return free_slot;
}

/* Frees a topic nobody uses any more, and mirrors it either way. */
static void topic_put(struct broker *b, uint32_t ti)
{
	struct reg_topic *t = &b->topics[ti];

	if (t->n_pubs == 0 && t->n_subs == 0)
		t->state = SLOT_FREE;
	topic_mirror(b, ti);
}

static void list_del(uint32_t *list, uint32_t *n, uint32_t x)
{
	for (uint32_t i = 0; i < *n; i++)
		if (list[i] == x) {
			list[i] = list[--*n];
			return;
		}
}

/* ---- connection lists: private copy and shared mirror together ---------- */

static void conns_add(uint32_t *priv, _Atomic uint32_t *shm, unsigned cap, uint32_t ci)
{
	for (unsigned i = 0; i < cap; i++)
		if (priv[i] == TAKT_NONE) {
			priv[i] = ci;
			atomic_store_explicit(&shm[i], ci, memory_order_relaxed); /* W1 orders it */
			return;
		}
}

static void conns_del(uint32_t *priv, _Atomic uint32_t *shm, unsigned cap, uint32_t ci)
{
	for (unsigned i = 0; i < cap; i++)
		if (priv[i] == ci) {
			priv[i] = TAKT_NONE;
			atomic_store_explicit(&shm[i], TAKT_NONE, memory_order_relaxed); /* W1 */
		}
}

static void conns_clear(uint32_t *priv, _Atomic uint32_t *shm, unsigned cap)
{
	for (unsigned i = 0; i < cap; i++) {
		priv[i] = TAKT_NONE;
		atomic_store_explicit(&shm[i], TAKT_NONE, memory_order_relaxed);
	}
}

/* ---- connections -------------------------------------------------------- */

void conn_set_state(struct broker *b, uint32_t ci, uint32_t st)
{
	b->conns[ci].state = st;
	/* B1: seq_cst pairs with ring_wait_room's seq_cst re-check of state
	 * (and is a release for the fields of a new connection). */
	atomic_store_explicit(&b->v.conns[ci].state, st, memory_order_seq_cst);
}

void conn_init_shared(struct broker *b, uint32_t ci, const struct reg_conn *rc)
{
	struct takt_conn *c = &b->v.conns[ci];

	c->pub = rc->pub;
	c->sub = rc->sub;
	c->mask = rc->mask;
	c->depth = rc->depth;
	c->ret_mask = layout_conn_ret_slots(&b->v.lim, rc->depth) - 1;
	c->overflow = b->subs[rc->sub].overflow;
	c->pub_slot = rc->pub_slot;
	c->sub_slot = rc->sub_slot;
	atomic_store_explicit(&c->pub_quiet, 0, memory_order_relaxed);
	atomic_store_explicit(&c->incarnation, rc->incarnation, memory_order_relaxed);
	/* Each end initialises its own words and region for this incarnation
	 * before the other uses them (pub.c, sub.c: the regions' inc marks). */
}

/* An end's Q0 counter in our view of its segment, or NULL for an end whose
 * segment we do not map (a port a restarted broker did not get back). */
const _Atomic uint64_t *pub_active(const struct broker *b, uint32_t pi)
{
	return b->pubs[pi].pool.live ? &b->pubs[pi].pool.live->active : NULL;
}

const _Atomic uint64_t *sub_active(const struct broker *b, uint32_t si)
{
	return b->subs[si].seg.live ? &b->subs[si].seg.live->active : NULL;
}

/* Q0's snapshot of an end (seq_cst: after the caller's gen bumps); even
 * (quiescent) for an end we do not map. */
uint64_t end_active(const _Atomic uint64_t *active)
{
	return active ? atomic_load_explicit(active, memory_order_seq_cst) : 0;
}

/* The words of connection ci in each end's segment, as the broker sees
 * them (read-only mappings). */
static const struct takt_conn_pub *conn_pw(const struct broker *b, uint32_t ci)
{
	return seg_pool_conn(&b->pubs[b->conns[ci].pub].pool, b->conns[ci].pub_slot);
}

static const struct takt_conn_sub *conn_sw(const struct broker *b, uint32_t ci)
{
	return seg_subseg_conn(&b->subs[b->conns[ci].sub].seg, b->conns[ci].sub_slot);
}

/* Ring slots for a depth: the next power of two, so positions map to
 * slots by a mask; the ring itself stops at depth (ring.h). */
uint32_t depth_slots(uint32_t d)
{
	while (d & (d - 1))
		d += d & -d;
	return d;
}

/* A0: settles what is owed for connection ci: the waiting open is answered
 * once nothing is owed any more. */
static void conn_acks_settle(struct broker *b, uint32_t ci, uint8_t bits)
{
	struct reg_conn *rc = &b->conns[ci];
	struct client *w = rc->waiter;

	bits &= rc->acks_owed;
	if (!bits)
		return;
	rc->acks_owed &= (uint8_t)~bits;
	if (!w)
		return;
	w->pend_acks -= (unsigned)__builtin_popcount(bits);
	if (rc->acks_owed == 0)
		rc->waiter = NULL;
	if (w->pend && w->pend_acks == 0)
		server_pend_reply(b, w);
}


/* ---- pool lifetimes: a pool segment is alive while its publisher is open
 * or a subscriber maps it; the broker keeps its descriptor (and counts its
 * bytes in shm_bytes) exactly that long. */

/* A record of what a node maps: one per (pool, subscriber port), however
 * often the broker pushes it (a restarted broker pushes every connection
 * again, and hears back of a pool a node maps already: adopt.c). */
void pool_map_add(struct broker *b, uint64_t pub_id, uint32_t sub, uint32_t proc)
{
	for (unsigned i = 0; i < b->n_maps; i++)
		if (b->maps[i].pub_id == pub_id && b->maps[i].sub == sub && b->maps[i].proc == proc)
			return;
	if (b->n_maps == b->cap_maps) {
		unsigned cap = b->cap_maps ? 2 * b->cap_maps : 64;
		struct reg_pool_map *m = realloc(b->maps, cap * sizeof(*m));

		if (!m)
			return; /* counted as gone early: the memory is freed later than we say */
		b->maps = m;
		b->cap_maps = cap;
	}
	b->maps[b->n_maps++] = (struct reg_pool_map){.pub_id = pub_id, .sub = sub, .proc = proc};
}

static bool pool_mapped(const struct broker *b, uint64_t pub_id)
{
	for (unsigned i = 0; i < b->n_maps; i++)
		if (b->maps[i].pub_id == pub_id)
			return true;
	return false;
}

/* Pools of closed publishers that nobody maps any more are let go. */
static void pools_left_sweep(struct broker *b)
{
	for (unsigned i = 0; i < b->n_left;)
		if (!pool_mapped(b, b->left[i].pub_id)) {
			close(b->left[i].fd);
			b->left[i] = b->left[--b->n_left];
		} else {
			i++;
		}
}

/* Drops mappings: of one (pub_id, sub) pair (one record), of a subscriber
 * port (sub != TAKT_NONE, pub_id 0), or of a process (sub == TAKT_NONE). */
static void pool_maps_drop(struct broker *b, uint64_t pub_id, uint32_t sub, uint32_t proc)
{
	for (unsigned i = 0; i < b->n_maps;) {
		struct reg_pool_map *m = &b->maps[i];
		bool hit = pub_id ? m->pub_id == pub_id && m->sub == sub && m->proc == proc
			   : sub != TAKT_NONE ? m->sub == sub && m->proc == proc : m->proc == proc;

		if (!hit) {
			i++;
			continue;
		}
		*m = b->maps[--b->n_maps];
		if (pub_id)
			break;
	}
	pools_left_sweep(b);
}

void reg_pool_done(struct broker *b, struct client *cl, const struct msg_pool_done *m)
{
	if (cl->proc != TAKT_NONE)
		pool_maps_drop(b, m->publisher_id ? m->publisher_id : UINT64_MAX, m->sub, cl->proc);
}

/* Pushes one end of a connection change to that end's node. Returns the
 * ack bit owed for it (0: not sent, or nothing to confirm). */
uint8_t conn_push(struct broker *b, uint32_t ci, uint16_t kind)
{
	const struct reg_conn *rc = &b->conns[ci];
	bool to_sub = kind == MSG_PUSH_SUB_CONN;
	struct client *cl = b->proc_client[to_sub ? b->subs[rc->sub].proc : b->pubs[rc->pub].proc];
	struct msg_push_conn m = {.pub = rc->pub, .conn = ci, .sub = rc->sub};
	int fds[3] = {-1, -1, -1};
	unsigned nf = 0;

	if (kind == MSG_PUSH_CONN) { /* its eventfd, its segment (read-only), its process's pidfd */
		const struct client *sc = b->proc_client[b->subs[rc->sub].proc];

		fds[nf++] = b->sub_efd[rc->sub];
		fds[nf++] = b->subs[rc->sub].seg_ro_fd;
		if (sc && sc->pidfd >= 0)
			fds[nf++] = sc->pidfd;
	} else if (to_sub) {
		fds[nf++] = b->pubs[rc->pub].pool_ro_fd;
	}
	if (!cl || cl->doomed || cl->fd < 0) /* gone, or a ghost (adopt.c) */
		return 0;
	m.incarnation = rc->incarnation;
	proto_hdr_init(&m.hdr, (uint16_t)(kind | PROTO_PUSH_FLAG), sizeof(m), 0);
	server_push(b, cl, &m, sizeof(m), fds, nf);
	if (cl->doomed || kind == MSG_PUSH_CONN_GONE)
		return 0;
	if (to_sub)
		pool_map_add(b, b->pubs[rc->pub].id, rc->sub, cl->proc);
	return to_sub ? ACK_SUB : ACK_PUB;
}

/* Bytes a process's segments (pools, subscribers' segments) hold, and the
 * domain's in all (with the registry). */
static uint64_t shm_reserved(const struct broker *b, uint32_t proc)
{
	uint64_t n = proc == TAKT_NONE ? b->mgmt_size : 0;

	for (uint32_t i = 0; i < b->v.lim.publishers; i++)
		if (b->pubs[i].state == SLOT_ACTIVE && (proc == TAKT_NONE || b->pubs[i].proc == proc))
			n += seg_fd_bytes(b->pubs[i].pool_fd);
	for (uint32_t i = 0; i < b->v.lim.subscribers; i++)
		if (b->subs[i].state == SLOT_ACTIVE && (proc == TAKT_NONE || b->subs[i].proc == proc))
			n += seg_fd_bytes(b->subs[i].seg_fd);
	return n;
}

/* Reserves bytes [from, from + len) of a segment of process proc, within
 * the [memory] limits: 0, or -ENOMEM with the limit named in *limit. */
static int shm_reserve(struct broker *b, uint32_t proc, int fd, uint64_t from, uint64_t len, const char **limit)
{
	*limit = NULL;
	if (shm_reserved(b, proc) + len > b->cfg.process_max)
		*limit = "[memory] process_max";
	else if (shm_reserved(b, TAKT_NONE) + len > b->cfg.domain_max)
		*limit = "[memory] domain_max";
	return *limit ? -ENOMEM : seg_pool_reserve(fd, from, from + len);
}

/* Reserves chunks for `more` more of a publisher's chunks (its pool grows
 * as subscribers connect), within [memory] limits. 0, or -ENOMEM with a
 * message naming the topic and the processes. */
static int pool_grow(struct broker *b, uint32_t pi, uint64_t more, const char *why)
{
	struct reg_pub *rp = &b->pubs[pi];
	uint64_t n = rp->n_chunks + more, add;
	const char *limit = NULL;
	int r;

	if (n > rp->n_chunks_max)
		n = rp->n_chunks_max;
	add = (n - rp->n_chunks) * rp->stride;
	if (add == 0)
		return 0;
	r = shm_reserve(b, rp->proc, rp->pool_fd, seg_pool_bytes(&b->v, rp->stride, rp->n_chunks), add, &limit);
	if (r < 0) {
		fprintf(stderr,
			"takt-broker: topic '%s': cannot reserve %llu more bytes for the pool of publisher %u of "
			"process %d (%s) for %s: %s\n",
			b->topics[rp->topic].name, (unsigned long long)add, pi, b->v.procs[rp->proc].pid,
			b->v.procs[rp->proc].name, why, limit ? limit : strerror(-r));
		return -ENOMEM;
	}
	rp->n_chunks = (uint32_t)n;
	/* release: the reserved pages exist before a client reads the count
	 * (W1: the caller bumps conn_gen after). */
	atomic_store_explicit(&b->v.pubs[pi].n_chunks, rp->n_chunks, memory_order_release);
	return 0;
}

/* Creates the connection from publisher pi to subscriber si, pushes it to
 * both ends and records the acks the open of `waiter` waits for (A0). */
/* A free connection slot (region) of a port: the lowest clear bit of its
 * bitmap of n slots. */
static int slot_take(uint64_t *busy, uint32_t n)
{
	for (uint32_t j = 0; j < n; j++)
		if (!(busy[j / 64] >> (j % 64) & 1)) {
			busy[j / 64] |= 1ull << (j % 64);
			return (int)j;
		}
	return -ENOSPC;
}

static void slot_put(uint64_t *busy, uint32_t j)
{
	busy[j / 64] &= ~(1ull << (j % 64));
}

/* Reserves the regions a connection uses in each end's segment: its
 * sample ring (pow2(depth) slots) in the publisher's pool, its return ring
 * (pow2(depth + held_max) entries) in the subscriber's segment. So a
 * connection costs its actual depth. */
static int conn_regions(struct broker *b, uint32_t pi, uint32_t si, uint32_t j, uint32_t k, uint32_t mask,
			uint32_t depth)
{
	struct reg_pub *rp = &b->pubs[pi];
	struct reg_sub *rs = &b->subs[si];
	const char *limit;
	int r = shm_reserve(b, rp->proc, rp->pool_fd, rp->pool.ring_off + j * rp->pool.ring_region,
			    layout_ring_bytes(mask), &limit);

	if (r == 0)
		r = shm_reserve(b, rs->proc, rs->seg_fd, rs->seg.ret_off + k * rs->seg.ret_region,
				layout_ret_bytes(layout_conn_ret_slots(&b->v.lim, depth) - 1), &limit);
	if (r < 0)
		fprintf(stderr, "takt-broker: topic '%s': cannot reserve the rings of a connection of depth %u "
			"between processes %d and %d: %s\n", b->topics[rp->topic].name, depth,
			b->v.procs[rp->proc].pid, b->v.procs[rs->proc].pid, limit ? limit : strerror(-r));
	return r;
}

/* The rules again as the ends get each other's segments (the pool,
 * read-only, for the subscriber): both ends opened under them. */
static bool conn_allowed(struct broker *b, uint32_t pi, uint32_t si)
{
	const char *topic = b->topics[b->subs[si].topic].name;
	struct client *pc = b->proc_client[b->pubs[pi].proc], *sc = b->proc_client[b->subs[si].proc];

	return (!pc || server_access(b, pc, ACCESS_PUBLISH, topic) == 0) &&
	       (!sc || server_access(b, sc, ACCESS_SUBSCRIBE, topic) == 0);
}

static int conn_create(struct broker *b, uint32_t pi, uint32_t si, struct client *waiter)
{
	if (!conn_allowed(b, pi, si))
		return -EACCES;
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++) {
		struct reg_conn *rc = &b->conns[ci];
		uint32_t mask = depth_slots(b->subs[si].depth) - 1;
		int j, k;
		uint8_t owed;

		if (rc->state != SLOT_FREE)
			continue;
		j = slot_take(b->pubs[pi].slot_busy, b->pubs[pi].pool.n_slots);
		k = slot_take(b->subs[si].slot_busy, b->subs[si].seg.n_slots);
		if (j < 0 || k < 0 || conn_regions(b, pi, si, (uint32_t)j, (uint32_t)k, mask, b->subs[si].depth) < 0) {
			if (j >= 0)
				slot_put(b->pubs[pi].slot_busy, (uint32_t)j);
			if (k >= 0)
				slot_put(b->subs[si].slot_busy, (uint32_t)k);
			/* Every region still held by a retired connection its end
			 * has not confirmed: made later (reg_tick). */
			if (j < 0 || k < 0)
				b->conns_missing = true;
			return -ENOMEM;
		}
		/* The registry words both ends check the connection against are
		 * rewritten from our private copy, whatever a process scribbled
		 * over the shared one since. */
		pub_mirror(b, pi);
		*rc = (struct reg_conn){.pub = pi, .sub = si, .mask = mask, .depth = b->subs[si].depth,
					.pub_slot = (uint32_t)j, .sub_slot = (uint32_t)k,
					.incarnation = rc->incarnation + 1};
		conn_init_shared(b, ci, rc);
		conn_set_state(b, ci, SLOT_ACTIVE);
		conns_add(b->pubs[pi].conns, seg_pub_conns(&b->v, pi), b->v.lim.subs_per_topic, ci);
		conns_add(b->subs[si].conns, seg_sub_conns(&b->v, si), b->v.lim.pubs_per_topic, ci);
		gen_bump(&b->v.pubs[pi].conn_gen); /* W1 */
		gen_bump(&b->v.subs[si].conn_gen);
		owed = conn_push(b, ci, MSG_PUSH_CONN) | conn_push(b, ci, MSG_PUSH_SUB_CONN);
		rc->prep_owed = (owed & ACK_PUB) != 0;
		rc->sub_owed = (owed & ACK_SUB) != 0;
		if (owed && waiter) {
			rc->waiter = waiter;
			rc->acks_owed = owed;
			waiter->pend_acks += (unsigned)__builtin_popcount(owed);
		}
		return 0;
	}
	return -ENOSPC; /* conns_available() checked before: not reached */
}

static void conn_retire(struct broker *b, uint32_t ci, bool pub_done, bool sub_done)
{
	struct reg_conn *rc = &b->conns[ci];
	const struct seg_view *v = &b->v;

	if (rc->state == SLOT_CLOSING) {
		rc->pub_done |= pub_done; /* the other end closes too: stop waiting for it */
		rc->sub_done |= sub_done;
		return;
	}
	if (rc->state == SLOT_ORPHAN) {
		pub_done = true; /* its publisher is gone already */
		b->n_orphans--;
	}
	conn_acks_settle(b, ci, ACK_PUB | ACK_SUB); /* nobody confirms a connection that left */
	conn_set_state(b, ci, SLOT_CLOSING);
	conns_del(b->pubs[rc->pub].conns, seg_pub_conns(v, rc->pub), v->lim.subs_per_topic, ci);
	conns_del(b->subs[rc->sub].conns, seg_sub_conns(v, rc->sub), v->lim.pubs_per_topic, ci);
	gen_bump(&v->pubs[rc->pub].conn_gen); /* W1, Q0 */
	gen_bump(&v->subs[rc->sub].conn_gen);
	q0_fence(b);
	/* G1: only after the bump, so a publish the publisher's agent sees
	 * starting after its own grace snapshot reloads the list and no
	 * longer touches the eventfd or the subscriber's segment it unmaps. */
	if (!pub_done)
		conn_push(b, ci, MSG_PUSH_CONN_GONE);
	rc->pub_done = pub_done;
	rc->sub_done = sub_done;
	/* Q0: seq_cst loads after the seq_cst gen bumps. */
	rc->pub_snap = end_active(pub_active(b, rc->pub));
	rc->sub_snap = end_active(sub_active(b, rc->sub));
	if (b->subs[rc->sub].seg.base)
		ring_wake_producer_closed(conn_sw(b, ci)); /* a publisher blocked on it gives up */
	b->n_retiring++;
}

/* The publisher left: samples it already pushed stay takeable. The
 * connection leaves the publisher's list now and the subscriber's once its
 * ring is empty (reg_tick). pub_dead: its process is gone or it closed the
 * port itself (so no publish of it runs); otherwise (a client the broker
 * dropped) its Q0 counter is waited for before the ring is declared its
 * subscriber's alone (pub_quiet, R2). */
static void conn_orphan(struct broker *b, uint32_t ci, bool pub_dead)
{
	struct reg_conn *rc = &b->conns[ci];

	if (rc->state != SLOT_ACTIVE)
		return;
	conn_acks_settle(b, ci, ACK_PUB);
	conn_set_state(b, ci, SLOT_ORPHAN);
	conns_del(b->pubs[rc->pub].conns, seg_pub_conns(&b->v, rc->pub), b->v.lim.subs_per_topic, ci);
	gen_bump(&b->v.pubs[rc->pub].conn_gen); /* W1 */
	q0_fence(b);
	conn_push(b, ci, MSG_PUSH_CONN_GONE); /* G1: after the bump, as in conn_retire */
	rc->pub_done = pub_dead;
	rc->pub_quiet = false;
	/* Q0: seq_cst load after the seq_cst gen bump. */
	rc->pub_snap = end_active(pub_active(b, rc->pub));
	if (b->subs[rc->sub].seg.base)
		ring_wake_producer_closed(conn_sw(b, ci));
	b->n_orphans++;
}

/* An end closed or died: retirements already under way stop waiting for it
 * (a dead process may have left its `active` counter odd forever). */
static void conns_end_done(struct broker *b, uint32_t index, bool is_pub)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++) {
		struct reg_conn *rc = &b->conns[ci];

		if (rc->state != SLOT_CLOSING)
			continue;
		if (is_pub && rc->pub == index)
			rc->pub_done = true;
		else if (!is_pub && rc->sub == index)
			rc->sub_done = true;
	}
}

static bool ring_empty(const struct broker *b, uint32_t ci)
{
	const struct reg_conn *rc = &b->conns[ci];

	/* An end a restarted broker never got back (adopt.c: its process did
	 * not return) shows us nothing: what it left queued is lost. */
	if (!b->pubs[rc->pub].pool.base || !b->subs[rc->sub].seg.base)
		return true;

	/* A publisher that never prepared its region pushed nothing into it
	 * (acquire: pairs with its release of the mark). */
	if (atomic_load_explicit(&conn_pw(b, ci)->mark, memory_order_acquire) != takt_conn_mark(ci, rc->incarnation))
		return true;
	/* Nor has a subscriber that has not started its own region: its tail
	 * there is an earlier connection's. It takes what was pushed once it
	 * has (acquire: pairs with its release of the mark). */
	if (atomic_load_explicit(&conn_sw(b, ci)->mark, memory_order_acquire) != takt_conn_mark(ci, rc->incarnation))
		return b->subs[rc->sub].state != SLOT_ACTIVE;
	return ring_drained(conn_pw(b, ci), conn_sw(b, ci), seg_pool_ring(&b->pubs[rc->pub].pool, rc->pub_slot),
			    rc->mask);
}

static bool quiesced(const _Atomic uint64_t *active, uint64_t snap, bool done)
{
	/* Q0: seq_cst load pairs with the client's increments of active */
	return done || !active || (snap & 1) == 0 || atomic_load_explicit(active, memory_order_seq_cst) != snap;
}

/* Both ends quiesced (Q0): nobody uses the rings any more, the slot can be
 * reused. What was queued or taken on it is the publisher's business (its
 * private accounting, pub.c), or went with its pool. */
static void conn_free(struct broker *b, uint32_t ci)
{
	const struct reg_conn *rc = &b->conns[ci];

	/* Its regions may be reused: both ends are quiescent (the next
	 * connection's writers initialise them anew). */
	slot_put(b->pubs[rc->pub].slot_busy, rc->pub_slot);
	slot_put(b->subs[rc->sub].slot_busy, rc->sub_slot);
	conn_set_state(b, ci, SLOT_FREE);
	b->n_retiring--;
}

/* ---- ports -------------------------------------------------------------- */

static void pub_map_drop(struct reg_pub *rp);
static void sub_seg_drop(struct reg_sub *rs);

/* [limits] ports_per_process: a process flooding opens uses up its own
 * quota, not the domain's tables. 0, or -EDQUOT (logged once per open). */
static int ports_quota(struct broker *b, const struct client *cl, const char *topic)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < b->v.lim.publishers; i++)
		n += b->pubs[i].state == SLOT_ACTIVE && b->pubs[i].proc == cl->proc;
	for (uint32_t i = 0; i < b->v.lim.subscribers; i++)
		n += b->subs[i].state == SLOT_ACTIVE && b->subs[i].proc == cl->proc;
	if (n < config_ports_per_process(&b->cfg))
		return 0;
	fprintf(stderr, "takt-broker: topic '%s': process %d (%s) holds %u ports already ([limits] ports_per_process)\n",
		topic, cl->pid, b->v.procs[cl->proc].name, n);
	return -EDQUOT;
}

bool names_ok(const char *topic, const char *type, const char *reply)
{
	return (proto_name_ok(topic, TAKT_NAME_MAX) || proto_service_topic(topic, TAKT_NAME_MAX, NULL, NULL)) &&
	       (type[0] == 0 || proto_name_ok(type, TAKT_NAME_MAX)) &&
	       (reply[0] == 0 ||
		(proto_name_ok(reply, TAKT_NAME_MAX) && proto_service_topic(topic, TAKT_NAME_MAX, NULL, NULL) == 'q'));
}

/* Whether process proc has a port on the topic named topic: a publisher
 * (of this id, unless 0) or a subscriber. */
static bool proc_holds(const struct broker *b, uint32_t proc, const char *topic, bool pub, uint64_t id)
{
	if (pub) {
		for (uint32_t i = 0; i < b->v.lim.publishers; i++)
			if (b->pubs[i].state == SLOT_ACTIVE && b->pubs[i].proc == proc && (!id || b->pubs[i].id == id) &&
			    !strcmp(b->topics[b->pubs[i].topic].name, topic))
				return true;
		return false;
	}
	for (uint32_t i = 0; i < b->v.lim.subscribers; i++)
		if (b->subs[i].state == SLOT_ACTIVE && b->subs[i].proc == proc &&
		    !strcmp(b->topics[b->subs[i].topic].name, topic))
			return true;
	return false;
}

/* Whether the topic named topic has a subscriber (of any process). */
static bool topic_has_sub(const struct broker *b, const char *topic)
{
	for (uint32_t i = 0; i < b->v.lim.topics; i++)
		if (b->topics[i].state == SLOT_ACTIVE && !strcmp(b->topics[i].name, topic))
			return b->topics[i].n_subs > 0;
	return false;
}

/* Who may open a port on a topic. A service's topics (proto.h,
 * libipc/service.c): on "@/S/q" any client publishes ([access] call on
 * S), one server subscribes ([access] serve on S; a second:
 * -EADDRINUSE); on "@/S/r/<id>" only the server of S publishes, and only
 * the process of client <id> (its publisher on "@/S/q") subscribes, once.
 * Any other topic: the [access] rules. 0 or a negative errno (logged). */
static int port_allowed(struct broker *b, struct client *cl, const char *topic, bool pub)
{
	char svc[TAKT_NAME_MAX], q[2 * TAKT_NAME_MAX];
	uint64_t client;
	size_t len;
	int kind = proto_service_topic(topic, TAKT_NAME_MAX, &len, &client);

	if (!kind)
		return server_access(b, cl, pub ? ACCESS_PUBLISH : ACCESS_SUBSCRIBE, topic);
	memcpy(svc, topic + 2, len);
	svc[len] = 0;
	/* a client calls (publishes requests, reads its responses), a server
	 * serves (reads requests, publishes responses) */
	if (server_access(b, cl, (kind == 'q') == pub ? ACCESS_CALL : ACCESS_SERVE, svc) < 0)
		return -EACCES;
	if (kind == 'q') {
		if (!pub && topic_has_sub(b, topic)) {
			fprintf(stderr, "takt-broker: service '%s': process %d (%s) wants to serve it, but it has a server\n",
				svc, cl->pid, b->v.procs[cl->proc].name);
			return -EADDRINUSE;
		}
		return 0;
	}
	snprintf(q, sizeof(q), "@/%s/q", svc);
	if (pub ? !proc_holds(b, cl->proc, q, false, 0) : !proc_holds(b, cl->proc, q, true, client)) {
		fprintf(stderr, "takt-broker: service '%s': process %d (%s) may not %s the responses of client %#llx\n",
			svc, cl->pid, b->v.procs[cl->proc].name, pub ? "send" : "read", (unsigned long long)client);
		return -EPERM;
	}
	return !pub && topic_has_sub(b, topic) ? -EADDRINUSE : 0;
}

/* Whether n more connections fit: an open either gets all it needs or fails. */
static bool conns_available(const struct broker *b, uint32_t n)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections && n; ci++)
		n -= b->conns[ci].state == SLOT_FREE;
	if (n)
		fprintf(stderr, "takt-broker: connection table full ([limits] connections = %u)\n",
			b->v.lim.connections);
	return n == 0;
}

/* A topic slot with room for one more port of a kind, or a negative errno. */
static int topic_join(struct broker *b, const char *topic, const char *type, const char *reply, bool pub)
{
	int ti = topic_find_or_add(b, topic, type, reply);
	struct reg_topic *t;

	if (ti < 0)
		return ti;
	t = &b->topics[ti];
	if ((pub ? t->n_pubs >= b->v.lim.pubs_per_topic : t->n_subs >= b->v.lim.subs_per_topic) ||
	    !conns_available(b, pub ? t->n_subs : t->n_pubs)) {
		topic_put(b, (uint32_t)ti);
		return -ENOSPC;
	}
	return ti;
}

void pub_mirror(struct broker *b, uint32_t pi)
{
	const struct reg_pub *rp = &b->pubs[pi];
	struct takt_pub_port *p = &b->v.pubs[pi];

	p->topic = rp->topic;
	p->proc = rp->proc;
	p->history = rp->history;
	p->id = rp->id;
	p->payload_size = rp->payload_size;
	p->chunk_stride = rp->stride;
	p->n_chunks_max = rp->n_chunks_max;
	/* relaxed: ordered by the release of state below. */
	atomic_store_explicit(&p->n_chunks, rp->n_chunks, memory_order_relaxed);
	publish_state(&p->state, rp->state);
}

/* Keeps fd, the pool of closed publisher pub_id, while subscribers map
 * it. false: out of memory (the caller closes it: counted as gone early). */
bool pool_left_add(struct broker *b, uint64_t pub_id, int fd)
{
	if (b->n_left == b->cap_left) {
		unsigned cap = b->cap_left ? 2 * b->cap_left : 16;
		struct reg_pool_left *l = realloc(b->left, cap * sizeof(*l));

		if (!l)
			return false;
		b->left = l;
		b->cap_left = cap;
	}
	b->left[b->n_left++] = (struct reg_pool_left){.pub_id = pub_id, .fd = fd};
	return true;
}

/* The publisher is gone: its pool stays (and counts) while subscribers
 * still map it. The descriptor kept is the publisher's, or (a publisher a
 * restarted broker never got back: adopt.c) the copy a subscriber handed
 * back. */
static void pub_pool_close(struct broker *b, struct reg_pub *rp)
{
	int *keep = rp->pool_fd >= 0 ? &rp->pool_fd : &rp->pool_ro_fd;

	if (*keep >= 0 && pool_mapped(b, rp->id) && pool_left_add(b, rp->id, *keep))
		*keep = -1;
	if (rp->pool_fd >= 0)
		close(rp->pool_fd);
	if (rp->pool_ro_fd >= 0)
		close(rp->pool_ro_fd);
	rp->pool_fd = rp->pool_ro_fd = -1;
}

int reg_pub_open(struct broker *b, struct client *cl, const struct msg_pub_open *m)
{
	const struct seg_view *v = &b->v;
	const struct takt_limits *l = &v->lim;
	struct takt_pub_port *p;
	struct reg_pub *rp;
	uint64_t n_max, base;
	uint32_t pi;
	int ti, r;

	if (!names_ok(m->topic, m->type_name, m->reply_type) || m->history > l->history_max)
		return -EINVAL;
	r = port_allowed(b, cl, m->topic, true);
	if (r < 0)
		return r;
	if (ports_quota(b, cl, m->topic) < 0)
		return -EDQUOT;
	if (m->max_payload > b->cfg.max_payload) {
		fprintf(stderr, "takt-broker: topic '%s': process %d asked for max_payload %llu, over [memory] "
			"max_payload %llu\n", m->topic, cl->pid, (unsigned long long)m->max_payload,
			(unsigned long long)b->cfg.max_payload);
		return -EMSGSIZE;
	}
	for (pi = 0; pi < l->publishers && b->pubs[pi].state != SLOT_FREE; pi++)
		;
	if (pi == l->publishers)
		return -ENOSPC;
	ti = topic_join(b, m->topic, m->type_name, m->reply_type, true);
	if (ti < 0)
		return ti;
	struct reg_topic *t = &b->topics[ti];

	rp = &b->pubs[pi];
	p = &v->pubs[pi];
	base = layout_pool_base_chunks(l, m->history);
	n_max = base + (uint64_t)l->subs_per_topic * layout_pool_conn_chunks(l, l->queue_depth_max);
	if (n_max > UINT32_MAX / 2)
		n_max = UINT32_MAX / 2;
	*rp = (struct reg_pub){.state = SLOT_ACTIVE, .topic = (uint32_t)ti, .proc = cl->proc,
			       .history = m->history, .id = reg_new_id(b), .payload_size = m->max_payload,
			       .stride = layout_chunk_stride(m->max_payload), .n_chunks_max = (uint32_t)n_max,
			       .pool_fd = -1, .pool_ro_fd = -1, .conns = rp->conns, .slot_busy = rp->slot_busy};
	memset(rp->slot_busy, 0, ((size_t)l->subs_per_topic + 63) / 64 * sizeof(uint64_t));
	p->id = rp->id;
	p->payload_size = rp->payload_size;
	p->chunk_stride = rp->stride;
	p->n_chunks_max = rp->n_chunks_max;
	r = seg_pool_create(b, p, pi, 0, &rp->pool_fd, &rp->pool_ro_fd);
	if (r == 0)
		p->seg_ino = rp->seg_ino = seg_fd_ino(rp->pool_fd); /* what it hands back to a new broker */
	if (r == 0) {
		/* Our view: the live, connection and ring words, not the chunks. */
		struct takt_pool_layout pl;
		void *map;

		layout_pool(l, &pl);
		map = seg_map_ro(rp->pool_fd, pl.chunk_off);
		if (map) {
			seg_pool_at(v, p, map, pl.chunk_off, &rp->pool);
			rp->pool_map_size = pl.chunk_off;
		} else {
			r = -ENOMEM;
		}
	}
	if (r == 0)
		r = pool_grow(b, pi, base, "its loans and history");
	if (r < 0) {
		if (r != -ENOMEM)
			fprintf(stderr, "takt-broker: topic '%s': cannot create a pool segment: %s\n", m->topic,
				strerror(-r));
		pub_pool_close(b, rp);
		pub_map_drop(rp);
		rp->state = SLOT_FREE;
		topic_put(b, (uint32_t)ti);
		return r == -ENOMEM ? -ENOMEM : r;
	}
	conns_clear(rp->conns, seg_pub_conns(v, pi), l->subs_per_topic);
	pub_mirror(b, pi);
	t->pubs[t->n_pubs++] = pi;
	topic_mirror(b, (uint32_t)ti);
	return (int)pi; /* connected by PUB_CONNECT, once it mapped its pool */
}

int reg_pub_connect(struct broker *b, struct client *cl, uint32_t index)
{
	const struct takt_limits *l = &b->v.lim;
	struct reg_pub *rp;
	struct reg_topic *t;
	uint32_t n;

	if (index >= l->publishers)
		return -EINVAL;
	rp = &b->pubs[index];
	if (rp->state != SLOT_ACTIVE || rp->proc != cl->proc)
		return -EPERM;
	if (rp->connected)
		return -EALREADY;
	t = &b->topics[rp->topic];
	n = 0;
	for (uint32_t j = 0; j < t->n_subs; j++)
		n += b->subs[t->subs[j]].connected;
	if (!conns_available(b, n))
		return -ENOSPC;
	/* Its publisher has mapped the pool read-write: from now on no new
	 * mapping of it can be writable, through any descriptor, even one
	 * reopened through /proc, and the set of seals is closed. Read-only
	 * descriptors leave only after this (PUSH_SUB_CONN). A publisher that
	 * changed the seals itself cannot be connected. */
	if (fcntl(rp->pool_fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		fprintf(stderr, "takt-broker: topic '%s': cannot seal the pool of publisher %u of process %d: %s\n",
			t->name, index, cl->pid, strerror(errno));
		return -EBADFD;
	}
	for (uint32_t j = 0; j < t->n_subs; j++)
		if (b->subs[t->subs[j]].connected &&
		    pool_grow(b, index, layout_pool_conn_chunks(l, b->subs[t->subs[j]].depth), "a subscriber") < 0)
			return -ENOMEM;
	rp->connected = true;
	for (uint32_t j = 0; j < t->n_subs; j++)
		if (b->subs[t->subs[j]].connected)
			conn_create(b, index, t->subs[j], cl);
	return (int)index;
}

int reg_pub_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct reg_pub *rp;

	if (index >= b->v.lim.publishers)
		return -EINVAL;
	rp = &b->pubs[index];
	if (rp->state != SLOT_ACTIVE || rp->proc != cl->proc)
		return -EPERM;
	for (unsigned j = 0; j < b->v.lim.subs_per_topic; j++)
		if (rp->conns[j] != TAKT_NONE)
			conn_orphan(b, rp->conns[j], !cl->doomed);
	conns_end_done(b, index, true);
	/* Subscribers keep their mappings while they take and hold what it
	 * sent; the memory goes with the last of them. */
	pub_pool_close(b, rp);
	list_del(b->topics[rp->topic].pubs, &b->topics[rp->topic].n_pubs, index);
	topic_put(b, rp->topic);
	rp->state = SLOT_CLOSING; /* free once no connection names it */
	pub_mirror(b, index);
	reg_tick(b);
	return 0;
}

void sub_mirror(struct broker *b, uint32_t si)
{
	const struct reg_sub *rs = &b->subs[si];
	struct takt_sub_port *s = &b->v.subs[si];

	s->topic = rs->topic;
	s->proc = rs->proc;
	s->queue_depth = rs->depth;
	s->overflow = rs->overflow;
	s->history = rs->history;
	publish_state(&s->state, rs->state);
}

static void sub_reset_shared(struct broker *b, uint32_t si)
{
	struct takt_sub_port *s = &b->v.subs[si];

	conns_clear(b->subs[si].conns, seg_sub_conns(&b->v, si), b->v.lim.pubs_per_topic);
	atomic_store_explicit(&s->broker_wakes, 0, memory_order_relaxed);
}

int reg_sub_open(struct broker *b, struct client *cl, const struct msg_sub_open *m)
{
	const struct seg_view *v = &b->v;
	uint32_t si, depth;
	int ti, efd, r;

	if (!names_ok(m->topic, m->type_name, m->reply_type) || m->overflow > TAKT_OVERFLOW_REJECT ||
	    m->queue_depth > v->lim.queue_depth_max || m->history > v->lim.history_max)
		return -EINVAL;
	r = port_allowed(b, cl, m->topic, false);
	if (r < 0)
		return r;
	/* A service's queues reject when full (service.c counts on it): a
	 * blocking one would stall its publisher, the server or a client, for
	 * its block timeout at every full queue; a dropping one would take
	 * chunks back behind their owner's count. */
	if (proto_service_topic(m->topic, TAKT_NAME_MAX, NULL, NULL) && m->overflow != TAKT_OVERFLOW_REJECT) {
		fprintf(stderr, "takt-broker: topic '%s': process %d (%s) asked for a queue that does not reject when full\n",
			m->topic, cl->pid, b->v.procs[cl->proc].name);
		return -EINVAL;
	}
	if (ports_quota(b, cl, m->topic) < 0)
		return -EDQUOT;
	for (si = 0; si < v->lim.subscribers && b->subs[si].state != SLOT_FREE; si++)
		;
	if (si == v->lim.subscribers)
		return -ENOSPC;
	ti = topic_join(b, m->topic, m->type_name, m->reply_type, false);
	if (ti < 0)
		return ti;
	struct reg_topic *t = &b->topics[ti];

	depth = m->queue_depth ? m->queue_depth : 16;
	if (depth > v->lim.queue_depth_max) /* the default, under a smaller limit */
		depth = v->lim.queue_depth_max;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		topic_put(b, (uint32_t)ti);
		return -errno;
	}
	b->subs[si] = (struct reg_sub){.state = SLOT_ACTIVE, .topic = (uint32_t)ti, .proc = cl->proc,
				       .depth = depth, .overflow = m->overflow, .history = m->history,
				       .seg_fd = -1, .seg_ro_fd = -1, .conns = b->subs[si].conns,
				       .slot_busy = b->subs[si].slot_busy};
	memset(b->subs[si].slot_busy, 0, ((size_t)v->lim.pubs_per_topic + 63) / 64 * sizeof(uint64_t));
	r = seg_subseg_create(b, si, &b->subs[si].seg_fd, &b->subs[si].seg_ro_fd);
	if (r == 0)
		v->subs[si].seg_ino = b->subs[si].seg_ino = seg_fd_ino(b->subs[si].seg_fd);
	if (r == 0) {
		/* Our view of its segment: park, active, tails, returns. */
		struct takt_subseg_layout sl;
		void *map;

		layout_subseg(&v->lim, &sl);
		map = seg_map_ro(b->subs[si].seg_fd, sl.size);
		r = map ? seg_subseg_check(v, si, map, sl.size, &b->subs[si].seg) : -ENOMEM;
		if (r < 0 && map)
			munmap(map, sl.size);
	}
	if (r < 0) {
		fprintf(stderr, "takt-broker: topic '%s': cannot create the segment of a subscriber of process %d: %s\n",
			m->topic, cl->pid, strerror(-r));
		sub_seg_drop(&b->subs[si]);
		b->subs[si].state = SLOT_FREE;
		close(efd);
		topic_put(b, (uint32_t)ti);
		return -ENOMEM;
	}
	sub_reset_shared(b, si);
	sub_mirror(b, si);
	b->sub_efd[si] = efd;
	t->subs[t->n_subs++] = si;
	topic_mirror(b, (uint32_t)ti);
	return (int)si; /* connected by SUB_CONNECT, once it mapped its segment */
}

int reg_sub_connect(struct broker *b, struct client *cl, uint32_t index)
{
	const struct takt_limits *l = &b->v.lim;
	struct reg_sub *rs;
	struct reg_topic *t;
	uint32_t n = 0;

	if (index >= l->subscribers)
		return -EINVAL;
	rs = &b->subs[index];
	if (rs->state != SLOT_ACTIVE || rs->proc != cl->proc)
		return -EPERM;
	if (rs->connected)
		return -EALREADY;
	t = &b->topics[rs->topic];
	for (uint32_t j = 0; j < t->n_pubs; j++)
		n += b->pubs[t->pubs[j]].connected;
	if (!conns_available(b, n))
		return -ENOSPC;
	/* As for a pool (reg_pub_connect): no new writable mapping of it from
	 * now on; read-only descriptors of it leave only after this. */
	if (fcntl(rs->seg_fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) < 0) {
		fprintf(stderr, "takt-broker: topic '%s': cannot seal the segment of subscriber %u of process %d: %s\n",
			t->name, index, cl->pid, strerror(errno));
		return -EBADFD;
	}
	/* Every connected publisher's pool grows by what this subscriber can
	 * hold from it, before anything is created: all or nothing. */
	for (uint32_t j = 0; j < t->n_pubs; j++)
		if (b->pubs[t->pubs[j]].connected &&
		    pool_grow(b, t->pubs[j], layout_pool_conn_chunks(l, rs->depth), "a new subscriber") < 0)
			return -ENOMEM;
	rs->connected = true;
	for (uint32_t j = 0; j < t->n_pubs; j++)
		if (b->pubs[t->pubs[j]].connected)
			conn_create(b, t->pubs[j], index, cl);
	return (int)index;
}

int reg_sub_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct reg_sub *rs;

	if (index >= b->v.lim.subscribers)
		return -EINVAL;
	rs = &b->subs[index];
	if (rs->state != SLOT_ACTIVE || rs->proc != cl->proc)
		return -EPERM;
	rs->state = SLOT_CLOSING; /* free once its connections are retired */
	sub_mirror(b, index);
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++) /* its agent finds no port for them now */
		if (b->conns[ci].state != SLOT_FREE && b->conns[ci].sub == index)
			b->conns[ci].sub_owed = false;
	for (unsigned j = 0; j < b->v.lim.pubs_per_topic; j++)
		if (rs->conns[j] != TAKT_NONE)
			conn_retire(b, rs->conns[j], false, true);
	conns_end_done(b, index, false);
	list_del(b->topics[rs->topic].subs, &b->topics[rs->topic].n_subs, index);
	topic_put(b, rs->topic);
	close(b->sub_efd[index]);
	b->sub_efd[index] = -1;
	pool_maps_drop(b, 0, index, cl->proc); /* it unmaps its pools as it closes */
	reg_tick(b);
	return 0;
}

void reg_conn_ready(struct broker *b, struct client *cl, const struct msg_conn_ready *m)
{
	const struct reg_conn *rc;

	if (m->conn >= b->v.lim.connections || cl->proc == TAKT_NONE)
		return;
	rc = &b->conns[m->conn];
	if (rc->state == SLOT_FREE || rc->incarnation != m->incarnation)
		return; /* a late ack of an earlier use of the slot */
	/* Only an end may confirm for itself. */
	if (b->pubs[rc->pub].proc == cl->proc)
		b->conns[m->conn].prep_owed = false; /* its agent is done with the ring */
	if (b->subs[rc->sub].proc == cl->proc)
		b->conns[m->conn].sub_owed = false; /* its agent is done with its region */
	if ((rc->acks_owed & ACK_PUB) && b->pubs[rc->pub].proc == cl->proc)
		conn_acks_settle(b, m->conn, ACK_PUB);
	else if ((rc->acks_owed & ACK_SUB) && b->subs[rc->sub].proc == cl->proc)
		conn_acks_settle(b, m->conn, ACK_SUB);
}

/* ---- retirement --------------------------------------------------------- */

/* A port is free: our views of its segment go (the connections that used
 * them are gone). */
static void pub_map_drop(struct reg_pub *rp)
{
	if (rp->pool.base)
		munmap(rp->pool.base, rp->pool_map_size);
	memset(rp->slot_busy, 0, ((size_t)rp->pool.n_slots + 63) / 64 * sizeof(uint64_t));
	memset(&rp->pool, 0, sizeof(rp->pool));
}

static void sub_seg_drop(struct reg_sub *rs)
{
	if (rs->seg_fd >= 0)
		close(rs->seg_fd);
	if (rs->seg_ro_fd >= 0)
		close(rs->seg_ro_fd);
	if (rs->seg.base)
		munmap(rs->seg.base, rs->seg.size);
	memset(rs->slot_busy, 0, ((size_t)rs->seg.n_slots + 63) / 64 * sizeof(uint64_t));
	memset(&rs->seg, 0, sizeof(rs->seg));
	rs->seg_fd = rs->seg_ro_fd = -1;
}

static bool port_has_conns(const struct broker *b, uint32_t index, bool pub)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++)
		if (b->conns[ci].state != SLOT_FREE && (pub ? b->conns[ci].pub : b->conns[ci].sub) == index)
			return true;
	return false;
}

/* Opens whose acks are overdue are answered anyway (A0). */
static void pend_expire(struct broker *b)
{
	uint64_t now = takt_now_ns();

	for (unsigned i = 0; b->n_pending && i < b->n_clients_max; i++) {
		struct client *cl = &b->clients[i];

		if (cl->fd < 0 || !cl->pend || now < cl->pend_deadline_ns)
			continue;
		fprintf(stderr, "takt-broker: process %d (%s): %u connection(s) not confirmed by their other end "
			"within %llu ms; answering its open anyway\n", cl->pid,
			cl->proc != TAKT_NONE ? b->v.procs[cl->proc].name : "?", cl->pend_acks,
			(unsigned long long)b->cfg.confirm_timeout_ms);
		for (uint32_t ci = 0; ci < b->v.lim.connections; ci++)
			if (b->conns[ci].waiter == cl) {
				b->conns[ci].waiter = NULL;
				b->conns[ci].acks_owed = 0;
			}
		for (uint32_t ei = 0; ei < b->v.lim.events; ei++)
			for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
				if (b->events[ei].lis[j].cl == cl)
					b->events[ei].lis[j].acks_owed = 0;
		cl->pend_acks = 0;
		server_pend_reply(b, cl);
	}
}

uint64_t reg_pend_deadline(const struct broker *b)
{
	return takt_now_ns() + (uint64_t)b->cfg.confirm_timeout_ms * 1000000u;
}

/* Whether publisher pi and subscriber si have a connection (any state). */
static bool conn_between(const struct broker *b, uint32_t pi, uint32_t si)
{
	for (unsigned j = 0; j < b->v.lim.subs_per_topic; j++) {
		uint32_t ci = b->pubs[pi].conns[j];

		if (ci != TAKT_NONE && b->conns[ci].sub == si)
			return true;
	}
	return false;
}

/* Creates the connections conn_create could not for want of a region. */
static void conns_fill(struct broker *b)
{
	b->conns_missing = false;
	for (uint32_t ti = 0; ti < b->v.lim.topics; ti++) {
		const struct reg_topic *t = &b->topics[ti];

		if (t->state != SLOT_ACTIVE)
			continue;
		for (uint32_t i = 0; i < t->n_pubs; i++)
			for (uint32_t k = 0; k < t->n_subs; k++) {
				uint32_t pi = t->pubs[i], si = t->subs[k];

				if (b->pubs[pi].connected && b->subs[si].connected && !conn_between(b, pi, si))
					conn_create(b, pi, si, NULL); /* sets conns_missing again if still none */
			}
	}
}

int reg_tick(struct broker *b)
{
	const struct seg_view *v = &b->v;

	if (b->adopt_state != ADOPT_NONE) /* the registry is not whole yet (adopt.c) */
		return adopt_tick(b);
	pend_expire(b);
	for (uint32_t ci = 0; ci < v->lim.connections && b->n_orphans; ci++) {
		struct reg_conn *rc = &b->conns[ci];

		if (rc->state != SLOT_ORPHAN)
			continue;
		if (!rc->pub_quiet && quiesced(pub_active(b, rc->pub), rc->pub_snap, rc->pub_done)) {
			/* R2: it will never write this ring again: a claim it
			 * left open is the subscriber's (release pairs with its
			 * acquire in ring.c); wake it to take what is left. */
			rc->pub_quiet = true;
			atomic_store_explicit(&v->conns[ci].pub_quiet, 1, memory_order_release);
			sub_wake(b, rc->sub);
		}
		if (ring_empty(b, ci))
			conn_retire(b, ci, true, false);
	}
	for (uint32_t ci = 0; ci < v->lim.connections && b->n_retiring; ci++) {
		const struct reg_conn *rc = &b->conns[ci];

		if (rc->state == SLOT_CLOSING && !rc->prep_owed && !rc->sub_owed &&
		    quiesced(pub_active(b, rc->pub), rc->pub_snap, rc->pub_done) &&
		    quiesced(sub_active(b, rc->sub), rc->sub_snap, rc->sub_done))
			conn_free(b, ci);
	}
	for (uint32_t si = 0; si < v->lim.subscribers; si++)
		if (b->subs[si].state == SLOT_CLOSING && !port_has_conns(b, si, false)) {
			b->subs[si].state = SLOT_FREE;
			sub_seg_drop(&b->subs[si]);
			sub_mirror(b, si);
		}
	for (uint32_t pi = 0; pi < v->lim.publishers; pi++)
		if (b->pubs[pi].state == SLOT_CLOSING && !port_has_conns(b, pi, true)) {
			b->pubs[pi].state = SLOT_FREE;
			pub_pool_close(b, &b->pubs[pi]); /* a copy adopted after its close (adopt.c) */
			pub_map_drop(&b->pubs[pi]);
			pub_mirror(b, pi);
		}
	if (b->conns_missing)
		conns_fill(b);
	return b->n_retiring || b->n_pending ? TICK_FAST : b->n_orphans || b->conns_missing ? TICK_SLOW : TICK_OFF;
}

/* ---- introspection ------------------------------------------------------ */

void reg_pool_stats(struct broker *b, uint32_t first, struct msg_pools_reply *rep)
{
	const struct seg_view *v = &b->v;
	uint32_t n = 0, pi;

	for (pi = first; pi < v->lim.publishers && n < PROTO_POOLS_PER_REPLY; pi++) {
		const struct reg_pub *rp = &b->pubs[pi];
		const struct takt_pub_live *pp = rp->pool.live;
		struct proto_pool_stat *st = &rep->pools[n];
		uint32_t fr;

		if (rp->state != SLOT_ACTIVE)
			continue;
		memcpy(st->topic, b->topics[rp->topic].name, TAKT_NAME_MAX);
		st->publisher_id = rp->id;
		st->payload_size = rp->payload_size;
		st->pid = v->procs[rp->proc].pid;
		st->port = pi;
		st->total = rp->n_chunks;
		st->max = rp->n_chunks_max;
		st->bytes = seg_fd_bytes(rp->pool_fd);
		/* relaxed: statistics the publisher writes; clamped, since a
		 * process can write anything there. */
		fr = atomic_load_explicit(&pp->stat_free, memory_order_relaxed);
		st->free = fr > st->total ? st->total : fr;
		st->in_flight = st->total - st->free;
		st->history = atomic_load_explicit(&pp->stat_history, memory_order_relaxed);
		st->loans = atomic_load_explicit(&pp->stat_loans, memory_order_relaxed);
		st->bad_returns = atomic_load_explicit(&pp->stat_bad_returns, memory_order_relaxed);
		st->light = atomic_load_explicit(&pp->light, memory_order_relaxed) == 1;
		n++;
	}
	rep->r.index = n;
	rep->next = pi < v->lim.publishers ? pi : TAKT_NONE;
}

void reg_conn_stats(struct broker *b, uint32_t first, struct msg_conns_reply *rep)
{
	const struct seg_view *v = &b->v;
	uint32_t n = 0, ci;

	for (ci = first; ci < v->lim.connections && n < PROTO_CONNS_PER_REPLY; ci++) {
		const struct reg_conn *rc = &b->conns[ci];
		struct proto_conn_stat *st = &rep->conns[n];
		uint64_t mark = takt_conn_mark(ci, rc->incarnation);

		if (rc->state != SLOT_ACTIVE && rc->state != SLOT_ORPHAN)
			continue;
		*st = (struct proto_conn_stat){.conn = ci, .pub = rc->pub, .sub = rc->sub, .state = rc->state,
					       .depth = rc->depth, .overflow = v->conns[ci].overflow,
					       .publisher_id = b->pubs[rc->pub].id,
					       .sub_bytes = seg_fd_bytes(b->subs[rc->sub].seg_fd)};
		/* relaxed: statistics; each end's words count only once that end
		 * marked its region for this connection (acquire: pairs with its
		 * release of the mark, as in ring_empty) */
		uint64_t floor = 0;

		if (b->pubs[rc->pub].pool.base &&
		    atomic_load_explicit(&conn_pw(b, ci)->mark, memory_order_acquire) == mark) {
			st->pushed = atomic_load_explicit(&conn_pw(b, ci)->head, memory_order_relaxed);
			st->dropped = atomic_load_explicit(&conn_pw(b, ci)->dropped, memory_order_relaxed);
			/* R2: positions below it the publisher took back (drop-oldest) */
			floor = atomic_load_explicit(&conn_pw(b, ci)->floor, memory_order_relaxed);
		}
		if (b->subs[rc->sub].seg.base &&
		    atomic_load_explicit(&conn_sw(b, ci)->mark, memory_order_acquire) == mark)
			st->taken = atomic_load_explicit(&conn_sw(b, ci)->tail, memory_order_relaxed) >> 1; /* R1 */
		if (floor > st->taken)
			st->taken = floor;
		if (st->taken > st->pushed) /* a process can write anything there */
			st->taken = st->pushed;
		n++;
	}
	rep->r.index = n;
	rep->next = ci < v->lim.connections ? ci : TAKT_NONE;
}

#define COUNT_ACTIVE(arr, n)                                                                       \
	({                                                                                         \
		uint32_t c_ = 0;                                                                   \
		for (uint32_t i_ = 0; i_ < (n); i_++)                                              \
			c_ += (arr)[i_].state == SLOT_ACTIVE;                                      \
		c_;                                                                                \
	})

uint32_t reg_procs(const struct broker *b)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < b->v.lim.processes; i++)
		n += b->proc_state[i] == SLOT_ACTIVE;
	return n;
}

void reg_status(struct broker *b, struct msg_status_reply *rep)
{
	const struct takt_limits *l = &b->v.lim;

	rep->pid = getpid();
	rep->epoch = b->epoch;
	rep->limits = *l;
	rep->n_procs = reg_procs(b);
	rep->n_topics = COUNT_ACTIVE(b->topics, l->topics);
	rep->n_pubs = COUNT_ACTIVE(b->pubs, l->publishers);
	rep->n_subs = COUNT_ACTIVE(b->subs, l->subscribers);
	rep->n_conns = COUNT_ACTIVE(b->conns, l->connections);
	rep->n_events = COUNT_ACTIVE(b->events, l->events);
	snprintf(rep->domain, sizeof(rep->domain), "%s", b->cfg.domain);
	snprintf(rep->version, sizeof(rep->version), "%s", TAKT_VERSION_STRING);
	rep->shm_bytes_idle = seg_fd_bytes(b->mgmt_fd);
	rep->shm_bytes = rep->shm_bytes_idle;
	for (uint32_t i = 0; i < l->publishers; i++) /* (a copy handed back by a subscriber: adopt.c) */
		rep->shm_bytes += seg_fd_bytes(b->pubs[i].pool_fd >= 0 ? b->pubs[i].pool_fd : b->pubs[i].pool_ro_fd);
	for (uint32_t i = 0; i < l->subscribers; i++)
		rep->shm_bytes += seg_fd_bytes(b->subs[i].seg_fd);
	for (uint32_t i = 0; i < l->events; i++)
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			if (b->events[i].lis[j].cl)
				rep->shm_bytes += seg_fd_bytes(b->events[i].lis[j].seg_fd);
	for (unsigned i = 0; i < b->n_left; i++)
		rep->shm_bytes += seg_fd_bytes(b->left[i].fd);
	rep->adopted_epoch = b->adopted.epoch;
	rep->adopted_procs = b->adopted.procs;
	rep->adopted_pubs = b->adopted.pubs;
	rep->adopted_subs = b->adopted.subs;
	rep->adopted_reclaimed = b->adopted.reclaimed;
	rep->adopted_refused = b->adopted.refused;
	rep->adopted_ms = (uint32_t)b->adopted.ms;
}
