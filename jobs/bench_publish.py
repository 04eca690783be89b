"""What a publish costs against the units already published (synthetic part records, local store).

For each size N of a year's manifest (default 1,000, 10,000 and 100,000 units
of 4096 px spread over 60 UTM zones), a local root is built with N published
units: their part records, stand-in shard objects (a few bytes each: the
publication protocol checks sizes, it does not read shards) and the manifest.
Then, in the same process:

* ``--repeats`` incremental publishes of a batch of ``--batch`` new units, as
  the embed job does during a run (:meth:`EmbeddingStore.publish` with the
  records): the new records' objects are checked and the batch is appended as
  row groups (the first of them reads and decodes the manifest; the next
  start from the state the previous one kept, as the driver's do);
* the same publish with the whole manifest rewritten (what every publish cost
  before appending: read, merge, sort, write), and the rewrite alone, which is
  what a compaction costs;
* the end-of-job publish (every part record not yet in the manifest: one
  listing, the new records read, the manifest compacted);
* the full publish (every part record read and its objects checked again,
  ``reverify=True``), up to ``--full-max`` units.

Prints a Markdown table and saves it with the JSON under bench-results/.

    python jobs/bench_publish.py [--sizes 1000 10000 100000] [--batch 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

YEAR = 2024
SIZE = 4096
CREATED = "2026-01-01T00:00:00+00:00"


def synthetic_units(n: int, start: int = 0):
    """``n`` distinct 4096-px units over zones 1-60, rows from the equator north (a land-like spread)."""
    from tessera_ray.grid import Unit

    units = []
    for i in range(start, start + n):
        zone, k = 1 + i % 60, i // 60
        units.append(Unit(zone, 100 + k // 20, k % 20, SIZE))
    return units


def write_records(root: Path, units) -> list:
    """Part records and stand-in objects for ``units``, written as plain files (no fsync: setup, not measured)."""
    from tessera_ray.store.layout import shard_key
    from tessera_ray.store.objects import sha256_hex
    from tessera_ray.store.writer import PartRecord, part_key

    records = []
    for u in units:
        objects = []
        for array in ("embeddings", "scales"):
            key = shard_key(u.zone, array, 0, u.row, u.col)
            data = f"{array} {u.id}".encode()
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            objects.append({"key": key, "size": len(data), "sha256": sha256_hex(data)})
        rec = PartRecord(YEAR, u.zone, u.id, u.row, u.col, SIZE, SIZE * SIZE - 1000, 1000, 0, {"s2": 40, "s1": 60},
                         "tessera-v2-medium", "0" * 64, "tessera-ray bench", CREATED, tuple(objects))
        path = root / part_key(YEAR, u.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rec.to_json())
        records.append(rec)
    return records


def build_root(root: Path, n: int):
    from tessera_ray.store import EmbeddingStore
    from tessera_ray.store.manifest import manifest_bytes, manifest_key

    store = EmbeddingStore.create_or_open(str(root), SIZE, 32, model="tessera-bench")
    store.prepare(YEAR, range(1, 61))
    records = write_records(root, synthetic_units(n))
    (root / "manifests").mkdir(exist_ok=True)
    (root / manifest_key(YEAR)).write_bytes(manifest_bytes(records))
    return store


def rewrite_seconds(root: Path) -> float:
    """Read, merge (nothing new), sort and write the manifest: the part of a publish that grows with N."""
    from tessera_ray.store.manifest import manifest_bytes, manifest_key, read_table

    data = (root / manifest_key(YEAR)).read_bytes()
    started = time.perf_counter()
    manifest_bytes(read_table(data))
    return time.perf_counter() - started


def measure(n: int, batch: int, repeats: int, full_max: int, workdir: Path) -> dict:
    import pyarrow.parquet as pq

    from tessera_ray.store import publish
    from tessera_ray.store.manifest import manifest_key

    root = workdir / f"n{n}"
    t0 = time.perf_counter()
    store = build_root(root, n)
    setup = time.perf_counter() - t0
    from tessera_ray.store.manifest import appended_rows
    from tessera_ray.store.publication import publish_records

    incremental, rewrite, rewriting, written = [], [], [], []
    start = n
    for r in range(repeats):
        new = write_records(root, synthetic_units(batch, start))
        start += batch
        result = store.publish(YEAR, new)
        assert len(result.added) == batch and not result.rejected, result
        data = (root / manifest_key(YEAR)).read_bytes()
        assert appended_rows(data) == (r + 1) * batch, "the publish did not append"
        incremental.append(result.seconds)
        written.append(len(data))
    for _ in range(repeats):  # the same publish, rewriting the manifest whole (before)
        new = write_records(root, synthetic_units(batch, start))
        start += batch
        result = publish_records(store.objects, YEAR, new, compact=True)
        assert len(result.added) == batch, result
        rewriting.append(result.seconds)
        rewrite.append(rewrite_seconds(root))
    write_records(root, synthetic_units(batch, start))  # left by a "killed job": found by listing
    started = time.perf_counter()
    end = publish(str(root), YEAR)
    end_seconds = time.perf_counter() - started
    assert len(end.added) == batch, end
    full = None
    if n <= full_max:
        started = time.perf_counter()
        assert publish(str(root), YEAR, reverify=True).units == end.units
        full = time.perf_counter() - started
    data = (root / manifest_key(YEAR)).read_bytes()
    meta = pq.read_metadata(io.BytesIO(data))
    return {
        "published": n, "batch": batch, "setup_s": round(setup, 1),
        "incremental_s": round(statistics.median(incremental[1:] or incremental), 3),
        "incremental_all_s": [round(x, 3) for x in incremental],
        "append_bytes_written": written[-1],
        "rewriting_publish_s": round(statistics.median(rewriting), 3),
        "rewrite_s": round(statistics.median(rewrite), 3),
        "end_of_job_s": round(end_seconds, 3), "full_s": None if full is None else round(full, 3),
        "manifest_mb": round(len(data) / 1e6, 2), "footer_kb": round(meta.serialized_size / 1e3, 1),
        "row_groups": meta.num_row_groups, "rows": meta.num_rows,
    }


def table(rows: list[dict], batch: int) -> str:
    lines = [
        f"| units published | manifest | footer | publish {batch} new units: append (first, then from the kept state) "
        f"| the same, rewriting the manifest (before) | compaction (rewrite alone) "
        f"| end-of-job publish (listing, compaction) | full re-check |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        full = "-" if r["full_s"] is None else f"{r['full_s']:.2f} s"
        first = r["incremental_all_s"][0]
        lines.append(f"| {r['published']:,} | {r['manifest_mb']:.1f} MB | {r['footer_kb']:,.0f} kB "
                     f"| {first:.3f} s, then {r['incremental_s']:.3f} s | {r['rewriting_publish_s']:.2f} s "
                     f"| {r['rewrite_s']:.2f} s | {r['end_of_job_s']:.2f} s | {full} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--batch", type=int, default=100, help="new units per publish (the job's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-max", type=int, default=100000, help="largest N to run the full re-check at")
    parser.add_argument("--workdir", default=None, help="where to build the roots (default: a temporary folder)")
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_publish.json"))
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore", message="Consolidated metadata")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            rows.append(measure(n, args.batch, args.repeats, args.full_max, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args.batch)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"host": platform.node(), "rows": rows, "args": vars(args)}, indent=1))
    out.with_suffix(".md").write_text(f"`python jobs/bench_publish.py {' '.join(sys.argv[1:])}`\n\n{text}\n")


if __name__ == "__main__":
    main()
