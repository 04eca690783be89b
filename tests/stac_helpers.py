"""A tiny STAC item-search API for ingest tests, with injectable failures, and fake items."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tessera_ray.sources import sentinel2


def s2_item(item_id, when, bbox=(4.0, 50.0, 4.2, 50.2), baseline="05.10", collection="sentinel-2-c1-l2a",
            href_base="cogs", epsg=32631, cloud=10.0):
    keys = (*sentinel2.BAND_KEYS, sentinel2.SCL_KEY)
    w, s, e, n = bbox
    return {
        "type": "Feature", "stac_version": "1.0.0", "id": item_id, "collection": collection,
        "bbox": list(bbox),
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "properties": {
            "datetime": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "proj:epsg": epsg,
            "s2:processing_baseline": baseline, "eo:cloud_cover": cloud,
        },
        "assets": {k: {"href": f"{href_base}/{item_id}/{k}.tif", "type": "image/tiff"} for k in keys},
        "links": [],
    }


def _in(item, collections, bbox, start, end):
    if collections and item["collection"] not in collections:
        return False
    if bbox:
        w, s, e, n = bbox
        iw, is_, ie, in_ = item["bbox"]
        if iw > e or ie < w or is_ > n or in_ < s:
            return False
    t = datetime.fromisoformat(item["properties"]["datetime"].replace("Z", "+00:00"))
    return (start is None or t >= start) and (end is None or t <= end)


def _parse_range(text):
    if not text:
        return None, None
    a, _, b = text.partition("/")
    p = lambda v: None if v in ("", "..") else datetime.fromisoformat(v.replace("Z", "+00:00"))  # noqa: E731
    return p(a), p(b)


class FakeStacApi:
    """``/`` landing page, ``/search`` (GET and POST) with token paging over a list of items.

    ``fail_first``: answer that many requests with 502 first; ``max_days``: a
    search spanning more days answers 502 (like Earth Search's 6 MB page limit).
    """

    def __init__(self, items, fail_first=0, max_days=None, status=502):
        self.items, self.fail_first, self.max_days, self.status = items, fail_first, max_days, status
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/geo+json" if code == 200 else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                if "bbox" in params:
                    params["bbox"] = [float(v) for v in params["bbox"].split(",")]
                if "collections" in params:
                    params["collections"] = params["collections"].split(",")
                self._route(url.path, params)

            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length", 0))
                self._route(urlparse(self.path).path, json.loads(self.rfile.read(n) or b"{}"))

            def _route(self, path, params):
                api.requests += 1
                if api.requests <= api.fail_first:
                    return self._send(api.status, {"message": "Bad Gateway"})
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                if path in ("", "/"):
                    return self._send(200, api.landing(base))
                if path == "/search":
                    return api.search(self, base, params)
                return self._send(404, {"message": "not found"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def landing(self, base):
        return {
            "type": "Catalog", "id": "fake", "description": "fake", "stac_version": "1.0.0",
            "conformsTo": [
                "https://api.stacspec.org/v1.0.0/core",
                "https://api.stacspec.org/v1.0.0/item-search",
            ],
            "links": [
                {"rel": "self", "href": base + "/", "type": "application/json"},
                {"rel": "root", "href": base + "/", "type": "application/json"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "GET"},
                {"rel": "search", "href": base + "/search", "type": "application/geo+json", "method": "POST"},
            ],
        }

    def search(self, handler, base, params):
        start, end = _parse_range(params.get("datetime"))
        if self.max_days and start and end and (end - start) > timedelta(days=self.max_days):
            return handler._send(self.status, {"message": "Internal Server Error"})
        hits = [i for i in self.items if _in(i, params.get("collections"), params.get("bbox"), start, end)]
        limit, offset = int(params.get("limit", 10)), int(params.get("token", 0) or 0)
        page = hits[offset : offset + limit]
        links = []
        if offset + limit < len(hits):
            body = {k: v for k, v in params.items()}
            body["token"] = str(offset + limit)
            links.append({"rel": "next", "href": base + "/search", "method": "POST", "body": body,
                          "type": "application/geo+json"})
        handler._send(200, {"type": "FeatureCollection", "features": page, "links": links,
                            "numberReturned": len(page)})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def year_of_items(n, year=2024, start_id=0, **kw):
    t0 = datetime(year, 1, 1, 10, 30, tzinfo=UTC)
    return [s2_item(f"S2_{start_id + i:04d}", t0 + timedelta(days=int(i * 365 / n)), **kw) for i in range(n)]
