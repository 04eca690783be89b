"""int8 codes and scales of a zone grid's pixels: points and windows mapped onto chunks.

The embeddings array (or a Matryoshka prefix array) and ``scales`` of a zone
are read side by side, each by its own chunk geometry (prefix arrays have
wider chunks than ``scales``), one pass per touched chunk, not per pixel.
A pixel whose scale is valid but whose embeddings chunk is absent is a lost
object: an error, never zeros.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import ArrayLike

from tessera_ray.client.chunks import ChunkReader, Shard
from tessera_ray.client.metadata import RootMetadata
from tessera_ray.errors import DataError
from tessera_ray.grid import Window
from tessera_ray.store.shards import ShardedArray


class PixelReader:
    """Pixels and windows of a root's zone arrays. Thread-safe."""

    def __init__(self, meta: RootMetadata, chunks: ChunkReader) -> None:
        self._meta = meta
        self._chunks = chunks
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="tessera-array")  # embeddings and scales at once

    def close(self) -> None:
        self._pool.shutdown(wait=False)

    def read_pixels(self, zone: int, rows: ArrayLike, cols: ArrayLike, year: int,
                    depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (N, K) and scales (N,) of pixels of one zone grid (+inf where not processed).

        ``depth`` K (a Matryoshka store) reads only that prefix array and ``scales``; None reads all 128 dims.
        """
        r, c = np.asarray(rows, "int64"), np.asarray(cols, "int64")
        return self._read_pair(zone, year, depth, (len(r),),
                               lambda arr, lead, out: self._gather(arr, lead, r, c, out),
                               lambda at: (int(r[at[0]]), int(c[at[0]])))

    def read_window(self, zone: int, window: Window, year: int,
                    depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """int8 (H, W, K) and scales (H, W) of a window of a zone grid (K = ``depth``, or 128)."""
        return self._read_pair(zone, year, depth, window.shape,
                               lambda arr, lead, out: self._gather_window(arr, lead, window, out),
                               lambda at: (window.row + int(at[0]), window.col + int(at[1])))

    def _read_pair(self, zone: int, year: int, depth: int | None, shape: tuple[int, ...],
                   gather: Callable[[ShardedArray, tuple[int, ...], np.ndarray], np.ndarray],
                   pixel_of: Callable[[np.ndarray], tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The codes and scales of ``shape`` pixels, each array filled by ``gather`` (which says where its chunks
        are absent) on its own thread; a valid scale whose codes are absent is lost data, reported at
        ``pixel_of`` (the zone row and column of an index into ``shape``)."""
        name, width = self._meta.depth_array(depth)
        t = self._meta.year_index(year)
        q = np.zeros((*shape, width), "int8")
        s = np.full(shape, np.inf, "float32")
        if (zone, name) not in self._meta.arrays or not s.size:
            self._check_zone_has(zone, name)
            return q, s
        emb, sca = self._meta.arrays[(zone, name)], self._meta.arrays[(zone, "scales")]
        fe = self._pool.submit(gather, emb, (t, 0), q)
        fs = self._pool.submit(gather, sca, (t,), s)
        absent = fe.result()
        fs.result()
        lost = absent & np.isfinite(s)
        if lost.any():
            row, col = pixel_of(np.argwhere(lost)[0])
            self._lost_chunks(emb, (t, 0), row, col, int(lost.sum()))
        return q, s

    def _gather(self, arr: ShardedArray, lead: tuple[int, ...], rows: np.ndarray, cols: np.ndarray,
                out: np.ndarray) -> np.ndarray:
        """Fill ``out[i]`` with the array's value(s) at pixel (rows[i], cols[i]); True where its chunk is absent."""
        size, c = arr.shard_shape[-1], arr.chunk_shape[-1]
        n = ((rows % size) // c) * (size // c) + (cols % size) // c
        groups, members = np.unique(np.stack([rows // size, cols // size, n], axis=1), axis=0, return_inverse=True)
        wanted: dict[Shard, list[int]] = {}
        for a, b, k in groups.tolist():
            wanted.setdefault((*lead, a, b), []).append(k)
        chunks = self._chunks.chunks(arr, wanted)
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

    def _gather_window(self, arr: ShardedArray, lead: tuple[int, ...], window: Window, out: np.ndarray) -> np.ndarray:
        """Fill ``out`` (window shape, then the band axis if any) from the array; True where its chunk is absent."""
        size, c = arr.shard_shape[-1], arr.chunk_shape[-1]
        per = size // c
        cells = [
            (r, cc)
            for r in range(window.row // c, (window.row + window.height - 1) // c + 1)
            for cc in range(window.col // c, (window.col + window.width - 1) // c + 1)
        ]
        wanted: dict[Shard, list[int]] = {}
        for r, cc in cells:
            wanted.setdefault((*lead, r * c // size, cc * c // size), []).append((r % per) * per + cc % per)
        chunks = self._chunks.chunks(arr, wanted)
        absent = np.zeros(window.shape, bool)
        for r, cc in cells:
            n = (r % per) * per + cc % per
            cell = Window(r * c, cc * c, c, c)
            part = cell.intersection(window)
            assert part is not None  # every cell listed overlaps the window
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

    def _check_zone_has(self, zone: int, name: str) -> None:
        """A zone with data but without a declared depth's array is an inconsistent store, not an empty zone."""
        if (zone, "scales") in self._meta.arrays and (zone, name) not in self._meta.arrays:
            raise DataError(f"{self._meta.url}: zone {zone} has no array {name} although the root declares it")

    def _lost_chunks(self, arr: ShardedArray, lead: tuple[int, ...], row: int, col: int, count: int) -> None:
        """Pixels with a valid scale whose embeddings chunk is absent: a lost object, an error, never zeros.

        The writer stores every embeddings chunk (any depth) that covers a valid pixel.
        """
        size = arr.shard_shape[-1]
        key = arr.shard_key((*lead, row // size, col // size))
        raise DataError(
            f"{self._chunks.url(key)} has no chunk for {count} pixel(s) whose scale is valid: "
            "the object is missing or incomplete"
        )
