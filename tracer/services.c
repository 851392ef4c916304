/* services.c - takt-trace services: each request of a service followed to
 * every response its client takes.
 *
 * The kernel joins a request's two halves by (client_id, request_id)
 * (wakeup.bpf.c, "services") and emits one EV_REQUEST per response taken;
 * here they are filtered (--topic names a service or one of its topics,
 * --pid its client or its server), printed, and counted per service into
 * log2 histograms of each hop. The requests no response was joined to are
 * read from the kernel's svc_sent map at the end: never answered within the
 * run, with how far they got (taken by the server or not, responded to or
 * not).
 */
#include "sys.h"
#include "takt-trace.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define SVC_MAX 64 /* services summarised; more are counted in "other" */
#define N_STATES (WS_UNSEEN + 1)

enum svc_hop { HOP_SEND_TAKE, HOP_TAKE_RESPOND, HOP_RESPOND_TAKE, HOP_ROUND_TRIP, HOP_NR };

static const char *const hop_names[HOP_NR] = {"send_to_take", "take_to_respond", "respond_to_take", "round_trip"};
static const char *const hop_titles[HOP_NR] = {"send -> server take", "server take -> respond",
					       "respond -> client take", "round trip (to the first response)"};

struct svc_stat {
	char name[TT_TOPIC_LEN];
	uint64_t round_trips, more, unjoined, unanswered;
	uint64_t server_state[N_STATES], client_state[N_STATES];
	struct tt_stage_hist hop[HOP_NR];
};

struct tt_services {
	struct svc_stat svc[SVC_MAX];
	unsigned n;
	uint64_t other;
};

/* The hops of one event: -1 where a stage was not seen. */
struct hops {
	int64_t ns[HOP_NR];
	int64_t server_ntf_cpu, client_ntf_cpu;
};

static void hops_of(const struct tt_request *r, struct hops *o)
{
	uint64_t client_take = r->kind == REQ_RESPONSE ? r->h.ts : 0;

	o->ns[HOP_SEND_TAKE] = tt_span(r->send_ns, r->server_take_ns);
	o->ns[HOP_TAKE_RESPOND] = tt_span(r->server_take_ns, r->respond_ns);
	o->ns[HOP_RESPOND_TAKE] = tt_span(r->respond_ns, client_take);
	o->ns[HOP_ROUND_TRIP] = r->response_n == 1 ? tt_span(r->send_ns, client_take) : -1;
	o->server_ntf_cpu = tt_span(r->server.notify_ns, r->server.oncpu_ns);
	o->client_ntf_cpu = tt_span(r->client.notify_ns, r->client.oncpu_ns);
}

struct tt_services *tt_svc_new(void)
{
	return calloc(1, sizeof(struct tt_services));
}

void tt_svc_free(struct tt_services *s)
{
	free(s);
}

void tt_svc_name(const char *topic, char *out, size_t len)
{
	size_t n = strnlen(topic, TT_TOPIC_LEN);

	if (n < 4 || strncmp(topic, "@/", 2)) {
		snprintf(out, len, "%.*s", (int)n, topic);
		return;
	}
	if (!strcmp(topic + n - 2, "/q"))
		n -= 2;
	else if (n > 2 + 19 && !strncmp(topic + n - 19, "/r/", 3))
		n -= 19; /* "/r/" and 16 hex digits */
	snprintf(out, len, "%.*s", (int)(n - 2), topic + 2);
}

bool tt_svc_wanted(const struct tt_opts *o, const struct tt_request *r)
{
	char a[TT_TOPIC_LEN], b[TT_TOPIC_LEN];

	if (o->pid && (pid_t)r->client_pid != o->pid && (pid_t)r->server_pid != o->pid &&
	    (pid_t)r->h.pid != o->pid)
		return false;
	if (!o->topic)
		return true;
	tt_svc_name(o->topic, a, sizeof(a));
	tt_svc_name(r->topic, b, sizeof(b));
	return !strcmp(a, b);
}

/* ---- lines ------------------------------------------------------------------ */

void tt_svc_print_header(FILE *f)
{
	fprintf(f, "%-15s %-16s %-16s %5s %4s %-15s %-15s %9s %9s %9s %9s  %-8s %7s  %-8s %7s\n", "TIME", "SERVICE",
		"CLIENT ID", "REQ", "RSP", "CLIENT PID/TID", "SERVER PID/TID", "SEND>TAKE", "TAKE>RESP", "RESP>TAKE",
		"ROUNDTRIP", "SERVER", "NTF>CPU", "CLIENT", "NTF>CPU");
}

static const char *thread_col(const struct tt_wake *w)
{
	return w->take_ns ? tt_wake_state_name(w->state) : "-";
}

/* What became of a request never answered. */
static const char *unanswered_why(const struct tt_request *r)
{
	if (!r->server_take_ns)
		return "not taken by the server";
	if (!r->n_responds)
		return "taken, no respond";
	return "responded to, no response taken";
}

static void print_text(FILE *f, const struct tt_clock *c, const struct tt_request *r, const struct hops *hp)
{
	char t[32], name[TT_TOPIC_LEN], cli[24], srv[24], rsp[16];

	tt_fmt_time(c, r->h.ts, t, sizeof(t));
	tt_svc_name(r->topic, name, sizeof(name));
	snprintf(cli, sizeof(cli), "%u/%u", r->client_pid, r->client_tid);
	if (r->server_pid)
		snprintf(srv, sizeof(srv), "%u/%u", r->server_pid, r->server_tid);
	else
		snprintf(srv, sizeof(srv), "?");
	if (r->kind == REQ_UNANSWERED)
		snprintf(rsp, sizeof(rsp), "none");
	else if (r->response_n)
		snprintf(rsp, sizeof(rsp), "%u", r->response_n);
	else
		snprintf(rsp, sizeof(rsp), "?");
	fprintf(f, "%-15s %-16s %016" PRIx64 " %5" PRIu64 " %4s %-15s %-15s", t, name[0] ? name : "?",
		(uint64_t)r->client_id, (uint64_t)r->request_id, rsp, cli, srv);
	for (int i = 0; i < HOP_NR; i++)
		tt_us_col(f, hp->ns[i]);
	fprintf(f, "  %-8s", thread_col(&r->server));
	tt_us_col(f, hp->server_ntf_cpu);
	if (r->kind == REQ_UNANSWERED) {
		fprintf(f, "  never answered: %s\n", unanswered_why(r));
		return;
	}
	fprintf(f, "  %-8s", thread_col(&r->client));
	tt_us_col(f, hp->client_ntf_cpu);
	fputc('\n', f);
}

/* One end's wake-up as prefixed fields: "server_thread", "server_wake_tid" (the
 * thread notified, else the one that took), "server_notify_ns"... */
static void json_wake(FILE *f, const char *who, const struct tt_wake *w, uint64_t take_ns)
{
	char k[64];

	snprintf(k, sizeof(k), "%s_thread", who);
	fprintf(f, ",\"%s\":", k);
	if (w->take_ns)
		fprintf(f, "\"%s\",\"%s_wake_tid\":%u", tt_wake_state_name(w->state), who, w->tid);
	else
		fprintf(f, "null,\"%s_wake_tid\":null", who);
#define STAMP(field)                                                                               \
	snprintf(k, sizeof(k), "%s_" #field, who);                                                 \
	tt_json_stamp(f, k, w->field);
	STAMP(notify_ns)
	STAMP(waking_ns)
	STAMP(wakeup_ns)
	STAMP(oncpu_ns)
#undef STAMP
	snprintf(k, sizeof(k), "%s_notify_to_wakeup_ns", who);
	tt_json_ns(f, k, tt_span(w->notify_ns, w->wakeup_ns));
	snprintf(k, sizeof(k), "%s_wakeup_to_oncpu_ns", who);
	tt_json_ns(f, k, tt_span(w->wakeup_ns, w->oncpu_ns));
	snprintf(k, sizeof(k), "%s_oncpu_to_take_ns", who);
	tt_json_ns(f, k, tt_span(w->oncpu_ns, take_ns));
}

static void json_pid(FILE *f, const char *key, uint32_t v)
{
	if (v)
		fprintf(f, ",\"%s\":%u", key, v);
	else
		fprintf(f, ",\"%s\":null", key);
}

static void print_json(FILE *f, const struct tt_clock *c, const struct tt_request *r, const struct hops *hp)
{
	char t[32], name[TT_TOPIC_LEN];
	bool answer = r->kind == REQ_RESPONSE;

	tt_fmt_time(c, r->h.ts, t, sizeof(t));
	tt_svc_name(r->topic, name, sizeof(name));
	fprintf(f, "{\"event\":\"%s\",\"time\":\"%s\",\"service\":", answer ? "response" : "unanswered", t);
	tt_json_str(f, name, sizeof(name));
	fprintf(f, ",\"client_id\":\"%016" PRIx64 "\",\"request_id\":%" PRIu64, (uint64_t)r->client_id,
		(uint64_t)r->request_id);
	if (answer && r->response_n)
		fprintf(f, ",\"response\":%u", r->response_n);
	else
		fprintf(f, ",\"response\":null");
	fprintf(f, ",\"responds\":%u", r->n_responds);
	if (!answer)
		fprintf(f, ",\"why\":\"%s\"", unanswered_why(r));
	json_pid(f, "client_pid", r->client_pid);
	json_pid(f, "client_tid", r->client_tid);
	fputs(",\"client_comm\":", f);
	tt_json_str(f, r->client_comm, sizeof(r->client_comm));
	json_pid(f, "server_pid", r->server_pid);
	json_pid(f, "server_tid", r->server_tid);
	fputs(",\"server_comm\":", f);
	tt_json_str(f, r->server_comm, sizeof(r->server_comm));
	tt_json_stamp(f, "send_ns", r->send_ns);
	tt_json_stamp(f, "server_take_ns", r->server_take_ns);
	tt_json_stamp(f, "respond_ns", r->respond_ns);
	tt_json_stamp(f, "client_take_ns", answer ? r->h.ts : 0);
	for (int i = 0; i < HOP_NR; i++) {
		char k[32];

		snprintf(k, sizeof(k), "%s_ns", hop_names[i]);
		tt_json_ns(f, k, hp->ns[i]);
	}
	json_wake(f, "server", &r->server, r->server_take_ns);
	json_wake(f, "client", &r->client, answer ? r->h.ts : 0);
	fputs("}\n", f);
}

void tt_svc_print(FILE *f, const struct tt_clock *c, const struct tt_request *r, bool json)
{
	struct hops hp;

	hops_of(r, &hp);
	if (json)
		print_json(f, c, r, &hp);
	else
		print_text(f, c, r, &hp);
}

/* ---- the summary ------------------------------------------------------------ */

static struct svc_stat *svc_stat(struct tt_services *s, const char *topic)
{
	char name[TT_TOPIC_LEN];

	tt_svc_name(topic, name, sizeof(name));
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->svc[i].name, name))
			return &s->svc[i];
	if (s->n == SVC_MAX)
		return NULL;
	snprintf(s->svc[s->n].name, sizeof(s->svc[s->n].name), "%s", name);
	return &s->svc[s->n++];
}

void tt_svc_add(struct tt_services *s, const struct tt_request *r)
{
	struct svc_stat *st = svc_stat(s, r->topic);
	struct hops hp;

	if (!st) {
		s->other++;
		return;
	}
	if (r->kind == REQ_UNANSWERED) {
		st->unanswered++;
		return;
	}
	if (r->response_n == 1)
		st->round_trips++;
	else if (r->response_n)
		st->more++;
	else
		st->unjoined++;
	/* the server's take once per request, the client's once per response */
	if (r->response_n <= 1 && r->server.take_ns && r->server.state < N_STATES)
		st->server_state[r->server.state]++;
	if (r->client.take_ns && r->client.state < N_STATES)
		st->client_state[r->client.state]++;
	hops_of(r, &hp);
	for (int i = 0; i < HOP_NR; i++)
		if (hp.ns[i] >= 0 && (i != HOP_SEND_TAKE || r->response_n == 1))
			tt_stage_hist_add(&st->hop[i], (uint64_t)hp.ns[i]);
}

/* How often each thread stood how at its take: a line, or a JSON member. */
static void print_states(FILE *f, const char *who, const uint64_t *n, bool json)
{
	const char *sep = "";

	fprintf(f, json ? ",\"%s_thread\":{" : "  %s thread at its take:", who);
	for (uint32_t i = 0; i < N_STATES; i++) {
		if (!n[i])
			continue;
		fprintf(f, json ? "%s\"%s\":%" PRIu64 : "%s %s %" PRIu64, sep, tt_wake_state_name(i), n[i]);
		sep = ",";
	}
	if (json)
		fputc('}', f);
	else
		fputs(*sep ? "\n" : " not seen\n", f);
}

static void summary_one(FILE *f, const struct svc_stat *st, const char *time, bool json)
{
	if (json) {
		fprintf(f, "{\"event\":\"summary\",\"time\":\"%s\",\"service\":", time);
		tt_json_str(f, st->name, sizeof(st->name));
		fprintf(f, ",\"round_trips\":%" PRIu64 ",\"more_responses\":%" PRIu64 ",\"responses_no_request\":%" PRIu64
			",\"unanswered\":%" PRIu64, st->round_trips, st->more, st->unjoined, st->unanswered);
		print_states(f, "server", st->server_state, true);
		print_states(f, "client", st->client_state, true);
		fputs("}\n", f);
	} else {
		fprintf(f, "service %s: %" PRIu64 " round trips, %" PRIu64 " more responses (streams), %" PRIu64
			" never answered", st->name, st->round_trips, st->more, st->unanswered);
		if (st->unjoined)
			fprintf(f, ", %" PRIu64 " responses to requests sent unseen", st->unjoined);
		fputc('\n', f);
		print_states(f, "server", st->server_state, false);
		print_states(f, "client", st->client_state, false);
		fputc('\n', f);
	}
	for (int i = 0; i < HOP_NR; i++) {
		char title[TT_TOPIC_LEN + 64];

		if (!st->hop[i].count)
			continue;
		if (json) {
			fprintf(f, "{\"time\":\"%s\",\"by\":\"service\",\"name\":", time);
			tt_json_str(f, st->name, sizeof(st->name));
			fputs(",\"pid\":null,\"task\":null", f);
			tt_print_log2_json(f, hop_names[i], &st->hop[i]);
		} else {
			snprintf(title, sizeof(title), "service %s: %s", st->name, hop_titles[i]);
			tt_print_log2(f, title, &st->hop[i]);
		}
	}
}

void tt_svc_print_summary(FILE *f, const struct tt_services *s, const struct tt_clock *c, bool json)
{
	char t[32];

	tt_fmt_time(c, sys_mono_ns(), t, sizeof(t));
	if (!json && !s->n)
		fputs("(no response taken and no request unanswered)\n", f);
	for (unsigned i = 0; i < s->n; i++)
		summary_one(f, &s->svc[i], t, json);
	if (s->other && !json)
		fprintf(f, "(%" PRIu64 " more events of services past the first %d)\n", s->other, SVC_MAX);
	fflush(f);
}

/* ---- never answered ----------------------------------------------------------- */

static void unanswered_of(const struct tt_svc_sent *e, const struct tt_svc_served *sv, struct tt_request *r)
{
	memset(r, 0, sizeof(*r));
	r->h = (struct tt_hdr){.type = EV_REQUEST, .size = sizeof(*r), .ts = e->send_ns, .pid = e->pid, .tid = e->tid};
	r->kind = REQ_UNANSWERED;
	r->client_id = e->client_id;
	r->request_id = e->request_id;
	r->server.state = WS_UNKNOWN;
	r->client.state = WS_UNKNOWN;
	tt_request_sent(r, e);
	if (!sv || sv->request_id != e->request_id || sv->client_id != e->client_id)
		return;
	tt_request_served(r, sv);
	if (sv->n_responds) /* its last respond, whose response no take joined */
		r->respond_ns = sv->respond_ns[(sv->n_responds - 1) % TT_SVC_RESPONDS];
}

static int cmp_unanswered(const void *a, const void *b)
{
	const struct tt_request *x = a, *y = b;

	return x->send_ns < y->send_ns ? -1 : x->send_ns > y->send_ns;
}

int tt_svc_unanswered(int sent_fd, int served_fd, int (*fn)(void *ctx, const struct tt_request *r), void *ctx)
{
	struct tt_request *v = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	for (__u32 k = 0; k < TT_SVC_REQS; k++) {
		struct tt_svc_sent e;
		struct tt_svc_served sv;
		bool have_sv;

		if (bpf_map_lookup_elem(sent_fd, &k, &e) < 0) {
			r = -errno;
			goto out;
		}
		if (!e.request_id || e.responses)
			continue;
		have_sv = bpf_map_lookup_elem(served_fd, &k, &sv) == 0;
		if (n == cap) {
			struct tt_request *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof(*v));

			if (!nv) {
				r = -ENOMEM;
				goto out;
			}
			v = nv;
		}
		unanswered_of(&e, have_sv ? &sv : NULL, &v[n++]);
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_unanswered); /* in send order */
	for (size_t i = 0; i < n && r >= 0; i++)
		r = fn(ctx, &v[i]);
	if (r >= 0)
		r = (int)n;
out:
	free(v);
	return r;
}
