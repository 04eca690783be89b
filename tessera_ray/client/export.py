"""A mosaic plan streamed to a Cloud-Optimised GeoTIFF, through the raster writer in :mod:`tessera_ray.sources.geotiff`.

Blocks are rendered and written one at a time, so peak memory depends on
the block side, not on the bbox; the disk space the export can take is
checked before anything is written.
"""

from __future__ import annotations

import os
import shutil

from tessera_ray.client.mosaic import BBox, MosaicPlan, ReadWindow, render
from tessera_ray.errors import UserInputError
from tessera_ray.grid import Window
from tessera_ray.memory import release_freed_memory


def export_geotiff(plan: MosaicPlan, path: str | os.PathLike[str], read_window: ReadWindow, block: int,
                   tags: dict[str, str], bbox: BBox) -> str:
    """Write ``plan`` as a float32 COG at ``path`` (NaN = no embedding), ``block`` pixels a side at a time.

    The blocks go to a tiled GeoTIFF beside ``path``, which GDAL then copies
    to a COG with a bounded cache (:func:`~tessera_ray.sources.geotiff.streamed_cog`);
    both temporary files are removed whatever happens, and ``path`` appears
    complete or not at all. ``bbox`` only names the request in errors.
    """
    from tessera_ray.sources.geotiff import streamed_cog

    need = 2 * plan.size * plan.bands * 4  # uncompressed upper bound, twice (tiled file + COG)
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    if need > free:
        raise UserInputError(f"bbox {bbox} is {plan.size:,} pixels x {plan.bands} bands: up to {need / 1e9:.1f} GB "
                             f"to write, and {folder} has {free / 1e9:.1f} GB free")
    with streamed_cog(path, (plan.bands, plan.height, plan.width), plan.transform, plan.crs, tags=tags,
                      block=block) as write:
        for w in Window(0, 0, plan.height, plan.width).blocks(block):
            pixels = render(plan, w, read_window)
            write(w.row, w.col, pixels)
            del pixels
            release_freed_memory()
    return str(path)
