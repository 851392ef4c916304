/* bench.h - takt-bench internals: figures, the two-process harness, results.
 *
 * A figure is one measured number (a median with its p99, or a rate). Each
 * runs in fresh processes forked by the orchestrator (main): side A measures,
 * side B (when the figure has one) echoes or consumes. The two sides are
 * pinned to different CPUs and share one MAP_SHARED region, made before any
 * fork, that holds the samples, a few control words and a zeroed scratch
 * area for the raw baselines. The orchestrator itself never opens takt,
 * iceoryx or ZeroMQ state, so every figure starts from the same clean slate
 * and a library that cannot be re-initialised in one process (iceoryx's
 * runtime) costs nothing special.
 */
#ifndef TAKT_BENCH_H
#define TAKT_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_PROG "takt-bench"
#define BENCH_WHAT_LEN 120
#define BENCH_STOP UINT64_MAX         /* counter value that ends an echo or consumer loop */
#define BENCH_HANDSHAKE_MS 10000      /* bound on every wait outside a measured loop */
#define BENCH_SCRATCH (64u * 1024)    /* zeroed per figure: raw rings and lines live here */
#define KiB 1024u
#define MiB (1024u * 1024u)

/* How a figure's samples become its number. */
enum measure {
	M_ROUNDTRIP, /* samples: round trips (ns); figure: one-way = rt / 2, ns */
	M_DURATION,  /* samples: ns per operation; figure: ns */
	M_RATE,      /* samples: ns per batch of sh->batch messages; figure: msg/s */
	M_BW_RT,     /* samples: round trips moving `size` bytes each way; figure: GB/s one-way */
	M_BW_DUR,    /* samples: ns per copy of `size` bytes; figure: GB/s */
	M_LATENESS,  /* samples: lateness behind a timer's schedule (ns); p50, p99, max */
};

/* Which sample count a figure uses (chosen by --quick). */
enum count { C_POLL, C_BLOCK, C_BW, C_RAW_RATE, C_RATE, C_PEER_RATE, C_FANOUT, C_EXEC, C_JITTER };

enum need { NEED_NONE = 0, NEED_TAKT = 1, NEED_ICEORYX = 2, NEED_ZMQ = 4 };

struct params {
	size_t size;       /* payload bytes */
	bool blocking;     /* sleep (eventfd, takt_sub_wait, WaitSet) instead of spinning */
	bool bandwidth;    /* write and read the whole payload, not only its first line */
	unsigned nsubs;    /* fan-out: subscribers */
	unsigned workers;  /* executor worker threads */
	int shape;         /* executor: SHAPE_CHAIN or SHAPE_DIAMOND */
	int variant;       /* executor: VAR_DIRECT, VAR_EPOLL, VAR_HANDOFF, VAR_EXEC */
	int fifo;          /* jitter: SCHED_FIFO priority of the timed thread, 0: SCHED_OTHER */
};

enum { SHAPE_CHAIN, SHAPE_DIAMOND };
enum { VAR_DIRECT, VAR_EPOLL, VAR_HANDOFF, VAR_EXEC };

struct side;

/* One implementation: what each side does. run_b NULL: one process only. */
struct impl {
	/* In the orchestrator before the forks (both sides inherit what it
	 * makes, e.g. eventfds in s->fd), and after both exited; may be NULL. */
	int (*prepare)(struct side *s);
	void (*unprepare)(struct side *s);
	int (*open)(struct side *s);  /* each side, after fork; may be NULL */
	int (*run_a)(struct side *s); /* measures; writes s->sh->n_out samples */
	int (*run_b)(struct side *s); /* echoes or consumes until told to stop */
	void (*close)(struct side *s); /* each side; may be NULL; must accept a failed open */
};

struct fig {
	const char *name;      /* stable: JSON key and CTest check */
	const char *group;     /* latency, blocking, bandwidth, throughput, fan-out, executor, jitter */
	enum measure m;
	const char *baseline;  /* name of the same-run figure it is compared with; NULL: a floor */
	struct params p;
	const struct impl *impl; /* NULL: peer not built in */
	enum count cnt;
	unsigned need;
	unsigned per;          /* executor: items per dispatch, for overhead per item */
};

/* The region both sides and the orchestrator map. Each control word sits on
 * its own 128-byte line pair (x86's adjacent-line prefetcher pulls pairs). */
struct ctl_word {
	_Atomic uint64_t v;
	char pad[120];
};

struct shared {
	struct ctl_word w[4];   /* implementation-defined, zero at each figure's start */
	uint64_t n_out;         /* samples written (by whichever side measures) */
	uint64_t batch;         /* M_RATE: messages per sample */
	uint64_t drops;         /* messages lost (rates), cycles skipped (timers) */
	uint64_t pad[13];
	unsigned char scratch[BENCH_SCRATCH] __attribute__((aligned(4096)));
	uint64_t samples[];     /* capacity: struct config's cap */
};
_Static_assert(sizeof(struct ctl_word) == 128, "a control word is one line pair");
_Static_assert(offsetof(struct shared, scratch) % 4096 == 0, "scratch is page-aligned");

struct config {
	const char *domain;     /* takt domain */
	bool quick;
	bool iceoryx;           /* iox-roudi runs: iceoryx figures may run */
	bool yield;             /* fewer than 2 CPUs: spin loops yield */
	unsigned rounds;        /* each group of figures runs this often, interleaved */
	int cpu_a, cpu_b;       /* -1: unpinned */
	size_t cap;             /* sample capacity of struct shared */
	size_t n[C_JITTER + 1]; /* sample counts per enum count */
	uint64_t bw_bytes;      /* C_BW: fewer round trips for big payloads, >= 200 */
};

/* One side of one figure, in its own process. */
struct side {
	const struct fig *f;
	const struct config *cfg;
	bool is_a;
	struct shared *sh;
	size_t n;                /* samples to keep */
	size_t warmup;           /* before them, not kept */
	char prefix[64];         /* topic prefix, unique per figure and run */
	void *impl;              /* implementation state */
	int fd[2];               /* made by prepare, inherited by both sides */
	int err;                 /* first failure: -errno, */
	char what[BENCH_WHAT_LEN]; /* what failed, */
	bool at_node_open;       /* and whether takt_node_open did */
};

enum status { ST_NONE, ST_OK, ST_FAILED, ST_NOT_INSTALLED, ST_NOT_RUN };

/* M_LATENESS: the p99 of each round's samples, so a p99 target can
 * compare a figure's round with its baseline's round of the same pass
 * (run back to back): the median of their ratios, which a few seconds of
 * the hypervisor's stalls cannot set, where the pooled p99 belongs to
 * whichever figure they hit. */
#define BENCH_CHUNKS_MAX 128

struct result {
	enum status status;
	double value, p99, max;  /* in the figure's unit; max only for M_LATENESS */
	double p99_chunk[BENCH_CHUNKS_MAX]; /* M_LATENESS: per round */
	unsigned n_chunks;
	double one_way_ns;       /* M_BW_*: median one-way time behind the GB/s */
	uint64_t n, drops;
	char note[2 * BENCH_WHAT_LEN + 64];
};

/* ---- harness.c ---------------------------------------------------------- */

/* Records the first failure of a side; returns err. */
__attribute__((format(printf, 3, 4))) int bench_fail(struct side *s, int err, const char *fmt, ...);
struct takt_node;
uint64_t bench_now_ns(void);
/* The side's node of the figure's domain (named after side A or B): 0, or
 * bench_fail's error, noting a failed takt_node_open. */
int bench_takt_node(struct side *s, struct takt_node **out);
void bench_sleep_ms(unsigned ms);
/* Called on each empty poll of a spin loop (yields on one CPU). */
void bench_spin(const struct side *s);
/* Sample i (1-based, warm-up included) ended at now: keep t - *t0 once the
 * warm-up is over; *t0 = now. One clock read per sample. */
static inline void bench_stamp(struct side *s, uint64_t i, uint64_t *t0, uint64_t now)
{
	if (i > s->warmup)
		s->sh->samples[i - s->warmup - 1] = now - *t0;
	*t0 = now;
}
/* Lateness of a periodic wake-up at `now` on a grid start + k * period: the
 * time since the earliest tick no earlier wake-up served (*next_due, which
 * it then moves past now). A wake-up after a stall is late by the whole
 * stall, not by the stall modulo the period. */
static inline uint64_t bench_lateness(uint64_t now, uint64_t start, uint64_t period, uint64_t *next_due)
{
	uint64_t late = now > *next_due ? now - *next_due : 0;

	*next_due = now < start ? start : start + ((now - start) / period + 1) * period;
	return late;
}
/* Reads every byte of a payload (eight words at a time). */
uint64_t bench_read_all(const void *p, size_t n);
/* Writes every byte of a payload. */
void bench_fill(void *p, size_t n, uint64_t v);
int bench_pin(int cpu);
/* Runs one round of a figure (its count / cfg->rounds samples) in fresh
 * processes: 0 and the samples in sh, or -1 with r's status and note set. */
int bench_run_figure(const struct fig *f, const struct config *cfg, struct shared *sh, struct result *r);
/* Summarises n samples into r (sorts them); batch and drops as in struct shared. */
/* chunk: samples per round (M_LATENESS keeps each round's p99), 0 none. */
void bench_summarize(const struct fig *f, uint64_t *s, size_t n, size_t chunk, uint64_t batch, uint64_t drops,
		     struct result *r);

/* ---- report.c ------------------------------------------------------------ */

struct target {
	const char *figure, *against; /* ratio = value(figure) / value(against) */
	bool at_most;                 /* ratio <= goal; else >= goal */
	double goal;
	const char *what;             /* what the ratio says, in words */
	bool p99;                     /* compare the p99s, not the medians */
	bool per_item;                /* each figure's value divided by its items per dispatch */
};

struct report {
	const struct fig *figs;
	struct result *res;
	size_t n_figs;
	const struct target *targets;
	size_t n_targets;
	const struct config *cfg;
	double seconds;
};

const char *bench_unit(const struct fig *f);
void report_row(const struct report *rp, size_t i);
void report_header(void);
void report_derived(const struct report *rp); /* fan-out slope, after all rows */
/* measured_only: leave out the targets this run did not measure. */
void report_targets(const struct report *rp, bool measured_only);
int report_markdown(const struct report *rp, const char *path);
int report_json(const struct report *rp, const char *path);
/* The fan-out slope (ns per extra subscriber), from every fan-out figure;
 * false when one is missing. */
bool report_fanout_slope(const struct report *rp, double *ret_slope, double *ret_intercept);

/* ---- implementations ---------------------------------------------------- */

extern const struct impl raw_shm_pingpong, raw_two_line, raw_efd_pingpong, raw_spsc_ring, raw_zero_copy, raw_memcpy, raw_timerfd,
	cyclictest;
extern const struct impl takt_pingpong, takt_throughput, takt_fanout, takt_service_pingpong;
extern const struct impl exec_dispatch, exec_interval;
#ifdef TAKT_BENCH_ICEORYX
extern const struct impl iox_pingpong;
#endif
#ifdef TAKT_BENCH_ZMQ
extern const struct impl zmq_pair_pingpong, zmq_pubsub, zmq_reqrep_pingpong;
#endif

#endif
