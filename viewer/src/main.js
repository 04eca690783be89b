// Entry point of the page: the root is the folder holding index.html (or ?root=URL), the
// worker is viewer/worker.js beside this script.
import { App } from "./app.js";
import { exposeApi } from "./api.js";
import { showError } from "./ui/messages.js";

const params = new URLSearchParams(location.search);
const rootUrl = new URL(params.get("root") || ".", location.href).href;
const workerUrl = new URL("worker.js", import.meta.url).href;

const labelsUrl = params.get("labels"); // e.g. ?labels=world/labels.parquet (relative to the root)
// ?basemap=TEMPLATE (and &attribution=TEXT) instead of the root's viewer.json; ?basemap=none: no basemap
const basemap = params.has("basemap") ? { url: params.get("basemap"), attribution: params.get("attribution") || "" } : undefined;

const app = new App({ rootUrl, workerUrl, labelsUrl, basemap });
const ready = app.start().then(
  () => undefined,
  (err) => {
    app.failed(err);
    throw err;
  },
);
ready.catch(() => {}); // the failure is shown in the page; scripts still see the rejection
exposeApi(app, ready);

window.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  showError(event.reason);
});
window.addEventListener("error", (event) => showError(event.error || event.message));
