/* controller.c - an executor process running a chain and a graph on the
 * sensor's samples, printing per-item timing from the monitor.
 *
 *   chain (on each sample):  filter -> control -> actuate
 *   graph (on each sample):  split -> {kalman, complementary, average} -> fuse
 *
 *   takt-example-controller [SECONDS]   (default 3; stops early on SIGINT)
 */
#include <takt/exec.h>
#include <takt/ipc.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct imu {
	double t, accel, gyro;
};

/* ---- the monitor: per-item count, mean and worst time ------------------- */

/* Monitor callbacks run on the worker that ran the item, several at once
 * for a graph: the table is claimed and updated with atomics only (no lock,
 * no allocation). */
#define MAX_ITEMS 16
struct item_stat {
	const char *_Atomic name;
	_Atomic unsigned long runs;
	_Atomic unsigned long long total_ns, max_ns;
};
static struct item_stat stats[MAX_ITEMS];
static _Atomic unsigned long deadline_misses;

static struct item_stat *stat_for(const char *item)
{
	for (int i = 0; i < MAX_ITEMS; i++) {
		const char *none = NULL;

		if (atomic_load(&stats[i].name) == item ||
		    atomic_compare_exchange_strong(&stats[i].name, &none, item) || none == item)
			return &stats[i];
	}
	return NULL;
}

static void on_post(void *user, int task, const char *item, uint64_t start, uint64_t took, int rc)
{
	struct item_stat *s = stat_for(item); /* item names are string literals: compare pointers */
	unsigned long long max;

	(void)user;
	(void)task;
	(void)start;
	(void)rc;
	if (!s)
		return;
	atomic_fetch_add(&s->runs, 1);
	atomic_fetch_add(&s->total_ns, took);
	max = atomic_load(&s->max_ns);
	while (took > max && !atomic_compare_exchange_weak(&s->max_ns, &max, took))
		;
}

static void on_miss(void *user, int task, uint64_t late_ns)
{
	(void)user;
	(void)task;
	(void)late_ns;
	atomic_fetch_add(&deadline_misses, 1);
}

/* ---- the chain ----------------------------------------------------------- */

struct loop {
	takt_sub *sub;
	double filtered, command;
	unsigned long samples;
};

static int filter_declare(takt_triggers *t, void *u)
{
	struct loop *l = u;

	/* runs on every sample, and is told when none came for 50 ms */
	return takt_trigger_deadline(t, l->sub, 50000000);
}

static int filter(takt_ctx *ctx, void *u)
{
	struct loop *l = u;
	const struct imu *s;

	if (takt_ctx_deadline_missed(ctx))
		return TAKT_STOP_CHAIN; /* no fresh data: do not actuate */
	while (takt_sub_take(l->sub, (const void **)&s, NULL) == 0) {
		l->filtered = 0.9 * l->filtered + 0.1 * s->accel; /* low-pass */
		l->samples++;
		takt_sub_release(l->sub, s);
	}
	return TAKT_CONTINUE;
}

static int control(takt_ctx *ctx, void *u)
{
	struct loop *l = u;

	(void)ctx;
	l->command = -2.0 * l->filtered; /* a P controller */
	return TAKT_CONTINUE;
}

static int actuate(takt_ctx *ctx, void *u)
{
	struct loop *l = u;

	(void)ctx;
	if (l->samples % 500 == 0)
		printf("controller: %lu samples, filtered %+.3f, command %+.3f\n", l->samples, l->filtered,
		       l->command);
	return TAKT_CONTINUE;
}

/* ---- the graph ----------------------------------------------------------- */

struct fusion {
	takt_sub *sub;
	struct imu last;
	double est[3], fused;
};

static int split_declare(takt_triggers *t, void *u)
{
	return takt_trigger_subscriber(t, ((struct fusion *)u)->sub);
}

static int split(takt_ctx *ctx, void *u)
{
	struct fusion *f = u;
	const struct imu *s;

	(void)ctx;
	while (takt_sub_take(f->sub, (const void **)&s, NULL) == 0) {
		f->last = *s;
		takt_sub_release(f->sub, s);
	}
	return TAKT_CONTINUE;
}

static struct fusion fusion;

static int kalman(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	fusion.est[0] = 0.8 * fusion.est[0] + 0.2 * fusion.last.accel;
	return TAKT_CONTINUE;
}

static int complementary(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	fusion.est[1] = 0.98 * (fusion.est[1] + fusion.last.gyro * 0.001) + 0.02 * fusion.last.accel;
	return TAKT_CONTINUE;
}

static int average(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	fusion.est[2] = 0.5 * (fusion.est[2] + fusion.last.accel);
	return TAKT_CONTINUE;
}

static int fuse(takt_ctx *c, void *u)
{
	(void)c;
	(void)u;
	fusion.fused = (fusion.est[0] + fusion.est[1] + fusion.est[2]) / 3.0;
	return TAKT_CONTINUE;
}

static int build(takt_exec *ex, struct loop *l)
{
	struct takt_item chain[3] = {
		{.name = "filter", .declare = filter_declare, .execute = filter, .user = l},
		{.name = "control", .execute = control, .user = l},
		{.name = "actuate", .execute = actuate, .user = l},
	};
	struct takt_item v[5] = {
		{.name = "split", .declare = split_declare, .execute = split, .user = &fusion},
		{.name = "kalman", .execute = kalman}, {.name = "complementary", .execute = complementary},
		{.name = "average", .execute = average}, {.name = "fuse", .execute = fuse},
	};
	takt_graph *g;
	int r;

	if ((r = takt_exec_add_chain(ex, chain, 3)) < 0 || (r = takt_graph_create(&g)) < 0)
		return r;
	for (int i = 0; i < 5; i++)
		takt_graph_vertex(g, &v[i]);
	for (int i = 1; i <= 3; i++) {
		takt_graph_edge(g, 0, i); /* fan-out */
		takt_graph_edge(g, i, 4); /* fan-in */
	}
	return takt_exec_add_graph(ex, g);
}

int main(int argc, char **argv)
{
	struct takt_sub_opts so = {.topic = "sensor/imu", .type_name = "example.Imu", .queue_depth = 64};
	struct takt_monitor mon = {.post_execute = on_post, .deadline_missed = on_miss};
	struct takt_exec_opts eo = {.worker_threads = 2, .thread_name_prefix = "ctrl-", .monitor = &mon};
	double seconds = argc > 1 ? atof(argv[1]) : 3.0;
	struct takt_exec_stats st;
	struct loop l = {0};
	takt_node *node;
	takt_exec *ex;
	int r;

	if ((r = takt_node_open(NULL, &node)) < 0 || (r = takt_sub_open(node, &so, &l.sub)) < 0 ||
	    (r = takt_sub_open(node, &so, &fusion.sub)) < 0 || (r = takt_exec_create(&eo, &ex)) < 0 ||
	    (r = build(ex, &l)) < 0) {
		fprintf(stderr, "controller: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	takt_exec_run_for(ex, (uint64_t)(seconds * 1e9));
	takt_exec_stats(ex, &st);
	printf("\ncontroller: %llu wake phases, %llu dispatches, %lu deadline misses, fused estimate %+.3f\n",
	       (unsigned long long)st.phases, (unsigned long long)st.dispatches, atomic_load(&deadline_misses),
	       fusion.fused);
	printf("%-14s %8s %10s %10s\n", "item", "runs", "mean(ns)", "max(ns)");
	for (int i = 0; i < MAX_ITEMS && atomic_load(&stats[i].name); i++) {
		unsigned long runs = atomic_load(&stats[i].runs);

		printf("%-14s %8lu %10llu %10llu\n", atomic_load(&stats[i].name), runs,
		       atomic_load(&stats[i].total_ns) / (runs ? runs : 1), atomic_load(&stats[i].max_ns));
	}
	takt_exec_destroy(ex);
	takt_node_close(node);
	return 0;
}
