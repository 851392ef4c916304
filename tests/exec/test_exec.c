/* test_exec.c - the executor without a broker: chains, graphs, triggers,
 * the interval grid and the lifecycle. Triggers are real eventfds and
 * timerfds; workers are real threads. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <takt/exec.h>

#include "watchdog.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void kick(int efd)
{
	uint64_t one = 1;

	assert_int_equal(write(efd, &one, sizeof(one)), sizeof(one));
}

static void drain(int efd)
{
	uint64_t v;

	if (read(efd, &v, sizeof(v)) < 0) {
		/* nothing pending */
	}
}

/* ---- a recording item: appends its id to a log, returns a set outcome ---- */

struct rec {
	int id;
	int outcome;
	int trigger_fd;     /* declares an fd trigger and drains it when >= 0 */
	_Atomic int runs;
	int *log;
	_Atomic int *log_n;
};

static int rec_declare(takt_triggers *t, void *user)
{
	struct rec *r = user;

	return r->trigger_fd >= 0 ? takt_trigger_fd(t, r->trigger_fd) : 0;
}

static int rec_execute(takt_ctx *ctx, void *user)
{
	struct rec *r = user;

	(void)ctx;
	if (r->trigger_fd >= 0)
		drain(r->trigger_fd);
	atomic_fetch_add(&r->runs, 1);
	if (r->log)
		r->log[atomic_fetch_add(r->log_n, 1)] = r->id;
	return r->outcome;
}

static struct takt_item rec_item(struct rec *r)
{
	return (struct takt_item){.name = "rec", .declare = rec_declare, .execute = rec_execute, .user = r};
}

static takt_exec *make_exec(unsigned workers)
{
	struct takt_exec_opts o = {.worker_threads = workers, .thread_name_prefix = "test-w"};
	takt_exec *ex = NULL;

	assert_int_equal(takt_exec_create(&o, &ex), 0);
	return ex;
}

/* ---- chains ------------------------------------------------------------- */

static void chain_case(unsigned workers, int mid_outcome, int expect_log_n)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), log[8];
	_Atomic int log_n = 0;
	struct rec r[3] = {
		{.id = 1, .trigger_fd = efd, .log = log, .log_n = &log_n},
		{.id = 2, .outcome = mid_outcome, .trigger_fd = -1, .log = log, .log_n = &log_n},
		{.id = 3, .trigger_fd = -1, .log = log, .log_n = &log_n},
	};
	struct takt_item items[3] = {rec_item(&r[0]), rec_item(&r[1]), rec_item(&r[2])};
	struct takt_exec_stats st;
	takt_exec *ex = make_exec(workers);

	assert_int_equal(takt_exec_add_chain(ex, items, 3), 0);
	kick(efd);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(log_n, expect_log_n);
	for (int i = 0; i < expect_log_n; i++)
		assert_int_equal(log[i], i + 1); /* declared order */
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_int_equal(st.phases, 1);
	assert_int_equal(st.dispatches, 1);
	assert_int_equal(st.stop_chains, mid_outcome == TAKT_STOP_CHAIN);
	assert_int_equal(st.errors, mid_outcome < 0);
	takt_exec_destroy(ex);
	close(efd);
}

static void test_chain_order(void **state)
{
	(void)state;
	chain_case(0, TAKT_CONTINUE, 3);
	chain_case(2, TAKT_CONTINUE, 3);
}

static void test_chain_stop_chain(void **state)
{
	(void)state;
	chain_case(0, TAKT_STOP_CHAIN, 2);
	chain_case(2, TAKT_STOP_CHAIN, 2);
}

static void test_chain_error_aborts(void **state)
{
	(void)state;
	chain_case(0, -EIO, 2);
	chain_case(2, -EIO, 2);
}

/* The fault handler runs when the task fails, at most once per phase. */
static void test_chain_fault_handler_once_per_phase(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct rec head = {.id = 1, .outcome = -EPIPE, .trigger_fd = efd};
	struct rec fault = {.id = 9, .trigger_fd = -1};
	struct takt_item it = rec_item(&head), fh = rec_item(&fault);
	takt_exec *ex = make_exec(2);
	int task;

	(void)state;
	task = takt_exec_add(ex, &it);
	assert_true(task >= 0);
	assert_int_equal(takt_exec_set_fault_handler(ex, task, &fh), 0);
	for (int i = 0; i < 5; i++) {
		kick(efd);
		assert_int_equal(takt_exec_run_n(ex, 1), 0);
	}
	assert_int_equal(head.runs, 5);
	assert_int_equal(fault.runs, 5);
	takt_exec_destroy(ex);
	close(efd);
}

static int pred_false(void *u)
{
	(void)u;
	return 0;
}

static int pred_true(void *u)
{
	(void)u;
	return 1;
}

static void test_chain_item_when(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), log[8];
	_Atomic int log_n = 0;
	struct rec r[3] = {
		{.id = 1, .trigger_fd = efd, .log = log, .log_n = &log_n},
		{.id = 2, .trigger_fd = -1, .log = log, .log_n = &log_n},
		{.id = 3, .trigger_fd = -1, .log = log, .log_n = &log_n},
	};
	struct takt_item items[3] = {rec_item(&r[0]), takt_item_when(rec_item(&r[1]), pred_true, NULL),
				     takt_item_when(rec_item(&r[2]), pred_false, NULL)};
	struct takt_exec_stats st;
	takt_exec *ex = make_exec(0);

	(void)state;
	assert_int_equal(takt_exec_add_chain(ex, items, 3), 0);
	kick(efd);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(log_n, 2); /* the false predicate stopped the chain */
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_int_equal(st.stop_chains, 1);
	takt_exec_destroy(ex);
	close(efd);
}

/* ---- triggers ----------------------------------------------------------- */

static int two_intervals(takt_triggers *t, void *u)
{
	(void)u;
	takt_trigger_interval(t, 10000000);
	return takt_trigger_interval(t, 20000000);
}

static int noop(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	return TAKT_CONTINUE;
}

static void test_trigger_two_intervals_refused(void **state)
{
	struct takt_item it = {.name = "twice", .declare = two_intervals, .execute = noop};
	struct takt_item chain[2] = {it, {.name = "tail", .execute = noop}};
	takt_exec *ex = make_exec(0);

	(void)state;
	assert_int_equal(takt_exec_add(ex, &it), -EINVAL);
	assert_int_equal(takt_exec_add_chain(ex, chain, 2), -EINVAL);
	takt_exec_destroy(ex);
}

struct two_fds {
	int a, b;
	_Atomic int runs;
};

static int two_fds_declare(takt_triggers *t, void *u)
{
	struct two_fds *x = u;

	return takt_trigger_fd(t, x->a) ?: takt_trigger_fd(t, x->b);
}

static int two_fds_execute(takt_ctx *c, void *u)
{
	struct two_fds *x = u;

	(void)c;
	drain(x->a);
	drain(x->b);
	atomic_fetch_add(&x->runs, 1);
	return TAKT_CONTINUE;
}

static void test_trigger_two_in_one_phase_submit_once(void **state)
{
	struct two_fds x = {.a = eventfd(0, EFD_NONBLOCK), .b = eventfd(0, EFD_NONBLOCK)};
	struct takt_item it = {.name = "both", .declare = two_fds_declare, .execute = two_fds_execute, .user = &x};
	takt_exec *ex = make_exec(2);
	int task;

	(void)state;
	task = takt_exec_add(ex, &it);
	assert_true(task >= 0);
	kick(x.a);
	kick(x.b);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(x.runs, 1);
	assert_int_equal(takt_exec_task_dispatches(ex, task), 1);
	takt_exec_destroy(ex);
	close(x.a);
	close(x.b);
}

/* ---- intervals ---------------------------------------------------------- */

struct ticker {
	uint64_t period_ns, stall_ns;
	_Atomic int runs;
	uint64_t stamps[64];
};

static int ticker_declare(takt_triggers *t, void *u)
{
	return takt_trigger_interval(t, ((struct ticker *)u)->period_ns);
}

static int ticker_execute(takt_ctx *c, void *u)
{
	struct ticker *k = u;
	int n = atomic_fetch_add(&k->runs, 1);

	if (n < 64)
		k->stamps[n] = takt_ctx_now_ns(c);
	if (n == 0 && k->stall_ns) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)k->stall_ns};

		nanosleep(&ts, NULL);
	}
	return TAKT_CONTINUE;
}

static _Atomic uint64_t monitor_skipped;

static void on_skipped(void *u, uint64_t n)
{
	(void)u;
	atomic_fetch_add(&monitor_skipped, n);
}

static void test_interval_grid_no_burst_after_stall(void **state)
{
	struct ticker k = {.period_ns = 10000000, .stall_ns = 45000000};
	struct takt_item it = {.name = "tick", .declare = ticker_declare, .execute = ticker_execute, .user = &k};
	struct takt_monitor mon = {.skipped_cycles = on_skipped};
	struct takt_exec_opts o = {.monitor = &mon};
	struct takt_exec_stats st;
	struct timespec t0;
	uint64_t start;
	takt_exec *ex;

	(void)state;
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_true(takt_exec_add(ex, &it) >= 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	start = (uint64_t)t0.tv_sec * 1000000000ull + (uint64_t)t0.tv_nsec;
	assert_int_equal(takt_exec_run_n(ex, 4), 0);
	assert_int_equal(k.runs, 4); /* one run per phase: no catch-up burst */
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_true(st.skipped_cycles >= 3); /* the 45 ms stall spans 4 ticks */
	assert_int_equal(monitor_skipped, st.skipped_cycles);
	/* The late run happens once, right after the stall (~45 ms); then the
	 * grid goes on at its period, aligned to where it started: the next
	 * runs are at its ticks 5 and 6, never earlier (a timer does not fire
	 * early; the grid starts after `start`), where a catch-up burst would
	 * have run them at ~45 ms too. Lower bounds only: a late wake-up on a
	 * loaded machine cannot flip them. */
	assert_true(k.stamps[2] >= start + 5 * k.period_ns - 1000000);
	assert_true(k.stamps[3] >= start + 6 * k.period_ns - 1000000);
	takt_exec_destroy(ex);
}

/* Two periods share one master timer at their GCD. */
static void test_interval_two_periods_on_one_grid(void **state)
{
	struct ticker a = {.period_ns = 10000000}, b = {.period_ns = 30000000};
	struct takt_item ia = {.name = "a", .declare = ticker_declare, .execute = ticker_execute, .user = &a};
	struct takt_item ib = {.name = "b", .declare = ticker_declare, .execute = ticker_execute, .user = &b};
	takt_exec *ex = make_exec(0);

	(void)state;
	assert_true(takt_exec_add(ex, &ia) >= 0);
	assert_true(takt_exec_add(ex, &ib) >= 0);
	assert_int_equal(takt_exec_run_n(ex, 9), 0);
	assert_int_equal(a.runs, 9);
	assert_int_equal(b.runs, 3); /* every third tick */
	takt_exec_destroy(ex);
}

/* Each run of an interval task records the deadline it is for. */
#define SCHED_MAX 2200
struct scheduled {
	uint64_t period_ns;
	int task;
	uint32_t runs;
	uint64_t sched[SCHED_MAX];
};

static int scheduled_declare(takt_triggers *t, void *u)
{
	return takt_trigger_interval(t, ((struct scheduled *)u)->period_ns);
}

static int scheduled_execute(takt_ctx *c, void *u)
{
	struct scheduled *k = u;

	if (k->runs < SCHED_MAX)
		k->sched[k->runs] = takt_ctx_scheduled_ns(c);
	k->runs++;
	return TAKT_CONTINUE;
}

static _Atomic uint64_t task_skipped_seen[2];

static void on_task_skipped(void *u, int task, uint64_t n)
{
	(void)u;
	if (task >= 0 && task < 2)
		atomic_fetch_add(&task_skipped_seen[task], n);
}

/* 1 ms and 1.05 ms on one executor (no common grid finer than 50 us):
 * each task's runs plus its skipped deadlines are exactly the deadlines on
 * its grid up to its last run (a late task runs for the latest deadline
 * that passed, so its last run closes the count), both grids share one
 * anchor, set inside the run (not before the test's clock read), every run
 * is for a deadline on the task's own grid, later than the one before, and
 * never before it is due. Counts, not durations: a loaded machine (or a
 * sanitizer's slow start of the run) skips deadlines or starts the grid
 * late, it does not change the identity. */
static void test_interval_unrelated_periods_share_an_executor(void **state)
{
	static struct scheduled k[2] = {{.period_ns = 1000000}, {.period_ns = 1050000}};
	struct takt_monitor mon = {.task_skipped_cycles = on_task_skipped};
	struct takt_exec_opts o = {.monitor = &mon};
	struct takt_exec_stats st;
	uint64_t total_skipped = 0, t0, t1, anchor[2];
	takt_exec *ex;

	(void)state;
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	for (int i = 0; i < 2; i++) {
		struct takt_item it = {.name = i ? "b" : "a", .declare = scheduled_declare,
				       .execute = scheduled_execute, .user = &k[i]};

		k[i].task = takt_exec_add(ex, &it);
		assert_int_equal(k[i].task, i);
	}
	t0 = now_ns();
	assert_int_equal(takt_exec_run_for(ex, 2000000000ull), 0);
	t1 = now_ns();
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	for (int i = 0; i < 2; i++) {
		uint64_t want = 2000000000ull / k[i].period_ns;
		int64_t skipped = takt_exec_task_skipped(ex, i);
		uint64_t seen = k[i].runs + (uint64_t)skipped;

		assert_true(skipped >= 0);
		assert_true(k[i].runs > 0 && k[i].runs <= SCHED_MAX);
		/* no deadline lost or invented: the last run's deadline is the
		 * anchor plus seen periods */
		anchor[i] = k[i].sched[k[i].runs - 1] - seen * k[i].period_ns;
		assert_true(anchor[i] >= t0 && k[i].sched[k[i].runs - 1] <= t1);
		/* the window is 2 s from t0, give or take how late the run
		 * started and ended (its last deadline is before t1, above):
		 * bounded loosely, this is not a timing test */
		if (seen < want / 2)
			fail_msg("task %d: %llu deadlines in 2 s of %llu ns periods (want %llu)", i,
				 (unsigned long long)seen, (unsigned long long)k[i].period_ns, (unsigned long long)want);
		assert_int_equal(atomic_load(&task_skipped_seen[i]), (uint64_t)skipped);
		total_skipped += (uint64_t)skipped;
		for (uint32_t r = 1; r < k[i].runs; r++) {
			assert_true(k[i].sched[r] > k[i].sched[r - 1]);
			assert_int_equal((k[i].sched[r] - k[i].sched[0]) % k[i].period_ns, 0); /* its own phase */
		}
	}
	assert_int_equal(st.skipped_cycles, total_skipped);
	assert_int_equal(anchor[0], anchor[1]); /* phase kept: one anchor for both grids */
	takt_exec_destroy(ex);
}

/* A stalled run on one worker stalls only its own task (A1): a 1 ms task
 * whose third run blocks 20 ms runs once after the stall, for the latest
 * deadline (no burst), and counts the deadlines in between as its own
 * skipped cycles, while a 1 ms task on the other worker keeps its period.
 * Counts and order only: the blocked task's deadlines add up to the time
 * run, and the other task skips (almost) nothing. */
struct staller {
	uint64_t period_ns, block_ns;
	int block_at;
	uint32_t runs;
	uint64_t sched[256];
};

static int staller_declare(takt_triggers *t, void *u)
{
	return takt_trigger_interval(t, ((struct staller *)u)->period_ns);
}

static int staller_execute(takt_ctx *c, void *u)
{
	struct staller *k = u;

	if (k->runs < 256)
		k->sched[k->runs] = takt_ctx_scheduled_ns(c);
	if ((int)k->runs++ == k->block_at) {
		struct timespec ts = {.tv_nsec = (long)k->block_ns};

		nanosleep(&ts, NULL);
	}
	return TAKT_CONTINUE;
}

static void test_interval_stall_costs_only_its_task(void **state)
{
	static struct staller a = {.period_ns = 1000000, .block_ns = 20000000, .block_at = 2},
			      b = {.period_ns = 1000000, .block_at = -1};
	struct takt_item ia = {.name = "a", .declare = staller_declare, .execute = staller_execute, .user = &a};
	struct takt_item ib = {.name = "b", .declare = staller_declare, .execute = staller_execute, .user = &b};
	takt_exec *ex;
	int64_t sa, sb;
	uint32_t after = 0;

	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* a timing margin (the other task's skips) a sanitizer's slowdown
	 * could flip: the normal build runs it, alone (RUN_SERIAL) */
	print_message("skipped under a sanitizer: timing-sensitive\n");
	skip();
	return;
#endif
	ex = make_exec(2);
	assert_int_equal(takt_exec_add(ex, &ia), 0);
	assert_int_equal(takt_exec_add(ex, &ib), 1);
	assert_int_equal(takt_exec_run_for(ex, 100000000), 0);
	sa = takt_exec_task_skipped(ex, 0);
	sb = takt_exec_task_skipped(ex, 1);
	/* every deadline of each task is a run or a skip */
	assert_true(a.runs + (uint64_t)sa + 1 >= 100 && a.runs + (uint64_t)sa <= 101);
	assert_true(b.runs + (uint64_t)sb + 1 >= 100 && b.runs + (uint64_t)sb <= 101);
	assert_true(sa >= 15);     /* the 20 ms run let ~19 of its deadlines pass */
	assert_true(sb <= 5);      /* the other task kept its period meanwhile */
	for (uint32_t r = 1; r < a.runs && r < 256; r++) {
		assert_true(a.sched[r] > a.sched[r - 1]); /* no deadline twice: no burst */
		if (r == 3)
			after = r;
	}
	/* the run after the stall is for a deadline at least ~19 periods on */
	assert_true(after == 3 && a.sched[3] >= a.sched[2] + 15 * a.period_ns);
	takt_exec_destroy(ex);
}

/* A1, found by review: an fd trigger of a task in flight is taken out of
 * epoll, and a hung-up pipe (its writer closed: readable for ever) must
 * not make the dispatch thread spin while the task runs. The item sleeps
 * 20 ms per run on a worker; over 100 ms the dispatch thread itself uses
 * little CPU. */
static int hup_declare(takt_triggers *t, void *u)
{
	return takt_trigger_fd(t, *(int *)u);
}

static int hup_execute(takt_ctx *c, void *u)
{
	struct timespec ts = {.tv_nsec = 20000000};

	(void)c;
	(void)u;
	nanosleep(&ts, NULL);
	return TAKT_CONTINUE;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void test_trigger_hung_up_fd_in_flight_does_not_spin(void **state)
{
	int p[2];
	struct takt_item it = {.name = "hup", .declare = hup_declare, .execute = hup_execute, .user = &p[0]};
	takt_exec *ex = make_exec(2);
	uint64_t cpu;

	(void)state;
	assert_int_equal(pipe(p), 0);
	close(p[1]); /* hung up: EPOLLIN | EPOLLHUP for ever */
	assert_int_equal(takt_exec_add(ex, &it), 0);
	cpu = thread_cpu_ns();
	assert_int_equal(takt_exec_run_for(ex, 100000000), 0);
	cpu = thread_cpu_ns() - cpu;
	assert_true(takt_exec_task_dispatches(ex, 0) >= 2);
	assert_true(cpu < 30000000); /* spinning would be ~100 ms */
	takt_exec_destroy(ex);
	close(p[0]);
}

/* ---- syscalls per tick ---------------------------------------------------- */

/* Counts the syscalls of one thread, letting each run as usual: a seccomp
 * filter on that thread hands every syscall to a listener (user
 * notification), whose thread counts it and tells the kernel to go on. */
struct sys_count {
	_Atomic int listener;    /* the dispatch thread's filter, -1 until made */
	_Atomic long all, pwait2;
	_Atomic int done;
	long a_all, a_pw, b_all, b_pw, c_all, c_pw;
	takt_exec *ex;
	int err;
};

static void *counted_dispatch(void *arg)
{
	struct sys_count *sc = arg;
	struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF)};
	struct sock_fprog prog = {.len = 1, .filter = f};
	int fd;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    (fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog)) < 0) {
		sc->err = -errno;
		atomic_store(&sc->listener, -2);
		return NULL;
	}
	atomic_store(&sc->listener, fd); /* from here on, every syscall waits for the counter */
	sc->a_all = atomic_load(&sc->all), sc->a_pw = atomic_load(&sc->pwait2);
	sc->err = takt_exec_run_n(sc->ex, 10);
	sc->b_all = atomic_load(&sc->all), sc->b_pw = atomic_load(&sc->pwait2);
	if (sc->err == 0)
		sc->err = takt_exec_run_n(sc->ex, 60);
	sc->c_all = atomic_load(&sc->all), sc->c_pw = atomic_load(&sc->pwait2);
	atomic_store(&sc->done, 1);
	return NULL;
}

/* The counting side: until the filtered thread is gone (POLLHUP). */
static void count_syscalls(struct sys_count *sc)
{
	int fd;

	for (int i = 0; (fd = atomic_load(&sc->listener)) == -1; i++) {
		assert_true(i < 10000); /* 10 s */
		usleep(1000);
	}
	if (fd < 0)
		return;
	for (int idle = 0; idle < 100;) { /* 10 s without a syscall: something hangs */
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct seccomp_notif req;
		struct seccomp_notif_resp resp;
		int n = poll(&p, 1, 100);

		if (n == 0) {
			idle++;
			continue;
		}
		idle = 0;
		if (p.revents & POLLHUP)
			break;
		memset(&req, 0, sizeof(req));
		if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0)
			continue; /* the thread went away meanwhile */
		atomic_fetch_add(&sc->all, 1);
		if (req.data.nr == __NR_epoll_pwait2)
			atomic_fetch_add(&sc->pwait2, 1);
		resp = (struct seccomp_notif_resp){.id = req.id, .flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE};
		ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
	}
	close(fd);
}

/* An interval task alone, inline: each tick costs the dispatch thread
 * exactly one syscall, its epoll_pwait2 (no timer fd to read or re-arm,
 * no clock syscall): 50 more phases cost 50 more syscalls, all of them
 * epoll_pwait2, whatever run() costs once. */
static void test_interval_one_syscall_per_tick(void **state)
{
	struct ticker k = {.period_ns = 1000000};
	struct takt_item it = {.name = "tick", .declare = ticker_declare, .execute = noop, .user = &k};
	struct takt_exec_opts o = {.handle_signals = -1};
	struct sys_count sc = {.listener = -1};
	pthread_t t;

	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	print_message("skipped under a sanitizer: its runtime makes syscalls of its own\n");
	skip();
	return;
#endif
	assert_int_equal(takt_exec_create(&o, &sc.ex), 0);
	assert_true(takt_exec_add(sc.ex, &it) >= 0);
	assert_int_equal(pthread_create(&t, NULL, counted_dispatch, &sc), 0);
	count_syscalls(&sc);
	assert_int_equal(pthread_join(t, NULL), 0);
	if (sc.err == -EINVAL || sc.err == -ENOSYS) {
		print_message("skipped: no seccomp user notification here (%d)\n", sc.err);
		takt_exec_destroy(sc.ex);
		skip();
		return;
	}
	assert_int_equal(sc.err, 0);
	assert_int_equal(atomic_load(&sc.done), 1);
	if (sc.c_pw == 0) { /* the kernel has no epoll_pwait2: millisecond epoll_wait instead */
		print_message("skipped: no epoll_pwait2 on this kernel\n");
		takt_exec_destroy(sc.ex);
		skip();
		return;
	}
	assert_int_equal(sc.c_pw - sc.b_pw - (sc.b_pw - sc.a_pw), 50);   /* one wait per tick ... */
	assert_int_equal(sc.c_all - sc.b_all - (sc.b_all - sc.a_all), 50); /* ... and nothing else */
	takt_exec_destroy(sc.ex);
}

/* ---- the dispatch thread's scheduling -------------------------------------- */

struct where {
	int efd; /* the trigger: readable once */
	int cpu, policy, prio;
};

static int where_declare(takt_triggers *t, void *u)
{
	return takt_trigger_fd(t, ((struct where *)u)->efd);
}

static int where_execute(takt_ctx *c, void *u)
{
	struct where *w = u;
	struct sched_param sp;
	uint64_t v;

	(void)c;
	if (read(w->efd, &v, sizeof(v)) < 0)
		return -errno;
	w->cpu = sched_getcpu();
	pthread_getschedparam(pthread_self(), &w->policy, &sp);
	w->prio = sp.sched_priority;
	return TAKT_CONTINUE;
}

/* Inline items run on the dispatch thread: while run() runs it is pinned
 * and SCHED_FIFO as asked, and afterwards it is as before; lock_memory
 * locks the process's memory. As root (CI); elsewhere a refusal is
 * counted, and the test says so. */
static void test_dispatch_thread_fifo_pinned_and_restored(void **state)
{
	struct where w = {.efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC), .cpu = -1, .policy = -1, .prio = -1};
	struct takt_item it = {.name = "where", .declare = where_declare, .execute = where_execute, .user = &w};
	struct takt_exec_opts o = {.handle_signals = -1, .dispatch_sched_fifo_priority = 10, .pin_dispatch = 1,
				   .lock_memory = 1};
	struct takt_exec_stats st;
	struct sched_param sp;
	cpu_set_t before, after;
	int policy;
	takt_exec *ex;
	FILE *f;
	char line[128];
	long locked_kb = -1;

	(void)state;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	print_message("skipped under a sanitizer: mlockall would lock its shadow memory\n");
	close(w.efd);
	skip();
	return;
#endif
	if (geteuid() != 0) {
		print_message("skipped: needs root (SCHED_FIFO, mlockall)\n");
		close(w.efd);
		skip();
		return;
	}
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(before), &before), 0);
	for (int c = 0; c < CPU_SETSIZE; c++) /* the last CPU we may run on */
		if (CPU_ISSET(c, &before))
			o.dispatch_cpu = c;
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	assert_int_equal(takt_exec_add(ex, &it), 0);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(w.cpu, o.dispatch_cpu);
	assert_int_equal(w.policy, SCHED_FIFO);
	assert_int_equal(w.prio, 10);
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_int_equal(st.sched_fifo_refused, 0);
	assert_int_equal(pthread_getschedparam(pthread_self(), &policy, &sp), 0);
	assert_int_equal(policy, SCHED_OTHER); /* restored */
	assert_int_equal(pthread_getaffinity_np(pthread_self(), sizeof(after), &after), 0);
	assert_true(CPU_EQUAL(&before, &after));
	f = fopen("/proc/self/status", "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld", &locked_kb) == 1)
			break;
	fclose(f);
	assert_true(locked_kb > 0); /* mlockall(MCL_CURRENT | MCL_FUTURE) */
	munlockall();
	takt_exec_destroy(ex);
	close(w.efd);
}

/* ---- budgets ------------------------------------------------------------ */

struct napper {
	int efd;             /* the trigger: always readable, never drained */
	uint64_t nap_ns;
};

static int napper_declare(takt_triggers *t, void *u)
{
	struct napper *n = u;

	return n->efd >= 0 ? takt_trigger_fd(t, n->efd) : 0;
}

static int napper_execute(takt_ctx *c, void *u)
{
	struct napper *n = u;
	struct timespec ts = {.tv_sec = (time_t)(n->nap_ns / 1000000000), .tv_nsec = (long)(n->nap_ns % 1000000000)};

	(void)c;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return TAKT_CONTINUE;
}

struct overrun_log {
	int n;
	int task[16];
	const char *item[16];
	uint64_t took[16], budget[16];
};
static struct overrun_log overruns;

static void on_overrun(void *u, int task, const char *item, uint64_t took_ns, uint64_t budget_ns)
{
	(void)u;
	if (overruns.n < 16) {
		overruns.task[overruns.n] = task;
		overruns.item[overruns.n] = item;
		overruns.took[overruns.n] = took_ns;
		overruns.budget[overruns.n] = budget_ns;
	}
	overruns.n++;
}

/* Items and whole runs at 0.5 x and 2 x their budgets (20 ms naps against
 * 40 and 10 ms budgets, so scheduling noise cannot flip them): exactly the
 * 2 x ones are overruns, each told to the monitor once with its task, its
 * item (NULL for a whole run) and a measured time above the budget. */
static void test_budget_overrun_reported_exactly(void **state)
{
	int efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
	struct napper head = {.efd = efd, .nap_ns = 20000000}, tail = {.efd = -1, .nap_ns = 20000000},
		      solo = {.efd = efd, .nap_ns = 20000000};
	struct takt_item chain[2] = {
		{.name = "within", .declare = napper_declare, .execute = napper_execute, .user = &head,
		 .budget_ns = 40000000},
		{.name = "over", .declare = napper_declare, .execute = napper_execute, .user = &tail,
		 .budget_ns = 10000000}};
	struct takt_item one = {.name = "solo", .declare = napper_declare, .execute = napper_execute, .user = &solo};
	struct takt_monitor mon = {.budget_overrun = on_overrun};
	struct takt_exec_opts o = {.monitor = &mon};
	struct takt_exec_stats st;
	takt_exec *ex;
	int tc, ts1;

	(void)state;
	memset(&overruns, 0, sizeof(overruns));
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	tc = takt_exec_add_chain(ex, chain, 2);
	ts1 = takt_exec_add(ex, &one);
	assert_true(tc >= 0 && ts1 >= 0);
	assert_int_equal(takt_exec_set_budget(ex, tc, 80000000), 0);  /* the chain: 40 ms, 0.5 x */
	assert_int_equal(takt_exec_set_budget(ex, ts1, 10000000), 0); /* the single item: 2 x */
	assert_int_equal(takt_exec_set_budget(ex, 7, 1), -EINVAL);
	assert_int_equal(takt_exec_run_n(ex, 3), 0);
	assert_int_equal(takt_exec_task_dispatches(ex, tc), 3);
	assert_int_equal(takt_exec_task_overruns(ex, tc), 3);  /* "over", each run */
	assert_int_equal(takt_exec_task_overruns(ex, ts1), 3); /* the whole run, each time */
	assert_int_equal(takt_exec_stats(ex, &st), 0);
	assert_int_equal(st.overruns, 6);
	assert_int_equal(overruns.n, 6);
	for (int i = 0; i < 6; i++) {
		assert_true(overruns.took[i] > overruns.budget[i]);
		if (overruns.task[i] == tc) {
			assert_string_equal(overruns.item[i], "over");
			assert_int_equal(overruns.budget[i], 10000000);
		} else {
			assert_int_equal(overruns.task[i], ts1);
			assert_null(overruns.item[i]); /* a whole run */
			assert_int_equal(overruns.budget[i], 10000000);
		}
	}
	takt_exec_destroy(ex);
	close(efd);
}

/* ---- run until idle ------------------------------------------------------- */

/* A task per semaphore eventfd: each run takes one unit. */
static int unit_declare(takt_triggers *t, void *u)
{
	return takt_trigger_fd(t, *(int *)u);
}

static int unit_execute(takt_ctx *c, void *u)
{
	uint64_t v;

	(void)c;
	return read(*(int *)u, &v, sizeof(v)) == sizeof(v) ? TAKT_CONTINUE : -EIO;
}

/* Input queued before the call (5 units for one task, 2 for another, an
 * interval 10 s away): exactly those dispatches, in 5 phases, then idle
 * at once (the interval does not keep it running); a second call finds
 * nothing. A workload that never ends returns -ETIMEDOUT with what ran. */
static void test_run_until_idle_returns_exact_counts(void **state)
{
	int a = eventfd(5, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	int b = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC);
	int forever = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC);
	struct ticker slow = {.period_ns = 10ull * 1000000000};
	struct takt_item ia = {.name = "a", .declare = unit_declare, .execute = unit_execute, .user = &a};
	struct takt_item ib = {.name = "b", .declare = unit_declare, .execute = unit_execute, .user = &b};
	struct takt_item is = {.name = "slow", .declare = ticker_declare, .execute = ticker_execute, .user = &slow};
	struct takt_item ifo = {.name = "forever", .declare = unit_declare, .execute = noop, .user = &forever};
	uint64_t per[4];
	struct takt_exec_summary sum = {.task_dispatches = per, .n_task_dispatches = 4};
	takt_exec *ex = make_exec(2);
	uint64_t t0;

	(void)state;
	assert_int_equal(takt_exec_add(ex, &ia), 0);
	assert_int_equal(takt_exec_add(ex, &ib), 1);
	assert_int_equal(takt_exec_add(ex, &is), 2);
	t0 = now_ns();
	assert_int_equal(takt_exec_run_until_idle(ex, 5000000000ull, &sum), 0);
	assert_true(now_ns() - t0 < 5000000000ull); /* idle, not the timeout */
	assert_int_equal(per[0], 5);
	assert_int_equal(per[1], 2);
	assert_int_equal(per[2], 0); /* its deadline is 10 s away */
	assert_int_equal(per[3], 0); /* no such task */
	assert_int_equal(sum.dispatches, 7);
	assert_int_equal(sum.phases, 5);
	assert_int_equal(sum.errors, 0);
	assert_int_equal(takt_exec_run_until_idle(ex, 5000000000ull, &sum), 0);
	assert_int_equal(sum.dispatches, 0);
	assert_int_equal(sum.phases, 0);
	/* a level-triggered fd nobody drains: never idle */
	assert_int_equal(takt_exec_add(ex, &ifo), 3);
	assert_int_equal(takt_exec_run_until_idle(ex, 100000000, &sum), -ETIMEDOUT);
	assert_true(per[3] > 0);
	assert_int_equal(sum.dispatches, per[3]);
	assert_int_equal(takt_exec_run_until_idle(ex, 1, NULL), -ETIMEDOUT); /* after one phase */
	takt_exec_destroy(ex);
	close(a);
	close(b);
	close(forever);
}

/* Interval deadlines that passed between calls are due for run_until_idle
 * (it never skips ahead): the task runs once for the latest and counts the
 * others skipped. A stop that arrives in the same wake as due deadlines
 * leaves them due, not run and not skipped (found by review: they were
 * counted skipped and lost). And a call from inside a run is refused with
 * the caller's summary untouched. */
struct idle_tick {
	takt_exec *ex;
	uint64_t sched;
	int runs, busy;
	uint64_t arr[2];
};

static int idle_tick_declare(takt_triggers *t, void *u)
{
	(void)u;
	return takt_trigger_interval(t, 1000000);
}

static int idle_tick_execute(takt_ctx *c, void *u)
{
	struct idle_tick *k = u;
	struct takt_exec_summary s = {.task_dispatches = k->arr, .n_task_dispatches = 2};

	k->sched = takt_ctx_scheduled_ns(c);
	k->runs++;
	k->arr[0] = k->arr[1] = 77;
	k->busy = takt_exec_run_until_idle(k->ex, 0, &s);
	if (k->arr[0] != 77 || k->arr[1] != 77)
		k->busy = -1000; /* touched */
	return TAKT_CONTINUE;
}

static void test_run_until_idle_due_deadlines_and_stop(void **state)
{
	struct idle_tick k = {0};
	struct takt_item it = {.name = "tick", .declare = idle_tick_declare, .execute = idle_tick_execute, .user = &k};
	struct takt_exec_opts o = {.handle_signals = -1};
	struct timespec gap = {.tv_nsec = 3500000};
	struct takt_exec_summary sum = {0};
	takt_exec *ex;

	(void)state;
	assert_int_equal(takt_exec_create(&o, &ex), 0);
	k.ex = ex;
	assert_int_equal(takt_exec_add(ex, &it), 0);
	assert_int_equal(takt_exec_run_until_idle(ex, 0, &sum), 0); /* anchors; nothing due yet */
	assert_int_equal(sum.dispatches, 0);
	nanosleep(&gap, NULL);
	takt_exec_stop(ex); /* remembered: the next call wakes with it and the due deadlines */
	assert_int_equal(takt_exec_run_until_idle(ex, 1000000000, &sum), 0);
	assert_int_equal(sum.dispatches, 0);
	assert_int_equal(takt_exec_task_skipped(ex, 0), 0); /* still due, not lost */
	assert_int_equal(takt_exec_run_until_idle(ex, 1000000000, &sum), 0);
	assert_true(sum.dispatches >= 1);
	assert_true(sum.dispatches + sum.skipped_cycles >= 3); /* 3.5 ms: three deadlines at least */
	assert_int_equal((uint64_t)takt_exec_task_skipped(ex, 0), sum.skipped_cycles);
	assert_true(k.sched != 0); /* an interval run knows its deadline */
	assert_int_equal(k.busy, -EBUSY); /* from inside a run: refused, summary untouched */
	takt_exec_destroy(ex);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void *stopper(void *arg)
{
	struct timespec ts = {.tv_nsec = 50000000};

	nanosleep(&ts, NULL);
	takt_exec_stop(arg);
	return NULL;
}

static void test_lifecycle_stop_wakes_idle_executor(void **state)
{
	struct ticker k = {.period_ns = 10ull * 1000000000};
	struct takt_item it = {.name = "slow", .declare = ticker_declare, .execute = ticker_execute, .user = &k};
	takt_exec *ex = make_exec(2);
	pthread_t th;
	uint64_t t0;

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(pthread_create(&th, NULL, stopper, ex), 0);
	t0 = now_ns();
	assert_int_equal(takt_exec_run(ex), 0);
	assert_true(now_ns() - t0 < 5ull * 1000000000); /* not the 10 s interval */
	assert_int_equal(k.runs, 0);
	pthread_join(th, NULL);
	takt_exec_destroy(ex);
}

static void test_lifecycle_sigterm_ends_run(void **state)
{
	int p[2], status;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(pipe(p), 0);
	pid = fork();
	if (pid == 0) {
		struct ticker k = {.period_ns = 10ull * 1000000000};
		struct takt_item it = {.name = "idle", .declare = ticker_declare, .execute = ticker_execute, .user = &k};
		struct takt_exec_opts o = {.worker_threads = 1};
		sigset_t set;
		takt_exec *ex;

		/* A process that wants run() to take SIGTERM blocks it first, so
		 * it cannot arrive before run() is listening. */
		sigemptyset(&set);
		sigaddset(&set, SIGTERM);
		sigprocmask(SIG_BLOCK, &set, NULL);
		if (takt_exec_create(&o, &ex) < 0 || takt_exec_add(ex, &it) < 0)
			_exit(2);
		if (write(p[1], "r", 1) != 1)
			_exit(3);
		_exit(takt_exec_run(ex) == 0 ? 0 : 4);
	}
	assert_int_equal(read(p[0], &c, 1), 1);
	kill(pid, SIGTERM);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(p[0]);
	close(p[1]);
}

static void test_lifecycle_drain_and_run_for(void **state)
{
	struct ticker k = {.period_ns = 5000000};
	struct takt_item it = {.name = "t", .declare = ticker_declare, .execute = ticker_execute, .user = &k};
	takt_exec *ex = make_exec(2);

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(takt_exec_run_for(ex, 52000000), 0);
	assert_in_range(k.runs, 5, 11);
	assert_int_equal(takt_exec_drain(ex, 1000000000), 0); /* not running: nothing to wait for */
	takt_exec_destroy(ex);
}

/* drain: no new triggers are taken, the item in flight finishes, within a
 * timeout (-ETIMEDOUT when it is too short). */
struct slow {
	int efd;
	_Atomic int started, finished;
};

static int slow_declare(takt_triggers *t, void *u)
{
	return takt_trigger_fd(t, ((struct slow *)u)->efd);
}

static int slow_execute(takt_ctx *c, void *u)
{
	struct slow *s = u;
	struct timespec ts = {.tv_nsec = 300000000};

	(void)c;
	drain(s->efd);
	atomic_store(&s->started, 1);
	nanosleep(&ts, NULL);
	atomic_store(&s->finished, 1);
	return TAKT_CONTINUE;
}

static void *run_forever(void *arg)
{
	takt_exec_run(arg);
	return NULL;
}

static void test_lifecycle_drain_finishes_work_in_flight(void **state)
{
	struct slow s = {.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
	struct takt_item it = {.name = "slow", .declare = slow_declare, .execute = slow_execute, .user = &s};
	takt_exec *ex = make_exec(2);
	pthread_t th;

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(pthread_create(&th, NULL, run_forever, ex), 0);
	kick(s.efd);
	for (int i = 0; i < 2000 && !atomic_load(&s.started); i++)
		usleep(1000);
	assert_int_equal(atomic_load(&s.started), 1);
	assert_int_equal(takt_exec_drain(ex, 20000000), -ETIMEDOUT); /* 20 ms < the 300 ms item */
	assert_int_equal(takt_exec_drain(ex, 5000000000ull), 0);
	assert_int_equal(atomic_load(&s.finished), 1); /* drained means finished */
	pthread_join(th, NULL);
	takt_exec_destroy(ex);
	close(s.efd);
}

/* ---- regressions found in review ------------------------------------------ */

/* A stop arriving in the same wake as a trigger used to leave the task
 * marked "seen this phase" forever: it never ran again and the executor
 * spun on the level-triggered fd. */
static void test_lifecycle_stop_with_trigger_does_not_strand_task(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct rec r = {.id = 1, .trigger_fd = efd};
	struct takt_item it = rec_item(&r);
	takt_exec *ex = make_exec(0);

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	kick(efd);
	takt_exec_stop(ex);
	assert_int_equal(takt_exec_run_n(ex, 1), 0); /* returns on the stop */
	assert_int_equal(r.runs, 0);
	assert_int_equal(takt_exec_run_n(ex, 1), 0); /* the trigger is still pending: it runs */
	assert_int_equal(r.runs, 1);
	takt_exec_destroy(ex);
	close(efd);
}

/* drain() on an idle executor used to leave its stop behind for the next run. */
static void test_lifecycle_drain_idle_leaves_no_stop(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct rec r = {.id = 1, .trigger_fd = efd};
	struct takt_item it = rec_item(&r);
	takt_exec *ex = make_exec(2);

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(takt_exec_drain(ex, 100000000), 0);
	kick(efd);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(r.runs, 1);
	takt_exec_destroy(ex);
	close(efd);
}

/* A worker between its quit check and its futex wait used to sleep through
 * destroy: pthread_join hung. */
static void test_lifecycle_create_destroy_loop(void **state)
{
	(void)state;
	for (int i = 0; i < 500; i++)
		takt_exec_destroy(make_exec(8));
}

static void *run_briefly(void *arg)
{
	takt_exec_run_for(arg, 200000000);
	return NULL;
}

static void test_lifecycle_second_run_refused(void **state)
{
	struct ticker k = {.period_ns = 10000000};
	struct takt_item it = {.name = "t", .declare = ticker_declare, .execute = ticker_execute, .user = &k};
	takt_exec *ex = make_exec(1);
	pthread_t th;
	struct timespec ts = {.tv_nsec = 50000000};

	(void)state;
	assert_true(takt_exec_add(ex, &it) >= 0);
	assert_int_equal(pthread_create(&th, NULL, run_briefly, ex), 0);
	nanosleep(&ts, NULL);
	assert_int_equal(takt_exec_run_n(ex, 1), -EBUSY);
	assert_int_equal(takt_exec_add(ex, &it), -EBUSY);
	pthread_join(th, NULL);
	takt_exec_destroy(ex);
}

/* A failed add used to leave its epoll registrations behind, and the next
 * task to get that index was woken by the failed task's fd. */
static void test_trigger_failed_add_leaves_no_registration(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), efd2 = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	FILE *f = tmpfile();
	struct rec a = {.id = 1, .trigger_fd = efd}, b = {.id = 2, .trigger_fd = fileno(f)};
	struct rec later = {.id = 3, .trigger_fd = efd2};
	struct takt_item ia = rec_item(&a), ib = rec_item(&b), il = rec_item(&later);
	takt_exec *ex = make_exec(0);
	takt_graph *g;

	(void)state;
	assert_int_equal(takt_graph_create(&g), 0);
	assert_int_equal(takt_graph_vertex(g, &ia), 0);
	assert_int_equal(takt_graph_vertex(g, &ib), 1); /* a regular file: epoll refuses it */
	assert_true(takt_exec_add_graph(ex, g) < 0);
	assert_int_equal(takt_exec_add(ex, &il), 0);
	kick(efd); /* the failed task's fd */
	assert_int_equal(takt_exec_run_for(ex, 50000000), 0);
	assert_int_equal(later.runs, 0);
	kick(efd2);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(later.runs, 1);
	takt_exec_destroy(ex);
	fclose(f);
	close(efd);
	close(efd2);
}

/* Every root of a graph declares its triggers (not only the first 64);
 * here only the 70th root has one. */
static void test_graph_every_root_declares(void **state)
{
	static struct rec r[70];
	int fds[70];
	takt_exec *ex = make_exec(2);
	takt_graph *g;

	(void)state;
	assert_int_equal(takt_graph_create(&g), 0);
	for (int i = 0; i < 70; i++) {
		fds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		r[i] = (struct rec){.id = i, .trigger_fd = i == 69 ? fds[i] : -1};
		struct takt_item it = rec_item(&r[i]);

		assert_int_equal(takt_graph_vertex(g, &it), i);
	}
	assert_true(takt_exec_add_graph(ex, g) >= 0);
	kick(fds[69]);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(r[69].runs, 1);
	takt_exec_destroy(ex);
	for (int i = 0; i < 70; i++)
		close(fds[i]);
}

static void test_trigger_refusals(void **state)
{
	struct ticker a = {.period_ns = 10000000}, b = {.period_ns = 10000001};
	struct takt_item ia = {.name = "a", .declare = ticker_declare, .execute = ticker_execute, .user = &a};
	struct takt_item ib = {.name = "b", .declare = ticker_declare, .execute = ticker_execute, .user = &b};
	struct takt_item bare = {.name = "bare", .execute = noop};
	struct takt_item when = takt_item_when(ia, pred_true, NULL);
	takt_exec *ex = make_exec(0), *ex2 = make_exec(0);
	takt_graph *g;

	(void)state;
	assert_int_equal(takt_exec_add(ex, &bare), -EINVAL); /* no trigger: would never run */
	assert_true(takt_exec_add(ex, &ia) >= 0);
	assert_true(takt_exec_add(ex, &ib) >= 0);            /* any periods share an executor */
	assert_true(takt_exec_add(ex, &when) >= 0);
	assert_int_equal(takt_exec_add(ex2, &when), -EBUSY); /* a wrapper has one owner */
	assert_int_equal(takt_graph_create(&g), 0);
	assert_int_equal(takt_graph_vertex(g, &ia), 0);
	assert_true(takt_exec_add_graph(ex, g) >= 0);
	assert_int_equal(takt_exec_add_graph(ex2, g), -EBUSY); /* and so has a graph */
	takt_exec_destroy(ex2);
	takt_exec_destroy(ex);
}

static void test_chain_last_error(void **state)
{
	int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct rec r[2] = {{.id = 1, .trigger_fd = efd}, {.id = 2, .outcome = -EIO, .trigger_fd = -1}};
	struct takt_item items[2] = {rec_item(&r[0]), rec_item(&r[1])};
	takt_exec *ex = make_exec(2);
	int task;

	(void)state;
	task = takt_exec_add_chain(ex, items, 2);
	assert_true(task >= 0);
	assert_int_equal(takt_exec_task_last_error(ex, task), 0);
	kick(efd);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(takt_exec_task_last_error(ex, task), -EIO);
	r[1].outcome = TAKT_CONTINUE;
	kick(efd);
	assert_int_equal(takt_exec_run_n(ex, 1), 0);
	assert_int_equal(takt_exec_task_last_error(ex, task), 0);
	takt_exec_destroy(ex);
	close(efd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chain_order),
		cmocka_unit_test(test_chain_stop_chain),
		cmocka_unit_test(test_chain_error_aborts),
		cmocka_unit_test(test_chain_fault_handler_once_per_phase),
		cmocka_unit_test(test_chain_item_when),
		cmocka_unit_test(test_trigger_two_intervals_refused),
		cmocka_unit_test(test_trigger_two_in_one_phase_submit_once),
		cmocka_unit_test(test_interval_grid_no_burst_after_stall),
		cmocka_unit_test(test_interval_two_periods_on_one_grid),
		cmocka_unit_test(test_interval_unrelated_periods_share_an_executor),
		cmocka_unit_test(test_interval_stall_costs_only_its_task),
		cmocka_unit_test(test_trigger_hung_up_fd_in_flight_does_not_spin),
		cmocka_unit_test(test_interval_one_syscall_per_tick),
		cmocka_unit_test(test_dispatch_thread_fifo_pinned_and_restored),
		cmocka_unit_test(test_budget_overrun_reported_exactly),
		cmocka_unit_test(test_run_until_idle_returns_exact_counts),
		cmocka_unit_test(test_run_until_idle_due_deadlines_and_stop),
		cmocka_unit_test(test_lifecycle_stop_wakes_idle_executor),
		cmocka_unit_test(test_lifecycle_sigterm_ends_run),
		cmocka_unit_test(test_lifecycle_drain_and_run_for),
		cmocka_unit_test(test_lifecycle_drain_finishes_work_in_flight),
		cmocka_unit_test(test_lifecycle_stop_with_trigger_does_not_strand_task),
		cmocka_unit_test(test_lifecycle_drain_idle_leaves_no_stop),
		cmocka_unit_test(test_lifecycle_create_destroy_loop),
		cmocka_unit_test(test_lifecycle_second_run_refused),
		cmocka_unit_test(test_trigger_failed_add_leaves_no_registration),
		cmocka_unit_test(test_graph_every_root_declares),
		cmocka_unit_test(test_trigger_refusals),
		cmocka_unit_test(test_chain_last_error),
	};

	watchdog_arm(120);
	return cmocka_run_group_tests_name("exec", tests, NULL, NULL);
}
