"""What a root declares in ``tessera.zarr/zarr.json``: its years, arrays, depths and model.

Read once when a root is opened (one request: the consolidated metadata
holds every array's), and checked there: a folder that is not a root is a
:class:`UserInputError`, a root whose metadata has the wrong shape a
:class:`DataError`, each one line naming the object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tessera_ray.client.fetch import Fetcher
from tessera_ray.errors import DataError, UserInputError
from tessera_ray.store.layout import DEPTHS_ATTR, LAYOUT_ATTR, STORE_DIMS, YEARS_ATTR, ZARR_DIR, is_embeddings_array
from tessera_ray.store.objects import ObjectNotFound
from tessera_ray.store.shards import ShardedArray


@dataclass(frozen=True)
class RootMetadata:
    """A root's declared contents: which years, which arrays per zone, which Matryoshka depths."""

    url: str
    attrs: dict[str, Any]
    """The root group's attributes as stored."""
    years: list[int]
    """The time axis: ``years[t]`` is the year at index t of every array."""
    model: str
    arrays: dict[tuple[int, str], ShardedArray]
    """(zone, array name) -> the array: ``scales``, ``embeddings`` and any ``embeddings_dK``."""
    depths: dict[int, str]
    """Dimensions -> the array holding that prefix (TESSERA.md 5b); always 128 -> ``embeddings``."""

    @property
    def zones(self) -> list[int]:
        return sorted({z for z, _ in self.arrays})

    def year_index(self, year: int) -> int:
        """Position of ``year`` on the time axis; a clear error if the root does not hold it."""
        if int(year) not in self.years:
            raise UserInputError(f"year {year} is not in {self.url}; it has {self.years or 'no years'}")
        return self.years.index(int(year))

    def depth_array(self, depth: int | None) -> tuple[str, int]:
        """The array holding ``depth`` dims (None: all 128) and its width; a clear error for a depth not stored."""
        if depth is None:
            return "embeddings", STORE_DIMS
        if int(depth) not in self.depths:
            raise UserInputError(
                f"depth {depth} is not in {self.url}; it has depth(s) {', '.join(map(str, sorted(self.depths)))}"
            )
        return self.depths[int(depth)], int(depth)


def read_metadata(fetch: Fetcher) -> RootMetadata:
    """The root's metadata (one GET), or one clear error saying why the URL is not a readable root."""
    url = fetch.objects.url
    key = f"{ZARR_DIR}/zarr.json"
    try:
        meta = json.loads(fetch.get("metadata", key))
    except ObjectNotFound:
        hint = "; give the folder that holds tessera.zarr" if url.rstrip("/").endswith(ZARR_DIR) else ""
        raise UserInputError(f"{url} is not a tessera-ray root (no {key}){hint}") from None
    except (ValueError, UnicodeDecodeError):
        raise UserInputError(f"{url} is not a tessera-ray root ({key} is not Zarr metadata)") from None
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict):
        raise UserInputError(f"{url} is not a tessera-ray root ({key} is JSON, but not Zarr group metadata)")
    if LAYOUT_ATTR not in attrs:
        raise UserInputError(f"{url} holds a Zarr store that is not a tessera-ray root")
    try:
        return _parse(url, meta, attrs)
    except DataError as exc:
        raise DataError(f"{fetch.url(key)} is malformed: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"{fetch.url(key)} is malformed ({detail})") from None


def _parse(url: str, meta: dict[str, Any], attrs: dict[str, Any]) -> RootMetadata:
    """The root's years, arrays and depths from its metadata; any wrong shape raises (a DataError above)."""
    consolidated = meta.get("consolidated_metadata") or {}
    if not isinstance(consolidated, dict) or not isinstance(consolidated.get("metadata", {}), dict):
        raise DataError("its consolidated_metadata is not an object of nodes")
    nodes = consolidated.get("metadata", {})
    years = attrs.get(YEARS_ATTR, [])
    if not isinstance(years, list) or not all(isinstance(y, int) and not isinstance(y, bool) for y in years):
        raise DataError(f"{YEARS_ATTR} is {json.dumps(years)[:60]}, not a list of years")
    arrays: dict[tuple[int, str], ShardedArray] = {}
    for path, node in nodes.items():
        parts = path.split("/")
        if len(parts) == 2 and parts[0].startswith("utm") and (parts[1] == "scales" or is_embeddings_array(parts[1])):
            if not parts[0][3:].isdigit() or not 1 <= int(parts[0][3:]) <= 60:
                raise DataError(f"group {parts[0]!r} is not a UTM zone utm1..utm60")
            array = ShardedArray.from_metadata(f"{ZARR_DIR}/{path}", node)
            ndim = 3 if parts[1] == "scales" else 4  # (time, y, x) and (time, band, y, x)
            if len(array.shape) != ndim:
                raise DataError(f"{path} has {len(array.shape)} dimensions, expected {ndim}")
            arrays[(int(parts[0][3:]), parts[1])] = array
    # Matryoshka depths (TESSERA.md 5b): depth -> array; a store without the attribute has only all 128 dims
    depths = {int(d["dimensions"]): str(d["array"]) for d in attrs.get(DEPTHS_ATTR) or []}
    depths.setdefault(STORE_DIMS, "embeddings")
    return RootMetadata(url, attrs, [int(y) for y in years], str(attrs.get("geoemb:model", "")), arrays, depths)
