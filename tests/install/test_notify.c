/* test_notify.c - takt-broker tells a service manager how it stands.
 *
 * systemd's Type=notify: the service sends "READY=1" once it serves, and
 * "STOPPING=1" when it stops, as datagrams to $NOTIFY_SOCKET; systemd
 * believes only its main process. There is no systemd here, so the test is
 * the manager: it listens on a datagram socket of its own, starts the real
 * broker with NOTIFY_SOCKET pointing at it, and checks what arrives, from
 * whom and when (READY only once the domain answers a request).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

/* The listening manager: its socket and directory. */
struct manager {
	int fd;
	char dir[64], path[96];
};

/* What came when the broker said READY=1: set by spawn_and_wait_ready. */
static struct {
	struct manager *m;
	struct h_broker *b;
	char msg[512];
	pid_t sender, broker;
	int served; /* the domain answered a status request right after READY (1), or not (-errno) */
} ready;

static void manager_open(struct manager *m)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int one = 1;

	snprintf(m->dir, sizeof(m->dir), "/tmp/takt-notify-XXXXXX");
	assert_non_null(mkdtemp(m->dir));
	snprintf(m->path, sizeof(m->path), "%s/notify", m->dir);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", m->path);
	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(m->fd >= 0);
	assert_int_equal(bind(m->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	/* the sender's credentials, as systemd takes them to believe only the main pid */
	assert_int_equal(setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	setenv("NOTIFY_SOCKET", m->path, 1);
}

static void manager_close(struct manager *m)
{
	unsetenv("NOTIFY_SOCKET");
	close(m->fd);
	unlink(m->path);
	rmdir(m->dir);
}

/* One notification into buf (NUL-terminated) and its sender's pid: 0, or
 * -ETIMEDOUT when none came within timeout_ms. */
static int manager_recv(struct manager *m, char *buf, size_t len, pid_t *ret_pid, int timeout_ms)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} c;
	struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = c.buf, .msg_controllen = sizeof(c.buf)};
	struct pollfd p = {.fd = m->fd, .events = POLLIN};
	struct cmsghdr *h;
	ssize_t n;

	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	n = recvmsg(m->fd, &msg, MSG_DONTWAIT);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	*ret_pid = 0;
	for (h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h))
		if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_CREDENTIALS) {
			struct ucred cr;

			memcpy(&cr, CMSG_DATA(h), sizeof(cr));
			*ret_pid = cr.pid;
		}
	return 0;
}

/* The harness's spawn hook: starts the broker, then does what a manager
 * does, before the harness gets to poll the domain itself: waits for
 * READY=1 and at once asks the domain for its status. */
static pid_t spawn_and_wait_ready(int (*fn)(void *), void *arg)
{
	struct msg_status_reply st;
	int r;

	ready.broker = h_spawn(fn, arg);
	if (ready.broker < 0)
		return ready.broker;
	r = manager_recv(ready.m, ready.msg, sizeof(ready.msg), &ready.sender, 10000);
	ready.served = r < 0 ? r : (r = h_status(ready.b->domain, &st)) == 0 ? 1 : r;
	return ready.broker;
}

static void start(struct manager *m, struct h_broker *b, const char *tag)
{
	memset(&ready, 0, sizeof(ready));
	ready.m = m;
	ready.b = b;
	manager_open(m);
	assert_int_equal(h_broker_start_opts(b, tag, NULL, &(struct h_broker_opts){.spawn = spawn_and_wait_ready}), 0);
}

static void expect_contains(const char *msg, const char *what)
{
	if (!strstr(msg, what))
		fail_msg("expected '%s' in the notification:\n%s", what, msg);
}

static void test_notify_ready_after_the_socket_serves(void **state)
{
	struct manager m;
	struct h_broker b;
	char status[400], msg[512];
	pid_t from;

	(void)state;
	start(&m, &b, "notify");
	if (ready.served != 1)
		fail_msg("READY=1 came, but the domain did not answer at once: %s (notification: '%s')",
			 strerror(-ready.served), ready.msg);
	/* the first line of the first notification, from the main pid */
	assert_int_equal(strncmp(ready.msg, "READY=1\n", 8), 0);
	assert_int_equal(ready.sender, ready.broker);
	snprintf(status, sizeof(status), "STATUS=domain '%s' ready, socket %s/takt-%s.sock", b.domain, b.rundir,
		 b.domain);
	expect_contains(ready.msg, status);
	/* nothing more while it serves */
	assert_int_equal(manager_recv(&m, msg, sizeof(msg), &from, 200), -ETIMEDOUT);
	h_broker_stop(&b);
	assert_int_equal(manager_recv(&m, msg, sizeof(msg), &from, 2000), 0);
	assert_int_equal(strncmp(msg, "STOPPING=1\n", 11), 0);
	assert_int_equal(from, ready.broker);
	expect_contains(msg, "ends");
	manager_close(&m);
	rmdir(b.rundir);
}

/* A stop with a process attached leaves the domain to the next broker
 * (systemctl restart): the status says so. */
static void test_notify_stopping_says_the_domain_is_left(void **state)
{
	struct manager m;
	struct h_broker b;
	takt_node *node;
	char msg[512];
	pid_t from;

	(void)state;
	start(&m, &b, "notify-keep");
	assert_int_equal(ready.served, 1);
	node = h_node(b.domain, "attached");
	h_broker_stop(&b);
	assert_int_equal(manager_recv(&m, msg, sizeof(msg), &from, 2000), 0);
	assert_int_equal(strncmp(msg, "STOPPING=1\n", 11), 0);
	expect_contains(msg, "left to the next broker (1 processes attached)");
	takt_node_close(node);
	manager_close(&m);
	rmdir(b.rundir);
}

int main(void)
{
#ifndef TAKT_BROKER_NOTIFIES
	printf("skipped: takt-broker was built without libsystemd (no sd_notify)\n");
	return 77;
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_notify_ready_after_the_socket_serves),
		cmocka_unit_test(test_notify_stopping_says_the_domain_is_left),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
