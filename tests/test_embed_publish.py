"""Two ``embed`` jobs with overlapping ROIs publishing into one S3 root at the same time.

Both start together on an empty bucket (so both create the root, prepare the
year and publish after every unit), each as its own process with its own
local Ray, writing through the S3 fault proxy in front of moto (which applies
conditional writes one at a time, as S3 does). At the end every unit of both
ROIs is in the manifest once, each row's objects are the bytes stored, and
the client reads every unit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from embed_helpers import EPOCH, embed_args, write_checkpoint
from s3_faults import S3FaultProxy

REPO = Path(__file__).resolve().parents[1]
ROIS = ("0.120,52.174,0.1245,52.1745", "0.1235,52.174,0.128,52.1745")
"""Four 32 px units each; the two in column 665 are in both."""


@pytest.mark.slow
def test_two_jobs_with_overlapping_rois_publish_every_unit_once(world, s3_server, tmp_path, monkeypatch):
    from tessera_ray.client import open_root
    from tessera_ray.grid import Unit
    from tessera_ray.pipeline.plan import plan_units
    from tessera_ray.store import EmbeddingStore, read_manifest
    from tessera_ray.store.objects import open_objects

    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    bucket = f"jobs-{uuid.uuid4().hex[:8]}"
    s3_server.create_bucket(bucket, public_read=True)
    root = f"s3://{bucket}/root"
    with S3FaultProxy(s3_server.endpoint_url) as proxy:
        env = {**os.environ, **s3_server.env(), **proxy.env(), "SOURCE_DATE_EPOCH": EPOCH, "PYTHONUNBUFFERED": "1"}
        env.pop("RAY_ADDRESS", None)  # each job starts its own local Ray, whose workers inherit this environment
        procs = []
        for i, roi in enumerate(ROIS):
            args = embed_args(world, root, checkpoint, roi, "--block-size", "32", "--publish-every-units", "1")[1:]
            log = open(tmp_path / f"job{i}.log", "w")
            procs.append((subprocess.Popen([sys.executable, str(REPO / "jobs" / "embed.py"), *args], cwd=REPO,
                                           env=env, stdout=log, stderr=subprocess.STDOUT), log))
        try:
            for i, (proc, _) in enumerate(procs):
                assert proc.wait(timeout=420) == 0, (tmp_path / f"job{i}.log").read_text()
        finally:  # a job that failed or timed out takes the other down with it: no job outlives the test
            for proc, log in procs:
                proc.kill()
                proc.wait()
                log.close()
        conditional_puts = proxy.outcomes("PUT", "/manifests/2024.parquet")
    logs = [(tmp_path / f"job{i}.log").read_text() for i in range(2)]

    for key, value in s3_server.env().items():  # read back directly from moto
        monkeypatch.setenv(key, value)
    expected = sorted({u.id for roi in ROIS for u in plan_units(roi, 32)})
    frame = read_manifest(root, 2024)
    assert sorted(frame.unit_id) == expected, logs  # six units, each once
    objects = open_objects(root)
    for row in frame.itertuples():
        for o in row.objects:
            assert objects.sha256(o["key"]) == o["sha256"], (row.unit_id, o["key"])
    with open_root(root) as reader:
        for unit_id in expected:
            unit = Unit.from_id(unit_id)
            emb, scales = reader.read_window(unit.zone, unit.window, 2024)
            assert np.isfinite(scales).mean() > 0.5 and (np.abs(emb[np.isfinite(scales)]).max(axis=-1) > 0).all()
    state = EmbeddingStore.open(root).state  # both created and prepared the root: one year, one zone
    assert (state.years, state.zones) == ((2024,), (31,))
    # every publish after a unit went through a conditional write; both jobs published
    assert len(conditional_puts) >= 4 and all("published" in text for text in logs), (conditional_puts, logs)

