// Sizing a canvas to its laid-out box (one canvas pixel per CSS pixel).

/** Set the canvas's drawing size to its on-screen size; returns {width, height} (at least 1 x 1). */
export function fitCanvas(canvas) {
  const r = canvas.getBoundingClientRect();
  const width = Math.max(1, Math.round(r.width));
  const height = Math.max(1, Math.round(r.height));
  canvas.width = width;
  canvas.height = height;
  return { width, height };
}
