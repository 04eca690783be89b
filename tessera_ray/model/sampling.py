"""Temporal sampling at inference, vectorised over pixels.

Randomness comes from a counter-based hash (splitmix64) of a per-pixel seed
derived from (run seed, year, zone, row, col). A pixel's draws therefore depend
on nothing but its own key, so re-running, re-batching or re-ordering pixels
gives byte-identical embeddings.
"""

from __future__ import annotations

import numpy as np

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

STREAM_S2 = 1
STREAM_S1 = 2


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 values (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _absorb(h: np.ndarray, value) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix64(h ^ (np.asarray(value).astype(np.int64).astype(np.uint64) + _GAMMA))


def pixel_seeds(run_seed: int, year: int, zone: int, rows, cols) -> np.ndarray:
    """One uint64 seed per pixel from its key (rows/cols on the zone grid)."""
    h = mix64(np.full(np.shape(rows), np.uint64(run_seed & 0xFFFFFFFFFFFFFFFF)))
    for value in (year, zone, rows, cols):
        h = _absorb(h, value)
    return h


def uniforms(seeds: np.ndarray, stream: int, count: int) -> np.ndarray:
    """``count`` uniform floats in [0, 1) per seed: (N,) -> (N, count), float64.

    Value k of a pixel is hash(stream key of its seed, k): no state is carried,
    so any subset of pixels gets the same values.
    """
    base = _absorb(np.asarray(seeds, dtype=np.uint64), stream)
    counter = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        bits = mix64(base[:, None] + counter[None, :] * _GAMMA)
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _effective_valid(valid: np.ndarray) -> np.ndarray:
    """Pixels with no valid step count all of their steps as valid."""
    valid = np.asarray(valid, dtype=bool)
    return valid | ~valid.any(axis=1, keepdims=True)


def _valid_positions(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the valid step indices first in ascending order, and their count."""
    order = np.argsort(~valid, axis=1, kind="stable")
    return order, valid.sum(axis=1)


def random_steps(valid: np.ndarray, seeds: np.ndarray, stream: int, steps: int) -> np.ndarray:
    """The v1.0 rule: ``steps`` sorted step indices per pixel, (N, T) bool -> (N, steps).

    Without replacement among the valid steps when there are at least
    ``steps`` of them, else with replacement; no valid step: from all steps.
    """
    n_pixels, n_steps = valid.shape
    if n_steps == 0:
        raise ValueError("cannot sample from an empty time series")
    valid = _effective_valid(valid)
    order, count = _valid_positions(valid)
    u = uniforms(seeds, stream, max(n_steps, steps))
    # with replacement: the floor(u * count)-th valid step
    pick = np.minimum((u[:, :steps] * count[:, None]).astype(np.int64), count[:, None] - 1)
    chosen = np.take_along_axis(order, pick, axis=1)
    enough = count >= steps
    if enough.any():
        # without replacement: the valid steps with the smallest keys
        keys = np.where(valid[enough], u[enough, :n_steps], 2.0)
        chosen[enough] = np.argsort(keys, axis=1, kind="stable")[:, :steps]
    return np.sort(chosen, axis=1)


def bucket_length(count: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """The smallest bucket holding ``count`` steps (the largest bucket beyond it)."""
    edges = np.asarray(buckets)
    slot = np.searchsorted(edges, np.asarray(count), side="left")
    return edges[np.minimum(slot, len(edges) - 1)]


def bucket_steps(valid: np.ndarray, buckets: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The v1.1 rule: every valid step, evenly repeated or thinned to its bucket.

    Returns (lengths (N,), indices (N, max length)); row p's first lengths[p]
    entries are its sorted step indices: entry k is the floor(k * n / b)-th
    valid step, which repeats steps evenly when n < b and thins them evenly
    when n > b. No randomness.
    """
    if valid.shape[1] == 0:
        raise ValueError("cannot sample from an empty time series")
    order, count = _valid_positions(_effective_valid(valid))
    lengths = bucket_length(count, buckets)
    k = np.arange(int(lengths.max()) if len(lengths) else 0)
    pos = (k[None, :] * count[:, None]) // lengths[:, None]
    pos = np.minimum(pos, count[:, None] - 1)
    return lengths, np.take_along_axis(order, pos, axis=1)
