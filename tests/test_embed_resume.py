"""Kill the embed job in the middle, run it again: the store is byte-identical to an uninterrupted run.

The killed run publishes after every unit (``--publish-every-units 1``) and the
uninterrupted one once at its end: the manifest is the same bytes either way.

Compared: every file under the root except ``manifests/runs/`` (each run's
record, which by design says when and how that run went) and the ``*.tmp``
files a killed atomic put can leave (never read: object listings skip them).
``SOURCE_DATE_EPOCH`` pins the time written into part records and manifests,
as a reproducible build would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from embed_helpers import EPOCH, ONE_BLOCK, embed_args, store_files, write_checkpoint

ROI = "0.120,52.174,0.1245,52.1745"
"""Four 32 px units."""
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_kill_in_the_middle_then_resume_is_byte_identical(world, tmp_path, ray_cluster, monkeypatch, capsys):
    from tessera_ray.cli import main

    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    # the interrupted run: its own driver and local Ray, killed (whole process group) after its first unit
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS")
    # it publishes after every unit: what it published before the kill is what readers see meanwhile
    args = embed_args(world, resumed, checkpoint, ROI, *ONE_BLOCK, "--max-in-flight", "2",
                      "--publish-every-units", "1")[1:]
    log = tmp_path / "killed.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "embed.py"), *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while "published 1 unit(s)" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    text = log.read_text()
    assert "[1/4]" in text and "[4/4]" not in text, text
    assert (resumed / "_parts" / "2024").is_dir()  # it had written something
    # consumers saw units before the job ended: the client reads them from the manifest published mid-run
    from tessera_ray.client import open_root
    from tessera_ray.grid import Unit

    with open_root(str(resumed)) as reader:
        seen = list(reader.units(2024).unit_id)
        assert 1 <= len(seen) < 4, seen
        unit = Unit.from_id(seen[0])
        assert (reader.read_window(unit.zone, unit.window, 2024)[1] < float("inf")).all()

    # the uninterrupted run, and the re-run of the killed one, on the session's Ray
    for out in (reference, resumed):
        try:
            main(embed_args(world, out, checkpoint, ROI, *ONE_BLOCK))
        except SystemExit as exc:
            pytest.fail(f"embed exited {exc.code}: {capsys.readouterr().err}")
    out = capsys.readouterr().out
    assert "units: 4 done, 0 skipped" in out  # the reference
    assert f"units: {4 - len(seen)} done, {len(seen)} skipped (already published)" in out  # the re-run
    assert "unreadable scene" not in out, out
    assert "0 failed of 4" in out.split("units: 4 done")[-1]

    ref, got = store_files(reference), store_files(resumed)
    assert sorted(got) == sorted(ref)
    assert any(k.startswith("tessera.zarr/utm31/embeddings/c/") for k in ref)
    different = [k for k in ref if ref[k] != got[k]]
    assert not different, (different, _describe(reference, resumed))


def _describe(a: Path, b: Path) -> str:
    """Per unit: how many pixels differ (to tell a float wobble from a different input)."""
    import numpy as np

    from tessera_ray.client import open_root
    from tessera_ray.grid import Unit

    lines = []
    with open_root(str(a)) as ra, open_root(str(b)) as rb:
        for unit_id in sorted(ra.units(2024)["unit_id"]):
            u = Unit.from_id(unit_id)
            ea, sa = ra.read_window(u.zone, u.window, 2024)
            eb, sb = rb.read_window(u.zone, u.window, 2024)
            d = np.abs(ea.astype(int) - eb.astype(int))
            lines.append(f"{unit_id}: {(d > 0).any(-1).sum()} px differ (max {d.max()}), "
                         f"nan pattern same: {(np.isnan(sa) == np.isnan(sb)).all()}")
    return "; ".join(lines)
