"""The reader protocol: what the pipeline needs from a raster reader of scene assets.

A block read (:func:`tessera_ray.sources.read.read_cube`) asks its reader for
three things, and nothing else about how pixels are fetched:

* :meth:`SceneReader.capture_env` on the driver: the settings and credentials
  reads depend on, as a picklable value that travels inside the job's
  :class:`~tessera_ray.sources.read.ReadConfig`;
* :meth:`SceneReader.restore_env` in the worker, around a whole read task: the
  driver's settings applied there (a Ray worker on another node has none of the
  driver's environment);
* :meth:`SceneReader.read`: one band of one asset onto a target grid, raising
  :class:`~tessera_ray.sources.cog.UnreadableAsset` for a bad asset (the scene
  is skipped) and :class:`~tessera_ray.sources.cog.AssetUnavailable` when the
  source did not deliver (the task fails and is retried).

:data:`COG` (GDAL over HTTP range requests, :mod:`.cog`) is the reader every
job uses. Another one (a cache in front of it, a reader of Zarr-packaged
scenes) is a class with these three methods, passed as ``ReadConfig(reader=...)``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tessera_ray.sources import cog
from tessera_ray.sources.cog import BandRead, ReaderEnv, TargetGrid


@runtime_checkable
class SceneReader(Protocol):
    """Reads scene assets onto target grids; see the module docstring for the contract."""

    def capture_env(self) -> ReaderEnv: ...

    def restore_env(self, env: ReaderEnv) -> contextlib.AbstractContextManager[None]: ...

    def read(self, href: str, target: TargetGrid, resampling: str, env: ReaderEnv, auth: bool) -> BandRead: ...


@dataclass(frozen=True)
class CogReader:
    """Cloud-optimised GeoTIFFs through GDAL: block-aligned range requests (:mod:`.cog`)."""

    def capture_env(self) -> ReaderEnv:
        return cog.capture_env()

    def restore_env(self, env: ReaderEnv) -> contextlib.AbstractContextManager[None]:
        return cog.restore_env(env)

    def read(self, href: str, target: TargetGrid, resampling: str, env: ReaderEnv, auth: bool) -> BandRead:
        return cog.read_onto(href, target, resampling, env, auth=auth)


COG: SceneReader = CogReader()
