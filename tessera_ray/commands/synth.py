"""``tessera-ray synth``: write a synthetic world (the demo's and the tests' input)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Path = typer.Option(..., "--out", help="folder to write the world to"),
        bbox: str = typer.Option(None, "--bbox", help="W,S,E,N in degrees (default: the preset's)"),
        year: int = typer.Option(2024, "--year", help="year of the acquisitions"),
        seed: int = typer.Option(0, "--seed", help="random seed; same arguments give the same bytes"),
        preset: str = typer.Option("demo", "--preset", help="demo | test | bench"),
    ) -> None:
        """Write a reproducible synthetic world: S2 and S1 COGs, STAC items, labels."""
        import time

        from tessera_ray.grid import parse_bbox
        from tessera_ray.paths import output_folder
        from tessera_ray.synthetic import generate_world

        out = output_folder(out)
        start = time.perf_counter()
        world = generate_world(out, bbox=parse_bbox(bbox) if bbox else None, year=year, seed=seed, preset=preset)
        tiles = sorted({s.tile for s in world.s2_scenes})
        bursts = sorted({s.tile for s in world.s1_scenes})
        zones = sorted({s.zone for s in world.scenes})
        typer.echo(
            f"wrote {world.root}: {len(world.s2_scenes)} Sentinel-2 scenes on {len(tiles)} tiles, "
            f"{len(world.s1_scenes)} Sentinel-1 scenes on {len(bursts)} bursts, "
            f"UTM zone(s) {', '.join(map(str, zones))}, year {world.year}, "
            f"in {time.perf_counter() - start:.1f} s"
        )
