/* test_reclaim.c - everything a dead client held comes back.
 *
 * A dead subscriber's chunks (queued, taken, held) come back to their
 * publisher exactly once, from its own bookkeeping; a dead publisher's
 * samples stay takeable. The pool counts checked here are the publisher's
 * own (takt pools), after it ran once more to notice the death.
 */
#include "harness.h"
#include "layout.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "reclaim", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

/* The publisher notices a departed subscriber when it next loans: then
 * nothing may be out but what its history keeps, all of it exactly once
 * (a chunk given back twice would show as more free than reserved). */
static void assert_pool_whole(takt_pub *p, uint32_t history)
{
	struct proto_pool_stat st;

	assert_int_equal(h_settle_pool(broker.domain, p, history, &st), 0);
	assert_int_equal(st.loans, 0);
	assert_int_equal(st.in_flight, history);
	assert_int_equal(st.free + st.in_flight, st.total);
}

static int holding_sub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_sub_opts so = {.topic = "victim", .queue_depth = 16, .overflow = TAKT_OVERFLOW_REJECT};
	takt_node *n = h_node(broker.domain, "victim-sub");
	const void *x;
	takt_sub *s;
	char c;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0); /* the ring is full now */
	for (int i = 0; i < 10; i++)
		H_CHECK(takt_sub_take(s, &x, NULL) == 0); /* held, never released */
	H_CHECK(h_chan_send(&ch[0], "h", 1) == 0);
	pause(); /* until SIGKILL */
	return 0;
}

static void test_reclaim_subscriber_killed_holding_and_full(void **state)
{
	struct takt_pub_opts po = {.topic = "victim", .max_payload = 64};
	struct h_chan ch[2];
	takt_node *n;
	takt_pub *p;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	n = h_node(broker.domain, "victim-pub");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	pid = h_spawn(holding_sub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	for (uint64_t i = 1; i <= 40; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), i <= 16 ? 1 : 0);
	assert_int_equal(h_chan_send(&ch[1], "f", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	for (uint64_t i = 41; i <= 50; i++) /* 10 taken, 6 queued, 10 more now */
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	assert_pool_whole(p, 0);
	takt_pub_close(p);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
}

static int loaning_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "lender", .max_payload = 4096, .history = 8};
	takt_node *n = h_node(broker.domain, "victim-pub");
	takt_pub *p;
	void *buf;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t i = 1; i <= 20; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
	for (int i = 0; i < 5; i++)
		H_CHECK(takt_pub_loan(p, 100, &buf) == 0); /* loans never published */
	H_CHECK(h_chan_send(ch, "l", 1) == 0);
	pause();
	return 0;
}

static void test_reclaim_publisher_killed_holding_loans(void **state)
{
	struct takt_sub_opts so = {.topic = "lender", .queue_depth = 64};
	struct h_chan ch;
	takt_node *n;
	takt_sub *s;
	const uint64_t *x;
	uint64_t expect = 1;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch), 0);
	n = h_node(broker.domain, "survivor");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(loaning_pub_child, &ch);
	assert_int_equal(h_chan_recv(&ch, &c, 1, WAIT_MS), 0);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	/* What the dead publisher delivered is still ours to take. */
	while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
		assert_int_equal(*x, expect++);
		takt_sub_release(s, x);
	}
	assert_int_equal(expect, 21);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
	h_chan_close(&ch);
}

/* Kills subscribers in the middle of a stream, at random points, while
 * they sleep between takes (not inside a library call). */
static int churn_sub_child(void *a)
{
	struct takt_sub_opts so = {.topic = "churn", .queue_depth = 32, .overflow = TAKT_OVERFLOW_DROP_OLDEST};
	takt_node *n = h_node(broker.domain, "churn-sub");
	const void *x;
	takt_sub *s;

	(void)a;
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	for (;;) {
		for (int i = 0; i < 12 && takt_sub_take(s, &x, NULL) == 0; i++)
			; /* keeps up to 12 held */
		usleep(200);
		for (int i = 0; i < 6; i++) {
			if (takt_sub_take(s, &x, NULL) == 0)
				takt_sub_release(s, x);
		}
	}
	return 0;
}

static void test_reclaim_churn_of_subscribers(void **state)
{
	struct takt_pub_opts po = {.topic = "churn", .max_payload = 128, .history = 4};
	takt_node *n = h_node(broker.domain, "churn-pub");
	takt_pub *p;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (int round = 0; round < 10; round++) {
		pid_t pids[3];

		for (int i = 0; i < 3; i++)
			pids[i] = h_spawn(churn_sub_child, NULL);
		for (uint64_t i = 0; i < 2000; i++) {
			assert_true(takt_pub_send(p, &i, sizeof(i)) >= 0);
			if (i % 100 == 0)
				usleep(100);
		}
		for (int i = 0; i < 3; i++) {
			kill(pids[i], SIGKILL);
			assert_int_equal(h_wait(pids[i], WAIT_MS), 128 + SIGKILL);
		}
	}
	assert_pool_whole(p, 4);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* shm_bytes counts a pool as long as it is alive: while its publisher is
 * open, then while a subscriber still maps it (it holds samples of a
 * publisher that died); once every client let go the domain is back to
 * what it holds idle. */
static int lasting_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "lasting", .max_payload = 4096};
	takt_node *n = h_node(broker.domain, "lasting-pub");
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
	for (uint64_t i = 1; i <= 3; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
	H_CHECK(h_chan_send(&ch[0], "p", 1) == 0);
	pause();
	return 0;
}

static uint64_t shm_bytes(uint64_t *idle)
{
	struct msg_status_reply st;

	assert_int_equal(h_status(broker.domain, &st), 0);
	*idle = st.shm_bytes_idle;
	return st.shm_bytes;
}

/* Bytes a subscriber's segment with one connection of this depth holds:
 * its words, and that connection's return ring (layout.c). */
static uint64_t subseg_bytes(uint32_t depth)
{
	struct msg_status_reply st;
	struct takt_subseg_layout sl;

	assert_int_equal(h_status(broker.domain, &st), 0);
	layout_subseg(&st.limits, &sl);
	return sl.ret_off + layout_ret_bytes(layout_conn_ret_slots(&st.limits, depth) - 1);
}

static void test_reclaim_pool_lives_while_mapped(void **state)
{
	struct takt_sub_opts so = {.topic = "lasting", .queue_depth = 8};
	const uint64_t *x[3];
	struct h_chan ch[2];
	uint64_t idle, bytes, own;
	takt_node *n;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(lasting_pub_child, ch);
	n = h_node(broker.domain, "lasting-sub");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(takt_sub_take(s, (const void **)&x[0], NULL), 0);
	assert_int_equal(takt_sub_take(s, (const void **)&x[1], NULL), 0);
	bytes = shm_bytes(&idle);
	assert_true(idle > 0);
	assert_true(bytes >= idle + 8 * 4160); /* its pool: at least loans and our share */
	own = subseg_bytes(so.queue_depth);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	/* The publisher is gone; what we hold and what is queued lives on. */
	assert_int_equal(*x[0], 1);
	assert_int_equal(*x[1], 2);
	assert_int_equal(takt_sub_take(s, (const void **)&x[2], NULL), 0);
	assert_int_equal(*x[2], 3);
	assert_int_equal(shm_bytes(&idle), bytes);
	for (int i = 0; i < 3; i++)
		takt_sub_release(s, x[i]);
	for (int i = 0; i < 500 && shm_bytes(&idle) != idle + own; i++) {
		/* the subscriber lets go of the pool at its next call after the
		 * broker retired the drained connection */
		assert_int_equal(takt_sub_take(s, (const void **)&x[0], NULL), -EAGAIN);
		usleep(10000);
	}
	assert_int_equal(shm_bytes(&idle), idle + own); /* only the subscriber's own segment left */
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
}

/* A subscriber killed while it holds samples of a dead publisher: its
 * mappings die with it, and so does the pool. */
static int lasting_sub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_sub_opts so = {.topic = "lasting2", .queue_depth = 8};
	takt_node *n = h_node(broker.domain, "lasting2-sub");
	const void *x;
	takt_sub *s;
	char c;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&ch[0], "s", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
	H_CHECK(takt_sub_take(s, &x, NULL) == 0); /* held when killed */
	H_CHECK(h_chan_send(&ch[0], "h", 1) == 0);
	pause();
	return 0;
}

static void test_reclaim_pool_goes_with_last_mapping(void **state)
{
	struct takt_pub_opts po = {.topic = "lasting2", .max_payload = 4096};
	takt_node *n = h_node(broker.domain, "lasting2-pub");
	struct h_chan ch[2];
	uint64_t idle, v = 7;
	takt_pub *p;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	pid = h_spawn(lasting_sub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
	assert_int_equal(h_chan_send(&ch[1], "t", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	takt_node_close(n); /* the publisher goes first; the subscriber holds */
	assert_true(shm_bytes(&idle) > idle);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	for (int i = 0; i < 500 && shm_bytes(&idle) != idle; i++)
		usleep(10000);
	assert_int_equal(shm_bytes(&idle), idle);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
}

/* Many subscribers release at once, every sample: the returns of each
 * connection must never overflow its return ring (they would be lost and
 * their chunks stay out for the life of the connection). Right after a
 * drain, nothing may be out but the loan. */
static void test_reclaim_returns_never_overflow(void **state)
{
	struct takt_pub_opts po = {.topic = "returns8", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "returns8", .queue_depth = 256, .overflow = TAKT_OVERFLOW_REJECT};
	takt_node *n = h_node(broker.domain, "returns8");
	struct proto_pool_stat st;
	uint32_t min_out = UINT32_MAX;
	takt_sub *s[8];
	takt_pub *p;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (int i = 0; i < 8; i++)
		assert_int_equal(takt_sub_open(n, &so, &s[i]), 0);
	for (int round = 0; round < 3000; round++) {
		const void *x;
		void *buf;

		assert_int_equal(takt_pub_loan(p, 8, &buf), 0); /* never -ENOBUFS */
		if (round >= 1500) {
			assert_int_equal(h_pool_of(broker.domain, takt_pub_id(p), &st), 0);
			if (st.in_flight - st.loans < min_out)
				min_out = st.in_flight - st.loans;
		}
		*(int *)buf = round;
		assert_int_equal(takt_pub_publish(p, buf), 8);
		for (int i = 0; i < 8; i++)
			while (takt_sub_take(s[i], &x, NULL) == 0)
				takt_sub_release(s[i], x);
	}
	assert_int_equal(st.bad_returns, 0);
	assert_int_equal(min_out, 0);
	takt_node_close(n);
}

/* A subscriber releases samples and leaves before its publisher looks:
 * the publisher takes those returns as released when it lets the
 * connection go (G1R) and reclaims the rest, each chunk exactly once (a
 * chunk back twice shows as more free than reserved), and the subscriber
 * after it, which may get the same connection and region of the pool,
 * keeps working (that drain no longer mirrors its tail into the region). */
static void test_reclaim_released_then_left_next_subscriber_unharmed(void **state)
{
	struct takt_pub_opts po = {.topic = "leftret", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "leftret", .queue_depth = 8, .overflow = TAKT_OVERFLOW_REJECT};
	takt_node *np = h_node(broker.domain, "leftret-pub"), *ns = h_node(broker.domain, "leftret-sub");
	struct proto_pool_stat st;
	const void *x;
	takt_sub *a, *b;
	takt_pub *p;

	(void)state;
	assert_int_equal(takt_pub_open(np, &po, &p), 0);
	for (int round = 0; round < 3; round++) {
		assert_int_equal(takt_sub_open(ns, &so, &a), 0);
		for (int i = 0; i < 5; i++)
			assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
		for (int i = 0; i < 5; i++) {
			assert_int_equal(takt_sub_take(a, &x, NULL), 0);
			takt_sub_release(a, x); /* into the return ring; the publisher does not look */
		}
		takt_sub_close(a);
		usleep(50000); /* the broker retires the connection (Q0) */
		assert_int_equal(takt_sub_open(ns, &so, &b), 0);
		for (int i = 0; i < 400; i++) {
			void *buf;

			assert_int_equal(takt_pub_loan(p, 8, &buf), 0); /* never -ENOBUFS */
			assert_int_equal(takt_pub_publish(p, buf), 1);
			assert_int_equal(takt_sub_take(b, &x, NULL), 0);
			takt_sub_release(b, x);
		}
		takt_sub_close(b);
		usleep(50000);
	}
	assert_int_equal(h_pool_of(broker.domain, takt_pub_id(p), &st), 0);
	assert_int_equal(st.bad_returns, 0);
	assert_pool_whole(p, 0);
	takt_node_close(ns);
	takt_node_close(np);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reclaim_subscriber_killed_holding_and_full),
		cmocka_unit_test(test_reclaim_publisher_killed_holding_loans),
		cmocka_unit_test(test_reclaim_churn_of_subscribers),
		cmocka_unit_test(test_reclaim_pool_lives_while_mapped),
		cmocka_unit_test(test_reclaim_pool_goes_with_last_mapping),
		cmocka_unit_test(test_reclaim_returns_never_overflow),
		cmocka_unit_test(test_reclaim_released_then_left_next_subscriber_unharmed),
	};

	return cmocka_run_group_tests_name("reclaim", tests, setup, teardown);
}
