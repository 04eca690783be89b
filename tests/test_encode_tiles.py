"""``tessera-ray encode-tiles`` on hand-built tiles in the upstream npy layout.

The semantics tests run ``--in-process`` (no Ray); the pool tests run the
default path on the session's Ray and check it writes the same bytes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cli_helpers import run_cli

from tessera_ray.model import build_encoder, encode_pixels, get_variant, inference_rule, save_checkpoint
from tessera_ray.pipeline.tiles import read_tile

H, W, T = 6, 5, 12


def write_tile(folder, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    masks = (rng.random((T, H, W)) < 0.6).astype(np.uint8)
    asc = rng.integers(1, 30000, (4, H, W, 2)).astype(np.int16)
    desc = rng.integers(1, 30000, (3, H, W, 2)).astype(np.int16)
    masks[:, 0, 0], asc[:, 0, 0], desc[:, 0, 0] = 0, 0, 0  # no observation at all: no data
    arrays = {
        "bands": rng.integers(1, 10000, (T, H, W, 10)).astype(np.uint16), "masks": masks,
        "doys": np.sort(rng.choice(np.arange(1, 367), T, replace=False)).astype(np.uint16),
        "sar_ascending": asc, "sar_ascending_doy": np.array([10, 50, 90, 200], np.int16),
        "sar_descending": desc, "sar_descending_doy": np.array([20, 120, 300], np.int16),
    }
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)


@pytest.fixture
def tiles(tmp_path):
    root = tmp_path / "tiles"
    for i, name in enumerate(("grid_0.05_52.05", "grid_0.15_52.05")):
        write_tile(root / name, i)
    return root


def checkpoint(tmp_path, name):
    config = get_variant(name)
    model = build_encoder(config, seed=1)
    path = tmp_path / f"{name}.pt"
    save_checkpoint(model, path, config)
    return config, model, path


def float_outputs(model, config, pixels, data_source=None):
    rule = inference_rule(config, data_source)
    prepared = rule.prepare(pixels)
    out = np.zeros((prepared.count, 128), np.float32)
    with torch.no_grad():
        for g in prepared.groups:
            out[g.pixels] = model(torch.from_numpy(g.s2), torch.from_numpy(g.s1)).numpy()
    out[prepared.nodata] = np.nan
    return out


def test_int8_float_and_prefix_outputs_match_the_model(tiles, tmp_path, capsys):
    config, model, ck = checkpoint(tmp_path, "v2-tiny")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(out),
                                 "--in-process"], capsys)
    assert code == 0, err
    assert "2 tiles written, 0 already done, 0 failed" in stdout
    for name in ("grid_0.05_52.05", "grid_0.15_52.05"):
        q, scales = np.load(out / f"{name}.npy"), np.load(out / f"{name}_scales.npy")
        assert q.dtype == np.int8 and q.shape == (H, W, 128) and scales.dtype == np.float32 and scales.shape == (H, W)
        want = encode_pixels(model, config, read_tile(tiles / name))
        np.testing.assert_array_equal(q.reshape(-1, 128)[1:], want.embeddings[1:])
        np.testing.assert_array_equal(scales.ravel()[1:], want.scales[1:])
        assert scales[0, 0] == 0 and not q[0, 0].any()  # no data: zeros, scale 0
        assert q.min() >= -127
    # a re-run skips both
    code, stdout, _ = run_cli(["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(out),
                               "--in-process"], capsys)
    assert code == 0 and "0 tiles written, 2 already done" in stdout

    one = tiles / "grid_0.05_52.05"
    expected = float_outputs(model, config, read_tile(one))
    fout = tmp_path / "float"
    assert run_cli(["encode-tiles", str(one), "--checkpoint", str(ck), "--out", str(fout), "--float",
                    "--in-process"], capsys)[0] == 0
    got = np.load(fout / "grid_0.05_52.05.npy")
    assert got.dtype == np.float32 and got.shape == (H, W, 128) and not (fout / "grid_0.05_52.05_scales.npy").exists()
    assert np.isnan(got[0, 0]).all()
    np.testing.assert_allclose(got.reshape(-1, 128)[1:], expected[1:], rtol=1e-5, atol=1e-5)

    dout = tmp_path / "d16"
    assert run_cli(["encode-tiles", str(one), "--checkpoint", str(ck), "--out", str(dout), "--dims", "16",
                    "--in-process"], capsys)[0] == 0
    q16, s16 = np.load(dout / "grid_0.05_52.05.npy"), np.load(dout / "grid_0.05_52.05_scales.npy")
    assert q16.shape == (H, W, 16)
    prefix = expected[1:, :16]
    scale = np.maximum(np.abs(prefix).max(1) / 127, 1e-12)  # the prefix's own scale
    np.testing.assert_allclose(s16.ravel()[1:], scale, rtol=1e-5)
    assert np.abs(q16.reshape(-1, 16)[1:] - np.clip(np.round(prefix / scale[:, None]), -127, 127)).max() <= 1


def test_bad_tiles_and_bad_options_are_one_line(tiles, tmp_path, capsys):
    _, _, ck = checkpoint(tmp_path, "v2-tiny")
    _, _, v11 = checkpoint(tmp_path, "tiny-v1.1")
    broken = tiles / "grid_0.05_52.05" / "bands.npy"
    broken.write_bytes(broken.read_bytes()[:500])  # truncated
    out = tmp_path / "out"
    code, stdout, err = run_cli(["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(out),
                                 "--in-process"], capsys)
    assert code == 5 and str(broken) in err and "Traceback" not in err
    assert (out / "grid_0.15_52.05.npy").is_file() and not (out / "grid_0.05_52.05.npy").exists()
    assert not list(out.glob(".*partial"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in (
        ([str(empty), "--checkpoint", str(ck)], "holds no tiles"),
        ([str(tiles / "grid_0.15_52.05"), "--checkpoint", str(v11), "--dims", "16", "--data-source", "aws"],
         "dims are not ordered"),
        ([str(tiles / "grid_0.15_52.05"), "--checkpoint", str(ck), "--dims", "24"], "no such Matryoshka prefix"),
        ([str(tiles / "grid_0.15_52.05"), "--checkpoint", str(v11)], "--data-source aws|mpc"),
    ):
        code, _, err = run_cli(["encode-tiles", *argv, "--out", str(tmp_path / "o2")], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], err
    # v1.1 with its data source runs
    code, _, err = run_cli(["encode-tiles", str(tiles / "grid_0.15_52.05"), "--checkpoint", str(v11),
                            "--data-source", "mpc", "--out", str(tmp_path / "v11"), "--in-process"], capsys)
    assert code == 0, err


def tree_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("variant, flags", [
    ("v2-tiny", []), ("v2-tiny", ["--float"]), ("v2-tiny", ["--dims", "16"]),
    ("tiny-torchgru", []),  # v1.0's seeded random draw: per-pixel keys must survive the chunking
])
def test_pool_writes_the_same_bytes_as_in_process(ray_cluster, tiles, tmp_path, capsys, variant, flags):
    _, _, ck = checkpoint(tmp_path, variant)
    local, pooled = tmp_path / "local", tmp_path / "pool"
    code, _, err = run_cli(["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(local),
                            "--in-process", *flags], capsys)
    assert code == 0, err
    # chunks of 2 rows: 3 read tasks and actor requests per tile, batched on the actor with the other tile's
    code, stdout, err = run_cli(["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(pooled),
                                 "--chunk-pixels", "10", "--batch-size", "16", *flags], capsys)
    assert code == 0, err
    assert "2 tiles written, 0 already done, 0 failed" in stdout
    assert "encode-tiles: [2/2]" in err  # the progress lines (plain: not a terminal)
    assert tree_bytes(pooled) == tree_bytes(local)
    assert len(tree_bytes(pooled)) == (2 if "--float" in flags else 4)


def test_pool_skips_done_tiles_and_reports_each_broken_one(ray_cluster, tiles, tmp_path, capsys):
    _, _, ck = checkpoint(tmp_path, "v2-tiny")
    write_tile(tiles / "grid_0.25_52.05", 2)
    write_tile(tiles / "grid_0.35_52.05", 3)
    out = tmp_path / "out"
    args = ["encode-tiles", str(tiles), "--checkpoint", str(ck), "--out", str(out), "--chunk-pixels", "10"]
    code, stdout, err = run_cli(args + ["--in-process"], capsys)  # all four done, then two broken
    assert code == 0, err
    done = tree_bytes(out)
    for name in ("grid_0.25_52.05", "grid_0.35_52.05", "grid_0.05_52.05"):
        (out / f"{name}.npy").unlink()
        (out / f"{name}_scales.npy").unlink()
    truncated = tiles / "grid_0.25_52.05" / "masks.npy"
    truncated.write_bytes(truncated.read_bytes()[:200])  # found by the driver's header check
    bad_doys = tiles / "grid_0.35_52.05" / "doys.npy"
    np.save(bad_doys, np.full(T, 400, np.uint16))  # found inside a read task, on Ray
    code, stdout, err = run_cli(args, capsys)
    assert code == 5 and "Traceback" not in err, err
    assert "1 tiles written, 1 already done, 2 failed" in stdout
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == 2 and any(str(truncated) in line for line in failed), err
    assert any(f"] grid_0.35_52.05 FAILED: {bad_doys}: s2_doys holds a day of year outside 1..366, " in line
               for line in failed), err
    assert "ray::" not in err and "RayTaskError" not in err
    assert err.strip().splitlines()[-1].startswith("tessera-ray: error: 2 of 4 tiles failed")
    got = tree_bytes(out)
    assert set(got) == {f"grid_0.{i}5_52.05{s}.npy" for i in (0, 1) for s in ("", "_scales")}
    assert all(got[name] == done[name] for name in got)
    # nothing left to do: no Ray, no pool
    code, stdout, _ = run_cli(["encode-tiles", str(tiles / "grid_0.05_52.05"), "--checkpoint", str(ck),
                               "--out", str(out)], capsys)
    assert code == 0 and "0 tiles written, 1 already done" in stdout
