// Colours: per-class palette, a perceptual ramp for scalar views, pixel status colours.

export const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3",
];

export const UNIT_COLOURS = { complete: "#00c853", partial: "#ffab00", no_data: "#9e9e9e" };

export const NODATA_RGBA = [70, 70, 80, 255];
export const UNPROCESSED_RGBA = [0, 0, 0, 0];

export function hexToRgb(hex) {
  const v = parseInt(hex.slice(1), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

// viridis, 9 stops
const RAMP = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];

/** Ramp colour of t in 0..1 into out[o..o+2]. */
export function ramp(t, out, o) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  for (let c = 0; c < 3; c++) out[o + c] = RAMP[i][c] + (RAMP[i + 1][c] - RAMP[i][c]) * f;
}

export function rampCss(t) {
  const out = [0, 0, 0];
  ramp(t, out, 0);
  return `rgb(${out.map(Math.round).join(",")})`;
}
