"""The viewer's built assets: shipped in the package, the ones its sources build, written into roots."""

from __future__ import annotations

import filecmp
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_helpers import run_cli

from tessera_ray.grid import Unit
from tessera_ray.store.testing import build_random_store
from tessera_ray.viewer import asset_files, publish_viewer

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "tessera_ray" / "viewer_assets"

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


def test_the_package_ships_the_page_and_what_it_references():
    files = dict(asset_files())
    assert list(files)[-1] == "index.html"  # written last: the page appears once its scripts are there
    assert set(files) == {"index.html", "viewer/viewer.js", "viewer/worker.js", "viewer/viewer.css"}
    html = files["index.html"].decode()
    referenced = set(re.findall(r'(?:src|href)="(viewer/[^"]+)"', html))
    assert referenced == {"viewer/viewer.js", "viewer/viewer.css"}
    assert b'"worker.js"' in files["viewer/viewer.js"]  # the page starts its worker beside itself
    assert "viewer_assets/*.html" in (REPO / "pyproject.toml").read_text()  # package data


def test_the_committed_bundle_is_what_the_sources_build(tmp_path):
    """Rebuild with the locked npm packages (scripts/setup dev runs npm ci) and compare byte for byte."""
    node = shutil.which("node")
    if node is None or not (REPO / "viewer" / "node_modules" / "esbuild").is_dir():
        pytest.fail(
            "rebuilding the viewer needs Node.js and viewer/node_modules (scripts/setup dev, or npm ci in viewer/)"
        )
    run = subprocess.run(
        [node, "build.mjs", str(tmp_path)], cwd=REPO / "viewer", capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    built = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(ASSETS).as_posix() for p in ASSETS.rglob("*") if p.is_file())
    assert built == shipped
    stale = [name for name in built if not filecmp.cmp(tmp_path / name, ASSETS / name, shallow=False)]
    assert not stale, f"{stale} differ from what viewer/ builds: run make viewer and commit the result"


def test_viewer_command_writes_a_local_root(tmp_path, capsys):
    root = tmp_path / "root"
    build_random_store(str(root), [Unit(31, 4000, 160, 256)], partial=False)
    code, out, err = run_cli(["viewer", "--root", str(root)], capsys)
    assert code == 0, err
    for key, data in asset_files():
        assert (root / key).read_bytes() == data
    assert "tessera-ray serve" in out
    assert json.loads((root / "viewer.json").read_text()) == {"basemap": None}  # no basemap: the page asks for no tile
    # a basemap template: kept by a later publication (embed re-publishes the viewer), removed on request
    template = "https://tiles.example.org/{z}/{x}/{y}.png"
    code, out, err = run_cli(
        ["viewer", "--root", str(root), "--basemap", template, "--basemap-attribution", "(c) someone"], capsys
    )
    assert code == 0 and f"basemap: {template}" in out, err
    configured = {"basemap": {"url": template, "attribution": "(c) someone", "max_zoom": 19, "opacity": 1.0}}
    assert json.loads((root / "viewer.json").read_text()) == configured
    assert publish_viewer(str(root))[-1] == "index.html"
    assert json.loads((root / "viewer.json").read_text()) == configured
    code, out, err = run_cli(["viewer", "--root", str(root), "--no-basemap"], capsys)
    assert code == 0 and "no basemap" in out
    assert json.loads((root / "viewer.json").read_text()) == {"basemap": None}
    # templates the page could not use: one line each, the configuration untouched
    for bad, why in [("https://tiles.example.org/{z}/{x}.png", "has no {y}"), ("javascript:alert(1)//{z}/{x}/{y}", "http(s)://"),
                     ("file:///tiles/{z}/{x}/{y}.png", "http(s)://")]:
        code, _, err = run_cli(["viewer", "--root", str(root), "--basemap", bad], capsys)
        assert code == 2 and why in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["viewer", "--root", str(root), "--basemap", template, "--no-basemap"], capsys)
    assert code == 2 and "not both" in err
    code, _, err = run_cli(["viewer", "--root", str(root), "--basemap", template, "--basemap-max-zoom", "30"], capsys)
    assert code == 2 and "max zoom" in err
    assert json.loads((root / "viewer.json").read_text()) == {"basemap": None}
    # not a root, a store that is not ours, a read-only HTTP root: one line each, nothing written
    code, _, err = run_cli(["viewer", "--root", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "not a published root" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "other" / "tessera.zarr").mkdir(parents=True)
    (tmp_path / "other" / "tessera.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    code, _, err = run_cli(["viewer", "--root", str(tmp_path / "other")], capsys)
    assert code == 2 and "not a tessera-ray root" in err
    assert not (tmp_path / "other" / "index.html").exists()
    code, _, err = run_cli(["viewer", "--root", "http://127.0.0.1:9/root"], capsys)
    assert code == 2 and "read-only" in err


def test_viewer_on_s3_is_served_with_content_types(s3_server, monkeypatch, capsys):
    """Browsers refuse a module script sent as binary: S3 objects carry a Content-Type by suffix."""
    import uuid

    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"viewer-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket, public_read=True)
    root = f"s3://{bucket}/run1"
    build_random_store(root, [Unit(31, 4000, 160, 256)], partial=False)
    code, out, err = run_cli(["viewer", "--root", root], capsys)
    assert code == 0, err
    s3 = s3_server.client()
    types = {key: s3.head_object(Bucket=bucket, Key=f"run1/{key}")["ContentType"] for key, _ in asset_files()}
    assert types == {
        "index.html": "text/html; charset=utf-8",
        "viewer/viewer.js": "text/javascript; charset=utf-8",
        "viewer/worker.js": "text/javascript; charset=utf-8",
        "viewer/viewer.css": "text/css; charset=utf-8",
    }
    manifest = s3.head_object(Bucket=bucket, Key="run1/manifests/2024.parquet")
    assert manifest["ContentType"] == "application/vnd.apache.parquet"
    assert publish_viewer(root)[-1] == "index.html"
