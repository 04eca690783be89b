"""Temporal sampling, normalisation, quantisation and the inference entry point."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tessera_ray.errors import UserInputError
from tessera_ray.model import (
    PixelSeries,
    build_encoder,
    dequantise,
    encode_pixels,
    get_variant,
    prepare,
    quantise,
)
from tessera_ray.model.config import V10_S1_MEAN, V10_S2_MEAN, V10_S2_STD
from tessera_ray.model.sampling import (
    STREAM_S2,
    mix64,
    pixel_seeds,
    random_steps,
    uniforms,
)

# ---------------------------------------------------------------- helpers


def make_series(n=40, t=30, ta=8, td=6, seed=0, block_id="utm31_4096_0001_0002",
                row0=4096, col0=8192, valid_fraction=0.6):
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 10000, size=(n, t, 10), dtype=np.uint16)
    masks = (rng.random((n, t)) < valid_fraction).astype(np.uint8)
    asc = rng.integers(1, 32767, size=(n, ta, 2), dtype=np.int16)
    desc = rng.integers(1, 32767, size=(n, td, 2), dtype=np.int16)
    asc[rng.random((n, ta)) < 0.3] = 0
    desc[rng.random((n, td)) < 0.3] = 0
    return PixelSeries(
        block_id=block_id, year=2024, zone=31,
        rows=row0 + np.arange(n) // 8, cols=col0 + np.arange(n) % 8,
        s2_bands=bands, s2_masks=masks, s2_doys=np.sort(rng.choice(np.arange(1, 367), t, replace=False)),
        sar_ascending=asc, sar_ascending_doys=np.sort(rng.integers(1, 367, ta)).astype(np.int16),
        sar_descending=desc, sar_descending_doys=np.sort(rng.integers(1, 367, td)).astype(np.int16),
    )


def loop_random_steps(valid, seeds, stream, steps):
    """The v1.0 rule one pixel at a time, from the same hash (reference for the vectorised code)."""
    out = []
    for row, seed in zip(valid, seeds):
        candidates = np.flatnonzero(row) if row.any() else np.arange(len(row))
        u = uniforms(np.array([seed]), stream, max(len(row), steps))[0]
        if len(candidates) >= steps:
            keys = u[candidates]
            chosen = candidates[np.argsort(keys, kind="stable")[:steps]]
        else:
            chosen = candidates[np.minimum((u[:steps] * len(candidates)).astype(int), len(candidates) - 1)]
        out.append(np.sort(chosen))
    return np.array(out)


@pytest.fixture(scope="module")
def tiny():
    """The tiny structure under the v1.0 rule (40 random steps), which these tests pin down."""
    config = replace(get_variant("tiny"), sampling="random40")
    return config, build_encoder(config, seed=0)


# ---------------------------------------------------------------- seeds and sampling


def test_mix64_matches_splitmix64_reference_values():
    # splitmix64 seeded with 0 yields 0xE220A8397B1DCDAF first: mix(0 + gamma)
    gamma = np.uint64(0x9E3779B97F4A7C15)
    assert int(mix64(np.array([gamma]))[0]) == 0xE220A8397B1DCDAF


def test_pixel_seeds_depend_on_every_part_of_the_key():
    base = pixel_seeds(0, 2024, 31, np.array([10]), np.array([20]))
    for args in [(1, 2024, 31, 10, 20), (0, 2023, 31, 10, 20), (0, 2024, 32, 10, 20),
                 (0, 2024, 31, 11, 20), (0, 2024, 31, 10, 21), (0, 2024, 31, 20, 10)]:
        seed, year, zone, row, col = args
        assert pixel_seeds(seed, year, zone, np.array([row]), np.array([col]))[0] != base[0]
    assert pixel_seeds(0, 2024, 31, np.array([10]), np.array([20]))[0] == base[0]


def test_random_steps_match_a_per_pixel_loop_and_follow_the_rules():
    rng = np.random.default_rng(1)
    t = 70
    valid = rng.random((300, t)) < rng.random((300, 1))  # 0 to 70 valid steps
    valid[:5] = False  # no valid step at all
    valid[5:10] = True
    seeds = pixel_seeds(7, 2024, 31, np.arange(300), np.arange(300))
    got = random_steps(valid, seeds, STREAM_S2, 40)
    np.testing.assert_array_equal(got, loop_random_steps(valid, seeds, STREAM_S2, 40))
    assert got.shape == (300, 40)
    assert (np.diff(got, axis=1) >= 0).all()
    for row, idx in zip(valid, got):
        n_valid = row.sum()
        if n_valid == 0:
            continue  # sampled from all steps
        assert row[idx].all()
        if n_valid >= 40:
            assert len(set(idx.tolist())) == 40  # without replacement
    # no valid step: draws come from all steps, spread over the series
    assert len(set(got[:5].ravel().tolist())) > 40


def test_random_steps_of_a_pixel_do_not_depend_on_its_neighbours():
    rng = np.random.default_rng(2)
    valid = rng.random((50, 60)) < 0.5
    seeds = pixel_seeds(0, 2024, 31, np.arange(50), np.zeros(50))
    full = random_steps(valid, seeds, STREAM_S2, 40)
    order = rng.permutation(50)[:17]
    np.testing.assert_array_equal(random_steps(valid[order], seeds[order], STREAM_S2, 40), full[order])


# ---------------------------------------------------------------- quantisation


def test_quantise_follows_the_published_rule():
    e = torch.tensor([[0.5, -1.27, 0.004, 0.0], [0.0, 0.0, 0.0, 0.0], [2.54, 1.27, -0.0101, 1e-3]])
    q, scale = quantise(e)
    torch.testing.assert_close(scale, torch.tensor([1.27 / 127, 1e-8, 2.54 / 127]))
    assert q.dtype == torch.int8
    assert q[0].tolist() == [50, -127, 0, 0]
    assert q[1].tolist() == [0, 0, 0, 0]
    assert q[2].tolist() == [127, 64, -1, 0]  # 63.5 rounds half to even: 64
    deq = dequantise(q.numpy(), scale.numpy())
    assert np.abs(deq - e.numpy()).max() <= 2.54 / 127 / 2 + 1e-7


# ---------------------------------------------------------------- PixelSeries


def test_from_block_flattens_row_major_with_absolute_keys():
    t, h, w = 5, 3, 4
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 5000, (t, h, w, 10), dtype=np.uint16)
    masks = rng.integers(0, 2, (t, h, w), dtype=np.uint8)
    asc = rng.integers(0, 9000, (2, h, w, 2), dtype=np.int16)
    desc = np.zeros((0, h, w, 2), dtype=np.int16)
    p = PixelSeries.from_block(
        block_id="blk", year=2024, zone=30, row=100, col=200, bands=bands, masks=masks,
        doys=np.arange(1, 6, dtype=np.uint16), sar_ascending=asc,
        sar_ascending_doy=np.array([3, 9], np.int16), sar_descending=desc,
        sar_descending_doy=np.zeros(0, np.int16),
    )
    assert len(p) == 12
    i = 1 * w + 2
    assert (p.rows[i], p.cols[i]) == (101, 202)
    np.testing.assert_array_equal(p.s2_bands[i], bands[:, 1, 2])
    np.testing.assert_array_equal(p.s2_masks[i], masks[:, 1, 2])
    np.testing.assert_array_equal(p.sar_ascending[i], asc[:, 1, 2])
    assert p.sar_descending.shape == (12, 0, 2)


@pytest.mark.parametrize("field,value,message", [
    ("s2_doys", "zero", "outside 1..366"),
    ("sar_ascending_doys", "big", "outside 1..366"),
    ("s2_bands", "nan", "NaN"),
    ("sar_descending", "nan", "NaN"),
    ("s2_masks", "short", "shape"),
])
def test_bad_input_is_refused_naming_the_block(field, value, message):
    good = make_series(n=6, t=5, ta=3, td=2)
    kwargs = {f: getattr(good, f) for f in good.__dataclass_fields__}
    array = np.array(kwargs[field])
    if value == "zero":
        array[0] = 0
    elif value == "big":
        array[-1] = 367
    elif value == "nan":
        array = array.astype(np.float32)
        array[1, 0, 0] = np.nan
    elif value == "short":
        array = array[:, :-1]
    kwargs[field] = array
    with pytest.raises(UserInputError, match=message) as info:
        PixelSeries(**kwargs)
    assert "utm31_4096_0001_0002" in str(info.value)


# ---------------------------------------------------------------- encode_pixels


def test_normalisation_and_inputs_use_the_published_statistics(tiny):
    config, _ = tiny
    p = make_series(n=3, t=4, ta=2, td=2)
    bands = np.tile(np.round(V10_S2_MEAN).astype(np.uint16), (3, 4, 1))
    bands[:, :, 0] = 1711 + 1926  # about one std above the mean
    masks = np.ones((3, 4), np.uint8)
    asc = np.tile(np.round(V10_S1_MEAN).astype(np.int16), (3, 2, 1))
    p = PixelSeries(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                       "s2_bands": bands, "s2_masks": masks, "sar_ascending": asc})
    (group,) = prepare(config, p).groups
    assert group.s2.shape == (3, 40, 11) and group.s1.shape == (3, 40, 3)
    expected = (3637 - np.float32(1711.0938)) / (np.float32(1926.1026) + np.float32(1e-9))
    np.testing.assert_allclose(group.s2[..., 0], expected, rtol=1e-6)
    assert np.abs(group.s2[..., 1:10]).max() < 0.001
    assert set(group.s2[0, :, 10].tolist()) <= set(p.s2_doys.tolist())
    # S1: ascending steps come first in time order of the concatenation
    s1_doys = group.s1[0, :, 2]
    all_doys = np.concatenate([p.sar_ascending_doys, p.sar_descending_doys]).astype(np.float32)
    assert set(s1_doys.tolist()) <= set(all_doys.tolist())


def test_encode_pixels_equals_the_steps_done_by_hand(tiny):
    config, model = tiny
    p = make_series(n=6, t=50, seed=4)
    got = encode_pixels(model, config, p, seed=9)
    seeds = pixel_seeds(9, 2024, 31, p.rows, p.cols)
    s2_idx = loop_random_steps(p.s2_masks == 1, seeds, STREAM_S2, 40)
    sar = np.concatenate([p.sar_ascending, p.sar_descending], axis=1)
    sar_doy = np.concatenate([p.sar_ascending_doys, p.sar_descending_doys])
    from tessera_ray.model.sampling import STREAM_S1

    s1_idx = loop_random_steps((sar != 0).any(-1), seeds, STREAM_S1, 40)
    mean, std = np.float32(V10_S2_MEAN), np.float32(V10_S2_STD)
    for i in range(6):
        s2 = (p.s2_bands[i, s2_idx[i]].astype(np.float32) - mean) / (std + np.float32(1e-9))
        s2 = np.concatenate([s2, p.s2_doys[s2_idx[i], None].astype(np.float32)], 1)
        n1 = config.norm  # v1.0: one S1 set for both orbits
        s1 = (sar[i, s1_idx[i]].astype(np.float32) - np.float32(n1.s1_asc_mean)) / (
            np.float32(n1.s1_asc_std) + np.float32(1e-9)
        )
        s1 = np.concatenate([s1, sar_doy[s1_idx[i], None].astype(np.float32)], 1)
        with torch.no_grad():
            e = model(torch.from_numpy(s2[None]), torch.from_numpy(s1[None]))[0].numpy()
        scale = max(np.abs(e).max() / 127, 1e-8)
        np.testing.assert_allclose(got.scales[i], scale, rtol=1e-5)
        q = np.clip(np.round(e / scale), -128, 127)
        assert np.abs(got.embeddings[i].astype(int) - q).max() <= 1


def test_no_data_and_all_zero_pixels(tiny):
    config, model = tiny
    p = make_series(n=10, t=12)
    masks = p.s2_masks.copy()
    bands = p.s2_bands.copy()
    masks[0] = 0  # no valid observation
    masks[1] = 1
    bands[1] = 0  # valid but all zero
    p = PixelSeries(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                       "s2_masks": masks, "s2_bands": bands})
    out = encode_pixels(model, config, p)
    assert out.embeddings.dtype == np.int8 and out.embeddings.shape == (10, 128)
    assert out.scales.dtype == np.float32
    assert np.isnan(out.scales[0]) and not out.embeddings[0].any()
    assert np.isfinite(out.scales[1]) and not out.embeddings[1].any()
    assert np.isfinite(out.scales[2:]).all() and (np.abs(out.embeddings[2:]).max(axis=1) == 127).all()


@pytest.mark.parametrize("name", ["tiny", "tiny-torchgru", "tiny-v1.1", "v2-tiny", "v2-tiny-qk"])
def test_embeddings_are_byte_identical_across_batching_and_order(name):
    config = get_variant(name)
    model = build_encoder(config, seed=1)
    p = make_series(n=40, t=40, ta=20, td=15, seed=5, valid_fraction=0.5)
    ref = encode_pixels(model, config, p, seed=3, batch_size=40, data_source="aws")
    again = encode_pixels(model, config, p, seed=3, batch_size=40, data_source="aws")
    order = np.random.default_rng(0).permutation(40)
    for batch_size, subset in ((1, order[:12]), (17, order[5:])):
        part = encode_pixels(model, config, p.take(subset), seed=3, batch_size=batch_size, data_source="aws")
        np.testing.assert_array_equal(part.embeddings, ref.embeddings[subset])
        np.testing.assert_array_equal(part.scales, ref.scales[subset])
    np.testing.assert_array_equal(again.embeddings, ref.embeddings)
    other_seed = encode_pixels(model, config, p, seed=4, batch_size=40, data_source="aws")
    if getattr(config, "sampling", "") == "random40":
        assert not np.array_equal(other_seed.embeddings, ref.embeddings)
    else:  # v1.1 and v2 use every valid step: no randomness
        np.testing.assert_array_equal(other_seed.embeddings, ref.embeddings)


def test_tiny_reads_every_clear_date_resampled_to_at_most_48():
    """tiny: all clear S2 dates padded to the next bucket by the v1.1 pattern, and a
    long SAR series thinned to 48 dates by it (TESSERA.md 4b)."""
    config = get_variant("tiny")
    p = make_series(n=3, t=60, ta=70, td=60, seed=2, valid_fraction=1.0)
    masks = np.zeros((3, 60), np.uint8)
    masks[:, ::2] = 1  # 30 clear dates of 60
    p.s2_masks[:] = masks
    p.sar_ascending[:] = 100
    p.sar_descending[:] = 100  # 130 valid SAR dates
    (group,) = prepare(config, p).groups
    assert group.s2.shape == (3, 32, 11) and group.s1.shape == (3, 48, 3)
    clear_doys = p.s2_doys[::2].astype(np.float32)
    for row in group.s2[:, :, -1]:
        # every clear date in order, then rint(linspace(0, 29, 4)[1:-1]) = dates 10 and 19 appended
        np.testing.assert_array_equal(row[:30], clear_doys)
        np.testing.assert_array_equal(row[30:], clear_doys[[10, 19]])
    sar_doys = np.concatenate([p.sar_ascending_doys, p.sar_descending_doys])
    # thinned: 130 split into 48 chunks (the first 34 of length 3), each chunk's middle
    sizes = np.array([3] * 34 + [2] * 14)
    middles = np.concatenate(([0], np.cumsum(sizes)[:-1])) + sizes // 2
    expected = sar_doys[middles].astype(np.float32)
    np.testing.assert_array_equal(group.s1[:, :, -1], np.tile(expected, (3, 1)))


def test_v11_groups_pixels_by_bucket_pair():
    config = get_variant("tiny-v1.1")
    p = make_series(n=30, t=60, ta=10, td=10, seed=6, valid_fraction=0.4)
    prepared = prepare(config, p, data_source="mpc")
    keys = [g.key for g in prepared.groups]
    assert len(keys) == len(set(keys)) > 1
    assert all(k2 % 8 == 0 and k1 % 8 == 0 for k2, k1 in keys)
    assert sorted(np.concatenate([g.pixels for g in prepared.groups]).tolist()) == list(range(30))


def test_missing_sar_stack_still_embeds(tiny):
    config, model = tiny
    p = make_series(n=4, t=10, ta=0, td=0)
    out = encode_pixels(model, config, p)
    assert np.isfinite(out.scales).all()
