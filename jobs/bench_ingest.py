"""Benchmark: one unit's year of Sentinel-2 through our reader and through stackstac + dask.

Both readers read the same unit, from the same local HTTP server with the same
injected per-request latency, each in its own subprocess pinned to the same
cores, one after the other in the same run. Reported per reader: wall time,
peak RSS, requests and bytes served (from the server's counters); and the
compressed bytes of the COG blocks the unit really needs (from the COGs' tile
layout), the floor any reader has to fetch.

    python jobs/bench_ingest.py --world /tmp/tessera-bench-world --unit-size 512 --latency 0.03

A missing world is generated first (preset "bench" over ``--bbox``: two
10.98 km tiles, ~180 Sentinel-2 scenes; ~20 min on 2 busy cores). Only
Sentinel-2 is compared (10 bands + SCL, the bulk of the bytes); both readers
produce the same masks (their ``clear_fraction`` is printed as a check).
Writes bench-results/bench_ingest.json and bench-results/bench_ingest.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = ("red", "blue", "green", "nir", "nir08", "rededge1", "rededge2", "rededge3", "swir16", "swir22")


# ---------------------------------------------------------------------- shared set-up


def _unit(world, size):
    """The unit of ``size`` px holding the world's centre, in the centre's zone."""
    from tessera_ray.grid import lonlat_to_zone_pixel, unit_of_pixel

    w, s, e, n = world.bbox
    zone, row, col = lonlat_to_zone_pixel((w + e) / 2, (s + n) / 2)
    return unit_of_pixel(zone, row, col, size)


def _scenes(world_dir, world, unit, base_url, max_dates):
    """The Sentinel-2 scenes touching the unit, hrefs on the server; the first ``max_dates`` dates."""
    from tessera_ray.pipeline.blocks import scenes_for_window
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.scenes import EARTH_SEARCH_C1

    start, end = date(world.year, 1, 1), date(world.year, 12, 31)
    scenes = search_catalog(str(Path(world_dir) / "stac" / "items.parquet"), EARTH_SEARCH_C1, world.bbox, start, end,
                            root=base_url)
    scenes = scenes_for_window(unit.zone, unit.window, scenes)
    days = sorted({s.date for s in scenes})[: max_dates or None]
    return [s for s in scenes if s.date in days]


def needed_bytes(world_dir, scenes, unit, base_url):
    """Compressed bytes of the COG tiles (all 11 assets of every scene) that intersect the unit."""
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    total = 0
    for scene in scenes:
        for asset in scene.assets:
            path = Path(world_dir) / asset.href[len(base_url) + 1 :]
            with rasterio.open(path) as src:
                bounds = transform_bounds(unit.crs, src.crs, *unit.bounds, densify_pts=21)
                win = from_bounds(*bounds, transform=src.transform)
                bh, bw = src.block_shapes[0]
                r0, r1 = max(int(math.floor(win.row_off)), 0), min(int(math.ceil(win.row_off + win.height)), src.height)
                c0, c1 = max(int(math.floor(win.col_off)), 0), min(int(math.ceil(win.col_off + win.width)), src.width)
                if r1 <= r0 or c1 <= c0:
                    continue
                for i in range(r0 // bh, (r1 - 1) // bh + 1):
                    for j in range(c0 // bw, (c1 - 1) // bw + 1):
                        total += src.block_size(1, i, j)
    return total


# ---------------------------------------------------------------------- the readers (children)


def run_ours(scenes, unit, threads):
    from tessera_ray.sources.cog import capture_env
    from tessera_ray.sources.read import ReadConfig, read_cube

    cube = read_cube(unit, scenes, ReadConfig(max_requests=threads, env=capture_env()))
    return {
        "dates": int(cube.doys.size),
        "clear_fraction": float(cube.masks.mean()),
        "checksum": int(cube.bands.sum(dtype="uint64")),
    }


def run_stackstac(item_dicts, unit, threads):
    """The upstream way: stackstac.stack over the items, SCL mask, per-date first valid, dask threads."""
    import dask
    import numpy as np
    import pystac
    import stackstac
    import xarray as xr

    from tessera_ray.sources import sentinel2

    items = sorted((pystac.Item.from_dict(d) for d in item_dicts), key=lambda i: (i.datetime, i.id))
    stack = stackstac.stack(
        items, assets=[*BANDS, "scl"], epsg=32600 + unit.zone, resolution=10.0, bounds=unit.bounds,
        resampling=__import__("rasterio").enums.Resampling.nearest, dtype="uint16", fill_value=np.uint16(0),
        rescale=False, chunksize=(1, 1, 1024, 1024),
    )
    offsets = xr.DataArray([i.properties["bench:boa_offset"] for i in items], dims="time", coords={"time": stack.time})
    scl = stack.sel(band="scl")
    valid = ~scl.isin(list(sentinel2.INVALID_SCL))
    bands = stack.sel(band=list(BANDS))
    harmonised = xr.where(bands > 0, (bands.astype("int32") - offsets).clip(0), 0).astype("uint16")
    clear = harmonised.where(valid)
    days = stack.time.dt.floor("D")
    mosaic = clear.groupby(days).first(skipna=True)
    mask = valid.groupby(days).any()
    with dask.config.set(scheduler="threads", num_workers=threads):
        out, m = dask.compute(mosaic, mask)
    return {"dates": int(out.sizes[out.dims[0]]), "clear_fraction": float(m.mean()),
            "checksum": int(np.nan_to_num(out.values).sum(dtype="uint64"))}


def child(args) -> None:
    """Run one reader on the inputs the driver prepared (only that reader's imports count in its RSS)."""
    import pickle
    import resource

    from tessera_ray.grid import Unit

    unit = Unit.from_id(args.unit)
    t0 = time.perf_counter()
    if args.child == "ours":
        scenes = pickle.loads((args.inputs / "scenes.pkl").read_bytes())
        out = run_ours(scenes, unit, args.threads)
    else:
        items = json.loads((args.inputs / "items.json").read_text())
        out = run_stackstac(items, unit, args.threads)
    wall = time.perf_counter() - t0
    out.update(wall_s=wall, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print("RESULT " + json.dumps(out))


def prepare_inputs(directory: Path, world_dir, scenes, base_url) -> None:
    """The scene list for our reader and the same items, hrefs on the server, for stackstac."""
    import pickle

    import pyarrow.parquet as pq
    from stac_geoparquet.arrow import stac_table_to_items

    wanted = {s.id for s in scenes}
    items = []
    for doc in stac_table_to_items(pq.read_table(Path(world_dir) / "stac" / "items.parquet")):
        if doc["id"] in wanted:
            for asset in doc["assets"].values():
                asset["href"] = f"{base_url}/{asset['href']}"
            items.append(doc)
    offsets = {s.id: s.boa_offset for s in scenes}
    for doc in items:
        doc["properties"]["bench:boa_offset"] = offsets[doc["id"]]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "scenes.pkl").write_bytes(pickle.dumps(list(scenes)))
    (directory / "items.json").write_text(json.dumps(items, default=str))


# ---------------------------------------------------------------------- the driver


def measure(reader, args, server, unit):
    env = dict(os.environ, GDAL_CACHEMAX="256")
    cmd = [sys.executable, __file__, "--child", reader, "--inputs", str(args.inputs), "--unit", unit.id,
           "--threads", str(args.threads)]
    server.stats.reset()
    cores = list(range(min(args.cores, os.cpu_count() or 1)))
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores)
    )
    if proc.returncode != 0:
        raise SystemExit(f"{reader} failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    snap = server.stats.snapshot()
    result.update(requests=snap["requests"], bytes_sent=snap["bytes_sent"])
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", type=Path, default=Path("/tmp/tessera-bench-world"))
    p.add_argument("--bbox", default="0.10,52.10,0.17,52.145", help="bbox of the bench world if it must be generated")
    p.add_argument("--unit-size", type=int, default=512)
    p.add_argument("--latency", type=float, default=0.03, help="seconds added to every request")
    p.add_argument("--dates", type=int, default=0, help="only the first N dates (0: the whole year)")
    p.add_argument("--threads", type=int, default=16, help="concurrent reads of each reader")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "bench-results")
    p.add_argument("--child", choices=("ours", "stackstac"))
    p.add_argument("--inputs", type=Path, help="(child) folder with the prepared scene list and items")
    p.add_argument("--unit")
    args = p.parse_args(argv)
    if args.child:
        return child(args)

    from tessera_ray.grid import parse_bbox
    from tessera_ray.serve import StaticServer
    from tessera_ray.synthetic import World, generate_world

    if not (args.world / "world.json").exists():
        t0 = time.perf_counter()
        generate_world(args.world, bbox=parse_bbox(args.bbox), preset="bench")
        print(f"generated the bench world in {time.perf_counter() - t0:.0f} s")
    world = World.open(args.world)
    unit = _unit(world, args.unit_size)
    runs: dict[str, list[dict]] = {"ours": [], "stackstac": []}
    with StaticServer(args.world, latency_s=args.latency) as server:
        scenes = _scenes(args.world, world, unit, server.url, args.dates)
        needed = needed_bytes(args.world, scenes, unit, server.url)
        args.inputs = args.out / "bench_ingest_inputs"
        prepare_inputs(args.inputs, args.world, scenes, server.url)
        for _ in range(args.repeats):
            for reader in runs:
                runs[reader].append(measure(reader, args, server, unit))
                print(reader, runs[reader][-1], flush=True)
    summary = {}
    for reader, rs in runs.items():
        summary[reader] = {
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
            "requests": statistics.median(r["requests"] for r in rs),
            "bytes_fetched": statistics.median(r["bytes_sent"] for r in rs),
            "dates": rs[0]["dates"],
            "clear_fraction": rs[0]["clear_fraction"],
        }
    ours, ref = summary["ours"], summary["stackstac"]
    result = {
        "unit": unit.id, "unit_px": args.unit_size, "scenes": len(scenes), "dates": ours["dates"],
        "latency_s": args.latency, "threads": args.threads, "cores": args.cores, "repeats": args.repeats,
        "needed_block_bytes": needed, "readers": summary, "runs": runs,
        "speedup_vs_stackstac": ref["wall_s"] / ours["wall_s"],
        "memory_ratio_vs_stackstac": ours["peak_rss_mb"] / ref["peak_rss_mb"],
        "fetched_over_needed": ours["bytes_fetched"] / needed if needed else None,
        "stackstac_fetched_over_needed": ref["bytes_fetched"] / needed if needed else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_ingest.json").write_text(json.dumps(result, indent=1))
    md = markdown(result)
    (args.out / "bench_ingest.md").write_text(md)
    print(md)


def markdown(r) -> str:
    o, s = r["readers"]["ours"], r["readers"]["stackstac"]
    mb = lambda b: f"{b / 2**20:.1f} MB"  # noqa: E731
    return "\n".join([
        f"Ingest of one {r['unit_px']} px unit ({r['scenes']} Sentinel-2 scenes, {r['dates']} dates, 11 assets each) "
        f"over loopback HTTP with {r['latency_s'] * 1000:.0f} ms per request, {r['cores']} cores, "
        f"median of {r['repeats']} (`python jobs/bench_ingest.py`):",
        "",
        "| reader | wall | peak RSS | requests | bytes fetched | fetched / needed blocks |",
        "|---|---|---|---|---|---|",
        f"| tessera-ray `read_cube` | {o['wall_s']:.1f} s | {o['peak_rss_mb']:.0f} MB | {o['requests']:.0f} | "
        f"{mb(o['bytes_fetched'])} | {r['fetched_over_needed']:.2f} |",
        f"| stackstac + dask | {s['wall_s']:.1f} s | {s['peak_rss_mb']:.0f} MB | {s['requests']:.0f} | "
        f"{mb(s['bytes_fetched'])} | {r['stackstac_fetched_over_needed']:.2f} |",
        "",
        f"Speed-up {r['speedup_vs_stackstac']:.2f}x, memory {r['memory_ratio_vs_stackstac']:.2f}x of stackstac's; "
        f"COG blocks the unit needs: {mb(r['needed_block_bytes'])}.",
        "",
    ])


if __name__ == "__main__":
    main()
