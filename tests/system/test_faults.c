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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <takt/exec.h>

#define WAIT_MS 30000

#ifdef TAKT_FAULTS
extern void (*takt__fault_hook)(const char *point);
#else
/* The library exports the hook only in a fault build; elsewhere this test
 * only says it is skipped (main), and this keeps it linking. */
static void (*takt__fault_hook)(const char *point);
#endif

static struct h_broker broker;

/* ---- the hook: in a child, the node's agent stops at one point ------------ */

static const char *stop_at;   /* the point; NULL: none (armed once) */
static pid_t main_tid;
static bool stop_main;        /* stop the child's main thread there, else only its agent */
static int agent_delay_ms;    /* the agent dawdles this long on each push */
static int note_wr, gate_rd;  /* 'f' when stopped; it goes on at a byte on gate_rd */

/* A second, independent stop for the agent alone ('a' on its own note
 * channel, its own gate), so a test can hold both threads of a child. */
static const char *agent_stop_at;
static int agent_note_wr, agent_gate_rd;

static void hook(const char *point)
{
	char c;

	if (agent_stop_at && !strcmp(point, agent_stop_at) && syscall(SYS_gettid) != main_tid) {
		agent_stop_at = NULL;
		if (write(agent_note_wr, "a", 1) != 1 || read(agent_gate_rd, &c, 1) != 1)
			_exit(98);
	}

	if (agent_delay_ms && !strcmp(point, "agent_installed") && syscall(SYS_gettid) != main_tid)
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

/* The second stop, for the agent alone (arm installs the hook). */
static void arm_agent(const char *point, struct h_chan *note, struct h_chan *gate)
{
	agent_note_wr = note->wr;
	agent_gate_rd = gate->rd;
	agent_stop_at = point;
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

/* Takes and releases whatever arrives for ms milliseconds; every sample's
 * seq must be after *last (one publisher): nothing taken twice or out of
 * order. Returns how many. */
static int count_in_order(takt_sub *s, int ms, uint64_t *last)
{
	struct takt_sample_info info;
	const void *x;
	int n = 0;

	for (int i = 0; i < ms; i++) {
		while (takt_sub_take(s, &x, &info) == 0) {
			assert_true(info.seq > *last);
			*last = info.seq;
			takt_sub_release(s, x);
			n++;
		}
		usleep(1000);
	}
	return n;
}

/* ---- PS1: the publishing thread prepares while the agent stalls ---------- */

/* A publisher on busy_topic that publishes every millisecond; its agent
 * stops right after it installed the first pushed connection (the
 * subscriber's segment and eventfd), before it claims it. */
static const char *busy_topic = "slots";

static int busy_pub_child(void *a)
{
	struct h_chan *ch = a; /* [0] notes, [1] gate */
	struct takt_pub_opts po = {.topic = busy_topic, .max_payload = 8};
	takt_node *n = h_node(broker.domain, "busy-pub");
	uint64_t v = 0;
	takt_pub *p;

	arm("agent_installed", &ch[0], &ch[1]);
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	while (!atomic_load(&sh->stop)) {
		v++;
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) >= 0);
		usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

/* The agent stops between installing a connection and claiming it: the
 * publishing thread claims and prepares it itself (PS1) and delivers at
 * once; the agent, let go, finds it claimed, waits for it to be ready and
 * confirms; a second subscriber then gets its own slot and both deliver,
 * each sample once and in order. */
static void test_faults_publisher_prepares_while_agent_stalls(void **state)
{
	struct takt_sub_opts so = {.topic = "slots", .queue_depth = 64};
	struct h_chan ch[2];
	uint64_t last1 = 0, last2 = 0;
	takt_node *n;
	takt_sub *s1, *s2;
	pid_t pid;
	char c;

	(void)state;
	atomic_store(&sh->stop, 0);
	assert_int_equal(h_broker_start(&broker, "slots", NULL), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(busy_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'r');
	n = h_node(broker.domain, "two-subs");
	/* The open is answered after its ack timeout: the agent is stopped. */
	assert_int_equal(takt_sub_open(n, &so, &s1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f');
	if (count_in_order(s1, 500, &last1) == 0)
		fail_msg("the publishing thread did not prepare the connection the stalled agent had installed");
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* the agent goes on */
	assert_int_equal(takt_sub_open(n, &so, &s2), 0);
	/* Both connections deliver from now on, each sample once, in order. */
	assert_true(count_in_order(s1, 500, &last1) > 0);
	if (count_in_order(s2, 500, &last2) == 0)
		fail_msg("the second subscriber starves");
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

/* ---- crash windows: a process killed at each point of loan, publish,
 * take, release and history pinning ------------------------------------ */

static const char *kill_at;
static bool kill_in_agent;

static void kill_hook(const char *point)
{
	/* history is handed over by the agent, or by the publishing thread
	 * when it claimed the connection first: either will do */
	if (kill_at && !strcmp(point, kill_at) && (kill_in_agent || syscall(SYS_gettid) == main_tid))
		kill(getpid(), SIGKILL);
}

static void arm_kill(const char *point, bool in_agent)
{
	main_tid = (pid_t)syscall(SYS_gettid);
	kill_at = point;
	kill_in_agent = in_agent;
	takt__fault_hook = kill_hook;
}

struct crash {
	const char *point;
	bool agent;
};

/* Publishes 1, 2, 3 ... (history 4) until killed at its point. */
static int crash_pub_child(void *a)
{
	const struct crash *cr = a;
	struct takt_pub_opts po = {.topic = "crash", .max_payload = 64, .history = 4};
	takt_node *n = h_node(broker.domain, "crash-pub");
	takt_pub *p;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t v = 1; v <= 8; v++) /* history for late joiners */
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) >= 0);
	arm_kill(cr->point, cr->agent);
	for (uint64_t v = 9; v < 100000; v++) {
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) >= 0);
		usleep(200);
	}
	return 1; /* never killed: the point was not reached */
}

/* Takes and releases until killed at its point. */
static int crash_sub_child(void *a)
{
	const struct crash *cr = a;
	struct takt_sub_opts so = {.topic = "crash", .queue_depth = 16};
	takt_node *n = h_node(broker.domain, "crash-sub");
	const void *x;
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	arm_kill(cr->point, false);
	for (int i = 0; i < 100000; i++) {
		if (takt_sub_wait(s, 100000000) == 0)
			while (takt_sub_take(s, &x, NULL) == 0)
				takt_sub_release(s, x);
	}
	return 1;
}

/* Drains a subscriber, checking publish order: nothing twice or reordered. */
static unsigned drain_in_order(takt_sub *s, uint64_t *last)
{
	struct takt_sample_info info;
	const uint64_t *x;
	unsigned n = 0;

	while (takt_sub_take(s, (const void **)&x, &info) == 0) {
		if (*x <= *last || info.seq != *x)
			fail_msg("sample %llu (seq %llu) after %llu: delivered twice or out of order",
				 (unsigned long long)*x, (unsigned long long)info.seq, (unsigned long long)*last);
		*last = *x;
		takt_sub_release(s, (const void *)x);
		n++;
	}
	return n;
}

static void wait_idle_memory(void)
{
	struct msg_status_reply st;

	for (int i = 0; i < 500; i++) {
		assert_int_equal(h_status(broker.domain, &st), 0);
		if (st.shm_bytes == st.shm_bytes_idle)
			return;
		usleep(10000);
	}
	fail_msg("%llu bytes of shared memory held with every client gone (idle: %llu)",
		 (unsigned long long)st.shm_bytes, (unsigned long long)st.shm_bytes_idle);
}

/* A publisher killed inside loan, inside publish between two pushes, or
 * (its agent) while handing history to a late joiner: subscribers keep
 * what it delivered, in order and once; its pool goes with the last of
 * them. */
static void crash_publisher_at(const struct crash *cr)
{
	struct takt_sub_opts so = {.topic = "crash", .queue_depth = 64, .history = 4};
	takt_node *n;
	takt_sub *s[2], *late = NULL;
	uint64_t last[3] = {0, 0, 0};
	pid_t pid;

	assert_int_equal(h_broker_start(&broker, "crashpub", NULL), 0);
	n = h_node(broker.domain, "survivors");
	assert_int_equal(takt_sub_open(n, &so, &s[0]), 0);
	assert_int_equal(takt_sub_open(n, &so, &s[1]), 0);
	pid = h_spawn(crash_pub_child, (void *)cr);
	if (cr->agent) { /* the late joiner's connection is what kills it */
		usleep(100000);
		assert_int_equal(takt_sub_open(n, &so, &late), 0);
	}
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	for (int i = 0; i < 2; i++)
		drain_in_order(s[i], &last[i]);
	if (late)
		drain_in_order(late, &last[2]);
	assert_true(last[0] > 0 && last[1] > 0);
	usleep(100000); /* the broker retires the drained connections */
	for (int i = 0; i < 2; i++)
		assert_int_equal(drain_in_order(s[i], &last[i]), 0);
	takt_node_close(n);
	wait_idle_memory();
	h_broker_stop(&broker);
}

/* A subscriber killed between its pop and recording the sample, or between
 * forgetting a sample and returning it: its publisher gets every chunk of
 * that connection back, once (its pool audits exact), and the other
 * subscriber sees every sample in order. */
static void crash_subscriber_at(const struct crash *cr)
{
	struct takt_pub_opts po = {.topic = "crash", .max_payload = 64};
	struct takt_sub_opts so = {.topic = "crash", .queue_depth = 64};
	struct proto_pool_stat st;
	takt_node *n;
	takt_pub *p;
	takt_sub *s;
	uint64_t v = 0, last = 0;
	pid_t pid;
	int status = -1;

	assert_int_equal(h_broker_start(&broker, "crashsub", NULL), 0);
	n = h_node(broker.domain, "survivors");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(crash_sub_child, (void *)cr);
	for (int i = 0; i < 20000 && waitpid(pid, &status, WNOHANG) == 0; i++) {
		v++;
		assert_true(takt_pub_send(p, &v, sizeof(v)) >= 1);
		drain_in_order(s, &last);
		usleep(100);
	}
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	drain_in_order(s, &last);
	/* the connection retires; the publisher takes all back */
	assert_int_equal(h_settle_pool(broker.domain, p, 0, &st), 0);
	assert_int_equal(st.in_flight, 0);
	assert_int_equal(st.free, st.total);
	assert_int_equal(st.bad_returns, 0);
	assert_int_equal(last, v);
	takt_node_close(n);
	wait_idle_memory();
	h_broker_stop(&broker);
}

/* ---- a notifier killed in the middle of a push --------------------------- */

/* Notifies "crash-bell" with id base + k, k = 1.., forever (killed at its
 * point, or by the test). */
static int crash_notifier_child(void *a)
{
	uint64_t base = (uint64_t)(uintptr_t)a;
	takt_node *n = h_node(broker.domain, "crash-notifier");
	takt_event *ev;

	if (base == 1000000)
		arm_kill("event_id_written", false);
	H_CHECK(takt_event_open(n, "crash-bell", &ev) == 0);
	for (uint64_t k = 1;; k++) {
		while (takt_event_notify(ev, base + k) == -EOVERFLOW)
			usleep(1000);
		usleep(500);
	}
	return 0;
}

/* Takes what arrives for ms milliseconds: each notifier's ids (base
 * 1000000 x n) must come in order; counts per notifier in got[]. */
static void take_ids(takt_event *ev, int ms, uint64_t *last, uint64_t *got)
{
	for (int i = 0; i < ms; i++) {
		uint64_t id;

		while (takt_event_take(ev, &id) == 0) {
			uint64_t who = id / 1000000, k = id % 1000000;

			assert_true(who >= 1 && who <= 3);
			assert_true(k > last[who]); /* in order, never twice */
			last[who] = k;
			got[who]++;
		}
		usleep(1000);
	}
}

/* A notifier killed between writing an id into its lane and publishing
 * it leaves nothing behind: its lane simply stops (the id was never
 * published), other notifiers' ids keep arriving in order, and a process
 * that later gets the dead one's index carries on in that lane. */
static void test_faults_notifier_killed_mid_push(void **state)
{
	takt_node *n;
	takt_event *ev;
	uint64_t last[4] = {0}, got[4] = {0};
	pid_t dead, alive, later;

	(void)state;
	assert_int_equal(h_broker_start(&broker, "crashev", NULL), 0);
	n = h_node(broker.domain, "crash-listener");
	assert_int_equal(takt_event_open(n, "crash-bell", &ev), 0);
	assert_true(takt_event_fd(ev) >= 0);
	alive = h_spawn(crash_notifier_child, (void *)(uintptr_t)2000000);
	dead = h_spawn(crash_notifier_child, (void *)(uintptr_t)1000000);
	assert_int_equal(h_wait(dead, WAIT_MS), 128 + SIGKILL); /* at its first push */
	take_ids(ev, 300, last, got);
	assert_int_equal(got[1], 0); /* its one id was never published */
	assert_true(got[2] > 0);
	later = h_spawn(crash_notifier_child, (void *)(uintptr_t)3000000); /* likely the dead one's index */
	memset(got, 0, sizeof(got));
	take_ids(ev, 300, last, got);
	assert_true(got[2] > 0);
	assert_true(got[3] > 0);
	kill(alive, SIGKILL);
	kill(later, SIGKILL);
	assert_int_equal(h_wait(alive, WAIT_MS), 128 + SIGKILL);
	assert_int_equal(h_wait(later, WAIT_MS), 128 + SIGKILL);
	takt_node_close(n);
	h_broker_stop(&broker);
}

/* ---- P0: a connection that becomes usable while a subscriber parks -------- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A subscriber with no publisher yet; its main thread stops in
 * takt_sub_wait just before it parks; with ch[2] and ch[3] its agent also
 * stops in the middle of installing the first connection. Sends 'w' and
 * the wait's result. */
static int parking_sub_child(void *a)
{
	struct h_chan *ch = a; /* [0] notes, [1] gate; [2] agent notes, [3] agent gate (or rd < 0) */
	struct takt_sub_opts so = {.topic = "parking", .queue_depth = 8};
	takt_node *n = h_node(broker.domain, "parking-sub");
	char res[2] = {'w', 0};
	uint64_t t0;
	takt_sub *s;
	int r;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	if (ch[3].rd >= 0)
		arm_agent("sub_agent_installing", &ch[2], &ch[3]);
	arm("arm_before_park", &ch[0], &ch[1]);
	stop_main = true;
	t0 = now_ms();
	r = takt_sub_wait(s, 3000000000ll); /* 3 s */
	res[1] = r == 0 && now_ms() - t0 < 2500 ? 'y' : 'n';
	H_CHECK(h_chan_send(&ch[0], res, 2) == 0);
	takt_node_close(n);
	return 0;
}

/* The subscriber looked at its connections (none yet), then stopped before
 * it parked; meanwhile a publisher connects (both agents confirm: the
 * subscriber's agent runs) and publishes once, seeing the subscriber not
 * parked, so it does not wake it. Let go, the subscriber parks: its
 * re-check must include the connection that became usable meanwhile, or it
 * sleeps with a sample waiting. */
static void parks_while_connection_arrives(bool agent_stalls)
{
	struct takt_pub_opts po = {.topic = "parking", .max_payload = 8};
	struct h_chan ch[4];
	uint64_t v = 7;
	takt_node *n;
	takt_pub *p;
	pid_t pid;
	char c, res[2];
	int reached;

	assert_int_equal(h_broker_start(&broker, "parking", "[socket]\nconfirm_timeout_ms = 300\n"), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(h_chan_open(&ch[i]), 0);
	if (!agent_stalls) {
		h_chan_close(&ch[3]);
		ch[3].rd = -1;
	}
	pid = h_spawn(parking_sub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f'); /* stopped before parking */
	n = h_node(broker.domain, "parking-pub");
	/* With the subscriber's agent stopped, the open is answered after the
	 * confirmation timeout, the connection half installed. */
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	if (agent_stalls) {
		assert_int_equal(h_chan_recv(&ch[2], &c, 1, WAIT_MS), 0);
		assert_int_equal(c, 'a');
	}
	reached = takt_pub_send(p, &v, sizeof(v)); /* the subscriber is not parked: no wake-up */
	assert_true(reached == 1 || (agent_stalls && reached == 0));
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* it parks */
	if (agent_stalls) {
		usleep(100000); /* parked and asleep */
		assert_int_equal(h_chan_send(&ch[3], "o", 1), 0); /* the agent finishes the install */
		/* The connection was not usable yet: a later publish reaches
		 * it, once the agent's last store is there (bounded). */
		for (int i = 0; !reached && i < 2000; i++) {
			reached = takt_pub_send(p, &v, sizeof(v));
			if (!reached)
				usleep(1000);
		}
		assert_int_equal(reached, 1);
	}
	assert_int_equal(h_chan_recv(&ch[0], res, 2, WAIT_MS), 0);
	assert_int_equal(res[0], 'w');
	if (res[1] != 'y')
		fail_msg("the subscriber parked and slept with a sample waiting on a connection that arrived "
			 "while it was parking%s", agent_stalls ? " (its agent between two stores)" : "");
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_node_close(n);
	for (int i = 0; i < 4; i++)
		if (agent_stalls || i != 3)
			h_chan_close(&ch[i]);
	h_broker_stop(&broker);
}

/* The subscriber looked at its connections (none yet) and stopped before
 * it parked; meanwhile a publisher connects (both agents confirm) and
 * publishes once, seeing the subscriber not parked, so it does not wake
 * it. Let go, the subscriber parks: its re-check must include the
 * connection that became usable meanwhile, or it sleeps with a sample
 * waiting. Then the same with the subscriber's agent stopped between the
 * two stores that make a connection usable to each side: a publisher that
 * can push must be one the parking subscriber's re-check sees. */
static void test_faults_subscriber_parks_while_connection_arrives(void **state)
{
	(void)state;
	parks_while_connection_arrives(false);
	parks_while_connection_arrives(true);
}

/* ---- P0: history pushed into a connection made later (conns_fill) -------- */

/* A subscriber (history 4) whose main thread stops before parking and
 * whose agent stops on the next push; sends 'w', whether its wait returned
 * 0, how long it took (tenths of a second) and how many samples it took. */
static int late_hist_sub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_sub_opts so = {.topic = "latehist", .queue_depth = 8, .history = 4};
	takt_node *n = h_node(broker.domain, "latehist-sub");
	struct takt_sample_info info;
	const void *x;
	char res[4] = {'w', 0, 0, 0};
	uint64_t t0, el;
	takt_sub *s;
	int r, got = 0;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	arm_agent("agent_push", &ch[2], &ch[3]);
	arm("arm_before_park", &ch[0], &ch[1]);
	stop_main = true;
	t0 = now_ms();
	r = takt_sub_wait(s, 5000000000ll);
	el = now_ms() - t0;
	while (takt_sub_take(s, &x, &info) == 0) {
		takt_sub_release(s, x);
		got++;
	}
	res[1] = (char)(r == 0 ? 'y' : 'n');
	res[2] = (char)(el / 100); /* tenths of a second */
	res[3] = (char)got;
	H_CHECK(h_chan_send(&ch[0], res, 4) == 0);
	takt_node_close(n);
	return 0;
}

/* A publisher's node pushes history into a new connection as soon as it
 * has the connection (pub_prepare), before the subscriber's agent made
 * the connection usable to its subscribing thread: the wake-up that comes
 * with the history finds nothing usable, the subscriber parks again, and
 * nothing else loads its park word once the connection is usable. Made
 * late: the subscriber's only connection region is held by a retiring
 * connection (its thread stands inside Q0), so the new publisher's
 * connection is created when the region frees (conns_fill), with no open
 * waiting for it. The subscriber must wake once its agent installed the
 * connection, not when the publisher next publishes (never, here). */
static void test_faults_history_into_late_connection_wakes_parked_subscriber(void **state)
{
	struct takt_pub_opts po1 = {.topic = "latehist", .max_payload = 8};
	struct takt_pub_opts po2 = {.topic = "latehist", .max_payload = 8, .history = 4};
	struct h_chan ch[4];
	uint64_t v = 1;
	takt_node *n;
	takt_pub *p1, *p2;
	pid_t pid;
	char c, res[4];

	(void)state;
	assert_int_equal(h_broker_start(&broker, "latehist", "[limits]\npublishers_per_topic = 1\n"), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(h_chan_open(&ch[i]), 0);
	n = h_node(broker.domain, "latehist-pub");
	assert_int_equal(takt_pub_open(n, &po1, &p1), 0);
	pid = h_spawn(late_hist_sub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f'); /* inside Q0, before parking: holds its region */
	takt_pub_close(p1);
	usleep(50000);
	assert_int_equal(takt_pub_open(n, &po2, &p2), 0); /* no region at S: conns_missing */
	for (int i = 0; i < 3; i++, v++)
		assert_true(takt_pub_send(p2, &v, sizeof(v)) >= 0);
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* it parks */
	assert_int_equal(h_chan_recv(&ch[2], &c, 1, WAIT_MS), 0); /* its agent got PUSH_SUB_CONN */
	assert_int_equal(c, 'a');
	usleep(300000); /* our agent pushed history + woke it; it parked again */
	assert_int_equal(h_chan_send(&ch[3], "o", 1), 0); /* READY, mark */
	assert_int_equal(h_chan_recv(&ch[0], res, 4, WAIT_MS), 0);
	print_message("woken after %d00 ms (its agent let go at ~300 ms), took %d\n", res[2], res[3]);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_pub_close(p2);
	takt_node_close(n);
	for (int i = 0; i < 4; i++)
		h_chan_close(&ch[i]);
	h_broker_stop(&broker);
	if (res[2] >= 20)
		fail_msg("history waited %d00 ms in the ring of a parked subscriber", res[2]);
	assert_int_equal(res[1], 'y');
	assert_int_equal(res[3], 3); /* the three samples of history */
}

static void test_faults_crash_windows(void **state)
{
	static const struct crash pubs[] = {
		{"loan_popped", false}, {"publish_pushed_one", false}, {"history_pinned", true},
	};
	static const struct crash subs[] = {{"take_popped", false}, {"release_returning", false}};

	(void)state;
	for (size_t i = 0; i < sizeof(pubs) / sizeof(pubs[0]); i++) {
		print_message("publisher killed at %s\n", pubs[i].point);
		crash_publisher_at(&pubs[i]);
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
		print_message("subscriber killed at %s\n", subs[i].point);
		crash_subscriber_at(&subs[i]);
	}
}

/* ---- LET: a run whose end the dispatch thread learns late ----------------- */

/* The producer's worker stops at exec_run_ended (after it noted its end,
 * before it hands the run back) for most of a period: the dispatch thread
 * fires the next boundary without knowing the run ended before it. Its
 * release must not land inside a run that already started at that
 * boundary: a consumer run sees, all through, what was there at its start
 * (it takes at its start and again 4 ms on; the second take finds nothing
 * stamped at or before its own deadline). */
static __thread bool let_src_thread;

static void let_delay_hook(const char *point)
{
	if (let_src_thread && !strcmp(point, "exec_run_ended")) {
		let_src_thread = false;
		usleep(9500);
	}
}

struct let_src {
	takt_pub *out;
	unsigned runs;
};

static int let_src_declare(takt_triggers *t, void *u)
{
	struct let_src *s = u;

	takt_trigger_interval(t, 10000000);
	return takt_let_output(t, s->out);
}

static int let_src_execute(takt_ctx *c, void *u)
{
	struct let_src *s = u;
	uint64_t *p;

	if (takt_pub_loan(s->out, sizeof(uint64_t), (void **)&p) == 0) {
		*p = takt_ctx_scheduled_ns(c);
		takt_pub_publish(s->out, p);
	}
	usleep(2000);
	s->runs++;
	let_src_thread = true; /* the hook holds this run's end */
	return TAKT_CONTINUE;
}

struct let_dst {
	takt_sub *in;
	unsigned runs, first, late;
};

static int let_dst_declare(takt_triggers *t, void *u)
{
	struct let_dst *d = u;

	takt_trigger_interval(t, 10000000);
	return takt_let_input(t, d->in);
}

static int let_dst_execute(takt_ctx *c, void *u)
{
	struct let_dst *d = u;
	struct takt_sample_info info;
	const void *x;

	while (takt_sub_take(d->in, &x, &info) == 0) {
		d->first++;
		takt_sub_release(d->in, x);
	}
	usleep(4000);
	while (takt_sub_take(d->in, &x, &info) == 0) {
		d->late += info.publish_ns <= takt_ctx_scheduled_ns(c);
		takt_sub_release(d->in, x);
	}
	d->runs++;
	return TAKT_CONTINUE;
}

static void test_faults_let_release_never_joins_a_started_run(void **state)
{
	struct takt_pub_opts po = {.topic = "let/race", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "let/race", .queue_depth = 64};
	struct let_src a = {0};
	struct let_dst b = {0};
	struct takt_exec_opts o = {.worker_threads = 2};
	struct takt_item ia = {.name = "src", .declare = let_src_declare, .execute = let_src_execute, .user = &a};
	struct takt_item ib = {.name = "dst", .declare = let_dst_declare, .execute = let_dst_execute, .user = &b};
	takt_exec *ex;
	takt_node *n;

	(void)state;
	assert_int_equal(h_broker_start(&broker, "letrace", NULL), 0);
	n = h_node(broker.domain, "letrace");
	assert_int_equal(takt_pub_open(n, &po, &a.out), 0);
	assert_int_equal(takt_sub_open(n, &so, &b.in), 0);
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &ia), 0);
	assert_int_equal(takt_exec_add(ex, &ib), 1);
	takt__fault_hook = let_delay_hook;
	assert_int_equal(takt_exec_run_for(ex, 150000000), 0);
	takt__fault_hook = NULL;
	print_message("src %u runs, dst %u runs took %u at their start, %u stamped in time but released after "
		      "they began; src overruns %lld\n",
		      a.runs, b.runs, b.first, b.late, (long long)takt_exec_task_overruns(ex, 0));
	assert_true(a.runs >= 5 && b.runs >= 5);
	assert_int_equal(b.late, 0);
	/* each such release went to the next boundary, reported as an overrun */
	assert_true(takt_exec_task_overruns(ex, 0) >= 1);
	takt_exec_destroy(ex);
	takt_sub_close(b.in);
	takt_pub_close(a.out);
	takt_node_close(n);
	h_broker_stop(&broker);
}

/* ---- G1R: a reclaim drains only a return ring its subscriber started ------ */

/* A subscriber that takes and releases 999 of the 1000 samples of its
 * first publisher (its region's return head ends at 999) and leaves one
 * queued, so the connection stays (an orphan) after that publisher closed;
 * then its agent stops at the next push, and on sh->go it takes the last
 * sample: the connection goes, the region is free, and the next one
 * connects into it while the agent is stopped: never started. */
static int stale_sub_child(void *a)
{
	struct h_chan *ch = a; /* [0] notes, [1] gate */
	struct takt_sub_opts so = {.topic = "stale", .queue_depth = 16, .overflow = TAKT_OVERFLOW_REJECT};
	takt_node *n = h_node(broker.domain, "stale-sub");
	const void *x;
	takt_sub *s;
	unsigned got = 0;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	for (int i = 0; i < 20000 && got < 999; i++) {
		while (got < 999 && takt_sub_take(s, &x, NULL) == 0) {
			takt_sub_release(s, x);
			got++;
		}
		usleep(500);
	}
	H_CHECK(got == 999);
	main_tid = (pid_t)syscall(SYS_gettid);
	takt__fault_hook = hook;
	arm_agent("agent_push", &ch[0], &ch[1]);
	H_CHECK(h_chan_send(&ch[0], "t", 1) == 0);
	while (!atomic_load(&sh->go))
		usleep(1000);
	for (int i = 0; i < 5000 && takt_sub_take(s, &x, NULL) != 0; i++)
		usleep(1000);
	takt_sub_release(s, x);
	pause(); /* until SIGKILL */
	return 0;
}

/* The publishing thread adopted a connection whose subscriber never
 * started its region (its agent stopped) and then died: the region still
 * holds the previous connection's return head (999). Letting the
 * connection go must not drain that ring (it did: the stale head counted
 * as a bad return against a publisher nobody wronged). */
static void test_faults_reclaim_drains_only_a_started_ring(void **state)
{
	struct h_chan sch[2], pch[2];
	struct proto_pool_stat st[16];
	takt_pub *a;
	takt_node *n;
	pid_t sub, pub;
	uint64_t v;
	int k;
	char c;

	(void)state;
	atomic_store(&sh->stop, 0);
	atomic_store(&sh->go, 0);
	assert_int_equal(h_broker_start(&broker, "stale", "[limits]\npublishers_per_topic = 1\n"
							  "[socket]\nconfirm_timeout_ms = 100\n"),
			 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(h_chan_open(&sch[i]), 0);
		assert_int_equal(h_chan_open(&pch[i]), 0);
	}
	sub = h_spawn(stale_sub_child, sch);
	assert_int_equal(h_chan_recv(&sch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'r');
	n = h_node(broker.domain, "stale-first-pub");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "stale", .max_payload = 8}, &a), 0);
	for (v = 1; v <= 1000; v++)
		while (takt_pub_send(a, &v, sizeof(v)) == 0) /* its queue is full: let it take */
			usleep(200);
	assert_int_equal(h_chan_recv(&sch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 't');
	takt_pub_close(a); /* one sample still queued: the connection stays, an orphan */
	takt_node_close(n);
	busy_topic = "stale";
	pub = h_spawn(busy_pub_child, pch); /* no region of the subscriber free: not connected yet */
	busy_topic = "slots";
	assert_int_equal(h_chan_recv(&pch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'r');
	atomic_store(&sh->go, 1); /* the orphan emptied, its region goes to the new connection */
	assert_int_equal(h_chan_recv(&sch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'a'); /* the subscriber's agent stopped before it started the region */
	assert_int_equal(h_chan_recv(&pch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'f'); /* the publisher's too: its publishing thread prepares it */
	usleep(200000);
	assert_int_equal(kill(sub, SIGKILL), 0);
	assert_int_equal(h_wait(sub, WAIT_MS), 128 + SIGKILL);
	usleep(300000); /* the connection leaves; the publisher lets it go */
	k = h_pools(broker.domain, st, 16);
	assert_int_equal(k, 1);
	assert_string_equal(st[0].topic, "stale");
	assert_int_equal(st[0].bad_returns, 0);
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_chan_send(&pch[1], "o", 1), 0);
	assert_int_equal(h_wait(pub, WAIT_MS), 0);
	for (int i = 0; i < 2; i++) {
		h_chan_close(&sch[i]);
		h_chan_close(&pch[i]);
	}
	h_broker_stop(&broker);
}

/* ---- services: a client slow to start its response connection ----------- */

/* A client whose agent stops at the first push after its open (the
 * server's response publisher connecting), once it sent one request; on
 * the gate it goes on and the client takes the response. */
static int slow_client_child(void *a)
{
	struct h_chan *ch = a; /* [0] notes, [1] gate */
	takt_node *n = h_node(broker.domain, "slow-client");
	struct takt_request_info info;
	const void *x;
	takt_client *c;
	int64_t id = 0;
	void *p;
	int r = -EAGAIN;

	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "slow", .max_request = 8}, &c) == 0);
	main_tid = (pid_t)syscall(SYS_gettid);
	takt__fault_hook = hook;
	arm_agent("agent_push", &ch[0], &ch[1]);
	H_CHECK(takt_client_loan(c, 8, &p) == 0);
	for (int i = 0; i < 500 && (id = takt_client_send(c, p)) == -ENOTCONN; i++)
		usleep(10000);
	H_CHECK(id == 1);
	for (int i = 0; i < 1000 && (r = takt_client_take(c, &x, &info)) == -EAGAIN; i++)
		usleep(10000);
	H_CHECK(r == 0 && info.request_id == 1);
	takt_client_release(c, x);
	takt_client_close(c);
	takt_node_close(n);
	return 0;
}

/* The server's response publisher for a client is answered after the
 * confirm timeout while the client's agent has not started the
 * connection: the client is slow, not gone. A respond meanwhile says
 * -EAGAIN; once the client's agent goes on, the respond reaches it (it
 * said -ECONNRESET for good: the client taken for gone). */
static void test_faults_service_client_slow_to_connect_is_not_gone(void **state)
{
	struct takt_request_info info;
	struct h_chan ch[2];
	takt_server *srv;
	takt_node *n;
	const void *q;
	void *x;
	pid_t cl;
	char c;
	int r = -1;

	(void)state;
	assert_int_equal(h_broker_start(&broker, "slowcl", "[socket]\nconfirm_timeout_ms = 100\n"), 0);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	n = h_node(broker.domain, "slow-server");
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "slow", .max_response = 8}, &srv),
			 0);
	cl = h_spawn(slow_client_child, ch);
	for (int i = 0; i < 1000 && (r = takt_server_take(srv, &q, &info)) == -EAGAIN; i++)
		takt_server_wait(srv, 10000000);
	assert_int_equal(r, 0); /* its response publisher opened after the confirm timeout */
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'a');
	assert_int_equal(takt_server_loan(srv, &info, 8, &x), 0);
	memcpy(x, "response", 8);
	assert_int_equal(takt_server_respond(srv, &info, x), -EAGAIN); /* not connected yet */
	assert_int_equal(takt_server_take(srv, &q, &(struct takt_request_info){0}), -EAGAIN); /* a sweep */
	assert_int_equal(h_chan_send(&ch[1], "o", 1), 0); /* its agent goes on */
	for (int i = 0; i < 500; i++) {
		assert_int_equal(takt_server_loan(srv, &info, 8, &x), 0);
		memcpy(x, "response", 8);
		if ((r = takt_server_respond(srv, &info, x)) != -EAGAIN)
			break;
		usleep(10000);
	}
	assert_int_equal(r, 0);
	assert_int_equal(h_wait(cl, WAIT_MS), 0);
	takt_server_release(srv, q);
	takt_server_close(srv);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&broker);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_faults_publisher_prepares_while_agent_stalls),
		cmocka_unit_test(test_faults_agent_never_writes_a_reused_connection),
		cmocka_unit_test(test_faults_open_waits_for_history),
		cmocka_unit_test(test_faults_crash_windows),
		cmocka_unit_test(test_faults_notifier_killed_mid_push),
		cmocka_unit_test(test_faults_subscriber_parks_while_connection_arrives),
		cmocka_unit_test(test_faults_history_into_late_connection_wakes_parked_subscriber),
		cmocka_unit_test(test_faults_let_release_never_joins_a_started_run),
		cmocka_unit_test(test_faults_reclaim_drains_only_a_started_ring),
		cmocka_unit_test(test_faults_service_client_slow_to_connect_is_not_gone),
	};

#ifndef TAKT_FAULTS
	printf("skipped: needs a build with -DTAKT_FAULTS=ON (scripts/test --full runs one)\n");
	return 77;
#endif
	return cmocka_run_group_tests_name("faults", tests, setup, teardown);
}
