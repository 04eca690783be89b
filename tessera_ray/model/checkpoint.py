"""Encoder checkpoints of every family in their upstream format, plus our config entry.

Upstream formats: v1 (TESSERA.md section 4) is a torch pickle of a dict with
the weights under ``model_state_dict`` (or ``model_state``), keys perhaps
prefixed ``_orig_mod.`` or ``module.``, ``projector.*`` ignored; the variant
is inferred from weight shapes (all but the head count). v2 (section 4c) is
``args`` + ``model``; the structure comes from ``args``. Ours add a
``config`` entry (format, family, variant, and the data source the weights
were trained on where one was named), which names the variant exactly.
Files are read with torch's weights-only loader: nothing in them is executed.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tessera_ray.atomic import atomic_file
from tessera_ray.errors import CheckpointError, ServiceError, UserInputError, squash
from tessera_ray.model.config import check_data_source
from tessera_ray.model.family import FAMILIES, EncoderFamily, InferenceRule, family_of, get_variant, skeleton

CONFIG_FORMAT = "tessera-ray/encoder-config/1"
_LIST_LIMIT = 6


@dataclass(frozen=True, eq=False)
class LoadedCheckpoint:
    """A checkpoint read and matched to a variant of a family."""

    source: str
    config: Any
    model: torch.nn.Module
    how: str
    """How the variant was chosen: "argument", "checkpoint config", "inferred" or "args"."""
    ignored_keys: tuple[str, ...]
    """Keys present but not used (the projector)."""
    extra: tuple[str, ...]
    """Top-level entries besides the weights (epoch, optimizer state, ...)."""
    data_source: str | None = None
    """The data source the checkpoint says it was trained on (our config entry), if any."""

    @property
    def family(self) -> EncoderFamily:
        return family_of(self.config)

    def data_source_for(self, requested: str | None) -> str | None:
        """The data source of a run: the checkpoint's, else ``requested`` (they must agree)."""
        check_data_source(requested)
        if self.data_source and requested and requested != self.data_source:
            raise UserInputError(
                f"{self.source} records data source {self.data_source!r}; it cannot run with "
                f"--data-source {requested}"
            )
        return self.data_source or requested

    def rule(self, requested_source: str | None = None) -> InferenceRule:
        """This checkpoint's inference rule for a run asking for ``requested_source``."""
        return self.family.rule(self.config, self.data_source_for(requested_source))


def load_encoder(path_or_uri: str | os.PathLike[str], variant: str | None = None) -> torch.nn.Module:
    """Load an encoder of any family (eval mode, on the CPU) from a path, https:// or s3:// URI."""
    return read_checkpoint(path_or_uri, variant).model


def read_checkpoint(path_or_uri: str | os.PathLike[str], variant: str | None = None) -> LoadedCheckpoint:
    source = str(path_or_uri)
    payload = _load_payload(_read_bytes(source), source)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{source} is not a checkpoint dict (got {type(payload).__name__})")
    own = _own_config(payload)
    if variant is not None:
        config, how = get_variant(variant), "argument"
    elif own is not None:
        config, how = own, "checkpoint config"
    else:
        config, how = None, ""
    family = family_of(config) if config is not None else _upstream_family(payload, source)
    state, ignored = family.normalise_keys(_tensors(family.state_of(payload), source))
    if config is None:
        config = family.infer_config(payload, source)
        how = "args" if family.structure_in_file else "inferred"
        if config is None:
            _closest_mismatch(family, state, source)
    elif family.structure_in_file and isinstance(payload.get("args"), dict):
        described = family.infer_config(payload, source)
        if replace(described, name=config.name) != config:
            raise CheckpointError(f"{source}: its args describe {described.name}, not {config.name}")
    model = skeleton(config)
    _check_state(model, state, source, config.name)
    # the skeleton has no storage: adopt the checkpoint's tensors as parameters
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    used = {"model_state_dict", "model_state", "model", "args"}
    extra = tuple(sorted(str(k) for k in payload if k not in used))
    recorded = payload["config"].get("data_source") if own is not None else None
    return LoadedCheckpoint(source, config, model.eval(), how, ignored, extra, check_data_source(recorded))


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str], config: Any,
                    data_source: str | None = None, **extra: Any) -> None:
    """Write ``model`` in its family's upstream layout plus our config (atomically for local paths)."""
    family = family_of(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    own = {"format": CONFIG_FORMAT, "family": family.name, **config.to_dict()}
    if data_source is not None:
        own["data_source"] = check_data_source(data_source)
    payload = {**family.upstream_payload(state, config), "config": own, **extra}
    target = str(path)
    if "://" in target:
        from tessera_ray.store.urls import write_url

        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_url(target, buffer.getvalue())
        return
    target_path = Path(target)
    target_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target_path) as tmp:
        torch.save(payload, tmp)


def _upstream_family(payload: dict[str, Any], source: str) -> EncoderFamily:
    for family in FAMILIES.values():
        if family.recognises(payload):
            return family
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        return FAMILIES["v1"]  # a bare v1 state dict
    raise CheckpointError(
        f"{source} holds no weights: neither model_state_dict/model_state (v1) nor args + model (v2) in "
        f"{_summarise(sorted(map(str, payload)))}"
    )


def _tensors(state: Any, source: str) -> dict[str, Any]:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: the weights dict holds values that are not tensors")
    return state

def _read_bytes(source: str) -> bytes:
    from tessera_ray.paths import check_url, is_url
    from tessera_ray.store.objects import ObjectNotFound
    from tessera_ray.store.urls import read_url

    if is_url(source):
        check_url(source, "checkpoint URL")
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme not in ("", "http", "https", "s3", "file"):
        raise CheckpointError(f"unsupported checkpoint location {source!r} (use a path, https:// or s3://)")
    if not scheme and not Path(source).is_file():
        raise CheckpointError(f"checkpoint not found: {source}")
    try:
        return read_url(source)
    except ObjectNotFound:
        raise CheckpointError(f"checkpoint not found: {source}") from None
    except ServiceError as exc:  # as for a root: a service that cannot be reached, exit 3
        raise ServiceError(f"cannot reach checkpoint {source}: {exc}") from None


def _load_payload(data: bytes, source: str) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{source} is not a readable torch checkpoint ({_brief(exc)})"
        ) from None


def _brief(exc: BaseException) -> str:
    return squash(exc, 200) or type(exc).__name__


def _own_config(payload: dict[str, Any]) -> Any:
    raw = payload.get("config")
    if not isinstance(raw, dict) or raw.get("format") != CONFIG_FORMAT:
        return None  # absent, or upstream's own training config
    family = FAMILIES.get(raw.get("family", "v1"))
    if family is None:
        raise CheckpointError(f"checkpoint config names an unknown encoder family {raw.get('family')!r}")
    try:
        fields = {k: v for k, v in raw.items() if k not in ("format", "family", "data_source")}
        return family.config_class.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is invalid: {_brief(exc)}") from None


def _closest_mismatch(family: EncoderFamily, state: dict[str, Any], source: str) -> None:
    """Not even the structure can be read: report the keys against the closest variant."""
    skeletons = [(skeleton(c), c.name) for c in family.variants.values()]
    model, name = min(skeletons, key=lambda s: sum(map(len, _key_diff(s[0], state))))
    _check_state(model, state, source, name)
    raise CheckpointError(f"{source}: cannot infer the encoder variant; pass it")


def _key_diff(model: torch.nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state)
    unexpected = sorted(k for k in state if k not in expected)
    return missing, unexpected


def _summarise(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    more = len(keys) - _LIST_LIMIT
    return f"{shown}, ... (+{more} more)" if more > 0 else shown


def _check_state(model: torch.nn.Module, state: dict[str, Any], source: str, name: str) -> None:
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

