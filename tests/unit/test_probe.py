"""The probe against real TLS servers on 127.0.0.1: stdlib ssl servers (HTTP/1.1, and HTTP/2 with h2) in threads.

Expected values come from the cert set (harness.pki.certset) and from what OpenSSL servers really do, never from the
probe.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from cryptography.hazmat.primitives import serialization

from harness.errors import HarnessError, InputError, UsageError
from harness.model.topology import POD_HOST, default_pki_plan
from harness.pki.certset import CertSet, LeafFiles, cert_set_for
from harness.probe.handshake import probe
from harness.probe.outcomes import (
    http_reject,
    ok,
    protocol_error,
    server_untrusted,
    tls_alert,
    unreachable,
    upstream_failure,
)
from harness.probe.result import ProbeResult
from harness.runtime import free_port

Responder = Callable[[bytes], bytes]  # request bytes → raw response bytes


def _ok_response(request: bytes) -> bytes:
    body = json.dumps({"request_line": request.split(b"\r\n", 1)[0].decode()}).encode()
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class TLSServer:
    """A stdlib TLS server in a thread: one connection at a time, reads one request, writes ``respond(request)``.

    ``close_at_once``: on a failed handshake close the socket immediately (what a busy proxy does), which can turn the
    TLS 1.3 post-handshake alert into a reset if the client has already sent its request.
    """

    def __init__(self, ctx: ssl.SSLContext | None, respond: Responder = _ok_response, *,
                 close_at_once: bool = False, h2: bool = False, handshake: bool = True, read_after: int = 0) -> None:
        self.ctx, self.respond, self.close_at_once, self.h2, self.handshake = ctx, respond, close_at_once, h2, handshake
        self.read_after = read_after  # bytes read (and dropped) after answering, before closing
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.server_errors: list[str] = []
        self.sessions_reused: list[bool] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TLSServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self.listener.close()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                self._serve(conn)
            except (OSError, ssl.SSLError) as exc:
                self.server_errors.append(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}")
            finally:
                conn.close()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        if not self.handshake:  # accept and say nothing (a hung server)
            self._stop.wait(2)
            return
        if self.ctx is None:  # plain HTTP
            conn.recv(65536)
            conn.sendall(self.respond(b""))
            return
        if self.close_at_once:
            tls = self.ctx.wrap_socket(conn, server_side=True)  # a failed handshake closes the socket right away
        else:
            tls = self.ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        self.sessions_reused.append(tls.session_reused)
        with tls:
            if self.h2:
                _serve_h2(tls)
                return
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = tls.recv(65536)
                if not chunk:
                    return
                request += chunk
            tls.sendall(self.respond(request))
            dropped = 0
            while dropped < self.read_after:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                dropped += len(chunk)


def _serve_h2(tls: ssl.SSLSocket) -> None:
    """A minimal HTTP/2 server: answers each stream with JSON naming the method, path and body length it got."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    # a small stream window: a client that missed this SETTINGS frame overruns it and the server fails the stream
    conn.local_settings = h2.settings.Settings(client=False, initial_values={
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4096})
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    requests: dict[int, dict[str, object]] = {}
    while True:
        data = tls.recv(65536)
        if not data:
            return
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.RequestReceived):
                requests[ev.stream_id] = {"headers": dict(ev.headers), "length": 0}
            elif isinstance(ev, h2.events.DataReceived):
                requests[ev.stream_id]["length"] += len(ev.data)  # type: ignore[operator]
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                req = requests[ev.stream_id]
                hdrs = req["headers"]
                assert isinstance(hdrs, dict)
                body = json.dumps({"method": hdrs[":method"], "path": hdrs[":path"],
                                   "authority": hdrs[":authority"], "body_length": req["length"]}).encode()
                conn.send_headers(ev.stream_id, [(":status", "201"), ("content-type", "application/json"),
                                                 ("content-length", str(len(body)))])
                conn.send_data(ev.stream_id, body, end_stream=True)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                return
        tls.sendall(conn.data_to_send())


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(default_pki_plan())


def server_context(certs: CertSet, leaf: LeafFiles | None = None, *, client_ca: str | None = None,
                   min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
                   max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    leaf = leaf or certs.leaf("pod-server")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf.chain, leaf.key)
    ctx.minimum_version, ctx.maximum_version = min_version, max_version
    if client_ca:
        ctx.load_verify_locations(certs.trust_bundle(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@pytest.fixture
def tls_server(certs: CertSet) -> Iterator[Callable[..., TLSServer]]:
    started: list[TLSServer] = []

    def start(ctx: ssl.SSLContext | None = None, respond: Responder = _ok_response, **kw: Any) -> TLSServer:
        srv = TLSServer(server_context(certs) if ctx is None else ctx, respond, **kw)
        started.append(srv.__enter__())
        return srv

    yield start
    for srv in started:
        srv.__exit__()


def pod_probe(certs: CertSet, port: int, **kw: object) -> ProbeResult:
    args: dict[str, object] = {"server_name": POD_HOST, "trust": certs.trust_bundle("pod-ca")}
    args.update(kw)
    return probe("127.0.0.1", port, **args)  # type: ignore[arg-type]


def identity(leaf: LeafFiles) -> dict[str, Path]:
    return {"client_cert": leaf.chain, "client_key": leaf.key}


# ---------------------------------------------------------------------------------------------------------------
# success
# ---------------------------------------------------------------------------------------------------------------
def test_probe_completes_handshake_and_request_and_reports_the_served_chain(certs, tls_server) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, path="/hello?x=1")
    served = certs.leaf("pod-server")
    assert ok(200).matches(result.outcome), result.describe()
    assert result.tls_version == "TLSv1.3"
    assert result.cipher
    assert result.alpn is None
    assert result.peer_chain[0].sha256 == served.fingerprint_sha256, result.describe()
    assert result.peer_chain[0].subject == served.subject
    assert f"DNS:{POD_HOST}" in result.peer_chain[0].sans
    assert result.json() == {"request_line": "GET /hello?x=1 HTTP/1.1"}


def test_probe_negotiates_tls12_when_capped(certs, tls_server) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, max_version="1.2")
    assert ok(200).matches(result.outcome), result.describe()
    assert result.tls_version == "TLSv1.2"


def test_probe_sends_host_header_with_port_and_caller_headers(certs, tls_server) -> None:
    seen: list[bytes] = []

    def record(request: bytes) -> bytes:
        seen.append(request)
        return _ok_response(request)

    srv = tls_server(respond=record)
    result = pod_probe(certs, srv.port, method="POST", body=b"abc", headers={"X-Test": "1"})
    assert ok(200).matches(result.outcome), result.describe()
    head = seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"POST / HTTP/1.1"
    assert f"Host: {POD_HOST}:{srv.port}".encode() in head
    assert b"X-Test: 1" in head
    assert b"Content-Length: 3" in head
    assert b"Connection: close" in head


@pytest.mark.parametrize(("raw", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
     b"hello world"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b"hello"),
    (b"HTTP/1.0 200 OK\r\n\r\nto the end", b"to the end"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
], ids=["chunked", "content-length", "until-close", "after-100-continue"])
def test_probe_reads_the_whole_http11_body(certs, tls_server, raw: bytes, body: bytes) -> None:
    srv = tls_server(respond=lambda _req: raw)
    result = pod_probe(certs, srv.port)
    assert (result.outcome, result.body) == (ok(200), body), result.describe()


@pytest.mark.parametrize("tickets", [2, 0], ids=["tickets", "no-tickets-settings-first"])
def test_probe_speaks_http2_when_alpn_picks_h2_and_respects_flow_control(certs, tls_server, tickets) -> None:
    # without session tickets the server's SETTINGS frame is the first record after the handshake: the probe
    # reads it while waiting for the TLS 1.3 verdict and must hand it to the HTTP/2 state machine
    ctx = server_context(certs, alpn=("h2", "http/1.1"))
    ctx.num_tickets = tickets
    srv = tls_server(ctx, h2=True)
    big = b"x" * 200_000  # larger than HTTP/2's initial 65535-byte window: needs WINDOW_UPDATEs
    result = pod_probe(certs, srv.port, alpn=("h2", "http/1.1"), method="PUT", path="/up", body=big)
    assert result.alpn == "h2", result.describe()
    assert ok(201).matches(result.outcome), result.describe()
    assert result.headers["content-type"] == "application/json"
    assert result.json() == {"method": "PUT", "path": "/up", "authority": f"{POD_HOST}:{srv.port}",
                             "body_length": len(big)}


# ---------------------------------------------------------------------------------------------------------------
# our side refuses the server
# ---------------------------------------------------------------------------------------------------------------
def test_probe_refuses_server_cert_from_unknown_ca_and_still_reports_its_chain(certs, tls_server) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, trust=certs.trust_bundle("apim-ca"))
    assert server_untrusted("unable to get local issuer certificate").matches(result.outcome), result.describe()
    assert result.peer_chain[0].sha256 == certs.leaf("pod-server").fingerprint_sha256


def test_probe_refuses_server_cert_for_another_name(certs, tls_server) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, server_name="other.contoso.example")
    assert server_untrusted("Hostname mismatch").matches(result.outcome), result.describe()
    assert result.peer_chain[0].sha256 == certs.leaf("pod-server").fingerprint_sha256


def test_probe_refuses_expired_server_cert_and_reports_the_expired_leaf(certs, tls_server) -> None:
    expired = certs.fault("expired", like="pod-server")
    srv = tls_server(server_context(certs, expired))
    result = pod_probe(certs, srv.port)
    assert server_untrusted("certificate has expired").matches(result.outcome), result.describe()
    assert result.peer_chain[0].sha256 == expired.fingerprint_sha256


def test_probe_without_verification_accepts_any_server_cert(certs, tls_server) -> None:
    srv = tls_server(server_context(certs, certs.fault("expired", like="pod-server")))
    result = pod_probe(certs, srv.port, verify=False, trust=None)
    assert ok(200).matches(result.outcome), result.describe()


# ---------------------------------------------------------------------------------------------------------------
# the server refuses us
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "alert"), [("1.3", "certificate_required"), ("1.2", "handshake_failure")])
def test_server_requiring_client_cert_alerts_when_none_is_sent(certs, tls_server, version, alert) -> None:
    srv = tls_server(server_context(certs, client_ca="pod-ca"))
    result = pod_probe(certs, srv.port, min_version=version, max_version=version)
    assert tls_alert(alert).matches(result.outcome), result.describe()
    assert result.peer_chain, "the server's chain is reported even though the server refused us"


@pytest.mark.parametrize("version", ["1.3", "1.2"])
@pytest.mark.parametrize(("fault", "alert"), [("unknown-ca", "unknown_ca"), ("expired", "certificate_expired")])
def test_server_alerts_on_a_bad_client_cert(certs, tls_server, version, fault, alert) -> None:
    srv = tls_server(server_context(certs, client_ca="pod-ca"))
    bad = certs.fault(fault, like="ingress-client")
    result = pod_probe(certs, srv.port, min_version=version, max_version=version, **identity(bad))
    assert tls_alert(alert).matches(result.outcome), result.describe()


def test_server_accepts_the_right_client_cert(certs, tls_server) -> None:
    srv = tls_server(server_context(certs, client_ca="pod-ca"))
    result = pod_probe(certs, srv.port, **identity(certs.leaf("ingress-client")))
    assert ok(200).matches(result.outcome), result.describe()


def test_tls13_client_cert_alert_is_not_lost_when_the_server_closes_at_once(certs, tls_server) -> None:
    # without waiting for the server's verdict before sending, a few in a hundred of these end in a bare EOF
    srv = tls_server(server_context(certs, client_ca="pod-ca"), close_at_once=True)
    outcomes = [pod_probe(certs, srv.port).outcome for _ in range(100)]
    assert outcomes == [tls_alert("certificate_required")] * 100, {str(o) for o in outcomes}


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_server_with_tls12_floor_refuses_older_versions_with_protocol_version(certs, tls_server, version) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, min_version=version, max_version=version)
    assert tls_alert("protocol_version").matches(result.outcome), result.describe()
    assert result.peer_chain == ()


def test_probe_reports_connection_refused_as_unreachable(certs) -> None:
    port = free_port()  # reserved for us, nobody listens on it
    result = pod_probe(certs, port)
    assert unreachable("refused").matches(result.outcome), result.describe()
    assert result.tls_version is None
    assert result.peer_chain == ()


def test_probe_reports_a_server_that_never_handshakes_as_protocol_error(certs, tls_server) -> None:
    srv = tls_server(handshake=False)
    result = pod_probe(certs, srv.port, timeout=0.5)
    assert protocol_error("timed out during the TLS handshake").matches(result.outcome), result.describe()


def test_plaintext_request_to_a_tls_port_is_a_protocol_error(certs, tls_server) -> None:
    srv = tls_server()
    result = pod_probe(certs, srv.port, plaintext=True)
    assert result.outcome.kind == "protocol_error", result.describe()


def test_tls_handshake_with_a_plaintext_http_port_is_a_protocol_error(certs, tls_server) -> None:
    srv = TLSServer(None, lambda _req: b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with srv:
        result = pod_probe(certs, srv.port)
    assert protocol_error("WRONG_VERSION_NUMBER").matches(result.outcome), result.describe()


def test_plaintext_probe_of_a_plain_http_server_is_classified_as_http(certs) -> None:
    with TLSServer(None, lambda _req: b"HTTP/1.1 204 No Content\r\n\r\n") as srv:
        result = pod_probe(certs, srv.port, plaintext=True)
    assert ok(204).matches(result.outcome), result.describe()


# ---------------------------------------------------------------------------------------------------------------
# HTTP answers → outcomes (pages as the real components write them; see DESIGN.md's behaviour table)
# ---------------------------------------------------------------------------------------------------------------
def _page(status: str, sentence: str | None) -> bytes:
    code = status.split(maxsplit=1)[0]
    title = f"{code} {sentence}" if sentence else status
    body = (f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{status}</h1></center>\r\n"
            + (f"<center>{sentence}</center>\r\n" if sentence else "")
            + "<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n").encode()
    return b"HTTP/1.1 %s\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (status.encode(), len(body),
                                                                                         body)


def _raw(status: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers).encode()
    return b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (status.encode(), extra, len(body), body)


@pytest.mark.parametrize(("response", "expected"), [
    (_page("400 Bad Request", "No required SSL certificate was sent"),
     http_reject(400, "No required SSL certificate was sent")),
    (_page("400 Bad Request", "The SSL certificate error"), http_reject(400, "The SSL certificate error")),
    (_raw("403 Forbidden", b"client certificate unauthorized"), http_reject(403, "client certificate unauthorized")),
    (_raw("401 Unauthorized", b'{"statusCode": 401, "message": "Invalid client certificate."}',
          "Content-Type: application/json"), http_reject(401, "Invalid client certificate.")),
    (_page("502 Bad Gateway", None), upstream_failure(502)),
    (_page("504 Gateway Time-out", None), upstream_failure(504)),
    (_raw("500 Internal Server Error", b'{"statusCode": 500, "message": "BackendConnectionFailure: the remote '
          b'certificate was rejected"}', "Content-Type: application/json"),
     upstream_failure(500, "remote certificate")),
    (_raw("503 Service Unavailable", b"upstream connect error or disconnect/reset before headers. reset reason: "
          b"connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:"
          b"CERTIFICATE_VERIFY_FAILED"), upstream_failure(503, "upstream connect error")),
    (_raw("500 Internal Server Error", b'{"statusCode": 500, "message": "Internal server error"}',
          "x-harness-detail: upstream_reset_before_response_started{connection_failure,TLS_error:268435581}"),
     upstream_failure(500, "TLS_error")),
    (_raw("503 Service Unavailable", b'{"app": "down for maintenance"}', "x-harness-detail: via_upstream"),
     http_reject(503)),
    (_raw("302 Found", b"", "Location: https://errors.contoso.example/"), ok(302)),
], ids=["nginx-no-cert", "nginx-cert-error", "nginx-match-cn", "apim-401", "bad-gateway", "gateway-timeout",
        "apim-backend-failure", "envoy-upstream-tls", "detail-header-tls-error", "app-own-503", "error-page-redirect"])
def test_http_answers_map_to_outcomes(certs, tls_server, response: bytes, expected) -> None:
    srv = tls_server(respond=lambda _req: response)
    result = pod_probe(certs, srv.port)
    assert expected.matches(result.outcome), f"expected {expected}, saw {result.describe()}"


# ---------------------------------------------------------------------------------------------------------------
# bad input and secrets
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "fragment"), [
    ({"min_version": "1.4"}, "min_version"),
    ({"min_version": "1.3", "max_version": "1.2"}, "swap"),
    ({"trust": Path("/nonexistent/bundle.pem")}, "does not exist"),
    ({"client_key": Path("/nonexistent/key.pem")}, "without client_cert"),
    ({"path": "no-slash"}, "path"),
    ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "CR/LF"),
    ({"timeout": 0}, "timeout"),
], ids=["bad-version", "min-above-max", "missing-trust", "key-without-cert", "bad-path", "header-injection",
        "zero-timeout"])
def test_bad_probe_arguments_raise_one_clear_usage_error(certs, kw, fragment) -> None:
    with pytest.raises(UsageError, match=fragment):
        pod_probe(certs, 443, **kw)


def test_client_cert_not_matching_its_key_is_an_input_error(certs) -> None:
    with pytest.raises(InputError, match="matching"):
        pod_probe(certs, 443, client_cert=certs.leaf("ingress-client").chain,
                  client_key=certs.leaf("apim-client").key)


def test_encrypted_client_key_is_an_input_error_not_a_prompt(certs, tmp_path) -> None:
    leaf = certs.leaf("ingress-client")
    key = serialization.load_pem_private_key(leaf.key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(InputError) as info:
        pod_probe(certs, 443, client_cert=leaf.chain, client_key=encrypted)
    assert "PRIVATE KEY" not in str(info.value)
    assert "secret" not in str(info.value)


def test_results_never_carry_the_client_key(certs, tls_server) -> None:
    leaf = certs.leaf("ingress-client")
    srv = tls_server(server_context(certs, client_ca="pod-ca"))
    result = pod_probe(certs, srv.port, **identity(leaf))
    assert ok(200).matches(result.outcome), result.describe()
    text = result.describe() + json.dumps(result.as_dict())
    assert str(leaf.chain) in text  # the certificate presented is named ...
    assert str(leaf.key) not in text
    assert "PRIVATE KEY" not in text


def test_probe_reads_an_answer_the_server_sent_before_taking_the_whole_body(certs, tls_server) -> None:
    # the server answers after the headers and closes with most of the body unread (as a proxy does with a 413):
    # it reads 1 MiB more first, so its answer has left before its close turns into a reset (a close with unread
    # data discards whatever the server's kernel has not sent yet; that loss no client can undo)
    srv = tls_server(respond=lambda _req: _raw("413 Payload Too Large", b"too large", "Connection: close"),
                     read_after=1024 * 1024)
    result = pod_probe(certs, srv.port, method="POST", body=b"x" * (4 * 1024 * 1024))
    assert http_reject(413, "too large").matches(result.outcome), result.describe()


def test_every_probe_is_a_full_handshake(certs, tls_server) -> None:
    srv = tls_server(server_context(certs, client_ca="pod-ca"))
    for _ in range(3):
        assert ok(200).matches(pod_probe(certs, srv.port, **identity(certs.leaf("ingress-client"))).outcome)
    assert srv.sessions_reused == [False, False, False]


def test_probe_sees_a_trust_bundle_replaced_on_disk(certs, tls_server, tmp_path) -> None:
    # the probe reuses TLS contexts while their files are unchanged; a rotated bundle must take effect at once
    srv = tls_server()
    bundle = tmp_path / "trust.pem"
    bundle.write_bytes(certs.trust_bundle("apim-ca").read_bytes())
    assert pod_probe(certs, srv.port, trust=bundle).outcome.kind == "server_untrusted"
    staged = tmp_path / "trust.pem.new"
    staged.write_bytes(certs.trust_bundle("pod-ca").read_bytes())
    staged.replace(bundle)  # renamed into place, as a rotation does
    assert ok(200).matches(pod_probe(certs, srv.port, trust=bundle).outcome)
    bundle.write_bytes(certs.trust_bundle("apim-ca").read_bytes() + b"\n")  # rewritten in place
    assert pod_probe(certs, srv.port, trust=bundle).outcome.kind == "server_untrusted"


def test_json_of_a_non_json_body_is_a_harness_error_naming_what_was_seen(certs, tls_server) -> None:
    srv = tls_server(respond=lambda _req: _raw("200 OK", b"plain text"))
    result = pod_probe(certs, srv.port)
    with pytest.raises(HarnessError, match="not JSON") as info:
        result.json()
    assert "ok(200)" in str(info.value)
