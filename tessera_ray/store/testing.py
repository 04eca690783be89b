"""Random stores for tests and benchmarks (no model needed).

Each written unit gets random int8 embeddings and positive scales, with a
NaN (no embedding) block, and optionally only a sub-window written so the rest
stays +inf (not processed). The arrays written are returned, so tests compare
what they read against what went in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera_ray.grid import Unit
from tessera_ray.store.layout import STORE_DIMS
from tessera_ray.store.writer import EmbeddingStore, PartRecord, publish

if TYPE_CHECKING:
    from tessera_ray.store.publication import PublishResult

StoredUnit = tuple[PartRecord, np.ndarray, np.ndarray]
"""A unit a :class:`MemorySink` holds: its part record, embeddings (S, S, D) and scales (S, S)."""


@dataclass(frozen=True)
class WrittenBlock:
    """What went into one unit-year: arrays over the window ``offset`` + shape."""

    unit: Unit
    year: int
    offset: tuple[int, int]
    embeddings: np.ndarray
    scales: np.ndarray


def random_block(rng: np.random.Generator, height: int, width: int,
                 nan_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Random int8 embeddings (H, W, STORE_DIMS) and scales (H, W) with a NaN rectangle."""
    emb = rng.integers(-128, 128, size=(height, width, STORE_DIMS), dtype=np.int8)
    scales = rng.uniform(0.001, 0.05, size=(height, width)).astype("float32")
    nh = max(1, int(height * nan_fraction))
    scales[:nh, : width // 2] = np.nan
    emb[:nh, : width // 2] = 0
    return emb, scales


def write_random_units(
    store: EmbeddingStore,
    units: list[Unit],
    year: int,
    seed: int = 0,
    partial: bool = True,
) -> list[WrittenBlock]:
    """Write random data into ``units`` for ``year``; every other unit only partly."""
    rng = np.random.default_rng(seed)
    store.prepare(year, {u.zone for u in units})
    blocks = []
    for i, unit in enumerate(units):
        size = unit.size
        if partial and i % 2 == 1:
            offset, h, w = (size // 4, size // 8), size // 2, size - size // 8 - 3
        else:
            offset, h, w = (0, 0), size, size
        emb, scales = random_block(rng, h, w)
        store.write_unit(unit, year, emb, scales, scenes={"s2": 10 + i, "s1": 20 + i}, offset=offset)
        blocks.append(WrittenBlock(unit, year, offset, emb, scales))
    return blocks


def build_random_store(
    root: str,
    units: list[Unit],
    years: tuple[int, ...] = (2024,),
    shard_size: int = 256,
    chunk_size: int = 32,
    seed: int = 0,
    partial: bool = True,
    index_location: str = "start",
    compression: str | None = None,
    depths: tuple[int, ...] | None = None,
) -> list[WrittenBlock]:
    """Create a store, write random units for each year and publish them (``depths``: Matryoshka prefix arrays)."""
    store = EmbeddingStore.create_or_open(
        root, shard_size, chunk_size, model="random-test-model", model_checksum="0" * 64,
        index_location=index_location, compression=compression, depths=depths,
    )
    blocks = []
    for k, year in enumerate(years):
        blocks += write_random_units(store, units, year, seed + k, partial)
        publish(root, year)
    return blocks


def reversed_shard(data: bytes, n_chunks: int, stride: int) -> bytes:
    """A dense shard with its tagged chunks stored in reverse order and its index rewritten to match.

    Every chunk still passes its CRC32C and the index is right, but no chunk is at its fixed
    offset: a reader of the fixed-offset layout must notice (the tags) and go through the index.
    """
    from tessera_ray.store.shards import crc32c

    head = 16 * n_chunks + 4
    index = np.frombuffer(data[: head - 4], "<u8").reshape(-1, 2).copy()
    pieces = [data[head + n * stride : head + (n + 1) * stride] for n in range(n_chunks)]
    for k, n in enumerate(reversed(range(n_chunks))):
        index[n] = (head + k * stride + 8, stride - 8)
    index_bytes = index.astype("<u8").tobytes()
    return index_bytes + crc32c(index_bytes).to_bytes(4, "little") + b"".join(reversed(pieces))


class _Shelf:
    """The memory a :class:`MemorySink` keeps its units in: one Ray actor, shared by every write task."""

    def __init__(self) -> None:
        self.units: dict[tuple[int, str], StoredUnit] = {}
        self.published: dict[int, set[str]] = {}

    def put(self, record: PartRecord, embeddings: np.ndarray, scales: np.ndarray) -> None:
        self.units[(record.year, record.unit_id)] = (record, embeddings, scales)

    def publish(self, year: int, unit_ids: list[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(added, every published) for the year; None: every unit written and not published yet."""
        done = self.published.setdefault(int(year), set())
        written = {u for y, u in self.units if y == int(year)}
        asked = written - done if unit_ids is None else set(unit_ids)
        added = tuple(sorted(asked & written - done))
        done.update(added)
        return added, tuple(sorted(done))

    def published_ids(self, year: int) -> set[str]:
        return set(self.published.get(int(year), ()))

    def get(self, year: int, unit_id: str) -> StoredUnit | None:
        return self.units.get((int(year), unit_id))


class MemorySink:
    """A second :class:`~tessera_ray.store.sink.EmbeddingSink`: units kept in a Ray actor's memory.

    What the tests run the real embed loop into, to show that a sink other than
    the Zarr store needs no change to the pipeline. It pickles as the actor's
    handle, so every write task writes into the same memory. Needs a running Ray.
    """

    def __init__(self) -> None:
        import ray

        self.shelf: Any = ray.remote(_Shelf).remote()  # an actor handle

    def write_unit(self, unit: Unit, year: int, embeddings: np.ndarray, scales: np.ndarray,
                   scenes: Mapping[str, int] | None = None, offset: tuple[int, int] = (0, 0),
                   created: str | None = None) -> PartRecord:
        import ray

        full = np.full((unit.size, unit.size, embeddings.shape[-1]), 0, np.int8)
        full_scales = np.full((unit.size, unit.size), np.inf, np.float32)
        h, w = scales.shape
        full[offset[0]:offset[0] + h, offset[1]:offset[1] + w] = embeddings
        full_scales[offset[0]:offset[0] + h, offset[1]:offset[1] + w] = scales
        valid, nodata = int(np.isfinite(full_scales).sum()), int(np.isnan(full_scales).sum())
        record = PartRecord(int(year), unit.zone, unit.id, unit.row, unit.col, unit.size, valid, nodata,
                            unit.window.size - valid - nodata, dict(scenes or {}), "memory", "", "", created or "",
                            ({"key": f"memory/{year}/{unit.id}", "size": int(full.nbytes + full_scales.nbytes)},))
        ray.get(self.shelf.put.remote(record, full, full_scales))
        return record

    def publish(self, year: int, records: list[PartRecord] | None = None) -> PublishResult:
        import ray

        from tessera_ray.store.publication import PublishResult

        ids = None if records is None else [r.unit_id for r in records]
        added, published = ray.get(self.shelf.publish.remote(year, ids))
        return PublishResult(int(year), len(published), (), "memory", added=added, attempts=1 if added else 0,
                             published=frozenset(published))

    def published_units(self, year: int) -> set[str]:
        import ray

        ids: set[str] = ray.get(self.shelf.published_ids.remote(year))
        return ids

    def unit(self, year: int, unit_id: str) -> StoredUnit | None:
        """(part record, embeddings (S, S, D), scales (S, S)) of a written unit, None if it was not written."""
        import ray

        stored: StoredUnit | None = ray.get(self.shelf.get.remote(year, unit_id))
        return stored
