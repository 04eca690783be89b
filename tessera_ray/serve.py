"""A static HTTP server for a folder: the local stand-in for S3 + CloudFront.

It answers what cloud-native readers send: byte ranges (GDAL's /vsicurl/,
zarr-python, DuckDB), HEAD, ETag / Last-Modified with conditional requests,
and CORS so a browser page on another origin can read the published root.
It is read-only and never serves a file outside its folder (``..``,
``%2e%2e`` and symlinks that leave the folder all answer 404).

Benchmarks stand it in for object storage: ``latency_s`` delays every request
(as a round trip to S3 would) and ``stats`` counts requests and body bytes.
Failure tests make it misbehave as object stores and CDNs do (error
statuses, 429 with Retry-After, slow answers, HTML error pages, bodies cut
short; for chosen paths, for data or header reads, for a share of requests):
:meth:`StaticServer.inject` with the faults of :mod:`tessera_ray.faults`.

The range, conditional and path handling is Starlette's ``StaticFiles``;
this module adds the content types our files need, CORS, the latency and
the counters, and runs uvicorn in a background thread. It also judges the
``Range`` header as RFC 9110 (section 14) says and static servers do, where
Starlette answers 400: a header that is not a valid ``bytes`` range set
(another unit, ``bytes=5-2``, garbage) is ignored and the whole object sent
with 200; a valid one none of whose ranges starts inside the object is 416;
ranges that start past the end are dropped from a set that has others.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera_ray.errors import ServiceError, UserInputError
from tessera_ray.faults import Fault, FaultInjector, Faults

# mimetypes knows neither Parquet nor GeoJSON on most systems; files without
# a known suffix (Zarr chunks such as c/0/0/0, .npy) are opaque bytes.
_MEDIA_TYPES = {
    ".json": "application/json",
    ".geojson": "application/geo+json",
    ".parquet": "application/vnd.apache.parquet",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
_EXPOSED_HEADERS = ["Content-Range", "Content-Length", "Content-Type", "ETag", "Accept-Ranges", "Last-Modified"]


def media_type(path: str | os.PathLike[str]) -> str:
    """The Content-Type to send for a file, by suffix."""
    suffix = Path(path).suffix.lower()
    if suffix in _MEDIA_TYPES:
        return _MEDIA_TYPES[suffix]
    guessed = mimetypes.guess_type(str(path))[0] if suffix else None
    return guessed or "application/octet-stream"


@dataclass
class ServerStats:
    """What a server has answered since start (or the last :meth:`reset`).

    ``bytes_sent`` counts response bodies only, the figure that a cloud bill
    and a benchmark care about.
    """

    requests: int = 0
    gets: int = 0
    bytes_sent: int = 0
    paths: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests += 1
            self.gets += method == "GET"
            self.paths[path] += 1

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    def reset(self) -> None:
        with self._lock:
            self.requests = self.gets = self.bytes_sent = 0
            self.paths.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "gets": self.gets,
                "bytes_sent": self.bytes_sent,
                "paths": dict(self.paths),
            }


def _canonical(name: bytes) -> bytes:
    """``content-type`` -> ``Content-Type``.

    Header names are case-insensitive, but GDAL's /vsicurl/ looks for the
    exact bytes ``Content-Type: multipart/byteranges`` and gives up on
    multi-range answers otherwise (it then re-reads range by range).
    """
    return b"-".join(part[:1].upper() + part[1:] for part in name.split(b"-"))


class Instrumented:
    """ASGI middleware: waits ``owner.latency_s`` per request, counts it and
    its body bytes in ``owner.stats``, and writes header names canonically."""

    def __init__(self, app: Any, owner: Any) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats: ServerStats = self.owner.stats
        stats.record(scope["method"], scope["path"])
        if self.owner.latency_s > 0:
            await asyncio.sleep(self.owner.latency_s)

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [(_canonical(k), v) for k, v in message.get("headers", [])]}
            elif message["type"] == "http.response.body":
                stats.add_bytes(len(message.get("body", b"")))
            await send(message)

        await self.app(scope, receive, counting_send)


_INT_RANGE = re.compile(r"(\d+)-(\d*)")
_SUFFIX_RANGE = re.compile(r"-(\d+)")


def satisfiable_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges (first, last inclusive) of a ``Range`` header that a ``size``-byte object can serve.

    None: the header is not a valid ``bytes`` ranges-specifier (RFC 9110 14.1.1: another unit,
    a last-pos before its first-pos, anything unparseable) and is to be ignored (send all, 200).
    ``[]``: valid, but no range starts inside the object (416). Otherwise the satisfiable
    ranges in order, each clipped to the object's end.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    elements = [e.strip() for e in spec.split(",")]
    if not any(elements):
        return None
    ranges = []
    for element in filter(None, elements):  # the list rule allows empty elements
        if m := _INT_RANGE.fullmatch(element):
            first, last = int(m[1]), int(m[2]) if m[2] else None
            if last is not None and last < first:
                return None
            if first < size:
                ranges.append((first, size - 1 if last is None else min(last, size - 1)))
        elif m := _SUFFIX_RANGE.fullmatch(element):
            length = int(m[1])
            if length > 0 and size > 0:
                ranges.append((max(0, size - length), size - 1))
        else:
            return None
    return ranges


def check_port(port: int) -> int:
    """A TCP port number, or a one-line error (0 means "any free port")."""
    if not 0 <= port <= 65535:
        raise UserInputError(f"port {port} is not within 0..65535")
    return port


class BackgroundServer:
    """Runs an ASGI app under uvicorn in a daemon thread on ``host:port``.

    ``port=0`` takes a free port; the socket is bound before the thread
    starts, so ``.port`` and ``.url`` are known at once and a busy port is a
    clear error rather than a hang.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = check_port(port)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> BackgroundServer:
        from tessera_ray.extras import require

        require("serve", "an HTTP server")
        import uvicorn

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ServiceError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            http="h11",  # httptools lower-cases header names (see _canonical)
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"http-{self.port}", daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise ServiceError(f"the server on {self.url} failed to start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def static_app(root: str | os.PathLike[str], owner: Any) -> Any:
    """The ASGI app serving ``root`` read-only, instrumented through ``owner``."""
    from tessera_ray.extras import require

    require("serve", "an HTTP server")
    from starlette.applications import Starlette
    from starlette.datastructures import Headers
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.responses import FileResponse, PlainTextResponse
    from starlette.routing import Mount
    from starlette.staticfiles import NotModifiedResponse, StaticFiles

    class _RangeFileResponse(FileResponse):
        """Starlette's, with the Range header judged by :func:`satisfiable_ranges` first."""

        async def __call__(self, scope, receive, send):
            headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"range"]
            raw = Headers(scope=scope).get("range")
            if raw is not None and self.status_code == 200 and scope.get("method", "GET").upper() in ("GET", "HEAD"):
                size = self.stat_result.st_size
                ranges = satisfiable_ranges(raw, size)
                if ranges == []:
                    response = PlainTextResponse(status_code=416, headers={"Content-Range": f"bytes */{size}"})
                    await response(scope, receive, send)
                    return
                if ranges is not None:  # valid: hand Starlette the satisfiable ranges only
                    spec = ",".join(f"{first}-{last}" for first, last in ranges)
                    headers.append((b"range", f"bytes={spec}".encode("latin-1")))
                scope = {**scope, "headers": headers}  # invalid: no Range at all, the whole object
            await super().__call__(scope, receive, send)

    class _Files(StaticFiles):
        def file_response(self, full_path, stat_result, scope, status_code=200):
            response = _RangeFileResponse(
                full_path, status_code=status_code, stat_result=stat_result, media_type=media_type(full_path)
            )
            if self.is_not_modified(response.headers, Headers(scope=scope)):
                return NotModifiedResponse(response.headers)
            return response

    return Starlette(
        routes=[Mount("/", app=_Files(directory=root, html=True))],
        middleware=[
            Middleware(Instrumented, owner=owner),
            Middleware(FaultInjector, owner=owner),
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "HEAD", "OPTIONS"],
                allow_headers=["*"],
                expose_headers=_EXPOSED_HEADERS,
                max_age=3600,
            ),
        ],
    )


class StaticServer(BackgroundServer):
    """Serves the folder ``root`` over HTTP on loopback (see module docstring).

    ``latency_s`` may be changed while the server runs; ``stats`` counts
    every request, including HEAD, OPTIONS, errors and injected failures;
    :meth:`inject` makes it misbehave (:mod:`tessera_ray.faults`);
    :meth:`fail_next` and :meth:`failing` are its shorthands for an error
    status (as on :class:`~tessera_ray.synthetic.services.StacServer`).
    """

    def __init__(
        self, root: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise UserInputError(f"not a folder: {root}")
        self.root = root.resolve()
        self.latency_s = latency_s
        self.stats = ServerStats()
        self.faults = Faults()
        super().__init__(static_app(self.root, self), host, port)

    def fail_next(self, count: int | None, status: int = 502, path: str = "/") -> None:
        """Make the next ``count`` requests for ``path`` (None: all of them, until cleared) answer ``status``."""
        self.faults.add(Fault.status(status, path=path, count=count))

    @contextlib.contextmanager
    def failing(self, count: int | None, status: int = 502, path: str = "/") -> Iterator[None]:
        """``fail_next`` for the ``with`` block only: failures not yet answered are dropped on exit."""
        with self.inject(Fault.status(status, path=path, count=count)):
            yield

    @contextlib.contextmanager
    def inject(self, *faults: Fault, seed: int | None = 0) -> Iterator[Faults]:
        """Answer ``faults`` (first match wins) for the ``with`` block; the draws of their rates start from ``seed``.

        On exit every fault is dropped, answered or not. Yields :attr:`faults`, whose ``answered`` and
        ``by_kind`` count what was injected.
        """
        self.faults.seed(seed)
        for fault in faults:
            self.faults.add(fault)
        try:
            yield self.faults
        finally:
            self.faults.clear()

    def __enter__(self) -> StaticServer:
        self.start()
        return self
