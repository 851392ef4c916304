/* segments.c - creating, reserving and removing a domain's segments.
 *
 * One broker per domain: an flock on <runtime dir>/takt-<domain>.lock. With
 * the lock held, segments still named for the domain were left by a broker
 * that died; they are removed (naming any process that still maps them,
 * which must reconnect), then created fresh with O_EXCL and reserved with
 * posix_fallocate, so a /dev/shm too small for the config fails here with
 * a message instead of raising SIGBUS in a client later.
 */
#include "broker.h"
#include "pool.h"

#include <dirent.h>
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

/* Opens and flocks the lock object; 1 when the name was replaced meanwhile
 * (a broker exiting unlinks it while holding it), so the caller retries. */
static int lock_try(struct broker *b, int *ret_fd)
{
	char path[160];
	struct stat a, c;
	int fd = shm_open(b->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600), r;

	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "takt-broker: cannot open lock /dev/shm%s: %s\n", b->lock_path, strerror(errno));
		return r;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = errno == EWOULDBLOCK ? -EEXIST : -errno;
		close(fd);
		fprintf(stderr, "takt-broker: a broker already runs for domain '%s' (lock /dev/shm%s held)\n",
			b->cfg.domain, b->lock_path);
		return r;
	}
	snprintf(path, sizeof(path), "/dev/shm%s", b->lock_path);
	if (fstat(fd, &a) < 0 || stat(path, &c) < 0 || a.st_ino != c.st_ino) {
		close(fd);
		return 1;
	}
	*ret_fd = fd;
	return 0;
}

/* The lock is an object in /dev/shm, like the segments it guards: segment
 * names are host-wide, so the lock must be too (a lock in a runtime
 * directory would let two brokers with different directories share names).
 * The holder unlinks it on exit; whoever locks checks it locked the object
 * that still carries the name. */
int seg_lock_domain(struct broker *b)
{
	int r = proto_runtime_dir_make();

	if (r < 0) {
		fprintf(stderr, "takt-broker: cannot use the runtime directory: %s\n", strerror(-r));
		return r;
	}
	proto_shm_name(b->cfg.domain, "lock", b->lock_path, sizeof(b->lock_path));
	for (int tries = 0; tries < 100; tries++) {
		r = lock_try(b, &b->lock_fd);
		if (r <= 0)
			return r;
	}
	return -EBUSY;
}

void seg_unlock_domain(struct broker *b)
{
	if (b->lock_fd < 0)
		return;
	shm_unlink(b->lock_path); /* while still holding it, see lock_try */
	close(b->lock_fd);
	b->lock_fd = -1;
}

/* Whether a /proc/<pid>/maps line maps a segment of exactly this domain:
 * takt.<domain>.mgmt or takt.<domain>.pool<k>, not takt.<domain>.x.mgmt. */
static bool maps_segment(const char *line, const char *needle)
{
	const char *p = strstr(line, needle);

	if (!p)
		return false;
	p += strlen(needle);
	return !strncmp(p, "mgmt", 4) || (!strncmp(p, "pool", 4) && p[4] >= '0' && p[4] <= '9');
}

/* Lists the pids that map any segment of the domain into buf. */
static void seg_users(const char *domain, char *buf, size_t len)
{
	char needle[128], path[64], line[512];
	DIR *d = opendir("/proc");
	struct dirent *de;
	size_t used = 0;

	buf[0] = 0;
	snprintf(needle, sizeof(needle), "/dev/shm/takt.%s.", domain);
	while (d && (de = readdir(d))) {
		FILE *f;
		int pid = atoi(de->d_name);

		if (pid <= 0 || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/maps", pid);
		f = fopen(path, "r");
		while (f && fgets(line, sizeof(line), f))
			if (maps_segment(line, needle)) {
				used += (size_t)snprintf(buf + used, used < len ? len - used : 0, " %d", pid);
				break;
			}
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
}

static void seg_remove_stale(struct broker *b)
{
	char name[128], users[256];
	int found = 0;

	for (int k = -1; k < TAKT_MAX_CLASSES; k++) {
		char what[16];

		snprintf(what, sizeof(what), k < 0 ? "mgmt" : "pool%d", k);
		proto_shm_name(b->cfg.domain, what, name, sizeof(name));
		if (shm_unlink(name) == 0)
			found++;
	}
	if (!found)
		return;
	seg_users(b->cfg.domain, users, sizeof(users));
	if (users[0])
		fprintf(stderr, "takt-broker: removed %d segments of a previous broker of domain '%s'; "
			"processes still mapping them must reconnect:%s\n", found, b->cfg.domain, users);
	else if (b->verbose)
		fprintf(stderr, "takt-broker: removed %d stale segments of domain '%s'\n", found, b->cfg.domain);
}

/* Creates, sizes, reserves and maps one segment. */
static int seg_create(struct broker *b, const char *what, size_t size, int *ret_fd, void **ret_base)
{
	char name[128];
	void *p;
	int fd, r;

	proto_shm_name(b->cfg.domain, what, name, sizeof(name));
	fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "takt-broker: shm_open %s: %s\n", name, strerror(errno));
		return r;
	}
	r = ftruncate(fd, (off_t)size) < 0 ? errno : posix_fallocate(fd, 0, (off_t)size);
	if (r) {
		fprintf(stderr, "takt-broker: cannot reserve %zu bytes for segment %s: %s%s\n", size, name,
			strerror(r), r == ENOSPC ? " (/dev/shm is too small for this config: "
			"lower [pools] counts or grow /dev/shm)" : "");
		goto fail;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		r = errno;
		fprintf(stderr, "takt-broker: mmap %s: %s\n", name, strerror(errno));
		goto fail;
	}
	*ret_fd = fd;
	*ret_base = p;
	return 0;
fail:
	close(fd);
	shm_unlink(name);
	return -r;
}

static uint32_t seg_total_chunks(const struct broker_config *c)
{
	uint64_t n = 0;

	for (uint32_t k = 0; k < c->lim.n_classes; k++)
		n += c->class_count[k];
	return n > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)n;
}

static void seg_fill_header(struct broker *b, uint32_t n_chunks)
{
	struct takt_mgmt_header *h = b->mgmt;
	long mb = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);

	/* Q0: offer clients the plain-store entry only if we can fence for them
	 * (registry.c, q0_fence). Before the digest: flags are part of it. */
	b->cfg.lim.flags &= ~TAKT_LIM_MEMBARRIER;
	if (mb > 0 && (mb & MEMBARRIER_CMD_GLOBAL_EXPEDITED))
		b->cfg.lim.flags |= TAKT_LIM_MEMBARRIER;
	seg_header_fill(h, &(struct seg_spec){.lim = b->cfg.lim, .class_size = b->cfg.class_size,
					      .class_count = b->cfg.class_count, .n_chunks = n_chunks,
					      .epoch = b->epoch, .domain = b->cfg.domain});
	atomic_store_explicit(&h->broker_pid, (uint32_t)getpid(), memory_order_relaxed);
	/* The magic goes last: a half-written header never validates (the
	 * fence pairs with nothing yet: no client has the fd before HELLO). */
	atomic_thread_fence(memory_order_release);
	h->magic = TAKT_MGMT_MAGIC;
}

static int seg_create_pools(struct broker *b)
{
	const struct takt_mgmt_header *h = b->mgmt;

	for (uint32_t k = 0; k < b->cfg.lim.n_classes; k++) {
		char what[16];
		int r;

		snprintf(what, sizeof(what), "pool%u", k);
		b->pool_size[k] = h->pools[k].segment_size;
		r = seg_create(b, what, b->pool_size[k], &b->pool_fd[k], &b->pool_base[k]);
		if (r < 0)
			return r;
		seg_pool_header_fill(b->pool_base[k], k, h);
		r = seg_view_add_pool(&b->v, k, b->pool_base[k], b->pool_size[k]);
		if (r < 0)
			return r;
	}
	return 0;
}

int seg_create_all(struct broker *b)
{
	struct takt_layout lay;
	struct timespec ts;
	uint32_t n_chunks = seg_total_chunks(&b->cfg);
	int r;

	clock_gettime(CLOCK_REALTIME, &ts);
	b->epoch = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	seg_remove_stale(b);
	layout_compute(&b->cfg.lim, n_chunks, &lay);
	b->mgmt_size = lay.size;
	r = seg_create(b, "mgmt", b->mgmt_size, &b->mgmt_fd, &b->mgmt);
	if (r < 0)
		return r;
	seg_fill_header(b, n_chunks);
	r = seg_view_init(&b->v, b->mgmt, b->mgmt_size);
	if (r < 0)
		return r;
	r = seg_create_pools(b);
	if (r < 0)
		return r;
	pool_format(&b->v);
	return 0;
}

void seg_destroy_all(struct broker *b)
{
	char name[128], what[16];

	for (uint32_t k = 0; k < TAKT_MAX_CLASSES; k++) {
		if (b->pool_base[k])
			munmap(b->pool_base[k], b->pool_size[k]);
		if (b->pool_fd[k] > 0) {
			close(b->pool_fd[k]);
			snprintf(what, sizeof(what), "pool%u", k);
			proto_shm_name(b->cfg.domain, what, name, sizeof(name));
			shm_unlink(name);
		}
	}
	if (b->mgmt) {
		munmap(b->mgmt, b->mgmt_size);
		close(b->mgmt_fd);
		proto_shm_name(b->cfg.domain, "mgmt", name, sizeof(name));
		shm_unlink(name);
	}
}
