"""The rendered ingress stand-in, served by the real nginx in front of a real HTTPS upstream, probed over 127.0.0.1.

Expected answers come from ingress-nginx's docs and e2e suite (test/e2e/annotations/authtls.go) and from the
measured behaviour table in /work/shared/DESIGN.md, never from the renderer's output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness.model.topology import K8sSecret, Topology, default_topology
from harness.pki.certset import CertSet, LeafFiles
from harness.render.nginx import NginxConfig
from harness.runtime import ManagedProcess, free_port, wait_until
from harness.runtime.binaries import find_nginx
from harness.runtime.nginx import reload_nginx, render_ingress

HOST = "127.0.0.1"
INGRESS_HOST = "echo.aks.contoso.example"
POD_HOST = "echo.default.svc.cluster.local"


# ---------------------------------------------------------------------------------------------------------------
# a tiny HTTPS upstream (the pod), run in a thread
# ---------------------------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _UpstreamServer

    def do_GET(self) -> None:
        peer = self.connection.getpeercert(binary_form=True) if isinstance(self.connection, ssl.SSLSocket) else None
        seen = {"headers": {k.lower(): v for k, v in self.headers.items()},
                "peer_sha256": hashlib.sha256(peer).hexdigest() if peer else ""}
        self.server.requests.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _UpstreamServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ctx: ssl.SSLContext) -> None:
        super().__init__((HOST, 0), _Handler)
        self.ctx = ctx
        self.requests: list[dict[str, Any]] = []
        self.handshake_errors: list[str] = []

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:  # failed handshakes are expected in tests
        import sys

        self.handshake_errors.append(repr(sys.exc_info()[1]))


@contextlib.contextmanager
def https_upstream(leaf: LeafFiles, client_ca: Path | None = None) -> Iterator[_UpstreamServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf.chain, leaf.key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(client_ca)
    server = _UpstreamServer(ctx)
    thread = threading.Thread(target=server.serve_forever, name="https-upstream", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------------------------
# nginx and a client
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Ingress:
    config: NginxConfig
    proc: ManagedProcess
    port: int

    def error_log(self) -> str:
        return self.config.error_log.read_text(errors="replace") if self.config.error_log.exists() else ""


def _tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1):
        return True


@contextlib.contextmanager
def running_ingress(topology: Topology, certs: CertSet, workdir: Path, pod_port: int) -> Iterator[Ingress]:
    port = free_port()
    config = render_ingress(topology, certs, listen=(HOST, port), pod=(HOST, pod_port), workdir=workdir)
    with ManagedProcess("ingress", config.argv(find_nginx()), log_path=workdir / "nginx.out") as proc:
        wait_until(lambda: _tcp_open(port), f"nginx on {HOST}:{port}", timeout=10,
                   alive=proc.exit_reason, log_tail=proc.log_tail)
        yield Ingress(config, proc, port)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    peer_sha256: str
    version: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


def request(
    port: int,
    certs: CertSet,
    *,
    client: LeafFiles | None = None,
    sni: str = INGRESS_HOST,
    trust: Path | None = None,
    tls: ssl.TLSVersion | None = None,
    path: str = "/",
    headers: Mapping[str, str] | None = None,
) -> Response:
    """One HTTPS request to 127.0.0.1:port with SNI/Host ``sni``, trusting the ingress CA (or ``trust``)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(trust or certs.trust_bundle("ingress-ca"))
    if tls is not None:
        ctx.minimum_version = ctx.maximum_version = tls
    if client is not None:
        ctx.load_cert_chain(client.chain, client.key)
    raw = socket.create_connection((HOST, port), timeout=10)
    sock = ctx.wrap_socket(raw, server_hostname=sni)
    peer = sock.getpeercert(binary_form=True) or b""
    version = sock.version() or ""
    conn = http.client.HTTPConnection(sni, timeout=10)
    conn.sock = sock
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        body = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body,
                        hashlib.sha256(peer).hexdigest(), version)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(mtls_cert_set: CertSet) -> CertSet:
    return mtls_cert_set


@pytest.fixture
def topology() -> Topology:
    return default_topology()


@pytest.fixture
def pod(certs: CertSet) -> Iterator[_UpstreamServer]:
    with https_upstream(certs.leaf("pod-server"), certs.trust_bundle("pod-ca")) as server:
        yield server


def _serve(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> contextlib.AbstractContextManager[Ingress]:
    return running_ingress(topology, certs, tmp_path / "ingress", pod.server_address[1])


# ---------------------------------------------------------------------------------------------------------------
# client certificates (auth-tls-*)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tls", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLSv1.2", "TLSv1.3"])
def test_ingress_answers_400_no_required_certificate_without_client_cert(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer, tls: ssl.TLSVersion
) -> None:
    with _serve(topology, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, tls=tls)
    assert resp.status == 400, resp.body
    assert b"No required SSL certificate was sent" in resp.body
    assert pod.requests == []


@pytest.mark.parametrize("fault", ["unknown-ca", "expired"])
def test_ingress_answers_400_certificate_error_and_logs_it_at_info(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer, fault: str
) -> None:
    with _serve(topology, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.fault(fault, "apim-client"))
        log = ing.error_log()
    assert resp.status == 400, resp.body
    assert b"The SSL certificate error" in resp.body
    reason = {"unknown-ca": "(21:unable to verify the first certificate)", "expired": "(10:certificate has expired)"}
    lines = [line for line in log.splitlines() if "client SSL certificate verify error" in line]
    assert lines, log[-2000:]
    assert "[info]" in lines[-1]
    assert reason[fault] in lines[-1]
    assert pod.requests == []


def test_valid_client_cert_reaches_the_pod_with_ingress_nginx_ssl_client_headers(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    apim = certs.leaf("apim-client")
    with _serve(topology, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=apim, tls=ssl.TLSVersion.TLSv1_3)
    assert resp.status == 200, resp.body
    seen = resp.json()["headers"]
    assert seen["ssl-client-verify"] == "SUCCESS"
    assert seen["ssl-client-subject-dn"] == apim.subject
    assert seen["ssl-client-issuer-dn"] == apim.issuer
    # auth-tls-pass-certificate-to-upstream: the URL-encoded PEM (ingress-nginx e2e authtls.go, docs example)
    assert seen["ssl-client-cert"].startswith("-----BEGIN%20CERTIFICATE-----%0A")
    # the ingress presented its proxy-ssl-secret client cert to the pod (the pod saw the ingress-client leaf)
    assert resp.json()["peer_sha256"] == certs.leaf("ingress-client").fingerprint_sha256


def test_ingress_trace_header_reports_its_tls_session_and_passes_earlier_hops_through(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    from harness.model.wire import parse_headers

    apim = certs.leaf("apim-client")
    earlier = {"x-mtls-trace-gateway": "tls=TLSv1.3; cipher=X; sni=api; peer_sha256=; peer_subject=; "
                                       "peer_issuer=; verify=NONE",
               "x-mtls-trace-apim": "tls=TLSv1.2; cipher=Y; sni=apim; peer_sha256=ab; peer_subject=CN=c; "
                                    "peer_issuer=CN=i; verify=SUCCESS",
               "x-mtls-trace-ingress": "spoofed"}
    with _serve(topology, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=apim, tls=ssl.TLSVersion.TLSv1_2, headers=earlier)
    seen = resp.json()["headers"]
    assert seen["x-mtls-trace-gateway"] == earlier["x-mtls-trace-gateway"]
    assert seen["x-mtls-trace-apim"] == earlier["x-mtls-trace-apim"]
    entry = parse_headers(seen)["ingress"]
    assert entry["tls"] == "TLSv1.2"
    assert entry["cipher"]
    assert entry["sni"] == INGRESS_HOST
    assert entry["peer_subject"] == apim.subject
    assert entry["peer_issuer"] == apim.issuer
    assert entry["verify"] == "SUCCESS"
    assert "spoofed" not in seen["x-mtls-trace-ingress"]


def test_verify_client_optional_lets_a_request_without_cert_through_with_verify_none(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    variant = topology.with_ingress_annotations(auth_tls_verify_client="optional")
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs)
    assert resp.status == 200, resp.body
    assert resp.json()["headers"]["ssl-client-verify"] == "NONE"


def test_verify_client_off_does_not_ask_for_a_cert(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    variant = topology.with_ingress_annotations(auth_tls_verify_client="off")
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.fault("unknown-ca", "apim-client"))
    assert resp.status == 200, resp.body


def test_error_page_turns_the_400_into_a_302_to_the_page(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    page = "http://errors.contoso.example/client-cert"
    variant = topology.with_ingress_annotations(auth_tls_error_page=page)
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs)
    assert resp.status == 302
    assert resp.headers["location"] == page


def test_match_cn_not_matching_the_subject_is_403(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    variant = topology.with_ingress_annotations(auth_tls_match_cn="CN=notgonnamatch")
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
    assert resp.status == 403
    assert pod.requests == []


def test_match_cn_is_unanchored_so_cn_apim_admits_cn_apim_client(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    assert certs.leaf("apim-client").subject.startswith("CN=apim-client,")
    variant = topology.with_ingress_annotations(auth_tls_match_cn="CN=apim")
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
    assert resp.status == 200, resp.body


@pytest.mark.parametrize(("depth", "fault", "status"), [
    (None, "intermediate-issued", 200),
    ("1", "too-deep", 400),
    ("2", "too-deep", 200),
])
def test_verify_depth_counts_the_intermediates_between_client_cert_and_trusted_root(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer, depth: str | None, fault: str,
    status: int,
) -> None:
    """OpenSSL >= 1.1 (SSL_CTX_set_verify(3)): depth N allows the leaf, N intermediates and the trust anchor. So
    ingress-nginx's default depth 1 admits a cert from one intermediate; two intermediates need depth 2. (With
    OpenSSL 1.0.x depth counted the anchor too, hence the old reports that depth 1 rejects intermediates.)"""
    variant = topology.with_ingress_annotations(auth_tls_verify_depth=depth)
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.fault(fault, "apim-client"))
        log = ing.error_log()
    assert resp.status == status, resp.body
    if status == 400:
        assert b"The SSL certificate error" in resp.body
        assert "client SSL certificate verify error: (20:unable to get local issuer certificate)" in log


def test_a_crl_in_the_ca_secret_rejects_a_revoked_client_cert(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    hop = topology.ingress
    secrets = tuple(dataclasses.replace(s, crl="apim-client-ca") if s.name == "apim-client-ca" else s
                    for s in hop.secrets)
    variant = topology.replace(ingress=dataclasses.replace(hop, secrets=secrets))
    with _serve(variant, certs, tmp_path, pod) as ing:
        revoked = request(ing.port, certs, client=certs.fault("revoked", "apim-client"))
        good = request(ing.port, certs, client=certs.leaf("apim-client"))
        log = ing.error_log()
    assert revoked.status == 400
    assert b"The SSL certificate error" in revoked.body
    assert "certificate revoked" in log
    assert good.status == 200, good.body


@pytest.mark.parametrize("problem", ["missing", "malformed", "cross-namespace"])
def test_an_unusable_ca_secret_fails_the_host_closed_with_403(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer, problem: str
) -> None:
    hop = topology.ingress
    if problem == "missing":
        variant = topology.with_ingress_annotations(auth_tls_secret="default/no-such-secret")
    elif problem == "malformed":
        secrets = tuple(dataclasses.replace(s, malformed_ca=True) if s.name == "apim-client-ca" else s
                        for s in hop.secrets)
        variant = topology.replace(ingress=dataclasses.replace(hop, secrets=secrets))
    else:
        moved = (*hop.secrets, K8sSecret("apim-client-ca", namespace="security", ca=("apim-client-ca",)))
        variant = topology.replace(ingress=dataclasses.replace(hop, secrets=moved)).with_ingress_annotations(
            auth_tls_secret="security/apim-client-ca")
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
    assert resp.status == 403
    assert pod.requests == []


def test_auth_tls_applies_to_every_ingress_on_the_host(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    # ingress-nginx #3964: a second Ingress for /healthz without auth-tls annotations still demands a client cert
    primary = topology.ingress.primary
    health = dataclasses.replace(primary, name="health", path="/healthz").with_annotations(
        auth_tls_secret=None, auth_tls_verify_client=None, auth_tls_verify_depth=None,
        auth_tls_pass_certificate_to_upstream=None)
    variant = topology.replace(ingress=dataclasses.replace(topology.ingress, ingresses=(primary, health)))
    with _serve(variant, certs, tmp_path, pod) as ing:
        no_cert = request(ing.port, certs, path="/healthz")
        with_cert = request(ing.port, certs, path="/healthz", client=certs.leaf("apim-client"))
    assert no_cert.status == 400
    assert b"No required SSL certificate was sent" in no_cert.body
    assert with_cert.status == 200, with_cert.body


def test_an_unknown_sni_gets_the_controllers_fake_certificate_and_404(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    with _serve(topology, certs, tmp_path, pod) as ing:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection((HOST, ing.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="other.contoso.example") as sock:
            der = sock.getpeercert(binary_form=True)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: other.contoso.example\r\nConnection: close\r\n\r\n")
            answer = sock.recv(200)
    from cryptography import x509

    assert der is not None
    cn = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    assert "CN=Kubernetes Ingress Controller Fake Certificate" in cn
    assert answer.startswith(b"HTTP/1.1 404")


# ---------------------------------------------------------------------------------------------------------------
# the backend (backend-protocol HTTPS + proxy-ssl-*)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("fault", "log_text"), [
    ("unknown-ca", "upstream SSL certificate verify error"),
    ("wrong-san", "does not match"),
])
def test_a_backend_cert_nginx_cannot_verify_is_a_502(
    topology: Topology, certs: CertSet, tmp_path: Path, fault: str, log_text: str
) -> None:
    with https_upstream(certs.fault(fault, "pod-server")) as bad_pod, \
            _serve(topology, certs, tmp_path, bad_pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
        log = ing.error_log()
    assert resp.status == 502
    assert log_text in log, log[-2000:]
    assert bad_pod.requests == []


def test_proxy_ssl_verify_without_proxy_ssl_name_checks_the_name_upstream_balancer(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    # ingress-nginx #4928: 502, "upstream SSL certificate does not match "upstream_balancer""
    variant = topology.with_ingress_annotations(proxy_ssl_name=None)
    with _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
        log = ing.error_log()
    assert resp.status == 502
    assert 'upstream SSL certificate does not match "upstream_balancer"' in log, log[-2000:]


def test_proxy_ssl_verify_does_nothing_when_the_secret_has_no_ca(
    topology: Topology, certs: CertSet, tmp_path: Path
) -> None:
    # ingress-nginx #4503: proxy-ssl-verify "on" with a proxy-ssl-secret lacking ca.crt verifies nothing
    hop = topology.ingress
    secrets = tuple(dataclasses.replace(s, ca=()) if s.name == "pod-tls-client" else s for s in hop.secrets)
    variant = topology.replace(ingress=dataclasses.replace(hop, secrets=secrets))
    with https_upstream(certs.fault("unknown-ca", "pod-server")) as untrusted_pod, \
            _serve(variant, certs, tmp_path, untrusted_pod) as ing:
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
    assert resp.status == 200, resp.body
    assert resp.json()["peer_sha256"] == ""  # and no client cert was presented to the pod either


# ---------------------------------------------------------------------------------------------------------------
# hot reload and passthrough
# ---------------------------------------------------------------------------------------------------------------
def test_sighup_after_re_rendering_swaps_the_served_certificate(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    hop = topology.ingress
    with _serve(topology, certs, tmp_path, pod) as ing:
        before = request(ing.port, certs, client=certs.leaf("apim-client"))
        swapped = tuple(dataclasses.replace(s, tls="pod-server") if s.name == "ingress-tls" else s
                        for s in hop.secrets)
        variant = topology.replace(ingress=dataclasses.replace(hop, secrets=swapped))
        render_ingress(variant, certs, listen=(HOST, ing.port), pod=(HOST, pod.server_address[1]),
                     workdir=ing.config.prefix)
        reload_nginx(ing.config, ing.proc.pid)
        after = request(ing.port, certs, client=certs.leaf("apim-client"), trust=certs.trust_bundle("pod-ca"))
        assert ing.proc.exit_reason() is None
    assert before.peer_sha256 == certs.leaf("ingress-server").fingerprint_sha256
    assert after.peer_sha256 == certs.leaf("pod-server").fingerprint_sha256
    assert after.status == 200, after.body


def test_a_reload_nginx_refuses_raises_and_the_old_config_keeps_serving(
    topology: Topology, certs: CertSet, tmp_path: Path, pod: _UpstreamServer
) -> None:
    from harness.errors import StartError

    with _serve(topology, certs, tmp_path, pod) as ing:
        ing.config.conf_path.write_text(ing.config.conf_path.read_text().replace("ssl_verify_depth", "ssl_verify_dept"))
        with pytest.raises(StartError, match="ssl_verify_dept"):
            reload_nginx(ing.config, ing.proc.pid)
        resp = request(ing.port, certs, client=certs.leaf("apim-client"))
        assert ing.proc.exit_reason() is None
    assert resp.status == 200, resp.body


def test_ssl_passthrough_hands_the_tls_session_to_the_pod_untouched(
    topology: Topology, certs: CertSet, tmp_path: Path
) -> None:
    variant = topology.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True)
    apim = certs.leaf("apim-client")
    # behind passthrough the pod itself verifies APIM's client cert
    with https_upstream(certs.leaf("pod-server"), certs.trust_bundle("apim-client-ca")) as pod, \
            _serve(variant, certs, tmp_path, pod) as ing:
        resp = request(ing.port, certs, client=apim, trust=certs.trust_bundle("pod-ca"))
    assert resp.status == 200, resp.body
    assert resp.peer_sha256 == certs.leaf("pod-server").fingerprint_sha256  # the pod's cert, not the ingress's
    seen = resp.json()
    assert seen["peer_sha256"] == apim.fingerprint_sha256  # the pod's own handshake saw APIM's cert
    assert "ssl-client-verify" not in seen["headers"]  # nginx did not terminate TLS
    assert "x-mtls-trace-ingress" not in seen["headers"]
