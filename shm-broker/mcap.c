/* mcap.c - writing and reading MCAP files (mcap.h has the layout).
 *
 * The writer builds each record in memory and writes it with one write();
 * it keeps two running CRCs, the data section's (from the leading magic
 * to Data End, as the official writers count it) and the summary's (from
 * the summary's start to the Footer's summary_offset_start field). The
 * open chunk is a buffer of uncompressed records plus, per channel, the
 * (log time, offset) pairs of its Message Index; closing it compresses
 * the buffer into one LZ4 frame and writes the Chunk record, its Message
 * Index records and nothing else, so a reader of a file cut anywhere
 * finds whole chunks up to the cut.
 *
 * The reader checks every length against the record it stands in and
 * against the file, so a cut or corrupted file ends the data instead of
 * being read past.
 */
#include "mcap.h"

#include <errno.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* CRC-32, slice-by-8 (the writer checks every byte twice: the chunk's
 * uncompressed records and the data section). */
static uint32_t crc_table[8][256];

__attribute__((constructor)) static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t mcap_crc32(uint32_t crc, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	crc = ~crc;
	for (; n >= 8; n -= 8, p += 8) {
		uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);

		crc = crc_table[7][a & 0xff] ^ crc_table[6][(a >> 8) & 0xff] ^ crc_table[5][(a >> 16) & 0xff] ^
		      crc_table[4][a >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
		      crc_table[0][p[7]];
	}
	while (n--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* A growing byte buffer and the little-endian encoders of the spec. */
struct buf {
	uint8_t *p;
	size_t len, cap;
	int err; /* -ENOMEM once an append failed: the buffer is then wrong */
};

static uint8_t *buf_room(struct buf *b, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		uint8_t *p;

		while (cap < b->len + n)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->err = -ENOMEM;
			return NULL;
		}
		b->p = p;
		b->cap = cap;
	}
	return b->p + b->len;
}

static void put(struct buf *b, const void *src, size_t n)
{
	uint8_t *d = buf_room(b, n);

	if (d && n) { /* (src may be NULL when n is 0: an empty schema, say) */
		memcpy(d, src, n);
		b->len += n;
	}
}

static void put_le(struct buf *b, uint64_t v, int bytes)
{
	uint8_t d[8];

	for (int i = 0; i < bytes; i++)
		d[i] = (uint8_t)(v >> (8 * i));
	put(b, d, (size_t)bytes);
}

static void put_u8(struct buf *b, uint8_t v) { put_le(b, v, 1); }
static void put_u16(struct buf *b, uint16_t v) { put_le(b, v, 2); }
static void put_u32(struct buf *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put_le(b, v, 8); }

static void put_str(struct buf *b, const char *s)
{
	size_t n = strlen(s);

	put_u32(b, (uint32_t)n);
	put(b, s, n);
}

/* Starts a record: its opcode and a length patched by rec_end. */
static size_t rec_begin(struct buf *b, uint8_t op)
{
	put_u8(b, op);
	put_u64(b, 0);
	return b->len;
}

static void rec_end(struct buf *b, size_t body)
{
	uint64_t len = b->len - body;

	if (b->err)
		return;
	for (int i = 0; i < 8; i++)
		b->p[body - 8 + (size_t)i] = (uint8_t)(len >> (8 * i));
}

/* A map or array: its byte length (u32) patched by group_end. */
static size_t group_begin(struct buf *b)
{
	put_u32(b, 0);
	return b->len;
}

static void group_end(struct buf *b, size_t start)
{
	uint32_t len = (uint32_t)(b->len - start);

	if (b->err)
		return;
	for (int i = 0; i < 4; i++)
		b->p[start - 4 + (size_t)i] = (uint8_t)(len >> (8 * i));
}

static void put_pairs(struct buf *b, const char *const *keys, const char *const *values, size_t n)
{
	size_t g = group_begin(b);

	for (size_t i = 0; i < n; i++) {
		put_str(b, keys[i]);
		put_str(b, values[i]);
	}
	group_end(b, g);
}

/* The writer. */
struct wchan {
	uint16_t id;
	uint64_t count;   /* messages in the file */
	uint64_t *index;  /* this chunk's Message Index: (log time, offset) pairs */
	size_t n_index, cap_index;
};

struct mcap_writer {
	int fd;
	int err;            /* the first error: sticky, every later call returns it */
	uint64_t pos;       /* bytes in the file */
	uint32_t data_crc;  /* of [0, pos) while in the data section */
	uint32_t sum_crc;   /* of the summary, once it started */
	bool in_summary;
	size_t chunk_size;
	bool no_compression;

	struct buf rec;     /* the record being written */
	struct buf chunk;   /* the open chunk's records */
	uint64_t chunk_start, chunk_end; /* its messages' log times */
	uint8_t *z;         /* compressed chunk */
	size_t z_cap;

	/* the summary, as records ready to be written again */
	struct buf schemas, channels, chunk_indexes, metadata_indexes;
	uint32_t n_schemas, n_metadata, n_chunks;
	bool schema_used[65536];
	uint32_t slot_of[65536]; /* channel id -> index in chans + 1 */
	struct wchan *chans;
	size_t n_chans;

	uint64_t messages, message_bytes, start_time, end_time;
};

static void w_fail(struct mcap_writer *w, int err)
{
	if (!w->err)
		w->err = err;
}

static int w_write(struct mcap_writer *w, const void *p, size_t n)
{
	const uint8_t *s = p;

	if (w->err)
		return w->err;
	if (w->in_summary)
		w->sum_crc = mcap_crc32(w->sum_crc, p, n);
	else
		w->data_crc = mcap_crc32(w->data_crc, p, n);
	w->pos += n;
	while (n) {
		ssize_t k = write(w->fd, s, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			w_fail(w, k < 0 ? -errno : -EIO);
			return w->err;
		}
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Writes w->rec (one or more whole records) and empties it. */
static int w_rec_flush(struct mcap_writer *w)
{
	int r;

	if (w->rec.err)
		w_fail(w, w->rec.err);
	r = w_write(w, w->rec.p, w->rec.len);
	w->rec.len = 0;
	return r;
}

int mcap_writer_open(int fd, const struct mcap_writer_opts *opts, struct mcap_writer **out)
{
	struct mcap_writer *w;
	size_t body;
	int r;

	if (fd < 0 || !opts || !opts->library || !out)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = fd;
	w->chunk_size = opts->chunk_size ? opts->chunk_size : 1u << 20;
	w->no_compression = opts->no_compression;
	put(&w->rec, MCAP_MAGIC, MCAP_MAGIC_SIZE);
	body = rec_begin(&w->rec, MCAP_OP_HEADER);
	put_str(&w->rec, opts->profile ? opts->profile : "");
	put_str(&w->rec, opts->library);
	rec_end(&w->rec, body);
	r = w_rec_flush(w);
	if (r < 0) {
		w->fd = -1; /* the caller's still */
		mcap_writer_abandon(w);
		return r;
	}
	*out = w;
	return 0;
}

int mcap_writer_schema(struct mcap_writer *w, uint16_t id, const char *name, const char *encoding, const void *data,
		       size_t data_size)
{
	size_t body;

	if (!w || !id || !name || !encoding || (data_size && !data) || data_size > UINT32_MAX)
		return -EINVAL;
	if (w->err)
		return w->err;
	if (w->schema_used[id])
		return -EEXIST;
	body = rec_begin(&w->rec, MCAP_OP_SCHEMA);
	put_u16(&w->rec, id);
	put_str(&w->rec, name);
	put_str(&w->rec, encoding);
	put_u32(&w->rec, (uint32_t)data_size);
	put(&w->rec, data, data_size);
	rec_end(&w->rec, body);
	put(&w->schemas, w->rec.p, w->rec.len);
	if (w->schemas.err)
		w_fail(w, w->schemas.err);
	w->schema_used[id] = true;
	w->n_schemas++;
	return w_rec_flush(w);
}

int mcap_writer_channel(struct mcap_writer *w, uint16_t id, uint16_t schema_id, const char *topic,
			const char *message_encoding, const char *const *keys, const char *const *values, size_t n)
{
	struct wchan *c;
	size_t body;

	if (!w || !topic || !message_encoding || (n && (!keys || !values)))
		return -EINVAL;
	if (w->err)
		return w->err;
	if (w->slot_of[id])
		return -EEXIST;
	if (schema_id && !w->schema_used[schema_id])
		return -ENOENT;
	c = realloc(w->chans, (w->n_chans + 1) * sizeof(*c));
	if (!c)
		return -ENOMEM;
	w->chans = c;
	w->chans[w->n_chans] = (struct wchan){.id = id};
	w->slot_of[id] = (uint32_t)++w->n_chans;
	body = rec_begin(&w->rec, MCAP_OP_CHANNEL);
	put_u16(&w->rec, id);
	put_u16(&w->rec, schema_id);
	put_str(&w->rec, topic);
	put_str(&w->rec, message_encoding);
	put_pairs(&w->rec, keys, values, n);
	rec_end(&w->rec, body);
	put(&w->channels, w->rec.p, w->rec.len);
	if (w->channels.err)
		w_fail(w, w->channels.err);
	return w_rec_flush(w);
}

int mcap_writer_metadata(struct mcap_writer *w, const char *name, const char *const *keys, const char *const *values,
			 size_t n)
{
	uint64_t offset;
	size_t body;

	if (!w || !name || (n && (!keys || !values)))
		return -EINVAL;
	if (w->err)
		return w->err;
	offset = w->pos;
	body = rec_begin(&w->rec, MCAP_OP_METADATA);
	put_str(&w->rec, name);
	put_pairs(&w->rec, keys, values, n);
	rec_end(&w->rec, body);
	/* its index, for the summary: offset, length, name */
	body = rec_begin(&w->metadata_indexes, MCAP_OP_METADATA_INDEX);
	put_u64(&w->metadata_indexes, offset);
	put_u64(&w->metadata_indexes, w->rec.len);
	put_str(&w->metadata_indexes, name);
	rec_end(&w->metadata_indexes, body);
	if (w->metadata_indexes.err)
		w_fail(w, w->metadata_indexes.err);
	w->n_metadata++;
	return w_rec_flush(w);
}

static int index_add(struct wchan *c, uint64_t log_time, uint64_t offset)
{
	if (c->n_index == c->cap_index) {
		size_t cap = c->cap_index ? 2 * c->cap_index : 256;
		uint64_t *p = realloc(c->index, cap * 2 * sizeof(*p));

		if (!p)
			return -ENOMEM;
		c->index = p;
		c->cap_index = cap;
	}
	c->index[2 * c->n_index] = log_time;
	c->index[2 * c->n_index + 1] = offset;
	c->n_index++;
	return 0;
}

void *mcap_writer_message_begin(struct mcap_writer *w, uint16_t channel, uint32_t sequence, uint64_t log_time,
				uint64_t publish_time, size_t size, int *err)
{
	const size_t head = 2 + 4 + 8 + 8;
	struct wchan *c;
	size_t body, offset;
	uint8_t *data;
	int r = w ? w->err : -EINVAL;

	if (!r && !w->slot_of[channel])
		r = -ENOENT;
	if (!r && w->chunk.len && w->chunk.len + 9 + head + size > w->chunk_size)
		r = mcap_writer_flush(w);
	if (r) {
		*err = r;
		return NULL;
	}
	c = &w->chans[w->slot_of[channel] - 1];
	offset = w->chunk.len;
	body = rec_begin(&w->chunk, MCAP_OP_MESSAGE);
	put_u16(&w->chunk, channel);
	put_u32(&w->chunk, sequence);
	put_u64(&w->chunk, log_time);
	put_u64(&w->chunk, publish_time);
	data = buf_room(&w->chunk, size);
	r = w->chunk.err ? w->chunk.err : index_add(c, log_time, offset);
	if (r) {
		w_fail(w, r);
		*err = r;
		return NULL;
	}
	w->chunk.len += size;
	rec_end(&w->chunk, body);
	if (!offset || log_time < w->chunk_start)
		w->chunk_start = log_time;
	if (!offset || log_time > w->chunk_end)
		w->chunk_end = log_time;
	if (!w->messages || log_time < w->start_time)
		w->start_time = log_time;
	if (!w->messages || log_time > w->end_time)
		w->end_time = log_time;
	w->messages++;
	w->message_bytes += size;
	c->count++;
	return data;
}

int mcap_writer_message(struct mcap_writer *w, uint16_t channel, uint32_t sequence, uint64_t log_time,
			uint64_t publish_time, const void *data, size_t size)
{
	int err = 0;
	void *d = mcap_writer_message_begin(w, channel, sequence, log_time, publish_time, size, &err);

	if (!d)
		return err;
	memcpy(d, data, size);
	return 0;
}

/* The chunk's records, compressed (or not): where and how long. */
static int chunk_compress(struct mcap_writer *w, const uint8_t **out, size_t *out_size)
{
	LZ4F_preferences_t prefs = {.frameInfo = {.contentSize = w->chunk.len}};
	size_t bound, n;

	if (w->no_compression) {
		*out = w->chunk.p;
		*out_size = w->chunk.len;
		return 0;
	}
	bound = LZ4F_compressFrameBound(w->chunk.len, &prefs);
	if (bound > w->z_cap) {
		uint8_t *z = realloc(w->z, bound);

		if (!z)
			return -ENOMEM;
		w->z = z;
		w->z_cap = bound;
	}
	n = LZ4F_compressFrame(w->z, w->z_cap, w->chunk.p, w->chunk.len, &prefs);
	if (LZ4F_isError(n))
		return -EIO;
	*out = w->z;
	*out_size = n;
	return 0;
}

/* The Message Index records of the chunk at chunk_offset, written after
 * it, and its Chunk Index for the summary. */
static int chunk_indexes(struct mcap_writer *w, uint64_t chunk_offset, uint64_t chunk_length, size_t compressed)
{
	struct buf *ci = &w->chunk_indexes;
	uint64_t index_start = w->pos;
	size_t body, map, g;

	for (size_t i = 0; i < w->n_chans; i++) {
		struct wchan *c = &w->chans[i];

		if (!c->n_index)
			continue;
		body = rec_begin(&w->rec, MCAP_OP_MESSAGE_INDEX);
		put_u16(&w->rec, c->id);
		g = group_begin(&w->rec);
		for (size_t k = 0; k < 2 * c->n_index; k++)
			put_u64(&w->rec, c->index[k]);
		group_end(&w->rec, g);
		rec_end(&w->rec, body);
	}
	body = rec_begin(ci, MCAP_OP_CHUNK_INDEX);
	put_u64(ci, w->chunk_start);
	put_u64(ci, w->chunk_end);
	put_u64(ci, chunk_offset);
	put_u64(ci, chunk_length);
	map = group_begin(ci);
	{
		uint64_t at = index_start;

		for (size_t i = 0; i < w->n_chans; i++) {
			struct wchan *c = &w->chans[i];

			if (!c->n_index)
				continue;
			put_u16(ci, c->id);
			put_u64(ci, at);
			at += 1 + 8 + 2 + 4 + 16 * c->n_index;
			c->n_index = 0;
		}
	}
	group_end(ci, map);
	put_u64(ci, w->rec.len); /* message_index_length */
	put_str(ci, w->no_compression ? "" : "lz4");
	put_u64(ci, compressed);
	put_u64(ci, w->chunk.len);
	rec_end(ci, body);
	if (ci->err)
		w_fail(w, ci->err);
	return w_rec_flush(w);
}

int mcap_writer_flush(struct mcap_writer *w)
{
	uint64_t chunk_offset;
	const uint8_t *z;
	size_t z_size, body;
	uint32_t crc;
	int r;

	if (!w)
		return -EINVAL;
	if (w->err || !w->chunk.len)
		return w->err;
	if (w->chunk.err) {
		w_fail(w, w->chunk.err);
		return w->err;
	}
	crc = mcap_crc32(0, w->chunk.p, w->chunk.len);
	r = chunk_compress(w, &z, &z_size);
	if (r < 0) {
		w_fail(w, r);
		return r;
	}
	chunk_offset = w->pos;
	body = rec_begin(&w->rec, MCAP_OP_CHUNK);
	put_u64(&w->rec, w->chunk_start);
	put_u64(&w->rec, w->chunk_end);
	put_u64(&w->rec, w->chunk.len);
	put_u32(&w->rec, crc);
	put_str(&w->rec, w->no_compression ? "" : "lz4");
	put_u64(&w->rec, z_size);
	/* the record's length counts the records written after it */
	{
		uint64_t len = w->rec.len - body + z_size;

		for (int i = 0; i < 8 && !w->rec.err; i++)
			w->rec.p[body - 8 + (size_t)i] = (uint8_t)(len >> (8 * i));
	}
	r = w_rec_flush(w);
	if (!r)
		r = w_write(w, z, z_size);
	if (!r)
		r = chunk_indexes(w, chunk_offset, w->pos - chunk_offset, z_size);
	w->chunk.len = 0;
	w->n_chunks++;
	return r;
}

void mcap_writer_stats(const struct mcap_writer *w, struct mcap_writer_stats *out)
{
	*out = (struct mcap_writer_stats){
		.messages = w->messages,
		.message_bytes = w->message_bytes,
		.file_bytes = w->pos,
		.open_bytes = w->chunk.len,
		.chunks = w->n_chunks,
	};
}

/* Writes a summary group (records already encoded): its offset record
 * goes to offs when it is not empty. */
static void summary_group(struct mcap_writer *w, uint8_t op, const struct buf *g, struct buf *offs)
{
	size_t body;

	if (!g->len)
		return;
	body = rec_begin(offs, MCAP_OP_SUMMARY_OFFSET);
	put_u8(offs, op);
	put_u64(offs, w->pos);
	put_u64(offs, g->len);
	rec_end(offs, body);
	if (g->err)
		w_fail(w, g->err);
	w_write(w, g->p, g->len);
}

static void statistics(struct mcap_writer *w, struct buf *b)
{
	size_t body = rec_begin(b, MCAP_OP_STATISTICS), map;

	put_u64(b, w->messages);
	put_u16(b, (uint16_t)w->n_schemas);
	put_u32(b, (uint32_t)w->n_chans);
	put_u32(b, 0); /* attachments */
	put_u32(b, w->n_metadata);
	put_u32(b, w->n_chunks);
	put_u64(b, w->messages ? w->start_time : 0);
	put_u64(b, w->messages ? w->end_time : 0);
	map = group_begin(b);
	for (size_t i = 0; i < w->n_chans; i++) {
		put_u16(b, w->chans[i].id);
		put_u64(b, w->chans[i].count);
	}
	group_end(b, map);
	rec_end(b, body);
}

static void w_free(struct mcap_writer *w)
{
	for (size_t i = 0; i < w->n_chans; i++)
		free(w->chans[i].index);
	free(w->chans);
	free(w->rec.p);
	free(w->chunk.p);
	free(w->z);
	free(w->schemas.p);
	free(w->channels.p);
	free(w->chunk_indexes.p);
	free(w->metadata_indexes.p);
	if (w->fd >= 0)
		close(w->fd);
	free(w);
}

int mcap_writer_close(struct mcap_writer *w)
{
	struct buf stats = {0}, offs = {0};
	uint64_t summary_start, offsets_start;
	size_t body;
	int r;

	if (!w)
		return 0;
	mcap_writer_flush(w);
	body = rec_begin(&w->rec, MCAP_OP_DATA_END);
	put_u32(&w->rec, w->data_crc);
	rec_end(&w->rec, body);
	w_rec_flush(w);

	w->in_summary = true;
	summary_start = w->pos;
	statistics(w, &stats);
	summary_group(w, MCAP_OP_SCHEMA, &w->schemas, &offs);
	summary_group(w, MCAP_OP_CHANNEL, &w->channels, &offs);
	summary_group(w, MCAP_OP_STATISTICS, &stats, &offs);
	summary_group(w, MCAP_OP_METADATA_INDEX, &w->metadata_indexes, &offs);
	summary_group(w, MCAP_OP_CHUNK_INDEX, &w->chunk_indexes, &offs);
	offsets_start = w->pos;
	if (offs.err)
		w_fail(w, offs.err);
	w_write(w, offs.p, offs.len);

	/* the Footer: its CRC covers the summary, the offsets and the
	 * Footer's own fields up to summary_offset_start */
	body = rec_begin(&w->rec, MCAP_OP_FOOTER);
	put_u64(&w->rec, summary_start);
	put_u64(&w->rec, offsets_start);
	put_u32(&w->rec, 0);
	rec_end(&w->rec, body);
	if (!w->rec.err) {
		uint32_t crc = mcap_crc32(w->sum_crc, w->rec.p, w->rec.len - 4);

		for (int i = 0; i < 4; i++)
			w->rec.p[w->rec.len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
	}
	put(&w->rec, MCAP_MAGIC, MCAP_MAGIC_SIZE);
	w_rec_flush(w);
	free(stats.p);
	free(offs.p);

	r = w->err;
	if (close(w->fd) < 0 && !r)
		r = -errno;
	w->fd = -1;
	w_free(w);
	return r;
}

void mcap_writer_abandon(struct mcap_writer *w)
{
	if (w)
		w_free(w);
}

/* The reader. */
#define READ_MAX (1ull << 31) /* largest record or chunk it allocates for */

struct mcap_reader {
	int fd;
	uint64_t size;      /* of the file, when opened */
	uint64_t first;     /* the first record after the Header */
	uint64_t pos;       /* the next top-level record */
	uint64_t good;      /* end of the last whole top-level record read */
	const char *why;
	struct buf body;    /* the top-level record read */
	struct buf chunk;   /* a chunk's records, decompressed */
	size_t at;          /* the next record in chunk, when in_chunk */
	bool in_chunk;
	uint64_t chunk_offset;
	LZ4F_dctx *dctx;
	/* metadata pairs handed out */
	const char **kv;
	size_t kv_cap;
	char *strs;         /* NUL-terminated copies of the strings handed out */
	size_t strs_len, strs_cap;
};

/* A cursor over a record's body: reads fail (ok = false) past its end. */
struct cur {
	const uint8_t *p;
	size_t n, at;
	bool ok;
};

static uint64_t get_le(struct cur *c, int bytes)
{
	uint64_t v = 0;

	if (!c->ok || c->n - c->at < (size_t)bytes) {
		c->ok = false;
		return 0;
	}
	for (int i = 0; i < bytes; i++)
		v |= (uint64_t)c->p[c->at + (size_t)i] << (8 * i);
	c->at += (size_t)bytes;
	return v;
}

static const uint8_t *get_bytes(struct cur *c, size_t n)
{
	const uint8_t *p;

	if (!c->ok || c->n - c->at < n) {
		c->ok = false;
		return NULL;
	}
	p = c->p + c->at;
	c->at += n;
	return p;
}

/* Room for the NUL-terminated copies of a record's strings: at most its
 * length plus one NUL per 4-byte length prefix. */
static int strs_reserve(struct mcap_reader *r, size_t n)
{
	size_t need = n + n / 4 + 1;

	r->strs_len = 0;
	if (need > r->strs_cap) {
		char *p = realloc(r->strs, need);

		if (!p)
			return -ENOMEM;
		r->strs = p;
		r->strs_cap = need;
	}
	return 0;
}

/* A string of the record as a NUL-terminated copy (valid until the next
 * mcap_reader_next; strs_reserve made room); NULL when it does not fit
 * the record. */
static const char *get_str(struct mcap_reader *r, struct cur *c)
{
	size_t n = (size_t)get_le(c, 4);
	const uint8_t *s = get_bytes(c, n);
	char *p;

	if (!s || r->strs_len + n + 1 > r->strs_cap) {
		c->ok = false;
		return NULL;
	}
	p = r->strs + r->strs_len;
	memcpy(p, s, n);
	p[n] = 0;
	r->strs_len += n + 1;
	return p;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
	uint8_t *d = p;

	while (n) {
		ssize_t k = pread(fd, d, n, (off_t)off);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -ENODATA;
		d += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

int mcap_reader_open(int fd, struct mcap_reader **out)
{
	uint8_t head[MCAP_MAGIC_SIZE + 9];
	struct mcap_reader *r;
	struct stat st;
	uint64_t len;
	int e;

	if (fd < 0 || !out)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	e = pread_all(fd, head, sizeof(head), 0);
	if (e == -ENODATA)
		return -EBADMSG;
	if (e < 0)
		return e;
	if (memcmp(head, MCAP_MAGIC, MCAP_MAGIC_SIZE) || head[MCAP_MAGIC_SIZE] != MCAP_OP_HEADER)
		return -EBADMSG;
	len = get_le(&(struct cur){.p = head + MCAP_MAGIC_SIZE + 1, .n = 8, .ok = true}, 8);
	if (len > (uint64_t)st.st_size - sizeof(head)) /* the Header itself is cut */
		return -EBADMSG;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->dctx = NULL;
	if (LZ4F_isError(LZ4F_createDecompressionContext(&r->dctx, LZ4F_VERSION))) {
		free(r);
		return -ENOMEM;
	}
	r->fd = fd;
	r->size = (uint64_t)st.st_size;
	r->first = r->pos = r->good = sizeof(head) + len;
	r->why = "";
	*out = r;
	return 0;
}

static int stop(struct mcap_reader *r, int err, const char *why)
{
	r->why = why;
	return err;
}

/* Decompresses the chunk in r->body into r->chunk and checks its CRC. */
static int chunk_open(struct mcap_reader *r)
{
	struct cur c = {.p = r->body.p, .n = r->body.len, .ok = true};
	uint64_t usize, zsize;
	uint32_t crc;
	const uint8_t *z, *comp;
	size_t comp_len;
	bool lz4;

	get_le(&c, 8); /* message start and end times */
	get_le(&c, 8);
	usize = get_le(&c, 8);
	crc = (uint32_t)get_le(&c, 4);
	comp_len = (size_t)get_le(&c, 4);
	comp = get_bytes(&c, comp_len);
	zsize = get_le(&c, 8);
	z = c.ok && zsize <= c.n - c.at ? get_bytes(&c, (size_t)zsize) : NULL;
	if (!z || usize > READ_MAX)
		return stop(r, -EBADMSG, "a malformed chunk record");
	lz4 = comp_len == 3 && !memcmp(comp, "lz4", 3);
	/* the sizes first: the buffer is made only for records the chunk
	 * can hold (LZ4 makes at most 255 bytes of one: a match length grows
	 * by 255 a byte) */
	if (comp_len && !lz4)
		return stop(r, -ENOTSUP, "a chunk compressed with other than lz4");
	if (!lz4 && zsize != usize)
		return stop(r, -EBADMSG, "an uncompressed chunk whose sizes differ");
	if (lz4 && usize / 255 > zsize)
		return stop(r, -EBADMSG, "a chunk whose LZ4 frame does not decompress to its size");
	r->chunk.len = 0;
	if (!buf_room(&r->chunk, (size_t)usize ? (size_t)usize : 1))
		return stop(r, -ENOMEM, "out of memory");
	if (!lz4) {
		memcpy(r->chunk.p, z, (size_t)zsize);
	} else {
		size_t dst = (size_t)usize, src = (size_t)zsize, k;

		LZ4F_resetDecompressionContext(r->dctx);
		k = LZ4F_decompress(r->dctx, r->chunk.p, &dst, z, &src, NULL);
		if (LZ4F_isError(k) || k != 0 || dst != usize || src != zsize)
			return stop(r, -EBADMSG, "a chunk whose LZ4 frame does not decompress to its size");
	}
	r->chunk.len = (size_t)usize;
	if (crc && mcap_crc32(0, r->chunk.p, r->chunk.len) != crc)
		return stop(r, -EBADMSG, "a chunk whose CRC does not match");
	r->at = 0;
	r->in_chunk = true;
	return 0;
}

/* Parses a Schema, Channel, Message or Metadata record body into out:
 * 1, 0 for another kind (skipped), -EBADMSG. */
static int parse(struct mcap_reader *r, uint8_t op, const uint8_t *p, size_t n, struct mcap_record *out)
{
	struct cur c = {.p = p, .n = n, .ok = true};

	if (op != MCAP_OP_MESSAGE && strs_reserve(r, n) < 0)
		return -ENOMEM;
	out->op = op;
	switch (op) {
	case MCAP_OP_SCHEMA:
		out->schema.id = (uint16_t)get_le(&c, 2);
		out->schema.name = get_str(r, &c);
		out->schema.encoding = get_str(r, &c);
		out->schema.data_size = (size_t)get_le(&c, 4);
		out->schema.data = get_bytes(&c, out->schema.data_size);
		break;
	case MCAP_OP_CHANNEL:
		out->channel.id = (uint16_t)get_le(&c, 2);
		out->channel.schema_id = (uint16_t)get_le(&c, 2);
		out->channel.topic = get_str(r, &c);
		out->channel.message_encoding = get_str(r, &c);
		break;
	case MCAP_OP_MESSAGE:
		out->message.channel = (uint16_t)get_le(&c, 2);
		out->message.sequence = (uint32_t)get_le(&c, 4);
		out->message.log_time = get_le(&c, 8);
		out->message.publish_time = get_le(&c, 8);
		out->message.size = c.ok ? n - c.at : 0;
		out->message.data = p + c.at;
		break;
	case MCAP_OP_METADATA: {
		size_t len, end, k = 0;

		out->metadata.name = get_str(r, &c);
		len = (size_t)get_le(&c, 4);
		if (!c.ok || len > n - c.at)
			return -EBADMSG;
		end = c.at + len;
		/* at most len / 8 pairs (two empty strings each): keys in
		 * kv[0, max), values in kv[max, 2 max) */
		size_t max = len / 8;

		if (2 * max > r->kv_cap) {
			const char **kv = realloc(r->kv, 2 * max * sizeof(*kv));

			if (!kv)
				return -ENOMEM;
			r->kv = kv;
			r->kv_cap = 2 * max;
		}
		while (c.ok && c.at < end && k < max) {
			r->kv[k] = get_str(r, &c);
			r->kv[max + k] = get_str(r, &c);
			k++;
		}
		if (c.at != end)
			c.ok = false;
		out->metadata.n = k;
		out->metadata.keys = r->kv;
		out->metadata.values = max ? r->kv + max : r->kv; /* no pairs: kv may be NULL */
		break;
	}
	default:
		return 0;
	}
	return c.ok ? 1 : -EBADMSG;
}

/* The next record of the open chunk: 1, 0 when it has no more. */
static int chunk_next(struct mcap_reader *r, struct mcap_record *out)
{
	while (r->at < r->chunk.len) {
		struct cur c = {.p = r->chunk.p, .n = r->chunk.len, .at = r->at, .ok = true};
		uint8_t op = (uint8_t)get_le(&c, 1);
		uint64_t len = get_le(&c, 8);
		int k;

		if (!c.ok || len > c.n - c.at) {
			r->in_chunk = false;
			return stop(r, -EBADMSG, "a record that overruns its chunk");
		}
		r->at = c.at + (size_t)len;
		k = parse(r, op, c.p + c.at, (size_t)len, out);
		if (k < 0) {
			r->in_chunk = false;
			return stop(r, k, "a malformed record in a chunk");
		}
		if (k) {
			out->offset = r->chunk_offset;
			return 1;
		}
	}
	r->in_chunk = false;
	return 0;
}

int mcap_reader_next(struct mcap_reader *r, struct mcap_record *out)
{
	for (;;) {
		uint8_t head[9];
		uint64_t at = r->pos, len;
		uint8_t op;
		int k;

		if (r->in_chunk) {
			k = chunk_next(r, out);
			if (k)
				return k;
		}
		if (r->size - at < sizeof(head))
			return stop(r, -ENODATA, "the file ends within a record");
		k = pread_all(r->fd, head, sizeof(head), at);
		if (k < 0)
			return stop(r, k, k == -ENODATA ? "the file ends within a record" : "a read failed");
		op = head[0];
		len = get_le(&(struct cur){.p = head + 1, .n = 8, .ok = true}, 8);
		if (!op)
			return stop(r, -EBADMSG, "a record of opcode 0 (zeroes, not written)");
		if (op == MCAP_OP_DATA_END || op == MCAP_OP_FOOTER || op == MCAP_OP_CHUNK_INDEX ||
		    op == MCAP_OP_STATISTICS || op == MCAP_OP_SUMMARY_OFFSET || op == MCAP_OP_ATTACHMENT_INDEX ||
		    op == MCAP_OP_METADATA_INDEX || op == MCAP_OP_HEADER)
			return 0; /* the data section ends */
		if (len > r->size - at - sizeof(head))
			return stop(r, -ENODATA, "the file ends within a record");
		r->pos = at + sizeof(head) + len;
		if (op == MCAP_OP_MESSAGE_INDEX || op == MCAP_OP_ATTACHMENT ||
		    (op != MCAP_OP_CHUNK && op != MCAP_OP_SCHEMA && op != MCAP_OP_CHANNEL && op != MCAP_OP_MESSAGE &&
		     op != MCAP_OP_METADATA)) {
			r->good = r->pos;
			continue; /* not wanted, or unknown: skipped */
		}
		if (len > READ_MAX) {
			r->pos = at;
			return stop(r, -EBADMSG, "a record too large to read");
		}
		r->body.len = 0;
		if (!buf_room(&r->body, (size_t)len ? (size_t)len : 1)) {
			r->pos = at;
			return stop(r, -ENOMEM, "out of memory");
		}
		k = pread_all(r->fd, r->body.p, (size_t)len, at + sizeof(head));
		if (k < 0) {
			r->pos = at;
			return stop(r, k, k == -ENODATA ? "the file ends within a record" : "a read failed");
		}
		r->body.len = (size_t)len;
		if (op == MCAP_OP_CHUNK) {
			r->chunk_offset = at;
			k = chunk_open(r);
			if (k < 0) {
				r->pos = at;
				return k;
			}
			r->good = r->pos;
			continue;
		}
		k = parse(r, op, r->body.p, r->body.len, out);
		if (k < 0) {
			r->pos = at;
			return stop(r, k, "a malformed record");
		}
		r->good = r->pos;
		out->offset = at;
		return 1;
	}
}

uint64_t mcap_reader_where(const struct mcap_reader *r, const char **why)
{
	if (why)
		*why = r->why;
	return r->good;
}

void mcap_reader_rewind(struct mcap_reader *r)
{
	r->pos = r->good = r->first;
	r->in_chunk = false;
	r->why = "";
}

void mcap_reader_close(struct mcap_reader *r)
{
	if (!r)
		return;
	LZ4F_freeDecompressionContext(r->dctx);
	free(r->body.p);
	free(r->chunk.p);
	free(r->kv);
	free(r->strs);
	free(r);
}
