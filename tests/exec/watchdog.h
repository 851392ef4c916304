/* watchdog.h - executor tests fail with a message instead of hanging: a
 * run that never ends (say, a graph whose pending count went wrong after a
 * double dispatch) trips the alarm. SIGALRM is not one the executor blocks. */
#ifndef TAKT_TEST_WATCHDOG_H
#define TAKT_TEST_WATCHDOG_H

#include <signal.h>
#include <unistd.h>

static void watchdog_fire(int sig)
{
	static const char msg[] = "watchdog: a test took over 120 s (an executor run that never ended)\n";

	(void)sig;
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* exiting anyway */
	}
	_exit(1);
}

static inline void watchdog_arm(unsigned seconds)
{
	signal(SIGALRM, watchdog_fire);
	alarm(seconds);
}

#endif
