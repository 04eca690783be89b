"""The ``tessera-ray`` command.

Subcommands live in :mod:`tessera_ray.commands` and are discovered at start-up.
User mistakes (any :class:`~tessera_ray.errors.TesseraError`) end as one line
on stderr and a non-zero exit; so does a bad flag or command (click's message
and a pointer to ``--help`` on one line, exit 2). Ctrl-C (SIGINT) and SIGTERM interrupt any command: the
signal is raised as :class:`Interrupted` in the main thread, so that output
writers' ``finally`` blocks remove their temporary files, and the command ends
with one line and exit 130 (SIGINT) or 143 (SIGTERM).

``--debug`` (anywhere on the command line) or ``TESSERA_RAY_DEBUG=1`` prints
the whole chain behind a one-line error first (tracebacks, Ray's remote
errors), credentials still masked: for the operator of a cluster job.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import signal
import sys
import threading
import traceback
import types

import click as _click
import typer

from tessera_ray import commands
from tessera_ray.errors import DEBUG_ENV, TesseraError, debug_enabled
from tessera_ray.redact import redact

PROG = "tessera-ray"

_typer_click: types.ModuleType
try:  # typer >= 0.29 runs on its own copy of click, whose classes are not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - an older typer runs on click itself
    _typer_click = _click.exceptions

# both packages' classes: the app raises typer's, code calling click directly raises click's
_USAGE_ERRORS: tuple[type[_click.UsageError], ...] = tuple({_typer_click.UsageError, _click.UsageError})
_CLICK_ERRORS: tuple[type[_click.ClickException], ...] = tuple({_typer_click.ClickException, _click.ClickException})
_ABORTS = tuple({typer.Abort, _click.exceptions.Abort})
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received while a command ran (a KeyboardInterrupt, so cleanup code sees it as one)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name=PROG,
        help="TESSERA embeddings as a Ray map-reduce over object storage.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )

    @app.callback()
    def _options(
        debug: bool = typer.Option(False, "--debug", help=f"On an error, print the full chain behind the one-line "
                                   f"message (also {DEBUG_ENV}=1; may stand anywhere on the command line)."),
    ) -> None:
        """TESSERA embeddings as a Ray map-reduce over object storage."""

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(app)
    return app


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr (credentials in URLs masked) and exit with ``code``."""
    first_line = " ".join(redact(message).split())
    print(f"{PROG}: error: {first_line}", file=sys.stderr)
    raise SystemExit(code)


def _interrupted(signum: int) -> None:
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    fail(f"{what} ({signal.Signals(signum).name})", 128 + int(signum))


def _install_signal_handlers(received: list[int]) -> dict:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread; the old handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)
        raise Interrupted(signum)

    return {s: signal.signal(s, handler) for s in _SIGNALS}


class _RedactLogs(logging.Filter):
    """Log records (shown by logging's last-resort handler) with credentials in URLs masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        return True


def _take_debug_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug`` (before any ``--``); seeing it turns debug output on."""
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv
    os.environ[DEBUG_ENV] = "1"
    return [a for a in argv[:end] if a != "--debug"] + argv[end:]


def _show_chain(exc: BaseException) -> None:
    """With debug on, the traceback of ``exc`` and of every error behind it (also those hidden by ``from None``)."""
    if not debug_enabled():
        return
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # we are exiting: un-hide the context for the print
        seen.add(id(cause))
        cause.__suppress_context__ = False
        cause = cause.__cause__ or cause.__context__
    print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")


def main(argv: list[str] | None = None) -> None:
    argv = _take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    last_resort = logging.lastResort
    if last_resort is not None and not any(isinstance(f, _RedactLogs) for f in last_resort.filters):
        last_resort.addFilter(_RedactLogs())
    received: list[int] = []
    previous = _install_signal_handlers(received)
    try:
        app = build_app()
        # standalone_mode=False: errors come here. typer then turns a KeyboardInterrupt
        # into an exit code it returns (130), and typer.Exit(code) into that code.
        code = app(args=argv, prog_name=PROG, standalone_mode=False)
    except TesseraError as exc:
        _show_chain(exc)
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(getattr(exc, "signum", signal.SIGINT))
    except _USAGE_ERRORS as exc:
        ctx = getattr(exc, "ctx", None)
        path = ctx.command_path if ctx is not None else PROG
        fail(f"{exc.format_message()} (see '{path} --help')", exc.exit_code)
    except _CLICK_ERRORS as exc:
        fail(exc.format_message(), exc.exit_code)
    except _ABORTS:
        fail("aborted", 130)
    except Exception:  # a bug, not a user mistake: its traceback, with credentials in URLs masked
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        raise SystemExit(1) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if received:
        _interrupted(received[0])
    if code == 130:  # a KeyboardInterrupt raised without our handler (typer returns its code)
        _interrupted(signal.SIGINT)
    if isinstance(code, int) and code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
