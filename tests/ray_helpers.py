"""Ray clusters of our own on loopback, started as an operator would (``ray start``), for the job tests.

Each node is one ``ray start --block`` process in its own process group,
with ports of its own, so that a test stops (or kills, as a lost machine) exactly
what it started, and several nodes (raylets) share this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY = REPO / ".venv" / "bin" / "ray"
EXCLUDES = [".venv", "tessera-demo", "bench-results", ".git", "*.egg-info", "__pycache__", "viewer/node_modules"]
"""What ``--working-dir .`` leaves out of the job's package."""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                          "RAY_health_check_failure_threshold": "5"}
"""Ray's settings for noticing a lost node within ~5-10 s (defaults: ~15-30 s), for tests that lose one; not so
tight that a raylet slowed down by a loaded machine is taken for lost."""


def ray_env(**extra: str) -> dict:
    """The environment of ``ray`` commands: no auth token, no usage stats, no inherited cluster address."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", **extra}
    env.pop("RAY_ADDRESS", None)
    return env


class RayNode:
    """One ``ray start --block`` process (a raylet and what it starts) in a process group of its own."""

    def __init__(self, args: list[str], log: Path, env: dict) -> None:
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([str(RAY), "start", "--block", *args], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole group: the machine is gone, nothing shuts down cleanly."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)
        self._log.close()


class LocalCluster:
    """A head (the job server on ``address``) and any number of worker nodes on 127.0.0.1."""

    def __init__(self, logs: Path, head_cpus: int = 2, head_resources: dict | None = None,
                 object_store_mb: int = 200, env: dict | None = None) -> None:
        self.logs = logs
        self.object_store_mb = object_store_mb
        self.env = ray_env(**(env or {}))
        self.nodes: list[RayNode] = []
        gcs, dashboard, client, *ports = free_ports(7)
        self.gcs = f"127.0.0.1:{gcs}"
        self.address = f"http://127.0.0.1:{dashboard}"
        self.temp = tempfile.mkdtemp(prefix="ray-t-", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.temps = [self.temp]
        self.head = self._start(
            ["--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
             "--include-dashboard", "true", "--ray-client-server-port", str(client), "--temp-dir", self.temp],
            ports, head_cpus, head_resources, "head")
        deadline = time.monotonic() + 120
        while True:
            assert self.head.alive(), self.head.log_path.read_text()
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Ray head did not come up: " + self.head.log_path.read_text()
            time.sleep(1)

    def _start(self, args: list[str], ports: list[int], cpus: int, resources: dict | None, name: str) -> RayNode:
        agent_http, agent_grpc, runtime_env, metrics = ports
        node = RayNode(
            [*args, "--node-ip-address", "127.0.0.1", "--dashboard-agent-listen-port", str(agent_http),
             "--dashboard-agent-grpc-port", str(agent_grpc), "--runtime-env-agent-port", str(runtime_env),
             "--metrics-export-port", str(metrics), "--num-cpus", str(cpus), "--num-gpus", "0",
             "--resources", json.dumps(resources or {}), "--object-store-memory", str(self.object_store_mb * 2**20),
             "--disable-usage-stats"],
            self.logs / f"ray-{name}-{len(self.nodes)}.log", self.env)
        self.nodes.append(node)
        return node

    def add_nodes(self, *specs: tuple[str, int, dict]) -> list[RayNode]:
        """Start worker nodes ``(name, cpus, resources)`` at once; returns once the cluster counts them alive.

        A node whose ``ray start`` gives up (on a loaded machine a raylet can miss its start deadline: "The
        current node timed out during startup") is started once more.
        """
        before = len(self.alive_nodes())
        nodes = [self._worker(*spec) for spec in specs]
        retried: set[int] = set()
        deadline = time.monotonic() + 180
        while len(self.alive_nodes()) < before + len(nodes):
            for i, node in enumerate(nodes):
                if not node.alive():
                    assert i not in retried, node.log_path.read_text()
                    retried.add(i)
                    node.kill()
                    nodes[i] = self._worker(*specs[i])
            assert time.monotonic() < deadline, "nodes did not join: " + nodes[-1].log_path.read_text()
            time.sleep(0.5)
        return nodes

    def _worker(self, name: str, cpus: int, resources: dict) -> RayNode:
        # a temporary folder of its own, as on a machine of its own: nodes sharing the head's unpack the
        # job's working_dir into the same folder, each over the others' (the driver then misses modules)
        temp = tempfile.mkdtemp(prefix="ray-n-", dir="/tmp")
        self.temps.append(temp)
        ports = free_ports(6)
        return self._start(["--address", self.gcs, "--object-manager-port", str(ports[0]),
                            "--node-manager-port", str(ports[1]), "--temp-dir", temp], ports[2:], cpus, resources,
                           name)

    def node_of(self, pid: int) -> RayNode:
        """The node that started process ``pid`` (a worker: a child of its raylet, in a process group of its own)."""
        import psutil

        groups = {node.proc.pid: node for node in self.nodes}
        process = psutil.Process(pid)
        for p in (process, *process.parents()):
            group = os.getpgid(p.pid)
            if group in groups:
                return groups[group]
        raise LookupError(f"process {pid} belongs to none of this cluster's nodes")

    def alive_nodes(self) -> list[dict]:
        from ray.util.state import list_nodes

        return [n for n in list_nodes(address=self.address, raise_on_missing_output=False) if n.state == "ALIVE"]

    def stop(self) -> None:
        """Every node killed, then the temporary folders removed: a test cluster has nothing to drain (a
        SIGTERM makes each worker node wait on the head for seconds), and its workers exit with their raylet."""
        for node in self.nodes:
            node.kill()
        for folder in self.temps:
            shutil.rmtree(folder, ignore_errors=True)
