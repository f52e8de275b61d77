"""The Gateway API ingress run for real (issue 20): the resources `mtls-harness migrate` writes for the reference chain,
rendered as Envoy Gateway configures its data plane (harness.render.envoy_gateway), real Envoy in front of the real echo
pod. What the migration ledger says changes is what the running Gateway does: a refused client certificate is a TLS
alert, not ingress-nginx's 400 page; AllowInsecureFallback lets a request without one through; no BackendTLSPolicy
means plain HTTP to the pod."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.model.topology import default_topology
from harness.pki.certset import CertSet, cert_set_for
from harness.probe.handshake import probe
from harness.probe.result import ProbeResult
from harness.render.envoy_gateway import render_envoy_gateway
from harness.render.gateway_api import translate
from harness.runtime import ManagedProcess, free_ports, port_open, wait_until
from harness.runtime.binaries import find_envoy

pytestmark = pytest.mark.mtls_needs_chain

REF = default_topology()
HOST = "127.0.0.1"
INGRESS_HOST = "echo.aks.contoso.example"


@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(REF.pki)


@pytest.fixture
def gateway(certs: CertSet, tmp_path: Path) -> Iterator[Callable[..., Callable[..., ProbeResult]]]:
    """``gateway(documents, pod_cert=…)`` starts the echo pod and Envoy as the Gateway API data plane; returns a
    probe of the Gateway as APIM calls it (SNI the ingress host, APIM's client certificate unless overridden)."""
    procs: list[ManagedProcess] = []

    def start(documents: list[dict[str, Any]], pod_cert: str = "pod-server") -> Callable[..., ProbeResult]:
        pod_port, listen, admin = free_ports(3, HOST)
        leaf = certs.leaf(pod_cert)
        pod = ManagedProcess("pod", [sys.executable, "-m", "harness.pod.echo", "--listen", f"{HOST}:{pod_port}",
                                     "--cert", str(leaf.chain), "--key", str(leaf.key), "--client-auth", "required",
                                     "--client-ca", str(certs.trust_bundle("pod-ca"))],
                             log_path=tmp_path / "pod.log")
        config = render_envoy_gateway(documents, secrets={"ingress-tls": certs.leaf("ingress-server"),
                                                          "pod-tls-client": certs.leaf("ingress-client")},
                                      listen=(HOST, listen), admin=(HOST, admin), upstreams={"echo": (HOST, pod_port)},
                                      workdir=tmp_path / "gateway-api")
        envoy = ManagedProcess("ingress", config.argv(find_envoy()), log_path=tmp_path / "envoy.log")
        for proc in (pod, envoy):
            procs.append(proc)
            proc.start()
        wait_until(lambda: port_open(HOST, pod_port) and port_open(HOST, listen), "pod and Gateway API Envoy",
                   timeout=20, alive=lambda: pod.exit_reason() or envoy.exit_reason(), log_tail=envoy.log_tail)
        apim = certs.leaf("apim-client")

        def call(**overrides: Any) -> ProbeResult:
            kwargs: dict[str, Any] = {"server_name": INGRESS_HOST, "trust": certs.trust_bundle("ingress-ca"),
                                      "client_cert": apim.chain, "client_key": apim.key} | overrides
            return probe(HOST, listen, **kwargs)

        return call

    yield start
    for proc in reversed(procs):
        proc.stop()


def _written(certs: CertSet, change: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    docs = json.loads(json.dumps(translate(REF, certs).documents))
    if change is not None:
        change(docs)
    return docs


def test_a_valid_client_reaches_the_pod_which_sees_the_gateways_client_certificate(gateway: Any,
                                                                                   certs: CertSet) -> None:
    call = gateway(_written(certs))
    seen = call()
    assert seen.outcome.kind == "ok", seen.describe()
    peer = (seen.json() or {}).get("peer") or {}
    # spec.tls.backend.clientCertificateRef: the pod (client-auth required, pod-ca) saw the ingress's client cert
    assert "CN=ingress-nginx" in json.dumps(peer), peer


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_a_missing_client_certificate_is_a_tls_alert_not_a_page(gateway: Any, certs: CertSet, version: str) -> None:
    call = gateway(_written(certs))
    seen = call(client_cert=None, client_key=None, max_version=version)
    assert seen.outcome.kind == "tls_alert", seen.describe()  # ingress-nginx answered 400 "No required SSL certificate"
    assert seen.status is None


def test_a_client_certificate_of_another_ca_is_a_tls_alert(gateway: Any, certs: CertSet) -> None:
    consumer = certs.leaf("consumer-client")
    seen = gateway(_written(certs))(client_cert=consumer.chain, client_key=consumer.key)
    assert seen.outcome.kind == "tls_alert", seen.describe()
    assert "unknown_ca" in (seen.outcome.alert or ""), seen.describe()


def test_allow_insecure_fallback_lets_a_request_without_a_certificate_through(gateway: Any, certs: CertSet) -> None:
    def fallback(docs: list[dict[str, Any]]) -> None:
        gw = next(d for d in docs if d["kind"] == "Gateway")
        gw["spec"]["tls"]["frontend"]["default"]["validation"]["mode"] = "AllowInsecureFallback"

    seen = gateway(_written(certs, fallback))(client_cert=None, client_key=None)
    assert seen.outcome.kind == "ok", seen.describe()


def test_without_a_backend_tls_policy_the_gateway_speaks_plain_http_to_the_pod(gateway: Any, certs: CertSet,
                                                                               tmp_path: Path) -> None:
    def no_policy(docs: list[dict[str, Any]]) -> None:
        docs[:] = [d for d in docs if d["kind"] != "BackendTLSPolicy"]

    seen = gateway(_written(certs, no_policy))()
    assert seen.outcome.kind == "upstream_failure", seen.describe()  # the HTTPS pod cannot read plain HTTP
    assert seen.status == 503, seen.describe()
    pod_log = (tmp_path / "pod.log").read_text()
    assert "handshake failed" in pod_log, pod_log  # the pod saw bytes that are not a TLS ClientHello


def test_the_pods_certificate_is_checked_against_the_policy(gateway: Any, certs: CertSet, tmp_path: Path) -> None:
    seen = gateway(_written(certs), pod_cert="pod-server~unknown-ca")()
    assert seen.outcome.kind == "upstream_failure", seen.describe()
    assert seen.status == 503, seen.describe()
    log = (tmp_path / "gateway-api" / "ingress-access.log")
    text = ""
    for _ in range(20):  # the access log is flushed every 500 ms
        text = log.read_text() if log.is_file() else ""
        if "CERTIFICATE_VERIFY_FAILED" in text:
            break
        time.sleep(0.1)
    assert "CERTIFICATE_VERIFY_FAILED" in text, text


def test_the_pods_certificate_must_name_the_policys_hostname(gateway: Any, certs: CertSet) -> None:
    # BackendTLSPolicy hostname: SNI and the name checked (Envoy Gateway: auto_sni_san_validation)
    seen = gateway(_written(certs), pod_cert="pod-server~wrong-san")()
    assert seen.outcome.kind == "upstream_failure", seen.describe()
    assert seen.status == 503, seen.describe()
