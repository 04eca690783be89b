"""Injected HTTP faults: how the test kit makes a server misbehave the way object stores and CDNs do.

A :class:`Fault` says what a request gets instead of its proper answer, and
which requests it hits. :class:`~tessera_ray.serve.StaticServer` answers
them (``server.inject(...)``); any other Starlette/ASGI app can take the
:class:`FaultInjector` middleware with an owner that has a ``faults``
attribute. Tests of your own readers can use them as ours do::

    from tessera_ray.faults import Fault
    from tessera_ray.serve import StaticServer

    with StaticServer(folder) as server, server.inject(
        Fault.status(503, rate=0.05), Fault.status(429, retry_after=1, rate=0.02),
        Fault.short(rate=0.02), Fault.html(rate=0.01), Fault.slow(2.0, rate=0.01),
        Fault.status(502, requests="data", path="/cogs/"), seed=0,
    ):
        ...  # read through server.url
    print(server.faults.answered, server.faults.by_kind)

The kinds are the failures measured against the readers (docs/pipeline.md):

* ``status``: an error status (5xx, 429, 403, 404 ...), 429 and 503 with a
  ``Retry-After`` header (0 s unless given);
* ``slow``: the proper answer, after ``delay_s`` (set it past the client's timeout);
* ``html``: ``200 OK`` with an HTML error page, as a proxy, a captive portal
  or a misrouted CDN sends;
* ``short``: the proper status and ``Content-Length``, then half the body and
  the connection closed (a body shorter than its Content-Length).

Which requests: ``path`` is a URL path or a prefix ending in ``/``;
``requests`` is ``"all"``, ``"header"`` (no ``Range``, or one starting at
byte 0: what a COG reader's open and a Parquet footer read look like to a
server is mostly that) or ``"data"`` (any other ``Range``: tile and chunk
reads), so a server can fail only data reads while answering header reads;
``count`` caps the failures (None: until cleared); ``rate`` is the share of
matching requests hit, drawn from a generator seeded by ``seed``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import re
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tessera_ray.errors import UserInputError

KINDS = ("status", "slow", "html", "short")
REQUESTS = ("all", "header", "data")
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>"
             b"<body><h1>Service Temporarily Unavailable</h1><p>injected fault</p></body></html>\n")
_RANGE_START = re.compile(r"\s*bytes\s*=\s*(\d*)")


@dataclass(frozen=True)
class Fault:
    """One kind of misbehaviour and the requests it hits (see the module docstring)."""

    kind: str
    code: int = 200
    """The HTTP status of a ``status`` fault."""
    retry_after: float | None = None
    """Seconds in a ``Retry-After`` header (``status`` faults; 429 and 503 get 0 by default)."""
    delay_s: float = 0.0
    """How long a ``slow`` fault holds the answer back."""
    path: str = "/"
    requests: str = "all"
    count: int | None = None
    rate: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserInputError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")
        if self.requests not in REQUESTS:
            raise UserInputError(f"unknown fault requests {self.requests!r}; known: {', '.join(REQUESTS)}")
        if self.count is not None and self.count <= 0:
            raise UserInputError(f"count must be positive or None, got {self.count}")
        if not 0.0 < self.rate <= 1.0:
            raise UserInputError(f"rate must be within (0, 1], got {self.rate}")
        if self.kind == "status" and not 400 <= self.code <= 599:
            raise UserInputError(f"a status fault answers 4xx or 5xx, not {self.code}")
        if self.delay_s < 0:
            raise UserInputError(f"delay must not be negative, got {self.delay_s}")

    @classmethod
    def status(cls, code: int, retry_after: float | None = None, **which: Any) -> Fault:
        """An error status; ``which``: path, requests, count, rate."""
        if retry_after is None and code in (429, 503):
            retry_after = 0
        return cls("status", code=code, retry_after=retry_after, **which)

    @classmethod
    def slow(cls, delay_s: float, **which: Any) -> Fault:
        """The proper answer, ``delay_s`` late."""
        return cls("slow", delay_s=delay_s, **which)

    @classmethod
    def html(cls, **which: Any) -> Fault:
        """200 with an HTML error page instead of the object."""
        return cls("html", **which)

    @classmethod
    def short(cls, **which: Any) -> Fault:
        """The proper headers, half the body, then the connection closed."""
        return cls("short", **which)

    def matches(self, path: str, range_header: str | None) -> bool:
        if not (self.path == path or (self.path.endswith("/") and path.startswith(self.path))):
            return False
        if self.requests == "all":
            return True
        return (self.requests == "data") == is_data_request(range_header)

    @property
    def label(self) -> str:
        """How :attr:`Faults.by_kind` counts it: ``status 503``, ``slow``, ``html``, ``short``."""
        return f"status {self.code}" if self.kind == "status" else self.kind


def is_data_request(range_header: str | None) -> bool:
    """A ``Range`` that does not start at byte 0 (a suffix range included): a tile or chunk read."""
    if not range_header:
        return False
    m = _RANGE_START.match(range_header)
    return not (m and m.group(1) and int(m.group(1)) == 0)


class Faults:
    """The faults a server answers, and what it has answered; thread-safe (tests arm them while it serves)."""

    def __init__(self, seed: int | None = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[list] = []  # [fault, failures left (None: unbounded)]
        self._random = random.Random(seed)
        self.answered = 0
        self.by_kind: Counter = Counter()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append([fault, fault.count])

    def seed(self, seed: int | None) -> None:
        with self._lock:
            self._random.seed(seed)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str, range_header: str | None = None) -> Fault | None:
        """The fault to answer a request with, or None to serve it properly."""
        with self._lock:
            for entry in self._faults:
                fault, left = entry
                if not fault.matches(path, range_header):
                    continue
                if fault.rate < 1.0 and self._random.random() >= fault.rate:
                    continue
                if left is not None:
                    entry[1] = left - 1
                    if entry[1] == 0:
                        self._faults.remove(entry)
                self.answered += 1
                self.by_kind[fault.label] += 1
                return fault
        return None


class _QuietCuts(logging.Filter):
    """Drops the server's "returned without completing response" error (how uvicorn reports a body cut
    short, before closing the connection) for requests a ``short`` fault cut: the fault doing its job."""

    def filter(self, record: logging.LogRecord) -> bool:
        cutter = _CUTTER.get()
        return cutter is None or not cutter.cut


# Set by the injector in the task serving the request, where uvicorn logs after the app returns.
_CUTTER: contextvars.ContextVar[_Cutter | None] = contextvars.ContextVar("tessera_fault_cutter", default=None)
_QUIET = _QuietCuts()


class FaultInjector:
    """ASGI middleware: answers ``owner.faults``' faults instead of (or around) the app."""

    def __init__(self, app: Any, owner: Any, logger_name: str = "uvicorn.error") -> None:
        self.app = app
        self.owner = owner
        logger = logging.getLogger(logger_name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        range_header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"range"), None)
        fault = self.owner.faults.take(scope["path"], range_header)
        if fault is None:
            await self.app(scope, receive, send)
        elif fault.kind == "status":
            await _answer(send, fault.code, b"injected failure (%d)\n" % fault.code, "text/plain; charset=utf-8",
                          None if fault.retry_after is None else f"{fault.retry_after:g}")
        elif fault.kind == "html":
            await _answer(send, 200, HTML_PAGE, "text/html; charset=utf-8")
        elif fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
            await self.app(scope, receive, send)
        elif scope["method"] == "HEAD":  # no body to cut
            await self.app(scope, receive, send)
        else:
            cutter = _Cutter(send)
            _CUTTER.set(cutter)
            await self.app(scope, receive, cutter.send)


async def _answer(send: Any, status: int, body: bytes, content_type: str, retry_after: str | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Cutter:
    """Passes the headers on, then the first half of the body, then nothing: the server closes the connection."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self._left = 0
        self.cut = False

    async def send(self, message: dict) -> None:
        if self.cut:
            return
        if message["type"] == "http.response.start":
            length = next((int(v) for k, v in message.get("headers", []) if k.lower() == b"content-length"), 0)
            self._left = length // 2
            await self._send(message)
            return
        body = message.get("body", b"")
        if len(body) < self._left:
            self._left -= len(body)
            await self._send({**message, "more_body": True})
            return
        await self._send({"type": "http.response.body", "body": body[: self._left], "more_body": True})
        self.cut = True
