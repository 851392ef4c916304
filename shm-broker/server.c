/* server.c - the broker's event loop and control-message dispatch.
 *
 * One thread, one epoll set: the listening socket, every client socket, a
 * signalfd for SIGINT/SIGTERM and a timerfd that ticks while connections
 * wait for their ends to quiesce. Every request is validated (magic,
 * version, type, exact size, names, indices) before it is acted on; a bad
 * one gets an error reply and changes nothing.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define TAG_LISTEN UINT64_MAX
#define TAG_SIGNAL (UINT64_MAX - 1)
#define TAG_TIMER (UINT64_MAX - 2)
#define TICK_NS 1000000 /* 1 ms while connections retire */

static int epoll_add(struct broker *b, int fd, uint64_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	return epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static void timer_set(struct broker *b, int mode)
{
	struct itimerspec its = {0};

	if (mode == b->timer_mode)
		return;
	if (mode != TICK_OFF)
		its.it_interval.tv_nsec = its.it_value.tv_nsec = mode == TICK_FAST ? TICK_NS : 50 * TICK_NS;
	timerfd_settime(b->timer_fd, 0, &its, NULL);
	b->timer_mode = mode;
}

int server_listen(struct broker *b)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	sigset_t mask;
	int r;

	r = proto_runtime_path(b->cfg.domain, "sock", b->sock_path, sizeof(b->sock_path));
	if (r < 0)
		return r;
	memcpy(sa.sun_path, b->sock_path, sizeof(sa.sun_path));
	b->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (b->listen_fd < 0)
		return -errno;
	/* We hold the domain lock: any old socket is stale, left by a broker
	 * that did not stop cleanly, whose processes may come back to us. */
	adopt_start(b, lstat(b->sock_path, &st) == 0 && S_ISSOCK(st.st_mode));
	unlink(b->sock_path);
	if (bind(b->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    (b->cfg.socket_group >= 0 && chown(b->sock_path, (uid_t)-1, (gid_t)b->cfg.socket_group) < 0) ||
	    chmod(b->sock_path, b->cfg.socket_mode) < 0 || listen(b->listen_fd, 64) < 0) {
		r = -errno;
		fprintf(stderr, "takt-broker: cannot listen on %s: %s\n", b->sock_path, strerror(errno));
		return r;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	b->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	b->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	b->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (b->signal_fd < 0 || b->timer_fd < 0 || b->epoll_fd < 0)
		return -errno;
	if ((r = epoll_add(b, b->listen_fd, TAG_LISTEN)) < 0 || (r = epoll_add(b, b->signal_fd, TAG_SIGNAL)) < 0 ||
	    (r = epoll_add(b, b->timer_fd, TAG_TIMER)) < 0)
		return r;
	b->n_clients_max = b->v.lim.processes + 32; /* room for tools such as `takt status` */
	b->clients = calloc(b->n_clients_max, sizeof(*b->clients));
	if (!b->clients)
		return -ENOMEM;
	for (unsigned i = 0; i < b->n_clients_max; i++)
		b->clients[i].fd = -1;
	if (b->adopt_state != ADOPT_NONE)
		timer_set(b, TICK_SLOW); /* its deadline passes even if nobody comes back */
	return 0;
}


/* The supplementary groups of the socket's peer (SO_PEERGROUPS, taken at
 * its connect like SO_PEERCRED), for the access rules. */
static int peer_groups(int fd, gid_t **ret, uint32_t *ret_n)
{
	socklen_t len = 32 * sizeof(gid_t);
	gid_t *g = NULL;

	for (int tries = 0; tries < 2; tries++) {
		gid_t *ng = realloc(g, len ? len : sizeof(gid_t));

		if (!ng) {
			free(g);
			return -ENOMEM;
		}
		g = ng;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
			*ret = g;
			*ret_n = (uint32_t)(len / sizeof(gid_t));
			return 0;
		}
		if (errno != ERANGE)
			break; /* len now holds the size needed */
	}
	free(g);
	return -errno;
}

/* Takes a connected socket as a client: its credentials, a slot, epoll.
 * Returns the slot or a negative errno (the socket is closed then). */
int server_client_add(struct broker *b, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	unsigned i;

	for (i = 0; i < b->n_clients_max && b->clients[i].fd >= 0; i++)
		;
	if (i == b->n_clients_max || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		int e = i == b->n_clients_max ? -EMFILE : -errno;

		fprintf(stderr, "takt-broker: refusing a connection: %s\n",
			i == b->n_clients_max ? "too many clients" : strerror(-e));
		close(fd);
		return e;
	}
	struct client *cl = &b->clients[i];
	int r = peer_groups(fd, &cl->groups, &cl->n_groups);

	cl->event_refs = r < 0 ? NULL : calloc(2 * (size_t)b->v.lim.events, sizeof(uint32_t));
	cl->ev_owed = cl->event_refs ? cl->event_refs + b->v.lim.events : NULL;
	if (!cl->event_refs || epoll_add(b, fd, i) < 0) {
		free(cl->event_refs);
		cl->event_refs = NULL;
		free(cl->groups);
		cl->groups = NULL;
		close(fd);
		return r < 0 ? r : -ENOMEM;
	}
	cl->b = b;
	cl->fd = fd;
	cl->doomed = false;
	cl->out_head = cl->out_tail = NULL;
	cl->out_len = 0;
	cl->pend = false;
	cl->pend_acks = 0;
	cl->pend_fd = -1;
	cl->proc = TAKT_NONE;
	cl->pid = cred.pid;
	cl->uid = cred.uid;
	cl->gid = cred.gid;
	cl->refusals = 0;
	cl->pidfd = -1;
	cl->ghost = cl->readopting = false;
	cl->deferred = NULL;
	return (int)i;
}

static void client_accept(struct broker *b)
{
	int fd = accept4(b->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE) {
			/* Out of descriptors: the pending connection keeps the listen
			 * socket readable, so stop watching it until a client leaves
			 * (client_drop) instead of spinning on it. */
			struct epoll_event ev = {.events = 0, .data.u64 = TAG_LISTEN};

			fprintf(stderr, "takt-broker: out of file descriptors; new connections wait\n");
			epoll_ctl(b->epoll_fd, EPOLL_CTL_MOD, b->listen_fd, &ev);
			b->listen_paused = true;
		}
		return;
	}
	server_client_add(b, fd);
}

static void out_clear(struct client *cl);
static void deferred_free(struct client *cl);

static void client_drop(struct broker *b, struct client *cl)
{
	if (b->verbose && cl->proc != TAKT_NONE)
		fprintf(stderr, "takt-broker: process %d (%s) left; reclaiming its ports and chunks\n",
			cl->pid, b->v.procs[cl->proc].name);
	deferred_free(cl); /* first: an adoption that settles while it is reclaimed replays nothing of it */
	reg_proc_remove(b, cl);
	cl->readopting = false;
	epoll_ctl(b->epoll_fd, EPOLL_CTL_DEL, cl->fd, NULL);
	out_clear(cl);
	close(cl->fd);
	free(cl->event_refs);
	cl->event_refs = cl->ev_owed = NULL;
	free(cl->groups);
	cl->groups = NULL;
	cl->n_groups = 0;
	if (cl->pidfd >= 0)
		close(cl->pidfd);
	cl->pidfd = -1;
	cl->fd = -1;
	if (b->listen_paused) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_LISTEN};

		epoll_ctl(b->epoll_fd, EPOLL_CTL_MOD, b->listen_fd, &ev);
		b->listen_paused = false;
	}
	timer_set(b, reg_tick(b));
}

#define OUT_MAX 65536 /* messages waiting for one client at most */

struct outmsg {
	struct outmsg *next;
	size_t size;
	unsigned n_fds;
	int fds[TAKT_PROTO_MAX_FDS]; /* dups of the descriptors it carries */
	char msg[];
};

static void client_events(struct broker *b, struct client *cl, bool want_out)
{
	/* a client with a message held (adopt.c) is not read until it is served */
	struct epoll_event ev = {.events = (cl->deferred ? 0u : EPOLLIN) | (want_out ? EPOLLOUT : 0u),
				 .data.u64 = (uint64_t)(cl - b->clients)};

	epoll_ctl(b->epoll_fd, EPOLL_CTL_MOD, cl->fd, &ev);
}

static void out_free(struct outmsg *m)
{
	for (unsigned i = 0; i < m->n_fds; i++)
		close(m->fds[i]);
	free(m);
}

static void out_clear(struct client *cl)
{
	while (cl->out_head) {
		struct outmsg *m = cl->out_head;

		cl->out_head = m->next;
		out_free(m);
	}
	cl->out_tail = NULL;
	cl->out_len = 0;
}

/* The client's socket has room again: send what waits, in order. */
void server_client_flush(struct broker *b, struct client *cl)
{
	while (cl->out_head) {
		struct outmsg *m = cl->out_head;
		int r = proto_send(cl->fd, m->msg, m->size, m->fds, m->n_fds);

		if (r == -EAGAIN || r == -EWOULDBLOCK)
			return; /* EPOLLOUT again */
		cl->out_head = m->next;
		cl->out_len--;
		out_free(m);
	}
	cl->out_tail = NULL;
	client_events(b, cl, false);
}

void server_push(struct broker *b, struct client *cl, const void *msg, size_t size, const int *fds,
		 unsigned n_fds)
{
	struct outmsg *m;
	int r;

	if (cl->doomed || cl->fd < 0) /* a ghost has no socket (adopt.c) */
		return;
	if (!cl->out_head) {
		r = proto_send(cl->fd, msg, size, fds, n_fds);
		if (r != -EAGAIN && r != -EWOULDBLOCK)
			return; /* sent, or the client is leaving anyway */
	}
	/* No room: it waits, and everything after it too (order matters: a
	 * port's pushes come before its open's reply). */
	m = cl->out_len < OUT_MAX && n_fds <= TAKT_PROTO_MAX_FDS ? malloc(sizeof(*m) + size) : NULL;
	if (m) {
		m->next = NULL;
		m->size = size;
		m->n_fds = 0;
		memcpy(m->msg, msg, size);
		/* every descriptor it carries (two for PUSH_CONN, say) */
		while (m->n_fds < n_fds && (m->fds[m->n_fds] = fcntl(fds[m->n_fds], F_DUPFD_CLOEXEC, 0)) >= 0)
			m->n_fds++;
	}
	if (!m || m->n_fds < n_fds) {
		if (m)
			out_free(m);
		fprintf(stderr, "takt-broker: process %d (%s) does not read its socket (%u messages wait); "
			"dropping it\n", cl->pid, cl->proc != TAKT_NONE ? b->v.procs[cl->proc].name : "?", cl->out_len);
		cl->doomed = true;
		return;
	}
	if (cl->out_tail)
		cl->out_tail->next = m;
	else
		cl->out_head = m;
	cl->out_tail = m;
	if (cl->out_len++ == 0)
		client_events(b, cl, true);
}

#define ACCESS_LOG_MAX 10 /* refusals logged per client; then one line says the rest are not */

static bool client_may(const struct broker *b, const struct client *cl, enum access_action act, const char *name,
		       const struct access_rule **r)
{
	const struct access_peer peer = {.uid = cl->uid, .gid = cl->gid, .groups = cl->groups,
					 .n_groups = cl->n_groups};

	return access_allowed(&b->cfg.access, act, name, &peer, geteuid(), r);
}

bool server_may(const struct broker *b, const struct client *cl, enum access_action act, const char *name)
{
	const struct access_rule *r = NULL;

	return client_may(b, cl, act, name, &r);
}

int server_access(struct broker *b, struct client *cl, enum access_action act, const char *topic)
{
	const struct access_rule *r = NULL;
	const struct passwd *pw;

	if (client_may(b, cl, act, topic, &r))
		return 0;
	if (cl->refusals++ >= ACCESS_LOG_MAX) {
		if (cl->refusals == ACCESS_LOG_MAX + 2)
			fprintf(stderr, "takt-broker: access: further refusals of process %d are not logged\n",
				cl->pid);
		return -EACCES;
	}
	pw = getpwuid(cl->uid);
	fprintf(stderr, "takt-broker: access: process %d (%s, user %s, uid %u) may not %s on '%s': rule %s:%u: %s = %s\n",
		cl->pid, cl->proc != TAKT_NONE ? b->v.procs[cl->proc].name : "?", pw ? pw->pw_name : "?",
		(unsigned)cl->uid, access_action_name(act), topic, b->cfg.access.file, r->line,
		access_action_name(act), r->text);
	return -EACCES;
}

static void reply_init(struct proto_reply *r, const struct proto_hdr *req, size_t size, int status)
{
	proto_hdr_init(&r->hdr, (uint16_t)(req->type | PROTO_REPLY_FLAG), (uint32_t)size, req->req_id);
	r->status = status;
	r->index = 0;
}

/* Replies with only a status (errors, closes). */
static void reply_status(struct client *cl, const struct proto_hdr *req, int status, uint32_t index)
{
	struct proto_reply r;

	reply_init(&r, req, sizeof(r), status);
	r.index = index;
	server_push(cl->b, cl, &r, sizeof(r), NULL, 0);
}

/* Descriptors a message of this type may carry. */
static unsigned msg_fds(uint16_t type)
{
	switch (type) {
	case MSG_HELLO: return 1;    /* the client's pidfd */
	case MSG_READOPT: return 2;  /* the old registry, its pidfd */
	case MSG_PUB_READOPT: return 1; /* its pool */
	case MSG_POOL_READOPT: return 1; /* a pool it maps, read-only */
	case MSG_SUB_READOPT: return 2; /* its segment, its eventfd */
	case MSG_EV_READOPT: return 2;  /* a listener's queue and eventfd */
	default: return 0;
	}
}

static void client_message(struct broker *b, struct client *cl, void *buf, long n, int keep[2]);
static int client_defer(struct broker *b, struct client *cl, const void *buf, long n, int keep[2]);

void server_reply_status(struct client *cl, const struct proto_hdr *req, int status, uint32_t index)
{
	reply_status(cl, req, status, index);
}

/* Checks framing; 0, or the errno to reply with. */
static int check_frame(const struct client *cl, const struct proto_hdr *h, long n)
{
	size_t want;

	if (n < (long)sizeof(*h) || h->magic != TAKT_PROTO_MAGIC)
		return -EBADMSG;
	if (h->version != TAKT_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	want = proto_request_size(h->type);
	if (want == 0)
		return -EOPNOTSUPP;
	if ((size_t)n != want || h->size != (uint32_t)n)
		return -EBADMSG;
	if (cl->proc == TAKT_NONE && h->type != MSG_HELLO && h->type != MSG_POOLS && h->type != MSG_CONNS &&
	    h->type != MSG_STATUS && h->type != MSG_MGMT_FD && h->type != MSG_READOPT)
		return -EPERM; /* HELLO (or READOPT) first */
	return 0;
}

/* Whether fd is a pidfd of the peer: its fdinfo names a pid, the same as
 * SO_PEERCRED's where both are visible (0: the peer is in a PID namespace
 * ours cannot see, and so may be the pidfd's process). */
bool server_pidfd_ok(const struct client *cl, int fd)
{
	char path[64], line[128];
	bool ok = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		int pid;

		if (sscanf(line, "Pid: %d", &pid) == 1) {
			/* -1: the process exited since (its hang-up follows) */
			ok = pid > 0 ? cl->pid == 0 || pid == cl->pid : pid == -1 || (pid == 0 && cl->pid == 0);
			break;
		}
	}
	fclose(f);
	return ok;
}

static void handle_hello(struct broker *b, struct client *cl, const void *buf, int pidfd)
{
	const struct msg_hello *m = buf;
	struct msg_hello_reply rep = {0};
	char name[TAKT_PROC_NAME_MAX + 1];
	int r;

	memcpy(name, m->name, TAKT_PROC_NAME_MAX);
	name[TAKT_PROC_NAME_MAX] = 0;
	for (char *c = name; *c; c++)
		if (*c < 0x20 || *c > 0x7e)
			*c = '?'; /* shown by tools and logs: printable only */
	if (cl->proc != TAKT_NONE)
		r = -EALREADY;
	else if (pidfd >= 0 && !server_pidfd_ok(cl, pidfd))
		r = -EINVAL; /* not a pidfd, or of another process */
	else if (m->abi_version != TAKT_ABI_VERSION ||
		 (m->layout_digest && m->layout_digest != b->v.hdr->layout_digest))
		r = -EPROTO;
	else
		r = reg_proc_add(b, cl, name);
	if (r >= 0 && b->verbose)
		fprintf(stderr, "takt-broker: process %d (%s, uid %d) attached as #%d\n", cl->pid,
			b->v.procs[r].name, (int)cl->uid, r);
	if (r < 0) {
		if (r == -EINVAL)
			fprintf(stderr, "takt-broker: pid %d (uid %u) sent a descriptor with HELLO that is not its own "
				"pidfd: refused\n", cl->pid, (unsigned)cl->uid);
		if (pidfd >= 0)
			close(pidfd);
		reply_status(cl, &m->hdr, r, 0);
		return;
	}
	cl->pidfd = pidfd;
	reply_init(&rep.r, &m->hdr, sizeof(rep), 0);
	rep.r.index = (uint32_t)r;
	rep.epoch = b->epoch;
	/* The registry, read-only. */
	server_push(b, cl, &rep, sizeof(rep), &b->mgmt_ro_fd, 1);
}

/* The reply of a successful open: the publisher's pool segment with
 * PUB_OPEN, the eventfd with SUB_OPEN. */
static void open_reply(struct client *cl)
{
	struct proto_reply rep;

	if (cl->pend_req.type == MSG_PUB_OPEN) {
		server_push(cl->b, cl, &cl->pend_pub, sizeof(cl->pend_pub), &cl->pend_fd, 1);
		return;
	}
	if (cl->pend_req.type == MSG_EVENT_LISTEN) { /* its queue and its eventfd */
		const struct reg_listener *li = &cl->b->events[cl->pend_event].lis[cl->pend_index];

		if (li->cl != cl) { /* dropped meanwhile */
			reply_status(cl, &cl->pend_req, -ECONNRESET, 0);
			return;
		}
		reply_init(&rep, &cl->pend_req, sizeof(rep), 0);
		rep.index = cl->pend_event << 8 | cl->pend_index;
		server_push(cl->b, cl, &rep, sizeof(rep), (int[]){li->seg_fd, li->efd}, 2);
		return;
	}
	reply_init(&rep, &cl->pend_req, sizeof(rep), 0);
	rep.index = cl->pend_index;
	server_push(cl->b, cl, &rep, sizeof(rep), &cl->pend_fd, cl->pend_fd >= 0 ? 1 : 0);
}

void server_pend_reply(struct broker *b, struct client *cl)
{
	if (!cl->pend)
		return;
	cl->pend = false;
	b->n_pending--;
	open_reply(cl);
}

/* A0: an open that created connections is answered once the nodes it
 * pushed them to confirmed (registry.c), else at once. */
static void open_done(struct broker *b, struct client *cl, const struct proto_hdr *h, int r, int fd)
{
	if (r < 0) {
		reply_status(cl, h, r, 0);
		return;
	}
	cl->pend_req = *h;
	cl->pend_index = (uint32_t)r;
	cl->pend_fd = fd;
	if (h->type == MSG_PUB_OPEN) {
		reply_init(&cl->pend_pub.r, h, sizeof(cl->pend_pub), 0);
		cl->pend_pub.r.index = (uint32_t)r;
		cl->pend_pub.n_chunks_max = b->pubs[r].n_chunks_max;
		cl->pend_pub.id = b->pubs[r].id;
	}
	if (cl->pend_acks == 0) {
		open_reply(cl);
		return;
	}
	cl->pend = true;
	cl->pend_deadline_ns = reg_pend_deadline(b);
	b->n_pending++;
}

static void handle_pools(struct broker *b, struct client *cl, const struct msg_index *m)
{
	struct msg_pools_reply rep = {0};

	reply_init(&rep.r, &m->hdr, sizeof(rep), 0);
	reg_pool_stats(b, m->index, &rep);
	server_push(cl->b, cl, &rep, sizeof(rep), NULL, 0);
}

static void handle_conns(struct broker *b, struct client *cl, const struct msg_index *m)
{
	struct msg_conns_reply rep = {0};

	reply_init(&rep.r, &m->hdr, sizeof(rep), 0);
	reg_conn_stats(b, m->index, &rep);
	server_push(cl->b, cl, &rep, sizeof(rep), NULL, 0);
}

static void handle_fd_reply(struct client *cl, const struct proto_hdr *h, int r, int fd)
{
	struct proto_reply rep;

	if (r < 0) {
		reply_status(cl, h, r, 0);
		return;
	}
	reply_init(&rep, h, sizeof(rep), 0);
	rep.index = (uint32_t)r;
	server_push(cl->b, cl, &rep, sizeof(rep), &fd, 1);
}

static void handle_status(struct broker *b, struct client *cl, const struct proto_hdr *h)
{
	struct msg_status_reply rep = {0};

	reply_init(&rep.r, h, sizeof(rep), 0);
	reg_status(b, &rep);
	server_push(cl->b, cl, &rep, sizeof(rep), NULL, 0);
}

static void dispatch(struct broker *b, struct client *cl, const void *buf)
{
	const struct proto_hdr *h = buf;
	const struct msg_index *mi = buf;
	int r;

	/* A0: a client has at most one open waiting for acks. A new call while
	 * one waits means its caller gave up on that one (its call timed out,
	 * sooner than [socket] confirm_timeout_ms): that one is answered now,
	 * before the new one. Acks go on: they are what it waits for. */
	if (cl->pend && h->type != MSG_CONN_READY && h->type != MSG_POOL_DONE && h->type != MSG_EV_READY)
		server_pend_reply(b, cl);
	switch (h->type) {
	case MSG_PUB_OPEN:
		r = reg_pub_open(b, cl, buf);
		open_done(b, cl, h, r, r >= 0 ? b->pubs[r].pool_fd : -1);
		break;
	case MSG_SUB_OPEN: /* its eventfd and its segment (read-write) */
		r = reg_sub_open(b, cl, buf);
		if (r < 0) {
			reply_status(cl, h, r, 0);
		} else {
			struct proto_reply rep;
			int fds[2] = {b->sub_efd[r], b->subs[r].seg_fd};

			reply_init(&rep, h, sizeof(rep), 0);
			rep.index = (uint32_t)r;
			server_push(b, cl, &rep, sizeof(rep), fds, 2);
		}
		break;
	case MSG_SUB_CONNECT:
		open_done(b, cl, h, reg_sub_connect(b, cl, mi->index), -1);
		break;
	case MSG_PUB_CONNECT:
		open_done(b, cl, h, reg_pub_connect(b, cl, mi->index), -1);
		break;
	case MSG_CONN_READY: reg_conn_ready(b, cl, buf); break;
	case MSG_POOL_DONE: reg_pool_done(b, cl, buf); break;
	case MSG_EVENT_OPEN:
		r = reg_event_open(b, cl, ((const struct msg_event_open *)buf)->name);
		reply_status(cl, h, r < 0 ? r : 0, r >= 0 ? (uint32_t)r : 0);
		return;
	case MSG_EVENT_LISTEN: { /* its queue (read-write) and eventfd, once every node has it */
		int fds[2];

		r = reg_event_listen(b, cl, mi->index, fds);
		cl->pend_event = mi->index;
		open_done(b, cl, h, r, -1);
		return;
	}
	case MSG_EV_READY: reg_ev_ready(b, cl, buf); break;
	case MSG_READOPT_DONE: adopt_done(b, cl, h); break;
	case MSG_PUB_CLOSE: reply_status(cl, h, reg_pub_close(b, cl, mi->index), mi->index); break;
	case MSG_SUB_CLOSE: reply_status(cl, h, reg_sub_close(b, cl, mi->index), mi->index); break;
	case MSG_EVENT_CLOSE: reply_status(cl, h, reg_event_close(b, cl, mi->index, mi->reserved), mi->index); break;
	case MSG_POOLS: handle_pools(b, cl, buf); return;
	case MSG_CONNS: handle_conns(b, cl, buf); return;
	case MSG_STATUS: handle_status(b, cl, h); return;
	case MSG_MGMT_FD:
		/* Introspection (takt-trace reads the process table): read-only. */
		handle_fd_reply(cl, h, b->mgmt_ro_fd >= 0 ? 0 : -EOPNOTSUPP, b->mgmt_ro_fd);
		return;
	}
	timer_set(b, reg_tick(b));
}

void server_client_input(struct broker *b, struct client *cl)
{
	union {
		struct proto_hdr h;
		char bytes[TAKT_PROTO_MAX_MSG];
	} buf;
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned n_fds = 0;
	long n;
	int keep[2] = {-1, -1};
	unsigned n_keep;

	/* A client whose request is held is not read (client_events): only a
	 * hang-up, which epoll reports whatever it was asked for, brings us
	 * here. Nobody reads the reply: drop it, and never read what it queued
	 * behind the held request over it (client_defer keeps one). */
	if (cl->deferred) {
		client_drop(b, cl);
		return;
	}
	n = proto_recv(cl->fd, &buf, sizeof(buf), fds, TAKT_PROTO_MAX_FDS, &n_fds);
	n_keep = n >= (long)sizeof(buf.h) ? msg_fds(buf.h.type) : 0;
	/* A client sends descriptors with HELLO (its pidfd) and the readopt
	 * messages (adopt.c) only; any other is closed. */
	for (unsigned i = 0; i < n_fds; i++)
		if (i < n_keep)
			keep[i] = fds[i];
		else
			close(fds[i]);
	if (n == 0 || (n < 0 && n != -EMSGSIZE && n != -EAGAIN)) {
		client_drop(b, cl);
		return;
	}
	if (n == -EAGAIN)
		return;
	if (n < 0) {
		struct proto_hdr none = {0};

		reply_status(cl, &none, -EBADMSG, 0);
		return;
	}
	if (n < (long)sizeof(buf.h))
		memset(buf.bytes + n, 0, sizeof(buf.h) - (size_t)n);
	if (b->adopt_state != ADOPT_NONE && !adopt_serves(buf.h.type) && check_frame(cl, &buf.h, n) == 0 &&
	    client_defer(b, cl, &buf, n, keep) == 0)
		return;
	client_message(b, cl, &buf, n, keep);
}

/* One received message (and the descriptors it may keep). */
static void client_message(struct broker *b, struct client *cl, void *buf, long n, int keep[2])
{
	const struct proto_hdr *h = buf;
	int r = check_frame(cl, h, n);

	if (r < 0) {
		if (b->verbose)
			fprintf(stderr, "takt-broker: pid %d sent a bad message (type %u, %ld bytes): %s\n",
				cl->pid, h->type, n, strerror(-r));
		for (int i = 0; i < 2; i++)
			if (keep[i] >= 0)
				close(keep[i]);
		reply_status(cl, h, r, 0);
		return;
	}
	switch (h->type) {
	case MSG_HELLO: handle_hello(b, cl, buf, keep[0]); return;
	case MSG_READOPT: adopt_readopt(b, cl, buf, keep); break;
	case MSG_PUB_READOPT:
	case MSG_SUB_READOPT:
	case MSG_POOL_READOPT: adopt_port(b, cl, buf, keep); break;
	case MSG_EV_READOPT: adopt_event(b, cl, buf, keep); break;
	default: dispatch(b, cl, buf); return;
	}
	timer_set(b, reg_tick(b));
}

/* Held while the registry is adopted: the message, its descriptors, and
 * the socket not read until server_replay_deferred. 0, or -ENOMEM (the
 * message is then served at once: it is refused or waits its turn). */
static int client_defer(struct broker *b, struct client *cl, const void *buf, long n, int keep[2])
{
	cl->deferred = malloc((size_t)n);
	if (!cl->deferred)
		return -ENOMEM;
	memcpy(cl->deferred, buf, (size_t)n);
	cl->deferred_len = n;
	cl->deferred_fds[0] = keep[0];
	cl->deferred_fds[1] = keep[1];
	client_events(b, cl, cl->out_head != NULL);
	return 0;
}

static void deferred_free(struct client *cl)
{
	for (int i = 0; i < 2; i++)
		if (cl->deferred && cl->deferred_fds[i] >= 0)
			close(cl->deferred_fds[i]);
	free(cl->deferred);
	cl->deferred = NULL;
}

void server_replay_deferred(struct broker *b)
{
	for (unsigned i = 0; i < b->n_clients_max; i++) {
		struct client *cl = &b->clients[i];
		union {
			struct proto_hdr h;
			char bytes[TAKT_PROTO_MAX_MSG];
		} buf;
		int keep[2];
		long n;

		if (cl->fd < 0 || !cl->deferred)
			continue;
		n = cl->deferred_len;
		memcpy(&buf, cl->deferred, (size_t)n);
		keep[0] = cl->deferred_fds[0];
		keep[1] = cl->deferred_fds[1];
		free(cl->deferred);
		cl->deferred = NULL;
		client_events(b, cl, cl->out_head != NULL); /* read it again */
		client_message(b, cl, &buf, n, keep);
	}
}

void server_drop_doomed(struct broker *b)
{
	for (unsigned i = 0; i < b->n_clients_max; i++)
		if (b->clients[i].fd >= 0 && b->clients[i].doomed)
			client_drop(b, &b->clients[i]);
}

int server_run(struct broker *b)
{
	for (;;) {
		struct epoll_event evs[32];
		int n = epoll_wait(b->epoll_fd, evs, 32, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			uint64_t ticks;

			if (tag == TAG_LISTEN) {
				client_accept(b);
			} else if (tag == TAG_SIGNAL) {
				return 0;
			} else if (tag == TAG_TIMER) {
				if (read(b->timer_fd, &ticks, sizeof(ticks)) < 0) {
					/* spurious: nothing to read */
				}
				timer_set(b, reg_tick(b));
			} else if (tag < b->n_clients_max && b->clients[tag].fd >= 0) {
				if (evs[i].events & EPOLLOUT)
					server_client_flush(b, &b->clients[tag]);
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					server_client_input(b, &b->clients[tag]);
			}
		}
		server_drop_doomed(b);
	}
}

void server_free(struct broker *b)
{
	for (unsigned i = 0; b->clients && i < b->n_clients_max; i++)
		if (b->clients[i].fd >= 0) {
			out_clear(&b->clients[i]);
			close(b->clients[i].fd);
			free(b->clients[i].event_refs);
			free(b->clients[i].groups);
			if (b->clients[i].pidfd >= 0)
				close(b->clients[i].pidfd);
			deferred_free(&b->clients[i]);
		}
	for (uint32_t i = 0; b->sub_efd && i < b->v.lim.subscribers; i++)
		if (b->sub_efd[i] >= 0)
			close(b->sub_efd[i]);
	for (uint32_t i = 0; b->events && i < b->v.lim.events; i++)
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			if (b->events[i].lis[j].cl) {
				close(b->events[i].lis[j].seg_fd);
				close(b->events[i].lis[j].efd);
			}
	free(b->clients);
	adopt_free(b);
	reg_free(b);
}
