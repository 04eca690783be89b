"""Blocks of units and their read tasks: the one scheduler ``ingest`` and ``embed`` submit reads through.

A unit (one Zarr shard, up to 4096 px square) is read in blocks of at most
``block_size`` px, so what a read task holds is bounded by configuration
(block size x dates), not by the ROI or the unit. :class:`ReadTasks` submits
them: each declares that bound as its Ray ``memory`` (:func:`block_memory`,
so the scheduler never packs more blocks onto a node than fit, and a block
that fits no node is one clear error instead of a task that never starts),
asks for reader nodes where the cluster has them
(:data:`~tessera_ray.cluster.READER_RESOURCE`), and is retried
:data:`READ_RETRIES` times by Ray after a system failure or an exception (an
:class:`~tessera_ray.sources.cog.AssetUnavailable` most often: the source did
not deliver). Each caller keeps its own bound on tasks in flight and decides
what a failed block means (``ingest`` stops, ``embed`` fails the unit).

The scenes over a block are found once per block: :class:`SceneIndex` (an
R-tree) in a driver that plans many units, :func:`scenes_for_window` (a scan)
where a few suffice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from tessera_ray.cluster import READER_RESOURCE, placement
from tessera_ray.errors import UserInputError
from tessera_ray.grid import Unit, Window
from tessera_ray.sources.read import Block, ReadConfig, estimate_memory
from tessera_ray.sources.scenes import S1, S2, Scene

READ_RETRIES = 2
"""Ray's retries of a read task, after a system failure or an exception it raised."""
OPTIONS_KEPT = 256
"""Read-task options kept, one per distinct declared memory (each ``options()`` costs the driver)."""


def search_bbox(units: Sequence[Unit]) -> tuple[float, float, float, float]:
    """The lon/lat bbox to search scenes in: all of every unit, not just the ROI.

    A unit is read whole, so a scene touching only its part outside the ROI
    still belongs in it; searching the ROI alone would make a unit's values
    depend on the ROI that asked for it.
    """
    bounds = [Block(u.zone, u.window).lonlat_bounds() for u in units]
    return (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds))


def scenes_for_window(zone: int, window: Window, scenes: Sequence[Scene]) -> list[Scene]:
    """The scenes whose lon/lat bbox touches a window of a zone grid."""
    west, south, east, north = Block(zone, window).lonlat_bounds()
    return [s for s in scenes if s.bbox[0] <= east and s.bbox[2] >= west and s.bbox[1] <= north and s.bbox[3] >= south]


class SceneIndex:
    """The scenes over a window, found through an R-tree of the scenes' lon/lat bboxes.

    :func:`scenes_for_window` scans every scene; a planet's year in one job
    (1e5 units, 1e6 scenes) would make that 1e11 comparisons in the driver.
    The index gives the same scenes in the same order: the tree proposes
    candidates, the same bbox test as :func:`scenes_for_window` decides.
    """

    def __init__(self, scenes: Sequence[Scene]) -> None:
        import numpy as np
        import shapely

        self.scenes = tuple(scenes)
        bounds = np.array([s.bbox for s in self.scenes], dtype="float64").reshape(-1, 4)
        self._tree = shapely.STRtree(shapely.box(*bounds.T) if len(bounds) else [])

    def near(self, zone: int, window: Window) -> list[Scene]:
        import shapely

        if not self.scenes:
            return []
        west, south, east, north = Block(zone, window).lonlat_bounds()
        found = []
        for i in sorted(self._tree.query(shapely.box(west, south, east, north), predicate="intersects")):
            s = self.scenes[i]
            if s.bbox[0] <= east and s.bbox[2] >= west and s.bbox[1] <= north and s.bbox[3] >= south:
                found.append(s)
        return found


def block_memory(window: Window, scenes: Sequence[Scene], read: ReadConfig) -> int:
    """Bytes a read task of ``window`` declares: the peak of :func:`~tessera_ray.sources.read.estimate_memory`
    for the dates of ``scenes`` (each Sentinel-1 date counted twice: both orbit directions may hold it)."""
    s2_dates = len({s.date for s in scenes if s.kind == S2})
    s1_dates = len({s.date for s in scenes if s.kind == S1})
    return estimate_memory(max(window.shape), s2_dates, 2 * s1_dates, read)


class ReadTasks:
    """Submits read tasks of one body: memory declared per block, placed on reader nodes, retried.

    ``num_cpus``: what each task reserves (``embed`` lends the CPUs to its
    CPU encoders and may ask for 0); ``num_returns``: the body's results.
    """

    def __init__(self, body: Callable[..., Any], num_cpus: float = 1.0, num_returns: int = 1) -> None:
        import ray

        self._remote: Any = ray.remote(body)
        self._options = dict(num_cpus=num_cpus, num_returns=num_returns, max_retries=READ_RETRIES,
                             retry_exceptions=True, resources=placement(READER_RESOURCE))
        self._capacity = ray.cluster_resources().get("memory", math.inf)
        self._with_memory: dict[int, Any] = {}

    def submit(self, window: Window, scenes: Sequence[Scene], read: ReadConfig, *args: Any) -> Any:
        """Start the body on ``args`` for a block of ``window`` over ``scenes``; its object reference(s).

        Raises :class:`~tessera_ray.errors.UserInputError` when the block needs more
        memory than the whole cluster has (such a task would wait forever).
        """
        memory = block_memory(window, scenes, read)
        if memory > self._capacity:
            raise UserInputError(
                f"a {max(window.shape)} px block with {len({s.date for s in scenes})} dates needs "
                f"{memory / 2**30:.1f} GiB, more than the cluster's {self._capacity / 2**30:.1f} GiB: "
                "lower --block-size"
            )
        if memory not in self._with_memory:
            if len(self._with_memory) >= OPTIONS_KEPT:
                self._with_memory.clear()
            self._with_memory[memory] = self._remote.options(memory=memory, **self._options)
        return self._with_memory[memory].remote(*args)
