"""The TESSERA v2 encoder family: the distilled "students" (TESSERA.md 4c).

Everything the family is sits in this module: the structure (:class:`StudentConfig`
and the torch modules), the upstream checkpoint format (``args`` + ``model``),
the inference rule (statistics, valid steps, buckets and index pattern, empty
streams) and the int8 rule. :data:`FAMILY` is what the registry in
:mod:`tessera_ray.model.family` lists.

Key names. TESSERA.md 4c names the transformer keys (torch's layer, or the
QK-norm layer's ``q_proj``/``k_proj``/``v_proj``/``out_proj``/``q_norm``/``k_norm``),
``embedding.0/.2`` and ``dim_reducer.0/.1/.4``. The branches are
``s2_backbone``/``s1_backbone`` and the pooling Linear ``attn_pool.query`` as in
v1; a checkpoint whose pooling Linear is saved bare (``attn_pool.weight``) is
read too.

Sizes. The published students are Nano 1.07 M, Small 7.11 M, Medium 21.03 M and
Large 43.83 M parameters; TESSERA.md gives Small's structure exactly (the
``args`` defaults, 7,112,322 parameters). The other three structures here are
ours, chosen to give the published counts (``model init`` and the benchmarks
use them); a real checkpoint's structure always comes from its own ``args``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from tessera_ray.errors import CheckpointError
from tessera_ray.model.config import S1_BANDS, S2_BANDS, check_data_source
from tessera_ray.model.inference import PixelSeries, PreparedPixels, group_by_lengths, normalise, validate
from tessera_ray.model.network import doy_encoding, doy_frequencies
from tessera_ray.model.sampling import V11_BUCKETS, pattern_steps, v2_pattern

MATRYOSHKA = (16, 32, 64, 128)
TRAINING_HEADS = ("projector.", "prefix_projectors.")
"""Key prefixes of our training heads, saved beside the weights and ignored at inference."""
REPR_DIM = 128
MIN_SCALE = 1e-12

# One set of statistics for every source (TESSERA.md 4c).
S2_MEAN = (1633.0042, 1341.1090, 1539.5536, 3054.8269, 3117.4658,
           2004.1648, 2694.7275, 2945.1504, 2266.6079, 1657.3094)
S2_STD = (1999.4603, 2014.7549, 1929.2201, 1754.2493, 1649.9807,
          1936.8988, 1748.6041, 1708.6991, 1207.5250, 1108.6046)
S1_ASC_MEAN = (5909.3921, 3405.0322)
S1_ASC_STD = (1507.1750, 1531.2615)
S1_DESC_MEAN = (5816.1382, 3277.7576)
S1_DESC_STD = (1554.6475, 1546.4733)

# ``args`` entries and their defaults when missing (TESSERA.md 4c).
ARG_DEFAULTS = {"latent_dim": 64, "num_layers": 4, "nhead": 4, "dim_feedforward": 1024,
                "repr_dim": REPR_DIM, "enable_qk_norm": False}


@dataclass(frozen=True)
class StudentConfig:
    """The structure of one v2 student (the head count is only in ``args``)."""

    family: ClassVar[str] = "v2"
    name: str
    latent: int = 64
    """Latent size; the transformer width is d = 4 x latent."""
    layers: int = 4
    heads: int = 4
    ffn: int = 1024
    qk_norm: bool = False
    repr_dim: int = REPR_DIM
    depths: tuple[int, ...] = MATRYOSHKA
    """Matryoshka prefixes, ending with the full width."""
    max_seq_len: int = 256
    buckets: tuple[int, ...] = V11_BUCKETS

    def __post_init__(self) -> None:
        if self.d % self.heads:
            raise ValueError(f"d={self.d} is not divisible by {self.heads} heads")
        if not self.depths or self.depths[-1] != self.repr_dim or list(self.depths) != sorted(set(self.depths)):
            raise ValueError(f"Matryoshka depths {self.depths} must rise to the output width {self.repr_dim}")

    @property
    def d(self) -> int:
        return 4 * self.latent

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["depths"], out["buckets"] = list(self.depths), list(self.buckets)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StudentConfig:
        raw = {k: v for k, v in raw.items() if k != "family"}
        for key in ("depths", "buckets"):
            if key in raw:
                raw[key] = tuple(int(x) for x in raw[key])
        return cls(**raw)

    def args(self) -> dict[str, Any]:
        """The upstream ``args`` entry of a checkpoint of this structure."""
        return {"latent_dim": self.latent, "num_layers": self.layers, "nhead": self.heads,
                "dim_feedforward": self.ffn, "max_seq_len": self.max_seq_len, "repr_dim": self.repr_dim,
                "matryoshka_dims": ",".join(str(k) for k in self.depths), "enable_qk_norm": self.qk_norm}


VARIANTS: dict[str, StudentConfig] = {
    c.name: c
    for c in (
        StudentConfig("v2-nano", latent=16, layers=6, heads=4, ffn=512),       # 1,071,874 parameters
        StudentConfig("v2-small"),                                             # 7,112,322 (the defaults)
        StudentConfig("v2-medium", latent=128, layers=3, heads=8, ffn=1920),   # 21,026,178
        StudentConfig("v2-large", latent=160, layers=4, heads=8, ffn=2560),    # 43,831,170
        # ours, for the demo and tests (the demo's encoder is v2-tiny)
        StudentConfig("v2-tiny", latent=16, layers=1, heads=2, ffn=128),
        StudentConfig("v2-tiny-qk", latent=16, layers=1, heads=2, ffn=128, qk_norm=True),
    )
}


# --- the network ------------------------------------------------------------

class QKNormLayer(nn.Module):
    """Post-norm ReLU transformer layer with per-head RMSNorm on Q and K."""

    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.q_norm = nn.RMSNorm(d // heads)
        self.k_norm = nn.RMSNorm(d // heads)
        self.linear1 = nn.Linear(d, ffn)
        self.linear2 = nn.Linear(ffn, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q_norm(self._heads(self.q_proj(x)))
        k = self.k_norm(self._heads(self.k_proj(x)))
        v = self._heads(self.v_proj(x))
        attended = nn.functional.scaled_dot_product_attention(q, k, v)
        attended = attended.transpose(1, 2).reshape(x.shape)
        x = self.norm1(x + self.out_proj(attended))
        out: torch.Tensor = self.norm2(x + self.linear2(torch.relu(self.linear1(x))))
        return out


class AttentionPool(nn.Module):
    """softmax_t(Linear(d, 1)(x_t)) weighted sum of the steps (no GRU)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.query = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(self.query(x), dim=1) * x).sum(dim=1)


class StudentBackbone(nn.Module):
    """One stream's branch: (B, T, bands + 1), raw DOY last -> (B, d)."""

    def __init__(self, bands: int, config: StudentConfig) -> None:
        super().__init__()
        d = config.d
        self.embedding = nn.Sequential(nn.Linear(bands, d), nn.ReLU(), nn.Linear(d, d))
        self.transformer_encoder: nn.Module
        if config.qk_norm:
            self.transformer_encoder = nn.ModuleList(
                QKNormLayer(d, config.heads, config.ffn) for _ in range(config.layers))
        else:
            layer = nn.TransformerEncoderLayer(d_model=d, nhead=config.heads, dim_feedforward=config.ffn,
                                               dropout=0.0, activation="relu", batch_first=True, norm_first=False)
            self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=config.layers,
                                                             enable_nested_tensor=False)
        self.attn_pool = AttentionPool(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        div = doy_frequencies(cast(nn.Linear, self.embedding[0]).out_features, x.device)
        tokens = self.embedding(x[..., :-1]) + doy_encoding(x[..., -1].float(), div)
        if isinstance(self.transformer_encoder, nn.ModuleList):
            for layer in self.transformer_encoder:
                tokens = layer(tokens)
        else:
            tokens = self.transformer_encoder(tokens)
        pooled: torch.Tensor = self.attn_pool(tokens)
        return pooled


class StudentEncoder(nn.Module):
    """S2 and S1 branches fused to a 128-d, LayerNormed, Matryoshka-ordered embedding."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.s2_backbone = StudentBackbone(S2_BANDS, config)
        self.s1_backbone = StudentBackbone(S1_BANDS, config)
        d = config.d
        self.dim_reducer = nn.Sequential(
            nn.Linear(2 * d, 4 * d), nn.LayerNorm(4 * d), nn.ReLU(), nn.Dropout(0.2),
            nn.Linear(4 * d, config.repr_dim), nn.LayerNorm(config.repr_dim, elementwise_affine=False),
        )

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        reduced: torch.Tensor = self.dim_reducer(torch.cat((self.s2_backbone(s2), self.s1_backbone(s1)), dim=-1))
        return reduced


# --- the inference rule -------------------------------------------------------

def _stream_input(values: np.ndarray, doys: np.ndarray, valid: np.ndarray,
                  buckets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised values (N, T, c) of one stream -> (counts, lengths, model input (N, L, c + 1)).

    An empty stream is one all-zero step (zero in standardised units, DOY 0).
    """
    count, lengths, index = pattern_steps(valid, buckets, v2_pattern)
    width = max(int(lengths.max()) if lengths.size else 0, 1)
    out = np.zeros((len(values), width, values.shape[2] + 1), dtype=np.float32)
    if index.shape[1]:
        out[:, :index.shape[1], :-1] = np.take_along_axis(values, index[:, :, None], axis=1)
        out[:, :index.shape[1], -1] = np.asarray(doys, dtype=np.float32)[index]
    return count, np.maximum(lengths, 1), out


class StudentRule:
    """How v2 students see pixels (TESSERA.md 4c); one set of statistics for all sources."""

    output_dims = REPR_DIM
    min_scale = MIN_SCALE
    bf16 = False
    """Upstream runs the students in fp32."""
    empty_as_zeros = True
    """An empty stream is fed as zeros in standardised units."""

    def __init__(self, config: StudentConfig) -> None:
        self.config = config

    def streams(self, pixels: PixelSeries) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s2_valid = np.asarray(pixels.s2_masks) != 0
        s2 = normalise(pixels.s2_bands, S2_MEAN, S2_STD)
        asc, desc = np.asarray(pixels.sar_ascending), np.asarray(pixels.sar_descending)
        s1 = np.concatenate((normalise(asc, S1_ASC_MEAN, S1_ASC_STD),
                             normalise(desc, S1_DESC_MEAN, S1_DESC_STD)), axis=1)
        s1_valid = np.concatenate(((asc != 0).any(axis=2), (desc != 0).any(axis=2)), axis=1)
        s1_doys = np.concatenate((pixels.sar_ascending_doys, pixels.sar_descending_doys))
        return s2, s2_valid, s1, s1_valid, s1_doys

    def prepare(self, pixels: PixelSeries, seed: int = 0) -> PreparedPixels:
        """Bucket both streams; a pixel with neither stream valid is no data. ``seed`` is unused."""
        del seed  # the rule is deterministic
        validate(pixels)
        n = len(pixels)
        s2, s2_valid, s1, s1_valid, s1_doys = self.streams(pixels)
        n2, len2, in2 = _stream_input(s2, pixels.s2_doys, s2_valid, self.config.buckets)
        n1, len1, in1 = _stream_input(s1, s1_doys, s1_valid, self.config.buckets)
        nodata = (n2 == 0) & (n1 == 0)
        return PreparedPixels(n, nodata, group_by_lengths(np.flatnonzero(~nodata), len2, len1, in2, in1))

    def quantise(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric int8: scale = max|e| / 127 (at least 1e-12), q = clip(round(e / scale), -127, 127)."""
        scale = (embeddings.abs().amax(dim=1) / 127.0).clamp_min(MIN_SCALE)
        q = torch.round(embeddings / scale[:, None]).clamp(-127, 127).to(torch.int8)
        return q, scale


# --- checkpoints (upstream format: ``args`` + ``model``) ---------------------

def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def config_from_args(args: dict[str, Any], source: str) -> StudentConfig:
    """The structure an upstream ``args`` entry describes (defaults for what it lacks)."""
    merged = {**ARG_DEFAULTS, **{k: v for k, v in args.items() if v is not None}}
    try:
        depths = merged.get("matryoshka_dims") or ",".join(str(k) for k in MATRYOSHKA)
        if isinstance(depths, str):
            depths = [int(x) for x in re.split(r"[,\s]+", depths.strip()) if x]
        found = StudentConfig(name="", latent=int(merged["latent_dim"]), layers=int(merged["num_layers"]),
                              heads=int(merged["nhead"]), ffn=int(merged["dim_feedforward"]),
                              qk_norm=_bool(merged["enable_qk_norm"]), repr_dim=int(merged["repr_dim"]),
                              depths=tuple(int(k) for k in depths),
                              max_seq_len=int(merged.get("max_seq_len") or 256))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the checkpoint's args do not describe a v2 student ({exc})") from None
    known = [c.name for c in VARIANTS.values() if replace(c, name="") == found]
    return replace(found, name=known[0] if known else f"v2-custom-{found.latent}x{found.layers}")


class V2Family:
    """TESSERA v2 students (TESSERA.md 4c)."""

    name = "v2"
    variants = VARIANTS
    config_class = StudentConfig
    structure_in_file = True
    """Whether a checkpoint states the structure (v2's ``args``) rather than implying it by shapes."""

    def recognises(self, payload: dict[str, Any]) -> bool:
        return isinstance(payload.get("model"), dict) and "args" in payload

    def state_of(self, payload: dict[str, Any]) -> dict[str, Any]:
        state: dict[str, Any] = payload["model"]  # recognises() checked it is there
        return state

    def infer_config(self, payload: dict[str, Any], source: str) -> StudentConfig:
        """The structure named by the checkpoint's ``args`` (a dict, or an argparse Namespace's fields)."""
        args = payload.get("args")
        if not isinstance(args, dict):
            raise CheckpointError(f"{source}: the checkpoint's args entry is not a dict of settings")
        return config_from_args(args, source)

    def normalise_keys(self, state: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        out, ignored = {}, []
        for key, value in state.items():
            name = key
            while name.startswith(("_orig_mod.", "module.")):
                name = name.split(".", 1)[1]
            if name.startswith(TRAINING_HEADS):
                ignored.append(name)
                continue
            out[re.sub(r"^(s[12]_backbone\.attn_pool)\.(weight|bias)$", r"\1.query.\2", name)] = value
        return out, tuple(ignored)

    def build(self, config: StudentConfig) -> nn.Module:
        return StudentEncoder(config)

    def upstream_payload(self, state: dict[str, Any], config: StudentConfig) -> dict[str, Any]:
        return {"args": config.args(), "model": state}

    def rule(self, config: StudentConfig, data_source: str | None) -> StudentRule:
        check_data_source(data_source)  # one set of statistics: any known source will do
        return StudentRule(config)

    def output_dims(self, config: StudentConfig) -> int:
        return config.repr_dim

    def matryoshka_depths(self, config: StudentConfig) -> tuple[int, ...]:
        return tuple(config.depths)

    def describe(self, config: StudentConfig) -> dict[str, Any]:
        return {"latent": config.latent, "d": config.d, "layers": config.layers, "heads": config.heads,
                "ffn": config.ffn, "qk_norm": config.qk_norm, "pooling": "attention (no GRU)",
                "dim_reducer": f"{2 * config.d}->{4 * config.d}->{config.repr_dim} (LayerNorm)"}

    def sampling(self, config: StudentConfig) -> str:
        return f"buckets {config.buckets[0]}..{config.buckets[-1]} (v2 index pattern)"


FAMILY = V2Family()

