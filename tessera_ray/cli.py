"""The ``tessera-ray`` command.

Subcommands live in :mod:`tessera_ray.commands` and are discovered at start-up.
User mistakes (any :class:`~tessera_ray.errors.TesseraError`, or a bad flag)
end as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click
import typer

from tessera_ray import commands
from tessera_ray.errors import TesseraError

try:  # typer 0.29 ships its own click: its usage errors are not click's (docs: ENVIRONMENT.md)
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # a typer that uses click itself
    _TyperClickException = click.ClickException


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="tessera-ray",
        help="TESSERA embeddings as a Ray map-reduce over object storage.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)
    return app


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit with ``code``."""
    first_line = " ".join(str(message).split())
    print(f"tessera-ray: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    app = build_app()
    try:
        app(args=argv, standalone_mode=False)
    except TesseraError as exc:
        fail(str(exc), exc.exit_code)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.UsageError as exc:
        fail(exc.format_message(), 2)
    except (click.ClickException, _TyperClickException) as exc:
        fail(exc.format_message(), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
