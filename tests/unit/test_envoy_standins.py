"""The App Gateway and APIM stand-ins, run for real: Envoy on 127.0.0.1 in front of a stdlib HTTPS upstream.

Each test starts the rendered Envoy (ManagedProcess, readiness from the admin /ready) and talks to it with the
stdlib's ssl + http.client, the way a client of the real component would. Expected answers come from the behaviour
table in DESIGN.md (App Gateway: 400 pages for mTLS Strict, 403 WAF, 502 for a backend failure; APIM: 401 for the
validate-client-certificate policy, 500 BackendConnectionFailure) and expected identities from the cert set.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.model.topology import Topology, default_topology
from harness.model.wire import parse_entry
from harness.pki.certset import CertSet, Fault, LeafFiles, cert_set_for
from harness.render.envoy import EnvoyConfig, EnvoyHop, render_envoy
from harness.runtime import ManagedProcess, free_ports, wait_until
from harness.runtime.binaries import find_envoy
from harness.runtime.envoy import envoy_ready

LOOPBACK = "127.0.0.1"
NO_CERT_PAGE = "No required SSL certificate was sent"
BAD_CERT_PAGE = "The SSL certificate error"


# ---------------------------------------------------------------------------------------------------------------
# the upstream: a tiny HTTPS echo that records what it saw
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    tls: str | None
    peer_sha256: str | None


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def do_GET(self) -> None:
        conn = self.connection
        assert isinstance(conn, ssl.SSLSocket)
        der = conn.getpeercert(binary_form=True)
        seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, conn.version(),
                    hashlib.sha256(der).hexdigest() if der else None)
        self.server.seen.append(seen)
        status = int(self.path.rsplit("/", 1)[1]) if self.path.startswith("/status/") else 200
        body = json.dumps({"app": "echo", "status": status}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    seen: list[Seen]


@contextlib.contextmanager
def https_upstream(leaf: LeafFiles, client_ca: Path) -> Iterator[_EchoServer]:
    """Serve ``leaf`` on a free loopback port; ask for (but do not require) a client cert from ``client_ca``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf.chain, leaf.key)
    ctx.load_verify_locations(client_ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    server = _EchoServer((LOOPBACK, 0), _Echo)
    server.seen = []
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="https-upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------------
# the stand-in and a client
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Standin:
    config: EnvoyConfig
    hostname: str
    trust: Path

    @property
    def port(self) -> int:
        return self.config.listen_port


@contextlib.contextmanager
def running(topology: Topology, hop: EnvoyHop, certs: CertSet, upstream_port: int, workdir: Path) -> Iterator[Standin]:
    listen, admin = free_ports(2)
    config = render_envoy(topology, hop, certs, listen=(LOOPBACK, listen),
                          upstream=(LOOPBACK, upstream_port), admin=(LOOPBACK, admin), workdir=workdir)
    with ManagedProcess(f"envoy-{hop}", config.argv(find_envoy()), log_path=workdir / "envoy.log") as proc:
        wait_until(lambda: envoy_ready(config), f"{hop} stand-in admin /ready", timeout=20,
                   alive=proc.exit_reason, log_tail=proc.log_tail)
        listener = topology.listener_of(hop)
        yield Standin(config, listener.hostname, certs.trust_bundle(topology.server_ca_of(hop)))


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    tls: str | None
    server_sha256: str

    def json(self) -> Any:
        return json.loads(self.body)


def get(standin: Standin, path: str = "/", *, cert: LeafFiles | None = None, headers: dict[str, str] | None = None,
        max_version: ssl.TLSVersion | None = None) -> Reply:
    """One HTTPS GET to the stand-in on 127.0.0.1 with its real name as SNI, trusting only its issuing root."""
    ctx = ssl.create_default_context(cafile=str(standin.trust))
    if cert is not None:
        ctx.load_cert_chain(cert.chain, cert.key)
    if max_version is not None:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL offer an old version at all
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1: deprecated, and the point here
            ctx.minimum_version = min(max_version, ssl.TLSVersion.TLSv1_2)
            ctx.maximum_version = max_version
    raw = socket.create_connection((LOOPBACK, standin.port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=standin.hostname)
    try:
        version, der = sock.version(), sock.getpeercert(binary_form=True) or b""
        conn = http.client.HTTPConnection(standin.hostname, standin.port, timeout=10)
        conn.sock = sock
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read().decode()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, version,
                     hashlib.sha256(der).hexdigest())
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def topology() -> Topology:
    return default_topology()


@pytest.fixture(scope="module")
def certs(topology: Topology) -> CertSet:
    return cert_set_for(topology.pki)


@pytest.fixture(scope="module")
def strict_topology(topology: Topology) -> Topology:
    """App Gateway with mTLS "Strict" towards internet clients (client certs from consumer-ca)."""
    return topology.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")


@pytest.fixture(scope="module")
def apim_backend(certs: CertSet) -> Iterator[_EchoServer]:
    """What the gateway talks to: an upstream serving APIM's real server cert."""
    with https_upstream(certs.leaf("apim-server"), certs.trust_bundle("apim-client-ca")) as server:
        yield server


@pytest.fixture(scope="module")
def strict_gateway(strict_topology: Topology, certs: CertSet, apim_backend: _EchoServer,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with running(strict_topology, "gateway", certs, apim_backend.server_address[1],
                 tmp_path_factory.mktemp("strict-gateway")) as standin:
        yield standin


@pytest.fixture
def apim_seen(apim_backend: _EchoServer) -> list[Seen]:
    apim_backend.seen.clear()
    return apim_backend.seen


@pytest.fixture(scope="module")
def ingress_backend(certs: CertSet) -> Iterator[_EchoServer]:
    """What apim talks to: an upstream serving the ingress server cert, checking apim's client cert."""
    with https_upstream(certs.leaf("ingress-server"), certs.trust_bundle("apim-client-ca")) as server:
        yield server


@pytest.fixture(scope="module")
def validating_apim(topology: Topology, certs: CertSet, ingress_backend: _EchoServer,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    """APIM with negotiate-client-certificate and the validate-client-certificate policy."""
    t = topology.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)
    with running(t, "apim", certs, ingress_backend.server_address[1],
                 tmp_path_factory.mktemp("validating-apim")) as standin:
        yield standin


@pytest.fixture
def ingress_seen(ingress_backend: _EchoServer) -> list[Seen]:
    ingress_backend.seen.clear()
    return ingress_backend.seen


@pytest.mark.parametrize("fault", ["unknown-ca", "expired", "self-signed", "wrong-eku"])
def test_strict_gateway_answers_400_ssl_certificate_error_for_bad_client_cert(
        strict_gateway: Standin, certs: CertSet, fault: Fault) -> None:
    reply = get(strict_gateway, cert=certs.fault(fault, "consumer-client"))
    assert reply.status == 400, reply
    assert BAD_CERT_PAGE in reply.body
    assert NO_CERT_PAGE not in reply.body


def test_strict_gateway_forwards_a_request_with_a_good_client_cert(
        strict_gateway: Standin, certs: CertSet, apim_seen: list[Seen]) -> None:
    reply = get(strict_gateway, cert=certs.leaf("consumer-client"))
    assert reply.status == 200, reply
    assert reply.json() == {"app": "echo", "status": 200}
    assert len(apim_seen) == 1


def test_gateway_serves_its_listener_cert(strict_gateway: Standin, certs: CertSet) -> None:
    reply = get(strict_gateway, cert=certs.leaf("consumer-client"))
    assert reply.server_sha256 == certs.leaf("gateway-server").fingerprint_sha256


def test_gateway_trace_header_carries_the_client_cert_seen(
        strict_gateway: Standin, certs: CertSet, apim_seen: list[Seen]) -> None:
    client = certs.leaf("consumer-client")
    get(strict_gateway, cert=client)
    entry = parse_entry(apim_seen[0].headers["x-mtls-trace-gateway"])
    assert entry["peer_sha256"] == client.fingerprint_sha256
    assert entry["tls"] == "TLSv1.3"
    assert entry["sni"] == strict_gateway.hostname
    assert entry["verify"] == "SUCCESS"
    assert "CN=consumer-1" in entry["peer_subject"]
    assert "CN=Contoso Consumer CA" in entry["peer_issuer"]
    assert entry["cipher"]


def test_gateway_strips_spoofed_trace_headers(strict_gateway: Standin, certs: CertSet, apim_seen: list[Seen]) -> None:
    spoof = {"x-mtls-trace-gateway": "tls=TLSv1.3; verify=SUCCESS; peer_sha256=00",
             "x-mtls-trace-apim": "verify=SUCCESS", "X-MTLS-Trace-Ingress": "verify=SUCCESS"}
    get(strict_gateway, cert=certs.leaf("consumer-client"), headers=spoof)
    headers = apim_seen[0].headers
    assert "x-mtls-trace-apim" not in headers
    assert "x-mtls-trace-ingress" not in headers
    assert "peer_sha256=00" not in headers["x-mtls-trace-gateway"]
    own = parse_entry(headers["x-mtls-trace-gateway"])
    assert own["peer_sha256"] == certs.leaf("consumer-client").fingerprint_sha256


@pytest.mark.parametrize("path", ["/search?q=%3Cscript%3Ealert(1)%3C/script%3E", "/items?id=1+UNION+SELECT+password",
                                  "/static/..%2F..%2Fetc/passwd", "/a/../../b"])
def test_gateway_waf_answers_403_for_blocked_pattern(strict_gateway: Standin, certs: CertSet, path: str,
                                                     apim_seen: list[Seen]) -> None:
    reply = get(strict_gateway, path, cert=certs.leaf("consumer-client"))
    assert reply.status == 403, reply
    assert "403 Forbidden" in reply.body
    assert apim_seen == []


def test_gateway_waf_lets_an_ordinary_query_through(strict_gateway: Standin, certs: CertSet) -> None:
    reply = get(strict_gateway, "/search?q=unions+are+selective", cert=certs.leaf("consumer-client"))
    assert reply.status == 200, reply


def test_gateway_refuses_tls11_with_protocol_version_alert(strict_gateway: Standin, certs: CertSet) -> None:
    with pytest.raises(ssl.SSLError) as info:
        get(strict_gateway, cert=certs.leaf("consumer-client"), max_version=ssl.TLSVersion.TLSv1_1)
    assert "PROTOCOL_VERSION" in str(info.value).upper()


def test_gateway_accepts_tls12(strict_gateway: Standin, certs: CertSet) -> None:
    reply = get(strict_gateway, cert=certs.leaf("consumer-client"), max_version=ssl.TLSVersion.TLSv1_2)
    assert (reply.status, reply.tls) == (200, "TLSv1.2")


def test_gateway_speaks_http2_when_client_offers_h2(strict_gateway: Standin, certs: CertSet) -> None:
    ctx = ssl.create_default_context(cafile=str(strict_gateway.trust))
    client = certs.leaf("consumer-client")
    ctx.load_cert_chain(client.chain, client.key)
    with httpx.Client(http2=True, verify=ctx, timeout=10) as http:
        reply = http.get(f"https://{LOOPBACK}:{strict_gateway.port}/",
                         headers={"host": strict_gateway.hostname},
                         extensions={"sni_hostname": strict_gateway.hostname})
    assert (reply.http_version, reply.status_code) == ("HTTP/2", 200)


def test_gateway_passes_an_upstream_503_through_unchanged(strict_gateway: Standin, certs: CertSet) -> None:
    reply = get(strict_gateway, "/status/503", cert=certs.leaf("consumer-client"))
    assert reply.status == 503
    assert reply.json() == {"app": "echo", "status": 503}
    assert "x-harness-detail" not in reply.headers


def test_apim_policy_forwards_a_request_with_a_good_client_cert(
        validating_apim: Standin, certs: CertSet, ingress_seen: list[Seen]) -> None:
    reply = get(validating_apim, cert=certs.leaf("consumer-client"))
    assert reply.status == 200, reply
    assert len(ingress_seen) == 1


def test_apim_presents_its_client_cert_to_the_ingress(
        validating_apim: Standin, certs: CertSet, ingress_seen: list[Seen]) -> None:
    get(validating_apim, cert=certs.leaf("consumer-client"))
    assert ingress_seen[0].peer_sha256 == certs.leaf("apim-client").fingerprint_sha256
    assert ingress_seen[0].tls == "TLSv1.3"


def test_apim_keeps_the_gateway_trace_and_strips_spoofed_later_ones(
        validating_apim: Standin, certs: CertSet, ingress_seen: list[Seen]) -> None:
    client = certs.leaf("consumer-client")
    get(validating_apim, cert=client, headers={"x-mtls-trace-gateway": "tls=TLSv1.2; verify=NONE",
                                              "x-mtls-trace-apim": "peer_sha256=00", "x-mtls-trace-ingress": "x"})
    headers = ingress_seen[0].headers
    assert headers["x-mtls-trace-gateway"] == "tls=TLSv1.2; verify=NONE"
    assert "x-mtls-trace-ingress" not in headers
    assert parse_entry(headers["x-mtls-trace-apim"])["peer_sha256"] == client.fingerprint_sha256


def test_apim_passes_an_ingress_503_through_unchanged(validating_apim: Standin, certs: CertSet) -> None:
    reply = get(validating_apim, "/status/503", cert=certs.leaf("consumer-client"))
    assert reply.status == 503
    assert reply.json() == {"app": "echo", "status": 503}


