"""jobs/report_quality.py: user mistakes end in one line before any work is done."""

from __future__ import annotations

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
