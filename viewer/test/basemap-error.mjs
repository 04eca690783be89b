// How far a basemap tile drawn by the viewer lies from the exact Web Mercator -> UTM projection
// (docs/viewer.md, "Basemap"):  node test/basemap-error.mjs
// For tiles at several latitudes, at the zone's central meridian and 2.9 degrees off it, and at
// the zooms the page picks, the largest distance in screen px (at the scale where one tile px is
// about one screen px, as the page chooses) between the drawn position of a point of the tile
// and its exact position, over a lattice of points inside every triangle:
//   - one affine per tile, fitted to three corners (a parallelogram);
//   - the page's mesh (meshSize: n x n cells, two exact-cornered triangles each).
// Each cell: one affine / the mesh (its size when more than one cell).
import { lonLatToTile, meshError, meshSize, tileToGrid, TILE, affineFrom3, applyAffine } from "../src/maths/tiles.js";

const ZONE = 31, MERIDIAN = 3; // zone 31's central meridian
const rows = [];
for (const lat of [0, 30, 52, 70]) {
  for (const off of [0, 2.9]) {
    for (const z of [6, 8, 10, 12, 14, 16, 18]) {
      const [fx, fy] = lonLatToTile(z, MERIDIAN + off, lat);
      const t = { z, x: Math.floor(fx), tx: Math.floor(fx), y: Math.floor(fy) };
      const scale = (10 * 2 ** z) / ((40075016.685578488 / TILE) * Math.cos((lat * Math.PI) / 180));
      rows.push({ lat, off, z, one: oneAffineError(t) * scale, n: meshSize(ZONE, t, scale), mesh: meshError(ZONE, t, meshSize(ZONE, t, scale)) * scale });
    }
  }
}

function oneAffineError(t, samples = 16) {
  const corner = (u, v) => tileToGrid(ZONE, t.z, t.tx + u, t.y + v);
  const m = affineFrom3([[0, 0], [TILE, 0], [0, TILE]], [corner(0, 0), corner(1, 0), corner(0, 1)]);
  let worst = 0;
  for (let i = 0; i <= samples; i++) {
    for (let j = 0; j <= samples; j++) {
      const [c, r] = applyAffine(m, (i / samples) * TILE, (j / samples) * TILE);
      const [ce, re] = corner(i / samples, j / samples);
      worst = Math.max(worst, Math.hypot(c - ce, r - re));
    }
  }
  return worst;
}

const f = (v) => (v < 0.001 ? "<0.001" : v.toFixed(3));
const zooms = [...new Set(rows.map((r) => r.z))];
console.log(`| latitude, off the meridian | ${zooms.map((z) => `z${z}`).join(" | ")} |`);
console.log(`|---|${zooms.map(() => "---:").join("|")}|`);
for (const lat of new Set(rows.map((r) => r.lat))) {
  for (const off of new Set(rows.map((r) => r.off))) {
    const cells = zooms.map((z) => rows.find((r) => r.lat === lat && r.off === off && r.z === z))
      .map((r) => `${f(r.one)} / ${f(r.mesh)}${r.n > 1 ? ` (${r.n}x${r.n})` : ""}`);
    console.log(`| ${lat} N, ${off} deg | ${cells.join(" | ")} |`);
  }
}
