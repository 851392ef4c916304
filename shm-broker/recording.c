/* recording.c - the copy of `takt record --recover` and the first pass of
 * `takt play` (recording.h): the records of a file, as mcap_reader_next
 * gives them, into a new file or into a table of channels. Nothing here
 * prints or needs a domain, so the fuzz target runs exactly this.
 */
#include "recording.h"

#include <errno.h>
#include <stdio.h>

int recording_recover(struct mcap_reader *rd, struct mcap_writer *w, uint64_t *messages, uint64_t *skipped)
{
	struct mcap_record m;
	int k, r = 0;

	while ((k = mcap_reader_next(rd, &m)) == 1) {
		switch (m.op) {
		case MCAP_OP_SCHEMA:
			if (!m.schema.id) /* 0 means no schema (the spec): nothing a channel can name */
				break;
			r = mcap_writer_schema(w, m.schema.id, m.schema.name, m.schema.encoding, m.schema.data,
					       m.schema.data_size);
			break;
		case MCAP_OP_CHANNEL:
			r = mcap_writer_channel(w, m.channel.id, m.channel.schema_id, m.channel.topic,
						m.channel.message_encoding, NULL, NULL, 0);
			if (r == -ENOENT) /* its schema never declared: the channel and its messages are kept */
				r = mcap_writer_channel(w, m.channel.id, 0, m.channel.topic, m.channel.message_encoding,
							NULL, NULL, 0);
			break;
		case MCAP_OP_MESSAGE:
			r = mcap_writer_message(w, m.message.channel, m.message.sequence, m.message.log_time,
						m.message.publish_time, m.message.data, m.message.size);
			if (r == -ENOENT) { /* a message before its channel: not readable */
				(*skipped)++;
				r = 0;
			} else if (!r) {
				(*messages)++;
			}
			break;
		case MCAP_OP_METADATA:
			r = mcap_writer_metadata(w, m.metadata.name, m.metadata.keys, m.metadata.values, m.metadata.n);
			break;
		}
		if (r == -EEXIST) /* a schema or channel repeated (identical, as the spec wants) */
			r = 0;
		if (r < 0)
			return r;
	}
	return k;
}

int recording_scan(struct mcap_reader *rd, struct recording_scan *s)
{
	struct mcap_record m;
	int k;

	while ((k = mcap_reader_next(rd, &m)) == 1) {
		if (m.op == MCAP_OP_SCHEMA) {
			snprintf(s->schema[m.schema.id], sizeof(s->schema[0]), "%s", m.schema.name);
		} else if (m.op == MCAP_OP_CHANNEL) {
			struct recording_chan *ch = &s->ch[m.channel.id];

			ch->known = true;
			snprintf(ch->topic, sizeof(ch->topic), "%s", m.channel.topic);
			ch->schema = m.channel.schema_id;
		} else if (m.op == MCAP_OP_MESSAGE && s->ch[m.message.channel].known) {
			struct recording_chan *ch = &s->ch[m.message.channel];

			if (m.message.size > ch->max_size)
				ch->max_size = m.message.size;
			ch->count++;
			s->messages++;
		}
	}
	return k;
}
