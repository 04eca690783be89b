"""Which work units hold land: a plan never sends open sea to the readers.

The land is two coastline data sets shipped inside a PyPI package that works
offline, ``roaring-landmask``: OpenStreetMap's land polygons and GSHHG's
full-resolution shoreline. By default a unit holds land when either says so
(``osm+gshhg``): each has islands, reefs and shores the other lacks or puts
kilometres away (``docs/scale.md`` measures them against each other and
against ``global-land-mask``). The test is exact geometry, not sampling: a
unit holds land when its outline, grown by :data:`COAST_MARGIN_M` on every
side and clipped to its zone's strip (grown the same), meets a land polygon.
So a unit is dropped only when no land of the masks lies within the margin
of it, however small the island; the margin absorbs where a coastline is off
from the real one. Lakes lie inside the land polygons, so their units run.

Inside a unit nothing changes: the sea pixels of a coastal unit are what the
encoder and the scene masks make of them.

``"all"`` counts every unit as land (a synthetic world, or a job that wants
the sea too). Units are tested in a zone's strip because the neighbouring
zone's units cover the land beyond it (``grid.units_for_roi`` plans a unit of
zone Z only for the part of the ROI in Z's strip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np
import shapely

from tessera_ray.errors import UserInputError
from tessera_ray.grid import RESOLUTION, WGS84, ZONE_X0, ZONE_Y0, Unit, transform_points, zone_lon_bounds

LAND_MASKS = ("osm+gshhg", "osm", "gshhg", "all")
DEFAULT_LAND_MASK = "osm+gshhg"
DRAWN_MASK = "osm"
"""The coastline maps are drawn over (``tessera_ray.coverage``)."""
COAST_MARGIN_M = 2000.0
"""Grow each unit by this much before the test (measured in docs/scale.md: the masks' coastlines
disagree by more than 1 km at well under 0.1 % of coastal points)."""
EDGE_POINTS = 16
"""Points per edge of a unit's outline in lon/lat: the chord error of a 41 km edge is under a metre."""


@lru_cache(maxsize=8)
def _grown_strip(half_width: float, margin_m: float) -> shapely.Polygon:
    """A zone strip centred on 0 longitude, grown by ``margin_m`` east and west at every latitude."""
    lat = np.linspace(-89.0, 89.0, 357)
    # a metre of longitude at each latitude, taken at the pole-ward end of each half-degree step
    slack = margin_m / (111_320.0 * np.cos(np.radians(np.minimum(np.abs(lat) + 0.5, 89.0))))
    east = np.column_stack([half_width + slack, lat])
    west = np.column_stack([-half_width - slack, lat])[::-1]
    return shapely.Polygon(np.concatenate([[(half_width + slack[0], -90.0)], east, [(half_width + slack[-1], 90.0),
                                                                                     (-half_width - slack[-1], 90.0)],
                                           west, [(-half_width - slack[0], -90.0)]]))


def check_land_mask(name: str) -> str:
    if name not in LAND_MASKS:
        raise UserInputError(f"--land must be one of {', '.join(LAND_MASKS)}, got {name!r}")
    return name


@dataclass(frozen=True)
class LandPolygons:
    """A mask's land polygons with a spatial index (built once per process)."""

    name: str
    version: str
    polygons: np.ndarray
    tree: shapely.STRtree


@lru_cache(maxsize=2)
def land_polygons(name: str) -> LandPolygons:
    """The polygons of ``roaring-landmask``'s provider ``name`` (a few seconds, ~600 MB, once per process)."""
    from importlib.metadata import version

    import roaring_landmask

    provider = {"osm": roaring_landmask.LandmaskProvider.Osm, "gshhg": roaring_landmask.LandmaskProvider.Gshhg}[name]
    parts = shapely.get_parts(shapely.from_wkb(roaring_landmask.Shapes.wkb(provider)))
    shapely.prepare(parts)
    return LandPolygons(name, version("roaring-landmask"), parts, shapely.STRtree(parts))


def release_land_polygons() -> None:
    """Drop the loaded masks and give their memory back to the system.

    The embed driver calls it once the plan is made: the polygons are ~1.2 GB
    (both masks), and a driver holds a job for hours. Measured on the British
    Isles' plan: RSS 1,405 MB after planning, 1,025 MB with the cache cleared,
    156 MB after ``malloc_trim``.
    """
    import gc

    from tessera_ray.memory import release_freed_memory

    land_polygons.cache_clear()
    gc.collect()
    release_freed_memory()


def mask_label(name: str) -> str:
    """What a report says about the mask: its name and the package version that holds it."""
    if name == "all":
        return "all (every unit counts as land)"
    from importlib.metadata import version

    return (f"{name} (roaring-landmask {version('roaring-landmask')}: land of {' or '.join(name.split('+'))} "
            f"within {COAST_MARGIN_M:,.0f} m of a unit)")


def unit_outlines(units: Sequence[Unit], margin_m: float = COAST_MARGIN_M) -> np.ndarray:
    """Each unit's outline in lon/lat, grown by ``margin_m`` and clipped to its zone strip (grown alike).

    Outlines that reach past the antimeridian come back split at it, as the
    land polygons are.
    """
    out = np.empty(len(units), dtype=object)
    for where, zone in _by_zone(units):
        out[where] = _zone_outlines([units[i] for i in where], zone, margin_m)
    return out


def _by_zone(units: Sequence[Unit]):
    zones = np.array([u.zone for u in units], dtype=np.int16)
    for zone in np.unique(zones):
        yield np.flatnonzero(zones == zone), int(zone)


def _zone_outlines(units: Sequence[Unit], zone: int, margin_m: float) -> np.ndarray:
    windows = [u.window for u in units]
    row0 = np.array([w.row for w in windows], dtype=np.float64)
    col0 = np.array([w.col for w in windows], dtype=np.float64)
    height = np.array([w.height for w in windows], dtype=np.float64)
    width = np.array([w.width for w in windows], dtype=np.float64)
    xmin = ZONE_X0 + col0 * RESOLUTION - margin_m
    xmax = ZONE_X0 + (col0 + width) * RESOLUTION + margin_m
    ymax = ZONE_Y0 - row0 * RESOLUTION + margin_m
    ymin = ZONE_Y0 - (row0 + height) * RESOLUTION - margin_m
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    # along the ring: north edge west->east, east edge north->south, south edge east->west, west edge south->north
    fx = np.concatenate([t, np.ones_like(t), 1 - t, np.zeros_like(t)])
    fy = np.concatenate([np.ones_like(t), 1 - t, np.zeros_like(t), t])
    xs = xmin[:, None] + fx[None] * (xmax - xmin)[:, None]
    ys = ymin[:, None] + fy[None] * (ymax - ymin)[:, None]
    lon, lat = transform_points(xs.ravel(), ys.ravel(), f"EPSG:{32600 + zone}", WGS84)
    west, east = zone_lon_bounds(zone)
    centre = (west + east) / 2
    # longitudes relative to the zone's central meridian are continuous over a unit
    rel = (lon.reshape(xs.shape) - centre + 540.0) % 360.0 - 180.0
    ring = np.stack([rel, lat.reshape(xs.shape)], axis=-1)
    ring = np.concatenate([ring, ring[:, :1]], axis=1)
    clipped = shapely.intersection(shapely.polygons(ring), _grown_strip((east - west) / 2, margin_m))
    clipped = cast(np.ndarray, shapely.transform(clipped, lambda c: c + np.array([centre, 0.0])))
    return _wrap_antimeridian(clipped)


def _wrap_antimeridian(geoms: np.ndarray) -> np.ndarray:
    bounds = shapely.bounds(geoms)
    past = (bounds[:, 0] < -180.0) | (bounds[:, 2] > 180.0)
    if not past.any():
        return geoms
    sub = geoms[past]
    inside = shapely.intersection(sub, shapely.box(-180.0, -90.0, 180.0, 90.0))
    east = shapely.transform(shapely.intersection(sub, shapely.box(180.0, -90.0, 540.0, 90.0)),
                             lambda c: c - np.array([360.0, 0.0]))
    west = shapely.transform(shapely.intersection(sub, shapely.box(-540.0, -90.0, -180.0, 90.0)),
                             lambda c: c + np.array([360.0, 0.0]))
    out = geoms.copy()
    out[past] = shapely.union(shapely.union(inside, east), west)
    return out


def units_with_land(units: Sequence[Unit], mask: str = DEFAULT_LAND_MASK,
                    margin_m: float = COAST_MARGIN_M) -> np.ndarray:
    """A boolean per unit: does its grown outline meet the mask's land? (All true for ``"all"``.)"""
    check_land_mask(mask)
    if mask == "all" or not len(units):
        return np.ones(len(units), dtype=bool)
    masks = [land_polygons(name) for name in mask.split("+")]
    found = np.zeros(len(units), dtype=bool)
    for where, zone in _by_zone(units):  # a zone at a time: a planet's outlines at once take gigabytes
        outlines = _zone_outlines([units[i] for i in where], zone, margin_m)
        for land in masks:
            query, hits = land.tree.query(outlines)
            # the land polygons are prepared: intersects with one of them first is the fast direction
            meets = shapely.intersects(land.polygons[hits], outlines[query])
            found[where[np.unique(query[meets])]] = True
    return found
