"""Grids: UTM zones, the fixed 10 m grid of each zone, work units, 0.1-degree tiles.

Every zone has one fixed pixel grid whose origin and extent do not depend on
what is processed, so stores written by different jobs and years line up:

* CRS ``EPSG:326NN`` for the whole zone, the northern code also south of the
  equator (northings there are negative), as geotessera's Zarr layout does;
* 10 m square pixels, rows going south; the origin (upper-left corner) is at
  ``(ZONE_X0, ZONE_Y0)`` and the grid is ``ZONE_WIDTH x ZONE_HEIGHT`` pixels.

The extent is centred on the zone's central meridian (false easting 500 km)
and spans 819.2 km east-west, more than a zone is wide at the equator, and
from 9,420.8 km north to 9,011.2 km south of the equator (84 N to 80 S).
Both the central meridian and the equator fall on a boundary of every
power-of-two block up to 4096 px, and the origin is a multiple of 20 m, so the
10 m and 20 m Sentinel-2 pixel grids (tile corners are multiples of 60 m) line
up with ours and need no resampling.

A *unit* of work is one shard-sized square block of a zone grid; it is fixed
by (zone, row, col) and the block size, never by the ROI that asked for it.

A *tile* is geotessera's 0.1-degree cell, named by its centre, with a pixel
grid that is the window of its zone's grid covering it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyproj
import shapely
import shapely.prepared
from affine import Affine
from numpy.typing import ArrayLike
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

from tessera_ray.errors import RoiError, UserInputError, squash

if TYPE_CHECKING:
    import geopandas as gpd

RESOLUTION = 10.0
ZONE_X0 = 90_400.0
ZONE_Y0 = 9_420_800.0
ZONE_WIDTH = 81_920
ZONE_HEIGHT = 1_843_200
DEFAULT_UNIT_SIZE = 4096
TILE_DEGREES = 0.1

WGS84 = "EPSG:4326"


# --------------------------------------------------------------------------- zones


def utm_zone(lon: float, lat: float = 0.0) -> int:
    """The UTM zone number (1..60) of a longitude, plain 6-degree strips.

    The Norway and Svalbard exceptions are not applied: the zone of a pixel
    depends on its longitude only, as geotessera's tiles do.
    """
    lon = ((float(lon) + 180.0) % 360.0) - 180.0
    return min(int(math.floor((lon + 180.0) / 6.0)) + 1, 60)


def zone_lon_bounds(zone: int) -> tuple[float, float]:
    """West and east longitude of a zone's 6-degree strip."""
    _check_zone(zone)
    west = -180.0 + 6.0 * (zone - 1)
    return west, west + 6.0


def _check_zone(zone: int) -> None:
    if not 1 <= int(zone) <= 60:
        raise ValueError(f"UTM zone must be 1..60, got {zone}")


@lru_cache(maxsize=128)
def _transformer(src: str, dst: str) -> pyproj.Transformer:
    return pyproj.Transformer.from_crs(src, dst, always_xy=True)


def check_crs(spec: object, what: str = "--crs", error: type[UserInputError] = UserInputError) -> str:
    """A CRS that PROJ knows and that places points on the Earth (geographic or projected), as its
    canonical string (``EPSG:NNNN`` when it has one); anything else is a one-line ``error``."""
    try:
        crs = pyproj.CRS.from_user_input(spec)
    except pyproj.exceptions.CRSError as exc:
        reason = squash(exc)
        raise error(f"{what} {spec!r} is not a CRS PROJ knows ({reason[:160]})") from None
    name = crs.name or str(spec)
    if crs.is_engineering or not (crs.is_geographic or crs.is_projected):
        raise error(f"{what} {name!r} is not a geographic or projected CRS: it cannot be placed on the Earth")
    if name.strip().lower().startswith(("undefined", "unknown")):
        raise error(f"{what} is undefined ({name!r}); give the data's real CRS")
    return crs.to_string()


def transform_points(xs: ArrayLike, ys: ArrayLike, src: str, dst: str) -> tuple[np.ndarray, np.ndarray]:
    """Transform coordinate arrays between two CRSs (x/lon first)."""
    tx, ty = _transformer(str(src), str(dst)).transform(
        np.asarray(xs, dtype="float64"), np.asarray(ys, dtype="float64")
    )
    return np.asarray(tx), np.asarray(ty)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels on a zone grid (row/col of its upper-left pixel)."""

    row: int
    col: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def size(self) -> int:
        return self.height * self.width

    def intersection(self, other: Window) -> Window | None:
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1 = min(self.row + self.height, other.row + other.height)
        c1 = min(self.col + self.width, other.col + other.width)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def relative_to(self, outer: Window) -> Window:
        """This window in the pixel coordinates of ``outer``."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)

    def slices(self) -> tuple[slice, slice]:
        return (slice(self.row, self.row + self.height), slice(self.col, self.col + self.width))

    def blocks(self, size: int) -> Iterator[Window]:
        """Split into blocks of at most ``size`` x ``size`` pixels, row-major."""
        for r in range(self.row, self.row + self.height, size):
            for c in range(self.col, self.col + self.width, size):
                yield Window(
                    r, c, min(size, self.row + self.height - r), min(size, self.col + self.width - c)
                )


# --------------------------------------------------------------------------- zone grid


@dataclass(frozen=True)
class ZoneGrid:
    """The fixed 10 m pixel grid of one UTM zone."""

    zone: int

    def __post_init__(self) -> None:
        _check_zone(self.zone)

    @property
    def epsg(self) -> int:
        return 32600 + self.zone

    @property
    def crs(self) -> str:
        return f"EPSG:{self.epsg}"

    @property
    def name(self) -> str:
        """Group name in the Zarr store, e.g. ``utm31``."""
        return f"utm{self.zone:02d}"

    @property
    def shape(self) -> tuple[int, int]:
        return (ZONE_HEIGHT, ZONE_WIDTH)

    @property
    def transform(self) -> Affine:
        return Affine(RESOLUTION, 0.0, ZONE_X0, 0.0, -RESOLUTION, ZONE_Y0)

    @property
    def full_window(self) -> Window:
        return Window(0, 0, ZONE_HEIGHT, ZONE_WIDTH)

    # pixel <-> projected coordinates
    def xy_to_pixel(self, x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the pixels containing projected points (may be off-grid)."""
        col = np.floor((np.asarray(x, dtype="float64") - ZONE_X0) / RESOLUTION).astype("int64")
        row = np.floor((ZONE_Y0 - np.asarray(y, dtype="float64")) / RESOLUTION).astype("int64")
        return row, col

    def pixel_to_xy(self, row: ArrayLike, col: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Projected coordinates of pixel centres."""
        x = ZONE_X0 + (np.asarray(col, dtype="float64") + 0.5) * RESOLUTION
        y = ZONE_Y0 - (np.asarray(row, dtype="float64") + 0.5) * RESOLUTION
        return x, y

    # pixel <-> lon/lat
    def lonlat_to_pixel(self, lon: ArrayLike, lat: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        x, y = transform_points(lon, lat, WGS84, self.crs)
        return self.xy_to_pixel(x, y)

    def pixel_to_lonlat(self, row: ArrayLike, col: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.pixel_to_xy(row, col)
        return transform_points(x, y, self.crs, WGS84)

    def contains(self, row: ArrayLike, col: ArrayLike) -> np.ndarray:
        r, c = np.asarray(row), np.asarray(col)
        inside: np.ndarray = (r >= 0) & (r < ZONE_HEIGHT) & (c >= 0) & (c < ZONE_WIDTH)
        return inside

    # windows
    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a window, in the zone's CRS."""
        xmin = ZONE_X0 + window.col * RESOLUTION
        ymax = ZONE_Y0 - window.row * RESOLUTION
        return (xmin, ymax - window.height * RESOLUTION, xmin + window.width * RESOLUTION, ymax)

    def window_transform(self, window: Window) -> Affine:
        xmin, _, _, ymax = self.window_bounds(window)
        return Affine(RESOLUTION, 0.0, xmin, 0.0, -RESOLUTION, ymax)

    def bounds_to_window(self, xmin: float, ymin: float, xmax: float, ymax: float) -> Window | None:
        """The smallest window covering projected bounds, clipped to the grid."""
        col0 = math.floor((xmin - ZONE_X0) / RESOLUTION)
        col1 = math.ceil((xmax - ZONE_X0) / RESOLUTION)
        row0 = math.floor((ZONE_Y0 - ymax) / RESOLUTION)
        row1 = math.ceil((ZONE_Y0 - ymin) / RESOLUTION)
        col1, row1 = max(col1, col0 + 1), max(row1, row0 + 1)
        return Window(row0, col0, row1 - row0, col1 - col0).intersection(self.full_window)

    def window_polygon_lonlat(self, window: Window, densify: int = 16) -> BaseGeometry:
        """A window's outline in lon/lat, its edges densified.

        An outline across the antimeridian comes back split into two polygons.
        """
        xmin, ymin, xmax, ymax = self.window_bounds(window)
        ring = shapely.segmentize(box(xmin, ymin, xmax, ymax), max(xmax - xmin, ymax - ymin) / densify)
        xs, ys = np.asarray(ring.exterior.coords).T
        lon, lat = transform_points(xs, ys, self.crs, WGS84)
        if lon.max() - lon.min() > 180.0:
            lon = np.where(lon < 0, lon + 360.0, lon)
        return _split_antimeridian(Polygon(zip(lon, lat)))


@lru_cache(maxsize=64)
def zone_grid(zone: int) -> ZoneGrid:
    return ZoneGrid(int(zone))


def lonlat_to_zone_pixel(lon: float, lat: float) -> tuple[int, int, int]:
    """(zone, row, col) of the pixel holding a point, in the point's own zone."""
    zone = utm_zone(lon, lat)
    row, col = zone_grid(zone).lonlat_to_pixel(lon, lat)
    return zone, int(row), int(col)


# --------------------------------------------------------------------------- units


@dataclass(frozen=True, order=True)
class Unit:
    """One work unit: a square block of ``size`` pixels of a zone grid.

    ``row``/``col`` index blocks, not pixels. The unit is also the shard of the
    Zarr store that holds it (the store's shard size equals ``size``), so each
    unit is written by exactly one writer.
    """

    zone: int
    row: int
    col: int
    size: int = DEFAULT_UNIT_SIZE

    @property
    def grid(self) -> ZoneGrid:
        return zone_grid(self.zone)

    @property
    def id(self) -> str:
        return f"utm{self.zone:02d}_{self.size}_{self.row:04d}_{self.col:04d}"

    @classmethod
    def from_id(cls, unit_id: str) -> Unit:
        m = re.fullmatch(r"utm(\d{2})_(\d+)_(\d{4,})_(\d{4,})", unit_id)
        if not m:
            raise ValueError(f"not a unit id: {unit_id!r}")
        zone, size, row, col = (int(g) for g in m.groups())
        return cls(zone, row, col, size)

    @property
    def window(self) -> Window:
        """The unit's pixels on its zone grid (clipped at the grid's edge)."""
        w = Window(self.row * self.size, self.col * self.size, self.size, self.size)
        clipped = w.intersection(self.grid.full_window)
        assert clipped is not None
        return clipped

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.grid.window_bounds(self.window)

    @property
    def transform(self) -> Affine:
        return self.grid.window_transform(self.window)

    @property
    def crs(self) -> str:
        return self.grid.crs

    def polygon_lonlat(self) -> BaseGeometry:
        return self.grid.window_polygon_lonlat(self.window)


def unit_of_pixel(zone: int, row: int, col: int, size: int = DEFAULT_UNIT_SIZE) -> Unit:
    return Unit(zone, row // size, col // size, size)


# --------------------------------------------------------------------------- ROI


@dataclass(frozen=True)
class Roi:
    """A region of interest in lon/lat (EPSG:4326), split at the antimeridian."""

    geometry: BaseGeometry

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(self.geometry.bounds)  # type: ignore[return-value]

    def zones(self) -> list[int]:
        """The UTM zones whose strips the ROI touches."""
        found = set()
        for part in _parts(self.geometry):
            west, _, east, _ = part.bounds
            for z in range(utm_zone(west), utm_zone(min(east, 179.999999)) + 1):
                strip = box(*_strip(z))
                if part.intersects(strip):
                    found.add(z)
        return sorted(found)

    def in_zone(self, zone: int) -> BaseGeometry:
        """The part of the ROI inside a zone's strip, in lon/lat."""
        return self.geometry.intersection(box(*_strip(zone)))


def _strip(zone: int) -> tuple[float, float, float, float]:
    west, east = zone_lon_bounds(zone)
    return (west, -90.0, east, 90.0)


def _parts(geom: BaseGeometry) -> Iterable[BaseGeometry]:
    return getattr(geom, "geoms", [geom])


def roi_from_bbox(west: float, south: float, east: float, north: float) -> Roi:
    """A ROI from a lon/lat bbox; ``west > east`` means it crosses the antimeridian."""
    for name, v, lo, hi in (
        ("west", west, -180, 180),
        ("east", east, -180, 180),
        ("south", south, -90, 90),
        ("north", north, -90, 90),
    ):
        if not (lo <= v <= hi) or math.isnan(v):
            raise RoiError(f"bbox {name}={v} is outside [{lo}, {hi}]")
    if south > north:
        raise RoiError(f"bbox south={south} is north of north={north}")
    south, north = _nonzero(south, north)
    if west <= east:
        west, east = _nonzero(west, east)
        return Roi(box(west, south, east, north))
    return Roi(MultiPolygon([box(west, south, 180.0, north), box(-180.0, south, east, north)]))


def _nonzero(lo: float, hi: float, eps: float = 1e-7) -> tuple[float, float]:
    """Give a degenerate interval (a point ROI, or one narrower than ~1 cm) a width
    of at least ``eps`` degrees, so its box has an area that survives projection."""
    return (lo, hi) if hi - lo >= eps else (lo - eps, hi + eps)


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``W,S,E,N``."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        raise RoiError(f"bbox must be four numbers W,S,E,N, got {text!r}") from None
    if len(parts) != 4:
        raise RoiError(f"bbox must be four numbers W,S,E,N, got {text!r}")
    return parts[0], parts[1], parts[2], parts[3]


def roi_from_geometry(geom: BaseGeometry, crs: str | None = WGS84) -> Roi:
    """A ROI from any geometry in any CRS, split at the antimeridian when needed."""
    import geopandas as gpd

    if geom.is_empty:
        raise RoiError("the ROI is empty")
    if crs is not None and (
        pyproj.CRS.from_user_input(check_crs(crs, "the ROI's CRS", RoiError)) != pyproj.CRS.from_user_input(WGS84)
    ):
        geom = gpd.GeoSeries([geom], crs=crs).to_crs(WGS84).iloc[0]
    _check_lonlat(geom)
    geom = shapely.make_valid(geom)
    if geom.geom_type in ("Point", "MultiPoint", "LineString", "MultiLineString") or geom.area == 0:
        # a point or line ROI covers the pixels it touches
        geom = geom.buffer(1e-7, cap_style="square")
    return Roi(_split_antimeridian(geom))


def _check_lonlat(geom: BaseGeometry) -> None:
    """The checks a bbox gets, on a ROI geometry in lon/lat: finite, latitudes within [-90, 90]
    (longitudes up to a turn either way, for shapes drawn across the antimeridian)."""
    west, south, east, north = geom.bounds
    if not all(map(math.isfinite, (west, south, east, north))):
        raise RoiError("the ROI has coordinates that do not transform to longitude/latitude (outside its CRS's area?)")
    for name, v in (("south", south), ("north", north)):
        if not -90.0 <= v <= 90.0:
            raise RoiError(f"the ROI's latitudes reach {v:g} ({name}), outside [-90, 90]: "
                           "are its coordinates in another CRS than the file says?")
    for name, v in (("west", west), ("east", east)):
        if not -360.0 <= v <= 360.0:
            raise RoiError(f"the ROI's longitudes reach {v:g} ({name}), outside [-360, 360]: "
                           "are its coordinates in another CRS than the file says?")


def _split_antimeridian(geom: BaseGeometry) -> BaseGeometry:
    """Cut a lon/lat geometry whose longitudes wrap past +/-180 into two parts.

    A polygon drawn across the antimeridian usually comes with longitudes
    shifted beyond 180 (e.g. 179..181) or as a span wider than 180 degrees.
    """
    west, _, east, _ = geom.bounds
    if east - west <= 180.0 and -180.0 <= west and east <= 180.0:
        return geom
    shifted = shapely.transform(
        geom, lambda c: np.column_stack([np.where(c[:, 0] < 0, c[:, 0] + 360, c[:, 0]), c[:, 1]])
    )
    east_part = shifted.intersection(box(0.0, -90.0, 180.0, 90.0))
    west_part = shapely.affinity.translate(shifted.intersection(box(180.0, -90.0, 540.0, 90.0)), xoff=-360.0)
    parts = [p for p in (east_part, west_part) if not p.is_empty]
    return shapely.union_all(parts)


def load_roi(spec: str) -> Roi:
    """A ROI from ``W,S,E,N`` or a file geopandas reads (GeoJSON, GeoPackage, Shapefile, GeoParquet).

    A file's CRS is honoured; features are merged.
    """
    spec = spec.strip()
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[\d.eE+\-\s]+(,[\d.eE+\-\s]*)+", spec):
        return roi_from_bbox(*parse_bbox(spec))
    if not path.exists():
        raise RoiError(f"ROI {spec!r} is neither a bbox W,S,E,N nor an existing file")
    try:
        frame = _read_vector(path)
    except RoiError:
        raise
    except Exception as exc:  # noqa: BLE001 - every reader failure is a user-facing one-liner
        raise RoiError(f"cannot read ROI file {path}: {type(exc).__name__}: {exc}") from None
    if frame.empty:
        raise RoiError(f"ROI file {path} has no features")
    if frame.crs is None:
        raise RoiError(f"ROI file {path} has no CRS; give it one (e.g. ogr2ogr -a_srs EPSG:4326), "
                       "or use GeoJSON, whose coordinates are longitude/latitude")
    crs = check_crs(frame.crs.to_wkt(), f"ROI file {path}: its CRS", RoiError)
    return roi_from_geometry(shapely.union_all(frame.geometry.values), crs)


_GEOJSON_GEOMETRIES = ("Polygon", "MultiPolygon", "Point", "LineString", "MultiPoint", "MultiLineString",
                       "GeometryCollection")


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    import geopandas as gpd

    if path.suffix.lower() in (".parquet", ".geoparquet"):
        return gpd.read_parquet(path)
    if path.suffix.lower() in (".json", ".geojson"):
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict):
            raise ValueError("not a GeoJSON object")
        # RFC 7946: longitude/latitude; the 2008 spec's "crs" member, which GDAL reads as WGS84
        # when it does not know it, is honoured or refused here
        crs = _geojson_crs(doc, path) or WGS84
        if doc.get("type") in _GEOJSON_GEOMETRIES:
            return gpd.GeoDataFrame(geometry=[shapely.geometry.shape(doc)], crs=crs)
        return gpd.read_file(path).set_crs(crs, allow_override=True)
    return gpd.read_file(path)


def _geojson_crs(doc: dict[str, Any], path: Path) -> str | None:
    member = doc.get("crs")
    if member is None:
        return None
    name = (member.get("properties") or {}).get("name") if isinstance(member, dict) else None
    if not isinstance(member, dict) or member.get("type") != "name" or not isinstance(name, str):
        raise RoiError(f"ROI file {path}: its \"crs\" member is not a named CRS ({json.dumps(member)[:80]})")
    return check_crs(name, f"ROI file {path}: its CRS", RoiError)


def units_for_roi(roi: Roi, size: int = DEFAULT_UNIT_SIZE) -> list[Unit]:
    """The units whose blocks intersect the ROI, in every zone it touches.

    The part of the ROI in each zone's strip is projected onto that zone's
    grid, so a ROI across a zone edge gets units in both zones.
    """
    units: set[Unit] = set()
    for zone in roi.zones():
        part = roi.in_zone(zone)
        if part.is_empty:
            continue
        grid = zone_grid(zone)
        local = _to_zone(part, grid)
        window = grid.bounds_to_window(*local.bounds)
        if window is None:
            continue
        prepared = shapely.prepared.prep(local.buffer(RESOLUTION / 2))
        for r in range(window.row // size, (window.row + window.height - 1) // size + 1):
            for c in range(window.col // size, (window.col + window.width - 1) // size + 1):
                unit = Unit(zone, r, c, size)
                if prepared.intersects(box(*unit.bounds)):
                    units.add(unit)
    return sorted(units)


def _to_zone(geom_lonlat: BaseGeometry, grid: ZoneGrid) -> BaseGeometry:
    densified = shapely.segmentize(geom_lonlat, 0.01)
    return shapely.transform(
        densified, lambda c: np.column_stack(transform_points(c[:, 0], c[:, 1], WGS84, grid.crs))
    )


def roi_window(roi: Roi, zone: int) -> Window | None:
    """The window of a zone's grid covering the ROI's part in that zone."""
    part = roi.in_zone(zone)
    if part.is_empty:
        return None
    grid = zone_grid(zone)
    return grid.bounds_to_window(*_to_zone(part, grid).bounds)


# --------------------------------------------------------------------------- 0.1-degree tiles


@dataclass(frozen=True)
class Tile:
    """A geotessera 0.1-degree tile, named by its centre (centres at .05)."""

    lon: float
    lat: float

    @property
    def name(self) -> str:
        return f"grid_{self.lon:.2f}_{self.lat:.2f}"

    @property
    def lon_i(self) -> int:
        return int(round(self.lon * 100))

    @property
    def lat_i(self) -> int:
        return int(round(self.lat * 100))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        h = TILE_DEGREES / 2
        return (self.lon - h, self.lat - h, self.lon + h, self.lat + h)

    @property
    def zone(self) -> int:
        return utm_zone(self.lon, self.lat)

    @property
    def grid(self) -> ZoneGrid:
        return zone_grid(self.zone)

    @property
    def window(self) -> Window:
        """The window of the zone grid covering the tile: its own pixel grid."""
        local = _to_zone(box(*self.bounds), self.grid)
        window = self.grid.bounds_to_window(*local.bounds)
        assert window is not None
        return window

    @property
    def crs(self) -> str:
        return self.grid.crs

    @property
    def transform(self) -> Affine:
        return self.grid.window_transform(self.window)


def tile_of(lon: float, lat: float) -> Tile:
    """The 0.1-degree tile holding a point."""
    return Tile(_tile_centre(lon), _tile_centre(lat))


def _tile_centre(v: float) -> float:
    return round(math.floor(round(v / TILE_DEGREES, 9)) * TILE_DEGREES + TILE_DEGREES / 2, 2)


def tiles_for_bounds(west: float, south: float, east: float, north: float) -> list[Tile]:
    """Every tile intersecting a lon/lat bbox (no antimeridian wrap)."""
    tiles = []
    lat = tile_of(west, south).lat
    while lat - TILE_DEGREES / 2 < north:
        lon = tile_of(west, south).lon
        while lon - TILE_DEGREES / 2 < east:
            tiles.append(Tile(round(lon, 2), round(lat, 2)))
            lon += TILE_DEGREES
        lat += TILE_DEGREES
    return tiles
