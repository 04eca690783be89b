"""The training head: an MLP on the 128-d embedding, dropped at inference."""

from __future__ import annotations

from torch import nn

from tessera_ray.model.config import EMBEDDING_DIM


def build_projector(width: int, layers: int, out: int | None = None, in_dim: int = EMBEDDING_DIM) -> nn.Sequential:
    """``layers`` Linear layers with BatchNorm1d + ReLU between them.

    Upstream: 6 layers, 2048..16384 wide. Its keys land under ``projector.*``
    in the checkpoint, which ``load_encoder`` ignores.
    """
    if layers < 1:
        raise ValueError("the projector needs at least one layer")
    out = out or width
    dims = [in_dim] + [width] * (layers - 1) + [out]
    modules: list[nn.Module] = []
    for i in range(layers):
        modules.append(nn.Linear(dims[i], dims[i + 1], bias=i < layers - 1))
        if i < layers - 1:
            modules += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*modules)
