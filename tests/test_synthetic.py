"""The synthetic world: reproducible, and shaped like the real sources (TESSERA.md sections 2-3)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from tessera_ray.cli import main as cli_main
from tessera_ray.grid import Window, zone_grid
from tessera_ray.synthetic import CLASSES, DEFAULT_BBOX, DEFAULT_YEAR, S2_BANDS, World, generate_world
from tessera_ray.synthetic.catalog import s2_item
from tessera_ray.synthetic.landscape import reflectance
from tessera_ray.synthetic.scenes import S1_COLLECTION, S2_COLLECTION, s2_tiles, s2_tracks
from tessera_ray.synthetic.world import plan_scenes, world_spec, write_scene

CROSSING_BBOX = (5.991, 52.170, 6.009, 52.180)  # across the zone 31 / 32 edge at 6 E


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny(world) -> World:
    """The session's small world (conftest: ``generate_world(root, preset="test")``)."""
    return World.open(world)


def _zone_aligned(scene, res=10.0):
    """The scene's 10 m grid as a window of the zone grid (it must be one)."""
    g = scene.grid(res)
    grid = zone_grid(scene.zone)
    row, col = grid.xy_to_pixel(g.transform[2] + 5.0, g.transform[5] - 5.0)
    assert grid.pixel_to_xy(row, col) == (g.transform[2] + 5.0, g.transform[5] - 5.0)
    return scene.crs, g.affine, g.shape


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.slow
def test_synth_command_reproduces_the_same_bytes(tiny, tmp_path):
    """`tessera-ray synth` with the fixture's arguments writes the very same files."""
    out = tmp_path / "again"
    spec = tiny.spec
    done = _cli("synth", "--out", str(out), "--preset", spec.preset, "--bbox", ",".join(map(str, spec.bbox)),
                "--year", str(spec.year), "--seed", str(spec.seed))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Sentinel-2 scenes" in done.stdout
    assert _digest(out) == _digest(tiny.root)


def test_another_seed_gives_another_world(tiny, tmp_path):
    other = world_spec(preset="test", seed=1)
    scenes = list(plan_scenes(other))
    assert [s.id for s in scenes] != [s.id for s in tiny.scenes]
    s2 = next(s for s in scenes if s.collection == S2_COLLECTION)
    written = write_scene(tmp_path, other, s2)
    mine = next(s for s in tiny.s2_scenes if s.tile == s2.tile)
    assert (tmp_path / written.href("red")).read_bytes() != tiny.asset_path(mine, "red").read_bytes()
    crs, transform, shape = _zone_aligned(mine)
    theirs = World(tmp_path, other, tuple(scenes)).landcover(crs, transform, shape)
    assert (theirs != tiny.landcover(crs, transform, shape)).mean() > 0.5


def test_world_json_round_trips(tiny):
    doc = json.loads((tiny.root / "world.json").read_text())
    assert doc["spec"]["bbox"] == list(tiny.bbox)
    assert (tiny.root / "world.json").read_text() == json.dumps(doc, sort_keys=True) + "\n"
    opened = World.open(tiny.root)
    assert [s.id for s in opened.scenes] == [s.id for s in tiny.scenes]
    assert opened.year == DEFAULT_YEAR
    assert all(opened.asset_path(s, k).is_file() for s in opened.scenes[:20] for k, _ in s.assets)


# --------------------------------------------------------------------------- COG conventions


def test_sentinel2_cogs_follow_earth_search_conventions(tiny):
    scene = tiny.s2_scenes[0]
    for key in S2_BANDS + ("scl",):
        with rasterio.open(tiny.asset_path(scene, key)) as src:
            res = 10.0 if key in ("red", "green", "blue", "nir") else 20.0
            assert src.res == (res, res), key
            assert src.crs.to_epsg() == scene.epsg
            assert src.dtypes[0] == ("uint8" if key == "scl" else "uint16")
            assert src.nodata == 0
            assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
            assert src.compression.name == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR") == "2"
            assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
            assert len(src.overviews(1)) >= 1
            # tile corners on multiples of 60 m: the 10 m / 20 m pixels line up with the zone grid
            assert src.transform.c % 60 == 0 and src.transform.f % 60 == 0


def test_sentinel1_cogs_follow_opera_conventions(tiny):
    directions = set()
    for scene in tiny.s1_scenes[:: max(1, len(tiny.s1_scenes) // 12)]:
        for key in ("VV", "VH", "mask"):
            with rasterio.open(tiny.asset_path(scene, key)) as src:
                assert src.res == (30.0, 30.0)
                assert src.transform.c % 30 == 0 and src.transform.f % 30 == 0
                assert src.crs.to_epsg() == scene.epsg
                assert src.profile["tiled"] and src.block_shapes[0][0] <= 512
                assert src.compression.name == "deflate"
                assert src.tags()["ORBIT_PASS_DIRECTION"] == scene.orbit_direction
                directions.add(src.tags()["ORBIT_PASS_DIRECTION"])
                data = src.read(1)
                if key == "mask":
                    assert src.dtypes[0] == "uint8" and src.nodata == 255
                    assert set(np.unique(data)) <= {0, 1, 2, 3, 255}
                    assert (data == 0).any() and (data == 255).any()
                else:
                    assert src.dtypes[0] == "float32" and np.isnan(src.nodata)
                    assert np.isnan(data).any() and (data[~np.isnan(data)] > 0).all()
    assert directions == {"ASCENDING", "DESCENDING"}


# --------------------------------------------------------------------------- truth vs files


def test_sentinel2_truth_equals_a_nearest_read_of_the_cogs(tiny):
    scenes = [s for s in tiny.s2_scenes if 5 < s.cloud_cover < 95]
    for scene in scenes[len(scenes) // 2 :] + scenes:
        crs, transform, shape = _zone_aligned(scene)
        truth = tiny.s2_truth(scene.id, crs, transform, shape)
        if truth["cloud"].any() and truth["shadow"].any():
            break
    for k, key in enumerate(S2_BANDS):
        with rasterio.open(tiny.asset_path(scene, key)) as src:
            data = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        expected = truth["bands"][..., k]
        assert np.array_equal(data, np.where(expected > 0, expected + scene.boa_offset, 0)), key
    with rasterio.open(tiny.asset_path(scene, "scl")) as src:
        scl = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    assert np.array_equal(scl, truth["scl"])
    # the cloud classes are exactly the generator's clouds, shadows exactly its shadows
    assert truth["cloud"].any()
    assert np.array_equal(np.isin(scl, (8, 9)), truth["cloud"])
    assert np.array_equal(scl == 3, truth["shadow"])
    assert np.array_equal(scl == 0, truth["nodata"])


def test_clouds_are_bright_and_shadows_dark(tiny):
    checked = 0
    for scene in sorted(tiny.s2_scenes, key=lambda s: abs(s.cloud_cover - 50))[:8]:
        assert 0 <= scene.cloud_cover <= 100
        crs, transform, shape = _zone_aligned(scene)
        t = tiny.s2_truth(scene.id, crs, transform, shape)
        clear = t["valid"] & (t["scl"] != 6)
        if t["cloud"].sum() < 50 or t["shadow"].sum() < 50 or clear.sum() < 50:
            continue
        blue = t["bands"][..., S2_BANDS.index("blue")].astype(float)
        nir = t["bands"][..., S2_BANDS.index("nir")].astype(float)
        assert blue[t["cloud"]].mean() > 2 * blue[clear].mean()
        assert nir[t["shadow"]].mean() < 0.6 * nir[clear].mean()
        checked += 1
    assert checked >= 2


def test_scl_classes_and_swath_edges_exist(tiny):
    seen = set()
    partial = 0
    for scene in tiny.s2_scenes:
        with rasterio.open(tiny.asset_path(scene, "scl")) as src:
            scl = src.read(1)
        seen |= set(np.unique(scl).tolist())
        nodata = scl == 0
        if nodata.any() and not nodata.all():
            partial += 1
            with rasterio.open(tiny.asset_path(scene, "red")) as src:
                red = src.read(1)
            # no data in the bands exactly where SCL says so (each 10 m pixel in its 20 m pixel)
            assert np.array_equal(red == 0, np.repeat(np.repeat(nodata, 2, 0), 2, 1))
    assert {0, 3, 4, 5, 6, 8, 9, 10} <= seen
    assert partial >= 5


def test_sentinel1_truth_equals_the_files(tiny):
    scene = tiny.s1_scenes[len(tiny.s1_scenes) // 3]
    g = scene.grids[0]
    truth = tiny.s1_truth(scene.id, scene.crs, g.affine, g.shape)
    for key in ("VV", "VH", "mask"):
        with rasterio.open(tiny.asset_path(scene, key)) as src:
            data = src.read(1)
        expected = truth[key.lower()]
        assert np.array_equal(data, expected, equal_nan=data.dtype.kind == "f"), key
    assert truth["orbit_direction"] == scene.orbit_direction


# --------------------------------------------------------------------------- processing baseline


def test_baseline_offset_on_both_sides_of_2022_01_25(tmp_path):
    """Stored DN - truth is 0 before baseline 04.00 and 1000 from 2022-01-25 on, and the items say so."""
    spec = world_spec(preset="test", year=2022)
    planned = [s for s in plan_scenes(spec) if s.collection == S2_COLLECTION]
    assert {s.processing_baseline for s in planned if s.date < dt.date(2022, 1, 25)} == {"03.01"}
    assert {s.processing_baseline for s in planned if s.date >= dt.date(2022, 1, 25)} == {"05.10"}
    near = [s for s in planned if dt.date(2022, 1, 15) <= s.date <= dt.date(2022, 2, 5) and s.tile == planned[0].tile]
    written = [write_scene(tmp_path, spec, s) for s in near]
    world = World(tmp_path, spec, tuple(written))
    offsets = set()
    for scene in written:
        offset = 1000 if scene.date >= dt.date(2022, 1, 25) else 0
        offsets.add(offset)
        crs, transform, shape = _zone_aligned(scene)
        truth = world.s2_truth(scene.id, crs, transform, shape)
        valid = ~truth["nodata"]
        assert valid.any()
        for key in ("red", "swir16"):
            with rasterio.open(world.asset_path(scene, key)) as src:
                stored = src.read(1, out_shape=shape, resampling=Resampling.nearest).astype(np.int64)
            diff = stored - truth["bands"][..., S2_BANDS.index(key)].astype(np.int64)
            assert set(np.unique(diff[valid]).tolist()) == {offset}
            assert (stored[~valid] == 0).all()
        band = s2_item(scene)["assets"]["red"]["raster:bands"][0]
        assert band["scale"] == 0.0001 and band["offset"] == (-0.1 if offset else 0.0)
    assert offsets == {0, 1000}


# --------------------------------------------------------------------------- tiles, zones, orbits


def test_tiles_overlap_and_cover_the_bbox(tiny):
    from shapely.geometry import Point, box

    tiles = {}
    for s in tiny.s2_scenes:
        tiles.setdefault(s.tile, s)
    assert len(tiles) >= 2
    w, s, e, n = tiny.bbox
    rng = np.random.default_rng(0)
    counts = []
    for lon, lat in zip(rng.uniform(w, e, 200), rng.uniform(s, n, 200)):
        counts.append(sum(box(*sc.bbox).contains(Point(lon, lat)) for sc in tiles.values()))
    counts = np.array(counts)
    assert (counts >= 1).all()
    assert (counts >= 2).mean() > 0.1


def test_zone_crossing_bbox_gets_tiles_of_both_zones_reaching_across():
    spec = world_spec(bbox=(5.97, 52.15, 6.03, 52.18), preset="test")
    tiles = s2_tiles(spec)
    assert {t.zone for t in tiles} == {31, 32}
    assert all(t.name.startswith(str(t.zone)) for t in tiles)
    assert len({t.name for t in tiles}) == len(tiles)
    east31 = max(t.polygon_lonlat().bounds[2] for t in tiles if t.zone == 31)
    west32 = min(t.polygon_lonlat().bounds[0] for t in tiles if t.zone == 32)
    assert east31 > 6.0 > west32  # like real tiles, each zone's reach into the other's longitudes


def test_both_zones_see_the_same_ground_and_clouds(tmp_path):
    spec = world_spec(bbox=CROSSING_BBOX, preset="test")
    planned = [s for s in plan_scenes(spec) if s.collection == S2_COLLECTION]
    # one date, a zone-31 tile and a zone-32 tile
    full_swath = s2_tracks(spec)[0].relative_orbit
    date = next(s.date for s in planned if s.zone == 32 and s.relative_orbit == full_swath)
    pair = [next(s for s in planned if s.date == date and s.zone == z) for z in (31, 32)]
    world = World(tmp_path, spec, tuple(write_scene(tmp_path, spec, s) for s in pair))
    # a 10 m window of zone 31's grid right at the edge, inside both tiles
    grid = zone_grid(31)
    row, col = grid.lonlat_to_pixel(5.999, 52.175)
    window = Window(int(row) - 10, int(col) - 10, 20, 20)
    crs, transform, shape = grid.crs, grid.window_transform(window), window.shape
    a = world.s2_truth(pair[0].id, crs, transform, shape)
    b = world.s2_truth(pair[1].id, crs, transform, shape)
    assert not a["nodata"].any() and not b["nodata"].any()
    assert (a["scl"] == b["scl"]).mean() > 0.9
    red_a, red_b = (t["bands"][..., 0].astype(float) for t in (a, b))
    assert np.median(np.abs(red_a - red_b) / red_a) < 0.05
    with rasterio.open(world.asset_path(pair[1], "red")) as src:
        assert src.crs.to_epsg() == 32632


@pytest.mark.slow
def test_zone_crossing_world_generates(tmp_path):
    world = generate_world(tmp_path / "edge", bbox=CROSSING_BBOX, preset="test", year=2022)
    assert {s.zone for s in world.s2_scenes} == {31, 32}
    assert {s.processing_baseline for s in world.s2_scenes} == {"03.01", "05.10"}
    assert all(world.asset_path(s, "scl").is_file() for s in world.s2_scenes)


def test_sentinel1_passes_in_both_directions_revisit_6_to_12_days(tiny):
    for direction in ("ASCENDING", "DESCENDING"):
        dates = sorted({s.date for s in tiny.s1_scenes if s.orbit_direction == direction})
        gaps = np.diff([d.toordinal() for d in dates])
        assert len(dates) >= 50
        assert 6 <= np.median(gaps) <= 12 and gaps.max() <= 12


def test_sentinel2_revisit_about_five_days(tiny):
    for tile in {s.tile for s in tiny.s2_scenes}:
        dates = sorted({s.date for s in tiny.s2_scenes if s.tile == tile})
        assert np.median(np.diff([d.toordinal() for d in dates])) <= 5
        assert len(dates) >= 70


# --------------------------------------------------------------------------- land cover


def test_land_cover_classes_have_distinct_curves(tiny):
    """Every pair of classes differs in NDVI on some date, but oilseed rape and
    winter cereals, which share a canopy: rape is told apart by its yellow flowers."""
    scene0 = tiny.s2_scenes[0]
    crs, transform, shape = _zone_aligned(scene0)
    lc = tiny.landcover(crs, transform, shape)
    present = set(np.unique(lc).tolist())
    assert len(present) >= 6 and present <= {c.id for c in CLASSES}
    curves = {c: [] for c in present}
    for scene in [s for s in tiny.s2_scenes if s.tile == scene0.tile][::3]:
        t = tiny.s2_truth(scene.id, crs, transform, shape)
        red = t["bands"][..., 0].astype(float)
        nir = t["bands"][..., 3].astype(float)
        ndvi = (nir - red) / np.maximum(nir + red, 1)
        for c in present:
            sel = (lc == c) & t["valid"] & (t["scl"] != 10)
            curves[c].append(np.median(ndvi[sel]) if sel.sum() > 20 else np.nan)
    arr = {c: np.array(v) for c, v in curves.items()}
    ids = sorted(arr)
    name = {c.name: c.id for c in CLASSES}
    lookalikes = {name["winter_cereal"], name["oilseed_rape"]}
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if {a, b} == lookalikes:
                continue
            both = ~np.isnan(arr[a]) & ~np.isnan(arr[b])
            assert np.abs(arr[a][both] - arr[b][both]).max() > 0.1, (a, b)
    # over many parcels: the same canopy, but rape turns yellow (red + green) in spring
    parcels = np.arange(4000, dtype=np.uint64)
    for doy, brighter in ((30, False), (118, True), (250, False)):
        rgb = {c: reflectance(np.full(4000, name[c], np.uint8), parcels, doy, tiny.seed)[:, [0, 2]].sum(1).mean()
               for c in ("oilseed_rape", "winter_cereal")}
        assert (rgb["oilseed_rape"] - rgb["winter_cereal"] > 0.04) == brighter, (doy, rgb)
    if name["water"] in arr:
        assert np.nanmax(arr[name["water"]]) < 0


def test_landcover_is_the_same_ground_from_any_grid(tiny):
    """Defined in lon/lat: a zone-32 grid over the same place sees the same fields."""
    from tessera_ray.grid import transform_points

    lon, lat = (tiny.bbox[0] + tiny.bbox[2]) / 2, (tiny.bbox[1] + tiny.bbox[3]) / 2
    views = {}
    for zone in (31, 32):
        grid = zone_grid(zone)
        row, col = grid.lonlat_to_pixel(lon, lat)
        window = Window(int(row) - 50, int(col) - 50, 100, 100)
        views[zone] = (grid, window, tiny.landcover(grid.crs, grid.window_transform(window), window.shape))
    g31, w31, lc31 = views[31]
    g32, w32, lc32 = views[32]
    x, y = g31.pixel_to_xy(*np.indices(w31.shape).reshape(2, -1) + np.array([[w31.row], [w31.col]]))
    r, c = g32.xy_to_pixel(*transform_points(x, y, g31.crs, g32.crs))
    inside = (r >= w32.row) & (r < w32.row + w32.height) & (c >= w32.col) & (c < w32.col + w32.width)
    assert inside.mean() > 0.5
    same = lc32[r[inside] - w32.row, c[inside] - w32.col] == lc31.ravel()[inside]
    assert same.mean() > 0.85
    assert len(np.unique(lc31)) >= 3


# --------------------------------------------------------------------------- labels and STAC


def test_labels_are_balanced_points_away_from_edges(tiny):
    import geopandas as gpd

    labels = gpd.read_parquet(tiny.labels_path)
    assert labels.crs.to_epsg() == 4326
    assert {"class_id", "class_name", "split", "geometry"} <= set(labels.columns)
    counts = labels.groupby("class_id").size()
    assert len(counts) >= 6 and counts.min() >= 20 and counts.max() == tiny.spec.labels_per_class
    assert set(labels["split"]) == {"train", "test"}
    w, s, e, n = tiny.bbox
    assert labels.geometry.x.between(w, e).all() and labels.geometry.y.between(s, n).all()
    # each point's class is the land cover there, also a few metres away
    from tessera_ray.synthetic.landscape import parcels_at

    for dx in (0.0, 5.0, -5.0):
        lx, ly = tiny.spec.frame.to_local(labels.geometry.x.values, labels.geometry.y.values)
        got = parcels_at(lx + dx, ly - dx, tiny.seed, tiny.spec.parcel_m).class_id
        assert np.array_equal(got, labels["class_id"].values)


def test_stac_items_read_as_pystac_items_with_the_real_properties(tiny):
    import pystac

    s2 = pystac.Item.from_file(str(tiny.item_path(tiny.s2_scenes[5])))
    assert s2.collection_id == S2_COLLECTION
    assert s2.id.startswith(("S2A_", "S2B_")) and s2.id.endswith("_0_L2A")
    raw = json.loads(tiny.item_path(tiny.s2_scenes[5]).read_text())["properties"]
    for key in ("datetime", "platform", "constellation", "proj:code", "proj:epsg", "eo:cloud_cover",
                "s2:processing_baseline", "mgrs:utm_zone", "mgrs:latitude_band", "mgrs:grid_square"):  # fmt: skip
        assert key in raw, key
    assert raw["proj:code"] == f"EPSG:{raw['proj:epsg']}" == s2.properties["proj:code"]
    assert raw["eo:cloud_cover"] == tiny.s2_scenes[5].cloud_cover
    assert set(s2.assets) == set(S2_BANDS) | {"scl"}
    red = s2.assets["red"].to_dict()
    assert red["href"].startswith("cogs/") and (tiny.root / red["href"]).is_file()
    assert red["proj:shape"] == list(tiny.s2_scenes[5].grid(10.0).shape)
    assert red["raster:bands"][0]["nodata"] == 0 and red["raster:bands"][0]["data_type"] == "uint16"
    assert s2.assets["swir16"].to_dict()["proj:shape"] == list(tiny.s2_scenes[5].grid(20.0).shape)

    s1 = pystac.Item.from_file(str(tiny.item_path(tiny.s1_scenes[0])))
    assert s1.collection_id == S1_COLLECTION and s1.id.startswith("OPERA_L2_RTC-S1_T")
    assert {"VV", "VH", "mask"} <= set(s1.assets)
    assert not any("orbit" in k and "relative" not in k for k in s1.properties)
    assert "ASCENDING" not in json.dumps(s1.to_dict()) and "DESCENDING" not in json.dumps(s1.to_dict())
    for collection in (S2_COLLECTION, S1_COLLECTION):
        pystac.Collection.from_file(str(tiny.root / "stac" / collection / "collection.json"))


def test_items_parquet_reads_back_to_the_same_items(tiny):
    import pyarrow.parquet as pq
    import stac_geoparquet.arrow

    table = pq.read_table(tiny.items_parquet)
    items = list(stac_geoparquet.arrow.stac_table_to_items(table))
    assert sorted(i["id"] for i in items) == sorted(s.id for s in tiny.scenes)
    one = next(i for i in items if i["id"] == tiny.s2_scenes[0].id)
    assert one["assets"]["red"]["href"] == tiny.s2_scenes[0].href("red")


# --------------------------------------------------------------------------- the command


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("tessera-ray")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "args",
    [
        ["--bbox", "0.1,52.2,0.15"],
        ["--bbox", "0.1,52.2,0.15,52.1"],
        ["--bbox", "0.1,95,0.15,96"],
        ["--bbox", "0,50,3,53"],
        ["--year", "1999"],
        ["--seed", "-1"],
        ["--preset", "huge"],
    ],
)
def test_synth_command_refuses_bad_input_in_one_line(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["synth", "--out", str(tmp_path / "w"), *args])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("tessera-ray: error:")
    assert not (tmp_path / "w").exists() and list(tmp_path.iterdir()) == []


def test_synth_refuses_to_overwrite_a_folder_that_is_not_a_world(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        cli_main(["synth", "--out", str(tmp_path), "--preset", "test"])
    assert "refusing" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_opening_a_folder_that_is_not_a_world_is_one_clear_error(tmp_path):
    from tessera_ray.errors import UserInputError

    with pytest.raises(UserInputError, match="not a synthetic world"):
        World.open(tmp_path)


def test_defaults_are_the_documented_ones():
    assert DEFAULT_BBOX == (0.10, 52.15, 0.15, 52.20) and DEFAULT_YEAR == 2024
    assert len(CLASSES) >= 6
