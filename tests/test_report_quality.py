"""jobs/report_quality.py: user mistakes end in one line before any work is done."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

JOB = Path(__file__).resolve().parents[1] / "jobs" / "report_quality.py"


def run_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(JOB), *args], capture_output=True, text=True, timeout=300)


def test_missing_checkpoint_is_one_line_before_the_world_is_built(tmp_path):
    world = tmp_path / "world"
    done = run_job("--checkpoint", str(tmp_path / "absent.pt"), "--world", str(world),
                   "--results", str(tmp_path / "results"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"tessera-ray: error: checkpoint not found: {tmp_path / 'absent.pt'}"]
    assert not world.exists() and not (tmp_path / "results").exists()


def test_unknown_recipe_field_is_refused(tmp_path):
    done = run_job("--set", "no_such_field=1", "--world", str(tmp_path / "world"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--set" in done.stderr.splitlines()[-1] and "no_such_field" in done.stderr
    assert not (tmp_path / "world").exists()


def test_depth_rows_for_a_matryoshka_encoder(world, tmp_path):
    import json

    from tessera_ray.model import build_encoder, save_checkpoint
    from tessera_ray.model.family import get_variant

    config = get_variant("v2-tiny")
    checkpoint = tmp_path / "v2-tiny.pt"
    save_checkpoint(build_encoder(config, seed=1), checkpoint, config)
    results = tmp_path / "results"
    done = run_job("--checkpoint", str(checkpoint), "--world", str(world), "--out", str(tmp_path / "model"),
                   "--results", str(results))
    assert done.returncode == 0, done.stderr
    assert "Matryoshka depths" in done.stdout
    for name in ("trained", "random"):
        for depth in (16, 32, 64, 128):
            assert re.search(rf"^\| {name} \| {depth} \| \d\.\d{{3}} ", done.stdout, re.M), (name, depth)
    record = json.loads((results / "report_quality.json").read_text())
    assert set(record["depths"]["trained"]) == {"16", "32", "64", "128"}
    assert {"1", "10"} <= set(record["depths"]["trained"]["16"])  # the test world has too few for 40
    # the full width is the main table's probe (the same label draws)
    assert record["depths"]["trained"]["128"]["10"]["accuracy"] == record["results"]["trained"]["10"]["accuracy"]
