"""The published root: sharded Zarr v3 embeddings, per-year GeoParquet manifests.

Public API (what the embed job calls)::

    from tessera_ray.store import EmbeddingStore, publish

    store = EmbeddingStore.create_or_open(root, shard_size=4096, chunk_size=32, model="tessera-v1.0")
    store.prepare(year, zones)                # driver: time axis and zone groups (metadata only)
    done = store.published_units(year)        # unit ids already in the manifest: skip them
    store.write_unit(unit, year, emb, scales, scenes={"s2": n2, "s1": n1})  # one writer per unit
    store.publish(year, records)              # as units finish: these records -> manifests/{year}.parquet
    publish(root, year)                       # every part not yet published (end of a job; safe to repeat)

``compression="none"`` (the default: raw chunks at fixed offsets, a cold pixel
in one request per array) or ``"zstd"`` chooses the shard layout; see
docs/store.md. ``root`` is a local folder or ``s3://bucket/prefix``; readers use
:mod:`tessera_ray.client` over HTTP, S3 or a path.
"""

from tessera_ray.store.layout import StoreLayout
from tessera_ray.store.manifest import read_manifest
from tessera_ray.store.publication import PublishResult
from tessera_ray.store.writer import EmbeddingStore, PartRecord, publish

__all__ = ["EmbeddingStore", "PartRecord", "PublishResult", "StoreLayout", "publish", "read_manifest"]
