/* config.c - parsing and validating the broker's INI configuration (libinih).
 *
 *   [domain]  name
 *   [limits]  processes topics publishers subscribers publishers_per_topic
 *             subscribers_per_topic connections queue_depth_max history_max
 *             held_max loans_max events
 *   [pools]   class = <payload size>[K|M] x <count>   (one line per class)
 *   [socket]  mode = 0660
 */
#include "config.h"

#include <errno.h>
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
	static const uint64_t sizes[] = {128, 4096, 65536, 4u << 20};
	static const uint32_t counts[] = {1024, 512, 128, 8};

	memset(c, 0, sizeof(*c));
	snprintf(c->domain, sizeof(c->domain), "default");
	c->lim = (struct takt_limits){
		.processes = 64, .topics = 128, .publishers = 256, .subscribers = 512,
		.pubs_per_topic = 16, .subs_per_topic = 32, .connections = 1024,
		.queue_depth_max = 256, .history_max = 16, .held_max = 16, .loans_max = 8,
		.events = 64, .n_classes = 4,
	};
	memcpy(c->class_size, sizes, sizeof(sizes));
	memcpy(c->class_count, counts, sizeof(counts));
	c->socket_mode = 0660;
}

struct parse_ctx {
	struct broker_config *c;
	char *err;
	size_t errlen;
	int classes_seen;
};

static int parse_u64_base(const char *s, uint64_t *out, int allow_suffix, int base)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, base);
	if (errno || end == s || *s == '-')
		return -1;
	if (allow_suffix && (*end == 'K' || *end == 'k'))
		v <<= 10, end++;
	else if (allow_suffix && (*end == 'M' || *end == 'm'))
		v <<= 20, end++;
	else if (allow_suffix && (*end == 'G' || *end == 'g'))
		v <<= 30, end++;
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

/* "4096 x 512" or "4K x 512" */
static int set_class(struct parse_ctx *p, const char *val)
{
	char size_s[64], count_s[64];
	uint64_t size, count;

	if (!p->classes_seen) { /* a [pools] section replaces the default classes */
		p->c->lim.n_classes = 0;
		p->classes_seen = 1;
	}
	if (sscanf(val, "%63s x %63s", size_s, count_s) != 2 || parse_u64(size_s, &size, 1) < 0 ||
	    parse_u64(count_s, &count, 0) < 0) {
		snprintf(p->err, p->errlen, "[pools] class = '%s': expected '<size>[K|M|G] x <count>'", val);
		return 0;
	}
	if (p->c->lim.n_classes == TAKT_MAX_CLASSES) {
		snprintf(p->err, p->errlen, "[pools] class = '%s': at most %d classes", val, TAKT_MAX_CLASSES);
		return 0;
	}
	if (size == 0 || size > (1ull << 30) || count == 0 || count > (1u << 20)) {
		snprintf(p->err, p->errlen,
			 "[pools] class = '%s': size must be 1..1G bytes and count 1..1048576", val);
		return 0;
	}
	p->c->class_size[p->c->lim.n_classes] = size;
	p->c->class_count[p->c->lim.n_classes++] = (uint32_t)count;
	return 1;
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
	if (!strcmp(section, "pools") && !strcmp(key, "class"))
		return set_class(p, val);
	if (!strcmp(section, "socket") && !strcmp(key, "mode")) {
		uint64_t m;

		if (parse_u64_base(val, &m, 0, 8) < 0 || m > 0777) {
			snprintf(p->err, p->errlen, "[socket] mode = '%s': an octal mode such as 0660", val);
			return 0;
		}
		p->c->socket_mode = (unsigned)m;
		return 1;
	}
	snprintf(p->err, p->errlen, "[%s] %s: unknown key", section, key);
	return 0;
}

int config_load(struct broker_config *c, const char *path, char *err, size_t errlen)
{
	struct parse_ctx p = {.c = c, .err = err, .errlen = errlen};
	char msg[256];
	int line;

	err[0] = 0;
	line = ini_parse(path, config_ini_line, &p);
	if (line == -1) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -ENOENT;
	}
	if (line != 0) {
		snprintf(msg, sizeof(msg), "%s", err[0] ? err : "syntax error");
		snprintf(err, errlen, "%s:%d: %s", path, line, msg);
		return -EINVAL;
	}
	return config_validate(c, err, errlen);
}

int config_validate(const struct broker_config *c, char *err, size_t errlen)
{
	const struct takt_limits *l = &c->lim;

	if (l->queue_depth_max & (l->queue_depth_max - 1)) {
		snprintf(err, errlen, "[limits] queue_depth_max = %u: must be a power of two", l->queue_depth_max);
		return -EINVAL;
	}
	if (l->n_classes == 0) {
		snprintf(err, errlen, "[pools]: at least one class is needed");
		return -EINVAL;
	}
	for (uint32_t k = 1; k < l->n_classes; k++)
		if (c->class_size[k] <= c->class_size[k - 1]) {
			snprintf(err, errlen, "[pools] class %u (%llu bytes): sizes must be strictly ascending", k,
				 (unsigned long long)c->class_size[k]);
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
	fprintf(f, "\n[pools]\n");
	for (uint32_t k = 0; k < c->lim.n_classes; k++)
		fprintf(f, "class = %llu x %u\n", (unsigned long long)c->class_size[k], c->class_count[k]);
	fprintf(f, "\n[socket]\nmode = 0%o\n", c->socket_mode);
}
