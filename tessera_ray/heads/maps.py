"""Maps from embeddings: a classifier's classes and probabilities, and false-colour views.

Both read a bbox through the client's mosaic (one grid, NaN where no
embedding) and write a Cloud-Optimised GeoTIFF atomically
(:mod:`tessera_ray.sources.geotiff`), so a failed run leaves no half-written file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera_ray.errors import UserInputError
from tessera_ray.sources.geotiff import write_cog, write_png

NO_CLASS = 255


def _write_cog(path: str | Path, bands: np.ndarray, transform, crs, dtype: str, nodata,
               descriptions: list[str], tags: dict | None = None) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_cog(path, bands, transform, crs, dtype, nodata, descriptions, tags)


def read_mosaic(root, bbox, year: int):
    """(H, W, 128) float32 with NaN where no embedding, its transform and CRS."""
    array, transform, crs = root.mosaic(tuple(bbox), year)
    valid = np.isfinite(array).all(axis=-1)
    if not valid.any():
        raise UserInputError(f"no embeddings in {root.url} for {year} inside bbox {','.join(map(str, bbox))}")
    return array, valid, transform, crs


def classify_map(head, classes: list[str], array: np.ndarray, valid: np.ndarray, transform, crs,
                 out: str | Path, chunk: int = 65536) -> Path:
    """Band 1: class index (uint8, 255 = none), bands 2..: per-class probability (float32 0..1, NaN = none).

    The class names are the band descriptions and the ``classes`` tag.
    """
    h, w = valid.shape
    flat = array.reshape(-1, array.shape[-1])
    where = np.flatnonzero(valid.ravel())
    proba = np.full((h * w, len(classes)), np.nan, np.float32)
    for start in range(0, len(where), chunk):
        part = where[start:start + chunk]
        proba[part] = head.predict_proba(flat[part].astype(np.float64))
    label = np.full(h * w, NO_CLASS, np.uint8)
    label[where] = np.argmax(proba[where], axis=1)
    bands = np.concatenate((label.reshape(1, h, w).astype(np.float32), np.moveaxis(proba.reshape(h, w, -1), -1, 0)))
    # one dtype per GeoTIFF: float32 with the class index stored exactly, NaN = no prediction
    bands[0][~valid] = np.nan
    return _write_cog(out, bands, transform, crs, "float32", np.nan,
                      ["class"] + [f"p({c})" for c in classes], {"classes": ",".join(classes)})


def pca_rgb(array: np.ndarray, valid: np.ndarray, components: int = 3) -> np.ndarray:
    """The first three principal components of the valid pixels, each stretched to 0..255 (2..98 %)."""
    flat = array[valid].astype(np.float64)
    centred = flat - flat.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    scores = centred @ vt[:components].T
    return _stretch(scores, valid)


def umap_rgb(array: np.ndarray, valid: np.ndarray, seed: int = 0) -> np.ndarray:
    import umap  # optional: only where installed

    scores = umap.UMAP(n_components=3, random_state=seed).fit_transform(array[valid])
    return _stretch(scores, valid)


def _stretch(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(scores, 2, axis=0), np.percentile(scores, 98, axis=0)
    scaled = np.clip((scores - lo) / np.where(hi > lo, hi - lo, 1), 0, 1)
    rgb = np.zeros((*valid.shape, 3), np.uint8)
    rgb[valid] = np.round(scaled * 254 + 1).astype(np.uint8)  # 0 stays "no data"
    return rgb


def write_rgb(rgb: np.ndarray, transform, crs, png: str | Path | None, cog: str | Path | None) -> list[Path]:
    """The false-colour image as PNG (black = no data) and/or a 3-band uint8 COG (0 = no data)."""
    written = []
    if cog:
        written.append(_write_cog(cog, np.moveaxis(rgb, -1, 0), transform, crs, "uint8", 0, ["c1", "c2", "c3"]))
    if png:
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        png = write_png(png, rgb)
        written.append(png)
    return written


def regress_map(estimator, array: np.ndarray, valid: np.ndarray, transform, crs, out: str | Path) -> Path:
    """One float32 band of predicted values (NaN = no embedding)."""
    values = np.full(valid.shape, np.nan, np.float32)
    values[valid] = estimator.predict(array[valid].astype(np.float64))
    return _write_cog(out, values[None], transform, crs, "float32", np.nan, ["value"])
