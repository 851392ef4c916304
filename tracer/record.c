/* record.c - the recording file and its export to Chrome trace-event JSON.
 *
 * A recording is one LZ4 frame (liblz4's frame API, so `lz4 -d` opens it
 * too) holding a tt_file_header and then the ring buffer's events byte for
 * byte, each starting with a tt_hdr whose size says how long it is; the
 * counters close it (EV_COUNTERS). Events are stored as the kernel emitted
 * them: the join already happened there.
 *
 * The export draws, per sample: the publish on the publisher thread, the
 * notify (an instant), on the subscriber thread the stages notify -> wakeup
 * -> on-CPU -> callback start as slices, the take, and a flow (arrow) from
 * the publish through the wakeup to the take, bound to the item's slice when
 * an executor ran it. A response to a request of a service gets a flow of its
 * own: from the client's send through the server's take (the server's
 * "serve" slice, take -> first respond) and its respond to the client's
 * take; a request never answered, an instant at its send. Perfetto
 * (ui.perfetto.dev) and chrome://tracing open it.
 */
#include "takt-trace.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4frame.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define REC_CHUNK (64 * 1024)
#define MAX_EVENT 4096

struct tt_recorder {
	FILE *f;
	LZ4F_cctx *cctx;
	char *out;
	size_t out_cap;
	char in[REC_CHUNK];
	size_t in_len;
	uint64_t events;
	int err;
};

static int rec_emit(struct tt_recorder *r, size_t n)
{
	if (n && fwrite(r->out, 1, n, r->f) != n)
		return r->err = -EIO;
	return 0;
}

static int rec_flush_in(struct tt_recorder *r)
{
	size_t n;

	if (!r->in_len)
		return 0;
	n = LZ4F_compressUpdate(r->cctx, r->out, r->out_cap, r->in, r->in_len, NULL);
	r->in_len = 0;
	if (LZ4F_isError(n))
		return r->err = -EIO;
	return rec_emit(r, n);
}

int tt_rec_open(const char *path, const struct tt_file_header *fh, struct tt_recorder **out)
{
	LZ4F_preferences_t prefs = {.frameInfo = {.contentChecksumFlag = LZ4F_contentChecksumEnabled}};
	struct tt_recorder *r = calloc(1, sizeof(*r));
	size_t n;

	if (!r)
		return -ENOMEM;
	r->out_cap = LZ4F_compressBound(REC_CHUNK, &prefs) + LZ4F_HEADER_SIZE_MAX;
	r->out = malloc(r->out_cap);
	r->f = fopen(path, "wbe");
	if (!r->out || !r->f || LZ4F_isError(LZ4F_createCompressionContext(&r->cctx, LZ4F_VERSION)))
		goto fail;
	n = LZ4F_compressBegin(r->cctx, r->out, r->out_cap, &prefs);
	if (LZ4F_isError(n) || rec_emit(r, n) < 0 || tt_rec_write(r, fh, sizeof(*fh)) < 0)
		goto fail;
	r->events = 0; /* the header is not an event */
	*out = r;
	return 0;
fail:
	n = (size_t)(r->f ? EIO : errno);
	if (r->f)
		fclose(r->f);
	LZ4F_freeCompressionContext(r->cctx);
	free(r->out);
	free(r);
	return -(int)n;
}

int tt_rec_write(struct tt_recorder *r, const void *ev, size_t size)
{
	if (r->err)
		return r->err;
	if (size > sizeof(r->in))
		return -EINVAL;
	if (r->in_len + size > sizeof(r->in) && rec_flush_in(r) < 0)
		return r->err;
	memcpy(r->in + r->in_len, ev, size);
	r->in_len += size;
	r->events++;
	return 0;
}

int tt_rec_close(struct tt_recorder *r, uint64_t *ret_events)
{
	int err;
	size_t n;

	if (!r)
		return 0;
	if (rec_flush_in(r) == 0) {
		n = LZ4F_compressEnd(r->cctx, r->out, r->out_cap, NULL);
		if (LZ4F_isError(n))
			r->err = -EIO;
		else
			rec_emit(r, n);
	}
	if (fclose(r->f) != 0 && !r->err)
		r->err = -errno;
	err = r->err;
	if (ret_events)
		*ret_events = r->events;
	LZ4F_freeCompressionContext(r->cctx);
	free(r->out);
	free(r);
	return err;
}

/* ---- reading ------------------------------------------------------------ */

struct reader {
	FILE *f;
	LZ4F_dctx *dctx;
	char src[REC_CHUNK];
	size_t src_len, src_off;
	char *buf; /* decompressed, not yet consumed */
	size_t len, off, cap;
	bool eof;
};

/* Decompresses until at least want bytes wait in buf; 0, or -ENODATA at
 * the end, -EBADMSG on a damaged frame. */
static int reader_fill(struct reader *rd, size_t want)
{
	while (rd->len - rd->off < want) {
		size_t dst, src;

		if (rd->off) {
			memmove(rd->buf, rd->buf + rd->off, rd->len - rd->off);
			rd->len -= rd->off;
			rd->off = 0;
		}
		if (rd->cap - rd->len < REC_CHUNK) {
			char *nb = realloc(rd->buf, rd->cap + 4 * REC_CHUNK);

			if (!nb)
				return -ENOMEM;
			rd->buf = nb;
			rd->cap += 4 * REC_CHUNK;
		}
		if (rd->src_off == rd->src_len) {
			if (rd->eof)
				return -ENODATA;
			rd->src_len = fread(rd->src, 1, sizeof(rd->src), rd->f);
			rd->src_off = 0;
			if (!rd->src_len) {
				rd->eof = true;
				return -ENODATA;
			}
		}
		dst = rd->cap - rd->len;
		src = rd->src_len - rd->src_off;
		if (LZ4F_isError(LZ4F_decompress(rd->dctx, rd->buf + rd->len, &dst, rd->src + rd->src_off, &src, NULL)))
			return -EBADMSG;
		rd->len += dst;
		rd->src_off += src;
	}
	return 0;
}

/* The next event (or header), valid until the next call. */
static int reader_next(struct reader *rd, const struct tt_hdr **ret)
{
	const struct tt_hdr *h;
	int r = reader_fill(rd, sizeof(*h));

	if (r < 0)
		return r == -ENODATA && rd->len == rd->off ? 0 : (r == -ENODATA ? -EBADMSG : r);
	h = (const struct tt_hdr *)(rd->buf + rd->off);
	if (h->size < sizeof(*h) || h->size > MAX_EVENT)
		return -EBADMSG;
	r = reader_fill(rd, h->size);
	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	*ret = (const struct tt_hdr *)(rd->buf + rd->off);
	rd->off += (*ret)->size;
	return 1;
}

/* ---- Chrome trace-event JSON ------------------------------------------- */

#define NAME_SLOTS 8192

struct thread_name {
	uint32_t tid, pid;
	char comm[TT_COMM_LEN];
};

struct exporter {
	FILE *f;
	bool first;
	uint64_t flows, samples, publishes, dispatches, responses, unanswered;
	struct thread_name names[NAME_SLOTS];
	struct {
		uint32_t tid;
		uint64_t oncpu_ns;
	} last_cycle[NAME_SLOTS]; /* the wake stages drawn last per thread */
	struct tt_counters counters;
	bool have_counters;
};

static void note_thread(struct exporter *x, uint32_t pid, uint32_t tid, const char *comm)
{
	for (uint32_t i = 0, h = tid * 2654435761u; i < NAME_SLOTS; i++) {
		struct thread_name *t = &x->names[(h + i) % NAME_SLOTS];

		if (t->tid == tid) {
			if (comm && comm[0] && !t->comm[0])
				memcpy(t->comm, comm, TT_COMM_LEN);
			return;
		}
		if (!t->tid) {
			t->tid = tid;
			t->pid = pid;
			if (comm)
				memcpy(t->comm, comm, TT_COMM_LEN);
			return;
		}
	}
}

/* Whether the wake stages of tid's cycle that ended on CPU at oncpu were
 * drawn already (several samples share one wakeup). */
static bool cycle_drawn(struct exporter *x, uint32_t tid, uint64_t oncpu)
{
	unsigned i = (tid * 2654435761u) % NAME_SLOTS;

	if (x->last_cycle[i].tid == tid && x->last_cycle[i].oncpu_ns == oncpu)
		return true;
	x->last_cycle[i].tid = tid;
	x->last_cycle[i].oncpu_ns = oncpu;
	return false;
}

static void ev_begin(struct exporter *x)
{
	fputs(x->first ? "\n" : ",\n", x->f);
	x->first = false;
}

static double us(uint64_t ns)
{
	return (double)ns / 1000.0;
}

static void slice(struct exporter *x, uint32_t pid, uint32_t tid, const char *name, uint64_t ts, uint64_t end,
		  const char *cat)
{
	ev_begin(x);
	fprintf(x->f, "{\"ph\":\"X\",\"cat\":\"%s\",\"name\":", cat);
	tt_json_str(x->f, name, 128);
	fprintf(x->f, ",\"pid\":%u,\"tid\":%u,\"ts\":%.3f,\"dur\":%.3f", pid, tid, us(ts),
		end > ts ? us(end - ts) : 0.001);
}

/* One point of flow id: of a sample ("sample"), or of a request ("request"). */
static void flow(struct exporter *x, const char *what, char ph, uint64_t id, uint32_t pid, uint32_t tid, uint64_t ts)
{
	ev_begin(x);
	fprintf(x->f, "{\"ph\":\"%c\",\"cat\":\"takt.%s\",\"name\":\"%s\",\"id\":%" PRIu64
		",\"pid\":%u,\"tid\":%u,\"ts\":%.3f%s}",
		ph, what, what, id, pid, tid, us(ts), ph == 'f' ? ",\"bp\":\"e\"" : "");
}

static void export_publish(struct exporter *x, const struct tt_publish *p)
{
	char name[TT_TOPIC_LEN + 16];

	note_thread(x, p->h.pid, p->h.tid, p->comm);
	snprintf(name, sizeof(name), "publish %.*s", TT_TOPIC_LEN, p->topic);
	slice(x, p->h.pid, p->h.tid, name, p->h.ts, p->h.ts + 1000, "takt");
	fprintf(x->f, ",\"args\":{\"seq\":%llu,\"pub_id\":%llu}}", (unsigned long long)p->seq, (unsigned long long)p->pub_id);
	x->publishes++;
}

static void export_dispatch(struct exporter *x, const struct tt_dispatch *d)
{
	char name[TT_ITEM_LEN + 24];

	note_thread(x, d->h.pid, d->h.tid, d->comm);
	snprintf(name, sizeof(name), "task %d: %.*s", d->task, TT_ITEM_LEN, d->item);
	slice(x, d->h.pid, d->h.tid, name, d->begin_ns, d->h.ts, "takt.exec");
	fprintf(x->f, ",\"args\":{\"task\":%d,\"rc\":%d}}", d->task, d->rc);
	x->dispatches++;
}

/* The subscriber thread's side: notify -> wakeup -> on-CPU -> callback. */
static void export_wake_stages(struct exporter *x, const struct tt_sample *s)
{
	uint64_t cb = s->callback_ns ? s->callback_ns : s->h.ts;
	uint32_t tid = s->woken_tid;

	if (!s->oncpu_ns || cycle_drawn(x, tid, s->oncpu_ns))
		return;
	note_thread(x, s->h.pid, tid, tid == s->h.tid ? s->comm : NULL);
	if (s->wakeup_ns && s->notify_ns) {
		slice(x, s->h.pid, tid, "notify -> wakeup", s->notify_ns, s->wakeup_ns, "takt.wake");
		fputs("}", x->f);
	}
	if (s->wakeup_ns) {
		slice(x, s->h.pid, tid, "wakeup -> on-CPU", s->wakeup_ns, s->oncpu_ns, "takt.wake");
		fprintf(x->f, ",\"args\":{\"cpu\":%u}}", s->wake_cpu);
	}
	if (cb >= s->oncpu_ns && tid == s->h.tid) {
		slice(x, s->h.pid, tid, "on-CPU -> callback", s->oncpu_ns, cb, "takt.wake");
		fputs("}", x->f);
	}
}

static void export_sample(struct exporter *x, const struct tt_sample *s)
{
	char name[TT_TOPIC_LEN + 32];
	uint64_t id = ++x->flows;

	x->samples++;
	note_thread(x, s->h.pid, s->h.tid, s->comm);
	if (s->pub_pid)
		note_thread(x, s->pub_pid, s->pub_tid, s->pub_comm);
	if (s->notify_ns && s->pub_pid) {
		ev_begin(x);
		fprintf(x->f, "{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"takt\",\"name\":\"notify\",\"pid\":%u,\"tid\":%u,"
			"\"ts\":%.3f,\"args\":{\"sub_port\":%u,\"seq\":%llu}}",
			s->pub_pid, s->pub_tid, us(s->notify_ns), s->sub_port, (unsigned long long)s->seq);
	}
	export_wake_stages(x, s);
	snprintf(name, sizeof(name), "take %.*s #%llu", TT_TOPIC_LEN, s->topic, (unsigned long long)s->seq);
	slice(x, s->h.pid, s->h.tid, name, s->h.ts, s->h.ts, "takt");
	fprintf(x->f, ",\"args\":{\"seq\":%llu,\"pub_id\":%llu,\"sub_port\":%u,\"thread\":\"%s\"}}",
		(unsigned long long)s->seq, (unsigned long long)s->pub_id, s->sub_port, tt_wake_state_name(s->wake_state));
	if (!s->publish_ns || !s->pub_pid)
		return; /* no publish seen: nothing to draw an arrow from */
	flow(x, "sample", 's', id, s->pub_pid, s->pub_tid, s->publish_ns);
	if (s->wakeup_ns && s->oncpu_ns)
		flow(x, "sample", 't', id, s->h.pid, s->woken_tid, s->wakeup_ns);
	flow(x, "sample", 'f', id, s->h.pid, s->h.tid, s->h.ts);
}

static void request_args(struct exporter *x, const struct tt_request *r)
{
	fprintf(x->f, ",\"args\":{\"client_id\":\"%016" PRIx64 "\",\"request_id\":%" PRIu64 ",\"response\":%u}}",
		(uint64_t)r->client_id, (uint64_t)r->request_id, r->response_n);
}

/* A response: the server's slices, the client's take, and the flow from
 * the send (the request's publish slice) to that take. */
static void export_request(struct exporter *x, const struct tt_request *r)
{
	char svc[TT_TOPIC_LEN], name[TT_TOPIC_LEN + 48];
	uint64_t id;

	tt_svc_name(r->topic, svc, sizeof(svc));
	note_thread(x, r->client_pid, r->client_tid, r->client_comm);
	if (r->server_pid)
		note_thread(x, r->server_pid, r->server_tid, r->server_comm);
	if (r->kind != REQ_RESPONSE) {
		ev_begin(x);
		snprintf(name, sizeof(name), "never answered: %.*s #%" PRIu64, TT_TOPIC_LEN, svc, (uint64_t)r->request_id);
		fprintf(x->f, "{\"ph\":\"i\",\"s\":\"t\",\"cat\":\"takt.service\",\"name\":");
		tt_json_str(x->f, name, sizeof(name));
		fprintf(x->f, ",\"pid\":%u,\"tid\":%u,\"ts\":%.3f", r->client_pid, r->client_tid, us(r->send_ns));
		request_args(x, r);
		x->unanswered++;
		return;
	}
	x->responses++;
	if (r->response_n == 1 && r->server_take_ns && r->respond_ns) {
		snprintf(name, sizeof(name), "serve %.*s #%" PRIu64, TT_TOPIC_LEN, svc, (uint64_t)r->request_id);
		slice(x, r->server_pid, r->server_tid, name, r->server_take_ns, r->respond_ns, "takt.service");
		request_args(x, r);
	}
	if (r->respond_ns) {
		snprintf(name, sizeof(name), "respond %.*s #%" PRIu64, TT_TOPIC_LEN, svc, (uint64_t)r->request_id);
		slice(x, r->server_pid, r->server_tid, name, r->respond_ns, r->respond_ns, "takt.service");
		request_args(x, r);
	}
	snprintf(name, sizeof(name), "response %.*s #%" PRIu64, TT_TOPIC_LEN, svc, (uint64_t)r->request_id);
	slice(x, r->h.pid, r->h.tid, name, r->h.ts, r->h.ts, "takt.service");
	request_args(x, r);
	if (!r->send_ns)
		return; /* no send seen: nothing to draw an arrow from */
	id = ++x->flows;
	flow(x, "request", 's', id, r->client_pid, r->client_tid, r->send_ns);
	if (r->server_take_ns && r->response_n == 1)
		flow(x, "request", 't', id, r->server_pid, r->server_tid, r->server_take_ns);
	if (r->respond_ns)
		flow(x, "request", 't', id, r->server_pid, r->server_tid, r->respond_ns);
	flow(x, "request", 'f', id, r->h.pid, r->h.tid, r->h.ts);
}

static void export_names(struct exporter *x)
{
	for (unsigned i = 0; i < NAME_SLOTS; i++) {
		const struct thread_name *t = &x->names[i];
		char tn[40];

		if (!t->tid)
			continue;
		if (t->comm[0])
			snprintf(tn, sizeof(tn), "%.*s", TT_COMM_LEN, t->comm);
		else
			snprintf(tn, sizeof(tn), "tid %u", t->tid);
		ev_begin(x);
		fprintf(x->f, "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%u,\"tid\":%u,\"args\":{\"name\":", t->pid,
			t->tid);
		tt_json_str(x->f, tn, sizeof(tn));
		fputs("}}", x->f);
		if (t->tid == t->pid) {
			ev_begin(x);
			fprintf(x->f, "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%u,\"args\":{\"name\":", t->pid);
			snprintf(tn, sizeof(tn), "%.*s (%u)", TT_COMM_LEN, t->comm[0] ? t->comm : "?", t->pid);
			tt_json_str(x->f, tn, sizeof(tn));
			fputs("}}", x->f);
		}
	}
}

static int export_event(struct exporter *x, const struct tt_hdr *h)
{
	switch (h->type) {
	case EV_SAMPLE:
		if (h->size < sizeof(struct tt_sample))
			return -EBADMSG;
		export_sample(x, (const struct tt_sample *)h);
		break;
	case EV_PUBLISH:
		if (h->size < sizeof(struct tt_publish))
			return -EBADMSG;
		export_publish(x, (const struct tt_publish *)h);
		break;
	case EV_DISPATCH:
		if (h->size < sizeof(struct tt_dispatch))
			return -EBADMSG;
		export_dispatch(x, (const struct tt_dispatch *)h);
		break;
	case EV_REQUEST:
		if (h->size < sizeof(struct tt_request))
			return -EBADMSG;
		export_request(x, (const struct tt_request *)h);
		break;
	case EV_COUNTERS: {
		/* A recording made before wakeups_unseen existed ends its
		 * counters at oncpu_inferred (the rest stays 0). */
		size_t n;

		if (h->size < offsetof(struct tt_file_counters, c.wakeups_unseen))
			return -EBADMSG;
		n = h->size - offsetof(struct tt_file_counters, c);
		memset(&x->counters, 0, sizeof(x->counters));
		memcpy(&x->counters, &((const struct tt_file_counters *)h)->c,
		       n < sizeof(x->counters) ? n : sizeof(x->counters));
		x->have_counters = true;
		break;
	}
	default:
		break; /* newer event kinds: skipped */
	}
	return 0;
}

static int read_header(struct reader *rd, struct tt_file_header *fh)
{
	int r = reader_fill(rd, sizeof(*fh));

	if (r < 0)
		return r == -ENODATA ? -EBADMSG : r;
	memcpy(fh, rd->buf + rd->off, sizeof(*fh));
	if (memcmp(fh->magic, TT_FILE_MAGIC, 8) || fh->version != 1 || fh->header_size != sizeof(*fh))
		return -EPROTO;
	rd->off += sizeof(*fh);
	return 0;
}

static void export_trailer(struct exporter *x, const struct tt_file_header *fh)
{
	fprintf(x->f, "\n],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{\"tool\":\"takt-trace\",\"domain\":");
	tt_json_str(x->f, fh->domain, sizeof(fh->domain));
	fprintf(x->f, ",\"samples\":%" PRIu64 ",\"publishes\":%" PRIu64 ",\"dispatches\":%" PRIu64
		",\"responses\":%" PRIu64 ",\"unanswered\":%" PRIu64, x->samples, x->publishes, x->dispatches,
		x->responses, x->unanswered);
	if (x->have_counters) {
		fputs(",\"counters\":", x->f);
		tt_print_counters_obj(x->f, &x->counters);
	}
	fputs("}}\n", x->f);
}

static int export_all(struct reader *rd, struct exporter *x, struct tt_file_header *fh)
{
	const struct tt_hdr *h;
	int r = read_header(rd, fh);

	if (r < 0)
		return r;
	fputs("{\"traceEvents\":[", x->f);
	while ((r = reader_next(rd, &h)) > 0)
		if ((r = export_event(x, h)) < 0)
			break;
	if (r < 0)
		return r;
	export_names(x);
	export_trailer(x, fh);
	return 0;
}

static void export_said(const struct exporter *x, const char *in, const char *out)
{
	fprintf(stderr, TT_PROG ": %s: %" PRIu64 " samples, %" PRIu64 " publishes, %" PRIu64 " dispatches, ", in,
		x->samples, x->publishes, x->dispatches);
	if (x->responses || x->unanswered)
		fprintf(stderr, "%" PRIu64 " responses to requests (%" PRIu64 " never answered), ", x->responses,
			x->unanswered);
	fprintf(stderr, "%" PRIu64 " flows -> %s\n", x->flows, out);
}

int tt_export_perfetto(const char *in, const char *out, bool verbose)
{
	struct reader rd = {0};
	struct exporter *x = calloc(1, sizeof(*x));
	struct tt_file_header fh;
	int r = -ENOMEM;

	if (!x)
		goto out;
	x->first = true;
	rd.f = fopen(in, "rbe");
	if (!rd.f) {
		fprintf(stderr, TT_PROG ": cannot open %s: %s\n", in, strerror(errno));
		r = 1;
		goto out;
	}
	x->f = strcmp(out, "-") ? fopen(out, "we") : stdout;
	if (!x->f) {
		fprintf(stderr, TT_PROG ": cannot create %s: %s\n", out, strerror(errno));
		r = 1;
		goto out;
	}
	if (LZ4F_isError(LZ4F_createDecompressionContext(&rd.dctx, LZ4F_VERSION)))
		goto out;
	r = export_all(&rd, x, &fh);
	if (r == -EPROTO)
		fprintf(stderr, TT_PROG ": %s is not a takt-trace recording (or of another version)\n", in);
	else if (r < 0)
		fprintf(stderr, TT_PROG ": %s: %s\n", in, r == -EBADMSG ? "damaged or truncated recording" : strerror(-r));
	else if (verbose || strcmp(out, "-"))
		export_said(x, in, out);
out:
	r = r != 0 ? 1 : 0;
	if (x && x->f && x->f != stdout && fclose(x->f) != 0)
		r = 1;
	if (rd.f)
		fclose(rd.f);
	LZ4F_freeDecompressionContext(rd.dctx);
	free(rd.buf);
	free(x);
	return r;
}
