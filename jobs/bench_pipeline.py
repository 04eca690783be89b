"""Benchmark: the embed job end to end for 1, 2 and 4 units, on 1 and 2 CPUs.

Each case runs in its own subprocess with its own local Ray (``ray.init(num_cpus=C)``),
reading the synthetic world through its stac-geoparquet catalog (local files,
so the figures are the pipeline's, not a server's), writing a fresh local root.
A sampler thread polls the RSS of every Ray worker process (``ray::...``) every
0.2 s; reported: wall time of the job (Ray already up), px/s, and the peak RSS
of any one worker, by role (read task, encoder actor, writer task), also less
its shared pages (Ray's object store, which every worker maps).
Goals: time linear in units, peak memory per worker flat.

    python jobs/bench_pipeline.py --world /tmp/bench-world --unit-size 128 --block-size 128

Writes bench-results/bench_pipeline.json and bench-results/bench_pipeline.md.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROLES = {"read_block": "read", "EncoderActor": "encode", "write_unit": "write"}


def worker_sampler(peaks: dict, stop: threading.Event, period: float = 0.2) -> None:
    """Peak RSS and peak private RSS per Ray worker pid, and the roles it was seen in.

    Private = RSS less shared pages (on Linux psutil's ``shared`` is file-backed
    plus shmem pages, here mostly Ray's object store, which every worker maps).
    """
    import psutil

    while not stop.is_set():
        for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if not cmd.startswith("ray::") or proc.info["memory_info"] is None:
                    continue
                role = next((r for name, r in ROLES.items() if name in cmd), None)
                entry = peaks.setdefault(proc.info["pid"], {"rss": 0, "private": 0, "roles": set()})
                memory = proc.info["memory_info"]
                entry["rss"] = max(entry["rss"], memory.rss)
                entry["private"] = max(entry["private"], memory.rss - memory.shared)
                if role:
                    entry["roles"].add(role)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        stop.wait(period)


def roi_file(units, path: Path) -> str:
    """A GeoJSON of one small square in the middle of each unit: the ROI covering exactly these units."""
    import geopandas as gpd

    shapes = [u.polygon_lonlat().centroid.buffer(0.0002) for u in units]
    gpd.GeoDataFrame(geometry=shapes, crs="EPSG:4326").to_file(path, driver="GeoJSON")
    return str(path)


def pick_units(world: Path, unit_size: int, n: int):
    """The n units nearest the world's centre, all inside it."""
    from shapely.geometry import box

    from tessera_ray.grid import load_roi, units_for_roi
    from tessera_ray.synthetic import World

    bbox = World.open(world).bbox
    area = box(*bbox)
    inside = [u for u in units_for_roi(load_roi(",".join(map(str, bbox))), unit_size)
              if area.contains(u.polygon_lonlat())]
    centre = area.centroid
    inside.sort(key=lambda u: (u.polygon_lonlat().centroid.distance(centre), u.id))
    if len(inside) < n:
        raise SystemExit(f"the world holds only {len(inside)} whole units of {unit_size} px; use a smaller --unit-size")
    return inside[:n]


def child(args) -> None:
    """One case: its own Ray, one job, figures as JSON on stdout."""
    import ray

    from tessera_ray.cluster import start_ray
    from tessera_ray.pipeline.embed import run_embed
    from tessera_ray.pipeline.plan import EmbedConfig
    from tessera_ray.pipeline.progress import Progress

    work = Path(args.work)
    units = pick_units(Path(args.world), args.unit_size, args.units)
    roi = roi_file(units, work / "roi.geojson")
    start_ray(num_cpus=args.cpus, object_store_memory=400 * 2**20)
    peaks: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=worker_sampler, args=(peaks, stop), daemon=True)
    sampler.start()
    config = EmbedConfig(roi=roi, years=(args.year,), out=str(work / "root"), checkpoint=args.checkpoint,
                         catalog=str(Path(args.world) / "stac" / "items.parquet"), unit_size=args.unit_size,
                         block_size=args.block_size, max_in_flight=args.max_in_flight, encoders=1)
    start = time.monotonic()
    result = run_embed(config, Progress(rich=False, stream=sys.stderr))
    seconds = time.monotonic() - start
    stop.set()
    sampler.join()
    ray.shutdown()
    totals = result.totals()
    by_role, private_by_role = {}, {}
    for entry in peaks.values():
        for role in entry["roles"] or {"idle"}:
            by_role[role] = max(by_role.get(role, 0), entry["rss"])
            private_by_role[role] = max(private_by_role.get(role, 0), entry["private"])
    print(json.dumps({
        "cpus": args.cpus, "units": args.units, "unit_size": args.unit_size, "block_size": args.block_size,
        "pixels": totals["pixels"], "failed": totals["failed"], "seconds": round(seconds, 2),
        "px_per_s": round(totals["pixels"] / seconds, 1),
        "peak_worker_rss_mb": round(max((e["rss"] for e in peaks.values()), default=0) / 2**20, 1),
        "peak_rss_mb_by_role": {k: round(v / 2**20, 1) for k, v in sorted(by_role.items())},
        "peak_private_mb_by_role": {k: round(v / 2**20, 1) for k, v in sorted(private_by_role.items())},
        "workers": len(peaks),
    }))


def ensure_inputs(args) -> None:
    if not (Path(args.world) / "world.json").is_file():
        from tessera_ray.synthetic import generate_world

        print(f"building the synthetic world {args.world} (preset demo) ...", file=sys.stderr)
        generate_world(args.world, preset="demo")
    if not args.checkpoint:
        from tessera_ray.model import build_encoder, get_variant, save_checkpoint

        args.checkpoint = str(Path(args.out_dir) / f"{args.variant}-init.pt")
        config = get_variant(args.variant)
        save_checkpoint(build_encoder(config, seed=0), args.checkpoint, config, init_seed=0)


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Pipeline benchmark (`python jobs/bench_pipeline.py --unit-size {args.unit_size} --block-size "
        f"{args.block_size}`): the embed job end to end (catalog search, read, `{args.variant}` encoder on CPU, "
        "write, publish) on the synthetic world, each case in its own process and local Ray; "
        "peak RSS is the largest of any one Ray worker process.",
        "",
        "| CPUs | units | px | s | px/s | s per unit | peak worker RSS (MB) | by role (MB) "
        "| private (RSS less shared pages) by role (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        roles = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_rss_mb_by_role"].items())
        private = ", ".join(f"{k} {v:.0f}" for k, v in r["peak_private_mb_by_role"].items())
        lines.append(f"| {r['cpus']} | {r['units']} | {r['pixels']:,} | {r['seconds']:.1f} | {r['px_per_s']:,.0f} "
                     f"| {r['seconds'] / r['units']:.1f} | {r['peak_worker_rss_mb']:.0f} | {roles} | {private} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default=str(ROOT / "bench-results" / "world-demo"))
    parser.add_argument("--checkpoint", default=None, help="default: a random-init checkpoint of --variant")
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--unit-size", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--units", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--year", type=int, default=2024)
    parser.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.units, args.cpus = args.units[0], args.cpus[0]
        child(args)
        return
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    ensure_inputs(args)
    rows = []
    for cpus in args.cpus:
        for units in args.units:
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work:
                cmd = [sys.executable, __file__, "--child", "--work", work, "--world", args.world,
                       "--checkpoint", args.checkpoint, "--unit-size", str(args.unit_size),
                       "--block-size", str(args.block_size), "--max-in-flight", str(args.max_in_flight),
                       "--units", str(units), "--cpus", str(cpus), "--year", str(args.year)]
                env = {**os.environ, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled")}
                env.pop("RAY_ADDRESS", None)
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    raise SystemExit(f"case cpus={cpus} units={units} failed:\n{done.stderr[-2000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = Path(args.out_dir)
    (out / "bench_pipeline.json").write_text(json.dumps({"rows": rows, "args": {
        k: v for k, v in vars(args).items() if k not in ("child", "work")}}, indent=1))
    md = markdown(rows, args)
    (out / "bench_pipeline.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
