/* takt-bench-lines - what each cache line of a publish costs in throughput.
 *
 * An analysis tool behind docs/performance.md, not part of the suite: a
 * producer and a consumer process (pinned to the first two CPUs) pass 8-byte
 * messages through a bare ring whose slots look like takt's (the chunk
 * index, seq and time in one 32-byte slot, readiness in the slot's own pos
 * word, so the consumer never reads the producer's head), and add, one at a
 * time, the other lines takt touches per message:
 *
 *   payload   the producer writes the chunk's first line, the consumer reads it
 *   refs      the producer stores the chunk's reference count, the consumer
 *             drops it with a CAS (takt: chunk_loan_init / chunk_unref)
 *   tailcas   the consumer advances its tail with a locked CAS instead of a
 *             release store (takt: ring_pop_shared, for drop-oldest steals)
 *   freelist  chunks come from and go back to one shared Treiber stack, a
 *             CAS on its head and a write of the chunk's next link on each
 *             side (takt: pool_pop_mpmc / pool_push_mpmc)
 *   return    instead of the free list, the consumer hands each chunk back
 *             through a second SPSC ring that the producer loans from
 *
 * Usage: takt-bench-lines [MESSAGES]   (default 4000000 per pattern)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity */
#endif
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CAP 256u       /* ring slots, as takt's deepest default queue */
#define RCAP 1024u     /* return ring */
#define CHUNKS 4096u

enum { PAYLOAD = 1, REFS = 2, TAILCAS = 4, FREELIST = 8, RETURN = 16 };

struct slot {
	_Atomic uint64_t pos;
	_Atomic uint32_t chunk, size;
	_Atomic uint64_t seq, ns;
};

struct meta { /* one line per chunk, like takt's chunk metadata */
	_Atomic uint64_t refs;
	_Atomic uint32_t next;
	char pad[52];
};

struct line {
	_Atomic uint64_t v;
	char pad[120];
};

struct region {
	struct line tail, free_head, ret_head, ret_tail;
	_Atomic uint32_t ret[RCAP];
	struct slot slot[CAP];
	struct meta meta[CHUNKS];
	char payload[CHUNKS][192];
};

static volatile uint64_t g_sink; /* keeps the payload reads */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int g_cpu[2] = { -1, -1 }; /* the first two CPUs we may use, found once */

static void find_cpus(void)
{
	cpu_set_t set;
	int seen = 0;

	if (sched_getaffinity(0, sizeof set, &set) < 0)
		return;
	for (int c = 0; c < CPU_SETSIZE && seen < 2; c++)
		if (CPU_ISSET(c, &set))
			g_cpu[seen++] = c;
}

static void pin(int nth)
{
	cpu_set_t one;

	if (g_cpu[nth] < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(g_cpu[nth], &one);
	sched_setaffinity(0, sizeof one, &one);
}

/* Treiber stack with an ABA tag, as libipc/pool.c. */
static uint32_t free_pop(struct region *x)
{
	uint64_t h = atomic_load_explicit(&x->free_head.v, memory_order_acquire);

	for (;;) {
		uint32_t top = (uint32_t)h, next;

		if (top == 0)
			return UINT32_MAX;
		next = atomic_load_explicit(&x->meta[top - 1].next, memory_order_relaxed);
		/* acquire pairs with free_push's release: the link is the pusher's */
		if (atomic_compare_exchange_weak_explicit(&x->free_head.v, &h, ((h >> 32) + 1) << 32 | next,
							  memory_order_acquire, memory_order_acquire))
			return top - 1;
	}
}

static void free_push(struct region *x, uint32_t c)
{
	uint64_t h = atomic_load_explicit(&x->free_head.v, memory_order_relaxed);

	do
		atomic_store_explicit(&x->meta[c].next, (uint32_t)h, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(&x->free_head.v, &h, ((h >> 32) + 1) << 32 | (c + 1),
						      memory_order_release, memory_order_relaxed));
}

static uint32_t loan(struct region *x, unsigned mode, uint64_t i, uint64_t *rt, uint64_t *rh)
{
	uint32_t c;

	if (mode & FREELIST) {
		while ((c = free_pop(x)) == UINT32_MAX)
			;
		return c;
	}
	if (mode & RETURN) {
		if (*rt == *rh) /* acquire pairs with the consumer's release of ret_head */
			*rh = atomic_load_explicit(&x->ret_head.v, memory_order_acquire);
		if (*rt != *rh) {
			c = atomic_load_explicit(&x->ret[*rt % RCAP], memory_order_relaxed);
			/* release: the consumer may reuse the entry */
			atomic_store_explicit(&x->ret_tail.v, ++*rt, memory_order_release);
			return c;
		}
	}
	return (uint32_t)(i % CHUNKS); /* fresh chunks until some come back */
}

static void produce(struct region *x, unsigned mode, uint64_t n)
{
	uint64_t head = 0, tail = 0, rt = 0, rh = 0;

	for (uint64_t i = 1; i <= n; i++) {
		uint32_t c = loan(x, mode, i, &rt, &rh);
		struct slot *s;

		if (mode & REFS)
			atomic_store_explicit(&x->meta[c].refs, 1, memory_order_relaxed);
		if (mode & PAYLOAD)
			memcpy(x->payload[c], &i, sizeof i);
		while (head - tail >= CAP) /* acquire pairs with the consumer's tail update */
			tail = atomic_load_explicit(&x->tail.v, memory_order_acquire);
		s = &x->slot[head % CAP];
		atomic_store_explicit(&s->chunk, c, memory_order_relaxed);
		atomic_store_explicit(&s->seq, i, memory_order_relaxed);
		atomic_store_explicit(&s->ns, i, memory_order_relaxed);
		/* release pairs with the consumer's acquire of pos */
		atomic_store_explicit(&s->pos, ++head, memory_order_release);
	}
}

static double consume(struct region *x, unsigned mode, uint64_t n)
{
	uint64_t tail = 0, rh = 0, rt = 0, t0 = 0, sum = 0;

	for (uint64_t i = 1; i <= n; i++) {
		struct slot *s = &x->slot[tail % CAP];
		uint32_t c;

		while (atomic_load_explicit(&s->pos, memory_order_acquire) != tail + 1)
			;
		c = atomic_load_explicit(&s->chunk, memory_order_relaxed);
		if (mode & TAILCAS) {
			uint64_t t = tail;

			atomic_compare_exchange_strong(&x->tail.v, &t, tail + 1);
		} else {
			atomic_store_explicit(&x->tail.v, tail + 1, memory_order_release);
		}
		tail++;
		if (mode & PAYLOAD) {
			uint64_t v;

			memcpy(&v, x->payload[c], sizeof v);
			sum += v;
		}
		if (mode & REFS) {
			uint64_t one = 1;

			atomic_compare_exchange_strong_explicit(&x->meta[c].refs, &one, 0, memory_order_acq_rel,
								memory_order_relaxed);
		}
		if (mode & FREELIST)
			free_push(x, c);
		if (mode & RETURN) {
			while (rh - rt >= RCAP)
				rt = atomic_load_explicit(&x->ret_tail.v, memory_order_acquire);
			atomic_store_explicit(&x->ret[rh % RCAP], c, memory_order_relaxed);
			atomic_store_explicit(&x->ret_head.v, ++rh, memory_order_release);
		}
		if (i == n / 10) /* the first 10 % warm up */
			t0 = now_ns();
	}
	g_sink = sum;
	return (double)(n - n / 10) * 1e3 / (double)(now_ns() - t0);
}

static double run(unsigned mode, uint64_t n)
{
	struct region *x = mmap(NULL, sizeof *x, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	double rate;
	pid_t pid;

	if (x == MAP_FAILED)
		return -1;
	for (uint32_t c = CHUNKS; c-- > 0;)
		free_push(x, c);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		pin(0);
		produce(x, mode, n);
		_exit(0);
	}
	pin(1);
	rate = pid < 0 ? -1 : consume(x, mode, n);
	if (pid > 0)
		waitpid(pid, NULL, 0);
	munmap(x, sizeof *x);
	return rate;
}

int main(int argc, char **argv)
{
	static const struct {
		unsigned mode;
		const char *what;
	} patterns[] = {
		{ 0, "ring slot only" },
		{ PAYLOAD, "+ payload line" },
		{ PAYLOAD | TAILCAS, "+ payload, tail by locked CAS" },
		{ REFS, "+ reference count (store, CAS)" },
		{ FREELIST, "+ shared free list" },
		{ PAYLOAD | FREELIST, "+ payload, shared free list" },
		{ PAYLOAD | REFS | TAILCAS | FREELIST, "all of takt's lines (free list)" },
		{ PAYLOAD | RETURN, "+ payload, return ring" },
		{ PAYLOAD | REFS | RETURN, "+ payload, refs, return ring" },
		{ PAYLOAD | REFS | TAILCAS | RETURN, "all of takt's lines (return ring)" },
	};
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;

	find_cpus();
	if (g_cpu[1] < 0) {
		fprintf(stderr, "takt-bench-lines: needs two CPUs\n");
		return 1;
	}
	if (n < 1000) {
		fprintf(stderr, "usage: takt-bench-lines [MESSAGES >= 1000]\n");
		return 2;
	}
	printf("takt-bench-lines: %llu 8-byte messages per pattern, producer and consumer on two CPUs\n",
	       (unsigned long long)n);
	for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++)
		printf("  %-40s %7.2f M msg/s\n", patterns[i].what, run(patterns[i].mode, n));
	return 0;
}
