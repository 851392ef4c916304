/* fault.h - fault points for tests.
 *
 * A build with -DTAKT_FAULTS=ON calls takt__fault_hook (if a test set it)
 * at each TAKT_FAULT point with the point's name, so a test can stall or
 * kill a real process at an exact instruction of the library: the windows
 * between two stores that no interposed libc call can reach. In every other
 * build a point compiles to nothing. The points are listed in
 * docs/architecture.md ("Fault points").
 */
#ifndef TAKT_FAULT_H
#define TAKT_FAULT_H

#ifdef TAKT_FAULTS
extern void (*takt__fault_hook)(const char *point);
#define TAKT_FAULT(point)                                                                          \
	do {                                                                                       \
		if (takt__fault_hook)                                                              \
			takt__fault_hook(point);                                                   \
	} while (0)
#else
#define TAKT_FAULT(point) do {} while (0)
#endif

#endif
