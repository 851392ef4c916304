/* fuzz_config.c - libFuzzer target: the broker's INI configuration.
 *
 * Each input is a config file. config_load takes a path, so the input goes
 * into a memfd read back through /proc/self/fd/N, over the built-in
 * defaults as takt-broker reads --config. Besides what the sanitizers
 * catch, three properties are checked:
 *   - a failed load says why (err names the line, key and reason);
 *   - a config that loads also validates (config_validate, the check the
 *     broker makes again after --domain);
 *   - what --print-config prints of it loads back to the same settings.
 */
#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *detail)
{
	fprintf(stderr, "takt-fuzz-config: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	abort();
}

/* A memfd holding size bytes of data; its /proc path in path. */
static int file_of(const void *data, size_t size, char *path, size_t len)
{
	int fd = memfd_create("takt-fuzz-config", MFD_CLOEXEC);
	size_t done = 0;

	if (fd < 0)
		fail("memfd_create", strerror(errno));
	while (done < size) {
		ssize_t n = write(fd, (const char *)data + done, size - done);

		if (n <= 0)
			fail("write", strerror(errno));
		done += (size_t)n;
	}
	snprintf(path, len, "/proc/self/fd/%d", fd);
	return fd;
}

static int load(struct broker_config *c, const void *data, size_t size, char *err, size_t errlen)
{
	char path[64];
	int fd = file_of(data, size, path, sizeof(path)), r;

	config_defaults(c);
	r = config_load(c, path, err, errlen);
	close(fd);
	return r;
}

/* The settings --print-config prints (domain_set is not one: the printed
 * file always names the domain). */
static int same_rules(const struct access_rules *a, const struct access_rules *b)
{
	if (a->n != b->n)
		return 0;
	for (uint32_t i = 0; i < a->n; i++) {
		const struct access_rule *x = &a->r[i], *y = &b->r[i];

		if (x->action != y->action || strcmp(x->pattern, y->pattern) || x->n_who != y->n_who)
			return 0;
		for (unsigned j = 0; j < x->n_who; j++)
			if (x->who[j].id != y->who[j].id || x->who[j].group != y->who[j].group ||
			    x->who[j].anyone != y->who[j].anyone)
				return 0;
	}
	return 1;
}

static int same_settings(const struct broker_config *a, const struct broker_config *b)
{
	return !strcmp(a->domain, b->domain) && !memcmp(&a->lim, &b->lim, sizeof(a->lim)) &&
	       a->max_payload == b->max_payload && a->domain_max == b->domain_max &&
	       a->process_max == b->process_max && a->socket_mode == b->socket_mode &&
	       a->confirm_timeout_ms == b->confirm_timeout_ms && a->readopt_timeout_ms == b->readopt_timeout_ms &&
	       a->socket_group == b->socket_group &&
	       config_ports_per_process(a) == config_ports_per_process(b) && same_rules(&a->access, &b->access);
}

static void check_round_trip(const struct broker_config *c)
{
	struct broker_config again;
	char err[512], *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		fail("open_memstream", strerror(errno));
	config_print(c, f);
	fclose(f);
	if (load(&again, text, len, err, sizeof(err)) < 0)
		fail("the printed config does not load", err);
	if (!same_settings(c, &again))
		fail("the printed config loads to other settings", text);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct broker_config c;
	char err[512];

	if (load(&c, data, size, err, sizeof(err)) < 0) {
		if (!err[0] || !memchr(err, 0, sizeof(err)))
			fail("a failed load gives no reason", NULL);
		return 0;
	}
	if (config_validate(&c, err, sizeof(err)) < 0)
		fail("a loaded config does not validate", err);
	check_round_trip(&c);
	return 0;
}
