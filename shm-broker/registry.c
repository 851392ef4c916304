/* registry.c - the broker's registry: processes, topics, ports, connections,
 * events, and reclaiming what a closed or dead client held.
 *
 * The broker is the only writer of registry words. It publishes changes to
 * a port's connection list by bumping conn_gen with release (W1); clients
 * read conn_gen with acquire before reading the list.
 *
 * Retiring a connection (Q0). The broker marks it CLOSING, removes it from
 * both ports' lists, bumps both conn_gens (seq_cst), then snapshots each
 * live end's `active` counter (seq_cst). A client increments `active`
 * (seq_cst RMW) before it reads conn_gen and again when it is done with the
 * rings, so: an even snapshot means every later operation sees the new list;
 * an odd one means an operation may still use the ring, and it has finished
 * once the counter moves. Only then is the ring drained and the slot reused.
 */
#include "broker.h"
#include "pool.h"
#include "ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void gen_bump(_Atomic uint32_t *gen)
{
	/* W1 / Q0: seq_cst so the snapshot of `active` that follows is ordered
	 * after it (pairs with the client's seq_cst increment of active). */
	atomic_fetch_add_explicit(gen, 1, memory_order_seq_cst);
}

int reg_init(struct broker *b)
{
	const struct seg_view *v = &b->v;

	for (uint32_t i = 0; i < v->lim.publishers; i++) {
		struct takt_pub_port *p = &v->pubs[i];

		for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++)
			atomic_store_explicit(&p->conns[j], TAKT_NONE, memory_order_relaxed);
		for (unsigned j = 0; j < TAKT_MAX_LOANS; j++)
			atomic_store_explicit(&p->loans[j], TAKT_NONE, memory_order_relaxed);
	}
	for (uint32_t i = 0; i < v->lim.subscribers; i++) {
		struct takt_sub_port *s = &v->subs[i];

		for (unsigned j = 0; j < TAKT_MAX_PUBS_PER_TOPIC; j++)
			atomic_store_explicit(&s->conns[j], TAKT_NONE, memory_order_relaxed);
		for (unsigned j = 0; j < TAKT_MAX_HELD; j++)
			atomic_store_explicit(&s->held[j], TAKT_NONE, memory_order_relaxed);
	}
	b->sub_efd = malloc(sizeof(int) * v->lim.subscribers);
	b->event_efd = malloc(sizeof(int) * v->lim.events);
	b->retire = calloc(v->lim.connections, sizeof(*b->retire));
	if (!b->sub_efd || !b->event_efd || !b->retire)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->lim.subscribers; i++)
		b->sub_efd[i] = -1;
	for (uint32_t i = 0; i < v->lim.events; i++)
		b->event_efd[i] = -1;
	return 0;
}

/* ---- processes ---------------------------------------------------------- */

int reg_proc_add(struct broker *b, struct client *cl, const char *name)
{
	for (uint32_t i = 0; i < b->v.lim.processes; i++) {
		struct takt_proc *p = &b->v.procs[i];

		if (atomic_load_explicit(&p->state, memory_order_relaxed) != SLOT_FREE)
			continue;
		p->pid = cl->pid;
		p->uid = cl->uid;
		p->gid = cl->gid;
		p->attached_ns = takt_now_ns();
		snprintf(p->name, sizeof(p->name), "%.*s", (int)sizeof(p->name) - 1, name);
		atomic_store_explicit(&p->state, SLOT_ACTIVE, memory_order_release);
		cl->proc = i;
		return (int)i;
	}
	return -EMFILE;
}

void reg_proc_remove(struct broker *b, struct client *cl)
{
	const struct seg_view *v = &b->v;

	if (cl->proc == TAKT_NONE)
		return;
	for (uint32_t i = 0; i < v->lim.publishers; i++)
		if (atomic_load_explicit(&v->pubs[i].state, memory_order_relaxed) == SLOT_ACTIVE &&
		    v->pubs[i].proc == cl->proc)
			reg_pub_close(b, cl, i);
	for (uint32_t i = 0; i < v->lim.subscribers; i++)
		if (atomic_load_explicit(&v->subs[i].state, memory_order_relaxed) == SLOT_ACTIVE &&
		    v->subs[i].proc == cl->proc)
			reg_sub_close(b, cl, i);
	for (uint32_t i = 0; i < v->lim.events; i++)
		while (cl->event_refs && cl->event_refs[i])
			reg_event_close(b, cl, i);
	atomic_store_explicit(&v->procs[cl->proc].state, SLOT_FREE, memory_order_release);
	cl->proc = TAKT_NONE;
}

/* ---- topics ------------------------------------------------------------- */

static int topic_find_or_add(struct broker *b, const char *name, const char *type)
{
	const struct seg_view *v = &b->v;
	int free_slot = -1;

	for (uint32_t i = 0; i < v->lim.topics; i++) {
		struct takt_topic *t = &v->topics[i];

		if (atomic_load_explicit(&t->state, memory_order_relaxed) == SLOT_FREE) {
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
	struct takt_topic *t = &v->topics[free_slot];

	memset(t, 0, sizeof(*t));
	memcpy(t->name, name, TAKT_NAME_MAX);
	memcpy(t->type_name, type, TAKT_NAME_MAX);
	t->pool_class = TAKT_NONE;
	atomic_store_explicit(&t->state, SLOT_ACTIVE, memory_order_release);
	return free_slot;
}

static void topic_put(struct broker *b, uint32_t ti)
{
	struct takt_topic *t = &b->v.topics[ti];

	if (t->n_pubs == 0 && t->n_subs == 0)
		atomic_store_explicit(&t->state, SLOT_FREE, memory_order_release);
}

static void list_del(uint32_t *list, uint32_t *n, uint32_t x)
{
	for (uint32_t i = 0; i < *n; i++)
		if (list[i] == x) {
			list[i] = list[--*n];
			return;
		}
}

/* ---- connections -------------------------------------------------------- */

static int slot_add(_Atomic uint32_t *list, unsigned cap, uint32_t x)
{
	for (unsigned i = 0; i < cap; i++)
		if (atomic_load_explicit(&list[i], memory_order_relaxed) == TAKT_NONE) {
			atomic_store_explicit(&list[i], x, memory_order_relaxed);
			return 0;
		}
	return -ENOSPC;
}

static void slot_del(_Atomic uint32_t *list, unsigned cap, uint32_t x)
{
	for (unsigned i = 0; i < cap; i++)
		if (atomic_load_explicit(&list[i], memory_order_relaxed) == x)
			atomic_store_explicit(&list[i], TAKT_NONE, memory_order_relaxed);
}

static int conn_create(struct broker *b, uint32_t pi, uint32_t si)
{
	const struct seg_view *v = &b->v;
	struct takt_sub_port *s = &v->subs[si];
	struct takt_pub_port *p = &v->pubs[pi];

	for (uint32_t ci = 0; ci < v->lim.connections; ci++) {
		struct takt_conn *c = &v->conns[ci];

		if (atomic_load_explicit(&c->state, memory_order_relaxed) != SLOT_FREE)
			continue;
		c->pub = pi;
		c->sub = si;
		c->mask = s->queue_depth - 1;
		c->overflow = s->overflow;
		atomic_fetch_add_explicit(&c->incarnation, 1, memory_order_relaxed);
		atomic_store_explicit(&c->head, 0, memory_order_relaxed);
		atomic_store_explicit(&c->tail, 0, memory_order_relaxed);
		atomic_store_explicit(&c->producer_waiting, 0, memory_order_relaxed);
		/* A stale pos from the slot's previous connection must never match. */
		for (uint32_t j = 0; j < s->queue_depth; j++)
			atomic_store_explicit(&seg_ring_slots(v, ci)[j].pos, 0, memory_order_relaxed);
		/* release: pairs with the clients' acquire of state (pub.c, sub.c). */
		atomic_store_explicit(&c->state, SLOT_ACTIVE, memory_order_release);
		slot_add(p->conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
		slot_add(s->conns, TAKT_MAX_PUBS_PER_TOPIC, ci);
		gen_bump(&p->conn_gen); /* W1 */
		gen_bump(&s->conn_gen);
		return 0;
	}
	fprintf(stderr, "takt-broker: connection table full ([limits] connections = %u)\n",
		v->lim.connections);
	return -ENOSPC;
}

static void conn_retire(struct broker *b, uint32_t ci, bool pub_done, bool sub_done)
{
	const struct seg_view *v = &b->v;
	struct takt_conn *c = &v->conns[ci];
	struct takt_pub_port *p = &v->pubs[c->pub];
	struct takt_sub_port *s = &v->subs[c->sub];
	struct retiring *r = &b->retire[ci];

	uint32_t st = atomic_load_explicit(&c->state, memory_order_relaxed);

	if (st == SLOT_CLOSING) {
		r->pub_done |= pub_done; /* the other end closes too: stop waiting for it */
		r->sub_done |= sub_done;
		return;
	}
	if (st == SLOT_ORPHAN) {
		pub_done = true; /* its publisher is gone already */
		b->n_orphans--;
	}
	/* B1: seq_cst pairs with ring_wait_room's seq_cst re-check of state. */
	atomic_store_explicit(&c->state, SLOT_CLOSING, memory_order_seq_cst);
	slot_del(p->conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
	slot_del(s->conns, TAKT_MAX_PUBS_PER_TOPIC, ci);
	gen_bump(&p->conn_gen); /* W1, Q0 */
	gen_bump(&s->conn_gen);
	r->pub_done = pub_done;
	r->sub_done = sub_done;
	/* Q0: seq_cst loads after the seq_cst gen bumps. */
	r->pub_snap = atomic_load_explicit(&p->active, memory_order_seq_cst);
	r->sub_snap = atomic_load_explicit(&s->active, memory_order_seq_cst);
	ring_wake_producer_closed(c); /* a publisher blocked on it gives up */
	b->n_retiring++;
}

/* An end closed or died: retirements already under way stop waiting for it
 * (a dead process may have left its `active` counter odd forever). */
static void conns_end_done(struct broker *b, uint32_t index, bool is_pub)
{
	const struct seg_view *v = &b->v;

	for (uint32_t ci = 0; ci < v->lim.connections; ci++) {
		struct takt_conn *c = &v->conns[ci];

		if (atomic_load_explicit(&c->state, memory_order_relaxed) != SLOT_CLOSING)
			continue;
		if (is_pub && c->pub == index)
			b->retire[ci].pub_done = true;
		else if (!is_pub && c->sub == index)
			b->retire[ci].sub_done = true;
	}
}

/* The publisher left: samples it already pushed stay takeable. The conn
 * leaves the publisher's list now and the subscriber's once its ring is
 * empty (reg_tick). */
static void conn_orphan(struct broker *b, uint32_t ci)
{
	const struct seg_view *v = &b->v;
	struct takt_conn *c = &v->conns[ci];

	if (atomic_load_explicit(&c->state, memory_order_relaxed) != SLOT_ACTIVE)
		return;
	atomic_store_explicit(&c->state, SLOT_ORPHAN, memory_order_seq_cst); /* B1 */
	slot_del(v->pubs[c->pub].conns, TAKT_MAX_SUBS_PER_TOPIC, ci);
	gen_bump(&v->pubs[c->pub].conn_gen); /* W1 */
	ring_wake_producer_closed(c);
	b->n_orphans++;
}

static bool ring_empty(const struct seg_view *v, uint32_t ci)
{
	const struct takt_conn *c = &v->conns[ci];
	uint64_t t = atomic_load_explicit(&c->tail, memory_order_acquire);

	/* R0: acquire pairs with the producer's release of pos. */
	return atomic_load_explicit(&seg_ring_slots(v, ci)[t & c->mask].pos, memory_order_acquire) != t + 1;
}

static bool quiesced(_Atomic uint64_t *active, uint64_t snap, bool done)
{
	return done || (snap & 1) == 0 || atomic_load_explicit(active, memory_order_seq_cst) != snap;
}

static void conn_drain_free(struct broker *b, uint32_t ci)
{
	const struct seg_view *v = &b->v;
	struct takt_conn *c = &v->conns[ci];
	struct takt_ring_slot *slots = seg_ring_slots(v, ci);
	/* Both ends quiesced (Q0): we are the only user of the ring now. Walk
	 * the filled slots from tail, at most one ring's worth. */
	uint64_t t = atomic_load_explicit(&c->tail, memory_order_acquire);

	for (uint64_t n = 0; n <= c->mask; n++, t++) {
		struct takt_ring_slot *sl = &slots[t & c->mask];
		uint32_t ch;

		/* R0: acquire pairs with the producer's release of pos. */
		if (atomic_load_explicit(&sl->pos, memory_order_acquire) != t + 1)
			break;
		ch = atomic_load_explicit(&sl->chunk, memory_order_relaxed);
		if (!seg_chunk_ok(v, ch))
			continue;
		chunk_unref(v, ch);
	}
	atomic_store_explicit(&c->state, SLOT_FREE, memory_order_release);
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

static bool port_free_slot(_Atomic uint32_t *state)
{
	return atomic_load_explicit(state, memory_order_relaxed) == SLOT_FREE;
}

static int names_ok(const char *topic, const char *type)
{
	return proto_name_ok(topic, TAKT_NAME_MAX) &&
	       (type[0] == 0 || proto_name_ok(type, TAKT_NAME_MAX));
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
	for (pi = 0; pi < v->lim.publishers && !port_free_slot(&v->pubs[pi].state); pi++)
		;
	if (pi == v->lim.publishers)
		return -ENOSPC;
	ti = topic_find_or_add(b, m->topic, m->type_name);
	if (ti < 0)
		return ti;
	struct takt_topic *t = &v->topics[ti];

	if (t->n_pubs >= v->lim.pubs_per_topic) {
		topic_put(b, (uint32_t)ti);
		return -ENOSPC;
	}
	struct takt_pub_port *p = &v->pubs[pi];

	p->topic = (uint32_t)ti;
	p->proc = cl->proc;
	p->pool_class = (uint32_t)k;
	p->history = m->history;
	for (unsigned j = 0; j < TAKT_MAX_HISTORY; j++)
		atomic_store_explicit(&p->hist[j], 0, memory_order_relaxed);
	atomic_store_explicit(&p->last_seq, 0, memory_order_relaxed);
	atomic_store_explicit(&p->state, SLOT_ACTIVE, memory_order_release);
	t->pubs[t->n_pubs++] = pi;
	if (t->pool_class == TAKT_NONE)
		t->pool_class = (uint32_t)k;
	for (uint32_t j = 0; j < t->n_subs; j++)
		conn_create(b, pi, t->subs[j]);
	*ret_class = (uint32_t)k;
	return (int)pi;
}

static void pub_release_chunks(struct broker *b, struct takt_pub_port *p)
{
	const struct seg_view *v = &b->v;

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
	const struct seg_view *v = &b->v;
	struct takt_pub_port *p;

	if (index >= v->lim.publishers)
		return -EINVAL;
	p = &v->pubs[index];
	if (atomic_load_explicit(&p->state, memory_order_relaxed) != SLOT_ACTIVE || p->proc != cl->proc)
		return -EPERM;
	for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++) {
		uint32_t ci = atomic_load_explicit(&p->conns[j], memory_order_relaxed);

		if (ci < v->lim.connections)
			conn_orphan(b, ci);
	}
	conns_end_done(b, index, true);
	/* The publisher is gone (closed, or its socket hung up): its loans and
	 * history hold references nobody else will drop. */
	pub_release_chunks(b, p);
	struct takt_topic *t = &v->topics[p->topic];

	list_del(t->pubs, &t->n_pubs, index);
	topic_put(b, p->topic);
	atomic_store_explicit(&p->state, SLOT_CLOSING, memory_order_release);
	reg_tick(b);
	return 0;
}

int reg_sub_open(struct broker *b, struct client *cl, const struct msg_sub_open *m)
{
	const struct seg_view *v = &b->v;
	uint32_t depth = m->queue_depth ? m->queue_depth : 16, si;
	int ti, efd;

	if (!names_ok(m->topic, m->type_name) || m->overflow > TAKT_OVERFLOW_REJECT ||
	    depth > v->lim.queue_depth_max || m->history > v->lim.history_max)
		return -EINVAL;
	while (depth & (depth - 1))
		depth += depth & -depth; /* round up to a power of two */
	for (si = 0; si < v->lim.subscribers && !port_free_slot(&v->subs[si].state); si++)
		;
	if (si == v->lim.subscribers)
		return -ENOSPC;
	ti = topic_find_or_add(b, m->topic, m->type_name);
	if (ti < 0)
		return ti;
	struct takt_topic *t = &v->topics[ti];

	if (t->n_subs >= v->lim.subs_per_topic) {
		topic_put(b, (uint32_t)ti);
		return -ENOSPC;
	}
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		topic_put(b, (uint32_t)ti);
		return -errno;
	}
	struct takt_sub_port *s = &v->subs[si];

	s->topic = (uint32_t)ti;
	s->proc = cl->proc;
	s->queue_depth = depth;
	s->overflow = m->overflow;
	s->history = m->history;
	atomic_store_explicit(&s->parked, 0, memory_order_relaxed);
	atomic_store_explicit(&s->dropped, 0, memory_order_relaxed);
	atomic_store_explicit(&s->state, SLOT_ACTIVE, memory_order_release);
	b->sub_efd[si] = efd;
	t->subs[t->n_subs++] = si;
	for (uint32_t j = 0; j < t->n_pubs; j++)
		conn_create(b, t->pubs[j], si);
	return (int)si;
}

int reg_sub_close(struct broker *b, struct client *cl, uint32_t index)
{
	const struct seg_view *v = &b->v;
	struct takt_sub_port *s;

	if (index >= v->lim.subscribers)
		return -EINVAL;
	s = &v->subs[index];
	if (atomic_load_explicit(&s->state, memory_order_relaxed) != SLOT_ACTIVE || s->proc != cl->proc)
		return -EPERM;
	atomic_store_explicit(&s->state, SLOT_CLOSING, memory_order_release);
	for (unsigned j = 0; j < TAKT_MAX_PUBS_PER_TOPIC; j++) {
		uint32_t ci = atomic_load_explicit(&s->conns[j], memory_order_relaxed);

		if (ci < v->lim.connections)
			conn_retire(b, ci, false, true);
	}
	conns_end_done(b, index, false);
	struct takt_topic *t = &v->topics[s->topic];

	list_del(t->subs, &t->n_subs, index);
	topic_put(b, s->topic);
	close(b->sub_efd[index]);
	b->sub_efd[index] = -1;
	reg_tick(b);
	return 0;
}

int reg_conn_fds(struct broker *b, struct client *cl, uint32_t pi, struct msg_conn_fds_reply *rep,
		 int *fds)
{
	const struct seg_view *v = &b->v;
	struct takt_pub_port *p;
	uint32_t n = 0;

	if (pi >= v->lim.publishers)
		return -EINVAL;
	p = &v->pubs[pi];
	if (atomic_load_explicit(&p->state, memory_order_relaxed) != SLOT_ACTIVE || p->proc != cl->proc)
		return -EPERM;
	for (unsigned j = 0; j < TAKT_MAX_SUBS_PER_TOPIC; j++) {
		uint32_t ci = atomic_load_explicit(&p->conns[j], memory_order_relaxed);

		if (ci >= v->lim.connections || b->sub_efd[v->conns[ci].sub] < 0)
			continue;
		rep->subs[n] = v->conns[ci].sub;
		fds[n++] = b->sub_efd[v->conns[ci].sub];
	}
	rep->n = n;
	return (int)n;
}

/* ---- retirement --------------------------------------------------------- */

static bool sub_has_conns(struct broker *b, uint32_t si)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++)
		if (atomic_load_explicit(&b->v.conns[ci].state, memory_order_relaxed) != SLOT_FREE &&
		    b->v.conns[ci].sub == si)
			return true;
	return false;
}

static bool pub_has_conns(struct broker *b, uint32_t pi)
{
	for (uint32_t ci = 0; ci < b->v.lim.connections; ci++)
		if (atomic_load_explicit(&b->v.conns[ci].state, memory_order_relaxed) != SLOT_FREE &&
		    b->v.conns[ci].pub == pi)
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
	atomic_store_explicit(&s->state, SLOT_FREE, memory_order_release);
}

int reg_tick(struct broker *b)
{
	const struct seg_view *v = &b->v;

	for (uint32_t ci = 0; ci < v->lim.connections && b->n_orphans; ci++)
		if (atomic_load_explicit(&v->conns[ci].state, memory_order_relaxed) == SLOT_ORPHAN &&
		    ring_empty(v, ci))
			conn_retire(b, ci, true, false);

	for (uint32_t ci = 0; ci < v->lim.connections && b->n_retiring; ci++) {
		struct takt_conn *c = &v->conns[ci];
		struct retiring *r = &b->retire[ci];

		if (atomic_load_explicit(&c->state, memory_order_relaxed) != SLOT_CLOSING)
			continue;
		if (quiesced(&v->pubs[c->pub].active, r->pub_snap, r->pub_done) &&
		    quiesced(&v->subs[c->sub].active, r->sub_snap, r->sub_done))
			conn_drain_free(b, ci);
	}
	for (uint32_t si = 0; si < v->lim.subscribers; si++)
		if (atomic_load_explicit(&v->subs[si].state, memory_order_relaxed) == SLOT_CLOSING &&
		    !sub_has_conns(b, si))
			sub_finish(b, si);
	for (uint32_t pi = 0; pi < v->lim.publishers; pi++)
		if (atomic_load_explicit(&v->pubs[pi].state, memory_order_relaxed) == SLOT_CLOSING &&
		    !pub_has_conns(b, pi))
			atomic_store_explicit(&v->pubs[pi].state, SLOT_FREE, memory_order_release);
	return b->n_retiring ? TICK_FAST : b->n_orphans ? TICK_SLOW : TICK_OFF;
}

/* ---- events ------------------------------------------------------------- */

int reg_event_open(struct broker *b, struct client *cl, const char *name)
{
	const struct seg_view *v = &b->v;
	int free_slot = -1;

	if (!proto_name_ok(name, TAKT_NAME_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < v->lim.events; i++) {
		struct takt_event_slot *e = &v->events[i];

		if (atomic_load_explicit(&e->state, memory_order_relaxed) == SLOT_FREE) {
			if (free_slot < 0)
				free_slot = (int)i;
		} else if (!strcmp(e->name, name)) {
			e->refs++;
			cl->event_refs[i]++;
			return (int)i;
		}
	}
	if (free_slot < 0)
		return -ENOSPC;
	struct takt_event_slot *e = &v->events[free_slot];
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	if (efd < 0)
		return -errno;
	memcpy(e->name, name, TAKT_NAME_MAX);
	e->refs = 1;
	atomic_store_explicit(&e->enq, 0, memory_order_relaxed);
	atomic_store_explicit(&e->deq, 0, memory_order_relaxed);
	atomic_store_explicit(&e->lost, 0, memory_order_relaxed);
	for (uint64_t j = 0; j < TAKT_EVENT_QUEUE; j++)
		atomic_store_explicit(&e->cells[j].seq, j, memory_order_relaxed);
	atomic_store_explicit(&e->state, SLOT_ACTIVE, memory_order_release);
	b->event_efd[free_slot] = efd;
	cl->event_refs[free_slot]++;
	return free_slot;
}

int reg_event_close(struct broker *b, struct client *cl, uint32_t index)
{
	struct takt_event_slot *e;

	if (index >= b->v.lim.events)
		return -EINVAL;
	if (!cl->event_refs[index])
		return -EPERM;
	e = &b->v.events[index];
	cl->event_refs[index]--;
	if (--e->refs == 0) {
		atomic_store_explicit(&e->state, SLOT_FREE, memory_order_release);
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

static uint32_t count_active(_Atomic uint32_t *state, size_t stride, uint32_t n)
{
	uint32_t c = 0;

	for (uint32_t i = 0; i < n; i++)
		c += atomic_load_explicit((_Atomic uint32_t *)((char *)state + i * stride),
					  memory_order_relaxed) == SLOT_ACTIVE;
	return c;
}

void reg_status(struct broker *b, struct msg_status_reply *rep)
{
	const struct seg_view *v = &b->v;

	rep->pid = getpid();
	rep->epoch = b->epoch;
	rep->limits = v->lim;
	rep->n_procs = count_active(&v->procs[0].state, sizeof(v->procs[0]), v->lim.processes);
	rep->n_topics = count_active(&v->topics[0].state, sizeof(v->topics[0]), v->lim.topics);
	rep->n_pubs = count_active(&v->pubs[0].state, sizeof(v->pubs[0]), v->lim.publishers);
	rep->n_subs = count_active(&v->subs[0].state, sizeof(v->subs[0]), v->lim.subscribers);
	rep->n_conns = count_active(&v->conns[0].state, sizeof(v->conns[0]), v->lim.connections);
	rep->n_events = count_active(&v->events[0].state, sizeof(v->events[0]), v->lim.events);
	snprintf(rep->domain, sizeof(rep->domain), "%s", b->cfg.domain);
	snprintf(rep->version, sizeof(rep->version), "%s", TAKT_VERSION_STRING);
}
