/* service.c - request/response, built on publish/subscribe.
 *
 * A service S is two kinds of topics no user can name (proto.h):
 *   "@/S/q"        each client publishes its requests there from its own
 *                  pool; the server is its one subscriber (the broker
 *                  refuses a second: -EADDRINUSE), with one queue per
 *                  client, so each client's requests come in its order,
 *                  round-robin across clients;
 *   "@/S/r/<id>"   the server publishes the responses to client <id>
 *                  there from a pool of their own; the client is the one
 *                  subscriber the broker lets in (the owner of publisher
 *                  <id> on "@/S/q"), so a client maps, and can read, only
 *                  its own responses.
 * A client's id is its request publisher's id, a request's id the sample's
 * sequence number (per publisher, from 1, no gaps: nothing is dropped, see
 * below). A response carries the request id in a header before the
 * payload (struct svc_rsp).
 *
 * Flow: a client counts the requests it sent that have not come back
 * (its request chunks, which come back when the server releases them) and
 * sends no more than max_pending, nor more than the server queues for it:
 * so the server's queue (overflow: reject) never overflows and a send
 * either reaches it or fails before anything left. A client's response
 * queue is bounded (response_queue, overflow: reject): a respond to a full
 * one fails with -EAGAIN, nothing blocks.
 *
 * Deaths: the server's subscriber goes, the client's request connection
 * leaves, and every request still out on it comes back reclaimed, not
 * released (pub.c tells us which, pub_set_back): each is reported once by
 * takt_client_take as -ECONNRESET with its id. A new server of the name
 * subscribes to "@/S/q" and the clients' publishers connect to it as to
 * any subscriber. A client that dies takes its response subscriber with
 * it: the server's publisher for it loses its connection and gets every
 * chunk back; the server closes that publisher when it next finds it
 * without one (respond, or an idle take).
 */
#include "client.h"
#include "probes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The header of a response chunk. */
struct svc_rsp {
	uint64_t request_id;
	uint64_t reserved;
};

#define SVC_DEFAULT_PENDING 16
#define SVC_DEFAULT_RESPONSES 16

struct svc_client {
	uint64_t id;         /* 0: entry free */
	uint64_t last_req;   /* the newest request id taken from it */
	takt_pub *rsp;       /* its response publisher, NULL once gone */
	bool gone;           /* it left (or the broker refused its publisher): never opened again */
};

struct takt_server {
	takt_node *node;
	takt_sub *req;
	char svc[PROTO_SERVICE_MAX + 1];
	char rsp_type[TAKT_NAME_MAX];
	size_t max_response;
	unsigned n_clients;          /* entries in clients[], free ones included */
	struct svc_client *clients;  /* [limits] publishers_per_topic: clients of a service at most */
	uint64_t *gone;              /* ids of gone clients whose entries were reused (a ring as long) */
	unsigned gone_head;
};

struct takt_client {
	takt_node *node;
	takt_pub *req;
	takt_sub *rsp;
	uint64_t id;
	size_t max_request;
	unsigned max_pending, pending;
	uint32_t depth;       /* the server's queue for us, as of the last look (pub_poll) */
	unsigned idle;        /* takes in a row that found nothing */
	bool had_server;
	uint64_t *chunk_req;  /* per chunk of our pool: the request id it carries out, 0 */
	uint64_t *resets;     /* request ids to report -ECONNRESET for (a ring) */
	unsigned n_resets, reset_head, reset_cap;
};

static bool opts_ok(const struct takt_service_opts *o)
{
	return o && proto_service_name_ok(o->service) &&
	       (!o->request_type || proto_name_ok(o->request_type, TAKT_NAME_MAX)) &&
	       (!o->response_type || proto_name_ok(o->response_type, TAKT_NAME_MAX));
}

static void topic_q(char *dst, const char *svc)
{
	snprintf(dst, TAKT_NAME_MAX, "@/%s/q", svc);
}

static void topic_r(char *dst, const char *svc, uint64_t client)
{
	snprintf(dst, TAKT_NAME_MAX, "@/%s/r/%016llx", svc, (unsigned long long)client);
}

/* ---- the server ------------------------------------------------------------ */

int takt_server_open(takt_node *node, const struct takt_service_opts *opts, takt_server **out)
{
	char topic[TAKT_NAME_MAX];
	takt_server *s;
	int r;

	if (!node || !out || !opts_ok(opts) || opts->max_pending > node->v.lim.queue_depth_max)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->clients = calloc(node->v.lim.pubs_per_topic, sizeof(*s->clients));
	s->gone = calloc(node->v.lim.pubs_per_topic, sizeof(*s->gone));
	if (!s->clients || !s->gone) {
		free(s->clients);
		free(s->gone);
		free(s);
		return -ENOMEM;
	}
	s->node = node;
	snprintf(s->svc, sizeof(s->svc), "%s", opts->service);
	if (opts->response_type)
		snprintf(s->rsp_type, sizeof(s->rsp_type), "%s", opts->response_type);
	s->max_response = opts->max_response;
	topic_q(topic, opts->service);
	r = sub_open(node,
		     &(struct takt_sub_opts){.topic = topic, .type_name = opts->request_type,
					     .queue_depth = opts->max_pending ? opts->max_pending : node->v.lim.queue_depth_max,
					     .overflow = TAKT_OVERFLOW_REJECT},
		     &s->req, true, opts->response_type);
	if (r < 0) {
		free(s->clients);
		free(s->gone);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

void takt_server_close(takt_server *srv)
{
	if (!srv)
		return;
	takt_sub_close(srv->req);
	for (unsigned i = 0; i < srv->n_clients; i++)
		takt_pub_close(srv->clients[i].rsp);
	free(srv->clients);
	free(srv->gone);
	free(srv);
}

static struct svc_client *server_client(takt_server *srv, uint64_t id)
{
	for (unsigned i = 0; i < srv->n_clients; i++)
		if (srv->clients[i].id == id)
			return &srv->clients[i];
	return NULL;
}

/* No entry for client id: -ECONNRESET if it was a client of ours that
 * left and whose entry went to another (one of the last
 * publishers_per_topic such), else -EINVAL (never ours). */
static int server_unknown(const takt_server *srv, uint64_t id)
{
	for (unsigned i = 0; id && i < srv->node->v.lim.pubs_per_topic; i++)
		if (srv->gone[i] == id)
			return -ECONNRESET;
	return -EINVAL;
}

/* A client gone (its response subscriber left: a client has one for its
 * life, and its id is never reused): its response publisher goes (its
 * chunks came back when the connection left), once no loan of it is out;
 * the entry stays, so later responses to it fail with -ECONNRESET, until
 * a new client needs it. Requests it had queued are taken as any, and
 * cost the broker nothing more. */
static void server_drop(struct svc_client *c)
{
	c->gone = true;
	/* Not while the user holds loans of it: closing unmaps the pool they
	 * point into. Their respond says -ECONNRESET, a discard takes them
	 * back; the next sweep closes it. */
	if (pub_loans(c->rsp))
		return;
	takt_pub_close(c->rsp);
	c->rsp = NULL;
}

/* Idle: response publishers whose client left are closed. */
static void server_sweep(takt_server *srv)
{
	for (unsigned i = 0; i < srv->n_clients; i++) {
		struct svc_client *c = &srv->clients[i];
		uint32_t depth;

		if (c->id && c->rsp && pub_poll(c->rsp, &depth) == 0 && pub_topic_subscribers(c->rsp) == 0)
			server_drop(c); /* not merely a connection its client has not started yet */
	}
}

/* An entry for a client new to us: a free one, a new one, or that of a
 * client gone (after a sweep if need be: a topic has no more publishers
 * than there are entries, so one of them is gone). */
static struct svc_client *server_entry(takt_server *srv)
{
	for (unsigned i = 0; i < srv->n_clients; i++)
		if (!srv->clients[i].id)
			return &srv->clients[i];
	if (srv->n_clients < srv->node->v.lim.pubs_per_topic)
		return &srv->clients[srv->n_clients++];
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < srv->n_clients; i++)
			if (!srv->clients[i].rsp) {
				srv->gone[srv->gone_head] = srv->clients[i].id;
				srv->gone_head = (srv->gone_head + 1) % srv->node->v.lim.pubs_per_topic;
				return &srv->clients[i];
			}
		server_sweep(srv);
	}
	return NULL;
}

/* The client's response publisher: a broker call, once per client (and
 * again after one that failed for a passing cause), answered once the
 * client's subscriber is connected. A client gone already (its response
 * topic has no subscriber: a client has one for its life), or one the broker refuses for good (-EPROTOTYPE:
 * a process that subscribed with another type through the protocol; a
 * client declares its response type with its requests, so the library's
 * never does), is gone: the entry stays NULL (-ECONNRESET) and the broker
 * is not asked again, say for each request such a client had queued. */
static void server_open_rsp(takt_server *srv, struct svc_client *c)
{
	char topic[TAKT_NAME_MAX];
	int r;

	if (c->gone)
		return;
	topic_r(topic, srv->svc, c->id);
	r = pub_open(srv->node,
		     &(struct takt_pub_opts){.topic = topic, .type_name = srv->rsp_type[0] ? srv->rsp_type : NULL,
					     .max_payload = srv->max_response + sizeof(struct svc_rsp)},
		     &c->rsp, true, NULL);
	if (r < 0) {
		c->rsp = NULL;
		c->gone = r == -EPERM || r == -EPROTOTYPE || r == -EACCES;
	} else if (pub_topic_subscribers(c->rsp) == 0) {
		server_drop(c);
	}
}

int takt_server_take(takt_server *srv, const void **request, struct takt_request_info *info)
{
	struct takt_sample_info si;
	struct svc_client *c;
	int r;

	if (!srv || !request || !info)
		return -EINVAL;
	r = takt_sub_take(srv->req, request, &si);
	if (r == -EAGAIN)
		server_sweep(srv);
	if (r < 0)
		return r;
	*info = (struct takt_request_info){.client_id = si.publisher_id, .request_id = si.seq,
					   .send_ns = si.publish_ns, .size = si.size};
	TAKT_PROBE2(request_take, info->client_id, info->request_id);
	c = server_client(srv, si.publisher_id);
	if (!c && (c = server_entry(srv)))
		*c = (struct svc_client){.id = si.publisher_id};
	if (c) {
		if (si.seq > c->last_req)
			c->last_req = si.seq;
		if (!c->rsp)
			server_open_rsp(srv, c);
	}
	return 0;
}

void takt_server_release(takt_server *srv, const void *request)
{
	if (srv)
		takt_sub_release(srv->req, request);
}

int takt_server_loan(takt_server *srv, const struct takt_request_info *to, size_t size, void **payload)
{
	struct svc_client *c;
	void *p;
	int r;

	if (!srv || !to || !payload)
		return -EINVAL;
	if (size > srv->max_response)
		return -EMSGSIZE;
	c = server_client(srv, to->client_id);
	if (!c)
		return server_unknown(srv, to->client_id);
	if (!c->rsp)
		return -ECONNRESET;
	r = takt_pub_loan(c->rsp, size + sizeof(struct svc_rsp), &p);
	if (r < 0)
		return r;
	*payload = (char *)p + sizeof(struct svc_rsp);
	return 0;
}

int takt_server_respond(takt_server *srv, const struct takt_request_info *to, void *payload)
{
	struct svc_client *c;
	struct svc_rsp *h;
	int r;

	if (!srv || !to || !payload)
		return -EINVAL;
	c = server_client(srv, to->client_id);
	if (!c)
		return server_unknown(srv, to->client_id);
	if (!to->request_id || to->request_id > c->last_req)
		return -EINVAL; /* a request it never sent us */
	if (!c->rsp)
		return -ECONNRESET;
	h = (struct svc_rsp *)((char *)payload - sizeof(*h));
	if (pub_loan_chunk(c->rsp, h) < 0)
		return -EINVAL;
	h->request_id = to->request_id;
	h->reserved = 0;
	TAKT_PROBE2(respond, to->client_id, to->request_id);
	r = takt_pub_publish(c->rsp, h);
	if (r > 0)
		return 0;
	if (r < 0)
		return r;
	if (pub_connections(c->rsp) == 0 && pub_topic_subscribers(c->rsp) == 0) { /* the client went */
		server_drop(c);
		return -ECONNRESET;
	}
	return -EAGAIN; /* its queue is full (reject): dropped */
}

void takt_server_discard(takt_server *srv, void *payload)
{
	if (!srv || !payload)
		return;
	for (unsigned i = 0; i < srv->n_clients; i++)
		if (srv->clients[i].rsp) {
			void *h = (char *)payload - sizeof(struct svc_rsp);

			if (pub_loan_chunk(srv->clients[i].rsp, h) >= 0) {
				takt_pub_discard(srv->clients[i].rsp, h);
				return;
			}
		}
}

int takt_server_fd(const takt_server *srv)
{
	return srv ? takt_sub_fd(srv->req) : -EINVAL;
}

int takt_server_arm(takt_server *srv)
{
	return srv ? takt_sub_arm(srv->req) : -EINVAL;
}

int takt_server_wait(takt_server *srv, int64_t timeout_ns)
{
	return srv ? takt_sub_wait(srv->req, timeout_ns) : -EINVAL;
}

/* ---- the client ------------------------------------------------------------ */

/* pub.c: a request chunk came back (released by the server), or was
 * reclaimed from a connection that left (the server went: a reset). */
static void client_back(void *user, uint32_t chunk, bool released)
{
	takt_client *cli = user;
	uint64_t id;

	if (chunk >= pub_chunks_max(cli->req) || !(id = cli->chunk_req[chunk]))
		return;
	cli->chunk_req[chunk] = 0;
	cli->pending--;
	if (!released && cli->n_resets < cli->reset_cap) {
		cli->resets[(cli->reset_head + cli->n_resets) % cli->reset_cap] = id;
		cli->n_resets++;
	}
}

/* SK0: a request connection left (the server closed or died): our agent
 * wakes us if we sleep on our responses, so a wait or an armed fd sees the
 * resets. Pairs with takt_client_arm: park (P0, sub.c), then look at the
 * connections (seq_cst load of conn_gen, W1); the agent gets the push
 * after the broker's bump of conn_gen, fences and loads park (sub_kick,
 * P4): either our look sees the connection gone or the agent sees us
 * parked. Runs in the agent, under ports_lock. */
static void client_gone(void *user)
{
	takt_client *cli = user;

	sub_kick(cli->rsp);
}

int takt_client_open(takt_node *node, const struct takt_service_opts *opts, takt_client **out)
{
	unsigned responses;
	char topic[TAKT_NAME_MAX];
	takt_client *c;
	int r;

	if (!node || !out || !opts_ok(opts) || opts->max_pending > node->v.lim.queue_depth_max ||
	    opts->response_queue > node->v.lim.queue_depth_max)
		return -EINVAL;
	responses = opts->response_queue ? opts->response_queue : SVC_DEFAULT_RESPONSES;
	if (responses > node->v.lim.queue_depth_max)
		responses = node->v.lim.queue_depth_max;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->node = node;
	c->max_request = opts->max_request;
	c->max_pending = opts->max_pending ? opts->max_pending : SVC_DEFAULT_PENDING;
	if (c->max_pending > node->v.lim.queue_depth_max)
		c->max_pending = node->v.lim.queue_depth_max;
	topic_q(topic, opts->service);
	r = pub_open(node, &(struct takt_pub_opts){.topic = topic, .type_name = opts->request_type,
						   .max_payload = opts->max_request ? opts->max_request : 1},
		     &c->req, true, opts->response_type);
	if (r < 0) {
		free(c);
		return r;
	}
	c->id = takt_pub_id(c->req);
	c->reset_cap = pub_chunks_max(c->req);
	c->chunk_req = calloc(c->reset_cap, sizeof(*c->chunk_req));
	c->resets = calloc(c->reset_cap, sizeof(*c->resets));
	topic_r(topic, opts->service, c->id);
	r = !c->chunk_req || !c->resets ? -ENOMEM
		: sub_open(node,
			   &(struct takt_sub_opts){.topic = topic, .type_name = opts->response_type,
						   .queue_depth = responses, .overflow = TAKT_OVERFLOW_REJECT},
			   &c->rsp, true, NULL);
	if (r < 0) {
		takt_pub_close(c->req);
		free(c->chunk_req);
		free(c->resets);
		free(c);
		return r;
	}
	pub_set_back(c->req, client_back, c);
	pub_set_gone(c->req, client_gone, c);
	*out = c;
	return 0;
}

void takt_client_close(takt_client *cli)
{
	if (!cli)
		return;
	takt_pub_close(cli->req); /* first: the agent no longer calls client_gone (SK0) */
	takt_sub_close(cli->rsp);
	free(cli->chunk_req);
	free(cli->resets);
	free(cli);
}

int takt_client_loan(takt_client *cli, size_t size, void **payload)
{
	if (!cli || !payload)
		return -EINVAL;
	if (size > cli->max_request)
		return -EMSGSIZE;
	return takt_pub_loan(cli->req, size, payload);
}

int64_t takt_client_send(takt_client *cli, void *payload)
{
	uint32_t depth;
	unsigned n;
	int chunk, r;

	if (!cli || !payload)
		return -EINVAL;
	chunk = pub_loan_chunk(cli->req, payload);
	if (chunk < 0 || (uint32_t)chunk >= pub_chunks_max(cli->req))
		return -EINVAL;
	/* The last look says a server is there and has room: send. Else look
	 * again (the server, and what came back) before saying no. */
	if (pub_connections(cli->req) == 0 || cli->pending + cli->n_resets >= cli->max_pending ||
	    cli->pending >= cli->depth) {
		n = pub_poll(cli->req, &depth);
		cli->depth = depth;
		if (n == 0)
			return cli->had_server ? -ECONNRESET : -ENOTCONN;
		/* resets not yet taken count too: the reset ring never fills */
		if (cli->pending + cli->n_resets >= cli->max_pending || cli->pending >= depth)
			return -ENOBUFS; /* the loan stays ours */
	}
	/* Publish looks at the connections again: a server that went or was
	 * replaced (another queue) since our last look refuses it here, the
	 * loan still ours, no request id used up. */
	r = pub_publish_within(cli->req, payload, &cli->pending);
	if (r == -ENOTCONN)
		return cli->had_server ? -ECONNRESET : -ENOTCONN;
	if (r == -ENOBUFS)
		cli->depth = 0; /* look again next time */
	if (r < 0)
		return r;
	if (r == 0) /* its queue refused it: not a server of ours (reject, and we count) */
		return -ECONNRESET;
	TAKT_PROBE2(request, cli->id, pub_seq(cli->req)); /* sent: only now, a refused send is no request */
	cli->had_server = true;
	cli->chunk_req[chunk] = pub_seq(cli->req);
	cli->pending++;
	return (int64_t)pub_seq(cli->req);
}

void takt_client_discard(takt_client *cli, void *payload)
{
	if (cli)
		takt_pub_discard(cli->req, payload);
}

int takt_client_take(takt_client *cli, const void **response, struct takt_request_info *info)
{
	struct takt_sample_info si;
	const struct svc_rsp *h;
	const void *p;
	uint32_t depth;
	uint64_t id;
	unsigned dropped = 0;
	int r;

	if (!cli || !response || !info)
		return -EINVAL;
again:
	r = takt_sub_take(cli->rsp, &p, &si);
	if (r == -EAGAIN) {
		/* Nothing to take: what the server released, and (a server gone)
		 * what comes back reclaimed, a reset each; every 32nd empty take
		 * in a row looks (a spinning caller, polling), and the first.
		 * What the server released before it left counts as released,
		 * however late we look (pub_reclaim, G1R). */
		if ((cli->idle++ & 31) == 0) {
			pub_poll(cli->req, &depth);
			cli->depth = depth;
		}
		if (cli->n_resets) {
			*response = NULL;
			*info = (struct takt_request_info){.client_id = cli->id,
							   .request_id = cli->resets[cli->reset_head]};
			cli->reset_head = (cli->reset_head + 1) % cli->reset_cap;
			cli->n_resets--;
			return -ECONNRESET;
		}
	}
	if (r < 0)
		return r;
	cli->idle = 0;
	h = p;
	/* The server's memory, which it can still write: the id is read once,
	 * and only one we sent (from 1 up to the last) makes an answer. A
	 * sample without takt's header, or with another id, is dropped; a
	 * server that sends nothing else costs one take 64 of them at most. */
	id = 0;
	if (si.size >= sizeof(*h))
		memcpy(&id, &h->request_id, sizeof(id));
	if (id == 0 || id > pub_seq(cli->req)) {
		takt_sub_release(cli->rsp, p);
		if (++dropped < 64)
			goto again;
		return -EAGAIN;
	}
	*response = h + 1;
	*info = (struct takt_request_info){.client_id = cli->id, .request_id = id, .send_ns = si.publish_ns,
					   .size = si.size - (uint32_t)sizeof(*h)};
	TAKT_PROBE2(response_take, info->client_id, info->request_id);
	return 0;
}

void takt_client_release(takt_client *cli, const void *response)
{
	if (cli && response)
		takt_sub_release(cli->rsp, (const char *)response - sizeof(struct svc_rsp));
}

unsigned takt_client_pending(const takt_client *cli)
{
	return cli ? cli->pending : 0;
}

int takt_client_fd(const takt_client *cli)
{
	return cli ? takt_sub_fd(cli->rsp) : -EINVAL;
}

static int64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int takt_client_arm(takt_client *cli)
{
	uint32_t depth;
	int r;

	if (!cli)
		return -EINVAL;
	if (cli->n_resets)
		return 1;
	r = takt_sub_arm(cli->rsp);
	if (r < 0)
		return r;
	/* SK0: parked; now what came back (a server gone meanwhile), and
	 * what the server released */
	pub_poll(cli->req, &depth);
	cli->depth = depth;
	return r || cli->n_resets ? 1 : 0;
}

int takt_client_wait(takt_client *cli, int64_t timeout_ns)
{
	int64_t end;

	if (!cli)
		return -EINVAL;
	end = timeout_ns < 0 ? INT64_MAX : mono_ns() + timeout_ns;
	for (;;) {
		int64_t now;
		int r = takt_client_arm(cli);

		if (r != 0)
			return r < 0 ? r : 0; /* a response or a reset waits (stays armed: the next take disarms) */
		now = mono_ns();
		if (now >= end)
			return -ETIMEDOUT;
		/* woken by a response (it waits: stay armed, the next take
		 * disarms), or by our agent (SK0): look again */
		r = sub_sleep(cli->rsp, end == INT64_MAX ? -1 : end - now);
		if (r != 0)
			return r < 0 ? r : 0;
	}
}

int takt_client_call(takt_client *cli, const void *req, size_t req_size, void *resp, size_t resp_cap,
		     int64_t timeout_ns)
{
	int64_t id, end = timeout_ns < 0 ? INT64_MAX : mono_ns() + timeout_ns;
	void *p;
	int r;

	if (!cli || (!req && req_size) || (!resp && resp_cap))
		return -EINVAL;
	r = takt_client_loan(cli, req_size, &p);
	if (r < 0)
		return r;
	memcpy(p, req, req_size);
	id = takt_client_send(cli, p);
	if (id < 0) {
		takt_client_discard(cli, p);
		return (int)id;
	}
	for (;;) {
		struct takt_request_info info;
		const void *x;
		int64_t now;

		r = takt_client_take(cli, &x, &info);
		if (r == 0) {
			size_t n = info.size < resp_cap ? info.size : resp_cap;
			bool ours = info.request_id == (uint64_t)id;

			if (ours)
				memcpy(resp, x, n);
			takt_client_release(cli, x);
			if (ours)
				return (int)info.size;
			continue;
		}
		if (r == -ECONNRESET && info.request_id == (uint64_t)id)
			return r;
		if (r != -EAGAIN && r != -ECONNRESET)
			return r;
		if (r == -ECONNRESET)
			continue;
		now = mono_ns();
		if (now >= end)
			return -ETIMEDOUT;
		r = takt_client_wait(cli, end == INT64_MAX ? -1 : end - now);
		if (r < 0 && r != -ETIMEDOUT && r != -EINTR)
			return r;
	}
}
