"""Per-pixel arrays in the cube's layout -> int8 embeddings + float32 scales.

Three steps, so the Ray actor can pack pixels of many units into shared
device batches: a family's inference rule prepares pixels (validate, flag,
sample, normalise; numpy; :func:`prepare`), :class:`ModelRunner` runs device
batches and quantises with the rule's int8 rule, and :func:`assemble` places
the results. :func:`encode_pixels` chains them for one :class:`PixelSeries`.
The pieces here are shared by every family; what differs lives in the
family's module (:mod:`.v1`, :mod:`.v2`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

from tessera_ray.codes import dequantise as dequantise
from tessera_ray.errors import UserInputError
from tessera_ray.model.config import EMBEDDING_DIM, S1_BANDS, S2_BANDS

if TYPE_CHECKING:
    from tessera_ray.model.family import InferenceRule

MIN_SCALE = 1e-8
# CPU matrix kernels switch algorithm for very few rows, which changes the
# float rounding of a pixel with the company it is in. Device batches are
# padded (with copies of their last pixel) to at least this many pixels so
# that embeddings are byte-identical however pixels are batched.
MIN_CPU_ROWS = 16
# A SAR stack with no time step at all stands in as one all-zero (no data)
# observation, so the S1 branch still sees a sequence.
EMPTY_SAR_DOY = 1


@dataclass(frozen=True, eq=False)
class PixelSeries:
    """The annual time series of N pixels of one block, flattened over pixels."""

    block_id: str
    """Names the unit/block in error messages."""
    year: int
    zone: int
    rows: np.ndarray
    """(N,) pixel rows on the zone grid (with cols, year and zone: the seed key)."""
    cols: np.ndarray
    s2_bands: np.ndarray
    """(N, T, 10) Sentinel-2 DNs in model band order."""
    s2_masks: np.ndarray
    """(N, T) 1 = valid."""
    s2_doys: np.ndarray
    """(T,) raw day of year."""
    sar_ascending: np.ndarray
    """(N, Ta, 2) VV, VH on the int16 scale, 0 = no data."""
    sar_ascending_doys: np.ndarray
    sar_descending: np.ndarray
    sar_descending_doys: np.ndarray

    def __post_init__(self) -> None:
        validate(self)

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_block(
        cls,
        *,
        block_id: str,
        year: int,
        zone: int,
        row: int,
        col: int,
        bands: np.ndarray,
        masks: np.ndarray,
        doys: np.ndarray,
        sar_ascending: np.ndarray,
        sar_ascending_doy: np.ndarray,
        sar_descending: np.ndarray,
        sar_descending_doy: np.ndarray,
    ) -> PixelSeries:
        """From a cube block ((T, H, W, ...) stacks) whose upper-left pixel is (row, col)."""
        bands = np.asarray(bands)
        if bands.ndim != 4:
            raise UserInputError(f"{block_id}: bands must be (T, H, W, 10), got {bands.shape}")
        _, height, width, _ = bands.shape
        rr, cc = np.meshgrid(
            np.arange(row, row + height, dtype=np.int64),
            np.arange(col, col + width, dtype=np.int64),
            indexing="ij",
        )

        def per_pixel(stack: np.ndarray, name: str) -> np.ndarray:
            stack = np.asarray(stack)
            if stack.ndim < 3 or stack.shape[1:3] != (height, width):
                raise UserInputError(
                    f"{block_id}: {name} has shape {stack.shape}, expected (T, {height}, {width}, ...)"
                )
            moved = np.moveaxis(stack, 0, 2)  # (H, W, T, ...)
            return np.ascontiguousarray(moved.reshape(height * width, *moved.shape[2:]))

        return cls(
            block_id=block_id,
            year=int(year),
            zone=int(zone),
            rows=rr.ravel(),
            cols=cc.ravel(),
            s2_bands=per_pixel(bands, "bands"),
            s2_masks=per_pixel(masks, "masks"),
            s2_doys=np.asarray(doys),
            sar_ascending=per_pixel(sar_ascending, "sar_ascending"),
            sar_ascending_doys=np.asarray(sar_ascending_doy),
            sar_descending=per_pixel(sar_descending, "sar_descending"),
            sar_descending_doys=np.asarray(sar_descending_doy),
        )

    def take(self, index: np.ndarray | slice) -> PixelSeries:
        """The pixels at ``index`` (an index array, slice or boolean mask)."""
        return PixelSeries(
            block_id=self.block_id,
            year=self.year,
            zone=self.zone,
            rows=self.rows[index],
            cols=self.cols[index],
            s2_bands=self.s2_bands[index],
            s2_masks=self.s2_masks[index],
            s2_doys=self.s2_doys,
            sar_ascending=self.sar_ascending[index],
            sar_ascending_doys=self.sar_ascending_doys,
            sar_descending=self.sar_descending[index],
            sar_descending_doys=self.sar_descending_doys,
        )


def validate(p: PixelSeries) -> None:
    """Shapes, NaN and DOY range: bad input is refused, never embedded."""
    n = len(p.rows)

    def fail(what: str) -> None:
        raise UserInputError(f"{p.block_id}: {what}")

    if np.shape(p.cols) != (n,):
        fail(f"rows and cols differ in length ({n} vs {np.shape(p.cols)})")
    t = len(p.s2_doys)
    expected = {
        "s2_bands": (p.s2_bands, (n, t, S2_BANDS)),
        "s2_masks": (p.s2_masks, (n, t)),
        "sar_ascending": (p.sar_ascending, (n, len(p.sar_ascending_doys), S1_BANDS)),
        "sar_descending": (p.sar_descending, (n, len(p.sar_descending_doys), S1_BANDS)),
    }
    for name, (array, shape) in expected.items():
        if np.shape(array) != shape:
            fail(f"{name} has shape {np.shape(array)}, expected {shape}")
        if np.issubdtype(np.asarray(array).dtype, np.floating) and np.isnan(array).any():
            fail(f"{name} contains NaN")
    for name in ("s2_doys", "sar_ascending_doys", "sar_descending_doys"):
        doys = np.asarray(getattr(p, name))
        if doys.ndim != 1:
            fail(f"{name} must be one-dimensional, got shape {doys.shape}")
        if doys.size and (np.isnan(doys.astype(np.float64)).any() or doys.min() < 1 or doys.max() > 366):
            fail(f"{name} holds a day of year outside 1..366")


@dataclass(frozen=True, eq=False)
class EncodedPixels:
    """int8 embeddings (N, 128) and float32 scales (N,); scale NaN = no data.

    From a ``raw`` encoder (:class:`ModelRunner` ``raw=True``): float32 embeddings, scale 1 (NaN = no data).
    """

    embeddings: np.ndarray
    scales: np.ndarray

    def dequantised(self) -> np.ndarray:
        return dequantise(self.embeddings, self.scales)


@dataclass(frozen=True, eq=False)
class InputGroup:
    """Model inputs of pixels sharing sequence lengths (one device batch shape)."""

    pixels: np.ndarray
    """(n,) indices into the pixels that were prepared."""
    s2: np.ndarray
    """(n, T2, 11) float32: normalised bands, raw DOY last."""
    s1: np.ndarray
    """(n, T1, 3) float32."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.s2.shape[1], self.s1.shape[1])


@dataclass(frozen=True, eq=False)
class PreparedPixels:
    count: int
    nodata: np.ndarray
    """(N,) no valid Sentinel-2 observation: not embedded, scale NaN."""
    groups: tuple[InputGroup, ...]
    """The pixels to run through the model; the rest get an all-zero embedding."""


def normalise(values: np.ndarray, mean: ArrayLike, std: ArrayLike) -> np.ndarray:
    """(x - mean) / (std + 1e-9) per channel (last axis), float32."""
    m = np.asarray(mean, dtype=np.float32)
    s = np.asarray(std, dtype=np.float32)
    out: np.ndarray = (values.astype(np.float32) - m) / (s + np.float32(1e-9))
    return out


def group_by_lengths(run: np.ndarray, len2: np.ndarray, len1: np.ndarray, in2: np.ndarray,
                     in1: np.ndarray) -> tuple[InputGroup, ...]:
    """Pixels ``run`` batched by their (S2 length, S1 length), inputs cut to those lengths."""
    if run.size == 0:
        return ()
    pairs, member = np.unique(np.stack((len2[run], len1[run]), axis=1), axis=0, return_inverse=True)
    member = member.ravel()
    groups = []
    for g, (l2, l1) in enumerate(pairs.tolist()):
        pixels = run[member == g]
        groups.append(InputGroup(pixels=pixels, s2=np.ascontiguousarray(in2[pixels, :l2]),
                                 s1=np.ascontiguousarray(in1[pixels, :l1])))
    return tuple(groups)


def prepare(config: Any, pixels: PixelSeries, seed: int = 0, data_source: str | None = None) -> PreparedPixels:
    """Prepare ``pixels`` with the inference rule of ``config``'s family."""
    from tessera_ray.model.family import inference_rule

    return inference_rule(config, data_source).prepare(pixels, seed)


def quantise(embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: scale = max|e| / 127 (at least 1e-8), q = clamp(round(e / scale))."""
    scale = (embeddings.abs().amax(dim=1) / 127.0).clamp_min(MIN_SCALE)
    q = torch.round(embeddings / scale[:, None]).clamp(-128, 127).to(torch.int8)
    return q, scale


class ModelRunner:
    """Runs an encoder over model inputs in device batches; quantises on the device.

    ``quantiser`` and ``dims`` are the family's int8 rule and output width
    (default: v1's). The CPU and CUDA paths are the same code: on CUDA, inputs
    are pinned and copied without blocking and the model runs under bf16
    autocast unless ``bf16`` is false. A short
    last batch is padded (to MIN_CPU_ROWS pixels on the CPU, to the full batch
    on CUDA, where every call then has the same shape) so that a pixel's
    embedding does not depend on how many pixels share its batch.
    """

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu",
                 batch_size: int = 256, bf16: bool | None = None,
                 quantiser: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
                 dims: int = EMBEDDING_DIM, raw: bool = False) -> None:
        self.device = torch.device(device)
        self.quantise = quantiser or quantise
        self.raw = raw
        """True: return the float32 embeddings (scales all 1) instead of int8 codes."""
        self.dims = int(dims)
        self.model = model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.cuda = self.device.type == "cuda"
        self.bf16 = self.cuda if bf16 is None else bf16
        self.min_rows = self.batch_size if self.cuda else MIN_CPU_ROWS

    def _host(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        return tensor.pin_memory() if self.cuda else tensor

    def _padded(self, rows: torch.Tensor) -> torch.Tensor:
        missing = self.min_rows - len(rows)
        if missing <= 0:
            return rows
        filler = rows[-1:].expand(missing, *rows.shape[1:])
        padded = torch.cat((rows, filler))
        return padded.pin_memory() if self.cuda else padded

    def __call__(self, s2: np.ndarray, s1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, T2, 11), (n, T1, 3) -> int8 (n, dims), float32 scales (n,)."""
        n = len(s2)
        s2_host, s1_host = self._host(s2), self._host(s1)
        q_host = torch.empty((n, self.dims), dtype=torch.float32 if self.raw else torch.int8, pin_memory=self.cuda)
        scale_host = torch.empty((n,), dtype=torch.float32, pin_memory=self.cuda)
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                part = slice(start, min(start + self.batch_size, n))
                rows = part.stop - part.start
                s2_dev = self._padded(s2_host[part]).to(self.device, non_blocking=True)
                s1_dev = self._padded(s1_host[part]).to(self.device, non_blocking=True)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    embeddings = self.model(s2_dev, s1_dev)[:rows]
                if self.raw:
                    q, scale = embeddings.float(), torch.ones(rows, device=embeddings.device)
                else:
                    q, scale = self.quantise(embeddings.float())
                q_host[part].copy_(q, non_blocking=True)
                scale_host[part].copy_(scale, non_blocking=True)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return q_host.numpy(), scale_host.numpy()


def assemble(prepared: PreparedPixels, results: list[tuple[np.ndarray, np.ndarray]],
             dims: int = EMBEDDING_DIM, zero_scale: float = MIN_SCALE, dtype: DTypeLike = np.int8) -> EncodedPixels:
    """Place group results (in group order) into per-pixel arrays with the sentinels.

    Pixels in no group and not no data get an all-zero embedding of scale ``zero_scale``.
    ``dtype``: of the embeddings (float32 for a ``raw`` runner's results).
    """
    embeddings = np.zeros((prepared.count, dims), dtype=dtype)
    scales = np.full(prepared.count, zero_scale, dtype=np.float32)
    scales[prepared.nodata] = np.nan
    for group, (q, scale) in zip(prepared.groups, results, strict=True):
        embeddings[group.pixels] = q
        scales[group.pixels] = scale
    return EncodedPixels(embeddings, scales)


def runner_for(model: torch.nn.Module, rule: InferenceRule, device: str | torch.device | None = None,
               batch_size: int = 256, bf16: bool | None = None, raw: bool = False) -> ModelRunner:
    """A :class:`ModelRunner` with ``rule``'s int8 rule, width and precision (``raw``: float outputs)."""
    device = device if device is not None else next(model.parameters()).device
    if bf16 is None:  # as upstream runs the family: v1 under bf16 on a GPU, students in fp32
        bf16 = rule.bf16 and torch.device(device).type == "cuda"
    return ModelRunner(model, device=device, batch_size=batch_size, bf16=bf16,
                       quantiser=rule.quantise, dims=rule.output_dims, raw=raw)


def encode_prepared(runner: ModelRunner, rule: InferenceRule, prepared: PreparedPixels) -> EncodedPixels:
    """Run prepared pixels through ``runner`` and place them."""
    results = [runner(g.s2, g.s1) for g in prepared.groups]
    return assemble(prepared, results, rule.output_dims, rule.min_scale)


def encode_pixels(model: torch.nn.Module | ModelRunner, config: Any, pixels: PixelSeries, seed: int = 0,
                  batch_size: int = 256, data_source: str | None = None) -> EncodedPixels:
    """Embed every pixel of ``pixels`` with ``config``'s family rule: the one inference entry point."""
    from tessera_ray.model.family import inference_rule

    rule = inference_rule(config, data_source)
    runner = model if isinstance(model, ModelRunner) else runner_for(model, rule, batch_size=batch_size)
    return encode_prepared(runner, rule, rule.prepare(pixels, seed))
