"""``tessera-ray model init`` and ``model info`` as a user runs them."""

from __future__ import annotations

import json

import pytest
import torch
from cli_helpers import run_cli

from tessera_ray.model import build_encoder, get_variant, load_encoder


def run(capsys, *argv):
    return run_cli(list(argv), capsys)


def test_init_then_info(tmp_path, capsys):
    path = tmp_path / "tiny.pt"
    code, out, _ = run(capsys, "model", "init", "--variant", "tiny", "--out", str(path), "--seed", "4")
    assert code == 0 and path.is_file() and "tiny" in out
    reference = build_encoder(get_variant("tiny"), seed=4).state_dict()
    loaded = load_encoder(path).state_dict()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)

    code, out, _ = run(capsys, "model", "info", str(path), "--json")
    info = json.loads(out)
    params = sum(v.numel() for v in reference.values())
    assert (info["variant"], info["variant_from"], info["parameters"]) == ("tiny", "checkpoint config", params)
    assert info["keys"]["total"] == len(reference)
    assert info["structure"]["heads"] == 2 and info["other_entries"] == ["config", "init_seed"]

    code, out, _ = run(capsys, "model", "info", str(path))
    assert code == 0 and "variant     tiny" in out and f"{params:,}" in out


@pytest.mark.parametrize("content", [None, b"not a checkpoint at all", b'{"a": 1}'])
def test_bad_checkpoint_is_one_line(tmp_path, capsys, content):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    code, out, err = run(capsys, "model", "info", str(path))
    assert code != 0 and out == ""
    assert err.count("\n") == 1 and err.startswith("tessera-ray: error:") and "bad.pt" in err


def test_init_unknown_variant_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "model", "init", "--variant", "v7", "--out", str(tmp_path / "x.pt"))
    assert code != 0 and "unknown encoder variant" in err and err.count("\n") == 1
    assert not (tmp_path / "x.pt").exists()
