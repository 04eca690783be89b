"""Helpers for ingest tests: hand-made COGs and a Range-capable HTTP server that records headers."""

from __future__ import annotations

import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine


def write_cog(path, data, crs, transform, nodata=None, tags=None, blocksize=256):
    """A COG (tiled, DEFLATE, predictor 2) of one band."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    profile = dict(
        driver="COG", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
        crs=crs, transform=transform, nodata=nodata, compress="DEFLATE", predictor=2, blocksize=blocksize,
        overviews="NONE",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        if tags:
            dst.update_tags(**tags)
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})
        path = Path(self.server.root) / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        rng = self.headers.get("Range")
        data = path.read_bytes()
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            start = int(m.group(1)) if m.group(1) else size - int(m.group(2))
            end = min(int(m.group(2)), size - 1) if m.group(1) and m.group(2) else size - 1
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})
        path = Path(self.server.root) / self.path.lstrip("/").split("?")[0]
        if not path.is_file():
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


class RecordingServer:
    """Serves a folder over HTTP with byte ranges and records every request's headers."""

    def __init__(self, root):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.root = os.fspath(root)
        self.httpd.seen = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def seen(self):
        return self.httpd.seen

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def utm_transform(x0, y0, res):
    return Affine(res, 0, x0, 0, -res, y0)
