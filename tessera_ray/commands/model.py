"""``tessera-ray model``: inspect encoder checkpoints and write random-init ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    model_app = typer.Typer(help="Encoder checkpoints (TESSERA v1 family).", no_args_is_help=True)

    @model_app.command("info")
    def info(
        checkpoint: str = typer.Argument(..., help="Path, https:// or s3:// URI of a checkpoint."),
        variant: Optional[str] = typer.Option(None, help="Variant name, if it cannot be inferred."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Variant, parameter count and a summary of a checkpoint's keys."""
        from tessera_ray.model import parameter_count, read_checkpoint

        loaded = read_checkpoint(checkpoint, variant)
        config = loaded.config
        keys = list(loaded.model.state_dict())
        prefixes: dict[str, int] = {}
        for key in keys:
            prefixes[key.split(".")[0]] = prefixes.get(key.split(".")[0], 0) + 1
        summary = {
            "checkpoint": loaded.source,
            "variant": config.name,
            "variant_from": loaded.how,
            "parameters": parameter_count(loaded.model),
            "structure": {"latent": config.latent, "d": config.d, "layers": config.layers,
                          "heads": config.heads, "ffn": config.ffn, "gru": config.gru,
                          "dim_reducer": f"{2 * config.d}->"
                          + (f"{config.reducer_hidden}->" if config.reducer_hidden else "")
                          + f"{config.reducer_out}"},
            "sampling": config.sampling,
            "keys": {"total": len(keys), **prefixes, "ignored": len(loaded.ignored_keys)},
            "other_entries": list(loaded.extra),
        }
        if as_json:
            typer.echo(json.dumps(summary))
            return
        typer.echo(f"checkpoint  {summary['checkpoint']}")
        typer.echo(f"variant     {config.name} ({loaded.how})")
        typer.echo(f"parameters  {summary['parameters']:,}")
        typer.echo("structure   " + ", ".join(f"{k}={v}" for k, v in summary["structure"].items()))
        typer.echo(f"sampling    {config.sampling}")
        typer.echo("keys        " + ", ".join(f"{k}={v}" for k, v in summary["keys"].items()))
        if loaded.extra:
            typer.echo("other       " + ", ".join(loaded.extra))

    @model_app.command("init")
    def init(
        out: Path = typer.Option(..., "--out", help="Checkpoint file to write."),
        variant: str = typer.Option("tiny", help="Variant to initialise."),
        seed: int = typer.Option(0, help="Seed of the random weights."),
    ) -> None:
        """Write a randomly initialised checkpoint (until a trained one exists)."""
        from tessera_ray.model import build_encoder, get_variant, parameter_count, save_checkpoint

        config = get_variant(variant)
        model = build_encoder(config, seed=seed)
        save_checkpoint(model, out, config, init_seed=seed)
        typer.echo(f"wrote {out} ({config.name}, {parameter_count(model):,} parameters, seed {seed})")

    app.add_typer(model_app, name="model")
