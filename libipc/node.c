/* node.c - attaching a process to a domain's broker.
 *
 * takt_node_open connects to the broker's socket, starts the node's agent
 * thread, says HELLO, receives the management and payload segments as
 * descriptors, maps them and validates their headers. Every later request
 * goes over the same socket; when the process exits (or crashes) the socket
 * hangs up and the broker reclaims everything the process held.
 *
 * The agent is the only reader of the socket. A control call sends its
 * request and sleeps until the agent hands it the reply with its req_id
 * (or the node's timeout passes); the broker's pushes (connection changes
 * for this node's publishers) are handled by the agent at once, so publish
 * never waits for the broker or makes a syscall to learn of a subscriber.
 *
 * G0, a new connection: the agent maps the subscriber's segment (read-only,
 * pushed with the eventfd), stores it in sub_maps and then installs the
 * eventfd in efd_tab (seq_cst exchange), which publishes both. A connection
 * is prepared (pub.c) only once both are there, so every push into its
 * ring is followed by the pusher's own wake-up check (P1).
 *
 * G1, retiring an eventfd and that mapping: the agent removes it from
 * efd_tab (seq_cst),
 * then waits until every publisher port of this node has been outside
 * publish since (its Q0 `active` even, or moved; with membarrier the
 * agent's membarrier is the fence on the publishing side, as the broker's
 * is for Q0), and only then closes it: publish looks the fd up inside its
 * Q0 bracket, so it never writes to a number that was closed and reused
 * (nor reads a segment that was unmapped).
 *
 * G1R, the segment outlives the eventfd: a publisher lets a connection
 * that left go in its own thread, at its next look (pub_reclaim), and
 * first drains the connection's return ring, which lives in the
 * subscriber's segment: what the subscriber released before it left is
 * released, not reclaimed (a service's request it finished is not reset;
 * on a connection the publishing thread had adopted and the subscriber
 * had marked, which every connection that carried a sample is).
 * So once quiet (G1) the agent closes the eventfd and the pidfd but keeps
 * the mapping until no slot of the node's publishers serves that
 * connection's incarnation any more (pub_conn_held: acquire of the slot's
 * FREE, which pub_reclaim stores with release after its last read). Such
 * a mapping waits for the agent's next wake-up (a push, the node's close)
 * rather than a timer: it costs address space and the departed
 * subscriber's segment, no syscall.
 */
#include "client.h"
#include "fault.h"
#include "probes.h"
#include "sys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char *program_invocation_short_name;

/* Set by tests of a -DTAKT_FAULTS=ON build (fault.h); never called otherwise. */
__attribute__((visibility("default"))) void (*takt__fault_hook)(const char *point);

#define NODE_TIMEOUT_DEFAULT_MS 10000

int node_copy_topic(char *dst, const char *src, bool service)
{
	if (!service)
		return node_copy_name(dst, src);
	if (!src || !proto_service_topic(src, TAKT_NAME_MAX, NULL, NULL))
		return -EINVAL;
	memset(dst, 0, TAKT_NAME_MAX);
	strcpy(dst, src);
	return 0;
}

int node_copy_name(char *dst, const char *src)
{
	if (!src || !proto_name_ok(src, TAKT_NAME_MAX))
		return -EINVAL;
	memset(dst, 0, TAKT_NAME_MAX);
	strcpy(dst, src);
	return 0;
}

/* A late reply to a call that timed out: the broker did what we asked, but
 * nobody holds the port it opened. Close it again (the request goes out
 * now, its reply is dropped as stale in turn). Runs in the agent. */
static void node_undo_stale(void *user, const struct proto_reply *rep, size_t size, const int *fds,
			    unsigned n_fds)
{
	takt_node *n = user;
	struct msg_index req = {.index = rep->index};
	uint16_t close_type;

	(void)size;
	(void)fds;
	(void)n_fds;
	if (rep->status != 0)
		return;
	switch (rep->hdr.type & ~PROTO_REPLY_FLAG) {
	case MSG_PUB_OPEN: close_type = MSG_PUB_CLOSE; break;
	case MSG_SUB_OPEN: close_type = MSG_SUB_CLOSE; break;
	case MSG_EVENT_OPEN: close_type = MSG_EVENT_CLOSE; break;
	case MSG_EVENT_LISTEN: /* only the listener: the handle stays open */
		close_type = MSG_EVENT_CLOSE;
		req.index = rep->index >> 8;
		req.reserved = ((rep->index & 0xff) + 1) | EVENT_LISTENER_ONLY;
		break;
	default: return;
	}
	/* next_req: a counter callers and the agent both draw ids from; the
	 * RMW makes each id unique, nothing is published through it. */
	proto_hdr_init(&req.hdr, close_type, sizeof(req), atomic_fetch_add(&n->next_req, 1) + 1);
	proto_send(n->sock, &req, sizeof(req), NULL, 0);
}

static void close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

int node_call(takt_node *n, uint16_t type, void *req, size_t req_size, void *reply,
	      size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds)
{
	return node_call_fd(n, type, req, req_size, -1, reply, reply_size, fds, max_fds, ret_n_fds);
}

int node_call_fd(takt_node *n, uint16_t type, void *req, size_t req_size, int send_fd, void *reply,
		 size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds)
{
	uint32_t id = atomic_fetch_add(&n->next_req, 1) + 1; /* unique ids only, see node_undo_stale */
	struct timespec dl;
	int r = 0;

	if (ret_n_fds)
		*ret_n_fds = 0;
	if (id == 0) /* 0 means "nobody waits" */
		id = atomic_fetch_add(&n->next_req, 1) + 1;
	proto_hdr_init(req, type, (uint32_t)req_size, id);
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += n->timeout_ms / 1000;
	dl.tv_nsec += (long)(n->timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&n->lock);
	pthread_mutex_lock(&n->rx_lock);
	/* A restarted broker is taking us back: the call waits for it (within
	 * its timeout) rather than fail while the answer is moments away. */
	while (n->dead && n->rejoining)
		if (pthread_cond_timedwait(&n->rx_cond, &n->rx_lock, &dl) == ETIMEDOUT)
			break;
	if (n->dead) {
		pthread_mutex_unlock(&n->rx_lock);
		pthread_mutex_unlock(&n->lock);
		return -ENOTCONN;
	}
	n->wait_req = id;
	n->rx_ready = false;
	pthread_mutex_unlock(&n->rx_lock);
	r = proto_send(n->sock, req, req_size, &send_fd, send_fd >= 0 ? 1 : 0);
	pthread_mutex_lock(&n->rx_lock);
	while (r == 0 && !n->rx_ready && !n->dead)
		if (pthread_cond_timedwait(&n->rx_cond, &n->rx_lock, &dl) == ETIMEDOUT && !n->rx_ready)
			r = -ETIMEDOUT;
	n->wait_req = 0; /* a reply arriving from now on is stale (node_undo_stale) */
	if (r < 0) {
		r = r == -EPIPE || r == -ECONNRESET ? -ENOTCONN : r;
	} else if (!n->rx_ready) {
		r = -ENOTCONN;
	} else {
		r = proto_reply_check(&n->rx.r, n->rx_len, req, reply_size);
		if (r < 0 || n->rx_nfds > max_fds) {
			close_fds(n->rx_fds, n->rx_nfds);
			n->rx_nfds = 0;
			r = r < 0 ? r : -EPROTO;
		}
		if (r == 0 || (size_t)n->rx_len <= reply_size)
			memcpy(reply, &n->rx, (size_t)n->rx_len < reply_size ? (size_t)n->rx_len : reply_size);
		if (n->rx_nfds)
			memcpy(fds, n->rx_fds, n->rx_nfds * sizeof(int));
		if (ret_n_fds)
			*ret_n_fds = n->rx_nfds;
		n->rx_ready = false;
	}
	pthread_mutex_unlock(&n->rx_lock);
	pthread_mutex_unlock(&n->lock);
	return r;
}

/* ---- the agent ---------------------------------------------------------- */

/* G1: whether every port in the snapshot has been outside publish since. */
static bool retired_quiet(takt_node *n, const struct node_retired_fd *rf)
{
	/* E2: seq_cst pairs with the notifiers' increment (event.c). */
	if (rf->ev)
		return atomic_load_explicit(&n->ev_inflight, memory_order_seq_cst) == 0;
	for (unsigned i = 0; i < rf->n; i++)
		if (!pub_port_moved(n, rf->w[i].pub, rf->w[i].snap))
			return false;
	return true;
}

/* G1: efd (and the subscriber's segment mapped with it) left efd_tab (a
 * seq_cst exchange just before); close it once no publish of this node can
 * still be using it. */
static void agent_retire_fd(takt_node *n, int fd, const struct node_submap *sm, uint32_t ci, uint32_t inc)
{
	struct node_retired_fd *rf;

	if (n->q0_light)
		syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
	else
		atomic_thread_fence(memory_order_seq_cst);
	rf = pub_port_snapshot(n);
	if (!rf)
		return; /* out of memory: keep the fd open rather than risk a reuse */
	rf->fd = fd;
	rf->pidfd = sm->pidfd;
	rf->map = sm->base;
	rf->map_size = sm->size;
	rf->conn = ci;
	rf->incarnation = inc;
	rf->ev = false;
	rf->next = n->retired;
	n->retired = rf;
}

/* Whether a retired eventfd waits for quiet (G1): the agent looks again
 * in 1 ms. A mapping alone waits for its next wake-up (G1R). */
static bool agent_retired_waiting(const takt_node *n)
{
	for (const struct node_retired_fd *rf = n->retired; rf; rf = rf->next)
		if (rf->fd >= 0)
			return true;
	return false;
}

static void agent_close_retired(takt_node *n, bool all)
{
	for (struct node_retired_fd **pp = &n->retired; *pp;) {
		struct node_retired_fd *rf = *pp;

		if (!all && rf->fd >= 0 && !retired_quiet(n, rf)) {
			pp = &rf->next;
			continue;
		}
		if (rf->fd >= 0)
			close(rf->fd);
		if (rf->pidfd >= 0)
			close(rf->pidfd);
		rf->fd = rf->pidfd = -1;
		if (!all && !rf->ev && rf->map && pub_conn_held(n, rf->conn, rf->incarnation)) {
			pp = &rf->next; /* G1R: its publisher has not let it go */
			continue;
		}
		*pp = rf->next;
		if (rf->map)
			munmap(rf->map, rf->map_size);
		free(rf);
	}
}

/* E2: a listener's queue left the table (a seq_cst store of inc just
 * before): unmap it and close its eventfd once no notify runs. */
static void agent_retire_listener(takt_node *n, struct node_listener *l)
{
	struct node_retired_fd *rf = malloc(sizeof(*rf));

	if (!rf)
		return; /* out of memory: keep them rather than risk a reuse */
	*rf = (struct node_retired_fd){.fd = l->efd, .pidfd = -1, .map = l->sl.q, .map_size = l->sl.size, .ev = true};
	rf->next = n->retired;
	n->retired = rf;
}

/* The listener is in our table (or cannot be): its EVENT_LISTEN waits for
 * this from every node with the event open. */
static void agent_ev_ready(takt_node *n, const struct msg_push_ev *m)
{
	struct msg_push_ev ack = *m;

	proto_hdr_init(&ack.hdr, MSG_EV_READY, sizeof(ack), 0);
	proto_send(n->sock, &ack, sizeof(ack), NULL, 0);
}

/* A listener of an event this node has open (PUSH_EV_LISTENER), or one
 * that left (PUSH_EV_GONE). */
static void agent_push_ev(takt_node *n, const struct msg_push_ev *m, bool gone, const int *fds, unsigned nf)
{
	struct node_listener *l;
	struct seg_listener sl;
	void *base;
	size_t size;

	if (m->event >= n->v.lim.events || m->listener >= TAKT_MAX_LISTENERS || (!gone && nf < 2))
		goto out;
	l = &n->ev_lis[m->event * TAKT_MAX_LISTENERS + m->listener];
	/* relaxed: only this thread writes inc. */
	if (atomic_load_explicit(&l->inc, memory_order_relaxed) == m->inc && !gone) {
		agent_ev_ready(n, m); /* a second handle of ours opened it: we have it */
		goto out;
	}
	if (atomic_load_explicit(&l->inc, memory_order_relaxed)) {
		if (gone && m->inc && atomic_load_explicit(&l->inc, memory_order_relaxed) != m->inc)
			goto out; /* about an earlier listener in the slot (0: any, adopt.c) */
		atomic_store_explicit(&l->inc, 0, memory_order_seq_cst); /* E2 */
		agent_retire_listener(n, l);
	}
	if (gone || seg_map_fd(fds[0], PROT_READ | PROT_WRITE, &base, &size) < 0)
		goto out;
	if (seg_listener_check(&n->v, m->event, m->listener, base, size, &sl) < 0) {
		munmap(base, size);
		goto out;
	}
	l->sl = sl;
	l->efd = fds[1];
	/* E2: release publishes sl and efd to notifiers (acquire of inc). */
	atomic_store_explicit(&l->inc, m->inc, memory_order_release);
	close(fds[0]);
	agent_ev_ready(n, m);
	return;
out:
	if (!gone && nf >= 2)
		agent_ev_ready(n, m); /* unusable here: the listen need not wait for us */
	close_fds(fds, nf);
}

int node_submap_open(takt_node *n, uint32_t sub, int fd, struct node_submap *out)
{
	int r = seg_map_fd(fd, PROT_READ, &out->base, &out->size);

	if (r < 0)
		return r;
	r = seg_subseg_check(&n->v, sub, out->base, out->size, &out->ss);
	if (r < 0) {
		munmap(out->base, out->size);
		memset(out, 0, sizeof(*out));
	}
	return r;
}

/* A0: tells the broker a pushed connection is ready on our side. */
static void agent_ack(takt_node *n, const struct msg_push_conn *m)
{
	struct msg_conn_ready ack = {.conn = m->conn, .incarnation = m->incarnation};

	proto_hdr_init(&ack.hdr, MSG_CONN_READY, sizeof(ack), 0);
	proto_send(n->sock, &ack, sizeof(ack), NULL, 0);
}

static void agent_push(takt_node *n, const void *buf, long len, const int *fds, unsigned nf)
{
	const struct msg_push_conn *m = buf;
	uint16_t type = (uint16_t)(m->hdr.type & ~PROTO_PUSH_FLAG);
	unsigned want = type == MSG_PUSH_CONN ? 2 : type == MSG_PUSH_SUB_CONN ? 1 : 0;
	/* PUSH_CONN may carry a third: the subscriber's pidfd */
	unsigned keep = type == MSG_PUSH_CONN ? 3 : want;

	if (type == MSG_PUSH_EV_LISTENER || type == MSG_PUSH_EV_GONE) {
		if (len == (long)sizeof(struct msg_push_ev) && n->ev_lis) {
			pthread_mutex_lock(&n->rx_lock); /* orders the tables' allocation before us */
			pthread_mutex_unlock(&n->rx_lock);
			agent_push_ev(n, buf, type == MSG_PUSH_EV_GONE, fds, nf);
		} else {
			close_fds(fds, nf);
		}
		return;
	}
	int fd = nf ? fds[0] : -1, pidfd = type == MSG_PUSH_CONN && nf > 2 ? fds[2] : -1, r;
	struct node_submap sm = {0};
	uint64_t old;

	close_fds(fds + keep, nf > keep ? nf - keep : 0);
	TAKT_FAULT("agent_push");
	pthread_mutex_lock(&n->rx_lock); /* orders the tables' allocation before us */
	pthread_mutex_unlock(&n->rx_lock);
	if (len != (long)sizeof(*m) || !n->efd_tab || m->conn >= n->v.lim.connections ||
	    m->sub >= n->v.lim.subscribers || m->pub >= n->v.lim.publishers || nf < want) {
		close_fds(fds, nf < keep ? nf : keep);
		return;
	}
	/* relaxed: only this thread writes efd_tab. A restarted broker pushes
	 * every connection again (adopt.c): one we have is confirmed as is. */
	old = atomic_load_explicit(&n->efd_tab[m->conn], memory_order_relaxed);
	if (type == MSG_PUSH_CONN && old && (uint32_t)(old >> 32) == m->incarnation) {
		close_fds(fds, nf < keep ? nf : keep);
		agent_ack(n, m);
		return;
	}
	if (type == MSG_PUSH_CONN) {
		r = node_submap_open(n, m->sub, fds[1], &sm);
		close(fds[1]); /* the mapping keeps it */
		if (r < 0) { /* cannot use it: the broker need not wait for us */
			close(fd);
			if (pidfd >= 0)
				close(pidfd);
			agent_ack(n, m);
			return;
		}
		sm.pidfd = pidfd;
		/* G0: retire what the slot held, install the subscriber's
		 * segment and then its eventfd (seq_cst: publishes both),
		 * prepare the slot with history (PS1), then look at park. */
		old = atomic_exchange_explicit(&n->efd_tab[m->conn], 0, memory_order_seq_cst);
		if (old)
			agent_retire_fd(n, (int)(uint32_t)old - 1, &n->sub_maps[m->conn], m->conn, (uint32_t)(old >> 32));
		n->sub_maps[m->conn] = sm;
		atomic_exchange_explicit(&n->efd_tab[m->conn], (uint64_t)m->incarnation << 32 | (uint32_t)(fd + 1),
					 memory_order_seq_cst);
		TAKT_FAULT("agent_installed");
		pthread_mutex_lock(&n->ports_lock);
		r = pub_agent_connect(n, m); /* a publisher still opening prepares it itself */
		pthread_mutex_unlock(&n->ports_lock);
		if (r == -EALREADY) /* A0: confirm only once the history is in the ring */
			pub_agent_wait(n, m);
		agent_ack(n, m);
	} else if (type == MSG_PUSH_SUB_CONN) {
		pthread_mutex_lock(&n->ports_lock);
		r = sub_agent_connect(n, m, fd); /* on success the slot keeps fd */
		if (r < 0 && r != -EALREADY) /* not mapped: the broker need not keep it for us */
			node_pool_done(n, n->v.pubs[m->pub].id, m->sub);
		pthread_mutex_unlock(&n->ports_lock);
		if (r < 0)
			close(fd);
		agent_ack(n, m);
	} else if (type == MSG_PUSH_CONN_GONE) {
		/* relaxed: only this thread writes efd_tab; the exchange orders. */
		old = atomic_load_explicit(&n->efd_tab[m->conn], memory_order_relaxed);
		if (old && (uint32_t)(old >> 32) == m->incarnation) {
			atomic_exchange_explicit(&n->efd_tab[m->conn], 0, memory_order_seq_cst); /* G1 */
			agent_retire_fd(n, (int)(uint32_t)old - 1, &n->sub_maps[m->conn], m->conn, m->incarnation);
		}
		/* SK0 (service.c): a service client asleep on its responses
		 * looks at its requests, which came back reclaimed. */
		pthread_mutex_lock(&n->ports_lock);
		pub_agent_gone(n, m->pub);
		pthread_mutex_unlock(&n->ports_lock);
	} else if (fd >= 0) {
		close(fd);
	}
}

void node_pool_done(takt_node *n, uint64_t publisher_id, uint32_t sub)
{
	struct msg_pool_done m = {.publisher_id = publisher_id, .sub = sub};

	proto_hdr_init(&m.hdr, MSG_POOL_DONE, sizeof(m), 0);
	proto_send(n->sock, &m, sizeof(m), NULL, 0);
}

void node_kick(takt_node *n)
{
	uint64_t one = 1;

	if (write(n->kick_fd, &one, sizeof(one)) < 0) {
		/* the counter is near overflow: the agent is awake anyway */
	}
}

/* ---- a restarted broker (shm-broker/adopt.c) ----------------------------
 *
 * After the hang-up the agent waits for the next broker at the socket path
 * it had (inotify on its directory, and a retry at most every 250 ms), then
 * hands back the old registry, its process index and epoch (READOPT), each
 * port with its segment (PUB_READOPT, SUB_READOPT) and asks for the new
 * registry (READOPT_DONE). That registry has the same layout and, at this
 * moment, the same content as the old one for every entry this node reads;
 * it is mapped over the old one at the same address (MAP_FIXED replaces the
 * mapping in one step, so a publish or take reading registry words on
 * another thread sees the old or the new page, both valid), and calls work
 * again. The data path never stopped. A broker that refuses us (another
 * epoch, a process it reclaimed meanwhile) leaves the node detached for
 * good: calls fail with -ENOTCONN, as before a restart could be survived. */

#define READOPT_RETRY_MAX_MS 250

/* A reply to req_id on s; pushes in between are handled as usual. Its
 * length, or a negative errno (-ECANCELED: the node is closing). */
static long readopt_recv(takt_node *n, int s, uint32_t req_id, void *buf, size_t size, int *fds, unsigned *nf)
{
	uint64_t end = takt_now_ns() + (uint64_t)n->timeout_ms * 1000000u;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = s, .events = POLLIN}, {.fd = n->kick_fd, .events = POLLIN}};
		uint64_t now = takt_now_ns();
		long len;

		if (atomic_load(&n->closing))
			return -ECANCELED;
		if (now >= end)
			return -ETIMEDOUT;
		if (poll(pfd, 2, (int)((end - now) / 1000000u) + 1) <= 0 || !(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		*nf = 0;
		len = proto_recv(s, buf, size, fds, TAKT_PROTO_MAX_FDS, nf);
		if (len == 0)
			return -ECONNRESET;
		if (len == -EINTR || len == -EAGAIN)
			continue;
		if (len < 0)
			return len;
		if (proto_is_push(buf, len)) {
			agent_push(n, buf, len, fds, *nf);
			continue;
		}
		if (len >= (long)sizeof(struct proto_reply) && ((struct proto_reply *)buf)->hdr.req_id == req_id)
			return len;
		close_fds(fds, *nf);
	}
}

/* One readopt request and its status (descriptors of the reply in fds). */
static int readopt_call(takt_node *n, int s, uint16_t type, void *req, size_t size, const int *send, unsigned n_send,
			void *reply, size_t reply_size, int *fds, unsigned *nf)
{
	static _Atomic uint32_t next_id;
	uint32_t id = atomic_fetch_add(&next_id, 1) + 1;
	long len;
	int r;

	proto_hdr_init(req, type, (uint32_t)size, id);
	r = proto_send(s, req, size, send, n_send);
	if (r < 0)
		return r == -EPIPE ? -ECONNRESET : r;
	len = readopt_recv(n, s, id, reply, reply_size, fds, nf);
	if (len < 0)
		return (int)len;
	r = proto_reply_check(reply, len, req, reply_size);
	if (r < 0)
		close_fds(fds, *nf);
	return r;
}

/* A call's error after which the exchange cannot go on: the broker left,
 * the node is closing, or it does not answer. */
static bool readopt_lost(int r)
{
	return r == -ECONNRESET || r == -ECANCELED || r == -ETIMEDOUT;
}

static void handbacks_close(int (*fds)[2], size_t stride, unsigned k)
{
	for (unsigned i = 0; i < k; i++, fds = (int (*)[2])((char *)fds + stride))
		for (int j = 0; j < 2; j++)
			if ((*fds)[j] >= 0)
				close((*fds)[j]);
}

/* The ports, each with its segment (PUB_READOPT, SUB_READOPT), and the
 * publishers' pools our subscribers map (POOL_READOPT: a publisher that
 * died while no broker ran cannot hand its pool back, and the broker needs
 * to see its rings to let our subscribers take what it had sent). A port
 * the broker does not take back is closed by it at READOPT_DONE: its
 * handle publishes to (takes from) no one from then on. The descriptors
 * are copies, so the calls need not hold ports_lock (a push handled
 * meanwhile takes it) and a port closed meanwhile costs nothing. */
static int readopt_ports(takt_node *n, int s, uint16_t type)
{
	uint32_t max = type == MSG_PUB_READOPT ? n->v.lim.publishers
		       : type == MSG_SUB_READOPT ? n->v.lim.subscribers
						 : (uint32_t)n->v.lim.subscribers * 4 + 64;
	unsigned n_send = type == MSG_SUB_READOPT ? 2 : 1, k;
	struct port_handback *hb = malloc(max * sizeof(*hb));
	int r = 0;

	if (!hb)
		return -ENOMEM;
	pthread_mutex_lock(&n->ports_lock);
	k = type == MSG_PUB_READOPT ? pub_handbacks(n, hb, max)
	    : type == MSG_SUB_READOPT ? sub_handbacks(n, hb, max)
				      : pool_handbacks(n, hb, max);
	pthread_mutex_unlock(&n->ports_lock);
	for (unsigned i = 0; i < k && !readopt_lost(r); i++) {
		struct msg_port_readopt req = {.index = hb[i].index, .sub = hb[i].sub, .id = hb[i].id};
		struct proto_reply rep;
		int fds[TAKT_PROTO_MAX_FDS];
		unsigned nf = 0;

		if (hb[i].fd[0] < 0 || (n_send == 2 && hb[i].fd[1] < 0))
			continue; /* out of descriptors: the broker closes it */
		r = readopt_call(n, s, type, &req, sizeof(req), hb[i].fd, n_send, &rep, sizeof(rep), fds, &nf);
		close_fds(fds, r == 0 ? nf : 0);
	}
	handbacks_close(&hb[0].fd, sizeof(*hb), k);
	free(hb);
	return readopt_lost(r) ? r : 0;
}

/* Each event handle, a listener with its queue and eventfd. A handle the
 * broker does not take back hears and reaches nobody from then on. */
static int readopt_events(takt_node *n, int s)
{
	uint32_t max = n->v.lim.events * TAKT_MAX_LISTENERS + 64;
	struct event_handback *hb = malloc(max * sizeof(*hb));
	unsigned k;
	int r = 0;

	if (!hb)
		return -ENOMEM;
	pthread_mutex_lock(&n->ports_lock);
	k = event_handbacks(n, hb, max); /* descriptors duplicated: ours to close */
	pthread_mutex_unlock(&n->ports_lock);
	for (unsigned i = 0; i < k && !readopt_lost(r); i++) {
		struct msg_ev_readopt req = {.index = hb[i].index, .listener = hb[i].listener, .inc = hb[i].inc};
		struct proto_reply rep;
		int fds[TAKT_PROTO_MAX_FDS];
		unsigned nf = 0;

		if (hb[i].listener && (hb[i].fd[0] < 0 || hb[i].fd[1] < 0))
			continue;
		memcpy(req.name, hb[i].name, sizeof(req.name));
		r = readopt_call(n, s, MSG_EV_READOPT, &req, sizeof(req), hb[i].fd, hb[i].listener ? 2 : 0, &rep,
				 sizeof(rep), fds, &nf);
		close_fds(fds, r == 0 ? nf : 0);
	}
	handbacks_close(&hb[0].fd, sizeof(*hb), k);
	free(hb);
	return readopt_lost(r) ? r : 0;
}

/* The new registry over the old, at the same address, once it checks out:
 * the same size, layout, limits and broker flags (Q0's mode cannot change
 * under running publishes). */
static int readopt_remap(takt_node *n, int fd, uint64_t epoch)
{
	struct seg_view v;
	void *tmp, *at;
	size_t size;
	int r = seg_map_fd(fd, PROT_READ, &tmp, &size);

	if (r < 0)
		return r;
	r = size == n->mgmt_size ? seg_view_init(&v, tmp, size) : -EPROTO;
	if (r == 0 && (memcmp(&v.lim, &n->v.lim, sizeof(v.lim)) || v.hdr->epoch != epoch ||
		       v.hdr->layout_digest != n->v.hdr->layout_digest))
		r = -EPROTO;
	munmap(tmp, size);
	if (r < 0)
		return r;
	at = mmap(n->mgmt, size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	return at == n->mgmt ? 0 : -errno;
}

/* RS0: takt_node_topics_wait sleeps on the futex of topics_gen (TG0,
 * layout.h), a shared futex keyed by the registry's file and offset, not
 * by the address: after the remap, the new broker's wakes reach only
 * sleepers of its own file. So, the new registry mapped: the count goes up
 * (release: pairs with the acquire in takt_node_topics_wait, whose waiter
 * then reads the new page), the sleepers of the old file are woken through
 * a short mapping of it (old_fd, still open; one sleeping since before the
 * remap, even since before the count went up, is among them), and those of
 * the new one through the address. A waiter that goes to sleep after both
 * wakes read the count before it went up and sits on the new file, which
 * the new broker wakes at its next change. */
static void registry_swapped(takt_node *n, int old_fd)
{
	size_t off = (size_t)((const char *)&n->v.hdr->topics_gen - (const char *)n->mgmt);
	void *old = mmap(NULL, n->mgmt_size, PROT_READ, MAP_SHARED, old_fd, 0);

	atomic_fetch_add_explicit(&n->registry_swaps, 1, memory_order_release);
	if (old != MAP_FAILED) {
		sys_futex_wake((const _Atomic uint32_t *)((const char *)old + off), INT32_MAX, 1);
		munmap(old, n->mgmt_size);
	}
	sys_futex_wake(&n->v.hdr->topics_gen, INT32_MAX, 1);
}

static void readopt_rejoining(takt_node *n, bool on)
{
	pthread_mutex_lock(&n->rx_lock);
	n->rejoining = on;
	pthread_cond_broadcast(&n->rx_cond);
	pthread_mutex_unlock(&n->rx_lock);
}

static int readopt_switch(takt_node *n, int s, struct msg_readopt *req, const int send[2]);

static int readopt_handshake(takt_node *n, int s)
{
	/* relaxed: only this thread writes it (takt_node_epoch reads) */
	struct msg_readopt req = {.abi_version = TAKT_ABI_VERSION, .proc = n->proc,
				  .epoch = atomic_load_explicit(&n->epoch, memory_order_relaxed),
				  .layout_digest = n->v.hdr->layout_digest};
	int send[2] = {n->mgmt_fd, -1};
	int r;

	memcpy(req.name, n->v.procs[n->proc].name, sizeof(req.name));
	req.name[sizeof(req.name) - 1] = 0;
	send[1] = (int)syscall(SYS_pidfd_open, getpid(), 0);
	/* Pushes from now on are the new broker's: acks go to it. */
	pthread_mutex_lock(&n->lock);
	close(n->sock);
	n->sock = s;
	pthread_mutex_unlock(&n->lock);
	readopt_rejoining(n, true);
	r = readopt_switch(n, s, &req, send);
	if (send[1] >= 0)
		close(send[1]);
	if (r == 0)
		r = readopt_ports(n, s, MSG_PUB_READOPT);
	if (r == 0)
		r = readopt_ports(n, s, MSG_SUB_READOPT);
	if (r == 0)
		r = readopt_ports(n, s, MSG_POOL_READOPT);
	if (r == 0)
		r = readopt_events(n, s);
	if (r == 0) {
		struct msg_hello_reply done;
		int fds[TAKT_PROTO_MAX_FDS];
		unsigned nf = 0;

		r = readopt_call(n, s, MSG_READOPT_DONE, &(struct msg_empty){0}, sizeof(struct msg_empty), NULL, 0,
				 &done, sizeof(done), fds, &nf);
		close_fds(fds, r == 0 ? nf : 0);
	}
	if (r < 0) {
		readopt_rejoining(n, false);
		return r;
	}
	n->readopts++;
	/* Our process index is ours again, and so our lanes: notifies go on.
	 * seq_cst: pairs with the notifiers' load (event.c). */
	atomic_store_explicit(&n->ev_gone, false, memory_order_seq_cst);
	pthread_mutex_lock(&n->rx_lock);
	n->dead = false;
	n->rejoining = false;
	pthread_cond_broadcast(&n->rx_cond);
	pthread_mutex_unlock(&n->rx_lock);
	return 0;
}

/* READOPT, and at its answer the switch to the new registry: before this
 * node says READOPT_DONE, so once the broker settles (after the last
 * DONE) every node reads the registry it changes, and its Q0 snapshots
 * then mean what they say. */
static int readopt_switch(takt_node *n, int s, struct msg_readopt *req, const int send[2])
{
	struct msg_hello_reply rep;
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned nf = 0;
	int r;

	r = readopt_call(n, s, MSG_READOPT, req, sizeof(*req), send, send[1] >= 0 ? 2 : 1, &rep, sizeof(rep), fds, &nf);
	if (r < 0)
		return r;
	r = nf == 1 ? readopt_remap(n, fds[0], rep.epoch) : -EPROTO;
	if (r < 0) {
		close_fds(fds, nf);
		return r;
	}
	registry_swapped(n, n->mgmt_fd);
	close(n->mgmt_fd);
	n->mgmt_fd = fds[0];
	/* relaxed: a value on its own; nothing is published through it */
	atomic_store_explicit(&n->epoch, rep.epoch, memory_order_relaxed);
	return 0;
}

/* Errors after which trying again cannot help: the broker refused us. */
static bool readopt_final(int r)
{
	return r != -ENOENT && r != -ECONNREFUSED && r != -ECONNRESET && r != -ETIMEDOUT && r != -EAGAIN &&
	       r != -EINTR && r != -ENOMEM && r != -EMFILE;
}

static int node_readopt(takt_node *n)
{
	char dir[sizeof(n->sock_path)], *slash;
	int ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK), wait_ms = 1, r;

	snprintf(dir, sizeof(dir), "%s", n->sock_path);
	slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	if (ino >= 0 && inotify_add_watch(ino, dir, IN_CREATE | IN_MOVED_TO | IN_ATTRIB) < 0) {
		close(ino);
		ino = -1; /* retries alone find it */
	}
	for (;;) {
		struct pollfd pfd[2] = {{.fd = ino, .events = POLLIN}, {.fd = n->kick_fd, .events = POLLIN}};
		char ev[4096];
		int s;

		agent_close_retired(n, false);
		if (atomic_load(&n->closing)) {
			r = -ECANCELED;
			break;
		}
		r = proto_connect_path(n->sock_path, &s);
		if (r == 0) {
			r = readopt_handshake(n, s); /* s is the node's socket from now on */
			if (r == 0 || readopt_final(r))
				break;
			wait_ms = 1;
		}
		poll(pfd, 2, agent_retired_waiting(n) ? 1 : wait_ms);
		/* Something happened in the directory (the socket bound, its mode
		 * set): the broker listens within moments, so try again soon;
		 * else back off. */
		wait_ms = pfd[0].revents & POLLIN ? 1
			  : wait_ms * 2 > READOPT_RETRY_MAX_MS ? READOPT_RETRY_MAX_MS : wait_ms * 2;
		while (ino >= 0 && read(ino, ev, sizeof(ev)) > 0)
			;
	}
	if (ino >= 0)
		close(ino);
	if (r < 0 && r != -ECANCELED) {
		n->readopt_err = r;
		/* refused for good: hang up, so the broker need not wait for us */
		pthread_mutex_lock(&n->lock);
		shutdown(n->sock, SHUT_RDWR);
		pthread_mutex_unlock(&n->lock);
	}
	return r;
}

static void agent_serve(takt_node *n);
static int node_detach(takt_node *n);

static void *agent_main(void *arg)
{
	takt_node *n = arg;

	do
		agent_serve(n);
	while (node_detach(n) == 0 && node_readopt(n) == 0);
	return NULL;
}

/* The agent while a broker serves: replies and pushes, until it hangs up
 * (or the node closes). */
static void agent_serve(takt_node *n)
{
	union {
		struct proto_reply r;
		char bytes[TAKT_PROTO_MAX_MSG];
	} buf;
	int fds[TAKT_PROTO_MAX_FDS];

	for (;;) {
		struct pollfd pfd[2] = {{.fd = n->sock, .events = POLLIN}, {.fd = n->kick_fd, .events = POLLIN}};
		unsigned nf = 0;
		uint64_t kicks;
		long len;

		agent_close_retired(n, false);
		if (poll(pfd, 2, agent_retired_waiting(n) ? 1 : -1) <= 0)
			continue; /* timeout (a retired fd waits) or EINTR */
		if (pfd[1].revents & POLLIN) {
			if (read(n->kick_fd, &kicks, sizeof(kicks)) < 0) {
				/* nothing to read: another wake-up took it */
			}
			pthread_mutex_lock(&n->ports_lock);
			sub_agent_reap(n);
			pthread_mutex_unlock(&n->ports_lock);
		}
		if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		len = proto_recv(n->sock, &buf, sizeof(buf), fds, TAKT_PROTO_MAX_FDS, &nf);
		if (len == 0 || (len < 0 && len != -EMSGSIZE && len != -EINTR && len != -EAGAIN))
			break; /* the broker hung up, or the node is closing (shutdown) */
		if (len < 0) {
			close_fds(fds, nf);
			continue;
		}
		if (proto_is_push(&buf, len)) {
			agent_push(n, &buf, len, fds, nf);
			continue;
		}
		pthread_mutex_lock(&n->rx_lock);
		if (len >= (long)sizeof(buf.r) && n->wait_req && buf.r.hdr.req_id == n->wait_req && !n->rx_ready) {
			memcpy(&n->rx, &buf, (size_t)len);
			n->rx_len = len;
			memcpy(n->rx_fds, fds, nf * sizeof(int));
			n->rx_nfds = nf;
			n->rx_ready = true;
			pthread_cond_broadcast(&n->rx_cond);
			pthread_mutex_unlock(&n->rx_lock);
			continue;
		}
		pthread_mutex_unlock(&n->rx_lock);
		/* A reply to a call that gave up waiting: it must not answer a
		 * later one; undo what the broker did for it. */
		if (len >= (long)sizeof(buf.r) && buf.r.hdr.magic == TAKT_PROTO_MAGIC)
			node_undo_stale(n, &buf.r, (size_t)len, fds, nf);
		close_fds(fds, nf);
	}
}

/* The broker hung up: calls fail at once from now on (-ENOTCONN), the
 * data path goes on. 0 when the agent should wait for the next broker
 * (the node is not closing). */
static int node_detach(takt_node *n)
{
	/* Our process index may be given to another process: our lanes in
	 * listeners' queues are not ours any more (event.c). Events do not
	 * come back with a restarted broker (yet). */
	atomic_store_explicit(&n->ev_gone, true, memory_order_seq_cst);
	bool attached;

	pthread_mutex_lock(&n->rx_lock);
	n->dead = true;
	attached = n->attached; /* an open still under way fails instead */
	pthread_cond_broadcast(&n->rx_cond);
	pthread_mutex_unlock(&n->rx_lock);
	/* seq_cst: pairs with agent_stop's store before its shutdown */
	return atomic_load(&n->closing) || !attached ? -ECANCELED : 0;
}

/* Starts the agent with every signal blocked: signals belong to the
 * application's threads. */
static int agent_start(takt_node *n)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&n->agent, NULL, agent_main, n);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return -r;
	n->agent_started = true;
	return 0;
}

/* Stops the agent: the socket's shutdown ends its recv. */
static void agent_stop(takt_node *n)
{
	uint64_t one = 1;

	if (!n->agent_started)
		return;
	/* seq_cst: the agent reads it after each wake-up (readopt_wait) */
	atomic_store(&n->closing, true);
	if (write(n->kick_fd, &one, sizeof(one)) < 0) {
		/* the counter cannot overflow at one write per close */
	}
	/* Under the lock: the agent replaces the socket under it when a
	 * restarted broker takes the node back (readopt_handshake). */
	pthread_mutex_lock(&n->lock);
	shutdown(n->sock, SHUT_RDWR);
	pthread_mutex_unlock(&n->lock);
	pthread_join(n->agent, NULL);
	n->agent_started = false;
	agent_close_retired(n, true);
	for (uint32_t i = 0; n->efd_tab && i < n->v.lim.connections; i++) {
		/* relaxed: the agent is joined, nobody else writes the table. */
		uint64_t w = atomic_load_explicit(&n->efd_tab[i], memory_order_relaxed);

		if (w) {
			close((int)(uint32_t)w - 1);
			if (n->sub_maps[i].pidfd >= 0)
				close(n->sub_maps[i].pidfd);
			munmap(n->sub_maps[i].base, n->sub_maps[i].size);
		}
	}
	for (size_t i = 0; n->ev_lis && i < (size_t)n->v.lim.events * TAKT_MAX_LISTENERS; i++)
		/* relaxed: the agent is joined, nobody else writes the table. */
		if (atomic_load_explicit(&n->ev_lis[i].inc, memory_order_relaxed)) {
			close(n->ev_lis[i].efd);
			munmap(n->ev_lis[i].sl.q, n->ev_lis[i].sl.size);
		}
}

void node_close_index(takt_node *n, uint16_t type, uint32_t index)
{
	struct msg_index req = {.index = index};
	struct proto_reply rep;

	node_call(n, type, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL);
}

static void node_unmap(takt_node *n)
{
	if (n->mgmt)
		munmap(n->mgmt, n->mgmt_size);
}

/* The registry, read-only: only the broker writes it. */
static int node_map(takt_node *n, const int *fds, unsigned n_fds)
{
	int r;

	if (n_fds != 1)
		return -EPROTO;
	r = seg_map_fd(fds[0], PROT_READ, &n->mgmt, &n->mgmt_size);
	if (r < 0)
		return r;
	r = seg_view_init(&n->v, n->mgmt, n->mgmt_size);
	if (r < 0)
		return r;
	/* Q0: plain-store entry only if the broker fences for us and the kernel
	 * includes this process in those fences (registration is per process
	 * and idempotent). */
	n->q0_light = (n->v.lim.flags & TAKT_LIM_MEMBARRIER) &&
		      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
	return 0;
}

static int node_hello(takt_node *n, const char *name)
{
	struct msg_hello req = {.abi_version = TAKT_ABI_VERSION};
	struct msg_hello_reply rep;
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned n_fds = 0;
	int r, pidfd;

	snprintf(req.name, sizeof(req.name), "%s", name ? name : program_invocation_short_name);
	/* Our pidfd: the broker hands it to the publishers of our subscribers,
	 * who then see our death without a broker (pub.c), across PID
	 * namespaces too. None on a kernel without pidfds (before 5.3). */
	pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	r = node_call_fd(n, MSG_HELLO, &req, sizeof(req), pidfd, &rep, sizeof(rep), fds, TAKT_PROTO_MAX_FDS,
			 &n_fds);
	if (pidfd >= 0)
		close(pidfd);
	if (r == 0) {
		n->proc = rep.r.index;
		/* relaxed: the agent writes it only once the open finished (attached) */
		atomic_store_explicit(&n->epoch, rep.epoch, memory_order_relaxed);
		r = node_map(n, fds, n_fds);
	}
	if (r == 0) {
		_Atomic uint64_t *tab = calloc(n->v.lim.connections, sizeof(*tab));
		_Atomic uint32_t *claims = calloc(n->v.lim.connections, sizeof(*claims));
		struct node_submap *maps = calloc(n->v.lim.connections, sizeof(*maps));
		struct node_listener *lis = calloc((size_t)n->v.lim.events * TAKT_MAX_LISTENERS, sizeof(*lis));
		atomic_flag *turns = calloc(n->v.lim.events, sizeof(*turns)); /* clear: all zero bytes */

		pthread_mutex_lock(&n->rx_lock); /* the agent reads them under the same lock first */
		n->efd_tab = tab;
		n->claim_tab = claims;
		n->sub_maps = maps;
		n->ev_lis = lis;
		n->ev_turn = turns;
		pthread_mutex_unlock(&n->rx_lock);
		if (!tab || !claims || !maps || !lis || !turns)
			r = -ENOMEM;
	}
	if (r == 0) { /* kept: handed to a restarted broker (adopt.c) */
		n->mgmt_fd = fds[0];
		n_fds = 0;
	}
	for (unsigned i = 0; i < n_fds; i++)
		close(fds[i]); /* the mappings keep the segments */
	return r;
}

static void node_free(takt_node *n)
{
	free(n->efd_tab);
	free(n->claim_tab);
	free(n->sub_maps);
	free(n->ev_lis);
	free(n->ev_turn);
	if (n->kick_fd >= 0)
		close(n->kick_fd);
	pthread_cond_destroy(&n->rx_cond);
	pthread_mutex_destroy(&n->ports_lock);
	pthread_mutex_destroy(&n->rx_lock);
	pthread_mutex_destroy(&n->lock);
	free(n);
}

int takt_node_open(const struct takt_node_opts *opts, takt_node **out)
{
	const char *domain = proto_domain_default(opts ? opts->domain : NULL);
	takt_node *n;
	int r;

	if (!out || !proto_domain_ok(domain))
		return -EINVAL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	pthread_condattr_t ca;

	pthread_mutex_init(&n->lock, NULL);
	pthread_mutex_init(&n->rx_lock, NULL);
	pthread_mutex_init(&n->ports_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&n->rx_cond, &ca);
	pthread_condattr_destroy(&ca);
	n->timeout_ms = NODE_TIMEOUT_DEFAULT_MS;
	n->kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (n->kick_fd < 0) {
		r = -errno;
		goto fail_free;
	}
	if (opts && opts->timeout_ns)
		n->timeout_ms = opts->timeout_ns / 1000000 > INT32_MAX ? INT32_MAX
					: opts->timeout_ns < 1000000 ? 1 : (int)(opts->timeout_ns / 1000000);
	TAKT_PROBE1(node_open, domain);
	n->mgmt_fd = -1;
	r = proto_connect_at(domain, &n->sock, n->sock_path, sizeof(n->sock_path));
	if (r < 0)
		goto fail_free;
	r = agent_start(n);
	if (r == 0)
		r = node_hello(n, opts ? opts->name : NULL);
	if (r == 0) {
		/* From now on a broker that dies is waited for (node_detach);
		 * one that died already fails the open. */
		pthread_mutex_lock(&n->rx_lock);
		n->attached = !n->dead;
		r = n->dead ? -ENOTCONN : 0;
		pthread_mutex_unlock(&n->rx_lock);
	}
	if (r < 0)
		goto fail;
	*out = n;
	return 0;
fail:
	agent_stop(n);
	node_unmap(n);
	close(n->sock);
	if (n->mgmt_fd >= 0)
		close(n->mgmt_fd);
fail_free:
	node_free(n);
	return r;
}

void takt_node_close(takt_node *node)
{
	if (!node)
		return;
	while (node->pubs)
		takt_pub_close(node->pubs);
	while (node->subs)
		takt_sub_close(node->subs);
	while (node->events)
		takt_event_close(node->events);
	agent_stop(node); /* shutdown: the broker reclaims the process entry on hang-up */
	close(node->sock);
	if (node->mgmt_fd >= 0)
		close(node->mgmt_fd);
	node_unmap(node);
	node_free(node);
}

_Static_assert(TAKT_TOPIC_NAME_MAX == TAKT_NAME_MAX, "takt_topic_info names are registry names");

int takt_node_topics(takt_node *node, const char *pattern, struct takt_topic_info *out, size_t max)
{
	int n = 0;

	if (!node || (max && !out) || (pattern && strnlen(pattern, TAKT_NAME_MAX) == TAKT_NAME_MAX))
		return -EINVAL;
	for (uint32_t i = 0; i < node->v.lim.topics; i++) {
		const struct takt_topic *t = &node->v.topics[i];
		struct takt_topic_info ti;

		/* acquire: pairs with the broker's release of the state after it
		 * wrote the entry (publish_state, registry.c) */
		if (atomic_load_explicit(&t->state, memory_order_acquire) != SLOT_ACTIVE)
			continue;
		memcpy(ti.name, t->name, sizeof(ti.name));
		memcpy(ti.type_name, t->type_name, sizeof(ti.type_name));
		ti.name[sizeof(ti.name) - 1] = ti.type_name[sizeof(ti.type_name) - 1] = 0;
		ti.publishers = t->n_pubs;
		ti.subscribers = t->n_subs;
		/* a name the broker checked; a slot freed meanwhile is skipped (a
		 * reuse in between shows the new topic's name with counts that may
		 * be either's: a snapshot) */
		if (!proto_name_ok(ti.name, sizeof(ti.name)) ||
		    atomic_load_explicit(&t->state, memory_order_acquire) != SLOT_ACTIVE)
			continue;
		if (pattern && !proto_name_glob(pattern, ti.name))
			continue;
		if ((size_t)n < max)
			out[n] = ti;
		n++;
	}
	return n;
}

uint32_t takt_node_topics_gen(const takt_node *node)
{
	/* TG0 (layout.h): acquire pairs with the broker's release bump after
	 * it mirrored a topic entry (topic_mirror, registry.c). */
	return node ? atomic_load_explicit(&node->v.hdr->topics_gen, memory_order_acquire) : 0;
}

int takt_node_topics_wait(takt_node *node, uint32_t gen, int64_t timeout_ns)
{
	uint64_t end = timeout_ns >= 0 ? sys_mono_ns() + (uint64_t)timeout_ns : 0;
	uint32_t swaps;

	if (!node)
		return -EINVAL;
	/* RS0 (registry_swapped): acquire pairs with the agent's release bump
	 * after it mapped a restarted broker's registry */
	swaps = atomic_load_explicit(&node->registry_swaps, memory_order_acquire);
	while (takt_node_topics_gen(node) == gen) {
		int64_t left = timeout_ns < 0 ? -1 : (int64_t)(end - sys_mono_ns());

		/* RS0: another registry now; its count is another broker's */
		if (atomic_load_explicit(&node->registry_swaps, memory_order_acquire) != swaps)
			return 0;
		if (timeout_ns >= 0 && left <= 0)
			return -ETIMEDOUT;
		/* TG0: the broker wakes after its bump; a bump between our load
		 * and the sleep makes the kernel's compare fail (EAGAIN). */
		if (sys_futex_wait(&node->v.hdr->topics_gen, gen, left, 1) < 0 && errno == EINTR)
			return -EINTR;
	}
	return 0;
}

uint64_t takt_node_epoch(const takt_node *node)
{
	/* relaxed: pairs with nothing; the agent replaces it whole (node.c) */
	return node ? atomic_load_explicit(&node->epoch, memory_order_relaxed) : 0;
}
