// The legend: unit outline colours always; the current view's colours under them.
import { UNIT_COLOURS, rampCss } from "../maths/colour.js";

const UNIT_TEXT = { complete: "unit, complete", partial: "unit, partly processed", no_data: "unit, no data" };

function swatch(colour, text, outline = false) {
  const style = outline ? `border: 2px solid ${colour}; background: transparent` : `background: ${colour}`;
  return `<div><span class="swatch" style="${style}"></span>${text}</div>`;
}

function rampBar(lo, hi, label) {
  const stops = Array.from({ length: 9 }, (_, i) => rampCss(i / 8)).join(",");
  return `<div>${label}</div><div class="ramp" style="background: linear-gradient(to right, ${stops})"></div>
    <div style="display:flex;justify-content:space-between;width:180px"><span>${lo}</span><span>${hi}</span></div>`;
}

export function renderLegend(el, { mode, model, classes, counts }) {
  let html = Object.entries(UNIT_COLOURS).map(([k, c]) => swatch(c, UNIT_TEXT[k], true)).join("");
  html += swatch("rgb(70,70,80)", "no data (water, clouds all year)");
  if (model && mode === "pca" && model.explained) {
    html += `<div>PCA on ${model.depth} dims: R G B = PC1..3 (${model.explained.map((e) => (100 * e).toFixed(1) + "%").join(", ")} of variance)</div>`;
  } else if (model && mode === "dims") {
    html += `<div>R G B = dims ${model.dims.join(", ")} (read at depth ${model.depth})</div>`;
  } else if (model && mode === "similarity") {
    html += rampBar(model.lo.toFixed(2), "1", `cosine similarity (${model.depth} dims)`);
  } else if (mode === "probability") {
    html += rampBar(classes ? (1 / classes.names.length).toFixed(2) : "", "1", "top-class probability");
  }
  if ((mode === "classes" || mode === "probability") && classes) {
    const total = (counts || []).reduce((a, b) => a + (b || 0), 0);
    html += classes.names
      .map((n, i) => swatch(classes.colours[i], `${n}${total ? ` (${(100 * (counts[i] || 0) / total).toFixed(1)}%)` : ""}`))
      .join("");
  }
  el.innerHTML = html;
}
