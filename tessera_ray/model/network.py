"""The TESSERA v1 encoder family as torch modules.

Attribute names are chosen so that ``state_dict()`` keys are exactly the
upstream checkpoint keys (TESSERA.md section 4): ``s2_backbone.embedding.0.*``,
``...transformer_encoder.layers.{i}.*``, ``...attn_pool.temporal_context.*``,
``...attn_pool.layer_norm.*``, ``dim_reducer.*``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from tessera_ray.model.config import EMBEDDING_DIM, S1_BANDS, S2_BANDS, EncoderConfig


def doy_encoding(doy: torch.Tensor, div: torch.Tensor) -> torch.Tensor:
    """Fixed sinusoidal encoding of raw day-of-year values, (..., T) -> (..., T, d).

    Channel 2i is sin(doy * div_i), channel 2i+1 is cos(doy * div_i).
    """
    angle = doy.unsqueeze(-1) * div
    return torch.stack((torch.sin(angle), torch.cos(angle)), dim=-1).flatten(-2)


def doy_frequencies(d: int, device: torch.device | None = None) -> torch.Tensor:
    """div_i = exp(2i * -ln(10000) / d), in float32 as the published models compute it."""
    steps = torch.arange(0, d, 2, dtype=torch.float32, device=device)
    return torch.exp(steps * (-math.log(10000.0) / d))


class CustomGRUCell(nn.Module):
    """The GRU cell of the QAT and v1.1 releases (not torch's formula).

    r = sigmoid(W_ir x + W_hr h + b_r), z = sigmoid(W_iz x + W_hz h + b_z),
    h~ = tanh(W_ih x + W_hh (r * h) + b_h), h' = (1 - z) * h + z * h~.
    """

    W_ir: nn.Linear
    W_iz: nn.Linear
    W_ih: nn.Linear
    W_hr: nn.Linear
    W_hz: nn.Linear
    W_hh: nn.Linear

    def __init__(self, d: int) -> None:
        super().__init__()
        for name in ("W_ir", "W_iz", "W_ih", "W_hr", "W_hz", "W_hh"):
            setattr(self, name, nn.Linear(d, d, bias=False))
        bound = 1.0 / math.sqrt(d)  # nn.GRU's initialisation
        self.b_r = nn.Parameter(torch.empty(d).uniform_(-bound, bound))
        self.b_z = nn.Parameter(torch.empty(d).uniform_(-bound, bound))
        self.b_h = nn.Parameter(torch.empty(d).uniform_(-bound, bound))

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W_i{r,z,h} x + b for every step at once: (B, T, d) -> (B, T, 3d)."""
        weight = torch.cat((self.W_ir.weight, self.W_iz.weight, self.W_ih.weight))
        bias = torch.cat((self.b_r, self.b_z, self.b_h))
        return nn.functional.linear(x, weight, bias)

    def step(self, xproj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """One step from the precomputed input projection of that step."""
        xr, xz, xh = xproj.chunk(3, dim=-1)
        hr, hz = nn.functional.linear(h, torch.cat((self.W_hr.weight, self.W_hz.weight))).chunk(2, -1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        candidate = torch.tanh(xh + self.W_hh(r * h))
        return (1 - z) * h + z * candidate

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.step(self.input_projection(x), h)


class CustomGRU(nn.Module):
    """Runs :class:`CustomGRUCell` over a sequence (h0 = 0); returns all outputs."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.gru_cell = CustomGRUCell(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The input half of every step is one batched matmul; only the
        # recurrent half has to run step by step.
        xproj = self.gru_cell.input_projection(x)
        h = x.new_zeros(x.shape[0], x.shape[2])
        outputs = []
        for t in range(x.shape[1]):
            h = self.gru_cell.step(xproj[:, t], h)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class TorchGRU(nn.GRU):
    """nn.GRU (v1.0 pooling) returning only its outputs."""

    def __init__(self, d: int) -> None:
        super().__init__(d, d, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0]


class TemporalPooling(nn.Module):
    """Attention pooling whose weights come from a GRU's view of the sequence.

    The weights are softmax_t(query(GRU(x)_t)) (LayerNorm before the query for
    the custom GRU); the pooled vector is the weighted sum of ``x`` itself.
    """

    def __init__(self, d: int, gru: str) -> None:
        super().__init__()
        self.query = nn.Linear(d, 1)
        if gru == "torch":
            self.temporal_context: nn.Module = TorchGRU(d)
            self.layer_norm: nn.Module = nn.Identity()
        else:
            self.temporal_context = CustomGRU(d)
            self.layer_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.layer_norm(self.temporal_context(x))
        weights = torch.softmax(self.query(context), dim=1)
        return (weights * x).sum(dim=1)


class Backbone(nn.Module):
    """One source's branch: (B, T, bands + 1) with raw DOY last -> (B, d)."""

    def __init__(self, bands: int, config: EncoderConfig) -> None:
        super().__init__()
        d = config.d
        self.embedding = nn.Sequential(nn.Linear(bands, d), nn.ReLU(), nn.Linear(d, d))
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=config.heads,
            dim_feedforward=config.ffn,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=False,
        )
        self.transformer_encoder = nn.TransformerEncoder(
            layer, num_layers=config.layers, enable_nested_tensor=False
        )
        self.attn_pool = TemporalPooling(d, config.gru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        div = doy_frequencies(cast(nn.Linear, self.embedding[0]).out_features, x.device)
        tokens = self.embedding(x[..., :-1]) + doy_encoding(x[..., -1].float(), div)
        pooled: torch.Tensor = self.attn_pool(self.transformer_encoder(tokens))
        return pooled


class TesseraEncoder(nn.Module):
    """S2 and S1 branches, concatenated and reduced to the 128-d embedding."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.s2_backbone = Backbone(S2_BANDS, config)
        self.s1_backbone = Backbone(S1_BANDS, config)
        fused = 2 * config.d
        if config.reducer_hidden:
            self.dim_reducer = nn.Sequential(
                nn.Linear(fused, config.reducer_hidden),
                nn.LayerNorm(config.reducer_hidden),
                nn.ReLU(),
                nn.Dropout(0.2),
                nn.Linear(config.reducer_hidden, config.reducer_out),
            )
        else:
            self.dim_reducer = nn.Sequential(nn.Linear(fused, config.reducer_out))

    def forward(self, s2: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        fused = torch.cat((self.s2_backbone(s2), self.s1_backbone(s1)), dim=-1)
        reduced: torch.Tensor = self.dim_reducer(fused)
        return reduced[:, :EMBEDDING_DIM]
