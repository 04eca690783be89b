"""Every request the client makes, counted by kind: one GET helper and a Parquet file over range reads.

The counts (:attr:`Fetcher.stats`) are what benchmarks and tests assert on
(requests and bytes do not drift from run to run, timings do), so every
component of the client reads through one :class:`Fetcher`.
"""

from __future__ import annotations

import threading
from collections import Counter

from tessera_ray.store.objects import Objects
from tessera_ray.store.urls import RangedReader


class Fetcher:
    """GETs against a root's objects, each counted in :attr:`stats` as ``{kind}_requests`` and ``{kind}_bytes``.

    Thread-safe. It calls ``objects.get``/``get_range`` at request time, so a
    test that wraps those methods on the shared ``Objects`` sees every read.
    """

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def get(self, kind: str, key: str) -> bytes:
        """One whole object; ``kind`` (metadata, index, chunks, manifest) only feeds stats."""
        return self._counted(kind, self.objects.get(key))

    def get_range(self, kind: str, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (a suffix when ``start`` is negative), counted as ``kind``."""
        return self._counted(kind, self.objects.get_range(key, start, length))

    def _counted(self, kind: str, data: bytes) -> bytes:
        with self._lock:
            self.stats[f"{kind}_requests"] += 1
            self.stats[f"{kind}_bytes"] += len(data)
        return data

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter that is not a request (e.g. ``fixed_offset_fallbacks``)."""
        with self._lock:
            self.stats[name] += n

    def url(self, key: str) -> str:
        """The full URL of ``key``, for messages."""
        return self.objects.child_url(key)


class RangeFile(RangedReader):
    """A seekable file over range requests for pyarrow's Parquet reader, each request counted as ``kind``.

    The last 64 KiB are fetched with the size, so the footer costs no extra request.
    """

    def __init__(self, fetch: Fetcher, key: str, kind: str = "manifest", tail: int = 64 * 1024) -> None:
        self.fetch, self.kind = fetch, kind
        super().__init__(fetch.objects, key, tail=tail)

    def _get_range(self, start: int, length: int) -> bytes:
        return self.fetch.get_range(self.kind, self.key, start, length)
