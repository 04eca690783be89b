// Per-year GeoParquet manifests (manifests/{year}.parquet), read with hyparquet through range
// requests: the footer, then the columns we need. One row per published unit.
import { parquetMetadataAsync, parquetReadObjects } from "hyparquet";
import { compressors } from "hyparquet-compressors";
import { RootError } from "./http-store.js";

const COLUMNS = [
  "unit_id", "zone", "shard_row", "shard_col", "unit_size",
  "valid_pixels", "nodata_pixels", "unprocessed_pixels", "s2_scenes", "s1_scenes",
];

const TAIL = 64 * 1024; // one request holds a small manifest whole, and a large one's footer

/** hyparquet's AsyncBuffer over the store: the tail first (size and footer), then range GETs. */
async function asyncBuffer(store, key) {
  const tail = await store.getTail(key, TAIL);
  if (!tail) return null;
  const byteLength = tail.size;
  const tailStart = byteLength - tail.bytes.length;
  return {
    byteLength,
    async slice(start, end = byteLength) {
      if (start >= tailStart) {
        const b = tail.bytes.subarray(start - tailStart, end - tailStart);
        return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
      }
      const bytes = await store.getRange(key, { offset: start, length: end - start });
      if (!bytes) throw new RootError(`${store.href(key)} disappeared while it was read`);
      return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    },
  };
}

/** What a unit's pixel counts say about it. */
export function unitStatus(u) {
  if (u.valid_pixels === 0) return "no_data";
  if (u.unprocessed_pixels > 0) return "partial";
  return "complete";
}

/** The units of a year, or null when the root has no manifest for it. */
export async function readManifest(store, year) {
  const key = `manifests/${year}.parquet`;
  const file = await asyncBuffer(store, key);
  if (!file) return null;
  let rows;
  try {
    const metadata = await parquetMetadataAsync(file);
    const names = new Set(metadata.schema.map((s) => s.name));
    const missing = COLUMNS.filter((c) => !names.has(c));
    if (missing.length) throw new RootError(`${store.href(key)} is not a tessera-ray manifest (no column ${missing.join(", ")})`);
    rows = await parquetReadObjects({ file, metadata, columns: COLUMNS, compressors });
  } catch (err) {
    if (err instanceof RootError) throw err;
    throw new RootError(`manifest ${store.href(key)} is unreadable: ${err.message || err}`);
  }
  return rows.map((r) => {
    const u = { year };
    for (const c of COLUMNS) u[c] = typeof r[c] === "bigint" ? Number(r[c]) : r[c];
    u.status = unitStatus(u);
    return u;
  });
}
