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
  };
  window.tesseraViewer = api;
  return api;
}
