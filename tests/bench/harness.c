/* harness.c - runs one figure in fresh processes and summarises its samples.
 *
 * For each figure the orchestrator forks side B (if the figure has one) and
 * side A, each pinned to its own CPU. Both open what they need and report
 * "ready" through a pipe; the orchestrator then tells both to go (B first,
 * so it is already waiting), and waits for each to report "done" or a
 * failure. A side that fails, hangs past its watchdog, or dies is killed
 * together with its partner: a spinning orphan would burn a CPU forever, so
 * both also die with the orchestrator (PR_SET_PDEATHSIG).
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { MSG_READY = 1, MSG_DONE = 2 };

/* Child -> orchestrator; smaller than PIPE_BUF, so written and read whole. */
struct msg {
	int32_t kind;
	int32_t err;
	int32_t at_node_open;
	char what[BENCH_WHAT_LEN];
};

struct child {
	pid_t pid;
	int up, down; /* our ends: read its messages, write its go */
	bool ready, done, gone;
	struct msg m; /* its failure, if any */
};

int bench_fail(struct side *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (s->err == 0) { /* keep the first cause, not its consequences */
		s->err = err;
		va_start(ap, fmt);
		vsnprintf(s->what, sizeof s->what, fmt, ap);
		va_end(ap);
	}
	return err;
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

void bench_spin(const struct side *s)
{
	if (s->cfg->yield)
		sched_yield();
}

uint64_t bench_read_all(const void *p, size_t n)
{
	const uint64_t *w = p;
	uint64_t a = 0, b = 0, c = 0, d = 0;
	size_t i;

	/* Four independent sums keep several loads in flight. */
	for (i = 0; i + 4 <= n / 8; i += 4) {
		a += w[i];
		b += w[i + 1];
		c += w[i + 2];
		d += w[i + 3];
	}
	for (; i < n / 8; i++)
		a += w[i];
	return a + b + c + d;
}

void bench_fill(void *p, size_t n, uint64_t v)
{
	memset(p, (int)(v & 0xff), n);
}

int bench_pin(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof set, &set) < 0 ? -errno : 0;
}

static void send_msg(int fd, int kind, const struct side *s)
{
	struct msg m = { .kind = kind, .err = s->err, .at_node_open = s->at_node_open };

	memcpy(m.what, s->what, sizeof m.what);
	/* On failure the orchestrator sees EOF instead and reports that. */
	(void)!write(fd, &m, sizeof m);
}

/* Waits until fd is readable (or its writer is gone): 0, -ETIMEDOUT, -errno. */
static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int k;

	do
		k = poll(&pfd, 1, timeout_ms);
	while (k < 0 && errno == EINTR);
	return k > 0 ? 0 : k == 0 ? -ETIMEDOUT : -errno;
}

/* A child: set up, report ready, wait for go, run, report done. Never returns. */
static _Noreturn void child_main(struct side *s, int up, int down, pid_t parent)
{
	const struct impl *im = s->f->impl;
	char go;
	int ret;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	signal(SIGINT, SIG_IGN); /* ^C is the orchestrator's to handle */
	bench_pin(s->is_a ? s->cfg->cpu_a : s->cfg->cpu_b); /* unpinned is slower, not wrong */
	ret = im->open ? im->open(s) : 0;
	send_msg(up, MSG_READY, s);
	if (ret == 0 && wait_readable(down, BENCH_HANDSHAKE_MS) == 0 && read(down, &go, 1) == 1)
		ret = s->is_a ? im->run_a(s) : im->run_b(s);
	else if (ret == 0)
		ret = bench_fail(s, -EPIPE, "no go from the orchestrator");
	if (ret < 0 && s->err == 0)
		bench_fail(s, ret, "failed");
	/* Close before reporting done: a clean detach (not a client the broker
	 * must presume dead) before the next figure opens its ports. */
	if (im->close)
		im->close(s);
	send_msg(up, MSG_DONE, s);
	/* exit, not _exit: libraries' destructors run (iceoryx's runtime
	 * deregisters from iox-roudi and removes its socket only there). */
	exit(ret < 0);
}

static int spawn(struct side *s, struct child *c)
{
	int up[2], down[2];
	pid_t parent = getpid(), pid;

	memset(c, 0, sizeof *c);
	c->up = c->down = -1;
	if (pipe2(up, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(down, O_CLOEXEC) < 0) {
		close(up[0]);
		close(up[1]);
		return -errno;
	}
	fflush(NULL); /* the child must not flush our buffered output again */
	pid = fork();
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		child_main(s, up[1], down[0], parent);
	}
	close(up[1]);
	close(down[0]);
	if (pid < 0) {
		int err = -errno;

		close(up[0]);
		close(down[1]);
		return err;
	}
	c->pid = pid;
	c->up = up[0];
	c->down = down[1];
	return 0;
}

/* Reads one message from a child: 1 read, 0 EOF (the child is gone). */
static int read_child(struct child *c)
{
	struct msg m;
	ssize_t k;

	do
		k = read(c->up, &m, sizeof m);
	while (k < 0 && errno == EINTR);
	if (k != (ssize_t)sizeof m) {
		c->gone = true;
		return 0;
	}
	m.what[sizeof m.what - 1] = '\0';
	if (m.kind == MSG_READY)
		c->ready = true;
	else
		c->done = true;
	if (m.err < 0 && c->m.err == 0)
		c->m = m;
	return 1;
}

/* Waits until every child is ready (want_done false) or done, one fails, or
 * the deadline passes: 0, or a negative errno. */
static int wait_children(struct child *cs, int n, bool want_done, uint64_t deadline_ns)
{
	for (;;) {
		struct pollfd pfd[2];
		int np = 0, k, idx[2];
		uint64_t now = bench_now_ns();

		for (int i = 0; i < n; i++) {
			if (cs[i].m.err < 0)
				return cs[i].m.err;
			if (cs[i].gone)
				return -ECHILD;
			if (want_done ? !cs[i].done : !cs[i].ready) {
				pfd[np] = (struct pollfd){ .fd = cs[i].up, .events = POLLIN };
				idx[np++] = i;
			}
		}
		if (np == 0)
			return 0;
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		k = poll(pfd, (nfds_t)np, (int)((deadline_ns - now) / 1000000 + 1));
		if (k < 0 && errno != EINTR)
			return -errno;
		for (int j = 0; k > 0 && j < np; j++)
			if (pfd[j].revents)
				read_child(&cs[idx[j]]);
	}
}

static void reap(struct child *c, bool kill_it)
{
	int status, ms;

	if (c->pid <= 0)
		return;
	if (kill_it)
		kill(c->pid, SIGKILL);
	for (ms = 0; ms < BENCH_HANDSHAKE_MS && waitpid(c->pid, &status, WNOHANG) != c->pid; ms++)
		bench_sleep_ms(1);
	if (ms == BENCH_HANDSHAKE_MS) {
		kill(c->pid, SIGKILL);
		while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
			;
	}
	close(c->up);
	close(c->down);
	c->pid = 0;
}

/* Watchdog: generous, never reached by a slow run, only by a lost sample
 * or a stuck peer. */
static uint64_t budget_ns(const struct fig *f, size_t n)
{
	uint64_t per = 1000000; /* 1 ms per sample */

	if (f->m == M_BW_RT || f->m == M_BW_DUR)
		per = 2000000 + (uint64_t)(f->p.size / 1024) * 20000; /* 20 us per KiB */
	if (f->m == M_RATE)
		per = 200000000; /* a sample is a batch */
	return 20000000000ull + per * n;
}

static void set_note(struct result *r, const char *who, const struct msg *m, int err)
{
	if (m && m->err < 0)
		snprintf(r->note, sizeof r->note, "%s: %s: %s", who, m->what, strerror(-m->err));
	else
		snprintf(r->note, sizeof r->note, "%s", strerror(-err));
}

int bench_run_figure(const struct fig *f, const struct config *cfg, struct shared *sh, struct result *r)
{
	static unsigned seq;
	struct child cs[2];
	struct side a = { .f = f, .cfg = cfg, .is_a = true, .sh = sh }, b;
	int nc = 0, ret;
	bool pair = f->impl->run_b != NULL;

	a.n = cfg->n[f->cnt];
	if (f->cnt == C_BW && f->p.size && cfg->bw_bytes / f->p.size < a.n)
		a.n = cfg->bw_bytes / f->p.size < 200 ? 200 : cfg->bw_bytes / f->p.size;
	a.n = (a.n + cfg->rounds - 1) / cfg->rounds;
	a.warmup = f->m == M_RATE || f->m == M_LATENESS ? a.n / 20 : a.n / 10;
	if (a.warmup > 2000)
		a.warmup = 2000;
	if (a.n > cfg->cap)
		a.n = cfg->cap;
	snprintf(a.prefix, sizeof a.prefix, "bench.%d.%u", (int)getpid(), seq++); /* topics never reused */
	a.fd[0] = a.fd[1] = -1;
	memset(sh, 0, offsetof(struct shared, samples));
	if (f->impl->prepare && (ret = f->impl->prepare(&a)) < 0) {
		r->status = ST_FAILED;
		snprintf(r->note, sizeof r->note, "%s: %s", a.what, strerror(-ret));
		return -1;
	}
	b = a;
	b.is_a = false;
	if (pair) {
		ret = spawn(&b, &cs[nc]);
		if (ret < 0)
			goto out;
		nc++;
	}
	ret = spawn(&a, &cs[nc]);
	if (ret < 0)
		goto out;
	nc++;
	ret = wait_children(cs, nc, false, bench_now_ns() + 3ull * BENCH_HANDSHAKE_MS * 1000000);
	if (ret < 0)
		goto out;
	for (int i = 0; i < nc; i++)
		if (write(cs[i].down, "g", 1) != 1) {
			ret = -errno;
			goto out;
		}
	ret = wait_children(cs, nc, true, bench_now_ns() + budget_ns(f, a.n + a.warmup));
out:
	for (int i = 0; i < nc; i++)
		reap(&cs[i], ret < 0);
	if (f->impl->unprepare)
		f->impl->unprepare(&a);
	if (ret < 0) {
		const struct child *bad = NULL;

		for (int i = 0; i < nc; i++)
			if (cs[i].m.err < 0 && !bad)
				bad = &cs[i];
		r->status = ST_FAILED;
		if (bad)
			set_note(r, pair && bad == &cs[0] ? "side B" : "side A", &bad->m, ret);
		else if (ret == -ECHILD)
			snprintf(r->note, sizeof r->note, "a side exited without a word");
		else if (ret == -ETIMEDOUT)
			snprintf(r->note, sizeof r->note, "watchdog: no progress (lost sample or stuck peer)");
		else
			set_note(r, "", NULL, ret);
		if (bad && bad->m.at_node_open)
			snprintf(r->note + strlen(r->note), sizeof r->note - strlen(r->note),
				 " (is takt-broker running for domain '%s'?)", cfg->domain);
		return -1;
	}
	if (sh->n_out == 0 || sh->n_out > a.n) {
		r->status = ST_FAILED;
		snprintf(r->note, sizeof r->note, "%llu samples, expected %zu", (unsigned long long)sh->n_out, a.n);
		return -1;
	}
	return 0;
}

/* ---- summaries ----------------------------------------------------------- */

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return (a > b) - (a < b);
}

static double median(const uint64_t *s, size_t n)
{
	return n % 2 ? (double)s[n / 2] : ((double)s[n / 2 - 1] + (double)s[n / 2]) / 2;
}

void bench_summarize(const struct fig *f, uint64_t *s, size_t n, size_t chunk, uint64_t batch, uint64_t drops,
		     struct result *r)
{
	double med, p99, size = (double)f->p.size;
	size_t k;

	if (n == 0) {
		r->status = ST_FAILED;
		snprintf(r->note, sizeof r->note, "no samples");
		return;
	}
	r->n_chunks = 0;
	if (f->m == M_LATENESS && chunk) /* before the sort: the rounds in order */
		for (; r->n_chunks < BENCH_CHUNKS_MAX && (r->n_chunks + 1) * chunk <= n; r->n_chunks++) {
			uint64_t *c = s + r->n_chunks * chunk; /* sorted in place: all of s is next */

			qsort(c, chunk, sizeof *c, cmp_u64);
			r->p99_chunk[r->n_chunks] = (double)c[(chunk * 99 + 99) / 100 - 1];
		}
	qsort(s, n, sizeof *s, cmp_u64);
	k = (n * 99 + 99) / 100; /* nearest rank: ceil(0.99 n) */
	med = median(s, n);
	p99 = (double)s[k - 1];
	r->n = n;
	r->drops = drops;
	r->status = ST_OK;
	switch (f->m) {
	case M_ROUNDTRIP:
		r->value = med / 2;
		r->p99 = p99 / 2;
		break;
	case M_DURATION:
		r->value = med;
		r->p99 = p99;
		break;
	case M_LATENESS:
		r->value = med;
		r->p99 = p99;
		r->max = (double)s[n - 1];
		break;
	case M_RATE: /* the slow batches are the worst 1 % */
		r->value = (double)batch * 1e9 / med;
		r->p99 = (double)batch * 1e9 / p99;
		break;
	case M_BW_RT:
		med /= 2;
		p99 /= 2;
		/* fall through */
	case M_BW_DUR:
		r->one_way_ns = med;
		r->value = size / med; /* bytes per ns = GB/s */
		r->p99 = size / p99;
		break;
	}
}
