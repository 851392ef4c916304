/* takt-bench-pingpong - one-way latency between two processes, beside its floors.
 *
 * Two processes pinned to different CPUs bounce a counter; one-way latency is
 * the round trip / 2. Every takt figure is printed next to a floor measured in
 * the same run, because on shared virtual machines absolute times drift while
 * side-by-side ratios hold (docs: design/performance.md):
 *
 *   raw shm ping-pong       two cache lines of a shared page, busy-polling
 *   takt polling 8 B        loan/publish + spinning take        <= 1.5 x shm
 *   raw eventfd ping-pong   two eventfds, blocking read/write
 *   takt blocking 8 B       loan/publish + take/takt_sub_wait   <= 1.2 x eventfd
 *
 * For each figure the measuring process (A, "ping") forks an echo process (B).
 * A benchmark never fails for being slow: the exit status says only whether
 * every figure was produced (0), no broker runs for the domain (2), or
 * something else could not run (1).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity, pipe2 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <takt/ipc.h>

#define PROG "takt-bench-pingpong"
#define WARMUP 2000u          /* round trips before measuring: caches, TLB, CPU clocks */
#define HANDSHAKE_MS 10000    /* bound on every wait outside the measured loop */
#define STOP UINT64_MAX       /* counter value that ends an echo loop */
#define WHAT_LEN 88
#define NMODES 4

/* Set by signal handlers, looked at by every wait of the ping side: 1 when the
 * echo process died (SIGCHLD), 2 when the watchdog alarm fired. The handlers
 * are installed without SA_RESTART, so a blocked read or takt_sub_wait returns
 * EINTR and sees it. */
static volatile sig_atomic_t g_stop;
/* One CPU: a spinner would burn whole time slices waiting for a peer that
 * cannot run meanwhile, so spin loops yield (figures are then not comparable). */
static bool g_yield;

/* The raw shm floor's shared page. Each counter has one writer; they sit 128
 * bytes apart, on separate cache lines and outside the line pair that x86's
 * adjacent-line prefetcher pulls in together. */
struct shm_lines {
	_Atomic uint64_t ping; /* written by A only */
	char pad[120];
	_Atomic uint64_t pong; /* written by B only */
};
_Static_assert(offsetof(struct shm_lines, pong) == 128, "ping and pong must not share a line pair");
_Static_assert(sizeof(struct shm_lines) <= 4096, "shm_lines must fit one page");

struct run;

/* One figure: how each side sets up, bounces and tears down. */
struct mode {
	const char *name;
	int baseline;  /* index of the floor this figure is compared with; -1: a floor */
	double target; /* ratio target against the baseline */
	bool blocking; /* selects the blocking round-trip count */
	bool takt;
	int (*open)(struct run *r, bool ping); /* each side after fork; may be NULL */
	int (*ping)(struct run *r, uint64_t *samples, size_t n);
	int (*echo)(struct run *r);
	void (*close)(struct run *r); /* each side; may be NULL */
};

/* One side's state for one figure (B gets its copy through fork). */
struct run {
	const struct mode *mode;
	const char *domain;
	char prefix[48];         /* topic prefix, unique per process and mode */
	bool blocking;
	struct shm_lines *lines; /* raw shm: made once, before any fork */
	int efd_ping, efd_pong;  /* raw eventfd: made once, before any fork */
	takt_node *node;         /* takt: this side's own node and ports */
	takt_pub *pub;
	takt_sub *sub;
	pid_t child;
	int cpu_b;               /* B's CPU; -1: unpinned */
	int rfd, wfd;            /* handshake pipe ends toward the other side */
	int err;                 /* first failure: -errno, */
	char what[WHAT_LEN];     /* what failed, */
	bool at_node_open;       /* and whether takt_node_open did */
	int peer_err;            /* B's failure, as reported through the pipe */
	char peer_what[WHAT_LEN];
};

/* B -> A through the pipe: readiness (err 0) or why B failed. Smaller than
 * PIPE_BUF, so it is written and read whole. */
struct peer_msg {
	int32_t err;
	int32_t at_node_open;
	char what[WHAT_LEN];
};

struct figure {
	double median_ns, p99_ns; /* one-way */
	bool ok;
};

struct opts {
	size_t n_poll, n_block;
	const char *domain;
	const char *json;
};

__attribute__((format(printf, 3, 4))) static int fail(struct run *r, int err, const char *fmt, ...)
{
	va_list ap;

	if (r->err == 0) { /* keep the first cause, not its consequences */
		r->err = err;
		va_start(ap, fmt);
		vsnprintf(r->what, sizeof r->what, fmt, ap);
		va_end(ap);
	}
	return err;
}

static int stopped(struct run *r)
{
	if (g_stop == 1)
		return fail(r, -ECHILD, "echo process exited mid-run");
	return fail(r, -ETIMEDOUT, "watchdog: no echo for too long");
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* Round trip i (1-based, warm-up included) has ended: keep its time once the
 * warm-up is over. One clock read per round trip: each stamp ends one round
 * trip and starts the next, so the clock costs half of a start/stop pair. */
static inline void stamp(uint64_t *samples, uint64_t i, uint64_t *t0)
{
	uint64_t t1 = now_ns();

	if (i > WARMUP)
		samples[i - WARMUP - 1] = t1 - *t0;
	*t0 = t1;
}

/* Called on each empty poll of a spin loop: false when A must give up. */
static inline bool spin_on(void)
{
	if (g_yield)
		sched_yield();
	return !g_stop;
}

/* ---- raw shm floor ------------------------------------------------------ */

/* The counter is the whole message here, but a real handoff publishes a
 * payload written before it, so both directions use release/acquire:
 * S1 (A) -> S2 (B) carries ping, S3 (B) -> S4 (A) carries pong. */
static int shm_ping(struct run *r, uint64_t *samples, size_t n)
{
	struct shm_lines *l = r->lines;
	uint64_t t0 = now_ns();

	for (uint64_t i = 1; i <= WARMUP + n; i++) {
		/* S1: release, pairs with B's acquire S2. */
		atomic_store_explicit(&l->ping, i, memory_order_release);
		/* S4: acquire, pairs with B's release S3. */
		while (atomic_load_explicit(&l->pong, memory_order_acquire) != i)
			if (!spin_on())
				return stopped(r);
		stamp(samples, i, &t0);
	}
	/* S1 once more, with the value that ends B's loop. */
	atomic_store_explicit(&l->ping, STOP, memory_order_release);
	return 0;
}

static int shm_echo(struct run *r)
{
	struct shm_lines *l = r->lines;
	uint64_t seen = 0, v;

	for (;;) {
		/* S2: acquire, pairs with A's release S1. */
		while ((v = atomic_load_explicit(&l->ping, memory_order_acquire)) == seen)
			spin_on();
		if (v == STOP)
			return 0;
		/* S3: release, pairs with A's acquire S4. */
		atomic_store_explicit(&l->pong, v, memory_order_release);
		seen = v;
	}
}

/* ---- raw eventfd floor -------------------------------------------------- */

/* One blocking eventfd read or write; EINTR is retried unless A must stop. */
static int efd_io(struct run *r, int fd, uint64_t *v, bool wr)
{
	for (;;) {
		ssize_t k = wr ? write(fd, v, sizeof *v) : read(fd, v, sizeof *v);

		if (k == (ssize_t)sizeof *v)
			return 0;
		if (k >= 0)
			return fail(r, -EIO, "eventfd: short %s", wr ? "write" : "read");
		if (errno != EINTR)
			return fail(r, -errno, "eventfd %s", wr ? "write" : "read");
		if (g_stop)
			return stopped(r);
	}
}

/* Strict alternation keeps each eventfd's count at 0 or 1, so the value read
 * is the value written: 1 bounces, anything else ends B's loop. */
static int efd_ping(struct run *r, uint64_t *samples, size_t n)
{
	uint64_t t0 = now_ns(), v;

	for (uint64_t i = 1; i <= WARMUP + n; i++) {
		v = 1;
		if (efd_io(r, r->efd_ping, &v, true) < 0 || efd_io(r, r->efd_pong, &v, false) < 0)
			return r->err;
		stamp(samples, i, &t0);
	}
	v = 2;
	return efd_io(r, r->efd_ping, &v, true);
}

static int efd_echo(struct run *r)
{
	uint64_t v;

	for (;;) {
		if (efd_io(r, r->efd_ping, &v, false) < 0)
			return r->err;
		if (v != 1)
			return 0;
		if (efd_io(r, r->efd_pong, &v, true) < 0)
			return r->err;
	}
}

/* ---- takt --------------------------------------------------------------- */

/* Each side opens its own node after fork: a node is never shared across fork. */
static int takt_open_side(struct run *r, bool ping)
{
	char out[64], in[64];
	int ret;

	snprintf(out, sizeof out, "%s.%s", r->prefix, ping ? "ping" : "pong");
	snprintf(in, sizeof in, "%s.%s", r->prefix, ping ? "pong" : "ping");
	const struct takt_node_opts no = { .domain = r->domain, .name = ping ? PROG : PROG "-echo" };
	ret = takt_node_open(&no, &r->node);
	if (ret < 0) {
		r->at_node_open = true;
		return fail(r, ret, "takt_node_open(domain '%s')", r->domain);
	}
	const struct takt_pub_opts po = { .topic = out, .max_payload = sizeof(uint64_t) };
	ret = takt_pub_open(r->node, &po, &r->pub);
	if (ret < 0)
		return fail(r, ret, "takt_pub_open('%s')", out);
	const struct takt_sub_opts so = { .topic = in, .queue_depth = 16 }; /* overflow: default */
	ret = takt_sub_open(r->node, &so, &r->sub);
	if (ret < 0)
		return fail(r, ret, "takt_sub_open('%s')", in);
	return 0;
}

static void takt_close_side(struct run *r)
{
	takt_sub_close(r->sub);
	takt_pub_close(r->pub);
	takt_node_close(r->node);
	r->sub = NULL;
	r->pub = NULL;
	r->node = NULL;
}

/* Loans, fills and publishes one counter: >= 0 subscribers reached. */
static int takt_send(struct run *r, uint64_t v)
{
	void *p;
	int ret = takt_pub_loan(r->pub, sizeof v, &p);

	if (ret < 0)
		return fail(r, ret, "takt_pub_loan");
	memcpy(p, &v, sizeof v);
	ret = takt_pub_publish(r->pub, p);
	if (ret < 0)
		return fail(r, ret, "takt_pub_publish");
	return ret;
}

/* Takes the next counter, spinning (polling) or sleeping in takt_sub_wait
 * (blocking) while none is there. The caller releases *payload. */
static int takt_recv(struct run *r, uint64_t *v, const void **payload)
{
	struct takt_sample_info info;
	int ret;

	while ((ret = takt_sub_take(r->sub, payload, &info)) == -EAGAIN) {
		if (g_stop)
			return stopped(r);
		if (!r->blocking) {
			if (g_yield)
				sched_yield();
			continue;
		}
		ret = takt_sub_wait(r->sub, -1);
		if (ret < 0 && ret != -EINTR)
			return fail(r, ret, "takt_sub_wait");
	}
	if (ret < 0)
		return fail(r, ret, "takt_sub_take");
	if (info.size < sizeof *v) {
		takt_sub_release(r->sub, *payload);
		return fail(r, -EBADMSG, "sample of %" PRIu32 " bytes, expected 8", info.size);
	}
	memcpy(v, *payload, sizeof *v);
	return 0;
}

/* The broker may connect a new subscriber a moment after it opened, and a
 * sample published before that reaches no one: publish 0 until it reaches
 * B's subscriber, then wait for its echo (bounded by the watchdog). */
static int takt_connect(struct run *r)
{
	uint64_t deadline = now_ns() + HANDSHAKE_MS * 1000000ull, v;
	const void *p;
	int ret;

	while ((ret = takt_send(r, 0)) == 0) {
		if (now_ns() > deadline)
			return fail(r, -ETIMEDOUT, "no subscriber on '%s.ping'", r->prefix);
		sleep_ms(1);
	}
	if (ret < 0 || takt_recv(r, &v, &p) < 0)
		return r->err;
	takt_sub_release(r->sub, p);
	return v == 0 ? 0 : fail(r, -EPROTO, "first pong carried %" PRIu64 ", expected 0", v);
}

static int takt_ping(struct run *r, uint64_t *samples, size_t n)
{
	uint64_t t0, v;
	const void *p;

	if (takt_connect(r) < 0)
		return r->err;
	t0 = now_ns();
	for (uint64_t i = 1; i <= WARMUP + n; i++) {
		if (takt_send(r, i) < 0 || takt_recv(r, &v, &p) < 0)
			return r->err;
		takt_sub_release(r->sub, p);
		if (v != i)
			return fail(r, -EPROTO, "pong carried %" PRIu64 ", expected %" PRIu64, v, i);
		stamp(samples, i, &t0);
	}
	return takt_send(r, STOP) < 0 ? r->err : 0;
}

/* Echoes v, republishing while A's subscriber is not connected yet (see
 * takt_connect); a sample that reached no one cannot arrive twice. */
static int takt_echo_send(struct run *r, uint64_t v)
{
	uint64_t deadline = 0;
	int ret;

	while ((ret = takt_send(r, v)) == 0) {
		if (deadline == 0)
			deadline = now_ns() + HANDSHAKE_MS * 1000000ull;
		else if (now_ns() > deadline)
			return fail(r, -ETIMEDOUT, "no subscriber on '%s.pong'", r->prefix);
		sleep_ms(1);
	}
	return ret < 0 ? ret : 0;
}

static int takt_echo(struct run *r)
{
	const void *p;
	uint64_t v;
	int ret;

	for (;;) {
		if (takt_recv(r, &v, &p) < 0)
			return r->err;
		/* Echo first, release after: a forwarding node's release is off the
		 * critical path, and here it overlaps A's take. */
		ret = v == STOP ? 0 : takt_echo_send(r, v);
		takt_sub_release(r->sub, p);
		if (ret < 0 || v == STOP)
			return ret;
	}
}

static const struct mode modes[NMODES] = {
	{ "raw shm ping-pong", -1, 0, false, false, NULL, shm_ping, shm_echo, NULL },
	{ "takt polling 8 B", 0, 1.5, false, true, takt_open_side, takt_ping, takt_echo, takt_close_side },
	{ "raw eventfd ping-pong", -1, 0, true, false, NULL, efd_ping, efd_echo, NULL },
	{ "takt blocking 8 B", 2, 1.2, true, true, takt_open_side, takt_ping, takt_echo, takt_close_side },
};

/* ---- processes and handshakes ------------------------------------------ */

static void on_signal(int sig)
{
	g_stop = sig == SIGCHLD ? 1 : 2;
}

static int install_handlers(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_NOCLDSTOP; /* deliberately no SA_RESTART, see g_stop */
	if (sigaction(SIGCHLD, &sa, NULL) < 0 || sigaction(SIGALRM, &sa, NULL) < 0)
		return -errno;
	return 0;
}

static int pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) < 0 ? -errno : 0;
}

/* Waits until fd is readable or its writer is gone: 0, -ETIMEDOUT or -errno. */
static int wait_readable(int fd, int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	for (;;) {
		uint64_t now = now_ns();
		int k = poll(&pfd, 1, now >= deadline ? 0 : (int)((deadline - now + 999999) / 1000000));

		if (k > 0)
			return 0;
		if (k == 0 && now_ns() >= deadline)
			return -ETIMEDOUT;
		if (k < 0 && errno != EINTR)
			return -errno;
	}
}

static void send_msg(int fd, const struct run *r)
{
	struct peer_msg m = { .err = r->err, .at_node_open = r->at_node_open };

	memcpy(m.what, r->what, sizeof m.what);
	/* On failure A sees EOF instead and reports that B said nothing. */
	(void)!write(fd, &m, sizeof m);
}

/* 0 and *m, -EPIPE when B exited without a word, -ETIMEDOUT, -errno. */
static int read_msg(int fd, struct peer_msg *m, int timeout_ms)
{
	ssize_t k;
	int ret = wait_readable(fd, timeout_ms);

	if (ret < 0)
		return ret;
	do
		k = read(fd, m, sizeof *m);
	while (k < 0 && errno == EINTR);
	if (k == (ssize_t)sizeof *m) {
		m->what[sizeof m->what - 1] = '\0';
		return 0;
	}
	return k < 0 ? -errno : -EPIPE;
}

/* B: set up, report ready, wait for A's go, echo until STOP. Never returns. */
static _Noreturn void echo_main(struct run *r, pid_t parent)
{
	const struct mode *m = r->mode;
	char go;
	int ret;

	/* Die with A: a spinning orphan would burn a CPU forever. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	pin_to(r->cpu_b); /* unpinned is slower, not wrong */
	ret = m->open ? m->open(r, false) : 0;
	send_msg(r->wfd, r);
	if (ret == 0 && wait_readable(r->rfd, HANDSHAKE_MS) == 0 && read(r->rfd, &go, 1) == 1) {
		ret = m->echo(r);
		if (ret < 0)
			send_msg(r->wfd, r);
	} else if (ret == 0) {
		ret = -EPIPE; /* A gave up before its go */
	}
	if (m->close) /* a clean detach, not a client the broker must presume dead */
		m->close(r);
	_exit(ret < 0);
}

static int spawn_echo(struct run *r)
{
	int up[2], down[2]; /* up: B -> A, down: A -> B */
	pid_t parent = getpid(), pid;
	int ret;

	if (pipe2(up, O_CLOEXEC) < 0)
		return fail(r, -errno, "pipe");
	if (pipe2(down, O_CLOEXEC) < 0) {
		close(up[0]);
		close(up[1]);
		return fail(r, -errno, "pipe");
	}
	fflush(NULL); /* B must not flush A's buffered output a second time */
	g_stop = 0;
	pid = fork();
	ret = pid < 0 ? -errno : 0;
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		r->rfd = down[0];
		r->wfd = up[1];
		echo_main(r, parent);
	}
	close(up[1]);
	close(down[0]);
	if (pid < 0) {
		close(up[0]);
		close(down[1]);
		return fail(r, ret, "fork");
	}
	r->rfd = up[0];
	r->wfd = down[1];
	r->child = pid;
	return 0;
}

/* A: set up its side, wait for B's ready word, tell B to go. */
static int start_ping(struct run *r)
{
	struct peer_msg msg;
	int ret = r->mode->open ? r->mode->open(r, true) : 0;

	if (ret < 0)
		return ret;
	ret = read_msg(r->rfd, &msg, HANDSHAKE_MS);
	if (ret < 0)
		return fail(r, ret, "no ready word from the echo process");
	if (msg.err < 0) {
		r->at_node_open = msg.at_node_open;
		return fail(r, msg.err, "echo process: %s", msg.what);
	}
	if (write(r->wfd, "g", 1) != 1)
		return fail(r, -errno, "handshake write");
	return 0;
}

/* Waits (bounded) for B to exit, killing it when it does not. */
static void finish_echo(struct run *r, int ret)
{
	struct peer_msg msg;
	int status = 0, ms;

	if (ret < 0)
		kill(r->child, SIGKILL);
	for (ms = 0; ms < HANDSHAKE_MS && waitpid(r->child, &status, WNOHANG) != r->child; ms++)
		sleep_ms(1);
	if (ms == HANDSHAKE_MS) {
		kill(r->child, SIGKILL);
		while (waitpid(r->child, &status, 0) < 0 && errno == EINTR)
			;
	}
	if (read_msg(r->rfd, &msg, 0) == 0 && msg.err < 0) {
		r->peer_err = msg.err;
		memcpy(r->peer_what, msg.what, sizeof r->peer_what);
	}
	if (ret == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
		fprintf(stderr, PROG ": %s: warning: echo process ended with status 0x%x\n", r->mode->name, status);
	close(r->rfd);
	close(r->wfd);
}

/* Runs one figure end to end; the samples hold n round trips on success. */
static int run_figure(struct run *r, uint64_t *samples, size_t n)
{
	const struct mode *m = r->mode;
	int ret = spawn_echo(r);

	if (ret == 0) {
		ret = start_ping(r);
		if (ret == 0) {
			/* Watchdog, 10 s + 1 ms per round trip: never reached by a slow
			 * run, only by a lost sample or a stuck peer. */
			alarm((unsigned)(10 + (WARMUP + n) / 1000));
			ret = m->ping(r, samples, n);
			alarm(0);
		}
		finish_echo(r, ret); /* before close: B may still hold our samples */
	}
	if (m->close)
		m->close(r);
	return ret;
}

/* ---- figures and output ------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void summarize(uint64_t *s, size_t n, struct figure *f)
{
	size_t k = (n * 99 + 99) / 100; /* nearest rank: ceil(0.99 n) */
	double med;

	qsort(s, n, sizeof *s, cmp_u64);
	med = n % 2 ? (double)s[n / 2] : ((double)s[n / 2 - 1] + (double)s[n / 2]) / 2;
	f->median_ns = med / 2; /* one-way = round trip / 2 */
	f->p99_ns = (double)s[k - 1] / 2;
	f->ok = true;
}

static bool has_ratio(const struct figure *figs, int i)
{
	int b = modes[i].baseline;

	return b >= 0 && figs[b].ok && figs[b].median_ns > 0;
}

static void print_figure(const struct figure *figs, int i)
{
	const struct figure *f = &figs[i];
	int b = modes[i].baseline;

	printf("%-24s median %6.0f ns  p99 %6.0f ns", modes[i].name, f->median_ns, f->p99_ns);
	if (has_ratio(figs, i))
		printf("   %.2f x %s (target <= %.1f)", f->median_ns / figs[b].median_ns, modes[b].name,
		       modes[i].target);
	putchar('\n');
	fflush(stdout);
}

static int write_json(const char *path, const struct figure *figs)
{
	const char *sep = "";
	FILE *f = fopen(path, "w");
	int bad;

	if (!f)
		return -errno;
	fputs("[", f);
	for (int i = 0; i < NMODES; i++) {
		int b = modes[i].baseline;

		if (!figs[i].ok)
			continue;
		fprintf(f, "%s\n  {\"name\": \"%s\", \"median_ns\": %.1f, \"p99_ns\": %.1f, ", sep, modes[i].name,
			figs[i].median_ns, figs[i].p99_ns);
		if (has_ratio(figs, i))
			fprintf(f, "\"baseline\": \"%s\", \"ratio\": %.3f}", modes[b].name,
				figs[i].median_ns / figs[b].median_ns);
		else
			fputs("\"baseline\": null, \"ratio\": null}", f);
		sep = ",";
	}
	fputs("\n]\n", f);
	bad = ferror(f);
	return fclose(f) != 0 || bad ? -EIO : 0;
}

static void report_failure(const struct run *r, const char *domain)
{
	fprintf(stderr, PROG ": %s: %s: %s (%d)\n", r->mode->name, r->what, strerror(-r->err), r->err);
	if (r->peer_err < 0 && strcmp(r->peer_what, r->what) != 0)
		fprintf(stderr, PROG ": %s: echo process: %s: %s (%d)\n", r->mode->name, r->peer_what,
			strerror(-r->peer_err), r->peer_err);
	if (r->at_node_open)
		fprintf(stderr, PROG ": is takt-broker running for domain '%s'?\n", domain);
	if (r->mode->takt)
		fprintf(stderr, PROG ": skipping the remaining takt figures\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " [--quick] [--iterations N] [--domain D] [--json FILE]\n"
		"One-way latency (round trip / 2) between two processes on two CPUs:\n"
		"raw shm and raw eventfd floors, takt polling and blocking, 8 B samples.\n"
		"  --quick          20000 polling / 5000 blocking round trips\n"
		"                   (default 100000 / 20000)\n"
		"  --iterations N   N round trips for every figure\n"
		"  --domain D       takt domain (default: $TAKT_DOMAIN, else \"default\")\n"
		"  --json FILE      also write the figures as a JSON array\n"
		"Exit status: 0 all figures, 2 no broker (floors only), 1 other failure.\n");
}

/* 0: run; 1: help was printed; -EINVAL: bad usage. */
static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {
		{ "quick", no_argument, NULL, 'q' },	  { "iterations", required_argument, NULL, 'n' },
		{ "domain", required_argument, NULL, 'd' }, { "json", required_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },	  { NULL, 0, NULL, 0 },
	};
	size_t iters = 0;
	bool quick = false;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "qn:d:j:h", lo, NULL)) != -1) {
		switch (c) {
		case 'q': quick = true; break;
		case 'd': o->domain = optarg; break;
		case 'j': o->json = optarg; break;
		case 'h': usage(stdout); return 1;
		case 'n':
			errno = 0;
			iters = (size_t)strtoull(optarg, &end, 10);
			if (errno || *end || optarg[0] == '-' || iters == 0 || iters > (SIZE_MAX / 8) / 2)
				return -EINVAL;
			break;
		default: return -EINVAL;
		}
	}
	if (optind != argc)
		return -EINVAL;
	o->n_poll = iters ? iters : quick ? 20000 : 100000;
	o->n_block = iters ? iters : quick ? 5000 : 20000;
	return 0;
}

/* The first two CPUs this process may use (CPU 0 and 1 on a plain machine);
 * -1 for both when there are fewer than two. */
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

/* Everything the figures share, made before any fork: A's pinning, signal
 * handlers, the sample array and the floors' page and eventfds (released by
 * exit; every echo process inherits them). */
static int setup(const struct opts *o, struct run *proto, uint64_t **samples)
{
	int cpu_a, ret;
	void *page;

	g_yield = pick_cpus(&cpu_a, &proto->cpu_b) < 2;
	printf(PROG ": one-way latency = round trip / 2; %zu round trips polling, %zu blocking, %u warm-up; "
		    "domain '%s'\n", o->n_poll, o->n_block, WARMUP, o->domain);
	ret = pin_to(cpu_a);
	if (g_yield)
		printf(PROG ": fewer than 2 CPUs: unpinned, spin loops yield; figures are not comparable\n");
	else if (ret < 0)
		printf(PROG ": could not pin to CPU %d (%s); running unpinned\n", cpu_a, strerror(-ret));
	else if (cpu_a >= 0)
		printf(PROG ": ping on CPU %d, echo on CPU %d\n", cpu_a, proto->cpu_b);
	ret = install_handlers();
	if (ret < 0)
		return fail(proto, ret, "sigaction");
	*samples = malloc((o->n_poll > o->n_block ? o->n_poll : o->n_block) * sizeof **samples);
	if (!*samples)
		return fail(proto, -ENOMEM, "sample array");
	page = mmap(NULL, sizeof *proto->lines, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (page == MAP_FAILED)
		return fail(proto, -errno, "mmap of the shared page");
	proto->lines = page; /* zero-filled: both counters start at 0 */
	proto->efd_ping = eventfd(0, EFD_CLOEXEC);
	proto->efd_pong = eventfd(0, EFD_CLOEXEC);
	if (proto->efd_ping < 0 || proto->efd_pong < 0)
		return fail(proto, -errno, "eventfd");
	return 0;
}

/* Runs every figure, floors first within each pair; after a takt failure the
 * floors still run. 0, 2 (no broker) or 1 (anything else failed). */
static int run_all(const struct opts *o, const struct run *proto, uint64_t *samples, struct figure *figs)
{
	bool takt_down = false;
	int rc = 0;

	for (int i = 0; i < NMODES; i++) {
		struct run r = *proto;
		size_t n = modes[i].blocking ? o->n_block : o->n_poll;

		if (modes[i].takt && takt_down)
			continue;
		r.mode = &modes[i];
		r.blocking = modes[i].blocking;
		snprintf(r.prefix, sizeof r.prefix, "bench.pingpong.%d.%s", (int)getpid(),
			 r.blocking ? "block" : "poll");
		if (run_figure(&r, samples, n) < 0) {
			report_failure(&r, o->domain);
			takt_down = takt_down || modes[i].takt;
			rc = r.at_node_open && r.err == -ENOENT && rc != 1 ? 2 : 1;
			continue;
		}
		summarize(samples, n, &figs[i]);
		print_figure(figs, i);
	}
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o = { 0 };
	struct figure figs[NMODES] = { 0 };
	struct run proto = { .efd_ping = -1, .efd_pong = -1, .rfd = -1, .wfd = -1 };
	uint64_t *samples = NULL;
	const char *env = getenv("TAKT_DOMAIN");
	int ret = parse_args(argc, argv, &o), rc;

	if (ret != 0) {
		if (ret < 0)
			usage(stderr);
		return ret < 0;
	}
	o.domain = o.domain ? o.domain : env && *env ? env : "default";
	proto.domain = o.domain;
	if (setup(&o, &proto, &samples) < 0) {
		fprintf(stderr, PROG ": %s: %s (%d)\n", proto.what, strerror(-proto.err), proto.err);
		free(samples);
		return 1;
	}
	rc = run_all(&o, &proto, samples, figs);
	if (o.json && (ret = write_json(o.json, figs)) < 0) {
		fprintf(stderr, PROG ": writing %s: %s\n", o.json, strerror(-ret));
		rc = 1;
	}
	free(samples);
	return rc;
}
