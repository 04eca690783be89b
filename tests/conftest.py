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

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            object_store_memory=300 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()
