/* test_broker.c - takt-broker and takt as a user runs them. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

/* Runs a shell command, captures stdout+stderr; returns its exit status. */
static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = 0;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void expect_contains(const char *out, const char *what)
{
	if (!strstr(out, what))
		fail_msg("expected '%s' in output:\n%s", what, out);
}

static void test_broker_help_and_version(void **state)
{
	char out[4096];

	(void)state;
	assert_int_equal(run(out, sizeof(out), "%s --help", TAKT_BROKER_PATH), 0);
	expect_contains(out, "--config");
	expect_contains(out, "--foreground");
	assert_int_equal(run(out, sizeof(out), "%s --version", TAKT_BROKER_PATH), 0);
	expect_contains(out, TAKT_VERSION_STRING);
	assert_int_equal(run(out, sizeof(out), "%s --help", TAKT_TOOL_PATH), 0);
	expect_contains(out, "pools");
	assert_int_equal(run(out, sizeof(out), "%s --bogus", TAKT_BROKER_PATH), 2);
}

static void bad_config(const char *ini, const char *expect)
{
	char path[] = "/tmp/takt-bad-XXXXXX", out[4096];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, ini, strlen(ini)), (long)strlen(ini));
	close(fd);
	assert_int_equal(run(out, sizeof(out), "%s --foreground --config %s", TAKT_BROKER_PATH, path), 2);
	expect_contains(out, expect);
	unlink(path);
}

static void test_broker_refuses_bad_config(void **state)
{
	(void)state;
	bad_config("[limits]\nprocesses = lots\n", "[limits] processes = 'lots'");
	bad_config("[limits]\nprocesses = 0\n", "must be an integer in 1..");
	bad_config("[limits]\nwarp = 9\n", "[limits] warp: unknown key");
	bad_config("[limits]\nqueue_depth_max = 100\n", "power of two");
	bad_config("[pools]\nclass = 4096 x 8\nclass = 128 x 8\n", "strictly ascending");
	bad_config("[pools]\nclass = big\n", "expected '<size>[K|M|G] x <count>'");
	bad_config("[domain]\nname = ../etc\n", "[domain] name");
	bad_config("[nonsense\n", ":1:");
}

static void test_broker_one_per_domain(void **state)
{
	struct h_broker b;
	char out[4096];

	(void)state;
	assert_int_equal(h_broker_start(&b, "single", NULL), 0);
	assert_int_equal(run(out, sizeof(out), "%s --foreground --domain %s", TAKT_BROKER_PATH, b.domain), 1);
	expect_contains(out, "already runs");
	/* Regression: the refused broker used to remove the lock on its way out,
	 * so a third start succeeded and tore down the running one. */
	assert_int_equal(run(out, sizeof(out), "%s --foreground --domain %s", TAKT_BROKER_PATH, b.domain), 1);
	expect_contains(out, "already runs");
	assert_int_equal(h_wait_pools_full(b.domain, 1000), 0);
	assert_int_equal(run(out, sizeof(out), "%s status --domain %s", TAKT_TOOL_PATH, b.domain), 0);
	expect_contains(out, "broker running, pid");
	assert_int_equal(run(out, sizeof(out), "%s pools --json --domain %s", TAKT_TOOL_PATH, b.domain), 0);
	expect_contains(out, "[{\"class\":0,\"size\":128,\"total\":1024,\"free\":1024");
	h_broker_stop(&b);
}

static void test_broker_tools_without_broker(void **state)
{
	char out[4096];

	(void)state;
	setenv("TAKT_RUNTIME_DIR", "/tmp", 1);
	assert_int_equal(run(out, sizeof(out), "%s pools --domain nobody-here", TAKT_TOOL_PATH), 1);
	expect_contains(out, "no broker runs for domain 'nobody-here'");
	assert_int_equal(run(out, sizeof(out), "%s status --domain nobody-here", TAKT_TOOL_PATH), 1);
	expect_contains(out, "no broker runs");
}

static int count_segments(const char *domain)
{
	char pat[128];
	glob_t g;
	int n;

	snprintf(pat, sizeof(pat), "/dev/shm/takt.%s.[mp]*", domain); /* mgmt, pool<k> */
	if (glob(pat, 0, NULL, &g) != 0)
		return 0;
	n = (int)g.gl_pathc;
	globfree(&g);
	return n;
}

/* Segments left by a broker that died are removed at the next start. */
static void test_broker_removes_stale_segments(void **state)
{
	char domain[64], name[128];
	struct h_broker b;
	int fd;

	(void)state;
	snprintf(domain, sizeof(domain), "t-stale-%d", getpid());
	for (int k = -1; k < 3; k++) {
		snprintf(name, sizeof(name), k < 0 ? "/takt.%s.mgmt" : "/takt.%s.pool%d", domain, k);
		fd = shm_open(name, O_CREAT | O_RDWR, 0600);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 4096), 0);
		close(fd);
	}
	assert_int_equal(count_segments(domain), 4);
	/* h_broker_start names its domain t-<tag>-<pid>: ours. */
	assert_int_equal(h_broker_start(&b, "stale", NULL), 0);
	assert_string_equal(b.domain, domain);
	assert_int_equal(count_segments(domain), 5); /* fresh: mgmt and 4 pools */
	snprintf(name, sizeof(name), "/takt.%s.mgmt", domain);
	fd = shm_open(name, O_RDONLY, 0);
	assert_true(fd >= 0);
	assert_true(lseek(fd, 0, SEEK_END) > 4096);
	close(fd);
	assert_int_equal(h_wait_pools_full(domain, 2000), 0);
	h_broker_stop(&b);
	assert_int_equal(count_segments(domain), 0); /* removed at exit */
}

/* A /dev/shm too small for the config is a start-up error, not a SIGBUS. */
static void test_broker_shm_too_small(void **state)
{
	char out[4096];

	(void)state;
	if (geteuid() != 0 || system("unshare -m true >/dev/null 2>&1") != 0) {
		print_message("skipped: needs root (a private /dev/shm in a mount namespace)\n");
		skip();
	}
	assert_int_equal(run(out, sizeof(out),
			     "unshare -m sh -c 'mount -t tmpfs -o size=2M tmpfs /dev/shm && "
			     "exec %s --foreground --domain small'", TAKT_BROKER_PATH), 1);
	expect_contains(out, "/dev/shm is too small");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_broker_help_and_version),
		cmocka_unit_test(test_broker_refuses_bad_config),
		cmocka_unit_test(test_broker_one_per_domain),
		cmocka_unit_test(test_broker_tools_without_broker),
		cmocka_unit_test(test_broker_removes_stale_segments),
		cmocka_unit_test(test_broker_shm_too_small),
	};

	return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
