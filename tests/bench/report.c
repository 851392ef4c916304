/* report.c - the figures as a table on stdout, as Markdown and as JSON.
 *
 * Every figure that has a baseline is printed with the ratio to it, from
 * the same run. Latencies are medians (one-way where the figure is a round
 * trip) with their p99; rates are the median batch rate with the rate of
 * the slowest 1 % of batches; timer lateness is p50, p99 and max.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define FANOUT_SLOPE "takt fan-out per extra subscriber"

const char *bench_unit(const struct fig *f)
{
	switch (f->m) {
	case M_RATE: return "msg/s";
	case M_BW_RT:
	case M_BW_DUR: return "GB/s";
	default: return "ns";
	}
}

static bool higher_is_better(const struct fig *f)
{
	return f->m == M_RATE || f->m == M_BW_RT || f->m == M_BW_DUR;
}

static const char *status_name(enum status st)
{
	switch (st) {
	case ST_OK: return "ok";
	case ST_NOT_INSTALLED: return "not installed";
	case ST_NOT_RUN: return "not run";
	case ST_FAILED: return "failed";
	default: return "skipped";
	}
}

/* "536 ns", "7.73 us", "12.4 M/s", "9.81 GB/s". */
static void fmt(char *buf, size_t n, const struct fig *f, double v)
{
	if (f->m == M_RATE)
		snprintf(buf, n, "%.2f M/s", v / 1e6);
	else if (f->m == M_BW_RT || f->m == M_BW_DUR)
		snprintf(buf, n, "%.2f GB/s", v);
	else if (v < 10000)
		snprintf(buf, n, "%.0f ns", v);
	else if (v < 1000000)
		snprintf(buf, n, "%.2f us", v / 1000);
	else
		snprintf(buf, n, "%.2f ms", v / 1e6);
}

static ssize_t find(const struct report *rp, const char *name)
{
	for (size_t i = 0; name && i < rp->n_figs; i++)
		if (strcmp(rp->figs[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

static bool ok(const struct report *rp, ssize_t i)
{
	return i >= 0 && rp->res[i].status == ST_OK && rp->res[i].value > 0;
}

/* The ratio of figure i to its baseline: false when either is missing. */
static bool ratio_of(const struct report *rp, size_t i, double *ret)
{
	ssize_t b = find(rp, rp->figs[i].baseline);

	if (!ok(rp, (ssize_t)i) || !ok(rp, b))
		return false;
	*ret = rp->res[i].value / rp->res[b].value;
	return true;
}

/* What a row adds after its ratio: executor overhead per item, bandwidth's
 * one-way time, losses, why it did not run. */
static void note_of(const struct report *rp, size_t i, char *buf, size_t n)
{
	const struct fig *f = &rp->figs[i];
	const struct result *r = &rp->res[i];
	ssize_t b = find(rp, f->baseline);
	char t[32];

	buf[0] = '\0';
	if (r->status != ST_OK) {
		snprintf(buf, n, "%s%s%s", status_name(r->status), r->note[0] ? ": " : "", r->note);
		return;
	}
	if (f->m == M_LATENESS) {
		fmt(t, sizeof t, f, r->max);
		snprintf(buf, n, "max %s%s", t, r->drops ? ", ticks skipped" : "");
	} else if (f->per && ok(rp, b)) {
		snprintf(buf, n, "%+.0f ns per %s over %s", (r->value - rp->res[b].value) / f->per,
			 f->p.shape == SHAPE_DIAMOND ? "vertex" : "item", rp->figs[b].name);
	} else if (f->m == M_BW_RT || f->m == M_BW_DUR) {
		fmt(t, sizeof t, &(struct fig){ .m = M_DURATION }, r->one_way_ns);
		snprintf(buf, n, "%s per %s", t, f->m == M_BW_RT ? "one-way hop" : "copy");
	} else if (f->m == M_RATE && r->drops) {
		snprintf(buf, n, "%llu lost", (unsigned long long)r->drops);
	}
}

void report_header(void)
{
	printf("%-36s %12s %12s   %s\n", "figure", "median", "p99", "vs same-run baseline");
}

void report_row(const struct report *rp, size_t i)
{
	const struct fig *f = &rp->figs[i];
	const struct result *r = &rp->res[i];
	char v[32] = "-", p[32] = "-", note[2 * BENCH_WHAT_LEN + 128];
	double ratio;

	note_of(rp, i, note, sizeof note);
	if (r->status == ST_OK) {
		fmt(v, sizeof v, f, r->value);
		fmt(p, sizeof p, f, r->p99);
	}
	printf("%-36s %12s %12s   ", f->name, v, p);
	if (ratio_of(rp, i, &ratio))
		printf("%.2f x %s", ratio, f->baseline);
	else if (!f->baseline && r->status == ST_OK)
		printf("(floor)");
	if (note[0])
		printf("%s%s", (ratio_of(rp, i, &ratio) || (!f->baseline && r->status == ST_OK)) ? "; " : "", note);
	putchar('\n');
	fflush(stdout);
}

bool report_fanout_slope(const struct report *rp, double *ret_slope, double *ret_intercept)
{
	double sx = 0, sy = 0, sxx = 0, sxy = 0, k = 0;

	for (size_t i = 0; i < rp->n_figs; i++) {
		if (strcmp(rp->figs[i].group, "fan-out") != 0)
			continue;
		if (!ok(rp, (ssize_t)i))
			return false;
		double x = rp->figs[i].p.nsubs, y = rp->res[i].value;

		sx += x;
		sy += y;
		sxx += x * x;
		sxy += x * y;
		k++;
	}
	if (k < 2 || k * sxx == sx * sx)
		return false;
	/* least squares over every subscriber count */
	*ret_slope = (k * sxy - sx * sy) / (k * sxx - sx * sx);
	*ret_intercept = (sy - *ret_slope * sx) / k;
	return true;
}

/* The floor a fan-out slope is compared with: one cache line handed over. */
static bool slope_ratio(const struct report *rp, double slope, double *ret)
{
	ssize_t b = find(rp, "raw shm ping-pong");

	if (!ok(rp, b))
		return false;
	*ret = slope / rp->res[b].value;
	return true;
}

void report_derived(const struct report *rp)
{
	double slope, icpt, ratio;

	if (!report_fanout_slope(rp, &slope, &icpt)) {
		printf("%-36s %12s %12s   not measured\n", FANOUT_SLOPE, "-", "-");
		return;
	}
	printf("%-36s %9.0f ns %12s   ", FANOUT_SLOPE, slope, "-");
	if (slope_ratio(rp, slope, &ratio))
		printf("%.2f x raw shm ping-pong; ", ratio);
	printf("least squares over 1..32, %.0f ns at 0\n", icpt);
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

/* The median over the rounds both ran of their p99 ratio, round with
 * round (run back to back in the group's pass); 0 when none. */
static double chunk_p99_ratio(const struct result *a, const struct result *b)
{
	double q[BENCH_CHUNKS_MAX];
	unsigned n = a->n_chunks < b->n_chunks ? a->n_chunks : b->n_chunks, k = 0;

	for (unsigned i = 0; i < n; i++)
		if (b->p99_chunk[i] > 0)
			q[k++] = a->p99_chunk[i] / b->p99_chunk[i];
	if (!k)
		return 0;
	qsort(q, k, sizeof *q, cmp_double);
	return k % 2 ? q[k / 2] : (q[k / 2 - 1] + q[k / 2]) / 2;
}

/* 1 met, 0 missed, -1 not measured. */
static int target_state(const struct report *rp, const struct target *t, double *ret)
{
	ssize_t a = find(rp, t->figure), b = find(rp, t->against);
	double chunked;

	if (!ok(rp, a) || !ok(rp, b))
		return -1;
	*ret = t->p99 ? rp->res[a].p99 / rp->res[b].p99 : rp->res[a].value / rp->res[b].value;
	if (t->p99 && (chunked = chunk_p99_ratio(&rp->res[a], &rp->res[b])) > 0)
		*ret = chunked;
	if (t->per_item && rp->figs[a].per && rp->figs[b].per)
		*ret *= (double)rp->figs[b].per / rp->figs[a].per;
	return t->at_most ? *ret <= t->goal : *ret >= t->goal;
}

void report_targets(const struct report *rp, bool measured_only)
{
	printf("\ntargets (ratios from this run; never a test failure):\n");
	for (size_t i = 0; i < rp->n_targets; i++) {
		const struct target *t = &rp->targets[i];
		double ratio = 0;
		int st = target_state(rp, t, &ratio);

		if (st < 0 && measured_only)
			continue;
		if (st < 0)
			printf("  %-58s %s %.1f   not measured\n", t->what, t->at_most ? "<=" : ">=", t->goal);
		else
			printf("  %-58s %s %.1f   %.2f  %s\n", t->what, t->at_most ? "<=" : ">=", t->goal, ratio,
			       st ? "met" : "MISSED");
	}
}

/* ---- machine ----------------------------------------------------------------- */

struct machine {
	char cpu[96], kernel[96], date[32];
	long cpus;
};

static void machine_of(struct machine *m)
{
	struct utsname u;
	char line[256];
	FILE *f = fopen("/proc/cpuinfo", "r");
	time_t now = time(NULL);

	snprintf(m->cpu, sizeof m->cpu, "unknown");
	while (f && fgets(line, sizeof line, f)) {
		char *c = strchr(line, ':');

		if (strncmp(line, "model name", 10) == 0 && c) {
			snprintf(m->cpu, sizeof m->cpu, "%s", c + 2);
			m->cpu[strcspn(m->cpu, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
	snprintf(m->kernel, sizeof m->kernel, "%s", uname(&u) == 0 ? u.release : "unknown");
	strftime(m->date, sizeof m->date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
	m->cpus = sysconf(_SC_NPROCESSORS_ONLN);
}

static int close_file(FILE *f)
{
	int bad = ferror(f);

	return fclose(f) != 0 || bad ? -EIO : 0;
}

/* ---- Markdown ------------------------------------------------------------------- */

int report_markdown(const struct report *rp, const char *path)
{
	FILE *f = fopen(path, "w");
	struct machine m;
	double slope, icpt, ratio;

	if (!f)
		return -errno;
	machine_of(&m);
	fprintf(f, "Run of %s: %s mode, %.0f s; %ld CPUs (%s), Linux %s; sides pinned to CPU %d and %d.\n\n",
		m.date, rp->cfg->quick ? "quick" : "full", rp->seconds, m.cpus, m.cpu, m.kernel, rp->cfg->cpu_a,
		rp->cfg->cpu_b);
	fprintf(f, "| figure | median | p99 | vs same-run baseline | note |\n|---|---:|---:|---|---|\n");
	for (size_t i = 0; i < rp->n_figs; i++) {
		const struct fig *fg = &rp->figs[i];
		const struct result *r = &rp->res[i];
		char v[32] = "-", p[32] = "-", note[2 * BENCH_WHAT_LEN + 128];

		note_of(rp, i, note, sizeof note);
		if (r->status == ST_OK) {
			fmt(v, sizeof v, fg, r->value);
			fmt(p, sizeof p, fg, r->p99);
		}
		fprintf(f, "| %s | %s | %s | ", fg->name, v, p);
		if (ratio_of(rp, i, &ratio))
			fprintf(f, "%.2f x %s", ratio, fg->baseline);
		else if (!fg->baseline)
			fprintf(f, "floor");
		fprintf(f, " | %s |\n", note);
	}
	if (report_fanout_slope(rp, &slope, &icpt)) {
		fprintf(f, "| %s | %.0f ns | - | ", FANOUT_SLOPE, slope);
		if (slope_ratio(rp, slope, &ratio))
			fprintf(f, "%.2f x raw shm ping-pong", ratio);
		fprintf(f, " | least squares, %.0f ns at 0 subscribers |\n", icpt);
	}
	fprintf(f, "\n| target | goal | this run | |\n|---|---|---:|---|\n");
	for (size_t i = 0; i < rp->n_targets; i++) {
		const struct target *t = &rp->targets[i];
		int st = target_state(rp, t, &ratio);

		fprintf(f, "| %s | %s %.1f | ", t->what, t->at_most ? "<=" : ">=", t->goal);
		if (st < 0)
			fprintf(f, "- | not measured |\n");
		else
			fprintf(f, "%.2f | %s |\n", ratio, st ? "met" : "**missed**");
	}
	return close_file(f);
}

/* ---- JSON ----------------------------------------------------------------------- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, const char *key, bool have, double v)
{
	fprintf(f, ", \"%s\": ", key);
	if (have)
		fprintf(f, "%.6g", v);
	else
		fputs("null", f);
}

static void json_figure(FILE *f, const struct report *rp, size_t i)
{
	const struct fig *fg = &rp->figs[i];
	const struct result *r = &rp->res[i];
	bool good = r->status == ST_OK;
	double ratio = 0;

	fputs("    {\"name\": ", f);
	json_str(f, fg->name);
	fputs(", \"group\": ", f);
	json_str(f, fg->group);
	fputs(", \"unit\": ", f);
	json_str(f, bench_unit(fg));
	fputs(", \"status\": ", f);
	json_str(f, status_name(r->status));
	json_num(f, "value", good, r->value);
	json_num(f, "p99", good, r->p99);
	json_num(f, "max", good && fg->m == M_LATENESS, r->max);
	json_num(f, "one_way_ns", good && (fg->m == M_BW_RT || fg->m == M_BW_DUR), r->one_way_ns);
	json_num(f, "n", good, (double)r->n);
	json_num(f, "lost", good && (fg->m == M_RATE || fg->m == M_LATENESS), (double)r->drops);
	json_num(f, "size", fg->p.size > 0, (double)fg->p.size);
	json_num(f, "subscribers", fg->p.nsubs > 0, fg->p.nsubs);
	fputs(", \"higher_is_better\": ", f);
	fputs(higher_is_better(fg) ? "true" : "false", f);
	fputs(", \"baseline\": ", f);
	if (fg->baseline)
		json_str(f, fg->baseline);
	else
		fputs("null", f);
	json_num(f, "ratio", ratio_of(rp, i, &ratio), ratio);
	fputs(", \"note\": ", f);
	json_str(f, r->note);
	fputs("}", f);
}

int report_json(const struct report *rp, const char *path)
{
	FILE *f = fopen(path, "w");
	struct machine m;
	double slope = 0, icpt = 0, ratio = 0;
	bool have;

	if (!f)
		return -errno;
	machine_of(&m);
	fputs("{\n  \"machine\": {\"cpu\": ", f);
	json_str(f, m.cpu);
	fprintf(f, ", \"cpus\": %ld, \"kernel\": ", m.cpus);
	json_str(f, m.kernel);
	fprintf(f, ", \"cpu_a\": %d, \"cpu_b\": %d},\n  \"date\": ", rp->cfg->cpu_a, rp->cfg->cpu_b);
	json_str(f, m.date);
	fprintf(f, ",\n  \"mode\": \"%s\",\n  \"seconds\": %.1f,\n  \"figures\": [\n", rp->cfg->quick ? "quick" : "full",
		rp->seconds);
	for (size_t i = 0; i < rp->n_figs; i++) {
		json_figure(f, rp, i);
		fputs(",\n", f);
	}
	have = report_fanout_slope(rp, &slope, &icpt);
	fputs("    {\"name\": \"" FANOUT_SLOPE "\", \"group\": \"fan-out\", \"unit\": \"ns\", \"status\": ", f);
	json_str(f, have ? "ok" : "failed");
	json_num(f, "value", have, slope);
	json_num(f, "intercept", have, icpt);
	fputs(", \"higher_is_better\": false, \"baseline\": \"raw shm ping-pong\"", f);
	json_num(f, "ratio", have && slope_ratio(rp, slope, &ratio), ratio);
	fputs("}\n  ],\n  \"targets\": [\n", f);
	for (size_t i = 0; i < rp->n_targets; i++) {
		const struct target *t = &rp->targets[i];
		int st = target_state(rp, t, &ratio);

		fputs("    {\"what\": ", f);
		json_str(f, t->what);
		fputs(", \"figure\": ", f);
		json_str(f, t->figure);
		fputs(", \"against\": ", f);
		json_str(f, t->against);
		fprintf(f, ", \"goal\": \"%s %.1f\"", t->at_most ? "<=" : ">=", t->goal);
		json_num(f, "ratio", st >= 0, ratio);
		fprintf(f, ", \"met\": %s}%s\n", st < 0 ? "null" : st ? "true" : "false",
			i + 1 < rp->n_targets ? "," : "");
	}
	fputs("  ]\n}\n", f);
	return close_file(f);
}
