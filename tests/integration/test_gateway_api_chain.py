"""The chain with a Gateway API ingress (issue 20): the reference chain's Ingresses migrated and served by real Envoy
as Envoy Gateway configures it, between the real APIM stand-in and the real echo pod, on the local target. What each
refusal looks like there is measured here (the alerts and Envoy's own words below are what the catalogue's Envoy
Gateway expectations in harness/cases/gateway_api.py cite)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import run_case
from harness.model.topology import default_topology
from harness.probe.result import ProbeResult
from harness.targets.base import RunningChain
from harness.targets.local import LocalTarget

pytestmark = pytest.mark.mtls_needs_chain

GATEWAY_API = default_topology().on_gateway_api()


@pytest.fixture(scope="module")
def chain() -> Iterator[RunningChain]:
    with LocalTarget(GATEWAY_API) as running:
        yield running


def _at_ingress(chain: RunningChain, identity: str | None, version: str = "1.3") -> tuple[ProbeResult, str]:
    """A probe of the ingress as APIM calls it, with ``identity`` (None: no certificate), and what the ingress's own
    log said meanwhile."""
    kwargs: dict[str, Any] = {"client_cert": None, "client_key": None}
    if identity is not None:
        leaf = chain.certs.leaf(identity)
        kwargs = {"client_cert": leaf.chain, "client_key": leaf.key}
    mark = chain.evidence_mark()
    seen = chain.probe("ingress", min_version=version, max_version=version, **kwargs)
    for _ in range(20):
        log = chain.evidence_since(mark).get("ingress", "")
        if "TLS_error" in log or seen.outcome.kind == "ok":
            break
        time.sleep(0.05)
    return seen, log


def test_a_request_crosses_the_chain_and_the_gateway_records_apims_verified_certificate(chain: RunningChain) -> None:
    seen = chain.probe("gateway")
    assert seen.outcome.kind == "ok", seen.describe()
    trace = (seen.json() or {})["trace"]
    assert trace["ingress"]["verify"] == "SUCCESS"
    assert trace["ingress"]["peer_subject"] == "CN=apim-client,O=Contoso"
    assert trace["ingress"]["sni"] == "echo.aks.contoso.example"
    assert trace["pod"]["peer_subject"] == "CN=ingress-nginx,O=Contoso"  # the Gateway's clientCertificateRef


@pytest.mark.parametrize(("identity", "version", "alert", "words"), [
    (None, "1.2", "handshake_failure", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    (None, "1.3", "certificate_required", "PEER_DID_NOT_RETURN_A_CERTIFICATE"),
    ("apim-client~unknown-ca", "1.3", "unknown_ca", "unable to get local issuer certificate"),
    ("apim-client~self-signed", "1.3", "unknown_ca", "unable to get local issuer certificate"),
    ("apim-client~expired", "1.2", "certificate_expired", "certificate has expired"),
    ("apim-client~not-yet-valid", "1.3", "certificate_expired", "certificate is not yet valid"),
    ("apim-client~wrong-eku", "1.3", "unsupported_certificate", "unsupported certificate purpose"),
])
def test_a_refused_client_certificate_is_a_tls_alert_with_envoys_reason_in_its_log(
        chain: RunningChain, identity: str | None, version: str, alert: str, words: str) -> None:
    seen, log = _at_ingress(chain, identity, version)
    assert (seen.outcome.kind, seen.outcome.alert) == ("tls_alert", alert), seen.describe()
    assert words in log, log[-2000:]


def test_what_gateway_api_cannot_express_gets_through(chain: RunningChain) -> None:
    """Two intermediates deep: ingress-nginx's depth 1 refuses it; the Gateway has no depth field."""
    seen, _ = _at_ingress(chain, "apim-client~too-deep")
    assert seen.outcome.kind == "ok", seen.describe()


def test_the_catalogue_judges_the_gateway_by_its_own_expectation_with_cause_and_hop(chain: RunningChain) -> None:
    case = next(c for c in CATALOGUE if c.id == "ingress-rejects-client-cert-expired-tls1.3")
    result = run_case(case, chain, lambda t: pytest.fail("no variant"))
    assert result.verdict == "passed", result.message
    assert (result.seen.outcome.kind, result.seen.outcome.hop, result.seen.outcome.cause) == \
        ("tls_alert", "ingress", "expired")
    assert "verify cert failed" in result.message  # the evidence line is Envoy's own
    deep = next(c for c in CATALOGUE if c.id == "ingress-rejects-client-cert-too-deep-tls1.3")
    result = run_case(deep, chain, lambda t: pytest.fail("no variant"))
    assert result.verdict == "finding", result.message
    assert result.finding is not None
    assert result.finding.id == "ingress-verify-depth-fits-the-pki@ingress"


def test_a_gateway_that_does_not_require_a_certificate_fails_the_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weakened twin (the renderer losing require_client_certificate) is caught: the missing-certificate case
    fails instead of passing."""
    import harness.render.envoy_gateway as eg

    real = eg._downstream

    def weakened(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = real(*args, **kwargs)
        out["typed_config"]["require_client_certificate"] = False
        return out

    monkeypatch.setattr(eg, "_downstream", weakened)
    case = next(c for c in CATALOGUE if c.id == "ingress-rejects-missing-client-cert-tls1.3")
    with LocalTarget(GATEWAY_API) as weak:
        result = run_case(case, weak, lambda t: pytest.fail("no variant"))
    assert result.verdict == "failed", result.message


def test_variants_are_listeners_of_the_one_gateway_envoy() -> None:
    """The optional variant (AllowInsecureFallback) and a pod-certificate variant are lanes of the same Envoy: no
    second ingress process, and each behaves as its own resources say."""
    optional = GATEWAY_API.with_ingress_annotations(auth_tls_verify_client="optional")
    pod = GATEWAY_API.pod
    bad_pod = dataclasses.replace(GATEWAY_API, pod=dataclasses.replace(
        pod, listener=dataclasses.replace(pod.listener, server_cert="pod-server~unknown-ca")))
    with LocalTarget(GATEWAY_API, lanes=[optional, bad_pod]) as running:
        assert running.layout["lanes"] == 2
        assert running.layout["ingress_processes"] == {}
        lax = running.lanes[next(k for k, v in running.lanes.items() if v.topology == optional)]
        seen = lax.probe("ingress", client_cert=None, client_key=None)
        assert seen.outcome.kind == "ok", seen.describe()
        seen = running.probe("ingress", client_cert=None, client_key=None)
        assert seen.outcome.kind == "tls_alert", seen.describe()
        refusing = running.lanes[next(k for k, v in running.lanes.items() if v.topology == bad_pod)]
        seen = refusing.probe("gateway")
        assert (seen.outcome.kind, seen.status) == ("upstream_failure", 503), seen.describe()


def test_application_gateway_for_containers_runs_its_own_policies_for_real() -> None:
    """The AGC twin: the FrontendTLSPolicy's CA Secret checks APIM's certificate, the alb BackendTLSPolicy presents its
    client certificate to the pod and checks the pod's (a pod of an unknown CA is refused)."""
    agc = default_topology().on_gateway_api("agc")
    pod = agc.pod
    bad_pod = dataclasses.replace(agc, pod=dataclasses.replace(
        pod, listener=dataclasses.replace(pod.listener, server_cert="pod-server~unknown-ca")))
    with LocalTarget(agc, lanes=[bad_pod]) as running:
        seen = running.probe("gateway")
        assert seen.outcome.kind == "ok", seen.describe()
        assert (seen.json() or {})["trace"]["pod"]["peer_subject"] == "CN=ingress-nginx,O=Contoso"
        missing = running.probe("ingress", client_cert=None, client_key=None)
        assert (missing.outcome.kind, missing.outcome.alert) == ("tls_alert", "certificate_required")
        refusing = running.lanes[next(k for k, v in running.lanes.items() if v.topology == bad_pod)]
        seen = refusing.probe("gateway")
        assert (seen.outcome.kind, seen.status) == ("upstream_failure", 503), seen.describe()


def test_a_listener_with_an_invalid_ca_reference_is_left_out_and_the_case_names_why() -> None:
    """The migrated Gateway of a host ingress-nginx fails closed (its CA Secret is missing) has a listener whose
    caCertificateRef does not resolve: Envoy Gateway leaves it out of the data plane, so its port refuses the
    connection, and the ingress's listener state says why. The chain's own listener, in the same Envoy, still serves."""
    case = next(c for c in CATALOGUE if c.id == "ingress-fails-closed-without-ca-secret")
    missing = GATEWAY_API.with_ingress_annotations(auth_tls_secret="default/does-not-exist")
    with LocalTarget(GATEWAY_API, lanes=[missing]) as running:
        (lane,) = running.lanes.values()
        seen = lane.probe("ingress")
        assert (seen.outcome.kind, seen.phase) == ("unreachable", "connect"), seen.describe()
        assert running.probe("gateway").outcome.kind == "ok"
        state = running.evidence_since(running.evidence_mark())["ingress-status"]
        port = lane.endpoint("ingress").port
        assert f":{port} listener https-1 (echo.aks.contoso.example): Programmed=False InvalidCACertificateRef" \
            in state, state
        assert f":{running.endpoint('ingress').port} listener https-1 (echo.aks.contoso.example): Programmed=True" \
            in state, state
        result = run_case(case, running, lambda t: lane)
    assert result.verdict == "passed", result.message
    assert (result.seen.outcome.hop, result.seen.outcome.cause) == ("ingress", "invalid-ca-ref")
    assert "listener state" in result.message


def test_your_own_gateway_api_resources_are_served_as_you_wrote_them_and_the_catalogue_judges_them() -> None:
    """The chain's ingress serving YOUR resources: here the migration weakened to AllowInsecureFallback. A request
    without a client certificate now gets through, and the catalogue's missing-certificate case fails on it — what
    migrate --resources --catalogue reports as lost."""
    import json

    from harness.pki.certset import cert_set_for
    from harness.render.gateway_api import translate

    docs = json.loads(json.dumps(translate(GATEWAY_API, cert_set_for(GATEWAY_API.pki)).documents))
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    gateway["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] = "AllowInsecureFallback"
    yours = GATEWAY_API.with_gateway_api_manifests(docs, "weakened.yaml")
    case = next(c for c in CATALOGUE if c.id == "ingress-rejects-missing-client-cert-tls1.3")
    with LocalTarget(yours) as running:
        seen, _ = _at_ingress(running, None)
        assert seen.outcome.kind == "ok", seen.describe()
        assert (seen.json() or {})["trace"]["ingress"]["verify"] == "NONE"
        result = run_case(case, running, lambda t: pytest.fail("no variant"))
    assert result.verdict == "failed", result.message
    assert "tls_alert(certificate_required)" in result.message


@pytest.mark.parametrize("mode", ["RequireAndVerify", "Request"])
def test_envoy_gateways_client_traffic_policy_is_served_as_its_mode_says(mode: str) -> None:
    """Envoy Gateway's own way of asking for client certificates (ClientTrafficPolicy tls.clientValidation, for
    Gateways without spec.tls.frontend): RequireAndVerify refuses a request without a certificate in the handshake,
    Request lets it through unverified (envoyproxy/gateway d32f282942 api/v1alpha1/tls_types.go 190-275,
    internal/gatewayapi/helpers.go 605-622)."""
    import json

    from harness.pki.certset import cert_set_for
    from harness.render.gateway_api import translate

    docs = json.loads(json.dumps(translate(GATEWAY_API, cert_set_for(GATEWAY_API.pki)).documents))
    gateway = next(d for d in docs if d["kind"] == "Gateway")
    validation = gateway["spec"]["tls"].pop("frontend")["default"]["validation"]
    docs.append({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "ClientTrafficPolicy",
                 "metadata": {"name": "echo-mtls", "namespace": "default"},
                 "spec": {"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                          "name": gateway["metadata"]["name"]}],
                          "tls": {"clientValidation": {"caCertificateRefs": validation["caCertificateRefs"],
                                                       "mode": mode}}}})
    with LocalTarget(GATEWAY_API.with_gateway_api_manifests(docs, "client-traffic-policy.yaml")) as running:
        seen, log = _at_ingress(running, None)
        if mode == "RequireAndVerify":
            assert (seen.outcome.kind, seen.outcome.alert) == ("tls_alert", "certificate_required"), seen.describe()
            assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log, log[-2000:]
        else:
            assert seen.outcome.kind == "ok", seen.describe()
        trusted, _ = _at_ingress(running, "apim-client")
        assert (trusted.json() or {})["trace"]["ingress"]["verify"] == "SUCCESS", trusted.describe()


def test_a_backend_tls_policy_whose_ca_does_not_resolve_makes_its_route_answer_500() -> None:
    """YOUR BackendTLSPolicy naming a CA ConfigMap that is not there: Envoy Gateway marks the route's backend invalid
    and answers 500 itself (route.go 380-397; conformance BackendTLSPolicyInvalidCACertificateRef asks for a 5xx) —
    the request never reaches the pod, and the 500 is attributed to the ingress with the listener state's reason."""
    import json

    from harness.cases.evidence import attribute
    from harness.pki.certset import cert_set_for
    from harness.render.gateway_api import translate

    docs = json.loads(json.dumps(translate(GATEWAY_API, cert_set_for(GATEWAY_API.pki)).documents))
    policy = next(d for d in docs if d["kind"] == "BackendTLSPolicy")
    policy["spec"]["validation"]["caCertificateRefs"][0]["name"] = "not-there"
    with LocalTarget(GATEWAY_API.with_gateway_api_manifests(docs, "broken-policy.yaml")) as running:
        mark = running.evidence_mark()
        seen = running.probe("gateway")
        assert seen.status == 500, seen.describe()
        assert seen.body == b""  # Envoy's own direct response, not the pod's JSON
        found = None
        for _ in range(40):  # Envoy flushes its access log every 100 ms
            found = attribute(seen.outcome, running.evidence_since(mark), terminator="gateway", headers=seen.headers,
                              page=None)
            if found.outcome.cause is not None:
                break
            time.sleep(0.05)
        assert found is not None
        assert (found.outcome.hop, found.outcome.cause) == ("ingress", "invalid-ca-ref"), found.evidence
        assert "InvalidCACertificateRef: ConfigMap 'not-there' not found" in found.evidence
