"""Range-read client for a published root (``https://``, ``s3://`` or a path).

It reads the sharded Zarr arrays itself rather than through zarr-python, so
that a read costs only what it must: points are grouped by shard, each shard's
index is read at most once per batch and cached (with the index at the start of
the shard, only the rows of entries a batch needs; a whole index is
CRC32C-checked), and the inner chunks are then fetched concurrently, one range
request per chunk (neighbouring chunks merged into one request). Arrays marked
``tessera_ray:fixed_offsets`` (raw chunks, all written, tagged, in C order)
need no index read at all: a chunk's offset follows from the metadata, and a
chunk whose tag or CRC32C does not match there is read again through the index. Every chunk's
CRC32C is checked too, so a corrupt object is an error naming the shard, never
wrong numbers.

    root = open_root("https://example.org/tessera")
    px = root.pixel(0.1, 52.2, 2024)             # Pixel(values (128,), status)
    px16 = root.pixel(0.1, 52.2, 2024, depth=16) # a Matryoshka store: reads only embeddings_d16 + scales
    X, status = root.points(lons, lats, 2024)    # (N, 128) float32, NaN where none
    zones = root.region((w, s, e, n), 2024)      # one ZoneRegion per UTM zone
    array, transform, crs = root.mosaic((w, s, e, n), 2024, crs="EPSG:3857")
    root.export_geotiff((w, s, e, n), 2024, "region.tif")   # 128-band COG
    units = root.units(2024, bbox=(w, s, e, n))  # manifest rows, only the row groups needed
    root.stats                                   # requests and bytes so far, by kind
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from affine import Affine

from tessera_ray.codes import dequantise
from tessera_ray.errors import DataError, TesseraError, UserInputError
from tessera_ray.memory import release_freed_memory
from tessera_ray.grid import (RESOLUTION, WGS84, ZONE_X0, ZONE_Y0, Window, roi_from_bbox, roi_window,
                              transform_points, utm_zone, zone_grid)
from tessera_ray.redact import redact
from tessera_ray.store.layout import DEPTHS_ATTR, LAYOUT_ATTR, STORE_DIMS, YEARS_ATTR, ZARR_DIR, is_embeddings_array
from tessera_ray.store.shards import EMPTY as _EMPTY
from tessera_ray.store.shards import TAG_NBYTES, ShardedArray, chunk_tag, crc32c
from tessera_ray.store.manifest import manifest_key
from tessera_ray.store.objects import ObjectNotFound, Objects, open_objects

VALID, NODATA, NOT_PROCESSED, OUTSIDE = "valid", "no_data", "not_processed", "outside"
_MERGE_GAP = 16384  # bytes of unneeded data worth reading to save a request (4 raw scales chunks)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Pixel:
    """One pixel: 128 (or ``depth``) dequantised values (NaN unless valid) and why."""

    values: np.ndarray
    status: str  # valid | no_data | not_processed
    zone: int
    row: int
    col: int


@dataclass(frozen=True)
class ZoneRegion:
    """The part of a region on one zone grid, on that grid (no resampling)."""

    zone: int
    crs: str
    transform: object  # affine.Affine of the window's upper-left corner
    window: Window
    embeddings: np.ndarray  # (H, W, 128 or depth) float32, NaN where no embedding
    scales: np.ndarray  # (H, W) float32 with the store's sentinels

    @property
    def status(self) -> np.ndarray:
        return _status_of(self.scales)


def _status_of(scales: np.ndarray) -> np.ndarray:
    out = np.full(scales.shape, NOT_PROCESSED, dtype=object)
    out[np.isfinite(scales)] = VALID
    out[np.isnan(scales)] = NODATA
    return out


# --------------------------------------------------------------------------- root


class Root:
    """A published root opened for reading. Thread-safe; caches shard indexes."""

    max_region_pixels = 4_000_000  # 2 GB of float32 embeddings

    def __init__(self, objects: Objects, threads: int = 16, chunk_cache: int = 256):
        self.objects = objects
        self.threads = threads
        self.stats: Counter[str] = Counter()  # requests and bytes by kind, for benchmarks and tests
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._published: dict[int, frozenset[str]] = {}
        self._chunks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._chunk_cache = chunk_cache
        self._io = ThreadPoolExecutor(threads, thread_name_prefix="tessera-read")
        self._arrays_pool = ThreadPoolExecutor(2, thread_name_prefix="tessera-array")
        self._load_metadata()

    @property
    def url(self) -> str:
        return self.objects.url

    def close(self) -> None:
        """Stop the reader's threads (they also go when the Root is garbage-collected)."""
        self._io.shutdown(wait=False)
        self._arrays_pool.shutdown(wait=False)

    def __enter__(self) -> "Root":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load_metadata(self) -> None:
        key = f"{ZARR_DIR}/zarr.json"
        try:
            meta = json.loads(self._get("metadata", key))
        except ObjectNotFound:
            hint = "; give the folder that holds tessera.zarr" if self.url.rstrip("/").endswith(ZARR_DIR) else ""
            raise UserInputError(f"{self.url} is not a tessera-ray root (no {key}){hint}") from None
        except (ValueError, UnicodeDecodeError):
            raise UserInputError(f"{self.url} is not a tessera-ray root ({key} is not Zarr metadata)") from None
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        if not isinstance(attrs, dict):
            raise UserInputError(f"{self.url} is not a tessera-ray root ({key} is JSON, but not Zarr group metadata)")
        if LAYOUT_ATTR not in attrs:
            raise UserInputError(f"{self.url} holds a Zarr store that is not a tessera-ray root")
        try:
            self._read_attributes(meta, attrs)
        except DataError as exc:
            raise DataError(f"{self.objects.child_url(key)} is malformed: {exc}") from None
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DataError(f"{self.objects.child_url(key)} is malformed ({detail})") from None

    def _read_attributes(self, meta: dict, attrs: dict) -> None:
        """The root's years, arrays and depths from its metadata; any wrong shape raises (a DataError above)."""
        consolidated = meta.get("consolidated_metadata") or {}
        if not isinstance(consolidated, dict) or not isinstance(consolidated.get("metadata", {}), dict):
            raise DataError("its consolidated_metadata is not an object of nodes")
        nodes = consolidated.get("metadata", {})
        years = attrs.get(YEARS_ATTR, [])
        if not isinstance(years, list) or not all(isinstance(y, int) and not isinstance(y, bool) for y in years):
            raise DataError(f"{YEARS_ATTR} is {json.dumps(years)[:60]}, not a list of years")
        self.attrs = attrs
        self.years: list[int] = [int(y) for y in years]
        self.model = str(attrs.get("geoemb:model", ""))
        self.arrays: dict[tuple[int, str], ShardedArray] = {}
        for path, node in nodes.items():
            parts = path.split("/")
            if len(parts) == 2 and parts[0].startswith("utm") and (parts[1] == "scales" or is_embeddings_array(parts[1])):
                if not parts[0][3:].isdigit() or not 1 <= int(parts[0][3:]) <= 60:
                    raise DataError(f"group {parts[0]!r} is not a UTM zone utm1..utm60")
                array = ShardedArray.from_metadata(f"{ZARR_DIR}/{path}", node)
                ndim = 3 if parts[1] == "scales" else 4  # (time, y, x) and (time, band, y, x)
                if len(array.shape) != ndim:
                    raise DataError(f"{path} has {len(array.shape)} dimensions, expected {ndim}")
                self.arrays[(int(parts[0][3:]), parts[1])] = array
        self.zones = sorted({z for z, _ in self.arrays})
        # Matryoshka depths (TESSERA.md 5b): depth -> array; a store without the attribute has only all 128 dims
        self.depths: dict[int, str] = {int(d["dimensions"]): str(d["array"]) for d in attrs.get(DEPTHS_ATTR) or []}
        self.depths.setdefault(STORE_DIMS, "embeddings")

    def depth_array(self, depth: int | None) -> tuple[str, int]:
        """The array holding ``depth`` dims (None: all 128) and its width; a clear error for a depth not stored."""
        if depth is None:
            return "embeddings", STORE_DIMS
        if int(depth) not in self.depths:
            raise UserInputError(
                f"depth {depth} is not in {self.url}; it has depth(s) {', '.join(map(str, sorted(self.depths)))}"
            )
        return self.depths[int(depth)], int(depth)

    # ------------------------------------------------------------ I/O

    def _get(self, kind: str, key: str, start: int | None = None, length: int | None = None) -> bytes:
        """One GET; ``kind`` (metadata, index, chunks, manifest) only feeds :attr:`stats`."""
        data = self.objects.get(key) if start is None else self.objects.get_range(key, start, length)
        with self._lock:
            self.stats[f"{kind}_requests"] += 1
            self.stats[f"{kind}_bytes"] += len(data)
        return data

    def year_index(self, year: int) -> int:
        """Position of ``year`` on the time axis; a clear error if the root does not hold it."""
        if int(year) not in self.years:
            raise UserInputError(f"year {year} is not in {self.url}; it has {self.years or 'no years'}")
        return self.years.index(int(year))

    def _index(self, arr: ShardedArray, shard_coords: tuple, numbers: list[int]) -> np.ndarray | None:
        """The chunk index entries of a shard (at least ``numbers``); None when the shard does not exist.

        One request per call at most, its result cached. An index at the end
        of the shard is read whole (a suffix range, CRC32C-checked). An index at
        the start is read whole when most of it is needed, otherwise only the
        chunk rows asked for and their neighbours (6 KB for a 4096/32 shard);
        each chunk's own CRC32C still guards the data.
        """
        key = arr.shard_key(shard_coords)
        with self._lock:
            cached = self._indexes.get(key, ())
        if cached is None:
            return None
        entries, known = cached if cached else (None, None)
        missing = [n for n in numbers if known is None or not known[n]]
        if not missing:
            return entries
        n_chunks = int(np.prod(arr.chunks_per_shard))
        per_row = arr.chunks_per_shard[-1]
        # whole chunk rows, one above and one below: neighbouring reads then need no index request
        lo = max(0, (min(missing) // per_row - 1) * per_row)
        hi = min(n_chunks - 1, (max(missing) // per_row + 2) * per_row - 1)
        whole = not arr.index_at_start or (hi - lo + 1) * 2 > n_chunks
        try:
            if whole:
                nbytes = arr.index_nbytes
                data = self._get("index", key, 0 if arr.index_at_start else -nbytes, nbytes)
            else:
                data = self._get("index", key, 16 * lo, 16 * (hi - lo + 1))
        except ObjectNotFound:
            self._check_absent(key, shard_coords)
            with self._lock:
                self._indexes[key] = None
            return None
        if entries is None:
            entries = np.full((n_chunks, 2), _EMPTY, "uint64")
            known = np.zeros(n_chunks, bool)
        if whole:
            entries[:] = arr.decode_index(data, self.objects.child_url(key))
            known[:] = True
        else:
            if len(data) != 16 * (hi - lo + 1):
                raise DataError(f"shard {self.objects.child_url(key)} is shorter than its index: the object is corrupt")
            entries[lo : hi + 1] = arr.decode_index_entries(data)
            known[lo : hi + 1] = True
        with self._lock:
            self._indexes[key] = (entries, known)
        return entries

    def _check_absent(self, key: str, shard_coords: tuple) -> None:
        """A shard may be absent only if no manifest lists it: a published one that is gone is bad data."""
        year = self.years[shard_coords[0]]
        if key in self._published_objects(year):
            raise DataError(f"{self.objects.child_url(key)} is missing, but the manifest of {year} says it was published")

    def _published_objects(self, year: int) -> frozenset[str]:
        """Keys of every object the year's manifest lists (read once, on the path of a missing shard)."""
        with self._lock:
            if year in self._published:
                return self._published[year]
        import pyarrow.parquet as pq

        try:
            column = pq.ParquetFile(_RangeFile(self, manifest_key(year))).read(["objects"], use_threads=False)
            keys = frozenset(o["key"] for row in column.column("objects").to_pylist() for o in row or ())
        except ObjectNotFound:
            keys = frozenset()
        with self._lock:
            self._published[year] = keys
        return keys

    def _chunks_for(self, arr: ShardedArray, wanted: dict[tuple, list[int]]) -> dict[tuple, np.ndarray | None]:
        """Decode inner chunks: ``{shard_coords: [chunk numbers]}`` -> ``{(shard, n): array | None}``.

        Indexes are fetched concurrently first, then the chunk byte ranges,
        neighbouring ranges of one shard merged into one request.
        """
        out: dict[tuple, np.ndarray | None] = {}
        need: dict[tuple, list[int]] = {}
        for shard, numbers in wanted.items():
            for n in sorted(set(numbers)):
                cached = self._cached_chunk((arr.key, shard, n))
                if cached is not None:
                    out[(shard, n)] = cached
                else:
                    need.setdefault(shard, []).append(n)
        if arr.fixed_offsets:
            need = self._fixed_chunks(arr, need, out)
        shards = list(need)
        indexes = dict(zip(shards, self._io.map(lambda s: self._index(arr, s, need[s]), shards)))
        jobs = []
        for shard, numbers in need.items():
            index = indexes[shard]
            todo = []
            for n in numbers:
                if index is None or index[n, 0] == _EMPTY:
                    out[(shard, n)] = None
                else:
                    todo.append((int(index[n, 0]), int(index[n, 1]), n))
            jobs += [self._io.submit(self._fetch_run, arr, shard, run) for run in _merge_ranges(todo)]
        for job in jobs:
            out.update(job.result())
        return out

    def _fixed_chunks(self, arr: ShardedArray, need: dict[tuple, list[int]], out: dict) -> dict[tuple, list[int]]:
        """Fetch chunks of fixed-offset shards at their computed offsets, no index read.

        Fills ``out`` with the chunks whose tag (``TRfo`` + chunk number) and
        CRC32C match (None for a shard that does not exist) and returns those
        that did not, to be read through the shard index: a shard not laid out
        densely (another writer, another order) is then still read right, and
        a corrupt chunk fails there, naming the shard. Shards whose index is already cached use it instead.
        """
        size = arr.fixed_stride
        jobs, rest = [], {}
        for shard, numbers in need.items():
            with self._lock:
                indexed = arr.shard_key(shard) in self._indexes
            if indexed:
                rest[shard] = numbers
                continue
            todo = [(arr.fixed_offset(n), size, n) for n in numbers]
            jobs += [(shard, self._io.submit(self._fetch_fixed_run, arr, shard, run)) for run in _merge_ranges(todo)]
        for shard, job in jobs:
            got, failed = job.result()
            out.update(got)
            if failed:
                rest.setdefault(shard, []).extend(failed)
                with self._lock:
                    self.stats["fixed_offset_fallbacks"] += len(failed)
        return rest

    def _fetch_fixed_run(self, arr: ShardedArray, shard: tuple, run: list) -> tuple[dict, list[int]]:
        key = arr.shard_key(shard)
        start = run[0][0]
        end = max(off + size for off, size, _ in run)
        try:
            data = self._get("chunks", key, start, end - start)
        except ObjectNotFound:
            self._check_absent(key, shard)
            return {(shard, n): None for _, _, n in run}, []
        except DataError:  # the object is shorter than a dense shard: not one, ask its index
            return {}, [n for _, _, n in run]
        got, failed = {}, []
        for off, size, n in run:
            piece = data[off - start : off - start + size]
            tag, piece = piece[:TAG_NBYTES], piece[TAG_NBYTES:]
            ok = len(piece) == size - TAG_NBYTES and tag == chunk_tag(n)
            if not ok or crc32c(piece[:-4]) != int.from_bytes(piece[-4:], "little"):
                failed.append(n)
                continue
            chunk = arr.decode_chunk(piece, f"shard {self.objects.child_url(key)} chunk {n}")
            self._cache_chunk((arr.key, shard, n), chunk)
            got[(shard, n)] = chunk
        return got, failed

    def _fetch_run(self, arr: ShardedArray, shard: tuple, run: list) -> dict:
        key = arr.shard_key(shard)
        start = run[0][0]
        end = max(off + size for off, size, _ in run)
        data = self._get("chunks", key, start, end - start)
        if len(data) != end - start:
            raise DataError(f"shard {self.objects.child_url(key)} is shorter than its index says: the object is corrupt")
        out = {}
        for off, size, n in run:
            chunk = arr.decode_chunk(data[off - start : off - start + size], f"shard {self.objects.child_url(key)} chunk {n}")
            self._cache_chunk((arr.key, shard, n), chunk)
            out[(shard, n)] = chunk
        return out

    def _cached_chunk(self, k: tuple) -> np.ndarray | None:
        with self._lock:
            chunk = self._chunks.get(k)
            if chunk is not None:
                self._chunks.move_to_end(k)
            return chunk

    def _cache_chunk(self, k: tuple, chunk: np.ndarray) -> None:
        with self._lock:
            self._chunks[k] = chunk
            while len(self._chunks) > self._chunk_cache:
                self._chunks.popitem(last=False)

    # ------------------------------------------------------------ manifests

    def units(self, year: int, bbox: tuple[float, float, float, float] | None = None):
        """Published units of a year (GeoDataFrame), only those touching ``bbox`` if given.

        Reads the manifest with range requests: its footer, then only the row
        groups whose ``bbox`` column statistics can intersect the query.
        """
        import geopandas as gpd
        import pyarrow.parquet as pq
        import shapely

        self.year_index(year)
        key = manifest_key(year)
        try:
            pf = pq.ParquetFile(_RangeFile(self, key))
        except ObjectNotFound:
            raise UserInputError(f"{self.url} has no manifest for {year}") from None
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

    # ------------------------------------------------------------ pixel reads

    def read_pixels(self, zone: int, rows, cols, year: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (N, K) and scales (N,) of pixels of one zone grid (+inf where not processed).

        ``depth`` K (a Matryoshka store) reads only that prefix array and ``scales``; None reads all 128 dims.
        """
        rows, cols = np.asarray(rows, "int64"), np.asarray(cols, "int64")
        name, width = self.depth_array(depth)
        t = self.year_index(year)
        q = np.zeros((len(rows), width), "int8")
        s = np.full(len(rows), np.inf, "float32")
        if (zone, name) not in self.arrays or not len(rows):
            self._check_zone_has(zone, name)
            return q, s
        emb, sca = self.arrays[(zone, name)], self.arrays[(zone, "scales")]
        fe = self._arrays_pool.submit(self._gather, emb, (t, 0), rows, cols, q)
        fs = self._arrays_pool.submit(self._gather, sca, (t,), rows, cols, s)
        absent = fe.result()
        fs.result()
        lost = absent & np.isfinite(s)
        if lost.any():
            i = int(np.flatnonzero(lost)[0])
            self._lost_chunks(emb, (t, 0), int(rows[i]), int(cols[i]), int(lost.sum()))
        return q, s

    def _gather(self, arr: ShardedArray, lead: tuple, rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Fill ``out[i]`` with the array's value(s) at pixel (rows[i], cols[i]); True where its chunk is absent.

        One pass per touched chunk, not per point; the chunk geometry is the array's own (prefix arrays
        have wider chunks than ``scales``).
        """
        size, c = arr.shard_shape[-1], arr.chunk_shape[-1]
        n = ((rows % size) // c) * (size // c) + (cols % size) // c
        groups, members = np.unique(np.stack([rows // size, cols // size, n], axis=1), axis=0, return_inverse=True)
        wanted: dict[tuple, list[int]] = {}
        for a, b, k in groups.tolist():
            wanted.setdefault((*lead, a, b), []).append(k)
        chunks = self._chunks_for(arr, wanted)
        yi, xi = (rows % size) % c, (cols % size) % c
        members = members.ravel()
        order = np.argsort(members, kind="stable")
        bounds = np.searchsorted(members[order], np.arange(len(groups) + 1))
        absent = np.zeros(len(rows), bool)
        for g, (a, b, k) in enumerate(groups.tolist()):
            idx = order[bounds[g] : bounds[g + 1]]
            chunk = chunks[((*lead, a, b), k)]
            if chunk is None:
                absent[idx] = True
                continue
            values = chunk[0][..., yi[idx], xi[idx]]  # (m,) for scales, (K, m) for embeddings
            out[idx] = values.T if values.ndim == 2 else values
        return absent

    def _check_zone_has(self, zone: int, name: str) -> None:
        """A zone with data but without a declared depth's array is an inconsistent store, not an empty zone."""
        if (zone, "scales") in self.arrays and (zone, name) not in self.arrays:
            raise DataError(f"{self.url}: zone {zone} has no array {name} although the root declares it")

    def _lost_chunks(self, arr: ShardedArray, lead: tuple, row: int, col: int, count: int) -> None:
        """Pixels with a valid scale whose embeddings chunk is absent: a lost object, an error, never zeros.

        The writer stores every embeddings chunk (any depth) that covers a valid pixel.
        """
        size = arr.shard_shape[-1]
        key = arr.shard_key((*lead, row // size, col // size))
        raise DataError(
            f"{self.objects.child_url(key)} has no chunk for {count} pixel(s) whose scale is valid: "
            "the object is missing or incomplete"
        )

    def points(self, lons, lats, year: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings at lon/lat points: (N, 128 or depth) float32 (NaN where none) and a status per point."""
        lons, lats = np.asarray(lons, "float64").ravel(), np.asarray(lats, "float64").ravel()
        if lons.shape != lats.shape:
            raise UserInputError("lons and lats differ in length")
        self.year_index(year)
        _, width = self.depth_array(depth)
        values = np.full((len(lons), width), np.nan, "float32")
        status = np.full(len(lons), OUTSIDE, dtype=object)
        finite = np.isfinite(lons) & np.isfinite(lats) & (np.abs(lats) <= 90) & (np.abs(lons) <= 180)
        zones = np.full(len(lons), -1)
        zones[finite] = [utm_zone(lon) for lon in lons[finite]]
        for zone in np.unique(zones[zones > 0]):
            idx = np.flatnonzero(zones == zone)
            rows, cols = zone_grid(int(zone)).lonlat_to_pixel(lons[idx], lats[idx])
            inside = zone_grid(int(zone)).contains(rows, cols)
            idx, rows, cols = idx[inside], rows[inside], cols[inside]
            q, s = self.read_pixels(int(zone), rows, cols, year, depth)
            values[idx] = dequantise(q, s)
            status[idx] = _status_of(s)
        return values, status

    def pixel(self, lon: float, lat: float, year: int, depth: int | None = None) -> Pixel:
        """The embedding of the pixel holding (lon, lat) (its first ``depth`` dims on a Matryoshka store)."""
        values, status = self.points([lon], [lat], year, depth)
        if status[0] == OUTSIDE:
            raise UserInputError(f"point ({lon}, {lat}) is outside every zone grid (latitudes 80S..84N)")
        zone = utm_zone(lon)
        row, col = zone_grid(zone).lonlat_to_pixel(lon, lat)
        return Pixel(values[0], str(status[0]), zone, int(row), int(col))

    # ------------------------------------------------------------ regions

    def read_window(self, zone: int, window: Window, year: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (H, W, K) and scales (H, W) of a window of a zone grid (K = ``depth``, or 128)."""
        name, width = self.depth_array(depth)
        t = self.year_index(year)
        q = np.zeros((window.height, window.width, width), "int8")
        s = np.full(window.shape, np.inf, "float32")
        if (zone, name) not in self.arrays:
            self._check_zone_has(zone, name)
            return q, s
        emb, sca = self.arrays[(zone, name)], self.arrays[(zone, "scales")]
        fe = self._arrays_pool.submit(self._gather_window, emb, (t, 0), window, q)
        fs = self._arrays_pool.submit(self._gather_window, sca, (t,), window, s)
        absent = fe.result()
        fs.result()
        lost = absent & np.isfinite(s)
        if lost.any():
            r, c = np.argwhere(lost)[0]
            self._lost_chunks(emb, (t, 0), window.row + int(r), window.col + int(c), int(lost.sum()))
        return q, s

    def _gather_window(self, arr: ShardedArray, lead: tuple, window: Window, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (window shape, then the band axis if any) from the array; True where its chunk is absent."""
        size, c = arr.shard_shape[-1], arr.chunk_shape[-1]
        per = size // c
        cells = [
            (r, cc)
            for r in range(window.row // c, (window.row + window.height - 1) // c + 1)
            for cc in range(window.col // c, (window.col + window.width - 1) // c + 1)
        ]
        wanted: dict[tuple, list[int]] = {}
        for r, cc in cells:
            wanted.setdefault((*lead, r * c // size, cc * c // size), []).append((r % per) * per + cc % per)
        chunks = self._chunks_for(arr, wanted)
        absent = np.zeros(window.shape, bool)
        for r, cc in cells:
            n = (r % per) * per + cc % per
            cell = Window(r * c, cc * c, c, c)
            part = cell.intersection(window)
            src = part.relative_to(cell).slices()
            dst = part.relative_to(window).slices()
            chunk = chunks[((*lead, r * c // size, cc * c // size), n)]
            if chunk is None:
                absent[dst] = True
            elif chunk.ndim == 4:  # (1, K, c, c) embeddings
                out[dst] = np.moveaxis(chunk[0][(slice(None), *src)], 0, -1)
            else:
                out[dst] = chunk[0][src]
        return absent

    def region(self, bbox: tuple[float, float, float, float], year: int, depth: int | None = None) -> list[ZoneRegion]:
        """A lon/lat bbox (W, S, E, N) read per zone grid it touches, on each zone's own grid.

        Refuses regions over ``max_region_pixels`` (float32 embeddings take
        512 bytes a pixel) rather than exhaust memory; read those per tile.
        ``depth`` K reads only the K-dim prefix array (a Matryoshka store).
        """
        self.year_index(year)
        self.depth_array(depth)
        roi = roi_from_bbox(*bbox)
        windows = [(zone, roi_window(roi, zone)) for zone in roi.zones()]
        windows = [(zone, w) for zone, w in windows if w is not None]
        pixels = sum(w.size for _, w in windows)
        if pixels > self.max_region_pixels:
            raise UserInputError(
                f"bbox {bbox} covers {pixels:,} pixels ({pixels * 512 / 1e9:.1f} GB as float32), more than "
                f"{self.max_region_pixels:,}; read it in parts (e.g. per 0.1-degree tile)"
            )
        out = []
        for zone, window in windows:
            q, s = self.read_window(zone, window, year, depth)
            grid = zone_grid(zone)
            out.append(ZoneRegion(zone, grid.crs, grid.window_transform(window), window, dequantise(q, s), s))
        if not out:
            raise UserInputError(f"bbox {bbox} does not touch any zone grid")
        return out

    def mosaic(self, bbox, year: int, crs: str | None = None, resolution: float | None = None, depth: int | None = None):
        """One (H, W, 128 or depth) float32 array of a bbox reprojected to ``crs`` (nearest neighbour).

        ``crs`` defaults to the UTM zone of the bbox centre. In a zone's CRS
        at 10 m the output is snapped to that zone's grid, so its pixels are
        returned as stored and only the other zones' pixels are resampled
        (a bbox across a UTM seam); in any other CRS the stored pixel size is
        kept unless ``resolution`` says otherwise. Returns ``(array, transform, crs)``.
        Capped at ``max_region_pixels``; :meth:`export_geotiff` streams any size.
        """
        plan = self._mosaic_plan(bbox, year, crs, resolution, depth)
        if plan.size > self.max_region_pixels:
            raise UserInputError(
                f"bbox {bbox} covers {plan.size:,} pixels ({plan.size * 4 * plan.bands / 1e9:.1f} GB as float32), "
                f"more than {self.max_region_pixels:,}; export it to a GeoTIFF instead (tessera-ray export streams it)"
            )
        return self._render(plan, Window(0, 0, plan.height, plan.width)), plan.transform, plan.crs

    def _mosaic_plan(self, bbox, year: int, crs: str | None, resolution: float | None, depth: int | None) -> "_MosaicPlan":
        """The output grid of a bbox in ``crs`` and the zone windows it draws from (nothing read yet)."""
        from rasterio.warp import transform_bounds

        self.year_index(year)
        _, bands = self.depth_array(depth)
        roi = roi_from_bbox(*bbox)
        parts = [(zone, w) for zone in roi.zones() if (w := roi_window(roi, zone)) is not None]
        if not parts:
            raise UserInputError(f"bbox {bbox} does not touch any zone grid")
        west, south, east, north = bbox
        crs = crs or zone_grid(utm_zone((west + east) / 2 if west <= east else east)).crs
        zone_of_crs = {zone_grid(z).crs: z for z in range(1, 61)}.get(crs)
        native = resolution in (None, 10.0)
        if len(parts) == 1 and zone_grid(parts[0][0]).crs == crs and native:
            zone, window = parts[0]
            return _MosaicPlan(crs, zone_grid(zone).window_transform(window), window.height, window.width,
                               bands, year, depth, zone, window, parts)
        if zone_of_crs is not None and native:
            # a zone CRS: snap to that zone's grid, so its own pixels pass through untouched
            grid = zone_grid(zone_of_crs)
            window = grid.bounds_to_window(*transform_bounds(WGS84, crs, *bbox, densify_pts=21))
            return _MosaicPlan(crs, grid.window_transform(window), window.height, window.width,
                               bands, year, depth, zone_of_crs, window, parts)
        transform, width, height = self._target_grid(parts, bbox, crs, resolution)
        return _MosaicPlan(crs, transform, height, width, bands, year, depth, None, None, parts)

    def _render(self, plan: "_MosaicPlan", block: Window) -> np.ndarray:
        """The (h, w, bands) float32 pixels of ``block``, a window of the plan's output grid.

        Reads only the zone windows under the block: the output zone's own pixels are
        copied as stored, other zones' are reprojected (nearest) into what is still NaN.
        """
        out = np.full((block.height, block.width, plan.bands), np.nan, "float32")
        empty = np.ones(block.shape, bool)
        for zone, part in sorted(plan.parts, key=lambda zp: zp[0] != plan.zone):
            grid = zone_grid(zone)
            if zone == plan.zone:  # the output grid is this zone's grid: no resampling
                on_grid = Window(plan.origin.row + block.row, plan.origin.col + block.col, block.height, block.width)
                src = on_grid.intersection(part)
                if src is None:
                    continue
                q, s = self.read_window(zone, src, plan.year, plan.depth)
                dst = src.relative_to(on_grid)
                out[dst.slices()] = dequantise(q, s)
                empty = np.isnan(out).all(axis=-1)  # no data there may still come from a neighbour zone
                continue
            if not empty.any():
                break
            # nearest neighbour, pixel by pixel: the stored pixel under each output pixel's centre
            # (exact per pixel, unlike GDAL's approximate warper, so blocks and one mosaic agree)
            rows, cols = np.nonzero(empty)
            xs, ys = (plan.transform @ Affine.translation(block.col, block.row)) @ (cols + 0.5, rows + 0.5)
            zx, zy = transform_points(xs, ys, plan.crs, grid.crs)
            with np.errstate(invalid="ignore"):
                src_r = np.floor((ZONE_Y0 - zy) / RESOLUTION)
                src_c = np.floor((zx - ZONE_X0) / RESOLUTION)
            inside = ((src_r >= part.row) & (src_r < part.row + part.height)
                      & (src_c >= part.col) & (src_c < part.col + part.width))
            if not inside.any():
                continue
            rows, cols = rows[inside], cols[inside]
            src_r, src_c = src_r[inside].astype("int64"), src_c[inside].astype("int64")
            need = Window(int(src_r.min()), int(src_c.min()), int(src_r.max() - src_r.min()) + 1,
                          int(src_c.max() - src_c.min()) + 1)
            q, s = self.read_window(zone, need, plan.year, plan.depth)
            values = dequantise(q[src_r - need.row, src_c - need.col], s[src_r - need.row, src_c - need.col])
            got = ~np.isnan(values).all(axis=-1)
            out[rows[got], cols[got]] = values[got]
            empty[rows[got], cols[got]] = False
        return out

    @staticmethod
    def _target_grid(parts, bbox, crs, resolution):
        """Transform and size covering ``bbox`` in ``crs``; by default the stored pixel size."""
        from rasterio.warp import calculate_default_transform

        west, south, east, north = bbox
        if resolution is None:  # keep the stored pixel size, as seen in the target CRS
            zone, window = max(parts, key=lambda p: p[1].size)
            grid = zone_grid(zone)
            t = grid.window_transform(window)
            left, top = t.c, t.f
            right, bottom = t.c + t.a * window.width, t.f + t.e * window.height
            native, _, _ = calculate_default_transform(
                grid.crs, crs, window.width, window.height, left=left, bottom=bottom, right=right, top=top
            )
            resolution = (abs(native.a), abs(native.e))
        return calculate_default_transform(
            WGS84, crs, 1000, 1000, left=west, bottom=south, right=east, top=north, resolution=resolution
        )

    export_block = 256
    """Side (a multiple of 16) of the blocks :meth:`export_geotiff` renders one at a time: its memory
    bound, about 2.5 x side^2 x bands x 4 bytes (the block, its source window, their int8 codes)."""

    def export_geotiff(self, bbox, year: int, path, crs: str | None = None, depth: int | None = None) -> str:
        """Write a region as a 128-band (or ``depth``-band) float32 Cloud-Optimised GeoTIFF (NaN = no embedding).

        Streamed: blocks of ``export_block`` pixels are read and written one at a
        time to a tiled GeoTIFF beside ``path``, which GDAL then copies to a COG
        with a bounded cache; so peak memory does not grow with the bbox. Both
        temporary files are removed whatever happens; ``path`` appears complete or not at all.
        """
        import os
        import shutil

        from tessera_ray.sources.geotiff import streamed_cog

        plan = self._mosaic_plan(bbox, year, crs, None, depth)
        need = 2 * plan.size * plan.bands * 4  # uncompressed upper bound, twice (tiled file + COG)
        folder = os.path.dirname(os.path.abspath(path))
        free = shutil.disk_usage(folder).free
        if need > free:
            raise UserInputError(f"bbox {bbox} is {plan.size:,} pixels x {plan.bands} bands: up to {need / 1e9:.1f} GB "
                                 f"to write, and {folder} has {free / 1e9:.1f} GB free")
        tags = dict(year=str(year), source=redact(self.url), model=str(self.model), dimensions=str(plan.bands))
        with streamed_cog(path, (plan.bands, plan.height, plan.width), plan.transform, plan.crs, tags=tags,
                          block=self.export_block) as write:
            for w in Window(0, 0, plan.height, plan.width).blocks(self.export_block):
                pixels = self._render(plan, w)
                write(w.row, w.col, pixels)
                del pixels
                release_freed_memory()
        return str(path)


@dataclass(frozen=True)
class _MosaicPlan:
    """An output grid and the zone windows that fill it (see :meth:`Root._mosaic_plan`)."""

    crs: str
    transform: "Affine"
    height: int
    width: int
    bands: int
    year: int
    depth: int | None
    zone: int | None
    """The zone whose grid the output is on (its pixels pass through as stored), if any."""
    origin: Window | None
    """The output grid as a window of that zone's grid."""
    parts: list
    """(zone, window): the bbox's part on each zone grid it touches."""

    @property
    def size(self) -> int:
        return self.height * self.width


class _RangeFile(io.RawIOBase):
    """A read-only seekable file over range requests (for pyarrow's Parquet reader).

    The tail is fetched once with the size, so the footer costs no extra request.
    """

    def __init__(self, root: "Root", key: str, tail: int = 64 * 1024):
        self.root, self.key, self.pos = root, key, 0
        size = root.objects.size(key)
        if size is None:
            raise ObjectNotFound(f"no object {root.objects.child_url(key)}")
        self.size = size
        start = max(0, size - tail)
        self._tail_start, self._tail = start, root._get("manifest", key, start, size - start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, buf) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        if self.pos >= self._tail_start:
            data = self._tail[self.pos - self._tail_start : self.pos - self._tail_start + n]
        else:
            data = self.root._get("manifest", self.key, self.pos, n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _row_group_may_intersect(rg, bbox) -> bool:
    stats = {}
    for j in range(rg.num_columns):
        col = rg.column(j)
        if col.path_in_schema.startswith("bbox.") and col.statistics is not None and col.statistics.has_min_max:
            stats[col.path_in_schema[5:]] = (col.statistics.min, col.statistics.max)
    if len(stats) < 4:
        return True
    w, s, e, n = bbox
    return not (stats["xmin"][0] > e or stats["xmax"][1] < w or stats["ymin"][0] > n or stats["ymax"][1] < s)


def _merge_ranges(todo: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Group (offset, size, n) byte ranges into runs whose gaps are small."""
    runs: list[list[tuple[int, int, int]]] = []
    for item in sorted(todo):
        if runs:
            last = runs[-1]
            end = max(o + s for o, s, _ in last)
            if item[0] - end <= _MERGE_GAP:
                last.append(item)
                continue
        runs.append([item])
    return runs


def open_root(url: str, threads: int = 16) -> Root:
    """Open a published root: ``https://...``, ``s3://bucket/prefix`` or a local path."""
    try:
        return Root(open_objects(url), threads=threads)
    except TesseraError:
        raise
    except OSError as exc:
        raise UserInputError(f"cannot open {url}: {exc}") from None


__all__ = ["NODATA", "NOT_PROCESSED", "OUTSIDE", "VALID", "Pixel", "Root", "ZoneRegion", "open_root"]
