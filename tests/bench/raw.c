/* raw.c - the floors: what the hardware and the kernel cost without takt.
 *
 *   raw shm ping-pong       a counter on two cache lines of a shared page,
 *                           busy-polling: cross-core, cross-process handoff
 *   raw two-line handoff    the same, but each message is a payload line
 *                           named by a flag line: what a zero-copy sample
 *                           (a ring slot naming a chunk) must move
 *   raw eventfd ping-pong   two eventfds, blocking read/write: the kernel's
 *                           blocking wake-up
 *   raw SPSC ring           8-byte messages through a bare shared-memory
 *                           ring, one release store per message: throughput
 *   memcpy                  one core copying a payload: bandwidth
 *   raw timerfd             an absolute periodic timerfd read in a loop:
 *                           the kernel's timer lateness
 */
#include "bench.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- raw shm ping-pong --------------------------------------------------- */

/* Each counter has one writer; they sit 128 bytes apart, on separate cache
 * lines and outside the line pair the adjacent-line prefetcher pulls. */
struct shm_lines {
	_Atomic uint64_t ping; /* written by A only */
	char pad[120];
	_Atomic uint64_t pong; /* written by B only */
};
_Static_assert(offsetof(struct shm_lines, pong) == 128, "ping and pong must not share a line pair");
_Static_assert(sizeof(struct shm_lines) <= BENCH_SCRATCH, "shm_lines must fit the scratch area");

/* The counter is the whole message here, but a real handoff publishes a
 * payload written before it, so both directions use release/acquire:
 * S1 (A) -> S2 (B) carries ping, S3 (B) -> S4 (A) carries pong. */
static int shm_ping(struct side *s)
{
	struct shm_lines *l = (struct shm_lines *)s->sh->scratch;
	uint64_t t0 = bench_now_ns();

	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		/* S1: release, pairs with B's acquire S2. */
		atomic_store_explicit(&l->ping, i, memory_order_release);
		/* S4: acquire, pairs with B's release S3. */
		while (atomic_load_explicit(&l->pong, memory_order_acquire) != i)
			bench_spin(s);
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	/* S1 once more, with the value that ends B's loop. */
	atomic_store_explicit(&l->ping, BENCH_STOP, memory_order_release);
	return 0;
}

static int shm_echo(struct side *s)
{
	struct shm_lines *l = (struct shm_lines *)s->sh->scratch;
	uint64_t seen = 0, v;

	for (;;) {
		/* S2: acquire, pairs with A's release S1. */
		while ((v = atomic_load_explicit(&l->ping, memory_order_acquire)) == seen)
			bench_spin(s);
		if (v == BENCH_STOP)
			return 0;
		/* S3: release, pairs with A's acquire S4. */
		atomic_store_explicit(&l->pong, v, memory_order_release);
		seen = v;
	}
}

const struct impl raw_shm_pingpong = { .run_a = shm_ping, .run_b = shm_echo };

/* ---- raw two-line handoff ------------------------------------------------ */

/* Each direction: the writer stores the payload into chunk (i % 8) and then
 * the flag (release); the reader spins on the flag (acquire) and then reads
 * the chunk the flag names (its address depends on the flag's value, as a
 * sample's does on its ring slot). Every flag and chunk on a line pair of
 * its own. Nothing else: no pool, no checks, no wake-up test. */
#define TL_CHUNKS 8

struct tl_line {
	_Atomic uint64_t v;
	char pad[120];
};

struct tl_lines {
	struct tl_line ping, pong;          /* flags: A writes ping, B pong */
	struct tl_line a_chunk[TL_CHUNKS];  /* written by A */
	struct tl_line b_chunk[TL_CHUNKS];  /* written by B */
};
_Static_assert(sizeof(struct tl_lines) <= BENCH_SCRATCH, "tl_lines must fit the scratch area");

/* Sends i: payload, then flag (T1: release, pairs with the reader's T2). */
static void tl_send(struct tl_line *flag, struct tl_line *chunks, uint64_t i)
{
	atomic_store_explicit(&chunks[i % TL_CHUNKS].v, i, memory_order_relaxed);
	atomic_store_explicit(&flag->v, i, memory_order_release);
}

/* Waits for a flag other than seen, then reads the chunk it names (T2:
 * acquire pairs with the writer's T1). Returns the payload. */
static uint64_t tl_recv(struct side *s, struct tl_line *flag, struct tl_line *chunks, uint64_t seen)
{
	uint64_t f;

	while ((f = atomic_load_explicit(&flag->v, memory_order_acquire)) == seen)
		bench_spin(s);
	return f == BENCH_STOP ? f : atomic_load_explicit(&chunks[f % TL_CHUNKS].v, memory_order_relaxed);
}

static int tl_ping(struct side *s)
{
	struct tl_lines *l = (struct tl_lines *)s->sh->scratch;
	uint64_t t0 = bench_now_ns();

	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		uint64_t v;

		tl_send(&l->ping, l->a_chunk, i);
		if ((v = tl_recv(s, &l->pong, l->b_chunk, i - 1)) != i)
			return bench_fail(s, -EPROTO, "two-line echo %llu, expected %llu", (unsigned long long)v,
					  (unsigned long long)i);
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	atomic_store_explicit(&l->ping.v, BENCH_STOP, memory_order_release); /* ends B's loop */
	return 0;
}

static int tl_echo(struct side *s)
{
	struct tl_lines *l = (struct tl_lines *)s->sh->scratch;

	for (uint64_t seen = 0;;) {
		uint64_t v = tl_recv(s, &l->ping, l->a_chunk, seen);

		if (v == BENCH_STOP)
			return 0;
		tl_send(&l->pong, l->b_chunk, v);
		seen = v;
	}
}

const struct impl raw_two_line = { .run_a = tl_ping, .run_b = tl_echo };

/* ---- raw eventfd ping-pong ----------------------------------------------- */

static int efd_prepare(struct side *s)
{
	s->fd[0] = eventfd(0, EFD_CLOEXEC); /* A -> B */
	s->fd[1] = eventfd(0, EFD_CLOEXEC); /* B -> A */
	if (s->fd[0] < 0 || s->fd[1] < 0)
		return bench_fail(s, -errno, "eventfd");
	return 0;
}

static void efd_unprepare(struct side *s)
{
	for (int i = 0; i < 2; i++)
		if (s->fd[i] >= 0)
			close(s->fd[i]);
}

/* One blocking eventfd read or write; EINTR is retried. */
static int efd_io(struct side *s, int fd, uint64_t *v, bool wr)
{
	for (;;) {
		ssize_t k = wr ? write(fd, v, sizeof *v) : read(fd, v, sizeof *v);

		if (k == (ssize_t)sizeof *v)
			return 0;
		if (k >= 0)
			return bench_fail(s, -EIO, "eventfd: short %s", wr ? "write" : "read");
		if (errno != EINTR)
			return bench_fail(s, -errno, "eventfd %s", wr ? "write" : "read");
	}
}

/* Strict alternation keeps each eventfd's count at 0 or 1, so the value read
 * is the value written: 1 bounces, anything else ends B's loop. */
static int efd_ping(struct side *s)
{
	uint64_t t0 = bench_now_ns(), v;

	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		v = 1;
		if (efd_io(s, s->fd[0], &v, true) < 0 || efd_io(s, s->fd[1], &v, false) < 0)
			return s->err;
		bench_stamp(s, i, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	v = 2;
	return efd_io(s, s->fd[0], &v, true);
}

static int efd_echo(struct side *s)
{
	uint64_t v;

	for (;;) {
		if (efd_io(s, s->fd[0], &v, false) < 0)
			return s->err;
		if (v != 1)
			return 0;
		if (efd_io(s, s->fd[1], &v, true) < 0)
			return s->err;
	}
}

const struct impl raw_efd_pingpong = {
	.prepare = efd_prepare, .unprepare = efd_unprepare, .run_a = efd_ping, .run_b = efd_echo,
};

/* ---- raw SPSC ring --------------------------------------------------------- */

#define RING_CAP 256u /* as deep as takt's deepest default-config queue */
#define RAW_BATCH 50000u

/* Lamport's ring with cached indices (as DPDK's and Aeron's): each side
 * reads the other's index only when its cached copy says full or empty.
 * head and tail on their own line pairs; the slots after them. */
struct raw_ring {
	_Atomic uint64_t head; /* producer (A) only */
	char pad0[120];
	_Atomic uint64_t tail; /* consumer (B) only */
	char pad1[120];
	_Atomic uint64_t slot[RING_CAP];
};
_Static_assert(offsetof(struct raw_ring, tail) == 128, "head and tail on separate line pairs");
_Static_assert(sizeof(struct raw_ring) <= BENCH_SCRATCH, "raw_ring must fit the scratch area");

/* Producer: pushes 1, 2, 3 ... until the consumer raises w[0]. */
static int ring_produce(struct side *s)
{
	struct raw_ring *r = (struct raw_ring *)s->sh->scratch;
	_Atomic uint64_t *done = &s->sh->w[0].v;
	uint64_t head = 0, tail = 0;

	for (;;) {
		if (head - tail == RING_CAP) {
			/* P1: acquire pairs with the consumer's release C2: it has
			 * read every slot below tail. */
			while (head - (tail = atomic_load_explicit(&r->tail, memory_order_acquire)) == RING_CAP) {
				if (atomic_load_explicit(done, memory_order_relaxed))
					return 0;
				bench_spin(s);
			}
		}
		atomic_store_explicit(&r->slot[head % RING_CAP], head + 1, memory_order_relaxed);
		/* P2: one release per message, pairs with the consumer's acquire C1. */
		atomic_store_explicit(&r->head, ++head, memory_order_release);
		/* relaxed: written once, by the consumer; seeing it late costs nothing. */
		if ((head & 1023) == 0 && atomic_load_explicit(done, memory_order_relaxed))
			return 0;
	}
}

/* Consumer: times batches of RAW_BATCH messages, after the warm-up ones. */
static int ring_consume(struct side *s)
{
	struct raw_ring *r = (struct raw_ring *)s->sh->scratch;
	uint64_t tail = 0, head = 0, t0 = 0, total = (s->warmup + s->n) * RAW_BATCH;

	s->sh->batch = RAW_BATCH;
	for (uint64_t got = 0; got < total;) {
		uint64_t v;

		if (tail == head) {
			/* C1: acquire pairs with the producer's release P2. */
			while ((head = atomic_load_explicit(&r->head, memory_order_acquire)) == tail)
				bench_spin(s);
		}
		v = atomic_load_explicit(&r->slot[tail % RING_CAP], memory_order_relaxed);
		/* C2: release pairs with the producer's acquire P1. */
		atomic_store_explicit(&r->tail, ++tail, memory_order_release);
		if (v != tail)
			return bench_fail(s, -EPROTO, "ring slot held %llu, expected %llu", (unsigned long long)v,
					  (unsigned long long)tail);
		if (++got % RAW_BATCH == 0)
			bench_stamp(s, got / RAW_BATCH, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	atomic_store_explicit(&s->sh->w[0].v, 1, memory_order_relaxed); /* the producer stops */
	return 0;
}

/* The consumer measures, so it is the one on side A's side of the report:
 * A produces, B consumes and writes the samples. */
const struct impl raw_spsc_ring = { .run_a = ring_produce, .run_b = ring_consume };

/* ---- raw zero-copy handoff ---------------------------------------------------- */

/* The physical floor of zero-copy throughput: the ring above carries chunk
 * indices, each message's payload is written into its own chunk line (one
 * payload line crosses per message), and the consumer hands every chunk
 * back through a second SPSC ring (cached indices, batched like the
 * first), which the producer refills its free stack from. No reference
 * counts, no checks, nothing but the lines zero copy must move. */
#define ZC_CHUNKS 512u
#define ZC_RET 512u /* holds every chunk: the return never waits */

struct zc_region {
	_Atomic uint64_t head; /* producer */
	char pad0[120];
	_Atomic uint64_t tail; /* consumer */
	char pad1[120];
	_Atomic uint64_t ret_head; /* consumer */
	char pad2[120];
	_Atomic uint64_t ret_tail; /* producer */
	char pad3[120];
	_Atomic uint32_t slot[RING_CAP];
	_Atomic uint32_t ret[ZC_RET];
	struct {
		_Atomic uint64_t v;
		char pad[56];
	} chunk[ZC_CHUNKS];
};
_Static_assert(sizeof(struct zc_region) <= BENCH_SCRATCH, "zc_region must fit the scratch area");

static int zc_produce(struct side *s)
{
	struct zc_region *r = (struct zc_region *)s->sh->scratch;
	_Atomic uint64_t *done = &s->sh->w[0].v;
	uint32_t free_stack[ZC_CHUNKS], n_free = ZC_CHUNKS;
	uint64_t head = 0, tail = 0, rtail = 0, rhead = 0, seq = 0;

	for (uint32_t i = 0; i < ZC_CHUNKS; i++)
		free_stack[i] = i;
	for (;;) {
		uint32_t c;

		while (n_free == 0) { /* take returns back, all at once */
			/* Z1: acquire pairs with the consumer's release of ret_head. */
			rhead = atomic_load_explicit(&r->ret_head, memory_order_acquire);
			while (rtail != rhead)
				free_stack[n_free++] = atomic_load_explicit(&r->ret[rtail++ % ZC_RET], memory_order_relaxed);
			/* Z2: release: our reads of the return slots come first. */
			atomic_store_explicit(&r->ret_tail, rtail, memory_order_release);
			if (n_free == 0) {
				if (atomic_load_explicit(done, memory_order_relaxed))
					return 0;
				bench_spin(s);
			}
		}
		if (head - tail == RING_CAP) {
			/* P1: acquire pairs with the consumer's release C2. */
			while (head - (tail = atomic_load_explicit(&r->tail, memory_order_acquire)) == RING_CAP) {
				if (atomic_load_explicit(done, memory_order_relaxed))
					return 0;
				bench_spin(s);
			}
		}
		c = free_stack[--n_free];
		atomic_store_explicit(&r->chunk[c].v, ++seq, memory_order_relaxed); /* the payload line */
		atomic_store_explicit(&r->slot[head % RING_CAP], c, memory_order_relaxed);
		/* P2: release publishes slot and payload, pairs with C1. */
		atomic_store_explicit(&r->head, ++head, memory_order_release);
		if ((head & 1023) == 0 && atomic_load_explicit(done, memory_order_relaxed))
			return 0;
	}
}

static int zc_consume(struct side *s)
{
	struct zc_region *r = (struct zc_region *)s->sh->scratch;
	uint64_t tail = 0, head = 0, rhead = 0, rtail = 0, t0 = 0, total = (s->warmup + s->n) * RAW_BATCH;

	s->sh->batch = RAW_BATCH;
	for (uint64_t got = 0; got < total;) {
		uint32_t c;
		uint64_t v;

		if (tail == head) {
			/* C1: acquire pairs with the producer's release P2. */
			while ((head = atomic_load_explicit(&r->head, memory_order_acquire)) == tail)
				bench_spin(s);
		}
		c = atomic_load_explicit(&r->slot[tail % RING_CAP], memory_order_relaxed);
		v = atomic_load_explicit(&r->chunk[c % ZC_CHUNKS].v, memory_order_relaxed);
		/* C2: release pairs with the producer's acquire P1. */
		atomic_store_explicit(&r->tail, ++tail, memory_order_release);
		if (v != tail)
			return bench_fail(s, -EPROTO, "chunk %u held %llu, expected %llu", c, (unsigned long long)v,
					  (unsigned long long)tail);
		if (rhead - rtail == ZC_RET) /* cannot happen: the return ring holds every chunk */
			rtail = atomic_load_explicit(&r->ret_tail, memory_order_acquire); /* Z2 */
		atomic_store_explicit(&r->ret[rhead++ % ZC_RET], c, memory_order_relaxed);
		/* Z1: release, once per 32 returns or when the ring ran dry, as
		 * a batching consumer would. */
		if ((rhead & 31) == 0 || tail == head)
			atomic_store_explicit(&r->ret_head, rhead, memory_order_release);
		if (++got % RAW_BATCH == 0)
			bench_stamp(s, got / RAW_BATCH, &t0, bench_now_ns());
	}
	s->sh->n_out = s->n;
	atomic_store_explicit(&r->ret_head, rhead, memory_order_release);
	atomic_store_explicit(&s->sh->w[0].v, 1, memory_order_relaxed); /* the producer stops */
	return 0;
}

const struct impl raw_zero_copy = { .run_a = zc_produce, .run_b = zc_consume };

/* ---- memcpy bandwidth ------------------------------------------------------ */

/* One core copying `size` bytes between two private buffers; small sizes
 * repeat the copy so one clock read stays below 5 % of a sample. */
static int memcpy_run(struct side *s)
{
	size_t size = s->f->p.size, reps = size >= 64 * KiB ? 1 : 64 * KiB / size;
	char *src = malloc(size), *dst = malloc(size);
	uint64_t t0, sink = 0;

	if (!src || !dst) {
		free(src);
		free(dst);
		return bench_fail(s, -ENOMEM, "memcpy buffers");
	}
	bench_fill(src, size, 1);
	bench_fill(dst, size, 2);
	t0 = bench_now_ns();
	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		uint64_t t1;

		for (size_t k = 0; k < reps; k++) {
			src[0] = (char)k;
			memcpy(dst, src, size);
			/* A barrier the compiler cannot see through: the copy happens. */
			__asm__ volatile("" : : "r"(dst) : "memory");
		}
		t1 = bench_now_ns();
		if (i > s->warmup)
			s->sh->samples[i - s->warmup - 1] = (t1 - t0) / reps;
		t0 = t1;
	}
	sink = (uint64_t)dst[size - 1];
	free(src);
	free(dst);
	s->sh->n_out = s->n;
	return sink == 2 ? bench_fail(s, -EIO, "memcpy did not copy") : 0;
}

const struct impl raw_memcpy = { .run_a = memcpy_run };

/* ---- raw timerfd lateness ---------------------------------------------- */

#define TIMER_PERIOD_NS 1000000ull /* 1 kHz */

/* SCHED_FIFO for the calling process when the figure asks for it. */
static int timed_fifo(struct side *s)
{
	struct sched_param sp = { .sched_priority = s->f->p.fifo };

	if (s->f->p.fifo && sched_setscheduler(0, SCHED_FIFO, &sp) < 0)
		return bench_fail(s, -errno, "SCHED_FIFO %d not permitted", s->f->p.fifo);
	return 0;
}

static int timerfd_run(struct side *s)
{
	struct itimerspec its = { .it_interval = { .tv_nsec = TIMER_PERIOD_NS } };
	int fd = timed_fifo(s) < 0 ? -1 : timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	uint64_t start, next_due, ticks, skipped = 0;

	if (s->err)
		return s->err;
	if (fd < 0)
		return bench_fail(s, -errno, "timerfd_create");
	start = next_due = bench_now_ns() + TIMER_PERIOD_NS;
	its.it_value.tv_sec = (time_t)(start / 1000000000u);
	its.it_value.tv_nsec = (long)(start % 1000000000u);
	if (timerfd_settime(fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
		close(fd);
		return bench_fail(s, -errno, "timerfd_settime");
	}
	for (uint64_t i = 1; i <= s->warmup + s->n; i++) {
		if (read(fd, &ticks, sizeof ticks) != (ssize_t)sizeof ticks) {
			close(fd);
			return bench_fail(s, -errno, "timerfd read");
		}
		uint64_t late = bench_lateness(bench_now_ns(), start, TIMER_PERIOD_NS, &next_due);

		skipped += ticks - 1;
		if (i > s->warmup)
			s->sh->samples[i - s->warmup - 1] = late;
	}
	close(fd);
	s->sh->drops = skipped;
	s->sh->n_out = s->n;
	return 0;
}

const struct impl raw_timerfd = { .run_a = timerfd_run };

/* ---- cyclictest ---------------------------------------------------------- */

/* rt-tests' cyclictest at 1 kHz (clock_nanosleep to absolute times, its
 * memory locked), on this side's CPU, for as many cycles as the figure
 * keeps; its histogram (1 us buckets) becomes the samples. Overflows
 * beyond the histogram count at cyclictest's own maximum. */
#define CYC_BUCKETS 10000

static int cyclictest_run(struct side *s)
{
	char loops[32], prio[16], line[128];
	char *argv[] = { "cyclictest", "-m", "-q", "-i", "1000", "-l", loops, "-h", "10000", NULL, NULL, NULL };
	size_t got = 0;
	uint64_t max_us = 0, overflows = 0;
	int pfd[2], st;
	pid_t pid;
	FILE *out;

	snprintf(loops, sizeof loops, "%zu", s->n);
	if (s->f->p.fifo) {
		snprintf(prio, sizeof prio, "%d", s->f->p.fifo);
		argv[9] = "-p";
		argv[10] = prio;
	}
	if (pipe(pfd) < 0)
		return bench_fail(s, -errno, "pipe");
	pid = fork();
	if (pid < 0)
		return bench_fail(s, -errno, "fork");
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execvp("cyclictest", argv);
		_exit(127);
	}
	close(pfd[1]);
	out = fdopen(pfd[0], "r");
	while (out && fgets(line, sizeof line, out)) {
		unsigned long long b, c;

		if (sscanf(line, "%llu %llu", &b, &c) == 2 && line[0] != '#') {
			for (unsigned long long k = 0; k < c && got < s->n; k++)
				s->sh->samples[got++] = b * 1000;
		} else if (sscanf(line, "# Max Latencies: %llu", &b) == 1) {
			max_us = b;
		} else if (sscanf(line, "# Histogram Overflows: %llu", &c) == 1) {
			overflows = c;
		}
	}
	if (out)
		fclose(out);
	if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		return bench_fail(s, -ENOENT, WIFEXITED(st) && WEXITSTATUS(st) == 127 ?
				  "cyclictest not installed (apt: rt-tests; scripts/bench --install-peers)" :
				  "cyclictest failed (SCHED_FIFO not permitted?)");
	for (uint64_t k = 0; k < overflows && got < s->n; k++)
		s->sh->samples[got++] = max_us * 1000;
	if (got < s->n)
		return bench_fail(s, -EPROTO, "cyclictest reported %zu of %zu cycles", got, s->n);
	/* the samples are sorted: the harness sorts them anyway */
	s->sh->n_out = s->n;
	return 0;
}

const struct impl cyclictest = { .run_a = cyclictest_run };
