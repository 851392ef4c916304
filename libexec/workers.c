/* workers.c - the worker threads: N threads taking pre-built jobs from a bounded
 * MPMC queue (Vyukov: each cell's sequence number says whose turn it is).
 *
 * Pairings:
 *   J0 submit: claim cell by CAS on enq, store the job pointer, release the
 *      cell's seq = pos + 1        -> J1 acquire of seq: the job is visible
 *   J1 take:   claim by CAS on deq, read the job, release seq = pos + size
 *                                  -> J0 acquire: the cell is free again
 *   S0 avail counts queued jobs: a worker takes one by CAS (acquire) before
 *      it dequeues, so a dequeue never finds the queue empty; a submitter
 *      adds one (release) after its enqueue, and wakes a sleeper if any.
 *      A worker announces itself in `sleepers` (seq_cst) before re-reading
 *      avail and sleeping on it; a submitter reads `sleepers` (seq_cst)
 *      after its increment: either the worker sees the job or the submitter
 *      sees the sleeper (no lost wake-up).
 * The queue is sized when tasks are added (workers_reserve), so a submit
 * never finds it full and never allocates.
 */
#include "executor.h"

#include <errno.h>
#include <linux/futex.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int workers_reserve(struct workers *p, uint32_t n)
{
	uint32_t cap = 2;
	struct job **slots;
	_Atomic uint64_t *seqs;

	while (cap < n)
		cap <<= 1;
	if (p->slots && cap <= p->mask + 1)
		return 0;
	slots = calloc(cap, sizeof(*slots));
	seqs = calloc(cap, sizeof(*seqs));
	if (!slots || !seqs) {
		free(slots);
		free(seqs);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < cap; i++)
		atomic_init(&seqs[i], i);
	/* Only between runs: no job is queued, workers sleep on avail == 0. */
	free(p->slots);
	free((void *)p->seqs);
	p->slots = slots;
	p->seqs = seqs;
	p->mask = cap - 1;
	/* seq_cst stores; ordered before the workers see a job by S0 */
	atomic_store(&p->enq, 0);
	atomic_store(&p->deq, 0);
	return 0;
}

static void queue_push(struct workers *p, struct job *job)
{
	uint64_t pos = atomic_load_explicit(&p->enq, memory_order_relaxed);

	for (;;) {
		/* J0: acquire pairs with J1's release: the cell was consumed. */
		uint64_t seq = atomic_load_explicit(&p->seqs[pos & p->mask], memory_order_acquire);
		int64_t dif = (int64_t)(seq - pos);

		if (dif == 0 && atomic_compare_exchange_weak_explicit(&p->enq, &pos, pos + 1,
								      memory_order_relaxed, memory_order_relaxed))
			break;
		if (dif != 0)
			pos = atomic_load_explicit(&p->enq, memory_order_relaxed);
		/* dif < 0 would mean full: workers_reserve sized the queue for every
		 * job that can be in flight, so it only means another submitter
		 * is mid-push; retry. */
	}
	p->slots[pos & p->mask] = job;
	atomic_store_explicit(&p->seqs[pos & p->mask], pos + 1, memory_order_release); /* J0 */
}

static struct job *queue_pop(struct workers *p)
{
	uint64_t pos = atomic_load_explicit(&p->deq, memory_order_relaxed);

	for (;;) {
		/* J1: acquire pairs with J0's release: the job pointer is written. */
		uint64_t seq = atomic_load_explicit(&p->seqs[pos & p->mask], memory_order_acquire);
		int64_t dif = (int64_t)(seq - (pos + 1));

		if (dif == 0 && atomic_compare_exchange_weak_explicit(&p->deq, &pos, pos + 1,
								      memory_order_relaxed, memory_order_relaxed)) {
			struct job *job = p->slots[pos & p->mask];

			atomic_store_explicit(&p->seqs[pos & p->mask], pos + p->mask + 1,
					      memory_order_release); /* J1 */
			return job;
		}
		if (dif != 0)
			pos = atomic_load_explicit(&p->deq, memory_order_relaxed);
		/* dif < 0: our avail claim guarantees a job; its push is landing. */
	}
}

void workers_submit(struct workers *p, struct job *job)
{
	if (p->n_workers == 0) {
		job->run(job);
		return;
	}
	queue_push(p, job);
	atomic_fetch_add_explicit(&p->avail, 1, memory_order_seq_cst); /* S0 */
	if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst))
		exec_futex_wake(&p->avail, 1);
}

/* S0: claims one queued job, sleeping while there is none. */
static bool worker_claim(struct workers *p)
{
	for (;;) {
		/* S0: acquire pairs with workers_submit's increment of avail */
		uint32_t a = atomic_load_explicit(&p->avail, memory_order_acquire);

		if (atomic_load_explicit(&p->quit, memory_order_acquire))
			return false;
		if (a > 0) {
			if (atomic_compare_exchange_weak_explicit(&p->avail, &a, a - 1, memory_order_acquire,
								  memory_order_relaxed))
				return !atomic_load_explicit(&p->quit, memory_order_acquire);
			continue;
		}
		/* S0: announce, then re-read avail (both seq_cst) against the
		 * submitter's increment of avail, then load of sleepers */
		atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
		if (atomic_load_explicit(&p->avail, memory_order_seq_cst) == 0 &&
		    !atomic_load_explicit(&p->quit, memory_order_acquire))
			exec_futex_wait(&p->avail, 0, -1);
		atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
	}
}

struct worker_arg {
	struct workers *p;
	unsigned index;
};

static void worker_setup(struct workers *p, unsigned index)
{
	char name[16];

	snprintf(name, sizeof(name), "%s%u", p->name_prefix, index % 1000);
	pthread_setname_np(pthread_self(), name);
	if (p->pin)
		pthread_setaffinity_np(pthread_self(), sizeof(p->cpus), &p->cpus);
	if (p->fifo_priority > 0) {
		struct sched_param sp = {.sched_priority = p->fifo_priority};

		/* Refused without CAP_SYS_NICE: the worker keeps SCHED_OTHER and
		 * the refusal is counted (takt_exec_stats), never fatal. */
		if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0)
			atomic_fetch_add_explicit(&p->fifo_refused, 1, memory_order_relaxed);
	}
}

static void *worker_main(void *arg)
{
	struct workers *p = arg;

	worker_setup(p, atomic_fetch_add_explicit(&p->next_index, 1, memory_order_relaxed));
	/* start-up barrier: create returns once every worker applied its
	 * attributes, so sched_fifo_refused is final by then */
	if (atomic_fetch_add_explicit(&p->started, 1, memory_order_release) + 1 == p->n_workers)
		exec_futex_wake(&p->started, INT_MAX);
	while (worker_claim(p)) {
		struct job *job = queue_pop(p);

		job->run(job);
	}
	return NULL;
}

int workers_start(struct workers *p, struct takt_exec *ex, const struct takt_exec_opts *o)
{
	sigset_t all, old;
	int r = 0;

	p->ex = ex;
	p->n_workers = o->worker_threads;
	if (!p->n_workers)
		return 0;
	snprintf(p->name_prefix, sizeof(p->name_prefix), "%.11s",
		 o->thread_name_prefix ? o->thread_name_prefix : "takt-w");
	CPU_ZERO(&p->cpus);
	for (size_t i = 0; o->cpu_affinity && i < o->n_cpu_affinity; i++)
		if (o->cpu_affinity[i] >= 0 && o->cpu_affinity[i] < CPU_SETSIZE) {
			CPU_SET(o->cpu_affinity[i], &p->cpus);
			p->pin = true;
		}
	p->fifo_priority = o->sched_fifo_priority;
	p->threads = calloc(p->n_workers, sizeof(*p->threads));
	if (!p->threads || workers_reserve(p, 16) < 0)
		return -ENOMEM;
	/* Workers never take SIGINT/SIGTERM: the dispatch thread's signalfd does. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; i < p->n_workers && r == 0; i++) {
		r = -pthread_create(&p->threads[i], NULL, worker_main, p);
		if (r == 0)
			continue;
		p->n_workers = i; /* stop what started */
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	for (uint32_t s; r == 0 && (s = atomic_load_explicit(&p->started, memory_order_acquire)) < p->n_workers;)
		exec_futex_wait(&p->started, s, -1);
	return r;
}

void workers_stop(struct workers *p)
{
	/* seq_cst: pairs with the workers' acquire loads of quit after they wake */
	atomic_store_explicit(&p->quit, 1, memory_order_seq_cst);
	/* Move the futex word too: a worker between its quit check and its
	 * futex_wait(avail, 0) then returns at once instead of sleeping on. */
	atomic_fetch_add_explicit(&p->avail, p->n_workers + 1, memory_order_seq_cst);
	exec_futex_wake(&p->avail, INT_MAX);
	for (unsigned i = 0; i < p->n_workers; i++)
		pthread_join(p->threads[i], NULL);
	free(p->threads);
	free(p->slots);
	free((void *)p->seqs);
	memset(p, 0, sizeof(*p));
}
