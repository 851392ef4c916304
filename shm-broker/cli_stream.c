/* cli_stream.c - `takt topic echo|hz|bw|pub`: the commands that join the
 * domain with a node of their own and take or publish samples.
 *
 * Rates and bandwidth are computed from the samples' publish times
 * (takt_sample_info.publish_ns, the publisher's clock), not from when we
 * happen to take them: a subscriber woken once for a burst would see
 * every sample of it at once. They run until --count reports (or
 * samples) or --duration seconds, or until SIGINT or SIGTERM.
 */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <resolv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Options all four share. */
struct stream_opts {
	uint64_t count;     /* 0: no limit */
	double duration;    /* seconds, 0: no limit */
	double rate;        /* pub: Hz, 0: once per --count */
	unsigned window;    /* hz, bw: samples */
	bool hex;           /* echo: always a hexdump; pub: DATA is hex */
	const char *type;
};

enum { OPT_COUNT = 1000, OPT_DURATION, OPT_RATE, OPT_WINDOW, OPT_HEX, OPT_TYPE };

/* Parses the options; *arg: the command's arguments left (want of them). */
static int stream_parse(struct cli *c, int argc, char **argv, struct stream_opts *o, int want, char ***arg)
{
	static const struct option opts[] = {
		{"count", required_argument, NULL, OPT_COUNT}, {"duration", required_argument, NULL, OPT_DURATION},
		{"rate", required_argument, NULL, OPT_RATE},   {"window", required_argument, NULL, OPT_WINDOW},
		{"hex", no_argument, NULL, OPT_HEX},           {"type", required_argument, NULL, OPT_TYPE},
		{0},
	};
	int opt;

	*o = (struct stream_opts){.window = 1000};
	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		uint64_t n;

		switch (opt) {
		case OPT_COUNT:
			if (!cli_parse_size(optarg, &n) || n == 0)
				return cli_usage_error(c, "--count '%s': a positive number", optarg);
			o->count = n;
			break;
		case OPT_DURATION:
			if (!cli_parse_double(optarg, &o->duration))
				return cli_usage_error(c, "--duration '%s': seconds, more than 0", optarg);
			break;
		case OPT_RATE:
			if (!cli_parse_double(optarg, &o->rate) || o->rate > 1e6)
				return cli_usage_error(c, "--rate '%s': Hz, more than 0, at most 1000000", optarg);
			break;
		case OPT_WINDOW:
			if (!cli_parse_size(optarg, &n) || n < 2 || n > 1000000)
				return cli_usage_error(c, "--window '%s': 2..1000000 samples", optarg);
			o->window = (unsigned)n;
			break;
		case OPT_HEX: o->hex = true; break;
		case OPT_TYPE: o->type = optarg; break;
		default: return cli_usage_error(c, "unknown option '%s'", argv[optind - 1]);
		}
	}
	if (argc - optind != want)
		return cli_usage_error(c, "needs %s", want == 1 ? "a topic" : "a topic and the data");
	*arg = argv + optind;
	return 0;
}

/* A subscriber of topic on a node of our own ("takt-<what>"). */
static int stream_sub(struct cli *c, const char *what, const char *topic, const char *type, takt_node **n,
		      takt_sub **s)
{
	int r;

	if (cli_node(c, what, n))
		return 1;
	r = takt_sub_open(*n, &(struct takt_sub_opts){.topic = topic, .type_name = type, .queue_depth = 256}, s);
	if (r < 0) {
		fprintf(stderr, "takt: cannot subscribe to '%s' in domain '%s': %s\n", topic, c->domain, strerror(-r));
		takt_node_close(*n);
		return 1;
	}
	return 0;
}

/* Whether the command has run its time. */
static bool expired(const struct stream_opts *o, uint64_t start)
{
	return cli_stop_signal || (o->duration > 0 && (double)(cli_mono_ns() - start) / 1e9 >= o->duration);
}

/* ---- takt topic echo ------------------------------------------------------ */

static bool printable(const unsigned char *p, size_t n)
{
	if (n && p[n - 1] == 0) /* a C string's terminator */
		n--;
	for (size_t i = 0; i < n; i++)
		if (!isprint(p[i]) && p[i] != '\n' && p[i] != '\t')
			return false;
	return true;
}

static void hexdump(const unsigned char *p, size_t n)
{
	for (size_t off = 0; off < n; off += 16) {
		printf("  %08zx ", off);
		for (size_t i = 0; i < 16; i++)
			printf(off + i < n ? " %02x" : "   ", off + i < n ? p[off + i] : 0);
		printf("  |");
		for (size_t i = 0; i < 16 && off + i < n; i++)
			putchar(isprint(p[off + i]) ? p[off + i] : '.');
		printf("|\n");
	}
}

static void echo_one(const struct cli *c, const struct stream_opts *o, const unsigned char *p,
		     const struct takt_sample_info *info)
{
	if (c->json) {
		struct json_object *j = json_object_new_object();
		size_t len = ((size_t)info->size + 2) / 3 * 4 + 1;
		char *b64 = malloc(len);

		json_object_object_add(j, "seq", cli_json_u64(info->seq));
		json_object_object_add(j, "publisher_id", cli_json_u64(info->publisher_id));
		json_object_object_add(j, "publish_ns", cli_json_u64(info->publish_ns));
		json_object_object_add(j, "size", json_object_new_int64(info->size));
		if (b64 && b64_ntop(p, info->size, b64, len) >= 0)
			json_object_object_add(j, "data", json_object_new_string(b64));
		free(b64);
		cli_json_print(j);
		return;
	}
	printf("seq %llu from %#llx, %u bytes:", (unsigned long long)info->seq,
	       (unsigned long long)info->publisher_id, info->size);
	if (!o->hex && printable(p, info->size)) {
		int n = (int)info->size;

		if (n && p[n - 1] == 0)
			n--;
		printf(" %.*s\n", n, (const char *)p);
	} else {
		printf("\n");
		hexdump(p, info->size);
	}
	fflush(stdout);
}

int cli_topic_echo(struct cli *c, int argc, char **argv)
{
	struct stream_opts o;
	takt_node *n;
	takt_sub *s;
	uint64_t shown = 0, start;
	char **arg;
	int r = stream_parse(c, argc, argv, &o, 1, &arg);

	if (r)
		return r;
	if (stream_sub(c, "echo", arg[0], o.type, &n, &s))
		return 1;
	cli_stop_on_signals();
	start = cli_mono_ns();
	while (!expired(&o, start) && (!o.count || shown < o.count)) {
		struct takt_sample_info info;
		const void *p;

		r = takt_sub_take(s, &p, &info);
		if (r == -EAGAIN) {
			takt_sub_wait(s, 100000000); /* a tenth of a second: signals and --duration are seen */
			continue;
		}
		if (r < 0) {
			fprintf(stderr, "takt: taking from '%s': %s\n", arg[0], strerror(-r));
			break;
		}
		echo_one(c, &o, p, &info);
		takt_sub_release(s, p);
		shown++;
	}
	takt_sub_close(s);
	takt_node_close(n);
	return r < 0 && r != -EAGAIN ? 1 : 0;
}

/* ---- takt topic hz, takt topic bw ----------------------------------------- */

struct window {
	uint64_t *t;     /* publish times, in arrival order, a ring */
	uint32_t *size;
	unsigned cap, n, at;
	uint64_t total;  /* samples seen */
};

static void window_add(struct window *w, uint64_t t, uint32_t size)
{
	w->t[w->at] = t;
	w->size[w->at] = size;
	w->at = (w->at + 1) % w->cap;
	if (w->n < w->cap)
		w->n++;
	w->total++;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The rate and the periods of the window (publish times sorted: several
 * publishers interleave). */
static struct json_object *hz_report(const struct window *w)
{
	struct json_object *o = json_object_new_object();
	uint64_t *t = malloc(w->n * sizeof(*t));
	double sum = 0, sq = 0, mn = INFINITY, mx = 0, span, rate = 0, mean = 0, sd = 0;

	if (t && w->n >= 2) {
		memcpy(t, w->t, w->n * sizeof(*t));
		qsort(t, w->n, sizeof(*t), u64_cmp);
		for (unsigned i = 1; i < w->n; i++) {
			double d = (double)(t[i] - t[i - 1]) / 1e6;

			sum += d;
			sq += d * d;
			mn = d < mn ? d : mn;
			mx = d > mx ? d : mx;
		}
		span = (double)(t[w->n - 1] - t[0]) / 1e9;
		mean = sum / (w->n - 1);
		sd = sqrt(fmax(sq / (w->n - 1) - mean * mean, 0));
		rate = span > 0 ? (w->n - 1) / span : 0;
	}
	free(t);
	json_object_object_add(o, "rate_hz", json_object_new_double(rate));
	json_object_object_add(o, "min_ms", json_object_new_double(w->n >= 2 ? mn : 0));
	json_object_object_add(o, "max_ms", json_object_new_double(mx));
	json_object_object_add(o, "mean_ms", json_object_new_double(mean));
	json_object_object_add(o, "stddev_ms", json_object_new_double(sd));
	json_object_object_add(o, "window", json_object_new_int64(w->n));
	json_object_object_add(o, "samples", cli_json_u64(w->total));
	return o;
}

static struct json_object *bw_report(const struct window *w)
{
	struct json_object *o = json_object_new_object();
	uint64_t lo = UINT64_MAX, hi = 0, bytes = 0, first = 0;
	uint32_t mn = UINT32_MAX, mx = 0;

	for (unsigned i = 0; i < w->n; i++) {
		if (w->t[i] < lo)
			first = w->size[i];
		lo = w->t[i] < lo ? w->t[i] : lo;
		hi = w->t[i] > hi ? w->t[i] : hi;
		bytes += w->size[i];
		mn = w->size[i] < mn ? w->size[i] : mn;
		mx = w->size[i] > mx ? w->size[i] : mx;
	}
	/* bytes per second: what came after the window's first sample, over
	 * the span it opens */
	json_object_object_add(o, "bytes_per_s", json_object_new_double(w->n >= 2 && hi > lo ? (double)(bytes - first) /
									((double)(hi - lo) / 1e9) : 0));
	json_object_object_add(o, "mean_bytes", json_object_new_double(w->n ? (double)bytes / w->n : 0));
	json_object_object_add(o, "min_bytes", json_object_new_int64(w->n ? mn : 0));
	json_object_object_add(o, "max_bytes", json_object_new_int64(mx));
	json_object_object_add(o, "window", json_object_new_int64(w->n));
	json_object_object_add(o, "samples", cli_json_u64(w->total));
	return o;
}

static void report_print(const struct cli *c, struct json_object *o, bool bw)
{
	double d = json_object_get_double(json_object_object_get(o, bw ? "bytes_per_s" : "rate_hz"));

	if (c->json) {
		cli_json_print(o);
		return;
	}
	if (bw)
		printf("%.3f %s from %lld samples: mean %.0f B, min %lld B, max %lld B\n",
		       d >= 1e6 ? d / 1e6 : d >= 1e3 ? d / 1e3 : d, d >= 1e6 ? "MB/s" : d >= 1e3 ? "KB/s" : "B/s",
		       (long long)json_object_get_int64(json_object_object_get(o, "window")),
		       json_object_get_double(json_object_object_get(o, "mean_bytes")),
		       (long long)json_object_get_int64(json_object_object_get(o, "min_bytes")),
		       (long long)json_object_get_int64(json_object_object_get(o, "max_bytes")));
	else
		printf("average rate: %.3f Hz\n  min: %.3f ms  max: %.3f ms  std dev: %.3f ms  window: %lld\n", d,
		       json_object_get_double(json_object_object_get(o, "min_ms")),
		       json_object_get_double(json_object_object_get(o, "max_ms")),
		       json_object_get_double(json_object_object_get(o, "stddev_ms")),
		       (long long)json_object_get_int64(json_object_object_get(o, "window")));
	fflush(stdout);
	json_object_put(o);
}

/* hz and bw: take, keep a window, report once a second (--count reports). */
static int rate_run(struct cli *c, int argc, char **argv, bool bw)
{
	struct stream_opts o;
	struct window w = {0};
	takt_node *n;
	takt_sub *s;
	uint64_t start, next, reports = 0;
	char **arg;
	int r = stream_parse(c, argc, argv, &o, 1, &arg);

	if (r)
		return r;
	w.cap = o.window;
	w.t = calloc(w.cap, sizeof(*w.t));
	w.size = calloc(w.cap, sizeof(*w.size));
	if (!w.t || !w.size || stream_sub(c, bw ? "bw" : "hz", arg[0], o.type, &n, &s)) {
		free(w.t);
		free(w.size);
		return 1;
	}
	cli_stop_on_signals();
	start = cli_mono_ns();
	next = start + 1000000000ull;
	while (!expired(&o, start) && (!o.count || reports < o.count)) {
		struct takt_sample_info info;
		const void *p;

		while ((r = takt_sub_take(s, &p, &info)) == 0) {
			window_add(&w, info.publish_ns, info.size);
			takt_sub_release(s, p);
		}
		if (cli_mono_ns() >= next) {
			if (w.n >= 2) {
				report_print(c, bw ? bw_report(&w) : hz_report(&w), bw);
				reports++;
			} else if (!c->json) {
				printf("no new samples\n");
				fflush(stdout);
			}
			next += 1000000000ull;
		}
		takt_sub_wait(s, 100000000);
	}
	takt_sub_close(s);
	takt_node_close(n);
	free(w.t);
	free(w.size);
	return 0;
}

int cli_topic_hz(struct cli *c, int argc, char **argv)
{
	return rate_run(c, argc, argv, false);
}

int cli_topic_bw(struct cli *c, int argc, char **argv)
{
	return rate_run(c, argc, argv, true);
}

/* ---- takt topic pub --------------------------------------------------------- */

/* DATA as given, or (--hex) as hex digits; its length, or -1. */
static long pub_data(const struct stream_opts *o, const char *data, unsigned char **out)
{
	size_t len = strlen(data);
	unsigned char *p;

	if (!o->hex) {
		*out = (unsigned char *)strdup(data);
		return *out ? (long)len : -1;
	}
	if (len % 2 || !(p = malloc(len / 2 + 1)))
		return -1;
	for (size_t i = 0; i < len; i += 2) {
		unsigned v;

		if (!isxdigit((unsigned char)data[i]) || !isxdigit((unsigned char)data[i + 1]) ||
		    sscanf(data + i, "%2x", &v) != 1) {
			free(p);
			return -1;
		}
		p[i / 2] = (unsigned char)v;
	}
	*out = p;
	return (long)(len / 2);
}

int cli_topic_pub(struct cli *c, int argc, char **argv)
{
	struct stream_opts o;
	unsigned char *data;
	takt_node *n;
	takt_pub *p;
	uint64_t sent = 0, start, count;
	long len;
	char **arg;
	int r = stream_parse(c, argc, argv, &o, 2, &arg);

	if (r)
		return r;
	len = pub_data(&o, arg[1], &data);
	if (len < 0)
		return cli_usage_error(c, "--hex data must be pairs of hex digits");
	count = o.count ? o.count : o.rate > 0 ? 0 : 1; /* with a rate: until stopped */
	if (cli_node(c, "pub", &n)) {
		free(data);
		return 1;
	}
	r = takt_pub_open(n, &(struct takt_pub_opts){.topic = arg[0], .type_name = o.type,
						     .max_payload = len ? (size_t)len : 1}, &p);
	if (r < 0) {
		fprintf(stderr, "takt: cannot publish on '%s' in domain '%s': %s\n", arg[0], c->domain, strerror(-r));
		takt_node_close(n);
		free(data);
		return 1;
	}
	cli_stop_on_signals();
	start = cli_mono_ns();
	while (!expired(&o, start) && (!count || sent < count)) {
		if (o.rate > 0) { /* on an absolute grid: no drift */
			uint64_t due = start + (uint64_t)((double)sent * 1e9 / o.rate);
			struct timespec ts = {.tv_sec = (time_t)(due / 1000000000ull), .tv_nsec = (long)(due % 1000000000ull)};

			if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				continue;
		}
		r = takt_pub_send(p, data, (size_t)len);
		if (r < 0) {
			fprintf(stderr, "takt: publishing on '%s': %s\n", arg[0], strerror(-r));
			break;
		}
		sent++;
	}
	if (c->json) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "topic", json_object_new_string(arg[0]));
		json_object_object_add(j, "published", cli_json_u64(sent));
		json_object_object_add(j, "publisher_id", cli_json_u64(takt_pub_id(p)));
		cli_json_print(j);
	} else {
		printf("published %llu sample%s of %ld bytes on '%s'\n", (unsigned long long)sent, sent == 1 ? "" : "s",
		       len, arg[0]);
	}
	takt_pub_close(p);
	takt_node_close(n);
	free(data);
	return r < 0 ? 1 : 0;
}
