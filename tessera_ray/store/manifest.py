"""Per-year GeoParquet manifests: the format of the published list of units (no I/O policy here).

A manifest, ``manifests/{year}.parquet``, is GeoParquet 1.1: one row per
published unit, polygons in EPSG:4326 with a ``bbox`` covering column, zstd,
row groups of :data:`ROW_GROUP_SIZE` rows so that readers fetch only the row
groups a bbox needs. Its rows are sorted along a Hilbert curve over the whole
globe (ties by unit id), so the file is a function of its set of rows alone:
publishing the same units in one go or in many batches, in any order, gives
the same bytes. Row-group statistics are kept only for the columns readers
filter on (:data:`STATISTICS_COLUMNS`); the others (object keys, checksums,
geometry) would only grow the footer every reader fetches first.

During a job a publish appends instead (:func:`append`): the new
rows, Hilbert-sorted among themselves, become new row groups after the old
ones, whose bytes are kept as they are; the footer is edited at the Thrift
level (:mod:`tessera_ray.store.footer`). Such a file says how many of its rows
were appended (:data:`APPENDED_KEY`); a compaction, the full rewrite above,
puts them back in the global order, so the manifest a job leaves at its end
is again a function of its rows (docs/store.md, "How the manifest grows").

How a manifest is written (verified, merged, replaced atomically against
concurrent publishers) is :mod:`tessera_ray.store.publication`; both writers and
readers name the object with :func:`manifest_key`.
"""

from __future__ import annotations

import base64
import io
import json
from typing import TYPE_CHECKING

import numpy as np

from tessera_ray.errors import DataError
from tessera_ray.store import footer
from tessera_ray.store.objects import ObjectNotFound, Objects, open_objects

if TYPE_CHECKING:
    import geopandas as gpd
    import pyarrow as pa

    from tessera_ray.store.writer import PartRecord

MANIFEST_DIR = "manifests"
ROW_GROUP_SIZE = 128
HILBERT_BOUNDS = (-180, -90, 180, 90)
STATISTICS_COLUMNS = (
    "year", "zone", "unit_id", "shard_row", "shard_col", "unit_size", "valid_pixels", "nodata_pixels",
    "unprocessed_pixels", "s2_scenes", "s1_scenes", "created", "bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax",
)
"""Columns with row-group min/max: the footer of a 100,000-unit manifest is 1.9 MB instead of 3.9 MB."""
APPENDED_KEY = b"tessera_ray.appended_rows"
"""Footer metadata of an appended manifest: how many of its last rows are outside the global Hilbert order."""


def manifest_key(year: int) -> str:
    """The object holding a year's manifest, for writers and readers alike."""
    return f"{MANIFEST_DIR}/{int(year)}.parquet"


def manifest_frame(records: list[PartRecord]) -> gpd.GeoDataFrame:
    """The manifest rows of part records, as a GeoDataFrame sorted along a Hilbert curve."""
    import geopandas as gpd
    import pandas as pd

    rows = []
    for r in records:
        rows.append(
            {
                "year": np.int32(r.year),
                "zone": np.int16(r.zone),
                "unit_id": r.unit_id,
                "shard_row": np.int32(r.shard_row),
                "shard_col": np.int32(r.shard_col),
                "unit_size": np.int32(r.unit_size),
                "valid_pixels": np.int64(r.valid_pixels),
                "nodata_pixels": np.int64(r.nodata_pixels),
                "unprocessed_pixels": np.int64(r.unprocessed_pixels),
                "s2_scenes": np.int32(r.scenes.get("s2", 0)),
                "s1_scenes": np.int32(r.scenes.get("s1", 0)),
                "model_id": r.model_id,
                "model_checksum": r.model_checksum,
                "code_version": r.code_version,
                "created": pd.Timestamp(r.created),
                "objects": [{"key": o["key"], "size": o["size"], "sha256": o["sha256"]} for o in r.objects],
                "geometry": r.unit.polygon_lonlat(),
            }
        )
    columns = [
        "year", "zone", "unit_id", "shard_row", "shard_col", "unit_size", "valid_pixels", "nodata_pixels",
        "unprocessed_pixels", "s2_scenes", "s1_scenes", "model_id", "model_checksum", "code_version",
        "created", "objects", "geometry",
    ]
    frame = gpd.GeoDataFrame(pd.DataFrame(rows, columns=columns), geometry="geometry", crs="EPSG:4326")
    if len(frame) > 1:
        frame = frame.sort_values("unit_id", kind="stable")
        order = np.argsort(frame.geometry.hilbert_distance(total_bounds=HILBERT_BOUNDS).to_numpy(), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
    return frame


def records_table(records: list[PartRecord]) -> pa.Table:
    """The rows of part records as an Arrow table in the manifest's schema (geometry as WKB, ``bbox``).

    Built through geopandas' own GeoParquet writer, so its schema and ``geo``
    metadata are exactly what a manifest written in one go holds.
    """
    if not records:
        return _empty_table()
    buf = io.BytesIO()
    manifest_frame(records).to_parquet(buf, index=False, schema_version="1.1.0", write_covering_bbox=True)
    table = parquet_table(buf.getvalue())
    return table


def _empty_table() -> pa.Table:
    """A manifest table with no rows, whose schema and metadata are those of a manifest with rows.

    pandas and geopandas describe columns by their values: written from an empty
    frame, every column's type would be null and its pandas type "empty", and the
    ``geo`` geometry types []; a manifest that started empty (a job whose every
    unit failed) would keep saying so after its units were appended, and differ
    from a manifest of the same rows written in one go. So the schema comes from
    one stand-in row, which is then dropped, with its bbox.
    """
    from tessera_ray.grid import Unit
    from tessera_ray.store.writer import PartRecord

    unit = Unit(31, 0, 0, 64)
    stand_in = PartRecord(year=2000, zone=unit.zone, unit_id=unit.id, shard_row=unit.row, shard_col=unit.col,
                          unit_size=unit.size, valid_pixels=0, nodata_pixels=0, unprocessed_pixels=0,
                          created="2000-01-01T00:00:00+00:00", objects=({"key": "", "size": 0, "sha256": ""},))
    table = records_table([stand_in]).slice(0, 0)
    meta = dict(table.schema.metadata)
    geo = json.loads(meta[b"geo"])
    geo["columns"][geo["primary_column"]].pop("bbox", None)
    meta[b"geo"] = json.dumps(geo, sort_keys=True).encode()
    return table.replace_schema_metadata(meta)


def parquet_table(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """Parquet bytes as an Arrow table, decoded on this thread.

    Arrow's thread pool, once a read has used it, can abort the interpreter at
    exit ("terminate called without an active exception", exit 134: apache/arrow
    issues 34314 and 50482); measured here, 7 to 19 runs in 40 of a script that
    reads a small Parquet from memory and exits. Manifests are small: one thread
    decodes them as fast, and the process exits with its own status.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pq.read_table(pa.BufferReader(data), columns=columns, use_threads=False)


def read_table(data: bytes, where: str = "manifest") -> pa.Table:
    """A manifest's bytes as an Arrow table; anything unreadable is a :class:`DataError` naming ``where``."""
    try:
        return parquet_table(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt manifest
        raise DataError(f"manifest {where} is unreadable: {exc}") from None


def unit_ids(table: pa.Table | None) -> list[str]:
    return [] if table is None else table.column("unit_id").to_pylist()


def merge(current: pa.Table | None, new: pa.Table) -> pa.Table:
    """``current`` with the rows of ``new`` added; a unit in both keeps the row of ``new``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if current is None or current.num_rows == 0:
        return new
    if new.num_rows == 0:
        return current
    keep = pc.invert(pc.is_in(current.column("unit_id"), value_set=new.column("unit_id")))
    return pa.concat_tables([current.filter(keep), new.cast(current.schema)])


def manifest_bytes(rows: pa.Table | list[PartRecord]) -> bytes:
    """The manifest file of a table of rows (or of part records): Hilbert-sorted, zstd, small row groups."""

    table = _sorted(records_table(rows) if isinstance(rows, list) else rows)
    meta = _metadata(table)
    meta.pop(APPENDED_KEY, None)
    return _file_bytes(table.replace_schema_metadata(meta))


def _file_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=ROW_GROUP_SIZE,
                   write_statistics=list(STATISTICS_COLUMNS))
    return buf.getvalue()


def appended_rows(data: bytes) -> int:
    """How many rows of a manifest file were appended since its last full rewrite (0 for a compact one)."""
    return _appended(footer.split(data))


def _appended(foot: footer.Footer) -> int:
    for kv in (foot.get(footer.FMD_KEY_VALUE) or (0, []))[1]:
        if kv[0][2] == APPENDED_KEY:
            return int(kv[1][2])
    return 0


def append(data: bytes, rows: pa.Table, where: str = "manifest") -> tuple[bytes, pa.ChunkedArray]:
    """The manifest file ``data`` with ``rows`` (units not in it) appended as new row groups, and the
    appended rows' unit ids in the order they were written.

    The old pages and row-group metadata are kept byte for byte; the new rows
    are Hilbert-sorted among themselves and written in row groups of at most
    :data:`ROW_GROUP_SIZE` rows, exactly as a full rewrite writes them (same
    schema, compression and statistics), then moved behind the old pages. The
    footer's row count, the ``geo`` bbox and :data:`APPENDED_KEY` are updated.
    Readers (pyarrow, DuckDB, hyparquet) see one ordinary file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = footer.split(data, where)
    stored = [kv[1][2] for kv in old.get(footer.FMD_KEY_VALUE)[1] if kv[0][2] == b"ARROW:schema"]
    schema = _stored_schema(stored[0]) if stored else pq.read_schema(pa.BufferReader(data))
    table = _sorted(rows.select(schema.names).cast(schema))
    batch = _file_bytes(table.replace_schema_metadata({}))  # the schema and metadata are the old footer's
    new = footer.split(batch, "appended rows")
    etype, groups = old.get(footer.FMD_ROW_GROUPS)
    shift, added = old.start - len(footer.MAGIC), []
    for i, raw in enumerate(new.get(footer.FMD_ROW_GROUPS)[1]):
        fields = footer.decode(raw)
        footer.shift_row_group(fields, shift, len(groups) + i)
        added.append(footer.Raw(footer.encode(fields)))
    old.set(footer.FMD_ROW_GROUPS, (etype, groups + added))
    old.set(footer.FMD_NUM_ROWS, old.get(footer.FMD_NUM_ROWS) + table.num_rows)
    appended = _appended(old) + table.num_rows
    meta = _metadata(table, prior=schema.metadata)
    pairs, seen = old.get(footer.FMD_KEY_VALUE)[1], set()
    for kv in pairs:
        key = kv[0][2]
        seen.add(key)
        if key == b"geo":
            _set_value(kv, meta[b"geo"])
        elif key == b"ARROW:schema":  # pyarrow takes the schema's metadata from here, not from the pairs
            _set_value(kv, base64.b64encode(_stored_schema(kv[1][2]).with_metadata(meta).serialize().to_pybytes()))
        elif key == APPENDED_KEY:
            _set_value(kv, str(appended).encode())
    if APPENDED_KEY not in seen:
        pairs.append([[1, footer.BINARY, APPENDED_KEY], [2, footer.BINARY, str(appended).encode()]])
    body = b"".join((memoryview(data)[:old.start], batch[len(footer.MAGIC):new.start], footer.footer_bytes(old.fields)))
    return body, table.column("unit_id")


def _stored_schema(value: bytes) -> pa.Schema:
    import pyarrow as pa

    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(value)))


def _set_value(kv: footer.Fields, value: bytes) -> None:
    if len(kv) > 1 and kv[1][0] == 2:
        kv[1][2] = value
    else:
        kv.insert(1, [2, footer.BINARY, value])


def _sorted(table: pa.Table) -> pa.Table:
    """Rows along a Hilbert curve of their bbox centres (what ``hilbert_distance`` of the polygons gives),
    then unit id."""
    import geopandas as gpd
    import shapely

    if table.num_rows < 2:
        return table
    bbox = table.column("bbox").combine_chunks()
    x = (bbox.field("xmin").to_numpy() + bbox.field("xmax").to_numpy()) / 2.0
    y = (bbox.field("ymin").to_numpy() + bbox.field("ymax").to_numpy()) / 2.0
    distance = gpd.GeoSeries(shapely.points(x, y)).hilbert_distance(total_bounds=HILBERT_BOUNDS).to_numpy()
    ids = np.asarray(table.column("unit_id").to_pylist(), dtype=object)
    return table.take(np.lexsort((ids, distance)))


def _metadata(table: pa.Table, prior: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
    """The schema metadata with the ``geo`` bbox of the geometry column made to cover every row
    (and, appending, the rows of ``prior``'s bbox)."""
    meta = dict(prior or table.schema.metadata or {})
    geo = json.loads(meta[b"geo"])
    column = geo["columns"][geo["primary_column"]]
    if table.num_rows:
        bbox = table.column("bbox").combine_chunks()
        box = [
            float(np.min(bbox.field("xmin").to_numpy())), float(np.min(bbox.field("ymin").to_numpy())),
            float(np.max(bbox.field("xmax").to_numpy())), float(np.max(bbox.field("ymax").to_numpy())),
        ]
        old = column.get("bbox") if prior is not None else None
        if old and len(old) == 4 and all(np.isfinite(old)):
            box = [min(box[0], old[0]), min(box[1], old[1]), max(box[2], old[2]), max(box[3], old[3])]
        column["bbox"] = box
    meta[b"geo"] = json.dumps(geo, sort_keys=True).encode()  # one order, whatever wrote it
    return meta


def read_manifest(root: str | Objects, year: int) -> gpd.GeoDataFrame | None:
    """The manifest of a year as a GeoDataFrame (None if none is published)."""
    import geopandas as gpd
    import pyarrow as pa

    objects = open_objects(root) if isinstance(root, str) else root
    try:
        data = objects.get(manifest_key(year))
    except ObjectNotFound:
        return None
    try:
        return gpd.read_parquet(pa.BufferReader(data), use_threads=False)  # see parquet_table
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt manifest
        raise DataError(f"manifest {objects.child_url(manifest_key(year))} is unreadable: {exc}") from None


def published_unit_ids(objects: Objects, year: int) -> set[str]:
    try:
        data = objects.get(manifest_key(year))
    except ObjectNotFound:
        return set()
    return set(parquet_table(data, ["unit_id"]).column("unit_id").to_pylist())
