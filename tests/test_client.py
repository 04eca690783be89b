"""The range-read client against zarr's own reading of the same store, over HTTP, S3 and a path."""

from __future__ import annotations

import numpy as np
import pytest

from tessera_ray import client as tc
from tessera_ray.errors import DataError, UserInputError
from tessera_ray.grid import Unit, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.store.layout import ZARR_DIR, shard_key
from tessera_ray.store.testing import build_random_store, reversed_shard

UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256), Unit(32, 4000, 170, 256)]

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


@pytest.fixture(scope="module", params=["none", "zstd"], ids=["fixed-offsets", "zstd"])
def built(request, tmp_path_factory):
    """The same random units in both layouts: raw fixed-offset shards and Blosc-zstd shards."""
    root = tmp_path_factory.mktemp(f"client-store-{request.param}")
    blocks = build_random_store(str(root), UNITS, years=(2024,), compression=request.param)
    return root, blocks


@pytest.fixture(scope="module")
def served(built):
    root, blocks = built
    with StaticServer(root) as server:
        yield server, blocks


def zarr_pixels(root, zone, rows, cols, t=0):
    import zarr
    from zarr.storage import LocalStore

    g = zarr.open_group(LocalStore(root / ZARR_DIR, read_only=True), mode="r", use_consolidated=True)
    z = g[f"utm{zone:02d}"]
    s = z["scales"].vindex[np.full(len(rows), t), rows, cols]
    q = np.stack([z["embeddings"][t, :, r, c] for r, c in zip(rows, cols)]) if len(rows) else np.zeros((0, 128), "int8")
    return q, s


def lonlat_of(zone, rows, cols):
    return zone_grid(zone).pixel_to_lonlat(np.asarray(rows), np.asarray(cols))


def test_points_over_http_equal_zarr(served, built):
    server, blocks = served
    root = tc.open_root(server.url)
    rng = np.random.default_rng(7)
    u0, u1 = UNITS[0].window, UNITS[1].window
    rows = rng.integers(u0.row, u0.row + 256, 300)
    cols = rng.integers(u0.col, u1.col + 256, 300)  # across two shards, incl. +inf and NaN areas
    lon, lat = lonlat_of(31, rows, cols)
    values, status = root.points(lon, lat, 2024)
    q, s = zarr_pixels(built[0], 31, rows, cols)
    expected = q.astype("float32") * np.where(np.isfinite(s), s, np.nan)[:, None]
    np.testing.assert_array_equal(values, expected)
    assert set(status) == {tc.VALID, tc.NODATA, tc.NOT_PROCESSED}
    assert (status == tc.VALID).sum() == np.isfinite(s).sum()


def test_pixel_statuses(served):
    server, blocks = served
    root = tc.open_root(server.url)
    b = blocks[0]
    r, c = b.unit.window.row, b.unit.window.col
    # valid: bottom-right pixel of a fully written unit
    lon, lat = lonlat_of(31, [r + 255], [c + 255])
    px = root.pixel(lon[0], lat[0], 2024)
    assert px.status == tc.VALID and (px.row, px.col) == (r + 255, c + 255)
    np.testing.assert_array_equal(px.values, b.embeddings[255, 255].astype("float32") * b.scales[255, 255])
    # no embedding: the NaN corner
    lon, lat = lonlat_of(31, [r], [c])
    px = root.pixel(lon[0], lat[0], 2024)
    assert px.status == tc.NODATA and np.isnan(px.values).all()
    # not processed: a shard never written, and a zone not in the store
    lon, lat = lonlat_of(31, [r - 300], [c])
    assert root.pixel(lon[0], lat[0], 2024).status == tc.NOT_PROCESSED
    assert root.pixel(-100.0, 40.0, 2024).status == tc.NOT_PROCESSED


def test_request_budget(served):
    """One index read per shard and array (none with fixed offsets), one read per touched chunk, cached afterwards."""
    server, blocks = served
    root = tc.open_root(server.url)
    fixed = root.arrays[(31, "embeddings")].fixed_offsets
    r, c = UNITS[0].window.row, UNITS[0].window.col
    lon, lat = lonlat_of(31, [r + 100], [c + 100])
    server.stats.reset()
    root.pixel(lon[0], lat[0], 2024)
    cold = server.stats.snapshot()
    # embeddings + scales: the chunk at its computed offset; else the index entries, then the chunk
    assert cold["requests"] == (2 if fixed else 4)
    assert root.stats["index_requests"] == (0 if fixed else 2)
    # index entries are read alone (16 bytes each); the rest is one int8 and one float32 chunk (+ CRC32C)
    assert cold["bytes_sent"] < 128 * 32 * 32 + 32 * 32 * 4 + 1000
    server.stats.reset()
    root.pixel(lon[0], lat[0], 2024)
    assert server.stats.snapshot()["requests"] == 0  # chunk cache
    # 200 points in one shard: 2 index reads (already cached: 0) + 2 per touched chunk at most
    rng = np.random.default_rng(1)
    fresh = tc.open_root(server.url)
    rows = rng.integers(r, r + 256, 200)
    cols = rng.integers(c, c + 256, 200)
    touched = len({(a // 32, b // 32) for a, b in zip(rows, cols)})
    lon, lat = lonlat_of(31, rows, cols)
    server.stats.reset()
    fresh.points(lon, lat, 2024)
    snap = server.stats.snapshot()
    assert fresh.stats["index_requests"] == (0 if fixed else 2)  # one per array's shard, none with fixed offsets
    assert fresh.stats["chunks_requests"] <= 2 * touched
    assert snap["requests"] == fresh.stats["index_requests"] + fresh.stats["chunks_requests"]
    assert set(snap["paths"]) == {
        f"/{shard_key(31, 'embeddings', 0, UNITS[0].row, UNITS[0].col)}",
        f"/{shard_key(31, 'scales', 0, UNITS[0].row, UNITS[0].col)}",
    }


def test_region_equals_zarr_window_and_mosaic(served, built):
    server, blocks = served
    root = tc.open_root(server.url)
    u = UNITS[0]
    poly = u.polygon_lonlat()
    cx, cy = poly.centroid.x, poly.centroid.y
    bbox = (cx - 0.005, cy - 0.005, cx + 0.005, cy + 0.005)  # about 1 km
    (part,) = root.region(bbox, 2024)
    w = part.window
    import zarr
    from zarr.storage import LocalStore

    g = zarr.open_group(LocalStore(built[0] / ZARR_DIR, read_only=True), mode="r", use_consolidated=True)
    s = g["utm31"]["scales"][0, w.row : w.row + w.height, w.col : w.col + w.width]
    q = g["utm31"]["embeddings"][0, :, w.row : w.row + w.height, w.col : w.col + w.width]
    np.testing.assert_array_equal(part.scales, s)
    exp = np.moveaxis(q, 0, -1).astype("float32") * np.where(np.isfinite(s), s, np.nan)[..., None]
    np.testing.assert_array_equal(part.embeddings, exp)
    assert part.crs == "EPSG:32631" and part.transform.a == 10.0
    array, transform, crs = root.mosaic(bbox, 2024)
    assert crs == "EPSG:32631" and array.shape == part.embeddings.shape
    merc, _, crs = root.mosaic(bbox, 2024, crs="EPSG:3857", resolution=10.0)
    assert crs == "EPSG:3857" and merc.shape[2] == 128
    got = merc[~np.isnan(merc[..., 0])]
    src = part.embeddings[~np.isnan(part.embeddings[..., 0])]
    assert len(got) > 0.5 * merc.shape[0] * merc.shape[1]
    assert {tuple(v[:4]) for v in got[:50]} <= {tuple(v[:4]) for v in src}  # nearest neighbour, no blending
    geo, transform, crs = root.mosaic(bbox, 2024, crs="EPSG:4326")  # pixel size kept, in degrees
    assert crs == "EPSG:4326" and 0.5 < geo.shape[0] / part.embeddings.shape[0] < 2
    assert 0.5 < geo.shape[1] / part.embeddings.shape[1] < 2


def test_region_across_zones(served):
    server, _ = served
    root = tc.open_root(server.url)
    parts = root.region((5.99, -7.4, 6.01, -7.39), 2024)
    assert [p.zone for p in parts] == [31, 32]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_corrupt_shard_is_an_error_naming_it(tmp_path, compression):
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1], partial=False, compression=compression)
    u = UNITS[0]
    key = shard_key(31, "embeddings", 0, u.row, u.col)
    path = root / key
    clean = path.read_bytes()
    index_bytes = 8 * 8 * 16 + 4  # at the start of the shard: 64 entries + CRC32C
    rows, cols = np.meshgrid(
        np.arange(u.window.row, u.window.row + 256, 32), np.arange(u.window.col, u.window.col + 256, 32)
    )
    every_chunk = lonlat_of(31, rows.ravel() + 20, cols.ravel() + 20)

    def corrupt(offset):
        data = bytearray(clean)
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))

    # a flipped byte in chunk data: that chunk's CRC32C catches it
    corrupt(index_bytes + 100)
    with pytest.raises(DataError, match=f"{key} chunk .* corrupt"):
        tc.open_root(str(root)).points(*every_chunk, 2024)
    lon, lat = lonlat_of(31, [u.window.row + 10], [u.window.col + 5 * 32 + 10])
    corrupt(16 * 5 + 3)
    if compression == "none":
        # fixed offsets never read the index: every chunk still passes its own CRC32C, values are right
        path.write_bytes(clean)
        expected = tc.open_root(str(root)).points(*every_chunk, 2024)[0]
        corrupt(16 * 5 + 3)
        reader = tc.open_root(str(root))
        np.testing.assert_array_equal(reader.points(*every_chunk, 2024)[0], expected)
        assert reader.stats["index_requests"] == 0
    else:
        # a flipped byte in the index, read whole for a batch: the index CRC32C catches it
        with pytest.raises(DataError, match=f"{key} index failed its CRC32C"):
            tc.open_root(str(root)).points(*every_chunk, 2024)
        # the same entry read alone (no index CRC): the chunk it points to fails instead
        with pytest.raises(DataError, match=key):
            tc.open_root(str(root)).pixel(lon[0], lat[0], 2024)
    # a truncated object, on disk and over HTTP
    path.write_bytes(clean[: len(clean) // 2])
    with pytest.raises(DataError, match=key):
        tc.open_root(str(root)).points(*every_chunk, 2024)
    with StaticServer(root) as server, pytest.raises(DataError, match=f"{key}.*(truncated|corrupt)"):
        tc.open_root(server.url).points(*every_chunk, 2024)
    path.write_bytes(clean)
    assert tc.open_root(str(root)).pixel(lon[0], lat[0], 2024).status == tc.VALID


def expected_points(root, rows, cols):
    q, s = zarr_pixels(root, 31, rows, cols)  # zarr goes through the index
    return q.astype("float32") * np.where(np.isfinite(s), s, np.nan)[:, None]


def test_fixed_offsets_fall_back_to_the_index_when_chunks_are_elsewhere(tmp_path):
    """Chunks that are not where fixed offsets put them (CRC-valid, but other chunks) are read through the index."""
    import zarr
    from zarr.storage import LocalStore

    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1], partial=False, compression="none")
    u = UNITS[0]
    rng = np.random.default_rng(5)
    rows, cols = rng.integers(u.window.row, u.window.row + 256, 60), rng.integers(u.window.col, u.window.col + 256, 60)
    lon, lat = lonlat_of(31, rows, cols)
    expected = tc.open_root(str(root)).points(lon, lat, 2024)[0]
    # our own chunks, tagged, in reverse order: every chunk passes its CRC32C, none its tag
    path = root / shard_key(31, "embeddings", 0, u.row, u.col)
    arr = tc.open_root(str(root)).arrays[(31, "embeddings")]
    path.write_bytes(reversed_shard(path.read_bytes(), arr.n_chunks, arr.fixed_stride))
    np.testing.assert_array_equal(expected_points(root, rows, cols), expected)
    with StaticServer(root) as server:
        reader = tc.open_root(server.url)
        np.testing.assert_array_equal(reader.points(lon, lat, 2024)[0], expected)
    assert reader.stats["fixed_offset_fallbacks"] > 0 and reader.stats["index_requests"] == 1  # embeddings only
    # zarr-python itself rewriting the unit (Morton order, no tags; same codecs): new values, read right
    z = zarr.open_group(LocalStore(root / ZARR_DIR), mode="r+", use_consolidated=False)["utm31"]
    r0, c0 = u.window.row, u.window.col
    emb = z["embeddings"]
    emb[0, :, r0 : r0 + 256, c0 : c0 + 256] = np.asarray(emb[0, :, r0 : r0 + 256, c0 : c0 + 256]) // 2
    halved = expected_points(root, rows, cols)
    assert not np.array_equal(halved[np.isfinite(halved)], expected[np.isfinite(expected)])
    reader = tc.open_root(str(root))
    np.testing.assert_array_equal(reader.points(lon, lat, 2024)[0], halved)
    assert reader.stats["fixed_offset_fallbacks"] > 0


def test_bad_inputs_are_clear_errors(served, tmp_path):
    server, _ = served
    with pytest.raises(UserInputError, match="not a tessera-ray root"):
        tc.open_root(server.url + "/manifests")
    with pytest.raises(UserInputError, match="not a tessera-ray root"):
        tc.open_root(str(tmp_path))
    with pytest.raises(UserInputError, match="give the folder that holds tessera.zarr"):
        tc.open_root(server.url + "/tessera.zarr")
    root = tc.open_root(server.url)
    with pytest.raises(UserInputError, match=r"year 1999 is not in .*\[2024\]"):
        root.pixel(3.0, -7.4, 1999)
    with pytest.raises(UserInputError, match="outside every zone"):
        root.pixel(3.0, 89.0, 2024)
    values, status = root.points([3.0, 3.0], [89.0, float("nan")], 2024)
    assert list(status) == [tc.OUTSIDE, tc.OUTSIDE] and np.isnan(values).all()


def test_index_at_the_end_of_shards_reads_the_same(tmp_path, built):
    """zarr's default layout (index after the chunks) goes through the suffix-range path."""
    root = tmp_path / "end"
    build_random_store(str(root), UNITS[:2], index_location="end")
    rng = np.random.default_rng(4)
    w = UNITS[0].window
    rows, cols = rng.integers(w.row, w.row + 256, 200), rng.integers(w.col, w.col + 512, 200)
    lon, lat = lonlat_of(31, rows, cols)
    a = tc.open_root(str(root)).points(lon, lat, 2024)[0]
    q, s = zarr_pixels(root, 31, rows, cols)
    np.testing.assert_array_equal(a, q.astype("float32") * np.where(np.isfinite(s), s, np.nan)[:, None])
    np.testing.assert_array_equal(a, tc.open_root(str(built[0])).points(lon, lat, 2024)[0])


def test_local_and_http_reads_agree(served, built):
    server, _ = served
    lon, lat = lonlat_of(31, np.arange(1024000, 1024256, 7), np.arange(40960, 41216, 7))
    a = tc.open_root(server.url).points(lon, lat, 2024)[0]
    b = tc.open_root(str(built[0])).points(lon, lat, 2024)[0]
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- S3


@pytest.fixture
def s3_root(s3_server, monkeypatch):
    """A fresh public-read bucket on the session's moto server; credentials and endpoint in the environment."""
    import uuid

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"store-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket, public_read=True)
    return f"s3://{bucket}/run1"


@pytest.mark.slow
def test_store_on_s3_written_verified_and_read(s3_root, monkeypatch):
    from tessera_ray.store import read_manifest
    from tessera_ray.store.objects import open_objects

    blocks = build_random_store(s3_root, UNITS[:1])
    frame = read_manifest(s3_root, 2024)
    assert list(frame.unit_id) == [UNITS[0].id]
    objects = open_objects(s3_root)
    for obj in frame.iloc[0].objects:
        assert objects.size(obj["key"]) == obj["size"]
    r, c = UNITS[0].window.row, UNITS[0].window.col
    lon, lat = lonlat_of(31, [r + 40, r + 250], [c + 3, c + 200])
    values, status = tc.open_root(s3_root).points(lon, lat, 2024)
    b = blocks[0]
    np.testing.assert_array_equal(values[1], b.embeddings[250, 200].astype("float32") * b.scales[250, 200])
    assert list(status) == [tc.VALID, tc.VALID]
    # a unit processed over its top 200 rows: its fixed-offset shards stop there, and a pixel
    # below (S3 answers InvalidRange) is "not processed" through the index, not an error
    from tessera_ray.store import EmbeddingStore, publish
    from tessera_ray.store.testing import random_block

    top = UNITS[1]
    EmbeddingStore.open(s3_root).write_unit(top, 2024, *random_block(np.random.default_rng(2), 200, 256))
    publish(s3_root, 2024)
    reader = tc.open_root(s3_root)
    below = lonlat_of(31, [top.window.row + 250], [top.window.col + 250])
    assert reader.pixel(below[0][0], below[1][0], 2024).status == tc.NOT_PROCESSED
    assert reader.stats["fixed_offset_fallbacks"] == 2 and reader.stats["index_requests"] == 2
    # a reader without any credentials goes anonymous (a public bucket) instead of failing
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    np.testing.assert_array_equal(tc.open_root(s3_root).points(lon, lat, 2024)[0], values)


# --------------------------------------------------------------------------- manifests over HTTP


@pytest.fixture(scope="module")
def big_manifest(tmp_path_factory, built):
    """A year with 960 published units (records only) next to the real store's metadata."""
    import shutil

    from tessera_ray.store.manifest import manifest_bytes, manifest_key
    from tessera_ray.store.writer import PartRecord

    root = tmp_path_factory.mktemp("manifest")
    shutil.copytree(built[0] / ZARR_DIR, root / ZARR_DIR)
    units = [Unit(31, r, c, 256) for r in range(3990, 4020) for c in range(150, 182)]
    recs = [PartRecord(2024, u.zone, u.id, u.row, u.col, u.size, 100, 0, 0) for u in units]
    (root / "manifests").mkdir()
    (root / manifest_key(2024)).write_bytes(manifest_bytes(recs))
    with StaticServer(root) as server:
        yield server, root / manifest_key(2024), units


def test_manifest_bbox_query_reads_only_needed_row_groups(big_manifest):
    import geopandas as gpd
    import pyarrow.parquet as pq
    from shapely.geometry import box

    server, path, units = big_manifest
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    root = tc.open_root(server.url)
    poly = units[5 * 32 + 7].polygon_lonlat()
    bbox = tuple(poly.centroid.buffer(0.002).bounds)
    server.stats.reset()
    got = root.units(2024, bbox)
    snap = server.stats.snapshot()
    whole = gpd.read_parquet(path)
    expected = sorted(whole[whole.envelope.intersects(box(*bbox))].unit_id)
    assert sorted(got.unit_id) == expected and units[5 * 32 + 7].id in expected
    assert snap["bytes_sent"] < 0.5 * path.stat().st_size
    assert snap["requests"] <= 2 + 2 * 2  # HEAD + tail with footer, then at most two row groups' ranges
    assert len(root.units(2024)) == 960


def test_a_manifest_cut_short_while_read_is_bad_data_not_a_parquet_error(built):
    """The client's manifest file is store/urls.py's RangedReader: a short range read names the object."""
    reader = tc.open_root(str(built[0]))
    real = reader.objects.get_range

    def cut(key, start, length):  # the object shrank between its HEAD and the read (a replaced or cut object)
        data = real(key, start, length)
        return data[:-1] if key.startswith("manifests/") else data

    reader.objects.get_range = cut
    truncated = r"manifests/2024\.parquet: asked for \d+ bytes .*\(truncated or changed while read\)"
    with pytest.raises(DataError, match=truncated):
        reader.units(2024)



def test_s3_put_is_verified_by_reading_back(s3_root, monkeypatch):
    """moto neither checks nor returns ChecksumSHA256, so the put reads the object back."""
    from tessera_ray.store.objects import S3Objects, open_objects

    objects = open_objects(s3_root)
    assert objects.put("x/ok.bin", b"payload").size == 7
    monkeypatch.setattr(S3Objects, "_get", lambda self, key, **kw: b"paylo4d")
    with pytest.raises(DataError, match="does not read back as written"):
        objects.put("x/bad.bin", b"payload")


def test_too_large_region_is_refused_before_reading(served):
    server, _ = served
    root = tc.open_root(server.url)
    with pytest.raises(UserInputError, match="read it in parts"):
        root.region((2.0, -8.0, 4.0, -6.0), 2024)
    assert root.stats["chunks_requests"] == 0


def test_store_pickles_for_ray_tasks(s3_root):
    import pickle

    from tessera_ray.store import EmbeddingStore
    from tessera_ray.store.testing import random_block

    store = EmbeddingStore.create_or_open(s3_root, 256, 32)
    store.prepare(2024, {31})
    assert store.objects.client is not None  # a live client must not stop pickling
    again = pickle.loads(pickle.dumps(store))
    emb, scales = random_block(np.random.default_rng(0), 256, 256)
    rec = again.write_unit(UNITS[0], 2024, emb, scales)
    assert [o["key"] for o in rec.objects] == sorted(o["key"] for o in rec.objects) and len(rec.objects) == 2
    assert pickle.loads(pickle.dumps(tc.open_root(s3_root).objects)).url == s3_root


def test_mosaic_across_a_utm_seam_takes_both_zones(tmp_path):
    """A bbox across 6 E: each side from its own zone, one grid in the requested CRS, no gap at the seam."""
    root = tmp_path / "seam"
    blocks = build_random_store(str(root), [Unit(31, 3999, 289, 256), Unit(32, 3999, 30, 256)], partial=False)
    reader = tc.open_root(str(root))
    bbox = (5.99, -7.404, 6.01, -7.396)
    parts = reader.region(bbox, 2024)
    assert [p.zone for p in parts] == [31, 32]
    array, transform, crs = reader.mosaic(bbox, 2024, crs="EPSG:32632")
    assert crs == "EPSG:32632"
    from rasterio.transform import xy

    rows, cols = np.nonzero(~np.isnan(array[..., 0]))
    xs, _ = xy(transform, rows, cols)
    from tessera_ray.grid import transform_points

    lons, _ = transform_points(np.asarray(xs), np.zeros(len(xs)) - 818000, "EPSG:32632", "EPSG:4326")
    assert lons.min() < 5.995 and lons.max() > 6.005  # data on both sides of the seam
    # the zone-32 side is zone 32's pixels as stored (same CRS, same grid: no resampling)
    p32 = parts[1]
    dc = round((p32.transform.c - transform.c) / 10)
    dr = round((transform.f - p32.transform.f) / 10)
    h, w = p32.embeddings.shape[:2]
    window = array[dr : dr + h, dc : dc + w]
    stored = ~np.isnan(p32.embeddings[..., 0])
    np.testing.assert_array_equal(window[stored], p32.embeddings[stored])
    assert len(blocks) == 2


@pytest.mark.parametrize("lost", ["embeddings", "scales", "both"])
def test_a_published_shard_that_went_missing_fails_loudly(tmp_path, capsys, lost):
    from cli_helpers import run_cli

    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:2], partial=False, compression="none")
    u = UNITS[0]
    for name in (("embeddings", "scales") if lost == "both" else (lost,)):
        (root / shard_key(31, name, 0, u.row, u.col)).unlink()
    rows = np.array([u.window.row + 5, UNITS[1].window.row + 5])
    cols = np.array([u.window.col + 5, UNITS[1].window.col + 5])
    lon, lat = lonlat_of(31, rows, cols)
    missing = shard_key(31, "scales" if lost == "scales" else "embeddings", 0, u.row, u.col)
    with StaticServer(root) as server:
        for url in (str(root), server.url):
            with pytest.raises(DataError, match="missing, but the manifest of 2024 says it was published"):
                tc.open_root(url).points(lon, lat, 2024)
            # the other unit still reads
            assert tc.open_root(url).points(lon[1:], lat[1:], 2024)[0].shape == (1, 128)
        points = tmp_path / "p.csv"
        points.write_text("lon,lat\n" + "\n".join(f"{x},{y}" for x, y in zip(lon, lat)) + "\n")
        out = tmp_path / "s.parquet"
        code, _, err = run_cli(["sample", "--root", server.url, "--points", str(points), "--year", "2024",
                                "--out", str(out)], capsys)
        assert code == 4 and missing.split("/")[-1] in err and len(err.strip().splitlines()) == 1
        assert not out.exists()
        w, s = lonlat_of(31, np.array([u.window.row + 20]), np.array([u.window.col + 2]))
        e, n = lonlat_of(31, np.array([u.window.row + 2]), np.array([u.window.col + 20]))
        tif = tmp_path / "x.tif"
        code, _, err = run_cli(["export", "--root", str(root), "--bbox", f"{w[0]},{s[0]},{e[0]},{n[0]}",
                                "--year", "2024", "--out", str(tif)], capsys)
        assert code == 4 and "says it was published" in err and not tif.exists()


@pytest.mark.parametrize("crs", [None, "EPSG:32632", "EPSG:3857"], ids=["own-zone", "seam-zone-crs", "web-mercator"])
def test_streamed_export_equals_the_in_memory_mosaic(tmp_path, crs):
    """Export renders blocks one at a time (its memory bound): the GeoTIFF must equal one mosaic of the bbox,
    across a UTM seam and in a CRS that resamples, with block edges that cut chunks and the seam."""
    import rasterio

    root = tmp_path / "seam"
    build_random_store(str(root), [Unit(31, 3999, 289, 256), Unit(32, 3999, 30, 256)], partial=True)
    reader = tc.open_root(str(root))
    bbox = (5.988, -7.399, 6.012, -7.388) if crs else (5.992, -7.399, 5.999, -7.388)
    array, transform, out_crs = reader.mosaic(bbox, 2024, crs=crs)
    assert np.isfinite(array).any() and (np.isnan(array).any() or crs is None)  # zone 32's unit is partial
    reader.export_block = 48  # cuts 32-px chunks, the seam and the output edges
    out = tmp_path / "x.tif"
    reader.export_geotiff(bbox, 2024, out, crs=crs)
    with rasterio.open(out) as ds:
        assert ds.crs.to_string() == out_crs and ds.transform == transform and ds.count == 128
        assert ds.profile["blockxsize"] == 256 and ds.overviews(1) is not None
        np.testing.assert_array_equal(np.moveaxis(ds.read(), 0, -1), array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seam", "x.tif"]  # no temporary file left
