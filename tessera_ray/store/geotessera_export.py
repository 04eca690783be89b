"""Export a published year in geotessera's 0.1-degree npy tile layout.

A tile's pixel grid is a window of its zone grid (:class:`tessera_ray.grid.Tile`),
so a tile is a crop of the store, never a resampling. Written per tile::

    global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y.npy          int8 (H, W, 128) (or (H, W, depth))
    global_0.1_degree_representation/{year}/grid_X_Y/grid_X_Y_scales.npy   float32 (H, W)
    global_0.1_degree_representation/{year}/grid_X_Y/SHA256                 sha256sum lines
    global_0.1_degree_tiff_all/grid_X_Y.tiff    uint8 landmask (0 = no embedding), CRS + transform

plus the registries ``manifest.parquet`` and ``landmasks.parquet`` with the
columns geotessera 0.10+ reads (sizes and mtimes of the files as written).
The geotessera client then reads the folder offline with
``GeoTessera(registry_dir=DIR, embeddings_dir=DIR)``.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tessera_ray.atomic import write_bytes
from tessera_ray.client import Root
from tessera_ray.errors import UserInputError
from tessera_ray.grid import Tile, tiles_for_bounds
from tessera_ray.sources.geotiff import geotiff_bytes
from tessera_ray.store.manifest import read_manifest

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

EMBEDDINGS_DIR = "global_0.1_degree_representation"
LANDMASKS_DIR = "global_0.1_degree_tiff_all"


@dataclass(frozen=True)
class ExportResult:
    tiles: int
    out_dir: str


def tiles_of_units(manifest: gpd.GeoDataFrame) -> list[Tile]:
    """Tiles whose pixel window overlaps a published unit of the tile's own zone."""
    from tessera_ray.grid import Unit

    found: set[Tile] = set()
    for unit_id, geometry in zip(manifest["unit_id"], manifest.geometry):
        unit = Unit.from_id(str(unit_id))
        for tile in tiles_for_bounds(*geometry.bounds):
            if tile.zone == unit.zone and tile.window.intersection(unit.window) is not None:
                found.add(tile)
    return sorted(found, key=lambda t: (t.lon, t.lat))


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array))
    return buf.getvalue()


def _landmask_bytes(tile: Tile, land: np.ndarray) -> bytes:
    return geotiff_bytes(land, tile.transform, tile.crs, "uint8")


def export_geotessera(
    root: Root,
    year: int,
    out_dir: str | os.PathLike[str],
    bbox: tuple[float, float, float, float] | None = None,
    version: str = "1.1",
    variant: str = "cambridge",
    depth: int | None = None,
) -> ExportResult:
    """Write the npy tiles of every published unit of ``year`` (optionally within ``bbox``).

    ``depth`` K (a Matryoshka store) writes (H, W, K) tiles from the K-dim prefix array.
    """
    import pandas as pd

    root.depth_array(depth)  # a depth the store lacks: one clear error before any tile is written
    manifest = read_manifest(root.objects, year)
    if manifest is None or manifest.empty:
        raise UserInputError(f"{root.url} has no published units for {year}")
    root.year_index(year)
    tiles = tiles_of_units(manifest)
    if bbox is not None:
        w, s, e, n = bbox
        tiles = [t for t in tiles if t.lon + 0.05 > w and t.lon - 0.05 < e and t.lat + 0.05 > s and t.lat - 0.05 < n]
    out = Path(out_dir)
    grid_rows, mask_rows = [], []
    for tile in tiles:
        q, scales = root.read_window(tile.zone, tile.window, year, depth)
        if np.isinf(scales).all():
            continue  # nothing of this tile was processed
        name = tile.name
        tile_dir = out / EMBEDDINGS_DIR / str(int(year)) / name
        grid_path, scales_path = tile_dir / f"{name}.npy", tile_dir / f"{name}_scales.npy"
        grid_bytes, scales_bytes = _npy_bytes(q), _npy_bytes(scales)
        _write_atomic(grid_path, grid_bytes)
        _write_atomic(scales_path, scales_bytes)
        written = ((grid_bytes, grid_path), (scales_bytes, scales_path))
        sums = "".join(f"{hashlib.sha256(b).hexdigest()}  {p.name}\n" for b, p in written)
        _write_atomic(tile_dir / "SHA256", sums.encode())
        mask_path = out / LANDMASKS_DIR / f"{name}.tiff"
        _write_atomic(mask_path, _landmask_bytes(tile, ~np.isnan(scales)))
        grid_rows.append({
            "year": int(year), "lon": tile.lon, "lat": tile.lat,
            "grid_size": grid_path.stat().st_size, "version": version, "variant": variant,
            "directory": str(tile_dir.relative_to(out)), "grid_path": str(grid_path.relative_to(out)),
            "scales_path": str(scales_path.relative_to(out)), "grid_mtime": grid_path.stat().st_mtime,
            "scales_mtime": scales_path.stat().st_mtime, "scales_size": scales_path.stat().st_size,
            "lon_i": np.int32(tile.lon_i), "lat_i": np.int32(tile.lat_i),
        })
        mask_rows.append({
            "lon": tile.lon, "lat": tile.lat, "file_size": mask_path.stat().st_size,
            "mtime": mask_path.stat().st_mtime, "key": f"{LANDMASKS_DIR}/{name}.tiff",
            "lon_i": np.int32(tile.lon_i), "lat_i": np.int32(tile.lat_i),
        })
    if not grid_rows:
        raise UserInputError(f"no processed pixels of {year} in the requested area of {root.url}")
    _merge_registry(out / "manifest.parquet", pd.DataFrame(grid_rows), ["year", "lon_i", "lat_i"])
    _merge_registry(out / "landmasks.parquet", pd.DataFrame(mask_rows), ["lon_i", "lat_i"])
    return ExportResult(len(grid_rows), str(out))


def _merge_registry(path: Path, new: pd.DataFrame, key: list[str]) -> None:
    """Add rows to a registry parquet (replacing rows with the same key), atomically."""
    import pandas as pd

    if path.exists():
        old = pd.read_parquet(path)
        new = pd.concat([old, new]).drop_duplicates(subset=key, keep="last")
    new = new.sort_values(key).reset_index(drop=True)
    buf = io.BytesIO()
    new.to_parquet(buf, index=False)
    _write_atomic(path, buf.getvalue())
