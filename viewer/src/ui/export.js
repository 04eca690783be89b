// Downloads: labels as GeoJSON, the rendered map as PNG + world file (.pgw) on the zone's CRS.

export function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function downloadJSON(name, doc) {
  download(name, new Blob([JSON.stringify(doc, null, 1)], { type: "application/geo+json" }));
}

/**
 * World file lines for an image whose upper-left pixel corner is at (x0, y0), `size` metres
 * per pixel: the six numbers refer to the centre of the upper-left pixel.
 */
export function worldFile(x0, y0, size) {
  return [size, 0, 0, -size, x0 + size / 2, y0 - size / 2].map((v) => v.toFixed(6)).join("\n") + "\n";
}
