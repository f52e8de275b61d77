"""`mtls-harness selftest` on the real local chain (nginx, Envoy, the echo pod), on small case selections so each
run takes seconds: a mutant is caught by the cases that see it, survives (exit 1) when those cases are filtered out,
a render mutant whose text is never rendered is reported as not applied, and the resumption mutant is caught by the
ordinary case order (chain cases, then an ingress hot reload to a bad cert). The full run is `make test-selftest`.
Unit half: tests/unit/test_selftest.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cli.main import main

pytestmark = pytest.mark.mtls_needs_chain

# docs/design.md: an Envoy upstream without a trusted CA accepts any server cert — every fault the catalogue serves
# from APIM (unknown CA, wrong SAN, expired, self-signed, missing intermediate, not yet valid, wrong EKU) gets through
SERVER_FAULTS = ("unknown-ca", "wrong-san", "expired", "self-signed", "missing-intermediate", "not-yet-valid",
                 "wrong-eku")


def selftest(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["selftest", "--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out else {}, err


def test_gateway_without_upstream_ca_check_is_caught_by_the_gateway_server_cert_cases(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = selftest(capsys, "--only", "gateway-upstream-ca-unchecked", "--case", "gateway-refuses-apim-*",
                              "--case", "client-trusts-gateways-public-cert")
    assert code == 0, err
    (m,) = doc["mutants"]
    assert m["status"] == "caught"
    # a config mutant is caught as a FINDING (docs/findings.md): the weakness its setting predicts, observed by every
    # fault the gateway's upstream check refuses; the cross-domain cases of the same stem may observe it too
    assert m["caught_as"] == "finding"
    observed = m["findings"]["every-hop-verifies-its-upstream-cert@gateway"]
    assert {f"gateway-refuses-apim-cert-{f}" for f in SERVER_FAULTS} <= set(observed)
    assert all(c.startswith("gateway-refuses-apim-cert-") for c in observed)
    setting = "gateway.backend_settings.validate_cert_chain_and_expiry: false"
    assert m["predicted_findings"] == {"every-hop-verifies-its-upstream-cert@gateway": setting}
    assert doc["baseline"]["passed"] == sum(c.id.startswith("gateway-refuses-apim-") for c in CATALOGUE) + 1
    assert "[1/1] gateway-upstream-ca-unchecked (config, gateway):" in err


def test_a_mutant_whose_catching_cases_are_filtered_out_survives_and_fails_the_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, err = selftest(capsys, "--only", "gateway-upstream-ca-unchecked", "--case", "gateway-refuses-apim-*",
                              "--case", "client-trusts-gateways-public-cert", "--exclude-case", "gateway-refuses-*")
    assert code == 1
    (m,) = doc["mutants"]
    assert (m["status"], m["caught_by"], m["cases_run"]) == ("survived", [], 1)
    assert "mtls-harness: error: mutant gateway-upstream-ca-unchecked: NOT CAUGHT: all 1 cases passed" in err
    assert doc["ok"] is False


def test_a_render_mutant_that_finds_nothing_to_edit_is_reported_not_applied(
        capsys: pytest.CaptureFixture[str]) -> None:
    # no selected case renders a CRL, so there is no ssl_crl for the mutant to drop
    code, doc, err = selftest(capsys, "--only", "ingress-crl-dropped", "--case", "ingress-accepts-apims-client-cert-*")
    assert code == 1
    (m,) = doc["mutants"]
    assert (m["status"], m["edits"]) == ("not-applied", 0)
    assert "NOT APPLIED" in err


def test_resumption_mutant_is_caught_without_a_reload_by_the_full_handshake_case(
        capsys: pytest.CaptureFixture[str]) -> None:
    # every variant is a lane: nothing reloads in the run, so a stand-in that resumes its upstream TLS session is
    # caught where it shows — a lane whose ingress keeps no connection alive sees apim's second connection resumed
    case = "apim-makes-a-full-handshake-on-every-new-connection-to-the-ingress"
    code, doc, err = selftest(capsys, "--only", "upstream-tls-session-resumption",
                              "--case", "every-hop-is-tls-end-to-end", "--case", "apim-refuses-ingress-cert-unknown-ca",
                              "--case", case)
    assert code == 0, err
    (m,) = doc["mutants"]
    assert m["caught_by"] == [case]
    assert m["edits"] >= 2  # both stand-ins' bootstraps


@pytest.mark.parametrize(("mutant", "catching"), [
    ("ingress-gateway-api-client-cert-optional", "ingress-rejects-missing-client-cert-"),
    ("ingress-gateway-api-trusts-any-client-ca", "ingress-rejects-client-cert-unknown-ca-"),
])
def test_a_gateway_api_mutant_is_applied_to_the_twins_envoy_and_caught_against_the_twins_baseline(
        capsys: pytest.CaptureFixture[str], mutant: str, catching: str) -> None:
    code, doc, err = selftest(capsys, "--only", mutant, "--case", f"{catching}*",
                              "--case", "ingress-accepts-apims-client-cert-*")
    assert code == 0, err
    (m,) = doc["mutants"]
    assert m["edits"] >= 1  # the Gateway API ingress's Envoy bootstrap was really edited
    assert m["status"] == "caught"
    assert m["caught_as"] == "failure"
    assert m["caught_by"] == [f"{catching}tls1.2", f"{catching}tls1.3"]
    # judged against the catalogue on the unmutated Gateway API chain, run for it, not the ingress-nginx baseline
    assert "baseline on the unmutated gateway-api:envoy-gateway chain: " in err
    assert "ingress-accepts-apims-client-cert-" not in str(m["caught_by"])
    assert m["ingress"] == "gateway-api:envoy-gateway"
    twin = doc["other_baselines"]["gateway-api:envoy-gateway"]  # the JSON says what the mutant was judged against
    assert twin["passed"] == 4  # the four selected cases, each passing on the unmutated twin
    assert twin["failed"] == []


def test_python_dash_m_harness_selftest_lists_and_refuses_unknown_names() -> None:
    listed = subprocess.run([sys.executable, "-m", "harness", "selftest", "--list"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^upstream-tls-session-resumption +render ", listed.stdout, re.MULTILINE), listed.stdout
    bad = subprocess.run([sys.executable, "-m", "harness", "selftest", "--only", "nope"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "--only nope: no such mutant" in bad.stderr
    assert "Traceback" not in bad.stderr
