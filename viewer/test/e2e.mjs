// End-to-end run of the viewer in headless Chromium, driven like a user (tests/test_viewer.py).
//   node test/e2e.mjs SPEC.json
// SPEC: {url, out (folder for screenshots and downloads), year, clicks: [{name, lon, lat}],
//        labelsFile, holdout: [{lon, lat}], bad: [{name, url, click?: [lon, lat]}] (other roots),
//        basemap: {url} (a root whose viewer.json configures a basemap)}
// Prints one JSON line of what the page showed; the Python test makes the assertions.
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
];
const result = { console: [], pageErrors: [], failedRequests: [], timings: {}, clicks: {}, bad: {} };
const t0 = Date.now();
const mark = (name) => (result.timings[name] = Date.now() - t0);

const browser = await chromium.launch({ executablePath: spec.chromium || "/usr/bin/chromium", args: CHROMIUM_ARGS });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  watch(page, "main");
  result.mainRequests = [];
  page.on("request", (r) => result.mainRequests.push(r.url()));
  mark("browser");
  await page.goto(spec.url);
  await page.evaluate(() => window.tesseraViewer.ready);
  mark("ready");
  await page.screenshot({ path: join(spec.out, "1-first-view.png") });

  // what the map shows: the units of the manifest, each outline's colour on the canvas
  result.units = await page.evaluate(async (year) => {
    const units = await tesseraViewer.units(year);
    const canvas = document.getElementById("map");
    const ctx = canvas.getContext("2d");
    return units.map((u) => {
      const corner = tesseraViewer.unitOnScreen(u);
      const [r, g, b] = ctx.getImageData(Math.round(corner.x) + 1, Math.round(corner.y + corner.size / 2), 1, 1).data;
      return { unit_id: u.unit_id, status: u.status, valid_pixels: u.valid_pixels, outline: [r, g, b] };
    });
  }, spec.year);
  result.legend = await page.textContent("#legend");

  // click pixels with the mouse (inspect tool) and read the pixel panel
  for (const c of spec.clicks) {
    const at = await page.evaluate(([lon, lat]) => tesseraViewer.toScreen(lon, lat), [c.lon, c.lat]);
    const before = await page.getAttribute("#pixel", "data-lon");
    await page.mouse.click(at.x, at.y);
    await page.waitForFunction((b) => document.getElementById("pixel").dataset.lon !== b, before);
    result.clicks[c.name] = await page.evaluate(() => {
      const el = document.getElementById("pixel");
      return {
        status: el.dataset.status,
        statusText: el.querySelector(".status").textContent,
        unitText: el.querySelector(".unit").textContent,
        values: JSON.parse(el.dataset.values),
        bars: !!el.querySelector("canvas.bars"),
        inside: true,
      };
    });
    result.clicks[c.name].api = await page.evaluate(([lon, lat, y]) => tesseraViewer.pixel(lon, lat, y), [c.lon, c.lat, spec.year]);
  }
  await page.screenshot({ path: join(spec.out, "2-pixel.png") });
  mark("clicks");

  // other views
  await page.selectOption("#mode", "pca");
  await page.evaluate(() => tesseraViewer.idle());
  await page.screenshot({ path: join(spec.out, "3-pca.png") });
  const ref = spec.clicks.find((c) => c.name === "valid");
  await page.check("input[name=tool][value=similar]");
  const refAt = await page.evaluate(([lon, lat]) => tesseraViewer.toScreen(lon, lat), [ref.lon, ref.lat]);
  await page.mouse.click(refAt.x, refAt.y);
  await page.waitForFunction(() => tesseraViewer.view.mode === "similarity");
  await page.evaluate(() => tesseraViewer.idle());
  await page.screenshot({ path: join(spec.out, "4-similarity.png") });
  result.similarityLegend = await page.textContent("#legend");
  mark("views");
  // the scatter before any classifier: points in false colour (through the API)
  result.scatterFalseColour = await page.evaluate(async () => {
    const s = await tesseraViewer.scatter({ n: 300 });
    return { count: s.count, colours: s.points.map((p) => p.colour), cls: s.points.map((p) => p.cls), info: document.getElementById("scatter-info").textContent };
  });

  // labels from a file, a classifier per kind, the classified view
  await page.setInputFiles("#load-labels", spec.labelsFile);
  await page.waitForFunction(() => /labelled points loaded/.test(document.getElementById("train-result").textContent));
  result.classes = await page.$$eval("#class-list li .name", (els) => els.map((e) => e.textContent));
  result.classifiers = {};
  for (const method of ["knn", "logistic"]) {
    await page.selectOption("#classifier", method);
    await page.click("#train");
    await page.waitForFunction(() => /training accuracy/.test(document.getElementById("train-result").textContent));
    const trainText = await page.textContent("#train-result");
    await page.click("#classify-view");
    await page.waitForFunction(() => tesseraViewer.view.mode === "classes");
    await page.evaluate(() => tesseraViewer.idle());
    await page.screenshot({ path: join(spec.out, `5-classes-${method}.png`) });
    const shown = await page.evaluate(() => tesseraViewer.classPixelsShown());
    const predicted = await page.evaluate((pts) => tesseraViewer.predict(pts), spec.holdout);
    result.classifiers[method] = { trainText, shown, predicted: predicted.map((p) => p.class), legend: await page.textContent("#legend") };
  }
  mark("classify");

  // the scatter panel: a PCA sample of the view coloured by predicted class, brushed with the mouse
  await page.fill("#scatter-n", String(spec.scatterN));
  await page.click("#scatter-sample");
  // the 300-point scatter above is still there: wait for this sample (else the drag brushes the old one)
  await page.waitForFunction((n) => tesseraViewer.scatterState()?.count === n, spec.scatterN);
  // the panel scrolls into view: drag once the scatter's place on the page has settled
  await page.locator("#scatter").scrollIntoViewIfNeeded();
  let box = await page.locator("#scatter").boundingBox();
  for (let i = 0; i < 40; i++) {
    await page.waitForTimeout(50);
    const again = await page.locator("#scatter").boundingBox();
    if (i > 0 && again.x === box.x && again.y === box.y) break;
    box = again;
  }
  const brush = [box.x + box.width * 0.15, box.y + box.height * 0.2, box.x + box.width * 0.55, box.y + box.height * 0.65];
  await page.mouse.move(brush[0], brush[1]);
  await page.mouse.down();
  await page.mouse.move(brush[2], brush[3], { steps: 5 });
  await page.mouse.up();
  await page.screenshot({ path: join(spec.out, "5-scatter-brush.png") });
  result.scatter = await page.evaluate(() => ({ ...tesseraViewer.scatterState(), onMap: tesseraViewer.brushedOnMap() }));
  result.scatter.brush = brush;
  result.scatter.box = box;
  result.scatter.info = await page.textContent("#scatter-info");
  // inspecting a sampled pixel on the map rings its point on the scatter
  await page.check("input[name=tool][value=inspect]");
  const focus = result.scatter.points[Math.floor(result.scatter.count / 2)];
  const fAt = await page.evaluate(([lon, lat]) => tesseraViewer.toScreen(lon, lat), [focus.lon, focus.lat]);
  await page.mouse.click(fAt.x, fAt.y);
  await page.waitForFunction((i) => tesseraViewer.scatterState().focus === i, Math.floor(result.scatter.count / 2), { timeout: 5000 })
    .catch(() => {});
  result.scatter.focus = await page.evaluate(() => tesseraViewer.scatterState().focus);
  mark("scatter");
  await page.selectOption("#mode", "probability");
  await page.evaluate(() => tesseraViewer.idle());
  await page.screenshot({ path: join(spec.out, "6-probability.png") });
  mark("probability");

  // downloads: labels as GeoJSON, the map as PNG + world file
  const [labels] = await Promise.all([page.waitForEvent("download"), page.click("#export-labels")]);
  await labels.saveAs(join(spec.out, "labels.geojson"));
  const downloads = [];
  page.on("download", (d) => downloads.push(d));
  await page.click("#export-png");
  await page.waitForFunction(() => true);
  for (let i = 0; i < 300 && downloads.length < 2; i++) await page.waitForTimeout(100); // at most 30 s on a loaded machine
  for (const d of downloads) await d.saveAs(join(spec.out, d.suggestedFilename()));
  result.downloads = ["labels.geojson", ...downloads.map((d) => d.suggestedFilename())];
  // a label added by hand: a new class, the label tool, a click on the map
  await page.fill("#class-name", "clicked");
  await page.click("#add-class");
  await page.check("input[name=tool][value=label]");
  const la = await page.evaluate(([lon, lat]) => tesseraViewer.toScreen(lon, lat), [spec.labelClick.lon, spec.labelClick.lat]);
  await page.mouse.click(la.x, la.y);
  result.labelClick = await page.evaluate(() =>
    tesseraViewer.exportLabels().features.filter((f) => f.properties.class === "clicked").map((f) => f.geometry.coordinates));
  result.stats = await page.evaluate(() => tesseraViewer.stats());
  result.errors = await page.evaluate(() => tesseraViewer.errors);
  mark("exports");

  // other roots: a Matryoshka store (its preview reads a small depth array), and roots the
  // viewer cannot show (one clear message each)
  for (const bad of spec.bad || []) {
    const p = await context.newPage();
    watch(p, bad.name);
    const requested = [];
    p.on("request", (r) => requested.push(r.url().startsWith(bad.url.slice(0, bad.url.indexOf("/", 8))) ? new URL(r.url()).pathname : r.url()));
    await p.goto(bad.url);
    const outcome = await p.evaluate(() => window.tesseraViewer.ready.then(() => "ready", (e) => "rejected"));
    const requestedAtReady = [...requested];
    const statsAtReady = outcome === "ready" ? await p.evaluate(() => tesseraViewer.stats()) : null;
    let pixel = null;
    let clickedAt = null;
    if (bad.click) {
      const at = await settledScreen(p, bad.click);
      await p.mouse.click(at.x, at.y);
      await p.waitForSelector("#pixel[data-status], #error:not([hidden])", { timeout: 10000 });
      pixel = await p.evaluate(() => JSON.parse(document.getElementById("pixel").dataset.values || "null"));
      // where the click landed, as the panel says: a mouse click is rounded to whole CSS pixels
      clickedAt = await p.evaluate(() => {
        const d = document.getElementById("pixel").dataset;
        return d.lon === undefined ? null : [Number(d.lon), Number(d.lat)];
      });
    }
    result.bad[bad.name] = {
      outcome,
      error: await p.evaluate(() => (document.getElementById("error").hidden ? null : document.getElementById("error").textContent)),
      requested,
      requestedAtReady,
      statsAtReady,
      stats: outcome === "ready" ? await p.evaluate(() => tesseraViewer.stats()) : null,
      legend: await p.textContent("#legend"),
      rangeWarning: await p.isVisible("#range-warning"),
      pixel,
      clickedAt,
      basemap: await settledBasemap(p),
      attribution: (await p.isVisible("#attribution")) ? await p.textContent("#attribution") : null,
    };
    await p.screenshot({ path: join(spec.out, `7-other-${bad.name}.png`) });
    await p.close();
  }
  mark("bad");

  // a root with a basemap (viewer.json): the tiles of the view, drawn beneath the embeddings;
  // screenshots with both layers, with the embeddings hidden and with the basemap hidden
  if (spec.basemap) {
    const p = await context.newPage();
    watch(p, "basemap");
    const requested = [];
    p.on("request", (r) => requested.push(r.url()));
    await p.goto(spec.basemap.url);
    const outcome = await p.evaluate(() => window.tesseraViewer.ready.then(() => "ready", (e) => String(e)));
    const state = await settledBasemap(p);
    const shot = async (name) => {
      await p.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
      await p.screenshot({ path: join(spec.out, name) });
      return name;
    };
    const slide = (id, value) => p.$eval(`#${id}`, (el, v) => {
      el.value = String(v);
      el.dispatchEvent(new Event("input", { bubbles: true }));
    }, value);
    const layout = await p.evaluate(() => {
      const box = (id) => {
        const el = document.getElementById(id);
        if (!el || el.hidden || !el.offsetParent) return null;
        const r = el.getBoundingClientRect();
        return [r.left, r.top, r.right, r.bottom];
      };
      const v = tesseraViewer.view;
      return {
        map: box("map"), covered: ["tools", "legend", "attribution", "notice", "progress", "error"].map(box).filter(Boolean),
        view: { cx: v.cx, cy: v.cy, scale: v.scale, zone: v.zone },
        attribution: document.getElementById("attribution").textContent,
      };
    });
    const shots = { both: await shot("8-basemap.png") };
    await slide("layer-opacity", 0);
    shots.embeddingsHidden = await shot("8-basemap-embeddings-hidden.png");
    await slide("basemap-opacity", 0);
    shots.basemapHidden = await shot("8-basemap-hidden.png");
    const units = await p.evaluate(async () => {
      const v = tesseraViewer;
      return (await v.units(v.view.year)).map((u) => v.unitOnScreen(u));
    });
    result.basemap = { outcome, state, requested, layout, shots, units, error: await p.evaluate(() => tesseraViewer.errors) };
    await p.close();
    mark("basemap");
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));

/** The page's basemap state once no tile is loading any more (null: no basemap). */
// where a lon/lat is on screen once the page's layout has stopped moving (a panel filled in after "ready"
// can push the map down between toScreen and the click: a click once landed 7 rows below its target)
async function settledScreen(p, lonlat) {
  let prev = null;
  for (let i = 0; i < 50; i++) {
    const at = await p.evaluate(([lon, lat]) => tesseraViewer.toScreen(lon, lat), lonlat);
    if (prev && Math.abs(prev.x - at.x) < 0.25 && Math.abs(prev.y - at.y) < 0.25) return at;
    prev = at;
    await p.waitForTimeout(100);
  }
  return prev;
}

async function settledBasemap(p) {
  await p.waitForFunction(() => {
    const b = tesseraViewer.basemap();
    return !b || b.tiles.every((t) => t.status !== "loading");
  }, null, { timeout: 30000 });
  return p.evaluate(() => tesseraViewer.basemap());
}

function watch(page, name) {
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warning") result.console.push(`${name}: ${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => result.pageErrors.push(`${name}: ${e.message}`));
  page.on("requestfailed", (r) => result.failedRequests.push(`${name}: ${r.method()} ${r.url()} ${r.failure().errorText}`));
}
