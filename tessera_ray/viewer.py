"""The browser viewer, shipped as static files inside the package (``viewer_assets/``).

:func:`publish_viewer` writes them into a published root: ``{root}/index.html`` and
``{root}/viewer/...``. The page reads the root beside it with range requests only
(``tessera.zarr/zarr.json``, shard indexes and chunks, ``manifests/{year}.parquet``), so any
static host that serves the root (``tessera-ray serve``, S3 + CloudFront, nginx,
``python -m http.server``) serves the viewer too. The assets are built from ``viewer/`` at the
repository's top level (``make viewer``; docs/viewer.md); Python never needs Node.js.
"""

from __future__ import annotations

from importlib import resources
from typing import Iterator

from tessera_ray.errors import DataError
from tessera_ray.store.objects import Objects, open_objects

ASSETS = "viewer_assets"
INDEX = "index.html"


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


def publish_viewer(root: str | Objects) -> list[str]:
    """Write the viewer into ``root`` (a folder, ``s3://...`` or an opened :class:`Objects`); its keys."""
    objects = open_objects(root) if isinstance(root, str) else root
    keys = []
    for key, data in asset_files():
        objects.put(key, data)
        keys.append(key)
    return keys
