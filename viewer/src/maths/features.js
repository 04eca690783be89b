// Dequantised features of the valid pixels of window reads (band-major int8 codes x scale).

/** Statuses of a window's pixels: 0 valid, 1 no data (scale NaN), 2 not processed (+inf). */
export function statusOf(scale) {
  return Number.isNaN(scale) ? 1 : Number.isFinite(scale) ? 0 : 2;
}

/** Values of pixel p (first `dims` bands) into `out`. */
export function pixelValues(w, p, dims, out) {
  const n = w.height * w.width;
  const s = w.scales[p];
  for (let k = 0; k < dims; k++) out[k] = w.codes[k * n + p] * s;
  return out;
}

/**
 * A sample of at most `max` valid pixels of several windows as one row-major Float32Array
 * (rows x dims), evenly strided so every window contributes.
 */
export function sampleValid(windows, dims, max = 20000) {
  let total = 0;
  for (const w of windows) for (let p = 0; p < w.scales.length; p++) if (statusOf(w.scales[p]) === 0) total++;
  const step = Math.max(1, Math.ceil(total / max));
  const rows = Math.ceil(total / step);
  const X = new Float32Array(rows * dims);
  const tmp = new Float32Array(dims);
  let i = 0, r = 0;
  for (const w of windows) {
    for (let p = 0; p < w.scales.length; p++) {
      if (statusOf(w.scales[p]) !== 0) continue;
      if (i++ % step === 0 && r < rows) {
        X.set(pixelValues(w, p, dims, tmp), r * dims);
        r++;
      }
    }
  }
  return { X: X.subarray(0, r * dims), rows: r, dims };
}

/** The q-quantile (0..1) of an array of numbers (copied, sorted). */
export function quantile(values, q) {
  if (!values.length) return NaN;
  const sorted = Float64Array.from(values).sort();
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

/** Robust display range of each column: 2nd and 98th percentiles. */
export function columnRanges(X, rows, dims) {
  const lo = new Float64Array(dims), hi = new Float64Array(dims);
  const col = new Float64Array(rows);
  for (let j = 0; j < dims; j++) {
    for (let i = 0; i < rows; i++) col[i] = X[i * dims + j];
    lo[j] = quantile(col, 0.02);
    hi[j] = quantile(col, 0.98);
    if (!(hi[j] > lo[j])) hi[j] = lo[j] + 1e-6;
  }
  return { lo: Array.from(lo), hi: Array.from(hi) };
}
