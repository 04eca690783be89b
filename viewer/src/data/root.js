// A published root opened for reading: metadata from the consolidated zarr.json, chunks at their
// fixed offsets where the arrays declare that layout (fixed-offsets.js), else with zarrita;
// blocks of a zone grid and single pixels, dequantised as tessera_ray.client does
// (int8 code x float32 scale; scale NaN = no data, +inf = not processed).
import * as zarr from "zarrita";
import { HttpStore, RootError } from "./http-store.js";
import { ChecksumError, installCheckedCrc32c } from "./crc32c.js";
import { readManifest } from "./manifest.js";
import { fixedLayout, readFixed } from "./fixed-offsets.js";
import { zoneName } from "../grid.js";

export const N_BANDS = 128;
const LAYOUT_ATTR = "tessera_ray:layout";
const YEARS_ATTR = "tessera_ray:years";
const ZONES_ATTR = "tessera_ray:zones";
const DEPTHS_ATTR = "geoemb:depths";

installCheckedCrc32c();

export class Root {
  constructor(url, options = {}) {
    this.url = url;
    this.base = new HttpStore(url, options);
    this.base.stats.fixedOffsetFallbacks = 0; // windows read through the index after failing the fixed-offset checks
    this.store = zarr.withRangeCoalescing(this.base);
    this.arrays = new Map(); // "utm31/embeddings_d16" -> Promise<zarr.Array>
    this.fixed = new Map(); // "utm31/embeddings_d16" -> its fixed-offset layout, or null
    this.indexedShards = new Set(); // shards that failed the fixed-offset checks: read through their index
    this.manifests = new Map(); // year -> Promise<units[] | null>
  }

  /** Read zarr.json; a clear RootError when the URL is not a tessera-ray root. */
  async open() {
    const key = "/tessera.zarr/zarr.json";
    const bytes = await this.base.get(key);
    if (!bytes) throw new RootError(`${this.url} is not a tessera-ray root: there is no ${this.base.href(key)}`);
    let meta;
    try {
      meta = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      throw new RootError(`${this.base.href(key)} is not Zarr metadata (not JSON)`);
    }
    const attrs = meta.attributes || {};
    if (meta.zarr_format !== 3 || !attrs[LAYOUT_ATTR]) {
      throw new RootError(`${this.url} holds a Zarr store that is not a tessera-ray root (no ${LAYOUT_ATTR} attribute)`);
    }
    const consolidated = (meta.consolidated_metadata || {}).metadata || {};
    this.attrs = attrs;
    this.layout = attrs[LAYOUT_ATTR];
    this.years = (attrs[YEARS_ATTR] || []).map(Number);
    this.model = attrs["geoemb:model"] || "";
    this.consolidated = consolidated;
    const zones = new Set((attrs[ZONES_ATTR] || []).map(Number));
    for (const path of Object.keys(consolidated)) {
      const m = /^utm(\d\d)\/scales$/.exec(path);
      if (m) zones.add(Number(m[1]));
    }
    this.zones = [...zones].sort((a, b) => a - b);
    this.depths = { [N_BANDS]: "embeddings" };
    for (const d of attrs[DEPTHS_ATTR] || []) this.depths[Number(d.dimensions)] = String(d.array);
    for (const [path, node] of Object.entries(consolidated)) {
      const sharding = (node.codecs || []).find((c) => c.name === "sharding_indexed");
      if (sharding && sharding.configuration.index_location === "start") {
        this.base.indexAtStart.add(`/tessera.zarr/${path}`);
      }
    }
    return this;
  }

  describe() {
    return {
      url: this.url,
      years: this.years,
      zones: this.zones,
      depths: Object.keys(this.depths).map(Number).sort((a, b) => a - b),
      model: this.model,
      layout: this.layout,
    };
  }

  yearIndex(year) {
    const t = this.years.indexOf(Number(year));
    if (t < 0) throw new RootError(`year ${year} is not in this root; it has ${this.years.join(", ") || "no years"}`);
    return t;
  }

  /** Smallest stored depth with at least `dims` dimensions. */
  depthFor(dims) {
    const depths = Object.keys(this.depths).map(Number).sort((a, b) => a - b);
    return depths.find((d) => d >= dims) ?? N_BANDS;
  }

  async units(year) {
    if (!this.manifests.has(year)) this.manifests.set(year, readManifest(this.base, year));
    return this.manifests.get(year);
  }

  array(zone, name) {
    const path = `${zoneName(zone)}/${name}`;
    if (!this.arrays.has(path)) {
      const node = this.consolidated[path];
      if (!node) return null;
      // the consolidated metadata holds every array's zarr.json: no request per array
      this.arrays.set(path, Promise.resolve(new zarr.Array(this.store, `/tessera.zarr/${path}`, node)));
    }
    return this.arrays.get(path);
  }

  /**
   * Codes and scales of a window of a zone grid: {codes: Int8Array (K, h, w) band-major,
   * scales: Float32Array (h, w)}. A zone without data reads as not processed.
   */
  async readWindow(zone, year, depth, row, col, height, width) {
    const t = this.yearIndex(year);
    const name = this.depths[depth];
    if (!name) throw new RootError(`depth ${depth} is not in this root`);
    const emb = await this.array(zone, name);
    const sca = await this.array(zone, "scales");
    const n = height * width;
    if (!emb || !sca) return { codes: new Int8Array(depth * n), scales: new Float32Array(n).fill(Infinity), depth, height, width };
    const [e, s] = await Promise.all([
      this.read(emb, zone, name, t, row, col, height, width),
      this.read(sca, zone, "scales", t, row, col, height, width),
    ]);
    return { codes: e.data, scales: s.data, depth, height, width };
  }

  /**
   * A window of one array: at the computed chunk offsets where the array declares the
   * fixed-offset layout (one request per run of chunks, no index), else, or where a chunk fails
   * its tag or CRC32C check there, through the shard index with zarrita.
   */
  async read(array, zone, name, t, row, col, height, width) {
    const path = `${zoneName(zone)}/${name}`;
    if (!this.fixed.has(path)) this.fixed.set(path, fixedLayout(this.consolidated[path]));
    const layout = this.fixed.get(path);
    const shard = layout && `/tessera.zarr/${path}/${layout.key(t, Math.floor(row / layout.shardSide), Math.floor(col / layout.shardSide))}`;
    if (layout && !this.indexedShards.has(shard)) {
      const got = await readFixed(this.base, `/tessera.zarr/${path}`, layout, t, row, col, height, width);
      if (got.data) return got;
      for (const key of got.failed) this.indexedShards.add(key);
      this.base.stats.fixedOffsetFallbacks += 1;
    }
    const rows = zarr.slice(row, row + height);
    const cols = zarr.slice(col, col + width);
    const selection = name === "scales" ? [t, rows, cols] : [t, null, rows, cols];
    return this.get(array, selection, zone, name, t, row, col);
  }

  /** zarrita's get, its failures explained with the shard they came from (a read lies in one shard). */
  async get(array, selection, zone, name, t, row, col) {
    try {
      return await zarr.get(array, selection);
    } catch (err) {
      const size = this.layout.shard_size;
      const band = name === "scales" ? "" : "0/";
      const key = `tessera.zarr/${zoneName(zone)}/${name}/c/${t}/${band}${Math.floor(row / size)}/${Math.floor(col / size)}`;
      throw explain(err, this.base.href(key));
    }
  }

  /** One pixel: {status, scale, codes, values (Float32Array K, NaN unless valid)}. */
  async readPixel(zone, year, row, col, depth = N_BANDS) {
    const w = await this.readWindow(zone, year, depth, row, col, 1, 1);
    return pixelOf(w, 0);
  }
}

/** Dequantise pixel p of a window read (band-major codes). */
export function pixelOf(w, p) {
  const n = w.height * w.width;
  const scale = w.scales[p];
  const status = Number.isNaN(scale) ? "no_data" : Number.isFinite(scale) ? "valid" : "not_processed";
  const values = new Float32Array(w.depth);
  for (let k = 0; k < w.depth; k++) values[k] = status === "valid" ? w.codes[k * n + p] * scale : NaN;
  return { status, scale, values };
}

function explain(err, shard) {
  if (err instanceof RootError) return err;
  let cause = err;
  while (cause && !(cause instanceof ChecksumError) && !(cause instanceof RootError) && cause.cause) cause = cause.cause;
  if (cause instanceof RootError) return cause;
  if (cause instanceof ChecksumError) return new RootError(`corrupt data: ${shard}: ${cause.message}`);
  return new RootError(`cannot decode ${shard}: ${err.message || err}`);
}
