"""Shared pytest fixtures.

Fixtures that start real components (Ray, HTTP, STAC, S3) are session-scoped:
on a 2-core machine each start costs seconds.
"""

from __future__ import annotations

import os

import pytest

# A stray ~/.ray/auth_token would switch the head to token auth; be explicit.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (2 CPUs, a small object store)."""
    import ray

    from tessera_ray.cluster import start_ray

    start_ray(num_cpus=2, object_store_memory=300 * 1024 * 1024)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small synthetic world (preset "test"), built once per session."""
    from tessera_ray.synthetic import generate_world

    root = tmp_path_factory.mktemp("world")
    generate_world(root, preset="test")
    return root


@pytest.fixture(scope="session")
def http_server(world):
    """The world served read-only over loopback HTTP (Range, ETag, CORS)."""
    from tessera_ray.serve import StaticServer

    with StaticServer(world) as server:
        yield server


@pytest.fixture(scope="session")
def stac_api(world, http_server):
    """A STAC API over the world's items, asset hrefs on ``http_server``."""
    from tessera_ray.synthetic.services import StacServer

    with StacServer(world, http_server.url) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 on loopback; ``s3_server.env()`` holds what a client needs."""
    from tessera_ray.synthetic.services import S3Server

    with S3Server() as server:
        yield server
