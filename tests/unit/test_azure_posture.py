"""Posture verdicts from discoveries made with the real SDKs against the local fake: the bad environment fails
exactly the checks it should, its good twin passes them all, and each check reads the fact it names."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from harness.targets.azure import CHECKS, Discovery, discover, evaluate, expiry_table, parse_azure_config
from tests.fakes.fake_azure import KUBE_TOKEN, FakeAzure, StaticCredential, build_environment, config_doc

BAD_FAILS = {
    "apim-backend-tls-validation",  # aks-echo: validateCertificateChain false
    "appgw-backend-https",  # legacy-http backend setting
    "appgw-min-tls",  # AppGwSslPolicy20170401: TLS 1.1
    "keyvault-versionless-ids",  # gw-cert referenced by version
    "cert-expiry",  # the gateway cert expires in 10 days
    "aks-api-server-exposure",  # public API server, no authorized ranges
    "apim-internal-vnet",  # External
    "apim-client-cert-negotiation",  # validate-client-certificate on api:echo, no negotiation
    "ingress-serves-secret-cert",  # a stale cert on the wire
    "apim-min-tls",  # customProperties: clients may use TLS 1.0 and 3DES (backends may not)
    "apim-backend-https",  # the health API's serviceUrl is http://
    "appgw-no-public-http",  # an Http listener on the public frontend, no redirect
    "keyvault-renewal",  # apim-client's policy issuer is Unknown
    "ingress-private-address",  # the echo Ingress also has a public load balancer address
    "apim-keyvault-refresh",  # apim-client's last refresh from Key Vault failed
}


def _discover(variant: str, tmp_path_factory, monkeypatch_module) -> Discovery:
    tmp = tmp_path_factory.mktemp(variant)
    with FakeAzure(build_environment(variant), tmp) as fake:
        disc = discover(parse_azure_config(config_doc(fake), tmp), StaticCredential())
        assert fake.errors == []
        assert fake.methods() == {"GET"}
    return disc


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def bad(tmp_path_factory, monkeypatch_module) -> Discovery:
    return _discover("bad", tmp_path_factory, monkeypatch_module)


@pytest.fixture(scope="module")
def good(tmp_path_factory, monkeypatch_module) -> Discovery:
    return _discover("good", tmp_path_factory, monkeypatch_module)


def _status(verdicts):
    return {v.check.id: v.status for v in verdicts}


def test_bad_environment_fails_exactly_the_expected_checks(bad):
    verdicts = evaluate(bad, expiry_days=30)
    failed = {v.check.id for v in verdicts if v.status == "fail"}
    assert failed == BAD_FAILS, "\n".join(v.line() for v in verdicts)
    assert _status(verdicts)["appgw-backend-cert-validation"] == "pass"


def test_good_environment_passes_every_check(good):
    verdicts = evaluate(good, expiry_days=30)
    assert _status(verdicts) == {c.id: "pass" for c in CHECKS}, "\n".join(v.line() for v in verdicts)


def test_each_bad_finding_names_the_resource_and_the_setting(bad):
    findings = {v.check.id: " | ".join(v.findings) for v in evaluate(bad)}
    assert "backend aks-echo" in findings["apim-backend-tls-validation"]
    assert "validateCertificateChain" in findings["apim-backend-tls-validation"]
    assert "validateCertificateName" not in findings["apim-backend-tls-validation"]
    assert "legacy-http: protocol Http" in findings["appgw-backend-https"]
    assert "apim-https" not in findings["appgw-backend-https"]
    assert "AppGwSslPolicy20170401: minimum TLSv1_1" in findings["appgw-min-tls"]
    assert "sslCertificates/gw-cert" in findings["keyvault-versionless-ids"]
    assert "apim-cert" not in findings["keyvault-versionless-ids"]  # APIM's reference is versionless
    assert "api:echo" in findings["apim-client-cert-negotiation"]
    assert "virtualNetworkType External" in findings["apim-internal-vnet"]
    assert "not reloaded" in findings["ingress-serves-secret-cert"]
    # APIM's two sides apart: clients may use TLS 1.0 and 3DES, backends may not
    assert "…Security.Protocols.Tls10: True — clients may use TLS 1.0" in findings["apim-min-tls"]
    assert "TripleDes168: True" in findings["apim-min-tls"]
    assert "Backend" not in findings["apim-min-tls"]
    assert "API health: serviceUrl http://status.aks.contoso.example/" in findings["apim-backend-https"]
    assert "echo" not in findings["apim-backend-https"]
    assert "listener public-http: Http on the public frontend, port 80" in findings["appgw-no-public-http"]
    assert "public-https" not in findings["appgw-no-public-http"]
    assert "certificates/apim-client: issuer Unknown" in findings["keyvault-renewal"]
    assert "gw-cert" not in findings["keyvault-renewal"]
    assert "load balancer address 20.61.0.99 is public" in findings["ingress-private-address"]
    assert "10.20.2.50" not in findings["ingress-private-address"]
    assert findings["apim-keyvault-refresh"].startswith("APIM certificate apim-client: Key Vault refresh Failed "
                                                         "(Could not fetch the secret")


def test_the_edge_listener_must_ask_for_client_certs_unless_apim_checks_them(bad):
    gw = bad.app_gateway
    assert gw is not None
    assert _status(evaluate(bad))["appgw-edge-client-auth"] == "pass"  # public-https has the Strict profile
    passthrough = dataclasses.replace(gw, ssl_profiles=tuple(
        dataclasses.replace(p, verify_client_auth_mode="Passthrough") for p in gw.ssl_profiles))
    lax = dataclasses.replace(bad, app_gateway=passthrough)
    assert bad.apim is not None
    no_check = dataclasses.replace(lax, apim=dataclasses.replace(bad.apim, policies=tuple(
        dataclasses.replace(p, validate_client_certificate=False) for p in bad.apim.policies)))
    (verdict,) = [v for v in evaluate(no_check) if v.check.id == "appgw-edge-client-auth"]
    assert verdict.status == "fail"
    assert verdict.findings == ("listener public-https: SSL profile mtls-strict in Passthrough mode and no APIM "
                                "policy validates the client certificate — any certificate, or none, gets through",)
    assert _status(evaluate(lax))["appgw-edge-client-auth"] == "pass"  # APIM's api:echo policy validates it
    assert gw.ssl_profiles[0].trusted_client_certificates == ("consumer-ca",)
    assert "BEGIN CERTIFICATE" in gw.trusted_client_pems["consumer-ca"]
    unanchored = dataclasses.replace(bad, app_gateway=dataclasses.replace(gw, trusted_client_pems={}))
    (verdict,) = [v for v in evaluate(unanchored) if v.check.id == "appgw-edge-client-auth"]
    assert verdict.findings == ("listener public-https: SSL profile mtls-strict is Strict but names no trusted "
                                "client certificate App Gateway holds — no client certificate can be verified",)
    # a second public HTTPS listener without a profile is a way around the first one's Strict mTLS
    around = dataclasses.replace(gw.listeners[0], name="public-https-legacy", ssl_profile=None)
    no_profile = dataclasses.replace(bad, app_gateway=dataclasses.replace(gw, listeners=(*gw.listeners, around)))
    (verdict,) = [v for v in evaluate(no_profile) if v.check.id == "appgw-edge-client-auth"]
    assert verdict.findings == ("listener public-https-legacy: no SSL profile — it asks for no client certificate "
                                "while public-https demand(s) one: a way around the gateway's mTLS",)
    # a gateway that asks for client certificates nowhere is not judged by this check
    nowhere = dataclasses.replace(bad, app_gateway=dataclasses.replace(gw, listeners=tuple(
        dataclasses.replace(lst, ssl_profile=None) for lst in gw.listeners)))
    assert _status(evaluate(nowhere))["appgw-edge-client-auth"] == "pass"


def test_apims_backend_side_is_judged_on_its_own(good):
    apim = good.apim
    assert apim is not None
    backend_only = dataclasses.replace(good, apim=dataclasses.replace(
        apim, tls_settings={**apim.tls_settings, "Backend.Protocols.Tls11": "True"}))
    (verdict,) = [v for v in evaluate(backend_only) if v.check.id == "apim-min-tls"]
    assert verdict.status == "fail"
    assert verdict.findings == (f"{apim.name} customProperties …Security.Backend.Protocols.Tls11: True — APIM may "
                                "reach its backends with TLS 1.1",)


def test_a_public_http_listener_that_only_redirects_passes(tmp_path_factory, monkeypatch_module):
    env = build_environment("bad")
    agw = next(v for k, v in env.arm.items() if "applicationgateways" in k)
    gw_id = agw["id"]
    agw["properties"]["redirectConfigurations"] = [{
        "id": f"{gw_id}/redirectConfigurations/to-https", "name": "to-https",
        "properties": {"redirectType": "Permanent", "targetListener": {"id": f"{gw_id}/httpListeners/public-https"},
                       "includePath": True, "includeQueryString": True}}]
    agw["properties"]["requestRoutingRules"] = [{
        "id": f"{gw_id}/requestRoutingRules/http-to-https", "name": "http-to-https",
        "properties": {"ruleType": "Basic", "priority": 100,
                       "httpListener": {"id": f"{gw_id}/httpListeners/public-http"},
                       "redirectConfiguration": {"id": f"{gw_id}/redirectConfigurations/to-https"}}}]
    tmp = tmp_path_factory.mktemp("redirect")
    with FakeAzure(env, tmp) as fake:
        disc = discover(parse_azure_config(config_doc(fake), tmp), StaticCredential())
        assert fake.errors == []
    assert disc.app_gateway is not None
    assert {lst.name: lst.redirects for lst in disc.app_gateway.listeners}["public-http"]
    assert _status(evaluate(disc))["appgw-no-public-http"] == "pass"


def test_expiry_check_lists_the_soon_expiring_cert_in_every_plane_that_holds_it(bad):
    (verdict,) = [v for v in evaluate(bad, expiry_days=30) if v.check.id == "cert-expiry"]
    planes = sorted(f.split("]")[0].lstrip("[") for f in verdict.findings)
    # the gateway cert expires in 10 days: App Gateway's copy and Key Vault's current version both say so (the
    # previous Key Vault version expired long ago but is not current, so it is not listed)
    assert planes == ["app-gateway", "key-vault"], verdict.findings
    assert all("expires in" in f for f in verdict.findings)


def test_expiry_threshold_is_the_number_of_days_given(bad):
    assert _status(evaluate(bad, expiry_days=5))["cert-expiry"] == "pass"
    assert _status(evaluate(bad, expiry_days=11))["cert-expiry"] == "fail"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=11)
    (verdict,) = [v for v in evaluate(bad, expiry_days=0, now=later) if v.check.id == "cert-expiry"]
    assert any("EXPIRED" in f for f in verdict.findings)


def test_expiry_table_is_sorted_soonest_first_across_planes(bad):
    table = expiry_table(bad)
    assert [r["not_after"] for r in table] == sorted(r["not_after"] for r in table)
    assert {r["plane"] for r in table} == {"app-gateway", "apim", "key-vault", "cluster-secret", "served"}
    assert table[0]["days_left"] < 11


def test_checks_skip_when_nothing_was_discovered():
    empty = Discovery(subscription_id="s", resource_group="r", discovered_at="2026-01-01T00:00:00+00:00")
    verdicts = evaluate(empty)
    assert {v.status for v in verdicts} == {"skip"}
    assert all(v.passed for v in verdicts)  # a skip is not a failure, but it is not a pass either
    assert all(v.status != "pass" for v in verdicts)


def test_private_cluster_or_authorized_ranges_pass_the_api_server_check(bad):
    ranges = dataclasses.replace(bad, aks=dataclasses.replace(bad.aks, authorized_ip_ranges=("203.0.113.0/24",)))
    assert _status(evaluate(ranges))["aks-api-server-exposure"] == "pass"
    private = dataclasses.replace(bad, aks=dataclasses.replace(bad.aks, enable_private_cluster=True))
    assert _status(evaluate(private))["aks-api-server-exposure"] == "pass"


def test_negotiation_check_needs_a_policy_that_validates(bad):
    no_policy = dataclasses.replace(bad, apim=dataclasses.replace(bad.apim, policies=()))
    assert _status(evaluate(no_policy))["apim-client-cert-negotiation"] == "pass"


def test_every_check_says_why_and_cites_references():
    ids = [c.id for c in CHECKS]
    assert len(ids) == len(set(ids))
    for check in CHECKS:
        assert check.why
        assert check.title
        for ref in check.refs:
            assert f"issue {ref}" in check.why or f"issues {ref}" in check.why or f", {ref}" in check.why, check.id


def test_verdicts_serialise_with_their_reasons(bad):
    rows = [v.as_dict() for v in evaluate(bad)]
    row = next(r for r in rows if r["id"] == "keyvault-versionless-ids")
    assert row["status"] == "fail"
    assert row["refs"] == [9]
    assert "REFERENCES.md issue 9" in row["why"]


def test_trace_snippets_emit_every_trace_field_and_strip_later_hops():
    import json
    import re
    from pathlib import Path

    from harness.model.wire import FIELDS, parse_entry

    deploy = Path(__file__).resolve().parents[2] / "deploy" / "azure"
    rules = json.loads((deploy / "appgw-rewrite-rules.json").read_text())
    headers = {h["headerName"]: h["headerValue"]
               for r in rules["properties"]["rewriteRules"] for h in r["actionSet"]["requestHeaderConfigurations"]}
    assert headers["x-mtls-trace-apim"] == ""
    assert headers["x-mtls-trace-ingress"] == ""
    sample = re.sub(r"\{var_(\w+)\}", lambda m: f"<{m.group(1)}>", headers["x-mtls-trace-gateway"])
    entry = parse_entry(sample)
    assert set(FIELDS) <= set(entry)
    assert entry["verify"] == "<client_certificate_verification>"
    assert entry["tls"] == "<ssl_connection_protocol>"
    policy = (deploy / "apim-trace-policy.xml").read_text()
    expression = policy.split('name="x-mtls-trace-apim"', 1)[1].split("</value>", 1)[0]
    keys = set(re.findall(r'(?:"|; )(\w+)=', expression))
    assert set(FIELDS) <= keys
    assert '<set-header name="x-mtls-trace-ingress" exists-action="delete" />' in policy
