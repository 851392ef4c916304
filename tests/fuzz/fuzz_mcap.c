/* fuzz_mcap.c - libFuzzer target: MCAP files, as `takt play` and
 * `takt record --recover` read them (shm-broker/mcap.c, recording.c).
 *
 * Each input is a file (a memfd) that goes through every reading path of
 * the tool, with the tool's own functions:
 *   - the streamed read (mcap_reader_next: records in file order, chunks
 *     opened, their CRCs checked, LZ4 frames decompressed), twice with
 *     mcap_reader_rewind between, as play reads a file for each pass;
 *   - play's first pass (recording_scan: channels, types, largest
 *     message per channel);
 *   - --recover's copy (recording_recover) into a second memfd, which
 *     mcap_writer_close finishes.
 * Besides a sanitizer report or a leak, an input fails when
 *   - a record read has its offset outside the file, before the one read
 *     before it or past the end mcap_reader_where gives after it, a NULL
 *     string, or a stop comes without a reason;
 *   - the read after a rewind gives other records than the first;
 *   - play's pass counts other messages than the streamed read gives on
 *     channels declared before them;
 *   - the copy fails other than where the reader stopped;
 *   - the recovered file is not a whole, valid MCAP file: read through
 *     its index (check_indexed: Footer, summary and its CRC, Data End and
 *     the data section's CRC, Statistics, every Chunk Index to its chunk,
 *     the chunk's CRC, every Message Index to its messages, each message
 *     in its chunk's time range on a channel of the summary) and streamed
 *     to its end, it must hold exactly the messages the input's streamed
 *     read gave on channels declared before them, in order.
 * The indexed reader is this file's own: takt reads files only streamed.
 */
#include "mcap.h"
#include "recording.h"

#include <errno.h>
#include <inttypes.h>
#include <lz4frame.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "takt-fuzz-mcap: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

static int memfd_of(const void *data, size_t size)
{
	int fd = memfd_create("takt-fuzz-mcap", MFD_CLOEXEC);
	size_t done = 0;

	if (fd < 0)
		fail("memfd_create: %s", strerror(errno));
	while (done < size) {
		ssize_t n = write(fd, (const char *)data + done, size - done);

		if (n <= 0)
			fail("write: %s", strerror(errno));
		done += (size_t)n;
	}
	return fd;
}

/* What a streamed read gave: its records, hashed in order, and its
 * messages on channels declared before them (what --recover keeps). */
struct tally {
	uint64_t records, messages;
	uint64_t hash;     /* of every record */
	uint64_t msg_hash; /* of the kept messages: channel, sequence, times, data */
	bool known[65536];
	uint16_t chans[65536], schemas[65536]; /* the ids of its channel and schema records */
	uint32_t n_chans, n_schemas;
};

/* Empties t (by its lists of ids: the 65536-entry tables are not swept
 * for each input). */
static void tally_reset(struct tally *t)
{
	for (uint32_t i = 0; i < t->n_chans; i++)
		t->known[t->chans[i]] = false;
	t->n_chans = t->n_schemas = 0;
	t->records = t->messages = t->hash = t->msg_hash = 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static uint64_t fnv_str(uint64_t h, const char *s)
{
	if (!s)
		fail("a record read with a NULL string");
	return fnv(h, s, strlen(s) + 1);
}

static uint64_t hash_message(uint64_t h, uint16_t channel, uint32_t sequence, uint64_t log_time,
			     uint64_t publish_time, const void *data, size_t size)
{
	h = fnv(h, &channel, sizeof(channel));
	h = fnv(h, &sequence, sizeof(sequence));
	h = fnv(h, &log_time, sizeof(log_time));
	h = fnv(h, &publish_time, sizeof(publish_time));
	h = fnv(h, &size, sizeof(size));
	return fnv(h, data, size);
}

static void tally_record(struct tally *t, const struct mcap_record *m)
{
	uint64_t h = fnv(t->hash, &m->op, 1);

	h = fnv(h, &m->offset, sizeof(m->offset));
	switch (m->op) {
	case MCAP_OP_SCHEMA:
		h = fnv(h, &m->schema.id, 2);
		if (t->n_schemas < 65536)
			t->schemas[t->n_schemas++] = m->schema.id;
		h = fnv_str(fnv_str(h, m->schema.name), m->schema.encoding);
		if (m->schema.data_size && !m->schema.data)
			fail("a schema with %zu bytes of data at NULL", m->schema.data_size);
		h = fnv(h, m->schema.data, m->schema.data_size);
		break;
	case MCAP_OP_CHANNEL:
		h = fnv(h, &m->channel.id, 2);
		h = fnv(h, &m->channel.schema_id, 2);
		h = fnv_str(fnv_str(h, m->channel.topic), m->channel.message_encoding);
		if (!t->known[m->channel.id])
			t->chans[t->n_chans++] = m->channel.id;
		t->known[m->channel.id] = true;
		break;
	case MCAP_OP_MESSAGE:
		if (m->message.size && !m->message.data)
			fail("a message of %zu bytes at NULL", m->message.size);
		h = hash_message(h, m->message.channel, m->message.sequence, m->message.log_time,
				 m->message.publish_time, m->message.data, m->message.size);
		if (t->known[m->message.channel]) {
			t->msg_hash = hash_message(t->msg_hash, m->message.channel, m->message.sequence,
						   m->message.log_time, m->message.publish_time, m->message.data,
						   m->message.size);
			t->messages++;
		}
		break;
	case MCAP_OP_METADATA:
		h = fnv_str(h, m->metadata.name);
		if (m->metadata.n && (!m->metadata.keys || !m->metadata.values))
			fail("metadata of %zu pairs without its arrays", m->metadata.n);
		for (size_t i = 0; i < m->metadata.n; i++)
			h = fnv_str(fnv_str(h, m->metadata.keys[i]), m->metadata.values[i]);
		break;
	default:
		fail("a record of opcode 0x%02x handed out", m->op);
	}
	t->hash = h;
	t->records++;
}

/* Reads r to where it stops, checking each record against the file of
 * size bytes: what mcap_reader_next returned last. */
static int stream(struct mcap_reader *r, uint64_t size, struct tally *t)
{
	struct mcap_record m;
	uint64_t last = 0, where;
	const char *why;
	int k;

	tally_reset(t);
	while ((k = mcap_reader_next(r, &m)) == 1) {
		where = mcap_reader_where(r, &why);
		if (m.offset < MCAP_MAGIC_SIZE + 9 || m.offset >= size || m.offset < last || m.offset >= where)
			fail("a record at %" PRIu64 " (the one before at %" PRIu64 ", read up to %" PRIu64
			     ", %" PRIu64 " bytes)",
			     m.offset, last, where, size);
		last = m.offset;
		tally_record(t, &m);
	}
	where = mcap_reader_where(r, &why);
	if (where > size)
		fail("read up to %" PRIu64 " of %" PRIu64 " bytes", where, size);
	if (k < 0 && !why[0])
		fail("the read stops (%s) without a reason", strerror(-k));
	if (k < 0 && k != -ENODATA && k != -EBADMSG && k != -ENOTSUP && k != -ENOMEM)
		fail("the read stops with %s, which mcap.h does not name", strerror(-k));
	return k;
}

/* play's first pass, on tables kept between inputs (zeroed again after
 * each: 65536 channels and schemas). */
static struct recording_scan scan;

static void check_scan(struct mcap_reader *r, const struct tally *t, int k_stream)
{
	uint64_t sum = 0;
	int k;

	if (!scan.ch) {
		scan.ch = calloc(65536, sizeof(*scan.ch));
		scan.schema = calloc(65536, sizeof(*scan.schema));
		if (!scan.ch || !scan.schema)
			fail("out of memory");
	}
	k = recording_scan(r, &scan);
	if (k != k_stream || scan.messages != t->messages)
		fail("play's pass gives %" PRIu64 " messages and %d, the streamed read %" PRIu64 " and %d",
		     scan.messages, k, t->messages, k_stream);
	for (uint32_t i = 0; i < t->n_chans; i++) {
		struct recording_chan *ch = &scan.ch[t->chans[i]];

		if (!ch->known)
			fail("play's pass misses channel %u", t->chans[i]);
		sum += ch->count;
		memset(ch, 0, sizeof(*ch));
	}
	for (uint32_t i = 0; i < t->n_schemas; i++)
		memset(scan.schema[t->schemas[i]], 0, sizeof(scan.schema[0]));
	if (sum != scan.messages) /* some on channels the streamed read did not see declared */
		fail("play's pass counts %" PRIu64 " messages, on its channels %" PRIu64, scan.messages, sum);
	scan.messages = 0;
}

/* ---- the recovered file, read through its index ---- */

struct file {
	const uint8_t *p;
	uint64_t n;
};

/* A cursor over a byte range; reads past its end fail the input. */
struct cur {
	const uint8_t *p;
	uint64_t n, at;
	const char *what;
};

static uint64_t get(struct cur *c, int bytes)
{
	uint64_t v = 0;

	if (c->n - c->at < (uint64_t)bytes)
		fail("recovered file: %s overruns its record", c->what);
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)c->p[c->at + (uint64_t)i] << (8 * i);
	c->at += (uint64_t)bytes;
	return v;
}

static const uint8_t *get_bytes(struct cur *c, uint64_t n)
{
	const uint8_t *p = c->p + c->at;

	if (c->n - c->at < n)
		fail("recovered file: %s overruns its record", c->what);
	c->at += n;
	return p;
}

/* The record at off (op, body): its body as a cursor. */
static struct cur record_at(const struct file *f, uint64_t off, uint8_t op, const char *what)
{
	struct cur c = {.p = f->p, .n = f->n, .at = off, .what = what};
	uint64_t len;

	if (off > f->n || get(&c, 1) != op)
		fail("recovered file: no %s at %" PRIu64, what, off);
	len = get(&c, 8);
	if (len > f->n - c.at)
		fail("recovered file: the %s at %" PRIu64 " overruns the file", what, off);
	return (struct cur){.p = f->p + c.at, .n = len, .what = what};
}

struct indexed {
	bool schema[65536], channel[65536];
	uint64_t count[65536];      /* messages per channel, in the chunks */
	uint16_t ids[65536];        /* the channels of the summary */
	uint64_t messages, msg_hash; /* in chunk index order, then file order */
	uint32_t chunks, channels, schemas, metadata;
	uint64_t chunk_bytes;        /* the chunks' uncompressed records */
	uint8_t *z;                  /* a chunk's records */
	size_t z_cap;
	uint64_t *starts;            /* and its messages' offsets in it */
	bool *seen;
	size_t starts_cap;
};

/* The chunk a Chunk Index points at: fields alike, records decompressed,
 * CRC, every record a message in the index's time range on a channel of
 * the summary; then its Message Indexes cover those messages exactly. */
static void check_chunk(const struct file *f, struct indexed *x, struct cur *ci, LZ4F_dctx *dctx)
{
	uint64_t t0 = get(ci, 8), t1 = get(ci, 8), off = get(ci, 8), len = get(ci, 8);
	uint32_t map = (uint32_t)get(ci, 4);
	struct cur idx = {.p = get_bytes(ci, map), .n = map, .what = "a chunk index's map"};
	uint64_t mi_len, zsize, usize, crc, n_msg = 0, n_idx = 0;
	struct cur ch = record_at(f, off, MCAP_OP_CHUNK, "chunk");
	uint32_t ilen;
	const uint8_t *icomp;

	mi_len = get(ci, 8);
	ilen = (uint32_t)get(ci, 4);
	icomp = get_bytes(ci, ilen);
	zsize = get(ci, 8);
	usize = get(ci, 8);
	if (9 + ch.n != len)
		fail("recovered file: chunk at %" PRIu64 " is %" PRIu64 " bytes, its index says %" PRIu64, off, 9 + ch.n,
		     len);
	if (get(&ch, 8) != t0 || get(&ch, 8) != t1 || get(&ch, 8) != usize)
		fail("recovered file: chunk at %" PRIu64 " and its index differ in times or size", off);
	crc = get(&ch, 4);
	{
		uint64_t clen = get(&ch, 4);
		const uint8_t *cs = get_bytes(&ch, clen);
		uint64_t zlen = get(&ch, 8);
		const uint8_t *z = get_bytes(&ch, zlen);

		if (clen != ilen || memcmp(cs, icomp, clen))
			fail("recovered file: chunk at %" PRIu64 " and its index differ in compression", off);
		if (ch.at != ch.n || zlen != zsize)
			fail("recovered file: chunk at %" PRIu64 ": records of %" PRIu64 " bytes, index %" PRIu64, off,
			     zlen, zsize);
		if (usize >= x->z_cap) {
			x->z = realloc(x->z, usize + 1);
			x->z_cap = usize + 1;
			if (!x->z)
				fail("out of memory");
		}
		if (clen == 0) {
			if (zlen != usize)
				fail("recovered file: uncompressed chunk at %" PRIu64 " of two sizes", off);
			memcpy(x->z, z, zlen);
		} else if (clen == 3 && !memcmp(cs, "lz4", 3)) {
			size_t dst = usize, src = zlen, k;

			LZ4F_resetDecompressionContext(dctx);
			k = LZ4F_decompress(dctx, x->z, &dst, z, &src, NULL);
			if (LZ4F_isError(k) || k || dst != usize || src != zlen)
				fail("recovered file: chunk at %" PRIu64 " does not decompress", off);
		} else {
			fail("recovered file: chunk at %" PRIu64 " compressed with '%.*s'", off, (int)clen, cs);
		}
		if (mcap_crc32(0, x->z, usize) != crc)
			fail("recovered file: chunk at %" PRIu64 ": CRC", off);
	}
	/* its records: messages only (the writer puts nothing else there) */
	for (struct cur r = {.p = x->z, .n = usize, .what = "a chunk's record"}; r.at < r.n;) {
		uint64_t at = r.at, rlen;
		struct cur m;
		uint16_t chan;
		uint64_t lt;

		if (get(&r, 1) != MCAP_OP_MESSAGE)
			fail("recovered file: chunk at %" PRIu64 " holds a record other than a message", off);
		rlen = get(&r, 8);
		m = (struct cur){.p = get_bytes(&r, rlen), .n = rlen, .what = "a message"};
		chan = (uint16_t)get(&m, 2);
		{
			uint32_t seq = (uint32_t)get(&m, 4);
			uint64_t pt;

			lt = get(&m, 8);
			pt = get(&m, 8);
			x->msg_hash = hash_message(x->msg_hash, chan, seq, lt, pt, m.p + m.at, m.n - m.at);
		}
		if (!x->channel[chan])
			fail("recovered file: a message on channel %u, not in the summary", chan);
		if (lt < t0 || lt > t1)
			fail("recovered file: a message at %" PRIu64 " outside its chunk's [%" PRIu64 ", %" PRIu64 "]",
			     lt, t0, t1);
		if (n_msg == x->starts_cap) {
			x->starts_cap = x->starts_cap ? 2 * x->starts_cap : 256;
			x->starts = realloc(x->starts, x->starts_cap * sizeof(*x->starts));
			x->seen = realloc(x->seen, x->starts_cap * sizeof(*x->seen));
			if (!x->starts || !x->seen)
				fail("out of memory");
		}
		x->starts[n_msg] = at;
		x->seen[n_msg++] = false;
		x->count[chan]++;
	}
	x->messages += n_msg;
	x->chunk_bytes += usize;
	/* its message indexes: between the chunk and mi_len bytes on */
	while (idx.at < idx.n) {
		uint16_t chan = (uint16_t)get(&idx, 2);
		uint64_t mo = get(&idx, 8);
		struct cur mi = record_at(f, mo, MCAP_OP_MESSAGE_INDEX, "message index");
		uint32_t alen;

		if (mo < off + len || mo + 9 + mi.n > off + len + mi_len)
			fail("recovered file: message index at %" PRIu64 " outside its chunk's", mo);
		if (get(&mi, 2) != chan)
			fail("recovered file: message index at %" PRIu64 " of another channel", mo);
		alen = (uint32_t)get(&mi, 4);
		if (alen % 16 || mi.at + alen != mi.n)
			fail("recovered file: message index at %" PRIu64 ": %u bytes of entries", mo, alen);
		for (uint32_t e = 0; e < alen / 16; e++) {
			uint64_t lt = get(&mi, 8), mo2 = get(&mi, 8);
			size_t lo = 0, hi = n_msg;
			struct cur m;

			while (lo < hi) { /* the message starting at mo2 */
				size_t mid = (lo + hi) / 2;

				if (x->starts[mid] < mo2)
					lo = mid + 1;
				else
					hi = mid;
			}
			if (lo == n_msg || x->starts[lo] != mo2 || x->seen[lo])
				fail("recovered file: message index entry %" PRIu64 " of channel %u: no message there, "
				     "or one indexed twice",
				     mo2, chan);
			x->seen[lo] = true;
			m = (struct cur){.p = x->z + mo2 + 9, .n = 2 + 4 + 8, .what = "an indexed message"};
			if (get(&m, 2) != chan || (get(&m, 4), get(&m, 8)) != lt)
				fail("recovered file: message index entry %" PRIu64 " names another channel or time", mo2);
			n_idx++;
		}
	}
	if (n_idx != n_msg)
		fail("recovered file: chunk at %" PRIu64 " holds %" PRIu64 " messages, its indexes %" PRIu64, off, n_msg,
		     n_idx);
}

/* Reads the summary's records of one group at [start, end): the opcode
 * each must have is op (0: any the writer writes). */
static void check_summary(const struct file *f, struct indexed *x, uint64_t start, uint64_t end, LZ4F_dctx *dctx,
			  uint64_t *stats_at)
{
	for (uint64_t at = start; at < end;) {
		uint8_t op = f->p[at];
		struct cur c;

		switch (op) {
		case MCAP_OP_SCHEMA:
			c = record_at(f, at, op, "summary schema");
			x->schema[get(&c, 2)] = true;
			x->schemas++;
			break;
		case MCAP_OP_CHANNEL: {
			uint16_t id, schema;

			c = record_at(f, at, op, "summary channel");
			id = (uint16_t)get(&c, 2);
			schema = (uint16_t)get(&c, 2);
			if (schema && !x->schema[schema])
				fail("recovered file: channel %u of schema %u, not in the summary", id, schema);
			if (x->channel[id])
				fail("recovered file: channel %u twice in the summary", id);
			x->channel[id] = true;
			x->ids[x->channels++] = id;
			break;
		}
		case MCAP_OP_STATISTICS:
			c = record_at(f, at, op, "statistics");
			if (*stats_at)
				fail("recovered file: two Statistics records");
			*stats_at = at;
			break;
		case MCAP_OP_METADATA_INDEX: {
			uint64_t mo, mlen;
			struct cur m;

			c = record_at(f, at, op, "metadata index");
			mo = get(&c, 8);
			mlen = get(&c, 8);
			get_bytes(&c, get(&c, 4)); /* its name */
			m = record_at(f, mo, MCAP_OP_METADATA, "metadata");
			if (9 + m.n != mlen || mo + mlen > end)
				fail("recovered file: metadata at %" PRIu64 " is not as its index says", mo);
			x->metadata++;
			break;
		}
		case MCAP_OP_CHUNK_INDEX:
			c = record_at(f, at, op, "chunk index");
			check_chunk(f, x, &c, dctx);
			x->chunks++;
			break;
		default:
			fail("recovered file: a record of opcode 0x%02x in the summary at %" PRIu64, op, at);
		}
		if (c.at != c.n && (op == MCAP_OP_CHUNK_INDEX || op == MCAP_OP_METADATA_INDEX))
			fail("recovered file: %" PRIu64 " bytes left in the record at %" PRIu64, c.n - c.at, at);
		at = (uint64_t)(c.p - f->p) + c.n;
		if (at > end)
			fail("recovered file: the summary's record at %" PRIu64 " overruns it", at);
	}
}

/* The Statistics record against what the chunks hold. */
static void check_statistics(const struct file *f, const struct indexed *x, uint64_t at)
{
	struct cur c = record_at(f, at, MCAP_OP_STATISTICS, "statistics"), map;
	uint64_t messages = get(&c, 8);
	uint16_t schemas = (uint16_t)get(&c, 2);
	uint32_t channels = (uint32_t)get(&c, 4), n = 0;

	get(&c, 4); /* attachments */
	if (messages != x->messages || schemas != x->schemas || channels != x->channels ||
	    get(&c, 4) != x->metadata || get(&c, 4) != x->chunks)
		fail("recovered file: Statistics count other messages, schemas, channels, metadata or chunks than the "
		     "file holds");
	get_bytes(&c, 16); /* times: the chunk indexes were checked against their messages */
	map = (struct cur){.n = get(&c, 4), .what = "statistics' map"};
	map.p = get_bytes(&c, map.n);
	while (map.at < map.n) {
		uint16_t id = (uint16_t)get(&map, 2);

		if (get(&map, 8) != x->count[id] || !x->channel[id])
			fail("recovered file: Statistics count %u's messages wrong", id);
		n++;
	}
	if (n != x->channels)
		fail("recovered file: Statistics count %u channels' messages of %u", n, x->channels);
}

/* The recovered file read through its index: the Footer, the summary and
 * its offsets, Data End, and every chunk (check_chunk). */
static void check_indexed(const struct file *f, struct indexed *x)
{
	static LZ4F_dctx *dctx;
	const uint64_t footer_len = 1 + 8 + 8 + 8 + 4;
	uint64_t foot, sum, offs, de, stats_at = 0;
	struct cur c;

	if (!dctx && LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
		fail("out of memory");
	if (f->n < 2 * MCAP_MAGIC_SIZE + footer_len + 13 || memcmp(f->p, MCAP_MAGIC, MCAP_MAGIC_SIZE) ||
	    memcmp(f->p + f->n - MCAP_MAGIC_SIZE, MCAP_MAGIC, MCAP_MAGIC_SIZE))
		fail("recovered file: no magic at both ends");
	foot = f->n - MCAP_MAGIC_SIZE - footer_len;
	c = record_at(f, foot, MCAP_OP_FOOTER, "footer");
	sum = get(&c, 8);
	offs = get(&c, 8);
	if (c.n != 20 || sum < MCAP_MAGIC_SIZE + 13 || sum > offs || offs > foot)
		fail("recovered file: a footer of %" PRIu64 " bytes, summary at %" PRIu64 ", offsets at %" PRIu64, c.n,
		     sum, offs);
	if (get(&c, 4) != mcap_crc32(0, f->p + sum, foot + footer_len - 4 - sum))
		fail("recovered file: the summary's CRC");
	de = sum - 13;
	c = record_at(f, de, MCAP_OP_DATA_END, "data end");
	if (c.n != 4 || get(&c, 4) != mcap_crc32(0, f->p, de))
		fail("recovered file: Data End, or the data section's CRC");
	check_summary(f, x, sum, offs, dctx, &stats_at);
	if (!stats_at)
		fail("recovered file: no Statistics");
	check_statistics(f, x, stats_at);
	for (uint64_t at = offs; at < foot;) { /* each group: records of one opcode */
		uint8_t op;
		uint64_t start, len;

		c = record_at(f, at, MCAP_OP_SUMMARY_OFFSET, "summary offset");
		op = (uint8_t)get(&c, 1);
		start = get(&c, 8);
		len = get(&c, 8);
		if (start < sum || len > offs - start || start + len > offs)
			fail("recovered file: a summary offset out of the summary");
		for (uint64_t g = start; g < start + len;) {
			struct cur r = record_at(f, g, op, "record of a summary group");

			g = (uint64_t)(r.p - f->p) + r.n;
		}
		at = (uint64_t)(c.p - f->p) + c.n;
	}
}

/* --recover's copy of the input into a memfd, and the checks on it. */
static void check_recover(int in, const struct tally *t, int k_stream)
{
	static struct indexed x;
	static struct tally again;
	struct mcap_reader *r, *ro;
	struct mcap_writer *w;
	uint64_t messages = 0, skipped = 0;
	const char *why;
	struct stat st;
	struct file f;
	void *map;
	int out = memfd_create("takt-fuzz-mcap-out", MFD_CLOEXEC), wfd = out >= 0 ? dup(out) : -1, k, e;

	if (wfd < 0)
		fail("memfd_create: %s", strerror(errno));
	if (mcap_reader_open(in, &r) < 0)
		fail("the input opens once, not twice");
	/* as cli_recover_files, with small chunks: the index has more to say */
	e = mcap_writer_open(wfd, &(struct mcap_writer_opts){.library = "takt-fuzz-mcap", .chunk_size = 1024}, &w);
	if (e < 0)
		fail("mcap_writer_open: %s", strerror(-e));
	k = recording_recover(r, w, &messages, &skipped);
	mcap_reader_where(r, &why);
	if (k < 0 && !why[0])
		fail("recovery stops on a record it read: %s", strerror(-k));
	if (k != k_stream)
		fail("recovery reads to %d, the streamed read to %d", k, k_stream);
	e = mcap_writer_close(w);
	mcap_reader_close(r);
	if (e < 0)
		fail("mcap_writer_close: %s", strerror(-e));
	if (messages != t->messages)
		fail("recovery copies %" PRIu64 " messages of %" PRIu64, messages, t->messages);

	if (fstat(out, &st) < 0)
		fail("fstat: %s", strerror(errno));
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, out, 0);
	if (map == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	f = (struct file){.p = map, .n = (uint64_t)st.st_size};
	memset(x.schema, 0, sizeof(x.schema));
	for (uint32_t i = 0; i < x.channels; i++)
		x.channel[x.ids[i]] = false, x.count[x.ids[i]] = 0;
	x.messages = x.chunks = x.channels = x.schemas = x.metadata = 0;
	x.msg_hash = x.chunk_bytes = 0;
	check_indexed(&f, &x);
	if (x.messages != messages || x.msg_hash != t->msg_hash)
		fail("recovered file: its index leads to %" PRIu64 " messages, other than the %" PRIu64 " copied",
		     x.messages, messages);

	/* and streamed, as play would read it, to its end */
	if (mcap_reader_open(out, &ro) < 0)
		fail("recovered file: mcap_reader_open refuses it");
	k = stream(ro, f.n, &again);
	mcap_reader_where(ro, &why);
	if (k != 0)
		fail("recovered file: the streamed read stops at %s (%s)", why, strerror(-k));
	if (again.messages != messages || again.msg_hash != t->msg_hash)
		fail("recovered file: streamed, %" PRIu64 " messages, other than the %" PRIu64 " copied",
		     again.messages, messages);
	mcap_reader_close(ro);
	munmap(map, (size_t)st.st_size);
	close(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tally first, second;
	struct mcap_reader *r;
	int fd = memfd_of(data, size), k;

	if (mcap_reader_open(fd, &r) < 0) {
		close(fd);
		return 0;
	}
	/* play: the first pass, then each pass after a rewind */
	k = stream(r, size, &first);
	mcap_reader_rewind(r);
	if (stream(r, size, &second) != k || second.records != first.records || second.hash != first.hash)
		fail("read again after a rewind: %" PRIu64 " records, other than the %" PRIu64 " of the first read",
		     second.records, first.records);
	mcap_reader_rewind(r);
	check_scan(r, &first, k);
	mcap_reader_close(r);
	check_recover(fd, &first, k);
	close(fd);
	return 0;
}
