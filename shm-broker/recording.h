/* recording.h - what `takt record --recover` and `takt play` make of a
 * recording's records, apart from any domain: the copy --recover makes
 * and play's first pass. cli_record.c opens the files and prints;
 * tests/fuzz/fuzz_mcap.c calls these on its inputs as cli_record.c does.
 */
#ifndef TAKT_RECORDING_H
#define TAKT_RECORDING_H

#include "mcap.h"

#include <takt/ipc.h>

/* Copies the records rd reads into w: schemas, channels, metadata and
 * the messages of channels declared before them (the others are counted
 * in *skipped; a schema or channel repeated is written once, a schema of
 * id 0 not at all, a channel whose schema was never declared without
 * it). 0 when rd read to the end of the data section, or
 * mcap_reader_next's negative errno where it stopped; a negative errno of
 * w's (-ENOMEM, a write's) when writing fails. *messages counts the
 * messages written. */
int recording_recover(struct mcap_reader *rd, struct mcap_writer *w, uint64_t *messages, uint64_t *skipped);

/* A channel as play's first pass saw it: its last Channel record and its
 * messages after that record. */
struct recording_chan {
	bool known;
	char topic[TAKT_TOPIC_NAME_MAX]; /* cut to fit */
	uint16_t schema;
	uint64_t max_size, count; /* its largest message, how many */
};

struct recording_scan {
	struct recording_chan *ch;           /* by channel id: 65536 */
	char (*schema)[TAKT_TOPIC_NAME_MAX]; /* by schema id: 65536 names, cut to fit */
	uint64_t messages;                   /* of known channels */
};

/* play's first pass: reads rd from where it is to where it stops into
 * s (zeroed by the caller). 0 at the end of the data section, or
 * mcap_reader_next's negative errno where it stopped (what came before
 * is in s). */
int recording_scan(struct mcap_reader *rd, struct recording_scan *s);

#endif
