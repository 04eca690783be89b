"""The TESSERA v1 encoder family: variants, checkpoints, sampling and inference."""

from tessera_ray.model.checkpoint import (
    LoadedCheckpoint,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from tessera_ray.model.config import VARIANTS, EncoderConfig, NormStats, get_variant
from tessera_ray.model.inference import (
    EncodedPixels,
    ModelRunner,
    PixelSeries,
    dequantise,
    encode_pixels,
    prepare,
    quantise,
)
from tessera_ray.model.network import TesseraEncoder, build_encoder, parameter_count

__all__ = [
    "VARIANTS",
    "EncodedPixels",
    "EncoderConfig",
    "LoadedCheckpoint",
    "ModelRunner",
    "NormStats",
    "PixelSeries",
    "TesseraEncoder",
    "build_encoder",
    "dequantise",
    "encode_pixels",
    "get_variant",
    "load_encoder",
    "parameter_count",
    "prepare",
    "quantise",
    "read_checkpoint",
    "save_checkpoint",
]
