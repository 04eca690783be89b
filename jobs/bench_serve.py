"""Benchmark: ``tessera-ray serve`` under a concurrent range-reading client.

Starts the real command (``tessera-ray serve ROOT --port 0``, a subprocess)
on a published root (a random store built here, or ``--root``), then drives
it from one asyncio client with ``--concurrency`` connections issuing
``--requests`` HTTP requests: byte ranges of shard objects (the reads Zarr
clients make, 32 B to 64 KB, some suffix ranges), with a few HEADs and whole
small objects (``zarr.json``, manifests) mixed in. Every response is checked:
status 206/200 as the request asks, Content-Length, and the body against the
file on disk. The server's resident memory (psutil, the process and its
children) is sampled every ``--sample-every`` requests.

It reports requests per second (overall and per window), errors, and the
memory table: the goal is at least 500 requests/s with no errors and flat
memory over 100,000 requests.

    python jobs/bench_serve.py                        # 100,000 requests, ~5 min on 2 cores
    python jobs/bench_serve.py --requests 5000        # smoke run

Writes bench-results/bench_serve.json and bench-results/bench_serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_root(folder: Path) -> Path:
    from tessera_ray.grid import Unit
    from tessera_ray.store.testing import build_random_store

    units = [Unit(31, 4000 + r, 160 + c, 256) for r in range(2) for c in range(2)]
    build_random_store(str(folder), units, partial=False, depths=(16, 32))
    return folder


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, "-m", "tessera_ray.cli", "serve", str(root), "--port", "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "serving ROOT at http://127.0.0.1:PORT/ (Ctrl-C stops)"
    if " at " not in line:
        proc.kill()
        raise SystemExit(f"bench_serve: the server did not start: {line or proc.stderr.read()}")
    return proc, line.split(" at ", 1)[1].split()[0].rstrip("/")


def rss_mb(proc: subprocess.Popen) -> float:
    import psutil

    p = psutil.Process(proc.pid)
    return sum(q.memory_info().rss for q in (p, *p.children(recursive=True))) / 2**20


def plan_requests(root: Path, n: int, seed: int) -> list[tuple[str, str, str | None]]:
    """(method, path, Range header) for ``n`` requests: mostly ranges of shard objects."""
    rng = random.Random(seed)
    files = [p for p in root.rglob("*") if p.is_file()]
    shards = [p for p in files if p.stat().st_size > 65536]
    small = [p for p in files if p.stat().st_size <= 65536]
    plan = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.90:
            path = rng.choice(shards)
            size = path.stat().st_size
            length = rng.choice((32, 512, 4096, 16384, 65536))
            if rng.random() < 0.05:
                plan.append(("GET", path, f"bytes=-{length}"))  # a shard index at the end
            else:
                start = rng.randrange(0, size - length)
                plan.append(("GET", path, f"bytes={start}-{start + length - 1}"))
        elif roll < 0.95:
            plan.append(("HEAD", rng.choice(shards), None))
        else:
            plan.append(("GET", rng.choice(small), None))
    return [(m, str(p.relative_to(root)), r) for m, p, r in plan]


def expected_body(root: Path, rel: str, rng: str | None, cache: dict) -> bytes:
    data = cache.get(rel)
    if data is None:
        data = cache[rel] = (root / rel).read_bytes()
    if rng is None:
        return data
    spec = rng.split("=", 1)[1]
    if spec.startswith("-"):
        return data[-int(spec[1:]):]
    a, b = (int(x) for x in spec.split("-"))
    return data[a:b + 1]


async def drive(url: str, root: Path, plan, concurrency: int, sample_every: int, proc) -> dict:
    import aiohttp

    cache: dict[str, bytes] = {}
    errors: list[str] = []
    windows: list[dict] = []
    done = 0
    next_item = iter(range(len(plan)))
    t0 = time.perf_counter()
    window_start, window_done = t0, 0
    memory = [{"requests": 0, "rss_mb": rss_mb(proc)}]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, window_start, window_done
        for i in next_item:
            method, rel, rng = plan[i]
            headers = {"Range": rng} if rng else {}
            try:
                async with session.request(method, f"{url}/{rel}", headers=headers) as resp:
                    body = await resp.read()
                    want = expected_body(root, rel, rng, cache)
                    status = 206 if rng else 200
                    if resp.status != status:
                        errors.append(f"{method} {rel} {rng}: status {resp.status}")
                    elif method == "HEAD":
                        if int(resp.headers.get("Content-Length", -1)) != len(want):
                            errors.append(f"HEAD {rel}: Content-Length {resp.headers.get('Content-Length')}")
                    elif body != want:
                        errors.append(f"GET {rel} {rng}: body differs ({len(body)} bytes, {len(want)} expected)")
            except aiohttp.ClientError as exc:
                errors.append(f"{method} {rel} {rng}: {type(exc).__name__}: {exc}")
            done += 1
            if done % sample_every == 0:
                now = time.perf_counter()
                windows.append({"requests": done, "rps": (done - window_done) / (now - window_start)})
                window_start, window_done = now, done
                memory.append({"requests": done, "rss_mb": rss_mb(proc)})

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    return {"requests": done, "seconds": seconds, "rps": done / seconds, "errors": len(errors),
            "error_examples": errors[:10], "windows": windows, "memory": memory}


def markdown(report: dict) -> str:
    r = report["result"]
    mem = r["memory"]
    warm = mem[1]["rss_mb"] if len(mem) > 1 else mem[0]["rss_mb"]
    lines = [
        f"`tessera-ray serve` on loopback, {report['concurrency']} concurrent connections, "
        f"{r['requests']:,} requests (90% shard ranges of 32 B..64 KB, 5% HEAD, 5% whole small objects), "
        f"{platform.machine()}, {os.cpu_count()} cores, client and server on the same machine.",
        "",
        "| requests | seconds | requests/s | errors | slowest window req/s "
        "| server RSS after the first window | at the end | growth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['requests']:,} | {r['seconds']:.1f} | {r['rps']:.0f} | {r['errors']} | "
        f"{min(w['rps'] for w in r['windows']) if r['windows'] else r['rps']:.0f} | {warm:.1f} MB | "
        f"{mem[-1]['rss_mb']:.1f} MB | {mem[-1]['rss_mb'] - warm:+.1f} MB |",
        "",
        "| after requests | server RSS (MB) |", "|---:|---:|",
        *(f"| {m['requests']:,} | {m['rss_mb']:.1f} |" for m in mem),
        "", f"Command: `{report['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="a published root to serve (default: a random store built here)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sample-every", type=int, default=10_000, help="requests between memory samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(args.root) if args.root else build_root(Path(tmp) / "root")
        plan = plan_requests(root, args.requests, args.seed)
        proc, url = start_server(root)
        try:
            result = asyncio.run(drive(url, root, plan, args.concurrency,
                                       min(args.sample_every, max(1, args.requests // 5)), proc))
        finally:
            proc.terminate()
            proc.wait(10)
    report = {"command": " ".join(["python jobs/bench_serve.py", *(sys.argv[1:] if argv is None else argv)]),
              "concurrency": args.concurrency, "result": result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_serve.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (out / "bench_serve.md").write_text(table)
    print(table)
    if result["errors"]:
        print("errors, first ones:", *result["error_examples"], sep="\n  ", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
