/* test_pubsub.c - publish/subscribe across real processes with a real broker. */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define N_SAMPLES 100000
#define WAIT_MS 60000

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "pubsub", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

struct sample {
	uint64_t seq;
	uint32_t pub_tag;
	uint32_t check;
};

/* Loans with a bounded retry: a full pool means subscribers lag. */
static int loan_retry(takt_pub *p, size_t size, void **out)
{
	for (int i = 0; i < 2000000; i++) {
		int r = takt_pub_loan(p, size, out);

		if (r != -ENOBUFS)
			return r;
		sched_yield();
	}
	return -ETIMEDOUT;
}

struct pub_args {
	unsigned tag, n_subs_expected;
	struct h_chan *go;
};

static int pub_child(void *a)
{
	struct pub_args *pa = a;
	struct takt_pub_opts po = {.topic = "stream", .type_name = "test.Sample",
				   .max_payload = sizeof(struct sample)};
	takt_node *n = h_node(broker.domain, "pub");
	takt_pub *p;
	char go;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_recv(pa->go, &go, 1, WAIT_MS) == 0);
	for (uint64_t i = 1; i <= N_SAMPLES; i++) {
		struct sample *s;

		H_CHECK(loan_retry(p, sizeof(*s), (void **)&s) == 0);
		*s = (struct sample){.seq = i, .pub_tag = pa->tag, .check = (uint32_t)(i * 2654435761u)};
		H_CHECK(takt_pub_publish(p, s) == (int)pa->n_subs_expected);
	}
	takt_node_close(n);
	return 0;
}

struct sub_args {
	unsigned n_pubs;
	struct h_chan *ready;
};

/* Checks count, content and per-publisher order of everything received. */
static int sub_child(void *a)
{
	struct sub_args *sa = a;
	struct takt_sub_opts so = {.topic = "stream", .type_name = "test.Sample", .queue_depth = 128,
				   .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(broker.domain, "sub");
	uint64_t next[8] = {0}, total = 0;
	uint64_t pub_of_tag[8] = {0};
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(sa->ready, "r", 1) == 0);
	while (total < (uint64_t)N_SAMPLES * sa->n_pubs) {
		const struct sample *x;
		struct takt_sample_info info;

		H_CHECK(takt_sub_wait(s, 20000000000LL) == 0);
		while (takt_sub_take(s, (const void **)&x, &info) == 0) {
			H_CHECK(x->pub_tag < 8 && x->seq == info.seq && info.size == sizeof(*x));
			H_CHECK(x->check == (uint32_t)(x->seq * 2654435761u));
			H_CHECK(x->seq == ++next[x->pub_tag]); /* per-publisher order, no gap */
			H_CHECK(!pub_of_tag[x->pub_tag] || pub_of_tag[x->pub_tag] == info.publisher_id);
			pub_of_tag[x->pub_tag] = info.publisher_id;
			takt_sub_release(s, x);
			total++;
		}
	}
	H_CHECK(takt_sub_dropped(s) == 0);
	takt_node_close(n);
	return 0;
}

static void run_fan(unsigned n_pubs, unsigned n_subs)
{
	struct h_chan go, ready;
	struct pub_args pa[8];
	struct sub_args sa = {.n_pubs = n_pubs, .ready = &ready};
	pid_t pubs[8], subs[8];
	char c;

	assert_int_equal(h_chan_open(&go), 0);
	assert_int_equal(h_chan_open(&ready), 0);
	for (unsigned i = 0; i < n_pubs; i++) {
		pa[i] = (struct pub_args){.tag = i, .n_subs_expected = n_subs, .go = &go};
		pubs[i] = h_spawn(pub_child, &pa[i]);
	}
	for (unsigned i = 0; i < n_subs; i++)
		subs[i] = h_spawn(sub_child, &sa);
	for (unsigned i = 0; i < n_subs; i++)
		assert_int_equal(h_chan_recv(&ready, &c, 1, WAIT_MS), 0);
	for (unsigned i = 0; i < n_pubs; i++)
		assert_int_equal(h_chan_send(&go, "g", 1), 0);
	for (unsigned i = 0; i < n_subs; i++)
		assert_int_equal(h_wait(subs[i], 120000), 0);
	for (unsigned i = 0; i < n_pubs; i++)
		assert_int_equal(h_wait(pubs[i], 120000), 0);
	h_chan_close(&go);
	h_chan_close(&ready);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

static void test_pubsub_one_to_four(void **state)
{
	(void)state;
	run_fan(1, 4);
}

static void test_pubsub_four_to_one(void **state)
{
	(void)state;
	run_fan(4, 1);
}

/* A child that publishes `count` samples on `topic` and exits. */
struct burst_args {
	const char *topic;
	unsigned count, history;
	size_t size;
};

static int burst_child(void *a)
{
	struct burst_args *ba = a;
	struct takt_pub_opts po = {.topic = ba->topic, .max_payload = ba->size, .history = ba->history};
	takt_node *n = h_node(broker.domain, "burst");
	takt_pub *p;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t i = 1; i <= ba->count; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) >= 0);
	takt_node_close(n);
	return 0;
}

static unsigned take_all(takt_sub *s, uint64_t *seqs, unsigned max)
{
	unsigned n = 0;
	const uint64_t *x;
	struct takt_sample_info info;

	while (n < max && takt_sub_take(s, (const void **)&x, &info) == 0) {
		assert_int_equal(*x, info.seq);
		seqs[n++] = info.seq;
		takt_sub_release(s, x);
	}
	return n;
}

static void overflow_case(enum takt_overflow ov, uint64_t first_expected)
{
	struct takt_sub_opts so = {.topic = ov == TAKT_OVERFLOW_REJECT ? "reject" : "dropold",
				   .queue_depth = 8, .overflow = ov};
	struct burst_args ba = {.topic = so.topic, .count = 1000, .size = 8};
	takt_node *n = h_node(broker.domain, "sub");
	uint64_t seqs[16];
	takt_sub *s;

	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_wait(h_spawn(burst_child, &ba), WAIT_MS), 0);
	/* The publisher has left; what it delivered stays takeable. */
	assert_int_equal(take_all(s, seqs, 16), 8);
	for (unsigned i = 0; i < 8; i++)
		assert_int_equal(seqs[i], first_expected + i);
	assert_int_equal(takt_sub_dropped(s), 992);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

static void test_pubsub_drop_oldest_counts_exactly(void **state)
{
	(void)state;
	overflow_case(TAKT_OVERFLOW_DROP_OLDEST, 993);
}

static void test_pubsub_reject_counts_exactly(void **state)
{
	(void)state;
	overflow_case(TAKT_OVERFLOW_REJECT, 1);
}

/* A late joiner receives exactly the history it asked for, then live data. */
static int history_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "hist", .max_payload = 8, .history = 5};
	takt_node *n = h_node(broker.domain, "histpub");
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t i = 1; i <= 10; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 0); /* nobody subscribed yet */
	H_CHECK(h_chan_send(&ch[0], "p", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
	uint64_t eleven = 11;
	H_CHECK(takt_pub_send(p, &eleven, sizeof(eleven)) == 1);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
	takt_node_close(n);
	return 0;
}

static void test_pubsub_late_joiner_history(void **state)
{
	struct h_chan ch[2];
	struct takt_sub_opts so = {.topic = "hist", .queue_depth = 16, .history = 3};
	uint64_t seqs[16];
	takt_node *n;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(history_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	n = h_node(broker.domain, "late");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(take_all(s, seqs, 16), 3);
	assert_int_equal(seqs[0], 8);
	assert_int_equal(seqs[1], 9);
	assert_int_equal(seqs[2], 10);
	assert_int_equal(h_chan_send(&ch[1], "1", 1), 0);
	assert_int_equal(takt_sub_wait(s, 10000000000LL), 0);
	assert_int_equal(take_all(s, seqs, 16), 1);
	assert_int_equal(seqs[0], 11);
	assert_int_equal(h_chan_send(&ch[1], "2", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* Offset of p inside the mapping of a publisher's pool segment (a memfd
 * named takt.<domain>.pub<port>, shown as /memfd:takt.<domain>.pub<port>
 * in maps), or -1. */
static long shm_offset(const void *p)
{
	char needle[128], line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	long off = -1;

	snprintf(needle, sizeof(needle), "/memfd:takt.%s.pub", broker.domain);
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, fileoff;

		if (!strstr(line, needle) || sscanf(line, "%lx-%lx %*s %lx", &lo, &hi, &fileoff) != 3)
			continue;
		if ((unsigned long)p >= lo && (unsigned long)p < hi)
			off = (long)((unsigned long)p - lo + fileoff);
	}
	if (f)
		fclose(f);
	return off;
}

struct zc_args {
	struct h_chan *ch;
	size_t size;
};

static int zc_pub_child(void *a)
{
	struct zc_args *za = a;
	struct takt_pub_opts po = {.topic = "zc", .max_payload = za->size};
	takt_node *n = h_node(broker.domain, "zcpub");
	takt_pub *p;
	uint8_t *buf;
	long off;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_recv(&za->ch[1], &c, 1, WAIT_MS) == 0);
	H_CHECK(takt_pub_loan(p, za->size, (void **)&buf) == 0);
	for (size_t i = 0; i < za->size; i++)
		buf[i] = (uint8_t)(i * 7 + (i >> 12));
	off = shm_offset(buf);
	H_CHECK(off > 0);
	H_CHECK(h_chan_send(&za->ch[0], &off, sizeof(off)) == 0);
	H_CHECK(takt_pub_publish(p, buf) == 1);
	H_CHECK(h_chan_recv(&za->ch[1], &c, 1, WAIT_MS) == 0);
	takt_node_close(n);
	return 0;
}

static void zero_copy_case(size_t size)
{
	struct h_chan ch[2];
	struct zc_args za = {.ch = ch, .size = size};
	struct takt_sub_opts so = {.topic = "zc", .queue_depth = 4};
	struct takt_sample_info info;
	takt_node *n = h_node(broker.domain, "zcsub");
	const uint8_t *buf;
	long pub_off;
	takt_sub *s;
	pid_t pid;

	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(zc_pub_child, &za);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_chan_send(&ch[1], "s", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &pub_off, sizeof(pub_off), WAIT_MS), 0);
	assert_int_equal(takt_sub_wait(s, 10000000000LL), 0);
	assert_int_equal(takt_sub_take(s, (const void **)&buf, &info), 0);
	assert_int_equal(info.size, size);
	/* Same file, same offset: the subscriber reads the bytes the publisher wrote. */
	assert_int_equal(shm_offset(buf), pub_off);
	for (size_t i = 0; i < size; i++)
		if (buf[i] != (uint8_t)(i * 7 + (i >> 12)))
			fail_msg("byte %zu differs", i);
	takt_sub_release(s, buf);
	assert_int_equal(h_chan_send(&ch[1], "d", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

static void test_pubsub_zero_copy_pointer(void **state)
{
	(void)state;
	zero_copy_case(64);
}

static void test_pubsub_4mib_sample_intact(void **state)
{
	(void)state;
	zero_copy_case(4u << 20);
}

static void test_pubsub_refusals(void **state)
{
	takt_node *n = h_node(broker.domain, "refuse");
	struct takt_pub_opts po = {.topic = "typed", .type_name = "A.Pose", .max_payload = 16};
	struct takt_sub_opts so = {.topic = "typed", .type_name = "A.Imu"};
	takt_pub *p, *p2;
	takt_sub *s;
	void *buf;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), -EPROTOTYPE);
	assert_int_equal(takt_pub_loan(p, 17, &buf), -EMSGSIZE);
	po.topic = "bad topic!";
	assert_int_equal(takt_pub_open(n, &po, &p2), -EINVAL);
	po.topic = "";
	assert_int_equal(takt_pub_open(n, &po, &p2), -EINVAL);
	po.topic = "big";
	po.max_payload = (size_t)1 << 40;
	assert_int_equal(takt_pub_open(n, &po, &p2), -EMSGSIZE);
	assert_int_equal(takt_pub_publish(p, &po), -EINVAL); /* not a loan */
	takt_node_close(n);
}

static int event_child(void *a)
{
	struct h_chan *ch = a;
	takt_node *n = h_node(broker.domain, "evn");
	takt_event *ev;
	char c;

	H_CHECK(takt_event_open(n, "kick", &ev) == 0);
	H_CHECK(h_chan_recv(ch, &c, 1, WAIT_MS) == 0);
	for (uint64_t id = 1; id <= 3; id++)
		H_CHECK(takt_event_notify(ev, id * 100) == 0);
	takt_node_close(n);
	return 0;
}

static void test_pubsub_event_across_processes(void **state)
{
	takt_node *n = h_node(broker.domain, "evl");
	struct h_chan ch;
	takt_event *ev;
	uint64_t id;
	pid_t pid;

	(void)state;
	assert_int_equal(h_chan_open(&ch), 0);
	assert_int_equal(takt_event_open(n, "kick", &ev), 0);
	assert_int_equal(takt_event_take(ev, &id), -EAGAIN);
	pid = h_spawn(event_child, &ch);
	assert_int_equal(h_chan_send(&ch, "n", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	for (uint64_t want = 100; want <= 300; want += 100) {
		assert_int_equal(takt_event_take(ev, &id), 0);
		assert_int_equal(id, want);
	}
	assert_int_equal(takt_event_take(ev, &id), -EAGAIN);
	h_chan_close(&ch);
	takt_node_close(n);
}

/* takt_sub_fd in the caller's own epoll: arm, sleep, wake on a publish
 * from another process, take; a busy (unarmed) subscriber's fd stays quiet. */
static int epoll_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "ep", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "ep-pub");
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t i = 1; i <= 3; i++) {
		H_CHECK(h_chan_recv(&ch[0], &c, 1, WAIT_MS) == 0);
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
	}
	H_CHECK(h_chan_recv(&ch[0], &c, 1, WAIT_MS) == 0);
	takt_node_close(n);
	return 0;
}

static void test_pubsub_own_epoll(void **state)
{
	struct takt_sub_opts so = {.topic = "ep", .queue_depth = 8};
	takt_node *n = h_node(broker.domain, "ep-sub");
	struct epoll_event ev = {.events = EPOLLIN};
	struct h_chan ch[1];
	uint64_t seqs[4];
	takt_sub *s;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	pid_t pid;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, takt_sub_fd(s), &ev), 0);
	pid = h_spawn(epoll_pub_child, ch);
	/* not armed: a publish does not make the fd readable */
	assert_int_equal(h_chan_send(&ch[0], "1", 1), 0);
	for (int i = 0; i < 200 && take_all(s, seqs, 4) == 0; i++)
		usleep(5000);
	assert_int_equal(epoll_wait(ep, &ev, 1, 50), 0);
	for (int round = 2; round <= 3; round++) {
		assert_int_equal(takt_sub_arm(s), 0); /* armed: the next publish wakes us */
		assert_int_equal(h_chan_send(&ch[0], "n", 1), 0);
		assert_int_equal(epoll_wait(ep, &ev, 1, 10000), 1);
		assert_int_equal(take_all(s, seqs, 4), 1);
		assert_int_equal(seqs[0], round);
		assert_int_equal(epoll_wait(ep, &ev, 1, 0), 0); /* the take drained it */
	}
	assert_int_equal(h_chan_send(&ch[0], "e", 1), 0);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	close(ep);
	takt_node_close(n);
	h_chan_close(&ch[0]);
}

/* Block: the publisher waits (bounded) for room, then counts the sample as
 * dropped for that subscriber; a subscriber that dies releases it at once. */
static void test_pubsub_block_is_bounded(void **state)
{
	struct takt_pub_opts po = {.topic = "blk", .max_payload = 8, .block_timeout_ns = 5000000};
	struct takt_sub_opts so = {.topic = "blk", .queue_depth = 4, .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(broker.domain, "blk");
	uint64_t seqs[16];
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	for (uint64_t i = 1; i <= 10; i++) /* nobody takes: 4 fit, 6 time out */
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), i <= 4 ? 1 : 0);
	assert_int_equal(takt_sub_dropped(s), 6);
	assert_int_equal(take_all(s, seqs, 16), 4);
	assert_int_equal(seqs[3], 4);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

static int blocking_sub_child(void *a)
{
	struct takt_sub_opts so = {.topic = "blk2", .queue_depth = 2, .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(broker.domain, "blk2-sub");
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(a, "r", 1) == 0);
	pause(); /* never takes; killed */
	return 0;
}

static void test_pubsub_block_released_by_dead_subscriber(void **state)
{
	struct takt_pub_opts po = {.topic = "blk2", .max_payload = 8, .block_timeout_ns = 60ull * 1000000000};
	takt_node *n = h_node(broker.domain, "blk2-pub");
	struct h_chan ch;
	struct timespec t0, t1;
	takt_pub *p;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	pid = h_spawn(blocking_sub_child, &ch);
	assert_int_equal(h_chan_recv(&ch, &c, 1, WAIT_MS), 0);
	for (uint64_t i = 1; i <= 2; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	/* The third publish blocks (60 s bound); the subscriber dies meanwhile. */
	if (fork() == 0) {
		usleep(200000);
		kill(pid, SIGKILL);
		_exit(0);
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	uint64_t three = 3;
	assert_int_equal(takt_pub_send(p, &three, sizeof(three)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 30); /* released by the death, not the 60 s bound */
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	takt_node_close(n);
	h_chan_close(&ch);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* Regression (review): a subscriber that leaves and a new one that gets the
 * same connection slot while the publisher stays must not inherit the old
 * ring position (it made the publisher steal live chunks). */
static void test_pubsub_sub_rejoin_reuses_conn(void **state)
{
	struct takt_pub_opts po = {.topic = "rejoin", .max_payload = 64};
	struct takt_sub_opts so = {.topic = "rejoin", .queue_depth = 16};
	takt_node *pn = h_node(broker.domain, "rejoin-pub"), *sn = h_node(broker.domain, "rejoin-sub");
	const uint64_t *held[16];
	uint64_t seqs[16];
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(takt_pub_open(pn, &po, &p), 0);
	assert_int_equal(takt_sub_open(sn, &so, &s), 0);
	for (uint64_t i = 1; i <= 5; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	assert_int_equal(take_all(s, seqs, 16), 5);
	takt_sub_close(s);
	assert_int_equal(takt_sub_open(sn, &so, &s), 0);
	for (uint64_t i = 6; i <= 45; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	for (unsigned n = 0; n < 16; n++) { /* the newest 16, held all at once */
		assert_int_equal(takt_sub_take(s, (const void **)&held[n], NULL), 0);
		assert_int_equal(*held[n], 30 + n);
	}
	assert_int_equal(takt_sub_dropped(s), 24);
	for (uint64_t i = 46; i <= 60; i++) /* must not overwrite what we hold */
		takt_pub_send(p, &i, sizeof(i));
	for (unsigned n = 0; n < 16; n++) {
		assert_int_equal(*held[n], 30 + n);
		takt_sub_release(s, held[n]);
	}
	takt_node_close(sn);
	takt_node_close(pn);
	assert_int_equal(h_wait_pools_full(broker.domain, 5000), 0);
}

/* Loans, held samples and history are limits of the domain's config,
 * not compile-time array sizes: with [limits] far above the old caps (32
 * loans, 64 held, 64 history), a publisher has 300 loans out at once, a
 * late joiner gets 1000 samples of history, and its subscriber holds all
 * 1000 at once; one more of each is refused with the documented error. */
static void test_pubsub_limits_beyond_old_caps(void **state)
{
	struct takt_pub_opts po = {.topic = "big", .max_payload = 8, .history = 1000};
	struct takt_sub_opts so = {.topic = "big", .queue_depth = 1024, .history = 1000};
	static void *loans[300];
	static const void *held[1000];
	struct takt_sample_info info;
	struct h_broker b;
	const void *x;
	void *extra;
	takt_node *n;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(h_broker_start(&b, "biglim",
					"[limits]\nheld_max = 1000\nloans_max = 300\nhistory_max = 1000\n"
					"queue_depth_max = 1024\n"), 0);
	n = h_node(b.domain, "big");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (int i = 0; i < 300; i++)
		assert_int_equal(takt_pub_loan(p, 8, &loans[i]), 0);
	assert_int_equal(takt_pub_loan(p, 8, &extra), -ENOBUFS); /* loans_max */
	for (uint64_t i = 0; i < 300; i++) {
		memcpy(loans[i], &i, sizeof(i));
		assert_int_equal(takt_pub_publish(p, loans[i]), 0); /* nobody yet: history only */
	}
	for (uint64_t i = 300; i < 1000; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	for (uint64_t i = 0; i < 1000; i++) {
		uint64_t v;

		assert_int_equal(takt_sub_take(s, &held[i], &info), 0);
		memcpy(&v, held[i], sizeof(v));
		assert_int_equal(v, i);
		assert_int_equal(info.seq, i + 1);
	}
	assert_int_equal(takt_sub_take(s, &x, &info), -ENOBUFS); /* held_max */
	for (int i = 0; i < 1000; i++)
		takt_sub_release(s, held[i]);
	assert_int_equal(takt_sub_take(s, &x, &info), -EAGAIN);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* Publishers and subscribers per topic are limits of the config too: the
 * registry's connection lists are tables sized by them. 100 subscribers
 * of one publisher (the old cap was 64) each get its sample; 40 publishers
 * (the old cap was 32) reach one subscriber. */
static void test_pubsub_per_topic_beyond_old_caps(void **state)
{
	struct takt_pub_opts po = {.topic = "wide", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "wide", .queue_depth = 64};
	static takt_sub *subs[100];
	static takt_pub *pubs[40];
	struct takt_sample_info info;
	struct h_broker b;
	const void *x;
	takt_node *n;
	uint64_t v = 42;

	(void)state;
	assert_int_equal(h_broker_start(&b, "wide",
					"[limits]\npublishers_per_topic = 40\nsubscribers_per_topic = 100\n"
					"connections = 4096\n"), 0);
	n = h_node(b.domain, "wide");
	assert_int_equal(takt_pub_open(n, &po, &pubs[0]), 0);
	for (int i = 0; i < 100; i++)
		assert_int_equal(takt_sub_open(n, &so, &subs[i]), 0);
	assert_int_equal(takt_sub_open(n, &so, &(takt_sub *){NULL}), -ENOSPC); /* the 101st */
	assert_int_equal(takt_pub_send(pubs[0], &v, sizeof(v)), 100);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(takt_sub_take(subs[i], &x, &info), 0);
		assert_int_equal(*(const uint64_t *)x, 42);
		takt_sub_release(subs[i], x);
	}
	for (int i = 1; i < 40; i++)
		assert_int_equal(takt_pub_open(n, &po, &pubs[i]), 0);
	for (int i = 0; i < 40; i++)
		assert_int_equal(takt_pub_send(pubs[i], &v, sizeof(v)), 100);
	for (int k = 0; k < 40; k++) {
		assert_int_equal(takt_sub_take(subs[99], &x, &info), 0);
		takt_sub_release(subs[99], x);
	}
	assert_int_equal(takt_sub_take(subs[99], &x, &info), -EAGAIN);
	takt_node_close(n);
	h_broker_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pubsub_one_to_four),
		cmocka_unit_test(test_pubsub_four_to_one),
		cmocka_unit_test(test_pubsub_drop_oldest_counts_exactly),
		cmocka_unit_test(test_pubsub_reject_counts_exactly),
		cmocka_unit_test(test_pubsub_late_joiner_history),
		cmocka_unit_test(test_pubsub_zero_copy_pointer),
		cmocka_unit_test(test_pubsub_4mib_sample_intact),
		cmocka_unit_test(test_pubsub_refusals),
		cmocka_unit_test(test_pubsub_event_across_processes),
		cmocka_unit_test(test_pubsub_sub_rejoin_reuses_conn),
		cmocka_unit_test(test_pubsub_own_epoll),
		cmocka_unit_test(test_pubsub_block_is_bounded),
		cmocka_unit_test(test_pubsub_block_released_by_dead_subscriber),
		cmocka_unit_test(test_pubsub_limits_beyond_old_caps),
		cmocka_unit_test(test_pubsub_per_topic_beyond_old_caps),
	};

	return cmocka_run_group_tests_name("pubsub", tests, setup, teardown);
}
