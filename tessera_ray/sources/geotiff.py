"""GeoTIFF and PNG writing: the other half of the raster boundary (:mod:`tessera_ray.sources.cog` reads).

Every raster this package writes goes through here: class and value maps,
false-colour images, streamed embedding exports, the geotessera landmask
tiles and the ingest grid files. Files are written atomically
(:mod:`tessera_ray.atomic`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from tessera_ray.atomic import atomic_file, remove, temporary_sibling

COG_BLOCK = 256
"""Internal tile side of the COGs we write (GDAL's default, and our export block)."""

_COPY_CACHE_MB = 64
"""GDAL's block cache while a streamed export is copied to a COG: bounds that copy's memory."""


def _profile(bands: np.ndarray | tuple[int, int, int], transform: Affine, crs: object, dtype: str,
             nodata: float | None) -> dict[str, Any]:
    count, height, width = bands.shape if isinstance(bands, np.ndarray) else bands
    return dict(width=width, height=height, count=count, dtype=dtype, crs=crs, transform=transform, nodata=nodata)


def _describe(dst: Any, descriptions: Sequence[str], tags: Mapping[str, object] | None) -> None:
    for i, text in enumerate(descriptions, start=1):
        dst.set_band_description(i, text)
    if tags:
        dst.update_tags(**{k: str(v) for k, v in tags.items()})


def write_cog(path: str | os.PathLike[str], bands: np.ndarray, transform: Affine, crs: object, dtype: str,
              nodata: float | None = None, descriptions: Sequence[str] = (),
              tags: dict[str, object] | None = None) -> Path:
    """``bands`` (count, H, W) as a deflate Cloud-Optimised GeoTIFF, atomically."""
    import rasterio

    with atomic_file(path) as tmp:
        with rasterio.open(tmp, "w", driver="COG", compress="deflate", blocksize=COG_BLOCK,
                           **_profile(bands, transform, crs, dtype, nodata)) as dst:
            dst.write(bands.astype(dtype, copy=False))
            _describe(dst, descriptions, tags)
    return Path(path)


def write_png(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """An (H, W, 3) uint8 image as PNG, atomically (no georeferencing sidecar is left)."""
    import rasterio

    h, w = rgb.shape[:2]
    with atomic_file(path) as tmp:
        with rasterio.open(tmp, "w", driver="PNG", width=w, height=h, count=3, dtype="uint8") as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
    return Path(path)


def geotiff_bytes(band: np.ndarray, transform: Affine, crs: object, dtype: str = "uint8") -> bytes:
    """One band as the bytes of a deflate GeoTIFF (for objects and files written elsewhere)."""
    from rasterio.io import MemoryFile

    with MemoryFile() as mem:
        with mem.open(driver="GTiff", compress="deflate", **_profile(band[None], transform, crs, dtype, None)) as dst:
            dst.write(band.astype(dtype, copy=False), 1)
        data: bytes = mem.read()
        return data


@contextlib.contextmanager
def streamed_cog(path: str | os.PathLike[str], shape: tuple[int, int, int], transform: Affine, crs: object,
                 dtype: str = "float32", nodata: float = np.nan, tags: Mapping[str, object] | None = None,
                 block: int = COG_BLOCK,
                 predictor: int = 3) -> Iterator[Callable[[int, int, np.ndarray], None]]:
    """A COG of ``shape`` (count, H, W) written block by block, in bounded memory.

    Yields ``write(row, col, pixels)`` for (h, w, count) blocks. They go to a
    tiled (``block``-pixel tiles, a multiple of 16: the caller's write block),
    band-interleaved GeoTIFF beside ``path`` (pixel-interleaved tiles
    made the copy 40x slower: it reads band by band), which GDAL then copies
    to the COG (:data:`COG_BLOCK` tiles, whatever ``block`` was) with a
    :data:`_COPY_CACHE_MB` cache. ``path`` appears complete
    or not at all; both temporaries are removed whatever happens.
    """
    import rasterio
    import rasterio.shutil
    from rasterio.windows import Window

    profile = dict(driver="GTiff", tiled=True, blockxsize=block, blockysize=block, compress="deflate",
                   predictor=predictor, BIGTIFF="IF_SAFER", interleave="band",
                   **_profile(shape, transform, crs, dtype, nodata))
    tiled = temporary_sibling(f"{path}.tiled.tif")
    try:
        with atomic_file(path) as cog, rasterio.Env(GDAL_CACHEMAX=_COPY_CACHE_MB):
            with rasterio.open(tiled, "w", **profile) as dst:
                def write(row: int, col: int, pixels: np.ndarray) -> None:
                    h, w = pixels.shape[:2]
                    dst.write(np.moveaxis(pixels, -1, 0), window=Window(col, row, w, h))

                yield write
                _describe(dst, (), tags)
            rasterio.shutil.copy(tiled, cog, driver="COG", compress="deflate", predictor=predictor,
                                 blocksize=COG_BLOCK, bigtiff="IF_SAFER")
    finally:
        remove(tiled)
