/* test_badinput.c - malformed control messages get an error and cost
 * nothing else: the broker keeps serving everyone. */
#include "harness.h"
#include "ring.h"
#include "segment.h"

#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define WAIT_MS 30000

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "badinput", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

static int raw_connect(void)
{
	int s = -1;

	assert_int_equal(proto_connect(broker.domain, &s), 0);
	return s;
}

/* Sends raw bytes, returns the status of the broker's reply. */
static int raw_exchange(int s, const void *msg, size_t len)
{
	struct proto_reply rep;
	char buf[TAKT_PROTO_MAX_MSG];
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned nf = 0;
	long n;

	assert_int_equal(send(s, msg, len, MSG_NOSIGNAL), (long)len);
	n = proto_recv(s, buf, sizeof(buf), fds, TAKT_PROTO_MAX_FDS, &nf);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	assert_true(n >= (long)sizeof(rep));
	memcpy(&rep, buf, sizeof(rep));
	assert_int_equal(rep.hdr.magic, TAKT_PROTO_MAGIC);
	return rep.status;
}

static void hdr(void *m, uint16_t type, size_t size)
{
	proto_hdr_init(m, type, (uint32_t)size, 7);
}

/* The broker still serves a well-behaved client. */
static void assert_broker_serves(void)
{
	struct takt_pub_opts po = {.topic = "alive", .max_payload = 8};
	takt_node *n = h_node(broker.domain, "healthy");
	takt_pub *p;

	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	takt_node_close(n);
	assert_int_equal(h_wait_pools_full(broker.domain, 2000), 0);
}

static void test_badinput_framing(void **state)
{
	struct msg_hello hello = {.abi_version = TAKT_ABI_VERSION};
	char big[TAKT_PROTO_MAX_MSG + 500];
	char tiny[6] = {1, 2, 3, 4, 5, 6};
	int s = raw_connect();

	(void)state;
	assert_int_equal(raw_exchange(s, tiny, sizeof(tiny)), -EBADMSG);
	hdr(&hello, MSG_HELLO, sizeof(hello));
	hello.hdr.magic = 0xdeadbeef;
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EBADMSG);
	hdr(&hello, MSG_HELLO, sizeof(hello));
	hello.hdr.version = 99;
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EPROTONOSUPPORT);
	hdr(&hello, 77, sizeof(hello));
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EOPNOTSUPP);
	hdr(&hello, MSG_HELLO, sizeof(hello) + 8); /* size field lies */
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EBADMSG);
	hdr(&hello, MSG_HELLO, sizeof(hello));
	assert_int_equal(raw_exchange(s, &hello, 20), -EBADMSG); /* truncated */
	memset(big, 0, sizeof(big));
	hdr(big, MSG_HELLO, sizeof(big));
	assert_int_equal(raw_exchange(s, big, sizeof(big)), -EBADMSG); /* oversized */
	struct msg_pub_open po = {.max_payload = 8};
	hdr(&po, MSG_PUB_OPEN, sizeof(po));
	strcpy(po.topic, "early");
	assert_int_equal(raw_exchange(s, &po, sizeof(po)), -EPERM); /* HELLO first */
	close(s);
	assert_broker_serves();
}

static void test_badinput_fields(void **state)
{
	struct msg_hello hello = {.abi_version = TAKT_ABI_VERSION};
	struct msg_pub_open po = {.max_payload = 8};
	struct msg_sub_open so = {.queue_depth = 8};
	struct msg_index mi = {.index = 999999};
	int s = raw_connect();

	(void)state;
	hdr(&hello, MSG_HELLO, sizeof(hello));
	hello.abi_version = 42;
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EPROTO);
	hello.abi_version = TAKT_ABI_VERSION;
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), 0);
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), -EALREADY);
	hdr(&po, MSG_PUB_OPEN, sizeof(po));
	strcpy(po.topic, "spa ce");
	assert_int_equal(raw_exchange(s, &po, sizeof(po)), -EINVAL);
	memset(po.topic, 'a', sizeof(po.topic)); /* no terminating NUL */
	assert_int_equal(raw_exchange(s, &po, sizeof(po)), -EINVAL);
	strcpy(po.topic, "ok");
	memset(po.type_name, '!', 8);
	assert_int_equal(raw_exchange(s, &po, sizeof(po)), -EINVAL);
	memset(po.type_name, 0, sizeof(po.type_name));
	po.history = 1000;
	assert_int_equal(raw_exchange(s, &po, sizeof(po)), -EINVAL);
	hdr(&so, MSG_SUB_OPEN, sizeof(so));
	strcpy(so.topic, "ok");
	so.overflow = 7;
	assert_int_equal(raw_exchange(s, &so, sizeof(so)), -EINVAL);
	so.overflow = 0;
	so.queue_depth = 1u << 30;
	assert_int_equal(raw_exchange(s, &so, sizeof(so)), -EINVAL);
	for (uint16_t t = MSG_PUB_CLOSE; t <= MSG_EVENT_CLOSE; t++) {
		if (t == MSG_SUB_OPEN || t == MSG_EVENT_OPEN)
			continue;
		hdr(&mi, t, sizeof(mi));
		/* 6 was CONN_FDS (protocol 2): gone, connections are pushed */
		assert_int_equal(raw_exchange(s, &mi, sizeof(mi)), t == 6 ? -EOPNOTSUPP : -EINVAL);
	}
	close(s);
	assert_broker_serves();
}

/* A client may not close another process's ports. */
static void test_badinput_foreign_port(void **state)
{
	struct takt_pub_opts po = {.topic = "mine", .max_payload = 8};
	struct msg_hello hello = {.abi_version = TAKT_ABI_VERSION};
	struct msg_index mi = {.index = 0};
	takt_node *n = h_node(broker.domain, "owner");
	int s = raw_connect();
	takt_pub *p;

	(void)state;
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	hdr(&hello, MSG_HELLO, sizeof(hello));
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), 0);
	for (mi.index = 0; mi.index < 64; mi.index++) { /* whichever port is ours: none is theirs */
		int r;

		hdr(&mi, MSG_PUB_CLOSE, sizeof(mi));
		r = raw_exchange(s, &mi, sizeof(mi));
		assert_true(r == -EPERM || r == -EINVAL);
		hdr(&mi, MSG_SUB_CLOSE, sizeof(mi));
		r = raw_exchange(s, &mi, sizeof(mi));
		assert_true(r == -EPERM || r == -EINVAL);
	}
	assert_int_equal(takt_pub_send(p, "x", 1), 0); /* still ours and working */
	close(s);
	takt_node_close(n);
	assert_broker_serves();
}

/* A raw HELLO, as a hostile client would send it: returns how many segment
 * descriptors the broker handed over (the management segment first), or 0. */
static unsigned raw_hello_fds(int *s, int fds[TAKT_PROTO_MAX_FDS])
{
	struct msg_hello hello = {.abi_version = TAKT_ABI_VERSION};
	struct msg_hello_reply rep;
	unsigned nf = 0;

	if (proto_connect(broker.domain, s) != 0)
		return 0;
	proto_hdr_init(&hello.hdr, MSG_HELLO, sizeof(hello), 1);
	if (proto_call(*s, &hello, sizeof(hello), &rep, sizeof(rep), fds, TAKT_PROTO_MAX_FDS, &nf, 5000, NULL,
		       NULL) != 0)
		return 0;
	return nf;
}

/* The registry cannot be written by any client: the descriptor a client
 * gets is read-only, and the segment is sealed against new writable
 * mappings and writes (F_SEAL_FUTURE_WRITE), so not even root reopening it
 * read-write through /proc can. (It once could: every client mapped it
 * read-write, and the broker had to survive garbage in it.) */
static void test_badinput_registry_not_writable(void **state)
{
	struct takt_pub_opts po = {.topic = "victim", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "victim", .queue_depth = 4};
	takt_node *a = h_node(broker.domain, "a"), *n;
	int fds[TAKT_PROTO_MAX_FDS], sock;
	unsigned nf;
	const uint64_t *x;
	takt_pub *p;
	takt_sub *s;
	struct stat st;
	char path[64];
	void *h;
	int fd;

	(void)state;
	assert_int_equal(takt_pub_open(a, &po, &p), 0);
	nf = raw_hello_fds(&sock, fds);
	assert_int_equal(nf, 1); /* the registry */
	fd = fds[0];
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(fcntl(fd, F_GETFL) & O_ACCMODE, O_RDONLY);
	assert_true(fcntl(fd, F_GET_SEALS) & F_SEAL_FUTURE_WRITE);
	h = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(h == MAP_FAILED && errno == EACCES);
	h = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(h != MAP_FAILED);
	assert_int_equal(mprotect(h, 4096, PROT_READ | PROT_WRITE), -1);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd >= 0) { /* root (or the broker's user) may reopen it: still no write */
		assert_true(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
		assert_int_equal(errno, EPERM);
		assert_true(pwrite(fd, "x", 1, 0) < 0 && errno == EPERM);
		close(fd);
	} else {
		assert_int_equal(errno, EACCES);
	}
	munmap(h, (size_t)st.st_size);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	close(sock);
	/* The broker still matches topics, builds connections and reclaims. */
	n = h_node(broker.domain, "b");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	uint64_t v = 42;
	assert_int_equal(takt_pub_send(p, &v, sizeof(v)), 1);
	assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
	assert_int_equal(*x, 42);
	takt_sub_release(s, x);
	takt_node_close(a);
	takt_node_close(n);
	assert_broker_serves();
}

/* Sends a request on a raw connection and collects the descriptors of every
 * push that comes before its reply and of the reply itself (a client that
 * never confirms: the broker answers after its ack timeout). */
static uint32_t raw_last_index; /* the index of raw_collect's last reply */

static unsigned raw_collect(int s, void *req, size_t size, int *fds, unsigned max);

/* As takt_sub_open does on a raw connection: SUB_OPEN (its eventfd and its
 * segment, read-write), the segment mapped, then SUB_CONNECT (the broker
 * seals the segment and pushes the publishers' pools, read-only). Returns
 * how many descriptors it collected into fds. */
static unsigned raw_sub_open(int s, const char *topic, uint32_t req_id, int *fds, unsigned max)
{
	struct msg_sub_open so = {.queue_depth = 4};
	struct msg_index sc = {0};
	unsigned n;

	proto_hdr_init(&so.hdr, MSG_SUB_OPEN, sizeof(so), req_id);
	strcpy(so.topic, topic);
	n = raw_collect(s, &so, sizeof(so), fds, max);
	if (n != 2 || mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0) == MAP_FAILED)
		return n;
	sc.index = raw_last_index;
	proto_hdr_init(&sc.hdr, MSG_SUB_CONNECT, sizeof(sc), req_id + 1);
	return n + raw_collect(s, &sc, sizeof(sc), fds + n, max - n);
}

static unsigned raw_collect(int s, void *req, size_t size, int *fds, unsigned max)
{
	union {
		struct proto_reply r;
		char bytes[TAKT_PROTO_MAX_MSG];
	} buf;
	const struct proto_hdr *h = req;
	unsigned n = 0;

	if (proto_send(s, req, size, NULL, 0) < 0)
		return 0;
	for (int i = 0; i < 64; i++) {
		struct pollfd pfd = {.fd = s, .events = POLLIN};
		int got[TAKT_PROTO_MAX_FDS];
		unsigned ng = 0;
		long len;

		if (poll(&pfd, 1, 10000) != 1)
			break;
		len = proto_recv(s, &buf, sizeof(buf), got, TAKT_PROTO_MAX_FDS, &ng);
		if (len <= 0)
			break;
		for (unsigned k = 0; k < ng; k++)
			if (n < max)
				fds[n++] = got[k];
			else
				close(got[k]);
		if (!proto_is_push(&buf, len) && buf.r.hdr.req_id == h->req_id) {
			raw_last_index = buf.r.index;
			break;
		}
	}
	return n;
}

/* A hostile process gets every kind of segment descriptor a client can get
 * (the registry with a raw HELLO, its own pool with PUB_OPEN, the victims'
 * publisher's pool, read-only, by subscribing to their topic) and tries to
 * truncate or grow each: the seals and read-only descriptors refuse, so no
 * other process can be made to SIGBUS, and the victims' pool cannot be
 * mapped writable. A pair in other processes keeps exchanging samples
 * throughout. */
static int truncating_child(void *a)
{
	struct msg_pub_open po = {.max_payload = 64};
	struct msg_index pc = {0};
	int fds[16], s;
	unsigned nf = raw_hello_fds(&s, fds);

	(void)a;
	H_CHECK(nf == 1); /* the registry, read-only */
	proto_hdr_init(&po.hdr, MSG_PUB_OPEN, sizeof(po), 2);
	strcpy(po.topic, "hostile");
	nf += raw_collect(s, &po, sizeof(po), fds + nf, 16 - nf);
	H_CHECK(nf == 2); /* its own pool, read-write */
	/* As takt_pub_open does: mapped, then connected, so the broker seals it. */
	H_CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0) != MAP_FAILED);
	pc.index = raw_last_index;
	proto_hdr_init(&pc.hdr, MSG_PUB_CONNECT, sizeof(pc), 3);
	H_CHECK(raw_collect(s, &pc, sizeof(pc), fds + nf, 16 - nf) == 0);
	nf += raw_sub_open(s, "sealed", 4, fds + nf, 16 - nf);
	H_CHECK(nf == 5); /* its own eventfd and segment, the victims' pool (read-only) */
	for (unsigned i = 0; i < nf; i++) {
		struct stat st;
		int ro;

		H_CHECK(fstat(fds[i], &st) == 0);
		if (st.st_size == 0)
			continue; /* the eventfd */
		ro = (fcntl(fds[i], F_GETFL) & O_ACCMODE) == O_RDONLY;
		H_CHECK(ftruncate(fds[i], 0) < 0 && errno == (ro ? EINVAL : EPERM));
		H_CHECK(ftruncate(fds[i], st.st_size / 2) < 0);
		H_CHECK(ftruncate(fds[i], st.st_size * 2) < 0);
		H_CHECK(fallocate(fds[i], 0, 0, st.st_size * 2) < 0 && errno == (ro ? EBADF : EPERM));
		/* (Punching a hole is a write, like one through a writable
		 * mapping: refused once segments carry F_SEAL_FUTURE_WRITE.) */
		H_CHECK(fcntl(fds[i], F_ADD_SEALS, F_SEAL_WRITE) < 0 && errno == EPERM); /* sealed set */
		if (ro)
			H_CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0) == MAP_FAILED &&
				errno == EACCES);
		H_CHECK(fstat(fds[i], &st) == 0 && st.st_size > 0);
	}
	return 0;
}

static void test_badinput_truncate_segments(void **state)
{
	struct takt_pub_opts po = {.topic = "sealed", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "sealed", .queue_depth = 4};
	takt_node *n = h_node(broker.domain, "victims");
	const uint64_t *x;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	for (uint64_t i = 1; i <= 3; i++) {
		if (i == 2)
			assert_int_equal(h_wait(h_spawn(truncating_child, NULL), 30000), 0);
		/* 2 while the broker has not yet seen the attacker's subscriber go */
		assert_true(takt_pub_send(p, &i, sizeof(i)) >= 1);
		assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
		assert_int_equal(*x, i);
		takt_sub_release(s, x);
	}
	takt_node_close(n);
	assert_broker_serves();
}

/* A subscriber of another user (the threat model: no ptrace rights over
 * the victims) holds a read-only descriptor of the victims' pool. Reopening
 * it through /proc/self/fd (a magic link: the open checks the segment's own
 * mode, not the descriptor's) must not give it a writable one, or it could
 * write into every sample the publisher sends. The child connects as root
 * (which may reopen anything, but the pool's F_SEAL_FUTURE_WRITE refuses
 * every new writable mapping and write), then drops to nobody, and stays
 * dumpable so its own /proc/self/fd is open to it: a read-only reopen works
 * (so the check is not vacuous), a read-write one is refused. */
/* A segment held read-only (not the eventfd: size 0; not the caller's
 * own segment: read-write). */
static bool segment_ro(int fd)
{
	struct stat st;

	if (fstat(fd, &st) != 0) {
		perror("segment_ro: fstat");
		_exit(1); /* the child fails, as H_CHECK would */
	}
	return st.st_size != 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY;
}

static int other_user_child(void *a)
{
	int fds[16], s, n_ro = 0;
	unsigned nf = raw_hello_fds(&s, fds);

	(void)a;
	H_CHECK(nf == 1);
	nf += raw_sub_open(s, "reopen", 2, fds + nf, 16 - nf);
	H_CHECK(nf == 4); /* the registry, its eventfd and segment, the victims' pool */
	/* Still root, which may reopen anything: the pool is sealed against
	 * new writable mappings (F_SEAL_FUTURE_WRITE), so even a read-write
	 * reopen cannot be mapped or written. */
	for (unsigned i = 0; i < nf; i++) {
		char path[64];
		int fd;

		if (!segment_ro(fds[i]))
			continue;
		H_CHECK(fcntl(fds[i], F_GET_SEALS) & F_SEAL_FUTURE_WRITE);
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[i]);
		fd = open(path, O_RDWR | O_CLOEXEC);
		H_CHECK(fd >= 0); /* root */
		H_CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED && errno == EPERM);
		H_CHECK(pwrite(fd, "x", 1, 4096) < 0 && errno == EPERM);
		close(fd);
	}
	H_CHECK(setgid(65534) == 0 && setuid(65534) == 0 && geteuid() == 65534);
	H_CHECK(prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) == 0);
	for (unsigned i = 0; i < nf; i++) {
		char path[64];
		struct stat st;
		int fd;

		if (!segment_ro(fds[i]))
			continue; /* the eventfd; its own segment (read-write) */
		n_ro++;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[i]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		H_CHECK(fd >= 0); /* /proc is open to us: the refusal below is the segment's */
		close(fd);
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			H_CHECK(fstat(fds[i], &st) == 0);
			fprintf(stderr, "other_user_child: reopened a read-only segment read-write (mode %o)\n",
				(unsigned)(st.st_mode & 07777));
			return 1;
		}
		H_CHECK(errno == EACCES);
		H_CHECK(fchmod(fds[i], 0666) < 0 && errno == EPERM); /* not its owner */
		H_CHECK(mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fds[i], 0) == MAP_FAILED);
	}
	H_CHECK(n_ro == 2); /* the registry, the victims' pool */
	return 0;
}

static void test_badinput_pool_not_writable_by_reopening(void **state)
{
	struct takt_pub_opts po = {.topic = "reopen", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "reopen", .queue_depth = 4};
	takt_node *n;
	const uint64_t *x;
	takt_pub *p;
	takt_sub *s;

	(void)state;
	if (geteuid() != 0) {
		print_message("skipped: needs root (a child drops to another user)\n");
		skip();
	}
	n = h_node(broker.domain, "victims");
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(h_wait(h_spawn(other_user_child, NULL), 30000), 0);
	for (uint64_t i = 1; i <= 3; i++) {
		assert_true(takt_pub_send(p, &i, sizeof(i)) >= 1);
		assert_int_equal(takt_sub_take(s, (const void **)&x, NULL), 0);
		assert_int_equal(*x, i);
		takt_sub_release(s, x);
	}
	takt_node_close(n);
	assert_broker_serves();
}

/* Where this process has mapped the memfd segment called name (its
 * /proc/self/maps line "... /memfd:<name> (deleted)"), and how much. */
static int find_mapping(const char *name, int writable, void **base, size_t *size)
{
	char line[512], want[160];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = -1;

	snprintf(want, sizeof(want), "/memfd:%s (deleted)", name);
	while (f && found < 0 && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (!strstr(line, want) || sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) != 3 ||
		    (perms[1] == 'w') != (writable != 0))
			continue;
		*base = (void *)lo;
		*size = hi - lo;
		found = 0;
	}
	if (f)
		fclose(f);
	return found;
}

/* A subscriber that writes garbage into its own return ring: an index out
 * of range, chunks its publisher never sent it, a chunk several times,
 * then a return head that jumps back. The publisher refuses them (and
 * counts them), nothing is freed twice, the other subscriber keeps
 * receiving every sample in order, and once both are gone the pool is
 * whole. */
static int bad_returner_child(void *a)
{
	struct takt_sub_opts so = {.topic = "returns", .queue_depth = 8};
	struct h_chan *ch = a;
	takt_node *n = h_node(broker.domain, "returner");
	struct seg_view v;
	struct seg_subseg ss;
	struct ret_prod rp;
	struct stat st;
	char name[96];
	void *seg;
	size_t seg_size;
	int fds[TAKT_PROTO_MAX_FDS], sock;
	uint32_t me = TAKT_NONE, ci;
	const void *x;
	void *h;
	char c;
	takt_sub *s;

	H_CHECK(takt_sub_open(n, &so, &s) == 0);
	H_CHECK(h_chan_send(&ch[0], "s", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0); /* samples were published */
	H_CHECK(takt_sub_take(s, &x, NULL) == 0);         /* one legitimately held */
	H_CHECK(raw_hello_fds(&sock, fds) == 1 && fstat(fds[0], &st) == 0);
	h = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fds[0], 0);
	H_CHECK(h != MAP_FAILED && seg_view_init(&v, h, (size_t)st.st_size) == 0);
	for (uint32_t i = 0; i < v.lim.processes; i++) /* our own node's process entry */
		if (atomic_load(&v.procs[i].state) == SLOT_ACTIVE && v.procs[i].pid == getpid() &&
		    !strcmp(v.procs[i].name, "returner"))
			me = i;
	H_CHECK(me != TAKT_NONE);
	for (ci = 0; ci < v.lim.connections; ci++) /* our connection */
		if (atomic_load(&v.conns[ci].state) == SLOT_ACTIVE && v.conns[ci].sub < v.lim.subscribers &&
		    v.subs[v.conns[ci].sub].proc == me)
			break;
	H_CHECK(ci < v.lim.connections);
	/* Our own segment, as the library mapped it: its return ring of that
	 * connection (32 entries: depth 8 + held_max 16, a power of two). */
	snprintf(name, sizeof(name), "takt.%s.sub%u", broker.domain, v.conns[ci].sub);
	H_CHECK(find_mapping(name, 1, &seg, &seg_size) == 0);
	H_CHECK(seg_subseg_check(&v, v.conns[ci].sub, seg, seg_size, &ss) == 0);
	ret_prod_init(&rp, seg_subseg_conn(&ss, v.conns[ci].sub_slot), NULL, seg_subseg_rets(&ss, v.conns[ci].sub_slot),
		      v.conns[ci].ret_mask);
	H_CHECK(ret_push(&rp, 999999) == 0); /* out of range */
	for (uint32_t k = 0; k < 14; k++)    /* mostly chunks it never sent us */
		H_CHECK(ret_push(&rp, k) == 0);
	takt_sub_release(s, x); /* the real return ... (through our own producer copy) */
	for (uint32_t k = 0; k < 14; k++)    /* ... and all of them again */
		H_CHECK(ret_push(&rp, k) == 0);
	H_CHECK(h_chan_send(&ch[0], "g", 1) == 0);
	H_CHECK(h_chan_recv(&ch[1], &c, 1, WAIT_MS) == 0); /* the publisher drained */
	atomic_store(&seg_subseg_conn(&ss, v.conns[ci].sub_slot)->ret_head, 3); /* behind the publisher's tail */
	H_CHECK(h_chan_send(&ch[0], "b", 1) == 0);
	pause();
	return 0;
}

/* Publishes n samples the victim subscriber leaves queued (the pool runs
 * half out, so the publisher drains its return rings), then takes them. */
static void returns_round(takt_pub *p, takt_sub *s, uint64_t *v, uint64_t *next, int n)
{
	const uint64_t *x;

	for (int i = 0; i < n; i++) {
		++*v;
		assert_true(takt_pub_send(p, v, sizeof(*v)) >= 1);
	}
	while (takt_sub_take(s, (const void **)&x, NULL) == 0) {
		assert_int_equal(*x, (*next)++); /* never torn, lost or repeated */
		takt_sub_release(s, x);
	}
	assert_int_equal(*next, *v + 1);
}

static void test_badinput_hostile_returns(void **state)
{
	struct takt_pub_opts po = {.topic = "returns", .max_payload = 8};
	struct takt_sub_opts so = {.topic = "returns", .queue_depth = 64};
	takt_node *n = h_node(broker.domain, "victims");
	struct proto_pool_stat st;
	struct h_chan ch[2];
	uint64_t next = 1, v = 0;
	takt_pub *p;
	takt_sub *s;
	pid_t pid;
	char c;

	(void)state;
	assert_int_equal(h_chan_open(&ch[0]), 0);
	assert_int_equal(h_chan_open(&ch[1]), 0);
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	pid = h_spawn(bad_returner_child, ch);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0);
	returns_round(p, s, &v, &next, 5);
	assert_int_equal(h_chan_send(&ch[1], "n", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0); /* garbage returned */
	for (int r = 0; r < 4; r++)
		returns_round(p, s, &v, &next, 60);
	assert_int_equal(h_chan_send(&ch[1], "n", 1), 0);
	assert_int_equal(h_chan_recv(&ch[0], &c, 1, WAIT_MS), 0); /* head moved back */
	for (int r = 0; r < 4; r++)
		returns_round(p, s, &v, &next, 60);
	assert_int_equal(h_pool_of(broker.domain, takt_pub_id(p), &st), 0);
	/* At least: the out-of-range index, the repeated returns (14 pushed
	 * twice, at most 9 of them outstanding on that connection), the head
	 * that moved back. */
	assert_true(st.bad_returns >= 1 + 19 + 1);
	assert_true(st.free + st.in_flight == st.total);
	kill(pid, SIGKILL);
	assert_int_equal(h_wait(pid, WAIT_MS), 128 + SIGKILL);
	takt_sub_close(s);
	assert_int_equal(h_settle_pool(broker.domain, p, 0, &st), 0); /* both connections retired and reclaimed */
	assert_int_equal(st.in_flight, 0); /* every chunk back, none twice */
	assert_int_equal(st.free, st.total);
	takt_node_close(n);
	h_chan_close(&ch[0]);
	h_chan_close(&ch[1]);
	assert_broker_serves();
}

/* One packet within timeout_ms into buf (descriptors closed): its size, or
 * 0 after the timeout. */
static long recv_within(int s, void *buf, size_t size, int timeout_ms)
{
	struct pollfd pfd = {.fd = s, .events = POLLIN};
	int fds[TAKT_PROTO_MAX_FDS];
	unsigned nf = 0;
	long n;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return 0;
	n = proto_recv(s, buf, size, fds, TAKT_PROTO_MAX_FDS, &nf);
	for (unsigned i = 0; i < nf; i++)
		close(fds[i]);
	assert_true(n > 0);
	return n;
}

static unsigned long broker_wakeups(void)
{
	char path[64], line[128];
	unsigned long v = 0, nv = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)broker.pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "voluntary_ctxt_switches: %lu", &v) != 1)
			sscanf(line, "nonvoluntary_ctxt_switches: %lu", &nv);
	fclose(f);
	return v + nv;
}

/* Found by takt-fuzz-broker: a second open while the first waits for its
 * acks (A0) lost the first's reply and left the broker counting a pending
 * open forever, ticking every millisecond. A node whose calls time out
 * sooner than [socket] confirm_timeout_ms does just that. */
static void test_badinput_second_open_while_one_waits(void **state)
{
	struct msg_hello hello = {.abi_version = TAKT_ABI_VERSION};
	struct msg_event_open eo = {0};
	struct msg_index listen = {.index = 0};
	union {
		struct proto_reply r;
		struct msg_push_ev push;
		char bytes[TAKT_PROTO_MAX_MSG];
	} in;
	struct msg_push_ev ready[2];
	bool answered[2] = {false, false};
	unsigned n_ready = 0;
	unsigned long wakeups;
	int s = raw_connect();

	(void)state;
	hdr(&hello, MSG_HELLO, sizeof(hello));
	strcpy(hello.name, "impatient");
	assert_int_equal(raw_exchange(s, &hello, sizeof(hello)), 0);
	hdr(&eo, MSG_EVENT_OPEN, sizeof(eo));
	strcpy(eo.name, "impatient");
	assert_int_equal(send(s, &eo, sizeof(eo), MSG_NOSIGNAL), (long)sizeof(eo));
	assert_int_equal(recv_within(s, &in, sizeof(in), WAIT_MS), (long)sizeof(in.r));
	assert_true(in.r.status >= 0);
	listen.index = in.r.index;
	/* Each listen waits for this very client's EV_READY; it sends none
	 * before both went out. */
	for (uint32_t i = 0; i < 2; i++) {
		proto_hdr_init(&listen.hdr, MSG_EVENT_LISTEN, sizeof(listen), 100 + i);
		assert_int_equal(send(s, &listen, sizeof(listen), MSG_NOSIGNAL), (long)sizeof(listen));
	}
	/* The first listen is answered once the second comes (its caller gave
	 * up on it), the second once both listeners are confirmed. */
	while (!answered[1]) {
		long n = recv_within(s, &in, sizeof(in), 5000);

		assert_true(n > 0); /* a reply lost: nothing comes */
		if (proto_is_push(&in, n)) {
			assert_int_equal(in.push.hdr.type, MSG_PUSH_EV_LISTENER | PROTO_PUSH_FLAG);
			assert_true(n_ready < 2);
			ready[n_ready] = in.push;
			proto_hdr_init(&ready[n_ready].hdr, MSG_EV_READY, sizeof(ready[0]), 0);
			assert_int_equal(send(s, &ready[n_ready], sizeof(ready[0]), MSG_NOSIGNAL),
					 (long)sizeof(ready[0]));
			n_ready++;
			continue;
		}
		assert_int_equal(in.r.hdr.type, MSG_EVENT_LISTEN | PROTO_REPLY_FLAG);
		assert_true(in.r.hdr.req_id == 100 || in.r.hdr.req_id == 101);
		assert_int_equal(in.r.status, 0);
		answered[in.r.hdr.req_id - 100] = true;
	}
	assert_true(answered[0]);
	close(s);
	/* Nothing waits any more: an idle broker does not tick. */
	usleep(100 * 1000);
	wakeups = broker_wakeups();
	usleep(300 * 1000);
	assert_true(broker_wakeups() - wakeups < 100);
	assert_broker_serves();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_badinput_truncate_segments),
		cmocka_unit_test(test_badinput_pool_not_writable_by_reopening),
		cmocka_unit_test(test_badinput_framing),
		cmocka_unit_test(test_badinput_fields),
		cmocka_unit_test(test_badinput_foreign_port),
		cmocka_unit_test(test_badinput_registry_not_writable),
		cmocka_unit_test(test_badinput_hostile_returns),
		cmocka_unit_test(test_badinput_second_open_while_one_waits),
	};

	return cmocka_run_group_tests_name("badinput", tests, setup, teardown);
}
