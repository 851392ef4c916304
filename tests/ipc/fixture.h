/* fixture.h - a broker-less domain for the libipc unit tests.
 *
 * Builds the management segment the way the broker does (segment.c's
 * seg_header_fill) and one publisher pool segment, in anonymous MAP_SHARED
 * memory: a fork()ed child shares every segment at the same address, so
 * its seg_view and seg_pool copies stay valid.
 *
 * Also: a shared scratch area for test bookkeeping, child-process reaping
 * with a deadline, and the sanitizer switches the stress tests scale by.
 */
#ifndef TAKT_TEST_FIXTURE_H
#define TAKT_TEST_FIXTURE_H

#include "segment.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(__SANITIZE_THREAD__)
#define FIXTURE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FIXTURE_TSAN 1
#endif
#endif
#ifndef FIXTURE_TSAN
#define FIXTURE_TSAN 0
#endif

/* TSan runs atomics 5-20x slower: stress loops divide their counts by this
 * so the suite stays within its time budget under TSan too. */
#define FIXTURE_SCALE (FIXTURE_TSAN ? 16u : 1u)

struct fixture_config {
	uint64_t payload_size;                 /* the pool's bytes per chunk */
	uint32_t pool_chunks;                  /* chunks in the pool */
	uint32_t connections;
	uint32_t queue_depth_max;              /* power of two */
	size_t scratch_size;                   /* shared bytes for the test's own use */
};

struct fixture {
	struct seg_view v;
	void *mgmt;
	size_t mgmt_size;
	struct seg_pool pool; /* one publisher's pool (publisher port 0) */
	struct seg_subseg subseg; /* one subscriber's segment (subscriber port 0) */
	void *scratch; /* zeroed, MAP_SHARED, scratch_size bytes */
	size_t scratch_size;
};

/* Small limits: a pool of 128 chunks of 64 B, 4 connections of up to 64
 * slots. Tests copy it and change what they need. */
extern const struct fixture_config fixture_default;

/* Maps and formats a domain. 0, -ENOMEM (mmap failed), -EPROTO (seg_view
 * rejected the header the fixture wrote: a fixture or layout bug). */
int fixture_init(struct fixture *f, const struct fixture_config *cfg);
/* Accepts a half-built or zeroed fixture. */
void fixture_destroy(struct fixture *f);

/* Anonymous MAP_SHARED, zeroed, or NULL. */
void *fixture_map_shared(size_t size);
void fixture_unmap(void *p, size_t size);

/* Prepares connection ci the way the broker's conn_create and both ends'
 * preparation do: ACTIVE, mask = capacity - 1, head = tail = start, return
 * ring empty, no waiter, slots zeroed, a new incarnation. */
struct takt_conn *fixture_conn_reset(struct fixture *f, uint32_t ci, uint32_t capacity, uint64_t start);
/* Connection ci's words and rings in the pool and the subscriber's segment
 * (its regions: ci modulo each end's connection slots). */
struct takt_conn_pub *fixture_pw(struct fixture *f, uint32_t ci);
struct takt_conn_sub *fixture_sw(struct fixture *f, uint32_t ci);
struct takt_ring_slot *fixture_ring(struct fixture *f, uint32_t ci);
_Atomic uint32_t *fixture_rets(struct fixture *f, uint32_t ci);

#define FIXTURE_MAX_CHILDREN 16

/* Reaps n (<= FIXTURE_MAX_CHILDREN) children. Each must exit 0 within
 * timeout_s seconds; stragglers are killed (by their pid). Returns how many
 * failed, and prints why. */
int fixture_wait_children(const pid_t *pids, int n, unsigned timeout_s);

#endif
