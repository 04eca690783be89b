// The pixel panel: where the click landed, its unit and status, and its values as a bar chart.
// The values are also in the panel's data-values attribute (JSON, full precision) for scripts.
const STATUS_TEXT = { valid: "valid", no_data: "no data", not_processed: "not processed", outside: "outside every zone grid" };

export function showPixel(el, info) {
  el.dataset.status = info.status;
  el.dataset.values = JSON.stringify(info.values);
  el.dataset.lon = info.lon;
  el.dataset.lat = info.lat;
  const unit = info.unit
    ? `${info.unit.unit_id} (${info.unit.status.replace("_", " ")})`
    : `${info.unitId || "-"} (not in the ${info.year} manifest)`;
  el.innerHTML = `
    <h2>Pixel</h2>
    <dl>
      <dt>lon, lat</dt><dd>${info.lon.toFixed(6)}, ${info.lat.toFixed(6)}</dd>
      <dt>${info.crs}</dt><dd>x ${info.x.toFixed(1)}, y ${info.y.toFixed(1)}</dd>
      <dt>grid</dt><dd>zone ${info.zone}, row ${info.row}, col ${info.col}</dd>
      <dt>unit</dt><dd class="unit">${unit}</dd>
      <dt>year</dt><dd>${info.year}</dd>
      <dt>status</dt><dd class="status status-${info.status}">${STATUS_TEXT[info.status] || info.status}</dd>
      ${info.status === "valid" ? `<dt>scale</dt><dd>${info.scale}</dd>` : ""}
    </dl>`;
  if (info.status !== "valid") return;
  const canvas = document.createElement("canvas");
  canvas.className = "bars";
  el.appendChild(canvas);
  drawBars(canvas, info.values);
  const details = document.createElement("details");
  details.innerHTML = `<summary>${info.values.length} values</summary>`;
  const pre = document.createElement("pre");
  pre.className = "values";
  pre.textContent = info.values.map((v, i) => `${String(i).padStart(3)} ${v.toPrecision(6)}`).join("\n");
  details.appendChild(pre);
  el.appendChild(details);
}

function drawBars(canvas, values) {
  const w = (canvas.width = canvas.clientWidth * devicePixelRatio || 300);
  const h = (canvas.height = 90 * devicePixelRatio);
  const ctx = canvas.getContext("2d");
  const max = Math.max(1e-9, ...values.map(Math.abs));
  const bw = w / values.length;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, w, h);
  ctx.strokeStyle = "#999";
  ctx.beginPath();
  ctx.moveTo(0, h / 2);
  ctx.lineTo(w, h / 2);
  ctx.stroke();
  values.forEach((v, i) => {
    const bh = (v / max) * (h / 2 - 2);
    ctx.fillStyle = v >= 0 ? "#1e88e5" : "#e53935";
    ctx.fillRect(i * bw, v >= 0 ? h / 2 - bh : h / 2, Math.max(1, bw - 0.5), Math.abs(bh));
  });
}
