/* event.c - named wake-ups with an id queue (notifier/listener).
 *
 * Each event has a bounded MPMC queue of ids in shared memory (Vyukov's
 * bounded queue: every cell carries a sequence number that tells producers
 * and consumers whose turn it is) and one eventfd shared by every process
 * that opened the name.
 *
 * Pairings:
 *   E0 notify: claim a cell by CAS on enq (relaxed), write id, store the
 *      cell's seq = pos + 1 (release)         -> E1's acquire load of seq
 *   E1 take:   claim by CAS on deq, read id, store seq = pos + size
 *      (release)                              -> E0's acquire load of seq
 * A process that dies between claiming a cell and publishing it leaves that
 * cell unready: takes see the queue empty at it until the broker reopens the
 * event (documented in docs/architecture.md). Loops are bounded so garbage
 * written by another process cannot spin us forever.
 */
#include "client.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EVENT_MASK (TAKT_EVENT_QUEUE - 1)
#define EVENT_SPIN 1024

struct takt_event {
	takt_node *node;
	struct takt_event *next;
	struct takt_event_slot *slot;
	uint32_t index;
	int efd;
};

int takt_event_open(takt_node *node, const char *name, takt_event **out)
{
	struct msg_event_open req = {0};
	struct proto_reply rep;
	unsigned n_fds = 0;
	takt_event *ev;
	int efd = -1, r;

	if (!node || !out || node_copy_name(req.name, name) < 0)
		return -EINVAL;
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		return -ENOMEM;
	r = node_call(node, MSG_EVENT_OPEN, &req, sizeof(req), &rep, sizeof(rep), &efd, 1, &n_fds);
	if (r == 0 && (n_fds != 1 || rep.index >= node->v.lim.events))
		r = -EPROTO;
	if (r < 0) {
		if (n_fds)
			close(efd);
		free(ev);
		return r;
	}
	ev->node = node;
	ev->index = rep.index;
	ev->slot = &node->v.events[rep.index];
	ev->efd = efd;
	NODE_LIST_ADD_LOCKED(node, node->events, ev);
	*out = ev;
	return 0;
}

void takt_event_close(takt_event *ev)
{
	if (!ev)
		return;
	node_close_index(ev->node, MSG_EVENT_CLOSE, ev->index);
	close(ev->efd);
	NODE_LIST_DEL_LOCKED(ev->node, ev->node->events, takt_event, ev);
	free(ev);
}

int takt_event_fd(const takt_event *ev)
{
	return ev ? ev->efd : -EINVAL;
}

static int event_push(struct takt_event_slot *s, uint64_t id)
{
	uint64_t pos = atomic_load_explicit(&s->enq, memory_order_relaxed);

	for (int spin = 0; spin < EVENT_SPIN; spin++) {
		struct takt_event_cell *cell = &s->cells[pos & EVENT_MASK];
		/* E0: acquire pairs with E1's release: the cell was consumed. */
		uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
		int64_t dif = (int64_t)(seq - pos);

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&s->enq, &pos, pos + 1,
								  memory_order_relaxed, memory_order_relaxed)) {
				atomic_store_explicit(&cell->id, id, memory_order_relaxed);
				/* E0: release pairs with E1's acquire of seq. */
				atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
				return 0;
			}
		} else if (dif < 0) {
			return -EOVERFLOW; /* full */
		} else {
			pos = atomic_load_explicit(&s->enq, memory_order_relaxed);
		}
	}
	return -EOVERFLOW;
}

static int event_pop(struct takt_event_slot *s, uint64_t *id)
{
	uint64_t pos = atomic_load_explicit(&s->deq, memory_order_relaxed);

	for (int spin = 0; spin < EVENT_SPIN; spin++) {
		struct takt_event_cell *cell = &s->cells[pos & EVENT_MASK];
		/* E1: acquire pairs with E0's release: the id is written. */
		uint64_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
		int64_t dif = (int64_t)(seq - (pos + 1));

		if (dif == 0) {
			if (atomic_compare_exchange_weak_explicit(&s->deq, &pos, pos + 1,
								  memory_order_relaxed, memory_order_relaxed)) {
				*id = atomic_load_explicit(&cell->id, memory_order_relaxed);
				/* E1: release pairs with E0's acquire: the cell is free. */
				atomic_store_explicit(&cell->seq, pos + TAKT_EVENT_QUEUE,
						      memory_order_release);
				return 0;
			}
		} else if (dif < 0) {
			return -EAGAIN; /* empty */
		} else {
			pos = atomic_load_explicit(&s->deq, memory_order_relaxed);
		}
	}
	return -EAGAIN;
}

int takt_event_notify(takt_event *ev, uint64_t id)
{
	uint64_t one = 1;
	int r;

	if (!ev)
		return -EINVAL;
	r = event_push(ev->slot, id);
	if (r < 0) /* relaxed: a statistic */
		atomic_fetch_add_explicit(&ev->slot->lost, 1, memory_order_relaxed);
	/* The eventfd write happens after the push (E0), so a listener woken by
	 * it finds the id. */
	if (write(ev->efd, &one, sizeof(one)) < 0 && r == 0)
		r = -errno;
	return r;
}

int takt_event_take(takt_event *ev, uint64_t *id)
{
	uint64_t cnt;
	int r;

	if (!ev || !id)
		return -EINVAL;
	r = event_pop(ev->slot, id);
	if (r == 0)
		return 0;
	/* Empty: consume the eventfd count, then look once more, so a notify
	 * that raced with the drain is either found now or wakes us again. */
	if (read(ev->efd, &cnt, sizeof(cnt)) < 0) {
		/* EAGAIN: nothing to drain */
	}
	return event_pop(ev->slot, id);
}
