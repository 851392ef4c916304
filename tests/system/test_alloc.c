/* test_alloc.c - loan, publish, take and release allocate nothing.
 *
 * This executable interposes malloc, calloc, realloc and free (the shared
 * libtakt-ipc resolves them here first) and counts calls while armed.
 * Counts are exact: steady state must be 0; opening a port (the control
 * path) must count more than 0, which proves the counter sees the library.
 */
#include "harness.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
int main(void)
{
	/* The sanitizer runtime owns malloc; counting needs the normal build,
	 * which the default suite runs. */
	printf("skipped: allocation counting needs the build without sanitizers\n");
	return 77;
}
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static _Atomic int armed;
static _Atomic long allocs;

void *malloc(size_t n)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	if (atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	return __libc_realloc(p, n);
}

void free(void *p)
{
	if (p && atomic_load_explicit(&armed, memory_order_relaxed))
		atomic_fetch_add_explicit(&allocs, 1, memory_order_relaxed);
	__libc_free(p);
}

static long count_from_now(void)
{
	atomic_store(&allocs, 0);
	atomic_store(&armed, 1);
	return 0;
}

static long count_stop(void)
{
	atomic_store(&armed, 0);
	return atomic_load(&allocs);
}

static struct h_broker broker;

static int setup(void **state)
{
	(void)state;
	return h_broker_start(&broker, "alloc", NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_broker_stop(&broker);
	return 0;
}

static void test_alloc_steady_state_none(void **state)
{
	struct takt_pub_opts po = {.topic = "noalloc", .max_payload = 256, .history = 4};
	struct takt_sub_opts so = {.topic = "noalloc", .queue_depth = 64, .history = 2};
	takt_node *n = h_node(broker.domain, "alloc");
	struct takt_sample_info info;
	const void *x;
	takt_pub *p;
	takt_sub *s;
	void *buf;

	(void)state;
	count_from_now();
	assert_int_equal(takt_pub_open(n, &po, &p), 0);
	assert_int_equal(takt_sub_open(n, &so, &s), 0);
	assert_true(count_stop() > 0); /* the control path allocates: the counter works */
	assert_int_equal(takt_pub_send(p, "warm", 4), 1);
	assert_int_equal(takt_sub_take(s, &x, &info), 0);
	takt_sub_release(s, x);

	count_from_now();
	for (int i = 0; i < 20000; i++) {
		assert_int_equal(takt_pub_loan(p, 100, &buf), 0);
		memcpy(buf, &i, sizeof(i));
		assert_int_equal(takt_pub_publish(p, buf), 1);
		assert_int_equal(takt_sub_take(s, &x, &info), 0);
		assert_int_equal(*(const int *)x, i);
		takt_sub_release(s, x);
		if (i % 1000 == 0) { /* the idle edges too: empty take, arm, discard */
			assert_int_equal(takt_sub_take(s, &x, &info), -EAGAIN);
			assert_int_equal(takt_sub_arm(s), 0);
			assert_int_equal(takt_pub_loan(p, 8, &buf), 0);
			takt_pub_discard(p, buf);
		}
	}
	assert_int_equal(count_stop(), 0);
	takt_node_close(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_steady_state_none),
	};

	return cmocka_run_group_tests_name("alloc", tests, setup, teardown);
}
#endif
