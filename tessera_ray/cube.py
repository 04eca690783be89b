"""The per-pixel annual time series of one unit (or block of a unit).

:class:`TimeSeriesCube` holds exactly the stacks upstream TESSERA feeds its
model (TESSERA.md section 2) plus the window of the zone grid they cover, and
saves/loads them in the upstream per-patch ``.npy`` layout so upstream
inference code can read what we ingest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from tessera_ray.atomic import atomic_folder
from tessera_ray.grid import Window, zone_grid
from tessera_ray.sources.sentinel2 import S2_BANDS

STACKS = ("bands", "masks", "doys", "sar_ascending", "sar_ascending_doy", "sar_descending", "sar_descending_doy")
GRID_FILE = "grid.tif"
META_FILE = "cube.json"


@dataclass(frozen=True, eq=False)
class TimeSeriesCube:
    """One year of Sentinel-2 and Sentinel-1 observations on a window of a zone grid."""

    bands: np.ndarray
    """(T, H, W, 10) uint16 DNs in model band order (B04 B02 B03 B08 B8A B05 B06 B07 B11 B12)."""
    masks: np.ndarray
    """(T, H, W) uint8, 1 = clear observation."""
    doys: np.ndarray
    """(T,) uint16 raw day of year of each Sentinel-2 date."""
    sar_ascending: np.ndarray
    """(Ta, H, W, 2) int16 VV, VH on TESSERA's int16 dB scale, 0 = no data."""
    sar_ascending_doy: np.ndarray
    """(Ta,) int16."""
    sar_descending: np.ndarray
    """(Td, H, W, 2) int16."""
    sar_descending_doy: np.ndarray
    """(Td,) int16."""
    zone: int
    """UTM zone of the grid (EPSG:326NN)."""
    window: Window
    """Pixels of the zone grid covered."""
    skipped_scenes: tuple[str, ...] = field(default=())
    """Ids of scenes that could not be read (corrupt, truncated, unreachable) and were left out."""
    unknown_orbit: tuple[str, ...] = field(default=())
    """Ids of Sentinel-1 scenes without a usable orbit direction, left out of both stacks."""

    def __post_init__(self) -> None:
        h, w = self.window.shape
        t, ta, td = len(self.doys), len(self.sar_ascending_doy), len(self.sar_descending_doy)
        expect = {
            "bands": ((t, h, w, S2_BANDS), np.uint16),
            "masks": ((t, h, w), np.uint8),
            "doys": ((t,), np.uint16),
            "sar_ascending": ((ta, h, w, 2), np.int16),
            "sar_ascending_doy": ((ta,), np.int16),
            "sar_descending": ((td, h, w, 2), np.int16),
            "sar_descending_doy": ((td,), np.int16),
        }
        for name, (shape, dtype) in expect.items():
            arr = getattr(self, name)
            if arr.shape != shape or arr.dtype != dtype:
                raise ValueError(f"{name}: expected {shape} {np.dtype(dtype)}, got {arr.shape} {arr.dtype}")

    # ------------------------------------------------------------------ grid
    @property
    def crs(self) -> str:
        return zone_grid(self.zone).crs

    @property
    def transform(self) -> Affine:
        return zone_grid(self.zone).window_transform(self.window)

    @property
    def shape(self) -> tuple[int, int]:
        return self.window.shape

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in STACKS)

    # ------------------------------------------------------------------ building
    @classmethod
    def empty(cls, zone: int, window: Window) -> TimeSeriesCube:
        h, w = window.shape
        return cls(
            bands=np.zeros((0, h, w, S2_BANDS), np.uint16),
            masks=np.zeros((0, h, w), np.uint8),
            doys=np.zeros(0, np.uint16),
            sar_ascending=np.zeros((0, h, w, 2), np.int16),
            sar_ascending_doy=np.zeros(0, np.int16),
            sar_descending=np.zeros((0, h, w, 2), np.int16),
            sar_descending_doy=np.zeros(0, np.int16),
            zone=zone,
            window=window,
        )

    def without_empty_dates(self) -> TimeSeriesCube:
        """Drop time steps with no data at any pixel (a scene whose footprint misses this window)."""
        s2 = _has_data(self.bands) | _has_data(self.masks)
        asc, desc = _has_data(self.sar_ascending), _has_data(self.sar_descending)
        if s2.all() and asc.all() and desc.all():
            return self
        return TimeSeriesCube(
            bands=self.bands[s2], masks=self.masks[s2], doys=self.doys[s2],
            sar_ascending=self.sar_ascending[asc], sar_ascending_doy=self.sar_ascending_doy[asc],
            sar_descending=self.sar_descending[desc], sar_descending_doy=self.sar_descending_doy[desc],
            zone=self.zone, window=self.window,
            skipped_scenes=self.skipped_scenes, unknown_orbit=self.unknown_orbit,
        )

    @classmethod
    def merge(cls, blocks: Sequence[TimeSeriesCube], window: Window) -> TimeSeriesCube:
        """Stitch blocks of one zone into ``window``; time axes are the union of the blocks' days."""
        if not blocks:
            raise ValueError("nothing to merge")
        zone = blocks[0].zone
        arrays = _merge_arrays(blocks, window, lambda shape, dtype, name: np.zeros(shape, dtype))
        return cls(**arrays, zone=zone, window=window, **_merged_counters(blocks))

    # ------------------------------------------------------------------ npy layout
    def save_npy(self, directory: str | os.PathLike) -> Path:
        """Write the upstream per-patch layout, plus ``grid.tif`` (CRS + transform) and ``cube.json``.

        ``grid.tif`` carries the CRS and transform (its values: clear dates per
        pixel). Written into a temporary sibling folder and renamed, so a folder
        that exists is complete.
        """
        final = Path(directory)
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(final) as tmp:
            for name in STACKS:
                np.save(tmp / f"{name}.npy", getattr(self, name))
            _write_meta(tmp, self.zone, self.window, self.masks, self.skipped_scenes, self.unknown_orbit)
        return final

    @classmethod
    def load_npy(cls, directory: str | os.PathLike, mmap: bool = False) -> TimeSeriesCube:
        directory = Path(directory)
        meta = json.loads((directory / META_FILE).read_text())
        arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None) for name in STACKS}
        return cls(
            **arrays,
            zone=int(meta["zone"]),
            window=Window(*meta["window"]),
            skipped_scenes=tuple(meta.get("skipped_scenes", ())),
            unknown_orbit=tuple(meta.get("unknown_orbit", ())),
        )


def merge_npy(block_dirs: Iterable[str | os.PathLike], directory: str | os.PathLike, window: Window) -> Path:
    """Stitch saved block folders into one unit folder without holding the unit in memory.

    Blocks are memory-mapped and the output written through ``np.lib.format.open_memmap``,
    so peak memory is one block, whatever the unit size.
    """
    blocks = [TimeSeriesCube.load_npy(d, mmap=True) for d in block_dirs]
    if not blocks:
        raise ValueError("nothing to merge")
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(final) as tmp:

        def alloc(shape, dtype, name):
            return np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        arrays = _merge_arrays(blocks, window, alloc)
        for name, arr in arrays.items():
            if isinstance(arr, np.memmap):
                arr.flush()
            else:  # day arrays and empty stacks
                np.save(tmp / f"{name}.npy", arr)
        counters = _merged_counters(blocks)
        _write_meta(tmp, blocks[0].zone, window, arrays["masks"], counters["skipped_scenes"], counters["unknown_orbit"])
        del arrays
    return final


# ---------------------------------------------------------------------- helpers


def _has_data(stack: np.ndarray) -> np.ndarray:
    """Per time step: any non-zero value."""
    return np.array([bool(layer.any()) for layer in stack], dtype=bool)


def _merged_counters(blocks: Sequence[TimeSeriesCube]) -> dict[str, Any]:
    return {
        "skipped_scenes": tuple(sorted({s for b in blocks for s in b.skipped_scenes})),
        "unknown_orbit": tuple(sorted({s for b in blocks for s in b.unknown_orbit})),
    }


def _merge_arrays(blocks: Sequence[TimeSeriesCube], window: Window, alloc) -> dict[str, Any]:
    h, w = window.shape
    out: dict[str, np.ndarray] = {}
    for stack, days, dtype, tail, day_dtype in (
        ("bands", "doys", np.uint16, (S2_BANDS,), np.uint16),
        ("sar_ascending", "sar_ascending_doy", np.int16, (2,), np.int16),
        ("sar_descending", "sar_descending_doy", np.int16, (2,), np.int16),
    ):
        union = np.array(sorted({int(d) for b in blocks for d in getattr(b, days)}), dtype=day_dtype)
        shape = (len(union), h, w, *tail)
        out[stack] = alloc(shape, dtype, stack) if union.size else np.zeros(shape, dtype)
        out[days] = union
        if stack == "bands":
            mshape = (len(union), h, w)
            out["masks"] = alloc(mshape, np.uint8, "masks") if union.size else np.zeros(mshape, np.uint8)
        for b in blocks:
            rel = b.window.relative_to(window)
            rows, cols = rel.slices()
            idx = np.searchsorted(union, getattr(b, days))
            for j, t in enumerate(idx):
                out[stack][t, rows, cols] = getattr(b, stack)[j]
                if stack == "bands":
                    out["masks"][t, rows, cols] = b.masks[j]
    return out


def _write_meta(
    directory: Path, zone: int, window: Window, masks: np.ndarray, skipped: Sequence[str], unknown: Sequence[str]
) -> None:
    """``cube.json`` (grid and counters) and ``grid.tif``: the number of clear dates per pixel (uint8, capped)."""
    from tessera_ray.sources.geotiff import geotiff_bytes

    grid = zone_grid(zone)
    (directory / META_FILE).write_text(
        json.dumps(
            {
                "zone": zone,
                "crs": grid.crs,
                "window": [window.row, window.col, window.height, window.width],
                "transform": list(grid.window_transform(window))[:6],
                "skipped_scenes": list(skipped),
                "unknown_orbit": list(unknown),
            },
            indent=1,
        )
    )
    clear = np.zeros(window.shape, np.int64)
    for t in range(masks.shape[0]):
        clear += masks[t]
    band = np.minimum(clear, 255).astype(np.uint8)
    (directory / GRID_FILE).write_bytes(geotiff_bytes(band, grid.window_transform(window), grid.crs))
