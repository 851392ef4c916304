/* event.c - named wake-ups with ids (notify / listen): every listener gets
 * every id.
 *
 * An event handle that asks for ids or their eventfd becomes a listener
 * (EVENT_LISTEN): the broker creates its queue segment and eventfd and
 * pushes both to every node with the event open (node.c), so those nodes'
 * notifies reach it. A queue has one lane per process index, an SPSC ring
 * of ids: the notifying process is the producer of its own lane (its
 * threads take turns, ev_turn), the listener the consumer of all. No lane
 * has two writing processes, so a notifier that dies in the middle of a
 * push leaves nothing behind that could stall the queue: its half-written
 * id was never published (a process that later gets its index carries on
 * from the head it left). A hint word tells the listener which lanes may
 * hold ids, so a take looks at those only.
 *
 * Pairings:
 *   E0 notify: id into lane slot head (relaxed), head + 1 (release), hint
 *      bit (fetch_or, release), eventfd write.
 *      take: hint (exchange, acquire), head (acquire), id, tail + 1
 *      (release)                          -> sees the id
 *   E1 take's tail store (release) -> notify's tail load (acquire): a slot
 *      is overwritten only after it was read.
 *   E2 a listener leaves a node's table: the agent stores inc = 0
 *      (seq_cst) and unmaps the queue only once ev_inflight was 0 after
 *      it (seq_cst); a notify increments ev_inflight (seq_cst) before it
 *      loads inc, so it either sees 0 or is counted.
 * Whatever another process wrote into the queue (a hostile notifier can
 * write every lane of the listeners it notifies) is checked: a lane whose
 * head is behind its tail or more than a queue ahead is skipped and reset
 * by the listener; loops are bounded.
 */
#include "client.h"
#include "fault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EVENT_MASK (TAKT_EVENT_QUEUE - 1)

struct takt_event {
	takt_node *node;
	struct takt_event *next;
	char name[TAKT_NAME_MAX]; /* for a restarted broker */
	int qfd;               /* our queue, once listening (read-write): for a restarted broker */
	uint32_t index;
	int32_t listener;      /* our listener slot, -1: not listening (yet) */
	int listen_err;        /* the broker gave us a slot we could not use */
	bool no_notify;        /* [access]: this process may not notify on it */
	int efd;               /* our eventfd, once listening */
	struct seg_listener sl; /* our queue, once listening */
	uint64_t *pend;        /* lanes that may hold ids (from the hint words) */
	uint32_t rr;           /* the lane looked at first */
};

int takt_event_open(takt_node *node, const char *name, takt_event **out)
{
	struct msg_event_open req = {0};
	struct proto_reply rep;
	takt_event *ev;
	int r;

	if (!node || !out || node_copy_name(req.name, name) < 0)
		return -EINVAL;
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		return -ENOMEM;
	r = node_call(node, MSG_EVENT_OPEN, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL);
	if (r == 0 && (rep.index & ~EVENT_NOTIFY_DENIED) >= node->v.lim.events)
		r = -EPROTO;
	if (r < 0) {
		free(ev);
		return r;
	}
	ev->node = node;
	ev->index = rep.index & ~EVENT_NOTIFY_DENIED;
	ev->no_notify = (rep.index & EVENT_NOTIFY_DENIED) != 0;
	ev->listener = -1;
	ev->efd = -1;
	ev->qfd = -1;
	memcpy(ev->name, req.name, TAKT_NAME_MAX);
	NODE_LIST_ADD_LOCKED(node, node->events, ev);
	*out = ev;
	return 0;
}

/* Becomes a listener: our own queue and eventfd. Once, on the first take
 * or fd (a handle that only notifies never gets a queue). */
static int event_listen(takt_event *ev)
{
	struct msg_index req = {.index = ev->index};
	struct proto_reply rep;
	unsigned n_fds = 0;
	int fds[2] = {-1, -1}, r;
	void *base = NULL;
	size_t size = 0;

	if (ev->listener >= 0 || ev->listen_err == -EACCES)
		return ev->listen_err;
	r = node_call(ev->node, MSG_EVENT_LISTEN, &req, sizeof(req), &rep, sizeof(rep), fds, 2, &n_fds);
	if (r == -EACCES) { /* [access]: asked once, not on every take */
		ev->listen_err = r;
		return r;
	}
	if (r == 0 && (rep.index >> 8 != ev->index || (rep.index & 0xff) >= TAKT_MAX_LISTENERS))
		r = -EPROTO;
	rep.index &= 0xff; /* the listener slot */
	if (r == 0 && n_fds != 2)
		r = -EPROTO;
	if (r == 0)
		r = seg_map_fd(fds[0], PROT_READ | PROT_WRITE, &base, &size);
	if (r == 0) {
		r = seg_listener_check(&ev->node->v, ev->index, rep.index, base, size, &ev->sl);
		if (r < 0)
			munmap(base, size);
	}
	if (r == 0 && !(ev->pend = calloc(ev->sl.hint_words, sizeof(uint64_t)))) {
		munmap(base, size);
		r = -ENOMEM;
	}
	if (n_fds && r < 0)
		close(fds[0]);
	if (r < 0) {
		if (n_fds == 2)
			close(fds[1]);
		if (n_fds == 2 && rep.index < TAKT_MAX_LISTENERS) {
			/* The broker made us a listener: the slot goes back when
			 * the handle closes (EVENT_CLOSE names it). */
			ev->listener = (int32_t)rep.index;
			ev->listen_err = r;
		}
		return r;
	}
	ev->listener = (int32_t)rep.index;
	ev->efd = fds[1];
	ev->qfd = fds[0]; /* kept: handed back to a restarted broker (node.c) */
	return 0;
}

unsigned event_handbacks(takt_node *n, struct event_handback *out, unsigned max)
{
	unsigned k = 0;

	for (takt_event *ev = n->events; ev && k < max; ev = ev->next) {
		struct event_handback *h = &out[k++];
		bool lis = ev->listener >= 0 && ev->qfd >= 0 && ev->efd >= 0;

		*h = (struct event_handback){.index = ev->index, .fd = {-1, -1}};
		memcpy(h->name, ev->name, TAKT_NAME_MAX);
		if (!lis)
			continue;
		h->listener = (uint32_t)ev->listener + 1;
		/* relaxed: the agent (our caller) is the only writer of inc */
		h->inc = atomic_load_explicit(&n->ev_lis[ev->index * TAKT_MAX_LISTENERS + (uint32_t)ev->listener].inc,
					      memory_order_relaxed);
		h->fd[0] = fcntl(ev->qfd, F_DUPFD_CLOEXEC, 0);
		h->fd[1] = fcntl(ev->efd, F_DUPFD_CLOEXEC, 0);
	}
	return k;
}

void takt_event_close(takt_event *ev)
{
	struct msg_index req;
	struct proto_reply rep;

	if (!ev)
		return;
	req = (struct msg_index){.index = ev->index,
				 .reserved = ev->listener >= 0 ? (uint32_t)ev->listener + 1 : 0};
	node_call(ev->node, MSG_EVENT_CLOSE, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL);
	if (ev->sl.q)
		munmap(ev->sl.q, ev->sl.size);
	if (ev->efd >= 0)
		close(ev->efd);
	if (ev->qfd >= 0)
		close(ev->qfd);
	free(ev->pend);
	NODE_LIST_DEL_LOCKED(ev->node, ev->node->events, takt_event, ev);
	free(ev);
}

int takt_event_fd(const takt_event *ev)
{
	/* The handle is used by one thread at a time (ipc.h): asking for its
	 * fd makes it a listener. */
	takt_event *e = (takt_event *)ev;
	int r;

	if (!e)
		return -EINVAL;
	r = event_listen(e);
	return r < 0 ? r : e->efd;
}

/* E0, into our lane of one listener's queue: 0, or -EOVERFLOW when the
 * lane is full (the id is counted lost there). */
static int lane_push(const struct seg_listener *sl, uint32_t me, uint64_t id)
{
	struct takt_lane *l = seg_lane(sl, me);
	/* relaxed: our own word (this process's, serialised by ev_turn). */
	uint64_t head = atomic_load_explicit(&l->head, memory_order_relaxed);
	/* E1: acquire pairs with the listener's release of tail. */
	uint64_t tail = atomic_load_explicit(&l->tail, memory_order_acquire);

	if (head - tail >= TAKT_EVENT_QUEUE) { /* full, or a tail that is garbage */
		/* relaxed: a statistic with one writer (us). */
		atomic_store_explicit(&l->lost, atomic_load_explicit(&l->lost, memory_order_relaxed) + 1,
				      memory_order_relaxed);
		return -EOVERFLOW;
	}
	atomic_store_explicit(&l->ids[head & EVENT_MASK], id, memory_order_relaxed);
	TAKT_FAULT("event_id_written");
	/* E0: release pairs with the listener's acquire of head. */
	atomic_store_explicit(&l->head, head + 1, memory_order_release);
	/* E0: release; the listener takes the bit with an acquire exchange. */
	atomic_fetch_or_explicit(&sl->q->hint[me / 64], 1ull << (me % 64), memory_order_release);
	return 0;
}

int takt_event_notify(takt_event *ev, uint64_t id)
{
	takt_node *n;
	uint64_t one = 1;
	int r = 0;

	if (!ev)
		return -EINVAL;
	if (ev->no_notify)
		return -EACCES; /* the broker gave us no listener's queue */
	n = ev->node;
	/* E2: counted before we look at the table. */
	atomic_fetch_add_explicit(&n->ev_inflight, 1, memory_order_seq_cst);
	/* Our lane in each queue is this process's: its threads take turns. */
	while (atomic_flag_test_and_set_explicit(&n->ev_turn[ev->index], memory_order_acquire))
		;
	/* The broker hung up: our process index may be another process's now,
	 * and so our lanes. seq_cst: pairs with the agent's store. */
	if (atomic_load_explicit(&n->ev_gone, memory_order_seq_cst)) {
		atomic_flag_clear_explicit(&n->ev_turn[ev->index], memory_order_release);
		atomic_fetch_sub_explicit(&n->ev_inflight, 1, memory_order_release);
		return -ENOTCONN;
	}
	for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++) {
		struct node_listener *l = &n->ev_lis[ev->index * TAKT_MAX_LISTENERS + j];

		/* E2: seq_cst pairs with the agent's store of 0 (and acquires
		 * sl and efd, stored before the release of inc). */
		if (!atomic_load_explicit(&l->inc, memory_order_seq_cst))
			continue;
		if (lane_push(&l->sl, n->proc, id) < 0)
			r = -EOVERFLOW;
		/* The write happens after the push (E0), so a listener woken by
		 * it finds the id; a full lane still wakes. */
		if (write(l->efd, &one, sizeof(one)) < 0 && r == 0 && errno != EAGAIN)
			r = -errno;
	}
	atomic_flag_clear_explicit(&n->ev_turn[ev->index], memory_order_release);
	atomic_fetch_sub_explicit(&n->ev_inflight, 1, memory_order_release); /* E2 */
	return r;
}

/* Takes the oldest id of one lane: 0, or -EAGAIN (empty, or garbage that
 * was skipped). */
static int lane_pop(takt_event *ev, uint32_t p, uint64_t *id)
{
	struct takt_lane *l = seg_lane(&ev->sl, p);
	/* relaxed: our own word. */
	uint64_t tail = atomic_load_explicit(&l->tail, memory_order_relaxed);
	/* E0: acquire pairs with the notifier's release of head. */
	uint64_t head = atomic_load_explicit(&l->head, memory_order_acquire);

	if (head == tail)
		return -EAGAIN;
	if (head - tail > TAKT_EVENT_QUEUE) { /* behind us or beyond a queue: garbage */
		atomic_store_explicit(&l->tail, head, memory_order_release);
		return -EAGAIN;
	}
	*id = atomic_load_explicit(&l->ids[tail & EVENT_MASK], memory_order_relaxed);
	/* E1: release: our read of the slot happens before it is reused. */
	atomic_store_explicit(&l->tail, tail + 1, memory_order_release);
	return 0;
}

static int event_pop(takt_event *ev, uint64_t *id)
{
	const uint32_t lanes = ev->sl.lanes;

	for (uint32_t w = 0; w < ev->sl.hint_words; w++)
		/* E0: acquire pairs with the notifiers' fetch_or. */
		if (atomic_load_explicit(&ev->sl.q->hint[w], memory_order_relaxed))
			ev->pend[w] |= atomic_exchange_explicit(&ev->sl.q->hint[w], 0, memory_order_acquire);
	for (uint32_t k = 0; k < lanes; k++) {
		uint32_t p = (ev->rr + k) % lanes;

		if (!(ev->pend[p / 64] >> (p % 64) & 1))
			continue;
		if (lane_pop(ev, p, id) == 0) {
			ev->rr = p; /* the same lane first next time: ids in its order */
			return 0;
		}
		ev->pend[p / 64] &= ~(1ull << (p % 64)); /* drained */
	}
	return -EAGAIN;
}

int takt_event_take(takt_event *ev, uint64_t *id)
{
	uint64_t cnt;
	int r;

	if (!ev || !id)
		return -EINVAL;
	r = event_listen(ev);
	if (r < 0)
		return r;
	r = event_pop(ev, id);
	if (r == 0)
		return 0;
	/* Empty: consume the eventfd count, then look once more, so a notify
	 * that raced with the drain is either found now or wakes us again. */
	if (read(ev->efd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: nothing to drain */
	}
	return event_pop(ev, id);
}
