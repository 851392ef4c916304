/* test_trace_record.c - a recording of a real publisher -> subscriber
 * executor run is an LZ4 frame, and its export is valid Chrome trace-event
 * JSON with one flow (publish -> callback) per sample.
 *
 * JSON validity and the counts are checked with jq (python3 -m json.tool
 * when jq is missing: validity only).
 */
#include "tracefix.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define N 100

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "trrec", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

static void check_lz4_magic(const char *path)
{
	unsigned char m[4] = {0};
	FILE *f = fopen(path, "rb");

	assert_non_null(f);
	assert_int_equal(fread(m, 1, 4, f), 4);
	fclose(f);
	/* LZ4 frame magic 0x184D2204, little-endian */
	assert_true(m[0] == 0x04 && m[1] == 0x22 && m[2] == 0x4d && m[3] == 0x18);
}

static void check_json(const char *json)
{
	char cmd[512];

	if (system("command -v jq >/dev/null 2>&1") != 0) {
		snprintf(cmd, sizeof(cmd), "python3 -m json.tool '%s' >/dev/null", json);
		assert_int_equal(system(cmd), 0);
		fprintf(stderr, "jq missing: checked validity only\n");
		return;
	}
	assert_int_equal(tf_jq_count("if (.traceEvents | length) > 0 then 1 else 0 end", json), 1);
	assert_int_equal(tf_jq_count("[.traceEvents[] | select(.ph == \"s\")] | length", json), N);
	assert_int_equal(tf_jq_count("[.traceEvents[] | select(.ph == \"f\" and .bp == \"e\")] | length", json), N);
	assert_int_equal(tf_jq_count("[.traceEvents[] | select(.ph == \"X\" and (.name | startswith(\"publish \")))] "
				  "| length", json), N);
	assert_int_equal(tf_jq_count("[.traceEvents[] | select(.ph == \"X\" and (.name | startswith(\"take \")))] "
				  "| length", json), N);
	assert_true(tf_jq_count("[.traceEvents[] | select(.ph == \"X\" and .name == \"task 0: consume\")] | length",
			     json) >= 1);
	/* every flow that starts also ends, with the same id */
	assert_int_equal(tf_jq_count("([.traceEvents[] | select(.ph == \"s\") | .id] | sort) == "
				  "([.traceEvents[] | select(.ph == \"f\") | .id] | sort) | if . then 1 else 0 end",
				  json), 1);
	assert_int_equal(tf_jq_count(".otherData.counters.publish", json), N);
}

static void test_tracer_recording_exports_flows(void **state)
{
	struct tf_pubsub ps = {.domain = broker.domain, .topic = "trace/rec", .count = N, .gap_us = 2000};
	char rec[200], json[200], *err;
	struct tf_tracer tr;

	(void)state;
	snprintf(rec, sizeof(rec), "%s/run.takt-trace", broker.rundir);
	snprintf(json, sizeof(json), "%s/run.json", broker.rundir);
	const char *argv[] = {"record", "-o", rec, "--domain", broker.domain, "--no-pin", NULL};
	const char *exp[] = {TAKT_TRACE_PATH, "export", rec, "--perfetto", json, NULL};

	assert_int_equal(tf_tracer_start(&tr, broker.rundir, argv), 0);
	assert_int_equal(tf_pubsub_start(&ps), 0);
	assert_int_equal(tf_pubsub_run(&ps), 0);
	assert_int_equal(ps.received, N);
	assert_int_equal(tf_pubsub_stop(&ps), 0); /* first: see test_trace_wakeups.c */
	usleep(300000);
	assert_int_equal(tf_tracer_stop(&tr), 0);
	err = tf_slurp(tr.err);
	assert_non_null(err);
	assert_non_null(strstr(err, "recorded "));
	free(err);

	check_lz4_magic(rec);
	assert_int_equal(tf_run(exp), 0);
	check_json(json);
	unlink(rec);
	unlink(json);
	unlink(tr.out);
	unlink(tr.err);
}

/* A file that is not a recording is refused with a message, not a crash. */
static void test_tracer_export_refuses_garbage(void **state)
{
	char bad[200], json[200];
	FILE *f;

	(void)state;
	snprintf(bad, sizeof(bad), "%s/bad.takt-trace", broker.rundir);
	snprintf(json, sizeof(json), "%s/bad.json", broker.rundir);
	const char *exp[] = {TAKT_TRACE_PATH, "export", bad, "--perfetto", json, NULL};

	f = fopen(bad, "w");
	assert_non_null(f);
	fputs("not an lz4 frame at all", f);
	fclose(f);
	assert_int_equal(tf_run(exp), 1);
	unlink(bad);
	unlink(json);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tracer_recording_exports_flows),
		cmocka_unit_test(test_tracer_export_refuses_garbage),
	};

	tf_require_root();
	return cmocka_run_group_tests_name("tracer_record", tests, setup, teardown);
}
