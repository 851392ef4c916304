/* sys.h - small system helpers every part of takt uses: the monotonic
 * clock in nanoseconds, futex waits and wakes, container_of. Private to the
 * libraries and tools of this tree (not installed). */
#ifndef TAKT_SYS_H
#define TAKT_SYS_H

#include <linux/futex.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* CLOCK_MONOTONIC in ns (vDSO, no syscall). */
static inline uint64_t sys_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline struct timespec sys_ns_to_ts(uint64_t ns)
{
	return (struct timespec){.tv_sec = (time_t)(ns / 1000000000ull), .tv_nsec = (long)(ns % 1000000000ull)};
}

/* Sleeps while *w == val, for at most timeout_ns (< 0: no limit). shared:
 * the word is in memory other processes map (a shared futex); else the
 * cheaper private kind. Returns the syscall's result (spurious returns
 * happen: callers re-check). */
static inline long sys_futex_wait(const _Atomic uint32_t *w, uint32_t val, int64_t timeout_ns, int shared)
{
	struct timespec ts, *tp = NULL;

	if (timeout_ns >= 0) {
		ts = sys_ns_to_ts((uint64_t)timeout_ns);
		tp = &ts;
	}
	return syscall(SYS_futex, (const uint32_t *)w, shared ? FUTEX_WAIT : FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

static inline void sys_futex_wake(const _Atomic uint32_t *w, int n, int shared)
{
	syscall(SYS_futex, (const uint32_t *)w, shared ? FUTEX_WAKE : FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

#endif
