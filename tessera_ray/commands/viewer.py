"""``tessera-ray viewer``: write the browser viewer into an existing published root."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("viewer")
    def viewer(
        root: str = typer.Option(..., "--root", help="Published root to write to: a folder or s3://bucket/prefix."),
        basemap: str = typer.Option(
            None, "--basemap", metavar="TEMPLATE",
            help="XYZ tile URL template drawn beneath the embeddings, e.g. https://tile.example.org/{z}/{x}/{y}.png "
                 "(or a path relative to the root). Without it (and --no-basemap) the root keeps its configuration."),
        attribution: str = typer.Option("", "--basemap-attribution", metavar="TEXT",
                                        help="Attribution the tile provider asks for, shown on the map."),
        max_zoom: int = typer.Option(19, "--basemap-max-zoom", help="Deepest zoom level the tile server has."),
        no_basemap: bool = typer.Option(False, "--no-basemap", help="Remove the root's basemap."),
    ) -> None:
        """Write index.html and viewer/ into a published root (embed does this when it publishes)."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.redact import redact
        from tessera_ray.store.layout import ZARR_DIR, parse_root
        from tessera_ray.store.objects import ObjectNotFound, open_objects
        from tessera_ray.viewer import KEEP, Basemap, publish_viewer

        if basemap is not None and no_basemap:
            raise UserInputError("give --basemap or --no-basemap, not both")
        config = Basemap(basemap, attribution, max_zoom) if basemap is not None else None if no_basemap else KEEP

        objects = open_objects(root)
        if not objects.writable:
            raise UserInputError(
                f"cannot write to {redact(objects.url)}: HTTP roots are read-only; give a folder or s3:// URL"
            )
        try:
            parse_root(objects.get(f"{ZARR_DIR}/zarr.json"))
        except ObjectNotFound:
            raise UserInputError(f"{redact(objects.url)} is not a published root (no {ZARR_DIR}/zarr.json)") from None
        except (KeyError, ValueError):
            raise UserInputError(f"{redact(objects.url)} holds a Zarr store that is not a tessera-ray root") from None
        keys = publish_viewer(objects, basemap=config)
        typer.echo(f"wrote the viewer ({len(keys)} files) to {redact(objects.child_url('index.html'))}")
        if config != KEEP:
            typer.echo(f"basemap: {redact(config.url)}" if config else "no basemap")
        if "://" not in objects.url:
            typer.echo(f"open it through a static HTTP server of the root, e.g. tessera-ray serve {root}, then http://127.0.0.1:8000/")
        else:
            typer.echo("open it at the root's HTTP address (e.g. its CloudFront URL) + /index.html")
