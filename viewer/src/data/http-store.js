// The published root over plain HTTP: a read-only store for zarrita and hyparquet.
//
// What it adds to fetch():
// - counters of requests and bytes (by kind) for the stats panel, the docs' figures and tests;
// - shard indexes at the START of a shard (tessera-ray's default, Zarr's index_location "start"):
//   zarrita 0.7 always reads a shard index as a suffix of the object, so for the arrays whose
//   sharding config says "start" a suffix request is answered with the first bytes instead;
// - one clear error per failure: HTTP status, a network/CORS failure, a server that ignores Range.
// Only GET/HEAD with a Range header are sent: what S3 + CloudFront CORS (terraform/) allows.

export class RootError extends Error {
  constructor(message) {
    super(message);
    this.name = "RootError";
  }
}

export class HttpStore {
  constructor(url, { fetchImpl } = {}) {
    this.url = url.endsWith("/") ? url : url + "/";
    this.fetch = fetchImpl || ((...args) => fetch(...args));
    this.indexAtStart = new Set(); // store paths of arrays whose shard index is at the start
    this.stats = { requests: 0, bytes: 0, byKind: {} };
    this.cache = new Map(); // small whole objects (zarr.json) read more than once
    this.listeners = new Set();
  }

  href(path) {
    return new URL(path.replace(/^\//, ""), this.url).href;
  }

  kindOf(path) {
    if (path.endsWith("zarr.json")) return "metadata";
    if (path.endsWith(".parquet")) return "manifest";
    return "chunks";
  }

  count(kind, bytes) {
    this.stats.requests += 1;
    this.stats.bytes += bytes;
    const k = (this.stats.byKind[kind] ||= { requests: 0, bytes: 0 });
    k.requests += 1;
    k.bytes += bytes;
    for (const fn of this.listeners) fn(this.stats);
  }

  async request(path, init, kind) {
    const href = this.href(path);
    let response;
    try {
      response = await this.fetch(href, init);
    } catch (err) {
      throw new RootError(
        `cannot read ${href}: ${err.message || err} (the server is unreachable, or it does not allow this page's origin: CORS)`,
      );
    }
    if (response.status === 404 || response.status === 403) {
      // S3 answers 403 for a missing key of a bucket that does not allow listing
      this.count(kind, 0);
      return null;
    }
    if (!response.ok) {
      this.count(kind, 0);
      throw new RootError(`cannot read ${href}: HTTP ${response.status} ${response.statusText}`.trim());
    }
    return response;
  }

  /** Whole object, or undefined when absent (zarrita's contract). */
  async get(path, options = {}) {
    const key = normalise(path);
    if (this.cache.has(key)) return this.cache.get(key);
    const kind = this.kindOf(key);
    const response = await this.request(key, { signal: options.signal }, kind);
    if (!response) return undefined;
    const bytes = new Uint8Array(await response.arrayBuffer());
    this.count(kind, bytes.length);
    if (key.endsWith("zarr.json")) this.cache.set(key, bytes);
    return bytes;
  }

  /** A byte range: {offset, length} or {suffixLength}; undefined when the object is absent. */
  async getRange(path, range, options = {}) {
    const key = normalise(path);
    let offset, length;
    if ("suffixLength" in range) {
      const array = key.slice(0, key.indexOf("/c/"));
      if (!this.indexAtStart.has(array)) {
        const size = await this.size(key);
        if (size === null) return undefined;
        offset = Math.max(0, size - range.suffixLength);
        length = size - offset;
      } else {
        offset = 0;
        length = range.suffixLength;
      }
    } else {
      ({ offset, length } = range);
    }
    if (length <= 0) return new Uint8Array(0);
    const kind = "suffixLength" in range ? "index" : this.kindOf(key);
    const headers = { Range: `bytes=${offset}-${offset + length - 1}` };
    const response = await this.request(key, { headers, signal: options.signal }, kind);
    if (!response) return undefined;
    const bytes = new Uint8Array(await response.arrayBuffer());
    this.count(kind, bytes.length);
    if (response.status !== 206) {
      throw new RootError(
        `${this.href(key)} was sent whole (HTTP ${response.status}) for a byte-range request: ` +
          "the server does not support Range requests, which this viewer needs",
      );
    }
    if (bytes.length !== length) {
      throw new RootError(`${this.href(key)} is shorter than expected (asked ${length} bytes at ${offset}, got ${bytes.length}): the object is truncated`);
    }
    return bytes;
  }

  /**
   * The last `length` bytes of an object and its size, in one suffix-range request (the size
   * from Content-Range); null when absent. The whole object when it is shorter.
   */
  async getTail(path, length) {
    const key = normalise(path);
    const kind = this.kindOf(key);
    const response = await this.request(key, { headers: { Range: `bytes=-${length}` } }, kind);
    if (!response) return null;
    const bytes = new Uint8Array(await response.arrayBuffer());
    this.count(kind, bytes.length);
    if (response.status !== 206) {
      throw new RootError(
        `${this.href(key)} was sent whole (HTTP ${response.status}) for a byte-range request: ` +
          "the server does not support Range requests, which this viewer needs",
      );
    }
    const range = /\/(\d+)\s*$/.exec(response.headers.get("Content-Range") || "");
    if (!range) {
      throw new RootError(`${this.href(key)}: the server does not expose Content-Range (CORS Access-Control-Expose-Headers)`);
    }
    return { bytes, size: Number(range[1]) };
  }

  /** Object size from a HEAD request, or null when absent. */
  async size(path) {
    const key = normalise(path);
    const response = await this.request(key, { method: "HEAD" }, this.kindOf(key));
    if (!response) return null;
    this.count(this.kindOf(key), 0);
    const length = response.headers.get("Content-Length");
    if (length === null) throw new RootError(`${this.href(key)}: the server sends no Content-Length`);
    return Number(length);
  }
}

function normalise(path) {
  return path.startsWith("/") ? path : "/" + path;
}
