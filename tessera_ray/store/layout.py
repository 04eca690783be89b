"""The Zarr v3 layout of the published store, built as pure data.

The store's metadata is a function of a few facts (layout, model, zones,
years), so it is rebuilt in memory with zarr itself and the resulting
documents are put one by one through :mod:`tessera_ray.store.objects`,
the root ``zarr.json`` (which carries the consolidated metadata) last.
Shards are encoded the same way: zarr writes one whole shard into an
in-memory store that holds the real array metadata, and its bytes become one
object. zarr never touches the object store directly, so every object there is
written exactly once, atomically, by one writer.

Layout (geotessera 0.11 ``GeoTesseraZarr`` reads it as is)::

    tessera.zarr/zarr.json                  root group, geoemb: attributes, consolidated metadata
    tessera.zarr/utm{NN}/zarr.json          proj:/spatial: attributes
    tessera.zarr/utm{NN}/embeddings         int8 (time, band, y, x), fill 0
    tessera.zarr/utm{NN}/scales             float32 (time, y, x), fill +inf
    tessera.zarr/utm{NN}/{time,band,x,y}    coordinates (years, band index, pixel centres)

A Matryoshka store (``StoreLayout.depths``, e.g. (16, 32, 64)) also holds, per
zone, ``embeddings_d{K}`` int8 (time, band_d{K}, y, x): the first K codes of
``embeddings``, byte for byte, on the same shard grid with inner chunks of
side :func:`depth_chunk_size` (about the bytes of a 128-band chunk), a
``band_d{K}`` coordinate, and the root attribute ``geoemb:depths``
(TESSERA.md 5b). ``scales`` is shared by every depth.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tessera_ray import code_version
from tessera_ray.errors import DataError
from tessera_ray.grid import RESOLUTION, ZONE_HEIGHT, ZONE_WIDTH, ZONE_X0, ZONE_Y0, zone_grid

if TYPE_CHECKING:
    from collections.abc import Iterable

    import zarr
    from zarr.core.array import ShardsConfigParam

    from tessera_ray.store.shards import ShardedArray

ZARR_DIR = "tessera.zarr"
STORE_DIMS = 128
"""Dims of every embedding a store holds (``geoemb:dimensions``; prefix arrays hold fewer)."""
COORD_CHUNK = 65536  # pixel-centre coordinates: 512 KB decoded, a few KB compressed (bitshuffle)
TIME_CHUNK = 64  # years per chunk of the time coordinate: appending a year rewrites one small chunk
LAYOUT_ATTR = "tessera_ray:layout"
YEARS_ATTR = "tessera_ray:years"
FIXED_OFFSETS_ATTR = "tessera_ray:fixed_offsets"  # array attribute: every inner chunk at a computable offset
ZONES_ATTR = "tessera_ray:zones"
DEPTHS_ATTR = "geoemb:depths"


def depth_array_name(depth: int) -> str:
    """The array holding the first ``depth`` dims of every embedding (``embeddings`` for all 128)."""
    return "embeddings" if int(depth) >= STORE_DIMS else f"embeddings_d{int(depth)}"


def depth_band_dim(depth: int) -> str:
    """Band dimension name of a depth's array: its own per depth, so xarray can open the zone group."""
    return "band" if int(depth) >= STORE_DIMS else f"band_d{int(depth)}"


def is_embeddings_array(name: str) -> bool:
    """``embeddings`` or one of its prefix arrays (the arrays with a band axis)."""
    return name == "embeddings" or (name.startswith("embeddings_d") and name[len("embeddings_d"):].isdigit())


def depths_attr(depths: tuple[int, ...]) -> list[dict[str, Any]]:
    """``geoemb:depths``: one entry per prefix depth, then always ``{128, "embeddings"}``."""
    return [{"dimensions": int(k), "array": depth_array_name(k)} for k in (*depths, STORE_DIMS)]


@dataclass(frozen=True)
class StoreLayout:
    """Shard and inner-chunk edge in pixels, and the codecs of the inner chunks.

    ``shard_size`` equals the unit size of the work grid: one unit, one shard.
    ``chunk_checksum`` appends a CRC32C to every inner chunk so that readers
    detect a corrupt chunk instead of decoding wrong numbers.
    ``index_location`` "start" puts each shard's chunk index at a known offset,
    so a reader fetches just the 16-byte entries it needs (a cold pixel then
    costs bytes, not the 256 KB index of a 4096/32 shard); "end" is zarr's
    default. Both are standard Zarr v3 sharding and read by zarr and geotessera.

    ``compression`` "none" stores the embeddings and scales chunks as raw
    bytes (+ CRC32C) and writes every inner chunk of a shard, fill chunks
    too, in C order after the index: a chunk's offset is then
    ``index_nbytes + n * chunk_nbytes``, known from the metadata alone, so a
    cold pixel costs one request per array instead of two (index entry, then
    chunk). The arrays say so in their ``tessera_ray:fixed_offsets``
    attribute; other readers still go through the index. "zstd" is Blosc-zstd
    with only the non-fill chunks stored. Trade-off measured by
    ``jobs/bench_read.py`` (docs/store.md): a cold pixel costs 2 requests in 1
    round trip instead of 4 in 2; storage is +17% on embeddings of the
    synthetic world from the tiny model (raw/zstd 1.17 for embeddings, 1.55
    for scales; +1% on random int8), as int8 embeddings compress little. A
    mostly empty shard is written sparse (at most 1.5x its data chunks).
    """

    shard_size: int = 4096
    chunk_size: int = 32
    clevel: int = 3
    chunk_checksum: bool = True
    index_location: str = "start"
    compression: str = "none"
    depths: tuple[int, ...] = ()
    """Matryoshka prefix depths stored beside ``embeddings`` (each 1..127), e.g. (16, 32, 64); () for v1."""

    def __post_init__(self) -> None:
        depths = tuple(sorted({int(k) for k in self.depths}))
        if depths and not (1 <= depths[0] and depths[-1] < STORE_DIMS):
            raise ValueError(f"depths must be 1..{STORE_DIMS - 1} (all {STORE_DIMS} dims are always stored), "
                             f"got {list(depths)}")
        object.__setattr__(self, "depths", depths)
        if self.compression not in ("zstd", "none"):
            raise ValueError(f"compression must be zstd or none, not {self.compression!r}")
        if self.index_location not in ("start", "end"):
            raise ValueError(f"index_location must be start or end, not {self.index_location!r}")
        if self.shard_size % self.chunk_size:
            raise ValueError(f"shard size {self.shard_size} is not a multiple of chunk size {self.chunk_size}")
        if ZONE_WIDTH % self.shard_size or ZONE_HEIGHT % self.shard_size:
            raise ValueError(f"shard size {self.shard_size} does not divide the zone grid")

    def as_dict(self) -> dict[str, Any]:
        return {
            "shard_size": self.shard_size,
            "chunk_size": self.chunk_size,
            "clevel": self.clevel,
            "chunk_checksum": self.chunk_checksum,
            "index_location": self.index_location,
            "compression": self.compression,
            **({"depths": list(self.depths)} if self.depths else {}),
        }

    def depth_chunk_size(self, depth: int) -> int:
        """Inner chunk side of a depth's array: the largest power-of-two multiple of ``chunk_size`` that
        fits in the shard with ``depth * side**2 <= 128 * chunk_size**2`` bytes (32-px chunks: K=16 or 32
        -> 64, K=64 -> 32, K=4 -> 128), so every depth's chunks cost about what a 128-band chunk does."""
        budget, side = STORE_DIMS * self.chunk_size**2, self.chunk_size
        while self.shard_size % (2 * side) == 0 and depth * (2 * side) ** 2 <= budget:
            side *= 2
        return side

    @property
    def fixed_offsets(self) -> bool:
        """Whether every inner chunk lies at an offset computable from the metadata (see class doc)."""
        return self.compression == "none" and self.chunk_checksum and self.index_location == "start"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreLayout:
        return cls(
            int(d["shard_size"]), int(d["chunk_size"]), int(d["clevel"]), bool(d["chunk_checksum"]),
            str(d.get("index_location", "end")), str(d.get("compression", "zstd")),
            tuple(int(k) for k in d.get("depths", ())),
        )


@dataclass(frozen=True)
class StoreState:
    """Everything the metadata of a store depends on."""

    layout: StoreLayout
    model: str
    years: tuple[int, ...] = ()
    zones: tuple[int, ...] = ()

    def adding(self, year: int | None = None, zones: Iterable[int] = ()) -> StoreState:
        """This state with ``year`` appended to the time axis (if new) and ``zones`` added.

        Years are only ever appended: a year's index on the time axis, which
        its shard keys carry, never changes once it is there.
        """
        years = self.years if year is None or int(year) in self.years else (*self.years, int(year))
        all_zones = tuple(sorted(set(self.zones) | {int(z) for z in zones}))
        return StoreState(self.layout, self.model, years, all_zones)

    def root_attrs(self) -> dict[str, Any]:
        depths = {DEPTHS_ATTR: depths_attr(self.layout.depths)} if self.layout.depths else {}
        return {
            "geoemb:type": "pixel",
            "geoemb:dimensions": STORE_DIMS,
            "geoemb:model": self.model,
            "geoemb:data_type": "int8",
            "geoemb:gsd": RESOLUTION,
            "geoemb:spatial_layout": "utm_zones",
            "geoemb:build_version": f"tessera-ray {code_version()}",
            # no land mask is applied: every pixel of an emitted unit is encoded (water included)
            "geoemb:landmask": False,
            "geoemb:quantization": {
                "method": "per_pixel_scale",
                "original_dtype": "float32",
                "quantized_dtype": "int8",
                "scale": {"type": "array", "array_name": "scales", "nodata": "+inf"},
            },
            **depths,
            LAYOUT_ATTR: self.layout.as_dict(),
            YEARS_ATTR: list(self.years),
            ZONES_ATTR: list(self.zones),
        }


def zone_attrs(zone: int) -> dict[str, Any]:
    """``proj:``/``spatial:`` attributes of a zone group."""
    grid = zone_grid(zone)
    xmin, ymin, xmax, ymax = grid.window_bounds(grid.full_window)
    return {
        "proj:code": grid.crs,
        "spatial:dimensions": ["y", "x"],
        "spatial:transform_type": "affine",
        "spatial:transform": [RESOLUTION, 0.0, ZONE_X0, 0.0, -RESOLUTION, ZONE_Y0],
        "spatial:bbox": [xmin, ymin, xmax, ymax],
        "spatial:shape": [ZONE_HEIGHT, ZONE_WIDTH],
        "spatial:registration": "pixel",
    }


def _compressors(layout: StoreLayout, shuffle: Literal["noshuffle", "shuffle", "bitshuffle"],
                 data: bool = False) -> list[Any]:
    """Chunk codecs after ``bytes``; coordinates are always compressed, data arrays per the layout."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    codecs: list[Any] = []
    if not (data and layout.compression == "none"):
        codecs.append(BloscCodec(cname="zstd", clevel=layout.clevel, shuffle=shuffle))
    if layout.chunk_checksum:
        codecs.append(Crc32cCodec())
    return codecs


def _shards(layout: StoreLayout, shape: tuple[int, ...]) -> ShardsConfigParam:
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    return {"shape": shape, "index_location": ShardingCodecIndexLocation(layout.index_location)}


def _create_data_arrays(group: zarr.Group, layout: StoreLayout, n_years: int) -> None:
    s, c = layout.shard_size, layout.chunk_size
    attrs: dict[str, Any] = {FIXED_OFFSETS_ATTR: True} if layout.fixed_offsets else {}
    for depth in (*layout.depths, STORE_DIMS):  # prefix arrays: same shard grid, chunks of about the same bytes
        side = c if depth == STORE_DIMS else layout.depth_chunk_size(depth)
        group.create_array(
            depth_array_name(depth),
            shape=(n_years, depth, ZONE_HEIGHT, ZONE_WIDTH),
            chunks=(1, depth, side, side),
            shards=_shards(layout, (1, depth, s, s)),
            dtype="int8",
            fill_value=0,
            compressors=_compressors(layout, "noshuffle", data=True),
            dimension_names=["time", depth_band_dim(depth), "y", "x"],
            attributes=attrs,
            overwrite=True,
        )
    group.create_array(
        "scales",
        shape=(n_years, ZONE_HEIGHT, ZONE_WIDTH),
        chunks=(1, c, c),
        shards=_shards(layout, (1, s, s)),
        dtype="float32",
        fill_value=np.float32("inf"),
        compressors=_compressors(layout, "shuffle", data=True),
        dimension_names=["time", "y", "x"],
        attributes=attrs,
        overwrite=True,
    )


def _coord(group: zarr.Group, name: str, values: np.ndarray, chunk: int, layout: StoreLayout, write: bool) -> None:
    """A coordinate array; its chunks only when ``write`` (they never change once written)."""
    arr = group.create_array(
        name,
        shape=values.shape,
        chunks=(chunk,),
        dtype=values.dtype,
        fill_value=0,
        compressors=_compressors(layout, "bitshuffle"),
        dimension_names=[name],
        overwrite=True,
    )
    if write:
        arr[:] = values


@lru_cache(maxsize=1)
def zone_coordinates() -> dict[str, np.ndarray]:
    """Pixel-centre coordinates of the fixed zone grid (the same in every zone)."""
    coords = {
        "x": ZONE_X0 + (np.arange(ZONE_WIDTH, dtype="float64") + 0.5) * RESOLUTION,
        "y": ZONE_Y0 - (np.arange(ZONE_HEIGHT, dtype="float64") + 0.5) * RESOLUTION,
        "band": np.arange(STORE_DIMS, dtype="int32"),
    }
    for values in coords.values():
        values.setflags(write=False)
    return coords


def metadata_objects(state: StoreState, new_zones: tuple[int, ...] = ()) -> tuple[dict[str, bytes], bytes]:
    """All metadata objects of a store, keyed under ``tessera.zarr/``.

    Returns ``(objects, root)``: every document and the time chunks, plus the
    coordinate chunks of ``new_zones`` (written once per zone, never changed);
    and the root ``zarr.json`` with the consolidated metadata, to be put last.
    """
    import zarr
    from zarr.storage import MemoryStore

    docs: dict[str, Any] = {}
    mem = MemoryStore(store_dict=docs)
    root = zarr.create_group(store=mem, zarr_format=3, attributes=state.root_attrs())
    coords = zone_coordinates()
    for zone in state.zones:
        group = root.create_group(zone_grid(zone).name, attributes=zone_attrs(zone))
        _create_data_arrays(group, state.layout, len(state.years))
        fresh = zone in new_zones
        tarr = group.create_array(
            "time", shape=(len(state.years),), chunks=(TIME_CHUNK,), dtype="int32",
            fill_value=0, dimension_names=["time"], overwrite=True, compressors=None,
        )
        if state.years:
            tarr[:] = np.asarray(state.years, "int32")
        _coord(group, "band", coords["band"], STORE_DIMS, state.layout, fresh)
        for depth in state.layout.depths:
            _coord(group, depth_band_dim(depth), coords["band"][:depth], depth, state.layout, fresh)
        _coord(group, "x", coords["x"], COORD_CHUNK, state.layout, fresh)
        _coord(group, "y", coords["y"], COORD_CHUNK, state.layout, fresh)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(mem)
    out = {f"{ZARR_DIR}/{k}": v.to_bytes() for k, v in docs.items()}
    root_doc = out.pop(f"{ZARR_DIR}/zarr.json")
    return out, root_doc


def parse_root(doc: bytes) -> StoreState:
    """The state recorded in a root ``zarr.json``."""
    meta = json.loads(doc)
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or LAYOUT_ATTR not in attrs:
        raise KeyError("not a tessera-ray store")
    try:
        return StoreState(
            layout=StoreLayout.from_dict(attrs[LAYOUT_ATTR]),
            model=str(attrs.get("geoemb:model", "")),
            years=tuple(int(y) for y in attrs.get(YEARS_ATTR, [])),
            zones=tuple(int(z) for z in attrs.get(ZONES_ATTR, [])),
        )
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise DataError(f"its tessera-ray attributes are malformed ({detail})") from None


def shard_key(zone: int, array: str, t: int, shard_row: int, shard_col: int) -> str:
    """Object key of one shard (default chunk key encoding ``c/...`` with ``/``)."""
    name = zone_grid(zone).name
    if is_embeddings_array(array):  # one shard across the band axis
        return f"{ZARR_DIR}/{name}/{array}/c/{t}/0/{shard_row}/{shard_col}"
    return f"{ZARR_DIR}/{name}/{array}/c/{t}/{shard_row}/{shard_col}"


@lru_cache(maxsize=32)
def _array_metadata(layout: StoreLayout, n_years: int) -> dict[str, dict[str, Any]]:
    """``zarr.json`` of the data arrays (embeddings, its prefixes, scales), as zarr itself writes them."""
    import zarr
    from zarr.storage import MemoryStore

    docs: dict[str, Any] = {}
    group = zarr.create_group(store=MemoryStore(store_dict=docs), zarr_format=3)
    _create_data_arrays(group, layout, n_years)
    names = [depth_array_name(k) for k in (*layout.depths, STORE_DIMS)] + ["scales"]
    return {name: json.loads(docs[f"{name}/zarr.json"].to_bytes()) for name in names}


def sharded_arrays(layout: StoreLayout, zone: int, n_years: int) -> dict[str, ShardedArray]:
    """The data arrays of a zone (embeddings, its prefixes, scales), for encoding and decoding shards."""
    from tessera_ray.store.shards import ShardedArray

    meta = _array_metadata(layout, n_years)
    return {name: ShardedArray.from_metadata(f"{ZARR_DIR}/{zone_grid(zone).name}/{name}", meta[name]) for name in meta}


def encode_unit_shards(
    state: StoreState,
    zone: int,
    t: int,
    shard_row: int,
    shard_col: int,
    embeddings: np.ndarray,
    scales: np.ndarray,
    offset: tuple[int, int] = (0, 0),
) -> dict[str, bytes]:
    """Encode the shards of one unit and year to bytes: embeddings, each prefix depth, scales.

    ``embeddings`` (H, W, 128) int8 and ``scales`` (H, W) float32 may cover a
    sub-window of the unit starting at ``offset`` (row, col) inside it; the
    rest of the shard stays at the fill values (0, +inf = not processed).
    Inner chunks that are entirely fill are left out of the shard (except
    with fixed offsets, where every chunk is written), and a shard that would
    hold nothing is not written at all. An embeddings chunk (any depth) that
    covers a pixel with a finite scale is always stored, even if its codes are
    all 0, so a reader can tell a lost chunk from a legitimately empty one.
    A prefix array ``embeddings_d{K}`` gets exactly the first K codes.
    """
    arrays = sharded_arrays(state.layout, zone, t + 1)
    r, c = offset
    bands = np.moveaxis(embeddings, -1, 0)[None]
    blocks: dict[str, tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]] = {
        depth_array_name(k): (bands[:, :k], (0, 0, r, c), (t, 0, shard_row, shard_col))
        for k in (*state.layout.depths, STORE_DIMS)
    }
    blocks["scales"] = (scales[None], (0, r, c), (t, shard_row, shard_col))
    valid = np.isfinite(scales)
    out = {}
    for name, (block, origin, coords) in blocks.items():
        keep = _chunks_covering(valid, offset, arrays[name]) if name != "scales" else ()
        data = arrays[name].encode_shard(block, origin, dense=state.layout.fixed_offsets, keep=keep)
        if data is not None:
            out[arrays[name].shard_key(coords)] = data
    return out


def _chunks_covering(mask: np.ndarray, offset: tuple[int, int], arr: ShardedArray) -> list[int]:
    """Numbers of the array's inner chunks (in its shard) holding a True pixel of ``mask`` placed at ``offset``."""
    if not mask.any():
        return []
    size, side = arr.shard_shape[-1], arr.chunk_shape[-1]
    full = np.zeros((size, size), bool)
    full[offset[0] : offset[0] + mask.shape[0], offset[1] : offset[1] + mask.shape[1]] = mask
    return np.flatnonzero(full.reshape(size // side, side, size // side, side).any(axis=(1, 3))).tolist()
