/* output.c - what takt-trace prints: live sample lines, JSON objects, log2
 * histograms (runqlat's layout) and the counters.
 *
 * Every latency is the difference of two CLOCK_MONOTONIC stamps taken by
 * the kernel side; a stage that did not happen prints "-" (text) or null
 * (JSON), never 0, so "took no time" and "did not happen" stay apart.
 */
#include "sys.h"
#include "takt-trace.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void tt_clock_init(struct tt_clock *c)
{
	struct timespec m, r;

	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_REALTIME, &r);
	c->mono_to_real_ns = ((int64_t)r.tv_sec - m.tv_sec) * 1000000000 + (r.tv_nsec - m.tv_nsec);
}

void tt_fmt_time(const struct tt_clock *c, uint64_t mono_ns, char *buf, size_t len)
{
	int64_t real = (int64_t)mono_ns + c->mono_to_real_ns;
	time_t sec = (time_t)(real / 1000000000);
	struct tm tm;

	localtime_r(&sec, &tm);
	snprintf(buf, len, "%02d:%02d:%02d.%06ld", tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (long)(real % 1000000000) / 1000);
}

const char *tt_wake_state_name(uint32_t st)
{
	switch (st) {
	case WS_NONE:
		return "busy";
	case WS_SLEEPING:
		return "asleep";
	case WS_RUNNABLE:
		return "runnable";
	case WS_RUNNING:
		return "running";
	case WS_UNSEEN:
		return "unseen";
	default:
		return "unknown";
	}
}

const char *tt_stage_name(uint32_t stage)
{
	static const char *const names[ST_NR] = {
		"notify_to_wakeup", "wakeup_to_oncpu", "oncpu_to_callback", "publish_to_take", "callback",
	};

	return stage < ST_NR ? names[stage] : "unknown";
}

static const char *stage_title(uint32_t stage)
{
	static const char *const titles[ST_NR] = {
		"notify -> wakeup", "wakeup -> on-CPU", "on-CPU -> callback start", "publish -> take",
		"callback run time",
	};

	return stage < ST_NR ? titles[stage] : "?";
}

void tt_json_str(FILE *f, const char *s, size_t max)
{
	fputc('"', f);
	for (size_t i = 0; i < max && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

int64_t tt_span(uint64_t a, uint64_t b)
{
	return a && b && b >= a ? (int64_t)(b - a) : -1;
}

struct sample_spans {
	int64_t pub_notify, notify_wakeup, wakeup_oncpu, oncpu_take, oncpu_cb, pub_take;
	uint32_t sub_tid;
};

static void sample_spans(const struct tt_sample *s, struct sample_spans *o)
{
	uint64_t cb = s->callback_ns ? s->callback_ns : s->h.ts;

	o->pub_notify = tt_span(s->publish_ns, s->notify_ns);
	o->notify_wakeup = tt_span(s->notify_ns, s->wakeup_ns);
	o->wakeup_oncpu = tt_span(s->wakeup_ns, s->oncpu_ns);
	o->oncpu_take = tt_span(s->oncpu_ns, s->h.ts);
	o->oncpu_cb = tt_span(s->oncpu_ns, cb);
	o->pub_take = tt_span(s->publish_ns, s->h.ts);
	/* The subscriber thread is the one that parked and was notified; with
	 * no notify, the one that took. */
	o->sub_tid = s->woken_tid ? s->woken_tid : s->h.tid;
}

void tt_print_sample_header(FILE *f)
{
	fprintf(f, "%-15s %-16s %7s %-15s %-15s %-8s %9s %9s %9s %9s  %s\n", "TIME", "TOPIC", "SEQ",
		"PUB PID/TID", "SUB PID/TID", "THREAD", "NTF>WAKE", "WAKE>CPU", "CPU>CB", "PUB>TAKE", "TASK");
}

void tt_us_col(FILE *f, int64_t ns)
{
	if (ns < 0)
		fprintf(f, " %9s", "-");
	else
		fprintf(f, " %9.1f", (double)ns / 1000.0);
}

void tt_json_ns(FILE *f, const char *key, int64_t ns)
{
	if (ns < 0)
		fprintf(f, ",\"%s\":null", key);
	else
		fprintf(f, ",\"%s\":%" PRId64, key, ns);
}

void tt_json_stamp(FILE *f, const char *key, uint64_t ns)
{
	tt_json_ns(f, key, ns ? (int64_t)ns : -1);
}

static void print_sample_json(FILE *f, const struct tt_clock *c, const struct tt_sample *s,
			      const struct sample_spans *sp)
{
	char t[32];

	tt_fmt_time(c, s->h.ts, t, sizeof(t));
	fprintf(f, "{\"time\":\"%s\",\"topic\":", t);
	tt_json_str(f, s->topic, sizeof(s->topic));
	fprintf(f, ",\"seq\":%llu,\"pub_id\":%llu,\"sub_port\":%u", (unsigned long long)s->seq, (unsigned long long)s->pub_id,
		s->sub_port);
	if (s->pub_pid)
		fprintf(f, ",\"pub_pid\":%u,\"pub_tid\":%u,\"pub_comm\":", s->pub_pid, s->pub_tid);
	else
		fprintf(f, ",\"pub_pid\":null,\"pub_tid\":null,\"pub_comm\":");
	tt_json_str(f, s->pub_comm, sizeof(s->pub_comm));
	fprintf(f, ",\"sub_pid\":%u,\"sub_tid\":%u,\"take_tid\":%u,\"sub_comm\":", s->h.pid, sp->sub_tid, s->h.tid);
	tt_json_str(f, s->comm, sizeof(s->comm));
	if (s->task >= 0) {
		fprintf(f, ",\"task\":%d,\"item\":", s->task);
		tt_json_str(f, s->item, sizeof(s->item));
	} else {
		fprintf(f, ",\"task\":null,\"item\":null");
	}
	fprintf(f, ",\"thread\":\"%s\"", tt_wake_state_name(s->wake_state));
	if (s->oncpu_ns)
		fprintf(f, ",\"cpu\":%u,\"oncpu_from\":\"%s\"", s->wake_cpu,
			s->oncpu_inferred ? "probe" : "sched_switch");
	else
		fprintf(f, ",\"cpu\":null,\"oncpu_from\":null");
	tt_json_stamp(f, "publish_ns", s->publish_ns);
	tt_json_stamp(f, "notify_ns", s->notify_ns);
	tt_json_stamp(f, "waking_ns", s->waking_ns);
	tt_json_stamp(f, "wakeup_ns", s->wakeup_ns);
	tt_json_stamp(f, "oncpu_ns", s->oncpu_ns);
	tt_json_stamp(f, "callback_ns", s->callback_ns);
	tt_json_stamp(f, "take_ns", s->h.ts);
	tt_json_ns(f, "publish_to_notify_ns", sp->pub_notify);
	tt_json_ns(f, "notify_to_wakeup_ns", sp->notify_wakeup);
	tt_json_ns(f, "wakeup_to_oncpu_ns", sp->wakeup_oncpu);
	tt_json_ns(f, "oncpu_to_take_ns", sp->oncpu_take);
	tt_json_ns(f, "oncpu_to_callback_ns", sp->oncpu_cb);
	tt_json_ns(f, "publish_to_take_ns", sp->pub_take);
	fputs("}\n", f);
}

void tt_print_sample(FILE *f, const struct tt_clock *c, const struct tt_sample *s, bool json)
{
	struct sample_spans sp;
	char t[32], pub[24], sub[24];

	sample_spans(s, &sp);
	if (json) {
		print_sample_json(f, c, s, &sp);
		return;
	}
	tt_fmt_time(c, s->h.ts, t, sizeof(t));
	if (s->pub_pid)
		snprintf(pub, sizeof(pub), "%u/%u", s->pub_pid, s->pub_tid);
	else
		snprintf(pub, sizeof(pub), "?");
	snprintf(sub, sizeof(sub), "%u/%u", s->h.pid, sp.sub_tid);
	fprintf(f, "%-15s %-16.*s %7llu %-15s %-15s %-8s", t, TT_TOPIC_LEN, s->topic, (unsigned long long)s->seq,
		pub, sub, tt_wake_state_name(s->wake_state));
	tt_us_col(f, sp.notify_wakeup);
	tt_us_col(f, sp.wakeup_oncpu);
	tt_us_col(f, sp.oncpu_cb);
	tt_us_col(f, sp.pub_take);
	if (s->task >= 0)
		fprintf(f, "  %d:%.*s", s->task, TT_ITEM_LEN, s->item);
	fputc('\n', f);
}

#define COUNTER_LIST(X)                                                                            \
	X(publish) X(notify) X(park) X(unpark) X(take) X(dispatch) X(wakeups) X(wakeups_no_sample)        \
	X(notify_no_thread) X(take_no_publish) X(dropped_events) X(missed_deadlines)   \
	X(unknown_proc) X(oncpu_inferred) X(wakeups_unseen)
/* Counted in services and record mode only. */
#define SVC_COUNTER_LIST(X)                                                                        \
	X(requests) X(request_takes) X(responds) X(response_takes) X(requests_evicted)             \
	X(responses_no_request)

void tt_print_counters_obj(FILE *f, const struct tt_counters *c)
{
	const char *sep = "";

	fputc('{', f);
#define X(n)                                                                                       \
	fprintf(f, "%s\"" #n "\":%llu", sep, (unsigned long long)c->n);                            \
	sep = ",";
	COUNTER_LIST(X)
	SVC_COUNTER_LIST(X)
#undef X
	fputc('}', f);
}

/* Whether services were traced: their counters are printed only then. */
static bool svc_counted(const struct tt_counters *c)
{
#define X(n) | c->n
	return (0 SVC_COUNTER_LIST(X)) != 0;
#undef X
}

void tt_print_counters(FILE *f, const struct tt_counters *c, bool json)
{
	if (json) {
		fputs("{\"counters\":", f);
		tt_print_counters_obj(f, c);
		fputs("}\n", f);
		return;
	}
	fputs(TT_PROG ": counters:", f);
#define X(n) fprintf(f, " " #n "=%llu", (unsigned long long)c->n);
	COUNTER_LIST(X)
	if (svc_counted(c)) {
		SVC_COUNTER_LIST(X)
	}
#undef X
	fputc('\n', f);
}

/* ---- histograms ---------------------------------------------------------- */

struct hist_entry {
	struct tt_hist_key k;
	struct tt_hist h;
};

static int cmp_hist(const void *a, const void *b)
{
	const struct tt_hist_key *x = &((const struct hist_entry *)a)->k, *y = &((const struct hist_entry *)b)->k;

	if (x->by != y->by)
		return x->by < y->by ? -1 : 1;
	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	return strncmp(x->name, y->name, sizeof(x->name));
}

static void print_stars(FILE *f, uint64_t val, uint64_t max, int width)
{
	int n = max ? (int)((double)val * width / (double)max) : 0;

	if (n > width)
		n = width;
	for (int i = 0; i < n; i++)
		fputc('*', f);
	for (int i = n; i < width; i++)
		fputc(' ', f);
}

void tt_print_log2(FILE *f, const char *title, const struct tt_stage_hist *h)
{
	int last = -1;
	uint64_t max = 0;

	for (int i = 0; i < TT_MAX_SLOTS; i++) {
		if (h->slots[i])
			last = i;
		if (h->slots[i] > max)
			max = h->slots[i];
	}
	fprintf(f, "%s (count %llu, mean %.1f us, max %.1f us)\n", title, (unsigned long long)h->count,
		h->count ? (double)h->total_ns / (double)h->count / 1000.0 : 0.0, (double)h->max_ns / 1000.0);
	fprintf(f, "%*s%-*s : count    distribution\n", 10, "", 13, "usecs");
	for (int i = 0; i <= last; i++) {
		uint64_t lo = i ? 1ull << i : 0, hi = (1ull << (i + 1)) - 1;

		fprintf(f, "%10llu -> %-10llu : %-8llu |", (unsigned long long)lo, (unsigned long long)hi,
			(unsigned long long)h->slots[i]);
		print_stars(f, h->slots[i], max, 40);
		fputs("|\n", f);
	}
	fputc('\n', f);
}

static void print_hist_text(FILE *f, const struct tt_hist_key *k, uint32_t stage, const struct tt_stage_hist *h)
{
	char title[TT_TOPIC_LEN + 96];

	if (k->by == BY_TOPIC)
		snprintf(title, sizeof(title), "topic %.*s: %s", TT_TOPIC_LEN, k->name, stage_title(stage));
	else
		snprintf(title, sizeof(title), "task %d (%.*s) of pid %u: %s", k->task, TT_TOPIC_LEN, k->name, k->pid,
			 stage_title(stage));
	tt_print_log2(f, title, h);
}

void tt_print_log2_json(FILE *f, const char *stage, const struct tt_stage_hist *h)
{
	const char *sep = "";
	int last = -1;

	for (int i = 0; i < TT_MAX_SLOTS; i++)
		if (h->slots[i])
			last = i;
	fprintf(f, ",\"stage\":\"%s\",\"unit\":\"us\",\"count\":%llu,\"mean_ns\":%llu,\"max_ns\":%llu,\"buckets\":[",
		stage, (unsigned long long)h->count,
		h->count ? (unsigned long long)(h->total_ns / h->count) : 0ull, (unsigned long long)h->max_ns);
	for (int i = 0; i <= last; i++) {
		fprintf(f, "%s{\"lo\":%llu,\"hi\":%llu,\"count\":%llu}", sep, i ? 1ull << i : 0ull,
			(1ull << (i + 1)) - 1, (unsigned long long)h->slots[i]);
		sep = ",";
	}
	fputs("]}\n", f);
}

static void print_hist_json(FILE *f, const char *time, const struct tt_hist_key *k, uint32_t stage,
			    const struct tt_stage_hist *h)
{
	fprintf(f, "{\"time\":\"%s\",\"by\":\"%s\",\"name\":", time, k->by == BY_TOPIC ? "topic" : "task");
	tt_json_str(f, k->name, sizeof(k->name));
	if (k->by == BY_TASK)
		fprintf(f, ",\"pid\":%u,\"task\":%d", k->pid, k->task);
	else
		fprintf(f, ",\"pid\":null,\"task\":null");
	tt_print_log2_json(f, tt_stage_name(stage), h);
}

/* Sums the per-CPU values of one histogram into out. */
static void hist_sum(const struct tt_hist *v, int ncpu, struct tt_hist *out)
{
	memset(out, 0, sizeof(*out));
	for (int c = 0; c < ncpu; c++) {
		for (int st = 0; st < ST_NR; st++) {
			const struct tt_stage_hist *a = &v[c].stage[st];
			struct tt_stage_hist *o = &out->stage[st];

			for (int i = 0; i < TT_MAX_SLOTS; i++)
				o->slots[i] += a->slots[i];
			o->count += a->count;
			o->total_ns += a->total_ns;
			if (a->max_ns > o->max_ns)
				o->max_ns = a->max_ns;
		}
	}
}

static int read_hists(int fd, struct hist_entry **ret, size_t *ret_n)
{
	int ncpu = libbpf_num_possible_cpus();
	struct tt_hist_key k, next, *prev = NULL;
	struct hist_entry *v = NULL;
	struct tt_hist *percpu;
	size_t n = 0, cap = 0;

	if (ncpu <= 0)
		return -EINVAL;
	percpu = calloc((size_t)ncpu, sizeof(*percpu));
	if (!percpu)
		return -ENOMEM;
	while (bpf_map_get_next_key(fd, prev, &next) == 0) {
		if (n == cap) {
			struct hist_entry *nv = realloc(v, (cap = cap ? 2 * cap : 64) * sizeof(*v));

			if (!nv) {
				free(v);
				free(percpu);
				return -ENOMEM;
			}
			v = nv;
		}
		if (bpf_map_lookup_elem(fd, &next, percpu) == 0) {
			hist_sum(percpu, ncpu, &v[n].h);
			v[n++].k = next;
		}
		k = next;
		prev = &k;
	}
	free(percpu);
	*ret = v;
	*ret_n = n;
	return 0;
}

int tt_print_hists(FILE *f, int map_fd, const struct tt_clock *c, bool json, bool keep)
{
	struct hist_entry *v;
	char t[32];
	size_t n;
	int r = read_hists(map_fd, &v, &n), printed = 0;

	if (r < 0)
		return r;
	qsort(v, n, sizeof(*v), cmp_hist);
	tt_fmt_time(c, sys_mono_ns(), t, sizeof(t));
	if (!json)
		fprintf(f, "%s\n", t);
	for (size_t i = 0; i < n; i++) {
		for (uint32_t st = 0; st < ST_NR; st++) {
			if (!v[i].h.stage[st].count)
				continue;
			if (json)
				print_hist_json(f, t, &v[i].k, st, &v[i].h.stage[st]);
			else
				print_hist_text(f, &v[i].k, st, &v[i].h.stage[st]);
			printed++;
		}
		if (!keep)
			bpf_map_delete_elem(map_fd, &v[i].k);
	}
	if (!json && !printed)
		fputs("(no samples in this interval)\n\n", f);
	fflush(f);
	free(v);
	return printed;
}
