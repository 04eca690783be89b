"""The encoder modules against the published structure and equations.

The reference forward pass below is written from TESSERA.md section 4 with
plain tensor operations on the state dict, independently of the modules.
"""

from __future__ import annotations

import math

import pytest
import torch

from tessera_ray.model import VARIANTS, build_encoder, get_variant, parameter_count
from tessera_ray.model.network import TesseraEncoder, doy_encoding, doy_frequencies

# ---------------------------------------------------------------- reference


def ref_linear(x, state, name):
    out = x @ state[f"{name}.weight"].T
    if f"{name}.bias" in state:
        out = out + state[f"{name}.bias"]
    return out


def ref_layer_norm(x, state, name, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * state[f"{name}.weight"] + state[f"{name}.bias"]


def ref_doy(doy, d):
    out = torch.zeros(*doy.shape, d)
    for i in range(d // 2):
        div = math.exp(2 * i * (-math.log(10000.0) / d))
        out[..., 2 * i] = torch.sin(doy * torch.tensor(div, dtype=torch.float32))
        out[..., 2 * i + 1] = torch.cos(doy * torch.tensor(div, dtype=torch.float32))
    return out


def ref_attention(x, state, name, heads):
    b, t, d = x.shape
    w, bias = state[f"{name}.in_proj_weight"], state[f"{name}.in_proj_bias"]
    q, k, v = (x @ w[i * d:(i + 1) * d].T + bias[i * d:(i + 1) * d] for i in range(3))
    dh = d // heads
    outs = []
    for h in range(heads):
        qh, kh, vh = (m[..., h * dh:(h + 1) * dh] for m in (q, k, v))
        att = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(dh), dim=-1)
        outs.append(att @ vh)
    return ref_linear(torch.cat(outs, dim=-1), state, f"{name}.out_proj")


def ref_encoder_layer(x, state, name, heads):
    x = ref_layer_norm(x + ref_attention(x, state, f"{name}.self_attn", heads), state, f"{name}.norm1")
    ff = ref_linear(torch.relu(ref_linear(x, state, f"{name}.linear1")), state, f"{name}.linear2")
    return ref_layer_norm(x + ff, state, f"{name}.norm2")


def ref_torch_gru(x, state, name):
    wih, whh = state[f"{name}.weight_ih_l0"], state[f"{name}.weight_hh_l0"]
    bih, bhh = state[f"{name}.bias_ih_l0"], state[f"{name}.bias_hh_l0"]
    d = whh.shape[1]
    h = torch.zeros(x.shape[0], d)
    outs = []
    for t in range(x.shape[1]):
        gi = x[:, t] @ wih.T + bih
        gh = h @ whh.T + bhh
        r = torch.sigmoid(gi[:, :d] + gh[:, :d])
        z = torch.sigmoid(gi[:, d:2 * d] + gh[:, d:2 * d])
        n = torch.tanh(gi[:, 2 * d:] + r * gh[:, 2 * d:])
        h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs, 1)


def ref_custom_gru(x, state, name):
    w = {k: state[f"{name}.gru_cell.{k}.weight"] for k in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh")}
    b = {k: state[f"{name}.gru_cell.{k}"] for k in ("b_r", "b_z", "b_h")}
    h = torch.zeros(x.shape[0], w["W_hh"].shape[0])
    outs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        r = torch.sigmoid(xt @ w["W_ir"].T + h @ w["W_hr"].T + b["b_r"])
        z = torch.sigmoid(xt @ w["W_iz"].T + h @ w["W_hz"].T + b["b_z"])
        cand = torch.tanh(xt @ w["W_ih"].T + (r * h) @ w["W_hh"].T + b["b_h"])
        h = (1 - z) * h + z * cand
        outs.append(h)
    return torch.stack(outs, 1)


def ref_backbone(x, state, name, config):
    d = config.d
    bands, doy = x[..., :-1], x[..., -1]
    e = ref_linear(torch.relu(ref_linear(bands, state, f"{name}.embedding.0")), state, f"{name}.embedding.2")
    h = e + ref_doy(doy, d)
    for i in range(config.layers):
        h = ref_encoder_layer(h, state, f"{name}.transformer_encoder.layers.{i}", config.heads)
    pool = f"{name}.attn_pool"
    if config.gru == "torch":
        ctx = ref_torch_gru(h, state, f"{pool}.temporal_context")
    else:
        ctx = ref_layer_norm(ref_custom_gru(h, state, f"{pool}.temporal_context"), state, f"{pool}.layer_norm")
    weights = torch.softmax(ref_linear(ctx, state, f"{pool}.query"), dim=1)
    return (weights * h).sum(1)


def ref_encoder(state, config, s2, s1):
    fused = torch.cat([ref_backbone(s2, state, "s2_backbone", config),
                       ref_backbone(s1, state, "s1_backbone", config)], -1)
    if config.reducer_hidden:
        h = ref_linear(fused, state, "dim_reducer.0")
        h = torch.relu(ref_layer_norm(h, state, "dim_reducer.1"))
        out = ref_linear(h, state, "dim_reducer.4")
    else:
        out = ref_linear(fused, state, "dim_reducer.0")
    return out[:, :128]


def random_inputs(n, t2, t1, seed=0):
    g = torch.Generator().manual_seed(seed)
    s2 = torch.randn(n, t2, 11, generator=g)
    s1 = torch.randn(n, t1, 3, generator=g)
    s2[..., -1] = torch.randint(1, 367, (n, t2), generator=g).float()
    s1[..., -1] = torch.randint(1, 367, (n, t1), generator=g).float()
    return s2, s1


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("name,published", [("v1.0", 87.8e6), ("v1.0-qat", 45.8e6), ("v1.1", 57.7e6)])
def test_parameter_counts_match_published(name, published):
    with torch.device("meta"):
        model = TesseraEncoder(get_variant(name))
    assert abs(parameter_count(model) - published) / published < 0.002


def test_state_dict_keys_follow_upstream_layout():
    with torch.device("meta"):
        keys = {
            name: set(TesseraEncoder(get_variant(name)).state_dict())
            for name in ("v1.0", "v1.0-qat", "v1.1")
        }
    common = {
        "s2_backbone.embedding.0.weight", "s2_backbone.embedding.2.bias",
        "s1_backbone.embedding.0.weight",
        "s2_backbone.transformer_encoder.layers.0.self_attn.in_proj_weight",
        "s2_backbone.transformer_encoder.layers.3.self_attn.out_proj.weight",
        "s1_backbone.transformer_encoder.layers.3.linear1.weight",
        "s1_backbone.transformer_encoder.layers.0.norm2.bias",
        "s2_backbone.attn_pool.query.weight", "dim_reducer.0.weight",
    }
    custom = {
        "s2_backbone.attn_pool.temporal_context.gru_cell.W_ir.weight",
        "s1_backbone.attn_pool.temporal_context.gru_cell.W_hh.weight",
        "s2_backbone.attn_pool.temporal_context.gru_cell.b_z",
        "s2_backbone.attn_pool.layer_norm.weight",
    }
    torch_gru = {
        "s2_backbone.attn_pool.temporal_context.weight_ih_l0",
        "s1_backbone.attn_pool.temporal_context.bias_hh_l0",
    }
    assert common | torch_gru <= keys["v1.0"]
    assert "s2_backbone.transformer_encoder.layers.7.linear2.weight" in keys["v1.0"]
    assert not any("layer_norm" in k or "gru_cell" in k for k in keys["v1.0"])
    assert common | custom <= keys["v1.0-qat"]
    assert "s2_backbone.transformer_encoder.layers.4.linear1.weight" not in keys["v1.0-qat"]
    assert common | custom | {"dim_reducer.1.weight", "dim_reducer.4.weight"} <= keys["v1.1"]
    # no learned position parameters, nothing else at the top level
    for k in set().union(*keys.values()):
        assert k.split(".")[0] in ("s2_backbone", "s1_backbone", "dim_reducer")
        assert "pos" not in k


@pytest.mark.parametrize("name", ["tiny", "tiny-torchgru", "tiny-v1.1", "small"])
def test_forward_equals_published_equations(name):
    config = get_variant(name)
    model = build_encoder(config, seed=3)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    s2, s1 = random_inputs(5, 9, 6)
    with torch.no_grad():
        got = model(s2, s1)
        want = ref_encoder(state, config, s2, s1)
    assert got.shape == (5, 128)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_full_size_forward_equals_published_equations():
    config = get_variant("v1.1")
    model = build_encoder(config, seed=1)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    s2, s1 = random_inputs(2, 40, 12, seed=2)
    with torch.no_grad():
        got = model(s2, s1)
        want = ref_encoder(state, config, s2, s1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny", "tiny-torchgru"])
def test_single_step_pools_to_the_step_itself(name):
    model = build_encoder(get_variant(name), seed=0)
    s2, _ = random_inputs(4, 1, 1)
    backbone = model.s2_backbone
    with torch.no_grad():
        d = get_variant(name).d
        tokens = backbone.embedding(s2[..., :-1]) + doy_encoding(s2[..., -1], doy_frequencies(d))
        step = backbone.transformer_encoder(tokens)[:, 0]
        torch.testing.assert_close(backbone(s2), step, atol=1e-6, rtol=0)


def test_outputs_do_not_depend_on_batch_neighbours():
    model = build_encoder(get_variant("tiny"), seed=0)
    s2, s1 = random_inputs(6, 10, 7)
    with torch.inference_mode():
        together = model(s2, s1)
        alone = torch.cat([model(s2[i:i + 1], s1[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_seeded_build_is_reproducible_and_seed_dependent():
    a = build_encoder(get_variant("tiny"), seed=5).state_dict()
    b = build_encoder(get_variant("tiny"), seed=5).state_dict()
    c = build_encoder(get_variant("tiny"), seed=6).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_registry_names_and_unknown_variant():
    assert {"v1.0", "v1.0-qat", "v1.1", "small", "tiny"} <= set(VARIANTS)
    assert get_variant("tiny").d == 64 and get_variant("small").d == 128
    from tessera_ray.errors import UserInputError

    with pytest.raises(UserInputError, match="unknown encoder variant"):
        get_variant("v9")
