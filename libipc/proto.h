/* proto.h - the control protocol between clients and takt-broker.
 *
 * UNIX SOCK_SEQPACKET, one message per packet, fixed-layout structures in
 * host byte order (both ends share the host). Every request starts with
 * proto_hdr; every reply starts with proto_reply (header + status), so a
 * client can read the status of any reply, including an error reply to a
 * request the broker could not parse. Descriptors travel with SCM_RIGHTS.
 * docs/protocol.md is the reference for every message.
 */
#ifndef TAKT_PROTO_H
#define TAKT_PROTO_H

#include "layout.h"

#include <stddef.h>
#include <stdint.h>

#define TAKT_PROTO_MAGIC 0x504b5454u /* "TTKP" */
#define TAKT_PROTO_VERSION 8u
#define TAKT_PROTO_MAX_MSG 1024
#define TAKT_PROTO_MAX_FDS 4 /* a message carries at most one today */
#define TAKT_DOMAIN_MAX 48 /* incl. NUL */
#define PROTO_REPLY_FLAG 0x8000u
#define PROTO_PUSH_FLAG 0x4000u  /* broker -> client, unasked, req_id 0 */

enum proto_type {
	MSG_HELLO = 1,
	MSG_PUB_OPEN = 2,
	MSG_PUB_CLOSE = 3,
	MSG_SUB_OPEN = 4,
	MSG_SUB_CLOSE = 5,
	/* 6 was CONN_FDS (protocol 2): connections now reach publishers as pushes */
	MSG_EVENT_OPEN = 7,
	MSG_EVENT_CLOSE = 8,
	MSG_POOLS = 9,
	MSG_STATUS = 10,
	MSG_MGMT_FD = 11,
	MSG_CONN_READY = 12,   /* client -> broker, never answered: a pushed connection is ready */
	MSG_POOL_DONE = 13,    /* client -> broker, never answered: a publisher's pool was unmapped */
	MSG_PUB_CONNECT = 14,  /* the publisher mapped its pool: seal it, connect its subscribers */
	MSG_SUB_CONNECT = 15,  /* the subscriber mapped its segment: seal it, connect its publishers */
	MSG_EVENT_LISTEN = 16, /* an event handle wants ids: its own queue and eventfd */
	MSG_EV_READY = 17,     /* client -> broker, never answered: a pushed listener is in the node's table */
	/* A node whose broker died hands its state to the next one (adopt.c):
	 * READOPT first, then each of its ports, then READOPT_DONE. */
	MSG_READOPT = 18,      /* fds: the old registry (read-only), its pidfd */
	MSG_PUB_READOPT = 19,  /* fd: the publisher's pool (read-write) */
	MSG_SUB_READOPT = 20,  /* fds: the subscriber's segment (read-write), its eventfd */
	MSG_READOPT_DONE = 21, /* reply: msg_hello_reply, fd: the new registry (read-only) */
	MSG_EV_READOPT = 22,   /* one event handle; fds (a listener's): its queue (read-write), its eventfd */
	MSG_POOL_READOPT = 23, /* a publisher's pool a subscriber maps; fd: read-only */
	MSG_CONNS = 24,        /* introspection: each connection's queue (paged, as POOLS) */
	MSG_TYPE_MAX = 24,
	/* Pushes (type | PROTO_PUSH_FLAG), sent by the broker to a publisher's
	 * node without being asked; its agent thread receives them. */
	MSG_PUSH_CONN = 1,      /* to a publisher: a new connection; fds: the subscriber's eventfd and segment (ro) */
	MSG_PUSH_CONN_GONE = 2, /* to a publisher: a connection left its list */
	MSG_PUSH_SUB_CONN = 3,  /* to a subscriber: a new connection; fd: the publisher's pool, read-only */
	MSG_PUSH_EV_LISTENER = 4, /* to every node with the event open: a listener; fds: its queue, its eventfd */
	MSG_PUSH_EV_GONE = 5,   /* to every node with the event open: a listener left */
};

struct proto_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;   /* enum proto_type; | PROTO_REPLY_FLAG in replies */
	uint32_t size;   /* whole message, must equal the type's size */
	uint32_t req_id; /* echoed in the reply */
};
_Static_assert(sizeof(struct proto_hdr) == 16, "proto_hdr");

struct proto_reply {
	struct proto_hdr hdr;
	int32_t status; /* 0 or a negative errno */
	uint32_t index; /* the port, proc or event index the request made */
};
_Static_assert(sizeof(struct proto_reply) == 24, "proto_reply");

struct msg_hello {
	struct proto_hdr hdr;
	uint32_t abi_version;
	uint32_t reserved;
	uint64_t layout_digest; /* 0: any (the client validates the header itself) */
	char name[TAKT_PROC_NAME_MAX];
};
struct msg_hello_reply { /* fd: the management segment */
	struct proto_reply r;
	uint64_t epoch;
	uint32_t reserved0;
	uint32_t reserved;
};

struct msg_pub_open {
	struct proto_hdr hdr;
	char topic[TAKT_NAME_MAX];
	char type_name[TAKT_NAME_MAX];
	char reply_type[TAKT_NAME_MAX]; /* a service's request topic: the response type (or ""); else "" */
	uint64_t max_payload;
	uint32_t history;
	uint32_t reserved;
};
struct msg_pub_open_reply { /* fd: the publisher's pool segment, read-write */
	struct proto_reply r; /* index = publisher port */
	uint32_t n_chunks_max;
	uint32_t reserved;
	uint64_t id;          /* the publisher id (registry.c, I0) */
};

struct msg_sub_open { /* reply: proto_reply, index = subscriber port; fds: its eventfd, its segment (rw) */
	struct proto_hdr hdr;
	char topic[TAKT_NAME_MAX];
	char type_name[TAKT_NAME_MAX];
	char reply_type[TAKT_NAME_MAX]; /* as in msg_pub_open */
	uint32_t queue_depth;
	uint32_t overflow;
	uint32_t history;
	uint32_t reserved;
};

/* READOPT: the node of process proc of the domain whose registry had
 * epoch, after its broker died. Reply: proto_reply, index = proc. */
struct msg_readopt {
	struct proto_hdr hdr;
	uint32_t abi_version;
	uint32_t proc;
	uint64_t epoch;
	uint64_t layout_digest;
	uint32_t n_pubs, n_subs; /* ports it will hand back */
	char name[TAKT_PROC_NAME_MAX];
};
_Static_assert(sizeof(struct msg_readopt) == 80, "msg_readopt");

/* PUB_READOPT (id: the publisher's) and SUB_READOPT (id: 0): one port of
 * the readopting node, by its registry index. POOL_READOPT: a publisher's
 * pool (index, id: the publisher's) that subscriber port sub of the node
 * maps. Reply: proto_reply. */
struct msg_port_readopt {
	struct proto_hdr hdr;
	uint32_t index;
	uint32_t sub;   /* POOL_READOPT; 0 otherwise */
	uint64_t id;
};
_Static_assert(sizeof(struct msg_port_readopt) == 32, "msg_port_readopt");

/* EV_READOPT: one event handle of the readopting node, by its event slot
 * and name; listener: its listener slot + 1 (0: it does not listen) and
 * that slot's incarnation. Reply: proto_reply. */
struct msg_ev_readopt {
	struct proto_hdr hdr;
	uint32_t index;
	uint32_t listener;
	uint32_t inc;
	uint32_t reserved;
	char name[TAKT_NAME_MAX];
};
_Static_assert(sizeof(struct msg_ev_readopt) == 96, "msg_ev_readopt");

/* PUB_CLOSE, SUB_CLOSE, EVENT_CLOSE, PUB_CONNECT, SUB_CONNECT: one index. */
struct msg_index {
	struct proto_hdr hdr;
	uint32_t index;
	uint32_t reserved;
};

/* PUSH_CONN (fds: the subscriber's eventfd and segment, read-only), PUSH_SUB_CONN (fd: the
 * publisher's pool, read-only) and PUSH_CONN_GONE (no fd). The receiving
 * node answers PUSH_CONN and PUSH_SUB_CONN with CONN_READY once the
 * connection is usable on its side; the open that created the connection
 * is answered when every such node did (or after a bound). */
struct msg_push_conn {
	struct proto_hdr hdr;
	uint32_t pub;         /* publisher port */
	uint32_t conn;        /* connection slot */
	uint32_t incarnation; /* the slot's incarnation (takt_conn.incarnation) */
	uint32_t sub;         /* subscriber port */
};
_Static_assert(sizeof(struct msg_push_conn) == 32, "msg_push_conn");

struct msg_conn_ready {
	struct proto_hdr hdr;
	uint32_t conn;
	uint32_t incarnation;
};
_Static_assert(sizeof(struct msg_conn_ready) == 24, "msg_conn_ready");

/* EVENT_OPEN's reply index: the slot, | EVENT_NOTIFY_DENIED when [access]
 * lets the process listen on the event at most (its node gets no queue). */
#define EVENT_NOTIFY_DENIED 0x40000000u
struct msg_event_open { /* reply: proto_reply, index = event slot */
	struct proto_hdr hdr;
	char name[TAKT_NAME_MAX];
};
/* EVENT_LISTEN: msg_index, index = event slot; reply: proto_reply, index =
 * event slot << 8 | listener slot; fds: its queue segment (read-write),
 * its eventfd.
 * EVENT_CLOSE: msg_index, index = event slot, reserved = listener slot + 1
 * (0: the handle did not listen), | EVENT_LISTENER_ONLY to drop only the
 * listener (a listen whose call timed out is undone so). */
#define EVENT_LISTENER_ONLY 0x80000000u

/* PUSH_EV_LISTENER (fds: the listener's queue, read-write, and eventfd)
 * and PUSH_EV_GONE (no fd). */
struct msg_push_ev {
	struct proto_hdr hdr;
	uint32_t event;       /* event slot */
	uint32_t listener;    /* listener slot */
	uint32_t inc;         /* incarnation of the listener slot */
	uint32_t reserved;
};
_Static_assert(sizeof(struct msg_push_ev) == 32, "msg_push_ev");
/* EV_READY: the same fields, from the node that got the push: the
 * listener is in its table (EVENT_LISTEN is answered once every node with
 * the event open said so, or after [socket] confirm_timeout_ms). */

/* POOL_DONE: the subscriber's node unmapped the pool of publisher
 * publisher_id it had mapped for subscriber port sub (nothing of it is held
 * any more). The broker keeps a pool's segment counted until every such
 * mapping is gone. */
struct msg_pool_done {
	struct proto_hdr hdr;
	uint64_t publisher_id;
	uint32_t sub;
	uint32_t reserved;
};
_Static_assert(sizeof(struct msg_pool_done) == 32, "msg_pool_done");

struct msg_empty { /* STATUS, MGMT_FD (reply: proto_reply + a read-only fd of the registry) */
	struct proto_hdr hdr;
};

/* POOLS: request msg_index, index = the first publisher port to report. */
struct proto_pool_stat { /* one publisher's pool */
	char topic[TAKT_NAME_MAX];
	uint64_t publisher_id;
	uint64_t payload_size;
	int32_t pid;             /* the publisher's process */
	uint32_t port;           /* its publisher port */
	uint32_t total;          /* chunks reserved */
	uint32_t free;           /* on its free list */
	uint32_t in_flight;      /* total - free: loaned, queued, taken or kept for history */
	uint32_t history;        /* of those, kept only for history */
	uint32_t loans;
	uint32_t max;            /* chunks its segment could grow to */
	uint64_t bytes;          /* reserved bytes of its pool segment */
	uint32_t bad_returns;    /* returns it refused: foreign, out of range, twice */
	uint32_t light;          /* 1: it publishes without a fence while no subscriber parks (P1L) */
};
_Static_assert(sizeof(struct proto_pool_stat) == 128, "proto_pool_stat");
#define PROTO_POOLS_PER_REPLY 7
struct msg_pools_reply {
	struct proto_reply r; /* index = entries in pools[] */
	uint32_t next;        /* the port to ask for next, or TAKT_NONE when done */
	uint32_t reserved;
	struct proto_pool_stat pools[PROTO_POOLS_PER_REPLY];
};
_Static_assert(sizeof(struct msg_pools_reply) <= TAKT_PROTO_MAX_MSG, "pools fits");

/* CONNS: request msg_index, index = the first connection to report. What
 * the broker reads of each live connection's words (the publisher's head
 * and drops, the subscriber's tail): statistics, read without ordering. */
struct proto_conn_stat {
	uint32_t conn, pub, sub;  /* connection, publisher and subscriber ports */
	uint32_t state;           /* SLOT_ACTIVE, or SLOT_ORPHAN: its publisher left */
	uint32_t depth;           /* samples queued at most */
	uint32_t overflow;        /* enum takt_overflow */
	uint64_t publisher_id;
	uint64_t pushed;          /* samples the publisher pushed into it */
	uint64_t taken;           /* samples the subscriber took, or the publisher took back (dropped) */
	uint64_t dropped;         /* samples lost on it (overflow) */
	uint64_t sub_bytes;       /* bytes of the subscriber's segment */
};
_Static_assert(sizeof(struct proto_conn_stat) == 64, "proto_conn_stat");
#define PROTO_CONNS_PER_REPLY 15
struct msg_conns_reply {
	struct proto_reply r; /* index = entries in conns[] */
	uint32_t next;        /* the connection to ask for next, or TAKT_NONE when done */
	uint32_t reserved;
	struct proto_conn_stat conns[PROTO_CONNS_PER_REPLY];
};
_Static_assert(sizeof(struct msg_conns_reply) <= TAKT_PROTO_MAX_MSG, "conns fits");

struct msg_status_reply {
	struct proto_reply r;
	int32_t pid;
	uint32_t reserved;
	uint64_t epoch;
	struct takt_limits limits;
	uint32_t n_procs, n_topics, n_pubs, n_subs, n_conns, n_events;
	char domain[TAKT_DOMAIN_MAX];
	char version[16];
	uint64_t shm_bytes;      /* memory of every segment of the domain still alive */
	uint64_t shm_bytes_idle; /* what the domain holds with no client attached */
	/* A restart: the epoch of the broker whose domain this one adopted
	 * (0: none), what came back and what did not, and how long from this
	 * broker's start until the adoption settled. */
	uint64_t adopted_epoch;
	uint32_t adopted_procs, adopted_pubs, adopted_subs, adopted_reclaimed, adopted_refused, adopted_ms;
};
_Static_assert(sizeof(struct msg_status_reply) == 232, "status layout");

/* The exact size a request of this type must have, or 0 for unknown types. */
size_t proto_request_size(uint16_t type);

/* 1 when s is a valid name: 1..63 chars of [A-Za-z0-9_./-], NUL inside n. */
int proto_name_ok(const char *s, size_t n);
/* Services (service.c) are built on two kinds of topics no user can name
 * (a topic never starts with '@'): "@/" SERVICE "/q", where clients
 * publish requests to the server, and "@/" SERVICE "/r/" + 16 hex digits
 * (a client's id), where the server answers that client alone. */
#define PROTO_SERVICE_MAX 40 /* chars of a service name */
/* 1 when s is a valid service name: a name of at most 40 chars. */
int proto_service_name_ok(const char *s);
/* 'q' or 'r' when name (NUL inside n) is such a topic, else 0; *svc_len:
 * the service name's length; *client: the id in an 'r' (either may be NULL). */
int proto_service_topic(const char *name, size_t n, size_t *svc_len, uint64_t *client);
/* 1 when pattern, a glob over names, matches name: `*` matches within one
 * path segment (no '/'), `**` across segments ([access] rules, topic
 * listings). The cost is bounded by the lengths, whatever the stars. */
int proto_name_glob(const char *pattern, const char *name);
/* Domain names: 1..47 chars of [A-Za-z0-9_.-], not starting with '.'. */
int proto_domain_ok(const char *s);
/* The domain to use: explicit, else $TAKT_DOMAIN, else "default". */
const char *proto_domain_default(const char *explicit_domain);
/* Where a domain's socket and lock live (docs/operations.md). */
#define PROTO_SYSTEM_DIR "/run/takt"
enum proto_dir_kind {
	PROTO_DIR_EXPLICIT, /* $TAKT_RUNTIME_DIR */
	PROTO_DIR_SYSTEM,   /* root's: PROTO_SYSTEM_DIR */
	PROTO_DIR_USER,     /* $XDG_RUNTIME_DIR/takt, else /tmp/takt-<uid> */
};
/* <dir>/takt-<domain>.<suffix>; dir is $TAKT_RUNTIME_DIR, else for root
 * PROTO_SYSTEM_DIR, else $XDG_RUNTIME_DIR/takt, else /tmp/takt-<uid>.
 * -ENAMETOOLONG. */
int proto_runtime_path(const char *domain, const char *suffix, char *buf, size_t len);
/* Creates the runtime directory (0755 for the system one, 0700 for a
 * user's) and checks a default one is the caller's alone to write. */
int proto_runtime_dir_make(void);

void proto_hdr_init(struct proto_hdr *h, uint16_t type, uint32_t size, uint32_t req_id);
/* sendmsg of one packet with up to TAKT_PROTO_MAX_FDS descriptors. */
int proto_send(int sock, const void *msg, size_t size, const int *fds, unsigned n_fds);
/* recvmsg of one packet: its size (0 = peer hung up), -EMSGSIZE when
 * truncated. Received descriptors are O_CLOEXEC; any beyond max_fds are
 * closed. */
long proto_recv(int sock, void *buf, size_t size, int *fds, unsigned max_fds, unsigned *ret_n_fds);
/* Client: connects to the domain's broker socket; a user without
 * $TAKT_RUNTIME_DIR whose own directory has none tries the system one.
 * -ENOENT when no broker runs, -EACCES when the socket is not theirs to
 * use. */
int proto_connect(const char *domain, int *ret_sock);
/* The same, and the path of the socket it reached. */
int proto_connect_at(const char *domain, int *ret_sock, char *ret_path, size_t len);
/* Connects to a socket path (a node coming back to the path it had). */
int proto_connect_path(const char *path, int *ret_sock);
/* A reply whose req_id names an earlier request (its call timed out). Its
 * descriptors are closed after the callback returns. */
typedef void (*proto_stale_fn)(void *user, const struct proto_reply *rep, size_t size, const int *fds,
			       unsigned n_fds);
/* Client: one request, one reply, bounded by timeout_ms. Returns the
 * reply's status (or a transport error); the reply must be exactly
 * reply_size bytes of the matching type. Replies to earlier requests are
 * handed to stale (may be NULL) and dropped, so one timed-out call does
 * not break the channel for the calls after it. */
int proto_call(int sock, void *req, size_t req_size, void *reply, size_t reply_size,
	       int *fds, unsigned max_fds, unsigned *ret_n_fds, int timeout_ms,
	       proto_stale_fn stale, void *stale_user);
/* Checks a received reply of n bytes against its request: the reply's
 * status, -EPROTO when it is not the answer to req or not reply_size
 * bytes long. */
int proto_reply_check(const struct proto_reply *rep, long n, const struct proto_hdr *req, size_t reply_size);
/* Whether a received packet of n bytes is a push of the broker (any type). */
int proto_is_push(const void *msg, long n);

#endif
