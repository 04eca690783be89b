"""Zone grids, units, ROIs and 0.1-degree tiles: round trips and edge cases."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, box

from tessera_ray import grid
from tessera_ray.errors import RoiError

lons = st.floats(-179.99, 179.99, allow_nan=False)
lats = st.floats(-79.9, 83.9, allow_nan=False)


def test_utm_zone_edges():
    assert grid.utm_zone(-180.0) == 1
    assert grid.utm_zone(-174.0001) == 1
    assert grid.utm_zone(-174.0) == 2
    assert grid.utm_zone(0.0) == 31
    assert grid.utm_zone(5.9999) == 31
    assert grid.utm_zone(6.0) == 32
    assert grid.utm_zone(179.9999) == 60
    assert grid.utm_zone(180.0) == 1  # the antimeridian wraps


def test_zone_grid_is_fixed_and_shard_aligned():
    g = grid.zone_grid(31)
    assert g.crs == "EPSG:32631" and g.name == "utm31"
    # the central meridian and the equator fall on shard boundaries
    assert (500_000 - grid.ZONE_X0) % (grid.RESOLUTION * 4096) == 0
    assert grid.ZONE_Y0 % (grid.RESOLUTION * 4096) == 0
    assert grid.ZONE_WIDTH % 4096 == 0 and grid.ZONE_HEIGHT % 4096 == 0
    # 20 m Sentinel-2 pixels (tile corners are multiples of 60 m) line up
    assert grid.ZONE_X0 % 20 == 0 and grid.ZONE_Y0 % 20 == 0
    assert grid.zone_grid(31) is grid.zone_grid(31)


def test_southern_hemisphere_uses_northern_code_with_negative_northings():
    g = grid.zone_grid(33)
    x, y = grid.transform_points([15.0], [-30.0], "EPSG:4326", g.crs)
    assert y[0] < 0
    row, col = g.lonlat_to_pixel(15.0, -30.0)
    assert g.contains(row, col).all()


@given(lon=lons, lat=lats)
@settings(max_examples=200, deadline=None)
def test_lonlat_pixel_round_trip(lon, lat):
    zone, row, col = grid.lonlat_to_zone_pixel(lon, lat)
    g = grid.zone_grid(zone)
    assert g.contains(row, col)
    # the pixel centre is within half a pixel diagonal of the point (in UTM)
    cx, cy = g.pixel_to_xy(row, col)
    px, py = grid.transform_points([lon], [lat], "EPSG:4326", g.crs)
    assert abs(cx - px[0]) <= 5.0 + 1e-6 and abs(cy - py[0]) <= 5.0 + 1e-6
    # and maps back to the same pixel
    clon, clat = g.pixel_to_lonlat(row, col)
    r2, c2 = g.lonlat_to_pixel(clon, clat)
    assert (int(r2), int(c2)) == (row, col)


@given(row=st.integers(0, grid.ZONE_HEIGHT - 1), col=st.integers(0, grid.ZONE_WIDTH - 1),
       zone=st.integers(1, 60))
@settings(max_examples=200, deadline=None)
def test_pixel_xy_round_trip(row, col, zone):
    g = grid.zone_grid(zone)
    x, y = g.pixel_to_xy(row, col)
    assert tuple(int(v) for v in g.xy_to_pixel(x, y)) == (row, col)


@given(lon=lons, lat=lats, size=st.sampled_from([256, 512, 4096]))
@settings(max_examples=100, deadline=None)
def test_unit_of_pixel_contains_pixel_and_id_round_trips(lon, lat, size):
    zone, row, col = grid.lonlat_to_zone_pixel(lon, lat)
    unit = grid.unit_of_pixel(zone, row, col, size)
    w = unit.window
    assert w.row <= row < w.row + w.height and w.col <= col < w.col + w.width
    assert grid.Unit.from_id(unit.id) == unit
    # the unit's lon/lat polygon contains the point (edges are densified)
    assert unit.polygon_lonlat().buffer(1e-6).contains(Point(lon, lat))


@given(lon=st.floats(-179.5, 179.4, allow_nan=False), lat=st.floats(-60, 60, allow_nan=False),
       dlon=st.floats(0.0, 0.3), dlat=st.floats(0.0, 0.3))
@settings(max_examples=60, deadline=None)
# a box of subnormal size at (0, 0): its area underflowed and it got no unit
@example(lon=-2.2250738585e-313, lat=2.2250738585e-313, dlon=4.4522694063310636e-141, dlat=4.4522694063310636e-141)
def test_roi_units_cover_every_point_of_the_roi(lon, lat, dlon, dlat):
    roi = grid.roi_from_bbox(lon, lat, lon + dlon, lat + dlat)
    units = set(grid.units_for_roi(roi, size=512))
    assert units
    rng = np.random.default_rng(0)
    for plon, plat in zip(rng.uniform(lon, lon + dlon, 20), rng.uniform(lat, lat + dlat, 20)):
        zone, row, col = grid.lonlat_to_zone_pixel(plon, plat)
        assert grid.unit_of_pixel(zone, row, col, 512) in units


def test_one_pixel_roi_gives_one_unit():
    units = grid.units_for_roi(grid.load_roi("0.12,52.17,0.12,52.17"), size=4096)
    assert len(units) == 1
    zone, row, col = grid.lonlat_to_zone_pixel(0.12, 52.17)
    assert units[0] == grid.unit_of_pixel(zone, row, col)


def test_roi_across_a_zone_edge_gets_units_in_both_zones():
    roi = grid.roi_from_bbox(5.97, 52.15, 6.03, 52.18)
    assert roi.zones() == [31, 32]
    zones = {u.zone for u in grid.units_for_roi(roi, size=256)}
    assert zones == {31, 32}
    # each zone's units only cover that zone's part of the ROI (plus the block)
    for u in grid.units_for_roi(roi, size=256):
        assert u.polygon_lonlat().intersects(roi.in_zone(u.zone))


def test_roi_across_the_equator():
    units = grid.units_for_roi(grid.roi_from_bbox(10.0, -0.01, 10.01, 0.01), size=512)
    rows = {u.row for u in units}
    # the equator is a block boundary: units on both sides
    equator_block = int(grid.ZONE_Y0 / grid.RESOLUTION) // 512
    assert {equator_block - 1, equator_block} <= rows


def test_roi_across_the_antimeridian():
    roi = grid.roi_from_bbox(179.98, -17.0, -179.98, -16.98)
    assert roi.zones() == [1, 60]
    assert {u.zone for u in grid.units_for_roi(roi, size=512)} == {1, 60}
    # the same area drawn with longitudes past 180 gives the same units
    drawn = grid.roi_from_geometry(box(179.98, -17.0, 180.02, -16.98))
    assert grid.units_for_roi(drawn, size=512) == grid.units_for_roi(roi, size=512)


def test_roi_files_in_any_crs(tmp_path):
    lonlat = box(0.10, 52.15, 0.12, 52.16)
    frame = gpd.GeoDataFrame({"name": ["a"]}, geometry=[lonlat], crs="EPSG:4326")
    expected = grid.units_for_roi(grid.roi_from_geometry(lonlat), size=256)
    paths = {
        "roi.geojson": lambda p: frame.to_file(p, driver="GeoJSON"),
        "roi.gpkg": lambda p: frame.to_crs("EPSG:27700").to_file(p, driver="GPKG"),
        "roi.shp": lambda p: frame.to_crs("EPSG:3857").to_file(p),
        "roi.parquet": lambda p: frame.to_crs("EPSG:32631").to_parquet(p),
    }
    for name, write in paths.items():
        write(tmp_path / name)
        got = grid.units_for_roi(grid.load_roi(str(tmp_path / name)), size=256)
        assert got == expected, name
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(shapely.geometry.mapping(lonlat)))
    assert grid.units_for_roi(grid.load_roi(str(bare)), size=256) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("1,2,3", "four numbers"),
        ("0,95,1,96", "south=95"),
        ("0,10,1,5", "north"),
        ("does/not/exist.geojson", "neither a bbox"),
    ],
)
def test_bad_roi_is_one_clear_error(spec, message):
    with pytest.raises(RoiError, match=message):
        grid.load_roi(spec)


def test_unreadable_roi_file(tmp_path):
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(RoiError, match="cannot read ROI file"):
        grid.load_roi(str(bad))


@given(lon=st.floats(-179.9, 179.9, allow_nan=False), lat=st.floats(-79.9, 79.9, allow_nan=False))
@settings(max_examples=100, deadline=None)
def test_tile_of_point(lon, lat):
    tile = grid.tile_of(lon, lat)
    w, s, e, n = tile.bounds
    assert w - 1e-9 <= lon < e + 1e-9 and s - 1e-9 <= lat < n + 1e-9
    assert tile.name == f"grid_{tile.lon:.2f}_{tile.lat:.2f}"
    assert round(tile.lon * 100) % 10 == 5 or round(tile.lon * 100) % 10 == -5
    # the tile's grid is a window of its zone's grid that holds the point's pixel
    g = tile.grid
    row, col = g.lonlat_to_pixel(tile.lon, tile.lat)
    assert tile.window.intersection(grid.Window(int(row), int(col), 1, 1)) is not None
    assert tile.transform.a == 10.0 and tile.transform.e == -10.0


def test_tile_shapes_follow_latitude():
    equator = grid.tile_of(0.55, 0.05).window
    north = grid.tile_of(0.55, 60.05).window
    assert 1100 <= equator.height <= 1130 and 1100 <= equator.width <= 1130
    # 0.1 degree of longitude shrinks with latitude; the grid's convergence
    # away from the central meridian makes the covering window a little taller
    assert 1100 <= north.height <= 1150 and 540 <= north.width <= 610
    assert [t.name for t in grid.tiles_for_bounds(0.1, 52.15, 0.15, 52.2)] == ["grid_0.15_52.15"]
