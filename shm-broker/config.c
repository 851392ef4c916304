/* config.c - parsing and validating the broker's INI configuration (libinih).
 *
 *   [domain]  name
 *   [limits]  processes topics publishers subscribers publishers_per_topic
 *             subscribers_per_topic connections queue_depth_max history_max
 *             held_max loans_max events
 *   [memory]  max_payload domain_max process_max   (bytes; K, M, G suffixes)
 *   [socket]  mode = 0660, group = NAME|GID, confirm_timeout_ms, readopt_timeout_ms,
 *             keep_on_stop = true|false
 *   [access]  publish|subscribe|notify|listen = PATTERN WHO[,WHO...]   (access.h)
 */
#include "config.h"
#include "ini_file.h"

#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct limit_key {
	const char *name;
	size_t off;
	uint32_t min, max;
};

#define LIM(n, f, lo, hi) {n, offsetof(struct takt_limits, f), lo, hi}
static const struct limit_key limit_keys[] = {
	LIM("processes", processes, 1, 4096),
	LIM("topics", topics, 1, 65536),
	LIM("publishers", publishers, 1, 65536),
	LIM("subscribers", subscribers, 1, 65536),
	LIM("publishers_per_topic", pubs_per_topic, 1, TAKT_MAX_PUBS_PER_TOPIC),
	LIM("subscribers_per_topic", subs_per_topic, 1, TAKT_MAX_SUBS_PER_TOPIC),
	LIM("connections", connections, 1, 1u << 20),
	LIM("queue_depth_max", queue_depth_max, 1, TAKT_MAX_QUEUE_DEPTH),
	LIM("history_max", history_max, 0, TAKT_MAX_HISTORY),
	LIM("held_max", held_max, 1, TAKT_MAX_HELD),
	LIM("loans_max", loans_max, 1, TAKT_MAX_LOANS),
	LIM("events", events, 1, 65536),
};

void config_defaults(struct broker_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->domain, sizeof(c->domain), "default");
	c->lim = (struct takt_limits){
		.processes = 64, .topics = 128, .publishers = 256, .subscribers = 512,
		.pubs_per_topic = 16, .subs_per_topic = 32, .connections = 1024,
		.queue_depth_max = 256, .history_max = 16, .held_max = 16, .loans_max = 8,
		.events = 64,
	};
	c->max_payload = 64ull << 20;
	c->domain_max = 8ull << 30;
	c->process_max = 4ull << 30;
	c->socket_mode = 0660;
	c->socket_group = -1;
	c->confirm_timeout_ms = 2000;
	c->readopt_timeout_ms = 2000;
	c->keep_on_stop = true;
}

struct parse_ctx {
	struct broker_config *c;
	char *err;
	size_t errlen;
	FILE *f;
	uint32_t line;       /* of the line inih parses now (config_read_line) */
	uint32_t bad_line;   /* a line refused before inih saw it */
};

static int parse_u64_base(const char *s, uint64_t *out, int allow_suffix, int base)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || end == s || *s == '-')
		return -1;
	if (allow_suffix && *end && strchr("KkMmGgTt", *end)) {
		/* K M G T: a shift of 10, 20, 30, 40; one that would lose bits
		 * is refused, not wrapped */
		unsigned shift = 10 * (unsigned)(strchr("KMGT", *end & ~0x20) - "KMGT" + 1);

		if (v > UINT64_MAX >> shift)
			return -1;
		v <<= shift;
		end++;
	}
	while (*end == ' ' || *end == '\t')
		end++;
	if (*end)
		return -1;
	*out = v;
	return 0;
}

/* Decimal: a leading 0 does not make a limit octal. */
static int parse_u64(const char *s, uint64_t *out, int allow_suffix)
{
	return parse_u64_base(s, out, allow_suffix, 10);
}

static int set_limit(struct parse_ctx *p, const char *key, const char *val)
{
	if (!strcmp(key, "ports_per_process")) { /* the broker's alone: not in the shared limits */
		uint64_t v;

		if (parse_u64(val, &v, 0) < 0 || v < 1 || v > 131072) {
			snprintf(p->err, p->errlen, "[limits] %s = '%s': must be an integer in 1..131072", key, val);
			return 0;
		}
		p->c->ports_per_process = (uint32_t)v;
		return 1;
	}
	for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++) {
		const struct limit_key *k = &limit_keys[i];
		uint64_t v;

		if (strcmp(key, k->name))
			continue;
		if (parse_u64(val, &v, 0) < 0 || v < k->min || v > k->max) {
			snprintf(p->err, p->errlen, "[limits] %s = '%s': must be an integer in %u..%u",
				 key, val, k->min, k->max);
			return 0;
		}
		*(uint32_t *)((char *)&p->c->lim + k->off) = (uint32_t)v;
		return 1;
	}
	snprintf(p->err, p->errlen, "[limits] %s: unknown key", key);
	return 0;
}

static int set_memory(struct parse_ctx *p, const char *key, const char *val)
{
	static const struct {
		const char *name;
		size_t off;
	} keys[] = {
		{"max_payload", offsetof(struct broker_config, max_payload)},
		{"domain_max", offsetof(struct broker_config, domain_max)},
		{"process_max", offsetof(struct broker_config, process_max)},
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (strcmp(key, keys[i].name))
			continue;
		if (parse_u64(val, &v, 1) < 0 || v == 0 || v > (1ull << 46)) {
			snprintf(p->err, p->errlen, "[memory] %s = '%s': a byte count 1..64T, K/M/G/T suffixes allowed",
				 key, val);
			return 0;
		}
		*(uint64_t *)((char *)p->c + keys[i].off) = v;
		return 1;
	}
	snprintf(p->err, p->errlen, "[memory] %s: unknown key", key);
	return 0;
}

static int config_ini_line(void *user, const char *section, const char *key, const char *val)
{
	struct parse_ctx *p = user;

	if (p->err[0])
		return 0; /* report the first error, not the last */
	if (!strcmp(section, "domain") && !strcmp(key, "name")) {
		if (!proto_domain_ok(val)) {
			snprintf(p->err, p->errlen,
				 "[domain] name = '%s': 1..47 characters of [A-Za-z0-9_.-], not starting with '.'", val);
			return 0;
		}
		snprintf(p->c->domain, sizeof(p->c->domain), "%s", val);
		p->c->domain_set = true;
		return 1;
	}
	if (!strcmp(section, "limits"))
		return set_limit(p, key, val);
	if (!strcmp(section, "memory"))
		return set_memory(p, key, val);
	if (!strcmp(section, "pools")) {
		snprintf(p->err, p->errlen,
			 "[pools] is gone: every publisher has its own pool, sized from its max_payload, "
			 "loans, history and subscribers (see [memory])");
		return 0;
	}
	if (!strcmp(section, "socket") && !strcmp(key, "mode")) {
		uint64_t m;

		if (parse_u64_base(val, &m, 0, 8) < 0 || m > 0777) {
			snprintf(p->err, p->errlen, "[socket] mode = '%s': an octal mode such as 0660", val);
			return 0;
		}
		p->c->socket_mode = (unsigned)m;
		return 1;
	}
	if (!strcmp(section, "socket") && !strcmp(key, "group")) {
		uint64_t g;
		struct group *gr;

		if (parse_u64(val, &g, 0) == 0 && g < UINT32_MAX) {
			p->c->socket_group = (int64_t)g;
			return 1;
		}
		gr = getgrnam(val);
		if (!gr) {
			snprintf(p->err, p->errlen, "[socket] group = '%s': unknown group", val);
			return 0;
		}
		p->c->socket_group = gr->gr_gid;
		return 1;
	}
	if (!strcmp(section, "access"))
		return access_rule_add(&p->c->access, key, val, p->line, p->err, p->errlen) == 0;
	if (!strcmp(section, "socket") && !strcmp(key, "readopt_timeout_ms")) {
		uint64_t m;

		if (parse_u64(val, &m, 0) < 0 || m < 1 || m > 600000) {
			snprintf(p->err, p->errlen, "[socket] readopt_timeout_ms = '%s': an integer in 1..600000", val);
			return 0;
		}
		p->c->readopt_timeout_ms = (unsigned)m;
		return 1;
	}
	if (!strcmp(section, "socket") && !strcmp(key, "keep_on_stop")) {
		if (!strcmp(val, "true") || !strcmp(val, "false")) {
			p->c->keep_on_stop = val[0] == 't';
			return 1;
		}
		snprintf(p->err, p->errlen, "[socket] keep_on_stop = '%s': true or false", val);
		return 0;
	}
	if (!strcmp(section, "socket") && !strcmp(key, "confirm_timeout_ms")) {
		uint64_t m;

		if (parse_u64(val, &m, 0) < 0 || m < 1 || m > 60000) {
			snprintf(p->err, p->errlen, "[socket] confirm_timeout_ms = '%s': an integer in 1..60000", val);
			return 0;
		}
		p->c->confirm_timeout_ms = (unsigned)m;
		return 1;
	}
	snprintf(p->err, p->errlen, "[%s] %s: unknown key", section, key);
	return 0;
}

/* inih's reader: counts lines (the [access] rules keep theirs) and refuses
 * what inih would cut or join silently. */
static char *config_read_line(char *str, int num, void *stream)
{
	struct parse_ctx *p = stream;
	size_t len, lead;

	if (p->bad_line || p->err[0] || !fgets(str, num, p->f))
		return NULL; /* the first error is the one reported */
	p->line++;
	len = strlen(str);
	if (len == (size_t)num - 1 && str[len - 1] != '\n') {
		int c = getc(p->f);

		if (c != EOF) {
			snprintf(p->err, p->errlen, "line longer than %d characters", num - 2);
			p->bad_line = p->line;
			return NULL;
		}
	}
	lead = strspn(str, " \t");
	if (lead && !strchr("\r\n;#", str[lead])) {
		snprintf(p->err, p->errlen, "indented line: continuation lines are not supported "
			 "(start each key, and each rule, in the first column)");
		p->bad_line = p->line;
		return NULL;
	}
	return str;
}

int config_load(struct broker_config *c, const char *path, char *err, size_t errlen)
{
	struct parse_ctx p = {.c = c, .err = err, .errlen = errlen};
	int r;

	snprintf(c->access.file, sizeof(c->access.file), "%s", path);
	r = ini_file_parse(path, &p.f, config_read_line, config_ini_line, &p, &p.bad_line, err, errlen);
	return r < 0 ? r : config_validate(c, err, errlen);
}

uint32_t config_ports_per_process(const struct broker_config *c)
{
	/* unset: half of the port tables, so one process cannot take them all */
	return c->ports_per_process ? c->ports_per_process : (c->lim.publishers + c->lim.subscribers + 1) / 2;
}

int config_validate(const struct broker_config *c, char *err, size_t errlen)
{
	const struct takt_limits *l = &c->lim;

	if (l->queue_depth_max & (l->queue_depth_max - 1)) {
		snprintf(err, errlen, "[limits] queue_depth_max = %u: must be a power of two", l->queue_depth_max);
		return -EINVAL;
	}
	if (c->process_max > c->domain_max) {
		snprintf(err, errlen, "[memory] process_max (%llu) exceeds domain_max (%llu)",
			 (unsigned long long)c->process_max, (unsigned long long)c->domain_max);
		return -EINVAL;
	}
	if (l->pubs_per_topic > l->publishers || l->subs_per_topic > l->subscribers) {
		snprintf(err, errlen, "[limits] publishers_per_topic/subscribers_per_topic exceed publishers/subscribers");
		return -EINVAL;
	}
	return 0;
}

void config_print(const struct broker_config *c, FILE *f)
{
	fprintf(f, "[domain]\nname = %s\n\n[limits]\n", c->domain);
	for (size_t i = 0; i < sizeof(limit_keys) / sizeof(limit_keys[0]); i++)
		fprintf(f, "%s = %u\n", limit_keys[i].name,
			*(const uint32_t *)((const char *)&c->lim + limit_keys[i].off));
	fprintf(f, "ports_per_process = %u\n", config_ports_per_process(c));
	fprintf(f, "\n[memory]\nmax_payload = %llu\ndomain_max = %llu\nprocess_max = %llu\n",
		(unsigned long long)c->max_payload, (unsigned long long)c->domain_max,
		(unsigned long long)c->process_max);
	fprintf(f, "\n[socket]\nmode = 0%o\nconfirm_timeout_ms = %u\nreadopt_timeout_ms = %u\nkeep_on_stop = %s\n",
		c->socket_mode, c->confirm_timeout_ms, c->readopt_timeout_ms, c->keep_on_stop ? "true" : "false");
	if (c->socket_group >= 0)
		fprintf(f, "group = %lld\n", (long long)c->socket_group);
	if (c->access.n)
		fprintf(f, "\n[access]\n");
	for (uint32_t i = 0; i < c->access.n; i++)
		fprintf(f, "%s = %s\n", access_action_name(c->access.r[i].action), c->access.r[i].text);
}
