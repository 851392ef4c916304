/* test_restart.c - a domain without its broker, and brokers that restart.
 *
 * The broker is killed with SIGKILL while real clients run; what they
 * share must keep working without it and come back with the next one.
 */
#include "harness.h"
#include "layout.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void broker_kill(struct h_broker *b)
{
	assert_int_equal(kill(b->pid, SIGKILL), 0);
	assert_int_equal(h_wait(b->pid, 5000), 128 + SIGKILL);
	b->pid = 0;
}

struct stuck_sub {
	const char *domain;
	struct h_chan ready;
};

/* A blocking subscriber that never takes. */
static int stuck_sub_child(void *arg)
{
	struct stuck_sub *s = arg;
	struct takt_sub_opts so = {.topic = "blocked", .queue_depth = 4, .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(s->domain, "stuck");
	takt_sub *sub;

	H_CHECK(takt_sub_open(n, &so, &sub) == 0);
	H_CHECK(h_chan_send(&s->ready, "r", 1) == 0);
	pause();
	return 0;
}

/* While no broker runs, a publisher stops waiting for a blocking
 * subscriber that died: the subscriber's pidfd (which it handed the broker,
 * and the broker to the publisher with the connection) tells it, and no
 * broker needs to retire the connection. Each publish would otherwise wait
 * its whole block timeout, here 3 s. */
static void test_restart_dead_blocking_subscriber_seen_without_broker(void **state)
{
	struct takt_pub_opts po = {.topic = "blocked", .max_payload = 8, .block_timeout_ns = 3000000000ull};
	struct stuck_sub s;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	uint64_t t0, took;
	pid_t sub;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-pidfd", NULL), 0);
	s.domain = b.domain;
	assert_int_equal(h_chan_open(&s.ready), 0);
	sub = h_spawn(stuck_sub_child, &s);
	assert_int_equal(h_chan_recv(&s.ready, &c, 1, 10000), 0);
	n = h_node(b.domain, "pub");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (int i = 0; i < 4; i++) /* its queue is full */
		assert_int_equal(takt_pub_send(p, "12345678", 8), 1);
	broker_kill(&b);
	assert_int_equal(kill(sub, SIGKILL), 0);
	assert_int_equal(h_wait(sub, 5000), 128 + SIGKILL);
	t0 = mono_ns();
	for (int i = 0; i < 20; i++)
		assert_int_equal(takt_pub_send(p, "12345678", 8), 0); /* reached nobody, dropped */
	took = mono_ns() - t0;
	/* a liveness bound, not a speed figure: one block timeout is 3 s,
	 * twenty are 60 s */
	if (took >= 3000000000ull)
		fail_msg("20 publishes to a dead blocking subscriber took %llu ms without a broker",
			 (unsigned long long)(took / 1000000));
	takt_pub_close(p);
	takt_node_close(n);
	h_chan_close(&s.ready);
	h_broker_stop(&b);
}

/* Without a broker, attaching fails at once with -ENOENT and opens on a
 * node whose broker is gone with -ENOTCONN: nobody waits for a timeout. */
static void test_restart_no_broker_fails_at_once(void **state)
{
	struct h_broker b;
	takt_node *n, *n2 = NULL;
	takt_pub *p = NULL;
	takt_sub *s = NULL;
	uint64_t t0;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-none", NULL), 0);
	n = h_node(b.domain, "left");
	broker_kill(&b); /* leaves its socket behind */
	t0 = mono_ns();
	assert_int_equal(takt_node_open(&(struct takt_node_opts){.domain = b.domain}, &n2), -ENOENT);
	assert_null(n2);
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "t", .max_payload = 8}, &p), -ENOTCONN);
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "t"}, &s), -ENOTCONN);
	assert_null(p);
	assert_null(s);
	/* the node's own timeout is 10 s: well below one of them */
	assert_true(mono_ns() - t0 < 5000000000ull);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* HELLO with a descriptor: the client's own pidfd is taken; anything else
 * (another process's pidfd, an eventfd) is refused with -EINVAL and a log
 * line, costing only that connection. */
static int hello_with(const char *domain, int fd)
{
	struct msg_hello req = {.abi_version = TAKT_ABI_VERSION, .name = "raw"};
	struct msg_hello_reply rep;
	int sock, r, fds[TAKT_PROTO_MAX_FDS];
	unsigned nf = 0;

	assert_int_equal(proto_connect(domain, &sock), 0);
	proto_hdr_init(&req.hdr, MSG_HELLO, sizeof(req), 1);
	assert_int_equal(proto_send(sock, &req, sizeof(req), &fd, 1), 0);
	r = (int)proto_recv(sock, &rep, sizeof(rep), fds, TAKT_PROTO_MAX_FDS, &nf);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	close(sock);
	return r < (int)sizeof(rep.r) ? -EPROTO : rep.r.status;
}

static void test_restart_hello_takes_only_own_pidfd(void **state)
{
	struct h_broker b;
	int own = (int)syscall(SYS_pidfd_open, getpid(), 0);
	int other = (int)syscall(SYS_pidfd_open, getppid(), 0);
	int efd = eventfd(0, EFD_CLOEXEC);
	takt_node *n;

	(void)state;
	assert_true(own >= 0 && other >= 0 && efd >= 0);
	assert_int_equal(h_broker_start(&b, "rs-hello", NULL), 0);
	assert_int_equal(hello_with(b.domain, other), -EINVAL);
	assert_int_equal(hello_with(b.domain, efd), -EINVAL);
	assert_int_equal(hello_with(b.domain, own), 0);
	n = h_node(b.domain, "after"); /* the broker serves on */
	takt_node_close(n);
	close(own);
	close(other);
	close(efd);
	h_broker_stop(&b);
}

/* ---- a restarted broker adopts the live domain ------------------------ */

struct rsample {
	uint32_t who; /* 1: the publisher from before the restart, 2: one opened after */
	uint32_t pad;
	uint64_t seq;
};

#define RS_A 3000 /* samples before the kill */
#define RS_B 3000 /* while no broker runs */
#define RS_C 3000 /* after the restart */
#define RS_M 500  /* from a publisher opened after the restart */

struct rs_ctx {
	struct h_broker *b;
	struct h_chan to_pub, from_pub, sub_ready[2];
};

static struct rs_ctx rs;

/* Takes until it has want[1] samples of publisher 1 and want[2] of 2, each
 * publisher's in order without a gap from the first it got (first[w] is
 * the seq it must start at), the publisher ids consistent and different. */
static int take_all(takt_sub *s, const uint64_t want[3], const uint64_t first[3])
{
	uint64_t got[3] = {0}, next[3] = {0, first[1], first[2]}, id[3] = {0};

	while (got[1] < want[1] || got[2] < want[2]) {
		struct takt_sample_info info;
		const struct rsample *x;
		const void *p;
		int r = takt_sub_take(s, &p, &info);

		if (r == -EAGAIN) {
			H_CHECK(takt_sub_wait(s, 20000000000LL) == 0);
			continue;
		}
		H_CHECK(r == 0 && info.size == sizeof(*x));
		x = p;
		H_CHECK(x->who == 1 || x->who == 2);
		if (x->seq != next[x->who])
			fprintf(stderr, "publisher %u: seq %llu, want %llu\n", x->who, (unsigned long long)x->seq,
				(unsigned long long)next[x->who]);
		H_CHECK(x->seq == next[x->who]); /* per-publisher order, nothing lost, no duplicate */
		H_CHECK(!id[x->who] || id[x->who] == info.publisher_id);
		id[x->who] = info.publisher_id;
		next[x->who]++;
		got[x->who]++;
		takt_sub_release(s, p);
	}
	H_CHECK(id[1] != id[2]); /* ids stay unique across the restart */
	return 0;
}

static int rs_sub_child(void *arg)
{
	int which = (int)(intptr_t)arg;
	/* the first subscriber is there from the start; the second joins after
	 * the restart, when only C of publisher 1 is still to come */
	const uint64_t want[3] = {0, which ? RS_C : RS_A + RS_B + RS_C, RS_M};
	const uint64_t first[3] = {0, which ? RS_A + RS_B : 0, 0};
	struct takt_sub_opts so = {.topic = "rs/data", .queue_depth = 128, .overflow = TAKT_OVERFLOW_BLOCK};
	takt_node *n = h_node(rs.b->domain, which ? "sub-after" : "sub-before");
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&rs.sub_ready[which], "r", 1) == 0);
	H_CHECK(take_all(s, want, first) == 0);
	takt_sub_close(s);
	takt_node_close(n);
	return 0;
}

static int rs_send(takt_pub *p, uint32_t who, uint64_t from, uint64_t n)
{
	for (uint64_t i = from; i < from + n; i++) {
		struct rsample x = {.who = who, .seq = i};

		H_CHECK(takt_pub_send(p, &x, sizeof(x)) >= 1);
	}
	return 0;
}

static int rs_pub_child(void *arg)
{
	struct takt_pub_opts po = {.topic = "rs/data", .max_payload = sizeof(struct rsample), .block_timeout_ns = 20000000000ull};
	takt_node *n = h_node(rs.b->domain, "pub-before");
	uint64_t epoch = takt_node_epoch(n);
	takt_pub *p, *other = NULL;
	char c;

	(void)arg;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0);
	H_CHECK(rs_send(p, 1, 0, RS_A) == 0);
	H_CHECK(h_chan_send(&rs.from_pub, "a", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0); /* the broker is dead now */
	/* it noticed at once: calls fail, the data path goes on */
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/other", .max_payload = 8}, &other) == -ENOTCONN);
	H_CHECK(rs_send(p, 1, RS_A, RS_B) == 0);
	H_CHECK(h_chan_send(&rs.from_pub, "b", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0); /* a new broker adopted us */
	H_CHECK(takt_node_epoch(n) != epoch);
	H_CHECK(rs_send(p, 1, RS_A + RS_B, RS_C) == 0);
	/* and control calls work again */
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/other", .max_payload = 8}, &other) == 0);
	takt_pub_close(other);
	H_CHECK(h_chan_send(&rs.from_pub, "c", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0); /* everyone has everything */
	takt_pub_close(p);
	takt_node_close(n);
	return 0;
}

static void test_restart_broker_killed_under_load_is_adopted(void **state)
{
	struct msg_status_reply st0, st1;
	struct h_broker b;
	pid_t sub0, sub1, pub;
	takt_node *n;
	takt_pub *p2;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-adopt", NULL), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.to_pub), 0);
	assert_int_equal(h_chan_open(&rs.from_pub), 0);
	assert_int_equal(h_chan_open(&rs.sub_ready[0]), 0);
	assert_int_equal(h_chan_open(&rs.sub_ready[1]), 0);
	sub0 = h_spawn(rs_sub_child, (void *)(intptr_t)0);
	assert_int_equal(h_chan_recv(&rs.sub_ready[0], &c, 1, 10000), 0);
	pub = h_spawn(rs_pub_child, NULL);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 30000), 0);
	assert_int_equal(h_status(b.domain, &st0), 0);
	assert_int_equal(st0.adopted_epoch, 0);
	broker_kill(&b); /* under load: the subscriber is still taking */
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 30000), 0); /* B samples without a broker */
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_status(b.domain, &st1), 0);
	assert_true(st1.epoch != st0.epoch);
	assert_int_equal(st1.adopted_epoch, st0.epoch);
	assert_int_equal(st1.adopted_procs, 2);
	assert_int_equal(st1.adopted_pubs, 1);
	assert_int_equal(st1.adopted_subs, 1);
	assert_int_equal(st1.adopted_reclaimed, 0);
	assert_int_equal(st1.n_procs, 2);
	assert_int_equal(st1.n_conns, 1);
	/* a subscriber of the new broker meets the publisher of the old */
	sub1 = h_spawn(rs_sub_child, (void *)(intptr_t)1);
	assert_int_equal(h_chan_recv(&rs.sub_ready[1], &c, 1, 10000), 0);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 30000), 0);
	/* and a publisher of the new broker meets the subscriber of the old */
	n = h_node(b.domain, "pub-after");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/data", .max_payload = sizeof(struct rsample),
							    .block_timeout_ns = 20000000000ull}, &p2), 0);
	assert_int_equal(rs_send(p2, 2, 0, RS_M), 0);
	assert_int_equal(h_wait(sub0, 30000), 0);
	assert_int_equal(h_wait(sub1, 30000), 0);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_wait(pub, 30000), 0);
	takt_pub_close(p2);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(b.domain, 5000), 0);
	for (int i = 0; i < 2; i++)
		h_chan_close(&rs.sub_ready[i]);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.from_pub);
	h_broker_stop(&b);
}

/* Events come back too: a listener of before hears a notifier of before
 * and one of after, and a listener of after hears the notifier of before.
 * While no broker runs a notify fails (-ENOTCONN): the process index it
 * writes its lane by is not known to be its own until a broker says so. */
static int ev_listener_child(void *arg)
{
	int which = (int)(intptr_t)arg;
	takt_node *n = h_node(rs.b->domain, which ? "listener-after" : "listener-before");
	/* before: ids 1..3 of the old notifier, then 4..6 of it and 100 of a
	 * new one; after: 4..6 of the old */
	const uint64_t want_before[] = {1, 2, 3, 4, 5, 6, 100}, want_after[] = {4, 5, 6};
	const uint64_t *want = which ? want_after : want_before;
	unsigned n_want = which ? 3 : 7, got = 0;
	takt_event *ev;

	H_CHECK(takt_event_open(n, "rs/ev", &ev) == 0);
	H_CHECK(takt_event_fd(ev) >= 0); /* a listener */
	H_CHECK(h_chan_send(&rs.sub_ready[which], "r", 1) == 0);
	for (int spins = 0; got < n_want && spins < 20000; spins++) {
		uint64_t id;

		if (takt_event_take(ev, &id) < 0) {
			usleep(1000);
			continue;
		}
		if (id == 50)
			continue; /* notified before its node saw the broker die: delivered, rightly */
		if (id != want[got])
			fprintf(stderr, "listener %d: id %llu, want %llu\n", which, (unsigned long long)id,
				(unsigned long long)want[got]);
		H_CHECK(id == want[got]);
		got++;
	}
	H_CHECK(got == n_want);
	takt_node_close(n);
	return 0;
}

static void test_restart_events_come_back(void **state)
{
	struct msg_status_reply st;
	struct h_broker b;
	takt_node *n, *n2;
	takt_event *ev, *ev2;
	pid_t l0, l1;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-events", NULL), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.sub_ready[0]), 0);
	assert_int_equal(h_chan_open(&rs.sub_ready[1]), 0);
	n = h_node(b.domain, "notifier-before");
	assert_int_equal(takt_event_open(n, "rs/ev", &ev), 0);
	l0 = h_spawn(ev_listener_child, (void *)(intptr_t)0);
	assert_int_equal(h_chan_recv(&rs.sub_ready[0], &c, 1, 10000), 0);
	for (uint64_t id = 1; id <= 3; id++)
		assert_int_equal(takt_event_notify(ev, id), 0);
	broker_kill(&b);
	for (int i = 0; i < 100 && takt_event_notify(ev, 50) == 0; i++)
		usleep(1000); /* until the node saw the hang-up */
	assert_int_equal(takt_event_notify(ev, 50), -ENOTCONN);
	assert_int_equal(h_broker_restart(&b), 0);
	l1 = h_spawn(ev_listener_child, (void *)(intptr_t)1);
	assert_int_equal(h_chan_recv(&rs.sub_ready[1], &c, 1, 10000), 0);
	for (uint64_t id = 4; id <= 6; id++)
		assert_int_equal(takt_event_notify(ev, id), 0);
	n2 = h_node(b.domain, "notifier-after");
	assert_int_equal(takt_event_open(n2, "rs/ev", &ev2), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.n_events, 1);
	/* the listener of after must not hear this one: it wants 4..6 only */
	assert_int_equal(h_wait(l1, 20000), 0);
	assert_int_equal(takt_event_notify(ev2, 100), 0);
	assert_int_equal(h_wait(l0, 20000), 0);
	takt_node_close(n2);
	takt_node_close(n);
	h_chan_close(&rs.sub_ready[0]);
	h_chan_close(&rs.sub_ready[1]);
	h_broker_stop(&b);
}

/* A process that dies while no broker runs is reclaimed by the next one
 * (its pid is gone): its ports go, the others go on, and what it sent
 * before it died is still there for its subscribers to take. */
static int dying_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "dying");
	takt_pub *p;
	takt_sub *s;

	(void)arg;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/dead", .max_payload = 64}, &p) == 0);
	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/dead"}, &s) == 0);
	H_CHECK(takt_pub_send(p, "x", 2) == 2);
	H_CHECK(h_chan_send(&rs.from_pub, "d", 1) == 0);
	pause();
	return 0;
}

static void test_restart_process_dead_meanwhile_reclaimed(void **state)
{
	struct msg_status_reply st;
	struct proto_pool_stat pools[8];
	struct h_broker b;
	takt_node *n;
	takt_sub *s;
	takt_pub *p;
	pid_t d;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-dead", "[socket]\nreadopt_timeout_ms = 20000\n"), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.from_pub), 0);
	n = h_node(b.domain, "survivor");
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/dead", .queue_depth = 8}, &s), 0);
	d = h_spawn(dying_child, NULL);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 10000), 0);
	assert_int_equal(h_pools(b.domain, pools, 8), 1);
	broker_kill(&b);
	assert_int_equal(kill(d, SIGKILL), 0);
	assert_int_equal(h_wait(d, 5000), 128 + SIGKILL);
	/* no waiting for the dead one: its pid is gone (20 s would fail the
	 * bound of h_broker_restart) */
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.adopted_procs, 1);
	assert_int_equal(st.adopted_reclaimed, 1);
	assert_int_equal(st.n_procs, 1);
	assert_int_equal(st.n_pubs, 0);
	assert_int_equal(st.n_subs, 1);
	assert_int_equal(h_pools(b.domain, pools, 8), 0); /* its publisher is gone */
	/* what it sent before it died is still there to take: the survivor
	 * brought its pool to the broker, which let the connection drain */
	{
		struct takt_sample_info info;
		const void *x;

		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		assert_string_equal((const char *)x, "x");
		takt_sub_release(s, x);
		assert_int_equal(takt_sub_take(s, &x, &info), -EAGAIN);
		/* the survivor's subscriber meets a new publisher */
		assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/dead", .max_payload = 64}, &p), 0);
		assert_int_equal(takt_pub_send(p, "y", 2), 1);
		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		assert_string_equal((const char *)x, "y");
		takt_sub_release(s, x);
	}
	takt_pub_close(p);
	takt_sub_close(s);
	takt_node_close(n);
	h_chan_close(&rs.from_pub);
	h_broker_stop(&b);
}

/* Claims that do not hold are refused, each with its reason, and cost
 * the others nothing. A raw client of the old broker tries what a hostile
 * one could: another epoch, another process's index, ports that are not
 * its own. */
static int readopt(struct h_raw *r, int sock, uint32_t proc, uint64_t epoch)
{
	struct msg_readopt m = {.abi_version = TAKT_ABI_VERSION, .proc = proc, .epoch = epoch};

	return h_raw_call(sock, &m, sizeof(m), MSG_READOPT, &r->reg_fd, 1, NULL);
}

static int raw_claimer(void *arg)
{
	struct h_raw *r = arg, other;
	struct msg_port_readopt pm = {.index = 0, .id = 12345};
	int mfd = memfd_create("fake-pool", MFD_CLOEXEC), efd = eventfd(0, EFD_CLOEXEC), s, fd = -1;
	char c;

	H_CHECK(mfd >= 0 && efd >= 0);
	H_CHECK(h_raw_hello(rs.b->domain, r) == 0);
	H_CHECK(h_chan_send(&rs.from_pub, "h", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &other.proc, sizeof(other.proc), 20000) == 0);
	for (int i = 0; i < 2000 && proto_connect(rs.b->domain, &s) < 0; i++) /* until the new broker listens */
		usleep(5000);
	H_CHECK(readopt(r, s, r->proc, r->epoch + 1) == -ESTALE);
	H_CHECK(readopt(r, s, other.proc, r->epoch) == -EPERM); /* another process's */
	{ /* taken back: the new registry comes with the answer */
		struct msg_readopt m = {.abi_version = TAKT_ABI_VERSION, .proc = r->proc, .epoch = r->epoch};

		H_CHECK(h_raw_call(s, &m, sizeof(m), MSG_READOPT, &r->reg_fd, 1, &fd) == 0);
		H_CHECK(fd >= 0);
	}
	H_CHECK(readopt(r, s, r->proc, r->epoch) == -EALREADY);
	H_CHECK(h_raw_call(s, &pm, sizeof(pm), MSG_PUB_READOPT, &mfd, 1, NULL) == -EPERM); /* not its port */
	H_CHECK(h_raw_call(s, &pm, sizeof(pm), MSG_SUB_READOPT, (int[]){mfd, efd}, 2, NULL) == -EPERM);
	H_CHECK(h_raw_call(s, &pm, sizeof(pm), MSG_POOL_READOPT, &mfd, 1, NULL) == -EPERM); /* for another's subscriber */
	pm.sub = UINT32_MAX;
	H_CHECK(h_raw_call(s, &pm, sizeof(pm), MSG_POOL_READOPT, &mfd, 1, NULL) == -EINVAL);
	H_CHECK(h_raw_call(s, &(struct msg_empty){0}, sizeof(struct msg_empty), MSG_READOPT_DONE, NULL, 0, NULL) == 0);
	return 0;
}

/* The registry a new broker adopts is the one its predecessor recorded in
 * the lock file: a copy a client made (same bytes, its own memfd) is
 * refused, and the real one is then taken. */
static int forger(void *arg)
{
	struct h_raw *r = arg, fake;
	struct stat st;
	void *src, *dst;
	int s, mfd = memfd_create("forged-registry", MFD_CLOEXEC);
	char c;

	H_CHECK(mfd >= 0);
	H_CHECK(h_raw_hello(rs.b->domain, r) == 0);
	H_CHECK(fstat(r->reg_fd, &st) == 0 && ftruncate(mfd, st.st_size) == 0);
	src = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, r->reg_fd, 0);
	dst = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	H_CHECK(src != MAP_FAILED && dst != MAP_FAILED);
	memcpy(dst, src, (size_t)st.st_size); /* a perfect copy, then anything it likes */
	H_CHECK(h_chan_send(&rs.from_pub, "h", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0);
	for (int i = 0; i < 2000 && proto_connect(rs.b->domain, &s) < 0; i++)
		usleep(5000);
	fake = *r;
	fake.reg_fd = mfd;
	H_CHECK(readopt(&fake, s, r->proc, r->epoch) == -ESTALE);
	H_CHECK(readopt(r, s, r->proc, r->epoch) == 0);
	H_CHECK(h_raw_call(s, &(struct msg_empty){0}, sizeof(struct msg_empty), MSG_READOPT_DONE, NULL, 0, NULL) == 0);
	return 0;
}

static void test_restart_forged_registry_refused(void **state)
{
	struct msg_status_reply st;
	struct h_raw raw;
	struct h_broker b;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-forged", "[socket]\nreadopt_timeout_ms = 10000\n"), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.to_pub), 0);
	assert_int_equal(h_chan_open(&rs.from_pub), 0);
	pid = h_spawn(forger, &raw);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 10000), 0);
	broker_kill(&b);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_wait(pid, 20000), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.adopted_refused, 1);
	assert_int_equal(st.adopted_procs, 1);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.from_pub);
	h_broker_stop(&b);
}

static void test_restart_bad_claims_refused(void **state)
{
	struct msg_status_reply st;
	struct h_raw raw;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	pid_t claimer;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-claims", "[socket]\nreadopt_timeout_ms = 10000\n"), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.to_pub), 0);
	assert_int_equal(h_chan_open(&rs.from_pub), 0);
	n = h_node(b.domain, "honest");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/claims", .max_payload = 8}, &p), 0);
	claimer = h_spawn(raw_claimer, &raw);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 10000), 0);
	broker_kill(&b);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	{
		uint32_t honest = 0; /* the honest node's index: the first process */

		assert_int_equal(h_chan_send(&rs.to_pub, &honest, sizeof(honest)), 0);
	}
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_wait(claimer, 20000), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.adopted_procs, 2);
	assert_int_equal(st.adopted_refused, 3); /* epoch, another's index, twice */
	assert_int_equal(st.adopted_pubs, 1);    /* the honest one's */
	/* the honest node is untouched and served */
	assert_int_equal(takt_pub_send(p, "12345678", 8), 0);
	takt_pub_close(p);
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/claims2", .max_payload = 8}, &p), 0);
	takt_pub_close(p);
	takt_node_close(n);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.from_pub);
	h_broker_stop(&b);
}

/* ---- what the old broker had under way ---------------------------------- */

/* A publisher that closed (here: cleanly) leaves its connection to a slow
 * subscriber behind as an orphan: what it pushed stays takeable until the
 * subscriber drained it. A broker restart must not drop it. */
static const char *orphan_topic = "rs/orphan";

/* Takes arg (5 if 0) samples 0, 1, ... once told to. */
static int orphan_sub_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "late-taker");
	uint64_t want = arg ? (uint64_t)(intptr_t)arg : 5;
	takt_sub *s;
	char c;

	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = orphan_topic, .queue_depth = 16}, &s) == 0);
	H_CHECK(h_chan_send(&rs.sub_ready[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0); /* a new broker has taken us back */
	for (uint64_t i = 0; i < want;) {
		struct takt_sample_info info;
		const void *p;
		int r = takt_sub_take(s, &p, &info);

		if (r == -EAGAIN) {
			H_CHECK(takt_sub_wait(s, 2000000000LL) == 0);
			continue;
		}
		H_CHECK(r == 0 && info.size == sizeof(i) && !memcmp(p, &i, sizeof(i)));
		takt_sub_release(s, p);
		i++;
	}
	takt_sub_close(s);
	takt_node_close(n);
	return 0;
}

/* Starts broker b (tag) and orphan_sub_child taking want samples of topic
 * once told; returns that child when its subscriber is open. */
static pid_t orphan_sub_start(struct h_broker *b, const char *tag, const char *topic, intptr_t want)
{
	char c;
	pid_t sub;

	assert_int_equal(h_broker_start(b, tag, NULL), 0);
	rs.b = b;
	assert_int_equal(h_chan_open(&rs.to_pub), 0);
	assert_int_equal(h_chan_open(&rs.sub_ready[0]), 0);
	orphan_topic = topic;
	sub = h_spawn(orphan_sub_child, (void *)want);
	assert_int_equal(h_chan_recv(&rs.sub_ready[0], &c, 1, 10000), 0);
	return sub;
}

static void test_restart_orphaned_samples_survive(void **state)
{
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	pid_t sub;

	(void)state;
	sub = orphan_sub_start(&b, "rs-orphan", "rs/orphan", 5);
	n = h_node(b.domain, "leaver");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/orphan", .max_payload = 8}, &p), 0);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	takt_pub_close(p); /* nothing taken yet */
	broker_kill(&b);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_wait(sub, 20000), 0);
	takt_node_close(n);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.sub_ready[0]);
	h_broker_stop(&b);
}

/* The publisher's own pool, read-write, in this process (its mapping's
 * name, /proc/self/maps); NULL if none. */
static void *own_pool(void)
{
	char line[512];
	void *base = NULL;
	FILE *f = fopen("/proc/self/maps", "re");

	while (f && !base && fgets(line, sizeof(line), f)) {
		unsigned long lo, off;
		char perms[8];

		if (sscanf(line, "%lx-%*x %7s %lx", &lo, perms, &off) == 3 && perms[1] == 'w' && off == 0 &&
		    strstr(line, ".pub"))
			base = (void *)lo;
	}
	if (f)
		fclose(f);
	return base;
}

/* Publishes three samples, then leaves position 0 claimed (R2) as a
 * publisher killed between its claim and its verdict does, and dies. */
static int claim_left_open_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "claimer");
	const struct takt_pool_header *ph;
	struct takt_ring_slot *slots;
	takt_pub *p;

	(void)arg;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/claim", .max_payload = 8}, &p) == 0);
	for (uint64_t i = 0; i < 3; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
	ph = own_pool();
	H_CHECK(ph && ph->magic == TAKT_POOL_MAGIC);
	/* its only connection has region 0 of the pool; position 0 is slot 0 */
	slots = (struct takt_ring_slot *)((char *)ph + ph->ring_off);
	H_CHECK(atomic_load(&slots[0].pos) == 1);
	atomic_store(&slots[0].pos, 1 | (1ull << 63)); /* RING_POS_CLAIM (ring.h) */
	_exit(0);
}

/* A claim its publisher left open is the subscriber's once the broker saw
 * that publisher quiesce (pub_quiet, R2): the word the old broker stored
 * must read the same in the new registry, or the subscriber waits at that
 * position for ever, with everything queued behind it. */
static void test_restart_claim_left_by_dead_publisher_stays_takeable(void **state)
{
	struct msg_status_reply st = {0};
	struct h_broker b;
	pid_t sub, pub;

	(void)state;
	sub = orphan_sub_start(&b, "rs-claim", "rs/claim", 3);
	pub = h_spawn(claim_left_open_child, NULL);
	assert_int_equal(h_wait(pub, 10000), 0);
	/* the broker saw it go: the connection is an orphan, its publisher quiet */
	for (int i = 0; i < 500 && h_status(b.domain, &st) == 0 && st.n_procs != 1; i++)
		usleep(10000);
	assert_int_equal(st.n_procs, 1);
	broker_kill(&b);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_wait(sub, 20000), 0);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.sub_ready[0]);
	h_broker_stop(&b);
}

/* A publisher that closed leaves its pool to the subscribers that still
 * hold samples of it: the broker keeps the pool (and counts its bytes)
 * until the last of them lets go. A restarted broker must count it too,
 * and let it go when the holder releases. */
static int holder_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "holder");
	struct takt_sample_info info;
	const void *p;
	takt_sub *s;
	char c;

	(void)arg;
	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/left", .queue_depth = 4}, &s) == 0);
	H_CHECK(h_chan_send(&rs.sub_ready[0], "r", 1) == 0);
	H_CHECK(takt_sub_wait(s, 10000000000LL) == 0);
	H_CHECK(takt_sub_take(s, &p, &info) == 0 && info.size == 8);
	H_CHECK(h_chan_send(&rs.from_pub, "h", 1) == 0); /* held */
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0);
	takt_sub_release(s, p);
	H_CHECK(h_chan_send(&rs.from_pub, "l", 1) == 0); /* let go */
	H_CHECK(h_chan_recv(&rs.to_pub, &c, 1, 20000) == 0);
	takt_sub_close(s);
	takt_node_close(n);
	return 0;
}

/* Polls the status until shm_bytes is want (up to 5 s); the last status. */
static struct msg_status_reply status_shm(const char *domain, uint64_t want)
{
	struct msg_status_reply st = {0};

	for (int i = 0; i < 500; i++) {
		assert_int_equal(h_status(domain, &st), 0);
		if (st.shm_bytes == want)
			break;
		usleep(10000);
	}
	return st;
}

static void test_restart_pool_left_to_holders_still_counted(void **state)
{
	struct msg_status_reply sub_only, held, back;
	struct proto_pool_stat pool;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	pid_t sub;
	uint64_t x = 7;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-left", NULL), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&rs.to_pub), 0);
	assert_int_equal(h_chan_open(&rs.from_pub), 0);
	assert_int_equal(h_chan_open(&rs.sub_ready[0]), 0);
	sub = h_spawn(holder_child, NULL);
	assert_int_equal(h_chan_recv(&rs.sub_ready[0], &c, 1, 10000), 0);
	assert_int_equal(h_status(b.domain, &sub_only), 0);
	n = h_node(b.domain, "left-pub");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/left", .max_payload = 8}, &p), 0);
	assert_int_equal(takt_pub_send(p, &x, sizeof(x)), 1);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 10000), 0);
	assert_int_equal(h_pool_of(b.domain, takt_pub_id(p), &pool), 0);
	assert_true(pool.bytes > 0);
	takt_pub_close(p);
	takt_node_close(n);
	/* the pool is left to the holder, and counted */
	for (int i = 0; i < 500; i++) {
		assert_int_equal(h_status(b.domain, &held), 0);
		if (held.n_procs == 1 && held.n_conns == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(held.n_procs, 1);
	assert_int_equal(held.n_pubs, 0);
	assert_true(held.shm_bytes > sub_only.shm_bytes);
	broker_kill(&b);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_status(b.domain, &back), 0);
	assert_int_equal(back.adopted_procs, 1);
	assert_int_equal(back.shm_bytes, held.shm_bytes); /* still counted */
	/* let go: the new broker lets the pool go too */
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_chan_recv(&rs.from_pub, &c, 1, 10000), 0);
	back = status_shm(b.domain, held.shm_bytes - pool.bytes);
	assert_int_equal(back.shm_bytes, held.shm_bytes - pool.bytes);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_wait(sub, 10000), 0);
	back = status_shm(b.domain, back.shm_bytes_idle);
	assert_int_equal(back.shm_bytes, back.shm_bytes_idle);
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.from_pub);
	h_chan_close(&rs.sub_ready[0]);
	h_broker_stop(&b);
}

/* ---- a broker that stops ------------------------------------------------ */

static bool path_exists(const struct h_broker *b, const char *what)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/takt-%s.%s", b->rundir, b->domain, what);
	return access(path, F_OK) == 0;
}

/* SIGTERM: the broker exits at once with its status 0, as a clean stop
 * does, but not through h_broker_stop (which removes what it left). */
static void broker_term(struct h_broker *b)
{
	assert_int_equal(kill(b->pid, SIGTERM), 0);
	assert_int_equal(h_wait(b->pid, 5000), 0);
	b->pid = 0;
}

/* A stop with processes attached (systemd's restart of the service, say)
 * leaves the domain to the next broker: its processes lose nothing. */
static void test_restart_stop_with_clients_keeps_the_domain(void **state)
{
	struct msg_status_reply before, after;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	pid_t sub;

	(void)state;
	sub = orphan_sub_start(&b, "rs-stop", "rs/stop", 10);
	n = h_node(b.domain, "stop-pub");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/stop", .max_payload = 8}, &p), 0);
	for (uint64_t i = 0; i < 5; i++)
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	assert_int_equal(h_status(b.domain, &before), 0);
	broker_term(&b);
	assert_true(path_exists(&b, "sock"));
	assert_true(path_exists(&b, "lock"));
	for (uint64_t i = 5; i < 10; i++) /* the data path goes on without it */
		assert_int_equal(takt_pub_send(p, &i, sizeof(i)), 1);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_status(b.domain, &after), 0);
	assert_int_equal(after.adopted_epoch, before.epoch);
	assert_int_equal(after.adopted_procs, 2);
	assert_int_equal(after.adopted_pubs, 1);
	assert_int_equal(after.adopted_subs, 1);
	assert_int_equal(h_chan_send(&rs.to_pub, "g", 1), 0);
	assert_int_equal(h_wait(sub, 20000), 0); /* all ten, in order */
	takt_pub_close(p);
	takt_node_close(n);
	/* with nobody attached, a stop ends the domain */
	for (int i = 0; i < 500 && h_status(b.domain, &after) == 0 && after.n_procs; i++)
		usleep(10000);
	assert_int_equal(after.n_procs, 0);
	broker_term(&b);
	assert_false(path_exists(&b, "sock"));
	assert_false(path_exists(&b, "lock"));
	h_chan_close(&rs.to_pub);
	h_chan_close(&rs.sub_ready[0]);
	h_broker_stop(&b);
}

/* [socket] keep_on_stop = false: a stop ends the domain whoever is
 * attached; the next broker starts a new one and refuses the old. */
static void test_restart_stop_ends_the_domain_when_told(void **state)
{
	struct msg_status_reply st;
	struct h_broker b;
	takt_node *n;
	takt_pub *p, *q = NULL;
	int r = 0;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-stop-end", "[socket]\nkeep_on_stop = false\n"), 0);
	n = h_node(b.domain, "ended");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/end", .max_payload = 8}, &p), 0);
	broker_term(&b);
	assert_false(path_exists(&b, "sock"));
	assert_false(path_exists(&b, "lock"));
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.adopted_epoch, 0);
	assert_int_equal(st.n_procs, 0);
	/* the old node is not taken back: its calls fail, and keep failing */
	for (int i = 0; i < 100; i++) {
		r = takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/end2", .max_payload = 8}, &q);
		if (r == -ENOTCONN && i >= 20)
			break;
		usleep(10000);
	}
	assert_int_equal(r, -ENOTCONN);
	takt_pub_close(p);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* A node whose ports were closed while no broker ran comes back last:
 * the broker closes them at its READOPT_DONE, and only then settles the
 * adoption (connections pushed again, held requests served). */
struct uc_ctx {
	struct h_chan ready, go, closed, end;
	pid_t closer;
};

static struct uc_ctx uc;

static int uc_closer_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "closer");
	takt_sub *a, *s;
	char c;

	(void)arg;
	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/uc-a"}, &a) == 0);
	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/uc-b"}, &s) == 0);
	H_CHECK(h_chan_send(&uc.ready, "s", 1) == 0);
	H_CHECK(h_chan_recv(&uc.go, &c, 1, 20000) == 0); /* no broker now: the closes fail, the handles go */
	takt_sub_close(a);
	takt_sub_close(s);
	H_CHECK(h_chan_send(&uc.closed, "c", 1) == 0);
	raise(SIGSTOP); /* continued by the keeper once the new broker took it back */
	H_CHECK(h_chan_recv(&uc.end, &c, 1, 30000) == 0);
	takt_node_close(n);
	return 0;
}

static int uc_keeper_child(void *arg)
{
	takt_node *n = h_node(rs.b->domain, "keeper");
	uint64_t epoch = takt_node_epoch(n);
	takt_pub *p;
	char c;

	(void)arg;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/uc-b", .max_payload = 8}, &p) == 0);
	H_CHECK(h_chan_send(&uc.ready, "p", 1) == 0);
	for (int i = 0; i < 1000 && takt_node_epoch(n) == epoch; i++)
		usleep(10000);
	H_CHECK(takt_node_epoch(n) != epoch);
	H_CHECK(kill(uc.closer, SIGCONT) == 0);
	H_CHECK(h_chan_recv(&uc.end, &c, 1, 30000) == 0);
	H_CHECK(takt_pub_send(p, "k", 2) == 2); /* both new subscribers */
	takt_pub_close(p);
	takt_node_close(n);
	return 0;
}

static void test_restart_ports_closed_meanwhile_last_back(void **state)
{
	struct msg_status_reply st = {0};
	struct h_broker b;
	takt_node *n;
	takt_sub *s1, *s2;
	pid_t keeper;
	int status;
	char c;

	(void)state;
	/* two regions in the publisher's pool: one a connection never gives back is missed */
	assert_int_equal(h_broker_start(&b, "rs-closed", "[limits]\nsubscribers_per_topic = 2\n"), 0);
	rs.b = &b;
	assert_int_equal(h_chan_open(&uc.ready), 0);
	assert_int_equal(h_chan_open(&uc.go), 0);
	assert_int_equal(h_chan_open(&uc.closed), 0);
	assert_int_equal(h_chan_open(&uc.end), 0);
	uc.closer = h_spawn(uc_closer_child, NULL);
	assert_int_equal(h_chan_recv(&uc.ready, &c, 1, 10000), 0);
	keeper = h_spawn(uc_keeper_child, NULL);
	assert_int_equal(h_chan_recv(&uc.ready, &c, 1, 10000), 0);
	broker_kill(&b);
	assert_int_equal(h_chan_send(&uc.go, "g", 1), 0);
	assert_int_equal(h_chan_recv(&uc.closed, &c, 1, 10000), 0);
	assert_int_equal(waitpid(uc.closer, &status, WUNTRACED), uc.closer);
	assert_true(WIFSTOPPED(status));
	assert_int_equal(h_broker_restart(&b), 0);
	/* the keeper's publisher meets two new subscribers */
	n = h_node(b.domain, "after");
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/uc-b"}, &s1), 0);
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "rs/uc-b"}, &s2), 0);
	for (int i = 0; i < 300 && h_status(b.domain, &st) == 0 && st.n_conns != 2; i++)
		usleep(10000);
	assert_int_equal(st.n_conns, 2);
	assert_int_equal(h_chan_send(&uc.end, "ee", 2), 0);
	assert_int_equal(h_wait(keeper, 20000), 0);
	assert_int_equal(h_wait(uc.closer, 20000), 0);
	takt_sub_close(s1);
	takt_sub_close(s2);
	takt_node_close(n);
	h_chan_close(&uc.ready);
	h_chan_close(&uc.go);
	h_chan_close(&uc.closed);
	h_chan_close(&uc.end);
	h_broker_stop(&b);
}

/* A node closed while its agent is being taken back by a new broker (here
 * a stand-in that takes the READOPT and never answers): the close stops
 * the agent at once, not after the node's timeout. */
static void test_restart_node_closed_while_taken_back(void **state)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	union {
		struct proto_hdr h;
		char bytes[TAKT_PROTO_MAX_MSG];
	} m;
	int fds[TAKT_PROTO_MAX_FDS], ls, cs;
	struct pollfd pfd;
	struct h_broker b;
	unsigned nf = 0;
	takt_node *n;
	uint64_t t0;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-closing", NULL), 0);
	n = h_node(b.domain, "closing");
	broker_kill(&b);
	char path[256];

	snprintf(path, sizeof(path), "%s/takt-%s.sock", b.rundir, b.domain);
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	unlink(sa.sun_path);
	ls = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	assert_true(ls >= 0);
	assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(ls, 4), 0);
	pfd = (struct pollfd){.fd = ls, .events = POLLIN};
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	cs = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	assert_true(cs >= 0);
	assert_int_equal(proto_recv(cs, &m, sizeof(m), fds, TAKT_PROTO_MAX_FDS, &nf), (long)sizeof(struct msg_readopt));
	assert_int_equal(m.h.type, MSG_READOPT);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	t0 = mono_ns();
	takt_node_close(n); /* its agent waits for our answer */
	assert_true(mono_ns() - t0 < 2000000000ull); /* not its 10 s timeout */
	close(cs);
	close(ls);
	h_broker_stop(&b);
}

/* Runs fn in a child whose membarrier calls fail, as under a seccomp
 * policy that forbids them: a broker there cannot fence for its clients,
 * so its registry offers no plain-store Q0 entry (TAKT_LIM_MEMBARRIER). */
static pid_t spawn_without_membarrier(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
			_exit(125);
		_exit(fn(arg));
	}
	return pid;
}

/* A node can map only a registry whose Q0 mode is its own (publishes
 * already running chose theirs, node.c, readopt_remap): a broker whose
 * mode differs must either take the node back whole or not at all, never
 * count it back while the node stays detached (its ports and connections
 * held for a node that reads no more pushes). */
static void test_restart_other_q0_mode_taken_back_whole_or_not(void **state)
{
	struct msg_status_reply st;
	struct h_broker b;
	takt_node *n;
	takt_pub *p, *p2;
	uint64_t epoch;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-q0", "[socket]\nreadopt_timeout_ms = 500\n"), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	if (!(st.limits.flags & TAKT_LIM_MEMBARRIER)) {
		h_broker_stop(&b);
		fprintf(stderr, "no membarrier here: both brokers would use the same Q0 mode\n");
		skip();
	}
	n = h_node(b.domain, "q0");
	epoch = takt_node_epoch(n);
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/q0", .max_payload = 8}, &p), 0);
	broker_kill(&b);
	assert_int_equal(h_broker_restart_opts(&b, &(struct h_broker_opts){.spawn = spawn_without_membarrier}), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_false(st.limits.flags & TAKT_LIM_MEMBARRIER);
	if (st.adopted_procs) { /* taken back: the node works */
		assert_true(takt_node_epoch(n) != epoch);
		assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rs/q0b", .max_payload = 8}, &p2), 0);
		takt_pub_close(p2);
	} else { /* or not: nothing of it is held */
		assert_int_equal(st.n_procs, 0);
		assert_int_equal(st.n_pubs, 0);
	}
	takt_pub_close(p);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* takt_node_topics_wait across a restart: the waiter sleeps on a futex in
 * the registry page, which the node replaces with the new broker's at the
 * same address; the new broker's wakes reach only sleepers of its own page.
 * The waiter must come back when the node moves over (0: look again, with
 * a new epoch), not at its 30 s timeout. */
struct topics_waiter {
	takt_node *n;
	uint32_t gen;
	_Atomic pid_t tid;
	pthread_t th;
	int rc;
};

static void *topics_waiter_thread(void *arg)
{
	struct topics_waiter *w = arg;

	atomic_store(&w->tid, (pid_t)syscall(SYS_gettid));
	w->rc = takt_node_topics_wait(w->n, w->gen, 30000000000LL);
	return NULL;
}

/* 0 once thread tid of this process sleeps in futex(2), within 5 s. */
static int wait_in_futex(pid_t tid)
{
	char path[64], buf[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	for (int i = 0; i < 5000; i++) {
		FILE *f = fopen(path, "r");
		long nr = -1;

		if (f && fgets(buf, sizeof(buf), f))
			nr = strtol(buf, NULL, 10);
		if (f)
			fclose(f);
		if (nr == SYS_futex)
			return 0;
		usleep(1000);
	}
	return -ETIMEDOUT;
}

/* Starts a waiter on the node's current generation, and returns once it
 * sleeps in the kernel. */
static void topics_waiter_run(struct topics_waiter *w)
{
	w->gen = takt_node_topics_gen(w->n);
	atomic_store(&w->tid, 0);
	assert_int_equal(pthread_create(&w->th, NULL, topics_waiter_thread, w), 0);
	for (int i = 0; i < 5000 && !atomic_load(&w->tid); i++)
		usleep(1000);
	assert_int_equal(wait_in_futex(atomic_load(&w->tid)), 0);
}

/* Bounded: well before the waiter's own 30 s timeout. */
static int topics_waiter_join(struct topics_waiter *w)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 15;
	return pthread_timedjoin_np(w->th, NULL, &until);
}

static void test_restart_topics_wait_returns_after_restart(void **state)
{
	static struct topics_waiter w; /* outlives a failed join */
	struct h_broker b;
	takt_node *other;
	takt_pub *p;
	uint64_t epoch;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rs-topicswait", NULL), 0);
	w.n = h_node(b.domain, "topics-waiter");
	epoch = takt_node_epoch(w.n);
	topics_waiter_run(&w);
	broker_kill(&b);
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(topics_waiter_join(&w), 0);
	assert_int_equal(w.rc, 0);
	assert_true(takt_node_epoch(w.n) != epoch);
	/* a wait entered on the new registry is woken by the new broker */
	topics_waiter_run(&w);
	other = h_node(b.domain, "topics-opener");
	assert_int_equal(takt_pub_open(other, &(struct takt_pub_opts){.topic = "rs/new", .max_payload = 8}, &p), 0);
	assert_int_equal(topics_waiter_join(&w), 0);
	assert_int_equal(w.rc, 0);
	assert_true(takt_node_topics_gen(w.n) != w.gen);
	takt_pub_close(p);
	takt_node_close(other);
	takt_node_close(w.n);
	h_broker_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_dead_blocking_subscriber_seen_without_broker),
		cmocka_unit_test(test_restart_no_broker_fails_at_once),
		cmocka_unit_test(test_restart_hello_takes_only_own_pidfd),
		cmocka_unit_test(test_restart_broker_killed_under_load_is_adopted),
		cmocka_unit_test(test_restart_events_come_back),
		cmocka_unit_test(test_restart_process_dead_meanwhile_reclaimed),
		cmocka_unit_test(test_restart_bad_claims_refused),
		cmocka_unit_test(test_restart_forged_registry_refused),
		cmocka_unit_test(test_restart_orphaned_samples_survive),
		cmocka_unit_test(test_restart_claim_left_by_dead_publisher_stays_takeable),
		cmocka_unit_test(test_restart_pool_left_to_holders_still_counted),
		cmocka_unit_test(test_restart_stop_with_clients_keeps_the_domain),
		cmocka_unit_test(test_restart_stop_ends_the_domain_when_told),
		cmocka_unit_test(test_restart_ports_closed_meanwhile_last_back),
		cmocka_unit_test(test_restart_node_closed_while_taken_back),
		cmocka_unit_test(test_restart_other_q0_mode_taken_back_whole_or_not),
		cmocka_unit_test(test_restart_topics_wait_returns_after_restart),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
