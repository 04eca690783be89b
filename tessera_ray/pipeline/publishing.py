"""Publish as you go: the embed driver puts finished units into the year's manifest during the job.

Writers return their part records to the driver; every ``every_units``
finished units (or, once the manifest is large, every ``growth`` of the units
it holds) or every ``every_minutes`` minutes, whichever comes first, the
driver merges the records gathered since the last publish into the manifest
(:meth:`~tessera_ray.store.EmbeddingStore.publish` with those records: their
objects are checked, nothing already published is read again but the
manifest itself). Consumers see units hours before a long job ends, and a
job killed at any moment has published everything up to its last publish.

A publish that fails (the object store is down for longer than its retries)
does not stop the job: the records are kept for the next one. The last
publish of a year, at the end of the job, must succeed; it also takes part
records left by killed or other jobs, and compacts the manifest (:meth:`finish`).

With ``background=True`` (the embed job) a publish runs on a thread of its
own, one at a time, while the driver goes on dispatching reads and writes:
records that finish meanwhile wait for the next publish, so what is queued is
bounded by the units of one publish interval. Inline, the driver's loop
submits nothing while a publish runs, so read slots go idle for its length
(``jobs/bench_planet.py --publish-inline`` against the default; docs/scale.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from tessera_ray.errors import TesseraError, one_line

if TYPE_CHECKING:
    from tessera_ray.store.publication import PublishResult
    from tessera_ray.store.sink import EmbeddingSink
    from tessera_ray.store.writer import PartRecord

log = logging.getLogger(__name__)

DEFAULT_EVERY_UNITS = 100
"""Units per publish, at least (:data:`DEFAULT_GROWTH` raises it as the manifest grows: 1,000 units into
100,000 published ones). At 4096 px a unit takes minutes on a GPU, so on a cluster of a few dozen GPUs the
minutes bound below is what triggers; a publish of 100 units into 100,000 published ones appends them in
0.24 s, and a compaction, every quarter of the rows, rewrites the manifest in ~2 s (README,
``jobs/bench_publish.py``)."""
DEFAULT_EVERY_MINUTES = 10.0
DEFAULT_GROWTH = 0.01
"""The units bound grows with the manifest: a publish waits for at least this fraction of the units
already published (and at least ``every_units``). A publish writes the whole manifest again (locally a
new file; on S3 one PUT of the object), so with a fixed number of units per publish a job's publishing
cost grows with the square of its units: a planet year (1.8 M tiles of 0.1 degree, a manifest of about
1.2 GB) published every 100 units is 18,000 writes of up to 1.2 GB. With a growth of 1 % each row is
written about a hundred times over the whole run, whatever its size, and a 100,000-unit simulation
publishes some 330 times instead of 1,000 (``jobs/bench_planet.py``, README "Scale"). The minutes bound
still publishes whatever finished at least every :data:`DEFAULT_EVERY_MINUTES`. The share is of the whole
manifest, other jobs' units included: a small job adding to a large year publishes on the minutes bound
and at its end (``--publish-growth 0``: every ``every_units`` units, whatever the manifest holds)."""


class Publisher:
    """Gathers a year's part records and publishes them when enough units or time have passed."""

    def __init__(self, store: EmbeddingSink, year: int, every_units: int = DEFAULT_EVERY_UNITS,
                 every_minutes: float = DEFAULT_EVERY_MINUTES, note: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, background: bool = False,
                 growth: float = DEFAULT_GROWTH):
        self.store, self.year = store, int(year)
        self.every_units, self.every_seconds = int(every_units), float(every_minutes) * 60.0
        self.growth = float(growth)
        self.note = note or (lambda text: None)
        self.clock = clock
        self.pending: list[PartRecord] = []
        self.last = clock()
        self.publishes = 0
        self.seconds = 0.0
        self.units: int | None = None
        """Units in the manifest after this publisher's last publish (None before the first)."""
        self.others_published = False
        """Whether the manifest, at the last publish, held units that neither it nor this job put there: only
        then need the driver look for units of its queue that another job published (a scan of the queue)."""
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="publish") if background else None
        self._running: Future[tuple[PublishResult, float, float]] | None = None
        self._inflight: list[PartRecord] = []

    def add(self, record: PartRecord) -> None:
        self.pending.append(record)

    def due(self) -> bool:
        """Whether the records gathered should be published now (0 turns a bound off)."""
        if not self.pending:
            return False
        by_units = self.every_units > 0 and len(self.pending) >= max(self.every_units, self.growth * (self.units or 0))
        by_time = self.every_seconds > 0 and self.clock() - self.last >= self.every_seconds
        return by_units or by_time

    def maybe_publish(self) -> PublishResult | None:
        """Publish if due; the :class:`~tessera_ray.store.publication.PublishResult`, or None (not due, or failed).

        In the background, start the publish if due and none is running, and return the result of the one
        that finished since the last call (None if none did).
        """
        if self._thread is not None:
            done = self._collect(wait=False)
            if self._running is None and self.due():
                self._inflight, self.pending = self.pending, []
                self._running = self._thread.submit(self._timed, self._inflight)
            return done
        if not self.due():
            return None
        try:
            return self.publish()
        except TesseraError as exc:  # keep the records: the next publish (or the last one) takes them
            self._failed(exc)
            return None

    def _failed(self, exc: Exception) -> None:
        self.last = self.clock()
        self.note(f"publish failed, {len(self.pending)} unit(s) kept for the next one: {one_line(exc)}")

    def _collect(self, wait: bool) -> PublishResult | None:
        """The result of the background publish if it finished (or, ``wait``, once it does); None if it failed."""
        running = self._running
        if running is None or (not wait and not running.done()):
            return None
        self._running = None
        try:
            timed = running.result()
        except TesseraError as exc:  # its records go back in front of those gathered since
            self.pending = self._inflight + self.pending
            self._inflight = []
            self._failed(exc)
            return None
        self._inflight = []
        result, started, ended = timed
        self._count(result, started, ended)
        return result

    def _timed(self, records: list[PartRecord]) -> tuple[PublishResult, float, float]:
        """A publish on the thread, with when it began and ended (not when the driver saw it end)."""
        started = self.clock()
        return self.store.publish(self.year, records), started, self.clock()

    def publish(self) -> PublishResult:
        """Merge the gathered records into the manifest now (raises if it cannot)."""
        records, started = list(self.pending), self.clock()
        result = self.store.publish(self.year, records)
        self.pending = self.pending[len(records):]
        self._count(result, started)
        return result

    def finish(self) -> PublishResult:
        """The year's last publish: the gathered records, then every part record not yet in the manifest."""
        if self._thread is not None:
            self._collect(wait=True)  # a failure there leaves its records in pending, published next
            self._thread.shutdown()
        if self.pending:
            self.publish()
        started = self.clock()
        result = self.store.publish(self.year)
        self._count(result, started)
        return result

    def _count(self, result: PublishResult, started: float, ended: float | None = None) -> None:
        self.others_published = self.units is None or result.units != self.units + len(result.added)
        self.units = result.units
        _release_memory()
        self.publishes += 1
        self.seconds += (self.clock() if ended is None else ended) - started
        self.last = self.clock()
        if result.added or result.rejected:
            extra = f", {len(result.rejected)} rejected" if result.rejected else ""
            self.note(f"published {len(result.added)} unit(s), {result.units} in the manifest{extra} "
                      f"({result.seconds:.1f} s)")


def _release_memory() -> None:
    """Give back what a publish freed: Arrow's pool and glibc keep it, and the driver publishes ~1,000 times.

    Measured (60 publishes of 100 units into a 1,000-unit manifest, in one
    process): RSS 259 -> 328 MB without, flat at ~224 MB with; in
    ``jobs/bench_planet.py`` the driver grew 419 -> 574 MB over 5,000 units
    (49 publishes) before.
    """
    import gc

    import pyarrow as pa

    from tessera_ray.memory import release_freed_memory

    gc.collect()
    pa.default_memory_pool().release_unused()
    release_freed_memory()
