"""TESSERA encoders: the families (v1, v2), checkpoints, sampling and inference.

Everything outside this package sees a model through :mod:`.family` (the
registry and protocol) and the functions exported here.
"""

from tessera_ray.model.checkpoint import (
    LoadedCheckpoint,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from tessera_ray.model.config import DATA_SOURCES, EncoderConfig, NormStats
from tessera_ray.model.family import (
    FAMILIES,
    VARIANTS,
    build_encoder,
    family_of,
    get_variant,
    inference_rule,
    matryoshka_depths,
    output_dims,
    parameter_count,
)
from tessera_ray.model.inference import (
    EncodedPixels,
    ModelRunner,
    PixelSeries,
    dequantise,
    encode_pixels,
    prepare,
    quantise,
    runner_for,
)
from tessera_ray.model.network import TesseraEncoder
from tessera_ray.model.v2 import StudentConfig, StudentEncoder

__all__ = [
    "DATA_SOURCES",
    "FAMILIES",
    "VARIANTS",
    "EncodedPixels",
    "EncoderConfig",
    "LoadedCheckpoint",
    "ModelRunner",
    "NormStats",
    "PixelSeries",
    "StudentConfig",
    "StudentEncoder",
    "TesseraEncoder",
    "build_encoder",
    "dequantise",
    "encode_pixels",
    "family_of",
    "get_variant",
    "inference_rule",
    "load_encoder",
    "matryoshka_depths",
    "output_dims",
    "parameter_count",
    "prepare",
    "quantise",
    "read_checkpoint",
    "runner_for",
    "save_checkpoint",
]
