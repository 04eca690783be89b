"""``tessera-ray train``: self-supervised training of the encoder on ingested unit folders."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        units: str = typer.Option(..., "--units",
                                  help="folder, s3:// or https:// URL of unit folders from tessera-ray ingest "
                                       "(an https:// URL names one unit: HTTP cannot list)"),
        out: Path = typer.Option(..., "--out", help="folder for checkpoint.pt and train_log.jsonl"),
        variant: str = typer.Option("small", "--variant",
                                    help="encoder variant of either family (v1: tiny, small, v1.0, ...; "
                                         "v2: v2-tiny, v2-small, v2-medium, ...)"),
        data_source: str | None = typer.Option(None, "--data-source",
                                                  help="aws|mpc: statistics of a per-source variant (v1.1)"),
        steps: int = typer.Option(1000, "--steps", help="optimizer steps in all"),
        batch_size: int = typer.Option(256, "--batch-size", help="pixels per global batch"),
        lr: float = typer.Option(1e-3, "--lr", help="peak learning rate (AdamW)"),
        warmup: int = typer.Option(50, "--warmup", help="warm-up steps before the cosine decay"),
        seq_len: int = typer.Option(0, "--seq-len", help="time steps per view (0: 40, or the variant's draw length)"),
        projector_width: int = typer.Option(512, "--projector-width"),
        projector_layers: int = typer.Option(3, "--projector-layers", help="upstream: 6 layers, 2048..16384 wide"),
        mix_weight: float = typer.Option(5e-3, "--mix-weight", help="weight of the mix regulariser (0: off)"),
        pool_per_unit: int = typer.Option(
            20000, "--pool-per-unit", help="pixels drawn per unit into the shuffled pool"
        ),
        seed: int = typer.Option(0, "--seed"),
        labels: Path | None = typer.Option(None, "--labels", help="labelled points for the linear probe"),
        eval_every: int = typer.Option(200, "--eval-every", help="steps between probe evaluations"),
        checkpoint_every: int = typer.Option(200, "--checkpoint-every"),
        workers: int = typer.Option(1, "--workers", help="Ray Train workers (one per GPU with --gpu)"),
        gpu: bool = typer.Option(False, "--gpu", help="one GPU per worker (bf16 autocast)"),
        use_ray: bool = typer.Option(True, "--ray/--no-ray", help="run under Ray Train, or in this process"),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from OUT/checkpoint.pt if present"),
        threads: int | None = typer.Option(None, "--threads", help="torch CPU threads per worker"),
    ) -> None:
        """Barlow Twins (+ mix regulariser) on globally shuffled pixel time series; upstream-format checkpoints."""
        from tessera_ray.errors import UserInputError
        from tessera_ray.paths import output_folder, removed_if_failed
        from tessera_ray.train import TrainConfig, labelled_points, run
        from tessera_ray.train.data import find_units

        if workers < 1:
            raise UserInputError("--workers must be at least 1")
        if threads is not None and threads < 1:
            raise UserInputError(f"--threads must be at least 1, got {threads}")
        config = TrainConfig(
            variant=variant, data_source=data_source, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
            seq_len=seq_len,
            projector_width=projector_width, projector_layers=projector_layers, mix_weight=mix_weight,
            pool_per_unit=pool_per_unit, seed=seed, eval_every=eval_every, checkpoint_every=checkpoint_every,
        )
        out = output_folder(out)
        found = find_units(units)
        labelled = None
        if labels is not None:
            from tessera_ray.heads.labels import read_points

            points = read_points(labels)
            labelled = labelled_points(found, points.lons, points.lats, points.target, points.split)
        if not use_ray and (gpu or workers > 1):
            raise UserInputError("--gpu and --workers need Ray; drop --no-ray")
        with removed_if_failed(out):
            if use_ray:
                from tessera_ray.train.distributed import train_on_ray

                result = train_on_ray(config, found, out, labelled, workers=workers, use_gpu=gpu, resume=resume,
                                      cpu_threads=threads)
            else:
                result = run(config, found, out, labelled, resume=resume, quiet=False, cpu_threads=threads)
        probe = "" if not result.probe else ", " + ", ".join(f"{k} {v:.3f}" for k, v in result.probe.items())
        typer.echo(
            f"trained {variant} to step {result.step} (loss {result.loss:.3f}{probe}); checkpoint {result.checkpoint}"
        )
