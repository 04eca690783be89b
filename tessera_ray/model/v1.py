"""The TESSERA v1 encoder family: v1.0, v1.0 QAT, v1.1 and our small v1-structure variants.

The structure lives in :mod:`.config` and :mod:`.network`; this module adds what
the family protocol (:mod:`.family`) asks for: reading the upstream checkpoint
format (TESSERA.md section 4), the inference rules and the int8 rule.

Inference rules:
- ``random40`` (v1.0): 40 seeded random steps per stream (TESSERA.md 4); a
  pixel with no valid Sentinel-2 step is no data, an all-zero one an all-zero
  embedding; an S1 stack with no step at all is one zero step.
- ``buckets`` (v1.1, TESSERA.md 4b exactly): every valid step, resampled to the
  smallest bucket of {8, ..., 256} with upstream's pattern; an empty stream is
  the first bucket of zeros (the DOY column too); S1 normalised per orbit
  before the stacks are merged; statistics per data source. Upstream would
  also embed a pixel with no valid step in either stream (from zeros alone):
  we write it as no data instead, as no observation stands behind it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from tessera_ray.errors import CheckpointError
from tessera_ray.model.config import EMBEDDING_DIM, S1_BANDS, V1_VARIANTS, EncoderConfig, NormStats
from tessera_ray.model.inference import (
    EMPTY_SAR_DOY,
    MIN_SCALE,
    InputGroup,
    PixelSeries,
    PreparedPixels,
    group_by_lengths,
    normalise,
    quantise,
    validate,
)
from tessera_ray.model.network import TesseraEncoder
from tessera_ray.model.sampling import STREAM_S1, STREAM_S2, pattern_steps, pixel_seeds, random_steps, v11_pattern

STATE_KEYS = ("model_state_dict", "model_state")
_PREFIXES = ("_orig_mod.", "module.")
_IGNORED = ("projector.", "prefix_projectors.")


def _gather(values: np.ndarray, doys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Chosen steps of normalised values, raw DOY appended: (n, L, bands + 1)."""
    picked = np.take_along_axis(values, index[:, :, None], axis=1)
    doy = np.asarray(doys, dtype=np.float32)[index]
    return np.concatenate((picked, doy[:, :, None]), axis=2)


def sar_stack(pixels: PixelSeries, norm: NormStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ascending then descending along time, each normalised with its own statistics.

    Returns normalised values (N, Ta + Td, 2), valid steps (N, Ta + Td) (VV or
    VH non-zero, judged on the raw values) and DOYs (Ta + Td,).
    """
    asc, desc = np.asarray(pixels.sar_ascending), np.asarray(pixels.sar_descending)
    values = np.concatenate((normalise(asc, norm.s1_asc_mean, norm.s1_asc_std),
                             normalise(desc, norm.s1_desc_mean, norm.s1_desc_std)), axis=1)
    valid = np.concatenate(((asc != 0).any(axis=2), (desc != 0).any(axis=2)), axis=1)
    doys = np.concatenate((pixels.sar_ascending_doys, pixels.sar_descending_doys))
    return values, valid, doys


class V1Rule:
    """The inference rule of one v1 variant with its statistics chosen."""

    output_dims = EMBEDDING_DIM
    min_scale = MIN_SCALE
    bf16 = True
    """Upstream runs v1.x under bf16 autocast on GPU."""

    def __init__(self, config: EncoderConfig, norm: NormStats) -> None:
        self.config = config
        self.norm = norm
        self.empty_as_zeros = config.sampling == "buckets"
        """v1.1 feeds an empty stream as zeros; v1.0 samples from every step."""

    def quantise(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return quantise(embeddings)

    def streams(self, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s2 = normalise(pixels.s2_bands, self.norm.s2_mean, self.norm.s2_std)
        sar, s1_valid, sar_doys = sar_stack(pixels, self.norm)
        return s2, np.asarray(pixels.s2_masks) == 1, sar, s1_valid, sar_doys

    def prepare(self, pixels: PixelSeries, seed: int = 0) -> PreparedPixels:
        validate(pixels)  # again: an unpickled PixelSeries skipped __post_init__
        if self.config.sampling == "random40":
            return self._random(pixels, seed)
        return self._buckets(pixels)

    def _random(self, pixels: PixelSeries, seed: int) -> PreparedPixels:
        n = len(pixels)
        s2_valid = np.asarray(pixels.s2_masks) == 1
        nodata = ~s2_valid.any(axis=1)
        all_zero = ~nodata & ~np.asarray(pixels.s2_bands).reshape(n, -1).any(axis=1)
        run = np.flatnonzero(~nodata & ~all_zero)
        if run.size == 0:
            return PreparedPixels(n, nodata, ())
        pixels = pixels.take(run)
        sar, s1_valid, sar_doys = sar_stack(pixels, self.norm)
        if sar.shape[1] == 0:  # no SAR step at all: one zero (no data) observation
            sar = np.zeros((len(run), 1, S1_BANDS), np.float32)
            s1_valid = np.zeros((len(run), 1), bool)
            sar_doys = np.array([EMPTY_SAR_DOY])
        seeds = pixel_seeds(seed, pixels.year, pixels.zone, pixels.rows, pixels.cols)
        s2_index = random_steps(s2_valid[run], seeds, STREAM_S2, self.config.steps)
        s1_index = random_steps(s1_valid, seeds, STREAM_S1, self.config.steps)
        s2 = normalise(pixels.s2_bands, self.norm.s2_mean, self.norm.s2_std)
        group = InputGroup(pixels=run, s2=_gather(s2, pixels.s2_doys, s2_index),
                           s1=_gather(sar, sar_doys, s1_index))
        return PreparedPixels(n, nodata, (group,))

    def _buckets(self, pixels: PixelSeries) -> PreparedPixels:
        n = len(pixels)
        buckets = self.config.buckets
        s2_valid = np.asarray(pixels.s2_masks) != 0
        s2 = normalise(pixels.s2_bands, self.norm.s2_mean, self.norm.s2_std)
        sar, s1_valid, sar_doys = sar_stack(pixels, self.norm)
        n2, len2, in2 = _bucket_input(s2, pixels.s2_doys, s2_valid, buckets)
        n1, len1, in1 = _bucket_input(sar, sar_doys, s1_valid, buckets)
        nodata = (n2 == 0) & (n1 == 0)
        all_zero = ~nodata & ~np.asarray(pixels.s2_bands).reshape(n, -1).any(axis=1)
        run = np.flatnonzero(~nodata & ~all_zero)
        return PreparedPixels(n, nodata, group_by_lengths(run, len2, len1, in2, in1))


def _bucket_input(values: np.ndarray, doys: np.ndarray, valid: np.ndarray,
                  buckets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """v1.1: (counts, lengths, inputs); an empty stream is the first bucket of zeros."""
    count, lengths, index = pattern_steps(valid, buckets, v11_pattern)
    lengths = np.where(count > 0, lengths, buckets[0])
    out = np.zeros((len(values), int(lengths.max()) if lengths.size else 0, values.shape[2] + 1), np.float32)
    if index.shape[1]:
        at = count > 0
        out[at, :index.shape[1]] = _gather(values[at], doys, index[at])
    return count, lengths, out


# --- checkpoints (TESSERA.md section 4) ---------------------------------------

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


def infer_variant(state: dict[str, torch.Tensor], source: str) -> EncoderConfig | None:
    """The one registered variant whose structure the weights have (None: cannot tell)."""
    found = structure_of(state)
    if found is None:
        return None
    matches = [c for c in V1_VARIANTS.values() if _config_structure(c) == found]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        names = ", ".join(c.name for c in matches)
        raise CheckpointError(f"{source} fits several variants ({names}); pass the variant")
    shape = ", ".join(f"{k}={v}" for k, v in found.items())
    raise CheckpointError(
        f"{source}: weights ({shape}) match no known variant ({', '.join(V1_VARIANTS)}); "
        "the number of heads cannot be read from weights, so pass the variant"
    )


class V1Family:
    """TESSERA v1.0, v1.0 QAT and v1.1 (TESSERA.md 4, 4b)."""

    name = "v1"
    variants = V1_VARIANTS
    config_class = EncoderConfig
    structure_in_file = False
    """Whether a checkpoint states the structure (v2's ``args``) rather than implying it by shapes."""

    def recognises(self, payload: dict[str, Any]) -> bool:
        return any(isinstance(payload.get(k), dict) for k in STATE_KEYS)

    def state_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        for key in STATE_KEYS:
            state = payload.get(key)
            if isinstance(state, dict):
                return state
        return payload  # a bare state dict

    def normalise_keys(self, state: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        return normalise_keys(state)

    def infer_config(self, payload: dict[str, Any], source: str) -> EncoderConfig | None:
        """The variant the weight shapes fit (None: they cannot say)."""
        return infer_variant(self.normalise_keys(self.state_of(payload))[0], source)

    def build(self, config: EncoderConfig) -> TesseraEncoder:
        return TesseraEncoder(config)

    def upstream_payload(self, state: dict[str, Any], config: EncoderConfig) -> dict[str, Any]:
        return {"model_state_dict": state}

    def rule(self, config: EncoderConfig, data_source: str | None) -> V1Rule:
        return V1Rule(config, config.stats(data_source))

    def output_dims(self, config: EncoderConfig) -> int:
        return EMBEDDING_DIM

    def matryoshka_depths(self, config: EncoderConfig) -> tuple[int, ...]:
        return ()  # v1 dims are not ordered: a prefix of them means nothing

    def describe(self, config: EncoderConfig) -> dict[str, Any]:
        return {"latent": config.latent, "d": config.d, "layers": config.layers, "heads": config.heads,
                "ffn": config.ffn, "gru": config.gru,
                "dim_reducer": f"{2 * config.d}->"
                + (f"{config.reducer_hidden}->" if config.reducer_hidden else "")
                + f"{config.reducer_out}"}

    def sampling(self, config: EncoderConfig) -> str:
        if config.sampling == "random40":
            return f"random{config.steps} (seeded)"
        return f"buckets {config.buckets[0]}..{config.buckets[-1]} (v1.1 pattern)"


FAMILY = V1Family()
