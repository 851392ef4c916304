/* gateway.c - takt-bench-gateway: the takt side of scripts/bench --gateway
 * (docs/gateway.md, "Performance"). Run in two network namespaces, each
 * with its broker and takt-gateway:
 *
 *   takt-bench-gateway ping COUNT SIZE   publishes on gwb/ping, takes from gwb/pong:
 *                                        one-way latency = round trip / 2
 *   takt-bench-gateway pong COUNT        answers every ping with its bytes
 *   takt-bench-gateway pub COUNT SIZE    publishes COUNT samples as fast as the
 *                                        lossless gateways take them
 *   takt-bench-gateway sub COUNT         receives them: samples/s, and checks none is lost
 *                                        (looks for SUB_SPIN_NS before it parks)
 *   takt-bench-gateway ring SHAPE COUNT  no takt, no network: what this machine charges for
 *                                        a wake-up, by the shape of the ring it is in
 *
 * A ring passes a token COUNT times round threads that sleep in read(2)
 * on an eventfd and wake the next with write(2); SHAPE lists the process
 * of each thread in ring order: "0,1" is a ping-pong of two processes (the
 * shape of ddsperf's and takt-bench's round trips), "0,1,2,3,2,1" is the
 * bridged round trip's (ping, gateway A, gateway B, pong, gateway B,
 * gateway A: six wake-ups among four processes). It prints one line,
 * "median_ns p99_ns" per hop (a round trip / its hops).
 *
 * Both ends warm up first (samples numbered 0, every 10 ms, until the
 * other end answers): discovery and matching are not measured. Prints one
 * line: "median_ns p99_ns" (ping) or "samples_per_s" (sub). $TAKT_DOMAIN
 * and $TAKT_RUNTIME_DIR say which domain. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <takt/ipc.h>

#define WARMUP 200
#define SUB_SPIN_NS 30000 /* the stream subscriber: look this long before parking */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int send_seq(takt_pub *p, uint64_t seq, size_t size)
{
	void *x;
	int r;

	for (int i = 0; (r = takt_pub_loan(p, size, &x)) == -ENOBUFS; i++) {
		if (i > 20000)
			return -ETIMEDOUT;
		nanosleep(&(struct timespec){.tv_nsec = 50000}, NULL);
	}
	if (r < 0)
		return r;
	memset(x, 0x5a, size);
	memcpy(x, &seq, sizeof(seq));
	return takt_pub_publish(p, x) < 0 ? -EIO : 0;
}

/* Waits (timeout_ns at most) for one sample: its number, or UINT64_MAX.
 * It first looks for spin_ns (yielding the CPU between looks) before it
 * parks: a stream's next sample is a few microseconds away, and a parked
 * subscriber costs the publishing gateway an eventfd write and the
 * subscriber a wake-up per park (docs/gateway.md, "Performance"). */
static uint64_t take_seq_spin(takt_sub *s, int64_t timeout_ns, uint64_t spin_ns)
{
	struct takt_sample_info info;
	const void *x;
	uint64_t seq, until = 0;

	while (takt_sub_take(s, &x, &info) < 0) {
		if (!until)
			until = now_ns() + spin_ns;
		if (now_ns() < until)
			sched_yield();
		else if (takt_sub_wait(s, timeout_ns) < 0)
			return UINT64_MAX;
	}
	memcpy(&seq, x, sizeof(seq));
	takt_sub_release(s, x);
	return seq;
}

/* Blocking at once (the ping-pong: takt's blocking hop is its baseline). */
static uint64_t take_seq(takt_sub *s, int64_t timeout_ns)
{
	return take_seq_spin(s, timeout_ns, 0);
}

/* Sends 0s every 10 ms until anything comes back. */
static int warm_up(takt_pub *p, takt_sub *s, size_t size)
{
	for (int i = 0; i < 3000; i++) {
		if (send_seq(p, 0, size) < 0)
			return -EIO;
		if (take_seq(s, 10000000) != UINT64_MAX)
			return 0;
	}
	return -ETIMEDOUT;
}

static int ping(takt_pub *p, takt_sub *s, uint64_t n, size_t size)
{
	uint64_t *rtt = malloc(n * sizeof(*rtt));

	if (!rtt || warm_up(p, s, size) < 0)
		return 1;
	while (take_seq(s, 100000000) != UINT64_MAX) /* the warm-ups still in flight */
		;
	for (uint64_t i = 1; i <= WARMUP + n; i++) {
		uint64_t t0 = now_ns(), got;

		if (send_seq(p, i, size) < 0)
			return 1;
		while ((got = take_seq(s, 5000000000LL)) != i)
			if (got == UINT64_MAX)
				return fprintf(stderr, "takt-bench-gateway: pong %llu lost\n", (unsigned long long)i), 1;
		if (i > WARMUP)
			rtt[i - WARMUP - 1] = now_ns() - t0;
	}
	qsort(rtt, n, sizeof(*rtt), cmp_u64);
	printf("%llu %llu\n", (unsigned long long)rtt[n / 2] / 2, (unsigned long long)rtt[n * 99 / 100] / 2);
	return 0;
}

static int pong(takt_pub *p, takt_sub *s, uint64_t n, size_t size)
{
	for (uint64_t got = 0; got != WARMUP + n;)
		if ((got = take_seq(s, 30000000000LL)) == UINT64_MAX || send_seq(p, got, size) < 0)
			return 1;
	return 0;
}

static int pub(takt_pub *p, takt_sub *back, uint64_t n, size_t size)
{
	if (warm_up(p, back, size) < 0)
		return 1;
	for (uint64_t i = 1; i <= n; i++)
		if (send_seq(p, i, size) < 0)
			return 1;
	for (uint64_t got = 0; got != n;) /* the subscriber got all (after leftover warm-up answers) */
		if ((got = take_seq(back, 60000000000LL)) == UINT64_MAX)
			return 1;
	return 0;
}

static int sub(takt_pub *back, takt_sub *s, uint64_t n)
{
	uint64_t t0 = 0, next = 1, got;

	while (next <= n) {
		if ((got = take_seq_spin(s, 30000000000LL, SUB_SPIN_NS)) == UINT64_MAX)
			return fprintf(stderr, "takt-bench-gateway: stalled at %llu\n", (unsigned long long)next), 1;
		if (got == 0) {
			if (send_seq(back, 0, 8) < 0) /* ready */
				return 1;
			continue;
		}
		if (got != next)
			return fprintf(stderr, "takt-bench-gateway: %llu after %llu\n", (unsigned long long)got,
				       (unsigned long long)next - 1), 1;
		if (got == 1)
			t0 = now_ns();
		next++;
	}
	printf("%.0f\n", (double)(n - 1) * 1e9 / (double)(now_ns() - t0));
	return send_seq(back, n, 8) < 0;
}

#define RING_MAX 16
#define RING_ALARM_S 120 /* a ring whose member died stops then, not never (so does any longer run) */

struct ring {
	int fd[RING_MAX];
	int n;
	uint64_t count;
};

struct ring_hop {
	const struct ring *r;
	int at;
};

/* One member of the ring (not the first): COUNT times, wait, wake the next. */
static void *ring_member(void *arg)
{
	const struct ring_hop *h = arg;
	uint64_t v;

	for (uint64_t i = 0; i < h->r->count; i++)
		if (read(h->r->fd[h->at], &v, sizeof(v)) != sizeof(v) ||
		    write(h->r->fd[(h->at + 1) % h->r->n], &(uint64_t){1}, sizeof(v)) != sizeof(v))
			break;
	return NULL;
}

/* The members of the ring that process proc holds, as threads: 0, or -1. */
static int ring_process(const struct ring *r, const int *of, int proc)
{
	static struct ring_hop hops[RING_MAX];
	pthread_t t[RING_MAX];
	int k = 0, rc = 0;

	for (int i = 1; i < r->n; i++) {
		if (of[i] != proc)
			continue;
		hops[i] = (struct ring_hop){r, i};
		if (pthread_create(&t[k], NULL, ring_member, &hops[i]))
			return -1;
		k++;
	}
	while (k)
		rc |= pthread_join(t[--k], NULL);
	return rc ? -1 : 0;
}

static void ring_alarm(int sig)
{
	static const char msg[] = "takt-bench-gateway: ring: no token for 120 s (a member died?)\n";
	ssize_t w;

	(void)sig;
	_Static_assert(RING_ALARM_S == 120, "the message's seconds");
	w = write(2, msg, sizeof(msg) - 1);
	(void)w;
	_exit(1);
}

static int ring(const char *shape, uint64_t n)
{
	struct ring r = {.count = WARMUP + n};
	int of[RING_MAX], procs = 0;
	uint64_t *rtt;
	const char *c = shape;
	pid_t kids[RING_MAX];
	pthread_t mine[RING_MAX];
	int nkids = 0, nmine = 0, rc = 0;

	while (*c && r.n < RING_MAX) {
		char *end;
		long p = strtol(c, &end, 10);

		if (end == c || p < 0 || p >= RING_MAX || (r.n == 0 && p != 0))
			break;
		of[r.n++] = (int)p;
		procs = p + 1 > procs ? (int)p + 1 : procs;
		c = *end == ',' ? end + 1 : end;
	}
	if (*c || r.n < 2)
		return fprintf(stderr, "takt-bench-gateway: ring '%s': want process numbers from 0, such as 0,1,2,3,2,1 "
				       "(at most %d)\n", shape, RING_MAX), 2;
	for (int i = 0; i < r.n; i++)
		if ((r.fd[i] = eventfd(0, EFD_CLOEXEC)) < 0)
			return perror("takt-bench-gateway: eventfd"), 1;
	rtt = malloc(n * sizeof(*rtt));
	if (!rtt)
		return perror("takt-bench-gateway: ring"), 1;
	signal(SIGALRM, ring_alarm);
	alarm(RING_ALARM_S);
	for (int p = 1; p < procs; p++) {
		pid_t me = getpid(), k = fork();

		if (k == 0) {
			/* dies with the first process (which the alarm bounds) */
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != me)
				_exit(1);
			_exit(ring_process(&r, of, p) ? 1 : 0);
		}
		if (k < 0) {
			perror("takt-bench-gateway: fork");
			rc = 1;
			break;
		}
		kids[nkids++] = k;
	}
	/* process 0's other members (the first is this thread) */
	for (int i = 1; i < r.n; i++) {
		static struct ring_hop hops[RING_MAX];

		if (of[i] != 0)
			continue;
		hops[i] = (struct ring_hop){&r, i};
		if (pthread_create(&mine[nmine], NULL, ring_member, &hops[i])) {
			perror("takt-bench-gateway: pthread_create");
			rc = 1;
			break;
		}
		nmine++;
	}
	for (uint64_t i = 0; !rc && i < WARMUP + n; i++) {
		uint64_t t0 = now_ns(), v;

		if (write(r.fd[1], &(uint64_t){1}, sizeof(v)) != sizeof(v) ||
		    read(r.fd[0], &v, sizeof(v)) != sizeof(v)) {
			rc = 1;
			break;
		}
		if (i >= WARMUP)
			rtt[i - WARMUP] = now_ns() - t0;
	}
	/* a broken ring's members wait for a token that never comes: the
	 * children are killed, this process's threads end with it */
	for (int k = 0; k < nkids; k++) {
		int st;

		if (rc)
			kill(kids[k], SIGKILL);
		if (waitpid(kids[k], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			rc = 1;
	}
	while (!rc && nmine)
		pthread_join(mine[--nmine], NULL);
	if (rc) {
		free(rtt);
		return fprintf(stderr, "takt-bench-gateway: ring '%s' broke\n", shape), 1;
	}
	qsort(rtt, n, sizeof(*rtt), cmp_u64);
	printf("%llu %llu\n", (unsigned long long)rtt[n / 2] / (unsigned)r.n,
	       (unsigned long long)rtt[n * 99 / 100] / (unsigned)r.n);
	free(rtt);
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 2 ? argv[1] : "";

	if (!strcmp(mode, "ring") && argc > 3 && strtoull(argv[3], NULL, 10))
		return ring(argv[2], strtoull(argv[3], NULL, 10));

	uint64_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
	size_t size = argc > 3 ? strtoull(argv[3], NULL, 10) : 8;
	int me_ping = !strcmp(mode, "ping") || !strcmp(mode, "pub");
	const char *out = !strcmp(mode, "ping") || !strcmp(mode, "pong") ? (me_ping ? "gwb/ping" : "gwb/pong")
								      : (me_ping ? "gwb/data" : "gwb/ready");
	const char *in = !strcmp(mode, "ping") || !strcmp(mode, "pong") ? (me_ping ? "gwb/pong" : "gwb/ping")
								     : (me_ping ? "gwb/ready" : "gwb/data");
	takt_node *node;
	takt_pub *p;
	takt_sub *s;
	int rc;

	if (!n || size < 8 || (!me_ping && strcmp(mode, "pong") && strcmp(mode, "sub"))) { /* (and a bad ring) */
		fprintf(stderr, "usage: takt-bench-gateway ping|pong|pub|sub COUNT [SIZE] | ring SHAPE COUNT\n");
		return 2;
	}
	if (takt_node_open(&(struct takt_node_opts){.name = "takt-bench-gateway"}, &node) < 0 ||
	    /* lossless end to end: a publish waits for the gateway's (blocking)
	     * subscriber as long as the gateway's DDS writer may wait for its
	     * reader (10 s), not the default 100 ms, after which the sample
	     * would be dropped for it */
	    takt_pub_open(node, &(struct takt_pub_opts){.topic = out, .max_payload = size < 64 ? 64 : size,
							 .block_timeout_ns = 10000000000ull}, &p) < 0 ||
	    takt_sub_open(node, &(struct takt_sub_opts){.topic = in, .queue_depth = 256,
							 .overflow = TAKT_OVERFLOW_BLOCK}, &s) < 0) {
		fprintf(stderr, "takt-bench-gateway: cannot open the node or its ports\n");
		return 1;
	}
	rc = !strcmp(mode, "ping") ? ping(p, s, n, size)
	     : !strcmp(mode, "pong") ? pong(p, s, n, size)
	     : !strcmp(mode, "pub")  ? pub(p, s, n, size)
				     : sub(p, s, n);
	takt_node_close(node);
	return rc;
}
