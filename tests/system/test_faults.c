/* test_faults.c - real processes stopped at exact instructions of the
 * library (fault points, libipc/fault.h), where review found races that a
 * stress run hits only by luck.
 *
 * Needs a build with -DTAKT_FAULTS=ON (`scripts/test --full` builds and runs
 * one); in any other build it says so and is skipped (exit 77).
 */
#include "harness.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

extern void (*takt__fault_hook)(const char *point);

static struct h_broker broker;

/* ---- the hook: in a child, the node's agent stops at one point ------------ */

static const char *stop_at;   /* the point; NULL: none (armed once) */
static pid_t main_tid;
static bool stop_main;        /* stop the child's main thread there, else only its agent */
static int agent_delay_ms;    /* the agent dawdles this long on each push */
static int note_wr, gate_rd;  /* 'f' when stopped; it goes on at a byte on gate_rd */

static void hook(const char *point)
{
	char c;

	if (agent_delay_ms && !strcmp(point, "agent_push") && syscall(SYS_gettid) != main_tid)
		usleep((useconds_t)agent_delay_ms * 1000);
	if (!stop_at || strcmp(point, stop_at) || (syscall(SYS_gettid) == main_tid) != stop_main)
		return;
	stop_at = NULL;
	if (write(note_wr, "f", 1) != 1 || read(gate_rd, &c, 1) != 1)
		_exit(98);
}

static void arm(const char *point, struct h_chan *note, struct h_chan *gate)
{
	main_tid = (pid_t)syscall(SYS_gettid);
	note_wr = note->wr;
	gate_rd = gate->rd;
	stop_at = point;
	takt__fault_hook = hook;
}

struct shared {
	_Atomic int stop;
	_Atomic int go; /* the busy publisher starts publishing */
};
static struct shared *sh;

static int setup(void **state)
{
	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return sh == MAP_FAILED ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	munmap(sh, sizeof(*sh));
	return 0;
}

static int count_new(takt_sub *s, int ms)
{
	const void *x;
	int n = 0;

	for (int i = 0; i < ms; i++) {
		while (takt_sub_take(s, &x, NULL) == 0) {
			takt_sub_release(s, x);
			n++;
		}
		usleep(1000);
	}
	return n;
}

/* ---- PS0: the agent and the publishing thread take the same slot --------- */

/* A publisher that publishes every millisecond; its agent stops right after
 * it found a free slot for the first pushed connection. */
static int busy_pub_child(void *a)
{
	struct h_chan *ch = a; /* [0] notes, [1] gate */
	struct takt_pub_opts po = {.topic = "slots", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "busy-pub");
	uint64_t v = 0;
	takt_pub *p;

	arm("pub_prepare_slot", &ch[0], &ch[1]);
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	while (!atomic_load(&sh->go)) /* the agent prepares the first connection alone */
		usleep(1000);
	while (!atomic_load(&sh->stop)) {
		v++;
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) >= 0);
		usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

static void test_faults_agent_and_publisher_take_one_slot(void **state)
{
	struct takt_sub_opts so = {.topic = "slots", .queue_depth = 64};
	struct h_chan ch[2];
	takt_node *n;
	takt_sub *s1, *s2;
	pid_t pid;
	char c;

	(void)state;
	atomic_store(&sh->stop, 0);
	atomic_store(&sh->go, 0);
	assert_int_equal(h_broker_start(&broker, "slots", NULL), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(busy_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'r');
	n = h_node(broker.domain, "two-subs");
	/* The agent stops inside the first connection's preparation (the open
	 * is answered after its ack timeout). */
	assert_int_equal(takt_sub_open(n, &so, &s1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f');
	/* The second connection's push waits behind it; the publishing thread
	 * prepares that one itself, in the slot the agent had picked. */
	assert_int_equal(takt_sub_open(n, &so, &s2), 0);
	atomic_store(&sh->go, 1);
	assert_true(count_new(s2, 500) > 0);
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* the agent goes on */
	usleep(100000);
	count_new(s1, 1);
	count_new(s2, 1);
	/* Both connections deliver from now on. */
	assert_true(count_new(s1, 500) > 0);
	if (count_new(s2, 500) == 0)
		fail_msg("the second subscriber starves: its publisher's slot was taken over by another connection");
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&broker);
}

/* ---- A0/Q0: a slot reused while the agent still prepares it --------------- */

/* A publisher with history that publishes 4 samples and idles; its agent
 * stops after it checked a new connection, before it writes its ring. */
static int idle_hist_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "hist1", .max_payload = 8, .history = 4};
	takt_node *n = h_node(broker.domain, "idle-pub");
	takt_pub *p;

	arm("pub_prepare_checked", &ch[0], &ch[1]);
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t v = 1001; v <= 1004; v++)
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	pause();
	return 0;
}

static void test_faults_agent_never_writes_a_reused_connection(void **state)
{
	struct takt_sub_opts sa = {.topic = "hist1", .queue_depth = 8, .history = 4};
	struct takt_sub_opts sc = {.topic = "other", .queue_depth = 8, .history = 4};
	struct takt_pub_opts pc = {.topic = "other", .max_payload = 8};
	struct takt_sample_info info;
	struct h_chan ch[2];
	const void *x;
	takt_node *n;
	takt_sub *a, *s;
	takt_pub *p;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&broker, "reuse", NULL), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(idle_hist_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	n = h_node(broker.domain, "reuser");
	assert_int_equal(takt_sub_open(n, &sa, &a), 0); /* connection 0; the agent stops on it */
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f');
	takt_sub_close(a); /* connection 0 retires; its publisher is idle */
	usleep(50000);     /* the broker's grace checks run */
	assert_int_equal(takt_pub_open(n, &pc, &p), 0);
	assert_int_equal(takt_sub_open(n, &sc, &s), 0); /* a free connection slot: 0 if it was freed */
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* the agent goes on */
	usleep(200000);
	/* Nothing was published on "other": the idle publisher's history must
	 * not appear in another connection. */
	if (takt_sub_take(s, &x, &info) == 0)
		fail_msg("a sample (seq %llu, %u bytes, value %llu) from another topic's publisher arrived",
			 (unsigned long long)info.seq, info.size, (unsigned long long)*(const uint64_t *)x);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&broker);
}

/* ---- A0: an open is confirmed only with the history in its ring ---------- */

/* A publisher with history whose publishing thread refreshes every
 * millisecond, so it claims a new connection before its agent does; it
 * stops after the claim, before it writes the history. */
static int racing_hist_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "hist2", .max_payload = 8, .history = 4};
	takt_node *n = h_node(broker.domain, "racing-pub");
	takt_pub *p;
	void *buf;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t v = 1; v <= 4; v++)
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 0);
	stop_main = true;
	agent_delay_ms = 100; /* the publishing thread claims the connection first */
	arm("pub_prepare_checked", &ch[0], &ch[1]);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	while (!atomic_load(&sh->stop)) {
		H_CHECK(takt_pub_loan(p, 8, &buf) == 0); /* refreshes: claims new connections */
		takt_pub_discard(p, buf);
		usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

struct open_arg {
	takt_node *n;
	takt_sub *s;
	_Atomic int done;
	int r;
};

static void *open_thread(void *a)
{
	struct open_arg *o = a;
	struct takt_sub_opts so = {.topic = "hist2", .queue_depth = 8, .history = 4};

	o->r = takt_sub_open(o->n, &so, &o->s);
	atomic_store(&o->done, 1);
	return NULL;
}

static void test_faults_open_waits_for_history(void **state)
{
	struct open_arg o = {0};
	struct takt_sample_info info;
	struct h_chan ch[2];
	const void *x;
	pthread_t t;
	pid_t pid;
	char c;

	(void)state;
	atomic_store(&sh->stop, 0);
	assert_int_equal(h_broker_start(&broker, "hist2", NULL), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(racing_hist_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	o.n = h_node(broker.domain, "late-joiner");
	assert_int_equal(pthread_create(&t, NULL, open_thread, &o), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0); /* its thread stopped mid-preparation */
	assert_int_equal(c, 'f');
	usleep(300000);
	if (atomic_load(&o.done))
		fail_msg("takt_sub_open returned before the publisher had put the history into the ring");
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(o.r, 0);
	for (uint64_t v = 1; v <= 4; v++) { /* all of it, at once, in order */
		assert_int_equal(takt_sub_take(o.s, &x, &info), 0);
		assert_int_equal(*(const uint64_t *)x, v);
		takt_sub_release(o.s, x);
	}
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_node_close(o.n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&broker);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_faults_agent_and_publisher_take_one_slot),
		cmocka_unit_test(test_faults_agent_never_writes_a_reused_connection),
		cmocka_unit_test(test_faults_open_waits_for_history),
	};

#ifndef TAKT_FAULTS
	printf("skipped: needs a build with -DTAKT_FAULTS=ON (scripts/test --full runs one)\n");
	return 77;
#endif
	return cmocka_run_group_tests_name("faults", tests, setup, teardown);
}
