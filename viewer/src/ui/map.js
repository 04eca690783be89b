// The map: a canvas on one zone's own grid (1 grid pixel = 10 m), panned by dragging and zoomed
// with the wheel or buttons. Beneath it, on a canvas of its own, an optional basemap
// (`underlay`, ui/basemap.js) follows the same view. It draws what it is given, in this order:
// the embedding layer (one image per block, at `layerOpacity`), unit outlines coloured by status, labelled
// points, markers, and on top the pixels brushed on the scatter panel. Clicks (a press
// without a drag) are reported as grid pixels.
import { UNIT_COLOURS } from "../maths/colour.js";
import { fitCanvas } from "./canvas.js";

export const BRUSH_COLOUR = "#ff00ff";
const MIN_SCALE = 1 / 256;
const MAX_SCALE = 32;

export class MapView {
  constructor(canvas, { onClick, onViewChange }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.view = { cx: 0, cy: 0, scale: 1 }; // centre in grid (col, row) units, screen px per grid px
    this.layers = { blocks: new Map(), units: [], points: [], markers: [], brushed: [] };
    this.underlay = null; // the basemap, drawn on its own canvas with every view change
    this.layerOpacity = 1;
    this.onClick = onClick;
    this.onViewChange = onViewChange;
    this.resize();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.bindEvents();
  }

  resize() {
    ({ width: this.width, height: this.height } = fitCanvas(this.canvas));
    this.draw();
    if (this.onViewChange) this.onViewChange();
  }

  /** Grid window in view: {col0, row0, col1, row1} (fractional). */
  window() {
    const { cx, cy, scale } = this.view;
    const hw = this.width / (2 * scale), hh = this.height / (2 * scale);
    return { col0: cx - hw, col1: cx + hw, row0: cy - hh, row1: cy + hh };
  }

  toScreen(col, row) {
    const { cx, cy, scale } = this.view;
    return [(col - cx) * scale + this.width / 2, (row - cy) * scale + this.height / 2];
  }

  /** Whole screen pixels [x, y, width, height] that stand for grid pixel (col, row), at least 1 x 1. */
  pixelBox(col, row) {
    const [x0, y0] = this.toScreen(col, row);
    const [x1, y1] = this.toScreen(col + 1, row + 1);
    const x = Math.round(x0), y = Math.round(y0);
    return [x, y, Math.max(1, Math.round(x1) - x), Math.max(1, Math.round(y1) - y)];
  }

  toGrid(x, y) {
    const { cx, cy, scale } = this.view;
    return [(x - this.width / 2) / scale + cx, (y - this.height / 2) / scale + cy];
  }

  setView(view) {
    Object.assign(this.view, view);
    this.view.scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.view.scale));
    this.draw();
    if (this.onViewChange) this.onViewChange();
  }

  /** Fit a grid box {col0, row0, col1, row1} in view, at a power-of-two scale. */
  fit(box) {
    const w = Math.max(1, box.col1 - box.col0), h = Math.max(1, box.row1 - box.row0);
    const s = Math.min((this.width * 0.9) / w, (this.height * 0.9) / h);
    const scale = 2 ** Math.floor(Math.log2(s));
    this.setView({ cx: (box.col0 + box.col1) / 2, cy: (box.row0 + box.row1) / 2, scale });
  }

  zoomBy(factor, x = this.width / 2, y = this.height / 2) {
    const [gc, gr] = this.toGrid(x, y);
    const scale = Math.min(MAX_SCALE, Math.max(MIN_SCALE, this.view.scale * factor));
    // keep the grid point under (x, y) fixed
    this.setView({ scale, cx: gc - (x - this.width / 2) / scale, cy: gr - (y - this.height / 2) / scale });
  }

  bindEvents() {
    const c = this.canvas;
    let down = null;
    c.addEventListener("pointerdown", (e) => {
      down = { x: e.offsetX, y: e.offsetY, cx: this.view.cx, cy: this.view.cy, moved: false };
      c.setPointerCapture(e.pointerId);
    });
    c.addEventListener("pointermove", (e) => {
      if (!down) return;
      const dx = e.offsetX - down.x, dy = e.offsetY - down.y;
      if (!down.moved && Math.hypot(dx, dy) < 4) return;
      down.moved = true;
      this.view.cx = down.cx - dx / this.view.scale;
      this.view.cy = down.cy - dy / this.view.scale;
      this.draw();
    });
    c.addEventListener("pointerup", (e) => {
      if (!down) return;
      const moved = down.moved;
      down = null;
      if (moved) {
        if (this.onViewChange) this.onViewChange();
      } else if (this.onClick) {
        const [col, row] = this.toGrid(e.offsetX, e.offsetY);
        this.onClick(Math.floor(row), Math.floor(col));
      }
    });
    c.addEventListener(
      "wheel",
      (e) => {
        e.preventDefault();
        this.zoomBy(e.deltaY < 0 ? 2 : 0.5, e.offsetX, e.offsetY);
      },
      { passive: false },
    );
  }

  draw() {
    const ctx = this.ctx;
    ctx.clearRect(0, 0, this.width, this.height);
    if (this.underlay) this.underlay.draw(this);
    ctx.imageSmoothingEnabled = false;
    const s = this.view.scale;
    ctx.globalAlpha = this.layerOpacity;
    for (const b of this.layers.blocks.values()) {
      const [x, y] = this.toScreen(b.col, b.row);
      if (x > this.width || y > this.height || x + b.width * s < 0 || y + b.height * s < 0) continue;
      ctx.drawImage(b.image, x, y, b.width * s, b.height * s);
    }
    ctx.globalAlpha = 1;
    ctx.lineWidth = 2;
    for (const u of this.layers.units) {
      const [x, y] = this.toScreen(u.col, u.row);
      const size = u.size * s;
      if (x > this.width || y > this.height || x + size < 0 || y + size < 0) continue;
      ctx.strokeStyle = UNIT_COLOURS[u.status] || "#fff";
      ctx.strokeRect(x + 1, y + 1, size - 2, size - 2);
    }
    for (const p of this.layers.points) {
      const [x, y] = this.toScreen(p.col + 0.5, p.row + 0.5);
      ctx.beginPath();
      ctx.arc(x, y, 5, 0, 2 * Math.PI);
      ctx.fillStyle = p.colour;
      ctx.fill();
      ctx.strokeStyle = "#000";
      ctx.lineWidth = 1.5;
      ctx.stroke();
    }
    for (const m of this.layers.markers) {
      const [x, y] = this.toScreen(m.col, m.row);
      const size = Math.max(6, s);
      ctx.strokeStyle = m.colour || "#fff";
      ctx.lineWidth = 2;
      ctx.strokeRect(x - 1, y - 1, size + 2, size + 2);
    }
    // on top: pixels brushed on the scatter panel, each filled in BRUSH_COLOUR, grown to at
    // least 3 x 3 screen px around its own pixel box so that it shows when zoomed out
    ctx.fillStyle = BRUSH_COLOUR;
    for (const p of this.layers.brushed) {
      const [x, y, w, h] = this.pixelBox(p.col, p.row);
      const gx = Math.max(0, Math.ceil((3 - w) / 2)), gy = Math.max(0, Math.ceil((3 - h) / 2));
      if (x < this.width && y < this.height && x + w > 0 && y + h > 0) ctx.fillRect(x - gx, y - gy, w + 2 * gx, h + 2 * gy);
    }
  }
}
