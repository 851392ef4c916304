/* adopt.c - a restarted broker takes over the live domain of one that died.
 *
 * The data path never needs the broker: when it dies, publishers and
 * subscribers that are connected keep exchanging samples through their
 * segments. Each node's agent sees the hang-up and waits for the next
 * broker of the domain; it then hands back what it holds (READOPT):
 *
 *   1. its read-only descriptor of the old registry, its process index and
 *      the epoch it had. The first node that comes back brings the
 *      registry: the broker checks it (size, magic, ABI, digest, limits,
 *      domain, epoch) and rebuilds its own from it (reg_adopt: every entry
 *      checked, one that does not hold together dropped). Every process of
 *      it becomes a ghost: a client without a socket.
 *   2. each port, with its segment's read-write descriptor (and a
 *      subscriber's eventfd): checked against the registry (owner, id, the
 *      segment's inode and seals, its header) before the broker keeps it.
 *   3. READOPT_DONE: the node gets the new registry, which it maps over the
 *      old one at the same address (libipc/node.c), and its ports that it
 *      did not hand back are closed.
 *
 * Meanwhile nothing else is served: other requests wait, unread, until the
 * adoption settles (every ghost came back or was reclaimed: its process is
 * dead, or [socket] readopt_timeout_ms passed). Then connections are
 * pushed to both nodes again (a push the old broker owed may be lost) and
 * the held requests are served in order. A node whose claim does not
 * validate is told why (-ESTALE, -EPERM, -EPROTO...) and stays detached;
 * the others are not affected.
 *
 * A broker that starts without finding a predecessor's socket serves at
 * once: a stop that ends the domain removes the socket, so there is
 * nothing to adopt. The first half of this file is the conversation and
 * the window; the second (reg_adopt*) rebuilds the registry and takes
 * each segment back.
 */
#include "broker.h"
#include "registry.h"
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static uint64_t adopt_deadline(const struct broker *b)
{
	return takt_now_ns() + (uint64_t)b->cfg.readopt_timeout_ms * 1000000u;
}

void adopt_start(struct broker *b, bool predecessor)
{
	b->adopt_started_ns = takt_now_ns();
	if (!predecessor)
		return;
	b->adopt_state = ADOPT_WAITING;
	b->adopt_deadline_ns = adopt_deadline(b);
	fprintf(stderr, "takt-broker: domain '%s': a broker died here before; its processes have %u ms to come back\n",
		b->cfg.domain, b->cfg.readopt_timeout_ms);
}

bool adopt_serves(uint16_t type)
{
	return type == MSG_READOPT || type == MSG_PUB_READOPT || type == MSG_SUB_READOPT ||
	       type == MSG_POOL_READOPT || type == MSG_EV_READOPT || type == MSG_READOPT_DONE;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The old registry, from the first node back: checked whole, then the
 * registry is rebuilt from it and its processes become ghosts. */
static int adopt_registry(struct broker *b, int fd, uint64_t epoch)
{
	struct takt_limits ol, nl = b->v.lim;
	struct seg_view o;
	void *map;
	int r;

	/* The registry the dead broker recorded, and no other: a client could
	 * hand a copy of its own making (the inode of a live memfd is its
	 * own). */
	if (!b->adopt_expect_ino || seg_fd_ino(fd) != b->adopt_expect_ino || epoch != b->adopt_expect_epoch) {
		fprintf(stderr, "takt-broker: domain '%s': a registry handed back is not the one the lock file names: "
			"not adopted\n", b->cfg.domain);
		return -ESTALE;
	}
	/* Sealed as every registry is (segments.c): a file that could shrink
	 * under us would fault (SIGBUS) as we read it. An inode number alone
	 * does not name a file (one of another filesystem, a tmpfs, can have
	 * the same), but only a memfd carries these seals. */
	if (!seg_fd_sealed(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -EBADFD;
	if (seg_fd_size(fd) != b->mgmt_size)
		return -EPROTO; /* another layout: other [limits] */
	map = seg_map_ro(fd, b->mgmt_size);
	if (!map)
		return -ENOMEM;
	r = seg_view_init(&o, map, b->mgmt_size);
	ol = o.lim;
	/* flags too (the Q0 mode, part of the layout digest): a node maps
	 * only a registry whose mode is its own (node.c, readopt_remap) */
	if (r == 0 && (memcmp(&ol, &nl, sizeof(ol)) || strncmp(o.hdr->domain, b->cfg.domain, TAKT_NAME_MAX)))
		r = -EPROTO;
	if (r == 0 && o.hdr->epoch != epoch)
		r = -ESTALE;
	if (r < 0) {
		fprintf(stderr, "takt-broker: domain '%s': the registry handed back %s: not adopted\n", b->cfg.domain,
			r == -ESTALE ? "is of another epoch" : "has another layout, domain or limits");
		munmap(map, b->mgmt_size);
		return r;
	}
	b->ghosts = calloc(b->v.lim.processes, sizeof(*b->ghosts));
	if (!b->ghosts) {
		munmap(map, b->mgmt_size);
		return -ENOMEM;
	}
	b->adopted.dropped = (uint32_t)reg_adopt(b, &o);
	munmap(map, b->mgmt_size);
	for (uint32_t i = 0; i < b->v.lim.processes; i++) {
		struct client *g = &b->ghosts[i];

		*g = (struct client){.b = b, .fd = -1, .proc = TAKT_NONE, .pidfd = -1, .ghost = true};
		if (b->proc_state[i] != SLOT_ACTIVE)
			continue;
		g->proc = i;
		g->pid = b->v.procs[i].pid;
		g->uid = b->v.procs[i].uid;
		g->gid = b->v.procs[i].gid;
		b->proc_client[i] = g;
	}
	b->adopted.epoch = epoch;
	b->adopt_state = ADOPT_RUNNING;
	b->adopt_deadline_ns = adopt_deadline(b);
	fprintf(stderr, "takt-broker: domain '%s': adopted the registry of epoch %llu (%u entries dropped)\n",
		b->cfg.domain, (unsigned long long)epoch, b->adopted.dropped);
	return 0;
}

static int readopt_check(struct broker *b, struct client *cl, const struct msg_readopt *m, int fds[2])
{
	const struct takt_proc *p;
	int r;

	if (cl->proc != TAKT_NONE)
		return -EALREADY;
	if (m->abi_version != TAKT_ABI_VERSION || fds[0] < 0)
		return -EPROTO;
	if (fds[1] >= 0 && !server_pidfd_ok(cl, fds[1]))
		return -EINVAL;
	if (b->adopt_state == ADOPT_NONE)
		return -ESTALE; /* nothing to come back to: a clean start, or too late */
	if (b->adopt_state == ADOPT_WAITING && (r = adopt_registry(b, fds[0], m->epoch)) < 0)
		return r;
	if (m->epoch != b->adopted.epoch)
		return -ESTALE;
	if (m->proc >= b->v.lim.processes || !b->proc_client[m->proc] || !b->proc_client[m->proc]->ghost)
		return -EPERM; /* not a process of it, or one that came back already */
	p = &b->v.procs[m->proc];
	/* The same user, and the same process where pids are visible. */
	if (p->uid != cl->uid || (p->pid > 0 && cl->pid > 0 && p->pid != cl->pid))
		return -EPERM;
	return 0;
}

void adopt_readopt(struct broker *b, struct client *cl, const struct msg_readopt *m, int fds[2])
{
	int r = readopt_check(b, cl, m, fds);
	struct msg_hello_reply rep = {0};
	struct client *g;

	close_fd(&fds[0]);
	if (r < 0) {
		close_fd(&fds[1]);
		b->adopted.refused++;
		fprintf(stderr, "takt-broker: pid %d (uid %u) cannot take back process %u of epoch %llu: %s\n", cl->pid,
			(unsigned)cl->uid, m->proc, (unsigned long long)m->epoch, strerror(-r));
		server_reply_status(cl, &m->hdr, r, 0);
		return;
	}
	g = b->proc_client[m->proc];
	g->proc = TAKT_NONE; /* claimed: the ghost is done */
	b->proc_client[m->proc] = cl;
	cl->proc = m->proc;
	cl->readopting = true;
	cl->pidfd = fds[1];
	b->v.procs[m->proc].pid = cl->pid;
	b->adopted.procs++;
	/* The new registry at once: the node switches before it says DONE
	 * (node.c, readopt_switch), so none reads the old one once we settle. */
	proto_hdr_init(&rep.r.hdr, (uint16_t)(m->hdr.type | PROTO_REPLY_FLAG), sizeof(rep), m->hdr.req_id);
	rep.r.index = m->proc;
	rep.epoch = b->epoch;
	server_push(b, cl, &rep, sizeof(rep), &b->mgmt_ro_fd, 1);
}

void adopt_port(struct broker *b, struct client *cl, const struct msg_port_readopt *m, int fds[2])
{
	bool pub = m->hdr.type == MSG_PUB_READOPT, pool = m->hdr.type == MSG_POOL_READOPT;
	int r;

	if (!cl->readopting)
		r = -EPERM;
	else if (pool)
		r = reg_adopt_pool(b, cl, m->index, m->sub, m->id, fds[0]);
	else if (pub)
		r = reg_adopt_pub(b, cl, m->index, m->id, fds[0]);
	else
		r = reg_adopt_sub(b, cl, m->index, fds[0], fds[1]);
	if (pool && r >= 0) {
		if (r == 1)
			fds[0] = -1; /* the registry keeps it */
		r = 0;
	} else if (r == 0) { /* the registry keeps them */
		fds[0] = -1;
		if (!pub)
			fds[1] = -1;
		pub ? b->adopted.pubs++ : b->adopted.subs++;
	} else {
		fprintf(stderr, "takt-broker: process %d (%s) cannot take back %s %u: %s\n", cl->pid,
			cl->proc != TAKT_NONE ? b->v.procs[cl->proc].name : "?", pub || pool ? "publisher" : "subscriber",
			m->index, strerror(-r));
	}
	close_fd(&fds[0]);
	close_fd(&fds[1]);
	server_reply_status(cl, &m->hdr, r, m->index);
}

void adopt_event(struct broker *b, struct client *cl, const struct msg_ev_readopt *m, int fds[2])
{
	int r = cl->readopting ? reg_adopt_event(b, cl, m, fds) : -EPERM;

	if (r == 0 && m->listener) { /* the registry keeps them */
		fds[0] = fds[1] = -1;
		b->adopted.listeners++;
	} else if (r < 0) {
		fprintf(stderr, "takt-broker: process %d (%s) cannot take back its handle of event %u: %s\n", cl->pid,
			cl->proc != TAKT_NONE ? b->v.procs[cl->proc].name : "?", m->index, strerror(-r));
	}
	close_fd(&fds[0]);
	close_fd(&fds[1]);
	server_reply_status(cl, &m->hdr, r, m->index);
}

/* Its ports it did not hand back (an open that was under way when the
 * broker died, say) are closed. */
static void adopt_close_unclaimed(struct broker *b, struct client *cl)
{
	for (uint32_t i = 0; i < b->v.lim.publishers; i++)
		if (b->pubs[i].state == SLOT_ACTIVE && b->pubs[i].proc == cl->proc && b->pubs[i].pool_fd < 0)
			reg_pub_close(b, cl, i);
	for (uint32_t i = 0; i < b->v.lim.subscribers; i++)
		if (b->subs[i].state == SLOT_ACTIVE && b->subs[i].proc == cl->proc && b->subs[i].seg_fd < 0)
			reg_sub_close(b, cl, i);
}

void adopt_done(struct broker *b, struct client *cl, const struct proto_hdr *h)
{
	struct msg_hello_reply rep = {0};

	if (!cl->readopting) {
		server_reply_status(cl, h, -EPERM, 0);
		return;
	}
	proto_hdr_init(&rep.r.hdr, (uint16_t)(h->type | PROTO_REPLY_FLAG), sizeof(rep), h->req_id);
	rep.r.index = cl->proc;
	rep.epoch = b->epoch;
	/* The reply first: what closing its unclaimed ports pushes comes after. */
	server_push(b, cl, &rep, sizeof(rep), NULL, 0);
	/* Still readopting while they close: each close runs reg_tick, which
	 * must not settle the adoption (and push their connections again,
	 * with no segment to send) before the last of them is closed. */
	adopt_close_unclaimed(b, cl);
	cl->readopting = false;
}

static void adopt_end(struct broker *b)
{
	b->adopt_state = ADOPT_NONE;
	if (b->adopted.epoch) {
		reg_adopt_settle(b);
		b->adopted.ms = (takt_now_ns() - b->adopt_started_ns) / 1000000u;
		fprintf(stderr, "takt-broker: domain '%s': adoption of epoch %llu settled after %llu ms: %u processes, "
			"%u publishers, %u subscribers back; %u processes reclaimed, %u refused\n",
			b->cfg.domain, (unsigned long long)b->adopted.epoch, (unsigned long long)b->adopted.ms,
			b->adopted.procs, b->adopted.pubs, b->adopted.subs, b->adopted.reclaimed, b->adopted.refused);
	}
	free(b->ghosts);
	b->ghosts = NULL;
	server_replay_deferred(b);
}

/* Whether a ghost's process is gone: no such pid, or a zombie (dead,
 * not yet reaped by its parent). Where the pid is not visible (0) only
 * the timeout tells. */
static bool pid_dead(pid_t pid)
{
	char path[64], buf[256], *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return false;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	p = strrchr(buf, ')'); /* the name may hold anything; the state follows it */
	return p && p[1] == ' ' && p[2] == 'Z';
}

/* Every process that did not come back, as if it had left. */
static void adopt_reclaim_ghosts(struct broker *b)
{
	for (uint32_t i = 0; i < b->v.lim.processes; i++) {
		struct client *c = b->proc_client[i];

		if (c && c->ghost) {
			reg_proc_remove(b, c);
			b->adopted.reclaimed++;
		}
	}
}

int adopt_tick(struct broker *b)
{
	static bool busy; /* reclaiming calls reg_tick, which calls us */
	bool late = takt_now_ns() >= b->adopt_deadline_ns, waiting = false;

	if (busy)
		return TICK_SLOW;
	busy = true;
	if (b->adopt_state == ADOPT_RUNNING) {
		/* A ghost whose process is dead is not waited for, but it is
		 * reclaimed only at the end: the subscribers of its publishers
		 * may still bring its pools (reg_adopt_pool), so what it sent
		 * stays takeable. */
		for (uint32_t i = 0; i < b->v.lim.processes; i++) {
			struct client *c = b->proc_client[i];

			if (c && ((c->ghost && !late && !pid_dead(c->pid)) || c->readopting))
				waiting = true;
		}
		if (late)
			for (unsigned i = 0; i < b->n_clients_max; i++)
				if (b->clients[i].fd >= 0 && b->clients[i].readopting)
					b->clients[i].doomed = true; /* it never finished: it stalls everyone */
		if (!waiting)
			adopt_reclaim_ghosts(b);
	}
	busy = false;
	if (b->adopt_state == ADOPT_WAITING ? late : !waiting) {
		adopt_end(b);
		return reg_tick(b);
	}
	/* while processes come back, a dead one is noticed within a tick */
	return b->adopt_state == ADOPT_RUNNING ? TICK_FAST : TICK_SLOW;
}

void adopt_free(struct broker *b)
{
	free(b->ghosts);
	b->ghosts = NULL;
}

/* ---- the registry rebuilt -------------------------------------------------
 *
 * A restarted broker rebuilds its private registry from its predecessor's
 * registry, which a readopting node handed it (read-only; only a broker
 * ever wrote it, but one may have died halfway through a change, so every
 * entry is checked and one that does not hold together is dropped). The
 * new registry starts as a byte copy of the old (so words no entry owns,
 * such as a subscriber's broker_wakes, go on as they were) and is then
 * rewritten from the private copy. Until the adoption settles nothing but
 * readopt messages is served: ports whose process has not come back have
 * no segment we map.
 *
 * Orderings: every acquire load of a state in the old registry pairs with
 * the dead broker's release store of it (publish_state, conn_set_state),
 * so an entry's fields are read after its state, as a client reads them
 * (the registry is frozen now; a store it never made shows as the state
 * before). The relaxed stores of lists and incarnations into our registry
 * are published, as any change of ours, by the release of each state
 * that follows and by the conn_gen bumps of reg_adopt_settle (W1). */

static bool adopt_port_state_ok(uint32_t st)
{
	return st == SLOT_ACTIVE || st == SLOT_CLOSING;
}

static void adopt_topics_ports(struct broker *b, const struct seg_view *o, unsigned *dropped)
{
	const struct takt_limits *l = &b->v.lim;

	for (uint32_t ti = 0; ti < l->topics; ti++) {
		const struct takt_topic *t = &o->topics[ti];
		struct reg_topic *rt = &b->topics[ti];

		if (atomic_load_explicit(&t->state, memory_order_acquire) != SLOT_ACTIVE)
			continue;
		if (!names_ok(t->name, t->type_name, t->reply_type)) {
			++*dropped;
			continue;
		}
		rt->state = SLOT_ACTIVE;
		memcpy(rt->name, t->name, TAKT_NAME_MAX);
		memcpy(rt->type_name, t->type_name, TAKT_NAME_MAX);
		memcpy(rt->reply_type, t->reply_type, TAKT_NAME_MAX);
	}
	for (uint32_t pi = 0; pi < l->publishers; pi++) {
		const struct takt_pub_port *p = &o->pubs[pi];
		struct reg_pub *rp = &b->pubs[pi];
		uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
		uint32_t n_chunks = atomic_load_explicit(&p->n_chunks, memory_order_relaxed);

		if (!adopt_port_state_ok(st))
			continue;
		if (p->topic >= l->topics || b->topics[p->topic].state != SLOT_ACTIVE ||
		    (st == SLOT_ACTIVE && (p->proc >= l->processes || b->proc_state[p->proc] != SLOT_ACTIVE)) ||
		    p->history > l->history_max || p->chunk_stride != layout_chunk_stride(p->payload_size) ||
		    n_chunks > p->n_chunks_max || p->id == 0 ||
		    (st == SLOT_ACTIVE && b->topics[p->topic].n_pubs >= l->pubs_per_topic)) {
			++*dropped;
			continue;
		}
		*rp = (struct reg_pub){.state = st, .topic = p->topic, .proc = p->proc, .history = p->history,
				       .id = p->id, .payload_size = p->payload_size, .stride = p->chunk_stride,
				       .n_chunks = n_chunks, .n_chunks_max = p->n_chunks_max, .pool_fd = -1,
				       .pool_ro_fd = -1, .connected = true, .conns = rp->conns,
				       .slot_busy = rp->slot_busy, .seg_ino = p->seg_ino};
		if (st == SLOT_ACTIVE)
			b->topics[p->topic].pubs[b->topics[p->topic].n_pubs++] = pi;
	}
	for (uint32_t si = 0; si < l->subscribers; si++) {
		const struct takt_sub_port *p = &o->subs[si];
		struct reg_sub *rs = &b->subs[si];
		uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);

		if (!adopt_port_state_ok(st))
			continue;
		if (p->topic >= l->topics || b->topics[p->topic].state != SLOT_ACTIVE ||
		    (st == SLOT_ACTIVE && (p->proc >= l->processes || b->proc_state[p->proc] != SLOT_ACTIVE)) ||
		    p->queue_depth == 0 || p->queue_depth > l->queue_depth_max || p->overflow > TAKT_OVERFLOW_REJECT ||
		    p->history > l->history_max ||
		    (st == SLOT_ACTIVE && b->topics[p->topic].n_subs >= l->subs_per_topic)) {
			++*dropped;
			continue;
		}
		*rs = (struct reg_sub){.state = st, .topic = p->topic, .proc = p->proc, .depth = p->queue_depth,
				       .overflow = p->overflow, .history = p->history, .seg_fd = -1, .seg_ro_fd = -1,
				       .connected = true, .conns = rs->conns, .slot_busy = rs->slot_busy,
				       .seg_ino = p->seg_ino};
		if (st == SLOT_ACTIVE)
			b->topics[p->topic].subs[b->topics[p->topic].n_subs++] = si;
	}
}

/* Whether the old registry's connection ci holds together with the ports
 * kept: its ends on one topic, its geometry what their sizes say. */
static bool adopt_conn_ok(const struct broker *b, const struct takt_conn *c, uint32_t st)
{
	const struct takt_limits *l = &b->v.lim;

	if (c->pub >= l->publishers || c->sub >= l->subscribers || b->pubs[c->pub].state == SLOT_FREE ||
	    b->subs[c->sub].state == SLOT_FREE || b->pubs[c->pub].topic != b->subs[c->sub].topic)
		return false;
	if (st == SLOT_ACTIVE && (b->pubs[c->pub].state != SLOT_ACTIVE || b->subs[c->sub].state != SLOT_ACTIVE))
		return false;
	return c->depth == b->subs[c->sub].depth && c->mask == depth_slots(c->depth) - 1 &&
	       c->ret_mask == layout_conn_ret_slots(l, c->depth) - 1 && c->pub_slot < l->subs_per_topic &&
	       c->sub_slot < l->pubs_per_topic && !(b->pubs[c->pub].slot_busy[c->pub_slot / 64] >> (c->pub_slot % 64) & 1) &&
	       !(b->subs[c->sub].slot_busy[c->sub_slot / 64] >> (c->sub_slot % 64) & 1);
}

/* Connection ci into a port's list at the position the old registry had
 * it, else (a list the dead broker left half written) the first free one. */
static void adopt_list_put(uint32_t *list, const _Atomic uint32_t *old, unsigned cap, uint32_t ci)
{
	unsigned at = cap;

	for (unsigned i = 0; i < cap && at == cap; i++)
		/* relaxed: the registry is the dead broker's; nobody writes it */
		if (atomic_load_explicit(&old[i], memory_order_relaxed) == ci && list[i] == TAKT_NONE)
			at = i;
	for (unsigned i = 0; i < cap && at == cap; i++)
		if (list[i] == TAKT_NONE && atomic_load_explicit(&old[i], memory_order_relaxed) == TAKT_NONE)
			at = i;
	for (unsigned i = 0; i < cap && at == cap; i++)
		if (list[i] == TAKT_NONE)
			at = i;
	if (at < cap)
		list[at] = ci;
}

static void adopt_conns(struct broker *b, const struct seg_view *o, unsigned *dropped)
{
	const struct takt_limits *l = &b->v.lim;

	for (uint32_t ci = 0; ci < l->connections; ci++) {
		const struct takt_conn *c = &o->conns[ci];
		uint32_t st = atomic_load_explicit(&c->state, memory_order_acquire);
		struct reg_conn *rc = &b->conns[ci];

		rc->incarnation = atomic_load_explicit(&c->incarnation, memory_order_relaxed);
		if (st != SLOT_ACTIVE && st != SLOT_CLOSING && st != SLOT_ORPHAN)
			continue;
		if (!adopt_conn_ok(b, c, st)) {
			++*dropped;
			continue;
		}
		*rc = (struct reg_conn){.state = st, .pub = c->pub, .sub = c->sub, .mask = c->mask,
					.depth = c->depth, .pub_slot = c->pub_slot, .sub_slot = c->sub_slot,
					.incarnation = rc->incarnation,
					.pub_quiet = atomic_load_explicit(&c->pub_quiet, memory_order_relaxed) != 0};
		b->pubs[c->pub].slot_busy[c->pub_slot / 64] |= 1ull << (c->pub_slot % 64);
		b->subs[c->sub].slot_busy[c->sub_slot / 64] |= 1ull << (c->sub_slot % 64);
		/* in the lists (ACTIVE in both, ORPHAN in the subscriber's), at the
		 * position each had: a node reading its list across the switch
		 * to the new registry finds every entry where it was */
		if (st != SLOT_CLOSING)
			adopt_list_put(b->subs[c->sub].conns, seg_sub_conns(o, c->sub), l->pubs_per_topic, ci);
		if (st == SLOT_ACTIVE)
			adopt_list_put(b->pubs[c->pub].conns, seg_pub_conns(o, c->pub), l->subs_per_topic, ci);
		b->n_retiring += st == SLOT_CLOSING;
		b->n_orphans += st == SLOT_ORPHAN;
	}
}

/* Events by name, each listener slot's incarnation (so pushes go on from
 * where they were); who has them open and who listens comes back with each
 * node (reg_adopt_event). */
static void adopt_events(struct broker *b, const struct seg_view *o, unsigned *dropped)
{
	for (uint32_t ei = 0; ei < b->v.lim.events; ei++) {
		const struct takt_event_slot *e = &o->events[ei];
		struct reg_event *re = &b->events[ei];

		if (atomic_load_explicit(&e->state, memory_order_acquire) != SLOT_ACTIVE)
			continue;
		if (!proto_name_ok(e->name, TAKT_NAME_MAX)) {
			++*dropped;
			continue;
		}
		re->state = SLOT_ACTIVE;
		memcpy(re->name, e->name, TAKT_NAME_MAX);
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++) {
			re->lis[j].inc = e->lis[j].inc;
			re->lis[j].seg_fd = re->lis[j].efd = -1;
		}
	}
}

int reg_adopt_event(struct broker *b, struct client *cl, const struct msg_ev_readopt *m, int fds[2])
{
	const struct takt_event_lis *rec;
	struct reg_listener *li;
	struct reg_event *e;
	uint32_t j;

	if (m->index >= b->v.lim.events)
		return -EINVAL;
	e = &b->events[m->index];
	if (e->state != SLOT_ACTIVE || strncmp(e->name, m->name, TAKT_NAME_MAX))
		return -ESTALE;
	if (m->listener) {
		j = m->listener - 1;
		if (j >= TAKT_MAX_LISTENERS)
			return -EINVAL;
		rec = &b->v.events[m->index].lis[j];
		li = &e->lis[j];
		if (rec->proc != cl->proc || rec->inc != m->inc || li->inc != m->inc)
			return -EPERM;
		if (li->cl)
			return -EALREADY;
		if (!rec->seg_ino || seg_fd_ino(fds[0]) != rec->seg_ino)
			return -ESTALE;
		if (!seg_fd_is_eventfd(fds[1]))
			return -EBADF;
		li->cl = cl;
		li->seg_fd = fds[0];
		li->efd = fds[1];
	}
	cl->event_refs[m->index]++;
	return 0;
}

int reg_adopt(struct broker *b, const struct seg_view *o)
{
	const struct takt_limits *l = &b->v.lim;
	const struct takt_mgmt_header *h = o->hdr;
	unsigned dropped = 0;

	for (uint32_t i = 0; i < l->processes; i++)
		if (atomic_load_explicit(&o->procs[i].state, memory_order_acquire) == SLOT_ACTIVE)
			b->proc_state[i] = SLOT_ACTIVE; /* the caller gives each a ghost client */
	for (uint32_t i = 0; i < l->publishers; i++)
		for (unsigned j = 0; j < l->subs_per_topic; j++)
			b->pubs[i].conns[j] = TAKT_NONE;
	for (uint32_t i = 0; i < l->subscribers; i++)
		for (unsigned j = 0; j < l->pubs_per_topic; j++)
			b->subs[i].conns[j] = TAKT_NONE;
	adopt_topics_ports(b, o, &dropped);
	adopt_conns(b, o, &dropped);
	adopt_events(b, o, &dropped);
	/* The shared copy: the old body, then every entry rewritten from ours
	 * (a dropped one as free). */
	memcpy((char *)b->v.hdr + h->header_size, (const char *)h + h->header_size, b->v.mgmt_size - h->header_size);
	for (uint32_t ei = 0; ei < l->events; ei++)
		if (b->events[ei].state == SLOT_FREE)
			memset(&b->v.events[ei], 0, sizeof(b->v.events[ei]));
	for (uint32_t ti = 0; ti < l->topics; ti++)
		topic_mirror(b, ti);
	for (uint32_t pi = 0; pi < l->publishers; pi++) {
		_Atomic uint32_t *shm = seg_pub_conns(&b->v, pi);

		for (unsigned j = 0; j < l->subs_per_topic; j++)
			atomic_store_explicit(&shm[j], b->pubs[pi].conns[j], memory_order_relaxed);
		pub_mirror(b, pi);
		b->v.pubs[pi].seg_ino = b->pubs[pi].seg_ino;
	}
	for (uint32_t si = 0; si < l->subscribers; si++) {
		_Atomic uint32_t *shm = seg_sub_conns(&b->v, si);

		for (unsigned j = 0; j < l->pubs_per_topic; j++)
			atomic_store_explicit(&shm[j], b->subs[si].conns[j], memory_order_relaxed);
		sub_mirror(b, si);
		b->v.subs[si].seg_ino = b->subs[si].seg_ino;
	}
	for (uint32_t ci = 0; ci < l->connections; ci++) {
		if (b->conns[ci].state != SLOT_FREE) {
			conn_init_shared(b, ci, &b->conns[ci]);
			/* R2: what the old broker told a subscriber stays told (the
			 * orphan loop of reg_tick will not tell it again); release
			 * as in reg_tick. */
			atomic_store_explicit(&b->v.conns[ci].pub_quiet, b->conns[ci].pub_quiet, memory_order_release);
		}
		atomic_store_explicit(&b->v.conns[ci].incarnation, b->conns[ci].incarnation, memory_order_relaxed);
		conn_set_state(b, ci, b->conns[ci].state);
	}
	for (uint32_t i = 0; i < l->processes; i++)
		publish_state(&b->v.procs[i].state, b->proc_state[i]);
	return (int)dropped;
}

/* A descriptor of ours, read-only, of the same file (a segment's mode is
 * 0444, segments.c, so this gives no more than fd does). */
static int reopen_ro(int fd)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* The segment a node hands back must be the one the registry names
 * (inode), sealed as its port's was once connected. */
static int adopt_seg_ok(int fd, uint64_t ino)
{
	if (fd < 0 || !ino || seg_fd_ino(fd) != ino)
		return -ESTALE;
	return seg_fd_sealed(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) ? 0 : -EBADFD;
}

/* Our read-only view of publisher pi's pool from fd: the whole segment
 * (address space only), checked as every mapper checks it: its header
 * must still match the registry. 0, or -EPROTO / -ENOMEM. */
static int adopt_pool_map(struct broker *b, uint32_t pi, int fd)
{
	struct reg_pub *rp = &b->pubs[pi];
	struct takt_pool_layout pl;
	size_t size;
	void *map;

	layout_pool(&b->v.lim, &pl);
	size = pl.chunk_off + rp->stride * rp->n_chunks_max;
	if (seg_fd_size(fd) < size)
		return -EPROTO; /* reading past its end would fault us */
	map = seg_map_ro(fd, size);
	if (!map)
		return -ENOMEM;
	if (seg_pool_check(&b->v, &b->v.pubs[pi], map, size, &rp->pool) < 0) {
		munmap(map, size);
		memset(&rp->pool, 0, sizeof(rp->pool));
		return -EPROTO;
	}
	rp->pool_map_size = size;
	return 0;
}

/* Undoes adopt_pool_map (not pub_map_drop: the connections are the
 * registry's, and their regions stay busy). */
static void adopt_pool_unmap(struct reg_pub *rp)
{
	munmap(rp->pool.base, rp->pool_map_size);
	memset(&rp->pool, 0, sizeof(rp->pool));
}

int reg_adopt_pub(struct broker *b, struct client *cl, uint32_t pi, uint64_t id, int fd)
{
	struct reg_pub *rp;
	int r;

	if (pi >= b->v.lim.publishers)
		return -EINVAL;
	rp = &b->pubs[pi];
	if (rp->state != SLOT_ACTIVE || rp->proc != cl->proc || rp->id != id)
		return -EPERM;
	if (rp->pool_fd >= 0)
		return -EALREADY;
	r = adopt_seg_ok(fd, rp->seg_ino);
	if (r < 0)
		return r;
	if (rp->pool.base) { /* a subscriber's copy (reg_adopt_pool): its own now */
		adopt_pool_unmap(rp);
		close(rp->pool_ro_fd);
		rp->pool_ro_fd = -1;
	}
	r = adopt_pool_map(b, pi, fd);
	if (r < 0)
		return r;
	rp->pool_ro_fd = reopen_ro(fd);
	if (rp->pool_ro_fd < 0) {
		r = -errno;
		adopt_pool_unmap(rp);
		return r;
	}
	rp->pool_fd = fd;
	return 0;
}

/* A pool handed back whose publisher closed before the old broker died
 * (its slot is free, or another publisher's now): the old broker kept it
 * for its subscribers, and so do we, once it shows itself a connected
 * pool of that publisher: a sealed memfd whose header names it. 1: kept,
 * 0: we have it already. */
static int adopt_pool_left(struct broker *b, uint64_t id, int fd)
{
	struct takt_pool_header ph;

	for (unsigned i = 0; i < b->n_left; i++)
		if (b->left[i].pub_id == id)
			return 0;
	for (uint32_t i = 0; i < b->v.lim.publishers; i++)
		if (b->pubs[i].state != SLOT_FREE && b->pubs[i].id == id)
			return -ESTALE; /* a live port's id under another index */
	if (!id || !seg_fd_ino(fd) ||
	    !seg_fd_sealed(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL))
		return -ESTALE;
	if (pread(fd, &ph, sizeof(ph), 0) != (ssize_t)sizeof(ph) || ph.magic != TAKT_POOL_MAGIC ||
	    ph.abi_version != TAKT_ABI_VERSION || ph.publisher_id != id ||
	    ph.layout_digest != b->v.hdr->layout_digest)
		return -EPROTO;
	return pool_left_add(b, id, fd) ? 1 : -ENOMEM;
}

/* Our view of the rings of publisher pi's pool, from a subscriber's copy
 * (the publisher may not come back): 1 when fd is kept as its read-only
 * descriptor, 0 when we have a view already. */
static int adopt_pool_view(struct broker *b, uint32_t pi, int fd)
{
	struct reg_pub *rp = &b->pubs[pi];

	if (rp->pool.base)
		return 0; /* its publisher, or another subscriber, brought it */
	if (adopt_seg_ok(fd, rp->seg_ino) < 0) /* the very pool, sealed as a connected one is */
		return -ESTALE;
	if (adopt_pool_map(b, pi, fd) < 0)
		return -EPROTO;
	rp->pool_ro_fd = fd;
	return 1;
}

int reg_adopt_pool(struct broker *b, struct client *cl, uint32_t pi, uint32_t si, uint64_t id, int fd)
{
	const struct takt_limits *l = &b->v.lim;
	const struct reg_pub *rp;
	unsigned n = 0;
	int r;

	if (pi >= l->publishers || si >= l->subscribers)
		return -EINVAL;
	if (b->subs[si].state != SLOT_ACTIVE || b->subs[si].proc != cl->proc)
		return -EPERM;
	for (unsigned i = 0; i < b->n_maps; i++)
		n += b->maps[i].sub == si && b->maps[i].proc == cl->proc;
	if (n >= l->pubs_per_topic + l->held_max) /* more than its node has slots for */
		return -ENOSPC;
	rp = &b->pubs[pi];
	if (rp->state == SLOT_FREE || rp->id != id) {
		r = adopt_pool_left(b, id, fd);
	} else {
		/* (a publisher that closed, its connections still draining,
		 * leaves the copy to `left` as its slot frees: reg_tick) */
		r = adopt_pool_view(b, pi, fd);
	}
	if (r >= 0)
		pool_map_add(b, id, si, cl->proc);
	return r;
}

int reg_adopt_sub(struct broker *b, struct client *cl, uint32_t si, int seg_fd, int efd)
{
	struct takt_subseg_layout sl;
	struct reg_sub *rs;
	void *map;
	int r;

	if (si >= b->v.lim.subscribers)
		return -EINVAL;
	rs = &b->subs[si];
	if (rs->state != SLOT_ACTIVE || rs->proc != cl->proc)
		return -EPERM;
	if (rs->seg_fd >= 0)
		return -EALREADY;
	r = adopt_seg_ok(seg_fd, rs->seg_ino);
	if (r < 0)
		return r;
	if (!seg_fd_is_eventfd(efd))
		return -EBADF;
	layout_subseg(&b->v.lim, &sl);
	if (seg_fd_size(seg_fd) < sl.size)
		return -EPROTO;
	map = seg_map_ro(seg_fd, sl.size);
	if (!map)
		return -ENOMEM;
	r = seg_subseg_check(&b->v, si, map, sl.size, &rs->seg);
	if (r < 0) {
		munmap(map, sl.size);
		return -EPROTO;
	}
	rs->seg_ro_fd = reopen_ro(seg_fd);
	if (rs->seg_ro_fd < 0) {
		r = -errno;
		munmap(map, sl.size); /* (not sub_seg_drop: its regions stay busy) */
		memset(&rs->seg, 0, sizeof(rs->seg));
		return r;
	}
	rs->seg_fd = seg_fd;
	b->sub_efd[si] = efd;
	return 0;
}

/* Events that nobody took back are closed; every node with one open gets
 * its listeners again (a node that has one confirms it), and a slot nobody
 * listens on any more is cleared in every node (inc 0: whatever it held). */
static void adopt_settle_events(struct broker *b)
{
	for (uint32_t ei = 0; ei < b->v.lim.events; ei++) {
		struct reg_event *e = &b->events[ei];
		uint32_t refs = 0;

		if (e->state != SLOT_ACTIVE)
			continue;
		for (unsigned i = 0; i < b->n_clients_max; i++)
			if (b->clients[i].fd >= 0 && b->clients[i].event_refs)
				refs += b->clients[i].event_refs[ei];
		e->refs = b->v.events[ei].refs = refs;
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++) {
			if (!e->lis[j].cl) {
				uint32_t inc = e->lis[j].inc;

				b->v.events[ei].lis[j].proc = TAKT_NONE;
				e->lis[j].inc = 0; /* wildcard for the nodes, then back */
				listener_push(b, ei, j, true, NULL, false);
				e->lis[j].inc = inc;
			} else {
				listener_push(b, ei, j, false, NULL, false);
			}
		}
		listeners_mirror(b, ei);
		if (refs == 0) {
			for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
				listener_drop(b, ei, j);
			e->state = SLOT_FREE;
			publish_state(&b->v.events[ei].state, SLOT_FREE);
		}
	}
}

void reg_adopt_settle(struct broker *b)
{
	const struct takt_limits *l = &b->v.lim;

	for (uint32_t ci = 0; ci < l->connections; ci++) {
		struct reg_conn *rc = &b->conns[ci];

		if (rc->state == SLOT_FREE)
			continue;
		gen_bump(&b->v.pubs[rc->pub].conn_gen); /* W1: every client looks at its lists again */
		gen_bump(&b->v.subs[rc->sub].conn_gen);
	}
	q0_fence(b);
	for (uint32_t ci = 0; ci < l->connections; ci++) {
		struct reg_conn *rc = &b->conns[ci];

		if (rc->state == SLOT_CLOSING || rc->state == SLOT_ORPHAN) {
			/* Q0: snapshots after the bumps; an end that is gone is done. */
			rc->pub_done = b->pubs[rc->pub].state != SLOT_ACTIVE;
			rc->sub_done = b->subs[rc->sub].state != SLOT_ACTIVE;
			rc->pub_snap = end_active(pub_active(b, rc->pub));
			rc->sub_snap = end_active(sub_active(b, rc->sub));
		}
		if (rc->state == SLOT_ACTIVE) {
			/* Pushes the old broker owed may be lost: both nodes get
			 * the connection again (a node that has it answers at once). */
			rc->prep_owed = (conn_push(b, ci, MSG_PUSH_CONN) & ACK_PUB) != 0;
			rc->sub_owed = (conn_push(b, ci, MSG_PUSH_SUB_CONN) & ACK_SUB) != 0;
		}
	}
	b->conns_missing = true; /* pairs the old broker died before connecting */
	adopt_settle_events(b);
}

