"""Reading a Matryoshka store at depth K: the client and ``sample`` / ``export`` / ``export-geotessera --depth``."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_cli as run

from tessera_ray import client as tc
from tessera_ray.errors import DataError, UserInputError
from tessera_ray.grid import Unit, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.store.layout import shard_key
from tessera_ray.store.testing import build_random_store

UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256)]

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


@pytest.fixture(scope="module", params=["none", "zstd"], ids=["fixed-offsets", "zstd"])
def served(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"depth-store-{request.param}")
    build_random_store(str(root), UNITS, depths=(16, 32), compression=request.param)
    with StaticServer(root) as server:
        yield root, server.url


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain-store")
    build_random_store(str(root), UNITS[:1])
    return root


def random_points(n=300, seed=0):
    rng = np.random.default_rng(seed)
    w = UNITS[0].window
    rows, cols = rng.integers(w.row, w.row + 256, n), rng.integers(w.col, w.col + 512, n)
    return zone_grid(31).pixel_to_lonlat(rows, cols)


def recording(root: tc.Root) -> list[str]:
    """The keys of every range read the client makes from now on."""
    keys: list[str] = []
    real = root.objects.get_range

    def get_range(key, start, length):
        keys.append(key)
        return real(key, start, length)

    root.objects.get_range = get_range
    return keys


def test_points_at_depth_are_the_prefix_of_the_full_embedding(served):
    _, url = served
    lon, lat = random_points()
    full, status = tc.open_root(url).points(lon, lat, 2024)
    root = tc.open_root(url)
    keys = recording(root)
    for k in (16, 32):
        values, status_k = root.points(lon, lat, 2024, depth=k)
        assert values.shape == (len(lon), k)
        np.testing.assert_array_equal(values, full[:, :k])
        assert list(status_k) == list(status)
    assert (
        (status == tc.VALID).sum() > 100 and (status == tc.NODATA).sum() > 0 and (status == tc.NOT_PROCESSED).sum() > 0
    )
    arrays = {key.split("/")[2] for key in keys}
    assert arrays == {"embeddings_d16", "embeddings_d32", "scales"}  # never the 128-dim array
    assert tc.open_root(url).points(lon, lat, 2024, depth=128)[0].tobytes() == full.tobytes()


def test_a_cold_pixel_at_depth_16_costs_a_fraction_of_the_bytes(served):
    _, url = served
    lon, lat = (
        float(v[0]) for v in zone_grid(31).pixel_to_lonlat([UNITS[0].window.row + 200], [UNITS[0].window.col + 9])
    )
    cost = {}
    for depth in (None, 16):
        root = tc.open_root(url)
        before = root.stats["chunks_bytes"] + root.stats["index_bytes"]
        px = root.pixel(lon, lat, 2024, depth=depth)
        assert px.status == tc.VALID and len(px.values) == (depth or 128)
        cost[depth] = root.stats["chunks_bytes"] + root.stats["index_bytes"] - before
    # a 64 x 64 x 16 chunk is half of a 32 x 32 x 128 chunk; scales are the same for both
    assert cost[16] < 0.6 * cost[None]


def test_region_and_window_at_depth(served):
    _, url = served
    root = tc.open_root(url)
    cx, cy = UNITS[0].polygon_lonlat().centroid.coords[0]
    bbox = (cx - 0.006, cy - 0.004, cx + 0.012, cy + 0.004)  # across both units
    (full,) = root.region(bbox, 2024)
    (part,) = root.region(bbox, 2024, depth=16)
    assert part.window == full.window and part.transform == full.transform
    assert part.embeddings.shape == (*full.window.shape, 16)
    np.testing.assert_array_equal(part.embeddings, full.embeddings[..., :16])
    q, s = root.read_window(31, full.window, 2024, depth=32)
    q128, s128 = root.read_window(31, full.window, 2024)
    assert q.tobytes() == np.ascontiguousarray(q128[..., :32]).tobytes() and s.tobytes() == s128.tobytes()
    array, _, _ = root.mosaic(bbox, 2024, crs="EPSG:3857", depth=16)
    assert array.shape[-1] == 16


def test_a_depth_the_store_lacks_is_a_clear_error(served, plain):
    _, url = served
    with pytest.raises(UserInputError, match=r"depth 64 is not in .*; it has depth\(s\) 16, 32, 128"):
        tc.open_root(url).points([3.0], [52.0], 2024, depth=64)
    with pytest.raises(UserInputError, match=r"depth 16 is not in .*; it has depth\(s\) 128"):
        tc.open_root(str(plain)).region((0.1, 0.1, 0.2, 0.2), 2024, depth=16)


def test_a_lost_prefix_shard_fails_loudly_instead_of_reading_zeros(tmp_path, capsys):
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1], depths=(16,), partial=False)
    key = shard_key(31, "embeddings_d16", 0, UNITS[0].row, UNITS[0].col)
    (root / key).unlink()
    lon, lat = random_points(20)
    reader = tc.open_root(str(root))
    assert (reader.points(lon, lat, 2024)[1] == tc.VALID).any()  # the full array is still there
    with pytest.raises(DataError, match=key):
        reader.points(lon, lat, 2024, depth=16)
    with pytest.raises(DataError, match=key):
        reader.read_window(31, UNITS[0].window, 2024, depth=16)
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat)))
    out = tmp_path / "o.parquet"
    code, _, err = run(["sample", "--root", str(root), "--points", str(points), "--year", "2024", "--out", str(out),
                        "--depth", "16"], capsys)
    assert code == 4 and key in err and err.count("\n") == 1 and not out.exists()


def test_sample_export_and_export_geotessera_at_depth(served, tmp_path, capsys):
    import geopandas as gpd
    import rasterio

    _, url = served
    lon, lat = random_points(30)
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat)))
    out = tmp_path / "o.parquet"
    code, _, err = run(["sample", "--root", url, "--points", str(points), "--year", "2024", "--out", str(out),
                        "--depth", "16"], capsys)
    assert code == 0, err
    got = gpd.read_parquet(out)
    emb_cols = [c for c in got.columns if c.startswith("emb_")]
    assert emb_cols == [f"emb_{i:03d}" for i in range(16)]
    expected, _ = tc.open_root(url).points(lon, lat, 2024, depth=16)
    np.testing.assert_array_equal(got[emb_cols].to_numpy(), expected)

    cx, cy = UNITS[0].polygon_lonlat().centroid.coords[0]
    bbox = (cx - 0.004, cy - 0.004, cx + 0.004, cy + 0.004)
    tif = tmp_path / "r.tif"
    code, _, err = run(["export", "--root", url, "--bbox", ",".join(map(str, bbox)), "--year", "2024",
                        "--out", str(tif), "--depth", "32"], capsys)
    assert code == 0, err
    (part,) = tc.open_root(url).region(bbox, 2024, depth=32)
    with rasterio.open(tif) as src:
        assert src.count == 32 and src.transform == part.transform
        np.testing.assert_array_equal(np.moveaxis(src.read(), 0, -1), part.embeddings)

    gt = tmp_path / "gt"
    code, _, err = run(
        ["export-geotessera", "--root", url, "--year", "2024", "--out", str(gt), "--depth", "16"], capsys
    )
    assert code == 0, err
    tiles = list((gt / "global_0.1_degree_representation" / "2024").glob("*/*[0-9].npy"))
    assert tiles
    for tile in tiles:
        q, scales = np.load(tile), np.load(tile.with_name(tile.stem + "_scales.npy"))
        assert q.dtype == np.int8 and q.shape == (*scales.shape, 16)


def test_bad_depths_are_one_line_and_write_nothing(served, plain, tmp_path, capsys):
    _, url = served
    lon, lat = random_points(5)
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat)))

    def check(argv, pattern, out):
        code, _, err = run(argv, capsys)
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err and pattern in err, err
        assert not out.exists()

    o = tmp_path / "o.parquet"
    check(["sample", "--root", url, "--points", str(points), "--year", "2024", "--out", str(o), "--depth", "64"],
          "depth 64 is not in", o)
    check(["sample", "--root", str(plain), "--points", str(points), "--year", "2024", "--out", str(o), "--depth", "16"],
          "it has depth(s) 128", o)
    t = tmp_path / "x.tif"
    check(["export", "--root", url, "--bbox", "3.0,83.9,3.01,83.91", "--year", "2024", "--out", str(t), "--depth", "8"],
          "depth 8 is not in", t)
    g = tmp_path / "gt"
    check(["export-geotessera", "--root", url, "--year", "2024", "--out", str(g), "--depth", "0"],
          "depth 0 is not in", g)
    check(["sample", "--root", url, "--points", str(points), "--year", "2024", "--out", str(o), "--depth", "x"],
          "--depth", o)
