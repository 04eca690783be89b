"""Source profiles (which API, collection and asset keys) and scene records.

A :class:`Scene` is what search returns and what readers consume: one
acquisition (an S2 tile-date or an S1 burst) with the hrefs of the assets we
read, already resolved to absolute URLs or paths, and the per-scene decisions
(DN offset, orbit direction when the catalog knows it) made once at search time.
"""

from __future__ import annotations

import datetime as _dt
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin, urlparse

from tessera_ray.errors import ServiceError, UserInputError
from tessera_ray.sources import sentinel1, sentinel2

S2 = "s2"
S1 = "s1"


@dataclass(frozen=True)
class SourceProfile:
    """How to find and read one collection of one provider."""

    name: str
    kind: str
    """``s2`` or ``s1``."""
    url: str
    """STAC API root."""
    collection: str
    assets: tuple[tuple[str, tuple[str, ...]], ...]
    """(band role, candidate asset keys); role names are Earth Search keys for S2 and VV/VH for S1."""
    offset_flag: str | None = None
    """Item property saying the provider already removed the BOA offset (Earth Search ``sentinel-2-l2a``)."""
    orbit_property: str | None = None
    """Item property with the orbit direction; None: read the GeoTIFF tag ``ORBIT_PASS_DIRECTION``."""
    earthdata_auth: bool = False
    """Assets need an Earthdata bearer token."""
    signing: str | None = None
    """Name of the URL hook every asset href passes through (:func:`register_signer`), e.g.
    ``planetary-computer``: hrefs need SAS signing before reading."""

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(role for role, _ in self.assets)


_S2_ROLES = tuple((k, (k,)) for k in (*sentinel2.BAND_KEYS, sentinel2.SCL_KEY))
_PC_S2_KEYS = ("B04", "B02", "B03", "B08", "B8A", "B05", "B06", "B07", "B11", "B12", "SCL")

EARTH_SEARCH_C1 = SourceProfile(
    "earth-search-c1", S2, "https://earth-search.aws.element84.com/v1", "sentinel-2-c1-l2a", _S2_ROLES
)
EARTH_SEARCH_L2A = SourceProfile(
    "earth-search-l2a", S2, "https://earth-search.aws.element84.com/v1", "sentinel-2-l2a", _S2_ROLES,
    offset_flag="earthsearch:boa_offset_applied",
)
OPERA_RTC = SourceProfile(
    "opera-rtc", S1, "https://cmr.earthdata.nasa.gov/stac/ASF", "OPERA_L2_RTC-S1_V1",
    (("VV", ("VV", "vv", "rtc_vv")), ("VH", ("VH", "vh", "rtc_vh"))),
    earthdata_auth=True,
)
PC_S2 = SourceProfile(
    "planetary-computer-s2", S2, "https://planetarycomputer.microsoft.com/api/stac/v1", "sentinel-2-l2a",
    tuple((role, (key,)) for (role, _), key in zip(_S2_ROLES, _PC_S2_KEYS)),
    signing="planetary-computer",
)
PC_S1 = SourceProfile(
    "planetary-computer-s1", S1, "https://planetarycomputer.microsoft.com/api/stac/v1", "sentinel-1-rtc",
    (("VV", ("vv",)), ("VH", ("vh",))),
    orbit_property="sat:orbit_state", signing="planetary-computer",
)
PROFILES = {p.name: p for p in (EARTH_SEARCH_C1, EARTH_SEARCH_L2A, OPERA_RTC, PC_S2, PC_S1)}


def profile_for_collection(collection: str, kind: str | None = None) -> SourceProfile:
    """The default profile of a collection id (Earth Search first for ``sentinel-2-l2a``)."""
    for p in PROFILES.values():
        if p.collection == collection and (kind is None or p.kind == kind):
            return p
    raise KeyError(collection)


@dataclass(frozen=True)
class Asset:
    role: str
    href: str


@dataclass(frozen=True)
class Scene:
    """One acquisition: an S2 tile on one date or one S1 burst."""

    id: str
    collection: str
    kind: str
    datetime: datetime
    """Acquisition time, UTC."""
    crs: str | None
    bbox: tuple[float, float, float, float]
    """Lon/lat footprint bounds."""
    assets: tuple[Asset, ...]
    processing_baseline: str | None = None
    cloud_cover: float | None = None
    boa_offset: int = 0
    """DNs to subtract (S2), decided from the baseline and the collection."""
    offset_flag_disagrees: bool = False
    """The provider's boa_offset_applied flag said otherwise than the baseline (it is not trusted)."""
    orbit: str | None = None
    """ascending/descending when the catalog says; None: read the GeoTIFF tag."""
    earthdata_auth: bool = False

    def asset(self, role: str) -> Asset:
        for a in self.assets:
            if a.role == role:
                return a
        raise KeyError(f"scene {self.id} has no {role} asset")

    @property
    def date(self) -> _dt.date:
        return self.datetime.date()

    @property
    def sort_key(self) -> tuple[_dt.datetime, str]:
        """Mosaic order within a date: acquisition time, then id."""
        return (self.datetime, self.id)


def _bbox2d(bbox: Sequence[float]) -> tuple[float, float, float, float]:
    """W, S, E, N of a STAC bbox, 2D or 3D (heights dropped)."""
    w, s, e, n = (bbox[0], bbox[1], bbox[2], bbox[3]) if len(bbox) == 4 else (bbox[0], bbox[1], bbox[3], bbox[4])
    return (float(w), float(s), float(e), float(n))


def parse_datetime(value: str) -> datetime:
    dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def resolve_href(href: str, base: str | None) -> str:
    """An asset href made absolute: URLs and absolute paths stay; relative ones join ``base``.

    ``base`` is a directory (a URL or a local path); a relative href is taken
    relative to it, e.g. the world root for ``stac/items.parquet``.
    """
    if urlparse(href).scheme in ("http", "https", "s3", "file") or href.startswith("/"):
        return href
    if base is None:
        raise ValueError(f"relative href {href!r} with no base to resolve it against")
    if urlparse(base).scheme in ("http", "https", "s3"):
        return urljoin(base.rstrip("/") + "/", href)
    return posixpath.normpath(posixpath.join(str(base), href))


def _find_asset(
    assets: Mapping[str, Any], candidates: tuple[str, ...], role: str
) -> tuple[str, Mapping[str, Any]] | None:
    for key in candidates:
        if key in assets:
            return key, assets[key]
    suffix = f"_{role}.tif".lower()  # OPERA file names end in _VV.tif / _VH.tif
    for key, a in assets.items():
        if str(a.get("href", "")).lower().endswith(suffix):
            return key, a
    return None


def _crs(props: Mapping[str, Any]) -> str | None:
    if props.get("proj:code"):
        return str(props["proj:code"])
    if props.get("proj:epsg"):
        return f"EPSG:{int(props['proj:epsg'])}"
    return None


UrlHook = Callable[[str], str]
"""Rewrites an absolute asset href before it is read (signing: a SAS token, a presigned URL)."""
_SIGNERS: dict[str, UrlHook] = {}


def register_signer(name: str, hook: UrlHook) -> None:
    """Make ``hook`` the URL rewriting of profiles whose ``signing`` is ``name``."""
    _SIGNERS[name] = hook


def signer(profile: SourceProfile) -> UrlHook | None:
    """The URL hook of ``profile``: None when its hrefs are read as they are."""
    if profile.signing is None:
        return None
    if profile.signing not in _SIGNERS:
        raise UserInputError(f"source {profile.name} needs URL signing {profile.signing!r}, which nothing provides "
                             f"(known: {', '.join(sorted(_SIGNERS)) or 'none'})")
    return _SIGNERS[profile.signing]


def _planetary_computer(href: str) -> str:
    """A Planetary Computer href with its SAS token (needs the optional ``planetary-computer`` package)."""
    try:
        import planetary_computer
    except ImportError:
        raise ServiceError("Planetary Computer sources need `pip install planetary-computer`") from None
    signed: str = planetary_computer.sign(href)
    return signed


register_signer("planetary-computer", _planetary_computer)


def scene_from_item(item: Mapping[str, Any], profile: SourceProfile, base: str | None = None) -> Scene | None:
    """A scene from a STAC item dict, or None when it lacks an asset we need.

    Every href is resolved against ``base`` and then passed through the profile's URL hook
    (:func:`signer`), so that items from an API and from a snapshot are read alike.
    """
    sign = signer(profile)
    props = item.get("properties", {})
    when = parse_datetime(props.get("datetime") or props.get("start_datetime"))
    raw_assets = item.get("assets", {})
    assets = []
    for role, candidates in profile.assets:
        found = _find_asset(raw_assets, candidates, role)
        if found is None:
            return None
        _, a = found
        href = resolve_href(str(a["href"]), base)
        assets.append(Asset(role, sign(href) if sign else href))
    baseline = props.get("s2:processing_baseline")
    offset, flag_disagrees = 0, False
    if profile.kind == S2:
        # the profile with an offset flag is Earth Search's old collection, which harmonised its DNs
        applied = props.get(profile.offset_flag) if profile.offset_flag else None
        offset, flag_disagrees = sentinel2.decide_offset(baseline, applied, when,
                                                         harmonised_by_provider=profile.offset_flag is not None)
    orbit = sentinel1.orbit_direction(props.get(profile.orbit_property)) if profile.orbit_property else None
    bbox = item.get("bbox") or (-180.0, -90.0, 180.0, 90.0)
    return Scene(
        id=str(item["id"]),
        collection=str(item.get("collection") or profile.collection),
        kind=profile.kind,
        datetime=when,
        crs=_crs(props),
        bbox=_bbox2d(bbox),
        assets=tuple(assets),
        processing_baseline=None if baseline is None else str(baseline),
        cloud_cover=None if props.get("eo:cloud_cover") is None else float(props["eo:cloud_cover"]),
        boa_offset=offset,
        offset_flag_disagrees=flag_disagrees,
        orbit=orbit,
        earthdata_auth=profile.earthdata_auth,
    )
