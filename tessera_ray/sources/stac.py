"""STAC API search: the only module that talks to a STAC API.

Through pystac-client, with a ``requests`` Retry adapter (exponential backoff
on 429/5xx and connection errors), a small page size, and date ranges split
in halves when a page keeps failing: Earth Search answers a bare 500/502 when
a page passes AWS Lambda's 6 MB limit, and a narrower range makes a smaller
page. Results are cached per job in memory and, optionally, on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera_ray.atomic import write_bytes
from tessera_ray.errors import ServiceError, env_number
from tessera_ray.sources.scenes import Scene, SourceProfile, scene_from_item

if TYPE_CHECKING:
    from pystac_client import Client

log = logging.getLogger(__name__)

RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class SearchQuery:
    """One search; also the cache key."""

    url: str
    collection: str
    bbox: tuple[float, float, float, float]
    start: date
    end: date
    """Inclusive."""

    def key(self) -> str:
        doc = json.dumps({**asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat()}, sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()[:32]

    def datetime_range(self) -> str:
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999Z"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    backoff: float = 0.5
    """Seconds; the n-th retry waits backoff * 2**(n-1)."""
    page_size: int = 50
    min_split_days: int = 1

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(
            retries=int(env_number("TESSERA_RAY_STAC_RETRIES", cls.retries, int)),
            backoff=env_number("TESSERA_RAY_STAC_BACKOFF", cls.backoff),
            page_size=int(env_number("TESSERA_RAY_STAC_PAGE_SIZE", cls.page_size, int, minimum=1)),
        )


class SearchCache:
    """Items per query for one job: in memory, and in ``directory`` when given."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._memory: dict[str, list[dict[str, Any]]] = {}
        self.directory = Path(directory) if directory else None
        self.hits = 0

    def get(self, query: SearchQuery) -> list[dict[str, Any]] | None:
        key = query.key()
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        if self.directory is not None and (self.directory / f"{key}.json").exists():
            items: list[dict[str, Any]] = json.loads((self.directory / f"{key}.json").read_text())
            self._memory[key] = items
            self.hits += 1
            return items
        return None

    def put(self, query: SearchQuery, items: list[dict[str, Any]]) -> None:
        key = query.key()
        self._memory[key] = items
        if self.directory is not None:  # atomically: jobs sharing the folder read whole files or none
            self.directory.mkdir(parents=True, exist_ok=True)
            write_bytes(self.directory / f"{key}.json", json.dumps(items).encode())


def _client(url: str, policy: RetryPolicy) -> Client:
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    retry = Retry(
        total=policy.retries,
        connect=policy.retries,
        read=policy.retries,
        status=policy.retries,
        backoff_factor=policy.backoff,
        status_forcelist=RETRY_STATUS,
        allowed_methods=None,  # POST searches are idempotent
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    return Client.open(url, stac_io=StacApiIO(max_retries=retry, timeout=60))


class _PageFailed(Exception):
    """A page still failed after the retries (a 5xx: try a narrower range)."""


def search_items(
    query: SearchQuery, policy: RetryPolicy | None = None, cache: SearchCache | None = None
) -> list[dict[str, Any]]:
    """All item dicts matching ``query`` (deduplicated by id, sorted by datetime then id)."""
    policy = policy or RetryPolicy.from_env()
    if cache is not None and (hit := cache.get(query)) is not None:
        return hit
    try:
        client = _client(query.url, policy)
    except Exception as exc:  # noqa: BLE001 - every failure to open the API is one user-facing line
        raise ServiceError(f"STAC API {query.url} unreachable after {policy.retries} retries: {_reason(exc)}") from None
    found: dict[str, dict[str, Any]] = {}
    _search_range(client, query, query.start, query.end, policy, found)
    items = sorted(found.values(), key=lambda i: (i.get("properties", {}).get("datetime") or "", i["id"]))
    if cache is not None:
        cache.put(query, items)
    return items


def _search_range(client: Client, query: SearchQuery, start: date, end: date, policy: RetryPolicy,
                  found: dict[str, dict[str, Any]]) -> None:
    sub = SearchQuery(query.url, query.collection, query.bbox, start, end)
    try:
        for item in _pages(client, sub, policy):
            found[item["id"]] = item
        return
    except _PageFailed as exc:
        days = (end - start).days + 1
        if days <= policy.min_split_days:
            raise ServiceError(
                f"STAC API {query.url} keeps failing for {query.collection} on {start}..{end}: {exc}"
            ) from None
        mid = start + timedelta(days=days // 2 - 1)
        log.warning("STAC page failed for %s..%s (%s); splitting the date range", start, end, exc)
        _search_range(client, query, start, mid, policy, found)
        _search_range(client, query, mid + timedelta(days=1), end, policy, found)


def _pages(client: Client, query: SearchQuery, policy: RetryPolicy) -> Iterator[dict[str, Any]]:
    import requests
    from pystac_client.exceptions import APIError

    search = client.search(
        collections=[query.collection], bbox=list(query.bbox), datetime=query.datetime_range(), limit=policy.page_size
    )
    try:
        for page in search.pages_as_dicts():
            yield from page.get("features", [])
    except APIError as exc:
        if getattr(exc, "status_code", None) in RETRY_STATUS or getattr(exc, "status_code", None) is None:
            raise _PageFailed(_reason(exc)) from None
        raise ServiceError(f"STAC API {query.url} refused the search: {_reason(exc)}") from None
    except requests.exceptions.RetryError as exc:
        raise _PageFailed(_reason(exc)) from None
    except requests.exceptions.RequestException as exc:
        raise ServiceError(
            f"STAC API {query.url} unreachable after {policy.retries} retries: {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def search_scenes(
    profile: SourceProfile,
    bbox: Sequence[float],
    start: date,
    end: date,
    *,
    url: str | None = None,
    policy: RetryPolicy | None = None,
    cache: SearchCache | None = None,
) -> list[Scene]:
    """Scenes of ``profile``'s collection over a lon/lat bbox between two dates (inclusive)."""
    query = SearchQuery(url or profile.url, profile.collection, tuple(float(v) for v in bbox), start, end)  # type: ignore[arg-type]
    scenes = []
    for item in search_items(query, policy, cache):
        scene = scene_from_item(item, profile, base=_self_dir(item) or query.url)
        if scene is not None:
            scenes.append(scene)
    return scenes


def _self_dir(item: dict[str, Any]) -> str | None:
    """The folder of an item's self link: what its relative hrefs are relative to (STAC rule)."""
    for link in item.get("links", []):
        if link.get("rel") == "self" and link.get("href"):
            return str(link["href"]).rsplit("/", 1)[0]
    return None


def year_range(year: int) -> tuple[date, date]:
    return date(year, 1, 1), date(year, 12, 31)
