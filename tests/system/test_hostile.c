/* test_hostile.c - a hostile client of another user cannot harm others.
 *
 * The threat model (docs/architecture.md): a process that can talk to the
 * broker but has no ptrace rights over the others, here a child that
 * attaches as root and then drops to nobody. It publishes and subscribes
 * on the victims' own topic, takes one of their samples, then truncates
 * every takt descriptor it holds and writes garbage over every takt
 * mapping it can write, and exits. Meanwhile a publisher and a subscriber
 * in two other processes exchange checksummed samples: the subscriber must
 * never see a torn, duplicated or reordered sample of its publisher,
 * nobody but the attacker may die, the broker must keep serving, and a new
 * pair opened afterwards must work. A subscriber writing into a sample it
 * took faults in its own process only.
 *
 * Needs root (to drop to another user); skipped otherwise.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000
#define TOPIC "guarded"

static struct h_broker broker;

/* What the victims report, in shared memory (one writer each). */
struct report {
	_Atomic int stop;
	_Atomic uint64_t published;      /* by the victim publisher */
	_Atomic uint64_t pub_id;
	_Atomic uint64_t good;           /* victim samples the subscriber checked */
	_Atomic uint64_t good_after;     /* ... after the attack */
	_Atomic uint64_t foreign;        /* samples of other publishers, ignored */
	_Atomic int attacked;
	_Atomic int bad;                 /* torn, duplicated or reordered: must stay 0 */
};
static struct report *rep;

struct sample {
	uint64_t seq;
	uint64_t value;
	uint64_t check;
	uint8_t fill[40];
};

static uint64_t checksum(const struct sample *s)
{
	uint64_t h = 0xcbf29ce484222325ull ^ s->seq ^ (s->value * 0x9e3779b97f4a7c15ull);

	for (size_t i = 0; i < sizeof(s->fill); i++)
		h = (h ^ s->fill[i]) * 0x100000001b3ull;
	return h;
}

static int setup(void **state)
{
	(void)state;
	rep = mmap(NULL, sizeof(*rep), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (rep == MAP_FAILED)
		return -1;
	return h_broker_start(&broker, "hostile", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	munmap(rep, sizeof(*rep));
	return 0;
}

/* ---- the victims --------------------------------------------------------- */

static int victim_pub(void *a)
{
	struct takt_pub_opts po = {.topic = TOPIC, .max_payload = sizeof(struct sample)};
	takt_node *n = h_node(broker.domain, "victim-pub");
	uint64_t seq = 0;
	takt_pub *p;

	(void)a;
	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	atomic_store(&rep->pub_id, takt_pub_id(p));
	while (!atomic_load(&rep->stop)) {
		struct sample *s;

		if (takt_pub_loan(p, sizeof(*s), (void **)&s) < 0) {
			usleep(100);
			continue;
		}
		s->seq = ++seq;
		s->value = seq * 7;
		memset(s->fill, (int)(seq & 0xff), sizeof(s->fill));
		s->check = checksum(s);
		H_CHECK(takt_pub_publish(p, s) >= 0);
		atomic_store(&rep->published, seq);
		usleep(200);
	}
	takt_node_close(n);
	return 0;
}

static int victim_sub(void *a)
{
	struct takt_sub_opts so = {.topic = TOPIC, .queue_depth = 64};
	takt_node *n = h_node(broker.domain, "victim-sub");
	uint64_t last_seq = 0, last_pub_seq = 0;
	takt_sub *s;

	(void)a;
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	while (!atomic_load(&rep->stop)) {
		struct takt_sample_info info;
		const struct sample *x;

		if (takt_sub_wait(s, 100000000) != 0)
			continue;
		while (takt_sub_take(s, (const void **)&x, &info) == 0) {
			uint64_t id = atomic_load(&rep->pub_id);

			if (info.publisher_id != id) {
				atomic_fetch_add(&rep->foreign, 1); /* the attacker's: anything */
			} else if (info.size != sizeof(*x) || x->check != checksum(x) || x->seq != info.seq ||
				   x->value != x->seq * 7 || x->seq <= last_seq || info.seq <= last_pub_seq) {
				fprintf(stderr, "victim_sub: bad sample: seq %llu (info %llu) after %llu\n",
					(unsigned long long)x->seq, (unsigned long long)info.seq,
					(unsigned long long)last_seq);
				atomic_store(&rep->bad, 1);
			} else {
				last_seq = x->seq;
				last_pub_seq = info.seq;
				atomic_fetch_add(&rep->good, 1);
				if (atomic_load(&rep->attacked))
					atomic_fetch_add(&rep->good_after, 1);
			}
			takt_sub_release(s, x);
		}
	}
	takt_node_close(n);
	return 0;
}

/* ---- the attacker -------------------------------------------------------- */

/* Truncates every takt segment descriptor it holds (each must refuse) and
 * writes garbage over every takt mapping it can write. */
static int wreck_everything(void)
{
	char line[512];
	FILE *f;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int wrecked = 0;

	H_CHECK(d != NULL);
	while ((e = readdir(d))) {
		char path[300], target[256];
		ssize_t n;
		int fd = atoi(e->d_name);

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		n = readlink(path, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		if (!strstr(target, "memfd:takt."))
			continue;
		H_CHECK(ftruncate(fd, 0) < 0); /* sealed, or read-only */
		H_CHECK(fallocate(fd, 0, 0, 1ll << 30) < 0);
	}
	closedir(d);
	f = fopen("/proc/self/maps", "r");
	H_CHECK(f != NULL);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (!strstr(line, "memfd:takt.") || sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3)
			continue;
		if (perms[1] != 'w') {
			/* read-only: it cannot be made writable either */
			H_CHECK(mprotect((void *)lo, 4096, PROT_READ | PROT_WRITE) < 0);
			continue;
		}
		/* Only pages that exist: the rest of a segment is address space,
		 * reserved as ports connect (a fault there is the attacker's). */
		for (unsigned long a = lo; a < hi; a += 4096) {
			unsigned char v;

			if (mincore((void *)a, 4096, &v) == 0 && (v & 1))
				memset((void *)a, 0xa5 ^ (int)(a >> 12), 4096);
		}
		wrecked++;
	}
	fclose(f);
	H_CHECK(wrecked >= 2); /* its pool, its subscriber's segment */
	return 0;
}

static int attacker(void *a)
{
	struct h_chan *ch = a;
	struct takt_pub_opts po = {.topic = TOPIC, .max_payload = sizeof(struct sample)};
	struct takt_sub_opts so = {.topic = TOPIC, .queue_depth = 8};
	takt_node *n = h_node(broker.domain, "attacker");
	const void *x = NULL;
	uint64_t junk = 0;
	takt_pub *p;
	takt_sub *s;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	for (int i = 0; i < 2000 && !x; i++) { /* one of the victims' samples, held */
		struct takt_sample_info info;

		if (takt_sub_take(s, &x, &info) == 0 && info.publisher_id != atomic_load(&rep->pub_id)) {
			takt_sub_release(s, x);
			x = NULL;
		}
		if (!x)
			usleep(1000);
	}
	H_CHECK(x != NULL);
	for (int i = 0; i < 20; i++) /* its own samples reach the victim too */
		H_CHECK(takt_pub_send(p, &junk, sizeof(junk)) >= 0);
	/* Another user from now on, and dumpable, so /proc/self is its own. */
	H_CHECK(setgid(65534) == 0 && setuid(65534) == 0);
	H_CHECK(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0);
	atomic_store(&rep->attacked, 1);
	H_CHECK(wreck_everything() == 0);
	H_CHECK(h_chan_send(&ch[0], "w", 1) == 0);
	/* Keep using the wrecked handles a little: whatever happens is ours. */
	for (int i = 0; i < 50; i++) {
		takt_pub_send(p, &junk, sizeof(junk));
		usleep(1000);
	}
	_exit(0);
}

/* A subscriber that writes into a sample it took: the mapping is
 * read-only, so the write faults in its own process (exit 42 from the
 * handler), and nobody else notices. */
static void on_segv(int sig)
{
	(void)sig;
	_exit(42);
}

static int scribbler(void *a)
{
	struct takt_sub_opts so = {.topic = TOPIC, .queue_depth = 8};
	takt_node *n = h_node(broker.domain, "scribbler");
	const void *x = NULL;
	takt_sub *s;

	(void)a;
	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	for (int i = 0; i < 2000 && takt_sub_take(s, &x, NULL) != 0; i++)
		usleep(1000);
	H_CHECK(x != NULL);
	signal(SIGSEGV, on_segv);
	memset((void *)x, 0, 8); /* faults */
	return 1;
}

static void wait_good(uint64_t *field, uint64_t want, const char *what)
{
	for (int i = 0; i < 3000 && atomic_load((_Atomic uint64_t *)field) < want; i++)
		usleep(1000);
	if (atomic_load((_Atomic uint64_t *)field) < want)
		fail_msg("the victim subscriber got fewer than %llu good samples %s",
			 (unsigned long long)want, what);
}

static void test_hostile_other_user_harms_only_itself(void **state)
{
	struct h_chan ch[1];
	pid_t vp, vs, att, scr;
	struct msg_status_reply st;
	char c;

	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: needs root (the attacker drops to another user)\n");
		skip();
	}
	memset(rep, 0, sizeof(*rep));
	assert_int_equal(h_chan_open(&ch[0]), 0);
	vs = h_spawn(victim_sub, NULL);
	vp = h_spawn(victim_pub, NULL);
	wait_good((uint64_t *)&rep->good, 50, "before the attack");
	scr = h_spawn(scribbler, NULL);
	assert_int_equal(h_wait(scr, WAIT_MS), 42); /* faulted in its own process */
	att = h_spawn(attacker, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(h_wait(att, WAIT_MS), 0);
	wait_good((uint64_t *)&rep->good_after, 200, "after the attack");
	assert_int_equal(atomic_load(&rep->bad), 0);
	atomic_store(&rep->stop, 1);
	assert_int_equal(h_wait(vp, WAIT_MS), 0);
	assert_int_equal(h_wait(vs, WAIT_MS), 0);
	print_message("%llu good samples (%llu after the attack), %llu foreign ignored\n",
		      (unsigned long long)atomic_load(&rep->good), (unsigned long long)atomic_load(&rep->good_after),
		      (unsigned long long)atomic_load(&rep->foreign));
	/* The broker serves, and a new pair works. */
	assert_int_equal(h_status(broker.domain, &st), 0);
	memset(rep, 0, sizeof(*rep));
	vs = h_spawn(victim_sub, NULL);
	vp = h_spawn(victim_pub, NULL);
	wait_good((uint64_t *)&rep->good, 50, "from a pair opened after the attack");
	atomic_store(&rep->stop, 1);
	assert_int_equal(h_wait(vp, WAIT_MS), 0);
	assert_int_equal(h_wait(vs, WAIT_MS), 0);
	assert_int_equal(atomic_load(&rep->bad), 0);
	h_chan_close(&ch[0]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hostile_other_user_harms_only_itself),
	};

	return cmocka_run_group_tests_name("hostile", tests, setup, teardown);
}
