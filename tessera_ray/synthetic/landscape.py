"""The synthetic land surface: parcels, land-cover classes and their signals.

Everything here is a pure function of a location (lon/lat, through a local
metric frame anchored at the world's centre) and a seed, so the same ground
point has the same class and texture whichever tile, zone or resolution looks
at it. Randomness that must not depend on array shapes comes from a counter
hash (splitmix64) of integer keys, never from a stateful RNG.

Land cover is a Voronoi tessellation of jittered lattice points: field-like
polygons of roughly ``spacing`` metres, one class per parcel, with per-parcel
variation of phenology (sowing dates weeks apart), vigour, mowing dates and
soil brightness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class LandCoverClass:
    """One land-cover class of the synthetic world (``id`` is what rasters and labels hold)."""

    id: int
    name: str
    weight: float  # share of parcels


CLASSES: tuple[LandCoverClass, ...] = (
    LandCoverClass(1, "winter_cereal", 0.12),
    LandCoverClass(2, "maize", 0.11),
    LandCoverClass(3, "deciduous_forest", 0.12),
    LandCoverClass(4, "evergreen_forest", 0.11),
    LandCoverClass(5, "grassland", 0.14),
    LandCoverClass(6, "water", 0.08),
    LandCoverClass(7, "built_up", 0.10),
    LandCoverClass(8, "oilseed_rape", 0.11),
    LandCoverClass(9, "sugar_beet", 0.11),
)
WATER = 6
BUILT_UP = 7
OUTSIDE = 255  # land-cover value where a location cannot be evaluated

# Sentinel-2 bands in the model's order (TESSERA.md section 2), as Earth Search asset keys.
S2_BANDS = ("red", "blue", "green", "nir", "nir08", "rededge1", "rededge2", "rededge3", "swir16", "swir22")
S2_BAND_IDS = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
S2_10M = ("red", "blue", "green", "nir")

# Endmember reflectances, model band order.
_SOIL = np.array([0.20, 0.12, 0.15, 0.27, 0.29, 0.22, 0.24, 0.26, 0.34, 0.29])
_DARK_SOIL = np.array([0.08, 0.05, 0.07, 0.15, 0.16, 0.10, 0.12, 0.14, 0.18, 0.13])
_LEAF = np.array([0.035, 0.025, 0.065, 0.46, 0.48, 0.10, 0.31, 0.41, 0.21, 0.10])
_NEEDLE = np.array([0.025, 0.018, 0.045, 0.28, 0.29, 0.06, 0.19, 0.25, 0.13, 0.06])
_WATER = np.array([0.030, 0.050, 0.060, 0.016, 0.012, 0.022, 0.016, 0.013, 0.006, 0.004])
_URBAN = np.array([0.17, 0.14, 0.16, 0.21, 0.22, 0.18, 0.19, 0.20, 0.24, 0.22])

# Vegetation fraction through the year: (day of year, fraction) knots per class.
_PHENOLOGY: dict[int, tuple[tuple[int, float], ...]] = {
    1: ((1, 0.35), (60, 0.45), (100, 0.75), (140, 0.92), (175, 0.70), (200, 0.10), (270, 0.05), (300, 0.20),
        (335, 0.30)),
    2: ((1, 0.05), (120, 0.05), (150, 0.15), (180, 0.60), (215, 0.92), (250, 0.80), (275, 0.40), (290, 0.10)),
    3: ((1, 0.25), (100, 0.28), (135, 0.88), (250, 0.88), (290, 0.55), (320, 0.25)),
    4: ((1, 0.75), (150, 0.88), (250, 0.88), (330, 0.76)),
    5: ((1, 0.50), (80, 0.58), (130, 0.88), (240, 0.85), (300, 0.70), (366, 0.50)),  # before mowing
    6: ((1, 0.0), (366, 0.0)),
    7: ((1, 0.45), (366, 0.45)),  # gardens and verges; the parcel's vigour sets how much of the block they cover
    # oilseed rape grows like a winter cereal (its yellow flowering is what tells it apart, see ``flowering``)
    8: ((1, 0.35), (60, 0.45), (100, 0.75), (140, 0.92), (175, 0.70), (200, 0.10), (270, 0.05), (300, 0.20),
        (335, 0.30)),
    # sugar beet: canopy closes later than cereals, stays green until lifted in late autumn
    9: ((1, 0.05), (105, 0.05), (135, 0.15), (165, 0.75), (200, 0.92), (290, 0.85), (315, 0.15), (330, 0.05)),
}

# Sentinel-1 gamma0 in dB: (VV at no vegetation, VV gain per vegetation fraction, VH, VH gain).
_BACKSCATTER: dict[int, tuple[float, float, float, float]] = {
    1: (-14.0, 5.0, -22.0, 7.0),
    2: (-15.0, 6.0, -23.0, 8.0),
    3: (-9.5, 1.5, -16.0, 3.0),
    4: (-8.0, 0.5, -14.0, 1.0),
    5: (-13.0, 3.0, -20.5, 5.0),
    6: (-21.0, 0.0, -27.0, 0.0),
    7: (-4.0, 0.0, -11.0, 0.0),
    8: (-14.0, 5.5, -21.5, 7.5),
    9: (-14.5, 6.0, -22.5, 8.0),
}


# --------------------------------------------------------------------------- hashing

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _M64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
    return x ^ (x >> np.uint64(31))


def hash_keys(*keys) -> np.ndarray:
    """A 64-bit hash of integer keys (scalars or arrays, broadcast), stable across runs."""
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast_shapes(*(np.shape(k) for k in keys)), dtype=np.uint64)
        for k in keys:
            k = np.asarray(k, dtype=np.int64).view(np.uint64)
            h = _splitmix(h ^ k)
    return h


def unit_uniform(h: np.ndarray) -> np.ndarray:
    """Map 64-bit hashes to floats in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


# tags keeping independent hash streams apart
TAG_PARCEL_X, TAG_PARCEL_Y, TAG_CLASS, TAG_SHIFT, TAG_VIGOUR, TAG_BRIGHT, TAG_TEXTURE, TAG_DATE = range(11, 19)


# --------------------------------------------------------------------------- local frame


@dataclass(frozen=True)
class LocalFrame:
    """An equirectangular metric frame around (lon0, lat0): the space parcels and clouds live in."""

    lon0: float
    lat0: float

    @property
    def mx(self) -> float:
        return 111_320.0 * math.cos(math.radians(self.lat0))

    @property
    def my(self) -> float:
        return 110_574.0

    def to_local(self, lon, lat) -> tuple[np.ndarray, np.ndarray]:
        return (np.asarray(lon) - self.lon0) * self.mx, (np.asarray(lat) - self.lat0) * self.my

    def to_lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(x) / self.mx + self.lon0, np.asarray(y) / self.my + self.lat0


# --------------------------------------------------------------------------- parcels


@dataclass(frozen=True)
class Parcels:
    """Per-point parcel lookup: parcel hash, class id and distance to the parcel's edge (m)."""

    parcel: np.ndarray  # uint64
    class_id: np.ndarray  # uint8
    edge_distance: np.ndarray  # float64


def parcels_at(x: np.ndarray, y: np.ndarray, seed: int, spacing: float) -> Parcels:
    """Which parcel each local-frame point falls in (nearest jittered lattice point)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = np.where(finite, x, 0.0), np.where(finite, y, 0.0)
    ci = np.floor(x / spacing).astype(np.int64)
    cj = np.floor(y / spacing).astype(np.int64)
    offsets = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)]
    d2 = np.empty((9, x.size))
    sx = np.empty((9, x.size))
    sy = np.empty((9, x.size))
    ids = np.empty((9, x.size), dtype=np.uint64)
    for k, (di, dj) in enumerate(offsets):
        ii, jj = ci + di, cj + dj
        sx[k] = (ii + 0.15 + 0.7 * unit_uniform(hash_keys(seed, TAG_PARCEL_X, ii, jj))) * spacing
        sy[k] = (jj + 0.15 + 0.7 * unit_uniform(hash_keys(seed, TAG_PARCEL_Y, ii, jj))) * spacing
        ids[k] = hash_keys(seed, ii, jj)
        d2[k] = (x - sx[k]) ** 2 + (y - sy[k]) ** 2
    order = np.argsort(d2, axis=0, kind="stable")[:2]
    cols = np.arange(x.size)
    first, second = order[0], order[1]
    sep = np.hypot(sx[second, cols] - sx[first, cols], sy[second, cols] - sy[first, cols])
    edge = (d2[second, cols] - d2[first, cols]) / (2.0 * np.maximum(sep, 1e-9))
    parcel = ids[first, cols]
    class_id = class_of_parcel(parcel, seed)
    class_id = np.where(finite, class_id, OUTSIDE).astype(np.uint8)
    return Parcels(parcel, class_id, np.where(finite, edge, 0.0))


def class_of_parcel(parcel: np.ndarray, seed: int) -> np.ndarray:
    weights = np.array([c.weight for c in CLASSES])
    edges = np.cumsum(weights / weights.sum())
    u = unit_uniform(hash_keys(seed, TAG_CLASS, parcel.view(np.int64)))
    idx = np.minimum(np.searchsorted(edges, u, side="right"), len(CLASSES) - 1)
    return np.array([c.id for c in CLASSES], dtype=np.uint8)[idx]


def texture_at(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Within-field multiplicative texture (about +-4%), white noise on 10 m cells of the local frame."""
    qx = np.floor(np.asarray(x) / 10.0).astype(np.int64)
    qy = np.floor(np.asarray(y) / 10.0).astype(np.int64)
    return 1.0 + 0.08 * (unit_uniform(hash_keys(seed, TAG_TEXTURE, qx, qy)) - 0.5)


# --------------------------------------------------------------------------- signals
#
# Each parcel is managed on its own: its season is shifted (sowing or leaf-out
# date), its canopy is more or less vigorous, its soil lighter or darker;
# meadows are mown once to three times on their own dates, built-up blocks
# hold more or less garden. A class is a family of curves, not one curve, and
# some classes differ only briefly (rape from cereals while it flowers): what
# makes scarce labels hard and representations matter.

TAG_CUT = 19

# half-range of the per-parcel season shift, in days, per class
_SHIFT_DAYS = {1: 25.0, 2: 25.0, 3: 10.0, 4: 5.0, 5: 12.0, 8: 25.0, 9: 25.0}
# per-parcel vigour range (multiplies the vegetation fraction), per class
_VIGOUR = {1: (0.6, 1.1), 2: (0.6, 1.1), 3: (0.8, 1.05), 4: (0.8, 1.05), 5: (0.6, 1.1), 7: (0.2, 1.0),
           8: (0.6, 1.1), 9: (0.6, 1.1)}
_FLOWER = np.array([0.07, -0.005, 0.06, 0.02, 0.02, 0.06, 0.03, 0.02, 0.03, 0.02])  # yellow petals over the canopy
_MOWN, _RAPE = 5, 8  # the class mown on its own dates, the class that flowers yellow


def _per_parcel(seed: int, tag: int, parcel: np.ndarray, k: int = 0) -> np.ndarray:
    """A uniform draw in [0, 1) per parcel (and per ``k`` for several draws of one kind)."""
    return unit_uniform(hash_keys(seed, tag, parcel.view(np.int64), k))


def _season_shift(class_id: np.ndarray, parcel: np.ndarray, seed: int) -> np.ndarray:
    span = np.array([_SHIFT_DAYS.get(c, 0.0) for c in range(256)])[class_id]
    return 2.0 * span * (unit_uniform(hash_keys(seed, TAG_SHIFT, parcel.view(np.int64))) - 0.5)


def _mowing(parcel: np.ndarray, doy: np.ndarray, seed: int) -> np.ndarray:
    """Canopy left by one to three cuts a year (each on the parcel's own date), regrowing over 35 days."""
    cuts = 1 + np.floor(3.0 * _per_parcel(seed, TAG_CUT, parcel)).astype(int)
    factor = np.ones(parcel.shape)
    for k in range(3):
        day = 135.0 + 55.0 * k + 30.0 * _per_parcel(seed, TAG_CUT, parcel, k + 1)
        since = doy - day
        regrow = np.where((since >= 0) & (since < 35.0), 0.3 + 0.7 * since / 35.0, 1.0)
        factor = np.where(k < cuts, np.minimum(factor, regrow), factor)
    return factor


def vegetation_fraction(class_id: np.ndarray, parcel: np.ndarray, doy: int, seed: int) -> np.ndarray:
    """Vegetation fraction per parcel on a day of year (the parcel's season, vigour and mowing)."""
    class_id = np.asarray(class_id)
    day = doy - _season_shift(class_id, parcel, seed)
    lo, hi = (np.array([_VIGOUR.get(c, (1.0, 1.0))[i] for c in range(256)])[class_id] for i in (0, 1))
    vigour = lo + (hi - lo) * unit_uniform(hash_keys(seed, TAG_VIGOUR, parcel.view(np.int64)))
    out = np.zeros(class_id.shape)
    for cid, knots in _PHENOLOGY.items():
        sel = class_id == cid
        if sel.any():
            days, values = np.array(knots, dtype=np.float64).T
            out[sel] = np.interp(day[sel], days, values, period=366.0)
    mown = class_id == _MOWN
    out[mown] *= _mowing(parcel[mown], day[mown], seed)
    return np.clip(out * vigour, 0.0, 1.0)


def flowering(class_id: np.ndarray, parcel: np.ndarray, doy: int, seed: int) -> np.ndarray:
    """How yellow a parcel is with flowers (0..1): oilseed rape, about three weeks in spring."""
    class_id = np.asarray(class_id)
    day = doy - _season_shift(class_id, parcel, seed)
    return np.where(class_id == _RAPE, np.exp(-0.5 * ((day - 118.0) / 9.0) ** 2), 0.0)


def reflectance(class_id: np.ndarray, parcel: np.ndarray, doy: int, seed: int) -> np.ndarray:
    """Surface reflectance (n, 10) per parcel on a day of year, model band order."""
    class_id = np.asarray(class_id)
    v = vegetation_fraction(class_id, parcel, doy, seed)[:, None]
    bright = 0.7 + 0.6 * unit_uniform(hash_keys(seed, TAG_BRIGHT, parcel.view(np.int64)))[:, None]
    out = (1.0 - v) * _SOIL * bright + v * _LEAF
    out += flowering(class_id, parcel, doy, seed)[:, None] * _FLOWER
    forest = class_id == 4
    out[forest] = ((1.0 - v) * _DARK_SOIL * bright + v * _NEEDLE)[forest]
    deciduous = class_id == 3
    out[deciduous] = ((1.0 - v) * _DARK_SOIL * bright * 1.3 + v * _LEAF)[deciduous]
    water = class_id == WATER
    out[water] = _WATER * bright[water]
    built = class_id == BUILT_UP
    out[built] = ((1.0 - v) * _URBAN * bright + v * _LEAF)[built]
    out[class_id == OUTSIDE] = 0.0
    return out


def backscatter_db(class_id: np.ndarray, parcel: np.ndarray, doy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sentinel-1 gamma0 (VV, VH) in dB per parcel on a day of year."""
    class_id = np.asarray(class_id)
    v = vegetation_fraction(class_id, parcel, doy, seed)
    offset = 2.0 * (unit_uniform(hash_keys(seed, TAG_BRIGHT, parcel.view(np.int64))) - 0.5)
    table = np.array([_BACKSCATTER.get(int(c), (-30.0, 0.0, -35.0, 0.0)) for c in range(256)])
    p = table[class_id]
    vv = p[:, 0] + p[:, 1] * v + offset
    vh = p[:, 2] + p[:, 3] * v + offset
    return vv, vh
