/* events.c - the broker's events: named slots, their listeners and queues.
 *
 * An event is a name any process may open; a process that listens gets a
 * listener slot (up to TAKT_MAX_LISTENERS per event) with its own queue
 * segment and eventfd. Every node with the event open is told of each
 * listener (PUSH_EV_LISTENER) and notifies into its queue directly; a
 * listener's open waits until those nodes confirmed (EV_READY), as a
 * port's open waits for CONN_READY (A0, registry.c). Each slot has an
 * incarnation, so a node never notifies into a slot's next listener with
 * the queue of the one before.
 */
#include "broker.h"
#include "registry.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Tells every client with event ei open about its listener j (or that it
 * left): their nodes notify into its queue. to: one client only, or NULL.
 * owe: the listen waits for each one told to confirm (ev_owed). Returns
 * how many were told. */
unsigned listener_push(struct broker *b, uint32_t ei, uint32_t j, bool gone, struct client *to, bool owe)
{
	const struct reg_listener *li = &b->events[ei].lis[j];
	struct msg_push_ev m = {.event = ei, .listener = j, .inc = li->inc};
	int fds[2] = {li->seg_fd, li->efd};
	unsigned pushed = 0;

	proto_hdr_init(&m.hdr, (uint16_t)((gone ? MSG_PUSH_EV_GONE : MSG_PUSH_EV_LISTENER) | PROTO_PUSH_FLAG),
		       sizeof(m), 0);
	for (unsigned i = 0; i < b->n_clients_max; i++) {
		struct client *cl = &b->clients[i];

		if (cl->fd < 0 || cl->doomed || !cl->event_refs || !cl->event_refs[ei] || (to && cl != to))
			continue;
		/* [access] notify: a node that may not notify never gets a queue
		 * (its handle was told so at EVENT_OPEN) */
		if (!gone && !server_may(b, cl, ACCESS_NOTIFY, b->events[ei].name))
			continue;
		server_push(b, cl, &m, sizeof(m), gone ? NULL : fds, gone ? 0 : 2);
		if (cl->doomed)
			continue;
		pushed++;
		if (owe)
			cl->ev_owed[ei] |= 1u << j;
	}
	return pushed;
}

/* The EVENT_LISTEN of listener j's client no longer waits for acks. */
static void listener_settle(struct broker *b, struct reg_listener *li, unsigned acks)
{
	struct client *w = li->cl;

	if (acks > li->acks_owed)
		acks = li->acks_owed;
	if (!acks || !w)
		return;
	li->acks_owed -= acks;
	w->pend_acks = w->pend_acks > acks ? w->pend_acks - acks : 0;
	if (w->pend && w->pend_acks == 0)
		server_pend_reply(b, w);
}

/* Only a client told of the listen confirms it, once (any other EV_READY
 * could answer the listen before a node that has not got the listener). */
void reg_ev_ready(struct broker *b, struct client *cl, const struct msg_push_ev *m)
{
	struct reg_listener *li;
	uint32_t bit;

	if (m->event >= b->v.lim.events || m->listener >= TAKT_MAX_LISTENERS || !cl->ev_owed)
		return;
	bit = 1u << m->listener;
	li = &b->events[m->event].lis[m->listener];
	if (!(cl->ev_owed[m->event] & bit) || !li->cl || li->inc != m->inc)
		return; /* not asked of it, or of an earlier listener of the slot */
	cl->ev_owed[m->event] &= ~bit;
	listener_settle(b, li, 1); /* one node more has it in its table */
}

/* Nobody owes listener j of event ei an ack any more. */
static void listener_owed_clear(struct broker *b, uint32_t ei, uint32_t j)
{
	for (unsigned i = 0; i < b->n_clients_max; i++)
		if (b->clients[i].ev_owed)
			b->clients[i].ev_owed[ei] &= ~(1u << j);
}

void listeners_mirror(struct broker *b, uint32_t ei)
{
	uint32_t n = 0;

	for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
		n += b->events[ei].lis[j].cl != NULL;
	b->v.events[ei].listeners = n;
}

void listener_drop(struct broker *b, uint32_t ei, uint32_t j)
{
	struct reg_listener *li = &b->events[ei].lis[j];

	if (!li->cl)
		return;
	listener_settle(b, li, li->acks_owed);
	listener_owed_clear(b, ei, j);
	listener_push(b, ei, j, true, NULL, false);
	close(li->seg_fd);
	close(li->efd);
	li->cl = NULL;
	b->v.events[ei].lis[j].proc = TAKT_NONE;
	listeners_mirror(b, ei);
}

static int event_open(struct broker *b, struct client *cl, const char *name)
{
	int free_slot = -1;

	if (!proto_name_ok(name, TAKT_NAME_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < b->v.lim.events; i++) {
		struct reg_event *e = &b->events[i];

		if (e->state == SLOT_FREE) {
			if (free_slot < 0)
				free_slot = (int)i;
		} else if (!strcmp(e->name, name)) {
			b->v.events[i].refs = ++e->refs;
			/* Its node notifies into every listener's queue: it
			 * learns of them before the open's reply (same socket). */
			if (cl->event_refs[i]++ == 0)
				for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
					if (e->lis[j].cl)
						listener_push(b, i, j, false, cl, false);
			return (int)i;
		}
	}
	if (free_slot < 0)
		return -ENOSPC;
	struct reg_event *e = &b->events[free_slot];
	uint32_t incs[TAKT_MAX_LISTENERS];

	for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
		incs[j] = e->lis[j].inc; /* incarnations go on across uses of the slot */
	*e = (struct reg_event){.state = SLOT_ACTIVE, .refs = 1};
	for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
		e->lis[j].inc = incs[j];
	memcpy(e->name, name, TAKT_NAME_MAX);
	memcpy(b->v.events[free_slot].name, name, TAKT_NAME_MAX);
	b->v.events[free_slot].refs = 1;
	b->v.events[free_slot].listeners = 0;
	publish_state(&b->v.events[free_slot].state, SLOT_ACTIVE);
	cl->event_refs[free_slot]++;
	return free_slot;
}

/* The slot, | EVENT_NOTIFY_DENIED when [access] says the process may not
 * notify on it (one log line: its handle may still listen). */
int reg_event_open(struct broker *b, struct client *cl, const char *name)
{
	int r = event_open(b, cl, name);

	if (r >= 0 && server_access(b, cl, ACCESS_NOTIFY, name) < 0)
		r |= (int)EVENT_NOTIFY_DENIED;
	return r;
}

int reg_event_listen(struct broker *b, struct client *cl, uint32_t index, int fds[2])
{
	struct reg_event *e;
	struct reg_listener *li = NULL;
	unsigned j;
	int r, efd, seg;

	if (index >= b->v.lim.events)
		return -EINVAL;
	if (!cl->event_refs[index])
		return -EPERM;
	e = &b->events[index];
	if (server_access(b, cl, ACCESS_LISTEN, e->name) < 0)
		return -EACCES;
	for (j = 0; j < TAKT_MAX_LISTENERS && !li; j++)
		if (!e->lis[j].cl)
			li = &e->lis[j];
	if (!li) {
		fprintf(stderr, "takt-broker: event '%s': process %d wants to listen, but it has %u listeners already\n",
			e->name, cl->pid, TAKT_MAX_LISTENERS);
		return -ENOSPC;
	}
	j--;
	r = seg_listener_create(b, index, j, &seg);
	if (r < 0)
		return r;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		r = -errno;
		close(seg);
		return r;
	}
	li->cl = cl;
	li->inc++;
	li->seg_fd = fds[0] = seg;
	li->efd = fds[1] = efd;
	/* who it is, for a restarted broker (reg_adopt_event) */
	b->v.events[index].lis[j] = (struct takt_event_lis){.proc = cl->proc, .inc = li->inc, .seg_ino = seg_fd_ino(seg)};
	listeners_mirror(b, index);
	/* Every node with it open, this one's too: the listen is answered once
	 * each has it in its table (EV_READY), so it hears every notify from
	 * then on. */
	listener_owed_clear(b, index, j); /* (nothing is owed to a slot nobody listens on) */
	li->acks_owed = listener_push(b, index, j, false, NULL, true);
	cl->pend_acks += li->acks_owed;
	return (int)j;
}

int reg_event_close(struct broker *b, struct client *cl, uint32_t index, uint32_t listener)
{
	struct reg_event *e;

	if (index >= b->v.lim.events)
		return -EINVAL;
	if (!cl->event_refs[index])
		return -EPERM;
	e = &b->events[index];
	if ((listener & ~EVENT_LISTENER_ONLY) && (listener & ~EVENT_LISTENER_ONLY) <= TAKT_MAX_LISTENERS &&
	    e->lis[(listener & ~EVENT_LISTENER_ONLY) - 1].cl == cl)
		listener_drop(b, index, (listener & ~EVENT_LISTENER_ONLY) - 1);
	if (listener & EVENT_LISTENER_ONLY)
		return 0; /* a listen undone: the handle stays open */
	if (cl->event_refs[index] == 1) /* its node forgets the listeners it notified */
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++) {
			if (cl->ev_owed[index] & (1u << j)) { /* and owes them nothing */
				cl->ev_owed[index] &= ~(1u << j);
				listener_settle(b, &e->lis[j], 1);
			}
			if (e->lis[j].cl)
				listener_push(b, index, j, true, cl, false);
		}
	cl->event_refs[index]--;
	b->v.events[index].refs = --e->refs;
	if (e->refs == 0) {
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			listener_drop(b, index, j);
		e->state = SLOT_FREE;
		publish_state(&b->v.events[index].state, SLOT_FREE);
	}
	return 0;
}
