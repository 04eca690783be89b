"""Helpers shared by the embed job's tests (a checkpoint, the job's arguments)."""

from __future__ import annotations

from pathlib import Path

EPOCH = "1767225600"
"""SOURCE_DATE_EPOCH of the tests: 2026-01-01T00:00:00Z."""
ONE_BLOCK = ("--block-size", "32")
"""One read task per 32 px unit, for tests whose point is not how blocks assemble: every block reads every
scene over it (428 in the test world's year), so a unit read as four 16 px blocks cost 20 s of read-task
time against 7.6 s as one block (``ray.timeline()`` of one unit's job)."""


def write_checkpoint(path: Path, variant: str = "tiny") -> Path:
    """A random-init checkpoint (what ``tessera-ray model init`` writes)."""
    from tessera_ray.model import build_encoder, get_variant, save_checkpoint

    config = get_variant(variant)
    save_checkpoint(build_encoder(config, seed=0), path, config, init_seed=0)
    return path


def embed_args(world: Path, out, checkpoint: Path, roi: str, *extra: str) -> list[str]:
    """``tessera-ray embed`` arguments over the test world's stac-geoparquet catalog, 32 px units."""
    return ["embed", "--roi", roi, "--year", "2024", "--out", str(out), "--checkpoint", str(checkpoint),
            "--catalog", str(world / "stac" / "items.parquet"), "--unit-size", "32", "--block-size", "16", *extra]


def store_files(root: Path) -> dict[str, bytes]:
    """Every file under a published root but the run records (each run's own) and ``*.tmp`` leftovers."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
        and not p.name.endswith(".tmp")
        and not p.relative_to(root).as_posix().startswith("manifests/runs/")
    }
