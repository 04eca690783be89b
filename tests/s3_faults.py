"""Object-store faults for tests: a small HTTP proxy between S3 clients and moto's S3 server.

Why a proxy rather than botocore event hooks: hooks reach only the clients of
the test's own process, while the embed job writes from Ray workers and
subprocesses; those reach the proxy through ``AWS_ENDPOINT_URL`` like any
other client, so one fault list covers every writer. Each request is read
whole, matched against the faults in order (method, a substring of the path,
whether it is a conditional write), and then answered with an error status,
forwarded, or forwarded with its answer lost::

    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        env = {**s3_server.env(), **proxy.env()}            # clients now go through the proxy
        proxy.add(Fault("PUT", "/_parts/", status=503, times=2))            # refused twice, then passed
        proxy.add(Fault("PUT", "/manifests/", after="drop"))                # stored, then the answer is lost
        proxy.add(Fault("PUT", "/manifests/", after="delay", delay=2.0))    # stored, answered too late
        proxy.add(Fault("PUT", "/manifests/", before=competing_write))      # another writer goes first
        proxy.log                                                           # (method, path, outcome) per request

moto checks a conditional write's precondition and stores the object in two
steps without a lock between them; the proxy forwards conditional writes
(``If-Match`` / ``If-None-Match``) one at a time, as S3 applies each
atomically, so a race lost in a test is the protocol's, not moto's.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "content-length"}


@dataclass
class Fault:
    """What to do to the next ``times`` requests that match."""

    method: str
    path: str
    """Substring of the request path (``/bucket/key``)."""
    status: int | None = None
    """Answer this status (with an S3 error body) instead of forwarding, e.g. 503."""
    after: str | None = None
    """"drop": forward, then close the connection unanswered; "delay": forward, answer after ``delay`` s."""
    delay: float = 0.0
    before: Callable[[], None] | None = None
    """Called before forwarding (e.g. a competing write through the proxy)."""
    conditional: bool | None = None
    """Only conditional writes (True), only unconditional requests (False), or both (None)."""
    times: int = 1

    def matches(self, method: str, path: str, conditional: bool) -> bool:
        return (self.times > 0 and method == self.method and self.path in path
                and (self.conditional is None or self.conditional == conditional))


class S3FaultProxy:
    def __init__(self, upstream: str):
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._conditional = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        """What points boto3 and GDAL at the proxy (on top of the S3 server's own ``env()``)."""
        host, port = self._server.server_address[:2]
        return {"AWS_ENDPOINT_URL": self.endpoint_url, "AWS_ENDPOINT_URL_S3": self.endpoint_url,
                "AWS_S3_ENDPOINT": f"{host}:{port}"}

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def outcomes(self, method: str, path: str) -> list[str]:
        """What happened to the requests so far whose path holds ``path``."""
        with self._lock:
            return [o for m, p, o in self.log if m == method and path in p]

    def _take(self, method: str, path: str, conditional: bool) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path, conditional):
                    fault.times -= 1
                    return fault
        return None

    def _record(self, method: str, path: str, outcome: str) -> None:
        with self._lock:
            self.log.append((method, path, outcome))

    def start(self) -> S3FaultProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def forward(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()


def _handler(proxy: S3FaultProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the proxy's own log is ``proxy.log``
            pass

        def _serve(self) -> None:
            method, path = self.command, self.path
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            conditional = method == "PUT" and ("If-Match" in self.headers or "If-None-Match" in self.headers)
            fault = proxy._take(method, path, conditional)
            if fault is not None and fault.status is not None:
                proxy._record(method, path, str(fault.status))
                error = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>ServiceUnavailable</Code>"
                         b"<Message>injected by the test proxy</Message></Error>")
                self._answer(fault.status, [("Content-Type", "application/xml")], error, method)
                return
            if fault is not None and fault.before is not None:
                fault.before()
            with proxy._conditional if conditional else contextlib.nullcontext():
                status, resp_headers, data = proxy.forward(method, path, headers, body)
            if fault is not None and fault.after == "drop":
                proxy._record(method, path, f"{status} dropped")
                self.close_connection = True
                return
            if fault is not None and fault.after == "delay":
                proxy._record(method, path, f"{status} delayed")
                time.sleep(fault.delay)
            else:
                proxy._record(method, path, str(status))
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self._answer(status, resp_headers, data, method)

        def _answer(self, status: int, headers: list, data: bytes, method: str) -> None:
            self.send_response(status)
            length = None
            for key, value in headers:
                if key.lower() == "content-length":
                    length = value
                elif key.lower() not in _HOP and key.lower() not in ("server", "date"):
                    self.send_header(key, value)
            # a HEAD answer carries the object's length and no body
            self.send_header("Content-Length", length if method == "HEAD" and length is not None else str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _serve

    return Handler
