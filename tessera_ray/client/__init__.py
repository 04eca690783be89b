"""Range-read client for a published root (``https://``, ``s3://`` or a path).

It reads the sharded Zarr arrays itself rather than through zarr-python, so
that a read costs only what it must (:mod:`.chunks`: shard indexes read at
most once and cached, or skipped for fixed-offset arrays; neighbouring chunk
ranges merged into one request; every chunk's CRC32C checked, so a corrupt
object is an error naming the shard, never wrong numbers).

    root = open_root("https://example.org/tessera")
    px = root.pixel(0.1, 52.2, 2024)             # Pixel(values (128,), status)
    px16 = root.pixel(0.1, 52.2, 2024, depth=16) # a Matryoshka store: reads only embeddings_d16 + scales
    X, status = root.points(lons, lats, 2024)    # (N, 128) float32, NaN where none
    zones = root.region((w, s, e, n), 2024)      # one ZoneRegion per UTM zone
    array, transform, crs = root.mosaic((w, s, e, n), 2024, crs="EPSG:3857")
    root.export_geotiff((w, s, e, n), 2024, "region.tif")   # 128-band COG
    units = root.units(2024, bbox=(w, s, e, n))  # manifest rows, only the row groups needed
    root.stats                                   # requests and bytes so far, by kind

:class:`Root` is a facade over one module per concern: :mod:`.fetch` (every
request, counted), :mod:`.metadata` (what the root declares), :mod:`.manifests`,
:mod:`.chunks` (index and chunk caches, range merging), :mod:`.pixels`
(points and windows of a zone grid), :mod:`.mosaic` and :mod:`.export`
(GeoTIFF, through :mod:`tessera_ray.sources.geotiff`). Here: lon/lat in, results out.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
from affine import Affine
from numpy.typing import ArrayLike

from tessera_ray.client.chunks import ChunkReader
from tessera_ray.client.export import export_geotiff as write_geotiff
from tessera_ray.client.fetch import Fetcher
from tessera_ray.client.manifests import Manifests
from tessera_ray.client.metadata import RootMetadata, read_metadata
from tessera_ray.client.mosaic import plan_mosaic, render
from tessera_ray.client.pixels import PixelReader
from tessera_ray.client.results import NODATA, NOT_PROCESSED, OUTSIDE, VALID, Pixel, ZoneRegion, status_of
from tessera_ray.codes import dequantise
from tessera_ray.errors import TesseraError, UserInputError
from tessera_ray.grid import Window, roi_from_bbox, roi_window, utm_zone, zone_grid
from tessera_ray.redact import redact
from tessera_ray.store.objects import Objects, open_objects
from tessera_ray.store.shards import ShardedArray

BBox = tuple[float, float, float, float]


class Root:
    """A published root opened for reading. Thread-safe; caches shard indexes and chunks."""

    max_region_pixels = 4_000_000  # 2 GB of float32 embeddings

    export_block = 256
    """Side (a multiple of 16) of the blocks :meth:`export_geotiff` renders one at a time: its memory
    bound, about 2.5 x side^2 x bands x 4 bytes (the block, its source window, their int8 codes)."""

    def __init__(self, objects: Objects, threads: int = 16, chunk_cache: int = 256) -> None:
        self.objects = objects
        self.threads = threads
        fetch = Fetcher(objects)
        self.stats: Counter[str] = fetch.stats  # requests and bytes by kind, for benchmarks and tests
        self._meta: RootMetadata = read_metadata(fetch)
        self._manifests = Manifests(fetch, self._meta)
        self._chunks = ChunkReader(fetch, self._meta.years, self._manifests.published_objects, threads, chunk_cache)
        self._pixels = PixelReader(self._meta, self._chunks)

    @property
    def url(self) -> str:
        return self.objects.url

    @property
    def attrs(self) -> dict[str, Any]:
        return self._meta.attrs

    @property
    def years(self) -> list[int]:
        return self._meta.years

    @property
    def model(self) -> str:
        return self._meta.model

    @property
    def arrays(self) -> dict[tuple[int, str], ShardedArray]:
        return self._meta.arrays

    @property
    def zones(self) -> list[int]:
        return self._meta.zones

    @property
    def depths(self) -> dict[int, str]:
        return self._meta.depths

    def close(self) -> None:
        """Stop the reader's threads (they also go when the Root is garbage-collected)."""
        self._chunks.close()
        self._pixels.close()

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def year_index(self, year: int) -> int:
        """Position of ``year`` on the time axis; a clear error if the root does not hold it."""
        return self._meta.year_index(year)

    def depth_array(self, depth: int | None) -> tuple[str, int]:
        """The array holding ``depth`` dims (None: all 128) and its width; a clear error for a depth not stored."""
        return self._meta.depth_array(depth)

    # ------------------------------------------------------------ manifests

    def units(self, year: int, bbox: BBox | None = None) -> Any:
        """Published units of a year (GeoDataFrame), only those touching ``bbox`` if given (see :mod:`.manifests`)."""
        return self._manifests.units(year, bbox)

    # ------------------------------------------------------------ zone grids

    def read_pixels(self, zone: int, rows: ArrayLike, cols: ArrayLike, year: int,
                    depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (N, K) and scales (N,) of pixels of one zone grid (+inf where not processed).

        ``depth`` K (a Matryoshka store) reads only that prefix array and ``scales``; None reads all 128 dims.
        """
        return self._pixels.read_pixels(zone, rows, cols, year, depth)

    def read_window(self, zone: int, window: Window, year: int,
                    depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (H, W, K) and scales (H, W) of a window of a zone grid (K = ``depth``, or 128)."""
        return self._pixels.read_window(zone, window, year, depth)

    # ------------------------------------------------------------ lon/lat

    def points(self, lons: ArrayLike, lats: ArrayLike, year: int,
               depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings at lon/lat points: (N, 128 or depth) float32 (NaN where none) and a status per point."""
        lons, lats = np.asarray(lons, "float64").ravel(), np.asarray(lats, "float64").ravel()
        if lons.shape != lats.shape:
            raise UserInputError("lons and lats differ in length")
        self.year_index(year)
        _, width = self.depth_array(depth)
        values = np.full((len(lons), width), np.nan, "float32")
        status = np.full(len(lons), OUTSIDE, dtype=object)
        finite = np.isfinite(lons) & np.isfinite(lats) & (np.abs(lats) <= 90) & (np.abs(lons) <= 180)
        zones = np.full(len(lons), -1)
        zones[finite] = [utm_zone(lon) for lon in lons[finite]]
        for zone in np.unique(zones[zones > 0]):
            idx = np.flatnonzero(zones == zone)
            rows, cols = zone_grid(int(zone)).lonlat_to_pixel(lons[idx], lats[idx])
            inside = zone_grid(int(zone)).contains(rows, cols)
            idx, rows, cols = idx[inside], rows[inside], cols[inside]
            q, s = self.read_pixels(int(zone), rows, cols, year, depth)
            values[idx] = dequantise(q, s)
            status[idx] = status_of(s)
        return values, status

    def pixel(self, lon: float, lat: float, year: int, depth: int | None = None) -> Pixel:
        """The embedding of the pixel holding (lon, lat) (its first ``depth`` dims on a Matryoshka store)."""
        values, status = self.points([lon], [lat], year, depth)
        if status[0] == OUTSIDE:
            raise UserInputError(f"point ({lon}, {lat}) is outside every zone grid (latitudes 80S..84N)")
        zone = utm_zone(lon)
        row, col = zone_grid(zone).lonlat_to_pixel(lon, lat)
        return Pixel(values[0], str(status[0]), zone, int(row), int(col))

    def region(self, bbox: BBox, year: int, depth: int | None = None) -> list[ZoneRegion]:
        """A lon/lat bbox (W, S, E, N) read per zone grid it touches, on each zone's own grid.

        Refuses regions over ``max_region_pixels`` (float32 embeddings take
        512 bytes a pixel) rather than exhaust memory; read those per tile.
        ``depth`` K reads only the K-dim prefix array (a Matryoshka store).
        """
        self.year_index(year)
        self.depth_array(depth)
        roi = roi_from_bbox(*bbox)
        windows = [(zone, w) for zone in roi.zones() if (w := roi_window(roi, zone)) is not None]
        pixels = sum(w.size for _, w in windows)
        if pixels > self.max_region_pixels:
            raise UserInputError(
                f"bbox {bbox} covers {pixels:,} pixels ({pixels * 512 / 1e9:.1f} GB as float32), more than "
                f"{self.max_region_pixels:,}; read it in parts (e.g. per 0.1-degree tile)"
            )
        out = []
        for zone, window in windows:
            q, s = self.read_window(zone, window, year, depth)
            grid = zone_grid(zone)
            out.append(ZoneRegion(zone, grid.crs, grid.window_transform(window), window, dequantise(q, s), s))
        if not out:
            raise UserInputError(f"bbox {bbox} does not touch any zone grid")
        return out

    def mosaic(self, bbox: BBox, year: int, crs: str | None = None, resolution: float | None = None,
               depth: int | None = None) -> tuple[np.ndarray, Affine, str]:
        """One (H, W, 128 or depth) float32 array of a bbox reprojected to ``crs`` (nearest neighbour).

        ``crs`` defaults to the UTM zone of the bbox centre. In a zone's CRS
        at 10 m the output is snapped to that zone's grid, so its pixels are
        returned as stored and only the other zones' pixels are resampled
        (a bbox across a UTM seam); in any other CRS the stored pixel size is
        kept unless ``resolution`` says otherwise. Returns ``(array, transform, crs)``.
        Capped at ``max_region_pixels``; :meth:`export_geotiff` streams any size.
        """
        plan = plan_mosaic(self._meta, bbox, year, crs, resolution, depth)
        if plan.size > self.max_region_pixels:
            raise UserInputError(
                f"bbox {bbox} covers {plan.size:,} pixels ({plan.size * 4 * plan.bands / 1e9:.1f} GB as float32), "
                f"more than {self.max_region_pixels:,}; export it to a GeoTIFF instead (tessera-ray export streams it)"
            )
        return render(plan, Window(0, 0, plan.height, plan.width), self.read_window), plan.transform, plan.crs

    def export_geotiff(self, bbox: BBox, year: int, path: str | os.PathLike[str], crs: str | None = None,
                       depth: int | None = None) -> str:
        """Write a region as a 128-band (or ``depth``-band) float32 Cloud-Optimised GeoTIFF (NaN = no embedding).

        Streamed in blocks of ``export_block`` pixels (:mod:`.export`), so peak
        memory does not grow with the bbox; ``path`` appears complete or not at all.
        """
        plan = plan_mosaic(self._meta, bbox, year, crs, None, depth)
        tags = dict(year=str(year), source=redact(self.url), model=str(self.model), dimensions=str(plan.bands))
        return write_geotiff(plan, path, self.read_window, self.export_block, tags, bbox)


def open_root(url: str, threads: int = 16) -> Root:
    """Open a published root: ``https://...``, ``s3://bucket/prefix`` or a local path."""
    try:
        return Root(open_objects(url), threads=threads)
    except TesseraError:
        raise
    except OSError as exc:
        raise UserInputError(f"cannot open {url}: {exc}") from None


__all__ = ["NODATA", "NOT_PROCESSED", "OUTSIDE", "VALID", "Pixel", "Root", "ZoneRegion", "open_root"]
