"""``tessera-ray serve`` (one folder over HTTP) and ``tessera-ray services``
(a synthetic world's HTTP, STAC API and S3 stand-ins), both until Ctrl-C."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from tessera_ray.errors import UserInputError


def wait_for_stop() -> str:
    """Block until SIGINT or SIGTERM; return the signal's name."""
    received: list[str] = []
    done = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        done.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.5):
            pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return received[0]


def _folder(path: Path, hint: str = "") -> Path:
    if not path.is_dir():
        raise UserInputError(f"no such folder: {path}{hint}")
    return path


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        folder: Path = typer.Argument(..., help="Folder to serve read-only."),
        port: int = typer.Option(8000, "--port", help="Port (0 picks a free one)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    ) -> None:
        """Serve a folder over HTTP with Range, ETag and CORS until interrupted."""
        from tessera_ray.serve import StaticServer

        with StaticServer(_folder(folder), host=host, port=port) as server:
            print(f"serving {server.root} at {server.url}/ (Ctrl-C stops)", flush=True)
            wait_for_stop()

    @app.command("services")
    def services(
        world: Path = typer.Option(..., "--world", help="A synthetic world folder (tessera-ray synth)."),
        port_base: int | None = typer.Option(
            None, "--port-base", help="Use ports P (HTTP), P+1 (STAC), P+2 (S3); default: free ports."
        ),
    ) -> None:
        """Run a world's HTTP server, STAC API and S3 stand-in until interrupted.

        Prints one JSON line with their URLs on stdout.
        """
        from tessera_ray.synthetic.services import LocalServices

        hint = " (make a world with: tessera-ray synth --out DIR)"
        with LocalServices(_folder(world, hint), port_base=port_base) as running:
            print(json.dumps(running.urls()), flush=True)
            wait_for_stop()
