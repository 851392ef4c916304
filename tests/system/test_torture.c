/* test_torture.c - processes SIGKILLed at random, 300 times, and the
 * broker 3 times.
 *
 * Publishers, subscribers and executor processes on three topics, and a
 * request/response server and its clients (every response checked to be
 * its request's echo), each a
 * real process, are killed with SIGKILL at random moments (inside takt
 * calls as often as outside: they run flat out) and replaced, 300 times.
 * Every sample carries its publisher's running count and a checksum of its
 * payload; every subscriber checks each sample it takes (checksum, size,
 * per-publisher order: seq and count only grow) and records any violation
 * in shared memory, where the dead cannot take it with them. Publishers also
 * notify an event after every sample (id: pid << 32 | count) and
 * subscribers listen to it, checking each notifier's ids only grow: a
 * notifier killed mid-push must not stall or garble the queues. Two processes
 * are never killed and check the same throughout. Afterwards every client
 * is gone and the broker reports no memory held beyond what an idle domain
 * holds, no process, port or connection.
 *
 * Three times in the run the broker itself is killed (SIGKILL) while all
 * of this goes on, a client or two die while none runs, and a new broker
 * adopts the domain: the survivors' checks (no duplicate, no reordering,
 * no torn sample) run straight across, and the processes that died
 * meanwhile are reclaimed. A process whose start-up met a dead broker
 * exits with ROLE_NO_BROKER and is replaced like a killed one. While no
 * broker runs a notify fails with -ENOTCONN; events come back with the
 * next broker, and each notifier's ids still only grow at every listener.
 *
 * Bounded: the churn stops after `--kills N` kills (default
 * TORTURE_KILLS; `--broker-kills M` of the broker, default BROKER_KILLS)
 * or TORTURE_SECONDS, whichever comes first, and fails if
 * too few kills happened.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <takt/exec.h>

#define TORTURE_KILLS 300
#define TORTURE_SECONDS 120
#define BROKER_KILLS 3
#define ROLE_NO_BROKER 3 /* exit status: its start-up met no broker */
#define N_TOPICS 3
#define N_PROCS 8 /* churned at any time */
#define WAIT_MS 30000

static struct h_broker broker;
static unsigned n_kills = TORTURE_KILLS, n_broker_kills = BROKER_KILLS;

/* A node, or ROLE_NO_BROKER when the broker is gone or restarting. */
static int role_node(const char *name, takt_node **out)
{
	int r = takt_node_open(&(struct takt_node_opts){.domain = broker.domain, .name = name}, out);

	return r == 0 ? 0 : r == -ENOENT || r == -ENOTCONN || r == -ETIMEDOUT ? ROLE_NO_BROKER : 1;
}

/* An open's result: 0, ROLE_NO_BROKER (the broker died under it), or 1. */
static int role_open(int r)
{
	return r == 0 ? 0 : r == -ENOTCONN || r == -ETIMEDOUT ? ROLE_NO_BROKER : 1;
}

struct report {
	_Atomic uint64_t taken, published, violations, started, events;
	_Atomic uint64_t answered, resets; /* request/response: responses checked, resets seen */
	char first[256]; /* the first violation, for the failure message */
	_Atomic int first_set;
	_Atomic int stop_sub, stop_pub; /* the survivors end */
};
static struct report *rep;

struct sample {
	uint64_t count;  /* the publisher's own running count */
	uint32_t len;    /* bytes of data[] in use */
	uint32_t sum;    /* over count, len and data[0..len) */
	uint8_t data[];
};

static uint32_t checksum(const struct sample *s)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < sizeof(s->count); i++)
		h = (h ^ ((const uint8_t *)&s->count)[i]) * 16777619u;
	h = (h ^ s->len) * 16777619u;
	for (uint32_t i = 0; i < s->len; i++)
		h = (h ^ s->data[i]) * 16777619u;
	return h;
}

static void violation(const char *what, uint64_t a, uint64_t b)
{
	int expect = 0;

	atomic_fetch_add(&rep->violations, 1);
	if (atomic_compare_exchange_strong(&rep->first_set, &expect, 1))
		snprintf(rep->first, sizeof(rep->first), "pid %d: %s (%llu, %llu)", getpid(), what,
			 (unsigned long long)a, (unsigned long long)b);
}

static const char *topic_name(unsigned t)
{
	static const char *names[N_TOPICS] = {"torture/a", "torture/b", "torture/c"};

	return names[t % N_TOPICS];
}

/* ---- roles ----------------------------------------------------------------- */

static int publisher_role(unsigned topic, bool forever)
{
	struct takt_pub_opts po = {.topic = topic_name(topic), .max_payload = 1024, .history = topic % 3};
	uint64_t count = 0, x = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull;
	takt_event *ev;
	takt_node *n;
	takt_pub *p;
	int r;

	if ((r = role_node("t-pub", &n)) || (r = role_open(takt_pub_open(n, &po, &p))) ||
	    (r = role_open(takt_event_open(n, "torture/ev", &ev))))
		return r;
	atomic_fetch_add(&rep->started, 1);
	while (!forever || !atomic_load(&rep->stop_pub)) {
		struct sample *s;

		r = takt_pub_loan(p, po.max_payload, (void **)&s);

		if (r == -ENOBUFS) { /* cannot happen: the pool covers everything out */
			violation("loan -ENOBUFS", count, 0);
			usleep(1000);
			continue;
		}
		H_CHECK(r == 0);
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		s->count = ++count;
		s->len = (uint32_t)(x % (po.max_payload - sizeof(*s)));
		for (uint32_t i = 0; i < s->len; i++)
			s->data[i] = (uint8_t)(x >> (i % 56));
		s->sum = checksum(s);
		H_CHECK(takt_pub_publish(p, s) >= 0);
		atomic_fetch_add(&rep->published, 1);
		r = takt_event_notify(ev, (uint64_t)getpid() << 32 | count);
		/* a slow listener loses ids, no more; while no broker runs a
		 * notify fails */
		H_CHECK(r == 0 || r == -EOVERFLOW || r == -ENOTCONN);
		if ((count & 63) == 0)
			usleep(100); /* let the subscribers breathe on 2 cores */
	}
	takt_node_close(n);
	return 0;
}

struct checker {
	uint64_t pub_id[64], seq[64], count[64];
	unsigned n;
	uint64_t ev_who[64], ev_last[64];
	unsigned n_ev;
};

/* One event id: each notifier's (pid << 32 | count) only grow. */
static void check_event(struct checker *c, uint64_t id)
{
	uint64_t who = id >> 32;
	unsigned i;

	for (i = 0; i < c->n_ev && c->ev_who[i] != who; i++)
		;
	if (i == c->n_ev) {
		if (c->n_ev == 64)
			memmove(c->ev_who, c->ev_who + 1, 63 * sizeof(uint64_t)),
				memmove(c->ev_last, c->ev_last + 1, 63 * sizeof(uint64_t)), i = 63;
		else
			c->n_ev++;
		c->ev_who[i] = who;
		c->ev_last[i] = 0;
	}
	if ((uint32_t)id <= c->ev_last[i])
		violation("event id repeated or reordered", id, c->ev_last[i]);
	c->ev_last[i] = (uint32_t)id;
	atomic_fetch_add(&rep->events, 1);
}

/* One taken sample: intact, and after everything this publisher sent us
 * before (drop-oldest may skip, never repeat or reorder). */
static void check_sample(struct checker *c, const void *payload, const struct takt_sample_info *info)
{
	const struct sample *s = payload;
	unsigned i;

	if (info->size < sizeof(*s) || s->len > info->size - sizeof(*s) || s->sum != checksum(s)) {
		violation("torn or corrupt sample", info->publisher_id, info->seq);
		return;
	}
	for (i = 0; i < c->n && c->pub_id[i] != info->publisher_id; i++)
		;
	if (i == c->n) {
		if (c->n == 64) { /* forget the oldest: all three tables move together */
			memmove(c->pub_id, c->pub_id + 1, 63 * sizeof(uint64_t));
			memmove(c->seq, c->seq + 1, 63 * sizeof(uint64_t));
			memmove(c->count, c->count + 1, 63 * sizeof(uint64_t));
			i = 63;
		} else {
			c->n++;
		}
		c->pub_id[i] = info->publisher_id;
		c->seq[i] = 0;
		c->count[i] = 0;
	}
	if (info->seq <= c->seq[i] || s->count <= c->count[i] || s->count != info->seq) {
		/* (the payload's own count names the sample whose bytes these are) */
		violation(s->count != info->seq ? "sample whose chunk was reused" : "duplicate or reordered sample",
			  info->seq, s->count != info->seq ? s->count : c->seq[i]);
	}
	c->seq[i] = info->seq;
	c->count[i] = s->count;
	atomic_fetch_add(&rep->taken, 1);
}

static int subscriber_role(unsigned topic, bool forever)
{
	struct takt_sub_opts so = {.topic = topic_name(topic), .queue_depth = 1 + topic * 7,
				   .history = topic % 2 ? 2 : 0};
	static struct checker c;
	const void *held[4] = {0};
	unsigned k = 0;
	takt_event *ev;
	takt_node *n;
	uint64_t id;
	takt_sub *s;
	int r;

	if ((r = role_node("t-sub", &n)) || (r = role_open(takt_sub_open(n, &so, &s))) ||
	    (r = role_open(takt_event_open(n, "torture/ev", &ev))))
		return r;
	r = takt_event_fd(ev); /* a listener */
	if (r < 0)
		return role_open(r);
	atomic_fetch_add(&rep->started, 1);
	while (!forever || !atomic_load(&rep->stop_sub)) {
		struct takt_sample_info info;
		const void *x;

		while (takt_event_take(ev, &id) == 0)
			check_event(&c, id);
		if (takt_sub_wait(s, 50000000) < 0)
			continue;
		while (takt_sub_take(s, &x, &info) == 0) {
			check_sample(&c, x, &info);
			/* Hold a few for a while: a kill then finds them held. */
			if (held[k])
				takt_sub_release(s, held[k]);
			held[k] = x;
			k = (k + 1) % 4;
		}
	}
	takt_node_close(n);
	return 0;
}

struct exec_role {
	takt_sub *sub;
	struct checker c;
};

static int on_sample(takt_ctx *ctx, void *user)
{
	struct exec_role *er = user;
	struct takt_sample_info info;
	const void *x;

	(void)ctx;
	while (takt_sub_take(er->sub, &x, &info) == 0) {
		check_sample(&er->c, x, &info);
		takt_sub_release(er->sub, x);
	}
	return TAKT_CONTINUE;
}

static int declare_sub(takt_triggers *t, void *user)
{
	return takt_trigger_subscriber(t, ((struct exec_role *)user)->sub);
}

static int executor_role(unsigned topic)
{
	struct takt_sub_opts so = {.topic = topic_name(topic), .queue_depth = 16};
	static struct exec_role er;
	takt_exec *ex;
	takt_node *n;
	int r;

	if ((r = role_node("t-exec", &n)) || (r = role_open(takt_sub_open(n, &so, &er.sub))))
		return r;
	H_CHECK(takt_exec_create(&(struct takt_exec_opts){.worker_threads = topic % 2, .handle_signals = -1},
				 &ex) == 0);
	H_CHECK(takt_exec_add(ex, &(struct takt_item){.name = "check", .declare = declare_sub,
						      .execute = on_sample, .user = &er}) >= 0);
	atomic_fetch_add(&rep->started, 1);
	return takt_exec_run(ex) == 0 ? 0 : 1; /* until killed */
}

/* ---- request/response: a server and its clients, killed like the rest -- */

#define SVC "torture/svc"
#define SVC_PENDING 8

/* Echoes every request (checked) back, until killed. Another server of
 * the name may still hold it (one being killed, or a survivor of a broker
 * restart): it retries until it gets it. */
static int server_role(void)
{
	takt_node *n;
	takt_server *srv;
	int r;

	if ((r = role_node("t-server", &n)))
		return r;
	while ((r = takt_server_open(n, &(struct takt_service_opts){.service = SVC, .max_response = 1024}, &srv)) ==
	       -EADDRINUSE)
		usleep(5000);
	if ((r = role_open(r)))
		return r;
	atomic_fetch_add(&rep->started, 1);
	for (;;) {
		struct takt_request_info ri;
		const struct sample *q;
		void *p;

		r = takt_server_take(srv, (const void **)&q, &ri);
		if (r == -EAGAIN) {
			takt_server_wait(srv, 100000000);
			continue;
		}
		H_CHECK(r == 0);
		if (ri.size < sizeof(*q) || q->len > ri.size - sizeof(*q) || q->sum != checksum(q))
			violation("torn request", ri.client_id, ri.request_id);
		if (takt_server_loan(srv, &ri, ri.size, &p) == 0) {
			memcpy(p, q, ri.size);
			r = takt_server_respond(srv, &ri, p);
			if (r != 0 && r != -EAGAIN && r != -ECONNRESET)
				violation("respond", (uint64_t)-r, ri.request_id);
		}
		takt_server_release(srv, q);
	}
}

/* Sends requests (a running count, checksummed) and checks every
 * response: to a request it sent, carrying that request back; each
 * request answered or reset once at most. */
static int client_role(void)
{
	uint64_t count = 0, x = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull, id_of[SVC_PENDING * 32] = {0};
	uint64_t count_of[SVC_PENDING * 32] = {0}, last_id = 0;
	takt_node *n;
	takt_client *c;
	int r;

	if ((r = role_node("t-client", &n)) ||
	    (r = role_open(takt_client_open(n, &(struct takt_service_opts){.service = SVC, .max_request = 1024,
									      .max_pending = SVC_PENDING, .response_queue = 64},
					       &c))))
		return r;
	atomic_fetch_add(&rep->started, 1);
	for (;;) {
		struct takt_request_info info;
		const struct sample *a;
		struct sample *q;
		int64_t id;

		if (takt_client_loan(c, 1024, (void **)&q) == 0) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			q->count = ++count;
			q->len = (uint32_t)(x % (1024 - sizeof(*q)));
			for (uint32_t i = 0; i < q->len; i++)
				q->data[i] = (uint8_t)(x >> (i % 56));
			q->sum = checksum(q);
			id = takt_client_send(c, q);
			if (id > 0) {
				if ((uint64_t)id <= last_id)
					violation("request id did not grow", (uint64_t)id, last_id);
				last_id = (uint64_t)id;
				id_of[id % (SVC_PENDING * 32)] = (uint64_t)id;
				count_of[id % (SVC_PENDING * 32)] = count;
			} else {
				takt_client_discard(c, q); /* no server, or max_pending out */
			}
		}
		r = takt_client_take(c, (const void **)&a, &info);
		if (r == -EAGAIN) {
			takt_client_wait(c, 2000000);
			continue;
		}
		if (r == -ECONNRESET) {
			atomic_fetch_add(&rep->resets, 1);
			continue;
		}
		H_CHECK(r == 0);
		/* a response to a request of ours still out, carrying it back */
		if (info.request_id == 0 || info.request_id > last_id ||
		    id_of[info.request_id % (SVC_PENDING * 32)] != info.request_id)
			violation("response to a request never sent", info.request_id, last_id);
		else if (info.size < sizeof(*a) || a->sum != checksum(a) ||
			 a->count != count_of[info.request_id % (SVC_PENDING * 32)])
			violation("response is not its request's echo", info.request_id, a->count);
		else
			atomic_fetch_add(&rep->answered, 1);
		id_of[info.request_id % (SVC_PENDING * 32)] = 0; /* answered once */
		takt_client_release(c, a);
	}
}

struct role {
	int kind; /* 0 publisher, 1 subscriber, 2 executor, 3 server, 4 client */
	unsigned topic;
	bool forever;
};

static int role_main(void *a)
{
	struct role *r = a;

	switch (r->kind) {
	case 0: return publisher_role(r->topic, r->forever);
	case 1: return subscriber_role(r->topic, r->forever);
	case 3: return server_role();
	case 4: return client_role();
	default: return executor_role(r->topic);
	}
}

/* ---- the test -------------------------------------------------------------- */

static int setup(void **state)
{
	(void)state;
	rep = mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rep == MAP_FAILED)
		return -1;
	return h_broker_start(&broker, "torture", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(rep, sizeof(*rep));
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t xorshift(uint64_t *x)
{
	*x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
	return *x;
}

/* Kills process i of the churn and waits for it: it must die by the
 * signal, or have met a dead broker at its start (ROLE_NO_BROKER). */
static void kill_role(pid_t pid, const struct role *r)
{
	int st;

	kill(pid, SIGKILL);
	st = h_wait(pid, WAIT_MS);
	if (st != 128 + SIGKILL && st != ROLE_NO_BROKER)
		fail_msg("process %d (role %d) ended with %d, not by SIGKILL: it failed by itself", pid, r->kind, st);
}

/* The broker dies under load; a client or two die while none runs; a new
 * broker adopts the domain and reclaims them. */
static void kill_broker(pid_t *pids, struct role *roles, uint64_t *x, uint32_t *adopt_ms_max)
{
	struct msg_status_reply before, after;
	unsigned dead = 1 + (unsigned)(xorshift(x) % 2), idx[2];

	assert_int_equal(h_status(broker.domain, &before), 0);
	assert_int_equal(kill(broker.pid, SIGKILL), 0);
	assert_int_equal(h_wait(broker.pid, WAIT_MS), 128 + SIGKILL);
	broker.pid = 0;
	usleep((useconds_t)(xorshift(x) % 30000)); /* samples flow without it */
	for (unsigned k = 0; k < dead; k++) {
		idx[k] = (unsigned)((xorshift(x) + k) % N_PROCS);
		if (k && idx[1] == idx[0])
			idx[1] = (idx[0] + 1) % N_PROCS;
		kill_role(pids[idx[k]], &roles[idx[k]]);
	}
	assert_int_equal(h_broker_restart(&broker), 0);
	assert_int_equal(h_status(broker.domain, &after), 0);
	assert_true(after.epoch != before.epoch);
	assert_int_equal(after.adopted_epoch, before.epoch);
	assert_int_equal(after.adopted_refused, 0);
	if (after.adopted_ms > *adopt_ms_max)
		*adopt_ms_max = after.adopted_ms;
	for (unsigned k = 0; k < dead; k++)
		pids[idx[k]] = h_spawn(role_main, &roles[idx[k]]);
}

/* Segments the broker holds that are not its registry: descriptors
 * (/proc/PID/fd) and mappings (/proc/PID/maps) of takt memfds other than
 * "takt.<domain>.mgmt", each named on stderr. */
static unsigned broker_segments_held(pid_t pid)
{
	char path[64], link[256], line[512];
	unsigned n = 0;
	struct dirent *de;
	DIR *d;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		char fdp[384];
		ssize_t k;

		snprintf(fdp, sizeof(fdp), "%s/%s", path, de->d_name);
		k = readlink(fdp, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = 0;
		if (!strncmp(link, "/memfd:takt.", 12) && !strstr(link, ".mgmt")) {
			fprintf(stderr, "torture: the broker still holds descriptor %s: %s\n", de->d_name, link);
			n++;
		}
	}
	closedir(d);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, "/memfd:takt.") && !strstr(line, ".mgmt")) {
			fprintf(stderr, "torture: the broker still maps %s", line);
			n++;
		}
	fclose(f);
	return n;
}

static void test_torture_random_kills(void **state)
{
	struct role roles[N_PROCS], keep[2] = {{.kind = 0, .topic = 0, .forever = true},
					       {.kind = 1, .topic = 0, .forever = true}};
	pid_t pids[N_PROCS], keepers[2];
	struct msg_status_reply st;
	unsigned kills = 0, broker_kills = 0;
	uint32_t adopt_ms_max = 0;
	uint64_t end = now_ms() + TORTURE_SECONDS * 1000u, x = 88172645463325252ull;

	(void)state;
	for (int i = 0; i < 2; i++)
		keepers[i] = h_spawn(role_main, &keep[i]);
	for (int i = 0; i < N_PROCS; i++) {
		roles[i] = (struct role){.kind = i % 5, .topic = (unsigned)i % N_TOPICS};
		pids[i] = h_spawn(role_main, &roles[i]);
	}
	while (kills < n_kills && now_ms() < end) {
		unsigned i;

		xorshift(&x);
		i = (unsigned)(x % N_PROCS);
		usleep((useconds_t)(x >> 40) % 20000); /* 0..20 ms: inside calls and out */
		kill_role(pids[i], &roles[i]);
		kills++;
		roles[i] = (struct role){.kind = (int)((x >> 8) % 5), .topic = (unsigned)((x >> 16) % N_TOPICS)};
		pids[i] = h_spawn(role_main, &roles[i]);
		if (broker_kills < n_broker_kills && kills == (broker_kills + 1) * n_kills / (n_broker_kills + 1)) {
			kill_broker(pids, roles, &x, &adopt_ms_max);
			broker_kills++;
		}
	}
	print_message("%u kills, %u broker kills (adopted within %u ms), %llu published, %llu taken, %llu event ids, "
		      "%llu responses, %llu resets\n",
		      kills, broker_kills, adopt_ms_max, (unsigned long long)atomic_load(&rep->published),
		      (unsigned long long)atomic_load(&rep->taken), (unsigned long long)atomic_load(&rep->events),
		      (unsigned long long)atomic_load(&rep->answered), (unsigned long long)atomic_load(&rep->resets));
	assert_true(atomic_load(&rep->events) > 0);
	assert_true(atomic_load(&rep->answered) > 0);
	assert_true(kills >= n_kills / 2); /* else the machine is too slow to have tortured anything */
	assert_int_equal(broker_kills, n_broker_kills);
	for (int i = 0; i < N_PROCS; i++)
		kill_role(pids[i], &roles[i]);
	/* The surviving subscriber ends; the surviving publisher publishes on
	 * and takes back what every subscriber, dead or closed, had of it: at
	 * most a loan is out then (its topic keeps no history). */
	atomic_store(&rep->stop_sub, 1);
	assert_int_equal(h_wait(keepers[1], WAIT_MS), 0);
	{
		struct proto_pool_stat pools[64];
		int np, found = 0;

		for (int t = 0; t < 200; t++) {
			usleep(10000); /* it publishes on, noticing the departures */
			np = h_pools(broker.domain, pools, 64);
			for (int i = 0; i < np; i++)
				if (pools[i].pid == keepers[0]) {
					found = pools[i].in_flight <= 1 ? 1 : -1;
					if (found < 0 && t == 199)
						fail_msg("the surviving publisher has %u chunks out of %u: leaked",
							 pools[i].in_flight, pools[i].total);
				}
			if (found > 0)
				break;
		}
		assert_int_equal(found, 1);
	}
	atomic_store(&rep->stop_pub, 1);
	assert_int_equal(h_wait(keepers[0], WAIT_MS), 0); /* the survivors end cleanly */
	if (atomic_load(&rep->violations))
		fail_msg("%llu violations; first: %s", (unsigned long long)atomic_load(&rep->violations), rep->first);
	assert_true(atomic_load(&rep->taken) > 0);
	/* Everything any process held is gone with it. */
	for (int i = 0; i < 1000; i++) {
		assert_int_equal(h_status(broker.domain, &st), 0);
		if (st.n_procs == 0 && st.n_pubs == 0 && st.n_subs == 0 && st.n_conns == 0 &&
		    st.shm_bytes == st.shm_bytes_idle)
			break;
		usleep(10000);
	}
	assert_int_equal(st.n_procs, 0);
	assert_int_equal(st.n_pubs, 0);
	assert_int_equal(st.n_subs, 0);
	assert_int_equal(st.n_conns, 0);
	assert_int_equal(st.shm_bytes, st.shm_bytes_idle);
	/* and the broker keeps nothing of theirs: no segment, however it got
	 * it (made it, or adopted it from its predecessor's clients) */
	assert_int_equal(broker_segments_held(broker.pid), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_torture_random_kills),
	};

	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], "--kills"))
			n_kills = (unsigned)strtoul(argv[i + 1], NULL, 10);
		else if (!strcmp(argv[i], "--broker-kills"))
			n_broker_kills = (unsigned)strtoul(argv[i + 1], NULL, 10);
	if (n_kills < n_broker_kills + 1) {
		fprintf(stderr, "--kills: at least --broker-kills + 1\n");
		return 2;
	}

	return cmocka_run_group_tests_name("torture", tests, setup, teardown);
}
