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
 * once: a clean stop removes the socket, so there is nothing to adopt.
 */
#include "broker.h"
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
