/* test_restart_hostile.c - a hostile client while a restarted broker adopts.
 *
 * While a new broker waits for the processes of the one that died, any
 * client can talk to it: raw clients here send what a hostile one could
 * (requests held while the registry is adopted, a registry of their own
 * making). The broker must neither crash, nor leak what it is sent, nor
 * let one client take the domain from the processes that come back.
 */
#include "harness.h"
#include "layout.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static void broker_kill(struct h_broker *b)
{
	assert_int_equal(kill(b->pid, SIGKILL), 0);
	assert_int_equal(h_wait(b->pid, 5000), 128 + SIGKILL);
	b->pid = 0;
}

/* Connects to the broker that replaces a killed one, once it listens. */
static int connect_new(const char *domain, int *ret_sock)
{
	for (int i = 0; i < 5000; i++) {
		if (proto_connect(domain, ret_sock) == 0)
			return 0;
		usleep(1000);
	}
	return -ETIMEDOUT;
}

/* Eventfds the process holds (its fd table). */
static int eventfds_of(pid_t pid)
{
	char path[64], link[64];
	struct dirent *d;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((d = readdir(dir))) {
		char p[320];
		ssize_t len;

		snprintf(p, sizeof(p), "%s/%s", path, d->d_name);
		len = readlink(p, link, sizeof(link) - 1);
		if (len > 0) {
			link[len] = 0;
			n += !strcmp(link, "anon_inode:[eventfd]");
		}
	}
	closedir(dir);
	return n;
}

/* ---- requests held during the adoption ----------------------------------- */

#define FLOOD 20

/* Sends FLOOD requests at once, each with a descriptor (HELLO may carry
 * one), to a broker that holds the first while it adopts, then hangs up. */
static int flood_child(void *arg)
{
	const char *domain = arg;
	int s;

	H_CHECK(connect_new(domain, &s) == 0);
	for (int i = 0; i < FLOOD; i++) {
		struct msg_hello req = {.abi_version = TAKT_ABI_VERSION, .name = "flood"};
		int efd = eventfd(0, EFD_CLOEXEC);

		H_CHECK(efd >= 0);
		proto_hdr_init(&req.hdr, MSG_HELLO, sizeof(req), (uint32_t)i + 1);
		H_CHECK(proto_send(s, &req, sizeof(req), &efd, 1) == 0);
		close(efd);
	}
	close(s);
	return 0;
}

/* A client whose first request is held (the broker does not read its
 * socket meanwhile) and that hangs up with more queued behind it: the
 * broker must not read the rest over the held one, leaking each
 * descriptor it carried. */
static void test_restart_hostile_held_requests_leak_nothing(void **state)
{
	struct h_broker b;
	pid_t flood;
	int n = -1;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rh-held", "[socket]\nreadopt_timeout_ms = 1000\n"), 0);
	broker_kill(&b); /* its socket is left: the next broker waits for its processes */
	flood = h_spawn(flood_child, b.domain);
	assert_int_equal(h_broker_restart(&b), 0); /* nobody came back within 1 s */
	assert_int_equal(h_wait(flood, 10000), 0);
	/* no subscriber: the broker holds no eventfd of its own */
	for (int i = 0; i < 200 && (n = eventfds_of(b.pid)) != 0; i++)
		usleep(10000);
	assert_int_equal(n, 0);
	h_broker_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_hostile_held_requests_leak_nothing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
