"""One block's :class:`~tessera_ray.cube.TimeSeriesCube` from its scenes.

The composition of :mod:`.cog` (I/O) and :mod:`.sentinel2` / :mod:`.sentinel1`
(rules). Per UTC date, the SCL of every scene is read first; the mosaic owner
of each pixel follows from the SCLs alone, so the ten spectral bands of a
scene that owns no pixel of the block are never fetched. Asset reads run in
a thread pool capped per process (:class:`~.cog.RequestSlots`), several dates
at a time.

A scene with a bad asset (:class:`~.cog.UnreadableAsset`: its bytes do not
decode, or it is gone) is left out of its date's mosaic and named in the
cube's ``skipped_scenes``: every read of those bytes gives the same answer.
An asset its source did not deliver (:class:`~.cog.AssetUnavailable`: 5xx,
429, timeouts, connection errors, denied access) fails the whole read, and
the reads still queued are dropped: leaving that scene out would make the
cube depend on when the outage happened.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from tessera_ray.cube import TimeSeriesCube
from tessera_ray.grid import Unit, Window, zone_grid
from tessera_ray.sources import sentinel1, sentinel2
from tessera_ray.sources.cog import (
    AssetUnavailable,
    BandRead,
    ReaderEnv,
    RequestSlots,
    TargetGrid,
    UnreadableAsset,
    capture_env,
)
from tessera_ray.sources.reader import COG, SceneReader
from tessera_ray.sources.scenes import S1, S2, Scene


@dataclass(frozen=True)
class Block:
    """A window of one zone grid: what one read task produces a cube for."""

    zone: int
    window: Window

    @classmethod
    def of(cls, target: Unit | Block) -> Block:
        return target if isinstance(target, Block) else cls(target.zone, target.window)

    @property
    def grid(self) -> TargetGrid:
        g = zone_grid(self.zone)
        return TargetGrid(self.window.shape, g.window_transform(self.window), g.crs)

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        return tuple(zone_grid(self.zone).window_polygon_lonlat(self.window, densify=4).bounds)  # type: ignore[return-value]


@dataclass(frozen=True)
class ReadConfig:
    """How blocks are read; travels to every worker."""

    resampling: str = "nearest"
    """20 m Sentinel-2 bands onto 10 m: nearest (what v1.x checkpoints were trained on) or bilinear."""
    s1_resampling: str = "bilinear"
    max_requests: int = 16
    """Concurrent asset reads per worker process."""
    dates_in_flight: int = 4
    env: ReaderEnv = field(default_factory=capture_env)
    """GDAL settings and credentials, captured where the config is made (the driver)."""
    reader: SceneReader = COG
    """How assets are read (:mod:`.reader`); ``env`` is restored through it in the worker."""


def read_cube(target: Unit | Block, scenes: Sequence[Scene], config: ReadConfig | None = None) -> TimeSeriesCube:
    """The time series of ``target`` from ``scenes`` (any mix of S2 and S1; those missing it are ignored).

    Raises :class:`~.cog.AssetUnavailable` when an asset's source failed (see the module docstring).
    """
    config = config or ReadConfig()
    block = Block.of(target)
    west, south, east, north = block.lonlat_bounds()
    near = [s for s in scenes if s.bbox[0] <= east and s.bbox[2] >= west and s.bbox[1] <= north and s.bbox[3] >= south]
    reader = _BlockReader(block, config)
    with (
        config.reader.restore_env(config.env),
        ThreadPoolExecutor(config.max_requests, thread_name_prefix="cog") as io,
        ThreadPoolExecutor(config.dates_in_flight, thread_name_prefix="date") as dates,
    ):
        reader.io = io
        try:
            bands, masks, doys = reader.sentinel2([s for s in near if s.kind == S2], dates)
            sar = reader.sentinel1([s for s in near if s.kind == S1], dates)
        except AssetUnavailable:
            for pool in (dates, io):  # the block fails: do not read the rest of the year first
                pool.shutdown(wait=False, cancel_futures=True)
            raise
    h, w = block.window.shape
    stacks = {}
    for direction in (sentinel1.ASCENDING, sentinel1.DESCENDING):
        layers = sorted(sar[direction].items())
        stacks[direction] = (
            np.stack([a for _, a in layers]) if layers else np.zeros((0, h, w, 2), np.int16),
            np.array([d for d, _ in layers], dtype=np.int16),
        )
    cube = TimeSeriesCube(
        bands=bands, masks=masks, doys=doys,
        sar_ascending=stacks[sentinel1.ASCENDING][0], sar_ascending_doy=stacks[sentinel1.ASCENDING][1],
        sar_descending=stacks[sentinel1.DESCENDING][0], sar_descending_doy=stacks[sentinel1.DESCENDING][1],
        zone=block.zone, window=block.window,
        skipped_scenes=tuple(sorted(reader.skipped)), unknown_orbit=tuple(sorted(reader.unknown_orbit)),
    )
    return cube.without_empty_dates()


def _by_date(scenes: Sequence[Scene]) -> dict[date, list[Scene]]:
    groups: dict[date, list[Scene]] = defaultdict(list)
    for s in sorted(scenes, key=lambda s: s.sort_key):
        groups[s.date].append(s)
    return dict(sorted(groups.items()))


class _BlockReader:
    def __init__(self, block: Block, config: ReadConfig) -> None:
        self.block, self.config, self.grid = block, config, block.grid
        self.slots = RequestSlots.get(config.max_requests)
        self.io: ThreadPoolExecutor | None = None
        self.skipped: set[str] = set()
        self.unknown_orbit: set[str] = set()
        self._lock = threading.Lock()

    def _submit(self, scene: Scene, role: str, resampling: str) -> Future[BandRead]:
        asset = scene.asset(role)

        def task() -> BandRead:
            with self.slots:
                return self.config.reader.read(asset.href, self.grid, resampling, self.config.env,
                                               scene.earthdata_auth)

        assert self.io is not None
        return self.io.submit(task)

    def _skip(self, scene: Scene) -> None:
        with self._lock:
            self.skipped.add(scene.id)

    # ------------------------------------------------------------------ Sentinel-2
    def sentinel2(
        self, scenes: Sequence[Scene], dates: ThreadPoolExecutor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        groups = _by_date(scenes)
        h, w = self.block.window.shape
        bands = np.zeros((len(groups), h, w, sentinel2.S2_BANDS), np.uint16)
        masks = np.zeros((len(groups), h, w), np.uint8)
        doys = np.array([sentinel2.day_of_year(g[0].datetime) for g in groups.values()], dtype=np.uint16)
        jobs = [dates.submit(self._s2_date, group, bands[t], masks[t]) for t, group in enumerate(groups.values())]
        for job in jobs:
            job.result()
        return bands, masks, doys

    def _s2_date(self, group: list[Scene], bands: np.ndarray, mask: np.ndarray) -> None:
        """Mosaic one date into ``bands`` (H, W, 10) and ``mask`` (H, W), in place."""
        scl_jobs = [self._submit(s, sentinel2.SCL_KEY, "nearest") for s in group]
        scenes, scls = [], []
        for scene, job in zip(group, scl_jobs):
            try:
                scls.append(job.result().data)
                scenes.append(scene)
            except UnreadableAsset:
                self._skip(scene)
        while scenes:
            owner, clear = sentinel2.mosaic_owner(scls)
            mask[:] = clear
            bands[:] = 0
            failed = self._s2_fill(scenes, owner, bands)
            if failed is None:
                return
            self._skip(scenes[failed])
            del scenes[failed], scls[failed]
        mask[:] = 0

    def _s2_fill(self, scenes: list[Scene], owner: np.ndarray, bands: np.ndarray) -> int | None:
        """Read the bands of every scene that owns pixels; the index of a scene that failed, if any."""
        jobs: list[tuple[int, int, np.ndarray, Future[BandRead]]] = []
        for i, scene in enumerate(scenes):
            take = owner == i
            if not take.any():
                continue
            for b, role in enumerate(sentinel2.BAND_KEYS):
                jobs.append((i, b, take, self._submit(scene, role, self.config.resampling)))
        failed = None
        for i, b, take, job in jobs:
            if failed is not None:
                job.cancel()
                continue
            try:
                dn = job.result().data
            except UnreadableAsset:
                failed = i
                continue
            bands[..., b][take] = sentinel2.harmonise(dn[take], scenes[i].boa_offset)
        return failed

    # ------------------------------------------------------------------ Sentinel-1
    def sentinel1(self, scenes: Sequence[Scene], dates: ThreadPoolExecutor) -> dict[str, dict[int, np.ndarray]]:
        out: dict[str, dict[int, np.ndarray]] = {sentinel1.ASCENDING: {}, sentinel1.DESCENDING: {}}
        jobs = [dates.submit(self._s1_date, group) for group in _by_date(scenes).values()]
        for job in jobs:
            doy, layers = job.result()
            for direction, layer in layers.items():
                out[direction][doy] = layer
        return out

    def _s1_date(self, group: list[Scene]) -> tuple[int, dict[str, np.ndarray]]:
        resampling = self.config.s1_resampling
        jobs = [(s, self._submit(s, "VV", resampling), self._submit(s, "VH", resampling)) for s in group]
        per_direction: dict[str, list[np.ndarray]] = defaultdict(list)
        for scene, vv_job, vh_job in jobs:
            try:
                vv, vh = vv_job.result(), vh_job.result()
            except UnreadableAsset:
                self._skip(scene)
                continue
            direction = scene.orbit or sentinel1.orbit_direction(
                vv.tags.get(sentinel1.ORBIT_TAG) or vh.tags.get(sentinel1.ORBIT_TAG)
            )
            if direction is None:
                with self._lock:
                    self.unknown_orbit.add(scene.id)
                continue
            per_direction[direction].append(
                np.stack([sentinel1.to_int16(vv.data), sentinel1.to_int16(vh.data)], axis=-1)
            )
        doy = sentinel2.day_of_year(group[0].datetime)
        return doy, {d: sentinel1.mosaic_first_valid(layers) for d, layers in per_direction.items()}


def estimate_memory(block_px: int, n_s2_dates: int, n_s1_dates: int, config: ReadConfig | None = None) -> int:
    """Bytes a block read holds at its peak: the stacks twice (dropping empty dates copies) plus reads in flight."""
    config = config or ReadConfig()
    pixels = block_px * block_px
    stacks = pixels * (n_s2_dates * (2 * sentinel2.S2_BANDS + 1) + n_s1_dates * 2 * 2 * 2)
    in_flight = config.max_requests * pixels * 4 * 2 + config.dates_in_flight * pixels * 16
    return 2 * stacks + in_flight + 64 * 2**20

