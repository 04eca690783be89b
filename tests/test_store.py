"""The published store: Zarr layout read back by zarr itself, manifests, publication contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit
from tessera_ray.store import EmbeddingStore, StoreLayout, publish, read_manifest
from tessera_ray.store.layout import ZARR_DIR, shard_key
from tessera_ray.store.manifest import manifest_key
from tessera_ray.store.objects import open_objects
from tessera_ray.store.testing import build_random_store, random_block, write_random_units

UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256), Unit(31, 4001, 160, 256), Unit(32, 4000, 170, 256)]

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def open_zarr(root: Path):
    import zarr
    from zarr.storage import LocalStore

    return zarr.open_group(LocalStore(root / ZARR_DIR, read_only=True), mode="r", use_consolidated=True)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    blocks = build_random_store(str(root), UNITS, years=(2024,))
    return root, blocks


def expected_window(block, fill_emb=0, fill_scale=np.inf):
    """The whole unit as zarr should return it: the block, fill elsewhere."""
    size = block.unit.size
    emb = np.full((128, size, size), fill_emb, "int8")
    sc = np.full((size, size), fill_scale, "float32")
    r, c = block.offset
    h, w = block.scales.shape
    emb[:, r : r + h, c : c + w] = np.moveaxis(block.embeddings, -1, 0)
    sc[r : r + h, c : c + w] = block.scales
    return emb, sc


def test_zarr_reads_back_exactly_what_was_written(store_root):
    root, blocks = store_root
    g = open_zarr(root)
    for block in blocks:
        zone = g[f"utm{block.unit.zone:02d}"]
        rows, cols = block.unit.window.slices()
        emb_exp, sc_exp = expected_window(block)
        np.testing.assert_array_equal(zone["embeddings"][0, :, rows, cols], emb_exp)
        np.testing.assert_array_equal(zone["scales"][0, rows, cols], sc_exp)
    # the partly written unit keeps +inf (not processed) around its block, NaN inside it
    part = g["utm31"]["scales"][0, UNITS[1].window.slices()[0], UNITS[1].window.slices()[1]]
    assert np.isinf(part).any() and np.isnan(part).any() and np.isfinite(part).any()
    # a shard never written reads as fill: not processed
    assert np.isinf(g["utm31"]["scales"][0, 0:10, 0:10]).all()


def test_layout_matches_geotessera_conventions(store_root):
    root, _ = store_root
    g = open_zarr(root)
    assert g.attrs["geoemb:type"] == "pixel"
    assert g.attrs["geoemb:dimensions"] == 128
    assert g.attrs["geoemb:landmask"] is False  # every pixel of a unit is encoded, as v2 stores say
    assert g.attrs["geoemb:quantization"]["scale"]["nodata"] == "+inf"
    zone = g["utm31"]
    assert zone.attrs["proj:code"] == "EPSG:32631"
    assert zone.attrs["spatial:transform"] == [10.0, 0.0, 90400.0, 0.0, -10.0, 9420800.0]
    emb = zone["embeddings"]
    assert emb.shape == (1, 128, 1843200, 81920) and emb.dtype == np.int8
    assert emb.shards == (1, 128, 256, 256) and emb.chunks == (1, 128, 32, 32)
    assert emb.metadata.dimension_names == ("time", "band", "y", "x")
    assert zone["scales"].shape == (1, 1843200, 81920) and math.isinf(zone["scales"].fill_value)
    assert list(zone["time"][:]) == [2024]
    assert zone["x"][0] == 90405.0 and zone["y"][0] == 9420795.0
    assert zone["x"].chunks[0] * 8 <= 2**19  # coordinate chunks stay small
    coord_files = [p for p in (root / ZARR_DIR / "utm31" / "y" / "c").iterdir()]
    assert (
        len(coord_files) == math.ceil(1843200 / zone["y"].chunks[0])
        and max(p.stat().st_size for p in coord_files) < 16384
    )
    # pixel centres match the grid module at a written unit
    r, c = UNITS[0].window.row, UNITS[0].window.col
    x, y = UNITS[0].grid.pixel_to_xy(r, c)
    assert zone["x"][c] == x and zone["y"][r] == y
    # consolidated metadata lists every node, so HTTP readers need no listing
    doc = json.loads((root / ZARR_DIR / "zarr.json").read_text())
    listed = doc["consolidated_metadata"]["metadata"]
    assert {"utm31", "utm31/embeddings", "utm31/scales", "utm31/time", "utm32/x"} <= set(listed)


def test_each_unit_is_one_object_per_array(store_root):
    root, blocks = store_root
    for block in blocks:
        u = block.unit
        for array in ("embeddings", "scales"):
            assert (root / shard_key(u.zone, array, 0, u.row, u.col)).is_file()
    chunk_files = [
        p for p in (root / ZARR_DIR / "utm31" / "embeddings").rglob("*") if p.is_file() and p.name != "zarr.json"
    ]
    assert len(chunk_files) == 3  # three units of zone 31, one shard each


def test_manifest_is_geoparquet_with_covering_and_checksums(store_root):
    import geopandas as gpd
    import pyarrow.parquet as pq

    root, blocks = store_root
    path = root / manifest_key(2024)
    frame = gpd.read_parquet(path)
    assert sorted(frame.unit_id) == sorted(u.id for u in UNITS)
    assert frame.crs.to_epsg() == 4326
    meta = json.loads(pq.read_metadata(path).metadata[b"geo"])
    assert meta["version"] == "1.1.0"
    assert meta["columns"]["geometry"]["covering"]["bbox"]["xmin"] == ["bbox", "xmin"]
    row = frame.set_index("unit_id").loc[UNITS[1].id]
    block = blocks[1]
    assert row.valid_pixels == int(np.isfinite(block.scales).sum())
    assert row.nodata_pixels == int(np.isnan(block.scales).sum())
    assert row.unprocessed_pixels == 256 * 256 - block.scales.size
    assert (row.s2_scenes, row.s1_scenes) == (11, 21)
    assert row.geometry.contains(UNITS[1].polygon_lonlat().centroid)
    for obj in row.objects:
        data = (root / obj["key"]).read_bytes()
        import hashlib

        assert len(data) == obj["size"] and hashlib.sha256(data).hexdigest() == obj["sha256"]
    md = pq.read_metadata(path)
    assert md.row_group(0).column(0).compression == "ZSTD"


def test_manifest_readable_by_duckdb(store_root):
    import duckdb

    root, _ = store_root
    rows = duckdb.sql(
        f"select unit_id, bbox.xmin as xmin, valid_pixels from read_parquet('{root / manifest_key(2024)}') "
        "where zone = 31 order by unit_id"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(u.id for u in UNITS if u.zone == 31)
    assert all(-180 < r[1] < 180 and r[2] > 0 for r in rows)


def test_manifest_rows_are_hilbert_sorted(tmp_path):
    from tessera_ray.store.manifest import manifest_frame
    from tessera_ray.store.writer import PartRecord

    units = [Unit(31, r, c, 256) for r in range(4000, 4004) for c in range(160, 164)]
    recs = [PartRecord(2024, u.zone, u.id, u.row, u.col, u.size, 1, 0, 0) for u in units]
    frame = manifest_frame(recs)
    d = frame.geometry.hilbert_distance(total_bounds=(-180, -90, 180, 90)).to_numpy()
    assert (np.diff(d) >= 0).all() and len(set(frame.unit_id)) == 16


def test_adding_a_year_extends_time_without_rewriting_shards(tmp_path):
    root = tmp_path / "r"
    blocks = build_random_store(str(root), UNITS[:2], years=(2023,))
    shard = root / shard_key(31, "embeddings", 0, UNITS[0].row, UNITS[0].col)
    before = (shard.read_bytes(), shard.stat().st_mtime_ns)
    store = EmbeddingStore.open(str(root))
    later = write_random_units(store, UNITS[:1], 2025, seed=9)
    publish(str(root), 2025)
    assert (shard.read_bytes(), shard.stat().st_mtime_ns) == before
    g = open_zarr(root)
    assert list(g["utm31"]["time"][:]) == [2023, 2025]
    assert g["utm31"]["embeddings"].shape[0] == 2
    rows, cols = UNITS[0].window.slices()
    np.testing.assert_array_equal(g["utm31"]["scales"][0, rows, cols], blocks[0].scales)
    np.testing.assert_array_equal(g["utm31"]["scales"][1, rows, cols], later[0].scales)
    assert sorted(read_manifest(str(root), 2025).unit_id) == [UNITS[0].id]
    assert sorted(read_manifest(str(root), 2023).unit_id) == sorted(u.id for u in UNITS[:2])


def test_publish_again_is_idempotent(tmp_path):
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:2])
    first = read_manifest(str(root), 2024)
    root_doc = (root / ZARR_DIR / "zarr.json").read_bytes()
    result = publish(str(root), 2024)
    assert result.units == 2 and not result.rejected
    again = read_manifest(str(root), 2024)
    assert first.drop(columns="geometry").equals(again.drop(columns="geometry"))
    assert first.geometry.geom_equals(again.geometry).all()
    assert (root / ZARR_DIR / "zarr.json").read_bytes() == root_doc
    assert EmbeddingStore.open(str(root)).is_published(UNITS[0], 2024)
    assert not EmbeddingStore.open(str(root)).is_published(UNITS[3], 2024)


def test_default_upstream_layout(tmp_path):
    """4096-px shards of 32-px chunks; a small block in a sparse zone array (zstd: fill chunks left out)."""
    root = tmp_path / "big"
    store = EmbeddingStore.create_or_open(str(root), model="m", compression="zstd")
    unit = Unit(30, 300, 12)
    store.prepare(2024, {30})
    emb, scales = random_block(np.random.default_rng(1), 70, 90)
    store.write_unit(unit, 2024, emb, scales, offset=(1000, 2000))
    publish(str(root), 2024)
    g = open_zarr(root)
    arr = g["utm30"]["embeddings"]
    assert arr.shards == (1, 128, 4096, 4096) and arr.chunks == (1, 128, 32, 32)
    r0, c0 = unit.window.row + 1000, unit.window.col + 2000
    np.testing.assert_array_equal(arr[0, :, r0 : r0 + 70, c0 : c0 + 90], np.moveaxis(emb, -1, 0))
    np.testing.assert_array_equal(g["utm30"]["scales"][0, r0 - 5 : r0, c0 : c0 + 90], np.inf)
    # sparse: the shard holds only the touched chunks
    size = (root / shard_key(30, "embeddings", 0, 300, 12)).stat().st_size
    assert size < 4 * 4 * 128 * 32 * 32 * 1.1 + 16 * 128 * 128 + 4


def test_both_layouts_read_back_identically_and_fixed_offsets_hold(tmp_path):
    """zarr reads the same values from both layouts; in fixed-offset shards chunk n sits where the metadata says."""
    from tessera_ray.store.shards import chunk_tag

    roots = {c: tmp_path / c for c in ("zstd", "none")}
    blocks = {c: build_random_store(str(r), UNITS[:2], compression=c, seed=3) for c, r in roots.items()}
    assert StoreLayout().compression == "none"  # the default: fixed offsets
    g = {c: open_zarr(r) for c, r in roots.items()}
    for block in blocks["none"]:
        rows, cols = block.unit.window.slices()
        for name in ("embeddings", "scales"):
            sel = (0, slice(None), rows, cols) if name == "embeddings" else (0, rows, cols)
            np.testing.assert_array_equal(g["none"]["utm31"][name][sel], g["zstd"]["utm31"][name][sel])
    emb = g["none"]["utm31"]["embeddings"]
    assert (
        emb.attrs["tessera_ray:fixed_offsets"] is True
        and "tessera_ray:fixed_offsets" not in g["zstd"]["utm31"]["embeddings"].attrs
    )
    assert [type(c).__name__ for c in emb.metadata.codecs[0].codecs] == ["BytesCodec", "Crc32cCodec"]
    n_chunks, index_nbytes = 64, 64 * 16 + 4
    # a unit written over its top 200 rows (dense, stops after chunk row 6) and one with a small
    # block in its bottom-right corner (fill chunks would be most of the shard: written sparse)
    store = EmbeddingStore.open(str(roots["none"]))
    top, corner = Unit(31, 4002, 160, 256), Unit(31, 4002, 161, 256)
    store.write_unit(top, 2024, *random_block(np.random.default_rng(8), 200, 256))
    store.write_unit(corner, 2024, *random_block(np.random.default_rng(9), 50, 60), offset=(200, 190))
    for name, stride in (("embeddings", 8 + 128 * 32 * 32 + 4), ("scales", 8 + 32 * 32 * 4 + 4)):
        def shard(unit, name=name):
            data = (roots["none"] / shard_key(31, name, 0, unit.row, unit.col)).read_bytes()
            return data, np.frombuffer(data[: 16 * n_chunks], "<u8").reshape(-1, 2)

        # the whole unit: every chunk, fill too, tagged, in C order after the index
        data, index = shard(UNITS[0])
        assert len(data) == index_nbytes + n_chunks * stride
        for n in range(n_chunks):
            off = index_nbytes + n * stride
            assert data[off : off + 8] == chunk_tag(n) and tuple(index[n]) == (off + 8, stride - 8)
        # the top of a unit: dense up to its last chunk holding data, the index marks the rest empty
        data, index = shard(top)
        assert len(data) == index_nbytes + 56 * stride
        assert (index[56:, 0] == 2**64 - 1).all() and data[index_nbytes + 55 * stride :][:8] == chunk_tag(55)
        # a corner block: sparse, no tags, only the 2 x 3 chunks holding data
        data, index = shard(corner)
        assert len(data) == index_nbytes + 6 * (stride - 8) and (index[:, 0] != 2**64 - 1).sum() == 6
    publish(str(roots["none"]), 2024)
    g = open_zarr(roots["none"])["utm31"]
    np.testing.assert_array_equal(
        g["scales"][0, 4002 * 256 + 200 : 4002 * 256 + 250, 161 * 256 + 190 : 161 * 256 + 250],
        random_block(np.random.default_rng(9), 50, 60)[1],
    )


def test_layout_mismatch_and_unprepared_year_are_clear_errors(tmp_path):
    root = str(tmp_path / "r")
    store = EmbeddingStore.create_or_open(root, 256, 32)
    with pytest.raises(UserInputError, match="was created with layout"):
        EmbeddingStore.create_or_open(root, 512, 32)
    emb, scales = random_block(np.random.default_rng(0), 256, 256)
    with pytest.raises(UserInputError, match="year 2024 is not prepared"):
        store.write_unit(UNITS[0], 2024, emb, scales)
    with pytest.raises(UserInputError, match="not a tessera-ray store"):
        EmbeddingStore.open(str(tmp_path / "nothing"))


# --------------------------------------------------------------------------- crash safety


class Crash(Exception):
    pass


def crashing_puts(monkeypatch, objects_cls, after: int):
    """Make the ``after``-th write (0-based; ``put`` or ``put_if``) raise, as if the process died there."""
    calls = {"n": 0}

    def crashing(real):
        def write(self, key, data, *condition):
            if calls["n"] == after:
                calls["n"] += 1
                raise Crash(f"killed before writing {key}")
            calls["n"] += 1
            return real(self, key, data, *condition)
        return write

    monkeypatch.setattr(objects_cls, "put", crashing(objects_cls.put))
    monkeypatch.setattr(objects_cls, "put_if", crashing(objects_cls.put_if))
    return calls


def visible_state(root: Path):
    """What a reader sees: published unit ids, and zarr's values at each published unit."""
    frame = read_manifest(str(root), 2024)
    ids = sorted(frame.unit_id) if frame is not None else []
    g = open_zarr(root)
    values = {}
    for uid in ids:
        u = Unit.from_id(uid)
        rows, cols = u.window.slices()
        values[uid] = g[f"utm{u.zone:02d}"]["scales"][0, rows, cols]
    return ids, values


@pytest.fixture(scope="module")
def one_unit_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-unit")
    return root, build_random_store(str(root), UNITS[:1])


@pytest.mark.parametrize("crash_at", range(0, 4))
def test_killed_between_any_two_writes_leaves_a_valid_published_state(tmp_path, monkeypatch, crash_at, one_unit_store):
    import shutil

    from tessera_ray.store.objects import LocalObjects

    root = tmp_path / "r"
    shutil.copytree(one_unit_store[0], root)
    blocks = one_unit_store[1]
    ids_before, _ = visible_state(root)
    store = EmbeddingStore.open(str(root))
    emb, scales = random_block(np.random.default_rng(5), 256, 256)
    calls = crashing_puts(monkeypatch, LocalObjects, crash_at)
    # write_unit: 2 shards + 1 part record; publish: the manifest (metadata was committed by prepare)
    with pytest.raises(Crash):
        store.write_unit(UNITS[2], 2024, emb, scales)
        publish(str(root), 2024)
    assert calls["n"] == crash_at + 1
    monkeypatch.undo()
    ids, values = visible_state(root)
    assert ids in (ids_before, sorted([UNITS[0].id, UNITS[2].id]))
    np.testing.assert_array_equal(values[UNITS[0].id], blocks[0].scales)
    if UNITS[2].id in ids:
        np.testing.assert_array_equal(values[UNITS[2].id], scales)
    # the next run finishes the job: write again if the part is missing, publish
    if store.part(UNITS[2], 2024) is None:
        store.write_unit(UNITS[2], 2024, emb, scales)
    publish(str(root), 2024)
    ids, values = visible_state(root)
    assert ids == sorted([UNITS[0].id, UNITS[2].id])
    np.testing.assert_array_equal(values[UNITS[2].id], scales)


@pytest.mark.parametrize("moment", ["mid-shard", "before-part"])
def test_killed_writer_process_publishes_nothing_partial(tmp_path, moment):
    """SIGKILL a writer while a shard is half on disk, or after its shards but before its part record."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1])
    script = f"""
import os, time, numpy as np
from tessera_ray.store import EmbeddingStore
from tessera_ray.store import objects
from tessera_ray.grid import Unit
from tessera_ray.store.testing import random_block
moment = {moment!r}
real_put, real_fsync = objects.LocalObjects.put, os.fsync
def put(self, key, data):
    if moment == "before-part" and "_parts" in key:
        print("stop", flush=True); time.sleep(60)
    return real_put(self, key, data)
def fsync(fd):
    if moment == "mid-shard":
        print("stop", flush=True); time.sleep(60)
    return real_fsync(fd)
objects.LocalObjects.put = put
os.fsync = fsync
store = EmbeddingStore.open({str(root)!r})
emb, scales = random_block(np.random.default_rng(3), 256, 256)
store.write_unit(Unit(31, 4001, 160, 256), 2024, emb, scales)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "stop"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shard = root / shard_key(31, "embeddings", 0, 4001, 160)
    assert shard.exists() == (moment == "before-part")  # never a half object under the real key
    publish(str(root), 2024)
    assert sorted(read_manifest(str(root), 2024).unit_id) == [UNITS[0].id]
    ids, values = visible_state(root)
    assert ids == [UNITS[0].id]


def test_publish_rejects_a_part_whose_object_changed(tmp_path):
    """A new part whose object is not as recorded is not published; published rows are checked again on demand."""
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:2])

    def truncate(unit):
        victim = root / shard_key(unit.zone, "scales", 0, unit.row, unit.col)
        victim.write_bytes(victim.read_bytes()[:-10])

    truncate(UNITS[1])
    assert publish(str(root), 2024).rejected == ()  # the routine publish does not look at published units again
    result = publish(str(root), 2024, reverify=True)
    assert result.rejected == (UNITS[1].id,)
    assert sorted(read_manifest(str(root), 2024).unit_id) == [UNITS[0].id]
    write_random_units(EmbeddingStore.open(str(root)), [UNITS[2]], 2024, seed=4)
    truncate(UNITS[2])
    result = publish(str(root), 2024)
    # both parts are not in the manifest
    assert set(result.rejected) == {UNITS[1].id, UNITS[2].id} and result.added == ()
    assert sorted(read_manifest(str(root), 2024).unit_id) == [UNITS[0].id]


def test_local_put_is_atomic_and_verified(tmp_path):
    objects = open_objects(str(tmp_path))
    info = objects.put("a/b/c.bin", b"hello")
    assert info.size == 5 and len(info.sha256) == 64
    assert objects.get_range("a/b/c.bin", -3, 3) == b"llo"
    assert objects.list("a/") == ["a/b/c.bin"]
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_a_process_that_reads_a_manifest_exits_with_its_own_status(store_root):
    """Reading a manifest must not leave Arrow threads that abort the interpreter at exit (exit 134 after a right
    answer: with the threaded read, 7 of 40 such processes aborted)."""
    import subprocess
    import sys

    root, _ = store_root
    script = (
        "import sys\n"
        "from tessera_ray.store.manifest import published_unit_ids, read_manifest\n"
        "from tessera_ray.store.objects import open_objects\n"
        f"frame = read_manifest({str(root)!r}, 2024)\n"
        f"ids = published_unit_ids(open_objects({str(root)!r}), 2024)\n"
        "print(len(frame), len(ids))\n"
    )
    codes = []
    for _ in range(16):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == [str(len(UNITS))] * 2, done.stderr
        codes.append(done.returncode)
    assert codes == [0] * 16, [c for c in codes if c]
