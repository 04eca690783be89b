"""Every user mistake is one line (issue 14): a bad output path, CRS, URL, root, unit folder,
training setting, fold count, catalog or ROI file ends in one ``tessera-ray: error:`` line,
the right exit code, nothing written, and no request made.

All in-process (``tessera_ray.cli.main``) and fast: the checks run before any real work.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import warnings
from pathlib import Path

import pytest
from cli_helpers import run_cli

from tessera_ray.grid import lonlat_to_zone_pixel, unit_of_pixel, zone_grid

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")

ZONE, ROW, COL = lonlat_to_zone_pixel(3.0, 52.0)
UNIT = unit_of_pixel(ZONE, ROW, COL, 64)
BBOX = "3.0005,51.9975,3.008,52.0015"  # inside UNIT


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tessera-ray: error: "), err
    return lines[0]


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- inputs, built once


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A published root (one 64 px unit), labelled points on it, a checkpoint, unit folders, a tile."""
    import numpy as np
    from test_encode_tiles import write_tile
    from test_train import _write_units

    from tessera_ray.model import build_encoder, get_variant, save_checkpoint
    from tessera_ray.store.testing import build_random_store

    base = tmp_path_factory.mktemp("mistakes")
    build_random_store(str(base / "root"), [UNIT], shard_size=64, chunk_size=32, partial=False)
    rng = np.random.default_rng(0)
    rows = rng.integers(UNIT.window.row + 10, UNIT.window.row + 64, 40)
    cols = rng.integers(UNIT.window.col, UNIT.window.col + 64, 40)
    lons, lats = zone_grid(ZONE).pixel_to_lonlat(rows, cols)
    lines = [f"{x},{y},{'ab'[i % 2]},{i * 0.5}" for i, (x, y) in enumerate(zip(lons, lats))]
    (base / "labels.csv").write_text("lon,lat,label,value\n" + "\n".join(lines) + "\n")
    config = get_variant("tiny")
    save_checkpoint(build_encoder(config, seed=1), base / "tiny.pt", config)
    (base / "units").mkdir()
    _write_units(base / "units", n_units=2)
    write_tile(base / "tiles" / "grid_0.05_52.05", 0)
    return base


# --------------------------------------------------------------------------- outputs

TRAIN_SHORT = ["--no-ray", "--variant", "tiny", "--steps", "2", "--batch-size", "16", "--seq-len", "8",
               "--projector-width", "16", "--pool-per-unit", "32", "--warmup", "1", "--threads", "1"]

# (id, option, file or folder, argv with OUT where the path goes); I is the inputs folder
WRITERS = [
    ("sample", "--out", "file", ["sample", "--root", "I/root", "--points", "I/labels.csv", "--year", "2024",
                                 "--out", "OUT"]),
    ("export", "--out", "file", ["export", "--root", "I/root", "--bbox", BBOX, "--year", "2024", "--out", "OUT"]),
    ("export-geotessera", "--out", "folder", ["export-geotessera", "--root", "I/root", "--year", "2024",
                                              "--out", "OUT"]),
    ("model-init", "--out", "file", ["model", "init", "--variant", "tiny", "--out", "OUT"]),
    ("probe", "--out", "folder", ["probe", "--root", "I/root", "--year", "2024", "--labels", "I/labels.csv",
                                  "--folds", "2", "--out", "OUT"]),
    ("classify-save-head", "--save-head", "file", ["classify", "--root", "I/root", "--year", "2024", "--labels",
                                                   "I/labels.csv", "--save-head", "OUT"]),
    ("classify-map", "--out", "file", ["classify", "--root", "I/root", "--year", "2024", "--labels", "I/labels.csv",
                                       "--bbox", BBOX, "--out", "OUT"]),
    ("regress-map", "--out", "file", ["regress", "--root", "I/root", "--year", "2024", "--labels", "I/labels.csv",
                                      "--column", "value", "--folds", "2", "--bbox", BBOX, "--out", "OUT"]),
    ("viz-png", "--png", "file", ["viz", "--root", "I/root", "--year", "2024", "--bbox", BBOX, "--png", "OUT"]),
    ("viz-cog", "--cog", "file", ["viz", "--root", "I/root", "--year", "2024", "--bbox", BBOX, "--cog", "OUT"]),
    ("encode-tiles", "--out", "folder", ["encode-tiles", "I/tiles", "--checkpoint", "I/tiny.pt", "--out", "OUT"]),
    ("train", "--out", "folder", ["train", "--units", "I/units", *TRAIN_SHORT, "--out", "OUT"]),
    # the check comes before the ROI, the search and the reads: none of them is reached
    ("ingest", "--out", "folder", ["ingest", "--roi", "3.0,52.0,3.001,52.001", "--year", "2024",
                                   "--stac", "http://127.0.0.1:PORT/", "--out", "OUT"]),
    ("ingest-cache-dir", "--cache-dir", "folder", ["ingest", "--roi", "3.0,52.0,3.001,52.001", "--year", "2024",
                                                   "--stac", "http://127.0.0.1:PORT/", "--out", "I/unused",
                                                   "--cache-dir", "OUT"]),
    ("embed", "--out", "folder", ["embed", "--roi", "3.0,52.0,3.001,52.001", "--year", "2024", "--checkpoint",
                                  "I/tiny.pt", "--stac", "http://127.0.0.1:PORT/", "--out", "OUT"]),
    ("synth", "--out", "folder", ["synth", "--preset", "test", "--out", "OUT"]),
    ("demo", "--out", "folder", ["demo", "--out", "OUT"]),
]


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write in: mode 555, and (as root, who ignores modes) immutable."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK):
        immutable = shutil.which("chattr") is not None and subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable or os.access(folder, os.W_OK):
            folder.chmod(0o755)
            pytest.skip("cannot make a read-only folder here (root without chattr)")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


def _argv(template, inputs, out):
    port = str(closed_port())
    return [str(out) if a == "OUT" else a.replace("I/", f"{inputs}/").replace("PORT", port) for a in template]


@pytest.mark.parametrize("case", ["missing-parent", "wrong-kind", "read-only"])
@pytest.mark.parametrize("name,option,kind,template", WRITERS, ids=[w[0] for w in WRITERS])
def test_unwritable_output_is_one_line_exit_2_and_nothing_written(
        inputs, tmp_path, request, capsys, name, option, kind, template, case):
    work = tmp_path / "work"
    work.mkdir()
    if case == "missing-parent":
        out, reason = work / "no-such-folder" / "x.out", "no such folder"
    elif case == "wrong-kind":
        if kind == "file":  # a folder where a file is to be written
            (work / "a-folder").mkdir()
            out, reason = work / "a-folder", "is a folder"
        else:  # a file where a folder is to be made
            (work / "a-file").write_text("keep me")
            out, reason = work / "a-file", "is not a folder"
    else:
        out, reason = request.getfixturevalue("read_only_dir") / "x.out", "cannot write"
    before_inputs, before_work = tree(inputs), tree(tmp_path)
    code, _, err = run_cli(_argv(template, inputs, out), capsys)
    line = one_line(err)
    assert code == 2, err
    assert option in line and reason in line and str(out) in line, line
    assert tree(tmp_path) == before_work  # nothing half-written, no parent made
    assert tree(inputs) == before_inputs
    if case == "wrong-kind" and kind == "folder":
        assert (work / "a-file").read_text() == "keep me"


def test_helpers_accept_what_can_be_written(tmp_path):
    from tessera_ray.paths import output_file, output_folder, removed_if_failed

    assert output_file(tmp_path / "new.tif") == tmp_path / "new.tif"
    (tmp_path / "old.tif").write_text("x")
    assert output_file(tmp_path / "old.tif") == tmp_path / "old.tif"  # replaced, as before
    assert output_folder(tmp_path / "new") == tmp_path / "new"
    assert output_folder(tmp_path) == tmp_path
    assert not (tmp_path / "new").exists()  # checked, not made
    with pytest.raises(RuntimeError):
        with removed_if_failed(tmp_path / "made"):
            (tmp_path / "made").mkdir()
            raise RuntimeError("failed before writing anything")
    assert not (tmp_path / "made").exists()
    with pytest.raises(RuntimeError):
        with removed_if_failed(tmp_path / "used"):
            (tmp_path / "used").mkdir()
            (tmp_path / "used" / "part").write_text("resumable")
            raise RuntimeError("failed after writing")
    assert (tmp_path / "used" / "part").exists()  # what was written stays (a re-run resumes)


# --------------------------------------------------------------------------- --crs


@pytest.mark.parametrize("crs,message", [
    ("EPSG:999999", "is not a CRS PROJ knows"),
    ("not-a-crs", "is not a CRS PROJ knows"),
    ("EPSG:5703", "is not a geographic or projected CRS"),  # a vertical (height) CRS
    ('LOCAL_CS["site grid",UNIT["metre",1]]', "is not a geographic or projected CRS"),
])
def test_unknown_crs_is_one_line(inputs, tmp_path, capsys, crs, message):
    out = tmp_path / "region.tif"
    code, _, err = run_cli(["export", "--root", str(inputs / "root"), "--bbox", BBOX, "--year", "2024",
                            "--out", str(out), "--crs", crs], capsys)
    assert code == 2, err
    assert "--crs" in one_line(err) and message in err
    assert list(tmp_path.iterdir()) == []


def test_a_known_crs_in_any_spelling_still_exports(inputs, tmp_path, capsys):
    import rasterio

    out = tmp_path / "region.tif"
    code, _, err = run_cli(["export", "--root", str(inputs / "root"), "--bbox", BBOX, "--year", "2024",
                            "--out", str(out), "--crs", "epsg:32631"], capsys)
    assert code == 0, err
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32631


# --------------------------------------------------------------------------- URLs


MALFORMED = ["http://", "https:///path", "https://[bad/root", "http://host:abc/root", "http://host:99999/root",
             "https:/host/root", "http:host/root", "s3://", "s3:///prefix", "s3://bad bucket/prefix"]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_root_url_is_one_line_exit_2(inputs, tmp_path, capsys, url):
    code, _, err = run_cli(["sample", "--root", url, "--points", str(inputs / "labels.csv"), "--year", "2024",
                            "--out", str(tmp_path / "p.parquet")], capsys)
    assert code == 2, err
    line = one_line(err)
    assert "malformed root URL" in line or "has no bucket" in line, line  # s3:// said so already
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_checkpoint_url_is_one_line_exit_2(capsys, url):
    code, _, err = run_cli(["model", "info", url], capsys)
    assert code == 2, err
    assert "malformed checkpoint URL" in one_line(err)


@pytest.fixture
def unreachable_s3(monkeypatch):
    """An S3 endpoint on a closed loopback port, one attempt per request (no retry back-off)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_RETRY_MODE", "standard")


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_unreachable_root_is_exit_3_for_s3_as_for_http(inputs, tmp_path, capsys, unreachable_s3, scheme):
    root = "s3://bucket/root" if scheme == "s3" else f"http://127.0.0.1:{closed_port()}/root"
    code, _, err = run_cli(["sample", "--root", root, "--points", str(inputs / "labels.csv"), "--year", "2024",
                            "--out", str(tmp_path / "p.parquet")], capsys)
    assert code == 3, err
    assert f"cannot reach {root}/tessera.zarr/zarr.json" in one_line(err)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_s3_root_for_embed_is_exit_3(inputs, tmp_path, capsys, unreachable_s3):
    # the ROI is on land (Utrecht)
    code, _, err = run_cli(["embed", "--roi", "5.0,52.0,5.001,52.001", "--year", "2024", "--checkpoint",
                            str(inputs / "tiny.pt"), "--catalog", str(tmp_path / "none.parquet"),
                            "--out", "s3://bucket/root"], capsys)
    assert code == 3, err
    assert "cannot reach s3://bucket/root/" in one_line(err)


@pytest.mark.parametrize("scheme", ["http", "s3"])
def test_unreachable_checkpoint_is_exit_3(capsys, unreachable_s3, scheme):
    url = "s3://bucket/tiny.pt" if scheme == "s3" else f"http://127.0.0.1:{closed_port()}/tiny.pt"
    code, _, err = run_cli(["model", "info", url], capsys)
    assert code == 3, err
    assert f"cannot reach checkpoint {url}" in one_line(err)


# --------------------------------------------------------------------------- zarr.json of the wrong shape


def _break(doc, how):
    nodes = doc.get("consolidated_metadata", {}).get("metadata", {})
    emb = nodes.get("utm31/embeddings", {})
    if how == "list":
        return []
    if how == "null":
        return None
    if how == "attributes-list":
        doc["attributes"] = []
    elif how == "years-string":
        doc["attributes"]["tessera_ray:years"] = "2024"
    elif how == "years-not-numbers":
        doc["attributes"]["tessera_ray:years"] = ["x"]
    elif how == "consolidated-string":
        doc["consolidated_metadata"] = "x"
    elif how == "nodes-list":
        doc["consolidated_metadata"]["metadata"] = []
    elif how == "node-string":
        nodes["utm31/embeddings"] = "x"
    elif how == "no-shape":
        del emb["shape"]
    elif how == "shape-1d":
        emb["shape"] = [1]
    elif how == "no-codecs":
        del emb["codecs"]
    elif how == "chunk-grid-empty":
        emb["chunk_grid"] = {"name": "regular"}
    elif how == "zone-name":
        nodes["utmXX/embeddings"] = emb
    elif how == "depths-entries":
        doc["attributes"]["geoemb:depths"] = [{"x": 1}]
    return doc


@pytest.mark.parametrize("how,code,message", [
    ("list", 2, "is not a tessera-ray root"),
    ("null", 2, "is not a tessera-ray root"),
    ("attributes-list", 2, "is not a tessera-ray root"),  # was already right
    ("years-string", 4, "tessera_ray:years"),
    ("years-not-numbers", 4, "tessera_ray:years"),
    ("consolidated-string", 4, "consolidated_metadata"),
    ("nodes-list", 4, "consolidated_metadata"),
    ("node-string", 4, "malformed array metadata"),
    ("no-shape", 4, "malformed array metadata"),
    ("shape-1d", 4, "malformed array metadata"),
    ("no-codecs", 4, "malformed array metadata"),
    ("chunk-grid-empty", 4, "malformed array metadata"),
    ("zone-name", 4, "not a UTM zone"),
    ("depths-entries", 4, "is malformed"),
])
def test_zarr_json_of_the_wrong_shape_is_one_line(inputs, tmp_path, capsys, how, code, message):
    root = tmp_path / "root"
    shutil.copytree(inputs / "root", root)
    doc_path = root / "tessera.zarr" / "zarr.json"
    doc_path.write_text(json.dumps(_break(json.loads(doc_path.read_text()), how)))
    got, _, err = run_cli(["sample", "--root", str(root), "--points", str(inputs / "labels.csv"), "--year", "2024",
                           "--out", str(tmp_path / "p.parquet")], capsys)
    assert message in one_line(err)
    assert got == code, err
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("how,error", [
    ("list", "UserInputError"), ("null", "UserInputError"), ("attributes-list", "UserInputError"),
    ("years-not-numbers", "DataError"),
])
def test_zarr_json_of_the_wrong_shape_stops_a_writer_in_one_line(inputs, tmp_path, how, error):
    """``embed`` into such a root: the writer reads the same document (its layout attribute, years)."""
    from tessera_ray.errors import TesseraError
    from tessera_ray.store.writer import EmbeddingStore

    root = tmp_path / "root"
    shutil.copytree(inputs / "root", root)
    doc_path = root / "tessera.zarr" / "zarr.json"
    doc_path.write_text(json.dumps(_break(json.loads(doc_path.read_text()), how)))
    with pytest.raises(TesseraError) as caught:
        EmbeddingStore.create_or_open(str(root), shard_size=64, chunk_size=32)
    assert type(caught.value).__name__ == error
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- train


@pytest.mark.parametrize("damage", ["truncated", "header-only", "wrong-shape", "not-npy"])
def test_train_on_a_damaged_bands_npy_is_one_line_exit_4_and_no_output(inputs, tmp_path, capsys, damage):
    import numpy as np

    units = tmp_path / "units"
    shutil.copytree(inputs / "units", units)
    bands = units / "unit1" / "bands.npy"
    data = bands.read_bytes()
    if damage == "truncated":
        bands.write_bytes(data[: len(data) // 2])
    elif damage == "header-only":
        bands.write_bytes(data[:100])
    elif damage == "wrong-shape":
        np.save(bands, np.load(bands)[:, :5])
    else:
        bands.write_text("not an array")
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--units", str(units), *TRAIN_SHORT, "--out", str(out)], capsys)
    assert code == 4, err
    assert "unit1" in one_line(err) and "bands.npy" in err
    assert not out.exists()


BAD_SETTINGS = [
    (["--lr", "nan"], "lr must be a positive finite number"),
    (["--lr", "inf"], "lr must be a positive finite number"),
    (["--lr", "0"], "lr must be a positive finite number"),
    (["--lr", "-1"], "lr must be a positive finite number"),
    (["--steps", "0"], "steps must be positive"),
    (["--mix-weight", "nan"], "mix_weight must be a non-negative finite number"),
    (["--warmup", "-1"], "warmup must be 0 or more"),
    (["--seq-len", "-1"], "seq_len must be 0 or more"),
    (["--checkpoint-every", "0"], "checkpoint_every must be positive"),
    (["--eval-every", "0"], "eval_every must be positive"),
    (["--threads", "0"], "--threads must be at least 1"),
]


@pytest.mark.parametrize("ray", ["--no-ray", "--ray"])
@pytest.mark.parametrize("setting,message", BAD_SETTINGS, ids=[" ".join(s) for s, _ in BAD_SETTINGS])
def test_bad_training_settings_are_one_line_and_leave_no_folder(inputs, tmp_path, capsys, setting, message, ray):
    out = tmp_path / "run"
    argv = ["train", "--units", str(inputs / "units"), *[a for a in TRAIN_SHORT if a != "--no-ray"], ray,
            *setting, "--out", str(out)]
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert message in one_line(err)
    assert not out.exists()


# --------------------------------------------------------------------------- probe / regress --folds


@pytest.mark.parametrize("folds", ["0", "1", "-2"])
@pytest.mark.parametrize("command", ["probe", "regress"])
def test_folds_below_two_are_one_line(inputs, tmp_path, capsys, command, folds):
    argv = [command, "--root", str(inputs / "root"), "--year", "2024", "--labels", str(inputs / "labels.csv"),
            "--folds", folds] + (["--column", "value"] if command == "regress" else ["--out", str(tmp_path / "p")])
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert f"--folds must be at least 2, got {folds}" in one_line(err).replace(
        " (k-fold cross-validation holds out one of k parts)", "")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ingest --catalog


def _not_a_snapshot(path: Path, kind: str) -> None:
    import geopandas as gpd
    import pandas as pd
    import shapely

    if kind == "plain-table":
        pd.DataFrame({"a": [1, 2]}).to_parquet(path)
    elif kind == "geoparquet-of-fields":
        fields = gpd.GeoDataFrame({"name": ["field"]}, geometry=[shapely.box(3, 52, 3.01, 52.01)], crs="EPSG:4326")
        fields.to_parquet(path)
    elif kind == "some-stac-columns":
        pd.DataFrame({"id": ["x"], "collection": ["sentinel-2-c1-l2a"]}).to_parquet(path)
    elif kind == "datetime-as-text":
        pd.DataFrame({"id": ["x"], "collection": ["sentinel-2-c1-l2a"], "datetime": ["2024-06-01"],
                      "assets": [{"red": {"href": "x.tif"}}]}).to_parquet(path)


@pytest.mark.parametrize("kind", ["plain-table", "geoparquet-of-fields", "some-stac-columns", "datetime-as-text"])
def test_ingest_catalog_that_is_not_a_stac_snapshot_is_one_line(tmp_path, capsys, kind):
    catalog = tmp_path / "catalog.parquet"
    _not_a_snapshot(catalog, kind)
    out = tmp_path / "units"
    code, _, err = run_cli(["ingest", "--roi", "3.0,52.0,3.001,52.001", "--year", "2024", "--catalog", str(catalog),
                            "--out", str(out)], capsys)
    assert code == 2, err
    assert "is not a stac-geoparquet snapshot of STAC items" in one_line(err)
    assert not out.exists()


# --------------------------------------------------------------------------- ROI files


SQUARE = [[3.0, 52.0], [3.01, 52.0], [3.01, 52.01], [3.0, 52.01], [3.0, 52.0]]
TOO_FAR_NORTH = [[3.0, 89.0], [3.01, 89.0], [3.01, 95.0], [3.0, 95.0], [3.0, 89.0]]


def _roi_file(folder: Path, kind: str) -> Path:
    import geopandas as gpd
    import shapely

    def feature_collection(ring, **extra):
        return {"type": "FeatureCollection", **extra, "features": [
            {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}

    utm = shapely.box(500000, 5760000, 501000, 5761000)
    if kind == "latitude-95.geojson":
        path = folder / kind
        path.write_text(json.dumps(feature_collection(TOO_FAR_NORTH)))
    elif kind == "latitude-95-bare-geometry.json":
        path = folder / kind
        path.write_text(json.dumps({"type": "Polygon", "coordinates": [TOO_FAR_NORTH]}))
    elif kind in ("latitude-95.gpkg", "latitude-95.parquet"):
        path = folder / kind
        frame = gpd.GeoDataFrame(geometry=[shapely.box(3, 89, 3.01, 95)], crs="EPSG:4326")
        frame.to_parquet(path) if kind.endswith("parquet") else frame.to_file(path)
    elif kind == "utm-coordinates-labelled-wgs84.gpkg":
        path = folder / kind
        gpd.GeoDataFrame(geometry=[utm], crs="EPSG:4326").to_file(path)
    elif kind in ("unknown-crs.geojson", "garbage-crs.geojson"):
        path = folder / kind
        name = "EPSG:999999" if kind.startswith("unknown") else "garbage"
        path.write_text(json.dumps(feature_collection(SQUARE, crs={"type": "name", "properties": {"name": name}})))
    elif kind in ("no-crs.gpkg", "no-crs.shp", "no-crs.parquet"):
        path = folder / kind
        frame = gpd.GeoDataFrame(geometry=[utm], crs=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "'crs' was not provided": that is the point
            frame.to_parquet(path) if kind.endswith("parquet") else frame.to_file(path)
    elif kind == "engineering-crs.gpkg":
        path = folder / kind
        gpd.GeoDataFrame(geometry=[utm], crs='LOCAL_CS["site grid",UNIT["metre",1]]').to_file(path)
    else:
        raise AssertionError(kind)
    return path


ROI_MISTAKES = [
    ("latitude-95.geojson", "outside [-90, 90]"),
    ("latitude-95-bare-geometry.json", "outside [-90, 90]"),
    ("latitude-95.gpkg", "outside [-90, 90]"),
    ("latitude-95.parquet", "outside [-90, 90]"),
    ("utm-coordinates-labelled-wgs84.gpkg", "outside [-90, 90]"),
    ("unknown-crs.geojson", "is not a CRS PROJ knows"),
    ("garbage-crs.geojson", "is not a CRS PROJ knows"),
    ("no-crs.gpkg", "has no CRS"),
    ("no-crs.shp", "has no CRS"),
    ("no-crs.parquet", "has no CRS"),
    ("engineering-crs.gpkg", "is not a geographic or projected CRS"),
]


@pytest.mark.parametrize("command", ["ingest", "embed"])
@pytest.mark.parametrize("kind,message", ROI_MISTAKES, ids=[k for k, _ in ROI_MISTAKES])
def test_roi_file_gets_the_checks_a_bbox_gets_before_any_request(inputs, tmp_path, capsys, kind, message, command):
    roi = _roi_file(tmp_path, kind)
    nowhere = f"http://127.0.0.1:{closed_port()}"  # a request would end in "cannot reach", exit 3
    out = tmp_path / "out"
    argv = {"ingest": ["ingest", "--roi", str(roi), "--year", "2024", "--stac", nowhere, "--out", str(out)],
            "embed": ["embed", "--roi", str(roi), "--year", "2024", "--stac", nowhere, "--out", str(out),
                      "--checkpoint", f"{nowhere}/tiny.pt"]}[command]
    code, _, err = run_cli(argv, capsys)
    assert code == 2, err
    assert message in one_line(err)
    assert not out.exists()


def test_roi_file_crs_is_still_honoured(tmp_path):
    import geopandas as gpd
    import shapely

    from tessera_ray.grid import load_roi

    utm = shapely.box(500000, 5760000, 501000, 5761000)
    gpd.GeoDataFrame(geometry=[utm], crs="EPSG:32631").to_file(tmp_path / "utm.gpkg")
    named = {"type": "FeatureCollection",
             "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32631"}},
             "features": [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(utm)}]}
    (tmp_path / "utm.geojson").write_text(json.dumps(named))
    (tmp_path / "plain.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [SQUARE]}))
    for name in ("utm.gpkg", "utm.geojson"):
        west, south, east, north = load_roi(str(tmp_path / name)).bounds
        assert west == pytest.approx(3.0, abs=1e-6) and 51.99 < south < north < 52.0, name
    assert load_roi(str(tmp_path / "plain.geojson")).bounds == pytest.approx((3.0, 52.0, 3.01, 52.01))
