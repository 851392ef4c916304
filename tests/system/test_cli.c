/* test_cli.c - the `takt` command against a real broker and real
 * processes: every command, its JSON, its exit status and its errors.
 */
#include "harness.h"

#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <resolv.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

static struct h_broker broker;

struct shared {
	_Atomic int go, stop, sent;
};
static struct shared *sh;

/* Runs `takt ARGS` (a shell line) for the test's domain; its standard
 * output in out, its exit status returned. */
static int takt(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int takt(char *out, size_t size, const char *fmt, ...)
{
	char args[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return h_takt(broker.domain, out, size, args);
}

static struct json_object *json(const char *text)
{
	struct json_object *o = json_tokener_parse(text);

	if (!o)
		fail_msg("not JSON: %s", text);
	return o;
}

static int64_t jint(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v))
		fail_msg("no '%s' in %s", key, json_object_to_json_string(o));
	return json_object_get_int64(v);
}

static const char *jstr(struct json_object *o, const char *key)
{
	return json_object_get_string(json_object_object_get(o, key));
}

/* The element of array a whose "name" is name, or NULL. */
static struct json_object *by_name(struct json_object *a, const char *name)
{
	for (size_t i = 0; i < json_object_array_length(a); i++)
		if (!strcmp(jstr(json_object_array_get_idx(a, i), "name"), name))
			return json_object_array_get_idx(a, i);
	return NULL;
}

static int setup(void **state)
{
	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return sh == MAP_FAILED ? -1 : h_broker_start(&broker, "cli", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(sh, sizeof(*sh));
	return 0;
}

/* ---- no broker, bad usage ------------------------------------------------- */

static void test_cli_errors(void **state)
{
	char out[4096], cmd[512];
	int st;

	(void)state;
	/* no broker for a domain: exit 1, and the message names the domain */
	snprintf(cmd, sizeof(cmd), "%s --domain nobody-here status 2>&1", TAKT_TOOL_PATH);
	{
		FILE *f = popen(cmd, "r");
		size_t n = fread(out, 1, sizeof(out) - 1, f);

		out[n] = 0;
		st = pclose(f);
	}
	assert_int_equal(WEXITSTATUS(st), 1);
	assert_non_null(strstr(out, "no broker runs for domain 'nobody-here'"));
	assert_int_equal(takt(out, sizeof(out), "--domain nobody-here topic list 2>/dev/null"), 1);
	assert_int_equal(takt(out, sizeof(out), "--domain nobody-here top --once 2>/dev/null"), 1);
	/* usage: exit 2 */
	assert_int_equal(takt(out, sizeof(out), "bogus 2>/dev/null"), 2);
	assert_int_equal(takt(out, sizeof(out), "topic info 2>/dev/null"), 2);
	assert_int_equal(takt(out, sizeof(out), "topic echo t --count zero 2>/dev/null"), 2);
	assert_int_equal(takt(out, sizeof(out), "topic pub t 0g --hex 2>/dev/null"), 2);
	assert_int_equal(takt(out, sizeof(out), "topic 2>/dev/null"), 2); /* lists the topic commands */
	/* --help anywhere, for a command too */
	assert_int_equal(takt(out, sizeof(out), "--help"), 0);
	assert_non_null(strstr(out, "topic echo"));
	assert_int_equal(takt(out, sizeof(out), "topic hz --help"), 0);
	assert_non_null(strstr(out, "Usage: takt topic hz"));
	/* a topic nobody opened */
	assert_int_equal(takt(out, sizeof(out), "topic info no/such 2>/dev/null"), 1);
}

/* ---- list, info, node list: the registry ------------------------------------ */

/* Publishes 10 samples on cli/info, to a subscriber of depth 4 that never
 * takes: 4 queued, 6 dropped; stays until told. */
static int info_pub(void *a)
{
	takt_node *n = h_node(broker.domain, "info-pub");
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cli/info", .type_name = "demo.Info",
							.max_payload = 32, .history = 2}, &p) == 0);
	while (!atomic_load(&sh->go))
		usleep(1000);
	for (uint64_t i = 0; i < 10; i++)
		H_CHECK(takt_pub_send(p, &i, sizeof(i)) == 1);
	atomic_store(&sh->sent, 1);
	while (!atomic_load(&sh->stop))
		usleep(1000);
	takt_node_close(n);
	return 0;
}

static void test_cli_list_info_nodes(void **state)
{
	char out[16384];
	struct json_object *o, *t, *subs, *pubs, *s;
	takt_node *n;
	takt_sub *sub;
	pid_t pid;

	(void)state;
	atomic_store(&sh->go, 0);
	atomic_store(&sh->stop, 0);
	atomic_store(&sh->sent, 0);
	n = h_node(broker.domain, "info-sub");
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "cli/info", .type_name = "demo.Info",
								  .queue_depth = 4}, &sub), 0);
	pid = h_spawn(info_pub, NULL);
	for (int i = 0; i < 500; i++) { /* until its publisher is open */
		assert_int_equal(takt(out, sizeof(out), "topic list --json"), 0);
		o = json(out);
		t = by_name(o, "cli/info");
		if (t && jint(t, "publishers") == 1)
			break;
		json_object_put(o);
		o = NULL;
		usleep(10000);
	}
	assert_non_null(o);
	assert_string_equal(jstr(t, "type"), "demo.Info");
	assert_int_equal(jint(t, "subscribers"), 1);
	json_object_put(o);
	atomic_store(&sh->go, 1);
	while (!atomic_load(&sh->sent))
		usleep(1000);
	assert_int_equal(takt(out, sizeof(out), "topic info cli/info --json"), 0);
	o = json(out);
	assert_string_equal(jstr(o, "name"), "cli/info");
	pubs = json_object_object_get(o, "publishers");
	subs = json_object_object_get(o, "subscribers");
	assert_int_equal(json_object_array_length(pubs), 1);
	assert_int_equal(json_object_array_length(subs), 1);
	assert_int_equal(jint(json_object_array_get_idx(pubs, 0), "pid"), pid);
	assert_string_equal(jstr(json_object_array_get_idx(pubs, 0), "process"), "info-pub");
	assert_int_equal(jint(json_object_array_get_idx(pubs, 0), "max_payload"), 32);
	assert_int_equal(jint(json_object_array_get_idx(pubs, 0), "history"), 2);
	s = json_object_array_get_idx(subs, 0);
	assert_int_equal(jint(s, "pid"), getpid());
	assert_int_equal(jint(s, "queue_depth"), 4);
	assert_string_equal(jstr(s, "overflow"), "drop-oldest");
	assert_int_equal(jint(s, "queued"), 4);
	assert_int_equal(jint(s, "dropped"), 6);
	assert_true(jint(o, "shm_bytes") > 0);
	json_object_put(o);
	/* the text form says the same */
	assert_int_equal(takt(out, sizeof(out), "topic info cli/info"), 0);
	assert_non_null(strstr(out, "topic 'cli/info', type demo.Info: 1 publisher, 1 subscriber"));
	assert_non_null(strstr(out, "info-pub"));
	/* node list: both processes, with their ports */
	assert_int_equal(takt(out, sizeof(out), "node list --json"), 0);
	o = json(out);
	t = by_name(o, "info-pub");
	assert_non_null(t);
	assert_int_equal(jint(t, "pid"), pid);
	assert_int_equal(jint(t, "publishers"), 1);
	t = by_name(o, "info-sub");
	assert_non_null(t);
	assert_int_equal(jint(t, "subscribers"), 1);
	json_object_put(o);
	/* status and pools still speak JSON */
	assert_int_equal(takt(out, sizeof(out), "status --json"), 0);
	o = json(out);
	assert_int_equal(jint(o, "pid"), broker.pid);
	assert_int_equal(jint(o, "publishers"), 1);
	json_object_put(o);
	assert_int_equal(takt(out, sizeof(out), "pools --json"), 0);
	o = json(out);
	assert_int_equal(json_object_array_length(o), 1);
	assert_string_equal(jstr(json_object_array_get_idx(o, 0), "topic"), "cli/info");
	json_object_put(o);
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(pid, 10000), 0);
	takt_sub_close(sub);
	takt_node_close(n);
}

/* ---- echo, pub ------------------------------------------------------------ */

static void test_cli_echo_and_pub(void **state)
{
	char out[16384], cmd[512], line[1024];
	struct json_object *o;
	takt_node *n;
	takt_sub *s;
	takt_pub *p;
	FILE *echo;

	(void)state;
	/* echo prints what a real publisher sends, as JSON lines */
	snprintf(cmd, sizeof(cmd), "%s --domain %s topic echo cli/echo --count 3 --json", TAKT_TOOL_PATH, broker.domain);
	echo = popen(cmd, "r");
	assert_non_null(echo);
	n = h_node(broker.domain, "echo-pub");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cli/echo", .max_payload = 16}, &p), 0);
	for (int i = 0; i < 500; i++) { /* until echo's subscriber is there */
		struct json_object *t;
		int subs = 0;

		assert_int_equal(takt(out, sizeof(out), "topic list --json"), 0);
		o = json(out);
		t = by_name(o, "cli/echo");
		subs = t ? (int)jint(t, "subscribers") : 0;
		json_object_put(o);
		if (subs)
			break;
		usleep(10000);
	}
	assert_int_equal(takt_pub_send(p, "one", 4), 1);
	assert_int_equal(takt_pub_send(p, "\x01\x02\xff", 3), 1);
	assert_int_equal(takt_pub_send(p, "three", 5), 1);
	for (int k = 0; k < 3; k++) {
		unsigned char data[64];
		static const char *const want[] = {"one", "\x01\x02\xff", "three"};
		static const int want_len[] = {4, 3, 5};

		assert_non_null(fgets(line, sizeof(line), echo));
		o = json(line);
		assert_int_equal(jint(o, "seq"), k + 1);
		assert_int_equal(jint(o, "size"), want_len[k]);
		assert_int_equal((uint64_t)jint(o, "publisher_id"), takt_pub_id(p));
		assert_true(jint(o, "publish_ns") > 0);
		assert_int_equal(b64_pton(jstr(o, "data"), data, sizeof(data)), want_len[k]);
		assert_memory_equal(data, want[k], want_len[k]);
		json_object_put(o);
	}
	assert_int_equal(WEXITSTATUS(pclose(echo)), 0); /* --count 3: done */
	takt_pub_close(p);
	/* pub reaches a real subscriber: text, then --hex */
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "cli/pub", .queue_depth = 8}, &s), 0);
	assert_int_equal(takt(out, sizeof(out), "topic pub cli/pub hello --count 5"), 0);
	assert_non_null(strstr(out, "published 5 samples of 5 bytes on 'cli/pub'"));
	assert_int_equal(takt(out, sizeof(out), "topic pub cli/pub 00ff10 --hex --json"), 0);
	o = json(out);
	assert_int_equal(jint(o, "published"), 1);
	json_object_put(o);
	for (int k = 0, text = 0, hex = 0; k < 6; k++) { /* two publishers: each in its order */
		struct takt_sample_info info;
		const void *x;

		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		if (info.size == 5 && !memcmp(x, "hello", 5))
			assert_int_equal(info.seq, ++text);
		else if (info.size == 3 && !memcmp(x, "\x00\xff\x10", 3))
			assert_int_equal(info.seq, ++hex);
		else
			fail_msg("sample %d: %u bytes of neither", k, info.size);
		takt_sub_release(s, x);
		if (k == 5) {
			assert_int_equal(text, 5);
			assert_int_equal(hex, 1);
		}
	}
	assert_int_equal(takt_sub_take(s, &(const void *){NULL}, &(struct takt_sample_info){0}), -EAGAIN);
	takt_sub_close(s);
	takt_node_close(n);
}

/* ---- hz, bw, top: from the samples' publish times ------------------------- */

/* Publishes 100-byte samples stamped exactly 5 ms apart (held, then
 * flushed with the stamp), about one per ms of real time, until told. */
static int stamped_pub(void *a)
{
	takt_node *n = h_node(broker.domain, "stamped");
	uint64_t t0 = 1000000000ull, i = 0;
	char data[100] = {0};
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cli/rate", .max_payload = 100}, &p) == 0);
	H_CHECK(takt_pub_hold(p, 1) == 0);
	while (!atomic_load(&sh->stop)) {
		void *x;

		H_CHECK(takt_pub_loan(p, 100, &x) == 0);
		memcpy(x, data, sizeof(data));
		H_CHECK(takt_pub_publish(p, x) == 0);
		H_CHECK(takt_pub_flush(p, t0 + i * 5000000ull) >= 0);
		i++;
		usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

/* Sends on cli/hurt, to a subscriber of depth 2 that never takes. */
static int hurting_pub(void *a)
{
	takt_node *n = h_node(broker.domain, "hurting");
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cli/hurt", .max_payload = 8}, &p) == 0);
	while (!atomic_load(&sh->stop)) {
		H_CHECK(takt_pub_send(p, "x", 2) >= 0);
		usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

static void test_cli_hz_bw_top(void **state)
{
	char out[16384];
	struct json_object *o, *topics, *procs, *t;
	takt_node *n;
	takt_sub *stuck;
	pid_t rate, hurt;

	(void)state;
	atomic_store(&sh->stop, 0);
	n = h_node(broker.domain, "stuck");
	assert_int_equal(takt_sub_open(n, &(struct takt_sub_opts){.topic = "cli/hurt", .queue_depth = 2}, &stuck), 0);
	rate = h_spawn(stamped_pub, NULL);
	hurt = h_spawn(hurting_pub, NULL);
	/* the period is the stamps': exactly 5 ms, whatever the scheduling */
	assert_int_equal(takt(out, sizeof(out), "topic hz cli/rate --count 1 --json --duration 20"), 0);
	o = json(out);
	assert_true(jint(o, "window") >= 2);
	assert_true(fabs(json_object_get_double(json_object_object_get(o, "rate_hz")) - 200.0) < 0.001);
	assert_true(fabs(json_object_get_double(json_object_object_get(o, "min_ms")) - 5.0) < 0.001);
	assert_true(fabs(json_object_get_double(json_object_object_get(o, "max_ms")) - 5.0) < 0.001);
	assert_true(json_object_get_double(json_object_object_get(o, "stddev_ms")) < 0.001);
	json_object_put(o);
	assert_int_equal(takt(out, sizeof(out), "topic bw cli/rate --count 1 --json --duration 20"), 0);
	o = json(out);
	assert_true(fabs(json_object_get_double(json_object_object_get(o, "bytes_per_s")) - 20000.0) < 0.01);
	assert_int_equal(jint(o, "min_bytes"), 100);
	assert_int_equal(jint(o, "max_bytes"), 100);
	json_object_put(o);
	/* top: the topic losing samples comes first; every process is there */
	assert_int_equal(takt(out, sizeof(out), "top --once --json --interval 0.5"), 0);
	o = json(out);
	topics = json_object_object_get(o, "topics");
	procs = json_object_object_get(o, "processes");
	assert_string_equal(jstr(json_object_array_get_idx(topics, 0), "name"), "cli/hurt");
	assert_true(json_object_get_double(json_object_object_get(json_object_array_get_idx(topics, 0), "drops_per_s")) > 0);
	assert_true(json_object_get_double(json_object_object_get(json_object_array_get_idx(topics, 0),
								   "queue_fill_max")) > 0.99);
	t = by_name(procs, "stamped");
	assert_non_null(t);
	assert_int_equal(jint(t, "pid"), rate);
	assert_true(json_object_get_boolean(json_object_object_get(t, "alive")));
	assert_non_null(by_name(procs, "hurting"));
	assert_non_null(by_name(procs, "stuck"));
	json_object_put(o);
	/* and its text form, once */
	assert_int_equal(takt(out, sizeof(out), "top --once --interval 0.2"), 0);
	assert_non_null(strstr(out, "cli/hurt"));
	assert_non_null(strstr(out, "stamped"));
	atomic_store(&sh->stop, 1);
	assert_int_equal(h_wait(rate, 10000), 0);
	assert_int_equal(h_wait(hurt, 10000), 0);
	takt_sub_close(stuck);
	takt_node_close(n);
}

/* ---- completion ------------------------------------------------------------- */

static void test_cli_completion(void **state)
{
	char out[4096];
	takt_node *n;
	takt_pub *p;

	(void)state;
	assert_int_equal(takt(out, sizeof(out), "__complete"), 0);
	for (const char *const *w = (const char *const[]){"status\n", "pools\n", "topic\n", "node\n", "top\n", "record\n",
							  "play\n", NULL};
	     *w; w++)
		assert_non_null(strstr(out, *w));
	assert_null(strstr(strstr(out, "topic\n") + 1, "topic\n")); /* each once */
	assert_int_equal(takt(out, sizeof(out), "__complete topic"), 0);
	assert_non_null(strstr(out, "echo\n"));
	assert_non_null(strstr(out, "list\n"));
	n = h_node(broker.domain, "completed");
	assert_int_equal(takt_pub_open(n, &(struct takt_pub_opts){.topic = "cli/complete/me", .max_payload = 8}, &p), 0);
	assert_int_equal(takt(out, sizeof(out), "__complete topic echo"), 0);
	assert_non_null(strstr(out, "cli/complete/me\n"));
	takt_pub_close(p);
	takt_node_close(n);
	/* the script bash loads parses */
	assert_int_equal(system("bash -n " TAKT_SOURCE_DIR "/shm-broker/takt.bash"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cli_errors),
		cmocka_unit_test(test_cli_list_info_nodes),
		cmocka_unit_test(test_cli_echo_and_pub),
		cmocka_unit_test(test_cli_hz_bw_top),
		cmocka_unit_test(test_cli_completion),
	};

	return cmocka_run_group_tests_name("cli", tests, setup, teardown);
}
