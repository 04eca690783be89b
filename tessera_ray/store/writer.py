"""Writing units into the published root: shards first, then a part record.

A unit's embeddings and scales shards for one year are encoded whole and put
as single objects, each verified (size and SHA-256) before a small part record
``_parts/{year}/{unit_id}.json`` is written. Only part records are compacted
into the manifest by :func:`tessera_ray.store.manifest.publish`, so a unit
whose write was interrupted never becomes visible.

Metadata (zones, the time axis) changes only in the driver through
:meth:`EmbeddingStore.prepare`; writers in Ray tasks never touch it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Mapping

import numpy as np

from tessera_ray.errors import DataError, UserInputError
from tessera_ray.grid import Unit
from tessera_ray.store.layout import ZARR_DIR, StoreLayout, StoreState, encode_unit_shards, metadata_objects, parse_root
from tessera_ray.store.objects import ObjectInfo, ObjectNotFound, Objects, open_objects

log = logging.getLogger(__name__)

PARTS_DIR = "_parts"
ROOT_DOC = f"{ZARR_DIR}/zarr.json"


@dataclass(frozen=True)
class PartRecord:
    """One written unit-year: what the manifest row of the unit will say."""

    year: int
    zone: int
    unit_id: str
    shard_row: int
    shard_col: int
    unit_size: int
    valid_pixels: int
    nodata_pixels: int
    unprocessed_pixels: int
    scenes: dict = field(default_factory=dict)
    model_id: str = ""
    model_checksum: str = ""
    code_version: str = ""
    created: str = ""
    objects: tuple = ()

    @property
    def unit(self) -> Unit:
        return Unit(self.zone, self.shard_row, self.shard_col, self.unit_size)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["objects"] = [dict(o) for o in self.objects]
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> "PartRecord":
        d = json.loads(data)
        d["objects"] = tuple(d.get("objects", ()))
        return cls(**d)


def part_key(year: int, unit_id: str) -> str:
    return f"{PARTS_DIR}/{int(year)}/{unit_id}.json"


class EmbeddingStore:
    """A published root being written: ``tessera.zarr/``, ``_parts/``, ``manifests/``.

    Typical use (the embed job)::

        store = EmbeddingStore.create_or_open(root, shard_size=4096, chunk_size=32, model="tessera-v1.0")
        store.prepare(2024, zones={31, 32})          # driver, once, before the map
        rec = store.write_unit(unit, 2024, emb, scales, scenes={"s2": 41, "s1": 60})  # any worker
        publish(root, 2024)                          # driver, at the end (and safe to repeat)
    """

    def __init__(self, objects: Objects, state: StoreState, model_checksum: str = ""):
        self.objects = objects
        self.state = state
        self.model_checksum = model_checksum

    @property
    def root(self) -> str:
        return self.objects.url

    @property
    def layout(self) -> StoreLayout:
        return self.state.layout

    # ---------------------------------------------------------------- open / create

    @classmethod
    def open(cls, root: str) -> "EmbeddingStore":
        """Open an existing store for writing units."""
        objects = open_objects(root)
        try:
            state = parse_root(objects.get(ROOT_DOC))
        except ObjectNotFound:
            raise UserInputError(f"{root} is not a tessera-ray store (no {ROOT_DOC})") from None
        except DataError as exc:
            raise DataError(f"{objects.child_url(ROOT_DOC)}: {exc}") from None
        except (KeyError, ValueError):
            raise UserInputError(f"{root} holds a Zarr store not written by tessera-ray") from None
        return cls(objects, state)

    @classmethod
    def create_or_open(
        cls,
        root: str,
        shard_size: int = 4096,
        chunk_size: int = 32,
        model: str = "tessera",
        model_checksum: str = "",
        chunk_checksum: bool = True,
        index_location: str = "start",
        compression: str | None = None,
        depths: tuple[int, ...] | None = None,
    ) -> "EmbeddingStore":
        """Open the store at ``root``, creating it if empty; its layout must match.

        ``compression`` ("none" = fixed-offset shards, or "zstd", see
        :class:`StoreLayout`) defaults to the existing store's, else to the
        layout's default. ``depths`` (Matryoshka prefix arrays, e.g. (16, 32,
        64); only for encoders whose dims are ordered) defaults to the
        existing store's, else to none; a store keeps the depths it was
        created with (adding one would rewrite every shard).
        """
        objects = open_objects(root)
        layout = StoreLayout(shard_size, chunk_size, chunk_checksum=chunk_checksum, index_location=index_location)
        if compression is not None:
            layout = replace(layout, compression=compression)
        if depths is not None:
            layout = replace(layout, depths=tuple(depths))
        if objects.exists(ROOT_DOC):
            store = cls.open(root)
            if compression is None:
                layout = replace(layout, compression=store.layout.compression)
            if depths is None:
                layout = replace(layout, depths=store.layout.depths)
            elif store.layout.depths != layout.depths:
                have = ",".join(map(str, store.layout.depths)) or "none"
                raise UserInputError(f"{root} was created with Matryoshka depths {have}, not "
                                     f"{','.join(map(str, layout.depths)) or 'none'}; a store keeps its depths")
            if store.layout != layout:
                raise UserInputError(f"{root} was created with layout {store.layout.as_dict()}, not {layout.as_dict()}")
            store.model_checksum = model_checksum
            return store
        store = cls(objects, StoreState(layout, model), model_checksum)
        store._write_metadata(())
        return store

    # ---------------------------------------------------------------- metadata (driver only)

    def prepare(self, year: int, zones=()) -> None:
        """Make ``year`` part of the time axis and ``zones`` groups of the store.

        Metadata only: existing shards are never rewritten. Call it in the
        driver before writers start; writers only check that it was done.
        """
        years = self.state.years if int(year) in self.state.years else (*self.state.years, int(year))
        new_zones = tuple(sorted(set(int(z) for z in zones) - set(self.state.zones)))
        if years == self.state.years and not new_zones:
            return
        self.state = StoreState(self.layout, self.state.model, years, tuple(sorted((*self.state.zones, *new_zones))))
        self._write_metadata(new_zones)

    def ensure_year(self, year: int) -> int:
        """Add a year to the time axis if missing; its index on that axis."""
        self.prepare(year)
        return self.state.years.index(int(year))

    def consolidate(self) -> None:
        """Rewrite every metadata document (root last) from the recorded state."""
        self._write_metadata(())

    def _write_metadata(self, new_zones: tuple[int, ...]) -> None:
        docs, root_doc = metadata_objects(self.state, new_zones)
        for key in sorted(docs):
            self.objects.put(key, docs[key])
        self.objects.put(ROOT_DOC, root_doc)

    def refresh(self) -> None:
        """Re-read the recorded state (another process may have prepared a year)."""
        self.state = parse_root(self.objects.get(ROOT_DOC))

    # ---------------------------------------------------------------- units

    def write_unit(
        self,
        unit: Unit,
        year: int,
        embeddings: np.ndarray,
        scales: np.ndarray,
        scenes: Mapping[str, int] | None = None,
        offset: tuple[int, int] = (0, 0),
        created: str | None = None,
    ) -> PartRecord:
        """Write one unit-year as whole shards, verify them, then record the part.

        ``embeddings`` (H, W, 128) int8 and ``scales`` (H, W) float32 with the
        sentinels NaN = no embedding, +inf = not processed. They may cover a
        window of the unit starting at ``offset``; the rest is "not processed".
        ``scenes`` counts the inputs, e.g. ``{"s2": 41, "s1": 60}`` (manifest
        columns ``s2_scenes``, ``s1_scenes``). Writing a unit again replaces its
        shards (one writer per unit). Peak memory: the inputs plus about twice
        the encoded shard (its encoded chunks, then the joined object).
        ``created`` (ISO 8601) replaces the write time in the part record, so a
        job pinned to one time (``SOURCE_DATE_EPOCH``) writes the same bytes when re-run.
        """
        t = self._check_unit(unit, year, embeddings, scales, offset)
        shards = encode_unit_shards(self.state, unit.zone, t, unit.row, unit.col, embeddings, scales, offset)
        written: list[ObjectInfo] = [self.objects.put(key, data) for key, data in sorted(shards.items())]
        finite = np.isfinite(scales)
        n_nan = int(np.isnan(scales).sum())
        record = PartRecord(
            year=int(year),
            zone=unit.zone,
            unit_id=unit.id,
            shard_row=unit.row,
            shard_col=unit.col,
            unit_size=unit.size,
            valid_pixels=int(finite.sum()),
            nodata_pixels=n_nan,
            unprocessed_pixels=unit.window.size - int(finite.sum()) - n_nan,
            scenes={str(k): int(v) for k, v in (scenes or {}).items()},
            model_id=self.state.model,
            model_checksum=self.model_checksum,
            code_version=self.state.root_attrs()["geoemb:build_version"],
            created=created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            objects=tuple(o.as_dict() for o in written),
        )
        self.objects.put(part_key(year, unit.id), record.to_json())
        return record

    def _check_unit(self, unit: Unit, year: int, embeddings, scales, offset) -> int:
        if unit.size != self.layout.shard_size:
            raise UserInputError(f"unit {unit.id} has size {unit.size}, the store's shards are {self.layout.shard_size}")
        if int(year) not in self.state.years:
            raise UserInputError(f"year {year} is not prepared in {self.root}; call prepare() in the driver first")
        if unit.zone not in self.state.zones:
            raise UserInputError(f"zone {unit.zone} is not prepared in {self.root}; call prepare() in the driver first")
        h, w = scales.shape
        if embeddings.shape != (h, w, 128) or embeddings.dtype != np.int8 or scales.dtype != np.float32:
            raise DataError(
                f"unit {unit.id}: expected int8 (H,W,128) and float32 (H,W), got "
                f"{embeddings.dtype}{embeddings.shape} and {scales.dtype}{scales.shape}"
            )
        if offset[0] < 0 or offset[1] < 0 or offset[0] + h > unit.size or offset[1] + w > unit.size:
            raise DataError(f"unit {unit.id}: block {h}x{w} at {offset} does not fit in the unit")
        return self.state.years.index(int(year))

    def part(self, unit: Unit, year: int) -> PartRecord | None:
        """The part record of a written unit-year, None if it was not written."""
        try:
            return PartRecord.from_json(self.objects.get(part_key(year, unit.id)))
        except ObjectNotFound:
            return None

    def published_units(self, year: int) -> set[str]:
        """Ids of the units in the year's manifest: read it once, skip those units in a re-run."""
        from tessera_ray.store.manifest import published_unit_ids

        return published_unit_ids(self.objects, year)

    def is_published(self, unit: Unit, year: int) -> bool:
        """Whether the unit-year is in the year's manifest (reads the manifest; see :meth:`published_units`)."""
        return unit.id in self.published_units(year)
