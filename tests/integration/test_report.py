"""The report: the collector (in-process and under xdist), the matrix and the HTML page — from a tiny pytester suite

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_report.py."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from harness.cases.model import CaseResult
from harness.targets.base import RunningChain
from tests.unit.test_report import (  # fixtures too
    FAKE_KEY_PATH,
    _der_sha256,
    _edge_colour,
    _is_green,
    _is_grey,
    _is_red,
    _real_doc,
    _run_tiny,
    own_process_registry,
    real_results,
)


def test_collector_records_each_case_as_passed_failed_skipped_or_error(pytester: pytest.Pytester,
                                                                        own_process_registry: None) -> None:
    result, doc, _ = _run_tiny(pytester)
    assert result.ret == 1
    by_id = {c["id"]: c for c in doc["cases"]}
    assert set(by_id) == {"ingress-rejects-missing-cert", "ingress-rejects-expired-cert", "pod-rejects-unknown-ca",
                          "gateway-accepts-tls1.3"}  # test_not_a_case is no case
    assert [by_id[i]["result"] for i in sorted(by_id)] == ["error", "failed", "passed", "skipped"]
    assert doc["summary"] == {"total": 4, "passed": 1, "failed": 1, "error": 1, "finding": 0, "skipped": 1,
                              "selected": 4, "ran": 3, "skipped_by_design": 0, "skipped_other": 1, "not_run": 0,
                              "by_design_reasons": {},  # a plain pytest.skip is not a declared limit
                              "findings": 0, "findings_open": 0}  # the reference chain has no finding
    assert doc["findings"] == []
    assert doc["headline"] == "3 of 4 ran on local, 0 skipped by design, 1 skipped for reasons the target did not " \
                              "declare"
    assert doc["interrupted"] is False
    failed = by_id["ingress-rejects-expired-cert"]
    assert failed["passed"] is False
    assert failed["expected"] == "http_reject(400)"
    assert failed["seen"]["outcome_text"] == "ok(200)"
    assert "expected http_reject(400), seen ok(200)" in failed["message"]
    assert by_id["pod-rejects-unknown-ca"]["message"] == "needs the passthrough variant"
    assert by_id["pod-rejects-unknown-ca"]["passed"] is None
    assert "the chain did not start" in by_id["gateway-accepts-tls1.3"]["message"]
    good = by_id["ingress-rejects-missing-cert"]["seen"]
    assert (good["tls_version"], good["cipher"], good["alpn"], good["http_status"]) == (
        "TLSv1.3", "TLS_AES_128_GCM_SHA256", "http/1.1", 400)
    assert good["peer_chain"] == [{"subject": "CN=echo.tiny.test,O=Tiny", "issuer": "CN=Tiny CA,O=Tiny",
                                   "sans": ["DNS:echo.tiny.test"], "sha256": "ab" * 32, "serial": "1234",
                                   "not_before": "2026-01-01T00:00:00+00:00",
                                   "not_after": "2027-06-30T00:00:00+00:00"}]
    assert good["elapsed_ms"] == 4.2
    assert doc["links"] == {"apim->ingress": {"streams": 2, "bytes": 200, "plaintext": False,
                                              "tls_versions": ["TLSv1.3"]}}


def test_report_files_carry_no_key_material_or_key_paths(pytester: pytest.Pytester,
                                                          own_process_registry: None) -> None:
    _, _, out = _run_tiny(pytester)
    for name in ("results.json", "index.html", "junit.xml"):
        text = (out / name).read_text()
        assert "PRIVATE KEY" not in text, name
        assert FAKE_KEY_PATH not in text, name
        assert "MIGHAgEAMBMGByqGSM49" not in text, name
    # the other path the probe reported (the client cert chain) is not in our files either
    assert "/srv/certs" not in (out / "results.json").read_text()


def test_junit_names_the_behaviour_and_carries_hop_and_expectation(pytester: pytest.Pytester,
                                                                   own_process_registry: None) -> None:
    _, _, out = _run_tiny(pytester)
    cases = {tc.get("name"): tc for tc in ET.parse(out / "junit.xml").getroot().iter("testcase")}
    assert "test_ingress_rejects_expired_cert" in cases
    props = {p.get("name"): p.get("value") for p in cases["test_ingress_rejects_expired_cert"].iter("property")}
    assert props["mtls_case"] == "ingress-rejects-expired-cert"
    assert props["mtls_hop"] == "ingress"
    assert props["mtls_expected"] == "http_reject(400)"
    assert props["mtls_seen"] == "ok(200)"
    assert cases["test_ingress_rejects_expired_cert"].find("failure") is not None


def test_terminal_matrix_shows_seen_outcomes_per_hop(pytester: pytest.Pytester, own_process_registry: None) -> None:
    result, _, out = _run_tiny(pytester)
    text = result.stdout.str()
    assert "mTLS hop × case matrix" in text
    assert "✓ 400 no cert" in text
    assert "✗ ok 200" in text  # a failure shows what was seen
    assert "– skipped" in text
    assert f"mTLS report: {out / 'index.html'}" in text


def test_html_edges_are_red_for_a_failing_hop_green_for_a_passing_one_grey_when_nothing_ran(
        pytester: pytest.Pytester, own_process_registry: None) -> None:
    _, _, out = _run_tiny(pytester)
    page = (out / "index.html").read_text()
    assert _is_red(_edge_colour(page, "ingress"))  # one passed, one failed
    assert _is_red(_edge_colour(page, "gateway"))  # its only case errored
    assert _is_grey(_edge_colour(page, "pod"))  # skipped only
    assert _is_grey(_edge_colour(page, "apim"))  # no case at all
    assert re.search(r"<script|<link |src=\"http|href=\"http", page) is None  # self-contained
    assert 'id="case-ingress-rejects-expired-cert" open' in page  # failures start expanded
    assert "plaintext HTTP: none" in page  # the link capture drawn under its edge


def test_html_edge_is_green_when_every_case_of_the_hop_passed(pytester: pytest.Pytester,
                                                              own_process_registry: None) -> None:
    _, _, out = _run_tiny(pytester, "-k", "missing_cert")
    assert _is_green(_edge_colour((out / "index.html").read_text(), "ingress"))


def test_results_come_back_from_xdist_workers_like_from_one_process(pytester: pytest.Pytester,
                                                                    own_process_registry: None) -> None:
    _, alone, _ = _run_tiny(pytester)
    result, spread, _ = _run_tiny(pytester, "-n", "2")
    assert "2 workers" in result.stdout.str() or "created: 2/2 workers" in result.stdout.str()

    def essence(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [(c["id"], c["result"], (c["seen"] or {}).get("outcome_text"), (c["seen"] or {}).get("tls_version"))
                for c in doc["cases"]]

    assert essence(spread) == essence(alone)
    assert spread["links"] == alone["links"]  # merged from per-worker files
    assert not list((pytester.path / "report").glob(".mtls-links-*"))


def test_real_results_report_the_served_chain_and_the_hop_trace(
        real_results: tuple[list[CaseResult], RunningChain]) -> None:
    results, chain = real_results
    doc = _real_doc(results)
    by_id = {c["id"]: c for c in doc["cases"]}
    ingress_leaf = chain.certs.leaf(chain.topology.ingress.server_cert)
    served = by_id["ingress-rejects-missing-client-cert-tls1.3"]["seen"]
    assert served["tls_version"] == "TLSv1.3"
    assert served["peer_chain"][0]["sha256"] == _der_sha256(ingress_leaf.cert)
    assert served["peer_chain"][0]["sans"] == [f"DNS:{chain.topology.listener_of('ingress').hostname}"]
    trace = by_id["every-hop-is-tls-end-to-end"]["seen"]["hop_trace"]
    assert list(trace) == ["gateway", "apim", "ingress", "pod"]
    assert all(entry["tls"].startswith("TLSv1.") for entry in trace.values())
    assert trace["ingress"]["verify"] == "SUCCESS"
    assert by_id["client-refuses-gateway-cert-unknown-ca"]["seen"]["outcome"]["kind"] == "server_untrusted"
    assert {k: doc["summary"][k] for k in ("total", "passed", "failed", "error", "skipped", "ran")} == \
        {"total": 5, "passed": 4, "failed": 1, "error": 0, "skipped": 0, "ran": 5}
