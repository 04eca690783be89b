"""Encoding tiles in the upstream npy layout: a drop-in for upstream's inference scripts.

A tile is a folder of ``bands.npy``, ``masks.npy``, ``doys.npy``,
``sar_ascending.npy``, ``sar_ascending_doy.npy``, ``sar_descending.npy`` and
``sar_descending_doy.npy`` (TESSERA.md section 2; what ``ingest --format npy``
writes). Each is encoded with any family's inference rule and written as
upstream writes its outputs (TESSERA.md 4b, 4c):

- int8: ``<tile>.npy`` (H, W, D) int8 and ``<tile>_scales.npy`` (H, W) float32;
- ``float``: ``<tile>.npy`` (H, W, D) float32 alone;
- ``dims`` K (Matryoshka families): the K-prefix, int8 quantised with its own
  scale (upstream's ``infer_v2.py --dim K --int8``), or float.

No-data pixels are zeros with scale 0 (float: NaN). Files are written to a
temporary name and renamed, the scales first, so a tile whose ``<tile>.npy``
exists is complete and a re-run skips it.

Two ways to run, with the same bytes out:

* on the encoder actor pool (:func:`encode_tiles_on_pool`, the default of the
  command): the driver checks each tile's file headers, one Ray task per chunk
  of rows (``chunk_pixels``) reads it memory-mapped into a
  :class:`~tessera_ray.model.PixelSeries`, which goes by reference to the
  :class:`~tessera_ray.pipeline.encode.EncoderPool` that ``embed`` uses
  (``submit`` waits while every actor is full, so reads never run far ahead);
  one writer task per tile waits for its chunks' embeddings and writes the
  outputs. At most ``open_tiles`` tiles are between their first read and their
  write, so the object store holds that many tiles of embeddings whatever the
  number of tiles.
* in this process (:class:`TileEncoder`, ``--in-process``): one encoder, tile
  after tile, chunk after chunk, no Ray.

Both read the same chunks and post-process with the same code (:func:`finish`);
device batches are padded so that a pixel's embedding does not depend on its
company (:mod:`tessera_ray.model.inference`), so the outputs are byte-identical.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tessera_ray.atomic import atomic_file
from tessera_ray.cube import STACKS
from tessera_ray.errors import DataError, TesseraError, UserInputError, one_line, squash
from tessera_ray.model.inference import EncodedPixels, PixelSeries, assemble, runner_for

if TYPE_CHECKING:
    from tessera_ray.model.checkpoint import LoadedCheckpoint
    from tessera_ray.model.family import InferenceRule
    from tessera_ray.pipeline.encode import EncoderPool
    from tessera_ray.pipeline.progress import Progress

DEFAULT_CHUNK_PIXELS = 512 * 512
"""Pixels a read task (and one actor request) holds: whole rows of a tile, about this many."""

_PER_PIXEL = ("bands", "masks", "sar_ascending", "sar_descending")
_TRAILING = {"bands": (10,), "masks": (), "sar_ascending": (2,), "sar_descending": (2,)}
_FIELD_FILES = {"s2_bands": "bands", "s2_masks": "masks", "s2_doys": "doys", "sar_ascending": "sar_ascending",
                "sar_ascending_doys": "sar_ascending_doy", "sar_descending": "sar_descending",
                "sar_descending_doys": "sar_descending_doy"}
"""PixelSeries fields (in validation errors) -> the tile file they come from."""
_STEPS = {"bands": "doys", "masks": "doys", "sar_ascending": "sar_ascending_doy",
          "sar_descending": "sar_descending_doy"}


def find_tiles(root: str | os.PathLike[str]) -> list[Path]:
    """``root`` itself if it is a tile folder, else every tile folder under it (sorted)."""
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"{root} is not a folder")
    if (root / "bands.npy").is_file():
        return [root]
    tiles = sorted(p.parent for p in root.rglob("bands.npy"))
    if not tiles:
        raise UserInputError(f"{root} holds no tiles (folders with bands.npy, masks.npy, doys.npy, sar_*.npy)")
    return tiles


def open_tile(folder: Path) -> dict[str, np.ndarray]:
    """A tile's stacks, memory-mapped (nothing read but headers), their shapes checked against each other.

    A missing, truncated or mis-shaped file is a DataError naming it.
    """
    arrays = {}
    for name in STACKS:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise DataError(f"{path}: missing")
        try:
            arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({squash(exc)})") from None
    bands = arrays["bands"]
    if bands.ndim != 4 or bands.shape[3] != 10:
        raise DataError(f"{folder / 'bands.npy'}: shape {bands.shape}, expected (T, H, W, 10)")
    _, height, width, _ = bands.shape
    for name in _STEPS.values():
        if arrays[name].ndim != 1:
            raise DataError(f"{folder / f'{name}.npy'}: shape {arrays[name].shape}, expected (T,)")
    for name in _PER_PIXEL:
        steps = len(arrays[_STEPS[name]])
        want = (steps, height, width, *_TRAILING[name])
        if arrays[name].shape != want:
            raise DataError(f"{folder / f'{name}.npy'}: shape {arrays[name].shape}, expected "
                            f"{want} (as {_STEPS[name]}.npy and bands.npy say)")
    return arrays


def tile_shape(folder: Path) -> tuple[int, int]:
    """(H, W) of a tile whose files are all present and agree (else a DataError naming the file)."""
    _, height, width, _ = open_tile(folder)["bands"].shape
    return height, width


def read_tile(folder: Path, year: int = 0, start: int = 0, stop: int | None = None) -> PixelSeries:
    """Rows ``start:stop`` of a tile as pixel series (pixel rows keep their place in the tile).

    A missing, truncated or mis-shaped file is a DataError naming it.
    """
    folder = Path(folder)
    arrays = open_tile(folder)
    rows = slice(start, stop)
    try:
        return PixelSeries.from_block(
            block_id=str(folder), year=year, zone=0, row=start, col=0,
            **{name: np.ascontiguousarray(arrays[name][:, rows]) for name in _PER_PIXEL},
            **{name: np.array(arrays[name]) for name in set(_STEPS.values())},
        )
    except (ValueError, OSError) as exc:  # bytes missing behind a valid header
        raise DataError(f"{folder}: a file could not be read ({squash(exc)})") from None
    except UserInputError as exc:  # bad values (NaN, day of year): name the file
        message = str(exc)
        field = message.removeprefix(f"{folder}: ").split(" ", 1)[0]
        if field in _FIELD_FILES:
            message = f"{folder / f'{_FIELD_FILES[field]}.npy'}: {message.removeprefix(f'{folder}: ')}"
        raise DataError(message) from None


def chunk_rows(height: int, width: int, chunk_pixels: int = DEFAULT_CHUNK_PIXELS) -> list[tuple[int, int]]:
    """Row ranges of a tile, whole rows, about ``chunk_pixels`` pixels each (at least one row)."""
    step = max(1, chunk_pixels // max(1, width))
    return [(r, min(r + step, height)) for r in range(0, height, step)] or [(0, 0)]


@dataclass(frozen=True)
class TileOutput:
    """How tiles are written."""

    out: Path
    float_output: bool = False
    dims: int | None = None

    @property
    def raw(self) -> bool:
        """The encoder must hand over float embeddings (float output, or a prefix quantised on its own)."""
        return self.float_output or self.dims is not None

    def paths(self, tile: Path) -> tuple[Path, Path | None]:
        main = self.out / f"{tile.name}.npy"
        return main, None if self.float_output else self.out / f"{tile.name}_scales.npy"

    def done(self, tile: Path) -> bool:
        """The tile's outputs are complete (``<tile>.npy`` is renamed into place last)."""
        return self.paths(tile)[0].is_file()

    def check(self, config: Any) -> None:
        """``dims`` must be a Matryoshka prefix of the encoder ``config``."""
        from tessera_ray.model import matryoshka_depths

        depths = matryoshka_depths(config)
        if self.dims is not None and self.dims not in depths:
            raise UserInputError(
                f"--dims {self.dims}: {config.name} has no such Matryoshka prefix"
                + (f" (it has {', '.join(map(str, depths))})" if depths else
                   " (its family's dims are not ordered, so a prefix of them is not an embedding)")
            )


def concat(parts: list[EncodedPixels]) -> EncodedPixels:
    """A tile's chunks (in row order) as one."""
    if len(parts) == 1:
        return parts[0]
    return EncodedPixels(np.concatenate([p.embeddings for p in parts]), np.concatenate([p.scales for p in parts]))


def finish(encoded: EncodedPixels, output: TileOutput, rule: InferenceRule) -> tuple[np.ndarray, np.ndarray | None]:
    """From the encoder's per-pixel results to what is written: (N, D) codes or floats, (N,) scales or None.

    ``encoded`` is int8 with the family's scales, or (``output.raw``) float32
    with scale 1; either way scale NaN marks no data. Here no-data pixels keep
    scale NaN (float output: NaN values); :func:`save_tile` writes them as 0.
    """
    nodata = np.isnan(encoded.scales)
    if not output.raw:
        return encoded.embeddings, encoded.scales
    width = output.dims or rule.output_dims
    values = np.array(encoded.embeddings[:, :width], dtype=np.float32)
    if output.float_output:
        values[nodata] = np.nan
        return values, None
    q, scale = rule.quantise(torch.from_numpy(values))
    scales = scale.numpy().astype(np.float32)
    scales[nodata] = np.nan
    return q.numpy(), scales


def save_tile(output: TileOutput, tile: Path, values: np.ndarray, scales: np.ndarray | None,
              height: int, width: int) -> None:
    """Write one tile's outputs atomically, the scales first (``<tile>.npy`` last marks it done)."""
    main, scales_path = output.paths(tile)
    values = values.reshape(height, width, -1)
    if scales is not None:
        if not values.flags.writeable:  # straight from Ray's object store
            values = values.copy()
        nodata = ~np.isfinite(scales)
        scales = np.where(nodata, 0, scales).astype(np.float32).reshape(height, width)
        values[nodata.reshape(height, width)] = 0
        assert scales_path is not None  # int8 output: paths() names a scales file
        _save_atomically(scales_path, scales)
    _save_atomically(main, values)


def _save_atomically(path: Path, array: np.ndarray) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save would add .npy to a name
        np.save(fh, array, allow_pickle=False)


class TileEncoder:
    """One encoder (a checkpoint's family rule) in this process, applied to whole tiles in device batches."""

    def __init__(self, loaded: LoadedCheckpoint, data_source: str | None, output: TileOutput, batch_size: int = 1024,
                 chunk_pixels: int = DEFAULT_CHUNK_PIXELS) -> None:
        self.rule = loaded.rule(data_source)
        self.output = output
        output.check(loaded.config)
        self.chunk_pixels = chunk_pixels
        self.runner = runner_for(loaded.model, self.rule, device="cuda" if torch.cuda.is_available() else "cpu",
                                 batch_size=batch_size, raw=output.raw)

    def encode_pixels(self, pixels: PixelSeries) -> EncodedPixels:
        """What an encoder actor of the pool returns for ``pixels`` (same runner settings, same assembly)."""
        prepared = self.rule.prepare(pixels)
        results = [self.runner(g.s2, g.s1) for g in prepared.groups]
        return assemble(prepared, results, self.rule.output_dims, self.rule.min_scale,
                        np.float32 if self.runner.raw else np.int8)

    def encode(self, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) codes or floats and (N,) scales (None for float output) of one tile's pixels."""
        return finish(self.encode_pixels(pixels), self.output, self.rule)

    def write(self, tile: Path) -> bool:
        """Encode and write one tile; False if its outputs already exist."""
        if self.output.done(tile):
            return False
        height, width = tile_shape(tile)
        parts = [self.encode_pixels(read_tile(tile, start=a, stop=b))
                 for a, b in chunk_rows(height, width, self.chunk_pixels)]
        values, scales = finish(concat(parts), self.output, self.rule)
        save_tile(self.output, tile, values, scales, height, width)
        return True


@dataclass
class TilesResult:
    tiles: int = 0
    written: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    """One line per failed tile (naming the file when a file is at fault)."""
    pixels: int = 0
    seconds: float = 0.0


def _progress(progress: Progress | None) -> Progress:
    if progress is None:
        from tessera_ray.pipeline.progress import Progress

        progress = Progress(noun="tile")
    return progress


def encode_tiles(tiles: list[Path], encoder: TileEncoder, progress: Progress | None = None) -> TilesResult:
    """Every tile in turn, in this process; a failing tile is reported and the others still run."""
    progress = _progress(progress)
    started = time.monotonic()
    encoder.output.out.mkdir(parents=True, exist_ok=True)
    result = TilesResult(len(tiles))
    todo = [t for t in tiles if not encoder.output.done(t)]
    result.skipped = len(tiles) - len(todo)
    progress.start("encode-tiles", len(todo))
    try:
        for tile in todo:
            try:
                height, width = tile_shape(tile)
                encoder.write(tile)
            except TesseraError as exc:
                result.failures.append(squash(exc))
                progress.unit_failed(tile.name, result.failures[-1])
                continue
            result.written += 1
            result.pixels += height * width
            progress.unit_done(tile.name, height * width)
    finally:
        progress.close()
    result.seconds = time.monotonic() - started
    return result


# --------------------------------------------------------------------------- on the actor pool


def write_tile(
    output: TileOutput, rule: InferenceRule, tile: str, height: int, width: int, *encoded: EncodedPixels
) -> int:
    """The writer task: a tile's encoded chunks (row order) -> its outputs. Returns the tile's pixels."""
    values, scales = finish(concat(list(encoded)), output, rule)
    save_tile(output, Path(tile), values, scales, height, width)
    return height * width


def _read_chunk(tile: str, start: int, stop: int) -> PixelSeries:
    return read_tile(Path(tile), start=start, stop=stop)


def encode_tiles_on_pool(tiles: list[Path], output: TileOutput, rule: InferenceRule, pool: EncoderPool,
                         progress: Progress | None = None,
                         chunk_pixels: int = DEFAULT_CHUNK_PIXELS, task_cpus: float = 1.0,
                         open_tiles: int = 2) -> TilesResult:
    """Every tile through read tasks -> ``pool`` -> a writer task; never raises for a failing tile.

    ``rule`` is the checkpoint's inference rule (its int8 rule quantises a
    ``--dims`` prefix); the pool's actors must run that checkpoint, ``raw``
    when ``output.raw``. Tile and output paths must be the same on every node
    (local Ray, or a filesystem every node mounts at the same path).
    """
    import ray

    progress = _progress(progress)
    started = time.monotonic()
    output.out.mkdir(parents=True, exist_ok=True)
    result = TilesResult(len(tiles))
    todo = deque(t for t in tiles if not output.done(t))
    result.skipped = len(tiles) - len(todo)
    reader = ray.remote(_read_chunk).options(num_cpus=task_cpus)
    writer = ray.remote(write_tile).options(num_cpus=task_cpus)
    rule_ref = ray.put(rule)
    writes: dict[Any, tuple[Path, int]] = {}  # writer ref -> (tile, pixels)
    progress.start("encode-tiles", len(todo))

    def fail(tile: Path, reason: str) -> None:
        result.failures.append(reason)
        progress.unit_failed(tile.name, reason)

    try:
        while todo or writes:
            while todo and len(writes) < max(1, open_tiles):
                tile = todo.popleft()
                try:
                    height, width = tile_shape(tile)  # headers only: a broken file fails here, before any read
                except TesseraError as exc:
                    fail(tile, squash(exc))
                    continue
                encoded = [pool.submit(reader.remote(str(tile), a, b))
                           for a, b in chunk_rows(height, width, chunk_pixels)]
                ref = writer.remote(output, rule_ref, str(tile), height, width, *encoded)
                del encoded
                writes[ref] = (tile, height * width)
            if not writes:
                continue
            ready, _ = ray.wait(list(writes), num_returns=1, timeout=5.0)
            if not ready:
                pool.check()  # an encoder lost for longer than the pool waits: EncoderUnavailable, exit 3
            for ref in ready:
                tile, pixels = writes.pop(ref)
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - any failure fails only this tile
                    fail(tile, one_line(exc))
                    continue
                result.written += 1
                result.pixels += pixels
                progress.unit_done(tile.name, pixels)
    finally:
        progress.close()
    result.seconds = time.monotonic() - started
    return result


@dataclass(frozen=True)
class TilesConfig:
    """One ``encode-tiles`` run."""

    checkpoint: str
    output: TileOutput
    variant: str | None = None
    data_source: str | None = None
    batch_size: int = 1024
    chunk_pixels: int = DEFAULT_CHUNK_PIXELS
    in_process: bool = False
    """No Ray: one encoder in this process (small jobs, tests)."""
    encoders: int = 1
    """CPU encoder actors (a cluster with GPUs gets one actor per GPU)."""
    encoder_threads: int = 1
    max_in_flight: int = 2
    """Requests (chunks) in flight per actor."""
    open_tiles: int = 2

    def __post_init__(self) -> None:
        for name in ("batch_size", "chunk_pixels", "encoders", "encoder_threads", "max_in_flight", "open_tiles"):
            if getattr(self, name) < 1:
                raise UserInputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")


def _local_path(uri: str) -> str:
    """A local checkpoint path made absolute (actors may run in another folder); URIs unchanged."""
    return uri if "://" in uri else str(Path(uri).resolve())


def run_encode_tiles(tiles: list[Path], config: TilesConfig, progress: Progress | None = None) -> TilesResult:
    """Check the checkpoint and options, then encode ``tiles`` on the pool (or in this process).

    Starts a local Ray, or joins ``RAY_ADDRESS`` (``ray job submit``), only if a tile is left to do.
    """
    from tessera_ray.model import read_checkpoint

    loaded = read_checkpoint(config.checkpoint, config.variant)
    rule = loaded.rule(config.data_source)  # refuses a v1.1 without its data source, here, in one line
    config.output.check(loaded.config)
    if config.in_process:
        encoder = TileEncoder(loaded, config.data_source, config.output, config.batch_size, config.chunk_pixels)
        return encode_tiles(tiles, encoder, progress)
    del loaded
    tiles = [t.resolve() for t in tiles]
    output = TileOutput(config.output.out.resolve(), config.output.float_output, config.output.dims)
    if all(output.done(t) for t in tiles):  # nothing to do: no Ray
        return TilesResult(len(tiles), skipped=len(tiles))
    from tessera_ray.cluster import ray_session
    from tessera_ray.pipeline.driver import _task_cpus
    from tessera_ray.pipeline.encode import EncoderPool, EncoderSpec

    spec = EncoderSpec(_local_path(config.checkpoint), config.variant, data_source=config.data_source,
                       batch_size=config.batch_size, cpu_threads=config.encoder_threads, raw=output.raw)
    with ray_session(), EncoderPool(spec, num_actors=config.encoders, max_in_flight=config.max_in_flight) as pool:
        return encode_tiles_on_pool(tiles, output, rule, pool, progress, config.chunk_pixels,
                                    _task_cpus(pool, config.encoder_threads), config.open_tiles)
