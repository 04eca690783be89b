"""Encoder actors: one model pinned per GPU (or per set of CPU threads).

An :class:`EncoderActor` takes pixel batches of many units concurrently. Each
request is prepared (validated, sampled, normalised) in its own thread; one
device thread packs the prepared pixels of every waiting request into device
batches of equal sequence length, runs them and hands each request its rows.
Under load the device therefore sees full batches mixed from many units.

An :class:`EncoderPool` sizes itself to the cluster's GPUs (or a configured
number of CPU actors) and bounds the requests in flight per actor: ``submit``
waits while every actor is full, so readers cannot flood the object store.

An actor whose node is lost is restarted by Ray on another node that can hold
it (``cluster.yaml``'s encoder nodes; the autoscaler replaces a lost one), and
its requests, and the encoded blocks lost with the node's object store, are
run again there (:data:`ENCODER_RESTARTS`; encoding is a pure function of the
block, so the bytes do not change). While no node can take it, the pool
waits at most ``wait_s`` (``TESSERA_RAY_ENCODER_WAIT_S``, 600 s by default)
for an actor to answer, then raises :class:`EncoderUnavailable` and the job
fails the units it has not written (exit 5; a re-run publishes them).
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tessera_ray.cluster import ENCODER_RESOURCE, placement
from tessera_ray.errors import ClusterError, env_number
from tessera_ray.model.inference import EncodedPixels, PixelSeries, PreparedPixels

if TYPE_CHECKING:
    from ray import ObjectRef

# glibc malloc settings of every actor's process (its runtime_env, so they hold
# from the process start). With glibc's defaults the mmap threshold rises to the
# largest array freed (up to 32 MB), after which batch-sized arrays come from
# per-thread arenas that keep their pages: the actor's RSS grew with the units
# it had encoded (one CPU actor, tiny encoder, 64 x 64 px units: 473 MB after
# one, 679 after four, 696 after 120; peak 752 MB). Not a leak: its Python
# objects stay constant. A fixed threshold sends every array over 128 KiB to
# mmap and back to the kernel when freed: 343, 364, 366 MB, peak 446 MB, flat,
# at 1.9 times the actor's CPU time per unit with that tiny encoder (page
# faults; +3 % with v1.0). Arrays over 32 MB (large blocks) were mmapped anyway.
# jobs/bench_encoder_memory.py; docs/pipeline.md "The encoder actor's own memory".
ACTOR_ENV_VARS = {"MALLOC_MMAP_THRESHOLD_": "131072"}
#: Restarts of an actor (its node lost, its process killed) before Ray gives it up.
ENCODER_RESTARTS = 4
WAIT_ENV = "TESSERA_RAY_ENCODER_WAIT_S"
#: How often a waiting pool looks at its actors.
_POLL_S = 5.0


class EncoderUnavailable(ClusterError):
    """An encoder actor is gone, or has not answered for longer than the pool waits (its node lost, not replaced)."""


@dataclass(frozen=True)
class EncoderSpec:
    """What every actor of a pool loads and how it runs."""

    checkpoint: str
    """Local path, https:// or s3:// URI of the checkpoint."""
    variant: str | None = None
    data_source: str | None = None
    """Statistics of a per-source variant (v1.1: aws or mpc), unless the checkpoint records it."""
    seed: int = 0
    """Run seed of the temporal sampling (with each pixel's key)."""
    batch_size: int = 1024
    """Pixels per device batch."""
    bf16: bool | None = None
    """bf16 autocast; None: as upstream runs the family (v1 on a GPU; students never)."""
    cpu_threads: int = 1
    """Torch threads of a CPU actor."""
    actor_cpus: float | None = None
    """CPUs a CPU actor reserves from Ray (default: ``cpu_threads``)."""
    raw: bool = False
    """Return float32 embeddings (scale 1, NaN = no data) instead of int8 codes (``encode-tiles --float/--dims``)."""


@dataclass(eq=False)
class _Request:
    prepared: PreparedPixels
    results: list[Any] = field(default_factory=list)  # per chunk: None, then (int8 codes, scales)
    remaining: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class EncoderActor:
    """Holds one encoder on one device; use through ``ray.remote`` (see EncoderPool)."""

    def __init__(self, spec: EncoderSpec, device: str | None = None) -> None:
        import torch

        from tessera_ray.model.checkpoint import read_checkpoint
        from tessera_ray.model.inference import runner_for

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_num_threads(max(1, spec.cpu_threads))
        loaded = read_checkpoint(spec.checkpoint, spec.variant)
        self.spec = spec
        self.config = loaded.config
        self.rule = loaded.rule(spec.data_source)
        self.runner = runner_for(loaded.model, self.rule, device=device, batch_size=spec.batch_size, bf16=spec.bf16,
                                 raw=spec.raw)
        self._queue: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._stats = {"requests": 0, "pixels": 0, "device_calls": 0}
        threading.Thread(target=self._device_loop, daemon=True, name="encoder-device").start()

    def encode(self, pixels: PixelSeries) -> EncodedPixels:
        """Embed one pixel batch; blocks this request's thread until its rows are done."""
        from tessera_ray.model.inference import assemble

        prepared = self.rule.prepare(pixels, self.spec.seed)
        request = _Request(prepared, [None] * len(prepared.groups), len(prepared.groups))
        if request.remaining:
            with self._wake:
                self._queue.append(request)
                self._wake.notify()
            request.done.wait()
        if request.error is not None:
            raise request.error
        with self._wake:
            self._stats["requests"] += 1
            self._stats["pixels"] += prepared.count
        return assemble(prepared, request.results, self.rule.output_dims, self.rule.min_scale,
                        np.float32 if self.runner.raw else np.int8)

    def info(self) -> dict[str, Any]:
        import torch

        device = self.runner.device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        with self._wake:
            stats = dict(self._stats)
        return {
            "pid": os.getpid(),
            "variant": self.config.name,
            "family": self.config.family,
            "device": str(device),
            "device_name": name,
            "threads": torch.get_num_threads(),
            "batch_size": self.runner.batch_size,
            **stats,
        }

    def _device_loop(self) -> None:
        while True:
            with self._wake:
                while not self._queue:
                    self._wake.wait()
                waiting = list(self._queue)
                self._queue.clear()
            self._run(waiting)

    def _run(self, requests: list[_Request]) -> None:
        """Pack the groups of all waiting requests by sequence lengths and run them."""
        by_key: dict[tuple[int, int], list[tuple[_Request, int]]] = defaultdict(list)
        for request in requests:
            for index, group in enumerate(request.prepared.groups):
                by_key[group.key].append((request, index))
        for members in by_key.values():
            groups = [r.prepared.groups[i] for r, i in members]
            try:
                q, scales = self.runner(
                    np.concatenate([g.s2 for g in groups]), np.concatenate([g.s1 for g in groups])
                )
                error = None
            except BaseException as exc:  # handed to the waiting requests
                error = exc
            with self._wake:
                self._stats["device_calls"] += 1
            start = 0
            for (request, index), group in zip(members, groups):
                stop = start + len(group.pixels)
                if error is None:
                    request.results[index] = (q[start:stop], scales[start:stop])
                else:
                    request.error = error
                start = stop
                request.remaining -= 1
                if request.remaining == 0:
                    request.done.set()


class EncoderPool:
    """Encoder actors on a running Ray cluster, with bounded requests in flight.

    ``num_actors``: CPU actors to start when ``use_gpu`` is false. ``use_gpu``
    None means: one GPU actor per GPU of the cluster if it has any.
    """

    def __init__(self, spec: EncoderSpec, num_actors: int = 1, use_gpu: bool | None = None,
                 max_in_flight: int = 2, start_timeout_s: float = 300.0, wait_s: float | None = None,
                 actor: type | None = None) -> None:
        import ray

        if not ray.is_initialized():
            raise ClusterError("the encoder pool needs a running Ray (tessera_ray.cluster.start_ray)")
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.use_gpu = gpus > 0 if use_gpu is None else use_gpu
        options: dict[str, Any]
        if self.use_gpu:
            count, options = max(gpus, 1), {"num_gpus": 1, "num_cpus": 1}
        else:
            cpus = spec.cpu_threads if spec.actor_cpus is None else spec.actor_cpus
            count, options = num_actors, {"num_gpus": 0, "num_cpus": cpus}
        options["resources"] = placement(ENCODER_RESOURCE)  # cluster.yaml's encoder nodes, where it has them
        self.max_in_flight = max(1, int(max_in_flight))
        # ``actor``: a stand-in with EncoderActor's methods (jobs/bench_planet.py); jobs never pass one
        actor_class: Any = ray.remote(actor or EncoderActor).options(
            max_concurrency=self.max_in_flight + 1,  # the +1 answers info() (the pool's pings) while busy
            # requests are retried until the actor is back (bounded by its restarts and the pool's wait_s):
            # a fixed count was spent in seconds on "actor unavailable" answers before Ray saw the node was gone
            max_restarts=ENCODER_RESTARTS, max_task_retries=-1,
            runtime_env={"env_vars": dict(ACTOR_ENV_VARS)}, **options
        )
        device = None if self.use_gpu else "cpu"
        self.wait_s = env_number(WAIT_ENV, 600) if wait_s is None else float(wait_s)
        self._actors = [actor_class.remote(spec, device) for _ in range(count)]
        self._in_flight: list[set[ObjectRef[EncodedPixels]]] = [set() for _ in self._actors]
        self._pings: list[tuple[ObjectRef[dict[str, Any]] | None, float]] = [(None, 0.0) for _ in self._actors]
        self.peak_in_flight = 0
        self._wait_until_started(start_timeout_s)

    def _wait_until_started(self, timeout: float) -> None:
        """Fail here, with the reason, if an actor cannot load or cannot be placed."""
        import ray

        probes = [a.info.remote() for a in self._actors]
        ready, _ = ray.wait(probes, num_returns=len(probes), timeout=timeout)
        if len(ready) < len(probes):
            self.close()
            raise ClusterError(
                f"encoder actors did not start within {timeout:.0f} s; cluster resources "
                f"{ray.cluster_resources()}, available {ray.available_resources()}"
            )
        try:
            ray.get(probes)
        except Exception:
            self.close()
            raise

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def size(self) -> int:
        return len(self._actors)

    def in_flight(self) -> int:
        return sum(len(s) for s in self._in_flight)

    def submit(self, pixels: PixelSeries | ObjectRef[PixelSeries]) -> ObjectRef[EncodedPixels]:
        """Send one pixel batch to the least busy actor; waits while all are full.

        Returns the ObjectRef of its :class:`EncodedPixels`.
        """

        while True:
            self._reap(timeout=0)
            slot = min(range(len(self._actors)), key=lambda i: len(self._in_flight[i]))
            if len(self._in_flight[slot]) < self.max_in_flight:
                break
            if not self._reap(timeout=_POLL_S):
                self.check()
        ref: ObjectRef[EncodedPixels] = self._actors[slot].encode.remote(pixels)
        self._in_flight[slot].add(ref)
        self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight[slot]))
        return ref

    def _reap(self, timeout: float) -> int:
        """Forget finished requests, waiting up to ``timeout`` for the first; how many finished."""
        import ray

        pending = [ref for refs in self._in_flight for ref in refs]
        if not pending:
            return 0
        done, _ = ray.wait(pending, num_returns=1, timeout=timeout, fetch_local=False)
        if done:
            done, _ = ray.wait(pending, num_returns=len(pending), timeout=0, fetch_local=False)
        finished = set(done)
        for refs in self._in_flight:
            refs -= finished
        return len(finished)

    def check(self) -> None:
        """Raise :class:`EncoderUnavailable` if an actor is gone or has not answered a ping for ``wait_s``.

        Call it while waiting on the pool's results: a ping (``info``, which
        has a thread of its own) answers at once from a live actor, busy or not,
        and waits while Ray restarts one, for as long as no node can take it.
        """
        import ray
        from ray.exceptions import RayActorError

        now = time.monotonic()
        for i, actor in enumerate(self._actors):
            ping, sent = self._pings[i]
            if ping is None:
                self._pings[i] = (actor.info.remote(), now)
                continue
            ready, _ = ray.wait([ping], timeout=0)
            if ready:
                try:
                    ray.get(ping)
                except RayActorError as exc:
                    raise EncoderUnavailable(f"encoder actor {i} is gone: {type(exc).__name__}") from None
                self._pings[i] = (None, now)
            elif now - sent > self.wait_s:
                raise EncoderUnavailable(
                    f"encoder actor {i} has not answered for {now - sent:.0f} s ({WAIT_ENV}): its node was lost "
                    f"and no node with room for it joined (cluster resources {_brief(ray.cluster_resources())})")

    def map(self, batches: Iterable[PixelSeries]) -> Iterator[EncodedPixels]:
        """Embed batches in order, keeping at most the pool's capacity in flight."""
        queue: deque[ObjectRef[EncodedPixels]] = deque()
        for batch in batches:
            queue.append(self.submit(batch))
            while queue and len(queue) >= self.size * self.max_in_flight:
                yield self.result(queue.popleft())
        while queue:
            yield self.result(queue.popleft())

    def result(self, ref: ObjectRef[EncodedPixels]) -> EncodedPixels:
        """``ray.get`` of a request, looking at the actors (:meth:`check`) while it waits."""
        import ray

        while not ray.wait([ref], timeout=_POLL_S, fetch_local=False)[0]:
            self.check()
        return ray.get(ref)

    def info(self) -> list[dict[str, Any]]:
        import ray

        return ray.get([a.info.remote() for a in self._actors])

    def close(self) -> None:
        import ray

        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        self._in_flight = []


def _brief(resources: dict[str, float]) -> str:
    """Ray's resources without the per-node and memory entries, for a one-line message."""
    keep = {k: v for k, v in resources.items() if not k.startswith("node:") and "memory" not in k}
    return ", ".join(f"{k} {v:g}" for k, v in sorted(keep.items())) or "none"
