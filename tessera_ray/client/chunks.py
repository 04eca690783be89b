"""Inner chunks of sharded Zarr arrays by range requests, with the shard-index and chunk caches.

A batch of chunk numbers per shard becomes as few requests as it can: each
shard's index is read at most once and cached (with the index at the start
of the shard, only the rows of entries a batch needs; a whole index is
CRC32C-checked), and the chunk byte ranges of one shard closer than
:data:`MERGE_GAP` are merged into one request, fetched concurrently. Arrays
marked ``tessera_ray:fixed_offsets`` need no index read at all: a chunk's
offset follows from the metadata, and a chunk whose tag or CRC32C does not
match there is read again through the index. Every chunk's CRC32C is
checked, so a corrupt object is an error naming the shard, never wrong numbers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tessera_ray.client.fetch import Fetcher
from tessera_ray.errors import DataError
from tessera_ray.store.objects import ObjectNotFound
from tessera_ray.store.shards import EMPTY, TAG_NBYTES, ShardedArray, chunk_tag, crc32c

MERGE_GAP = 16384
"""Bytes of unneeded data worth reading to save a request (4 raw scales chunks)."""

Shard = tuple[int, ...]
"""A shard's coordinates in its array's shard grid (time first)."""
Run = list[tuple[int, int, int]]
"""(offset, size, chunk number) byte ranges of one shard fetched by one request."""


class ChunkReader:
    """Decoded inner chunks of a root's arrays. Thread-safe; keeps shard indexes and an LRU of chunks.

    ``years`` maps a shard's time coordinate to its year and ``published``
    a year to the keys its manifest lists: a shard may be absent only if it
    was never published (a published one that is gone is bad data).
    """

    def __init__(self, fetch: Fetcher, years: Sequence[int], published: Callable[[int], frozenset[str]],
                 threads: int = 16, cache_size: int = 256) -> None:
        self._fetch = fetch
        self._years = years
        self._published = published
        self._lock = threading.Lock()
        self._indexes: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}
        self._chunks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._io = ThreadPoolExecutor(threads, thread_name_prefix="tessera-read")

    def close(self) -> None:
        self._io.shutdown(wait=False)

    def url(self, key: str) -> str:
        """The full URL of a shard, for messages."""
        return self._fetch.url(key)

    def chunks(self, arr: ShardedArray, wanted: dict[Shard, list[int]]) -> dict[tuple, np.ndarray | None]:
        """Decode inner chunks: ``{shard_coords: [chunk numbers]}`` -> ``{(shard, n): array | None}``.

        Indexes are fetched concurrently first, then the chunk byte ranges,
        neighbouring ranges of one shard merged into one request.
        """
        out: dict[tuple, np.ndarray | None] = {}
        need: dict[Shard, list[int]] = {}
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
                if index is None or index[n, 0] == EMPTY:
                    out[(shard, n)] = None
                else:
                    todo.append((int(index[n, 0]), int(index[n, 1]), n))
            jobs += [self._io.submit(self._fetch_run, arr, shard, run) for run in merge_ranges(todo)]
        for job in jobs:
            out.update(job.result())
        return out

    def _index(self, arr: ShardedArray, shard_coords: Shard, numbers: list[int]) -> np.ndarray | None:
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
                data = self._fetch.get_range("index", key, 0 if arr.index_at_start else -nbytes, nbytes)
            else:
                data = self._fetch.get_range("index", key, 16 * lo, 16 * (hi - lo + 1))
        except ObjectNotFound:
            self._check_absent(key, shard_coords)
            with self._lock:
                self._indexes[key] = None
            return None
        if entries is None or known is None:
            entries = np.full((n_chunks, 2), EMPTY, "uint64")
            known = np.zeros(n_chunks, bool)
        if whole:
            entries[:] = arr.decode_index(data, self._fetch.url(key))
            known[:] = True
        else:
            if len(data) != 16 * (hi - lo + 1):
                raise DataError(f"shard {self._fetch.url(key)} is shorter than its index: the object is corrupt")
            entries[lo : hi + 1] = arr.decode_index_entries(data)
            known[lo : hi + 1] = True
        with self._lock:
            self._indexes[key] = (entries, known)
        return entries

    def _check_absent(self, key: str, shard_coords: Shard) -> None:
        """A shard may be absent only if no manifest lists it: a published one that is gone is bad data."""
        year = self._years[shard_coords[0]]
        if key in self._published(year):
            raise DataError(f"{self._fetch.url(key)} is missing, but the manifest of {year} says it was published")

    def _fixed_chunks(self, arr: ShardedArray, need: dict[Shard, list[int]], out: dict) -> dict[Shard, list[int]]:
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
            jobs += [(shard, self._io.submit(self._fetch_fixed_run, arr, shard, run)) for run in merge_ranges(todo)]
        for shard, job in jobs:
            got, failed = job.result()
            out.update(got)
            if failed:
                rest.setdefault(shard, []).extend(failed)
                self._fetch.count("fixed_offset_fallbacks", len(failed))
        return rest

    def _fetch_fixed_run(self, arr: ShardedArray, shard: Shard, run: Run) -> tuple[dict, list[int]]:
        key = arr.shard_key(shard)
        start = run[0][0]
        end = max(off + size for off, size, _ in run)
        try:
            data = self._fetch.get_range("chunks", key, start, end - start)
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
            chunk = arr.decode_chunk(piece, f"shard {self._fetch.url(key)} chunk {n}")
            self._cache_chunk((arr.key, shard, n), chunk)
            got[(shard, n)] = chunk
        return got, failed

    def _fetch_run(self, arr: ShardedArray, shard: Shard, run: Run) -> dict:
        key = arr.shard_key(shard)
        start = run[0][0]
        end = max(off + size for off, size, _ in run)
        data = self._fetch.get_range("chunks", key, start, end - start)
        if len(data) != end - start:
            raise DataError(f"shard {self._fetch.url(key)} is shorter than its index says: the object is corrupt")
        out = {}
        for off, size, n in run:
            chunk = arr.decode_chunk(data[off - start : off - start + size], f"shard {self._fetch.url(key)} chunk {n}")
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
            while len(self._chunks) > self._cache_size:
                self._chunks.popitem(last=False)


def merge_ranges(todo: Run) -> list[Run]:
    """Group (offset, size, n) byte ranges into runs whose gaps are at most :data:`MERGE_GAP`."""
    runs: list[Run] = []
    for item in sorted(todo):
        if runs:
            last = runs[-1]
            end = max(o + s for o, s, _ in last)
            if item[0] - end <= MERGE_GAP:
                last.append(item)
                continue
        runs.append([item])
    return runs
