/* takt/ipc.h - zero-copy publish/subscribe and events between processes.
 *
 * A process attaches to a domain's broker (takt_node_open), then opens
 * publishers, subscribers and events on named topics. Samples live in
 * shared-memory chunks: a publisher loans a chunk, writes the payload in
 * place and publishes it; subscribers take a pointer to the same bytes and
 * release it when done. Nothing on that path allocates, locks or copies.
 *
 * Conventions: handles are opaque; functions that can fail return 0 (or a
 * count) on success and a negative errno on failure; out-parameters are left
 * untouched on failure; nothing aborts or prints on bad input.
 */
#ifndef TAKT_IPC_H
#define TAKT_IPC_H

#include <stddef.h>
#include <stdint.h>

#include <takt/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct takt_node takt_node; /* this process's attachment to a domain's broker */
typedef struct takt_pub takt_pub;
typedef struct takt_sub takt_sub;

struct takt_node_opts {
	const char *domain; /* NULL: $TAKT_DOMAIN, else "default" */
	const char *name;   /* shown by introspection; NULL: program name */
	uint64_t timeout_ns; /* longest wait for the broker per control call (opens,
	                        closes; never the data path); 0: 10 s. After a
	                        timeout the call returns -ETIMEDOUT, and whatever
	                        the broker did for it late is undone. */
};

/* Connects to the broker of a domain and maps its segments. A node belongs
 * to the process that opened it: after fork(), the child opens its own
 * (the broker reclaims a process's resources when its socket hangs up, and
 * a forked copy of the socket keeps it open).
 * -ENOENT no broker runs for the domain; -EPROTO ABI or layout mismatch;
 * -EACCES no permission on the broker's socket; -ENOTCONN the broker hung up
 * (for example its client table is full); -EINVAL bad domain name; -EMFILE
 * process table full; -ETIMEDOUT the broker did not answer within timeout_ns;
 * -ENOMEM. */
TAKT_API int takt_node_open(const struct takt_node_opts *opts, takt_node **out);
/* Closes every port still open on the node, then detaches. NULL is fine. */
TAKT_API void takt_node_close(takt_node *node);
/* The broker epoch this node attached to (changes when the broker restarts). */
TAKT_API uint64_t takt_node_epoch(const takt_node *node);

/* Topics of the domain, for tools and gateways that find what to open. */
#define TAKT_TOPIC_NAME_MAX 64 /* bytes of a topic or type name, NUL included */
struct takt_topic_info {
	char name[TAKT_TOPIC_NAME_MAX];
	char type_name[TAKT_TOPIC_NAME_MAX]; /* "" when its ports declared none */
	unsigned publishers, subscribers;    /* ports open on it */
};
/* The topics open in the domain (a topic is open while a port is) whose
 * names match pattern, a glob as in the broker's [access] rules (`*`
 * within one path segment, `**` across; NULL: all), at most max of them
 * into out. Returns how many match, which may exceed max (call again with
 * room for them), or -EINVAL. Reads the registry the node maps, without
 * asking the broker: a snapshot, which may be stale when it returns. */
TAKT_API int takt_node_topics(takt_node *node, const char *pattern, struct takt_topic_info *out, size_t max);
/* Change notification for takt_node_topics: the domain's topic generation,
 * which the broker bumps after every change to a topic entry (opened,
 * closed, a port joined or left, its type declared). Read from the
 * registry the node maps: no syscall, no broker call. A changed value
 * means "list again"; compare takt_node_epoch too, since a restarted
 * broker starts its own count (at an arbitrary value). 0 for NULL. */
TAKT_API uint32_t takt_node_topics_gen(const takt_node *node);
/* Sleeps until the topic generation differs from gen (a shared futex on
 * the node's read-only mapping of the registry, woken by the broker), for
 * at most timeout_ns (< 0: no limit). 0: it differs (at once when it
 * differs already), or a restarted broker took the node back meanwhile
 * (takt_node_epoch changed; list again); -ETIMEDOUT; -EINTR a signal;
 * -EINVAL node is NULL. */
TAKT_API int takt_node_topics_wait(takt_node *node, uint32_t gen, int64_t timeout_ns);

enum takt_overflow {
	TAKT_OVERFLOW_DROP_OLDEST = 0, /* default */
	TAKT_OVERFLOW_BLOCK,           /* publisher waits for room (bounded) */
	TAKT_OVERFLOW_REJECT,          /* newest sample is not delivered */
};

struct takt_pub_opts {
	const char *topic;         /* 1..63 chars of [A-Za-z0-9_./-] */
	const char *type_name;     /* optional; a subscriber naming another type is refused (-EPROTOTYPE) */
	size_t max_payload;        /* bytes per sample at most: the publisher's own pool has chunks
	                              of exactly this payload (-EMSGSIZE above [memory] max_payload) */
	unsigned history;          /* last N samples handed to late-joining subscribers */
	uint64_t block_timeout_ns; /* TAKT_OVERFLOW_BLOCK subscribers: longest wait per
	                              publish; 0: 100 ms. After it the sample is counted
	                              as dropped for that subscriber. */
};

/* -EINVAL bad topic or options; -EACCES the broker's [access] rules do not
 * let this user publish on the topic; -EDQUOT this process holds [limits]
 * ports_per_process ports already; -EPROTOTYPE topic has another type;
 * -EMSGSIZE max_payload above the broker's [memory] max_payload; -ENOMEM its
 * pool cannot be reserved ([memory] limits); -ENOSPC port or topic table
 * full, or the topic has its maximum of publishers; -ENOTCONN broker gone;
 * -ETIMEDOUT no answer within the node's timeout_ns (nothing stays open). */
TAKT_API int takt_pub_open(takt_node *node, const struct takt_pub_opts *opts, takt_pub **out);
/* Returns outstanding loans and history to the pools. NULL is fine. */
TAKT_API void takt_pub_close(takt_pub *pub);
/* -EMSGSIZE size > max_payload; -ENOBUFS pool exhausted or loan limit reached. */
TAKT_API int takt_pub_loan(takt_pub *pub, size_t size, void **payload);
/* >= 0: subscribers reached; -EINVAL payload is not an outstanding loan. */
TAKT_API int takt_pub_publish(takt_pub *pub, void *payload);
/* Gives back an unpublished loan. Ignores pointers that are not loans. */
TAKT_API void takt_pub_discard(takt_pub *pub, void *payload);
/* Copy + publish. Errors of loan and publish. */
TAKT_API int takt_pub_send(takt_pub *pub, const void *data, size_t size);
/* Holding (hold 1): takt_pub_publish keeps each sample back, in publish
 * order, and returns 0; takt_pub_flush publishes them. Held samples count
 * against the loan limit ([limits] loans_max): a loan beyond it returns
 * -ENOBUFS. The executor's logical execution time uses it (exec.h,
 * takt_let_output). hold 0 stops holding and flushes (stamped now):
 * returns what takt_pub_flush returns. -EINVAL for NULL. */
TAKT_API int takt_pub_hold(takt_pub *pub, int hold);
/* Publishes every held sample, oldest first: the number published (0 when
 * none was held). publish_ns 0 stamps them now; otherwise with publish_ns
 * (their logical publish time, say the end of a period), or with the
 * nearest time that keeps the stamp contract's order: never later than
 * now, never before this publisher's previous stamp. A flush never waits:
 * a TAKT_OVERFLOW_BLOCK subscriber whose queue is full misses the sample
 * (counted in its takt_sub_dropped), as after a block timeout. */
TAKT_API int takt_pub_flush(takt_pub *pub, uint64_t publish_ns);
/* This publisher's id as seen in takt_sample_info.publisher_id: unique in
 * the domain for its whole life, never reused (also not by a restarted
 * broker); 0 for NULL. */
TAKT_API uint64_t takt_pub_id(const takt_pub *pub);
/* Tags every sample of this publisher with origin, which its subscribers
 * see in takt_sample_info.origin from their next take on (0, the default:
 * published here). A gateway tags what it imports from elsewhere so that
 * it, and any other gateway, never exports it again; other tools may use
 * it alike (takt-gateway, docs/gateway.md). Stored in the publisher's own
 * pool segment, read by subscribers from their read-only mapping of it:
 * no call to the broker, no cost to publish. 0, or -EINVAL for NULL. */
TAKT_API int takt_pub_set_origin(takt_pub *pub, uint32_t origin);

struct takt_sub_opts {
	const char *topic;
	const char *type_name;
	unsigned queue_depth;        /* samples queued per publisher at most, exactly
	                                (1 keeps only the newest under drop-oldest);
	                                0: 16; at most [limits] queue_depth_max */
	enum takt_overflow overflow;
	unsigned history;            /* how many of the publisher's history samples to receive */
};

struct takt_sample_info {
	uint64_t seq;        /* per publisher, starts at 1, no gaps unless dropped */
	/* CLOCK_MONOTONIC at publish: never later than the publish, never
	 * before the publisher's previous sample, at most 1 us early (read
	 * through the TSC where the kernel keeps the clock on it; see
	 * docs/architecture.md, "The publish clock"); a sample held and
	 * flushed with a publish time carries that time instead
	 * (takt_pub_flush). */
	uint64_t publish_ns;
	uint64_t publisher_id; /* takt_pub_id of the sender: never reused in the domain */
	uint32_t size;
	/* The publisher's takt_pub_set_origin tag at the take (0: published
	 * in this domain; a gateway's tag: imported by it). Fits the struct's
	 * tail padding: its size is the same as before the field. */
	uint32_t origin;
};

/* Returns once every publisher on the topic delivers to it and their
 * history (as much as asked, at most queue_depth) is waiting in its queue
 * (or after the broker's [socket] confirm_timeout_ms if a publisher's
 * process does not answer). -EINVAL bad topic or options; -EACCES the
 * broker's [access] rules do not let this user subscribe; -EDQUOT this
 * process holds [limits] ports_per_process ports already; -EPROTOTYPE
 * topic has another type; -ENOSPC port, topic or connection table full;
 * -ENOMEM a publisher's pool cannot grow by queue_depth + held_max chunks
 * ([memory] limits); -ENOTCONN broker gone; -ETIMEDOUT no answer within
 * the node's timeout_ns (nothing stays open). */
TAKT_API int takt_sub_open(takt_node *node, const struct takt_sub_opts *opts, takt_sub **out);
/* Releases every sample still taken. NULL is fine. */
TAKT_API void takt_sub_close(takt_sub *sub);
/* 0: a sample; -EAGAIN: none waiting; -ENOBUFS: the hold limit ([limits]
 * held_max of the broker config) is reached, release a sample first. Takes from each
 * publisher in its publish order, round-robin across publishers. */
TAKT_API int takt_sub_take(takt_sub *sub, const void **payload, struct takt_sample_info *info);
/* Takes see only samples published (takt_sample_info.publish_ns) at or
 * before cutoff_ns: a newer one stays queued, in order, and is taken once
 * the cutoff passes it (per-publisher order holds). 0 removes the cutoff.
 * Arm and wait still report newer samples as waiting. A sample whose take
 * began under an earlier cutoff and waits for a drop-oldest publisher's
 * verdict (at most one per publisher, rare) is delivered by the next take
 * whatever the cutoff is then. The executor's logical execution time
 * sets it at each period start (exec.h, takt_let_input). -EINVAL for NULL. */
TAKT_API int takt_sub_set_cutoff(takt_sub *sub, uint64_t cutoff_ns);
/* Ignores pointers that are not taken samples of this subscriber. */
TAKT_API void takt_sub_release(takt_sub *sub, const void *payload);
/* eventfd for your own epoll/poll. Publishers write it only to a subscriber
 * that armed itself (parked), so a busy subscriber costs them no syscall:
 * call takt_sub_arm before each sleep on the fd, and take until -EAGAIN
 * after each wake-up. */
TAKT_API int takt_sub_fd(const takt_sub *sub);
/* The same eventfd, for a caller that watches it edge-triggered
 * (EPOLLET): every publisher's write is one edge, so from this call on
 * takt_sub_arm and takt_sub_take never read(2) it, one syscall less per
 * wake-up (a level-triggered watcher of it would see it readable for
 * good). Arm before each sleep and take until -EAGAIN after each
 * wake-up, as with takt_sub_fd. -EINVAL for NULL. */
TAKT_API int takt_sub_fd_edge(takt_sub *sub);
/* 0: armed, the fd becomes readable when a sample arrives; 1: samples are
 * waiting already (take them instead of sleeping). -EINVAL. */
TAKT_API int takt_sub_arm(takt_sub *sub);
/* 0 ready, -ETIMEDOUT; < 0 timeout = forever; -EINTR on a signal. */
TAKT_API int takt_sub_wait(takt_sub *sub, int64_t timeout_ns);
/* Samples lost to overflow so far (dropped oldest, rejected, block timeouts).
 * Like take, from the thread that uses the handle. */
TAKT_API uint64_t takt_sub_dropped(const takt_sub *sub);

/* Events: a named wake-up carrying a 64-bit id (iceoryx2's notifier and
 * listener). A handle notifies; a handle that takes, or asks for its fd,
 * listens: from then on it gets every id notified on the name, by any
 * process, each notifier's in its order (64 ids per notifying process may
 * wait; at most 32 listeners per name). Notify never blocks. Like the
 * other handles, one thread at a time. */
typedef struct takt_event takt_event;
/* -EINVAL bad name; -ENOSPC event table full; -ENOTCONN broker gone;
 * -ETIMEDOUT no answer within the node's timeout_ns (nothing stays open). */
TAKT_API int takt_event_open(takt_node *node, const char *name, takt_event **out);
/* 0, or -EOVERFLOW when a listener's queue was full for this process's
 * ids (that listener loses this id; it is still woken); -ENOTCONN once the
 * broker is gone; -EACCES when the broker's [access] rules do not let this
 * process notify on the name. */
TAKT_API int takt_event_notify(takt_event *ev, uint64_t id);
/* The eventfd that becomes readable when ids wait for this handle (it
 * starts listening); -ENOSPC when the name has 32 listeners; -EACCES when
 * [access] does not let this process listen on it. */
TAKT_API int takt_event_fd(const takt_event *ev);
/* 0 and *id, or -EAGAIN when none (the first call starts listening); the
 * errors of takt_event_fd. */
TAKT_API int takt_event_take(takt_event *ev, uint64_t *id);
TAKT_API void takt_event_close(takt_event *ev);

/* Request/response: a client loans a request in shared memory and sends it
 * to the one server of a service; the server takes it without a copy,
 * loans a response and sends it to that client alone, once, several times
 * (a stream) or not at all. Built on publish/subscribe: each client
 * publishes its requests from its own pool to the server's one queue per
 * client, and the server answers each client from a pool of its own that
 * only that client maps (docs/architecture.md, "Services"). Like the other
 * handles, one thread at a time. */
typedef struct takt_server takt_server;
typedef struct takt_client takt_client;

struct takt_service_opts {
	const char *service;         /* 1..40 chars of [A-Za-z0-9_./-] */
	/* Checked like a topic's type_name, both at open: the first server or
	 * client that declares one names it for the service, an open that
	 * declares another is refused (-EPROTOTYPE); none fits any. */
	const char *request_type;    /* optional */
	const char *response_type;   /* optional */
	size_t max_request;          /* bytes of a request at most (the client's pool) */
	size_t max_response;         /* bytes of a response at most (the server's pools) */
	unsigned max_pending;        /* a client: requests sent and not released by the
	                                server yet; a server: requests it queues per client.
	                                0: 16; at most [limits] queue_depth_max */
	unsigned response_queue;     /* a client: responses queued for it at most; 0: 16 */
};

struct takt_request_info {
	uint64_t client_id;          /* unique in the domain, never reused */
	uint64_t request_id;         /* per client, from 1, in send order */
	uint64_t send_ns;            /* CLOCK_MONOTONIC at send (a request) or respond (a response) */
	uint32_t size;
};

/* -EINVAL bad name or options; -EADDRINUSE the service has a server;
 * -EPROTOTYPE its clients declared other types; -EACCES [access] serve;
 * and the errors of takt_sub_open. */
TAKT_API int takt_server_open(takt_node *node, const struct takt_service_opts *opts, takt_server **out);
/* Closes the server: its clients' later sends fail with -ECONNRESET, and
 * their takes report -ECONNRESET once per request it had not released.
 * NULL is fine. */
TAKT_API void takt_server_close(takt_server *srv);
/* 0 and a request (info: who sent it), -EAGAIN none waiting, -ENOBUFS
 * [limits] held_max requests taken and not released. Each client's
 * requests in its order, round-robin across clients. The first request
 * of a client new to the server opens that client's response pool (one
 * call to the broker, once per client). */
TAKT_API int takt_server_take(takt_server *srv, const void **request, struct takt_request_info *info);
/* The request goes back to its client (counted out of its max_pending). */
TAKT_API void takt_server_release(takt_server *srv, const void *request);
/* A response of size bytes to the request to (a request's info, taken or
 * released). -EMSGSIZE above max_response; -ENOBUFS the pool of that
 * client is out of chunks; -ECONNRESET the client is gone (also once its
 * entry went to another client: the last [limits] publishers_per_topic
 * such are remembered); -EINVAL to names no client of this server. */
TAKT_API int takt_server_loan(takt_server *srv, const struct takt_request_info *to, size_t size, void **payload);
/* Sends a loaned response to the client and request of to: 0; -EAGAIN the
 * client's response queue is full (or its agent has not started the
 * connection yet: a client slow to start), -ECONNRESET the client is gone (the
 * response is dropped either way and its chunk comes back); -EINVAL
 * payload is not a loan of this server for that client, or a request id
 * that client never sent. May be called several times per request. */
TAKT_API int takt_server_respond(takt_server *srv, const struct takt_request_info *to, void *payload);
/* Gives a loan back unsent. */
TAKT_API void takt_server_discard(takt_server *srv, void *payload);
/* The eventfd of the request queue, as takt_sub_fd; arm with takt_server_arm. */
TAKT_API int takt_server_fd(const takt_server *srv);
TAKT_API int takt_server_arm(takt_server *srv);
/* 0 requests waiting, -ETIMEDOUT, -EINTR; < 0 timeout = forever. */
TAKT_API int takt_server_wait(takt_server *srv, int64_t timeout_ns);

/* -EINVAL bad name or options; -EPROTOTYPE types differ from the
 * server's or other clients'; -EACCES [access] call; -ENOSPC the service
 * has [limits] publishers_per_topic clients already; and the errors of
 * takt_pub_open. A client may open before its server does. */
TAKT_API int takt_client_open(takt_node *node, const struct takt_service_opts *opts, takt_client **out);
/* Responses still taken are released. NULL is fine. */
TAKT_API void takt_client_close(takt_client *cli);
/* -EMSGSIZE above max_request; -ENOBUFS no chunk free (max_pending loans
 * and requests out). */
TAKT_API int takt_client_loan(takt_client *cli, size_t size, void **payload);
/* Sends a loaned request: its request id (> 0); -ENOTCONN the service has
 * no server, -ECONNRESET its server went away since the last send (the
 * next server of the name gets later ones), -ENOBUFS max_pending requests
 * are out (resets not taken yet count too: take them) or the server's
 * queue for us is full: the loan stays ours (send it again, or discard
 * it). -EINVAL not a loan. */
TAKT_API int64_t takt_client_send(takt_client *cli, void *payload);
TAKT_API void takt_client_discard(takt_client *cli, void *payload);
/* 0 and a response (info->request_id: the request it answers; a sample
 * that names no request we sent, or lacks takt's header, is dropped);
 * -EAGAIN none waiting; -ECONNRESET once for each request the server did
 * not release before it went away (info->request_id names it, *response
 * is NULL); -ENOBUFS held_max responses taken and not released. */
TAKT_API int takt_client_take(takt_client *cli, const void **response, struct takt_request_info *info);
TAKT_API void takt_client_release(takt_client *cli, const void *response);
/* Requests sent and not released by the server yet. */
TAKT_API unsigned takt_client_pending(const takt_client *cli);
TAKT_API int takt_client_fd(const takt_client *cli);
TAKT_API int takt_client_arm(takt_client *cli);
/* 0 a response (or a reset) waiting, -ETIMEDOUT, -EINTR; < 0: forever. */
TAKT_API int takt_client_wait(takt_client *cli, int64_t timeout_ns);
/* Copies req into a request, sends it and waits for its first response,
 * which it copies into resp (at most resp_cap bytes): the response's size;
 * -ETIMEDOUT (the request stays sent: a late response is dropped), and the
 * errors of loan, send and take. Responses to other requests that arrive
 * meanwhile are dropped. */
TAKT_API int takt_client_call(takt_client *cli, const void *req, size_t req_size, void *resp, size_t resp_cap,
			      int64_t timeout_ns);

#ifdef __cplusplus
}
#endif
#endif
