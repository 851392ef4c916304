/* wakeup.h - what wakeup.bpf.c and takt-trace share: events, counters,
 * histogram keys and the log2 histogram itself.
 *
 * One sample's journey from a publisher to the callback that handles it:
 *
 *   publish ─ notify ─ (sched_waking) ─ sched_wakeup ─ sched_switch in ─ [dispatch_begin] ─ take
 *   pub thread          pub thread        any CPU        subscriber thread   taking thread
 *
 * The kernel side joins these per (sub_port, publisher_id, seq) and emits one
 * EV_SAMPLE at the take, with every timestamp (CLOCK_MONOTONIC ns, 0 where the
 * stage did not happen). Everything here is fixed-size and laid out the same
 * for the BPF target and the host: the record file stores these bytes.
 *
 * A request of a service (libipc/service.c) is two such samples, the request
 * and each response, which its (client_id, request_id) joins:
 *
 *   request ─ [take] request_take ─ respond ─ [take] response_take
 *   client     server thread        server     client thread
 *
 * The kernel side keeps each request's two halves in tt_svc_sent (the
 * client's) and tt_svc_served (the server's) and emits one EV_REQUEST per
 * response the client takes, with the wake-up of each thread at its take.
 */
#ifndef TAKT_TRACE_WAKEUP_H
#define TAKT_TRACE_WAKEUP_H

#define TT_TOPIC_LEN 64 /* TAKT_NAME_MAX */
#define TT_ITEM_LEN 32
#define TT_COMM_LEN 16
#define TT_DOMAIN_LEN 64
#define TT_MAX_SLOTS 32 /* log2 buckets of microseconds: up to ~35 min */

enum tt_ev_type {
	EV_SAMPLE = 1,   /* a take, joined with its publish, notify, wakeup, on-CPU */
	EV_PUBLISH = 2,  /* record mode only */
	EV_DISPATCH = 3, /* record mode only: one item's run, emitted at its end */
	EV_NEW_PROC = 4, /* a process not yet classified hit a probe (domain mode) */
	EV_REQUEST = 5,  /* services and record mode: a response taken, joined with its request;
	                    or (takt-trace, at the end) a request never answered */
};

/* Every event starts with this; size covers the whole event. */
struct tt_hdr {
	__u16 type;
	__u16 size;
	__u32 cpu;
	__u64 ts; /* CLOCK_MONOTONIC ns */
	__u32 pid; /* tgid of the thread that hit the probe */
	__u32 tid;
};

/* How the subscriber thread stood when its notify came. */
enum tt_wake_state {
	WS_NONE = 0,     /* no notify: the subscriber was busy, took without parking */
	WS_SLEEPING = 1, /* off CPU: notify -> wakeup -> on-CPU all measured */
	WS_RUNNABLE = 2, /* woken already, waiting for a CPU: no wakeup stage */
	WS_RUNNING = 3,  /* still on CPU (not asleep yet): no wakeup, no on-CPU stage */
	WS_UNKNOWN = 4,  /* notify for a port whose parking thread was never seen, or whose
	                    wake cycle the take could not join: no stage known */
	WS_UNSEEN = 5,   /* off CPU asleep, but the kernel reported no wakeup (sched_waking,
	                    sched_wakeup) before it ran again: only the on-CPU stage */
};

struct tt_sample {
	struct tt_hdr h; /* ts = take; pid/tid = the taking thread */
	__u64 seq;
	__u64 publish_ns;  /* 0: the publish was not seen */
	__u64 notify_ns;   /* 0: no notify (the subscriber did not park) */
	__u64 waking_ns;   /* sched_waking: the waker started the wakeup */
	__u64 wakeup_ns;   /* sched_wakeup: the thread is runnable */
	__u64 oncpu_ns;    /* sched_switch: the woken thread got a CPU */
	__u64 callback_ns; /* dispatch_begin of the item that took it; 0 outside an executor */
	__u64 pub_id;      /* takt_pub_id: unique in the domain */
	__u32 sub_port;
	__u32 pub_pid;
	__u32 pub_tid;
	__u32 woken_tid;  /* the thread the notify was for (the one that parked) */
	__s32 task;       /* executor task that took it, -1: none */
	__u32 wake_state; /* enum tt_wake_state */
	__u32 wake_cpu;   /* CPU the woken thread ran on, when oncpu_ns */
	__u32 oncpu_inferred; /* 1: on-CPU from the thread's own probe (sched_switch missed) */
	char topic[TT_TOPIC_LEN];
	char item[TT_ITEM_LEN];
	char comm[TT_COMM_LEN];     /* taking thread */
	char pub_comm[TT_COMM_LEN];
};

/* How a thread stood when it took one sample: the wake-up part of a
 * tt_sample, for each end of a request (tt_request). */
struct tt_wake {
	__u64 notify_ns; /* 0: no notify (the thread took without parking: busy) */
	__u64 waking_ns;
	__u64 wakeup_ns;
	__u64 oncpu_ns;
	__u64 take_ns;   /* the sample's take; 0: no take seen (the join found none) */
	__u32 tid;       /* the thread notified (that parked), else the one that took */
	__u32 state;     /* enum tt_wake_state; WS_UNKNOWN when take_ns is 0 */
	__u32 cpu;       /* where it ran, when oncpu_ns */
	__u32 inferred;  /* 1: on-CPU from the thread's own probe */
};

enum tt_req_kind {
	REQ_RESPONSE = 1,   /* a client took a response to the request */
	REQ_UNANSWERED = 2, /* sent, and no response taken by the end of the run */
};

/* One response to a request, from its send to the client's take of it; or a
 * request never answered. 0 where a stage was not seen. */
struct tt_request {
	struct tt_hdr h;        /* ts = response_take, pid/tid = the thread that took it; unanswered:
	                           ts = send_ns, pid/tid = the sender */
	__u64 client_id;        /* the client's request publisher id */
	__u64 request_id;       /* that publisher's seq */
	__u64 send_ns;          /* the request's publish, just before its push */
	__u64 server_take_ns;   /* request_take */
	__u64 respond_ns;       /* the respond that sent this response (unanswered: the last one) */
	__u32 kind;             /* enum tt_req_kind */
	__u32 response_n;       /* 1: the first response (the round trip), 2..: the next ones of a
	                           stream; 0: unknown (the send was not seen) or unanswered */
	__u32 n_responds;       /* the server's responds to the request so far */
	__u32 client_pid, client_tid; /* that sent it */
	__u32 server_pid, server_tid; /* that took it */
	__u32 pad;
	struct tt_wake server;  /* the server thread, at its take of the request */
	struct tt_wake client;  /* the client thread, at its take of this response */
	char topic[TT_TOPIC_LEN]; /* the request topic "@/S/q"; the response topic when
	                             neither the send nor the server's take was seen */
	char client_comm[TT_COMM_LEN];
	char server_comm[TT_COMM_LEN];
};

#define TT_SVC_REQS 8192   /* requests remembered, each half (a power of two) */
#define TT_SVC_RESPONDS 8  /* respond times remembered per request */

/* A request as its client sent it (map svc_sent, slot tt_svc_slot). */
struct tt_svc_sent {
	__u64 request_id; /* written last; 0 while being written */
	__u64 client_id;
	__u64 send_ns;
	__u32 pid, tid;
	__u32 responses;  /* response takes joined to it */
	__u32 pad;
	char topic[TT_TOPIC_LEN]; /* the request topic */
	char comm[TT_COMM_LEN];
};

/* The same request at its server (map svc_served, the same slot). */
struct tt_svc_served {
	__u64 request_id; /* written last */
	__u64 client_id;
	__u64 take_ns;
	__u64 respond_ns[TT_SVC_RESPONDS]; /* the n-th respond (from 0) at [n % TT_SVC_RESPONDS] */
	__u32 n_responds;
	__u32 pid, tid;
	__u32 pad;
	struct tt_wake wake;
	char topic[TT_TOPIC_LEN];
	char comm[TT_COMM_LEN];
};

/* The client's half of a request into r; then the server's (a response
 * in the kernel, a request never answered in takt-trace). */
static inline void tt_request_sent(struct tt_request *r, const struct tt_svc_sent *e)
{
	r->send_ns = e->send_ns;
	r->client_pid = e->pid;
	r->client_tid = e->tid;
	__builtin_memcpy(r->client_comm, e->comm, TT_COMM_LEN);
	__builtin_memcpy(r->topic, e->topic, TT_TOPIC_LEN);
}

static inline void tt_request_served(struct tt_request *r, const struct tt_svc_served *e)
{
	r->server_take_ns = e->take_ns;
	r->server_pid = e->pid;
	r->server_tid = e->tid;
	r->n_responds = e->n_responds;
	r->server = e->wake;
	if (!r->topic[0])
		__builtin_memcpy(r->topic, e->topic, TT_TOPIC_LEN);
	__builtin_memcpy(r->server_comm, e->comm, TT_COMM_LEN);
}

/* A client's requests take consecutive slots; clients are spread by their
 * id's high bits (the broker's ids are a time << 24 | a counter). */
static inline __u32 tt_svc_slot(__u64 client_id, __u64 request_id)
{
	return ((__u32)((client_id * 0x9E3779B97F4A7C15ull) >> 40) + (__u32)request_id) & (TT_SVC_REQS - 1);
}

struct tt_publish {
	struct tt_hdr h;
	__u64 seq;
	__u64 pub_id;
	char topic[TT_TOPIC_LEN];
	char comm[TT_COMM_LEN];
};

struct tt_dispatch {
	struct tt_hdr h; /* ts = end */
	__u64 begin_ns;
	__s32 task;
	__s32 rc;
	char item[TT_ITEM_LEN];
	char comm[TT_COMM_LEN];
};

/* Counters, one array entry whose fields bpftool prints by name. */
struct tt_counters {
	__u64 publish;
	__u64 notify;
	__u64 park;
	__u64 unpark;
	__u64 take;
	__u64 dispatch;
	__u64 wakeups;            /* notified threads seen waking up */
	__u64 wakeups_no_sample;  /* parked threads woken with no notify pending */
	__u64 notify_no_thread;   /* notify for a port whose parking thread is unknown */
	__u64 take_no_publish;    /* takes whose publish was not seen */
	__u64 dropped_events;     /* ring buffer full: events lost */
	__u64 missed_deadlines;   /* publish -> callback start over --deadline */
	__u64 unknown_proc;       /* probes hit by processes outside the domain */
	__u64 oncpu_inferred;     /* wake cycles whose on-CPU came from the thread's probe */
	__u64 wakeups_unseen;     /* asleep wake cycles that ran again with no wakeup reported */
	/* services and record mode only: */
	__u64 requests;           /* requests sent (reached the server's queue) */
	__u64 request_takes;
	__u64 responds;
	__u64 response_takes;
	__u64 requests_evicted;   /* unanswered requests whose slot another one took */
	__u64 responses_no_request; /* response takes whose request's send is not remembered */
};

enum tt_stage {
	ST_NOTIFY_WAKEUP = 0,
	ST_WAKEUP_ONCPU = 1,
	ST_ONCPU_TAKE = 2,   /* on-CPU -> callback start (take, or dispatch_begin in an executor) */
	ST_PUBLISH_TAKE = 3, /* end to end: publish -> take */
	ST_CALLBACK = 4,     /* task only: dispatch_begin -> dispatch_end */
	ST_NR = 5,
};

enum tt_hist_by {
	BY_TOPIC = 0,
	BY_TASK = 1,
};

struct tt_hist_key {
	__u32 by;   /* enum tt_hist_by */
	__u32 pid;  /* BY_TASK: the executor's process; else 0 */
	__s32 task; /* BY_TASK: task id; else -1 */
	__u32 pad;
	char name[TT_TOPIC_LEN]; /* topic, or the task's item name */
};

/* One stage's log2 histogram. */
struct tt_stage_hist {
	__u64 slots[TT_MAX_SLOTS]; /* slot k: [2^k, 2^(k+1)) us; slot 0 also holds 0 */
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
};

static inline __u32 tt_log2_u32(__u32 v)
{
	__u32 shift, r;

	r = (__u32)(v > 0xFFFF) << 4;
	v >>= r;
	shift = (__u32)(v > 0xFF) << 3;
	v >>= shift;
	r |= shift;
	shift = (__u32)(v > 0xF) << 2;
	v >>= shift;
	r |= shift;
	shift = (__u32)(v > 0x3) << 1;
	v >>= shift;
	r |= shift;
	r |= (v >> 1);
	return r;
}

static inline __u32 tt_log2_u64(__u64 v)
{
	__u32 hi = (__u32)(v >> 32);

	return hi ? tt_log2_u32(hi) + 32 : tt_log2_u32((__u32)v);
}

/* Counts ns in its microsecond log2 slot: the kernel for its histograms,
 * takt-trace for those it builds from events (services). */
static inline void tt_stage_hist_add(struct tt_stage_hist *s, __u64 ns)
{
	__u32 slot = tt_log2_u64(ns / 1000);

	if (slot >= TT_MAX_SLOTS)
		slot = TT_MAX_SLOTS - 1;
	s->slots[slot]++;
	s->count++;
	s->total_ns += ns;
	if (ns > s->max_ns)
		s->max_ns = ns;
}

/* Every stage of one topic or task: one map lookup per take. */
struct tt_hist {
	struct tt_stage_hist stage[ST_NR]; /* enum tt_stage */
};

/* Pinned beside the maps, so the scripts can tell whose pins they read. */
struct tt_info {
	__u32 tracer_pid;
	__u32 filter_pid;
	__u64 start_ns;
	char domain[TT_DOMAIN_LEN]; /* empty: every domain */
	char topic[TT_TOPIC_LEN];   /* empty: every topic */
};

#endif
