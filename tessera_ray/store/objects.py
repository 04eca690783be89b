"""All object-storage I/O of the store: a local folder, ``s3://`` or (read-only) ``http(s)://``.

Writes are atomic and verified before anyone records them: a local object is
written to a temporary file, fsynced and renamed into place, then read back and
hashed (an object replaced by :meth:`Objects.put_if` is checked by size: see
there); an S3 object is one PUT carrying its SHA-256, which the server checks,
then a HEAD confirms size and checksum. Readers never see half an object.

Objects that several writers replace (a year's manifest, the root ``zarr.json``)
are written with :meth:`Objects.put_if`: only if the object is still the
version the writer read (S3 ``If-Match`` / ``If-None-Match``; a local folder
does the same under an exclusive ``flock`` on the folder holding the object),
so a writer that lost a race learns it (:class:`PreconditionFailed`)
instead of silently undoing the other's write. docs/store.md has the protocol.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tessera_ray import atomic
from tessera_ray.errors import DataError, ServiceError, UserInputError, env_number
from tessera_ray.serve import media_type

if TYPE_CHECKING:
    import requests
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import HeadObjectOutputTypeDef


@dataclass(frozen=True)
class ObjectInfo:
    """What was written: the key relative to the root, its size and SHA-256 (hex)."""

    key: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, str | int]:
        return {"key": self.key, "size": self.size, "sha256": self.sha256}


class ObjectNotFound(DataError):
    """An object the caller asked for does not exist."""


class PreconditionFailed(ServiceError):
    """A conditional write found the object changed since the writer read it (or present when it was to be new)."""


MAX_CONFLICTS = 30
"""Read-merge-write rounds a writer of a versioned object tries before giving up (each lost to another writer)."""


def conflict_backoff(attempt: int) -> None:
    """Jittered exponential wait after the ``attempt``-th lost race (at most a second), so racers spread out."""
    time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))


S3_READ_TIMEOUT_ENV = "TESSERA_RAY_S3_READ_TIMEOUT"
"""Seconds an S3 request may wait for its response (botocore's default: 60)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Objects:
    """Byte objects under one root, addressed by ``/``-separated keys."""

    url: str
    writable = True

    def put(self, key: str, data: bytes) -> ObjectInfo:
        raise NotImplementedError

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version tag (ETag), for a later :meth:`put_if`."""
        raise NotImplementedError

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """Write ``data`` only if the object is still version ``etag`` (None: only if there is none); the new tag.

        Raises :class:`PreconditionFailed` when another writer got there first.
        """
        raise NotImplementedError

    def version(self, key: str) -> str | None:
        """The tag :meth:`get_versioned` would return now, without reading the object; None when it is absent.

        A writer that keeps what it last wrote asks this before reading a
        versioned object again: an unchanged tag means nobody else wrote it.
        """
        try:
            return self.get_versioned(key)[1]
        except ObjectNotFound:
            return None

    def stat(self, key: str) -> ObjectInfo | None:
        """Size of an object, and its SHA-256 where the store keeps one (else ""); None when absent."""
        size = self.size(key)
        return None if size is None else ObjectInfo(key, size, "")

    def sha256(self, key: str) -> str:
        """The SHA-256 (hex) of an object's bytes: the store's own record where it has one, else hashed here."""
        info = self.stat(key)
        if info is None:
            raise ObjectNotFound(f"no object {self.child_url(key)}")
        return info.sha256 or sha256_hex(self.get(key))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start``; a negative ``start`` counts from the end."""
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        """Size of an object, None when it does not exist."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def list(self, prefix: str) -> list[str]:
        """Keys under a prefix (recursive), sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def child_url(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"


def open_objects(root: str | os.PathLike[str]) -> Objects:
    """The object store behind a root: a path, ``file://``, ``s3://bucket/prefix`` or ``http(s)://``."""
    from tessera_ray.paths import check_url

    text = os.fspath(root)
    try:
        scheme = urlparse(check_url(text, "root URL")).scheme
    except ValueError as exc:  # not a URL check_url judges (e.g. file://[)
        raise UserInputError(f"malformed root URL {text!r}: {exc}") from None
    if scheme in ("http", "https"):
        return HttpObjects(text)
    if scheme == "s3":
        return S3Objects(text)
    if scheme == "file":
        return LocalObjects(urlparse(text).path)
    if scheme and len(scheme) > 1:
        raise UserInputError(f"unsupported storage URL scheme {scheme!r} in {text!r}")
    return LocalObjects(text)


# --------------------------------------------------------------------------- local


class LocalObjects(Objects):
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().absolute()
        self.url = str(self.path)

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad object key {key!r}")
        return self.path / key

    def put(self, key: str, data: bytes) -> ObjectInfo:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(target, data)
        info = ObjectInfo(key, len(data), sha256_hex(data))
        with open(target, "rb") as f:  # read back in blocks: no second copy of a 2 GB shard
            back = hashlib.file_digest(f, "sha256")
            size = f.tell()
        if size != info.size or back.hexdigest() != info.sha256:
            raise DataError(f"object {key} does not read back as written")
        return info

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {self.child_url(key)}") from None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The object and its version tag (see :func:`_local_tag`), both of the one file that was opened."""
        try:
            with open(self._path(key), "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {self.child_url(key)}") from None
        return data, _local_tag(st, data[-VERSION_TAIL:])

    def version(self, key: str) -> str | None:
        try:
            with open(self._path(key), "rb") as f:
                st = os.fstat(f.fileno())
                f.seek(max(0, st.st_size - VERSION_TAIL))
                return _local_tag(st, f.read())
        except FileNotFoundError:
            return None

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """Check and replace under an exclusive ``flock``: the kernel drops it if the process dies, so a
        killed writer never blocks the next one. Every writer of a versioned object goes through here.

        Unlike :meth:`put`, the object is not read back and hashed: a manifest
        reaches tens of MB at planet scale (69 MB at 100,000 units) and is
        replaced at every publish, where four whole-file SHA-256 passes (the
        old tag, the check under the lock, the written bytes, the read-back)
        were most of a publish's time (``jobs/bench_publish.py``); its size is
        checked, and every reader parses it. (A publish that rewrote it decodes
        its own bytes again; one that appended starts the next publish of its
        process from the state it kept: :mod:`tessera_ray.store.publication`.)
        """
        with self._locked(key):
            if self.version(key) != etag:
                raise PreconditionFailed(f"{self.child_url(key)} changed since it was read")
            target = self._path(key)
            atomic.write_bytes(target, data)
            tag = self.version(key)
            if tag is None or target.stat().st_size != len(data):
                raise DataError(f"object {self.child_url(key)} has the wrong size after writing")
            return tag

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive ``flock`` on the folder holding ``key``: no lock file to leave in the root, and
        the kernel releases it when the holder dies. (Over NFS, where folders cannot be flocked, two
        machines publishing into one local root are not supported; use S3.)"""
        folder = self._path(key).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def sha256(self, key: str) -> str:
        try:
            with open(self._path(key), "rb") as f:
                return hashlib.file_digest(f, "sha256").hexdigest()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {self.child_url(key)}") from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                if start < 0:
                    f.seek(0, os.SEEK_END)
                    start = max(0, f.tell() + start)
                f.seek(start)
                return f.read(length)
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {self.child_url(key)}") from None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.path
        if not base.is_dir():
            return []
        keys = [
            p.relative_to(self.path).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith((".tmp", atomic.PARTIAL))
        ]
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


VERSION_TAIL = 64 * 1024
"""Bytes at the end of a local object that its version tag hashes (a Parquet file's footer, a whole zarr.json)."""


def _local_tag(st: os.stat_result, tail: bytes) -> str:
    """A local object's version tag: its file's identity and times, and a hash of its last bytes.

    Writers never change a file in place: each version is a new file renamed
    over the old (a new inode, a new ctime), so the identity changes with every
    write. The hash of the tail (a Parquet footer lists every row group's offset
    and size) guards the one way an identity could repeat: a freed inode number
    reused for a file of the same size within one tick of the kernel's coarse
    clock. Reading the whole object to hash it, as the tag once did, made a
    publish cost in proportion to the manifest's size.
    """
    digest = hashlib.sha256(tail).hexdigest()[:32]
    return f"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}-{digest}"


# --------------------------------------------------------------------------- S3


def _client_options() -> dict[str, Any]:
    """botocore settings: retries in its "standard" mode (throttling, 5xx, timeouts and dropped connections,
    with backoff), 5 attempts in all; ``AWS_RETRY_MODE`` / ``AWS_MAX_ATTEMPTS`` change them as for any AWS
    client, :data:`S3_READ_TIMEOUT_ENV` the read timeout."""
    try:
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or 5)
        timeout = float(os.environ[S3_READ_TIMEOUT_ENV]) if os.environ.get(S3_READ_TIMEOUT_ENV) else None
    except ValueError:
        raise UserInputError(f"AWS_MAX_ATTEMPTS and {S3_READ_TIMEOUT_ENV} must be numbers") from None
    retries = {"mode": os.environ.get("AWS_RETRY_MODE") or "standard", "total_max_attempts": attempts}
    options: dict[str, Any] = {"retries": retries}
    if timeout is not None:
        options["read_timeout"] = timeout
    return options


class S3Objects(Objects):
    """S3 through boto3; credentials from the environment (anonymous without any), endpoint from ``AWS_ENDPOINT_URL``.

    Each object is one PUT (S3 takes up to 5 GB that way; a 4096-px shard of
    int8 embeddings is at most ~2.2 GB), so an object is either whole or absent.
    """

    def __init__(self, url: str):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise UserInputError(f"S3 URL {url!r} has no bucket")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for Ray tasks: clients are per process and thread, made on first use."""
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def client(self) -> S3Client:
        client: S3Client | None = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            session = boto3.session.Session()
            config = Config(**_client_options())
            if session.get_credentials() is None:  # no credentials at all: read a public bucket anonymously
                config = config.merge(Config(signature_version=UNSIGNED))
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            client = session.client("s3", endpoint_url=endpoint, config=config)
            self._local.client = client
        return client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unreachable(self, exc: Exception, key: str) -> ServiceError:
        """A botocore failure below HTTP (no connection, a timeout), as :class:`HttpObjects` reports it."""
        return ServiceError(f"cannot reach {self.child_url(key)}: {type(exc).__name__} ({exc})")

    def put(self, key: str, data: bytes) -> ObjectInfo:
        from botocore.exceptions import BotoCoreError

        digest = hashlib.sha256(data).digest()
        b64 = base64.b64encode(digest).decode()
        try:
            # the server rejects the PUT if the body does not hash to ChecksumSHA256
            # a Content-Type by suffix: browsers need it for the viewer's page and scripts
            self.client.put_object(
                Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumSHA256=b64,
                ContentType=media_type(key),
            )
            head = self.client.head_object(
                Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED"
            )
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except Exception as exc:  # noqa: BLE001 - botocore errors are many classes
            raise ServiceError(f"cannot write {self.child_url(key)}: {exc}") from None
        if int(head["ContentLength"]) != len(data):
            raise DataError(f"object {self.child_url(key)} has the wrong size after writing")
        server = head.get("ChecksumSHA256")
        if server is not None and server.split("-")[0] != b64:
            raise DataError(f"object {self.child_url(key)} has the wrong checksum after writing")
        if server is None and sha256_hex(self.get(key)) != digest.hex():
            raise DataError(f"object {self.child_url(key)} does not read back as written")
        return ObjectInfo(key, len(data), digest.hex())

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        """A conditional PUT (``If-Match: etag``, or ``If-None-Match: *``) carrying its SHA-256, which S3 checks.

        No HEAD afterwards, unlike :meth:`put`: another writer may already have
        replaced the object by then. A retry of a PUT that succeeded but whose
        answer was lost (a timeout) fails its own precondition; the caller
        re-reads and finds its write there (publication is idempotent).
        """
        from botocore.exceptions import BotoCoreError, ClientError

        b64 = base64.b64encode(hashlib.sha256(data).digest()).decode()
        put = functools.partial(self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data,
                                ChecksumSHA256=b64, ContentType=media_type(key))
        try:
            resp = put(IfMatch=etag) if etag is not None else put(IfNoneMatch="*")
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            # 412: the precondition failed; 409: a concurrent conditional write is in progress;
            # NoSuchKey: If-Match on an object deleted meanwhile
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"):
                raise PreconditionFailed(f"{self.child_url(key)} changed since it was read") from None
            raise ServiceError(f"cannot write {self.child_url(key)}: {exc}") from None
        return str(resp["ETag"])

    def _head(self, key: str) -> HeadObjectOutputTypeDef | None:
        """One HEAD, with the checksum S3 recorded at the PUT; None when the object is absent."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ServiceError(f"cannot stat {self.child_url(key)}: {exc}") from None

    def version(self, key: str) -> str | None:
        """One HEAD: the ETag (None when absent)."""
        head = self._head(key)
        return None if head is None else str(head["ETag"])

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return resp["Body"].read(), resp["ETag"]
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"no object {self.child_url(key)}") from None
            raise ServiceError(f"cannot read {self.child_url(key)}: {exc}") from None

    def stat(self, key: str) -> ObjectInfo | None:
        """One HEAD: the size, and the SHA-256 S3 recorded at the PUT (where the server returns it)."""
        head = self._head(key)
        if head is None:
            return None
        checksum = head.get("ChecksumSHA256") or ""
        sha = base64.b64decode(checksum).hex() if checksum and "-" not in checksum else ""  # "-N": multipart
        return ObjectInfo(key, int(head["ContentLength"]), sha)

    def sha256(self, key: str) -> str:
        info = self.stat(key)
        if info is None:
            raise ObjectNotFound(f"no object {self.child_url(key)}")
        if info.sha256:
            return info.sha256
        from botocore.exceptions import BotoCoreError

        digest = hashlib.sha256()
        try:  # streamed: a shard can be gigabytes
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for block in iter(lambda: body.read(1 << 20), b""):
                digest.update(block)
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        return digest.hexdigest()

    def _get(self, key: str, byte_range: str | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            get = functools.partial(self.client.get_object, Bucket=self.bucket, Key=self._key(key))
            return (get(Range=byte_range) if byte_range else get())["Body"].read()
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise ObjectNotFound(f"no object {self.child_url(key)}") from None
            if code == "InvalidRange":  # as HTTP 416: the client then asks the shard index
                raise DataError(f"{self.child_url(key)} is shorter than the range asked for: "
                                "truncated or corrupt") from None
            raise ServiceError(f"cannot read {self.child_url(key)}: {exc}") from None

    def get(self, key: str) -> bytes:
        return self._get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        rng = f"bytes=-{-start}" if start < 0 else f"bytes={start}-{start + length - 1}"
        return self._get(key, byte_range=rng)[:length]

    def size(self, key: str) -> int | None:
        info = self.stat(key)
        return None if info is None else info.size

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        keys = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                for item in page.get("Contents", []):
                    k = item["Key"]
                    keys.append(k[len(self.prefix) + 1 :] if self.prefix else k)
        except BotoCoreError as exc:
            raise self._unreachable(exc, prefix) from None
        except ClientError as exc:
            raise ServiceError(f"cannot list {self.child_url(prefix)}: {exc}") from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except BotoCoreError as exc:
            raise self._unreachable(exc, key) from None
        except ClientError as exc:
            raise ServiceError(f"cannot delete {self.child_url(key)}: {exc}") from None


# --------------------------------------------------------------------------- HTTP (read-only)


#: Answers worth asking again: the server (or something before it) is busy or failing, not the object.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: The longest ``Retry-After`` honoured; a longer one is waited this long.
MAX_RETRY_AFTER_S = 30.0


class HttpObjects(Objects):
    """Plain HTTP(S) GETs with Range headers, over one session whose connections are kept alive.

    Every request is retried (``retries`` times, backoff from ``retry_delay``,
    a ``Retry-After`` honoured up to :data:`MAX_RETRY_AFTER_S`) when the answer
    says nothing about the object: a status of :data:`RETRY_STATUSES`, no
    connection, a timeout, a body shorter than its ``Content-Length``, or an
    HTML page where the object is not HTML (a proxy's or CDN's error page
    sent with 200). The retries are ours, around the whole request, body
    included: urllib3's ``Retry`` only covers what happens before ``requests``
    reads the body, so a body cut short was not retried (measured with
    :mod:`tessera_ray.faults`). ``timeout``, ``retries`` and ``retry_delay``
    default to ``TESSERA_RAY_HTTP_TIMEOUT`` (60 s), ``TESSERA_RAY_HTTP_RETRIES``
    (3) and ``TESSERA_RAY_HTTP_RETRY_DELAY`` (0.2 s). ``headers`` go with every
    request and are never pickled (a bearer token stays in its process).
    """

    writable = False

    def __init__(self, url: str, timeout: float | None = None, retries: int | None = None,
                 retry_delay: float | None = None, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self.timeout = env_number("TESSERA_RAY_HTTP_TIMEOUT", 60, minimum=0.001) if timeout is None else timeout
        self.retries = env_number("TESSERA_RAY_HTTP_RETRIES", 3, int) if retries is None else retries
        self.retry_delay = env_number("TESSERA_RAY_HTTP_RETRY_DELAY", 0.2) if retry_delay is None else retry_delay
        self._headers = dict(headers or {})
        self._session: requests.Session | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "timeout": self.timeout, "retries": self.retries, "retry_delay": self.retry_delay}

    def __setstate__(self, state: dict[str, Any]) -> None:
        HttpObjects.__init__(self, **state)

    @property
    def session(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                import requests
                from requests.adapters import HTTPAdapter

                session = requests.Session()
                for prefix in ("http://", "https://"):  # no urllib3 retries: ours (see the class docstring)
                    session.mount(prefix, HTTPAdapter(max_retries=0, pool_connections=4, pool_maxsize=64))
                self._session = session
            return self._session

    def _request(self, key: str, headers: dict[str, str] | None = None, method: str = "GET") -> requests.Response:
        import requests

        url = self.child_url(key)
        problem, wait = "", 0.0
        for attempt in range(int(self.retries) + 1):
            if attempt:
                time.sleep(wait)
            wait = self.retry_delay * 2**attempt
            try:
                resp = self.session.request(method, url, headers={**self._headers, **(headers or {})},
                                            timeout=self.timeout)
            except requests.exceptions.ChunkedEncodingError:  # urllib3 checks the body against Content-Length
                problem = f"{url} sent a body shorter than its Content-Length"
                continue
            except requests.RequestException as exc:
                problem = f"cannot reach {url}: {type(exc).__name__}"
                continue
            if resp.status_code in RETRY_STATUSES:
                problem = f"{url} answered HTTP {resp.status_code}"
                wait = max(wait, _retry_after(resp))
                continue
            if resp.status_code == 404:
                raise ObjectNotFound(f"no object {url}")
            if resp.status_code == 416:
                raise DataError(f"{url} is shorter than the range asked for: the object is truncated or corrupt")
            if resp.status_code >= 400:
                raise ServiceError(f"{url} answered HTTP {resp.status_code}")
            if _is_error_page(resp, key):
                problem = f"{url} answered an HTML page ({resp.status_code}) instead of the object"
                continue
            return resp
        tries = self.retries + 1
        raise ServiceError(f"{problem} ({tries} attempt{'s' if tries > 1 else ''})")

    def put(self, key: str, data: bytes) -> ObjectInfo:
        raise UserInputError(f"cannot write to {self.url}: HTTP roots are read-only")

    def put_if(self, key: str, data: bytes, etag: str | None) -> str:
        raise UserInputError(f"cannot write to {self.url}: HTTP roots are read-only")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        resp = self._request(key)
        return resp.content, resp.headers.get("ETag", "")

    def get(self, key: str) -> bytes:
        return self._request(key).content

    def get_range(self, key: str, start: int, length: int) -> bytes:
        rng = f"bytes=-{-start}" if start < 0 else f"bytes={start}-{start + length - 1}"
        resp = self._request(key, {"Range": rng})
        if resp.status_code == 200:  # a server without Range support sends everything
            body = resp.content
            return body[start:][:length]
        return resp.content

    def size(self, key: str) -> int | None:
        try:
            resp = self._request(key, method="HEAD")
        except ObjectNotFound:
            return None
        return int(resp.headers.get("Content-Length", 0))

    def list(self, prefix: str) -> list[str]:
        raise UserInputError(f"cannot list {self.url}: HTTP roots are read through their manifests")

    def delete(self, key: str) -> None:
        raise UserInputError(f"cannot delete from {self.url}: HTTP roots are read-only")


def _retry_after(resp: requests.Response) -> float:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), at most :data:`MAX_RETRY_AFTER_S`."""
    from email.utils import parsedate_to_datetime

    value = resp.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _is_error_page(resp: requests.Response, key: str) -> bool:
    """An HTML body where the object is not HTML: what a proxy, a captive portal or a CDN sends as an error."""
    sent = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    return sent == "text/html" and not media_type(key.split("?")[0]).startswith("text/html")
