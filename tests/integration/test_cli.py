"""The main CLI: usage errors are one line and exit 2; --help is true to the commands

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_cli.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli import _CTRL_C_INSIDE_EXEC


def test_python_dash_m_harness_runs_for_real() -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("mtls-harness ")


@pytest.mark.parametrize(("escapes", "code"), [(False, 0), (True, 130)])
def test_ctrl_c_inside_an_exec_still_exits_with_the_chosen_code_under_dash_m(
        tmp_path: Path, escapes: bool, code: int) -> None:
    # CPython's `-m` ends by SIGINT (returncode -2) once a KeyboardInterrupt has left an exec(), caught or not;
    # entry() must clear that so `python -m harness up` stopped by Ctrl-C exits 0, and a command interrupted exits 130
    (tmp_path / "ctrlc").mkdir()
    (tmp_path / "ctrlc" / "__main__.py").write_text(_CTRL_C_INSIDE_EXEC.format(escapes=escapes))
    out = subprocess.run([sys.executable, "-m", "ctrlc"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == code, out.stderr
