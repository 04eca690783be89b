// Window reads -> RGBA images, one view mode at a time:
//   dims        three chosen dims as R, G, B (each stretched between its 2nd and 98th percentile)
//   pca         the first three principal components of the visible pixels as R, G, B
//   similarity  cosine similarity of every pixel to a reference vector (viridis)
//   classes     the trained classifier's class per pixel (class colours)
//   probability the classifier's top-class probability (viridis)
// Pixels without an embedding: dark grey (no data) or transparent (not processed).
import { NODATA_RGBA, UNPROCESSED_RGBA, hexToRgb, ramp } from "./colour.js";
import { columnRanges, pixelValues, quantile, sampleValid, statusOf } from "./features.js";
import { fitPca, project } from "./pca.js";
import { predict } from "./classifiers.js";

/** How many leading dims a mode needs from the store. */
export function dimsNeeded(mode, params) {
  if (mode === "dims") return Math.max(...params.dims) + 1;
  return params.depth;
}

/** Fit the colour model of a mode on the visible windows (all read at the same depth). */
export function fitModel(mode, params, windows) {
  const dims = windows.length ? windows[0].depth : params.depth;
  if (mode === "dims") {
    const sample = sampleValid(windows, dims);
    const picked = new Float32Array(sample.rows * 3);
    for (let i = 0; i < sample.rows; i++) for (let c = 0; c < 3; c++) picked[i * 3 + c] = sample.X[i * dims + params.dims[c]];
    return { mode, dims: params.dims, ...columnRanges(picked, sample.rows, 3), pixels: sample.rows };
  }
  if (mode === "pca") {
    const sample = sampleValid(windows, dims);
    const pca = fitPca(sample.X, sample.rows, dims, 3);
    const proj = project(pca, sample.X, sample.rows, dims);
    return { mode, pca, ...columnRanges(proj, sample.rows, pca.components.length), pixels: sample.rows, dims };
  }
  if (mode === "similarity") {
    const ref = Float32Array.from(params.reference.slice(0, dims));
    const refNorm = Math.hypot(...ref);
    const sample = sampleValid(windows, dims, 5000);
    const sims = new Float64Array(sample.rows);
    for (let i = 0; i < sample.rows; i++) sims[i] = cosine(sample.X.subarray(i * dims, (i + 1) * dims), ref, refNorm);
    const lo = sample.rows ? quantile(sims, 0.02) : -1;
    return { mode, ref, refNorm, lo: Math.min(lo, 0.999), hi: 1, dims };
  }
  if (mode === "classes" || mode === "probability") {
    if (!params.classifier) throw new Error("train a classifier first");
    return { mode, classifier: params.classifier, colours: params.colours.map(hexToRgb), dims };
  }
  throw new Error(`unknown view mode ${mode}`);
}

function cosine(x, ref, refNorm) {
  let dot = 0, nx = 0;
  for (let j = 0; j < ref.length; j++) {
    dot += x[j] * ref[j];
    nx += x[j] * x[j];
  }
  return nx > 0 && refNorm > 0 ? dot / (Math.sqrt(nx) * refNorm) : 0;
}

/** RGBA bytes of one window under a fitted model; also per-class pixel counts for class views. */
export function renderWindow(model, w) {
  const n = w.height * w.width;
  const rgba = new Uint8ClampedArray(n * 4);
  const x = new Float32Array(w.depth);
  const rgb = [0, 0, 0];
  const probs = model.classifier ? new Float64Array(model.classifier.nClasses) : null;
  const counts = probs ? new Array(model.classifier.nClasses).fill(0) : null;
  const dims = model.dims || w.depth;
  for (let p = 0; p < n; p++) {
    const o = p * 4;
    const st = statusOf(w.scales[p]);
    if (st !== 0) {
      rgba.set(st === 1 ? NODATA_RGBA : UNPROCESSED_RGBA, o);
      continue;
    }
    if (model.mode === "dims") {
      const s = w.scales[p];
      for (let c = 0; c < 3; c++) {
        const v = w.codes[model.dims[c] * n + p] * s;
        rgba[o + c] = (255 * (v - model.lo[c])) / (model.hi[c] - model.lo[c]);
      }
    } else if (model.mode === "pca") {
      pixelValues(w, p, w.depth, x);
      for (let c = 0; c < 3; c++) {
        const comp = model.pca.components[c];
        if (!comp) continue;
        let s = 0;
        for (let j = 0; j < w.depth; j++) s += (x[j] - model.pca.mean[j]) * comp[j];
        rgba[o + c] = (255 * (s - model.lo[c])) / (model.hi[c] - model.lo[c]);
      }
    } else if (model.mode === "similarity") {
      pixelValues(w, p, dims, x);
      const sim = cosine(x, model.ref, model.refNorm);
      ramp((sim - model.lo) / (model.hi - model.lo), rgb, 0);
      rgba[o] = rgb[0];
      rgba[o + 1] = rgb[1];
      rgba[o + 2] = rgb[2];
    } else {
      pixelValues(w, p, dims, x);
      const c = predict(model.classifier, x, probs);
      counts[c]++;
      if (model.mode === "classes") {
        const col = model.colours[c] || [255, 255, 255];
        rgba[o] = col[0];
        rgba[o + 1] = col[1];
        rgba[o + 2] = col[2];
      } else {
        const floor = 1 / model.classifier.nClasses;
        ramp((probs[c] - floor) / (1 - floor), rgb, 0);
        rgba[o] = rgb[0];
        rgba[o + 1] = rgb[1];
        rgba[o + 2] = rgb[2];
      }
    }
    rgba[o + 3] = 255;
  }
  return { rgba, counts };
}
