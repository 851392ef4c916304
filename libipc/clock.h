/* clock.h - CLOCK_MONOTONIC for publish_ns, read through the TSC.
 *
 * A publish stamps its sample with CLOCK_MONOTONIC. Through the vDSO that
 * read orders the pipeline (lfence; rdtsc) and, on a KVM guest, walks the
 * kvm-clock page: measured, it made every polling hop ~45 ns slower, the
 * largest cost of a publish (docs/performance.md). A stamp_clock reads the
 * TSC unordered instead and extrapolates from an anchor, a pair
 * (clock_gettime, TSC) taken at most STAMP_RESYNC_NS earlier, at a rate
 * calibrated against clock_gettime over up to a second and biased low by
 * 2^-9 (more than the rate's own error and the 500 ppm NTP may slew
 * CLOCK_MONOTONIC together). So a
 * stamp is never later than CLOCK_MONOTONIC when it is taken, never
 * earlier than the stamp before it, and early by at most the bias over one
 * resync interval (40 ns) plus the anchor's own read time (at most
 * STAMP_TIGHT_NS: an anchor whose clock reads were further apart,
 * preempted say, is not used); documented as at most 1 us. The rate is
 * measured over at least 2 ms, so a publisher's first 2 ms stamp with
 * clock_gettime. Without a usable TSC (not x86-64, the
 * kernel does not keep CLOCK_MONOTONIC on it, or it is not constant and
 * nonstop) every stamp is a plain clock_gettime.
 *
 * One stamp_clock per publisher: its handle is used by one thread at a
 * time (ipc.h), so nothing here is shared.
 */
#ifndef TAKT_CLOCK_H
#define TAKT_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#define STAMP_RESYNC_NS 20000ull    /* an anchor serves this long at most */
#define STAMP_CALIBRATE_NS 2000000ull /* a rate is measured over at least this span */
#define STAMP_WINDOW_NS 1000000000ull  /* and over at most about this one */
#define STAMP_TIGHT_NS 500ull          /* an anchor's clock reads are at most this far apart */

struct stamp_clock {
	bool tsc;              /* the TSC may be used (stamp_clock_init) */
	uint64_t tsc_a, ns_a;  /* the anchor: ns_a <= CLOCK_MONOTONIC at tsc_a */
	uint64_t tsc_0, ns_0;  /* the base anchor of the rate's window */
	uint64_t mult;         /* ns per tick << 32, biased low; 0 until calibrated */
	uint64_t resync_ticks; /* STAMP_RESYNC_NS in ticks */
	uint64_t last;         /* the last stamp handed out */
};

/* Decides once per process whether the TSC may be used (reads
 * /proc/cpuinfo and the current clocksource: call outside the data path)
 * and starts a clock. */
void stamp_clock_init(struct stamp_clock *c);
/* A publish stamp: CLOCK_MONOTONIC as described above. No syscall (the
 * vDSO's clock_gettime at most). */
uint64_t stamp_clock_now(struct stamp_clock *c);
/* A stamp for a sample published late on purpose (takt_pub_flush): `at`,
 * unless that is later than stamp_clock_now or earlier than the stamp
 * before it. */
uint64_t stamp_clock_at(struct stamp_clock *c, uint64_t at);
/* For tests: the same clock, never using the TSC. */
void stamp_clock_init_plain(struct stamp_clock *c);

#endif
