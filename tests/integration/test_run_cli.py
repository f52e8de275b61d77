"""`mtls-harness run`: the handshake suite through pytest on the local chain, the three report files, and the exit
codes — 0 all passed, 1 a case failed or nothing ran, 2 bad input (one line, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import harness.cli.run
import harness.runtime.process as process_registry
from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Case
from harness.cli.main import main
from harness.probe.outcomes import ok

needs_chain = pytest.mark.mtls_needs_chain

#: two cases, one per TLS version: ``-k`` matches the test names, i.e. the ids with "_"
SUBSET = "ingress_rejects_missing_client_cert"
SUBSET_IDS = [c.id for c in CATALOGUE if c.id.startswith("ingress-rejects-missing-client-cert")]


@pytest.fixture(autouse=True)
def own_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested pytest session stops "every process the harness started" when it ends (the plugin's safety net):
    give it a registry of its own so it cannot stop the chains of this outer session."""
    monkeypatch.setattr(process_registry, "_LIVE", weakref.WeakSet())


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    try:
        code = main(["run", *(str(a) for a in argv)])
    except SystemExit as exc:  # argparse's own usage errors leave main() this way (code 2)
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _results(report: Path) -> dict[str, Any]:
    return json.loads((report / "results.json").read_text())  # type: ignore[no-any-return]


def _our_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("mtls-harness")]
    assert len(lines) == 1, err
    return lines[0]


@needs_chain
def test_run_writes_junit_results_and_html_for_the_selected_cases(capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path) -> None:
    report = tmp_path / "out"
    code, out, err = run(capsys, "-k", SUBSET, "--report", report)
    assert code == 0, out + err
    assert len(SUBSET_IDS) == 2
    doc = _results(report)
    assert [c["id"] for c in doc["cases"]] == SUBSET_IDS
    assert {c["result"] for c in doc["cases"]} == {"passed"}
    assert doc["target"] == "local"
    junit = ET.parse(report / "junit.xml").getroot()
    names = sorted(tc.get("name", "") for tc in junit.iter("testcase"))
    assert names == sorted(f"test_{i.replace('-', '_').replace('.', '_')}[local]" for i in SUBSET_IDS)
    page = (report / "index.html").read_text()
    assert all(f'id="case-{i}"' in page for i in SUBSET_IDS)
    assert "mTLS hop × case matrix" in out
    assert "✓ 400 no cert ×2" in out


@pytest.fixture
def wrongly_expected() -> Iterator[Case]:
    """A real case whose expectation is wrong for the duration of one test: the real probe then fails it."""
    case = next(c for c in CATALOGUE if c.id == "ingress-rejects-missing-client-cert-tls1.3")
    right = case.expect
    object.__setattr__(case, "expect", ok(200))
    try:
        yield case
    finally:
        object.__setattr__(case, "expect", right)


@needs_chain
def test_run_exits_1_when_a_case_fails_and_the_report_names_it(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               wrongly_expected: Case) -> None:
    code, out, _ = run(capsys, "-k", "ingress_rejects_missing_client_cert_tls1_3", "--report", tmp_path)
    assert code == 1
    (case,) = _results(tmp_path)["cases"]
    assert case["id"] == wrongly_expected.id
    assert case["result"] == "failed"
    assert case["message"] == ("expected ok(200), seen http_reject(400, 'No required SSL certificate was sent') "
                               "by ingress for no-client-cert")
    assert "✗ 400 no cert" in out


def test_run_with_no_case_selected_exits_1_with_one_line_and_no_stale_report(capsys: pytest.CaptureFixture[str],
                                                                             tmp_path: Path) -> None:
    from harness.report.results import SCHEMA

    (tmp_path / "results.json").write_text(json.dumps({"schema": SCHEMA, "cases": []}))
    (tmp_path / "index.html").write_text("<html>an earlier run</html>")
    code, _, err = run(capsys, "-k", "no_such_case_anywhere", "--report", tmp_path)
    assert code == 1
    line = _our_error_line(err)
    assert "no case selected" in line
    assert "'no_such_case_anywhere'" in line
    assert f"none of the {len(CATALOGUE)} cases" in line
    assert not (tmp_path / "results.json").exists()  # the earlier report is gone, not left looking current
    assert not (tmp_path / "index.html").exists()


def test_run_keeps_files_it_did_not_write(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("someone else's page")
    (tmp_path / "results.json").write_text('{"not": "ours"}')
    assert run(capsys, "-k", "no_such_case_anywhere", "--report", tmp_path)[0] == 1
    assert (tmp_path / "index.html").read_text() == "someone else's page"


def test_run_with_every_case_skipped_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_NGINX", str(tmp_path / "no-nginx-here"))
    monkeypatch.delenv("MTLS_HARNESS_REQUIRE_TOOLS", raising=False)  # CI sets it: here a missing tool must skip
    code, _, err = run(capsys, "-k", SUBSET, "--report", tmp_path / "out")
    assert code == 1
    line = _our_error_line(err)
    assert "no case ran: all 2 selected cases were skipped" in line
    assert "nginx" in line
    assert {c["result"] for c in _results(tmp_path / "out")["cases"]} == {"skipped"}


def test_run_with_require_tools_turns_a_missing_tool_into_a_failure(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_NGINX", str(tmp_path / "no-nginx-here"))
    code, _, _ = run(capsys, "-k", SUBSET, "--report", tmp_path / "out", "--", "--mtls-require-tools")
    assert code == 1
    assert {c["result"] for c in _results(tmp_path / "out")["cases"]} == {"error"}


@pytest.mark.parametrize(("argv", "says"), [
    (["-n", "many"], "-n 'many': give 'auto' or a number"),
    (["--target", "moon"], "invalid choice: 'moon'"),
    (["--unknown-option"], "unrecognized arguments: --unknown-option"),
    (["-k", "and or"], "pytest refused the options"),
])
def test_run_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str],
                                             says: str) -> None:
    code, _, err = run(capsys, *argv, "--report", tmp_path)
    assert code == 2
    assert says in _our_error_line(err)


def test_run_refuses_a_report_path_that_is_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    code, _, err = run(capsys, "--report", taken)
    assert code == 2
    assert f"--report {taken}: exists and is not a directory" in _our_error_line(err)
    assert taken.read_text() == "x"


def test_run_without_the_suite_says_where_it_looked(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.cli.run, "SUITE", ("test_not_here.py",))
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "--report", tmp_path / "out")
    assert code == 2
    line = _our_error_line(err)
    assert "the handshake suite is missing from the installed package" in line
    assert str(Path(harness.cli.run.__file__).parents[1] / "suite") in line
    assert "reinstall mtls-harness" in line


@needs_chain
def test_run_and_plain_pytest_report_the_same_results(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    keyword = "gateway_refuses_tls1_0 or ingress_rejects_missing_client_cert_tls1_2 or every_hop"
    assert run(capsys, "-k", keyword, "--report", tmp_path / "run")[0] == 0
    suite = harness.cli.run.find_suite()
    code = pytest.main([*(str(f) for f in suite), "-q", "-p", "no:cacheprovider", "-k", keyword,
                        "--mtls-report", str(tmp_path / "pytest")])
    capsys.readouterr()
    assert code == 0

    def essence(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(c["id"], c["hop"], c["result"], c["seen"]["outcome_text"], c["seen"]["tls_version"],
                 [p["sha256"] for p in c["seen"]["peer_chain"]]) for c in doc["cases"]]

    by_run, by_pytest = _results(tmp_path / "run"), _results(tmp_path / "pytest")
    assert len(by_run["cases"]) == 3
    assert essence(by_run) == essence(by_pytest)
    assert (tmp_path / "pytest" / "junit.xml").is_file()  # the collector asks junitxml for it


@needs_chain
def test_python_m_harness_run_for_real_from_a_directory_that_is_not_a_checkout(tmp_path: Path) -> None:
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "-k", "gateway_refuses_tls1_0 or pod_accepts_tls1_3",
                           "--report", str(report)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "mTLS hop × case matrix" in proc.stdout
    assert "mTLS: 2 of 2 ran on local, 0 skipped by design" in proc.stdout  # the suite ships in the package
    assert "Traceback" not in proc.stderr
    doc = _results(report)
    assert [(c["id"], c["result"]) for c in doc["cases"]] == [("gateway-refuses-tls1.0", "passed"),
                                                              ("pod-accepts-tls1.3", "passed")]
    assert {p.name for p in report.iterdir()} == {"junit.xml", "results.json", "index.html", "summary.md"}
