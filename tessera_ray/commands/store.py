"""``tessera-ray sample``, ``export`` and ``export-geotessera``: reading a published root."""

from __future__ import annotations

from pathlib import Path

import typer

from tessera_ray.paths import output_file, output_folder, removed_if_failed


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample(
        root: str = typer.Option(..., "--root", help="Published root: https://..., s3://... or a folder."),
        points: Path = typer.Option(..., "--points", help="Points: GeoParquet, GeoJSON, or CSV with lon/lat columns."),
        year: int = typer.Option(..., "--year"),
        out: Path = typer.Option(..., "--out", help="Output GeoParquet: the points with emb_000..emb_127 and status."),
        depth: int = typer.Option(
            None, "--depth", help="Matryoshka depth K: read only the K-dim prefix array (v2 stores)."
        ),
    ) -> None:
        """Sample embeddings at points (128, or --depth, float32 columns plus a status column)."""
        from tessera_ray.client import open_root
        from tessera_ray.heads.points_io import sample_to_parquet

        out = output_file(out)
        reader = open_root(root)
        counts: dict[str, int] = {}
        _write_atomic(out, lambda tmp: counts.update(sample_to_parquet(reader, points, year, depth, tmp)))
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        typer.echo(f"{sum(counts.values())} points -> {out} ({summary})")

    @app.command("export")
    def export(
        root: str = typer.Option(..., "--root"),
        bbox: str = typer.Option(..., "--bbox", help="W,S,E,N in degrees."),
        year: int = typer.Option(..., "--year"),
        out: Path = typer.Option(..., "--out", help="Output GeoTIFF (COG), 128 float32 bands, NaN = none."),
        crs: str = typer.Option(None, "--crs", help="Output CRS (default: the UTM zone of the bbox centre)."),
        depth: int = typer.Option(
            None, "--depth", help="Matryoshka depth K: read only the K-dim prefix array (v2 stores)."
        ),
    ) -> None:
        """Export a region as a Cloud-Optimised GeoTIFF (128 bands, or --depth)."""
        from tessera_ray.client import open_root
        from tessera_ray.grid import check_crs, parse_bbox

        out = output_file(out)
        box = parse_bbox(bbox)
        crs = check_crs(crs, "--crs") if crs is not None else None
        reader = open_root(root)
        path = reader.export_geotiff(box, year, str(out), crs=crs, depth=depth)
        typer.echo(f"wrote {path}")

    @app.command("export-geotessera")
    def export_geotessera_cmd(
        root: str = typer.Option(..., "--root"),
        year: int = typer.Option(..., "--year"),
        out: Path = typer.Option(..., "--out", help="Output folder (registry_dir and embeddings_dir for geotessera)."),
        bbox: str = typer.Option(None, "--bbox", help="Only tiles touching W,S,E,N."),
        dataset_version: str = typer.Option("1.1", "--dataset-version", help="Recorded in manifest.parquet."),
        variant: str = typer.Option("cambridge", "--variant", help="Recorded in manifest.parquet."),
        depth: int = typer.Option(
            None, "--depth", help="Matryoshka depth K: read only the K-dim prefix array (v2 stores)."
        ),
    ) -> None:
        """Write the published units of a year as geotessera 0.1-degree npy tiles."""
        from tessera_ray.client import open_root
        from tessera_ray.grid import parse_bbox
        from tessera_ray.store.geotessera_export import export_geotessera

        out = output_folder(out)
        box = parse_bbox(bbox) if bbox else None
        reader = open_root(root)
        with removed_if_failed(out):
            result = export_geotessera(reader, year, out, box, version=dataset_version, variant=variant, depth=depth)
        typer.echo(f"wrote {result.tiles} tiles to {result.out_dir}")


    @app.command("coverage")
    def coverage(
        root: str = typer.Option(..., "--root", help="Published root: https://..., s3://... or a folder."),
        out: Path = typer.Option(..., "--out", help="Map to write: .png, or .geojson for the units as GeoJSON."),
        year: int = typer.Option(None, "--year", help="Only this year (default: every year of the root)."),
        geojson: Path = typer.Option(None, "--geojson", help="Also write the units with their status as GeoJSON."),
    ) -> None:
        """Draw the units of each year from the manifests with their status (published, no data, failed, no scene)."""
        from tessera_ray.coverage import STATUSES, geojson_bytes, png_bytes, read_coverage
        from tessera_ray.errors import UserInputError
        from tessera_ray.extras import require

        out = output_file(out)
        if out.suffix.lower() not in (".png", ".geojson", ".json"):
            raise UserInputError(f"--out {out} must end in .png, .geojson or .json")
        outputs = [out] + ([output_file(geojson, "--geojson")] if geojson is not None else [])
        if any(p.suffix.lower() == ".png" for p in outputs):
            require("heads", "tessera-ray coverage --out *.png")
        cover = read_coverage(root, year)
        for path in outputs:
            data = png_bytes(cover) if path.suffix.lower() == ".png" else geojson_bytes(cover)
            _write_atomic(path, lambda tmp, data=data: Path(tmp).write_bytes(data))
        for y in cover.years:
            counts = cover.counts(y)
            typer.echo(f"{y}: " + ", ".join(f"{counts[s]:,} {s}" for s in STATUSES))
        typer.echo("wrote " + ", ".join(str(p) for p in outputs))


def _write_atomic(path: Path, write) -> None:
    from tessera_ray.atomic import atomic_file

    with atomic_file(path) as tmp:
        write(tmp)
