/* test_service.c - request/response between real processes: every
 * request answered once, to the right client, in its order; streams;
 * servers and clients that die; what the broker refuses.
 */
#include "harness.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 60000
#define N_CLIENTS 4
#define N_REQ 10000
#define SEC 1000000000LL

static struct h_broker broker;

struct shared {
	_Atomic int stop, ready, served;
	_Atomic uint64_t answered[N_CLIENTS + 1];
	_Atomic uint64_t bad;
	char first_bad[256];
};
static struct shared *sh;

static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void bad(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&sh->bad, 1) == 0) {
		va_start(ap, fmt);
		vsnprintf(sh->first_bad, sizeof(sh->first_bad), fmt, ap);
		va_end(ap);
	}
}

static int setup(void **state)
{
	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return sh == MAP_FAILED ? -1 : h_broker_start(&broker, "service", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(sh, sizeof(*sh));
	return 0;
}

static void reset(void)
{
	memset(sh, 0, sizeof(*sh));
}

struct msg {
	uint32_t client, n;   /* who sent it, its number there */
	uint32_t part, parts; /* responses: which of how many */
};

/* ---- a server that answers each request (parts of them), until stop ---- */

struct srv_arg {
	const char *service;
	unsigned parts;   /* responses per request */
	unsigned stall;   /* take this many requests, then stop taking (a server killed with requests out) */
	unsigned cut;     /* stop after this many responses of the first request (killed mid-stream) */
};

static int server_child(void *a)
{
	const struct srv_arg *sa = a;
	takt_node *n = h_node(broker.domain, "server");
	takt_server *s;
	uint64_t taken = 0;

	H_CHECK(takt_server_open(n, &(struct takt_service_opts){.service = sa->service, .request_type = "t.Req",
								.response_type = "t.Rsp", .max_response = sizeof(struct msg)},
				 &s) == 0);
	atomic_store(&sh->ready, 1);
	while (!atomic_load(&sh->stop)) {
		struct takt_request_info info;
		const struct msg *q;
		int r = takt_server_take(s, (const void **)&q, &info);

		if (r == -EAGAIN) {
			takt_server_wait(s, SEC / 10);
			continue;
		}
		H_CHECK(r == 0);
		if (info.size != sizeof(*q))
			bad("request of %u bytes", info.size);
		for (unsigned p = 0; p < sa->parts; p++) {
			struct msg *x;

			while ((r = takt_server_loan(s, &info, sizeof(*x), (void **)&x)) == -ENOBUFS)
				usleep(100);
			if (r < 0)
				break; /* the client went */
			*x = (struct msg){.client = q->client, .n = q->n, .part = p, .parts = sa->parts};
			while ((r = takt_server_respond(s, &info, x)) == -EAGAIN) {
				usleep(100); /* its queue is full: the response was dropped, send another */
				if (takt_server_loan(s, &info, sizeof(*x), (void **)&x) < 0)
					break;
				*x = (struct msg){.client = q->client, .n = q->n, .part = p, .parts = sa->parts};
			}
			if (r == -ECONNRESET)
				break;
			if (sa->cut && p + 1 == sa->cut) {
				atomic_store(&sh->served, 1);
				pause(); /* killed here, mid-stream */
			}
		}
		takt_server_release(s, q);
		if (++taken == sa->stall) {
			atomic_store(&sh->served, 1);
			pause(); /* killed here, with requests out */
		}
	}
	takt_server_close(s);
	takt_node_close(n);
	return 0;
}

static pid_t server_start(struct srv_arg *sa)
{
	pid_t pid;

	atomic_store(&sh->ready, 0);
	pid = h_spawn(server_child, sa);
	for (int i = 0; i < 1000 && !atomic_load(&sh->ready); i++)
		usleep(10000);
	assert_int_equal(atomic_load(&sh->ready), 1);
	return pid;
}

/* ---- 4 clients x 10k requests --------------------------------------------- */

static int client_child(void *a)
{
	uint32_t me = (uint32_t)(uintptr_t)a;
	char name[32];
	takt_node *n;
	takt_client *c;
	uint32_t sent = 0, got = 0;
	uint64_t want_id = 1;

	snprintf(name, sizeof(name), "client-%u", me);
	n = h_node(broker.domain, name);
	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "calc", .request_type = "t.Req",
								.response_type = "t.Rsp", .max_request = sizeof(struct msg),
								.max_pending = 8},
				 &c) == 0);
	while (got < N_REQ) {
		struct takt_request_info info;
		const struct msg *x;
		int r;

		while (sent < N_REQ) { /* keep up to max_pending out */
			struct msg *q;
			int64_t id;

			if (takt_client_loan(c, sizeof(*q), (void **)&q) < 0)
				break;
			*q = (struct msg){.client = me, .n = sent};
			id = takt_client_send(c, q);
			if (id == -ENOBUFS || id == -ENOTCONN) {
				takt_client_discard(c, q);
				break;
			}
			H_CHECK(id == (int64_t)sent + 1); /* request ids: 1, 2, ... in send order */
			sent++;
		}
		r = takt_client_take(c, (const void **)&x, &info);
		if (r == -EAGAIN) {
			H_CHECK(takt_client_wait(c, 20 * SEC) == 0 || sent == 0);
			continue;
		}
		H_CHECK(r == 0);
		if (info.request_id != want_id || x->client != me || x->n != want_id - 1 || info.size != sizeof(*x) ||
		    info.client_id == 0)
			bad("client %u: response to %llu (client %u, n %u, %u bytes), want %llu", me,
			    (unsigned long long)info.request_id, x->client, x->n, info.size,
			    (unsigned long long)want_id);
		want_id++;
		got++;
		takt_client_release(c, x);
	}
	atomic_store(&sh->answered[me], got);
	H_CHECK(takt_client_pending(c) <= 8);
	takt_client_close(c);
	takt_node_close(n);
	return 0;
}

static void test_service_four_clients_ten_thousand_each(void **state)
{
	struct srv_arg sa = {.service = "calc", .parts = 1};
	pid_t srv, cl[N_CLIENTS];

	(void)state;
	reset();
	srv = server_start(&sa);
	for (uintptr_t i = 0; i < N_CLIENTS; i++)
		cl[i] = h_spawn(client_child, (void *)(i + 1));
	for (int i = 0; i < N_CLIENTS; i++)
		assert_int_equal(h_wait(cl[i], WAIT_MS), 0);
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	if (atomic_load(&sh->bad))
		fail_msg("%llu bad: %s", (unsigned long long)atomic_load(&sh->bad), sh->first_bad);
	for (int i = 1; i <= N_CLIENTS; i++)
		assert_int_equal(atomic_load(&sh->answered[i]), N_REQ);
}

/* ---- a stream: 100 responses to one request, in order -------------------- */

static void test_service_stream_of_responses(void **state)
{
	struct srv_arg sa = {.service = "stream", .parts = 100};
	takt_node *n;
	takt_client *c;
	struct msg *q;
	int64_t id;
	pid_t srv;

	(void)state;
	reset();
	srv = server_start(&sa);
	n = h_node(broker.domain, "streamer");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "stream", .max_request = sizeof(*q),
									 .response_queue = 128},
					  &c), 0);
	assert_int_equal(takt_client_loan(c, sizeof(*q), (void **)&q), 0);
	*q = (struct msg){.client = 9, .n = 0};
	id = takt_client_send(c, q);
	assert_int_equal(id, 1);
	for (unsigned p = 0; p < 100;) {
		struct takt_request_info info;
		const struct msg *x;
		int r = takt_client_take(c, (const void **)&x, &info);

		if (r == -EAGAIN) {
			assert_int_equal(takt_client_wait(c, 20 * SEC), 0);
			continue;
		}
		assert_int_equal(r, 0);
		assert_int_equal(info.request_id, 1);
		assert_int_equal(x->part, p);
		assert_int_equal(x->parts, 100);
		takt_client_release(c, x);
		p++;
	}
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	takt_client_close(c);
	takt_node_close(n);
}

/* ---- the server dies in the middle of a stream ----------------------------- */

static void test_service_server_killed_mid_stream(void **state)
{
	struct srv_arg sa = {.service = "cut", .parts = 100, .cut = 40};
	unsigned parts = 0, resets = 0;
	takt_node *n;
	takt_client *c;
	struct msg *q;
	pid_t srv;

	(void)state;
	reset();
	srv = server_start(&sa);
	n = h_node(broker.domain, "cut-client");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "cut", .max_request = sizeof(*q),
									 .response_queue = 128},
					  &c), 0);
	assert_int_equal(takt_client_loan(c, sizeof(*q), (void **)&q), 0);
	*q = (struct msg){.client = 1};
	assert_int_equal(takt_client_send(c, q), 1);
	for (int i = 0; i < 1000 && !atomic_load(&sh->served); i++)
		usleep(10000);
	assert_int_equal(atomic_load(&sh->served), 1);
	assert_int_equal(kill(srv, SIGKILL), 0);
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	/* the 40 parts sent, in order, then the reset of the request: nothing hangs */
	for (int spins = 0; resets == 0 && spins < 400; spins++) {
		struct takt_request_info info;
		const struct msg *x;
		int r = takt_client_take(c, (const void **)&x, &info);

		if (r == 0) {
			assert_int_equal(x->part, parts++);
			takt_client_release(c, x);
		} else if (r == -ECONNRESET) {
			assert_int_equal(info.request_id, 1);
			resets++;
		} else {
			takt_client_wait(c, SEC / 20);
		}
	}
	assert_int_equal(parts, 40);
	assert_int_equal(resets, 1);
	assert_int_equal(takt_client_pending(c), 0);
	assert_int_equal(takt_client_take(c, &(const void *){NULL}, &(struct takt_request_info){0}), -EAGAIN);
	takt_client_close(c);
	takt_node_close(n);
	/* the memory of both is back: no pool holds a chunk out */
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* ---- the server dies with requests out; the next one is reached ----------- */

static void test_service_server_killed_then_another(void **state)
{
	struct srv_arg sa = {.service = "fragile", .parts = 1, .stall = 3};
	unsigned resets = 0, answered = 0;
	takt_node *n;
	takt_client *c;
	pid_t srv;
	char out[64];

	(void)state;
	reset();
	srv = server_start(&sa);
	n = h_node(broker.domain, "survivor");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "fragile",
									 .request_type = "t.Req", .response_type = "t.Rsp",
									 .max_request = sizeof(struct msg), .max_pending = 8},
					  &c), 0);
	for (uint32_t i = 0; i < 6; i++) {
		struct msg *q;

		assert_int_equal(takt_client_loan(c, sizeof(*q), (void **)&q), 0);
		*q = (struct msg){.client = 1, .n = i};
		assert_int_equal(takt_client_send(c, q), (int64_t)i + 1);
	}
	for (int i = 0; i < 1000 && !atomic_load(&sh->served); i++)
		usleep(10000);
	assert_int_equal(atomic_load(&sh->served), 1); /* 3 answered and released; 3 out */
	for (int i = 0; i < 500 && takt_client_pending(c) != 3; i++) { /* we saw the releases */
		takt_client_wait(c, SEC / 100); /* (it looks at the returns) */
		usleep(10000);
	}
	assert_int_equal(takt_client_pending(c), 3);
	assert_int_equal(kill(srv, SIGKILL), 0);
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	/* 3 responses, then a reset for each of 4, 5, 6: once each, nothing hangs */
	for (int spins = 0; answered + resets < 6 && spins < 400; spins++) {
		struct takt_request_info info;
		const struct msg *x;
		int r = takt_client_take(c, (const void **)&x, &info);

		if (r == 0) {
			assert_int_equal(info.request_id, ++answered);
			takt_client_release(c, x);
		} else if (r == -ECONNRESET) {
			assert_null(x);
			assert_int_equal(info.request_id, 4 + resets++);
		} else {
			assert_int_equal(r, -EAGAIN);
			takt_client_wait(c, SEC / 20);
		}
	}
	assert_int_equal(answered, 3);
	assert_int_equal(resets, 3);
	assert_int_equal(takt_client_pending(c), 0);
	assert_int_equal(takt_client_call(c, &(struct msg){0}, sizeof(struct msg), out, sizeof(out), SEC / 10),
			 -ECONNRESET); /* no server now: it went */
	/* a new server of the name: the same client handle reaches it */
	sa.stall = 0;
	atomic_store(&sh->served, 0);
	srv = server_start(&sa);
	{
		struct msg q = {.client = 1, .n = 5}, *x = (struct msg *)out;

		assert_int_equal(takt_client_call(c, &q, sizeof(q), out, sizeof(out), 20 * SEC), sizeof(struct msg));
		assert_int_equal(x->n, 5);
	}
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	takt_client_close(c);
	takt_node_close(n);
}

/* ---- a client dies with requests pending ----------------------------------- */

static int dying_client(void *a)
{
	takt_node *n = h_node(broker.domain, "doomed");
	takt_client *c;

	(void)a;
	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "keeper", .max_request = 8}, &c) == 0);
	for (int i = 0; i < 4; i++)
		H_CHECK(takt_client_call(c, "ping", 5, NULL, 0, 0) == -ETIMEDOUT); /* sent; nobody answers yet */
	atomic_store(&sh->ready, 2);
	pause();
	return 0;
}

static void test_service_client_killed_costs_the_server_nothing(void **state)
{
	struct takt_request_info held[4];
	const void *req[4];
	takt_node *n;
	takt_server *s;
	pid_t cl;
	void *x;
	int k = 0;

	(void)state;
	reset();
	n = h_node(broker.domain, "keeper");
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "keeper", .max_response = 64}, &s),
			 0);
	cl = h_spawn(dying_client, NULL);
	while (k < 4) {
		int r = takt_server_take(s, &req[k], &held[k]);

		if (r == -EAGAIN) {
			assert_int_equal(takt_server_wait(s, 20 * SEC), 0);
			continue;
		}
		assert_int_equal(r, 0);
		k++;
	}
	for (int i = 0; i < 500 && atomic_load(&sh->ready) != 2; i++)
		usleep(10000);
	assert_int_equal(kill(cl, SIGKILL), 0);
	assert_int_equal(h_wait(cl, WAIT_MS), 128 + SIGKILL);
	/* the client is gone: responses to it fail cleanly, once its
	 * subscriber left (the broker reclaims it) */
	{
		int r = 0;

		for (int i = 0; i < 500; i++) {
			r = takt_server_loan(s, &held[0], 8, &x);
			if (r == 0) {
				r = takt_server_respond(s, &held[0], x);
				if (r == -ECONNRESET)
					break;
			} else if (r == -ECONNRESET) {
				break;
			}
			usleep(10000);
		}
		assert_int_equal(r, -ECONNRESET);
		assert_int_equal(takt_server_loan(s, &held[1], 8, &x), -ECONNRESET);
	}
	for (int i = 0; i < 4; i++)
		takt_server_release(s, req[i]);
	takt_server_close(s);
	takt_node_close(n);
	/* everything either of them held is back */
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* ---- what the broker and the library refuse ----------------------------- */

static void test_service_bad_input(void **state)
{
	takt_node *n = h_node(broker.domain, "refused");
	takt_server *s, *s2;
	takt_client *c, *c2;
	void *p;

	(void)state;
	/* a client that came first named the response type: a server
	 * answering with another is refused, like the later client */
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A",
									 .response_type = "t.R", .max_request = 8},
					  &c2), 0);
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A",
									 .response_type = "t.X", .max_response = 16},
					  &s), -EPROTOTYPE);
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A",
									 .response_type = "t.R", .max_response = 16},
					  &s), 0);
	takt_client_close(c2);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A",
									 .response_type = "t.Y", .max_request = 8},
					  &c2), -EPROTOTYPE);
	/* one server per name */
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A"},
					  &s2), -EADDRINUSE);
	/* types are checked like topics' */
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.B",
									 .max_request = 8},
					  &c2), -EPROTOTYPE);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "strict", .request_type = "t.A",
									 .max_request = 8},
					  &c), 0); /* declares none: fits */
	/* names: rules of topics, 40 characters at most */
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "bad name"}, &c2), -EINVAL);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){
						     .service = "a-service-name-longer-than-forty-chars-xy"},
					  &c2), -EINVAL);
	/* a user cannot open a service's topics as a topic */
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "@/strict/q"}, &(takt_sub *){NULL}),
			 -EINVAL);
	/* oversized request, oversized response */
	assert_int_equal(takt_client_loan(c, 9, &p), -EMSGSIZE);
	{
		struct takt_request_info info, foreign;
		const void *q;
		int64_t id;

		assert_int_equal(takt_client_loan(c, 8, &p), 0);
		memcpy(p, "12345678", 8);
		id = takt_client_send(c, p);
		assert_int_equal(id, 1);
		while (takt_server_take(s, &q, &info) == -EAGAIN)
			assert_int_equal(takt_server_wait(s, 20 * SEC), 0);
		assert_int_equal(info.request_id, 1);
		assert_int_equal(takt_server_loan(s, &info, 17, &p), -EMSGSIZE);
		/* a response to a request id the client never sent, or to a
		 * client that never sent one */
		assert_int_equal(takt_server_loan(s, &info, 8, &p), 0);
		foreign = info;
		foreign.request_id = 2;
		assert_int_equal(takt_server_respond(s, &foreign, p), -EINVAL);
		foreign = info;
		foreign.client_id = info.client_id + 1;
		assert_int_equal(takt_server_respond(s, &foreign, p), -EINVAL);
		assert_int_equal(takt_server_respond(s, &info, p), 0);
		takt_server_release(s, q);
		/* a hostile process, through the protocol: it may not read that
		 * client's responses, nor send them, nor serve a second time */
		{
			struct msg_sub_open so = {.queue_depth = 4};
			struct msg_pub_open po = {.max_payload = 8};
			struct h_raw raw;

			assert_int_equal(h_raw_hello(broker.domain, &raw), 0);
			snprintf(so.topic, sizeof(so.topic), "@/strict/r/%016llx", (unsigned long long)info.client_id);
			assert_int_equal(h_raw_call(raw.sock, &so, sizeof(so), MSG_SUB_OPEN, NULL, 0, NULL), -EPERM);
			snprintf(po.topic, sizeof(po.topic), "@/strict/r/%016llx", (unsigned long long)info.client_id);
			assert_int_equal(h_raw_call(raw.sock, &po, sizeof(po), MSG_PUB_OPEN, NULL, 0, NULL), -EPERM);
			snprintf(so.topic, sizeof(so.topic), "@/strict/q");
			assert_int_equal(h_raw_call(raw.sock, &so, sizeof(so), MSG_SUB_OPEN, NULL, 0, NULL), -EADDRINUSE);
			snprintf(so.topic, sizeof(so.topic), "@/strict/x"); /* not a service's topic */
			assert_int_equal(h_raw_call(raw.sock, &so, sizeof(so), MSG_SUB_OPEN, NULL, 0, NULL), -EINVAL);
			/* a response type on anything but a request topic */
			snprintf(po.topic, sizeof(po.topic), "plain");
			snprintf(po.reply_type, sizeof(po.reply_type), "t.R");
			assert_int_equal(h_raw_call(raw.sock, &po, sizeof(po), MSG_PUB_OPEN, NULL, 0, NULL), -EINVAL);
			/* a client through the protocol with another response type */
			snprintf(po.topic, sizeof(po.topic), "@/strict/q");
			snprintf(po.reply_type, sizeof(po.reply_type), "t.Z");
			assert_int_equal(h_raw_call(raw.sock, &po, sizeof(po), MSG_PUB_OPEN, NULL, 0, NULL),
					 -EPROTOTYPE);
			close(raw.sock);
			close(raw.reg_fd);
		}
	}
	takt_client_close(c);
	takt_server_close(s);
	takt_node_close(n);
}

/* ---- a broker restart: services go on ------------------------------------ */

static void test_service_broker_restart(void **state)
{
	struct srv_arg sa = {.service = "durable", .parts = 1};
	struct msg q = {.client = 1, .n = 41}, r;
	takt_node *n;
	takt_client *c, *late;
	pid_t srv;

	(void)state;
	reset();
	srv = server_start(&sa);
	n = h_node(broker.domain, "durable-client");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "durable", .request_type = "t.Req",
									 .response_type = "t.Rsp", .max_request = sizeof(q)},
					  &c), 0);
	assert_int_equal(takt_client_call(c, &q, sizeof(q), &r, sizeof(r), 20 * SEC), sizeof(r));
	assert_int_equal(kill(broker.pid, SIGKILL), 0);
	assert_int_equal(h_wait(broker.pid, WAIT_MS), 128 + SIGKILL);
	broker.pid = 0;
	q.n = 42; /* without a broker: the data path goes on */
	assert_int_equal(takt_client_call(c, &q, sizeof(q), &r, sizeof(r), 20 * SEC), sizeof(r));
	assert_int_equal(r.n, 42);
	assert_int_equal(h_broker_restart(&broker), 0);
	q.n = 43;
	assert_int_equal(takt_client_call(c, &q, sizeof(q), &r, sizeof(r), 20 * SEC), sizeof(r));
	assert_int_equal(r.n, 43);
	/* a client of the new broker meets the server of the old one */
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "durable", .request_type = "t.Req",
									 .response_type = "t.Rsp", .max_request = sizeof(q)},
					  &late), 0);
	q.n = 44;
	assert_int_equal(takt_client_call(late, &q, sizeof(q), &r, sizeof(r), 20 * SEC), sizeof(r));
	assert_int_equal(r.n, 44);
	/* and one server per name still holds */
	{
		takt_server *second;

		assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "durable", .request_type = "t.Req"},
						  &second), -EADDRINUSE);
	}
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	takt_client_close(late);
	takt_client_close(c);
	takt_node_close(n);
}

/* ---- the takt command's view and call -------------------------------- */

static int run(char *out, size_t size, const char *args)
{
	return h_takt(broker.domain, out, size, args);
}

static void test_service_cli(void **state)
{
	struct srv_arg sa = {.service = "cli/echo", .parts = 1};
	char out[4096];
	pid_t srv;

	(void)state;
	reset();
	assert_int_equal(run(out, sizeof(out), "service call cli/echo hi --timeout 0.2 2>&1"), 1);
	assert_non_null(strstr(out, "no server"));
	srv = server_start(&sa);
	assert_int_equal(run(out, sizeof(out), "service list --json"), 0);
	assert_non_null(strstr(out, "\"name\":\"cli/echo\",\"request_type\":\"t.Req\",\"response_type\":\"t.Rsp\",\"server\":true"));
	assert_non_null(strstr(out, "\"server_process\":\"server\""));
	/* the server answers a struct msg: its client and n fields are the
	 * request's first 8 bytes, so "abcdefgh" comes back in them */
	assert_int_equal(run(out, sizeof(out), "service call cli/echo abcdefgh --json"), 0);
	assert_non_null(strstr(out, "\"size\":16"));
	assert_int_equal(run(out, sizeof(out), "service info cli/echo"), 0);
	assert_non_null(strstr(out, "service 'cli/echo', request type t.Req, response type t.Rsp: served by server"));
	assert_int_equal(run(out, sizeof(out), "service info no/such 2>/dev/null"), 1);
	/* a service's topics are not topics to the user */
	assert_int_equal(run(out, sizeof(out), "topic list"), 0);
	assert_null(strstr(out, "@/"));
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_service_bad_input),
		cmocka_unit_test(test_service_stream_of_responses),
		cmocka_unit_test(test_service_four_clients_ten_thousand_each),
		cmocka_unit_test(test_service_server_killed_then_another),
		cmocka_unit_test(test_service_server_killed_mid_stream),
		cmocka_unit_test(test_service_client_killed_costs_the_server_nothing),
		cmocka_unit_test(test_service_cli),
		cmocka_unit_test(test_service_broker_restart),
	};

	return cmocka_run_group_tests_name("service", tests, setup, teardown);
}
