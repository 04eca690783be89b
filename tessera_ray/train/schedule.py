"""Learning-rate schedule: linear warm-up, then cosine decay to a floor."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based).

    Rises linearly over ``warmup`` steps to 1, then follows a half cosine down
    to ``floor`` at ``total``; stays at ``floor`` after.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
