/* mcap.h - MCAP files (https://mcap.dev/spec): the writer of `takt record`
 * and the streaming reader of `takt play` and `takt record --recover`.
 *
 * The writer lays a file out as the official writers do:
 *   magic, Header, {Schema, Channel} ... Chunk, Message Index ... Chunk, ...,
 *   Data End, summary (Schemas, Channels, Statistics, Metadata Indexes,
 *   Chunk Indexes), Summary Offsets, Footer, magic.
 * Schemas and channels stand in the data section before the first chunk
 * that uses them; messages go into LZ4-frame chunks (liblz4), each followed
 * by one Message Index record per channel it holds. A chunk is written
 * whole, in one go, when it closes, so a file cut short (a crash, SIGKILL)
 * holds every chunk closed before the cut: the reader reads it up to there.
 *
 * Every integer is little endian; a record is an opcode (u8), its length
 * (u64) and its body. Functions return 0 or a negative errno.
 */
#ifndef TAKT_MCAP_H
#define TAKT_MCAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mcap_op {
	MCAP_OP_HEADER = 0x01,
	MCAP_OP_FOOTER = 0x02,
	MCAP_OP_SCHEMA = 0x03,
	MCAP_OP_CHANNEL = 0x04,
	MCAP_OP_MESSAGE = 0x05,
	MCAP_OP_CHUNK = 0x06,
	MCAP_OP_MESSAGE_INDEX = 0x07,
	MCAP_OP_CHUNK_INDEX = 0x08,
	MCAP_OP_ATTACHMENT = 0x09,
	MCAP_OP_ATTACHMENT_INDEX = 0x0a,
	MCAP_OP_STATISTICS = 0x0b,
	MCAP_OP_METADATA = 0x0c,
	MCAP_OP_METADATA_INDEX = 0x0d,
	MCAP_OP_SUMMARY_OFFSET = 0x0e,
	MCAP_OP_DATA_END = 0x0f,
};

#define MCAP_MAGIC "\x89MCAP0\r\n"
#define MCAP_MAGIC_SIZE 8

/* CRC-32 (IEEE 802.3, as zlib's crc32): crc is 0 for the first piece,
 * then the previous result. */
uint32_t mcap_crc32(uint32_t crc, const void *buf, size_t n);

struct mcap_writer;

struct mcap_writer_opts {
	const char *profile;  /* the Header's profile; "" for none */
	const char *library;  /* the Header's library: who wrote the file */
	size_t chunk_size;    /* uncompressed bytes at which a chunk closes; 0: 1 MiB */
	bool no_compression;  /* chunks stored, not LZ4-compressed (tests) */
};

/* Writes the leading magic and the Header to fd (a new, empty file);
 * the writer owns fd from then on (mcap_writer_close closes it).
 * -ENOMEM; -EINVAL; the errno of a failed write. */
int mcap_writer_open(int fd, const struct mcap_writer_opts *opts, struct mcap_writer **out);

/* A Schema record with the given id (1..65535, unused so far): name,
 * encoding and data (data_size bytes, may be 0). -EEXIST, -EINVAL. */
int mcap_writer_schema(struct mcap_writer *w, uint16_t id, const char *name, const char *encoding, const void *data,
		       size_t data_size);
/* A Channel record: id (0..65535, unused so far), schema_id (0: none, or
 * a schema written before), the topic, the message encoding and n
 * metadata pairs keys[i] = values[i]. -EEXIST, -EINVAL, -ENOENT (schema). */
int mcap_writer_channel(struct mcap_writer *w, uint16_t id, uint16_t schema_id, const char *topic,
			const char *message_encoding, const char *const *keys, const char *const *values, size_t n);
/* A Metadata record (name and n pairs), indexed in the summary. */
int mcap_writer_metadata(struct mcap_writer *w, const char *name, const char *const *keys, const char *const *values,
			 size_t n);

/* Room in the open chunk for a Message of size bytes on channel: returns
 * where its data goes (write it before the next call on w), or NULL with
 * *err set (-ENOENT unknown channel, -ENOMEM, a write error; the open
 * chunk is closed first when the message would not fit its size). */
void *mcap_writer_message_begin(struct mcap_writer *w, uint16_t channel, uint32_t sequence, uint64_t log_time,
				uint64_t publish_time, size_t size, int *err);
/* begin + copy. */
int mcap_writer_message(struct mcap_writer *w, uint16_t channel, uint32_t sequence, uint64_t log_time,
			uint64_t publish_time, const void *data, size_t size);
/* Closes the open chunk, if it holds anything: compresses it and writes
 * it with its message indexes. */
int mcap_writer_flush(struct mcap_writer *w);

/* What the writer did so far. */
struct mcap_writer_stats {
	uint64_t messages;
	uint64_t message_bytes; /* payload bytes */
	uint64_t file_bytes;    /* written to the file (the open chunk not yet) */
	uint64_t open_bytes;    /* uncompressed bytes in the open chunk */
	uint32_t chunks;
};
void mcap_writer_stats(const struct mcap_writer *w, struct mcap_writer_stats *out);

/* Closes the open chunk, writes Data End, the summary, the summary
 * offsets, the Footer and the trailing magic, closes the file and frees w.
 * The first error met on the way, or 0. NULL is fine. */
int mcap_writer_close(struct mcap_writer *w);
/* Frees w and closes its file without finishing it (an error path): the
 * file then holds what was written, as after a crash. NULL is fine. */
void mcap_writer_abandon(struct mcap_writer *w);

/* The streaming reader: the records of the data section in file order,
 * chunks opened (their CRC checked) and their records given one by one. */
struct mcap_reader;

struct mcap_record {
	uint8_t op; /* MCAP_OP_SCHEMA, _CHANNEL, _MESSAGE, _METADATA */
	uint64_t offset; /* of the record, or of its chunk's record */
	union {
		struct {
			uint16_t id;
			const char *name, *encoding;
			const void *data;
			size_t data_size;
		} schema;
		struct {
			uint16_t id, schema_id;
			const char *topic, *message_encoding;
		} channel;
		struct {
			uint16_t channel;
			uint32_t sequence;
			uint64_t log_time, publish_time;
			const void *data;
			size_t size;
		} message;
		struct {
			const char *name;
			size_t n; /* pairs: keys[i], values[i] */
			const char *const *keys, *const *values;
		} metadata;
	};
};

/* Checks the leading magic and the Header of fd (which stays the
 * caller's). -EBADMSG not an MCAP file; -ENOMEM; a read's errno. */
int mcap_reader_open(int fd, struct mcap_reader **out);
/* The next record: 1 and *out (its pointers valid until the next call),
 * 0 at the end of the data section (Data End, or the summary or Footer
 * where a writer left Data End out). Negative where the data stops being
 * readable: -ENODATA the file ends within a record (cut short); -EBADMSG
 * a malformed record, or a chunk whose CRC or decompression fails;
 * -ENOTSUP a chunk compressed other than "" or "lz4"; -ENOMEM. Records
 * read before stay valid: a recovery keeps them. mcap_reader_where says
 * where and why it stopped. */
int mcap_reader_next(struct mcap_reader *r, struct mcap_record *out);
/* The offset of the first byte not read as a whole top-level record, and
 * a phrase for the last error ("" when none). */
uint64_t mcap_reader_where(const struct mcap_reader *r, const char **why);
/* Back to the first record after the Header (play --loop). */
void mcap_reader_rewind(struct mcap_reader *r);
void mcap_reader_close(struct mcap_reader *r);

#endif
