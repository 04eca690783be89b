"""COG reads over HTTP range requests: the only module doing raster I/O.

* :class:`ReaderEnv` carries the GDAL settings (TESSERA.md section 3), the
  driver's AWS credentials and the Earthdata token into every Ray worker
  (:func:`capture_env` on the driver; in the worker :func:`restore_env` around
  a task for what GDAL and boto3 take from the process environment, and
  :meth:`ReaderEnv.activate` around each read for GDAL's thread-local options);
  secrets travel as :class:`Secret`, whose repr never shows them.
* :func:`read_onto` reads one band onto a target grid (an odc-geo ``GeoBox``),
  fetching only the COG blocks the target needs (odc-geo's reprojection ROI):
  a plain window read when the grids match, an integer upsampling (20 m ->
  10 m nearest) without GDAL's resampler, and a GDAL reprojection of the
  covering window otherwise (other CRS, bilinear, 30 m S1).
* A failed read is retried with backoff (GDAL's own per-request retries come
  first); retries, and any later read of an href whose last read failed in
  this process, bypass GDAL's /vsicurl/ cache, which otherwise remembers a
  failed request for the life of the process (measured: a 502 answered once
  fails every later open of that URL in the process, without a request).
  What the failures say decides what happens next (:func:`is_transient`):

  - the asset itself is bad: its bytes do not decode (not a TIFF, truncated,
    corrupt tiles) or it is gone (HTTP 404/410, no such key or file):
    :class:`UnreadableAsset`, a :class:`DataError`; the caller skips the
    scene and reports it, as a re-run would find the same bytes;
  - the source did not deliver: HTTP 5xx, 429, 408, timeouts, refused or
    reset connections, denied access (401/403, bad or expired credentials),
    out of memory: :class:`AssetUnavailable`, a :class:`ServiceError`; never
    skipped, since the output would then depend on a passing outage (or on
    expired credentials silently dropping a whole sensor); the read task fails
    and is retried, and a unit that keeps failing is left for a re-run.

rasterio sets GDAL options thread-locally in non-main threads, so the bearer
header set for a Sentinel-1 read in a pool thread never reaches another
thread's Sentinel-2 request.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import numpy as np
from affine import Affine
from odc.geo.geobox import GeoBox

from tessera_ray.errors import DataError, ServiceError, env_number
from tessera_ray.redact import redact

GDAL_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR"),
    ("CPL_VSIL_CURL_ALLOWED_EXTENSIONS", ".tif,.tiff,.TIF"),
    ("GDAL_HTTP_MERGE_CONSECUTIVE_RANGES", "YES"),
    ("GDAL_HTTP_MULTIRANGE", "YES"),
    ("GDAL_HTTP_MAX_RETRY", "3"),
    ("GDAL_HTTP_RETRY_DELAY", "0.5"),
    ("GDAL_HTTP_TIMEOUT", "60"),
    ("GDAL_CACHEMAX", "256"),
    ("VSI_CACHE", "TRUE"),
    ("VSI_CACHE_SIZE", "8388608"),
)
#: Options GDAL's /vsicurl/ reads once per process, when first used (so a
#: per-read rasterio.Env cannot change them); exported to the environment.
GDAL_PROCESS_OPTIONS = ("CPL_VSIL_CURL_CHUNK_SIZE", "CPL_VSIL_CURL_CACHE_SIZE")
#: Hosts that get the Earthdata bearer header (suffix match); more from TESSERA_RAY_EARTHDATA_HOSTS.
EARTHDATA_HOSTS: tuple[str, ...] = (
    ".earthdata.nasa.gov", ".earthdatacloud.nasa.gov", ".asf.alaska.edu", "asf.alaska.edu",
)


class UnreadableAsset(DataError):
    """An asset whose bytes do not decode (not a TIFF, truncated, corrupt) or that is gone: skip it and report it."""


class AssetUnavailable(ServiceError):
    """An asset its source did not deliver after the retries (5xx, 429, timeout, connection, access denied).

    Never skipped: the read task fails so that Ray retries it, and a unit
    that keeps failing is reported and published by a later run.
    """


class Secret:
    """A string that never shows in a repr, a log line or an f-string."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))


def earthdata_token(environ: Mapping[str, str] | None = None) -> Secret | None:
    """The Earthdata Login bearer token from ``EARTHDATA_TOKEN`` or the file named by ``EARTHDATA_TOKEN_FILE``."""
    env = os.environ if environ is None else environ
    if env.get("EARTHDATA_TOKEN"):
        return Secret(env["EARTHDATA_TOKEN"].strip())
    if env.get("EARTHDATA_TOKEN_FILE"):
        path = Path(env["EARTHDATA_TOKEN_FILE"]).expanduser()
        try:
            return Secret(path.read_text().strip())
        except OSError as exc:
            raise DataError(f"cannot read EARTHDATA_TOKEN_FILE {path}: {exc.strerror}") from None
    return None


@dataclass(frozen=True)
class ReaderEnv:
    """What a worker needs to read like the driver: GDAL options and credentials."""

    gdal: tuple[tuple[str, str], ...] = GDAL_DEFAULTS
    token: Secret | None = None
    credentials: tuple[tuple[str, Secret], ...] = ()
    """The driver's AWS keys (:data:`CREDENTIAL_VARIABLES`): GDAL and boto3 read them from the environment only."""
    earthdata_hosts: tuple[str, ...] = EARTHDATA_HOSTS
    retries: int = 3
    retry_delay: float = 0.5

    def options(self, href: str | None = None, auth: bool = False, fresh: bool = False) -> dict[str, str | int]:
        """GDAL options for reading ``href``; the bearer header only for Earthdata hosts of auth sources.

        ``fresh`` bypasses GDAL's /vsicurl/ cache (file sizes, failures, blocks) for this read and
        drops what it holds for the file when the read is done: a retry must go back to the network.
        """
        opts: dict[str, str | int] = dict(self.gdal)
        if fresh and href is not None and vsi_path(href).startswith("/vsi"):
            # a colon-separated list of path prefixes, so not the URL (it holds colons) but its file
            # system ("/vsicurl/"): the options are thread-local and this thread reads one file at a time
            opts["CPL_VSIL_CURL_NON_CACHED"] = "/" + vsi_path(href).split("/")[1] + "/"
        if "GDAL_CACHEMAX" in opts:  # rasterio sets it through GDALSetCacheMax, which takes MB as an int
            opts["GDAL_CACHEMAX"] = int(str(opts["GDAL_CACHEMAX"]).removesuffix("MB"))
        if auth and href is not None and self.token is not None and self.wants_token(href):
            opts["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {self.token.reveal()}"
        return opts

    def wants_token(self, href: str) -> bool:
        host = (urlparse(href).hostname or "").lower()
        return bool(host) and any(
            host == h.lstrip(".") or host.endswith("." + h.lstrip(".")) for h in self.earthdata_hosts
        )

    @contextlib.contextmanager
    def activate(self, href: str | None = None, auth: bool = False, fresh: bool = False) -> Iterator[None]:
        import rasterio

        opts = self.options(href, auth, fresh)
        for key in GDAL_PROCESS_OPTIONS:
            if key in opts:
                os.environ.setdefault(key, str(opts[key]))
        with rasterio.Env(**opts):
            yield


#: Secret AWS settings: never GDAL options (rasterio.Env refuses them), carried as :class:`Secret`.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_NOT_OPTIONS = ("GDAL_HTTP_HEADERS", *CREDENTIAL_VARIABLES)


def capture_env(environ: Mapping[str, str] | None = None) -> ReaderEnv:
    """The driver's reader settings: defaults, overridden by GDAL_*/CPL_*/VSI_*/AWS_* variables set there.

    A ``TESSERA_RAY_READ_*`` setting that is not a number is a :class:`~tessera_ray.errors.UserInputError`.
    """
    env = os.environ if environ is None else environ
    gdal = dict(GDAL_DEFAULTS)
    for key, value in env.items():
        if key.startswith(("GDAL_", "CPL_", "VSI_", "AWS_")) and key not in _NOT_OPTIONS:
            gdal[key] = value
    extra = tuple(h.strip().lower() for h in env.get("TESSERA_RAY_EARTHDATA_HOSTS", "").split(",") if h.strip())
    return ReaderEnv(
        gdal=tuple(sorted(gdal.items())),
        token=earthdata_token(env),
        credentials=tuple((key, Secret(env[key])) for key in CREDENTIAL_VARIABLES if env.get(key)),
        earthdata_hosts=EARTHDATA_HOSTS + extra,
        retries=int(env_number("TESSERA_RAY_READ_RETRIES", 3, int, environ=env)),
        retry_delay=env_number("TESSERA_RAY_READ_RETRY_DELAY", 0.5, environ=env),
    )


_RESTORED_LOCK = threading.Lock()
_restored: dict[str, Any] = {"depth": 0, "saved": {}}


@contextlib.contextmanager
def restore_env(env: ReaderEnv) -> Iterator[None]:
    """The driver's process-wide settings in this worker for the length of a task, then the worker's own again.

    What GDAL and boto3 read from the process environment and nowhere else:
    the AWS credentials, the other ``AWS_*`` settings (endpoint, region) and
    GDAL's once-per-process /vsicurl/ options. GDAL's per-read options are
    thread-local and set by :meth:`ReaderEnv.activate` around each read.
    Tasks overlapping in one process (threads) share one restoration: the
    worker's values come back when the last of them ends.
    """
    values = {key: str(value) for key, value in env.gdal if key.startswith("AWS_") or key in GDAL_PROCESS_OPTIONS}
    values.update((key, secret.reveal()) for key, secret in env.credentials)
    with _RESTORED_LOCK:
        if _restored["depth"] == 0:
            _restored["saved"] = {key: os.environ.get(key) for key in values}
        else:
            _restored["saved"].update((k, os.environ.get(k)) for k in values if k not in _restored["saved"])
        _restored["depth"] += 1
        os.environ.update(values)
    try:
        yield
    finally:
        with _RESTORED_LOCK:
            _restored["depth"] -= 1
            if _restored["depth"] == 0:
                saved, _restored["saved"] = _restored["saved"], {}
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


# ---------------------------------------------------------------------- grids


TargetGrid = GeoBox
"""The pixel grid a read lands on: odc-geo's GeoBox (CRS, affine transform, shape), a value that pickles."""


@dataclass(frozen=True)
class BandRead:
    """One band on the target grid, with the dataset's metadata tags."""

    data: np.ndarray
    tags: dict[str, str] = field(default_factory=dict)


def vsi_path(href: str) -> str:
    """GDAL path of an href: URLs through /vsicurl/, s3:// through /vsis3/, paths as they are."""
    scheme = urlparse(href).scheme
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme == "s3":
        return f"/vsis3/{href[5:]}"
    if scheme == "file":
        return urlparse(href).path
    return href


def read_onto(
    href: str,
    target: TargetGrid,
    resampling: str = "nearest",
    env: ReaderEnv | None = None,
    auth: bool = False,
) -> BandRead:
    """Band 1 of the COG at ``href`` on ``target``, retried.

    Raises :class:`UnreadableAsset` when the asset itself is bad and
    :class:`AssetUnavailable` when any attempt failed for a reason outside
    the asset (see the module docstring).
    """
    import rasterio
    from rasterio.errors import RasterioError

    env = env or ReaderEnv()
    failures: list[Exception] = []
    for attempt in range(env.retries + 1):
        try:
            with env.activate(href, auth, fresh=attempt > 0 or href in _FAILED), rasterio.open(vsi_path(href)) as src:
                band = BandRead(_read(src, target, resampling), src.tags())
            _FAILED.discard(href)
            return band
        except (RasterioError, OSError, ValueError) as exc:
            _FAILED.add(href)
            failures.append(exc)
            if attempt < env.retries:
                time.sleep(env.retry_delay * 2**attempt)
    transient = next((exc for exc in failures if is_transient(exc)), None)
    if transient is not None:
        raise AssetUnavailable(f"{_public(href)}: {_describe(transient)} ({len(failures)} attempt(s))")
    if urlparse(href).scheme not in ("http", "https", "s3") or any(map(_says_gone, failures)):
        raise UnreadableAsset(f"{_public(href)}: {_describe(failures[-1])}")
    return _read_downloaded(href, target, resampling, env, auth, failures[-1])


def _read_downloaded(href: str, target: TargetGrid, resampling: str, env: ReaderEnv, auth: bool,
                     failure: Exception) -> BandRead:
    """The band, read from the whole object fetched by our own client, before a remote asset is called unreadable.

    GDAL's /vsicurl/ keeps to itself what went wrong with a tile request: an
    error status, an HTML error page sent with 200, a body shorter than its
    Content-Length all reach us as libtiff's "got 0 bytes" (or "not recognized
    as being in a supported file format" for the header), exactly what a
    truncated or corrupt file says (measured with :mod:`tessera_ray.faults`,
    docs/pipeline.md). A scene left out for that would depend on a passing
    fault. So the object is fetched whole through :mod:`tessera_ray.store.objects`
    (statuses, content types and lengths checked, retried): a source that does
    not deliver is :class:`AssetUnavailable`, gone is unreadable, bytes that
    arrive whole and still do not decode are :class:`UnreadableAsset` (remembered
    in this process: the same bytes give the same answer), and bytes that decode
    are read. It costs one download of the object, only on this path.
    """
    import rasterio
    from rasterio.errors import RasterioError

    from tessera_ray.store.objects import HttpObjects, ObjectNotFound
    from tessera_ray.store.urls import split_url

    if href in _UNREADABLE:
        raise UnreadableAsset(_UNREADABLE[href])
    base, question, query = href.partition("?")  # a signed URL's query may hold "/"
    try:
        objects, key = split_url(base)
        if isinstance(objects, HttpObjects):  # GDAL's timeout, our retries, the bearer token where GDAL sends it
            token = env.token.reveal() if auth and env.token is not None and env.wants_token(href) else None
            objects = HttpObjects(objects.url, timeout=float(dict(env.gdal).get("GDAL_HTTP_TIMEOUT", 60)),
                                  retries=env.retries, retry_delay=env.retry_delay,
                                  headers={"Authorization": f"Bearer {token}"} if token else None)
        data = objects.get(key + question + query)
    except ObjectNotFound:
        raise UnreadableAsset(f"{_public(href)}: gone (HTTP 404) after GDAL read it as {_describe(failure)}") from None
    except ServiceError as exc:
        said = redact(_URL_QUERY.sub(r"\1", str(exc)))  # names the href
        raise AssetUnavailable(f"{said}; GDAL said {_describe(failure)}") from None
    try:
        with env.activate(), rasterio.MemoryFile(data) as memory, memory.open() as src:
            return BandRead(_read(src, target, resampling), src.tags())
    except (RasterioError, OSError, ValueError) as exc:
        _UNREADABLE[href] = message = f"{_public(href)}: {_describe(exc)} (the whole object, {len(data):,} bytes)"
        raise UnreadableAsset(message) from None


class _FailedHrefs:
    """Hrefs whose last read in this process failed: GDAL's cache may hold the failure, so the next read
    (a retry, a Ray retry of the task in the same worker, another block) bypasses it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hrefs: set[str] = set()

    def __contains__(self, href: str) -> bool:
        with self._lock:
            return href in self._hrefs

    def add(self, href: str) -> None:
        with self._lock:
            self._hrefs.add(href)

    def discard(self, href: str) -> None:
        with self._lock:
            self._hrefs.discard(href)


_FAILED = _FailedHrefs()
_UNREADABLE: dict[str, str] = {}
"""Remote hrefs whose whole object was fetched and did not decode -> the reason (see :func:`_read_downloaded`)."""
_HTTP_STATUS = re.compile(r"HTTP (?:response|error) code\D{0,40}?(\d{3})")
#: 4xx answers that are about the server or the request's credentials, not about the object.
_TRANSIENT_4XX = frozenset({401, 403, 407, 408, 425, 429})
_TRANSIENT_ERRNO = frozenset({errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ETIMEDOUT,
                              errno.ECONNRESET, errno.ECONNREFUSED})
#: The same as GDAL words them for a local file (rasterio gives no errno then).
_TRANSIENT_TEXTS = tuple(os.strerror(code) for code in sorted(_TRANSIENT_ERRNO))


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether a failed read says nothing about the asset itself, so that a later read may succeed.

    Decided by GDAL's error classes as rasterio raises them (measured
    against our HTTP server, moto's S3 and broken files; docs/pipeline.md):
    ``CPLE_HttpResponseError`` carries "HTTP response code: N" for an HTTP
    error and "CURL error: ..." for timeouts and connection failures; the
    ``CPLE_AWS*`` classes name S3's error codes. Undecodable bytes come as
    ``CPLE_OpenFailedError`` ("not recognized as being in a supported file
    format") or ``CPLE_AppDefinedError`` (libtiff's read and decode errors).
    A range request that fails after the header was read also surfaces as a
    libtiff read error ("got 0 bytes"): that is why :func:`read_onto` retries
    with GDAL's cache bypassed, where the failing server shows its status.
    """
    for err in _chain(exc):
        name = type(err).__name__
        if name == "CPLE_HttpResponseError":
            status = _HTTP_STATUS.search(str(err))
            code = int(status.group(1)) if status else None  # no code: a curl (network) error
            return code is None or code >= 500 or code in _TRANSIENT_4XX
        if name == "CPLE_AWSObjectNotFoundError":
            return False
        if name.startswith("CPLE_AWS") or name == "CPLE_OutOfMemoryError":
            return True  # S3 throttling/internal errors, credentials, buckets: not about one object
        if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNO:
            return True
        if any(text in str(err) for text in _TRANSIENT_TEXTS):
            return True  # this machine ran short (files, memory), not the asset
    return False


def _says_gone(exc: BaseException) -> bool:
    """Whether the server itself answered that the object is not there (HTTP 404/410, S3's NoSuchKey)."""
    return any(type(err).__name__ == "CPLE_AWSObjectNotFoundError"
               or (type(err).__name__ == "CPLE_HttpResponseError" and _HTTP_STATUS.search(str(err)) is not None)
               for err in _chain(exc))


_URL_QUERY = re.compile(r"(\w+://[^\s'\"?]*)\?[^\s'\"]*")


def _describe(exc: BaseException) -> str:
    """The error and its innermost cause on one line, without URL query strings (signed URLs carry secrets)."""
    chain = list(_chain(exc))
    text = f"{type(exc).__name__}: {str(exc)}"
    if len(chain) > 1 and str(chain[-1]) not in text:
        text += f" ({chain[-1]})"
    return redact(_URL_QUERY.sub(r"\1", " ".join(text.split())))[:300]


def _public(href: str) -> str:
    """An href without its query string (signed URLs carry secrets there)."""
    return redact(href.split("?", 1)[0])


def _nodata(src: Any) -> float:
    if src.nodata is not None:
        return float(src.nodata)
    return math.nan if np.dtype(src.dtypes[0]).kind == "f" else 0


def _read(src: Any, target: TargetGrid, resampling: str) -> np.ndarray:
    """Band 1 on ``target``, from only the source pixels the target needs.

    odc-geo computes which (:func:`odc.geo.overlap.compute_reproject_roi`): a
    window pasted as it is when the grids coincide up to an integer shift,
    else the covering window (two pixels of margin for the kernel) reprojected
    by GDAL (another CRS, bilinear, 30 m Sentinel-1). One case keeps our own
    code, by measurement: the 20 m bands onto 10 m with nearest, repeated
    2 x 2 by numpy (0.35 ms a 512 px block, against 14 ms through GDAL's
    warper, the same pixels: ``jobs/bench_grids.py``; docs/architecture.md).
    """
    from odc.geo.geobox import GeoBox
    from odc.geo.overlap import compute_reproject_roi
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    nodata = _nodata(src)
    dtype = np.dtype(src.dtypes[0])
    out = np.full(target.shape, nodata, dtype=dtype)
    if src.crs is None:
        raise ValueError("the raster has no CRS")
    source = GeoBox((src.height, src.width), src.transform, str(src.crs))
    roi = compute_reproject_roi(source, target)
    if roi.paste_ok:
        rows, cols = roi.roi_src
        if rows.stop > rows.start and cols.stop > cols.start:
            window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            out[cast(tuple[slice, slice], roi.roi_dst)] = src.read(1, window=window)
        return out
    same_crs = source.crs == target.crs
    factor = _integer_factor(src.transform, target) if resampling == "nearest" and same_crs else None
    if factor:
        return _window_read(src, target, factor, nodata, dtype)
    rows, cols = compute_reproject_roi(source, target, padding=2).roi_src
    if rows.stop <= rows.start or cols.stop <= cols.start:
        return out
    window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
    reproject(source=src.read(1, window=window), destination=out, src_transform=src.window_transform(window),
              src_crs=src.crs, src_nodata=nodata, dst_transform=target.transform, dst_crs=str(target.crs),
              dst_nodata=nodata, resampling=Resampling[resampling])
    return out


def _integer_factor(transform: Affine, target: TargetGrid) -> int | None:
    """k when the source pixels are exactly k x k target pixels and their edges fall on target edges."""
    t = target.transform
    if transform.b != 0 or transform.d != 0 or transform.e >= 0:
        return None
    k = transform.a / t.a
    if abs(k - round(k)) > 1e-9 or round(k) < 1 or abs(transform.e / t.e - k) > 1e-9:
        return None
    dx, dy = (transform.c - t.c) / t.a, (transform.f - t.f) / t.e
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    return int(round(k))


def _window_read(src: Any, target: TargetGrid, k: int, nodata: float, dtype: np.dtype) -> np.ndarray:
    """Target pixels from source pixels k x k times larger on the same lattice (k=1: plain copy)."""
    from rasterio.windows import Window

    h, w = target.shape
    out = np.full((h, w), nodata, dtype=dtype)
    # target pixel (0, 0) in source pixel units, an integer number of target pixels
    off_c = round((target.transform.c - src.transform.c) / target.transform.a)
    off_r = round((target.transform.f - src.transform.f) / target.transform.e)
    c0, r0 = math.floor(off_c / k), math.floor(off_r / k)
    c1, r1 = math.floor((off_c + w - 1) / k) + 1, math.floor((off_r + h - 1) / k) + 1
    sc0, sr0, sc1, sr1 = max(c0, 0), max(r0, 0), min(c1, src.width), min(r1, src.height)
    if sc1 <= sc0 or sr1 <= sr0:
        return out
    block = src.read(1, window=Window(sc0, sr0, sc1 - sc0, sr1 - sr0))
    if k > 1:
        block = np.repeat(np.repeat(block, k, axis=0), k, axis=1)
    # target rows/cols covered: source edge sr0*k .. sr1*k in target-lattice units, shifted by off
    tr0, tc0 = sr0 * k - off_r, sc0 * k - off_c
    rr0, cc0 = max(tr0, 0), max(tc0, 0)
    rr1, cc1 = min(tr0 + block.shape[0], h), min(tc0 + block.shape[1], w)
    out[rr0:rr1, cc0:cc1] = block[rr0 - tr0 : rr1 - tr0, cc0 - tc0 : cc1 - tc0]
    return out


class RequestSlots:
    """A per-process cap on concurrent asset reads, shared by every task a worker runs."""

    _lock = threading.Lock()
    _slots: dict[int, threading.BoundedSemaphore] = {}

    @classmethod
    def get(cls, n: int) -> threading.BoundedSemaphore:
        with cls._lock:
            if n not in cls._slots:
                cls._slots[n] = threading.BoundedSemaphore(n)
            return cls._slots[n]
