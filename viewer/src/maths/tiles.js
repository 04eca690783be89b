// XYZ (Web Mercator, EPSG:3857) basemap tiles on a UTM zone's grid: which tiles a view needs,
// at which zoom, and where each lands on the grid. Pure functions; the layer is ui/basemap.js.
//
// A tile is drawn as a mesh of triangles, each with the affine transform that maps its three
// corners exactly (tile pixel -> grid position, projected through lon/lat with proj4). Inside
// a triangle the affine departs from the true Mercator -> UTM mapping by its curvature only;
// `meshSize` picks the mesh so that this stays under MAX_ERROR screen px (test/basemap-error.mjs
// measures it; docs/viewer.md has the figures). One affine per tile is not enough: at zoom 10
// and 52 N it is 1.2 px off, at zoom 6 20 px.
import { lonLatToXY, xyToGrid, xyToLonLat, gridToXY } from "../grid.js";

export const TILE = 256; // px of an XYZ tile
const EARTH_PX0 = 40075016.685578488 / TILE; // metres per tile pixel at zoom 0 on the equator
export const MAX_ERROR = 0.1; // screen px: largest departure of a drawn tile from the exact projection
const MAX_MESH = 32;
const MAX_TILES = 64; // a view needing more tiles at its zoom drops to a coarser zoom
const EDGE_SAMPLES = 8; // points per side of the view projected to find the tiles it touches

/** Lon/lat of a tile-space point (x, y in tiles at zoom z, fractional). */
export function tileToLonLat(z, x, y) {
  const n = 2 ** z;
  const lon = (x / n) * 360 - 180;
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - (2 * y) / n))) * 180) / Math.PI;
  return [lon, lat];
}

/** Tile-space position (fractional tiles at zoom z) of a lon/lat. */
export function lonLatToTile(z, lon, lat) {
  const n = 2 ** z;
  const phi = (Math.max(-85.0511287798, Math.min(85.0511287798, lat)) * Math.PI) / 180;
  return [((lon + 180) / 360) * n, ((1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2) * n];
}

/** Grid position (col, row, fractional) on `zone` of a tile-space point. */
export function tileToGrid(zone, z, x, y) {
  const [lon, lat] = tileToLonLat(z, x, y);
  return xyToGrid(...lonLatToXY(zone, lon, lat));
}

/**
 * The zoom whose tile pixels are closest to the view's screen pixels: round(log2(C cos(lat) s / 10))
 * with C the metres per tile pixel at zoom 0, lat that of the view's centre and s the screen px per
 * 10 m grid pixel; clamped to [minZoom, maxZoom].
 */
export function chooseZoom(lat, scale, minZoom = 0, maxZoom = 19) {
  const z = Math.round(Math.log2((EARTH_PX0 * Math.cos((lat * Math.PI) / 180) * scale) / 10));
  return Math.max(minZoom, Math.min(maxZoom, Number.isFinite(z) ? z : minZoom));
}

/**
 * The tiles a grid window {col0, row0, col1, row1} of `zone` needs at zoom z: the tile-space
 * bounding box of EDGE_SAMPLES points per side of the window (projected), whole tiles, rows
 * clamped to the world, columns wrapped. [] when no point of the window projects.
 */
export function tilesForWindow(zone, z, w) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  const n = 2 ** z;
  for (let i = 0; i <= EDGE_SAMPLES; i++) {
    const f = i / EDGE_SAMPLES;
    const c = w.col0 + f * (w.col1 - w.col0), r = w.row0 + f * (w.row1 - w.row0);
    for (const [col, row] of [[c, w.row0], [c, w.row1], [w.col0, r], [w.col1, r]]) {
      const [lon, lat] = xyToLonLat(zone, ...gridToXY(col, row));
      if (!Number.isFinite(lon) || !Number.isFinite(lat)) continue;
      const [tx, ty] = lonLatToTile(z, lon, lat);
      x0 = Math.min(x0, tx), x1 = Math.max(x1, tx), y0 = Math.min(y0, ty), y1 = Math.max(y1, ty);
    }
  }
  if (!(x0 <= x1)) return [];
  const tiles = [];
  for (let y = Math.max(0, Math.floor(y0)); y <= Math.min(n - 1, Math.floor(y1)); y++) {
    for (let x = Math.floor(x0); x <= Math.floor(x1); x++) tiles.push({ z, x: ((x % n) + n) % n, y, tx: x });
  }
  return tiles;
}

/**
 * The zoom and tiles of a view: `chooseZoom` at the view's centre, one zoom coarser while the
 * view would need more than MAX_TILES tiles.
 */
export function viewTiles(zone, w, scale, { minZoom = 0, maxZoom = 19 } = {}) {
  const [, lat] = xyToLonLat(zone, ...gridToXY((w.col0 + w.col1) / 2, (w.row0 + w.row1) / 2));
  let z = chooseZoom(lat, scale, minZoom, maxZoom);
  let tiles = tilesForWindow(zone, z, w);
  while (tiles.length > MAX_TILES && z > minZoom) tiles = tilesForWindow(zone, --z, w);
  return { z, tiles: tiles.length > MAX_TILES ? [] : tiles };
}

/** The affine map [a, b, c, d, e, f] (x' = a u + c v + e, y' = b u + d v + f) taking three points p to q. */
export function affineFrom3(p, q) {
  const [[u0, v0], [u1, v1], [u2, v2]] = p;
  const det = (u1 - u0) * (v2 - v0) - (u2 - u0) * (v1 - v0);
  const solve = (k) => {
    const w0 = q[0][k], w1 = q[1][k], w2 = q[2][k];
    const a = ((w1 - w0) * (v2 - v0) - (w2 - w0) * (v1 - v0)) / det;
    const c = ((u1 - u0) * (w2 - w0) - (u2 - u0) * (w1 - w0)) / det;
    return [a, c, w0 - a * u0 - c * v0];
  };
  const [a, c, e] = solve(0);
  const [b, d, f] = solve(1);
  return [a, b, c, d, e, f];
}

export function applyAffine(m, u, v) {
  return [m[0] * u + m[2] * v + m[4], m[1] * u + m[3] * v + m[5]];
}

/**
 * A tile as a mesh of n x n cells, two triangles each: vertices [u, v] in tile px and their grid
 * positions [col, row]. `tx` is the unwrapped tile column (views across the antimeridian).
 */
export function tileMesh(zone, t, n) {
  const grid = [];
  for (let j = 0; j <= n; j++) {
    for (let i = 0; i <= n; i++) grid.push(tileToGrid(zone, t.z, t.tx + i / n, t.y + j / n));
  }
  const at = (i, j) => [[(i * TILE) / n, (j * TILE) / n], grid[j * (n + 1) + i]];
  const triangles = [];
  for (let j = 0; j < n; j++) {
    for (let i = 0; i < n; i++) {
      triangles.push([at(i, j), at(i + 1, j), at(i, j + 1)], [at(i + 1, j + 1), at(i, j + 1), at(i + 1, j)]);
    }
  }
  return triangles;
}

/**
 * Largest distance (grid px) between a mesh's piecewise-affine map and the exact projection,
 * on a `samples` x `samples` lattice of points of each triangle's cell.
 */
export function meshError(zone, t, n, samples = 8) {
  let worst = 0;
  for (const tri of tileMesh(zone, t, n)) {
    const m = affineFrom3(tri.map((p) => p[0]), tri.map((p) => p[1]));
    const [[ua, va], [ub, vb], [uc, vc]] = tri.map((p) => p[0]);
    for (let i = 0; i <= samples; i++) {
      for (let j = 0; j <= samples - i; j++) {
        const s = i / samples, r = j / samples; // barycentric: inside the triangle
        const u = ua + s * (ub - ua) + r * (uc - ua), v = va + s * (vb - va) + r * (vc - va);
        const [c, row] = applyAffine(m, u, v);
        const [ce, re] = tileToGrid(zone, t.z, t.tx + u / TILE, t.y + v / TILE);
        worst = Math.max(worst, Math.hypot(c - ce, row - re));
      }
    }
  }
  return worst;
}

const meshErrors = new Map(); // "zone/z/tx/y" -> [error of the 1 x 1 mesh, 2 x 2, ...] in grid px

/**
 * The mesh size (power of two, at most MAX_MESH) that keeps a tile within MAX_ERROR screen px at
 * `scale` screen px per grid px: the coarsest whose error, measured on a few points of each
 * triangle (meshError), is small enough. Errors are kept per tile, so each is measured once.
 */
export function meshSize(zone, t, scale) {
  const key = `${zone}/${t.z}/${t.tx}/${t.y}`;
  if (!meshErrors.has(key)) {
    if (meshErrors.size > 4096) meshErrors.clear();
    meshErrors.set(key, []);
  }
  const errors = meshErrors.get(key);
  let n = 1;
  for (let k = 0; n < MAX_MESH; k++, n *= 2) {
    if (errors[k] === undefined) errors[k] = meshError(zone, t, n, 4);
    if (errors[k] * scale <= MAX_ERROR) break;
  }
  return n;
}
