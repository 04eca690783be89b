"""``tessera-ray ingest``: STAC search + COG reads -> per-unit annual time series (upstream npy layout)."""

from __future__ import annotations

import sys
from datetime import UTC
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest(
        roi: str = typer.Option(..., "--roi", help="bbox W,S,E,N or a vector file"),
        year: int = typer.Option(..., "--year", help="year of the time series (2017..this year)"),
        out: Path = typer.Option(..., "--out", help="folder to write one sub-folder per unit into"),
        stac: str = typer.Option(None, "--stac", help="STAC API for Sentinel-2 (default: Earth Search)"),
        s1_stac: str = typer.Option(
            None, "--s1-stac", help="STAC API for Sentinel-1 (default: --stac when given, else CMR-STAC ASF)"
        ),
        catalog: str = typer.Option(None, "--catalog", help="stac-geoparquet snapshot to search instead of APIs"),
        catalog_root: str = typer.Option(None, "--catalog-root", help="base for the snapshot's relative hrefs"),
        s2_collection: str = typer.Option(
            "sentinel-2-c1-l2a", "--s2-collection", help="sentinel-2-c1-l2a | sentinel-2-l2a"
        ),
        fmt: str = typer.Option("npy", "--format", help="output format: npy (upstream per-patch layout)"),
        unit_size: int = typer.Option(4096, "--unit-size", help="unit (shard) size in pixels"),
        block_size: int = typer.Option(512, "--block-size", help="pixels per side of a read task's block"),
        resampling: str = typer.Option("nearest", "--resampling", help="20 m bands onto 10 m: nearest | bilinear"),
        max_in_flight: int = typer.Option(8, "--max-in-flight", help="block tasks submitted at once"),
        cache_dir: Path = typer.Option(None, "--cache-dir", help="keep STAC search results here between runs"),
    ) -> None:
        """Read a year of Sentinel-2/1 over a ROI into per-pixel time series, one folder per unit."""
        from datetime import datetime

        from tessera_ray.errors import UserInputError
        from tessera_ray.grid import load_roi, units_for_roi
        from tessera_ray.paths import output_folder, removed_if_failed

        this_year = datetime.now(UTC).year
        if not 2017 <= year <= this_year:
            raise UserInputError(f"--year must be 2017..{this_year} (the Sentinel-2 L2A era), got {year}")
        if fmt != "npy":
            raise UserInputError(f"--format {fmt!r} is not supported; use npy")
        if resampling not in ("nearest", "bilinear"):
            raise UserInputError(f"--resampling must be nearest or bilinear, got {resampling!r}")
        if unit_size <= 0 or block_size <= 0 or max_in_flight <= 0:
            raise UserInputError("--unit-size, --block-size and --max-in-flight must be positive")
        if s2_collection not in ("sentinel-2-c1-l2a", "sentinel-2-l2a"):
            raise UserInputError(f"--s2-collection must be sentinel-2-c1-l2a or sentinel-2-l2a, got {s2_collection!r}")
        out = output_folder(out)
        cache_dir = output_folder(cache_dir, "--cache-dir") if cache_dir is not None else None
        from tessera_ray.pipeline.blocks import search_bbox
        from tessera_ray.sources.read import ReadConfig
        from tessera_ray.sources.reader import COG

        units = units_for_roi(load_roi(roi), unit_size)
        if not units:
            raise UserInputError(f"ROI {roi} covers no pixel of any zone grid")
        read = ReadConfig(resampling=resampling, env=COG.capture_env())  # its settings' mistakes before any request
        scenes = _search(search_bbox(units), year, stac, s1_stac, catalog, catalog_root, s2_collection, cache_dir)
        if not scenes:
            print(f"tessera-ray: warning: no Sentinel-2 or Sentinel-1 scenes over {roi} in {year}; nothing written",
                  file=sys.stderr)
            return
        with removed_if_failed(out):
            report = _run(units, scenes, out, block_size, read, max_in_flight)
        n_s2 = sum(s.kind == "s2" for s in scenes)
        typer.echo(
            f"wrote {len(report.units)} unit(s) to {out} ({report.blocks} block(s)) from {n_s2} Sentinel-2 and "
            f"{len(scenes) - n_s2} Sentinel-1 scene(s)"
        )
        if report.skipped_scenes:
            names = sorted(report.skipped_scenes)
            typer.echo(f"skipped {len(names)} unreadable scene(s): {', '.join(names[:10])}"
                       + (" ..." if len(names) > 10 else ""))
        if report.unknown_orbit:
            names = sorted(report.unknown_orbit)
            typer.echo(f"left out {len(names)} Sentinel-1 scene(s) with unknown orbit direction: "
                       + ", ".join(names[:10]) + (" ..." if len(names) > 10 else ""))


def _search(bbox, year, stac, s1_stac, catalog, catalog_root, s2_collection, cache_dir):
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.scenes import OPERA_RTC, profile_for_collection
    from tessera_ray.sources.stac import SearchCache, search_scenes, year_range

    s2 = profile_for_collection(s2_collection, "s2")
    start, end = year_range(year)
    if catalog:
        return [
            *search_catalog(catalog, s2, bbox, start, end, root=catalog_root),
            *search_catalog(catalog, OPERA_RTC, bbox, start, end, root=catalog_root),
        ]
    cache = SearchCache(cache_dir)
    s1_url = s1_stac or stac or OPERA_RTC.url
    return [
        *search_scenes(s2, bbox, start, end, url=stac or s2.url, cache=cache),
        *search_scenes(OPERA_RTC, bbox, start, end, url=s1_url, cache=cache),
    ]


def _run(units, scenes, out, block_size, read, max_in_flight):
    from tessera_ray.cluster import start_ray
    from tessera_ray.pipeline.ingest import IngestConfig, ingest_to_npy

    start_ray()
    config = IngestConfig(block_size=block_size, max_in_flight=max_in_flight, read=read)
    return ingest_to_npy(units, scenes, out, config)
