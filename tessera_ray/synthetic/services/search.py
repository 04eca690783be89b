"""Item Search over items held in memory: parameters, predicates, CQL2-JSON (pure functions on item dicts).

What :mod:`.stac_api` answers ``/search`` and ``/collections/{id}/items``
with, kept apart from the web app so that the rules (datetime intervals, the
Query extension, three-valued CQL2 logic) are tested without a server.
Supported: ``bbox``, ``intersects``, ``datetime`` (instant, closed or open
interval), ``collections``, ``ids``, ``limit``, ``query`` and basic
CQL2-JSON ``filter`` (logical operators, comparisons, ``in``, ``between``,
``isNull``, ``s_intersects``), paged by ``token``. Not supported: CQL2 text,
sortby, fields.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tessera_ray.errors import UserInputError

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000


class BadRequest(UserInputError):
    """A search request the API cannot answer (answered 400)."""


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp (or a bare date) as an aware UTC datetime."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise BadRequest(f"not a timestamp: {text!r}") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
    """When an item was acquired: its ``datetime``, or its ``start_datetime`` .. ``end_datetime``."""
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

    def predicate(self) -> Callable[[dict], bool]:
        """A function item -> bool for everything but paging."""
        from shapely.geometry import box, shape

        tests: list[Callable[[dict], bool]] = []
        if self.collections is not None:
            wanted = set(self.collections)
            tests.append(lambda it: it.get("collection") in wanted)
        if self.ids is not None:
            wanted_ids = set(self.ids)
            tests.append(lambda it: it["id"] in wanted_ids)
        if self.bbox is not None:
            b = self.bbox if len(self.bbox) == 4 else self.bbox[:2] + self.bbox[3:5]
            # A bbox crossing the antimeridian has west > east.
            area = (
                box(b[0], b[1], b[2], b[3])
                if b[0] <= b[2]
                else box(b[0], b[1], 180, b[3]).union(box(-180, b[1], b[2], b[3]))
            )
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


def _geometry(item: dict) -> Any:
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


def _query_predicate(query: dict) -> Callable[[dict], bool]:
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
