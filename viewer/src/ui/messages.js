// One clear message in the page for every failure, a progress bar for long loads, and a
// notice line (e.g. "zoom in to load embeddings").
const $ = (id) => document.getElementById(id);

export const errors = [];

export function showError(err) {
  const message = (err && err.message) || String(err);
  errors.push(message);
  const el = $("error");
  el.textContent = message;
  el.hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}

/** Run an async UI action; a failure becomes the page's message, never an uncaught error. */
export function guard(fn) {
  return async (...args) => {
    try {
      return await fn(...args);
    } catch (err) {
      showError(err);
      return undefined;
    }
  };
}

export function showProgress(text, fraction) {
  const el = $("progress");
  el.hidden = false;
  el.querySelector(".bar").style.width = `${Math.round(100 * Math.min(1, Math.max(0, fraction)))}%`;
  el.querySelector(".text").textContent = text;
}

export function hideProgress() {
  $("progress").hidden = true;
}

export function showNotice(text) {
  const el = $("notice");
  el.textContent = text || "";
  el.hidden = !text;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 ** 2).toFixed(1)} MB`;
}
