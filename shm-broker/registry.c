/* registry.c - the broker's registry: processes, topics, ports, connections,
 * events, and reclaiming what a closed or dead client held.
 *
 * The registry lives in the broker's private memory (broker.h); every change
 * is mirrored into the management segment for clients to read, and the
 * broker never reads a registry word back from shared memory. The only
 * shared words it reads are data-path words (active counters, loans,
 * history, held lists, ring tails and slots), each bounds-checked or only
 * compared.
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
#include "pool.h"
#include "ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void gen_bump(_Atomic uint32_t *gen)
{
	atomic_fetch_add_explicit(gen, 1, memory_order_seq_cst); /* W1, Q0 */
}

/* Q0: between the conn_gen bumps and the snapshots of `active`. Clients
 * that registered for it enter an operation with a plain store of `active`
 * and a compiler barrier only (client.h, q0_enter); this runs a full fence
 * on every CPU that runs one of them, so either their load of conn_gen sees
 * our bump or our snapshot sees their odd `active`. A few microseconds, once
 * per retired connection; never on the data path. */
static void q0_fence(const struct broker *b)
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
static void publish_state(_Atomic uint32_t *shm_state, uint32_t st)
{
	/* release: pairs with the clients' acquire of state; every field the
	 * state guards was written before. */
	atomic_store_explicit(shm_state, st, memory_order_release);
}

int reg_init(struct broker *b)
{
	const struct seg_view *v = &b->v;
	const struct takt_limits *l = &v->lim;

	for (uint32_t i = 0; i < l->publishers; i++) {
		for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++)
			atomic_store_explicit(&v->pubs[i].conns[j], TAKT_NONE, memory_order_relaxed);
		for (unsigned j = 0; j < TAKT_MAX_LOANS; j++)
			atomic_store_explicit(&v->pubs[i].loans[j], TAKT_NONE, memory_order_relaxed);
	}
	for (uint32_t i = 0; i < l->subscribers; i++) {
		for (unsigned j = 0; j < TAKT_MAX_PUBS_PER_TOPIC; j++)
			atomic_store_explicit(&v->subs[i].conns[j], TAKT_NONE, memory_order_relaxed);
		for (unsigned j = 0; j < TAKT_MAX_HELD; j++)
			atomic_store_explicit(&v->subs[i].held[j], TAKT_NONE, memory_order_relaxed);
	}
	b->sub_efd = malloc(sizeof(int) * l->subscribers);
	b->event_efd = malloc(sizeof(int) * l->events);
	b->proc_state = calloc(l->processes, sizeof(*b->proc_state));
	b->proc_client = calloc(l->processes, sizeof(*b->proc_client));
	b->topics = calloc(l->topics, sizeof(*b->topics));
	b->pubs = calloc(l->publishers, sizeof(*b->pubs));
	b->subs = calloc(l->subscribers, sizeof(*b->subs));
	b->conns = calloc(l->connections, sizeof(*b->conns));
	b->events = calloc(l->events, sizeof(*b->events));
	if (!b->sub_efd || !b->event_efd || !b->proc_state || !b->proc_client || !b->topics || !b->pubs || !b->subs ||
	    !b->conns || !b->events)
		return -ENOMEM;
	for (uint32_t i = 0; i < l->subscribers; i++)
		b->sub_efd[i] = -1;
	for (uint32_t i = 0; i < l->events; i++)
		b->event_efd[i] = -1;
	return 0;
}

void reg_free(struct broker *b)
{
	free(b->sub_efd);
	free(b->event_efd);
	free(b->proc_state);
	free(b->proc_client);
	free(b->topics);
	free(b->pubs);
	free(b->subs);
	free(b->conns);
	free(b->events);
}

/* ---- processes ---------------------------------------------------------- */

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

/* A publisher died, perhaps between taking a subscriber's parked flag and
 * writing its eventfd (pub.c, P1): that subscriber would sleep with samples
 * waiting. Wake every subscriber it was connected to; one spurious wake-up
 * each is the price (they find their rings as they are). */
static void pub_wake_subs(struct broker *b, uint32_t pi)
{
	const uint64_t one = 1;

	for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++) {
		uint32_t ci = b->pubs[pi].conns[j];
		int efd;

		if (ci == TAKT_NONE || (efd = b->sub_efd[b->conns[ci].sub]) < 0)
			continue;
		/* P3: release pairs with the subscriber's acquire load in
		 * takt_sub_arm: once it sees the bump it clears the count, so
		 * this write cannot leave a stale wake-up behind. */
		atomic_fetch_add_explicit(&b->v.subs[b->conns[ci].sub].broker_wakes, 1, memory_order_release);
		if (write(efd, &one, sizeof(one)) < 0) {
			/* EAGAIN: the count is near overflow, the fd is readable anyway */
		}
	}
}

void reg_proc_remove(struct broker *b, struct client *cl)
{
	const struct takt_limits *l = &b->v.lim;

	if (cl->proc == TAKT_NONE)
		return;
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
			reg_event_close(b, cl, i);
	b->proc_state[cl->proc] = SLOT_FREE;
	b->proc_client[cl->proc] = NULL;
	publish_state(&b->v.procs[cl->proc].state, SLOT_FREE);
	cl->proc = TAKT_NONE;
}

/* ---- topics ------------------------------------------------------------- */

static void topic_mirror(struct broker *b, uint32_t ti)
{
	const struct reg_topic *t = &b->topics[ti];
	struct takt_topic *m = &b->v.topics[ti];

	memcpy(m->name, t->name, TAKT_NAME_MAX);
	memcpy(m->type_name, t->type_name, TAKT_NAME_MAX);
	m->pool_class = t->pool_class;
	m->n_pubs = t->n_pubs;
	m->n_subs = t->n_subs;
	memcpy(m->pubs, t->pubs, sizeof(m->pubs));
	memcpy(m->subs, t->subs, sizeof(m->subs));
	publish_state(&m->state, t->state);
}

static int topic_find_or_add(struct broker *b, const char *name, const char *type)
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
		if (type[0] && t->type_name[0] && strcmp(type, t->type_name)) {
			fprintf(stderr, "takt-broker: topic '%s' exists with type '%s', a client asked for '%s'\n",
				name, t->type_name, type);
			return -EPROTOTYPE;
		}
		if (type[0] && !t->type_name[0])
			memcpy(t->type_name, type, TAKT_NAME_MAX);
		return (int)i;
	}
	if (free_slot < 0)
		return -ENOSPC;
	struct reg_topic *t = &b->topics[free_slot];

	memset(t, 0, sizeof(*t));
	memcpy(t->name, name, TAKT_NAME_MAX);
	memcpy(t->type_name, type, TAKT_NAME_MAX);
	t->pool_class = TAKT_NONE;
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

static void conn_set_state(struct broker *b, uint32_t ci, uint32_t st)
{
	b->conns[ci].state = st;
	/* B1: seq_cst pairs with ring_wait_room's seq_cst re-check of state
	 * (and is a release for the fields of a new connection). */
	atomic_store_explicit(&b->v.conns[ci].state, st, memory_order_seq_cst);
}

static void conn_init_shared(struct broker *b, uint32_t ci, const struct reg_conn *rc)
{
	struct takt_conn *c = &b->v.conns[ci];
	struct takt_ring_slot *slots = seg_ring_slots(&b->v, ci);

	c->pub = rc->pub;
	c->sub = rc->sub;
	c->mask = rc->mask;
	c->depth = rc->depth;
	c->overflow = b->subs[rc->sub].overflow;
	atomic_fetch_add_explicit(&c->incarnation, 1, memory_order_relaxed);
	atomic_store_explicit(&c->head, 0, memory_order_relaxed);
	atomic_store_explicit(&c->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&c->producer_waiting, 0, memory_order_relaxed);
	/* A stale pos from the slot's previous connection must never match. */
	for (uint32_t j = 0; j <= rc->mask; j++)
		atomic_store_explicit(&slots[j].pos, 0, memory_order_relaxed);
}

/* Ring slots for a depth: the next power of two, so positions map to
 * slots by a mask; the ring itself stops at depth (ring.h). */
static uint32_t depth_slots(uint32_t d)
{
	while (d & (d - 1))
		d += d & -d;
	return d;
}

/* Tells the publisher's node about a connection change (G0, pub.c): a new
 * connection carries the subscriber's eventfd, so publish never has to ask
 * the broker for it. Sent after the connection is visible in shared memory:
 * until the push arrives, the publisher delivers but cannot wake, and its
 * node's agent wakes a parked subscriber once it installs the fd. */
static void conn_push(struct broker *b, uint32_t ci, bool gone)
{
	const struct reg_conn *rc = &b->conns[ci];
	struct client *cl = b->proc_client[b->pubs[rc->pub].proc];
	struct msg_push_conn m = {.pub = rc->pub, .conn = ci, .sub = rc->sub};
	int efd = b->sub_efd[rc->sub];

	if (!cl || cl->doomed)
		return;
	/* relaxed: the broker is the only writer of incarnation. */
	m.incarnation = atomic_load_explicit(&b->v.conns[ci].incarnation, memory_order_relaxed);
	proto_hdr_init(&m.hdr, (uint16_t)((gone ? MSG_PUSH_CONN_GONE : MSG_PUSH_CONN) | PROTO_PUSH_FLAG),
		       sizeof(m), 0);
	server_push(b, cl, &m, sizeof(m), &efd, !gone && efd >= 0 ? 1 : 0);
}

static int conn_create(struct broker *b, uint32_t pi, uint32_t si)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++) {
		struct reg_conn *rc = &b->conns[ci];

		if (rc->state != SLOT_FREE)
			continue;
		*rc = (struct reg_conn){.pub = pi, .sub = si, .mask = depth_slots(b->subs[si].depth) - 1,
					.depth = b->subs[si].depth};
		conn_init_shared(b, ci, rc);
		conn_set_state(b, ci, SLOT_ACTIVE);
		conns_add(b->pubs[pi].conns, b->v.pubs[pi].conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
		conns_add(b->subs[si].conns, b->v.subs[si].conns, TAKT_MAX_PUBS_PER_TOPIC, ci);
		gen_bump(&b->v.pubs[pi].conn_gen); /* W1 */
		gen_bump(&b->v.subs[si].conn_gen);
		conn_push(b, ci, false);
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
	if (!pub_done)
		conn_push(b, ci, true);
	conn_set_state(b, ci, SLOT_CLOSING);
	conns_del(b->pubs[rc->pub].conns, v->pubs[rc->pub].conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
	conns_del(b->subs[rc->sub].conns, v->subs[rc->sub].conns, TAKT_MAX_PUBS_PER_TOPIC, ci);
	gen_bump(&v->pubs[rc->pub].conn_gen); /* W1, Q0 */
	gen_bump(&v->subs[rc->sub].conn_gen);
	q0_fence(b);
	rc->pub_done = pub_done;
	rc->sub_done = sub_done;
	/* Q0: seq_cst loads after the seq_cst gen bumps. */
	rc->pub_snap = atomic_load_explicit(&v->pubs[rc->pub].active, memory_order_seq_cst);
	rc->sub_snap = atomic_load_explicit(&v->subs[rc->sub].active, memory_order_seq_cst);
	ring_wake_producer_closed(&v->conns[ci]); /* a publisher blocked on it gives up */
	b->n_retiring++;
}

/* The publisher left: samples it already pushed stay takeable. The
 * connection leaves the publisher's list now and the subscriber's once its
 * ring is empty (reg_tick). */
static void conn_orphan(struct broker *b, uint32_t ci)
{
	struct reg_conn *rc = &b->conns[ci];

	if (rc->state != SLOT_ACTIVE)
		return;
	conn_push(b, ci, true);
	conn_set_state(b, ci, SLOT_ORPHAN);
	conns_del(b->pubs[rc->pub].conns, b->v.pubs[rc->pub].conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
	gen_bump(&b->v.pubs[rc->pub].conn_gen); /* W1 */
	ring_wake_producer_closed(&b->v.conns[ci]);
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
	const struct takt_conn *c = &b->v.conns[ci];
	/* acquire: pairs with the consumer's or a stealer's tail CAS (R1/R2) */
	uint64_t t = atomic_load_explicit(&c->tail, memory_order_acquire);

	/* R0: acquire pairs with the producer's release of pos. */
	return atomic_load_explicit(&seg_ring_slots(&b->v, ci)[t & b->conns[ci].mask].pos,
				    memory_order_acquire) != t + 1;
}

static bool quiesced(_Atomic uint64_t *active, uint64_t snap, bool done)
{
	/* Q0: seq_cst load pairs with the client's increments of active */
	return done || (snap & 1) == 0 || atomic_load_explicit(active, memory_order_seq_cst) != snap;
}

/* Both ends quiesced (Q0): we are the only user of the ring. Drops the
 * reference of every filled slot from tail on, at most one ring's worth;
 * tail and slots are shared words, so a bad one only ends the walk. */
static void conn_drain_free(struct broker *b, uint32_t ci)
{
	const struct seg_view *v = &b->v;
	struct takt_ring_slot *slots = seg_ring_slots(v, ci);
	uint32_t mask = b->conns[ci].mask;
	/* acquire: pairs with the last tail CAS (R1/R2) of the quiesced ends */
	uint64_t t = atomic_load_explicit(&v->conns[ci].tail, memory_order_acquire);

	for (uint64_t n = 0; n <= mask; n++, t++) {
		struct takt_ring_slot *sl = &slots[t & mask];
		uint32_t ch;

		/* R0: acquire pairs with the producer's release of pos. */
		if (atomic_load_explicit(&sl->pos, memory_order_acquire) != t + 1)
			break;
		ch = atomic_load_explicit(&sl->chunk, memory_order_relaxed);
		if (seg_chunk_ok(v, ch))
			chunk_unref(v, ch);
	}
	conn_set_state(b, ci, SLOT_FREE);
	b->n_retiring--;
}

/* ---- ports -------------------------------------------------------------- */

static int class_for(const struct seg_view *v, uint64_t max_payload)
{
	for (uint32_t k = 0; k < v->lim.n_classes; k++)
		if (v->pool[k].payload_size >= max_payload)
			return (int)k;
	return -EMSGSIZE;
}

static int names_ok(const char *topic, const char *type)
{
	return proto_name_ok(topic, TAKT_NAME_MAX) &&
	       (type[0] == 0 || proto_name_ok(type, TAKT_NAME_MAX));
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
static int topic_join(struct broker *b, const char *topic, const char *type, bool pub)
{
	int ti = topic_find_or_add(b, topic, type);
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

static void pub_mirror(struct broker *b, uint32_t pi)
{
	const struct reg_pub *rp = &b->pubs[pi];
	struct takt_pub_port *p = &b->v.pubs[pi];

	p->topic = rp->topic;
	p->proc = rp->proc;
	p->pool_class = rp->pool_class;
	p->history = rp->history;
	p->id = rp->id;
	publish_state(&p->state, rp->state);
}

int reg_pub_open(struct broker *b, struct client *cl, const struct msg_pub_open *m, uint32_t *ret_class)
{
	const struct seg_view *v = &b->v;
	int k = class_for(v, m->max_payload), ti;
	uint32_t pi;

	if (!names_ok(m->topic, m->type_name) || m->history > v->lim.history_max)
		return -EINVAL;
	if (k < 0)
		return k;
	for (pi = 0; pi < v->lim.publishers && b->pubs[pi].state != SLOT_FREE; pi++)
		;
	if (pi == v->lim.publishers)
		return -ENOSPC;
	ti = topic_join(b, m->topic, m->type_name, true);
	if (ti < 0)
		return ti;
	struct reg_topic *t = &b->topics[ti];
	struct takt_pub_port *p = &v->pubs[pi];

	b->pubs[pi] = (struct reg_pub){.state = SLOT_ACTIVE, .topic = (uint32_t)ti, .proc = cl->proc,
				       .pool_class = (uint32_t)k, .history = m->history,
				       .id = reg_new_id(b)};
	conns_clear(b->pubs[pi].conns, p->conns, TAKT_MAX_SUBS_PER_TOPIC);
	for (unsigned j = 0; j < TAKT_MAX_HISTORY; j++)
		atomic_store_explicit(&p->hist[j], 0, memory_order_relaxed);
	for (unsigned j = 0; j < TAKT_MAX_LOANS; j++)
		atomic_store_explicit(&p->loans[j], TAKT_NONE, memory_order_relaxed);
	atomic_store_explicit(&p->last_seq, 0, memory_order_relaxed);
	pub_mirror(b, pi);
	t->pubs[t->n_pubs++] = pi;
	if (t->pool_class == TAKT_NONE)
		t->pool_class = (uint32_t)k;
	topic_mirror(b, (uint32_t)ti);
	for (uint32_t j = 0; j < t->n_subs; j++)
		conn_create(b, pi, t->subs[j]);
	*ret_class = (uint32_t)k;
	return (int)pi;
}

/* The publisher is gone (closed, or its socket hung up): its loans and
 * history hold references nobody else will drop. */
static void pub_release_chunks(struct broker *b, uint32_t pi)
{
	const struct seg_view *v = &b->v;
	struct takt_pub_port *p = &v->pubs[pi];

	for (unsigned j = 0; j < TAKT_MAX_LOANS; j++) {
		uint32_t c = atomic_exchange_explicit(&p->loans[j], TAKT_NONE, memory_order_relaxed);

		if (seg_chunk_ok(v, c))
			chunk_unref(v, c);
	}
	for (unsigned j = 0; j < TAKT_MAX_HISTORY; j++) {
		/* acq_rel: pairs with the publisher's H0 release. */
		uint64_t w = atomic_exchange_explicit(&p->hist[j], 0, memory_order_acq_rel);

		if (w && seg_chunk_ok(v, (uint32_t)w))
			chunk_unref(v, (uint32_t)w);
	}
}

int reg_pub_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct reg_pub *rp;

	if (index >= b->v.lim.publishers)
		return -EINVAL;
	rp = &b->pubs[index];
	if (rp->state != SLOT_ACTIVE || rp->proc != cl->proc)
		return -EPERM;
	for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++)
		if (rp->conns[j] != TAKT_NONE)
			conn_orphan(b, rp->conns[j]);
	conns_end_done(b, index, true);
	pub_release_chunks(b, index);
	list_del(b->topics[rp->topic].pubs, &b->topics[rp->topic].n_pubs, index);
	topic_put(b, rp->topic);
	rp->state = SLOT_CLOSING; /* free once no connection names it */
	pub_mirror(b, index);
	reg_tick(b);
	return 0;
}

static void sub_mirror(struct broker *b, uint32_t si)
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

	conns_clear(b->subs[si].conns, s->conns, TAKT_MAX_PUBS_PER_TOPIC);
	for (unsigned j = 0; j < TAKT_MAX_HELD; j++)
		atomic_store_explicit(&s->held[j], TAKT_NONE, memory_order_relaxed);
	atomic_store_explicit(&s->parked, 0, memory_order_relaxed);
	atomic_store_explicit(&s->broker_wakes, 0, memory_order_relaxed);
	atomic_store_explicit(&s->dropped, 0, memory_order_relaxed);
}

int reg_sub_open(struct broker *b, struct client *cl, const struct msg_sub_open *m)
{
	const struct seg_view *v = &b->v;
	uint32_t si;
	int ti, efd;

	if (!names_ok(m->topic, m->type_name) || m->overflow > TAKT_OVERFLOW_REJECT ||
	    m->queue_depth > v->lim.queue_depth_max || m->history > v->lim.history_max)
		return -EINVAL;
	for (si = 0; si < v->lim.subscribers && b->subs[si].state != SLOT_FREE; si++)
		;
	if (si == v->lim.subscribers)
		return -ENOSPC;
	ti = topic_join(b, m->topic, m->type_name, false);
	if (ti < 0)
		return ti;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		topic_put(b, (uint32_t)ti);
		return -errno;
	}
	b->subs[si] = (struct reg_sub){.state = SLOT_ACTIVE, .topic = (uint32_t)ti, .proc = cl->proc,
				       .depth = m->queue_depth ? m->queue_depth : 16, .overflow = m->overflow,
				       .history = m->history};
	if (b->subs[si].depth > v->lim.queue_depth_max) /* the default, under a smaller limit */
		b->subs[si].depth = v->lim.queue_depth_max;
	sub_reset_shared(b, si);
	sub_mirror(b, si);
	b->sub_efd[si] = efd;
	struct reg_topic *t = &b->topics[ti];

	t->subs[t->n_subs++] = si;
	topic_mirror(b, (uint32_t)ti);
	for (uint32_t j = 0; j < t->n_pubs; j++)
		conn_create(b, t->pubs[j], si);
	return (int)si;
}

int reg_sub_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct reg_sub *rs;

	if (index >= b->v.lim.subscribers)
		return -EINVAL;
	rs = &b->subs[index];
	if (rs->state != SLOT_ACTIVE || rs->proc != cl->proc)
		return -EPERM;
	rs->state = SLOT_CLOSING; /* held chunks go once its rings are drained */
	sub_mirror(b, index);
	for (unsigned j = 0; j < TAKT_MAX_PUBS_PER_TOPIC; j++)
		if (rs->conns[j] != TAKT_NONE)
			conn_retire(b, rs->conns[j], false, true);
	conns_end_done(b, index, false);
	list_del(b->topics[rs->topic].subs, &b->topics[rs->topic].n_subs, index);
	topic_put(b, rs->topic);
	close(b->sub_efd[index]);
	b->sub_efd[index] = -1;
	reg_tick(b);
	return 0;
}

/* ---- retirement --------------------------------------------------------- */

static bool port_has_conns(const struct broker *b, uint32_t index, bool pub)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++)
		if (b->conns[ci].state != SLOT_FREE && (pub ? b->conns[ci].pub : b->conns[ci].sub) == index)
			return true;
	return false;
}

/* A closed subscriber whose rings are drained: release what it still holds. */
static void sub_finish(struct broker *b, uint32_t si)
{
	struct takt_sub_port *s = &b->v.subs[si];

	for (unsigned k = 0; k < TAKT_MAX_HELD; k++) {
		uint32_t c = atomic_exchange_explicit(&s->held[k], TAKT_NONE, memory_order_relaxed);

		if (seg_chunk_ok(&b->v, c))
			chunk_unref(&b->v, c);
	}
	b->subs[si].state = SLOT_FREE;
	sub_mirror(b, si);
}

int reg_tick(struct broker *b)
{
	const struct seg_view *v = &b->v;

	for (uint32_t ci = 0; ci < v->lim.connections && b->n_orphans; ci++)
		if (b->conns[ci].state == SLOT_ORPHAN && ring_empty(b, ci))
			conn_retire(b, ci, true, false);
	for (uint32_t ci = 0; ci < v->lim.connections && b->n_retiring; ci++) {
		const struct reg_conn *rc = &b->conns[ci];

		if (rc->state == SLOT_CLOSING &&
		    quiesced(&v->pubs[rc->pub].active, rc->pub_snap, rc->pub_done) &&
		    quiesced(&v->subs[rc->sub].active, rc->sub_snap, rc->sub_done))
			conn_drain_free(b, ci);
	}
	for (uint32_t si = 0; si < v->lim.subscribers; si++)
		if (b->subs[si].state == SLOT_CLOSING && !port_has_conns(b, si, false))
			sub_finish(b, si);
	for (uint32_t pi = 0; pi < v->lim.publishers; pi++)
		if (b->pubs[pi].state == SLOT_CLOSING && !port_has_conns(b, pi, true)) {
			b->pubs[pi].state = SLOT_FREE;
			pub_mirror(b, pi);
		}
	return b->n_retiring ? TICK_FAST : b->n_orphans ? TICK_SLOW : TICK_OFF;
}

/* ---- events ------------------------------------------------------------- */

static void event_init_shared(struct takt_event_slot *e, const char *name)
{
	memcpy(e->name, name, TAKT_NAME_MAX);
	e->refs = 1;
	atomic_store_explicit(&e->enq, 0, memory_order_relaxed);
	atomic_store_explicit(&e->deq, 0, memory_order_relaxed);
	atomic_store_explicit(&e->lost, 0, memory_order_relaxed);
	for (uint64_t j = 0; j < TAKT_EVENT_QUEUE; j++)
		atomic_store_explicit(&e->cells[j].seq, j, memory_order_relaxed);
}

int reg_event_open(struct broker *b, struct client *cl, const char *name)
{
	int free_slot = -1, efd;

	if (!proto_name_ok(name, TAKT_NAME_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < b->v.lim.events; i++) {
		struct reg_event *e = &b->events[i];

		if (e->state == SLOT_FREE) {
			if (free_slot < 0)
				free_slot = (int)i;
		} else if (!strcmp(e->name, name)) {
			b->v.events[i].refs = ++e->refs;
			cl->event_refs[i]++;
			return (int)i;
		}
	}
	if (free_slot < 0)
		return -ENOSPC;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0)
		return -errno;
	b->events[free_slot] = (struct reg_event){.state = SLOT_ACTIVE, .refs = 1};
	memcpy(b->events[free_slot].name, name, TAKT_NAME_MAX);
	event_init_shared(&b->v.events[free_slot], name);
	publish_state(&b->v.events[free_slot].state, SLOT_ACTIVE);
	b->event_efd[free_slot] = efd;
	cl->event_refs[free_slot]++;
	return free_slot;
}

int reg_event_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct reg_event *e;

	if (index >= b->v.lim.events)
		return -EINVAL;
	if (!cl->event_refs[index])
		return -EPERM;
	e = &b->events[index];
	cl->event_refs[index]--;
	b->v.events[index].refs = --e->refs;
	if (e->refs == 0) {
		e->state = SLOT_FREE;
		publish_state(&b->v.events[index].state, SLOT_FREE);
		close(b->event_efd[index]);
		b->event_efd[index] = -1;
	}
	return 0;
}

/* ---- introspection ------------------------------------------------------ */

void reg_pool_stats(struct broker *b, struct msg_pools_reply *rep)
{
	const struct seg_view *v = &b->v;

	rep->r.index = v->lim.n_classes;
	for (uint32_t k = 0; k < v->lim.n_classes; k++) {
		struct proto_pool_stat *st = &rep->pools[k];
		const struct seg_pool *p = &v->pool[k];

		st->payload_size = p->payload_size;
		st->total = p->n;
		st->free = pool_count_free(v, k);
		st->in_flight = 0;
		for (uint32_t i = 0; i < p->n; i++)
			st->in_flight += chunk_refcount(v, p->first + i) != 0;
	}
}

#define COUNT_ACTIVE(arr, n)                                                                       \
	({                                                                                         \
		uint32_t c_ = 0;                                                                   \
		for (uint32_t i_ = 0; i_ < (n); i_++)                                              \
			c_ += (arr)[i_].state == SLOT_ACTIVE;                                      \
		c_;                                                                                \
	})

void reg_status(struct broker *b, struct msg_status_reply *rep)
{
	const struct takt_limits *l = &b->v.lim;

	rep->pid = getpid();
	rep->epoch = b->epoch;
	rep->limits = *l;
	rep->n_procs = 0;
	for (uint32_t i = 0; i < l->processes; i++)
		rep->n_procs += b->proc_state[i] == SLOT_ACTIVE;
	rep->n_topics = COUNT_ACTIVE(b->topics, l->topics);
	rep->n_pubs = COUNT_ACTIVE(b->pubs, l->publishers);
	rep->n_subs = COUNT_ACTIVE(b->subs, l->subscribers);
	rep->n_conns = COUNT_ACTIVE(b->conns, l->connections);
	rep->n_events = COUNT_ACTIVE(b->events, l->events);
	snprintf(rep->domain, sizeof(rep->domain), "%s", b->cfg.domain);
	snprintf(rep->version, sizeof(rep->version), "%s", TAKT_VERSION_STRING);
}
