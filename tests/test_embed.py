"""The embed job through ``tessera-ray embed``: plan, dry run, bad input, a run, resume, a failing unit."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli as run
from embed_helpers import EPOCH, ONE_BLOCK, write_checkpoint
from embed_helpers import embed_args as _embed_args

from tessera_ray.grid import Unit, load_roi, units_for_roi

ROI = "0.124,52.174,0.1245,52.1745"
"""Two 32 px units of the test world."""
UNIT_IDS = ["utm31_32_11363_0665", "utm31_32_11364_0665"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _units_bounds():
    from shapely.ops import unary_union

    return unary_union([Unit.from_id(u).polygon_lonlat() for u in UNIT_IDS]).bounds


def embed_args(world, out, checkpoint, roi=ROI, *extra):
    return _embed_args(world, out, checkpoint, roi, *extra)


def test_plan_covers_the_roi_with_fixed_units():
    from tessera_ray.pipeline.plan import plan_units

    units = plan_units(ROI, 32)
    assert [u.id for u in units] == UNIT_IDS
    roi = load_roi(ROI).geometry
    assert all(u.polygon_lonlat().intersects(roi) for u in units)
    # a bigger ROI contains the same units: units depend on the grid, not on the ROI
    bigger = {u.id for u in units_for_roi(load_roi("0.120,52.174,0.1245,52.1745"), 32)}
    assert set(UNIT_IDS) <= bigger and len(bigger) == 4


def test_dry_run_prints_the_plan_and_writes_nothing(world, checkpoint, tmp_path, capsys):
    out = tmp_path / "root"
    code, stdout, err = run(embed_args(world, out, checkpoint, ROI, "--dry-run"), capsys)
    assert code == 0, err
    assert "to embed: 2 unit(s), 8 block(s) of <= 16 px, 2,048 px" in stdout
    assert "already published (skipped): 0" in stdout
    # the world's own record of its scenes: those whose footprint touches the two units
    from shapely.geometry import Polygon, box

    from tessera_ray.synthetic import World

    units = box(*_units_bounds())
    w = World.open(world)
    n_s2 = sum(Polygon(s.footprint).intersects(units) for s in w.s2_scenes)
    n_s1 = sum(Polygon(s.footprint).intersects(units) for s in w.s1_scenes)
    assert f"scenes: {n_s2} Sentinel-2, {n_s1} Sentinel-1" in stdout
    assert "estimated read (decoded):" in stdout
    assert all(f"unit {u}" in stdout for u in UNIT_IDS)
    assert not out.exists()


def test_flags_come_from_the_environment(world, checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TESSERA_RAY_UNIT_SIZE", "64")
    monkeypatch.setenv("TESSERA_RAY_BLOCK_SIZE", "64")
    args = embed_args(world, tmp_path / "root", checkpoint, ROI, "--dry-run")
    i = args.index("--unit-size")
    del args[i:i + 4]  # no --unit-size/--block-size flags: the environment decides
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert "of 64 px over" in stdout and "block(s) of <= 64 px" in stdout
    # a flag wins over the environment
    code, stdout, _ = run(args + ["--unit-size", "32"], capsys)
    assert "of 32 px over" in stdout


@pytest.mark.parametrize(
    "change, message, exit_code",
    [
        ({"--roi": "0,0,1"}, "bbox", 2),
        ({"--roi": "/no/such/file.geojson"}, "neither a bbox", 2),
        ({"--year": "2016"}, "--year must be 2017", 2),
        ({"--unit-size": "48"}, "multiple of 32", 2),
        ({"--roi": "10.0,45.0,10.001,45.001"}, "no Sentinel-2 scenes", 2),
        ({"--checkpoint": "BAD"}, "checkpoint", 2),
    ],
)
def test_bad_input_is_one_line(world, checkpoint, tmp_path, capsys, change, message, exit_code):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    args = embed_args(world, tmp_path / "root", checkpoint)
    for flag, value in change.items():
        args[args.index(flag) + 1] = str(bad) if value == "BAD" else value
    code, _, err = run(args, capsys)
    assert code == exit_code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera-ray: error:") and message in lines[0], err
    assert not (tmp_path / "root").exists()


def test_unreachable_stac_is_one_line(world, checkpoint, tmp_path, capsys, monkeypatch):
    import socket

    monkeypatch.setenv("TESSERA_RAY_STAC_RETRIES", "0")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = embed_args(world, tmp_path / "root", checkpoint)
    i = args.index("--catalog")
    args[i:i + 2] = ["--stac", f"http://127.0.0.1:{port}"]
    code, _, err = run(args, capsys)
    assert code == 3, err
    assert len(err.strip().splitlines()) == 1 and "127.0.0.1" in err
    assert not (tmp_path / "root").exists()


def _block(out: Path, unit: Unit) -> None:
    """Put a folder where one of the unit's shard objects goes: its writer fails on every try."""
    from tessera_ray.store.layout import shard_key

    (out / shard_key(unit.zone, "scales", 0, unit.row, unit.col) / "in-the-way").mkdir(parents=True)


@pytest.mark.slow
def test_failing_unit_is_reported_then_resumed(world, checkpoint, tmp_path, capsys, ray_cluster, monkeypatch):
    """A unit that keeps failing is left out (exit 5); the re-run does only that unit."""
    from tessera_ray.client import open_root
    from tessera_ray.store import read_manifest
    from tessera_ray.store.layout import shard_key

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    out = tmp_path / "root"
    bad = Unit.from_id(UNIT_IDS[1])
    _block(out, bad)
    code, stdout, err = run(embed_args(world, out, checkpoint, ROI, *ONE_BLOCK), capsys)
    assert code == 5, err
    assert "units: 1 done, 0 skipped (already published), 1 failed of 2" in stdout
    assert f"failed 2024 {bad.id}:" in stdout
    assert err.strip().splitlines()[-1] == (
        "tessera-ray: error: 1 of 2 unit(s) failed and were not published; re-run to retry them")
    assert list(read_manifest(str(out), 2024)["unit_id"]) == [UNIT_IDS[0]]
    records = sorted((out / "manifests" / "runs").glob("2024-*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["units"] == {"asked": 2, "done": 1, "skipped": 0, "failed": 1, "no_scenes": 0}
    assert bad.id in record["failed"]

    # fix the cause and run again: only the failed unit is embedded
    shutil.rmtree(out / "tessera.zarr" / "utm31" / "scales" / "c" / "0" / str(bad.row))
    good = Unit.from_id(UNIT_IDS[0])
    first_shard = out / shard_key(good.zone, "embeddings", 0, good.row, good.col)
    before = first_shard.stat().st_mtime_ns
    code, stdout, err = run(embed_args(world, out, checkpoint, ROI, *ONE_BLOCK), capsys)
    assert code == 0, err
    assert "units: 1 done, 1 skipped (already published), 0 failed of 2" in stdout
    assert first_shard.stat().st_mtime_ns == before
    assert sorted(read_manifest(str(out), 2024)["unit_id"]) == UNIT_IDS

    # and once more: nothing to do, nothing touched
    manifest = out / "manifests" / "2024.parquet"
    stamp = manifest.stat().st_mtime_ns
    code, stdout, err = run(embed_args(world, out, checkpoint, ROI, *ONE_BLOCK), capsys)
    assert code == 0, err
    assert "units: 0 done, 2 skipped (already published), 0 failed of 2" in stdout
    assert manifest.stat().st_mtime_ns == stamp
    assert len(list((out / "manifests" / "runs").glob("2024-*.json"))) == 2

    # what was published is what a reader gets: land pixels valid, the rest of the unit filled
    with open_root(str(out)) as root:
        for unit_id in UNIT_IDS:
            unit = Unit.from_id(unit_id)
            emb, scales = root.read_window(unit.zone, unit.window, 2024)
            assert emb.shape == (32, 32, 128) and emb.dtype == np.int8
            assert not np.isinf(scales).any()  # every pixel of a unit is processed
            assert np.isfinite(scales).mean() > 0.5
            assert (np.abs(emb[np.isfinite(scales)]).max(axis=-1) > 0).all()
    records = [json.loads(p.read_text()) for p in (out / "manifests" / "runs").glob("*.json")]
    # the test world is Earth Search c1 (no boa_offset_applied flag): nothing to disagree with
    assert all(r["scenes"]["s2_offset_flag_disagreed"] == 0 and r["scenes"]["s2"] > 0 for r in records)
    assert all(r["model"]["family"] == "v1" and r["model"]["depths"] == [] for r in records)
    secrets = json.dumps(records)
    assert "AWS_SECRET" not in secrets and os.environ.get("AWS_SECRET_ACCESS_KEY", "\0") not in secrets


@pytest.mark.parametrize(
    "depths, message",
    [
        ("16,32", "--depths needs a Matryoshka encoder family (v2)"),
        ("16,x", "--depths must be a comma-separated list of integers"),
        (",", "--depths is empty"),
    ],
)
def test_depths_for_a_v1_checkpoint_or_malformed_are_one_line(world, checkpoint, tmp_path, capsys, depths, message):
    code, _, err = run(embed_args(world, tmp_path / "root", checkpoint, ROI, "--depths", depths), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tessera-ray: error:") and message in lines[0], err
    assert not (tmp_path / "root").exists()


def test_depths_must_be_prefix_depths_of_the_family():
    from tessera_ray.errors import UserInputError
    from tessera_ray.pipeline.plan import ModelInfo, check_depths

    v2 = ModelInfo("v2-small", "0" * 64, 1, depths=(16, 32, 64, 128))
    assert check_depths((16, 64), v2, "s.pt") == (16, 64)
    for bad in ((24,), (16, 128)):
        with pytest.raises(
            UserInputError, match=rf"--depths: {bad[-1]} is not a Matryoshka prefix depth of v2-small; "
                                  r"it has 16, 32, 64"
        ):
            check_depths(bad, v2, "s.pt")


def test_depths_and_width_come_from_the_encoder_family(tmp_path):
    """The full width is the family's output width, not a constant: a 64-dim family's prefixes stop below 64."""
    from embed_helpers import write_checkpoint

    from tessera_ray.errors import UserInputError
    from tessera_ray.model import get_variant, output_dims
    from tessera_ray.pipeline.plan import ModelInfo, check_checkpoint, check_depths

    narrow = ModelInfo("v2-narrow", "0" * 64, 1, family="v2", depths=(16, 32, 64), dims=64)
    assert check_depths((16, 32), narrow, "n.pt") == (16, 32)
    with pytest.raises(UserInputError, match="64 is not a Matryoshka prefix depth of v2-narrow; it has 16, 32 "
                                             r"\(all 64 dims are always written"):
        check_depths((64,), narrow, "n.pt")
    info = check_checkpoint(str(write_checkpoint(tmp_path / "t.pt", "v2-tiny")), None)
    assert info.dims == output_dims(get_variant("v2-tiny")) and info.depths[-1] == info.dims


@pytest.mark.slow
def test_embed_depths_writes_prefix_arrays_through_the_job(
    world, checkpoint, tmp_path, capsys, ray_cluster, monkeypatch
):
    """The real job with a v2 student and --depths: every published unit has its prefix shards
    recorded, and their codes equal the first K of the full array."""
    from tessera_ray.client import open_root
    from tessera_ray.model import build_encoder, get_variant, save_checkpoint
    from tessera_ray.store import read_manifest
    from tessera_ray.store.layout import shard_key

    student = tmp_path / "student.pt"
    save_checkpoint(build_encoder(get_variant("v2-tiny"), seed=0), student, get_variant("v2-tiny"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    out = tmp_path / "root"
    code, stdout, err = run(embed_args(world, out, student, ROI, "--depths", "16,32"), capsys)
    assert code == 0, err
    manifest = read_manifest(str(out), 2024)
    assert sorted(manifest.unit_id) == UNIT_IDS
    assert (out / "index.html").is_file() and (out / "viewer" / "worker.js").is_file()  # and the browser viewer
    for row in manifest.itertuples():
        unit = Unit.from_id(row.unit_id)
        keys = {o["key"] for o in row.objects}
        assert {shard_key(unit.zone, f"embeddings_d{k}", 0, unit.row, unit.col) for k in (16, 32)} <= keys
    with open_root(str(out)) as root:
        assert root.depths == {16: "embeddings_d16", 32: "embeddings_d32", 128: "embeddings"}
        for unit_id in UNIT_IDS:
            unit = Unit.from_id(unit_id)
            q, s = root.read_window(unit.zone, unit.window, 2024)
            q16, s16 = root.read_window(unit.zone, unit.window, 2024, depth=16)
            assert q16.tobytes() == np.ascontiguousarray(q[..., :16]).tobytes() and np.isfinite(s16).mean() > 0.5
    # a re-run without --depths adopts the store's depths and has nothing to do
    code, stdout, err = run(embed_args(world, out, student), capsys)
    assert code == 0 and "0 done, 2 skipped" in stdout, err
    # another set of depths is refused; so is a non-Matryoshka model writing new units into this store
    code, _, err = run(embed_args(world, out, student, "0.120,52.174,0.1245,52.1745", "--depths", "16"), capsys)
    assert code == 2 and "created with Matryoshka depths 16,32, not 16" in err, err
    code, _, err = run(embed_args(world, out, checkpoint, "0.120,52.174,0.1245,52.1745"), capsys)
    assert code == 2 and "has Matryoshka depths 16,32, which needs a Matryoshka encoder family" in err, err
    assert sorted(read_manifest(str(out), 2024).unit_id) == UNIT_IDS
