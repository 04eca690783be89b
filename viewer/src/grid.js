// The fixed 10 m grid of each UTM zone (tessera_ray/grid.py): EPSG:326NN for the whole zone,
// upper-left corner at (ZONE_X0, ZONE_Y0), rows going south. Shared by the page and the worker.
import proj4 from "proj4";

export const RESOLUTION = 10;
export const ZONE_X0 = 90400;
export const ZONE_Y0 = 9420800;
export const ZONE_WIDTH = 81920;
export const ZONE_HEIGHT = 1843200;

/** UTM zone of a longitude: plain 6-degree strips, as tessera_ray.grid.utm_zone. */
export function utmZone(lon) {
  const l = ((((lon + 180) % 360) + 360) % 360) - 180;
  return Math.min(Math.floor((l + 180) / 6) + 1, 60);
}

const projections = new Map();
function projection(zone) {
  if (!projections.has(zone)) {
    projections.set(zone, proj4("EPSG:4326", `+proj=utm +zone=${zone} +datum=WGS84 +units=m +no_defs`));
  }
  return projections.get(zone);
}

export function zoneName(zone) {
  return `utm${String(zone).padStart(2, "0")}`;
}

export function zoneCrs(zone) {
  return `EPSG:${32600 + zone}`;
}

/** Projected x/y (metres) of a lon/lat on a zone's CRS. */
export function lonLatToXY(zone, lon, lat) {
  return projection(zone).forward([lon, lat]);
}

export function xyToLonLat(zone, x, y) {
  return projection(zone).inverse([x, y]);
}

/** Fractional grid position (col, row) of a projected point. */
export function xyToGrid(x, y) {
  return [(x - ZONE_X0) / RESOLUTION, (ZONE_Y0 - y) / RESOLUTION];
}

export function gridToXY(col, row) {
  return [ZONE_X0 + col * RESOLUTION, ZONE_Y0 - row * RESOLUTION];
}

/** The pixel (row, col) holding a lon/lat on a given zone's grid (may be off the grid). */
export function lonLatToPixel(zone, lon, lat) {
  const [x, y] = lonLatToXY(zone, lon, lat);
  const [c, r] = xyToGrid(x, y);
  return { row: Math.floor(r), col: Math.floor(c) };
}

/** Lon/lat of a pixel's centre. */
export function pixelToLonLat(zone, row, col) {
  const [x, y] = gridToXY(col + 0.5, row + 0.5);
  return xyToLonLat(zone, x, y);
}

export function onGrid(row, col) {
  return row >= 0 && row < ZONE_HEIGHT && col >= 0 && col < ZONE_WIDTH;
}

export function unitId(zone, size, row, col) {
  const p = (v) => String(v).padStart(4, "0");
  return `${zoneName(zone)}_${size}_${p(row)}_${p(col)}`;
}
