/* segments.c - creating, reserving and sealing a domain's segments.
 *
 * One broker per domain: an flock on <runtime dir>/takt-<domain>.lock, the
 * only name a domain has besides its socket. Segments are memfds: nothing
 * is named in /dev/shm, so nothing can be left there by a crash (the kernel
 * frees a segment with its last mapping or descriptor) and a small /dev/shm
 * does not matter. Each is sized, reserved (fallocate, so running out of
 * memory is a start-up error, not a SIGBUS in a client later) and sealed
 * against shrinking and growing before any descriptor leaves the broker: a
 * client that ftruncates its descriptor gets EPERM and nobody else notices.
 *
 * A publisher's pool is a memfd sized for the most chunks it could ever
 * need (address space only) of which the broker reserves (fallocate) what
 * its loans, history and connected subscribers need now, and more as
 * subscribers connect; reserving fails cleanly (ENOMEM) instead of a page
 * fault failing later. Subscribers get a read-only descriptor of it.
 */
#include "broker.h"

#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>
#include <time.h>
#include <unistd.h>

#define SEG_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)
/* A pool (or a subscriber's segment) is sealed against writes through new
 * mappings once its writer mapped it (reg_pub_connect, reg_sub_connect);
 * until then the set stays open. */
#define POOL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)

/* Opens and flocks the lock file; 1 when the name was replaced meanwhile
 * (a broker exiting unlinks it while holding it), so the caller retries. */
static int lock_try(struct broker *b, int *ret_fd)
{
	struct stat a, c;
	int fd = open(b->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600), r;

	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "takt-broker: cannot open lock %s: %s\n", b->lock_path, strerror(errno));
		return r;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EEXIST : -errno;
		close(fd);
		fprintf(stderr, "takt-broker: a broker already runs for domain '%s' (lock %s held)\n",
			b->cfg.domain, b->lock_path);
		return r;
	}
	if (fstat(fd, &a) < 0 || stat(b->lock_path, &c) < 0 || a.st_ino != c.st_ino) {
		close(fd);
		return 1;
	}
	*ret_fd = fd;
	return 0;
}

static void lock_read_record(struct broker *b);

/* The lock sits next to the socket it guards: brokers with different
 * runtime directories share nothing (segments have no names), so they may
 * serve domains of the same name. The holder unlinks it on exit; whoever
 * locks checks it locked the file that still carries the name. */
int seg_lock_domain(struct broker *b)
{
	int r = proto_runtime_dir_make();

	if (r < 0) {
		fprintf(stderr, "takt-broker: cannot use the runtime directory: %s\n", strerror(-r));
		return r;
	}
	r = proto_runtime_path(b->cfg.domain, "lock", b->lock_path, sizeof(b->lock_path));
	if (r < 0)
		return r;
	for (int tries = 0; tries < 100; tries++) {
		r = lock_try(b, &b->lock_fd);
		if (r < 0)
			return r;
		if (r == 0) {
			lock_read_record(b);
			return 0;
		}
	}
	return -EBUSY;
}

/* The lock file holds "epoch inode" of its holder's registry (written by
 * seg_record_registry, 0600, the broker's user's): a broker that died
 * leaves it, and its successor adopts only that registry (adopt.c), not
 * one a client made up. */
static void lock_read_record(struct broker *b)
{
	char buf[64] = {0};
	unsigned long long epoch, ino;

	if (pread(b->lock_fd, buf, sizeof(buf) - 1, 0) > 0 && sscanf(buf, "%llu %llu", &epoch, &ino) == 2) {
		b->adopt_expect_epoch = epoch;
		b->adopt_expect_ino = ino;
	}
}

int seg_record_registry(struct broker *b)
{
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "%llu %llu\n", (unsigned long long)b->epoch,
			 (unsigned long long)seg_fd_ino(b->mgmt_fd));

	if (ftruncate(b->lock_fd, 0) < 0 || pwrite(b->lock_fd, buf, (size_t)n, 0) != n)
		return -errno;
	return 0;
}

void seg_leave_domain(struct broker *b)
{
	if (b->lock_fd >= 0)
		close(b->lock_fd); /* as a broker that dies does */
	b->lock_fd = -1;
}

void seg_unlock_domain(struct broker *b)
{
	if (b->lock_fd < 0)
		return;
	unlink(b->lock_path); /* while still holding it, see lock_try */
	close(b->lock_fd);
	b->lock_fd = -1;
}

/* A memfd is created with mode 0777, and a descriptor of it can be
 * reopened through /proc/self/fd with any access that mode allows, read-
 * write included, whatever the descriptor's own access: a subscriber
 * holding a read-only descriptor of a pool could write every sample in it.
 * Read-only for all: a reopen (which needs the descriptor, or ptrace
 * rights over its holder) gives no more than the descriptor did, and only
 * the broker's user could change the mode back (root, and that user's
 * processes, have ptrace rights over the broker anyway: outside the threat
 * model). Descriptors opened read-write before (the broker's, and the one
 * its writer receives) keep their access. */
static int seg_restrict(int fd)
{
	return fchmod(fd, 0444) < 0 ? -errno : 0;
}

/* Creates, sizes, reserves, maps (read-write, for the broker) and seals
 * one segment with seals. */
static int seg_create(struct broker *b, const char *what, size_t size, int seals, int *ret_fd, void **ret_base)
{
	char name[128];
	void *p;
	int fd, r;

	snprintf(name, sizeof(name), "takt.%s.%s", b->cfg.domain, what); /* shown in /proc/<pid>/maps */
	fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "takt-broker: memfd_create %s: %s\n", name, strerror(errno));
		return r;
	}
	r = seg_restrict(fd) < 0 ? errno : ftruncate(fd, (off_t)size) < 0 ? errno : posix_fallocate(fd, 0, (off_t)size);
	if (r) {
		fprintf(stderr, "takt-broker: cannot reserve %zu bytes of shared memory for segment %s: %s%s\n",
			size, name, strerror(r), r == ENOSPC || r == ENOMEM ?
			" (not enough memory for this config: lower the [limits] table sizes)" : "");
		goto fail;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		r = errno;
		fprintf(stderr, "takt-broker: mmap %s: %s\n", name, strerror(errno));
		goto fail;
	}
	if (fcntl(fd, F_ADD_SEALS, seals) < 0) {
		r = errno;
		munmap(p, size);
		fprintf(stderr, "takt-broker: cannot seal segment %s: %s\n", name, strerror(errno));
		goto fail;
	}
	*ret_fd = fd;
	*ret_base = p;
	return 0;
fail:
	close(fd);
	return -r;
}

static void seg_fill_header(struct broker *b)
{
	struct takt_mgmt_header *h = b->mgmt;
	long mb = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	/* Q0: offer clients the plain-store entry only if we can fence for them
	 * (registry.c, q0_fence). Before the digest: flags are part of it. */
	b->cfg.lim.flags &= ~TAKT_LIM_MEMBARRIER;
	if (mb > 0 && (mb & MEMBARRIER_CMD_GLOBAL_EXPEDITED))
		b->cfg.lim.flags |= TAKT_LIM_MEMBARRIER;
	seg_header_fill(h, &(struct seg_spec){.lim = b->cfg.lim, .epoch = b->epoch, .domain = b->cfg.domain});
	atomic_store_explicit(&h->broker_pid, (uint32_t)getpid(), memory_order_relaxed);
	/* The magic goes last: a half-written header never validates (the
	 * fence pairs with nothing yet: no client has the fd before HELLO). */
	atomic_thread_fence(memory_order_release);
	h->magic = TAKT_MGMT_MAGIC;
}

/* A read-only descriptor of the same memfd: reopened through /proc, it
 * cannot be mapped writable, truncated or fallocated. */
static int seg_reopen_ro(int fd)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* A client segment: a memfd called name (shown in /proc/<pid>/maps), read-
 * only for whoever reopens it, size bytes of which the first reserve are
 * reserved, starting with header, sealed with seals. Its descriptor, and a
 * read-only one in *ret_ro if ret_ro is not NULL. 0 or a negative errno. */
static int seg_client_create(const char *name, uint64_t size, uint64_t reserve, const void *header,
			     size_t header_size, int seals, int *ret_fd, int *ret_ro)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING), r;

	if (fd < 0)
		return -errno;
	r = seg_restrict(fd) < 0 ? errno
	    : ftruncate(fd, (off_t)size) < 0 ? errno : posix_fallocate(fd, 0, (off_t)reserve);
	if (r == 0 && pwrite(fd, header, header_size, 0) != (ssize_t)header_size)
		r = errno ? errno : EIO;
	if (r == 0 && fcntl(fd, F_ADD_SEALS, seals) < 0)
		r = errno;
	if (r == 0 && ret_ro && (*ret_ro = seg_reopen_ro(fd)) < 0)
		r = errno;
	if (r) {
		close(fd);
		return -r;
	}
	*ret_fd = fd;
	return 0;
}

int seg_pool_create(struct broker *b, const struct takt_pub_port *pp, uint32_t pi, uint64_t reserve,
		    int *ret_rw, int *ret_ro)
{
	struct takt_pool_header ph;
	struct takt_pool_layout pl;
	char name[128];

	layout_pool(&b->v.lim, &pl);
	if (reserve < pl.ring_off)
		reserve = pl.ring_off; /* the header, live and connection words */
	snprintf(name, sizeof(name), "takt.%s.pub%u", b->cfg.domain, pi);
	seg_pool_header_fill(&ph, &b->v, pp, b->epoch);
	return seg_client_create(name, seg_pool_bytes(&b->v, pp->chunk_stride, pp->n_chunks_max), reserve, &ph,
				 sizeof(ph), POOL_SEALS, ret_rw, ret_ro);
}

int seg_subseg_create(struct broker *b, uint32_t si, int *ret_rw, int *ret_ro)
{
	struct takt_subseg_header h;
	struct takt_subseg_layout sl;
	char name[128];

	layout_subseg(&b->v.lim, &sl);
	snprintf(name, sizeof(name), "takt.%s.sub%u", b->cfg.domain, si);
	seg_subseg_header_fill(&h, &b->v, si, b->epoch);
	return seg_client_create(name, sl.size, sl.ret_off, &h, sizeof(h), POOL_SEALS, ret_rw, ret_ro);
}

void *seg_map_ro(int fd, size_t size)
{
	void *p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);

	return p == MAP_FAILED ? NULL : p;
}

int seg_pool_reserve(int fd, uint64_t from, uint64_t to)
{
	return to > from ? -posix_fallocate(fd, (off_t)from, (off_t)(to - from)) : 0;
}

uint64_t seg_fd_bytes(int fd)
{
	struct stat st;

	return fd >= 0 && fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512u : 0;
}

int seg_create_all(struct broker *b)
{
	struct takt_layout lay;
	struct timespec ts;
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	b->epoch = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	layout_compute(&b->cfg.lim, &lay);
	b->mgmt_size = lay.size;
	/* The registry: written by us alone, through the mapping made here;
	 * no other mapping of it can ever be writable (F_SEAL_FUTURE_WRITE),
	 * and clients and tools get a read-only descriptor. */
	r = seg_create(b, "mgmt", b->mgmt_size, SEG_SEALS | F_SEAL_FUTURE_WRITE, &b->mgmt_fd, &b->mgmt);
	if (r < 0)
		return r;
	b->mgmt_ro_fd = seg_reopen_ro(b->mgmt_fd);
	if (b->mgmt_ro_fd < 0)
		return -errno;
	seg_fill_header(b);
	return seg_view_init(&b->v, b->mgmt, b->mgmt_size);
}

int seg_listener_create(struct broker *b, uint32_t event, uint32_t listener, int *ret_fd)
{
	struct takt_listener_queue q = {0};
	struct takt_layout lay;
	char name[128];

	layout_compute(&b->v.lim, &lay);
	snprintf(name, sizeof(name), "takt.%s.ev%u.l%u", b->cfg.domain, event, listener);
	seg_listener_header_fill(&q, &b->v, event, listener);
	/* Reserved whole: every notifying process writes its lane without
	 * asking anyone, so no page of it may be missing. */
	return seg_client_create(name, lay.listener_size, lay.listener_size, &q, sizeof(q), SEG_SEALS, ret_fd, NULL);
}

void seg_destroy_all(struct broker *b)
{
	if (b->mgmt) {
		munmap(b->mgmt, b->mgmt_size);
		close(b->mgmt_fd);
	}
	if (b->mgmt_ro_fd >= 0)
		close(b->mgmt_ro_fd);
}

/* The device every memfd lives on (the kernel's internal shmem mount), or
 * 0 if it cannot be told. */
static dev_t memfd_dev(void)
{
	static dev_t dev;
	struct stat st;
	int fd;

	if (dev)
		return dev;
	fd = memfd_create("takt.probe", MFD_CLOEXEC);
	if (fd >= 0 && fstat(fd, &st) == 0)
		dev = st.st_dev;
	if (fd >= 0)
		close(fd);
	return dev;
}

uint64_t seg_fd_ino(int fd)
{
	struct stat st;

	/* An inode number is unique on its device only: a file elsewhere (a
	 * tmpfs, say) with the number of one of our segments is not it. */
	if (fstat(fd, &st) < 0 || !memfd_dev() || st.st_dev != memfd_dev())
		return 0;
	return (uint64_t)st.st_ino;
}

bool seg_fd_sealed(int fd, int want)
{
	int seals = fcntl(fd, F_GET_SEALS);

	return seals >= 0 && (seals & want) == want;
}

bool seg_fd_is_eventfd(int fd)
{
	char path[64], line[128];
	bool is = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fd >= 0 ? fopen(path, "re") : NULL;
	if (!f)
		return false;
	while (!is && fgets(line, sizeof(line), f))
		is = strncmp(line, "eventfd-count:", 14) == 0;
	fclose(f);
	return is;
}

uint64_t seg_fd_size(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}
