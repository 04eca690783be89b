"""Publication: part records become rows of the year's manifest, atomically, whoever else is publishing.

One publish (:func:`publish_records`, called by :meth:`EmbeddingStore.publish`):

1. verify the new part records only: every object each one lists is there
   with its recorded size (and SHA-256, where the store keeps one: S3 returns
   the checksum it checked at the PUT on a HEAD). Rows already in the manifest
   are not checked again, so a publish costs requests in proportion to what is
   new;
2. read the manifest and its version tag (ETag);
3. merge: a unit already in the manifest with the same objects is left as it
   is (published once: only the ``unit_id`` column and the row groups holding
   the new units are decoded); one whose objects differ (two jobs wrote the
   unit) takes the record whose objects hash to what is stored now; new units
   are appended as row groups behind the old ones, which are not decoded
   (:func:`~tessera_ray.store.manifest.append`); a replaced row, too
   many appended rows, or the end of a job rewrites the file whole in the
   global Hilbert order (a compaction, :mod:`tessera_ray.store.manifest`);
4. replace the manifest only if it is still the version read in 2
   (:meth:`~tessera_ray.store.objects.Objects.put_if`); if another publisher
   was first, go back to 2 with jittered backoff.

The manifest is one object, replaced whole, so readers see the manifest
before a publish or after it, never a mix; a publish killed anywhere leaves
the previous manifest, and the part records it did not get to stay for the
next publish. A conditional PUT whose answer was lost (a timeout after it
succeeded) fails its own precondition when retried; the re-read in 2 then finds
the units there and the publish ends without writing. docs/store.md has the
whole protocol and its tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tessera_ray.errors import DataError, ServiceError
from tessera_ray.store.manifest import (
    append,
    appended_rows,
    manifest_bytes,
    manifest_key,
    merge,
    read_table,
    records_table,
    unit_ids,
)
from tessera_ray.store.objects import MAX_CONFLICTS, ObjectNotFound, Objects, PreconditionFailed, conflict_backoff
from tessera_ray.store.writer import PartRecord

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

log = logging.getLogger(__name__)

VERIFY_THREADS = 16
"""Concurrent HEAD requests while verifying new records (S3 answers each in tens of milliseconds)."""


@dataclass(frozen=True)
class PublishResult:
    """What one publish did to a year's manifest."""

    year: int
    units: int
    """Units in the manifest afterwards."""
    rejected: tuple[str, ...]
    """Units whose part record was not published: an object missing or not as recorded."""
    key: str
    added: tuple[str, ...] = ()
    """Units this publish put into the manifest (new, or a record that replaced an outdated row)."""
    attempts: int = 0
    """Conditional writes tried (0: nothing new to write; more than 1: another publisher was first)."""
    seconds: float = 0.0
    published: frozenset[str] = field(default=frozenset(), repr=False)
    """Every unit id in the manifest afterwards."""


def _verified(objects: Objects, record: PartRecord) -> bool:
    for o in record.objects:
        info = objects.stat(o["key"])
        if info is None or info.size != o["size"] or (info.sha256 and info.sha256 != o["sha256"]):
            return False
    return True


def verify_records(objects: Objects, records: list[PartRecord]) -> tuple[list[PartRecord], list[str]]:
    """The records whose every object is as recorded, and the unit ids of the others (logged)."""
    if not records:
        return [], []
    with ThreadPoolExecutor(min(VERIFY_THREADS, len(records))) as pool:
        ok = list(pool.map(lambda r: _verified(objects, r), records))
    rejected = [r.unit_id for r, good in zip(records, ok) if not good]
    for unit_id in rejected:
        log.warning("unit %s: its objects are missing or changed; not published", unit_id)
    return [r for r, good in zip(records, ok) if good], rejected


def _same_objects(row_objects: Sequence[Mapping[str, Any]] | None, record: PartRecord) -> bool:
    def key(objs: Iterable[Mapping[str, Any]] | None) -> list[tuple[str, int, str]]:
        return sorted((o["key"], int(o["size"]), o["sha256"]) for o in objs or ())

    return key(row_objects) == key(record.objects)


class _Resolver:
    """Decides, per new record, against the manifest as read: add it, or leave the row there (cached checks)."""

    def __init__(self, objects: Objects):
        self.objects = objects
        self.matches_storage: dict[str, bool] = {}

    def stored(self, record: PartRecord) -> bool:
        """Whether the record's objects hash to the bytes stored now (only for units written twice)."""
        if record.unit_id not in self.matches_storage:
            try:
                self.matches_storage[record.unit_id] = all(
                    self.objects.sha256(o["key"]) == o["sha256"] for o in record.objects)
            except ObjectNotFound:
                self.matches_storage[record.unit_id] = False
        return self.matches_storage[record.unit_id]

    def to_add(self, current: _Current | None, records: list[PartRecord]) -> tuple[list[PartRecord], list[str]]:
        """Records to merge into ``current`` and the units refused (a later write replaced their objects)."""
        if current is None or not records:
            return list(records), []
        rows = current.rows_of({r.unit_id for r in records})
        existing = {} if rows is None else dict(zip(rows.column("unit_id").to_pylist(),
                                                    rows.column("objects").to_pylist()))
        add, refused = [], []
        for r in records:
            if r.unit_id not in existing:
                add.append(r)
            elif _same_objects(existing[r.unit_id], r):
                continue  # already published: once is enough
            elif self.stored(r):
                add.append(r)  # the unit was written again after its row: the row follows the bytes
            else:
                refused.append(r.unit_id)
        return add, refused


def _string_array(values: Iterable[str]) -> pa.Array:
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


COMPACT_MIN_ROWS = 1024
COMPACT_FRACTION = 0.25
"""An append that would leave more than max(:data:`COMPACT_MIN_ROWS`, this fraction of the rows) outside the
global Hilbert order is a full rewrite instead. Each compaction costs the whole file, but comes after a
quarter of it was appended, so a publish costs, amortised, in proportion to its new rows; and at most a
fifth of a manifest's rows sit in row groups that span the batch's extent instead of a compact region
(docs/store.md, "How the manifest grows")."""


def _needs_compaction(appended: int, rows: int) -> bool:
    return appended > max(COMPACT_MIN_ROWS, COMPACT_FRACTION * rows)


class _Current:
    """What a publish needs of the manifest as read: its unit ids, and the rows of the units it publishes.

    Parsed lazily, and carried from one publish to the next (:func:`_remember`):
    after an append, the next publish's state is this one's plus the new row
    groups' unit ids, so a publish in a long job decodes what it added, not
    the whole manifest again.
    """

    def __init__(self, data: bytes, where: str, ids: pa.ChunkedArray, appended: int,
                 id_set: set[str] | None = None):
        self.data, self.where = data, where
        self.ids = ids
        """The unit ids, in file order."""
        self.appended = appended
        """Rows appended since the file was last written whole (:func:`~tessera_ray.store.manifest.appended_rows`)."""
        self._file: pq.ParquetFile | None = None
        self._id_set = id_set

    @classmethod
    def parse(cls, data: bytes, where: str) -> _Current:
        """The state of a manifest file's bytes; a file that does not parse is a DataError naming ``where``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(pa.BufferReader(data))
            current = cls(data, where, file.read(columns=["unit_id"], use_threads=False).column("unit_id"),
                          appended_rows(data))
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt manifest
            raise DataError(f"manifest {where} is unreadable: {exc}") from None
        current._file = file
        return current

    @property
    def file(self) -> pq.ParquetFile:
        if self._file is None:
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._file = pq.ParquetFile(pa.BufferReader(self.data))
        return self._file

    def after_append(self, body: bytes, added: pa.ChunkedArray) -> _Current:
        """The state of ``body``: this manifest with rows appended whose unit ids are ``added`` (in file order)."""
        import pyarrow as pa

        ids = pa.chunked_array(self.ids.chunks + added.chunks, self.ids.type)
        id_set = None if self._id_set is None else self._id_set | set(added.to_pylist())
        return _Current(body, self.where, ids, self.appended + len(added), id_set)

    @property
    def num_rows(self) -> int:
        return len(self.ids)

    def unit_ids(self) -> list[str]:
        ids: list[str] = self.ids.to_pylist()
        return ids

    def id_set(self) -> set[str]:
        """The unit ids as a set (built once; callers must not change it)."""
        if self._id_set is None:
            self._id_set = set(self.ids.to_pylist())
        return self._id_set

    def rows_of(self, wanted: set[str]) -> pa.Table | None:
        """``unit_id`` and ``objects`` of the rows whose unit is in ``wanted``: only their row groups are decoded."""
        import numpy as np
        import pyarrow.compute as pc

        hit = np.flatnonzero(pc.is_in(self.ids, value_set=_string_array(wanted)).to_numpy(zero_copy_only=False))
        if not len(hit):
            return None
        meta = self.file.metadata
        ends = np.cumsum([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        groups = sorted(set(np.searchsorted(ends, hit, side="right").tolist()))
        rows = self.file.read_row_groups(groups, columns=["unit_id", "objects"], use_threads=False)
        return rows.filter(pc.is_in(rows.column("unit_id"), value_set=_string_array(wanted)))

    def table(self) -> pa.Table:
        return read_table(self.data, self.where)


_LAST: OrderedDict[tuple[str, str], tuple[str, _Current]] = OrderedDict()
"""Per (store, key), the manifest this process last read or wrote and its version tag (a few of them):
kept between a job's publishes, dropped by its last one (``compact``), which no publish follows soon."""
_LAST_KEEP = 4
_LAST_LOCK = threading.Lock()


def _read_current(objects: Objects, key: str) -> tuple[_Current | None, bytes, str | None]:
    """The manifest, parsed, with its bytes and version tag (None, b"", None when there is none).

    When its tag is still the one this process last saw (it wrote the manifest
    itself, the usual case in a job), the state kept then is used: one
    ``stat`` (local) or HEAD (S3) instead of reading and decoding the file.
    """
    with _LAST_LOCK:
        kept = _LAST.get((objects.url, key))
    if kept is not None and objects.version(key) == kept[0]:
        return kept[1], kept[1].data, kept[0]
    try:
        data, etag = objects.get_versioned(key)
    except ObjectNotFound:
        return None, b"", None
    current = _Current.parse(data, objects.child_url(key))
    _remember(objects, key, etag, current)
    return current, data, etag


def _forget(objects: Objects, key: str) -> None:
    """Drop the kept state of a manifest (it holds the file's bytes: up to ~1 GB for a planet year)."""
    with _LAST_LOCK:
        _LAST.pop((objects.url, key), None)


def _remember(objects: Objects, key: str, etag: str, current: _Current) -> None:
    with _LAST_LOCK:
        _LAST[(objects.url, key)] = (etag, current)
        _LAST.move_to_end((objects.url, key))
        while len(_LAST) > _LAST_KEEP:
            _LAST.popitem(last=False)


def publish_records(objects: Objects, year: int, records: list[PartRecord], *, exact: bool = False,
                    compact: bool = False) -> PublishResult:
    """Merge ``records`` into the year's manifest (``exact``: the manifest becomes these records alone).

    New units are appended as row groups (:func:`~tessera_ray.store.manifest.append`); the manifest is
    rewritten whole in the global order when a unit's row is replaced, when too many rows were appended
    (:data:`COMPACT_FRACTION`), or when ``compact`` is asked (the end of a job). Safe to repeat and to run
    from several processes at once; see the module doc. The end of a job (``compact``) and a repair
    (``exact``) leave nothing kept for the manifest (:data:`_LAST`): no publish of this process follows soon.
    """
    try:
        return _publish_records(objects, year, records, exact=exact, compact=compact)
    finally:
        if compact or exact:
            _forget(objects, manifest_key(year))


def _publish_records(objects: Objects, year: int, records: list[PartRecord], *, exact: bool,
                     compact: bool) -> PublishResult:
    import pyarrow.compute as pc

    started = time.monotonic()
    key = manifest_key(year)
    good, rejected = verify_records(objects, records)
    new_rows = records_table(good) if good else None
    resolver = _Resolver(objects)
    refused: list[str] = []

    def rows_of(chosen: list[PartRecord]) -> pa.Table:
        if new_rows is None or not chosen:
            return records_table([])
        wanted = _string_array({r.unit_id for r in chosen})
        return new_rows.filter(pc.is_in(new_rows.column("unit_id"), value_set=wanted))

    def result(published: Iterable[str], add: Iterable[PartRecord], attempts: int) -> PublishResult:
        ids = frozenset(published)
        return PublishResult(int(year), len(ids), tuple(rejected + refused), key,
                             tuple(sorted(r.unit_id for r in add)), attempts, time.monotonic() - started, ids)

    current_url = objects.child_url(key)
    for attempt in range(1, MAX_CONFLICTS + 1):
        appending = False
        try:
            current, data, etag = _read_current(objects, key)
        except DataError:
            if not exact:
                raise
            data, etag = objects.get_versioned(key)
            current = None  # a manifest that does not parse is what the exact rebuild replaces
        if exact:
            add, refused = good, []
            table = rows_of(good)
            body = manifest_bytes(table)
            published: Collection[str] = unit_ids(table)
        else:
            add, refused = resolver.to_add(current, good)
            appended = current.appended if current is not None else 0
            if current is not None and not add and not (compact and appended):
                return result(current.unit_ids(), (), attempt - 1)
            ids = current.id_set() if current is not None else set()
            replaces = any(r.unit_id in ids for r in add)
            appending = current is not None and not replaces and not compact and \
                not _needs_compaction(appended + len(add), current.num_rows + len(add))
            if appending:
                body, added_ids = append(data, rows_of(add), objects.child_url(key))
                published = ids | {r.unit_id for r in add}
            else:
                table = rows_of(add) if current is None else merge(current.table(), rows_of(add))
                body = manifest_bytes(table)
                published = unit_ids(table)
        if current is not None and body == data:
            return result(published, (), attempt - 1)
        try:
            tag = objects.put_if(key, body, etag)
        except PreconditionFailed:
            log.info("manifest %s changed while merging (another publisher); merging again", key)
            conflict_backoff(attempt)
            continue
        if appending and current is not None:  # the next publish of this process starts from here
            _remember(objects, key, tag, current.after_append(body, added_ids))
        else:  # a rewrite: decoded once more, as its write encoded it (a body that does not parse fails here)
            _remember(objects, key, tag, _Current.parse(body, current_url))
        return result(published, add, attempt)
    raise ServiceError(f"could not publish {objects.child_url(key)}: it changed under {MAX_CONFLICTS} merges in a row "
                       "(other publishers); run the publish again")


def read_part(objects: Objects, key: str) -> PartRecord | None:
    """A part record, or None (logged) when it does not parse."""
    try:
        return PartRecord.from_json(objects.get(key))
    except ObjectNotFound:
        return None
    except (ValueError, TypeError, KeyError, DataError) as exc:
        log.warning("part record %s is unreadable (%s); not published", key, exc)
        return None
