"""The App Gateway and APIM stand-ins, run for real: Envoy on 127.0.0.1 in front of a stdlib HTTPS upstream

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_envoy_standins.py."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.model.topology import Topology
from harness.model.wire import parse_entry
from harness.pki.certset import CertSet, Fault
from harness.runtime import free_port
from harness.runtime.envoy import rotate_envoy_secret
from tests.unit.test_envoy_standins import (
    NO_CERT_PAGE,
    Seen,
    Standin,
    _EchoServer,
    apim_backend,
    apim_seen,
    certs,
    get,
    https_upstream,
    ingress_backend,
    ingress_seen,
    running,
    strict_gateway,
    strict_topology,
    topology,
    validating_apim,
)


# ---------------------------------------------------------------------------------------------------------------
# App Gateway: mTLS Strict, WAF, trace, TLS versions
# ---------------------------------------------------------------------------------------------------------------
def test_strict_gateway_answers_400_when_client_sends_no_cert(strict_gateway: Standin) -> None:
    reply = get(strict_gateway)
    assert reply.status == 400, reply
    assert NO_CERT_PAGE in reply.body
    assert reply.headers["content-type"].startswith("text/html")


def test_gateway_sends_apim_hostname_as_sni_and_host_over_tls13(
        strict_gateway: Standin, certs: CertSet, strict_topology: Topology, apim_seen: list[Seen]) -> None:
    get(strict_gateway, cert=certs.leaf("consumer-client"))
    assert apim_seen[0].headers["host"] == strict_topology.gateway.upstream.hostname
    assert apim_seen[0].tls == "TLSv1.3"  # Envoy's upstream default maximum would have been TLS 1.2


# ---------------------------------------------------------------------------------------------------------------
# App Gateway: backend (apim) failures
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fault", "detail"), [("unknown-ca", "unable_to_get_local_issuer_certificate"),
                                               ("wrong-san", "SAN")])
def test_gateway_answers_502_page_when_apim_cert_fails_verification(
        topology: Topology, certs: CertSet, tmp_path: Path, fault: Fault, detail: str) -> None:
    with https_upstream(certs.fault(fault, "apim-server"), certs.trust_bundle("apim-client-ca")) as upstream, \
            running(topology, "gateway", certs, upstream.server_address[1], tmp_path) as gw:
        reply = get(gw)
    assert reply.status == 502, reply
    assert "502 Bad Gateway" in reply.body
    assert "TLS_error" in reply.headers["x-harness-detail"]
    assert detail in reply.headers["x-harness-detail"]
    assert upstream.seen == []


def test_gateway_answers_502_for_refused_connection_and_says_it_was_no_tls_error(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    with running(topology, "gateway", certs, free_port(), tmp_path) as gw:
        reply = get(gw)
    assert reply.status == 502, reply
    assert "502 Bad Gateway" in reply.body
    assert "Connection_refused" in reply.headers["x-harness-detail"]
    assert "TLS_error" not in reply.headers["x-harness-detail"]


def test_gateway_without_name_check_forwards_to_a_cert_for_another_host(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    t = topology.with_hop("gateway", upstream__verify_name=False)
    with https_upstream(certs.fault("wrong-san", "apim-server"), certs.trust_bundle("apim-client-ca")) as upstream, \
            running(t, "gateway", certs, upstream.server_address[1], tmp_path) as gw:
        assert get(gw).status == 200


def test_gateway_without_chain_check_forwards_to_an_untrusted_cert(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    t = topology.with_hop("gateway", upstream__verify_chain=False)
    with https_upstream(certs.fault("unknown-ca", "apim-server"), certs.trust_bundle("apim-client-ca")) as upstream, \
            running(t, "gateway", certs, upstream.server_address[1], tmp_path) as gw:
        assert get(gw).status == 200


# ---------------------------------------------------------------------------------------------------------------
# APIM: validate-client-certificate, backend failures, client cert upstream, trace
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("cert", "reason"), [(None, "ClientCertificateNotFound"),
                                              ("unknown-ca", "ClientCertificateNotTrusted"),
                                              ("self-signed", "ClientCertificateNotTrusted"),
                                              ("expired", "ClientCertificateExpired"),
                                              ("not-yet-valid", "ClientCertificateNotYetValid")])
def test_apim_policy_answers_401_json_with_reason(validating_apim: Standin, certs: CertSet, cert: Fault | None,
                                                  reason: str, ingress_seen: list[Seen]) -> None:
    leaf = certs.fault(cert, "consumer-client") if cert else None
    reply = get(validating_apim, cert=leaf)
    assert reply.status == 401, reply
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["statusCode"] == 401
    assert body["reason"] == reason
    assert ingress_seen == []


def test_apim_policy_without_negotiation_answers_401_even_to_a_good_cert(
        topology: Topology, certs: CertSet, ingress_backend: _EchoServer, tmp_path: Path) -> None:
    t = topology.with_hop("apim", negotiate_client_certificate=False, validate_client_certificate=True)
    with running(t, "apim", certs, ingress_backend.server_address[1], tmp_path) as apim:
        reply = get(apim, cert=certs.leaf("consumer-client"))
    assert reply.status == 401, reply
    assert reply.json()["reason"] == "ClientCertificateNotFound"


def test_apim_negotiation_without_policy_forwards_a_bad_cert_and_traces_the_failure(
        topology: Topology, certs: CertSet, ingress_backend: _EchoServer, ingress_seen: list[Seen],
        tmp_path: Path) -> None:
    t = topology.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=False)
    expired = certs.fault("expired", "consumer-client")
    with running(t, "apim", certs, ingress_backend.server_address[1], tmp_path) as apim:
        reply = get(apim, cert=expired)
    assert reply.status == 200, reply
    entry = parse_entry(ingress_seen[0].headers["x-mtls-trace-apim"])
    assert entry["verify"].startswith("FAILED:")
    assert "expired" in entry["verify"]
    assert entry["peer_sha256"] == expired.fingerprint_sha256


@pytest.mark.parametrize("fault", ["unknown-ca", "wrong-san", "refused"])
def test_apim_answers_500_backend_connection_failure_when_ingress_fails(
        topology: Topology, certs: CertSet, tmp_path: Path, fault: Fault | str) -> None:
    with contextlib.ExitStack() as stack:
        if fault == "refused":
            port = free_port()
        else:
            upstream = stack.enter_context(https_upstream(certs.fault(fault, "ingress-server"),  # type: ignore[arg-type]
                                                          certs.trust_bundle("apim-client-ca")))
            port = upstream.server_address[1]
        apim = stack.enter_context(running(topology, "apim", certs, port, tmp_path))
        reply = get(apim)
    assert reply.status == 500, reply
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert (body["statusCode"], body["reason"]) == (500, "BackendConnectionFailure")
    assert ("TLS_error" in reply.headers["x-harness-detail"]) == (fault != "refused")


# ---------------------------------------------------------------------------------------------------------------
# rotation through SDS files
# ---------------------------------------------------------------------------------------------------------------
def test_rotating_the_server_cert_changes_what_new_connections_see(
        topology: Topology, certs: CertSet, apim_backend: _EchoServer, tmp_path: Path) -> None:
    # the "wrong-san" variant of gateway-server is a cert the same root issued: clients still trust it
    nxt = certs.fault("wrong-san", "gateway-server")
    with running(topology, "gateway", certs, apim_backend.server_address[1], tmp_path) as gw:
        before = get(gw)
        rotate_envoy_secret(gw.config, "server", nxt)
        gw.hostname = "unrelated-host.contoso.example"  # the name the rotated cert carries
        after = get(gw)
    assert before.server_sha256 == certs.leaf("gateway-server").fingerprint_sha256
    assert after.server_sha256 == nxt.fingerprint_sha256
    assert after.status == 200


def test_rotating_the_upstream_trust_bundle_lets_the_gateway_trust_a_new_ca(
        topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    rogue = certs.fault("unknown-ca", "apim-server")
    rogue_ca = rogue.cert.parent / "ca.pem"  # the fault's own issuing root, stored beside it
    with https_upstream(rogue, certs.trust_bundle("apim-client-ca")) as upstream, \
            running(topology, "gateway", certs, upstream.server_address[1], tmp_path) as gw:
        first = get(gw)
        rotate_envoy_secret(gw.config, "upstream-ca", rogue_ca)
        second = get(gw)
    assert (first.status, second.status) == (502, 200)


def test_a_rejected_rotation_keeps_the_old_cert_in_service(
        topology: Topology, certs: CertSet, apim_backend: _EchoServer, tmp_path: Path) -> None:
    with running(topology, "gateway", certs, apim_backend.server_address[1], tmp_path) as gw:
        watched = gw.config.sds_path("server")
        in_use = watched.read_text()
        with pytest.raises(HarnessError, match="rejected"):
            rotate_envoy_secret(gw.config, "server", certs.fault("key-mismatch", "gateway-server"))
        reply = get(gw)
        assert watched.read_text() == in_use
    assert reply.server_sha256 == certs.leaf("gateway-server").fingerprint_sha256
