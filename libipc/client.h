/* client.h - the process-local side of a node and its ports. */
#ifndef TAKT_CLIENT_H
#define TAKT_CLIENT_H

#include "proto.h"
#include "ring.h"
#include "segment.h"

#include <pthread.h>
#include <stdbool.h>
#include <unistd.h>
#include <takt/ipc.h>

/* An eventfd (and the mapping of the subscriber's segment that came with
 * it) the agent closes once no publish can be using it (G1). */
struct node_retired_fd {
	struct node_retired_fd *next;
	int fd;
	int pidfd;                   /* the subscriber's, or -1 */
	void *map;
	size_t map_size;
	uint32_t conn, incarnation;  /* the connection the subscriber's segment served (G1R) */
	bool ev;                     /* a listener's queue: wait until no notify runs */
	unsigned n;                  /* publisher ports to wait for */
	struct {
		uint32_t pub;        /* port index: its `active` is in its pool */
		uint64_t snap;
	} w[];
};

/* A listener of an event as a node knows it (to notify into its queue):
 * per event slot and listener slot; written by the agent, published by
 * the release store of inc (0: none). */
struct node_listener {
	_Atomic uint32_t inc;
	int efd;
	struct seg_listener sl;
};

/* A subscriber's segment as a publishing node maps it (read-only), per
 * connection slot; written by the agent before it installs the eventfd in
 * efd_tab (G0), which publishes it. */
struct node_submap {
	void *base;
	size_t size;
	struct seg_subseg ss;
	int pidfd; /* the subscriber's process (pushed with it), or -1 */
};

struct takt_node {
	int sock;
	char sock_path[128];  /* where the broker was reached: a restarted one is looked for there */
	int mgmt_fd;          /* the registry, read-only: handed to a restarted broker */
	_Atomic bool closing; /* takt_node_close: the agent stops, looks for no broker */
	int readopt_err;      /* why a restarted broker did not take us back, or 0 */
	uint32_t readopts;    /* brokers that took us back */
	pthread_mutex_t lock; /* serialises control requests, never the data path */
	_Atomic uint32_t next_req;
	int timeout_ms;        /* bound of each control call */

	/* The agent thread reads the socket: replies go to the call waiting
	 * for them (rx_*, under rx_lock), pushes are handled at once. */
	pthread_t agent;
	bool agent_started;
	pthread_mutex_t rx_lock;
	pthread_cond_t rx_cond;
	uint32_t wait_req;     /* the req_id a call waits for; 0: none */
	bool rx_ready, dead;
	bool rejoining;        /* the agent is being taken back by a restarted broker */
	bool attached;         /* the open finished: a broker that dies is waited for */
	long rx_len;
	unsigned rx_nfds;
	int rx_fds[TAKT_PROTO_MAX_FDS];
	union {
		struct proto_reply r;
		char bytes[TAKT_PROTO_MAX_MSG];
	} rx;
	/* G0: per connection slot, the subscriber's eventfd pushed by the
	 * broker: incarnation << 32 | (fd + 1), 0 = none. Written by the agent,
	 * read by publish. */
	_Atomic uint64_t *efd_tab;
	struct node_submap *sub_maps; /* per connection slot, published by efd_tab */
	struct node_retired_fd *retired; /* agent only */
	pthread_mutex_t ports_lock;      /* the port lists, for the agent */

	uint32_t proc;
	/* The broker's epoch: written by the agent when a restarted broker
	 * takes the node back, read by takt_node_epoch on any thread. */
	_Atomic uint64_t epoch;
	/* RS0 (node.c): registries this node moved to (readopt_remap), each
	 * bumped by the agent; takt_node_topics_wait compares it. */
	_Atomic uint32_t registry_swaps;
	struct seg_view v;
	void *mgmt;            /* the registry, read-only */
	size_t mgmt_size;
	/* Events: every listener of every event slot (the agent keeps it), the
	 * notifies running now (the agent unmaps a queue once none is), and a
	 * turn per event slot for this process's lanes. */
	struct node_listener *ev_lis;  /* events x TAKT_MAX_LISTENERS */
	_Atomic uint64_t ev_inflight;
	_Atomic bool ev_gone;          /* the broker hung up: no more notifies into lanes */
	atomic_flag *ev_turn;
	/* PS1: per connection slot, incarnation + 1 of the connection this
	 * node's agent or a publishing thread has claimed to prepare (pub.c). */
	_Atomic uint32_t *claim_tab;
	int kick_fd;           /* eventfd: wakes the agent to unmap what subscribers let go */
	struct takt_pub *pubs; /* open ports, closed by takt_node_close */
	struct takt_sub *subs;
	struct takt_event *events;
	bool q0_light;         /* Q0 by plain stores: see q0_enter */
};

/* G0: the eventfd of connection ci as the agent installed it, or -1 while
 * its push has not arrived (the agent then wakes for us). */
static inline int node_conn_efd(const takt_node *n, uint32_t ci, uint32_t incarnation)
{
	/* acquire: pairs with the agent's seq_cst exchange that installed it. */
	uint64_t w = atomic_load_explicit(&n->efd_tab[ci], memory_order_acquire);

	return w && (uint32_t)(w >> 32) == incarnation ? (int)(uint32_t)w - 1 : -1;
}

/* G0: the subscriber's segment of connection ci, or NULL while its push
 * has not arrived. Read twice around the copy: the agent may replace the
 * entry of a retired connection meanwhile. */
static inline bool node_conn_submap(const takt_node *n, uint32_t ci, uint32_t incarnation,
				    struct node_submap *out)
{
	/* acquire: pairs with the agent's seq_cst exchange that installed it. */
	uint64_t w = atomic_load_explicit(&n->efd_tab[ci], memory_order_acquire);

	if (!w || (uint32_t)(w >> 32) != incarnation)
		return false;
	*out = n->sub_maps[ci];
	atomic_thread_fence(memory_order_acquire);
	return atomic_load_explicit(&n->efd_tab[ci], memory_order_relaxed) == w;
}

/* Q0, client side: an operation that uses rings brackets itself with
 * q0_enter (before it loads conn_gen) and q0_exit (after its last ring
 * access). `active` has one writer, the port's handle (a port is used by one
 * thread at a time), so neither needs an atomic RMW.
 *
 * Enter needs store(active) -> load(conn_gen) ordering against the broker's
 * bump(conn_gen) -> load(active) (store-buffer litmus). Without membarrier
 * that is a seq_cst RMW, a locked instruction that drains the store buffer
 * and so serialises the cache misses of the payload the caller just wrote
 * with those of the ring push (measured: ~100 ns per hop). With it, the
 * broker's membarrier(GLOBAL_EXPEDITED) is the fence on our side, and a
 * compiler barrier is all we need (the asymmetric fence of liburcu). */
static inline void q0_enter(_Atomic uint64_t *active, bool light)
{
	if (light) {
		atomic_store_explicit(active, atomic_load_explicit(active, memory_order_relaxed) + 1,
				      memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
	} else {
		atomic_fetch_add_explicit(active, 1, memory_order_seq_cst);
	}
}

static inline void q0_exit(_Atomic uint64_t *active)
{
	/* release: our ring accesses happen before the broker sees the move. */
	atomic_store_explicit(active, atomic_load_explicit(active, memory_order_relaxed) + 1,
			      memory_order_release);
}

/* P1: after a push into connection c and a seq_cst fence, wakes its
 * subscriber if it is parked in a generation this caller has not woken yet
 * (*woken, the caller's own). The connection's wake count goes up before
 * the write, so the subscriber knows a write is owed (P2). Both are words
 * of the publisher's: the publishing thread and its node's agent (G0) may
 * both wake one generation, each counted. */
static inline void conn_wake(struct takt_conn_pub *c, const _Atomic uint32_t *park, uint32_t *woken, int efd)
{
	/* relaxed: the caller's fence orders it after the push (P1). */
	uint32_t g = atomic_load_explicit(park, memory_order_relaxed);
	uint64_t one = 1;

	if (!(g & 1) || g == *woken || efd < 0)
		return;
	*woken = g;
	/* P2: release: the count is up before the write can be read (the
	 * subscriber loads it after its read of the eventfd). An RMW: the
	 * agent may count on the same connection. */
	atomic_fetch_add_explicit(&c->wakes, 1, memory_order_release);
	if (write(efd, &one, sizeof(one)) < 0) {
		/* eventfd cannot overflow at one write per park and publisher */
	}
}

/* What a port hands back to a restarted broker (node.c, readopt): its
 * registry index, its id (publishers), and copies of its descriptors (a
 * publisher's pool; a subscriber's segment and eventfd), the caller's to
 * close (-1 where a copy failed). */
struct port_handback {
	uint32_t index, sub; /* sub: the subscriber port that maps a pool */
	uint64_t id;
	int fd[2];
};
/* An event handle as it goes back to a restarted broker: its slot, name,
 * listener slot + 1 (0: none) with that slot's incarnation, and (a
 * listener's) copies of its queue and eventfd, the caller's to close. */
struct event_handback {
	uint32_t index, listener, inc;
	char name[TAKT_NAME_MAX];
	int fd[2];
};
/* Under ports_lock: the node's event handles, at most max. */
unsigned event_handbacks(takt_node *n, struct event_handback *out, unsigned max);
/* Under ports_lock: the node's publisher (subscriber) ports, at most max. */
unsigned pub_handbacks(takt_node *n, struct port_handback *out, unsigned max);
unsigned sub_handbacks(takt_node *n, struct port_handback *out, unsigned max);
/* Under ports_lock: the publishers' pools the node's subscribers map (index,
 * id: the publisher's; sub: the subscriber's; fd[0]: a copy of the read-only descriptor, the
 * caller's to close), at most max. */
unsigned pool_handbacks(takt_node *n, struct port_handback *out, unsigned max);

/* One request/reply with the broker; fds as in proto_call. */
int node_call(takt_node *n, uint16_t type, void *req, size_t req_size, void *reply,
	      size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds);
/* The same, sending send_fd (>= 0) with the request. */
int node_call_fd(takt_node *n, uint16_t type, void *req, size_t req_size, int send_fd, void *reply,
		 size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds);
/* A retired entry (malloc'ed, fd and map unset) holding the registry
 * index and `active` counter now of every open publisher port of this
 * node, taken under ports_lock: for the agent (G1). NULL: no memory. */
struct node_retired_fd *pub_port_snapshot(takt_node *n);
/* G1R: whether a publisher of the node has a slot that still serves
 * connection ci's incarnation inc (its publishing thread has not let it
 * go: pub_reclaim still reads its return ring). Takes ports_lock. */
bool pub_conn_held(takt_node *n, uint32_t ci, uint32_t inc);
/* Whether publisher port idx of this node has been outside publish since
 * snap was taken (or is closed): G1. */
bool pub_port_moved(takt_node *n, uint32_t idx, uint64_t snap);
/* Agent, under ports_lock: a pushed connection of publisher port pub (it
 * hands the publisher's history to the new ring, PS1) or of subscriber
 * port sub (it maps the publisher's pool, fd, read-only). 0 or a negative
 * errno; the caller confirms with CONN_READY either way. */
int pub_agent_connect(takt_node *n, const struct msg_push_conn *m);
/* Agent, without ports_lock: when pub_agent_connect found the connection
 * claimed by the publishing thread, waits (bounded) until it is prepared. */
void pub_agent_wait(takt_node *n, const struct msg_push_conn *m);
int sub_agent_connect(takt_node *n, const struct msg_push_conn *m, int pool_fd);
/* Agent: maps the subscriber's segment pushed with PUSH_CONN (read-only)
 * and checks it. 0 or a negative errno. */
int node_submap_open(takt_node *n, uint32_t sub, int fd, struct node_submap *out);
/* Agent: unmaps the pools subscribers of this node let go (SS: DONE). */
void sub_agent_reap(takt_node *n);
/* Agent: tells the broker a subscriber's mapping of a pool is gone. */
void node_pool_done(takt_node *n, uint64_t publisher_id, uint32_t sub);
/* Wakes the agent (sub_agent_reap). One syscall; only when a connection
 * ends with nothing held, never per sample. */
void node_kick(takt_node *n);
/* Sends a close request for a port; errors are ignored (the broker also
 * reclaims on hang-up). */
void node_close_index(takt_node *n, uint16_t type, uint32_t index);
/* Copies a name into a fixed field; -EINVAL when it is not a valid name. */
int node_copy_name(char *dst, const char *src);
/* The same for a port's topic; service: a service's topic (service.c). */
int node_copy_topic(char *dst, const char *src, bool service);

/* ---- what service.c uses of publishers and subscribers ---------------- */

/* takt_pub_open / takt_sub_open, for a service's topics too. */
/* service: '@' topics are allowed; reply (or NULL): the response type a
 * service's request port declares (service.c). */
int pub_open(takt_node *node, const struct takt_pub_opts *opts, takt_pub **out, bool service, const char *reply);
int sub_open(takt_node *node, const struct takt_sub_opts *opts, takt_sub **out, bool service, const char *reply);
/* The chunk of a loan, or -EINVAL. */
int pub_loan_chunk(const takt_pub *pub, const void *payload);
/* The sequence number of the last sample published. */
uint64_t pub_seq(const takt_pub *pub);
/* Chunks the pool can have at most (indexes are below). */
uint32_t pub_chunks_max(const takt_pub *pub);
/* back(user, chunk, released) for each published chunk that comes back:
 * released by a subscriber, or reclaimed from a connection that left. */
void pub_set_back(takt_pub *pub, void (*back)(void *user, uint32_t chunk, bool released), void *user);
/* Looks at the connections and takes returns back, now (Q0 bracket):
 * how many connections; *depth the smallest queue of theirs. */
unsigned pub_poll(takt_pub *pub, uint32_t *depth);
/* takt_pub_publish (not held), but only if every connection, as it is
 * now, queues more than *outstanding samples (read after the look at the
 * connections: the back hook may lower it): else -ENOBUFS, or -ENOTCONN
 * with none, and the loan stays the caller's. */
int pub_publish_within(takt_pub *pub, void *payload, const unsigned *outstanding);
/* Connections as of the last publish or poll. */
unsigned pub_connections(const takt_pub *pub);
/* Subscribers the registry lists on the publisher's topic, connected to
 * it yet or not (a snapshot). */
unsigned pub_topic_subscribers(const takt_pub *p);
/* Loans the caller holds (and publishes held). */
unsigned pub_loans(const takt_pub *pub);
/* gone(user), from the node's agent (under ports_lock), each time one of
 * the publisher's connections leaves (PUSH_CONN_GONE): a service client
 * sleeping on its responses is woken to look at its requests (SK0,
 * service.c). Set under ports_lock. */
void pub_set_gone(takt_pub *pub, void (*gone)(void *user), void *user);
/* Agent, under ports_lock: a connection of publisher index left. */
void pub_agent_gone(takt_node *n, uint32_t index);
/* Wakes the subscriber if it is parked, counted as its agent's (P2, P4);
 * any thread. */
void sub_kick(takt_sub *sub);
/* One sleep of a subscriber armed by takt_sub_arm, at most timeout_ns (< 0:
 * forever): 1 woken with a sample waiting; 0 woken for something else or
 * the time is up (the caller looks again); -EINTR. */
int sub_sleep(takt_sub *sub, int64_t timeout_ns);

/* Whether a local mirror {conn, incarnation} still names connection ci:
 * the same slot and the same use of it (the broker reuses slots). */
static inline bool conn_same(const struct seg_view *v, uint32_t mirror_ci, uint32_t mirror_inc,
			     uint32_t ci)
{
	return mirror_ci == ci && ci < v->lim.connections &&
	       /* acquire: pairs with the broker's release of state after it
	        * bumped the incarnation. */
	       atomic_load_explicit(&v->conns[ci].state, memory_order_acquire) != SLOT_FREE &&
	       atomic_load_explicit(&v->conns[ci].incarnation, memory_order_relaxed) == mirror_inc;
}

/* Links and unlinks a port on the node's list of open ports. */
#define NODE_LIST_ADD(head, item)                                                                  \
	do {                                                                                       \
		(item)->next = (head);                                                             \
		(head) = (item);                                                                   \
	} while (0)
/* The same under the node's ports_lock (the agent walks the lists). */
#define NODE_LIST_ADD_LOCKED(n, head, item)                                                        \
	do {                                                                                       \
		pthread_mutex_lock(&(n)->ports_lock);                                              \
		NODE_LIST_ADD(head, item);                                                         \
		pthread_mutex_unlock(&(n)->ports_lock);                                            \
	} while (0)
#define NODE_LIST_DEL_LOCKED(n, head, type, item)                                                  \
	do {                                                                                       \
		pthread_mutex_lock(&(n)->ports_lock);                                              \
		NODE_LIST_DEL(head, type, item);                                                   \
		pthread_mutex_unlock(&(n)->ports_lock);                                            \
	} while (0)
#define NODE_LIST_DEL(head, type, item)                                                            \
	do {                                                                                       \
		for (type **pp_ = &(head); *pp_; pp_ = &(*pp_)->next)                              \
			if (*pp_ == (item)) {                                                      \
				*pp_ = (item)->next;                                               \
				break;                                                             \
			}                                                                          \
	} while (0)

#endif
