"""A root's per-year GeoParquet manifests, read with range requests.

Only the footer and the row groups a query can touch are fetched: the
manifests are sorted spatially with a ``bbox`` covering column, so a small
bbox costs a few requests whatever the size of the year.
"""

from __future__ import annotations

import threading
from typing import Any

from tessera_ray.client.fetch import Fetcher, RangeFile
from tessera_ray.client.metadata import RootMetadata
from tessera_ray.errors import UserInputError
from tessera_ray.store.manifest import manifest_key
from tessera_ray.store.objects import ObjectNotFound


class Manifests:
    """The manifests of one root. Thread-safe; caches each year's published object keys."""

    def __init__(self, fetch: Fetcher, meta: RootMetadata) -> None:
        self._fetch = fetch
        self._meta = meta
        self._lock = threading.Lock()
        self._published: dict[int, frozenset[str]] = {}

    def units(self, year: int, bbox: tuple[float, float, float, float] | None = None) -> Any:
        """Published units of a year (GeoDataFrame), only those touching ``bbox`` if given.

        Reads the manifest with range requests: its footer, then only the row
        groups whose ``bbox`` column statistics can intersect the query.
        """
        import geopandas as gpd
        import pyarrow.parquet as pq
        import shapely

        self._meta.year_index(year)
        key = manifest_key(year)
        try:
            pf = pq.ParquetFile(RangeFile(self._fetch, key))
        except ObjectNotFound:
            raise UserInputError(f"{self._meta.url} has no manifest for {year}") from None
        groups = list(range(pf.metadata.num_row_groups))
        if bbox is not None:
            groups = [g for g in groups if _row_group_may_intersect(pf.metadata.row_group(g), bbox)]
        table = pf.read_row_groups(groups, use_threads=False) if groups else pf.schema_arrow.empty_table()
        frame = table.drop(["geometry"]).to_pandas()
        geometry = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        frame = gpd.GeoDataFrame(frame, geometry=geometry, crs="EPSG:4326")
        if bbox is not None and len(frame):
            w, s, e, n = bbox
            b = frame["bbox"].apply(lambda d: (d["xmin"] <= e) & (d["xmax"] >= w) & (d["ymin"] <= n) & (d["ymax"] >= s))
            frame = frame[b.astype(bool).to_numpy()].reset_index(drop=True)
        return frame

    def published_objects(self, year: int) -> frozenset[str]:
        """Keys of every object the year's manifest lists (read once, on the path of a missing shard)."""
        with self._lock:
            if year in self._published:
                return self._published[year]
        import pyarrow.parquet as pq

        try:
            column = pq.ParquetFile(RangeFile(self._fetch, manifest_key(year))).read(["objects"], use_threads=False)
            keys = frozenset(o["key"] for row in column.column("objects").to_pylist() for o in row or ())
        except ObjectNotFound:
            keys = frozenset()
        with self._lock:
            self._published[year] = keys
        return keys


def _row_group_may_intersect(rg: Any, bbox: tuple[float, float, float, float]) -> bool:
    """False only when a row group's ``bbox.*`` statistics prove none of its rows touches ``bbox``."""
    stats = {}
    for j in range(rg.num_columns):
        col = rg.column(j)
        if col.path_in_schema.startswith("bbox.") and col.statistics is not None and col.statistics.has_min_max:
            stats[col.path_in_schema[5:]] = (col.statistics.min, col.statistics.max)
    if len(stats) < 4:
        return True
    w, s, e, n = bbox
    return not (stats["xmin"][0] > e or stats["xmax"][1] < w or stats["ymin"][0] > n or stats["ymax"][1] < s)
