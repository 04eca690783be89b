"""The synthetic world: generation, the folder layout, and the truth.

``generate_world(out, ...)`` writes::

    out/world.json                     spec, classes and every scene (sorted keys, no timestamps)
    out/labels.parquet                 GeoParquet points (EPSG:4326): class_id, class_name, split
    out/cogs/sentinel-2-c1-l2a/{id}/{key}.tif       10 bands + scl
    out/cogs/OPERA_L2_RTC-S1_V1/{id}/{id}_{key}.tif VV, VH, mask
    out/stac/{collection}/collection.json
    out/stac/{collection}/{id}.json
    out/stac/items.parquet             stac-geoparquet of all items

Same arguments, same bytes. ``World.open(out)`` reads it back, and its truth
methods evaluate the world on ANY pixel grid (crs, affine transform, shape),
sampling at pixel centres with nearest neighbour. Ingest tests compare their
output to these truths, not to their own reads: for a scene of the same zone
on a grid aligned with the zone grid, :meth:`World.s2_truth` equals what a
correct nearest-neighbour reader gets from the COGs (10 m bands pixel for
pixel, 20 m bands and SCL each 10 m pixel from the 20 m pixel it lies in).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
import pyproj

from tessera_ray.atomic import atomic_folder
from tessera_ray.errors import RoiError, UserInputError
from tessera_ray.grid import roi_from_bbox, transform_points
from tessera_ray.synthetic import catalog
from tessera_ray.synthetic.landscape import CLASSES, S2_BANDS, parcels_at
from tessera_ray.synthetic.render import (
    SCL_INVALID,
    pixel_centres,
    render_s1,
    render_s2,
    s2_coverage,
)
from tessera_ray.synthetic.scenes import (
    S1_ASSETS,
    S1_COLLECTION,
    S2_ASSETS,
    S2_COLLECTION,
    RasterGrid,
    Scene,
    WorldSpec,
    burst_zone_grid,
    processing_baseline,
    s1_bursts,
    s1_dates,
    s1_platform,
    s1_scene_id,
    s1_time,
    s1_tracks,
    s2_acquisitions,
    s2_scene_id,
    s2_tiles,
)

DEFAULT_BBOX = (0.10, 52.15, 0.15, 52.20)
DEFAULT_YEAR = 2024
FIRST_YEAR, LAST_YEAR = 2017, 2100
MAX_SPAN_DEG = 1.0
FORMAT_VERSION = 2
"""Bumped when the same spec renders other values (2: varied parcels, rape and beet, unflagged veils)."""

# Sizes per preset (seed 0, year 2024; any bbox can be given instead of the preset's):
#   test   1.2 x 1.2 km, 2 tiles of 1.98 km (198 px), 183 S2 + 245 S1 scenes (8 bursts)
#   demo   3.4 x 5.6 km, 2 x 2 tiles of 3.6 km (360 px), 366 S2 + 337 S1 scenes (11 bursts)
#   bench  19 x 20 km, 2 x 2 tiles of 10.98 km (1098 px), 366 S2 + 1037 S1 scenes (34 bursts), 4.5 GB
PRESETS: dict[str, dict] = {
    # ~1.2 km across: the test fixture, two overlapping tiles
    "test": dict(bbox=(0.116, 52.1695, 0.134, 52.1805), tile_size_m=1980, tile_overlap_m=300, parcel_m=110.0,
                 cloud_radius_m=300.0, burst_across_m=3000.0, burst_along_m=2400.0, labels_per_class=30,
                 label_edge_m=15.0),
    # the default bbox near Cambridge
    "demo": dict(bbox=DEFAULT_BBOX, tile_size_m=3600, tile_overlap_m=600, parcel_m=150.0, cloud_radius_m=500.0,
                 burst_across_m=6000.0, burst_along_m=4500.0, labels_per_class=80, label_edge_m=20.0),
    # about 20 km across, for benchmarks (minutes to generate)
    "bench": dict(bbox=(0.0, 52.1, 0.28, 52.28), tile_size_m=10980, tile_overlap_m=960, parcel_m=200.0,
                  cloud_radius_m=1500.0, burst_across_m=12000.0, burst_along_m=9000.0, labels_per_class=100,
                  label_edge_m=25.0),
}  # fmt: skip


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class World:
    """A generated world on disk: its spec, its scenes, and its truth."""

    root: Path
    spec: WorldSpec
    scenes: tuple[Scene, ...]
    format: int = FORMAT_VERSION
    """The generator version that wrote it; the truth functions describe only the current one."""

    @classmethod
    def open(cls, path: str | os.PathLike) -> World:
        root = Path(path)
        doc_path = root / "world.json"
        if not doc_path.is_file():
            raise UserInputError(f"{root} is not a synthetic world (no world.json)")
        doc = json.loads(doc_path.read_text())
        return cls(root, WorldSpec.from_dict(doc["spec"]), tuple(Scene.from_dict(s) for s in doc["scenes"]),
                   int(doc.get("format", 1)))

    # ---- what is there
    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return self.spec.bbox

    @property
    def year(self) -> int:
        return self.spec.year

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def labels_path(self) -> Path:
        return self.root / "labels.parquet"

    @property
    def items_parquet(self) -> Path:
        return self.root / "stac" / "items.parquet"

    def collection_scenes(self, collection: str) -> list[Scene]:
        return [s for s in self.scenes if s.collection == collection]

    @property
    def s2_scenes(self) -> list[Scene]:
        return self.collection_scenes(S2_COLLECTION)

    @property
    def s1_scenes(self) -> list[Scene]:
        return self.collection_scenes(S1_COLLECTION)

    @cached_property
    def _by_id(self) -> dict[str, Scene]:
        return {s.id: s for s in self.scenes}

    def scene(self, item_id: str) -> Scene:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise KeyError(f"no item {item_id!r} in this world") from None

    def asset_path(self, scene: Scene | str, key: str) -> Path:
        scene = self.scene(scene) if isinstance(scene, str) else scene
        return self.root / scene.href(key)

    def item_path(self, scene: Scene | str) -> Path:
        scene = self.scene(scene) if isinstance(scene, str) else scene
        return self.root / "stac" / scene.collection / f"{scene.id}.json"

    # ---- truth
    def landcover(self, crs, transform, shape) -> np.ndarray:
        """Class ids (uint8, see ``CLASSES``) at the pixel centres of a grid; 255 where not evaluable."""
        x, y = pixel_centres(transform, shape)
        lon, lat = transform_points(x, y, _crs_string(crs), "EPSG:4326")
        lx, ly = self.spec.frame.to_local(lon, lat)
        return parcels_at(lx, ly, self.spec.seed, self.spec.parcel_m).class_id.reshape(shape)

    def s2_truth(self, item_id: str, crs, transform, shape) -> dict:
        """A Sentinel-2 scene sampled (nearest) at the pixel centres of a grid.

        Returns ``bands`` (H, W, 10) uint16 in model order (B04, B02, B03, B08,
        B8A, B05, B06, B07, B11, B12) as harmonised DN, i.e. WITHOUT the
        baseline offset the COGs carry from 2022-01-25 on, 0 where no data;
        ``scl`` (uint8, 0 outside); boolean ``cloud`` (SCL 8/9, the generator's
        clouds), ``shadow`` (SCL 3), ``nodata`` (outside the tile or beyond
        the swath edge) and ``valid`` (SCL not in 0,1,2,3,8,9: what the cloud
        mask of an ingest should keep); and ``doy``. Ingest tests compare to this.
        """
        scene = self.scene(item_id)
        r = render_s2(self.spec, _plain(scene))
        out_shape = tuple(shape)
        bands = np.zeros(out_shape + (len(S2_BANDS),), dtype=np.uint16)
        idx10 = _lookup(crs, transform, out_shape, scene.epsg, scene.grid(10.0))
        idx20 = _lookup(crs, transform, out_shape, scene.epsg, scene.grid(20.0))
        for k, key in enumerate(S2_BANDS):
            bands[..., k] = _take(r.bands[key], idx20 if r.bands[key].shape == r.scl.shape else idx10, 0)
        scl = _take(r.scl, idx20, 0)
        nodata = _take(r.nodata, idx20, True)
        return {
            "bands": bands,
            "scl": scl,
            "cloud": _take(r.cloud, idx20, False),
            "shadow": _take(r.shadow, idx20, False),
            "nodata": nodata,
            "valid": ~np.isin(scl, SCL_INVALID),
            "doy": scene.doy,
        }

    def s1_truth(self, item_id: str, crs, transform, shape) -> dict:
        """An OPERA RTC-S1 burst scene sampled (nearest) at the pixel centres of a grid.

        Returns linear gamma0 ``vv`` and ``vh`` (float32, NaN outside the burst),
        ``mask`` (uint8: 0 valid, 1 shadow, 2 layover, 3 both, 255 fill/outside),
        ``orbit_direction`` ("ASCENDING"/"DESCENDING") and ``doy``. Ingest tests compare to this.
        """
        scene = self.scene(item_id)
        r = render_s1(self.spec, _plain(scene))
        idx = _lookup(crs, transform, tuple(shape), scene.epsg, scene.grids[0])
        return {
            "vv": _take(r.vv, idx, np.float32(np.nan)),
            "vh": _take(r.vh, idx, np.float32(np.nan)),
            "mask": _take(r.mask, idx, 255),
            "orbit_direction": scene.orbit_direction,
            "doy": scene.doy,
        }


def _plain(scene: Scene) -> Scene:
    """The scene as rendered (the render cache must not depend on derived fields)."""
    return replace(scene, cloud_cover=None)


def _crs_string(crs) -> str:
    """Any CRS input (string, pyproj or rasterio CRS) as "EPSG:n" where it has a code, else WKT."""
    return _crs_text(crs if isinstance(crs, str) else pyproj.CRS.from_user_input(crs).to_wkt())


@lru_cache(maxsize=64)
def _crs_text(text: str) -> str:
    crs = pyproj.CRS.from_user_input(text)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def _lookup(crs, transform, shape, epsg: int, grid: RasterGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row/col in ``grid`` of each query pixel centre, and whether it falls inside."""
    x, y = pixel_centres(transform, shape)
    query = _crs_string(crs)
    if query != f"EPSG:{epsg}":
        x, y = transform_points(x, y, query, f"EPSG:{epsg}")
    a, _, c, _, e, f = grid.transform
    with np.errstate(invalid="ignore"):
        col = np.floor((x - c) / a)
        row = np.floor((y - f) / e)
    inside = (row >= 0) & (row < grid.shape[0]) & (col >= 0) & (col < grid.shape[1])
    row = np.where(inside, row, 0).astype(np.int64)
    col = np.where(inside, col, 0).astype(np.int64)
    return row.reshape(shape), col.reshape(shape), inside.reshape(shape)


def _take(array: np.ndarray, idx, fill) -> np.ndarray:
    row, col, inside = idx
    out = array[row, col]
    out[~inside] = fill
    return out


# --------------------------------------------------------------------------- generation


def world_spec(bbox=None, year: int = DEFAULT_YEAR, seed: int = 0, preset: str = "demo") -> WorldSpec:
    """Validate the arguments and build the spec (errors are one-line ``TesseraError``s)."""
    if preset not in PRESETS:
        raise UserInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    params = dict(PRESETS[preset])
    bbox = tuple(float(v) for v in (bbox if bbox is not None else params.pop("bbox")))
    params.pop("bbox", None)
    if len(bbox) != 4:
        raise RoiError(f"bbox must be four numbers W,S,E,N, got {bbox}")
    w, s, e, n = bbox
    roi_from_bbox(w, s, e, n)
    if w >= e or s >= n:
        raise RoiError(
            f"bbox {w},{s},{e},{n} has no area "
            "(or crosses the antimeridian, which the synthetic world does not support)"
        )
    if e - w > MAX_SPAN_DEG or n - s > MAX_SPAN_DEG:
        raise RoiError(
            f"bbox {w},{s},{e},{n} is larger than {MAX_SPAN_DEG} degree across: too big for a synthetic world"
        )
    if s < -80.0 or n > 84.0:
        raise RoiError(f"bbox {w},{s},{e},{n} reaches beyond the UTM latitudes (80S..84N)")
    if not isinstance(year, int) or not FIRST_YEAR <= year <= LAST_YEAR:
        raise UserInputError(f"year must be {FIRST_YEAR}..{LAST_YEAR} (Sentinel-2 L2A era), got {year}")
    if not isinstance(seed, int) or seed < 0:
        raise UserInputError(f"seed must be a non-negative integer, got {seed}")
    return WorldSpec(bbox=bbox, year=year, seed=seed, preset=preset, **params)


def generate_world(
    out: str | os.PathLike,
    bbox=None,
    year: int = DEFAULT_YEAR,
    seed: int = 0,
    preset: str = "demo",
) -> World:
    """Write a reproducible synthetic world to ``out`` and return it.

    ``bbox`` (W, S, E, N in degrees) defaults to the preset's (``DEFAULT_BBOX``
    for ``demo``). The folder appears complete or not at all: everything is
    written to a temporary sibling first. An existing world at ``out`` is replaced;
    any other non-empty folder is refused.
    """
    spec = world_spec(bbox, year, seed, preset)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "world.json").is_file())):
        raise UserInputError(f"{out} exists and is not a synthetic world; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        _write_world(tmp, spec)
    return World.open(out)


def _write_world(root: Path, spec: WorldSpec) -> None:
    import rasterio

    scenes: list[Scene] = []
    items: dict[str, list[dict]] = {S2_COLLECTION: [], S1_COLLECTION: []}
    with rasterio.Env(**catalog.GDAL_ENV):
        for scene in plan_scenes(spec):
            scene = write_scene(root, spec, scene)
            item = catalog.s2_item(scene) if scene.collection == S2_COLLECTION else catalog.s1_item(scene)
            items[scene.collection].append(item)
            scenes.append(scene)
    render_s2.cache_clear()
    render_s1.cache_clear()

    for collection, docs in items.items():
        catalog.write_json(
            root / "stac" / collection / "collection.json", catalog.collection_dict(collection, docs, spec.year)
        )
        for doc in docs:
            catalog.write_json(root / "stac" / collection / f"{doc['id']}.json", doc)
    catalog.write_items_parquet(root / "stac" / "items.parquet", items[S2_COLLECTION] + items[S1_COLLECTION])
    _write_labels(root / "labels.parquet", spec)
    doc = {
        "format": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "classes": [{"id": c.id, "name": c.name} for c in CLASSES],
        "collections": sorted(items),
        "scenes": [s.to_dict() for s in sorted(scenes, key=lambda s: (s.collection, s.datetime, s.id))],
    }
    catalog.write_json(root / "world.json", doc)


def plan_scenes(spec: WorldSpec):
    """Every scene of a world, in writing order (Sentinel-2 tile by tile, then Sentinel-1).

    ``cloud_cover`` is not known before rendering: :func:`write_scene` fills it in.
    """
    yield from _s2_scenes(spec)
    yield from _s1_scenes(spec)


def write_scene(root: Path, spec: WorldSpec, scene: Scene) -> Scene:
    """Render one scene and write its COGs under ``root``; returns it with ``cloud_cover`` set.

    ``generate_world`` calls this for every scene; tests call it for a few.
    """
    if scene.collection == S2_COLLECTION:
        render = render_s2(spec, scene)
        scene = replace(scene, cloud_cover=render.cloud_cover)
        offset = np.uint16(scene.boa_offset)
        for key in S2_BANDS:
            dn = render.bands[key]
            stored = np.where(dn > 0, dn + offset, 0).astype(np.uint16) if offset else dn
            catalog.write_cog(root / scene.href(key), stored, epsg=scene.epsg, grid=scene.asset_grid(key),
                              nodata=0, block_size=spec.block_size, resampling="average")  # fmt: skip
        catalog.write_cog(root / scene.href("scl"), render.scl, epsg=scene.epsg, grid=scene.grid(20.0),
                          nodata=0, block_size=spec.block_size, resampling="nearest")  # fmt: skip
        return scene
    s1 = render_s1(spec, scene)
    tags = {"ORBIT_PASS_DIRECTION": str(scene.orbit_direction), "TRACK_NUMBER": str(scene.relative_orbit),
            "BURST_ID": scene.tile.lower().replace("-", "_"), "PLATFORM": scene.platform.upper(),
            "ZERO_DOPPLER_START_TIME": scene.datetime}  # fmt: skip
    for key, array, nodata, resampling in (
        ("VV", s1.vv, float("nan"), "average"),
        ("VH", s1.vh, float("nan"), "average"),
        ("mask", s1.mask, 255, "nearest"),
    ):
        catalog.write_cog(root / scene.href(key), array, epsg=scene.epsg, grid=scene.grids[0], nodata=nodata,
                          block_size=min(512, spec.block_size), resampling=resampling, tags=tags)  # fmt: skip
    return scene


def _s2_scenes(spec: WorldSpec):
    """Scenes per tile (outer loop, so one tile's ground stays cached) and acquisition."""
    for tile in s2_tiles(spec):
        footprint_tile = tile.polygon_lonlat()
        for acq in s2_acquisitions(spec):
            when = f"{acq.date.isoformat()}T{acq.track.clock}.{(acq.date.toordinal() * 7919) % 1000:03d}000Z"
            scene_id = s2_scene_id(acq.platform, tile.name, acq.date)
            scene = Scene(
                id=scene_id,
                collection=S2_COLLECTION,
                datetime=when,
                platform=acq.platform,
                tile=tile.name,
                zone=tile.zone,
                epsg=tile.epsg,
                relative_orbit=acq.track.relative_orbit,
                grids=(tile.grid(10.0), tile.grid(20.0)),
                assets=tuple((key, f"cogs/{S2_COLLECTION}/{scene_id}/{key}.tif") for key in S2_ASSETS),
                bbox=_bbox(footprint_tile),
                footprint=_ring(footprint_tile),
                processing_baseline=processing_baseline(acq.date),
            )
            coverage = s2_coverage(spec, scene)
            if coverage < 0.02:
                continue
            if coverage < 1.0:
                footprint = footprint_tile.intersection(_swath_polygon(spec, acq.track))
                scene = replace(scene, bbox=_bbox(footprint), footprint=_ring(footprint))
            yield scene


def _swath_polygon(spec: WorldSpec, track):
    """The imaged half-plane of a track, as a big lon/lat polygon."""
    from shapely.geometry import Polygon

    px, py, nx, ny = track.edge
    big = 200_000.0
    dx, dy = -ny, nx  # along the edge
    pts = [(px + dx * big, py + dy * big), (px - dx * big, py - dy * big),
           (px - dx * big + nx * big, py - dy * big + ny * big),
           (px + dx * big + nx * big, py + dy * big + ny * big)]  # fmt: skip
    lon, lat = spec.frame.to_lonlat(*np.array(pts).T)
    return Polygon(zip(lon, lat))


def _s1_scenes(spec: WorldSpec):
    platform = s1_platform(spec.year)
    for track in s1_tracks(spec):
        for burst in s1_bursts(spec, track):
            zone, grid, footprint = burst_zone_grid(spec, burst)
            for date in s1_dates(spec, track):
                when = s1_time(date, track, burst)
                scene_id = s1_scene_id(burst, when, platform)
                yield Scene(
                    id=scene_id,
                    collection=S1_COLLECTION,
                    datetime=f"{when.isoformat()}Z",
                    platform=platform,
                    tile=burst.burst_id,
                    zone=zone,
                    epsg=32600 + zone,
                    relative_orbit=track.relative_orbit,
                    grids=(grid,),
                    assets=tuple((key, f"cogs/{S1_COLLECTION}/{scene_id}/{scene_id}_{key}.tif") for key in S1_ASSETS),
                    bbox=_bbox(footprint),
                    footprint=_ring(footprint),
                    orbit_direction=track.direction,
                )


def _bbox(poly) -> tuple[float, float, float, float]:
    return tuple(round(float(v), 7) for v in poly.bounds)  # type: ignore[return-value]


def _ring(poly) -> tuple[tuple[float, float], ...]:
    return tuple((round(float(x), 7), round(float(y), 7)) for x, y in poly.exterior.coords)


# --------------------------------------------------------------------------- labels


def _write_labels(path: Path, spec: WorldSpec) -> None:
    """Class-balanced labelled points inside the bbox, away from parcel edges, 70/30 train/test."""
    import geopandas as gpd
    from shapely.geometry import Point

    rng = np.random.default_rng([spec.seed, 401])
    w, s, e, n = spec.bbox
    want = spec.labels_per_class
    picked: dict[int, list[tuple[float, float]]] = {c.id: [] for c in CLASSES}
    for _ in range(200):
        lon = rng.uniform(w, e, 4096)
        lat = rng.uniform(s, n, 4096)
        lx, ly = spec.frame.to_local(lon, lat)
        p = parcels_at(lx, ly, spec.seed, spec.parcel_m)
        ok = p.edge_distance >= spec.label_edge_m
        for k in np.nonzero(ok)[0]:
            bucket = picked.get(int(p.class_id[k]))
            if bucket is not None and len(bucket) < want:
                bucket.append((round(float(lon[k]), 7), round(float(lat[k]), 7)))
        if all(len(v) >= want for v in picked.values()):
            break
    rows = [(cid, pt) for cid in sorted(picked) for pt in picked[cid]]
    names = {c.id: c.name for c in CLASSES}
    split = np.where(rng.uniform(size=len(rows)) < 0.7, "train", "test")
    frame = gpd.GeoDataFrame(
        {
            "class_id": np.array([r[0] for r in rows], dtype=np.int32),
            "class_name": [names[r[0]] for r in rows],
            "split": split,
        },
        geometry=[Point(*r[1]) for r in rows],
        crs="EPSG:4326",
    )
    frame.to_parquet(path, index=False)
