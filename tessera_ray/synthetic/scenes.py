"""What the synthetic satellites acquire: tiles, bursts, orbits, scenes.

A world is fixed by a :class:`WorldSpec` (bbox, year, seed and the preset's
sizes). From it this module derives, deterministically:

* Sentinel-2 tiles per UTM zone: squares with corners on multiples of 60 m in
  the zone's CRS (like MGRS tiles, so the 10 m and 20 m pixels line up with the
  zone grid of :mod:`tessera_ray.grid`), overlapping their neighbours, and
  reaching past the zone's edge into the next zone's longitudes;
* Sentinel-2 relative orbits (tracks): one covering everything every 5 days,
  one every 10 days whose swath edge (a slanted line) cuts through the area;
* Sentinel-1 tracks, two ascending and two descending, each repeating every
  12 days (6 days apart), each cut into bursts (rotated rectangles);
* the list of :class:`Scene` records: one per tile and acquisition, one per
  burst and acquisition.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import Polygon, box

from tessera_ray.grid import roi_from_bbox, transform_points, utm_zone, zone_lon_bounds
from tessera_ray.synthetic.landscape import S2_10M, S2_BANDS, LocalFrame

S2_COLLECTION = "sentinel-2-c1-l2a"
S1_COLLECTION = "OPERA_L2_RTC-S1_V1"
S2_ASSETS = S2_BANDS + ("scl",)
S1_ASSETS = ("VV", "VH", "mask")
BASELINE_04_DATE = dt.date(2022, 1, 25)  # processing baseline 04.00: BOA_ADD_OFFSET -1000 from here on
ASCENDING, DESCENDING = "ASCENDING", "DESCENDING"


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class WorldSpec:
    """Everything a world is derived from (stored in ``world.json``)."""

    bbox: tuple[float, float, float, float]
    year: int
    seed: int
    preset: str
    tile_size_m: int  # Sentinel-2 tile side, multiple of 60
    tile_overlap_m: int  # overlap of neighbouring tiles, multiple of 60
    parcel_m: float  # typical field size
    cloud_radius_m: float  # typical cloud blob radius
    burst_across_m: float
    burst_along_m: float
    labels_per_class: int
    label_edge_m: float  # labelled points keep this far from parcel edges
    block_size: int = 256

    @property
    def frame(self) -> LocalFrame:
        w, s, e, n = self.bbox
        return LocalFrame((w + e) / 2.0, (s + n) / 2.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> WorldSpec:
        d = dict(d)
        d["bbox"] = tuple(d["bbox"])
        return cls(**d)


# --------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class RasterGrid:
    """One pixel grid of a scene: resolution (m), GDAL-order affine coefficients, (rows, cols)."""

    resolution: float
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.shape[0], c + a * self.shape[1], f)


@dataclass(frozen=True)
class Scene:
    """One STAC item of the world: an S2 tile acquisition or an S1 burst acquisition.

    ``assets`` maps asset keys to hrefs relative to the world's root.
    """

    id: str
    collection: str
    datetime: str  # ISO 8601, UTC, "Z"
    platform: str
    tile: str  # MGRS-like tile ("31UCU") or OPERA burst id ("T015-100002-IW1")
    zone: int
    epsg: int
    relative_orbit: int
    grids: tuple[RasterGrid, ...]
    assets: tuple[tuple[str, str], ...]
    bbox: tuple[float, float, float, float]  # lon/lat of the footprint
    footprint: tuple[tuple[float, float], ...] = field(repr=False)  # lon/lat ring
    processing_baseline: str | None = None  # S2 only
    cloud_cover: float | None = None  # S2 only: % of valid pixels with SCL 8, 9 or 10
    orbit_direction: str | None = None  # S1 only; not in its STAC item, like the real ones

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def date(self) -> dt.date:
        return dt.date.fromisoformat(self.datetime[:10])

    @property
    def doy(self) -> int:
        return self.date.timetuple().tm_yday

    @property
    def boa_offset(self) -> int:
        """DN added to stored Sentinel-2 values (1000 from baseline 04.00 on)."""
        return 1000 if self.processing_baseline and self.processing_baseline >= "04.00" else 0

    def grid(self, resolution: float) -> RasterGrid:
        for g in self.grids:
            if g.resolution == resolution:
                return g
        raise KeyError(f"{self.id} has no {resolution} m grid")

    def asset_grid(self, key: str) -> RasterGrid:
        if self.collection == S1_COLLECTION:
            return self.grids[0]
        return self.grid(10.0 if key in S2_10M else 20.0)

    def href(self, key: str) -> str:
        return dict(self.assets)[key]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["grids"] = [asdict(g) for g in self.grids]
        d["assets"] = dict(self.assets)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["grids"] = tuple(
            RasterGrid(g["resolution"], tuple(g["transform"]), tuple(g["shape"])) for g in d["grids"]
        )
        d["assets"] = tuple(sorted(d["assets"].items()))
        d["bbox"] = tuple(d["bbox"])
        d["footprint"] = tuple(tuple(p) for p in d["footprint"])
        return cls(**d)


# --------------------------------------------------------------------------- Sentinel-2 tiles

_LAT_BANDS = "CDEFGHJKLMNPQRSTUVWX"
_COL_SETS = ("STUVWXYZ", "ABCDEFGH", "JKLMNPQR")
_ROW_LETTERS = "ABCDEFGHJKLMNPQRSTUV"


@dataclass(frozen=True)
class S2Tile:
    """A small MGRS-like tile: a square of the zone's CRS, corners on multiples of 60 m."""

    name: str
    zone: int
    x0: int  # west edge
    y1: int  # north edge
    size_m: int

    @property
    def epsg(self) -> int:
        return 32600 + self.zone

    def grid(self, resolution: float) -> RasterGrid:
        n = int(self.size_m // resolution)
        return RasterGrid(resolution, (resolution, 0.0, float(self.x0), 0.0, -resolution, float(self.y1)), (n, n))

    def polygon_lonlat(self) -> Polygon:
        return _polygon_lonlat(box(self.x0, self.y1 - self.size_m, self.x0 + self.size_m, self.y1), self.epsg)


def _polygon_lonlat(poly: Polygon, epsg: int) -> Polygon:
    ring = shapely.segmentize(poly, 1000.0)
    xs, ys = np.asarray(ring.exterior.coords).T
    lon, lat = transform_points(xs, ys, f"EPSG:{epsg}", "EPSG:4326")
    return Polygon(zip(np.round(lon, 7), np.round(lat, 7)))


def _snap(v: float, step: int) -> int:
    return int(round(v / step)) * step


def _lattice(lo: float, hi: float, size: int, step: int, centred: bool) -> list[int]:
    """Lower edges of the fewest tiles (spacing ``step``, side ``size``) covering [lo, hi].

    The lattice is anchored on the region's centre: on an overlap strip (so
    the middle of the region is in two tiles), or on a tile's centre when
    ``centred`` and one tile is enough.
    """
    c = (lo + hi) / 2.0
    origin = _snap(c - size / 2.0, 60) if centred else _snap(c - step - (size - step) / 2.0, 60)
    first = math.floor((lo - origin) / step)  # the last tile starting west/south of lo
    last = max(math.ceil((hi - origin - size) / step), first)  # the first tile reaching past hi
    return [origin + k * step for k in range(first, last + 1)]


def s2_tiles(spec: WorldSpec) -> list[S2Tile]:
    """The tiles covering the world's bbox, per UTM zone (zone-crossing bboxes get tiles of both)."""
    w, s, e, n = spec.bbox
    roi = roi_from_bbox(w, s, e, n)
    margin = 1.5 * spec.tile_overlap_m / spec.frame.mx  # degrees a zone's tiles reach past its edge
    tiles = []
    for zone in roi.zones():
        zw, ze = zone_lon_bounds(zone)
        region = box(max(w, zw - margin), s, min(e, ze + margin), n)
        xmin, ymin, xmax, ymax = _project(region, 32600 + zone).bounds
        step = spec.tile_size_m - spec.tile_overlap_m
        xs = _lattice(xmin, xmax, spec.tile_size_m, step, centred=False)
        one_row = (ymax - ymin) / 2 <= spec.tile_size_m / 2 - spec.tile_overlap_m - 30
        ys = _lattice(ymin, ymax, spec.tile_size_m, step, centred=one_row)
        lat_band = _LAT_BANDS[min(max(int((s + n) / 2 + 80) // 8, 0), len(_LAT_BANDS) - 1)]
        cols = _COL_SETS[zone % 3]
        for i, x0 in enumerate(xs):
            for j, y0 in enumerate(ys):
                name = f"{zone:02d}{lat_band}{cols[(2 + i) % 8]}{_ROW_LETTERS[(18 + j) % 20]}"
                tiles.append(S2Tile(name, zone, x0, y0 + spec.tile_size_m, spec.tile_size_m))
    return tiles


def _project(geom, epsg: int):
    dense = shapely.segmentize(geom, 0.002)
    return shapely.transform(
        dense, lambda c: np.column_stack(transform_points(c[:, 0], c[:, 1], "EPSG:4326", f"EPSG:{epsg}"))
    )


# --------------------------------------------------------------------------- orbits


@dataclass(frozen=True)
class S2Track:
    """A Sentinel-2 relative orbit over the world; ``edge`` is its swath edge in the local frame.

    Where ``edge`` is set, ground at (x, y) is imaged iff (x-px)*nx + (y-py)*ny >= 0.
    """

    relative_orbit: int
    first_day: int
    step_days: int
    clock: str  # UTC time of day of acquisition
    edge: tuple[float, float, float, float] | None


@dataclass(frozen=True)
class S1Track:
    """A Sentinel-1 relative orbit: direction, dates and heading of its bursts."""

    relative_orbit: int
    direction: str
    first_day: int
    heading_deg: float
    clock: str


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


@lru_cache(maxsize=32)
def s2_tracks(spec: WorldSpec) -> tuple[S2Track, ...]:
    rng = _rng(spec.seed, 201)
    ro = rng.choice(np.arange(1, 144), size=2, replace=False)
    first = int(rng.integers(0, 5))
    frame = spec.frame
    x_lo, _ = frame.to_local(spec.bbox[0], 0.0)
    x_hi, _ = frame.to_local(spec.bbox[2], 0.0)
    px = float(x_lo + (x_hi - x_lo) * rng.uniform(0.7, 0.85))  # the eastern tiles are partly imaged
    tilt = math.radians(12.0)
    edge = (round(px, 3), 0.0, math.cos(tilt), -math.sin(tilt))
    minute = int(rng.integers(0, 40))
    return (
        S2Track(int(ro[0]), first, 5, f"10:{minute + 10:02d}:21", None),
        S2Track(int(ro[1]), first + 2, 10, f"11:{minute:02d}:49", edge),
    )


@lru_cache(maxsize=32)
def s1_tracks(spec: WorldSpec) -> tuple[S1Track, ...]:
    rng = _rng(spec.seed, 101)
    ro = rng.choice(np.arange(1, 176), size=4, replace=False)
    a, d = (int(v) for v in rng.integers(0, 6, size=2))
    return (
        S1Track(int(ro[0]), ASCENDING, a, -12.0, "17:51:05"),
        S1Track(int(ro[1]), ASCENDING, a + 6, -10.5, "17:42:15"),
        S1Track(int(ro[2]), DESCENDING, d, 192.0, "06:02:05"),
        S1Track(int(ro[3]), DESCENDING, d + 6, 190.5, "05:54:20"),
    )


def _dates(year: int, first_day: int, step: int) -> list[dt.date]:
    start = dt.date(year, 1, 1)
    out: list[dt.date] = []
    k = 0
    while True:
        d = start + dt.timedelta(days=first_day + k * step)
        if d.year != year:
            return out
        out.append(d)
        k += 1


def s2_platform(year: int, index: int) -> str:
    pair = ("sentinel-2b", "sentinel-2c") if year >= 2025 else ("sentinel-2a", "sentinel-2b")
    return pair[index % 2]


def processing_baseline(date: dt.date) -> str:
    return "05.10" if date >= BASELINE_04_DATE else "03.01"


@dataclass(frozen=True)
class S2Acquisition:
    date: dt.date
    platform: str
    track: S2Track


def s2_acquisitions(spec: WorldSpec) -> list[S2Acquisition]:
    acq = []
    for track in s2_tracks(spec):
        for k, date in enumerate(_dates(spec.year, track.first_day, track.step_days)):
            acq.append(S2Acquisition(date, s2_platform(spec.year, k if track.step_days == 5 else 0), track))
    return sorted(acq, key=lambda a: (a.date, a.track.relative_orbit))


def s2_scene_id(platform: str, tile: str, date: dt.date) -> str:
    return f"S2{platform[-1].upper()}_{tile}_{date:%Y%m%d}_0_L2A"


# --------------------------------------------------------------------------- Sentinel-1 bursts


@dataclass(frozen=True)
class Burst:
    """One burst of a track: a rotated rectangle in the local frame."""

    burst_id: str
    track: S1Track
    order: int  # position along the track (seconds after the track's first burst / 2.76)
    corners: tuple[tuple[float, float], ...]  # local frame, closed ring

    def polygon_local(self) -> Polygon:
        return Polygon(self.corners)


@lru_cache(maxsize=64)
def s1_bursts(spec: WorldSpec, track: S1Track) -> tuple[Burst, ...]:
    """The bursts of a track that touch the bbox: a rotated lattice of rectangles."""
    frame = spec.frame
    w, s, e, n = spec.bbox
    bx0, by0 = frame.to_local(w, s)
    bx1, by1 = frame.to_local(e, n)
    area = box(float(bx0), float(by0), float(bx1), float(by1))
    h = math.radians(track.heading_deg)
    along = np.array([math.sin(h), math.cos(h)])
    across = np.array([math.cos(h), -math.sin(h)])
    rng = _rng(spec.seed, 102, track.relative_orbit)
    u0 = rng.uniform(-0.5, 0.0) * spec.burst_across_m
    w0 = rng.uniform(-0.5, 0.0) * spec.burst_along_m
    reach = math.hypot(float(bx1 - bx0), float(by1 - by0))
    nu = int(reach // spec.burst_across_m) + 2
    nw = int(reach // spec.burst_along_m) + 2
    base = 100_000 + int(rng.integers(0, 800_000))
    bursts = []
    overlap = 0.1 * spec.burst_along_m
    for k in range(-nu, nu + 1):
        for m in range(-nw, nw + 1):
            u_lo, u_hi = u0 + k * spec.burst_across_m, u0 + (k + 1) * spec.burst_across_m
            w_lo, w_hi = w0 + m * spec.burst_along_m, w0 + (m + 1) * spec.burst_along_m + overlap
            pts = [across * u + along * v for u, v in ((u_lo, w_lo), (u_hi, w_lo), (u_hi, w_hi), (u_lo, w_hi))]
            poly = Polygon([(round(float(p[0]), 3), round(float(p[1]), 3)) for p in pts])
            if poly.intersection(area).area < 0.02 * poly.area:
                continue
            order = m if track.direction == ASCENDING else -m
            number = base + order + nw + 1000 * ((k + nu) // 3)
            burst_id = f"T{track.relative_orbit:03d}-{number:06d}-IW{(k + nu) % 3 + 1}"
            bursts.append(Burst(burst_id, track, order, tuple((x, y) for x, y in poly.exterior.coords)))
    return tuple(sorted(bursts, key=lambda b: b.burst_id))


def burst_zone_grid(spec: WorldSpec, burst: Burst) -> tuple[int, RasterGrid, Polygon]:
    """The zone (of the burst's centre), the 30 m grid covering it and its lon/lat footprint."""
    frame = spec.frame
    ring = np.asarray(shapely.segmentize(burst.polygon_local(), 500.0).exterior.coords)
    lon, lat = frame.to_lonlat(ring[:, 0], ring[:, 1])
    clon, clat = frame.to_lonlat(*np.asarray(burst.polygon_local().centroid.coords[0]))
    zone = utm_zone(float(clon), float(clat))
    x, y = transform_points(lon, lat, "EPSG:4326", f"EPSG:{32600 + zone}")
    x0, x1 = math.floor(x.min() / 30) * 30, math.ceil(x.max() / 30) * 30
    y0, y1 = math.floor(y.min() / 30) * 30, math.ceil(y.max() / 30) * 30
    grid = RasterGrid(30.0, (30.0, 0.0, float(x0), 0.0, -30.0, float(y1)), ((y1 - y0) // 30, (x1 - x0) // 30))
    footprint = Polygon(zip(np.round(lon, 7), np.round(lat, 7)))
    return zone, grid, footprint


def s1_dates(spec: WorldSpec, track: S1Track) -> list[dt.date]:
    return _dates(spec.year, track.first_day, 12)


def s1_platform(year: int) -> str:
    return "sentinel-1a"


def s1_scene_id(burst: Burst, when: dt.datetime, platform: str) -> str:
    produced = when + dt.timedelta(hours=5, minutes=3, seconds=17)
    return (
        f"OPERA_L2_RTC-S1_{burst.burst_id}_{when:%Y%m%dT%H%M%S}Z_{produced:%Y%m%dT%H%M%S}Z"
        f"_S1{platform[-1].upper()}_30_v1.0"
    )


def s1_time(date: dt.date, track: S1Track, burst: Burst) -> dt.datetime:
    hh, mm, ss = track.clock.split(":")
    t0 = dt.datetime(date.year, date.month, date.day, int(hh), int(mm), int(ss))
    return t0 + dt.timedelta(seconds=round(2.76 * (burst.order + 20)))
