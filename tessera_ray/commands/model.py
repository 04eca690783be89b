"""``tessera-ray model``: inspect encoder checkpoints and write random-init ones."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(help="Encoder checkpoints (TESSERA v1 and v2 families).", no_args_is_help=True)

    @model_app.command("info")
    def info(
        checkpoint: str = typer.Argument(..., help="Path, https:// or s3:// URI of a checkpoint."),
        variant: str | None = typer.Option(None, help="Variant name, if it cannot be inferred."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Family, variant, structure, parameters, output dims, Matryoshka depths and a key summary."""
        from tessera_ray.model import matryoshka_depths, output_dims, parameter_count, read_checkpoint

        loaded = read_checkpoint(checkpoint, variant)
        config = loaded.config
        family = loaded.family
        keys = list(loaded.model.state_dict())
        prefixes: dict[str, int] = {}
        for key in keys:
            prefixes[key.split(".")[0]] = prefixes.get(key.split(".")[0], 0) + 1
        summary = {
            "checkpoint": loaded.source,
            "family": family.name,
            "variant": config.name,
            "variant_from": loaded.how,
            "parameters": parameter_count(loaded.model),
            "structure": family.describe(config),
            "output_dims": output_dims(config),
            "matryoshka_depths": list(matryoshka_depths(config)),
            "data_source": loaded.data_source,
            "sampling": family.sampling(config),
            "keys": {"total": len(keys), **prefixes, "ignored": len(loaded.ignored_keys)},
            "other_entries": list(loaded.extra),
        }
        if as_json:
            typer.echo(json.dumps(summary))
            return
        depths = summary["matryoshka_depths"]
        typer.echo(f"checkpoint  {summary['checkpoint']}")
        typer.echo(f"family      {family.name}")
        typer.echo(f"variant     {config.name} ({loaded.how})")
        typer.echo(f"parameters  {summary['parameters']:,}")
        typer.echo("structure   " + ", ".join(f"{k}={v}" for k, v in summary["structure"].items()))
        typer.echo(f"output      {summary['output_dims']} dims; Matryoshka depths "
                   + (", ".join(map(str, depths)) if depths else "none (dims are not ordered)"))
        if getattr(config, "per_source", False) or loaded.data_source:
            typer.echo(f"data source {loaded.data_source or 'not recorded (runs need --data-source aws|mpc)'}")
        typer.echo(f"sampling    {summary['sampling']}")
        typer.echo("keys        " + ", ".join(f"{k}={v}" for k, v in summary["keys"].items()))
        if loaded.extra:
            typer.echo("other       " + ", ".join(loaded.extra))

    @model_app.command("init")
    def init(
        out: Path = typer.Option(..., "--out", help="Checkpoint file to write."),
        variant: str = typer.Option("tiny", help="Variant to initialise (v1: tiny, v1.0, ...; v2: v2-small, ...)."),
        seed: int = typer.Option(0, help="Seed of the random weights."),
        data_source: str | None = typer.Option(None, "--data-source",
                                                  help="aws|mpc: record the statistics' source (v1.1)"),
    ) -> None:
        """Write a randomly initialised checkpoint in its family's upstream format."""
        from tessera_ray.model import build_encoder, get_variant, parameter_count, save_checkpoint
        from tessera_ray.paths import output_file

        out = output_file(out)
        config = get_variant(variant)
        model = build_encoder(config, seed=seed)
        save_checkpoint(model, out, config, data_source=data_source, init_seed=seed)
        typer.echo(f"wrote {out} ({config.family} {config.name}, {parameter_count(model):,} parameters, seed {seed})")

    app.add_typer(model_app, name="model")
