"""The demo's encoder: trained by this package on the synthetic world, cached on disk.

The world's catalog file (``stac/items.parquet``) is searched and the world's
central block read as one unit in this process (no Ray, no services), then a
short run of the training loop learns from it. The checkpoint is keyed by the
world's ``world.json`` and the training settings, so a second call returns
at once and a changed world retrains.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tessera_ray.train.loop import TrainConfig, labelled_points, run

DEMO_CONFIG = TrainConfig(
    variant="v2-tiny", steps=200, batch_size=256, lr=2e-3, warmup=10, seq_len=8,
    projector_width=64, projector_layers=3, pool_per_unit=40000,
    checkpoint_every=1000, eval_every=1000, log_every=10,
)
DEMO_BLOCK = 256
"""Pixels per side of the world's central block the demo encoder learns from.

The block and the recipe above were chosen with ``jobs/report_quality.py``
(probe accuracy at 10 labels per class): 0.899 over 5 seeds with this recipe,
against 0.880 over 3 for the previous one (16 dates per view, batch 128, a
256-wide projector, 40 random dates at inference); a 160 px block, the whole
world, more steps, a higher learning rate, longer views, a wider projector or
the ``small`` variant did no better (docs/learn.md)."""
RECIPE = 5
"""Bumped when the training code changes what a config produces, so caches retrain."""
NAME = "demo-encoder"
"""File stem of the checkpoint (``.pt``) and its key (``.json``) in ``out_dir``."""


def world_cube(world_dir: str | Path, out_dir: str | Path, size: int | None = None, name: str | None = None) -> Path:
    """The world's time series as one unit folder (read once, reused): its central
    ``size`` x ``size`` px block (default :data:`DEMO_BLOCK`), or all of it for ``size=0``."""
    from tessera_ray.grid import Window, zone_grid
    from tessera_ray.sources.catalog import search_catalog
    from tessera_ray.sources.read import Block, read_cube
    from tessera_ray.sources.scenes import OPERA_RTC, profile_for_collection
    from tessera_ray.sources.stac import year_range
    from tessera_ray.synthetic import S2_COLLECTION, World

    size = DEMO_BLOCK if size is None else size
    target = Path(out_dir) / (name or f"demo-cube-{size}")
    if (target / "cube.json").is_file():
        return target
    world = World.open(world_dir)
    start, end = year_range(world.year)
    items = str(world.items_parquet)
    scenes = [*search_catalog(items, profile_for_collection(S2_COLLECTION, "s2"), world.bbox, start, end),
              *search_catalog(items, OPERA_RTC, world.bbox, start, end)]
    west, south, east, north = world.bbox
    zone = _zone(world.bbox)
    rows, cols = zone_grid(zone).lonlat_to_pixel(
        np.array([west, east, west, east]), np.array([south, south, north, north])
    )
    # a central square: reading cost grows with area, and it holds plenty of parcels
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    h, w = (min(size, height), min(size, width)) if size else (height, width)
    window = Window(int(rows.min()) + (height - h) // 2, int(cols.min()) + (width - w) // 2, h, w)
    read_cube(Block(zone, window), scenes).save_npy(target)
    return target


def _zone(bbox) -> int:
    from tessera_ray.grid import utm_zone

    return utm_zone((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2)


def _key(world_dir: Path, config: TrainConfig) -> str:
    digest = hashlib.sha256((world_dir / "world.json").read_bytes())
    digest.update(json.dumps({"recipe": RECIPE, "block": DEMO_BLOCK, **asdict(config)}, sort_keys=True).encode())
    return digest.hexdigest()


def ensure_demo_encoder(world_dir: str | Path, out_dir: str | Path, config: TrainConfig = DEMO_CONFIG,
                        quiet: bool = True, name: str = NAME) -> Path:
    """Train the demo's small encoder on the synthetic world once; return its checkpoint path
    (``out_dir/<name>.pt``; other names keep several encoders, e.g. one per seed, beside one cube)."""
    import geopandas as gpd

    from tessera_ray.synthetic import World

    world_dir, out_dir = Path(world_dir), Path(out_dir)
    World.open(world_dir)  # a clear error for a folder that is not a world
    final = out_dir / f"{name}.pt"
    key_file = out_dir / f"{name}.json"
    key = _key(world_dir, config)
    if final.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("key") == key:
        return final
    cube = world_cube(world_dir, out_dir)
    labels = gpd.read_parquet(world_dir / "labels.parquet")
    train = labels[labels["split"] == "train"] if "split" in labels else labels
    labelled = labelled_points([str(cube)], train.geometry.x.to_numpy(), train.geometry.y.to_numpy(),
                               train["class_id"].to_numpy())
    work = out_dir / f"{name}-run"
    shutil.rmtree(work, ignore_errors=True)
    result = run(config, [str(cube)], work, labelled, resume=False, quiet=quiet, cpu_threads=1)
    final.parent.mkdir(parents=True, exist_ok=True)
    assert result.checkpoint is not None  # run() always saves one
    shutil.copyfile(result.checkpoint, final)
    key_file.write_text(json.dumps({"key": key, "steps": result.step, "loss": result.loss,
                                    "probe": result.probe}, indent=1))
    return final
