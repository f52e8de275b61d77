"""Wire proof: the capture analysis judges real TLS bytes and real plaintext, and real captures on real links.

The pure tests build capture files from bytes a real TLS handshake produced (Python's ssl over memory BIOs, a
trustme CA) wrapped in TCP segments by scapy, so the expected facts (version, SNI, the request line) are the ones the
test chose, not the analysis's. The root tests capture veth links of real namespaces with tcpdump while real
servers and probes talk across them (every client inside a namespace).
"""

from __future__ import annotations

import json
import os
import random
import select
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from harness.errors import HarnessError
from harness.isolation.capture import (
    LinkCaptures,
    WireProof,
    WireProofError,
    analyze_pcap,
    find_plaintext,
    summarize,
)

CLIENT, SERVER = ("192.0.2.1", 40000), ("192.0.2.2", 443)
REQUEST = b"GET /orders HTTP/1.1\r\nHost: echo.test\r\nuser-agent: probe\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"
#: the summary keys docs/isolation.md documents for each link
LINK_KEYS = {"link", "interface", "namespace", "pcap", "packets", "non_tcp_packets", "dropped_by_kernel", "streams",
             "tls_streams", "empty_streams", "bytes", "tls_versions", "server_names", "records", "plaintext",
             "plaintext_found", "violations", "ok"}


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_flights(ca: trustme.CA, version: ssl.TLSVersion, sni: str = "echo.test") -> list[tuple[str, bytes]]:
    """The bytes of a real handshake plus one request/response, in the order they would cross the wire."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(sni).configure_cert(sctx)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(cctx)
    cctx.maximum_version = version
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = cctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = sctx.wrap_bio(s_in, s_out, server_side=True)
    flights: list[tuple[str, bytes]] = []

    def pump() -> None:
        up, down = c_out.read(), s_out.read()
        if up:
            flights.append(("up", up))
            s_in.write(up)
        if down:
            flights.append(("down", down))
            c_in.write(down)

    done = {"client": False, "server": False}
    for _ in range(20):  # a handshake takes a handful of flights
        for name, obj in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            pump()
        if all(done.values()):
            break
    assert all(done.values()), "the in-memory handshake did not finish"
    client.write(REQUEST)
    pump()
    assert server.read(4096) == REQUEST
    pump()  # TLS 1.3 session tickets, if the server had more to say
    server.write(RESPONSE)
    pump()
    assert client.read(4096) == RESPONSE
    return flights


def write_pcap(path: Path, flights: list[tuple[str, bytes]], *, syn: bool = True, reorder: bool = False,
               drop: int | None = None, mss: int = 700) -> Path:
    """TCP segments carrying ``flights`` between CLIENT and SERVER, as a capture file."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    macs = {CLIENT: "02:00:00:00:00:01", SERVER: "02:00:00:00:00:02"}

    def pkt(src, dst, **tcp):
        # explicit MACs: left unset, scapy would resolve them with ARP on the host's network while building
        return Ether(src=macs[src], dst=macs[dst]) / IP(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1],
                                                                                     **tcp)

    seq = {"up": 1001, "down": 5001}
    pkts = []
    if syn:
        pkts += [pkt(CLIENT, SERVER, flags="S", seq=1000), pkt(SERVER, CLIENT, flags="SA", seq=5000, ack=1001),
                 pkt(CLIENT, SERVER, flags="A", seq=1001, ack=5001)]
    data = []
    for direction, payload in flights:
        src, dst = (CLIENT, SERVER) if direction == "up" else (SERVER, CLIENT)
        for off in range(0, len(payload), mss):
            chunk = payload[off:off + mss]
            data.append(pkt(src, dst, flags="PA", seq=seq[direction]) / chunk)
            seq[direction] += len(chunk)
    if drop is not None:
        del data[drop]
    if reorder:
        data = data[1::2] + data[::2] + data[:2]  # out of order, and the first two segments sent twice
    pkts += data
    pkts += [pkt(CLIENT, SERVER, flags="FA", seq=seq["up"]), pkt(SERVER, CLIENT, flags="FA", seq=seq["down"])]
    wrpcap(str(path), pkts)
    return path


# ------------------------------------------------------------------------------------------------------------------
# analysis of known bytes
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("version", "name"), [(ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
                                               (ssl.TLSVersion.TLSv1_2, "TLSv1.2")])
def test_a_tls_exchange_passes_with_its_negotiated_version_and_sni(tmp_path, ca, version, name):
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", tls_flights(ca, version)), link="internet→gateway")
    assert report.ok, report.violations
    [stream] = report.streams
    assert (stream.client, stream.server) == ("192.0.2.1:40000", "192.0.2.2:443")
    assert stream.first_record == "ClientHello"
    assert stream.tls_version == name
    assert stream.server_name == "echo.test"
    assert stream.records["application_data"] >= 2
    assert report.plaintext == []


def test_reordered_and_retransmitted_segments_are_reassembled(tmp_path, ca):
    flights = tls_flights(ca, ssl.TLSVersion.TLSv1_3)
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", flights, reorder=True, mss=200))
    assert report.ok, report.violations
    assert report.streams[0].bytes_up == sum(len(b) for d, b in flights if d == "up")


def test_plain_http_fails_and_names_the_request_and_status_lines(tmp_path):
    report = analyze_pcap(write_pcap(tmp_path / "p.pcap", [("up", REQUEST), ("down", RESPONSE)]), link="ingress→pod")
    assert not report.ok
    excerpts = {h.excerpt for h in report.plaintext}
    assert {"GET /orders HTTP/1.1", "HTTP/1.1 200 OK", "user-agent: probe"} <= excerpts
    assert report.streams[0].first_record == "non-TLS bytes"
    assert "ingress→pod" in report.describe()
    assert "GET /orders HTTP/1.1" in report.describe()


def test_plaintext_after_a_tls_handshake_is_caught(tmp_path, ca):
    """Application data may only travel in TLS records: a cleartext request after the handshake fails."""
    flights = tls_flights(ca, ssl.TLSVersion.TLSv1_3)
    flights.append(("up", b"GET /after-handshake HTTP/1.1\r\nHost: echo.test\r\n\r\n"))
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", flights))
    assert not report.ok
    assert any("not a TLS record" in v for v in report.violations), report.violations
    assert [h.excerpt for h in report.plaintext][:1] == ["GET /after-handshake HTTP/1.1"]


def test_a_stream_that_began_before_the_capture_cannot_pass(tmp_path, ca):
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", tls_flights(ca, ssl.TLSVersion.TLSv1_3), syn=False))
    assert not report.ok
    assert "began before the capture" in report.violations[0]


def test_a_missing_segment_is_reported(tmp_path, ca):
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", tls_flights(ca, ssl.TLSVersion.TLSv1_3), drop=2, mss=100))
    assert not report.ok
    assert any("missing segment" in v for v in report.violations), report.violations


def test_a_bare_connect_is_counted_not_judged(tmp_path):
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", []))
    assert report.ok
    assert len(report.streams) == 1
    assert report.streams[0].empty


def test_a_stream_that_starts_with_anything_but_a_client_hello_fails(tmp_path, ca):
    flights = tls_flights(ca, ssl.TLSVersion.TLSv1_3)
    # an application-data record first: valid TLS framing, but not a handshake
    flights.insert(0, ("up", bytes([23, 3, 3, 0, 4]) + b"\x01\x02\x03\x04"))
    report = analyze_pcap(write_pcap(tmp_path / "t.pcap", flights))
    assert not report.ok
    assert report.streams[0].first_record == "application_data"


def test_random_bytes_are_not_mistaken_for_plaintext():
    noise = random.Random(20261123).randbytes(4 * 1024 * 1024)
    assert find_plaintext(noise, stream="noise", direction="-") == []


def test_an_unreadable_capture_file_fails_the_link(tmp_path):
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a pcap at all")
    assert not analyze_pcap(bad, link="gateway→apim").ok


# ------------------------------------------------------------------------------------------------------------------
# the summary and the assertion
# ------------------------------------------------------------------------------------------------------------------
def test_summary_is_json_and_names_the_failing_link(tmp_path, ca):
    good = analyze_pcap(write_pcap(tmp_path / "g.pcap", tls_flights(ca, ssl.TLSVersion.TLSv1_2)), link="apim→ingress")
    bad = analyze_pcap(write_pcap(tmp_path / "b.pcap", [("up", REQUEST), ("down", RESPONSE)]), link="ingress→pod")
    doc = json.loads(json.dumps(summarize(WireProof([good, bad]))))
    assert doc["ok"] is False
    assert doc["failing_links"] == ["ingress→pod"]
    first, second = doc["links"]
    assert set(first) == LINK_KEYS
    assert first["tls_versions"] == {"TLSv1.2": 1}
    assert first["plaintext_found"] == "none"
    assert first["tls_streams"] == 1
    assert first["bytes"] > 0
    assert second["ok"] is False
    assert second["plaintext"][0]["excerpt"] == "GET /orders HTTP/1.1"


def test_assert_clean_names_each_failing_link_and_what_it_carried(tmp_path, ca):
    good = analyze_pcap(write_pcap(tmp_path / "g.pcap", tls_flights(ca, ssl.TLSVersion.TLSv1_3)), link="a→b")
    bad = analyze_pcap(write_pcap(tmp_path / "b.pcap", [("up", REQUEST)]), link="ingress→pod")
    WireProof([good]).assert_clean()
    with pytest.raises(WireProofError, match="ingress→pod") as exc:
        WireProof([good, bad]).assert_clean()
    assert "a→b" not in str(exc.value)
    assert "GET /orders HTTP/1.1" in str(exc.value)


def test_capture_bounds_must_be_positive(tmp_path):
    with pytest.raises(HarnessError, match="must be positive"):
        LinkCaptures(None, tmp_path, max_packets=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------------
# real captures on real links
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def network():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, packet capture)")
    from harness.isolation.netns import ChainNetwork

    with ChainNetwork.create() as net:
        yield net


def _serve(net, role: str, argv: list[str], says_on: str = "stderr") -> subprocess.Popen[str]:
    """Start a server inside ``role``'s namespace; return once it printed its first line (it listens then)."""
    out = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, says_on: subprocess.PIPE}
    proc = subprocess.Popen(net.exec_argv(role, argv), text=True, **out)
    stream = getattr(proc, says_on)
    ready, _, _ = select.select([stream], [], [], 30)
    assert ready, f"the server in {role} did not start"
    stream.readline()
    return proc


def _probe_from(net, role: str, host: str, port: int, **kwargs) -> dict:
    request = {"op": "probe", "host": host, "port": port, "kwargs": kwargs}
    done = subprocess.run(net.exec_argv(role, [sys.executable, "-m", "harness.isolation.runner", "--require-isolated",
                                               "--netns", net.namespaces[role]]),
                          input=json.dumps(request), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["result"]


