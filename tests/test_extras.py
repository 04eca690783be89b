"""What ``pip install tessera-ray`` gives a cluster node, and what a missing extra looks like to a user."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tessera_ray.extras import EXTRAS

REPO = Path(__file__).resolve().parents[1]
OPTIONAL = sorted({m for modules in EXTRAS.values() for m in modules})
DISTRIBUTIONS = {"sklearn": "scikit-learn", "moto": "moto"}


def _without_extras(code: str, *argv: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where none of the extras' modules can be imported."""
    block = f"import sys\nfor m in {OPTIONAL!r}:\n    sys.modules[m] = None\n"
    return subprocess.run([sys.executable, "-c", block + code, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_core_dependencies_leave_out_what_only_tests_demo_and_heads_need():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for module in OPTIONAL:
        assert DISTRIBUTIONS.get(module, module) not in core, module
    extras = project["optional-dependencies"]
    assert {"serve", "heads", "demo", "dev"} <= set(extras)
    assert any("tessera-ray[demo]" in d for d in extras["dev"])


def test_a_node_runs_the_pipeline_modules_and_the_cli_without_the_extras():
    proc = _without_extras(
        "import tessera_ray.pipeline.embed, tessera_ray.pipeline.encode, tessera_ray.pipeline.ingest\n"
        "import tessera_ray.pipeline.tiles, tessera_ray.client, tessera_ray.store.writer, tessera_ray.viewer\n"
        "from tessera_ray.cli import main\n"
        "main(['embed', '--help'])\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "--checkpoint" in proc.stdout


@pytest.mark.parametrize("argv,extra", [
    (["probe", "--root", "r", "--year", "2024", "--labels", "l.csv"], "heads"),
    (["serve", "."], "serve"),
])
def test_a_command_missing_its_extra_says_which_pip_install_fixes_it(argv, extra):
    proc = _without_extras("import sys\nfrom tessera_ray.cli import main\nmain(sys.argv[1:])\n", *argv)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"pip install 'tessera-ray[{extra}]'" in proc.stderr
