// The viewer's state and what happens on each user action; everything heavy is delegated to
// the worker (worker.js), everything drawn to the map (ui/map.js) and panels (ui/*.js).
import { WorkerClient } from "./worker-client.js";
import { MapView } from "./ui/map.js";
import { Labels, parseLabelFile } from "./ui/labels.js";
import { showPixel } from "./ui/pixel-info.js";
import { renderLegend } from "./ui/legend.js";
import { ScatterView } from "./ui/scatter.js";
import { Basemap, basemapConfig } from "./ui/basemap.js";
import { fillSelect, renderModeOptions } from "./ui/controls.js";
import { formatBytes, guard, hideProgress, showError, showNotice, showProgress } from "./ui/messages.js";
import { download, downloadJSON, worldFile } from "./ui/export.js";
import { gridToXY, lonLatToPixel, onGrid, pixelToLonLat, unitId, utmZone, zoneCrs } from "./grid.js";

const MAX_VIEW_BYTES = 96 * 1024 * 1024; // decoded codes read for one view, at most
const $ = (id) => document.getElementById(id);

export class App {
  constructor({ rootUrl, workerUrl, labelsUrl, basemap }) {
    this.rootUrl = rootUrl;
    this.labelsUrl = labelsUrl;
    this.basemapParam = basemap; // from the query string; undefined: the root's viewer.json says
    this.basemap = null;
    this.worker = new WorkerClient(workerUrl);
    this.unitsByYear = new Map();
    this.mode = "dims";
    this.params = { dims: [0, 1, 2], pcaDepth: 128, analysisDepth: 128, reference: null };
    this.tool = "inspect";
    this.version = -1;
    this.model = null;
    this.counts = [];
    this.trained = null;
    this.inflight = null;
    this.lastKey = null;
    this.labels = new Labels(() => this.labelsChanged());
    this.map = new MapView($("map"), {
      onClick: guard((row, col) => this.click(row, col)),
      onViewChange: () => this.scheduleRefresh(),
    });
    this.scatterData = null;
    this.scatterView = new ScatterView($("scatter"), { onBrush: (indices) => this.brushed(indices) });
  }

  // ------------------------------------------------------------------ start-up

  async start() {
    $("root-url").textContent = this.rootUrl;
    showProgress("opening the root", 0);
    const [info, basemap] = await Promise.all([
      this.worker.call("open", { url: this.rootUrl }),
      basemapConfig(this.basemapParam, this.rootUrl),
    ]);
    this.info = info;
    if (basemap) this.startBasemap(basemap);
    this.depths = this.info.depths;
    this.blockSize = this.info.blockSize;
    this.unitSize = this.info.layout.shard_size;
    if (!this.info.years.length) throw new Error(`${this.rootUrl} holds no years yet: nothing has been published`);
    this.params.pcaDepth = this.depths.find((d) => d >= 16) ?? this.depths[0];
    fillSelect($("analysis-depth"), this.depths, 128);
    fillSelect($("year"), this.info.years, this.info.years[this.info.years.length - 1]);
    this.bindControls();
    renderModeOptions(this.mode, this.params, this.depths, () => this.modeChanged());
    showProgress("reading the manifests", 0.2);
    const manifests = await Promise.all(this.info.years.map((y) => this.units(y)));
    if (manifests.every((m) => m === null)) {
      throw new Error(`${this.rootUrl} has no manifests (manifests/{year}.parquet): nothing has been published yet`);
    }
    await this.setYear(this.info.years[this.info.years.length - 1], { fit: true });
    if (this.labelsUrl) await this.loadLabelsFrom(this.labelsUrl);
    hideProgress();
  }

  startBasemap(config) {
    this.basemap = new Basemap($("basemap"), config, this.rootUrl, { onLoad: () => this.requestDraw() });
    this.basemap.zone = this.zone ?? null;
    this.map.underlay = this.basemap;
    $("layer-controls").hidden = false;
    $("basemap-opacity").value = String(Math.round(100 * config.opacity));
    $("basemap-opacity").addEventListener("input", (e) => this.basemap.setOpacity(Number(e.target.value) / 100));
    $("layer-opacity").addEventListener("input", (e) => {
      this.map.layerOpacity = Number(e.target.value) / 100;
      this.map.draw();
    });
    if (config.attribution) {
      $("attribution").textContent = config.attribution;
      $("attribution").hidden = false;
    }
  }

  /** Labelled points from a URL (relative to the root): GeoJSON, CSV or GeoParquet. */
  async loadLabelsFrom(url) {
    const href = new URL(url, this.rootUrl).href;
    let response;
    try {
      response = await fetch(href);
    } catch (err) {
      throw new Error(`cannot read the labels at ${href}: ${err.message}`);
    }
    if (!response.ok) throw new Error(`cannot read the labels at ${href}: HTTP ${response.status}`);
    const file = { name: new URL(href).pathname, text: () => response.text(), arrayBuffer: () => response.arrayBuffer() };
    const n = this.labels.load(await parseLabelFile(file));
    $("train-result").textContent = `${n} labelled points loaded from ${href}`;
    return n;
  }

  async units(year) {
    if (!this.unitsByYear.has(year)) this.unitsByYear.set(year, this.worker.call("units", { year }));
    return this.unitsByYear.get(year);
  }

  bindControls() {
    $("year").addEventListener("change", guard(() => this.setYear(Number($("year").value))));
    $("zone").addEventListener("change", guard(() => this.setZone(Number($("zone").value), { fit: true })));
    $("mode").addEventListener("change", guard(() => this.setMode($("mode").value)));
    $("refit").addEventListener("click", guard(() => this.refresh({ refit: true })));
    $("analysis-depth").addEventListener("change", () => {
      this.params.analysisDepth = Number($("analysis-depth").value);
      if (this.mode === "similarity") this.scheduleRefresh();
    });
    for (const radio of document.querySelectorAll("input[name=tool]")) {
      radio.addEventListener("change", () => (this.tool = radio.value));
    }
    $("zoom-in").addEventListener("click", () => this.map.zoomBy(2));
    $("zoom-out").addEventListener("click", () => this.map.zoomBy(0.5));
    $("zoom-fit").addEventListener("click", guard(() => this.fitUnits()));
    $("add-class").addEventListener("click", guard(() => {
      this.labels.addClass($("class-name").value);
      $("class-name").value = "";
    }));
    $("load-labels").addEventListener("change", guard(async (e) => {
      const file = e.target.files[0];
      if (!file) return;
      const n = this.labels.load(await parseLabelFile(file));
      $("train-result").textContent = `${n} labelled points loaded from ${file.name}`;
    }));
    $("export-labels").addEventListener("click", guard(() => downloadJSON(`labels-${this.year}.geojson`, this.exportLabels())));
    $("clear-labels").addEventListener("click", () => this.labels.clear());
    $("train").addEventListener("click", guard(() => this.train()));
    $("classify-view").addEventListener("click", guard(() => this.classifyView()));
    $("scatter-sample").addEventListener("click", guard(() => this.scatter()));
    $("export-png").addEventListener("click", guard(() => this.exportMap({ download: true })));
  }

  // ------------------------------------------------------------------ year, zone, view

  async setYear(year, { fit = false } = {}) {
    this.year = Number(year);
    $("year").value = String(this.year);
    const manifest = await this.units(this.year);
    const units = manifest || [];
    const zones = [...new Set(units.map((u) => u.zone))].sort((a, b) => a - b);
    const counts = zones.map((z) => units.filter((u) => u.zone === z).length);
    const zone = zones.includes(this.zone) ? this.zone : zones[counts.indexOf(Math.max(...counts))] ?? this.info.zones[0];
    fillSelect($("zone"), zones.length ? zones : this.info.zones, zone, (z) => `${z} (${zoneCrs(z)})`);
    await this.setZone(zone, { fit: fit || zone !== this.zone });
    if (!manifest) showNotice(`no manifest for ${this.year}: nothing published for that year`);
    else if (!units.length) showNotice(`no units published for ${this.year}`);
  }

  async setZone(zone, { fit = false } = {}) {
    if (zone !== this.zone) this.map.layers.brushed = [];
    this.zone = zone;
    const units = ((await this.units(this.year)) || []).filter((u) => u.zone === zone);
    this.map.layers.units = units.map((u) => ({
      row: u.shard_row * u.unit_size, col: u.shard_col * u.unit_size, size: u.unit_size, status: u.status, id: u.unit_id,
    }));
    this.labelsChanged();
    if (fit) this.fitUnits(false);
    if (this.basemap && this.basemap.zone !== zone) {
      this.basemap.zone = zone; // once the view is on the zone: no tile is asked for the view before it
      this.map.draw();
    }
    await this.refresh();
  }

  fitUnits(refresh = true) {
    const units = this.map.layers.units;
    if (!units.length) return;
    const box = {
      col0: Math.min(...units.map((u) => u.col)), row0: Math.min(...units.map((u) => u.row)),
      col1: Math.max(...units.map((u) => u.col + u.size)), row1: Math.max(...units.map((u) => u.row + u.size)),
    };
    this.suppress = !refresh;
    this.map.fit(box);
    this.suppress = false;
  }

  setMode(mode) {
    this.mode = mode;
    $("mode").value = mode;
    renderModeOptions(mode, this.params, this.depths, () => this.modeChanged());
    return this.refresh({ refit: true });
  }

  modeChanged() {
    return this.refresh({ refit: true });
  }

  unitAt(row, col) {
    const size = this.unitSize;
    return this.map.layers.units.find((u) => u.row === Math.floor(row / size) * size && u.col === Math.floor(col / size) * size);
  }

  // ------------------------------------------------------------------ the embedding layer

  modeParams() {
    const p = this.params;
    if (this.mode === "dims") return { dims: [...p.dims] };
    if (this.mode === "pca") return { depth: p.pcaDepth };
    if (this.mode === "similarity") return { depth: p.analysisDepth, reference: p.reference && p.reference.values };
    return { colours: this.labels.sorted().colours, trained: this.trained && this.trained.id };
  }

  readDepth() {
    if (this.mode === "classes" || this.mode === "probability") return this.trained ? this.trained.depth : 128;
    const need = this.mode === "dims" ? Math.max(...this.params.dims) + 1 : this.modeParams().depth;
    return this.depths.find((d) => d >= need) ?? 128;
  }

  /** Blocks of the view that lie in published units of the zone and year. */
  visibleBlocks() {
    const w = this.map.window();
    const B = this.blockSize;
    const out = [];
    for (const u of this.map.layers.units) {
      const r0 = Math.max(u.row, Math.floor(w.row0 / B) * B), r1 = Math.min(u.row + u.size, Math.ceil(w.row1 / B) * B);
      const c0 = Math.max(u.col, Math.floor(w.col0 / B) * B), c1 = Math.min(u.col + u.size, Math.ceil(w.col1 / B) * B);
      for (let r = r0; r < r1; r += B) for (let c = c0; c < c1; c += B) out.push({ row: r, col: c, height: B, width: B });
    }
    return out;
  }

  scheduleRefresh() {
    if (this.suppress || !this.info) return;
    clearTimeout(this.timer);
    this.pendingRefresh = new Promise((resolve) => {
      this.timer = setTimeout(() => {
        this.pendingRefresh = null;
        guard(() => this.refresh())().then(resolve);
      }, 120);
    });
  }

  /** Read and draw what is in view; `refit` fits the colours (or PCA) to it first. */
  async refresh({ refit = false } = {}) {
    if (!this.info) return null;
    const key = JSON.stringify([this.zone, this.year, this.mode, this.modeParams()]);
    if (key !== this.lastKey) {
      refit = true;
      this.lastKey = key;
      this.map.layers.blocks.clear();
    }
    const blocks = this.visibleBlocks();
    const depth = this.readDepth();
    const B = this.blockSize;
    if (this.mode === "similarity" && !this.params.reference) {
      showNotice("pick a pixel with the 'similar to' tool");
      return this.finishDraw();
    }
    if ((this.mode === "classes" || this.mode === "probability") && !this.trained) {
      showNotice("train a classifier first (Classifier panel)");
      return this.finishDraw();
    }
    if (!blocks.length) {
      showNotice(this.map.layers.units.length ? "" : `no units published for ${this.year} in zone ${this.zone}`);
      return this.finishDraw();
    }
    const bytes = blocks.length * B * B * (depth + 4);
    if (bytes > MAX_VIEW_BYTES) {
      this.map.layers.blocks.clear();
      showNotice(`zoom in to load embeddings (this view needs ${formatBytes(bytes)} of them)`);
      return this.finishDraw();
    }
    showNotice("");
    const todo = refit ? blocks : blocks.filter((b) => !this.map.layers.blocks.has(`${b.row}/${b.col}`));
    if (!todo.length) return this.finishDraw();
    if (this.inflight) this.worker.cancel(this.inflight.id);
    const started = performance.now();
    const call = this.worker.call(
      "render",
      { zone: this.zone, year: this.year, blocks: todo, mode: this.mode, params: this.modeParams(), refit },
      {
        onProgress: (p) =>
          showProgress(`${p.stage} ${p.done}/${p.total} blocks, ${formatBytes(p.bytes)} in ${p.requests} requests so far`, p.done / p.total),
        onPart: (part) => this.receivePart(part),
      },
    );
    this.inflight = call;
    try {
      const result = await call;
      if (!result.cancelled) {
        if (refit) this.counts = result.counts || [];
        this.lastRender = { blocks: todo.length, ms: performance.now() - started, depth: result.depth };
      }
      await this.bitmapsDone;
      return this.finishDraw();
    } finally {
      if (this.inflight === call) {
        this.inflight = null;
        hideProgress();
      }
    }
  }

  receivePart(part) {
    if (part.model) {
      this.version = part.model.version;
      this.model = part.model;
      this.map.layers.blocks.clear();
      return;
    }
    if (part.version !== this.version) return;
    const b = part.block;
    const image = new ImageData(new Uint8ClampedArray(part.rgba.buffer), b.width, b.height);
    const done = createImageBitmap(image).then((bitmap) => {
      if (part.version !== this.version) return;
      this.map.layers.blocks.set(`${b.row}/${b.col}`, { ...b, image: bitmap });
      this.requestDraw();
    });
    this.bitmapsDone = Promise.all([this.bitmapsDone, done]);
  }

  requestDraw() {
    if (this.drawQueued) return;
    this.drawQueued = true;
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.map.draw();
    });
  }

  async finishDraw() {
    this.map.draw();
    renderLegend($("legend"), { mode: this.mode, model: this.model, classes: this.labels.sorted(), counts: this.counts });
    const s = await this.worker.call("stats");
    this.stats = s;
    $("stats").textContent = `${s.requests} requests, ${formatBytes(s.bytes)}`;
    $("range-warning").hidden = !s.rangeIgnored;
    return { counts: this.counts, blocks: this.map.layers.blocks.size };
  }

  /** Resolves when no refresh is waiting or running. */
  async idle() {
    for (;;) {
      if (this.pendingRefresh) await this.pendingRefresh;
      else if (this.inflight) await this.inflight.catch(() => {});
      else return;
    }
  }

  // ------------------------------------------------------------------ clicks: inspect, label, similar

  async click(row, col) {
    if (this.tool === "label") return this.addLabelAt(row, col);
    if (this.tool === "similar") return this.similarTo(row, col);
    return this.inspect(row, col);
  }

  async inspect(row, col) {
    const info = await this.pixelInfo(this.zone, row, col, this.year);
    this.map.layers.markers = [{ row, col, colour: "#fff" }];
    this.map.draw();
    if (this.scatterData && this.scatterData.zone === this.zone) this.scatterView.focusPixel(row, col);
    showPixel($("pixel"), info);
    this.finishDraw();
    return info;
  }

  async pixelInfo(zone, row, col, year) {
    const [lon, lat] = pixelToLonLat(zone, row, col);
    const [x, y] = gridToXY(col + 0.5, row + 0.5);
    const info = { lon, lat, x, y, zone, row, col, year, crs: zoneCrs(zone), values: [], scale: null };
    if (!onGrid(row, col)) return { ...info, status: "outside" };
    const units = ((await this.units(year)) || []).filter((u) => u.zone === zone);
    const size = this.unitSize;
    info.unit = units.find((u) => u.shard_row === Math.floor(row / size) && u.shard_col === Math.floor(col / size)) || null;
    info.unitId = unitId(zone, size, Math.floor(row / size), Math.floor(col / size));
    const px = await this.worker.call("pixel", { zone, year, row, col });
    return { ...info, status: px.status, scale: px.scale, values: px.status === "valid" ? px.values : [] };
  }

  addLabelAt(row, col) {
    const [lon, lat] = pixelToLonLat(this.zone, row, col);
    this.labels.add(lon, lat);
  }

  async similarTo(row, col) {
    const px = await this.worker.call("pixel", { zone: this.zone, year: this.year, row, col });
    if (px.status !== "valid") throw new Error(`that pixel has no embedding (${px.status.replace("_", " ")}); pick another`);
    const [lon, lat] = pixelToLonLat(this.zone, row, col);
    this.params.reference = { lon, lat, row, col, values: px.values };
    this.map.layers.markers = [{ row, col, colour: "#ff0" }];
    return this.setMode("similarity");
  }

  // ------------------------------------------------------------------ labels and the classifier

  labelsChanged() {
    const list = $("class-list");
    const counts = this.labels.counts();
    list.innerHTML = "";
    for (const c of this.labels.classes) {
      const li = document.createElement("li");
      li.className = c.name === this.labels.current ? "current" : "";
      li.innerHTML = `<span class="swatch" style="background:${c.colour}"></span><span class="name"></span><span class="muted">${counts[c.name] || 0}</span>`;
      li.querySelector(".name").textContent = c.name;
      li.addEventListener("click", () => {
        this.labels.current = c.name;
        this.labelsChanged();
      });
      list.appendChild(li);
    }
    this.map.layers.points = this.labels.points
      .map((p) => ({ ...lonLatToPixel(this.zone, p.lon, p.lat), colour: this.labels.colour(p.cls) }));
    this.map.draw();
  }

  /** Labels as grid pixels of their own zone (the zone of their longitude, as the Python client). */
  labelPixels(points) {
    return points.map((p) => {
      const zone = utmZone(p.lon);
      return { zone, year: this.year, ...lonLatToPixel(zone, p.lon, p.lat) };
    });
  }

  async train({ method = $("classifier").value, k = Number($("knn-k").value) || 5, depth = Number($("analysis-depth").value) } = {}) {
    const { names } = this.labels.sorted();
    if (!this.labels.points.length) throw new Error("there are no labels: add classes and click the map, or load a file");
    const pixels = this.labelPixels(this.labels.points);
    const labels = pixels.map((p, i) => ({ ...p, cls: names.indexOf(this.labels.points[i].cls) }));
    showProgress(`training ${method} on ${labels.length} labels`, 0.5);
    try {
      const result = await this.worker.call("train", { method, k, labels, classes: names, depth });
      this.trained = { ...result, id: (this.trained ? this.trained.id : 0) + 1, classes: names };
      $("train-result").textContent =
        `${method === "knn" ? `k-NN (k=${k})` : "logistic regression"} on ${result.trained} labelled pixels (${result.depth} dims)` +
        `${result.skipped ? `, ${result.skipped} without an embedding skipped` : ""}; training accuracy ${(100 * result.trainAccuracy).toFixed(1)}%`;
      return this.trained;
    } finally {
      hideProgress();
    }
  }

  async classifyView(mode = "classes") {
    if (!this.trained) await this.train();
    this.mode = mode;
    $("mode").value = mode;
    renderModeOptions(mode, this.params, this.depths, () => this.modeChanged());
    return this.refresh({ refit: true });
  }

  async predict(points) {
    const { names } = this.labels.sorted();
    const out = await this.worker.call("predict", { points: this.labelPixels(points) });
    return out.map((o) => ({ ...o, class: o.cls === null ? null : this.trained.classes[o.cls] ?? names[o.cls] }));
  }

  exportLabels() {
    return this.labels.toGeoJSON({ year: this.year });
  }

  // ------------------------------------------------------------------ the scatter panel

  /** Sample up to n valid pixels in view, project them on PC1/PC2 (worker) and draw them. */
  async scatter({ n = Number($("scatter-n").value) || 2000 } = {}) {
    await this.idle();
    const blocks = this.visibleBlocks();
    if (!blocks.length) throw new Error("nothing to sample: no published units in view");
    const depth = this.trained ? Math.max(this.trained.depth, this.params.analysisDepth) : this.params.analysisDepth;
    const bytes = blocks.length * this.blockSize * this.blockSize * (depth + 4);
    if (bytes > MAX_VIEW_BYTES) throw new Error(`zoom in to sample the view (it needs ${formatBytes(bytes)} of embeddings)`);
    showProgress(`sampling ${n} pixels of the view`, 0.5);
    let data;
    try {
      data = await this.worker.call("scatter", { zone: this.zone, year: this.year, blocks, depth, n, window: this.map.window() });
    } finally {
      hideProgress();
    }
    const classes = data.cls ? this.trained.classes : null;
    const colours = data.cls
      ? Array.from(data.cls, (c) => this.labels.colour(classes[c]))
      : Array.from({ length: data.count }, (_, i) => `rgb(${data.rgb[3 * i]},${data.rgb[3 * i + 1]},${data.rgb[3 * i + 2]})`);
    this.scatterData = { ...data, zone: this.zone, year: this.year, classes, colours };
    this.scatterView.set(data, colours);
    this.map.layers.brushed = [];
    this.map.draw();
    const pct = data.explained.map((e) => `${(100 * e).toFixed(1)}%`).join(" and ");
    $("scatter-info").textContent =
      `${data.count} of ${data.total} valid pixels in view on PC1 and PC2 (${pct} of variance, ${data.depth} dims), ` +
      `coloured by ${classes ? "predicted class" : "false colour (PC1-3)"}. Drag a rectangle to highlight pixels on the map.`;
    return this.scatterState();
  }

  brushed(indices) {
    const d = this.scatterData;
    this.map.layers.brushed = d ? indices.map((i) => ({ row: d.rows[i], col: d.cols[i] })) : [];
    this.map.draw();
  }

  /** What the scatter panel shows: each point's pixel, PC1/PC2, canvas position and colour; the brushed ones. */
  scatterState() {
    const d = this.scatterData;
    if (!d) return null;
    const r = this.scatterView.canvas.getBoundingClientRect();
    const points = [];
    for (let i = 0; i < d.count; i++) {
      const [sx, sy] = this.scatterView.toScreen(i);
      const [lon, lat] = pixelToLonLat(d.zone, d.rows[i], d.cols[i]);
      points.push({
        row: d.rows[i], col: d.cols[i], lon, lat, pc: [d.xy[2 * i], d.xy[2 * i + 1]],
        screen: [r.left + sx, r.top + sy], colour: d.colours[i], cls: d.classes ? d.classes[d.cls[i]] : null,
      });
    }
    return {
      count: d.count, total: d.total, depth: d.depth, explained: d.explained, zone: d.zone, year: d.year, points,
      selected: [...this.scatterView.selected].sort((a, b) => a - b), focus: this.scatterView.focus,
    };
  }

  // ------------------------------------------------------------------ export of the map

  /** The view's rendered blocks at one image pixel per grid pixel, as PNG + world file. */
  async exportMap({ download: save = false } = {}) {
    await this.idle();
    const w = this.map.window();
    const blocks = [...this.map.layers.blocks.values()];
    if (!blocks.length) throw new Error("nothing to export: no embeddings are drawn in this view");
    const c0 = Math.max(Math.floor(w.col0), Math.min(...blocks.map((b) => b.col)));
    const r0 = Math.max(Math.floor(w.row0), Math.min(...blocks.map((b) => b.row)));
    const c1 = Math.min(Math.ceil(w.col1), Math.max(...blocks.map((b) => b.col + b.width)));
    const r1 = Math.min(Math.ceil(w.row1), Math.max(...blocks.map((b) => b.row + b.height)));
    const canvas = new OffscreenCanvas(c1 - c0, r1 - r0);
    const ctx = canvas.getContext("2d");
    for (const b of blocks) ctx.drawImage(b.image, b.col - c0, b.row - r0);
    const blob = await canvas.convertToBlob({ type: "image/png" });
    const [x0, y0] = gridToXY(c0, r0);
    const world = worldFile(x0, y0, 10);
    const name = `tessera-${this.year}-${this.mode}-epsg${32600 + this.zone}`;
    if (save) {
      download(`${name}.png`, blob);
      download(`${name}.pgw`, new Blob([world], { type: "text/plain" }));
    }
    const bytes = new Uint8Array(await blob.arrayBuffer());
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return { name, width: c1 - c0, height: r1 - r0, crs: zoneCrs(this.zone), worldFile: world, png: `data:image/png;base64,${btoa(binary)}` };
  }

  failed(err) {
    hideProgress();
    showError(err);
  }
}
