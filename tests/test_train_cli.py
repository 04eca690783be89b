"""``tessera-ray train``: in-process and under Ray Train, and its one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helpers import cli_status
from test_train import _write_units

from tessera_ray.grid import zone_grid
from tessera_ray.model import load_encoder

SHORT = ["--variant", "tiny", "--steps", "4", "--batch-size", "32", "--seq-len", "8", "--projector-width", "32",
         "--pool-per-unit", "64", "--warmup", "1", "--threads", "1"]



@pytest.fixture(scope="module")
def units_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-units")
    _write_units(root, n_units=2)
    return root


def _labels_csv(path, units_dir):
    """Labelled points at pixel centres of the two test units (class = the pixel's kind)."""
    rows = []
    for u in range(2):
        meta = json.loads((units_dir / f"unit{u}" / "cube.json").read_text())
        r0, c0 = meta["window"][:2]
        for r in range(0, 12, 2):
            for c in range(0, 12, 3):
                lon, lat = zone_grid(31).pixel_to_lonlat(r0 + r, c0 + c)
                rows.append(f"{float(lon)},{float(lat)},{'ab'[(r * 12 + c + u) % 2]}")
    path.write_text("lon,lat,label\n" + "\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_train_in_process_with_probe(units_dir, tmp_path, capsys):
    labels = _labels_csv(tmp_path / "labels.csv", units_dir)
    out = tmp_path / "run"
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--no-ray", "--labels", str(labels),
                 "--eval-every", "4", *SHORT]) == 0
    assert "trained tiny to step 4" in capsys.readouterr().out
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert "probe_accuracy" in log[-1] and 0 <= log[-1]["probe_accuracy"] <= 1
    assert load_encoder(out / "checkpoint.pt").config.name == "tiny"
    # a second call continues the same run: nothing left to do at step 4 of 4, more steps extend it
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--no-ray", *SHORT[:2], "--steps", "6",
                 *SHORT[4:]]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 6


def test_train_bad_inputs_are_one_line(units_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_status(["train", "--units", str(tmp_path / "nothing"), "--out", str(out), "--no-ray", *SHORT]) != 0
    assert "no unit folders" in capsys.readouterr().err
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--no-ray", *SHORT]) == 0
    capsys.readouterr()
    other = ["--variant", "tiny-torchgru", *SHORT[2:]]
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--no-ray", *other]) != 0
    err = capsys.readouterr().err
    assert "trained as variant 'tiny', not 'tiny-torchgru'" in err and "Traceback" not in err
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--no-ray", "--variant", "huge"]) != 0
    assert "unknown encoder variant 'huge'" in capsys.readouterr().err


@pytest.mark.slow
def test_train_under_ray_train_with_one_cpu_worker(units_dir, tmp_path, ray_cluster, capsys):
    out = tmp_path / "ray-run"
    assert cli_status(["train", "--units", str(units_dir), "--out", str(out), "--workers", "1", *SHORT]) == 0
    assert "trained tiny to step 4" in capsys.readouterr().out
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and any(k.startswith("projector.") for k in state["model_state_dict"])
    assert np.isfinite(json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])["loss"])
