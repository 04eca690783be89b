"""Running the ``tessera-ray`` command in-process, as a user would see it."""

from __future__ import annotations

from tessera_ray.cli import main


def cli_status(argv) -> int:
    """Run the CLI with ``argv``: its exit status (0, or the code of its one-line error)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run the CLI with ``argv``: (exit code, stdout, stderr)."""
    code = cli_status(argv)
    out = capsys.readouterr()
    return code, out.out, out.err
