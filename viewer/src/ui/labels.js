// Labelled points for named classes: added by clicking the map, loaded from GeoJSON, CSV or
// GeoParquet (points in lon/lat; the class from a "class", "class_name", "label" or "name"
// column), exported as GeoJSON. Class indices for training are the names sorted.
import { PALETTE } from "../maths/colour.js";

const CLASS_KEYS = ["class", "class_name", "label", "name", "class_id"];

export class Labels {
  constructor(onChange) {
    this.classes = []; // [{name, colour}] in creation order
    this.points = []; // [{lon, lat, cls: name}]
    this.current = null;
    this.onChange = onChange || (() => {});
  }

  addClass(name) {
    name = String(name).trim();
    if (!name) throw new Error("give the class a name");
    if (!this.classes.some((c) => c.name === name)) {
      this.classes.push({ name, colour: PALETTE[this.classes.length % PALETTE.length] });
    }
    this.current = name;
    this.onChange();
    return name;
  }

  colour(name) {
    const c = this.classes.find((c) => c.name === name);
    return c ? c.colour : "#fff";
  }

  add(lon, lat, cls = this.current) {
    if (!cls) throw new Error("add a class first (Labels panel), then click the map");
    this.addClass(cls);
    this.points.push({ lon, lat, cls: String(cls) });
    this.current = String(cls);
    this.onChange();
  }

  clear() {
    this.points = [];
    this.onChange();
  }

  /** Class names sorted (the classifier's class order) and their colours. */
  sorted() {
    const names = this.classes.map((c) => c.name).sort();
    return { names, colours: names.map((n) => this.colour(n)) };
  }

  counts() {
    const out = {};
    for (const p of this.points) out[p.cls] = (out[p.cls] || 0) + 1;
    return out;
  }

  toGeoJSON(extra = {}) {
    return {
      type: "FeatureCollection",
      features: this.points.map((p) => ({
        type: "Feature",
        geometry: { type: "Point", coordinates: [p.lon, p.lat] },
        properties: { class: p.cls, ...extra },
      })),
    };
  }

  /** Replace or extend the labels from parsed points [{lon, lat, cls}]. */
  load(points, { replace = true } = {}) {
    if (!points.length) throw new Error("the file holds no labelled points");
    if (replace) this.points = [];
    for (const p of points) {
      if (!Number.isFinite(p.lon) || !Number.isFinite(p.lat)) continue;
      if (!this.classes.some((c) => c.name === p.cls)) {
        this.classes.push({ name: p.cls, colour: PALETTE[this.classes.length % PALETTE.length] });
      }
      this.points.push({ lon: p.lon, lat: p.lat, cls: p.cls });
    }
    this.current = this.current || (this.classes[0] && this.classes[0].name);
    this.onChange();
    return this.points.length;
  }
}

function classOf(props, where) {
  for (const k of CLASS_KEYS) if (props[k] !== undefined && props[k] !== null) return String(props[k]);
  throw new Error(`${where} has no class (a "${CLASS_KEYS.join('", "')}" property)`);
}

export function parseGeoJSON(text) {
  const doc = JSON.parse(text);
  const features = doc.type === "FeatureCollection" ? doc.features : doc.type === "Feature" ? [doc] : null;
  if (!features) throw new Error("the GeoJSON is not a Feature or FeatureCollection");
  return features
    .filter((f) => f.geometry && f.geometry.type === "Point")
    .map((f, i) => ({ lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1], cls: classOf(f.properties || {}, `feature ${i}`) }));
}

export function parseCSV(text) {
  const lines = text.split(/\r?\n/).filter((l) => l.trim());
  const header = lines[0].split(",").map((h) => h.trim().toLowerCase());
  const lon = header.findIndex((h) => ["lon", "longitude", "x", "lng"].includes(h));
  const lat = header.findIndex((h) => ["lat", "latitude", "y"].includes(h));
  if (lon < 0 || lat < 0) throw new Error("the CSV needs lon and lat columns");
  return lines.slice(1).map((line, i) => {
    const cells = line.split(",").map((c) => c.trim());
    const props = Object.fromEntries(header.map((h, j) => [h, cells[j]]));
    return { lon: Number(cells[lon]), lat: Number(cells[lat]), cls: classOf(props, `CSV row ${i + 1}`) };
  });
}

export async function parseGeoParquet(buffer) {
  const { parquetReadObjects } = await import("hyparquet");
  const { compressors } = await import("hyparquet-compressors");
  const rows = await parquetReadObjects({ file: buffer, compressors });
  return rows
    .filter((r) => r.geometry && r.geometry.type === "Point")
    .map((r, i) => ({ lon: r.geometry.coordinates[0], lat: r.geometry.coordinates[1], cls: classOf(r, `row ${i}`) }));
}

/** Parse a user's file by its name. */
export async function parseLabelFile(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".parquet")) return parseGeoParquet(await file.arrayBuffer());
  const text = await file.text();
  if (name.endsWith(".csv")) return parseCSV(text);
  return parseGeoJSON(text);
}
