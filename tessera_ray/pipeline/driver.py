"""The driver loop of one year of the embed job, and the Ray task bodies it runs.

:func:`run_year` streams blocks through three stages with ``ray.wait``:

* read tasks (one per block of a unit, at most ``max_in_flight`` at once,
  submitted through :class:`~tessera_ray.pipeline.blocks.ReadTasks`, the read
  scheduler ``ingest`` uses too) return the block's
  :class:`~tessera_ray.model.PixelSeries` into the object store and a small
  info record to the driver;
* each finished read is handed, as an object reference (the pixels never pass
  through the driver), to the :class:`~tessera_ray.pipeline.encode.EncoderPool`,
  whose ``submit`` waits while every actor is busy;
* once every block of a unit is submitted, one writer task per unit waits for
  its encoded blocks, assembles the unit and calls the sink's ``write_unit``
  (:mod:`tessera_ray.store.sink`; the Zarr store in a job); its part record comes
  back to the driver, which publishes finished units every
  ``publish_every_units`` units or ``publish_every_minutes`` minutes
  (:mod:`tessera_ray.pipeline.publishing`) and skips the units it has not
  started that another job published meanwhile.

At most ``open_units`` units are between their first read and their write, so
the object store holds at most that many units of embeddings plus
``max_in_flight`` blocks of time series, whatever the ROI. A unit whose read,
encode or write keeps failing after Ray's retries is reported and left out of
the manifest; every other unit still gets published.

A read task skips (and reports) only scenes whose assets are bad in
themselves (undecodable or gone); an asset its source did not deliver
(:class:`~tessera_ray.sources.cog.AssetUnavailable`: 5xx, 429, timeouts,
connection errors, denied access) fails the task instead, so a published
unit never depends on an outage: a re-run publishes exactly what an
undisturbed run would have.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera_ray.cluster import READER_RESOURCE, placement
from tessera_ray.errors import DataError, TesseraError, one_line
from tessera_ray.grid import Unit, Window
from tessera_ray.pipeline.plan import OUTPUT_BYTES, EmbedConfig, ModelInfo, YearPlan
from tessera_ray.pipeline.progress import Progress

if TYPE_CHECKING:
    from tessera_ray.model.inference import EncodedPixels, PixelSeries
    from tessera_ray.pipeline.encode import EncoderPool
    from tessera_ray.pipeline.publishing import Publisher
    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.sources.scenes import Scene
    from tessera_ray.store.sink import EmbeddingSink

WRITE_RETRIES = 3


@dataclass
class YearResult:
    year: int
    units: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    """unit id -> one-line reason."""
    pixels: int = 0
    input_bytes: int = 0
    written_bytes: int = 0
    seconds: float = 0.0
    published_units: int = 0
    no_scenes: tuple[str, ...] = ()
    """Units no scene touches in the year: not read, not published (a later run plans them again)."""
    publishes: int = 0
    """Publishes of the year's manifest during and at the end of the job."""
    publish_seconds: float = 0.0
    unreadable_scenes: set[str] = field(default_factory=set)
    """Scenes left out because an asset's bytes do not decode or it is gone (never for an outage)."""

    @property
    def rate(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else 0.0



# --------------------------------------------------------------------------- Ray task bodies


@dataclass(frozen=True)
class BlockInfo:
    """What a read task tells the driver (the pixels go to the encoder by reference)."""

    pixels: int
    input_bytes: int
    skipped_scenes: tuple[str, ...]


def read_block(zone: int, window: Window, year: int, scenes: list[Scene],
               read_config: ReadConfig) -> tuple[PixelSeries, BlockInfo]:
    """Read one block and flatten it into the encoder's per-pixel layout."""
    from tessera_ray.model import PixelSeries
    from tessera_ray.pipeline.blocks import scenes_for_window
    from tessera_ray.sources.read import Block, read_cube

    cube = read_cube(Block(zone, window), scenes, read_config)
    near = scenes_for_window(zone, window, scenes)
    if near and len(cube.skipped_scenes) >= len(near):
        # a service or configuration failure, not bad scenes: fail (and retry) rather than publish no data
        raise DataError(f"none of the {len(near)} scenes over block {window.row},{window.col} could be read")
    series = PixelSeries.from_block(
        block_id=f"zone {zone} block {window.row},{window.col}", year=year, zone=zone, row=window.row, col=window.col,
        bands=cube.bands, masks=cube.masks, doys=cube.doys,
        sar_ascending=cube.sar_ascending, sar_ascending_doy=cube.sar_ascending_doy,
        sar_descending=cube.sar_descending, sar_descending_doy=cube.sar_descending_doy,
    )
    nbytes = sum(a.nbytes for a in (cube.bands, cube.masks, cube.sar_ascending, cube.sar_descending))
    return series, BlockInfo(window.size, nbytes, cube.skipped_scenes)


def write_unit(sink: EmbeddingSink, unit: Unit, year: int, windows: list[Window], scenes: dict[str, Any],
               created: str | None, *encoded: EncodedPixels) -> dict[str, Any]:
    """The reduce step: assemble a unit's encoded blocks and write the unit once into ``sink``.

    The embedding width is the encoder's: the blocks' last axis.
    """
    size = unit.size
    width = encoded[0].embeddings.shape[-1]
    embeddings = np.zeros((size, size, width), dtype=np.int8)
    scales = np.full((size, size), np.inf, dtype=np.float32)
    origin = unit.window
    for window, block in zip(windows, encoded, strict=True):
        rows = slice(window.row - origin.row, window.row - origin.row + window.height)
        cols = slice(window.col - origin.col, window.col - origin.col + window.width)
        embeddings[rows, cols] = block.embeddings.reshape(window.height, window.width, width)
        scales[rows, cols] = block.scales.reshape(window.height, window.width)
    record = sink.write_unit(unit, year, embeddings, scales, scenes=scenes, created=created)
    return {"valid": record.valid_pixels, "bytes": sum(o["size"] for o in record.objects), "record": record}


@dataclass(frozen=True)
class StageTasks:
    """The bodies of a year's Ray tasks: read a block, write a unit.

    The job always runs these; the scheduler's benchmark (``jobs/bench_planet.py``)
    hands :func:`run_year` stand-ins with the same signatures and results, so
    that it measures this driver loop, not a copy of it.
    """

    read: Callable[..., Any] = read_block
    write: Callable[..., Any] = write_unit


# --------------------------------------------------------------------------- driver


@dataclass
class _UnitState:
    unit: Unit
    windows: list[Window]
    scenes: object
    """ObjectRef of the scenes over the unit (shared by its read tasks)."""
    counts: dict[str, Any]
    reads_left: int = 0
    encoded: dict[Window, Any] = field(default_factory=dict)  # window -> ObjectRef of its EncodedPixels
    failed: str | None = None
    input_bytes: int = 0


def open_units_bound(config: EmbedConfig) -> int:
    """Units allowed between first read and write: enough to keep the reads busy across unit edges."""
    blocks_per_unit = math.ceil(config.unit_size / config.block_size) ** 2
    return max(1, math.ceil(config.max_in_flight / blocks_per_unit)) + 1


def _task_cpus(pool: EncoderPool, encoder_threads: int, placed: bool = False) -> float:
    """CPUs a read or write task reserves: 1, or 0 when CPU encoders hold every CPU of the cluster.

    CPU encoder actors reserve their threads for their lifetime; on a 1-CPU
    machine a task asking for a CPU would then never start. With none left the
    tasks share the CPUs, still bounded by ``max_in_flight`` and their memory.
    Tasks ``placed`` on reader nodes never compete with the encoders for CPUs.
    """
    import ray

    if pool.use_gpu or placed:
        return 1.0
    free = ray.cluster_resources().get("CPU", 0) - pool.size * encoder_threads
    return 1.0 if free >= 1 else 0.0


def run_year(plan: YearPlan, config: EmbedConfig, pool: EncoderPool, model: ModelInfo, progress: Progress,
             publisher: Publisher | None = None, tasks: StageTasks = StageTasks(), read: ReadConfig | None = None,
             sink: EmbeddingSink | None = None) -> YearResult:
    """Stream every unit of a year through read -> encode -> write; never raises for a failing unit.

    Units are written into ``sink`` (default: the publisher's, else the store at ``config.out``).
    Each written unit's part record goes to ``publisher`` (a
    :class:`~tessera_ray.pipeline.publishing.Publisher`), which publishes when due.
    ``read``: how blocks are read (default: the COG reader with this process's settings).
    """
    import ray

    from tessera_ray.pipeline.blocks import ReadTasks
    from tessera_ray.pipeline.encode import EncoderUnavailable
    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.sources.scenes import S1, S2

    result = YearResult(plan.year, units=len(plan.units) + len(plan.published), skipped=len(plan.published))
    scenes = plan.scene_index
    started = time.monotonic()
    read_config = read or ReadConfig()
    if sink is None:
        sink = publisher.store if publisher is not None else _store_at(config.out, model)
    on_readers = placement(READER_RESOURCE)  # cluster.yaml's reader nodes, where the cluster has them
    task_cpus = _task_cpus(pool, config.encoder_threads, bool(on_readers))
    reader = ReadTasks(tasks.read, num_cpus=task_cpus, num_returns=2)
    writer_memory = 3 * config.unit_size**2 * OUTPUT_BYTES
    writer = ray.remote(tasks.write).options(num_cpus=task_cpus, memory=writer_memory, max_retries=WRITE_RETRIES,
                                            retry_exceptions=True, resources=on_readers)
    todo = deque(plan.units)
    blocks: deque[tuple[_UnitState, Window]] = deque()
    open_units: dict[Unit, _UnitState] = {}
    reads: dict[Any, tuple[_UnitState, Window, Any]] = {}   # info ref -> (state, window, series ref)
    writes: dict[Any, _UnitState] = {}  # writer ref -> state
    bound = open_units_bound(config)
    progress.start(f"{plan.year}", len(plan.units))

    def fail(state: _UnitState, reason: str) -> None:
        if state.failed is None:
            state.failed = reason
            result.failed[state.unit.id] = reason
            progress.unit_failed(state.unit.id, reason)
        state.encoded.clear()

    def open_next_unit() -> None:
        unit = todo.popleft()
        near = scenes.near(unit.zone, unit.window)
        counts = {"s2": sum(s.kind == S2 for s in near), "s1": sum(s.kind == S1 for s in near)}
        windows = list(unit.window.blocks(config.block_size))
        # shared by the unit's read tasks through the object store; a unit read in one task takes them inline
        shared = ray.put(near) if len(windows) > 1 else near
        state = _UnitState(unit, windows, shared, counts, reads_left=len(windows))
        open_units[unit] = state
        blocks.extend((state, w) for w in windows)

    def submit_reads() -> None:
        while len(reads) < config.max_in_flight:
            if not blocks:
                if not todo or len(open_units) >= bound:
                    return
                open_next_unit()
                continue
            state, window = blocks.popleft()
            if not state.failed:
                near = scenes.near(state.unit.zone, window)
                try:
                    series, info = reader.submit(window, near, read_config, state.unit.zone, window, plan.year,
                                                 state.scenes, read_config)
                    reads[info] = (state, window, series)
                    continue
                except TesseraError as exc:  # a block larger than the cluster's memory
                    fail(state, one_line(exc))
            state.reads_left -= 1  # a block of a failed unit, never read: the unit leaves once none is in flight
            if state.reads_left == 0:
                open_units.pop(state.unit, None)

    def finish_unit_reads(state: _UnitState) -> None:
        refs = [state.encoded[w] for w in state.windows]
        ref = writer.remote(sink, state.unit, plan.year, state.windows, state.counts, config.created, *refs)
        state.encoded.clear()
        writes[ref] = state

    def ready_now() -> list[Any]:
        """Every finished read and write: all that are ready in one call, else wait for one."""
        pending = [*reads, *writes]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        if not ready:
            ready, _ = ray.wait(pending, num_returns=1, timeout=5.0)
        return ready

    def skip_published_elsewhere(published: frozenset[str]) -> None:
        """Drop the units not started yet that another job (an overlapping ROI) has published meanwhile."""
        kept = [u for u in todo if u.id not in published]
        for unit in (u for u in todo if u.id in published):
            result.skipped += 1
            progress.unit_skipped(unit.id)
        todo.clear()
        todo.extend(kept)

    abandoned: list[str] = []  # why the encoders were given up on, once they are

    def abandon(reason: str) -> None:
        """No encoder to be had: every unit not yet written fails (a re-run publishes it); reads drain."""
        abandoned.append(reason)
        writing = {id(state) for state in writes.values()}
        for state in list(open_units.values()):
            if id(state) not in writing:
                fail(state, reason)
        for unit in todo:
            result.failed[unit.id] = reason
            progress.unit_failed(unit.id, reason)
        todo.clear()
        blocks.clear()
        for ref in writes:
            ray.cancel(ref)  # waiting for encoded blocks that will not come (one already writing finishes)

    while todo or blocks or reads or writes:
        submit_reads()
        ready = ready_now()
        if not ready and not abandoned and pool.in_flight():
            try:
                pool.check()
            except EncoderUnavailable as exc:
                abandon(one_line(exc, named=True))
        for ref in ready:
            if ref in reads:
                state, window, series = reads.pop(ref)
                state.reads_left -= 1
                try:
                    info: BlockInfo = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - any task failure fails only this unit
                    fail(state, f"reading block {window.row},{window.col}: {one_line(exc, named=True)}")
                else:
                    state.input_bytes += info.input_bytes
                    result.unreadable_scenes.update(info.skipped_scenes)
                    if not state.failed:
                        try:
                            state.encoded[window] = pool.submit(series)
                        except EncoderUnavailable as exc:
                            abandon(one_line(exc, named=True))
                del series
                if state.reads_left == 0:
                    if state.failed:
                        open_units.pop(state.unit, None)
                    else:
                        finish_unit_reads(state)
            else:
                state = writes.pop(ref)
                open_units.pop(state.unit, None)
                try:
                    written = ray.get(ref)
                except Exception as exc:  # noqa: BLE001
                    fail(state, abandoned[0] if abandoned else one_line(exc, named=True))
                    continue
                result.done += 1
                result.pixels += state.unit.window.size
                result.input_bytes += state.input_bytes
                result.written_bytes += written["bytes"]
                progress.unit_done(state.unit.id, state.unit.window.size)
                if publisher is not None:
                    publisher.add(written["record"])
        if publisher is not None:  # checked at least every 5 s (the wait's timeout), for the minutes bound
            published = publisher.maybe_publish()
            if published is not None and publisher.others_published:  # else the scan would find nothing
                skip_published_elsewhere(published.published)
    progress.close()
    result.seconds = time.monotonic() - started
    return result


def _store_at(root: str, model: ModelInfo) -> EmbeddingSink:
    from tessera_ray.store import EmbeddingStore

    store = EmbeddingStore.open(root)
    store.model_checksum = model.checksum
    return store
