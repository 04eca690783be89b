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

// zarrita can load every numcodecs codec; a tessera-ray store uses bytes + crc32c (and Blosc for
// compression="zstd" and the coordinates). Standalone zstd and lz4 (780 KB of WebAssembly) are
// left out: a store that needs them gets zarrita's error naming the codec.
const leaveOut = {
  name: "leave-out-codecs",
  setup(build) {
    build.onResolve({ filter: /^numcodecs\/(zstd|lz4)$/ }, (args) => ({ path: args.path, namespace: "left-out" }));
    build.onLoad({ filter: /.*/, namespace: "left-out" }, (args) => ({
      contents: `throw new Error("the ${args.path} codec is not in this viewer's bundle");`,
    }));
  },
};

const common = {
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "eof",
  logLevel: "warning",
  absWorkingDir: here,
  plugins: [leaveOut],
};
await esbuild.build({ ...common, entryPoints: ["src/main.js"], outfile: join(out, "viewer", "viewer.js") });
await esbuild.build({ ...common, entryPoints: ["src/worker.js"], outfile: join(out, "viewer", "worker.js") });
copyFileSync(join(here, "src", "index.html"), join(out, "index.html"));
copyFileSync(join(here, "src", "viewer.css"), join(out, "viewer", "viewer.css"));
console.log(`built the viewer into ${out}`);
