/* test_access.c - [access] rules and shared domains, with real processes
 * of other users (uids and gids by number: setgroups/setgid/setuid in
 * forked children before they open their node, as root).
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define U_A 4242 /* publishes by name of uid */
#define U_B 4243 /* member of G_PUB */
#define U_C 4244 /* no rule names it */
#define U_D 4245 /* member of G_OPS */
#define G_PUB 4300
#define G_OPS 4301
#define G_NONE 4302

static bool need_root(void)
{
	if (geteuid() == 0)
		return true;
	printf("skipped: needs root\n");
	return false;
}

/* What one child of another user tries, and the result it must get. */
struct attempt {
	const char *domain;
	uid_t uid;
	gid_t gid, groups[2];
	int n_groups;
	char what; /* 'p' publish, 's' subscribe, 'S' serve, 'C' call, 'n' only the node */
	const char *topic;
	int want;
};

static int attempt_child(void *arg)
{
	const struct attempt *a = arg;
	takt_node *n = NULL;
	int r;

	H_CHECK(h_become(a->uid, a->gid, a->groups, a->n_groups) == 0);
	r = takt_node_open(&(struct takt_node_opts){.domain = a->domain, .name = "other-user"}, &n);
	if (a->what == 'n' || r < 0) {
		if (r != a->want)
			fprintf(stderr, "uid %u: node open: %d, want %d\n", (unsigned)a->uid, r, a->want);
		H_CHECK(r == a->want);
		takt_node_close(n);
		return 0;
	}
	if (a->what == 'S') {
		takt_server *s = NULL;

		r = takt_server_open(n, &(struct takt_service_opts){.service = a->topic, .max_response = 8}, &s);
		takt_server_close(s);
	} else if (a->what == 'C') {
		takt_client *cl = NULL;

		r = takt_client_open(n, &(struct takt_service_opts){.service = a->topic, .max_request = 8}, &cl);
		takt_client_close(cl);
	} else if (a->what == 'p') {
		takt_pub *p = NULL;

		r = takt_pub_open(n, &(struct takt_pub_opts){.topic = a->topic, .max_payload = 64}, &p);
		takt_pub_close(p);
	} else {
		takt_sub *s = NULL;

		r = takt_sub_open(n, &(struct takt_sub_opts){.topic = a->topic, .queue_depth = 4}, &s);
		takt_sub_close(s);
	}
	if (r != a->want)
		fprintf(stderr, "uid %u: %s on '%s': %d, want %d\n", (unsigned)a->uid,
			a->what == 'p' ? "publish" : "subscribe", a->topic, r, a->want);
	H_CHECK(r == a->want);
	takt_node_close(n);
	return 0;
}

static void expect(const char *domain, uid_t uid, gid_t group, char what, const char *topic, int want)
{
	struct attempt a = {.domain = domain, .uid = uid, .gid = G_NONE, .what = what, .topic = topic,
			    .want = want};

	if (group) {
		a.groups[0] = group;
		a.n_groups = 1;
	}
	assert_int_equal(h_wait(h_spawn(attempt_child, &a), 10000), 0);
}

/* A broker whose runtime directory and socket other users can reach. */
static void start_open_broker(struct h_broker *b, const char *tag, const char *ini, const char *log)
{
	char full[1024];

	snprintf(full, sizeof(full), "[socket]\nmode = 0666\n%s", ini);
	assert_int_equal(h_broker_start_opts(b, tag, full, &(struct h_broker_opts){.log = log}), 0);
	assert_int_equal(chmod(b->rundir, 0755), 0);
}

static const char rules[] = "[access]\n"
			    "publish = sensors/* 4242,@4300   ; by uid and by group\n"
			    "subscribe = sensors/secret/** @4301\n"
			    "publish = cam/* 4242\n"
			    "publish = cam/front 4243          ; longer: decides cam/front\n"
			    "subscribe = tie/*x 4242\n"
			    "subscribe = tie/x* 4243           ; as long, written last: decides tie/xx\n";

static void test_access_publish_by_user_and_group(void **state)
{
	struct h_broker b;

	(void)state;
	if (!need_root())
		skip();
	start_open_broker(&b, "acc-pub", rules, NULL);
	expect(b.domain, U_A, 0, 'p', "sensors/imu", 0);          /* named by uid */
	expect(b.domain, U_B, G_PUB, 'p', "sensors/imu", 0);      /* by a supplementary group */
	expect(b.domain, U_C, 0, 'p', "sensors/imu", -EACCES);    /* named by neither */
	expect(b.domain, U_C, G_OPS, 'p', "sensors/imu", -EACCES);
	expect(b.domain, U_C, 0, 'p', "sensors/left/imu", 0);     /* '*' stays in one segment: no rule */
	expect(b.domain, U_C, 0, 's', "sensors/imu", 0);          /* no subscribe rule matches: open */
	expect(b.domain, U_C, 0, 'p', "other", 0);
	/* the longest pattern decides; on a tie the one written last */
	expect(b.domain, U_B, 0, 'p', "cam/front", 0);
	expect(b.domain, U_A, 0, 'p', "cam/front", -EACCES);
	expect(b.domain, U_A, 0, 'p', "cam/back", 0);
	expect(b.domain, U_B, 0, 'p', "cam/back", -EACCES);
	expect(b.domain, U_B, 0, 's', "tie/xx", 0);
	expect(b.domain, U_A, 0, 's', "tie/xx", -EACCES);
	expect(b.domain, U_A, 0, 's', "tie/yx", 0); /* only the pattern ending in x matches */
	h_broker_stop(&b);
}

/* Services: serve and call rules, by service name. */
static void test_access_serve_and_call(void **state)
{
	struct h_broker b;

	(void)state;
	if (!need_root())
		skip();
	start_open_broker(&b, "acc-svc", "[access]\nserve = calc/* 4242\ncall = calc/* @4300\n", NULL);
	expect(b.domain, U_A, 0, 'S', "calc/add", 0);
	expect(b.domain, U_C, 0, 'S', "calc/add", -EACCES);
	expect(b.domain, U_B, G_PUB, 'C', "calc/add", 0);
	expect(b.domain, U_C, 0, 'C', "calc/add", -EACCES);
	expect(b.domain, U_C, 0, 'S', "other", 0); /* no rule: open */
	h_broker_stop(&b);
}

/* The subscriber of another user whom a group admits gets the samples of a
 * publisher it may read, through a mapping it cannot write. */
struct reader {
	const char *domain;
	struct h_chan ready, go;
};

static int mapping_writable(const void *p)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "re");
	int w = -1;

	if (!f)
		return -1;
	while (w < 0 && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi)
			w = perms[1] == 'w';
	}
	fclose(f);
	return w;
}

static int reader_child(void *arg)
{
	struct reader *r = arg;
	const gid_t ops = G_OPS;
	takt_node *n;
	takt_sub *s;
	const void *x;
	struct takt_sample_info info;
	pid_t writer;
	int status;

	H_CHECK(h_become(U_D, G_NONE, &ops, 1) == 0);
	n = h_node(r->domain, "ops-reader");
	H_CHECK(takt_sub_open(n, &(struct takt_sub_opts){.topic = "sensors/secret/key", .queue_depth = 4}, &s) == 0);
	H_CHECK(h_chan_send(&r->ready, "r", 1) == 0);
	H_CHECK(takt_sub_wait(s, 5000000000LL) == 0);
	H_CHECK(takt_sub_take(s, &x, &info) == 0);
	H_CHECK(info.size == 16 && memcmp(x, "secret-payload!", 16) == 0);
	H_CHECK(mapping_writable(x) == 0); /* read-only, not merely unwritten */
	writer = fork();
	if (writer == 0) {
		signal(SIGSEGV, SIG_DFL); /* not cmocka's handler */
		*(volatile char *)x = 'X'; /* must fault */
		_exit(0);
	}
	H_CHECK(waitpid(writer, &status, 0) == writer);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGSEGV)
		fprintf(stderr, "writer: status %#x\n", status);
	H_CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
	H_CHECK(memcmp(x, "secret-payload!", 16) == 0);
	takt_sub_release(s, x);
	takt_sub_close(s);
	takt_node_close(n);
	return 0;
}

static void test_access_subscribe_rule_and_read_only_payload(void **state)
{
	struct reader r;
	struct h_broker b;
	takt_node *n;
	takt_pub *p;
	pid_t pid;
	char c;

	(void)state;
	if (!need_root())
		skip();
	start_open_broker(&b, "acc-sub", rules, NULL);
	expect(b.domain, U_C, 0, 's', "sensors/secret/key", -EACCES);
	expect(b.domain, U_C, 0, 's', "sensors/secret/deep/key", -EACCES); /* '**' spans segments */
	expect(b.domain, U_A, G_PUB, 's', "sensors/secret/key", -EACCES);
	r.domain = b.domain;
	assert_int_equal(h_chan_open(&r.ready), 0);
	assert_int_equal(h_chan_open(&r.go), 0);
	n = h_node(b.domain, "root-publisher"); /* root: always allowed */
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "sensors/secret/key", .max_payload = 64}, &p), 0);
	pid = h_spawn(reader_child, &r);
	assert_int_equal(h_chan_recv(&r.ready, &c, 1, 10000), 0);
	assert_int_equal(takt_pub_send(p, "secret-payload!", 16), 1);
	assert_int_equal(h_wait(pid, 10000), 0);
	takt_pub_close(p);
	takt_node_close(n);
	h_chan_close(&r.ready);
	h_chan_close(&r.go);
	h_broker_stop(&b);
}

static void slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, len - 1);

	buf[n > 0 ? n : 0] = 0;
	if (fd >= 0)
		close(fd);
}

/* One log line per refusal naming the process, the user, the topic and the
 * rule; a client that keeps trying is logged a bounded number of times. */
static int persistent_child(void *arg)
{
	const char *domain = arg;
	takt_node *n;

	H_CHECK(h_become(U_C, G_NONE, NULL, 0) == 0);
	n = h_node(domain, "persistent");
	for (int i = 0; i < 1000; i++) {
		takt_pub *p = NULL;

		H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cam/front", .max_payload = 8}, &p) == -EACCES);
	}
	/* what it may do still works */
	{
		takt_pub *p;

		H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "free/topic", .max_payload = 8}, &p) == 0);
		takt_pub_close(p);
	}
	takt_node_close(n);
	return 0;
}

static void test_access_refusal_logged_with_rule(void **state)
{
	struct h_broker b;
	char log[] = "/tmp/takt-access-log-XXXXXX", text[16384], want[512];
	int fd = mkstemp(log), lines = 0;
	pid_t pid;

	(void)state;
	if (!need_root())
		skip();
	assert_true(fd >= 0);
	close(fd);
	start_open_broker(&b, "acc-log", rules, log);
	pid = h_spawn(persistent_child, b.domain);
	assert_int_equal(h_wait(pid, 30000), 0);
	h_broker_stop(&b);
	slurp(log, text, sizeof(text));
	snprintf(want, sizeof(want),
		 "takt-broker: access: process %d (persistent, user ?, uid 4244) may not publish on 'cam/front': "
		 "rule %s:9: publish = cam/front 4243\n", (int)pid, b.config);
	if (!strstr(text, want))
		fail_msg("log has no line\n%s\nin\n%s", want, text);
	for (const char *c = text; (c = strstr(c, "may not publish")); c++)
		lines++;
	assert_int_equal(lines, 10); /* the first ten, then: */
	assert_non_null(strstr(text, "further refusals of process"));
	unlink(log);
}

/* A domain shared by a group: the socket's group admits its members,
 * whatever their uid; others cannot connect. */
/* Events: notify and listen rules. A process that may not notify gets no
 * listener's queue from the broker at all (so ignoring the refusal would
 * not help it); one that may not listen gets no queue of its own. */
static const char ev_rules[] = "[access]\n"
			       "notify = alarms/* 4242\n"
			       "listen = alarms/* @4301\n";

struct ev_try {
	const char *domain;
	uid_t uid;
	gid_t group;
	int want_notify, want_listen;
	unsigned want_queues; /* listeners' queues its node was given */
	struct h_chan ready;
};

/* Listener queues (memfds "takt.<domain>.ev<e>.l<j>") this process maps. */
static unsigned event_queues_held(void)
{
	char line[512];
	unsigned n = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, "/memfd:takt.") != NULL && strstr(line, ".ev") != NULL;
	if (f)
		fclose(f);
	return n;
}

static int ev_try_child(void *arg)
{
	const struct ev_try *t = arg;
	takt_node *n = NULL;
	takt_event *ev;
	int r;

	H_CHECK(h_become(t->uid, G_NONE, &t->group, t->group ? 1 : 0) == 0);
	H_CHECK(takt_node_open(&(struct takt_node_opts){.domain = t->domain, .name = "ev-user"}, &n) == 0);
	H_CHECK(takt_event_open(n, "alarms/fire", &ev) == 0); /* open to all: what it may do is checked */
	if (event_queues_held() != t->want_queues)
		fprintf(stderr, "uid %u: %u queues, want %u\n", (unsigned)t->uid, event_queues_held(), t->want_queues);
	H_CHECK(event_queues_held() == t->want_queues);
	r = takt_event_notify(ev, 9);
	if (r != t->want_notify)
		fprintf(stderr, "uid %u: notify %d, want %d\n", (unsigned)t->uid, r, t->want_notify);
	H_CHECK(r == t->want_notify);
	r = takt_event_fd(ev);
	H_CHECK(t->want_listen < 0 ? r == t->want_listen : r >= 0);
	H_CHECK(takt_event_fd(ev) == r); /* asked once */
	takt_event_close(ev);
	takt_node_close(n);
	return 0;
}

/* The listener: hears the allowed notifier's 9, and nothing else. */
static int ev_listener_child(void *arg)
{
	struct ev_try *t = arg;
	takt_node *n = NULL;
	takt_event *ev;
	uint64_t id;
	int fd;

	H_CHECK(h_become(t->uid, G_NONE, &t->group, 1) == 0);
	H_CHECK(takt_node_open(&(struct takt_node_opts){.domain = t->domain, .name = "ev-listener"}, &n) == 0);
	H_CHECK(takt_event_open(n, "alarms/fire", &ev) == 0);
	H_CHECK(takt_event_notify(ev, 1) == -EACCES); /* uid 4245 is not 4242 */
	fd = takt_event_fd(ev);
	H_CHECK(fd >= 0);
	H_CHECK(h_chan_send(&t->ready, "r", 1) == 0);
	H_CHECK(poll(&(struct pollfd){.fd = fd, .events = POLLIN}, 1, 10000) == 1);
	H_CHECK(takt_event_take(ev, &id) == 0 && id == 9);
	H_CHECK(h_chan_recv(&t->ready, &id, 1, 10000) == 0); /* every other try is over */
	H_CHECK(takt_event_take(ev, &id) == -EAGAIN);
	takt_event_close(ev);
	takt_node_close(n);
	return 0;
}

static void ev_expect(struct ev_try t)
{
	assert_int_equal(h_wait(h_spawn(ev_try_child, &t), 10000), 0);
}

static void test_access_event_notify_and_listen(void **state)
{
	struct ev_try lis = {.uid = U_D, .group = G_OPS};
	struct h_broker b;
	pid_t pid;
	char c;

	(void)state;
	if (!need_root())
		skip();
	start_open_broker(&b, "acc-ev", ev_rules, NULL);
	lis.domain = b.domain;
	assert_int_equal(h_chan_open(&lis.ready), 0);
	pid = h_spawn(ev_listener_child, &lis);
	assert_int_equal(h_chan_recv(&lis.ready, &c, 1, 10000), 0);
	/* may neither notify nor listen: no queue, no notify, no listen */
	ev_expect((struct ev_try){.domain = b.domain, .uid = U_C, .want_notify = -EACCES, .want_listen = -EACCES});
	/* may notify: gets the listener's queue and notifies 9 into it */
	ev_expect((struct ev_try){.domain = b.domain, .uid = U_A, .want_notify = 0, .want_listen = -EACCES,
				  .want_queues = 1});
	/* may listen only (by its group) */
	ev_expect((struct ev_try){.domain = b.domain, .uid = U_B, .group = G_OPS, .want_notify = -EACCES,
				  .want_listen = 0});
	assert_int_equal(h_chan_send(&lis.ready, "g", 1), 0);
	assert_int_equal(h_wait(pid, 10000), 0);
	h_chan_close(&lis.ready);
	h_broker_stop(&b);
}

static void test_access_shared_domain_by_socket_group(void **state)
{
	struct h_broker b;

	(void)state;
	if (!need_root())
		skip();
	assert_int_equal(h_broker_start(&b, "acc-group", "[socket]\nmode = 0660\ngroup = 4300\n"), 0);
	assert_int_equal(chmod(b.rundir, 0755), 0);
	expect(b.domain, U_A, G_PUB, 'p', "shared/t", 0);
	expect(b.domain, U_B, G_PUB, 's', "shared/t", 0);
	expect(b.domain, U_C, 0, 'n', NULL, -EACCES);
	expect(b.domain, U_C, G_OPS, 'n', NULL, -EACCES);
	h_broker_stop(&b);
}

/* A broker run by root without TAKT_RUNTIME_DIR serves a system domain
 * under /run/takt, which a user's client finds without configuration. */
static void test_access_system_domain_under_run_takt(void **state)
{
	struct h_broker b;
	char sock[160];
	struct stat st;

	(void)state;
	if (!need_root())
		skip();
	assert_int_equal(h_broker_start_opts(&b, "acc-system", "[socket]\nmode = 0666\n",
					     &(struct h_broker_opts){.system_dir = true}), 0);
	snprintf(sock, sizeof(sock), "/run/takt/takt-%s.sock", b.domain);
	assert_int_equal(stat(sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(stat("/run/takt", &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	unsetenv("XDG_RUNTIME_DIR");
	expect(b.domain, U_A, 0, 'p', "system/t", 0); /* looked in /tmp/takt-4242, then /run/takt */
	h_broker_stop(&b);
	assert_int_not_equal(stat(sock, &st), 0); /* a clean stop removes it */
}

/* Bad rules stop the broker at start, naming file, line and reason. */
static void bad_rules(const char *ini, int line, const char *reason)
{
	char path[] = "/tmp/takt-bad-access-XXXXXX", cmd[256], out[4096], want[512];
	int fd = mkstemp(path);
	FILE *p;
	size_t n;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, ini, strlen(ini)), (long)strlen(ini));
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s --foreground --config %s 2>&1", TAKT_BROKER_PATH, path);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	assert_int_equal(WEXITSTATUS(pclose(p)), 2);
	snprintf(want, sizeof(want), "%s:%d: %s", path, line, reason);
	if (!strstr(out, want))
		fail_msg("want '%s' in '%s'", want, out);
	unlink(path);
}

static void test_access_bad_rules_refused_at_start(void **state)
{
	char longline[400];

	(void)state;
	bad_rules("[access]\npublish = a/* no-such-user-here\n", 2, "unknown user 'no-such-user-here'");
	bad_rules("[access]\npublish = a/* root\nsubscribe = b @no-such-group-here\n", 3,
		  "unknown group 'no-such-group-here'");
	bad_rules("[access]\npublish = a/*** root\n", 2, "pattern 'a/***'");
	bad_rules("[access]\npublish = a/$ root\n", 2, "pattern 'a/$': '$' is not allowed");
	bad_rules("[access]\npublish = a/b\n", 2, "no user or group");
	bad_rules("[access]\nteleport = a/b root\n", 2, "[access] teleport: unknown action");
	bad_rules("[access]\npublish = a/b root,\n    nobody\n", 3, "indented line");
	snprintf(longline, sizeof(longline), "[access]\npublish = a/b root\npublish = %0300d root\n", 7);
	bad_rules(longline, 3, "line longer than 198 characters");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_access_publish_by_user_and_group),
		cmocka_unit_test(test_access_subscribe_rule_and_read_only_payload),
		cmocka_unit_test(test_access_refusal_logged_with_rule),
		cmocka_unit_test(test_access_event_notify_and_listen),
		cmocka_unit_test(test_access_serve_and_call),
		cmocka_unit_test(test_access_shared_domain_by_socket_group),
		cmocka_unit_test(test_access_system_domain_under_run_takt),
		cmocka_unit_test(test_access_bad_rules_refused_at_start),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
