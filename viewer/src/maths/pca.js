// PCA of a sample of pixels: the top components of the covariance matrix by power iteration
// with deflation (d <= 128, so the d x d covariance is small). With a `tolerance` the
// iteration stops once a component moves less than that (at most `iterations` steps): close
// eigenvalues, as in noisy samples, need many steps for the exact components.

export function fitPca(X, rows, dims, components = 3, iterations = 200, tolerance = 0) {
  const mean = new Float64Array(dims);
  for (let i = 0; i < rows; i++) for (let j = 0; j < dims; j++) mean[j] += X[i * dims + j];
  for (let j = 0; j < dims; j++) mean[j] /= Math.max(1, rows);
  const C = new Float64Array(dims * dims);
  const x = new Float64Array(dims);
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < dims; j++) x[j] = X[i * dims + j] - mean[j];
    for (let a = 0; a < dims; a++) {
      const xa = x[a];
      if (xa === 0) continue;
      const off = a * dims;
      for (let b = a; b < dims; b++) C[off + b] += xa * x[b];
    }
  }
  for (let a = 0; a < dims; a++) {
    for (let b = a; b < dims; b++) {
      const v = C[a * dims + b] / Math.max(1, rows - 1);
      C[a * dims + b] = v;
      C[b * dims + a] = v;
    }
  }
  let trace = 0;
  for (let a = 0; a < dims; a++) trace += C[a * dims + a];
  const comps = [];
  const variances = [];
  for (let c = 0; c < Math.min(components, dims); c++) {
    let v = new Float64Array(dims).map((_, j) => Math.sin(1 + j * (c + 1))); // deterministic start
    let lambda = 0;
    for (let it = 0; it < iterations; it++) {
      const w = new Float64Array(dims);
      for (let a = 0; a < dims; a++) {
        let s = 0;
        const off = a * dims;
        for (let b = 0; b < dims; b++) s += C[off + b] * v[b];
        w[a] = s;
      }
      const norm = Math.hypot(...w);
      if (norm === 0) break;
      let moved = 0;
      for (let a = 0; a < dims; a++) {
        w[a] /= norm;
        moved = Math.max(moved, Math.abs(w[a] - v[a]));
      }
      lambda = norm;
      v = w;
      if (moved < tolerance) break;
    }
    // a sign convention so the same data gives the same colours
    let big = 0;
    for (let a = 1; a < dims; a++) if (Math.abs(v[a]) > Math.abs(v[big])) big = a;
    if (v[big] < 0) for (let a = 0; a < dims; a++) v[a] = -v[a];
    comps.push(Array.from(v));
    variances.push(lambda);
    for (let a = 0; a < dims; a++) for (let b = 0; b < dims; b++) C[a * dims + b] -= lambda * v[a] * v[b];
  }
  return { mean: Array.from(mean), components: comps, explained: variances.map((l) => (trace > 0 ? l / trace : 0)) };
}

/** Projections of the sample rows on the components (rows x k, row-major). */
export function project(pca, X, rows, dims) {
  const k = pca.components.length;
  const out = new Float32Array(rows * k);
  for (let i = 0; i < rows; i++) {
    for (let c = 0; c < k; c++) {
      const comp = pca.components[c];
      let s = 0;
      for (let j = 0; j < dims; j++) s += (X[i * dims + j] - pca.mean[j]) * comp[j];
      out[i * k + c] = s;
    }
  }
  return out;
}
