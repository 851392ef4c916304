/* cli_record.c - `takt record`, `takt play` and `takt record --recover`:
 * recordings of a domain's topics as MCAP files (mcap.h).
 *
 * The recorder is one thread: a subscriber per topic (zero-copy take,
 * copied at once into the open chunk, released), all of their eventfds
 * in one edge-triggered epoll, and the chunk compressed and written when
 * it reaches its size or is a second old. Its queue depth is the deepest
 * the broker allows (up to 4096), so a burst waits in the publishers'
 * rings while a chunk is written; what overflows them anyway is counted
 * (takt_sub_dropped) and shown.
 *
 * Times in the file are CLOCK_REALTIME nanoseconds: log_time is when the
 * recorder took the sample, publish_time the sample's publish_ns
 * (CLOCK_MONOTONIC) moved onto the same clock. Both are read as
 * CLOCK_MONOTONIC plus the realtime offset taken when the recording
 * starts (a Metadata record "takt" keeps it), so a clock step during a
 * recording neither reorders log times nor changes their spacing.
 */
#include "cli.h"
#include "mcap.h"
#include "recording.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MESSAGE_ENCODING "application/octet-stream"
#define CHUNK_SIZE (1u << 20)          /* uncompressed bytes that close a chunk */
#define CHUNK_AGE_NS 1000000000ull     /* ... or its age */
#define DISCOVER_NS 250000000ull       /* patterns looked up again */
#define PROGRESS_NS 500000000ull
#define QUEUE_DEPTH_MAX 4096u

/* CLOCK_REALTIME - CLOCK_MONOTONIC, now. */
static uint64_t realtime_offset(void)
{
	struct timespec rt, mt;

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mt);
	return ((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) -
	       ((uint64_t)mt.tv_sec * 1000000000ull + (uint64_t)mt.tv_nsec);
}

static void human_bytes(char *out, size_t n, uint64_t v)
{
	if (v >= 10ull << 30)
		snprintf(out, n, "%.1f GiB", (double)v / (1ull << 30));
	else if (v >= 10ull << 20)
		snprintf(out, n, "%.1f MiB", (double)v / (1ull << 20));
	else if (v >= 10ull << 10)
		snprintf(out, n, "%.1f KiB", (double)v / (1ull << 10));
	else
		snprintf(out, n, "%" PRIu64 " B", v);
}

/* Seconds as a JSON number with three decimals (json-c writes doubles
 * with 17 digits). */
static struct json_object *json_seconds(double s)
{
	char b[32];

	snprintf(b, sizeof(b), "%.3f", s);
	return json_object_new_double_s(s, b);
}

/* A topic's line of the final summary, text or JSON. */
struct topic_stat {
	const char *name, *type;
	uint64_t samples, bytes, drops, first_ns, last_ns;
};

static void summary_print(const struct cli *c, const char *verb, const char *file, const struct topic_stat *t,
			  size_t n, double seconds, uint64_t file_bytes, unsigned loops)
{
	uint64_t samples = 0, bytes = 0, drops = 0;
	struct json_object *o, *a;

	for (size_t i = 0; i < n; i++) {
		samples += t[i].samples;
		bytes += t[i].bytes;
		drops += t[i].drops;
	}
	if (!c->json) {
		char b[32], fb[32];

		human_bytes(b, sizeof(b), bytes);
		human_bytes(fb, sizeof(fb), file_bytes);
		printf("%s %s: %" PRIu64 " samples, %s in %.1f s, %" PRIu64 " dropped, %zu topics", verb, file, samples,
		       b, seconds, drops, n);
		if (loops)
			printf(", %u loops", loops);
		if (file_bytes)
			printf(" (file: %s)", fb);
		printf("\n");
		for (size_t i = 0; i < n; i++) {
			human_bytes(b, sizeof(b), t[i].bytes);
			printf("  %-32s %-24s %10" PRIu64 " samples %12s %8" PRIu64 " dropped\n", t[i].name,
			       t[i].type[0] ? t[i].type : "-", t[i].samples, b, t[i].drops);
		}
		return;
	}
	o = json_object_new_object();
	a = json_object_new_array();
	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "samples", cli_json_u64(samples));
	json_object_object_add(o, "bytes", cli_json_u64(bytes));
	json_object_object_add(o, "drops", cli_json_u64(drops));
	json_object_object_add(o, "duration_s", json_seconds(seconds));
	if (file_bytes)
		json_object_object_add(o, "file_bytes", cli_json_u64(file_bytes));
	if (loops)
		json_object_object_add(o, "loops", json_object_new_int64(loops));
	for (size_t i = 0; i < n; i++) {
		struct json_object *e = json_object_new_object();
		double d = t[i].samples > 1 ? (double)(t[i].last_ns - t[i].first_ns) / 1e9 : 0;

		json_object_object_add(e, "name", json_object_new_string(t[i].name));
		json_object_object_add(e, "type", json_object_new_string(t[i].type));
		json_object_object_add(e, "samples", cli_json_u64(t[i].samples));
		json_object_object_add(e, "bytes", cli_json_u64(t[i].bytes));
		json_object_object_add(e, "drops", cli_json_u64(t[i].drops));
		json_object_object_add(e, "duration_s", json_seconds(d));
		json_object_array_add(a, e);
	}
	json_object_object_add(o, "topics", a);
	cli_json_print(o);
}

/* ---- takt record ---- */

struct rec_topic {
	char name[TAKT_TOPIC_NAME_MAX];
	char type[TAKT_TOPIC_NAME_MAX];
	takt_sub *sub;
	uint16_t channel; /* 0 until its first sample makes the channel */
	uint64_t samples, bytes, first_ns, last_ns;
};

struct recorder {
	struct cli *c;
	takt_node *node;
	struct mcap_writer *w;
	const char *file;
	int ep;
	char **patterns; /* names with a glob, and "**" for --all */
	size_t n_patterns;
	struct rec_topic *topics;
	size_t n_topics, cap_topics;
	uint16_t n_channels, n_schemas;
	char (*schemas)[TAKT_TOPIC_NAME_MAX]; /* schema id - 1 -> type name */
	unsigned depth;       /* queue depth asked of each subscriber */
	uint64_t offset;      /* CLOCK_REALTIME - CLOCK_MONOTONIC */
	uint64_t max_bytes;   /* 0: no limit */
	bool full;            /* max_bytes reached */
	uint64_t chunk_since; /* when the open chunk got its first message */
};

static uint64_t rec_drops(const struct recorder *rc, size_t i)
{
	return rc->topics[i].sub ? takt_sub_dropped(rc->topics[i].sub) : 0;
}

/* Subscribes to topic name (already known or not), at the deepest queue
 * the broker and the publishers' pools allow. 0, or 1 after a message. */
static int rec_subscribe(struct recorder *rc, const char *name)
{
	struct rec_topic *t;
	unsigned depth = rc->depth;
	int r;

	for (size_t i = 0; i < rc->n_topics; i++)
		if (!strcmp(rc->topics[i].name, name))
			return 0;
	if (rc->n_topics == rc->cap_topics) {
		size_t cap = rc->cap_topics ? 2 * rc->cap_topics : 16;

		t = realloc(rc->topics, cap * sizeof(*t));
		if (!t) {
			fprintf(stderr, "takt record: out of memory\n");
			return 1;
		}
		rc->topics = t;
		rc->cap_topics = cap;
	}
	t = &rc->topics[rc->n_topics];
	*t = (struct rec_topic){0};
	snprintf(t->name, sizeof(t->name), "%s", name);
	for (;;) {
		struct takt_sub_opts so = {.topic = name, .queue_depth = depth};

		r = takt_sub_open(rc->node, &so, &t->sub);
		if ((r != -ENOMEM && r != -EINVAL) || depth <= 16)
			break;
		depth /= 2; /* a publisher's pool cannot grow that much */
	}
	if (r < 0) {
		fprintf(stderr, "takt record: cannot subscribe to '%s': %s\n", name, strerror(-r));
		return 1;
	}
	if (epoll_ctl(rc->ep, EPOLL_CTL_ADD, takt_sub_fd_edge(t->sub),
		      &(struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = rc->n_topics}) < 0) {
		fprintf(stderr, "takt record: epoll: %s\n", strerror(errno));
		takt_sub_close(t->sub);
		return 1;
	}
	rc->n_topics++;
	return 0;
}

/* Subscribes to the topics that match a pattern and are new. */
static int rec_discover(struct recorder *rc)
{
	for (size_t p = 0; p < rc->n_patterns; p++) {
		struct takt_topic_info ti[256];
		int n = takt_node_topics(rc->node, rc->patterns[p], ti, 256);

		for (int i = 0; i < n && i < 256; i++)
			if (rec_subscribe(rc, ti[i].name))
				return 1;
	}
	return 0;
}

/* The channel of a topic, made at its first sample (the publisher is
 * known by then, and with it the type): 0 or a negative errno. */
static int rec_channel(struct recorder *rc, struct rec_topic *t)
{
	struct takt_topic_info ti = {0};
	uint16_t schema = 0;
	int r;

	if (takt_node_topics(rc->node, t->name, &ti, 1) >= 1)
		snprintf(t->type, sizeof(t->type), "%s", ti.type_name);
	if (t->type[0]) {
		for (uint16_t i = 0; i < rc->n_schemas && !schema; i++)
			if (!strcmp(rc->schemas[i], t->type))
				schema = (uint16_t)(i + 1);
		if (!schema) {
			void *s = realloc(rc->schemas, (rc->n_schemas + 1u) * sizeof(*rc->schemas));

			if (!s)
				return -ENOMEM;
			rc->schemas = s;
			/* no schema data: takt carries the type's name only */
			r = mcap_writer_schema(rc->w, (uint16_t)(rc->n_schemas + 1), t->type, "", NULL, 0);
			if (r < 0)
				return r;
			memcpy(rc->schemas[rc->n_schemas], t->type, sizeof(t->type));
			schema = ++rc->n_schemas;
		}
	}
	if (rc->n_channels == UINT16_MAX)
		return -ENOSPC;
	r = mcap_writer_channel(rc->w, (uint16_t)(rc->n_channels + 1), schema, t->name, MESSAGE_ENCODING, NULL, NULL,
				0);
	if (r < 0)
		return r;
	t->channel = ++rc->n_channels;
	return 0;
}

/* Takes what waits on topic i, at most max samples: how many were
 * taken, or a negative errno (the file cannot be written). */
static int rec_take(struct recorder *rc, size_t i, int max)
{
	struct rec_topic *t = &rc->topics[i];
	int n = 0;

	while (n < max && !rc->full) {
		struct takt_sample_info info;
		const void *p;
		uint64_t now;
		void *d;
		int r = takt_sub_take(t->sub, &p, &info), err = 0;

		if (r == -EAGAIN)
			break;
		if (r < 0)
			return r;
		now = cli_mono_ns() + rc->offset;
		if (!t->channel && (err = rec_channel(rc, t)) < 0) {
			takt_sub_release(t->sub, p);
			return err;
		}
		if (rc->max_bytes) {
			struct mcap_writer_stats st;

			mcap_writer_stats(rc->w, &st);
			if (st.file_bytes + st.open_bytes + 31 + info.size > rc->max_bytes) {
				takt_sub_release(t->sub, p);
				rc->full = true;
				break;
			}
		}
		d = mcap_writer_message_begin(rc->w, t->channel, (uint32_t)info.seq, now, info.publish_ns + rc->offset,
					      info.size, &err);
		if (d)
			memcpy(d, p, info.size);
		takt_sub_release(t->sub, p);
		if (!d)
			return err;
		if (!rc->chunk_since)
			rc->chunk_since = now;
		if (!t->samples)
			t->first_ns = now;
		t->last_ns = now;
		t->samples++;
		t->bytes += info.size;
		n++;
	}
	return n;
}

/* Takes from every topic, round robin, until none has more: how many. */
static int rec_drain(struct recorder *rc)
{
	int total = 0, n;

	do {
		n = 0;
		for (size_t i = 0; i < rc->n_topics; i++) {
			int k = rec_take(rc, i, 64);

			if (k < 0)
				return k;
			n += k;
		}
		total += n;
	} while (n && !rc->full);
	return total;
}

/* 1 when some subscriber has samples waiting after all. */
static bool rec_arm(struct recorder *rc)
{
	for (size_t i = 0; i < rc->n_topics; i++)
		if (takt_sub_arm(rc->topics[i].sub) == 1)
			return true;
	return false;
}

static void rec_progress(const struct recorder *rc, uint64_t elapsed_ns, bool last)
{
	struct mcap_writer_stats st;
	uint64_t drops = 0, s = elapsed_ns / 1000000000ull;
	char b[32], f[32];

	mcap_writer_stats(rc->w, &st);
	for (size_t i = 0; i < rc->n_topics; i++)
		drops += rec_drops(rc, i);
	human_bytes(b, sizeof(b), st.message_bytes);
	human_bytes(f, sizeof(f), st.file_bytes + st.open_bytes);
	fprintf(stderr, "\r\033[Krecording %zu topics: %" PRIu64 " samples (%s), file %s, %02" PRIu64 ":%02" PRIu64
			", %" PRIu64 " dropped%s",
		rc->n_topics, st.messages, b, f, s / 60, s % 60, drops, last ? "\n" : "");
}

static int rec_metadata(struct recorder *rc)
{
	char offset[32], host[256] = "";
	const char *keys[] = {"domain", "recorder", "host", "realtime_offset_ns", "time"};
	const char *values[] = {rc->c->domain, "takt " TAKT_VERSION_STRING, host, offset,
				"log_time: CLOCK_REALTIME ns when the recorder took the sample; publish_time: the "
				"sample's publish_ns (CLOCK_MONOTONIC) + realtime_offset_ns"};

	gethostname(host, sizeof(host) - 1);
	snprintf(offset, sizeof(offset), "%" PRIu64, rc->offset);
	return mcap_writer_metadata(rc->w, "takt", keys, values, 5);
}

/* The recording loop: until a signal, the duration or the size limit. */
static int rec_loop(struct recorder *rc, uint64_t duration_ns)
{
	bool tty = isatty(STDERR_FILENO);
	uint64_t start = cli_mono_ns(), last_discover = start, last_progress = start;

	while (!cli_stop_signal && !rc->full) {
		uint64_t now;
		int n = rec_drain(rc);

		if (n < 0)
			return n;
		now = cli_mono_ns();
		if (rc->chunk_since && now + rc->offset - rc->chunk_since >= CHUNK_AGE_NS) {
			int r = mcap_writer_flush(rc->w);

			if (r < 0)
				return r;
			rc->chunk_since = 0;
		}
		if (rc->n_patterns && now - last_discover >= DISCOVER_NS) {
			last_discover = now;
			if (rec_discover(rc))
				return -ENOTCONN;
		}
		if (tty && now - last_progress >= PROGRESS_NS) {
			last_progress = now;
			rec_progress(rc, now - start, false);
		}
		if (duration_ns && now - start >= duration_ns)
			break;
		if (!n && !rec_arm(rc)) {
			struct epoll_event ev[16];

			epoll_wait(rc->ep, ev, 16, 50);
		}
	}
	if (!rc->full && rec_drain(rc) < 0) /* what came before the stop */
		return -EIO;
	if (tty)
		rec_progress(rc, cli_mono_ns() - start, true);
	return 0;
}

static int rec_finish(struct recorder *rc, double seconds)
{
	struct topic_stat *ts = calloc(rc->n_topics + 1, sizeof(*ts));
	struct mcap_writer_stats st;
	int r;

	mcap_writer_stats(rc->w, &st);
	for (size_t i = 0; i < rc->n_topics && ts; i++) {
		struct rec_topic *t = &rc->topics[i];
		struct takt_topic_info ti;

		if (!t->type[0] && takt_node_topics(rc->node, t->name, &ti, 1) >= 1) /* no sample came */
			memcpy(t->type, ti.type_name, sizeof(t->type));

		ts[i] = (struct topic_stat){.name = t->name, .type = t->type, .samples = t->samples, .bytes = t->bytes,
					    .drops = rec_drops(rc, i), .first_ns = t->first_ns, .last_ns = t->last_ns};
	}
	r = mcap_writer_close(rc->w);
	rc->w = NULL;
	if (r < 0) {
		fprintf(stderr, "takt record: cannot finish %s: %s\n", rc->file, strerror(-r));
		free(ts);
		return 1;
	}
	if (ts) {
		struct stat sb;

		summary_print(rc->c, "recorded", rc->file, ts, rc->n_topics, seconds,
			      stat(rc->file, &sb) == 0 ? (uint64_t)sb.st_size : 0, 0);
	}
	free(ts);
	return 0;
}

static void rec_free(struct recorder *rc)
{
	for (size_t i = 0; i < rc->n_topics; i++)
		takt_sub_close(rc->topics[i].sub);
	mcap_writer_abandon(rc->w);
	free(rc->topics);
	free(rc->schemas);
	free(rc->patterns);
	if (rc->ep >= 0)
		close(rc->ep);
	takt_node_close(rc->node);
}

/* The deepest queue the broker lets a subscriber have (capped). */
static unsigned rec_depth(const struct cli *c)
{
	struct msg_status_reply rep;
	struct msg_empty req;
	unsigned d;

	if (cli_call(c, &req, sizeof(req), MSG_STATUS, &rep, sizeof(rep)))
		return 16;
	d = rep.limits.queue_depth_max;
	return d > QUEUE_DEPTH_MAX ? QUEUE_DEPTH_MAX : d < 1 ? 16 : d;
}

static int rec_run(struct recorder *rc, char **names, int n_names, bool all, uint64_t duration_ns)
{
	int fd, r;
	uint64_t start;

	rc->ep = epoll_create1(EPOLL_CLOEXEC);
	rc->patterns = calloc((size_t)n_names + 1, sizeof(*rc->patterns));
	if (rc->ep < 0 || !rc->patterns) {
		fprintf(stderr, "takt record: %s\n", strerror(errno));
		return 1;
	}
	if (cli_node(rc->c, "record", &rc->node))
		return 1;
	rc->depth = rec_depth(rc->c);
	if (all)
		rc->patterns[rc->n_patterns++] = "**";
	for (int i = 0; i < n_names; i++) {
		if (strchr(names[i], '*'))
			rc->patterns[rc->n_patterns++] = names[i];
		else if (rec_subscribe(rc, names[i]))
			return 1;
	}
	if (rec_discover(rc))
		return 1;
	fd = open(rc->file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "takt record: cannot create %s: %s\n", rc->file, strerror(errno));
		return 1;
	}
	rc->offset = realtime_offset();
	r = mcap_writer_open(fd, &(struct mcap_writer_opts){.library = "takt " TAKT_VERSION_STRING,
							     .chunk_size = CHUNK_SIZE},
			     &rc->w);
	if (r < 0) {
		close(fd);
		fprintf(stderr, "takt record: cannot write %s: %s\n", rc->file, strerror(-r));
		return 1;
	}
	if (rec_metadata(rc) < 0)
		return 1;
	cli_stop_on_signals();
	start = cli_mono_ns();
	r = rec_loop(rc, duration_ns);
	if (r < 0) /* the file is finished all the same, if it can be */
		fprintf(stderr, "\ntakt record: stopped: %s\n", strerror(-r));
	return rec_finish(rc, (double)(cli_mono_ns() - start) / 1e9) || r < 0;
}

static int cli_recover_files(struct cli *c, const char *in, const char *out);

int cli_record(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"output", required_argument, NULL, 'o'},   {"all", no_argument, NULL, 'a'},
		{"duration", required_argument, NULL, 't'}, {"max-bytes", required_argument, NULL, 'm'},
		{"recover", no_argument, NULL, 'R'},        {0},
	};
	struct recorder rc = {.c = c, .ep = -1};
	double duration = 0;
	bool all = false, recover = false;
	int o, r;

	optind = 1;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "o:at:m:", opts, NULL)) != -1) {
		switch (o) {
		case 'o': rc.file = optarg; break;
		case 'a': all = true; break;
		case 't':
			if (!cli_parse_double(optarg, &duration))
				return cli_usage_error(c, "--duration wants seconds, not '%s'", optarg);
			break;
		case 'm':
			if (!cli_parse_size(optarg, &rc.max_bytes) || rc.max_bytes < 4096)
				return cli_usage_error(c, "--max-bytes wants a size of at least 4K, not '%s'", optarg);
			break;
		case 'R': recover = true; break;
		default: return cli_usage_error(c, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (recover) {
		if (argc - optind != 2 || rc.file || all)
			return cli_usage_error(c, "--recover wants IN and OUT, nothing else");
		return cli_recover_files(c, argv[optind], argv[optind + 1]);
	}
	if (!rc.file)
		return cli_usage_error(c, "needs -o FILE");
	if (optind == argc && !all)
		return cli_usage_error(c, "needs topics, patterns or --all");
	r = rec_run(&rc, argv + optind, argc - optind, all, (uint64_t)(duration * 1e9));
	rec_free(&rc);
	return r;
}

/* `takt record --recover IN OUT` as its own table line. */
int cli_recover(struct cli *c, int argc, char **argv)
{
	if (argc != 3)
		return cli_usage_error(c, "wants IN and OUT");
	return cli_recover_files(c, argv[1], argv[2]);
}

/* ---- takt record --recover ---- */

static int cli_recover_files(struct cli *c, const char *in, const char *out)
{
	struct mcap_reader *rd = NULL;
	struct mcap_writer *w = NULL;
	struct stat si, so;
	uint64_t messages = 0, skipped = 0, where;
	const char *why;
	int fi, fo, k, r;

	fi = open(in, O_RDONLY | O_CLOEXEC);
	if (fi < 0) {
		fprintf(stderr, "takt record --recover: cannot open %s: %s\n", in, strerror(errno));
		return 1;
	}
	if (fstat(fi, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev && si.st_ino == so.st_ino) {
		fprintf(stderr, "takt record --recover: IN and OUT are the same file\n");
		close(fi);
		return 2;
	}
	r = mcap_reader_open(fi, &rd);
	if (r < 0) {
		fprintf(stderr, "takt record --recover: %s is not an MCAP file (%s)\n", in, strerror(-r));
		close(fi);
		return 1;
	}
	fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	r = fo < 0 ? -errno
		   : mcap_writer_open(fo, &(struct mcap_writer_opts){.library = "takt " TAKT_VERSION_STRING " (recovered)",
								      .chunk_size = CHUNK_SIZE},
				      &w);
	if (r < 0) {
		fprintf(stderr, "takt record --recover: cannot write %s: %s\n", out, strerror(-r));
		if (fo >= 0)
			close(fo);
		mcap_reader_close(rd);
		close(fi);
		return 1;
	}
	k = recording_recover(rd, w, &messages, &skipped);
	where = mcap_reader_where(rd, &why);
	r = mcap_writer_close(w);
	mcap_reader_close(rd);
	close(fi);
	if (r < 0 || (k < 0 && !*why)) {
		fprintf(stderr, "takt record --recover: cannot write %s: %s\n", out, strerror(-(r < 0 ? r : k)));
		return 1;
	}
	if (c->json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "in", json_object_new_string(in));
		json_object_object_add(o, "out", json_object_new_string(out));
		json_object_object_add(o, "messages", cli_json_u64(messages));
		json_object_object_add(o, "skipped", cli_json_u64(skipped));
		json_object_object_add(o, "complete", json_object_new_boolean(k == 0));
		json_object_object_add(o, "data_end", cli_json_u64(where));
		json_object_object_add(o, "in_bytes", cli_json_u64((uint64_t)si.st_size));
		json_object_object_add(o, "stopped_at", json_object_new_string(k == 0 ? "" : why));
		cli_json_print(o);
	} else if (k == 0) {
		printf("%s was whole: %" PRIu64 " messages rewritten to %s\n", in, messages, out);
	} else {
		printf("%s: %" PRIu64 " messages recovered to %s; the data ends at byte %" PRIu64 " of %" PRIu64
		       " (%s)\n",
		       in, messages, out, where, (uint64_t)si.st_size, why);
	}
	if (skipped)
		fprintf(stderr, "takt record --recover: %" PRIu64 " messages of channels never declared were left out\n",
			skipped);
	return 0;
}

/* ---- takt play ---- */

struct play_chan {
	takt_pub *pub;
	struct topic_stat st;
};

struct player {
	struct cli *c;
	struct mcap_reader *rd;
	const char *file;
	struct recording_scan scan; /* the first pass: channels and schemas */
	struct play_chan *ch;   /* by channel id (65536) */
	char **topics;          /* --topics: names or globs */
	size_t n_topics;
	double rate;
	uint64_t duration_ns;
	uint64_t unsent;
};

static bool play_wanted(const struct player *p, const char *topic)
{
	if (!p->n_topics)
		return true;
	for (size_t i = 0; i < p->n_topics; i++)
		if (proto_name_glob(p->topics[i], topic))
			return true;
	return false;
}

/* The first pass: channels, their types and their largest message. */
static int play_scan(struct player *p, uint64_t *messages)
{
	const char *why;
	int k = recording_scan(p->rd, &p->scan);

	*messages = p->scan.messages;
	if (k < 0) {
		uint64_t where = mcap_reader_where(p->rd, &why);

		fprintf(stderr, "takt play: %s is cut short: plays the %" PRIu64 " messages before byte %" PRIu64
				" (%s; takt record --recover rewrites it whole)\n",
			p->file, *messages, where, why);
	}
	mcap_reader_rewind(p->rd);
	return 0;
}

/* A publisher per channel played: its type from the schema, its chunk
 * size from the channel's largest message. */
static int play_open(struct player *p, takt_node *node)
{
	unsigned opened = 0;

	for (uint32_t id = 0; id < 65536; id++) {
		const struct recording_chan *sc = &p->scan.ch[id];
		char (*schema)[TAKT_TOPIC_NAME_MAX] = p->scan.schema;
		struct play_chan *ch = &p->ch[id];
		struct takt_pub_opts po;
		int r;

		if (!sc->known || !sc->count || !play_wanted(p, sc->topic))
			continue;
		po = (struct takt_pub_opts){
			.topic = sc->topic,
			.type_name = sc->schema && schema[sc->schema][0] ? schema[sc->schema] : NULL,
			.max_payload = sc->max_size ? sc->max_size : 1,
		};
		r = takt_pub_open(node, &po, &ch->pub);
		if (r < 0) {
			fprintf(stderr, "takt play: cannot publish on '%s'%s%s: %s\n", sc->topic,
				po.type_name ? " as type " : "", po.type_name ? po.type_name : "", strerror(-r));
			return 1;
		}
		ch->st.name = sc->topic;
		ch->st.type = po.type_name ? po.type_name : "";
		opened++;
	}
	if (!opened) {
		fprintf(stderr, "takt play: %s has no messages%s\n", p->file, p->n_topics ? " on the topics asked for" : "");
		return 1;
	}
	return 0;
}

/* Sleeps until the monotonic time due: false when a signal came. */
static bool play_sleep_until(uint64_t due)
{
	struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull)};

	while (!cli_stop_signal) {
		int r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);

		if (r == 0)
			return true;
		if (r != EINTR)
			return true;
	}
	return false;
}

/* Publishes one message; a full pool (slow subscribers holding samples)
 * is waited out for up to a second. */
static void play_send(struct player *p, struct play_chan *ch, const struct mcap_record *m)
{
	for (int tries = 0; tries < 1000 && !cli_stop_signal; tries++) {
		void *d;
		int r = takt_pub_loan(ch->pub, m->message.size, &d);

		if (r == -ENOBUFS) {
			usleep(1000);
			continue;
		}
		if (r == 0) {
			memcpy(d, m->message.data, m->message.size);
			r = takt_pub_publish(ch->pub, d);
		}
		if (r >= 0) {
			ch->st.samples++;
			ch->st.bytes += m->message.size;
			return;
		}
		break;
	}
	ch->st.drops++;
	p->unsent++;
}

/* One pass over the file, from *wall on: the log time after its last
 * message is where the next pass starts. 0, or 1 when stopped. */
static int play_pass(struct player *p, uint64_t start, uint64_t *wall, uint64_t *last_progress, uint64_t *samples)
{
	bool tty = isatty(STDERR_FILENO), first = true;
	uint64_t t0 = 0, last = 0, base = *wall;
	struct mcap_record m;

	while (mcap_reader_next(p->rd, &m) == 1) {
		struct play_chan *ch;
		uint64_t due, now;

		if (m.op != MCAP_OP_MESSAGE)
			continue;
		ch = &p->ch[m.message.channel];
		if (!ch->pub)
			continue;
		if (first) {
			t0 = m.message.log_time;
			first = false;
		}
		last = m.message.log_time > t0 ? m.message.log_time : t0;
		due = base + (uint64_t)((double)(last - t0) / p->rate);
		if (p->duration_ns && due - start >= p->duration_ns)
			return 1;
		if (!play_sleep_until(due))
			return 1;
		play_send(p, ch, &m);
		if (!ch->st.first_ns)
			ch->st.first_ns = due;
		ch->st.last_ns = due;
		(*samples)++;
		now = cli_mono_ns();
		if (tty && now - *last_progress >= PROGRESS_NS) {
			*last_progress = now;
			fprintf(stderr, "\r\033[Kplaying %s: %" PRIu64 " samples, %.1f s", p->file, *samples,
				(double)(now - start) / 1e9);
		}
	}
	/* the next pass one mean period later (1 ms for a single message) */
	*wall = base + (uint64_t)((double)(last - t0) / p->rate) + 1000000;
	return 0;
}

static int play_run(struct player *p, bool loop)
{
	uint64_t messages, start, wall, last_progress, samples = 0;
	unsigned loops = 0;
	takt_node *node = NULL;
	int r = 1, fd;

	fd = open(p->file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "takt play: cannot open %s: %s\n", p->file, strerror(errno));
		return 1;
	}
	if ((r = mcap_reader_open(fd, &p->rd)) < 0) {
		fprintf(stderr, "takt play: %s is not an MCAP file (%s)\n", p->file, strerror(-r));
		close(fd);
		return 1;
	}
	r = 1;
	play_scan(p, &messages);
	if (cli_node(p->c, "play", &node) || play_open(p, node))
		goto out;
	cli_stop_on_signals();
	start = wall = last_progress = cli_mono_ns();
	do {
		bool stopped = play_pass(p, start, &wall, &last_progress, &samples);

		loops++;
		mcap_reader_rewind(p->rd);
		if (stopped || !messages)
			break;
	} while (loop && !cli_stop_signal);
	if (isatty(STDERR_FILENO))
		fprintf(stderr, "\n");
	{
		struct topic_stat ts[256];
		size_t n = 0;

		for (uint32_t id = 0; id < 65536 && n < 256; id++)
			if (p->ch[id].pub)
				ts[n++] = p->ch[id].st;
		summary_print(p->c, "played", p->file, ts, n, (double)(cli_mono_ns() - start) / 1e9, 0, loop ? loops : 0);
	}
	r = 0;
out:
	for (uint32_t id = 0; id < 65536; id++)
		takt_pub_close(p->ch[id].pub);
	takt_node_close(node);
	mcap_reader_close(p->rd);
	close(fd);
	return r;
}

int cli_play(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"rate", required_argument, NULL, 'r'},
		{"loop", no_argument, NULL, 'l'},
		{"topics", required_argument, NULL, 'T'},
		{"duration", required_argument, NULL, 't'},
		{0},
	};
	struct player p = {.c = c, .rate = 1};
	char *topics = NULL;
	double duration = 0;
	bool loop = false;
	int o, r;

	optind = 1;
	opterr = 0;
	while ((o = getopt_long(argc, argv, "r:lT:t:", opts, NULL)) != -1) {
		switch (o) {
		case 'r':
			if (!cli_parse_double(optarg, &p.rate))
				return cli_usage_error(c, "--rate wants a positive factor, not '%s'", optarg);
			break;
		case 'l': loop = true; break;
		case 'T': topics = optarg; break;
		case 't':
			if (!cli_parse_double(optarg, &duration))
				return cli_usage_error(c, "--duration wants seconds, not '%s'", optarg);
			break;
		default: return cli_usage_error(c, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != 1)
		return cli_usage_error(c, "wants one FILE");
	p.file = argv[optind];
	p.duration_ns = (uint64_t)(duration * 1e9);
	p.ch = calloc(65536, sizeof(*p.ch));
	p.scan.ch = calloc(65536, sizeof(*p.scan.ch));
	p.scan.schema = calloc(65536, sizeof(*p.scan.schema));
	p.topics = calloc(topics ? strlen(topics) / 2 + 2 : 1, sizeof(*p.topics));
	if (!p.ch || !p.scan.ch || !p.scan.schema || !p.topics) {
		fprintf(stderr, "takt play: out of memory\n");
		r = 1;
		goto out;
	}
	for (char *save = NULL, *t = topics ? strtok_r(topics, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
		p.topics[p.n_topics++] = t;
	r = play_run(&p, loop);
out:
	free(p.ch);
	free(p.scan.ch);
	free(p.scan.schema);
	free(p.topics);
	return r;
}
