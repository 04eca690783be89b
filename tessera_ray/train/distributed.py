"""Training on Ray: the same loop in every Ray Train worker (``TorchTrainer``).

Each worker takes its share of every global batch (rank::world of the same
permuted pool indices), the module is wrapped for data-parallel training by
``ray.train.torch.prepare_model``, and rank 0 writes the checkpoints and the
log into ``out_dir``, which must be a folder every worker sees (one node, or a
shared file system). Barlow Twins statistics are per worker: with W workers
each standardises and correlates over batch_size / W pixels.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from tessera_ray.train.loop import Labelled, RunResult, TrainConfig, run


def _worker(payload: dict) -> None:
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    config = TrainConfig(**payload["config"])

    def report(record: dict, _checkpoint) -> None:
        ray.train.report({k: v for k, v in record.items() if isinstance(v, (int, float))})

    run(config, payload["units"], payload["out_dir"], payload["labelled"], resume=payload["resume"],
        rank=context.get_world_rank(), world=context.get_world_size(),
        device=str(ray.train.torch.get_device()), prepare=ray.train.torch.prepare_model,
        report=report, cpu_threads=payload["cpu_threads"])


def train_on_ray(config: TrainConfig, units: list[str], out_dir: str | Path, labelled: Labelled | None = None, *,
                 workers: int = 1, use_gpu: bool = False, resume: bool = True,
                 cpu_threads: int | None = None) -> RunResult:
    """Run the loop under ``TorchTrainer(ScalingConfig(num_workers=workers, use_gpu=use_gpu))``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tessera_ray.cluster import start_ray
    from tessera_ray.errors import DataError, TesseraError, one_line, root_cause

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start_ray()
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"config": asdict(config), "units": list(units), "out_dir": str(out),
                           "labelled": labelled, "resume": resume,
                           "cpu_threads": cpu_threads},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name="tessera-train", storage_path=str(out / "ray")),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # Ray wraps worker errors; surface ours as one line
        cause = root_cause(exc)
        if isinstance(cause, TesseraError):
            raise cause from None
        raise DataError(f"training failed: {one_line(exc)}") from None
    del result  # rank 0's log is the record (Ray keeps metrics only with its own checkpoints)
    return _last_record(out)


def _last_record(out: Path) -> RunResult:
    import json

    from tessera_ray.train.loop import CHECKPOINT, LOG

    lines = (out / LOG).read_text().splitlines() if (out / LOG).exists() else []
    last = json.loads(lines[-1]) if lines else {}
    probe = [json.loads(x) for x in lines if "probe_accuracy" in x]
    checkpoint = out / CHECKPOINT
    return RunResult(int(last.get("step", 0)), float(last.get("loss", float("nan"))),
                     checkpoint if checkpoint.exists() else None,
                     {k: v for k, v in probe[-1].items() if k.startswith("probe_")} if probe else None)
