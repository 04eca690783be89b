"""Ingest on Ray: one task per block of a unit, many in flight, memory declared per task.

A unit (one Zarr shard, up to 4096 px square) is split into blocks of at most
``block_size`` px, so what a task holds is bounded by configuration (block
size x dates), not by the ROI or the unit. Each task declares that bound as
its Ray ``memory`` so the scheduler never packs more blocks onto a node than
fit (:class:`~tessera_ray.pipeline.blocks.ReadTasks`, the read scheduler
``embed`` uses too); the driver keeps at most ``max_in_flight`` tasks submitted (``ray.wait``)
and each worker process caps its concurrent COG requests
(:class:`~tessera_ray.sources.cog.RequestSlots`).

Two ways out:

* :func:`iter_block_cubes` yields ``(unit, cube)`` per block through the object
  store, for the encode stage;
* :func:`ingest_to_npy` has each task write its block next to the output and
  the driver stitch a unit's blocks into one folder in the upstream layout
  (:func:`~tessera_ray.cube.merge_npy`, memory-mapped), published by rename.

Failures follow :mod:`tessera_ray.sources.cog`: a scene with a bad asset is
skipped and reported; an asset its source did not deliver
(:class:`~tessera_ray.sources.cog.AssetUnavailable`) fails the block task,
Ray retries it, and if it keeps failing the run stops with that error
(exit 3): units already written stay complete, the others are not written,
and a re-run writes them with the same values an uninterrupted run would.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera_ray.cube import TimeSeriesCube, merge_npy
from tessera_ray.errors import DataError, TesseraError, one_line, root_cause
from tessera_ray.grid import Unit
from tessera_ray.pipeline.blocks import ReadTasks, scenes_for_window
from tessera_ray.sources.cog import AssetUnavailable
from tessera_ray.sources.read import Block, ReadConfig, read_cube
from tessera_ray.sources.scenes import Scene


@dataclass(frozen=True)
class IngestConfig:
    """Bounds of the map stage."""

    block_size: int = 512
    """Pixels per side of the blocks a unit is read in; with the number of dates, bounds task memory."""
    max_in_flight: int = 8
    """Block tasks submitted at once."""
    read: ReadConfig = field(default_factory=ReadConfig)


@dataclass(frozen=True)
class _Counters:
    """What a block task that wrote its cube sends back."""

    skipped_scenes: tuple[str, ...]
    unknown_orbit: tuple[str, ...]


@dataclass
class IngestReport:
    """What a run did: units written and the scenes it could not use."""

    units: list[str] = field(default_factory=list)
    blocks: int = 0
    skipped_scenes: set[str] = field(default_factory=set)
    unknown_orbit: set[str] = field(default_factory=set)

    def add(self, block: TimeSeriesCube | _Counters) -> None:
        self.blocks += 1
        self.skipped_scenes.update(block.skipped_scenes)
        self.unknown_orbit.update(block.unknown_orbit)


def _read_block(
    block: Block, scenes: list[Scene], config: ReadConfig, out_dir: str | None
) -> TimeSeriesCube | _Counters:
    """The task body: read one block; save it to ``out_dir`` (returning only its counters) or return the cube."""
    cube = read_cube(block, scenes, config)
    if out_dir is None:
        return cube
    cube.save_npy(out_dir)
    return _Counters(cube.skipped_scenes, cube.unknown_orbit)


def _run_blocks(
    units: Sequence[Unit],
    scenes: Sequence[Scene],
    config: IngestConfig,
    out_dir: Callable[[Unit, Block], str | None],
) -> Iterator[tuple[Unit, Block, object, bool]]:
    """Submit one task per block, at most ``max_in_flight`` at once; yield (unit, block, result, last_of_unit)."""
    import ray

    tasks = ReadTasks(_read_block)
    pending: dict[Any, tuple[Unit, Block]] = {}  # task ref -> its block
    remaining: dict[Unit, int] = defaultdict(int)
    jobs: list[tuple[Unit, Block, list[Scene]]] = []
    for unit in units:
        for window in unit.window.blocks(config.block_size):
            block = Block(unit.zone, window)
            jobs.append((unit, block, scenes_for_window(unit.zone, window, scenes)))
            remaining[unit] += 1
    jobs.reverse()

    def submit() -> None:
        unit, block, todo = jobs.pop()
        ref = tasks.submit(block.window, todo, config.read, block, todo, config.read, out_dir(unit, block))
        pending[ref] = (unit, block)

    while jobs or pending:
        while jobs and len(pending) < config.max_in_flight:
            submit()
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            unit, block = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                cause = root_cause(exc)
                if isinstance(cause, AssetUnavailable):
                    raise AssetUnavailable(f"unit {unit.id} not written ({cause}); re-run to retry it") from None
                if isinstance(cause, TesseraError):
                    raise cause from None
                raise DataError(f"reading block {block.window} of {unit.id} failed: {one_line(cause)}") from None
            remaining[unit] -= 1
            yield unit, block, result, remaining[unit] == 0


def iter_block_cubes(
    units: Sequence[Unit], scenes: Sequence[Scene], config: IngestConfig | None = None
) -> Iterator[tuple[Unit, TimeSeriesCube]]:
    """Every block of every unit as a cube, in completion order."""
    config = config or IngestConfig()
    for unit, _, cube, _ in _run_blocks(units, scenes, config, lambda u, b: None):
        yield unit, cube  # type: ignore[misc]


def ingest_to_npy(
    units: Sequence[Unit],
    scenes: Sequence[Scene],
    out: str | Path,
    config: IngestConfig | None = None,
    on_unit: Callable[[str], None] | None = None,
) -> IngestReport:
    """Write ``out/{unit.id}/`` in the upstream npy layout for every unit.

    A unit folder appears complete or not at all.
    """
    config = config or IngestConfig()
    out = Path(out)
    staging = out / ".blocks"
    report = IngestReport()

    def block_dir(unit: Unit, block: Block) -> str:
        w = block.window
        return str(staging / unit.id / f"{w.row}_{w.col}")

    for unit, _, counters, last in _run_blocks(units, scenes, config, block_dir):
        report.add(counters)  # type: ignore[arg-type]
        if last:
            parts = sorted((staging / unit.id).iterdir())
            merge_npy(parts, out / unit.id, unit.window)
            shutil.rmtree(staging / unit.id)
            report.units.append(unit.id)
            if on_unit is not None:
                on_unit(unit.id)
    if staging.exists() and not any(staging.iterdir()):
        staging.rmdir()
    return report
