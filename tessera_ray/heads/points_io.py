"""Points in, embeddings out, in batches: ``tessera-ray sample`` in memory bounded by the batch size.

Input points are read ``batch`` at a time (CSV in chunks, (Geo)Parquet by
record batches; GeoJSON and other OGR formats have no streaming reader and
are read whole), each batch is sampled through the client (which groups its
points by chunk, one read per chunk touched; its chunk cache carries chunks
over from one batch to the next), and the rows are appended to the output
GeoParquet as they come, in input order. So memory is a batch plus a
constant, whatever the number of points; points sorted by location (or by
unit) read each chunk once.

The output is GeoParquet 1.0 (WKB points in EPSG:4326: input in another CRS
is reprojected to lon/lat for sampling) with the input's columns, then
``emb_000``.. and ``status``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tessera_ray.errors import UserInputError, squash
from tessera_ray.memory import release_freed_memory

BATCH = 50_000
"""Points per batch: about 250 MB of working memory at 128 dims (measured, jobs/bench_memory.py)."""


def iter_point_batches(path: Path, batch: int = BATCH) -> Iterator:
    """GeoDataFrames of at most ``batch`` points in EPSG:4326, in file order; one-line errors for bad files."""
    import pandas as pd

    suffix = path.suffix.lower()
    if not path.exists():
        raise UserInputError(f"points file {path} does not exist")
    seen = 0
    try:
        if suffix == ".csv":
            chunks = (_csv_points(path, chunk) for chunk in pd.read_csv(path, chunksize=batch))
        elif suffix in (".parquet", ".geoparquet"):
            chunks = _parquet_points(path, batch)
        else:  # GeoJSON, GeoPackage, ...: OGR has no streaming reader for them, read whole
            import geopandas as gpd

            whole = gpd.read_file(path)
            chunks = (whole.iloc[i:i + batch] for i in range(0, len(whole), batch))
        for frame in chunks:
            if frame.empty:
                continue
            if not (frame.geometry.geom_type == "Point").all():
                raise UserInputError(f"points file {path} holds geometries that are not points")
            if frame.crs is not None and frame.crs.to_epsg() != 4326:
                frame = frame.to_crs("EPSG:4326")
            seen += len(frame)
            yield frame
    except UserInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise UserInputError(f"cannot read points file {path}: {type(exc).__name__}: {squash(exc, 200)}") from None
    if not seen:
        raise UserInputError(f"points file {path} has no points")


def _csv_points(path: Path, table):
    import geopandas as gpd
    import pandas as pd

    cols = {c.lower(): c for c in table.columns}
    lon = next((cols[c] for c in ("lon", "longitude", "lng", "x") if c in cols), None)
    lat = next((cols[c] for c in ("lat", "latitude", "y") if c in cols), None)
    if lon is None or lat is None:
        raise UserInputError(f"points file {path} has no lon/lat columns (found: {', '.join(table.columns)})")
    xs, ys = pd.to_numeric(table[lon], errors="coerce"), pd.to_numeric(table[lat], errors="coerce")
    if xs.isna().any() or ys.isna().any():
        raise UserInputError(f"points file {path} has non-numeric or empty lon/lat values")
    return gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(xs, ys), crs="EPSG:4326")


def _parquet_points(path: Path, batch: int):
    import geopandas as gpd
    import pyarrow.parquet as pq
    import shapely

    file = pq.ParquetFile(path)
    geo = json.loads((file.schema_arrow.metadata or {}).get(b"geo", b"null"))
    if geo:
        column = geo["primary_column"]
        meta = geo["columns"][column]
        if meta.get("encoding", "WKB").upper() != "WKB":
            raise UserInputError(f"points file {path}: geometry encoding {meta['encoding']!r} (use WKB)")
        crs = _crs(meta.get("crs", "OGC:CRS84"))
    else:
        names = set(file.schema_arrow.names)
        if not {"lon", "lat"} <= names:
            raise UserInputError(f"points file {path} has neither a geometry nor lon/lat columns")
    for record_batch in file.iter_batches(batch_size=batch):
        table = record_batch.to_pandas()
        if geo:
            table[column] = shapely.from_wkb(table[column].to_numpy())
            yield gpd.GeoDataFrame(table, geometry=column, crs=crs)
        else:
            yield gpd.GeoDataFrame(table, geometry=gpd.points_from_xy(table.lon, table.lat), crs="EPSG:4326")


def _crs(value):
    from pyproj import CRS

    if value is None:  # GeoParquet: an explicit null means unknown; the default (absent) is lon/lat
        return None
    return CRS.from_user_input(value if isinstance(value, str) else json.dumps(value))


class ParquetAppender:
    """Appends GeoDataFrame batches to one GeoParquet 1.0 file (WKB geometry), schema fixed by the first."""

    def __init__(self, path: Path):
        self.path = path
        self.writer: Any = None  # a pyarrow ParquetWriter once the first batch fixes the schema
        self.schema: Any = None

    def append(self, frame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        import shapely

        column = frame.geometry.name
        table = pa.Table.from_pandas(frame.drop(columns=[column]), preserve_index=False)
        table = table.append_column(column, pa.array(shapely.to_wkb(frame.geometry.to_numpy()), pa.binary()))
        if self.writer is None:
            geo = {"version": "1.0.0", "primary_column": column,
                   "columns": {column: {"encoding": "WKB", "geometry_types": ["Point"],
                                        "crs": frame.crs.to_json_dict() if frame.crs is not None else None}}}
            metadata = {**(table.schema.metadata or {}), b"geo": json.dumps(geo).encode()}
            self.schema = table.schema.with_metadata(metadata)
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        try:
            table = table.select(self.schema.names).cast(self.schema)
        except (pa.ArrowInvalid, KeyError, ValueError) as exc:
            raise UserInputError(f"the points' columns change type between rows ({squash(exc, 160)}); "
                                 "give every column one type") from None
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def sample_to_parquet(reader, points: Path, year: int, depth: int | None, tmp: Path, batch: int = BATCH) -> dict:
    """Sample every point of ``points`` into GeoParquet ``tmp``; the count of points per status."""
    import geopandas as gpd
    import pandas as pd

    from tessera_ray.client import OUTSIDE

    counts: dict[str, int] = {}
    first_row = 0
    out = ParquetAppender(tmp)
    try:
        for frame in iter_point_batches(points, batch):
            values, status = reader.points(frame.geometry.x.to_numpy(), frame.geometry.y.to_numpy(), year, depth=depth)
            outside = np.flatnonzero(status == OUTSIDE)
            if len(outside):
                p = frame.geometry.iloc[outside[0]]
                raise UserInputError(
                    f"{len(outside)} of {len(frame)} points read so far are outside every zone grid (latitudes "
                    f"80S..84N), first at row {first_row + outside[0]}: ({p.x}, {p.y})"
                )
            columns = pd.DataFrame(values, columns=[f"emb_{i:03d}" for i in range(values.shape[1])], index=frame.index)
            columns["status"] = status.astype(str)
            kept = frame.drop(columns=columns.columns, errors="ignore")
            out.append(
                gpd.GeoDataFrame(pd.concat([kept, columns], axis=1), geometry=frame.geometry.name, crs=frame.crs)
            )
            for k, v in zip(*np.unique(columns["status"].to_numpy(), return_counts=True)):
                counts[str(k)] = counts.get(str(k), 0) + int(v)
            first_row += len(frame)
            del frame, values, status, columns, kept
            release_freed_memory()
    finally:
        out.close()
    return counts
