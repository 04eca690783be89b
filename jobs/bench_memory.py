"""Benchmark: peak memory of ``tessera-ray export`` and ``sample`` against the size of the request.

Builds one random published root (``--units`` x ``--units`` units of 256 px),
then runs the real commands in fresh processes and reads each one's peak
resident memory (``getrusage`` of the process itself, so GDAL's and Arrow's
allocations count):

* ``export`` of square regions of several sides (pixels), each against the
  size of the float32 array it writes and, for reference, the in-memory
  ``Root.mosaic`` of the same bbox (what export did before it streamed);
* ``sample`` of several numbers of random points (CSV input).

The claim to check: peak memory is a constant plus a configured buffer
(export blocks, sample batches), flat as the request grows.

    python jobs/bench_memory.py                 # ~4 min on 2 cores
    python jobs/bench_memory.py --quick         # smaller sizes, ~1 min

Writes bench-results/bench_memory.json and bench-results/bench_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# runs one CLI command (or a mosaic) in this process and prints its own peak RSS as the last line
_RUNNER = r"""
import json, resource, sys
args = json.loads(sys.argv[1])
code = 0
if args[0] == "mosaic":
    from tessera_ray.client import open_root
    root = open_root(args[1])
    root.max_region_pixels = 10**12
    array, _, _ = root.mosaic(tuple(float(v) for v in args[2].split(",")), int(args[3]))
    print(array.shape)
else:
    from tessera_ray.cli import main
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
print(json.dumps({"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "code": code}))
"""


def measure(args: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(args)], env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise SystemExit(f"bench_memory: {args[0]} failed: {proc.stderr[-2000:]}") from None
    if result["code"]:
        raise SystemExit(f"bench_memory: {args[0]} exited {result['code']}: {proc.stderr[-2000:]}")
    return {"peak_rss_mb": result["maxrss_mb"], "seconds": seconds}


def build_root(folder: Path, units: int):
    from tessera_ray.grid import Unit
    from tessera_ray.store.testing import build_random_store

    grid = [Unit(31, 4000 + r, 160 + c, 256) for r in range(units) for c in range(units)]
    build_random_store(str(folder), grid, partial=False)
    return grid


def bbox_of(side: int) -> str:
    """A lon/lat bbox inside the root, about ``side`` x ``side`` px on zone 31's grid."""
    from tessera_ray.grid import zone_grid

    grid = zone_grid(31)
    row0, col0 = 4000 * 256 + 8, 160 * 256 + 8
    lons, lats = grid.pixel_to_lonlat(np.array([row0 + side, row0]), np.array([col0, col0 + side]))
    return f"{lons[0]:.7f},{lats[0]:.7f},{lons[1]:.7f},{lats[1]:.7f}"


def points_csv(path: Path, n: int, units: int, seed: int = 0) -> None:
    from tessera_ray.grid import zone_grid

    rng = np.random.default_rng(seed)
    rows = rng.integers(4000 * 256, (4000 + units) * 256, n)
    cols = rng.integers(160 * 256, (160 + units) * 256, n)
    lon, lat = zone_grid(31).pixel_to_lonlat(rows, cols)
    np.savetxt(path, np.column_stack([lon, lat]), fmt="%.7f", delimiter=",", header="lon,lat", comments="")


def markdown(report: dict) -> str:
    lines = [f"Peak resident memory of one process ({os.cpu_count()} cores); random root of "
             f"{report['units']}x{report['units']} units of 256 px.", "",
             "| export side (px) | pixels | float32 array | export peak RSS "
             "| in-memory mosaic peak RSS (before) | export seconds |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in report["export"]:
        lines.append(f"| {r['side']} | {r['side'] ** 2:,} | {r['array_mb']:.0f} MB | "
                     f"{r['export']['peak_rss_mb']:.0f} MB | "
                     f"{r['mosaic']['peak_rss_mb']:.0f} MB | {r['export']['seconds']:.1f} |")
    lines += ["", "| sample points | sample peak RSS | seconds |", "|---:|---:|---:|"]
    for r in report["sample"]:
        lines.append(f"| {r['points']:,} | {r['peak_rss_mb']:.0f} MB | {r['seconds']:.1f} |")
    lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    units = 3 if args.quick else 5
    sides = (128, 384, 640) if args.quick else (256, 512, 1024, 1200)
    counts = (10_000, 100_000, 300_000) if args.quick else (10_000, 100_000, 1_000_000)
    report = {"command": " ".join(["python jobs/bench_memory.py", *(sys.argv[1:] if argv is None else argv)]),
              "units": units, "export": [], "sample": []}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        tmp = Path(tmp)
        root = tmp / "root"
        build_root(root, units)
        for side in sides:
            bbox = bbox_of(side)
            out = tmp / f"export-{side}.tif"
            exported = measure(["export", "--root", str(root), "--bbox", bbox, "--year", "2024", "--out", str(out)])
            out.unlink()
            mosaic = measure(["mosaic", str(root), bbox, "2024"])
            row = {"side": side, "array_mb": side * side * 128 * 4 / 2**20, "export": exported, "mosaic": mosaic}
            report["export"].append(row)
            print(f"export {side:>5} px: {exported['peak_rss_mb']:7.0f} MB (mosaic {mosaic['peak_rss_mb']:7.0f} MB), "
                  f"{exported['seconds']:.1f} s", flush=True)
        for n in counts:
            points = tmp / f"points-{n}.csv"
            points_csv(points, n, units)
            out = tmp / f"sample-{n}.parquet"
            row = {"points": n, **measure(["sample", "--root", str(root), "--points", str(points), "--year", "2024",
                                           "--out", str(out)])}
            report["sample"].append(row)
            print(f"sample {n:>9,} points: {row['peak_rss_mb']:7.0f} MB, {row['seconds']:.1f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_memory.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "bench_memory.md").write_text(table)
    print()
    print(table)
    return report


if __name__ == "__main__":
    main()
