/* sub.c - subscribers: take, release, wait.
 *
 * A subscriber reads one SPSC ring per connected publisher, round-robin,
 * and reads each sample in place in that publisher's pool segment, which
 * its node's agent mapped read-only when the broker pushed the connection
 * (sub_agent_connect). A released sample goes back to its publisher through
 * the connection's return ring: no reference count is shared, and the
 * subscriber writes nothing its publisher depends on but that ring.
 * History for a late joiner arrives in the ring like any sample: the
 * publisher's node puts it there before the connection is confirmed.
 *
 * SS, slot states: FREE -> READY (agent: pool mapped, rings bound, release)
 * -> ADOPTED (subscribing thread, acquire) -> DRAINING (the connection left
 * while samples of it are held) -> DONE (nothing held: release) -> FREE
 * (agent, after munmap; acquire). A sample taken from a connection that
 * has left stays valid until it is released: its pool stays mapped.
 *
 * Parking (P0): to sleep, a subscriber stores a new odd value in its park
 * word (a word only it writes), fences, re-checks its rings and only then
 * blocks on its eventfd. A publisher pushes, fences and writes the eventfd
 * when it sees an odd value it has not woken yet, counting the write on its
 * connection first (pub.c P1, client.h conn_wake; P2 below). A subscriber
 * that never parks costs publishers no syscall.
 */
#include "client.h"
#include "fault.h"
#include "probes.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SS_FREE = 0, SS_READY, SS_ADOPTED, SS_DRAINING, SS_DONE };

#define UNFENCED_SLICE_MS 1 /* P1L: sleep slices when the kernel refused our membarrier */

struct sub_slot {
	_Atomic uint32_t state; /* SS */
	uint32_t conn;
	uint32_t incarnation;
	uint32_t pub;
	uint64_t pub_id;        /* the publisher's id, for takt_sample_info */
	struct seg_pool pool;   /* the publisher's pool, mapped read-only */
	int pool_fd;            /* its descriptor (read-only): for a restarted broker */
	struct ring_cons ring;
	struct ret_prod ret;
	uint32_t held;          /* samples of this connection taken, not released */
};

struct sub_held {
	uint32_t slot;          /* TAKT_NONE: unused */
	uint32_t chunk;
	const void *payload;
};

struct takt_sub {
	takt_node *node;
	int seg_fd;                  /* its segment, read-write: for a restarted broker */
	char topic[TAKT_NAME_MAX]; /* for probes */
	struct takt_sub *next;
	struct takt_sub_port *port;  /* the registry's entry (broker) */
	_Atomic uint32_t *port_conns; /* its connection list in the registry (seg_sub_conns) */
	struct seg_subseg seg;       /* our segment, read-write */
	uint32_t index;
	int efd;
	uint32_t held_max;
	uint32_t conn_gen;
	uint64_t cutoff;     /* takes only samples published at or before it (UINT64_MAX: any) */
	bool armed;
	uint32_t park_gen;   /* P0: our park word (odd while armed) */
	uint32_t wakes_read; /* P2: eventfd writes read so far (mod 2^32) */
	uint32_t wakes_gone; /* P2: writes counted on connections that left */
	bool unfenced;       /* P1L: the last park could not fence for a light publisher */
	bool fd_edge;        /* P2: the caller watches efd edge-triggered: never drained */
	_Atomic uint32_t agent_wakes; /* P2: writes by our node's agent (P4) */
	int wait_ep;    /* private epoll, edge-triggered on efd: takt_sub_wait */
	unsigned n_conns, rr;
	struct sub_slot **conns; /* adopted, registry order (pubs_per_topic entries) */
	unsigned n_slots;
	struct sub_slot *slots;
	unsigned n_held;
	struct sub_held *held;   /* held_max entries */
	uint64_t dropped_gone; /* drops counted on connections that left */
};

/* ---- the agent's side --------------------------------------------------- */

/* P4: the publisher's node pushes history into a new ring as soon as it
 * has the connection, which can be before READY above: its wake-up then
 * found nothing usable and the subscriber parked again. So, once READY is
 * stored: fence, load our park word, and wake a parked subscriber
 * ourselves; pairs with P0 (park store, fence, look at READY): either its
 * look sees READY, or we see it parked. Counted before the write (P2). */
static void sub_agent_wake(takt_sub *s)
{
	uint64_t one = 1;

	atomic_thread_fence(memory_order_seq_cst);
	/* relaxed: ordered by the fence (P4). */
	if (!(atomic_load_explicit(&s->seg.live->park, memory_order_relaxed) & 1))
		return;
	/* P2: release: counted before the write can be read. */
	atomic_fetch_add_explicit(&s->agent_wakes, 1, memory_order_release);
	if (write(s->efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
		atomic_fetch_sub_explicit(&s->agent_wakes, 1, memory_order_relaxed); /* not made: not owed */
}

void sub_kick(takt_sub *sub)
{
	sub_agent_wake(sub);
}

unsigned pool_handbacks(takt_node *n, struct port_handback *out, unsigned max)
{
	unsigned k = 0;

	for (takt_sub *s = n->subs; s; s = s->next)
		for (unsigned i = 0; i < s->n_slots && k < max; i++) {
			const struct sub_slot *slot = &s->slots[i];

			/* SS: acquire pairs with our own release of the state */
			if (atomic_load_explicit(&slot->state, memory_order_acquire) == SS_FREE || slot->pool_fd < 0)
				continue;
			out[k++] = (struct port_handback){.index = slot->pub, .sub = s->index, .id = slot->pub_id,
							  .fd = {fcntl(slot->pool_fd, F_DUPFD_CLOEXEC, 0), -1}};
		}
	return k;
}

unsigned sub_handbacks(takt_node *n, struct port_handback *out, unsigned max)
{
	unsigned k = 0;

	for (takt_sub *s = n->subs; s && k < max; s = s->next)
		out[k++] = (struct port_handback){.index = s->index, .fd = {fcntl(s->seg_fd, F_DUPFD_CLOEXEC, 0),
									     fcntl(s->efd, F_DUPFD_CLOEXEC, 0)}};
	return k;
}

int sub_agent_connect(takt_node *n, const struct msg_push_conn *m, int pool_fd)
{
	const struct seg_view *v = &n->v;
	const struct takt_conn *c;
	struct sub_slot *slot = NULL;
	struct takt_conn_sub *sw;
	takt_sub *s;
	void *base;
	size_t size;
	int r;

	for (s = n->subs; s && s->index != m->sub; s = s->next)
		;
	if (!s || m->conn >= v->lim.connections || m->pub >= v->lim.publishers)
		return -ENOENT;
	c = &v->conns[m->conn];
	/* acquire: pairs with the broker's release of state after filling the conn. */
	uint32_t st = atomic_load_explicit(&c->state, memory_order_acquire);

	if ((st != SLOT_ACTIVE && st != SLOT_ORPHAN) || c->sub != s->index || c->pub != m->pub ||
	    atomic_load_explicit(&c->incarnation, memory_order_relaxed) != m->incarnation ||
	    c->mask >= v->lim.queue_depth_max || (c->mask & (c->mask + 1)) || c->overflow > TAKT_OVERFLOW_REJECT ||
	    c->ret_mask + 1 != layout_conn_ret_slots(&v->lim, c->depth) || c->sub_slot >= s->seg.n_slots ||
	    (uint64_t)(c->ret_mask + 1) * sizeof(uint32_t) > s->seg.ret_region)
		return -EBADMSG;
	for (unsigned i = 0; i < s->n_slots; i++)
		/* SS: acquire pairs with our own release of the state. A
		 * restarted broker pushes every connection again (adopt.c). */
		if (atomic_load_explicit(&s->slots[i].state, memory_order_acquire) != SS_FREE &&
		    s->slots[i].conn == m->conn && s->slots[i].incarnation == m->incarnation)
			return -EALREADY;
	sub_agent_reap(n); /* a slot a connection let go may be needed now */
	for (unsigned i = 0; i < s->n_slots && !slot; i++)
		/* SS: acquire pairs with our own earlier release of FREE. */
		if (atomic_load_explicit(&s->slots[i].state, memory_order_acquire) == SS_FREE)
			slot = &s->slots[i];
	if (!slot)
		return -ENOSPC; /* cannot happen: pubs_per_topic + held_max slots */
	r = seg_map_fd(pool_fd, PROT_READ, &base, &size);
	if (r < 0)
		return r;
	r = seg_pool_check(v, &v->pubs[m->pub], base, size, &slot->pool);
	if (r == 0 && (c->pub_slot >= slot->pool.n_slots ||
		       ((uint64_t)c->mask + 1) * sizeof(struct takt_ring_slot) > slot->pool.ring_region))
		r = -EBADMSG;
	if (r < 0) {
		munmap(base, size);
		return r;
	}
	slot->pool_fd = pool_fd; /* ours from now on */
	slot->conn = m->conn;
	slot->incarnation = m->incarnation;
	slot->pub = m->pub;
	/* relaxed: the broker wrote the id before it published the connection
	 * (ordered by the acquire of state above). */
	slot->pub_id = v->pubs[m->pub].id;
	slot->held = 0;
	/* Our region of the segment for this connection, left by whichever
	 * connection had it before (reused only once both its ends were
	 * quiescent, Q0): start it afresh, then mark it as this incarnation's
	 * (release: the publisher counts our tail and returns only after it
	 * acquires the mark, pub.c). relaxed: the mark orders them. */
	sw = seg_subseg_conn(&s->seg, c->sub_slot);
	atomic_store_explicit(&sw->tail, 0, memory_order_relaxed);
	atomic_store_explicit(&sw->ret_head, 0, memory_order_relaxed);
	ring_cons_init(&slot->ring, c, seg_pool_conn(&slot->pool, c->pub_slot), sw,
		       seg_pool_ring(&slot->pool, c->pub_slot), c->mask, c->overflow);
	/* B0L: takes store tail without a fence exactly when we told our
	 * publishers that we are registered for membarrier. relaxed: ours. */
	slot->ring.light = atomic_load_explicit(&s->seg.live->membarrier, memory_order_relaxed) == 1;
	ret_prod_init(&slot->ret, sw, seg_pool_conn(&slot->pool, c->pub_slot), seg_subseg_rets(&s->seg, c->sub_slot),
		      c->ret_mask);
	/* SS: release hands the slot to the subscribing thread. Before the
	 * mark (P0): the publisher pushes into the ring only after it saw the
	 * mark, so by then READY is visible to a subscribing thread that
	 * re-checks its connections after parking (sub_arm_check). */
	atomic_store_explicit(&slot->state, SS_READY, memory_order_release);
	TAKT_FAULT("sub_agent_installing");
	atomic_store_explicit(&sw->mark, takt_conn_mark(m->conn, m->incarnation), memory_order_release);
	sub_agent_wake(s);
	return 0;
}

void sub_agent_reap(takt_node *n)
{
	for (takt_sub *s = n->subs; s; s = s->next)
		for (unsigned i = 0; i < s->n_slots; i++) {
			struct sub_slot *slot = &s->slots[i];

			/* SS: acquire pairs with the subscribing thread's release of DONE. */
			if (atomic_load_explicit(&slot->state, memory_order_acquire) != SS_DONE)
				continue;
			munmap(slot->pool.base, slot->pool.size);
			memset(&slot->pool, 0, sizeof(slot->pool));
			close(slot->pool_fd);
			slot->pool_fd = -1;
			node_pool_done(n, slot->pub_id, s->index);
			atomic_store_explicit(&slot->state, SS_FREE, memory_order_release);
		}
}

/* ---- connections --------------------------------------------------------- */

static bool sub_listed(takt_sub *s, const struct sub_slot *slot)
{
	const struct seg_view *v = &s->node->v;

	/* relaxed: acquired by the seq_cst load of conn_gen (W1) before us. */
	for (uint32_t i = 0; i < v->lim.pubs_per_topic; i++)
		if (atomic_load_explicit(&s->port_conns[i], memory_order_relaxed) == slot->conn)
			return conn_same(v, slot->conn, slot->incarnation, slot->conn);
	return false;
}

/* The connection left: nothing may be returned through its ring any more
 * (the broker reuses it once we are quiescent, Q0). */
static void sub_slot_leave(takt_sub *s, struct sub_slot *slot)
{
	/* relaxed: a statistic its publisher writes; the connection is not
	 * reused before we are quiescent (Q0), so it is still this one's. */
	s->dropped_gone += atomic_load_explicit(&slot->ring.pw->dropped, memory_order_relaxed);
	/* P2: acquire pairs with the publisher's release of its count. */
	s->wakes_gone += atomic_load_explicit(&slot->ring.pw->wakes, memory_order_acquire);
	if (slot->held) {
		/* relaxed: the agent acts only on DONE; this thread alone reads it. */
		atomic_store_explicit(&slot->state, SS_DRAINING, memory_order_relaxed);
		return;
	}
	/* SS: release pairs with the agent's acquire before it unmaps. */
	atomic_store_explicit(&slot->state, SS_DONE, memory_order_release);
	node_kick(s->node);
}

static void sub_refresh(takt_sub *s, uint32_t gen)
{
	const struct seg_view *v = &s->node->v;
	bool pending = false;

	for (unsigned i = 0; i < s->n_slots; i++) {
		struct sub_slot *slot = &s->slots[i];
		uint32_t st = atomic_load_explicit(&slot->state, memory_order_acquire); /* SS */

		if ((st == SS_READY || st == SS_ADOPTED) && !sub_listed(s, slot))
			sub_slot_leave(s, slot);
	}
	s->n_conns = 0;
	for (uint32_t i = 0; i < v->lim.pubs_per_topic; i++) {
		/* relaxed: the list was acquired by the seq_cst load of conn_gen
		 * (W1) that brought us here; ci is only compared or bounds-checked. */
		uint32_t ci = atomic_load_explicit(&s->port_conns[i], memory_order_relaxed);
		struct sub_slot *found = NULL;

		if (ci == TAKT_NONE)
			continue;
		for (unsigned k = 0; k < s->n_slots && !found; k++) {
			struct sub_slot *slot = &s->slots[k];
			uint32_t st = atomic_load_explicit(&slot->state, memory_order_acquire); /* SS */

			if ((st == SS_READY || st == SS_ADOPTED) && conn_same(v, slot->conn, slot->incarnation, ci))
				found = slot;
		}
		/* The publisher starts its region of the connection afresh;
		 * its ring counts only once it marked it as this incarnation's
		 * (acquire: pairs with its release, pub.c). */
		if (!found || atomic_load_explicit(&found->ring.pw->mark, memory_order_acquire) !=
				      takt_conn_mark(found->conn, found->incarnation)) {
			pending = true; /* the agent has not mapped its pool yet, or the publisher not prepared it */
			continue;
		}
		/* relaxed: READY -> ADOPTED publishes nothing (SS: the agent
		 * writes only FREE slots). */
		atomic_store_explicit(&found->state, SS_ADOPTED, memory_order_relaxed);
		s->conns[s->n_conns++] = found;
	}
	if (s->rr >= s->n_conns)
		s->rr = 0;
	s->conn_gen = pending ? gen - 1 : gen;
}

static void sub_check_conns(takt_sub *s)
{
	/* W1/Q0: seq_cst, so this load is ordered after our seq_cst increment
	 * of active in the single total order the broker's grace check relies
	 * on (an acquire load is not), or after our plain store of it when the
	 * broker fences for us (q0_enter); it also acquires the rewritten conns[]. */
	uint32_t gen = atomic_load_explicit(&s->port->conn_gen, memory_order_seq_cst);

	if (gen != s->conn_gen)
		sub_refresh(s, gen);
}

/* ---- open and close ------------------------------------------------------ */

/* Frees a subscriber that never got (or no longer has) connections. */
static void sub_free(takt_sub *s)
{
	for (unsigned i = 0; i < s->n_slots; i++)
		if (atomic_load_explicit(&s->slots[i].state, memory_order_acquire) != SS_FREE) {
			munmap(s->slots[i].pool.base, s->slots[i].pool.size);
			close(s->slots[i].pool_fd);
		}
	if (s->seg.base)
		munmap(s->seg.base, s->seg.size);
	if (s->efd >= 0)
		close(s->efd);
	if (s->seg_fd >= 0)
		close(s->seg_fd);
	if (s->wait_ep >= 0)
		close(s->wait_ep);
	free(s->slots);
	free(s->conns);
	free(s->held);
	free(s);
}

int takt_sub_open(takt_node *node, const struct takt_sub_opts *opts, takt_sub **out)
{
	return sub_open(node, opts, out, false, NULL);
}

int sub_open(takt_node *node, const struct takt_sub_opts *opts, takt_sub **out, bool service, const char *reply)
{
	struct msg_sub_open req = {0};
	struct proto_reply rep;
	unsigned n_fds = 0;
	takt_sub *s;
	int fds[2] = {-1, -1}, r;
	void *base = NULL;
	size_t size = 0;

	if (!node || !opts || !out || node_copy_topic(req.topic, opts->topic, service) < 0 ||
	    (unsigned)opts->overflow > TAKT_OVERFLOW_REJECT)
		return -EINVAL;
	if ((opts->type_name && node_copy_name(req.type_name, opts->type_name) < 0) ||
	    (reply && node_copy_name(req.reply_type, reply) < 0))
		return -EINVAL;
	if (opts->queue_depth > node->v.lim.queue_depth_max || opts->history > node->v.lim.history_max)
		return -EINVAL;
	req.queue_depth = opts->queue_depth;
	req.overflow = (uint32_t)opts->overflow;
	req.history = opts->history;
	s = calloc(1, sizeof(*s));
	if (s) {
		/* Sized by the domain's limits, once: nothing is allocated later. */
		s->n_slots = node->v.lim.pubs_per_topic + node->v.lim.held_max;
		s->slots = calloc(s->n_slots, sizeof(*s->slots));
		s->conns = calloc(node->v.lim.pubs_per_topic, sizeof(*s->conns));
		s->held = calloc(node->v.lim.held_max, sizeof(*s->held));
	}
	if (!s || !s->slots || !s->conns || !s->held) {
		if (s) {
			free(s->slots);
			free(s->conns);
			free(s->held);
		}
		free(s);
		return -ENOMEM;
	}
	s->node = node;
	memcpy(s->topic, req.topic, TAKT_NAME_MAX);
	s->held_max = node->v.lim.held_max;
	s->cutoff = UINT64_MAX;
	s->conn_gen = UINT32_MAX;
	s->efd = -1;
	s->seg_fd = -1;
	s->wait_ep = -1;
	/* 1. the port, its eventfd and its segment (read-write). */
	r = node_call(node, MSG_SUB_OPEN, &req, sizeof(req), &rep, sizeof(rep), fds, 2, &n_fds);
	if (r == 0 && (n_fds != 2 || rep.index >= node->v.lim.subscribers))
		r = -EPROTO;
	if (r < 0) {
		for (unsigned i = 0; i < n_fds; i++)
			close(fds[i]);
		sub_free(s);
		return r;
	}
	s->index = rep.index;
	s->port = &node->v.subs[rep.index];
	s->port_conns = seg_sub_conns(&node->v, rep.index);
	s->efd = fds[0];
	r = seg_map_fd(fds[1], PROT_READ | PROT_WRITE, &base, &size);
	s->seg_fd = fds[1]; /* kept: handed back to a restarted broker (node.c) */
	if (r == 0) {
		r = seg_subseg_check(&node->v, s->index, base, size, &s->seg);
		if (r < 0)
			munmap(base, size);
	}
	if (r == 0) {
		/* P1L: relaxed: publishers map the segment only after the broker
		 * pushed them the connection, after our SUB_CONNECT below. */
		atomic_store_explicit(&s->seg.live->membarrier, node->q0_light, memory_order_relaxed);
		s->wait_ep = epoll_create1(EPOLL_CLOEXEC);
		if (s->wait_ep < 0 || epoll_ctl(s->wait_ep, EPOLL_CTL_ADD, s->efd,
						&(struct epoll_event){.events = EPOLLIN | EPOLLET}) < 0)
			r = -errno;
	}
	if (r < 0) {
		node_close_index(node, MSG_SUB_CLOSE, s->index);
		sub_free(s);
		return r;
	}
	/* 2. on the list before the broker pushes our connections (its agent
	 * maps their pools), which it does once we said the segment is
	 * mapped: it seals it against any new writable mapping first. The
	 * reply comes once every publisher's node prepared its connection. */
	NODE_LIST_ADD_LOCKED(node, node->subs, s);
	r = node_call(node, MSG_SUB_CONNECT, &(struct msg_index){.index = s->index}, sizeof(struct msg_index),
		      &rep, sizeof(rep), NULL, 0, NULL);
	if (r < 0) {
		node_close_index(node, MSG_SUB_CLOSE, s->index);
		NODE_LIST_DEL_LOCKED(node, node->subs, takt_sub, s);
		sub_free(s);
		return r;
	}
	*out = s;
	return 0;
}

void takt_sub_close(takt_sub *sub)
{
	if (!sub)
		return;
	/* The broker retires our connections; their publishers take back
	 * everything we held or had queued (pub.c). */
	node_close_index(sub->node, MSG_SUB_CLOSE, sub->index);
	NODE_LIST_DEL_LOCKED(sub->node, sub->node->subs, takt_sub, sub);
	sub_free(sub);
}

/* ---- take and release ------------------------------------------------------ */

/* P2: every eventfd write is counted before it is made, by its writer in
 * a word of its own: per connection by the publisher (conn_wake, client.h)
 * and per port by the broker for a publisher that died (P3, broker_wakes).
 * A read returns how many writes landed. A write that lands after the read
 * meant for it leaves a stale count, and a level-triggered epoll of the
 * caller would spin on empty takes; so as long as more writes were counted
 * than read, the next arm reads again before it parks. When nothing is
 * owed no read is made: a busy subscriber costs no syscall. Counts of
 * connections our agent has not handed us yet may make the balance
 * negative for a while; it evens out when they arrive. */
static uint32_t sub_wakes_counted(const takt_sub *s)
{
	/* P3: acquire pairs with the broker's release bump before its write. */
	uint32_t n = atomic_load_explicit(&s->port->broker_wakes, memory_order_acquire) + s->wakes_gone +
		     /* P2: acquire pairs with our agent's release before its write (P4). */
		     atomic_load_explicit(&s->agent_wakes, memory_order_acquire);

	for (unsigned i = 0; i < s->n_slots; i++) {
		const struct sub_slot *slot = &s->slots[i];
		/* SS: acquire pairs with the agent's release of READY. */
		uint32_t st = atomic_load_explicit(&slot->state, memory_order_acquire);

		/* P2: acquire pairs with the publisher's release of its count. */
		if (st == SS_READY || st == SS_ADOPTED)
			n += atomic_load_explicit(&slot->ring.pw->wakes, memory_order_acquire);
	}
	return n;
}

static void sub_efd_drain(takt_sub *s)
{
	uint64_t cnt;

	/* an edge-triggered watcher sees each write as one edge whatever the
	 * count is: it needs no read (takt_sub_fd_edge; so does
	 * takt_sub_wait's private epoll) */
	if (s->fd_edge || (int32_t)(sub_wakes_counted(s) - s->wakes_read) <= 0 ||
	    read(s->efd, &cnt, sizeof(cnt)) != sizeof(cnt))
		return; /* nothing owed, or owed writes still in flight */
	s->wakes_read += (uint32_t)cnt;
}

/* P0: stores our park word: odd while armed, a new value each time. */
static void sub_park_set(takt_sub *s, bool armed, memory_order mo)
{
	s->park_gen++;
	s->armed = armed;
	atomic_store_explicit(&s->seg.live->park, s->park_gen, mo);
}

/* A wake-up was consumed or is no longer needed: lower our park word
 * (relaxed: a publisher that still sees it odd wakes us once more, and
 * counts it), and read what was written for us. */
static void sub_disarm(takt_sub *s)
{
	sub_park_set(s, false, memory_order_relaxed);
	sub_efd_drain(s);
}

/* A popped entry is usable if its chunk is one the broker reserved in that
 * publisher's pool and its size fits: another process wrote it, so it is
 * checked like input. */
static bool sub_entry_ok(const takt_sub *s, const struct sub_slot *slot, const struct ring_entry *e)
{
	/* acquire: pairs with the broker's release of n_chunks. */
	uint32_t n = atomic_load_explicit(&s->node->v.pubs[slot->pub].n_chunks, memory_order_acquire);

	return e->chunk < n && e->chunk < slot->pool.n_max && e->size <= slot->pool.payload_size;
}

/* Pops from the rings, round-robin: 0 and the slot, or -EAGAIN. */
static int sub_pop(takt_sub *s, struct ring_entry *out, struct sub_slot **ret_slot)
{
	for (unsigned n = 0, i = s->rr; n < s->n_conns; n++, i = i + 1 == s->n_conns ? 0 : i + 1) {
		struct sub_slot *slot = s->conns[i];

		/* Bounded: a publisher refilling its ring with bad entries
		 * costs us a bounded number of pops per take. */
		for (unsigned bad = 0; bad < 64 && ring_pop_shared(&slot->ring, out, s->cutoff) == 0; bad++) {
			TAKT_FAULT("take_popped");
			if (sub_entry_ok(s, slot, out)) {
				s->rr = i + 1 == s->n_conns ? 0 : i + 1; /* (no division per take) */
				*ret_slot = slot;
				return 0;
			}
			/* A bad entry from shared memory: dropped, it costs only
			 * the publisher that wrote it. */
		}
	}
	return -EAGAIN;
}

int takt_sub_take(takt_sub *sub, const void **payload, struct takt_sample_info *info)
{
	struct sub_slot *slot;
	struct ring_entry e;
	int r;

	if (!sub || !payload)
		return -EINVAL;
	if (sub->armed)
		sub_disarm(sub);
	if (sub->n_held == sub->held_max)
		return -ENOBUFS;
	/* Q0: pairs with the broker's conn removal (registry.c, client.h). */
	q0_enter(&sub->seg.live->active, sub->node->q0_light);
	sub_check_conns(sub);
	r = sub_pop(sub, &e, &slot);
	if (r == 0) {
		const void *p = seg_chunk_payload(&slot->pool, e.chunk);

		/* one record, written whole: release copies it (a wide load
		 * over field-by-field stores could not forward) */
		sub->held[sub->n_held++] = (struct sub_held){
			.slot = (uint32_t)(slot - sub->slots), .chunk = e.chunk, .payload = p};
		slot->held++;
		TAKT_PROBE4(take, sub->topic, sub->index, slot->pub_id, e.seq);
		*payload = p;
		if (info)
			*info = (struct takt_sample_info){
				.seq = e.seq, .publish_ns = e.publish_ns, .publisher_id = slot->pub_id,
				.size = e.size,
				/* relaxed: a tag (takt_pub_set_origin, pub.c), any value valid */
				.origin = atomic_load_explicit(
					&((const struct takt_pool_header *)slot->pool.base)->origin,
					memory_order_relaxed)};
	}
	q0_exit(&sub->seg.live->active); /* Q0 */
	return r;
}

int takt_sub_set_cutoff(takt_sub *sub, uint64_t cutoff_ns)
{
	if (!sub)
		return -EINVAL;
	sub->cutoff = cutoff_ns ? cutoff_ns : UINT64_MAX;
	return 0;
}

void takt_sub_release(takt_sub *sub, const void *payload)
{
	struct sub_slot *slot;
	struct sub_held h;
	unsigned k;
	uint32_t st;

	if (!sub || !payload)
		return;
	for (k = 0; k < sub->n_held && sub->held[k].payload != payload; k++)
		;
	if (k == sub->n_held)
		return; /* not a sample we hold */
	h = sub->held[k];
	if (k != --sub->n_held) /* only when another record moves */
		sub->held[k] = sub->held[sub->n_held];
	slot = &sub->slots[h.slot];
	slot->held--;
	/* Q0: the return ring is used inside the bracket, and only while the
	 * connection is still ours (the broker reuses it after Q0). */
	q0_enter(&sub->seg.live->active, sub->node->q0_light);
	sub_check_conns(sub);
	st = atomic_load_explicit(&slot->state, memory_order_relaxed); /* ours: only this thread moves it now */
	if (st == SS_ADOPTED || st == SS_READY) {
		/* -ENOSPC: the publisher stopped taking returns; the chunk is
		 * its loss, and it gets it back when the connection ends. */
		TAKT_FAULT("release_returning");
		ret_push(&slot->ret, h.chunk);
	} else if (st == SS_DRAINING && slot->held == 0) {
		/* SS: release pairs with the agent's acquire before it unmaps. */
		atomic_store_explicit(&slot->state, SS_DONE, memory_order_release);
		node_kick(sub->node);
	}
	q0_exit(&sub->seg.live->active); /* Q0 */
}

int takt_sub_fd(const takt_sub *sub)
{
	return sub ? sub->efd : -EINVAL;
}

int takt_sub_fd_edge(takt_sub *sub)
{
	if (!sub)
		return -EINVAL;
	sub->fd_edge = true;
	return sub->efd;
}

uint64_t takt_sub_dropped(const takt_sub *sub)
{
	/* The handle is used by one thread at a time (ipc.h): the one that
	 * takes, which may bring its connection list up to date here. */
	takt_sub *s = (takt_sub *)sub;
	uint64_t n;

	if (!s)
		return 0;
	/* Each publisher counts what this subscriber missed on its own
	 * connection (a word only it writes); connections that left were
	 * added up as they left. relaxed: statistics. Q0: the connections
	 * are read inside the bracket, so none is reused meanwhile. */
	q0_enter(&s->seg.live->active, s->node->q0_light);
	sub_check_conns(s);
	n = s->dropped_gone;
	for (unsigned i = 0; i < s->n_conns; i++)
		n += atomic_load_explicit(&s->conns[i]->ring.pw->dropped, memory_order_relaxed);
	q0_exit(&s->seg.live->active);
	return n;
}

/* P1L: whether a publisher we take from publishes without a fence. */
static bool sub_pubs_light(const takt_sub *s)
{
	for (unsigned i = 0; i < s->n_conns; i++)
		/* acquire: pairs with its release of 0 when it went heavy (its
		 * light pushes are then visible to our re-check). */
		if (atomic_load_explicit(&s->conns[i]->pool.live->light, memory_order_acquire))
			return true;
	return false;
}

static int sub_ready(takt_sub *s)
{
	for (unsigned i = 0; i < s->n_conns; i++)
		if (ring_nonempty(&s->conns[i]->ring))
			return 1;
	return 0;
}

/* Parks (once) and re-checks: 1 when samples wait, 0 when armed. */
static int sub_arm_check(takt_sub *s)
{
	int ready;

	q0_enter(&s->seg.live->active, s->node->q0_light); /* Q0 */
	TAKT_FAULT("arm_before_park");
	if (!s->armed) {
		/* P0: park (odd), fence, re-check the rings; pairs with the
		 * publisher's P1 (push, fence, load park). */
		sub_park_set(s, true, memory_order_seq_cst);
		TAKT_PROBE1(park, s->index);
	}
	atomic_thread_fence(memory_order_seq_cst);
	/* P0: the connections too, after the fence: a publishing thread
	 * pushes into a new connection only after it saw the mark, which our
	 * agent stores after READY, so either we adopt it here and see the
	 * push, or the publisher's park load comes after our park store
	 * (pairs with its P1 fence). Looked at before parking, a connection
	 * that arrives in between is missed by both. History its node pushed
	 * before READY is our agent's to wake us for (P4, sub_agent_wake). */
	sub_check_conns(s);
	/* P1L: a light publisher did not fence after its pushes: fence for it
	 * on every CPU before the re-check (pub.c). Refused by the kernel, a
	 * push may be missed until the next one: takt_sub_wait then sleeps in
	 * slices of UNFENCED_SLICE_MS and looks again. */
	s->unfenced = sub_pubs_light(s) && !takt_membarrier();
	ready = sub_ready(s);
	/* Not going to sleep after all: unpark so publishers do not write the
	 * eventfd while we take (one that saw us parked writes and counted
	 * it: the next arm reads it). */
	if (ready) {
		sub_park_set(s, false, memory_order_relaxed);
		TAKT_PROBE1(unpark, s->index);
	}
	q0_exit(&s->seg.live->active); /* Q0 */
	return ready;
}

int takt_sub_arm(takt_sub *sub)
{
	if (!sub)
		return -EINVAL;
	if (!sub->armed)
		sub_efd_drain(sub); /* P2: no stale count under the new flag */
	return sub_arm_check(sub);
}

static int sub_ready_now(takt_sub *s)
{
	int ready;

	q0_enter(&s->seg.live->active, s->node->q0_light); /* Q0 */
	sub_check_conns(s);
	ready = sub_ready(s);
	q0_exit(&s->seg.live->active); /* Q0 */
	return ready;
}

int sub_sleep(takt_sub *sub, int64_t timeout_ns)
{
	struct epoll_event ev;
	int ms = timeout_ns < 0 ? -1 : timeout_ns / 1000000 >= INT_MAX ? INT_MAX : (int)((timeout_ns + 999999) / 1000000);
	int r;

	if (sub->unfenced && (ms < 0 || ms > UNFENCED_SLICE_MS))
		ms = UNFENCED_SLICE_MS; /* P1L: looked at again, see sub_arm_check */
	r = epoll_wait(sub->wait_ep, &ev, 1, ms);
	if (r < 0 && errno == EINTR)
		return -EINTR;
	if (r > 0) { /* P0: woken; the count stays until the next arm drains it (P2) */
		TAKT_PROBE1(unpark, sub->index);
		sub_park_set(sub, false, memory_order_relaxed);
		return sub_ready_now(sub); /* as takt_sub_wait: no second arm for a sample */
	}
	return 0;
}

/* Sleeps in a private edge-triggered epoll: every eventfd write is one
 * edge, so the wake-up needs no read() to re-arm. */
int takt_sub_wait(takt_sub *sub, int64_t timeout_ns)
{
	uint64_t deadline = timeout_ns < 0 ? UINT64_MAX : takt_now_ns() + (uint64_t)timeout_ns;

	if (!sub)
		return -EINVAL;
	for (;;) {
		struct epoll_event ev;
		uint64_t now;
		int r = sub_arm_check(sub), ms;

		if (r != 0)
			return 0; /* stays armed; the next take disarms */
		now = takt_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		ms = deadline == UINT64_MAX ? -1 : (int)((deadline - now + 999999) / 1000000);
		if (sub->unfenced && (ms < 0 || ms > UNFENCED_SLICE_MS))
			ms = UNFENCED_SLICE_MS; /* P1L: looked at again, see sub_arm_check */
		r = epoll_wait(sub->wait_ep, &ev, 1, ms);
		if (r < 0 && errno == EINTR)
			return -EINTR;
		if (r > 0) {
			/* P0: a publisher saw us parked and wrote the eventfd;
			 * the edge woke us, the count stays until the next arm
			 * drains it (P2). */
			TAKT_PROBE1(unpark, sub->index);
			sub_park_set(sub, false, memory_order_relaxed);
			if (sub_ready_now(sub))
				return 0;
		}
	}
}
