"""Publication: part records become rows of the year's manifest, atomically, whoever else is publishing.

One publish (:func:`publish_records`, called by :meth:`EmbeddingStore.publish`):

1. verify the new part records only: every object each one lists is there
   with its recorded size (and SHA-256, where the store keeps one: S3 returns
   the checksum it checked at the PUT on a HEAD). Rows already in the manifest
   are not checked again, so a publish costs requests in proportion to what is
   new;
2. read the manifest and its version tag (ETag);
3. merge: a unit already in the manifest with the same objects is left as it
   is (published once); one whose objects differ (two jobs wrote the unit)
   takes the record whose objects hash to what is stored now; the rows are
   Hilbert-sorted and written as one new file (:mod:`tessera_ray.store.manifest`);
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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tessera_ray.errors import DataError, ServiceError
from tessera_ray.store.manifest import manifest_bytes, manifest_key, merge, read_table, records_table, unit_ids
from tessera_ray.store.objects import MAX_CONFLICTS, ObjectNotFound, Objects, PreconditionFailed, conflict_backoff
from tessera_ray.store.writer import PartRecord

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


def _same_objects(row_objects: list[dict] | None, record: PartRecord) -> bool:
    def key(objs):
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

    def to_add(self, current, records: list[PartRecord]) -> tuple[list[PartRecord], list[str]]:
        """Records to merge into ``current`` and the units refused (a later write replaced their objects)."""
        import pyarrow.compute as pc

        if current is None or not records:
            return list(records), []
        wanted = {r.unit_id for r in records}
        rows = current.filter(pc.is_in(current.column("unit_id"), value_set=_string_array(wanted)))
        existing = dict(zip(rows.column("unit_id").to_pylist(), rows.column("objects").to_pylist()))
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


def _string_array(values):
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def publish_records(objects: Objects, year: int, records: list[PartRecord], *, exact: bool = False) -> PublishResult:
    """Merge ``records`` into the year's manifest (``exact``: the manifest becomes these records alone).

    Safe to repeat and to run from several processes at once; see the module doc.
    """
    import pyarrow.compute as pc

    started = time.monotonic()
    key = manifest_key(year)
    good, rejected = verify_records(objects, records)
    new_rows = records_table(good) if good else None
    resolver = _Resolver(objects)

    def rows_of(chosen: list[PartRecord]):
        if new_rows is None or not chosen:
            return records_table([])
        return new_rows.filter(pc.is_in(new_rows.column("unit_id"), value_set=_string_array({r.unit_id for r in chosen})))

    def result(table, add, attempts) -> PublishResult:
        published = frozenset(unit_ids(table))
        return PublishResult(int(year), len(published), tuple(rejected + refused), key,
                             tuple(sorted(r.unit_id for r in add)), attempts, time.monotonic() - started, published)

    for attempt in range(1, MAX_CONFLICTS + 1):
        try:
            data, etag = objects.get_versioned(key)
        except ObjectNotFound:
            data, etag = b"", None
        try:
            current = read_table(data, objects.child_url(key)) if etag is not None else None
        except DataError:
            if not exact:
                raise
            current = None  # a manifest that does not parse is what the exact rebuild replaces
        if exact:
            add, refused = good, []
            table = rows_of(good)
        else:
            add, refused = resolver.to_add(current, good)
            if current is not None and not add:
                return result(current, (), attempt - 1)
            table = rows_of(add) if current is None else merge(current, rows_of(add))
        body = manifest_bytes(table)
        if current is not None and body == data:
            return result(table, (), attempt - 1)
        try:
            objects.put_if(key, body, etag)
        except PreconditionFailed:
            log.info("manifest %s changed while merging (another publisher); merging again", key)
            conflict_backoff(attempt)
            continue
        return result(table, add, attempt)
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
