"""A STAC API over a synthetic world's items, on loopback: the Starlette app and its server.

Item Search with the Query and Filter extensions and paging; asset hrefs are
rewritten onto an HTTP server of the world. The search itself is
:mod:`.search`; this module holds the items, the routes and the server.

Why our own STAC server. We tried the existing servers that could run
offline first (details in docs/services.md). ``stac-fastapi-static`` 1.0.1
pins ``stac-fastapi<6``, whose CORS middleware breaks on Starlette 1.x (every
request answers 500); with FastAPI/Starlette downgraded it searches by bbox,
intersects, datetime and CQL2 correctly, but ignores the Query extension
(``{"eo:cloud_cover": {"lt": 20}}`` returns every item) and its GET ``next``
links drop the search parameters (page 2 of one collection holds items of
all), and it needs a root ``catalog.json`` linking every item.
``stac-fastapi-geoparquet`` and ``rustac`` search through DuckDB, whose
spatial extension cannot be downloaded here; pgstac needs PostgreSQL with
PostGIS. So this is a small Starlette app over items held in memory,
covering what our clients send and nothing more.

Routes: landing page + conformance, ``/collections``, ``/collections/{id}``,
``/collections/{id}/items[/{item}]``, ``/search`` GET and POST, paged with
``next`` links. Results are ordered by datetime, then collection, then id.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tessera_ray.errors import UserInputError
from tessera_ray.serve import BackgroundServer, Instrumented, ServerStats
from tessera_ray.synthetic.services.search import BadRequest, SearchParams, item_interval

GEOJSON = "application/geo+json"
CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
]


def rewrite_href(href: str, base_url: str) -> str:
    """A world-relative href onto ``base_url``; absolute hrefs stay as they are."""
    if "://" in href or href.startswith("/"):
        return href
    return base_url.rstrip("/") + "/" + href.removeprefix("./")


@dataclass(frozen=True)
class Catalogue:
    """A world's collections and items, asset hrefs already rewritten."""

    collections: dict[str, dict]
    items: tuple[dict, ...]

    @classmethod
    def load(cls, world_dir: str | os.PathLike[str], asset_base_url: str) -> Catalogue:
        stac = Path(world_dir) / "stac"
        if not stac.is_dir():
            raise UserInputError(f"{world_dir} has no stac/ folder (is it a synthetic world?)")
        collections: dict[str, dict] = {}
        items: list[dict] = []
        for folder in sorted(p for p in stac.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("*.json")):
                doc = json.loads(path.read_text())
                for asset in doc.get("assets", {}).values():
                    asset["href"] = rewrite_href(asset["href"], asset_base_url)
                if path.name == "collection.json":
                    collections[doc["id"]] = doc
                else:
                    doc.setdefault("collection", folder.name)
                    items.append(doc)
        items.sort(key=lambda it: (item_interval(it)[0], it["collection"], it["id"]))
        return cls(collections, tuple(items))

    def search(self, params: SearchParams) -> tuple[list[dict], int]:
        """The page ``params`` asks for, and the number of all matches."""
        keep = params.predicate()
        matched = [it for it in self.items if keep(it)]
        return matched[params.token : params.token + params.limit], len(matched)


def _public(item: dict, base: str) -> dict:
    """An item as the API shows it: our links, no cached geometry."""
    out = {k: v for k, v in item.items() if not k.startswith("_")}
    cid = item["collection"]
    own = [link for link in item.get("links", []) if "://" in link.get("href", "")]
    own = [link for link in own if link.get("rel") not in ("self", "root", "parent", "collection")]
    out["links"] = [
        {"rel": "self", "href": f"{base}/collections/{cid}/items/{item['id']}", "type": GEOJSON},
        {"rel": "parent", "href": f"{base}/collections/{cid}", "type": "application/json"},
        {"rel": "collection", "href": f"{base}/collections/{cid}", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
        *own,
    ]
    return out


def _collection_doc(coll: dict, base: str) -> dict:
    out = dict(coll)
    cid = coll["id"]
    out["links"] = [
        {"rel": "self", "href": f"{base}/collections/{cid}", "type": "application/json"},
        {"rel": "items", "href": f"{base}/collections/{cid}/items", "type": GEOJSON},
        {"rel": "parent", "href": f"{base}/", "type": "application/json"},
        {"rel": "root", "href": f"{base}/", "type": "application/json"},
    ]
    return out


def stac_app(catalogue: Catalogue, owner: Any) -> Any:
    """The Starlette app of the STAC API; ``owner`` holds stats, latency and faults."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"code": "BadRequest" if status == 400 else "NotFound", "description": message}, status)

    def page(request: Request, params: SearchParams, next_link: Any) -> JSONResponse:
        found, matched = catalogue.search(params)
        root = base(request)
        links = [
            {"rel": "root", "href": f"{root}/", "type": "application/json"},
            {"rel": "self", "href": str(request.url), "type": GEOJSON},
        ]
        if params.token + params.limit < matched:
            links.append(next_link(params.token + params.limit))
        body = {
            "type": "FeatureCollection",
            "features": [_public(it, root) for it in found],
            "links": links,
            "numberMatched": matched,
            "numberReturned": len(found),
        }
        return JSONResponse(body, media_type=GEOJSON)

    def get_items(request: Request, collection: str | None = None) -> JSONResponse:
        try:
            params = SearchParams.from_query_string(dict(request.query_params), collection)
        except BadRequest as exc:
            return error(400, str(exc))

        def next_link(token: int) -> dict:
            args = dict(request.query_params) | {"token": str(token)}
            return {"rel": "next", "href": f"{request.url.replace(query='')}?{urlencode(args)}", "type": GEOJSON,
                    "method": "GET"}

        return page(request, params, next_link)

    async def landing(request: Request) -> JSONResponse:
        root = base(request)
        links = [
            {"rel": "self", "href": f"{root}/", "type": "application/json"},
            {"rel": "root", "href": f"{root}/", "type": "application/json"},
            {"rel": "conformance", "href": f"{root}/conformance", "type": "application/json"},
            {"rel": "data", "href": f"{root}/collections", "type": "application/json"},
            {"rel": "search", "href": f"{root}/search", "type": GEOJSON, "method": "GET"},
            {"rel": "search", "href": f"{root}/search", "type": GEOJSON, "method": "POST"},
            *({"rel": "child", "href": f"{root}/collections/{cid}", "type": "application/json"}
              for cid in catalogue.collections),
        ]
        return JSONResponse({
            "type": "Catalog",
            "id": "tessera-synthetic",
            "title": "tessera-ray synthetic world",
            "description": "Sentinel-1/2 look-alike items of a synthetic world, served on loopback.",
            "stac_version": "1.0.0",
            "conformsTo": CONFORMANCE,
            "links": links,
        })

    async def conformance(request: Request) -> JSONResponse:
        return JSONResponse({"conformsTo": CONFORMANCE})

    async def collections(request: Request) -> JSONResponse:
        root = base(request)
        return JSONResponse({
            "collections": [_collection_doc(c, root) for c in catalogue.collections.values()],
            "links": [{"rel": "self", "href": f"{root}/collections"}, {"rel": "root", "href": f"{root}/"}],
        })

    async def collection(request: Request) -> JSONResponse:
        cid = request.path_params["cid"]
        if cid not in catalogue.collections:
            return error(404, f"no collection {cid!r}")
        return JSONResponse(_collection_doc(catalogue.collections[cid], base(request)))

    async def collection_items(request: Request) -> JSONResponse:
        cid = request.path_params["cid"]
        if cid not in catalogue.collections:
            return error(404, f"no collection {cid!r}")
        return get_items(request, cid)

    async def item(request: Request) -> JSONResponse:
        cid, iid = request.path_params["cid"], request.path_params["iid"]
        for it in catalogue.items:
            if it["id"] == iid and it["collection"] == cid:
                return JSONResponse(_public(it, base(request)), media_type=GEOJSON)
        return error(404, f"no item {iid!r} in {cid!r}")

    async def search(request: Request) -> JSONResponse:
        if request.method == "GET":
            return get_items(request)
        try:
            body = await request.json()
            params = SearchParams.from_body(body)
        except json.JSONDecodeError:
            return error(400, "the search body is not JSON")
        except BadRequest as exc:
            return error(400, str(exc))

        def next_link(token: int) -> dict:
            return {"rel": "next", "href": f"{base(request)}/search", "type": GEOJSON, "method": "POST",
                    "body": body | {"token": token}, "merge": False}

        return page(request, params, next_link)

    return Starlette(
        routes=[
            Route("/", landing),
            Route("/conformance", conformance),
            Route("/collections", collections),
            Route("/collections/{cid}", collection),
            Route("/collections/{cid}/items", collection_items),
            Route("/collections/{cid}/items/{iid}", item),
            Route("/search", search, methods=["GET", "POST"]),
        ],
        middleware=[
            Middleware(Instrumented, owner=owner),
            Middleware(_Faults, owner=owner),
            Middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"]),
        ],
    )


class _Faults:
    """ASGI middleware answering ``owner``'s pending injected failures."""

    def __init__(self, app: Any, owner: StacServer) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        status = self.owner._take_fault() if scope["type"] == "http" else None
        if status is None:
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        response = JSONResponse(
            {"code": "InjectedFailure", "description": f"injected failure ({status})"},
            status_code=status,
            headers={"Retry-After": "0"} if status in (429, 503) else None,
        )
        await response(scope, receive, send)


class StacServer(BackgroundServer):
    """A STAC API over ``world_dir``'s items with asset hrefs on ``asset_base_url``.

    ``fail_first=N`` makes the first N requests answer ``fail_status``;
    :meth:`fail_next` arms more failures at any time and :meth:`failing`
    arms them for a ``with`` block (retry tests; prefer it on the shared
    session fixture).
    ``stats`` and ``latency_s`` work as on :class:`~tessera_ray.serve.StaticServer`.
    """

    def __init__(
        self,
        world_dir: str | os.PathLike[str],
        asset_base_url: str,
        port: int = 0,
        host: str = "127.0.0.1",
        fail_first: int = 0,
        fail_status: int = 503,
        latency_s: float = 0.0,
    ) -> None:
        self.catalogue = Catalogue.load(world_dir, asset_base_url)
        self.stats = ServerStats()
        self.latency_s = latency_s
        self._faults_lock = threading.Lock()
        self._faults: list[int] = [fail_status] * fail_first
        super().__init__(stac_app(self.catalogue, self), host, port)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Make the next ``count`` requests answer ``status`` (e.g. 429, 502, 503)."""
        with self._faults_lock:
            self._faults.extend([status] * count)

    @contextmanager
    def failing(self, count: int, status: int = 503) -> Iterator[None]:
        """``fail_next`` for the ``with`` block only: failures left unanswered are dropped on exit,
        so a shared (session) server cannot pass them on to the next test."""
        self.fail_next(count, status)
        try:
            yield
        finally:
            with self._faults_lock:
                self._faults.clear()

    def _take_fault(self) -> int | None:
        with self._faults_lock:
            return self._faults.pop(0) if self._faults else None

    def __enter__(self) -> StacServer:
        self.start()
        return self
