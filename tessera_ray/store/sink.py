"""The sink protocol: what the embed job needs from the place its embeddings go.

The driver loop (:func:`tessera_ray.pipeline.embed.run_year`), its write
tasks and the :class:`~tessera_ray.pipeline.publishing.Publisher` use a sink
through four things only:

* it pickles: the sink travels to every write task (a handle, not the data);
* :meth:`EmbeddingSink.write_unit`, in a write task: a unit-year's
  embeddings (H, W, D) int8 and scales (H, W) float32 stored whole, then its
  :class:`~tessera_ray.store.writer.PartRecord` recorded and returned; not
  visible to readers yet;
* :meth:`EmbeddingSink.publish`, in the driver: the given part records (all
  that are recorded and not published when None) made visible together; a
  :class:`~tessera_ray.store.publication.PublishResult`, whose ``published``
  says every unit published afterwards (the driver skips those it has not
  started: another job did them);
* :meth:`EmbeddingSink.published_units`: what is published, for a re-run.

:class:`~tessera_ray.store.writer.EmbeddingStore` (sharded Zarr v3 and
GeoParquet manifests) is the sink every job writes; making, preparing and
describing a store (``create_or_open``, ``prepare``, the viewer, run records)
is the embed command's business, not the loop's. A second sink (an Icechunk
repository, TESSERA.md 5b) implements these methods; ``tessera_ray.store.testing.MemorySink``
is one, kept in a Ray actor's memory, that the tests run the real loop into.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import numpy as np

from tessera_ray.grid import Unit
from tessera_ray.store.publication import PublishResult
from tessera_ray.store.writer import PartRecord


@runtime_checkable
class EmbeddingSink(Protocol):
    """Where the embed job writes units and publishes them; see the module docstring."""

    def write_unit(self, unit: Unit, year: int, embeddings: np.ndarray, scales: np.ndarray,
                   scenes: Mapping[str, int] | None = None, offset: tuple[int, int] = (0, 0),
                   created: str | None = None) -> PartRecord: ...

    def publish(self, year: int, records: list[PartRecord] | None = None) -> PublishResult: ...

    def published_units(self, year: int) -> set[str]: ...
