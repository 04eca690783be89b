"""Writing units into the published root: shards first, then a part record.

A unit's embeddings and scales shards for one year are encoded whole and put
as single objects, each verified (size and SHA-256) before a small part record
``_parts/{year}/{unit_id}.json`` is written. Only part records become manifest
rows (:meth:`EmbeddingStore.publish`, :mod:`tessera_ray.store.publication`), so a
unit whose write was interrupted never becomes visible.

Metadata (zones, the time axis) changes only in drivers through
:meth:`EmbeddingStore.prepare`; writers in Ray tasks never touch it. Several
drivers may prepare one root at once (two jobs, the pieces of a split run):
the root ``zarr.json`` is replaced only if it is still the version read
(:meth:`~tessera_ray.store.objects.Objects.put_if`), so one driver's zones or
year are never undone by another's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera_ray.errors import DataError, ServiceError, UserInputError
from tessera_ray.grid import Unit
from tessera_ray.store.layout import (
    STORE_DIMS,
    ZARR_DIR,
    StoreLayout,
    StoreState,
    encode_unit_shards,
    metadata_objects,
    parse_root,
)
from tessera_ray.store.objects import (
    MAX_CONFLICTS,
    ObjectInfo,
    ObjectNotFound,
    Objects,
    PreconditionFailed,
    conflict_backoff,
    open_objects,
)

if TYPE_CHECKING:
    from tessera_ray.store.publication import PublishResult

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
    scenes: dict[str, int] = field(default_factory=dict)
    model_id: str = ""
    model_checksum: str = ""
    code_version: str = ""
    created: str = ""
    objects: tuple[dict[str, Any], ...] = ()

    @property
    def unit(self) -> Unit:
        return Unit(self.zone, self.shard_row, self.shard_col, self.unit_size)

    def to_json(self) -> bytes:
        d = asdict(self)
        d["objects"] = [dict(o) for o in self.objects]
        return json.dumps(d, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PartRecord:
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
        store.publish(2024, [rec, ...])              # driver, as units finish: only these records
        store.publish(2024)                          # driver, at the end: every part not yet published
    """

    def __init__(self, objects: Objects, state: StoreState, model_checksum: str = ""):
        self.objects = objects
        self.state = state
        self.model_checksum = model_checksum

    def __reduce__(self) -> tuple[Callable[[str, str], EmbeddingStore], tuple[str, str]]:
        """Pickled by root (a write task reopens it there: S3 clients do not pickle), with the model checksum."""
        return (_reopen, (self.root, self.model_checksum))

    @property
    def root(self) -> str:
        return self.objects.url

    @property
    def layout(self) -> StoreLayout:
        return self.state.layout

    # ---------------------------------------------------------------- open / create

    @classmethod
    def open(cls, root: str) -> EmbeddingStore:
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
    ) -> EmbeddingStore:
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
        store._commit(lambda state: state)
        return store

    # ---------------------------------------------------------------- metadata (driver only)

    def prepare(self, year: int, zones: Iterable[int] = ()) -> None:
        """Make ``year`` part of the time axis and ``zones`` groups of the store.

        Metadata only: existing shards are never rewritten. Call it in the
        driver before writers start; writers only check that it was done.
        """
        self._commit(lambda state: state.adding(year, zones))

    def consolidate(self) -> None:
        """Rewrite every metadata document from the recorded state (repairs what a killed driver left)."""
        self._commit(lambda state: state, rewrite=True)

    def _commit(self, change: Callable[[StoreState], StoreState], rewrite: bool = False) -> None:
        """Read the recorded state, apply ``change``, write the documents, then the root if still unchanged.

        The zone documents go first and the root ``zarr.json`` (which carries
        the consolidated metadata every reader opens) last, with
        :meth:`~tessera_ray.store.objects.Objects.put_if`: if another driver
        changed the root meanwhile, read its state and do it again, so
        concurrent drivers' years and zones add up. Nothing is written when
        the change is already recorded (unless ``rewrite``).
        """
        for attempt in range(1, MAX_CONFLICTS + 1):
            try:
                doc, etag = self.objects.get_versioned(ROOT_DOC)
                stored = self._parse(doc)
            except ObjectNotFound:
                doc, etag, stored = b"", None, None
            if stored is not None and stored.layout != self.layout:
                raise UserInputError(f"{self.root} was created with layout {stored.layout.as_dict()}, "
                                     f"not {self.layout.as_dict()}")
            base = stored if stored is not None else StoreState(self.layout, self.state.model)
            state = change(base)
            if stored is not None and state == stored and not rewrite:
                self.state = state
                return
            new_zones = tuple(z for z in state.zones if z not in base.zones)  # their coordinates too
            docs, root_doc = metadata_objects(state, new_zones)
            for key in sorted(docs):
                self.objects.put(key, docs[key])
            if root_doc != doc:
                try:
                    self.objects.put_if(ROOT_DOC, root_doc, etag)
                except PreconditionFailed:
                    conflict_backoff(attempt)
                    continue
            self.state = state
            return
        raise ServiceError(f"could not update {self.objects.child_url(ROOT_DOC)}: other drivers changed it "
                           f"{MAX_CONFLICTS} times in a row")

    def _parse(self, doc: bytes) -> StoreState:
        try:
            return parse_root(doc)
        except DataError as exc:
            raise DataError(f"{self.objects.child_url(ROOT_DOC)}: {exc}") from None
        except (KeyError, ValueError):
            raise UserInputError(f"{self.root} holds a Zarr store not written by tessera-ray") from None

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

        ``embeddings`` (H, W, :data:`~tessera_ray.store.layout.STORE_DIMS`) int8 and ``scales`` (H, W) float32 with the
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
            created=created or datetime.now(UTC).isoformat(timespec="seconds"),
            objects=tuple(o.as_dict() for o in written),
        )
        self.objects.put(part_key(year, unit.id), record.to_json())
        return record

    def _check_unit(self, unit: Unit, year: int, embeddings: np.ndarray, scales: np.ndarray,
                    offset: tuple[int, int]) -> int:
        if unit.size != self.layout.shard_size:
            raise UserInputError(f"unit {unit.id} has size {unit.size}, "
                                 f"the store's shards are {self.layout.shard_size}")
        if int(year) not in self.state.years:
            raise UserInputError(f"year {year} is not prepared in {self.root}; call prepare() in the driver first")
        if unit.zone not in self.state.zones:
            raise UserInputError(f"zone {unit.zone} is not prepared in {self.root}; call prepare() in the driver first")
        h, w = scales.shape
        if embeddings.shape != (h, w, STORE_DIMS) or embeddings.dtype != np.int8 or scales.dtype != np.float32:
            raise DataError(
                f"unit {unit.id}: expected int8 (H,W,{STORE_DIMS}) and float32 (H,W), got "
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

    # ---------------------------------------------------------------- publication (driver only)

    def publish(self, year: int, records: list[PartRecord] | None = None, *,
                reverify: bool = False) -> PublishResult:
        """Put units into the year's manifest; a :class:`~tessera_ray.store.publication.PublishResult`.

        ``records`` (what a job's writers returned since its last publish): merge
        exactly those, after checking their objects; the cost follows their
        number, not the size of the manifest. None: every part record under
        ``_parts/{year}/`` whose unit is not in the manifest yet (those of
        killed or other jobs too; one listing), and compact the manifest: the
        rows appended during the job are put in the global order, so the
        manifest a job leaves is a function of its rows. ``reverify``: check the
        objects of every part record again, make the manifest exactly the ones
        that hold, and rewrite every metadata document (the cost of the whole
        year: a repair). The consolidated metadata depends only on the years
        and zones, which :meth:`prepare` committed before any unit was
        written, so an ordinary publish has nothing to change there. Safe to
        repeat, and to run in several drivers at once.
        """
        from tessera_ray.store.manifest import published_unit_ids
        from tessera_ray.store.publication import publish_records, read_part

        if records is not None:
            return publish_records(self.objects, year, list(records))
        keys = [k for k in self.objects.list(f"{PARTS_DIR}/{int(year)}/") if k.endswith(".json")]
        if not reverify:
            done = published_unit_ids(self.objects, year)
            keys = [k for k in keys if k.rsplit("/", 1)[-1][: -len(".json")] not in done]
        found = [r for r in (read_part(self.objects, k) for k in keys) if r is not None]
        result = publish_records(self.objects, year, found, exact=reverify, compact=True)
        if reverify:
            self.consolidate()
        return result

    def published_units(self, year: int) -> set[str]:
        """Ids of the units in the year's manifest: read it once, skip those units in a re-run."""
        from tessera_ray.store.manifest import published_unit_ids

        return published_unit_ids(self.objects, year)

    def is_published(self, unit: Unit, year: int) -> bool:
        """Whether the unit-year is in the year's manifest (reads the manifest; see :meth:`published_units`)."""
        return unit.id in self.published_units(year)


def _reopen(root: str, model_checksum: str) -> EmbeddingStore:
    store = EmbeddingStore.open(root)
    store.model_checksum = model_checksum
    return store


def publish(root: str, year: int, *, reverify: bool = False) -> PublishResult:
    """Publish every part record of a year not yet in its manifest (see :meth:`EmbeddingStore.publish`)."""
    return EmbeddingStore.open(root).publish(year, reverify=reverify)
