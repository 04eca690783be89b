"""Encoder families: the one seam through which the rest of the system sees a model.

A family is one module (:mod:`.v1`, :mod:`.v2`) exporting ``FAMILY``, an object
with the :class:`EncoderFamily` methods; a family's configs name it in their
``family`` class attribute. Adding a family means one new module and one line
in :data:`FAMILIES`. The actor pool, ``embed``, ``encode-tiles``, ``train``,
``model info``, the store and the heads go through the functions below, never
through one family's classes.

An inference rule (:class:`InferenceRule`) is a family's view of pixels with
its statistics chosen (v1.1's depend on the data source): which steps are
valid, how they are sampled or bucketed and normalised, the int8 rule and the
output width.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from tessera_ray.errors import UserInputError
from tessera_ray.model import v1, v2
from tessera_ray.model.inference import PixelSeries, PreparedPixels


class InferenceRule(Protocol):
    config: Any
    output_dims: int
    """Width of the embedding (128 for every published model)."""
    min_scale: float
    """Scale of an all-zero embedding."""
    bf16: bool
    """Whether upstream runs this family under bf16 autocast on a GPU."""
    empty_as_zeros: bool
    """Whether a stream with no valid step is fed as zeros (else steps are drawn from all)."""

    def prepare(self, pixels: PixelSeries, seed: int = 0) -> PreparedPixels:
        """Flag no-data pixels, choose steps, normalise: model inputs grouped by lengths."""

    def quantise(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float (n, D) -> int8 codes (n, D) and scales (n,)."""

    def streams(self, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Normalised S2 (N, T, 10), its valid steps, normalised S1 (N, T', 2), its valid
        steps and S1 DOYs: the rule's inputs before sampling (training draws views from them)."""


class EncoderFamily(Protocol):
    name: str
    structure_in_file: bool

    @property
    def variants(self) -> Mapping[str, Any]:
        """Named configs of the family."""

    @property
    def config_class(self) -> type[Any]:
        """The family's config type (``from_dict``, ``to_dict``)."""

    def state_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The weights dict of a checkpoint in this family's format."""

    def normalise_keys(self, state: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Keys as the family's modules name them, and the keys ignored (training heads)."""

    def infer_config(self, payload: dict[str, Any], source: str) -> Any:
        """The config a checkpoint without our config entry describes (None: cannot tell)."""

    def recognises(self, payload: dict[str, Any]) -> bool:
        """Whether a checkpoint dict without our config entry is in this family's upstream format."""

    def build(self, config: Any) -> nn.Module:
        """The network of ``config`` (random weights; call under a meta device for a skeleton)."""

    def upstream_payload(self, state: dict[str, Any], config: Any) -> dict[str, Any]:
        """A checkpoint dict in the upstream format holding ``state``."""

    def rule(self, config: Any, data_source: str | None) -> InferenceRule: ...

    def output_dims(self, config: Any) -> int: ...

    def matryoshka_depths(self, config: Any) -> tuple[int, ...]:
        """Prefix widths that are embeddings on their own, ending with the full width; () if none."""

    def describe(self, config: Any) -> dict[str, Any]:
        """Structure for ``model info``."""

    def sampling(self, config: Any) -> str:
        """One phrase naming the temporal rule."""


FAMILIES: dict[str, EncoderFamily] = {f.name: f for f in (v1.FAMILY, v2.FAMILY)}

VARIANTS: dict[str, Any] = {name: c for f in FAMILIES.values() for name, c in f.variants.items()}
"""Every registered variant of every family, by name."""


def get_variant(name: str) -> Any:
    """The config registered under ``name`` (``UserInputError`` if unknown)."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserInputError(f"unknown encoder variant {name!r}; known: {', '.join(VARIANTS)}") from None


def family_of(config: Any) -> EncoderFamily:
    return FAMILIES[config.family]


def inference_rule(config: Any, data_source: str | None = None) -> InferenceRule:
    return family_of(config).rule(config, data_source)


def matryoshka_depths(config: Any) -> tuple[int, ...]:
    return family_of(config).matryoshka_depths(config)


def output_dims(config: Any) -> int:
    """Embedding width of ``config``."""
    return family_of(config).output_dims(config)


def build_encoder(config: Any, seed: int | None = None) -> nn.Module:
    """A randomly initialised encoder of any family, in eval mode (``seed`` makes it reproducible)."""
    family = family_of(config)
    if seed is None:
        return family.build(config).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return family.build(config).eval()


def skeleton(config: Any) -> nn.Module:
    """The variant's module with shapes but no storage (cheap even for the largest)."""
    with torch.device("meta"):
        return family_of(config).build(config)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
