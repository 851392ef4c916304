/* test_wakeups.c - wake-ups survive dying and slow peers; a timed-out
 * control call does not break the node.
 *
 * The publisher's eventfd write is the one libc call on the data path, so
 * this binary interposes write(): a child arms it to die (SIGKILL) or to
 * stall before an eventfd write, which puts a real process exactly in the
 * windows the wake-up protocol must survive (libipc/sub.c, P0-P3). It also
 * interposes recvmsg(): a child can hold its node's agent on a push it just
 * received, so the publisher delivers into a connection whose eventfd it
 * does not have yet (G0, libipc/node.c).
 */
#include "harness.h"
#include "proto.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

static struct h_broker broker;

/* ---- the interposer ------------------------------------------------------ */

enum { W_PASS = 0, W_DIE, W_STALL };
static volatile int write_mode; /* set in a child only, before the call */
static int write_stall_ms;
static int write_note_fd = -1; /* W_STALL: a byte 'w' here once inside the write */

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool is_eventfd(int fd)
{
	char path[64], link[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return false;
	link[n] = 0;
	return strcmp(link, "anon_inode:[eventfd]") == 0;
}

/* libtakt-ipc's calls to write() bind to this definition (the executable
 * comes first in symbol lookup). */
ssize_t write(int fd, const void *buf, size_t n)
{
	if (write_mode != W_PASS && n == sizeof(uint64_t) && is_eventfd(fd)) {
		if (write_mode == W_DIE)
			kill(getpid(), SIGKILL); /* between taking `parked` and waking it */
		if (write_note_fd >= 0 && syscall(SYS_write, write_note_fd, "w", 1) != 1)
			return -1;
		sleep_ms(write_stall_ms);
	}
	return syscall(SYS_write, fd, buf, n);
}

/* Push gate: with gate_note_fd >= 0, the first push the agent receives is
 * announced ('p') and held until a byte arrives on gate_wait_fd. */
static int gate_note_fd = -1, gate_wait_fd = -1;

ssize_t recvmsg(int fd, struct msghdr *mh, int flags)
{
	ssize_t n = syscall(SYS_recvmsg, fd, mh, flags);
	int note = gate_note_fd;
	char c;

	if (n > 0 && note >= 0 && mh->msg_iovlen > 0 && proto_is_push(mh->msg_iov[0].iov_base, n)) {
		gate_note_fd = -1;
		if (syscall(SYS_write, note, "p", 1) != 1 || syscall(SYS_read, gate_wait_fd, &c, 1) != 1)
			return -1;
	}
	return n;
}

/* ---- tests --------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "wakeups", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

struct pub_args {
	const char *topic;
	struct h_chan *ch; /* [0] child -> parent, [1] parent -> child */
	int mode;
	int stall_ms;
};

/* Opens a publisher, says 'r', waits for 'g', publishes one sample with the
 * interposer armed, says 'd', and waits to be killed. */
static int pub_child(void *a)
{
	struct pub_args *pa = a;
	struct takt_pub_opts po = {.topic = pa->topic, .max_payload = 8};
	takt_node *n = h_node(broker.domain, "waker");
	uint64_t one = 1;
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&pa->ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&pa->ch[1], &c, 1, WAIT_MS) == 0);
	write_stall_ms = pa->stall_ms;
	write_note_fd = pa->ch[0].wr;
	write_mode = pa->mode;
	H_CHECK(takt_pub_send(p, &one, sizeof(one)) == 1);
	write_mode = W_PASS;
	H_CHECK(h_chan_send(&pa->ch[0], "d", 1) == 0);
	pause();
	return 0;
}

static int fd_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, timeout_ms);
}

/* A publisher killed after it took the subscriber's parked flag, before
 * its eventfd write: the broker wakes the subscriber (it saw the death),
 * which then takes the sample the dead publisher pushed. */
static void test_wakeups_publisher_dies_in_notify(void **state)
{
	struct takt_sub_opts so = {.topic = "die", .queue_depth = 4};
	struct h_chan ch[2];
	struct pub_args pa = {.topic = "die", .ch = ch, .mode = W_DIE};
	takt_node *n = h_node(broker.domain, "sleeper");
	const uint64_t *x;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(pub_child, &pa);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(takt_sub_arm(s), 0); /* parked: the publisher must wake us */
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL); /* died in its write */
	if (fd_readable(takt_sub_fd(s), 10000) != 1)
		fail_msg("subscriber still asleep 10 s after its publisher died mid-notify");
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_int_equal(*x, 1);
	takt_sub_release(s, x);
	/* The broker's wake-up is cleared by the next arm: no spin after it. */
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), -EAGAIN);
	assert_int_equal(takt_sub_arm(s), 0);
	assert_int_equal(fd_readable(takt_sub_fd(s), 0), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
}

/* The publisher's eventfd write lands after the subscriber woke (polling),
 * took the sample and disarmed: that wake-up is stale. The next arm must
 * clear it, or a level-triggered epoll spins on empty takes until the next
 * publish. */
static void test_wakeups_stale_count_cleared_by_arm(void **state)
{
	struct takt_sub_opts so = {.topic = "stale", .queue_depth = 4};
	struct h_chan ch[2];
	struct pub_args pa = {.topic = "stale", .ch = ch, .mode = W_STALL, .stall_ms = 300};
	takt_node *n = h_node(broker.domain, "poller");
	const uint64_t *x;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(pub_child, &pa);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(takt_sub_arm(s), 0);
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	/* The publisher took our parked flag and stalls in its write. */
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'w');
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_int_equal(*x, 1);
	takt_sub_release(s, x);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0); /* the late write landed */
	assert_int_equal(c, 'd');
	assert_int_equal(takt_sub_arm(s), 0);
	if (fd_readable(takt_sub_fd(s), 0) != 0)
		fail_msg("armed with nothing to take, yet the eventfd is readable: a stale wake-up");
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
}

/* The publisher's node holds the push of a new connection (its agent is
 * stalled on it, past the broker's confirmation bound, so the subscriber's
 * open returned): the connection needs the subscriber's segment, which
 * comes with the push, so publish does not deliver into it yet, and costs
 * nothing for it. Once the agent has the push, the next publish delivers
 * and wakes the parked subscriber. */
static int gated_pub_child(void *a)
{
	struct h_chan *ch = a; /* [0] to parent, [1] from parent, [2] the gate */
	struct takt_pub_opts po = {.topic = "gated", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "gated");
	uint64_t v = 1;
	takt_pub *p;
	int r = 0;
	char c;

	gate_wait_fd = ch[2].rd;
	gate_note_fd = ch[0].wr;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
	H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 0); /* not delivered: the push is held */
	H_CHECK(h_chan_send(&ch[0], "d", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0); /* the gate is open */
	for (int i = 0; i < 10000 && r == 0; i++) { /* the agent handles the push meanwhile */
		v++;
		r = takt_pub_send(p, &v, sizeof(v));
		if (r == 0)
			usleep(1000);
	}
	H_CHECK(r == 1);
	H_CHECK(h_chan_send(&ch[0], "e", 1) == 0);
	pause();
	return 0;
}

static void test_wakeups_push_after_first_publish(void **state)
{
	struct takt_sub_opts so = {.topic = "gated", .queue_depth = 4};
	struct h_chan ch[3];
	takt_node *n = h_node(broker.domain, "gated-sub");
	const uint64_t *x;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_chan_open(&ch[i]), 0);
	pid = h_spawn(gated_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'r');
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0); /* the agent holds the push */
	assert_int_equal(c, 'p');
	assert_int_equal(takt_sub_arm(s), 0); /* parked */
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'd');
	/* Nothing delivered, nobody woken. */
	assert_int_equal(fd_readable(takt_sub_fd(s), 200), 0);
	assert_int_equal(h_chan_send(&ch[2], "o", 1), 0); /* let the agent go on */
	assert_int_equal(h_chan_send(&ch[1], "h", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, 'e');
	if (fd_readable(takt_sub_fd(s), 10000) != 1)
		fail_msg("subscriber still asleep 10 s after a publish delivered to it");
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_true(*x >= 2); /* the first publish was delivered to nobody */
	takt_sub_release(s, x);
	/* The agent's wake-up is accounted for: the next arm leaves no count. */
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), -EAGAIN);
	assert_int_equal(takt_sub_arm(s), 0);
	assert_int_equal(fd_readable(takt_sub_fd(s), 0), 0);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	takt_node_close(n);
	for (int i = 0; i < 3; i++)
		h_chan_close(&ch[i]);
}

/* A control call that times out (the broker is stopped) returns
 * -ETIMEDOUT; its late reply must not answer the next call, and the port
 * the broker opened for it late is closed again. */
/* ---- P1L: a light publisher and a subscriber that parks ------------------ */

struct light_shared {
	_Atomic uint64_t published; /* by the publisher child: its last value */
	_Atomic uint64_t taken;     /* by the subscriber (parent): its last value */
	_Atomic int stage;          /* child: 1 bursts done */
	_Atomic int phase;          /* parent: 1 polling, 2 parked */
};

static void spin_us(unsigned us)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((uint64_t)(b.tv_sec - a.tv_sec) * 1000000 + (uint64_t)(b.tv_nsec - a.tv_nsec) / 1000 < us);
}

static bool light_wait_for(_Atomic int *w, int v)
{
	for (int i = 0; atomic_load(w) != v; i++) {
		if (i >= 5000) /* 5 s */
			return false;
		sleep_ms(1);
	}
	return true;
}

/* Bursts of 1..250 samples with random gaps inside and between them (so
 * the subscriber parks now while we are fenced, now while we are light),
 * each burst once the last was taken; then 1000 to a subscriber that
 * polls (kept under its queue depth); then one more to it parked. */
static int light_pub_child(void *a)
{
	struct light_shared *ls = a;
	struct takt_pub_opts po = {.topic = "light", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "light-pub");
	unsigned seed = 12345;
	uint64_t v = 0;
	takt_pub *p;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (int burst = 0; burst < 300; burst++) {
		unsigned len = 1 + rand_r(&seed) % 250;

		for (unsigned i = 0; i < len; i++) {
			v++;
			H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 1);
			atomic_store(&ls->published, v);
			if (rand_r(&seed) % 64 == 0)
				spin_us(rand_r(&seed) % 50);
		}
		if (burst == 299) /* after its last store of published: the parent stops waiting at it */
			atomic_store(&ls->stage, 1);
		for (int i = 0; atomic_load(&ls->taken) != v; i++) {
			H_CHECK(i < 20000); /* 2 s */
			spin_us(100);
		}
		spin_us(rand_r(&seed) % 200);
	}
	H_CHECK(light_wait_for(&ls->phase, 1));
	for (int i = 0; i < 1000; i++) {
		/* paced below the queue depth: nothing dropped, nobody parks */
		for (int k = 0; v - atomic_load(&ls->taken) >= 200; k++) {
			H_CHECK(k < 20000); /* 2 s */
			spin_us(100);
		}
		v++;
		H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 1);
		atomic_store(&ls->published, v);
	}
	H_CHECK(light_wait_for(&ls->phase, 2));
	sleep_ms(20); /* it is asleep by now */
	v++;
	H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 1);
	atomic_store(&ls->published, v);
	H_CHECK(light_wait_for(&ls->phase, 3));
	takt_node_close(n);
	return 0;
}

/* Takes everything there is; each sample must follow the last. */
static void light_drain(takt_sub *s, struct light_shared *ls, uint64_t *last)
{
	struct takt_sample_info info;
	const void *x;

	while (takt_sub_take(s, &x, &info) == 0) {
		uint64_t v;

		memcpy(&v, x, sizeof(v));
		takt_sub_release(s, x);
		assert_int_equal(v, *last + 1);
		*last = v;
		atomic_store(&ls->taken, v);
	}
}

/* A publisher that saw no subscriber park for a while stops fencing before
 * its park loads (light, P1L); a subscriber that then parks issues the
 * fence for it (membarrier) and must still be woken by every sample: real
 * processes, bursts with random gaps so parks land in light and fenced
 * publishes alike, every wait bounded (2 s, far beyond any gap). Then,
 * deterministically: after 1000 samples to a polling subscriber the
 * publisher is light (the broker's pool stats say so, where the kernel has
 * membarrier), the subscriber parks, and one more sample wakes it. */
static void test_wakeups_light_publisher_wakes_parking_subscriber(void **state)
{
	struct takt_sub_opts so = {.topic = "light", .queue_depth = 256};
	struct light_shared *ls;
	struct msg_status_reply st;
	struct proto_pool_stat ps[4];
	unsigned seed = 777;
	uint64_t last = 0, waits = 0, target;
	takt_node *n;
	takt_sub *s;
	pid_t pid;
	int r, np;

	(void)state;
	ls = mmap(NULL, sizeof(*ls), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(ls != MAP_FAILED);
	n = h_node(broker.domain, "light-sub");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(light_pub_child, ls);
	while (!atomic_load(&ls->stage) || last != atomic_load(&ls->published)) {
		light_drain(s, ls, &last);
		if (last != atomic_load(&ls->published) || atomic_load(&ls->stage))
			continue;
		r = takt_sub_wait(s, 2000000000ll);
		if (r == -ETIMEDOUT && atomic_load(&ls->published) > last)
			fail_msg("asleep with %llu sample(s) waiting after %llu: a wake-up was lost",
				 (unsigned long long)(atomic_load(&ls->published) - last), (unsigned long long)last);
		if (r == -ETIMEDOUT && waitpid(pid, NULL, WNOHANG) == pid)
			fail_msg("the publisher gave up after %llu: its samples were not taken within 2 s "
				 "(a wake-up was lost; the broker woke us when it died)", (unsigned long long)last);
		assert_true(r == 0 || r == -ETIMEDOUT || r == -EINTR);
		waits++;
		if (rand_r(&seed) % 4 == 0)
			spin_us(rand_r(&seed) % 50); /* slow to start: the publisher may go light */
	}
	print_message("%llu samples in bursts, %llu waits\n", (unsigned long long)last, (unsigned long long)waits);
	/* 1000 to a subscriber that polls: the publisher goes light. */
	target = last + 1000;
	atomic_store(&ls->phase, 1);
	for (int i = 0; last < target; i++) {
		assert_true(i < 5000000); /* bounded */
		light_drain(s, ls, &last);
	}
	assert_int_equal(h_status(broker.domain, &st), 0);
	np = h_pools(broker.domain, ps, 4);
	assert_int_equal(np, 1);
	if (st.limits.flags & TAKT_LIM_MEMBARRIER)
		assert_int_equal(ps[0].light, 1);
	else
		assert_int_equal(ps[0].light, 0); /* no membarrier: it never goes light */
	/* Parked against a light publisher: the next sample still wakes us. */
	atomic_store(&ls->phase, 2);
	r = takt_sub_wait(s, 2000000000ll);
	if (r != 0)
		fail_msg("a subscriber parked against a light publisher was not woken (%d)", r);
	light_drain(s, ls, &last);
	assert_int_equal(last, target + 1);
	atomic_store(&ls->phase, 3);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	munmap(ls, sizeof(*ls));
	takt_node_close(n);
}

static void test_wakeups_timed_out_call_leaves_node_usable(void **state)
{
	struct takt_node_opts no = {.domain = broker.domain, .name = "impatient", .timeout_ns = 300000000};
	struct takt_pub_opts po = {.topic = "late", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "late", .queue_depth = 4};
	struct msg_status_reply st;
	const uint64_t *x;
	uint64_t v = 7;
	takt_node *n;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(takt_node_open(&no, &n), 0);
	assert_int_equal(kill(broker.pid, SIGSTOP), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), -ETIMEDOUT);
	assert_int_equal(kill(broker.pid, SIGCONT), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	/* The late publisher is undone: none left on the topic. */
	for (int i = 0;; i++) {
		assert_int_equal(h_status(broker.domain, &st), 0);
		if (st.n_pubs == 0)
			break;
		if (i == 1000)
			fail_msg("the publisher opened for a timed-out call is still open");
		sleep_ms(10);
	}
	assert_int_equal(st.n_subs, 1);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_int_equal(*x, 7);
	takt_sub_release(s, x);
	takt_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_wakeups_publisher_dies_in_notify),
		cmocka_unit_test(test_wakeups_stale_count_cleared_by_arm),
		cmocka_unit_test(test_wakeups_push_after_first_publish),
		cmocka_unit_test(test_wakeups_timed_out_call_leaves_node_usable),
		cmocka_unit_test(test_wakeups_light_publisher_wakes_parking_subscriber),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
