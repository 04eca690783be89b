// The published root over plain HTTP: a read-only store for zarrita and hyparquet.
//
// What it adds to fetch():
// - counters of requests and bytes (by kind) for the stats panel, the docs' figures and tests;
// - shard indexes at the START of a shard (tessera-ray's default, Zarr's index_location "start"):
//   zarrita 0.7 always reads a shard index as a suffix of the object, so for the arrays whose
//   sharding config says "start" a suffix request is answered with the first bytes instead;
// - one clear error per failure: HTTP status, a network/CORS failure, a truncated object (a range
//   past its end, 416, reads as no bytes: the caller that needed them says so);
// - servers that ignore Range (Python's http.server): objects up to 64 MB are read whole and sliced.
// Only GET/HEAD with a Range header are sent: what S3 + CloudFront CORS (terraform/) allows.

const WHOLE_MAX = 64 * 1024 * 1024; // largest object read whole from a server that ignores Range
const WHOLE_CACHE = 256 * 1024 * 1024;

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
    this.wholeObjects = new Map(); // objects a server sent whole for a range request
    this.wholeBytes = 0;
    this.rangeIgnored = false;
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
    if (!response.ok && response.status !== 416) {
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
    let header, want;
    if ("suffixLength" in range) {
      const array = key.slice(0, key.indexOf("/c/"));
      // a shard index: at the end of the shard (zarrita's assumption), or at its start
      want = this.indexAtStart.has(array) ? { offset: 0, length: range.suffixLength } : { suffix: range.suffixLength };
    } else {
      want = { offset: range.offset, length: range.length };
    }
    if (want.length === 0) return new Uint8Array(0);
    const kind = "suffixLength" in range ? "index" : this.kindOf(key);
    const got = await this.ranged(key, want, kind, options.signal);
    if (!got) return undefined;
    if (want.length !== undefined && got.bytes.length !== want.length) {
      throw new RootError(
        `${this.href(key)} is shorter than expected (asked ${want.length} bytes at ${want.offset}, got ${got.bytes.length}): the object is truncated`,
      );
    }
    return got.bytes;
  }

  /**
   * The last `length` bytes of an object and its size, in one suffix-range request (the size
   * from Content-Range); null when absent. The whole object when it is shorter.
   */
  async getTail(path, length) {
    const key = normalise(path);
    return this.ranged(key, { suffix: length }, this.kindOf(key));
  }

  /**
   * One range request: want = {offset, length} or {suffix}. Returns {bytes, size} (size null
   * when the server does not say), or null when the object is absent. A server that ignores
   * Range and sends the whole object (Python's http.server does) still works for objects up to
   * WHOLE_MAX: the object is kept and sliced, and `rangeIgnored` is set for the page to say so;
   * a larger one is one clear error.
   */
  async ranged(key, want, kind, signal) {
    const whole = this.wholeObjects.get(key);
    if (whole) return slice(whole, want);
    const header = want.suffix !== undefined ? `bytes=-${want.suffix}` : `bytes=${want.offset}-${want.offset + want.length - 1}`;
    const response = await this.request(key, { headers: { Range: header }, signal }, kind);
    if (!response) return null;
    if (response.status === 416) {
      // the range starts past the end of the object: no bytes (a caller that needed some says so)
      this.count(kind, 0);
      const total = /\/(\d+)\s*$/.exec(response.headers.get("Content-Range") || "");
      return { bytes: new Uint8Array(0), size: total ? Number(total[1]) : null };
    }
    if (response.status === 206) {
      const bytes = new Uint8Array(await response.arrayBuffer());
      this.count(kind, bytes.length);
      const total = /\/(\d+)\s*$/.exec(response.headers.get("Content-Range") || "");
      if (want.suffix !== undefined && !total) {
        throw new RootError(`${this.href(key)}: the server does not expose Content-Range (CORS Access-Control-Expose-Headers)`);
      }
      return { bytes, size: total ? Number(total[1]) : null };
    }
    const length = Number(response.headers.get("Content-Length"));
    if (!(length <= WHOLE_MAX)) {
      if (response.body) response.body.cancel().catch(() => {});
      this.count(kind, 0);
      throw new RootError(
        `${this.href(key)} was sent whole (HTTP ${response.status}) for a byte-range request: the server does not ` +
          "support Range requests, which this viewer needs for objects this large (serve the root with tessera-ray serve, S3 or nginx)",
      );
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    this.count(kind, bytes.length);
    this.keepWhole(key, bytes);
    if (!this.rangeIgnored) {
      this.rangeIgnored = true;
      for (const fn of this.listeners) fn(this.stats);
    }
    return slice(bytes, want);
  }

  keepWhole(key, bytes) {
    this.wholeObjects.set(key, bytes);
    this.wholeBytes += bytes.length;
    for (const [k, b] of this.wholeObjects) {
      if (this.wholeBytes <= WHOLE_CACHE || this.wholeObjects.size <= 1) break;
      this.wholeObjects.delete(k);
      this.wholeBytes -= b.length;
    }
  }
}

function slice(bytes, want) {
  const start = want.suffix !== undefined ? Math.max(0, bytes.length - want.suffix) : want.offset;
  const end = want.suffix !== undefined ? bytes.length : Math.min(bytes.length, want.offset + want.length);
  return { bytes: bytes.subarray(start, end), size: bytes.length };
}

function normalise(path) {
  return path.startsWith("/") ? path : "/" + path;
}
