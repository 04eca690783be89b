"""``tessera-ray sample`` / ``export``: outputs a user opens, and one clear line for each bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli as run

from tessera_ray import client as tc
from tessera_ray.grid import Unit, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.store.layout import shard_key
from tessera_ray.store.testing import build_random_store

UNITS = [Unit(31, 4000, 160, 256), Unit(31, 4000, 161, 256)]

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-store")
    blocks = build_random_store(str(root), UNITS)
    with StaticServer(root) as server:
        yield root, server.url, blocks


def sample_points(n=40, seed=0):
    rng = np.random.default_rng(seed)
    w = UNITS[0].window
    rows, cols = rng.integers(w.row, w.row + 256, n), rng.integers(w.col, w.col + 512, n)
    return zone_grid(31).pixel_to_lonlat(rows, cols)


@pytest.mark.parametrize("fmt", ["csv", "geojson", "parquet"])
def test_sample_writes_geoparquet_with_values_and_status(served, tmp_path, capsys, fmt):
    import geopandas as gpd
    import pandas as pd

    root, url, _ = served
    lon, lat = sample_points()
    table = pd.DataFrame({"id": np.arange(len(lon)), "lon": lon, "lat": lat})
    points = tmp_path / f"points.{fmt}"
    if fmt == "csv":
        table.to_csv(points, index=False)
    else:
        frame = gpd.GeoDataFrame(table[["id"]], geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
        if fmt == "geojson":
            frame.to_file(points, driver="GeoJSON")
        else:
            frame.to_crs("EPSG:32631").to_parquet(points)  # another CRS: must be reprojected
    out = tmp_path / "out.parquet"
    code, stdout, err = run(
        ["sample", "--root", url, "--points", str(points), "--year", "2024", "--out", str(out)], capsys
    )
    assert code == 0, err
    got = gpd.read_parquet(out)
    assert list(got["id"]) == list(range(len(lon)))
    values = got[[f"emb_{i:03d}" for i in range(128)]].to_numpy()
    expected, status = tc.open_root(str(root)).points(lon, lat, 2024)
    np.testing.assert_allclose(values, expected, rtol=1e-6, equal_nan=True)
    assert list(got["status"]) == list(status)
    assert f"{len(lon)} points" in stdout


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_sample_streams_batches_in_input_order(served, tmp_path, fmt):
    """``sample`` reads and writes points a batch at a time (its memory bound): batches of 7 points over
    several units, shuffled, give the rows of one read of all the points, in the input's order."""
    import geopandas as gpd
    import pandas as pd

    from tessera_ray.heads.points_io import sample_to_parquet

    root, _, _ = served
    lon, lat = sample_points(n=60, seed=3)
    table = pd.DataFrame({"id": np.arange(len(lon))[::-1], "lon": lon, "lat": lat})
    points = tmp_path / f"points.{fmt}"
    if fmt == "csv":
        table.to_csv(points, index=False)
    else:
        gpd.GeoDataFrame(table[["id"]], geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326").to_parquet(
            points, row_group_size=16)
    out = tmp_path / "out.parquet"
    reader = tc.open_root(str(root))
    counts = sample_to_parquet(reader, points, 2024, None, out, batch=7)
    got = gpd.read_parquet(out)
    assert got.crs.to_epsg() == 4326 and list(got["id"]) == list(table["id"])
    expected, status = tc.open_root(str(root)).points(lon, lat, 2024)
    np.testing.assert_array_equal(got[[f"emb_{i:03d}" for i in range(128)]].to_numpy(), expected)
    assert list(got["status"]) == list(status)
    assert counts == {k: int((status == k).sum()) for k in set(status)} and sum(counts.values()) == 60
    np.testing.assert_allclose(got.geometry.x, lon) and np.testing.assert_allclose(got.geometry.y, lat)


def test_export_writes_a_cog_with_the_region(served, tmp_path, capsys):
    import rasterio

    root, url, _ = served
    cx, cy = UNITS[0].polygon_lonlat().centroid.coords[0]
    bbox = (cx - 0.004, cy - 0.004, cx + 0.004, cy + 0.004)
    out = tmp_path / "region.tif"
    code, _, err = run(
        ["export", "--root", url, "--bbox", ",".join(map(str, bbox)), "--year", "2024", "--out", str(out)], capsys
    )
    assert code == 0, err
    (part,) = tc.open_root(str(root)).region(bbox, 2024)
    with rasterio.open(out) as src:
        assert src.count == 128 and src.crs.to_epsg() == 32631
        assert src.transform == part.transform
        assert src.profile["tiled"] and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        data = np.moveaxis(src.read(), 0, -1)
    np.testing.assert_array_equal(data, part.embeddings)


def test_bad_inputs_give_one_line_and_nonzero_exit(served, tmp_path, capsys):
    root, url, _ = served
    lon, lat = sample_points(5)
    good = tmp_path / "p.csv"
    good.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat)))
    out = tmp_path / "o.parquet"

    def check(argv, pattern, code=2):
        got, _, err = run(argv, capsys)
        assert got == code, err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert pattern in err, err
        assert not out.exists()

    base = ["--year", "2024", "--out", str(out)]
    check(["sample", "--root", str(tmp_path / "nope"), "--points", str(good), *base], "not a tessera-ray root")
    check(["sample", "--root", url + "/manifests", "--points", str(good), *base], "not a tessera-ray root")
    check(["sample", "--root", url, "--points", str(good), "--year", "1999", "--out", str(out)], "year 1999 is not in")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    check(["sample", "--root", url, "--points", str(bad), *base], "no lon/lat columns")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    check(["sample", "--root", url, "--points", str(junk), *base], "cannot read points file")
    nums = tmp_path / "nums.csv"
    nums.write_text("lon,lat\n3.0,abc\n")
    check(["sample", "--root", url, "--points", str(nums), *base], "non-numeric")
    polar = tmp_path / "polar.csv"
    polar.write_text("lon,lat\n3.0,-7.4\n3.0,88.5\n")
    check(["sample", "--root", url, "--points", str(polar), *base], "outside every zone grid")
    check(["export", "--root", url, "--bbox", "1,2,3", "--year", "2024", "--out", str(tmp_path / "x.tif")],
          "bbox must be four numbers")
    cx, cy = UNITS[0].polygon_lonlat().centroid.coords[0]
    zone31 = f"{cx - 0.004},{cy - 0.004},{cx + 0.004},{cy + 0.004}"
    check(["export", "--root", url, "--bbox", zone31, "--year", "2024", "--crs", "EPSG:32660",
           "--out", str(tmp_path / "x.tif")],
          "is outside the grid of EPSG:32660 (UTM zone 60)")
    check(["export-geotessera", "--root", url, "--year", "1999", "--out", str(tmp_path / "gt")],
          "no published units for 1999")


def test_corrupt_shard_fails_naming_it(tmp_path, capsys):
    root = tmp_path / "r"
    build_random_store(str(root), UNITS[:1], partial=False)
    key = shard_key(31, "scales", 0, UNITS[0].row, UNITS[0].col)
    data = bytearray((root / key).read_bytes())
    data[len(data) // 2] ^= 0x55
    (root / key).write_bytes(bytes(data))
    w = UNITS[0].window
    rows, cols = np.meshgrid(np.arange(w.row + 16, w.row + 256, 32), np.arange(w.col + 16, w.col + 256, 32))
    lon, lat = zone_grid(31).pixel_to_lonlat(rows.ravel(), cols.ravel())  # one point in every chunk
    points = tmp_path / "p.json"
    points.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [a, b]}}
        for a, b in zip(lon, lat)
    ]}))
    out = tmp_path / "o.parquet"
    code, _, err = run(
        ["sample", "--root", str(root), "--points", str(points), "--year", "2024", "--out", str(out)], capsys
    )
    assert code == 4 and key in err and "corrupt" in err and not out.exists()


# ------------------------------------------------------------------ a faulty server in front of the root


ALL_KINDS = "status 503", "status 429", "slow", "html", "short"


def _faults(**which):
    from tessera_ray.faults import Fault

    return (Fault.status(503, **which), Fault.status(429, retry_after=0.2, **which), Fault.slow(0.6, **which),
            Fault.html(**which), Fault.short(**which))


@pytest.fixture
def patient(monkeypatch):
    """Enough retries for every fault a test injects to land on one request; a 0.3 s timeout that slow faults pass."""
    for key, value in {"TESSERA_RAY_HTTP_RETRIES": "11", "TESSERA_RAY_HTTP_RETRY_DELAY": "0",
                       "TESSERA_RAY_HTTP_TIMEOUT": "0.3"}.items():
        monkeypatch.setenv(key, value)


def test_sample_and_export_through_a_faulty_server_give_the_clean_values(served, tmp_path, capsys, patient):
    """Every kind of fault, twice each, among the metadata, manifest and shard reads of ``sample`` and ``export``."""
    import geopandas as gpd
    import rasterio

    root, url, _ = served
    lon, lat = sample_points(n=30, seed=5)
    points = tmp_path / "points.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(lon, lat)))
    cx, cy = UNITS[0].polygon_lonlat().centroid.coords[0]
    bbox = ",".join(map(str, (cx - 0.003, cy - 0.003, cx + 0.003, cy + 0.003)))

    def both(base, tag):
        code, _, err = run(["sample", "--root", base, "--points", str(points), "--year", "2024",
                            "--out", str(tmp_path / f"{tag}.parquet")], capsys)
        assert code == 0, err
        code, _, err = run(["export", "--root", base, "--bbox", bbox, "--year", "2024",
                            "--out", str(tmp_path / f"{tag}.tif")], capsys)
        assert code == 0, err
        with rasterio.open(tmp_path / f"{tag}.tif") as src:
            image = src.read()
        return gpd.read_parquet(tmp_path / f"{tag}.parquet").drop(columns="geometry"), image

    clean_points, clean_image = both(url, "clean")
    with StaticServer(root) as faulty, faulty.inject(*_faults(count=2, rate=0.2), seed=3) as faults:
        got_points, got_image = both(faulty.url, "faulty")
    assert sorted(faults.by_kind) == sorted(ALL_KINDS) and faults.answered == 10
    assert got_points.equals(clean_points)
    np.testing.assert_array_equal(got_image, clean_image)


@pytest.mark.parametrize("kind", ["status 503", "html", "short"])
def test_a_root_whose_server_keeps_failing_is_one_line_and_no_output(served, tmp_path, capsys, kind, monkeypatch):
    root, _, _ = served
    monkeypatch.setenv("TESSERA_RAY_HTTP_RETRY_DELAY", "0")
    (fault,) = [f for f in _faults(path="/tessera.zarr/") if f.label == kind]
    out = tmp_path / "o.parquet"
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n" + "".join(f"{a},{b}\n" for a, b in zip(*sample_points(n=5))))
    with StaticServer(root) as faulty, faulty.inject(fault):
        code, _, err = run(["sample", "--root", faulty.url, "--points", str(points), "--year", "2024",
                            "--out", str(out)], capsys)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "(4 attempts)" in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == [points]


@pytest.mark.parametrize("name, value, says", [
    ("TESSERA_RAY_HTTP_TIMEOUT", "abc", "is not a number"), ("TESSERA_RAY_HTTP_RETRIES", "2.5", "is not an integer"),
    ("TESSERA_RAY_HTTP_RETRY_DELAY", "-1", "must be at least 0"), ("TESSERA_RAY_HTTP_TIMEOUT", "nan", "at least"),
])
def test_a_bad_http_setting_is_one_line(served, tmp_path, capsys, monkeypatch, name, value, says):
    _, url, _ = served
    monkeypatch.setenv(name, value)
    points = tmp_path / "p.csv"
    points.write_text("lon,lat\n3.0,52.0\n")
    code, _, err = run(["sample", "--root", url, "--points", str(points), "--year", "2024",
                        "--out", str(tmp_path / "o.parquet")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and name in err and says in err, err
