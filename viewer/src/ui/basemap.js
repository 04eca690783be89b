// The optional basemap: XYZ tiles (Web Mercator, a {z}/{x}/{y} URL template) reprojected onto
// the zone's grid, on a canvas of its own beneath the map canvas. Nothing is requested unless a
// template is configured (viewer.json beside index.html, or ?basemap=; docs/viewer.md).
//
// Tiles are <img> elements without CORS: any tile server works, and since this canvas is not
// the map's, the map canvas stays readable (exports, tests). The view's tiles are first laid
// side by side on a mosaic canvas in tile space (no seams between tiles), then the mosaic is
// drawn onto the screen as triangles, each with the affine transform that maps its corners
// exactly (maths/tiles.js sizes the mesh to keep within 0.1 px of the exact projection).
// A tile that fails to load stays blank; the page goes on.
import { TILE, affineFrom3, meshSize, tileMesh, viewTiles } from "../maths/tiles.js";
import { fitCanvas } from "./canvas.js";
import { showError } from "./messages.js";

const MAX_CACHED = 256; // tile images kept (least recently used out)
const SEAM = 1; // screen px each triangle's clip grows by, so that neighbours overlap

/** The template's URL for a tile; {z}, {x}, {y} (and {-y}, the TMS row) replaced. */
export function tileUrl(template, base, { z, x, y }) {
  const url = template
    .replaceAll("{z}", z)
    .replaceAll("{x}", x)
    .replaceAll("{-y}", 2 ** z - 1 - y)
    .replaceAll("{y}", y);
  return new URL(url, base).href;
}

/**
 * A basemap configuration {url, attribution, max_zoom, opacity} checked: the template needs
 * {z}, {x} and {y} (or {-y}) and an http(s) URL or a path relative to the root. Throws one clear
 * Error otherwise.
 */
export function checkBasemap(config, where) {
  if (!config || typeof config !== "object" || typeof config.url !== "string") {
    throw new Error(`${where}: a basemap needs a "url" template`);
  }
  const url = config.url.trim();
  const missing = ["{z}", "{x}"].filter((p) => !url.includes(p));
  if (!url.includes("{y}") && !url.includes("{-y}")) missing.push("{y}");
  if (missing.length) throw new Error(`${where}: the basemap template ${url} has no ${missing.join(", ")}`);
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (scheme && !/^https?$/i.test(scheme[1])) throw new Error(`${where}: the basemap template must be http(s):// or a relative path, not ${scheme[1]}:`);
  const maxZoom = config.max_zoom === undefined ? 19 : Number(config.max_zoom);
  if (!Number.isInteger(maxZoom) || maxZoom < 0 || maxZoom > 24) throw new Error(`${where}: max_zoom must be an integer from 0 to 24`);
  const opacity = config.opacity === undefined ? 1 : Number(config.opacity);
  if (!(opacity >= 0 && opacity <= 1)) throw new Error(`${where}: opacity must be between 0 and 1`);
  return { url, attribution: String(config.attribution || ""), maxZoom, opacity };
}

/**
 * The basemap to draw, or null: `param` ({url, attribution} from ?basemap=; "none" or empty: none)
 * if given, else the root's viewer.json (written by tessera-ray viewer; absent in roots published
 * before it). A bad configuration is one message in the page, which goes on without a basemap.
 */
export async function basemapConfig(param, rootUrl) {
  let config, where;
  if (param !== undefined) {
    if (["", "none"].includes(param.url.trim())) return null;
    [config, where] = [param, "?basemap="];
  } else {
    where = new URL("viewer.json", rootUrl).href;
    let response;
    try {
      response = await fetch(where);
    } catch {
      return null; // another origin that does not allow this page (CORS): no configuration to read
    }
    if (!response.ok) return null;
    try {
      config = (await response.json()).basemap;
    } catch {
      showError(new Error(`${where} is not JSON: no basemap`));
      return null;
    }
    if (!config) return null;
  }
  try {
    return checkBasemap(config, where);
  } catch (err) {
    showError(err);
    return null;
  }
}

export class Basemap {
  /** `canvas` beneath the map's; `base` the URL relative templates are resolved against. */
  constructor(canvas, config, base, { onLoad } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.config = config;
    this.base = base;
    this.onLoad = onLoad;
    this.tiles = new Map(); // "z/x/y" -> {img, status: loading | loaded | failed, url}
    this.meshes = new Map();
    this.mosaic = null; // {key, canvas, x0, y0}
    this.zone = null;
    this.view = { z: null, tiles: [] };
    this.requested = [];
    this.setOpacity(config.opacity);
  }

  setOpacity(opacity) {
    this.opacity = Math.min(1, Math.max(0, Number(opacity)));
    this.canvas.style.opacity = String(this.opacity);
  }

  tile(t) {
    const key = `${t.z}/${t.x}/${t.y}`;
    let entry = this.tiles.get(key);
    if (entry) {
      this.tiles.delete(key);
      this.tiles.set(key, entry);
      return entry;
    }
    const img = new Image();
    entry = { img, status: "loading", url: tileUrl(this.config.url, this.base, t) };
    img.decoding = "async";
    img.onload = () => {
      entry.status = "loaded";
      if (this.onLoad) this.onLoad();
    };
    img.onerror = () => {
      entry.status = "failed"; // the tile stays blank
      if (this.onLoad) this.onLoad();
    };
    img.src = entry.url;
    this.requested.push(key);
    this.tiles.set(key, entry);
    for (const [k, old] of this.tiles) {
      if (this.tiles.size <= MAX_CACHED) break;
      if (old.status === "loading") continue;
      this.tiles.delete(k);
    }
    return entry;
  }

  /** The view's tiles side by side in tile space, redrawn when the set or a tile changed. */
  buildMosaic(tiles) {
    const x0 = Math.min(...tiles.map((t) => t.tx)), y0 = Math.min(...tiles.map((t) => t.y));
    const x1 = Math.max(...tiles.map((t) => t.tx)), y1 = Math.max(...tiles.map((t) => t.y));
    const key = `${tiles[0].z}/${x0}/${y0}/${x1}/${y1}/` + tiles.map((t) => this.tile(t).status).join(",");
    if (this.mosaic && this.mosaic.key === key) return this.mosaic;
    const canvas = this.mosaic && this.mosaic.canvas.width === (x1 - x0 + 1) * TILE && this.mosaic.canvas.height === (y1 - y0 + 1) * TILE
      ? this.mosaic.canvas
      : new OffscreenCanvas((x1 - x0 + 1) * TILE, (y1 - y0 + 1) * TILE);
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    for (const t of tiles) {
      const entry = this.tile(t);
      if (entry.status === "loaded") ctx.drawImage(entry.img, (t.tx - x0) * TILE, (t.y - y0) * TILE, TILE, TILE);
    }
    this.mosaic = { key, canvas, x0, y0 };
    return this.mosaic;
  }

  mesh(t, scale) {
    const n = meshSize(this.zone, t, scale);
    const key = `${this.zone}/${t.z}/${t.tx}/${t.y}/${n}`;
    if (!this.meshes.has(key)) {
      if (this.meshes.size > 4 * MAX_CACHED) this.meshes.clear();
      this.meshes.set(key, tileMesh(this.zone, t, n));
    }
    return this.meshes.get(key);
  }

  /** Draw the tiles under the map's current view (called by MapView.draw). */
  draw(map) {
    if (this.canvas.width !== map.width || this.canvas.height !== map.height) fitCanvas(this.canvas);
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.zone === null || this.opacity === 0) return;
    this.view = viewTiles(this.zone, map.window(), map.view.scale, { maxZoom: this.config.maxZoom });
    const tiles = this.view.tiles;
    if (!tiles.length) return;
    const mosaic = this.buildMosaic(tiles);
    ctx.imageSmoothingEnabled = true;
    for (const t of tiles) {
      if (this.tile(t).status !== "loaded") continue;
      const ox = (t.tx - mosaic.x0) * TILE, oy = (t.y - mosaic.y0) * TILE;
      for (const tri of this.mesh(t, map.view.scale)) {
        const uv = tri.map(([[u, v]]) => [u + ox, v + oy]);
        const xy = tri.map(([, [col, row]]) => map.toScreen(col, row));
        if (!xy.every(([x, y]) => Number.isFinite(x) && Number.isFinite(y))) continue;
        if (xy.every(([x]) => x < 0) || xy.every(([x]) => x > map.width) || xy.every(([, y]) => y < 0) || xy.every(([, y]) => y > map.height)) continue;
        drawTriangle(ctx, mosaic.canvas, uv, xy);
      }
    }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
  }

  /** What the layer holds, for scripts and tests. */
  state() {
    return {
      template: this.config.url,
      attribution: this.config.attribution,
      opacity: this.opacity,
      zoom: this.view.z,
      tiles: this.view.tiles.map((t) => ({ z: t.z, x: t.x, y: t.y, status: this.tiles.get(`${t.z}/${t.x}/${t.y}`)?.status ?? "none" })),
      requested: [...this.requested],
    };
  }
}

/** One triangle of the mosaic (vertices uv, mosaic px) onto the screen (vertices xy). */
function drawTriangle(ctx, image, uv, xy) {
  const m = affineFrom3(uv, xy);
  ctx.save();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.beginPath();
  grow(xy, SEAM).forEach(([x, y], i) => (i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y)));
  ctx.closePath();
  ctx.clip();
  ctx.setTransform(...m);
  // only the triangle's box of the mosaic (and a px around it) is drawn
  const u0 = Math.max(0, Math.floor(Math.min(...uv.map((p) => p[0]))) - 1), v0 = Math.max(0, Math.floor(Math.min(...uv.map((p) => p[1]))) - 1);
  const u1 = Math.min(image.width, Math.ceil(Math.max(...uv.map((p) => p[0]))) + 1), v1 = Math.min(image.height, Math.ceil(Math.max(...uv.map((p) => p[1]))) + 1);
  ctx.drawImage(image, u0, v0, u1 - u0, v1 - v0, u0, v0, u1 - u0, v1 - v0);
  ctx.restore();
}

/**
 * A triangle with each edge moved out by d px (mitred corners, at most 4 d): neighbouring
 * triangles then overlap instead of leaving an antialiased seam where their clips meet.
 */
function grow(xy, d) {
  const area = (xy[1][0] - xy[0][0]) * (xy[2][1] - xy[0][1]) - (xy[2][0] - xy[0][0]) * (xy[1][1] - xy[0][1]);
  const side = Math.sign(area) || 1;
  const normal = (a, b) => {
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    return [(side * dy) / len, (-side * dx) / len]; // outward for either winding
  };
  return xy.map((p, i) => {
    const prev = xy[(i + 2) % 3], next = xy[(i + 1) % 3];
    const n1 = normal(prev, p), n2 = normal(p, next);
    const k = Math.min(4, 1 / Math.max(0.25, 1 + n1[0] * n2[0] + n1[1] * n2[1]));
    return [p[0] + d * k * (n1[0] + n2[0]), p[1] + d * k * (n1[1] + n2[1])];
  });
}
