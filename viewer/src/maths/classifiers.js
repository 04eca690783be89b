// Classifiers trained in the page on labelled pixels (rows of X, one class index per row).
// Class indices follow the class names sorted, as scikit-learn's classes_ do, so results
// can be compared with the same classifier run in Python.

/** k nearest neighbours, Euclidean, uniform votes; ties go to the lowest class index (as sklearn). */
export function trainKnn(X, y, dims, nClasses, k = 5) {
  return { kind: "knn", X: Float32Array.from(X), y: Int32Array.from(y), dims, nClasses, k: Math.min(k, y.length) };
}

function knnPredict(model, x, probs) {
  const { X, y, dims, k, nClasses } = model;
  const n = y.length;
  const bestD = new Float64Array(k).fill(Infinity);
  const bestI = new Int32Array(k).fill(-1);
  for (let i = 0; i < n; i++) {
    let d = 0;
    const off = i * dims;
    for (let j = 0; j < dims; j++) {
      const t = X[off + j] - x[j];
      d += t * t;
    }
    if (d >= bestD[k - 1]) continue;
    let pos = k - 1;
    while (pos > 0 && bestD[pos - 1] > d) {
      bestD[pos] = bestD[pos - 1];
      bestI[pos] = bestI[pos - 1];
      pos--;
    }
    bestD[pos] = d;
    bestI[pos] = i;
  }
  probs.fill(0, 0, nClasses);
  for (let m = 0; m < k; m++) if (bestI[m] >= 0) probs[y[bestI[m]]] += 1 / k;
  let best = 0;
  for (let c = 1; c < nClasses; c++) if (probs[c] > probs[best] + 1e-12) best = c;
  return best;
}

/**
 * Multinomial logistic regression on standardised features, L2 penalty 1/(2C)||W||^2 on the
 * summed log-loss (scikit-learn's objective with C=1), minimised by full-batch gradient
 * descent with Adam steps.
 */
export function trainLogistic(X, y, dims, nClasses, { C = 1, iterations = 600, rate = 0.05 } = {}) {
  const n = y.length;
  const mean = new Float64Array(dims), std = new Float64Array(dims);
  for (let i = 0; i < n; i++) for (let j = 0; j < dims; j++) mean[j] += X[i * dims + j] / n;
  for (let i = 0; i < n; i++) for (let j = 0; j < dims; j++) std[j] += (X[i * dims + j] - mean[j]) ** 2 / n;
  for (let j = 0; j < dims; j++) std[j] = Math.sqrt(std[j]) || 1;
  const Z = new Float64Array(n * dims);
  for (let i = 0; i < n; i++) for (let j = 0; j < dims; j++) Z[i * dims + j] = (X[i * dims + j] - mean[j]) / std[j];
  const P = dims + 1; // weights and a bias per class
  const W = new Float64Array(nClasses * P);
  const m = new Float64Array(W.length), v = new Float64Array(W.length), g = new Float64Array(W.length);
  const logits = new Float64Array(nClasses);
  for (let it = 1; it <= iterations; it++) {
    g.fill(0);
    for (let i = 0; i < n; i++) {
      softmax(W, Z, i * dims, dims, nClasses, logits);
      for (let c = 0; c < nClasses; c++) {
        const err = logits[c] - (y[i] === c ? 1 : 0);
        const off = c * P;
        for (let j = 0; j < dims; j++) g[off + j] += err * Z[i * dims + j];
        g[off + dims] += err;
      }
    }
    for (let c = 0; c < nClasses; c++) for (let j = 0; j < dims; j++) g[c * P + j] += W[c * P + j] / C;
    for (let q = 0; q < W.length; q++) {
      const gq = g[q] / n;
      m[q] = 0.9 * m[q] + 0.1 * gq;
      v[q] = 0.999 * v[q] + 0.001 * gq * gq;
      const mh = m[q] / (1 - 0.9 ** it), vh = v[q] / (1 - 0.999 ** it);
      W[q] -= (rate * mh) / (Math.sqrt(vh) + 1e-8);
    }
  }
  return { kind: "logistic", W: Array.from(W), mean: Array.from(mean), std: Array.from(std), dims, nClasses };
}

function softmax(W, Z, off, dims, nClasses, out) {
  const P = dims + 1;
  let max = -Infinity;
  for (let c = 0; c < nClasses; c++) {
    let s = W[c * P + dims];
    for (let j = 0; j < dims; j++) s += W[c * P + j] * Z[off + j];
    out[c] = s;
    if (s > max) max = s;
  }
  let sum = 0;
  for (let c = 0; c < nClasses; c++) sum += out[c] = Math.exp(out[c] - max);
  for (let c = 0; c < nClasses; c++) out[c] /= sum;
}

function logisticPredict(model, x, probs) {
  const { dims, nClasses, mean, std, W } = model;
  const z = model._z || (model._z = new Float64Array(dims));
  for (let j = 0; j < dims; j++) z[j] = (x[j] - mean[j]) / std[j];
  softmax(W, z, 0, dims, nClasses, probs);
  let best = 0;
  for (let c = 1; c < nClasses; c++) if (probs[c] > probs[best]) best = c;
  return best;
}

/** Class index of one feature vector; `probs` (length nClasses) receives the class probabilities. */
export function predict(model, x, probs) {
  return model.kind === "knn" ? knnPredict(model, x, probs) : logisticPredict(model, x, probs);
}

export function train(method, X, y, dims, nClasses, options = {}) {
  if (method === "knn") return trainKnn(X, y, dims, nClasses, options.k ?? 5);
  if (method === "logistic") return trainLogistic(X, y, dims, nClasses, options);
  throw new Error(`unknown classifier ${method}`);
}
