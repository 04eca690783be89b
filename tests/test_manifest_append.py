"""Appending row groups to a manifest: every reader sees exactly the rows of a full rewrite.

The footer codec is checked against real manifests byte for byte; an appended
manifest is read by pyarrow, geopandas, DuckDB, our client (with its
row-group pruning) and the viewer's own hyparquet reader under Node.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tessera_ray import client as tc
from tessera_ray.client.manifests import _row_group_may_intersect
from tessera_ray.grid import Unit
from tessera_ray.store import EmbeddingStore, footer, publish, read_manifest
from tessera_ray.store import publication as pub
from tessera_ray.store.manifest import (
    append,
    appended_rows,
    manifest_bytes,
    manifest_key,
    parquet_table,
    records_table,
)
from tessera_ray.store.writer import PartRecord

YEAR = 2024
VIEWER = Path(__file__).resolve().parents[1] / "viewer"

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def records(units) -> list[PartRecord]:
    """Manifest rows of ``units`` (their objects stand-ins: these tests write manifests, not shards)."""
    out = []
    for u in units:
        i = u.zone * 10000 + u.row * 20 + u.col  # values a function of the unit, whichever batch it is in
        objects = ({"key": f"x/{u.id}", "size": 1 + i, "sha256": f"{i:064x}"},)
        out.append(PartRecord(YEAR, u.zone, u.id, u.row, u.col, u.size, 1000 + i, i, i % 3, {"s2": i % 7},
                              "m", "0" * 64, "test", "2026-01-01T00:00:00+00:00", objects))
    return out


def spread(n: int, start: int = 0) -> list[Unit]:
    """``n`` units of 4096 px over zones 30-33, rows spread north to south."""
    return [Unit(30 + i % 4, 100 + (i * 7) % 150, (i // 4) % 20, 4096) for i in range(start, start + n)]


BATCHES = [spread(300), spread(1, 300), spread(130, 301), spread(40, 431)]
"""A manifest of 300 units, then publishes of 1, 130 (two row groups) and 40 units."""


def appended_manifest() -> bytes:
    data = manifest_bytes(records(BATCHES[0]))
    for batch in BATCHES[1:]:
        data = append(data, records_table(records(batch)))[0]
    return data


def canonical(table: pa.Table) -> pa.Table:
    return table.sort_by("unit_id").replace_schema_metadata({})


# --------------------------------------------------------------------------- the footer codec


def test_the_footer_codec_round_trips_real_manifests_byte_for_byte():
    for data in (manifest_bytes([]), manifest_bytes(records(BATCHES[0])), appended_manifest()):
        foot = footer.split(data)
        body = data[foot.start:-8]
        assert footer.encode(footer.decode(body)) == body  # every struct decoded and encoded again
        footer._SEEN.clear()  # the row groups skipped as byte ranges, not found in the cache
        assert footer.footer_bytes(footer.split(data).fields) == data[foot.start:]


def test_a_truncated_manifest_is_one_clear_error():
    from tessera_ray.errors import DataError

    data = manifest_bytes(records(BATCHES[0]))
    with pytest.raises(DataError, match="not a Parquet file"):
        append(data[:-100], records_table(records(BATCHES[1])), "manifests/2024.parquet")


# --------------------------------------------------------------------------- readers


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Two roots with the same rows: one manifest appended to three times, one written whole."""
    base = tmp_path_factory.mktemp("append")
    every = [u for batch in BATCHES for u in batch]
    out = {}
    for name, data in (("appended", appended_manifest()), ("whole", manifest_bytes(records(every)))):
        root = base / name
        EmbeddingStore.create_or_open(str(root), 4096, 32, model="m").prepare(YEAR, {30, 31, 32, 33})
        (root / "manifests").mkdir(exist_ok=True)
        (root / manifest_key(YEAR)).write_bytes(data)
        out[name] = root
    return out


def test_an_appended_manifest_is_ordinary_parquet_with_small_hilbert_sorted_row_groups(roots):
    data = (roots["appended"] / manifest_key(YEAR)).read_bytes()
    meta = pq.read_metadata(pa.BufferReader(data))
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [128, 128, 44, 1, 128, 2, 40] and meta.num_rows == 471
    assert appended_rows(data) == 171
    whole = (roots["whole"] / manifest_key(YEAR)).read_bytes()
    assert appended_rows(whole) == 0
    # the batch of 130 is in Hilbert order among itself: as the full rewrite of those rows alone orders them
    table = parquet_table(data)
    alone = parquet_table(manifest_bytes(records(BATCHES[2])))
    assert table.column("unit_id").to_pylist()[301:431] == alone.column("unit_id").to_pylist()


def test_every_reader_reads_the_rows_of_a_full_rewrite(roots):
    import duckdb

    a, w = (roots[n] / manifest_key(YEAR) for n in ("appended", "whole"))
    assert canonical(pq.read_table(a)).equals(canonical(pq.read_table(w)))
    frames = [read_manifest(str(roots[n]), YEAR) for n in ("appended", "whole")]
    assert frames[0].crs == frames[1].crs
    np.testing.assert_array_equal(frames[0].total_bounds, frames[1].total_bounds)  # the geo bbox
    geo = [json.loads(pq.read_schema(p).metadata[b"geo"])["columns"]["geometry"]["bbox"] for p in (a, w)]
    assert geo[0] == geo[1]
    sql = "select unit_id, valid_pixels, st from (select *, bbox.xmin as st from read_parquet('{}')) order by unit_id"
    assert duckdb.sql(sql.format(a)).fetchall() == duckdb.sql(sql.format(w)).fetchall()


def test_the_client_prunes_appended_row_groups_and_reads_the_same_units(roots):
    readers = {n: tc.open_root(str(r)) for n, r in roots.items()}
    bbox = (-3.0, 10.0, 0.0, 20.0)  # zone 30, part of its rows: most row groups are skipped
    found = {n: sorted(r.units(YEAR, bbox=bbox).unit_id) for n, r in readers.items()}
    assert found["appended"] == found["whole"] and 0 < len(found["whole"]) < 471
    meta = pq.read_metadata(roots["appended"] / manifest_key(YEAR))
    kept = [g for g in range(meta.num_row_groups) if _row_group_may_intersect(meta.row_group(g), bbox)]
    assert len(kept) < meta.num_row_groups
    assert sorted(readers["appended"].units(YEAR).unit_id) == sorted(readers["whole"].units(YEAR).unit_id)


def test_the_viewer_reads_an_appended_manifest(roots, tmp_path):
    node = shutil.which("node")
    if node is None or not (VIEWER / "node_modules" / "hyparquet").is_dir():
        pytest.fail("the viewer's reader needs node and viewer/node_modules (scripts/setup dev)")
    script = tmp_path / "read.mjs"
    script.write_text(f"""
import {{ readFileSync }} from "node:fs";
import {{ readManifest }} from {json.dumps((VIEWER / "src" / "data" / "manifest.js").as_uri())};
const bytes = new Uint8Array(readFileSync(process.argv[2]));
const store = {{
  href: (k) => k,
  async getTail(k, n) {{ return {{ size: bytes.length, bytes: bytes.subarray(Math.max(0, bytes.length - n)) }}; }},
  async getRange(k, r) {{ return bytes.subarray(r.offset, r.offset + r.length); }},
}};
const rows = await readManifest(store, {YEAR});
console.log(JSON.stringify(rows.map((r) => [r.unit_id, r.valid_pixels, r.status])));
""")
    seen = {}
    for name, root in roots.items():
        run = subprocess.run([node, str(script), str(root / manifest_key(YEAR))], capture_output=True, text=True,
                             timeout=60, cwd=VIEWER)
        assert run.returncode == 0, run.stderr[-2000:]
        seen[name] = sorted(map(tuple, json.loads(run.stdout)))
    assert seen["appended"] == seen["whole"] and len(seen["whole"]) == 471


# --------------------------------------------------------------------------- compaction


def test_publishes_append_then_compact_past_a_quarter_and_at_the_end_of_a_job(tmp_path, monkeypatch):
    """Each publish appends its units; one that would leave too many rows out of order rewrites the file in
    the global order, and so does the end-of-job publish: then the bytes are those of one publish."""
    from test_publish import UNITS, new_store, write_units

    monkeypatch.setattr(pub, "COMPACT_MIN_ROWS", 1)
    root = tmp_path / "r"
    store = new_store(str(root))
    records_, _ = write_units(store, UNITS)
    manifest = root / manifest_key(YEAR)
    store.publish(YEAR, records_[:5])
    seen = []
    for i in range(5, 9):  # appended 1 (1 > max(1, 1.5)? no), 2 (2 > 1.75: compact), 1, 2 (> 2.25? no)
        store.publish(YEAR, [records_[i]])
        seen.append(appended_rows(manifest.read_bytes()))
    assert seen == [1, 0, 1, 2]
    assert len(read_manifest(str(root), YEAR)) == 9
    publish(str(root), YEAR)  # the end of a job
    assert manifest.read_bytes() == manifest_bytes(records_)


def test_a_unit_written_again_replaces_its_appended_row_once(tmp_path):
    """Publishing a unit already in the manifest: the same objects change nothing; new bytes under its keys
    replace its row (a full rewrite: an append cannot remove a row), and the unit is there once."""
    from test_publish import CREATED, UNITS, new_store, write_units

    from tessera_ray.store.testing import random_block

    root = tmp_path / "r"
    store = new_store(str(root))
    records_, _ = write_units(store, UNITS[:4])
    store.publish(YEAR, records_[:2])
    store.publish(YEAR, records_[2:])  # appended
    manifest = root / manifest_key(YEAR)
    before = manifest.read_bytes()
    assert appended_rows(before) == 2
    assert store.publish(YEAR, records_[2:3]).added == () and manifest.read_bytes() == before
    emb, scales = random_block(np.random.default_rng(99), 64, 64)
    again = store.write_unit(UNITS[2], YEAR, emb, scales, scenes={"s2": 3}, created=CREATED)
    assert store.publish(YEAR, [again]).added == (UNITS[2].id,)
    frame = read_manifest(str(root), YEAR)
    assert sorted(frame.unit_id) == sorted(r.unit_id for r in records_)
    row = frame[frame.unit_id == UNITS[2].id].iloc[0]
    assert sorted(o["sha256"] for o in row.objects) == sorted(o["sha256"] for o in again.objects)
    assert appended_rows(manifest.read_bytes()) == 0


def test_a_job_publishes_from_what_it_wrote_and_still_sees_another_publishers_write(tmp_path, monkeypatch):
    """In a job, a publish starts from the manifest its last publish wrote (one stat, not a read and decode of
    the whole file); a manifest another publisher replaced meanwhile is read afresh, and its units are kept;
    the job's last publish keeps nothing."""
    from test_publish import UNITS, new_store, write_units

    from tessera_ray.store.objects import LocalObjects

    root = tmp_path / "r"
    store = new_store(str(root))
    records_, _ = write_units(store, UNITS[:8])
    reads = []
    real = LocalObjects.get_versioned
    monkeypatch.setattr(LocalObjects, "get_versioned", lambda self, key: reads.append(key) or real(self, key))
    store.publish(YEAR, records_[:3])
    store.publish(YEAR, records_[3:4])
    store.publish(YEAR, records_[4:5])
    manifest = manifest_key(YEAR)
    assert reads.count(manifest) <= 1  # the first publish of the process may read it; the next ones do not
    # another publisher (another process: it shares nothing with this one) adds unit 5, same size or not
    other = LocalObjects(str(root))
    data, tag = real(other, manifest)
    other.put_if(manifest, append(data, records_table(records_[5:6]))[0], tag)
    reads.clear()
    store.publish(YEAR, records_[6:8])
    assert reads.count(manifest) == 1
    assert sorted(read_manifest(str(root), YEAR).unit_id) == sorted(r.unit_id for r in records_)
    # the end-of-job publish lets go of the manifest it kept (a planet year's is ~1 GB): the next one reads it
    store.publish(YEAR)
    reads.clear()
    store.publish(YEAR, records_[:1])
    assert reads.count(manifest) == 1
    store.publish(YEAR)  # an end-of-job publish with nothing to add or compact lets go of it too
    reads.clear()
    store.publish(YEAR, records_[:1])
    assert reads.count(manifest) == 1


def test_a_local_version_tag_changes_with_every_write_even_of_the_same_bytes(tmp_path):
    """The tag is the file's identity, not its content: a writer that read version 1 cannot overwrite a
    version 2 that another writer put there, even when version 2 has the same size and the same last bytes."""
    from tessera_ray.store.objects import LocalObjects, PreconditionFailed

    objects = LocalObjects(tmp_path)
    first = objects.put_if("m.parquet", b"a" * 100_000, None)
    _, read = objects.get_versioned("m.parquet")
    assert read == first == objects.version("m.parquet")
    second = objects.put_if("m.parquet", b"b" + b"a" * 99_999, first)  # same size, same 64 KB tail
    assert second != first
    with pytest.raises(PreconditionFailed):
        objects.put_if("m.parquet", b"c" * 100_000, first)
    assert objects.get("m.parquet")[:1] == b"b"
    assert objects.version("absent") is None
