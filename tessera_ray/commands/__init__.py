"""CLI subcommands, one module per area.

Each module here defines ``register(app: typer.Typer) -> None``. Modules import
their heavy dependencies (torch, ray, rasterio) inside the command functions so
that ``tessera-ray --help`` stays fast.
"""
