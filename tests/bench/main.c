/* takt-bench - every figure of docs/performance.md beside its floor, in one run.
 *
 * The figures, in the order they run, group by group (a floor, then the
 * figures compared with it; a full run repeats each group three times,
 * interleaved, and pools the samples, so a drift of the machine hits floor
 * and figure alike):
 *
 *   latency     raw shm ping-pong; takt polling at 8 B .. 4 MiB (zero copy);
 *               iceoryx polling
 *   blocking    raw eventfd ping-pong; takt blocking at 8 B .. 4 MiB;
 *               iceoryx WaitSet; ZeroMQ PAIR
 *   service     takt request/response round trips, polling and blocking,
 *               beside takt's pub/sub ping-pong; ZeroMQ REQ/REP
 *   bandwidth   memcpy beside takt with the whole payload written and read
 *   throughput  raw SPSC ring; raw zero-copy handoff; takt at 8 B and 4 KiB; ZeroMQ PUB/SUB
 *   fan-out     takt publish cost with 1 .. 32 subscribers
 *   executor    direct calls, an epoll loop, a thread handoff, chains and a
 *               diamond graph
 *   jitter      raw timerfd and a takt interval task at 1 kHz
 *
 * A benchmark never fails for being slow: the exit status says whether every
 * figure that could run produced its number (0), no broker ran for the
 * domain (2), or something else failed (1). Peers that are not built in
 * (their packages were missing at configure time) or whose daemon is not
 * running are reported as such and are not failures.
 */
#include "bench.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef TAKT_BENCH_ICEORYX
#define IOX(x) (&(x))
#else
#define IOX(x) NULL
#endif
#ifdef TAKT_BENCH_ZMQ
#define ZMQ(x) (&(x))
#else
#define ZMQ(x) NULL
#endif

#define SHM "raw shm ping-pong"
#define TWO "raw two-line handoff"
#define EFD "raw eventfd ping-pong"
#define CYC "cyclictest 1 kHz lateness"
#define CYCF "cyclictest 1 kHz lateness, SCHED_FIFO"
#define RING "raw SPSC ring 8 B"
#define ZC "raw zero-copy handoff 8 B"
#define DIRECT3 "direct chain of 3"
#define DIRECT4 "direct diamond"
#define FAN1 "takt fan-out 1 subscriber"

#define PP(name, base, sz, blk) { name, blk ? "blocking" : "latency", M_ROUNDTRIP, base, { .size = sz, .blocking = blk }, \
				  &takt_pingpong, blk ? C_BLOCK : C_POLL, NEED_TAKT, 0 }
#define BW(sz, label)                                                                                             \
	{ "memcpy " label, "bandwidth", M_BW_DUR, NULL, { .size = sz }, &raw_memcpy, C_BW, NEED_NONE, 0 },       \
	{ "takt bandwidth " label, "bandwidth", M_BW_RT, "memcpy " label, { .size = sz, .bandwidth = true },     \
	  &takt_pingpong, C_BW, NEED_TAKT, 0 }
#define FAN(k, name) { name, "fan-out", M_DURATION, k == 1 ? SHM : FAN1, { .nsubs = k }, &takt_fanout, C_FANOUT, NEED_TAKT, 0 }
#define EXEC(name, base, shp, var, wk, per) { name, "executor", M_DURATION, base, \
	{ .shape = shp, .variant = var, .workers = wk }, &exec_dispatch, C_EXEC, NEED_NONE, per }

static const struct fig figs[] = {
	{ SHM, "latency", M_ROUNDTRIP, NULL, { .size = 8 }, &raw_shm_pingpong, C_POLL, NEED_NONE, 0 },
	{ TWO, "latency", M_ROUNDTRIP, SHM, { .size = 8 }, &raw_two_line, C_POLL, NEED_NONE, 0 },
	PP("takt polling 8 B", SHM, 8, false),
	PP("takt polling 4 KiB", SHM, 4 * KiB, false),
	PP("takt polling 64 KiB", SHM, 64 * KiB, false),
	PP("takt polling 1 MiB", SHM, MiB, false),
	PP("takt polling 4 MiB", SHM, 4 * MiB, false),
	{ "iceoryx polling 8 B", "latency", M_ROUNDTRIP, SHM, { .size = 8 }, IOX(iox_pingpong), C_POLL, NEED_ICEORYX, 0 },
	{ EFD, "blocking", M_ROUNDTRIP, NULL, { .size = 8, .blocking = true }, &raw_efd_pingpong, C_BLOCK, NEED_NONE, 0 },
	PP("takt blocking 8 B", EFD, 8, true),
	PP("takt blocking 4 KiB", EFD, 4 * KiB, true),
	PP("takt blocking 64 KiB", EFD, 64 * KiB, true),
	PP("takt blocking 1 MiB", EFD, MiB, true),
	PP("takt blocking 4 MiB", EFD, 4 * MiB, true),
	{ "iceoryx WaitSet 8 B", "blocking", M_ROUNDTRIP, EFD, { .size = 8, .blocking = true }, IOX(iox_pingpong), C_BLOCK,
	  NEED_ICEORYX, 0 },
	{ "ZeroMQ PAIR 8 B", "blocking", M_ROUNDTRIP, EFD, { .size = 8, .blocking = true }, ZMQ(zmq_pair_pingpong), C_BLOCK,
	  NEED_ZMQ, 0 },
	{ "takt pub/sub round trip polling 8 B", "service", M_ROUNDTRIP, NULL, { .size = 8 }, &takt_pingpong, C_POLL,
	  NEED_TAKT, 0 },
	{ "takt request/response round trip polling 8 B", "service", M_ROUNDTRIP, "takt pub/sub round trip polling 8 B",
	  { .size = 8 }, &takt_service_pingpong, C_POLL, NEED_TAKT, 0 },
	{ "takt pub/sub round trip blocking 8 B", "service", M_ROUNDTRIP, NULL, { .size = 8, .blocking = true },
	  &takt_pingpong, C_BLOCK, NEED_TAKT, 0 },
	{ "takt request/response round trip blocking 8 B", "service", M_ROUNDTRIP, "takt pub/sub round trip blocking 8 B",
	  { .size = 8, .blocking = true }, &takt_service_pingpong, C_BLOCK, NEED_TAKT, 0 },
	{ "ZeroMQ REQ/REP 8 B", "service", M_ROUNDTRIP, "takt pub/sub round trip blocking 8 B",
	  { .size = 8, .blocking = true }, ZMQ(zmq_reqrep_pingpong), C_BLOCK, NEED_ZMQ, 0 },
	BW(4 * KiB, "4 KiB"),
	BW(64 * KiB, "64 KiB"),
	BW(MiB, "1 MiB"),
	BW(4 * MiB, "4 MiB"),
	{ RING, "throughput", M_RATE, NULL, { .size = 8 }, &raw_spsc_ring, C_RAW_RATE, NEED_NONE, 0 },
	{ ZC, "throughput", M_RATE, RING, { .size = 8 }, &raw_zero_copy, C_RAW_RATE, NEED_NONE, 0 },
	{ "takt throughput 8 B", "throughput", M_RATE, ZC, { .size = 8 }, &takt_throughput, C_RATE, NEED_TAKT, 0 },
	{ "takt throughput 4 KiB", "throughput", M_RATE, ZC, { .size = 4 * KiB }, &takt_throughput, C_RATE, NEED_TAKT, 0 },
	{ "ZeroMQ PUB/SUB 8 B", "throughput", M_RATE, ZC, { .size = 8 }, ZMQ(zmq_pubsub), C_PEER_RATE, NEED_ZMQ, 0 },
	FAN(1, FAN1),
	FAN(2, "takt fan-out 2 subscribers"),
	FAN(4, "takt fan-out 4 subscribers"),
	FAN(8, "takt fan-out 8 subscribers"),
	FAN(16, "takt fan-out 16 subscribers"),
	FAN(32, "takt fan-out 32 subscribers"),
	EXEC(DIRECT3, NULL, SHAPE_CHAIN, VAR_DIRECT, 0, 0),
	EXEC("epoll loop + chain of 3", DIRECT3, SHAPE_CHAIN, VAR_EPOLL, 0, 3),
	EXEC("executor chain of 3 inline", DIRECT3, SHAPE_CHAIN, VAR_EXEC, 0, 3),
	EXEC("epoll + thread handoff, chain of 3", DIRECT3, SHAPE_CHAIN, VAR_HANDOFF, 0, 3),
	EXEC("executor chain of 3 on 2 workers", DIRECT3, SHAPE_CHAIN, VAR_EXEC, 2, 3),
	EXEC(DIRECT4, NULL, SHAPE_DIAMOND, VAR_DIRECT, 0, 0),
	EXEC("executor diamond on 2 workers", DIRECT4, SHAPE_DIAMOND, VAR_EXEC, 2, 4),
	{ CYC, "jitter", M_LATENESS, NULL, { 0 }, &cyclictest, C_JITTER, NEED_NONE, 0 },
	{ "raw timerfd 1 kHz lateness", "jitter", M_LATENESS, CYC, { 0 }, &raw_timerfd, C_JITTER, NEED_NONE, 0 },
	{ "takt interval 1 kHz lateness", "jitter", M_LATENESS, CYC, { 0 }, &exec_interval, C_JITTER, NEED_NONE, 0 },
	{ CYCF, "jitter", M_LATENESS, NULL, { .fifo = 80 }, &cyclictest, C_JITTER, NEED_NONE, 0 },
	{ "raw timerfd 1 kHz lateness, SCHED_FIFO", "jitter", M_LATENESS, CYCF, { .fifo = 80 }, &raw_timerfd, C_JITTER,
	  NEED_NONE, 0 },
	{ "takt interval 1 kHz lateness, SCHED_FIFO", "jitter", M_LATENESS, CYCF, { .fifo = 80 }, &exec_interval,
	  C_JITTER, NEED_NONE, 0 },
};
#define N_FIGS (sizeof figs / sizeof figs[0])

static const struct target targets[] = {
	{ "takt polling 8 B", SHM, true, 1.5, "takt polling 8 B / raw shm ping-pong", false, false },
	{ "takt polling 8 B", TWO, true, 1.1, "takt polling 8 B / raw two-line handoff", false, false },
	{ "iceoryx polling 8 B", "takt polling 8 B", false, 6, "iceoryx polling / takt polling (x faster)", false, false },
	{ "takt blocking 8 B", EFD, true, 1.2, "takt blocking 8 B / raw eventfd ping-pong", false, false },
	{ "takt polling 4 MiB", "takt polling 8 B", true, 1.1, "takt polling 4 MiB / 8 B (zero copy)", false, false },
	{ "takt blocking 4 MiB", "takt blocking 8 B", true, 1.1, "takt blocking 4 MiB / 8 B (zero copy)", false, false },
	{ "takt request/response round trip polling 8 B", "takt pub/sub round trip polling 8 B", true, 1.1,
	  "request/response / pub/sub round trip, polling", false, false },
	{ "takt request/response round trip blocking 8 B", "takt pub/sub round trip blocking 8 B", true, 1.1,
	  "request/response / pub/sub round trip, blocking", false, false },
	{ "takt request/response round trip blocking 8 B", EFD, true, 1.5, "request/response blocking / raw eventfd ping-pong",
	  false, false },
	{ "ZeroMQ REQ/REP 8 B", "takt request/response round trip blocking 8 B", false, 1.0,
	  "ZeroMQ REQ/REP / takt request/response blocking (x faster)", false, false },
	{ "takt throughput 8 B", ZC, false, 0.5, "takt throughput 8 B / raw zero-copy handoff", false, false },
	{ "takt throughput 8 B", "ZeroMQ PUB/SUB 8 B", false, 1.5, "takt throughput 8 B / ZeroMQ PUB/SUB", false, false },
	{ "takt interval 1 kHz lateness, SCHED_FIFO", CYCF, true, 1.2, "takt interval, SCHED_FIFO / cyclictest: p50", false, false },
	{ "takt interval 1 kHz lateness, SCHED_FIFO", CYCF, true, 1.2, "takt interval, SCHED_FIFO / cyclictest: p99, median of rounds",
	  true, false },
	{ "executor diamond on 2 workers", "epoll + thread handoff, chain of 3", true, 1.5,
	  "executor diamond per vertex / thread handoff per item", false, true },
};

struct opts {
	const char *json, *markdown, *only;
	bool list, peers;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " BENCH_PROG " [--quick] [--domain D] [--iceoryx] [--json FILE] [--markdown FILE]\n"
		"                  [--rounds N] [--only TEXT] [--list] [--peers]\n"
		"Runs every figure of docs/performance.md beside its same-run floor. Needs a\n"
		"takt-broker for the domain (scripts/bench starts one, and iox-roudi).\n"
		"  --quick          fewer samples (a smoke test, under a minute)\n"
		"  --domain D       takt domain (default: $TAKT_DOMAIN, else \"default\")\n"
		"  --iceoryx        iox-roudi is running: run the iceoryx figures\n"
		"  --rounds N       run each group of figures N times, interleaved, samples\n"
		"                   pooled (default: 3, --quick 1)\n"
		"  --json FILE      also write the figures as JSON (scripts/bench-plot reads it)\n"
		"  --markdown FILE  also write them as a Markdown table\n"
		"  --only TEXT      only figures whose name contains TEXT\n"
		"  --list           print the figure names and exit\n"
		"  --peers          print the peers built in (iceoryx, zmq), one a line, and exit\n"
		"Exit status: 0 every figure that could run ran, 2 no broker, 1 other failure.\n");
}

/* 0: run; 1: help printed; -EINVAL: bad usage. */
static int parse_args(int argc, char **argv, struct config *cfg, struct opts *o)
{
	char *end;
	static const struct option lo[] = {
		{ "quick", no_argument, NULL, 'q' },	     { "domain", required_argument, NULL, 'd' },
		{ "iceoryx", no_argument, NULL, 'i' },	     { "json", required_argument, NULL, 'j' },
		{ "markdown", required_argument, NULL, 'm' }, { "only", required_argument, NULL, 'o' },
		{ "list", no_argument, NULL, 'l' },	     { "peers", no_argument, NULL, 'p' },
		{ "rounds", required_argument, NULL, 'r' },   { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "qd:ij:m:o:lpr:h", lo, NULL)) != -1) {
		switch (c) {
		case 'q': cfg->quick = true; break;
		case 'd': cfg->domain = optarg; break;
		case 'i': cfg->iceoryx = true; break;
		case 'j': o->json = optarg; break;
		case 'm': o->markdown = optarg; break;
		case 'o': o->only = optarg; break;
		case 'l': o->list = true; break;
		case 'p': o->peers = true; break;
		case 'r':
			cfg->rounds = (unsigned)strtoul(optarg, &end, 10);
			if (*end || cfg->rounds == 0 || cfg->rounds > 100)
				return -EINVAL;
			break;
		case 'h': usage(stdout); return 1;
		default: return -EINVAL;
		}
	}
	return optind == argc ? 0 : -EINVAL;
}

static void set_counts(struct config *cfg)
{
	static const size_t quick[] = { [C_POLL] = 20000, [C_BLOCK] = 5000,	  [C_BW] = 20000,
					[C_RAW_RATE] = 20,  [C_RATE] = 20,	  [C_PEER_RATE] = 20,
					[C_FANOUT] = 2000,  [C_EXEC] = 10000,	  [C_JITTER] = 1000 };
	static const size_t full[] = { [C_POLL] = 100000, [C_BLOCK] = 20000,	  [C_BW] = 100000,
				       [C_RAW_RATE] = 100,  [C_RATE] = 100,	  [C_PEER_RATE] = 100,
				       [C_FANOUT] = 20000,  [C_EXEC] = 50000,	  [C_JITTER] = 10000 };

	memcpy(cfg->n, cfg->quick ? quick : full, sizeof cfg->n);
	if (!cfg->rounds)
		cfg->rounds = cfg->quick ? 1 : 3;
	cfg->bw_bytes = cfg->quick ? 256ull * MiB : 2048ull * MiB;
	cfg->cap = 0;
	for (size_t i = 0; i <= C_JITTER; i++)
		if (cfg->n[i] > cfg->cap)
			cfg->cap = cfg->n[i];
}

/* The first two CPUs this process may use; -1 for both when fewer. */
static int pick_cpus(int *a, int *b)
{
	cpu_set_t set;
	int count = 0;

	*a = *b = -1;
	if (sched_getaffinity(0, sizeof set, &set) < 0)
		return (int)sysconf(_SC_NPROCESSORS_ONLN);
	for (int i = 0; i < CPU_SETSIZE; i++) {
		if (!CPU_ISSET(i, &set))
			continue;
		if (count == 0)
			*a = i;
		else if (count == 1)
			*b = i;
		count++;
	}
	if (count < 2)
		*a = *b = -1;
	return count;
}

/* Why a figure cannot run here, or NULL. */
static const char *unavailable(const struct fig *f, const struct config *cfg, enum status *st)
{
	*st = ST_NOT_INSTALLED;
	if (!f->impl && (f->need & NEED_ICEORYX))
		return "iceoryx C binding not found at build time (apt: iceoryx libiceoryx-binding-c-dev; "
		       "scripts/bench --install-peers)";
	if (!f->impl && (f->need & NEED_ZMQ))
		return "ZeroMQ not found at build time (apt: libzmq3-dev; scripts/bench --install-peers)";
	*st = ST_NOT_RUN;
	if ((f->need & NEED_ICEORYX) && !cfg->iceoryx)
		return "iox-roudi not running (pass --iceoryx when it is; scripts/bench starts it)";
	return NULL;
}

/* Samples of one figure gathered over the rounds of its group. */
struct gathered {
	uint64_t *s;
	size_t n, cap;
	uint64_t batch, drops;
};

static int gather(struct gathered *g, const struct shared *sh)
{
	if (g->n + sh->n_out > g->cap) {
		size_t cap = g->n + sh->n_out;
		uint64_t *s = realloc(g->s, cap * sizeof *s);

		if (!s)
			return -ENOMEM;
		g->s = s;
		g->cap = cap;
	}
	memcpy(g->s + g->n, sh->samples, sh->n_out * sizeof *g->s);
	g->n += sh->n_out;
	g->batch = sh->batch;
	g->drops += sh->drops;
	return 0;
}

/* Runs one round of figure i (the first round decides whether it can run). */
static void run_round(const struct config *cfg, struct shared *sh, struct result *res, struct gathered *g, size_t i,
		      unsigned round, bool *takt_down)
{
	const struct fig *f = &figs[i];
	const char *why;

	if (round > 0 && res[i].status != ST_NONE)
		return; /* failed or not available in an earlier round */
	if ((why = unavailable(f, cfg, &res[i].status))) {
		snprintf(res[i].note, sizeof res[i].note, "%s", why);
	} else if ((f->need & NEED_TAKT) && *takt_down) {
		res[i].status = ST_FAILED;
		snprintf(res[i].note, sizeof res[i].note, "no broker for domain '%s'", cfg->domain);
	} else if (bench_run_figure(f, cfg, sh, &res[i]) == 0) {
		res[i].status = ST_NONE;
		if (gather(&g[i], sh) < 0) {
			res[i].status = ST_FAILED;
			snprintf(res[i].note, sizeof res[i].note, "out of memory");
		}
	} else {
		*takt_down = *takt_down || ((f->need & NEED_TAKT) && strstr(res[i].note, "takt_node_open"));
	}
}

/* Runs the figures group by group (a floor and what is compared with it);
 * with several rounds each group runs round after round, its figures
 * interleaved, so a drift of the machine hits floor and figure alike. */
static int run_all(const struct config *cfg, const struct opts *o, struct shared *sh, struct result *res,
		   struct report *rp)
{
	struct gathered g[N_FIGS];
	bool takt_down = false;
	int rc = 0;

	memset(g, 0, sizeof g);
	report_header();
	for (size_t first = 0, end; first < N_FIGS; first = end) {
		for (end = first + 1; end < N_FIGS && strcmp(figs[end].group, figs[first].group) == 0; end++)
			;
		for (unsigned round = 0; round < cfg->rounds; round++)
			for (size_t i = first; i < end; i++)
				if (!o->only || strstr(figs[i].name, o->only))
					run_round(cfg, sh, res, g, i, round, &takt_down);
		for (size_t i = first; i < end; i++) {
			if (o->only && !strstr(figs[i].name, o->only))
				continue;
			if (res[i].status == ST_NONE)
				bench_summarize(&figs[i], g[i].s, g[i].n, g[i].n / cfg->rounds, g[i].batch, g[i].drops,
						&res[i]);
			if (res[i].status == ST_FAILED) {
				bool no_broker = (figs[i].need & NEED_TAKT) && strstr(res[i].note, "takt_node_open");

				rc = no_broker && rc != 1 ? 2 : 1;
			}
			free(g[i].s);
			report_row(rp, i);
		}
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct config cfg = { 0 };
	struct opts o = { 0 };
	struct result res[N_FIGS];
	struct report rp = { figs, res, N_FIGS, targets, sizeof targets / sizeof targets[0], &cfg, 0 };
	const char *env = getenv("TAKT_DOMAIN");
	struct shared *sh;
	size_t bytes;
	uint64_t t0 = bench_now_ns();
	int ret = parse_args(argc, argv, &cfg, &o), rc, n_cpus;

	if (ret != 0) {
		if (ret < 0)
			usage(stderr);
		return ret < 0;
	}
	if (o.peers) {
#ifdef TAKT_BENCH_ICEORYX
		printf("iceoryx\n");
#endif
#ifdef TAKT_BENCH_ZMQ
		printf("zmq\n");
#endif
		return 0;
	}
	if (o.list) {
		for (size_t i = 0; i < N_FIGS; i++)
			printf("%s\n", figs[i].name);
		return 0;
	}
	cfg.domain = cfg.domain ? cfg.domain : env && *env ? env : "default";
	set_counts(&cfg);
	n_cpus = pick_cpus(&cfg.cpu_a, &cfg.cpu_b);
	cfg.yield = n_cpus < 2;
	memset(res, 0, sizeof res);
	bytes = sizeof *sh + cfg.cap * sizeof(uint64_t);
	sh = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		perror(BENCH_PROG ": mmap");
		return 1;
	}
	printf(BENCH_PROG ": %s mode, %u round%s, domain '%s'; one-way = round trip / 2; medians and p99 over "
		    "per-sample times\n", cfg.quick ? "quick" : "full", cfg.rounds, cfg.rounds > 1 ? "s" : "", cfg.domain);
	if (cfg.yield)
		printf(BENCH_PROG ": fewer than 2 CPUs: unpinned, spin loops yield; figures are not comparable\n");
	else
		printf(BENCH_PROG ": side A on CPU %d, side B on CPU %d\n", cfg.cpu_a, cfg.cpu_b);
	rc = run_all(&cfg, &o, sh, res, &rp);
	if (!o.only)
		report_derived(&rp);
	report_targets(&rp, o.only != NULL); /* with --only: those it measured */
	rp.seconds = (double)(bench_now_ns() - t0) / 1e9;
	printf("\n" BENCH_PROG ": %.0f s\n", rp.seconds);
	if (o.json && (ret = report_json(&rp, o.json)) < 0) {
		fprintf(stderr, BENCH_PROG ": writing %s: %s\n", o.json, strerror(-ret));
		rc = 1;
	}
	if (o.markdown && (ret = report_markdown(&rp, o.markdown)) < 0) {
		fprintf(stderr, BENCH_PROG ": writing %s: %s\n", o.markdown, strerror(-ret));
		rc = 1;
	}
	munmap(sh, bytes);
	return rc;
}
