"""CI smoke job: the real ``ray job submit`` path against local stand-ins of the cloud.

A Ray head of its own (``ray start --head --block`` on loopback, own ports and
temp dir, in its own process group so the test stops exactly what it
started), moto's S3 and the STAC API; the job is submitted with
``--working-dir .`` and writes to ``s3://``. The published root is then read
over HTTP (the bucket prefix synced to a folder served by ``StaticServer``)
and compared with a direct in-process run of the same job to a local folder:
every object byte for byte (but the run records), the manifest and values.
"""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from embed_helpers import EPOCH, store_files, write_checkpoint
from ray_helpers import EXCLUDES, RAY, REPO, LocalCluster

ROI = "0.1245,52.1741,0.1246,52.1742"
"""One 32 px unit of the test world."""
BUCKET, PREFIX = "smoke-root", "published/run1"


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on loopback with its own ports; yields the dashboard (job API) address and the environment."""
    cluster = LocalCluster(tmp_path, head_cpus=2, object_store_mb=300)
    try:
        yield cluster.address, cluster.env
    finally:
        cluster.stop()


@pytest.mark.slow
def test_ray_job_submit_to_s3_matches_a_direct_run(world, stac_api, s3_server, ray_head, ray_cluster, tmp_path,
                                                   monkeypatch, capsys):
    from tessera_ray.cli import main
    from tessera_ray.client import open_root
    from tessera_ray.grid import Unit
    from tessera_ray.serve import StaticServer
    from tessera_ray.store import read_manifest

    address, env = ray_head
    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    s3_server.create_bucket(BUCKET, public_read=True)
    job_args = ["--roi", ROI, "--year", "2024", "--checkpoint", str(checkpoint), "--stac", stac_api.url,
                "--unit-size", "32", "--block-size", "32"]
    runtime_env = {
        "env_vars": {**s3_server.env(), "SOURCE_DATE_EPOCH": EPOCH, "RAY_AUTH_MODE": "disabled"},
        "excludes": EXCLUDES,
    }
    submit = subprocess.run(
        [str(RAY), "job", "submit", "--address", address, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "jobs/embed.py", *job_args, "--out", f"s3://{BUCKET}/{PREFIX}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=400,
    )
    output = submit.stdout + submit.stderr
    secret = s3_server.env()["AWS_SECRET_ACCESS_KEY"]
    assert secret not in output.replace(json.dumps(runtime_env), "")
    assert "succeeded" in output, output[-3000:]
    assert "units: 1 done, 0 skipped (already published), 0 failed of 1" in output, output[-3000:]
    assert "unreadable scene" not in output, output[-3000:]

    # the direct run of the same job, in-process, to a local folder
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    local = tmp_path / "direct"
    main(["embed", *job_args, "--out", str(local)])
    capsys.readouterr()

    # the bucket prefix, synced to a folder and served over plain HTTP (as a CDN in front of the bucket would)
    synced = tmp_path / "synced"
    client = s3_server.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX + "/")
            for o in page.get("Contents", [])]
    for key in keys:
        target = synced / key[len(PREFIX) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    # every object but the run record is byte-identical to the direct run's
    theirs, ours = store_files(synced), store_files(local)
    assert sorted(theirs) == sorted(ours)
    assert [k for k in ours if theirs[k] != ours[k]] == []

    with StaticServer(synced) as server, open_root(server.url) as remote, open_root(str(local)) as direct:
        theirs = remote.units(2024)
        ours = read_manifest(str(local), 2024)
        assert list(theirs["unit_id"]) == list(ours["unit_id"]) and len(ours) == 1
        for column in ("valid_pixels", "nodata_pixels", "s2_scenes", "s1_scenes", "model_checksum"):
            assert list(theirs[column]) == list(ours[column]), column
        unit = Unit.from_id(ours["unit_id"][0])
        e1, s1 = remote.read_window(unit.zone, unit.window, 2024)
        e2, s2 = direct.read_window(unit.zone, unit.window, 2024)
        np.testing.assert_array_equal(e1, e2)
        np.testing.assert_array_equal(s1, s2)
        assert np.isfinite(s1).mean() > 0.5
    # the run record was written beside the manifests, without credentials
    records = list((synced / "manifests" / "runs").glob("*.json"))
    assert len(records) == 1
    record = records[0].read_text()
    assert secret not in record and json.loads(record)["units"]["done"] == 1
