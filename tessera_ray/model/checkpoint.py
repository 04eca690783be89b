"""Encoder checkpoints in the upstream format (TESSERA.md section 4), and ours.

A checkpoint is a torch pickle of a dict with the weights under
``model_state_dict`` (or ``model_state``). Keys may carry ``_orig_mod.`` or
``module.`` prefixes; ``projector.*`` (the training head) is ignored. Weight
shapes fix every structural choice except the number of attention heads, so
the variant is inferred from the registry unless our own ``config`` entry (or
the caller) names it.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tessera_ray.errors import CheckpointError
from tessera_ray.model.config import VARIANTS, EncoderConfig, get_variant
from tessera_ray.model.network import TesseraEncoder

CONFIG_FORMAT = "tessera-ray/encoder-config/1"
STATE_KEYS = ("model_state_dict", "model_state")
_PREFIXES = ("_orig_mod.", "module.")
_IGNORED = ("projector.",)
_LIST_LIMIT = 6


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A checkpoint read and matched to a variant."""

    source: str
    config: EncoderConfig
    model: TesseraEncoder
    how: str
    """How the variant was chosen: "argument", "checkpoint config" or "inferred"."""
    ignored_keys: tuple[str, ...]
    """Keys present but not used (the projector)."""
    extra: tuple[str, ...]
    """Top-level entries besides the weights (epoch, optimizer state, ...)."""


def load_encoder(path_or_uri: str | os.PathLike, variant: str | None = None,
                 storage_options: dict | None = None) -> TesseraEncoder:
    """Load an encoder (eval mode, on the CPU) from a local path, https:// or s3:// URI."""
    return read_checkpoint(path_or_uri, variant, storage_options).model


def read_checkpoint(path_or_uri: str | os.PathLike, variant: str | None = None,
                    storage_options: dict | None = None) -> LoadedCheckpoint:
    source = str(path_or_uri)
    payload = _load_payload(_read_bytes(source, storage_options), source)
    raw_state = _find_state(payload, source)
    state, ignored = normalise_keys(raw_state)
    if variant is not None:
        config, how = get_variant(variant), "argument"
    elif (own := _own_config(payload)) is not None:
        config, how = own, "checkpoint config"
    else:
        config, how = infer_variant(state, source), "inferred"
    model = skeleton(config)
    _check_state(model, state, source, config.name)
    # the skeleton has no storage: adopt the checkpoint's tensors as parameters
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    extra = tuple(sorted(str(k) for k in payload if k not in STATE_KEYS))
    return LoadedCheckpoint(source, config, model.eval(), how, ignored, extra)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, config: EncoderConfig,
                    **extra: Any) -> None:
    """Write ``model`` in the upstream layout plus our config (atomically for local paths)."""
    payload = {
        "model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": {"format": CONFIG_FORMAT, **config.to_dict()},
        **extra,
    }
    target = str(path)
    if "://" in target:
        import fsspec

        with fsspec.open(target, "wb") as fh:
            torch.save(payload, fh)
        return
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target_path.parent, prefix=f".{target_path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
        os.replace(tmp, target_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_bytes(source: str, storage_options: dict | None) -> bytes:
    if "://" not in source:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {source}")
        return path.read_bytes()
    scheme = source.split("://", 1)[0].lower()
    if scheme not in ("http", "https", "s3", "file"):
        raise CheckpointError(f"unsupported checkpoint location {source!r} (use a path, https:// or s3://)")
    import fsspec

    try:
        with fsspec.open(source, "rb", **(storage_options or {})) as fh:
            return fh.read()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {source}") from None
    except Exception as exc:  # fsspec/aiohttp/botocore raise many kinds
        raise CheckpointError(f"cannot read checkpoint {source}: {_one_line(exc)}") from None


def _load_payload(data: bytes, source: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{source} is not a readable torch checkpoint ({_one_line(exc)})"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _find_state(payload: Any, source: str) -> dict[str, torch.Tensor]:
    if not isinstance(payload, dict):
        raise CheckpointError(f"{source} is not a checkpoint dict (got {type(payload).__name__})")
    for key in STATE_KEYS:
        if isinstance(payload.get(key), dict):
            state = payload[key]
            break
    else:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            state = payload  # a bare state dict
        else:
            raise CheckpointError(
                f"{source} holds no weights: none of {', '.join(STATE_KEYS)} in "
                f"{_summarise(sorted(map(str, payload)))}"
            )
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: the weights dict holds values that are not tensors")
    return state


def normalise_keys(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Strip compile/DataParallel prefixes, drop the projector, name a bare Linear reducer."""
    out: dict[str, torch.Tensor] = {}
    ignored = []
    for key, value in state.items():
        name = key
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        if name.startswith(_IGNORED):
            ignored.append(name)
            continue
        # dim_reducer as a plain Linear instead of Sequential(Linear)
        name = re.sub(r"^dim_reducer\.(weight|bias)$", r"dim_reducer.0.\1", name)
        out[name] = value
    return out, tuple(ignored)


def _own_config(payload: dict) -> EncoderConfig | None:
    raw = payload.get("config")
    if not isinstance(raw, dict) or raw.get("format") != CONFIG_FORMAT:
        return None  # absent, or upstream's own training config
    try:
        return EncoderConfig.from_dict({k: v for k, v in raw.items() if k != "format"})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {_one_line(exc)}") from None


def structure_of(state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
    """What the weight shapes say about the structure (None if they cannot say)."""
    try:
        d = state["s2_backbone.embedding.0.weight"].shape[0]
        layers = {
            int(m.group(1))
            for k in state
            if (m := re.match(r"s2_backbone\.transformer_encoder\.layers\.(\d+)\.", k))
        }
        ffn = state["s2_backbone.transformer_encoder.layers.0.linear1.weight"].shape[0]
        if "s2_backbone.attn_pool.temporal_context.gru_cell.W_ir.weight" in state:
            gru = "custom"
        elif "s2_backbone.attn_pool.temporal_context.weight_ih_l0" in state:
            gru = "torch"
        else:
            return None
        if "dim_reducer.4.weight" in state:
            hidden = state["dim_reducer.0.weight"].shape[0]
            out = state["dim_reducer.4.weight"].shape[0]
        else:
            hidden, out = 0, state["dim_reducer.0.weight"].shape[0]
    except KeyError:
        return None
    return {"latent": d // 4, "layers": len(layers), "ffn": ffn, "gru": gru,
            "reducer_hidden": hidden, "reducer_out": out}


def _config_structure(config: EncoderConfig) -> dict[str, Any]:
    return {"latent": config.latent, "layers": config.layers, "ffn": config.ffn,
            "gru": config.gru, "reducer_hidden": config.reducer_hidden,
            "reducer_out": config.reducer_out}


def infer_variant(state: dict[str, torch.Tensor], source: str) -> EncoderConfig:
    found = structure_of(state)
    if found is not None:
        matches = [c for c in VARIANTS.values() if _config_structure(c) == found]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(c.name for c in matches)
            raise CheckpointError(f"{source} fits several variants ({names}); pass the variant")
        shape = ", ".join(f"{k}={v}" for k, v in found.items())
        raise CheckpointError(
            f"{source}: weights ({shape}) match no known variant ({', '.join(VARIANTS)}); "
            "the number of heads cannot be read from weights, so pass the variant"
        )
    # Not even the structure can be read: report the keys against the closest variant.
    skeletons = [(skeleton(c), c.name) for c in VARIANTS.values()]
    model, name = min(skeletons, key=lambda s: sum(map(len, _key_diff(s[0], state))))
    _check_state(model, state, source, name)
    raise CheckpointError(f"{source}: cannot infer the encoder variant; pass it")


def skeleton(config: EncoderConfig) -> TesseraEncoder:
    """The variant's module with shapes but no storage (cheap even for v1.0)."""
    with torch.device("meta"):
        return TesseraEncoder(config)


def _key_diff(model: torch.nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    return missing, unexpected


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = len(keys) - _LIST_LIMIT
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


def _check_state(model: torch.nn.Module, state: dict, source: str, name: str) -> None:
    """One CheckpointError naming missing, unexpected and mis-shaped keys."""
    missing, unexpected = _key_diff(model, state)
    expected = model.state_dict()
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
    if mis_shaped:
        problems.append(f"wrong shapes ({len(mis_shaped)}): {_summarise(mis_shaped)}")
    if problems:
        raise CheckpointError(f"{source} does not fit variant {name}: " + "; ".join(problems))

