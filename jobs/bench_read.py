"""Benchmark: reading the published root over HTTP in both shard layouts, against downloading geotessera npy tiles.

Builds the same store twice, in the upstream shape (4096-px shards of 32-px
chunks) and each layout (``fixed-offsets``: raw chunks at offsets known from
the metadata; ``zstd``: Blosc-zstd chunks found through the shard index),
holding random embeddings in the whole unit(s) under one geotessera
0.1-degree tile (2 GB of int8 per 4096-px unit and layout). One
``StaticServer`` with an injected per-request latency (a round trip to object
storage) serves both, and each read is measured from a cold client (medians
of ``--runs``):

* one pixel cold, then the same pixel and a neighbouring chunk warm;
* 1,000 random points in the tile;
* a 1 km x 1 km region;
* beside them: downloading the geotessera npy tile (+ scales + landmask) that
  holds the same data, exported from the same store, over the same server;
* geotessera 0.11's own ``GeoTesseraZarr`` reading one pixel of each store;
* the cold pixel and the 1 km region again at Matryoshka depth ``--depth``
  (the stores hold that prefix array beside the 128 dims), against 128.

Storage: the shard bytes of both bench stores (random int8: incompressible),
and, with ``--storage-root``, the shards of a root written by ``tessera-ray
embed`` (real model embeddings) re-encoded in both layouts.

Requests and bytes come from the server's counters (they do not drift); the
client's own counters split them into index and chunk reads.

    python jobs/bench_read.py --latency 0.02 --runs 3 [--storage-root ROOT]

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
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

YEAR = 2024
TILE_CENTRE = (0.15, 52.25)  # grid_0.15_52.25, near Cambridge, UTM zone 31


LAYOUTS = {"fixed-offsets": "none", "zstd": "zstd"}  # name -> StoreLayout.compression


def build(root: Path, shard: int, chunk: int, seed: int, compression: str, depth: int = 16):
    """A store whose units under the tile hold random data, whole (an interior unit as the embed job writes it)."""
    from tessera_ray.grid import Tile, Unit
    from tessera_ray.store import EmbeddingStore, publish
    from tessera_ray.store.testing import random_block

    tile = Tile(*TILE_CENTRE)
    tw = tile.window
    store = EmbeddingStore.create_or_open(str(root), shard, chunk, model="bench-random", compression=compression,
                                          depths=(depth,))
    store.prepare(YEAR, {tile.zone})
    rng = np.random.default_rng(seed)
    for r in range(tw.row // shard, (tw.row + tw.height - 1) // shard + 1):
        for c in range(tw.col // shard, (tw.col + tw.width - 1) // shard + 1):
            emb, scales = random_block(rng, shard, shard, nan_fraction=0.02)
            store.write_unit(Unit(tile.zone, r, c, shard), YEAR, emb, scales)
            del emb, scales
    publish(str(root), YEAR)
    return tile


def shard_bytes(root: Path) -> dict:
    """Bytes of the embeddings and scales shard objects of a local root."""
    out = {}
    for name in ("embeddings", "scales"):
        out[name] = sum(p.stat().st_size for p in root.glob(f"tessera.zarr/utm*/{name}/c/**/*") if p.is_file())
    return out


def reencoded_sizes(src: str) -> dict:
    """The shards of a published root (e.g. real embeddings) re-encoded in both layouts: bytes and seconds."""
    from tessera_ray import client as tc
    from tessera_ray.grid import Window
    from tessera_ray.store.layout import StoreLayout, StoreState, encode_unit_shards

    root = tc.open_root(src)
    out = {name: {"embeddings": 0, "scales": 0, "encode_seconds": 0.0} for name in LAYOUTS}
    units, pixels = 0, Counter()
    for (zone, array), arr in sorted(root.arrays.items()):
        if array != "scales":
            continue
        size, chunk = arr.shard_shape[-1], arr.chunk_shape[-1]
        for key in root.objects.list(f"{arr.key}/c/"):
            t, r, c = (int(v) for v in key.rsplit("/c/", 1)[1].split("/"))
            q, s = root.read_window(zone, Window(r * size, c * size, size, size), root.years[t])
            units += 1
            pixels["valid"] += int(np.isfinite(s).sum())
            pixels["no_data"] += int(np.isnan(s).sum())
            pixels["not_processed"] += int(np.isposinf(s).sum())
            for name, compression in LAYOUTS.items():
                state = StoreState(StoreLayout(size, chunk, compression=compression), "m", tuple(root.years), (zone,))
                t0 = time.perf_counter()
                shards = encode_unit_shards(state, zone, t, r, c, q, s)
                out[name]["encode_seconds"] += time.perf_counter() - t0
                for k, data in shards.items():
                    out[name]["embeddings" if "/embeddings/" in k else "scales"] += len(data)
    for v in out.values():
        v["encode_seconds"] = round(v["encode_seconds"], 2)
    return {"root": src, "units": units, "shard": size, "chunk": chunk, "pixels": dict(pixels),
            "raw_int8_bytes": 128 * sum(pixels.values()), **out} if units else {"root": src, "units": 0}


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
    parser.add_argument("--depth", type=int, default=16, help="Matryoshka depth compared with all 128 dims")
    parser.add_argument("--storage-root",
                        help="a root written by tessera-ray embed: re-encode its shards in both layouts")
    parser.add_argument("--out-dir", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Consolidated metadata")
    with tempfile.TemporaryDirectory(prefix="bench-read-") as tmp:  # ~4 GB with 4096-px units
        results = run(args, Path(tmp))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench_read.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown(results)
    (out_dir / "bench_read.md").write_text(md)
    print(md)
    return results


def run(args, work: Path) -> dict:
    """Build both stores under ``work``, serve them and measure every read."""
    from tessera_ray import client as tc
    from tessera_ray.grid import zone_grid
    from tessera_ray.serve import StaticServer
    from tessera_ray.store.geotessera_export import export_geotessera

    build_s = {}
    for name, compression in LAYOUTS.items():
        t0 = time.perf_counter()
        tile = build(work / name, args.shard, args.chunk, args.seed, compression, args.depth)
        build_s[name] = round(time.perf_counter() - t0, 1)
    export_geotessera(tc.open_root(str(work / "zstd")), YEAR, work / "geotessera", bbox=tile.bounds)
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
        "build_seconds": build_s,
        "tile": tile.name,
        "tile_pixels": [tw.height, tw.width],
        "n_points": args.points,
        "shards_touched": shards_touched,
        "chunks_touched": chunks_touched,
        "depth": args.depth,
        "layouts": {},
    }
    with StaticServer(work, latency_s=args.latency) as server:
        for name in LAYOUTS:
            url = f"{server.url}/{name}"
            r = results["layouts"][name] = read_cases(server, url, args.runs, (plon, plat), (nlon, nlat), (lons, lats),
                                                      region_bbox, args.depth)
            r["storage"] = shard_bytes(work / name)
            r["geotessera_zarr_pixel"] = geotessera_pixel(server, url, plon, plat)
            values = tc.open_root(url).points(lons, lats, YEAR)[0]
            if name == next(iter(LAYOUTS)):
                reference = values
            else:  # both layouts hold the same data: the client must return the same numbers
                np.testing.assert_array_equal(values, reference)
            cold, pts = r["pixel_cold"], r["points"]
            r["goals"] = {
                "pixel_cold_requests_le_2": cold["requests"] <= 2,
                "pixel_cold_bytes_le_300KB": cold["bytes"] <= 300_000,
                "points_index_reads_le_shards": pts.get("index_requests", 0) <= 2 * shards_touched,
                "points_chunk_reads_le_chunks": pts.get("chunks_requests", 0) <= 2 * chunks_touched,
            }
        results["npy_tile_download"] = measure(server, lambda: npy_tile(server.url, tile.name), args.runs)
    if args.storage_root:
        results["storage_model_embeddings"] = reencoded_sizes(args.storage_root)
    return results


def read_cases(server, url: str, runs: int, pixel, neighbour, points_lonlat, region_bbox, depth: int) -> dict:
    """Every read of the benchmark against one store, each from a cold client."""
    from tessera_ray import client as tc

    plon, plat = pixel
    lons, lats = points_lonlat

    def opened():
        root = tc.open_root(url)
        server.stats.reset()
        return root

    def cold_pixel(depth=None):
        root = opened()
        px = root.pixel(plon, plat, YEAR, depth=depth)
        assert px.status == tc.VALID and len(px.values) == (depth or 128)
        return dict(root.stats)

    def warm():
        root = tc.open_root(url)
        root.pixel(plon, plat, YEAR)
        server.stats.reset()
        t = time.perf_counter()
        root.pixel(plon, plat, YEAR)
        same = server.stats.snapshot()
        root.pixel(*neighbour, YEAR)
        other = server.stats.snapshot()
        return {
            "same_pixel_requests": same["requests"],
            "neighbour_chunk_requests": other["requests"] - same["requests"],
            "neighbour_chunk_bytes": other["bytes_sent"] - same["bytes_sent"],
            "warm_seconds": round(time.perf_counter() - t, 4),
        }

    def points():
        root = opened()
        _, status = root.points(lons, lats, YEAR)
        return {**dict(root.stats), "valid": int((status == tc.VALID).sum())}

    def region(depth=None):
        root = opened()
        (part,) = root.region(region_bbox, YEAR, depth=depth)
        assert part.embeddings.shape[-1] == (depth or 128)
        return {**dict(root.stats), "pixels": list(part.scales.shape)}

    return {
        "open_root": measure(server, lambda: (tc.open_root(url), None)[1], runs),
        "pixel_cold": measure(server, cold_pixel, runs),
        "pixel_warm": warm(),
        "points": measure(server, points, runs),
        "region_1km": measure(server, region, runs),
        "pixel_cold_depth": measure(server, lambda: cold_pixel(depth), runs),
        "region_1km_depth": measure(server, lambda: region(depth), runs),
    }


def npy_tile(url: str, name: str) -> dict:
    """Download the geotessera tile files that hold the same data."""
    import requests

    from tessera_ray.store.geotessera_export import EMBEDDINGS_DIR, LANDMASKS_DIR

    session = requests.Session()
    for rel in (f"{EMBEDDINGS_DIR}/{YEAR}/{name}/{name}.npy", f"{EMBEDDINGS_DIR}/{YEAR}/{name}/{name}_scales.npy",
                f"{LANDMASKS_DIR}/{name}.tiff"):
        session.get(f"{url}/geotessera/{rel}").raise_for_status()
    return {}


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
    names = list(r["layouts"])
    L = r["layouts"]

    def cells(m):
        return f"{m['requests']} | {m['bytes'] / 1000:,.1f} | {m['seconds'] * 1000:,.0f}"

    def split(m):
        return f"{m.get('index_requests', 0)} index + {m.get('chunks_requests', 0)} chunk reads"

    def row(label, key, note=None):
        extra = " / ".join(split(L[n][key]) for n in names) if note is None else note
        return f"| {label} | " + " | ".join(cells(L[n][key]) for n in names) + f" | {extra} |"

    head = " | ".join(f"{n} req | kB | ms" for n in names)
    lines = [
        f"Read benchmark (`python jobs/bench_read.py --latency {r['latency_s']} --runs {r['runs']}`): the same "
        f"random embeddings in the unit(s) under tile {r['tile']} "
        f"({r['tile_pixels'][0]} x {r['tile_pixels'][1]} px) in a "
        f"{r['layout']['shard']}/{r['layout']['chunk']} store (index at shard start), once per layout "
        f"({', '.join(names)}), served by `StaticServer` with {r['latency_s'] * 1000:.0f} ms per request; cold "
        "client each run, median time. Notes give index / chunk reads per layout.",
        "",
        f"| read | {head} | notes |",
        "|---|" + "---:|---:|---:|" * len(names) + "---|",
        row("open root (zarr.json)", "open_root", ""),
        row("one pixel, cold", "pixel_cold"),
        "| same pixel, warm | " + " | ".join(f"{L[n]['pixel_warm']['same_pixel_requests']} | 0 | -" for n in names)
        + " | chunk cache |",
        "| pixel in another chunk, warm | " + " | ".join(
            f"{L[n]['pixel_warm']['neighbour_chunk_requests']} | "
            f"{L[n]['pixel_warm']['neighbour_chunk_bytes'] / 1000:,.1f} | -"
            for n in names) + " | |",
        row(f"{r['n_points']:,} random points in the tile", "points",
            f"{r['shards_touched']} shard(s), {r['chunks_touched']} chunks x 2 arrays; "
            + " / ".join(split(L[n]["points"]) for n in names)),
        row("1 km x 1 km region", "region_1km"),
        row(f"one pixel, cold, depth {r['depth']}", "pixel_cold_depth"),
        row(f"1 km x 1 km region, depth {r['depth']}", "region_1km_depth"),
    ]
    gt = [L[n].get("geotessera_zarr_pixel") for n in names]
    if all(gt):
        lines.append("| geotessera `GeoTesseraZarr` one pixel (after open) | " + " | ".join(
            f"{g['pixel_requests']} | {g['pixel_bytes'] / 1000:,.1f} | {g['pixel_seconds'] * 1000:,.0f}" for g in gt)
            + " | reads through the index in both |")
    n = r["npy_tile_download"]
    lines += [
        f"| geotessera npy tile download (same data) | {n['requests']} | {n['bytes'] / 1000:,.1f} | "
        f"{n['seconds'] * 1000:,.0f} |" + " | | |" * (len(names) - 1) + " grid .npy + scales .npy + landmask .tiff |",
        "",
        "Goals (issue 5): " + "; ".join(
            f"{nm}: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in L[nm]["goals"].items()) for nm in names),
        "",
        "| shard storage | " + " | ".join(names) + " | ratio |",
        "|---|" + "---:|" * len(names) + "---:|",
    ]

    def storage_rows(label, get):
        out = []
        for array in ("embeddings", "scales"):
            v = [get(nm)[array] for nm in names]
            sizes = " | ".join(f"{x / 1e6:,.2f} MB" for x in v)
            out.append(f"| {label}: {array} | {sizes} | {v[0] / v[1]:.3f} |")
        return out

    lines += storage_rows(f"bench store, random int8, whole {r['layout']['shard']}-px unit(s)",
                          lambda nm: L[nm]["storage"])
    m = r.get("storage_model_embeddings")
    if m and m.get("units"):
        lines += storage_rows(
            f"model embeddings ({m['units']} unit(s) of {m['shard']} px from `{m['root']}`, "
            f"{m['pixels'].get('valid', 0):,} valid px)", lambda nm: m[nm])
        lines.append("| encode seconds (both arrays) | "
                     + " | ".join(f"{m[nm]['encode_seconds']}" for nm in names) + " | |")
    lines += ["",
              f"Depth {r['depth']} against 128 "
              f"(`embeddings_d{r['depth']}` + `scales` instead of `embeddings` + `scales`):",
              "",
              "| read | layout | bytes at 128 | bytes at depth | ratio | ms at 128 | ms at depth |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for label, full, part in (("one pixel, cold", "pixel_cold", "pixel_cold_depth"),
                              ("1 km region", "region_1km", "region_1km_depth")):
        for nm in names:
            a, b = L[nm][full], L[nm][part]
            lines.append(f"| {label} | {nm} | {a['bytes'] / 1000:,.1f} kB | {b['bytes'] / 1000:,.1f} kB | "
                         f"{b['bytes'] / a['bytes']:.3f} | {a['seconds'] * 1000:,.0f} | {b['seconds'] * 1000:,.0f} |")
    lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
