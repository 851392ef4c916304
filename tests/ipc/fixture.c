/* fixture.c - a broker-less domain in anonymous shared memory (see fixture.h).
 *
 * The header is filled field by field as shm-broker/segments.c does
 * (seg_fill_header, seg_create_pools), so seg_view_init and
 * seg_view_add_pool validate it exactly as they validate a broker's.
 */
#include "fixture.h"
#include "pool.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const struct fixture_config fixture_default = {
	.class_size = {64, 256},
	.class_count = {256, 32},
	.connections = 4,
	.queue_depth_max = 64,
	.scratch_size = 0,
};

void *fixture_map_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

void fixture_unmap(void *p, size_t size)
{
	if (p)
		munmap(p, size);
}

static struct takt_limits fixture_limits(const struct fixture_config *cfg)
{
	return (struct takt_limits){
		.processes = 4, .topics = 2, .publishers = 2, .subscribers = 2,
		.pubs_per_topic = 2, .subs_per_topic = 2,
		.connections = cfg->connections, .queue_depth_max = cfg->queue_depth_max,
		.history_max = 4, .held_max = 4, .loans_max = 4, .events = 1,
		.n_classes = FIXTURE_CLASSES,
	};
}

/* The broker's own header builder (segment.c), on the fixture's limits. */
static void fixture_fill_header(struct takt_mgmt_header *h, const struct fixture_config *cfg,
				const struct takt_limits *lim, uint32_t n_chunks)
{
	seg_header_fill(h, &(struct seg_spec){.lim = *lim, .class_size = cfg->class_size,
					      .class_count = cfg->class_count, .n_chunks = n_chunks,
					      .epoch = 1, .domain = "unit-test"});
	atomic_store_explicit(&h->broker_pid, (uint32_t)getpid(), memory_order_relaxed);
	/* No fence, unlike the broker: nobody maps this segment until
	 * fixture_init returns (and -Wtsan rejects fences). */
	h->magic = TAKT_MGMT_MAGIC;
}

/* Mirrors seg_create_pools: one payload segment per class, header line first. */
static int fixture_add_pools(struct fixture *f)
{
	const struct takt_mgmt_header *h = f->mgmt;

	for (uint32_t k = 0; k < FIXTURE_CLASSES; k++) {

		f->pool_size[k] = h->pools[k].segment_size;
		f->pool_base[k] = fixture_map_shared(f->pool_size[k]);
		if (!f->pool_base[k])
			return -ENOMEM;
		seg_pool_header_fill(f->pool_base[k], k, h);
		if (seg_view_add_pool(&f->v, k, f->pool_base[k], f->pool_size[k]) < 0)
			return -EPROTO;
	}
	return 0;
}

int fixture_init(struct fixture *f, const struct fixture_config *cfg)
{
	struct takt_limits lim = fixture_limits(cfg);
	struct takt_layout lay;
	uint32_t n_chunks = cfg->class_count[0] + cfg->class_count[1];
	int r = -ENOMEM;

	memset(f, 0, sizeof(*f));
	layout_compute(&lim, n_chunks, &lay);
	f->mgmt_size = lay.size;
	f->mgmt = fixture_map_shared(f->mgmt_size);
	if (!f->mgmt)
		goto fail;
	fixture_fill_header(f->mgmt, cfg, &lim, n_chunks);
	r = seg_view_init(&f->v, f->mgmt, f->mgmt_size);
	if (r < 0)
		goto fail;
	r = fixture_add_pools(f);
	if (r < 0)
		goto fail;
	if (cfg->scratch_size) {
		r = -ENOMEM;
		f->scratch_size = cfg->scratch_size;
		f->scratch = fixture_map_shared(f->scratch_size);
		if (!f->scratch)
			goto fail;
	}
	pool_format(&f->v);
	return 0;
fail:
	fixture_destroy(f);
	return r;
}

void fixture_destroy(struct fixture *f)
{
	if (!f)
		return;
	for (uint32_t k = 0; k < FIXTURE_CLASSES; k++)
		fixture_unmap(f->pool_base[k], f->pool_size[k]);
	fixture_unmap(f->scratch, f->scratch_size);
	fixture_unmap(f->mgmt, f->mgmt_size);
	memset(f, 0, sizeof(*f));
}

struct takt_conn *fixture_conn_reset(struct fixture *f, uint32_t ci, uint32_t capacity, uint64_t start)
{
	struct takt_conn *c = &f->v.conns[ci];

	c->pub = 0;
	c->sub = 0;
	c->mask = capacity - 1;
	c->depth = capacity;
	c->overflow = 0;
	/* As the broker does on reuse: clients drop mirrors of the old one. */
	atomic_fetch_add_explicit(&c->incarnation, 1, memory_order_relaxed);
	atomic_store_explicit(&c->head, start, memory_order_relaxed);
	atomic_store_explicit(&c->tail, start, memory_order_relaxed);
	atomic_store_explicit(&c->producer_waiting, 0, memory_order_relaxed);
	memset(seg_ring_slots(&f->v, ci), 0, (size_t)f->v.lim.queue_depth_max * sizeof(struct takt_ring_slot));
	/* release: the threads a test starts next get the zeroed slots (thread
	 * creation orders it anyway; this mirrors the broker). */
	atomic_store_explicit(&c->state, SLOT_ACTIVE, memory_order_release);
	return c;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int child_failed(pid_t pid, int status)
{
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		fprintf(stderr, "child %d exited with status %d\n", (int)pid, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		fprintf(stderr, "child %d killed by signal %d%s\n", (int)pid, WTERMSIG(status),
			WTERMSIG(status) == SIGALRM ? " (its alarm() timeout)" : "");
	return 1;
}

int fixture_wait_children(const pid_t *pids, int n, unsigned timeout_s)
{
	uint64_t deadline = mono_ms() + (uint64_t)timeout_s * 1000u;
	int done[FIXTURE_MAX_CHILDREN] = {0}, left = n, failed = 0;

	if (n > FIXTURE_MAX_CHILDREN)
		return n;
	while (left > 0 && mono_ms() < deadline) {
		for (int i = 0; i < n; i++) {
			int status;

			if (done[i] || waitpid(pids[i], &status, WNOHANG) != pids[i])
				continue;
			done[i] = 1;
			left--;
			failed += child_failed(pids[i], status);
		}
		if (left > 0)
			usleep(2000);
	}
	for (int i = 0; i < n; i++) {
		if (done[i])
			continue;
		fprintf(stderr, "child %d still running after %u s: killed\n", (int)pids[i], timeout_s);
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
		failed++;
	}
	return failed;
}
