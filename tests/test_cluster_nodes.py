"""Several Ray nodes on this machine, work placed as ``cluster.yaml`` places it, a node lost in the middle of a job.

The cluster is what ``ray up cluster.yaml`` builds, in small: a head with no
CPUs (the job's driver only), two reader nodes (custom resource
``tessera_reader``) and two encoder nodes (``tessera_encoder``; the second
stands in for the node an autoscaler starts when one is lost). Each is a
``ray start`` raylet with ports and a temporary folder of its own
(tests/ray_helpers.py), and Ray is told to notice a lost node within ~5-10 s.
The embed job goes through ``ray job submit``, reading the test world over
HTTP; each test kills one node's whole process group (SIGKILL: the machine
is gone) while the job runs, and the job must still publish every byte an
undisturbed in-process run of the same job publishes.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime

import pytest
from embed_helpers import EPOCH, store_files, write_checkpoint
from ray_helpers import EXCLUDES, FAST_FAILURE_DETECTION, RAY, REPO, LocalCluster

ROI = "0.1190,52.1740,0.1290,52.1760"
"""Six 32 px units of the test world."""
DONE = "units: 6 done, 0 skipped (already published), 0 failed of 6"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("ray-logs"), head_cpus=0, env=FAST_FAILURE_DETECTION)
    try:
        cluster.add_nodes(("reader", 1, {"tessera_reader": 1}), ("reader", 1, {"tessera_reader": 1}),
                          ("encoder", 1, {"tessera_encoder": 1}), ("encoder", 1, {"tessera_encoder": 1}))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def job(world, tmp_path_factory):
    """``job(out)``: the embed arguments (January and February of the world, over HTTP) and the server."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tessera_ray.serve import StaticServer

    base = tmp_path_factory.mktemp("cluster-job")
    table = pq.read_table(world / "stac" / "items.parquet")
    march = pa.scalar(datetime(2024, 3, 1, tzinfo=UTC))
    pq.write_table(table.filter(pc.less(table["datetime"], march)), base / "winter.parquet")
    checkpoint = write_checkpoint(base / "tiny.pt")
    with StaticServer(world, latency_s=0.01) as server:
        yield lambda out: ["--roi", ROI, "--year", "2024", "--checkpoint", str(checkpoint),
                           "--catalog", str(base / "winter.parquet"), "--catalog-root", server.url,
                           "--unit-size", "32", "--block-size", "32", "--max-in-flight", "2", "--out", str(out)]


@pytest.fixture(scope="module")
def reference(job, tmp_path_factory, ray_cluster):
    """Every file of an undisturbed run of the same job (in this process, on the session's one-node Ray)."""
    from tessera_ray.cli import main

    out = tmp_path_factory.mktemp("reference") / "root"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        try:
            main(["embed", *job(out)])
        except SystemExit as exc:
            pytest.fail(f"the reference run exited {exc.code}")
    return store_files(out)


def submit(cluster: LocalCluster, args: list[str], on_line) -> tuple[int, list[str]]:
    """``ray job submit --working-dir . -- python jobs/embed.py ARGS``.

    ``on_line(line)`` sees its output as it comes.
    """
    runtime_env = {"env_vars": {"SOURCE_DATE_EPOCH": EPOCH, "RAY_AUTH_MODE": "disabled"}, "excludes": EXCLUDES}
    proc = subprocess.Popen(
        [str(RAY), "job", "submit", "--address", cluster.address, "--working-dir", ".",
         "--runtime-env-json", json.dumps(runtime_env), "--", "python", "jobs/embed.py", *args],
        cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip())
        on_line(line)
    return proc.wait(timeout=60), lines


def _actors(cluster: LocalCluster):
    from ray.util.state import list_actors

    return list_actors(address=cluster.address, filters=[("class_name", "=", "EncoderActor")], detail=True,
                       raise_on_missing_output=False)


def _alive_encoder(cluster: LocalCluster):
    """The job's encoder actor, once the state API lists it alive (its records can lag a second or two)."""
    deadline = time.monotonic() + 20
    while True:
        alive = [a for a in _actors(cluster) if a.state == "ALIVE"]
        if len(alive) == 1 or time.monotonic() > deadline:
            (actor,) = alive
            return actor
        time.sleep(0.2)


def test_losing_the_encoder_node_mid_job_still_publishes_the_undisturbed_bytes(nodes, job, reference, tmp_path):
    """The encoder actor's node dies after the first unit (two reads at a time: at least three units are still to be
    read): Ray starts the actor on the other encoder node, runs its requests again there (and the encodings lost with
    the node), and the job finishes: exit 0, same bytes."""
    killed, seen = [], []

    def kill_encoder_after_first_unit(line: str) -> None:
        seen.append(line)
        if not killed and " done, " in line:
            actor = _alive_encoder(nodes)
            nodes.node_of(actor.pid).kill()
            killed.append((actor, len(seen)))

    code, lines = submit(nodes, job(tmp_path / "root"), kill_encoder_after_first_unit)
    output = "\n".join(lines)
    assert code == 0 and DONE in output, output[-3000:]
    (before, at), = killed
    assert any(" done, " in line for line in lines[at:]), "no unit was finished after the kill"
    assert store_files(tmp_path / "root") == reference
    (after,) = [a for a in _actors(nodes) if a.actor_id == before.actor_id]
    assert after.num_restarts >= 1 and after.node_id != before.node_id  # on the other encoder node


def test_losing_a_reader_node_mid_job_still_publishes_the_undisturbed_bytes(nodes, job, reference, tmp_path):
    """A reader node dies while it reads: Ray runs its reads (and writes) again on the other reader node."""
    from ray.util.state import list_nodes, list_tasks

    killed = []

    def kill_a_reading_node() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            running = list_tasks(address=nodes.address, detail=True, raise_on_missing_output=False,
                                 filters=[("func_or_class_name", "=", "read_block"), ("state", "=", "RUNNING")])
            pids = [t.worker_pid for t in running if t.worker_pid]
            if pids:
                node = nodes.node_of(pids[0])
                node.kill()
                killed.append(node)
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=kill_a_reading_node, daemon=True)

    def watch_once_the_job_plans(line: str) -> None:
        if " to embed" in line and watcher.ident is None:
            watcher.start()

    code, lines = submit(nodes, job(tmp_path / "root"), watch_once_the_job_plans)
    watcher.join(timeout=5)
    output = "\n".join(lines)
    assert killed, "no read ran while the test watched"
    assert code == 0 and DONE in output, output[-3000:]
    assert store_files(tmp_path / "root") == reference

    readers = {n.node_id for n in list_nodes(address=nodes.address) if n.resources_total.get("tessera_reader")}
    tasks = list_tasks(address=nodes.address, detail=True, limit=10_000, raise_on_missing_output=False,
                       filters=[("job_id", "=", _last_job(nodes))])
    reads = [t for t in tasks if t.func_or_class_name in ("read_block", "write_unit")]
    assert reads and all(t.node_id in readers for t in reads if t.node_id)  # as cluster.yaml places them
    assert any(t.attempt_number > 0 for t in reads if t.func_or_class_name == "read_block")  # run again


def _last_job(cluster: LocalCluster) -> str:
    from ray.util.state import list_jobs

    jobs = sorted(list_jobs(address=cluster.address), key=lambda j: j.start_time or 0)
    return jobs[-1].job_id
