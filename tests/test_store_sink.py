"""The sink protocol (tessera_ray/store/sink.py): the embed job's real driver loop, write tasks and publisher
write into a sink other than the Zarr store (an in-memory one) with no change to the pipeline, and the Zarr
store travels to write tasks by its root."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

YEAR = 2024
WIDTH = 16  # the stand-in encoder's embedding width: the writer takes it from the blocks, not a constant


def _read(zone, window, year, scenes, read_config):
    """``read_block``'s signature and results, without I/O: every pixel holds its block's row (mod 97)."""
    from tessera_ray.pipeline.driver import BlockInfo

    return np.full(window.size, window.row % 97, np.int16), BlockInfo(window.size, 0, ())


class _Encoder:
    """``EncoderActor``'s interface: the pixel value on every dimension; the first 3 pixels of a block no data."""

    def __init__(self, spec, device=None):
        self.width = int(spec.checkpoint)

    def info(self) -> dict:
        return {"pid": os.getpid()}

    def encode(self, pixels):
        from types import SimpleNamespace

        scales = np.ones(len(pixels), np.float32)
        scales[:3] = np.nan
        return SimpleNamespace(embeddings=np.repeat(pixels.astype(np.int8)[:, None], self.width, axis=1),
                               scales=scales)


def _units(n):
    from tessera_ray.grid import Unit, lonlat_to_zone_pixel, unit_of_pixel

    first = unit_of_pixel(*lonlat_to_zone_pixel(3.0, 52.0), 64)
    return tuple(Unit(first.zone, first.row, first.col + i, 64) for i in range(n))


def _config(tmp_path):
    from tessera_ray.pipeline.plan import EmbedConfig

    return EmbedConfig(roi="3.0,52.0,3.01,52.01", years=(YEAR,), out=str(tmp_path / "nowhere"), checkpoint="-",
                       unit_size=64, block_size=32, max_in_flight=2, encoders=1)


@pytest.fixture(scope="module")
def pool(ray_cluster):
    """One stand-in encoder actor; this module's functions travel to Ray by value."""
    from ray import cloudpickle

    from tessera_ray.pipeline.encode import EncoderPool, EncoderSpec

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with EncoderPool(EncoderSpec(str(WIDTH)), num_actors=1, use_gpu=False, actor=_Encoder) as encoders:
            yield encoders
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _run_year(pool, config, units, publisher, read=None):
    from tessera_ray.pipeline.driver import StageTasks, run_year
    from tessera_ray.pipeline.plan import ModelInfo, YearPlan
    from tessera_ray.pipeline.progress import Progress

    with open(os.devnull, "w") as quiet:
        return run_year(YearPlan(YEAR, units, ()), config, pool, ModelInfo("stand-in", "0" * 64),
                        Progress(quiet, rich=False), publisher, StageTasks(read=_read), read=read)


@pytest.mark.slow
def test_the_embed_loop_writes_and_publishes_into_a_second_sink(pool, tmp_path):
    from tessera_ray.pipeline.publishing import Publisher
    from tessera_ray.store.sink import EmbeddingSink
    from tessera_ray.store.testing import MemorySink

    units = _units(3)
    sink = MemorySink()
    assert isinstance(sink, EmbeddingSink)
    publisher = Publisher(sink, YEAR, every_units=2, every_minutes=0)
    year = _run_year(pool, _config(tmp_path), units, publisher)
    assert year.failed == {} and year.done == 3
    assert publisher.publishes == 1  # two units by the units bound; the third waits for the end of the job
    assert len(sink.published_units(YEAR)) == 2
    publisher.finish()
    assert sink.published_units(YEAR) == {u.id for u in units}
    assert not (tmp_path / "nowhere").exists()  # nothing went to config.out: the sink is the only output
    for unit in units:
        record, embeddings, scales = sink.unit(YEAR, unit.id)
        assert embeddings.shape == (64, 64, WIDTH) and embeddings.dtype == np.int8
        row0 = unit.window.row
        assert (embeddings[31, 10] == row0 % 97).all() and (embeddings[32, 10] == (row0 + 32) % 97).all()
        assert record.nodata_pixels == 4 * 3 and record.valid_pixels == 64 * 64 - 12
        assert record.unprocessed_pixels == 0


def test_blocks_larger_than_the_cluster_fail_their_units_and_the_loop_ends(pool, tmp_path):
    """A read the cluster could never place fails its unit in one line; the unit's other blocks are never
    submitted, and the loop still ends (more failed units than open-unit slots once hung it)."""
    import threading

    from tessera_ray.pipeline.publishing import Publisher
    from tessera_ray.sources.read import ReadConfig
    from tessera_ray.store.testing import MemorySink

    units = _units(4)
    sink = MemorySink()
    done = []
    huge = ReadConfig(max_requests=10**9)  # each read would declare ~32 TB
    loop = threading.Thread(target=lambda: done.append(_run_year(pool, _config(tmp_path), units,
                                                                 Publisher(sink, YEAR), read=huge)), daemon=True)
    loop.start()
    loop.join(60)
    assert done, "the driver loop did not end"
    year = done[0]
    assert year.done == 0 and sorted(year.failed) == sorted(u.id for u in units)
    assert all("lower --block-size" in reason and "\n" not in reason for reason in year.failed.values())
    assert sink.published_units(YEAR) == set()


def test_the_zarr_store_travels_to_a_write_task_by_its_root(tmp_path):
    from tessera_ray.store import EmbeddingStore
    from tessera_ray.store.sink import EmbeddingSink

    store = EmbeddingStore.create_or_open(str(tmp_path / "root"), shard_size=64, chunk_size=32, model="m",
                                          model_checksum="ab" * 32)
    assert isinstance(store, EmbeddingSink)
    again = pickle.loads(pickle.dumps(store))
    assert (again.root, again.model_checksum, again.layout) == (store.root, store.model_checksum, store.layout)
