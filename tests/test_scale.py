"""Planet scale: plan only land, split a plan into pieces, size a run, see its coverage."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import shapely
from cli_helpers import run_cli as run
from embed_helpers import ONE_BLOCK, embed_args, write_checkpoint
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera_ray.grid import Unit, lonlat_to_zone_pixel, roi_from_bbox, unit_of_pixel, units_for_roi, zone_lon_bounds

REPO = Path(__file__).resolve().parents[1]
ROI = "0.124,52.174,0.1245,52.1745"
"""Two 32 px units of the test world."""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


# --------------------------------------------------------------------------- land


def _land_points(bbox, count, seed, mask="osm"):
    """Random points of ``bbox`` that lie on the mask's land."""
    from tessera_ray.landmask import land_polygons

    land = land_polygons(mask)
    rng = np.random.default_rng(seed)
    w, s, e, n = bbox
    points = shapely.points(rng.uniform(w, e, count), rng.uniform(s, n, count))
    query, hits = land.tree.query(points)
    inside = np.unique(query[shapely.contains(land.polygons[hits], points[query])])
    return shapely.get_coordinates(points[inside])


@pytest.mark.parametrize("bbox", [
    (-11.0, 49.0, -1.0, 61.0),      # British and Irish coasts, Rockall's zone, zone edges at 6 W and 0
    (4.0, 57.5, 32.0, 81.0),        # Norway's fjords and Svalbard: strips a few hundred km wide
    (177.0, -19.5, 180.0, -15.0),   # Fiji west of the antimeridian (zone 60) ...
    (-180.0, -19.5, -178.0, -15.0),  # ... and east of it (zone 1)
    (95.0, -11.0, 141.0, 6.0),      # Indonesia's islands
])
def test_every_land_point_has_its_unit_planned(bbox):
    from tessera_ray.landmask import units_with_land

    points = _land_points(bbox, 5000, seed=1)
    assert len(points) > 20
    units = sorted({unit_of_pixel(*lonlat_to_zone_pixel(lon, lat), 4096) for lon, lat in points})
    assert units_with_land(units).all()


def test_open_sea_is_not_planned_and_coasts_are_grown_by_the_margin():
    from shapely.ops import transform

    from tessera_ray.landmask import COAST_MARGIN_M, land_polygons, units_with_land
    from tessera_ray.pipeline.plan import plan_land

    units = units_for_roi(roi_from_bbox(-11.0, 49.0, -1.0, 58.0), 4096)
    plan = plan_land(units, "osm")
    land = {u.id for u in plan.units}
    assert plan.sea == len(units) - len(land) and plan.sea > 100
    mid_atlantic = unit_of_pixel(*lonlat_to_zone_pixel(-10.5, 49.3), 4096)
    assert mid_atlantic.id not in land
    rockall = unit_of_pixel(*lonlat_to_zone_pixel(-13.6875, 57.5962), 4096)  # a 25 m islet, 300 km offshore
    assert units_with_land([rockall]).all()
    # units that hold no land but lie within the margin of it are planned, and only those
    bare = units_with_land(units, margin_m=0)
    grown_only = [u for u, b in zip(units, bare) if u.id in land and not b]
    assert grown_only
    polygons = land_polygons("osm")
    for unit in grown_only:  # land within the margin of it, in metres on its grid, and of its zone's strip
        outline = shapely.geometry.box(*unit.bounds)
        _, south, _, north = unit.polygon_lonlat().bounds
        west, east = zone_lon_bounds(unit.zone)
        strip = shapely.geometry.box(west, south - 1, east, north + 1)
        strip = transform(_to(unit.crs), shapely.segmentize(strip, 0.01)).buffer(COAST_MARGIN_M)
        near = polygons.polygons[polygons.tree.query(unit.polygon_lonlat().buffer(0.1))]
        local = [transform(_to(unit.crs), shapely.segmentize(p, 0.005)).intersection(strip) for p in near]
        assert min(outline.distance(p) for p in local if not p.is_empty) <= COAST_MARGIN_M + 1


def _to(crs):
    import pyproj

    return pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform


@pytest.mark.parametrize("preset", ["test", "demo", "bench"])
def test_the_synthetic_worlds_lie_on_land(preset):
    """The demo and the tests plan their world with the real mask: every unit of each preset is land."""
    from tessera_ray.landmask import units_with_land
    from tessera_ray.synthetic.world import PRESETS

    units = units_for_roi(roi_from_bbox(*PRESETS[preset]["bbox"]), 32)
    assert units_with_land(units).all()


def test_a_roi_at_sea_is_one_line_unless_the_sea_is_asked_for(world, checkpoint, tmp_path, capsys):
    sea = "-20.0,50.0,-19.99,50.01"
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, sea, "--dry-run"), capsys)
    assert code == 2 and "holds no land on the osm+gshhg land mask" in err and err.count("\n") == 1, err
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, sea, "--dry-run", "--land", "all"), capsys)
    assert code == 2 and "no Sentinel-2 scenes" in err, err  # planned: the catalog has nothing there
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--land", "water"), capsys)
    assert code == 2 and "--land must be one of" in err


def test_the_scene_index_finds_what_a_scan_of_every_scene_finds(world):
    from tessera_ray.pipeline.blocks import SceneIndex, scenes_for_window
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.scenes import OPERA_RTC, profile_for_collection
    from tessera_ray.sources.stac import year_range

    start, end = year_range(2024)
    catalog = str(world / "stac" / "items.parquet")
    bbox = (0.0, 52.0, 0.3, 52.3)
    s2 = profile_for_collection("sentinel-2-c1-l2a", "s2")
    scenes = [*search_catalog(catalog, s2, bbox, start, end), *search_catalog(catalog, OPERA_RTC, bbox, start, end)]
    assert len(scenes) > 300
    index = SceneIndex(scenes)
    rng = np.random.default_rng(0)
    windows = 0
    for size in (16, 32, 512):
        for unit in units_for_roi(roi_from_bbox(0.09, 52.15, 0.16, 52.20), size):
            for window in unit.window.blocks(max(size // 2, 8)):
                if rng.random() < 0.2:
                    assert index.near(unit.zone, window) == scenes_for_window(unit.zone, window, scenes)
                    windows += 1
    assert windows > 50
    assert SceneIndex([]).near(31, Unit(31, 0, 0, 32).window) == []


# --------------------------------------------------------------------------- pieces


@settings(max_examples=200, deadline=None)
@given(total=st.integers(0, 3000), count=st.integers(1, 64))
def test_pieces_cover_the_plan_once(total, count):
    from tessera_ray.pipeline.plan import Piece

    units = [Unit(31, i // 20, i % 20, 4096) for i in range(total)]
    pieces = [Piece(i, count).take(units) for i in range(1, count + 1)]
    assert [u for piece in pieces for u in piece] == units  # in order: no overlap, no gap
    sizes = [len(p) for p in pieces]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/3"])
def test_a_bad_piece_is_one_line(world, checkpoint, tmp_path, capsys, text):
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--dry-run", "--piece", text), capsys)
    assert code == 2 and "--piece" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("option,value", [("--publish-growth", "-0.5"), ("--publish-growth", "nan"),
                                          ("--publish-every-units", "-1"), ("--publish-every-minutes", "inf")])
def test_a_bad_publish_cadence_is_one_line(world, checkpoint, tmp_path, capsys, option, value):
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--dry-run", option, value), capsys)
    assert code == 2 and f"{option} must be 0 (off) or positive, got" in err and err.count("\n") == 1, err
    assert not (tmp_path / "root").exists()


def _listed_units(stdout):
    return [line.split()[-1] for line in stdout.splitlines() if line.startswith("  unit ")]


def test_pieces_of_a_dry_run_split_its_units(world, checkpoint, tmp_path, capsys):
    roi = "0.118,52.171,0.132,52.179"
    code, stdout, err = run(embed_args(world, tmp_path / "r", checkpoint, roi, "--dry-run"), capsys)
    assert code == 0, err
    whole = _listed_units(stdout)
    parts = []
    for i in (1, 2, 3):
        code, stdout, err = run(embed_args(world, tmp_path / "r", checkpoint, roi, "--dry-run", "--piece", f"{i}/3"),
                                capsys)
        assert code == 0 and f"piece {i}/3 of {len(whole)} land unit(s)" in stdout, err
        parts.append(_listed_units(stdout))
    assert 10 < len(whole) <= 50 and [u for part in parts for u in part] == whole


@pytest.mark.slow
def test_two_pieces_of_a_split_run_publish_into_one_root(world, checkpoint, tmp_path, capsys, ray_cluster,
                                                         monkeypatch):
    from tessera_ray.pipeline.plan import plan_units
    from tessera_ray.store import read_manifest

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    roi = "0.1215,52.17405,0.1245,52.17415"  # two 32 px units of the test world, one a piece
    out = tmp_path / "root"
    out.mkdir()
    whole = [u.id for u in plan_units(roi, 32)]
    assert len(whole) == 2
    for piece in ("2/2", "1/2"):
        code, stdout, err = run(embed_args(world, out, checkpoint, roi, "--piece", piece, *ONE_BLOCK), capsys)
        assert code == 0 and "units: 1 done, 0 skipped (already published), 0 failed of 1" in stdout, err
    assert sorted(read_manifest(str(out), 2024)["unit_id"]) == sorted(whole)
    code, stdout, err = run(embed_args(world, out, checkpoint, roi, "--piece", "1/2", *ONE_BLOCK), capsys)
    assert code == 0 and "units: 0 done, 1 skipped (already published)" in stdout, err


# --------------------------------------------------------------------------- dry run


def test_dry_run_sizes_and_prices_the_plan(world, checkpoint, tmp_path, capsys):
    from tessera_ray.pipeline.sizing import load_node_types, load_prices

    # two units of the test world, and east of them along 52.17 N: fields, then the North Sea
    # beyond Suffolk's coast (1.76 E), at 4096 px a unit
    roi = "0.12,52.172,2.9,52.173"
    args = embed_args(world, tmp_path / "root", checkpoint, roi, "--dry-run", "--unit-size", "4096",
                      "--block-size", "512", "--prices", str(REPO / "prices.yaml"),
                      "--cluster", str(REPO / "cluster.yaml"), "--gpu-px-per-s", "50000")
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    planned = units_for_roi(roi_from_bbox(0.12, 52.172, 2.9, 52.173), 4096)
    west = [shapely.bounds(u.polygon_lonlat())[0] for u in planned]
    sea = sum(w > 1.77 + 0.1 for w in west)  # wholly east of the coast and 7 km off it: open sea
    inland = sum(w + 0.65 < 1.4 for w in west)  # wholly west of Felixstowe: land
    line = next(line for line in stdout.splitlines() if "sea units skipped" in line)
    skipped = int(line.rsplit(" ", 1)[-1])
    assert sea >= 1 and inland >= 2 and sea <= skipped <= len(planned) - inland
    land = len(planned) - skipped
    assert f"{land} land unit(s) of 4096 px" in stdout
    # only the unit over the world has scenes; the other land units are reported, not read
    assert "to embed: 1 unit(s), 64 block(s) of <= 512 px, 16,777,216 px" in stdout
    assert f"no scene in 2024 (not read): {land - 1}" in stdout
    assert f"encoder: {16_777_216 / 50_000 / 3600:,.2f} GPU-hour(s) at 50,000 px/s per GPU" in stdout
    assert "write: 3 PUT requests" in stdout  # embeddings, scales, part record
    prices, nodes = load_prices(REPO / "prices.yaml"), load_node_types(REPO / "cluster.yaml")
    assert nodes["reader"].instance == "c7i.4xlarge" and nodes["reader"].slots == 16 and nodes["reader"].spot
    assert nodes["encoder"].instance in prices.instances and nodes["head"].instance in prices.instances
    cost = next(line for line in stdout.splitlines() if line.startswith("  cost ("))
    items = [float(x.replace(",", "")) for x in re.findall(r"\$([\d,.]+)", cost)]
    assert abs(sum(items[:-2]) - items[-2]) < 0.011  # the items add up to the total (storage apart)


def test_dry_run_without_a_price_table_says_so(world, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no prices.yaml or cluster.yaml here
    code, stdout, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--dry-run"), capsys)
    assert code == 0 and "cost: no price table" in stdout, err
    bad = tmp_path / "bad.yaml"
    bad.write_text("s3: [1, 2")
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--dry-run", "--prices", str(bad)), capsys)
    assert code == 2 and "is not YAML" in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------- no scene, coverage


@pytest.mark.slow
def test_a_unit_without_scenes_is_reported_not_read_and_drawn(world, checkpoint, tmp_path, capsys, ray_cluster,
                                                              monkeypatch):
    # one unit of the world, and one 5 km east of it that no scene touches
    roi = tmp_path / "roi.geojson"
    far = shapely.geometry.box(0.2, 52.174, 0.2005, 52.1745)
    near = shapely.geometry.box(0.124, 52.1741, 0.1245, 52.1742)
    roi.write_text(shapely.to_geojson(shapely.MultiPolygon([near, far])))
    out = tmp_path / "root"
    out.mkdir()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    code, stdout, err = run(embed_args(world, out, checkpoint, str(roi), *ONE_BLOCK), capsys)
    assert code == 0, err
    far_unit = units_for_roi(roi_from_bbox(0.2, 52.174, 0.2005, 52.1745), 32)[0].id
    assert f"2024: 1 unit(s) with no scene at all, not read: {far_unit}" in stdout
    record = json.loads(next((out / "manifests" / "runs").glob("2024-*.json")).read_text())
    assert record["no_scenes"] == [far_unit] and record["units"]["done"] == 1
    code, stdout, err = run(["coverage", "--root", str(out), "--out", str(tmp_path / "c.geojson")], capsys)
    assert code == 0 and "2024: 1 published, 0 published, no data, 0 failed, 1 no scene" in stdout, err
    features = json.loads((tmp_path / "c.geojson").read_text())["features"]
    assert {f["properties"]["unit_id"]: f["properties"]["status"] for f in features}[far_unit] == "no scene"


def _root_with_history(path: Path) -> tuple[list[Unit], str]:
    """A random root of 2 years; a run record of 2024 says one unit failed and one had no scene."""
    from tessera_ray.store.testing import build_random_store

    units = [Unit(31, 4000 + r, 160 + c, 64) for r in range(2) for c in range(2)]
    build_random_store(str(path), units, years=(2023, 2024), shard_size=64, partial=False)
    runs = path / "manifests" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    failed, empty = Unit(31, 4002, 160, 64).id, Unit(31, 4002, 161, 64).id
    # an older run failed the second one too, and a later run published it
    (runs / "2024-20260101T000000Z-aaaaaa.json").write_text(json.dumps({"failed": {units[0].id: "x", failed: "y"}}))
    (runs / "2024-20260102T000000Z-bbbbbb.json").write_text(json.dumps({"failed": {failed: "y"}, "no_scenes": [empty]}))
    return units, failed


def test_coverage_of_a_folder_draws_every_status(tmp_path, capsys):
    units, failed = _root_with_history(tmp_path / "root")
    out = tmp_path / "cover.png"
    code, stdout, err = run(["coverage", "--root", str(tmp_path / "root"), "--out", str(out),
                             "--geojson", str(tmp_path / "cover.geojson")], capsys)
    assert code == 0, err
    assert "2023: 4 published, 0 published, no data, 0 failed, 0 no scene" in stdout
    assert "2024: 4 published, 0 published, no data, 1 failed, 1 no scene" in stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((tmp_path / "cover.geojson").read_text())
    status = {(f["properties"]["year"], f["properties"]["unit_id"]): f["properties"]["status"] for f in doc["features"]}
    assert status[(2024, failed)] == "failed" and status[(2024, units[0].id)] == "published"
    shape = shapely.geometry.shape(next(f for f in doc["features"] if f["properties"]["unit_id"] == failed)["geometry"])
    assert shape.equals_exact(Unit.from_id(failed).polygon_lonlat(), 1e-9)
    code, stdout, err = run(["coverage", "--root", str(tmp_path / "root"), "--year", "2023",
                             "--out", str(tmp_path / "c2.geojson")], capsys)
    assert code == 0 and "2024" not in stdout and "2023: 4 published" in stdout
    code, _, err = run(["coverage", "--root", str(tmp_path / "root"), "--year", "2019", "--out", str(out)], capsys)
    assert code == 2 and "year 2019 is not in" in err
    code, _, err = run(["coverage", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "c.txt")], capsys)
    assert code == 2 and ".png, .geojson" in err


def test_coverage_over_http_and_s3(tmp_path, capsys, s3_server, monkeypatch):
    from tessera_ray.serve import StaticServer

    _root_with_history(tmp_path / "root")
    with StaticServer(tmp_path / "root") as server:
        code, stdout, err = run(["coverage", "--root", server.url, "--out", str(tmp_path / "h.geojson")], capsys)
    assert code == 0 and "2024: 4 published, 0 published, no data, 0 failed, 0 no scene" in stdout, err
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    s3_server.create_bucket("coverage-root")
    s3_server.upload_dir(tmp_path / "root", "coverage-root", "r")
    code, stdout, err = run(
        ["coverage", "--root", "s3://coverage-root/r", "--out", str(tmp_path / "s.geojson")], capsys
    )
    assert code == 0 and "2024: 4 published, 0 published, no data, 1 failed, 1 no scene" in stdout, err
