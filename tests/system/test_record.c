/* test_record.c - `takt record`, `takt play` and `takt record --recover`
 * against a real broker, with publishers and subscribers in other
 * processes; every recording is read by the official MCAP libraries
 * (tests/mcap/check.mjs: @mcap/core and @mcap/support under node,
 * indexed and streamed, CRCs checked), and what they read is compared
 * with what was published, payload by payload (an FNV-1a per topic). */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

static struct h_broker broker;
static char dir[64];          /* the recordings */
static takt_node *node;       /* the test's own: topic lookups, subscribers */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* ---- what publishers send: bytes made from (tag, index) ---- */

static size_t payload_size(unsigned tag, uint32_t i)
{
	switch (tag) {
	case 0: return 64;
	case 1: return 100 + (i * 37u) % 3900u;
	default: return 4096;
	}
}

/* An index header, then bytes of an LCG (little to compress, as sensor
 * data), the first half of tag 1 zeroes (some to compress). */
static void payload_fill(uint8_t *p, size_t n, unsigned tag, uint32_t i)
{
	uint32_t s = i * 2654435761u ^ (tag + 1) * 40503u;

	for (size_t k = 0; k < n; k++) {
		s = s * 1103515245u + 12345u;
		p[k] = tag == 1 && k < n / 2 ? 0 : (uint8_t)(s >> 16);
	}
	memcpy(p, &i, n >= 4 ? 4 : n);
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
	while (n--) {
		h ^= *p++;
		h *= 0x01000193u;
	}
	return h;
}

/* FNV-1a over the first count payloads of tag, as check.mjs computes it. */
static uint32_t expected_fnv(unsigned tag, uint32_t count, uint64_t *bytes)
{
	uint8_t buf[4096];
	uint32_t h = 0x811c9dc5u;

	*bytes = 0;
	for (uint32_t i = 0; i < count; i++) {
		size_t n = payload_size(tag, i);

		payload_fill(buf, n, tag, i);
		h = fnv1a(h, buf, n);
		*bytes += n;
	}
	return h;
}

/* ---- publishers in their own processes ---- */

struct pub_spec {
	const char *topic, *type;
	unsigned tag;
	uint32_t count;     /* 0: until told to quit */
	uint64_t period_ns;
	struct h_chan *done, *quit;
};

static int subscribers_of(takt_node *n, const char *topic)
{
	struct takt_topic_info ti;

	return takt_node_topics(n, topic, &ti, 1) >= 1 ? (int)ti.subscribers : 0;
}

/* Publishes payload i of tag: subscribers reached, or a negative errno. */
static int publish_one(takt_pub *p, unsigned tag, uint32_t i)
{
	size_t size = payload_size(tag, i);
	void *d;
	int r;

	while ((r = takt_pub_loan(p, size, &d)) == -ENOBUFS)
		sleep_ms(1);
	if (r < 0)
		return r;
	payload_fill(d, size, tag, i);
	return takt_pub_publish(p, d);
}

static int pub_child(void *arg)
{
	const struct pub_spec *ps = arg;
	struct takt_pub_opts po = {.topic = ps->topic, .type_name = ps->type, .max_payload = 4096};
	takt_node *n = h_node(broker.domain, "rec-pub");
	uint64_t next = now_ns();
	takt_pub *p;
	char q;
	int r;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	/* sample 0 until it reaches the recorder: what is published before
	 * its connection exists reaches no one */
	while ((r = publish_one(p, ps->tag, 0)) == 0) {
		H_CHECK(now_ns() - next < (uint64_t)WAIT_MS * 1000000ull);
		sleep_ms(1);
	}
	H_CHECK(r > 0);
	next = now_ns();
	for (uint32_t i = 1; !ps->count || i < ps->count; i++) {
		struct timespec ts;

		next += ps->period_ns;
		ts = (struct timespec){.tv_sec = (time_t)(next / 1000000000ull), .tv_nsec = (long)(next % 1000000000ull)};
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		H_CHECK(publish_one(p, ps->tag, i) >= 0);
		if (!ps->count && h_chan_recv(ps->quit, &q, 1, 0) == 0)
			goto quit;
	}
	H_CHECK(h_chan_send(ps->done, "d", 1) == 0);
	H_CHECK(h_chan_recv(ps->quit, &q, 1, WAIT_MS) == 0);
quit:
	takt_node_close(n);
	return 0;
}

/* ---- the takt tool and the node checker ---- */

/* Runs takt --domain D --json args... with stdout and stderr into
 * out_path (and out_path.err). */
static pid_t tool_spawn(const char *out_path, const char *const *args)
{
	pid_t pid = fork();

	if (pid == 0) {
		char err_path[256];
		const char *argv[32] = {"takt", "--domain", broker.domain, "--json"};
		int k = 4, fd;

		snprintf(err_path, sizeof(err_path), "%s.err", out_path);
		fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, STDOUT_FILENO);
		fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, STDERR_FILENO);
		for (int i = 0; args[i] && k < 31; i++)
			argv[k++] = args[i];
		argv[k] = NULL;
		execv(TAKT_TOOL_PATH, (char **)argv);
		_exit(127);
	}
	return pid;
}

static char *slurp(const char *path)
{
	static char buf[1 << 16];
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;

	if (f)
		fclose(f);
	buf[n] = 0;
	return buf;
}

/* The tool's exit status (killed: 128 + signal), after at most WAIT_MS;
 * its rusage into ru if asked. */
static int tool_wait(pid_t pid, const char *out_path, struct rusage *ru)
{
	struct rusage r;
	int st;

	for (int i = 0; i < WAIT_MS / 10; i++) {
		pid_t w = wait4(pid, &st, WNOHANG, &r);

		if (w == pid) {
			char err_path[256];

			if (ru)
				*ru = r;
			snprintf(err_path, sizeof(err_path), "%s.err", out_path);
			if (WIFEXITED(st) && WEXITSTATUS(st)) { /* (slurp's buffer holds one file at a time) */
				fprintf(stderr, "takt exited with %d; stdout:\n%s\n", st, slurp(out_path));
				fprintf(stderr, "stderr:\n%s\n", slurp(err_path));
			}
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		}
		sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	fail_msg("takt did not exit within %d ms", WAIT_MS);
	return -1;
}

/* A number after "key": in JSON text, from where on; UINT64_MAX when missing. */
static uint64_t json_u64(const char *text, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(text, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

/* The same, in the object of topic name ("name":"topic"). */
static uint64_t json_topic_u64(const char *text, const char *topic, const char *key)
{
	char pat[128];
	const char *p;

	snprintf(pat, sizeof(pat), "\"name\":\"%s\"", topic);
	p = strstr(text, pat);
	return p ? json_u64(p, key) : UINT64_MAX;
}

struct chk {
	char topic[64], schema[64], encoding[64];
	uint64_t count, bytes;
	uint32_t fnv;
};

static char check_out[1 << 16];

/* Runs check.mjs on file: the topics it read into out (at most 8), or -1
 * when it failed (its output printed). */
static int check_file(const char *file, bool partial, struct chk *out)
{
	char cmd[512];
	size_t n = 0;
	int k = 0, st;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "node %s/check.mjs %s %s 2>&1", TAKT_MCAP_DIR, partial ? "--partial" : "", file);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < sizeof(check_out) && fgets(check_out + n, (int)(sizeof(check_out) - n), f))
		n += strlen(check_out + n);
	check_out[n] = 0;
	st = pclose(f);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "check.mjs failed on %s:\n%s\n", file, check_out);
		return -1;
	}
	for (char *l = check_out; l && *l && k < 8; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (sscanf(l, "topic %63s schema %63s encoding %63s count %" SCNu64 " bytes %" SCNu64 " fnv %" SCNx32,
			   out[k].topic, out[k].schema, out[k].encoding, &out[k].count, &out[k].bytes, &out[k].fnv) == 6)
			k++;
	return k;
}

static const struct chk *chk_find(const struct chk *c, int n, const char *topic)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(c[i].topic, topic))
			return &c[i];
	fail_msg("check.mjs did not read topic %s:\n%s", topic, check_out);
	return NULL;
}

/* The checker's reading of topic matches the first count payloads of tag. */
static void expect_topic(const struct chk *c, int n, const char *topic, const char *type, unsigned tag,
			 uint64_t count)
{
	const struct chk *t = chk_find(c, n, topic);
	uint64_t bytes;
	uint32_t fnv = expected_fnv(tag, (uint32_t)count, &bytes);

	assert_string_equal(t->schema, type);
	assert_string_equal(t->encoding, "application/octet-stream");
	assert_int_equal(t->count, count);
	assert_int_equal(t->bytes, bytes);
	assert_int_equal(t->fnv, fnv);
}

static void wait_subscribed(const char *topic)
{
	for (int i = 0; subscribers_of(node, topic) < 1; i++) {
		assert_true(i < WAIT_MS);
		sleep_ms(1);
	}
}

static void path_of(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

/* Subscribers of the test: takes everything of topic until want samples
 * came (or WAIT_MS), checks each against payload i % period of tag, in
 * order; their receive times into first/last. How many came. */
static uint64_t take_all(takt_sub *s, unsigned tag, uint32_t period, uint64_t want, uint64_t *first, uint64_t *last)
{
	uint64_t got = 0, deadline = now_ns() + (uint64_t)WAIT_MS * 1000000ull;
	uint8_t expect[4096];

	while (got < want && now_ns() < deadline) {
		struct takt_sample_info info;
		const void *p;
		uint32_t i = (uint32_t)(got % period);

		if (takt_sub_take(s, &p, &info) != 0) {
			takt_sub_wait(s, 10000000);
			continue;
		}
		if (!got && first)
			*first = now_ns();
		if (last)
			*last = now_ns();
		payload_fill(expect, payload_size(tag, i), tag, i);
		assert_int_equal(info.size, payload_size(tag, i));
		assert_memory_equal(p, expect, info.size);
		takt_sub_release(s, p);
		got++;
	}
	return got;
}

static takt_sub *sub_open(const char *topic, const char *type)
{
	struct takt_sub_opts so = {.topic = topic, .type_name = type, .queue_depth = 2048};
	takt_sub *s;

	assert_int_equal(takt_sub_open(node, &so, &s), 0);
	return s;
}

/* Records topics published by n_pubs publishers of count samples each
 * (already spawned, waiting for a subscriber) until they are done, then
 * stops the recorder with SIGINT. The recorder's JSON summary. */
static const char *record_until_done(const char *file, const char *const *args, struct h_chan *done,
				     struct h_chan *quit, int n_pubs, const pid_t *pubs, struct rusage *ru)
{
	static char out_path[256];
	pid_t rec;
	char d;

	snprintf(out_path, sizeof(out_path), "%s.out", file);
	rec = tool_spawn(out_path, args);
	for (int i = 0; i < n_pubs; i++)
		assert_int_equal(h_chan_recv(done, &d, 1, WAIT_MS), 0);
	kill(rec, SIGINT);
	assert_int_equal(tool_wait(rec, out_path, ru), 0);
	for (int i = 0; i < n_pubs; i++)
		h_chan_send(quit, "q", 1);
	for (int i = 0; i < n_pubs; i++)
		assert_int_equal(h_wait(pubs[i], WAIT_MS), 0);
	return slurp(out_path);
}

/* ---- the tests ---- */

#define RT_N 300

/* Three topics of different sizes and types from three processes, two
 * named and one by pattern: recorded, read by the official readers,
 * played into fresh subscribers and compared payload by payload. */
static void test_record_round_trip(void **state)
{
	struct pub_spec ps[3] = {
		{"rec/imu", "test.Imu", 0, RT_N, 1000000, NULL, NULL},
		{"rec/cam", "test.Image", 2, RT_N, 1000000, NULL, NULL},
		{"rec/dyn/log", "test.Log", 1, RT_N, 1000000, NULL, NULL},
	};
	char file[128], out_path[160];
	struct h_chan done, quit;
	struct chk c[8];
	takt_sub *subs[3];
	const char *json;
	pid_t pubs[3], play;
	int n;

	(void)state;
	path_of(file, sizeof(file), "round.mcap");
	assert_int_equal(h_chan_open(&done), 0);
	assert_int_equal(h_chan_open(&quit), 0);
	for (int i = 0; i < 3; i++) {
		ps[i].done = &done;
		ps[i].quit = &quit;
		pubs[i] = h_spawn(pub_child, &ps[i]);
	}
	{
		const char *args[] = {"record", "-o", file, "rec/imu", "rec/cam", "rec/dyn/*", NULL};

		json = record_until_done(file, args, &done, &quit, 3, pubs, NULL);
	}
	assert_int_equal(json_u64(json, "samples"), 3 * RT_N);
	assert_int_equal(json_u64(json, "drops"), 0);
	assert_int_equal(json_topic_u64(json, "rec/dyn/log", "samples"), RT_N);

	n = check_file(file, false, c);
	assert_int_equal(n, 3);
	for (int i = 0; i < 3; i++)
		expect_topic(c, n, ps[i].topic, ps[i].type, ps[i].tag, RT_N);

	for (int i = 0; i < 3; i++)
		subs[i] = sub_open(ps[i].topic, ps[i].type);
	snprintf(out_path, sizeof(out_path), "%s.play", file);
	play = tool_spawn(out_path, (const char *const[]){"play", file, "--rate", "4", NULL});
	for (int i = 0; i < 3; i++)
		assert_int_equal(take_all(subs[i], ps[i].tag, RT_N, RT_N, NULL, NULL), RT_N);
	assert_int_equal(tool_wait(play, out_path, NULL), 0);
	assert_int_equal(json_u64(slurp(out_path), "samples"), 3 * RT_N);
	for (int i = 0; i < 3; i++) {
		const void *p;
		struct takt_sample_info info;

		assert_int_equal(takt_sub_take(subs[i], &p, &info), -EAGAIN); /* nothing more */
		assert_int_equal(takt_sub_dropped(subs[i]), 0);
		takt_sub_close(subs[i]);
	}
	h_chan_close(&done);
	h_chan_close(&quit);
}

/* --duration and --max-bytes end a recording on their own, complete. */
static void test_record_duration_and_max_bytes(void **state)
{
	struct pub_spec ps = {"rec/steady", "test.Steady", 2, 0, 1000000, NULL, NULL};
	char fa[128], fb[128], oa[160], ob[160];
	struct h_chan done, quit;
	struct chk c[8];
	struct stat st;
	pid_t pub, ra, rb;
	uint64_t samples;

	(void)state;
	path_of(fa, sizeof(fa), "duration.mcap");
	path_of(fb, sizeof(fb), "maxbytes.mcap");
	snprintf(oa, sizeof(oa), "%s.out", fa);
	snprintf(ob, sizeof(ob), "%s.out", fb);
	assert_int_equal(h_chan_open(&done), 0);
	assert_int_equal(h_chan_open(&quit), 0);
	ps.done = &done;
	ps.quit = &quit;
	pub = h_spawn(pub_child, &ps);
	ra = tool_spawn(oa, (const char *const[]){"record", "-o", fa, "--all", "--duration", "1", NULL});
	rb = tool_spawn(ob, (const char *const[]){"record", "-o", fb, "--max-bytes", "256K", "rec/steady", NULL});
	assert_int_equal(tool_wait(ra, oa, NULL), 0);
	assert_int_equal(tool_wait(rb, ob, NULL), 0);
	h_chan_send(&quit, "q", 1);
	assert_int_equal(h_wait(pub, WAIT_MS), 0);

	samples = json_u64(slurp(oa), "duration_s"); /* 1.00x: its integer part */
	assert_true(samples >= 1 && samples < 30);
	samples = json_u64(slurp(oa), "samples");
	assert_true(samples > 0 && samples != UINT64_MAX);
	assert_int_equal(check_file(fa, false, c), 1);
	assert_int_equal(chk_find(c, 1, "rec/steady")->count, samples);

	samples = json_u64(slurp(ob), "samples");
	assert_int_equal(stat(fb, &st), 0);
	assert_true(st.st_size <= 256 * 1024 + 4096); /* the data under the limit, then the summary */
	assert_true(st.st_size >= 200 * 1024);
	assert_int_equal(check_file(fb, false, c), 1);
	assert_int_equal(chk_find(c, 1, "rec/steady")->count, samples);
	h_chan_close(&done);
	h_chan_close(&quit);
}

/* A recorder killed mid-run leaves every chunk it closed readable;
 * --recover rewrites the file whole, with exactly those messages. */
static void test_record_sigkill_then_recover(void **state)
{
	struct pub_spec ps = {"rec/crash", "test.Crash", 2, 0, 1000000, NULL, NULL};
	char file[128], fixed[128], out_path[160], rout[160];
	struct h_chan done, quit;
	struct chk c[8], r[8];
	uint64_t streamed;
	pid_t pub, rec, rv;

	(void)state;
	path_of(file, sizeof(file), "crash.mcap");
	path_of(fixed, sizeof(fixed), "recovered.mcap");
	snprintf(out_path, sizeof(out_path), "%s.out", file);
	snprintf(rout, sizeof(rout), "%s.out", fixed);
	assert_int_equal(h_chan_open(&done), 0);
	assert_int_equal(h_chan_open(&quit), 0);
	ps.done = &done;
	ps.quit = &quit;
	pub = h_spawn(pub_child, &ps);
	rec = tool_spawn(out_path, (const char *const[]){"record", "-o", file, "rec/crash", NULL});
	wait_subscribed("rec/crash");
	sleep_ms(1500); /* a chunk closes per MiB (~250 samples) or second */
	kill(rec, SIGKILL);
	assert_int_equal(tool_wait(rec, out_path, NULL), 128 + SIGKILL);
	h_chan_send(&quit, "q", 1);
	assert_int_equal(h_wait(pub, WAIT_MS), 0);

	/* the official streamed reader reads the chunks before the cut */
	assert_int_equal(check_file(file, true, c), 1);
	assert_non_null(strstr(check_out, "partial "));
	assert_null(strstr(check_out, "(no error"));
	streamed = chk_find(c, 1, "rec/crash")->count;
	assert_true(streamed >= 200);
	expect_topic(c, 1, "rec/crash", "test.Crash", 2, streamed);

	rv = tool_spawn(rout, (const char *const[]){"record", "--recover", file, fixed, NULL});
	assert_int_equal(tool_wait(rv, rout, NULL), 0);
	assert_int_equal(json_u64(slurp(rout), "messages"), streamed);
	assert_non_null(strstr(slurp(rout), "\"complete\":false"));
	assert_int_equal(check_file(fixed, false, r), 1);
	expect_topic(r, 1, "rec/crash", "test.Crash", 2, streamed);
	h_chan_close(&done);
	h_chan_close(&quit);
}

#define SLOW_N 40

/* A recording of SLOW_N samples 25 ms apart (0.975 s), for the play tests. */
static void record_slow(char *file, size_t n)
{
	struct pub_spec ps = {"rec/slow", "test.Slow", 0, SLOW_N, 25000000, NULL, NULL};
	struct h_chan done, quit;
	struct chk c[8];
	pid_t pub;

	path_of(file, n, "slow.mcap");
	if (access(file, R_OK) == 0)
		return;
	assert_int_equal(h_chan_open(&done), 0);
	assert_int_equal(h_chan_open(&quit), 0);
	ps.done = &done;
	ps.quit = &quit;
	pub = h_spawn(pub_child, &ps);
	assert_int_equal(json_u64(record_until_done(file, (const char *const[]){"record", "-o", file, "rec/slow", NULL},
						    &done, &quit, 1, &pub, NULL),
				  "samples"),
			 SLOW_N);
	assert_int_equal(check_file(file, false, c), 1);
	expect_topic(c, 1, "rec/slow", "test.Slow", 0, SLOW_N);
	h_chan_close(&done);
	h_chan_close(&quit);
}

/* --rate scales the recorded timing: order and counts exact, the span
 * within wide bounds (a loaded machine only stretches it). */
static void test_record_play_rate(void **state)
{
	char file[128], out_path[160];
	const char *rates[] = {"2", "8"};
	const double min_s[] = {0.975 / 2 * 0.8, 0.975 / 8 * 0.8};

	(void)state;
	record_slow(file, sizeof(file));
	snprintf(out_path, sizeof(out_path), "%s.rate", file);
	for (int k = 0; k < 2; k++) {
		takt_sub *s = sub_open("rec/slow", "test.Slow");
		uint64_t first = 0, last = 0;
		pid_t play = tool_spawn(out_path, (const char *const[]){"play", file, "--rate", rates[k], NULL});
		double span;

		assert_int_equal(take_all(s, 0, SLOW_N, SLOW_N, &first, &last), SLOW_N);
		assert_int_equal(tool_wait(play, out_path, NULL), 0);
		span = (double)(last - first) / 1e9;
		fprintf(stderr, "play --rate %s: %d samples over %.3f s (recorded over >= 0.975 s)\n", rates[k], SLOW_N,
			span);
		assert_true(span >= min_s[k]);
		assert_true(span <= 10);
		takt_sub_close(s);
	}
}

/* --loop repeats the file, in order, until --duration ends it. */
static void test_record_play_loop(void **state)
{
	char file[128], out_path[160];
	takt_sub *s;
	const char *json;
	uint64_t loops, samples;
	pid_t play;

	(void)state;
	record_slow(file, sizeof(file));
	snprintf(out_path, sizeof(out_path), "%s.loop", file);
	s = sub_open("rec/slow", "test.Slow");
	play = tool_spawn(out_path, (const char *const[]){"play", file, "--rate", "8", "--loop", "--duration", "1",
							   NULL});
	assert_int_equal(tool_wait(play, out_path, NULL), 0);
	json = slurp(out_path);
	loops = json_u64(json, "loops");
	samples = json_u64(json, "samples");
	fprintf(stderr, "play --loop: %" PRIu64 " samples in %" PRIu64 " passes\n", samples, loops);
	assert_true(loops >= 2 && loops != UINT64_MAX);
	assert_true(samples >= 2 * SLOW_N);
	assert_int_equal(take_all(s, 0, SLOW_N, samples, NULL, NULL), samples);
	takt_sub_close(s);
	/* a loop over nothing is refused, not spun */
	play = tool_spawn(out_path, (const char *const[]){"play", file, "--topics", "no/such", "--loop", NULL});
	assert_int_equal(tool_wait(play, out_path, NULL), 1);
}

#define FAST_N 2000

/* The recorder keeps up with 1 kHz of 4 KiB samples: every one of 2000
 * recorded, none dropped (counts, not times: the machine may be loaded). */
static void test_record_keeps_up_1khz_4k(void **state)
{
	struct pub_spec ps = {"rec/fast", "test.Fast", 2, FAST_N, 1000000, NULL, NULL};
	struct h_chan done, quit;
	char file[128];
	struct chk c[8];
	struct rusage ru;
	struct stat st;
	const char *json;
	pid_t pub;

	(void)state;
	path_of(file, sizeof(file), "fast.mcap");
	assert_int_equal(h_chan_open(&done), 0);
	assert_int_equal(h_chan_open(&quit), 0);
	ps.done = &done;
	ps.quit = &quit;
	pub = h_spawn(pub_child, &ps);
	json = record_until_done(file, (const char *const[]){"record", "-o", file, "rec/fast", NULL}, &done, &quit, 1,
				 &pub, &ru);
	assert_int_equal(stat(file, &st), 0);
	fprintf(stderr, "recorder, 1 kHz x 4 KiB for 2 s: %" PRIu64 " samples, %" PRIu64 " dropped, file %lld bytes, "
			"CPU %.3f s user + %.3f s system, max RSS %ld KiB\n",
		json_u64(json, "samples"), json_u64(json, "drops"), (long long)st.st_size,
		(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6, ru.ru_maxrss);
	assert_int_equal(json_u64(json, "drops"), 0);
	assert_int_equal(json_u64(json, "samples"), FAST_N);
	assert_int_equal(check_file(file, false, c), 1);
	expect_topic(c, 1, "rec/fast", "test.Fast", 2, FAST_N);
	h_chan_close(&done);
	h_chan_close(&quit);
}

static int setup(void **state)
{
	char out[256];
	FILE *f;

	(void)state;
	/* node and the official MCAP libraries are required, not optional:
	 * a missing one fails the test (scripts/bootstrap and scripts/test
	 * install them) */
	f = popen("node -v 2>&1", "r");
	if (!f || !fgets(out, sizeof(out), f) || out[0] != 'v') {
		fprintf(stderr, "test_record: needs node (scripts/bootstrap installs it)\n");
		return -1;
	}
	pclose(f);
	snprintf(out, sizeof(out), "%s/node_modules/@mcap/core/package.json", TAKT_MCAP_DIR);
	if (access(out, R_OK) != 0) {
		fprintf(stderr, "test_record: needs the MCAP libraries: npm ci --prefix tests/mcap (scripts/test does)\n");
		return -1;
	}
	snprintf(dir, sizeof(dir), "/tmp/takt-rec-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	if (h_broker_start(&broker, "record", "[limits]\nqueue_depth_max = 4096\n"))
		return -1;
	node = h_node(broker.domain, "rec-test");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	takt_node_close(node);
	h_broker_stop(&broker);
	if (!getenv("TAKT_KEEP_RECORDINGS")) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd)) {
		}
	} else {
		fprintf(stderr, "recordings kept in %s\n", dir);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_round_trip),
		cmocka_unit_test(test_record_duration_and_max_bytes),
		cmocka_unit_test(test_record_sigkill_then_recover),
		cmocka_unit_test(test_record_play_rate),
		cmocka_unit_test(test_record_play_loop),
		cmocka_unit_test(test_record_keeps_up_1khz_4k),
	};

	return cmocka_run_group_tests_name("record", tests, setup, teardown);
}
