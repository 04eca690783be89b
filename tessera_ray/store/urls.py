"""Single objects named by a URL (a checkpoint, a unit folder's files, a catalog snapshot).

They go through the same :class:`~tessera_ray.store.objects.Objects` as the
store, so there is one object-store stack in the package (boto3 for S3,
requests for HTTP: ``docs/architecture.md`` says why), one way to find
credentials (the environment) and one set of errors: a missing object is
:class:`~tessera_ray.store.objects.ObjectNotFound`, an unreachable service a
:class:`~tessera_ray.errors.ServiceError`.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

from tessera_ray.errors import UserInputError
from tessera_ray.store.objects import Objects, open_objects

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12


def is_remote(url: str | os.PathLike[str]) -> bool:
    """Whether ``url`` names an object store (``s3://``, ``http(s)://``) rather than a local path."""
    return str(url).split("://", 1)[0].lower() in ("s3", "http", "https") if "://" in str(url) else False


def split_url(url: str | os.PathLike[str]) -> tuple[Objects, str]:
    """The store holding ``url`` and the object's key in it."""
    text = os.fspath(url).rstrip("/")
    parent, _, name = text.rpartition("/")
    if not parent:  # a bare file name: the current folder
        return open_objects("."), name
    if parent.endswith(":/"):  # "s3://bucket" alone
        raise UserInputError(f"{text} names a bucket or host, not an object in it")
    return open_objects(parent), name


def read_url(url: str | os.PathLike[str]) -> bytes:
    objects, key = split_url(url)
    return objects.get(key)


def write_url(url: str | os.PathLike[str], data: bytes) -> None:
    objects, key = split_url(url)
    objects.put(key, data)


class RangedReader(io.RawIOBase):
    """A read-only, seekable file over one object, read with range requests (for Parquet readers).

    ``tail`` bytes at the end are fetched once when it opens: a Parquet
    reader's footer then costs no request of its own. Every range is
    subclassable (:meth:`_get_range`), so a reader that counts its requests
    (the client's) is this class too.
    """

    def __init__(self, objects: Objects, key: str, tail: int = 0):
        super().__init__()
        self.objects, self.key, self.position = objects, key, 0
        size = objects.size(key)
        if size is None:
            from tessera_ray.store.objects import ObjectNotFound

            raise ObjectNotFound(f"no object {objects.child_url(key)}")
        self.length = size
        self._tail_start = max(0, size - tail) if tail > 0 else size
        self._tail = self._read_exactly(self._tail_start, size - self._tail_start) if tail > 0 else b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.length - self.position)
        if want <= 0:
            return 0
        if self.position >= self._tail_start:
            data = self._tail[self.position - self._tail_start : self.position - self._tail_start + want]
        else:
            data = self._read_exactly(self.position, want)
        view[:want] = data
        self.position += want
        return want

    def _get_range(self, start: int, length: int) -> bytes:
        """One range request."""
        return self.objects.get_range(self.key, start, length)

    def _read_exactly(self, start: int, want: int) -> bytes:
        data = self._get_range(start, want)
        if len(data) != want:
            from tessera_ray.errors import DataError

            raise DataError(f"{self.objects.child_url(self.key)}: asked for {want} bytes at {start}, "
                            f"got {len(data)} (truncated or changed while read)")
        return data
