"""``tessera-ray demo``: the whole pipeline on the built-in synthetic world, in minutes."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(
            Path("tessera-demo"), "--out", help="folder to build the demo root (and its world, model) in"
        ),
        serve: bool = typer.Option(False, "--serve", help="keep serving the root over HTTP until Ctrl-C"),
        port: int = typer.Option(0, "--port", help="port to serve on (default: a free one)"),
    ) -> None:
        """Synthetic world -> trained small encoder -> embed job on a local Ray -> published root served over HTTP."""
        import sys
        import time

        from tessera_ray.demo import format_report, run_demo
        from tessera_ray.paths import output_folder

        output_folder(out)

        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

        def keep_serving(report) -> None:
            typer.echo(format_report(report, serving=True))
            log(f"serving {report.root} at {report.url}; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                log("stopped")

        report = run_demo(out, log, serve=keep_serving if serve else None, port=port)
        if not serve:
            typer.echo(format_report(report, serving=False))
