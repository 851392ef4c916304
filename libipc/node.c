/* node.c - attaching a process to a domain's broker.
 *
 * takt_node_open connects to the broker's socket, says HELLO, receives the
 * management and payload segments as descriptors, maps them and validates
 * their headers. Every later request goes over the same socket; when the
 * process exits (or crashes) the socket hangs up and the broker reclaims
 * everything the process held.
 */
#include "client.h"
#include "probes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char *program_invocation_short_name;

#define NODE_TIMEOUT_DEFAULT_MS 10000

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
 * now, its reply is dropped as stale by a later call). Under n->lock. */
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
	default: return;
	}
	proto_hdr_init(&req.hdr, close_type, sizeof(req), ++n->next_req);
	proto_send(n->sock, &req, sizeof(req), NULL, 0);
}

int node_call(takt_node *n, uint16_t type, void *req, size_t req_size, void *reply,
	      size_t reply_size, int *fds, unsigned max_fds, unsigned *ret_n_fds)
{
	int r;

	pthread_mutex_lock(&n->lock);
	proto_hdr_init(req, type, (uint32_t)req_size, ++n->next_req);
	r = proto_call(n->sock, req, req_size, reply, reply_size, fds, max_fds, ret_n_fds, n->timeout_ms,
		       node_undo_stale, n);
	pthread_mutex_unlock(&n->lock);
	return r;
}

void node_close_index(takt_node *n, uint16_t type, uint32_t index)
{
	struct msg_index req = {.index = index};
	struct proto_reply rep;

	node_call(n, type, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL);
}

static void node_unmap(takt_node *n)
{
	for (int k = 0; k < TAKT_MAX_CLASSES; k++)
		if (n->pool_base[k])
			munmap(n->pool_base[k], n->pool_size[k]);
	if (n->mgmt)
		munmap(n->mgmt, n->mgmt_size);
}

static int node_map(takt_node *n, const int *fds, unsigned n_fds, uint32_t n_classes)
{
	uint64_t tiled = 0;
	int r;

	if (n_fds != n_classes + 1 || n_classes == 0 || n_classes > TAKT_MAX_CLASSES)
		return -EPROTO;
	r = seg_map_fd(fds[0], PROT_READ | PROT_WRITE, &n->mgmt, &n->mgmt_size);
	if (r < 0)
		return r;
	r = seg_view_init(&n->v, n->mgmt, n->mgmt_size);
	if (r < 0)
		return r;
	if (n->v.lim.n_classes != n_classes)
		return -EPROTO;
	/* Q0: plain-store entry only if the broker fences for us and the kernel
	 * includes this process in those fences (registration is per process
	 * and idempotent). */
	n->q0_light = (n->v.lim.flags & TAKT_LIM_MEMBARRIER) &&
		      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0;
	for (uint32_t k = 0; k < n_classes; k++) {
		r = seg_map_fd(fds[k + 1], PROT_READ | PROT_WRITE, &n->pool_base[k], &n->pool_size[k]);
		if (r < 0)
			return r;
		r = seg_view_add_pool(&n->v, k, n->pool_base[k], n->pool_size[k]);
		if (r < 0)
			return r;
		tiled += n->v.pool[k].n;
	}
	return tiled == n->v.n_chunks ? 0 : -EPROTO;
}

static int node_hello(takt_node *n, const char *name)
{
	struct msg_hello req = {.abi_version = TAKT_ABI_VERSION};
	struct msg_hello_reply rep;
	int fds[TAKT_MAX_CLASSES + 1];
	unsigned n_fds = 0;
	int r;

	snprintf(req.name, sizeof(req.name), "%s", name ? name : program_invocation_short_name);
	r = node_call(n, MSG_HELLO, &req, sizeof(req), &rep, sizeof(rep), fds,
		      TAKT_MAX_CLASSES + 1, &n_fds);
	if (r == 0) {
		n->proc = rep.r.index;
		n->epoch = rep.epoch;
		r = node_map(n, fds, n_fds, rep.n_classes);
	}
	for (unsigned i = 0; i < n_fds; i++)
		close(fds[i]); /* the mappings keep the segments */
	return r;
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
	pthread_mutex_init(&n->lock, NULL);
	n->timeout_ms = NODE_TIMEOUT_DEFAULT_MS;
	if (opts && opts->timeout_ns)
		n->timeout_ms = opts->timeout_ns / 1000000 > INT32_MAX ? INT32_MAX
					: opts->timeout_ns < 1000000 ? 1 : (int)(opts->timeout_ns / 1000000);
	TAKT_PROBE1(node_open, domain);
	r = proto_connect(domain, &n->sock);
	if (r < 0)
		goto fail_free;
	r = node_hello(n, opts ? opts->name : NULL);
	if (r < 0)
		goto fail;
	*out = n;
	return 0;
fail:
	node_unmap(n);
	close(n->sock);
fail_free:
	pthread_mutex_destroy(&n->lock);
	free(n);
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
	close(node->sock); /* the broker reclaims the process entry on hang-up */
	node_unmap(node);
	pthread_mutex_destroy(&node->lock);
	free(node);
}

uint64_t takt_node_epoch(const takt_node *node)
{
	return node ? node->epoch : 0;
}
