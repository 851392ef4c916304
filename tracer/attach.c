/* attach.c - finding the files that hold takt's probes and attaching to them.
 *
 * USDT probes live in whatever file was linked with libtakt-ipc/libtakt-exec:
 * the shared libraries, or the executable of a statically linked program.
 * A file is recognised by its .note.stapsdt notes of provider "takt" (read
 * with libelf); every probe found gets its program attached with pid -1, so
 * one attachment covers every process that maps the file now or later (a
 * uprobe belongs to the file's inode). Files are told apart by device and
 * inode, so the build tree's libtakt-ipc.so, .so.0 and .so.0.1.0 are one.
 */
#include "takt-trace.h"
#include "wakeup.skel.h"

#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NT_STAPSDT 3

const char *const tt_probe_names[TT_N_PROBES] = {
	"publish",   "notify",         "park",         "unpark",    "take",
	"exec_park", "exec_wake", "dispatch_begin", "dispatch_end", "node_open",
	"request",   "request_take",   "respond",      "response_take",
};
#define NODE_OPEN_BIT (1u << 9)

struct tt_seen_file {
	dev_t dev;
	ino_t ino;
};

static struct bpf_program *probe_prog(struct wakeup_bpf *skel, int i)
{
	struct bpf_program *progs[TT_N_PROBES] = {
		skel->progs.on_publish,   skel->progs.on_notify,    skel->progs.on_park,
		skel->progs.on_unpark,    skel->progs.on_take,      skel->progs.on_exec_park,
		skel->progs.on_exec_wake, skel->progs.on_dispatch_begin, skel->progs.on_dispatch_end,
		skel->progs.on_node_open, skel->progs.on_request, skel->progs.on_request_take,
		skel->progs.on_respond,   skel->progs.on_response_take,
	};

	return progs[i];
}

/* One stapsdt note: provider and name follow three addresses. */
static unsigned note_probe(const char *desc, size_t size, size_t addr_size)
{
	const char *prov, *name, *end = desc + size;

	if (size < 3 * addr_size + 2)
		return 0;
	prov = desc + 3 * addr_size;
	name = memchr(prov, 0, (size_t)(end - prov));
	if (!name || strcmp(prov, "takt"))
		return 0;
	name++;
	if (!memchr(name, 0, (size_t)(end - name)))
		return 0;
	for (int i = 0; i < TT_N_PROBES; i++)
		if (!strcmp(name, tt_probe_names[i]))
			return 1u << i;
	return 0;
}

static unsigned scn_notes(Elf *e, Elf_Scn *scn)
{
	size_t asz = gelf_getclass(e) == ELFCLASS32 ? 4 : 8, off = 0, name_off, desc_off;
	Elf_Data *d = elf_getdata(scn, NULL);
	unsigned mask = 0;
	GElf_Nhdr nh;

	while (d && (off = gelf_getnote(d, off, &nh, &name_off, &desc_off)) > 0) {
		if (nh.n_type == NT_STAPSDT && nh.n_namesz == 8 &&
		    !memcmp((char *)d->d_buf + name_off, "stapsdt", 8))
			mask |= note_probe((char *)d->d_buf + desc_off, nh.n_descsz, asz);
	}
	return mask;
}

static unsigned scn_has_connect(Elf *e, Elf_Scn *scn, const GElf_Shdr *sh)
{
	Elf_Data *d = elf_getdata(scn, NULL);
	size_t n = sh->sh_entsize ? sh->sh_size / sh->sh_entsize : 0;

	for (size_t i = 0; d && i < n; i++) {
		GElf_Sym sym;
		const char *name;

		if (!gelf_getsym(d, (int)i, &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC || !sym.st_value)
			continue;
		name = elf_strptr(e, sh->sh_link, sym.st_name);
		if (name && !strcmp(name, "proto_connect"))
			return TT_HAS_CONNECT;
	}
	return 0;
}

int tt_elf_probes(const char *path, unsigned *mask)
{
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	unsigned m = 0;
	Elf *e;
	int fd;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!e || elf_kind(e) != ELF_K_ELF || elf_getshdrstrndx(e, &shstrndx)) {
		*mask = 0;
		goto out;
	}
	while ((scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;
		const char *name;

		if (!gelf_getshdr(scn, &sh))
			continue;
		name = elf_strptr(e, shstrndx, sh.sh_name);
		if (sh.sh_type == SHT_NOTE && name && !strcmp(name, ".note.stapsdt"))
			m |= scn_notes(e, scn);
		else if (sh.sh_type == SHT_SYMTAB || sh.sh_type == SHT_DYNSYM)
			m |= scn_has_connect(e, scn, &sh);
	}
	*mask = (m & ~TT_HAS_CONNECT) ? m : 0; /* proto_connect alone is not a takt file */
out:
	if (e)
		elf_end(e);
	close(fd);
	return 0;
}

static int links_push(struct tt_attach *a, struct bpf_link *l)
{
	if (a->n_links == a->cap_links) {
		size_t cap = a->cap_links ? 2 * a->cap_links : 32;
		struct bpf_link **n = realloc(a->links, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		a->links = n;
		a->cap_links = cap;
	}
	a->links[a->n_links++] = l;
	return 0;
}

/* Whether the file was looked at before; remembers it if not. */
static int seen_before(struct tt_attach *a, const struct stat *st)
{
	for (size_t i = 0; i < a->n_seen; i++)
		if (a->seen[i].dev == st->st_dev && a->seen[i].ino == st->st_ino)
			return 1;
	if (a->n_seen == a->cap_seen) {
		size_t cap = a->cap_seen ? 2 * a->cap_seen : 64;
		struct tt_seen_file *n = realloc(a->seen, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		a->seen = n;
		a->cap_seen = cap;
	}
	a->seen[a->n_seen++] = (struct tt_seen_file){.dev = st->st_dev, .ino = st->st_ino};
	return 0;
}

static int attach_connect(struct tt_attach *a, const char *path)
{
	LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = "proto_connect");
	struct bpf_link *l = bpf_program__attach_uprobe_opts(a->skel->progs.on_connect, -1, path, 0, &uo);

	if (!l)
		return -errno;
	return links_push(a, l);
}

int tt_attach_file(struct tt_attach *a, const char *path)
{
	unsigned mask;
	struct stat st;
	int r, n = 0;

	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return 0;
	r = seen_before(a, &st);
	if (r)
		return r < 0 ? r : 0;
	r = tt_elf_probes(path, &mask);
	if (r < 0 || !mask)
		return r;
	for (int i = 0; i < TT_N_PROBES; i++) {
		struct bpf_link *l;

		if (!(mask & (1u << i)) || (a->skip & (1u << i)))
			continue;
		l = bpf_program__attach_usdt(probe_prog(a->skel, i), -1, path, "takt", tt_probe_names[i], NULL);
		if (!l) {
			r = -errno;
			fprintf(stderr, TT_PROG ": cannot attach to probe takt:%s in %s: %s\n", tt_probe_names[i],
				path, strerror(-r));
			return r;
		}
		r = links_push(a, l);
		if (r < 0)
			return r;
		n++;
	}
	/* Without a node_open probe, the internal proto_connect tells a
	 * process's domain as early (if the file still has its symbol). */
	if ((mask & TT_HAS_CONNECT) && !(mask & NODE_OPEN_BIT) && (r = attach_connect(a, path)) < 0 && a->verbose)
		fprintf(stderr, TT_PROG ": no uprobe on proto_connect in %s (%s): processes of the domain "
			"are found from its process table only\n", path, strerror(-r));
	a->n_files++;
	if (a->verbose)
		fprintf(stderr, TT_PROG ": attached %d probes in %s\n", n, path);
	return 1;
}

/* A mapped file as the tracer sees it: the path in maps, else through the
 * process's root (another mount namespace). */
static int attach_mapped(struct tt_attach *a, pid_t pid, const char *file)
{
	char alt[PATH_MAX + 32];
	int r = tt_attach_file(a, file);

	if (r != -ENOENT)
		return r;
	snprintf(alt, sizeof(alt), "/proc/%d/root%s", (int)pid, file);
	return tt_attach_file(a, alt);
}

int tt_attach_pid(struct tt_attach *a, pid_t pid)
{
	char path[64], line[PATH_MAX + 128];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char perms[8], *file;
		size_t len;

		if (sscanf(line, "%*s %7s", perms) != 1 || !strchr(perms, 'x'))
			continue;
		file = strchr(line, '/');
		if (!file)
			continue;
		len = strlen(file);
		if (len && file[len - 1] == '\n')
			file[--len] = 0;
		if (len > 10 && !strcmp(file + len - 10, " (deleted)"))
			continue;
		if (attach_mapped(a, pid, file) > 0)
			n++;
	}
	fclose(f);
	return n;
}

void tt_attach_destroy(struct tt_attach *a)
{
	for (size_t i = 0; i < a->n_links; i++)
		bpf_link__destroy(a->links[i]);
	free(a->links);
	free(a->seen);
	a->links = NULL;
	a->seen = NULL;
	a->n_links = a->cap_links = a->n_seen = a->cap_seen = 0;
}
