/* client.h - the process-local side of a node and its ports. */
#ifndef TAKT_CLIENT_H
#define TAKT_CLIENT_H

#include "proto.h"
#include "ring.h"
#include "segment.h"

#include <pthread.h>
#include <stdbool.h>
#include <takt/ipc.h>

struct takt_node {
	int sock;
	pthread_mutex_t lock; /* serialises control requests, never the data path */
	uint32_t next_req;
	int timeout_ms;        /* bound of each control call */
	uint32_t proc;
	uint64_t epoch;
	struct seg_view v;
	void *mgmt;
	size_t mgmt_size;
	void *pool_base[TAKT_MAX_CLASSES];
	size_t pool_size[TAKT_MAX_CLASSES];
	struct takt_pub *pubs; /* open ports, closed by takt_node_close */
	struct takt_sub *subs;
	struct takt_event *events;
	bool q0_light;         /* Q0 by plain stores: see q0_enter */
};

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

/* One request/reply with the broker; fds as in proto_call. */
int node_call(takt_node *n, uint16_t type, void *req, size_t req_size, void *reply,
	      size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds);
/* Sends a close request for a port; errors are ignored (the broker also
 * reclaims on hang-up). */
void node_close_index(takt_node *n, uint16_t type, uint32_t index);
/* Copies a name into a fixed field; -EINVAL when it is not a valid name. */
int node_copy_name(char *dst, const char *src);

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
#define NODE_LIST_DEL(head, type, item)                                                            \
	do {                                                                                       \
		for (type **pp_ = &(head); *pp_; pp_ = &(*pp_)->next)                              \
			if (*pp_ == (item)) {                                                      \
				*pp_ = (item)->next;                                               \
				break;                                                             \
			}                                                                          \
	} while (0)

#endif
