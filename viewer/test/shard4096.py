"""A root for measuring the viewer on production-sized shards (docs/viewer.md, "Measured").

    python viewer/test/shard4096.py OUT

A 4096/32 store (fixed offsets) with one unit near 5.1 E, 52.5 N whose top 256 rows x 4096
columns hold random embeddings: a dense shard of 1,024 chunks (134 MB) where a whole unit
would be 2.1 GB, with the shard index of any 4096/32 shard (16,384 rows, 256 KB). The viewer
is published into it. Prints the ``--centre`` for ``node viewer/test/measure.mjs``: the middle
of one 256-px block, so that a 1 km view reads exactly that block.
"""

from __future__ import annotations

import sys

import numpy as np

from tessera_ray.grid import Unit, zone_grid
from tessera_ray.store.manifest import publish
from tessera_ray.store.testing import random_block
from tessera_ray.store.writer import EmbeddingStore
from tessera_ray.viewer import publish_viewer

UNIT = Unit(31, 88, 13, 4096)


def main(root: str) -> None:
    store = EmbeddingStore.create_or_open(root, 4096, 32, model="random-test-model", model_checksum="0" * 64)
    store.prepare(2024, {UNIT.zone})
    embeddings, scales = random_block(np.random.default_rng(0), 256, 4096, nan_fraction=0.0)
    store.write_unit(UNIT, 2024, embeddings, scales, scenes={"s2": 1, "s1": 1})
    publish(root, 2024)
    publish_viewer(root)
    # the centre of the block of rows 0-255, columns 1792-2047 (pixel_to_lonlat gives pixel centres)
    lon, lat = zone_grid(UNIT.zone).pixel_to_lonlat(UNIT.window.row + 128 - 0.5, UNIT.window.col + 1920 - 0.5)
    print(f"--centre={float(lon):.7f},{float(lat):.7f}")


if __name__ == "__main__":
    main(sys.argv[1])
