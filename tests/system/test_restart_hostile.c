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

/* ---- a registry the broker did not write --------------------------------- */

/* A client of the old broker: its registry (read-only), process, epoch. */
struct raw {
	int sock, reg_fd;
	uint32_t proc;
	uint64_t epoch;
	size_t reg_size;
};

static int raw_hello(const char *domain, struct raw *r)
{
	struct h_raw h;
	struct stat st;

	H_CHECK(h_raw_hello(domain, &h) == 0 && fstat(h.reg_fd, &st) == 0);
	r->sock = h.sock;
	r->reg_fd = h.reg_fd;
	r->reg_size = (size_t)st.st_size;
	r->proc = h.proc;
	r->epoch = h.epoch;
	return 0;
}

/* READOPT of process proc at epoch with registry fd: the reply's status,
 * or -EPIPE when the broker is gone. */
static int readopt(int sock, int fd, uint32_t proc, uint64_t epoch)
{
	struct msg_readopt m = {.abi_version = TAKT_ABI_VERSION, .proc = proc, .epoch = epoch};

	return h_raw_call(sock, &m, sizeof(m), MSG_READOPT, &fd, 1, NULL);
}

struct hostile_ctx {
	const char *domain;
	pid_t honest;
	struct h_chan ready, go;
};

static struct hostile_ctx hc;

/* A registry whose pages the broker cannot read: a file of the right size
 * on a tmpfs with room for its first page only (in a mount namespace of
 * our own), that page copied from the real registry so that every header
 * check passes. Reading any later page faults (SIGBUS), as it would in a
 * registry the sender truncated. 0: refused; 1: accepted; 77: no mount. */
static int unreadable_registry_child(void *arg)
{
	char dir[] = "/tmp/takt-rh-XXXXXX", path[64];
	struct raw r;
	void *src;
	char c;
	int fd, s, st;

	(void)arg;
	H_CHECK(raw_hello(hc.domain, &r) == 0);
	H_CHECK(h_chan_send(&hc.ready, "r", 1) == 0);
	H_CHECK(h_chan_recv(&hc.go, &c, 1, 20000) == 0);
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || !mkdtemp(dir))
		return 77;
	if (mount("tmpfs", dir, "tmpfs", 0, "size=4k") < 0) {
		rmdir(dir);
		return 77;
	}
	snprintf(path, sizeof(path), "%s/registry", dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	src = mmap(NULL, r.reg_size, PROT_READ, MAP_SHARED, r.reg_fd, 0);
	H_CHECK(fd >= 0 && src != MAP_FAILED);
	H_CHECK(ftruncate(fd, (off_t)r.reg_size) == 0);
	H_CHECK(pwrite(fd, src, 4096, 0) == 4096);
	H_CHECK(connect_new(hc.domain, &s) == 0);
	st = readopt(s, fd, r.proc, r.epoch);
	close(s);
	close(fd);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	return st == 0 ? 1 : 0;
}

/* The registry a node hands back must be one a broker sealed (as every
 * segment is, against shrinking and growing): another file could lose its
 * pages under the broker while it reads them. */
static void test_restart_hostile_unsealed_registry_refused(void **state)
{
	struct h_broker b;
	pid_t child;
	int r, st;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rh-unsealed", "[socket]\nreadopt_timeout_ms = 1000\n"), 0);
	hc.domain = b.domain;
	assert_int_equal(h_chan_open(&hc.ready), 0);
	assert_int_equal(h_chan_open(&hc.go), 0);
	child = h_spawn(unreadable_registry_child, NULL);
	assert_int_equal(h_chan_recv(&hc.ready, &c, 1, 10000), 0);
	broker_kill(&b);
	assert_int_equal(h_chan_send(&hc.go, "g", 1), 0);
	r = h_broker_restart(&b);
	st = h_wait(child, 20000);
	h_chan_close(&hc.ready);
	h_chan_close(&hc.go);
	if (st == 77) {
		h_broker_stop(&b);
		fprintf(stderr, "cannot mount a tmpfs in a mount namespace here\n");
		skip();
	}
	assert_int_equal(r, 0); /* the broker is alive and serves */
	assert_int_equal(st, 0); /* and refused the claim */
	h_broker_stop(&b);
}

/* Hands back a registry of its own making: a sealed copy of the real one
 * with another epoch, so that it alone matches. 0: refused; 1: adopted. */
static int forger_child(void *arg)
{
	struct raw r;
	void *src, *dst;
	char c;
	int fd, s, st;

	(void)arg;
	H_CHECK(raw_hello(hc.domain, &r) == 0);
	H_CHECK(h_chan_send(&hc.ready, "r", 1) == 0);
	H_CHECK(h_chan_recv(&hc.go, &c, 1, 20000) == 0);
	fd = memfd_create("takt-forged", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	H_CHECK(fd >= 0 && ftruncate(fd, (off_t)r.reg_size) == 0);
	src = mmap(NULL, r.reg_size, PROT_READ, MAP_SHARED, r.reg_fd, 0);
	dst = mmap(NULL, r.reg_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	H_CHECK(src != MAP_FAILED && dst != MAP_FAILED);
	memcpy(dst, src, r.reg_size);
	((struct takt_mgmt_header *)dst)->epoch = r.epoch + 1;
	munmap(src, r.reg_size);
	munmap(dst, r.reg_size);
	H_CHECK(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL) == 0);
	H_CHECK(connect_new(hc.domain, &s) == 0);
	st = readopt(s, fd, r.proc, r.epoch + 1);
	kill(hc.honest, SIGCONT); /* the honest node comes back after us */
	close(s);
	close(fd);
	return st == 0 ? 1 : 0;
}

static int honest_child(void *arg)
{
	takt_node *n = h_node(hc.domain, "honest");
	uint64_t epoch = takt_node_epoch(n);
	takt_pub *p;
	char c;

	(void)arg;
	H_CHECK(h_chan_send(&hc.ready, "r", 1) == 0);
	H_CHECK(h_chan_recv(&hc.go, &c, 1, 30000) == 0);
	for (int i = 0; i < 300 && takt_node_epoch(n) == epoch; i++)
		usleep(10000);
	H_CHECK(takt_node_epoch(n) != epoch); /* taken back */
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "rh/after", .max_payload = 8}, &p) == 0);
	takt_pub_close(p);
	takt_node_close(n);
	return 0;
}

/* A client that reaches the new broker first cannot hand it a registry
 * that no broker wrote: the broker must adopt only its predecessor's, or
 * one client decides the epoch (and every entry) of the domain and the
 * processes that come back are refused. */
static void test_restart_hostile_forged_registry_refused(void **state)
{
	struct h_broker b;
	pid_t honest, forger;
	int st;
	char c;

	(void)state;
	assert_int_equal(h_broker_start(&b, "rh-forged", "[socket]\nreadopt_timeout_ms = 1000\n"), 0);
	hc.domain = b.domain;
	assert_int_equal(h_chan_open(&hc.ready), 0);
	assert_int_equal(h_chan_open(&hc.go), 0);
	honest = h_spawn(honest_child, NULL);
	assert_int_equal(h_chan_recv(&hc.ready, &c, 1, 10000), 0);
	hc.honest = honest;
	forger = h_spawn(forger_child, NULL);
	assert_int_equal(h_chan_recv(&hc.ready, &c, 1, 10000), 0);
	/* the honest node is held back until the forger has made its claim */
	assert_int_equal(kill(honest, SIGSTOP), 0);
	assert_int_equal(waitpid(honest, &st, WUNTRACED), honest);
	assert_true(WIFSTOPPED(st));
	broker_kill(&b);
	assert_int_equal(h_chan_send(&hc.go, "g", 1), 0); /* to the forger */
	assert_int_equal(h_broker_restart(&b), 0);
	assert_int_equal(h_chan_send(&hc.go, "g", 1), 0); /* to the honest node */
	assert_int_equal(h_wait(forger, 20000), 0);
	assert_int_equal(h_wait(honest, 20000), 0);
	h_chan_close(&hc.ready);
	h_chan_close(&hc.go);
	h_broker_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_restart_hostile_held_requests_leak_nothing),
		cmocka_unit_test(test_restart_hostile_unsealed_registry_refused),
		cmocka_unit_test(test_restart_hostile_forged_registry_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
