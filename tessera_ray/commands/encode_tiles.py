"""``tessera-ray encode-tiles``: encode tiles in the upstream npy layout, as upstream's scripts do.

Also ``python jobs/encode_tiles.py`` and ``ray job submit``.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("encode-tiles")
    def encode_tiles(
        tiles_dir: Path = typer.Argument(..., help="a tile folder, or a folder of tile folders (bands.npy, "
                                                   "masks.npy, doys.npy, sar_*.npy)"),
        checkpoint: str = typer.Option(..., "--checkpoint", help="encoder checkpoint of any family: path, https:// or s3://"),
        out: Path = typer.Option(..., "--out", help="folder for <tile>.npy (and <tile>_scales.npy)"),
        data_source: str | None = typer.Option(None, "--data-source",
                                                  help="aws|mpc: statistics of v1.1 checkpoints"),
        float_output: bool = typer.Option(False, "--float", help="write float32 <tile>.npy (H, W, D) alone"),
        dims: int | None = typer.Option(None, "--dims",
                                           help="Matryoshka families: write the K-prefix (int8 with its own scale)"),
        variant: str | None = typer.Option(None, "--variant", help="encoder variant, if the checkpoint does not say"),
        batch_size: int = typer.Option(1024, "--batch-size", help="pixels per device batch"),
        in_process: bool = typer.Option(False, "--in-process",
                                        help="no Ray: one encoder in this process, tile after tile (small jobs; "
                                             "same bytes as the pool)"),
        chunk_pixels: int = typer.Option(262144, "--chunk-pixels",
                                         help="pixels (whole rows of a tile) per read task and encoder request; "
                                              "bounds memory"),
        encoders: int = typer.Option(1, "--encoders", help="CPU encoder actors (on GPU clusters: one per GPU)"),
        encoder_threads: int = typer.Option(1, "--encoder-threads",
                                            help="torch threads (and CPUs) per CPU encoder actor"),
        max_in_flight: int = typer.Option(2, "--max-in-flight", help="chunks in flight per encoder actor"),
    ) -> None:
        """Encode every tile: <tile>.npy int8 (H, W, D) + <tile>_scales.npy float32 (H, W), or float32
        with --float. No-data pixels (no valid observation in either stream) are written as zeros with
        scale 0 (with --float: NaN).

        Tiles run on the encoder actor pool that embed uses: a local Ray is started, or, under
        `ray job submit` (RAY_ADDRESS set), the cluster's is joined (one actor per GPU, else --encoders
        CPU actors); on a cluster TILES_DIR and --out must be on a filesystem every node mounts at
        the same path. --in-process runs without Ray. Progress goes to stderr (a bar on a terminal).
        Outputs are written atomically; a re-run skips tiles already written; a tile with a missing
        or malformed file is reported in one line naming the file and the others still run (exit 5
        if any failed)."""
        from tessera_ray.paths import output_folder, removed_if_failed
        from tessera_ray.pipeline.embed import IncompleteRun
        from tessera_ray.pipeline.tiles import TileOutput, TilesConfig, find_tiles, run_encode_tiles

        out = output_folder(out)
        config = TilesConfig(checkpoint, TileOutput(out, float_output, dims), variant=variant,
                             data_source=data_source, batch_size=batch_size, chunk_pixels=chunk_pixels,
                             in_process=in_process, encoders=encoders, encoder_threads=encoder_threads,
                             max_in_flight=max_in_flight)
        tiles = find_tiles(tiles_dir)
        with removed_if_failed(out):
            result = run_encode_tiles(tiles, config)
        typer.echo(f"{result.written} tiles written, {result.skipped} already done, {len(result.failures)} failed "
                   f"-> {out} ({result.pixels:,} px in {result.seconds:.1f} s)")
        if result.failures:
            raise IncompleteRun(f"{len(result.failures)} of {len(tiles)} tiles failed (listed above); "
                                "re-run to retry them")
