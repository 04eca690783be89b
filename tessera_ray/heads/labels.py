"""Labelled points from GeoParquet, GeoJSON or CSV, as lon/lat arrays and targets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tessera_ray.errors import UserInputError, squash

LABEL_COLUMNS = ("label", "class_name", "class", "class_id")
VALUE_COLUMNS = ("value", "target", "y")
LON_COLUMNS = ("lon", "longitude", "x")
LAT_COLUMNS = ("lat", "latitude", "y")


@dataclass(frozen=True, eq=False)
class LabelledPoints:
    lons: np.ndarray
    lats: np.ndarray
    target: np.ndarray
    """Class names (str) for classification, floats for regression."""
    column: str
    split: np.ndarray | None = None
    """True where the row is a held-out test point (a ``split`` column == "test")."""


def read_points(path: str | Path, column: str | None = None, regression: bool = False) -> LabelledPoints:
    """Read points and their label (or value) column; one-line errors for anything missing."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            lon = _pick(frame.columns, LON_COLUMNS, path, "longitude")
            lat = _pick(frame.columns, LAT_COLUMNS, path, "latitude")
            lons, lats = frame[lon].to_numpy(float), frame[lat].to_numpy(float)
        elif suffix in (".parquet", ".geoparquet", ".geojson", ".json", ".gpkg"):
            import geopandas as gpd

            frame = gpd.read_parquet(path) if suffix in (".parquet", ".geoparquet") else gpd.read_file(path)
            if frame.crs is not None and frame.crs.to_epsg() != 4326:
                frame = frame.to_crs(4326)
            if not (frame.geom_type == "Point").all():
                raise UserInputError(f"{path}: every feature must be a point")
            lons, lats = frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy()
        else:
            raise UserInputError(f"{path}: use a .csv, .geojson or .parquet (GeoParquet) file")
    except UserInputError:
        raise
    except Exception as exc:  # pandas/pyogrio raise many kinds
        raise UserInputError(f"cannot read labels {path}: {squash(exc, 200)}") from None
    wanted = (column,) if column else (VALUE_COLUMNS if regression else LABEL_COLUMNS)
    name = _pick(frame.columns, wanted, path, "value" if regression else "label")
    if regression:
        try:
            target = frame[name].to_numpy(float)
        except (TypeError, ValueError):
            raise UserInputError(f"{path}: column {name!r} is not numeric") from None
    else:
        target = frame[name].astype(str).to_numpy()
    split = frame["split"].astype(str).to_numpy() == "test" if "split" in frame.columns else None
    if len(target) == 0:
        raise UserInputError(f"{path} holds no points")
    return LabelledPoints(np.asarray(lons, float), np.asarray(lats, float), target, name, split)


def _pick(columns, wanted, path, what: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise UserInputError(
        f"{path}: no {what} column (looked for {', '.join(wanted)}; found {', '.join(map(str, columns))})"
    )
