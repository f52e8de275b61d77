"""The main CLI: usage errors are one line and exit 2; --help is true to the commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli.main import main


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("up", "run", "certs", "rotate", "images"):
        assert f"    {command}" in out, command


def test_unknown_option_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["up", "--no-such-option"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--no-such-option" in err


def test_config_option_is_refused_for_the_local_target(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "attach.toml"
    cfg.write_text("")
    assert main(["up", "--target", "local", "--config", str(cfg)]) == 2
    assert "--config is for --target attach or azure" in capsys.readouterr().err


def test_missing_config_file_names_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", "--target", "attach", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml: no such file" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("target", ["azure", "attach"])
def test_run_without_a_usable_target_config_is_one_line_before_any_case(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str) -> None:
    """Issue 18: `run --target azure` without a config printed 183 setup errors (one per case) and exited 1."""
    for name in ("MTLS_HARNESS_AZURE_CONFIG", "MTLS_HARNESS_ATTACH_CONFIG"):
        monkeypatch.setenv(name, "")  # recorded, so --config (which sets the variable) does not outlive the test
        monkeypatch.delenv(name)
    assert main(["run", "--target", target, "--report", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"mtls-harness: error: the {target} target needs a config file — pass --config {target}.toml (or set "
        f"MTLS_HARNESS_{target.upper()}_CONFIG) (format: docs/azure.md)"]
    assert captured.out == ""  # pytest never started
    bad = tmp_path / "bad.toml"
    bad.write_text("hops = [\n")
    assert main(["run", "--target", target, "--config", str(bad), "--report", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "is not valid TOML" in err[0]


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--twin"], "--twin compares production with its twin: use it with --target azure or attach, not local"),
    (["init", "--from-azure", "nope.toml", "x"], "--from-azure nope.toml: no such file"),
    (["init", "--from-azure", "pyproject.toml", "--oauth", "x"], "--from-azure writes the chain Azure holds: drop"),
])
def test_twin_and_from_azure_misuse_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch, argv: list[str],
                                                           message: str) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert main([*argv[:-1], str(tmp_path / argv[-1])] if argv[0] == "init" else argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"mtls-harness: error: {message}")
    assert not (tmp_path / "x").exists()


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: mtls-harness" in capsys.readouterr().out


_CTRL_C_INSIDE_EXEC = """
import harness.cli.main

def main(argv=None):
    # a Ctrl-C landing while source text is exec'd (a lazy import building a dataclass does that)
    try:
        exec("import os, signal, time; os.kill(os.getpid(), signal.SIGINT); time.sleep(10)")
    except KeyboardInterrupt:
        if {escapes}:
            raise
        return 0  # what `up` does: Ctrl-C is how it is stopped
    return 1

harness.cli.main.main = main
harness.cli.main.entry()
"""


