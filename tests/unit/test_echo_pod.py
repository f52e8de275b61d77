"""The echo pod as a real subprocess (python -m harness.pod.echo), probed over real TLS on 127.0.0.1."""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.model.topology import POD_HOST, default_pki_plan
from harness.pki.certset import CertSet, LeafFiles, cert_set_for
from harness.probe.handshake import probe
from harness.probe.outcomes import http_reject, ok, tls_alert
from harness.probe.result import ProbeResult
from harness.runtime import ManagedProcess, wait_until

StartPod = Callable[..., tuple[ManagedProcess, int]]


@pytest.fixture(scope="module")
def certs() -> CertSet:
    return cert_set_for(default_pki_plan())


def _argv(certs: CertSet, listen: str, client_auth: str, ready: Path, *extra: str) -> list[str]:
    leaf = certs.leaf("pod-server")
    argv = [sys.executable, "-m", "harness.pod.echo", "--listen", listen, "--cert", str(leaf.chain),
            "--key", str(leaf.key), "--client-auth", client_auth, "--ready-file", str(ready), *extra]
    if client_auth != "none":
        argv += ["--client-ca", str(certs.trust_bundle("pod-ca"))]
    return argv


def _start(certs: CertSet, tmp: Path, client_auth: str, *extra: str) -> tuple[ManagedProcess, int]:
    ready = tmp / f"ready-{client_auth}"
    proc = ManagedProcess(f"pod-{client_auth}", _argv(certs, "127.0.0.1:0", client_auth, ready, *extra),
                          log_path=tmp / f"pod-{client_auth}.log").start()
    try:
        text = wait_until(lambda: ready.exists() and ready.read_text(), "the echo pod's ready file", timeout=15,
                          log_tail=proc.log_tail, alive=proc.exit_reason)
    except BaseException:
        proc.stop()
        raise
    return proc, int(text.strip().rpartition(":")[2])


@pytest.fixture(scope="module")
def pod(certs: CertSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ManagedProcess, int]]:
    """One pod requiring a client cert from pod-ca (as the ingress's proxy-ssl client cert is)."""
    proc, port = _start(certs, tmp_path_factory.mktemp("pod"), "required")
    try:
        yield proc, port
    finally:
        proc.stop()


@pytest.fixture
def start_pod(certs: CertSet, tmp_path: Path) -> Iterator[StartPod]:
    started: list[ManagedProcess] = []

    def start(client_auth: str = "none", *extra: str) -> tuple[ManagedProcess, int]:
        proc, port = _start(certs, tmp_path, client_auth, *extra)
        started.append(proc)
        return proc, port

    yield start
    for proc in started:
        proc.stop()


def call(certs: CertSet, port: int, leaf: LeafFiles | None = None, **kw: object) -> ProbeResult:
    args: dict[str, object] = {"server_name": POD_HOST, "trust": certs.trust_bundle("pod-ca")}
    if leaf is not None:
        args.update(client_cert=leaf.chain, client_key=leaf.key)
    args.update(kw)
    return probe("127.0.0.1", port, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PURGE"])
def test_pod_answers_every_method(certs, pod, method) -> None:
    body = b"payload" if method in ("POST", "PUT", "PATCH") else b""
    result = call(certs, pod[1], certs.leaf("ingress-client"), method=method, body=body)
    assert ok(200).matches(result.outcome), result.describe()
    doc = result.json()
    assert doc["method"] == method
    assert doc["body_length"] == len(body)


def test_pod_answers_head_with_headers_only(certs, pod) -> None:
    result = call(certs, pod[1], certs.leaf("ingress-client"), method="HEAD")
    assert ok(200).matches(result.outcome), result.describe()
    assert result.body == b""
    assert int(result.headers["content-length"]) > 0


def test_pod_reads_chunked_request_bodies(certs, pod) -> None:
    chunked = b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\n"
    result = call(certs, pod[1], certs.leaf("ingress-client"), method="PUT", body=chunked,
                  headers={"Transfer-Encoding": "chunked"})
    assert ok(200).matches(result.outcome), result.describe()
    assert result.json()["body_length"] == 7


@pytest.mark.parametrize(("status", "expected"), [(503, http_reject(503)), (418, http_reject(418)),
                                                  (201, ok(201)), (204, ok(204))])
def test_pod_status_path_answers_with_that_status(certs, pod, status, expected) -> None:
    result = call(certs, pod[1], certs.leaf("ingress-client"), path=f"/status/{status}")
    assert expected.matches(result.outcome), result.describe()
    assert result.status == status
    assert result.outcome.reason is None  # the pod's JSON carries no error message to quote


def test_pod_caps_request_bodies_at_one_mebibyte(certs, pod) -> None:
    result = call(certs, pod[1], certs.leaf("ingress-client"), method="POST", body=b"x" * (1024 * 1024 + 1))
    assert http_reject(413).matches(result.outcome), result.describe()
    small = call(certs, pod[1], certs.leaf("ingress-client"), method="POST", body=b"x" * (1024 * 1024))
    assert ok(200).matches(small.outcome), small.describe()


def test_pod_returns_the_proxies_trace_entries_and_its_own(certs, pod) -> None:
    headers = {"X-Mtls-Trace-Gateway": "tls=TLSv1.3; cipher=TLS_AES_128_GCM_SHA256; sni=api.contoso.example; "
                                       "peer_sha256=-; peer_subject=-; peer_issuer=-; verify=NONE",
               "x-mtls-trace-apim": "tls=TLSv1.2; cipher=ECDHE-ECDSA-AES128-GCM-SHA256; sni=-; peer_sha256=AB:CD"}
    result = call(certs, pod[1], certs.leaf("ingress-client"), headers=headers)
    trace = result.json()["trace"]
    assert list(trace) == ["gateway", "apim", "pod"], trace
    assert trace["gateway"]["sni"] == "api.contoso.example"
    assert trace["gateway"]["peer_sha256"] == ""
    assert trace["apim"]["peer_sha256"] == "abcd"


def test_pod_fills_ingress_peer_sha256_from_the_ssl_client_cert_header(certs, pod) -> None:
    apim_client = certs.leaf("apim-client")
    escaped = urllib.parse.quote(apim_client.cert.read_text(), safe="")
    result = call(certs, pod[1], certs.leaf("ingress-client"), headers={
        "ssl-client-cert": escaped, "x-mtls-trace-ingress": "tls=TLSv1.3; peer_sha256=; verify=SUCCESS"})
    ingress = result.json()["trace"]["ingress"]
    assert ingress == {"tls": "TLSv1.3", "peer_sha256": apim_client.fingerprint_sha256, "verify": "SUCCESS"}


def test_pod_keeps_an_ingress_peer_sha256_that_is_already_set(certs, pod) -> None:
    escaped = urllib.parse.quote(certs.leaf("apim-client").cert.read_text(), safe="")
    result = call(certs, pod[1], certs.leaf("ingress-client"), headers={
        "ssl-client-cert": escaped, "x-mtls-trace-ingress": "tls=TLSv1.3; peer_sha256=00ff"})
    assert result.json()["trace"]["ingress"]["peer_sha256"] == "00ff"


# ---------------------------------------------------------------------------------------------------------------
# what the pod refuses
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "alert"), [("1.3", "certificate_required"), ("1.2", "handshake_failure")])
def test_pod_requiring_a_client_cert_alerts_when_none_is_sent(certs, pod, version, alert) -> None:
    result = call(certs, pod[1], min_version=version, max_version=version)
    assert tls_alert(alert).matches(result.outcome), result.describe()


@pytest.mark.parametrize(("fault", "alert"), [("unknown-ca", "unknown_ca"), ("expired", "certificate_expired")])
def test_pod_alerts_on_a_bad_client_cert(certs, pod, fault, alert) -> None:
    result = call(certs, pod[1], certs.fault(fault, like="ingress-client"))
    assert tls_alert(alert).matches(result.outcome), result.describe()


def test_pod_refuses_tls11_below_its_floor(certs, pod) -> None:
    result = call(certs, pod[1], min_version="1.1", max_version="1.1")
    assert tls_alert("protocol_version").matches(result.outcome), result.describe()


def test_pod_refuses_plain_http(certs, pod) -> None:
    result = call(certs, pod[1], plaintext=True)
    assert result.outcome.kind == "protocol_error", result.describe()


def test_pod_offers_only_http11_so_an_h2_client_falls_back(certs, pod) -> None:
    # HTTP/2 end to end is tested against a server that offers h2 (test_probe.py) and, in the chain, Envoy
    result = call(certs, pod[1], certs.leaf("ingress-client"), alpn=("h2", "http/1.1"))
    assert ok(200).matches(result.outcome), result.describe()
    assert result.alpn == "http/1.1"


