"""Benchmark: can one driver plan and schedule a planet-sized year?

Two stages, each in its own process (so each peak RSS is its own):

1. **plan**: every land unit on Earth for one year on the real zone grids
   (``plan_units`` over -180,-90,180,90, then ``plan_land`` with the default
   mask), pinned to one core; no data read. Reports units, time, peak RSS, and
   saves the units for stage 2.
2. **simulate** (once per worker count): the real scheduler,
   ``tessera_ray.pipeline.embed.run_year``, with the real ``EncoderPool``, on a
   local Ray whose logical CPUs stand for the cluster's read slots. Only the
   task bodies are stand-ins (``StageTasks`` and ``EncoderPool(actor=...)``):
   each sleeps for a time drawn from a log-normal distribution and returns a
   tiny result, and the writer puts a 16-byte object and a real part record,
   so the end-of-job ``publish`` builds a real manifest of every unit. Then a
   resume is timed: how long the next run takes to read the manifest and find
   that nothing is left (``plan_year``'s skip of published units).

Stand-in times. Per 4096 px unit in production (README's measurements):
reads ~87 core-seconds per 512 px block (``jobs/bench_ingest.py``: 43.7 s on
2 cores per block of 183 scenes), encode 2.6 s per block at 100,000 px/s per
GPU, write ~30 s (2.2 GB shard at ~75 MB/s). The simulation keeps those
ratios per unit (read : encode : write = 64 x 87 : 64 x 2.6 : 30) and
compresses time so a unit's read takes ``--read-ms`` (median); each draw is
log-normal with sigma 0.5, wider than the tens of percent between runs that
``jobs/bench_pipeline.py`` measured, to give the scheduler stragglers. What is
measured is the driver: its RSS sampled every 0.5 s, its CPU time (all its
threads, Ray's included) per unit, and the wall time against the ideal
(units x read time / slots).

    python jobs/bench_planet.py                 # plan the planet; 100,000 units at 32 slots, 20,000 at 8 and 64
    python jobs/bench_planet.py --quick         # 2,000 units at 8 slots, 5,000 at 32

Writes bench-results/bench_planet.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench-results"
UNITS_FILE = RESULTS / "bench_planet_units.json"
YEAR = 2024
SIGMA = 0.5
ENCODE_PER_READ = 2.6 / 87
WRITE_PER_READ = 30 / (64 * 87)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- stage 1: plan


def stage_plan(unit_size: int) -> dict:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    from tessera_ray.landmask import DEFAULT_LAND_MASK, mask_label
    from tessera_ray.pipeline.plan import plan_land, plan_units

    started = time.perf_counter()
    grid = plan_units("-180,-90,180,90", unit_size)
    gridded = time.perf_counter()
    plan = plan_land(grid, DEFAULT_LAND_MASK)
    done = time.perf_counter()
    pixels = sum(u.window.size for u in plan.units)
    UNITS_FILE.write_text(json.dumps([u.id for u in plan.units]))
    return {"unit_size": unit_size, "grid_units": len(grid), "land_units": len(plan.units), "sea_units": plan.sea,
            "land_pixels": pixels, "mask": mask_label(DEFAULT_LAND_MASK), "grid_s": round(gridded - started, 1),
            "land_s": round(done - gridded, 1), "total_s": round(done - started, 1), "peak_rss_mb": round(_peak_mb())}


# --------------------------------------------------------------------------- stage 2: simulate


def _draw(median_s: float) -> float:
    return random.lognormvariate(0.0, SIGMA) * median_s


def stand_in_read(median_s: float):
    """A read task body (``read_block``'s signature and results) that sleeps."""

    def read_block(zone, window, year, scenes, read_config):
        from tessera_ray.pipeline.driver import BlockInfo

        time.sleep(_draw(median_s))
        return b"series", BlockInfo(window.size, 0, ())

    return read_block


class StandInEncoder:
    """EncoderActor's interface: ``info`` and ``encode``, the latter a sleep."""

    def __init__(self, spec, device=None):
        self.median_s = float(spec.checkpoint)

    def info(self) -> dict:
        return {"pid": os.getpid()}

    def encode(self, pixels):
        time.sleep(_draw(self.median_s))
        return b"encoded"


def stand_in_write(median_s: float):
    """A write task body (``write_unit``'s signature and result): sleeps, then puts a 16-byte
    object and the part record a real writer would."""

    def write_unit(sink, unit, year, windows, scenes, created, *encoded):
        import hashlib

        from tessera_ray.store.writer import PartRecord, part_key

        time.sleep(_draw(median_s))
        objects, model_checksum = sink.objects, sink.model_checksum
        key = f"_bench/{year}/{unit.id}.bin"
        data = unit.id.encode()[:16].ljust(16, b".")
        objects.put(key, data)
        record = PartRecord(year, unit.zone, unit.id, unit.row, unit.col, unit.size, unit.window.size, 0, 0,
                            scenes, "stand-in", model_checksum, "bench", created or "2026-01-01T00:00:00+00:00",
                            ({"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},))
        objects.put(part_key(year, unit.id), record.to_json())
        return {"valid": unit.window.size, "bytes": len(data), "record": record}

    return write_unit


class _Sampler(threading.Thread):
    """The driver's RSS every ``period`` s, with the units done at that moment."""

    def __init__(self, progress, period: float = 0.5):
        super().__init__(daemon=True)
        self.progress, self.period, self.samples = progress, period, []
        self.stopped = threading.Event()

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stopped.is_set():
            self.samples.append((self.progress.done, me.memory_info().rss))
            self.stopped.wait(self.period)


def stage_sim(units: int, slots: int, encoders: int, read_ms: float, block_size: int, unit_size: int,
              plan_in_driver: bool = False, publish_every_units: int = 100, publish_inline: bool = False) -> dict:
    import psutil
    import ray

    from tessera_ray.grid import Unit
    from tessera_ray.pipeline.driver import StageTasks, run_year
    from tessera_ray.pipeline.encode import EncoderPool, EncoderSpec
    from tessera_ray.pipeline.plan import EmbedConfig, ModelInfo, YearPlan, plan_year
    from tessera_ray.pipeline.progress import Progress
    from tessera_ray.pipeline.publishing import Publisher
    from tessera_ray.store import EmbeddingStore

    ids = json.loads(UNITS_FILE.read_text())
    if units > len(ids):
        raise SystemExit(f"{units} units asked for, the plan has {len(ids)}")
    plan_units = tuple(Unit.from_id(u) for u in ids[:units])
    rss = {}
    if plan_in_driver:  # as run_embed does: the land test in the driver, then the masks released
        from tessera_ray.landmask import release_land_polygons, units_with_land

        units_with_land(plan_units)
        rss["after_land_test"] = round(psutil.Process().memory_info().rss / 1e6)
        release_land_polygons()
        rss["after_release"] = round(psutil.Process().memory_info().rss / 1e6)
    blocks_per_unit = (unit_size // block_size) ** 2
    read_s = read_ms / 1000 / blocks_per_unit
    encode_s = read_ms / 1000 / blocks_per_unit * ENCODE_PER_READ
    write_s = read_ms / 1000 * WRITE_PER_READ
    root = tempfile.mkdtemp(prefix="bench-planet-")
    store = EmbeddingStore.create_or_open(root, shard_size=unit_size, chunk_size=32, model="stand-in",
                                          model_checksum="0" * 64)
    store.prepare(YEAR, sorted({u.zone for u in plan_units}))
    # logical CPUs = read slots (+ the encoders'); memory large enough that the writers' declared
    # memory (3 x a unit) does not serialise them, as on a cluster of many nodes
    ray.init(num_cpus=slots + encoders, object_store_memory=200 * 1024**2, include_dashboard=False,
             _memory=64 * 1024**3, logging_level="ERROR")
    config = EmbedConfig(roi="-180,-90,180,90", years=(YEAR,), out=root, checkpoint="stand-in",
                         unit_size=unit_size, block_size=block_size, max_in_flight=slots, encoders=encoders,
                         publish_every_units=publish_every_units)
    tasks = StageTasks(read=stand_in_read(read_s), write=stand_in_write(write_s))
    progress = Progress(open(os.devnull, "w"), rich=False)  # the plain per-unit lines are made as in a job
    with EncoderPool(EncoderSpec(str(encode_s)), num_actors=encoders, use_gpu=False,
                     actor=StandInEncoder) as pool:
        sampler = _Sampler(progress)
        me = psutil.Process()
        cpu0 = me.cpu_times()
        rss0 = me.memory_info().rss
        sampler.start()
        started = time.perf_counter()
        # as _run_years does: the job publishes as it goes (every 100 units and 1 % of the manifest, or every
        # 10 minutes), then at its end
        publisher = Publisher(store, YEAR, config.publish_every_units, config.publish_every_minutes,
                              background=not publish_inline, growth=config.publish_growth)
        year = run_year(YearPlan(YEAR, plan_units, ()), config, pool, ModelInfo("stand-in", "0" * 64), progress,
                        publisher, tasks)
        wall = time.perf_counter() - started
        cpu1 = me.cpu_times()
        sampler.stopped.set()
        sampler.join()
        sampler.samples.append((progress.done, me.memory_info().rss))
    ray.shutdown()
    driver_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    during = (publisher.publishes, publisher.seconds)
    t = time.perf_counter()
    published = publisher.finish()
    publish_s = time.perf_counter() - t
    manifest_mb = os.path.getsize(Path(root) / "manifests" / f"{YEAR}.parquet") / 1e6
    t = time.perf_counter()
    resumed = plan_year(config, plan_units, YEAR)
    resume_s = time.perf_counter() - t
    samples = sampler.samples
    peak = max(r for _, r in samples)
    at = {}
    for fraction in (0.1, 0.5, 1.0):
        done = [r for d, r in samples if d >= fraction * units]
        at[f"rss_mb_at_{int(fraction * 100)}pct"] = round(done[0] / 1e6) if done else None
    ideal = units * read_ms / 1000 / slots
    return {
        "units": units, "slots": slots, "encoders": encoders, "blocks_per_unit": blocks_per_unit,
        "publish_every_units": publish_every_units, "publish_growth": config.publish_growth,
        "publish_inline": publish_inline,
        "read_ms_per_unit": read_ms, "done": year.done, "failed": len(year.failed), "wall_s": round(wall, 1),
        "ideal_s": round(ideal, 1), "units_per_s": round(units / wall, 1),
        "driver_cpu_ms_per_unit": round(driver_cpu / units * 1000, 3),
        "driver_cpu_ms_per_block": round(driver_cpu / units / blocks_per_unit * 1000, 3),
        "driver_rss_mb_start": round(rss0 / 1e6), "driver_rss_mb_peak": round(peak / 1e6), **at,
        "publishes_during": during[0], "publish_s_during": round(during[1], 1),
        "publish_s_last": round(publish_s, 1), "published_units": published.units, "manifest_mb": round(manifest_mb, 2),
        "resume_s": round(resume_s, 2), "resume_units_left": len(resumed.units),
        **{f"driver_rss_mb_{k}": v for k, v in rss.items()},
    }


# --------------------------------------------------------------------------- driver of the benchmark


def _child(args: list[str]) -> dict:
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _publish_cell(s: dict) -> str:
    if "publish_s" in s:  # measured before publish-as-you-go: one publish at the end of the job
        return f"{s['publish_s']} s at the end"
    return f"{s['publishes_during']} during, {s['publish_s_during']} s; last {s['publish_s_last']} s"


def report(plan: dict, sims: list[dict]) -> str:
    lines = [
        "## Planning all land on Earth (one core)",
        "",
        f"{plan['grid_units']:,} units of {plan['unit_size']} px on the 60 zone grids, {plan['land_units']:,} "
        f"holding land ({plan['land_pixels'] / 1e12:,.2f} T px), {plan['sea_units']:,} of sea; mask {plan['mask']}",
        "",
        "| step | s |", "|---|---:|",
        f"| grid units of the ROI (`plan_units`) | {plan['grid_s']} |",
        f"| land test (`plan_land`) | {plan['land_s']} |",
        f"| total | {plan['total_s']} |",
        "",
        f"Peak RSS {plan['peak_rss_mb']:,} MB.",
        "",
        "## The scheduler with stand-in tasks",
        "",
        "| units | read slots | encoders | blocks/unit | wall s | ideal s | units/s | driver CPU ms/unit | "
        "driver RSS MB start / 10% / 50% / 100% / peak | publishes | manifest MB | resume s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for s in sims:
        lines.append(
            f"| {s['units']:,} | {s['slots']} | {s['encoders']} | {s['blocks_per_unit']} | {s['wall_s']} | "
            f"{s['ideal_s']} | {s['units_per_s']} | {s['driver_cpu_ms_per_unit']} | {s['driver_rss_mb_start']} / "
            f"{s['rss_mb_at_10pct']} / {s['rss_mb_at_50pct']} / {s['rss_mb_at_100pct']} / {s['driver_rss_mb_peak']} | "
            f"{_publish_cell(s)} | {s['manifest_mb']} | {s['resume_s']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=["plan", "sim"], help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2,000 units at 8 slots, 5,000 at 32")
    parser.add_argument("--runs", default="8x20000,32x100000,64x20000",
                        help="simulations as SLOTSxUNITS, comma-separated (slots: simulated read slots)")
    parser.add_argument("--units", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--slots", default="", help=argparse.SUPPRESS)
    parser.add_argument("--read-ms", type=float, default=40.0, help="median read time of a unit, compressed")
    parser.add_argument("--unit-size", type=int, default=4096)
    parser.add_argument("--block-size", type=int, default=4096,
                        help="block side in the simulation (4096: one read task per unit)")
    parser.add_argument("--blocks-run", type=int, default=500,
                        help="units of an extra run at 512 px blocks (64 read and encode calls a unit); 0: none")
    parser.add_argument("--skip-plan", action="store_true", help="reuse the units of the last plan stage")
    parser.add_argument("--plan-in-driver", action="store_true",
                        help="simulations test their units' land in the driver first and release the masks, "
                             "as run_embed does")
    parser.add_argument("--publish-every-units", type=int, default=100,
                        help="the job's --publish-every-units in the simulations")
    parser.add_argument("--publish-inline", action="store_true",
                        help="publish in the driver's loop (before: the loop stops while a publish runs) "
                             "instead of on the publisher's thread, as the job does")
    parser.add_argument("--plan-only", action="store_true",
                        help="plan stage alone; its figures replace the plan in bench-results/bench_planet.json")
    args = parser.parse_args()
    if args.stage == "plan":
        print(json.dumps(stage_plan(args.unit_size)))
        return
    if args.stage == "sim":
        slots = int(args.slots)
        print(json.dumps(stage_sim(args.units, slots, max(1, slots // 8), args.read_ms, args.block_size,
                                   args.unit_size, args.plan_in_driver, args.publish_every_units,
                                   args.publish_inline)))
        return
    RESULTS.mkdir(exist_ok=True)
    if args.plan_only:
        plan = _child(["--stage", "plan", "--unit-size", str(args.unit_size)])
        path = RESULTS / "bench_planet.json"
        sims = json.loads(path.read_text())["sims"] if path.exists() else []
        path.write_text(json.dumps({"plan": plan, "sims": sims}, indent=1))
        (RESULTS / "bench_planet.md").write_text(report(plan, sims))
        print(report(plan, sims))
        return
    if args.quick:
        args.runs, args.blocks_run = "8x2000,32x5000", 200
    if args.skip_plan and UNITS_FILE.exists() and (RESULTS / "bench_planet.json").exists():
        plan = json.loads((RESULTS / "bench_planet.json").read_text())["plan"]
    else:
        plan = _child(["--stage", "plan", "--unit-size", str(args.unit_size)])
        print(f"plan: {plan}", flush=True)
    runs = [tuple(int(v) for v in run.split("x")) for run in args.runs.split(",")]
    sims = []
    for slots, units in runs:
        sims.append(_child(["--stage", "sim", "--units", str(min(units, plan["land_units"])), "--slots", str(slots),
                            "--read-ms", str(args.read_ms), "--block-size", str(args.block_size), "--unit-size",
                            str(args.unit_size), "--publish-every-units", str(args.publish_every_units)]
                           + (["--plan-in-driver"] if args.plan_in_driver else [])))
        print(f"sim: {sims[-1]}", flush=True)
        (RESULTS / "bench_planet.json").write_text(json.dumps({"plan": plan, "sims": sims}, indent=1))
    if args.blocks_run:
        slots = max(s for s, _ in runs)
        sims.append(_child(["--stage", "sim", "--units", str(args.blocks_run), "--slots", str(slots), "--read-ms",
                            str(args.read_ms * 8), "--block-size", "512", "--unit-size", str(args.unit_size)]))
        print(f"sim: {sims[-1]}", flush=True)
    text = report(plan, sims)
    (RESULTS / "bench_planet.json").write_text(json.dumps({"plan": plan, "sims": sims}, indent=1))
    (RESULTS / "bench_planet.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
