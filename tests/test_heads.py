"""Downstream heads: metrics on separable embeddings, the label-efficiency curve, maps, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import cli_status

from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit, zone_grid
from tessera_ray.heads.evaluate import cross_validate, label_efficiency

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


UNIT = Unit(31, 5680, 330, 64)
YEAR = 2024
CLASSES = ("crop", "forest", "water")


def _separable(n_per_class=30, seed=0, noise=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(CLASSES), 128))
    x = np.concatenate([c + noise * rng.normal(size=(n_per_class, 128)) for c in centres])
    y = np.repeat(np.array(CLASSES), n_per_class)
    return x, y


def test_kfold_metrics_on_separable_and_random_embeddings():
    x, y = _separable()
    scores = cross_validate(x, y, "logistic", folds=5)
    assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0 and scores["classes"] == list(CLASSES)
    shuffled = np.random.default_rng(1).permutation(y)
    chance = cross_validate(x, shuffled, "logistic", folds=5)
    assert chance["accuracy"] < 0.7
    values = x[:, 0] * 3 + 1
    assert cross_validate(x, values, "ridge", regression=True)["r2"] > 0.9


def test_too_few_labels_for_kfold_is_one_clear_error():
    x, y = _separable(n_per_class=3)
    with pytest.raises(
        UserInputError, match="5-fold cross-validation needs at least 5 labels per class; class 'crop' has 3"
    ):
        cross_validate(x, y, folds=5)


def test_label_efficiency_curve_rises_and_stops_where_labels_run_out():
    x, y = _separable(n_per_class=25, noise=2.5)
    curve = label_efficiency(x, y, per_class=(1, 2, 5, 10, 20, 50), repeats=3)
    ks = [r["per_class"] for r in curve]
    assert ks == [1, 2, 5, 10, 20]  # 50 > 25 - 1 labels to spare per class
    acc = [r["accuracy"] for r in curve]
    assert acc[-1] > acc[0] and acc[-1] > 0.9
    assert all(0 <= r["macro_f1"] <= 1 for r in curve)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A 64 px unit: left third crop, middle forest, right water, each a cluster of int8 embeddings."""
    from tessera_ray.store.writer import EmbeddingStore, publish

    root = tmp_path_factory.mktemp("heads-store")
    rng = np.random.default_rng(0)
    centres = rng.integers(-100, 100, size=(3, 128))
    col_class = np.minimum(np.arange(64) * 3 // 64, 2)
    classes = np.broadcast_to(col_class, (64, 64))
    emb = np.clip(centres[classes] + rng.integers(-15, 16, size=(64, 64, 128)), -127, 127).astype(np.int8)
    scales = np.full((64, 64), 0.01, np.float32)
    scales[:4, :4] = np.nan  # no embedding
    s = EmbeddingStore.create_or_open(str(root), 64, 32, model="heads-test", model_checksum="0" * 64)
    s.prepare(YEAR, {UNIT.zone})
    s.write_unit(UNIT, YEAR, emb, scales)
    publish(str(root), YEAR)
    return root, classes


def _labels(tmp_path, classes, n=12, seed=0, fmt="csv", extra=()):
    rng = np.random.default_rng(seed)
    rows, cols = rng.integers(8, 64, n * 3), rng.integers(0, 64, n * 3)
    w = UNIT.window
    lon, lat = zone_grid(UNIT.zone).pixel_to_lonlat(w.row + rows, w.col + cols)
    names = np.array(CLASSES)[classes[rows, cols]]
    lon, lat, names = (
        list(lon) + [e[0] for e in extra], list(lat) + [e[1] for e in extra], list(names) + [e[2] for e in extra]
    )
    path = tmp_path / f"labels.{fmt}"
    if fmt == "csv":
        lines = ["lon,lat,label,value"] + [f"{a},{b},{c},{i}" for i, (a, b, c) in enumerate(zip(lon, lat, names))]
        path.write_text("\n".join(lines) + "\n")
    else:
        features = [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [a, b]}, "properties": {"label": c}}
            for a, b, c in zip(lon, lat, names)
        ]
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _bbox():
    w = UNIT.window
    lon, lat = zone_grid(UNIT.zone).pixel_to_lonlat([w.row + 2, w.row + 61], [w.col + 2, w.col + 61])
    return f"{min(lon)},{min(lat)},{max(lon)},{max(lat)}"


def test_probe_command_reports_metrics_and_curve(store, tmp_path, capsys):
    root, classes = store
    labels = _labels(tmp_path, classes, fmt="geojson")
    assert cli_status(["probe", "--root", str(root), "--year", str(YEAR), "--labels", str(labels),
                       "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "accuracy 1.000, macro F1 1.000" in out
    record = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert record["accuracy"] == 1.0 and [r["per_class"] for r in record["curve"]][:3] == [1, 2, 5]
    assert (tmp_path / "p" / "curve.csv").read_text().startswith("per_class,accuracy,macro_f1")
    png = (tmp_path / "p" / "curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000  # a drawn plot, not an empty canvas


def test_classify_writes_a_map_cog_with_the_store_grid(store, tmp_path, capsys):
    import rasterio

    root, classes = store
    labels = _labels(tmp_path, classes)
    out = tmp_path / "map.tif"
    head = tmp_path / "head.pkl"
    assert cli_status(["classify", "--root", str(root), "--year", str(YEAR), "--labels", str(labels),
                       "--save-head", str(head), "--bbox", _bbox(), "--out", str(out)]) == 0
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 32631 and src.count == 1 + len(CLASSES)
        assert src.descriptions == ("class", "p(crop)", "p(forest)", "p(water)")
        t = src.transform
        assert (t.a, t.e) == (10.0, -10.0) and (t.c - 90400) % 10 == 0  # on the zone's 10 m grid
        label, proba = src.read(1), src.read()[1:]
        # every classified pixel: its class is the band of highest probability, and the truth
        row0, col0 = zone_grid(UNIT.zone).xy_to_pixel(t.c + 5, t.f - 5)
        r = np.arange(src.height)[:, None] + int(row0) - UNIT.window.row
        c = np.arange(src.width)[None, :] + int(col0) - UNIT.window.col
        truth = classes[r, c]
        ok = np.isfinite(label)
        assert ok.mean() > 0.9
        assert (label[ok] == truth[ok]).mean() > 0.98
        np.testing.assert_allclose(proba[:, ok].sum(axis=0), 1, atol=1e-5)
    # the saved head refuses labels of classes it never saw
    unknown = _labels(tmp_path, classes, extra=[(0.13, 52.17, "orchard")])
    assert cli_status(["classify", "--root", str(root), "--year", str(YEAR), "--head", str(head),
                       "--labels", str(unknown)]) != 0
    assert "classes the saved head does not know: orchard" in capsys.readouterr().err


def test_regress_and_viz(store, tmp_path, capsys):
    import rasterio

    root, classes = store
    labels = _labels(tmp_path, classes)
    values = tmp_path / "values.tif"
    assert cli_status(["regress", "--root", str(root), "--year", str(YEAR), "--labels", str(labels),
                       "--bbox", _bbox(), "--out", str(values)]) == 0
    assert "R2" in capsys.readouterr().out
    with rasterio.open(values) as src:
        band = src.read(1)
        assert src.count == 1 and src.crs.to_epsg() == 32631 and np.isfinite(band).mean() > 0.9
    png, cog = tmp_path / "pca.png", tmp_path / "pca.tif"
    assert cli_status(["viz", "--root", str(root), "--year", str(YEAR), "--bbox", _bbox(),
                       "--png", str(png), "--cog", str(cog)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with rasterio.open(cog) as src:
        rgb = src.read()
        assert src.count == 3 and src.crs.to_epsg() == 32631
    # three land covers give three distinct colours
    assert len({tuple(rgb[:, 20, c]) for c in (5, 30, 55)}) == 3


def test_bad_inputs_are_one_line(store, tmp_path, capsys):
    root, classes = store
    few = _labels(tmp_path, classes, n=2)
    assert cli_status(["probe", "--root", str(root), "--year", str(YEAR), "--labels", str(few)]) != 0
    err = capsys.readouterr().err
    assert "needs at least 5 labels per class" in err and "Traceback" not in err
    far = tmp_path / "far.csv"
    far.write_text("lon,lat,label\n10.0,40.0,crop\n10.1,40.1,water\n")
    assert cli_status(["probe", "--root", str(root), "--year", str(YEAR), "--labels", str(far)]) != 0
    assert "none of the 2 points has an embedding" in capsys.readouterr().err
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("lon,lat,height\n0.1,52.1,3\n")
    assert cli_status(["probe", "--root", str(root), "--year", str(YEAR), "--labels", str(nolabel)]) != 0
    assert "no label column" in capsys.readouterr().err
    assert cli_status(["viz", "--root", str(root), "--year", str(YEAR), "--bbox", _bbox(),
                       "--png", str(tmp_path / "x.png"), "--method", "umap"]) != 0
    assert "umap" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


class _Exploit:
    """Unpickling this would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_head_file_runs_nothing(store, tmp_path, capsys):
    import pickle

    root, classes = store
    labels = _labels(tmp_path, classes)
    marker = tmp_path / "pwned"
    crafted = tmp_path / "head.pkl"
    crafted.write_bytes(pickle.dumps({"format": "tessera-ray/head/1", "head": _Exploit(marker)}))
    assert cli_status(["classify", "--root", str(root), "--year", str(YEAR), "--head", str(crafted),
                       "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert "is not a head saved by tessera-ray classify --save-head" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()
    # a skops file naming a type no head holds is refused before anything is built
    import skops.io

    sneaky = tmp_path / "sneaky.skops"
    skops.io.dump({"format": "tessera-ray/head/2", "estimator": _Planted(str(marker)), "classes": ["a"],
                   "model": "logistic", "kind": "class", "year": YEAR}, sneaky)
    assert cli_status(["classify", "--root", str(root), "--year", str(YEAR), "--head", str(sneaky),
                       "--labels", str(labels)]) == 2
    assert "_Planted" in capsys.readouterr().err
    assert not marker.exists()


class _Planted:
    """Rebuilding this from a file would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __setstate__(self, state):
        open(state["marker"], "w").close()
