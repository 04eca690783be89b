// The header's controls: year, zone, view mode and its options (dims, PCA depth).
const $ = (id) => document.getElementById(id);

export function fillSelect(select, values, current, label = (v) => String(v)) {
  select.innerHTML = values.map((v) => `<option value="${v}">${label(v)}</option>`).join("");
  if (current !== undefined) select.value = String(current);
}

/** The option inputs of a mode, writing into `params` and calling `onChange` on edits. */
export function renderModeOptions(mode, params, depths, onChange) {
  const el = $("mode-options");
  el.innerHTML = "";
  if (mode === "dims") {
    ["R", "G", "B"].forEach((name, c) => {
      const label = document.createElement("label");
      label.textContent = `${name} `;
      const input = document.createElement("input");
      input.type = "number";
      input.min = 0;
      input.max = 127;
      input.value = params.dims[c];
      input.id = `dim-${name.toLowerCase()}`;
      input.addEventListener("change", () => {
        params.dims[c] = Math.max(0, Math.min(127, Math.round(Number(input.value) || 0)));
        onChange();
      });
      label.appendChild(input);
      el.appendChild(label);
    });
  } else if (mode === "pca") {
    const label = document.createElement("label");
    label.textContent = "on dims ";
    const select = document.createElement("select");
    select.id = "pca-depth";
    fillSelect(select, depths, params.pcaDepth);
    select.addEventListener("change", () => {
      params.pcaDepth = Number(select.value);
      onChange();
    });
    label.appendChild(select);
    el.appendChild(label);
  } else if (mode === "similarity") {
    el.innerHTML = `<span>${params.reference ? `to the pixel at ${params.reference.lon.toFixed(5)}, ${params.reference.lat.toFixed(5)}` : "pick a pixel with the <b>similar to</b> tool"}</span>`;
  }
}
