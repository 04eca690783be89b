// The viewer's Web Worker: it owns the opened root (zarrita, hyparquet), a cache of decoded
// blocks, the fitted colour models and the classifier, so reads, decoding and maths never
// block the page. Protocol: {id, op, args} in; {id, result} | {id, error} | {id, progress}
// | {id, part} out (see worker-client.js).
import { Root, N_BANDS, pixelOf } from "./data/root.js";
import { BlockCache } from "./data/block-cache.js";
import { dimsNeeded, fitModel, renderWindow } from "./maths/render.js";
import { train, predict } from "./maths/classifiers.js";
import { columnRanges, pixelValues, statusOf } from "./maths/features.js";
import { fitPca, project } from "./maths/pca.js";

let root = null;
let cache = null;
const models = new Map(); // mode -> {version, model}
let version = 0;
let classifier = null;
const cancelled = new Set();

const ops = {
  async open({ url }) {
    root = await new Root(url).open();
    cache = new BlockCache(root);
    return { ...root.describe(), blockSize: cache.size };
  },

  async units({ year }) {
    return root.units(year);
  },

  async pixel({ zone, year, row, col, depth }) {
    const px = await root.readPixel(zone, year, row, col, depth || N_BANDS);
    return { status: px.status, scale: px.scale, values: Array.from(px.values) };
  },

  stats() {
    return { ...structuredClone(root.base.stats), rangeIgnored: root.base.rangeIgnored };
  },

  cancel({ target }) {
    cancelled.add(target);
  },

  /**
   * Render blocks [{row, col, height, width}] of a zone and year in a mode. With `refit` (or
   * no model yet for the mode) every block is read first and the colour model fitted on them.
   */
  async render({ zone, year, blocks, mode, params, refit }, ctx) {
    const classView = mode === "classes" || mode === "probability";
    if (classView && !classifier) throw new Error("train a classifier first");
    const readDepth = classView ? classifier.depth : root.depthFor(dimsNeeded(mode, params));
    const fullParams = { ...params, depth: readDepth, classifier: classifier && classifier.model };
    let entry = models.get(mode);
    const read = async (b) => cache.get(zone, year, readDepth, b.row, b.col, b.height, b.width);
    let done = 0;
    const progress = (stage) =>
      ctx.progress({ stage, done, total: blocks.length, bytes: root.base.stats.bytes, requests: root.base.stats.requests });
    if (refit || !entry || entry.depth !== readDepth) {
      const windows = [];
      for (const b of blocks) {
        if (cancelled.has(ctx.id)) return { cancelled: true };
        windows.push(await read(b));
        done++;
        progress("reading");
      }
      entry = { version: ++version, depth: readDepth, model: fitModel(mode, fullParams, windows.filter(Boolean)) };
      models.set(mode, entry);
      ctx.part({ model: describeModel(entry) });
      done = 0;
    }
    const counts = [];
    for (const b of blocks) {
      if (cancelled.has(ctx.id)) return { cancelled: true };
      const w = await read(b);
      const { rgba, counts: c } = renderWindow(entry.model, w);
      if (c) c.forEach((v, i) => (counts[i] = (counts[i] || 0) + v));
      done++;
      ctx.part({ block: b, version: entry.version, rgba }, [rgba.buffer]);
      progress("drawing");
    }
    return { version: entry.version, counts, depth: readDepth };
  },

  /**
   * The scatter panel: an evenly spread sample of at most `n` valid pixels of the view,
   * projected on the first two principal components of that sample (the PCA of the false
   * colour view, fitted here on the sample itself). Each point also gets a false colour
   * (components 1-3 as R, G, B) and, when a classifier is trained, its predicted class.
   */
  async scatter({ zone, year, blocks, depth, n = 2000, window: v }) {
    const shown = (row, col) => !v || (row + 1 > v.row0 && row < v.row1 && col + 1 > v.col0 && col < v.col1);
    const d = root.depthFor(Math.max(depth || N_BANDS, classifier ? classifier.depth : 0));
    const windows = [];
    let total = 0;
    for (const b of blocks) {
      const w = await cache.get(zone, year, d, b.row, b.col, b.height, b.width);
      if (!w) continue;
      windows.push({ b, w });
      for (let p = 0; p < w.scales.length; p++) {
        if (statusOf(w.scales[p]) === 0 && shown(b.row + Math.floor(p / w.width), b.col + (p % w.width))) total++;
      }
    }
    const m = Math.min(n, total); // the r-th point is the floor(r * total / m)-th valid pixel in view
    const X = new Float32Array(m * d), rows = new Int32Array(m), cols = new Int32Array(m);
    const tmp = new Float32Array(d);
    let i = 0, r = 0;
    for (const { b, w } of windows) {
      for (let p = 0; p < w.scales.length && r < m; p++) {
        if (statusOf(w.scales[p]) !== 0 || !shown(b.row + Math.floor(p / w.width), b.col + (p % w.width))) continue;
        if (i++ !== Math.floor((r * total) / m)) continue;
        X.set(pixelValues(w, p, d, tmp), r * d);
        rows[r] = b.row + Math.floor(p / w.width);
        cols[r] = b.col + (p % w.width);
        r++;
      }
    }
    const pca = fitPca(X, m, d, 3, 50000, 1e-12);
    const proj = project(pca, X, m, d);
    const k = pca.components.length;
    const xy = new Float32Array(m * 2);
    for (let j = 0; j < m; j++) {
      xy[2 * j] = proj[j * k];
      xy[2 * j + 1] = k > 1 ? proj[j * k + 1] : 0;
    }
    const rgb = new Uint8Array(m * 3);
    if (m) {
      const { lo, hi } = columnRanges(proj, m, k);
      for (let j = 0; j < m; j++) {
        for (let c = 0; c < 3; c++) {
          const t = c < k ? (proj[j * k + c] - lo[c]) / (hi[c] - lo[c]) : 0.5;
          rgb[j * 3 + c] = Math.round(255 * Math.min(1, Math.max(0, t)));
        }
      }
    }
    let cls = null;
    if (classifier) {
      cls = new Int16Array(m);
      const probs = new Float64Array(classifier.model.nClasses);
      const x = new Float32Array(classifier.depth);
      for (let j = 0; j < m; j++) {
        x.set(X.subarray(j * d, j * d + classifier.depth));
        cls[j] = predict(classifier.model, x, probs);
      }
    }
    return { count: m, total, depth: d, rows, cols, xy, rgb, cls, explained: pca.explained.slice(0, 2) };
  },

  /** Train on labelled pixels [{zone, year, row, col, cls}] (cls: class index). */
  async train({ method, k, labels, classes, depth }) {
    const d = root.depthFor(depth || N_BANDS);
    const X = [], y = [], used = [];
    const pixels = await readLabelled(labels, d);
    pixels.forEach((px, i) => {
      if (px.status !== "valid") return;
      X.push(...px.values);
      y.push(labels[i].cls);
      used.push(i);
    });
    const present = new Set(y);
    if (present.size < 2) throw new Error(`labels on valid pixels cover ${present.size} class(es); label at least two classes`);
    const model = train(method, Float32Array.from(X), y, d, classes.length, { k });
    classifier = { model, depth: d, method };
    models.delete("classes");
    models.delete("probability");
    let correct = 0;
    const probs = new Float64Array(classes.length);
    for (let i = 0; i < y.length; i++) if (predict(model, Float32Array.from(X.slice(i * d, (i + 1) * d)), probs) === y[i]) correct++;
    return { method, depth: d, trained: y.length, skipped: labels.length - y.length, trainAccuracy: correct / y.length };
  },

  /** Classes and probabilities of the trained classifier at pixels [{zone, year, row, col}]. */
  async predict({ points }) {
    if (!classifier) throw new Error("train a classifier first");
    const pixels = await readLabelled(points, classifier.depth);
    const probs = new Float64Array(classifier.model.nClasses);
    return pixels.map((px) => {
      if (px.status !== "valid") return { status: px.status, cls: null };
      const cls = predict(classifier.model, px.values, probs);
      return { status: px.status, cls, probability: probs[cls] };
    });
  },
};

/** Pixels of labelled points; those outside the year's published units read nothing. */
async function readLabelled(points, depth) {
  const out = [];
  const size = root.layout.shard_size;
  const published = new Map();
  for (const p of points) {
    if (!published.has(p.year)) {
      const units = (await root.units(p.year)) || [];
      published.set(p.year, new Set(units.map((u) => `${u.zone}/${u.shard_row}/${u.shard_col}`)));
    }
    if (!published.get(p.year).has(`${p.zone}/${Math.floor(p.row / size)}/${Math.floor(p.col / size)}`)) {
      out.push({ status: "not_processed", values: null });
      continue;
    }
    const b = cache.blockOf(p.row, p.col);
    const w = await cache.get(p.zone, p.year, depth, b.row, b.col, b.height, b.width);
    out.push(pixelOf(w, (p.row - b.row) * b.width + (p.col - b.col)));
  }
  return out;
}

function describeModel(entry) {
  const m = entry.model;
  const info = { version: entry.version, mode: m.mode, depth: entry.depth };
  if (m.mode === "pca") info.explained = m.pca.explained;
  if (m.mode === "dims") Object.assign(info, { dims: m.dims, lo: m.lo, hi: m.hi });
  if (m.mode === "similarity") Object.assign(info, { lo: m.lo, hi: m.hi });
  return info;
}

self.onmessage = async (event) => {
  const { id, op, args } = event.data;
  const ctx = {
    id,
    progress: (progress) => self.postMessage({ id, progress }),
    part: (part, transfer = []) => self.postMessage({ id, part }, transfer),
  };
  try {
    if (!ops[op]) throw new Error(`unknown operation ${op}`);
    if (op !== "open" && !root) throw new Error("no root is open");
    const result = await ops[op](args || {}, ctx);
    self.postMessage({ id, result });
  } catch (err) {
    self.postMessage({ id, error: err && err.message ? err.message : String(err) });
  } finally {
    cancelled.delete(id);
  }
};
