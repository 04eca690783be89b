// Chunks of fixed-offset shards read at their computed offsets, without the shard index
// (docs/store.md, "shard layouts"; tessera_ray/client.py does the same). An array whose
// metadata declare `tessera_ray:fixed_offsets` (raw chunks: bytes + crc32c, index at the start
// of the shard) stores every chunk of a dense shard in C order after the index, each preceded by
// an 8-byte tag "TRfo" + the chunk number (uint32 LE), so chunk n's tag lies at
//   index_nbytes + n * (8 + chunk_nbytes + 4).
// A window is one range request per run of neighbouring chunks of a shard, where zarrita reads
// the shard's whole index first (256 KB for a 4096/32 shard) and then the chunks.
//
// A chunk is used only if its tag names it and its CRC32C matches. Otherwise (a shard written
// sparse or by another tool, shorter than the window's chunks, absent, or corrupt) the caller
// reads the window again through the shard index with zarrita, where a CRC32C failure is an
// error naming the shard: never wrong numbers.
import CRC32C from "crc-32/crc32c.js";

const TAG = [0x54, 0x52, 0x66, 0x6f]; // "TRfo"
const TAG_NBYTES = 8;
const MERGE_GAP = 16384; // bytes not needed worth reading to save a request (as the Python client)
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const TYPES = { int8: Int8Array, uint8: Uint8Array, int16: Int16Array, float32: Float32Array };

/**
 * The fixed-offset layout of an array from its zarr.json, or null when it does not declare one
 * (or is laid out in a way this reader does not handle: then zarrita reads it).
 */
export function fixedLayout(meta) {
  const sharding = (meta.codecs || []).find((c) => c.name === "sharding_indexed");
  const conf = sharding && sharding.configuration;
  if (!conf || meta.codecs.length !== 1 || !(meta.attributes || {})["tessera_ray:fixed_offsets"]) return null;
  const codecs = conf.codecs.map((c) => c.name).join(",");
  const endian = (conf.codecs[0].configuration || {}).endian;
  const keys = meta.chunk_key_encoding || {};
  const Type = TYPES[meta.data_type];
  if (codecs !== "bytes,crc32c" || conf.index_location !== "start" || !Type || !LITTLE_ENDIAN) return null;
  if ((endian && endian !== "little") || keys.name !== "default" || (keys.configuration || {}).separator !== "/") return null;
  const shape = meta.shape, shard = meta.chunk_grid.configuration.chunk_shape, chunk = conf.chunk_shape;
  const n = shape.length;
  // (time, [band,] y, x): one time step and every band per chunk
  if (chunk[0] !== 1 || shard[0] !== 1 || (n === 4 && (chunk[1] !== shape[1] || shard[1] !== shape[1])) || ![3, 4].includes(n)) return null;
  const perShard = shard.map((s, d) => s / chunk[d]);
  const nChunks = perShard.reduce((a, b) => a * b, 1);
  const indexCrc = (conf.index_codecs || []).filter((c) => c.name === "crc32c").length * 4;
  const chunkItems = chunk.reduce((a, b) => a * b, 1);
  return {
    Type,
    bands: n === 4 ? shape[1] : 1,
    side: chunk[n - 1], // chunks are square, shards too
    shardSide: shard[n - 1],
    perRow: perShard[n - 1],
    indexNbytes: nChunks * 16 + indexCrc,
    chunkNbytes: chunkItems * Type.BYTES_PER_ELEMENT,
    stride: TAG_NBYTES + chunkItems * Type.BYTES_PER_ELEMENT + 4,
    key: (t, sy, sx) => (n === 4 ? `c/${t}/0/${sy}/${sx}` : `c/${t}/${sy}/${sx}`),
  };
}

/**
 * A window (rows row..row+height, cols col..col+width, time step t) of a fixed-offset array:
 * {data} (band-major, as zarrita's get), or null where a chunk failed its tag or CRC32C check or
 * its shard is absent or shorter (read it through the index); `failed` lists those shards.
 */
export async function readFixed(store, path, layout, t, row, col, height, width) {
  const { side, shardSide, bands } = layout;
  const byShard = new Map();
  for (let cy = Math.floor(row / side); cy * side < row + height; cy++) {
    for (let cx = Math.floor(col / side); cx * side < col + width; cx++) {
      const sy = Math.floor((cy * side) / shardSide), sx = Math.floor((cx * side) / shardSide);
      const key = `${path}/${layout.key(t, sy, sx)}`;
      const n = (cy - (sy * shardSide) / side) * layout.perRow + (cx - (sx * shardSide) / side);
      if (!byShard.has(key)) byShard.set(key, []);
      byShard.get(key).push({ n, cy, cx });
    }
  }
  const out = new layout.Type(bands * height * width);
  const failed = [];
  const runs = [];
  for (const [key, chunks] of byShard) {
    for (const run of mergeRuns(chunks.sort((a, b) => a.n - b.n), layout)) runs.push({ key, run });
  }
  await Promise.all(runs.map(async ({ key, run }) => {
    const start = layout.indexNbytes + run[0].n * layout.stride;
    const end = layout.indexNbytes + (run[run.length - 1].n + 1) * layout.stride;
    const got = await store.ranged(key, { offset: start, length: end - start }, "chunks");
    for (const c of run) {
      const at = layout.indexNbytes + c.n * layout.stride - start;
      const body = got ? checked(got.bytes.subarray(at, at + layout.stride), c.n, layout) : null;
      if (!body) {
        if (!failed.includes(key)) failed.push(key);
        continue;
      }
      place(out, body, c, layout, row, col, height, width);
    }
  }));
  return failed.length ? { data: null, failed } : { data: out, failed };
}

/** Neighbouring chunks of one shard (sorted by number) in runs of one request each. */
function mergeRuns(chunks, layout) {
  const runs = [];
  for (const c of chunks) {
    const last = runs[runs.length - 1];
    if (last && (c.n - last[last.length - 1].n - 1) * layout.stride <= MERGE_GAP) last.push(c);
    else runs.push([c]);
  }
  return runs;
}

/** The chunk's raw bytes when its tag names chunk n and its CRC32C matches, else null. */
function checked(piece, n, layout) {
  if (piece.length !== layout.stride) return null;
  for (let i = 0; i < 4; i++) if (piece[i] !== TAG[i]) return null;
  if (new DataView(piece.buffer, piece.byteOffset + 4, 4).getUint32(0, true) !== n) return null;
  const body = piece.subarray(TAG_NBYTES, TAG_NBYTES + layout.chunkNbytes);
  const stored = new DataView(piece.buffer, piece.byteOffset + TAG_NBYTES + layout.chunkNbytes, 4).getUint32(0, true);
  return (CRC32C.buf(body) >>> 0) === stored ? body : null;
}

/** Copy the part of a chunk (band-major, side x side per band) that lies in the window. */
function place(out, body, c, layout, row, col, height, width) {
  const { side, bands, Type } = layout;
  const values = new Type(body.slice().buffer); // a copy: aligned for multi-byte types
  const y0 = Math.max(row, c.cy * side), y1 = Math.min(row + height, (c.cy + 1) * side);
  const x0 = Math.max(col, c.cx * side), x1 = Math.min(col + width, (c.cx + 1) * side);
  for (let k = 0; k < bands; k++) {
    for (let y = y0; y < y1; y++) {
      const src = k * side * side + (y - c.cy * side) * side + (x0 - c.cx * side);
      out.set(values.subarray(src, src + x1 - x0), k * height * width + (y - row) * width + (x0 - col));
    }
  }
}
