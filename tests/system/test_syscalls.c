/* test_syscalls.c - the data path makes no syscall, counted, not timed.
 *
 * A child process installs a seccomp filter that traps every syscall but
 * exit_group and rt_sigreturn; its SIGSYS handler counts them into shared
 * memory. Trapped syscalls are not executed, so the counting phase must not
 * need any: it loans, publishes, takes and releases only.
 */
#include "harness.h"

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000
#define N 1000

static struct h_broker broker;

struct shared {
	_Atomic int phase;          /* driven by the parent */
	_Atomic int child_phase;    /* reported by the child */
	_Atomic long traps;         /* syscalls trapped in the current phase */
	_Atomic long last_nr;
	_Atomic long membarriers;   /* of the traps, membarrier calls */
	_Atomic long published;     /* light test: samples the parent published */
	_Atomic int refuse_mb;      /* the trap refuses membarrier (-EPERM) instead */
	long counted[4];
	long counted_mb[4];
	_Atomic long consumed;      /* edge test: samples the child took */
	_Atomic long parked;        /* edge test: 1 + the samples taken when the child last armed */
	_Atomic int tid;            /* edge test: the child's taking thread */
};
static struct shared *sh;

/* A sanitizer runtime makes syscalls of its own (signal wrappers, leak
 * checks) inside the trapped region, so the count is only meaningful in
 * the normal build, which the default suite runs. */
static int sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return 1;
#else
	return 0;
#endif
}

static void on_sigsys(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	atomic_fetch_add(&sh->traps, 1);
	atomic_store(&sh->last_nr, si->si_syscall);
	if (si->si_syscall == __NR_membarrier) {
		atomic_fetch_add(&sh->membarriers, 1);
#ifdef __x86_64__
		/* as if it ran: the fence is not what this test is about;
		 * or refused, as a seccomp policy would */
		((ucontext_t *)uc)->uc_mcontext.gregs[REG_RAX] = atomic_load(&sh->refuse_mb) ? -EPERM : 0;
#endif
	}
}

/* Traps membarrier alone (on_sigsys counts it and answers for it). */
static int trap_membarrier(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};

	if (sigaction(SIGSYS, &sa, NULL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0 ? -errno : 0;
}

static int trap_all_syscalls(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_exit_group, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigreturn, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
	};
	struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};

	if (sigaction(SIGSYS, &sa, NULL) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0 ? -errno : 0;
}

/* Bounded spin on shared memory: the child may not call poll or read. */
static int await_phase(int phase)
{
	for (long i = 0; i < 4000000000L; i++)
		if (atomic_load(&sh->phase) >= phase)
			return 0;
	return -1;
}

/* Parent: waits (bounded) until the child reported phase; 0 or -1. */
static int child_reached(int phase, int ms)
{
	for (int i = 0; i < ms && atomic_load(&sh->child_phase) < phase; i++)
		usleep(1000);
	return atomic_load(&sh->child_phase) >= phase ? 0 : -1;
}

/* Parent: publishes 1..N, pausing every 100 so a subscriber of depth 256
 * keeps up. */
static void send_paced(takt_pub *p)
{
	for (uint64_t v = 1; v <= N; v++) {
		assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
		if (v % 100 == 0)
			usleep(20000);
	}
}

/* A sanitizer's runtime makes syscalls of its own in the trapped region. */
static bool skip_sanitized(void)
{
	if (sanitized())
		print_message("skipped under a sanitizer: its runtime makes syscalls of its own\n");
	return sanitized();
}

/* Whether the membarrier tests can run here (they say why not): a normal
 * build (the group starts no broker under a sanitizer), x86-64 (the trap
 * answers membarrier through the saved rax) and a kernel with
 * membarrier(GLOBAL_EXPEDITED). */
static bool membarrier_trap_usable(void)
{
	struct msg_status_reply st;

	if (skip_sanitized())
		return false;
#ifndef __x86_64__
	print_message("skipped: the trap answers membarrier only on x86-64\n");
	return false;
#endif
	assert_int_equal(h_status(broker.domain, &st), 0);
	if (!(st.limits.flags & TAKT_LIM_MEMBARRIER)) {
		print_message("skipped: the kernel has no membarrier(GLOBAL_EXPEDITED)\n");
		return false;
	}
	return true;
}

static void report(int phase)
{
	sh->counted[phase] = atomic_exchange(&sh->traps, 0);
	sh->counted_mb[phase] = atomic_exchange(&sh->membarriers, 0);
	atomic_store(&sh->child_phase, phase);
}

static int publisher_child(void *a)
{
	struct takt_pub_opts po = {.topic = "quiet", .max_payload = 64};
	takt_node *n = h_node(broker.domain, "quiet-pub");
	takt_pub *p;
	uint64_t v = 0;

	(void)a;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 1); /* warm: connection mirrored */
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	report(1);
	if (await_phase(2) < 0)
		return 3;
	for (v = 1; v <= N; v++) { /* subscriber busy: never parked */
		void *buf;

		if (takt_pub_loan(p, sizeof(v), &buf) < 0)
			return 4;
		memcpy(buf, &v, sizeof(v));
		if (takt_pub_publish(p, buf) != 1)
			return 5;
	}
	report(2);
	if (await_phase(3) < 0) /* now the subscriber has parked */
		return 3;
	takt_pub_send(p, &v, sizeof(v)); /* exactly one notify: write(eventfd) */
	report(3);
	return 0;
}

static void test_syscalls_publish_none_while_subscriber_busy(void **state)
{
	struct takt_sub_opts so = {.topic = "quiet", .queue_depth = 256};
	takt_node *n;
	const uint64_t *x;
	takt_sub *s;
	pid_t pid;

	(void)state;
	if (skip_sanitized()) {
		skip();
		return;
	}
	memset(sh, 0, sizeof(*sh));
	n = h_node(broker.domain, "quiet-sub");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(publisher_child, NULL);
	for (int i = 0; i < 1000 && takt_sub_take(s, (const void **)&x, NULL) != 0; i++)
		usleep(10000);
	takt_sub_release(s, x);
	child_reached(1, 3000);
	atomic_store(&sh->phase, 2);
	assert_int_equal(child_reached(2, 10000), 0);
	assert_int_equal(sh->counted[2], 0); /* N loans and publishes: no syscall */
	for (int i = 0; i < 200; i++) { /* drain, then park */
		while (takt_sub_take(s, (const void **)&x, NULL) == 0)
			takt_sub_release(s, x);
	}
	assert_int_equal(takt_sub_arm(s), 0);
	atomic_store(&sh->phase, 3);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted[3], 1); /* the control: one eventfd write */
	assert_int_equal(atomic_load(&sh->last_nr), __NR_write);
	takt_node_close(n);
}

/* A subscriber joins while the publisher runs under the trap: the new
 * connection and its eventfd reach the publisher through its node's agent
 * (a push from the broker), so publish still makes no syscall, and the
 * first wake-up of the new subscriber is one write. */
static int join_publisher_child(void *a)
{
	struct takt_pub_opts po = {.topic = "joined", .max_payload = 64};
	takt_node *n = h_node(broker.domain, "join-pub");
	takt_pub *p;
	uint64_t v = 0;
	int r = 0;

	(void)a;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_pub_send(p, &v, sizeof(v)) == 0); /* nobody subscribed yet */
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	report(1);
	if (await_phase(2) < 0) /* the subscriber has joined */
		return 3;
	for (v = 1; v <= N; v++) {
		void *buf;

		if (takt_pub_loan(p, sizeof(v), &buf) < 0)
			return 4;
		memcpy(buf, &v, sizeof(v));
		r = takt_pub_publish(p, buf);
		if (r != 1)
			return 5;
	}
	report(2);
	if (await_phase(3) < 0) /* now the subscriber has parked */
		return 3;
	takt_pub_send(p, &v, sizeof(v));
	report(3);
	return 0;
}

static void test_syscalls_publish_none_after_join(void **state)
{
	struct takt_sub_opts so = {.topic = "joined", .queue_depth = 256}; /* drop-oldest: the newest 256 */
	takt_node *n;
	const uint64_t *x;
	takt_sub *s;
	pid_t pid;
	uint64_t got = 0;

	(void)state;
	if (skip_sanitized()) {
		skip();
		return;
	}
	memset(sh, 0, sizeof(*sh));
	pid = h_spawn(join_publisher_child, NULL);
	assert_int_equal(child_reached(1, 3000), 0);
	n = h_node(broker.domain, "join-sub");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	atomic_store(&sh->phase, 2);
	assert_int_equal(child_reached(2, 10000), 0);
	assert_int_equal(sh->counted[2], 0); /* N publishes to the new subscriber: no syscall */
	while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
		assert_int_equal(*x, N - 256 + ++got);
		takt_sub_release(s, x);
	}
	assert_int_equal(got, 256);
	assert_int_equal(takt_sub_arm(s), 0);
	atomic_store(&sh->phase, 3);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted[3], 1); /* the eventfd came by push: one write */
	assert_int_equal(atomic_load(&sh->last_nr), __NR_write);
	assert_int_equal(takt_sub_wait(s, 0), 0);
	takt_node_close(n);
}

static int subscriber_child(void *a)
{
	struct takt_sub_opts so = {.topic = "quiet2", .queue_depth = 256, .overflow = TAKT_OVERFLOW_REJECT};
	takt_node *n = h_node(broker.domain, "quiet2-sub");
	const uint64_t *x;
	takt_sub *s;
	int got = 0;

	(void)a;
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(takt_sub_take(s, (const void **)&x, NULL) == -EAGAIN); /* conns known */
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	report(1);
	if (await_phase(2) < 0)
		return 3;
	while (got < N) {
		if (takt_sub_take(s, (const void **)&x, NULL) == 0) {
			if (*x != (uint64_t)got + 1)
				return 6;
			takt_sub_release(s, x);
			got++;
		}
	}
	report(2);
	return 0;
}

static void test_syscalls_take_release_none(void **state)
{
	struct takt_pub_opts po = {.topic = "quiet2", .max_payload = 64};
	takt_node *n;
	takt_pub *p;
	pid_t pid;

	(void)state;
	if (skip_sanitized()) {
		skip();
		return;
	}
	memset(sh, 0, sizeof(*sh));
	n = h_node(broker.domain, "quiet2-pub");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	pid = h_spawn(subscriber_child, NULL);
	assert_int_equal(child_reached(1, 10000), 0);
	atomic_store(&sh->phase, 2);
	send_paced(p);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted[2], 0); /* N takes and releases: no syscall */
	takt_node_close(n);
}

/* Request/response: a client under the trap sends N requests and takes
 * each response, busily; the server (the parent) takes busily too, so
 * nobody ever parks: sends, takes and releases make no syscall. Then the
 * other way round: the server under the trap takes, loans, responds and
 * releases for a busy client. */
static void svc_serve_busy(takt_server *srv, int until_phase)
{
	while (atomic_load(&sh->child_phase) < until_phase) {
		struct takt_request_info ri;
		const void *q;
		void *p;

		if (takt_server_take(srv, &q, &ri) != 0)
			continue;
		assert_int_equal(takt_server_loan(srv, &ri, 8, &p), 0);
		memcpy(p, q, 8);
		assert_int_equal(takt_server_respond(srv, &ri, p), 0);
		takt_server_release(srv, q);
	}
}

static int svc_client_child(void *a)
{
	takt_node *n = h_node(broker.domain, "quiet-client");
	takt_client *c;
	char out[8];

	(void)a;
	H_CHECK(takt_client_open(n, &(struct takt_service_opts){.service = "quiet", .max_request = 8}, &c) == 0);
	H_CHECK(takt_client_call(c, "warmwarm", 8, out, sizeof(out), 20000000000LL) == 8); /* first contact */
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	report(1);
	if (await_phase(2) < 0)
		return 3;
	for (uint64_t v = 1; v <= N; v++) {
		struct takt_request_info info;
		const void *x;
		void *p;
		int64_t id;

		if (takt_client_loan(c, 8, &p) < 0)
			return 4;
		memcpy(p, &v, 8);
		id = takt_client_send(c, p);
		if (id < 0)
			return 5;
		for (long i = 0; takt_client_take(c, &x, &info) != 0; i++) /* busy: never parks */
			if (i > 4000000000L)
				return 6;
		if (info.request_id != (uint64_t)id || memcmp(x, &v, 8))
			return 7;
		takt_client_release(c, x);
	}
	report(2);
	return 0;
}

static int svc_server_child(void *a)
{
	takt_node *n = h_node(broker.domain, "quiet-server");
	takt_server *srv;
	uint64_t served = 0;

	(void)a;
	H_CHECK(takt_server_open(n, &(struct takt_service_opts){.service = "quiet-s", .max_response = 8}, &srv) == 0);
	report(1);
	while (served < 1) { /* first contact: the client's response pool, before the trap */
		struct takt_request_info ri;
		const void *q;
		void *p;

		if (takt_server_take(srv, &q, &ri) != 0)
			continue;
		H_CHECK(takt_server_loan(srv, &ri, 8, &p) == 0);
		memcpy(p, q, 8);
		H_CHECK(takt_server_respond(srv, &ri, p) == 0);
		takt_server_release(srv, q);
		served++;
	}
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	report(2);
	while (served < N + 1) {
		struct takt_request_info ri;
		const void *q;
		void *p;

		if (takt_server_take(srv, &q, &ri) != 0)
			continue; /* (an idle take looks at its clients: no syscall either) */
		if (takt_server_loan(srv, &ri, 8, &p) < 0)
			return 4;
		memcpy(p, q, 8);
		if (takt_server_respond(srv, &ri, p) != 0)
			return 5;
		takt_server_release(srv, q);
		served++;
	}
	report(3);
	return 0;
}

static void test_syscalls_request_response_none(void **state)
{
	takt_node *n;
	takt_server *srv;
	takt_client *c;
	pid_t pid;

	(void)state;
	if (skip_sanitized()) {
		skip();
		return;
	}
	/* the client under the trap */
	memset(sh, 0, sizeof(*sh));
	n = h_node(broker.domain, "quiet-svc");
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "quiet", .max_response = 8}, &srv),
			 0);
	pid = h_spawn(svc_client_child, NULL);
	svc_serve_busy(srv, 1);
	atomic_store(&sh->phase, 2);
	svc_serve_busy(srv, 2);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted[2], 0); /* N sends, takes, releases: no syscall */
	takt_server_close(srv);
	/* the server under the trap */
	memset(sh, 0, sizeof(*sh));
	pid = h_spawn(svc_server_child, NULL);
	assert_int_equal(child_reached(1, 10000), 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "quiet-s", .max_request = 8}, &c), 0);
	for (uint64_t v = 0; v <= N; v++) {
		struct takt_request_info info;
		const void *x;
		void *p;

		assert_int_equal(takt_client_loan(c, 8, &p), 0);
		memcpy(p, &v, 8);
		assert_true(takt_client_send(c, p) > 0);
		while (takt_client_take(c, &x, &info) != 0) /* busy */
			;
		takt_client_release(c, x);
	}
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted[3], 0); /* N takes, loans, responds, releases: no syscall */
	takt_client_close(c);
	takt_node_close(n);
}

/* A subscriber under the trap: takes 1000 samples busily (its publisher
 * goes light, P1L), then parks: exactly one syscall, membarrier (the fence
 * it issues for the light publisher); woken, it takes the sample and
 * parks again against the now heavy publisher: no membarrier. */
static int light_subscriber_child(void *a)
{
	struct takt_sub_opts so = {.topic = "lightsc", .queue_depth = 256};
	takt_node *n = h_node(broker.domain, "lightsc-sub");
	const void *x;
	takt_sub *s;
	uint64_t got = 0;

	(void)a;
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(trap_all_syscalls() == 0);
	atomic_store(&sh->traps, 0);
	atomic_store(&sh->membarriers, 0);
	report(1);
	for (long i = 0; got < N; i++) { /* busy: never parks */
		if (i > 4000000000L)
			return 3;
		while (takt_sub_take(s, &x, NULL) == 0) {
			takt_sub_release(s, x);
			got++;
		}
	}
	report(2);
	if (await_phase(3) < 0) /* the publisher is light */
		return 3;
	if (takt_sub_arm(s) != 0) /* parks: nothing waits */
		return 4;
	report(3);
	if (await_phase(4) < 0) /* one more sample, with a wake-up */
		return 3;
	while (takt_sub_take(s, &x, NULL) != 0)
		;
	takt_sub_release(s, x);
	takt_sub_arm(s); /* parks against a heavy publisher */
	sh->counted_mb[0] = atomic_exchange(&sh->membarriers, 0);
	atomic_store(&sh->child_phase, 4);
	return 0;
}

/* P1L, counted: a park against a light publisher costs the subscriber
 * exactly one syscall (membarrier), one against a heavy publisher none
 * (the trap answers membarrier as if it ran, x86-64). */
static void test_syscalls_park_membarrier_only_against_light(void **state)
{
	struct takt_pub_opts po = {.topic = "lightsc", .max_payload = 64};
	struct proto_pool_stat ps[2];
	takt_node *n;
	takt_pub *p;
	pid_t pid;

	(void)state;
	if (!membarrier_trap_usable()) {
		skip();
		return;
	}
	memset(sh, 0, sizeof(*sh));
	n = h_node(broker.domain, "lightsc-pub");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	pid = h_spawn(light_subscriber_child, NULL);
	assert_int_equal(child_reached(1, 10000), 0);
	send_paced(p);
	assert_int_equal(child_reached(2, 10000), 0);
	assert_int_equal(sh->counted[2], 0); /* busy takes: no syscall */
	assert_int_equal(h_pools(broker.domain, ps, 2), 1);
	assert_int_equal(ps[0].light, 1);
	atomic_store(&sh->phase, 3);
	assert_int_equal(child_reached(3, 10000), 0);
	assert_int_equal(sh->counted[3], 1); /* the park: one syscall ... */
	assert_int_equal(sh->counted_mb[3], 1); /* ... membarrier */
	assert_int_equal(takt_pub_send(p, &(uint64_t){N + 1}, sizeof(uint64_t)), 1); /* sees it parked */
	assert_int_equal(h_pools(broker.domain, ps, 2), 1);
	assert_int_equal(ps[0].light, 0); /* heavy again */
	atomic_store(&sh->phase, 4);
	assert_int_equal(h_wait(pid, WAIT_MS), 0);
	assert_int_equal(sh->counted_mb[0], 0); /* the park against a heavy publisher */
	takt_node_close(n);
}

/* B0L: a publisher blocked on a subscriber that takes without a fence
 * fences it with membarrier before each sleep; refused that, it sleeps in
 * short slices, and still every sample arrives, in order, none dropped. */
static int blocked_publisher_child(void *a)
{
	struct takt_pub_opts po = {.topic = "b0l", .max_payload = 64, .block_timeout_ns = 20000000000ull};
	takt_node *n = h_node(broker.domain, "b0l-pub");
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_pub_send(p, &(uint64_t){0}, sizeof(uint64_t)) == 1); /* connected */
	H_CHECK(trap_membarrier() == 0);
	for (uint64_t v = 1; v <= N / 5; v++)
		if (takt_pub_send(p, &v, sizeof(v)) != 1) /* blocks on a depth-2 ring */
			return 4;
	report(1);
	return 0;
}

static void test_syscalls_blocked_publisher_fences_light_subscriber(void **state)
{
	struct takt_sub_opts so = {.topic = "b0l", .queue_depth = 2, .overflow = TAKT_OVERFLOW_BLOCK};
	const void *x;
	struct takt_sample_info info;
	takt_node *n;
	takt_sub *s;
	uint64_t next = 0;
	pid_t pid;

	(void)state;
	if (!membarrier_trap_usable()) {
		skip();
		return;
	}
	for (int refuse = 0; refuse < 2; refuse++) {
		memset(sh, 0, sizeof(*sh));
		atomic_store(&sh->refuse_mb, refuse);
		next = 0;
		n = h_node(broker.domain, "b0l-sub");
		assert_int_equal(takt_sub_open(n, &so, &s), 0);
		pid = h_spawn(blocked_publisher_child, NULL);
		while (next <= N / 5) {
			int r = takt_sub_take(s, &x, &info);

			if (r == -EAGAIN) {
				assert_int_equal(takt_sub_wait(s, 10000000000ll), 0);
				continue;
			}
			assert_int_equal(r, 0);
			assert_int_equal(*(const uint64_t *)x, next); /* in order, none lost */
			takt_sub_release(s, x);
			if (next++ % 10 == 0)
				usleep(3000); /* slow: the publisher fills the ring and sleeps */
		}
		assert_int_equal(h_wait(pid, WAIT_MS), 0);
		assert_int_equal(takt_sub_dropped(s), 0);
		/* it slept on us, fencing first (each refused, the second time) */
		assert_true(sh->counted_mb[1] >= 1);
		takt_node_close(n);
	}
}

/* The subscriber of the edge test: W wake-ups, each after it armed (and
 * said so), through its own epoll: edge-triggered on takt_sub_fd_edge
 * (a != NULL) or level-triggered on takt_sub_fd. */
#define EDGE_WAKES 100

static int edge_subscriber_child(void *a)
{
	struct takt_sub_opts so = {.topic = a ? "edge-et" : "edge-lt", .queue_depth = 16};
	takt_node *n = h_node(broker.domain, "edge-sub");
	struct takt_sample_info info;
	struct epoll_event ev;
	const void *x;
	takt_sub *sub;
	int ep = epoll_create1(EPOLL_CLOEXEC);

	H_CHECK(ep >= 0 && takt_sub_open(n, &so, &sub) == 0);
	ev = (struct epoll_event){.events = EPOLLIN | (a ? EPOLLET : 0)};
	H_CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, a ? takt_sub_fd_edge(sub) : takt_sub_fd(sub), &ev) == 0);
	atomic_store(&sh->tid, (int)gettid());
	report(1);
	while (atomic_load(&sh->consumed) < EDGE_WAKES + 1) {
		if (takt_sub_arm(sub) == 0) {
			/* armed having taken consumed samples */
			atomic_store(&sh->parked, atomic_load(&sh->consumed) + 1);
			H_CHECK(epoll_wait(ep, &ev, 1, 10000) == 1);
		}
		while (takt_sub_take(sub, &x, &info) == 0) {
			takt_sub_release(sub, x);
			atomic_fetch_add(&sh->consumed, 1);
		}
	}
	/* alive until the parent has read our thread's count */
	for (int i = 0; i < 30000 && atomic_load(&sh->phase) < 2; i++)
		usleep(1000);
	return 0;
}

/* read(2) calls of one thread so far (/proc/PID/task/TID/io: syscr). */
static long thread_reads(pid_t pid, int tid)
{
	char path[64], line[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/io", (int)pid, tid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "syscr: %ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* P2, counted: a subscriber woken through takt_sub_fd_edge (EPOLLET)
 * reads its eventfd never; through takt_sub_fd (level-triggered) it must
 * drain it, one read per wake-up. Each of the 100 samples is published
 * after the subscriber armed, so each is one eventfd write and one
 * wake-up. The reads are the kernel's count for the taking thread. */
static void test_syscalls_edge_fd_wakes_without_read(void **state)
{
	(void)state;
	if (skip_sanitized()) {
		skip();
		return;
	}
	for (int edge = 0; edge < 2; edge++) {
		struct takt_pub_opts po = {.topic = edge ? "edge-et" : "edge-lt", .max_payload = 64};
		takt_node *n = h_node(broker.domain, "edge-pub");
		long before = -1, after;
		takt_pub *p;
		pid_t pid;

		memset(sh, 0, sizeof(*sh));
		pid = h_spawn(edge_subscriber_child, edge ? (void *)1 : NULL);
		assert_int_equal(child_reached(1, 10000), 0);
		assert_int_equal(takt_pub_open(n, &po, &p), 0);
		/* sample k is sent once the child armed having taken k - 1:
		 * it is parked, so the publish writes its eventfd; the first
		 * (warm: the connection is made) is not counted */
		for (long k = 1; k <= EDGE_WAKES + 1; k++) {
			for (int i = 0; i < 100000 && atomic_load(&sh->parked) != k; i++)
				usleep(100);
			assert_int_equal(atomic_load(&sh->parked), k);
			if (k == 2) {
				before = thread_reads(pid, atomic_load(&sh->tid));
				assert_true(before >= 0);
			}
			assert_int_equal(takt_pub_send(p, &k, sizeof(k)), 1);
			for (int i = 0; i < 100000 && atomic_load(&sh->consumed) < k; i++)
				usleep(100);
			assert_int_equal(atomic_load(&sh->consumed), k);
		}
		after = thread_reads(pid, atomic_load(&sh->tid));
		atomic_store(&sh->phase, 2);
		assert_int_equal(h_wait(pid, WAIT_MS), 0);
		print_message("%s: %ld reads for %d wake-ups\n", edge ? "takt_sub_fd_edge, EPOLLET" : "takt_sub_fd, level",
			      after - before, EDGE_WAKES);
		assert_int_equal(after - before, edge ? 0 : EDGE_WAKES);
		takt_node_close(n);
	}
}

static int setup(void **state)
{
	(void)state;
	if (sanitized())
		return 0;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -1;
	return h_broker_start(&broker, "syscalls", NULL);
}

static int teardown(void **state)
{
	(void)state;
	if (sanitized())
		return 0;
	h_broker_stop(&broker);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_syscalls_publish_none_while_subscriber_busy),
		cmocka_unit_test(test_syscalls_publish_none_after_join),
		cmocka_unit_test(test_syscalls_take_release_none),
		cmocka_unit_test(test_syscalls_request_response_none),
		cmocka_unit_test(test_syscalls_park_membarrier_only_against_light),
		cmocka_unit_test(test_syscalls_blocked_publisher_fences_light_subscriber),
		cmocka_unit_test(test_syscalls_edge_fd_wakes_without_read),
	};

	return cmocka_run_group_tests_name("syscalls", tests, setup, teardown);
}
