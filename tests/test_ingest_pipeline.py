"""The Ray map stage on hand-made scenes: blocks stitch back to the unit; errors come back as one line."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from test_ingest_read import COL, ROW, ZONE, s2_scene

from tessera_ray.cube import TimeSeriesCube
from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit
from tessera_ray.pipeline.ingest import IngestConfig, ingest_to_npy, iter_block_cubes
from tessera_ray.sources.cog import ReaderEnv
from tessera_ray.sources.read import ReadConfig, read_cube

UNIT = Unit(ZONE, ROW // 32, COL // 32, 32)


@pytest.fixture()
def scenes(tmp_path):
    scl = np.full((32, 32), 4, np.uint8)
    scl[5:20, 3:12] = 9
    t = datetime(2024, 5, 1, 10, tzinfo=UTC)
    return [
        s2_scene(tmp_path, "A", t, scl, 2000, row=UNIT.window.row, col=UNIT.window.col),
        s2_scene(tmp_path, "B", t.replace(day=9), scl[::-1], 3000, row=UNIT.window.row, col=UNIT.window.col),
    ]


CONFIG = IngestConfig(block_size=12, max_in_flight=3, read=ReadConfig(max_requests=2, env=ReaderEnv(retries=0)))


@pytest.mark.slow
def test_blocks_stitch_back_to_the_whole_unit(ray_cluster, scenes, tmp_path):
    whole = read_cube(UNIT, scenes, CONFIG.read)
    blocks = [cube for _, cube in iter_block_cubes([UNIT], scenes, CONFIG)]
    assert len(blocks) == 9  # 32 px in blocks of 12: 3 x 3
    merged = TimeSeriesCube.merge(blocks, UNIT.window)
    np.testing.assert_array_equal(merged.bands, whole.bands)
    np.testing.assert_array_equal(merged.masks, whole.masks)
    report = ingest_to_npy([UNIT], scenes, tmp_path / "out", CONFIG)
    assert report.units == [UNIT.id] and report.blocks == 9
    saved = TimeSeriesCube.load_npy(tmp_path / "out" / UNIT.id)
    np.testing.assert_array_equal(saved.bands, whole.bands)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [UNIT.id]


@pytest.mark.slow
def test_block_too_big_for_the_cluster_is_a_clear_error(ray_cluster, scenes):
    huge = IngestConfig(block_size=10**6, read=CONFIG.read)
    with pytest.raises(UserInputError, match="lower --block-size"):
        list(iter_block_cubes([Unit(ZONE, 0, 0, 10**6)], scenes, huge))
