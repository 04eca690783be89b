"""Sentinel-2 and Sentinel-1 rules (pure functions) on small hand-made arrays."""

from datetime import UTC, datetime

import numpy as np

from tessera_ray.sources import sentinel1 as s1
from tessera_ray.sources import sentinel2 as s2


def test_band_order_is_the_models():
    assert s2.BAND_NAMES == ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12")
    assert s2.BAND_KEYS[:4] == ("red", "blue", "green", "nir") and s2.BAND_KEYS[-2:] == ("swir16", "swir22")


def test_scl_mask_rules():
    scl = np.arange(12, dtype=np.uint8)
    assert s2.scl_valid(scl).tolist() == [False, False, False, False, True, True, True, True,
                                          False, False, True, True]


def test_boa_offset_without_baseline_follows_the_date():
    before = datetime(2022, 1, 24, 23, tzinfo=UTC)
    after = datetime(2022, 1, 25, 1, tzinfo=UTC)
    assert s2.boa_offset("sentinel-2-c1-l2a", None, None, before) == 0
    assert s2.boa_offset("sentinel-2-c1-l2a", None, None, after) == 1000


def test_harmonise_keeps_nodata_and_clips():
    dn = np.array([0, 1, 999, 1000, 1001, 65535], dtype=np.uint16)
    assert s2.harmonise(dn, 1000).tolist() == [0, 0, 0, 0, 1, 64535]
    assert s2.harmonise(dn, 0).tolist() == dn.tolist()
    assert s2.harmonise(dn, 1000).dtype == np.uint16


def test_mosaic_first_valid_takes_first_clear_then_first_with_data():
    # pixel 0: A clear -> A; 1: A cloud, B clear -> B; 2: A cloud, B shadow -> A (mask 0)
    # 3: A no data, B cloud -> B (mask 0); 4: both no data -> 0; 5: both clear -> A
    scl_a = np.array([[4, 9, 8, 0, 0, 5]], np.uint8)
    scl_b = np.array([[4, 4, 3, 9, 0, 6]], np.uint8)
    a = np.full((1, 6, 10), 11, np.uint16)
    b = np.full((1, 6, 10), 22, np.uint16)
    a[0, 3] = 0
    bands, mask = s2.mosaic_first_valid([a, b], [scl_a, scl_b])
    assert mask.tolist() == [[1, 1, 0, 0, 0, 1]]
    assert bands[0, :, 0].tolist() == [11, 22, 11, 22, 0, 11]
    owner, _ = s2.mosaic_owner([scl_a, scl_b])
    assert owner.tolist() == [[0, 1, 0, 1, -1, 0]]


def test_doy_is_raw_day_of_year():
    assert s2.day_of_year(datetime(2024, 12, 31, 23, 59)) == 366
    assert s2.day_of_year(datetime(2023, 1, 1)) == 1


def test_s1_int16_formula_exact():
    x = np.array([1.0, 0.1, 0.01, 1e-4, 10.0, 1e-3, 5.0], np.float32)
    q = s1.to_int16(x)
    expected = np.clip((20 * np.log10(x.astype(np.float64)) + 50) * 200, 0, 32767).astype(np.int16)
    assert q.dtype == np.int16
    assert q.tolist() == expected.tolist()
    assert q[0] == 10000 and q[1] == 6000 and q[3] == 0  # 1e-4 -> -80 dB*2 -> clipped to 0


def test_s1_int16_nodata_is_zero():
    x = np.array([np.nan, 0.0, -1.0, np.inf, 1e30], np.float32)
    assert s1.to_int16(x).tolist() == [0, 0, 0, 0, 32767]


def test_orbit_direction_normalised():
    assert s1.orbit_direction("ASCENDING") == s1.ASCENDING
    assert s1.orbit_direction("descending") == s1.DESCENDING
    assert s1.orbit_direction("") is None and s1.orbit_direction(None) is None
    assert s1.orbit_direction("sideways") is None


def test_s1_mosaic_first_burst_with_data():
    a = np.array([[[0, 0], [100, 0], [5, 6]]], np.int16)
    b = np.array([[[7, 8], [200, 300], [9, 9]]], np.int16)
    out = s1.mosaic_first_valid([a, b])
    assert out.tolist() == [[[7, 8], [100, 0], [5, 6]]]
