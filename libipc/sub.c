/* sub.c - subscribers: take, release, wait, history for late joiners.
 *
 * A subscriber reads one SPSC ring per connected publisher, round-robin, and
 * records every taken chunk in its port's held list before the pop commits
 * (ring.h), so the broker can return it if this process dies.
 *
 * Parking (P0): to sleep, a subscriber sets parked = 1, fences, re-checks
 * its rings and only then blocks on its eventfd. A publisher pushes, fences
 * and writes the eventfd only if it exchanges parked from 1 to 0 (pub.c,
 * P1). A subscriber that never parks costs publishers no syscall.
 */
#include "client.h"
#include "pool.h"
#include "probes.h"

#include <errno.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sub_conn {
	uint32_t conn;
	uint32_t incarnation;
	uint32_t pub;
	uint64_t pub_id; /* the publisher's id, for takt_sample_info */
	struct ring_cons ring;
};

struct takt_sub {
	takt_node *node;
	char topic[TAKT_NAME_MAX]; /* for probes */
	struct takt_sub *next;
	struct takt_sub_port *port;
	uint32_t index;
	int efd;
	uint32_t held_max;
	uint32_t history;
	uint32_t conn_gen;
	unsigned n_conns, rr;
	bool armed;
	uint32_t owed;  /* P2: publishers' eventfd writes not read yet */
	uint32_t broker_wakes_seen; /* P3: the broker's writes we have read */
	int wait_ep;    /* private epoll, edge-triggered on efd: takt_sub_wait */
	struct sub_conn conns[TAKT_MAX_PUBS_PER_TOPIC];
	uint32_t held[TAKT_MAX_HELD];    /* mirror of port->held */
	uint32_t pending[TAKT_MAX_HELD]; /* history samples (held), oldest first */
	unsigned n_pending;
};

static int sub_conn_read(takt_sub *s, uint32_t ci, struct sub_conn *sc)
{
	const struct seg_view *v = &s->node->v;
	struct takt_conn *c;

	if (ci >= v->lim.connections)
		return -EBADMSG;
	c = &v->conns[ci];
	/* acquire: pairs with the broker's release of state after filling the conn. */
	uint32_t st = atomic_load_explicit(&c->state, memory_order_acquire);

	if ((st != SLOT_ACTIVE && st != SLOT_ORPHAN) || c->sub != s->index ||
	    c->pub >= v->lim.publishers || c->mask >= v->lim.queue_depth_max || (c->mask & (c->mask + 1)))
		return -EBADMSG;
	sc->conn = ci;
	/* relaxed: ordered by the acquire of state above. */
	sc->incarnation = atomic_load_explicit(&c->incarnation, memory_order_relaxed);
	sc->pub = c->pub;
	/* relaxed: the broker wrote the id before it published the connection
	 * (ordered by the acquire of state above). */
	sc->pub_id = v->pubs[c->pub].id;
	ring_cons_init(&sc->ring, c, seg_ring_slots(v, ci), c->mask);
	return 0;
}

static int sub_held_free_slot(const takt_sub *s)
{
	for (unsigned k = 0; k < s->held_max; k++)
		if (s->held[k] == TAKT_NONE)
			return (int)k;
	return -1;
}

static void sub_hold(takt_sub *s, unsigned k, uint32_t c)
{
	s->held[k] = c;
	/* relaxed: read by the broker only after this process died or closed. */
	atomic_store_explicit(&s->port->held[k], c, memory_order_relaxed);
}

/* Seq of the oldest sample waiting in a ring, or UINT64_MAX. A peek without
 * a reference: a concurrent drop-oldest may recycle the chunk, which only
 * makes the history window smaller. */
static uint64_t sub_ring_first_seq(const struct sub_conn *sc)
{
	struct ring_entry e;

	return ring_peek(&sc->ring, &e) == 0 ? e.seq : UINT64_MAX;
}

static void sub_pending_insert(takt_sub *s, uint32_t c, uint64_t seq)
{
	const struct seg_view *v = &s->node->v;
	unsigned i = s->n_pending;

	while (i > 0 && seg_chunk_header(v, s->pending[i - 1])->seq > seq) {
		s->pending[i] = s->pending[i - 1];
		i--;
	}
	s->pending[i] = c;
	s->n_pending++;
}

/* Pins one history entry of sequence seq; 0 when it is now pending. */
static int sub_pull_one(takt_sub *s, struct takt_pub_port *pp, uint32_t ph, uint64_t seq)
{
	const struct seg_view *v = &s->node->v;
	/* H0: acquire pairs with the publisher's release of the entry. */
	uint64_t w = atomic_load_explicit(&pp->hist[(seq - 1) % ph], memory_order_acquire);
	uint32_t c = (uint32_t)w;
	int k = sub_held_free_slot(s);

	if (k < 0 || !w || !seg_chunk_ok(v, c) || !chunk_pin(v, c, (uint32_t)(w >> 32)))
		return -1;
	if (seg_chunk_header(v, c)->seq != seq) {
		chunk_unref(v, c); /* overwritten by a newer sample meanwhile */
		return -1;
	}
	/* Pinned before recorded: a crash between the two leaks one reference
	 * instead of letting the broker drop one we never took. */
	sub_hold(s, (unsigned)k, c);
	sub_pending_insert(s, c, seq);
	return 0;
}

/* Late joiner: the newest samples published before the connection, oldest
 * first, up to the requested history. Samples in the ring are newer. */
static void sub_pull_history(takt_sub *s, struct sub_conn *sc)
{
	const struct seg_view *v = &s->node->v;
	struct takt_pub_port *pp = &v->pubs[sc->pub];
	uint32_t ph = pp->history;
	uint64_t last, hi, lo, want;

	if (ph == 0 || ph > v->lim.history_max)
		return;
	want = s->history < ph ? s->history : ph;
	last = atomic_load_explicit(&pp->last_seq, memory_order_acquire); /* H1 */
	hi = sub_ring_first_seq(sc);
	hi = hi != 0 && hi - 1 < last ? hi - 1 : last;
	if (hi == 0 || hi == UINT64_MAX)
		return; /* nothing yet, or garbage from shared memory */
	lo = hi >= want ? hi - want + 1 : 1;
	for (uint64_t n = 0; n < want && lo + n <= hi; n++) /* bounded by want */
		sub_pull_one(s, pp, ph, lo + n);
}

static void sub_refresh(takt_sub *s, uint32_t gen)
{
	const struct seg_view *v = &s->node->v;
	struct sub_conn next[TAKT_MAX_PUBS_PER_TOPIC];
	unsigned n = 0;

	for (uint32_t i = 0; i < v->lim.pubs_per_topic; i++) {
		uint32_t ci = atomic_load_explicit(&s->port->conns[i], memory_order_relaxed);
		unsigned j;

		if (ci == TAKT_NONE)
			continue;
		for (j = 0; j < s->n_conns && !conn_same(v, s->conns[j].conn, s->conns[j].incarnation, ci); j++)
			;
		if (j < s->n_conns) {
			next[n++] = s->conns[j];
		} else if (sub_conn_read(s, ci, &next[n]) == 0) {
			if (s->history)
				sub_pull_history(s, &next[n]);
			n++;
		}
	}
	memcpy(s->conns, next, n * sizeof(next[0]));
	s->n_conns = n;
	if (s->rr >= n)
		s->rr = 0;
	s->conn_gen = gen;
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

int takt_sub_open(takt_node *node, const struct takt_sub_opts *opts, takt_sub **out)
{
	struct msg_sub_open req = {0};
	struct proto_reply rep;
	unsigned n_fds = 0;
	takt_sub *s;
	int efd = -1, r;

	if (!node || !opts || !out || node_copy_name(req.topic, opts->topic) < 0 ||
	    (unsigned)opts->overflow > TAKT_OVERFLOW_REJECT)
		return -EINVAL;
	if (opts->type_name && node_copy_name(req.type_name, opts->type_name) < 0)
		return -EINVAL;
	if (opts->queue_depth > node->v.lim.queue_depth_max || opts->history > node->v.lim.history_max)
		return -EINVAL;
	req.queue_depth = opts->queue_depth;
	req.overflow = (uint32_t)opts->overflow;
	req.history = opts->history;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	r = node_call(node, MSG_SUB_OPEN, &req, sizeof(req), &rep, sizeof(rep), &efd, 1, &n_fds);
	if (r == 0 && (n_fds != 1 || rep.index >= node->v.lim.subscribers))
		r = -EPROTO;
	if (r < 0) {
		if (n_fds)
			close(efd);
		free(s);
		return r;
	}
	s->wait_ep = epoll_create1(EPOLL_CLOEXEC);
	if (s->wait_ep < 0 || epoll_ctl(s->wait_ep, EPOLL_CTL_ADD, efd,
					&(struct epoll_event){.events = EPOLLIN | EPOLLET}) < 0) {
		r = -errno;
		if (s->wait_ep >= 0)
			close(s->wait_ep);
		node_close_index(node, MSG_SUB_CLOSE, rep.index);
		close(efd);
		free(s);
		return r;
	}
	s->node = node;
	memcpy(s->topic, req.topic, TAKT_NAME_MAX);
	s->index = rep.index;
	s->port = &node->v.subs[s->index];
	s->efd = efd;
	s->held_max = node->v.lim.held_max;
	s->history = opts->history;
	for (unsigned k = 0; k < TAKT_MAX_HELD; k++)
		s->held[k] = TAKT_NONE;
	s->conn_gen = UINT32_MAX;
	q0_enter(&s->port->active, s->node->q0_light); /* Q0 */
	sub_check_conns(s); /* joining now: history is pinned at open */
	q0_exit(&s->port->active); /* Q0 */
	NODE_LIST_ADD_LOCKED(node, node->subs, s);
	*out = s;
	return 0;
}

void takt_sub_close(takt_sub *sub)
{
	if (!sub)
		return;
	/* The broker releases our held samples and drains our rings. */
	node_close_index(sub->node, MSG_SUB_CLOSE, sub->index);
	close(sub->efd);
	close(sub->wait_ep);
	NODE_LIST_DEL_LOCKED(sub->node, sub->node->subs, takt_sub, sub);
	free(sub);
}

static void sub_fill_header(takt_sub *s, uint32_t c, const void **payload, struct takt_sample_info *info)
{
	const struct takt_chunk_header *h = seg_chunk_header(&s->node->v, c);

	*payload = seg_chunk_payload(&s->node->v, c);
	TAKT_PROBE4(take, s->topic, s->index, h->publisher_id, h->seq);
	if (info) {
		info->seq = h->seq;
		info->publish_ns = h->publish_ns;
		info->publisher_id = h->publisher_id;
		info->size = h->size;
	}
}

/* P2: every eventfd write is owed to us by someone we know of: a
 * publisher that took our parked flag (we see the flag gone: `owed`) or
 * the broker waking us for a publisher that died (P3: `broker_wakes`).
 * Reads return how many writes landed. A write that lands after the read
 * meant for it leaves a stale count, and a level-triggered epoll of the
 * caller would spin on empty takes; so as long as any write is owed and
 * not yet read, the next arm reads again before it raises the flag. When
 * nothing is owed no read is made: a busy subscriber costs no syscall. */
static void sub_efd_drain(takt_sub *s)
{
	/* P3: acquire pairs with the broker's release bump before its write. */
	uint32_t bw = atomic_load_explicit(&s->port->broker_wakes, memory_order_acquire);
	uint32_t from_broker = bw - s->broker_wakes_seen;
	uint64_t cnt;

	if ((s->owed == 0 && from_broker == 0) || read(s->efd, &cnt, sizeof(cnt)) != sizeof(cnt))
		return; /* nothing owed, or owed writes still in flight */
	if (cnt < from_broker) {
		s->broker_wakes_seen += (uint32_t)cnt;
		return;
	}
	s->broker_wakes_seen = bw;
	cnt -= from_broker;
	s->owed = cnt < s->owed ? s->owed - (uint32_t)cnt : 0;
}

/* A wake-up was consumed or is no longer needed: clear our parked flag. */
static void sub_disarm(takt_sub *s)
{
	s->armed = false;
	/* P0: if a publisher already exchanged it to 0, it wrote (or is about
	 * to write) the eventfd: drain it so the fd is not left readable. */
	if (atomic_exchange_explicit(&s->port->parked, 0, memory_order_acq_rel) == 0) {
		s->owed++;
		sub_efd_drain(s);
	}
}

/* A popped entry is usable if its chunk exists and the size fits the
 * chunk's class: another process wrote it, so it is checked like input. */
static bool sub_entry_ok(const struct seg_view *v, const struct ring_entry *e)
{
	return seg_chunk_ok(v, e->chunk) && e->size <= v->pool[seg_chunk_class(v, e->chunk)].payload_size;
}

/* Pops from the rings, round-robin, and records the chunk in held slot k;
 * 0 and *out, or -EAGAIN. */
static int sub_pop(takt_sub *s, unsigned k, struct ring_entry *out, uint64_t *ret_pub_id)
{
	const struct seg_view *v = &s->node->v;

	for (unsigned n = 0; n < s->n_conns; n++) {
		struct sub_conn *sc = &s->conns[(s->rr + n) % s->n_conns];

		while (ring_pop_shared(&sc->ring, out) == 0) {
			if (sub_entry_ok(v, out)) {
				sub_hold(s, k, out->chunk);
				s->rr = (s->rr + n + 1) % s->n_conns;
				*ret_pub_id = sc->pub_id;
				return 0;
			}
			/* A bad entry from shared memory: drop it, it costs only itself. */
			if (seg_chunk_ok(v, out->chunk))
				chunk_unref(v, out->chunk);
		}
	}
	return -EAGAIN;
}

int takt_sub_take(takt_sub *sub, const void **payload, struct takt_sample_info *info)
{
	struct ring_entry e;
	uint64_t pub_id;
	int k, r;

	if (!sub || !payload)
		return -EINVAL;
	if (sub->armed)
		sub_disarm(sub);
	/* Q0: pairs with the broker's conn removal (registry.c, client.h). */
	q0_enter(&sub->port->active, sub->node->q0_light);
	sub_check_conns(sub);
	if (sub->n_pending) {
		uint32_t c = sub->pending[0];

		memmove(sub->pending, sub->pending + 1, --sub->n_pending * sizeof(c));
		sub_fill_header(sub, c, payload, info);
		r = 0;
	} else if ((k = sub_held_free_slot(sub)) < 0) {
		r = -ENOBUFS;
	} else if ((r = sub_pop(sub, (unsigned)k, &e, &pub_id)) == 0) {
		TAKT_PROBE4(take, sub->topic, sub->index, pub_id, e.seq);
		*payload = seg_chunk_payload(&sub->node->v, e.chunk);
		if (info)
			*info = (struct takt_sample_info){.seq = e.seq, .publish_ns = e.publish_ns,
							  .publisher_id = pub_id, .size = e.size};
	}
	q0_exit(&sub->port->active); /* Q0 */
	return r;
}

void takt_sub_release(takt_sub *sub, const void *payload)
{
	uint32_t c;

	if (!sub || !payload)
		return;
	c = seg_chunk_of(&sub->node->v, payload);
	if (c == TAKT_NONE)
		return;
	for (unsigned k = 0; k < sub->held_max; k++) {
		if (sub->held[k] != c)
			continue;
		for (unsigned i = 0; i < sub->n_pending; i++)
			if (sub->pending[i] == c)
				return; /* not handed out yet */
		/* Cleared before the unref: a crash between the two leaks one
		 * reference instead of letting the broker drop it twice. */
		sub->held[k] = TAKT_NONE;
		atomic_store_explicit(&sub->port->held[k], TAKT_NONE, memory_order_relaxed);
		chunk_unref(&sub->node->v, c);
		return;
	}
}

int takt_sub_fd(const takt_sub *sub)
{
	return sub ? sub->efd : -EINVAL;
}

uint64_t takt_sub_dropped(const takt_sub *sub)
{
	/* relaxed: a statistic. */
	return sub ? atomic_load_explicit(&sub->port->dropped, memory_order_relaxed) : 0;
}

static int sub_ready(takt_sub *s)
{
	if (s->n_pending)
		return 1;
	for (unsigned i = 0; i < s->n_conns; i++)
		if (ring_nonempty(&s->conns[i].ring))
			return 1;
	return 0;
}

/* Raises parked (once) and re-checks: 1 when samples wait, 0 when armed. */
static int sub_arm_check(takt_sub *s)
{
	int ready;

	q0_enter(&s->port->active, s->node->q0_light); /* Q0 */
	sub_check_conns(s);
	if (!s->armed) {
		/* P0: raise the flag, fence, re-check the rings; pairs with the
		 * publisher's P1 (push, fence, load parked). */
		atomic_store_explicit(&s->port->parked, 1, memory_order_seq_cst);
		s->armed = true;
		TAKT_PROBE1(park, s->index);
	}
	atomic_thread_fence(memory_order_seq_cst);
	ready = sub_ready(s);
	/* Not going to sleep after all: lower the flag again so publishers do
	 * not write the eventfd while we take. If one already took it (0), it
	 * writes; stay armed so the next take drains that write. */
	if (ready && atomic_exchange_explicit(&s->port->parked, 0, memory_order_acq_rel) == 1) {
		s->armed = false;
		TAKT_PROBE1(unpark, s->index);
	}
	q0_exit(&s->port->active); /* Q0 */
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

	q0_enter(&s->port->active, s->node->q0_light); /* Q0 */
	sub_check_conns(s);
	ready = sub_ready(s);
	q0_exit(&s->port->active); /* Q0 */
	return ready;
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
		int r = sub_arm_check(sub);

		if (r != 0)
			return 0; /* stays armed; the next take disarms */
		now = takt_now_ns();
		if (now >= deadline)
			return -ETIMEDOUT;
		r = epoll_wait(sub->wait_ep, &ev, 1,
			       deadline == UINT64_MAX ? -1 : (int)((deadline - now + 999999) / 1000000));
		if (r < 0 && errno == EINTR)
			return -EINTR;
		if (r > 0) {
			/* P0: a publisher cleared parked and wrote the eventfd. */
			TAKT_PROBE1(unpark, sub->index);
			sub->armed = false;
			/* P2: a publisher took the flag (0) and wrote; the edge
			 * woke us, the count stays until the next arm drains it. */
			if (atomic_exchange_explicit(&sub->port->parked, 0, memory_order_acq_rel) == 0)
				sub->owed++;
			if (sub_ready_now(sub))
				return 0;
		}
	}
}
