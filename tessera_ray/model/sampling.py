"""Temporal sampling at inference, vectorised over pixels.

Randomness comes from a counter-based hash (splitmix64) of a per-pixel seed
derived from (run seed, year, zone, row, col). A pixel's draws therefore depend
on nothing but its own key, so re-running, re-batching or re-ordering pixels
gives byte-identical embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

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
    mixed: np.ndarray = x ^ (x >> np.uint64(31))
    return mixed


def _absorb(h: np.ndarray, value: ArrayLike) -> np.ndarray:
    with np.errstate(over="ignore"):
        return mix64(h ^ (np.asarray(value).astype(np.int64).astype(np.uint64) + _GAMMA))


def pixel_seeds(run_seed: int, year: int, zone: int, rows: ArrayLike, cols: ArrayLike) -> np.ndarray:
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


# --- the bucket rules of v1.1 and v2 (TESSERA.md 4b, 4c) -------------------
#
# Both rules map the n valid steps of a stream (in sequence order) to a bucket
# of B steps by an index pattern that depends on (n, B) alone. The patterns
# below are written for one (n, B) and applied to every pixel sharing n.

V11_BUCKETS = tuple(range(8, 257, 8))
"""{8, 16, ..., 256}: the sequence lengths of v1.1 and the v2 students."""


def split_middles(n: int, parts: int) -> np.ndarray:
    """Split 0..n-1 into ``parts`` consecutive chunks as numpy's array_split does
    (the first n mod parts chunks one longer) and take each chunk's element at
    position len(chunk) // 2."""
    base, longer = divmod(n, parts)
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:longer] += 1
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    return starts + sizes // 2


def v11_pattern(n: int, bucket: int) -> np.ndarray:
    """v1.1 (TESSERA.md 4b): n valid steps -> ``bucket`` indices into 0..n-1.

    B = n: all; B < n: the middle of each array_split chunk; B > n: all n, then
    rint(linspace(0, n - 1, B - n + 2)[1:-1]) appended (half to even), unsorted.
    """
    if n < 1:
        raise ValueError("the v1.1 pattern needs at least one valid step")
    if bucket == n:
        return np.arange(n, dtype=np.int64)
    if bucket < n:
        return split_middles(n, bucket)
    extra = np.rint(np.linspace(0, n - 1, bucket - n + 2)[1:-1]).astype(np.int64)
    return np.concatenate((np.arange(n, dtype=np.int64), extra))


def v2_pattern(n: int, bucket: int) -> np.ndarray:
    """v2 students (TESSERA.md 4c): n valid steps -> ``bucket`` indices into 0..n-1.

    n >= B: linspace(0, n - 1, B) truncated; n < B: all n, then r = B - n extras:
    the array_split middles of r chunks if r <= n, else arange(r) mod n.
    """
    if n < 1:
        raise ValueError("the v2 pattern needs at least one valid step")
    if n >= bucket:
        return np.linspace(0, n - 1, bucket).astype(np.int64)
    extra_count = bucket - n
    extra = split_middles(n, extra_count) if extra_count <= n else np.arange(extra_count) % n
    return np.concatenate((np.arange(n, dtype=np.int64), extra.astype(np.int64)))


def smallest_bucket(count: np.ndarray, buckets: tuple[int, ...]) -> np.ndarray:
    """The smallest bucket >= count (the largest one beyond it); count 0 -> the first."""
    return bucket_length(count, buckets)


def pattern_steps(valid: np.ndarray, buckets: tuple[int, ...],
                  pattern: Callable[[int, int], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a bucket rule to every pixel: (N, T) bool -> (counts, lengths, indices).

    ``counts[p]`` is pixel p's number of valid steps and ``lengths[p]`` its
    bucket (0 where it has none); row p of ``indices`` (N, max length) holds, in
    its first lengths[p] entries, time-axis indices of its valid steps chosen
    by ``pattern(n, B)``. No randomness: a pixel's steps depend on its mask alone.
    """
    valid = np.asarray(valid, dtype=bool)
    order, count = _valid_positions(valid)
    lengths = np.where(count > 0, smallest_bucket(count, buckets), 0)
    width = int(lengths.max()) if lengths.size else 0
    positions = np.zeros((len(count), width), dtype=np.int64)
    for n in np.unique(count[count > 0]).tolist():
        rows = np.flatnonzero(count == n)
        picks = pattern(n, int(smallest_bucket(np.array(n), buckets)))
        positions[rows, :len(picks)] = picks
    index = np.take_along_axis(order, positions, axis=1) if width else positions
    return count, lengths, index
