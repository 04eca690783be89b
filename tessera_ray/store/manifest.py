"""Per-year GeoParquet manifests: the published list of units.

:func:`publish` compacts the part records of a year into
``manifests/{year}.parquet`` (GeoParquet 1.1, polygons in EPSG:4326 with a
``bbox`` covering column, Hilbert-sorted, zstd, small row groups so readers
fetch only the row groups a bbox needs), then rewrites the consolidated Zarr
metadata. Each object is replaced atomically, and a unit's row is built only
from a part record whose objects are still there with the recorded sizes, so a
publish killed at any step leaves the previous valid state, and publishing
again gives the same manifest.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np

from tessera_ray.errors import DataError
from tessera_ray.store.objects import ObjectNotFound, Objects, open_objects
from tessera_ray.store.writer import PARTS_DIR, EmbeddingStore, PartRecord

log = logging.getLogger(__name__)

MANIFEST_DIR = "manifests"
ROW_GROUP_SIZE = 128


def manifest_key(year: int) -> str:
    return f"{MANIFEST_DIR}/{int(year)}.parquet"


@dataclass(frozen=True)
class PublishResult:
    year: int
    units: int
    rejected: tuple[str, ...]
    key: str


def publish(root: str, year: int) -> PublishResult:
    """Compact the year's part records into its manifest and consolidate metadata.

    Idempotent; safe to run again after a crash at any point.
    """
    store = EmbeddingStore.open(root)
    objects = store.objects
    records, rejected = [], []
    for key in objects.list(f"{PARTS_DIR}/{int(year)}/"):
        if not key.endswith(".json"):
            continue
        rec = PartRecord.from_json(objects.get(key))
        if all(objects.size(o["key"]) == o["size"] for o in rec.objects):
            records.append(rec)
        else:
            log.warning("unit %s %s: its objects are missing or changed; not published", rec.unit_id, year)
            rejected.append(rec.unit_id)
    data = manifest_bytes(records)
    objects.put(manifest_key(year), data)
    store.consolidate()
    return PublishResult(int(year), len(records), tuple(rejected), manifest_key(year))


def manifest_frame(records: list[PartRecord]):
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
                "objects": [dict(o) for o in r.objects],
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
        order = np.argsort(frame.geometry.hilbert_distance(total_bounds=(-180, -90, 180, 90)).to_numpy(), kind="stable")
        frame = frame.iloc[order].reset_index(drop=True)
    return frame


def manifest_bytes(records: list[PartRecord]) -> bytes:
    """GeoParquet 1.1 bytes of the manifest (zstd, bbox covering, small row groups)."""
    frame = manifest_frame(sorted(records, key=lambda r: r.unit_id))
    buf = io.BytesIO()
    frame.to_parquet(
        buf,
        index=False,
        compression="zstd",
        schema_version="1.1.0",
        write_covering_bbox=True,
        row_group_size=ROW_GROUP_SIZE,
    )
    return buf.getvalue()


def read_manifest(root: str | Objects, year: int):
    """The manifest of a year as a GeoDataFrame (empty if none is published)."""
    import geopandas as gpd

    objects = open_objects(root) if isinstance(root, str) else root
    try:
        data = objects.get(manifest_key(year))
    except ObjectNotFound:
        return None
    try:
        return gpd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt manifest
        raise DataError(f"manifest {objects.child_url(manifest_key(year))} is unreadable: {exc}") from None


def published_unit_ids(objects: Objects, year: int) -> set[str]:
    import pyarrow.parquet as pq

    try:
        data = objects.get(manifest_key(year))
    except ObjectNotFound:
        return set()
    return set(pq.read_table(io.BytesIO(data), columns=["unit_id"]).column("unit_id").to_pylist())
