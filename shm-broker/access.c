/* access.c - per-topic access rules (see access.h for the rule language).
 *
 * Rules are parsed and their users and groups resolved once, when the
 * config is loaded, so a decision is a scan of at most ACCESS_RULES_MAX
 * patterns with a bounded glob match and no lookups: it runs on every
 * port open and every connection handed out, in the broker's event loop.
 */
#include "access.h"
#include "proto.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const action_names[ACCESS_N_ACTIONS] = {"publish", "subscribe", "notify", "listen", "serve",
							     "call"};

const char *access_action_name(enum access_action action)
{
	return (unsigned)action < ACCESS_N_ACTIONS ? action_names[action] : "?";
}

static bool pattern_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '.' || c == '-' || c == '/' || c == '*';
}

static int pattern_check(const char *p, size_t n, char *err, size_t errlen)
{
	if (n == 0 || n >= TAKT_NAME_MAX) {
		snprintf(err, errlen, "pattern '%.*s': 1..%d characters", (int)n, p, TAKT_NAME_MAX - 1);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++) {
		if (!pattern_char_ok(p[i])) {
			snprintf(err, errlen, "pattern '%.*s': '%c' is not allowed (topic characters, '*' and '**')",
				 (int)n, p, p[i]);
			return -EINVAL;
		}
		if (i >= 2 && p[i] == '*' && p[i - 1] == '*' && p[i - 2] == '*') {
			snprintf(err, errlen, "pattern '%.*s': '***' (use '*' within a segment, '**' across)",
				 (int)n, p);
			return -EINVAL;
		}
	}
	return 0;
}

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* One WHO token: `*`, a user (name or uid) or a group (`@name`, `@gid`). */
static int who_parse(const char *tok, struct access_who *w, char *err, size_t errlen)
{
	bool group = tok[0] == '@';
	const char *name = group ? tok + 1 : tok;

	*w = (struct access_who){.group = group};
	if (!strcmp(tok, "*")) {
		w->anyone = true;
		return 0;
	}
	if (all_digits(name)) {
		unsigned long v = strtoul(name, NULL, 10);

		if (v >= UINT32_MAX || strlen(name) > 10) {
			snprintf(err, errlen, "%s id '%s' is out of range", group ? "group" : "user", name);
			return -EINVAL;
		}
		w->id = (uint32_t)v;
		return 0;
	}
	if (group) {
		struct group *g = *name ? getgrnam(name) : NULL;

		if (!g) {
			snprintf(err, errlen, "unknown group '%s'", name);
			return -EINVAL;
		}
		w->id = g->gr_gid;
	} else {
		struct passwd *pw = getpwnam(name);

		if (!pw) {
			snprintf(err, errlen, "unknown user '%s'", name);
			return -EINVAL;
		}
		w->id = pw->pw_uid;
	}
	return 0;
}

static int who_list_parse(struct access_rule *r, const char *s, char *err, size_t errlen)
{
	char tok[ACCESS_TEXT_MAX];

	while (*s) {
		size_t n = strcspn(s, ", \t");

		if (n == 0) {
			s++;
			continue;
		}
		if (r->n_who == ACCESS_WHO_MAX) {
			snprintf(err, errlen, "more than %d users and groups in one rule", ACCESS_WHO_MAX);
			return -EINVAL;
		}
		if (n >= sizeof(tok))
			n = sizeof(tok) - 1; /* not reached: the value is shorter */
		memcpy(tok, s, n);
		tok[n] = 0;
		if (who_parse(tok, &r->who[r->n_who], err, errlen) < 0)
			return -EINVAL;
		r->n_who++;
		s += n;
	}
	if (r->n_who == 0) {
		snprintf(err, errlen, "no user or group after the pattern (write '*' for everyone)");
		return -EINVAL;
	}
	return 0;
}

int access_rule_add(struct access_rules *a, const char *action, const char *value, uint32_t line, char *err,
		    size_t errlen)
{
	struct access_rule *r;
	size_t plen;
	int act;

	for (act = 0; act < ACCESS_N_ACTIONS && strcmp(action, action_names[act]); act++)
		;
	if (act == ACCESS_N_ACTIONS) {
		snprintf(err, errlen, "[access] %s: unknown action (publish, subscribe)", action);
		return -EINVAL;
	}
	if (a->n == ACCESS_RULES_MAX) {
		snprintf(err, errlen, "[access]: more than %d rules", ACCESS_RULES_MAX);
		return -EINVAL;
	}
	r = &a->r[a->n];
	*r = (struct access_rule){.action = (uint8_t)act, .line = line};
	value += strspn(value, " \t");
	plen = strcspn(value, " \t");
	if (pattern_check(value, plen, err, errlen) < 0)
		return -EINVAL;
	memcpy(r->pattern, value, plen);
	r->pattern[plen] = 0;
	snprintf(r->text, sizeof(r->text), "%s", value);
	if (who_list_parse(r, value + plen, err, errlen) < 0)
		return -EINVAL;
	a->n++;
	return 0;
}


const struct access_rule *access_rule_for(const struct access_rules *a, enum access_action action,
					  const char *topic)
{
	const struct access_rule *best = NULL;
	size_t best_len = 0;

	for (uint32_t i = 0; i < a->n; i++) {
		const struct access_rule *r = &a->r[i];
		size_t len = strlen(r->pattern);

		/* >=: on a tie the rule written last wins */
		if (r->action == action && len >= best_len && proto_name_glob(r->pattern, topic)) {
			best = r;
			best_len = len;
		}
	}
	return best;
}

static bool in_groups(const struct access_peer *p, uint32_t gid)
{
	if (p->gid == gid)
		return true;
	for (uint32_t i = 0; i < p->n_groups; i++)
		if (p->groups[i] == gid)
			return true;
	return false;
}

bool access_allowed(const struct access_rules *a, enum access_action action, const char *topic,
		    const struct access_peer *peer, uid_t self, const struct access_rule **ret_rule)
{
	const struct access_rule *r;

	if (peer->uid == 0 || peer->uid == self)
		return true;
	r = access_rule_for(a, action, topic);
	if (!r)
		return true;
	for (unsigned i = 0; i < r->n_who; i++) {
		const struct access_who *w = &r->who[i];

		if (w->anyone || (w->group ? in_groups(peer, w->id) : peer->uid == w->id))
			return true;
	}
	if (ret_rule)
		*ret_rule = r;
	return false;
}
