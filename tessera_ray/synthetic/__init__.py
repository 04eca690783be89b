"""The synthetic world: Sentinel-1/2 look-alike COGs and STAC items over known land cover.

It is the demo's input and the fixture every ingest test compares against:
``generate_world`` writes it, ``World.open`` reads it back, and the world's
truth (land cover, each scene's values on any grid) is exposed as pure
functions. See :mod:`tessera_ray.synthetic.world` for the folder layout.
"""

from tessera_ray.synthetic.landscape import CLASSES, OUTSIDE, S2_BANDS, LandCoverClass
from tessera_ray.synthetic.scenes import S1_COLLECTION, S2_COLLECTION, RasterGrid, Scene, WorldSpec
from tessera_ray.synthetic.world import DEFAULT_BBOX, DEFAULT_YEAR, PRESETS, World, generate_world

__all__ = [
    "CLASSES",
    "DEFAULT_BBOX",
    "DEFAULT_YEAR",
    "OUTSIDE",
    "PRESETS",
    "S1_COLLECTION",
    "S2_BANDS",
    "S2_COLLECTION",
    "LandCoverClass",
    "RasterGrid",
    "Scene",
    "World",
    "WorldSpec",
    "generate_world",
]
