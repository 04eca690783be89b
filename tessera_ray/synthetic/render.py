"""Rendering scenes: the pixel values of every asset, as pure functions of (spec, scene).

The COG writer and the truth functions both call these, so what a correct
reader gets from a file is, by construction, what the truth says.

Sentinel-2: surface reflectance per parcel and date (phenology), times a
per-pixel texture, then the atmosphere of the date: clouds and cirrus from
smooth value noise in the local frame (the same clouds for every tile on that
date; about two dates in three cloudy, as over England), cloud shadows as a
displaced copy of the clouds, haze. Cloud, shadow and swath state are decided
per 20 m pixel (the SCL's grid) and the 10 m bands inherit them. Like the real
scene classification, the SCL misses the thin veil at cloud edges and the
penumbra beside shadows: those pixels stay valid with altered values.

Sentinel-1: gamma0 per parcel and date in dB, to linear, times gamma
distributed speckle from the scene's own RNG, NaN outside the burst.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely

from tessera_ray.grid import transform_points
from tessera_ray.synthetic.landscape import (
    BUILT_UP,
    S2_10M,
    S2_BANDS,
    WATER,
    backscatter_db,
    hash_keys,
    parcels_at,
    reflectance,
    texture_at,
    unit_uniform,
    vegetation_fraction,
)
from tessera_ray.synthetic.scenes import (
    RasterGrid,
    Scene,
    WorldSpec,
    s1_bursts,
    s1_tracks,
    s2_tracks,
)

SCL_NODATA, SCL_SHADOW, SCL_VEGETATION, SCL_NOT_VEGETATED, SCL_WATER = 0, 3, 4, 5, 6
SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS = 8, 9, 10
SCL_INVALID = (0, 1, 2, 3, 8, 9)  # TESSERA.md section 2: everything else is a valid observation

_CLOUD = np.array([0.55, 0.58, 0.56, 0.57, 0.57, 0.56, 0.57, 0.57, 0.45, 0.36])
_HAZE = np.array([1.0, 1.6, 1.3, 0.5, 0.45, 0.9, 0.7, 0.6, 0.2, 0.1])
_TAG_CLOUD, _TAG_CLOUD_FINE, _TAG_CIRRUS, _TAG_SPECKLE, _TAG_LAYOVER = 31, 32, 33, 34, 35


# --------------------------------------------------------------------------- ground


@dataclass(frozen=True)
class Ground:
    """Pixel centres of one grid in the local frame and the land under them (flat arrays)."""

    x: np.ndarray
    y: np.ndarray
    parcels: np.ndarray  # unique parcel hashes
    classes: np.ndarray  # class per unique parcel
    index: np.ndarray  # per pixel: index into parcels
    texture: np.ndarray

    @property
    def class_id(self) -> np.ndarray:
        return self.classes[self.index]


def pixel_centres(transform, shape) -> tuple[np.ndarray, np.ndarray]:
    """Projected coordinates of all pixel centres of a grid, row-major, flat."""
    a, b, c, d, e, f = tuple(transform)[:6]
    rows, cols = np.indices(shape, dtype=np.float64).reshape(2, -1)
    return c + a * (cols + 0.5) + b * (rows + 0.5), f + d * (cols + 0.5) + e * (rows + 0.5)


def ground_at(spec: WorldSpec, x: np.ndarray, y: np.ndarray, crs: str) -> Ground:
    lon, lat = transform_points(x, y, crs, "EPSG:4326")
    lx, ly = spec.frame.to_local(lon, lat)
    p = parcels_at(lx, ly, spec.seed, spec.parcel_m)
    uniq, first, index = np.unique(p.parcel, return_index=True, return_inverse=True)
    return Ground(lx, ly, uniq, p.class_id[first], index.ravel(), texture_at(lx, ly, spec.seed))


@lru_cache(maxsize=8)
def grid_ground(spec: WorldSpec, epsg: int, grid: RasterGrid) -> Ground:
    x, y = pixel_centres(grid.transform, grid.shape)
    return ground_at(spec, x, y, f"EPSG:{epsg}")


# --------------------------------------------------------------------------- atmosphere


def value_noise(x: np.ndarray, y: np.ndarray, cell: float, *key: int) -> np.ndarray:
    """Smooth noise in [0, 1): hashed lattice values, smoothstep-interpolated (pure per point)."""
    gx, gy = x / cell, y / cell
    i, j = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    if i.size == 0:
        return np.zeros(0)
    fx, fy = gx - i, gy - j
    sx, sy = fx * fx * (3.0 - 2.0 * fx), fy * fy * (3.0 - 2.0 * fy)
    i0, j0 = int(i.min()), int(j.min())
    ii = np.arange(i0, int(i.max()) + 2, dtype=np.int64)[:, None]
    jj = np.arange(j0, int(j.max()) + 2, dtype=np.int64)[None, :]
    table = unit_uniform(hash_keys(*key, ii, jj))
    r, c = i - i0, j - j0
    v00, v10, v01, v11 = table[r, c], table[r + 1, c], table[r, c + 1], table[r + 1, c + 1]
    return v00 + (v10 - v00) * sx + (v01 - v00) * sy + (v00 - v10 - v01 + v11) * sx * sy


@dataclass(frozen=True)
class Sky:
    """The atmosphere of one date over the whole world (same for every tile)."""

    ordinal: int
    threshold: float  # cloud where the cloud noise exceeds this
    cirrus_threshold: float
    shadow_shift: tuple[float, float]  # metres, local frame
    haze: float  # additive reflectance in red

    def cloudiness(self, spec: WorldSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = spec.cloud_radius_m
        coarse = value_noise(x, y, 2.0 * r, spec.seed, _TAG_CLOUD, self.ordinal)
        fine = value_noise(x, y, 0.8 * r, spec.seed, _TAG_CLOUD_FINE, self.ordinal)
        return 0.7 * coarse + 0.3 * fine

    def cirrus(self, spec: WorldSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return value_noise(x, y, 5.0 * spec.cloud_radius_m, spec.seed, _TAG_CIRRUS, self.ordinal)


# Chances of an overcast and a clear date (winter shifts both by up to 0.1),
# the strongest haze (red reflectance), and how far below the cloud threshold
# the unflagged veil and penumbra reach (in units of the cloud noise).
P_OVERCAST, P_CLEAR, HAZE_MAX = 0.35, 0.15, 0.05
THIN_MARGIN, DIM_MARGIN = 0.08, 0.06


@lru_cache(maxsize=512)
def sky(spec: WorldSpec, date: dt.date) -> Sky:
    rng = np.random.default_rng([spec.seed, 301, date.toordinal()])
    regime = rng.uniform()
    winter = math.cos(2 * math.pi * (date.timetuple().tm_yday - 15) / 365.25)  # 1 in January
    p_overcast = P_OVERCAST + 0.1 * winter
    p_clear = P_CLEAR - 0.08 * winter
    if regime < p_overcast:
        threshold = -1.0
    elif regime < p_overcast + p_clear:
        threshold = 2.0
    else:
        threshold = float(rng.uniform(0.42, 0.72))
    cirrus = float(rng.uniform(0.6, 0.9)) if rng.uniform() < 0.35 else 2.0
    angle = math.radians(rng.uniform(-25.0, 25.0))
    dist = rng.uniform(0.3, 0.8) * spec.cloud_radius_m
    haze = float(rng.uniform(0.0, HAZE_MAX))
    return Sky(date.toordinal(), threshold, cirrus, (dist * math.sin(angle), dist * math.cos(angle)), haze)


def atmosphere(spec: WorldSpec, today: Sky, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The state of the sky over each point on one date (boolean arrays).

    ``cloud``/``high``, ``shadow`` and ``cirrus`` are what the SCL reports.
    ``thin`` (a veil just outside a cloud) and ``dim`` (the penumbra beside a
    shadow) are what it misses, as the real scene classification does: they
    stay valid observations with altered values.
    """
    cloudy = today.cloudiness(spec, x, y)
    shade = today.cloudiness(spec, x - today.shadow_shift[0], y - today.shadow_shift[1])
    cloud = cloudy > today.threshold
    shadow = (shade > today.threshold) & ~cloud
    cirrus = (today.cirrus(spec, x, y) > today.cirrus_threshold) & ~cloud & ~shadow
    return {
        "cloud": cloud,
        "high": cloudy > today.threshold + 0.1,
        "shadow": shadow,
        "cirrus": cirrus,
        "thin": (cloudy > today.threshold - THIN_MARGIN) & ~cloud,
        "dim": (shade > today.threshold - DIM_MARGIN) & ~cloud & ~shadow,
    }


def through_atmosphere(surface: np.ndarray, today: Sky, state: dict[str, np.ndarray], band: int) -> np.ndarray:
    """Top-of-canopy reflectance of one band as the sensor sees it through the date's sky."""
    v = surface + today.haze * _HAZE[band]
    v = np.where(state["cirrus"], v + 0.025, v)
    v = np.where(state["dim"], v * 0.7, v)
    v = np.where(state["thin"], 0.8 * v + 0.2 * _CLOUD[band], v)
    v = np.where(state["shadow"], v * 0.35, v)
    v = np.where(state["cloud"], 0.3 * v + 0.7 * _CLOUD[band], v)
    return np.where(state["high"], 0.1 * v + 0.9 * _CLOUD[band], v)


# --------------------------------------------------------------------------- Sentinel-2


@dataclass(frozen=True)
class S2Render:
    """A Sentinel-2 scene's arrays on its own grids (2-D).

    ``bands`` are harmonised DNs (reflectance * 10000, no baseline offset),
    0 where there is no data; 10 m bands on the 10 m grid, the others on the
    20 m grid like ``scl``, ``cloud`` (SCL 8/9), ``shadow`` (SCL 3) and
    ``nodata`` (outside the swath, SCL 0).
    """

    bands: dict[str, np.ndarray]
    scl: np.ndarray
    cloud: np.ndarray
    shadow: np.ndarray
    nodata: np.ndarray

    @property
    def cloud_cover(self) -> float:
        """Percentage of valid pixels with SCL 8, 9 or 10 (what ``eo:cloud_cover`` says)."""
        valid = ~self.nodata
        if not valid.any():
            return 0.0
        cloudy = np.isin(self.scl, (SCL_CLOUD_MEDIUM, SCL_CLOUD_HIGH, SCL_CIRRUS)) & valid
        return round(100.0 * float(cloudy.sum()) / float(valid.sum()), 4)


def swath_mask(spec: WorldSpec, relative_orbit: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where the track's swath images the ground (local-frame coordinates)."""
    track = next(t for t in s2_tracks(spec) if t.relative_orbit == relative_orbit)
    if track.edge is None:
        return np.ones(x.shape, dtype=bool)
    px, py, nx, ny = track.edge
    return (x - px) * nx + (y - py) * ny >= 0.0


@lru_cache(maxsize=16)
def render_s2(spec: WorldSpec, scene: Scene) -> S2Render:
    g10 = grid_ground(spec, scene.epsg, scene.grid(10.0))
    g20 = grid_ground(spec, scene.epsg, scene.grid(20.0))
    shape10, shape20 = scene.grid(10.0).shape, scene.grid(20.0).shape
    doy = scene.doy
    today = sky(spec, scene.date)

    # state of each 20 m pixel
    nodata = ~swath_mask(spec, scene.relative_orbit, g20.x, g20.y)
    state20 = atmosphere(spec, today, g20.x, g20.y)
    veg = vegetation_fraction(g20.classes, g20.parcels, doy, spec.seed)[g20.index]
    cls20 = g20.class_id
    scl = np.where(veg >= 0.35, SCL_VEGETATION, SCL_NOT_VEGETATED).astype(np.uint8)
    scl[cls20 == BUILT_UP] = SCL_NOT_VEGETATED
    scl[cls20 == WATER] = SCL_WATER
    scl[state20["cirrus"]] = SCL_CIRRUS
    scl[state20["shadow"]] = SCL_SHADOW
    scl[state20["cloud"]] = SCL_CLOUD_MEDIUM
    scl[state20["high"]] = SCL_CLOUD_HIGH
    scl[nodata] = SCL_NODATA
    state10 = {k: _upsample(v.reshape(shape20)).ravel() for k, v in state20.items()}
    nodata10 = _upsample(nodata.reshape(shape20)).ravel()
    cloud, shadow = state20["cloud"], state20["shadow"]

    bands = {}
    for ground, state, gone, shape, keys in (
        (g10, state10, nodata10, shape10, [b for b in S2_BANDS if b in S2_10M]),
        (g20, state20, nodata, shape20, [b for b in S2_BANDS if b not in S2_10M]),
    ):
        refl = reflectance(ground.classes, ground.parcels, doy, spec.seed)
        for key in keys:
            k = S2_BANDS.index(key)
            v = through_atmosphere(refl[ground.index, k] * ground.texture, today, state, k)
            dn = np.clip(np.rint(v * 10000.0), 1, 64535).astype(np.uint16)
            dn[gone] = 0
            bands[key] = dn.reshape(shape)
    return S2Render(
        bands=bands,
        scl=scl.reshape(shape20),
        cloud=(cloud & ~nodata).reshape(shape20),
        shadow=(shadow & ~nodata).reshape(shape20),
        nodata=nodata.reshape(shape20),
    )


def _upsample(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)


def s2_coverage(spec: WorldSpec, scene: Scene) -> float:
    """Share of the scene's 20 m pixels inside its track's swath."""
    g20 = grid_ground(spec, scene.epsg, scene.grid(20.0))
    return float(swath_mask(spec, scene.relative_orbit, g20.x, g20.y).mean())


# --------------------------------------------------------------------------- Sentinel-1

SPECKLE_LOOKS = 4.4


@dataclass(frozen=True)
class S1Render:
    """A Sentinel-1 burst scene on its 30 m grid: linear gamma0 (NaN outside) and the mask."""

    vv: np.ndarray
    vh: np.ndarray
    mask: np.ndarray  # 0 valid, 1 shadow, 2 layover, 3 both, 255 fill


def _stable(text: str) -> int:
    return zlib.crc32(text.encode())


@lru_cache(maxsize=16)
def render_s1(spec: WorldSpec, scene: Scene) -> S1Render:
    grid = scene.grids[0]
    ground = grid_ground(spec, scene.epsg, grid)
    burst = _burst(spec, scene)
    inside = shapely.contains_xy(burst.polygon_local(), ground.x, ground.y)
    vv_db, vh_db = backscatter_db(ground.classes, ground.parcels, scene.doy, spec.seed)
    rng = np.random.default_rng([spec.seed, _TAG_SPECKLE, _stable(scene.id)])
    n = ground.x.size
    vv = 10.0 ** (vv_db / 10.0)
    vh = 10.0 ** (vh_db / 10.0)
    speckle = rng.gamma(SPECKLE_LOOKS, 1.0 / SPECKLE_LOOKS, size=(2, n))
    vv_px = (vv[ground.index] * ground.texture * speckle[0]).astype(np.float32)
    vh_px = (vh[ground.index] * ground.texture * speckle[1]).astype(np.float32)
    vv_px[~inside] = np.nan
    vh_px[~inside] = np.nan
    mask = np.where(inside, 0, 255).astype(np.uint8).reshape(grid.shape)
    geo = np.random.default_rng([spec.seed, _TAG_LAYOVER, _stable(burst.burst_id)])
    rows, cols = np.nonzero(mask == 0)
    if rows.size:
        for k in range(int(geo.integers(2, 5))):
            pick = int(geo.integers(0, rows.size))
            r, c = rows[pick], cols[pick]
            patch = mask[r : r + 2, c : c + 3]
            patch[patch != 255] = 1 + k % 3
    return S1Render(vv_px.reshape(grid.shape), vh_px.reshape(grid.shape), mask)


def _burst(spec: WorldSpec, scene: Scene):
    for track in s1_tracks(spec):
        if track.relative_orbit == scene.relative_orbit:
            for burst in s1_bursts(spec, track):
                if burst.burst_id == scene.tile:
                    return burst
    raise KeyError(f"no burst {scene.tile} in this world")

