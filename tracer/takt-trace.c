/* takt-trace - where the time between a publish and its callback goes.
 *
 *   takt-trace wakeups [--json] [--domain D] [--topic T] [--pid P] [--duration S]
 *   takt-trace hist    [--json] [--interval S] ...
 *   takt-trace services [--json] ...
 *   takt-trace record  -o FILE ...
 *   takt-trace export  FILE --perfetto OUT.json
 *
 * The libbpf-tools shape: open the skeleton, set its const volatile
 * settings, load, attach, run, and on every path out clean up in reverse
 * with goto. The BPF side (wakeup.bpf.c) joins each sample's publish,
 * notify, wakeup, on-CPU and take, and each request of a service with its
 * responses; this side finds the files holding the probes, keeps the
 * kernel's view of the domain's processes current, pins the counters and
 * histograms for bpftool, and prints.
 */
#include "sys.h"
#include "takt-trace.h"
#include "wakeup.skel.h"

#include "proto.h"

#include <takt/common.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef TAKT_TRACE_DEFAULT_LIBS
#define TAKT_TRACE_DEFAULT_LIBS ""
#endif

#define MAX_PIDS 65536
#define DOMAIN_REFRESH_NS 200000000ull /* the process table, domain mode */
#define SCAN_REFRESH_NS 2000000000ull  /* every process's maps, without a domain */

static volatile sig_atomic_t exiting;
static bool verbose;

struct tracer {
	const struct tt_opts *o;
	struct wakeup_bpf *skel;
	struct tt_attach at;
	struct tt_clock clock;
	struct tt_recorder *rec;
	char pin_dir[PATH_MAX];
	bool pinned;
	/* pids already handled: domain members (domain mode), or scanned */
	pid_t *known;
	int n_known;
	pid_t pending[256]; /* EV_NEW_PROC not yet looked at */
	int n_pending;
	struct tt_services *svc; /* services mode */
	uint64_t samples, requests;
	int err;
};

/* ---- help ------------------------------------------------------------------ */

static const char common_help[] =
	"  -d, --domain D       only processes of domain D (its broker's process table)\n"
	"  -t, --topic T        only samples of topic T\n"
	"  -p, --pid P          only samples published or taken by process P\n"
	"  -D, --duration S     stop after S seconds (default: at SIGINT/SIGTERM)\n"
	"  -l, --lib PATH       attach to PATH (a library or a statically linked program);\n"
	"                       repeatable. Default: the files holding takt probes that the\n"
	"                       traced processes map, and the build tree's and installed\n"
	"                       libtakt-ipc/libtakt-exec, so processes that start later count too\n"
	"      --deadline-us N  count samples whose publish -> callback start exceeds N us\n"
	"      --pin-dir DIR    pin the counters and histograms in DIR (default " TT_PIN_DIR ")\n"
	"      --no-pin         do not pin maps\n"
	"      --ringbuf-mb N   ring buffer size in MiB (default 4)\n"
	"  -v, --verbose        libbpf's debug output, every attached file\n"
	"  -h, --help           this text\n";

static void usage_main(FILE *f)
{
	fprintf(f, "Usage: " TT_PROG " MODE [OPTIONS]\n"
		   "Traces takt's wakeups with eBPF: per topic and per task, where the time\n"
		   "from a publish to the callback that handles it goes.\n\n"
		   "Modes:\n"
		   "  wakeups   one line per sample taken: notify -> wakeup -> on-CPU -> callback\n"
		   "  hist      log2 histograms of each stage per topic and per task, every interval\n"
		   "  services  one line per response to a request of a service: send -> server take ->\n"
		   "            respond -> client take, each thread's wakeup; the requests never answered\n"
		   "  record    write every event to an LZ4-compressed file\n"
		   "  export    turn a recording into Chrome trace-event JSON (Perfetto)\n\n"
		   "'" TT_PROG " MODE --help' describes each. Needs root (CAP_BPF, CAP_PERFMON).\n"
		   "While it runs, counters and histograms are pinned under " TT_PIN_DIR "/\n"
		   "(read them with scripts/trace-maps or bpftool map dump pinned ...).\n\n"
		   "  -h, --help           this text\n"
		   "  -V, --version        print the version\n");
}

static void usage_mode(FILE *f, enum tt_mode m)
{
	switch (m) {
	case MODE_WAKEUPS:
		fprintf(f, "Usage: " TT_PROG " wakeups [--json] [OPTIONS]\n"
			   "One line per sample taken, with the time each stage took, in microseconds:\n"
			   "  NTF>WAKE  the publisher's notify (eventfd write) until the scheduler woke the\n"
			   "            parked subscriber thread (sched_wakeup)\n"
			   "  WAKE>CPU  woken until it ran (sched_switch): time on the run queue\n"
			   "  CPU>CB    running until the callback started (executor item, else the take)\n"
			   "  PUB>TAKE  the whole way, publish to take\n"
			   "THREAD says how the subscriber thread stood at the notify: asleep (every stage\n"
			   "measured), runnable or running (woken already: no wakeup stage), busy (it\n"
			   "never parked: no notify). '-' marks a stage that did not happen.\n\n"
			   "  -j, --json           one JSON object per line (null where a stage did not\n"
			   "                       happen); the counters go to stderr at the end\n%s",
			common_help);
		break;
	case MODE_HIST:
		fprintf(f, "Usage: " TT_PROG " hist [--json] [--interval S] [OPTIONS]\n"
			   "log2 histograms (microseconds) of notify -> wakeup, wakeup -> on-CPU,\n"
			   "on-CPU -> callback start and publish -> take per topic, the same per\n"
			   "executor task, and each task's callback run time; printed every interval\n"
			   "and at the end, then cleared (like runqlat).\n\n"
			   "  -i, --interval S     seconds between printouts (default 1)\n"
			   "      --cumulative     do not clear between intervals\n"
			   "  -j, --json           one JSON object per histogram\n%s",
			common_help);
		break;
	case MODE_SERVICES:
		fprintf(f, "Usage: " TT_PROG " services [--json] [OPTIONS]\n"
			   "One line per response a client of a service takes, joined with its request\n"
			   "by (client id, request id), with the time each hop took, in microseconds:\n"
			   "  SEND>TAKE  the client's send (its publish) until the server took the request\n"
			   "  TAKE>RESP  the server's take until its respond that sent this response\n"
			   "  RESP>TAKE  that respond until the client took the response\n"
			   "  ROUNDTRIP  send until the client took the first response (RSP 1; a stream's\n"
			   "             later responses are RSP 2, 3, ...)\n"
			   "SERVER and CLIENT say how each thread stood at its take (as THREAD in\n"
			   "'wakeups': asleep, runnable, busy...) and NTF>CPU the time from the notify to\n"
			   "that thread running. At the end: the requests sent and never answered (RSP\n"
			   "none), and per service the counts and a log2 histogram of each hop.\n"
			   "--topic names a service (or one of its topics), --pid its client or server.\n\n"
			   "  -j, --json           one JSON object per line; the counters go to stderr\n%s",
			common_help);
		break;
	case MODE_RECORD:
		fprintf(f, "Usage: " TT_PROG " record -o FILE [OPTIONS]\n"
			   "Writes every sample, publish, executor dispatch and response to a request\n"
			   "(and, at the end, each request never answered) to FILE, an LZ4 frame\n"
			   "(see '" TT_PROG " export').\n\n"
			   "  -o, --output FILE    the recording\n%s",
			common_help);
		break;
	case MODE_EXPORT:
		fprintf(f, "Usage: " TT_PROG " export FILE --perfetto OUT.json\n"
			   "Chrome trace-event JSON of a recording, for ui.perfetto.dev or\n"
			   "chrome://tracing: publishes, the subscriber thread's wake stages, takes,\n"
			   "executor items, and a flow arrow from each publish to its callback.\n"
			   "OUT '-' writes to stdout. Needs no privileges.\n\n"
			   "      --perfetto OUT   the JSON file\n"
			   "  -v, --verbose        print what was exported\n"
			   "  -h, --help           this text\n");
		break;
	default:
		usage_main(f);
	}
}

/* ---- options --------------------------------------------------------------- */

enum { OPT_DEADLINE = 256, OPT_PIN_DIR, OPT_NO_PIN, OPT_RINGBUF, OPT_PERFETTO, OPT_CUMULATIVE };

static const char *const mode_names[] = {
	[MODE_WAKEUPS] = "wakeups", [MODE_HIST] = "hist",     [MODE_RECORD] = "record",
	[MODE_EXPORT] = "export",   [MODE_SERVICES] = "services",
};

static int bad_usage(enum tt_mode m, const char *fmt, ...)
{
	va_list ap;

	fputs(TT_PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" TT_PROG " %s%s--help'.\n", m != MODE_NONE ? mode_names[m] : "",
		m != MODE_NONE ? " " : "");
	return 2;
}

static int parse_seconds(const char *s, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || v < 0 || v > 1e7)
		return -EINVAL;
	*out = v;
	return 0;
}

static enum tt_mode parse_mode(const char *s)
{
	for (size_t m = 0; m < sizeof(mode_names) / sizeof(mode_names[0]); m++)
		if (mode_names[m] && !strcmp(s, mode_names[m]))
			return (enum tt_mode)m;
	return MODE_NONE;
}

static int parse_opt(struct tt_opts *o, int c, const char *arg)
{
	char *end;
	long v;

	switch (c) {
	case 'j': o->json = true; break;
	case 'v': o->verbose = true; break;
	case 'd':
		if (!proto_domain_ok(arg))
			return bad_usage(o->mode, "bad domain name '%s'", arg);
		o->domain = arg;
		break;
	case 't':
		if (!*arg || strlen(arg) >= TT_TOPIC_LEN)
			return bad_usage(o->mode, "bad topic '%s' (1..%d characters)", arg, TT_TOPIC_LEN - 1);
		o->topic = arg;
		break;
	case 'p':
		v = strtol(arg, &end, 10);
		if (*end || v <= 0 || v > INT_MAX)
			return bad_usage(o->mode, "bad pid '%s'", arg);
		o->pid = (pid_t)v;
		break;
	case 'D':
		if (parse_seconds(arg, &o->duration_s) < 0 || o->duration_s == 0)
			return bad_usage(o->mode, "bad duration '%s' (seconds > 0)", arg);
		break;
	case 'i':
		if (parse_seconds(arg, &o->interval_s) < 0 || o->interval_s < 0.01)
			return bad_usage(o->mode, "bad interval '%s' (seconds >= 0.01)", arg);
		break;
	case 'l':
		if (o->n_libs == TT_MAX_LIBS)
			return bad_usage(o->mode, "at most %d --lib", TT_MAX_LIBS);
		o->libs[o->n_libs++] = arg;
		break;
	case 'o': o->out = arg; break;
	case OPT_PERFETTO: o->perfetto = arg; break;
	case OPT_DEADLINE:
		v = strtol(arg, &end, 10);
		if (*end || v <= 0 || v > 3600000000L)
			return bad_usage(o->mode, "bad deadline '%s' (microseconds > 0)", arg);
		o->deadline_ns = (uint64_t)v * 1000;
		break;
	case OPT_PIN_DIR: o->pin_dir = arg; break;
	case OPT_NO_PIN: o->no_pin = true; break;
	case OPT_CUMULATIVE: o->cumulative = true; break;
	case OPT_RINGBUF:
		v = strtol(arg, &end, 10);
		if (*end || v < 1 || v > 1024 || (v & (v - 1)))
			return bad_usage(o->mode, "bad ring buffer size '%s' (a power of two, 1..1024 MiB)", arg);
		o->ringbuf_mb = (unsigned)v;
		break;
	default:
		return bad_usage(o->mode, "unknown option");
	}
	return 0;
}

/* 0 parsed, 1 help printed, 2 usage error (printed). */
static int parse_args(int argc, char **argv, struct tt_opts *o)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},        {"domain", required_argument, NULL, 'd'},
		{"topic", required_argument, NULL, 't'}, {"pid", required_argument, NULL, 'p'},
		{"duration", required_argument, NULL, 'D'}, {"interval", required_argument, NULL, 'i'},
		{"lib", required_argument, NULL, 'l'},   {"output", required_argument, NULL, 'o'},
		{"perfetto", required_argument, NULL, OPT_PERFETTO},
		{"deadline-us", required_argument, NULL, OPT_DEADLINE},
		{"pin-dir", required_argument, NULL, OPT_PIN_DIR}, {"no-pin", no_argument, NULL, OPT_NO_PIN},
		{"ringbuf-mb", required_argument, NULL, OPT_RINGBUF},
		{"cumulative", no_argument, NULL, OPT_CUMULATIVE},
		{"verbose", no_argument, NULL, 'v'},     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c, r;

	*o = (struct tt_opts){.interval_s = 1, .pin_dir = TT_PIN_DIR, .ringbuf_mb = 4};
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage_main(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 1;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf(TT_PROG " %s\n", TAKT_VERSION_STRING);
		return 1;
	}
	o->mode = parse_mode(argv[1]);
	if (o->mode == MODE_NONE)
		return bad_usage(MODE_NONE, "unknown mode '%s'", argv[1]);
	optind = 2;
	while ((c = getopt_long(argc, argv, "jd:t:p:D:i:l:o:vh", longopts, NULL)) != -1) {
		if (c == 'h') {
			usage_mode(stdout, o->mode);
			return 1;
		}
		if (c == '?')
			return bad_usage(o->mode, "bad option");
		if ((r = parse_opt(o, c, optarg)))
			return r;
	}
	if (o->mode == MODE_EXPORT) {
		if (optind != argc - 1)
			return bad_usage(o->mode, "export takes one recording");
		o->in = argv[optind];
		if (!o->perfetto)
			return bad_usage(o->mode, "export needs --perfetto OUT.json");
		return 0;
	}
	if (optind != argc)
		return bad_usage(o->mode, "unexpected argument '%s'", argv[optind]);
	if (o->mode == MODE_RECORD && !o->out)
		return bad_usage(o->mode, "record needs -o FILE");
	if (o->mode != MODE_RECORD && o->out)
		return bad_usage(o->mode, "-o is for record");
	return 0;
}

/* ---- libbpf and signals ------------------------------------------------------ */

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG && !verbose)
		return 0;
	if (level == LIBBPF_INFO && !verbose)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static void on_signal(int sig)
{
	(void)sig;
	exiting = 1;
}

static int install_signals(void)
{
	struct sigaction sa = {.sa_handler = on_signal};

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
		return -errno;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static uint64_t now_ns(void)
{
	return sys_mono_ns();
}

/* ---- pinning ------------------------------------------------------------------- */

static const char *const pinned_maps[] = {"counters", "hists", "info"};

static struct bpf_map *pinned_map(struct wakeup_bpf *skel, int i)
{
	return i == 0 ? skel->maps.counters : i == 1 ? skel->maps.hists : skel->maps.info;
}

/* The directory holding dir must be a bpf filesystem; /sys/fs/bpf is made
 * one when it is not yet (bpftool does the same). */
static int ensure_bpffs(const char *dir)
{
	char parent[PATH_MAX], *slash;
	struct statfs sf;

	snprintf(parent, sizeof(parent), "%s", dir);
	slash = strrchr(parent, '/');
	if (!slash || slash == parent)
		return -EINVAL;
	*slash = 0;
	if (statfs(parent, &sf) == 0 && sf.f_type == BPF_FS_MAGIC)
		return 0;
	if (strcmp(parent, "/sys/fs/bpf")) {
		fprintf(stderr, TT_PROG ": cannot pin maps: %s is not on a bpf filesystem\n", dir);
		return -ENOTSUP;
	}
	if (mount("bpf", parent, "bpf", 0, "mode=0700") < 0) {
		int e = errno;

		fprintf(stderr, TT_PROG ": cannot pin maps: /sys/fs/bpf is not a bpf filesystem and mounting one "
			"failed: %s%s\n", strerror(e), e == EPERM ? " (needs CAP_SYS_ADMIN: run as root, or "
			"'mount -t bpf bpf /sys/fs/bpf' first)" : "");
		return -e;
	}
	fprintf(stderr, TT_PROG ": mounted a bpf filesystem at /sys/fs/bpf\n");
	return 0;
}

/* Pins left by a takt-trace that died without cleaning up are removed;
 * those of one still running are left alone (-EBUSY). */
static int clear_stale_pins(const char *dir)
{
	char path[PATH_MAX + 16];
	struct tt_info info;
	__u32 zero = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/info", dir);
	fd = bpf_obj_get(path);
	if (fd >= 0) {
		int r = bpf_map_lookup_elem(fd, &zero, &info);

		close(fd);
		if (r == 0 && info.tracer_pid && (pid_t)info.tracer_pid != getpid() &&
		    (kill((pid_t)info.tracer_pid, 0) == 0 || errno == EPERM)) {
			fprintf(stderr, TT_PROG ": cannot pin maps: takt-trace pid %u already pins its maps at %s "
				"(use --pin-dir DIR or --no-pin)\n", info.tracer_pid, dir);
			return -EBUSY;
		}
	}
	for (size_t i = 0; i < sizeof(pinned_maps) / sizeof(pinned_maps[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, pinned_maps[i]);
		unlink(path);
	}
	return 0;
}

static void unpin_maps(struct tracer *t)
{
	char path[PATH_MAX + 16];

	if (!t->pinned)
		return;
	for (size_t i = 0; i < sizeof(pinned_maps) / sizeof(pinned_maps[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", t->pin_dir, pinned_maps[i]);
		bpf_map__unpin(pinned_map(t->skel, (int)i), path);
	}
	rmdir(t->pin_dir);
	t->pinned = false;
}

static int pin_maps(struct tracer *t)
{
	char path[PATH_MAX + 16];
	int r;

	snprintf(t->pin_dir, sizeof(t->pin_dir), "%s", t->o->pin_dir);
	if ((r = ensure_bpffs(t->pin_dir)) < 0)
		return r;
	if (mkdir(t->pin_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		fprintf(stderr, TT_PROG ": cannot pin maps: mkdir %s: %s\n", t->pin_dir, strerror(errno));
		return r;
	}
	if ((r = clear_stale_pins(t->pin_dir)) < 0)
		return r;
	t->pinned = true;
	for (size_t i = 0; i < sizeof(pinned_maps) / sizeof(pinned_maps[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", t->pin_dir, pinned_maps[i]);
		r = bpf_map__pin(pinned_map(t->skel, (int)i), path);
		if (r < 0) {
			fprintf(stderr, TT_PROG ": cannot pin %s: %s\n", path, strerror(-r));
			unpin_maps(t);
			return r;
		}
	}
	return 0;
}

/* ---- processes and files ------------------------------------------------------ */

static bool known(const struct tracer *t, pid_t pid)
{
	for (int i = 0; i < t->n_known; i++)
		if (t->known[i] == pid)
			return true;
	return false;
}

static void remember(struct tracer *t, pid_t pid)
{
	if (t->n_known < MAX_PIDS)
		t->known[t->n_known++] = pid;
}

static void set_member(struct tracer *t, pid_t pid, __u8 member)
{
	__u32 key = (__u32)pid;

	bpf_map_update_elem(bpf_map__fd(t->skel->maps.tgids), &key, &member, BPF_ANY);
}

/* New members of the domain: traced from now on, and their files attached
 * (a statically linked program brings its own probes). */
static void refresh_domain(struct tracer *t)
{
	static pid_t pids[4096];
	int n = tt_domain_pids(t->o->domain, pids, 4096);

	for (int i = 0; i < n; i++) {
		if (known(t, pids[i]))
			continue;
		set_member(t, pids[i], 1);
		remember(t, pids[i]);
		tt_attach_pid(&t->at, pids[i]);
		if (t->o->verbose)
			fprintf(stderr, TT_PROG ": pid %d is in domain %s\n", (int)pids[i], t->o->domain);
	}
	/* Reported by the kernel side and not in the table: outside the domain. */
	for (int i = 0; i < t->n_pending; i++)
		if (!known(t, t->pending[i]))
			set_member(t, t->pending[i], 0);
	t->n_pending = 0;
}

/* Without a domain: any process may map a file with probes. */
static void refresh_all(struct tracer *t)
{
	static pid_t pids[MAX_PIDS];
	int n = tt_all_pids(pids, MAX_PIDS);

	for (int i = 0; i < n; i++) {
		if (known(t, pids[i]))
			continue;
		remember(t, pids[i]);
		tt_attach_pid(&t->at, pids[i]);
	}
	t->n_pending = 0;
}

static void attach_defaults(struct tracer *t)
{
	char list[] = TAKT_TRACE_DEFAULT_LIBS, *save = NULL;

	for (char *p = strtok_r(list, ":", &save); p; p = strtok_r(NULL, ":", &save))
		if (access(p, R_OK) == 0)
			tt_attach_file(&t->at, p);
}

static int attach_all(struct tracer *t)
{
	const struct tt_opts *o = t->o;
	int r;

	for (int i = 0; i < o->n_libs; i++) {
		r = tt_attach_file(&t->at, o->libs[i]);
		if (r < 0) {
			fprintf(stderr, TT_PROG ": cannot attach to %s: %s\n", o->libs[i], strerror(-r));
			return r;
		}
		if (r == 0 && t->at.n_files == 0)
			fprintf(stderr, TT_PROG ": %s holds no takt probes\n", o->libs[i]);
	}
	if (!o->n_libs)
		attach_defaults(t);
	if (o->domain) {
		pid_t probe;

		r = tt_domain_pids(o->domain, &probe, 1);
		if (r == -ENOENT)
			fprintf(stderr, TT_PROG ": no broker runs for domain '%s' yet: its processes are traced "
				"as they connect\n", o->domain);
		else if (r < 0)
			fprintf(stderr, TT_PROG ": cannot read the process table of domain '%s': %s\n", o->domain,
				strerror(-r));
		refresh_domain(t);
	} else {
		refresh_all(t);
	}
	if (!t->at.n_files) {
		fprintf(stderr, TT_PROG ": no file with takt probes found: no traced process maps one and no "
			"default library exists; start a takt process or name the file with --lib PATH\n");
		return -ENOENT;
	}
	return 0;
}

/* ---- events ------------------------------------------------------------------- */

static int handle_event(void *ctx, void *data, size_t size)
{
	struct tracer *t = ctx;
	const struct tt_hdr *h = data;

	if (size < sizeof(*h))
		return 0;
	if (h->type == EV_NEW_PROC) {
		if (t->n_pending < (int)(sizeof(t->pending) / sizeof(t->pending[0])))
			t->pending[t->n_pending++] = (pid_t)h->pid;
		return 0;
	}
	if (h->type == EV_REQUEST) {
		if (size < sizeof(struct tt_request) || !tt_svc_wanted(t->o, data))
			return 0;
		t->requests++;
		if (t->svc) {
			tt_svc_print(stdout, &t->clock, data, t->o->json);
			tt_svc_add(t->svc, data);
		}
	}
	if (t->rec) {
		int r = tt_rec_write(t->rec, data, size);

		if (r < 0 && !t->err) {
			fprintf(stderr, TT_PROG ": cannot write %s: %s\n", t->o->out, strerror(-r));
			t->err = r;
			exiting = 1;
		}
	}
	if (h->type == EV_SAMPLE && size >= sizeof(struct tt_sample)) {
		t->samples++;
		if (t->o->mode == MODE_WAKEUPS)
			tt_print_sample(stdout, &t->clock, data, t->o->json);
	}
	return 0;
}

/* Runs the kernel skipped because another BPF program ran on that CPU. */
static void report_misses(struct wakeup_bpf *skel)
{
	struct bpf_program *prog;

	bpf_object__for_each_program(prog, skel->obj) {
		struct bpf_prog_info pi = {0};
		__u32 len = sizeof(pi);

		if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &pi, &len) == 0 && pi.recursion_misses)
			fprintf(stderr, TT_PROG ": program %s was skipped %llu times (recursion)\n",
				bpf_program__name(prog), (unsigned long long)pi.recursion_misses);
	}
}

/* The per-CPU counters, summed. */
static int read_counters(struct tracer *t, struct tt_counters *c)
{
	int ncpu = libbpf_num_possible_cpus();
	struct tt_counters *v;
	__u32 zero = 0;
	int r = 0;

	if (ncpu <= 0)
		return -EINVAL;
	v = calloc((size_t)ncpu, sizeof(*v));
	if (!v)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	if (bpf_map_lookup_elem(bpf_map__fd(t->skel->maps.counters), &zero, v) == 0) {
		for (int i = 0; i < ncpu; i++) {
			const __u64 *src = (const __u64 *)&v[i];
			__u64 *dst = (__u64 *)c;

			for (size_t k = 0; k < sizeof(*c) / sizeof(__u64); k++)
				dst[k] += src[k];
		}
	} else {
		r = -errno;
	}
	free(v);
	return r;
}

static int run_loop(struct tracer *t, struct ring_buffer *rb)
{
	const struct tt_opts *o = t->o;
	uint64_t start = now_ns(), refresh = start, interval = start;
	uint64_t end = o->duration_s ? start + (uint64_t)(o->duration_s * 1e9) : UINT64_MAX;
	int r = 0;

	while (!exiting) {
		uint64_t now;

		r = ring_buffer__poll(rb, 50);
		if (r < 0 && r != -EINTR) {
			fprintf(stderr, TT_PROG ": reading the ring buffer: %s\n", strerror(-r));
			return r;
		}
		now = now_ns();
		if (t->n_pending || now - refresh >= (o->domain ? DOMAIN_REFRESH_NS : SCAN_REFRESH_NS)) {
			if (o->domain)
				refresh_domain(t);
			else
				refresh_all(t);
			refresh = now;
		}
		if (o->mode == MODE_HIST && now - interval >= (uint64_t)(o->interval_s * 1e9)) {
			tt_print_hists(stdout, bpf_map__fd(t->skel->maps.hists), &t->clock, o->json, o->cumulative);
			interval = now;
		}
		if (now >= end)
			break;
	}
	ring_buffer__consume(rb);
	if (o->mode == MODE_HIST)
		tt_print_hists(stdout, bpf_map__fd(t->skel->maps.hists), &t->clock, o->json, o->cumulative);
	fflush(stdout);
	return 0;
}

/* A request never answered: printed and summarised, or recorded. */
static int on_unanswered(void *ctx, const struct tt_request *r)
{
	struct tracer *t = ctx;

	return handle_event(t, (void *)r, sizeof(*r));
}

/* The requests never answered, after the responses; then the summary. */
static void finish_services(struct tracer *t)
{
	const struct tt_opts *o = t->o;
	uint64_t before = t->requests;
	int r;

	if (o->mode == MODE_SERVICES && !o->json)
		printf("\nnever answered within the run (sent, no response taken):\n");
	r = tt_svc_unanswered(bpf_map__fd(t->skel->maps.svc_sent), bpf_map__fd(t->skel->maps.svc_served),
			      on_unanswered, t);
	if (r < 0)
		fprintf(stderr, TT_PROG ": cannot read the requests never answered: %s\n", strerror(-r));
	else if (t->requests == before && o->mode == MODE_SERVICES && !o->json)
		printf("(none)\n");
	if (t->svc) {
		if (!o->json)
			putchar('\n');
		tt_svc_print_summary(stdout, t->svc, &t->clock, o->json);
	}
}

/* ---- the tracer's life -------------------------------------------------------- */

static bool traces_services(const struct tt_opts *o)
{
	return o->mode == MODE_SERVICES || o->mode == MODE_RECORD;
}

static void configure(struct wakeup_bpf *skel, const struct tt_opts *o)
{
	skel->rodata->filter_domain = o->domain != NULL;
	if (o->domain)
		strncpy((char *)skel->rodata->domain_name, o->domain, TT_DOMAIN_LEN - 1);
	skel->rodata->filter_topic = o->topic != NULL;
	if (o->topic)
		strncpy((char *)skel->rodata->topic_name, o->topic, TT_TOPIC_LEN - 1);
	skel->rodata->filter_pid = (__u32)o->pid;
	skel->rodata->deadline_ns = o->deadline_ns;
	skel->rodata->emit_samples = o->mode == MODE_WAKEUPS || o->mode == MODE_RECORD;
	skel->rodata->emit_raw = o->mode == MODE_RECORD;
	skel->rodata->svc_join = traces_services(o);
	bpf_map__set_max_entries(skel->maps.events, o->ringbuf_mb << 20);
	skel->rodata->wakeup_bytes = (__u64)o->ringbuf_mb << 18; /* a quarter full */
}

static void fill_info(const struct tt_opts *o, struct tt_info *info)
{
	memset(info, 0, sizeof(*info));
	info->tracer_pid = (__u32)getpid();
	info->filter_pid = (__u32)o->pid;
	info->start_ns = now_ns();
	if (o->domain)
		strncpy(info->domain, o->domain, sizeof(info->domain) - 1);
	if (o->topic)
		strncpy(info->topic, o->topic, sizeof(info->topic) - 1);
}

static int attach_sched(struct wakeup_bpf *skel)
{
	skel->links.on_sched_waking = bpf_program__attach(skel->progs.on_sched_waking);
	if (!skel->links.on_sched_waking)
		return -errno;
	skel->links.on_sched_wakeup = bpf_program__attach(skel->progs.on_sched_wakeup);
	if (!skel->links.on_sched_wakeup)
		return -errno;
	skel->links.on_sched_switch = bpf_program__attach(skel->progs.on_sched_switch);
	if (!skel->links.on_sched_switch)
		return -errno;
	skel->links.on_exit = bpf_program__attach(skel->progs.on_exit);
	if (!skel->links.on_exit)
		return -errno;
	return 0;
}

static int open_recording(struct tracer *t, const struct tt_info *info)
{
	struct tt_file_header fh = {.version = 1, .header_size = sizeof(fh)};
	int r;

	memcpy(fh.magic, TT_FILE_MAGIC, 8);
	fh.mono_to_real_ns = t->clock.mono_to_real_ns;
	fh.start_ns = info->start_ns;
	fh.tracer_pid = info->tracer_pid;
	fh.filter_pid = info->filter_pid;
	memcpy(fh.domain, info->domain, sizeof(fh.domain));
	memcpy(fh.topic, info->topic, sizeof(fh.topic));
	gethostname(fh.host, sizeof(fh.host) - 1);
	r = tt_rec_open(t->o->out, &fh, &t->rec);
	if (r < 0)
		fprintf(stderr, TT_PROG ": cannot create %s: %s\n", t->o->out, strerror(-r));
	return r;
}

static void close_recording(struct tracer *t, const struct tt_counters *c)
{
	struct tt_file_counters fc = {.h = {.type = EV_COUNTERS, .size = sizeof(fc), .ts = now_ns(),
					    .pid = (__u32)getpid()}};
	uint64_t n = 0;
	int r;

	if (!t->rec)
		return;
	fc.c = *c;
	tt_rec_write(t->rec, &fc, sizeof(fc));
	r = tt_rec_close(t->rec, &n);
	t->rec = NULL;
	if (r < 0)
		fprintf(stderr, TT_PROG ": writing %s failed: %s\n", t->o->out, strerror(-r));
	else
		fprintf(stderr, TT_PROG ": recorded %llu events (%llu samples) to %s\n", (unsigned long long)n,
			(unsigned long long)t->samples, t->o->out);
}

static void print_ready(const struct tracer *t)
{
	const struct tt_opts *o = t->o;

	fprintf(stderr, "Tracing takt %s in %s%s%s%s%s, %d file(s) with probes%s%s. Hit Ctrl-C to end.\n",
		o->mode == MODE_SERVICES ? "services" : "wakeups", o->domain ? "domain " : "every domain",
		o->domain ? o->domain : "", o->topic ? ", topic " : "", o->topic ? o->topic : "",
		o->pid ? ", one process" : "", t->at.n_files,
		t->pinned ? "; maps pinned at " : "", t->pinned ? t->pin_dir : "");
	if ((o->mode == MODE_WAKEUPS || o->mode == MODE_SERVICES) && !o->json) {
		printf("latencies in microseconds; '-' where a stage did not happen\n");
		if (o->mode == MODE_WAKEUPS)
			tt_print_sample_header(stdout);
		else
			tt_svc_print_header(stdout);
	}
	fflush(stdout);
}

static int load(struct tracer *t)
{
	int r;

	t->skel = wakeup_bpf__open();
	if (!t->skel) {
		fprintf(stderr, TT_PROG ": cannot open the BPF object: %s\n", strerror(errno));
		return -errno;
	}
	configure(t->skel, t->o);
	r = wakeup_bpf__load(t->skel);
	if (r < 0)
		fprintf(stderr, TT_PROG ": cannot load the BPF programs: %s%s\n", strerror(-r),
			r == -EPERM ? " (run as root: takt-trace needs CAP_BPF and CAP_PERFMON)" : "");
	return r;
}

/* Root, or CAP_BPF with CAP_PERFMON (or CAP_SYS_ADMIN): else a clear word
 * now rather than libbpf's EPERM later. */
static bool may_trace(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {{0}};
	__u64 eff;

	if (geteuid() == 0)
		return true;
	if (syscall(SYS_capget, &h, d) < 0)
		return true; /* let the kernel say */
	eff = (__u64)d[1].effective << 32 | d[0].effective;
	return (eff >> CAP_SYS_ADMIN & 1) || ((eff >> 39 & 1) && (eff >> 38 & 1)); /* CAP_BPF, CAP_PERFMON */
}

static int run_tracer(const struct tt_opts *o)
{
	struct tracer t = {.o = o};
	struct ring_buffer *rb = NULL;
	struct tt_counters c = {0};
	struct tt_info info;
	__u32 zero = 0;
	int r;

	if (!may_trace()) {
		fprintf(stderr, TT_PROG ": needs root (or CAP_BPF and CAP_PERFMON) to load its BPF programs and "
			"attach to takt's probes; try: sudo " TT_PROG " ...\n");
		return 1;
	}
	tt_clock_init(&t.clock);
	t.known = calloc(MAX_PIDS, sizeof(*t.known));
	if (!t.known)
		return 1;
	if ((r = load(&t)) < 0)
		goto cleanup;
	fill_info(o, &info);
	bpf_map_update_elem(bpf_map__fd(t.skel->maps.info), &zero, &info, BPF_ANY);
	if ((r = attach_sched(t.skel)) < 0) {
		fprintf(stderr, TT_PROG ": cannot attach to the scheduler tracepoints: %s\n", strerror(-r));
		goto cleanup;
	}
	t.at.skel = t.skel;
	t.at.verbose = o->verbose;
	t.at.skip = traces_services(o) ? 0 : TT_SVC_PROBES;
	if (o->mode == MODE_SERVICES && !(t.svc = tt_svc_new())) {
		r = -ENOMEM;
		goto cleanup;
	}
	if ((r = attach_all(&t)) < 0)
		goto cleanup;
	if (o->mode == MODE_RECORD && (r = open_recording(&t, &info)) < 0)
		goto cleanup;
	rb = ring_buffer__new(bpf_map__fd(t.skel->maps.events), handle_event, &t, NULL);
	if (!rb) {
		r = -errno;
		fprintf(stderr, TT_PROG ": cannot open the ring buffer: %s\n", strerror(-r));
		goto cleanup;
	}
	if ((r = install_signals()) < 0)
		goto cleanup;
	if (!o->no_pin && pin_maps(&t) < 0)
		fprintf(stderr, TT_PROG ": continuing without pinned maps\n");
	print_ready(&t);
	r = run_loop(&t, rb);
	if (traces_services(o))
		finish_services(&t);
	if (o->verbose)
		report_misses(t.skel);
	if (read_counters(&t, &c) == 0)
		tt_print_counters(stderr, &c, o->json);
cleanup:
	close_recording(&t, &c);
	ring_buffer__free(rb);
	tt_attach_destroy(&t.at);
	if (t.skel)
		unpin_maps(&t);
	wakeup_bpf__destroy(t.skel);
	tt_svc_free(t.svc);
	free(t.known);
	return r < 0 || t.err ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct tt_opts o;
	int r = parse_args(argc, argv, &o);

	if (r)
		return r == 1 ? 0 : r;
	verbose = o.verbose;
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o.mode == MODE_EXPORT)
		return tt_export_perfetto(o.in, o.perfetto, o.verbose);
	libbpf_set_print(libbpf_print);
	return run_tracer(&o);
}
