"""Training: the losses against their formulas, the schedule, global shuffling, a short run, resume."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from tessera_ray.cube import TimeSeriesCube
from tessera_ray.errors import CheckpointError, UserInputError
from tessera_ray.grid import Window
from tessera_ray.model import load_encoder, read_checkpoint
from tessera_ray.train import TrainConfig, data, run
from tessera_ray.train.losses import barlow_twins_loss, mix_regulariser, mix_targets
from tessera_ray.train.schedule import lr_factor


def _standardise(z: np.ndarray) -> np.ndarray:
    return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)


def test_barlow_twins_loss_is_the_formula():
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(32, 6)), rng.normal(size=(32, 6))
    z2[:, 0] = z1[:, 0] * 2 + 1  # one perfectly correlated dimension
    a, b = _standardise(z1), _standardise(z2)
    c = np.zeros((6, 6))
    for i in range(6):
        for j in range(6):
            c[i, j] = sum(a[n, i] * b[n, j] for n in range(32)) / 32
    lam = 5e-3
    expected = sum((1 - c[i, i]) ** 2 for i in range(6)) + lam * sum(
        c[i, j] ** 2 for i in range(6) for j in range(6) if i != j)
    got = barlow_twins_loss(torch.tensor(z1), torch.tensor(z2), lam)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # identical views: the on-diagonal term vanishes
    same = barlow_twins_loss(torch.tensor(z1), torch.tensor(z1), lam)
    assert float(same) < float(got)


def test_mix_targets_and_regulariser():
    rng = np.random.default_rng(1)
    z1, z2 = torch.tensor(rng.normal(size=(16, 4))), torch.tensor(rng.normal(size=(16, 4)))
    perm = torch.tensor(rng.permutation(16))
    alpha = 0.3
    t1, t2 = mix_targets(z1, z2, alpha, perm)

    def corr(x, y):
        return _standardise(x).T @ _standardise(y) / len(x)

    n1, n2 = z1.numpy(), z2.numpy()
    np.testing.assert_allclose(t1.numpy(), alpha * corr(n1, n1) + (1 - alpha) * corr(n2[perm.numpy()], n1), atol=1e-6)
    np.testing.assert_allclose(t2.numpy(), alpha * corr(n1, n2) + (1 - alpha) * corr(n2[perm.numpy()], n2), atol=1e-6)
    # alpha = 1: the mix is view 1 itself, whose correlations are exactly the targets
    assert float(mix_regulariser(z1, z1, z2, 1.0, perm)) == pytest.approx(0.0, abs=1e-9)
    assert float(mix_regulariser(z2, z1, z2, 1.0, perm)) > 0


def test_schedule_warms_up_then_decays_by_cosine():
    warmup, total, floor = 10, 110, 0.01
    f = [lr_factor(s, warmup, total, floor) for s in range(130)]
    assert np.allclose(f[:warmup], np.arange(1, warmup + 1) / warmup)
    assert f[warmup] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1:]))
    assert f[warmup + 50] == pytest.approx(floor + (1 - floor) / 2)
    assert f[total] == pytest.approx(floor) and f[129] == pytest.approx(floor)
    assert f[warmup + 25] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi / 4)))


def _write_units(root, n_units=4, size=12, seed=0):
    """Small unit folders: two kinds of pixels whose seasons differ, clouds at random."""
    rng = np.random.default_rng(seed)
    doys = np.arange(5, 365, 10).astype(np.uint16)
    t = len(doys)
    paths = []
    for u in range(n_units):
        kind = (np.arange(size * size).reshape(size, size) + u) % 2
        season = np.where(kind[None], np.sin(doys / 58.0)[:, None, None], np.cos(doys / 58.0)[:, None, None])
        base = 2000 + 1500 * season[..., None] * np.linspace(0.5, 1.5, 10)
        bands = np.clip(base + rng.normal(0, 150, (t, size, size, 10)), 1, 10000).astype(np.uint16)
        masks = (rng.uniform(size=(t, size, size)) > 0.3).astype(np.uint8)
        sar = np.clip(
            rng.normal(4000, 500, (12, size, size, 2)) + 800 * kind[None, :, :, None], 1, 20000
        ).astype(np.int16)
        cube = TimeSeriesCube(
            bands=bands, masks=masks, doys=doys,
            sar_ascending=sar, sar_ascending_doy=np.arange(10, 360, 30).astype(np.int16),
            sar_descending=np.zeros((0, size, size, 2), np.int16), sar_descending_doy=np.zeros(0, np.int16),
            zone=31, window=Window(1000 + 100 * u, 2000, size, size),
        )
        paths.append(str(cube.save_npy(root / f"unit{u}")))
    return paths


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    return _write_units(tmp_path_factory.mktemp("units"))


def test_global_shuffling_mixes_units_and_visits_every_pixel(units):
    pool = data.build_pool([data.open_unit(u) for u in units], per_unit=100, seed=0)
    assert len(pool) == 400
    seen = []
    for step in range(400 // 32):
        batch = data.batch_indices(len(pool), 32, seed=0, step=step)
        assert len(np.unique(pool.owner[batch])) == 4  # never one neighbourhood
        seen.append(batch)
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) == len(seen) == 384  # one epoch: no pixel twice
    # the next epoch is another permutation
    assert not np.array_equal(data.batch_indices(len(pool), 32, 0, 12), data.batch_indices(len(pool), 32, 0, 0))
    assert data.find_units(str(units[0].rsplit("/", 1)[0])) == sorted(units)


def test_two_views_differ_but_come_from_the_same_pixel(units):
    pool = data.build_pool([data.open_unit(u) for u in units], per_unit=50, seed=0)
    config = TrainConfig(variant="tiny")
    index = data.batch_indices(len(pool), 16, 0, 0)
    (s2a, s1a), (s2b, s1b) = data.two_views(pool, index, config.rule, seed=0, step=0, steps=8)
    assert s2a.shape == (16, 8, 11) and s1a.shape == (16, 8, 3)
    assert not np.array_equal(s2a[:, :, -1], s2b[:, :, -1])  # other dates drawn
    assert np.all(np.diff(s2a[:, :, -1], axis=1) >= 0)  # sorted in time
    again = data.two_views(pool, index, config.rule, seed=0, step=0, steps=8)
    np.testing.assert_array_equal(again[0][0], s2a)  # a pure function of (seed, step)


SHORT = TrainConfig(variant="tiny", steps=8, batch_size=32, lr=3e-3, warmup=2, seq_len=8,
                    projector_width=64, projector_layers=3, pool_per_unit=100,
                    checkpoint_every=4, eval_every=8, log_every=1)


def test_short_run_reduces_loss_and_writes_a_loadable_checkpoint(units, tmp_path, cpu_threads=1):
    result = run(replace(SHORT, steps=16, checkpoint_every=16), units, tmp_path, cpu_threads=1)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert {"bt", "mix", "lr", "grad_norm"} <= set(log[0])
    payload = torch.load(result.checkpoint, weights_only=True)
    assert payload["step"] == 16 and "optimizer_state_dict" in payload and "epoch" in payload
    assert any(k.startswith("projector.") for k in payload["model_state_dict"])
    loaded = read_checkpoint(result.checkpoint)
    assert loaded.config.name == "tiny" and loaded.ignored_keys
    encoder = load_encoder(result.checkpoint)
    key = "dim_reducer.0.weight"
    assert torch.equal(encoder.state_dict()[key], payload["model_state_dict"][key])


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(units, tmp_path):
    whole = run(SHORT, units, tmp_path / "whole", cpu_threads=1)
    first = run(SHORT, units, tmp_path / "split", stop_after=5, cpu_threads=1)
    assert first.step == 5
    second = run(SHORT, units, tmp_path / "split", cpu_threads=1)
    assert second.step == 8
    a = torch.load(whole.checkpoint, weights_only=True)["model_state_dict"]
    b = torch.load(second.checkpoint, weights_only=True)["model_state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_another_variant_or_settings(units, tmp_path, cpu_threads=1):
    run(replace(SHORT, steps=2), units, tmp_path, cpu_threads=1)
    with pytest.raises(CheckpointError, match="variant 'tiny', not 'tiny-torchgru'"):
        run(replace(SHORT, variant="tiny-torchgru"), units, tmp_path, cpu_threads=1)
    with pytest.raises(CheckpointError, match="other settings .*lr"):
        run(replace(SHORT, lr=1.0), units, tmp_path, cpu_threads=1)
    with pytest.raises(UserInputError, match="exists"):
        run(SHORT, units, tmp_path, resume=False, cpu_threads=1)


@pytest.mark.slow
def test_demo_encoder_is_trained_once_then_cached(world, tmp_path):
    import time

    from tessera_ray.train import ensure_demo_encoder
    from tessera_ray.train.demo import DEMO_CONFIG

    config = replace(DEMO_CONFIG, steps=6, batch_size=32, pool_per_unit=500)
    path = ensure_demo_encoder(world, tmp_path, config)
    assert read_checkpoint(path).config.name == DEMO_CONFIG.variant
    first = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert ensure_demo_encoder(world, tmp_path, config) == path
    assert time.perf_counter() - t0 < 2 and path.stat().st_mtime_ns == first
    # other settings: trained again
    ensure_demo_encoder(world, tmp_path, replace(config, steps=7))
    assert torch.load(path, weights_only=True)["step"] == 7
    # another name keeps a second encoder (another seed) beside it, from the same cube
    other = ensure_demo_encoder(world, tmp_path, replace(config, steps=7, seed=1), name="demo-encoder-seed1")
    assert other != path and torch.load(path, weights_only=True)["step"] == 7
    weights = [read_checkpoint(p).model.state_dict() for p in (path, other)]
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert len(list(tmp_path.glob("demo-cube-*"))) == 1


def test_v2_run_writes_an_upstream_checkpoint_with_prefix_heads_ignored(units, tmp_path):
    from tessera_ray.model.family import family_of

    result = run(replace(SHORT, variant="v2-tiny", steps=6, checkpoint_every=6), units, tmp_path, cpu_threads=1)
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(np.isfinite(r["loss"]) and np.isfinite(r["bt"]) for r in log)
    payload = torch.load(result.checkpoint, weights_only=True)
    # the upstream v2 layout: args + model (no v1 key), plus our config and the training state
    assert {"args", "model", "config", "train_config", "optimizer_state_dict", "step"} <= set(payload)
    assert "model_state_dict" not in payload and payload["step"] == 6
    assert payload["args"]["latent_dim"] == 16 and payload["args"]["num_layers"] == 1
    assert payload["args"]["matryoshka_dims"] == "16,32,64,128"
    state = payload["model"]
    heads = {k.split(".")[1] for k in state if k.startswith("prefix_projectors.")}
    assert heads == {"d16", "d32", "d64"} and any(k.startswith("projector.") for k in state)
    assert state["prefix_projectors.d16.0.weight"].shape[1] == 16
    loaded = read_checkpoint(result.checkpoint)
    assert family_of(loaded.config).name == "v2" and loaded.config.name == "v2-tiny"
    assert loaded.ignored_keys and all(k.startswith(("projector.", "prefix_projectors.")) for k in loaded.ignored_keys)
    assert {k for k in state if k.startswith("prefix_projectors.")} <= set(loaded.ignored_keys)
    assert not any(k.startswith(("projector.", "prefix_projectors.")) for k in loaded.model.state_dict())
    # without our config entry the file is a plain upstream student checkpoint: its args name the structure
    bare = tmp_path / "upstream.pt"
    torch.save({"args": payload["args"], "model": state}, bare)
    upstream = read_checkpoint(bare)
    assert upstream.how == "args" and upstream.config == loaded.config
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, upstream.model.state_dict()[key]), key
