"""The ``tessera-ray`` process as a user meets it: usage mistakes and interruptions (real subprocesses)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def cli(*argv) -> list[str]:
    return [sys.executable, "-m", "tessera_ray.cli", *map(str, argv)]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["sample", "--bogus"], "No such option: --bogus"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
        (["sample", "--root", "r", "--points", "p.csv", "--out", "o.parquet"], "Missing option '--year'"),
        (
            ["sample", "--root", "r", "--points", "p.csv", "--out", "o.parquet", "--year", "abc"],
            "Invalid value for '--year'",
        ),
        (["serve", ".", "--port", "abc"], "Invalid value for '--port'"),
    ],
    ids=["unknown-option", "unknown-command", "missing-option", "year-abc", "port-abc"],
)
def test_usage_errors_are_one_line_and_exit_2(tmp_path, argv, message):
    proc = subprocess.run(cli(*argv), cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tessera-ray: error: ") and message in lines[0], proc.stderr
    assert "--help" in lines[0]  # where to look next
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def big_root(tmp_path_factory):
    """A 512 x 512 pixel store: exporting it takes seconds, long enough to interrupt."""
    import shapely

    from tessera_ray.grid import Unit
    from tessera_ray.store.testing import build_random_store

    root = tmp_path_factory.mktemp("big-root")
    units = [Unit(31, 4000 + r, 160 + c, 256) for r in range(2) for c in range(2)]
    build_random_store(str(root), units, partial=False)
    bounds = shapely.union_all([u.polygon_lonlat() for u in units]).bounds
    return root, ",".join(f"{v:.6f}" for v in bounds)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code,line", [
    (signal.SIGINT, 130, "tessera-ray: error: interrupted (SIGINT)"),
    (signal.SIGTERM, 143, "tessera-ray: error: terminated (SIGTERM)"),
], ids=["SIGINT", "SIGTERM"])
def test_interrupted_export_exits_128_plus_signal_and_leaves_no_file(big_root, tmp_path, sig, code, line):
    root, bbox = big_root
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = subprocess.Popen(
        cli("export", "--root", root, "--bbox", bbox, "--year", 2024, "--out", out_dir / "region.tif"),
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out_dir.glob("*.partial")):  # the writer has begun its output
            assert proc.poll() is None, f"export ended before it could be interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert stderr.splitlines() == [line], stderr
    assert "wrote" not in stdout
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("how", ["flag-first", "flag-last", "env"])
def test_debug_shows_the_chain_behind_the_one_line_error(tmp_path, how):
    bad = tmp_path / "secret.pt"
    bad.write_bytes(b"not a checkpoint")
    argv = ["model", "info", str(bad)]
    env = cli_env()
    if how == "flag-first":
        argv = ["--debug", *argv]
    elif how == "flag-last":
        argv = [*argv, "--debug"]
    else:
        env["TESSERA_RAY_DEBUG"] = "1"
    quiet = subprocess.run(cli("model", "info", bad), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                           timeout=120)
    loud = subprocess.run(cli(*argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == loud.returncode == 2
    assert quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    # the chain includes the error our one line hid (torch's unpickling error), then the same last line
    assert loud.stderr.count("Traceback") >= 2 and "UnpicklingError" in loud.stderr
    assert loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[-1]
