/* test_broker.c - takt-broker and takt as a user runs them. */
#include "harness.h"
#include "layout.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* Runs a shell command, captures stdout+stderr; returns its exit status. */
static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = 0;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void expect_contains(const char *out, const char *what)
{
	if (!strstr(out, what))
		fail_msg("expected '%s' in output:\n%s", what, out);
}

static void test_broker_help_and_version(void **state)
{
	char out[4096];

	(void)state;
	assert_int_equal(run(out, sizeof(out), "%s --help", TAKT_BROKER_PATH), 0);
	expect_contains(out, "--config");
	expect_contains(out, "--foreground");
	assert_int_equal(run(out, sizeof(out), "%s --version", TAKT_BROKER_PATH), 0);
	expect_contains(out, TAKT_VERSION_STRING);
	assert_int_equal(run(out, sizeof(out), "%s --help", TAKT_TOOL_PATH), 0);
	expect_contains(out, "pools");
	assert_int_equal(run(out, sizeof(out), "%s --bogus", TAKT_BROKER_PATH), 2);
}

static void bad_config(const char *ini, const char *expect)
{
	char path[] = "/tmp/takt-bad-XXXXXX", out[4096];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, ini, strlen(ini)), (long)strlen(ini));
	close(fd);
	assert_int_equal(run(out, sizeof(out), "%s --foreground --config %s", TAKT_BROKER_PATH, path), 2);
	expect_contains(out, expect);
	unlink(path);
}

static void test_broker_refuses_bad_config(void **state)
{
	(void)state;
	bad_config("[limits]\nprocesses = lots\n", "[limits] processes = 'lots'");
	bad_config("[limits]\nprocesses = 0\n", "must be an integer in 1..");
	bad_config("[limits]\nwarp = 9\n", "[limits] warp: unknown key");
	bad_config("[limits]\nqueue_depth_max = 100\n", "power of two");
	bad_config("[pools]\nclass = 4096 x 8\n", "[pools] is gone: every publisher has its own pool");
	bad_config("[memory]\nmax_payload = huge\n", "[memory] max_payload = 'huge'");
	/* a suffix that would shift bits out is refused, not wrapped (found by
	 * takt-fuzz-config: this loaded as 1 GiB) */
	bad_config("[memory]\nmax_payload = 17179869185G\n", "[memory] max_payload = '17179869185G'");
	bad_config("[memory]\nprocess_max = 2G\ndomain_max = 1G\n", "exceeds domain_max");
	bad_config("[domain]\nname = ../etc\n", "[domain] name");
	bad_config("[nonsense\n", ":1:");
	bad_config("[socket]\nkeep_on_stop = yes\n", "[socket] keep_on_stop = 'yes': true or false");
}

static void test_broker_one_per_domain(void **state)
{
	struct h_broker b;
	char out[4096];

	(void)state;
	assert_int_equal(h_broker_start(&b, "single", NULL), 0);
	assert_int_equal(run(out, sizeof(out), "%s --foreground --domain %s", TAKT_BROKER_PATH, b.domain), 1);
	expect_contains(out, "already runs");
	/* Regression: the refused broker used to remove the lock on its way out,
	 * so a third start succeeded and tore down the running one. */
	assert_int_equal(run(out, sizeof(out), "%s --foreground --domain %s", TAKT_BROKER_PATH, b.domain), 1);
	expect_contains(out, "already runs");
	assert_int_equal(h_wait_pools_full(b.domain, 1000), 0);
	assert_int_equal(run(out, sizeof(out), "%s status --domain %s", TAKT_TOOL_PATH, b.domain), 0);
	expect_contains(out, "broker running, pid");
	assert_int_equal(run(out, sizeof(out), "%s pools --json --domain %s", TAKT_TOOL_PATH, b.domain), 0);
	expect_contains(out, "[]"); /* no publisher, no pool */
	{
		struct takt_pub_opts po = {.topic = "listed", .max_payload = 4096, .history = 2};
		takt_node *n = h_node(b.domain, "lister");
		char want[256];
		takt_pub *p;

		assert_int_equal(takt_pub_open(n, &po, &p), 0);
		assert_int_equal(run(out, sizeof(out), "%s pools --json --domain %s", TAKT_TOOL_PATH, b.domain), 0);
		/* loans_max (8) + history (2) chunks of 4096 bytes, all free */
		snprintf(want, sizeof(want),
			 "[{\"topic\":\"listed\",\"publisher_id\":%llu,\"pid\":%d,\"size\":4096,\"total\":10,"
			 "\"free\":10,\"in_flight\":0,",
			 (unsigned long long)takt_pub_id(p), (int)getpid());
		expect_contains(out, want);
		takt_node_close(n);
	}
	h_broker_stop(&b);
}

static void test_broker_tools_without_broker(void **state)
{
	char out[4096];

	(void)state;
	setenv("TAKT_RUNTIME_DIR", "/tmp", 1);
	assert_int_equal(run(out, sizeof(out), "%s pools --domain nobody-here", TAKT_TOOL_PATH), 1);
	expect_contains(out, "no broker runs for domain 'nobody-here'");
	assert_int_equal(run(out, sizeof(out), "%s status --domain nobody-here", TAKT_TOOL_PATH), 1);
	expect_contains(out, "no broker runs");
}

/* Files in /dev/shm that mention takt (any domain): none, ever. */
static int count_dev_shm(void)
{
	glob_t g;
	int n;

	if (glob("/dev/shm/*takt*", 0, NULL, &g) != 0)
		return 0;
	n = (int)g.gl_pathc;
	globfree(&g);
	return n;
}

static int user_child(void *a)
{
	const char *domain = a;
	struct takt_pub_opts po = {.topic = "t", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "t", .queue_depth = 4};
	takt_node *n = h_node(domain, "user");
	takt_pub *p;
	takt_sub *s;
	const void *x;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_pub_send(p, "12345678", 8) == 1);
	H_CHECK(takt_sub_take(s, &x, NULL) == 0); /* held when killed */
	H_CHECK(write(STDOUT_FILENO, "", 0) == 0);
	pause();
	return 0;
}

/* Segments are memfds: a running domain names nothing in /dev/shm, and
 * SIGKILL of every process, the broker included, leaves nothing behind
 * (the kernel frees a segment with its last mapping). */
static void test_broker_names_nothing_in_dev_shm(void **state)
{
	struct h_broker b;
	struct msg_status_reply st;
	pid_t pid;
	int before = count_dev_shm();

	(void)state;
	assert_int_equal(h_broker_start(&b, "noshm", NULL), 0);
	pid = h_spawn(user_child, b.domain);
	for (int i = 0; i < 500; i++) { /* the child's node is attached */
		assert_int_equal(h_status(b.domain, &st), 0);
		if (st.n_subs == 1 && st.n_pubs == 1)
			break;
		usleep(10000);
	}
	assert_int_equal(st.n_pubs, 1);
	assert_int_equal(count_dev_shm(), before);
	kill(b.pid, SIGKILL);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, 10000), 128 + SIGKILL);
	assert_int_equal(h_wait(b.pid, 10000), 128 + SIGKILL);
	assert_int_equal(count_dev_shm(), before);
	b.pid = 0; /* reaped */
	h_broker_stop(&b);
	/* A new broker of the domain starts at once: nothing stale to remove. */
	assert_int_equal(h_broker_start(&b, "noshm", NULL), 0);
	assert_int_equal(h_wait_pools_full(b.domain, 2000), 0);
	h_broker_stop(&b);
}

/* /dev/shm is not used: a broker starts and serves with a tiny one. */
static void test_broker_ignores_small_dev_shm(void **state)
{
	char out[4096];

	(void)state;
	if (geteuid() != 0 || system("unshare -m true >/dev/null 2>&1") != 0) {
		print_message("skipped: needs root (a private /dev/shm in a mount namespace)\n");
		skip();
	}
	assert_int_equal(run(out, sizeof(out),
			     "unshare -m sh -c 'mount -t tmpfs -o size=64k tmpfs /dev/shm && "
			     "(%s --foreground --domain small-shm & b=$!; "
			     "for i in $(seq 100); do %s status --domain small-shm && break; sleep 0.05; done; "
			     "kill $b; wait $b)'", TAKT_BROKER_PATH, TAKT_TOOL_PATH), 0);
	expect_contains(out, "small-shm");
}

/* MGMT_FD (no HELLO) hands out the management segment read-only: the
 * tracer can read the process table, nobody can write through it. */
static void test_broker_mgmt_fd_read_only(void **state)
{
	struct h_broker b;
	struct msg_empty req;
	struct proto_reply rep;
	const struct takt_mgmt_header *h;
	struct stat st;
	unsigned nf = 0;
	int s, fd = -1;

	(void)state;
	assert_int_equal(h_broker_start(&b, "mgmtfd", NULL), 0);
	assert_int_equal(proto_connect(b.domain, &s), 0);
	proto_hdr_init(&req.hdr, MSG_MGMT_FD, sizeof(req), 1);
	assert_int_equal(proto_call(s, &req, sizeof(req), &rep, sizeof(rep), &fd, 1, &nf, 5000, NULL, NULL), 0);
	assert_int_equal(nf, 1);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_int_equal(fstat(fd, &st), 0);
	assert_true(mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
	assert_int_equal(errno, EACCES);
	assert_int_equal(ftruncate(fd, 0), -1);
	h = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	assert_true(h->magic == TAKT_MGMT_MAGIC);
	assert_int_equal(atomic_load(&h->broker_pid), b.pid);
	munmap((void *)h, (size_t)st.st_size);
	close(fd);
	close(s);
	h_broker_stop(&b);
}

/* A client that does not read its socket for a while (stopped) while
 * subscribers come and go on its topic: what the broker has to tell it
 * waits in the broker, in order, and it is not dropped; after SIGCONT it
 * catches up and publishes to the subscriber that is there now. */
static int stopped_pub_child(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = "sleepy", .max_payload = 8};
	takt_node *n = h_node(getenv("TAKT_TEST_DOMAIN"), "sleepy-pub");
	uint64_t v = 42;
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, 60000) == 0); /* after SIGCONT */
	for (int i = 0; i < 500 && takt_pub_send(p, &v, sizeof(v)) != 1; i++)
		usleep(10000); /* until its agent caught up with the connections */
	H_CHECK(h_chan_send(&ch[0], "p", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, 60000) == 0);
	takt_node_close(n);
	return 0;
}

static void test_broker_keeps_a_client_that_does_not_read(void **state)
{
	struct takt_sub_opts so = {.topic = "sleepy", .queue_depth = 4};
	struct msg_status_reply st;
	struct h_broker b;
	struct h_chan ch[2];
	const uint64_t *x;
	takt_node *n;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	/* A stopped publisher keeps every connection it was told of reserved
	 * until it confirms (A0): room for all of them. */
	assert_int_equal(h_broker_start(&b, "sleepy", "[socket]\nconfirm_timeout_ms = 1\n[limits]\nconnections = 4096\nsubscribers = 4096\n"), 0);
	setenv("TAKT_TEST_DOMAIN", b.domain, 1);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(stopped_pub_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, 10000), 0);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	n = h_node(b.domain, "churner");
	for (int i = 0; i < 1500; i++) { /* thousands of pushes to the stopped process */
		assert_int_equal(takt_sub_open(n, &so, &s), 0);
		takt_sub_close(s);
	}
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_status(b.domain, &st), 0);
	assert_int_equal(st.n_pubs, 1); /* still there: not dropped */
	assert_int_equal(kill(pid, SIGCONT), 0);
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, 10000), 0);
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_int_equal(*x, 42);
	takt_sub_release(s, x);
	assert_int_equal(h_chan_send(&ch[1], "e", 1), 0);
	assert_int_equal(h_wait(pid, 10000), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&b);
}

/* A stopped process with an event open while listeners come and go
 * thousands of times: the pushes (PUSH_EV_LISTENER carries two
 * descriptors, the queue and the eventfd) wait in the broker with all
 * their descriptors, so after SIGCONT the process has the listener that is
 * there now and its notifies reach it. (The queue once kept only the
 * first descriptor of a message: the push was refused, and that node never
 * notified the listener.) */
static _Atomic int *notify_done; /* shared: the parent got the id */

static int stopped_notifier_child(void *a)
{
	struct h_chan *ch = a;
	takt_node *n = h_node(getenv("TAKT_TEST_DOMAIN"), "sleepy-notifier");
	takt_event *ev;
	char c;

	H_CHECK(takt_event_open(n, "drip", &ev) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, 60000) == 0); /* after SIGCONT */
	for (int i = 0; i < 500 && !atomic_load(notify_done); i++) {
		takt_event_notify(ev, 42);
		usleep(10000);
	}
	takt_node_close(n);
	return 0;
}

static void test_broker_queued_push_keeps_both_descriptors(void **state)
{
	struct h_broker b;
	struct h_chan ch[2];
	takt_node *n;
	takt_event *ev;
	uint64_t id = 0;
	pid_t pid;
	char c;

	(void)state;
	notify_done = mmap(NULL, sizeof(*notify_done), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(notify_done != MAP_FAILED);
	*notify_done = 0;
	assert_int_equal(h_broker_start(&b, "drip", "[socket]\nconfirm_timeout_ms = 1\n"), 0);
	setenv("TAKT_TEST_DOMAIN", b.domain, 1);
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	pid = h_spawn(stopped_notifier_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, 10000), 0);
	assert_int_equal(kill(pid, SIGSTOP), 0);
	n = h_node(b.domain, "churning-listener");
	for (int i = 0; i < 1500; i++) { /* thousands of pushes to the stopped process */
		assert_int_equal(takt_event_open(n, "drip", &ev), 0);
		assert_true(takt_event_fd(ev) >= 0);
		takt_event_close(ev);
	}
	assert_int_equal(takt_event_open(n, "drip", &ev), 0);
	assert_true(takt_event_fd(ev) >= 0);
	assert_int_equal(kill(pid, SIGCONT), 0);
	assert_int_equal(h_chan_send(&ch[1], "g", 1), 0);
	for (int i = 0; i < 1000 && takt_event_take(ev, &id) != 0; i++)
		usleep(10000);
	assert_int_equal(id, 42);
	atomic_store(notify_done, 1);
	assert_int_equal(h_wait(pid, 10000), 0);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	h_broker_stop(&b);
	munmap(notify_done, sizeof(*notify_done));
}

/* TG0: the topic generation moves with each topic change, and a waiter
 * sleeps until it does (woken by the broker, another process's open). */
static int gen_opener(void *arg)
{
	struct h_chan *go = arg;
	takt_node *n = h_node(getenv("GEN_DOMAIN"), "opener");
	takt_pub *p;
	char c;

	H_CHECK(h_chan_recv(go, &c, 1, 10000) == 0);
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "gen/late", .type_name = "demo.L", .max_payload = 8}, &p) == 0);
	H_CHECK(h_chan_recv(go, &c, 1, 10000) == 0); /* keep it open until told */
	takt_node_close(n);
	return 0;
}

static void test_broker_topics_gen_notifies_changes(void **state)
{
	struct takt_topic_info t[2];
	struct h_broker b;
	struct h_chan go;
	takt_node *n;
	takt_pub *p;
	uint32_t g0, g1;
	pid_t child;

	(void)state;
	assert_int_equal(h_broker_start(&b, "topicsgen", NULL), 0);
	n = h_node(b.domain, "watcher");
	g0 = takt_node_topics_gen(n);
	assert_int_equal(takt_node_topics_wait(n, g0, 1000000), -ETIMEDOUT); /* nothing changed */
	assert_int_equal(takt_node_topics_wait(n, g0 + 1, -1), 0);          /* differs already */
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "gen/a", .max_payload = 8}, &p), 0);
	g1 = takt_node_topics_gen(n);
	assert_true(g1 != g0);
	takt_pub_close(p);
	assert_true(takt_node_topics_gen(n) != g1);
	/* another process opens a topic while we sleep on the generation */
	assert_int_equal(h_chan_open(&go), 0);
	setenv("GEN_DOMAIN", b.domain, 1);
	child = h_spawn(gen_opener, &go);
	g1 = takt_node_topics_gen(n);
	assert_int_equal(h_chan_send(&go, "g", 1), 0);
	assert_int_equal(takt_node_topics_wait(n, g1, 10000000000LL), 0);
	for (int i = 0; i < 1000 && takt_node_topics(n, "gen/*", t, 2) == 0; i++)
		assert_int_equal(takt_node_topics_wait(n, takt_node_topics_gen(n), 10000000000LL), 0);
	assert_int_equal(takt_node_topics(n, "gen/*", t, 2), 1);
	assert_string_equal(t[0].name, "gen/late");
	assert_string_equal(t[0].type_name, "demo.L");
	assert_int_equal(h_chan_send(&go, "g", 1), 0);
	assert_int_equal(h_wait(child, 10000), 0);
	assert_int_equal(takt_node_topics(n, "gen/*", t, 2), 0); /* gone with its process */
	assert_int_equal(takt_node_topics_wait(NULL, 0, 0), -EINVAL);
	assert_int_equal(takt_node_topics_gen(NULL), 0);
	h_chan_close(&go);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* The origin tag: set by the publisher at any time, seen by subscribers
 * (connected before or after) from their next take; 0 by default; the
 * sample info keeps its size. */
static void test_broker_origin_tag_seen_by_subscribers(void **state)
{
	struct takt_sample_info info;
	struct h_broker b;
	takt_node *n, *m;
	takt_pub *p, *q;
	takt_sub *s;
	const void *x;
	uint64_t v = 1;

	(void)state;
	assert_int_equal(sizeof(struct takt_sample_info), 32);
	assert_int_equal(h_broker_start(&b, "origin", NULL), 0);
	n = h_node(b.domain, "pubs");
	m = h_node(b.domain, "sub");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "o", .max_payload = 8}, &p), 0);
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "o", .max_payload = 8}, &q), 0);
	assert_int_equal(takt_sub_open(m, &(struct takt_sub_opts){.topic = "o", .queue_depth = 8}, &s), 0);
	assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
	assert_int_equal(takt_sub_take(s, &x, &info), 0);
	assert_int_equal(info.origin, 0);
	takt_sub_release(s, x);
	assert_int_equal(takt_pub_set_origin(p, 0xa5a5u), 0);
	assert_int_equal(takt_pub_set_origin(NULL, 1), -EINVAL);
	assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
	assert_int_equal(takt_pub_send(q, &v, sizeof(v)), 1);
	for (int k = 0; k < 2; k++) {
		memset(&info, 0xff, sizeof(info));
		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		assert_int_equal(info.origin, info.publisher_id == takt_pub_id(p) ? 0xa5a5u : 0);
		takt_sub_release(s, x);
	}
	takt_node_close(m);
	takt_node_close(n);
	h_broker_stop(&b);
}

/* Memory follows what is open: a publisher's pool reserves its loans and
 * history, and exactly depth + held_max more chunks per subscriber that
 * connects, and the connection's rings cost its actual depth (a depth of
 * 1024 reserves 1024 sample slots, not queue_depth_max = 8192); the
 * broker's byte counts say so. */
/* takt_node_topics lists what is open, by glob, from the registry. */
static void test_broker_topics_listed_by_pattern(void **state)
{
	struct takt_topic_info t[4];
	struct h_broker b;
	takt_node *n, *m;
	takt_pub *p1, *p2;
	takt_sub *s1, *s2;

	(void)state;
	assert_int_equal(h_broker_start(&b, "topics", NULL), 0);
	n = h_node(b.domain, "lister");
	m = h_node(b.domain, "other");
	assert_int_equal(takt_node_topics(n, NULL, t, 4), 0);
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "a/x", .type_name = "demo.X", .max_payload = 8}, &p1), 0);
	assert_int_equal(takt_pub_open(m, &(struct takt_pub_opts){.topic = "a/y/z", .max_payload = 8}, &p2), 0);
	assert_int_equal(takt_sub_open(m, &(struct takt_sub_opts){.topic = "a/x", .type_name = "demo.X"}, &s1), 0);
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "b"}, &s2), 0);
	assert_int_equal(takt_node_topics(n, NULL, t, 4), 3);
	assert_int_equal(takt_node_topics(n, "a/*", t, 4), 1);
	assert_string_equal(t[0].name, "a/x");
	assert_string_equal(t[0].type_name, "demo.X");
	assert_int_equal(t[0].publishers, 1);
	assert_int_equal(t[0].subscribers, 1);
	assert_int_equal(takt_node_topics(m, "a/**", t, 4), 2);
	assert_int_equal(takt_node_topics(n, "b", t, 4), 1);
	assert_int_equal(t[0].publishers, 0);
	assert_int_equal(t[0].subscribers, 1);
	assert_string_equal(t[0].type_name, "");
	assert_int_equal(takt_node_topics(n, "**", t, 1), 3); /* all counted, one written */
	assert_int_equal(takt_node_topics(n, "**", NULL, 0), 3);
	assert_int_equal(takt_node_topics(n, "c/**", t, 4), 0);
	assert_int_equal(takt_node_topics(NULL, NULL, t, 4), -EINVAL);
	assert_int_equal(takt_node_topics(n, NULL, NULL, 4), -EINVAL);
	takt_sub_close(s2);
	assert_int_equal(takt_node_topics(n, "b", t, 4), 0); /* closed with its last port */
	takt_pub_close(p1);
	takt_pub_close(p2);
	takt_sub_close(s1);
	takt_node_close(m);
	takt_node_close(n);
	h_broker_stop(&b);
}

static void test_broker_pool_follows_subscribers(void **state)
{
	struct takt_pub_opts po = {.topic = "sized", .max_payload = 64, .history = 2};
	struct takt_sub_opts so = {.topic = "sized", .queue_depth = 1024};
	struct msg_status_reply st0, st1;
	struct proto_pool_stat ps;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	struct takt_pool_layout pl;
	struct takt_subseg_layout sl;
	uint64_t rings, chunks;

	assert_int_equal(h_broker_start(&b, "sized", "[limits]\nqueue_depth_max = 8192\nheld_max = 16\nloans_max = 8\n"), 0);
	assert_int_equal(h_status(b.domain, &st0), 0);
	assert_int_equal(st0.shm_bytes, st0.shm_bytes_idle);
	layout_pool(&st0.limits, &pl);
	layout_subseg(&st0.limits, &sl);
	n = h_node(b.domain, "sizer");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(h_pool_of(b.domain, takt_pub_id(p), &ps), 0);
	assert_int_equal(ps.total, 8 + 2);          /* loans + history */
	assert_int_equal(ps.payload_size, 64);
	assert_true(ps.max > 32 * 1024);            /* room to grow: address space only */
	assert_true(ps.bytes <= pl.ring_off + 4096); /* but not reserved, nor any ring */
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(h_pool_of(b.domain, takt_pub_id(p), &ps), 0);
	assert_int_equal(ps.total, 8 + 2 + 1024 + 16); /* + depth + held_max */
	/* The header, live and connection words; one ring of 1024 slots of
	 * 32 bytes; 64-byte chunks (payload only: a sample's description
	 * travels in its ring slot), in whole pages. */
	rings = 1024 * sizeof(struct takt_ring_slot);
	chunks = ((uint64_t)ps.total * 64 + 4095) / 4096 * 4096;
	assert_true(pl.ring_region >= 8 * rings);   /* the address space is the maximum's */
	assert_int_equal(ps.bytes, pl.ring_off + rings + chunks);
	assert_int_equal(h_status(b.domain, &st1), 0);
	/* The subscriber's own segment: its words, and one return ring of
	 * pow2(1024 + 16) entries. */
	assert_int_equal(st1.shm_bytes, st1.shm_bytes_idle + ps.bytes + sl.ret_off + 2048 * sizeof(uint32_t));
	takt_node_close(n);
	for (int i = 0; i < 500 && (h_status(b.domain, &st1) != 0 || st1.shm_bytes != st1.shm_bytes_idle); i++)
		usleep(10000);
	assert_int_equal(st1.shm_bytes, st1.shm_bytes_idle);
	h_broker_stop(&b);
}

/* A process that floods opens uses up its own quota ([limits]
 * ports_per_process), not the domain's tables: the others still open. */
static void test_broker_flood_of_opens_costs_only_its_process(void **state)
{
	struct h_broker b;
	takt_node *flood, *other;
	takt_pub *p[8], *q;
	takt_sub *s;
	char topic[32];

	(void)state;
	assert_int_equal(h_broker_start(&b, "flood", "[limits]\npublishers = 16\nports_per_process = 8\n"), 0);
	flood = h_node(b.domain, "flood");
	other = h_node(b.domain, "other");
	for (int i = 0; i < 8; i++) {
		snprintf(topic, sizeof(topic), "flood/%d", i);
		assert_int_equal(takt_pub_open(flood, &(struct takt_pub_opts){.topic = topic, .max_payload = 8}, &p[i]), 0);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(topic, sizeof(topic), "flood/more/%d", i);
		assert_int_equal(takt_pub_open(flood, &(struct takt_pub_opts){.topic = topic, .max_payload = 8}, &q),
				 -EDQUOT);
		assert_int_equal(takt_sub_open(flood, &(struct takt_sub_opts){.topic = topic}, &s), -EDQUOT);
	}
	/* the other process opens what it needs, and meets the flooder's ports */
	assert_int_equal(takt_sub_open(other, &(struct takt_sub_opts){.topic = "flood/0"}, &s), 0);
	assert_int_equal(takt_pub_open(other, &(struct takt_pub_opts){.topic = "other", .max_payload = 8}, &q), 0);
	assert_int_equal(takt_pub_send(p[0], "12345678", 8), 1);
	/* closing one gives the flooder room again */
	takt_pub_close(p[7]);
	assert_int_equal(takt_pub_open(flood, &(struct takt_pub_opts){.topic = "flood/7", .max_payload = 8}, &p[7]), 0);
	takt_node_close(flood);
	takt_node_close(other);
	h_broker_stop(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_broker_help_and_version),
		cmocka_unit_test(test_broker_refuses_bad_config),
		cmocka_unit_test(test_broker_one_per_domain),
		cmocka_unit_test(test_broker_tools_without_broker),
		cmocka_unit_test(test_broker_names_nothing_in_dev_shm),
		cmocka_unit_test(test_broker_ignores_small_dev_shm),
		cmocka_unit_test(test_broker_mgmt_fd_read_only),
		cmocka_unit_test(test_broker_keeps_a_client_that_does_not_read),
		cmocka_unit_test(test_broker_queued_push_keeps_both_descriptors),
		cmocka_unit_test(test_broker_flood_of_opens_costs_only_its_process),
		cmocka_unit_test(test_broker_pool_follows_subscribers),
		cmocka_unit_test(test_broker_topics_listed_by_pattern),
		cmocka_unit_test(test_broker_topics_gen_notifies_changes),
		cmocka_unit_test(test_broker_origin_tag_seen_by_subscribers),
	};

	return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
