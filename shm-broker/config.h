/* config.h - the broker's configuration: INI file or built-in default. */
#ifndef TAKT_BROKER_CONFIG_H
#define TAKT_BROKER_CONFIG_H

#include "access.h"
#include "layout.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <takt/takt.h>

struct broker_config {
	char domain[TAKT_DOMAIN_MAX];
	struct takt_limits lim;
	uint32_t ports_per_process; /* [limits]: publisher and subscriber ports one process may hold; 0: config_ports_per_process */
	/* [memory]: what publishers' pools may reserve. A pool is sized from its
	 * publisher's max_payload, loans and history, and grows by depth +
	 * held_max chunks per connected subscriber. */
	uint64_t max_payload;   /* largest max_payload a publisher may declare */
	uint64_t domain_max;    /* bytes of all segments of the domain */
	uint64_t process_max;   /* bytes of the pools of one process's publishers */
	unsigned socket_mode;
	int64_t socket_group;   /* [socket] group: the socket's group, or -1 (the broker's) */
	unsigned confirm_timeout_ms; /* how long an open waits for CONN_READY (A0) */
	unsigned readopt_timeout_ms; /* how long a restarted broker waits for its predecessor's processes */
	bool keep_on_stop;           /* a stop with processes attached leaves the domain to the next broker */
	bool domain_set; /* [domain] name was given */
	struct access_rules access; /* [access] */
};

/* The built-in default: serves a newcomer with no file at all. */
void config_defaults(struct broker_config *c);
/* Reads an INI file over the defaults. On failure writes a message naming
 * the file, line, key and reason into err and returns a negative errno.
 * Nothing is cut silently: a line longer than the parser takes and an
 * indented line (INI's continuation, which would join a rule to the one
 * above it) are refused. */
int config_load(struct broker_config *c, const char *path, char *err, size_t errlen);
/* Checks the whole config (limits against compile-time caps and each other). */
int config_validate(const struct broker_config *c, char *err, size_t errlen);
/* [limits] ports_per_process as given, else half of publishers + subscribers. */
uint32_t config_ports_per_process(const struct broker_config *c);
/* Writes the effective config as INI (for --print-config and docs). */
void config_print(const struct broker_config *c, FILE *f);

#endif
