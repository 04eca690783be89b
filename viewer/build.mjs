// Build the viewer into static files: node build.mjs [OUT_DIR]
// (default ../tessera_ray/viewer_assets, the copy shipped inside the Python package).
//   OUT/index.html          the page (written at the root's top level)
//   OUT/viewer/viewer.js    the page's script (main.js and its imports, one ES module)
//   OUT/viewer/worker.js    the Web Worker (zarrita, hyparquet, the maths)
//   OUT/viewer/viewer.css
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, "..", "tessera_ray", "viewer_assets"));
mkdirSync(join(out, "viewer"), { recursive: true });

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
  absWorkingDir: here,
};
await esbuild.build({ ...common, entryPoints: ["src/main.js"], outfile: join(out, "viewer", "viewer.js") });
await esbuild.build({ ...common, entryPoints: ["src/worker.js"], outfile: join(out, "viewer", "worker.js") });
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "viewer.css"), join(out, "viewer", "viewer.css"));
console.log(`built the viewer into ${out}`);
