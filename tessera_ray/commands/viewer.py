"""``tessera-ray viewer``: write the browser viewer into an existing published root."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("viewer")
    def viewer(
        root: str = typer.Option(..., "--root", help="Published root to write to: a folder or s3://bucket/prefix."),
    ) -> None:
        """Write index.html and viewer/ into a published root (embed does this when it publishes)."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.redact import redact
        from tessera_ray.store.layout import ZARR_DIR, parse_root
        from tessera_ray.store.objects import ObjectNotFound, open_objects
        from tessera_ray.viewer import publish_viewer

        objects = open_objects(root)
        if not objects.writable:
            raise UserInputError(f"cannot write to {redact(objects.url)}: HTTP roots are read-only; give a folder or s3:// URL")
        try:
            parse_root(objects.get(f"{ZARR_DIR}/zarr.json"))
        except ObjectNotFound:
            raise UserInputError(f"{redact(objects.url)} is not a published root (no {ZARR_DIR}/zarr.json)") from None
        except (KeyError, ValueError):
            raise UserInputError(f"{redact(objects.url)} holds a Zarr store that is not a tessera-ray root") from None
        keys = publish_viewer(objects)
        typer.echo(f"wrote the viewer ({len(keys)} files) to {redact(objects.child_url('index.html'))}")
        if "://" not in objects.url:
            typer.echo(f"open it through a static HTTP server of the root, e.g. tessera-ray serve {root}, then http://127.0.0.1:8000/")
        else:
            typer.echo("open it at the root's HTTP address (e.g. its CloudFront URL) + /index.html")
