/* pub.c - publishers: loan, publish, discard.
 *
 * A publisher keeps a process-local mirror of its connections (one SPSC ring
 * per subscriber) and refreshes it when the broker bumps conn_gen. Publish:
 *   1. take references for every subscriber (and history) up front, since a
 *      subscriber may release before we finish pushing;
 *   2. push the chunk index into each ring, applying the subscriber's
 *      overflow policy when a ring is full;
 *   3. record it in history, drop the loan's reference;
 *   4. fence, then write the eventfd of each subscriber that parked.
 * Steps 1-3 make no syscall; step 4 only for parked subscribers. The
 * eventfds come from the node's agent, which receives them from the broker
 * (G0, node.c): publish never asks the broker for anything.
 */
#include "client.h"
#include "pool.h"
#include "probes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BLOCK_TIMEOUT_DEFAULT_NS 100000000ull

struct pub_conn {
	uint32_t conn;
	uint32_t incarnation;
	uint32_t sub;
	uint32_t overflow;
	struct takt_sub_port *sp;
	struct ring_prod ring;
};

struct takt_pub {
	takt_node *node;
	char topic[TAKT_NAME_MAX]; /* for probes */
	struct takt_pub *next;
	struct takt_pub_port *port;
	uint32_t index;
	uint64_t id;       /* unique in the domain, never reused (registry.c, I0) */
	uint32_t pool_class;
	uint64_t max_payload;
	uint32_t history;
	uint32_t loans_max;
	uint64_t seq;
	uint64_t block_timeout_ns;
	uint32_t conn_gen;
	unsigned n_conns;
	struct pub_conn conns[TAKT_MAX_SUBS_PER_TOPIC];
	uint32_t loan_chunk[TAKT_MAX_LOANS]; /* mirror of port->loans */
	uint32_t loan_gen[TAKT_MAX_LOANS];
};

int takt_pub_open(takt_node *node, const struct takt_pub_opts *opts, takt_pub **out)
{
	struct msg_pub_open req = {0};
	struct msg_pub_open_reply rep;
	takt_pub *p;
	int r;

	if (!node || !opts || !out || node_copy_name(req.topic, opts->topic) < 0)
		return -EINVAL;
	if (opts->type_name && node_copy_name(req.type_name, opts->type_name) < 0)
		return -EINVAL;
	if (opts->history > node->v.lim.history_max)
		return -EINVAL;
	req.max_payload = opts->max_payload;
	req.history = opts->history;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = node_call(node, MSG_PUB_OPEN, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL);
	if (r == 0 && (rep.r.index >= node->v.lim.publishers || rep.pool_class >= node->v.lim.n_classes ||
		       rep.id == 0))
		r = -EPROTO;
	if (r < 0) {
		free(p);
		return r;
	}
	p->node = node;
	memcpy(p->topic, req.topic, TAKT_NAME_MAX);
	p->index = rep.r.index;
	p->id = rep.id;
	p->port = &node->v.pubs[p->index];
	p->pool_class = rep.pool_class;
	p->max_payload = opts->max_payload;
	p->history = opts->history;
	p->loans_max = node->v.lim.loans_max;
	p->block_timeout_ns = opts->block_timeout_ns ? opts->block_timeout_ns : BLOCK_TIMEOUT_DEFAULT_NS;
	p->conn_gen = UINT32_MAX; /* forces the first refresh */
	for (unsigned i = 0; i < TAKT_MAX_LOANS; i++)
		p->loan_chunk[i] = TAKT_NONE;
	NODE_LIST_ADD_LOCKED(node, node->pubs, p);
	*out = p;
	return 0;
}

unsigned pub_port_indices(takt_node *n, uint32_t *out, unsigned max)
{
	unsigned k = 0;

	pthread_mutex_lock(&n->ports_lock);
	for (const takt_pub *p = n->pubs; p && k < max; p = p->next)
		out[k++] = p->index;
	pthread_mutex_unlock(&n->ports_lock);
	return k;
}

void takt_pub_close(takt_pub *pub)
{
	if (!pub)
		return;
	/* The broker returns loans and history to the pools and retires the
	 * connections; we must not touch the port after this request. */
	node_close_index(pub->node, MSG_PUB_CLOSE, pub->index);
	NODE_LIST_DEL_LOCKED(pub->node, pub->node->pubs, takt_pub, pub);
	free(pub);
}

uint64_t takt_pub_id(const takt_pub *pub)
{
	return pub ? pub->id : 0;
}

/* Reads one connection the broker listed for us; 0 if it is usable. */
static int pub_conn_read(takt_pub *p, uint32_t ci, struct pub_conn *pc)
{
	const struct seg_view *v = &p->node->v;
	struct takt_conn *c;

	if (ci >= v->lim.connections)
		return -EBADMSG;
	c = &v->conns[ci];
	/* acquire: pairs with the broker's release of state after filling the conn. */
	if (atomic_load_explicit(&c->state, memory_order_acquire) != SLOT_ACTIVE || c->pub != p->index ||
	    c->sub >= v->lim.subscribers || c->mask >= v->lim.queue_depth_max ||
	    (c->mask & (c->mask + 1)) || c->depth == 0 || c->depth - 1 > c->mask ||
	    c->overflow > TAKT_OVERFLOW_REJECT)
		return -EBADMSG;
	pc->conn = ci;
	/* relaxed: ordered by the acquire of state above. */
	pc->incarnation = atomic_load_explicit(&c->incarnation, memory_order_relaxed);
	pc->sub = c->sub;
	pc->overflow = c->overflow;
	pc->sp = &v->subs[c->sub];
	ring_prod_init(&pc->ring, c, seg_ring_slots(v, ci), c->mask, c->depth);
	return 0;
}

/* W1: the broker changed our connections. Keep the rings we still have
 * (their local head is ours), bind new ones, drop removed ones. */
static void pub_refresh(takt_pub *p, uint32_t gen)
{
	const struct seg_view *v = &p->node->v;
	struct pub_conn next[TAKT_MAX_SUBS_PER_TOPIC];
	unsigned n = 0;

	for (uint32_t i = 0; i < v->lim.subs_per_topic; i++) {
		uint32_t ci = atomic_load_explicit(&p->port->conns[i], memory_order_relaxed);
		unsigned j;

		if (ci == TAKT_NONE)
			continue;
		for (j = 0; j < p->n_conns && !conn_same(v, p->conns[j].conn, p->conns[j].incarnation, ci); j++)
			;
		if (j < p->n_conns)
			next[n++] = p->conns[j];
		else if (pub_conn_read(p, ci, &next[n]) == 0)
			n++;
	}
	memcpy(p->conns, next, n * sizeof(next[0]));
	p->n_conns = n;
	p->conn_gen = gen;
}

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

int takt_pub_loan(takt_pub *pub, size_t size, void **payload)
{
	const struct seg_view *v;
	uint32_t c;
	unsigned i;

	if (!pub || !payload)
		return -EINVAL;
	if (size > pub->max_payload)
		return -EMSGSIZE;
	for (i = 0; i < pub->loans_max && pub->loan_chunk[i] != TAKT_NONE; i++)
		;
	if (i == pub->loans_max)
		return -ENOBUFS;
	v = &pub->node->v;
	c = pool_pop_mpmc(v, pub->pool_class);
	if (c == TAKT_NONE)
		return -ENOBUFS;
	pub->loan_gen[i] = chunk_loan_init(v, c);
	pub->loan_chunk[i] = c;
	/* relaxed: read by the broker only after we died or closed. */
	atomic_store_explicit(&pub->port->loans[i], c, memory_order_relaxed);
	seg_chunk_header(v, c)->size = (uint32_t)size;
	*payload = seg_chunk_payload(v, c);
	return 0;
}

static int pub_find_loan(const takt_pub *pub, const void *payload, uint32_t *ret_chunk)
{
	uint32_t c = seg_chunk_of(&pub->node->v, payload);

	if (c == TAKT_NONE)
		return -EINVAL;
	for (unsigned i = 0; i < pub->loans_max; i++)
		if (pub->loan_chunk[i] == c) {
			*ret_chunk = c;
			return (int)i;
		}
	return -EINVAL;
}

static void pub_end_loan(takt_pub *pub, unsigned i)
{
	uint32_t c = pub->loan_chunk[i];

	pub->loan_chunk[i] = TAKT_NONE;
	atomic_store_explicit(&pub->port->loans[i], TAKT_NONE, memory_order_relaxed);
	chunk_unref(&pub->node->v, c);
}

void takt_pub_discard(takt_pub *pub, void *payload)
{
	uint32_t c;
	int i;

	if (!pub)
		return;
	i = pub_find_loan(pub, payload, &c);
	if (i >= 0)
		pub_end_loan(pub, (unsigned)i);
}

static void pub_count_drop(struct pub_conn *pc)
{
	/* relaxed: a statistic; several publishers may add concurrently. */
	atomic_fetch_add_explicit(&pc->sp->dropped, 1, memory_order_relaxed);
}

/* Pushes c into one ring under the subscriber's overflow policy. 1 when
 * delivered; 0 when not (the caller drops that reference). */
static int pub_push(takt_pub *p, struct pub_conn *pc, const struct ring_entry *e)
{
	const struct seg_view *v = &p->node->v;
	uint64_t deadline = 0;

	for (int tries = 0; tries < 64; tries++) {
		uint32_t old;

		if (ring_push_spsc(&pc->ring, e) == 0)
			return 1;
		if (pc->overflow == TAKT_OVERFLOW_REJECT)
			break;
		if (pc->overflow == TAKT_OVERFLOW_BLOCK) {
			if (!deadline) /* one bound per publish, however often we are woken */
				deadline = takt_now_ns() + p->block_timeout_ns;
			if (ring_wait_room(&pc->ring, deadline) < 0)
				break;
			continue;
		}
		old = ring_steal_oldest(&pc->ring);
		if (old == TAKT_NONE)
			continue; /* the subscriber made room meanwhile */
		if (seg_chunk_ok(v, old))
			chunk_unref(v, old);
		pub_count_drop(pc);
	}
	pub_count_drop(pc);
	return 0;
}

static void pub_history_put(takt_pub *p, uint32_t c, uint32_t gen)
{
	const struct seg_view *v = &p->node->v;
	uint32_t slot = (uint32_t)((p->seq - 1) % p->history);
	/* H0: release pairs with a history reader's acquire load of the entry. */
	uint64_t old = atomic_exchange_explicit(&p->port->hist[slot], (uint64_t)gen << 32 | c,
						memory_order_acq_rel);

	/* H1: release pairs with the reader's acquire of last_seq. */
	atomic_store_explicit(&p->port->last_seq, p->seq, memory_order_release);
	if (old && seg_chunk_ok(v, (uint32_t)old))
		chunk_unref(v, (uint32_t)old);
}

static void pub_notify(takt_pub *p, const unsigned char *pushed, uint64_t seq)
{
	/* P1: pairs with the subscriber's parked store + fence before it
	 * re-checks its rings (sub.c, P0): either it sees our head, or we see
	 * parked == 1. */
	atomic_thread_fence(memory_order_seq_cst);
	for (unsigned i = 0; i < p->n_conns; i++) {
		struct pub_conn *pc = &p->conns[i];
		uint64_t one = 1;
		int efd;

		/* relaxed load first: keeps the line shared while nobody parks. */
		if (!pushed[i] || !atomic_load_explicit(&pc->sp->parked, memory_order_relaxed))
			continue;
		/* G0: no fd yet (its push is on the way): leave the flag to the
		 * agent, which wakes the subscriber when it installs the fd. */
		efd = node_conn_efd(p->node, pc->conn, pc->incarnation);
		if (efd < 0 || !atomic_exchange_explicit(&pc->sp->parked, 0, memory_order_acq_rel))
			continue;
		TAKT_PROBE3(notify, pc->sub, p->id, seq);
		if (write(efd, &one, sizeof(one)) < 0) {
			/* eventfd cannot overflow at one write per park; nothing to do */
		}
	}
}

/* Hands the loan's reference over to n new holders with one store: until
 * the first ring push nobody else can see the chunk. The loan slot is
 * cleared first, so a crash in between leaks the chunk rather than letting
 * the broker drop a reference twice. */
static void pub_hand_over(takt_pub *pub, unsigned li, uint32_t c, uint32_t n)
{
	const struct seg_view *v = &pub->node->v;

	pub->loan_chunk[li] = TAKT_NONE;
	atomic_store_explicit(&pub->port->loans[li], TAKT_NONE, memory_order_relaxed);
	if (n == 0) {
		chunk_unref(v, c); /* nobody to hand it to: back to the pool */
		return;
	}
	/* L0: release orders the loan slot's clearing above before the new
	 * count, for the broker reading both after we died: it may see the
	 * slot cleared and the count not yet set (the chunk leaks), never the
	 * count set and the slot still naming the chunk (it would drop a
	 * reference the subscribers own). Subscribers see the count through
	 * the ring push (R0, ring.c). */
	atomic_store_explicit(&v->chunks[c].refs, (uint64_t)pub->loan_gen[li] << 32 | n,
			      memory_order_release);
}

int takt_pub_publish(takt_pub *pub, void *payload)
{
	const struct seg_view *v;
	unsigned char pushed[TAKT_MAX_SUBS_PER_TOPIC];
	struct takt_chunk_header *h;
	struct ring_entry e;
	uint32_t c, gen;
	int li, reached = 0;

	if (!pub)
		return -EINVAL;
	li = pub_find_loan(pub, payload, &c);
	if (li < 0)
		return li;
	v = &pub->node->v;
	/* Q0: pairs with the broker's conn removal (registry.c, client.h). */
	q0_enter(&pub->port->active, pub->node->q0_light);
	pub_check_conns(pub);
	h = seg_chunk_header(v, c);
	e = (struct ring_entry){.chunk = c, .size = h->size, .seq = ++pub->seq, .publish_ns = takt_now_ns()};
	/* before the pushes: an awake subscriber may take the sample at once */
	TAKT_PROBE3(publish, pub->topic, pub->id, e.seq);
	h->seq = e.seq; /* the header serves history readers and the broker */
	h->publish_ns = e.publish_ns;
	h->publisher_id = pub->id;
	h->chunk = c;
	gen = pub->loan_gen[li];
	pub_hand_over(pub, (unsigned)li, c, pub->n_conns + (pub->history ? 1 : 0));
	for (unsigned i = 0; i < pub->n_conns; i++) {
		pushed[i] = (unsigned char)pub_push(pub, &pub->conns[i], &e);
		if (!pushed[i])
			chunk_unref(v, c);
		reached += pushed[i];
	}
	if (pub->history)
		pub_history_put(pub, c, gen);
	pub_notify(pub, pushed, e.seq);
	q0_exit(&pub->port->active); /* Q0 */
	return reached;
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
