"""The chain's Ingresses as Gateway API resources, and the migration ledger (harness.render.gateway_api, issue 20):
what is written, field by field, and which security property each Ingress setting keeps, changes or loses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cases.catalogue import _ingress_crl
from harness.cli.main import main
from harness.errors import UsageError
from harness.model.topology import Topology, default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.render.gateway_api import translate

REF = default_topology()


@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(REF.pki)


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _verdicts(t: Topology, certs: CertSet) -> dict[str, str]:
    return {p.name: p.verdict for p in translate(t, certs).ledger}


def test_the_reference_chain_as_gateway_api_resources(certs: CertSet) -> None:
    docs = translate(REF, certs).documents
    (gateway,) = _kind(docs, "Gateway")
    assert gateway["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert gateway["spec"]["gatewayClassName"] == "eg"
    (listener,) = gateway["spec"]["listeners"]
    assert listener["hostname"] == "echo.aks.contoso.example"
    assert listener["protocol"] == "HTTPS"
    assert listener["tls"] == {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "ingress-tls"}]}
    validation = gateway["spec"]["tls"]["frontend"]["default"]["validation"]
    assert validation["mode"] == "AllowValidOnly"  # auth-tls-verify-client: on
    (ca_ref,) = validation["caCertificateRefs"]
    assert ca_ref == {"group": "", "kind": "ConfigMap", "name": "apim-client-ca-ca"}
    configmaps = {d["metadata"]["name"]: d["data"]["ca.crt"] for d in _kind(docs, "ConfigMap")}
    assert configmaps["apim-client-ca-ca"] == certs.trust_bundle("apim-client-ca").read_text()
    # the client cert the ingress presents to the pod: what ingress2gateway drops
    assert gateway["spec"]["tls"]["backend"] == {"clientCertificateRef": {"kind": "Secret", "name": "pod-tls-client"}}
    (route,) = _kind(docs, "HTTPRoute")
    assert route["spec"]["hostnames"] == ["echo.aks.contoso.example"]
    assert route["spec"]["parentRefs"] == [{"name": "echo-gateway", "sectionName": "https-1"}]
    assert route["spec"]["rules"][0]["backendRefs"] == [{"name": "echo", "port": 8443}]
    (policy,) = _kind(docs, "BackendTLSPolicy")
    assert policy["spec"]["targetRefs"] == [{"group": "", "kind": "Service", "name": "echo"}]
    assert policy["spec"]["validation"]["hostname"] == "echo.default.svc.cluster.local"  # proxy-ssl-name
    assert configmaps[policy["spec"]["validation"]["caCertificateRefs"][0]["name"]] == \
        certs.trust_bundle("pod-ca").read_text()
    text = yaml.safe_dump_all(docs)
    assert "PRIVATE KEY" not in text  # Secrets are named, never copied (the proxy-ssl file holds a key: not taken)


def test_the_reference_chains_ledger(certs: CertSet) -> None:
    assert _verdicts(REF, certs) == {
        "client certificate required": "changed",  # a 400 page becomes a TLS alert
        "client certificate chain depth": "lost",
        "client certificate passed to the pod": "lost",
        "the pod's certificate is verified": "kept",
        "the ingress presents a client certificate to the pod": "kept",
    }


@pytest.mark.parametrize(("mode", "written", "verdict"), [("optional", "AllowInsecureFallback", "changed"),
                                                          ("optional_no_ca", "AllowInsecureFallback", "lost")])
def test_a_weaker_client_check_is_written_as_the_fallback(certs: CertSet, mode: str, written: str,
                                                          verdict: str) -> None:
    t = REF.with_ingress_annotations(auth_tls_verify_client=mode)
    translation = translate(t, certs)
    (gateway,) = _kind(translation.documents, "Gateway")
    assert gateway["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] == written
    assert _verdicts(t, certs)["client certificate required"] == verdict


def test_what_gateway_api_cannot_say_is_lost(certs: CertSet) -> None:
    t = _ingress_crl(REF.with_ingress_annotations(auth_tls_match_cn="CN=apim-client",
                                                  auth_tls_error_page="https://example.com/denied"))
    verdicts = _verdicts(t, certs)
    assert verdicts["client certificate CN match"] == "lost"
    assert verdicts["error page for a refused client certificate"] == "lost"
    assert verdicts["revoked client certificates refused (CRL)"] == "lost"


def test_an_unverified_pod_hop_becomes_verified_and_one_without_a_ca_becomes_plaintext(certs: CertSet) -> None:
    unverified = REF.with_ingress_annotations(proxy_ssl_verify="off")
    assert _verdicts(unverified, certs)["the pod's certificate is verified"] == "changed"  # stricter
    assert _kind(translate(unverified, certs).documents, "BackendTLSPolicy")
    no_ca = REF.with_ingress_annotations(proxy_ssl_secret=None, proxy_ssl_verify=None, proxy_ssl_name=None,
                                         proxy_ssl_server_name=None, proxy_ssl_verify_depth=None,
                                         proxy_ssl_protocols=None)
    translation = translate(no_ca, certs)
    assert {p.name: p.verdict for p in translation.ledger}["the hop to the pod is TLS"] == "lost"
    assert not _kind(translation.documents, "BackendTLSPolicy")


def test_validation_is_per_port_so_a_second_hosts_own_check_changes(certs: CertSet) -> None:
    home = REF.ingress.ingresses[0]
    other = dataclasses.replace(home, name="reports", host="reports.aks.contoso.example",
                                annotations={**home.annotations, "auth-tls-verify-client": "optional"})
    t = REF.replace(ingress=dataclasses.replace(REF.ingress, ingresses=(home, other)))
    rows = {p.host: p for p in translate(t, certs).ledger if p.name == "client certificate required"}
    assert rows["echo.aks.contoso.example"].verdict == "changed"  # the 400 page becomes an alert
    reports = rows["reports.aks.contoso.example"]
    assert reports.verdict == "changed"
    assert "stricter" in reports.source  # optional on its Ingress, AllowValidOnly for the whole port
    assert "GEP-91" in reports.source


def _weakened(docs: list[dict[str, Any]], *, fallback: bool = False, no_policy: bool = False,
              no_client_cert: bool = False) -> list[dict[str, Any]]:
    out = json.loads(json.dumps(docs))
    for d in out:
        if d["kind"] == "Gateway":
            if fallback:
                d["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] = "AllowInsecureFallback"
            if no_client_cert:
                del d["spec"]["tls"]["backend"]
    return [d for d in out if not (no_policy and d["kind"] == "BackendTLSPolicy")]


def test_your_resources_weakened_are_reported_as_lost(certs: CertSet) -> None:
    written = translate(REF, certs).documents
    fallback = {p.name: p for p in translate(REF, certs, resources=_weakened(written, fallback=True)).ledger}
    assert fallback["client certificate required"].verdict == "lost"  # on → AllowInsecureFallback
    no_policy = {p.name: p for p in translate(REF, certs, resources=_weakened(written, no_policy=True)).ledger}
    assert no_policy["the hop to the pod is TLS"].verdict == "lost"  # HTTPS pod, no BackendTLSPolicy: plain HTTP
    assert "the pod's certificate is verified" not in no_policy
    no_cert = {p.name: p for p in translate(REF, certs, resources=_weakened(written, no_client_cert=True)).ledger}
    assert no_cert["the ingress presents a client certificate to the pod"].verdict == "lost"


def test_resources_without_any_client_check_as_a_migration_tool_writes_them_lose_it(certs: CertSet) -> None:
    # what ingress2gateway writes for the reference Ingress: the listener and route, no auth-tls (it only warns)
    docs = [d for d in json.loads(json.dumps(translate(REF, certs).documents)) if d["kind"] in ("Gateway",
                                                                                                  "HTTPRoute")]
    del docs[0]["spec"]["tls"]
    ledger = {p.name: p.verdict for p in translate(REF, certs, resources=docs).ledger}
    assert ledger["client certificate required"] == "lost"
    assert ledger["the hop to the pod is TLS"] == "lost"
    assert ledger["the ingress presents a client certificate to the pod"] == "lost"


def test_a_gateway_trusting_more_client_cas_loses_the_property(certs: CertSet) -> None:
    docs = json.loads(json.dumps(translate(REF, certs).documents))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "apim-client-ca-ca")
    cm["data"]["ca.crt"] += certs.trust_bundle("consumer-ca").read_text()
    rows = {p.name: p for p in translate(REF, certs, resources=docs).ledger}
    assert rows["the client CAs trusted"].verdict == "lost"
    assert "1 of them not trusted before" in rows["the client CAs trusted"].gateway


def test_an_unknown_implementation_is_one_clear_error(certs: CertSet) -> None:
    with pytest.raises(UsageError, match="gateway-api:traefik: not available"):
        translate(REF, certs, implementation="traefik")


def test_application_gateway_for_containers_gets_its_own_policies(certs: CertSet) -> None:
    """The shapes of Microsoft Learn's frontend and backend mTLS how-tos: the CA and client certificate are Secrets,
    the client certificate is presented per backend, the Gateway has no spec.tls."""
    docs = translate(REF, certs, implementation="agc").documents
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    assert gateway["spec"]["gatewayClassName"] == "azure-alb-external"
    assert "tls" not in gateway["spec"]
    front = next(d for d in docs if d["kind"] == "FrontendTLSPolicy")
    assert front["apiVersion"] == "alb.networking.azure.io/v1"
    assert front["spec"]["targetRef"] == {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": "echo-gateway", "namespace": "default", "sectionNames": ["https-1"]}
    assert front["spec"]["default"]["verify"]["caCertificateRef"] == {"group": "", "kind": "Secret",
                                                                      "name": "apim-client-ca", "namespace": "default"}
    back = next(d for d in docs if d["kind"] == "BackendTLSPolicy")
    assert back["apiVersion"] == "alb.networking.azure.io/v1"
    assert back["spec"]["targetRef"]["name"] == "echo"
    default = back["spec"]["default"]
    assert default["sni"] == default["verify"]["subjectAltName"] == "echo.default.svc.cluster.local"
    assert default["ports"] == [{"port": 8443}]
    assert default["clientCertificateRef"]["name"] == default["verify"]["caCertificateRef"]["name"] == "pod-tls-client"
    assert not [d for d in docs if d["kind"] == "ConfigMap"]  # AGC names Secrets


def test_the_agc_ledger_keeps_the_backend_checks_and_makes_optional_stricter(certs: CertSet) -> None:
    rows = {p.name: p for p in translate(REF, certs, implementation="agc").ledger}
    assert rows["the pod's certificate is verified"].verdict == "kept"
    assert rows["the ingress presents a client certificate to the pod"].verdict == "kept"
    assert "alb BackendTLSPolicy" in rows["the ingress presents a client certificate to the pod"].gateway
    optional = REF.with_ingress_annotations(auth_tls_verify_client="optional")
    row = {p.name: p for p in translate(optional, certs, implementation="agc").ledger}["client certificate required"]
    assert row.verdict == "changed"
    assert "stricter" in row.source


def test_an_agc_frontend_policy_for_another_listener_checks_nothing_here(certs: CertSet) -> None:
    docs = json.loads(json.dumps(translate(REF, certs, implementation="agc").documents))
    front = next(d for d in docs if d["kind"] == "FrontendTLSPolicy")
    front["spec"]["targetRef"]["sectionNames"] = ["another-listener"]
    rows = {p.name: p for p in translate(REF, certs, resources=docs).ledger}
    assert rows["client certificate required"].verdict == "lost"


def test_migrate_writes_the_resources_prints_the_ledger_and_exits_1_for_a_lost_property(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gw"
    assert main(["migrate", "--to", "gateway-api:envoy-gateway", "--out", str(out), "--json", "--no-run"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["counts"] == {"kept": 2, "changed": 1, "lost": 2}
    assert doc["measured"] is None  # --no-run
    assert doc["to"] == "gateway-api:envoy-gateway"
    written = list(yaml.safe_load_all((out / "gateway-api.yaml").read_text()))
    assert [d["kind"] for d in written].count("Gateway") == 1
    # a second run does not overwrite without --force: one line, exit 2, the file untouched
    before = (out / "gateway-api.yaml").read_bytes()
    assert main(["migrate", "--to", "gateway-api", "--out", str(out), "--no-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--force" in err
    assert (out / "gateway-api.yaml").read_bytes() == before


def test_migrate_refuses_another_target_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--to", "istio", "--out", str(tmp_path / "x")]) == 2
    assert "the only migration is to gateway-api" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_migrate_assesses_your_resources_and_writes_nothing(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    weak = _weakened(translate(REF, certs=cert_set_for(REF.pki)).documents, fallback=True, no_policy=True)
    path = tmp_path / "yours.yaml"
    path.write_text(yaml.safe_dump_all(weak))
    out = tmp_path / "not-written"
    assert main(["migrate", "--to", "gateway-api", "--resources", str(path), "--out", str(out), "--json",
                 "--no-run"]) == 1
    doc = json.loads(capsys.readouterr().out)
    lost = {row["property"] for row in doc["ledger"] if row["verdict"] == "lost"}
    assert {"client certificate required", "the hop to the pod is TLS"} <= lost
    assert doc["written"] is None
    assert doc["assessed"] == [str(path)]
    assert not out.exists()


@pytest.mark.parametrize(("text", "said"), [("kind: Gateway\n  bad: [\n", "r.yaml:2: is not valid YAML"),
                                            ("kind: HTTPRoute\n", "holds no Gateway")])
def test_unusable_resources_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                    said: str) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert main(["migrate", "--to", "gateway-api", "--resources", str(path), "--no-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert said in err
    assert str(path) in err


@pytest.mark.parametrize(("client_validation", "verdict"), [({}, "changed"),  # RequireAndVerify by default
                                                            ({"mode": "RequireAndVerify"}, "changed"),
                                                            ({"mode": "Request"}, "lost"),
                                                            ({"optional": True}, "lost"),  # deprecated: Request
                                                            ({"mode": "RequireAny"}, "lost"),
                                                            ({"mode": "VerifyIfGiven"}, "lost")])
def test_envoy_gateways_client_traffic_policy_is_read(certs: CertSet, client_validation: dict[str, Any],
                                                      verdict: str) -> None:
    docs = json.loads(json.dumps(translate(REF, certs).documents))
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    refs = gateway["spec"]["tls"].pop("frontend")["default"]["validation"]["caCertificateRefs"]
    docs.append({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "ClientTrafficPolicy",
                 "metadata": {"name": "mtls", "namespace": "default"},
                 "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": gateway["metadata"]["name"]}],
                          "tls": {"clientValidation": {"caCertificateRefs": refs, **client_validation}}}})
    row = next(p for p in translate(REF, certs, resources=docs).ledger if p.name == "client certificate required")
    assert row.verdict == verdict, row
    assert "ClientTrafficPolicy" in row.gateway


# -- a host ingress-nginx fails closed for its CA Secret: the migration keeps it closed ------------------------------
def _failing(certs: CertSet, **secret: Any) -> Topology:
    """The reference chain with its client-CA Secret as ``secret`` says (missing: another name)."""
    hop = REF.ingress
    if secret.pop("missing", False):
        return REF.with_ingress_annotations(auth_tls_secret="default/does-not-exist")
    secrets = tuple(dataclasses.replace(s, **secret) if s.name == "apim-client-ca" else s for s in hop.secrets)
    return dataclasses.replace(REF, ingress=dataclasses.replace(hop, secrets=secrets))


@pytest.mark.parametrize(("secret", "ref", "reason"), [
    ({"missing": True}, {"group": "", "kind": "ConfigMap", "name": "does-not-exist-ca"}, "InvalidCACertificateRef"),
    ({"malformed_ca": True}, {"group": "", "kind": "ConfigMap", "name": "apim-client-ca-ca"}, "NoValidCACertificate"),
    ({"namespace": "security"}, {"group": "", "kind": "ConfigMap", "name": "apim-client-ca-ca",
                                 "namespace": "security"}, "RefNotPermitted"),
])
def test_a_host_that_fails_closed_is_written_so_its_listener_fails_closed_too(
        certs: CertSet, secret: dict[str, Any], ref: dict[str, Any], reason: str) -> None:
    t = _failing(certs, **secret)
    if secret.get("namespace"):
        t = t.with_ingress_annotations(auth_tls_secret="security/apim-client-ca")
    translation = translate(t, certs)
    (gateway,) = _kind(translation.documents, "Gateway")
    assert gateway["spec"]["tls"]["frontend"]["default"]["validation"] == {"caCertificateRefs": [ref],
                                                                         "mode": "AllowValidOnly"}
    (closed,) = [p for p in translation.ledger if p.name == "a host with an unusable CA Secret fails closed"]
    assert closed.verdict == "changed"
    assert f"not programmed ({reason})" in closed.gateway
    assert "return 403" in closed.ingress
    assert "GatewayFrontendInvalidDefaultClientCertificateValidation" in closed.source
    cms = {d["metadata"]["name"]: d["data"]["ca.crt"] for d in _kind(translation.documents, "ConfigMap")}
    if secret.get("malformed_ca"):
        assert "BEGIN CERTIFICATE" in cms["apim-client-ca-ca"]  # the Secret's ca.crt as it is
    else:
        assert ref["name"] not in cms  # nothing to copy: the reference dangles, as the Secret does


def test_a_gateway_that_serves_a_fail_closed_host_loses_the_property(certs: CertSet) -> None:
    t = _failing(certs, missing=True)
    docs = [d for d in translate(t, certs).documents if d["kind"] != "ConfigMap"]
    for d in docs:
        d.get("spec", {}).pop("tls", None)  # a migration tool that drops auth-tls-*: the host is open
    (closed,) = [p for p in translate(t, certs, resources=docs).ledger
                 if p.name == "a host with an unusable CA Secret fails closed"]
    assert closed.verdict == "lost"


def test_a_reference_grant_lets_a_gateway_name_a_ca_in_another_namespace(certs: CertSet) -> None:
    from harness.render.gateway_api import Resources, ca_problem

    ca = certs.trust_bundle("apim-client-ca").read_bytes().decode()
    ref = {"kind": "ConfigMap", "name": "client-ca", "namespace": "security"}
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "client-ca", "namespace": "security"},
                 "data": {"ca.crt": ca}}
    grant = {"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
             "metadata": {"name": "gw-reads-ca", "namespace": "security"},
             "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "namespace": "default"}],
                      "to": [{"group": "", "kind": "ConfigMap"}]}}
    assert str(ca_problem(Resources.of([configmap]), [ref], "default")).startswith("RefNotPermitted")
    assert ca_problem(Resources.of([configmap, grant]), [ref], "default") is None
    assert str(ca_problem(Resources.of([configmap, grant]), [ref], "apps")).startswith("RefNotPermitted")
    assert str(ca_problem(Resources.of([]), [{"kind": "Service", "name": "x"}], "default")).startswith(
        "InvalidCACertificateKind")
    assert ca_problem(Resources.of([]), [], "default") == "InvalidCACertificateRef: no caCertificateRefs"


def test_a_backend_tls_policy_whose_ca_does_not_resolve_is_a_route_that_answers_500(certs: CertSet) -> None:
    docs = json.loads(json.dumps(translate(REF, certs).documents))
    policy = _kind(docs, "BackendTLSPolicy")[0]
    policy["spec"]["validation"]["caCertificateRefs"][0]["name"] = "not-there"
    (row,) = [p for p in translate(REF, certs, resources=docs).ledger if p.name == "the pod's certificate is verified"]
    assert row.verdict == "changed"
    assert "not accepted (InvalidCACertificateRef" in row.gateway
    assert "the route answers 500" in row.gateway
    assert "BackendTLSPolicyInvalidCACertificateRef" in row.source
