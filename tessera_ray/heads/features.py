"""Per-pixel baselines without a model: monthly median composites of the Sentinel-2 bands (and Sentinel-1)."""

from __future__ import annotations

import warnings

import numpy as np

from tessera_ray.model.inference import PixelSeries

MONTH_STARTS = np.array([1, 32, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 367])


def monthly_composites(series: PixelSeries) -> np.ndarray:
    """(N, 12 x 10) float32: per month, the median of each band over the clear observations.

    A month without any clear observation takes the pixel's annual median, so
    every pixel gets the same 120 features (NaN only for a pixel never seen clear).
    """
    bands = np.asarray(series.s2_bands, np.float32)
    clear = np.asarray(series.s2_masks) == 1
    return _monthly_medians(np.where(clear[:, :, None], bands, np.nan), np.asarray(series.s2_doys))


def monthly_sar_composites(series: PixelSeries) -> np.ndarray:
    """(N, 12 x 2) float32: per month, the median VV and VH (int16 scale) over both orbit directions."""
    sar = np.concatenate([series.sar_ascending, series.sar_descending], axis=1).astype(np.float32)
    doys = np.concatenate([series.sar_ascending_doys, series.sar_descending_doys])
    return _monthly_medians(np.where(sar == 0, np.nan, sar), doys)


def _monthly_medians(masked: np.ndarray, doys: np.ndarray) -> np.ndarray:
    """Monthly nan-medians of (N, T, C) over T; an empty month takes the pixel's annual median."""
    month = np.searchsorted(MONTH_STARTS, doys, side="right") - 1
    with warnings.catch_warnings():  # all-NaN months are expected
        warnings.simplefilter("ignore", RuntimeWarning)
        annual = np.nanmedian(masked, axis=1)
        out = np.empty((len(masked), 12, masked.shape[2]), np.float32)
        for m in range(12):
            at = month == m
            out[:, m] = np.nanmedian(masked[:, at], axis=1) if at.any() else np.nan
            out[:, m] = np.where(np.isnan(out[:, m]), annual, out[:, m])
    return out.reshape(len(masked), -1)

