"""The echo pod as a real subprocess (python -m harness.pod.echo), probed over real TLS on 127.0.0.1

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_echo_pod.py."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
from typing import Any

import pytest

from harness.model.topology import POD_HOST
from harness.model.wire import FIELDS, POD_FIELDS
from harness.probe.outcomes import ok
from harness.runtime import free_port, wait_until
from tests.unit.test_echo_pod import _argv, call, certs, pod, start_pod


# ---------------------------------------------------------------------------------------------------------------
# what the pod echoes
# ---------------------------------------------------------------------------------------------------------------
def test_pod_echoes_request_its_tls_session_and_the_client_cert_it_verified(certs, pod) -> None:
    client = certs.leaf("ingress-client")
    result = call(certs, pod[1], client, path="/api/items?id=7", headers={"X-Request-Id": "r-1"})
    assert ok(200).matches(result.outcome), result.describe()
    doc = result.json()
    assert (doc["hop"], doc["method"], doc["path"]) == ("pod", "GET", "/api/items?id=7")
    assert doc["tls"] == {"version": result.tls_version, "cipher": result.cipher, "sni": POD_HOST,
                          "alpn": "http/1.1"}
    assert doc["peer"] == {"subject": client.subject, "issuer": client.issuer,
                           "sha256": client.fingerprint_sha256, "serial": client.serial}
    assert doc["headers"]["x-request-id"] == "r-1"
    assert doc["headers"]["host"] == f"{POD_HOST}:{pod[1]}"
    assert doc["trace"]["pod"] == {"tls": result.tls_version, "cipher": result.cipher, "sni": POD_HOST,
                                   "peer_sha256": client.fingerprint_sha256, "peer_subject": client.subject,
                                   "peer_issuer": client.issuer, "verify": "SUCCESS",
                                   "connection": doc["trace"]["pod"]["connection"], "connection_requests": "1",
                                   "session_reused": "false"}
    assert list(doc["trace"]["pod"]) == [*FIELDS, *POD_FIELDS]
    assert result.peer_chain[0].sha256 == certs.leaf("pod-server").fingerprint_sha256


def test_pod_with_optional_client_auth_accepts_no_cert_and_says_so(certs, start_pod) -> None:
    _, port = start_pod("optional")
    result = call(certs, port)
    assert ok(200).matches(result.outcome), result.describe()
    doc = result.json()
    assert doc["peer"] is None
    assert (doc["trace"]["pod"]["verify"], doc["trace"]["pod"]["peer_sha256"]) == ("NONE", "")


def test_pod_capped_at_tls12_negotiates_tls12(certs, start_pod) -> None:
    _, port = start_pod("none", "--max-version", "1.2")
    result = call(certs, port)
    assert ok(200).matches(result.outcome), result.describe()
    assert result.tls_version == "TLSv1.2"
    assert result.json()["tls"]["version"] == "TLSv1.2"


# ---------------------------------------------------------------------------------------------------------------
# process behaviour
# ---------------------------------------------------------------------------------------------------------------
def test_pod_logs_one_line_per_request_and_per_failed_handshake_without_key_material(certs, start_pod) -> None:
    proc, port = start_pod("required")
    call(certs, port, certs.leaf("ingress-client"), path="/logged")
    call(certs, port)  # no client cert: a failed handshake
    wait_until(lambda: "handshake failed" in proc.log_tail(50), "the pod's log line for the failed handshake",
               timeout=5, log_tail=proc.log_tail)
    log = proc.log_path.read_text()
    request_lines = [line for line in log.splitlines() if '"GET /logged HTTP/1.1" 200' in line]
    assert len(request_lines) == 1, log
    assert f"peer={certs.leaf('ingress-client').fingerprint_sha256[:16]}" in request_lines[0]
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log
    key_body = certs.leaf("pod-server").key.read_text().splitlines()[1]
    assert "PRIVATE KEY" not in log
    assert key_body not in log


def test_pod_stops_on_sigterm_with_exit_code_0(certs, start_pod) -> None:
    proc, port = start_pod("none")
    assert ok(200).matches(call(certs, port).outcome)
    assert proc.proc is not None
    proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=10) == 0, proc.log_tail()
    assert "stopping on SIGTERM" in proc.log_tail()


def test_pod_ready_file_names_the_port_it_bound(certs, start_pod) -> None:
    _, port = start_pod("none")  # asked for port 0
    assert port != 0
    assert ok(200).matches(call(certs, port).outcome)


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda a: [*a[:a.index("--cert") + 1], "/nonexistent/chain.pem", *a[a.index("--cert") + 2:]], "--cert"),
    (lambda a: [*a, "--client-auth", "required"], "--client-ca"),
    (lambda a: [*a[:a.index("--key") + 1], a[a.index("--cert") + 1], *a[a.index("--key") + 2:]], "unusable"),
], ids=["missing-cert", "required-without-ca", "key-is-not-a-key"])
def test_pod_bad_arguments_exit_2_with_one_line(certs, tmp_path, change, fragment) -> None:
    argv = change(_argv(certs, f"127.0.0.1:{free_port()}", "none", tmp_path / "ready"))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert fragment in lines[0], out.stderr
    assert not (tmp_path / "ready").exists()


# ---------------------------------------------------------------------------------------------------------------
# the connection a request came on (docs/fidelity.md row 9: keep-alive and resumption seen from the pod)
# ---------------------------------------------------------------------------------------------------------------
def _raw_get(sock: ssl.SSLSocket, path: str) -> tuple[dict[str, str], dict[str, Any]]:
    """One HTTP/1.1 GET on an open TLS socket: the response headers (lower-case) and the pod's JSON."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {POD_HOST}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the pod closed the connection before answering {path}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in head.decode().split("\r\n")[1:])}
    while len(body) < int(headers["content-length"]):
        body += sock.recv(65536)
    return headers, json.loads(body)


def _client_context(certs) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.trust_bundle("pod-ca")))
    client = certs.leaf("ingress-client")
    ctx.load_cert_chain(str(client.chain), str(client.key))
    return ctx


def _tls_client(certs, port: int, session: ssl.SSLSession | None = None,
                ctx: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    ctx = ctx or _client_context(certs)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=POD_HOST, session=session)


def test_pod_reports_the_connection_and_the_requests_on_it(certs, pod) -> None:
    with _tls_client(certs, pod[1]) as sock:
        first = _raw_get(sock, "/")[1]["trace"]["pod"]
        second = _raw_get(sock, "/")[1]["trace"]["pod"]
    with _tls_client(certs, pod[1]) as sock:
        other = _raw_get(sock, "/")[1]["trace"]["pod"]
    assert (first["connection_requests"], second["connection_requests"]) == ("1", "2")
    assert first["connection"] == second["connection"] != other["connection"]
    assert other["connection_requests"] == "1"


def test_pod_reports_a_resumed_tls_session(certs, pod) -> None:
    # the client offers the session of its first connection: the pod's OpenSSL resumes it, and says so
    ctx = _client_context(certs)
    with _tls_client(certs, pod[1], ctx=ctx) as sock:
        fresh = _raw_get(sock, "/")[1]["trace"]["pod"]
        session = sock.session
    assert session is not None
    with _tls_client(certs, pod[1], session=session, ctx=ctx) as sock:
        resumed = _raw_get(sock, "/")[1]["trace"]["pod"]
        assert sock.session_reused
    assert (fresh["session_reused"], resumed["session_reused"]) == ("false", "true")


def test_pod_close_path_answers_then_closes_the_connection(certs, pod) -> None:
    with _tls_client(certs, pod[1]) as sock:
        headers, doc = _raw_get(sock, "/close")
        assert headers["connection"] == "close"
        assert doc["path"] == "/close"
        assert sock.recv(1) == b""  # the pod closed its side
