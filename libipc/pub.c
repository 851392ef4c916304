/* pub.c - publishers: loan, publish, discard; the publisher's own pool.
 *
 * Each publisher has its own pool segment (the broker created it for this
 * port; only this process maps it writable): its chunks, and every word it
 * writes for others (its Q0 counter and statistics, its words and sample
 * ring of each connection). It keeps who holds which chunk in private
 * memory (pool.h). Per connection it has a slot: the producer
 * side of the sample ring, the consumer side of the return ring, and a
 * bitmap of the chunks outstanding on that connection (pushed, not yet
 * returned). Publish:
 *   1. hand the loan's reference over to every connection (and history);
 *   2. push the chunk index into each ring, applying the subscriber's
 *      overflow policy when a ring is full, and mark it outstanding there;
 *   3. record it in history;
 *   4. fence (unless light, P1L below), then write the eventfd of each
 *      subscriber that parked.
 * Chunks come back through the return rings, drained when the free list is
 * empty; every returned index is checked against the bitmap, so a foreign,
 * out-of-range or double return costs the subscriber that sent it only.
 * When a connection goes (its subscriber closed or died), its bitmap names
 * exactly what the publisher gets back: queued, taken and held alike.
 * Nothing here asks the broker; the eventfds and new connections come from
 * the node's agent (G0, node.c).
 *
 * PS0, slot states: FREE -> FILLING (agent) -> READY -> ADOPTED (publishing
 * thread) -> FREE (publishing thread, after reclaiming its chunks). A slot
 * is prepared by whoever claims its connection in claim_tab first (PS1: a
 * CAS, so one of the agent and the publishing thread prepares it), and only
 * once the agent has installed the subscriber's segment and eventfd (G0,
 * node.c): the agent normally, right after, so a late joiner gets the
 * publisher's history at once even while it does not publish; the
 * publishing thread when it saw the connection first, or the agent found
 * no free slot. Preparing starts the publisher's region of the pool for
 * the connection afresh and marks it with the incarnation; the connection
 * is used only once the subscriber marked its own region too. READY is stored
 * with release and loaded with acquire: whoever prepared the slot (ring,
 * bitmap, history pushed) hands it over complete.
 *
 * P1L, light publishing: the P1 fence before the park loads is what a
 * publish costs most while its subscribers keep up (it waits for the
 * payload and slot stores, whose lines the subscribers just read). A
 * publisher that has seen no subscriber parked for LIGHT_AFTER publishes
 * in a row stores light = 1 in its live words and fences once; from then
 * on it loads the park words without a fence. A subscriber that parks
 * stores park (seq_cst), fences, and loads light of each publisher it
 * takes from (acquire): 1 -> it calls membarrier(GLOBAL_EXPEDITED), a
 * full barrier on every CPU running a registered process, before its
 * re-check; so either our push is visible to the re-check or our later
 * park load sees its park (the asymmetric fence of liburcu, as Q0 uses).
 * 0 -> we had not gone light when it looked (our fence after the store of
 * 1 orders our later park loads after its park store: store-buffer litmus
 * on light and park), or we went heavy again (light = 0, release, after
 * the pushes it must see). A publisher that sees a subscriber parked goes
 * heavy at once, so a subscriber that parks often costs one membarrier and
 * then fenced publishes; one that never parks costs none. A publisher goes
 * light only if its node is registered for membarrier and every subscriber
 * it serves said it issues one when it parks (takt_sub_live.membarrier);
 * a new connection makes it heavy until it has been calm again.
 */
#include "client.h"
#include "clock.h"
#include "fault.h"
#include "pool.h"
#include "probes.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BLOCK_TIMEOUT_DEFAULT_NS 100000000ull
#define RET_BATCH 64
#define LIGHT_AFTER 64 /* P1L: publishes without a subscriber seen parked before going light */

enum { PS_FREE = 0, PS_FILLING, PS_READY, PS_ADOPTED };

struct pub_slot {
	_Atomic uint32_t state; /* PS0 */
	/* Read by the agent looking for a prepared slot (pub_agent_wait) while
	 * a preparer may be rewriting them: atomics, checked against state. */
	_Atomic uint32_t conn;
	_Atomic uint32_t incarnation;
	uint32_t sub;
	uint32_t overflow;
	const _Atomic uint32_t *park; /* the subscriber's park word (its segment, read-only) */
	bool membarrier;               /* P1L: its subscriber fences for us when it parks */
	struct ring_prod ring;
	struct ret_cons ret;
	uint32_t woken;  /* P1: the subscriber's last park generation we woke */
	bool sub_gone;   /* its subscriber's process died (pidfd): never wait for it */
	uint64_t *out; /* bitmap over the pool: outstanding on this connection */
};

struct pub_loan {
	uint32_t chunk;
	uint32_t gen;
	void *ptr;
};

struct takt_pub {
	takt_node *node;
	int pool_fd;       /* its pool segment, read-write: for a restarted broker */
	char topic[TAKT_NAME_MAX]; /* for probes */
	struct takt_pub *next;
	struct takt_pub_port *port;
	_Atomic uint32_t *port_conns; /* its connection list in the registry (seg_pub_conns) */
	uint32_t index;
	uint64_t id;       /* unique in the domain, never reused (registry.c, I0) */
	uint64_t max_payload;
	uint32_t history;
	uint32_t loans_max;
	uint64_t seq;
	uint64_t block_timeout_ns;
	uint32_t conn_gen;
	uint32_t drain_at;  /* chunks out that make a loan drain the return rings */
	bool light;         /* P1L: publishing without the P1 fence (mirrors live->light) */
	bool light_ok;      /* P1L: every adopted connection's subscriber fences for us */
	uint32_t calm;      /* P1L: publishes in a row that saw no subscriber parked */
	struct stamp_clock clock; /* publish_ns (clock.h) */
	struct pub_pool pool;
	void *map;
	size_t map_size;
	unsigned n_slots;
	struct pub_slot *slots;
	unsigned n_conns;
	struct pub_slot **conns;  /* adopted, registry order (subs_per_topic entries) */
	unsigned char *pushed;    /* publish: whether each of conns[] got the sample */
	unsigned n_loans;
	struct pub_loan *loans;   /* loans_max entries; found by pointer: no division on publish */
	/* takt_pub_hold: publishes wait here, in order, until takt_pub_flush;
	 * they count against loans_max like loans */
	bool holding;
	unsigned n_held;
	struct pub_loan *held;    /* loans_max entries */
	/* History, read by the agent (PS1): generation << 32 | chunk, 0 empty.
	 * Entry (seq - 1) % history holds the sample of sequence seq. */
	_Atomic uint64_t *hist;   /* history entries */
	_Atomic uint64_t last_seq;
	/* A service client (service.c) follows each request's chunk: told when
	 * one comes back, released by its subscriber or reclaimed from a
	 * connection that left. NULL: nobody asks. */
	void (*back)(void *user, uint32_t chunk, bool released);
	void *back_user;
	/* and is woken when a connection leaves (pub_set_gone): by the agent,
	 * under ports_lock */
	void (*gone)(void *user);
	void *gone_user;
};

static inline bool bit_test(const uint64_t *b, uint32_t c)
{
	return b[c / 64] >> (c % 64) & 1;
}

static inline void bit_set(uint64_t *b, uint32_t c)
{
	b[c / 64] |= 1ull << (c % 64);
}

static inline void bit_clear(uint64_t *b, uint32_t c)
{
	b[c / 64] &= ~(1ull << (c % 64));
}

static size_t bitmap_words(const takt_pub *p)
{
	return ((size_t)p->pool.seg.n_max + 63) / 64;
}

static void pub_free(takt_pub *p)
{
	for (unsigned i = 0; p->slots && i < p->n_slots; i++)
		free(p->slots[i].out);
	free(p->slots);
	free(p->conns);
	free(p->pushed);
	free(p->loans);
	free(p->held);
	free(p->hist);
	pub_pool_destroy(&p->pool);
	if (p->map)
		munmap(p->map, p->map_size);
	if (p->pool_fd >= 0)
		close(p->pool_fd);
	free(p);
}

/* Maps the pool segment the broker sent with the PUB_OPEN reply. */
static int pub_map_pool(takt_pub *p, int fd)
{
	struct seg_pool seg;
	int r = seg_map_fd(fd, PROT_READ | PROT_WRITE, &p->map, &p->map_size);

	if (r < 0) {
		p->map = NULL;
		return r;
	}
	r = seg_pool_check(&p->node->v, p->port, p->map, p->map_size, &seg);
	if (r == 0)
		r = pub_pool_init(&p->pool, &seg);
	p->n_slots = p->node->v.lim.subs_per_topic + 8;
	p->slots = r == 0 ? calloc(p->n_slots, sizeof(*p->slots)) : NULL;
	if (r == 0 && !p->slots)
		r = -ENOMEM;
	for (unsigned i = 0; r == 0 && i < p->n_slots; i++)
		if (!(p->slots[i].out = calloc(bitmap_words(p), sizeof(uint64_t))))
			r = -ENOMEM;
	return r;
}

static void pub_stats(takt_pub *p);

/* Returns are drained when half the pool is out, or half the smallest
 * return ring could be waiting. */
static void pub_set_drain_at(takt_pub *p)
{
	uint32_t at = p->pool.n_have / 2;

	for (unsigned i = 0; i < p->n_conns; i++)
		if ((p->conns[i]->ret.mask + 1) / 2 < at)
			at = (p->conns[i]->ret.mask + 1) / 2;
	p->drain_at = at;
}

int takt_pub_open(takt_node *node, const struct takt_pub_opts *opts, takt_pub **out)
{
	return pub_open(node, opts, out, false, NULL);
}

int pub_open(takt_node *node, const struct takt_pub_opts *opts, takt_pub **out, bool service, const char *reply)
{
	struct msg_pub_open req = {0};
	struct msg_pub_open_reply rep;
	unsigned n_fds = 0;
	takt_pub *p;
	int fd = -1, r;

	if (!node || !opts || !out || node_copy_topic(req.topic, opts->topic, service) < 0)
		return -EINVAL;
	if ((opts->type_name && node_copy_name(req.type_name, opts->type_name) < 0) ||
	    (reply && node_copy_name(req.reply_type, reply) < 0))
		return -EINVAL;
	if (opts->history > node->v.lim.history_max)
		return -EINVAL;
	req.max_payload = opts->max_payload;
	req.history = opts->history;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	/* Sized by the domain's limits, once: nothing is allocated later. */
	p->loans = calloc(node->v.lim.loans_max, sizeof(*p->loans));
	p->held = calloc(node->v.lim.loans_max, sizeof(*p->held));
	p->conns = calloc(node->v.lim.subs_per_topic, sizeof(*p->conns));
	p->pushed = calloc(node->v.lim.subs_per_topic, 1);
	p->hist = opts->history ? calloc(opts->history, sizeof(*p->hist)) : NULL;
	if (!p->loans || !p->held || !p->conns || !p->pushed || (opts->history && !p->hist)) {
		pub_free(p);
		return -ENOMEM;
	}
	p->pool_fd = -1;
	r = node_call(node, MSG_PUB_OPEN, &req, sizeof(req), &rep, sizeof(rep), &fd, 1, &n_fds);
	if (r == 0 && (rep.r.index >= node->v.lim.publishers || rep.id == 0 || n_fds != 1))
		r = -EPROTO;
	if (r < 0) {
		if (n_fds)
			close(fd);
		pub_free(p);
		return r;
	}
	p->node = node;
	memcpy(p->topic, req.topic, TAKT_NAME_MAX);
	p->index = rep.r.index;
	p->id = rep.id;
	p->port = &node->v.pubs[p->index];
	p->port_conns = seg_pub_conns(&node->v, p->index);
	p->max_payload = opts->max_payload;
	p->history = opts->history;
	p->loans_max = node->v.lim.loans_max;
	p->block_timeout_ns = opts->block_timeout_ns ? opts->block_timeout_ns : BLOCK_TIMEOUT_DEFAULT_NS;
	p->conn_gen = UINT32_MAX; /* forces the first refresh */
	stamp_clock_init(&p->clock);
	r = pub_map_pool(p, fd);
	p->pool.pinned = p->history > 0; /* C0: only history is pinned by the agent */
	p->pool_fd = fd; /* kept: handed back to a restarted broker (node.c) */
	if (r < 0) {
		node_close_index(node, MSG_PUB_CLOSE, p->index);
		pub_free(p);
		return r;
	}
	/* acquire: pairs with the broker's release of n_chunks. */
	pub_pool_grow(&p->pool, atomic_load_explicit(&p->port->n_chunks, memory_order_acquire));
	pub_set_drain_at(p);
	pub_stats(p);
	/* On the list before the broker pushes our connections (its agent
	 * prepares them), which it does once we told it the pool is mapped:
	 * it seals the pool against any new writable mapping first. */
	NODE_LIST_ADD_LOCKED(node, node->pubs, p);
	r = node_call(node, MSG_PUB_CONNECT, &(struct msg_index){.index = p->index}, sizeof(struct msg_index),
		      &(struct proto_reply){0}, sizeof(struct proto_reply), NULL, 0, NULL);
	if (r < 0) {
		node_close_index(node, MSG_PUB_CLOSE, p->index);
		NODE_LIST_DEL_LOCKED(node, node->pubs, takt_pub, p);
		pub_free(p);
		return r;
	}
	*out = p;
	return 0;
}

struct node_retired_fd *pub_port_snapshot(takt_node *n)
{
	struct node_retired_fd *rf;
	unsigned k = 0;

	pthread_mutex_lock(&n->ports_lock);
	for (const takt_pub *p = n->pubs; p; p = p->next)
		k++;
	rf = malloc(sizeof(*rf) + k * sizeof(rf->w[0])); /* every port, however many */
	if (rf) {
		k = 0;
		for (const takt_pub *p = n->pubs; p; p = p->next, k++) {
			rf->w[k].pub = p->index;
			/* G1/Q0: seq_cst pairs with q0_enter/q0_exit of the port. */
			rf->w[k].snap = atomic_load_explicit(&p->pool.seg.live->active, memory_order_seq_cst);
		}
		rf->n = k;
	}
	pthread_mutex_unlock(&n->ports_lock);
	return rf;
}

bool pub_port_moved(takt_node *n, uint32_t idx, uint64_t snap)
{
	bool moved = true; /* closed: not publishing any more */

	pthread_mutex_lock(&n->ports_lock);
	for (const takt_pub *p = n->pubs; p; p = p->next)
		if (p->index == idx) /* G1/Q0: seq_cst as above */
			moved = !(snap & 1) ||
				atomic_load_explicit(&p->pool.seg.live->active, memory_order_seq_cst) != snap;
	pthread_mutex_unlock(&n->ports_lock);
	return moved;
}

void takt_pub_close(takt_pub *pub)
{
	if (!pub)
		return;
	/* The broker retires the connections; subscribers keep taking what we
	 * sent from their own mappings of the pool. */
	node_close_index(pub->node, MSG_PUB_CLOSE, pub->index);
	NODE_LIST_DEL_LOCKED(pub->node, pub->node->pubs, takt_pub, pub);
	pub_free(pub);
}

uint64_t takt_pub_id(const takt_pub *pub)
{
	return pub ? pub->id : 0;
}

int takt_pub_set_origin(takt_pub *pub, uint32_t origin)
{
	if (!pub)
		return -EINVAL;
	/* relaxed: a tag subscribers read at their takes (sub.c); a take
	 * racing the change sees either value */
	atomic_store_explicit(&((struct takt_pool_header *)pub->pool.seg.base)->origin, origin,
			      memory_order_relaxed);
	return 0;
}

/* ---- statistics ----------------------------------------------------------- */

static void pub_stats(takt_pub *p)
{
	struct takt_pub_live *l = p->pool.seg.live;

	/* relaxed: statistics only this publisher writes (takt pools). */
	atomic_store_explicit(&l->stat_free, p->pool.n_free, memory_order_relaxed);
	atomic_store_explicit(&l->stat_loans, p->n_loans + p->n_held, memory_order_relaxed);
	atomic_store_explicit(&l->stat_history, (uint32_t)(p->seq < p->history ? p->seq : p->history),
			      memory_order_relaxed);
}

static void pub_bad_return(takt_pub *p)
{
	struct takt_pub_live *l = p->pool.seg.live;

	/* relaxed: a statistic with one writer. */
	atomic_store_explicit(&l->stat_bad_returns, atomic_load_explicit(&l->stat_bad_returns, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

/* ---- connections ------------------------------------------------------------ */

/* Connection ci as the registry describes it, if it is ours and sane. */
static struct takt_conn *pub_conn_check(takt_pub *p, uint32_t ci, uint32_t inc)
{
	const struct seg_view *v = &p->node->v;
	struct takt_conn *c;

	if (ci >= v->lim.connections)
		return NULL;
	c = &v->conns[ci];
	/* acquire: pairs with the broker's release of state after filling the conn. */
	if (atomic_load_explicit(&c->state, memory_order_acquire) != SLOT_ACTIVE || c->pub != p->index ||
	    atomic_load_explicit(&c->incarnation, memory_order_relaxed) != inc ||
	    c->sub >= v->lim.subscribers || c->mask >= v->lim.queue_depth_max || (c->mask & (c->mask + 1)) ||
	    c->depth == 0 || c->depth - 1 > c->mask || c->overflow > TAKT_OVERFLOW_REJECT ||
	    c->ret_mask + 1 != layout_conn_ret_slots(&v->lim, c->depth) || c->pub_slot >= p->pool.seg.n_slots ||
	    c->sub_slot >= v->lim.pubs_per_topic)
		return NULL;
	return c;
}

static struct pub_slot *pub_slot_of(takt_pub *p, uint32_t ci);

/* Hands the newest history samples (as many as the subscriber asked for,
 * at most its depth) to a fresh ring, oldest first. Each is pinned first
 * (chunk_pin: only if it is still that sample), so the agent never holds a
 * chunk the publishing thread could reuse. */
static unsigned pub_fill_history(takt_pub *p, struct pub_slot *s, uint32_t want)
{
	unsigned pushed = 0;
	/* H1: acquire pairs with the release of last_seq in pub_history_put. */
	uint64_t last = atomic_load_explicit(&p->last_seq, memory_order_acquire), lo, prev = 0;

	if (want > p->history)
		want = p->history;
	if (want > s->ring.depth)
		want = s->ring.depth;
	if (!want || !last)
		return 0;
	lo = last >= want ? last - want + 1 : 1;
	for (uint64_t seq = lo; seq <= last; seq++) {
		/* H0: acquire pairs with the release exchange in pub_history_put. */
		uint64_t w = atomic_load_explicit(&p->hist[(seq - 1) % p->history], memory_order_acquire);
		uint32_t c = (uint32_t)w;
		const struct chunk_info *h;
		struct ring_entry e;

		if (!w || c >= p->pool.seg.n_max || !chunk_pin(&p->pool, c, (uint32_t)(w >> 32)))
			continue;
		TAKT_FAULT("history_pinned");
		h = &p->pool.info[c]; /* C1: after the pin's acquire */
		e = (struct ring_entry){.chunk = c, .size = h->size, .seq = h->seq, .publish_ns = h->publish_ns};
		bit_set(s->out, c); /* pinned for this connection either way */
		if (e.seq <= prev || ring_push_spsc(&s->ring, &e) < 0)
			break; /* cannot happen: a fresh ring, newer samples only */
		prev = e.seq;
		pushed++;
		if (e.seq != seq)
			break; /* a newer sample took the entry: it was the last */
	}
	return pushed;
}

/* PS1: claims connection ci for preparation and prepares it in a free slot.
 * 0, -EALREADY (someone else has it), -ENOSPC (no free slot), -EBADMSG. */
static int pub_prepare(takt_pub *p, uint32_t ci, uint32_t inc, bool agent)
{
	const struct seg_view *v = &p->node->v;
	struct takt_conn *c = pub_conn_check(p, ci, inc);
	_Atomic uint32_t *claim = &p->node->claim_tab[ci];
	struct node_submap sm;
	struct takt_conn_pub *pw;
	struct takt_ring_slot *slots;
	uint32_t w, woken = 0;
	unsigned pushed;
	struct pub_slot *s = NULL;

	if (!c)
		return -EBADMSG;
	/* G0: the subscriber's segment comes with the push; until the agent
	 * has it the connection waits (EAGAIN: looked at again later). */
	if (!node_conn_submap(p->node, ci, inc, &sm))
		return -EAGAIN;
	if (c->sub_slot >= sm.ss.n_slots || (uint64_t)(c->ret_mask + 1) * sizeof(uint32_t) > sm.ss.ret_region)
		return -EBADMSG;
	/* PS1: acquire/CAS: one preparer per connection incarnation. */
	w = atomic_load_explicit(claim, memory_order_acquire);
	if (w == inc + 1 || !atomic_compare_exchange_strong_explicit(claim, &w, inc + 1, memory_order_acq_rel,
								      memory_order_acquire))
		return -EALREADY;
	for (unsigned i = 0; i < p->n_slots && !s; i++) {
		uint32_t st = PS_FREE;

		/* PS0: acquire pairs with the publishing thread's release of FREE. */
		if (atomic_load_explicit(&p->slots[i].state, memory_order_acquire) != PS_FREE)
			continue;
		TAKT_FAULT("pub_prepare_slot");
		/* PS0: the agent and the publishing thread may both be preparing
		 * (different connections): the slot goes to one of them. */
		if (atomic_compare_exchange_strong_explicit(&p->slots[i].state, &st, PS_FILLING,
							    memory_order_acquire, memory_order_relaxed))
			s = &p->slots[i];
	}
	if (!s) {
		atomic_store_explicit(claim, w, memory_order_release); /* let the other one try */
		return -ENOSPC;
	}
	TAKT_FAULT("pub_prepare_checked");
	/* published by PS0's release; release too (G1R): an agent that reads
	 * the new pair in pub_conn_held (acquire) also sees that slot's FREE
	 * before it, so the reclaim's last reads of the old segment come
	 * before its unmap */
	atomic_store_explicit(&s->conn, ci, memory_order_release);
	atomic_store_explicit(&s->incarnation, inc, memory_order_release);
	s->sub = c->sub;
	s->overflow = c->overflow;
	s->sub_gone = false;
	s->park = &sm.ss.live->park;
	/* relaxed: written once, before the broker pushed us the connection. */
	s->membarrier = atomic_load_explicit(&sm.ss.live->membarrier, memory_order_relaxed) == 1;
	memset(s->out, 0, bitmap_words(p) * sizeof(uint64_t));
	/* Our region of the pool for this connection, left by whichever
	 * connection had it before (the broker reuses it only once both of
	 * its ends were quiescent, Q0): start it afresh, then mark it as this
	 * incarnation's (release: the subscriber uses the ring only after it
	 * acquires the mark, sub.c). relaxed: the mark orders them. */
	pw = seg_pool_conn(&p->pool.seg, c->pub_slot);
	slots = seg_pool_ring(&p->pool.seg, c->pub_slot);
	atomic_store_explicit(&pw->head, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->ret_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->floor, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->dropped, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->waiting, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->wake_at, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->wakes, 0, memory_order_relaxed);
	for (uint32_t i = 0; i <= c->mask; i++) /* a stale pos must never match (R0) */
		atomic_store_explicit(&slots[i].pos, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->mark, takt_conn_mark(ci, inc), memory_order_release);
	ring_prod_init(&s->ring, c, pw, seg_subseg_conn(&sm.ss, c->sub_slot), slots, c->mask, c->depth);
	s->ring.fence_cons = s->membarrier; /* B0L: it blocks-takes without a fence */
	ret_cons_init(&s->ret, pw, seg_subseg_conn(&sm.ss, c->sub_slot), seg_subseg_rets(&sm.ss, c->sub_slot),
		      c->ret_mask);
	s->woken = 0; /* generations are odd: 0 was never woken */
	/* relaxed: the registry's history request, bounded by the ring. */
	pushed = pub_fill_history(p, s, v->subs[c->sub].history);
	/* PS0: release hands the prepared slot to the publishing thread (and
	 * tells an agent waiting for it, pub_agent_wait). */
	atomic_store_explicit(&s->state, agent ? PS_READY : PS_ADOPTED, memory_order_release);
	if (pushed) {
		/* P1, as publish does: history went into the ring of a subscriber
		 * that may be parked. (The agent counts with its own woken: the
		 * slot is the publishing thread's now.) */
		atomic_thread_fence(memory_order_seq_cst);
		conn_wake(pw, s->park, agent ? &woken : &s->woken, node_conn_efd(p->node, ci, inc));
	}
	return 0;
}

/* A0/PS1: the publishing thread claimed connection ci before the agent
 * could: wait (bounded) until it has prepared it, so the open is confirmed
 * only with the history in the ring. Called without ports_lock. */
void pub_agent_wait(takt_node *n, const struct msg_push_conn *m)
{
	for (int i = 0; i < 2000; i++) { /* up to 1 s */
		bool done = true;

		pthread_mutex_lock(&n->ports_lock);
		for (takt_pub *p = n->pubs; p; p = p->next) {
			if (p->index != m->pub)
				continue;
			/* PS1: the claim is taken back if no slot was free. */
			done = pub_slot_of(p, m->conn) != NULL ||
			       atomic_load_explicit(&n->claim_tab[m->conn], memory_order_acquire) != m->incarnation + 1;
		}
		pthread_mutex_unlock(&n->ports_lock);
		if (done)
			return;
		usleep(500);
	}
}

unsigned pub_handbacks(takt_node *n, struct port_handback *out, unsigned max)
{
	unsigned k = 0;

	for (takt_pub *p = n->pubs; p && k < max; p = p->next)
		out[k++] = (struct port_handback){.index = p->index, .id = p->id,
						  .fd = {fcntl(p->pool_fd, F_DUPFD_CLOEXEC, 0), -1}};
	return k;
}

int pub_agent_connect(takt_node *n, const struct msg_push_conn *m)
{
	for (takt_pub *p = n->pubs; p; p = p->next)
		if (p->index == m->pub)
			return pub_prepare(p, m->conn, m->incarnation, true);
	return -ENOENT;
}

static void pub_drain_slot(takt_pub *p, struct pub_slot *s);

/* A connection left: what its subscriber released before it left comes
 * back released (its return ring: the agent keeps the subscriber's
 * segment mapped until this slot is FREE, G1R, node.c), everything else
 * still outstanding on it reclaimed. */
static void pub_reclaim(takt_pub *p, struct pub_slot *s)
{
	size_t words = bitmap_words(p);

	/* Only a ring the subscriber started for this incarnation (its mark):
	 * an ADOPTED slot may still wait for it (pub_refresh), and the region
	 * then holds an earlier connection's head and returns. acquire: pairs
	 * with the subscriber's release of its mark (sub.c); relaxed: only this
	 * thread stores ADOPTED, conn and incarnation are this slot's own. */
	if (atomic_load_explicit(&s->state, memory_order_relaxed) == PS_ADOPTED &&
	    atomic_load_explicit(&s->ring.sw->mark, memory_order_acquire) ==
		    takt_conn_mark(atomic_load_explicit(&s->conn, memory_order_relaxed),
				   atomic_load_explicit(&s->incarnation, memory_order_relaxed))) {
		/* Our region of the pool may serve a new connection already
		 * (the broker reuses it once both ends were quiescent, Q0): the
		 * tail is no longer mirrored there. */
		s->ret.pw = NULL;
		pub_drain_slot(p, s);
	}
	for (size_t w = 0; w < words; w++)
		while (s->out[w]) {
			uint32_t c = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(s->out[w]));

			s->out[w] &= s->out[w] - 1;
			if (p->back)
				p->back(p->back_user, c, false);
			chunk_unref(&p->pool, c);
		}
	/* PS0: release pairs with pub_prepare's acquire of FREE; G1R: and
	 * with pub_conn_held's, after which the agent unmaps the segment. */
	atomic_store_explicit(&s->state, PS_FREE, memory_order_release);
}

bool pub_conn_held(takt_node *n, uint32_t ci, uint32_t inc)
{
	bool held = false;

	pthread_mutex_lock(&n->ports_lock);
	for (const takt_pub *p = n->pubs; p && !held; p = p->next)
		for (unsigned i = 0; i < p->n_slots && !held; i++) {
			const struct pub_slot *s = &p->slots[i];

			/* G1R: acquire pairs with pub_reclaim's release of FREE,
			 * and with pub_prepare's release of a new pair (after
			 * that FREE); a slot being prepared anew may still show
			 * the old pair, which keeps the mapping one wake-up
			 * longer, never less (the agent asks only once quiet, G1:
			 * no publish can start serving this incarnation any
			 * more). */
			held = atomic_load_explicit(&s->state, memory_order_acquire) != PS_FREE &&
			       atomic_load_explicit(&s->conn, memory_order_acquire) == ci &&
			       atomic_load_explicit(&s->incarnation, memory_order_acquire) == inc;
		}
	pthread_mutex_unlock(&n->ports_lock);
	return held;
}

static struct pub_slot *pub_slot_of(takt_pub *p, uint32_t ci)
{
	const struct seg_view *v = &p->node->v;

	for (unsigned i = 0; i < p->n_slots; i++) {
		struct pub_slot *s = &p->slots[i];
		/* PS0: acquire pairs with the preparer's release. */
		uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire);

		/* relaxed: ordered by the acquire of state; state is read again
		 * so a slot being prepared anew meanwhile is not taken for it. */
		if ((st == PS_READY || st == PS_ADOPTED) &&
		    conn_same(v, atomic_load_explicit(&s->conn, memory_order_relaxed),
			      atomic_load_explicit(&s->incarnation, memory_order_relaxed), ci) &&
		    atomic_load_explicit(&s->state, memory_order_acquire) == st)
			return s;
	}
	return NULL;
}

static bool pub_listed(takt_pub *p, struct pub_slot *s)
{
	const struct seg_view *v = &p->node->v;
	uint32_t sc = atomic_load_explicit(&s->conn, memory_order_relaxed);

	/* relaxed: the list and the connection's state were acquired by the
	 * seq_cst load of conn_gen (W1) that sent us here. */
	for (uint32_t i = 0; i < v->lim.subs_per_topic; i++)
		if (atomic_load_explicit(&p->port_conns[i], memory_order_relaxed) == sc)
			return conn_same(v, sc, atomic_load_explicit(&s->incarnation, memory_order_relaxed), sc) &&
			       atomic_load_explicit(&v->conns[sc].state, memory_order_relaxed) == SLOT_ACTIVE;
	return false;
}

/* P1L: back to fenced publishes, from the next one on. */
static void pub_go_heavy(takt_pub *p)
{
	p->calm = 0;
	if (!p->light)
		return;
	p->light = false;
	/* P1L: release: a subscriber that acquires 0 here sees the pushes of
	 * our light publishes; the publishes after it fence again (P1). */
	atomic_store_explicit(&p->pool.seg.live->light, 0, memory_order_release);
}

/* W1: the broker changed our connections or reserved more chunks. Reclaim
 * slots of connections that left, adopt the prepared ones; a listed
 * connection nobody prepared yet is prepared here or retried next time. */
static void pub_refresh(takt_pub *p, uint32_t gen)
{
	const struct seg_view *v = &p->node->v;
	bool pending = false;

	/* acquire: pairs with the broker's release of n_chunks (after fallocate). */
	pub_pool_grow(&p->pool, atomic_load_explicit(&p->port->n_chunks, memory_order_acquire));
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct pub_slot *s = &p->slots[i];
		uint32_t st = atomic_load_explicit(&s->state, memory_order_acquire); /* PS0 */

		if ((st == PS_READY || st == PS_ADOPTED) && !pub_listed(p, s))
			pub_reclaim(p, s);
	}
	p->n_conns = 0;
	for (uint32_t i = 0; i < v->lim.subs_per_topic; i++) {
		/* relaxed: the list was acquired by the seq_cst load of conn_gen
		 * (W1) that brought us here; ci is only compared or bounds-checked. */
		uint32_t ci = atomic_load_explicit(&p->port_conns[i], memory_order_relaxed);
		struct pub_slot *s;

		if (ci == TAKT_NONE || ci >= v->lim.connections)
			continue;
		s = pub_slot_of(p, ci);
		/* relaxed: ordered by W1 as above; pub_prepare checks it again. */
		if (!s && pub_prepare(p, ci, atomic_load_explicit(&v->conns[ci].incarnation, memory_order_relaxed),
				      false) == 0)
			s = pub_slot_of(p, ci);
		/* The subscriber starts its region of the connection afresh
		 * too; its tail and returns count only once it marked it as this
		 * incarnation's (acquire: pairs with its release, sub.c). */
		if (!s || atomic_load_explicit(&s->ring.sw->mark, memory_order_acquire) !=
				  takt_conn_mark(ci, atomic_load_explicit(&s->incarnation, memory_order_relaxed))) {
			pending = true; /* being prepared, not sane, or its subscriber not there yet */
			continue;
		}
		/* relaxed: READY -> ADOPTED publishes nothing; only this thread
		 * acts on the difference (the agent looks for FREE). */
		atomic_store_explicit(&s->state, PS_ADOPTED, memory_order_relaxed);
		p->conns[p->n_conns++] = s;
	}
	p->conn_gen = pending ? gen - 1 : gen;
	/* P1L: light only while every subscriber fences for us; and a
	 * changed set of connections is served fenced until it is calm. */
	p->light_ok = p->node->q0_light;
	for (unsigned i = 0; i < p->n_conns; i++)
		p->light_ok &= p->conns[i]->membarrier;
	pub_go_heavy(p);
	pub_set_drain_at(p);
	pub_stats(p);
}

/* Q0/W1: called inside the Q0 bracket. */
static void pub_check_conns(takt_pub *p)
{
	/* W1/Q0: seq_cst, so this load is ordered after our seq_cst increment
	 * of active in the single total order the broker's grace check relies
	 * on (an acquire load is not), or after our plain store of it when the
	 * broker fences for us (q0_enter); it also acquires the rewritten conns[]. */
	uint32_t gen = atomic_load_explicit(&p->port->conn_gen, memory_order_seq_cst);

	if (gen != p->conn_gen)
		pub_refresh(p, gen);
}

/* Returned chunks of one connection: each must be outstanding on it. */
static void pub_drain_slot(takt_pub *p, struct pub_slot *s)
{
	uint32_t got[RET_BATCH];
	unsigned n;
	bool bad = false;

	while ((n = ret_pop(&s->ret, got, RET_BATCH, &bad)) > 0) {
		for (unsigned k = 0; k < n; k++) {
			uint32_t c = got[k];

			if (c >= p->pool.n_have || !bit_test(s->out, c)) {
				pub_bad_return(p); /* foreign, out of range or twice */
				continue;
			}
			bit_clear(s->out, c);
			if (p->back)
				p->back(p->back_user, c, true);
			chunk_unref(&p->pool, c);
		}
	}
	if (bad)
		pub_bad_return(p);
}

static void pub_drain_returns(takt_pub *p)
{
	for (unsigned i = 0; i < p->n_conns; i++)
		pub_drain_slot(p, p->conns[i]);
	pub_stats(p);
}

/* ---- loans ---------------------------------------------------------------------- */

int takt_pub_loan(takt_pub *pub, size_t size, void **payload)
{
	uint32_t c;
	int r = 0;

	if (!pub || !payload)
		return -EINVAL;
	if (size > pub->max_payload)
		return -EMSGSIZE;
	if (pub->n_loans + pub->n_held >= pub->loans_max)
		return -ENOBUFS;
	/* Returns are taken in batches: the subscribers' return lines are read
	 * when half the pool is out, or half a return ring could be waiting
	 * (a connection's pending returns are at most what is out), so no
	 * return ring ever fills while we loan. Otherwise a loan touches only
	 * our private pool: no Q0 bracket (its stores would queue behind the
	 * previous sample's, docs/performance.md). An empty pool looks for
	 * chunks the broker reserved since (pub_refresh). */
	if (pub->pool.n_have - pub->pool.n_free >= pub->drain_at || !pub->pool.n_free) {
		q0_enter(&pub->pool.seg.live->active, pub->node->q0_light); /* Q0 */
		pub_check_conns(pub);
		if (pub->pool.n_have - pub->pool.n_free >= pub->drain_at)
			pub_drain_returns(pub);
		q0_exit(&pub->pool.seg.live->active); /* Q0 */
	}
	c = pub_pool_pop(&pub->pool);
	TAKT_FAULT("loan_popped");
	if (c == TAKT_NONE) {
		r = -ENOBUFS;
	} else {
		pub->loans[pub->n_loans++] = (struct pub_loan){
			.chunk = c, .gen = chunk_loan_init(&pub->pool, c), .ptr = seg_chunk_payload(&pub->pool.seg, c)};
		*payload = pub->loans[pub->n_loans - 1].ptr;
		/* The next loan's first line, for writing: its owner is likely
		 * still the subscriber that read it, and a store that waits for
		 * that line holds up every store after it (x86 commits them in
		 * order). A hint: it neither faults nor waits. */
		if (pub->pool.n_free)
			__builtin_prefetch(seg_chunk_payload(&pub->pool.seg, pub->pool.free[pub->pool.n_free - 1]), 1);
		pub->pool.info[c].size = (uint32_t)size;
	}
	if (r < 0)
		pub_stats(pub); /* (statistics follow drains, refreshes and discards) */
	return r;
}

static int pub_find_loan(const takt_pub *pub, const void *payload, uint32_t *ret_chunk)
{
	for (unsigned i = 0; i < pub->n_loans; i++)
		if (pub->loans[i].ptr == payload) {
			*ret_chunk = pub->loans[i].chunk;
			return (int)i;
		}
	return -EINVAL;
}

int pub_loan_chunk(const takt_pub *pub, const void *payload)
{
	uint32_t c;

	return pub_find_loan(pub, payload, &c) < 0 ? -EINVAL : (int)c;
}

uint64_t pub_seq(const takt_pub *pub)
{
	return pub->seq;
}

uint32_t pub_chunks_max(const takt_pub *pub)
{
	return pub->pool.seg.n_max;
}

void pub_set_back(takt_pub *pub, void (*back)(void *user, uint32_t chunk, bool released), void *user)
{
	pub->back = back;
	pub->back_user = user;
}

void pub_set_gone(takt_pub *pub, void (*gone)(void *user), void *user)
{
	pthread_mutex_lock(&pub->node->ports_lock);
	pub->gone = gone;
	pub->gone_user = user;
	pthread_mutex_unlock(&pub->node->ports_lock);
}

void pub_agent_gone(takt_node *n, uint32_t index)
{
	for (takt_pub *p = n->pubs; p; p = p->next)
		if (p->index == index && p->gone)
			p->gone(p->gone_user);
}

unsigned pub_poll(takt_pub *p, uint32_t *depth)
{
	unsigned n;

	q0_enter(&p->pool.seg.live->active, p->node->q0_light); /* Q0 */
	pub_check_conns(p);
	pub_drain_returns(p);
	n = p->n_conns;
	*depth = UINT32_MAX;
	for (unsigned i = 0; i < n; i++) {
		/* relaxed: written by the broker before it listed the connection
		 * (acquired by the seq_cst load of conn_gen in pub_check_conns) */
		uint32_t d = p->node->v.conns[atomic_load_explicit(&p->conns[i]->conn, memory_order_relaxed)].depth;

		*depth = d < *depth ? d : *depth;
	}
	q0_exit(&p->pool.seg.live->active); /* Q0 */
	return n;
}

unsigned pub_connections(const takt_pub *p)
{
	return p->n_conns;
}

unsigned pub_topic_subscribers(const takt_pub *p)
{
	const struct seg_view *v = &p->node->v;
	uint32_t ti = p->port->topic;

	/* the broker's count in the registry, a snapshot, read as
	 * takt_node_topics reads it; the topic lives while we are open */
	return ti < v->lim.topics ? v->topics[ti].n_subs : 0;
}

unsigned pub_loans(const takt_pub *p)
{
	return p->n_loans + p->n_held;
}

/* Removes loan i from the list (the order of loans does not matter). */
static void pub_end_loan(takt_pub *pub, unsigned i)
{
	/* Only when another loan moves: the copy's wide load, right after
	 * the caller's payload stores, would wait for them to reach the
	 * cache when it cannot forward from the loan's stores. */
	if (i != --pub->n_loans)
		pub->loans[i] = pub->loans[pub->n_loans];
}

void takt_pub_discard(takt_pub *pub, void *payload)
{
	uint32_t c;
	int i;

	if (!pub)
		return;
	i = pub_find_loan(pub, payload, &c);
	if (i < 0)
		return;
	pub_end_loan(pub, (unsigned)i);
	chunk_unref(&pub->pool, c);
	/* Not a hot path: take returns back too, so the statistics are exact
	 * after a discard (takt pools, the tests' audits). Q0 as in loan. */
	q0_enter(&pub->pool.seg.live->active, pub->node->q0_light);
	pub_check_conns(pub);
	pub_drain_returns(pub);
	q0_exit(&pub->pool.seg.live->active);
}

/* ---- publish -------------------------------------------------------------------- */

static void pub_count_drop(struct pub_slot *s)
{
	ring_count_drops(&s->ring, 1);
}

/* A chunk the subscriber did not take, back from its ring (drop-oldest). */
static void pub_unqueue(takt_pub *p, struct pub_slot *s, uint32_t c)
{
	if (c >= p->pool.n_have || !bit_test(s->out, c)) {
		pub_bad_return(p); /* the ring held something we never sent */
		return;
	}
	bit_clear(s->out, c);
	chunk_unref(&p->pool, c);
}

/* Whether the subscriber of a full blocking connection has died: its
 * pidfd (pushed with the connection) is readable. A check of our own, so
 * a publish stops waiting for a dead subscriber while no broker runs to
 * retire the connection. One poll, only when the ring is full. */
static bool pub_sub_gone(takt_pub *p, struct pub_slot *s)
{
	struct node_submap sm;
	struct pollfd pfd = {.events = POLLIN};

	/* relaxed: we wrote them (or the agent before PS0's release). The
	 * pidfd stays open while we are inside publish (G1, node.c). */
	if (!node_conn_submap(p->node, atomic_load_explicit(&s->conn, memory_order_relaxed),
			      atomic_load_explicit(&s->incarnation, memory_order_relaxed), &sm) ||
	    sm.pidfd < 0)
		return false;
	pfd.fd = sm.pidfd;
	if (poll(&pfd, 1, 0) == 1)
		s->sub_gone = true;
	return s->sub_gone;
}

/* Pushes into one ring under the subscriber's overflow policy (a blocking
 * one without waiting if nowait: a full ring drops the sample). 1 when
 * delivered (the chunk is outstanding there); 0 when not. */
static int pub_push(takt_pub *p, struct pub_slot *s, const struct ring_entry *e, bool nowait)
{
	uint64_t deadline = 0;

	s->ring.nudge = false;
	for (int tries = 0; tries < 64; tries++) {
		uint32_t old;

		if (ring_push_spsc(&s->ring, e) == 0) {
			bit_set(s->out, e->chunk);
			return 1;
		}
		if (s->overflow == TAKT_OVERFLOW_REJECT)
			break;
		if (s->overflow == TAKT_OVERFLOW_BLOCK) {
			if (nowait || s->sub_gone)
				break;
			/* a subscriber that keeps up makes room within a few
			 * line transfers: no syscall then (the liveness poll is
			 * for a publish about to sleep) */
			if (!deadline && ring_spin_room(&s->ring))
				continue;
			if (!deadline && pub_sub_gone(p, s))
				break;
			if (!deadline) /* one bound per publish, however often we are woken */
				deadline = takt_now_ns() + p->block_timeout_ns;
			if (ring_wait_room(&s->ring, deadline) < 0)
				break;
			continue;
		}
		old = ring_steal_oldest(&s->ring);
		if (old == TAKT_NONE)
			continue; /* the subscriber made room meanwhile */
		pub_unqueue(p, s, old);
		pub_count_drop(s);
	}
	pub_count_drop(s);
	return 0;
}

static void pub_history_put(takt_pub *p, uint32_t c, uint32_t gen)
{
	uint32_t slot = (uint32_t)((p->seq - 1) % p->history);
	/* H0: release pairs with the agent's acquire load of the entry. */
	uint64_t old = atomic_exchange_explicit(&p->hist[slot], (uint64_t)gen << 32 | c, memory_order_acq_rel);

	/* H1: release pairs with the agent's acquire of last_seq. */
	atomic_store_explicit(&p->last_seq, p->seq, memory_order_release);
	if (old)
		chunk_unref(&p->pool, (uint32_t)old);
}

static void pub_notify(takt_pub *p, const unsigned char *pushed, uint64_t seq)
{
	bool parked = false;

	if (p->light)
		/* P1L: no fence: a subscriber that parks issues membarrier for us. */
		atomic_signal_fence(memory_order_seq_cst);
	else
		/* P1: pairs with the subscriber's store of an odd park generation +
		 * fence before it re-checks its rings (sub.c, P0): either it sees
		 * our push, or we see it parked. */
		atomic_thread_fence(memory_order_seq_cst);
	for (unsigned i = 0; i < p->n_conns; i++) {
		struct pub_slot *s = p->conns[i];
		/* relaxed load first: keeps the line shared while nobody parks. */
		uint32_t g = atomic_load_explicit(s->park, memory_order_relaxed);
		int efd;

		parked |= g & 1;

		/* R2: a connection we gave a verdict to is woken like one we
		 * pushed to (its subscriber may have parked waiting for it). */
		if (!(pushed[i] || s->ring.nudge) || !(g & 1) || g == s->woken)
			continue;
		/* G0: no fd yet (its push is on the way): the agent wakes the
		 * subscriber when it installs the fd. relaxed: we wrote them
		 * (or the agent before PS0's release). */
		efd = node_conn_efd(p->node, atomic_load_explicit(&s->conn, memory_order_relaxed),
				    atomic_load_explicit(&s->incarnation, memory_order_relaxed));
		if (efd < 0)
			continue;
		TAKT_PROBE3(notify, s->sub, p->id, seq);
		conn_wake(s->ring.pw, s->park, &s->woken, efd);
	}
	if (parked) {
		pub_go_heavy(p);
	} else if (!p->light && p->light_ok && ++p->calm >= LIGHT_AFTER) {
		/* P1L: the store, then a fence before any later park load: with a
		 * parking subscriber's park store, fence, load of light, one of us
		 * sees the other's store (store-buffer litmus). */
		atomic_store_explicit(&p->pool.seg.live->light, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst);
		p->light = true;
	}
}

/* Publishes chunk c: of loan li (>= 0), or held with generation gen (li
 * -1: a flush, which never waits for a blocking subscriber), stamped now
 * or, if at, at that time (stamp_clock_at). */
static inline __attribute__((always_inline)) int pub_publish_chunk(takt_pub *pub, int li, uint32_t c, uint32_t gen,
								   uint64_t at, const unsigned *within)
{
	unsigned char *pushed = pub->pushed;
	struct chunk_info *h;
	struct ring_entry e;
	uint64_t seq, ns;
	int reached = 0;

	/* Q0: pairs with the broker's conn removal (registry.c, client.h). */
	q0_enter(&pub->pool.seg.live->active, pub->node->q0_light);
	pub_check_conns(pub);
	if (within) { /* pub_publish_within: refused before anything changed */
		int r = pub->n_conns ? 0 : -ENOTCONN;

		for (unsigned i = 0; i < pub->n_conns && !r; i++)
			if (pub->conns[i]->ring.depth <= *within)
				r = -ENOBUFS;
		if (r < 0) {
			q0_exit(&pub->pool.seg.live->active); /* Q0 */
			return r;
		}
	}
	h = &pub->pool.info[c];
	seq = ++pub->seq;
	ns = at ? stamp_clock_at(&pub->clock, at) : stamp_clock_now(&pub->clock);
	if (pub->history) {
		/* for history (C1: before the hand-over's release); from
		 * registers: a load spanning two stores (copying them from e)
		 * cannot forward, so it would wait until the caller's payload
		 * stores reached the cache, a line transfer per publish */
		h->seq = seq;
		h->publish_ns = ns;
	}
	e = (struct ring_entry){.chunk = c, .size = h->size, .seq = seq, .publish_ns = ns};
	/* before the pushes: an awake subscriber may take the sample at once */
	TAKT_PROBE3(publish, pub->topic, pub->id, e.seq);
	if (li >= 0) {
		gen = pub->loans[li].gen;
		pub_end_loan(pub, (unsigned)li);
	}
	if (pub->n_conns + (pub->history ? 1 : 0) == 0) {
		chunk_unref(&pub->pool, c); /* nobody to hand it to */
	} else {
		/* L0: one store hands the loan's reference to every holder; no
		 * other process counts references, so a crash here costs only
		 * our own pool, which goes with us. */
		chunk_hand_over(&pub->pool, c, gen, pub->n_conns + (pub->history ? 1 : 0));
		for (unsigned i = 0; i < pub->n_conns; i++) {
			pushed[i] = (unsigned char)pub_push(pub, pub->conns[i], &e, li < 0);
			TAKT_FAULT("publish_pushed_one");
			if (!pushed[i])
				chunk_unref(&pub->pool, c);
			reached += pushed[i];
		}
		if (pub->history)
			pub_history_put(pub, c, gen);
	}
	pub_notify(pub, pushed, e.seq);
	q0_exit(&pub->pool.seg.live->active); /* Q0 */
	return reached;
}

int takt_pub_publish(takt_pub *pub, void *payload)
{
	uint32_t c;
	int li;

	if (!pub)
		return -EINVAL;
	li = pub_find_loan(pub, payload, &c);
	if (li < 0)
		return li;
	if (pub->holding) {
		/* held in publish order; the loan's slot is free again, its
		 * chunk still counts against loans_max */
		pub->held[pub->n_held++] = pub->loans[li];
		pub_end_loan(pub, (unsigned)li);
		return 0;
	}
	return pub_publish_chunk(pub, li, c, 0, 0, NULL);
}

int pub_publish_within(takt_pub *pub, void *payload, const unsigned *outstanding)
{
	uint32_t c;
	int li = pub_find_loan(pub, payload, &c);

	if (li < 0)
		return li;
	return pub_publish_chunk(pub, li, c, 0, 0, outstanding);
}

int takt_pub_flush(takt_pub *pub, uint64_t publish_ns)
{
	unsigned n;

	if (!pub)
		return -EINVAL;
	n = pub->n_held;
	for (unsigned i = 0; i < n; i++)
		pub_publish_chunk(pub, -1, pub->held[i].chunk, pub->held[i].gen, publish_ns, NULL);
	pub->n_held = 0;
	return (int)n;
}

int takt_pub_hold(takt_pub *pub, int hold)
{
	if (!pub)
		return -EINVAL;
	pub->holding = hold != 0;
	return hold ? 0 : takt_pub_flush(pub, 0);
}

int takt_pub_send(takt_pub *pub, const void *data, size_t size)
{
	void *p;
	int r;

	if (!pub || (!data && size))
		return -EINVAL;
	r = takt_pub_loan(pub, size, &p);
	if (r < 0)
		return r;
	memcpy(p, data, size);
	return takt_pub_publish(pub, p);
}
