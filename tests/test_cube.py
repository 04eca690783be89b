"""TimeSeriesCube: the upstream npy layout, merging blocks, the grid GeoTIFF."""

import numpy as np
import pytest
import rasterio

from tessera_ray.cube import TimeSeriesCube, merge_npy
from tessera_ray.grid import Unit, Window, zone_grid


def _cube(window, s2_days, asc_days=(), desc_days=(), zone=31, seed=0, skipped=()):
    rng = np.random.default_rng(seed)
    h, w = window.shape
    t, ta, td = len(s2_days), len(asc_days), len(desc_days)
    return TimeSeriesCube(
        bands=rng.integers(1, 5000, (t, h, w, 10)).astype(np.uint16),
        masks=rng.integers(0, 2, (t, h, w)).astype(np.uint8),
        doys=np.array(s2_days, np.uint16),
        sar_ascending=rng.integers(1, 30000, (ta, h, w, 2)).astype(np.int16),
        sar_ascending_doy=np.array(asc_days, np.int16),
        sar_descending=rng.integers(1, 30000, (td, h, w, 2)).astype(np.int16),
        sar_descending_doy=np.array(desc_days, np.int16),
        zone=zone,
        window=window,
        skipped_scenes=tuple(skipped),
    )


def test_save_load_roundtrip_upstream_layout(tmp_path):
    unit = Unit(31, 100, 20, 16)
    cube = _cube(unit.window, [5, 17, 300], [3], [9, 21], skipped=["bad-scene"])
    out = cube.save_npy(tmp_path / unit.id)
    expected = {
        "bands.npy": (np.uint16, (3, 16, 16, 10)),
        "masks.npy": (np.uint8, (3, 16, 16)),
        "doys.npy": (np.uint16, (3,)),
        "sar_ascending.npy": (np.int16, (1, 16, 16, 2)),
        "sar_ascending_doy.npy": (np.int16, (1,)),
        "sar_descending.npy": (np.int16, (2, 16, 16, 2)),
        "sar_descending_doy.npy": (np.int16, (2,)),
    }
    for name, (dtype, shape) in expected.items():
        arr = np.load(out / name)
        assert arr.dtype == dtype and arr.shape == shape, name
    back = TimeSeriesCube.load_npy(out)
    for name in ("bands", "masks", "doys", "sar_descending", "sar_descending_doy"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cube, name))
    assert back.window == unit.window and back.zone == 31 and back.skipped_scenes == ("bad-scene",)
    with rasterio.open(out / "grid.tif") as grid:
        assert grid.crs.to_epsg() == 32631
        assert grid.transform == unit.transform
        assert grid.shape == (16, 16)
        np.testing.assert_array_equal(grid.read(1), cube.masks.sum(axis=0))
    assert not list(tmp_path.glob(".*partial"))


def test_wrong_dtype_or_shape_is_refused():
    w = Window(0, 0, 4, 4)
    good = _cube(w, [1])
    with pytest.raises(ValueError, match="bands"):
        TimeSeriesCube(**{**good.__dict__, "bands": good.bands.astype(np.int32)})
    with pytest.raises(ValueError, match="masks"):
        TimeSeriesCube(**{**good.__dict__, "masks": good.masks[:, :3]})


def test_merge_unions_dates_and_places_blocks():
    whole = Window(40, 80, 6, 8)
    left, right = list(whole.blocks(4))[:2]  # (40,80,4,4), (40,84,4,4)
    a = _cube(left, [10, 20], [5], [], seed=1)
    b = _cube(right, [20, 30], [], [7], seed=2, skipped=["x"])
    merged = TimeSeriesCube.merge([a, b], Window(40, 80, 4, 8))
    assert merged.doys.tolist() == [10, 20, 30]
    np.testing.assert_array_equal(merged.bands[0, :, :4], a.bands[0])
    np.testing.assert_array_equal(merged.bands[1, :, :4], a.bands[1])
    np.testing.assert_array_equal(merged.bands[1, :, 4:], b.bands[0])
    assert not merged.bands[0, :, 4:].any() and not merged.masks[2, :, :4].any()
    assert merged.sar_ascending_doy.tolist() == [5] and merged.sar_descending_doy.tolist() == [7]
    assert merged.skipped_scenes == ("x",)


def test_merge_npy_equals_in_memory_merge(tmp_path):
    whole = Window(0, 0, 8, 8)
    blocks = [_cube(w, [i + 1, 50], [i + 2], [60], seed=i) for i, w in enumerate(whole.blocks(4))]
    dirs = [b.save_npy(tmp_path / f"b{i}") for i, b in enumerate(blocks)]
    out = merge_npy(dirs, tmp_path / "unit", whole)
    ref = TimeSeriesCube.merge(blocks, whole)
    got = TimeSeriesCube.load_npy(out)
    for name in ("bands", "masks", "doys",
                 "sar_ascending", "sar_ascending_doy", "sar_descending", "sar_descending_doy"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)


def test_without_empty_dates_drops_only_dates_without_data():
    w = Window(0, 0, 2, 2)
    cube = _cube(w, [1, 2, 3], [4, 5], [])
    bands = cube.bands.copy()
    masks = cube.masks.copy()
    bands[1] = 0
    masks[1] = 0
    sar = cube.sar_ascending.copy()
    sar[0] = 0
    c = TimeSeriesCube(**{**cube.__dict__, "bands": bands, "masks": masks, "sar_ascending": sar})
    d = c.without_empty_dates()
    assert d.doys.tolist() == [1, 3] and d.sar_ascending_doy.tolist() == [5]


def test_transform_and_crs_come_from_the_zone_grid():
    cube = _cube(Window(7, 9, 2, 3), [1], zone=44)
    assert cube.crs == "EPSG:32644"
    assert cube.transform == zone_grid(44).window_transform(Window(7, 9, 2, 3))
