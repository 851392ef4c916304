/* test_containers.c - takt between containers that share only the runtime
 * directory.
 *
 * A "container" here is what a container runtime makes without --ipc=host,
 * --pid=host or --network=host: a process that is pid 1 of new PID, mount,
 * IPC, network and UTS namespaces, with mounts made private, fresh tmpfs
 * on /dev/shm, /tmp and /run, its own /proc, and the test's runtime
 * directory (the broker's socket) bind-mounted at /run/takt. Of takt's
 * files that directory is all it shares (the rest of the root file system,
 * binaries and libraries, stays the host's; no image is pivoted into), and
 * besides it only the test's pipes that steer it. Segments are memfds and
 * eventfds passed over the socket (SCM_RIGHTS), so samples, wake-ups and
 * events cross over without a shared /dev/shm or IPC namespace. The broker
 * runs beside the test, or in a container of its own as pid 1, where
 * SO_PEERCRED tells it pid 0 for every client (none is visible in its PID
 * namespace): it uses the pid only to show it, and reclaims a killed
 * client by its socket hanging up.
 *
 * Needs root (namespaces, mounts); skipped otherwise.
 */
#include "harness.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000
#define CTR_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS)
#define CTR_RUNDIR "/run/takt" /* where a client container sees the runtime directory */
#define MAX_PAYLOAD 2048
#define BURST 100
#define N_BURSTS 10 /* 1000 samples */
#define HOLD_BURST 20

static struct h_broker broker;
static pid_t broker_inner; /* a contained broker, as we see it */

/* ---- containers --------------------------------------------------------- */

static const char *const ns_names[] = {"pid", "mnt", "ipc", "net"};
#define N_NS (sizeof(ns_names) / sizeof(ns_names[0]))
static ino_t host_ns[N_NS]; /* the test's, read before any container is made */

static ino_t ns_ino(pid_t pid, const char *ns)
{
	char path[64];
	struct stat st;

	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns);
	else
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns);
	return stat(path, &st) == 0 ? st.st_ino : 0;
}

/* Entries in /dev/shm, or -1. */
static int shm_entries(void)
{
	DIR *d = opendir("/dev/shm");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			fprintf(stderr, "/dev/shm/%s is there\n", e->d_name);
			n++;
		}
	closedir(d);
	return n;
}

/* What a runtime does between unshare and exec: private mounts, nothing of
 * the host's /dev/shm, /tmp or /run, and the runtime directory bound at
 * inside (docker run -v <host dir>:<inside>). */
static int ctr_enter(const char *host_dir, const char *inside)
{
	int dir = open(host_dir, O_PATH | O_DIRECTORY | O_CLOEXEC); /* before /tmp is covered */
	char self[64];

	H_CHECK(dir >= 0);
	H_CHECK(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0);
	H_CHECK(mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=1777") == 0);
	H_CHECK(mount("tmp", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") == 0);
	H_CHECK(mount("run", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") == 0);
	H_CHECK(mkdir(inside, 0700) == 0);
	snprintf(self, sizeof(self), "/proc/self/fd/%d", dir);
	H_CHECK(mount(self, inside, NULL, MS_BIND, NULL) == 0);
	close(dir);
	H_CHECK(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) == 0);
	H_CHECK(setenv("TAKT_RUNTIME_DIR", inside, 1) == 0);
	return 0;
}

/* Inside a container: pid 1, in none of the test's namespaces, with an
 * empty /dev/shm of its own (the test put a file in the host's). */
static int ctr_check(void)
{
	H_CHECK(getpid() == 1);
	for (unsigned i = 0; i < N_NS; i++)
		H_CHECK(ns_ino(0, ns_names[i]) != 0 && ns_ino(0, ns_names[i]) != host_ns[i]);
	H_CHECK(shm_entries() == 0);
	return 0;
}

struct ctr {
	int (*fn)(void *);
	void *arg;
	const char *inside;
};

static int ctr_main(void *a)
{
	const struct ctr *c = a;

	if (ctr_enter(broker.rundir, c->inside) || ctr_check())
		return 120;
	return c->fn(c->arg);
}

/* Runs fn(arg) in a new container; *ret_inner is its pid as we see it. */
static pid_t ctr_spawn(int (*fn)(void *), void *arg, pid_t *ret_inner)
{
	struct ctr c = {.fn = fn, .arg = arg, .inside = CTR_RUNDIR};

	return h_spawn_ns(ctr_main, &c, CTR_FLAGS, ret_inner);
}

/* h_broker_start_with's spawn: the broker as pid 1 of its own container.
 * It sees the runtime directory at the test's path (its config is there). */
static pid_t broker_ctr_spawn(int (*fn)(void *), void *arg)
{
	struct ctr c = {.fn = fn, .arg = arg, .inside = broker.rundir};

	return h_spawn_ns(ctr_main, &c, CTR_FLAGS, &broker_inner);
}

static int probe(void *a)
{
	(void)a;
	return 0;
}

static void needs_containers(void)
{
	pid_t pid, inner;

	if (geteuid() != 0) {
		print_message("skipped: needs root (namespaces and mounts)\n");
		skip();
	}
	pid = h_spawn_ns(probe, NULL, CTR_FLAGS, &inner);
	if (pid < 0 || h_wait(pid, WAIT_MS) != 0) {
		print_message("skipped: cannot make namespaces here (unshare %#x failed)\n", CTR_FLAGS);
		skip();
	}
}

/* ---- samples ------------------------------------------------------------ */

struct sample {
	uint64_t seq;
	uint32_t len; /* bytes of data[] */
	uint32_t sum; /* FNV-1a of data[] */
	uint8_t data[];
};

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static size_t sample_size(uint64_t seq)
{
	return sizeof(struct sample) + 1 + seq * 7919 % (MAX_PAYLOAD - sizeof(struct sample));
}

/* Sample seq: its length and bytes follow from seq. */
static void sample_fill(struct sample *s, uint64_t seq)
{
	uint64_t x = seq;

	s->seq = seq;
	s->len = (uint32_t)(sample_size(seq) - sizeof(*s));
	for (uint32_t i = 0; i < s->len; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		s->data[i] = (uint8_t)(x >> 56);
	}
	s->sum = fnv1a(s->data, s->len);
}

/* In order, whole, and the bytes the publisher wrote. */
static bool sample_ok(const void *payload, const struct takt_sample_info *info, uint64_t seq)
{
	static uint64_t want[MAX_PAYLOAD / sizeof(uint64_t)];
	const struct sample *s = payload, *w = (const struct sample *)want;

	sample_fill((struct sample *)want, seq);
	return info->seq == seq && info->size == sample_size(seq) && s->seq == seq && s->len == w->len &&
	       s->sum == w->sum && fnv1a(s->data, s->len) == s->sum;
}

static int publish(takt_pub *p, uint64_t seq)
{
	void *buf;

	H_CHECK(takt_pub_loan(p, sample_size(seq), &buf) == 0);
	sample_fill(buf, seq);
	return takt_pub_publish(p, buf) == 1 ? 0 : 1; /* one subscriber reached */
}

static bool readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	return poll(&p, 1, ms) == 1;
}

/* Takes sample seq, sleeping on the subscriber's eventfd while none waits. */
static int take_next(takt_sub *s, uint64_t seq)
{
	struct takt_sample_info info;
	const void *x;
	int r;

	while ((r = takt_sub_take(s, &x, &info)) == -EAGAIN) {
		r = takt_sub_arm(s);
		H_CHECK(r >= 0);
		if (r == 0)
			H_CHECK(readable(takt_sub_fd(s), WAIT_MS));
	}
	H_CHECK(r == 0);
	H_CHECK(sample_ok(x, &info, seq));
	takt_sub_release(s, x);
	return 0;
}

static int take_event(takt_event *ev, uint64_t *id)
{
	int r;

	while ((r = takt_event_take(ev, id)) == -EAGAIN)
		H_CHECK(readable(takt_event_fd(ev), WAIT_MS));
	return r == 0 ? 0 : 1;
}

/* The exchange: N_BURSTS bursts of BURST samples, each followed by event
 * "burst" with its number. Before each burst the subscriber parks (armed,
 * nothing waiting) and only then acks, so every burst's first sample has
 * to wake it through its eventfd, written by the publisher in another
 * PID namespace. */
static int send_bursts(takt_pub *p, takt_event *ev, struct h_chan *ack)
{
	uint64_t seq = 1;
	char c;

	for (uint64_t k = 1; k <= N_BURSTS; k++) {
		H_CHECK(h_chan_recv(ack, &c, 1, WAIT_MS) == 0 && c == 'a');
		for (int i = 0; i < BURST; i++)
			H_CHECK(publish(p, seq++) == 0);
		H_CHECK(takt_event_notify(ev, k) == 0);
	}
	H_CHECK(h_chan_recv(ack, &c, 1, WAIT_MS) == 0 && c == 'e');
	return 0;
}

static int recv_bursts(takt_sub *s, takt_event *ev, struct h_chan *ack)
{
	uint64_t seq = 1, id;

	for (uint64_t k = 1; k <= N_BURSTS; k++) {
		H_CHECK(takt_sub_arm(s) == 0); /* parked */
		H_CHECK(h_chan_send(ack, "a", 1) == 0);
		for (int i = 0; i < BURST; i++)
			H_CHECK(take_next(s, seq++) == 0);
		H_CHECK(take_event(ev, &id) == 0 && id == k);
	}
	H_CHECK(takt_sub_dropped(s) == 0);
	H_CHECK(h_chan_send(ack, "e", 1) == 0);
	return 0;
}

/* ---- exchange between containers ----------------------------------------- */

struct xchg {
	struct h_chan ack;      /* subscriber -> publisher */
	struct h_chan up, down; /* publisher <-> test */
};

static void xchg_open(struct xchg *x)
{
	assert_int_equal(h_chan_open(&x->ack), 0);
	assert_int_equal(h_chan_open(&x->up), 0);
	assert_int_equal(h_chan_open(&x->down), 0);
}

static void xchg_close(struct xchg *x)
{
	h_chan_close(&x->ack);
	h_chan_close(&x->up);
	h_chan_close(&x->down);
}

static int ctr_pub(void *a)
{
	struct takt_pub_opts po = {.topic = "ctr/samples", .max_payload = MAX_PAYLOAD};
	struct xchg *x = a;
	takt_node *n = h_node(broker.domain, "ctr-pub");
	takt_event *ev;
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(takt_event_open(n, "burst", &ev) == 0);
	H_CHECK(send_bursts(p, ev, &x->ack) == 0);
	H_CHECK(h_chan_send(&x->up, "d", 1) == 0);
	H_CHECK(h_chan_recv(&x->down, &c, 1, WAIT_MS) == 0); /* the test looked at our pool */
	H_CHECK(shm_entries() == 0);                         /* takt put nothing there */
	takt_node_close(n);
	return 0;
}

static int ctr_sub(void *a)
{
	struct takt_sub_opts so = {.topic = "ctr/samples", .queue_depth = 2 * BURST};
	struct xchg *x = a;
	takt_node *n = h_node(broker.domain, "ctr-sub");
	takt_event *ev;
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(takt_event_open(n, "burst", &ev) == 0);
	H_CHECK(takt_event_fd(ev) >= 0); /* listening */
	H_CHECK(recv_bursts(s, ev, &x->ack) == 0);
	H_CHECK(shm_entries() == 0);
	takt_node_close(n);
	return 0;
}

/* Polls the broker's status (bounded) until it counts these. */
static int wait_counts(uint32_t procs, uint32_t pubs, uint32_t subs, uint32_t conns)
{
	struct msg_status_reply st = {0};

	for (int waited = 0; waited <= WAIT_MS; waited += 10) {
		if (h_status(broker.domain, &st) == 0 && st.n_procs == procs && st.n_pubs == pubs &&
		    st.n_subs == subs && st.n_conns == conns)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "broker counts %u processes, %u publishers, %u subscribers, %u connections; "
		"wanted %u, %u, %u, %u\n", st.n_procs, st.n_pubs, st.n_subs, st.n_conns, procs, pubs, subs, conns);
	return -ETIMEDOUT;
}

/* The pid the broker shows for the only publisher (takt pools). */
static int32_t pool_pid(void)
{
	struct proto_pool_stat st[4];

	assert_int_equal(h_pools(broker.domain, st, 4), 1);
	return st[0].pid;
}

/* Publisher and subscriber each in a container, the broker beside the
 * test: 1000 samples in order with their checksums, the subscriber woken
 * across namespaces, events too. The broker's PID namespace is an
 * ancestor of theirs, so it shows the publisher by its pid as we see it. */
static void test_containers_pub_sub_in_own_namespaces(void **state)
{
	struct xchg x;
	pid_t pub, sub, pub_in, sub_in;
	char c;

	(void)state;
	needs_containers();
	assert_int_equal(h_broker_start(&broker, "ctr", NULL), 0);
	xchg_open(&x);
	sub = ctr_spawn(ctr_sub, &x, &sub_in);
	pub = ctr_spawn(ctr_pub, &x, &pub_in);
	assert_true(sub > 0 && pub > 0);
	assert_int_equal(h_chan_recv(&x.up, &c, 1, WAIT_MS), 0);
	assert_int_equal(pool_pid(), pub_in);
	assert_int_equal(h_chan_send(&x.down, "q", 1), 0);
	assert_int_equal(h_wait(sub, WAIT_MS), 0);
	assert_int_equal(h_wait(pub, WAIT_MS), 0);
	assert_int_equal(wait_counts(0, 0, 0, 0), 0);
	xchg_close(&x);
	h_broker_stop(&broker);
}

/* Stops a contained broker: SIGTERM reaches it although it is pid 1 of
 * its PID namespace (it blocks SIGTERM for its signalfd, and a blocked
 * signal is not dropped for pid 1), and it stops cleanly. */
static void broker_ctr_stop(void)
{
	kill(broker.pid, SIGTERM);
	assert_int_equal(h_wait(broker.pid, WAIT_MS), 0);
	broker.pid = 0;
	h_broker_stop(&broker);
}

static void broker_ctr_start(const char *tag)
{
	struct msg_status_reply st;

	assert_int_equal(h_broker_start_with(&broker, tag, NULL, broker_ctr_spawn), 0);
	for (unsigned i = 0; i < N_NS; i++)
		assert_true(ns_ino(broker_inner, ns_names[i]) != host_ns[i]);
	assert_int_equal(h_status(broker.domain, &st), 0);
	assert_int_equal(st.pid, 1); /* its own pid, in its namespace */
}

/* The broker in a container of its own as pid 1, a publisher here and a
 * subscriber in another container. Neither client's pid exists in the
 * broker's PID namespace: SO_PEERCRED gives it 0, which it only shows. */
static void test_containers_broker_in_own_namespaces(void **state)
{
	struct takt_pub_opts po = {.topic = "ctr/samples", .max_payload = MAX_PAYLOAD};
	struct xchg x;
	takt_event *ev;
	takt_node *n;
	takt_pub *p;
	pid_t sub, sub_in;

	(void)state;
	needs_containers();
	broker_ctr_start("ctr-broker");
	xchg_open(&x);
	sub = ctr_spawn(ctr_sub, &x, &sub_in); /* before we map anything it could inherit */
	assert_true(sub > 0);
	n = h_node(broker.domain, "host-pub");
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_event_open(n, "burst", &ev), 0);
	assert_int_equal(pool_pid(), 0);
	assert_int_equal(send_bursts(p, ev, &x.ack), 0);
	assert_int_equal(h_wait(sub, WAIT_MS), 0);
	takt_node_close(n);
	assert_int_equal(wait_counts(0, 0, 0, 0), 0);
	xchg_close(&x);
	broker_ctr_stop();
}

/* ---- a killed client in another PID namespace --------------------------- */

/* A publisher that acts on the test's commands: 'b' a burst of HOLD_BURST
 * samples, 'w' until its pool is whole (nothing out), 'q' quit. Each is
 * echoed when done. ch[0] up, ch[1] down. */
static int cmd_pub(void *a)
{
	struct takt_pub_opts po = {.topic = "ctr/held", .max_payload = MAX_PAYLOAD};
	struct h_chan *ch = a;
	takt_node *n = h_node(broker.domain, "cmd-pub");
	struct proto_pool_stat st;
	uint64_t seq = 1;
	takt_pub *p;
	char c;

	H_CHECK(takt_pub_open(n, &po, &p) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	for (;;) {
		H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0);
		if (c == 'q')
			break;
		for (int i = 0; c == 'b' && i < HOLD_BURST; i++)
			H_CHECK(publish(p, seq++) == 0);
		if (c == 'w') {
			H_CHECK(h_settle_pool(broker.domain, p, 0, &st) == 0);
			H_CHECK(st.loans == 0 && st.free == st.total);
		}
		H_CHECK(h_chan_send(&ch[0], &c, 1) == 0);
	}
	takt_node_close(n);
	return 0;
}

/* Takes half a burst and holds it, the rest stays queued; then waits to
 * be killed. */
static int holding_sub(void *a)
{
	struct takt_sub_opts so = {.topic = "ctr/held", .queue_depth = 2 * HOLD_BURST};
	struct h_chan *ch = a;
	takt_node *n = h_node(broker.domain, "victim");
	const void *x;
	takt_sub *s;
	char c;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0); /* the burst is queued */
	for (int i = 0; i < HOLD_BURST / 2; i++)
		H_CHECK(takt_sub_take(s, &x, NULL) == 0); /* never released */
	H_CHECK(h_chan_send(&ch[0], "h", 1) == 0);
	h_chan_recv(&ch[1], &c, 1, 4 * WAIT_MS); /* SIGKILL comes first */
	return 1;
}

/* Joins after the victim died: the next burst, whole and in order. */
static int late_sub(void *a)
{
	struct takt_sub_opts so = {.topic = "ctr/held", .queue_depth = 2 * HOLD_BURST};
	struct h_chan *ch = a;
	takt_node *n = h_node(broker.domain, "late");
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(takt_sub_arm(s) == 0);
	H_CHECK(h_chan_send(&ch[0], "r", 1) == 0);
	for (uint64_t seq = HOLD_BURST + 1; seq <= 2 * HOLD_BURST; seq++)
		H_CHECK(take_next(s, seq) == 0);
	H_CHECK(takt_sub_dropped(s) == 0);
	takt_node_close(n);
	return 0;
}

static void say(struct h_chan *ch, char cmd, char reply)
{
	char c;

	assert_int_equal(h_chan_send(&ch[1], &cmd, 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, reply);
}

static void listen_for(struct h_chan *ch, char reply)
{
	char c;

	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	assert_int_equal(c, reply);
}

/* What `takt status --json` says, with the test's runtime directory. */
static void expect_tool_status(const char *what)
{
	char cmd[256], out[2048];
	size_t n;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "%s status --json --domain %s", TAKT_TOOL_PATH, broker.domain);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	assert_int_equal(pclose(f), 0);
	if (!strstr(out, what))
		fail_msg("expected '%s' in: %s", what, out);
}

/* A subscriber in a container is SIGKILLed holding samples: the broker
 * sees its socket hang up (no pid needed), its ports and connection
 * vanish, the publisher gets every chunk back, and a new subscriber in
 * another container gets the next burst. */
static void killed_client(bool contained_broker)
{
	struct h_chan pc[2], vc[2], lc[2];
	pid_t pub, victim, late, pub_in, victim_in, late_in;

	for (int i = 0; i < 2; i++) {
		assert_int_equal(h_chan_open(&pc[i]), 0);
		assert_int_equal(h_chan_open(&vc[i]), 0);
		assert_int_equal(h_chan_open(&lc[i]), 0);
	}
	pub = ctr_spawn(cmd_pub, pc, &pub_in);
	assert_true(pub > 0);
	listen_for(pc, 'r');
	assert_int_equal(pool_pid(), contained_broker ? 0 : pub_in);
	victim = ctr_spawn(holding_sub, vc, &victim_in);
	assert_true(victim > 0);
	listen_for(vc, 'r');
	say(pc, 'b', 'b');
	say(vc, 'g', 'h');
	assert_int_equal(wait_counts(2, 1, 1, 1), 0);
	assert_int_equal(kill(victim_in, SIGKILL), 0);
	assert_int_equal(h_wait(victim, WAIT_MS), 128 + SIGKILL);
	assert_int_equal(wait_counts(1, 1, 0, 0), 0);
	expect_tool_status("\"processes\":1,\"topics\":1,\"publishers\":1,\"subscribers\":0,\"connections\":0");
	say(pc, 'w', 'w'); /* all 20 back: 10 held, 10 queued */
	late = ctr_spawn(late_sub, lc, &late_in);
	assert_true(late > 0);
	listen_for(lc, 'r');
	say(pc, 'b', 'b');
	assert_int_equal(h_wait(late, WAIT_MS), 0);
	assert_int_equal(h_chan_send(&pc[1], "q", 1), 0);
	assert_int_equal(h_wait(pub, WAIT_MS), 0);
	assert_int_equal(wait_counts(0, 0, 0, 0), 0);
	for (int i = 0; i < 2; i++) {
		h_chan_close(&pc[i]);
		h_chan_close(&vc[i]);
		h_chan_close(&lc[i]);
	}
}

static void test_containers_killed_client_reclaimed(void **state)
{
	(void)state;
	needs_containers();
	assert_int_equal(h_broker_start(&broker, "ctr-kill", NULL), 0);
	killed_client(false);
	h_broker_stop(&broker);
}

static void test_containers_killed_client_reclaimed_by_contained_broker(void **state)
{
	(void)state;
	needs_containers();
	broker_ctr_start("ctr-kill-broker");
	killed_client(true);
	broker_ctr_stop();
}

/* ---- fixture ------------------------------------------------------------ */

static char marker[64]; /* a file in the host's /dev/shm that no container may see */

static int setup(void **state)
{
	int fd;

	(void)state;
	for (unsigned i = 0; i < N_NS; i++)
		host_ns[i] = ns_ino(0, ns_names[i]);
	snprintf(marker, sizeof(marker), "/dev/shm/takt-test-containers-%d", getpid());
	fd = open(marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0)
		marker[0] = 0; /* not root: every case skips */
	else
		close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (marker[0])
		unlink(marker);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_containers_pub_sub_in_own_namespaces),
		cmocka_unit_test(test_containers_broker_in_own_namespaces),
		cmocka_unit_test(test_containers_killed_client_reclaimed),
		cmocka_unit_test(test_containers_killed_client_reclaimed_by_contained_broker),
	};

	return cmocka_run_group_tests_name("containers", tests, setup, teardown);
}
