/* takt-trace.h - the user-space parts of takt-trace and what they share.
 *
 *   takt-trace.c  command line, the skeleton's open -> load -> attach -> cleanup,
 *                 pinning, the event loop
 *   attach.c      which files hold takt's probes (ELF notes), attaching to them
 *   domain.c      a domain's processes, from its broker's process table
 *   output.c      live lines, JSON, histograms, counters
 *   services.c    services mode: requests joined with their responses, the
 *                 ones never answered, per-service histograms
 *   record.c      the LZ4 event file and its Chrome/Perfetto export
 */
#ifndef TAKT_TRACE_H
#define TAKT_TRACE_H

#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "wakeup.h"

#define TT_PROG "takt-trace"
#define TT_PIN_DIR "/sys/fs/bpf/takt"
#define TT_MAX_LIBS 16

enum tt_mode { MODE_NONE, MODE_WAKEUPS, MODE_HIST, MODE_RECORD, MODE_EXPORT, MODE_SERVICES };

struct tt_opts {
	enum tt_mode mode;
	bool json;
	bool verbose;
	bool no_pin;
	bool cumulative;       /* hist: do not clear between intervals */
	const char *domain;    /* NULL: every domain */
	const char *topic;     /* NULL: every topic */
	pid_t pid;             /* 0: every process */
	double duration_s;     /* 0: until SIGINT/SIGTERM */
	double interval_s;     /* hist */
	uint64_t deadline_ns;  /* 0: no deadline counting */
	const char *libs[TT_MAX_LIBS];
	int n_libs;
	const char *pin_dir;
	const char *out;       /* record */
	const char *in;        /* export */
	const char *perfetto;  /* export */
	unsigned ringbuf_mb;
};

/* ---- attach.c ------------------------------------------------------------ */

/* Bits of the takt probes a file holds (bit i: tt_probe_names[i]). */
extern const char *const tt_probe_names[];
#define TT_N_PROBES 14
#define TT_SVC_PROBES (0xfu << 10) /* request, request_take, respond, response_take */
#define TT_HAS_CONNECT (1u << 31) /* the file defines proto_connect */

struct bpf_program;
struct bpf_link;
struct wakeup_bpf;
struct tt_seen_file;

struct tt_attach {
	struct wakeup_bpf *skel;
	struct bpf_link **links;
	size_t n_links, cap_links;
	struct tt_seen_file *seen; /* every file looked at, with or without probes */
	size_t n_seen, cap_seen;
	int n_files;               /* files attached to */
	unsigned skip;             /* probes not to attach (bit i: tt_probe_names[i]) */
	bool verbose;
};

/* Which takt probes path holds: 0 and *mask (0 when none), or -errno. */
int tt_elf_probes(const char *path, unsigned *mask);
/* Attaches every program whose probe path holds, for every process.
 * 1 attached, 0 nothing to attach or attached before, -errno. */
int tt_attach_file(struct tt_attach *a, const char *path);
/* Attaches to each file holding takt probes that pid maps. Count attached. */
int tt_attach_pid(struct tt_attach *a, pid_t pid);
void tt_attach_destroy(struct tt_attach *a);

/* ---- domain.c ------------------------------------------------------------ */

/* The pids in the process table of the domain's broker (the broker's own
 * included), at most max: count, -ENOENT no broker, -EPROTO layout mismatch. */
int tt_domain_pids(const char *domain, pid_t *out, int max);
/* Every pid on the machine, at most max. Count. */
int tt_all_pids(pid_t *out, int max);

/* ---- output.c ------------------------------------------------------------ */

struct tt_clock {
	int64_t mono_to_real_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */
};
void tt_clock_init(struct tt_clock *c);
/* "HH:MM:SS.uuuuuu" of a CLOCK_MONOTONIC time. */
void tt_fmt_time(const struct tt_clock *c, uint64_t mono_ns, char *buf, size_t len);

void tt_print_sample_header(FILE *f);
void tt_print_sample(FILE *f, const struct tt_clock *c, const struct tt_sample *s, bool json);
const char *tt_wake_state_name(uint32_t st);
const char *tt_stage_name(uint32_t stage);
void tt_print_counters(FILE *f, const struct tt_counters *c, bool json);
/* The counters as one JSON object, no newline. */
void tt_print_counters_obj(FILE *f, const struct tt_counters *c);
/* Prints every histogram of the map (sorted), then clears them unless
 * keep. Count printed, -errno. */
int tt_print_hists(FILE *f, int map_fd, const struct tt_clock *c, bool json, bool keep);
/* One log2 histogram (microseconds) under "title (count, mean, max)". */
void tt_print_log2(FILE *f, const char *title, const struct tt_stage_hist *h);
/* Its JSON fields from ,"stage" to the closing brace and newline. */
void tt_print_log2_json(FILE *f, const char *stage, const struct tt_stage_hist *h);
/* Writes s to f as a JSON string (quotes included). */
void tt_json_str(FILE *f, const char *s, size_t max);
/* b - a when both stages happened (in order), else -1. */
int64_t tt_span(uint64_t a, uint64_t b);
/* A latency column in microseconds, "-" for -1. */
void tt_us_col(FILE *f, int64_t ns);
/* ,"key":ns, or null for -1; tt_json_stamp: null for 0. */
void tt_json_ns(FILE *f, const char *key, int64_t ns);
void tt_json_stamp(FILE *f, const char *key, uint64_t ns);

/* ---- services.c ---------------------------------------------------------- */

struct tt_services;
/* The per-service summary of a run; NULL without memory. */
struct tt_services *tt_svc_new(void);
void tt_svc_free(struct tt_services *s);
/* The service a service topic ("@/S/q", "@/S/r/<id>") belongs to; any other
 * name as it is. */
void tt_svc_name(const char *topic, char *out, size_t len);
/* Whether --topic (a service, or one of its topics) and --pid (its client
 * or its server) let r through. */
bool tt_svc_wanted(const struct tt_opts *o, const struct tt_request *r);
void tt_svc_print_header(FILE *f);
void tt_svc_print(FILE *f, const struct tt_clock *c, const struct tt_request *r, bool json);
/* Counts r into the summary. */
void tt_svc_add(struct tt_services *s, const struct tt_request *r);
/* Per service: counts, how the threads stood, and a histogram of each hop. */
void tt_svc_print_summary(FILE *f, const struct tt_services *s, const struct tt_clock *c, bool json);
/* Calls fn for each request of the kernel's svc_sent map (fd) that no
 * response was joined to, with its server's half from svc_served: as a
 * REQ_UNANSWERED event. The count, or -errno (or fn's < 0). */
int tt_svc_unanswered(int sent_fd, int served_fd, int (*fn)(void *ctx, const struct tt_request *r), void *ctx);

/* ---- record.c ------------------------------------------------------------ */

#define TT_FILE_MAGIC "TAKTTRC1"
#define EV_COUNTERS 100 /* file only: the counters at the end of a recording */

struct tt_file_header {
	char magic[8];
	__u32 version;
	__u32 header_size;
	__s64 mono_to_real_ns;
	__u64 start_ns;
	__u32 tracer_pid;
	__u32 filter_pid;
	char domain[TT_DOMAIN_LEN];
	char topic[TT_TOPIC_LEN];
	char host[64];
};

struct tt_file_counters {
	struct tt_hdr h;
	struct tt_counters c;
};

struct tt_recorder;
/* -errno; the file is created (truncated) at path. */
int tt_rec_open(const char *path, const struct tt_file_header *fh, struct tt_recorder **out);
int tt_rec_write(struct tt_recorder *r, const void *ev, size_t size);
/* Flushes and closes; 0 or -errno of the last failure. NULL is fine. */
int tt_rec_close(struct tt_recorder *r, uint64_t *ret_events);
/* Reads a recording and writes Chrome trace-event JSON. 0, or 1 with a message. */
int tt_export_perfetto(const char *in, const char *out, bool verbose);

#endif
