/* test_alloc.c - the data path and the executor allocate nothing.
 *
 * This executable interposes malloc, calloc, realloc, posix_memalign,
 * aligned_alloc and memalign (the shared libraries resolve them here first)
 * and counts allocations on every thread while armed. Counts are exact:
 * steady state must be 0; a control path must count more than 0, and an
 * item that allocates once per run must count exactly once per run, which
 * proves the counter sees the libraries and the worker threads.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <takt/exec.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
int main(void)
{
	/* The sanitizer runtime owns malloc; counting needs the normal build,
	 * which the default suite runs. */
	printf("skipped: allocation counting needs the build without sanitizers\n");
	return 77;
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

static _Atomic int armed;
static _Atomic long allocs;

void *malloc(size_t n)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_realloc(p, n);
}

void *memalign(size_t align, size_t n)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	void *p = memalign(align, n);

	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

void free(void *p)
{
	__libc_free(p);
}

static long count_from_now(void)
{
	atomic_store(&allocs, 0);
	atomic_store(&armed, 1);
	return 0;
}

static long count_stop(void)
{
	atomic_store(&armed, 0);
	return atomic_load(&allocs);
}

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "alloc", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

static void test_alloc_steady_state_none(void **state)
{
	struct takt_pub_opts po = {.topic = "noalloc", .max_payload = 256, .history = 4};
	struct takt_sub_opts so = {.topic = "noalloc", .queue_depth = 64, .history = 2};
	takt_node *n = h_node(broker.domain, "alloc");
	struct takt_sample_info info;
	const void *x;
	takt_pub *p;
	takt_sub *s;
	void *buf;

	(void)state;
	count_from_now();
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_true(count_stop() > 0); /* the control path allocates: the counter works */
	assert_int_equal(takt_pub_send(p, "warm", 4), 1);
	assert_int_equal(takt_sub_take(s, &x, &info), 0);
	takt_sub_release(s, x);

	count_from_now();
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(takt_pub_loan(p, 100, &buf), 0);
		memcpy(buf, &i, sizeof(i));
		assert_int_equal(takt_pub_publish(p, buf), 1);
		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		assert_int_equal(*(const int *)x, i);
		takt_sub_release(s, x);
		if (i % 1000 == 0) { /* the idle edges too: empty take, arm, discard */
			assert_int_equal(takt_sub_take(s, &x, &info), -EAGAIN);
			assert_int_equal(takt_sub_arm(s), 0);
			assert_int_equal(takt_pub_loan(p, 8, &buf), 0);
			takt_pub_discard(p, buf);
		}
	}
	assert_int_equal(count_stop(), 0);
	takt_node_close(n);
}

/* Request/response: send, take, loan, respond, release, take, release. */
static void test_alloc_service_steady_state_none(void **state)
{
	takt_node *n = h_node(broker.domain, "alloc-svc");
	struct takt_request_info ri, info;
	takt_server *srv;
	takt_client *cli;
	const void *q, *x;
	void *p;

	(void)state;
	count_from_now();
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "noalloc", .max_response = 64}, &srv),
			 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "noalloc", .max_request = 64}, &cli),
			 0);
	assert_true(count_stop() > 0);
	/* first contact: the server opens the client's response pool */
	assert_int_equal(takt_client_loan(cli, 8, &p), 0);
	assert_int_equal(takt_client_send(cli, p), 1);
	assert_int_equal(takt_server_take(srv, &q, &ri), 0);
	takt_server_release(srv, q);
	count_from_now();
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(takt_client_loan(cli, 8, &p), 0);
		memcpy(p, &i, sizeof(i));
		assert_int_equal(takt_client_send(cli, p), i + 2);
		assert_int_equal(takt_server_take(srv, &q, &ri), 0);
		assert_int_equal(takt_server_loan(srv, &ri, 8, &p), 0);
		memcpy(p, q, sizeof(i));
		assert_int_equal(takt_server_respond(srv, &ri, p), 0);
		takt_server_release(srv, q);
		assert_int_equal(takt_client_take(cli, &x, &info), 0);
		assert_int_equal(*(const int *)x, i);
		takt_client_release(cli, x);
		if (i % 1000 == 0) { /* the idle edges: empty takes, arms */
			assert_int_equal(takt_client_take(cli, &x, &info), -EAGAIN);
			assert_int_equal(takt_server_take(srv, &q, &ri), -EAGAIN);
			assert_true(takt_client_arm(cli) >= 0);
			assert_true(takt_server_arm(srv) >= 0);
		}
	}
	assert_int_equal(count_stop(), 0);
	takt_client_close(cli);
	takt_server_close(srv);
	takt_node_close(n);
}

/* ---- the executor: differential count per wake phase ------------------- */

/* ceil((allocs(run_n(100)) - allocs(run_n(10))) / 90) after a warm-up: the
 * allocations of one steady-state phase, setup subtracted out. */
static long per_phase_allocs(takt_exec *ex)
{
	long a10, a100;

	assert_int_equal(takt_exec_run_n(ex, 10), 0); /* warm-up */
	count_from_now();
	assert_int_equal(takt_exec_run_n(ex, 10), 0);
	a10 = count_stop();
	count_from_now();
	assert_int_equal(takt_exec_run_n(ex, 100), 0);
	a100 = count_stop();
	return (a100 - a10 + 89) / 90;
}

static int always_fd = -1; /* an eventfd kept readable: every phase fires */

static int fd_declare(takt_triggers *t, void *u)
{
	(void)u;
	return takt_trigger_fd(t, always_fd);
}

static int work(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	return TAKT_CONTINUE;
}

static int allocating(takt_ctx *c, void *u)
{
	void *volatile p = malloc(32);

	(void)c;
	(void)u;
	free(p);
	return TAKT_CONTINUE;
}

static void always_readable(void)
{
	uint64_t one = 1;

	if (always_fd < 0) {
		always_fd = eventfd(0, EFD_CLOEXEC);
		assert_int_equal(write(always_fd, &one, sizeof(one)), sizeof(one));
	}
}

static takt_exec *exec_with(unsigned workers)
{
	struct takt_exec_opts o = {.worker_threads = workers};
	takt_exec *ex;

	always_readable();
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	return ex;
}

static void chain_of_3(unsigned workers)
{
	struct takt_item items[3] = {{.name = "head", .declare = fd_declare, .execute = work},
				     {.name = "mid", .execute = work}, {.name = "tail", .execute = work}};
	takt_exec *ex = exec_with(workers);

	assert_true(takt_exec_add_chain(ex, items, 3) >= 0);
	assert_int_equal(per_phase_allocs(ex), 0);
	takt_exec_destroy(ex);
}

static void test_alloc_exec_chain_inline(void **state)
{
	(void)state;
	chain_of_3(0);
}

static void test_alloc_exec_chain_2_workers(void **state)
{
	(void)state;
	chain_of_3(2);
}

static void test_alloc_exec_single_inline(void **state)
{
	struct takt_item it = {.name = "one", .declare = fd_declare, .execute = work};
	takt_exec *ex = exec_with(0);

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(per_phase_allocs(ex), 0);
	takt_exec_destroy(ex);
}

static void test_alloc_exec_diamond_2_workers(void **state)
{
	struct takt_item root = {.name = "a", .declare = fd_declare, .execute = work};
	struct takt_item v = {.name = "v", .execute = work};
	takt_exec *ex = exec_with(2);
	takt_graph *g;

	(void)state;
	assert_int_equal(takt_graph_create(&g), 0);
	assert_int_equal(takt_graph_vertex(g, &root), 0);
	for (int i = 1; i < 4; i++)
		assert_int_equal(takt_graph_vertex(g, &v), i);
	assert_int_equal(takt_graph_edge(g, 0, 1), 0);
	assert_int_equal(takt_graph_edge(g, 0, 2), 0);
	assert_int_equal(takt_graph_edge(g, 1, 3), 0);
	assert_int_equal(takt_graph_edge(g, 2, 3), 0);
	assert_true(takt_exec_add_graph(ex, g) >= 0);
	assert_int_equal(per_phase_allocs(ex), 0);
	takt_exec_destroy(ex);
}

static void overrun_seen(void *u, int task, const char *item, uint64_t took, uint64_t budget)
{
	(void)u;
	(void)task;
	(void)item;
	(void)took;
	(void)budget;
}

/* Budgets on every item and on the task, all overrun (1 ns) on each phase:
 * measuring and reporting them allocates nothing either. */
static void test_alloc_exec_budgets_overrun(void **state)
{
	struct takt_item items[2] = {{.name = "head", .declare = fd_declare, .execute = work, .budget_ns = 1},
				     {.name = "tail", .execute = work, .budget_ns = 1}};
	struct takt_monitor mon = {.budget_overrun = overrun_seen};
	struct takt_exec_opts o = {.worker_threads = 2, .monitor = &mon};
	struct takt_exec_stats st;
	takt_exec *ex;
	int t;

	(void)state;
	always_readable();
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	t = takt_exec_add_chain(ex, items, 2);
	assert_true(t >= 0);
	assert_int_equal(takt_exec_set_budget(ex, t, 1), 0);
	assert_int_equal(per_phase_allocs(ex), 0);
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_true(st.overruns >= 120 * 3); /* every phase overran three times */
	takt_exec_destroy(ex);
}

static int every_ms(takt_triggers *t, void *u)
{
	(void)u;
	return takt_trigger_interval(t, 1000000);
}

static void test_alloc_exec_interval(void **state)
{
	struct takt_item it = {.name = "tick", .declare = every_ms, .execute = work};
	takt_exec *ex = exec_with(0);

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(per_phase_allocs(ex), 0);
	takt_exec_destroy(ex);
}

/* A task triggered by samples a publisher in another process sends. */
static int streamer(void *a)
{
	struct takt_pub_opts po = {.topic = "feed", .max_payload = 64};
	takt_node *n = h_node(broker.domain, "streamer");
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	for (uint64_t i = 0;; i++) {
		takt_pub_send(p, &i, sizeof(i));
		usleep(200);
	}
	return 0;
}

static int sub_declare(takt_triggers *t, void *u)
{
	return takt_trigger_subscriber(t, u);
}

static int drain_samples(takt_ctx *c, void *u)
{
	const void *x;

	(void)c;
	while (takt_sub_take(u, &x, NULL) == 0)
		takt_sub_release(u, x);
	return TAKT_CONTINUE;
}

static void test_alloc_exec_subscriber_task(void **state)
{
	struct takt_sub_opts so = {.topic = "feed", .queue_depth = 64};
	takt_node *n = h_node(broker.domain, "exec-sub");
	takt_exec *ex = exec_with(2);
	takt_sub *s;
	pid_t pid;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	struct takt_item it = {.name = "take", .declare = sub_declare, .execute = drain_samples, .user = s};

	assert_true(takt_exec_add(ex, &it) >= 0);
	pid = h_spawn(streamer, NULL);
	assert_int_equal(per_phase_allocs(ex), 0);
	kill(pid, SIGKILL);
	h_wait(pid, 5000);
	takt_exec_destroy(ex);
	takt_node_close(n);
}

/* A server task and a client task ping-pong requests and responses. */
struct svc_pair {
	takt_server *srv;
	takt_client *cli;
};

static int srv_declare(takt_triggers *t, void *u)
{
	return takt_trigger_server(t, ((struct svc_pair *)u)->srv);
}

static int cli_declare(takt_triggers *t, void *u)
{
	return takt_trigger_client(t, ((struct svc_pair *)u)->cli);
}

static int serve_all(takt_ctx *c, void *u)
{
	struct svc_pair *sp = u;
	struct takt_request_info ri;
	const void *q;
	void *p;

	(void)c;
	while (takt_server_take(sp->srv, &q, &ri) == 0) {
		if (takt_server_loan(sp->srv, &ri, 8, &p) == 0)
			takt_server_respond(sp->srv, &ri, p);
		takt_server_release(sp->srv, q);
	}
	return TAKT_CONTINUE;
}

static int call_again(takt_ctx *c, void *u)
{
	struct svc_pair *sp = u;
	struct takt_request_info info;
	const void *x;
	void *p;

	(void)c;
	while (takt_client_take(sp->cli, &x, &info) == 0) {
		takt_client_release(sp->cli, x);
		if (takt_client_loan(sp->cli, 8, &p) == 0 && takt_client_send(sp->cli, p) < 0)
			takt_client_discard(sp->cli, p);
	}
	return TAKT_CONTINUE;
}

static void test_alloc_exec_service_tasks(void **state)
{
	takt_node *n = h_node(broker.domain, "exec-svc");
	takt_exec *ex = exec_with(0);
	struct svc_pair sp;
	void *p;

	(void)state;
	assert_int_equal(takt_server_open(n, &(struct takt_service_opts){.service = "exec", .max_response = 8}, &sp.srv), 0);
	assert_int_equal(takt_client_open(n, &(struct takt_service_opts){.service = "exec", .max_request = 8}, &sp.cli), 0);
	struct takt_item si = {.name = "serve", .declare = srv_declare, .execute = serve_all, .user = &sp};
	struct takt_item ci = {.name = "call", .declare = cli_declare, .execute = call_again, .user = &sp};

	assert_true(takt_exec_add(ex, &si) >= 0);
	assert_true(takt_exec_add(ex, &ci) >= 0);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(takt_client_loan(sp.cli, 8, &p), 0);
		assert_true(takt_client_send(sp.cli, p) > 0);
	}
	assert_int_equal(per_phase_allocs(ex), 0);
	takt_exec_destroy(ex);
	takt_client_close(sp.cli);
	takt_server_close(sp.srv);
	takt_node_close(n);
}

/* LET tasks: each period a cutoff on its inputs before the run, a hold
 * and a flush of its outputs at the boundary (and, for the late one, an
 * overrun with its skipped deadline each period): none of it allocates. */
struct let_io {
	takt_sub *in, *loop;
	takt_pub *out;
	uint64_t period_ns, sleep_ns;
};

static int let_declare(takt_triggers *t, void *u)
{
	struct let_io *io = u;

	takt_trigger_interval(t, io->period_ns);
	takt_let_input(t, io->in);
	if (io->loop)
		takt_let_input(t, io->loop);
	return takt_let_output(t, io->out);
}

static int let_execute(takt_ctx *c, void *u)
{
	struct let_io *io = u;
	const void *x;
	void *p;

	(void)c;
	while (takt_sub_take(io->in, &x, NULL) == 0)
		takt_sub_release(io->in, x);
	while (io->loop && takt_sub_take(io->loop, &x, NULL) == 0)
		takt_sub_release(io->loop, x);
	if (io->sleep_ns)
		usleep((useconds_t)(io->sleep_ns / 1000));
	if (takt_pub_loan(io->out, 8, &p) == 0)
		takt_pub_publish(io->out, p);
	return TAKT_CONTINUE;
}

static void test_alloc_exec_let(void **state)
{
	struct takt_sub_opts so = {.topic = "feed", .queue_depth = 64}, lo = {.topic = "let-out", .queue_depth = 8};
	struct takt_pub_opts po = {.topic = "let-out", .max_payload = 8},
			     po2 = {.topic = "let-late", .max_payload = 8};
	struct takt_monitor mon = {.budget_overrun = overrun_seen};
	struct takt_exec_opts o = {.worker_threads = 2, .monitor = &mon};
	takt_node *n = h_node(broker.domain, "exec-let");
	struct let_io io = {.period_ns = 1000000}, late = {.period_ns = 1000000, .sleep_ns = 1200000};
	struct takt_exec_stats st;
	takt_exec *ex;
	pid_t pid;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &io.in), 0);
	assert_int_equal(takt_sub_open(n, &so, &late.in), 0);
	assert_int_equal(takt_pub_open(n, &po, &io.out), 0);
	assert_int_equal(takt_pub_open(n, &po2, &late.out), 0);
	assert_int_equal(takt_sub_open(n, &lo, &io.loop), 0); /* it reads what it released */
	struct takt_item it = {.name = "let", .declare = let_declare, .execute = let_execute, .user = &io};
	struct takt_item il = {.name = "let-late", .declare = let_declare, .execute = let_execute, .user = &late};

	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	assert_int_equal(takt_exec_add(ex, &il), 1);
	pid = h_spawn(streamer, NULL);
	assert_int_equal(per_phase_allocs(ex), 0);
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_true(takt_exec_task_overruns(ex, 1) >= 20); /* the late one overran, and was counted */
	assert_true(takt_exec_task_skipped(ex, 1) >= 20);
	kill(pid, SIGKILL);
	h_wait(pid, 5000);
	takt_exec_destroy(ex);
	takt_node_close(n);
}

/* The counter works: one allocation per run is counted as exactly one. */
static void test_alloc_exec_counter_sees_item_allocation(void **state)
{
	struct takt_item it = {.name = "greedy", .declare = fd_declare, .execute = allocating};
	takt_exec *ex = exec_with(2);
	long n;

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(takt_exec_run_n(ex, 10), 0);
	count_from_now();
	assert_int_equal(takt_exec_run_n(ex, 10), 0);
	n = count_stop();
	assert_int_equal(n, 10);
	assert_int_equal(per_phase_allocs(ex), 1);
	takt_exec_destroy(ex);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_steady_state_none),
		cmocka_unit_test(test_alloc_service_steady_state_none),
		cmocka_unit_test(test_alloc_exec_chain_inline),
		cmocka_unit_test(test_alloc_exec_chain_2_workers),
		cmocka_unit_test(test_alloc_exec_single_inline),
		cmocka_unit_test(test_alloc_exec_diamond_2_workers),
		cmocka_unit_test(test_alloc_exec_interval),
		cmocka_unit_test(test_alloc_exec_budgets_overrun),
		cmocka_unit_test(test_alloc_exec_subscriber_task),
		cmocka_unit_test(test_alloc_exec_service_tasks),
		cmocka_unit_test(test_alloc_exec_let),
		cmocka_unit_test(test_alloc_exec_counter_sees_item_allocation),
	};

	return cmocka_run_group_tests_name("alloc", tests, setup, teardown);
}
#endif
