"""Plan an embed job in the driver: configuration, units to do, scenes, estimates.

Nothing here starts Ray or writes to the output root, so ``--dry-run`` and
every check of the user's input (ROI, years, sizes, checkpoint, STAC) happen
before the first object is written.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING

from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit, load_roi, units_for_roi
from tessera_ray.landmask import DEFAULT_LAND_MASK, check_land_mask
from tessera_ray.pipeline.publishing import DEFAULT_EVERY_MINUTES, DEFAULT_EVERY_UNITS, DEFAULT_GROWTH
from tessera_ray.sources.scenes import S1, S2, Scene
from tessera_ray.store.layout import STORE_DIMS

if TYPE_CHECKING:
    import torch

    from tessera_ray.pipeline.blocks import SceneIndex

FIRST_YEAR = 2017
S2_INPUT_BYTES = 10 * 2 + 1
"""Bytes per pixel and Sentinel-2 scene decoded: ten uint16 bands and the SCL byte."""
S1_INPUT_BYTES = 2 * 4
"""Bytes per pixel and Sentinel-1 scene decoded: VV and VH float32."""
OUTPUT_BYTES = STORE_DIMS + 4
"""Bytes per pixel stored before compression: int8 embedding and float32 scale."""


@dataclass(frozen=True)
class EmbedConfig:
    """Everything one embed job needs; built from flags, then ``TESSERA_RAY_*``, then defaults."""

    roi: str
    years: tuple[int, ...]
    out: str
    """Root of the published store: a folder or ``s3://bucket/prefix``."""
    checkpoint: str
    variant: str | None = None
    data_source: str | None = None
    """aws|mpc: the statistics of a per-source variant (v1.1), if the checkpoint does not record it."""
    bf16: bool | None = None
    """bf16 autocast of the encoders; None: as upstream (v1 on GPUs, students never)."""
    stac: str | None = None
    s1_stac: str | None = None
    catalog: str | None = None
    catalog_root: str | None = None
    s2_collection: str = "sentinel-2-c1-l2a"
    unit_size: int = 4096
    """Pixels per side of a work unit, which is also the store's shard size."""
    chunk_size: int = 32
    block_size: int = 512
    """Pixels per side of a read task's block: bounds the memory of reads and encodes."""
    batch_size: int = 1024
    """Pixels per encoder device batch."""
    max_in_flight: int = 4
    """Read tasks submitted at once."""
    encoders: int = 1
    """CPU encoder actors when the cluster has no GPU."""
    encoder_threads: int = 1
    seed: int = 0
    dry_run: bool = False
    cache_dir: str | None = None
    created: str | None = None
    """Time written into part records; from ``SOURCE_DATE_EPOCH`` for reproducible re-runs."""
    depths: tuple[int, ...] | None = None
    """Matryoshka prefix arrays to write (``--depths 16,32,64``); None: those of an existing store, else none."""
    land: str = DEFAULT_LAND_MASK
    """Land mask of the plan (``tessera_ray.landmask``): units without land are not planned; "all" plans every unit."""
    piece: Piece | None = None
    """``--piece I/N``: this job embeds only the I-th of N pieces of the planned units."""
    publish_every_units: int = DEFAULT_EVERY_UNITS
    """Publish finished units into the manifest every this many units during the job (0: no unit bound)."""
    publish_every_minutes: float = DEFAULT_EVERY_MINUTES
    """... or every this many minutes, whichever comes first (0: no time bound); the job's end always publishes."""
    publish_growth: float = DEFAULT_GROWTH
    """The units bound grows with the manifest: at least this share of the units it holds (``--publish-growth``)."""

    def __post_init__(self) -> None:
        check_land_mask(self.land)
        this_year = datetime.now(UTC).year
        if not self.years:
            raise UserInputError("give at least one --year")
        for year in self.years:
            if not FIRST_YEAR <= year <= this_year:
                raise UserInputError(f"--year must be {FIRST_YEAR}..{this_year} (the Sentinel-2 L2A era), got {year}")
        for name in ("unit_size", "block_size", "batch_size", "max_in_flight", "encoders", "encoder_threads"):
            if getattr(self, name) <= 0:
                raise UserInputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("publish_every_units", "publish_every_minutes", "publish_growth"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise UserInputError(f"--{name.replace('_', '-')} must be 0 (off) or positive, got {value}")
        if self.unit_size % self.chunk_size:
            raise UserInputError(f"--unit-size must be a multiple of {self.chunk_size}, got {self.unit_size}")
        if self.catalog and (self.stac or self.s1_stac):
            raise UserInputError("give either --catalog or --stac/--s1-stac, not both")


def created_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) as an ISO 8601 UTC time."""
    value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    try:
        return datetime.fromtimestamp(int(value), UTC).isoformat(timespec="seconds")
    except (ValueError, OverflowError):
        raise UserInputError(f"SOURCE_DATE_EPOCH must be seconds since 1970, got {value!r}") from None


@dataclass(frozen=True)
class Piece:
    """The I-th (1-based) of N pieces of a plan: contiguous runs of its units in their stable order.

    Pieces of the same plan never overlap and leave no gap, whatever N, so a
    planet run splits into N jobs (``--piece 1/N`` ... ``--piece N/N``) that
    can run anywhere and publish into one root. The order is that of the land
    units of the ROI (zone, row, col), taken before published units are left
    out, so a piece is the same set on every run.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Piece:
        try:
            index, count = (int(p) for p in text.split("/"))
        except ValueError:
            raise UserInputError(f"--piece must be I/N (e.g. 3/10), got {text!r}") from None
        if not 1 <= index <= count:
            raise UserInputError(f"--piece I/N needs 1 <= I <= N, got {text!r}")
        return cls(index, count)

    def bounds(self, total: int) -> tuple[int, int]:
        """Start and stop of this piece among ``total`` ordered units."""
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def take(self, units: Sequence[Unit]) -> list[Unit]:
        start, stop = self.bounds(len(units))
        return list(units[start:stop])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class UnitPlan:
    """The units a job plans over its ROI: those holding land, of its piece."""

    units: tuple[Unit, ...]
    sea: int
    """Units of the ROI without land (never planned)."""
    land: str
    piece: Piece | None = None
    land_total: int = 0
    """Land units of the whole ROI (all pieces)."""


@dataclass(frozen=True)
class YearPlan:
    """The work of one year: units to embed, units already published, the scenes to read."""

    year: int
    units: tuple[Unit, ...]
    published: tuple[str, ...]
    scenes: tuple[Scene, ...] = ()
    no_scenes: tuple[str, ...] = ()
    """Units with no scene at all in the year: reported, never read (nothing to embed there yet)."""

    @cached_property
    def scene_index(self) -> SceneIndex:
        """The scenes by place (:class:`~tessera_ray.pipeline.blocks.SceneIndex`), built once per plan."""
        from tessera_ray.pipeline.blocks import SceneIndex

        return SceneIndex(self.scenes)

    @property
    def s2_scenes(self) -> int:
        return sum(s.kind == S2 for s in self.scenes)

    @property
    def s1_scenes(self) -> int:
        return sum(s.kind == S1 for s in self.scenes)

    @property
    def pixels(self) -> int:
        return sum(u.window.size for u in self.units)


def plan_units(roi: str, unit_size: int) -> list[Unit]:
    """The units covering a ROI on the fixed grid, in a stable order."""
    units = units_for_roi(load_roi(roi), unit_size)
    if not units:
        raise UserInputError(f"ROI {roi} covers no pixel of any zone grid")
    return sorted(units, key=lambda u: (u.zone, u.row, u.col))


def plan_land(units: Sequence[Unit], land: str, piece: Piece | None = None, roi: str = "the ROI") -> UnitPlan:
    """Leave out the units without land, then take the job's piece of the rest (order kept)."""
    from tessera_ray.landmask import units_with_land

    has_land = units_with_land(units, land)
    kept = [u for u, keep in zip(units, has_land) if keep]
    if not kept:
        raise UserInputError(f"{roi} holds no land on the {land} land mask ({len(units)} unit(s) of sea): "
                             "nothing to embed (--land all plans the sea too)")
    mine = piece.take(kept) if piece else kept
    return UnitPlan(tuple(mine), len(units) - len(kept), land, piece, len(kept))


def published_units(root: str, year: int) -> set[str]:
    """Unit ids in the year's manifest, without creating anything at ``root``."""
    from tessera_ray.store.manifest import published_unit_ids
    from tessera_ray.store.objects import open_objects

    return published_unit_ids(open_objects(root), year)


def search(config: EmbedConfig, units: Sequence[Unit], year: int) -> list[Scene]:
    """Every scene over the units in a year: one search per job and year (cached in ``cache_dir``)."""
    from tessera_ray.pipeline.blocks import search_bbox
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.scenes import OPERA_RTC, profile_for_collection
    from tessera_ray.sources.stac import SearchCache, search_scenes, year_range

    if not units:
        return []
    bbox = search_bbox(units)
    s2 = profile_for_collection(config.s2_collection, "s2")
    start, end = year_range(year)
    if config.catalog:
        found = [
            *search_catalog(config.catalog, s2, bbox, start, end, root=config.catalog_root),
            *search_catalog(config.catalog, OPERA_RTC, bbox, start, end, root=config.catalog_root),
        ]
    else:
        cache = SearchCache(config.cache_dir)
        found = [
            *search_scenes(s2, bbox, start, end, url=config.stac or s2.url, cache=cache),
            *search_scenes(
                OPERA_RTC, bbox, start, end, url=config.s1_stac or config.stac or OPERA_RTC.url, cache=cache
            ),
        ]
    return sorted(found, key=lambda s: s.sort_key)


def plan_year(config: EmbedConfig, units: Sequence[Unit], year: int) -> YearPlan:
    """Skip published units, then search scenes for the rest; no Sentinel-2 scene at all is an error.

    A unit that no scene touches is set aside (``no_scenes``): it is reported
    and not read, and a later run plans it again (a catalog may fill in).
    """
    from tessera_ray.pipeline.blocks import SceneIndex

    done = published_units(config.out, year)
    todo = tuple(u for u in units if u.id not in done)
    scenes = tuple(search(config, todo, year))
    if todo and not any(s.kind == S2 for s in scenes):
        raise UserInputError(f"no Sentinel-2 scenes over ROI {config.roi} in {year}: nothing to embed")
    index = SceneIndex(scenes)
    empty = {u.id for u in todo if not index.near(u.zone, u.window)}
    return YearPlan(year, tuple(u for u in todo if u.id not in empty),
                    tuple(sorted(u.id for u in units if u.id in done)), scenes, tuple(sorted(empty)))


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 over the encoder's weights (names and bytes), whatever file format held them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """What the driver learns from the checkpoint before any work starts."""

    variant: str
    checksum: str
    parameters: int = field(default=0)
    family: str = "v1"
    depths: tuple[int, ...] = ()
    """Matryoshka depths of the encoder family (e.g. (16, 32, 64, 128)); () when its dims are not ordered."""
    dims: int = STORE_DIMS
    """Width of the encoder's embedding (its family's ``output_dims``)."""
    data_source: str | None = None
    """The statistics' data source of the run (None where the family has one set)."""


def check_checkpoint(checkpoint: str, variant: str | None, data_source: str | None = None) -> ModelInfo:
    """Load the checkpoint once in the driver: a bad one, or a missing or contradicting
    ``--data-source``, fails before the store is touched."""
    from tessera_ray.model import matryoshka_depths, output_dims, parameter_count, read_checkpoint

    loaded = read_checkpoint(checkpoint, variant)
    source = loaded.data_source_for(data_source)
    loaded.rule(source)  # a per-source variant without a source fails here, in one line
    per_source = getattr(loaded.config, "per_source", False)
    return ModelInfo(loaded.config.name, weights_checksum(loaded.model), parameter_count(loaded.model),
                     family=loaded.config.family, depths=matryoshka_depths(loaded.config),
                     dims=output_dims(loaded.config),
                     data_source=source if per_source else None)


def parse_depths(text: str | None) -> tuple[int, ...] | None:
    """``--depths 16,32,64`` as a tuple (None when not given); a malformed list is a clear error."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        depths = tuple(sorted({int(p) for p in parts}))
    except ValueError:
        raise UserInputError(
            f"--depths must be a comma-separated list of integers such as 16,32,64, got {text!r}"
        ) from None
    if not depths:
        raise UserInputError("--depths is empty; give prefix depths such as 16,32,64")
    return depths


def check_depths(
    depths: tuple[int, ...], model: ModelInfo, checkpoint: str, asked_by: str = "--depths"
) -> tuple[int, ...]:
    """Prefix depths the model can write: each a Matryoshka depth of its family, below its full width.

    ``asked_by`` names who wants them in the error line (the flag, or an existing store).
    """
    if not depths:
        return ()
    if not model.depths:
        raise UserInputError(
            f"{asked_by} needs a Matryoshka encoder family (v2); {checkpoint} is a {model.variant} checkpoint, "
            "whose dims are not ordered, so a prefix of them is not an embedding"
        )
    prefixes = [k for k in model.depths if k < model.dims]
    for k in depths:
        if k not in prefixes:
            raise UserInputError(
                f"{asked_by}: {k} is not a Matryoshka prefix depth of {model.variant}; it has "
                f"{', '.join(map(str, prefixes))} (all {model.dims} dims are always written as embeddings)"
            )
    return tuple(depths)
