"""``tessera-ray ingest`` end to end on Ray, and its answers to bad input."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from cli_helpers import run_cli as _run

from tessera_ray.cube import TimeSeriesCube
from tessera_ray.grid import Unit, roi_from_bbox, units_for_roi


def _roi(world_root):
    from tessera_ray.synthetic import World

    w, s, e, n = World.open(world_root).bbox
    return f"{w + 0.004},{s + 0.003},{w + 0.009},{s + 0.006}", World.open(world_root).year


@pytest.mark.slow
def test_ingest_writes_one_folder_per_unit_in_the_upstream_layout(world, stac_api, ray_cluster, tmp_path, capsys):
    roi, year = _roi(world)
    out = tmp_path / "out"
    code, stdout, err = _run(["ingest", "--stac", stac_api.url, "--roi", roi, "--year", str(year), "--format", "npy",
                              "--out", str(out), "--unit-size", "64", "--block-size", "32"], capsys)
    assert code == 0, err
    units = units_for_roi(roi_from_bbox(*map(float, roi.split(","))), 64)
    assert sorted(p.name for p in out.iterdir()) == sorted(u.id for u in units)
    assert "wrote" in stdout
    for unit in units:
        cube = TimeSeriesCube.load_npy(out / unit.id)
        assert cube.window == Unit.from_id(unit.id).window
        assert cube.bands.shape[1:] == (64, 64, 10) and cube.doys.size > 10
        assert cube.sar_ascending.shape[0] + cube.sar_descending.shape[0] > 0
        assert np.all(np.diff(cube.doys.astype(int)) > 0)
    # the stitched unit equals reading it in one piece
    from datetime import date

    from tessera_ray.sources.read import read_cube
    from tessera_ray.sources.scenes import EARTH_SEARCH_C1, OPERA_RTC
    from tessera_ray.sources.stac import search_scenes

    bbox = tuple(map(float, roi.split(",")))
    scenes = [*search_scenes(EARTH_SEARCH_C1, bbox, date(year, 1, 1), date(year, 12, 31), url=stac_api.url),
              *search_scenes(OPERA_RTC, bbox, date(year, 1, 1), date(year, 12, 31), url=stac_api.url)]
    whole = read_cube(units[0], scenes)
    got = TimeSeriesCube.load_npy(out / units[0].id)
    np.testing.assert_array_equal(got.bands, whole.bands)
    np.testing.assert_array_equal(got.masks, whole.masks)
    # S1 is warped (30 m bilinear): GDAL's float arithmetic depends on the window's origin, so a block
    # edge may move a value across an int16 step; never by more
    assert got.sar_descending.shape == whole.sar_descending.shape
    assert np.abs(got.sar_descending.astype(int) - whole.sar_descending).max() <= 1
    assert not (out / ".blocks").exists()


def test_roi_without_scenes_warns_and_writes_nothing(world, stac_api, tmp_path, capsys):
    out = tmp_path / "empty"
    code, stdout, err = _run(["ingest", "--stac", stac_api.url, "--roi", "20.0,10.0,20.01,10.01", "--year", "2024",
                              "--out", str(out)], capsys)
    assert code == 0
    assert "warning: no Sentinel-2 or Sentinel-1 scenes" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_unreachable_stac_api_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_RAY_STAC_RETRIES", "2")
    monkeypatch.setenv("TESSERA_RAY_STAC_BACKOFF", "0.01")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    code, _, err = _run(["ingest", "--stac", f"http://127.0.0.1:{port}", "--roi", "0.1,52.1,0.11,52.11",
                         "--year", "2024", "--out", str(tmp_path / "o")], capsys)
    assert code == 3
    assert err.startswith("tessera-ray: error: STAC API") and "unreachable after 2 retries" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("year", ["2016", "2999"])
def test_year_outside_the_sentinel_era_is_refused(year, tmp_path, capsys):
    code, _, err = _run(["ingest", "--roi", "0.1,52.1,0.11,52.11", "--year", year, "--out", str(tmp_path / "o")],
                        capsys)
    assert code == 2 and "--year must be 2017.." in err and len(err.strip().splitlines()) == 1


def test_catalog_snapshot_gives_the_same_scenes_as_the_api(world, stac_api):
    from datetime import date

    from tessera_ray.commands.ingest import _search
    from tessera_ray.synthetic import World

    w = World.open(world)
    via_api = _search(w.bbox, w.year, stac_api.url, None, None, None, "sentinel-2-c1-l2a", None)
    via_file = _search(w.bbox, w.year, None, None, str(world / "stac" / "items.parquet"), None,
                       "sentinel-2-c1-l2a", None)
    assert sorted(s.id for s in via_api) == sorted(s.id for s in via_file)
    assert {s.kind for s in via_file} == {"s2", "s1"}
    assert date(w.year, 1, 1) <= min(s.date for s in via_file)
