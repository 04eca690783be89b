"""``tessera-ray probe | classify | regress | viz``: downstream heads on published embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import typer

ROOT = typer.Option(..., "--root", help="store URL (https://, s3:// or a local folder)")
YEAR = typer.Option(..., "--year", help="year of the embeddings")
LABELS = typer.Option(..., "--labels", help="points: GeoParquet, GeoJSON or CSV with lon, lat")


def _open(root: str):
    from tessera_ray.client import open_root

    return open_root(root)


def _bbox(text: str):
    from tessera_ray.grid import parse_bbox

    return parse_bbox(text)


def _sample(root: str, year: int, labels: Path, column: str | None, regression: bool, check=None):
    from tessera_ray.heads.labels import read_points
    from tessera_ray.heads.sample import embeddings_at

    points = read_points(labels, column, regression)
    if check is not None:
        check(points.target)
    store = _open(root)
    features, points = embeddings_at(store, points, year)
    return store, features, points


def _save_json(path: Path, record: dict) -> None:
    from tessera_ray.atomic import write_bytes

    path.parent.mkdir(exist_ok=True)  # the --out folder; its parent was checked
    write_bytes(path, json.dumps(record, indent=1).encode())


def register(app: typer.Typer) -> None:
    @app.command("probe")
    def probe(
        root: str = ROOT, year: int = YEAR, labels: Path = LABELS,
        column: str | None = typer.Option(
            None, "--column", help="label column (default: label, class_name, class, class_id)"
        ),
        model: str = typer.Option("logistic", "--model", help="logistic | mlp"),
        folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-validation"),
        out: Path | None = typer.Option(None, "--out", help="folder for probe.json, curve.csv and curve.png"),
    ) -> None:
        """k-fold accuracy and macro F1 of a classifier on the embeddings, and a label-efficiency curve."""
        from tessera_ray.heads.evaluate import check_folds, cross_validate, label_efficiency, make_head
        from tessera_ray.heads.report import write_curve
        from tessera_ray.paths import output_folder, removed_if_failed

        make_head(model)
        check_folds(folds)
        out = output_folder(out) if out is not None else None
        _, features, points = _sample(root, year, labels, column, False)
        scores = cross_validate(features, points.target, model, folds=folds)
        curve = label_efficiency(features, points.target, model=model, test=points.split)
        typer.echo(f"{folds}-fold on {scores['n']} points, {len(scores['classes'])} classes ({model}): "
                   f"accuracy {scores['accuracy']:.3f}, macro F1 {scores['macro_f1']:.3f}")
        typer.echo("labels/class  accuracy  macro F1")
        for row in curve:
            typer.echo(f"{row['per_class']:>12}  {row['accuracy']:>8.3f}  {row['macro_f1']:>8.3f}")
        if out is not None:
            with removed_if_failed(out):
                _save_json(out / "probe.json", {"root": root, "year": year, "model": model, **scores, "curve": curve})
                for path in write_curve(curve, out):
                    typer.echo(f"wrote {path}")

    @app.command("classify")
    def classify(
        root: str = ROOT, year: int = YEAR,
        labels: Path | None = typer.Option(None, "--labels", help="training points (GeoParquet, GeoJSON or CSV)"),
        column: str | None = typer.Option(None, "--column", help="label column"),
        model: str = typer.Option("logistic", "--model", help="logistic | mlp"),
        head: Path | None = typer.Option(None, "--head", help="a head saved by --save-head (instead of training)"),
        save_head: Path | None = typer.Option(None, "--save-head", help="write the trained head here"),
        bbox: str | None = typer.Option(None, "--bbox", help="W,S,E,N to map"),
        out: Path | None = typer.Option(
            None, "--out", help="COG to write: class band + one probability band per class"
        ),
    ) -> None:
        """Train (or load) a classifier on labelled points; map a bbox as a COG."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.heads import saved
        from tessera_ray.heads.evaluate import make_head
        from tessera_ray.heads.maps import classify_map, read_mosaic
        from tessera_ray.paths import output_file

        if (bbox is None) != (out is None):
            raise UserInputError("--bbox and --out go together")
        if head is None and labels is None:
            raise UserInputError("give --labels to train a head, or --head to use a saved one")
        out = output_file(out) if out is not None else None
        save_head = output_file(save_head, "--save-head") if save_head is not None else None
        if head is not None:
            fitted = saved.load_head(head, regression=False)
            store = _open(root)
            if labels is not None:
                _, features, points = _sample(root, year, labels, column, False,
                                              check=lambda t: saved.check_classes(fitted, t))
                accuracy = saved.score(fitted, features, points.target)
                typer.echo(f"saved head on {len(points.target)} labels: accuracy {accuracy:.3f}")
        else:
            assert labels is not None  # checked above: a head or labels
            make_head(model)
            store, features, points = _sample(root, year, labels, column, False)
            estimator = make_head(model).fit(features, points.target)
            fitted = saved.Head(estimator, [str(c) for c in estimator.classes_], model, "class", year)
            typer.echo(f"trained a {model} head on {len(points.target)} points, {len(fitted.classes)} classes")
            if save_head is not None:
                typer.echo(f"wrote {saved.save_head(fitted, save_head)}")
        if bbox is not None and out is not None:  # given together (checked above)
            array, valid, transform, crs = read_mosaic(store, _bbox(bbox), year)
            path = classify_map(fitted.estimator, fitted.classes, array, valid, transform, crs, out)
            typer.echo(f"wrote {path} ({valid.shape[1]} x {valid.shape[0]} px, {int(valid.sum())} classified)")

    @app.command("regress")
    def regress(
        root: str = ROOT, year: int = YEAR, labels: Path = LABELS,
        column: str | None = typer.Option(None, "--column", help="value column (default: value, target, y)"),
        model: str = typer.Option("ridge", "--model", help="ridge | mlp"),
        folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-validation"),
        bbox: str | None = typer.Option(None, "--bbox", help="W,S,E,N to map"),
        out: Path | None = typer.Option(None, "--out", help="COG of predicted values"),
    ) -> None:
        """k-fold R2 of a regressor on the embeddings; optionally map a bbox."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.heads.evaluate import check_folds, cross_validate, make_head
        from tessera_ray.heads.maps import read_mosaic, regress_map
        from tessera_ray.paths import output_file

        if (bbox is None) != (out is None):
            raise UserInputError("--bbox and --out go together")
        make_head(model, regression=True)
        check_folds(folds)
        out = output_file(out) if out is not None else None
        store, features, points = _sample(root, year, labels, column, True)
        scores = cross_validate(features, points.target, model, regression=True, folds=folds)
        typer.echo(f"{folds}-fold on {scores['n']} points ({model}): R2 {scores['r2']:.3f}, RMSE {scores['rmse']:.4g}")
        if bbox is not None and out is not None:  # given together (checked above)
            estimator = make_head(model, regression=True).fit(features, points.target)
            array, valid, transform, crs = read_mosaic(store, _bbox(bbox), year)
            typer.echo(f"wrote {regress_map(estimator, array, valid, transform, crs, out)}")

    @app.command("viz")
    def viz(
        root: str = ROOT, year: int = YEAR,
        bbox: str = typer.Option(..., "--bbox", help="W,S,E,N"),
        png: Path | None = typer.Option(None, "--png", help="false-colour PNG to write"),
        cog: Path | None = typer.Option(None, "--cog", help="false-colour 3-band COG to write"),
        method: str = typer.Option("pca", "--method", help="pca | umap (umap only where installed)"),
    ) -> None:
        """A false-colour view of a region: three principal components (or UMAP) of the embeddings."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.heads.maps import pca_rgb, read_mosaic, umap_rgb, write_rgb
        from tessera_ray.paths import output_file

        if png is None and cog is None:
            raise UserInputError("give --png and/or --cog")
        png = output_file(png, "--png") if png is not None else None
        cog = output_file(cog, "--cog") if cog is not None else None
        if method not in ("pca", "umap"):
            raise UserInputError(f"--method must be pca or umap, got {method!r}")
        if method == "umap":
            try:
                import umap  # noqa: F401
            except ImportError:
                raise UserInputError("--method umap needs the umap-learn package; use --method pca") from None
        array, valid, transform, crs = read_mosaic(_open(root), _bbox(bbox), year)
        rgb = pca_rgb(array, valid) if method == "pca" else umap_rgb(array, valid)
        for path in write_rgb(rgb, transform, crs, png, cog):
            typer.echo(f"wrote {path}")
