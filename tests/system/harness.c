/* harness.c - starting brokers and child processes for system tests. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static int broker_config(struct h_broker *b, const char *ini)
{
	FILE *f;

	snprintf(b->config, sizeof(b->config), "%s/broker.ini", b->rundir);
	f = fopen(b->config, "w");
	if (!f)
		return -errno;
	fprintf(f, "[domain]\nname = %s\n%s\n", b->domain, ini);
	fclose(f);
	return 0;
}

/* What the broker's process runs, made by h_spawn or a test's spawn. */
struct broker_run {
	const struct h_broker *b;
	const char *log;
	int exe; /* the broker's executable, opened before a spawn may hide its path (a container's /tmp) */
};

static int broker_exec(void *arg)
{
	const struct broker_run *run = arg;
	const struct h_broker *b = run->b;

	if (run->log) {
		int fd = open(run->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
			return 126;
	}
	if (b->config[0])
		fexecve(run->exe, (char *[]){"takt-broker", "--foreground", "--config", (char *)b->config, NULL},
			environ);
	else
		fexecve(run->exe, (char *[]){"takt-broker", "--foreground", "--domain", (char *)b->domain, NULL},
			environ);
	return 127;
}

static int broker_spawn(struct h_broker *b, const struct h_broker_opts *o);

int h_broker_start(struct h_broker *b, const char *tag, const char *ini)
{
	return h_broker_start_opts(b, tag, ini, NULL);
}

int h_broker_start_with(struct h_broker *b, const char *tag, const char *ini,
			pid_t (*spawn)(int (*)(void *), void *))
{
	return h_broker_start_opts(b, tag, ini, &(struct h_broker_opts){.spawn = spawn});
}

int h_broker_start_opts(struct h_broker *b, const char *tag, const char *ini, const struct h_broker_opts *o)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->rundir, sizeof(b->rundir), "/tmp/takt-test-XXXXXX");
	if (!mkdtemp(b->rundir))
		return -errno;
	if (o && o->system_dir)
		unsetenv("TAKT_RUNTIME_DIR"); /* rundir keeps only the config */
	else
		setenv("TAKT_RUNTIME_DIR", b->rundir, 1);
	snprintf(b->domain, sizeof(b->domain), "t-%.24s-%d", tag, getpid());
	if (ini && broker_config(b, ini) < 0)
		return -EIO;
	return broker_spawn(b, o);
}

int h_broker_restart(struct h_broker *b)
{
	return broker_spawn(b, NULL);
}

int h_broker_restart_opts(struct h_broker *b, const struct h_broker_opts *o)
{
	return broker_spawn(b, o);
}

/* Starts a broker for b's domain (its config, if any) and waits until it
 * serves. */
static int broker_spawn(struct h_broker *b, const struct h_broker_opts *o)
{
	struct broker_run run = {.b = b, .log = o ? o->log : NULL,
				 .exe = open(TAKT_BROKER_PATH, O_RDONLY | O_CLOEXEC)};

	b->pid = run.exe < 0 ? -1 : (o && o->spawn ? o->spawn : h_spawn)(broker_exec, &run);
	if (run.exe >= 0)
		close(run.exe);
	if (b->pid < 0) {
		b->pid = 0;
		h_broker_stop(b);
		return -ECHILD;
	}
	for (int i = 0; i < 1000; i++) { /* up to 10 s */
		struct msg_status_reply st;
		int status;

		if (h_status(b->domain, &st) == 0)
			return 0;
		if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
			fprintf(stderr, "harness: takt-broker exited with %d before serving\n", WEXITSTATUS(status));
			b->pid = 0;
			return -ECHILD;
		}
		sleep_ms(10);
	}
	fprintf(stderr, "harness: takt-broker did not serve domain %s within 10 s\n", b->domain);
	h_broker_stop(b);
	return -ETIMEDOUT;
}

void h_broker_stop(struct h_broker *b)
{
	char path[200];

	if (b->pid > 0) {
		kill(b->pid, SIGTERM);
		if (h_wait(b->pid, 5000) < 0)
			fprintf(stderr, "harness: takt-broker ignored SIGTERM for 5 s\n");
		b->pid = 0;
	}
	if (b->config[0])
		unlink(b->config);
	/* left behind only by a broker that was killed */
	snprintf(path, sizeof(path), "%s/takt-%s.sock", b->rundir, b->domain);
	unlink(path);
	snprintf(path, sizeof(path), "%s/takt-%s.lock", b->rundir, b->domain);
	unlink(path);
	rmdir(b->rundir);
}

pid_t h_spawn(int (*fn)(void *), void *arg)
{
	pid_t pid = fork();

	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		_exit(fn(arg));
	}
	return pid;
}

/* What h_spawn_ns's child hands on to the process it forks. */
struct ns_start {
	int (*fn)(void *);
	void *arg;
	int flags;
	struct h_chan report; /* the inner pid, from the child to h_spawn_ns */
};

/* fn's process: pid 1 of the new PID namespace. */
static int ns_inner(struct ns_start *ns)
{
	sigset_t none;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(ns->report.wr);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL); /* what ns_outer blocked */
	return ns->fn(ns->arg);
}

/* The child in our PID namespace: enters the new namespaces, forks fn's
 * process into them, passes SIGTERM and SIGINT on to it and exits with its
 * status. Signals are taken with sigwaitinfo, so none is lost before the
 * inner pid is known. */
static int ns_outer(void *arg)
{
	struct ns_start *ns = arg;
	sigset_t mask;
	pid_t inner;

	close(ns->report.rd);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	if (unshare(ns->flags) < 0) {
		fprintf(stderr, "harness: unshare(%#x): %s\n", (unsigned)ns->flags, strerror(errno));
		return 125;
	}
	inner = fork();
	if (inner == 0)
		_exit(ns_inner(ns));
	if (inner < 0 || h_chan_send(&ns->report, &inner, sizeof(inner)) < 0)
		return 125;
	close(ns->report.wr);
	for (;;) {
		siginfo_t si;
		int status;

		if (sigwaitinfo(&mask, &si) < 0)
			continue; /* EINTR */
		if (si.si_signo != SIGCHLD)
			kill(inner, si.si_signo);
		else if (waitpid(inner, &status, WNOHANG) == inner)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
}

pid_t h_spawn_ns(int (*fn)(void *), void *arg, int flags, pid_t *ret_inner)
{
	struct ns_start ns = {.fn = fn, .arg = arg, .flags = flags};
	pid_t pid, inner;
	int r;

	r = h_chan_open(&ns.report);
	if (r < 0)
		return r;
	pid = h_spawn(ns_outer, &ns);
	close(ns.report.wr); /* so that a child that failed reads as EOF */
	r = pid < 0 ? -errno : h_chan_recv(&ns.report, &inner, sizeof(inner), 10000);
	close(ns.report.rd);
	if (r < 0) {
		if (pid > 0)
			fprintf(stderr, "harness: no process in new namespaces (child exited with %d)\n",
				h_wait(pid, 10000));
		return r;
	}
	*ret_inner = inner;
	return pid;
}

int h_wait(pid_t pid, int timeout_ms)
{
	for (int waited = 0;; waited += 2) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
		if (r < 0)
			return -1;
		if (waited >= timeout_ms) {
			fprintf(stderr, "harness: pid %d still running after %d ms: killed\n", pid, timeout_ms);
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		sleep_ms(2);
	}
}

int h_chan_open(struct h_chan *c)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	c->rd = p[0];
	c->wr = p[1];
	return 0;
}

void h_chan_close(struct h_chan *c)
{
	close(c->rd);
	close(c->wr);
}

int h_chan_send(struct h_chan *c, const void *buf, size_t n)
{
	return write(c->wr, buf, n) == (ssize_t)n ? 0 : -EIO;
}

int h_chan_recv(struct h_chan *c, void *buf, size_t n, int timeout_ms)
{
	size_t got = 0;

	while (got < n) {
		struct pollfd pfd = {.fd = c->rd, .events = POLLIN};
		ssize_t r;

		if (poll(&pfd, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		r = read(c->rd, (char *)buf + got, n - got);
		if (r <= 0)
			return -EIO;
		got += (size_t)r;
	}
	return 0;
}

int h_pools(const char *domain, struct proto_pool_stat *out, int max)
{
	struct msg_index req = {.index = 0};
	struct msg_pools_reply rep;
	int n = 0;

	do {
		int sock, r;

		if (proto_connect(domain, &sock) < 0)
			return -ENOENT;
		proto_hdr_init(&req.hdr, MSG_POOLS, sizeof(req), 1);
		r = proto_call(sock, &req, sizeof(req), &rep, sizeof(rep), NULL, 0, NULL, 5000, NULL, NULL);
		close(sock);
		if (r < 0)
			return r;
		for (uint32_t k = 0; k < rep.r.index && k < PROTO_POOLS_PER_REPLY && n < max; k++)
			out[n++] = rep.pools[k];
		req.index = rep.next;
	} while (rep.next != TAKT_NONE);
	return n;
}

int h_status(const char *domain, struct msg_status_reply *out)
{
	struct msg_empty req;
	int sock, r;

	if (proto_connect(domain, &sock) < 0)
		return -ENOENT;
	proto_hdr_init(&req.hdr, MSG_STATUS, sizeof(req), 1);
	r = proto_call(sock, &req, sizeof(req), out, sizeof(*out), NULL, 0, NULL, 5000, NULL, NULL);
	close(sock);
	return r;
}

/* A pool is whole when nothing is out but what history keeps. */
static bool pool_whole(const struct proto_pool_stat *st)
{
	return st->loans == 0 && st->in_flight == st->history;
}

int h_wait_pools_full(const char *domain, int timeout_ms)
{
	struct proto_pool_stat st[64];
	int n = 0;

	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		bool full = true;

		n = h_pools(domain, st, 64);
		for (int k = 0; k < n; k++)
			full &= pool_whole(&st[k]);
		if (n >= 0 && full)
			return 0;
		sleep_ms(10);
	}
	for (int k = 0; k < n; k++)
		fprintf(stderr, "harness: pool of '%s' (publisher %#llx, %llu B): total %u free %u in flight %u "
			"history %u loans %u\n", st[k].topic, (unsigned long long)st[k].publisher_id,
			(unsigned long long)st[k].payload_size, st[k].total, st[k].free, st[k].in_flight,
			st[k].history, st[k].loans);
	return -ETIMEDOUT;
}

int h_pool_of(const char *domain, uint64_t publisher_id, struct proto_pool_stat *out)
{
	struct proto_pool_stat st[64];
	int n = h_pools(domain, st, 64);

	for (int k = 0; k < n; k++)
		if (st[k].publisher_id == publisher_id) {
			*out = st[k];
			return 0;
		}
	return n < 0 ? n : -ENOENT;
}

int h_settle_pool(const char *domain, takt_pub *p, uint32_t in_flight, struct proto_pool_stat *out)
{
	memset(out, 0, sizeof(*out));
	for (int i = 0; i < 500; i++) {
		void *buf;
		int r = takt_pub_loan(p, 1, &buf);

		if (r < 0)
			return r; /* a loan must always succeed here */
		takt_pub_discard(p, buf);
		if (h_pool_of(domain, takt_pub_id(p), out) == 0 && out->in_flight == in_flight)
			return 0;
		sleep_ms(10); /* the broker retires a departed connection first */
	}
	return -ETIMEDOUT;
}

int h_become(uid_t uid, gid_t gid, const gid_t *groups, int n_groups)
{
	if (setgroups((size_t)n_groups, groups) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
		return -errno;
	/* dumpable again (setuid cleared it), so /proc/self is its own */
	return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0 ? -errno : 0;
}

takt_node *h_node(const char *domain, const char *name)
{
	struct takt_node_opts o = {.domain = domain, .name = name};
	takt_node *n = NULL;
	int r = takt_node_open(&o, &n);

	if (r < 0) {
		fprintf(stderr, "harness: takt_node_open(%s): %s\n", domain, strerror(-r));
		exit(99);
	}
	return n;
}

int h_raw_call(int sock, void *req, size_t size, uint16_t type, const int *fds, unsigned nf, int *ret_fd)
{
	union {
		struct proto_reply r;
		char bytes[TAKT_PROTO_MAX_MSG];
	} rep;
	int got[TAKT_PROTO_MAX_FDS];
	unsigned n = 0;
	long len;

	proto_hdr_init(req, type, (uint32_t)size, 7);
	if (proto_send(sock, req, size, fds, nf) < 0)
		return -EPIPE;
	len = proto_recv(sock, &rep, sizeof(rep), got, TAKT_PROTO_MAX_FDS, &n);
	if (len < (long)sizeof(rep.r))
		return -EPROTO;
	for (unsigned i = 0; i < n; i++)
		if (ret_fd && i == 0)
			*ret_fd = got[i];
		else
			close(got[i]);
	return rep.r.status;
}

int h_raw_hello(const char *domain, struct h_raw *r)
{
	struct msg_hello req = {.abi_version = TAKT_ABI_VERSION, .name = "raw"};
	union {
		struct msg_hello_reply h;
		char bytes[TAKT_PROTO_MAX_MSG];
	} rep;
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned n = 0;

	if (proto_connect(domain, &r->sock) < 0)
		return -ENOENT;
	proto_hdr_init(&req.hdr, MSG_HELLO, sizeof(req), 1);
	if (proto_send(r->sock, &req, sizeof(req), NULL, 0) < 0 ||
	    proto_recv(r->sock, &rep, sizeof(rep), fds, TAKT_PROTO_MAX_FDS, &n) != (long)sizeof(rep.h) ||
	    rep.h.r.status != 0 || n != 1) {
		close(r->sock);
		return -EPROTO;
	}
	r->reg_fd = fds[0];
	r->proc = rep.h.r.index;
	r->epoch = rep.h.epoch;
	return 0;
}

int h_takt(const char *domain, char *out, size_t size, const char *args)
{
	char cmd[1024];
	size_t n = 0;
	FILE *f;
	int st;

	snprintf(cmd, sizeof(cmd), "%s --domain %s %s", TAKT_TOOL_PATH, domain, args);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	while (n + 1 < size && !feof(f) && !ferror(f))
		n += fread(out + n, 1, size - 1 - n, f);
	out[n] = 0;
	st = pclose(f);
	return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
