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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tessera_ray.cube import STACKS
from tessera_ray.errors import DataError, TesseraError, UserInputError
from tessera_ray.model.inference import PixelSeries, assemble, runner_for


def find_tiles(root: str | os.PathLike) -> list[Path]:
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


def read_tile(folder: Path, year: int = 0) -> PixelSeries:
    """A tile's stacks as pixel series; a missing, truncated or mis-shaped file is a DataError naming it."""
    arrays = {}
    for name in STACKS:
        path = folder / f"{name}.npy"
        if not path.is_file():
            raise DataError(f"{path}: missing")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({' '.join(str(exc).split())})") from None
    bands = arrays["bands"]
    if bands.ndim != 4:
        raise DataError(f"{folder / 'bands.npy'}: shape {bands.shape}, expected (T, H, W, 10)")
    try:
        return PixelSeries.from_block(
            block_id=str(folder), year=year, zone=0, row=0, col=0, bands=bands, masks=arrays["masks"],
            doys=arrays["doys"], sar_ascending=arrays["sar_ascending"],
            sar_ascending_doy=arrays["sar_ascending_doy"], sar_descending=arrays["sar_descending"],
            sar_descending_doy=arrays["sar_descending_doy"],
        )
    except UserInputError as exc:
        raise DataError(str(exc)) from None


@dataclass(frozen=True)
class TileOutput:
    """How tiles are written."""

    out: Path
    float_output: bool = False
    dims: int | None = None

    def paths(self, tile: Path) -> tuple[Path, Path | None]:
        main = self.out / f"{tile.name}.npy"
        return main, None if self.float_output else self.out / f"{tile.name}_scales.npy"


class TileEncoder:
    """One encoder (a checkpoint's family rule) applied to whole tiles, in device batches."""

    def __init__(self, loaded, data_source: str | None, output: TileOutput, batch_size: int = 1024) -> None:
        from tessera_ray.model import matryoshka_depths

        self.rule = loaded.rule(data_source)
        self.output = output
        depths = matryoshka_depths(loaded.config)
        if output.dims is not None and output.dims not in depths:
            raise UserInputError(
                f"--dims {output.dims}: {loaded.config.name} has no such Matryoshka prefix"
                + (f" (it has {', '.join(map(str, depths))})" if depths else
                   " (its family's dims are not ordered, so a prefix of them is not an embedding)")
            )
        raw = output.float_output or output.dims is not None
        self.runner = runner_for(loaded.model, self.rule, device="cuda" if torch.cuda.is_available() else "cpu",
                                 batch_size=batch_size, raw=raw)

    def encode(self, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) codes or floats and (N,) scales (None for float output) of one tile's pixels."""
        prepared = self.rule.prepare(pixels)
        results = [self.runner(g.s2, g.s1) for g in prepared.groups]
        if not self.runner.raw:
            encoded = assemble(prepared, results, self.rule.output_dims, self.rule.min_scale)
            return encoded.embeddings, encoded.scales
        width = self.output.dims or self.rule.output_dims
        values = np.zeros((prepared.count, self.rule.output_dims), np.float32)
        for group, (e, _) in zip(prepared.groups, results, strict=True):
            values[group.pixels] = e
        values = values[:, :width]
        if self.output.float_output:
            values[prepared.nodata] = np.nan
            return values, None
        q, scale = self.rule.quantise(torch.from_numpy(values))
        scales = scale.numpy().astype(np.float32)
        scales[prepared.nodata] = np.nan
        return q.numpy(), scales

    def write(self, tile: Path) -> bool:
        """Encode and write one tile; False if its outputs already exist."""
        main, scales_path = self.output.paths(tile)
        if main.is_file():
            return False
        pixels = read_tile(tile)
        _, height, width, _ = np.load(tile / "bands.npy", mmap_mode="r").shape
        values, scales = self.encode(pixels)
        values = values.reshape(height, width, -1)
        if scales is not None:
            nodata = ~np.isfinite(scales)
            scales = np.where(nodata, 0, scales).astype(np.float32).reshape(height, width)
            values[nodata.reshape(height, width)] = 0
            _save_atomically(scales_path, scales)
        _save_atomically(main, values)
        return True


def _save_atomically(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def encode_tiles(tiles: list[Path], encoder: TileEncoder, echo=print, warn=print) -> tuple[int, int, list[str]]:
    """Every tile in turn: (written, skipped, failures as one line each)."""
    encoder.output.out.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    failures = []
    for i, tile in enumerate(tiles, 1):
        try:
            if encoder.write(tile):
                written += 1
                echo(f"[{i}/{len(tiles)}] {tile.name}: written")
            else:
                skipped += 1
                echo(f"[{i}/{len(tiles)}] {tile.name}: already done, skipped")
        except TesseraError as exc:
            failures.append(" ".join(str(exc).split()))
            warn(f"tessera-ray: error: {failures[-1]}")
    return written, skipped, failures
