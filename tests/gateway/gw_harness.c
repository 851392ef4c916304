/* gw_harness.c - see gw_harness.h. */
#include "gw_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <sched.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
	nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000}, NULL);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	rc = system(cmd);
	if (rc != 0)
		fprintf(stderr, "gw_harness: '%s' failed (%d)\n", cmd, rc);
	return rc == 0 ? 0 : -EIO;
}

int gw_net_up(struct gw_net *n)
{
	unsigned id = (unsigned)getpid() % 100000;

	memset(n, 0, sizeof(*n));
	if (geteuid() != 0)
		return -EPERM;
	snprintf(n->ns_a, sizeof(n->ns_a), "takt-gw-a-%u", id);
	snprintf(n->ns_b, sizeof(n->ns_b), "takt-gw-b-%u", id);
	snprintf(n->veth_a, sizeof(n->veth_a), "tgwa%u", id);
	snprintf(n->veth_b, sizeof(n->veth_b), "tgwb%u", id);
	n->up = true; /* from here on gw_net_down undoes what was made */
	if (sh("ip netns add %s && ip netns add %s", n->ns_a, n->ns_b) ||
	    sh("ip link add %s type veth peer name %s", n->veth_a, n->veth_b) ||
	    sh("ip link set %s netns %s && ip link set %s netns %s", n->veth_a, n->ns_a, n->veth_b, n->ns_b) ||
	    sh("ip -n %s addr add 10.77.0.1/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
	       n->ns_a, n->veth_a, n->ns_a, n->veth_a, n->ns_a) ||
	    sh("ip -n %s addr add 10.77.0.2/24 dev %s && ip -n %s link set %s up && ip -n %s link set lo up",
	       n->ns_b, n->veth_b, n->ns_b, n->veth_b, n->ns_b)) {
		gw_net_down(n);
		return -EIO;
	}
	return 0;
}

void gw_net_down(struct gw_net *n)
{
	if (!n->up)
		return;
	/* deleting a namespace deletes the veth end in it, and so the pair
	 * (the link del is for a pair made before it moved) */
	sh("ip netns del %s 2>/dev/null; ip netns del %s 2>/dev/null; ip link del %s 2>/dev/null; true",
	   n->ns_a, n->ns_b, n->veth_a);
	n->up = false;
}

int gw_enter(const char *ns)
{
	char path[96];
	int fd, rc;

	if (!ns || !ns[0])
		return 0;
	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = setns(fd, CLONE_NEWNET) ? -errno : 0;
	close(fd);
	return rc;
}

struct in_ns {
	const char *ns;
	int (*fn)(void *);
	void *arg;
};

static int run_in_ns(void *a)
{
	struct in_ns *x = a;

	if (gw_enter(x->ns) < 0) {
		fprintf(stderr, "gw_harness: cannot enter network namespace %s\n", x->ns);
		return 1;
	}
	return x->fn(x->arg);
}

pid_t gw_spawn_in(const char *ns, int (*fn)(void *), void *arg)
{
	struct in_ns x = {ns, fn, arg}; /* the child has its own copy */

	return h_spawn(run_in_ns, &x);
}

/* ---- gateways ------------------------------------------------------------ */

static int gw_exec(void *a)
{
	struct gw_proc *g = a;
	int fd = open(g->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);

	if (fd >= 0)
		dup2(fd, 2);
	setenv("TAKT_RUNTIME_DIR", g->rundir, 1);
	execl(TAKT_GATEWAY_PATH, "takt-gateway", "--config", g->config, "--domain", g->domain, (char *)NULL);
	return 127;
}

/* `takt-gateway --stats --json --name NAME` of g's domain, parsed. */
static struct json_object *gw_stats(const struct gw_proc *g)
{
	char cmd[512], buf[65536];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "TAKT_RUNTIME_DIR=%s %s --stats --json --name %s --domain %s 2>/dev/null",
		 g->rundir, TAKT_GATEWAY_PATH, g->name, g->domain);
	f = popen(cmd, "r");
	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	pclose(f);
	buf[n] = 0;
	return json_tokener_parse(buf);
}

static int gw_wait_ready(struct gw_proc *g)
{
	for (int i = 0; i < 200; i++) { /* up to 10 s */
		struct json_object *o = gw_stats(g);
		bool up = o && json_object_array_length(o) == 1;
		int status;

		json_object_put(o);
		if (up)
			return 0;
		if (waitpid(g->pid, &status, WNOHANG) == g->pid) {
			fprintf(stderr, "gw_harness: takt-gateway %s exited with %d before serving\n", g->name,
				WIFEXITED(status) ? WEXITSTATUS(status) : -1);
			gw_dump_log(g);
			g->pid = 0;
			return -ECHILD;
		}
		sleep_ms(50);
	}
	fprintf(stderr, "gw_harness: takt-gateway %s did not publish its counters within 10 s\n", g->name);
	gw_dump_log(g);
	return -ETIMEDOUT;
}

int gw_restart(struct gw_proc *g)
{
	g->pid = gw_spawn_in(g->ns[0] ? g->ns : NULL, gw_exec, g);
	return g->pid > 0 ? gw_wait_ready(g) : -ECHILD;
}

int gw_start(struct gw_proc *g, const struct h_broker *b, const char *name, const char *ns, const char *ini)
{
	FILE *f;

	memset(g, 0, sizeof(*g));
	snprintf(g->name, sizeof(g->name), "%s", name);
	snprintf(g->rundir, sizeof(g->rundir), "%s", b->rundir);
	snprintf(g->domain, sizeof(g->domain), "%s", b->domain);
	snprintf(g->ns, sizeof(g->ns), "%s", ns ? ns : "");
	snprintf(g->config, sizeof(g->config), "%s/%s.ini", b->rundir, name);
	snprintf(g->log, sizeof(g->log), "%s/%s.log", b->rundir, name);
	f = fopen(g->config, "w");
	if (!f)
		return -errno;
	fprintf(f, "[gateway]\nname = %s\n%s", name, ini);
	fclose(f);
	return gw_restart(g);
}

int gw_stop(struct gw_proc *g, bool kill_it)
{
	int rc;

	if (g->pid <= 0)
		return 0;
	kill(g->pid, kill_it ? SIGKILL : SIGTERM);
	rc = h_wait(g->pid, 5000);
	if (rc < 0 && !kill_it)
		fprintf(stderr, "gw_harness: takt-gateway %s did not stop on SIGTERM within 5 s\n", g->name);
	g->pid = 0;
	return rc;
}

void gw_forget(struct gw_proc *g)
{
	char path[160];

	gw_stop(g, false);
	if (!g->name[0])
		return;
	snprintf(path, sizeof(path), "/takt-gw-%s-%s", g->domain, g->name);
	shm_unlink(path);
}

void gw_dump_log(const struct gw_proc *g)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "sed 's/^/  [%s] /' %s >&2", g->name, g->log);
	if (system(cmd) != 0)
		fprintf(stderr, "gw_harness: no log of %s\n", g->name);
}

int gw_counters(const struct gw_proc *g, const char *topic, const char *dir, struct gw_ctr *out)
{
	struct json_object *o = gw_stats(g), *a;
	int rc = -ENOENT;

	if (!o || json_object_array_length(o) != 1) {
		json_object_put(o);
		return -EIO;
	}
	a = json_object_object_get(json_object_array_get_idx(o, 0), "bridges");
	for (size_t i = 0; i < json_object_array_length(a); i++) {
		struct json_object *e = json_object_array_get_idx(a, i);

		if (strcmp(json_object_get_string(json_object_object_get(e, "topic")), topic) ||
		    strcmp(json_object_get_string(json_object_object_get(e, "direction")), dir))
			continue;
#define GET(f) out->f = (uint64_t)json_object_get_int64(json_object_object_get(e, #f));
		GET(samples) GET(bytes) GET(wire_bytes) GET(drops) GET(write_errors) GET(late_joiners)
		GET(duplicates) GET(skipped)
#undef GET
		rc = 0;
	}
	json_object_put(o);
	return rc;
}

int gw_wait_count(const struct gw_proc *g, const char *topic, const char *dir, uint64_t n, int timeout_ms)
{
	struct gw_ctr c = {0};

	for (int t = 0; t < timeout_ms; t += 50) {
		if (gw_counters(g, topic, dir, &c) == 0 && c.samples + c.duplicates >= n)
			return 0;
		sleep_ms(50);
	}
	fprintf(stderr, "gw_harness: %s %s '%s': %llu samples + %llu duplicates, not %llu, after %d ms\n", g->name,
		dir, topic, (unsigned long long)c.samples, (unsigned long long)c.duplicates, (unsigned long long)n,
		timeout_ms);
	return -ETIMEDOUT;
}

/* ---- the streams --------------------------------------------------------- */

void gw_fill(void *p, size_t size, uint64_t seq)
{
	uint8_t *b = p;

	memcpy(b, &seq, sizeof(seq));
	/* compressible (LZ4 finds the runs) and still checked byte by byte */
	for (size_t i = sizeof(seq); i < size; i++)
		b[i] = (uint8_t)('a' + (seq + i / 64) % 26);
}

uint64_t gw_check(const void *p, size_t size)
{
	const uint8_t *b = p;
	uint64_t seq;

	if (size < sizeof(seq))
		return UINT64_MAX;
	memcpy(&seq, b, sizeof(seq));
	for (size_t i = sizeof(seq); i < size; i++)
		if (b[i] != (uint8_t)('a' + (seq + i / 64) % 26))
			return UINT64_MAX;
	return seq;
}

static takt_node *gw_node(const char *rundir, const char *domain, const char *name)
{
	setenv("TAKT_RUNTIME_DIR", rundir, 1);
	return h_node(domain, name);
}

static int loan_retry(takt_pub *p, size_t size, void **out)
{
	for (int i = 0; i < 20000; i++) { /* 20 s at most */
		int r = takt_pub_loan(p, size, out);

		if (r != -ENOBUFS)
			return r;
		sleep_ms(1);
	}
	return -ETIMEDOUT;
}

static int pub_one(takt_pub *p, size_t size, uint64_t seq)
{
	void *x;

	H_CHECK(loan_retry(p, size, &x) == 0);
	gw_fill(x, size, seq);
	H_CHECK(takt_pub_publish(p, x) >= 0);
	return 0;
}

int gw_pub_child(void *a)
{
	struct gw_pub_args *pa = a;
	takt_node *n = gw_node(pa->rundir, pa->domain, "gw-test-pub");
	struct takt_pub_opts po = {.topic = pa->topic, .type_name = pa->type, .max_payload = pa->size,
				   .history = pa->history, .block_timeout_ns = 20000000000ull};
	takt_pub *p;
	char c;

	H_CHECK(n && takt_pub_open(n, &po, &p) == 0);
	if (pa->warmup) {
		int tries = 0;

		do {
			H_CHECK(pub_one(p, pa->size, 0) == 0);
			H_CHECK(++tries < 3000); /* 30 s */
		} while (h_chan_recv(pa->chan, &c, 1, 10) < 0);
	}
	for (uint64_t i = pa->first; i <= pa->last; i++) {
		H_CHECK(pub_one(p, pa->size, i) == 0);
		if (i == pa->pause_at[0] || i == pa->pause_at[1]) {
			H_CHECK(h_chan_send(pa->paused, "p", 1) == 0);
			H_CHECK(h_chan_recv(pa->step, &c, 1, GW_WAIT_MS) == 0);
		}
	}
	if (pa->done)
		H_CHECK(h_chan_recv(pa->done, &c, 1, GW_WAIT_MS) == 0);
	takt_node_close(n);
	return 0;
}

int gw_sub_child(void *a)
{
	struct gw_sub_args *sa = a;
	takt_node *n = gw_node(sa->rundir, sa->domain, "gw-test-sub");
	struct takt_sub_opts so = {.topic = sa->topic, .queue_depth = 256, .overflow = TAKT_OVERFLOW_BLOCK,
				   .history = sa->history};
	uint64_t next = sa->first;
	bool warm = false;
	takt_sub *s;

	H_CHECK(n && takt_sub_open(n, &so, &s) == 0);
	if (sa->ready)
		H_CHECK(h_chan_send(sa->ready, "r", 1) == 0);
	while (next <= sa->last) {
		const void *x;
		struct takt_sample_info info;
		int r = takt_sub_wait(s, 30000000000LL);

		if (r != 0)
			fprintf(stderr, "gw_sub_child: '%s': nothing for 30 s, expecting %llu of %llu..%llu\n",
				sa->topic, (unsigned long long)next, (unsigned long long)sa->first,
				(unsigned long long)sa->last);
		H_CHECK(r == 0);
		while (next <= sa->last && takt_sub_take(s, &x, &info) == 0) {
			uint64_t seq = gw_check(x, info.size);

			if (seq == 0 && !warm && sa->chan) { /* the path works: the publisher may start */
				warm = true;
				H_CHECK(h_chan_send(sa->chan, "w", 1) == 0);
			}
			if (seq != 0 && seq != next)
				fprintf(stderr, "gw_sub_child: '%s': got %llu (size %u), expected %llu\n", sa->topic,
					(unsigned long long)seq, info.size, (unsigned long long)next);
			H_CHECK(info.size == sa->size);
			H_CHECK(seq == 0 || seq == next);
			H_CHECK(info.origin != 0); /* it came through a gateway */
			if (seq && seq == sa->notify_at)
				H_CHECK(h_chan_send(sa->progress, "n", 1) == 0);
			next += seq != 0;
			takt_sub_release(s, x);
		}
	}
	H_CHECK(takt_sub_dropped(s) == 0);
	takt_node_close(n);
	return 0;
}
