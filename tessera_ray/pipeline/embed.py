"""The embed job: plan -> search -> each year through the driver loop -> publish -> run records.

:func:`run_embed` checks the checkpoint, plans the land units of the ROI and
the scenes of each year, creates or opens the Zarr store (the job's sink,
:mod:`tessera_ray.store.sink`), and runs every year through
:func:`tessera_ray.pipeline.driver.run_year` (read -> encode -> write, with a
:class:`~tessera_ray.pipeline.publishing.Publisher` publishing as it goes);
then it saves a run record per year beside the manifests.
"""

from __future__ import annotations

import json
import math
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tessera_ray import code_version
from tessera_ray.cluster import ray_session
from tessera_ray.errors import TesseraError
from tessera_ray.pipeline.driver import YearResult, run_year
from tessera_ray.pipeline.plan import (
    EmbedConfig,
    ModelInfo,
    UnitPlan,
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
    from tessera_ray.store import EmbeddingStore

RUNS_DIR = "manifests/runs"


class IncompleteRun(TesseraError):
    """Some units asked for could not be published (the others were)."""

    exit_code = 5


@dataclass
class RunResult:
    run_id: str
    years: list[YearResult]
    seconds: float = 0.0
    record_keys: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not any(y.failed for y in self.years)

    def totals(self) -> dict[str, Any]:
        keys = ("units", "done", "skipped", "pixels", "input_bytes", "written_bytes")
        total = {k: sum(getattr(y, k) for y in self.years) for k in keys}
        total["failed"] = sum(len(y.failed) for y in self.years)
        total["px_per_s"] = total["pixels"] / self.seconds if self.seconds > 0 else 0.0
        return total


def run_record(
    config: EmbedConfig, model: ModelInfo, result: RunResult, year: YearResult, plan: YearPlan
) -> dict[str, Any]:
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
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
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
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def run_embed(config: EmbedConfig, progress: Progress | None = None, echo: Callable[[str], None] = print,
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


def _run_years(config: EmbedConfig, plans: list[YearPlan], model: ModelInfo, progress: Progress,
               store: EmbeddingStore, read: ReadConfig) -> list[YearResult]:
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
                                  note=progress.note, background=True, growth=config.publish_growth)
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
        f"  to embed: {len(plan.units)} unit(s), {size.blocks} block(s) of <= {config.block_size} px, "
        f"{plan.pixels:,} px",
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
                     f"{_amount(size.reader_slot_hours)} reader slot-hour(s); "
                     f"write: {size.put_requests:,} PUT requests")
    if size.cost is not None and sizing.nodes is not None and sizing.prices is not None:  # a cost needs both
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

