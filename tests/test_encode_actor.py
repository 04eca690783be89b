"""Encoder actors on the session's Ray: same bytes as direct calls, bounded in flight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tessera_ray.errors import UserInputError
from tessera_ray.model import build_encoder, encode_pixels, get_variant, save_checkpoint
from tessera_ray.model.inference import PixelSeries
from tessera_ray.pipeline.encode import EncoderPool, EncoderSpec

SEED = 5


def unit_batches(count, n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for u in range(count):
        t, ta, td = 20 + u, 6 + u % 3, 5
        bands = rng.integers(1, 10000, (n, t, 10), dtype=np.uint16)
        masks = (rng.random((n, t)) < 0.6).astype(np.uint8)
        asc = rng.integers(0, 20000, (n, ta, 2), dtype=np.int16)
        desc = rng.integers(0, 20000, (n, td, 2), dtype=np.int16)
        masks[0], asc[0], desc[0] = 0, 0, 0  # one no-data pixel per batch: no observation at all
        out.append(PixelSeries(
            block_id=f"utm31_64_{u:04d}_0000", year=2024, zone=31,
            rows=u * 64 + np.arange(n), cols=np.arange(n) * 3,
            s2_bands=bands, s2_masks=masks, s2_doys=np.sort(rng.choice(366, t, replace=False) + 1),
            sar_ascending=asc, sar_ascending_doys=np.arange(1, ta + 1) * 20,
            sar_descending=desc, sar_descending_doys=np.arange(1, td + 1) * 30,
        ))
    return out


def checkpoint(tmp_path_factory, name):
    config = get_variant(name)
    model = build_encoder(config, seed=3)
    path = tmp_path_factory.mktemp("enc") / f"{name}.pt"
    save_checkpoint(model, path, config)
    return config, model, str(path)


@pytest.fixture(scope="module")
def tiny_pool(ray_cluster, tmp_path_factory):
    """One CPU actor, small device batches, at most two requests in flight."""
    config, model, path = checkpoint(tmp_path_factory, "tiny")
    spec = EncoderSpec(path, seed=SEED, batch_size=16, cpu_threads=1, actor_cpus=0.5)
    with EncoderPool(spec, num_actors=1, use_gpu=False, max_in_flight=2) as pool:
        yield config, model, pool


def assert_same(got, want):
    np.testing.assert_array_equal(got.embeddings, want.embeddings)
    np.testing.assert_array_equal(got.scales, want.scales)


def test_pool_results_equal_direct_calls_in_any_order(ray_cluster, tiny_pool):
    config, model, pool = tiny_pool
    batches = unit_batches(6)
    direct = [encode_pixels(model, config, b, seed=SEED, batch_size=256) for b in batches]
    order = np.random.default_rng(1).permutation(len(batches))
    refs = {int(i): pool.submit(batches[i]) for i in order}
    for i, ref in refs.items():
        assert_same(ray_cluster.get(ref), direct[i])
    assert np.isnan(direct[0].scales[0])
    (info,) = pool.info()
    assert info["device"] == "cpu" and info["threads"] == 1 and info["pixels"] >= 6 * 24


def test_submit_waits_when_every_actor_is_full(tiny_pool):
    _, _, pool = tiny_pool
    batches = unit_batches(6, n=16, seed=2)
    seen = []
    for batch in batches:
        pool.submit(batch)
        seen.append(pool.in_flight())
    outputs = list(pool.map(batches))
    assert max(seen) <= 2 and pool.peak_in_flight <= 2
    assert len(outputs) == 6 and all(o.embeddings.shape == (16, 128) for o in outputs)


def test_bad_input_fails_its_request_only(ray_cluster, tiny_pool):
    _, _, pool = tiny_pool
    good = unit_batches(1, n=8)[0]
    fields = {f: getattr(good, f) for f in good.__dataclass_fields__}
    bad = PixelSeries(**{**fields, "s2_bands": good.s2_bands.astype(np.float32)})
    bad.s2_bands[3, 2, 1] = np.nan  # after construction: the actor must check again
    bad_ref, good_ref = pool.submit(bad), pool.submit(good)
    with pytest.raises(UserInputError, match="utm31_64_0000_0000: s2_bands contains NaN"):
        ray_cluster.get(bad_ref)
    assert ray_cluster.get(good_ref).embeddings.shape == (8, 128)


def test_two_actors_large_batches_v11_equal_direct_calls(ray_cluster, tmp_path_factory):
    config, model, path = checkpoint(tmp_path_factory, "tiny-v1.1")
    batches = unit_batches(5, seed=3)
    direct = [encode_pixels(model, config, b, seed=SEED, data_source="mpc") for b in batches]
    spec = EncoderSpec(path, data_source="mpc", seed=SEED, batch_size=1000, cpu_threads=1, actor_cpus=0.5)
    with EncoderPool(spec, num_actors=2, use_gpu=False, max_in_flight=3) as pool:
        results = list(pool.map(batches[::-1]))[::-1]
        assert pool.size == 2
    for got, want in zip(results, direct):
        assert_same(got, want)


def test_missing_checkpoint_is_reported(ray_cluster, tmp_path):
    spec = EncoderSpec(str(tmp_path / "absent.pt"), actor_cpus=0.5)
    with pytest.raises(Exception, match="checkpoint not found"):
        EncoderPool(spec, num_actors=1, use_gpu=False)


def heap_mb(pid: int) -> float:
    """Anonymous resident memory of a process (its heap; not the object store pages it maps)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


@pytest.mark.slow
def test_actor_gives_back_the_memory_of_the_units_it_encoded(ray_cluster, tmp_path_factory):
    # with glibc's defaults the heap kept ~190 MB after these units (180 -> 371 MB); now ~10 MB
    _, _, path = checkpoint(tmp_path_factory, "tiny")
    spec = EncoderSpec(path, seed=SEED, batch_size=1024, cpu_threads=1, actor_cpus=0.5)
    units = unit_batches(4, n=2048, seed=4)
    with EncoderPool(spec, num_actors=1, use_gpu=False, max_in_flight=2) as pool:
        pid = pool.info()[0]["pid"]
        started = heap_mb(pid)
        assert all(e.embeddings.shape == (2048, 128) for e in pool.map(units))
        assert heap_mb(pid) - started < 50


def _check_until_raised(pool, seconds: float):
    import time

    from tessera_ray.pipeline.encode import EncoderUnavailable

    deadline = time.monotonic() + seconds
    with pytest.raises(EncoderUnavailable) as caught:
        while time.monotonic() < deadline:
            pool.check()
            time.sleep(0.2)
    return str(caught.value)


@pytest.mark.slow
def test_a_lost_actor_is_restarted_and_reruns_its_requests_and_a_pool_waits_only_so_long(ray_cluster,
                                                                                        tmp_path_factory):
    """As when its node is lost: Ray starts the actor again and runs its requests there (same results); while it
    cannot, :meth:`EncoderPool.check` tells the driver after ``wait_s``; an actor gone for good, at once."""
    config, model, path = checkpoint(tmp_path_factory, "tiny")
    batches = unit_batches(3, n=16, seed=4)
    direct = [encode_pixels(model, config, b, seed=SEED, batch_size=256) for b in batches]
    spec = EncoderSpec(path, seed=SEED, batch_size=16, cpu_threads=1, actor_cpus=0.5)
    with EncoderPool(spec, num_actors=1, use_gpu=False, max_in_flight=3, wait_s=0.5) as pool:
        (before,) = pool.info()
        refs = [pool.submit(b) for b in batches]
        ray_cluster.kill(pool._actors[0], no_restart=False)
        assert "has not answered for" in _check_until_raised(pool, 10)  # a restart takes seconds
        pool.wait_s = 120
        for ref, want in zip(refs, direct):
            assert_same(pool.result(ref), want)
        (after,) = pool.info()
        assert after["pid"] != before["pid"]
        ray_cluster.kill(pool._actors[0], no_restart=True)
        assert "encoder actor 0 is gone" in _check_until_raised(pool, 10)
