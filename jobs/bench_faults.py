"""Benchmark: what faults on the COG reads cost the embed job, and that they change no published byte.

The synthetic world is served over loopback HTTP by ``StaticServer`` and the
embed job (``run_embed``, one local Ray for every case, the reader's default
retry settings) reads it through the world's stac-geoparquet catalog. A clean
run publishes the reference root; then each case runs the same job into a
fresh root through a fresh server (new URLs, so nothing comes from GDAL's
cache) that answers ``--rate`` of the requests with one fault kind of
:mod:`tessera_ray.faults`, and a last case with every kind at once. Each case
reports wall time (and its ratio to the clean run), requests, faults
injected, failed units, and whether every published file but the run record
equals the clean run's, byte for byte.

``GDAL_HTTP_TIMEOUT`` is ``--timeout`` (a slow fault holds its answer one
second longer), so a slow answer costs about that timeout: with the default
60 s, 5 % slow answers would make the run minutes long.

    python jobs/bench_faults.py                    # demo world (built if absent), 2 units, 5 % faults
    python jobs/bench_faults.py --world W --units 4 --rate 0.02

Writes bench-results/bench_faults.json and bench-results/bench_faults.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "jobs"))

EPOCH = "1767225600"


def cases(rate: float, timeout: float) -> list[tuple[str, tuple]]:
    """(name, faults) of every case after the clean one."""
    from tessera_ray.faults import Fault

    kinds = [
        ("503", (Fault.status(503, rate=rate),)),
        ("429 + Retry-After 1 s", (Fault.status(429, retry_after=1, rate=rate),)),
        (f"slow ({timeout + 1:g} s, past the {timeout:g} s timeout)", (Fault.slow(timeout + 1, rate=rate),)),
        ("200 with an HTML page", (Fault.html(rate=rate),)),
        ("body cut short", (Fault.short(rate=rate),)),
        ("502 on tile (data) requests only", (Fault.status(502, requests="data", rate=rate),)),
    ]
    every = tuple(f for _, faults in kinds for f in faults)
    return kinds + [("all of the above at once", every)]


def store_files(root: Path) -> dict[str, bytes]:
    """Every file under a root but the run records (each run's own) and temporary leftovers."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".tmp")
            and not p.relative_to(root).as_posix().startswith("manifests/runs/")}


def run_case(world: Path, roi: str, out: Path, checkpoint: str, args, faults: tuple) -> dict:
    from tessera_ray.pipeline.embed import run_embed
    from tessera_ray.pipeline.plan import EmbedConfig
    from tessera_ray.pipeline.progress import Progress
    from tessera_ray.serve import StaticServer

    with StaticServer(world) as server, server.inject(*faults, seed=args.seed) as injected:
        config = EmbedConfig(roi=roi, years=(2024,), out=str(out), checkpoint=checkpoint,
                             catalog=str(world / "stac" / "items.parquet"), catalog_root=server.url,
                             unit_size=args.unit_size, block_size=args.unit_size, max_in_flight=2, encoders=1,
                             created="2026-01-01T00:00:00+00:00")
        start = time.monotonic()
        result = run_embed(config, Progress(rich=False, stream=io.StringIO()))
        seconds = time.monotonic() - start
        totals = result.totals()
        unreadable = sum(len(y.unreadable_scenes) for y in result.years)
        return {"seconds": round(seconds, 2), "requests": server.stats.requests, "faults": injected.answered,
                "by_kind": dict(injected.by_kind), "done": totals["done"], "failed": totals["failed"],
                "unreadable_scenes": unreadable}


def markdown(rows: list[dict], args) -> str:
    lines = [
        f"Faults on COG reads (`python jobs/bench_faults.py --units {args.units} --rate {args.rate:g} "
        f"--timeout {args.timeout:g}`): the embed job on the synthetic world over loopback HTTP, "
        f"{args.units} unit(s) of {args.unit_size} px, one local Ray ({args.cpus} CPUs), default retries; "
        f"each case answers {args.rate:.0%} of requests with its fault.",
        "",
        "| case | s | x clean | requests | faults | failed units | unreadable scenes | bytes = clean |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    clean = rows[0]["seconds"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['seconds']:.1f} | {r['seconds'] / clean:.2f} | {r['requests']:,} "
                     f"| {r['faults']:,} | {r['failed']} | {r['unreadable_scenes']} "
                     f"| {'yes' if r['same_bytes'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", default=str(ROOT / "bench-results" / "world-demo"))
    parser.add_argument("--units", type=int, default=2)
    parser.add_argument("--unit-size", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.05, help="share of requests a case's fault answers")
    parser.add_argument("--timeout", type=float, default=2.0, help="GDAL_HTTP_TIMEOUT, seconds")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="run only the cases whose name contains this text (after the clean one)")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)

    from bench_pipeline import pick_units, roi_file

    from tessera_ray.cluster import ray_session
    from tessera_ray.model import build_encoder, get_variant, save_checkpoint

    world = Path(args.world)
    if not (world / "world.json").is_file():
        from tessera_ray.synthetic import generate_world

        print(f"building the synthetic world {world} (preset demo) ...", file=sys.stderr)
        generate_world(world, preset="demo")
    os.environ["GDAL_HTTP_TIMEOUT"] = f"{args.timeout:g}"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray 2.60 writes ~/.ray/auth_token and turns auth on
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp, \
            ray_session(num_cpus=args.cpus, object_store_memory=400 * 2**20):
        work = Path(tmp)
        checkpoint = str(work / "tiny.pt")
        config = get_variant("tiny")
        save_checkpoint(build_encoder(config, seed=0), checkpoint, config, init_seed=0)
        roi = roi_file(pick_units(world, args.unit_size, args.units), work / "roi.geojson")
        todo = [("clean", ())] + [c for c in cases(args.rate, args.timeout) if not args.only or args.only in c[0]]
        reference = None
        for n, (name, faults) in enumerate(todo):
            out = work / f"root{n}"
            row = {"case": name, **run_case(world, roi, out, checkpoint, args, faults)}
            files = store_files(out)
            reference = reference if reference is not None else files
            row["same_bytes"] = files == reference and bool(files)
            rows.append(row)
            print(f"{name}: {row['seconds']:.1f} s, {row['requests']:,} requests, {row['faults']:,} faults "
                  f"{row['by_kind']}, {row['failed']} failed, same bytes: {row['same_bytes']}", file=sys.stderr)
    table = markdown(rows, args)
    print(table)
    (out_dir / "bench_faults.md").write_text(table)
    (out_dir / "bench_faults.json").write_text(json.dumps(
        {"args": vars(args), "machine": platform.platform(), "cpus": os.cpu_count(), "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
