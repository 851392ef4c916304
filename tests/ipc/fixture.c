/* fixture.c - a broker-less domain in anonymous shared memory (see fixture.h).
 *
 * The header is filled by the broker's own builder (seg_header_fill) and
 * the pool's header line by seg_pool_header_fill, so seg_view_init and
 * seg_pool_check validate them exactly as they validate a broker's.
 */
#include "fixture.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const struct fixture_config fixture_default = {
	.payload_size = 64,
	.pool_chunks = 128, /* = the return ring: a return never finds it full */
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
	};
}

/* The broker's own header builder (segment.c), on the fixture's limits. */
static void fixture_fill_header(struct takt_mgmt_header *h, const struct takt_limits *lim)
{
	seg_header_fill(h, &(struct seg_spec){.lim = *lim, .epoch = 1, .domain = "unit-test"});
	atomic_store_explicit(&h->broker_pid, (uint32_t)getpid(), memory_order_relaxed);
	/* No fence, unlike the broker: nobody maps this segment until
	 * fixture_init returns (and -Wtsan rejects fences). */
	h->magic = TAKT_MGMT_MAGIC;
}

/* Publisher port 0 and its pool segment, as the broker's reg_pub_open and
 * seg_pool_create lay them out. */
static int fixture_add_pool(struct fixture *f, const struct fixture_config *cfg)
{
	struct takt_pub_port *pp = &f->v.pubs[0];
	size_t size;
	void *base;

	pp->id = 1;
	pp->payload_size = cfg->payload_size;
	pp->chunk_stride = layout_chunk_stride(cfg->payload_size);
	pp->n_chunks_max = cfg->pool_chunks;
	atomic_store_explicit(&pp->n_chunks, cfg->pool_chunks, memory_order_relaxed);
	size = seg_pool_bytes(&f->v, pp->chunk_stride, cfg->pool_chunks);
	base = fixture_map_shared(size);
	if (!base)
		return -ENOMEM;
	seg_pool_header_fill(base, &f->v, pp, 1);
	return seg_pool_check(&f->v, pp, base, size, &f->pool) < 0 ? -EPROTO : 0;
}

/* Subscriber port 0 and its segment, as reg_sub_open lays it out. */
static int fixture_add_subseg(struct fixture *f)
{
	struct takt_subseg_layout sl;
	void *base;

	layout_subseg(&f->v.lim, &sl);
	base = fixture_map_shared(sl.size);
	if (!base)
		return -ENOMEM;
	seg_subseg_header_fill(base, &f->v, 0, 1);
	return seg_subseg_check(&f->v, 0, base, sl.size, &f->subseg) < 0 ? -EPROTO : 0;
}

int fixture_init(struct fixture *f, const struct fixture_config *cfg)
{
	struct takt_limits lim = fixture_limits(cfg);
	struct takt_layout lay;
	int r = -ENOMEM;

	memset(f, 0, sizeof(*f));
	layout_compute(&lim, &lay);
	f->mgmt_size = lay.size;
	f->mgmt = fixture_map_shared(f->mgmt_size);
	if (!f->mgmt)
		goto fail;
	fixture_fill_header(f->mgmt, &lim);
	r = seg_view_init(&f->v, f->mgmt, f->mgmt_size);
	if (r < 0)
		goto fail;
	r = fixture_add_pool(f, cfg);
	if (r == 0)
		r = fixture_add_subseg(f);
	if (r < 0)
		goto fail;
	if (cfg->scratch_size) {
		r = -ENOMEM;
		f->scratch_size = cfg->scratch_size;
		f->scratch = fixture_map_shared(f->scratch_size);
		if (!f->scratch)
			goto fail;
	}
	return 0;
fail:
	fixture_destroy(f);
	return r;
}

void fixture_destroy(struct fixture *f)
{
	if (!f)
		return;
	fixture_unmap(f->pool.base, f->pool.size);
	fixture_unmap(f->subseg.base, f->subseg.size);
	fixture_unmap(f->scratch, f->scratch_size);
	fixture_unmap(f->mgmt, f->mgmt_size);
	memset(f, 0, sizeof(*f));
}

struct takt_conn *fixture_conn_reset(struct fixture *f, uint32_t ci, uint32_t capacity, uint64_t start)
{
	struct takt_conn *c = &f->v.conns[ci];

	struct takt_conn_pub *pw;
	struct takt_conn_sub *sw;

	c->pub = 0;
	c->sub = 0;
	c->mask = capacity - 1;
	c->depth = capacity;
	c->ret_mask = f->v.ret_slots - 1; /* the largest: its region holds it */
	c->overflow = 0;
	c->pub_slot = ci % f->pool.n_slots;
	c->sub_slot = ci % f->subseg.n_slots;
	pw = fixture_pw(f, ci);
	sw = fixture_sw(f, ci);
	/* As the broker does on reuse: clients drop mirrors of the old one. */
	atomic_fetch_add_explicit(&c->incarnation, 1, memory_order_relaxed);
	atomic_store_explicit(&c->pub_quiet, 0, memory_order_relaxed);
	/* What each end does when it prepares its region (pub.c, sub.c). */
	atomic_store_explicit(&pw->head, start, memory_order_relaxed);
	atomic_store_explicit(&pw->floor, start, memory_order_relaxed);
	atomic_store_explicit(&pw->waiting, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->wakes, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->dropped, 0, memory_order_relaxed);
	atomic_store_explicit(&pw->ret_tail, 0, memory_order_relaxed);
	atomic_store_explicit(&sw->tail, 2 * start, memory_order_relaxed); /* ring.c: 2 x the position */
	atomic_store_explicit(&sw->ret_head, 0, memory_order_relaxed);
	memset(fixture_ring(f, ci), 0, (size_t)f->v.lim.queue_depth_max * sizeof(struct takt_ring_slot));
	/* release: the threads a test starts next get the zeroed slots (thread
	 * creation orders it anyway; this mirrors the broker). */
	atomic_store_explicit(&c->state, SLOT_ACTIVE, memory_order_release);
	return c;
}

struct takt_conn_pub *fixture_pw(struct fixture *f, uint32_t ci)
{
	return seg_pool_conn(&f->pool, f->v.conns[ci].pub_slot);
}

struct takt_conn_sub *fixture_sw(struct fixture *f, uint32_t ci)
{
	return seg_subseg_conn(&f->subseg, f->v.conns[ci].sub_slot);
}

struct takt_ring_slot *fixture_ring(struct fixture *f, uint32_t ci)
{
	return seg_pool_ring(&f->pool, f->v.conns[ci].pub_slot);
}

_Atomic uint32_t *fixture_rets(struct fixture *f, uint32_t ci)
{
	return seg_subseg_rets(&f->subseg, f->v.conns[ci].sub_slot);
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
