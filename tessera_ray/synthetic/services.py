"""Loopback stand-ins for the cloud services a job talks to.

- :class:`StacServer`: a STAC API (Item Search with the Query and Filter
  extensions, paging) over a synthetic world's items, asset hrefs rewritten
  onto an HTTP server of the world.
- :class:`S3Server`: moto's S3 on 127.0.0.1 with bucket helpers.
- :class:`LocalServices`: the world over HTTP, STAC and S3 at once (the
  demo, ``tessera-ray services`` and the CI smoke job).

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

Supported: landing page + conformance, ``/collections``, ``/collections/{id}``,
``/collections/{id}/items[/{item}]``, ``/search`` GET and POST with
``bbox``, ``intersects``, ``datetime`` (instant, closed or open interval),
``collections``, ``ids``, ``limit``, ``query`` and basic CQL2-JSON ``filter``
(logical operators, comparisons, ``in``, ``between``, ``isNull``,
``s_intersects``), paged with ``next`` links. Results are ordered by
datetime, then collection, then id. Not supported: CQL2 text, sortby, fields.
"""

from __future__ import annotations

import json
import operator
import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tessera_ray.errors import ServiceError, UserInputError
from tessera_ray.extras import require
from tessera_ray.serve import BackgroundServer, Instrumented, ServerStats, StaticServer, check_port, media_type

require("demo", "the local stand-in services (STAC API, S3)")

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
DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


class BadRequest(UserInputError):
    """A search request the API cannot answer (answered 400)."""


# --------------------------------------------------------------------------
# Search: pure functions on item dicts.


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp (or a bare date) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise BadRequest(f"not a timestamp: {text!r}") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def parse_interval(text: str) -> tuple[datetime | None, datetime | None]:
    """``datetime`` parameter: an instant, ``a/b``, ``../b``, ``a/..`` (open ends are None)."""
    if "/" not in text:
        instant = parse_instant(text)
        return instant, instant
    start, end = (part.strip() for part in text.split("/", 1))
    lo = None if start in ("", "..") else parse_instant(start)
    hi = None if end in ("", "..") else parse_instant(end)
    if lo is None and hi is None:
        raise BadRequest("datetime: both ends of the interval are open")
    if lo is not None and hi is not None and lo > hi:
        raise BadRequest(f"datetime: the interval {text!r} ends before it starts")
    return lo, hi


def item_interval(item: dict) -> tuple[datetime, datetime]:
    props = item["properties"]
    if props.get("datetime"):
        instant = parse_instant(props["datetime"])
        return instant, instant
    return parse_instant(props["start_datetime"]), parse_instant(props["end_datetime"])


@dataclass(frozen=True)
class SearchParams:
    """One Item Search request, parsed and validated."""

    collections: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None
    bbox: tuple[float, ...] | None = None
    intersects: dict | None = None
    datetime: str | None = None
    query: dict | None = None
    filter: dict | None = None
    limit: int = DEFAULT_LIMIT
    token: int = 0

    @classmethod
    def from_body(cls, body: dict) -> SearchParams:
        """From a POST body (or GET parameters already decoded to JSON types)."""
        if not isinstance(body, dict):
            raise BadRequest("the search body must be a JSON object")
        lang = body.get("filter-lang", body.get("filter_lang", "cql2-json"))
        if body.get("filter") is not None and lang != "cql2-json":
            raise BadRequest(f"filter-lang {lang!r} is not supported (use cql2-json)")
        bbox = body.get("bbox")
        if bbox is not None and (len(bbox) not in (4, 6) or not all(isinstance(v, (int, float)) for v in bbox)):
            raise BadRequest("bbox must be 4 or 6 numbers")
        if bbox is not None and body.get("intersects") is not None:
            raise BadRequest("bbox and intersects cannot be used together")
        try:
            limit = int(body.get("limit") or DEFAULT_LIMIT)
            token = int(body.get("token") or 0)
        except (TypeError, ValueError):
            raise BadRequest("limit and token must be integers") from None
        if limit < 1:
            raise BadRequest("limit must be positive")
        if token < 0:
            raise BadRequest("token must not be negative")
        params = cls(
            collections=_tuple(body.get("collections")),
            ids=_tuple(body.get("ids")),
            bbox=tuple(float(v) for v in bbox) if bbox is not None else None,
            intersects=body.get("intersects"),
            datetime=body.get("datetime"),
            query=body.get("query"),
            filter=body.get("filter"),
            limit=min(limit, MAX_LIMIT),  # the STAC API spec: clamp, do not refuse
            token=token,
        )
        params.predicate()  # reject malformed geometry, datetime, query now
        return params

    @classmethod
    def from_query_string(cls, args: dict[str, str], collection: str | None = None) -> SearchParams:
        """From GET parameters (comma lists, JSON-encoded ``intersects``/``query``/``filter``)."""
        body: dict[str, Any] = {}
        for key in ("collections", "ids"):
            if args.get(key):
                body[key] = args[key].split(",")
        if collection is not None:
            body["collections"] = [collection]
        if args.get("bbox"):
            try:
                body["bbox"] = [float(v) for v in args["bbox"].split(",")]
            except ValueError:
                raise BadRequest("bbox must be 4 or 6 numbers") from None
        for key in ("intersects", "query", "filter"):
            if args.get(key):
                if key == "filter" and args.get("filter-lang", "cql2-json") != "cql2-json":
                    raise BadRequest(f"filter-lang {args['filter-lang']!r} is not supported (use cql2-json)")
                try:
                    body[key] = json.loads(args[key])
                except json.JSONDecodeError:
                    raise BadRequest(f"{key} must be JSON") from None
        for key in ("datetime", "limit", "token"):
            if args.get(key):
                body[key] = args[key]
        return cls.from_body(body)

    def predicate(self):  # type: ignore[no-untyped-def]
        """A function item -> bool for everything but paging."""
        from shapely.geometry import box, shape

        tests = []
        if self.collections is not None:
            wanted = set(self.collections)
            tests.append(lambda it: it.get("collection") in wanted)
        if self.ids is not None:
            wanted_ids = set(self.ids)
            tests.append(lambda it: it["id"] in wanted_ids)
        if self.bbox is not None:
            b = self.bbox if len(self.bbox) == 4 else self.bbox[:2] + self.bbox[3:5]
            # A bbox crossing the antimeridian has west > east.
            area = box(*b) if b[0] <= b[2] else box(b[0], b[1], 180, b[3]).union(box(-180, b[1], b[2], b[3]))
            tests.append(lambda it: _geometry(it).intersects(area))
        if self.intersects is not None:
            try:
                geom = shape(self.intersects)
            except Exception:
                raise BadRequest("intersects is not a GeoJSON geometry") from None
            tests.append(lambda it: _geometry(it).intersects(geom))
        if self.datetime is not None:
            lo, hi = parse_interval(self.datetime)

            def in_time(it: dict) -> bool:
                start, end = item_interval(it)
                return (lo is None or end >= lo) and (hi is None or start <= hi)

            tests.append(in_time)
        if self.query is not None:
            tests.append(_query_predicate(self.query))
        if self.filter is not None:
            expr = self.filter
            _cql2(expr, None)  # validates operators before any item is seen
            tests.append(lambda it: _cql2(expr, it) is True)
        return lambda item: all(test(item) for test in tests)


def _tuple(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    return tuple(str(v) for v in value)


def _geometry(item: dict):  # type: ignore[no-untyped-def]
    from shapely.geometry import shape

    cached = item.get("_shape")
    if cached is None:
        cached = item["_shape"] = shape(item["geometry"])
    return cached


def _property(item: dict, name: str) -> Any:
    if name == "id":
        return item["id"]
    if name == "collection":
        return item.get("collection")
    if name == "geometry":
        return _geometry(item)
    return item["properties"].get(name)


# Comparisons by their CQL2 symbol; the Query extension names the same ones.
_COMPARISONS = {"=": operator.eq, "<>": operator.ne, "<": operator.lt,
                "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_QUERY_OPS = {
    **{name: _COMPARISONS[symbol] for name, symbol in
       (("eq", "="), ("neq", "<>"), ("lt", "<"), ("lte", "<="), ("gt", ">"), ("gte", ">="))},
    "in": lambda a, b: a in b,
}


def _query_predicate(query: dict):  # type: ignore[no-untyped-def]
    """The Query extension: ``{"eo:cloud_cover": {"lt": 20}}``; a missing property fails."""
    if not isinstance(query, dict):
        raise BadRequest("query must be an object of {property: {operator: value}}")
    for name, ops in query.items():
        if not isinstance(ops, dict) or not set(ops) <= set(_QUERY_OPS):
            raise BadRequest(f"query on {name!r}: operators must be among {sorted(_QUERY_OPS)}")

    def test(item: dict) -> bool:
        for name, ops in query.items():
            value = _property(item, name)
            if value is None:
                return False
            for op, operand in ops.items():
                try:
                    if not _QUERY_OPS[op](value, operand):
                        return False
                except TypeError:
                    return False
        return True

    return test


_CQL2_OPS = {"and", "or", "not", "in", "between", "isNull", "s_intersects", *_COMPARISONS}


def _cql2(expr: Any, item: dict | None) -> Any:
    """Evaluate a basic CQL2-JSON expression on ``item``.

    With ``item=None`` it only checks that every operator is supported.
    Logic is three-valued, as in SQL: a comparison with a missing property
    is unknown (None), ``not`` of unknown stays unknown, and only a true
    result selects the item.
    """
    if isinstance(expr, list):
        return [_cql2(e, item) for e in expr]
    if not isinstance(expr, dict):
        return expr
    if "property" in expr:
        return None if item is None else _property(item, expr["property"])
    if "timestamp" in expr or "date" in expr:
        return parse_instant(expr.get("timestamp") or expr["date"])
    if "type" in expr and "coordinates" in expr:
        from shapely.geometry import shape

        return shape(expr)
    op = expr.get("op")
    if op not in _CQL2_OPS:
        raise BadRequest(f"CQL2 operator {op!r} is not supported")
    args = [_cql2(a, item) for a in expr.get("args", [])]
    if item is None:
        return None
    if op in ("and", "or"):
        decisive = op == "or"  # True decides an "or", False an "and"
        if any(a is decisive for a in args):
            return decisive
        return None if any(a is None for a in args) else not decisive
    if op == "not":
        return None if args[0] is None else not args[0]
    if op == "isNull":
        return args[0] is None
    if any(a is None for a in args):
        return None
    a, *rest = (_comparable(v, args) for v in args)
    try:
        if op in _COMPARISONS:
            return _COMPARISONS[op](a, rest[0])
        if op == "in":
            return a in rest[0]
        if op == "between":
            return rest[0] <= a <= rest[1]
        return a.intersects(rest[0])  # s_intersects
    except (TypeError, AttributeError):
        return False


def _comparable(value: Any, args: list) -> Any:
    """Timestamps stored as strings compare as datetimes when the other side is one."""
    if isinstance(value, str) and any(isinstance(a, datetime) for a in args):
        try:
            return parse_instant(value)
        except BadRequest:
            return value
    return value


# --------------------------------------------------------------------------
# The world's catalogue.


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


# --------------------------------------------------------------------------
# The API.


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


# --------------------------------------------------------------------------
# S3.

_DUMMY_KEY_ID = "tessera-local"
_DUMMY_SECRET = "tessera-local-secret"  # moto accepts any; nothing real lives here
_REGION = "us-east-1"


class S3Server:
    """moto's S3 on loopback, for the object-store code paths.

    moto keeps its buckets in this process's memory, shared with any
    ``moto.mock_aws`` in the same process (which resets them on start).
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = check_port(port)
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> S3Server:
        import logging

        from moto.server import ThreadedMotoServer

        # werkzeug logs every request line on stderr; keep the CLI's output clean
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self.port:
            _check_free(self.host, self.port)  # moto would wait forever on a busy port
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"S3Server({self.endpoint_url})"

    def env(self) -> dict[str, str]:
        """Environment for boto3/s3fs (``AWS_ENDPOINT_URL*``) and GDAL's /vsis3/ (``AWS_S3_ENDPOINT``)."""
        return {
            "AWS_ACCESS_KEY_ID": _DUMMY_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": _DUMMY_SECRET,
            "AWS_DEFAULT_REGION": _REGION,
            "AWS_REGION": _REGION,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_S3_ENDPOINT": f"{self.host}:{self.port}",
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=_REGION,
            aws_access_key_id=_DUMMY_KEY_ID,
            aws_secret_access_key=_DUMMY_SECRET,
        )

    def create_bucket(self, name: str, public_read: bool = False) -> None:
        """Create ``name``; with ``public_read`` anyone may GetObject (as a public dataset bucket)."""
        s3 = self.client()
        s3.create_bucket(Bucket=name)
        if public_read:
            policy = {
                "Version": "2012-10-17",
                "Statement": [{
                    "Sid": "PublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject"],
                    "Resource": [f"arn:aws:s3:::{name}/*"],
                }],
            }
            s3.put_bucket_policy(Bucket=name, Policy=json.dumps(policy))

    def upload_dir(self, local_dir: str | os.PathLike[str], bucket: str, prefix: str = "") -> int:
        """Put every file under ``local_dir`` at ``s3://bucket/prefix/...``; return the count.

        The objects go straight into moto's in-process store, not through
        PUT requests: a PUT costs ~10 ms here, 80 s for the test world's
        9,300 files, against ~0.2 ms per file this way. Reads still go
        through the server like any client's.
        """
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        if bucket not in store.buckets:
            raise ServiceError(f"no bucket {bucket!r} on {self.endpoint_url}")
        root = Path(local_dir)
        count = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix.strip("/"), path.relative_to(root).as_posix()]))
            obj = store.put_object(bucket, key, path.read_bytes())
            obj.set_metadata({"Content-Type": media_type(path)})
            count += 1
        return count


def _check_free(host: str, port: int) -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServiceError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


# --------------------------------------------------------------------------
# All three.

WORLD_BUCKET = "tessera-world"


class LocalServices:
    """A world over HTTP, STAC (hrefs on that HTTP server) and S3 (bucket ``tessera-world``).

    ``port_base=P`` uses ports P, P+1 and P+2; by default free ports.
    """

    def __init__(self, world_dir: str | os.PathLike[str], port_base: int | None = None) -> None:
        self.world_dir = Path(world_dir)
        if not (self.world_dir / "stac").is_dir():
            raise UserInputError(f"{world_dir} is not a synthetic world (no stac/ folder)")
        ports = [0, 0, 0] if port_base is None else [check_port(port_base + i) for i in range(3)]
        self.http = StaticServer(self.world_dir, port=ports[0])
        self._stac_port = ports[1]
        self.s3 = S3Server(port=ports[2])
        self.stac: StacServer | None = None
        self.bucket = WORLD_BUCKET
        self._stack = ExitStack()

    def __enter__(self) -> LocalServices:
        with ExitStack() as stack:
            stack.enter_context(self.http)
            self.stac = stack.enter_context(StacServer(self.world_dir, self.http.url, port=self._stac_port))
            stack.enter_context(self.s3)
            self.s3.create_bucket(self.bucket, public_read=True)
            self.s3.upload_dir(self.world_dir, self.bucket)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def urls(self) -> dict[str, str]:
        """Where each service listens (no credentials: those come from ``self.s3.env()``)."""
        assert self.stac is not None
        return {
            "http": self.http.url,
            "stac": self.stac.url,
            "s3": self.s3.endpoint_url,
            "bucket": self.bucket,
            "world": str(self.world_dir.resolve()),
        }
