/* test_events.c - events between real processes: every listener gets every
 * id, overflow is reported and still wakes, and a hostile notifier of
 * another user costs only the queues of the event it notifies.
 */
#include "harness.h"

#include <errno.h>
#include <signal.h>
#include <time.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000
#define N_IDS 200

static struct h_broker broker;

struct shared {
	_Atomic int ready;
	_Atomic int stop;
	_Atomic uint64_t got[4];   /* per listener: ids received */
	_Atomic int bad[4];        /* per listener: out of order, foreign */
	_Atomic int other_ready;
	_Atomic int64_t listen_ms;
};
static struct shared *sh;

static int setup(void **state)
{
	(void)state;
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -1;
	return h_broker_start(&broker, "events", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(sh, sizeof(*sh));
	return 0;
}

static bool readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

/* A listener of "name": takes until it has want ids or stop, each must be
 * the next of its notifier (ids are notifier * 1000000 + n, n from 1). */
struct lis_arg {
	const char *name;
	unsigned slot;
	uint64_t want;
};

static int listener(void *a)
{
	const struct lis_arg *la = a;
	takt_node *n = h_node(broker.domain, "listener");
	uint64_t next[8] = {0};
	takt_event *ev;
	int fd;

	H_CHECK(takt_event_open(n, la->name, &ev) == 0);
	fd = takt_event_fd(ev); /* asking for the fd makes it a listener */
	H_CHECK(fd >= 0);
	atomic_fetch_add(&sh->ready, 1);
	while (atomic_load(&sh->got[la->slot]) < la->want && !atomic_load(&sh->stop)) {
		uint64_t id;

		if (!readable(fd, 100))
			continue;
		while (takt_event_take(ev, &id) == 0) {
			uint64_t who = id / 1000000, k = id % 1000000;

			/* A notifier told -EOVERFLOW (another listener's lane was
			 * full) sends the id again: we may see it twice in a row,
			 * never out of order or missing. */
			if (who >= 8 || k > next[who] + 1 || k < next[who]) {
				atomic_store(&sh->bad[la->slot], 1);
			} else if (k == next[who] + 1) {
				next[who] = k;
				atomic_fetch_add(&sh->got[la->slot], 1);
			}
		}
	}
	takt_node_close(n);
	return 0;
}

static int notifier(void *a)
{
	uint64_t who = (uint64_t)(uintptr_t)a;
	takt_node *n = h_node(broker.domain, "notifier");
	takt_event *ev;

	H_CHECK(takt_event_open(n, "bell", &ev) == 0);
	for (uint64_t k = 1; k <= N_IDS; k++) {
		int r;

		while ((r = takt_event_notify(ev, who * 1000000 + k)) == -EOVERFLOW)
			usleep(1000); /* a listener's lane is full: that id is lost for it */
		H_CHECK(r == 0);
		if (k % 50 == 0)
			usleep(1000);
	}
	takt_node_close(n);
	return 0;
}

/* Two listener processes and a monitor in a third hear every id of two
 * notifier processes, each notifier's in its order; a handle that only
 * notifies gets no queue. */
static void test_events_every_listener_gets_every_id(void **state)
{
	struct lis_arg la[3] = {{"bell", 0, 2 * N_IDS}, {"bell", 1, 2 * N_IDS}, {"bell", 2, 2 * N_IDS}};
	takt_node *n = h_node(broker.domain, "quiet");
	struct msg_status_reply st;
	pid_t l[3], nt[2];
	takt_event *ev;

	(void)state;
	memset(sh, 0, sizeof(*sh));
	assert_int_equal(takt_event_open(n, "bell", &ev), 0); /* never takes: no queue */
	for (int i = 0; i < 3; i++)
		l[i] = h_spawn(listener, &la[i]);
	for (int i = 0; i < 2000 && atomic_load(&sh->ready) < 3; i++)
		usleep(1000);
	assert_int_equal(atomic_load(&sh->ready), 3);
	assert_int_equal(h_status(broker.domain, &st), 0);
	nt[0] = h_spawn(notifier, (void *)(uintptr_t)1);
	nt[1] = h_spawn(notifier, (void *)(uintptr_t)2);
	assert_int_equal(takt_event_notify(ev, 3 * 1000000 + 1), 0); /* reaches all three too */
	for (int i = 0; i < 2; i++)
		assert_int_equal(h_wait(nt[i], WAIT_MS), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(h_wait(l[i], WAIT_MS), 0);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(atomic_load(&sh->bad[i]), 0);
		assert_true(atomic_load(&sh->got[i]) >= 2 * N_IDS);
	}
	takt_node_close(n);
}

/* A listener that does not take: its lane fills after TAKT_EVENT_QUEUE
 * ids, notify then says -EOVERFLOW, and the listener is still woken; once
 * it took one, there is room again. */
static void test_events_overflow_reported_and_wakes(void **state)
{
	takt_node *ln = h_node(broker.domain, "slow"), *nn = h_node(broker.domain, "fast");
	takt_event *l, *n;
	uint64_t id, cnt;
	int fd;

	(void)state;
	assert_int_equal(takt_event_open(ln, "flood", &l), 0);
	assert_int_equal(takt_event_open(nn, "flood", &n), 0);
	fd = takt_event_fd(l);
	assert_true(fd >= 0);
	for (uint64_t k = 1; k <= TAKT_EVENT_QUEUE; k++)
		assert_int_equal(takt_event_notify(n, k), 0);
	assert_true(read(fd, &cnt, sizeof(cnt)) == sizeof(cnt)); /* drain the count */
	assert_int_equal(takt_event_notify(n, 999), -EOVERFLOW);
	assert_true(readable(fd, 1000)); /* still woken */
	assert_int_equal(takt_event_take(l, &id), 0);
	assert_int_equal(id, 1);
	assert_int_equal(takt_event_notify(n, 1000), 0);
	for (uint64_t k = 2; k <= TAKT_EVENT_QUEUE; k++) {
		assert_int_equal(takt_event_take(l, &id), 0);
		assert_int_equal(id, k);
	}
	assert_int_equal(takt_event_take(l, &id), 0);
	assert_int_equal(id, 1000);
	assert_int_equal(takt_event_take(l, &id), -EAGAIN);
	takt_node_close(ln);
	takt_node_close(nn);
}

/* A node that closed its last handle of an event forgets its listeners:
 * one that left meanwhile is not notified (into a queue nobody drains,
 * filling up) when the node opens the event again. */
static void test_events_reopened_event_has_no_stale_listener(void **state)
{
	takt_node *a = h_node(broker.domain, "notifier-node"), *b = h_node(broker.domain, "listener-node");
	takt_event *na, *lb;
	uint64_t id;

	(void)state;
	assert_int_equal(takt_event_open(a, "drum", &na), 0);
	assert_int_equal(takt_event_open(b, "drum", &lb), 0);
	assert_true(takt_event_fd(lb) >= 0);          /* a's node learns of the listener */
	takt_event_close(na);                          /* a's last handle */
	takt_event_close(lb);                          /* the listener leaves meanwhile */
	assert_int_equal(takt_event_open(a, "drum", &na), 0);
	for (uint64_t k = 1; k <= 3 * TAKT_EVENT_QUEUE; k++)
		assert_int_equal(takt_event_notify(na, k), 0); /* nobody listens: never full */
	assert_int_equal(takt_event_open(b, "drum", &lb), 0);
	assert_true(takt_event_fd(lb) >= 0);
	assert_int_equal(takt_event_notify(na, 5), 0);
	assert_int_equal(takt_event_take(lb, &id), 0);
	assert_int_equal(id, 5);
	takt_node_close(a);
	takt_node_close(b);
}

/* A notifier of another user writes garbage over every takt mapping it can
 * write (the queues of the listeners of its event, its lane of which it
 * writes anyway). The listener of that event may get garbage ids from it
 * but never hangs; a listener of another event and a publish/subscribe
 * pair, in other processes, notice nothing. */
static int hostile_notifier(void *a)
{
	takt_node *n;
	takt_event *ev;
	char line[512];
	FILE *f;
	int wrecked = 0;

	(void)a;
	/* Forked before the victims mapped anything: all it maps is its own. */
	while (!atomic_load(&sh->ready))
		usleep(1000);
	n = h_node(broker.domain, "hostile");
	H_CHECK(takt_event_open(n, "bell", &ev) == 0);
	H_CHECK(takt_event_notify(ev, 1 * 1000000 + 1) == 0);
	H_CHECK(setgid(65534) == 0 && setuid(65534) == 0);
	H_CHECK(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0);
	f = fopen("/proc/self/maps", "r");
	H_CHECK(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (!strstr(line, "memfd:takt.") || sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 ||
		    perms[1] != 'w')
			continue;
		memset((void *)lo, 0xff, hi - lo);
		wrecked++;
	}
	fclose(f);
	H_CHECK(wrecked >= 1);
	for (int i = 0; i < 100; i++)
		takt_event_notify(ev, 0xdeadbeef);
	return 0;
}

static int other_listener(void *a)
{
	takt_node *n = h_node(broker.domain, "other");
	takt_event *ev;
	int fd, got = 0;

	(void)a;
	H_CHECK(takt_event_open(n, "gong", &ev) == 0);
	fd = takt_event_fd(ev);
	H_CHECK(fd >= 0);
	atomic_fetch_add(&sh->other_ready, 1);
	while (got < 100) {
		uint64_t id;

		if (!readable(fd, 5000))
			return 2; /* its notifications stopped arriving */
		while (takt_event_take(ev, &id) == 0) {
			if (id != (uint64_t)got + 1)
				return 3;
			got++;
		}
	}
	takt_node_close(n);
	return 0;
}

static void test_events_hostile_notifier_costs_only_its_event(void **state)
{
	struct takt_pub_opts po = {.topic = "beside", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "beside", .queue_depth = 4};
	takt_node *n;
	takt_event *bell, *gong;
	const uint64_t *x;
	takt_pub *p;
	takt_sub *s;
	uint64_t id;
	pid_t other, att;

	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: needs root (the attacker drops to another user)\n");
		skip();
	}
	memset(sh, 0, sizeof(*sh));
	/* A forked child inherits its parent's mappings: the attacker is
	 * forked before the victims (here, in this process) map anything. */
	att = h_spawn(hostile_notifier, NULL);
	n = h_node(broker.domain, "victims");
	assert_int_equal(takt_event_open(n, "bell", &bell), 0);
	assert_true(takt_event_fd(bell) >= 0); /* a listener of the attacked event */
	assert_int_equal(takt_event_open(n, "gong", &gong), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	other = h_spawn(other_listener, NULL);
	for (int i = 0; i < 2000 && atomic_load(&sh->other_ready) < 1; i++)
		usleep(1000);
	atomic_store(&sh->ready, 1); /* the attacker goes */
	assert_int_equal(h_wait(att, WAIT_MS), 0);
	/* The attacked listener: whatever it takes, it never hangs. */
	for (int i = 0; i < 1000 && takt_event_take(bell, &id) == 0; i++)
		;
	/* The other event and the data path: untouched. */
	for (uint64_t k = 1; k <= 100; k++) {
		int r;

		while ((r = takt_event_notify(gong, k)) == -EOVERFLOW) /* it takes slower than we notify */
			usleep(1000);
		assert_int_equal(r, 0);
		assert_int_equal(takt_pub_send(p, &k, sizeof(k)), 1);
		assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
		assert_int_equal(*x, k);
		takt_sub_release(s, x);
	}
	assert_int_equal(h_wait(other, WAIT_MS), 0);
	/* And the attacked event works again for a listener that joins now. */
	{
		takt_node *m = h_node(broker.domain, "late");
		takt_event *late;

		assert_int_equal(takt_event_open(m, "bell", &late), 0);
		assert_true(takt_event_fd(late) >= 0);
		assert_int_equal(takt_event_notify(bell, 7), 0);
		assert_int_equal(takt_event_take(late, &id), 0);
		assert_int_equal(id, 7);
		takt_node_close(m);
	}
	takt_node_close(n);
}

/* EV_READY counts only from a node that was told of the listen, and once:
 * no other client can answer a listen for a node that has not put the
 * listener in its table yet (that node's notifies would miss it). */
static int stalled_opener(void *a)
{
	takt_node *n = h_node(broker.domain, "stalled");
	takt_event *ev;

	(void)a;
	H_CHECK(takt_event_open(n, "acked", &ev) == 0);
	atomic_store(&sh->ready, 1);
	pause(); /* stopped, then killed */
	return 0;
}

static int timed_listener(void *a)
{
	takt_node *n = h_node(broker.domain, "timed");
	struct timespec t0, t1;
	takt_event *ev;

	(void)a;
	H_CHECK(takt_event_open(n, "acked", &ev) == 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	H_CHECK(takt_event_fd(ev) >= 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	atomic_store(&sh->listen_ms, (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
	takt_node_close(n);
	return 0;
}

static void test_events_ready_only_from_the_node_told(void **state)
{
	struct h_raw raw;
	pid_t opener, lis;

	(void)state;
	atomic_store(&sh->ready, 0);
	atomic_store(&sh->listen_ms, -1);
	opener = h_spawn(stalled_opener, NULL);
	for (int i = 0; i < 1000 && !atomic_load(&sh->ready); i++)
		usleep(10000);
	assert_int_equal(atomic_load(&sh->ready), 1);
	assert_int_equal(kill(opener, SIGSTOP), 0); /* it will not confirm the listener */
	assert_int_equal(h_raw_hello(broker.domain, &raw), 0); /* a client without the event */
	lis = h_spawn(timed_listener, NULL);
	usleep(300000); /* its listen waits for the stalled node */
	/* every slot and incarnation a listen could have, several times */
	for (uint32_t ei = 0; ei < 8; ei++)
		for (uint32_t inc = 0; inc < 64; inc++)
			for (int k = 0; k < 3; k++) {
				struct msg_push_ev m = {.event = ei, .listener = 0, .inc = inc};

				proto_hdr_init(&m.hdr, MSG_EV_READY, sizeof(m), 0);
				assert_int_equal(send(raw.sock, &m, sizeof(m), MSG_NOSIGNAL), (ssize_t)sizeof(m));
			}
	assert_int_equal(h_wait(lis, WAIT_MS), 0);
	/* answered by the broker's confirm timeout (2 s), not by the forged acks */
	if (atomic_load(&sh->listen_ms) < 1500)
		fail_msg("the listen was answered after %lld ms: forged EV_READYs settled the stalled node's ack",
			 (long long)atomic_load(&sh->listen_ms));
	kill(opener, SIGKILL);
	h_wait(opener, WAIT_MS);
	close(raw.sock);
	close(raw.reg_fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_events_every_listener_gets_every_id),
		cmocka_unit_test(test_events_overflow_reported_and_wakes),
		cmocka_unit_test(test_events_reopened_event_has_no_stale_listener),
		cmocka_unit_test(test_events_hostile_notifier_costs_only_its_event),
		cmocka_unit_test(test_events_ready_only_from_the_node_told),
	};

	return cmocka_run_group_tests_name("events", tests, setup, teardown);
}
