/* seen.c - what takt-gateway's inbound side remembers of each remote
 * publisher it imports from: the last seq it published into takt, per
 * topic (GW_SEEN publishers each). A DDS sample at or below it is a
 * duplicate: a restarted exporting gateway sends its takt history again,
 * and a restarted importing gateway is served the DDS writers'
 * transient-local history again. To remember across its own restart the
 * table lives in POSIX shared memory, /dev/shm/takt-gw-DOMAIN-NAME (like
 * the broker's state: gone at reboot, with the runtime directory); if that
 * cannot be had, in the process only (logged).
 *
 * Only the inbound thread claims topics; one topic's entries are used by
 * its reader's listener only (Cyclone calls one reader's listener from one
 * thread at a time), and a restarted gateway maps the file after the
 * previous one died. The file is checked like any shared memory: a wrong
 * size, magic or version starts it afresh, names are bounded, indexes are
 * taken modulo their tables. */
#include "gateway.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SEEN_MAGIC 0x316e656573776774ull /* "tgwseen1" */
#define SEEN_VERSION 1u

struct gw_seen_entry {
	_Atomic uint64_t publisher_id, seq;
};

struct gw_seen_topic {
	char topic[TAKT_TOPIC_NAME_MAX];
	_Atomic uint32_t next;   /* the entry a new publisher takes (modulo GW_SEEN) */
	uint32_t pad;
	struct gw_seen_entry e[GW_SEEN];
};

struct gw_seen_file {
	uint64_t magic;
	uint32_t version, n_topics;
	struct gw_seen_topic t[GW_MAX_BRIDGES];
};

/* Maps /dev/shm/takt-gw-DOMAIN-NAME, or NULL (errno set). */
static struct gw_seen_file *seen_map(const char *domain, const char *name, char *path, size_t len)
{
	struct gw_seen_file *f;
	struct stat st;
	int fd, n = snprintf(path, len, "/takt-gw-%s-%s", domain, name);

	for (char *c = path + 1; *c; c++)
		if (*c == '/')
			*c = '_';
	if (n < 0 || (size_t)n >= len)
		return errno = ENAMETOOLONG, NULL;
	fd = shm_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || ((size_t)st.st_size != sizeof(*f) && ftruncate(fd, 0) < 0) ||
	    ftruncate(fd, sizeof(*f)) < 0) {
		close(fd);
		return NULL;
	}
	f = mmap(NULL, sizeof(*f), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return f == MAP_FAILED ? NULL : f;
}

int gw_seen_open(struct gw *g, const char *domain)
{
	char path[128];
	struct gw_seen_file *f = seen_map(domain, g->cfg.name, path, sizeof(path));

	if (!f) {
		fprintf(stderr, "takt-gateway: /dev/shm%s: %s: duplicates are recognised only until this gateway "
			"restarts\n", path, strerror(errno));
		f = calloc(1, sizeof(*f));
		if (!f)
			return -ENOMEM;
	}
	if (f->magic != SEEN_MAGIC || f->version != SEEN_VERSION || f->n_topics > GW_MAX_BRIDGES) {
		memset(f, 0, sizeof(*f));
		f->magic = SEEN_MAGIC;
		f->version = SEEN_VERSION;
	}
	g->seen = f;
	return 0;
}

struct gw_seen_topic *gw_seen_topic(struct gw *g, const char *topic)
{
	struct gw_seen_file *f = g->seen;
	/* read once and bounded here, whatever another process of our user
	 * writes into the file meanwhile */
	uint32_t n = f->n_topics;
	struct gw_seen_topic *t;

	for (uint32_t i = 0; i < n && i < GW_MAX_BRIDGES; i++)
		if (!strncmp(f->t[i].topic, topic, sizeof(f->t[i].topic)))
			return &f->t[i];
	if (n >= GW_MAX_BRIDGES) { /* other topics of earlier runs fill it */
		fprintf(stderr, "takt-gateway: in '%s': the table of duplicates is full (%d topics): this topic's "
			"is kept until the gateway restarts\n", topic, GW_MAX_BRIDGES);
		return calloc(1, sizeof(*t));
	}
	t = &f->t[n];
	memset(t, 0, sizeof(*t));
	snprintf(t->topic, sizeof(t->topic), "%s", topic);
	f->n_topics = n + 1; /* after the slot is whole: a gateway killed in between finds it clean or absent */
	return t;
}

struct gw_seen_entry *gw_seen_find(struct gw_seen_topic *t, uint64_t id)
{
	if (!id) /* a writer without takt ids (a plain DDS one): never a duplicate */
		return NULL;
	for (unsigned i = 0; i < GW_SEEN; i++)
		/* acquire: pairs with the release of gw_seen_mark (ours, or a
		 * killed predecessor's) */
		if (atomic_load_explicit(&t->e[i].publisher_id, memory_order_acquire) == id)
			return &t->e[i];
	return NULL;
}

bool gw_seen_dup(const struct gw_seen_entry *e, uint64_t seq)
{
	return e && seq <= atomic_load_explicit(&e->seq, memory_order_relaxed);
}

void gw_seen_mark(struct gw_seen_topic *t, struct gw_seen_entry *e, uint64_t id, uint64_t seq)
{
	if (e) {
		if (seq > atomic_load_explicit(&e->seq, memory_order_relaxed))
			atomic_store_explicit(&e->seq, seq, memory_order_relaxed);
		return;
	}
	if (!id)
		return;
	/* A new publisher takes the oldest entry: its id cleared first, so
	 * a gateway killed in between never pairs one id with another's seq;
	 * release: the seq before the id (pairs with gw_seen_find's acquire). */
	e = &t->e[atomic_load_explicit(&t->next, memory_order_relaxed) % GW_SEEN];
	atomic_store_explicit(&e->publisher_id, 0, memory_order_relaxed);
	atomic_store_explicit(&e->seq, seq, memory_order_release);
	atomic_store_explicit(&e->publisher_id, id, memory_order_release);
	atomic_store_explicit(&t->next, (atomic_load_explicit(&t->next, memory_order_relaxed) + 1) % GW_SEEN,
			      memory_order_relaxed);
}
