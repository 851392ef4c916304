/* fuzz_broker.c - libFuzzer target: a real broker's control messages.
 *
 * One broker for the whole run, started as takt-broker starts it (config
 * defaults, the domain lock, the segments, the registry, the listening
 * socket) in a private runtime directory, with small limits: inputs reach
 * the ends of its tables, and no pool reserves more than a few MB.
 *
 * An input is a conversation of up to two clients, each a socketpair whose
 * one end the broker takes as it takes an accepted connection
 * (server_client_add). It is a sequence of records
 *
 *	u8 ctl | u16 len (little endian) | len bytes: one packet
 *
 * which the harness sends on the client ctl picks, then lets the broker
 * handle (server_client_input), as its event loop would. ctl bits:
 *   CTL_PEER     which client (a client that hung up is replaced);
 *   CTL_HANGUP   that client hangs up first: the broker drops it and
 *                reclaims what it held (a process dying mid-conversation);
 *   CTL_DEAF     after the packet nobody reads: replies and pushes pile up
 *                in the sockets (small buffers), then in the broker's queues;
 *   CTL_ACK      the clients act as nodes: every push they read is
 *                confirmed (CONN_READY, EV_READY) as an agent thread would.
 * After each packet (unless CTL_DEAF) both clients read everything and
 * close every descriptor it carries, the broker sends what waited in its
 * queues, and drops the clients it doomed (server_run's loop, by hand). At
 * the end both clients hang up, and the broker must be back where it
 * started: no process, port, connection, event, pool mapping or queued
 * message left, and no descriptor more than before. Leak detection finds
 * memory that was not given back.
 *
 * TAKT_FUZZ_HELD=1: something else holds each client's socket for a moment
 * as it hangs up (peer_hangup), as ls, lsof or ss -p do when they look at
 * /proc/<pid>/fd just then.
 */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
	CTL_PEER = 1,
	CTL_HANGUP = 2,
	CTL_DEAF = 4,
	CTL_ACK = 8,
};

#define N_PEERS 2
#define SNDBUF 4096 /* the broker's side of each socket: a deaf client fills it within a few replies */

struct peer {
	int fd;   /* the client's end, or -1 */
	int slot; /* its client slot in the broker */
};

static struct broker b = {.lock_fd = -1, .listen_fd = -1, .mgmt_fd = -1, .mgmt_ro_fd = -1};
static char rundir[64];
static bool held; /* TAKT_FUZZ_HELD */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fprintf(stderr, "takt-fuzz-broker: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	abort();
}

/* Small tables, so inputs fill them; a pool of at most max_payload-sized
 * chunks within a few MB. */
static void fuzz_config(struct broker_config *c)
{
	char err[256];

	config_defaults(c);
	snprintf(c->domain, sizeof(c->domain), "fuzz");
	c->lim = (struct takt_limits){
		.processes = 4, .topics = 4, .publishers = 4, .subscribers = 4,
		.pubs_per_topic = 2, .subs_per_topic = 3, .connections = 6,
		.queue_depth_max = 16, .history_max = 4, .held_max = 2, .loans_max = 2,
		.events = 3,
	};
	c->max_payload = 4096;
	c->domain_max = 8u << 20;
	c->process_max = 4u << 20;
	c->confirm_timeout_ms = 60000; /* answered by acks or the hang-up, never by the clock */
	if (config_validate(c, err, sizeof(err)) < 0)
		fail("bad fuzz config: %s", err);
}

static void stop(void)
{
	if (b.sock_path[0] && b.listen_fd >= 0)
		unlink(b.sock_path);
	server_free(&b);
	seg_destroy_all(&b);
	seg_unlock_domain(&b);
	rmdir(rundir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	sigset_t mask;
	int r;

	(void)argc;
	(void)argv;
	snprintf(rundir, sizeof(rundir), "/tmp/takt-fuzz-XXXXXX");
	if (!mkdtemp(rundir))
		fail("mkdtemp: %s", strerror(errno));
	setenv("TAKT_RUNTIME_DIR", rundir, 1);
	fuzz_config(&b.cfg);
	b.verbose = getenv("TAKT_FUZZ_VERBOSE") != NULL; /* the broker's -v */
	held = getenv("TAKT_FUZZ_HELD") != NULL;
	/* main.c's start() */
	if ((r = seg_lock_domain(&b)) < 0 || (r = seg_create_all(&b)) < 0 || (r = reg_init(&b)) < 0 ||
	    (r = server_listen(&b)) < 0)
		fail("the broker does not start: %s", strerror(-r));
	/* server_listen blocks them for its signalfd; libFuzzer stops a run on them. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_UNBLOCK, &mask, NULL);
	atexit(stop);
	return 0;
}

static struct client *peer_client(const struct peer *p)
{
	return &b.clients[p->slot];
}

static void peer_connect(struct peer *p)
{
	int sv[2], sz = SNDBUF;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		fail("socketpair: %s", strerror(errno));
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	p->slot = server_client_add(&b, sv[0]);
	if (p->slot < 0)
		fail("server_client_add: %s", strerror(-p->slot));
	p->fd = sv[1];
}

/* The broker dropped the client (it hung up, or was doomed): our end goes. */
static void peer_check(struct peer *p)
{
	if (p->fd >= 0 && peer_client(p)->fd < 0) {
		close(p->fd);
		p->fd = -1;
	}
}

/* Sends one packet and lets the broker handle it, as the event loop does
 * when the socket is readable. */
static void peer_send(struct peer *p, const void *msg, size_t len)
{
	if (send(p->fd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len)
		return; /* too large for the socket: nothing for the broker to read */
	server_client_input(&b, peer_client(p));
	peer_check(p);
}

/* What a node's agent answers to a push: CONN_READY to a connection,
 * EV_READY to a listener. */
static void peer_ack(struct peer *p, const void *msg, long n)
{
	const struct proto_hdr *h = msg;

	if (n == sizeof(struct msg_push_conn) && (h->type == (MSG_PUSH_CONN | PROTO_PUSH_FLAG) ||
						   h->type == (MSG_PUSH_SUB_CONN | PROTO_PUSH_FLAG))) {
		const struct msg_push_conn *m = msg;
		struct msg_conn_ready a = {.conn = m->conn, .incarnation = m->incarnation};

		proto_hdr_init(&a.hdr, MSG_CONN_READY, sizeof(a), 0);
		peer_send(p, &a, sizeof(a));
	} else if (n == sizeof(struct msg_push_ev) && h->type == (MSG_PUSH_EV_LISTENER | PROTO_PUSH_FLAG)) {
		struct msg_push_ev a = *(const struct msg_push_ev *)msg;

		proto_hdr_init(&a.hdr, MSG_EV_READY, sizeof(a), 0);
		peer_send(p, &a, sizeof(a));
	}
}

/* Reads everything waiting for the client, closing the descriptors it
 * carries; the broker sends what waited in its queue as room frees up.
 * Returns how many messages it read. */
static unsigned peer_read(struct peer *p, bool ack)
{
	char buf[TAKT_PROTO_MAX_MSG];
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned n_fds, n_read = 0, queued;
	long n;

	while (p->fd >= 0) {
		n_fds = 0; /* proto_recv leaves it alone on failure */
		n = proto_recv(p->fd, buf, sizeof(buf), fds, TAKT_PROTO_MAX_FDS, &n_fds);
		for (unsigned i = 0; i < n_fds; i++)
			close(fds[i]);
		if (n > 0 || n == -EMSGSIZE) {
			n_read++;
			if (b.verbose && n >= (long)sizeof(struct proto_reply)) /* to check what seeds do */
				fprintf(stderr, "client %d: %s 0x%x status %d index %u, %u fds\n", p->slot,
					proto_is_push(buf, n) ? "push" : "reply", ((struct proto_reply *)buf)->hdr.type,
					((struct proto_reply *)buf)->status, ((struct proto_reply *)buf)->index, n_fds);
			if (ack)
				peer_ack(p, buf, n);
			continue;
		}
		if (n != -EAGAIN && n != -EWOULDBLOCK)
			fail("reading the broker's replies: %s", n == 0 ? "hung up" : strerror((int)-n));
		queued = peer_client(p)->out_len;
		if (!queued)
			break;
		/* The socket is empty: what the event loop does on EPOLLOUT. */
		server_client_flush(&b, peer_client(p));
		if (peer_client(p)->out_len == queued)
			fail("the broker sends none of %u queued messages into an empty socket", queued);
	}
	return n_read;
}

/* The client hangs up; the broker reads the hang-up and drops it. A close
 * alone is not a hang-up unless it lets go of the socket's last reference:
 * a moment's other holder (TAKT_FUZZ_HELD) leaves the broker nothing to
 * read now, and the event loop, not this harness, would hear the hang-up
 * when that holder lets go. shutdown() hangs the socket up whoever else
 * holds it; a close that is the last still tells the broker ECONNRESET
 * when replies were left unread. */
static void peer_hangup(struct peer *p)
{
	int other;

	if (p->fd < 0)
		return;
	/* TAKT_FUZZ_HELD: the other holder lets go just after the broker read */
	other = held ? fcntl(p->fd, F_DUPFD_CLOEXEC, 0) : -1;
	shutdown(p->fd, SHUT_RDWR);
	close(p->fd);
	p->fd = -1;
	server_client_input(&b, peer_client(p));
	if (other >= 0)
		close(other);
	if (peer_client(p)->fd >= 0)
		fail("a client that hung up is still there (slot %d, broker fd %d, %u queued, pend %d, doomed %d)",
		     p->slot, peer_client(p)->fd, peer_client(p)->out_len, peer_client(p)->pend,
		     peer_client(p)->doomed);
}

#define CHECK_FREE(what, n, cond)                                                                  \
	for (uint32_t i = 0; i < (n); i++)                                                         \
		if (!(cond))                                                                       \
			fail("after the last client left, %s %u is still in use", what, i)

/* Every client left: the broker holds nothing for anyone. */
static void check_empty(void)
{
	const struct takt_limits *l = &b.v.lim;

	CHECK_FREE("client slot", b.n_clients_max, b.clients[i].fd < 0 && !b.clients[i].out_head);
	CHECK_FREE("process", l->processes, b.proc_state[i] == SLOT_FREE && !b.proc_client[i]);
	CHECK_FREE("topic", l->topics, b.topics[i].state == SLOT_FREE);
	CHECK_FREE("publisher", l->publishers,
		   b.pubs[i].state == SLOT_FREE && b.pubs[i].pool_fd < 0 && b.pubs[i].pool_ro_fd < 0 &&
		   !b.pubs[i].pool.base);
	CHECK_FREE("subscriber", l->subscribers,
		   b.subs[i].state == SLOT_FREE && b.subs[i].seg_fd < 0 && b.subs[i].seg_ro_fd < 0 &&
		   !b.subs[i].seg.base && b.sub_efd[i] < 0);
	CHECK_FREE("connection", l->connections, b.conns[i].state == SLOT_FREE && !b.conns[i].waiter);
	CHECK_FREE("event", l->events, b.events[i].state == SLOT_FREE);
	for (uint32_t i = 0; i < l->events; i++)
		for (unsigned j = 0; j < TAKT_MAX_LISTENERS; j++)
			if (b.events[i].lis[j].cl)
				fail("after the last client left, listener %u of event %u is still there", j, i);
	if (b.n_maps || b.n_left || b.n_pending || b.n_retiring || b.n_orphans || b.conns_missing)
		fail("after the last client left: %u pool mappings, %u pools left, %u opens pending, "
		     "%u connections retiring, %u orphans, connections missing: %d",
		     b.n_maps, b.n_left, b.n_pending, b.n_retiring, b.n_orphans, b.conns_missing);
}

/* The lowest free descriptor: a descriptor leaked by an input moves it. */
static int fd_mark(void)
{
	int fd = fcntl(b.mgmt_fd, F_DUPFD_CLOEXEC, 0);

	if (fd < 0)
		fail("fcntl: %s", strerror(errno));
	close(fd);
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peer peers[N_PEERS];
	int mark = fd_mark();
	size_t at = 0;

	for (unsigned i = 0; i < N_PEERS; i++)
		peers[i] = (struct peer){.fd = -1, .slot = -1};
	while (size - at >= 3) {
		uint8_t ctl = data[at];
		size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
		struct peer *p = &peers[ctl & CTL_PEER];

		at += 3;
		if (len > size - at)
			len = size - at;
		if (ctl & CTL_HANGUP)
			peer_hangup(p);
		if (p->fd < 0)
			peer_connect(p);
		peer_send(p, data + at, len);
		at += len;
		/* Until neither has anything more: an ack may answer the other's open. */
		for (unsigned n = !(ctl & CTL_DEAF); n;) {
			n = 0;
			for (unsigned i = 0; i < N_PEERS; i++)
				n += peer_read(&peers[i], ctl & CTL_ACK);
		}
		server_drop_doomed(&b);
		for (unsigned i = 0; i < N_PEERS; i++)
			peer_check(&peers[i]);
	}
	for (unsigned i = 0; i < N_PEERS; i++)
		peer_hangup(&peers[i]);
	server_drop_doomed(&b);
	check_empty();
	if (fd_mark() != mark)
		fail("descriptors leaked: the lowest free one was %d before the input, %d after", mark, fd_mark());
	return 0;
}
