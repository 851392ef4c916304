/* test_service_edges.c - request/response at its lifecycle edges, each case
 * a defect found by review (tests/system/test_service.c has the contract's
 * cases): a client blocked while its server dies, a server restarted with
 * a smaller queue, a loan held while its client dies, hostile peers.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 60000
#define SEC 1000000000LL

static struct h_broker broker;

struct shared {
	_Atomic int ready, taken, go, stop;
};
static struct shared *sh;

static int setup(void **state)
{
	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return sh == MAP_FAILED ? -1 : h_broker_start(&broker, "svcedges", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(sh, sizeof(*sh));
	return 0;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static void until(_Atomic int *flag, int value)
{
	for (int i = 0; i < 1000 && atomic_load(flag) != value; i++)
		usleep(10000);
	assert_int_equal(atomic_load(flag), value);
}

/* A server that takes `take` requests without releasing them (0: none),
 * says so, and kills itself `die_ms` after sh->go (or after its takes,
 * when it takes any). */
struct doomed_arg {
	const char *service;
	unsigned take, queue, die_ms;
};

static int doomed_server(void *a)
{
	const struct doomed_arg *da = a;
	takt_node *n = h_node(broker.domain, "doomed-server");
	takt_server *s;
	unsigned k = 0;

	H_CHECK(takt_server_open(n, &(struct takt_service_opts){.service = da->service, .max_pending = da->queue,
								.max_response = 8},
				 &s) == 0);
	atomic_store(&sh->ready, 1);
	while (k < da->take) {
		struct takt_request_info info;
		const void *q;
		int r = takt_server_take(s, &q, &info);

		if (r == -EAGAIN) {
			takt_server_wait(s, SEC / 10);
			continue;
		}
		H_CHECK(r == 0);
		k++;
	}
	atomic_store(&sh->taken, 1);
	while (!da->take && !atomic_load(&sh->go))
		usleep(1000);
	usleep(da->die_ms * 1000);
	kill(getpid(), SIGKILL);
	return 1;
}

/* ---- a client blocked in wait while its server dies is woken ---------- */

static void blocked_client_woken(const char *service, unsigned take, bool by_fd)
{
	struct doomed_arg da = {.service = service, .take = take, .die_ms = 300};
	struct takt_request_info info;
	const void *x;
	takt_node *n;
	takt_client *c;
	int64_t t0, ms;
	pid_t srv;
	void *p;
	int r;

	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(doomed_server, &da);
	until(&sh->ready, 1);
	n = h_node(broker.domain, "blocked-client");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = service, .max_request = 8}, &c), 0);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	for (int i = 0; i < 500 && (r = (int)takt_client_send(c, p)) == -ENOTCONN; i++)
		usleep(10000); /* until our publisher met the server */
	assert_int_equal(r, 1);
	if (take)
		until(&sh->taken, 1);
	else
		atomic_store(&sh->go, 1);
	/* the server dies 300 ms from now, while we sleep: the wait must end
	 * then with the reset, not at its timeout */
	t0 = now_ns();
	if (by_fd) {
		struct pollfd pfd = {.fd = takt_client_fd(c), .events = POLLIN};

		assert_int_equal(takt_client_arm(c), 0);
		r = poll(&pfd, 1, 10000) == 1 ? 0 : -ETIMEDOUT;
	} else {
		r = takt_client_wait(c, 10 * SEC);
	}
	ms = (now_ns() - t0) / 1000000;
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	assert_int_equal(r, 0);
	assert_true(ms < 5000);
	for (int i = 0; i < 100 && (r = takt_client_take(c, &x, &info)) == -EAGAIN; i++)
		takt_client_wait(c, SEC / 20);
	assert_int_equal(r, -ECONNRESET);
	assert_int_equal(info.request_id, 1);
	takt_client_close(c);
	takt_node_close(n);
}

static void test_service_wait_woken_when_server_dies_holding_request(void **state)
{
	(void)state;
	blocked_client_woken("edge/held", 1, false);
}

static void test_service_wait_woken_when_server_dies_request_queued(void **state)
{
	(void)state;
	blocked_client_woken("edge/queued", 0, false);
}

static void test_service_fd_readable_when_server_dies(void **state)
{
	(void)state;
	blocked_client_woken("edge/fd", 1, true);
}

static void test_service_fd_readable_when_server_dies_request_queued(void **state)
{
	(void)state;
	blocked_client_woken("edge/fdq", 0, true);
}

/* ---- a server restarted with a smaller queue -------------------------- */

/* Answers every request (8 bytes back) with a queue of da->queue, until stop. */
static int echo_server(void *a)
{
	const struct doomed_arg *da = a;
	takt_node *n = h_node(broker.domain, "echo-server");
	takt_server *s;
	int r;

	for (int i = 0; i < 500; i++) { /* a server killed just before: until the broker let it go */
		r = takt_server_open(n, &(struct takt_service_opts){.service = da->service, .max_pending = da->queue,
								   .max_response = 8},
				     &s);
		if (r != -EADDRINUSE)
			break;
		usleep(10000);
	}
	H_CHECK(r == 0);
	atomic_store(&sh->ready, 1);
	while (!atomic_load(&sh->stop)) {
		struct takt_request_info info;
		const void *q;
		void *x;
		r = takt_server_take(s, &q, &info);

		if (r == -EAGAIN) {
			takt_server_wait(s, SEC / 10);
			continue;
		}
		H_CHECK(r == 0);
		if (takt_server_loan(s, &info, 8, &x) == 0) {
			memcpy(x, q, 8);
			if (takt_server_respond(s, &info, x) < 0)
				takt_server_discard(s, x);
		}
		takt_server_release(s, q);
	}
	takt_server_close(s);
	takt_node_close(n);
	return 0;
}

/* The client learnt the first server's queue (8); the next one queues 2
 * and takes nothing: the third request has no room there. send must say
 * -ENOBUFS and keep the loan (not -ECONNRESET with the server alive, the
 * loan gone and a request id used up). */
static void test_service_send_after_restart_with_smaller_queue(void **state)
{
	struct doomed_arg big = {.service = "edge/shrink", .queue = 8}, small = {.service = "edge/shrink", .queue = 2};
	char out[8];
	takt_node *n;
	takt_client *c;
	pid_t srv;
	void *p;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(echo_server, &big);
	until(&sh->ready, 1);
	n = h_node(broker.domain, "shrink-client");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "edge/shrink", .max_request = 8}, &c),
			 0);
	assert_int_equal(takt_client_call(c, "12345678", 8, out, sizeof(out), 20 * SEC), 8);
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(doomed_server, &small); /* takes nothing, dies on go */
	until(&sh->ready, 1);
	usleep(200000); /* its connection to our publisher is made */
	for (int64_t i = 2; i <= 3; i++) {
		assert_int_equal(takt_client_loan(c, 8, &p), 0);
		assert_int_equal(takt_client_send(c, p), i);
	}
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	assert_int_equal(takt_client_send(c, p), -ENOBUFS);
	assert_int_equal(takt_client_send(c, p), -ENOBUFS); /* still our loan */
	takt_client_discard(c, p);
	atomic_store(&sh->go, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	takt_client_close(c);
	takt_node_close(n);
}

/* ---- a loan to a client that dies ------------------------------------------ */

static int sleeping_client(void *a)
{
	takt_node *n = h_node(broker.domain, "sleeping-client");
	takt_client *c;

	(void)a;
	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "edge/loan", .max_request = 8}, &c) == 0);
	for (int i = 0; i < 500 && takt_client_call(c, "ping", 5, NULL, 0, 0) == -ENOTCONN; i++)
		usleep(10000); /* sent once the server is there (call: the wait times out at once) */
	atomic_store(&sh->ready, 2);
	pause();
	return 0;
}

/* The server holds a response loan for a client that dies meanwhile; its
 * takes go on (they find that client's publisher alone). Writing the loan
 * and responding must stay safe: -ECONNRESET, not a write into a pool the
 * library unmapped. */
static int loaning_server(void *a)
{
	takt_node *n = h_node(broker.domain, "loaning-server");
	struct takt_request_info info;
	const void *q;
	takt_server *s;
	char *x;
	int r;

	(void)a;
	H_CHECK(takt_server_open(n, &(struct takt_service_opts){.service = "edge/loan", .max_response = 64}, &s) == 0);
	atomic_store(&sh->ready, 1);
	while ((r = takt_server_take(s, &q, &info)) == -EAGAIN)
		takt_server_wait(s, SEC / 10);
	H_CHECK(r == 0);
	H_CHECK(takt_server_loan(s, &info, 64, (void **)&x) == 0);
	atomic_store(&sh->taken, 1);
	while (!atomic_load(&sh->go))
		usleep(1000);
	for (int i = 0; i < 100; i++) { /* idle takes: the client's publisher is found alone */
		H_CHECK(takt_server_take(s, &(const void *){NULL}, &(struct takt_request_info){0}) == -EAGAIN);
		usleep(10000);
	}
	memset(x, 'x', 64); /* still our loan */
	r = takt_server_respond(s, &info, x);
	H_CHECK(r == -ECONNRESET);
	takt_server_release(s, q);
	takt_server_close(s);
	takt_node_close(n);
	return 0;
}

static void test_service_loan_outlives_its_client(void **state)
{
	pid_t srv, cl;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(loaning_server, NULL);
	until(&sh->ready, 1);
	cl = h_spawn(sleeping_client, NULL);
	until(&sh->taken, 1);
	until(&sh->ready, 2);
	assert_int_equal(kill(cl, SIGKILL), 0);
	assert_int_equal(h_wait(cl, WAIT_MS), 128 + SIGKILL);
	atomic_store(&sh->go, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* ---- what a hostile client may ask of the broker -------------------------- */

/* A process that publishes requests (here through the protocol) may read
 * its responses, but only from a queue that rejects when full: a blocking
 * one would hold the server's respond for its block timeout each time
 * (every other client waits meanwhile), a dropping one would take back
 * chunks of a request queue behind its client's count. */
static void test_service_broker_refuses_other_overflow_on_service_topics(void **state)
{
	struct msg_pub_open po = {.max_payload = 8, .topic = "@/edge/hostile/q"};
	struct proto_pool_stat st[64];
	struct h_raw raw;
	uint64_t id = 0;
	int n;

	(void)state;
	assert_int_equal(h_raw_hello(broker.domain, &raw), 0);
	assert_true(h_raw_call(raw.sock, &po, sizeof(po), MSG_PUB_OPEN, NULL, 0, NULL) >= 0);
	n = h_pools(broker.domain, st, 64);
	for (int i = 0; i < n; i++)
		if (!strcmp(st[i].topic, "@/edge/hostile/q"))
			id = st[i].publisher_id;
	assert_true(id != 0);
	for (uint32_t ov = TAKT_OVERFLOW_DROP_OLDEST; ov <= TAKT_OVERFLOW_REJECT; ov++) {
		struct msg_sub_open so = {.queue_depth = 1, .overflow = ov};

		if (ov == TAKT_OVERFLOW_REJECT)
			continue;
		snprintf(so.topic, sizeof(so.topic), "@/edge/hostile/r/%016llx", (unsigned long long)id);
		assert_int_equal(h_raw_call(raw.sock, &so, sizeof(so), MSG_SUB_OPEN, NULL, 0, NULL), -EINVAL);
		snprintf(so.topic, sizeof(so.topic), "@/edge/hostile/q");
		assert_int_equal(h_raw_call(raw.sock, &so, sizeof(so), MSG_SUB_OPEN, NULL, 0, NULL), -EINVAL);
	}
	close(raw.sock);
	close(raw.reg_fd);
}

/* A server that rewrites a response after sending it (its pool is its own,
 * writable) cannot hand the client a response to a request it never sent:
 * the client drops it, and takes the next good one. */
static void test_service_response_to_a_request_never_sent_dropped(void **state)
{
	takt_node *n = h_node(broker.domain, "forger");
	struct takt_request_info ri, info;
	takt_server *s;
	takt_client *c;
	const void *q, *x;
	void *p;

	(void)state;
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "forged", .max_response = 8}, &s), 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "forged", .max_request = 8}, &c), 0);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	assert_int_equal(takt_client_send(c, p), 1);
	assert_int_equal(takt_server_take(s, &q, &ri), 0);
	for (uint64_t forged = 0; forged < 2; forged++) { /* 0, then one past what was sent */
		assert_int_equal(takt_server_loan(s, &ri, 8, &p), 0);
		assert_int_equal(takt_server_respond(s, &ri, p), 0);
		((uint64_t *)p)[-2] = forged ? 2 : 0; /* the header's request id, after the respond */
		assert_int_equal(takt_client_take(c, &x, &info), -EAGAIN);
	}
	assert_int_equal(takt_server_loan(s, &ri, 8, &p), 0);
	memcpy(p, "answer!", 8);
	assert_int_equal(takt_server_respond(s, &ri, p), 0);
	assert_int_equal(takt_client_take(c, &x, &info), 0);
	assert_int_equal(info.request_id, 1);
	assert_memory_equal(x, "answer!", 8);
	takt_client_release(c, x);
	takt_server_release(s, q);
	takt_client_close(c);
	takt_server_close(s);
	takt_node_close(n);
}

/* ---- a request the server finished before it died ------------------------ */

/* Takes two requests, answers and releases the first, holds the second,
 * then dies on go. */
static int finishing_server(void *a)
{
	takt_node *n = h_node(broker.domain, "finishing-server");
	const void *q[2];
	takt_server *s;
	unsigned k = 0;

	(void)a;
	H_CHECK(takt_server_open(n, &(struct takt_service_opts){.service = "edge/finished", .max_response = 8}, &s) ==
		0);
	atomic_store(&sh->ready, 1);
	while (k < 2) {
		struct takt_request_info info;
		void *x;
		int r = takt_server_take(s, &q[k], &info);

		if (r == -EAGAIN) {
			takt_server_wait(s, SEC / 10);
			continue;
		}
		H_CHECK(r == 0 && info.request_id == k + 1);
		if (k == 0) {
			H_CHECK(takt_server_loan(s, &info, 8, &x) == 0);
			memcpy(x, q[0], 8);
			H_CHECK(takt_server_respond(s, &info, x) == 0);
			takt_server_release(s, q[0]);
		}
		k++;
	}
	atomic_store(&sh->taken, 1);
	while (!atomic_load(&sh->go))
		usleep(1000);
	kill(getpid(), SIGKILL);
	return 1;
}

/* The server answered and released request 1 and died holding request 2,
 * while the client looked at nothing: the client gets the answer to 1 and
 * one reset, for 2. A release that reached the client's publisher before
 * the server's connection left is a finished request, however late the
 * client looks (it was reported as a reset too). */
static void test_service_request_finished_before_server_death_not_reset(void **state)
{
	struct takt_request_info info;
	unsigned answers = 0, resets = 0;
	uint64_t reset_id = 0;
	const void *x;
	takt_node *n;
	takt_client *c;
	pid_t srv;
	void *p;
	int r;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(finishing_server, NULL);
	until(&sh->ready, 1);
	n = h_node(broker.domain, "finished-client");
	assert_int_equal(
		takt_client_open(n, &(struct takt_service_opts){.service = "edge/finished", .max_request = 8}, &c), 0);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	memcpy(p, "request1", 8);
	for (int i = 0; i < 500 && (r = (int)takt_client_send(c, p)) == -ENOTCONN; i++)
		usleep(10000); /* until our publisher met the server */
	assert_int_equal(r, 1);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	assert_int_equal(takt_client_send(c, p), 2);
	until(&sh->taken, 1); /* no take, arm or send of ours meanwhile: nothing drained */
	atomic_store(&sh->go, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	usleep(300000); /* the broker and our agent let its connection go */
	for (int i = 0; i < 100 && answers + resets < 3; i++) {
		r = takt_client_take(c, &x, &info);
		if (r == 0) {
			assert_int_equal(info.request_id, 1);
			assert_memory_equal(x, "request1", 8);
			takt_client_release(c, x);
			answers++;
		} else if (r == -ECONNRESET) {
			reset_id = info.request_id;
			resets++;
		} else {
			assert_int_equal(r, -EAGAIN);
			if (answers + resets == 2)
				break;
			takt_client_wait(c, SEC / 20);
		}
	}
	assert_int_equal(answers, 1);
	assert_int_equal(resets, 1);
	assert_int_equal(reset_id, 2);
	assert_int_equal(takt_client_pending(c), 0);
	takt_client_close(c);
	takt_node_close(n);
}

/* ---- what a gone client costs --------------------------------------------- */

static int queueing_client(void *a)
{
	takt_node *n = h_node(broker.domain, "queueing-client");
	takt_client *c;
	void *p;

	(void)a;
	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "edge/queued-dead", .max_request = 8,
								.max_pending = 8},
				 &c) == 0);
	for (int64_t i = 1; i <= 8; i++) {
		int64_t r;

		H_CHECK(takt_client_loan(c, 8, &p) == 0);
		for (int k = 0; k < 500 && (r = takt_client_send(c, p)) == -ENOTCONN; k++)
			usleep(10000); /* until our publisher met the server */
		H_CHECK(r == i);
	}
	atomic_store(&sh->ready, 2);
	pause(); /* until SIGKILL */
	return 0;
}

/* The id the broker gives the next publisher (ids count up, I0). */
static uint64_t next_pub_id(takt_node *n)
{
	takt_pub *p;
	uint64_t id;

	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "edge/probe", .max_payload = 8}, &p), 0);
	id = takt_pub_id(p);
	takt_pub_close(p);
	return id;
}

/* A client dies with 8 requests queued at the server: taking them costs
 * the server one response publisher (which finds nobody), not one per
 * request (each opened, found alone, closed: two broker calls and a pool
 * each); every respond says -ECONNRESET. */
static void test_service_dead_client_queued_requests_cost_one_open(void **state)
{
	takt_node *n = h_node(broker.domain, "queued-dead-server");
	uint64_t before, after;
	takt_server *s;
	pid_t cl;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "edge/queued-dead",
									 .max_response = 8, .max_pending = 8},
					  &s), 0);
	cl = h_spawn(queueing_client, NULL);
	until(&sh->ready, 2);
	assert_int_equal(kill(cl, SIGKILL), 0);
	assert_int_equal(h_wait(cl, WAIT_MS), 128 + SIGKILL);
	usleep(100000); /* the broker let its ports go */
	before = next_pub_id(n);
	for (uint64_t i = 1; i <= 8; i++) {
		struct takt_request_info info;
		const void *q;
		void *x;

		assert_int_equal(takt_server_take(s, &q, &info), 0);
		assert_int_equal(info.request_id, i);
		assert_int_equal(takt_server_loan(s, &info, 8, &x), -ECONNRESET);
		takt_server_release(s, q);
	}
	assert_int_equal(takt_server_take(s, &(const void *){NULL}, &(struct takt_request_info){0}), -EAGAIN);
	after = next_pub_id(n);
	assert_int_equal(after - before, 2); /* the one response publisher, and the probe */
	takt_server_close(s);
	takt_node_close(n);
}

/* The server's table has [limits] publishers_per_topic entries; a gone
 * client's entry goes to a new client when none is free. A response to
 * the gone client's request then says -ECONNRESET (it was ours), not
 * -EINVAL (which means never ours). */
static void test_service_gone_client_reset_after_its_entry_is_reused(void **state)
{
	struct h_broker b;
	struct takt_request_info ia, ib, ic, forged;
	takt_client *ca, *cb, *cc;
	takt_server *s;
	takt_node *n;
	const void *q;
	void *p;

	(void)state;
	assert_int_equal(h_broker_start(&b, "svc-reuse", "[limits]\npublishers_per_topic = 2\n"), 0);
	n = h_node(b.domain, "reuse");
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "reuse", .max_response = 8}, &s),
			 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "reuse", .max_request = 8}, &ca), 0);
	assert_int_equal(takt_client_loan(ca, 8, &p), 0);
	assert_int_equal(takt_client_send(ca, p), 1);
	assert_int_equal(takt_server_take(s, &q, &ia), 0);
	takt_server_release(s, q);
	takt_client_close(ca);
	assert_int_equal(takt_server_take(s, &q, &(struct takt_request_info){0}), -EAGAIN); /* finds it gone */
	assert_int_equal(takt_server_loan(s, &ia, 8, &p), -ECONNRESET);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "reuse", .max_request = 8}, &cb), 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "reuse", .max_request = 8}, &cc), 0);
	assert_int_equal(takt_client_loan(cb, 8, &p), 0);
	assert_int_equal(takt_client_send(cb, p), 1);
	assert_int_equal(takt_client_loan(cc, 8, &p), 0);
	assert_int_equal(takt_client_send(cc, p), 1);
	assert_int_equal(takt_server_take(s, &q, &ib), 0);
	takt_server_release(s, q);
	assert_int_equal(takt_server_take(s, &q, &ic), 0); /* the second entry, then a's */
	takt_server_release(s, q);
	assert_int_equal(takt_server_loan(s, &ia, 8, &p), -ECONNRESET);
	assert_int_equal(takt_server_loan(s, &ic, 8, &p), 0);
	assert_int_equal(takt_server_respond(s, &ia, p), -ECONNRESET);
	forged = ic;
	forged.client_id = ic.client_id + 1000;
	assert_int_equal(takt_server_respond(s, &forged, p), -EINVAL);
	assert_int_equal(takt_server_respond(s, &ic, p), 0);
	(void)ib;
	takt_client_close(cb);
	takt_client_close(cc);
	takt_server_close(s);
	takt_node_close(n);
	h_broker_stop(&b);
	setenv("TAKT_RUNTIME_DIR", broker.rundir, 1); /* the group's broker again */
}

/* Resets not yet taken count against max_pending: a client that never
 * takes them cannot pile up more than its reset ring holds, however often
 * its servers die. */
static void test_service_untaken_resets_hold_sends(void **state)
{
	struct doomed_arg doomed = {.service = "edge/resets", .queue = 8}, echo = {.service = "edge/resets", .queue = 8};
	struct takt_request_info info;
	const void *x;
	takt_node *n;
	takt_client *c;
	pid_t srv;
	void *p;
	int64_t r = 0;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(doomed_server, &doomed); /* takes nothing, dies on go */
	until(&sh->ready, 1);
	n = h_node(broker.domain, "resets-client");
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "edge/resets", .max_request = 8,
									 .max_pending = 2},
					  &c), 0);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	for (int i = 0; i < 500 && (r = takt_client_send(c, p)) == -ENOTCONN; i++)
		usleep(10000);
	assert_int_equal(r, 1);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	assert_int_equal(takt_client_send(c, p), 2);
	atomic_store(&sh->go, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 128 + SIGKILL);
	memset(sh, 0, sizeof(*sh));
	srv = h_spawn(echo_server, &echo);
	until(&sh->ready, 1);
	assert_int_equal(takt_client_loan(c, 8, &p), 0);
	for (int i = 0; i < 500 && (r = takt_client_send(c, p)) != -ENOBUFS; i++) {
		assert_int_equal(r, -ECONNRESET); /* until the new server is there: never sent */
		usleep(10000);
	}
	assert_int_equal(r, -ENOBUFS); /* two resets untaken: no room */
	for (uint64_t id = 1; id <= 2; id++) {
		assert_int_equal(takt_client_take(c, &x, &info), -ECONNRESET);
		assert_int_equal(info.request_id, id);
	}
	assert_int_equal(takt_client_send(c, p), 3);
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(srv, WAIT_MS), 0);
	takt_client_close(c);
	takt_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_service_wait_woken_when_server_dies_holding_request),
		cmocka_unit_test(test_service_wait_woken_when_server_dies_request_queued),
		cmocka_unit_test(test_service_fd_readable_when_server_dies),
		cmocka_unit_test(test_service_fd_readable_when_server_dies_request_queued),
		cmocka_unit_test(test_service_send_after_restart_with_smaller_queue),
		cmocka_unit_test(test_service_loan_outlives_its_client),
		cmocka_unit_test(test_service_broker_refuses_other_overflow_on_service_topics),
		cmocka_unit_test(test_service_response_to_a_request_never_sent_dropped),
		cmocka_unit_test(test_service_request_finished_before_server_death_not_reset),
		cmocka_unit_test(test_service_dead_client_queued_requests_cost_one_open),
		cmocka_unit_test(test_service_gone_client_reset_after_its_entry_is_reused),
		cmocka_unit_test(test_service_untaken_resets_hold_sends),
	};

	return cmocka_run_group_tests_name("service_edges", tests, setup, teardown);
}
