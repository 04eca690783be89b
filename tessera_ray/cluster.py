"""Starting or joining Ray: the one module that calls ``ray.init``.

A job submitted with ``ray job submit`` (or any process with ``RAY_ADDRESS``
set) joins that cluster; anything else starts a private local Ray for the
length of the command. Both get the same options: no dashboard for a local
Ray, workers' logs kept off the driver's terminal (our progress line is the
output), and an object store sized by ``TESSERA_RAY_OBJECT_STORE_MB`` where
the operator wants to bound it (Ray's default, 30 % of memory, otherwise).
The task-level runtime environment (thread counts for encoder actors) is set
where the actors are made, in :mod:`tessera_ray.pipeline.encode`.

Where work runs follows ``cluster.yaml``'s node types: a cluster whose nodes
offer the custom resources :data:`READER_RESOURCE` and :data:`ENCODER_RESOURCE`
gets read and write tasks on the reader nodes and the encoder actors on the
encoder nodes (:func:`placement`); a cluster without them (a local Ray, one
machine) runs everything anywhere, as before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

ADDRESS_ENV = "RAY_ADDRESS"
READER_RESOURCE = "tessera_reader"
"""Custom resource of the nodes that read COGs and write shards (``cluster.yaml``: one per vCPU)."""
ENCODER_RESOURCE = "tessera_encoder"
"""Custom resource of the nodes that hold encoder actors (``cluster.yaml``: one per node)."""
OBJECT_STORE_ENV = "TESSERA_RAY_OBJECT_STORE_MB"


def _init_options(num_cpus: int | None, object_store_memory: int | None) -> dict:
    options: dict = {"log_to_driver": False, "include_dashboard": False}
    if num_cpus is not None:
        options["num_cpus"] = int(num_cpus)
    if object_store_memory is None and os.environ.get(OBJECT_STORE_ENV):
        object_store_memory = int(float(os.environ[OBJECT_STORE_ENV]) * 2**20)
    if object_store_memory is not None:
        options["object_store_memory"] = int(object_store_memory)
    return options


def start_ray(*, num_cpus: int | None = None, object_store_memory: int | None = None) -> bool:
    """Join ``RAY_ADDRESS`` or start a local Ray, unless one is running; True if a local Ray was started here."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get(ADDRESS_ENV)
    if address:  # the cluster's own settings hold; sizing options are for a local Ray only
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(address="local", **_init_options(num_cpus, object_store_memory))
    return True


@contextlib.contextmanager
def ray_session(*, num_cpus: int | None = None, object_store_memory: int | None = None) -> Iterator[None]:
    """Ray for the ``with`` block: a local Ray started here is shut down on exit; a joined one is left alone."""
    started = start_ray(num_cpus=num_cpus, object_store_memory=object_store_memory)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def placement(resource: str) -> dict[str, float]:
    """Ray ``resources`` that send a task or actor to the nodes offering ``resource``, if the cluster has any.

    Decided from the nodes alive when the job starts: an autoscaling cluster
    with no node of that type yet runs the work anywhere (docs/pipeline.md).
    """
    import ray

    return {resource: 1.0} if ray.cluster_resources().get(resource, 0) >= 1 else {}
