"""The embed job: plan -> search -> map (read) -> encode -> reduce (write) -> publish.

The driver streams blocks through three stages with ``ray.wait``:

* read tasks (one per block of a unit, at most ``max_in_flight`` at once)
  return the block's :class:`~tessera_ray.model.PixelSeries` into the object
  store and a small info record to the driver;
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

import json
import math
import platform
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

import numpy as np

from tessera_ray import code_version
from tessera_ray.cluster import READER_RESOURCE, placement, ray_session
from tessera_ray.errors import DataError, TesseraError, one_line
from tessera_ray.grid import Unit, Window
from tessera_ray.pipeline.plan import (
    EmbedConfig,
    UnitPlan,
    ModelInfo,
    YearPlan,
    check_checkpoint,
    check_depths,
    plan_land,
    plan_units,
    plan_year,
)
from tessera_ray.pipeline.progress import Progress
from tessera_ray.pipeline.sizing import SizingInputs
from tessera_ray.redact import public_url, redact

if TYPE_CHECKING:
    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.store.sink import EmbeddingSink

RUNS_DIR = "manifests/runs"
READ_RETRIES = 2
WRITE_RETRIES = 3


class IncompleteRun(TesseraError):
    """Some units asked for could not be published (the others were)."""

    exit_code = 5


@dataclass
class YearResult:
    year: int
    units: int = 0
    done: int = 0
    skipped: int = 0
    failed: dict = field(default_factory=dict)
    """unit id -> one-line reason."""
    pixels: int = 0
    input_bytes: int = 0
    written_bytes: int = 0
    seconds: float = 0.0
    published_units: int = 0
    no_scenes: tuple = ()
    """Units no scene touches in the year: not read, not published (a later run plans them again)."""
    publishes: int = 0
    """Publishes of the year's manifest during and at the end of the job."""
    publish_seconds: float = 0.0
    unreadable_scenes: set = field(default_factory=set)
    """Scenes left out because an asset's bytes do not decode or it is gone (never for an outage)."""

    @property
    def rate(self) -> float:
        return self.pixels / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RunResult:
    run_id: str
    years: list[YearResult]
    seconds: float = 0.0
    record_keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not any(y.failed for y in self.years)

    def totals(self) -> dict:
        keys = ("units", "done", "skipped", "pixels", "input_bytes", "written_bytes")
        total = {k: sum(getattr(y, k) for y in self.years) for k in keys}
        total["failed"] = sum(len(y.failed) for y in self.years)
        total["px_per_s"] = total["pixels"] / self.seconds if self.seconds > 0 else 0.0
        return total


# --------------------------------------------------------------------------- Ray task bodies


@dataclass(frozen=True)
class BlockInfo:
    """What a read task tells the driver (the pixels go to the encoder by reference)."""

    pixels: int
    input_bytes: int
    skipped_scenes: tuple[str, ...]


def read_block(zone: int, window: Window, year: int, scenes: list, read_config):
    """Read one block and flatten it into the encoder's per-pixel layout."""
    from tessera_ray.model import PixelSeries
    from tessera_ray.sources.read import Block, read_cube

    from tessera_ray.pipeline.ingest import scenes_for_window

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


def write_unit(sink: EmbeddingSink, unit: Unit, year: int, windows: list[Window], scenes: dict,
               created: str | None, *encoded) -> dict:
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

    read: Callable = read_block
    write: Callable = write_unit


# --------------------------------------------------------------------------- driver


@dataclass
class _UnitState:
    unit: Unit
    windows: list[Window]
    scenes: object
    """ObjectRef of the scenes over the unit (shared by its read tasks)."""
    counts: dict
    reads_left: int = 0
    encoded: dict = field(default_factory=dict)
    failed: str | None = None
    input_bytes: int = 0


def open_units_bound(config: EmbedConfig) -> int:
    """Units allowed between first read and write: enough to keep the reads busy across unit edges."""
    blocks_per_unit = math.ceil(config.unit_size / config.block_size) ** 2
    return max(1, math.ceil(config.max_in_flight / blocks_per_unit)) + 1


def _task_cpus(pool, encoder_threads: int, placed: bool = False) -> float:
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


def run_year(plan: YearPlan, config: EmbedConfig, pool, model: ModelInfo, progress: Progress,
             publisher=None, tasks: StageTasks = StageTasks(), read: ReadConfig | None = None,
             sink: EmbeddingSink | None = None) -> YearResult:
    """Stream every unit of a year through read -> encode -> write; never raises for a failing unit.

    Units are written into ``sink`` (default: the publisher's, else the store at ``config.out``).
    Each written unit's part record goes to ``publisher`` (a
    :class:`~tessera_ray.pipeline.publishing.Publisher`), which publishes when due.
    ``read``: how blocks are read (default: the COG reader with this process's settings).
    """
    import ray

    from tessera_ray.pipeline.encode import EncoderUnavailable
    from tessera_ray.sources.read import ReadConfig, estimate_memory
    from tessera_ray.sources.scenes import S1, S2

    result = YearResult(plan.year, units=len(plan.units) + len(plan.published), skipped=len(plan.published))
    scenes = plan.scene_index
    started = time.monotonic()
    read_config = read or ReadConfig()
    if sink is None:
        sink = publisher.store if publisher is not None else _store_at(config.out, model)
    on_readers = placement(READER_RESOURCE)  # cluster.yaml's reader nodes, where the cluster has them
    task_cpus = _task_cpus(pool, config.encoder_threads, bool(on_readers))
    reader = ray.remote(tasks.read)
    read_options = dict(num_returns=2, num_cpus=task_cpus, max_retries=READ_RETRIES, retry_exceptions=True,
                        resources=on_readers)
    writer_memory = 3 * config.unit_size**2 * 132
    writer = ray.remote(tasks.write).options(num_cpus=task_cpus, memory=writer_memory, max_retries=WRITE_RETRIES,
                                            retry_exceptions=True, resources=on_readers)
    todo = deque(plan.units)
    blocks: deque[tuple[_UnitState, Window]] = deque()
    open_units: dict[Unit, _UnitState] = {}
    reads: dict = {}   # info ref -> (state, window, series ref)
    writes: dict = {}  # writer ref -> state
    readers: dict = {}  # declared memory -> the read task with those options
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
            if state.failed:
                continue
            near = scenes.near(state.unit.zone, window)
            memory = estimate_memory(max(window.shape), len({s.date for s in near if s.kind == S2}),
                                     2 * len({s.date for s in near if s.kind == S1}), read_config)
            series, info = reader_with(memory).remote(state.unit.zone, window, plan.year, state.scenes, read_config)
            reads[info] = (state, window, series)

    def reader_with(memory: int):
        """The read task with its memory declared; one options() per distinct memory (each costs the driver)."""
        if memory not in readers:
            if len(readers) >= 256:
                readers.clear()
            readers[memory] = reader.options(memory=memory, **read_options)
        return readers[memory]

    def finish_unit_reads(state: _UnitState) -> None:
        refs = [state.encoded[w] for w in state.windows]
        ref = writer.remote(sink, state.unit, plan.year, state.windows, state.counts, config.created, *refs)
        state.encoded.clear()
        writes[ref] = state

    def ready_now() -> list:
        """Every finished read and write: all that are ready in one call, else wait for one."""
        pending = [*reads, *writes]
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        if not ready:
            ready, _ = ray.wait(pending, num_returns=1, timeout=5.0)
        return ready

    def skip_published_elsewhere(published: frozenset) -> None:
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
            if published is not None:
                skip_published_elsewhere(published.published)
    progress.close()
    result.seconds = time.monotonic() - started
    return result


def _store_at(root: str, model: ModelInfo) -> EmbeddingSink:
    from tessera_ray.store import EmbeddingStore

    store = EmbeddingStore.open(root)
    store.model_checksum = model.checksum
    return store


def run_record(config: EmbedConfig, model: ModelInfo, result: RunResult, year: YearResult, plan: YearPlan) -> dict:
    """What a run did, saved beside the manifests; holds no secrets (URLs are stripped of credentials)."""
    cfg = asdict(config)
    for key in ("out", "checkpoint", "stac", "s1_stac", "catalog", "catalog_root", "roi"):
        if cfg.get(key):
            cfg[key] = public_url(cfg[key])
    cfg.pop("cache_dir", None)
    from tessera_ray.landmask import mask_label

    return {
        "run_id": result.run_id,
        "year": year.year,
        "land_mask": mask_label(config.land),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "host": platform.node(),
        "config": cfg,
        "model": asdict(model),
        "scenes": {"s2": plan.s2_scenes, "s1": plan.s1_scenes,
                   "s2_offset_flag_disagreed": sum(s.offset_flag_disagrees for s in plan.scenes)},
        "units": {"asked": year.units, "done": year.done, "skipped": year.skipped, "failed": len(year.failed),
                  "no_scenes": len(year.no_scenes)},
        "no_scenes": list(year.no_scenes),
        "failed": {unit: redact(reason) for unit, reason in year.failed.items()},
        "pixels": year.pixels,
        "seconds": round(year.seconds, 3),
        "px_per_s": round(year.rate, 1),
        "input_bytes": year.input_bytes,
        "written_bytes": year.written_bytes,
        "published_units": year.published_units,
        "publishes": year.publishes,
        "publish_seconds": year.publish_seconds,
        "unreadable_scenes": sorted(redact(href) for href in year.unreadable_scenes),
    }


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_embed(config: EmbedConfig, progress: Progress | None = None, echo=print,
              sizing: SizingInputs | None = None) -> RunResult:
    """The whole job. Raises :class:`IncompleteRun` (after publishing the rest) if a unit failed.

    ``sizing``: prices, node types and GPU speed for ``--dry-run``'s estimate.
    """
    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.sources.reader import COG

    progress = progress or Progress()
    started = time.monotonic()
    read = ReadConfig(env=COG.capture_env())  # the driver's reader settings; their mistakes before any request
    grid_units = plan_units(config.roi, config.unit_size)
    model = check_checkpoint(config.checkpoint, config.variant, config.data_source)
    check_depths(config.depths or (), model, config.checkpoint)
    unit_plan = plan_land(grid_units, config.land, config.piece, f"ROI {config.roi}")
    units = unit_plan.units
    plans = [plan_year(config, units, year) for year in config.years]
    result = RunResult(new_run_id(), [])
    if config.dry_run:
        for plan in plans:
            echo(redact(describe_plan(plan, config, unit_plan, sizing)))
        return result
    if not any(p.units for p in plans):
        for plan in plans:
            result.years.append(YearResult(plan.year, units=len(plan.published) + len(plan.no_scenes),
                                           skipped=len(plan.published), no_scenes=plan.no_scenes))
        result.seconds = time.monotonic() - started
        return result
    from tessera_ray.landmask import release_land_polygons

    release_land_polygons()  # the masks are not needed again: ~1.2 GB the driver would hold all job long
    from tessera_ray.store import EmbeddingStore
    from tessera_ray.viewer import publish_viewer

    store = EmbeddingStore.create_or_open(config.out, shard_size=config.unit_size, chunk_size=config.chunk_size,
                                          model=f"tessera-{model.variant}", model_checksum=model.checksum,
                                          depths=config.depths)
    if config.depths is None:  # an existing store's depths, adopted: the model must be able to write them
        check_depths(store.layout.depths, model, config.checkpoint,
                     f"{config.out} has Matryoshka depths {','.join(map(str, store.layout.depths))}, which")
    zones = sorted({u.zone for u in units})
    for plan in plans:
        store.prepare(plan.year, zones)
    # {root}/index.html + viewer/ first: consumers can watch the units appear as they are published
    publish_viewer(store.objects)
    with ray_session():
        year_results = _run_years(config, plans, model, progress, store, read)
    result.years = year_results
    result.seconds = time.monotonic() - started
    for plan, year in zip(plans, result.years):
        if not plan.units:
            continue
        key = f"{RUNS_DIR}/{year.year}-{result.run_id}.json"
        record = run_record(config, model, result, year, plan)
        store.objects.put(key, json.dumps(record, indent=1, sort_keys=True).encode())
        result.record_keys.append(key)
    return result


def _run_years(config, plans, model, progress, store, read) -> list[YearResult]:
    from tessera_ray.pipeline.encode import EncoderPool, EncoderSpec
    from tessera_ray.pipeline.publishing import Publisher

    spec = EncoderSpec(config.checkpoint, config.variant, data_source=config.data_source, seed=config.seed,
                       batch_size=config.batch_size, bf16=config.bf16, cpu_threads=config.encoder_threads)
    results = []
    with EncoderPool(spec, num_actors=config.encoders) as pool:
        for plan in plans:
            if not plan.units:
                results.append(YearResult(plan.year, units=len(plan.published) + len(plan.no_scenes),
                                          skipped=len(plan.published), no_scenes=plan.no_scenes))
                continue
            publisher = Publisher(store, plan.year, config.publish_every_units, config.publish_every_minutes,
                                  note=progress.note)
            year = run_year(plan, config, pool, model, progress, publisher, read=read)
            year.published_units = publisher.finish().units
            year.publishes, year.publish_seconds = publisher.publishes, round(publisher.seconds, 3)
            year.no_scenes = plan.no_scenes
            year.units += len(plan.no_scenes)
            results.append(year)
    return results


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return ""


def _amount(x: float) -> str:
    """Hours or dollars: two decimals, or two significant digits below 0.01 (a small ROI is not "0.00")."""
    if x == 0 or x >= 0.01:
        return f"{x:,.2f}"
    return f"{x:.{1 - math.floor(math.log10(x))}f}"


LISTED_UNITS = 50
"""A dry run lists the unit ids of a plan this small; a bigger one gives the first and last."""


def describe_plan(plan: YearPlan, config: EmbedConfig, units: UnitPlan, sizing: SizingInputs | None = None) -> str:
    """The dry-run report of one year: what the run would do and what it would cost."""
    from tessera_ray.landmask import mask_label
    from tessera_ray.pipeline.sizing import size_year

    sizing = sizing or SizingInputs()
    size = size_year(plan, config.block_size, config.depths or (), sizing.gpu_px_per_s, sizing.prices, sizing.nodes)
    piece = f", piece {units.piece} of {units.land_total:,} land unit(s)" if units.piece else ""
    lines = [
        f"year {plan.year}: {len(plan.units) + len(plan.published) + len(plan.no_scenes)} land unit(s) of "
        f"{config.unit_size} px over {config.roi}{piece}",
        f"  land mask: {mask_label(units.land)}; sea units skipped (no land): {units.sea:,}",
        f"  to embed: {len(plan.units)} unit(s), {size.blocks} block(s) of <= {config.block_size} px, {plan.pixels:,} px",
        f"  already published (skipped): {len(plan.published)}",
        f"  no scene in {plan.year} (not read): {len(plan.no_scenes)}",
        f"  scenes: {plan.s2_scenes} Sentinel-2, {plan.s1_scenes} Sentinel-1",
        f"  estimated read (decoded): {_size(size.decoded_bytes)}; write (uncompressed): {_size(size.write_bytes)}",
        f"  encoder: {_amount(size.gpu_hours)} GPU-hour(s) at {sizing.gpu_px_per_s:,.0f} px/s per GPU",
    ]
    if sizing.prices is None:
        lines.append("  cost: no price table (give --prices prices.yaml --cluster cluster.yaml)")
    else:
        lines.append(f"  read: ~{size.read_requests:,} requests, ~{_size(size.fetched_bytes)} fetched; "
                     f"{_amount(size.reader_slot_hours)} reader slot-hour(s); write: {size.put_requests:,} PUT requests")
    if size.cost is not None:
        nodes = sizing.nodes
        lines.append(f"  instance hours: {_amount(size.reader_node_hours)} {nodes['reader'].instance} (readers, "
                     f"{nodes['reader'].slots} slots each), {_amount(size.encoder_node_hours)} "
                     f"{nodes['encoder'].instance} (encoders); {_amount(size.wall_hours)} h of wall time at "
                     f"{nodes['reader'].max_workers} readers and {nodes['encoder'].max_workers} encoders")
        monthly = size.cost.pop("storage per month")
        items = ", ".join(f"{name} ${_amount(usd)}" for name, usd in size.cost.items())
        lines.append(f"  cost ({sizing.prices.source}): {items}; total ${_amount(sum(size.cost.values()))}, "
                     f"then ${_amount(monthly)} per month of storage")
    ids = [u.id for u in plan.units]
    if len(ids) > LISTED_UNITS:
        ids = [*ids[:3], f"... ({len(ids) - 6:,} more)", *ids[-3:]]
    lines += [f"  unit {u}" for u in ids]
    lines += [f"  no scene: unit {u}" for u in plan.no_scenes[:LISTED_UNITS]]
    return "\n".join(lines)


def summary(result: RunResult) -> str:
    """The final lines a user reads."""
    t = result.totals()
    lines = [
        f"units: {t['done']} done, {t['skipped']} skipped (already published), {t['failed']} failed "
        f"of {t['units']}; {t['pixels']:,} px in {result.seconds:.1f} s ({t['px_per_s']:,.0f} px/s)",
        f"bytes: {_size(t['input_bytes'])} read (decoded inputs), {_size(t['written_bytes'])} written",
    ]
    for year in result.years:
        if year.no_scenes:
            lines.append(f"{year.year}: {len(year.no_scenes)} unit(s) with no scene at all, not read: "
                         + ", ".join(year.no_scenes[:5]) + (" ..." if len(year.no_scenes) > 5 else ""))
        if year.unreadable_scenes:
            names = sorted(year.unreadable_scenes)
            lines.append(f"{year.year}: left out {len(names)} unreadable scene(s): {', '.join(names[:5])}"
                         + (" ..." if len(names) > 5 else ""))
        for unit_id, reason in sorted(year.failed.items()):
            lines.append(f"failed {year.year} {unit_id}: {reason}")
    if result.record_keys:
        lines.append("run record: " + ", ".join(result.record_keys))
    return redact("\n".join(lines))


def check_complete(result: RunResult) -> None:
    """Raise :class:`IncompleteRun` when something asked for was not published."""
    failed = sum(len(y.failed) for y in result.years)
    if failed:
        asked = sum(y.units for y in result.years)
        raise IncompleteRun(f"{failed} of {asked} unit(s) failed and were not published; re-run to retry them")

