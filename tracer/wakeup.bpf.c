// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* wakeup.bpf.c - the kernel side of takt-trace: where the time between a
 * publish and the callback that handles it goes.
 *
 * USDT probes of libtakt-ipc and libtakt-exec (provider "takt") and the
 * scheduler's tracepoints meet in a few maps:
 *
 *   park(sub_port)            parked_by[sub_port] = this thread; it is PARKED
 *   publish(topic,pub,seq)    pub_ring[pub][seq] = publish time and thread
 *   notify(sub_port,pub,seq)  notes[sub_port] = notify time, and the thread
 *                             parked_by names, which opens a wake cycle,
 *                             classified by how it stands right now (asleep,
 *                             runnable, still on CPU)
 *   sched_waking/wakeup(p)    an open, asleep cycle of p gets its wakeup times
 *   sched_switch(.., next)    next's open cycle gets its on-CPU time and
 *                             closes (kept in next's state for the take); an
 *                             asleep cycle that got no sched_waking and
 *                             sched_wakeup closes "unseen" (below)
 *   dispatch_begin/end        the executor item a thread runs (callback start)
 *   take(topic,port,pub,seq)  all of the above for this sample, joined, as one
 *                             EV_SAMPLE in the ring buffer, and into the log2
 *                             histograms per topic and per task
 *
 * Services (services and record mode, svc_join): a request is a sample on
 * "@/S/q" (publisher = client id, seq = request id), a response one on
 * "@/S/r/<client id>"; four more probes name the request:
 *
 *   request(client,req)       svc_sent[slot] = its publish time and topic
 *                             (pub_ring) and the client thread
 *   take of "@/..."           svc_takes[tid] = the sample's wake-up, for:
 *   request_take(client,req)  svc_served[slot] = take time, server thread,
 *                             its wake-up
 *   respond(client,req)       svc_served[slot].respond_ns[n] = now
 *   response_take(client,req) both halves, the respond of this response
 *                             and the client thread's wake-up: EV_REQUEST
 *
 * The probes sit on takt's fast path, so the joins use arrays indexed by
 * port and seq (a store, no hashing, no allocation) and one histogram
 * lookup per topic and per task; an entry is trusted only when the seq
 * stored in it matches. A subscriber takes what one park brought before it
 * parks again, so one note per subscriber port is enough.
 *
 * Several notifies may reach one thread before it runs (it waits on many
 * subscribers): they share its cycle. The scheduler programs do one hash
 * lookup per thread involved and return at once for threads that never
 * parked, which is the in-kernel filter for everything else on the machine.
 * USDT programs are attached to the library file for every process (pid -1);
 * with a domain, traced() keeps only the domain's processes (the tgids map,
 * filled by user space from the broker's process table and by the
 * proto_connect uprobe, which sees a process connect to its broker before it
 * can hit any other probe).
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>

#include "wakeup.h"

#define TASK_RUNNING 0
#define PORTS 8192     /* subscriber ports (index masked: a power of two) */
#define PUBS 512       /* publisher ports */
#define PUB_SEQS 128   /* publishes of one publisher remembered for its takes */

/* Settings, fixed at load time by takt-trace (libbpf-tools habit). */
const volatile bool filter_domain = false;
const volatile char domain_name[TT_DOMAIN_LEN] = {};
const volatile bool filter_topic = false;
const volatile char topic_name[TT_TOPIC_LEN] = {};
const volatile __u32 filter_pid = 0;
const volatile __u64 deadline_ns = 0;
const volatile bool emit_samples = true;
const volatile bool emit_raw = false; /* EV_PUBLISH and EV_DISPATCH, for record */
const volatile bool svc_join = false; /* services and record: join requests, emit EV_REQUEST */
const volatile __u64 wakeup_bytes = 1 << 20; /* wake the reader past this much data */

/* A thread's state word: flags | wake state of the open cycle << 8 | cycle
 * number << 16. The publisher's notify, the scheduler's wakeup on a third
 * CPU and the thread's own switch-in race for it, so every change that
 * depends on what it held is one compare-and-swap (S0); the thread's own
 * flags (PARKED, IN_DISPATCH) change with atomic and/or. */
#define TF_ONCPU 1u
#define TF_SLEEPING 2u    /* switched out in a sleeping state, not woken since */
#define TF_PARKED 4u      /* between park/exec_park and unpark/exec_wake/take */
#define TF_CYC_OPEN 8u    /* notified, waiting for its on-CPU */
#define TF_IN_DISPATCH 16u
#define TF_WOKEN 32u      /* the open cycle's wakeup began (sched_waking) */
/* A wakeup began while the thread was still on a CPU, on its way to sleep:
 * the waker may finish it only after the thread switched out (ttwu waits
 * for on_cpu), so that switch-out, in a sleeping state as the tracepoint
 * sees it, is not a sleep nobody has woken yet: without this the thread's
 * next notify would open a cycle as asleep whose wakeup had already gone
 * by. It ends with that switch-out, or with the wakeup's sched_wakeup when
 * the thread never left its CPU for it (ttwu found it still queued, between
 * set_current_state and schedule, or it woke itself): then no switch-out is
 * owed to this wakeup, and a later real sleep must count as one (else the
 * next notify took a sleeping thread for runnable). The "asleep" samples
 * without a wakeup stage that CI showed came, when traced with ftrace
 * beside, from wakeups the kernel never reported (thread_oncpu, "unseen"). */
#define TF_WAKE_INFLIGHT 64u
#define ST_FLAGS(st) ((__u32)(st) & 0xff)
#define ST_WAKE(st) ((__u32)((st) >> 8) & 0xff)
#define ST_CYC(st) ((st) >> 16)
#define CAS_TRIES 8

struct thread_state {
	__u64 st;          /* see above */
	__u64 waking_ns;   /* of cycle waking_cyc */
	__u64 waking_cyc;
	__u64 wakeup_ns;   /* of cycle wakeup_cyc */
	__u64 wakeup_cyc;
	/* The last closed cycle, for the take: written before closed_cyc. */
	__u64 closed_cyc;
	__u64 closed_waking_ns, closed_wakeup_ns, closed_oncpu_ns;
	__u32 closed_cpu;
	__u32 closed_inferred;
	/* The closed cycle was opened asleep, yet no sched_waking and
	 * sched_wakeup of it were seen before its on-CPU: the kernel does not
	 * hand every wakeup to BPF (docs/tracing.md, Limits). */
	__u32 closed_unseen;
	__u64 cb_begin_ns; /* dispatch_begin of the item running now */
	__u64 item_ptr;    /* its name, in the process's memory */
	__u32 tgid;
	__s32 task;
};

struct parker {
	__u32 tid;
	__u32 tgid;
};

/* The last notify of a subscriber port. */
struct note {
	__u64 seq;         /* written last; 0 while being written or consumed */
	__u64 notify_ns;
	__u64 cyc;
	__u64 pub_id;
	__u32 woken_tid;
	__u32 wake_state;
	__u32 pub_pid;
	__u32 pub_tid;
};

struct pub_slot {
	__u64 seq;         /* written last */
	__u64 ts;
	__u64 pub_id;      /* ids share slots modulo PUBS: the join checks it */
	__u64 topic;       /* the publisher's topic, in its process's memory */
	__u32 pid;
	__u32 tid;
};

struct pub_info {
	__u32 pid;
	__u32 tid;
	char comm[TT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* takt-trace may resize */
} events SEC(".maps");

/* Counters and histograms are per CPU: the probes only add, without atomic
 * instructions or a cache line bouncing between CPUs; readers sum the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 2048);
	__type(key, struct tt_hist_key);
	__type(value, struct tt_hist);
} hists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_info);
} info SEC(".maps");

/* tgid -> 1 in the domain, 0 known to be outside it (domain mode only). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} tgids SEC(".maps");

/* tgids already reported to user space as unknown (once each). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u8);
} unknown SEC(".maps");

/* Threads that parked or ran an item; removed when they exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct thread_state);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTS);
	__type(key, __u32);
	__type(value, struct parker);
} parked_by SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PORTS);
	__type(key, __u32);
	__type(value, struct note);
} notes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PUBS * PUB_SEQS);
	__type(key, __u32);
	__type(value, struct pub_slot);
} pub_ring SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PUBS);
	__type(key, __u32);
	__type(value, struct pub_info);
} pub_infos SEC(".maps");

/* Room to build an event bigger than the stack allows. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_sample);
} scratch SEC(".maps");

/* A thread's last take of a service topic: the request_take or
 * response_take probe that follows it on that thread joins its wake-up. */
struct svc_take {
	__u64 seq;         /* 0: consumed */
	__u64 pub_id;
	__u64 publish_ns;
	__u64 rsp_client;  /* the client a response topic names; 0: a request topic */
	struct tt_wake wake;
	char topic[TT_TOPIC_LEN];
};

/* Both halves of a request, in the slot tt_svc_slot names (wakeup.h): a
 * fixed size, so a request's slot goes to a later one; an unanswered one
 * lost so is counted (requests_evicted). User space reads svc_sent at the
 * end for the requests never answered. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_SVC_REQS);
	__type(key, __u32);
	__type(value, struct tt_svc_sent);
} svc_sent SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TT_SVC_REQS);
	__type(key, __u32);
	__type(value, struct tt_svc_served);
} svc_served SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct svc_take);
} svc_takes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tt_request);
} svc_scratch SEC(".maps");

static const struct tt_hist zero_hist;
static const struct thread_state zero_thread;
static const struct svc_take zero_take;

#define COUNT(field)                                                                               \
	do {                                                                                       \
		__u32 zero_ = 0;                                                                   \
		struct tt_counters *c_ = bpf_map_lookup_elem(&counters, &zero_);                   \
		if (c_)                                                                            \
			c_->field++;                                                               \
	} while (0)

/* Task state across kernels (runqlat's CO-RE idiom). */
struct task_struct___o {
	volatile long int state;
} __attribute__((preserve_access_index));

struct task_struct___x {
	unsigned int __state;
} __attribute__((preserve_access_index));

static __always_inline __s64 task_state(void *task)
{
	struct task_struct___x *t = task;

	if (bpf_core_field_exists(t->__state))
		return BPF_CORE_READ(t, __state);
	return BPF_CORE_READ((struct task_struct___o *)task, state);
}

/* An event's header: of the current thread (id: bpf_get_current_pid_tgid),
 * on this CPU. */
static __always_inline void hdr_fill(struct tt_hdr *h, __u16 type, __u16 size, __u64 id, __u64 ts)
{
	h->type = type;
	h->size = size;
	h->cpu = bpf_get_smp_processor_id();
	h->ts = ts;
	h->pid = id >> 32;
	h->tid = (__u32)id;
}

/* Whether events of this process are wanted; reports unknown ones once. */
static __always_inline bool traced(__u32 tgid)
{
	struct tt_hdr *e;
	__u8 *member, one = 1;

	if (!filter_domain)
		return true;
	member = bpf_map_lookup_elem(&tgids, &tgid);
	if (member)
		return *member;
	COUNT(unknown_proc);
	if (bpf_map_update_elem(&unknown, &tgid, &one, BPF_NOEXIST) == 0) {
		e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (e) {
			hdr_fill(e, EV_NEW_PROC, sizeof(*e), bpf_get_current_pid_tgid(), bpf_ktime_get_ns());
			bpf_ringbuf_submit(e, 0);
		}
	}
	return false;
}

/* Events do not wake the reader one by one (a wakeup per sample would cost
 * the traced system a context switch each): it polls every 50 ms, and is
 * woken only when the ring buffer fills past wakeup_bytes. */
static __always_inline __u64 rb_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									 : BPF_RB_NO_WAKEUP;
}

static __always_inline bool str_eq(const char *a, const volatile char *b, int n)
{
	for (int i = 0; i < n; i++) {
		if (a[i] != b[i])
			return false;
		if (!a[i])
			return true;
	}
	return true;
}

static __always_inline __u64 st_read(struct thread_state *t)
{
	return *(volatile __u64 *)&t->st;
}

static __always_inline struct thread_state *thread_get(__u32 tid, __u32 tgid)
{
	struct thread_state *t = bpf_map_lookup_elem(&threads, &tid);

	if (t)
		return t;
	/* A thread is first seen running one of our probes: it is on a CPU. */
	bpf_map_update_elem(&threads, &tid, &zero_thread, BPF_NOEXIST);
	t = bpf_map_lookup_elem(&threads, &tid);
	if (t && !t->tgid) {
		t->tgid = tgid;
		t->task = -1;
		__sync_fetch_and_or(&t->st, TF_ONCPU);
	}
	return t;
}

static __always_inline struct tt_hist *hist_get(__u32 by, __u32 pid, __s32 task, const char *name)
{
	struct tt_hist_key k = {.by = by, .pid = pid, .task = task};
	struct tt_hist *h;

	__builtin_memcpy(k.name, name, TT_TOPIC_LEN);
	h = bpf_map_lookup_elem(&hists, &k);
	if (h)
		return h;
	bpf_map_update_elem(&hists, &k, &zero_hist, BPF_NOEXIST);
	return bpf_map_lookup_elem(&hists, &k);
}

static __always_inline void hist_add(struct tt_hist *h, __u32 stage, __u64 ns)
{
	if (stage < ST_NR)
		tt_stage_hist_add(&h->stage[stage], ns);
}

/* t (thread tid) is on a CPU: an open cycle gets its on-CPU time and is
 * closed for the take (S0). From sched_switch; and from any probe the thread
 * itself hits (inferred), because the scheduler tracepoint does not report
 * every switch-in on every kernel (seen on a paravirtualised one): a thread
 * running its own code is on a CPU, whatever the tracepoint said.
 *
 * An asleep cycle is closed with its wakeup only when both tracepoints of
 * it came (on_sched_waking, on_sched_wakeup). Their stamps were written
 * before the thread could be put on a run queue, and this runs after it got
 * a CPU (the rq lock, or the wakelist hand-over, orders the two); a cycle
 * closing without them is "unseen": the thread woke, the kernel did not
 * tell, and a sample must not say "asleep" without the wakeup it measures. */
static __always_inline void thread_oncpu(struct thread_state *t, bool inferred)
{
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 old = st_read(t),
		      nw = (old | TF_ONCPU) & ~(__u64)(TF_SLEEPING | TF_CYC_OPEN | TF_WOKEN | TF_WAKE_INFLIGHT);
		__u64 cyc = ST_CYC(old);
		bool unseen;

		if (nw == old)
			return;
		if (__sync_val_compare_and_swap(&t->st, old, nw) != old)
			continue;
		if (ST_FLAGS(old) & TF_CYC_OPEN) {
			unseen = ST_WAKE(old) == WS_SLEEPING && (t->waking_cyc != cyc || t->wakeup_cyc != cyc);
			t->closed_cyc = 0;
			t->closed_waking_ns = !unseen && t->waking_cyc == cyc ? t->waking_ns : 0;
			t->closed_wakeup_ns = !unseen && t->wakeup_cyc == cyc ? t->wakeup_ns : 0;
			t->closed_oncpu_ns = bpf_ktime_get_ns();
			t->closed_cpu = bpf_get_smp_processor_id();
			t->closed_inferred = inferred;
			t->closed_unseen = unseen;
			t->closed_cyc = cyc;
			if (inferred)
				COUNT(oncpu_inferred);
			if (unseen)
				COUNT(wakeups_unseen);
		}
		return;
	}
}

/* The current thread's state, marked on a CPU (it runs this probe). */
static __always_inline struct thread_state *thread_self(__u64 id, bool create)
{
	__u32 tid = (__u32)id;
	struct thread_state *t = create ? thread_get(tid, id >> 32) : bpf_map_lookup_elem(&threads, &tid);

	if (t)
		thread_oncpu(t, true);
	return t;
}

/* ---- libtakt-ipc ------------------------------------------------------- */

/* A process of the domain, or not: membership wins (a process may attach
 * to several domains). */
static __always_inline void classify(const char *domain)
{
	char name[TT_DOMAIN_LEN];
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 yes = 1, no = 0;

	if (!filter_domain)
		return;
	if (bpf_probe_read_user_str(name, sizeof(name), domain) < 0)
		return;
	if (str_eq(name, domain_name, TT_DOMAIN_LEN))
		bpf_map_update_elem(&tgids, &tgid, &yes, BPF_ANY);
	else
		bpf_map_update_elem(&tgids, &tgid, &no, BPF_NOEXIST);
}

/* libtakt-ipc's internal proto_connect(domain, ...): every process connects
 * to its domain's broker before it can hit any other probe. */
SEC("uprobe")
int BPF_KPROBE(on_connect, const char *domain) /* BPF_UPROBE: libbpf >= 1.2 */
{
	classify(domain);
	return 0;
}

/* The same from a node_open(domain) USDT probe, where the library has one
 * (it survives stripping, the internal symbol does not). */
SEC("usdt")
int BPF_USDT(on_node_open, const char *domain)
{
	classify(domain);
	return 0;
}

static __always_inline void emit_publish(const char *topic, __u64 pub_id, __u64 seq, __u64 id, __u64 ts)
{
	struct tt_publish *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		COUNT(dropped_events);
		return;
	}
	bpf_probe_read_user_str(e->topic, sizeof(e->topic), topic);
	if ((filter_topic && !str_eq(e->topic, topic_name, TT_TOPIC_LEN)) ||
	    (filter_pid && filter_pid != id >> 32)) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	hdr_fill(&e->h, EV_PUBLISH, sizeof(*e), id, ts);
	e->seq = seq;
	e->pub_id = pub_id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
}

SEC("usdt")
int BPF_USDT(on_publish, const char *topic, __u64 pub_id, __u64 seq)
{
	__u64 id = bpf_get_current_pid_tgid(), ts;
	__u32 slot = (__u32)(pub_id % PUBS) * PUB_SEQS + (__u32)(seq % PUB_SEQS), pi_key = (__u32)(pub_id % PUBS);
	struct pub_slot *ps;
	struct pub_info *pi;

	if (!traced(id >> 32))
		return 0;
	COUNT(publish);
	ts = bpf_ktime_get_ns();
	ps = bpf_map_lookup_elem(&pub_ring, &slot);
	if (ps) {
		ps->seq = 0;
		ps->ts = ts;
		ps->pub_id = pub_id;
		ps->topic = (__u64)topic;
		ps->pid = id >> 32;
		ps->tid = (__u32)id;
		ps->seq = seq;
	}
	pi = bpf_map_lookup_elem(&pub_infos, &pi_key);
	if (pi && (pi->pid != id >> 32 || pi->tid != (__u32)id)) {
		pi->pid = id >> 32;
		pi->tid = (__u32)id;
		bpf_get_current_comm(pi->comm, sizeof(pi->comm));
	}
	if (emit_raw)
		emit_publish(topic, pub_id, seq, id, ts);
	return 0;
}

/* Opens a wake cycle on the parked thread t, or joins the one open (S0:
 * the state it is classified by is the one the CAS swapped). */
static __always_inline void notify_cycle(struct thread_state *t, struct note *n)
{
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 old = st_read(t), nw;
		__u32 f = ST_FLAGS(old), ws;

		if (f & TF_CYC_OPEN) {
			n->cyc = ST_CYC(old);
			/* Woken already by the notify that opened the cycle: for
			 * this sample the thread was runnable, only its on-CPU counts. */
			ws = ST_WAKE(old);
			n->wake_state = ws == WS_SLEEPING && (f & TF_WOKEN) ? WS_RUNNABLE : ws;
			return;
		}
		if (f & TF_ONCPU) {
			n->cyc = 0;
			n->wake_state = WS_RUNNING; /* still on its way to sleep: nothing to wake */
			return;
		}
		/* Asleep, or woken by something else and waiting for a CPU. */
		ws = f & TF_SLEEPING ? WS_SLEEPING : WS_RUNNABLE;
		nw = (ST_CYC(old) + 1) << 16 | (__u64)ws << 8 | f | TF_CYC_OPEN;
		if (__sync_val_compare_and_swap(&t->st, old, nw) == old) {
			n->cyc = ST_CYC(nw);
			n->wake_state = ws;
			return;
		}
	}
	n->cyc = 0;
	n->wake_state = WS_UNKNOWN;
}

SEC("usdt")
int BPF_USDT(on_notify, __u32 sub_port, __u64 pub_id, __u64 seq)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 port = sub_port % PORTS;
	struct thread_state *t = NULL;
	struct parker *p;
	struct note *n;

	if (!traced(id >> 32))
		return 0;
	COUNT(notify);
	n = bpf_map_lookup_elem(&notes, &port);
	if (!n)
		return 0;
	n->seq = 0;
	n->notify_ns = bpf_ktime_get_ns();
	n->pub_id = pub_id;
	n->pub_pid = id >> 32;
	n->pub_tid = (__u32)id;
	p = bpf_map_lookup_elem(&parked_by, &port);
	if (p && p->tid)
		t = bpf_map_lookup_elem(&threads, &p->tid);
	if (t) {
		n->woken_tid = p->tid;
		notify_cycle(t, n);
	} else {
		n->woken_tid = 0;
		n->cyc = 0;
		n->wake_state = WS_UNKNOWN;
		COUNT(notify_no_thread);
	}
	n->seq = seq;
	return 0;
}

SEC("usdt")
int BPF_USDT(on_park, __u32 sub_port)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 port = sub_port % PORTS;
	struct thread_state *t;
	struct parker *p;

	if (!traced(id >> 32))
		return 0;
	COUNT(park);
	p = bpf_map_lookup_elem(&parked_by, &port);
	if (p && p->tid != (__u32)id) {
		p->tid = (__u32)id;
		p->tgid = id >> 32;
	}
	t = thread_self(id, true);
	if (t)
		__sync_fetch_and_or(&t->st, TF_PARKED);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_unpark, __u32 sub_port)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct thread_state *t;

	if (!traced(id >> 32))
		return 0;
	COUNT(unpark);
	t = thread_self(id, false);
	if (t)
		__sync_fetch_and_and(&t->st, ~(__u64)TF_PARKED);
	return 0;
}

/* The publish of (pub_id, seq), if still remembered. */
static __always_inline void take_publish(struct tt_sample *s)
{
	__u32 slot = (__u32)(s->pub_id % PUBS) * PUB_SEQS + (__u32)(s->seq % PUB_SEQS),
	      pi_key = (__u32)(s->pub_id % PUBS);
	struct pub_slot *ps = bpf_map_lookup_elem(&pub_ring, &slot);
	struct pub_info *pi;

	if (!ps || ps->seq != s->seq || ps->pub_id != s->pub_id) {
		COUNT(take_no_publish);
		return;
	}
	s->publish_ns = ps->ts;
	s->pub_pid = ps->pid;
	s->pub_tid = ps->tid;
	pi = bpf_map_lookup_elem(&pub_infos, &pi_key);
	if (pi && pi->tid == ps->tid)
		__builtin_memcpy(s->pub_comm, pi->comm, TT_COMM_LEN);
}

/* The notify of this sample and the wake cycle it opened or joined. */
static __always_inline void take_note(struct tt_sample *s)
{
	__u32 port = s->sub_port % PORTS;
	struct note *n = bpf_map_lookup_elem(&notes, &port);
	struct thread_state *wt;

	if (!n || n->seq != s->seq || n->pub_id != s->pub_id || !n->notify_ns)
		return;
	s->notify_ns = n->notify_ns;
	s->woken_tid = n->woken_tid;
	s->wake_state = n->wake_state;
	if (!s->pub_pid) {
		s->pub_pid = n->pub_pid;
		s->pub_tid = n->pub_tid;
	}
	n->notify_ns = 0; /* consumed */
	if (n->wake_state != WS_SLEEPING && n->wake_state != WS_RUNNABLE)
		return;
	wt = bpf_map_lookup_elem(&threads, &s->woken_tid);
	if (!wt || wt->closed_cyc != n->cyc) {
		/* Its cycle closed again since (or never): stages unknown,
		 * and "asleep" would promise them. */
		if (n->wake_state == WS_SLEEPING)
			s->wake_state = WS_UNKNOWN;
		return;
	}
	if (n->wake_state == WS_SLEEPING && wt->closed_unseen) {
		s->wake_state = WS_UNSEEN;
	} else if (n->wake_state == WS_SLEEPING) {
		s->waking_ns = wt->closed_waking_ns;
		s->wakeup_ns = wt->closed_wakeup_ns;
	}
	s->oncpu_ns = wt->closed_oncpu_ns;
	s->wake_cpu = wt->closed_cpu;
	s->oncpu_inferred = wt->closed_inferred;
}

/* The taking thread: on a CPU, no longer parked, maybe inside an item. */
static __always_inline void take_thread(struct tt_sample *s)
{
	__u32 tid = s->h.tid;
	struct thread_state *t = bpf_map_lookup_elem(&threads, &tid);

	if (!t)
		return;
	thread_oncpu(t, true);
	__sync_fetch_and_and(&t->st, ~(__u64)TF_PARKED);
	if (ST_FLAGS(st_read(t)) & TF_IN_DISPATCH) {
		s->callback_ns = t->cb_begin_ns;
		s->task = t->task;
		bpf_probe_read_user_str(s->item, sizeof(s->item), (const void *)t->item_ptr);
	}
}

static __always_inline void hists_add(struct tt_hist *h, const struct tt_sample *s, __u64 cb)
{
	if (s->notify_ns && s->wakeup_ns >= s->notify_ns)
		hist_add(h, ST_NOTIFY_WAKEUP, s->wakeup_ns - s->notify_ns);
	if (s->wakeup_ns && s->oncpu_ns >= s->wakeup_ns)
		hist_add(h, ST_WAKEUP_ONCPU, s->oncpu_ns - s->wakeup_ns);
	if (s->oncpu_ns && cb >= s->oncpu_ns)
		hist_add(h, ST_ONCPU_TAKE, cb - s->oncpu_ns);
	if (s->publish_ns && s->h.ts >= s->publish_ns)
		hist_add(h, ST_PUBLISH_TAKE, s->h.ts - s->publish_ns);
}

static __always_inline void take_hists(const struct tt_sample *s)
{
	__u64 cb = s->callback_ns ? s->callback_ns : s->h.ts;
	struct tt_hist *h;

	h = hist_get(BY_TOPIC, 0, -1, s->topic);
	if (h)
		hists_add(h, s, cb);
	if (s->task >= 0) {
		char item[TT_TOPIC_LEN] = {};

		__builtin_memcpy(item, s->item, TT_ITEM_LEN);
		h = hist_get(BY_TASK, s->h.pid, s->task, item);
		if (h)
			hists_add(h, s, cb);
	}
	if (deadline_ns && s->publish_ns && cb > s->publish_ns + deadline_ns)
		COUNT(missed_deadlines);
}

/* ---- services ------------------------------------------------------------ */

/* The client id a response topic "@/S/r/<16 hex digits>" names; 0 for any
 * other (the request topic "@/S/q"). */
static __always_inline __u64 rsp_topic_client(const char *t)
{
	__u32 len = 0;
	__u64 id = 0;

	for (int i = 0; i < TT_TOPIC_LEN && t[i]; i++)
		len++;
	if (len < 2 + 1 + 3 + 16 || len >= TT_TOPIC_LEN)
		return 0;
	if (t[(len - 19) & (TT_TOPIC_LEN - 1)] != '/' || t[(len - 18) & (TT_TOPIC_LEN - 1)] != 'r' ||
	    t[(len - 17) & (TT_TOPIC_LEN - 1)] != '/')
		return 0;
	for (int i = 0; i < 16; i++) {
		char c = t[(len - 16 + i) & (TT_TOPIC_LEN - 1)];

		if (c >= '0' && c <= '9')
			id = id << 4 | (__u64)(c - '0');
		else if (c >= 'a' && c <= 'f')
			id = id << 4 | (__u64)(c - 'a' + 10);
		else
			return 0;
	}
	return id;
}

/* A take of a service topic ("@/..."), joined like any sample: kept for the
 * probe that names its request, right after it on this thread. */
static __always_inline void svc_take_note(const struct tt_sample *s)
{
	__u32 tid = s->h.tid;
	struct svc_take *t = bpf_map_lookup_elem(&svc_takes, &tid);

	if (!t) {
		bpf_map_update_elem(&svc_takes, &tid, &zero_take, BPF_ANY);
		t = bpf_map_lookup_elem(&svc_takes, &tid);
		if (!t)
			return;
	}
	t->pub_id = s->pub_id;
	t->publish_ns = s->publish_ns;
	t->rsp_client = rsp_topic_client(s->topic);
	t->wake.notify_ns = s->notify_ns;
	t->wake.waking_ns = s->waking_ns;
	t->wake.wakeup_ns = s->wakeup_ns;
	t->wake.oncpu_ns = s->oncpu_ns;
	t->wake.take_ns = s->h.ts;
	t->wake.tid = s->woken_tid ? s->woken_tid : s->h.tid;
	t->wake.state = s->wake_state;
	t->wake.cpu = s->wake_cpu;
	t->wake.inferred = s->oncpu_inferred;
	__builtin_memcpy(t->topic, s->topic, TT_TOPIC_LEN);
	t->seq = s->seq;
}

SEC("usdt")
int BPF_USDT(on_take, const char *topic, __u32 sub_port, __u64 pub_id, __u64 seq)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct tt_sample *s;
	__u32 zero = 0;

	if (!traced(id >> 32))
		return 0;
	COUNT(take);
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	__builtin_memset(s, 0, sizeof(*s));
	hdr_fill(&s->h, EV_SAMPLE, sizeof(*s), id, bpf_ktime_get_ns());
	s->seq = seq;
	s->pub_id = pub_id;
	s->sub_port = sub_port;
	s->task = -1;
	/* The joins run whatever the filters say: they consume the notes. */
	take_publish(s);
	take_note(s);
	take_thread(s);
	bpf_probe_read_user_str(s->topic, sizeof(s->topic), topic);
	if (svc_join && s->topic[0] == '@' && s->topic[1] == '/')
		svc_take_note(s);
	if (filter_topic && !str_eq(s->topic, topic_name, TT_TOPIC_LEN))
		return 0;
	if (filter_pid && filter_pid != s->h.pid && filter_pid != s->pub_pid)
		return 0;
	take_hists(s);
	if (emit_samples) {
		bpf_get_current_comm(s->comm, sizeof(s->comm));
		if (bpf_ringbuf_output(&events, s, sizeof(*s), rb_flags()) < 0)
			COUNT(dropped_events);
	}
	return 0;
}

/* The last service take of this thread, if it is the sample of (pub_id,
 * seq) (a request), or one of a response topic of client rsp_client;
 * consumed. */
static __always_inline struct svc_take *svc_take_of(__u32 tid, __u64 pub_id, __u64 seq, __u64 rsp_client)
{
	struct svc_take *t = bpf_map_lookup_elem(&svc_takes, &tid);

	if (!t || !t->seq || t->rsp_client != rsp_client)
		return NULL;
	if (!rsp_client && (t->seq != seq || t->pub_id != pub_id))
		return NULL;
	t->seq = 0;
	return t;
}

/* The request was sent: it reached the server's queue (the probe fires
 * after the push, so the server may have taken it already). Its send time
 * is its publish's (before the push: the take cannot come earlier), which
 * this thread's publish probe just stored. */
SEC("usdt")
int BPF_USDT(on_request, __u64 client_id, __u64 request_id)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 k = tt_svc_slot(client_id, request_id),
	      ring = (__u32)(client_id % PUBS) * PUB_SEQS + (__u32)(request_id % PUB_SEQS);
	struct tt_svc_sent *e;
	struct pub_slot *ps;

	if (!traced(id >> 32))
		return 0;
	COUNT(requests);
	e = bpf_map_lookup_elem(&svc_sent, &k);
	if (!e)
		return 0;
	if (e->request_id && !e->responses && (e->request_id != request_id || e->client_id != client_id))
		COUNT(requests_evicted);
	e->request_id = 0;
	ps = bpf_map_lookup_elem(&pub_ring, &ring);
	if (ps && ps->seq == request_id && ps->pub_id == client_id) {
		e->send_ns = ps->ts;
		bpf_probe_read_user_str(e->topic, sizeof(e->topic), (const void *)ps->topic);
	} else {
		e->send_ns = bpf_ktime_get_ns(); /* (its publish was not seen) */
		e->topic[0] = 0;
	}
	e->client_id = client_id;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->responses = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->request_id = request_id;
	return 0;
}

SEC("usdt")
int BPF_USDT(on_request_take, __u64 client_id, __u64 request_id)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 k = tt_svc_slot(client_id, request_id);
	struct tt_svc_served *e;
	struct svc_take *t;

	if (!traced(id >> 32))
		return 0;
	COUNT(request_takes);
	e = bpf_map_lookup_elem(&svc_served, &k);
	if (!e)
		return 0;
	e->request_id = 0;
	e->client_id = client_id;
	e->take_ns = bpf_ktime_get_ns();
	e->n_responds = 0;
	for (int i = 0; i < TT_SVC_RESPONDS; i++)
		e->respond_ns[i] = 0;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	t = svc_take_of((__u32)id, client_id, request_id, 0);
	if (t) {
		e->wake = t->wake;
		__builtin_memcpy(e->topic, t->topic, TT_TOPIC_LEN);
	} else {
		__builtin_memset(&e->wake, 0, sizeof(e->wake));
		e->wake.state = WS_UNKNOWN;
		e->topic[0] = 0;
	}
	e->request_id = request_id;
	return 0;
}

/* Before the push: a respond that then fails (the client's queue full) has
 * a time here too, which no response carries (respond_of). */
SEC("usdt")
int BPF_USDT(on_respond, __u64 client_id, __u64 request_id)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 k = tt_svc_slot(client_id, request_id), n;
	struct tt_svc_served *e;

	if (!traced(id >> 32))
		return 0;
	COUNT(responds);
	e = bpf_map_lookup_elem(&svc_served, &k);
	if (!e || e->request_id != request_id || e->client_id != client_id)
		return 0;
	n = e->n_responds;
	e->respond_ns[n % TT_SVC_RESPONDS] = bpf_ktime_get_ns();
	e->n_responds = n + 1;
	return 0;
}

/* The respond that sent the response published at publish_ns: the last
 * one before it (a respond probe, then its publish, on one thread). Not
 * known when that publish was not seen and the server responded more than
 * once, or when TT_SVC_RESPONDS later responds took its place. */
static __always_inline __u64 respond_of(const struct tt_svc_served *e, __u64 publish_ns)
{
	__u64 best = 0;

	if (!publish_ns)
		return e->n_responds == 1 ? e->respond_ns[0] : 0;
	for (int i = 0; i < TT_SVC_RESPONDS; i++) {
		__u64 t = e->respond_ns[i];

		if (t && t <= publish_ns && t > best)
			best = t;
	}
	return best;
}

/* The request's server half, and the respond of this response. */
static __always_inline void req_served(struct tt_request *r, __u32 k, __u64 publish_ns)
{
	struct tt_svc_served *e = bpf_map_lookup_elem(&svc_served, &k);

	r->server.state = WS_UNKNOWN;
	if (!e || e->request_id != r->request_id || e->client_id != r->client_id)
		return;
	tt_request_served(r, e);
	r->respond_ns = respond_of(e, publish_ns);
}

/* A client took a response: one EV_REQUEST, whatever the filters (user
 * space applies them: --topic names a service there). */
SEC("usdt")
int BPF_USDT(on_response_take, __u64 client_id, __u64 request_id)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 k = tt_svc_slot(client_id, request_id), zero = 0;
	struct tt_svc_sent *e;
	struct tt_request *r;
	struct svc_take *t;
	__u64 publish_ns = 0;

	if (!traced(id >> 32))
		return 0;
	COUNT(response_takes);
	r = bpf_map_lookup_elem(&svc_scratch, &zero);
	if (!r)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	hdr_fill(&r->h, EV_REQUEST, sizeof(*r), id, bpf_ktime_get_ns());
	r->kind = REQ_RESPONSE;
	r->client_id = client_id;
	r->request_id = request_id;
	e = bpf_map_lookup_elem(&svc_sent, &k);
	if (e && e->request_id == request_id && e->client_id == client_id) {
		r->response_n = __sync_fetch_and_add(&e->responses, 1) + 1;
		tt_request_sent(r, e);
	} else {
		COUNT(responses_no_request);
		r->client_pid = r->h.pid;
		r->client_tid = r->h.tid;
		bpf_get_current_comm(r->client_comm, sizeof(r->client_comm));
	}
	t = svc_take_of((__u32)id, 0, 0, client_id);
	if (t) {
		r->client = t->wake;
		publish_ns = t->publish_ns;
	} else {
		r->client.state = WS_UNKNOWN;
	}
	req_served(r, k, publish_ns);
	if (!r->topic[0] && t)
		__builtin_memcpy(r->topic, t->topic, TT_TOPIC_LEN);
	if (bpf_ringbuf_output(&events, r, sizeof(*r), rb_flags()) < 0)
		COUNT(dropped_events);
	return 0;
}

/* ---- libtakt-exec ------------------------------------------------------ */

SEC("usdt")
int BPF_USDT(on_exec_park, __u32 n_tasks)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct thread_state *t;

	if (!traced(id >> 32))
		return 0;
	t = thread_self(id, true);
	if (t)
		__sync_fetch_and_or(&t->st, TF_PARKED);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_exec_wake, int n_events)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct thread_state *t;

	if (!traced(id >> 32))
		return 0;
	t = thread_self(id, false);
	if (t)
		__sync_fetch_and_and(&t->st, ~(__u64)TF_PARKED);
	return 0;
}

SEC("usdt")
int BPF_USDT(on_dispatch_begin, int task, const char *item)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct thread_state *t;

	if (!traced(id >> 32))
		return 0;
	t = thread_self(id, true);
	if (!t)
		return 0;
	t->cb_begin_ns = bpf_ktime_get_ns();
	t->task = task;
	t->item_ptr = (__u64)item;
	__sync_fetch_and_or(&t->st, TF_IN_DISPATCH);
	return 0;
}

static __always_inline void emit_dispatch(__u64 id, __u64 begin, __u64 now, int task, int rc, const char *name)
{
	struct tt_dispatch *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e) {
		COUNT(dropped_events);
		return;
	}
	hdr_fill(&e->h, EV_DISPATCH, sizeof(*e), id, now);
	e->begin_ns = begin;
	e->task = task;
	e->rc = rc;
	__builtin_memcpy(e->item, name, TT_ITEM_LEN);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, rb_flags());
}

SEC("usdt")
int BPF_USDT(on_dispatch_end, int task, const char *item, int rc)
{
	__u64 id = bpf_get_current_pid_tgid(), now = bpf_ktime_get_ns();
	char name[TT_TOPIC_LEN] = {};
	__u32 tid = (__u32)id;
	struct thread_state *t;
	struct tt_hist *h;
	__u64 begin;

	if (!traced(id >> 32))
		return 0;
	COUNT(dispatch);
	t = bpf_map_lookup_elem(&threads, &tid);
	if (!t || !(ST_FLAGS(st_read(t)) & TF_IN_DISPATCH))
		return 0;
	__sync_fetch_and_and(&t->st, ~(__u64)TF_IN_DISPATCH);
	begin = t->cb_begin_ns;
	if (filter_pid && filter_pid != id >> 32)
		return 0;
	bpf_probe_read_user_str(name, TT_ITEM_LEN, item);
	h = hist_get(BY_TASK, id >> 32, task, name);
	if (h)
		hist_add(h, ST_CALLBACK, now - begin);
	if (emit_raw)
		emit_dispatch(id, begin, now, task, rc, name);
	return 0;
}

/* ---- scheduler --------------------------------------------------------- */

/* The waker starts waking p (its context, before p can run): the wakeup of
 * p's open, asleep cycle, or one with no sample if p was parked. */
SEC("tp_btf/sched_waking")
int BPF_PROG(on_sched_waking, struct task_struct *p)
{
	__u32 tid = p->pid;
	struct thread_state *t = bpf_map_lookup_elem(&threads, &tid);

	if (!t)
		return 0;
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 old = st_read(t), nw = old & ~(__u64)TF_SLEEPING;
		__u32 f = ST_FLAGS(old);
		bool mine = (f & TF_CYC_OPEN) && ST_WAKE(old) == WS_SLEEPING && !(f & TF_WOKEN);

		if (mine)
			nw |= TF_WOKEN;
		if (f & TF_ONCPU)
			nw |= TF_WAKE_INFLIGHT;
		if (nw == old)
			return 0;
		if (__sync_val_compare_and_swap(&t->st, old, nw) != old)
			continue; /* S0 */
		if (mine) {
			t->waking_ns = bpf_ktime_get_ns();
			t->waking_cyc = ST_CYC(old);
			COUNT(wakeups);
		} else if ((f & (TF_PARKED | TF_SLEEPING)) == (TF_PARKED | TF_SLEEPING) && !(f & TF_CYC_OPEN)) {
			COUNT(wakeups_no_sample);
		}
		return 0;
	}
	return 0;
}

/* p is on a run queue now: the wakeup's end. */
SEC("tp_btf/sched_wakeup")
int BPF_PROG(on_sched_wakeup, struct task_struct *p)
{
	__u32 tid = p->pid;
	struct thread_state *t = bpf_map_lookup_elem(&threads, &tid);
	__u64 st;

	if (!t)
		return 0;
	st = st_read(t);
	if ((ST_FLAGS(st) & (TF_CYC_OPEN | TF_WOKEN)) == (TF_CYC_OPEN | TF_WOKEN) &&
	    ST_WAKE(st) == WS_SLEEPING && t->wakeup_cyc != ST_CYC(st)) {
		t->wakeup_ns = bpf_ktime_get_ns();
		t->wakeup_cyc = ST_CYC(st);
	}
	/* Woken while still on its CPU: the wakeup is over without the
	 * switch-out TF_WAKE_INFLIGHT waits for (a wakeup that raced a real
	 * switch-out ends only after it: ttwu waits for p->on_cpu, or its
	 * wakelist entry does). S0: pairs with switch_out's and
	 * on_sched_waking's CAS; a switch-out that won the race has cleared
	 * both flags, and the loop then finds nothing to do. */
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 old = st_read(t);

		if ((old & (TF_ONCPU | TF_WAKE_INFLIGHT)) != (TF_ONCPU | TF_WAKE_INFLIGHT))
			break;
		if (__sync_val_compare_and_swap(&t->st, old, old & ~(__u64)TF_WAKE_INFLIGHT) == old)
			break;
	}
	return 0;
}

static __always_inline void switch_out(struct task_struct *prev, bool preempt)
{
	__u32 tid = prev->pid;
	struct thread_state *t = bpf_map_lookup_elem(&threads, &tid);
	bool sleeps;

	if (!t)
		return;
	sleeps = !preempt && task_state(prev) != TASK_RUNNING;
	for (int i = 0; i < CAS_TRIES; i++) {
		__u64 old = st_read(t), nw = old & ~(__u64)(TF_ONCPU | TF_WAKE_INFLIGHT);

		if (sleeps && !(old & TF_WAKE_INFLIGHT))
			nw |= TF_SLEEPING;
		if (__sync_val_compare_and_swap(&t->st, old, nw) == old) /* S0 */
			return;
	}
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u32 tid = next->pid;
	struct thread_state *t;

	switch_out(prev, preempt);
	t = bpf_map_lookup_elem(&threads, &tid);
	if (t)
		thread_oncpu(t, false);
	return 0;
}

/* A thread leaves: its state goes (threads is not an LRU map). */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	__u32 tid = p->pid;

	bpf_map_delete_elem(&threads, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
