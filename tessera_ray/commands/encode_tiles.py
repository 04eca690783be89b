"""``tessera-ray encode-tiles``: encode tiles in the upstream npy layout, as upstream's scripts do."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("encode-tiles")
    def encode_tiles(
        tiles_dir: Path = typer.Argument(..., help="a tile folder, or a folder of tile folders (bands.npy, "
                                                   "masks.npy, doys.npy, sar_*.npy)"),
        checkpoint: str = typer.Option(..., "--checkpoint", help="encoder checkpoint of any family: path, https:// or s3://"),
        out: Path = typer.Option(..., "--out", help="folder for <tile>.npy (and <tile>_scales.npy)"),
        data_source: Optional[str] = typer.Option(None, "--data-source",
                                                  help="aws|mpc: statistics of v1.1 checkpoints"),
        float_output: bool = typer.Option(False, "--float", help="write float32 <tile>.npy (H, W, D) alone"),
        dims: Optional[int] = typer.Option(None, "--dims",
                                           help="Matryoshka families: write the K-prefix (int8 with its own scale)"),
        variant: Optional[str] = typer.Option(None, "--variant", help="encoder variant, if the checkpoint does not say"),
        batch_size: int = typer.Option(1024, "--batch-size", help="pixels per device batch"),
    ) -> None:
        """Encode every tile: <tile>.npy int8 (H, W, D) + <tile>_scales.npy float32 (H, W), or float32
        with --float. No-data pixels (no valid observation in either stream) are written as zeros with
        scale 0 (with --float: NaN). A re-run skips tiles already written; a tile with a missing or
        malformed file is reported in one line and the others still run (exit 5 if any failed)."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.model import read_checkpoint
        from tessera_ray.paths import output_folder, removed_if_failed
        from tessera_ray.pipeline.embed import IncompleteRun
        from tessera_ray.pipeline.tiles import TileEncoder, TileOutput, find_tiles
        from tessera_ray.pipeline.tiles import encode_tiles as run

        if batch_size < 1:
            raise UserInputError("--batch-size must be at least 1")
        out = output_folder(out)
        tiles = find_tiles(tiles_dir)
        encoder = TileEncoder(read_checkpoint(checkpoint, variant), data_source,
                              TileOutput(out, float_output, dims), batch_size)
        with removed_if_failed(out):
            written, skipped, failures = run(tiles, encoder, echo=typer.echo,
                                             warn=lambda line: print(line, file=sys.stderr))
        typer.echo(f"{written} tiles written, {skipped} already done, {len(failures)} failed -> {out}")
        if failures:
            raise IncompleteRun(f"{len(failures)} of {len(tiles)} tiles failed (listed above); re-run to retry them")
