"""Search in a stac-geoparquet snapshot of a catalog: no API calls.

The way to plan a large ROI without millions of requests: filter one
GeoParquet file (local path or URL) by collection, datetime and bbox with
pyarrow, pushing the filters down to row-group statistics.

Relative hrefs are resolved against the catalog's *root*: by default the
parent of the folder holding the parquet file when that folder is named
``stac`` (the synthetic world's ``DIR/stac/items.parquet`` has hrefs relative
to ``DIR``), otherwise the parquet file's own folder. ``root=`` overrides.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlparse

from tessera_ray.errors import UserInputError
from tessera_ray.sources.scenes import Scene, SourceProfile, scene_from_item
from tessera_ray.store.objects import ObjectNotFound
from tessera_ray.store.urls import RangedReader, is_remote, split_url


def catalog_root(path: str) -> str:
    """The base relative hrefs in the snapshot at ``path`` are resolved against (see module doc)."""
    url = urlparse(path)
    folder = posixpath.dirname(url.path if url.scheme else str(path))
    if posixpath.basename(folder) == "stac":
        folder = posixpath.dirname(folder)
    if url.scheme:
        return url._replace(path=folder).geturl()
    return folder or "."


def _read(path: str, collection: str, bbox: Sequence[float], start: date, end: date) -> Any:
    import pyarrow as pa
    import pyarrow.dataset as ds

    lo = datetime.combine(start, time(0), UTC)
    hi = datetime.combine(end + timedelta(days=1), time(0), UTC)
    try:
        if is_remote(path):  # one file, read with range requests: footer, then the row groups the filter keeps
            parquet = ds.ParquetFileFormat()
            fragment = parquet.make_fragment(pa.PythonFile(RangedReader(*split_url(path)), mode="r"))
            dataset = ds.FileSystemDataset([fragment], schema=fragment.physical_schema, format=parquet)
        else:
            dataset = ds.dataset(path, format="parquet")
    except (OSError, pa.ArrowInvalid, ObjectNotFound) as exc:
        raise UserInputError(f"cannot read STAC catalog {path}: {exc}") from None
    schema = dataset.schema
    _check_snapshot(path, schema)
    expr = ds.field("collection") == collection
    dt_type = schema.field("datetime").type
    tz = getattr(dt_type, "tz", None)
    expr &= ds.field("datetime") >= pa.scalar(lo if tz else lo.replace(tzinfo=None), type=dt_type)
    expr &= ds.field("datetime") < pa.scalar(hi if tz else hi.replace(tzinfo=None), type=dt_type)
    if "bbox" in schema.names and pa.types.is_struct(schema.field("bbox").type):
        west, south, east, north = (float(v) for v in bbox)
        expr &= ds.field("bbox", "xmin") <= east
        expr &= ds.field("bbox", "xmax") >= west
        expr &= ds.field("bbox", "ymin") <= north
        expr &= ds.field("bbox", "ymax") >= south
    try:
        return dataset.to_table(filter=expr, use_threads=False)  # see store.manifest.parquet_table
    except (OSError, pa.ArrowException) as exc:
        raise UserInputError(f"cannot read STAC catalog {path}: {' '.join(str(exc).split())[:200]}") from None


_SNAPSHOT_COLUMNS = ("id", "collection", "datetime", "assets")


def _check_snapshot(path: str, schema: Any) -> None:
    """The columns every stac-geoparquet snapshot has, with the types the search relies on."""
    import pyarrow as pa

    missing = [name for name in _SNAPSHOT_COLUMNS if name not in schema.names]
    if missing:
        raise UserInputError(
            f"{path} is not a stac-geoparquet snapshot of STAC items (no column {', '.join(missing)}; "
            f"it has {', '.join(schema.names[:8])}{' ...' if len(schema.names) > 8 else ''})")
    checks = (("collection", pa.types.is_string(schema.field("collection").type) or
               pa.types.is_large_string(schema.field("collection").type), "text"),
              ("datetime", pa.types.is_timestamp(schema.field("datetime").type), "a timestamp"),
              ("assets", pa.types.is_struct(schema.field("assets").type), "a struct of assets"))
    for name, ok, what in checks:
        if not ok:
            raise UserInputError(f"{path} is not a stac-geoparquet snapshot of STAC items (its {name} column is "
                                 f"{schema.field(name).type}, not {what})")


def search_catalog(
    path: str,
    profile: SourceProfile,
    bbox: Sequence[float],
    start: date,
    end: date,
    root: str | None = None,
) -> list[Scene]:
    """Scenes of ``profile``'s collection in the snapshot, over a lon/lat bbox, dates inclusive."""
    import shapely
    from stac_geoparquet.arrow import stac_table_to_items

    table = _read(str(path), profile.collection, bbox, start, end)
    base = root or catalog_root(str(path))
    area = shapely.box(bbox[0], bbox[1], bbox[2], bbox[3])
    scenes = []
    for item in stac_table_to_items(table):
        if item.get("geometry") and not shapely.geometry.shape(item["geometry"]).intersects(area):
            continue
        scene = scene_from_item(item, profile, base=base)
        if scene is not None:
            scenes.append(scene)
    return sorted(scenes, key=lambda s: s.sort_key)
