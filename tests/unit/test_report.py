"""The report: the collector (in-process and under xdist), the matrix and the HTML page — from a tiny pytester suite
with results we choose, and from real CaseResults of real cases against the local chain. No key material, ever."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import re
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from rich.console import Console

import harness.runtime.process as process_registry
from harness.cases.catalogue import CATALOGUE
from harness.cases.model import CaseResult, run_case
from harness.errors import HarnessError
from harness.model.topology import Topology
from harness.probe.outcomes import http_reject, ok
from harness.pytest_plugin import require_chain_components
from harness.report.collect import merge_links
from harness.report.html import render_html
from harness.report.matrix import grids, print_matrix
from harness.report.results import case_facts, document, outcome_label, redact, seen_facts, write_text
from harness.targets.base import RunningChain
from harness.targets.local import LocalTarget

FAKE_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----"
FAKE_KEY_PATH = "/srv/certs/leaves/apim-client/key.pem"


@pytest.fixture
def own_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A nested pytest session stops "every process the harness started" when it ends (the plugin's safety net):
    give it a registry of its own so it cannot stop the chains of this outer session."""
    monkeypatch.setattr(process_registry, "_LIVE", weakref.WeakSet())


# ------------------------------------------------------------------------------------------------------------------
# a tiny suite with results we choose: one case passes, one fails, one is skipped, one errors
# ------------------------------------------------------------------------------------------------------------------
TINY_SUITE = '''
import datetime as dt
import pytest
from harness.cases.model import Case, CaseResult
from harness.probe.outcomes import http_reject, ok, tls_alert
from harness.probe.result import CertInfo, ProbeResult
from harness.report.collect import CASE_ATTR, add_links, remember_result

NO_CERT = "No required SSL certificate was sent"
PEER = CertInfo("CN=echo.tiny.test,O=Tiny", "CN=Tiny CA,O=Tiny", ("DNS:echo.tiny.test",), "ab" * 32, 0x1234,
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2027, 6, 30, tzinfo=dt.UTC))

def _probe(outcome, status, error=None):
    return ProbeResult(outcome, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "http/1.1", (PEER,), status, {}, b"",
                       0.0042, error, target="127.0.0.1:1", server_name="echo.tiny.test",
                       client_cert="/srv/certs/leaves/apim-client/chain.pem")

def _case_test(case, seen_outcome=None, status=None, error=None, skip=None, crash=None):
    def test(request):
        if skip:
            pytest.skip(skip)
        if crash:
            raise RuntimeError(crash)
        passed = case.expect.matches(seen_outcome)
        word = "PASS" if passed else "FAIL — outcome differs"
        result = CaseResult(case, passed, _probe(seen_outcome, status, error), f"{case.id}: {word}")
        remember_result(request.node, result)
        add_links(request.config, {"apim->ingress": {"streams": 1, "bytes": 100, "plaintext": False,
                                                     "tls_versions": ["TLSv1.3"]}})
        assert result.passed, result.message
    setattr(test, CASE_ATTR, case)
    return test

test_ingress_rejects_missing_cert = _case_test(
    Case("ingress-rejects-missing-cert", "ingress", "client-cert", "none", http_reject(400, NO_CERT), "tiny spec"),
    http_reject(400, NO_CERT), 400)
test_ingress_rejects_expired_cert = _case_test(
    Case("ingress-rejects-expired-cert", "ingress", "client-cert", "expired", http_reject(400), "tiny spec"),
    ok(200), 200, error=KEY_TEXT)
test_pod_rejects_unknown_ca = _case_test(
    Case("pod-rejects-unknown-ca", "pod", "client-cert", "unknown CA", tls_alert("unknown_ca"), "tiny spec"),
    skip="needs the passthrough variant")
test_gateway_accepts_tls13 = _case_test(
    Case("gateway-accepts-tls1.3", "gateway", "protocol", "TLS 1.3", ok(200), "tiny spec"),
    crash="the chain did not start: " + KEY_TEXT)

def test_not_a_case():
    pass
'''


def _tiny(pytester: pytest.Pytester) -> None:
    key_text = f"nginx: cannot load {FAKE_KEY_PATH}\n{FAKE_KEY}"
    pytester.makepyfile(test_tiny=TINY_SUITE.replace("KEY_TEXT", repr(key_text)))


def _run_tiny(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, Any], Path]:
    _tiny(pytester)
    out = pytester.path / "report"
    result = pytester.runpytest("--mtls-report", str(out), "-p", "no:cacheprovider", *args)
    doc = json.loads((out / "results.json").read_text())
    return result, doc, out


def _edge_colour(page: str, hop: str) -> tuple[int, int, int]:
    m = re.search(rf'<a href="#hop-{hop}"><line [^>]*stroke="#([0-9a-f]{{6}})"', page)
    assert m, f"no edge into {hop} in the diagram"
    return int(m.group(1)[0:2], 16), int(m.group(1)[2:4], 16), int(m.group(1)[4:6], 16)


def _is_red(rgb: tuple[int, int, int]) -> bool:
    return rgb[0] > 150 and rgb[0] > 2 * rgb[1] and rgb[0] > 2 * rgb[2]


def _is_green(rgb: tuple[int, int, int]) -> bool:
    return rgb[1] > 1.5 * rgb[0] and rgb[1] > 1.5 * rgb[2]


def _is_grey(rgb: tuple[int, int, int]) -> bool:
    return max(rgb) - min(rgb) < 40


def test_mtls_report_that_is_a_file_is_a_usage_error(pytester: pytest.Pytester, own_process_registry: None) -> None:
    _tiny(pytester)
    (pytester.path / "taken").write_text("x")
    result = pytester.runpytest("--mtls-report", str(pytester.path / "taken"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mtls-report*taken: exists and is not a directory*"])


# ------------------------------------------------------------------------------------------------------------------
# the pieces
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("outcome", "words"), [
    (http_reject(400, "No required SSL certificate was sent"), "400 no cert"),
    (http_reject(400, "The SSL certificate error"), "400 cert error"),
    (ok(200), "ok 200"),
    ({"kind": "tls_alert", "alert": "unknown_ca"}, "alert unknown_ca"),
    ({"kind": "upstream_failure", "status": 502, "reason": "Bad Gateway"}, "upstream 502"),
    ({"kind": "upstream_failure", "status": 503,
      "reason": "details=TLS_error:CERTIFICATE_VERIFY_FAILED:_certificate_has_expired"}, "upstream 503 expired"),
    ({"kind": "server_untrusted", "reason": "Hostname mismatch, certificate is not valid for 'x'."},
     "untrusted name mismatch"),
    ({"kind": "http_reject", "status": 401, "reason": "Some long policy sentence that goes on. And on."},
     "401 Some long policy…"),  # first sentence, cut
])
def test_outcome_label_is_short_and_says_the_status_and_why(outcome: Any, words: str) -> None:
    assert outcome_label(outcome) == words


def test_redact_removes_pem_blocks_and_key_paths_and_shortens_other_paths() -> None:
    text = f"failed: {FAKE_KEY} while loading {FAKE_KEY_PATH} and /srv/certs/leaves/apim-client/chain.pem"
    clean = redact(text)
    assert clean is not None
    assert "PRIVATE KEY" not in clean
    assert "MIGHA" not in clean
    assert "key.pem" not in clean
    assert "[key file]" in clean
    assert "…/apim-client/chain.pem" in clean
    assert "/srv" not in clean
    assert redact("see https://errors.contoso.example/mtls") == "see https://errors.contoso.example/mtls"
    assert "/srv/certs/leaves/apim-client/chain.pem" in str(redact(text, keys_only=True))


def test_a_report_with_a_private_key_in_it_is_refused_and_not_written(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="refusing to write"):
        write_text(tmp_path / "results.json", f'{{"oops": "{FAKE_KEY}"}}')
    assert list(tmp_path.iterdir()) == []


def test_merge_links_adds_counts_unites_lists_and_keeps_a_plaintext_finding() -> None:
    a = {"streams": 2, "bytes": 10, "tls_versions": ["TLSv1.3"], "plaintext": False}
    b = {"streams": 1, "bytes": 5, "tls_versions": ["TLSv1.2", "TLSv1.3"], "plaintext": True}
    assert merge_links({"l": a}, {"l": b}) == {"l": {"streams": 3, "bytes": 15, "tls_versions": ["TLSv1.3", "TLSv1.2"],
                                                     "plaintext": True}}


def _record(case_id: str, hop: str, column: str, result: str, label: str | None) -> dict[str, Any]:
    seen = None if label is None else {"label": label, "outcome_text": label}
    return {"id": case_id, "hop": hop, "group": "client-cert", "column": column, "result": result, "seen": seen}


def test_matrix_folds_alike_cases_of_a_cell_and_lists_failures_first() -> None:
    records = [_record("a-1.2", "ingress", "none", "passed", "400 no cert"),
               _record("a-1.3", "ingress", "none", "passed", "400 no cert"),
               _record("b", "ingress", "expired", "passed", "400 cert error"),
               _record("c", "ingress", "expired", "failed", "ok 200"),
               _record("d", "gateway", "none", "skipped", None)]
    (grid,) = grids(records)
    assert grid.columns == ("none", "expired")
    assert [hop for hop, _ in grid.rows] == ["gateway", "ingress"]  # chain order
    ingress = dict(grid.rows)["ingress"]
    assert ingress[0] is not None
    assert [ln.render() for ln in ingress[0].lines] == ["✓ 400 no cert ×2"]
    assert ingress[1] is not None
    assert [ln.render() for ln in ingress[1].lines] == ["✗ ok 200", "✓ 400 cert error"]
    assert ingress[1].status == "failed"
    assert dict(grid.rows)["gateway"][1] is None  # the gateway has no "expired" case here


def test_terminal_matrix_fits_a_narrow_terminal() -> None:
    columns = [f"column number {i}" for i in range(12)]
    records = [_record(f"c{i}", "ingress", col, "passed", "400 cert error") for i, col in enumerate(columns)]
    doc = document(records, target="local")
    buffer = io.StringIO()
    print_matrix(doc, Console(file=buffer, width=80, no_color=True))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert all(col in buffer.getvalue() for col in columns)  # split over several tables, nothing dropped


def test_html_draws_a_link_summary_only_on_the_link_it_names() -> None:
    doc = document([_record("a", "ingress", "none", "passed", "400 no cert")], target="local",
                   links={"gateway→apim": {"streams": 4, "bytes": 2048, "plaintext": True}})
    page = render_html(doc)
    assert "plaintext HTTP: FOUND" in page
    assert page.count("capture: 4 streams · 2.0 kB") == 2  # on the diagram's edge and in the links table
    assert "plaintext HTTP" not in render_html(document(doc["cases"], target="local"))


# ------------------------------------------------------------------------------------------------------------------
# real CaseResults: a handful of real cases against the local chain
# ------------------------------------------------------------------------------------------------------------------

REAL_CASES = ("ingress-rejects-missing-client-cert-tls1.3", "every-hop-is-tls-end-to-end",
              "client-refuses-gateway-cert-unknown-ca", "gateway-refuses-tls1.0")


@pytest.fixture(scope="module")
def real_results(request: pytest.FixtureRequest) -> Iterator[tuple[list[CaseResult], RunningChain]]:
    require_chain_components(request.config)
    with LocalTarget() as chain, contextlib.ExitStack() as variants:
        def chain_for(topology: Topology) -> RunningChain:
            return variants.enter_context(LocalTarget(topology, certs=chain.certs))

        by_id = {c.id: c for c in CATALOGUE}
        results = [run_case(by_id[i], chain, chain_for) for i in REAL_CASES]
        # and one real failure: the same probe as the first case, judged against a wrong expectation
        wrong = dataclasses.replace(by_id[REAL_CASES[0]], id="ingress-expected-wrongly-to-accept", expect=ok(200))
        results.append(run_case(wrong, chain, chain_for))
        yield results, chain


def _real_doc(results: list[CaseResult]) -> dict[str, Any]:
    records = [case_facts(r.case) | {"nodeid": r.case.id, "result": "passed" if r.passed else "failed",
                                     "passed": r.passed, "message": None, "duration_s": 0.0,
                                     "seen": seen_facts(r)} for r in results]
    return document(records, target="local")


def _der_sha256(pem_file: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def test_real_results_render_without_key_material_or_key_paths(
        real_results: tuple[list[CaseResult], RunningChain], tmp_path: Path) -> None:
    results, chain = real_results
    doc = _real_doc(results)
    page = render_html(doc)
    text = json.dumps(doc)
    key_paths = {str(chain.certs.leaf(name).key) for name in ("apim-client", "ingress-client", "ingress-server")}
    key_paths |= {str(ep.client_key) for ep in chain.endpoints.values() if ep.client_key}
    for out in (page, text):
        assert "PRIVATE KEY" not in out
        assert not [p for p in key_paths if p in out]
        assert str(chain.certs.directory) not in out
    assert "ingress-expected-wrongly-to-accept" in page
    assert "✗ 400 no cert" in page


def _print(doc: dict[str, Any]) -> str:
    buffer = io.StringIO()
    print_matrix(doc, Console(file=buffer, width=120, no_color=True))
    return buffer.getvalue()


def test_real_results_matrix_puts_each_case_on_its_hop(real_results: tuple[list[CaseResult], RunningChain]) -> None:
    out = _print(_real_doc(real_results[0]))
    def rows(hop: str) -> list[str]:
        return [ln for ln in out.splitlines() if ln.startswith(f"│ {hop} ")]
    assert any("✗ 400 no cert" in ln for ln in rows("ingress"))  # the failure first in its cell …
    assert "✓ 400 no cert" in out  # … the passing case of the same cell below it
    assert any("✓ alert protocol_version" in ln for ln in rows("gateway"))
    assert "5 of 5 ran on local, 0 skipped by design — 1 failed, 4 passed" in out


def test_a_chain_files_identities_say_real_or_shadow_in_results_and_html() -> None:
    from harness.report.html import render_html
    from harness.report.results import document

    doc = document([], target="local", identities={"payments-api-pod": "shadow", "partner-client": "real"})
    assert doc["identities"] == {"payments-api-pod": "shadow", "partner-client": "real"}
    page = render_html(doc)
    assert "payments-api-pod: <b>shadow</b>" in page
    assert "partner-client: <b>real</b>" in page
    assert "identities" not in document([], target="local")  # the reference chain: nothing to say
