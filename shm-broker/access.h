/* access.h - access rules: who may publish or subscribe on a topic, and
 * notify or listen on an event.
 *
 * A rule is `action = PATTERN WHO[,WHO...]` in the config's [access]
 * section. PATTERN is a glob over topic (or event) names: `*` matches within one path
 * segment (no '/'), `**` across segments. WHO is a user (name or uid), a
 * group (`@name` or `@gid`) or `*` (everyone). For an action, a topic that
 * matches no rule is open; of the rules that match, the longest pattern
 * decides (in characters; on a tie, the one written last). Root and the
 * broker's own user are always allowed.
 */
#ifndef TAKT_BROKER_ACCESS_H
#define TAKT_BROKER_ACCESS_H

#include "layout.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum access_action {
	ACCESS_PUBLISH, ACCESS_SUBSCRIBE, ACCESS_NOTIFY, ACCESS_LISTEN, ACCESS_SERVE, ACCESS_CALL, ACCESS_N_ACTIONS
};

#define ACCESS_RULES_MAX 256
#define ACCESS_WHO_MAX 16
#define ACCESS_TEXT_MAX 200 /* a rule's value as written (inih's longest line) */

struct access_who {
	uint32_t id;  /* uid, or gid when group */
	bool group;
	bool anyone;  /* `*` */
};

struct access_rule {
	uint8_t action;
	uint8_t n_who;
	uint32_t line;                   /* in the config file */
	char pattern[TAKT_NAME_MAX];
	char text[ACCESS_TEXT_MAX];      /* the value as written, for the log */
	struct access_who who[ACCESS_WHO_MAX];
};

struct access_rules {
	uint32_t n;
	char file[160];                  /* the config file the rules came from */
	struct access_rule r[ACCESS_RULES_MAX];
};

/* The peer a decision is about (SO_PEERCRED, SO_PEERGROUPS). */
struct access_peer {
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	uint32_t n_groups;
};

/* Parses `action = value` (value: PATTERN WHO[,WHO...]) from line of the
 * config into a new rule. Users and groups are resolved now, by name or
 * number. 0, or -EINVAL with the reason in err. */
int access_rule_add(struct access_rules *a, const char *action, const char *value, uint32_t line, char *err,
		    size_t errlen);

/* The rule that decides action on topic, or NULL (no rule: open). */
const struct access_rule *access_rule_for(const struct access_rules *a, enum access_action action,
					  const char *topic);

/* Whether peer may do action on topic; the deciding rule of a refusal in
 * *ret_rule. self is the broker's own uid. */
bool access_allowed(const struct access_rules *a, enum access_action action, const char *topic,
		    const struct access_peer *peer, uid_t self, const struct access_rule **ret_rule);

const char *access_action_name(enum access_action action);

#endif
