// check.mjs - reads takt's MCAP recordings with the official MCAP libraries.
//
//   node tests/mcap/check.mjs FILE...            each file whole: indexed and streamed
//   node tests/mcap/check.mjs --partial FILE...  files cut short: streamed, up to the cut
//
// Whole files are read twice, with every CRC checked: by McapIndexedReader
// (footer, summary, chunk indexes, message indexes; summary CRC, chunk CRCs)
// and by McapStreamReader (record by record to the trailing magic; chunk
// CRCs); the data section CRC of Data End is checked here. Both readings
// must agree on every channel's messages, in order. Per topic it prints
//   topic NAME schema TYPE encoding ENC count N bytes B fnv HEX
// (fnv: FNV-1a 32 over the channel's payloads in order, which the C tests
// compute over what they published), then "ok FILE". Exit 1 on any error.
// --partial reads a file cut short by a crash: streamed up to the first
// error, which it names, and prints the same lines for what came before.
import { McapIndexedReader, McapStreamReader } from "@mcap/core";
import { loadDecompressHandlers } from "@mcap/support";
import { crc32 } from "@foxglove/crc";
import { open, readFile } from "node:fs/promises";

function fnv1a(h, bytes) {
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i];
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

// Per channel id: topic, schema name, encoding, count, bytes, fnv.
class Tally {
  constructor() {
    this.channels = new Map();
    this.schemas = new Map();
    this.messages = 0;
  }
  schema(s) {
    this.schemas.set(s.id, s.name);
  }
  channel(c) {
    if (!this.channels.has(c.id))
      this.channels.set(c.id, { topic: c.topic, schemaId: c.schemaId, encoding: c.messageEncoding, count: 0, bytes: 0, fnv: 0x811c9dc5 });
  }
  message(m) {
    const c = this.channels.get(m.channelId);
    if (!c) throw new Error(`message on channel ${m.channelId} before its Channel record`);
    c.count++;
    c.bytes += m.data.length;
    c.fnv = fnv1a(c.fnv, m.data);
    this.messages++;
  }
  lines() {
    return [...this.channels.values()]
      .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0))
      .map((c) => `topic ${c.topic} schema ${this.schemas.get(c.schemaId) ?? "-"} encoding ${c.encoding} count ${c.count} bytes ${c.bytes} fnv ${c.fnv.toString(16).padStart(8, "0")}`);
  }
}

async function readIndexed(path, decompressHandlers) {
  const fh = await open(path, "r");
  try {
    const { size } = await fh.stat();
    const readable = {
      size: async () => BigInt(size),
      read: async (offset, length) => {
        const buf = Buffer.alloc(Number(length));
        const { bytesRead } = await fh.read(buf, 0, Number(length), Number(offset));
        if (bytesRead !== Number(length)) throw new Error(`short read at ${offset}`);
        return new Uint8Array(buf.buffer, buf.byteOffset, bytesRead);
      },
    };
    const reader = await McapIndexedReader.Initialize({ readable, decompressHandlers });
    const t = new Tally();
    for (const s of reader.schemasById.values()) t.schema(s);
    for (const c of reader.channelsById.values()) t.channel(c);
    for await (const m of reader.readMessages({ validateCrcs: true })) t.message(m);
    const st = reader.statistics;
    if (!st) throw new Error("no Statistics record in the summary");
    if (st.messageCount !== BigInt(t.messages))
      throw new Error(`Statistics count ${st.messageCount} messages, the chunks hold ${t.messages}`);
    for (const [id, c] of t.channels)
      if ((st.channelMessageCounts.get(id) ?? 0n) !== BigInt(c.count))
        throw new Error(`Statistics count ${st.channelMessageCounts.get(id)} messages on ${c.topic}, the chunks hold ${c.count}`);
    if (st.chunkCount !== reader.chunkIndexes.length)
      throw new Error(`Statistics count ${st.chunkCount} chunks, the summary indexes ${reader.chunkIndexes.length}`);
    for (const ci of reader.chunkIndexes)
      if (ci.compression !== "lz4") throw new Error(`a chunk compressed with '${ci.compression}', not lz4`);
    return { tally: t, reader };
  } finally {
    await fh.close();
  }
}

// Streams the file in 64 KiB pieces, as a reader of a pipe would.
function readStreamed(bytes, decompressHandlers, partial) {
  const reader = new McapStreamReader({ decompressHandlers, validateCrcs: true });
  const t = new Tally();
  let footer = false, error = null;
  try {
    for (let at = 0; at < bytes.length; at += 65536) {
      reader.append(bytes.subarray(at, Math.min(bytes.length, at + 65536)));
      for (let r; (r = reader.nextRecord()); ) {
        if (r.type === "Schema") t.schema(r);
        else if (r.type === "Channel") t.channel(r);
        else if (r.type === "Message") t.message(r);
        else if (r.type === "Footer") footer = true;
      }
    }
    if (!reader.done()) throw new Error(`the stream ends early (${reader.bytesRemaining()} bytes left unread)`);
  } catch (e) {
    if (!partial) throw e;
    error = e.message;
  }
  if (!partial && !footer) throw new Error("no Footer");
  return { tally: t, error: error ?? (footer ? null : "the stream ends early") };
}

async function check(path, decompressHandlers, partial) {
  const bytes = new Uint8Array(await readFile(path));
  const s = readStreamed(bytes, decompressHandlers, partial);
  if (partial) {
    for (const l of s.tally.lines()) console.log(l);
    console.log(`partial ${path}: streamed ${s.tally.messages} messages before: ${s.error ?? "(no error: the file is whole)"}`);
    return;
  }
  const { tally: i, reader } = await readIndexed(path, decompressHandlers);
  if (reader.dataSectionCrc !== undefined) {
    const crc = crc32(bytes.subarray(0, Number(reader.dataEndOffset)));
    if (crc !== reader.dataSectionCrc)
      throw new Error(`Data End CRC ${reader.dataSectionCrc}, the data section's is ${crc}`);
  } else {
    throw new Error("Data End has no data section CRC");
  }
  const a = i.lines().join("\n"), b = s.tally.lines().join("\n");
  if (a !== b) throw new Error(`the indexed and the streamed readings differ:\nindexed:\n${a}\nstreamed:\n${b}`);
  for (const l of i.lines()) console.log(l);
  console.log(`ok ${path}: ${i.messages} messages, ${reader.chunkIndexes.length} chunks, ${i.channels.size} channels; indexed and streamed agree; CRCs checked`);
}

const args = process.argv.slice(2);
const partial = args[0] === "--partial";
const files = partial ? args.slice(1) : args;
if (files.length === 0) {
  console.error("usage: node check.mjs [--partial] FILE...");
  process.exit(2);
}
const decompressHandlers = await loadDecompressHandlers();
let failed = false;
for (const f of files) {
  try {
    await check(f, decompressHandlers, partial);
  } catch (e) {
    console.log(`FAIL ${f}: ${e.message}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
