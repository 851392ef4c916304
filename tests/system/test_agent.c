/* test_agent.c - a node's agent thread against the threads that publish.
 *
 * One process, several threads, no fork after the first node opens, so the
 * ThreadSanitizer build runs it too (CI runs it there): subscribers come
 * and go in one thread while another publishes without pause, so the
 * publisher's agent installs and retires eventfds (G0, G1 in
 * libipc/node.c) while publish looks them up and writes them; control
 * calls of several threads share the agent.
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#define ROUNDS 60

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "agent", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

struct churn {
	takt_node *pub_node;
	_Atomic bool stop;
	_Atomic uint64_t published;
	uint64_t received, rounds_ok;
	int err;
};

static void *publisher_thread(void *a)
{
	struct churn *c = a;
	struct takt_pub_opts po = {.topic = "churn", .max_payload = 8};
	takt_pub *p;
	uint64_t v = 0;

	if (takt_pub_open(c->pub_node, &po, &p) != 0) {
		c->err = 1;
		return NULL;
	}
	while (!atomic_load(&c->stop)) {
		v++;
		if (takt_pub_send(p, &v, sizeof(v)) < 0)
			continue; /* pool momentarily empty: a subscriber holds its ring */
		atomic_store(&c->published, v);
	}
	takt_pub_close(p);
	return NULL;
}

/* Each round: a new subscriber (in its own node every other round), which
 * sleeps until woken and takes a few samples in publish order. */
static void *subscriber_thread(void *a)
{
	struct churn *c = a;
	takt_node *shared = h_node(broker.domain, "churn-sub");

	for (int r = 0; r < ROUNDS && !c->err; r++) {
		struct takt_sub_opts so = {.topic = "churn", .queue_depth = 1 + r % 8};
		takt_node *n = r % 2 ? h_node(broker.domain, "churn-own") : shared;
		const uint64_t *x;
		uint64_t last = 0;
		int got = 0;
		takt_sub *s;

		if (takt_sub_open(n, &so, &s) != 0) {
			c->err = 2;
			break;
		}
		for (int w = 0; w < 200 && got < 3; w++) {
			if (takt_sub_wait(s, 1000000000LL) != 0)
				continue;
			while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
				if (*x <= last)
					c->err = 3; /* out of publish order */
				last = *x;
				takt_sub_release(s, x);
				got++;
			}
		}
		c->received += (uint64_t)got;
		c->rounds_ok += got >= 3;
		takt_sub_close(s);
		if (n != shared)
			takt_node_close(n);
	}
	takt_node_close(shared);
	return NULL;
}

static void test_agent_subscriber_churn_under_publish(void **state)
{
	struct churn c = {0};
	pthread_t pt, st;

	(void)state;
	c.pub_node = h_node(broker.domain, "churn-pub");
	assert_int_equal(pthread_create(&pt, NULL, publisher_thread, &c), 0);
	assert_int_equal(pthread_create(&st, NULL, subscriber_thread, &c), 0);
	assert_int_equal(pthread_join(st, NULL), 0);
	atomic_store(&c.stop, true);
	assert_int_equal(pthread_join(pt, NULL), 0);
	assert_int_equal(c.err, 0);
	assert_int_equal(c.rounds_ok, ROUNDS); /* every subscriber was woken and served */
	assert_true(atomic_load(&c.published) > 0);
	takt_node_close(c.pub_node);
}

/* Two threads open subscribers on one node at the same time: the pushes
 * for each open reach that open's subscriber, and both receive. */
struct opener {
	takt_node *n;
	const char *topic;
	pthread_barrier_t *go;
	takt_sub *s;
	int r;
};

static void *opener_thread(void *a)
{
	struct opener *o = a;
	struct takt_sub_opts so = {.topic = o->topic, .queue_depth = 4};

	pthread_barrier_wait(o->go);
	o->r = takt_sub_open(o->n, &so, &o->s);
	return NULL;
}

static void test_agent_concurrent_opens_on_one_node(void **state)
{
	takt_node *n = h_node(broker.domain, "two-openers"), *pn = h_node(broker.domain, "two-pubs");
	struct takt_pub_opts pa = {.topic = "open/a", .max_payload = 8}, pb = {.topic = "open/b", .max_payload = 8};
	takt_pub *p[2];

	(void)state;
	assert_int_equal(takt_pub_open(pn, &pa, &p[0]), 0);
	assert_int_equal(takt_pub_open(pn, &pb, &p[1]), 0);
	for (int round = 0; round < 20; round++) {
		pthread_barrier_t go;
		struct opener o[2] = {{.n = n, .topic = "open/a", .go = &go}, {.n = n, .topic = "open/b", .go = &go}};
		pthread_t t[2];

		pthread_barrier_init(&go, NULL, 2);
		for (int i = 0; i < 2; i++)
			assert_int_equal(pthread_create(&t[i], NULL, opener_thread, &o[i]), 0);
		for (int i = 0; i < 2; i++)
			assert_int_equal(pthread_join(t[i], NULL), 0);
		pthread_barrier_destroy(&go);
		for (int i = 0; i < 2; i++) {
			uint64_t v = (uint64_t)round * 2 + (uint64_t)i;
			const uint64_t *x;

			assert_int_equal(o[i].r, 0);
			assert_int_equal(takt_pub_send(p[i], &v, sizeof(v)), 1);
			assert_int_equal(takt_sub_take(o[i].s, (const void **)&x, NULL), 0);
			assert_int_equal(*x, v);
			takt_sub_release(o[i].s, x);
			takt_sub_close(o[i].s);
		}
	}
	takt_node_close(n);
	takt_node_close(pn);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_agent_subscriber_churn_under_publish),
		cmocka_unit_test(test_agent_concurrent_opens_on_one_node),
	};

	return cmocka_run_group_tests_name("agent", tests, setup, teardown);
}
