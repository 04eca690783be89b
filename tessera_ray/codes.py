"""The int8 codes of the published embeddings, read back as floats (one rule for encoder output and stores)."""

from __future__ import annotations

import numpy as np


def dequantise(q: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 codes (..., K) times their scale (...) as float32; NaN wherever the scale is not finite.

    A NaN scale is a pixel with no embedding, +inf one never processed
    (TESSERA.md 5b): neither has values.
    """
    s = np.asarray(scales, dtype=np.float32)
    s = np.where(np.isfinite(s), s, np.float32(np.nan))
    return q.astype(np.float32) * s[..., None]
