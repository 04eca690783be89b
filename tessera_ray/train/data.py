"""Training data: a globally shuffled pool of pixel time series, and two views per pixel.

Pixels are drawn from every unit folder (the upstream npy layout written by
``tessera-ray ingest``; a folder, ``s3://`` or ``https://``), kept with their whole
annual series, and visited in a full permutation of the pool, so a batch
mixes pixels from all units instead of one neighbourhood. A view is one
random temporal sample of a pixel (the model package's v1.0 draw, on the
inputs as the encoder family's inference rule normalises them), keyed by
(seed, step, view) and the pixel: the data stream is a pure function of the
step, which makes resumed runs see exactly the batches they would have seen.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from tessera_ray.cube import META_FILE, STACKS
from tessera_ray.errors import DataError, UserInputError, squash
from tessera_ray.grid import Window, zone_grid
from tessera_ray.model.inference import PixelSeries
from tessera_ray.model.sampling import STREAM_S1, STREAM_S2, mix64, pixel_seeds, random_steps


@dataclass(frozen=True, eq=False)
class UnitCube:
    """One unit folder's stacks (memory-mapped when local) and where it lies."""

    source: str
    zone: int
    window: Window
    arrays: dict

    def series(self, rows: np.ndarray, cols: np.ndarray, year: int) -> PixelSeries:
        """The pixels at window-relative (rows, cols) as a :class:`PixelSeries`."""
        a = self.arrays

        def pick(stack):
            return np.ascontiguousarray(np.moveaxis(np.asarray(stack[:, rows, cols]), 0, 1))

        return PixelSeries(
            block_id=self.source, year=year, zone=self.zone,
            rows=rows.astype(np.int64) + self.window.row, cols=cols.astype(np.int64) + self.window.col,
            s2_bands=pick(a["bands"]), s2_masks=pick(a["masks"]), s2_doys=np.asarray(a["doys"]),
            sar_ascending=pick(a["sar_ascending"]), sar_ascending_doys=np.asarray(a["sar_ascending_doy"]),
            sar_descending=pick(a["sar_descending"]), sar_descending_doys=np.asarray(a["sar_descending_doy"]),
        )


def open_unit(url: str) -> UnitCube:
    """A unit folder; local folders are memory-mapped, remote ones (``s3://``, ``https://``) read whole.

    A missing, truncated or mis-shaped file is a :class:`DataError` naming it, before any training.
    """
    from tessera_ray.store.objects import ObjectNotFound, open_objects
    from tessera_ray.store.urls import is_remote

    remote = is_remote(url)
    objects = open_objects(url)
    try:
        raw = objects.get(META_FILE)
        arrays = {name: _load_stack(objects, f"{name}.npy", remote) for name in STACKS}
    except ObjectNotFound as exc:
        raise DataError(f"{url} is not a complete unit folder ({exc})") from None
    except (ValueError, EOFError, OSError) as exc:
        raise DataError(f"{url}: {getattr(exc, 'stack', 'a file')} is truncated or not a .npy file "
                        f"({squash(exc, 160)})") from None
    try:
        meta = json.loads(raw)
        zone, window = int(meta["zone"]), Window(*(int(v) for v in meta["window"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{url}: {META_FILE} is not a unit description ({type(exc).__name__}: {exc})") from None
    _check_shapes(url, arrays, window)
    return UnitCube(url, zone, window, arrays)


def _load_stack(objects, key: str, remote: bool) -> np.ndarray:
    from tessera_ray.store.objects import ObjectNotFound

    try:
        if not remote:  # memory-mapped: a unit is read pixel by pixel, never whole
            path = objects.path / key
            if not path.is_file():
                raise ObjectNotFound(f"no object {objects.child_url(key)}")
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return np.load(io.BytesIO(objects.get(key)), allow_pickle=False)
    except ObjectNotFound:
        raise
    except (ValueError, EOFError, OSError) as exc:
        exc.stack = key  # type: ignore[union-attr]  # the caller's message reads it with getattr
        raise


def _check_shapes(url: str, a: dict, window: Window) -> None:
    """The stacks' shapes agree with each other and with the unit's window (upstream npy layout)."""
    h, w = window.height, window.width
    t, ta, td = (a[n].shape[0] if a[n].ndim == 1 else -1 for n in ("doys", "sar_ascending_doy", "sar_descending_doy"))
    expected = {"doys": (t,), "bands": (t, h, w, 10), "masks": (t, h, w), "sar_ascending_doy": (ta,),
                "sar_ascending": (ta, h, w, 2), "sar_descending_doy": (td,), "sar_descending": (td, h, w, 2)}
    for name, shape in expected.items():
        if tuple(a[name].shape) != shape or -1 in shape:
            raise DataError(f"{url}: {name}.npy has shape {tuple(a[name].shape)}, expected "
                            f"{tuple('T' if v == -1 else v for v in shape)} for a {h} x {w} unit "
                            "(truncated or from another unit?)")


def find_units(root: str) -> list[str]:
    """The unit folders under ``root`` (those holding a cube.json), sorted; ``root`` itself if it is one.

    An HTTP root cannot be listed: name the unit folders themselves there.
    """
    from tessera_ray.store.objects import open_objects

    objects = open_objects(root)
    if objects.exists(META_FILE):
        return [root]
    suffix = f"/{META_FILE}"
    found = sorted(key[: -len(suffix)] for key in objects.list("") if key.endswith(suffix))
    if not found:
        raise UserInputError(f"no unit folders (with {META_FILE}) under {root}: run tessera-ray ingest first")
    return [objects.child_url(key) for key in found]


@dataclass(frozen=True, eq=False)
class PixelPool:
    """Training pixels from many units; pool pixel i is ``units[owner[i]]`` pixel ``local[i]``."""

    units: tuple[PixelSeries, ...]
    owner: np.ndarray
    local: np.ndarray

    def __len__(self) -> int:
        return len(self.owner)


def build_pool(cubes: list[UnitCube], per_unit: int, seed: int, year: int = 0, min_valid: int = 2) -> PixelPool:
    """Up to ``per_unit`` random pixels of each unit with at least ``min_valid`` clear Sentinel-2 dates."""
    rng = np.random.default_rng([seed, 7])
    units: list[Any] = []
    owner: list[np.ndarray] = []
    local: list[np.ndarray] = []
    for cube in cubes:
        clear = np.zeros(cube.window.shape, np.int32)
        masks = cube.arrays["masks"]
        for t in range(masks.shape[0]):
            clear += np.asarray(masks[t]) == 1
        rows, cols = np.nonzero(clear >= min_valid)
        if rows.size == 0:
            continue
        pick = np.sort(rng.choice(rows.size, size=min(per_unit, rows.size), replace=False))
        series = cube.series(rows[pick], cols[pick], year)
        nonzero = series.s2_bands.reshape(len(series), -1).any(axis=1)
        series = series.take(np.flatnonzero(nonzero))
        owner.append(np.full(len(series), len(units)))
        local.append(np.arange(len(series)))
        units.append(series)
    if not units:
        raise DataError(f"no pixel with {min_valid} clear Sentinel-2 dates in {len(cubes)} unit folder(s)")
    return PixelPool(tuple(units), np.concatenate(owner), np.concatenate(local))


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """A full permutation of the pool for one epoch (the global shuffle)."""
    return np.random.default_rng([seed, 11, epoch]).permutation(n)


def batch_indices(n: int, batch: int, seed: int, step: int) -> np.ndarray:
    """Pool indices of ``step``'s batch: consecutive slices of per-epoch permutations."""
    per_epoch = max(1, n // batch)
    epoch, k = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[k * batch:(k + 1) * batch]


def view_seed(seed: int, step: int, view: int) -> int:
    """The run seed of one view of one step (a hash, so views never share draws)."""
    return int(mix64(np.array([seed * 1_000_003 + step * 4 + view], dtype=np.uint64))[0])


def _gather(values: np.ndarray, doys: np.ndarray, valid: np.ndarray, index: np.ndarray,
            empty_as_zeros: bool) -> np.ndarray:
    """Chosen steps of normalised values with raw DOY last; a pixel with no valid
    step is all zeros (DOY too) where the rule feeds empty streams as zeros."""
    if values.shape[1] == 0:  # no step at all
        return np.zeros((len(values), index.shape[1], values.shape[2] + 1), np.float32)
    picked = np.take_along_axis(values, index[:, :, None], axis=1)
    doy = np.asarray(doys, dtype=np.float32)[index]
    out = np.concatenate((picked, doy[:, :, None]), axis=2)
    if empty_as_zeros:
        out[~valid.any(axis=1)] = 0.0
    return out


def view(series: PixelSeries, rule, run_seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """One random temporal sample of each pixel: model inputs (n, steps, 11) and (n, steps, 3)."""
    seeds = pixel_seeds(run_seed, series.year, series.zone, series.rows, series.cols)
    s2, s2_valid, s1, s1_valid, s1_doys = rule.streams(series)
    s2_index = random_steps(s2_valid, seeds, STREAM_S2, steps)
    s1_index = (random_steps(s1_valid, seeds, STREAM_S1, steps) if s1.shape[1]
                else np.zeros((len(series), steps), np.int64))
    return (_gather(s2, series.s2_doys, s2_valid, s2_index, rule.empty_as_zeros),
            _gather(s1, s1_doys, s1_valid, s1_index, rule.empty_as_zeros))


def two_views(pool: PixelPool, index: np.ndarray, rule, seed: int, step: int,
              steps: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Both views of the pool pixels at ``index`` (batch order kept), as float32 arrays."""
    out = [[np.empty((len(index), steps, 11), np.float32), np.empty((len(index), steps, 3), np.float32)]
           for _ in range(2)]
    owners = pool.owner[index]
    for u in np.unique(owners):
        at = np.flatnonzero(owners == u)
        series = pool.units[u].take(pool.local[index[at]])
        for v in range(2):
            s2, s1 = view(series, rule, view_seed(seed, step, v), steps)
            out[v][0][at], out[v][1][at] = s2, s1
    return (out[0][0], out[0][1]), (out[1][0], out[1][1])


def series_at_points(cubes: list[UnitCube], lons: np.ndarray, lats: np.ndarray,
                     year: int = 0) -> tuple[list[PixelSeries], list[np.ndarray]]:
    """The series of the pixels under lon/lat points, per unit; with the point indices each covers."""
    found, where = [], []
    taken = np.zeros(len(lons), bool)
    for cube in cubes:
        rows, cols = zone_grid(cube.zone).lonlat_to_pixel(np.asarray(lons, float), np.asarray(lats, float))
        r = np.asarray(rows) - cube.window.row
        c = np.asarray(cols) - cube.window.col
        inside = (~taken) & (r >= 0) & (c >= 0) & (r < cube.window.height) & (c < cube.window.width)
        idx = np.flatnonzero(inside)
        if idx.size:
            found.append(cube.series(r[idx].astype(np.int64), c[idx].astype(np.int64), year))
            where.append(idx)
            taken[idx] = True
    return found, where
