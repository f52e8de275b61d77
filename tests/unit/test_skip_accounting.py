"""Skip accounting: a case its target declared it cannot run skips *by design*; any other skip (a dropped hop, a chain
turned read-only) fails the run under --mtls-require-tools instead of skipping green. And the report's one line,
"N of M ran on T, K skipped by design" / "interrupted: N of M cases ran".

The inner sessions run the REAL suite module (harness/suite/test_handshakes.py) with the real plugin; only the
session's chain is a chain object that no process stands behind — every case selected here stops before its probe
(a skip is decided from the chain's endpoints, ``mutable`` flag and declared limits), so nothing is started.
"""

from __future__ import annotations

import json
import weakref
from pathlib import Path
from typing import Any

import pytest

import harness.runtime.process as process_registry
from harness.report.html import render_html
from harness.report.results import document

#: two direct ingress cases (no variant) and one ingress variant case of the catalogue, by their test names
DIRECT = "ingress_rejects_missing_client_cert"
VARIANT = "ingress_match_cn_anchored_at_the_end_rejects"

SUITE = '''
import pytest
from harness.model.topology import default_topology
from harness.targets.base import ChainLimits, HopEndpoint, RunningChain
from harness.suite.test_handshakes import *  # the real cases

@pytest.fixture(scope="session")
def mtls_chain():
    gateway = HopEndpoint("gateway", "127.0.0.1", 9, "api.contoso.example", None)
    # nothing listens behind it: every case selected here must skip before it probes
    return RunningChain(target="local", topology=default_topology(), certs=None, endpoints={"gateway": gateway},
                        mutable=MUTABLE, limits=LIMITS)
'''


@pytest.fixture(autouse=True)
def own_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_registry, "_LIVE", weakref.WeakSet())


def _run(pytester: pytest.Pytester, *args: str, mutable: bool = True,
         limits: str = "ChainLimits()") -> tuple[pytest.RunResult, dict[str, Any]]:
    pytester.makepyfile(test_suite=SUITE.replace("MUTABLE", repr(mutable)).replace("LIMITS", limits))
    out = pytester.path / "report"
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "--mtls-report", str(out), *args)
    return result, json.loads((out / "results.json").read_text())


def test_a_dropped_hop_the_target_did_not_declare_fails_under_require_tools(pytester: pytest.Pytester) -> None:
    result, doc = _run(pytester, "-k", DIRECT, "--mtls-require-tools")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*undeclared skip: the ingress hop is not reachable on the local target and the "
                                 "target did not declare why*--mtls-require-tools*"])
    # no hop answered, so the report calls it an error (not "failed": that is a hop answering otherwise)
    assert [c["result"] for c in doc["cases"]] == ["error", "error"]
    assert all("undeclared skip" in c["message"] for c in doc["cases"])


def test_a_dropped_hop_skips_without_require_tools_and_is_not_counted_by_design(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTLS_HARNESS_REQUIRE_TOOLS", raising=False)  # CI sets it; this case is about a run without
    result, doc = _run(pytester, "-k", DIRECT)
    result.assert_outcomes(skipped=2)
    assert doc["summary"]["skipped_by_design"] == 0
    assert doc["summary"]["skipped_other"] == 2
    assert doc["headline"] == ("0 of 2 ran on local, 0 skipped by design, 2 skipped for reasons the target did not "
                               "declare")


def test_a_read_only_chain_the_target_did_not_declare_fails_under_require_tools(pytester: pytest.Pytester) -> None:
    result, doc = _run(pytester, "-k", VARIANT, "--mtls-require-tools", mutable=False,
                       limits='ChainLimits(unreachable={"apim": "x", "ingress": "x", "pod": "x"})')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*undeclared skip: needs to change the chain (match-cn), and the local chain is "
                                 "read-only without the target declaring it*"])
    assert doc["cases"][0]["result"] == "error"
    assert "undeclared skip" in doc["cases"][0]["message"]


def test_declared_limits_skip_by_design_even_under_require_tools(pytester: pytest.Pytester) -> None:
    limits = ('ChainLimits(unreachable={"ingress": "the ingress is private here"}, '
              'read_only="this target never changes the chain")')
    result, doc = _run(pytester, "-k", f"{DIRECT} or {VARIANT}", "--mtls-require-tools", mutable=False,
                       limits=limits)
    result.assert_outcomes(skipped=3)
    s = doc["summary"]
    assert (s["selected"], s["ran"], s["skipped_by_design"], s["skipped_other"]) == (3, 0, 3, 0)
    assert s["by_design_reasons"] == {"the ingress is private here": 2, "this target never changes the chain": 1}
    assert [c["by_design"] for c in doc["cases"]] == [True, True, True]
    assert doc["headline"] == "0 of 3 ran on local, 3 skipped by design"
    result.stdout.fnmatch_lines(["skipped by design (the target declares it cannot run them):",
                                 "     2 × the ingress is private here",
                                 "     1 × this target never changes the chain",
                                 "mTLS: 0 of 3 ran on local, 3 skipped by design"])
    page = (pytester.path / "report" / "index.html").read_text()
    assert "0 of 3 ran on local, 3 skipped by design" in page
    assert "2 × the ingress is private here" in page


def test_chain_for_on_a_read_only_chain_skips_with_the_declared_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_example=SUITE.replace("MUTABLE", "False").replace(
        "LIMITS", 'ChainLimits(read_only="attached: read-only")').replace(
        "from harness.suite.test_handshakes import *  # the real cases", "") + '''
def test_variant(mtls_chain, mtls_chain_for):
    variant = mtls_chain_for(mtls_chain.topology.with_ingress_annotations(auth_tls_match_cn="CN=partner"))
    raise AssertionError(f"mtls_chain_for returned {variant!r} on a read-only chain")

def test_same_topology_is_the_chain_itself(mtls_chain, mtls_chain_for):
    assert mtls_chain_for(mtls_chain.topology) is mtls_chain
''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "-rs", "--mtls-require-tools")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED*attached: read-only"])


# ------------------------------------------------------------------------------------------------------------------
# the one line, from a results document
# ------------------------------------------------------------------------------------------------------------------
def _rec(result: str, *, by_design: bool | None = None, message: str | None = None) -> dict[str, Any]:
    return {"id": "x", "hop": "ingress", "group": "client-cert", "column": "none", "expected": "ok(200)",
            "result": result, "by_design": by_design, "message": message}


def test_an_interrupted_run_says_so_with_how_many_ran() -> None:
    recs = [_rec("passed"), _rec("failed"), _rec("skipped", by_design=True, message="private")]
    doc = document(recs, target="local", selected=166, interrupted=True)
    assert doc["headline"] == "interrupted: 2 of 166 cases ran on local (1 skipped, 163 not reached)"
    assert doc["interrupted"] is True
    assert doc["summary"]["not_run"] == 163
    assert "INTERRUPTED" in render_html(doc)
    assert "interrupted: 2 of 166 cases ran on local" in render_html(doc)


def test_an_interrupted_run_with_an_unknown_selection_does_not_guess() -> None:
    doc = document([_rec("passed")], target="local", interrupted=True)
    assert doc["headline"] == "interrupted: 1 of ? cases ran on local"


def test_a_finished_run_counts_what_it_selected() -> None:
    recs = [_rec("passed"), _rec("skipped", by_design=True, message="private"),
            _rec("skipped", by_design=True, message="private"), _rec("skipped", message="nginx is missing")]
    doc = document(recs, target="containers")
    assert doc["headline"] == ("1 of 4 ran on containers, 2 skipped by design, 1 skipped for reasons the target "
                               "did not declare")
    assert doc["summary"]["by_design_reasons"] == {"private": 2}
    assert doc["interrupted"] is False


def test_results_json_of_the_report_directory_is_the_document(tmp_path: Path) -> None:
    from harness.report.results import write_json

    doc = document([_rec("passed")], target="local", selected=3, interrupted=True)
    assert json.loads(write_json(doc, tmp_path).read_text())["headline"] == "interrupted: 1 of 3 cases ran on local " \
                                                                              "(2 not reached)"
