"""Running the ``tessera-ray`` command in-process, as a user would see it."""

from __future__ import annotations

from tessera_ray.cli import main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """Run the CLI with ``argv``: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err
