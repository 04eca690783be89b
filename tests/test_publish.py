"""Publication: incremental, atomic, and safe against object-store faults and concurrent publishers.

Each test runs on a local folder and on moto's S3 behind the fault proxy of
``tests/s3_faults.py`` where both apply; conditional writes (S3 ``If-Match`` /
``If-None-Match``, a ``flock`` locally) are what is under test.
"""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest
from s3_faults import Fault, S3FaultProxy

from tessera_ray import client as tc
from tessera_ray.errors import ServiceError
from tessera_ray.grid import Unit
from tessera_ray.store import EmbeddingStore, publish, read_manifest
from tessera_ray.store.layout import ZARR_DIR
from tessera_ray.store.objects import open_objects
from tessera_ray.store.testing import random_block

UNITS = [Unit(31, 16000 + i // 4, 640 + i % 4, 64) for i in range(9)]
CREATED = "2026-01-01T00:00:00+00:00"

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")


@pytest.fixture
def proxy(s3_server, monkeypatch):
    """moto's S3 behind the fault proxy; every client of this process goes through the proxy."""
    with S3FaultProxy(s3_server.endpoint_url) as p:
        for key, value in {**s3_server.env(), **p.env()}.items():
            monkeypatch.setenv(key, value)
        yield p


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def root(request, tmp_path):
    """A fresh root: a local folder, or a bucket on moto's S3 reached through the fault proxy."""
    if request.param == "local":
        return str(tmp_path / "root")
    request.getfixturevalue("proxy")
    return s3_root(request.getfixturevalue("s3_server"))


def s3_root(s3_server) -> str:
    bucket = f"pub-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket, public_read=True)
    return f"s3://{bucket}/root"


def new_store(root: str, year: int = 2024, zones=(31,)) -> EmbeddingStore:
    store = EmbeddingStore.create_or_open(root, 64, 32, model="m", model_checksum="0" * 64)
    store.prepare(year, zones)
    return store


def write(store: EmbeddingStore, unit: Unit, year: int = 2024):
    """A unit of random values (seeded by the unit), whole: the record and the scales written."""
    emb, scales = random_block(np.random.default_rng(unit.row * 10 + unit.col), 64, 64)
    return store.write_unit(unit, year, emb, scales, scenes={"s2": 3}, created=CREATED), scales


def write_units(store: EmbeddingStore, units, year: int = 2024):
    """Records of the units written, and their scales by unit id."""
    pairs = [write(store, u, year) for u in units]
    return [r for r, _ in pairs], {r.unit_id: s for r, s in pairs}


def assert_consistent(root: str, expected: dict, year: int = 2024) -> None:
    """Every unit in the manifest once, its objects as recorded, and the client reads what was written."""
    frame = read_manifest(root, year)
    assert sorted(frame.unit_id) == sorted(expected)
    objects = open_objects(root)
    for row in frame.itertuples():
        for o in row.objects:
            assert objects.sha256(o["key"]) == o["sha256"], (row.unit_id, o["key"])
    reader = tc.open_root(root)
    for unit_id, scales in expected.items():
        unit = Unit.from_id(unit_id)
        np.testing.assert_array_equal(reader.read_window(unit.zone, unit.window, year)[1], scales)


# --------------------------------------------------------------------------- incremental


@pytest.mark.slow
def test_a_publish_checks_only_the_new_records(proxy, s3_server):
    """Publishing one new unit into a manifest of eight costs HEADs of that unit's objects, and of the
    manifest (still the version this process wrote: it is not downloaded again), then one PUT."""
    root = s3_root(s3_server)
    store = new_store(root)
    records, written = write_units(store, UNITS[:8])
    assert sorted(store.publish(2024, records).added) == sorted(written)
    more, scales = write_units(store, UNITS[8:])
    before = len(proxy.log)
    result = store.publish(2024, more)
    manifest = f"/{root[5:]}/manifests/2024.parquet"
    heads = [p for m, p, _ in proxy.log[before:] if m == "HEAD"]
    assert sorted(heads) == sorted([manifest] + [f"/{root[5:]}/{o['key']}" for o in more[0].objects])
    assert [(m, p) for m, p, _ in proxy.log[before:] if m != "HEAD"] == [("PUT", manifest)]
    assert result.added == (UNITS[8].id,) and result.units == 9 and result.attempts == 1
    assert_consistent(root, {**written, **scales})


def test_the_manifest_is_the_same_whatever_the_batches(tmp_path):
    """One publish of everything, or one per unit in another order (appended): the same rows at once, and
    the same manifest bytes after the end-of-job publish (the compaction)."""
    roots = [str(tmp_path / name) for name in ("once", "batches")]
    stores = [new_store(r) for r in roots]
    records = [write(stores[0], u)[0] for u in UNITS]
    stores[0].publish(2024, records)
    for unit in reversed(UNITS):
        stores[1].publish(2024, [write(stores[1], unit)[0]])
    once = tmp_path / "once" / "manifests" / "2024.parquet"
    batches = tmp_path / "batches" / "manifests" / "2024.parquet"
    assert once.read_bytes() != batches.read_bytes()  # appended: one row group per publish
    frames = [read_manifest(r, 2024).sort_values("unit_id").reset_index(drop=True) for r in roots]
    assert frames[0].equals(frames[1])
    for r in roots:
        publish(r, 2024)
    assert once.read_bytes() == batches.read_bytes()


def test_a_job_that_published_nothing_leaves_a_manifest_a_later_publish_merges_into(tmp_path):
    """A job whose every unit failed publishes an empty manifest; the re-run's units merge into it, read back, and
    its end-of-job publish leaves the bytes of a manifest that never was empty."""
    roots = [str(tmp_path / name) for name in ("failed-first", "direct")]
    store = new_store(roots[0])
    assert store.publish(2024, []).units == 0
    assert len(read_manifest(roots[0], 2024)) == 0
    records, written = write_units(store, UNITS[:2])
    result = store.publish(2024, records)
    assert sorted(result.added) == sorted(written) and result.units == 2
    store.publish(2024)
    assert_consistent(roots[0], written)
    direct = new_store(roots[1])
    direct.publish(2024, write_units(direct, UNITS[:2])[0])
    direct.publish(2024)
    assert (tmp_path / "failed-first" / "manifests" / "2024.parquet").read_bytes() == \
        (tmp_path / "direct" / "manifests" / "2024.parquet").read_bytes()


# --------------------------------------------------------------------------- object-store faults


@pytest.mark.slow
@pytest.mark.parametrize("lost", ["drop", "delay"])
def test_put_faults_are_retried_and_the_publish_is_whole(proxy, s3_server, monkeypatch, lost):
    """503 on shard and part PUTs; a part PUT and the manifest's conditional PUT that succeed but whose
    answer is lost (connection dropped, or an answer after the client's timeout)."""
    monkeypatch.setenv("TESSERA_RAY_S3_READ_TIMEOUT", "1")
    root = s3_root(s3_server)
    store = new_store(root)
    proxy.add(Fault("PUT", "/embeddings/c/", status=503, times=2))
    proxy.add(Fault("PUT", "/_parts/", status=503))
    proxy.add(Fault("PUT", "/_parts/", after=lost, delay=2.5))
    proxy.add(Fault("PUT", "/manifests/2024.parquet", conditional=True, after=lost, delay=2.5))
    records, written = write_units(store, UNITS[:2])
    result = store.publish(2024, records)
    assert result.units == 2 and not result.rejected
    assert_consistent(root, written)
    assert proxy.outcomes("PUT", "/embeddings/c/")[:3] == ["503", "503", "200"]
    manifest_puts = proxy.outcomes("PUT", "/manifests/2024.parquet")
    # the lost answer was retried by botocore, whose retry then failed its own precondition: re-read, done
    assert manifest_puts[0].endswith(("dropped", "delayed")) and manifest_puts[1] == "412", manifest_puts
    assert all(f.times == 0 for f in proxy.faults)


@pytest.mark.slow
def test_a_store_that_keeps_refusing_fails_the_publish_and_loses_nothing(proxy, s3_server, monkeypatch):
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    root = s3_root(s3_server)
    store = new_store(root)
    records, first = write_units(store, UNITS[:1])
    store.publish(2024, records)
    proxy.add(Fault("PUT", "/manifests/2024.parquet", status=503, times=2))
    record, scales = write(store, UNITS[1])
    with pytest.raises(ServiceError, match=r"manifests/2024\.parquet"):
        store.publish(2024, [record])
    assert_consistent(root, first)  # the previous manifest, whole
    publish(root, 2024)  # later: the part record is still there
    assert_consistent(root, {**first, UNITS[1].id: scales})


# --------------------------------------------------------------------------- concurrent publishers


def _rendezvous(monkeypatch, module, *names: str, parties: int = 2):
    """Make the first call of any of ``module.names`` in each thread wait for ``parties`` threads: every one
    of them has then read the object it is about to replace, so all but one lose the race."""
    state = threading.local()
    barrier = threading.Barrier(parties, timeout=30)

    def wrap(real):
        def wrapper(*args, **kwargs):
            if getattr(state, "armed", False):
                state.armed = False
                barrier.wait()
            return real(*args, **kwargs)
        return wrapper

    for name in names:
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))

    def arm():
        state.armed = True

    return arm


def _run(*jobs):
    errors = []

    def guard(job):
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guard, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_two_publishers_at_once_publish_every_unit_once(root, monkeypatch):
    """Two jobs with overlapping units publish one unit each per round, both at the same moment: every round
    one of them loses the conditional write, merges again, and nothing is lost or doubled."""
    from tessera_ray.store import publication

    arm = _rendezvous(monkeypatch, publication, "manifest_bytes", "append")
    new_store(root)
    stores = [EmbeddingStore.open(root), EmbeddingStore.open(root)]
    plans = [UNITS[0:6], UNITS[6:9] + UNITS[3:6]]  # rounds 3-5: both write and publish the same unit
    written, attempts = {}, [[], []]

    def job(i):
        def run():
            for unit in plans[i]:
                record, scales = write(stores[i], unit)
                written[unit.id] = scales
                arm()
                attempts[i].append(stores[i].publish(2024, [record]).attempts)
        return run

    _run(job(0), job(1))
    assert_consistent(root, written)
    # rounds 0-2: the loser merged again and wrote (2 attempts); rounds 3-5: the loser found the unit
    # there with the same objects after its lost write (1 attempt, nothing added)
    assert [sorted(pair) for pair in zip(attempts[0], attempts[1])] == [[1, 2]] * 3 + [[1, 1]] * 3, attempts


def test_two_drivers_preparing_one_root_at_once_keep_both_years_and_zones(root, monkeypatch):
    """The pieces of a split run start together: one adds 2023 and zone 31, the other 2025 and zone 32."""
    from tessera_ray.store import writer

    arm = _rendezvous(monkeypatch, writer, "metadata_objects")
    EmbeddingStore.create_or_open(root, 64, 32, model="m")
    stores = [EmbeddingStore.open(root), EmbeddingStore.open(root)]
    pieces = [(2023, Unit(31, 16000, 640, 64)), (2025, Unit(32, 16000, 100, 64))]

    def job(i):
        def run():
            arm()
            year, unit = pieces[i]
            stores[i].prepare(year, {unit.zone})
            record, _ = write(stores[i], unit, year)
            stores[i].publish(year, [record])
        return run

    _run(job(0), job(1))
    state = EmbeddingStore.open(root).state
    assert sorted(state.years) == [2023, 2025] and state.zones == (31, 32)
    for year, unit in pieces:  # each year's shards sit at its own index on the time axis
        expected = random_block(np.random.default_rng(unit.row * 10 + unit.col), 64, 64)[1]
        assert_consistent(root, {unit.id: expected}, year)


# --------------------------------------------------------------------------- killed publish


@pytest.mark.parametrize("moment", ["merging", "writing"])
def test_a_publish_killed_mid_merge_leaves_the_previous_manifest(tmp_path, moment):
    """SIGKILL a publishing process while it merges, or with the new manifest written but not in place:
    readers still read the previous manifest, and the next publish (its lock released) completes."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "r"
    store = new_store(str(root))
    records, first = write_units(store, UNITS[:1])
    store.publish(2024, records)
    record, scales = write(store, UNITS[1])
    script = f"""
import os, sys, time
import tessera_ray.store.publication as publication
from tessera_ray.store import EmbeddingStore
from tessera_ray.store.writer import PartRecord
moment = {moment!r}
def stop():
    print("stop", flush=True); time.sleep(60)
def stopping(real):
    def build(*args):
        if moment == "merging":
            stop()
        data = real(*args)
        if moment == "writing":
            os.fsync = lambda fd: stop()
        return data
    return build
publication.manifest_bytes = stopping(publication.manifest_bytes)  # the first publish, and a compaction
publication.append = stopping(publication.append)  # every publish during a job
record = PartRecord.from_json(sys.stdin.buffer.read())
EmbeddingStore.open({str(root)!r}).publish(2024, [record])
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(record.to_json())
    proc.stdin.close()
    assert proc.stdout.readline().strip() == b"stop"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_consistent(str(root), first)
    assert list(tc.open_root(str(root)).units(2024).unit_id) == [UNITS[0].id]
    result = EmbeddingStore.open(str(root)).publish(2024, [record])
    assert result.added == (UNITS[1].id,)
    assert_consistent(str(root), {**first, UNITS[1].id: scales})


def test_metadata_is_written_once_and_kept_by_a_later_publish(tmp_path):
    """A publish with the root's metadata unchanged does not rewrite the root ``zarr.json``."""
    root = tmp_path / "r"
    store = new_store(str(root))
    store.publish(2024, [write(store, UNITS[0])[0]])
    doc = root / ZARR_DIR / "zarr.json"
    before = (doc.read_bytes(), doc.stat().st_mtime_ns)
    publish(str(root), 2024)
    store.prepare(2024, {31})
    assert (doc.read_bytes(), doc.stat().st_mtime_ns) == before


def test_the_job_publishes_every_n_units_or_m_minutes_and_keeps_what_a_failed_publish_had(tmp_path, monkeypatch):
    from tessera_ray.pipeline.publishing import Publisher

    store = new_store(str(tmp_path / "r"))
    records, written = write_units(store, UNITS[:5])
    now, notes = [0.0], []
    publisher = Publisher(store, 2024, every_units=2, every_minutes=1, note=notes.append, clock=lambda: now[0])
    publisher.add(records[0])
    assert publisher.maybe_publish() is None  # one unit, no time passed
    now[0] = 61.0
    assert publisher.maybe_publish().added == (records[0].unit_id,)  # a minute passed
    publisher.add(records[1])
    publisher.add(records[2])
    assert len(publisher.maybe_publish().added) == 2  # two units
    publisher.add(records[3])
    publisher.add(records[4])
    real = store.publish
    monkeypatch.setattr(store, "publish", lambda *a, **k: (_ for _ in ()).throw(ServiceError("store down")))
    assert publisher.maybe_publish() is None and len(publisher.pending) == 2
    assert notes[-1].startswith("publish failed, 2 unit(s) kept for the next one: store down")
    monkeypatch.setattr(store, "publish", real)
    assert publisher.finish().units == 5 and publisher.publishes == 4
    assert_consistent(str(tmp_path / "r"), written)
    assert not publisher.others_published  # every unit in the manifest is this job's: no queue to scan
    other = new_store(str(tmp_path / "r"))
    other.publish(2024, [write(other, UNITS[5])[0]])  # another job publishes a unit
    publisher.add(write(store, UNITS[6])[0])
    assert publisher.publish().units == 7 and publisher.others_published
    publisher.add(write(store, UNITS[7])[0])
    assert publisher.publish().units == 8 and not publisher.others_published
    assert sorted(read_manifest(str(tmp_path / "r"), 2024).unit_id) == sorted(u.id for u in UNITS[:8])


def test_a_manifest_that_does_not_parse_stops_a_publish_and_the_full_check_rebuilds_it(tmp_path):
    from tessera_ray.errors import DataError

    root = tmp_path / "r"
    store = new_store(str(root))
    records, written = write_units(store, UNITS[:2])
    store.publish(2024, records[:1])
    manifest = root / "manifests" / "2024.parquet"
    manifest.write_bytes(manifest.read_bytes()[: -100])
    with pytest.raises(DataError, match="is unreadable"):
        store.publish(2024, records[1:])
    assert publish(str(root), 2024, reverify=True).units == 2
    assert_consistent(str(root), written)


def test_a_background_publish_does_not_hold_the_driver_and_a_failed_one_keeps_its_units(tmp_path, monkeypatch):
    """The job's publisher runs a publish on its thread: the driver's call returns at once while it runs,
    units finished meanwhile wait for the next one, and a failed one's units go to the next publish."""
    from tessera_ray.pipeline.publishing import Publisher

    store = new_store(str(tmp_path / "r"))
    records, written = write_units(store, UNITS[:5])
    real, gate, calls = store.publish, threading.Event(), []

    def slow(year, recs=None, **kw):
        calls.append([r.unit_id for r in recs or ()])
        assert gate.wait(30)
        if len(calls) == 2:
            raise ServiceError("store down")
        return real(year, recs, **kw)

    monkeypatch.setattr(store, "publish", slow)
    notes = []
    publisher = Publisher(store, 2024, every_units=1, every_minutes=0, note=notes.append, background=True)
    publisher.add(records[0])
    assert publisher.maybe_publish() is None  # started, not waited for
    publisher.add(records[1])
    publisher.add(records[2])
    assert publisher.maybe_publish() is None and calls == [[records[0].unit_id]]  # one at a time
    gate.set()
    for _ in range(200):
        done = publisher.maybe_publish()  # the first one's result, and the second one (records 1, 2) starts
        if done is not None:
            break
        threading.Event().wait(0.05)
    assert done.added == (records[0].unit_id,)
    publisher.add(records[3])
    publisher.add(records[4])
    assert publisher.finish().units == 5  # the failed second publish's units were published by the last one
    assert any(n.startswith("publish failed, ") for n in notes)
    assert calls[1] == [records[1].unit_id, records[2].unit_id]
    assert_consistent(str(tmp_path / "r"), written)


def test_the_units_bound_grows_with_the_manifest_and_the_minutes_bound_still_holds(monkeypatch):
    """A publish writes the whole manifest again: once it holds many units, a publish waits for a fraction of
    them (``--publish-growth``), so a run's publishing grows with its size, not with its square."""
    from types import SimpleNamespace

    from tessera_ray.pipeline import publishing
    from tessera_ray.pipeline.publishing import Publisher
    from tessera_ray.store.publication import PublishResult

    # what a publish does after it (a gc.collect(): ~0.4 s in a test process holding Ray and torch) is not
    # what is tested here, and 333 publishes of it took two minutes of the suite
    monkeypatch.setattr(publishing, "_release_memory", lambda: None)

    class Sink:
        def __init__(self):
            self.published, self.batches = set(), []

        def publish(self, year, records=None):
            added = tuple(r.unit_id for r in records or ())
            self.batches.append((len(self.published), len(added)))
            self.published.update(added)
            return PublishResult(year, len(self.published), (), "m", added, 1, 0.0, frozenset(self.published))

    def run(growth, clock=None, units=1000):
        sink, now = Sink(), [0.0]
        publisher = Publisher(sink, 2024, every_units=10, every_minutes=1 if clock else 0, growth=growth,
                              clock=lambda: now[0])
        for i in range(units):
            publisher.add(SimpleNamespace(unit_id=f"u{i}"))
            now[0] += clock or 0.0
            publisher.maybe_publish()
        return sink

    fixed, growing = run(0.0), run(0.1)
    assert len(fixed.batches) == 100 and all(n == 10 for _, n in fixed.batches)
    assert 30 <= len(growing.batches) <= 36  # 10 of 10 up to 100 units, then 10 % more each time
    assert all(n >= max(10, 0.1 * before) for before, n in growing.batches)
    assert sum(before + n for before, n in growing.batches) < 0.25 * sum(before + n for before, n in fixed.batches)
    slow = run(0.1, clock=30.0, units=400)  # a unit every 30 s: the minutes bound publishes every two units
    assert all(n == 2 for _, n in slow.batches) and len(slow.batches) == 200
