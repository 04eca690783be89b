"""Benchmark: where sources/cog.py keeps its own grid code beside odc-geo's, and why.

One 512 px block of zone 31's grid read from an in-memory tiled GeoTIFF
(GDAL's block cache warm, so what is timed is the placement, not I/O), three
ways a band lands on the 10 m grid:

* ``paste``: a 10 m band on the same lattice, odc-geo's ROI pasted (``cog._read``);
* ``repeat``: a 20 m band with nearest, our integer upsampling (``cog._window_read``, k=2);
* ``warp``: the same 20 m band through GDAL's warper over odc-geo's padded ROI
  (what ``cog._read`` would do without the integer path).

Each result is checked equal to ``repeat``'s pixels; medians of ``--repeats``
runs, in one process. Writes bench-results/bench_grids.json.

    python jobs/bench_grids.py --repeats 30
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return round(sorted(times)[len(times) // 2] * 1e3, 3)


def main() -> None:
    import numpy as np
    from affine import Affine
    from odc.geo.geobox import GeoBox
    from odc.geo.overlap import compute_reproject_roi
    from rasterio.enums import Resampling
    from rasterio.io import MemoryFile
    from rasterio.warp import reproject
    from rasterio.windows import Window as RasterWindow

    from tessera_ray.grid import Window, zone_grid
    from tessera_ray.sources import cog

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", default=str(REPO / "bench-results" / "bench_grids.json"))
    args = parser.parse_args()

    grid = zone_grid(31)
    corner = grid.window_transform(Window(442_080, 40_960, 1, 1))
    window = Window(442_093, 40_967, 512, 512)
    target = cog.TargetGrid(window.shape, grid.window_transform(window), grid.crs)
    rng = np.random.default_rng(0)
    figures = {}
    with MemoryFile() as mem10, MemoryFile() as mem20:
        sources = {}
        for res, mem in ((10, mem10), (20, mem20)):
            n = 12_000 // res
            with mem.open(driver="GTiff", height=n, width=n, count=1, dtype="uint16", crs="EPSG:32631", nodata=0,
                          transform=Affine(res, 0, corner.c - 2000, 0, -res, corner.f + 2000), tiled=True,
                          blockxsize=256, blockysize=256) as ds:
                ds.write(rng.integers(1, 10_000, (n, n)).astype("uint16"), 1)
            sources[res] = mem.open()
        src10, src20 = sources[10], sources[20]

        def warp():
            source = GeoBox((src20.height, src20.width), src20.transform, str(src20.crs))
            rows, cols = compute_reproject_roi(source, target, padding=2).roi_src
            win = RasterWindow(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            out = np.zeros(target.shape, np.uint16)
            reproject(src20.read(1, window=win), out, src_transform=src20.window_transform(win), src_crs=src20.crs,
                      src_nodata=0, dst_transform=target.transform, dst_crs=str(target.crs), dst_nodata=0,
                      resampling=Resampling.nearest)
            return out

        ways = {"paste": lambda: cog._read(src10, target, "nearest"),
                "repeat": lambda: cog._window_read(src20, target, 2, 0, np.dtype("uint16")),
                "warp": warp}
        reference = ways["repeat"]()
        assert np.array_equal(ways["warp"](), reference), "the warper and the repetition disagree"
        for name, fn in ways.items():
            fn()
            figures[f"{name}_ms"] = _median_ms(fn, args.repeats)
    figures["warp_over_repeat"] = round(figures["warp_ms"] / figures["repeat_ms"], 1)
    figures["repeats"] = args.repeats
    print(json.dumps(figures))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
