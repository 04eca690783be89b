"""``tessera-ray embed``: the embed job (also ``python jobs/embed.py`` and ``ray job submit``).

Every option can also come from ``TESSERA_RAY_<OPTION>`` (flags win, then the
environment, then the defaults).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tessera_ray.pipeline.publishing import DEFAULT_EVERY_MINUTES, DEFAULT_EVERY_UNITS, DEFAULT_GROWTH
from tessera_ray.pipeline.sizing import GPU_PX_PER_S


def _env(name: str) -> str:
    return f"TESSERA_RAY_{name.upper()}"


def _beside(given: str | None, default: str) -> str | None:
    """The file given, else ``default`` in the working directory if it is there (a checkout), else None."""
    if given is not None:
        return given
    return default if Path(default).is_file() else None


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed(
        roi: str = typer.Option(..., "--roi", envvar=_env("roi"), help="bbox W,S,E,N or a vector file (any CRS)"),
        year: list[int] = typer.Option(..., "--year", envvar=_env("year"), help="year to embed; repeat for several"),
        out: str = typer.Option(..., "--out", envvar=_env("out"), help="root to publish to: a folder or s3://bucket/prefix"),
        checkpoint: str = typer.Option(..., "--checkpoint", envvar=_env("checkpoint"),
                                       help="encoder checkpoint: path, https:// or s3:// URI"),
        variant: str | None = typer.Option(None, "--variant", envvar=_env("variant"),
                                              help="encoder variant, if the checkpoint does not say"),
        data_source: str | None = typer.Option(None, "--data-source", envvar=_env("data_source"),
                                                  help="aws|mpc: statistics of v1.1 checkpoints (ours: Earth "
                                                       "Search + OPERA = aws); required for v1.1 unless the "
                                                       "checkpoint records it"),
        bf16: bool | None = typer.Option(None, "--bf16/--fp32", envvar=_env("bf16"),
                                            help="bf16 autocast of the encoder (default: as upstream runs the "
                                                 "model: v1 in bf16 on GPUs, v2 students in fp32)"),
        stac: str | None = typer.Option(None, "--stac", envvar=_env("stac"),
                                           help="STAC API for Sentinel-2 (default: Earth Search)"),
        s1_stac: str | None = typer.Option(None, "--s1-stac", envvar=_env("s1_stac"),
                                              help="STAC API for Sentinel-1 (default: --stac, else CMR-STAC)"),
        catalog: str | None = typer.Option(None, "--catalog", envvar=_env("catalog"),
                                              help="stac-geoparquet snapshot to search instead of STAC APIs"),
        catalog_root: str | None = typer.Option(None, "--catalog-root", envvar=_env("catalog_root"),
                                                   help="base of the snapshot's relative hrefs"),
        unit_size: int = typer.Option(4096, "--unit-size", envvar=_env("unit_size"),
                                      help="work unit = store shard, pixels per side"),
        block_size: int = typer.Option(512, "--block-size", envvar=_env("block_size"),
                                       help="pixels per side of a read block (bounds task memory)"),
        batch_size: int = typer.Option(1024, "--batch-size", envvar=_env("batch_size"),
                                       help="pixels per encoder device batch"),
        max_in_flight: int = typer.Option(4, "--max-in-flight", envvar=_env("max_in_flight"),
                                          help="read tasks submitted at once"),
        encoders: int = typer.Option(1, "--encoders", envvar=_env("encoders"),
                                     help="CPU encoder actors (on GPU clusters: one per GPU)"),
        encoder_threads: int = typer.Option(1, "--encoder-threads", envvar=_env("encoder_threads"),
                                            help="torch threads (and CPUs) per CPU encoder actor"),
        seed: int = typer.Option(0, "--seed", envvar=_env("seed"), help="seed of the temporal sampling"),
        cache_dir: str | None = typer.Option(None, "--cache-dir", envvar=_env("cache_dir"),
                                                help="keep STAC search results here between runs"),
        depths: str | None = typer.Option(None, "--depths", envvar=_env("depths"),
                                             help="Matryoshka prefix arrays to write beside the 128 dims, e.g. "
                                                  "16,32,64 (v2 families only; default: an existing store's)"),
        land: str = typer.Option("osm+gshhg", "--land", envvar=_env("land"),
                                 help="land mask: osm+gshhg|osm|gshhg plan only units with land of those "
                                      "coastlines within 2 km; all plans every unit, sea included"),
        piece: str | None = typer.Option(None, "--piece", envvar=_env("piece"),
                                            help="I/N: embed only the I-th of N pieces of the planned land units "
                                                 "(no overlap, no gap: N jobs with 1/N..N/N cover the ROI once)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (land units, scenes, requests, bytes, "
                                                                "hours, cost) and stop"),
        prices: str | None = typer.Option(None, "--prices", envvar=_env("prices"),
                                             help="price table for --dry-run's cost "
                                                  "(default: ./prices.yaml if present)"),
        cluster: str | None = typer.Option(None, "--cluster", envvar=_env("cluster"),
                                              help="Ray autoscaler config whose node types --dry-run prices "
                                                   "(default: ./cluster.yaml if present)"),
        gpu_px_per_s: float = typer.Option(GPU_PX_PER_S, "--gpu-px-per-s", envvar=_env("gpu_px_per_s"),
                                           help="encoder speed per GPU that --dry-run assumes"),
        publish_every_units: int = typer.Option(DEFAULT_EVERY_UNITS, "--publish-every-units",
                                                envvar=_env("publish_every_units"),
                                                help="publish finished units into the year's manifest every N "
                                                     "units during the job (0: no unit bound)"),
        publish_growth: float = typer.Option(DEFAULT_GROWTH, "--publish-growth", envvar=_env("publish_growth"),
                                             help="... or, when more, every F x the units already published "
                                                  "(a publish rewrites the manifest; 0: every N units)"),
        publish_every_minutes: float = typer.Option(DEFAULT_EVERY_MINUTES, "--publish-every-minutes",
                                                    envvar=_env("publish_every_minutes"),
                                                    help="... or every M minutes, whichever comes first (0: no "
                                                         "time bound); the end of the job always publishes"),
    ) -> None:
        """Embed a ROI for one or more years and publish it (resumes: published units are skipped)."""
        from tessera_ray.paths import check_url, is_url, output_folder
        from tessera_ray.pipeline.embed import check_complete, run_embed, summary
        from tessera_ray.pipeline.plan import EmbedConfig, Piece, created_from_env, parse_depths
        from tessera_ray.pipeline.sizing import SizingInputs

        if is_url(out):
            check_url(out, "--out")
        elif not dry_run:
            output_folder(out)
        if cache_dir is not None:
            output_folder(cache_dir, "--cache-dir")

        config = EmbedConfig(
            roi=roi, years=tuple(year), out=out, checkpoint=checkpoint, variant=variant, data_source=data_source,
            bf16=bf16, stac=stac, s1_stac=s1_stac,
            catalog=catalog, catalog_root=catalog_root, unit_size=unit_size, block_size=block_size,
            batch_size=batch_size, max_in_flight=max_in_flight, encoders=encoders, encoder_threads=encoder_threads,
            seed=seed, dry_run=dry_run, cache_dir=cache_dir, created=created_from_env(), depths=parse_depths(depths),
            land=land, piece=Piece.parse(piece) if piece else None,
            publish_every_units=publish_every_units, publish_every_minutes=publish_every_minutes,
            publish_growth=publish_growth,
        )
        sizing = None
        if dry_run:
            sizing = SizingInputs.load(_beside(prices, "prices.yaml"), _beside(cluster, "cluster.yaml"), gpu_px_per_s)
        result = run_embed(config, echo=typer.echo, sizing=sizing)
        if not dry_run:
            typer.echo(summary(result))
            check_complete(result)
