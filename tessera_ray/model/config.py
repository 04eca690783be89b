"""v1 encoder variants: frozen configs chosen by name, and the statistics.

The three published v1 variants (TESSERA.md section 4) plus small variants of
the same structure, cheap enough for CPU demos and tests. A config fixes
everything a checkpoint cannot tell: the number of attention heads, the
temporal sampling rule and the input normalisation statistics (for v1.1, one
set per data source: TESSERA.md 4b).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from tessera_ray.errors import UserInputError
from tessera_ray.sources.sentinel2 import S2_BANDS as S2_BANDS  # the encoders' S2 channels: the cube's name

S1_BANDS = 2
EMBEDDING_DIM = 128
"""Width of a v1 encoder's embedding (the first dims of dim_reducer's output)."""

# v1.0 statistics (TESSERA.md section 4), on the uint16 DN / int16 SAR scales.
V10_S2_MEAN = (1711.0938, 1308.8511, 1546.4543, 3010.1293, 3106.5083,
               2068.3044, 2685.0845, 2931.5889, 2514.6928, 1899.4922)
V10_S2_STD = (1926.1026, 1862.9751, 1803.1792, 1741.7837, 1677.4543,
              1888.7862, 1736.3090, 1715.8104, 1514.5199, 1398.4779)
V10_S1_MEAN = (5484.0407, 3003.7812)
V10_S1_STD = (1871.2334, 1726.0670)


DATA_SOURCES = ("aws", "mpc")
"""Preprocessing sources of TESSERA.md 4b: aws = Earth Search S2 + ASF OPERA S1
(our own default reader), mpc = Microsoft Planetary Computer."""


@dataclass(frozen=True)
class NormStats:
    """Per-channel mean and standard deviation; x -> (x - mean) / (std + 1e-9).

    Sentinel-1 has one pair per orbit direction: ascending steps are normalised
    with the ``s1_asc_*`` values, descending ones with ``s1_desc_*``, before
    the two stacks are concatenated (v1.0 has one set for both).
    """

    s2_mean: tuple[float, ...] = V10_S2_MEAN
    s2_std: tuple[float, ...] = V10_S2_STD
    s1_asc_mean: tuple[float, ...] = V10_S1_MEAN
    s1_asc_std: tuple[float, ...] = V10_S1_STD
    s1_desc_mean: tuple[float, ...] = V10_S1_MEAN
    s1_desc_std: tuple[float, ...] = V10_S1_STD

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> NormStats:
        raw = {k: tuple(float(x) for x in v) for k, v in raw.items()}
        # checkpoints written before the per-orbit statistics: one S1 pair for both
        for old in ("mean", "std"):
            if f"s1_{old}" in raw:
                value = raw.pop(f"s1_{old}")
                raw.setdefault(f"s1_asc_{old}", value)
                raw.setdefault(f"s1_desc_{old}", value)
        return cls(**raw)


# v1.1 statistics per data source (TESSERA.md 4b; aws: after the 2026-05-03 retraining).
V11_STATS = {
    "mpc": NormStats(
        s2_mean=(2683.4553, 2223.3630, 2432.0950, 3633.1970, 3602.1755,
                 3006.4324, 3400.2710, 3515.6392, 2456.9163, 1983.8783),
        s2_std=(2739.5217, 2846.2993, 2690.8250, 2290.0439, 2088.8970,
                2673.1106, 2381.4521, 2229.5225, 1601.0942, 1495.3545),
        s1_asc_mean=(5588.3291, 3025.6270), s1_asc_std=(1713.4646, 1693.0471),
        s1_desc_mean=(5552.9683, 2955.0520), s1_desc_std=(1685.5857, 1677.6414),
    ),
    "aws": NormStats(
        s2_mean=(2793.6589, 2356.7776, 2551.0496, 3741.9229, 3713.7844,
                 3120.1997, 3516.3342, 3637.0342, 2501.0283, 2038.1504),
        s2_std=(2810.0093, 2933.8835, 2755.6360, 2344.5027, 2145.7986,
                2743.9019, 2438.8601, 2286.5977, 1680.7367, 1585.5529),
        s1_asc_mean=(5697.0859, 2838.6687), s1_asc_std=(1671.3737, 1789.4116),
        s1_desc_mean=(5759.1367, 2873.2854), s1_desc_std=(1583.2858, 1747.8390),
    ),
}


def check_data_source(value: str | None) -> str | None:
    """``value`` if it names a known data source (or is None); else one clear error."""
    if value is not None and value not in DATA_SOURCES:
        raise UserInputError(f"unknown data source {value!r}; use one of {', '.join(DATA_SOURCES)}")
    return value


@dataclass(frozen=True)
class EncoderConfig:
    """The structure and inference rules of one v1-family variant."""

    family: ClassVar[str] = "v1"
    name: str
    latent: int
    """Latent size; the transformer width is d = 4 x latent."""
    layers: int
    heads: int
    ffn: int
    gru: str
    """``"torch"`` (nn.GRU, v1.0) or ``"custom"`` (custom cell + LayerNorm)."""
    reducer_hidden: int = 0
    """0: dim_reducer is Linear(2d, reducer_out); else the v1.1 MLP 2d -> hidden -> reducer_out."""
    reducer_out: int = EMBEDDING_DIM
    """Width of dim_reducer's output; the first 128 dims are the embedding."""
    sampling: str = "random40"
    """``"random40"`` (v1.0: 40 random steps) or ``"buckets"`` (v1.1: all valid
    steps resampled to a bucket, TESSERA.md 4b)."""
    steps: int = 40
    """Steps drawn per pixel and source by the ``random40`` rule."""
    buckets: tuple[int, ...] = tuple(range(8, 257, 8))
    """Sequence lengths of the ``buckets`` rule."""
    norm: NormStats = field(default_factory=NormStats)
    """Statistics of a variant with one set for every data source."""
    per_source: bool = False
    """True: the statistics depend on the data source (``V11_STATS``), which
    the run must name (``--data-source``) unless the checkpoint records it."""
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.gru not in ("torch", "custom"):
            raise ValueError(f"unknown GRU kind {self.gru!r}")
        if self.sampling not in ("random40", "buckets"):
            raise ValueError(f"unknown sampling rule {self.sampling!r}")
        if self.reducer_out < EMBEDDING_DIM:
            raise ValueError(f"dim_reducer must give at least {EMBEDDING_DIM} dims")
        if self.d % self.heads:
            raise ValueError(f"d={self.d} is not divisible by {self.heads} heads")

    @property
    def d(self) -> int:
        return 4 * self.latent

    def stats(self, data_source: str | None) -> NormStats:
        """The statistics of a run with ``data_source`` (required for per-source variants)."""
        check_data_source(data_source)
        if not self.per_source:
            return self.norm
        if data_source is None:
            raise UserInputError(
                f"variant {self.name} has one set of statistics per data source and the checkpoint "
                f"does not say which it was trained on: pass --data-source {'|'.join(DATA_SOURCES)}"
            )
        return V11_STATS[data_source]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["buckets"] = list(self.buckets)
        out["norm"] = self.norm.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncoderConfig:
        raw = {k: v for k, v in raw.items() if k != "family"}
        norm = NormStats.from_dict(raw.pop("norm", {}))
        raw["buckets"] = tuple(int(b) for b in raw.get("buckets", cls.buckets))
        return cls(norm=norm, **raw)


TINY_BUCKETS = tuple(range(8, 49, 8))
"""Sequence lengths of the ``tiny`` variant: every valid date, at most 48 of them."""

V1_VARIANTS: dict[str, EncoderConfig] = {
    c.name: c
    for c in (
        EncoderConfig("v1.0", latent=128, layers=8, heads=8, ffn=4096, gru="torch"),
        EncoderConfig("v1.0-qat", latent=128, layers=4, heads=4, ffn=4096, gru="custom"),
        # v1.1: per-source, per-orbit statistics (TESSERA.md 4b)
        EncoderConfig(
            "v1.1", latent=192, layers=4, heads=4, ffn=2048, gru="custom",
            reducer_hidden=3072, reducer_out=192, sampling="buckets", per_source=True,
        ),
        EncoderConfig("small", latent=32, layers=2, heads=4, ffn=256, gru="custom"),
        # The v1 demo encoder of earlier releases. It reads every valid date,
        # resampled to at most 48 (the v1.1 rule with buckets 8..48) instead of
        # drawing 40 at random (docs/learn.md).
        EncoderConfig("tiny", latent=16, layers=1, heads=2, ffn=128, gru="custom",
                      sampling="buckets", buckets=TINY_BUCKETS),
        # the other two structures at toy size, so tests cover every code path fast
        EncoderConfig("tiny-torchgru", latent=16, layers=1, heads=2, ffn=128, gru="torch"),
        EncoderConfig(
            "tiny-v1.1", latent=32, layers=1, heads=2, ffn=128, gru="custom",
            reducer_hidden=96, reducer_out=160, sampling="buckets", per_source=True,
        ),
    )
}

