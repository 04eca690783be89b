"""Every request the client makes, counted by kind: one GET helper and a seekable file over range reads.

The counts (:attr:`Fetcher.stats`) are what benchmarks and tests assert on
(requests and bytes do not drift from run to run, timings do), so every
component of the client reads through one :class:`Fetcher`.
"""

from __future__ import annotations

import io
import threading
from collections import Counter
from typing import Any

from tessera_ray.store.objects import ObjectNotFound, Objects


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


class RangeFile(io.RawIOBase):
    """A read-only seekable file over range requests (for pyarrow's Parquet reader).

    The tail is fetched once with the size, so the footer costs no extra request.
    """

    def __init__(self, fetch: Fetcher, key: str, kind: str = "manifest", tail: int = 64 * 1024) -> None:
        self.fetch, self.key, self.kind, self.pos = fetch, key, kind, 0
        size = fetch.objects.size(key)
        if size is None:
            raise ObjectNotFound(f"no object {fetch.url(key)}")
        self.size = size
        start = max(0, size - tail)
        self._tail_start, self._tail = start, fetch.get_range(kind, key, start, size - start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def readinto(self, buf: Any) -> int:
        n = min(len(buf), self.size - self.pos)
        if n <= 0:
            return 0
        if self.pos >= self._tail_start:
            data = self._tail[self.pos - self._tail_start : self.pos - self._tail_start + n]
        else:
            data = self.fetch.get_range(self.kind, self.key, self.pos, n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)
