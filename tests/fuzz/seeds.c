/* seeds.c - writes takt-fuzz-broker's seed corpus: conversations a real
 * node has with the broker, and the classic mistakes, built from
 * proto.h's structures so they stay valid as the protocol changes.
 *
 *	takt-fuzz-seeds DIR    writes DIR/seed-<name> for each conversation
 *
 * The record format is fuzz_broker.c's: u8 ctl | u16 len | packet.
 */
#include "proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <takt/ipc.h>

enum { PEER1 = 1, HANGUP = 2, DEAF = 4, ACK = 8 }; /* fuzz_broker.c's CTL_* */

static unsigned char out[8192];
static size_t out_len;
static uint32_t req_id;

static void rec(unsigned ctl, const void *msg, size_t len)
{
	if (out_len + 3 + len > sizeof(out)) {
		fprintf(stderr, "takt-fuzz-seeds: a seed outgrew %zu bytes\n", sizeof(out));
		exit(1);
	}
	out[out_len++] = (unsigned char)ctl;
	out[out_len++] = (unsigned char)(len & 0xff);
	out[out_len++] = (unsigned char)(len >> 8);
	memcpy(out + out_len, msg, len);
	out_len += len;
}

static void hdr(struct proto_hdr *h, uint16_t type, size_t size)
{
	proto_hdr_init(h, type, (uint32_t)size, ++req_id);
}

static void hello(unsigned ctl, const char *name)
{
	struct msg_hello m = {.abi_version = TAKT_ABI_VERSION};

	hdr(&m.hdr, MSG_HELLO, sizeof(m));
	snprintf(m.name, sizeof(m.name), "%s", name);
	rec(ctl, &m, sizeof(m));
}

/* type "T|R": type T, and R as a service's response type (reply_type) */
static void put_types(char *type_name, char *reply_type, const char *type)
{
	const char *bar = strchr(type, '|');

	snprintf(type_name, TAKT_NAME_MAX, "%.*s", bar ? (int)(bar - type) : (int)strlen(type), type);
	snprintf(reply_type, TAKT_NAME_MAX, "%s", bar ? bar + 1 : "");
}

static void pub_open(unsigned ctl, const char *topic, const char *type, uint64_t max_payload, uint32_t history)
{
	struct msg_pub_open m = {.max_payload = max_payload, .history = history};

	hdr(&m.hdr, MSG_PUB_OPEN, sizeof(m));
	snprintf(m.topic, sizeof(m.topic), "%s", topic);
	put_types(m.type_name, m.reply_type, type);
	rec(ctl, &m, sizeof(m));
}

static void sub_open(unsigned ctl, const char *topic, const char *type, uint32_t depth, uint32_t overflow,
		     uint32_t history)
{
	struct msg_sub_open m = {.queue_depth = depth, .overflow = overflow, .history = history};

	hdr(&m.hdr, MSG_SUB_OPEN, sizeof(m));
	snprintf(m.topic, sizeof(m.topic), "%s", topic);
	put_types(m.type_name, m.reply_type, type);
	rec(ctl, &m, sizeof(m));
}

/* PUB_CONNECT, SUB_CONNECT, the closes, EVENT_LISTEN, POOLS */
static void index_msg(unsigned ctl, uint16_t type, uint32_t index, uint32_t reserved)
{
	struct msg_index m = {.index = index, .reserved = reserved};

	hdr(&m.hdr, type, sizeof(m));
	rec(ctl, &m, sizeof(m));
}

static void empty_msg(unsigned ctl, uint16_t type)
{
	struct msg_empty m;

	hdr(&m.hdr, type, sizeof(m));
	rec(ctl, &m, sizeof(m));
}

static void event_open(unsigned ctl, const char *name)
{
	struct msg_event_open m = {0};

	hdr(&m.hdr, MSG_EVENT_OPEN, sizeof(m));
	snprintf(m.name, sizeof(m.name), "%s", name);
	rec(ctl, &m, sizeof(m));
}

static void conn_ready(unsigned ctl, uint32_t conn, uint32_t incarnation)
{
	struct msg_conn_ready m = {.conn = conn, .incarnation = incarnation};

	hdr(&m.hdr, MSG_CONN_READY, sizeof(m));
	rec(ctl, &m, sizeof(m));
}

static void pool_done(unsigned ctl, uint64_t publisher_id, uint32_t sub)
{
	struct msg_pool_done m = {.publisher_id = publisher_id, .sub = sub};

	hdr(&m.hdr, MSG_POOL_DONE, sizeof(m));
	rec(ctl, &m, sizeof(m));
}

static void ev_ready(unsigned ctl, uint32_t event, uint32_t listener, uint32_t inc)
{
	struct msg_push_ev m = {.event = event, .listener = listener, .inc = inc};

	hdr(&m.hdr, MSG_EV_READY, sizeof(m));
	rec(ctl, &m, sizeof(m));
}

/* A publisher and its subscriber, each in its own process (peer 0, 1),
 * nodes that confirm what they are pushed when ack. */
static void pubsub(bool ack)
{
	unsigned a = ack ? ACK : 0;

	hello(0, "pub");
	hello(PEER1, "sub");
	pub_open(a, "imu", "Imu", 64, 2);
	index_msg(a, MSG_PUB_CONNECT, 0, 0);
	sub_open(PEER1 | a, "imu", "Imu", 4, 0, 1);
	index_msg(PEER1 | a, MSG_SUB_CONNECT, 0, 0);
	empty_msg(a, MSG_STATUS);
	index_msg(a, MSG_POOLS, 0, 0);
	index_msg(a, MSG_CONNS, 0, 0);
}

static void seed_hello(void)
{
	hello(0, "node");
	empty_msg(0, MSG_STATUS);
}

static void seed_tools(void) /* `takt status`, `takt pools`, `takt topic info`, takt-trace: no HELLO */
{
	empty_msg(0, MSG_STATUS);
	index_msg(0, MSG_POOLS, 0, 0);
	index_msg(0, MSG_CONNS, 0, 0);
	index_msg(0, MSG_CONNS, 1000000, 0);
	empty_msg(0, MSG_MGMT_FD);
}

static void seed_pub(void)
{
	hello(0, "pub");
	pub_open(0, "imu", "Imu", 256, 4);
	index_msg(0, MSG_PUB_CONNECT, 0, 0);
	index_msg(0, MSG_POOLS, 0, 0);
	index_msg(0, MSG_PUB_CLOSE, 0, 0);
}

static void seed_sub(void)
{
	hello(0, "sub");
	sub_open(0, "imu", "", 16, TAKT_OVERFLOW_REJECT, 0);
	index_msg(0, MSG_SUB_CONNECT, 0, 0);
	index_msg(0, MSG_SUB_CLOSE, 0, 0);
}

/* A service (libipc/service.c): peer 1 serves "calc" (subscribes to its
 * request topic), peer 0 is a client (publishes on it, subscribes to its
 * own response topic: the id is whatever the broker gave, so the seed's
 * guess is refused, and the fuzzer mutates it), the server answers on the
 * response topic; a second server and a stranger are refused. */
static void seed_service(void)
{
	hello(0, "client");
	hello(PEER1 | ACK, "server");
	sub_open(PEER1 | ACK, "@/calc/q", "t.Req|t.Rsp", 16, TAKT_OVERFLOW_REJECT, 0);
	index_msg(PEER1 | ACK, MSG_SUB_CONNECT, 0, 0);
	pub_open(ACK, "@/calc/q", "t.Req|t.Rsp", 64, 0);
	pub_open(0, "@/calc/q", "t.Req|t.Other", 64, 0); /* another response type */
	pub_open(0, "plain", "t.Req|t.Rsp", 64, 0);      /* a response type off a request topic */
	index_msg(ACK, MSG_PUB_CONNECT, 0, 0);
	sub_open(ACK, "@/calc/r/0000000000000001", "t.Rsp", 16, TAKT_OVERFLOW_REJECT, 0);
	pub_open(PEER1 | ACK, "@/calc/r/0000000000000001", "t.Rsp", 80, 0);
	sub_open(PEER1, "@/calc/q", "t.Req", 16, TAKT_OVERFLOW_REJECT, 0); /* a second server */
	sub_open(0, "@/calc/x", "", 4, 0, 0);                              /* no such kind of topic */
	index_msg(0, MSG_PUB_CLOSE, 0, 0);
}

static void seed_pubsub_acked(void)
{
	pubsub(true);
}

/* Nobody confirms: the subscriber's open waits (A0) until its publisher's
 * process dies. */
static void seed_pubsub_unacked(void)
{
	pubsub(false);
	empty_msg(HANGUP, MSG_STATUS);
}

/* Subscriber first; its process dies, then the publisher closes. */
static void seed_sub_first(void)
{
	hello(PEER1, "sub");
	sub_open(PEER1, "cam", "Image", 8, 0, 0);
	index_msg(PEER1, MSG_SUB_CONNECT, 0, 0);
	hello(ACK, "pub");
	pub_open(ACK, "cam", "Image", 4096, 0);
	index_msg(ACK, MSG_PUB_CONNECT, 0, 0);
	conn_ready(PEER1, 0, 1);
	pool_done(PEER1, 0, 0);
	empty_msg(PEER1 | HANGUP, MSG_STATUS);
	index_msg(0, MSG_PUB_CLOSE, 0, 0);
}

/* The publisher closes while its subscriber is connected (orphan). */
static void seed_orphan(void)
{
	pubsub(true);
	index_msg(0, MSG_PUB_CLOSE, 0, 0);
	index_msg(PEER1, MSG_SUB_CLOSE, 0, 0);
}

/* One process publishes and subscribes to itself. */
static void seed_self(void)
{
	hello(ACK, "loop");
	sub_open(ACK, "a", "T", 2, 0, 0);
	index_msg(ACK, MSG_SUB_CONNECT, 0, 0);
	pub_open(ACK, "a", "T", 8, 1);
	index_msg(ACK, MSG_PUB_CONNECT, 0, 0);
	pub_open(ACK, "a", "T", 8, 1);
	index_msg(ACK, MSG_PUB_CONNECT, 1, 0);
	index_msg(ACK, MSG_SUB_CLOSE, 0, 0);
}

static void seed_event(void)
{
	hello(0, "ev");
	event_open(0, "tick");
	index_msg(ACK, MSG_EVENT_LISTEN, 0, 0);
	index_msg(0, MSG_EVENT_CLOSE, 0, 1);
}

/* Two processes with the event open; one listens, confirms late, then
 * undoes its listen only. */
static void seed_event_two(void)
{
	hello(0, "a");
	hello(PEER1, "b");
	event_open(0, "tick");
	event_open(PEER1, "tick");
	index_msg(PEER1, MSG_EVENT_LISTEN, 0, 0);
	ev_ready(0, 0, 0, 1);
	ev_ready(PEER1, 0, 0, 1);
	index_msg(PEER1, MSG_EVENT_CLOSE, 0, 1 | EVENT_LISTENER_ONLY);
	index_msg(0, MSG_EVENT_CLOSE, 0, 0);
}

/* A client that does not read: replies pile up in the broker's queue. */
static void seed_deaf(void)
{
	hello(DEAF, "deaf");
	for (int i = 0; i < 24; i++)
		empty_msg(DEAF, MSG_STATUS);
	empty_msg(0, MSG_STATUS);
}

/* The classic mistakes: each gets an error and changes nothing. */
static void seed_bad_frames(void)
{
	struct msg_empty m;
	struct msg_hello h = {.abi_version = TAKT_ABI_VERSION + 1};
	char big[TAKT_PROTO_MAX_MSG + 64] = {0};

	index_msg(0, MSG_PUB_CONNECT, 0, 0); /* before HELLO */
	hdr(&m.hdr, MSG_STATUS, sizeof(m));
	rec(0, &m, 8); /* short */
	m.hdr.magic ^= 1;
	rec(0, &m, sizeof(m));
	hdr(&m.hdr, MSG_STATUS, sizeof(m));
	m.hdr.version++;
	rec(0, &m, sizeof(m));
	hdr(&m.hdr, MSG_TYPE_MAX + 1, sizeof(m));
	rec(0, &m, sizeof(m));
	hdr(&m.hdr, MSG_STATUS, sizeof(m) + 1); /* size field wrong */
	rec(0, &m, sizeof(m));
	hdr((struct proto_hdr *)big, MSG_STATUS, sizeof(big));
	rec(0, big, sizeof(big)); /* truncated on receive */
	hdr(&h.hdr, MSG_HELLO, sizeof(h));
	rec(0, &h, sizeof(h)); /* wrong ABI */
	rec(0, "", 0); /* an empty packet: the broker hangs up */
	empty_msg(0, MSG_STATUS);
}

static void seed_bad_fields(void)
{
	hello(0, "bad\x01name");
	pub_open(0, "", "T", 8, 0);
	pub_open(0, "a b", "T", 8, 0);
	pub_open(0, "t", "T", 1u << 30, 0); /* over [memory] max_payload */
	pub_open(0, "t", "T", 8, 1000);     /* over history_max */
	pub_open(0, "t", "T", 8, 0);
	pub_open(0, "t", "U", 8, 0); /* another type */
	sub_open(0, "t", "T", 1000, 0, 0);
	sub_open(0, "t", "T", 4, 7, 0);
	index_msg(0, MSG_PUB_CONNECT, 7, 0);
	index_msg(0, MSG_PUB_CONNECT, 0xffffffffu, 0);
	index_msg(0, MSG_SUB_CLOSE, 1, 0);
	index_msg(0, MSG_EVENT_LISTEN, 2, 0);
	index_msg(0, MSG_EVENT_CLOSE, 0, 0xffffffffu);
	conn_ready(0, 0xffffffffu, 0);
	ev_ready(0, 0xffffffffu, 0, 0);
	pool_done(0, 1, 0);
	index_msg(0, MSG_PUB_CONNECT, 0, 0);
	index_msg(0, MSG_PUB_CONNECT, 0, 0); /* twice */
}

/* More ports than the tables hold. */
static void seed_full(void)
{
	hello(0, "many");
	for (int i = 0; i < 6; i++) {
		char t[8];

		snprintf(t, sizeof(t), "t%d", i % 3);
		pub_open(0, t, "T", 4096, 4);
		sub_open(0, t, "T", 16, 0, 4);
		index_msg(ACK, MSG_SUB_CONNECT, (uint32_t)i, 0);
		index_msg(ACK, MSG_PUB_CONNECT, (uint32_t)i, 0);
	}
	for (int i = 0; i < 6; i++)
		event_open(0, i % 2 ? "e1" : "e2");
}

static const struct {
	const char *name;
	void (*fn)(void);
} seeds[] = {
	{"hello", seed_hello},
	{"tools", seed_tools},
	{"pub", seed_pub},
	{"sub", seed_sub},
	{"pubsub-acked", seed_pubsub_acked},
	{"service", seed_service},
	{"pubsub-unacked", seed_pubsub_unacked},
	{"sub-first", seed_sub_first},
	{"orphan", seed_orphan},
	{"self", seed_self},
	{"event", seed_event},
	{"event-two", seed_event_two},
	{"deaf", seed_deaf},
	{"bad-frames", seed_bad_frames},
	{"bad-fields", seed_bad_fields},
	{"full", seed_full},
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: takt-fuzz-seeds DIR   (writes DIR/seed-<name>)\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		char path[4096];
		FILE *f;

		out_len = 0;
		req_id = 0;
		seeds[i].fn();
		snprintf(path, sizeof(path), "%s/seed-%s", argv[1], seeds[i].name);
		f = fopen(path, "wb");
		if (!f || fwrite(out, 1, out_len, f) != out_len || fclose(f) != 0) {
			fprintf(stderr, "takt-fuzz-seeds: %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	return 0;
}
