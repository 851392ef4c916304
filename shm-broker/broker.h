/* broker.h - takt-broker's state: segments, registry, clients. */
#ifndef TAKT_BROKER_H
#define TAKT_BROKER_H

#include "config.h"
#include "proto.h"
#include "segment.h"

#include <stdbool.h>
#include <sys/types.h>

struct broker;
struct outmsg;

struct client {
	struct broker *b;
	int fd;                 /* -1: slot unused */
	uint32_t proc;          /* TAKT_NONE until HELLO */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups;          /* supplementary groups (SO_PEERGROUPS), n_groups of them */
	uint32_t n_groups;
	uint32_t refusals;      /* access refusals (the first few are logged) */
	int pidfd;              /* its own pidfd, sent with HELLO, or -1 */
	/* adopt.c: a ghost stands for a process of an adopted registry that has
	 * not come back (no socket: fd < 0); readopting: between READOPT and
	 * READOPT_DONE. */
	bool ghost, readopting;
	/* A message that arrived while the registry was being adopted, held
	 * (and the socket not read) until the adoption settles. */
	void *deferred;
	long deferred_len;
	int deferred_fds[2];
	uint32_t *event_refs;   /* opens per event slot */
	/* Per event slot, the listener slots whose listen waits for this
	 * client's EV_READY (bit j: it was told of listener j by that listen;
	 * in the same allocation as event_refs). */
	uint32_t *ev_owed;
	bool doomed;            /* a push to it failed: dropped after this event */
	/* An open whose reply waits for CONN_READY acks (at most one: a node
	 * makes one call at a time). */
	bool pend;
	struct proto_hdr pend_req;
	int pend_status;
	uint32_t pend_index;
	unsigned pend_acks;
	uint64_t pend_deadline_ns;
	struct msg_pub_open_reply pend_pub; /* PUB_OPEN's reply, sent with the pool fd */
	uint32_t pend_event;                /* EVENT_LISTEN: its event slot */
	int pend_fd;                        /* the descriptor the reply carries, or -1 */
	/* Messages its socket had no room for, sent in order as it drains
	 * (EPOLLOUT): a slow or stopped client is never dropped for it. */
	struct outmsg *out_head, *out_tail;
	unsigned out_len;
};

/* The registry, kept in the broker's private memory. The shared-memory
 * copy is written from it for clients to read, and never read back: another
 * process can scribble on shared memory, so no index the broker follows
 * comes from there. */
struct reg_topic {
	uint32_t state, n_pubs, n_subs;
	char name[TAKT_NAME_MAX];
	char type_name[TAKT_NAME_MAX];
	char reply_type[TAKT_NAME_MAX]; /* a service's request topic: the response type, "" none declared */
	/* pubs_per_topic and subs_per_topic entries, in tables reg_init
	 * allocates once; every reset of the entry keeps the pointers. */
	uint32_t *pubs;
	uint32_t *subs;
};

struct reg_pub {
	uint32_t state, topic, proc, history;
	uint64_t id;
	uint64_t payload_size, stride;
	uint32_t n_chunks, n_chunks_max;  /* reserved / address space */
	int pool_fd, pool_ro_fd;          /* the pool segment: rw for the publisher, ro for subscribers */
	bool connected;                   /* PUB_CONNECT: pool sealed, subscribers connected */
	uint32_t *conns;                  /* subs_per_topic entries (reg_init; kept by resets) */
	/* Our read-only view of the head of its pool (live words, connection
	 * words, rings; not the chunks), kept until the port is free. */
	struct seg_pool pool;
	size_t pool_map_size;
	uint64_t *slot_busy;              /* bitmap: connection slots (regions) in use */
	uint64_t seg_ino;                 /* its pool's inode (checked when a node hands it back) */
};

struct reg_sub {
	uint32_t state, topic, proc, depth, overflow, history;
	uint32_t *conns;                  /* pubs_per_topic entries (reg_init; kept by resets) */
	int seg_fd, seg_ro_fd;            /* its segment: rw for the subscriber, ro for publishers */
	bool connected;                   /* SUB_CONNECT: segment sealed, publishers connected */
	struct seg_subseg seg;            /* our read-only view of it, kept until the port is free */
	uint64_t *slot_busy;              /* bitmap: connection slots (regions) in use */
	uint64_t seg_ino;                 /* its segment's inode (checked when a node hands it back) */
};

/* A connection; while CLOSING it waits for both ends to quiesce (Q0). */
struct reg_conn {
	uint32_t state, pub, sub, mask, depth;
	uint32_t pub_slot, sub_slot; /* its regions in the ends' segments */
	uint32_t incarnation;    /* mirrored to takt_conn.incarnation, never read back */
	uint64_t pub_snap, sub_snap;
	bool pub_done, sub_done; /* that end closed or died: nothing to wait for */
	bool pub_quiet;          /* ORPHAN: the publisher quiesced, told in takt_conn.pub_quiet */
	/* The open waiting for this connection's CONN_READY acks (one per
	 * pushed end), or NULL. */
	struct client *waiter;
	uint8_t acks_owed;
	/* The publisher's node may still be preparing the connection (writing
	 * its ring) until it confirms PUSH_CONN: the slot is not reused before
	 * that, or before that process is gone. */
	bool prep_owed;
	/* Likewise the subscriber's node (it writes the region of its own
	 * segment the connection uses) until it confirms PUSH_SUB_CONN, its
	 * port closes, or its process is gone. */
	bool sub_owed;
};

/* A pool segment whose publisher closed while subscribers still map it:
 * kept (and counted) until the last of them lets go. */
struct reg_pool_left {
	uint64_t pub_id;
	int fd;
};

/* A subscriber port's mapping of a publisher's pool (one per PUSH_SUB_CONN
 * sent), until its node says POOL_DONE, the subscriber closes or its
 * process goes. */
struct reg_pool_map {
	uint64_t pub_id;
	uint32_t sub, proc;
};

struct reg_listener {
	struct client *cl;      /* NULL: free */
	uint32_t inc;
	int seg_fd, efd;
	unsigned acks_owed;     /* nodes that have not said EV_READY (cl's EVENT_LISTEN waits) */
};

struct reg_event {
	uint32_t state, refs;
	char name[TAKT_NAME_MAX];
	struct reg_listener lis[TAKT_MAX_LISTENERS];
};

struct broker {
	struct broker_config cfg;
	uint64_t epoch;
	uint64_t id_base;       /* I0: ids handed out are id_base | n, 0 < n < 2^24 */
	uint32_t id_next;
	struct seg_view v;
	void *mgmt;
	size_t mgmt_size;
	int mgmt_fd;
	int mgmt_ro_fd;         /* the same segment, read-only: for clients and tools */

	int lock_fd, listen_fd, epoll_fd, signal_fd, timer_fd;
	char sock_path[108], lock_path[128];
	struct client *clients;
	unsigned n_clients_max;
	int *sub_efd;           /* per subscriber port */
	uint32_t *proc_state;
	struct client **proc_client; /* the client of each process entry */
	struct reg_topic *topics;
	struct reg_pub *pubs;
	struct reg_sub *subs;
	uint32_t *lists;        /* the tables behind the entries' list pointers (reg_init) */
	struct reg_conn *conns;
	struct reg_event *events;
	unsigned n_retiring;
	unsigned n_pending;     /* clients with an open waiting for acks */
	struct reg_pool_map *maps;   /* live mappings of pools by subscribers */
	unsigned n_maps, cap_maps;
	struct reg_pool_left *left;  /* pools of closed publishers still mapped */
	unsigned n_left, cap_left;
	unsigned n_orphans;     /* connections whose publisher left */
	/* A connection could not be created for want of a free region in an
	 * end's segment (that end has not confirmed the connections it was
	 * told of, stopped say): reg_tick creates it once one is free. */
	bool conns_missing;
	int timer_mode;
	bool listen_paused;     /* out of descriptors: not accepting until a client leaves */
	bool verbose;
	/* adopt.c: a predecessor died (its socket was left behind): the
	 * registry its nodes hand back is adopted before anything else is
	 * served. */
	int adopt_state;
	uint64_t adopt_deadline_ns;
	/* The predecessor's registry as its lock file names it: the only one
	 * adopted (0: none recorded). */
	uint64_t adopt_expect_epoch, adopt_expect_ino;
	uint64_t adopt_started_ns;
	struct client *ghosts;     /* per process of the adopted registry */
	struct adopt_stats {
		uint64_t epoch;    /* the adopted registry's (0: none) */
		uint32_t procs, pubs, subs, listeners, reclaimed, refused, dropped;
		uint64_t ms;       /* from our start until the adoption settled */
	} adopted;
};

enum { ADOPT_NONE, ADOPT_WAITING, ADOPT_RUNNING };

/* segments.c */
int seg_lock_domain(struct broker *b);
/* Writes "epoch inode" of our registry into the lock file. */
int seg_record_registry(struct broker *b);
void seg_unlock_domain(struct broker *b);
/* Lets the lock go but leaves the lock file, with the registry it
 * records, for the next broker to adopt (a stop with processes attached). */
void seg_leave_domain(struct broker *b);
int seg_create_all(struct broker *b);
/* A publisher's pool segment sized for pp's n_chunks_max chunks, the first
 * reserve bytes reserved; read-write and read-only descriptors. */
int seg_pool_create(struct broker *b, const struct takt_pub_port *pp, uint32_t pi, uint64_t reserve,
		    int *ret_rw, int *ret_ro);
/* Reserves bytes [from, to) of a segment: 0 or -ENOMEM/-ENOSPC. */
int seg_pool_reserve(int fd, uint64_t from, uint64_t to);
/* A subscriber's segment for port si: read-write and read-only
 * descriptors, its header part reserved. */
int seg_subseg_create(struct broker *b, uint32_t si, int *ret_rw, int *ret_ro);
/* Maps bytes [0, size) of a segment read-only for the broker. */
void *seg_map_ro(int fd, size_t size);
/* A listener's queue segment (read-write descriptor, reserved, header
 * written, sealed against shrinking and growing). */
int seg_listener_create(struct broker *b, uint32_t event, uint32_t listener, int *ret_fd);
/* Bytes of memory a segment holds (its allocated blocks). */
uint64_t seg_fd_bytes(int fd);
/* Its inode number (0 on error, or when it is not a memfd: inode numbers
 * are unique on one device only) and its size (0 on error). */
uint64_t seg_fd_ino(int fd);
uint64_t seg_fd_size(int fd);
/* Whether fd carries every seal in want. */
bool seg_fd_sealed(int fd, int want);
/* Whether fd is an eventfd (its fdinfo says so). */
bool seg_fd_is_eventfd(int fd);
void seg_destroy_all(struct broker *b);

/* registry.c: every function returns 0 / an index or a negative errno. */
int reg_init(struct broker *b);
void reg_free(struct broker *b);
int reg_proc_add(struct broker *b, struct client *cl, const char *name);
void reg_proc_remove(struct broker *b, struct client *cl);
int reg_pub_open(struct broker *b, struct client *cl, const struct msg_pub_open *m);
/* I0: a new 64-bit id, unique in the domain across broker restarts. */
uint64_t reg_new_id(struct broker *b);
int reg_pub_close(struct broker *b, struct client *cl, uint32_t index);
/* The publisher mapped its pool: seals it against writes through any new
 * mapping (F_SEAL_FUTURE_WRITE), then connects the topic's subscribers. */
int reg_pub_connect(struct broker *b, struct client *cl, uint32_t index);
int reg_sub_open(struct broker *b, struct client *cl, const struct msg_sub_open *m);
/* The subscriber mapped its segment: seals it, connects the publishers. */
int reg_sub_connect(struct broker *b, struct client *cl, uint32_t index);
int reg_sub_close(struct broker *b, struct client *cl, uint32_t index);
int reg_event_open(struct broker *b, struct client *cl, const char *name);
/* The handle of cl on event index listens: its queue segment and eventfd
 * (the broker keeps them; fds point at its copies). A listener slot. */
int reg_event_listen(struct broker *b, struct client *cl, uint32_t index, int fds[2]);
/* An EV_READY from cl: one node has a listener in its table. */
void reg_ev_ready(struct broker *b, struct client *cl, const struct msg_push_ev *m);
/* listener: the handle's listener slot + 1, or 0. */
int reg_event_close(struct broker *b, struct client *cl, uint32_t index, uint32_t listener);
enum { TICK_OFF, TICK_SLOW, TICK_FAST };
/* Frees connections whose ends quiesced and retires drained orphans.
 * Returns how soon it wants to run again: TICK_FAST while connections wait
 * for quiescence (1 ms), TICK_SLOW while orphans wait to be drained. */
int reg_tick(struct broker *b);
/* When an open that starts waiting for acks now gives up on them. */
uint64_t reg_pend_deadline(const struct broker *b);
void reg_pool_stats(struct broker *b, uint32_t first, struct msg_pools_reply *rep);
/* CONNS: from connection first on, a page of them. */
void reg_conn_stats(struct broker *b, uint32_t first, struct msg_conns_reply *rep);
/* A CONN_READY from cl: one ack of a pushed connection. */
void reg_conn_ready(struct broker *b, struct client *cl, const struct msg_conn_ready *m);
/* A POOL_DONE from cl: one subscriber's mapping of a pool is gone. */
void reg_pool_done(struct broker *b, struct client *cl, const struct msg_pool_done *m);
void reg_status(struct broker *b, struct msg_status_reply *rep);
/* Processes attached (those an adoption waits for included). */
uint32_t reg_procs(const struct broker *b);
/* Adoption: rebuilds the registry from a predecessor's (o, validated);
 * every process of it is left ACTIVE for the caller to give a ghost.
 * Returns how many entries were dropped for not holding together. */
int reg_adopt(struct broker *b, const struct seg_view *o);
/* A readopting node hands back publisher port pi (id) with its pool (fd,
 * read-write) or subscriber port si with its segment and eventfd; checked
 * against the registry. On success the descriptors are the broker's. */
int reg_adopt_pub(struct broker *b, struct client *cl, uint32_t pi, uint64_t id, int fd);
int reg_adopt_sub(struct broker *b, struct client *cl, uint32_t si, int seg_fd, int efd);
/* A read-only descriptor of publisher pi's pool (id) that subscriber port
 * si of cl maps: our view of it until its publisher hands it back, or for
 * good if it never does (what it sent stays takeable); the pool of a
 * publisher that closed before the old broker died is kept while its
 * subscribers map it, as the old broker kept it. The mapping is recorded
 * either way. 1 kept, 0 not needed, or a negative errno. */
int reg_adopt_pool(struct broker *b, struct client *cl, uint32_t pi, uint32_t si, uint64_t id, int fd);
/* One event handle back (m), with a listener's queue and eventfd in fds
 * (kept on success). */
int reg_adopt_event(struct broker *b, struct client *cl, const struct msg_ev_readopt *m, int fds[2]);
/* The adoption is over (ghosts reclaimed): snapshots, conn_gen bumps, and
 * every connection pushed to its nodes again. */
void reg_adopt_settle(struct broker *b);

/* adopt.c */
/* At start: whether a predecessor left its socket, so its nodes will come
 * back; the broker then waits for them ([socket] readopt_timeout_ms). */
void adopt_start(struct broker *b, bool predecessor);
/* Whether a message of this type is served during an adoption. */
bool adopt_serves(uint16_t type);
void adopt_readopt(struct broker *b, struct client *cl, const struct msg_readopt *m, int fds[2]);
void adopt_port(struct broker *b, struct client *cl, const struct msg_port_readopt *m, int fds[2]);
void adopt_event(struct broker *b, struct client *cl, const struct msg_ev_readopt *m, int fds[2]);
void adopt_done(struct broker *b, struct client *cl, const struct proto_hdr *h);
/* reg_tick during an adoption: deadlines and dead processes. */
int adopt_tick(struct broker *b);
void adopt_free(struct broker *b);
/* server.c */
/* Sends the deferred reply of cl's open (its acks are in or overdue). */
void server_pend_reply(struct broker *b, struct client *cl);
/* Sends a message (a reply or a push) to a client, in order: what its
 * socket has no room for waits in its queue. A client with more than
 * OUT_MAX messages waiting is doomed (dropped once the current event is
 * done). */
void server_push(struct broker *b, struct client *cl, const void *msg, size_t size, const int *fds,
		 unsigned n_fds);
/* 0 if cl may do act on topic ([access] rules, access.h), else -EACCES
 * with one log line naming the process, its user, the topic and the rule
 * (the first ACCESS_LOG_MAX refusals of a client). */
int server_access(struct broker *b, struct client *cl, enum access_action act, const char *topic);
/* The same decision, silent (a rule applied to every push, say). */
bool server_may(const struct broker *b, const struct client *cl, enum access_action act, const char *name);
/* Whether fd is the client's own pidfd (its fdinfo's pid is the peer's). */
bool server_pidfd_ok(const struct client *cl, int fd);
/* Replies to a request with only a status (and index). */
void server_reply_status(struct client *cl, const struct proto_hdr *req, int status, uint32_t index);
/* Handles the messages held while the registry was adopted. */
void server_replay_deferred(struct broker *b);
/* A connected socket becomes a client (credentials from SO_PEERCRED):
 * its slot, or a negative errno with the socket closed. */
int server_client_add(struct broker *b, int fd);
/* Reads and handles one message from the client's socket (drops the
 * client on hang-up): what the event loop calls when it is readable. */
void server_client_input(struct broker *b, struct client *cl);
/* Sends what waits in the client's queue while its socket takes it: what
 * the event loop calls when it is writable. */
void server_client_flush(struct broker *b, struct client *cl);
/* Drops the clients a push doomed: what the event loop does after each
 * batch of events. */
void server_drop_doomed(struct broker *b);
int server_listen(struct broker *b);
int server_run(struct broker *b);
/* Closes every client and descriptor and frees the broker's tables. */
void server_free(struct broker *b);

#endif
