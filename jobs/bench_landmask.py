"""Benchmark: which land mask should the planner use? Three offline masks against each other.

* ``osm``: OpenStreetMap's land polygons, as shipped by roaring-landmask;
* ``gshhg``: GSHHG's full-resolution shoreline, from the same package;
* ``globe``: global-land-mask, a 30-arc-second (~1 km) raster from NOAA's GLOBE DEM.

Three measurements:

1. loading: seconds and peak RSS of each mask, each in its own process;
2. points at coasts: random vertices of the OSM coastline, moved 0-3 km in a
   random direction, classified land or sea by each mask; agreement per band
   of distance moved;
3. units: every 4096 px unit of the 60 zone grids tested by each mask, bare
   (margin 0) and grown by the planner's margin; how many units holding land
   on one mask the other would drop. The polygon masks use the planner's own
   test (``tessera_ray.landmask.units_with_land``); the raster mask keeps a
   unit when any of its cells lies inside the bbox of the unit's outline, which
   keeps at least the units the exact test would.

    python jobs/bench_landmask.py [--points 20000] [--zones 1-60]

Writes bench-results/bench_landmask.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench-results"
MASKS = ("osm", "gshhg", "globe")
BANDS_M = (0, 250, 500, 1000, 2000, 3000)


def _globe():
    from global_land_mask import globe

    return ~globe._mask  # True on land; rows from 90 N southwards, columns from 180 W, 1/120 degree


def load(mask: str) -> dict:
    started = time.perf_counter()
    if mask == "globe":
        land = _globe()
        size = int(land.sum())
    else:
        from tessera_ray.landmask import land_polygons

        size = len(land_polygons(mask).polygons)
    return {"mask": mask, "seconds": round(time.perf_counter() - started, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "size": size}


def is_land(mask: str, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    import shapely

    if mask == "globe":
        land = _globe()
        rows = np.clip(np.floor((90.0 - lat) * 120).astype(int), 0, land.shape[0] - 1)
        cols = np.clip(np.floor((lon + 180.0) * 120).astype(int), 0, land.shape[1] - 1)
        return land[rows, cols]
    from tessera_ray.landmask import land_polygons

    polygons = land_polygons(mask)
    points = shapely.points(lon, lat)
    query, hits = polygons.tree.query(points)
    found = np.zeros(len(points), dtype=bool)
    found[query[shapely.contains(polygons.polygons[hits], points[query])]] = True
    return found


def coastal_points(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices of the OSM coastline, each moved by 0-3 km in a random direction (lon, lat, metres moved)."""
    import shapely

    from tessera_ray.landmask import land_polygons

    rng = np.random.default_rng(seed)
    rings = shapely.get_exterior_ring(land_polygons("osm").polygons)
    coords = shapely.get_coordinates(rings)
    coords = coords[(coords[:, 1] > -80) & (coords[:, 1] < 84)]  # the zone grids' latitudes
    pick = coords[rng.integers(0, len(coords), count)]
    moved = rng.uniform(0, BANDS_M[-1], count)
    bearing = rng.uniform(0, 2 * np.pi, count)
    dlat = moved * np.cos(bearing) / 111_320.0
    dlon = moved * np.sin(bearing) / (111_320.0 * np.cos(np.radians(pick[:, 1])))
    lon = (pick[:, 0] + dlon + 180.0) % 360.0 - 180.0
    return lon, np.clip(pick[:, 1] + dlat, -89.9, 89.9), moved


def globe_units(units, margin_m: float) -> np.ndarray:
    """Units whose grown outline's bbox holds a GLOBE land cell."""
    import shapely

    from tessera_ray.landmask import unit_outlines

    land = _globe()
    found = np.zeros(len(units), dtype=bool)
    for start in range(0, len(units), 20_000):
        part = units[start:start + 20_000]
        for i, (w, s, e, n) in enumerate(shapely.bounds(unit_outlines(part, margin_m))):
            if np.isnan(w):
                continue
            r0, r1 = int(np.floor((90.0 - n) * 120)), int(np.ceil((90.0 - s) * 120)) + 1
            c0, c1 = int(np.floor((w + 180.0) * 120)), int(np.ceil((e + 180.0) * 120)) + 1
            found[start + i] = land[max(r0, 0):r1, max(c0, 0):c1].any()
    return found


def unit_sets(zones: list[int]) -> dict:
    from tessera_ray.grid import roi_from_bbox, units_for_roi, zone_lon_bounds
    from tessera_ray.landmask import COAST_MARGIN_M, units_with_land

    units = []
    for zone in zones:
        west, east = zone_lon_bounds(zone)
        units += [u for u in units_for_roi(roi_from_bbox(west + 1e-6, -80, east - 1e-6, 84), 4096) if u.zone == zone]
    sets, seconds = {}, {}
    for mask in MASKS:
        for margin in (0.0, COAST_MARGIN_M):
            started = time.perf_counter()
            keep = globe_units(units, margin) if mask == "globe" else units_with_land(units, mask, margin)
            seconds[f"{mask}@{margin:.0f}"] = round(time.perf_counter() - started, 1)
            sets[f"{mask}@{margin:.0f}"] = keep
    for margin in (0.0, COAST_MARGIN_M):
        sets[f"osm+gshhg@{margin:.0f}"] = sets[f"osm@{margin:.0f}"] | sets[f"gshhg@{margin:.0f}"]
    table = {}
    for truth in MASKS:
        for mask in (*MASKS, "osm+gshhg"):
            for margin in (0.0, COAST_MARGIN_M):
                dropped = sets[f"{truth}@0"] & ~sets[f"{mask}@{margin:.0f}"]
                table[f"{truth} land, {mask}@{margin:.0f} drops"] = int(dropped.sum())
    return {"units": len(units), "zones": len(zones), "land_units": {k: int(v.sum()) for k, v in sets.items()},
            "seconds": seconds, "dropped": table}


def report(result: dict) -> str:
    from tessera_ray.landmask import COAST_MARGIN_M

    m = f"{COAST_MARGIN_M:.0f}"
    lines = ["## Loading", "", "| mask | s | peak RSS MB | polygons (raster: land cells) |", "|---|---:|---:|---:|"]
    lines += [f"| {r['mask']} | {r['seconds']} | {r['peak_rss_mb']:,} | {r['size']:,} |" for r in result["load"]]
    lines += ["", f"## {result['points']['count']:,} points moved 0-3 km from the OSM coastline: agreement",
              "", "| moved (m) | osm = gshhg | osm = globe | gshhg = globe |", "|---|---:|---:|---:|"]
    for band, agree in result["points"]["bands"].items():
        lines.append(f"| {band} | {agree['osm=gshhg']:.1%} | {agree['osm=globe']:.1%} | {agree['gshhg=globe']:.1%} |")
    u = result["units"]
    lines += ["", f"## {u['units']:,} units of 4096 px ({u['zones']} zone grids): land units per mask",
              "", f"| mask | bare | grown {m} m |", "|---|---:|---:|"]
    every = (*MASKS, "osm+gshhg")
    lines += [f"| {k} | {u['land_units'][k + '@0']:,} | {u['land_units'][k + '@' + m]:,} |" for k in every]
    lines += ["", "Units holding land on one mask (bare) that another drops:", "",
              "| land on \\ dropped by | " + " | ".join(f"{k} bare | {k} grown" for k in every) + " |",
              "|---|" + "---:|" * (2 * len(every))]
    for truth in MASKS:
        cells = [u["dropped"][f"{truth} land, {k}@{mg} drops"] for k in every for mg in ("0", m)]
        lines.append(f"| {truth} | " + " | ".join(f"{c:,}" for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--load", choices=MASKS, help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--zones", default="1-60", help="zone grids of the unit comparison, e.g. 29-31")
    args = parser.parse_args()
    if args.load:
        print(json.dumps(load(args.load)))
        return
    RESULTS.mkdir(exist_ok=True)
    loads = [json.loads(subprocess.run([sys.executable, __file__, "--load", m], capture_output=True, text=True,
                                       check=True).stdout.splitlines()[-1]) for m in MASKS]
    lon, lat, moved = coastal_points(args.points)
    classes = {m: is_land(m, lon, lat) for m in MASKS}
    bands = {}
    for lo, hi in zip(BANDS_M, BANDS_M[1:]):
        sel = (moved >= lo) & (moved < hi)
        bands[f"{lo}-{hi}"] = {f"{a}={b}": float((classes[a][sel] == classes[b][sel]).mean())
                               for a, b in (("osm", "gshhg"), ("osm", "globe"), ("gshhg", "globe"))}
    first, last = (int(z) for z in args.zones.split("-")) if "-" in args.zones else (int(args.zones),) * 2
    result = {"load": loads, "points": {"count": args.points, "bands": bands},
              "units": unit_sets(list(range(first, last + 1)))}
    text = report(result)
    (RESULTS / "bench_landmask.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "bench_landmask.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
