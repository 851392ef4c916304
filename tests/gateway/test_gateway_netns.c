/* test_gateway_netns.c - two hosts simulated on one machine: network
 * namespaces A and B joined by a veth pair, each with its own takt-broker
 * (its own runtime directory) and takt-gateway (Cyclone DDS bound to its
 * veth end). Publishers in one namespace reach subscribers in the other
 * through both gateways; everything is counted exactly. Needs root (ip
 * netns): without it every test says "skipped: needs root" and is
 * reported skipped, never passed. */
#include "gw_harness.h"

#include <dds/dds.h>
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sample.h"

static struct gw_net net;
static struct h_broker ba, bb;
static struct gw_proc ga, gb;
static bool have_root;

static pid_t spawn_a(int (*fn)(void *), void *arg) { return gw_spawn_in(net.ns_a, fn, arg); }
static pid_t spawn_b(int (*fn)(void *), void *arg) { return gw_spawn_in(net.ns_b, fn, arg); }

static int setup(void **state)
{
	char ini[1024];
	int r;

	(void)state;
	r = gw_net_up(&net);
	if (r == -EPERM)
		return 0; /* each test skips */
	if (r < 0)
		return -1;
	have_root = true;
	if (h_broker_start_opts(&ba, "gwns-a", NULL, &(struct h_broker_opts){.spawn = spawn_a}) < 0 ||
	    h_broker_start_opts(&bb, "gwns-b", NULL, &(struct h_broker_opts){.spawn = spawn_b}) < 0)
		return -1;
	/* reliable KEEP_ALL, lossless takt subscribers (the defaults), made explicit */
	snprintf(ini, sizeof(ini),
		 "origin = 4242\nstats_interval_ms = 50\n[dds]\ninterface = %s\n"
		 "[out ns/**]\nreliability = reliable\nhistory = all\nlossless = true\nlate_joiners = 16\n"
		 "[in back/**]\nreliability = reliable\nhistory = all\nlate_joiners = 16\n"
		 "[out lz/**]\nhistory = all\nlz4 = true\n",
		 net.veth_a);
	if (gw_start(&ga, &ba, "gwa", net.ns_a, ini) < 0)
		return -1;
	snprintf(ini, sizeof(ini),
		 "stats_interval_ms = 50\n[dds]\ninterface = %s\n"
		 "[in ns/**]\nreliability = reliable\nhistory = all\nlate_joiners = 16\n"
		 "[out back/**]\nreliability = reliable\nhistory = all\nlossless = true\nlate_joiners = 16\n"
		 "[in lz/**]\nhistory = all\nlz4 = true\n",
		 net.veth_b);
	return gw_start(&gb, &bb, "gwb", net.ns_b, ini) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	gw_forget(&ga);
	gw_forget(&gb);
	if (ba.pid)
		h_broker_stop(&ba);
	if (bb.pid)
		h_broker_stop(&bb);
	gw_net_down(&net);
	return 0;
}

#define NEED_ROOT()                                                                                \
	do {                                                                                       \
		if (!have_root) {                                                                  \
			print_message("skipped: needs root (ip netns, veth)\n");                  \
			skip();                                                                    \
		}                                                                                  \
	} while (0)

/* Both children must end with 0; on failure the gateways' logs are shown. */
static void wait_ok(pid_t *pids, int n)
{
	int bad = 0;

	for (int i = 0; i < n; i++)
		bad |= h_wait(pids[i], 180000) != 0;
	if (bad) {
		gw_dump_log(&ga);
		gw_dump_log(&gb);
	}
	assert_int_equal(bad, 0);
}

/* n samples of size bytes from one namespace's publisher to the other's
 * subscriber, after warm-ups that prove the path is matched. */
static void stream(const struct h_broker *from, const char *ns_from, const struct h_broker *to, const char *ns_to,
		   const char *topic, uint64_t n, size_t size)
{
	struct h_chan w;
	struct gw_pub_args pa = {.rundir = from->rundir, .domain = from->domain, .topic = topic, .type = "test.Stream",
				 .first = 1, .last = n, .size = size, .warmup = true, .chan = &w};
	struct gw_sub_args sa = {.rundir = to->rundir, .domain = to->domain, .topic = topic, .first = 1, .last = n,
				 .size = size, .chan = &w};
	pid_t pids[2];

	assert_int_equal(h_chan_open(&w), 0);
	pids[0] = gw_spawn_in(ns_to, gw_sub_child, &sa);
	pids[1] = gw_spawn_in(ns_from, gw_pub_child, &pa);
	wait_ok(pids, 2);
	h_chan_close(&w);
}

static void assert_clean(const struct gw_proc *g, const char *topic, const char *dir, uint64_t min_samples)
{
	struct gw_ctr c;

	assert_int_equal(gw_wait_count(g, topic, dir, min_samples, 10000), 0);
	assert_int_equal(gw_counters(g, topic, dir, &c), 0);
	assert_int_equal(c.drops, 0);
	assert_int_equal(c.write_errors, 0);
}

/* 10k samples A -> B, reliable: none lost, order kept, payloads intact. */
static void test_gateway_ns_a_to_b_10k(void **state)
{
	(void)state;
	NEED_ROOT();
	stream(&ba, net.ns_a, &bb, net.ns_b, "ns/stream", 10000, 64);
	assert_clean(&ga, "ns/stream", "out", 10000);
	assert_int_equal(gw_wait_count(&gb, "ns/stream", "in", 10000, 10000), 0);
	assert_clean(&gb, "ns/stream", "in", 10000);
}

/* And the reverse direction. */
static void test_gateway_ns_b_to_a_10k(void **state)
{
	(void)state;
	NEED_ROOT();
	stream(&bb, net.ns_b, &ba, net.ns_a, "back/stream", 10000, 64);
	assert_clean(&gb, "back/stream", "out", 10000);
	assert_clean(&ga, "back/stream", "in", 10000);
}

/* A subscriber that joins in B after the publisher in A published gets
 * the history: A's publisher keeps 8, gateway A asks for up to 16 and
 * keeps them for DDS late joiners (transient-local), gateway B publishes
 * them with a history of 16; the late subscriber asks for 8: 13..20. */
static void test_gateway_ns_late_joiner_gets_history(void **state)
{
	struct h_chan done;
	struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "ns/late", .type = "test.Late",
				 .first = 1, .last = 20, .size = 64, .history = 8, .done = &done};
	struct gw_sub_args sa = {.rundir = bb.rundir, .domain = bb.domain, .topic = "ns/late", .first = 13,
				 .last = 20, .size = 64, .history = 8};
	struct gw_ctr out = {0}, in = {0};
	pid_t pub, sub;
	int stable = 0;

	(void)state;
	NEED_ROOT();
	assert_int_equal(h_chan_open(&done), 0);
	pub = gw_spawn_in(net.ns_a, gw_pub_child, &pa);
	/* until gateway B has what gateway A sent (A's 20, or A's history if
	 * it subscribed late; B's reader gets at most 16 of those) */
	for (int i = 0; i < 400 && stable < 3; i++) {
		uint64_t had = in.samples;

		usleep(50000);
		if (gw_counters(&ga, "ns/late", "out", &out) || gw_counters(&gb, "ns/late", "in", &in))
			continue;
		stable = out.samples >= 8 && in.samples >= (out.samples < 16 ? out.samples : 16) &&
				 in.samples == had ? stable + 1 : 0;
	}
	assert_int_equal(stable, 3);
	sub = gw_spawn_in(net.ns_b, gw_sub_child, &sa);
	assert_int_equal(h_wait(sub, 60000), 0);
	assert_int_equal(h_chan_send(&done, "d", 1), 0);
	assert_int_equal(h_wait(pub, 60000), 0);
	h_chan_close(&done);
	assert_clean(&gb, "ns/late", "in", 8);
}

/* The paused streams of the restart tests: opens the channels (w: warm-up,
 * paused and step: the publisher's pauses, extra: the caller's), starts
 * the subscriber in B and the publisher in A, and returns at the
 * publisher's first pause. */
struct paused {
	struct h_chan w, paused, step, extra;
	pid_t pids[2];
};

static void paused_start(struct paused *r, struct gw_pub_args *pa, struct gw_sub_args *sa)
{
	char c;

	assert_int_equal(h_chan_open(&r->w), 0);
	assert_int_equal(h_chan_open(&r->paused), 0);
	assert_int_equal(h_chan_open(&r->step), 0);
	assert_int_equal(h_chan_open(&r->extra), 0);
	pa->chan = sa->chan = &r->w;
	pa->paused = &r->paused;
	pa->step = &r->step;
	r->pids[0] = gw_spawn_in(net.ns_b, gw_sub_child, sa);
	r->pids[1] = gw_spawn_in(net.ns_a, gw_pub_child, pa);
	assert_int_equal(h_chan_recv(&r->paused, &c, 1, GW_WAIT_MS), 0);
}

/* Lets the publisher go on; waits for its next pause unless last. */
static void paused_step(struct paused *r, bool last)
{
	char c;

	assert_int_equal(h_chan_send(&r->step, "s", 1), 0);
	if (!last)
		assert_int_equal(h_chan_recv(&r->paused, &c, 1, GW_WAIT_MS), 0);
}

static void paused_end(struct paused *r)
{
	wait_ok(r->pids, 2);
	h_chan_close(&r->w);
	h_chan_close(&r->paused);
	h_chan_close(&r->step);
	h_chan_close(&r->extra);
}

/* Gateway A is killed (SIGKILL) after 1000 samples arrived; 10 more are
 * published while it is down; restarted, it resumes: it subscribes again
 * with history 16 (995..1010), gateway B drops the 6 it had and passes
 * the 10 new, then 990 more follow. B's subscriber sees 1..2000 exactly. */
static void test_gateway_ns_killed_gateway_resumes(void **state)
{
	struct paused r;
	struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "ns/restart", .first = 1,
				 .last = 2000, .size = 64, .history = 16, .warmup = true, .pause_at = {1000, 1010}};
	struct gw_sub_args sa = {.rundir = bb.rundir, .domain = bb.domain, .topic = "ns/restart", .first = 1,
				 .last = 2000, .size = 64, .notify_at = 1000, .progress = &r.extra};
	struct gw_ctr before, after;
	char c;

	(void)state;
	NEED_ROOT();
	paused_start(&r, &pa, &sa);
	assert_int_equal(h_chan_recv(&r.extra, &c, 1, GW_WAIT_MS), 0); /* 1..1000 arrived */
	gw_stop(&ga, true);
	paused_step(&r, false); /* 1001..1010 sent, nobody bridging */
	assert_int_equal(gw_wait_count(&gb, "ns/restart", "in", 1000, 10000), 0);
	assert_int_equal(gw_counters(&gb, "ns/restart", "in", &before), 0);
	assert_int_equal(gw_restart(&ga), 0);
	assert_int_equal(gw_wait_count(&gb, "ns/restart", "in", before.samples + before.duplicates + 16, 30000), 0);
	assert_int_equal(gw_counters(&gb, "ns/restart", "in", &after), 0);
	assert_int_equal(after.duplicates - before.duplicates, 6);
	assert_int_equal(after.samples - before.samples, 10);
	paused_step(&r, true);
	paused_end(&r);
	assert_clean(&ga, "ns/restart", "out", 990);
}

/* Gateway B, the importing one, is killed (SIGKILL) after 1000 samples
 * arrived and restarted: its new DDS reader is served gateway A's
 * transient-local history again (the last 16: 985..1000), which it had
 * published into takt already. It remembers that across its restart
 * (seen.c) and drops all 16 as duplicates: B's subscriber, which stayed
 * up, sees 1..2000 exactly once (before, it saw 985..1000 twice). */
static void test_gateway_ns_killed_importer_publishes_nothing_twice(void **state)
{
	struct paused r;
	struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "ns/import", .first = 1,
				 .last = 2000, .size = 64, .warmup = true, .pause_at = {1000}};
	struct gw_sub_args sa = {.rundir = bb.rundir, .domain = bb.domain, .topic = "ns/import", .first = 1,
				 .last = 2000, .size = 64, .notify_at = 1000, .progress = &r.extra};
	struct gw_ctr c = {0};
	uint64_t dups;
	char x;

	(void)state;
	NEED_ROOT();
	paused_start(&r, &pa, &sa);
	assert_int_equal(h_chan_recv(&r.extra, &x, 1, GW_WAIT_MS), 0); /* 1..1000 arrived */
	gw_stop(&gb, true);
	assert_int_equal(gw_restart(&gb), 0);
	/* the history, all of it recognised: until its count is stable */
	assert_int_equal(gw_wait_count(&gb, "ns/import", "in", 16, 30000), 0);
	for (int i = 0, stable = 0; stable < 5; i++) {
		uint64_t had = c.duplicates;

		assert_true(i < 400); /* 20 s */
		usleep(50000);
		assert_int_equal(gw_counters(&gb, "ns/import", "in", &c), 0);
		stable = c.duplicates == had ? stable + 1 : 0;
	}
	print_message("history served to the restarted importer: %llu\n", (unsigned long long)c.duplicates);
	assert_true(c.duplicates >= 16);
	assert_int_equal(c.samples, 0);
	dups = c.duplicates;
	paused_step(&r, true); /* 1001..2000 */
	paused_end(&r);
	assert_int_equal(gw_wait_count(&gb, "ns/import", "in", dups + 1000, 10000), 0);
	assert_int_equal(gw_counters(&gb, "ns/import", "in", &c), 0);
	assert_int_equal(c.samples, 1000);
	assert_int_equal(c.duplicates, dups);
	assert_int_equal(c.drops, 0);
}

/* An LZ4 topic arrives intact and its counters show the compression. */
static void test_gateway_ns_lz4_counts_bytes(void **state)
{
	struct gw_ctr out, in;

	(void)state;
	NEED_ROOT();
	stream(&ba, net.ns_a, &bb, net.ns_b, "lz/x", 200, 4096);
	assert_int_equal(gw_wait_count(&ga, "lz/x", "out", 200, 10000), 0);
	assert_int_equal(gw_counters(&ga, "lz/x", "out", &out), 0);
	assert_true(out.samples >= 200);
	assert_int_equal(out.bytes, out.samples * 4096);
	assert_true(out.wire_bytes * 4 < out.bytes);
	assert_int_equal(gw_wait_count(&gb, "lz/x", "in", 200, 10000), 0);
	assert_int_equal(gw_counters(&gb, "lz/x", "in", &in), 0);
	assert_int_equal(in.bytes, in.samples * 4096);
	assert_true(in.wire_bytes * 4 < in.bytes);
	assert_int_equal(in.drops, 0);
}

/* A plain Cyclone DDS reader in B (the C idlc made of sample.idl, no
 * takt) reads what gateway A writes: numbers 1..100 in order after the
 * warm-ups, the takt seq one apart, type name, origin, sizes. */
struct plain_args {
	struct h_chan *w;
	uint32_t origin;
};

static int plain_reader(void *a)
{
	struct plain_args *pa = a;
	char conf[256];
	dds_entity_t d, p, t, r, ws;
	dds_qos_t *q = dds_create_qos();
	uint64_t next = 1, last_seq = 0;
	bool warm = false;

	snprintf(conf, sizeof(conf), "<CycloneDDS><Domain id=\"any\"><General><Interfaces><NetworkInterface "
		 "name=\"%s\"/></Interfaces></General></Domain></CycloneDDS>", net.veth_b);
	d = dds_create_domain(0, conf);
	p = dds_create_participant(0, NULL, NULL);
	H_CHECK(d > 0 && p > 0);
	t = dds_create_topic(p, &takt_gateway_Batch_desc, "takt/ns/plain", NULL, NULL);
	dds_qset_reliability(q, DDS_RELIABILITY_RELIABLE, DDS_SECS(10));
	dds_qset_history(q, DDS_HISTORY_KEEP_ALL, 1);
	r = dds_create_reader(p, t, q, NULL);
	H_CHECK(t > 0 && r > 0);
	ws = dds_create_waitset(p);
	H_CHECK(dds_waitset_attach(ws, dds_create_readcondition(r, DDS_ANY_STATE), 0) == 0);
	while (next <= 100) {
		void *buf[1] = {NULL};
		dds_sample_info_t si;

		H_CHECK(dds_waitset_wait(ws, NULL, 0, DDS_SECS(30)) > 0);
		while (next <= 100 && dds_take(r, buf, &si, 1, 1) == 1) {
			const takt_gateway_Batch *b = buf[0];

			if (si.valid_data) {
				H_CHECK(!strcmp(b->type_name, "test.Plain") && b->origin == pa->origin);
				H_CHECK(b->samples._length >= 1);
				for (uint32_t i = 0; i < b->samples._length; i++) {
					const takt_gateway_Sample *x = &b->samples._buffer[i];
					uint64_t n = gw_check(x->payload._buffer, x->payload._length);

					H_CHECK(x->encoding == 0 && x->size == 64 && x->payload._length == 64);
					H_CHECK(x->publisher_id != 0 && (!last_seq || x->seq == last_seq + 1));
					H_CHECK(n == 0 || n == next);
					if (n == 0 && !warm) {
						warm = true;
						H_CHECK(h_chan_send(pa->w, "w", 1) == 0);
					}
					next += n != 0;
					last_seq = x->seq;
				}
			}
			dds_return_loan(r, buf, 1);
			buf[0] = NULL;
		}
	}
	dds_delete(DDS_CYCLONEDDS_HANDLE);
	return 0;
}

static void test_gateway_ns_plain_dds_reader(void **state)
{
	struct h_chan w;
	struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "ns/plain", .type = "test.Plain",
				 .first = 1, .last = 100, .size = 64, .warmup = true, .chan = &w};
	struct plain_args ra = {.w = &w};
	pid_t pids[2];

	(void)state;
	NEED_ROOT();
	ra.origin = 4242; /* gateway A's [gateway] origin */
	assert_int_equal(h_chan_open(&w), 0);
	pids[0] = gw_spawn_in(net.ns_b, plain_reader, &ra);
	pids[1] = gw_spawn_in(net.ns_a, gw_pub_child, &pa);
	wait_ok(pids, 2);
	h_chan_close(&w);
}

/* Broker A is killed (SIGKILL) mid-stream and restarted: the gateway's
 * node is adopted by the new broker, bridging goes on without a gap, and
 * a topic opened after the restart is found (new epoch and generation)
 * and bridged too. */
static void test_gateway_ns_survives_broker_restart(void **state)
{
	struct paused r;
	struct gw_pub_args pa = {.rundir = ba.rundir, .domain = ba.domain, .topic = "ns/brk", .first = 1,
				 .last = 1500, .size = 64, .history = 16, .warmup = true, .pause_at = {500, 1000}};
	struct gw_sub_args sa = {.rundir = bb.rundir, .domain = bb.domain, .topic = "ns/brk", .first = 1,
				 .last = 1500, .size = 64};

	(void)state;
	NEED_ROOT();
	paused_start(&r, &pa, &sa);
	kill(ba.pid, SIGKILL);
	assert_true(h_wait(ba.pid, 10000) != 0);
	paused_step(&r, false); /* 501..1000 without a broker */
	setenv("TAKT_RUNTIME_DIR", ba.rundir, 1);
	assert_int_equal(h_broker_restart_opts(&ba, &(struct h_broker_opts){.spawn = spawn_a}), 0);
	paused_step(&r, true);
	paused_end(&r);
	stream(&ba, net.ns_a, &bb, net.ns_b, "ns/after", 10, 64); /* a topic new to the restarted broker */
	assert_clean(&ga, "ns/brk", "out", 1500);
	assert_clean(&ga, "ns/after", "out", 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gateway_ns_a_to_b_10k),
		cmocka_unit_test(test_gateway_ns_b_to_a_10k),
		cmocka_unit_test(test_gateway_ns_late_joiner_gets_history),
		cmocka_unit_test(test_gateway_ns_lz4_counts_bytes),
		cmocka_unit_test(test_gateway_ns_plain_dds_reader),
		cmocka_unit_test(test_gateway_ns_killed_gateway_resumes),
		cmocka_unit_test(test_gateway_ns_killed_importer_publishes_nothing_twice),
		cmocka_unit_test(test_gateway_ns_survives_broker_restart),
	};

	int rc = cmocka_run_group_tests_name("gateway.netns", tests, setup, teardown);

	/* every case skipped (cmocka's skip, each says why): CTest's skip too */
	return rc ? rc : have_root ? 0 : 77;
}
