// Requests and bytes the viewer spends, measured in the browser (docs/viewer.md):
//   node test/measure.mjs ROOT_URL [LABELS (relative to the root)] [--centre=LON,LAT]
// 1. a cold page to its first view (index.html, scripts, zarr.json, manifests, the view's blocks);
// 2. a cold page zoomed on 1 km x 1 km at the centre of the first unit (or at --centre): with
//    LABELS, labels loaded, a k-NN trained and the region classified; without, the region drawn
//    in the page's first mode (three dims: on a store without Matryoshka prefixes, its 128-dim
//    blocks, what classifying it reads).
// Counts are the page's own (tesseraViewer.stats(): the root's data) and the browser's (every
// response, page assets included).
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const centreArg = args.find((a) => a.startsWith("--centre="));
const [url, labels] = args.filter((a) => !a.startsWith("--"));
const centre = centreArg ? centreArg.slice("--centre=".length).split(",").map(Number) : null;
const ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"];
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ARGS });
const out = {};

async function coldPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const net = { requests: 0, bytes: 0 };
  const pending = [];
  page.on("requestfinished", (r) => {
    pending.push(r.sizes().then((sizes) => {
      net.requests++;
      net.bytes += sizes.responseBodySize;
    }));
  });
  // every response finished so far, its size counted
  const counted = async () => {
    await Promise.all(pending);
    return { ...net };
  };
  return { page, counted, context };
}

try {
  {
    const { page, counted, context } = await coldPage();
    const t0 = Date.now();
    await page.goto(`${url}index.html`);
    await page.evaluate(() => tesseraViewer.ready);
    out.firstView = { ms: Date.now() - t0, data: await page.evaluate(() => tesseraViewer.stats()), browser: await counted() };
    await context.close();
  }
  {
    const { page, counted, context } = await coldPage();
    await page.goto(`${url}index.html`);
    await page.evaluate(() => tesseraViewer.ready);
    const before = await page.evaluate(() => tesseraViewer.stats());
    const t0 = Date.now();
    // 1 km = 100 px: at 8 screen px per pixel the 950 x 760 px map shows about 1.2 x 0.95 km
    out.region = await page.evaluate(async ([labelsUrl, centre]) => {
      const v = tesseraViewer;
      const year = v.view.year;
      const units = (await v.units(year)).filter((u) => u.zone === v.view.zone);
      const u = units[0];
      const c = (u.shard_col + 0.5) * u.unit_size, r = (u.shard_row + 0.5) * u.unit_size;
      if (centre) await v.setView({ lon: centre[0], lat: centre[1], scale: 8 });
      else await v.setViewGrid({ col: c, row: r, scale: 8 });
      const before = await v.stats();
      if (!labelsUrl) return { unit: centre ? null : u.unit_id, labels: 0, before, afterTrain: before, after: before, mode: v.view.mode };
      await v.loadLabelsFrom(labelsUrl);
      const t = await v.train({ method: "knn", k: 5, depth: 128 });
      const afterTrain = await v.stats();
      const shown = await v.classifyView();
      const after = await v.stats();
      return { unit: u.unit_id, labels: t.trained, before, afterTrain, after, blocks: shown.blocks };
    }, [labels || null, centre]);
    out.region.ms = Date.now() - t0;
    out.region.browser = await counted();
    out.region.beforeZoom = before;
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out, null, 1));
