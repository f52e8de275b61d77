"""Findings: the weaknesses a chain's own configuration has, predicted from the model (harness/findings/predict.py).

Expected findings, written here from the products' documentation, not read from the code under test:
- ingress-nginx auth-tls-verify-client ``optional`` lets a request without a client certificate through;
  ``optional_no_ca`` also lets a certificate with an unknown issuer through, but nginx still refuses an expired one
  (ngx_ssl_verify_error_optional, nginx src/event/ngx_event_openssl.h; measured on the partner-mtls example);
- ingress-nginx ``proxy-ssl-verify`` defaults to off (annotations docs);
- APIM ``validateCertificateName: false`` and App Gateway without chain validation accept a wrong backend certificate;
- a TLS floor below 1.2 (RFC 8996).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from harness.cases.catalogue import cases
from harness.cases.model import DEFAULT_IDENTITY
from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.findings.predict import CaseFacts, predict, prediction_for
from harness.model.topology import Topology, default_topology
from harness.probe.outcomes import http_reject, ok, tls_alert, upstream_failure
from harness.report.findings import finding_lines, finding_records, stale_acceptances
from harness.report.html import render_html
from harness.report.results import document

REF = default_topology()
NO_CERT = http_reject(400, "No required SSL certificate was sent", hop="ingress", cause="no-client-cert")


def _ids(t: Topology) -> list[str]:
    return [f.id for f in predict(t)]


def test_the_reference_chain_has_no_finding() -> None:
    assert _ids(REF) == []


def test_no_case_of_the_catalogue_changes_its_expectation_on_the_reference_chain() -> None:
    """The catalogue on the reference chain is today's, case by case: no finding of a case's chain (its variant
    applied) changes what a case that expects a refusal expects."""
    changed = []
    for case in cases():
        t = case.variant(REF) if case.variant is not None else REF
        identity = case.identity
        target = "gateway" if case.via == "chain" else (case.endpoint or case.hop)
        if identity == DEFAULT_IDENTITY:
            identity = t.caller_of(target).client_cert
        if prediction_for(t, CaseFacts(case.expect, identity, case.probe.get("max_version"), target)) is not None:
            changed.append(case.id)
    assert changed == []


@pytest.mark.parametrize(("change", "finding", "setting"), [
    (lambda t: t.with_ingress_annotations(auth_tls_verify_client="optional"),
     "ingress-requires-a-verified-client-cert@ingress", "auth-tls-verify-client: optional on Ingress default/echo"),
    (lambda t: t.with_ingress_annotations(proxy_ssl_verify=None),
     "every-hop-verifies-its-upstream-cert@ingress", "proxy-ssl-verify not set (ingress-nginx defaults to off)"),
    (lambda t: t.with_ingress_annotations(auth_tls_verify_depth="2"),
     "ingress-verify-depth-fits-the-pki@ingress", "auth-tls-verify-depth: 2"),
    (lambda t: t.with_hop("apim", upstream__verify_name=False),
     "every-hop-verifies-its-upstream-cert@apim", "apim.backend.validate_certificate_name: false"),
    (lambda t: t.with_hop("gateway", upstream__verify_chain=False),
     "every-hop-verifies-its-upstream-cert@gateway", "gateway.backend_settings.validate_cert_chain_and_expiry: false"),
    (lambda t: t.with_hop("gateway", listener__min_version="1.0"),
     "no-hop-accepts-tls-below-1.2@gateway", "gateway.ssl_policy.min_protocol_version: TLSv1_0"),
    (lambda t: t.with_controller(ssl_protocols="TLSv1.1 TLSv1.2"),
     "no-hop-accepts-tls-below-1.2@ingress", "ssl-protocols: TLSv1.1 TLSv1.2"),
    (lambda t: t.with_hop("gateway", listener__client_auth="optional", listener__client_ca="consumer-ca"),
     "a-client-cert-is-verified-behind-the-gateway@gateway", "Passthrough"),
])
def test_each_weak_setting_is_one_finding_naming_the_setting(change, finding: str, setting: str) -> None:
    found = predict(change(REF))
    assert [f.id for f in found] == [finding]
    assert setting in found[0].setting.text


def test_a_ca_secret_holding_every_root_of_the_chain_is_a_finding_naming_the_other_domains() -> None:
    roots = tuple(c.name for c in REF.pki.cas if c.parent is None)
    secrets = tuple(dataclasses.replace(s, ca=roots) if s.ca else s for s in REF.ingress.secrets)
    found = predict(REF.replace(ingress=dataclasses.replace(REF.ingress, secrets=secrets)))
    assert [f.id for f in found] == ["ingress-trusts-only-its-callers-ca@ingress"]
    assert "consumer-ca" in found[0].lets_through
    assert "pod-ca" in found[0].lets_through
    assert "apim-client-ca," not in found[0].lets_through  # the caller's own CA is not the weakness


def test_optional_lets_a_request_without_a_cert_through_and_still_refuses_an_unknown_ca() -> None:
    t = REF.with_ingress_annotations(auth_tls_verify_client="optional")
    p = prediction_for(t, CaseFacts(NO_CERT, None))
    assert p is not None
    assert p.through == ok(200)
    assert p.refused is None
    unknown = http_reject(400, "The SSL certificate error", hop="ingress", cause="unknown-issuer")
    assert prediction_for(t, CaseFacts(unknown, "apim-client~unknown-ca")) is None


def test_optional_no_ca_forgives_an_unknown_issuer_but_not_an_expired_cert() -> None:
    t = REF.with_ingress_annotations(auth_tls_verify_client="optional_no_ca")
    unknown = http_reject(400, "The SSL certificate error", hop="ingress", cause="unknown-issuer")
    expired = http_reject(400, "The SSL certificate error", hop="ingress", cause="expired")
    assert prediction_for(t, CaseFacts(unknown, "apim-client~unknown-ca")) is not None
    assert prediction_for(t, CaseFacts(expired, "apim-client~expired")) is None


def test_with_match_cn_a_request_without_a_cert_is_refused_by_match_cn_not_let_through() -> None:
    t = REF.with_ingress_annotations(auth_tls_verify_client="optional_no_ca", auth_tls_match_cn="CN=apim-client")
    p = prediction_for(t, CaseFacts(NO_CERT, None))
    assert p is not None
    assert p.through is None
    assert p.refused == http_reject(403, "client certificate unauthorized", hop="ingress", cause="match-cn")
    found = predict(t)[0]
    assert "and a request without one" not in found.lets_through


def test_a_floor_finding_affects_only_the_versions_the_hop_now_accepts() -> None:
    t = REF.with_hop("gateway", listener__min_version="1.1")
    refuse = tls_alert("protocol_version", hop="gateway", cause="protocol-version")
    assert prediction_for(t, CaseFacts(refuse, "x", "1.1")) is not None
    assert prediction_for(t, CaseFacts(refuse, "x", "1.0")) is None


def test_a_name_only_finding_leaves_the_chain_check_standing() -> None:
    t = REF.with_hop("apim", upstream__verify_name=False)
    assert prediction_for(t, CaseFacts(upstream_failure(500, hop="apim", cause="name-mismatch"), None)) is not None
    assert prediction_for(t, CaseFacts(upstream_failure(500, hop="apim", cause="expired"), None)) is None


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chain") / "partner"
    assert main(["init", str(directory), "--example", "partner-mtls"]) == 0
    return directory / "chain.yaml"


def test_the_partner_example_reports_its_deliberate_weakness_at_its_manifest_line(partner: Path) -> None:
    loaded = load_chain(partner)
    found = predict(loaded.topology)
    assert [f.id for f in found] == ["ingress-requires-a-verified-client-cert@ingress"]
    where = loaded.where(found[0].setting)
    line = where.rpartition(":")[2]
    text = (partner.parent / "k8s" / "ingress.yaml").read_text().splitlines()[int(line) - 1]
    assert where.startswith(str(partner.parent / "k8s" / "ingress.yaml") + ":")
    assert "auth-tls-verify-client: optional_no_ca" in text


def test_an_accepted_finding_is_reported_with_its_reason_and_a_stale_one_is_named(partner: Path,
                                                                                   tmp_path: Path) -> None:
    text = partner.read_text() + ("accept:\n  - finding: ingress-requires-a-verified-client-cert@ingress\n"
                                  "    reason: partner certs are pinned by match-cn until the CA migration\n"
                                  "  - finding: no-hop-accepts-tls-below-1.2@gateway\n    reason: old\n")
    partner.with_name("accepting.yaml").write_text(text)
    loaded = load_chain(partner.with_name("accepting.yaml"))
    records = finding_records(predict(loaded.topology), where=loaded.where, accepted=loaded.accepted)
    assert records[0]["accepted"]
    assert records[0]["reason"].startswith("partner certs")
    assert stale_acceptances(records, loaded.accepted) == ["no-hop-accepts-tls-below-1.2@gateway"]
    assert finding_lines(records)[0].startswith("ACCEPTED (partner certs")
    assert "optional_no_ca" in finding_lines(records)[2]


def test_a_bad_acceptance_is_one_line_naming_the_key(partner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = partner.with_name("bad-accept.yaml")
    bad.write_text(partner.read_text() + "accept:\n  - finding: ingress-requires-a-verified-client-cert\n"
                   "    reason: x\n")
    assert main(["chain", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "accept" in err[0]
    assert "finding" in err[0]


def _record(case_id: str, result: str, finding: str | None = None) -> dict[str, object]:
    return {"id": case_id, "hop": "ingress", "result": result, "seen": {"verdict": result, "finding": finding}}


def test_the_document_counts_findings_apart_from_passes_and_failures() -> None:
    t = REF.with_ingress_annotations(auth_tls_verify_client="optional")
    records = finding_records(predict(t))
    doc = document([_record("a", "passed"), _record("b", "finding", records[0]["id"]), _record("c", "failed")],
                   target="local", findings=records)
    s = doc["summary"]
    assert (s["passed"], s["failed"], s["finding"], s["ran"]) == (1, 1, 1, 3)
    assert s["findings"] == 1
    assert s["findings_open"] == 1
    assert doc["findings"][0]["observed_by"] == ["b"]
    assert "1 finding(s) in the chain's configuration" in doc["headline"]
    html = render_html(doc | {"cases": []})
    assert "Findings (1)" in html
    assert "auth-tls-verify-client: optional" in html


def _without_gateway(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("gateway:"):
            skipping = True
            continue
        if skipping and line[:1] not in (" ", "\n"):
            skipping = False
        if not skipping:
            out.append(line)
    return "".join(out)


@pytest.mark.parametrize(("command", "edit", "words"), [
    ("run", lambda t: t.replace("certs/public-root.pem", "certs/nowhere.pem"), "nowhere.pem"),
    ("run", _without_gateway, "gateway"),
    ("run", None, "auth-tls-verify-depth"),  # a value the controller refuses, in the Ingress manifest
    ("explain", _without_gateway, "gateway"),
])
def test_run_and_explain_with_an_unusable_chain_file_are_one_line_and_exit_2(
        partner: Path, capsys: pytest.CaptureFixture[str], command: str, edit: Any, words: str) -> None:
    """Before: `run` let each xdist worker raise the bad file per case (204 errors, exit 1)."""
    broken = partner.with_name(f"broken-{command}-{words.replace('.', '')}.yaml")
    broken.write_text(edit(partner.read_text()) if edit is not None else partner.read_text())
    manifest = partner.parent / "k8s" / "ingress.yaml"
    original = manifest.read_text()
    if edit is None:
        manifest.write_text(original.replace("auth-tls-verify-depth: '1'", "auth-tls-verify-depth: '-1'"))
    try:
        argv = ["run", "--chain", str(broken), "-n", "2"] if command == "run" else \
            ["explain", "gateway-refuses-tls1.0", "--chain", str(broken)]
        assert main(argv) == 2
    finally:
        manifest.write_text(original)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert words in err[0]


def test_explain_names_the_probe_the_finding_its_line_and_the_verdict_rules(
        partner: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "ingress-rejects-client-cert-unknown-ca-tls1.2", "--chain", str(partner), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["probe"]["to"] == "ingress"
    assert doc["probe"]["presents"].startswith("apim-client with the unknown-ca fault")
    assert doc["probe"]["options"] == {"min_version": "1.2", "max_version": "1.2"}
    assert doc["finding"]["id"] == "ingress-requires-a-verified-client-cert@ingress"
    assert doc["finding"]["where"] == f"{partner.parent / 'k8s' / 'ingress.yaml'}:11"
    assert doc["finding"]["finding_if"] == ["ok(200)"]
    match_cn = "http_reject(403, 'client certificate unauthorized') by ingress for match-cn"
    assert doc["finding"]["passes_if"] == [match_cn]


def test_explain_on_the_reference_chain_has_no_finding(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "gateway-refuses-tls1.0"]) == 0
    out = capsys.readouterr().out
    assert "tls_alert(protocol_version) by gateway for protocol-version" in out
    assert "no setting of it changes this expectation" in out


@pytest.mark.parametrize(("argv", "words"), [
    (["explain", "ingress-rejects-client-cert-unknown-ca"], "did you mean ingress-rejects-client-cert-unknown-ca-tls1"),
    (["explain", "nope"], "'nope' is not a case id"),
    (["explain", "gateway-refuses-tls1.0", "--chain", "/nonexistent/chain.yaml"], "/nonexistent/chain.yaml"),
])
def test_explain_bad_input_is_one_line_and_exit_2(argv: list[str], words: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert words in err[0]


def test_the_markdown_summary_puts_open_findings_first_then_failures() -> None:
    from harness.report.summary import markdown

    t = REF.with_ingress_annotations(auth_tls_verify_client="optional", proxy_ssl_verify="off")
    records = finding_records(predict(t), accepted={"every-hop-verifies-its-upstream-cert@ingress": "pods on mTLS"})
    failed = {"id": "c", "hop": "ingress", "result": "failed", "expected": "ok(200)", "message": "why | not",
              "seen": {"outcome_text": "http_reject(403)"}}
    doc = document([_record("b", "finding", records[0]["id"]), failed], target="local", findings=records)
    text = markdown(doc)
    assert text.startswith("## mTLS chain: FAILED")
    lines = text.splitlines()
    open_row = next(i for i, line in enumerate(lines) if line.startswith("| **open** |"))
    accepted_row = next(i for i, line in enumerate(lines) if line.startswith("| accepted: pods on mTLS |"))
    assert open_row < accepted_row
    assert "### Findings (1 open, 1 accepted)" in text
    assert "| `c` | ingress | `ok(200)` | `http_reject(403)` | why \\| not |" in text


def test_with_match_cn_and_optional_a_request_without_a_cert_is_refused_by_match_cn_whatever_was_expected() -> None:
    """Measured on the partner-mtls example: ingress-optional-accepts-missing-client-cert saw 403 match-cn."""
    t = REF.with_ingress_annotations(auth_tls_verify_client="optional", auth_tls_match_cn="CN=apim-client")
    p = prediction_for(t, CaseFacts(ok(200), None, None, "ingress"))
    assert p is not None
    assert p.finding is None
    assert p.refused == http_reject(403, "client certificate unauthorized", hop="ingress", cause="match-cn")
    assert "match-cn" in (p.rule or "")
    assert prediction_for(t, CaseFacts(ok(200), None, None, "gateway")) is None  # apim presents its own cert
    on = REF.with_ingress_annotations(auth_tls_match_cn="CN=apim-client")
    assert prediction_for(on, CaseFacts(NO_CERT, None, None, "ingress")) is None  # "on": nginx's 400 comes first


def test_through_the_gateway_apim_judges_the_gateways_own_backend_cert() -> None:
    """Measured on the partner-mtls example: its gateway presents gateway-client to APIM, which trusts it."""
    expect = http_reject(401, hop="apim", cause="no-client-cert")
    validating = REF.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)
    assert prediction_for(validating, CaseFacts(expect, None, None, "gateway")) is None  # no cert: the 401 stands
    trusted_leaf = next(lf.name for lf in REF.pki.leaves
                        if lf.usage == "client" and REF.pki.root_of(lf.issuer) == REF.pki.root_of(
                            REF.apim.listener.client_ca or ""))
    presenting = validating.with_hop("gateway", upstream__client_cert=trusted_leaf)
    p = prediction_for(presenting, CaseFacts(expect, None, None, "gateway"))
    assert p is not None
    assert p.refused == ok(200)
    foreign = validating.with_hop("gateway", upstream__client_cert="ingress-client")
    p = prediction_for(foreign, CaseFacts(expect, None, None, "gateway"))
    assert p is not None
    assert p.refused == http_reject(401, hop="apim", cause="not-trusted")


def test_apim_validating_a_cert_nobody_presents_refuses_every_request_with_401() -> None:
    """Measured on the chain written from the fake Azure's good environment (tests/integration/test_azure_twin.py):
    App Gateway presents no backend client cert, APIM validates one — every request through the gateway, and every
    probe at APIM as the gateway, is APIM's 401; a TLS-version refusal still comes first. Without negotiation APIM
    never asks (REFERENCES.md issue 10): a probe presenting a trusted cert is refused as well."""
    refused = http_reject(401, hop="apim", cause="no-client-cert")
    validating = REF.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)
    assert validating.gateway.upstream.client_cert is None
    for target, expect in (("gateway", ok(200)), ("apim", ok(200)), ("gateway", upstream_failure(502, hop="ingress",
                                                                                                  cause="expired"))):
        p = prediction_for(validating, CaseFacts(expect, None, None, target))
        assert p is not None
        assert p.refused == refused, (target, expect)
    version = tls_alert("protocol_version", hop="apim", cause="protocol-version")
    assert prediction_for(validating, CaseFacts(version, None, "1.1", "apim")) is None
    gateway_first = http_reject(403, hop="gateway", cause="waf")
    assert prediction_for(validating, CaseFacts(gateway_first, None, None, "gateway")) is None
    trusted = next(lf.name for lf in REF.pki.leaves if lf.usage == "client" and REF.pki.root_of(lf.issuer) ==
                   REF.pki.root_of(REF.apim.listener.client_ca or ""))
    assert prediction_for(validating, CaseFacts(ok(200), trusted, None, "apim")) is None  # it asks: this one passes
    blind = validating.with_hop("apim", negotiate_client_certificate=False)
    p = prediction_for(blind, CaseFacts(ok(200), trusted, None, "apim"))
    assert p is not None
    assert p.refused == refused
    assert "negotiateClientCertificate is false" in (p.rule or "")
    assert prediction_for(REF, CaseFacts(ok(200), None, None, "gateway")) is None  # the reference APIM checks none


def test_a_pod_that_requires_a_cert_refuses_a_probe_and_an_ingress_without_one() -> None:
    """Measured on a docs-only chain whose pod requires a client cert (certificate_required; the ingress's 502)."""
    t = REF.with_hop("pod", listener__client_auth="required")
    p = prediction_for(t, CaseFacts(ok(200), None, None, "pod"))
    assert p is not None
    assert p.refused == tls_alert("certificate_required", hop="pod", cause="no-client-cert")
    assert prediction_for(t, CaseFacts(ok(200), "ingress-client", None, "pod")) is None  # with a cert: no change
    no_proxy_cert = t.with_ingress_annotations(proxy_ssl_secret=None, proxy_ssl_verify=None)
    p = prediction_for(no_proxy_cert, CaseFacts(ok(200), None, None, "gateway"))
    assert p is not None
    assert p.refused == upstream_failure(502, hop="pod", cause="no-client-cert")


def test_a_pod_that_requires_a_cert_of_another_ca_refuses_the_ingresss_cert() -> None:
    """Measured on the passthrough example with termination back on (a variant without the controller flag): the pod
    requires apim-client-ca and nginx presents ingress-client (pod-ca) completed with pod-ca's root from its
    proxy-ssl trust store, so the pod's log says "self-signed certificate in certificate chain"."""
    t = REF.with_hop("pod", listener__client_auth="required", listener__client_ca="apim-client-ca")
    for target in ("gateway", "ingress"):
        p = prediction_for(t, CaseFacts(ok(200), "apim-client", None, target))
        assert p is not None
        assert p.finding is None
        assert p.refused == upstream_failure(502, hop="pod", cause="self-signed-in-chain")
    # without proxy-ssl-verify nginx loads no trust store, so nothing completes the chain: a plain missing issuer
    unverified = t.with_ingress_annotations(proxy_ssl_verify="off")
    p = prediction_for(unverified, CaseFacts(ok(200), "apim-client", None, "gateway"))
    assert p is not None
    assert p.refused == upstream_failure(502, hop="pod", cause="unknown-issuer")
    # the pod trusting the ingress's CA changes nothing
    assert prediction_for(REF.with_hop("pod", listener__client_auth="required"),
                          CaseFacts(ok(200), "apim-client", None, "gateway")) is None
