// window.tesseraViewer: the page driven by scripts (notebooks, end-to-end tests).
import { errors } from "./ui/messages.js";
import { lonLatToPixel, utmZone } from "./grid.js";

export function exposeApi(app, ready) {
  const api = {
    /** Resolves when the root is loaded and the first view is drawn (rejects with the page's message). */
    ready,
    get years() {
      return app.info ? [...app.info.years] : [];
    },
    get zones() {
      return app.info ? [...app.info.zones] : [];
    },
    get depths() {
      return app.info ? [...app.info.depths] : [];
    },
    get view() {
      return { zone: app.zone, year: app.year, mode: app.mode, ...app.map.view };
    },
    errors,
    /** Manifest rows of a year (null: no manifest). */
    units: (year) => app.units(Number(year)),
    /** The 128 dequantised floats at a lon/lat, or null where there is no embedding. */
    async pixel(lon, lat, year = app.year) {
      const info = await api.pixelInfo(lon, lat, year);
      return info.status === "valid" ? info.values : null;
    },
    /** What the pixel panel shows for a lon/lat (status valid / no_data / not_processed / outside). */
    pixelInfo(lon, lat, year = app.year) {
      const zone = utmZone(lon);
      const { row, col } = lonLatToPixel(zone, lon, lat);
      return app.pixelInfo(zone, row, col, Number(year));
    },
    /** Page coordinates (CSS px) of the centre of the pixel holding lon/lat on the map. */
    toScreen(lon, lat) {
      const { row, col } = lonLatToPixel(app.zone, lon, lat);
      const [x, y] = app.map.toScreen(col + 0.5, row + 0.5);
      const r = app.map.canvas.getBoundingClientRect();
      return { x: r.left + x, y: r.top + y, inside: x >= 0 && y >= 0 && x < app.map.width && y < app.map.height };
    },
    /** Centre the map on lon/lat; `scale` = screen px per 10 m pixel. */
    async setView({ lon, lat, scale }) {
      const { row, col } = lonLatToPixel(app.zone, lon, lat);
      app.map.setView({ cx: col + 0.5, cy: row + 0.5, ...(scale ? { scale } : {}) });
      await app.idle();
    },
    /** Centre the map on a pixel of the current zone's grid. */
    async setViewGrid({ col, row, scale }) {
      app.map.setView({ cx: col, cy: row, ...(scale ? { scale } : {}) });
      await app.idle();
    },
    async fit() {
      app.fitUnits();
      await app.idle();
    },
    setYear: (year) => app.setYear(Number(year)),
    async setMode(mode, params = {}) {
      Object.assign(app.params, params);
      return app.setMode(mode);
    },
    similarity: async (lon, lat) => {
      const { row, col } = lonLatToPixel(app.zone, lon, lat);
      return app.similarTo(row, col);
    },
    /** Labels from GeoJSON (FeatureCollection of points with a "class") or [{lon, lat, class}]. */
    loadLabels(labels) {
      const points = Array.isArray(labels)
        ? labels.map((p) => ({ lon: p.lon, lat: p.lat, cls: String(p.class ?? p.cls) }))
        : labels.features.map((f) => ({ lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1], cls: String(f.properties.class) }));
      return app.labels.load(points);
    },
    addLabel: (lon, lat, cls) => app.labels.add(lon, lat, cls),
    /** Labels from a URL relative to the root (GeoJSON, CSV or GeoParquet), as ?labels= does. */
    loadLabelsFrom: (url) => app.loadLabelsFrom(url),
    train: (options) => app.train(options),
    classifyView: (mode) => app.classifyView(mode),
    /** Classes of the trained classifier at [{lon, lat}]. */
    predict: (points) => app.predict(points),
    exportLabels: () => app.exportLabels(),
    /** The scatter panel: sample up to n valid pixels in view on PC1/PC2 (returns scatterState()). */
    scatter: (options) => app.scatter(options),
    /** Points of the scatter (pixel, lon/lat, pc, page position, colour, class) and the brushed ones. */
    scatterState: () => app.scatterState(),
    /** Brush the scatter points inside a rectangle of page coordinates, as a drag does; returns the indices. */
    brush(x0, y0, x1, y1) {
      const r = app.scatterView.canvas.getBoundingClientRect();
      const indices = app.scatterView.inside(x0 - r.left, y0 - r.top, x1 - r.left, y1 - r.top);
      app.scatterView.select(indices);
      return indices;
    },
    /** Of the scatter's points, those whose map pixel shows the brush colour (what a user sees highlighted). */
    brushedOnMap() {
      const d = app.scatterData;
      if (!d) return [];
      const { data } = app.map.ctx.getImageData(0, 0, app.map.width, app.map.height);
      const out = [];
      for (let i = 0; i < d.count; i++) {
        const [px, py] = app.map.pixelBox(d.cols[i], d.rows[i]);
        if (px < 0 || py < 0 || px >= app.map.width || py >= app.map.height) continue;
        const o = (py * app.map.width + px) * 4;
        if (data[o] === 255 && data[o + 1] === 0 && data[o + 2] === 255) out.push(i);
      }
      return out;
    },
    exportMap: () => app.exportMap(),
    stats: () => app.worker.call("stats"),
    /** Where a manifest unit is drawn: its upper-left corner and side in canvas px. */
    unitOnScreen(u) {
      const [x, y] = app.map.toScreen(u.shard_col * u.unit_size, u.shard_row * u.unit_size);
      return { x, y, size: u.unit_size * app.map.view.scale };
    },
    /** How many map canvas pixels show each class's colour (what a user sees of a class view). */
    classPixelsShown() {
      const { names, colours } = app.labels.sorted();
      const rgb = colours.map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
      const { data } = app.map.ctx.getImageData(0, 0, app.map.width, app.map.height);
      const counts = Object.fromEntries(names.map((n) => [n, 0]));
      for (let o = 0; o < data.length; o += 4) {
        const i = rgb.findIndex((c) => c[0] === data[o] && c[1] === data[o + 1] && c[2] === data[o + 2]);
        if (i >= 0 && data[o + 3] === 255) counts[names[i]]++;
      }
      return counts;
    },
    idle: () => app.idle(),
    /** The basemap layer: {template, attribution, opacity, zoom, tiles of the view [{z, x, y, status}], requested}; null if none. */
    basemap: () => (app.basemap ? app.basemap.state() : null),
    /** Opacity (0-1) of the basemap and of the embedding layer, as the map's sliders set them. */
    setOpacity({ basemap, embeddings } = {}) {
      if (basemap !== undefined && app.basemap) app.basemap.setOpacity(basemap);
      if (embeddings !== undefined) app.map.layerOpacity = Math.min(1, Math.max(0, Number(embeddings)));
      app.map.draw();
    },
  };
  window.tesseraViewer = api;
  return api;
}
