"""read_cube on hand-made scenes: mosaic order, offset, skipped COGs, an outage that fails the read, orbit split."""

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from cog_helpers import utm_transform, write_cog

from tessera_ray.grid import Window, zone_grid
from tessera_ray.serve import StaticServer
from tessera_ray.sources import sentinel1, sentinel2
from tessera_ray.sources.cog import AssetUnavailable, ReaderEnv
from tessera_ray.sources.read import Block, ReadConfig, read_cube
from tessera_ray.sources.scenes import S1, S2, Asset, Scene

ZONE = 31
ROW, COL = 442_080, 40_960
G = zone_grid(ZONE)
CONFIG = ReadConfig(max_requests=4, env=ReaderEnv(retries=0, retry_delay=0.0))
TEN_M = {"red", "blue", "green", "nir"}


def _corner(row, col):
    x, y = G.pixel_to_xy(row, col)
    return float(x) - 5, float(y) + 5


def _bbox(row, col, h, w):
    poly = G.window_polygon_lonlat(Window(row, col, h, w))
    return tuple(poly.bounds)


def s2_scene(tmp, sid, when, scl10, value, baseline="03.01", offset=0, row=ROW, col=COL):
    """A 32x32 px (10 m) tile at (row, col); ``scl10`` is given at 10 m on 2x2 blocks; band b = value + b."""
    x0, y0 = _corner(row, col)
    scl20 = scl10[::2, ::2]
    assets = []
    for b, key in enumerate(sentinel2.BAND_KEYS):
        res = 10 if key in TEN_M else 20
        n = 32 if res == 10 else 16
        data = np.full((n, n), value + b, np.uint16)
        p = write_cog(tmp / sid / f"{key}.tif", data, G.crs, utm_transform(x0, y0, res), nodata=0, blocksize=16)
        assets.append(Asset(key, str(p)))
    p = write_cog(tmp / sid / "scl.tif", scl20.astype(np.uint8), G.crs, utm_transform(x0, y0, 20), nodata=0,
                  blocksize=16)
    assets.append(Asset("scl", str(p)))
    return Scene(sid, "sentinel-2-c1-l2a", S2, when, G.crs, _bbox(row, col, 32, 32), tuple(assets),
                 processing_baseline=baseline, boa_offset=offset)


def s1_scene(tmp, sid, when, vv, vh, direction):
    x0, y0 = _corner(ROW, COL)
    tags = {"ORBIT_PASS_DIRECTION": direction} if direction else None
    assets = []
    for pol, data in (("VV", vv), ("VH", vh)):
        p = write_cog(tmp / sid / f"{sid}_{pol}.tif", np.full((11, 11), data, np.float32), G.crs,
                      utm_transform(x0, y0, 30), nodata=np.nan, tags=tags, blocksize=16)
        assets.append(Asset(pol, str(p)))
    return Scene(sid, "OPERA_L2_RTC-S1_V1", S1, when, G.crs, _bbox(ROW, COL, 33, 33), tuple(assets))


def _t(day, hour=10):
    return datetime(2022, 3, day, hour, tzinfo=UTC)


def test_mosaic_first_clear_scene_wins_and_offset_applies(tmp_path):
    clear = np.full((32, 32), 4, np.uint8)
    cloudy_left = clear.copy()
    cloudy_left[:, :16] = 9
    a = s2_scene(tmp_path, "A", _t(1, 10), cloudy_left, 2000, baseline="04.00", offset=1000)
    b = s2_scene(tmp_path, "B", _t(1, 11), clear, 3000)
    c = s2_scene(tmp_path, "C", _t(7), cloudy_left, 5000)
    block = Block(ZONE, Window(ROW + 4, COL + 6, 20, 20))
    cube = read_cube(block, [c, b, a], CONFIG)
    assert cube.doys.tolist() == [60, 66]
    # date 1: A (first) clear on the right half, harmonised by -1000; B fills A's cloudy left half
    left, right = slice(0, 10), slice(10, 20)  # block col 6+10 = tile col 16: the cloud edge
    assert (cube.bands[0, :, right, 0] == 1000).all() and (cube.bands[0, :, right, 9] == 1009).all()
    assert (cube.bands[0, :, left, 0] == 3000).all()
    assert cube.masks[0].all()
    # date 2: only C, cloudy on the left: recorded with mask 0
    assert (cube.masks[1][:, left] == 0).all() and (cube.masks[1][:, right] == 1).all()
    assert (cube.bands[1, :, left, 3] == 5003).all()
    assert cube.skipped_scenes == ()


def test_corrupt_cog_is_skipped_and_reported(tmp_path):
    clear = np.full((32, 32), 4, np.uint8)
    a = s2_scene(tmp_path, "A", _t(1, 10), clear, 2000)
    b = s2_scene(tmp_path, "B", _t(1, 11), clear, 3000)
    nir = tmp_path / "A" / "nir.tif"
    nir.write_bytes(nir.read_bytes()[:300])
    cube = read_cube(Block(ZONE, Window(ROW, COL, 16, 16)), [a, b], CONFIG)
    assert cube.skipped_scenes == ("A",)
    assert (cube.bands[0, ..., 0] == 3000).all() and cube.masks[0].all()


def _served(scene, server, root):
    """The scene with its assets' hrefs on ``server`` (which serves ``root``)."""
    assets = tuple(replace(a, href=f"{server.url}/{Path(a.href).relative_to(root).as_posix()}") for a in scene.assets)
    return replace(scene, assets=assets)


def test_outage_fails_the_read_instead_of_leaving_the_scene_out(tmp_path):
    """A scene whose asset the server does not deliver is not skipped: the cube would depend on the outage."""
    clear = np.full((32, 32), 4, np.uint8)
    scenes = [s2_scene(tmp_path, "A", _t(1, 10), clear, 2000), s2_scene(tmp_path, "B", _t(1, 11), clear, 3000)]
    nir = tmp_path / "A" / "nir.tif"
    block = Block(ZONE, Window(ROW, COL, 16, 16))
    config = replace(CONFIG, env=replace(CONFIG.env, gdal=CONFIG.env.gdal + (("GDAL_HTTP_MAX_RETRY", "0"),)))
    with StaticServer(tmp_path) as server:
        served = [_served(s, server, tmp_path) for s in scenes]
        with server.failing(None, 503, "/A/nir.tif"), pytest.raises(AssetUnavailable, match="A/nir.tif"):
            read_cube(block, served, config)
        nir.write_bytes(nir.read_bytes()[:300])  # the same scene with a corrupt asset is left out and reported
        cube = read_cube(block, served, config)
    assert cube.skipped_scenes == ("A",)
    assert (cube.bands[0, ..., 0] == 3000).all()


def test_scene_outside_the_block_is_not_read(tmp_path):
    clear = np.full((32, 32), 4, np.uint8)
    far = s2_scene(tmp_path, "FAR", _t(2), clear, 2000, row=ROW + 5000, col=COL + 5000)
    (tmp_path / "FAR" / "scl.tif").write_bytes(b"corrupt")  # would be skipped if it were read
    cube = read_cube(Block(ZONE, Window(ROW, COL, 8, 8)), [far], CONFIG)
    assert cube.doys.size == 0 and cube.skipped_scenes == ()


def test_s1_orbit_split_int16_and_unknown_counted(tmp_path):
    asc = s1_scene(tmp_path, "S1A", _t(3), 0.1, 0.01, "ASCENDING")
    desc = s1_scene(tmp_path, "S1D", _t(4), 1.0, 0.05, "DESCENDING")
    unknown = s1_scene(tmp_path, "S1U", _t(5), 0.2, 0.02, None)
    cube = read_cube(Block(ZONE, Window(ROW + 3, COL + 3, 12, 12)), [asc, desc, unknown], CONFIG)
    assert cube.sar_ascending_doy.tolist() == [62] and cube.sar_descending_doy.tolist() == [63]
    expect = sentinel1.to_int16(np.array([0.1, 0.01], np.float32))
    assert (cube.sar_ascending[0] == expect).all()
    assert (cube.sar_descending[0] == sentinel1.to_int16(np.array([1.0, 0.05], np.float32))).all()
    assert cube.unknown_orbit == ("S1U",)
