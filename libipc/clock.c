/* clock.c - CLOCK_MONOTONIC for publish_ns, read through the TSC (clock.h). */
#include "clock.h"
#include "sys.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__)
static inline uint64_t tsc_read(void)
{
	return __builtin_ia32_rdtsc(); /* unordered: an early read only makes the stamp earlier */
}

/* Whether a line of f starting with key contains word (space-delimited). */
static bool file_has(const char *path, const char *key, const char *word)
{
	char line[4096];
	size_t wl = strlen(word);
	bool found = false;
	FILE *f = fopen(path, "re");

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		const char *p = line;

		if (strncmp(line, key, strlen(key)))
			continue;
		while ((p = strstr(p, word)) != NULL) {
			if ((p == line || p[-1] == ' ' || p[-1] == '\t') &&
			    (p[wl] == ' ' || p[wl] == '\n' || p[wl] == 0)) {
				found = true;
				break;
			}
			p += wl;
		}
		break; /* the first matching line is enough (every CPU has the same flags) */
	}
	fclose(f);
	return found;
}

/* The TSC may stand in for CLOCK_MONOTONIC when the kernel keeps that
 * clock on it (clocksource tsc, or kvm-clock, which scales the same TSC)
 * and it runs at a constant rate through every power state. */
static bool tsc_usable(void)
{
	static _Atomic int known = -1; /* -1 not yet, 0 no, 1 yes */
	int k = atomic_load_explicit(&known, memory_order_relaxed);
	char cs[64] = "";
	FILE *f;

	if (k >= 0)
		return k == 1;
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
	if (f) {
		if (!fgets(cs, sizeof(cs), f))
			cs[0] = 0;
		fclose(f);
	}
	k = (!strcmp(cs, "tsc\n") || !strcmp(cs, "kvm-clock\n")) &&
	    file_has("/proc/cpuinfo", "flags", "constant_tsc") && file_has("/proc/cpuinfo", "flags", "nonstop_tsc");
	/* relaxed: every thread computes the same answer. */
	atomic_store_explicit(&known, k, memory_order_relaxed);
	return k == 1;
}
#else
static inline uint64_t tsc_read(void)
{
	return 0;
}

static bool tsc_usable(void)
{
	return false;
}
#endif

void stamp_clock_init_plain(struct stamp_clock *c)
{
	memset(c, 0, sizeof(*c));
}

void stamp_clock_init(struct stamp_clock *c)
{
	stamp_clock_init_plain(c);
	c->tsc = tsc_usable();
}

/* A new anchor: the clock, the TSC, the clock again. The first read is
 * not later than CLOCK_MONOTONIC at the TSC read, which is the anchor, and
 * earlier by at most the time between the two clock reads: an anchor is
 * taken only when that was short (STAMP_TIGHT_NS; a read preempted in
 * between would make every stamp of the anchor early by the preemption,
 * and a rate measured from it wrong), a few tries. The rate is measured
 * over a window that starts at a base anchor and is renewed every
 * STAMP_WINDOW_NS (the rate found in the last window serves meanwhile),
 * so a rate that changes (a host moving the guest) is followed within a
 * window. Returns the second clock read. */
static uint64_t stamp_resync(struct stamp_clock *c)
{
	uint64_t ns = 0, t = 0, ns2 = 0;
	bool tight = false;

	for (int i = 0; i < 4 && !tight; i++) {
		ns = sys_mono_ns();
		t = tsc_read();
		ns2 = sys_mono_ns();
		tight = ns2 - ns <= STAMP_TIGHT_NS;
	}
	if (!tight) {
		c->tsc_a = t - c->resync_ticks; /* not an anchor: the next stamp reads the clock again */
		return ns2;
	}
	if (!c->tsc_0 || t <= c->tsc_0 || ns <= c->ns_0) {
		c->tsc_0 = t; /* the first anchor, or the TSC went back: start over */
		c->ns_0 = ns;
		c->mult = 0;
	} else if (ns - c->ns_0 >= STAMP_CALIBRATE_NS) {
		unsigned __int128 m = ((unsigned __int128)(ns - c->ns_0) << 32) / (t - c->tsc_0);

		/* Biased low by 2^-9 (1953 ppm): more than the rate's error
		 * (two anchors STAMP_TIGHT_NS apart at worst over the span:
		 * 500 ppm) and NTP's slew of CLOCK_MONOTONIC (500 ppm) together,
		 * so a stamp never runs ahead of the clock. */
		m -= m >> 9;
		if (m > 0 && m < (unsigned __int128)1 << 40) { /* sane: 1/256 .. 256 ns per tick */
			c->mult = (uint64_t)m;
			c->resync_ticks = (uint64_t)(((unsigned __int128)STAMP_RESYNC_NS << 32) / c->mult);
		}
		if (ns - c->ns_0 >= STAMP_WINDOW_NS) {
			c->tsc_0 = t; /* a new window; its rate replaces this one's when long enough */
			c->ns_0 = ns;
		}
	}
	c->tsc_a = t;
	c->ns_a = ns;
	return ns2;
}

static inline uint64_t stamp_read(struct stamp_clock *c)
{
	uint64_t t;

	if (!c->tsc)
		return sys_mono_ns();
	t = tsc_read();
	/* An anchor older than the resync interval, a TSC that went back
	 * (t - tsc_a wraps) or no rate yet: read the clock. */
	if (!c->mult || t - c->tsc_a >= c->resync_ticks)
		return stamp_resync(c);
	return c->ns_a + (uint64_t)(((unsigned __int128)(t - c->tsc_a) * c->mult) >> 32);
}

uint64_t stamp_clock_now(struct stamp_clock *c)
{
	uint64_t ns = stamp_read(c);

	if (ns < c->last)
		ns = c->last; /* never before the stamp before it */
	c->last = ns;
	return ns;
}

uint64_t stamp_clock_at(struct stamp_clock *c, uint64_t at)
{
	uint64_t ns = stamp_read(c);

	if (at <= ns) {
		ns = at; /* never later than now */
	} else {
		/* the extrapolation runs up to 1 us behind the clock: ask the
		 * clock before stamping a logical time that is already due
		 * (a period's boundary, released right at it) a little early */
		uint64_t m = sys_mono_ns();

		ns = at <= m ? at : m;
	}
	if (ns < c->last)
		ns = c->last; /* never before the stamp before it */
	c->last = ns;
	return ns;
}
