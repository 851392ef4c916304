/* test_gateway.c - takt-gateway on one host (no root needed): its
 * configuration is refused with file:line: reason; the IDL compiled by
 * idlc round-trips through plain Cyclone DDS; two gateways that bridge
 * the same topic both ways between two takt domains do not loop. */
#include "gw_harness.h"

#include <dds/dds.h>
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sample.h"

/* A DDS domain of our own (0..232), so parallel runs do not meet. */
static uint32_t dds_domain(void)
{
	return 100 + (uint32_t)getpid() % 100;
}

/* Runs takt-gateway --check-config on ini: its exit status, stderr in err. */
static int check_config(const char *ini, char *err, size_t size)
{
	char path[] = "/tmp/takt-gw-conf-XXXXXX", cmd[256];
	int fd = mkstemp(path), rc;
	FILE *f;
	size_t n;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, ini, strlen(ini)), (ssize_t)strlen(ini));
	close(fd);
	snprintf(cmd, sizeof(cmd), "%s --check-config %s 2>&1", TAKT_GATEWAY_PATH, path);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(err, 1, size - 1, f);
	err[n] = 0;
	rc = pclose(f);
	unlink(path);
	/* the message names the file */
	assert_non_null(strstr(err, path));
	return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_gateway_config_refused_with_file_line_reason(void **state)
{
	static const struct {
		const char *ini, *want;
	} bad[] = {
		{"[out]\n", ":1: [out]: unknown section"},
		{"[gateway]\nname = gw\n[out a/*]\nreliability = maybe\n", ":4: reliability = 'maybe': reliable or best-effort"},
		{"[gateway]\nfoo = 1\n[out a]\n", ":2: [gateway] foo: unknown key"},
		{"[out a b]\n", ":1: [out a b]: unknown section"},
		{"[out a?]\n", ":1: [out a?]: 'a?' is not a topic pattern"},
		{"[in x/**]\nreliability = best-effort\nlate_joiners = 4\n", ":1: late_joiners needs reliability = reliable"},
		{"[out x]\nhistory = 4\nlate_joiners = 8\n", ":1: late_joiners = 8 exceeds history = 4"},
		{"[dds]\ndomain = 300\n[out a]\n", ":2: [dds] domain = '300': a DDS domain id in 0..232"},
		{"[out a]\nmax_payload = 0\n", ":2: max_payload = '0'"},
		{"[out a]\n  history = 4\n", ":2: indented line"},
		{"[out a]\nlz4 = yes\n", ":2: lz4 = 'yes': true or false"},
		{"[out a]\nspeed = 9\n", ":2: [out a] speed: unknown key"},
		{"[gateway]\norigin = 0\n[out a]\n", ":2: [gateway] origin = '0'"},
		{"[gateway]\nname = gw\n", "nothing to bridge"},
		{"[out a]\nlate_joiners = 4\nbatch = 4K\n", ":1: batch needs late_joiners = 0"},
		{"[in a]\nbatch = 4K\n", ":2: [in a] batch: the exporting side batches"},
		{"[out a]\nbatch = lots\n", ":2: batch = 'lots': bytes in 0..1G"},
	};
	char err[1024];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = check_config(bad[i].ini, err, sizeof(err));

		if (rc != 2 || !strstr(err, bad[i].want))
			fprintf(stderr, "config %zu: exit %d, '%s', wanted '%s'\n", i, rc, err, bad[i].want);
		assert_int_equal(rc, 2);
		assert_non_null(strstr(err, bad[i].want));
	}
	assert_int_equal(check_config("[gateway]\nname = gw-1\norigin = 7\n[dds]\ndomain = 3\ninterface = eth0\n"
				      "[out imu/**]\nreliability = best-effort\nhistory = 1\nlz4 = true\nbatch = 0\n"
				      "[in cmd/*]\nlate_joiners = 4\nmax_payload = 1M\n", err, sizeof(err)), 0);
	assert_non_null(strstr(err, "ok, 2 rules"));
}

/* A sample read back is the one written, its payload filled with n. */
static void assert_sample(const takt_gateway_Sample *got, const takt_gateway_Sample *want, uint64_t n)
{
	assert_int_equal(got->publisher_id, want->publisher_id);
	assert_int_equal(got->seq, want->seq);
	assert_int_equal(got->publish_ns, want->publish_ns);
	assert_int_equal(got->size, want->size);
	assert_int_equal(got->encoding, want->encoding);
	assert_int_equal(got->payload._length, want->payload._length);
	assert_int_equal(gw_check(got->payload._buffer, got->payload._length), n);
}

/* The toolchain: idlc's C of sample.idl, a batch of two samples written
 * and read through plain Cyclone DDS between two participants, every
 * field intact. */
static void test_gateway_idl_roundtrip_plain_dds(void **state)
{
	uint8_t data[300], more[20];
	takt_gateway_Sample e[2] = {
		{.publisher_id = 42, .seq = 7, .publish_ns = 123456789, .size = 300, .encoding = 0,
		 .payload = {._length = 300, ._maximum = 300, ._buffer = data}},
		{.publisher_id = 43, .seq = 1, .publish_ns = 123456790, .size = 1000, .encoding = 1,
		 .payload = {._length = 20, ._maximum = 20, ._buffer = more}},
	};
	takt_gateway_Batch x = {.origin = 9, .type_name = "demo.Thing", .samples = {._length = 2, ._maximum = 2, ._buffer = e}};
	dds_entity_t pw = dds_create_participant(dds_domain(), NULL, NULL);
	dds_entity_t pr = dds_create_participant(dds_domain(), NULL, NULL);
	dds_entity_t tw, tr, w, r, ws;
	dds_qos_t *q = dds_create_qos();
	void *buf[1] = {NULL};
	dds_sample_info_t si;
	int n = 0;

	(void)state;
	gw_fill(data, sizeof(data), 77);
	gw_fill(more, sizeof(more), 78);
	assert_true(pw > 0 && pr > 0);
	dds_qset_reliability(q, DDS_RELIABILITY_RELIABLE, DDS_SECS(1));
	dds_qset_durability(q, DDS_DURABILITY_TRANSIENT_LOCAL);
	tw = dds_create_topic(pw, &takt_gateway_Batch_desc, "takt/idl/test", NULL, NULL);
	tr = dds_create_topic(pr, &takt_gateway_Batch_desc, "takt/idl/test", NULL, NULL);
	w = dds_create_writer(pw, tw, q, NULL);
	assert_int_equal(dds_write(w, &x), 0); /* before the reader: transient-local keeps it */
	r = dds_create_reader(pr, tr, q, NULL);
	assert_true(w > 0 && r > 0);
	ws = dds_create_waitset(pr);
	assert_int_equal(dds_waitset_attach(ws, dds_create_readcondition(r, DDS_ANY_STATE), 0), 0);
	for (int i = 0; i < 100 && n <= 0; i++) /* 10 s at most */
		if (dds_waitset_wait(ws, NULL, 0, DDS_MSECS(100)) > 0)
			n = dds_take(r, buf, &si, 1, 1);
	assert_int_equal(n, 1);
	{
		const takt_gateway_Batch *y = buf[0];
		const takt_gateway_Sample *a = &y->samples._buffer[0], *b = &y->samples._buffer[1];

		assert_true(si.valid_data);
		assert_int_equal(y->origin, 9);
		assert_string_equal(y->type_name, "demo.Thing");
		assert_int_equal(y->samples._length, 2);
		assert_sample(a, &e[0], 77);
		assert_sample(b, &e[1], 78);
	}
	dds_return_loan(r, buf, 1);
	dds_delete_qos(q);
	dds_delete(pw);
	dds_delete(pr);
}

/* Two domains, two gateways, each bridging the pattern loop/(anything) out and in: what A
 * publishes reaches B once; gateway B never sends it back (its origin
 * tag), so gateway A imports nothing. */
static void test_gateway_two_ways_do_not_loop(void **state)
{
	struct h_broker ba, bb;
	struct gw_proc ga, gb;
	struct gw_ctr c;
	char ini[256];

	(void)state;
	snprintf(ini, sizeof(ini), "stats_interval_ms = 100\n[dds]\ndomain = %u\n[out loop/**]\nhistory = all\n[in loop/**]\nhistory = all\n",
		 dds_domain());
	assert_int_equal(h_broker_start(&ba, "gwloop-a", NULL), 0);
	assert_int_equal(h_broker_start(&bb, "gwloop-b", NULL), 0);
	assert_int_equal(gw_start(&ga, &ba, "loopa", NULL, ini), 0);
	assert_int_equal(gw_start(&gb, &bb, "loopb", NULL, ini), 0);
	for (int round = 0; round < 2; round++) { /* the second once B's outbound subscribed */
		struct h_chan w;
		struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "loop/x", .first = 1,
					 .last = 100, .size = 64, .warmup = true, .chan = &w};
		struct gw_sub_args sa = {.rundir = bb.rundir, .domain = bb.domain, .topic = "loop/x", .first = 1,
					 .last = 100, .size = 64, .chan = &w};
		pid_t sub, pub;

		assert_int_equal(h_chan_open(&w), 0);
		sub = h_spawn(gw_sub_child, &sa);
		pub = h_spawn(gw_pub_child, &pa);
		assert_int_equal(h_wait(sub, 60000), 0);
		assert_int_equal(h_wait(pub, 60000), 0);
		h_chan_close(&w);
		for (int i = 0; i < 200 && gw_counters(&gb, "loop/x", "out", &c) < 0; i++)
			usleep(50000);
	}
	/* gateway B's outbound saw the second round's 100 and skipped them */
	for (int i = 0; i < 200 && (gw_counters(&gb, "loop/x", "out", &c) < 0 || c.skipped < 100); i++)
		usleep(50000);
	assert_true(c.skipped >= 100);
	assert_int_equal(c.samples, 0);
	/* and gateway A imports nothing, within a second */
	assert_int_equal(gw_wait_count(&ga, "loop/x", "in", 1, 1000), -ETIMEDOUT);
	assert_int_equal(gw_counters(&ga, "loop/x", "out", &c), 0);
	assert_int_equal(c.skipped, 0);
	/* takt topic info shows the gateway's counters of the topic */
	{
		char out[8192];
		struct json_object *o, *g;

		setenv("TAKT_RUNTIME_DIR", ba.rundir, 1);
		assert_int_equal(h_takt(ba.domain, out, sizeof(out), "topic info loop/x --json"), 0);
		o = json_tokener_parse(out);
		g = json_object_object_get(o, "gateways");
		assert_int_equal(json_object_array_length(g), 2); /* gateway A's out and in */
		for (size_t i = 0; i < 2; i++) {
			struct json_object *b = json_object_array_get_idx(g, i);
			bool is_out = !strcmp(json_object_get_string(json_object_object_get(b, "direction")), "out");

			assert_string_equal(json_object_get_string(json_object_object_get(b, "gateway")), "loopa");
			assert_true(is_out ? json_object_get_int64(json_object_object_get(b, "samples")) >= 200
					   : json_object_get_int64(json_object_object_get(b, "samples")) == 0);
		}
		json_object_put(o);
		assert_int_equal(h_takt(ba.domain, out, sizeof(out), "topic info loop/x"), 0);
		assert_non_null(strstr(out, "bridged out by takt-gateway 'loopa'"));
	}
	assert_int_equal(gw_stop(&ga, false), 0); /* SIGTERM: a clean stop */
	assert_int_equal(gw_stop(&gb, false), 0);
	gw_forget(&ga);
	gw_forget(&gb);
	h_broker_stop(&ba);
	h_broker_stop(&bb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gateway_config_refused_with_file_line_reason),
		cmocka_unit_test(test_gateway_idl_roundtrip_plain_dds),
		cmocka_unit_test(test_gateway_two_ways_do_not_loop),
	};

	return cmocka_run_group_tests_name("gateway", tests, NULL, NULL);
}
