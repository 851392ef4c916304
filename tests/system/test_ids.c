/* test_ids.c - publisher ids never repeat; queue depths are exact.
 *
 * Ids: publishers on one topic are SIGKILLed and restarted 100 times, then
 * the broker itself is restarted; every publisher's samples carry an id
 * nobody had before, with seq starting at 1 (so (publisher_id, seq) names
 * one sample for subscribers and the tracer).
 *
 * Depth: a subscriber of depth d holds exactly d samples, for d = 1..17:
 * drop-oldest keeps the newest d, reject keeps the first d.
 */
#include "harness.h"

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
#define RESTARTS 100
#define PER_PUB 3

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "ids", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

struct stamp {
	uint64_t pub_id; /* takt_pub_id as the publisher sees it */
	uint64_t seq;
};

static int pub_child(void *a)
{
	struct h_chan *ready = a;
	struct takt_pub_opts po = {.topic = "ids", .max_payload = sizeof(struct stamp)};
	takt_node *n = h_node(broker.domain, "ids-pub");
	takt_pub *p;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_pub_id(p) != 0);
	for (uint64_t i = 1; i <= PER_PUB; i++) {
		struct stamp st = {.pub_id = takt_pub_id(p), .seq = i};

		H_CHECK(takt_pub_send(p, &st, sizeof(st)) == 1);
	}
	H_CHECK(h_chan_send(ready, "p", 1) == 0);
	pause(); /* until SIGKILL: nothing is closed cleanly */
	return 0;
}

static bool seen_before(const uint64_t *ids, unsigned n, uint64_t id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* Takes PER_PUB samples of one new publisher; returns its id. */
static uint64_t take_one_publisher(takt_sub *s)
{
	uint64_t id = 0;

	for (uint64_t want = 1; want <= PER_PUB; want++) {
		struct takt_sample_info info;
		const struct stamp *st;

		while (takt_sub_take(s, (const void **)&st, &info) == -EAGAIN)
			assert_int_equal(takt_sub_wait(s, (int64_t)WAIT_MS * 1000000), 0);
		assert_int_equal(info.seq, want); /* a new id starts its seq at 1 */
		assert_int_equal(st->seq, want);
		assert_true(info.publisher_id == st->pub_id);
		if (want == 1)
			id = info.publisher_id;
		assert_true(info.publisher_id == id);
		takt_sub_release(s, st);
	}
	return id;
}

static void test_ids_never_reused(void **state)
{
	struct takt_sub_opts so = {.topic = "ids", .queue_depth = 16};
	static uint64_t ids[RESTARTS + 1];
	struct h_chan ready;
	takt_node *n;
	takt_sub *s;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ready), 0);
	n = h_node(broker.domain, "ids-sub");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	for (unsigned i = 0; i < RESTARTS; i++) {
		pid_t pid = h_spawn(pub_child, &ready);

		assert_int_equal(h_chan_recv(&ready, &c, 1, WAIT_MS), 0);
		ids[i] = take_one_publisher(s);
		assert_true(ids[i] != 0);
		if (seen_before(ids, i, ids[i]))
			fail_msg("publisher %u reused id %#llx", i, (unsigned long long)ids[i]);
		kill(pid, SIGKILL);
		assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	}
	takt_sub_close(s);
	takt_node_close(n);

	/* A new broker of the same domain hands out ids no earlier one did. */
	h_broker_stop(&broker);
	assert_int_equal(h_broker_start(&broker, "ids", NULL), 0);
	n = h_node(broker.domain, "ids-after");
	{
		struct takt_pub_opts po = {.topic = "ids", .max_payload = 8};
		takt_pub *p;

		assert_int_equal(takt_pub_open(n, &po, &p), 0);
		ids[RESTARTS] = takt_pub_id(p);
		assert_false(seen_before(ids, RESTARTS, ids[RESTARTS]));
		takt_pub_close(p);
	}
	takt_node_close(n);
	h_chan_close(&ready);
}

/* Publishes d + 5 samples into a subscriber of depth d, then takes what it
 * kept: exactly d, the newest (drop-oldest) or the first (reject). */
static void check_depth(takt_node *n, unsigned d, enum takt_overflow ov)
{
	struct takt_sub_opts so = {.topic = "depth", .queue_depth = d, .overflow = ov};
	struct takt_pub_opts po = {.topic = "depth", .max_payload = 8};
	const unsigned sent = d + 5;
	uint64_t first = ov == TAKT_OVERFLOW_REJECT ? 1 : sent - d + 1;
	unsigned got = 0;
	const uint64_t *x;
	takt_pub *p;
	takt_sub *s;

	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (uint64_t i = 1; i <= sent; i++) {
		int r = takt_pub_send(p, &i, sizeof(i));

		/* drop-oldest always delivers; reject refuses beyond depth */
		assert_int_equal(r, ov == TAKT_OVERFLOW_REJECT && i > d ? 0 : 1);
	}
	while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
		if (*x != first + got)
			fail_msg("depth %u %s: sample %u is seq %llu, expected %llu", d,
				 ov == TAKT_OVERFLOW_REJECT ? "reject" : "drop-oldest", got,
				 (unsigned long long)*x, (unsigned long long)(first + got));
		got++;
		takt_sub_release(s, x);
	}
	if (got != d)
		fail_msg("depth %u %s: kept %u samples", d, ov == TAKT_OVERFLOW_REJECT ? "reject" : "drop-oldest",
			 got);
	assert_int_equal(takt_sub_dropped(s), 5);
	takt_pub_close(p);
	takt_sub_close(s);
}

static void test_depth_exact(void **state)
{
	takt_node *n = h_node(broker.domain, "depth");

	(void)state;
	for (unsigned d = 1; d <= 17; d++) {
		check_depth(n, d, TAKT_OVERFLOW_DROP_OLDEST);
		check_depth(n, d, TAKT_OVERFLOW_REJECT);
	}
	takt_node_close(n);
}

/* Depth 0 keeps its documented default of 16. */
static void test_depth_default(void **state)
{
	struct takt_sub_opts so = {.topic = "depth0"};
	struct takt_pub_opts po = {.topic = "depth0", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "depth0");
	const uint64_t *x;
	unsigned got = 0;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (uint64_t i = 1; i <= 40; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
		assert_int_equal(*x, 25 + got);
		got++;
		takt_sub_release(s, x);
	}
	assert_int_equal(got, 16);
	takt_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_depth_exact),
		cmocka_unit_test(test_depth_default),
		cmocka_unit_test(test_ids_never_reused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
