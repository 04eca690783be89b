"""The browser viewer, shipped as static files inside the package (``viewer_assets/``).

:func:`publish_viewer` writes them into a published root: ``{root}/index.html`` and
``{root}/viewer/...``. The page reads the root beside it with range requests only
(``tessera.zarr/zarr.json``, shard indexes and chunks, ``manifests/{year}.parquet``), so any
static host that serves the root (``tessera-ray serve``, S3 + CloudFront, nginx,
``python -m http.server``) serves the viewer too. The assets are built from ``viewer/`` at the
repository's top level (``make viewer``; docs/viewer.md); Python never needs Node.js.

Beside index.html, ``viewer.json`` holds the root's viewer configuration: for now an optional
basemap (:class:`Basemap`, an XYZ tile URL template drawn beneath the embeddings). Re-publishing
the viewer (``embed`` does it on every run) keeps the configuration that is there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from importlib import resources

from tessera_ray.errors import DataError, UserInputError
from tessera_ray.store.objects import Objects, open_objects

ASSETS = "viewer_assets"
INDEX = "index.html"
CONFIG = "viewer.json"
KEEP = "keep"  # publish_viewer(basemap=KEEP): leave the root's configuration as it is


@dataclass(frozen=True)
class Basemap:
    """XYZ (Web Mercator) tiles the page draws beneath the embedding layer, reprojected to the zone grid.

    The page checks the same rules (viewer/src/ui/basemap.js) for a ``?basemap=`` template.
    """

    url: str  # template with {z}, {x} and {y} (or {-y}, the TMS row): http(s)://... or a path relative to the root
    attribution: str = ""  # shown in a corner of the map, as the tile provider asks
    max_zoom: int = 19  # the deepest zoom level the tile server has
    opacity: float = 1.0  # the slider's starting value

    def __post_init__(self) -> None:
        url = self.url.strip()
        missing = [p for p in ("{z}", "{x}") if p not in url] + ([] if "{y}" in url or "{-y}" in url else ["{y}"])
        if missing:
            raise UserInputError(f"basemap template {url!r} has no {', '.join(missing)}")
        scheme = re.match(r"([a-zA-Z][a-zA-Z0-9+.-]*):", url)
        if scheme and scheme.group(1).lower() not in ("http", "https"):
            raise UserInputError(f"basemap template {url!r} must be http(s):// or a path relative to the root")
        if not 0 <= self.max_zoom <= 24:
            raise UserInputError(f"basemap max zoom {self.max_zoom} is not in 0..24")
        if not 0.0 <= self.opacity <= 1.0:
            raise UserInputError(f"basemap opacity {self.opacity} is not in 0..1")
        object.__setattr__(self, "url", url)


def viewer_config(basemap: Basemap | None) -> bytes:
    """The bytes of ``viewer.json``."""
    return json.dumps({"basemap": asdict(basemap) if basemap else None}, indent=1).encode() + b"\n"


def asset_files() -> Iterator[tuple[str, bytes]]:
    """(key relative to a root, bytes) of every file of the viewer, index.html last."""
    base = resources.files("tessera_ray").joinpath(ASSETS)
    if not base.joinpath(INDEX).is_file():
        raise DataError(f"this installation of tessera-ray has no viewer assets ({ASSETS}/{INDEX} is missing)")
    files = []

    def walk(node, prefix: str) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            key = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, f"{key}/")
            elif child.name != INDEX or prefix:
                files.append((key, child.read_bytes()))

    walk(base, "")
    yield from files
    yield INDEX, base.joinpath(INDEX).read_bytes()  # last: the page appears once its assets are there


def publish_viewer(root: str | Objects, basemap: Basemap | None | str = KEEP) -> list[str]:
    """Write the viewer into ``root`` (a folder, ``s3://...`` or an opened :class:`Objects`); its keys.

    ``basemap``: a :class:`Basemap`, None (no basemap), or KEEP: the root's ``viewer.json`` as
    it is (no basemap where there is none yet).
    """
    objects = open_objects(root) if isinstance(root, str) else root
    keys = []
    files = list(asset_files())
    if basemap != KEEP or not objects.exists(CONFIG):
        files.insert(-1, (CONFIG, viewer_config(basemap if isinstance(basemap, Basemap) else None)))
    for key, data in files:
        objects.put(key, data)
        keys.append(key)
    return keys
