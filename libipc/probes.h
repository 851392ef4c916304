/* probes.h - USDT probes (provider "takt") read by takt-trace.
 *
 * sys/sdt.h probes are a nop instruction until a tracer attaches; their
 * arguments are only evaluated then. The (publisher id, seq) pair travels
 * with the sample, so a tracer joins one sample's publish, notify, the
 * wake-up of the thread that parked for it and its take.
 *
 *   node_open (domain)                             a process attaches (before connecting)
 *   publish (topic, publisher_id, seq)             before the pushes
 *   notify  (sub_port, publisher_id, seq)          only when the eventfd is written
 *   park    (sub_port)                             a subscriber raises its parked flag
 *   unpark  (sub_port)                             woken (takt_sub_wait) or not needed
 *   take    (topic, sub_port, publisher_id, seq)   a sample handed to the caller
 *
 * Request/response (service.c) names each request by (client_id,
 * request_id), which are its sample's (publisher_id, seq) on the service's
 * request topic:
 *   request       (client_id, request_id)          a client sent it (after the push: never
 *                                                  for a send that is refused)
 *   request_take  (client_id, request_id)          the server takes it
 *   respond       (client_id, request_id)          the server sends a response to it (before the push)
 *   response_take (client_id, request_id)          the client takes a response to it
 *
 * libtakt-exec adds (same provider):
 *   exec_park       (n_tasks)                      the dispatch thread goes to epoll_wait
 *   exec_wake       (n_events)                     ... and returns from it
 *   dispatch_begin  (task, item)                   an item starts, on the thread running it
 *   dispatch_end    (task, item, rc)               ... and ends
 */
#ifndef TAKT_PROBES_H
#define TAKT_PROBES_H

#if defined(__has_include)
#if __has_include(<sys/sdt.h>)
#include <sys/sdt.h>
#define TAKT_HAVE_SDT 1
#endif
#endif

#ifdef TAKT_HAVE_SDT
#define TAKT_PROBE1(n, a) DTRACE_PROBE1(takt, n, a)
#define TAKT_PROBE2(n, a, b) DTRACE_PROBE2(takt, n, a, b)
#define TAKT_PROBE3(n, a, b, c) DTRACE_PROBE3(takt, n, a, b, c)
#define TAKT_PROBE4(n, a, b, c, d) DTRACE_PROBE4(takt, n, a, b, c, d)
#else
#define TAKT_PROBE1(n, a) ((void)0)
#define TAKT_PROBE2(n, a, b) ((void)0)
#define TAKT_PROBE3(n, a, b, c) ((void)0)
#define TAKT_PROBE4(n, a, b, c, d) ((void)0)
#endif

#endif
