/* test_restart.c - a domain without its broker, and brokers that restart.
 *
 * The broker is killed with SIGKILL while real clients run; what they
 * share must keep working without it and come back with the next one.
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
#include <sys/eventfd.h>
#include <sys/syscall.h>
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_dead_blocking_subscriber_seen_without_broker),
		cmocka_unit_test(test_restart_no_broker_fails_at_once),
		cmocka_unit_test(test_restart_hello_takes_only_own_pidfd),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
