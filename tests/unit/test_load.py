"""The bounded load generator against a real HTTPS server (the echo pod's server on loopback)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.errors import UsageError
from harness.pki.certset import CertSet
from harness.pod.echo import EchoServer, make_context
from harness.rotation.load import LoadBounds, LoadGenerator, LoadTarget, attribute_response

POD_HOST = "echo.default.svc.cluster.local"


class _CountingServer(EchoServer):
    """The echo pod's server, counting completed TLS handshakes (one per connection)."""

    handshakes = 0
    _lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(5)
        try:
            request.do_handshake()
        except OSError:
            return
        with self._lock:
            type(self).handshakes += 1
        super(EchoServer, self).finish_request(request, client_address)


@pytest.fixture
def server(pki_set: CertSet) -> Iterator[_CountingServer]:
    leaf = pki_set.leaf("pod-server")
    ctx = make_context(cert=leaf.chain, key=leaf.key, client_ca=None, client_auth="none")
    srv = _CountingServer(("127.0.0.1", 0), ctx)
    _CountingServer.handshakes = 0
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _target(server: EchoServer, pki_set: CertSet, path: str = "/") -> LoadTarget:
    return LoadTarget("127.0.0.1", server.server_address[1], POD_HOST, pki_set.trust_bundle("pod-ca"), path=path)


def test_load_stops_by_itself_after_its_request_count(server: _CountingServer, pki_set: CertSet) -> None:
    load = LoadGenerator(_target(server, pki_set), LoadBounds(workers=3, duration=60, max_requests=30, rate=None))
    with load:
        finished = load.wait(timeout=30)
    records = load.records()
    assert finished, "the generator did not stop by itself"
    assert load.stopped_by == "max_requests"
    assert len(records) == 30
    assert all(r.ok and r.status == 200 for r in records), [r.describe() for r in records if not r.ok]


def test_load_stops_by_itself_after_its_duration(server: _CountingServer, pki_set: CertSet) -> None:
    load = LoadGenerator(_target(server, pki_set), LoadBounds(workers=2, duration=0.5, max_requests=1_000_000,
                                                              rate=40))
    with load:
        finished = load.wait(timeout=15)
    assert finished, "the generator did not stop by itself"
    assert load.stopped_by == "duration"
    assert 0 < len(load.records()) < 1_000_000


def test_stop_ends_the_workers_before_their_bounds(server: _CountingServer, pki_set: CertSet) -> None:
    load = LoadGenerator(_target(server, pki_set), LoadBounds(workers=2, duration=600, max_requests=100_000, rate=20))
    load.start()
    load.stop()
    assert not load.running
    assert load.stopped_by == "stopped"


def test_new_connection_workers_handshake_per_request_and_keep_alive_workers_once(
        server: _CountingServer, pki_set: CertSet) -> None:
    bounds = LoadBounds(workers=2, new_connection_share=0.5, duration=60, max_requests=24, rate=None)
    with LoadGenerator(_target(server, pki_set), bounds) as load:
        load.wait(timeout=30)
    records = load.records()
    fresh = [r for r in records if r.mode == "new-connection"]
    kept = [r for r in records if r.mode == "keep-alive"]
    assert fresh, f"expected a new-connection worker, got {load.summary().by_mode}"
    assert kept, f"expected a keep-alive worker, got {load.summary().by_mode}"
    assert all(r.ok for r in records), [r.describe() for r in records if not r.ok]
    # one handshake per new-connection request, one for the keep-alive worker's single connection
    assert _CountingServer.handshakes == len(fresh) + 1


def test_every_failed_request_is_recorded_with_its_hop_and_status(server: _CountingServer, pki_set: CertSet) -> None:
    bounds = LoadBounds(workers=2, duration=60, max_requests=10, rate=None)
    with LoadGenerator(_target(server, pki_set, path="/status/503"), bounds) as load:
        load.wait(timeout=30)
    summary = load.summary()
    assert summary.requests == 10
    assert len(summary.failures) == 10
    assert {(r.hop, r.status) for r in summary.failures} == {("pod", 503)}
    assert all(r.reason and r.end >= r.start for r in summary.failures)


def test_a_refused_server_certificate_is_a_failure_at_the_entry_hop(server: _CountingServer, pki_set: CertSet) -> None:
    wrong_trust = pki_set.trust_bundle("apim-ca")  # not the root that issued the server's cert
    target = LoadTarget("127.0.0.1", server.server_address[1], POD_HOST, wrong_trust)
    with LoadGenerator(target, LoadBounds(workers=1, duration=60, max_requests=3, rate=None)) as load:
        load.wait(timeout=30)
    failures = load.summary().failures
    assert len(failures) == 3
    assert all(r.hop == "gateway" and r.status is None and "server certificate refused" in (r.reason or "")
               for r in failures), [r.describe() for r in failures]


@pytest.mark.parametrize("host", ["192.0.2.10", "10.0.0.1", "example.org", "localhost"])
def test_load_refuses_any_target_but_a_loopback_address(host: str, pki_set: CertSet) -> None:
    with pytest.raises(UsageError, match="loopback"):
        LoadTarget(host, 8443, POD_HOST, pki_set.trust_bundle("pod-ca"))


@pytest.mark.parametrize(("field", "value"), [("workers", 17), ("workers", 0), ("duration", 0), ("duration", 3601),
                                               ("max_requests", 0), ("max_requests", 1_000_001), ("rate", 0)])
def test_load_bounds_refuse_values_beyond_the_ceilings(field: str, value: float) -> None:
    with pytest.raises(UsageError, match=field):
        LoadBounds(**{field: value})  # type: ignore[arg-type]


#: nginx 1.22's page with server_tokens off, as the ingress sends it (measured here; ngx_http_special_response.c 35-36)
NGINX_CERT_ERROR_PAGE = (b"<html>\r\n<head><title>400 The SSL certificate error</title></head>\r\n<body>\r\n"
                         b"<center><h1>400 Bad Request</h1></center>\r\n<center>The SSL certificate error</center>\r\n"
                         b"<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def test_attribution_names_the_ingress_for_an_nginx_client_cert_page() -> None:
    hop, reason, outcome = attribute_response(400, {"content-type": "text/html"}, NGINX_CERT_ERROR_PAGE)
    assert (hop, reason) == ("ingress", "The SSL certificate error")
    assert outcome.startswith("http_reject(400")


def test_attribution_names_the_ingress_by_its_page_not_by_the_server_header_app_gateway_appended() -> None:
    # ingress-nginx sends no Server header (more_clear_headers Server, nginx.tmpl 338-341); the gateway stand-in
    # appends App Gateway's own to an answer without one (server_header_transformation APPEND_IF_ABSENT)
    headers = {"server": "Microsoft-Azure-Application-Gateway/v2", "content-type": "text/html"}
    assert attribute_response(400, headers, NGINX_CERT_ERROR_PAGE)[:2] == ("ingress", "The SSL certificate error")


def test_attribution_names_the_ingress_for_its_match_cn_refusal() -> None:
    # nginx.tmpl 918: return 403 "client certificate unauthorized" (a text answer, not an nginx page)
    hop, reason, _ = attribute_response(403, {"content-type": "application/octet-stream"},
                                        b"client certificate unauthorized")
    assert (hop, reason) == ("ingress", "client certificate unauthorized")


def test_a_server_nginx_header_alone_is_not_the_ingress() -> None:
    # a backend's own 503 behind some nginx: no ingress page, so not the ingress's decision
    hop, _, _ = attribute_response(503, {"server": "nginx", "content-type": "text/plain"}, b"maintenance")
    assert hop == "unknown"


def test_attribution_reads_the_hop_from_a_stand_ins_detail_header() -> None:
    body = b'{"statusCode": 500, "message": "Internal server error", "reason": "BackendConnectionFailure"}'
    headers = {"content-type": "application/json",
               "x-harness-detail": "hop=apim; flags=UF; details=upstream_reset_before_response_started{TLS_error}"}
    hop, reason, outcome = attribute_response(500, headers, body)
    assert hop == "apim"
    assert "TLS_error" in reason
    assert outcome.startswith("upstream_failure(500")


def test_a_successful_answer_has_no_hop() -> None:
    assert attribute_response(200, {}, b"{}")[0] is None


def test_the_trust_bundle_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        LoadTarget("127.0.0.1", 8443, POD_HOST, tmp_path / "missing.pem")
