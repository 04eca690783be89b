"""Checkpoints in the upstream format (TESSERA.md section 4) and in ours."""

from __future__ import annotations

import functools
import http.server
import io
import json
import threading

import pytest
import torch

from tessera_ray.errors import CheckpointError
from tessera_ray.model import (
    EncoderConfig,
    build_encoder,
    get_variant,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from tessera_ray.model.family import skeleton
from tessera_ray.model.v1 import infer_variant


def upstream_payload(model, prefix="_orig_mod.", under="model_state_dict"):
    """A training checkpoint as upstream writes it: prefixed keys, projector, optimiser."""
    state = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    state[prefix + "projector.0.weight"] = torch.randn(32, 128)
    state[prefix + "projector.1.running_mean"] = torch.zeros(32)
    return {under: state, "epoch": 3, "step": 1200,
            "optimizer_state_dict": {"state": {}, "param_groups": [{"lr": 1e-4}]}}


def write(path, payload):
    torch.save(payload, path)
    return path


def inputs(n=3, t2=7, t1=5):
    g = torch.Generator().manual_seed(0)
    s2, s1 = torch.randn(n, t2, 11, generator=g), torch.randn(n, t1, 3, generator=g)
    s2[..., -1] = torch.randint(1, 367, (n, t2), generator=g).float()
    s1[..., -1] = torch.randint(1, 367, (n, t1), generator=g).float()
    return s2, s1


@pytest.mark.parametrize("name", ["tiny", "tiny-torchgru", "tiny-v1.1"])
@pytest.mark.parametrize("prefix,under", [("_orig_mod.", "model_state_dict"), ("module.", "model_state"),
                                          ("module._orig_mod.", "model_state_dict"), ("", "model_state")])
def test_upstream_checkpoints_round_trip(tmp_path, name, prefix, under):
    model = build_encoder(get_variant(name), seed=11)
    path = write(tmp_path / "ckpt.pt", upstream_payload(model, prefix, under))
    loaded = read_checkpoint(path)
    assert loaded.config.name == name and loaded.how == "inferred"
    assert loaded.ignored_keys == ("projector.0.weight", "projector.1.running_mean")
    assert {"epoch", "optimizer_state_dict"} <= set(loaded.extra)
    want, got = model.state_dict(), loaded.model.state_dict()
    assert list(got) == list(want)
    for k in want:
        assert got[k].shape == want[k].shape and torch.equal(got[k], want[k]), k
    assert not loaded.model.training
    s2, s1 = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.model(s2, s1), model(s2, s1))


def test_plain_linear_reducer_keys_are_accepted(tmp_path):
    model = build_encoder(get_variant("tiny"), seed=1)
    state = model.state_dict()
    state["dim_reducer.weight"] = state.pop("dim_reducer.0.weight")
    state["dim_reducer.bias"] = state.pop("dim_reducer.0.bias")
    loaded = load_encoder(write(tmp_path / "c.pt", {"model_state_dict": state}))
    assert torch.equal(loaded.dim_reducer[0].weight, model.dim_reducer[0].weight)


@pytest.mark.parametrize("name", ["v1.0", "v1.0-qat", "v1.1"])
def test_full_size_variants_are_inferred_from_shapes(name):
    state = skeleton(get_variant(name)).state_dict()
    assert infer_variant(state, "x").name == name


def test_own_checkpoint_carries_its_config(tmp_path):
    # same shapes as "tiny" but other heads and statistics: only the config can tell
    config = EncoderConfig("custom", latent=16, layers=1, heads=4, ffn=128, gru="custom")
    model = build_encoder(config, seed=2)
    path = tmp_path / "own.pt"
    save_checkpoint(model, path, config, epoch=1)
    loaded = read_checkpoint(path)
    assert loaded.config == config and loaded.how == "checkpoint config"
    s2, s1 = inputs()
    with torch.no_grad():
        assert torch.equal(loaded.model(s2, s1), model(s2, s1))
    # the weights alone would be read as "tiny" (2 heads): a different model
    assert read_checkpoint(path, variant="tiny").config.heads == 2
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"model_state_dict", "config", "epoch"}


def test_missing_and_unexpected_keys_in_one_message(tmp_path):
    state = build_encoder(get_variant("tiny"), seed=0).state_dict()
    del state["s1_backbone.attn_pool.query.weight"]
    state["s2_backbone.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointError) as info:
        load_encoder(write(tmp_path / "c.pt", {"model_state_dict": state}), variant="tiny")
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys (1): s1_backbone.attn_pool.query.weight" in message
    assert "unexpected keys (1): s2_backbone.extra.weight" in message


def test_long_key_lists_are_truncated(tmp_path):
    state = {f"s2_backbone.something.{i}": torch.zeros(1) for i in range(40)}
    with pytest.raises(CheckpointError) as info:
        load_encoder(write(tmp_path / "c.pt", {"model_state": state}))
    message = str(info.value)
    assert "more)" in message and len(message) < 1500 and "\n" not in message


def test_wrong_variant_reports_shapes(tmp_path):
    model = build_encoder(get_variant("tiny"), seed=0)
    path = write(tmp_path / "c.pt", {"model_state_dict": model.state_dict()})
    with pytest.raises(CheckpointError, match="does not fit variant small.*wrong shapes"):
        load_encoder(path, variant="small")


def test_unknown_structure_asks_for_the_variant(tmp_path):
    config = EncoderConfig("odd", latent=8, layers=1, heads=1, ffn=16, gru="custom")
    path = write(tmp_path / "c.pt", {"model_state_dict": build_encoder(config).state_dict()})
    with pytest.raises(CheckpointError, match="match no known variant.*pass the variant"):
        load_encoder(path)


@pytest.mark.parametrize("kind", ["random", "json", "truncated", "tensor", "no_weights", "missing"])
def test_files_that_are_not_checkpoints(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 40)
    elif kind == "json":
        path.write_text(json.dumps({"model_state_dict": {}}))
    elif kind == "truncated":
        buffer = io.BytesIO()
        torch.save(build_encoder(get_variant("tiny")).state_dict(), buffer)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "no_weights":
        torch.save({"epoch": 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_encoder(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_pickled_objects_are_not_executed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model_state_dict": Evil()}))
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_encoder(path)


@pytest.fixture()
def http_root(tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_load_over_http(http_root):
    root, url = http_root
    model = build_encoder(get_variant("tiny-v1.1"), seed=8)
    save_checkpoint(model, root / "m.pt", get_variant("tiny-v1.1"))
    loaded = load_encoder(f"{url}/m.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(f"{url}/absent.pt")


def test_load_from_s3(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server._server.server_address[1]}"
        creds = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}
        s3 = boto3.client("s3", endpoint_url=endpoint, **creds)
        s3.create_bucket(Bucket="models")
        model = build_encoder(get_variant("tiny"), seed=9)
        buffer = io.BytesIO()
        torch.save(upstream_payload(model), buffer)
        s3.put_object(Bucket="models", Key="tessera/v1.pt", Body=buffer.getvalue())
        for name, value in (("AWS_ENDPOINT_URL", endpoint), ("AWS_ACCESS_KEY_ID", "test"),
                            ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)  # the one place credentials come from: the environment
        loaded = load_encoder("s3://models/tessera/v1.pt")
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
        with pytest.raises(CheckpointError):
            load_encoder("s3://models/absent.pt")
    finally:
        server.stop()
