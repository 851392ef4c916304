/* config.c - takt-gateway's INI configuration (libinih), with the broker's
 * conventions: the first error is reported as file:line: reason, unknown
 * sections and keys are errors, sizes take K/M/G suffixes.
 *
 *   [gateway] name domain origin stats_interval_ms
 *   [dds]     domain interface config
 *   [out PATTERN] / [in PATTERN]   (one per bridged pattern; nothing else is bridged)
 *             reliability = reliable|best-effort   history = all|N
 *             late_joiners = N   lz4 = true|false   lossless = true|false
 *             max_payload = BYTES   queue_depth = N   batch = BYTES
 */
#include "gateway.h"
#include "ini_file.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH_UNSET UINT64_MAX /* batch not given: GW_BATCH_DEFAULT, or 0 with late_joiners */

struct parse {
	struct gw_config *c;
	FILE *f;
	unsigned line, bad_line;
	char *err;
	size_t errlen;
	struct gw_rule *rule;    /* the section being read, if a rule */
};

/* Records the first error: 0 (inih's "stop"). */
__attribute__((format(printf, 2, 3))) static int fail(struct parse *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->err, p->errlen, fmt, ap);
	va_end(ap);
	return 0;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *s == '-')
		return -1;
	if (*end && strchr("KMG", *end)) {
		unsigned shift = *end == 'K' ? 10 : *end == 'M' ? 20 : 30;

		if (v > max >> shift)
			return -1;
		v <<= shift;
		end++;
	}
	if (*end || v > max)
		return -1;
	*out = v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	if (strcmp(s, "true") && strcmp(s, "false"))
		return -1;
	*out = s[0] == 't';
	return 0;
}

/* A pattern: the characters of a topic name plus '*'. */
static bool pattern_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < TAKT_TOPIC_NAME_MAX && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
							  "0123456789_./-*") == n;
}

/* "[out PATTERN]", "[in PATTERN]", "[gateway]" or "[dds]", seen by the
 * line reader so that a rule is checked on its own line, keys or not. */
static int section_line(struct parse *p, const char *s)
{
	char sec[128], pat[128];
	const char *end = strchr(s, ']');
	size_t n = end ? (size_t)(end - s - 1) : 0;

	if (!end || n >= sizeof(sec))
		return fail(p, "a section header is [gateway], [dds], [out PATTERN] or [in PATTERN]");
	memcpy(sec, s + 1, n);
	sec[n] = 0;
	p->rule = NULL;
	if (!strcmp(sec, "gateway") || !strcmp(sec, "dds"))
		return 1;
	int used = 0;

	if ((sscanf(sec, "out %127s%n", pat, &used) != 1 && sscanf(sec, "in %127s%n", pat, &used) != 1) ||
	    sec[used])
		return fail(p, "[%s]: unknown section (sections: [gateway], [dds], [out PATTERN], [in PATTERN])", sec);
	if (!pattern_ok(pat))
		return fail(p, "[%s]: '%s' is not a topic pattern (1..63 of [A-Za-z0-9_./-*])", sec, pat);
	if (p->c->n_rules == GW_MAX_RULES)
		return fail(p, "[%s]: more than %d rules", sec, GW_MAX_RULES);
	p->rule = &p->c->rules[p->c->n_rules++];
	*p->rule = (struct gw_rule){.dir = sec[0] == 'o' ? GW_OUT : GW_IN, .line = p->line, .reliable = true,
				    .depth = 0, .lossless = true, .max_payload = 64 << 10, .queue_depth = 256,
				    .batch = BATCH_UNSET};
	snprintf(p->rule->pattern, sizeof(p->rule->pattern), "%s", pat);
	return 1;
}

static char *read_line(char *str, int num, void *stream)
{
	struct parse *p = stream;
	size_t lead;

	if (p->bad_line || p->err[0] || !fgets(str, num, p->f))
		return NULL;
	p->line++;
	lead = strspn(str, " \t");
	if (lead && !strchr("\r\n;#", str[lead])) {
		fail(p, "indented line: continuation lines are not supported");
		p->bad_line = p->line;
		return NULL;
	}
	if (str[0] == '[' && !section_line(p, str)) {
		p->bad_line = p->line;
		return NULL;
	}
	return str;
}

static int rule_key(struct parse *p, struct gw_rule *r, const char *key, const char *val)
{
	uint64_t v;

	if (!strcmp(key, "reliability")) {
		if (strcmp(val, "reliable") && strcmp(val, "best-effort"))
			return fail(p, "reliability = '%s': reliable or best-effort", val);
		r->reliable = val[0] == 'r';
	} else if (!strcmp(key, "history")) {
		if (strcmp(val, "all") && (parse_u64(val, 65536, &v) < 0 || v == 0))
			return fail(p, "history = '%s': all, or a depth in 1..65536", val);
		r->depth = strcmp(val, "all") ? (unsigned)v : 0;
	} else if (!strcmp(key, "late_joiners")) {
		if (parse_u64(val, 65536, &v) < 0)
			return fail(p, "late_joiners = '%s': samples kept for late joiners, 0..65536", val);
		r->late_joiners = (unsigned)v;
	} else if (!strcmp(key, "lz4")) {
		if (parse_bool(val, &r->lz4) < 0)
			return fail(p, "lz4 = '%s': true or false", val);
	} else if (!strcmp(key, "lossless")) {
		if (parse_bool(val, &r->lossless) < 0)
			return fail(p, "lossless = '%s': true or false", val);
	} else if (!strcmp(key, "max_payload")) {
		if (parse_u64(val, 1ull << 30, &r->max_payload) < 0 || r->max_payload == 0)
			return fail(p, "max_payload = '%s': bytes in 1..1G, K/M/G suffixes allowed", val);
	} else if (!strcmp(key, "queue_depth")) {
		if (parse_u64(val, 65536, &v) < 0 || v == 0)
			return fail(p, "queue_depth = '%s': an integer in 1..65536", val);
		r->queue_depth = (unsigned)v;
	} else if (!strcmp(key, "batch")) {
		if (r->dir == GW_IN)
			return fail(p, "[in %s] batch: the exporting side batches ([out] sections only)", r->pattern);
		if (parse_u64(val, 1ull << 30, &r->batch) < 0)
			return fail(p, "batch = '%s': bytes in 0..1G (0: one takt sample per DDS sample), "
				    "K/M/G suffixes allowed", val);
	} else {
		return fail(p, "[%s %s] %s: unknown key", r->dir == GW_OUT ? "out" : "in", r->pattern, key);
	}
	return 1;
}

static int gateway_key(struct parse *p, const char *key, const char *val)
{
	struct gw_config *c = p->c;
	uint64_t v;

	if (!strcmp(key, "name")) {
		size_t n = strlen(val);

		if (!n || n >= sizeof(c->name) || strspn(val, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
							      "0123456789_-") != n)
			return fail(p, "[gateway] name = '%s': 1..31 of [A-Za-z0-9_-]", val);
		snprintf(c->name, sizeof(c->name), "%s", val);
	} else if (!strcmp(key, "domain")) {
		if (!*val || strlen(val) >= sizeof(c->domain))
			return fail(p, "[gateway] domain = '%s': a takt domain name", val);
		snprintf(c->domain, sizeof(c->domain), "%s", val);
	} else if (!strcmp(key, "origin")) {
		if (parse_u64(val, UINT32_MAX, &v) < 0 || v == 0)
			return fail(p, "[gateway] origin = '%s': an integer in 1..4294967295 (0 means local)", val);
		c->origin = (uint32_t)v;
	} else if (!strcmp(key, "stats_interval_ms")) {
		if (parse_u64(val, 3600000, &v) < 0 || v < 10)
			return fail(p, "[gateway] stats_interval_ms = '%s': an integer in 10..3600000", val);
		c->stats_ms = (unsigned)v;
	} else {
		return fail(p, "[gateway] %s: unknown key", key);
	}
	return 1;
}

static int dds_key(struct parse *p, const char *key, const char *val)
{
	struct gw_config *c = p->c;
	uint64_t v;

	if (!strcmp(key, "domain")) {
		if (parse_u64(val, 232, &v) < 0) /* DDS's port mapping allows 0..232 */
			return fail(p, "[dds] domain = '%s': a DDS domain id in 0..232", val);
		c->dds_domain = (uint32_t)v;
	} else if (!strcmp(key, "interface")) {
		if (!*val || strlen(val) >= sizeof(c->dds_interface) || strpbrk(val, "<>&\"'"))
			return fail(p, "[dds] interface = '%s': a network interface name", val);
		snprintf(c->dds_interface, sizeof(c->dds_interface), "%s", val);
	} else if (!strcmp(key, "config")) {
		if (strlen(val) >= sizeof(c->dds_config))
			return fail(p, "[dds] config: longer than %zu characters", sizeof(c->dds_config) - 1);
		snprintf(c->dds_config, sizeof(c->dds_config), "%s", val);
	} else {
		return fail(p, "[dds] %s: unknown key", key);
	}
	return 1;
}

static int on_key(void *user, const char *section, const char *key, const char *val)
{
	struct parse *p = user;

	if (p->err[0])
		return 0;
	if (p->rule)
		return rule_key(p, p->rule, key, val);
	if (!strcmp(section, "gateway"))
		return gateway_key(p, key, val);
	if (!strcmp(section, "dds"))
		return dds_key(p, key, val);
	return fail(p, "%s: a key outside any section", key);
}

/* What only the whole file can tell: a rule that contradicts itself. */
static int config_check(struct gw_config *c, char *err, size_t errlen, const char *path)
{
	for (unsigned i = 0; i < c->n_rules; i++) {
		struct gw_rule *r = &c->rules[i];

		if (r->batch == BATCH_UNSET) {
			r->batch = r->late_joiners ? 0 : GW_BATCH_DEFAULT;
		} else if (r->batch && r->late_joiners) {
			snprintf(err, errlen, "%s:%u: batch needs late_joiners = 0 (DDS keeps a late joiner's "
				 "history per DDS sample, and a batch is one)", path, r->line);
			return -EINVAL;
		}
		if (r->late_joiners && !r->reliable) {
			snprintf(err, errlen, "%s:%u: late_joiners needs reliability = reliable "
				 "(DDS serves history to late joiners over reliable readers only)", path, r->line);
			return -EINVAL;
		}
		if (r->depth && r->late_joiners > r->depth) {
			snprintf(err, errlen, "%s:%u: late_joiners = %u exceeds history = %u", path, r->line,
				 r->late_joiners, r->depth);
			return -EINVAL;
		}
	}
	if (!c->n_rules) {
		snprintf(err, errlen, "%s: no [out PATTERN] or [in PATTERN] section: nothing to bridge", path);
		return -EINVAL;
	}
	return 0;
}

int gw_config_load(struct gw_config *c, const char *path, char *err, size_t errlen)
{
	struct parse p = {.c = c, .err = err, .errlen = errlen};
	int r;

	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "gateway");
	c->stats_ms = 1000;
	r = ini_file_parse(path, &p.f, read_line, on_key, &p, &p.bad_line, err, errlen);
	if (r < 0)
		return r;
	if (!c->origin) { /* FNV-1a of the name: stable across restarts */
		uint32_t h = 2166136261u;

		for (const char *s = c->name; *s; s++)
			h = (h ^ (uint8_t)*s) * 16777619u;
		c->origin = h ? h : 1;
	}
	return config_check(c, err, errlen, path);
}

bool gw_glob(const char *pat, const char *name)
{
	if (!*pat)
		return !*name;
	if (pat[0] == '*' && pat[1] == '*') { /* any run, '/' included */
		for (const char *s = name;; s++) {
			if (gw_glob(pat + 2, s))
				return true;
			if (!*s)
				return false;
		}
	}
	if (*pat == '*') { /* any run within the segment */
		for (const char *s = name;; s++) {
			if (gw_glob(pat + 1, s))
				return true;
			if (!*s || *s == '/')
				return false;
		}
	}
	return *pat == *name && gw_glob(pat + 1, name + 1);
}

const struct gw_rule *gw_rule_match(const struct gw_config *c, enum gw_dir dir, const char *topic)
{
	for (unsigned i = 0; i < c->n_rules; i++)
		if (c->rules[i].dir == dir && gw_glob(c->rules[i].pattern, topic))
			return &c->rules[i];
	return NULL;
}
