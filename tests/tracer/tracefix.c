/* tracefix.c - a takt-trace process and a publisher/subscriber pair for the
 * tracer tests. */
#include "tracefix.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <takt/exec.h>

void tf_require_root(void)
{
	if (geteuid() != 0) {
		printf("skipped: needs root (takt-trace loads BPF programs and attaches uprobes)\n");
		exit(77);
	}
}

char *tf_slurp(const char *path)
{
	FILE *f = fopen(path, "re");
	size_t cap = 4096, n = 0, r;
	char *buf = malloc(cap);

	if (!f || !buf) {
		if (f)
			fclose(f);
		free(buf);
		return NULL;
	}
	while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (cap - n - 1 == 0) {
			char *nb = realloc(buf, cap *= 2);

			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
	}
	buf[n] = 0;
	fclose(f);
	return buf;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static void print_file(const char *what, const char *path)
{
	char *s = tf_slurp(path);

	fprintf(stderr, "---- %s (%s) ----\n%s\n----\n", what, path, s ? s : "(unreadable)");
	free(s);
}

int tf_tracer_start(struct tf_tracer *t, const char *rundir, const char *const *argv)
{
	const char *args[32] = {"takt-trace"};
	int n = 1;

	for (; argv[n - 1] && n < 31; n++)
		args[n] = argv[n - 1];
	args[n] = NULL;
	snprintf(t->out, sizeof(t->out), "%s/trace.out", rundir);
	snprintf(t->err, sizeof(t->err), "%s/trace.err", rundir);
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		int o = open(t->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(t->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
			_exit(126);
		execv(TAKT_TRACE_PATH, (char *const *)args);
		_exit(127);
	}
	for (int waited = 0; waited < TF_WAIT_MS; waited += 20) {
		char *err = tf_slurp(t->err);
		bool ready = err && strstr(err, "Tracing ");
		int status;

		free(err);
		if (ready)
			return 0;
		if (waitpid(t->pid, &status, WNOHANG) == t->pid) {
			fprintf(stderr, "tracefix: takt-trace exited (status %d) before tracing\n", status);
			print_file("takt-trace stderr", t->err);
			t->pid = 0;
			return -1;
		}
		sleep_ms(20);
	}
	fprintf(stderr, "tracefix: takt-trace did not start tracing within %d ms\n", TF_WAIT_MS);
	print_file("takt-trace stderr", t->err);
	tf_tracer_stop(t);
	return -1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int tf_tracer_stop(struct tf_tracer *t)
{
	uint64_t t0 = mono_ms();
	int r;

	if (t->pid <= 0)
		return -1;
	kill(t->pid, SIGINT);
	r = h_wait(t->pid, TF_STOP_MS);
	t->pid = 0;
	fprintf(stderr, "tracefix: takt-trace exited %d after %llu ms\n", r, (unsigned long long)(mono_ms() - t0));
	if (r != 0)
		print_file("takt-trace stderr", t->err);
	return r;
}

/* ---- the publisher and the subscriber executor ------------------------------- */

struct consumer {
	takt_sub *sub;
	takt_exec *ex;
	unsigned got, want;
};

static int consume_declare(takt_triggers *t, void *u)
{
	return takt_trigger_subscriber(t, ((struct consumer *)u)->sub);
}

static int consume_execute(takt_ctx *ctx, void *u)
{
	struct consumer *c = u;
	const void *p;

	(void)ctx;
	while (takt_sub_take(c->sub, &p, NULL) == 0) {
		c->got++;
		takt_sub_release(c->sub, p);
	}
	if (c->got >= c->want)
		takt_exec_stop(c->ex);
	return TAKT_CONTINUE;
}

static int sub_child(void *arg)
{
	struct tf_pubsub *ps = arg;
	struct takt_sub_opts so = {.topic = ps->topic, .queue_depth = 256, .overflow = TAKT_OVERFLOW_BLOCK};
	struct takt_exec_opts eo = {.worker_threads = 0, .handle_signals = -1};
	struct consumer c = {.want = ps->count};
	struct takt_item it = {.name = "consume", .declare = consume_declare, .execute = consume_execute,
			       .user = &c};
	takt_node *n = h_node(ps->domain, "trace-sub");
	int32_t tid = (int32_t)gettid();
	takt_exec *ex;
	char ch;

	H_CHECK(takt_sub_open(n, &so, &c.sub) == 0);
	H_CHECK(takt_exec_create(&eo, &ex) == 0);
	c.ex = ex;
	H_CHECK(takt_exec_add(ex, &it) == 0);
	H_CHECK(h_chan_send(&ps->from_sub, &tid, sizeof(tid)) == 0);
	/* run_for on this thread: it is the dispatch thread, the one that
	 * parks. One run, which the item stops once it took them all: no
	 * timeout of ours wakes the thread between samples (it did every 50
	 * ms: on a loaded machine such a timer wakeup still waiting for a CPU
	 * when the next notify came made that sample "runnable", rightly so,
	 * but not the asleep thread the tests are about). */
	H_CHECK(takt_exec_run_for(ex, (TF_WAIT_MS + (uint64_t)ps->count * ps->gap_us / 1000) * 1000000) == 0);
	H_CHECK(h_chan_send(&ps->from_sub, &c.got, sizeof(c.got)) == 0);
	H_CHECK(h_chan_recv(&ps->to_sub, &ch, 1, TF_WAIT_MS) == 0);
	takt_exec_destroy(ex);
	takt_node_close(n);
	return 0;
}

static void sleep_us(unsigned us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000};

	nanosleep(&ts, NULL);
}

/* Whether the thread sleeps in an epoll wait: /proc/PID/task/TID/syscall
 * names the syscall only of a thread blocked off its CPU ("running" for
 * one that runs or was woken; reading it needs ptrace rights: root). */
static bool in_epoll_sleep(pid_t pid, pid_t tid)
{
	char path[64], buf[64];
	long nr;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", (int)pid, (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0 || !isdigit((unsigned char)buf[0]))
		return false;
	buf[n] = 0;
	nr = strtol(buf, NULL, 10);
#ifdef SYS_epoll_wait
	if (nr == SYS_epoll_wait)
		return true;
#endif
#ifdef SYS_epoll_pwait2
	if (nr == SYS_epoll_pwait2)
		return true;
#endif
	return nr == SYS_epoll_pwait;
}

/* Waits until the subscriber's dispatch thread is parked and asleep (it
 * parks before its epoll wait): every sample is to find it so. The gap
 * alone did not ensure it on a loaded machine, where the thread could
 * still be waiting for a CPU to take the previous sample (then no notify:
 * "busy"), or be preempted on its way to sleep. Bounded: after
 * TF_ASLEEP_MS the sample goes anyway, and the tracer reports the thread
 * as it found it. Returns whether it slept. */
static bool wait_sub_asleep(const struct tf_pubsub *ps)
{
	for (unsigned waited_us = 0; waited_us < TF_ASLEEP_MS * 1000; waited_us += 100) {
		if (in_epoll_sleep(ps->sub_pid, ps->sub_tid))
			return true;
		sleep_us(100);
	}
	return false;
}

static int pub_child(void *arg)
{
	struct tf_pubsub *ps = arg;
	struct takt_pub_opts po = {.topic = ps->topic, .max_payload = 64};
	takt_node *n = h_node(ps->domain, "trace-pub");
	takt_pub *p;
	char ch = 'r';

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ps->from_pub, &ch, 1) == 0);
	H_CHECK(h_chan_recv(&ps->to_pub, &ch, 1, TF_WAIT_MS) == 0);
	for (uint64_t i = 1; i <= ps->count; i++) {
		if (!wait_sub_asleep(ps))
			fprintf(stderr, "tracefix: sample %llu: the subscriber's dispatch thread was not asleep after %d ms\n",
				(unsigned long long)i, TF_ASLEEP_MS);
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
		sleep_us(ps->gap_us);
	}
	H_CHECK(h_chan_send(&ps->from_pub, "d", 1) == 0);
	H_CHECK(h_chan_recv(&ps->to_pub, &ch, 1, TF_WAIT_MS) == 0);
	takt_node_close(n);
	return 0;
}

int tf_pubsub_start(struct tf_pubsub *ps)
{
	int32_t tid;
	char ch;

	if (h_chan_open(&ps->to_pub) || h_chan_open(&ps->to_sub) || h_chan_open(&ps->from_sub) ||
	    h_chan_open(&ps->from_pub))
		return -1;
	ps->sub_pid = h_spawn(sub_child, ps);
	if (h_chan_recv(&ps->from_sub, &tid, sizeof(tid), TF_WAIT_MS) < 0) {
		fprintf(stderr, "tracefix: the subscriber did not start\n");
		return -1;
	}
	ps->sub_tid = tid;
	ps->pub_pid = h_spawn(pub_child, ps);
	if (h_chan_recv(&ps->from_pub, &ch, 1, TF_WAIT_MS) < 0) {
		fprintf(stderr, "tracefix: the publisher did not start\n");
		return -1;
	}
	return 0;
}

int tf_pubsub_run(struct tf_pubsub *ps)
{
	int wait_ms = TF_WAIT_MS + (int)((uint64_t)ps->count * ps->gap_us / 1000);
	char ch;

	if (h_chan_send(&ps->to_pub, "g", 1) < 0 || h_chan_recv(&ps->from_pub, &ch, 1, wait_ms) < 0) {
		fprintf(stderr, "tracefix: the publisher did not finish\n");
		return -1;
	}
	if (h_chan_recv(&ps->from_sub, &ps->received, sizeof(ps->received), wait_ms) < 0) {
		fprintf(stderr, "tracefix: the subscriber did not finish\n");
		return -1;
	}
	return 0;
}

int tf_pubsub_stop(struct tf_pubsub *ps)
{
	int a, b;

	h_chan_send(&ps->to_pub, "e", 1);
	h_chan_send(&ps->to_sub, "e", 1);
	a = h_wait(ps->pub_pid, TF_WAIT_MS);
	b = h_wait(ps->sub_pid, TF_WAIT_MS);
	h_chan_close(&ps->to_pub);
	h_chan_close(&ps->to_sub);
	h_chan_close(&ps->from_sub);
	h_chan_close(&ps->from_pub);
	if (a || b)
		fprintf(stderr, "tracefix: publisher exited %d, subscriber %d\n", a, b);
	return a || b ? -1 : 0;
}

/* ---- the export and jq ------------------------------------------------------------- */

int tf_run(const char *const *argv)
{
	pid_t pid = fork();

	if (pid == 0) {
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	return pid < 0 ? -1 : h_wait(pid, TF_WAIT_MS);
}

long tf_jq_count(const char *filter, const char *path)
{
	char cmd[1024], buf[64];
	long n = -1;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "jq -e '%s' '%s'", filter, path);
	p = popen(cmd, "r");
	if (!p)
		return -1;
	if (fgets(buf, sizeof(buf), p))
		n = strtol(buf, NULL, 10);
	if (pclose(p) != 0)
		return -1;
	return n;
}

/* ---- JSON lines ------------------------------------------------------------- */

static const char *json_value(const char *obj, const char *key)
{
	char pat[80];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(obj, pat);
	return p ? p + strlen(pat) : NULL;
}

bool tf_json_num(const char *obj, const char *key, long long *out)
{
	const char *v = json_value(obj, key);
	char *end;
	long long x;

	if (!v || !strncmp(v, "null", 4))
		return false;
	errno = 0;
	x = strtoll(v, &end, 10);
	if (end == v || errno)
		return false;
	*out = x;
	return true;
}

bool tf_json_str(const char *obj, const char *key, char *out, size_t len)
{
	const char *v = json_value(obj, key), *e;

	if (!v || *v != '"')
		return false;
	e = strchr(v + 1, '"');
	if (!e)
		return false;
	snprintf(out, len, "%.*s", (int)(e - v - 1), v + 1);
	return true;
}
