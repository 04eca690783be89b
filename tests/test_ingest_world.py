"""Ingest against the synthetic world's TRUTH: masks, mosaics, offset, zone edge, S1 scale, bad COGs."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from tessera_ray.grid import Window, roi_from_bbox, roi_window, units_for_roi, zone_grid
from tessera_ray.pipeline.blocks import search_bbox
from tessera_ray.sources import sentinel1
from tessera_ray.sources.catalog import search_catalog
from tessera_ray.sources.cog import ReaderEnv, TargetGrid, read_onto
from tessera_ray.sources.read import Block, ReadConfig, read_cube
from tessera_ray.sources.scenes import EARTH_SEARCH_C1, OPERA_RTC, Asset
from tessera_ray.sources.stac import RetryPolicy, search_scenes

CONFIG = ReadConfig(max_requests=4, env=ReaderEnv(retries=1, retry_delay=0.0))


def _open(root):
    from tessera_ray.synthetic import World

    return World.open(root)


def _scenes(root, world, bbox=None):
    bbox = bbox or world.bbox
    start, end = date(world.year, 1, 1), date(world.year, 12, 31)
    path = str(root / "stac" / "items.parquet")
    return search_catalog(path, EARTH_SEARCH_C1, bbox, start, end) + search_catalog(path, OPERA_RTC, bbox, start, end)


def _first_dates(scenes, n, kind="s2"):
    """The scenes of one kind on their first ``n`` dates (the truth is slow to evaluate: keep tests short)."""
    days = sorted({s.date for s in scenes if s.kind == kind})[:n]
    return [s for s in scenes if s.kind == kind and s.date in days]


def _world_block(world, zone=None):
    roi = roi_from_bbox(*world.bbox)
    zone = zone or roi.zones()[-1]
    return Block(zone, roi_window(roi, zone))


def expected_s2(world, scenes, block):
    """Per-date first-valid mosaic computed from the truth: {doy: (bands, mask)}."""
    g = zone_grid(block.zone)
    transform, shape = g.window_transform(block.window), block.window.shape
    by_date: dict = {}
    for s in sorted((s for s in scenes if s.kind == "s2"), key=lambda s: (s.datetime, s.id)):
        by_date.setdefault(s.date, []).append(world.s2_truth(s.id, g.crs, transform, shape))
    out = {}
    for truths in by_date.values():
        bands = np.zeros(shape + (10,), np.uint16)
        mask = np.zeros(shape, bool)
        done = np.zeros(shape, bool)
        for t in truths:  # first clear wins
            take = t["valid"] & ~mask
            bands[take] = t["bands"][take]
            mask |= take
        for t in truths:  # no clear scene: the first with data
            take = ~mask & ~done & ~t["nodata"]
            bands[take] = t["bands"][take]
            done |= take
        if mask.any() or (~np.all([t["nodata"] for t in truths], axis=0)).any():
            out[truths[0]["doy"]] = (bands, mask.astype(np.uint8))
    return out


def _assert_matches_truth(cube, expected):
    assert cube.doys.tolist() == sorted(expected)
    for t, doy in enumerate(cube.doys):
        bands, mask = expected[int(doy)]
        np.testing.assert_array_equal(cube.masks[t], mask, err_msg=f"mask doy {doy}")
        np.testing.assert_array_equal(cube.bands[t], bands, err_msg=f"bands doy {doy}")


def test_s2_masks_and_mosaics_equal_the_truth(world):
    w = _open(world)
    scenes = _first_dates(_scenes(world, w), 8)
    block = _world_block(w)
    cube = read_cube(block, scenes, CONFIG)
    expected = expected_s2(w, scenes, block)
    _assert_matches_truth(cube, expected)
    # the world has clouds, overlapping tiles on one date, and clear pixels: the test exercises all three
    assert 0 < cube.masks.mean() < 1
    dates = [s.date for s in scenes if s.kind == "s2"]
    assert len(dates) > len(set(dates))
    assert cube.skipped_scenes == () and cube.unknown_orbit == ()


def test_read_over_http_equals_read_from_files(world, stac_api):
    w = _open(world)
    block = _world_block(w)
    start, end = date(w.year, 1, 1), date(w.year, 12, 31)
    stac_api.fail_next(2, 502)
    over_http = search_scenes(EARTH_SEARCH_C1, w.bbox, start, end, url=stac_api.url,
                              policy=RetryPolicy(retries=4, backoff=0.01, page_size=10))
    assert over_http and all(s.asset("red").href.startswith("http://") for s in over_http)
    local = [s for s in _scenes(world, w) if s.kind == "s2"]
    assert sorted(s.id for s in over_http) == sorted(s.id for s in local)
    a = read_cube(block, _first_dates(over_http, 6), CONFIG)
    b = read_cube(block, _first_dates(local, 6), CONFIG)
    assert a.doys.size == 6
    np.testing.assert_array_equal(a.bands, b.bands)
    np.testing.assert_array_equal(a.masks, b.masks)


@pytest.fixture(scope="module")
def world_2022(tmp_path_factory):
    from tessera_ray.synthetic import generate_world

    root = tmp_path_factory.mktemp("world2022")
    generate_world(root, bbox=(0.120, 52.172, 0.128, 52.177), preset="test", year=2022)  # small: one or two tiles
    return root


@pytest.mark.slow
def test_offset_right_on_both_sides_of_baseline_04(world_2022):
    w = _open(world_2022)
    s2 = [s for s in _scenes(world_2022, w) if s.kind == "s2"]
    scenes = [s for s in s2 if date(2022, 1, 10) <= s.date <= date(2022, 2, 12)]
    assert {s.boa_offset for s in s2 if s.date < date(2022, 1, 25)} == {0}
    assert {s.boa_offset for s in s2 if s.date >= date(2022, 1, 25)} == {1000}
    block = _world_block(w)
    cube = read_cube(block, scenes, CONFIG)
    _assert_matches_truth(cube, expected_s2(w, scenes, block))
    assert (cube.doys < 25).any() and (cube.doys >= 25).any()


@pytest.fixture(scope="module")
def world_zone_edge(tmp_path_factory):
    from tessera_ray.synthetic import generate_world

    root = tmp_path_factory.mktemp("world_edge")
    generate_world(root, bbox=(-0.009, 52.170, 0.009, 52.180), preset="test")
    return root


@pytest.mark.slow
def test_zone_edge_roi_equals_each_side_alone_and_the_truth(world_zone_edge):
    w = _open(world_zone_edge)
    (west, south, east, north) = w.bbox
    both = _first_dates(_scenes(world_zone_edge, w), 6)
    assert {s.crs for s in both if s.kind == "s2"} == {"EPSG:32630", "EPSG:32631"}
    for side_bbox in ((west, south, -0.0001, north), (0.0001, south, east, north)):
        side = roi_from_bbox(*side_bbox)
        days = {s.date for s in both}
        units = units_for_roi(side, 256)
        alone = [s for s in _scenes(world_zone_edge, w, search_bbox(units)) if s.kind == "s2" and s.date in days]
        for unit in units:
            a = read_cube(unit, alone, CONFIG)
            b = read_cube(unit, both, CONFIG)
            np.testing.assert_array_equal(a.bands, b.bands)
            np.testing.assert_array_equal(a.masks, b.masks)
            np.testing.assert_array_equal(a.doys, b.doys)
    # zone 30's grid east of the edge is covered by warped zone-31 tiles as well: compare with the truth
    roi = roi_from_bbox(*w.bbox)
    block = Block(30, roi_window(roi, 30))
    cube = read_cube(block, both, CONFIG)
    expected = expected_s2(w, both, block)
    assert cube.doys.tolist() == sorted(expected)
    agree = np.mean([(cube.masks[t] == expected[int(d)][1]).mean() for t, d in enumerate(cube.doys)])
    same = np.mean([(cube.bands[t] == expected[int(d)][0]).all(-1).mean() for t, d in enumerate(cube.doys)])
    assert agree > 0.995 and same > 0.99  # warped nearest may pick the neighbour on exact pixel edges


def test_s1_int16_exact_on_the_truth(world):
    w = _open(world)
    scene = next(s for s in _scenes(world, w) if s.kind == "s1")
    truth_scene = w.scene(scene.id)
    grid = truth_scene.grids[0]
    a, b, c, d, e, f = grid.transform
    from affine import Affine

    native = TargetGrid(tuple(grid.shape), Affine(a, b, c, d, e, f), f"EPSG:{truth_scene.epsg}")
    truth = w.s1_truth(scene.id, native.crs, native.transform, native.shape)
    for pol in ("VV", "VH"):
        got = read_onto(scene.asset(pol).href, native, "bilinear", CONFIG.env).data
        x = truth[pol.lower()].astype(np.float64)
        expected = np.where(np.isfinite(x) & (x > 0), np.clip((20 * np.log10(np.where(x > 0, x, 1)) + 50) * 200,
                                                              0, 32767), 0).astype(np.int16)
        np.testing.assert_array_equal(sentinel1.to_int16(got), expected)
    # in the cube, the 10 m pixels at 30 m pixel centres carry the 30 m value exactly
    zone = truth_scene.zone
    g = zone_grid(zone)
    row, col = g.xy_to_pixel(c + 15.0, f - 15.0)  # centre of the burst's first 30 m pixel
    block = Block(zone, Window(int(row), int(col), min(90, 3 * grid.shape[0]), min(90, 3 * grid.shape[1])))
    cube = read_cube(block, [scene], CONFIG)
    stack, doys = ((cube.sar_ascending, cube.sar_ascending_doy) if truth["orbit_direction"] == "ASCENDING"
                   else (cube.sar_descending, cube.sar_descending_doy))
    assert doys.tolist() == [truth["doy"]]
    centres = stack[0, ::3, ::3]
    h, wd = centres.shape[:2]
    for k, pol in enumerate(("vv", "vh")):
        x = truth[pol][:h, :wd]
        ok = np.isfinite(x) & (x > 0)
        assert ok.mean() > 0.3
        np.testing.assert_array_equal(centres[..., k][ok], sentinel1.to_int16(x)[ok])


def _copy_scene(scene, dest):
    """Copy a scene's COGs to ``dest`` and point a Scene record at the copies."""
    assets = []
    for a in scene.assets:
        target = dest / scene.id / a.href.rsplit("/", 1)[-1]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(a.href, target)
        assets.append(Asset(a.role, str(target)))
    return replace(scene, assets=tuple(assets))


def test_unknown_orbit_direction_is_counted_not_dropped_silently(world, tmp_path):
    import rasterio

    w = _open(world)
    scenes = _scenes(world, w)
    s1 = next(s for s in scenes if s.kind == "s1")
    copy = _copy_scene(s1, tmp_path)
    for a in copy.assets:
        with rasterio.open(a.href, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
            ds.update_tags(ORBIT_PASS_DIRECTION="")
    block = _world_block(w)
    cube = read_cube(block, [copy], CONFIG)
    assert cube.unknown_orbit == (s1.id,)
    assert cube.sar_ascending_doy.size == 0 and cube.sar_descending_doy.size == 0


def test_corrupt_cog_is_skipped_and_reported(world, tmp_path):
    w = _open(world)
    s2 = _first_dates(_scenes(world, w), 4)
    block = _world_block(w)
    victim = s2[len(s2) // 2]
    broken = _copy_scene(victim, tmp_path)
    scl = broken.asset("scl").href  # every scene touching the block has its SCL read
    data = open(scl, "rb").read()
    open(scl, "wb").write(data[: len(data) // 3])
    others = [s for s in s2 if s.id != victim.id]
    cube = read_cube(block, others + [broken], CONFIG)
    assert cube.skipped_scenes == (victim.id,)
    _assert_matches_truth(cube, expected_s2(w, others, block))
