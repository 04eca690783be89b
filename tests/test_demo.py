"""``tessera-ray demo`` end to end (on the small test world, copied in as DIR/world so it is reused)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def demo(out: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tessera_ray.cli", "demo", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=500)
    return done, time.monotonic() - start


@pytest.mark.slow
def test_demo_publishes_serves_and_samples_then_reuses(world, tmp_path):
    from tessera_ray.client import open_root
    from tessera_ray.store import read_manifest

    out = tmp_path / "tessera-demo"
    shutil.copytree(world, out / "world")

    first, first_s = demo(out)
    assert first.returncode == 0, first.stderr[-3000:]
    report = first.stdout
    embedded = int(re.search(r"units\s+(\d+) embedded, 0 reused", report).group(1))
    assert embedded >= 1
    manifest = read_manifest(str(out), 2024)
    assert len(manifest) == embedded
    assert (out / "tessera.zarr" / "zarr.json").is_file() and (out / "model").is_dir()
    points = re.search(r"labels\s+(\d+) of (\d+) labelled points read back over HTTP", report)
    assert points and int(points.group(1)) > 0
    assert "tessera-ray serve" in report and "GeoTesseraZarr" in report and "read_parquet(" in report
    # the browser viewer is published with the root, and the report says where
    assert (out / "index.html").is_file() and (out / "viewer" / "worker.js").is_file()
    assert "index.html?labels=world/labels.parquet" in report
    # the root is a real published root: what the report says is there, is there
    with open_root(str(out)) as root:
        assert sorted(root.units(2024)["unit_id"]) == sorted(manifest["unit_id"])
        # the demo's v2 student publishes its Matryoshka prefixes
        assert root.depths == {16: "embeddings_d16", 32: "embeddings_d32", 64: "embeddings_d64", 128: "embeddings"}

    second, second_s = demo(out)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"units       0 embedded, {embedded} reused" in second.stdout
    assert second_s < first_s
    print(f"demo on the test world: first run {first_s:.1f} s, second {second_s:.1f} s")


def test_demo_refuses_a_world_built_by_an_older_generator(world, tmp_path, capsys):
    """Its files no longer match the truth functions: a clear line, nothing built beside it."""
    import json

    from cli_helpers import run_cli

    out = tmp_path / "old-demo"
    shutil.copytree(world, out / "world")
    doc = json.loads((out / "world" / "world.json").read_text())
    doc["format"] = 1
    (out / "world" / "world.json").write_text(json.dumps(doc))
    code, _, err = run_cli(["demo", "--out", str(out)], capsys)
    assert code == 2
    assert "older tessera-ray (world format 1" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["world"]
