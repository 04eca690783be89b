"""The exact inference rules of v1.1 and v2 (TESSERA.md 4b, 4c) on hand-built pixels,
and v2 checkpoints in the upstream format."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from tessera_ray.errors import CheckpointError, UserInputError
from tessera_ray.model import (
    PixelSeries,
    build_encoder,
    encode_pixels,
    get_variant,
    matryoshka_depths,
    parameter_count,
    prepare,
    read_checkpoint,
    save_checkpoint,
    v2,
)
from tessera_ray.model.config import V11_STATS
from tessera_ray.model.family import FAMILIES, inference_rule, skeleton
from tessera_ray.model.sampling import v2_pattern, v11_pattern


def reference_middles(n, parts):
    return np.array([c[len(c) // 2] for c in np.array_split(np.arange(n), parts)])


def series(s2_valid_count, t=300, asc=(), desc=(), n=1, seed=0):
    """Pixels with ``s2_valid_count`` clear dates of ``t`` and SAR stacks of given validity."""
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 10000, size=(n, t, 10), dtype=np.uint16)
    masks = np.zeros((n, t), np.uint8)
    masks[:, :s2_valid_count] = 1
    doys = (np.arange(t) % 366 + 1).astype(np.uint16)

    def stack(valid):
        values = rng.integers(1, 30000, size=(n, len(valid), 2)).astype(np.int16)
        values[:, ~np.asarray(valid, bool)] = 0
        return values, np.arange(1, len(valid) + 1, dtype=np.int16) * 3

    a, ad = stack(asc)
    d, dd = stack(desc)
    return PixelSeries(block_id="test", year=2024, zone=31, rows=np.arange(n), cols=np.zeros(n, int),
                       s2_bands=bands, s2_masks=masks, s2_doys=doys,
                       sar_ascending=a, sar_ascending_doys=ad, sar_descending=d, sar_descending_doys=dd)


# ---------------------------------------------------------------- v1.1 pattern (4b)

@pytest.mark.parametrize("n,bucket", [(1, 8), (8, 8), (9, 16), (16, 16), (17, 24), (255, 256), (256, 256),
                                      (257, 256), (300, 256), (1000, 256)])
def test_v11_pattern_follows_the_equations(n, bucket):
    got = v11_pattern(n, bucket)
    assert len(got) == bucket
    if bucket == n:
        np.testing.assert_array_equal(got, np.arange(n))
    elif bucket < n:
        np.testing.assert_array_equal(got, reference_middles(n, bucket))
    else:
        extra = np.rint(np.linspace(0, n - 1, bucket - n + 2)[1:-1]).astype(int)
        np.testing.assert_array_equal(got, np.concatenate((np.arange(n), extra)))


def test_v11_pattern_by_hand():
    assert v11_pattern(1, 8).tolist() == [0] * 8
    # 9 steps into 16: all nine, then rint(linspace(0, 8, 9)[1:-1]) = 1..7, not interleaved
    assert v11_pattern(9, 16).tolist() == list(range(9)) + [1, 2, 3, 4, 5, 6, 7]
    # half to even: linspace(0, 4, 5)[1:-1] = 1, 2, 3 exactly; linspace(0, 1, 4)[1:-1] = 1/3, 2/3 -> 0, 1
    assert v11_pattern(2, 4).tolist() == [0, 1, 0, 1]
    # 10 into 8: chunks 2,2,1,1,1,1,1,1 -> middles 1, 3, 4, 5, 6, 7, 8, 9
    assert v11_pattern(10, 8).tolist() == [1, 3, 4, 5, 6, 7, 8, 9]


def test_v11_prepare_buckets_empty_streams_and_per_source_statistics():
    config = get_variant("v1.1")
    pixels = series(300, t=300, asc=[1, 0, 1], desc=[])
    (group,) = prepare(config, pixels, data_source="aws").groups
    assert group.key == (256, 8)
    # S2: more than 256 valid steps -> the middles of 256 array_split chunks
    idx = reference_middles(300, 256)
    stats = V11_STATS["aws"]
    expected = (pixels.s2_bands[0, idx].astype(np.float32) - np.float32(stats.s2_mean)) / (
        np.float32(stats.s2_std) + np.float32(1e-9))
    np.testing.assert_array_equal(group.s2[0, :, :10], expected)
    np.testing.assert_array_equal(group.s2[0, :, 10], pixels.s2_doys[idx].astype(np.float32))
    # S1: two valid ascending steps padded to 8: [0, 1] + rint(linspace(0, 1, 8)[1:-1])
    asc = pixels.sar_ascending[0, [0, 2]].astype(np.float32)
    norm = (asc - np.float32(stats.s1_asc_mean)) / (np.float32(stats.s1_asc_std) + np.float32(1e-9))
    pattern = v11_pattern(2, 8)
    np.testing.assert_array_equal(group.s1[0, :, :2], norm[pattern])
    # mpc statistics give other inputs
    (other,) = prepare(config, pixels, data_source="mpc").groups
    assert not np.allclose(other.s2, group.s2)

    # an empty S2 stream is the first bucket of zeros, DOY column too
    cloudy = series(0, t=20, asc=[1, 1], desc=[1])
    (group,) = prepare(config, cloudy, data_source="mpc").groups
    assert group.s2.shape == (1, 8, 11) and not group.s2.any()
    # neither stream: no data
    nothing = series(0, t=20, asc=[0], desc=[0])
    prepared = prepare(config, nothing, data_source="mpc")
    assert prepared.nodata.tolist() == [True] and prepared.groups == ()


def test_v11_needs_a_data_source_unless_the_checkpoint_records_it(tmp_path):
    config = get_variant("tiny-v1.1")
    model = build_encoder(config, seed=0)
    with pytest.raises(UserInputError, match="--data-source aws|mpc"):
        prepare(config, series(5, t=10), data_source=None)
    with pytest.raises(UserInputError, match="unknown data source"):
        prepare(config, series(5, t=10), data_source="gee")
    save_checkpoint(model, tmp_path / "plain.pt", config)
    save_checkpoint(model, tmp_path / "aws.pt", config, data_source="aws")
    plain = read_checkpoint(tmp_path / "plain.pt")
    recorded = read_checkpoint(tmp_path / "aws.pt")
    assert plain.data_source is None and recorded.data_source == "aws"
    assert recorded.rule().norm == V11_STATS["aws"]
    assert plain.rule("mpc").norm == V11_STATS["mpc"]
    with pytest.raises(UserInputError, match="records data source 'aws'"):
        recorded.rule("mpc")
    with pytest.raises(UserInputError, match="--data-source"):
        plain.rule(None)


# ---------------------------------------------------------------- v2 pattern (4c)

@pytest.mark.parametrize("n,bucket", [(1, 8), (3, 8), (4, 8), (5, 8), (8, 8), (9, 16), (13, 16),
                                      (256, 256), (257, 256), (400, 256)])
def test_v2_pattern_follows_the_equations(n, bucket):
    got = v2_pattern(n, bucket)
    assert len(got) == bucket
    if n >= bucket:
        np.testing.assert_array_equal(got, np.linspace(0, n - 1, bucket).astype(int))
    else:
        r = bucket - n
        extra = reference_middles(n, r) if r <= n else np.arange(r) % n
        np.testing.assert_array_equal(got, np.concatenate((np.arange(n), extra)))


def test_v2_pattern_by_hand():
    assert v2_pattern(1, 8).tolist() == [0] * 8                     # r = 7 > n: arange(7) mod 1
    assert v2_pattern(3, 8).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]    # r = 5 > 3: arange(5) mod 3
    assert v2_pattern(5, 8).tolist() == [0, 1, 2, 3, 4, 1, 3, 4]    # r = 3 <= 5: middles of [0 1] [2 3] [4]
    assert v2_pattern(300, 256)[:4].tolist() == [0, 1, 2, 3] and v2_pattern(300, 256)[-1] == 299


@pytest.mark.parametrize("asc,desc", [([1, 0, 1], []), ([], [0, 1, 1, 1]), ([0, 0], [0])])
def test_v2_prepare_orbits_normalised_apart_and_empty_stream_is_one_zero_step(asc, desc):
    config = get_variant("v2-tiny")
    pixels = series(12, t=30, asc=asc, desc=desc)
    (group,) = prepare(config, pixels).groups
    assert group.s2.shape == (1, 16, 11)
    valid_asc = np.flatnonzero(asc)
    valid_desc = np.flatnonzero(desc)
    parts = [(pixels.sar_ascending[0, valid_asc].astype(np.float32) - np.float32(v2.S1_ASC_MEAN))
             / (np.float32(v2.S1_ASC_STD) + np.float32(1e-9)),
             (pixels.sar_descending[0, valid_desc].astype(np.float32) - np.float32(v2.S1_DESC_MEAN))
             / (np.float32(v2.S1_DESC_STD) + np.float32(1e-9))]
    merged = np.concatenate(parts)
    doys = np.concatenate((pixels.sar_ascending_doys[valid_asc], pixels.sar_descending_doys[valid_desc]))
    n = len(merged)
    if n == 0:
        assert group.s1.shape == (1, 1, 3) and not group.s1.any()  # zero in standardised units, DOY 0
    else:
        pattern = v2_pattern(n, 8)
        np.testing.assert_array_equal(group.s1[0, :, :2], merged[pattern])
        np.testing.assert_array_equal(group.s1[0, :, 2], doys[pattern].astype(np.float32))


def test_v2_pixel_with_neither_stream_is_no_data_and_s1_only_runs():
    config = get_variant("v2-tiny")
    model = build_encoder(config, seed=2)
    neither = series(0, t=10, asc=[0, 0], desc=[0], n=1)
    out = encode_pixels(model, config, neither)
    assert np.isnan(out.scales[0]) and not out.embeddings[0].any()
    s1_only = series(0, t=10, asc=[1, 1], desc=[0], n=1)
    (group,) = prepare(config, s1_only).groups
    assert group.s2.shape == (1, 1, 11) and not group.s2.any()
    out = encode_pixels(model, config, s1_only)
    assert np.isfinite(out.scales[0]) and out.embeddings[0].any()


def test_v2_int8_is_symmetric_with_its_own_minimum_scale():
    rule = inference_rule(get_variant("v2-tiny"))
    e = torch.tensor([[-3.0, 1.5, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 0.25, 0.0]])
    q, scale = rule.quantise(e)
    assert q.dtype == torch.int8 and int(q.min()) >= -127
    assert q[0].tolist() == [-127, 64, 127, 0]  # 1.5 / (3/127) = 63.5 -> 64 (torch rounds half to even: 64)
    assert float(scale[1]) == pytest.approx(1e-12)
    assert q[2].tolist()[0] == -127


def test_v2_output_is_layer_normed_and_matryoshka_depths_are_declared():
    config = get_variant("v2-tiny")
    model = build_encoder(config, seed=0)
    pixels = series(20, t=40, asc=[1] * 6, desc=[1] * 5, n=4, seed=3)
    (group,) = prepare(config, pixels).groups
    with torch.no_grad():
        e = model(torch.from_numpy(group.s2), torch.from_numpy(group.s1))
    assert e.shape == (4, 128)
    np.testing.assert_allclose(e.mean(1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(e.std(1, unbiased=False).numpy(), 1, atol=1e-3)
    assert matryoshka_depths(config) == (16, 32, 64, 128)
    assert matryoshka_depths(get_variant("v1.1")) == ()


def test_qk_norm_layer_is_rmsnormed_scaled_dot_product_attention():
    torch.manual_seed(0)
    layer = v2.QKNormLayer(d=16, heads=2, ffn=32).eval()
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        got = layer(x)

        def heads(t):
            return t.view(3, 5, 2, 8).transpose(1, 2)

        def rms(t, w):
            return t / torch.sqrt(t.pow(2).mean(-1, keepdim=True) + torch.finfo(t.dtype).eps) * w

        q = rms(heads(layer.q_proj(x)), layer.q_norm.weight)
        k = rms(heads(layer.k_proj(x)), layer.k_norm.weight)
        v = heads(layer.v_proj(x))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(3, 5, 16)
        h = layer.norm1(x + layer.out_proj(attended))
        expected = layer.norm2(h + layer.linear2(torch.relu(layer.linear1(h))))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- v2 checkpoints

def test_published_student_sizes_match_the_published_parameter_counts():
    published = {"v2-nano": 1.07e6, "v2-small": 7.11e6, "v2-medium": 21.03e6, "v2-large": 43.83e6}
    for name, count in published.items():
        assert round(parameter_count(skeleton(get_variant(name))) / 1e4) == round(count / 1e4), name
    assert parameter_count(skeleton(get_variant("v2-small"))) == 7_112_322


def upstream_file(path, config, seed=0, **args_override):
    """A checkpoint as upstream writes it: only ``args`` and ``model``, no config of ours."""
    model = build_encoder(config, seed=seed)
    args = {**config.args(), **args_override}
    torch.save({"args": args, "model": model.state_dict(), "epoch": 3}, path)
    return model


@pytest.mark.parametrize("name", ["v2-tiny", "v2-tiny-qk"])
def test_upstream_v2_checkpoints_load_with_and_without_qk_norm(tmp_path, name):
    config = get_variant(name)
    model = upstream_file(tmp_path / "student.pt", config)
    loaded = read_checkpoint(tmp_path / "student.pt")
    assert loaded.family.name == "v2" and loaded.config == config and loaded.how == "args"
    assert loaded.extra == ("epoch",)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    qk_keys = [k for k in loaded.model.state_dict() if "q_norm" in k]
    assert bool(qk_keys) == config.qk_norm
    if config.qk_norm:
        assert "s2_backbone.transformer_encoder.0.q_proj.weight" in loaded.model.state_dict()
    else:
        assert "s2_backbone.transformer_encoder.layers.0.self_attn.in_proj_weight" in loaded.model.state_dict()


def test_args_defaults_are_small_and_unknown_structures_still_load(tmp_path):
    config = get_variant("v2-small")
    model = build_encoder(config, seed=0)
    torch.save({"args": {}, "model": model.state_dict()}, tmp_path / "defaults.pt")
    assert read_checkpoint(tmp_path / "defaults.pt").config.name == "v2-small"
    custom = v2.StudentConfig("x", latent=8, layers=2, heads=4, ffn=64)
    upstream_file(tmp_path / "custom.pt", custom)
    loaded = read_checkpoint(tmp_path / "custom.pt")
    assert (loaded.config.latent, loaded.config.layers, loaded.config.heads) == (8, 2, 4)


def test_ours_round_trip_in_the_upstream_format(tmp_path):
    config = get_variant("v2-tiny-qk")
    model = build_encoder(config, seed=4)
    save_checkpoint(model, tmp_path / "ours.pt", config)
    payload = torch.load(tmp_path / "ours.pt", weights_only=True)
    assert payload["args"]["matryoshka_dims"] == "16,32,64,128" and payload["args"]["enable_qk_norm"] is True
    assert payload["args"]["nhead"] == 2 and set(payload["model"]) == set(model.state_dict())
    loaded = read_checkpoint(tmp_path / "ours.pt")
    assert loaded.config == config and loaded.how == "checkpoint config"


@pytest.mark.parametrize("damage,message", [
    ("missing", "missing keys"),
    ("extra", "unexpected keys"),
    ("shape", "wrong shapes"),
    ("args", "wrong shapes|missing keys"),
    ("qk", "missing keys"),
    ("badargs", "args do not describe"),
])
def test_broken_v2_checkpoints_are_one_clear_error(tmp_path, damage, message):
    config = get_variant("v2-tiny")
    state = build_encoder(config, seed=0).state_dict()
    args = config.args()
    if damage == "missing":
        state.pop("dim_reducer.4.weight")
    elif damage == "extra":
        state["s2_backbone.surprise.weight"] = torch.zeros(2)
    elif damage == "shape":
        state["dim_reducer.0.bias"] = torch.zeros(3)
    elif damage == "args":
        args["dim_feedforward"] = 256  # contradicts the weights
    elif damage == "qk":
        args["enable_qk_norm"] = True
    elif damage == "badargs":
        args["latent_dim"] = "wide"
    torch.save({"args": args, "model": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(tmp_path / "broken.pt")
    assert "\n" not in str(info.value)


def test_registry_lists_both_families():
    assert set(FAMILIES) == {"v1", "v2"}
    assert {"v2-nano", "v2-small", "v2-medium", "v2-large", "v1.0", "v1.1"} <= set(
        name for f in FAMILIES.values() for name in f.variants)


def test_model_cli_init_and_info_for_v2(tmp_path):
    run = [sys.executable, "-m", "tessera_ray.cli", "model"]
    made = subprocess.run(run + ["init", "--variant", "v2-small", "--out", str(tmp_path / "s.pt")],
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    info = subprocess.run(run + ["info", str(tmp_path / "s.pt"), "--json"], capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    import json

    summary = json.loads(info.stdout)
    assert summary["family"] == "v2" and summary["variant"] == "v2-small"
    assert summary["parameters"] == 7_112_322 and summary["output_dims"] == 128
    assert summary["matryoshka_depths"] == [16, 32, 64, 128]
    text = subprocess.run(run + ["info", str(tmp_path / "s.pt")], capture_output=True, text=True).stdout
    assert "family      v2" in text and "Matryoshka depths 16, 32, 64, 128" in text
