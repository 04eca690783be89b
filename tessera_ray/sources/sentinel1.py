"""Sentinel-1 RTC rules as pure functions on arrays (TESSERA.md section 2).

Linear gamma0 becomes TESSERA's int16 scale, bursts of one UTC date merge
first-valid, and passes split by orbit direction.
"""

from __future__ import annotations

import numpy as np

#: Polarisations in the model's channel order.
POLARISATIONS: tuple[str, ...] = ("VV", "VH")
ASCENDING = "ascending"
DESCENDING = "descending"
#: GeoTIFF metadata tag OPERA RTC-S1 COGs carry the pass direction in.
ORBIT_TAG = "ORBIT_PASS_DIRECTION"
#: OPERA mask layer value for fill (outside the burst).
OPERA_MASK_FILL = 255


def to_int16(linear: np.ndarray) -> np.ndarray:
    """q = clip((20*log10(x) + 50) * 200, 0, 32767) as int16; NaN, x <= 0 and inf -> 0 (no data).

    20*log10 of a power value is twice the usual dB; the published statistics
    are on this scale. The fraction is truncated, as a plain int cast does.
    """
    x = np.asarray(linear, dtype=np.float64)
    ok = np.isfinite(x) & (x > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = (20.0 * np.log10(np.where(ok, x, 1.0)) + 50.0) * 200.0
    q = np.clip(q, 0, 32767).astype(np.int16)
    return np.where(ok, q, np.int16(0)).astype(np.int16)


def orbit_direction(value: str | None) -> str | None:
    """Normalise an orbit tag or ``sat:orbit_state`` to ascending/descending; None if unknown."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("ascending", "asc", "a"):
        return ASCENDING
    if v in ("descending", "desc", "d"):
        return DESCENDING
    return None


def mosaic_first_valid(stack: list[np.ndarray]) -> np.ndarray:
    """Merge bursts of one date, in order: per pixel the first with VV or VH non-zero wins.

    ``stack[i]`` is (H, W, 2) int16 already converted; returns (H, W, 2) int16.
    """
    if not stack:
        raise ValueError("no bursts to mosaic")
    out = np.zeros_like(stack[0])
    filled = np.zeros(stack[0].shape[:2], dtype=bool)
    for layer in stack:
        take = (layer != 0).any(axis=-1) & ~filled
        out[take] = layer[take]
        filled |= take
    return out
