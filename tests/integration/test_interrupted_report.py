"""A run stopped by Ctrl-C says so: "interrupted: N of M cases ran" in the terminal, results.json and the HTML page —
never "M cases … M passed" as if it were complete. The inner pytest is a real process that gets a real SIGINT after
its third case (its conftest sends it to itself, as a terminal's Ctrl-C would)."""

from __future__ import annotations

import json

import pytest

CONFTEST = '''
import os, signal

_seen = []

def pytest_runtest_logreport(report):
    if report.when == "call":
        _seen.append(report.nodeid)
        if len(_seen) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, for real
'''

SUITE = '''
import pytest
from harness.cases.catalogue import CATALOGUE
from harness.report.collect import CASE_ATTR

def _make(case):
    def test():
        pass  # the report's plumbing is under test here, not a hop
    setattr(test, CASE_ATTR, case)
    return test

for _n, _case in enumerate(CATALOGUE[:10]):
    globals()[f"test_case_{_n}"] = _make(_case)
'''


def test_a_run_stopped_by_ctrl_c_reports_how_many_of_how_many_ran(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    out = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "--mtls-report", str(out),
                                           timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    result.stdout.fnmatch_lines(["mTLS: interrupted: 3 of 10 cases ran on local (7 not reached)"])
    result.stdout.no_fnmatch_line("*10 passed*")
    doc = json.loads((out / "results.json").read_text())
    assert doc["interrupted"] is True
    assert doc["headline"] == "interrupted: 3 of 10 cases ran on local (7 not reached)"
    assert (doc["summary"]["selected"], doc["summary"]["ran"], doc["summary"]["not_run"]) == (10, 3, 7)
    page = (out / "index.html").read_text()
    assert "INTERRUPTED" in page
    assert "interrupted: 3 of 10 cases ran on local (7 not reached)" in page
