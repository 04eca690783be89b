"""One raster of a bbox on any CRS from the zone grids it touches: the plan, then rendering block by block.

A plan fixes the output grid and the zone windows that fill it without
reading anything; rendering a block of it reads only the zone windows under
that block, so a mosaic and a streamed export (:mod:`tessera_ray.client.export`)
draw the same pixels. In a zone's CRS at 10 m the output is that zone's grid
and its pixels pass through as stored; other zones' pixels are resampled
nearest-neighbour, pixel by pixel (exact per pixel, unlike GDAL's
approximate warper, so blocks and one mosaic agree).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from affine import Affine

from tessera_ray.client.metadata import RootMetadata
from tessera_ray.codes import dequantise
from tessera_ray.errors import UserInputError
from tessera_ray.grid import (
    RESOLUTION,
    WGS84,
    ZONE_X0,
    ZONE_Y0,
    Window,
    roi_from_bbox,
    roi_window,
    transform_points,
    utm_zone,
    zone_grid,
)

BBox = tuple[float, float, float, float]
ReadWindow = Callable[[int, Window, int, int | None], tuple[np.ndarray, np.ndarray]]
"""``read_window(zone, window, year, depth) -> (int8 codes, scales)``: how a plan's pixels are read."""


@dataclass(frozen=True)
class MosaicPlan:
    """An output grid and the zone windows that fill it (see :func:`plan_mosaic`)."""

    crs: str
    transform: Affine
    height: int
    width: int
    bands: int
    year: int
    depth: int | None
    zone: int | None
    """The zone whose grid the output is on (its pixels pass through as stored), if any."""
    origin: Window | None
    """The output grid as a window of that zone's grid."""
    parts: list[tuple[int, Window]]
    """(zone, window): the bbox's part on each zone grid it touches."""

    @property
    def size(self) -> int:
        return self.height * self.width


def plan_mosaic(meta: RootMetadata, bbox: BBox, year: int, crs: str | None = None, resolution: float | None = None,
                depth: int | None = None) -> MosaicPlan:
    """The output grid of a bbox in ``crs`` and the zone windows it draws from (nothing read yet).

    ``crs`` defaults to the UTM zone of the bbox centre; in a CRS that is not
    a zone's at 10 m the stored pixel size is kept unless ``resolution`` says otherwise.
    """
    from rasterio.warp import transform_bounds

    meta.year_index(year)
    _, bands = meta.depth_array(depth)
    roi = roi_from_bbox(*bbox)
    parts = [(zone, w) for zone in roi.zones() if (w := roi_window(roi, zone)) is not None]
    if not parts:
        raise UserInputError(f"bbox {bbox} does not touch any zone grid")
    west, south, east, north = bbox
    crs = crs or zone_grid(utm_zone((west + east) / 2 if west <= east else east)).crs
    zone_of_crs = {zone_grid(z).crs: z for z in range(1, 61)}.get(crs)
    native = resolution in (None, 10.0)
    if len(parts) == 1 and zone_grid(parts[0][0]).crs == crs and native:
        zone, window = parts[0]
        return MosaicPlan(crs, zone_grid(zone).window_transform(window), window.height, window.width,
                          bands, year, depth, zone, window, parts)
    if zone_of_crs is not None and native:
        # a zone CRS: snap to that zone's grid, so its own pixels pass through untouched
        grid = zone_grid(zone_of_crs)
        snapped = grid.bounds_to_window(*transform_bounds(WGS84, crs, *bbox, densify_pts=21))
        if snapped is None:
            raise UserInputError(f"bbox {bbox} is outside the grid of {crs} (UTM zone {zone_of_crs}); "
                                 "give a CRS whose zone covers it, or none for the zone of its centre")
        return MosaicPlan(crs, grid.window_transform(snapped), snapped.height, snapped.width,
                          bands, year, depth, zone_of_crs, snapped, parts)
    transform, width, height = _target_grid(parts, bbox, crs, resolution)
    return MosaicPlan(crs, transform, height, width, bands, year, depth, None, None, parts)


def render(plan: MosaicPlan, block: Window, read_window: ReadWindow) -> np.ndarray:
    """The (h, w, bands) float32 pixels of ``block``, a window of the plan's output grid.

    Reads only the zone windows under the block: the output zone's own pixels are
    copied as stored, other zones' are reprojected (nearest) into what is still NaN.
    """
    out = np.full((block.height, block.width, plan.bands), np.nan, "float32")
    empty = np.ones(block.shape, bool)
    for zone, part in sorted(plan.parts, key=lambda zp: zp[0] != plan.zone):
        grid = zone_grid(zone)
        if zone == plan.zone:  # the output grid is this zone's grid: no resampling
            assert plan.origin is not None
            on_grid = Window(plan.origin.row + block.row, plan.origin.col + block.col, block.height, block.width)
            src = on_grid.intersection(part)
            if src is None:
                continue
            q, s = read_window(zone, src, plan.year, plan.depth)
            dst = src.relative_to(on_grid)
            out[dst.slices()] = dequantise(q, s)
            empty = np.isnan(out).all(axis=-1)  # no data there may still come from a neighbour zone
            continue
        if not empty.any():
            break
        # nearest neighbour, pixel by pixel: the stored pixel under each output pixel's centre
        rows, cols = np.nonzero(empty)
        to_crs = plan.transform @ Affine.translation(block.col, block.row)
        xs = to_crs.a * (cols + 0.5) + to_crs.b * (rows + 0.5) + to_crs.c  # affine's stubs type @ for scalars only
        ys = to_crs.d * (cols + 0.5) + to_crs.e * (rows + 0.5) + to_crs.f
        zx, zy = transform_points(xs, ys, plan.crs, grid.crs)
        with np.errstate(invalid="ignore"):
            src_r = np.floor((ZONE_Y0 - zy) / RESOLUTION)
            src_c = np.floor((zx - ZONE_X0) / RESOLUTION)
        inside = ((src_r >= part.row) & (src_r < part.row + part.height)
                  & (src_c >= part.col) & (src_c < part.col + part.width))
        if not inside.any():
            continue
        rows, cols = rows[inside], cols[inside]
        src_r, src_c = src_r[inside].astype("int64"), src_c[inside].astype("int64")
        need = Window(int(src_r.min()), int(src_c.min()), int(src_r.max() - src_r.min()) + 1,
                      int(src_c.max() - src_c.min()) + 1)
        q, s = read_window(zone, need, plan.year, plan.depth)
        values = dequantise(q[src_r - need.row, src_c - need.col], s[src_r - need.row, src_c - need.col])
        got = ~np.isnan(values).all(axis=-1)
        out[rows[got], cols[got]] = values[got]
        empty[rows[got], cols[got]] = False
    return out


def _target_grid(parts: list[tuple[int, Window]], bbox: BBox, crs: str,
                 resolution: float | None) -> tuple[Affine, int, int]:
    """Transform and size covering ``bbox`` in ``crs``; by default the stored pixel size."""
    from rasterio.warp import calculate_default_transform

    west, south, east, north = bbox
    res: float | tuple[float, float] | None = resolution
    if res is None:  # keep the stored pixel size, as seen in the target CRS
        zone, window = max(parts, key=lambda p: p[1].size)
        grid = zone_grid(zone)
        t = grid.window_transform(window)
        left, top = t.c, t.f
        right, bottom = t.c + t.a * window.width, t.f + t.e * window.height
        native, _, _ = calculate_default_transform(
            grid.crs, crs, window.width, window.height, left=left, bottom=bottom, right=right, top=top
        )
        res = (abs(native.a), abs(native.e))
    return calculate_default_transform(
        WGS84, crs, 1000, 1000, left=west, bottom=south, right=east, top=north, resolution=res
    )
