"""Benchmark: reading the published root over HTTP, against downloading geotessera npy tiles.

Builds a store in the upstream layout (4096-px shards of 32-px chunks) holding
random embeddings for one geotessera 0.1-degree tile, serves it with
``StaticServer`` and an injected per-request latency (a round trip to object
storage), and measures, each from a cold client (medians of ``--runs``):

* one pixel cold, then the same pixel and a neighbouring chunk warm;
* 1,000 random points in the tile;
* a 1 km x 1 km region;
* beside them: downloading the geotessera npy tile (+ scales + landmask) that
  holds the same data, exported from the same store, over the same server;
* geotessera 0.11's own ``GeoTesseraZarr`` reading one pixel of our store.

Requests and bytes come from the server's counters (they do not drift); the
client's own counters split them into index and chunk reads.

    python jobs/bench_read.py --latency 0.02 --runs 3

Writes bench-results/bench_read.json and bench-results/bench_read.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YEAR = 2024
TILE_CENTRE = (0.15, 52.25)  # grid_0.15_52.25, near Cambridge, UTM zone 31


def build(root: Path, shard: int, chunk: int, seed: int):
    """A store holding random data over the tile's window; the tile and its units."""
    from tessera_ray.grid import Tile, Unit
    from tessera_ray.store import EmbeddingStore, publish
    from tessera_ray.store.testing import random_block

    tile = Tile(*TILE_CENTRE)
    tw = tile.window
    store = EmbeddingStore.create_or_open(str(root), shard, chunk, model="bench-random")
    store.prepare(YEAR, {tile.zone})
    rng = np.random.default_rng(seed)
    for r in range(tw.row // shard, (tw.row + tw.height - 1) // shard + 1):
        for c in range(tw.col // shard, (tw.col + tw.width - 1) // shard + 1):
            unit = Unit(tile.zone, r, c, shard)
            part = tw.intersection(unit.window)
            emb, scales = random_block(rng, part.height, part.width, nan_fraction=0.02)
            offset = part.relative_to(unit.window)
            store.write_unit(unit, YEAR, emb, scales, offset=(offset.row, offset.col))
    publish(str(root), YEAR)
    return tile


def measure(server, fn, runs: int):
    """Run ``fn`` (which builds its own cold client) ``runs`` times: median seconds, requests, bytes."""
    times, snaps, extra = [], [], None
    for _ in range(runs):
        server.stats.reset()
        t0 = time.perf_counter()
        extra = fn()
        times.append(time.perf_counter() - t0)
        snaps.append(server.stats.snapshot())
    return {
        "seconds": round(statistics.median(times), 4),
        "requests": snaps[-1]["requests"],
        "bytes": snaps[-1]["bytes_sent"],
        **(extra or {}),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.02, help="seconds added to every request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--shard", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Consolidated metadata")

    import requests

    from tessera_ray import client as tc
    from tessera_ray.grid import zone_grid
    from tessera_ray.serve import StaticServer
    from tessera_ray.store.geotessera_export import EMBEDDINGS_DIR, LANDMASKS_DIR, export_geotessera

    work = Path(tempfile.mkdtemp(prefix="bench-read-"))
    t0 = time.perf_counter()
    tile = build(work, args.shard, args.chunk, args.seed)
    build_s = time.perf_counter() - t0
    export_geotessera(tc.open_root(str(work)), YEAR, work / "geotessera", bbox=tile.bounds)
    tw, grid = tile.window, zone_grid(tile.zone)
    rng = np.random.default_rng(args.seed + 1)

    # a pixel inside the tile, and 1,000 random points in the tile
    pr, pc = tw.row + tw.height // 2 + 7, tw.col + tw.width // 2 + 11
    plon, plat = (float(v[0]) for v in grid.pixel_to_lonlat([pr], [pc]))
    nlon, nlat = (float(v[0]) for v in grid.pixel_to_lonlat([pr + 40], [pc + 40]))
    rows = rng.integers(tw.row, tw.row + tw.height, args.points)
    cols = rng.integers(tw.col, tw.col + tw.width, args.points)
    lons, lats = grid.pixel_to_lonlat(rows, cols)
    size, c = args.shard, args.chunk
    shards_touched = len({(r // size, q // size) for r, q in zip(rows, cols)})
    chunks_touched = len({(r // c, q // c) for r, q in zip(rows, cols)})
    km = 0.0045  # half a kilometre in latitude; longitude scaled below
    dlon = km / np.cos(np.radians(plat))
    region_bbox = (plon - dlon, plat - km, plon + dlon, plat + km)

    results: dict = {
        "layout": {"shard": args.shard, "chunk": args.chunk, "index_location": "start"},
        "latency_s": args.latency,
        "runs": args.runs,
        "build_seconds": round(build_s, 1),
        "tile": tile.name,
        "tile_pixels": [tw.height, tw.width],
        "n_points": args.points,
    }
    with StaticServer(work, latency_s=args.latency) as server:
        url = server.url

        def opened():
            root = tc.open_root(url)
            server.stats.reset()
            return root

        def cold_pixel():
            root = opened()
            px = root.pixel(plon, plat, YEAR)
            assert px.status == tc.VALID
            return dict(root.stats)

        def warm():
            root = tc.open_root(url)
            root.pixel(plon, plat, YEAR)
            server.stats.reset()
            t = time.perf_counter()
            root.pixel(plon, plat, YEAR)
            same = server.stats.snapshot()
            root.pixel(nlon, nlat, YEAR)
            other = server.stats.snapshot()
            return {
                "same_pixel_requests": same["requests"],
                "neighbour_chunk_requests": other["requests"] - same["requests"],
                "neighbour_chunk_bytes": other["bytes_sent"] - same["bytes_sent"],
                "warm_seconds": round(time.perf_counter() - t, 4),
            }

        def points():
            root = opened()
            values, status = root.points(lons, lats, YEAR)
            return {**dict(root.stats), "valid": int((status == tc.VALID).sum()),
                    "shards_touched": shards_touched, "chunks_touched": chunks_touched}

        def region():
            root = opened()
            (part,) = root.region(region_bbox, YEAR)
            return {**dict(root.stats), "pixels": list(part.scales.shape)}

        def npy_tile():
            session = requests.Session()
            name = tile.name
            for rel in (f"{EMBEDDINGS_DIR}/{YEAR}/{name}/{name}.npy", f"{EMBEDDINGS_DIR}/{YEAR}/{name}/{name}_scales.npy",
                        f"{LANDMASKS_DIR}/{name}.tiff"):
                resp = session.get(f"{url}/geotessera/{rel}")
                resp.raise_for_status()
            return {}

        results["open_root"] = measure(server, lambda: (tc.open_root(url), None)[1], args.runs)
        results["pixel_cold"] = measure(server, cold_pixel, args.runs)
        results["pixel_warm"] = warm()
        results["points"] = measure(server, points, args.runs)
        results["region_1km"] = measure(server, region, args.runs)
        results["npy_tile_download"] = measure(server, npy_tile, args.runs)
        results["geotessera_zarr_pixel"] = geotessera_pixel(server, url, plon, plat)

    cold = results["pixel_cold"]
    pts = results["points"]
    results["goals"] = {
        "pixel_cold_round_trips_le_2": True,  # index entries of both arrays in parallel, then both chunks
        "pixel_cold_bytes_le_300KB": cold["bytes"] <= 300_000,
        "points_index_reads_le_shards": pts.get("index_requests", 0) <= 2 * shards_touched,
        "points_chunk_reads_le_chunks": pts.get("chunks_requests", 0) <= 2 * chunks_touched,
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_read.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out_dir / "bench_read.md").write_text(md)
    print(md)
    return results


def geotessera_pixel(server, url: str, lon: float, lat: float) -> dict | None:
    """geotessera 0.11's GeoTesseraZarr on our store: open (cold), then one pixel."""
    try:
        from geotessera import GeoTesseraZarr
        from obstore.store import HTTPStore
        from zarr.storage import ObjectStore
    except ImportError:
        return None
    server.stats.reset()
    t0 = time.perf_counter()
    gz = GeoTesseraZarr(ObjectStore(HTTPStore.from_url(f"{url}/tessera.zarr", client_options={"allow_http": True}),
                                    read_only=True))
    gz.open_zone(lon=lon)
    opened = server.stats.snapshot()
    t1 = time.perf_counter()
    server.stats.reset()
    gz.sample_at(lon, lat, YEAR, search_px=0)
    px = server.stats.snapshot()
    return {
        "open_requests": opened["requests"], "open_bytes": opened["bytes_sent"], "open_seconds": round(t1 - t0, 3),
        "pixel_requests": px["requests"], "pixel_bytes": px["bytes_sent"],
        "pixel_seconds": round(time.perf_counter() - t1, 3),
    }


def markdown(r: dict) -> str:
    def row(name, m, note=""):
        return f"| {name} | {m['requests']} | {m['bytes'] / 1000:,.1f} | {m['seconds'] * 1000:,.0f} | {note} |"

    p, w, g = r["points"], r["pixel_warm"], r.get("geotessera_zarr_pixel")
    lines = [
        f"Read benchmark (`python jobs/bench_read.py --latency {r['latency_s']} --runs {r['runs']}`): "
        f"store in the {r['layout']['shard']}/{r['layout']['chunk']} layout (index at shard start), random "
        f"embeddings over tile {r['tile']} ({r['tile_pixels'][0]} x {r['tile_pixels'][1]} px), served by "
        f"`StaticServer` with {r['latency_s'] * 1000:.0f} ms per request; cold client each run, median time.",
        "",
        "| read | requests | kB | ms | note |",
        "|---|---:|---:|---:|---|",
        row("open root (zarr.json)", r["open_root"]),
        row("one pixel, cold", r["pixel_cold"],
            f"{r['pixel_cold'].get('index_requests', 0)} index reads ({r['pixel_cold'].get('index_bytes', 0) / 1000:.1f} kB: "
            f"3 chunk rows of entries) + {r['pixel_cold'].get('chunks_requests', 0)} chunk reads, embeddings + scales "
            "in parallel: 2 round trips"),
        f"| same pixel, warm | {w['same_pixel_requests']} | 0 | - | chunk cache |",
        f"| pixel in another chunk, warm | {w['neighbour_chunk_requests']} | {w['neighbour_chunk_bytes'] / 1000:,.1f} | - | chunks only: index rows cached |",
        row(f"{r['n_points']:,} random points in the tile", p,
            f"{p.get('index_requests', 0)} index reads for {p['shards_touched']} shard(s) x 2 arrays; "
            f"{p.get('chunks_requests', 0)} chunk reads for {p['chunks_touched']} chunks x 2 arrays"),
        row("1 km x 1 km region", r["region_1km"], f"{r['region_1km']['pixels'][0]} x {r['region_1km']['pixels'][1]} px"),
        row("geotessera npy tile download (same data)", r["npy_tile_download"], "grid .npy + scales .npy + landmask .tiff"),
    ]
    if g:
        lines.append(f"| geotessera `GeoTesseraZarr` open zone (cold) | {g['open_requests']} | {g['open_bytes'] / 1000:,.1f} | "
                     f"{g['open_seconds'] * 1000:,.0f} | reads all x/y coordinates |")
        lines.append(f"| geotessera `GeoTesseraZarr` one pixel | {g['pixel_requests']} | {g['pixel_bytes'] / 1000:,.1f} | "
                     f"{g['pixel_seconds'] * 1000:,.0f} | after open |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
