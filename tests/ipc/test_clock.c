/* test_clock.c - publish stamps read through the TSC (libipc/clock.c).
 *
 * A stamp is CLOCK_MONOTONIC at the publish: never later than a
 * clock_gettime after it, never earlier than the stamp before it, and,
 * once the clock has its rate, at most 1 us earlier than a clock_gettime
 * before it. Checked over 60 ms of stamps against the real clock, with the
 * TSC where this machine allows it (the test says whether it does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "clock.h"

#include <time.h>

#define N 100000
#define EARLY_MAX_NS 1000

static uint64_t mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void check_clock(struct stamp_clock *c, const char *what)
{
	uint64_t prev = 0, t0 = mono(), worst = 0, extrapolated = 0;

	/* 60 ms at least: the rate is known after 20 ms */
	for (int i = 0; i < N || mono() - t0 < 60000000; i++) {
		uint64_t before = mono(), s = stamp_clock_now(c), after = mono();

		if (s > after)
			fail_msg("%s: stamp %llu is %llu ns after the clock read after it", what,
				 (unsigned long long)s, (unsigned long long)(s - after));
		assert_true(s >= prev);
		if (c->mult && before > s) {
			if (before - s > worst)
				worst = before - s;
			extrapolated++;
		}
		if (mono() - t0 > 10000000 && c->tsc)
			assert_true(c->mult != 0); /* calibrated after its 2 ms span (10: slack for a preempted anchor) */
		prev = s;
	}
	if (c->tsc && !extrapolated)
		fail_msg("%s: no stamp came from the TSC", what);
	if (worst > EARLY_MAX_NS)
		fail_msg("%s: a stamp was %llu ns earlier than the clock read before it (limit %d)", what,
			 (unsigned long long)worst, EARLY_MAX_NS);
	print_message("%s: TSC %s, %llu stamps earlier than the clock read before them, by %llu ns at most\n",
		      what, c->tsc ? "used" : "not used", (unsigned long long)extrapolated,
		      (unsigned long long)worst);
}

static void test_clock_stamps_follow_the_monotonic_clock(void **state)
{
	struct stamp_clock c;

	(void)state;
	stamp_clock_init(&c);
	check_clock(&c, "tsc clock");
}

static void test_clock_plain_is_the_monotonic_clock(void **state)
{
	struct stamp_clock c;

	(void)state;
	stamp_clock_init_plain(&c);
	assert_false(c.tsc);
	check_clock(&c, "plain clock");
	assert_int_equal(c.mult, 0);
}

/* Stamps far apart (each beyond the resync interval) read the clock anew:
 * still never later than it. */
static void test_clock_sparse_stamps_resync(void **state)
{
	struct stamp_clock c;
	uint64_t prev = 0;

	(void)state;
	stamp_clock_init(&c);
	for (int i = 0; i < 200; i++) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 30000}; /* 30 us > STAMP_RESYNC_NS */
		uint64_t before, s, after;

		nanosleep(&ts, NULL);
		before = mono();
		s = stamp_clock_now(&c);
		after = mono();
		assert_true(s <= after);
		assert_true(s >= prev);
		assert_true(s >= before); /* a fresh anchor: the clock itself */
		prev = s;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_clock_stamps_follow_the_monotonic_clock),
		cmocka_unit_test(test_clock_plain_is_the_monotonic_clock),
		cmocka_unit_test(test_clock_sparse_stamps_resync),
	};

	return cmocka_run_group_tests_name("clock", tests, NULL, NULL);
}
