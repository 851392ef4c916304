/* domain.c - the processes of a takt domain, from its broker's process table.
 *
 * The broker's management segment holds one takt_proc per attached
 * process. The tracer asks the broker for a read-only descriptor of it
 * (MSG_MGMT_FD, no HELLO: it does not join the domain), maps it for a moment,
 * validates it like any client would (magic, ABI version, layout digest:
 * seg_view_init) and copies the pids of the active entries out. It never
 * writes there and keeps no mapping, so a broker restart (a new segment)
 * needs nothing special: the next look asks the new broker.
 */
#include "takt-trace.h"

#include "proto.h"
#include "segment.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_pids(const struct seg_view *v, pid_t *out, int max)
{
	/* acquire: pairs with the broker's release of a slot's state after it
	 * filled the entry (registry.c, publish_state). */
	uint32_t broker = atomic_load_explicit(&v->hdr->broker_pid, memory_order_acquire);
	int n = 0;

	if (broker && n < max)
		out[n++] = (pid_t)broker;
	for (uint32_t i = 0; i < v->lim.processes && n < max; i++) {
		struct takt_proc *p = &v->procs[i];

		if (atomic_load_explicit(&p->state, memory_order_acquire) == SLOT_ACTIVE &&
		    p->pid > 0)
			out[n++] = p->pid;
	}
	return n;
}

static int mgmt_fd(const char *domain, int *ret_fd)
{
	struct msg_empty req;
	struct proto_reply rep;
	unsigned n_fds = 0;
	int sock, r;

	r = proto_connect(domain, &sock);
	if (r < 0)
		return r;
	proto_hdr_init(&req.hdr, MSG_MGMT_FD, sizeof(req), 1);
	r = proto_call(sock, &req, sizeof(req), &rep, sizeof(rep), ret_fd, 1, &n_fds, 5000, NULL, NULL);
	close(sock);
	if (r == 0 && n_fds != 1)
		r = -EPROTO;
	return r;
}

int tt_domain_pids(const char *domain, pid_t *out, int max)
{
	struct seg_view v;
	struct stat st;
	void *base;
	int fd, r;

	if (!proto_domain_ok(domain))
		return -EINVAL;
	r = mgmt_fd(domain, &fd);
	if (r < 0)
		return r;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		r = -EPROTO;
		goto out_close;
	}
	base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (base == MAP_FAILED) {
		r = -errno;
		goto out_close;
	}
	r = seg_view_init(&v, base, (size_t)st.st_size);
	if (r == 0)
		r = copy_pids(&v, out, max);
	munmap(base, (size_t)st.st_size);
out_close:
	close(fd);
	return r;
}

int tt_all_pids(pid_t *out, int max)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)) && n < max) {
		long pid = strtol(de->d_name, NULL, 10);

		if (pid > 0 && pid != getpid())
			out[n++] = (pid_t)pid;
	}
	closedir(d);
	return n;
}
