/* timer.c - the interval grid: one master timerfd for every interval task.
 *
 * The master timer ticks at the GCD of all periods, with absolute expiry
 * times (TFD_TIMER_ABSTIME on a grid anchored at the first run), so periods
 * stay phase-aligned to each other and never drift. A task of period p runs
 * when the tick count crosses a multiple of p / gcd. After a stall (the
 * dispatch thread was busy or descheduled) the timer reports several
 * expirations at once: each task runs once, not once per missed tick, and
 * the missed ticks are counted (skipped_cycles) and told to the monitor.
 */
#include "executor.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

uint64_t grid_gcd(uint64_t a, uint64_t b)
{
	while (b) {
		uint64_t t = a % b;

		a = b;
		b = t;
	}
	return a;
}

int grid_update(struct takt_exec *ex)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG_GRID};
	struct itimerspec its = {0};
	uint64_t g = 0, start;

	for (uint32_t i = 0; i < ex->n_tasks; i++)
		if (ex->tasks[i]->period_ns)
			g = grid_gcd(ex->tasks[i]->period_ns, g);
	ex->grid_dirty = false;
	if (!g)
		return 0;
	if (ex->grid_fd < 0) {
		ex->grid_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (ex->grid_fd < 0 || epoll_ctl(ex->epfd, EPOLL_CTL_ADD, ex->grid_fd, &ev) < 0)
			return -errno;
	}
	ex->grid_ns = g;
	ex->tick = 0;
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		t->period_ticks = t->period_ns / g;
		t->last_tick = 0;
	}
	start = exec_now_ns() + g;
	its.it_value.tv_sec = (time_t)(start / 1000000000);
	its.it_value.tv_nsec = (long)(start % 1000000000);
	its.it_interval.tv_sec = (time_t)(g / 1000000000);
	its.it_interval.tv_nsec = (long)(g % 1000000000);
	return timerfd_settime(ex->grid_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0 ? -errno : 0;
}

void grid_fire(struct takt_exec *ex, void (*mark)(struct takt_exec *, struct task *))
{
	uint64_t n;

	if (read(ex->grid_fd, &n, sizeof(n)) != sizeof(n) || n == 0)
		return;
	if (n > 1) {
		atomic_fetch_add_explicit(&ex->st.skipped_cycles, n - 1, memory_order_relaxed);
		if (ex->has_monitor && ex->monitor.skipped_cycles)
			ex->monitor.skipped_cycles(ex->monitor.user, n - 1);
	}
	ex->tick += n;
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		if (!t->period_ticks || ex->tick / t->period_ticks == t->last_tick / t->period_ticks)
			continue;
		t->last_tick = ex->tick; /* once, however many of its periods passed */
		mark(ex, t);
	}
}
