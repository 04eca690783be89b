"""What the client returns: a pixel, a zone's part of a region, and the status of each pixel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from affine import Affine

from tessera_ray.grid import Window

VALID, NODATA, NOT_PROCESSED, OUTSIDE = "valid", "no_data", "not_processed", "outside"


@dataclass(frozen=True)
class Pixel:
    """One pixel: 128 (or ``depth``) dequantised values (NaN unless valid) and why."""

    values: np.ndarray
    status: str  # valid | no_data | not_processed
    zone: int
    row: int
    col: int


@dataclass(frozen=True)
class ZoneRegion:
    """The part of a region on one zone grid, on that grid (no resampling)."""

    zone: int
    crs: str
    transform: Affine  # of the window's upper-left corner
    window: Window
    embeddings: np.ndarray  # (H, W, 128 or depth) float32, NaN where no embedding
    scales: np.ndarray  # (H, W) float32 with the store's sentinels

    @property
    def status(self) -> np.ndarray:
        return status_of(self.scales)


def status_of(scales: np.ndarray) -> np.ndarray:
    """Each pixel's status from the store's scale sentinels: finite valid, NaN no data, +inf not processed."""
    out = np.full(scales.shape, NOT_PROCESSED, dtype=object)
    out[np.isfinite(scales)] = VALID
    out[np.isnan(scales)] = NODATA
    return out
