"""The layering of harness/ (pyproject.toml [tool.importlinter], docs/design.md "Layers"), checked by import-linter —
on the tree as it is, and on copies broken on purpose, so a contract that stopped biting would fail here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), str(root / "pyproject.toml"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "harness", tmp_path / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_tree_keeps_every_layering_contract(tree: Path) -> None:
    result = _lint(tree)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "bad_import", "broken"), [
    ("render/envoy.py", "import harness.targets.base", "layers"),  # a renderer reaching up to a target
    ("model/topology.py", "import harness.pki.certset", "layers"),  # the model knowing about certificates
    ("render/nginx.py", "import subprocess", "render is pure"),  # a renderer running a process
    ("pod/echo.py", "import harness.probe.outcomes", "echo pod"),  # the pod image needing more of the harness
    ("cases/model.py", "import harness.cases.catalogue", "no import cycles"),  # catalogue imports model already
])
def test_a_broken_layer_fails_the_lint_naming_its_contract(tree: Path, module: str, bad_import: str,
                                                           broken: str) -> None:
    _append(tree / "harness" / module, bad_import)
    result = _lint(tree)
    assert result.returncode == 1, result.stdout[-3000:]
    broken_section = result.stdout[result.stdout.index("Broken contracts"):]
    assert broken in broken_section, broken_section[:3000]
