/* test_trace_services.c - takt-trace services follows each request of a real
 * server and client, each its own process, to every response the client
 * takes, and reports the one never answered; a send that is refused is no
 * request.
 *
 * The tracer starts first, on the broker's domain. The client (max_pending
 * 2) sends requests 1 and 2 before the server takes anything, and a third
 * that max_pending refuses (-ENOBUFS); then the server starts taking. From
 * request 3 on the client sends each once it took every response to the
 * one before: most are answered once, every 4th three times (a stream), the
 * last (N) never: the server keeps it (taken, not released, no respond).
 * Then the server closes, and one more send is refused: the server went
 * since the client last looked, which its publish finds out
 * (-ECONNRESET). Neither refused send may count as a request.
 */
#include "tracefix.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define N 24 /* requests; the last is never answered */
#define SERVICE "trace/svc"
#define MAX_RESPONSES 3

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "trsvc", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

/* How many responses request id asks for. */
static uint32_t responses_of(uint64_t id)
{
	return id == N ? 0 : id % 4 == 0 ? MAX_RESPONSES : 1;
}

static unsigned total_responses(void)
{
	unsigned n = 0;

	for (uint64_t i = 1; i <= N; i++)
		n += responses_of(i);
	return n;
}

struct svc_pair {
	const char *domain;
	pid_t server_pid, client_pid;
	uint64_t client_id; /* as the client's responses name it */
	struct h_chan to_srv, from_srv, to_cli, from_cli;
};

/* ---- the server and the client ------------------------------------------------ */

static int64_t wait_ns(void)
{
	return (int64_t)TF_WAIT_MS * 1000000;
}

static int expect(struct h_chan *c, char want)
{
	char ch = 0;

	return h_chan_recv(c, &ch, 1, TF_WAIT_MS) == 0 && ch == want ? 0 : -1;
}

/* Answers each request as many times as it asks, releasing it first (the
 * client may send its next one as soon as it has the responses); keeps the
 * one that asks for none and closes with it still taken. */
static int server_child(void *arg)
{
	struct svc_pair *sp = arg;
	struct takt_service_opts so = {.service = SERVICE, .max_response = 64};
	takt_node *n = h_node(sp->domain, "trace-server");
	takt_server *srv;

	H_CHECK(takt_server_open(n, &so, &srv) == 0);
	H_CHECK(h_chan_send(&sp->from_srv, "r", 1) == 0);
	H_CHECK(expect(&sp->to_srv, 'g') == 0);
	for (unsigned taken = 0; taken < N;) {
		struct takt_request_info req;
		const void *p;
		uint32_t want;
		int r = takt_server_take(srv, &p, &req);

		if (r == -EAGAIN) {
			H_CHECK(takt_server_wait(srv, wait_ns()) == 0);
			continue;
		}
		H_CHECK(r == 0 && req.size == sizeof(want));
		memcpy(&want, p, sizeof(want));
		taken++;
		if (!want) {
			H_CHECK(h_chan_send(&sp->from_srv, "h", 1) == 0); /* holds it */
			continue;
		}
		takt_server_release(srv, p);
		for (uint64_t k = 1; k <= want; k++) {
			uint64_t *out;

			H_CHECK(takt_server_loan(srv, &req, sizeof(*out), (void **)&out) == 0);
			*out = k;
			H_CHECK(takt_server_respond(srv, &req, out) == 0);
		}
	}
	H_CHECK(expect(&sp->to_srv, 'e') == 0);
	takt_server_close(srv); /* (the broker has retired its connections when this returns) */
	H_CHECK(h_chan_send(&sp->from_srv, "c", 1) == 0);
	takt_node_close(n);
	return 0;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Sends a request asking for want responses: its id. Tried again while
 * our publisher has not met the server yet (-ENOTCONN), bounded. */
static int64_t send_request(takt_client *cli, uint32_t want)
{
	void *p;
	int64_t id = -ENOTCONN;
	int r = takt_client_loan(cli, sizeof(want), &p);

	if (r < 0)
		return r;
	memcpy(p, &want, sizeof(want));
	for (int tries = 0; tries < 1000 && id == -ENOTCONN; tries++) {
		id = takt_client_send(cli, p);
		if (id == -ENOTCONN)
			sleep_ms(5);
	}
	if (id < 0)
		takt_client_discard(cli, p);
	return id;
}

/* Takes the k-th response to request id: 0, or 1 with a message. */
static int take_response(takt_client *cli, uint64_t id, uint64_t k, uint64_t *ret_client)
{
	struct takt_request_info info;
	const void *p;
	uint64_t got;
	int r;

	while ((r = takt_client_take(cli, &p, &info)) == -EAGAIN)
		H_CHECK(takt_client_wait(cli, wait_ns()) == 0);
	H_CHECK(r == 0 && info.request_id == id && info.size == sizeof(got));
	memcpy(&got, p, sizeof(got));
	takt_client_release(cli, p);
	H_CHECK(got == k);
	*ret_client = info.client_id;
	return 0;
}

static int take_responses(takt_client *cli, uint64_t id, uint64_t *ret_client)
{
	for (uint64_t k = 1; k <= responses_of(id); k++)
		H_CHECK(take_response(cli, id, k, ret_client) == 0);
	return 0;
}

/* A send that must be refused with want: the loan stays ours. */
static int refused(takt_client *cli, void *p, int want)
{
	int64_t r = takt_client_send(cli, p);

	if (r != want)
		fprintf(stderr, "a send that must be refused with %d said %lld\n", want, (long long)r);
	takt_client_discard(cli, p);
	return r == want ? 0 : 1;
}

static int client_child(void *arg)
{
	struct svc_pair *sp = arg;
	struct takt_service_opts so = {.service = SERVICE, .max_request = 64, .max_pending = 2};
	takt_node *n = h_node(sp->domain, "trace-client");
	uint64_t client_id = 0;
	takt_client *cli;
	void *p;

	H_CHECK(takt_client_open(n, &so, &cli) == 0);
	H_CHECK(h_chan_send(&sp->from_cli, "r", 1) == 0);
	H_CHECK(expect(&sp->to_cli, 'g') == 0);
	/* The server takes nothing yet: the third is one too many. */
	H_CHECK(send_request(cli, responses_of(1)) == 1);
	H_CHECK(send_request(cli, responses_of(2)) == 2);
	H_CHECK(takt_client_loan(cli, sizeof(uint32_t), &p) == 0);
	H_CHECK(refused(cli, p, -ENOBUFS) == 0);
	H_CHECK(h_chan_send(&sp->from_cli, "f", 1) == 0);
	H_CHECK(take_responses(cli, 1, &client_id) == 0 && take_responses(cli, 2, &client_id) == 0);
	for (uint64_t i = 3; i <= N; i++) {
		H_CHECK(send_request(cli, responses_of(i)) == (int64_t)i);
		H_CHECK(take_responses(cli, i, &client_id) == 0);
		sleep_ms(2); /* both threads go to sleep between requests */
	}
	/* Only N is out (the server keeps it) once we looked (arm looks): so
	 * the next send trusts that look and goes to publish without another. */
	for (int i = 0; i < 1000 && (takt_client_arm(cli) < 0 || takt_client_pending(cli) != 1); i++)
		sleep_ms(1);
	H_CHECK(takt_client_pending(cli) == 1);
	H_CHECK(takt_client_loan(cli, sizeof(uint32_t), &p) == 0);
	H_CHECK(h_chan_send(&sp->from_cli, "n", 1) == 0);
	H_CHECK(expect(&sp->to_cli, 's') == 0); /* the server closed */
	H_CHECK(refused(cli, p, -ECONNRESET) == 0);
	H_CHECK(h_chan_send(&sp->from_cli, &client_id, sizeof(client_id)) == 0);
	H_CHECK(expect(&sp->to_cli, 'e') == 0);
	takt_client_close(cli);
	takt_node_close(n);
	return 0;
}

/* Runs both to the end; 0, or -1 with a message. */
static int run_pair(struct svc_pair *sp)
{
	int srv, cli, r = -1;

	if (h_chan_open(&sp->to_srv) || h_chan_open(&sp->from_srv) || h_chan_open(&sp->to_cli) ||
	    h_chan_open(&sp->from_cli))
		return -1;
	sp->server_pid = h_spawn(server_child, sp);
	if (expect(&sp->from_srv, 'r') < 0)
		fprintf(stderr, "the server did not start\n");
	else if ((sp->client_pid = h_spawn(client_child, sp)) < 0 || expect(&sp->from_cli, 'r') < 0)
		fprintf(stderr, "the client did not start\n");
	else if (h_chan_send(&sp->to_cli, "g", 1) < 0 || expect(&sp->from_cli, 'f') < 0)
		fprintf(stderr, "the client did not send its first requests\n");
	else if (h_chan_send(&sp->to_srv, "g", 1) < 0 || expect(&sp->from_srv, 'h') < 0 ||
		 expect(&sp->from_cli, 'n') < 0)
		fprintf(stderr, "the requests did not all go\n");
	else if (h_chan_send(&sp->to_srv, "e", 1) < 0 || expect(&sp->from_srv, 'c') < 0)
		fprintf(stderr, "the server did not close\n");
	else if (h_chan_send(&sp->to_cli, "s", 1) < 0 ||
		 h_chan_recv(&sp->from_cli, &sp->client_id, sizeof(sp->client_id), TF_WAIT_MS) < 0)
		fprintf(stderr, "the client did not finish\n");
	else
		r = 0;
	h_chan_send(&sp->to_cli, "e", 1);
	h_chan_send(&sp->to_srv, "e", 1);
	cli = sp->client_pid > 0 ? h_wait(sp->client_pid, TF_WAIT_MS) : -1;
	srv = h_wait(sp->server_pid, TF_WAIT_MS);
	h_chan_close(&sp->to_srv);
	h_chan_close(&sp->from_srv);
	h_chan_close(&sp->to_cli);
	h_chan_close(&sp->from_cli);
	if (cli || srv)
		fprintf(stderr, "client exited %d, server %d\n", cli, srv);
	return r < 0 || cli || srv ? -1 : 0;
}

/* ---- what the tracer said ------------------------------------------------------- */


struct tally {
	unsigned responses, round_trips, unanswered, summaries;
	unsigned char seen[N + 1][MAX_RESPONSES + 1];
	long long last_respond[N + 1], last_take[N + 1]; /* the stream's previous response */
};

static long long num(const char *line, const char *key)
{
	long long v = -1;

	TF_CHECK(tf_json_num(line, key, &v));
	return v;
}

/* How a thread stood at its take; when it slept, its wake-up came in order
 * before the take. */
static void check_wake(const char *line, const char *who, long long take, long long tid)
{
	char key[64], state[16];
	long long notify, wakeup, oncpu, v;

	snprintf(key, sizeof(key), "%s_thread", who);
	TF_CHECK(tf_json_str(line, key, state, sizeof(state))); /* joined: never null here */
	snprintf(key, sizeof(key), "%s_wake_tid", who);
	TF_CHECK(num(line, key) == tid);
	if (strcmp(state, "asleep"))
		return;
	snprintf(key, sizeof(key), "%s_notify_ns", who);
	notify = num(line, key);
	snprintf(key, sizeof(key), "%s_wakeup_ns", who);
	wakeup = num(line, key);
	snprintf(key, sizeof(key), "%s_oncpu_ns", who);
	oncpu = num(line, key);
	TF_CHECK(notify <= wakeup && wakeup <= oncpu && oncpu <= take);
	snprintf(key, sizeof(key), "%s_notify_to_wakeup_ns", who);
	TF_CHECK(tf_json_num(line, key, &v) && v == wakeup - notify);
}

/* What every line of a request says: its service, its client and server. */
static void check_request(const char *line, const struct svc_pair *sp)
{
	char s[64], id[20];

	snprintf(id, sizeof(id), "%016" PRIx64, sp->client_id);
	TF_CHECK(tf_json_str(line, "service", s, sizeof(s)) && !strcmp(s, SERVICE));
	TF_CHECK(tf_json_str(line, "client_id", s, sizeof(s)) && !strcmp(s, id));
	TF_CHECK(num(line, "client_pid") == sp->client_pid && num(line, "client_tid") == sp->client_pid);
	TF_CHECK(num(line, "server_pid") == sp->server_pid && num(line, "server_tid") == sp->server_pid);
}

static void check_response(const char *line, const struct svc_pair *sp, struct tally *t)
{
	long long id = num(line, "request_id"), k = num(line, "response"), send = num(line, "send_ns"),
		  take = num(line, "server_take_ns"), respond = num(line, "respond_ns"),
		  client_take = num(line, "client_take_ns"), v;

	check_request(line, sp);
	TF_CHECK(id >= 1 && id < N && k >= 1 && k <= responses_of((uint64_t)id));
	TF_CHECK(!t->seen[id][k]); /* each response once */
	t->seen[id][k] = 1;
	TF_CHECK(num(line, "responds") >= k);
	TF_CHECK(send <= take && take <= respond && respond <= client_take);
	TF_CHECK(num(line, "send_to_take_ns") == take - send);
	TF_CHECK(num(line, "take_to_respond_ns") == respond - take);
	TF_CHECK(num(line, "respond_to_take_ns") == client_take - respond);
	if (k == 1) {
		TF_CHECK(num(line, "round_trip_ns") == client_take - send);
		t->round_trips++;
	} else {
		/* a stream: in order, after the response before */
		TF_CHECK(!tf_json_num(line, "round_trip_ns", &v));
		TF_CHECK(t->seen[id][k - 1] && t->last_respond[id] < respond && t->last_take[id] < client_take);
	}
	t->last_respond[id] = respond;
	t->last_take[id] = client_take;
	check_wake(line, "server", take, sp->server_pid);
	check_wake(line, "client", client_take, sp->client_pid);
	t->responses++;
}

/* The one request never answered: N, which the server took and kept. */
static void check_unanswered(const char *line, const struct svc_pair *sp, struct tally *t)
{
	char why[64];
	long long v;

	check_request(line, sp);
	TF_CHECK(num(line, "request_id") == N);
	TF_CHECK(tf_json_str(line, "why", why, sizeof(why)) && !strcmp(why, "taken, no respond"));
	TF_CHECK(num(line, "send_ns") <= num(line, "server_take_ns"));
	TF_CHECK(num(line, "responds") == 0 && !tf_json_num(line, "response", &v));
	TF_CHECK(!tf_json_num(line, "respond_ns", &v) && !tf_json_num(line, "client_take_ns", &v));
	t->unanswered++;
}

static void check_summary(const char *line, struct tally *t)
{
	char s[64];

	TF_CHECK(tf_json_str(line, "service", s, sizeof(s)) && !strcmp(s, SERVICE));
	TF_CHECK(num(line, "round_trips") == N - 1);
	TF_CHECK(num(line, "more_responses") == total_responses() - (N - 1));
	TF_CHECK(num(line, "unanswered") == 1);
	t->summaries++;
}

/* A hop's histogram: one count per request (send -> take, round trip), or
 * per response. */
static void check_hist(const char *line)
{
	char stage[32];

	TF_CHECK(tf_json_str(line, "stage", stage, sizeof(stage)));
	if (!strcmp(stage, "send_to_take") || !strcmp(stage, "round_trip"))
		TF_CHECK(num(line, "count") == N - 1);
	else
		TF_CHECK(num(line, "count") == total_responses());
}

static void check_counters(const char *err)
{
	const char *line = strstr(err, "{\"counters\":");

	assert_non_null(line);
	/* exactly the requests sent: not the refused one */
	TF_CHECK(num(line, "requests") == N);
	TF_CHECK(num(line, "request_takes") == N);
	TF_CHECK(num(line, "responds") == total_responses());
	TF_CHECK(num(line, "response_takes") == total_responses());
	TF_CHECK(num(line, "requests_evicted") == 0);
	TF_CHECK(num(line, "responses_no_request") == 0);
	TF_CHECK(num(line, "dropped_events") == 0);
}

static void check_output(char *out, const struct svc_pair *sp)
{
	struct tally *t = calloc(1, sizeof(*t));
	char *save = NULL, event[32];

	assert_non_null(t);
	for (char *line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, "\"by\":\"service\""))
			check_hist(line);
		else if (!tf_json_str(line, "event", event, sizeof(event)))
			fail_msg("unexpected line: %s", line);
		else if (!strcmp(event, "response"))
			check_response(line, sp, t);
		else if (!strcmp(event, "unanswered"))
			check_unanswered(line, sp, t);
		else if (!strcmp(event, "summary"))
			check_summary(line, t);
		else
			fail_msg("unexpected event: %s", line);
	}
	fprintf(stderr, "responses %u (round trips %u), unanswered %u\n", t->responses, t->round_trips, t->unanswered);
	assert_int_equal(t->round_trips, N - 1);
	assert_int_equal(t->responses, total_responses());
	assert_int_equal(t->unanswered, 1);
	assert_int_equal(t->summaries, 1);
	free(t);
}

static void test_tracer_follows_requests_to_their_responses(void **state)
{
	struct svc_pair sp = {.domain = broker.domain};
	struct tf_tracer tr;
	char *out, *err;

	(void)state;
	const char *argv[] = {"services", "--json", "--domain", broker.domain, "--no-pin", NULL};

	assert_int_equal(tf_tracer_start(&tr, broker.rundir, argv), 0);
	assert_int_equal(run_pair(&sp), 0);
	usleep(300000); /* the tracer reads its ring buffer every 50 ms */
	assert_int_equal(tf_tracer_stop(&tr), 0);
	out = tf_slurp(tr.out);
	err = tf_slurp(tr.err);
	assert_non_null(out);
	assert_non_null(err);
	check_output(out, &sp);
	check_counters(err);
	free(out);
	free(err);
	unlink(tr.out);
	unlink(tr.err);
}

/* jq's answer to filter over the export is want. */
static void check_jq(const char *json, long want, const char *filter)
{
	long got = tf_jq_count(filter, json);

	if (got != want)
		fail_msg("jq '%s': %ld, expected %ld", filter, got, want);
}

/* The same run recorded: the export draws each response's way as a flow
 * from the request's publish to the client's take, the server's work as
 * slices, and the request never answered as an instant. */
static void test_tracer_records_requests(void **state)
{
	struct svc_pair sp = {.domain = broker.domain};
	char rec[200], json[200], filter[160];
	struct tf_tracer tr;
	long total = (long)total_responses();

	(void)state;
	snprintf(rec, sizeof(rec), "%s/svc.takt-trace", broker.rundir);
	snprintf(json, sizeof(json), "%s/svc.json", broker.rundir);
	const char *argv[] = {"record", "-o", rec, "--domain", broker.domain, "--no-pin", NULL};
	const char *exp[] = {TAKT_TRACE_PATH, "export", rec, "--perfetto", json, NULL};

	assert_int_equal(tf_tracer_start(&tr, broker.rundir, argv), 0);
	assert_int_equal(run_pair(&sp), 0);
	usleep(300000);
	assert_int_equal(tf_tracer_stop(&tr), 0);
	assert_int_equal(tf_run(exp), 0);
	if (system("command -v jq >/dev/null 2>&1") != 0) {
		fprintf(stderr, "jq missing: the export was made, its contents not checked\n");
		return;
	}
	check_jq(json, total, ".otherData.responses");
	check_jq(json, 1, ".otherData.unanswered");
	check_jq(json, N, ".otherData.counters.requests");
	check_jq(json, total, "[.traceEvents[] | select(.cat == \"takt.request\" and .ph == \"s\")] | length");
	check_jq(json, total, "[.traceEvents[] | select(.cat == \"takt.request\" and .ph == \"f\" and .bp == \"e\")]"
			      " | length");
	check_jq(json, 1, "([.traceEvents[] | select(.cat == \"takt.request\" and .ph == \"s\") | .id] | sort) == "
			  "([.traceEvents[] | select(.cat == \"takt.request\" and .ph == \"f\") | .id] | sort)"
			  " | if . then 1 else 0 end");
	/* each flow starts at its request's publish */
	check_jq(json, 1, "[.traceEvents[] | select(.ph == \"X\" and .name == \"publish @/" SERVICE "/q\") | .ts] as $p"
			  " | [.traceEvents[] | select(.cat == \"takt.request\" and .ph == \"s\") | .ts as $t"
			  " | $p | any(. == $t)] | all | if . then 1 else 0 end");
	check_jq(json, N - 1, "[.traceEvents[] | select(.ph == \"X\" and (.name | startswith(\"serve " SERVICE " #\")))]"
			      " | length");
	check_jq(json, total, "[.traceEvents[] | select(.ph == \"X\" and (.name | startswith(\"respond " SERVICE
			      " #\")))] | length");
	snprintf(filter, sizeof(filter), "[.traceEvents[] | select(.ph == \"i\" and .name == \"never answered: %s #%d\")]"
		 " | length", SERVICE, N);
	check_jq(json, 1, filter);
	unlink(rec);
	unlink(json);
	unlink(tr.out);
	unlink(tr.err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tracer_follows_requests_to_their_responses),
		cmocka_unit_test(test_tracer_records_requests),
	};

	tf_require_root();
	return cmocka_run_group_tests_name("tracer_services", tests, setup, teardown);
}
