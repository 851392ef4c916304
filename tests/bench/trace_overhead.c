/* takt-bench-trace-overhead - what takt-trace costs a blocking ping-pong.
 *
 * Two processes bounce a counter over two topics with loan/publish and
 * takt_sub_wait/take, so every message takes the traced path: publish,
 * notify, park, wakeup, take. One-way latency (round trip / 2) is measured
 * in the same run, with the same two processes, three ways:
 *
 *   untraced          no tracer
 *   traced (hist)     takt-trace hist: probes, joins and in-kernel histograms
 *   traced (wakeups)  takt-trace wakeups --json: also one event per sample to
 *                     user space, printed (to /dev/null)
 *
 * The three alternate --repeat times (default 3), so a machine that drifts
 * meanwhile (a shared virtual machine does) moves all three alike; each
 * figure pools its rounds, and the traced ones are divided by the untraced.
 * Only these same-run ratios mean anything.
 * Needs root (BPF) and a broker for the domain. Exit status: 0 every figure
 * produced, 2 no broker runs for the domain, 1 anything else.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <takt/ipc.h>

#define PROG "takt-bench-trace-overhead"
#define STOP UINT64_MAX
#define WAIT_NS 5000000000ll /* bound on every takt_sub_wait */
#define NFIG 3

#ifndef TAKT_TRACE_PATH
#define TAKT_TRACE_PATH "takt-trace"
#endif

struct side {
	takt_node *node;
	takt_pub *pub;
	takt_sub *sub;
};

struct figure {
	const char *name;
	const char *mode; /* takt-trace mode, NULL: untraced */
	double median_ns, p99_ns;
	bool ok;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pin_to(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static int side_open(struct side *s, const char *domain, const char *pub_topic, const char *sub_topic)
{
	struct takt_node_opts no = {.domain = domain, .name = PROG};
	struct takt_pub_opts po = {.topic = pub_topic, .max_payload = 8};
	struct takt_sub_opts so = {.topic = sub_topic, .queue_depth = 16};
	int r = takt_node_open(&no, &s->node);

	if (r < 0)
		return r;
	r = takt_sub_open(s->node, &so, &s->sub);
	if (r == 0)
		r = takt_pub_open(s->node, &po, &s->pub);
	return r;
}

static void side_close(struct side *s)
{
	takt_node_close(s->node); /* closes its ports */
}

static int send_u64(struct side *s, uint64_t v)
{
	void *p;
	int r = takt_pub_loan(s->pub, sizeof(v), &p);

	if (r < 0)
		return r;
	memcpy(p, &v, sizeof(v));
	return takt_pub_publish(s->pub, p);
}

/* Blocks until a value arrives: 0 and *v, or a negative errno. */
static int recv_u64(struct side *s, uint64_t *v)
{
	for (;;) {
		const void *p;
		int r = takt_sub_take(s->sub, &p, NULL);

		if (r == 0) {
			memcpy(v, p, sizeof(*v));
			takt_sub_release(s->sub, p);
			return 0;
		}
		if (r != -EAGAIN)
			return r;
		r = takt_sub_wait(s->sub, WAIT_NS);
		if (r < 0)
			return r;
	}
}

static _Noreturn void echo_main(const char *domain, const char *ping, const char *pong, int cpu, int ready_fd)
{
	struct side s = {0};
	uint64_t v = 0;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	pin_to(cpu);
	r = side_open(&s, domain, pong, ping);
	if (write(ready_fd, &r, sizeof(r)) != sizeof(r) || r < 0)
		_exit(1);
	while (v != STOP) {
		if (recv_u64(&s, &v) < 0 || send_u64(&s, v) < 0)
			_exit(1);
	}
	side_close(&s);
	_exit(0);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* n round trips into rt, after warmup more. */
static int measure(struct side *s, uint64_t *rt, size_t n, size_t warmup)
{
	for (size_t i = 0; i < warmup + n; i++) {
		uint64_t t0 = now_ns(), v;

		if (send_u64(s, i) < 0 || recv_u64(s, &v) < 0 || v != i)
			return -EIO;
		if (i >= warmup)
			rt[i - warmup] = now_ns() - t0;
	}
	return 0;
}

/* One-way median and p99 of n pooled round trips. */
static void summarize(uint64_t *rt, size_t n, struct figure *f)
{
	qsort(rt, n, sizeof(*rt), cmp_u64);
	f->median_ns = (double)rt[n / 2] / 2.0;
	f->p99_ns = (double)rt[n * 99 / 100] / 2.0;
	f->ok = true;
}

/* ---- the tracer -------------------------------------------------------- */

struct tracer {
	pid_t pid;
	int err_fd;
};

/* Starts takt-trace MODE on the domain and waits until it traces. */
static int tracer_start(struct tracer *t, const char *path, const char *mode, const char *domain)
{
	int p[2];
	char buf[4096];
	size_t used = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	t->pid = fork();
	if (t->pid == 0) {
		int devnull = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(devnull, 1);
		dup2(p[1], 2);
		if (!strcmp(mode, "wakeups"))
			execl(path, "takt-trace", "wakeups", "--json", "--domain", domain, "--no-pin", (char *)NULL);
		else
			execl(path, "takt-trace", mode, "--domain", domain, "--no-pin", "--interval", "3600", (char *)NULL);
		fprintf(stderr, "cannot run %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	close(p[1]);
	t->err_fd = p[0];
	while (used < sizeof(buf) - 1) {
		struct pollfd pfd = {.fd = t->err_fd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, 15000) <= 0)
			break;
		r = read(t->err_fd, buf + used, sizeof(buf) - 1 - used);
		if (r <= 0)
			break;
		used += (size_t)r;
		buf[used] = 0;
		if (strstr(buf, "Tracing "))
			return 0;
	}
	buf[used] = 0;
	fprintf(stderr, PROG ": takt-trace %s did not start: %s\n", mode, used ? buf : "(no output)");
	kill(t->pid, SIGKILL);
	waitpid(t->pid, NULL, 0);
	close(t->err_fd);
	return -EIO;
}

static int tracer_stop(struct tracer *t)
{
	int status = 0;

	kill(t->pid, SIGINT);
	for (int i = 0; i < 1000; i++) { /* 10 s */
		if (waitpid(t->pid, &status, WNOHANG) == t->pid) {
			close(t->err_fd);
			return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
		}
		usleep(10000);
	}
	kill(t->pid, SIGKILL);
	waitpid(t->pid, NULL, 0);
	close(t->err_fd);
	return -ETIMEDOUT;
}

/* ---- main -------------------------------------------------------------- */

struct opts {
	const char *domain, *trace, *json;
	size_t n;
	unsigned repeat;
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: " PROG " [--domain D] [--rounds N] [--repeat R] [--trace PATH] [--json FILE]\n"
		   "One-way latency of a blocking takt ping-pong untraced, traced by\n"
		   "'takt-trace hist' and traced by 'takt-trace wakeups --json', alternating\n"
		   "R times in one run; prints each traced figure's ratio to the untraced one.\n"
		   "Needs root and a takt-broker serving the domain.\n\n"
		   "  -d, --domain D   domain (default $TAKT_DOMAIN, else \"default\")\n"
		   "  -n, --rounds N   round trips per figure and repeat (default 10000)\n"
		   "  -r, --repeat R   alternations (default 3)\n"
		   "  -t, --trace P    takt-trace binary (default %s)\n"
		   "  -j, --json FILE  also write the figures as JSON\n"
		   "  -h, --help       this text\n",
		TAKT_TRACE_PATH);
}

static int parse(int argc, char **argv, struct opts *o)
{
	static const struct option lo[] = {{"domain", required_argument, NULL, 'd'},
					   {"rounds", required_argument, NULL, 'n'},
					   {"repeat", required_argument, NULL, 'r'},
					   {"trace", required_argument, NULL, 't'},
					   {"json", required_argument, NULL, 'j'},
					   {"help", no_argument, NULL, 'h'},
					   {NULL, 0, NULL, 0}};
	int c;

	*o = (struct opts){.domain = getenv("TAKT_DOMAIN"), .trace = TAKT_TRACE_PATH, .n = 10000, .repeat = 3};
	if (!o->domain || !*o->domain)
		o->domain = "default";
	while ((c = getopt_long(argc, argv, "d:n:r:t:j:h", lo, NULL)) != -1) {
		switch (c) {
		case 'd': o->domain = optarg; break;
		case 'n': o->n = strtoul(optarg, NULL, 10); break;
		case 'r': o->repeat = (unsigned)strtoul(optarg, NULL, 10); break;
		case 't': o->trace = optarg; break;
		case 'j': o->json = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (o->n < 100 || o->n > 10000000 || o->repeat < 1 || o->repeat > 100) {
		fprintf(stderr, PROG ": --rounds between 100 and 10000000, --repeat between 1 and 100\n");
		return -EINVAL;
	}
	return 0;
}

static void print_figures(const struct figure *f, FILE *out, bool json, const struct opts *o)
{
	double base = f[0].median_ns, base99 = f[0].p99_ns;

	if (json) {
		fprintf(out, "{\"rounds\":%zu,\"repeat\":%u,\"figures\":[", o->n, o->repeat);
		for (int i = 0; i < NFIG; i++)
			fprintf(out, "%s{\"name\":\"%s\",\"median_ns\":%.0f,\"p99_ns\":%.0f}", i ? "," : "", f[i].name,
				f[i].median_ns, f[i].p99_ns);
		fprintf(out, "],\"ratio_hist\":%.3f,\"ratio_wakeups\":%.3f,\"ratio_hist_p99\":%.3f,"
			     "\"ratio_wakeups_p99\":%.3f}\n",
			f[1].median_ns / base, f[2].median_ns / base, f[1].p99_ns / base99, f[2].p99_ns / base99);
		return;
	}
	fprintf(out, "%-18s %12s %12s %10s %10s\n", "figure (one-way)", "median us", "p99 us", "x median", "x p99");
	for (int i = 0; i < NFIG; i++)
		fprintf(out, "%-18s %12.2f %12.2f %10.2f %10.2f\n", f[i].name, f[i].median_ns / 1000, f[i].p99_ns / 1000,
			f[i].median_ns / base, f[i].p99_ns / base99);
	fprintf(out, "ratio traced/untraced (median): hist %.2f, wakeups %.2f\n", f[1].median_ns / base,
		f[2].median_ns / base);
}

/* One figure's rounds of one repeat into rt, the tracer running if it has a mode. */
static int run_one(const struct opts *o, struct side *a, const struct figure *f, uint64_t *rt)
{
	struct tracer t;
	int r;

	if (f->mode && (r = tracer_start(&t, o->trace, f->mode, o->domain)) < 0)
		return r;
	r = measure(a, rt, o->n, o->n / 10);
	if (r < 0)
		fprintf(stderr, PROG ": the ping-pong failed during '%s'\n", f->name);
	if (f->mode && tracer_stop(&t) < 0 && r == 0) {
		fprintf(stderr, PROG ": takt-trace %s did not exit cleanly\n", f->mode);
		r = -EIO;
	}
	return r;
}

static int run_figures(const struct opts *o, struct side *a, struct figure *f)
{
	size_t per = o->n * o->repeat;
	uint64_t *rt = calloc(NFIG * per, sizeof(*rt));
	int r = 0;

	if (!rt)
		return -ENOMEM;
	for (unsigned k = 0; k < o->repeat && r == 0; k++)
		for (int i = 0; i < NFIG && r == 0; i++)
			r = run_one(o, a, &f[i], rt + i * per + k * o->n);
	for (int i = 0; i < NFIG && r == 0; i++)
		summarize(rt + i * per, per, &f[i]);
	free(rt);
	return r;
}

int main(int argc, char **argv)
{
	struct figure f[NFIG] = {
		{.name = "untraced"},
		{.name = "traced (hist)", .mode = "hist"},
		{.name = "traced (wakeups)", .mode = "wakeups"},
	};
	char ping[64], pong[64];
	struct side a = {0};
	struct opts o;
	int ready[2], r, status;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pid_t echo;

	if (parse(argc, argv, &o) < 0)
		return 1;
	if (geteuid() != 0) {
		fprintf(stderr, PROG ": needs root (takt-trace loads BPF programs)\n");
		return 1;
	}
	snprintf(ping, sizeof(ping), "bench/trace/%d/ping", (int)getpid());
	snprintf(pong, sizeof(pong), "bench/trace/%d/pong", (int)getpid());
	if (pipe(ready) < 0)
		return 1;
	echo = fork();
	if (echo == 0)
		echo_main(o.domain, ping, pong, ncpu > 1 ? 1 : -1, ready[1]);
	if (read(ready[0], &r, sizeof(r)) != sizeof(r) || r < 0) {
		fprintf(stderr, PROG ": the echo process cannot attach to domain '%s': %s%s\n", o.domain,
			strerror(r < 0 ? -r : EIO), r == -ENOENT ? " (start takt-broker first)" : "");
		waitpid(echo, NULL, 0);
		return r == -ENOENT ? 2 : 1;
	}
	pin_to(0);
	r = side_open(&a, o.domain, ping, pong);
	if (r < 0) {
		fprintf(stderr, PROG ": cannot attach to domain '%s': %s\n", o.domain, strerror(-r));
		kill(echo, SIGKILL);
		return r == -ENOENT ? 2 : 1;
	}
	usleep(100000); /* both connections established */
	printf(PROG ": domain %s, blocking 8 B ping-pong, %zu round trips x %u repeats per figure, %ld CPUs\n",
	       o.domain, o.n, o.repeat, ncpu);
	r = run_figures(&o, &a, f);
	send_u64(&a, STOP);
	waitpid(echo, &status, 0);
	side_close(&a);
	if (r < 0)
		return 1;
	print_figures(f, stdout, false, &o);
	if (o.json) {
		FILE *j = fopen(o.json, "w");

		if (!j)
			return 1;
		print_figures(f, j, true, &o);
		fclose(j);
	}
	return 0;
}
