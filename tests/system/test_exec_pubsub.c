/* test_exec_pubsub.c - executor tasks triggered by samples from a publisher
 * in another process, and deadlines when samples stop coming. */
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <takt/exec.h>

#define WAIT_MS 30000

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "execps", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

struct burst {
	const char *topic;
	unsigned count, gap_us;
	struct h_chan *go;
};

static int burst_child(void *a)
{
	struct burst *b = a;
	struct takt_pub_opts po = {.topic = b->topic, .max_payload = 64};
	takt_node *n = h_node(broker.domain, "sensor");
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_recv(b->go, &c, 1, WAIT_MS) == 0);
	for (uint64_t i = 1; i <= b->count; i++) {
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
		usleep(b->gap_us);
	}
	H_CHECK(h_chan_recv(b->go, &c, 1, WAIT_MS) == 0); /* stay until told */
	takt_node_close(n);
	return 0;
}

struct consumer {
	takt_sub *sub;
	uint64_t deadline_ns;
	uint64_t next, got, misses_seen, disorder;
};

static int consumer_declare(takt_triggers *t, void *u)
{
	struct consumer *c = u;

	return c->deadline_ns ? takt_trigger_deadline(t, c->sub, c->deadline_ns) :
				takt_trigger_subscriber(t, c->sub);
}

static int consumer_execute(takt_ctx *ctx, void *u)
{
	struct consumer *c = u;
	const uint64_t *x;

	if (takt_ctx_deadline_missed(ctx))
		c->misses_seen++;
	while (takt_sub_take(c->sub, (const void **)&x, NULL) == 0) {
		c->disorder += *x != ++c->next;
		c->got++;
		takt_sub_release(c->sub, x);
	}
	return TAKT_CONTINUE;
}

static _Atomic uint64_t monitor_misses;

static void on_miss(void *u, int task, uint64_t late)
{
	(void)u;
	(void)task;
	(void)late;
	atomic_fetch_add(&monitor_misses, 1);
}

static takt_exec *exec_for(struct consumer *c, unsigned workers)
{
	static struct takt_monitor mon = {.deadline_missed = on_miss};
	struct takt_exec_opts o = {.worker_threads = workers, .monitor = &mon};
	struct takt_item it = {.name = "consume", .declare = consumer_declare, .execute = consumer_execute,
			       .user = c};
	takt_exec *ex;

	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	return ex;
}

/* Every sample wakes the task (or joins a run already due); none is lost. */
static void test_exec_subscriber_task_gets_every_sample(void **state)
{
	struct takt_sub_opts so = {.topic = "imu", .queue_depth = 256, .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(broker.domain, "controller");
	struct consumer c = {0};
	struct h_chan go;
	struct burst b = {.topic = "imu", .count = 2000, .gap_us = 50, .go = &go};
	takt_exec *ex;
	pid_t pid;

	(void)state;
	assert_int_equal(h_chan_open(&go), 0);
	assert_int_equal(takt_sub_open(n, &so, &c.sub), 0);
	ex = exec_for(&c, 2);
	pid = h_spawn(burst_child, &b);
	usleep(100000);
	assert_int_equal(h_chan_send(&go, "g", 1), 0);
	for (int i = 0; i < 300 && c.got < b.count; i++)
		assert_int_equal(takt_exec_run_for(ex, 100000000), 0);
	assert_int_equal(c.got, b.count);
	assert_int_equal(c.disorder, 0);
	assert_true(takt_exec_task_dispatches(ex, 0) > 0);
	assert_int_equal(h_chan_send(&go, "e", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_exec_destroy(ex);
	takt_node_close(n);
	h_chan_close(&go);
}

/* Samples stop: the task runs with takt_ctx_deadline_missed() true, the
 * monitor and the statistics count each miss. */
static void test_exec_deadline_fires_when_samples_stop(void **state)
{
	struct takt_sub_opts so = {.topic = "hb", .queue_depth = 16};
	takt_node *n = h_node(broker.domain, "watchdog");
	struct consumer c = {.deadline_ns = 20000000};
	struct takt_exec_stats st;
	struct h_chan go;
	struct burst b = {.topic = "hb", .count = 10, .gap_us = 2000, .go = &go};
	takt_exec *ex;
	pid_t pid;

	(void)state;
	atomic_store(&monitor_misses, 0);
	assert_int_equal(h_chan_open(&go), 0);
	assert_int_equal(takt_sub_open(n, &so, &c.sub), 0);
	ex = exec_for(&c, 0);
	pid = h_spawn(burst_child, &b);
	usleep(100000);
	assert_int_equal(h_chan_send(&go, "g", 1), 0);
	/* 10 samples 2 ms apart: well inside the 20 ms deadline ... */
	for (int i = 0; i < 100 && c.got < 10; i++)
		assert_int_equal(takt_exec_run_for(ex, 10000000), 0);
	assert_int_equal(c.got, 10);
	uint64_t misses_during_stream = c.misses_seen;
	/* ... then silence for 110 ms: about 5 misses. */
	assert_int_equal(takt_exec_run_for(ex, 110000000), 0);
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_true(c.misses_seen - misses_during_stream >= 3);
	assert_int_equal(st.deadline_misses, c.misses_seen);
	assert_int_equal(atomic_load(&monitor_misses), st.deadline_misses);
	assert_int_equal(h_chan_send(&go, "e", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_exec_destroy(ex);
	takt_node_close(n);
	h_chan_close(&go);
}

/* Regression (review): runs for another trigger of the task (an interval)
 * used to restart the deadline, so a silent publisher was never noticed. */
struct both {
	takt_sub *sub;
	unsigned misses, ticks;
};

static int both_declare(takt_triggers *t, void *u)
{
	struct both *b = u;

	return takt_trigger_interval(t, 5000000) ?: takt_trigger_deadline(t, b->sub, 20000000);
}

static int both_execute(takt_ctx *ctx, void *u)
{
	struct both *b = u;

	b->misses += takt_ctx_deadline_missed(ctx) != 0;
	b->ticks++;
	return TAKT_CONTINUE;
}

static void test_exec_deadline_not_hidden_by_interval(void **state)
{
	struct takt_sub_opts so = {.topic = "silent", .queue_depth = 4};
	takt_node *n = h_node(broker.domain, "both");
	struct both b = {0};
	struct takt_item it = {.name = "both", .declare = both_declare, .execute = both_execute, .user = &b};
	takt_exec *ex;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &b.sub), 0);
	assert_int_equal(takt_exec_create(NULL, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	assert_int_equal(takt_exec_run_for(ex, 110000000), 0);
	assert_true(b.ticks >= 10);
	assert_true(b.misses >= 3); /* every 20 ms without a sample */
	takt_exec_destroy(ex);
	takt_node_close(n);
}

/* A subscriber's samples are taken by one task: two could run at once. */
/* A1, found by review, both with a worker (the run in flight while the
 * dispatch thread waits):
 * - a run a sample started takes longer than the deadline: no miss (its
 *   end restarts the wait, as inline), and no extra run;
 * - a deadline that passes during a deadline run makes the next run, which
 *   must see takt_ctx_deadline_missed() true. */
struct sleepy {
	takt_sub *sub;
	uint64_t deadline_ns, nap_ns;
	int runs, missed_runs;
};

static int sleepy_declare(takt_triggers *t, void *u)
{
	struct sleepy *c = u;

	return takt_trigger_deadline(t, c->sub, c->deadline_ns);
}

static int sleepy_execute(takt_ctx *ctx, void *u)
{
	struct sleepy *c = u;
	struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)c->nap_ns};
	const void *x;

	c->runs++;
	c->missed_runs += takt_ctx_deadline_missed(ctx) != 0;
	while (takt_sub_take(c->sub, &x, NULL) == 0)
		takt_sub_release(c->sub, x);
	nanosleep(&ts, NULL);
	return TAKT_CONTINUE;
}

static takt_exec *sleepy_exec(struct sleepy *c)
{
	struct takt_exec_opts o = {.worker_threads = 1};
	struct takt_item it = {.name = "sleepy", .declare = sleepy_declare, .execute = sleepy_execute, .user = c};
	takt_exec *ex;

	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	return ex;
}

static void test_exec_deadline_during_a_run_in_flight(void **state)
{
	struct takt_sub_opts so = {.topic = "sleepy", .queue_depth = 4};
	struct takt_pub_opts po = {.topic = "sleepy", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "sleepy");
	struct sleepy a = {.deadline_ns = 100000000, .nap_ns = 250000000};
	struct sleepy b = {.deadline_ns = 100000000, .nap_ns = 150000000};
	struct takt_exec_stats st;
	takt_exec *ex;
	takt_pub *p;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	/* a sample starts a 250 ms run; the 100 ms deadline restarts when it ends */
	assert_int_equal(takt_sub_open(n, &so, &a.sub), 0);
	ex = sleepy_exec(&a);
	assert_int_equal(takt_pub_send(p, &(uint64_t){1}, 8), 1);
	assert_int_equal(takt_exec_run_for(ex, 300000000), 0);
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_int_equal(st.deadline_misses, 0); /* the run was long, the publisher not silent */
	assert_int_equal(a.runs, 1);
	takt_exec_destroy(ex);
	takt_sub_close(a.sub);
	/* no samples: every run is a deadline run, and says so */
	so.topic = "sleepy2";
	assert_int_equal(takt_sub_open(n, &so, &b.sub), 0);
	ex = sleepy_exec(&b);
	assert_int_equal(takt_exec_run_for(ex, 300000000), 0);
	assert_true(b.runs >= 2);
	assert_int_equal(b.missed_runs, b.runs);
	takt_exec_destroy(ex);
	takt_sub_close(b.sub);
	takt_node_close(n);
}

/* A1, found by review: a run that became due while its task was in flight
 * stays due when a stop arrives in the wake that collects the task (the
 * stop used to discard it with the ready list). The first run (a deadline
 * run) lasts past the next deadline, so the task is due again, and stops
 * the executor as it ends; the next run_until_idle runs it once. */
struct stopper {
	takt_sub *sub;
	takt_exec *ex;
	int runs, missed_runs;
};

static int stopper_declare(takt_triggers *t, void *u)
{
	return takt_trigger_deadline(t, ((struct stopper *)u)->sub, 100000000);
}

static int stopper_execute(takt_ctx *ctx, void *u)
{
	struct stopper *c = u;
	struct timespec ts = {.tv_nsec = 150000000};

	c->missed_runs += takt_ctx_deadline_missed(ctx) != 0;
	if (++c->runs == 1) {
		nanosleep(&ts, NULL); /* the 200 ms deadline passes meanwhile */
		takt_exec_stop(c->ex);
	}
	return TAKT_CONTINUE;
}

static void test_exec_due_run_survives_a_stop(void **state)
{
	struct takt_sub_opts so = {.topic = "stopper", .queue_depth = 4};
	struct takt_exec_opts o = {.worker_threads = 1};
	takt_node *n = h_node(broker.domain, "stopper");
	struct stopper c = {0};
	struct takt_item it = {.name = "stopper", .declare = stopper_declare, .execute = stopper_execute, .user = &c};
	struct takt_exec_summary sum = {0};

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &c.sub), 0);
	assert_int_equal(takt_exec_create(&o, &c.ex), 0);
	assert_int_equal(takt_exec_add(c.ex, &it), 0);
	assert_int_equal(takt_exec_run_for(c.ex, 5000000000ull), 0); /* ends at the stop, ~250 ms */
	assert_int_equal(c.runs, 1);
	assert_int_equal(takt_exec_run_until_idle(c.ex, 1000000000, &sum), 0);
	assert_int_equal(sum.dispatches, 1); /* the due run, not lost */
	assert_int_equal(c.missed_runs, 2);  /* both were deadline runs */
	takt_exec_destroy(c.ex);
	takt_sub_close(c.sub);
	takt_node_close(n);
}

static void test_exec_subscriber_triggers_one_task(void **state)
{
	struct takt_sub_opts so = {.topic = "single", .queue_depth = 4};
	takt_node *n = h_node(broker.domain, "single");
	struct consumer c = {0};
	struct takt_item it = {.name = "c", .declare = consumer_declare, .execute = consumer_execute, .user = &c};
	takt_exec *ex;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &c.sub), 0);
	assert_int_equal(takt_exec_create(NULL, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	assert_int_equal(takt_exec_add(ex, &it), -EBUSY);
	takt_exec_destroy(ex);
	takt_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exec_subscriber_task_gets_every_sample),
		cmocka_unit_test(test_exec_deadline_fires_when_samples_stop),
		cmocka_unit_test(test_exec_deadline_not_hidden_by_interval),
		cmocka_unit_test(test_exec_subscriber_triggers_one_task),
		cmocka_unit_test(test_exec_deadline_during_a_run_in_flight),
		cmocka_unit_test(test_exec_due_run_survives_a_stop),
	};

	return cmocka_run_group_tests_name("exec_pubsub", tests, setup, teardown);
}
