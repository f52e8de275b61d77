"""Heavy dependencies are extras (pyproject.toml [project.optional-dependencies]): a command that needs a missing one
says so in one line with the pip command (exit 2), and pytest skips a chain on that target with the same reason.
A missing package is made real for the test by blocking its import (``sys.modules[name] = None`` makes every
``import name`` raise ImportError, as an uninstalled package would)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.errors import EXTRAS, MissingExtra, need_extra

ROOT = Path(__file__).resolve().parents[2]


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        for loaded in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


def test_every_extra_named_in_code_exists_in_pyproject() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(declared)
    assert declared["all"] == [f"mtls-harness[{','.join(EXTRAS)}]"]
    base = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]).lower()
    for heavy in ("matplotlib", "scapy", "kubernetes", "azure-", "testcontainers"):
        assert heavy not in base, heavy


def test_setup_script_installs_every_extra() -> None:
    assert '".[dev,all]"' in (ROOT / "scripts" / "setup.sh").read_text()


def test_a_missing_extra_is_one_line_with_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtra) as err:
        need_extra("plot", "the rotation timeline plot")
    assert str(err.value) == ("matplotlib (Python package) not found — the rotation timeline plot needs it: "
                              "pip install 'mtls-harness[plot]'")


def test_a_target_whose_extra_is_missing_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _block(monkeypatch, "kubernetes")
    code = main(["up", "--target", "kind"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "mtls-harness: error: kubernetes (Python package) not found — the kind target needs it: "
        "pip install 'mtls-harness[kind]'"]
