"""Encoder actor memory over many units: warm-up or leak?

The pipeline benchmark saw the encoder actor's RSS grow with the units of a
job (517 -> 736 MB from 1 to 12 units) while read and write workers stay
flat. This isolates the actor: an :class:`EncoderPool` of one CPU actor on a
local Ray (as the embed job starts it), fed one synthetic unit after another
(random arrays in the cube layout, shaped like a unit of the demo world: 64 x 64
px, 90-110 Sentinel-2 dates, 50-61 dates per SAR orbit direction), submitted
through the object store like a read task's result. After each unit the
actor's memory is read from ``/proc/<pid>/status``: RSS and its parts
(anonymous = the process's own heap; shmem = pages of Ray's object store it
has touched, shared with every worker and counted once by the kernel).

Each option runs in its own process with its own Ray:

* ``pipeline``: the actor as the embed job starts it (``encode.ACTOR_ENV_VARS``);
* ``glibc``: no malloc settings (glibc's defaults; the actor before this benchmark);
* ``arena2``: ``MALLOC_ARENA_MAX=2``; ``mmap``: ``MALLOC_MMAP_THRESHOLD_=131072``
  (both as the actor's ``runtime_env`` env_vars, in place of the pipeline's);
* ``trim``: glibc's defaults and ``malloc_trim(0)`` in the actor after each unit;
* ``threads2``: the pipeline's settings with two torch threads instead of one;
* ``tracemalloc``: the same ``EncoderActor`` in a plain process (no Ray, two
  caller threads) with ``tracemalloc`` on: Python and NumPy allocations still
  alive after each unit, to tell a leak from allocator behaviour.

Per unit: RSS after it, peak RSS during it, Python objects tracked by the gc,
wall time and the actor's CPU time (less noisy than wall time on a busy machine).

    python jobs/bench_encoder_memory.py --units 120
    python jobs/bench_encoder_memory.py --variant v1.0 --unit-px 8 --units 20 --options glibc pipeline

Writes bench-results/bench_encoder_memory[-VARIANT].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPTIONS = ("pipeline", "glibc", "arena2", "mmap", "trim", "threads2", "tracemalloc")
# the actor's env vars per option, in place of encode.ACTOR_ENV_VARS (the pipeline's)
ENV = {"glibc": {}, "trim": {}, "arena2": {"MALLOC_ARENA_MAX": "2"}, "mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"}}
FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem")


def memory_mb(pid: int) -> dict:
    """RSS and its parts (MB) from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in FIELDS:
            out[name] = round(int(value.split()[0]) / 1024, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process: the cost of an option, less noisy than wall time on a busy machine."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def synthetic_unit(index: int, unit_px: int, seed: int = 0):
    """One unit's pixels in the encoder layout, built from cube-layout arrays as ``read_block`` does."""
    from tessera_ray.model import PixelSeries

    rng = np.random.default_rng((seed, index))
    t, ta, td = int(rng.integers(90, 111)), int(rng.integers(50, 62)), int(rng.integers(50, 62))
    shape = (unit_px, unit_px)
    cloudy = rng.random(t)[:, None, None] < 0.4
    masks = ((rng.random((t, *shape)) < 0.9) & ~cloudy).astype(np.uint8)
    row, col = divmod(index, 1000)
    return PixelSeries.from_block(
        block_id=f"unit {index}", year=2024, zone=31, row=row * unit_px, col=col * unit_px,
        bands=rng.integers(1, 10000, (t, *shape, 10), dtype=np.uint16), masks=masks,
        doys=np.sort(rng.choice(366, t, replace=False) + 1),
        sar_ascending=rng.integers(1, 20000, (ta, *shape, 2), dtype=np.int16),
        sar_ascending_doy=np.sort(rng.choice(366, ta, replace=False) + 1),
        sar_descending=rng.integers(1, 20000, (td, *shape, 2), dtype=np.int16),
        sar_descending_doy=np.sort(rng.choice(366, td, replace=False) + 1),
    )


def malloc_trim(_actor=None) -> int:
    """Hand freed heap pages back to the kernel (glibc); runs inside the actor via ``__ray_call__``."""
    import ctypes

    return ctypes.CDLL("libc.so.6").malloc_trim(0)


def python_objects(_actor=None) -> int:
    """Objects the garbage collector tracks: a leak of Python objects shows as steady growth."""
    import gc

    return len(gc.get_objects())


class PeakSampler:
    """Highest RSS of one process since the last ``take``, polled every 20 ms from a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, memory_mb(self.pid)["VmRSS"])

    def take(self, now: float) -> float:
        peak, self.peak = max(self.peak, now), 0.0
        return peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def run_ray(args, spec) -> list[dict]:
    """Units through an EncoderPool of one CPU actor; the actor's memory after each."""
    import ray

    from tessera_ray.cluster import start_ray
    from tessera_ray.pipeline import encode
    from tessera_ray.pipeline.encode import EncoderPool

    encode.ACTOR_ENV_VARS = ENV.get(args.option, encode.ACTOR_ENV_VARS)
    start_ray(num_cpus=2, object_store_memory=400 * 2**20)
    curve = []
    with EncoderPool(spec, num_actors=1, use_gpu=False, max_in_flight=2) as pool:
        pid = pool.info()[0]["pid"]
        (actor,) = pool._actors  # the benchmark's own probe; the pipeline never calls into an actor like this
        sampler = PeakSampler(pid)
        for u in range(args.units):
            unit = synthetic_unit(u, args.unit_px)
            start, cpu = time.monotonic(), cpu_seconds(pid)
            for encoded in pool.map(unit.take(part) for part in blocks(args)):
                assert encoded.embeddings.shape[1] == 128
            if args.option == "trim":
                ray.get(actor.__ray_call__.remote(malloc_trim))
            seconds, cpu = time.monotonic() - start, cpu_seconds(pid) - cpu
            now = memory_mb(pid)
            curve.append({"unit": u + 1, "s": round(seconds, 3), "cpu_s": round(cpu, 3), **now,
                          "peak": sampler.take(now["VmRSS"]),
                          "objects": ray.get(actor.__ray_call__.remote(python_objects))})
            progress(args, curve)
        sampler.close()
    ray.shutdown()
    return curve


def run_inprocess(args, spec) -> list[dict]:
    """The same actor class in this process: two caller threads, as ``max_in_flight=2``.

    ``tracemalloc`` also traces the Python and NumPy allocations still alive after each unit.
    """
    import tracemalloc
    from concurrent.futures import ThreadPoolExecutor

    from tessera_ray.pipeline.encode import EncoderActor

    actor = EncoderActor(spec, device="cpu")
    if args.option == "tracemalloc":
        tracemalloc.start()
    sampler = PeakSampler(os.getpid())
    curve = []
    with ThreadPoolExecutor(2) as callers:
        for u in range(args.units):
            unit = synthetic_unit(u, args.unit_px)
            start, cpu = time.monotonic(), cpu_seconds(os.getpid())
            for encoded in callers.map(actor.encode, [unit.take(part) for part in blocks(args)]):
                assert encoded.embeddings.shape[1] == 128
            seconds, cpu = time.monotonic() - start, cpu_seconds(os.getpid()) - cpu
            del unit, encoded
            now = memory_mb(os.getpid())
            row = {"unit": u + 1, "s": round(seconds, 3), "cpu_s": round(cpu, 3), **now,
                   "peak": sampler.take(now["VmRSS"]),
                   "objects": python_objects()}
            if tracemalloc.is_tracing():
                row["traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 2)
            curve.append(row)
            progress(args, curve)
    sampler.close()
    return curve


def blocks(args) -> list[slice]:
    """A unit is sent as ``--blocks`` pixel batches (the pipeline's blocks of one unit)."""
    n = args.unit_px**2
    edges = np.linspace(0, n, args.blocks + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def progress(args, curve: list[dict]) -> None:
    last = curve[-1]
    if last["unit"] in (1, 2, 4, 8) or last["unit"] % 20 == 0:
        print(f"{args.option}: unit {last['unit']}: RSS {last['VmRSS']:.0f} MB (anon {last['RssAnon']:.0f}, "
              f"shmem {last['RssShmem']:.0f}, peak {last['peak']:.0f}), {last['objects']} objects, "
              f"{last['s']:.2f} s", file=sys.stderr, flush=True)


def slope(curve: list[dict], key: str) -> float:
    """MB per unit over the last half (least squares)."""
    half = curve[len(curve) // 2:]
    if len(half) < 2:
        return float("nan")
    x = np.array([c["unit"] for c in half], dtype=float)
    y = np.array([c[key] for c in half], dtype=float)
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def child(args) -> None:
    from tessera_ray.pipeline.encode import EncoderSpec

    spec = EncoderSpec(args.checkpoint, seed=0, batch_size=args.batch_size,
                       cpu_threads=2 if args.option == "threads2" else 1)
    curve = run_inprocess(args, spec) if args.option == "tracemalloc" else run_ray(args, spec)
    print(json.dumps(curve))


def summarise(option: str, curve: list[dict]) -> dict:
    def at(unit):
        return curve[min(unit, len(curve)) - 1]

    second_half = curve[len(curve) // 2:]
    return {
        "option": option,
        "units": len(curve),
        **{f"rss_mb_at_{u}": at(u)["VmRSS"] for u in (1, 4, 10)},
        "rss_mb_last": curve[-1]["VmRSS"],
        "peak_mb": max(c["peak"] for c in curve),
        "peak_mb_first_10": max(c["peak"] for c in curve[:10]),
        "peak_mb_second_half": max(c["peak"] for c in second_half),
        "anon_mb_last": curve[-1]["RssAnon"],
        "shmem_mb_last": curve[-1]["RssShmem"],
        "rss_slope_mb_per_unit_last_half": slope(curve, "VmRSS"),
        "peak_slope_mb_per_unit_last_half": slope(curve, "peak"),
        "objects_at_10": at(10)["objects"], "objects_last": curve[-1]["objects"],
        "traced_mb_at_10": at(10).get("traced_mb"), "traced_mb_last": curve[-1].get("traced_mb"),
        "median_s_per_unit": round(float(np.median([c["s"] for c in curve])), 3),
        "median_cpu_s_per_unit": round(float(np.median([c["cpu_s"] for c in curve])), 3),
    }


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Encoder actor memory (`python jobs/bench_encoder_memory.py --variant {args.variant} --unit-px "
        f"{args.unit_px} --blocks {args.blocks} --units {args.units}`): one CPU actor, `{args.variant}` encoder, "
        f"{args.unit_px}x{args.unit_px} px units as {args.blocks} batch(es) each. RSS of the actor process "
        "after units 1, 4, 10 and the last (MB); peak = highest RSS sampled every 20 ms; shmem = pages of "
        "Ray's object store it has touched (part of RSS, shared); slopes by least squares over the last half; "
        "objects = Python objects the gc tracks.",
        "",
        "| option | units | RSS 1 | 4 | 10 | last | peak, units 1-10 | peak, last half | anon last | shmem last "
        "| RSS slope (MB/unit) | peak slope | objects 10 -> last | s/unit | CPU s/unit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        traced = (f" (traced {r['traced_mb_at_10']:.1f} -> {r['traced_mb_last']:.1f} MB)"
                  if r["traced_mb_last"] is not None else "")
        lines.append(
            f"| {r['option']} | {r['units']} | {r['rss_mb_at_1']:.0f} | {r['rss_mb_at_4']:.0f} | "
            f"{r['rss_mb_at_10']:.0f} | {r['rss_mb_last']:.0f} | {r['peak_mb_first_10']:.0f} | "
            f"{r['peak_mb_second_half']:.0f} | {r['anon_mb_last']:.0f} | {r['shmem_mb_last']:.0f} | "
            f"{r['rss_slope_mb_per_unit_last_half']:+.2f} | {r['peak_slope_mb_per_unit_last_half']:+.2f} | "
            f"{r['objects_at_10']:,} -> {r['objects_last']:,}{traced} | {r['median_s_per_unit']:.2f} "
            f"| {r['median_cpu_s_per_unit']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def ensure_checkpoint(args) -> None:
    if args.checkpoint:
        return
    from tessera_ray.model import build_encoder, get_variant, save_checkpoint

    args.checkpoint = str(Path(args.out_dir) / f"{args.variant}-init.pt")
    if not Path(args.checkpoint).is_file():
        config = get_variant(args.variant)
        save_checkpoint(build_encoder(config, seed=0), args.checkpoint, config, init_seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--checkpoint", default=None, help="default: a random-init checkpoint of --variant")
    parser.add_argument("--units", type=int, default=120)
    parser.add_argument("--unit-px", type=int, default=64, help="unit edge in pixels")
    parser.add_argument("--blocks", type=int, default=1, help="pixel batches per unit")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--options", nargs="+", choices=OPTIONS, default=list(OPTIONS))
    parser.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    parser.add_argument("--child", choices=OPTIONS, dest="option", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.option:
        child(args)
        return
    from tessera_ray.pipeline.encode import ACTOR_ENV_VARS

    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    ensure_checkpoint(args)
    rows, curves = [], {}
    for option in args.options:
        cmd = [sys.executable, __file__, "--child", option, "--checkpoint", args.checkpoint,
               "--units", str(args.units), "--unit-px", str(args.unit_px), "--blocks", str(args.blocks),
               "--batch-size", str(args.batch_size)]
        # the in-process run gets the actor's env vars the way a Ray worker does: at its start
        env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
               "RAY_USAGE_STATS_ENABLED": "0", **(ACTOR_ENV_VARS if option == "tracemalloc" else {})}
        env.pop("RAY_ADDRESS", None)
        with tempfile.TemporaryFile("w+") as err:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
            err.seek(0)
            log = err.read()
        sys.stderr.write("".join(line + "\n" for line in log.splitlines() if line.startswith(option + ":")))
        if done.returncode != 0:
            raise SystemExit(f"option {option} failed:\n{log[-2000:]}")
        curves[option] = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(summarise(option, curves[option]))
        print(json.dumps(rows[-1]), flush=True)
    stem = "bench_encoder_memory" + ("" if args.variant == "tiny" else f"-{args.variant}")
    out = Path(args.out_dir)
    (out / f"{stem}.json").write_text(json.dumps(
        {"rows": rows, "curves": curves, "args": {k: v for k, v in vars(args).items() if k != "option"}}, indent=1))
    md = markdown(rows, args)
    (out / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
