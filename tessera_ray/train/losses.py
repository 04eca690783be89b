"""Barlow Twins and its mix-based regulariser (Mixed Barlow Twins), as pure tensor functions.

TESSERA.md section 4: standardise each projector dimension over the batch,
C = z1^T z2 / B, loss = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2.
"""

from __future__ import annotations

import torch

LAMBDA = 5e-3
EPS = 1e-5


def standardise(z: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit (biased) variance per dimension over the batch, in float32."""
    z = z.float()
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + EPS)


def cross_correlation(za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """C = standardise(za)^T standardise(zb) / B: (B, D) x (B, D) -> (D, D)."""
    return standardise(za).T @ standardise(zb) / za.shape[0]


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = LAMBDA) -> torch.Tensor:
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + lambd * off


def mix_inputs(x1: torch.Tensor, x2: torch.Tensor, alpha: float | torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """x_m = alpha x1 + (1 - alpha) x2[perm], over every channel (bands and DOY)."""
    return alpha * x1 + (1 - alpha) * x2[perm]


def mix_targets(
    z1: torch.Tensor, z2: torch.Tensor, alpha: float, perm: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What C(z_m, z1) and C(z_m, z2) should be if the projector were linear in the mix.

    alpha C(z1, z1) + (1 - alpha) C(z2[perm], z1), and alpha C(z1, z2) + (1 - alpha) C(z2[perm], z2).
    """
    z2p = z2[perm]
    t1 = alpha * cross_correlation(z1, z1) + (1 - alpha) * cross_correlation(z2p, z1)
    t2 = alpha * cross_correlation(z1, z2) + (1 - alpha) * cross_correlation(z2p, z2)
    return t1, t2


def mix_regulariser(zm: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor, alpha: float,
                    perm: torch.Tensor, weight: float = LAMBDA) -> torch.Tensor:
    """weight x (||C(z_m, z1) - t1||^2 + ||C(z_m, z2) - t2||^2), targets without gradient."""
    with torch.no_grad():
        t1, t2 = mix_targets(z1, z2, alpha, perm)
    return weight * ((cross_correlation(zm, z1) - t1).pow(2).sum()
                     + (cross_correlation(zm, z2) - t2).pow(2).sum())
