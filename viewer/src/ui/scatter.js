// The scatter panel: a sample of the view's valid pixels on their first two principal
// components. Dragging a rectangle on it selects ("brushes") points, which the map then
// highlights; the map's inspected pixel is ringed here when it is in the sample.
import { fitCanvas } from "./canvas.js";
const PAD = 8;

export class ScatterView {
  constructor(canvas, { onBrush }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onBrush = onBrush;
    this.data = null;
    this.colours = [];
    this.selected = new Set();
    this.focus = -1;
    this.brush = null;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.bindEvents();
  }

  /** data: the worker's scatter result; colours: a CSS colour per point. */
  set(data, colours) {
    this.data = data;
    this.colours = colours;
    this.selected = new Set();
    this.focus = -1;
    this.brush = null;
    this.resize();
  }

  resize() {
    ({ width: this.width, height: this.height } = fitCanvas(this.canvas));
    const xy = this.data ? this.data.xy : [];
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (let i = 0; i < xy.length; i += 2) {
      x0 = Math.min(x0, xy[i]); x1 = Math.max(x1, xy[i]);
      y0 = Math.min(y0, xy[i + 1]); y1 = Math.max(y1, xy[i + 1]);
    }
    this.bounds = { x0, x1: x1 > x0 ? x1 : x0 + 1, y0, y1: y1 > y0 ? y1 : y0 + 1 };
    this.draw();
  }

  /** Canvas position (CSS px) of point i: PC1 to the right, PC2 up. */
  toScreen(i) {
    const { x0, x1, y0, y1 } = this.bounds;
    const x = PAD + ((this.data.xy[2 * i] - x0) / (x1 - x0)) * (this.width - 2 * PAD);
    const y = this.height - PAD - ((this.data.xy[2 * i + 1] - y0) / (y1 - y0)) * (this.height - 2 * PAD);
    return [x, y];
  }

  /** Indices of the points inside a canvas rectangle. */
  inside(ax, ay, bx, by) {
    const [lx, hx, ly, hy] = [Math.min(ax, bx), Math.max(ax, bx), Math.min(ay, by), Math.max(ay, by)];
    const out = [];
    for (let i = 0; i < (this.data ? this.data.count : 0); i++) {
      const [x, y] = this.toScreen(i);
      if (x >= lx && x <= hx && y >= ly && y <= hy) out.push(i);
    }
    return out;
  }

  select(indices) {
    this.selected = new Set(indices);
    this.draw();
    if (this.onBrush) this.onBrush([...this.selected]);
  }

  /** Ring the point of grid pixel (row, col) if it is in the sample; returns its index or -1. */
  focusPixel(row, col) {
    this.focus = -1;
    if (this.data) {
      for (let i = 0; i < this.data.count; i++) if (this.data.rows[i] === row && this.data.cols[i] === col) this.focus = i;
    }
    this.draw();
    return this.focus;
  }

  bindEvents() {
    const c = this.canvas;
    c.addEventListener("pointerdown", (e) => {
      if (!this.data) return;
      this.brush = { x0: e.offsetX, y0: e.offsetY, x1: e.offsetX, y1: e.offsetY };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!this.brush) return;
      Object.assign(this.brush, { x1: e.offsetX, y1: e.offsetY });
      this.draw();
    });
    c.addEventListener("pointerup", (e) => {
      if (!this.brush) return;
      const b = Object.assign(this.brush, { x1: e.offsetX, y1: e.offsetY });
      this.brush = null;
      // a click without a drag clears the selection
      this.select(Math.hypot(b.x1 - b.x0, b.y1 - b.y0) < 3 ? [] : this.inside(b.x0, b.y0, b.x1, b.y1));
      this.lastBrush = b;
    });
  }

  draw() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.width, this.height);
    if (!this.data) return;
    const any = this.selected.size > 0;
    for (let i = 0; i < this.data.count; i++) {
      const [x, y] = this.toScreen(i);
      ctx.globalAlpha = any && !this.selected.has(i) ? 0.25 : 1;
      ctx.fillStyle = this.colours[i];
      ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
    ctx.globalAlpha = 1;
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1;
    for (const i of this.selected) {
      const [x, y] = this.toScreen(i);
      ctx.strokeRect(x - 2.5, y - 2.5, 5, 5);
    }
    if (this.focus >= 0) {
      const [x, y] = this.toScreen(this.focus);
      ctx.beginPath();
      ctx.arc(x, y, 6, 0, 2 * Math.PI);
      ctx.strokeStyle = "#d50000";
      ctx.lineWidth = 2;
      ctx.stroke();
    }
    if (this.brush) {
      const b = this.brush;
      ctx.strokeStyle = "#1565c0";
      ctx.setLineDash([4, 3]);
      ctx.strokeRect(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0);
      ctx.setLineDash([]);
    }
  }
}
