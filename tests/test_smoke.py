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
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from embed_helpers import EPOCH, store_files, write_checkpoint

REPO = Path(__file__).resolve().parents[1]
RAY = REPO / ".venv" / "bin" / "ray"
ROI = "0.1245,52.1741,0.1246,52.1742"
"""One 32 px unit of the test world."""
BUCKET, PREFIX = "smoke-root", "published/run1"


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head on loopback with its own ports; yields the dashboard (job API) address."""
    gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics = free_ports(7)
    temp = tempfile.mkdtemp(prefix="ray-smoke-", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "ray-head.log", "w")
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
         "--ray-client-server-port", str(client), "--dashboard-agent-listen-port", str(agent_http),
         "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
         "--metrics-export-port", str(metrics), "--num-cpus", "2", "--object-store-memory", str(300 * 2**20),
         "--temp-dir", temp, "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()
            try:
                with urllib.request.urlopen(f"{address}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Ray head did not come up: " + (tmp_path / "ray-head.log").read_text()
            time.sleep(1)
        yield address, env
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        try:
            os.killpg(head.pid, signal.SIGKILL)  # anything of that group still alive
        except ProcessLookupError:
            pass
        log.close()


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
        "excludes": [".venv", "tessera-demo", "bench-results", ".git", "*.egg-info", "__pycache__"],
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
