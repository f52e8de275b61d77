"""Wire proof: the capture analysis judges real TLS bytes and real plaintext, and real captures on real links

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_capture.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.isolation.capture import (
    LinkCaptures,
    LinkReport,
    summarize,
)
from tests.unit.test_capture import _probe_from, _serve, network


@pytest.mark.mtls_needs_root
def test_real_captures_prove_tls_on_one_link_and_catch_plaintext_on_another(network, tmp_path, mtls_cert_set,
                                                                           mtls_topology):
    listener = mtls_topology.pod.listener
    leaf = mtls_cert_set.leaf(listener.server_cert)
    trust = str(mtls_cert_set.trust_bundle(mtls_topology.server_ca_of("pod")))
    captures = LinkCaptures(network, tmp_path / "caps")
    servers = []
    with captures:
        try:
            servers.append(_serve(network, "gateway", [
                sys.executable, "-m", "harness.pod.echo", "--listen", f"{network.address('gateway')}:8443",
                "--cert", str(leaf.chain), "--key", str(leaf.key)]))
            (tmp_path / "www").mkdir()
            servers.append(_serve(network, "apim", [
                sys.executable, "-u", "-m", "http.server", "--bind", network.address("apim"), "--directory",
                str(tmp_path / "www"), "8080"], says_on="stdout"))
            tls = _probe_from(network, "internet", network.address("gateway"), 8443, server_name=listener.hostname,
                              trust=trust, max_version="1.2")
            plain = _probe_from(network, "gateway", network.address("apim"), 8080, server_name=None, trust=None,
                                plaintext=True)
        finally:
            for s in servers:
                s.terminate()
                s.wait(timeout=10)
        pids = captures.pids
    assert tls["outcome"]["kind"] == "ok"
    assert plain["outcome"]["kind"] == "ok"
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "a tcpdump outlived stop()"
    proof = captures.analyze()
    by_link: dict[str, LinkReport] = {lk.link: lk for lk in proof.links}
    tls_link = by_link["internet→gateway"]
    assert tls_link.ok, tls_link.violations
    assert [s.tls_version for s in tls_link.streams if not s.empty] == ["TLSv1.2"]
    assert tls_link.dropped == 0
    plain_link = by_link["gateway→apim"]
    assert not plain_link.ok
    assert "GET / HTTP/1.1" in [h.excerpt for h in plain_link.plaintext]
    assert by_link["apim→ingress"].streams == []
    assert by_link["ingress→pod"].streams == []
    assert [x["link"] for x in summarize(proof)["links"] if not x["ok"]] == ["gateway→apim"]


@pytest.mark.mtls_needs_root
def test_a_capture_that_hit_its_packet_bound_does_not_pass(network, tmp_path, mtls_cert_set, mtls_topology):
    listener = mtls_topology.pod.listener
    leaf = mtls_cert_set.leaf(listener.server_cert)
    with LinkCaptures(network, tmp_path / "caps", max_packets=4) as captures:
        server = _serve(network, "gateway", [
            sys.executable, "-m", "harness.pod.echo", "--listen", f"{network.address('gateway')}:8443",
            "--cert", str(leaf.chain), "--key", str(leaf.key)])
        try:
            _probe_from(network, "internet", network.address("gateway"), 8443, server_name=listener.hostname,
                        trust=str(mtls_cert_set.trust_bundle(mtls_topology.server_ca_of("pod"))))
        finally:
            server.terminate()
            server.wait(timeout=10)
    report = captures.analyze().link("internet→gateway")
    assert not report.ok
    assert any("bound of 4 packets" in v for v in report.violations), report.violations
