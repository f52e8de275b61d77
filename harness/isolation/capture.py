"""Wire proof: capture every link of the isolated chain and show that only TLS crosses it.

    with LinkCaptures(network, workdir) as captures:   # tcpdump on every veth, inside its namespace
        ...                                            # traffic through the chain
    proof = captures.analyze()                         # one LinkReport per link
    proof.assert_clean()                               # WireProofError naming each failing link
    summarize(proof)                                   # the JSON-serialisable summary the HTML report draws

Capture: ``tcpdump -i <veth> -w <file>`` run with ``ip netns exec`` in the namespace of the hop the link leads to,
packet-buffered and in immediate mode (without ``--immediate-mode`` packets still in the kernel's ring when tcpdump
is stopped are lost: seen here, "58 packets received by filter, 0 captured"), bounded by a packet count (``-c``)
and a time (``-G … -W 1``), stopped by its PID with SIGINT (tcpdump then writes its statistics).

Analysis (:func:`analyze_pcap`): scapy reads the file and decodes Ethernet/IP/TCP and the TLS hello messages; each
TCP stream is reassembled per direction by sequence number, then cut into TLS records (RFC 8446 §5.1: type, version,
length). A stream passes when

- its SYN was captured (a stream that began before the capture cannot be proven) and its segments are contiguous;
- the client's first record is a handshake record holding a ClientHello, the server's a ServerHello (or an alert);
- every byte in both directions belongs to a record of type 20/21/22/23 with a TLS version — so application data
  can only travel in type-23 records after the hellos;
- no plaintext HTTP (a request line, a status line, the HTTP/2 preface, a well-known header) appears in the stream
  or in any packet.

A stream with no payload at all (a bare connect) is counted, not judged. Any non-TCP packet carrying HTTP-looking
bytes fails the link too.
"""

from __future__ import annotations

import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, StartError, ToolMissingError, WaitTimeout, need_extra
from harness.model.wire import TRACE_PREFIX
from harness.runtime import ManagedProcess, wait_until

if TYPE_CHECKING:
    from harness.isolation.netns import ChainNetwork, Link

__all__ = [
    "CONTENT_TYPES",
    "LinkCaptures",
    "LinkReport",
    "PlaintextHit",
    "StreamReport",
    "WireProof",
    "WireProofError",
    "analyze_pcap",
    "find_plaintext",
    "summarize",
]

#: TLS record content types (RFC 8446 §5.1, RFC 6520 heartbeat left out on purpose: nothing here sends it)
CONTENT_TYPES: Final = {20: "change_cipher_spec", 21: "alert", 22: "handshake", 23: "application_data"}
#: TLS versions as the ServerHello (or its supported_versions extension) names them
TLS_VERSIONS: Final = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
#: upper bounds of one capture; reaching either is reported, since traffic after it was not seen
MAX_PACKETS: Final = 200_000
MAX_SECONDS: Final = 1800
#: seconds tcpdump may take to say "listening on"
START_TIMEOUT: Final = 10.0
_MAX_RECORD: Final = 2**14 + 2048  # TLSCiphertext.length limit (RFC 8446 §5.2)

_METHODS = "GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH|TRACE|CONNECT"
_PLAINTEXT: Final = re.compile(
    rb"(?:(?:" + _METHODS.encode() + rb") [!-~]{1,2048} HTTP/\d(?:\.\d)?\r?\n"       # request line, anywhere
    rb"|HTTP/\d(?:\.\d)? [1-5]\d\d[ \r]"                                              # status line
    rb"|PRI \* HTTP/2\.0\r\n"                                                         # HTTP/2 preface
    rb"|(?:^|\n)(?:host|content-type|content-length|user-agent|x-forwarded-for|"       # a header, at a line start
    + re.escape(TRACE_PREFIX.encode()) + rb"[a-z]+|ssl-client-[a-z-]+): )",
    re.IGNORECASE,
)


class WireProofError(HarnessError):
    """A link carried something other than TLS. The message names every failing link and what was seen."""


# ------------------------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlaintextHit:
    stream: str  # "192.0.2.13:40312→192.0.2.14:8443", or "packet 12" outside a TCP stream
    direction: str  # "client→server", "server→client" or "-"
    offset: int
    excerpt: str  # printable excerpt from the match on

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "direction": self.direction, "offset": self.offset, "excerpt": self.excerpt}

    def __str__(self) -> str:
        return f"{self.excerpt!r} at {self.direction} offset {self.offset} of {self.stream}"


@dataclass
class StreamReport:
    client: str
    server: str
    syn_seen: bool
    bytes_up: int = 0  # client → server payload bytes
    bytes_down: int = 0
    records: Counter[str] = field(default_factory=Counter)
    tls_version: str | None = None
    server_name: str | None = None
    first_record: str | None = None  # what the client sent first: "ClientHello", "handshake", "not TLS", …
    plaintext: list[PlaintextHit] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.client}→{self.server}"

    @property
    def empty(self) -> bool:
        return self.bytes_up == 0 and self.bytes_down == 0

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class LinkReport:
    link: str
    pcap: Path
    interface: str = ""
    namespace: str = ""
    packets: int = 0
    non_tcp_packets: int = 0
    streams: list[StreamReport] = field(default_factory=list)
    dropped: int | None = None  # tcpdump's "dropped by kernel"
    plaintext: list[PlaintextHit] = field(default_factory=list)  # every hit, streams' and loose packets'
    violations: list[str] = field(default_factory=list)  # every problem, prefixed with its stream

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def tls_versions(self) -> Counter[str]:
        return Counter(s.tls_version for s in self.streams if s.tls_version)

    def describe(self) -> str:
        """One line: the link, then the plaintext seen (if any), then how many streams failed and the first reason."""
        if self.ok:
            return f"{self.link}: {len(self.streams)} streams, TLS only"
        parts = []
        if self.plaintext:
            shown = ", ".join(f"{h.excerpt!r} ({h.direction})" for h in self.plaintext[:3])
            more = f" and {len(self.plaintext) - 3} more" if len(self.plaintext) > 3 else ""
            parts.append(f"plaintext HTTP on the wire: {shown}{more}")
        bad = [s for s in self.streams if not s.ok]
        if bad:
            parts.append(f"{len(bad)} of {len(self.streams)} streams fail, first: {bad[0].name}: "
                         f"{bad[0].violations[0]}")
        loose = [v for v in self.violations if not v.startswith("stream ")]
        parts += loose[:3]
        return f"{self.link}: " + "; ".join(parts)


@dataclass
class WireProof:
    links: list[LinkReport]

    @property
    def ok(self) -> bool:
        return all(lk.ok for lk in self.links)

    @property
    def failing(self) -> list[LinkReport]:
        return [lk for lk in self.links if not lk.ok]

    def link(self, name: str) -> LinkReport:
        for lk in self.links:
            if lk.link == name:
                return lk
        raise KeyError(f"no capture of link {name!r} (captured: {', '.join(lk.link for lk in self.links)})")

    def assert_clean(self) -> None:
        """Raise :class:`WireProofError` naming every link that carried anything but TLS."""
        if self.failing:
            raise WireProofError("not TLS-only on the wire:\n" + "\n".join(f"  {lk.describe()}  [{lk.pcap}]"
                                                                          for lk in self.failing))


# ------------------------------------------------------------------------------------------------------------------
# analysis
# ------------------------------------------------------------------------------------------------------------------
def find_plaintext(data: bytes, *, stream: str, direction: str, limit: int = 3) -> list[PlaintextHit]:
    """Plaintext HTTP in ``data``: request/status lines, the HTTP/2 preface, well-known headers (first ``limit``)."""
    hits = []
    for m in _PLAINTEXT.finditer(data):
        start = m.start() + (1 if data[m.start():m.start() + 1] == b"\n" else 0)
        line = data[start:start + 60].split(b"\r\n", 1)[0].split(b"\n", 1)[0]
        hits.append(PlaintextHit(stream, direction, start, line.decode("ascii", errors="replace")))
        if len(hits) >= limit:
            break
    return hits


class _Direction:
    """One direction of a TCP stream: segments by sequence number, reassembled on demand."""

    def __init__(self) -> None:
        self.isn: int | None = None  # sequence number of the SYN, when captured
        self.segments: list[tuple[int, bytes]] = []

    def add(self, seq: int, payload: bytes) -> None:
        if payload:
            self.segments.append((seq, payload))

    def reassemble(self) -> tuple[bytes, str | None]:
        """The contiguous bytes from the start, and a problem ("gap at …") if a segment is missing."""
        if not self.segments:
            return b"", None
        base = (self.isn + 1) if self.isn is not None else min(s for s, _ in self.segments)
        out = bytearray()
        for rel, data in sorted((((s - base) % 2**32), d) for s, d in self.segments):
            if rel > len(out):
                return bytes(out), f"missing segment at byte {len(out)} (next seen at {rel})"
            if rel + len(data) > len(out):
                out += data[len(out) - rel:]
        return bytes(out), None


def _records(data: bytes) -> tuple[list[tuple[int, int, bytes]], str | None]:
    """TLS records in ``data`` as (content type, offset, fragment); a problem if some bytes are not a record."""
    out: list[tuple[int, int, bytes]] = []
    off = 0
    while off + 5 <= len(data):
        ctype, major, length = data[off], data[off + 1], int.from_bytes(data[off + 3:off + 5], "big")
        if ctype not in CONTENT_TYPES or major != 3 or length > _MAX_RECORD:
            return out, (f"bytes at offset {off} are not a TLS record (type {ctype}, version {major}.{data[off + 2]}; "
                         f"starts {data[off:off + 16]!r})")
        out.append((ctype, off, data[off + 5:off + 5 + length]))
        off += 5 + length
    return out, None


def _handshake_body(records: list[tuple[int, int, bytes]]) -> bytes:
    """The leading handshake bytes (a hello may span records)."""
    body = b""
    for ctype, _, frag in records:
        if ctype != 22:
            break
        body += frag
        if len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big"):
            break
    return body


def _hello_facts(body: bytes, server: bool) -> dict[str, str]:
    """Version (supported_versions wins) and SNI from a hello, decoded by scapy; empty if it does not parse."""
    from scapy.layers.tls.extensions import TLS_Ext_ServerName, TLS_Ext_SupportedVersion_SH
    from scapy.layers.tls.handshake import TLSClientHello, TLSServerHello

    facts: dict[str, str] = {}
    try:
        msg = (TLSServerHello if server else TLSClientHello)(body)
    except Exception:  # scapy raises assorted errors for a malformed message
        return facts
    version = int(msg.version or 0)
    for ext in msg.ext or []:
        if server and isinstance(ext, TLS_Ext_SupportedVersion_SH):
            version = int(ext.version)
        if not server and isinstance(ext, TLS_Ext_ServerName):
            names = [n.servername for n in ext.servernames or []]
            if names:
                facts["sni"] = names[0].decode(errors="replace")
    if server:
        facts["version"] = TLS_VERSIONS.get(version, f"0x{version:04x}")
    return facts


def _judge(report: StreamReport, up: bytes, down: bytes) -> None:
    for direction, data, hello, hs_type in (("client→server", up, "ClientHello", 1),
                                            ("server→client", down, "ServerHello", 2)):
        if not data:
            continue
        records, problem = _records(data)
        if problem:
            report.violations.append(f"{direction}: {problem}")
        report.records.update(CONTENT_TYPES[c] for c, _, _ in records)
        first = records[0] if records else None
        if first is None:
            what = "non-TLS bytes"
        elif first[0] == 22 and first[2][:1] == bytes([hs_type]):
            what = hello
        else:
            what = CONTENT_TYPES[first[0]]
        if direction == "client→server":
            report.first_record = what
        if what != hello and not (direction == "server→client" and what == "alert"):
            report.violations.append(f"{direction}: starts with {what}, not a TLS {hello} "
                                     f"(first bytes {data[:16]!r})")
        if what == hello:
            facts = _hello_facts(_handshake_body(records), server=hs_type == 2)
            report.tls_version = facts.get("version", report.tls_version)
            report.server_name = facts.get("sni", report.server_name)
        hits = find_plaintext(data, stream=report.name, direction=direction)
        report.plaintext += hits
        report.violations += [f"{direction}: plaintext HTTP {h.excerpt!r} at offset {h.offset}" for h in hits]


def analyze_pcap(pcap: Path, *, link: str = "", interface: str = "", namespace: str = "") -> LinkReport:
    """Judge every TCP stream (and every other packet) in one capture file; see the module docstring."""
    need_extra("capture", "the wire proof (packet analysis of the --isolate captures)")
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    report = LinkReport(link=link or str(pcap), pcap=Path(pcap), interface=interface, namespace=namespace)
    flows: dict[tuple[tuple[str, int], tuple[str, int]], dict[str, Any]] = {}
    from scapy.error import Scapy_Exception

    try:
        reader = PcapReader(str(pcap))
    except (OSError, EOFError, ValueError, Scapy_Exception) as exc:
        report.violations.append(f"capture file unreadable: {exc}")
        return report
    with reader:
        for n, pkt in enumerate(reader, start=1):
            report.packets += 1
            if IP not in pkt or TCP not in pkt:
                report.non_tcp_packets += 1
                raw = bytes(pkt.payload)
                for h in find_plaintext(raw, stream=f"packet {n}", direction="-", limit=1):
                    report.plaintext.append(h)
                    report.violations.append(f"non-TCP packet {n}: plaintext HTTP {h.excerpt!r}")
                continue
            ip, tcp = pkt[IP], pkt[TCP]
            src, dst = (str(ip.src), int(tcp.sport)), (str(ip.dst), int(tcp.dport))
            key = (src, dst) if (src, dst) in flows or (dst, src) not in flows else (dst, src)
            flow = flows.setdefault(key, {"dirs": {}, "syn_from": None})
            d = flow["dirs"].setdefault(src, _Direction())
            flags = int(tcp.flags)
            if flags & 0x02:  # SYN (and SYN-ACK): the sequence number before the first byte
                d.isn = int(tcp.seq)
                if not flags & 0x10 and flow["syn_from"] is None:
                    flow["syn_from"] = src
            d.add(int(tcp.seq), bytes(tcp.payload))
    for (a, b), flow in flows.items():
        client = flow["syn_from"] or a
        server = b if client == a else a
        s = StreamReport(client=f"{client[0]}:{client[1]}", server=f"{server[0]}:{server[1]}",
                         syn_seen=flow["syn_from"] is not None)
        dirs = flow["dirs"]
        up, gap_up = dirs[client].reassemble() if client in dirs else (b"", None)
        down, gap_down = dirs[server].reassemble() if server in dirs else (b"", None)
        s.bytes_up, s.bytes_down = len(up), len(down)
        if not s.syn_seen and not s.empty:
            s.violations.append("began before the capture: its first bytes were not seen")
        for direction, gap in (("client→server", gap_up), ("server→client", gap_down)):
            if gap:
                s.violations.append(f"{direction}: {gap}")
        if s.syn_seen:
            _judge(s, up, down)
        else:  # still look for plaintext in what was seen
            for direction, data in (("client→server", up), ("server→client", down)):
                s.plaintext += find_plaintext(data, stream=s.name, direction=direction)
        report.streams.append(s)
        report.plaintext += [h for h in s.plaintext if h not in report.plaintext]
        report.violations += [f"stream {s.name}: {v}" for v in s.violations]
    return report


# ------------------------------------------------------------------------------------------------------------------
# the summary the HTML report draws
# ------------------------------------------------------------------------------------------------------------------
def summarize(proof: WireProof | Sequence[LinkReport]) -> dict[str, Any]:
    """A JSON-serialisable summary per link (shape documented in docs/isolation.md)."""
    links = proof.links if isinstance(proof, WireProof) else list(proof)
    out = []
    for lk in links:
        judged = [s for s in lk.streams if not s.empty]
        out.append({
            "link": lk.link,
            "interface": lk.interface,
            "namespace": lk.namespace,
            "pcap": str(lk.pcap),
            "packets": lk.packets,
            "non_tcp_packets": lk.non_tcp_packets,
            "dropped_by_kernel": lk.dropped,
            "streams": len(lk.streams),
            "tls_streams": sum(1 for s in judged if s.ok and s.first_record == "ClientHello"),
            "empty_streams": len(lk.streams) - len(judged),
            "bytes": sum(s.bytes_up + s.bytes_down for s in lk.streams),
            "tls_versions": dict(sorted(lk.tls_versions.items())),
            "server_names": sorted({s.server_name for s in lk.streams if s.server_name}),
            "records": dict(sorted(sum((s.records for s in lk.streams), Counter()).items())),
            "plaintext": [h.as_dict() for h in lk.plaintext],
            "plaintext_found": "none" if not lk.plaintext else f"{len(lk.plaintext)} hit(s), first: "
                                                                f"{lk.plaintext[0].excerpt!r}",
            "violations": list(lk.violations),
            "ok": lk.ok,
        })
    return {"ok": all(x["ok"] for x in out), "failing_links": [x["link"] for x in out if not x["ok"]], "links": out}


# ------------------------------------------------------------------------------------------------------------------
# capturing
# ------------------------------------------------------------------------------------------------------------------
_STATS = re.compile(r"^(\d+) packets? (captured|received by filter|dropped by kernel)", re.M)


@dataclass
class _Capture:
    link: Link
    namespace: str
    pcap: Path
    process: ManagedProcess
    ended_early: str | None = None
    stopped: bool = False


class LinkCaptures:
    """tcpdump on every link of ``network`` (inside the namespace of the hop each link leads to).

    A context manager: entering starts every capture and waits until each listens; leaving (or :meth:`stop`)
    stops them by PID. A failed start stops those already running.
    """

    def __init__(self, network: ChainNetwork, workdir: Path, *, max_packets: int = MAX_PACKETS,
                 max_seconds: int = MAX_SECONDS) -> None:
        if max_packets < 1 or max_seconds < 1:
            raise HarnessError(f"capture bounds must be positive (max_packets={max_packets}, "
                               f"max_seconds={max_seconds})")
        self.network = network
        self.workdir = Path(workdir)
        self.max_packets = max_packets
        self.max_seconds = max_seconds
        self._captures: list[_Capture] = []
        #: seconds the last start took (spawn to every tcpdump listening)
        self.start_seconds: float | None = None

    def _argv(self, ifname: str, pcap: Path) -> list[str]:
        tcpdump = shutil.which("tcpdump") or shutil.which("tcpdump", path="/usr/sbin:/usr/bin:/sbin")
        if tcpdump is None:
            raise ToolMissingError("tcpdump", "install it with `apt-get install tcpdump` (the wire proof needs it)")
        # -G/-W: rotate after max_seconds and stop at the first rotation (the time bound); '%' is strftime there
        name = str(pcap).replace("%", "%%")
        return [tcpdump, "-i", ifname, "-w", name, "-U", "--immediate-mode", "-n", "-s", "0",
                "-c", str(self.max_packets), "-G", str(self.max_seconds), "-W", "1", "-Z", "root"]

    def start(self) -> LinkCaptures:
        t0 = time.perf_counter()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            for lk in self.network.links:
                stem = f"{lk.client}-{lk.server}"
                pcap = self.workdir / f"{stem}.pcap"
                proc = ManagedProcess(f"capture {lk.name}",
                                      self.network.exec_argv(lk.server, self._argv(lk.server_if, pcap)),
                                      log_path=self.workdir / f"{stem}.tcpdump.log", stop_signal=signal.SIGINT)
                self._captures.append(_Capture(lk, self.network.namespaces[lk.server], pcap, proc))
                proc.start()
            for cap in self._captures:
                self._await_listening(cap)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        return self

    @staticmethod
    def _await_listening(cap: _Capture) -> None:
        try:
            wait_until(lambda: "listening on" in cap.process.log_tail(5), f"tcpdump on {cap.link.name}",
                       timeout=START_TIMEOUT, alive=cap.process.exit_reason,
                       log_tail=lambda: cap.process.log_tail(10))
        except WaitTimeout as exc:
            raise StartError(f"the capture of link {cap.link.name} did not start\n{exc}") from None

    def stop(self) -> None:
        """Stop every tcpdump by its PID (SIGINT: it flushes and prints its statistics)."""
        for cap in self._captures:
            if cap.process.proc is not None and not cap.stopped:
                cap.ended_early = cap.process.exit_reason()  # None while it still runs: we stop it now
                cap.stopped = True
            cap.process.stop()

    def __enter__(self) -> LinkCaptures:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __iter__(self) -> Iterator[_Capture]:
        return iter(self._captures)

    @property
    def pids(self) -> list[int]:
        return [c.process.pid for c in self._captures if c.process.proc is not None]

    def analyze(self) -> WireProof:
        """Stop the captures (if running) and judge every link."""
        self.stop()
        reports = []
        for cap in self._captures:
            report = analyze_pcap(cap.pcap, link=cap.link.name, interface=cap.link.server_if,
                                  namespace=cap.namespace)
            stats = {kind: int(n) for n, kind in _STATS.findall(cap.process.log_tail(20))}
            report.dropped = stats.get("dropped by kernel")
            if report.dropped:
                report.violations.append(f"tcpdump: {report.dropped} packets dropped by the kernel: not all seen")
            if report.packets >= self.max_packets:
                report.violations.append(f"capture stopped at its bound of {self.max_packets} packets")
            if cap.ended_early and "signal" not in cap.ended_early and "code 0" not in cap.ended_early:
                report.violations.append(f"capture ended before it was stopped ({cap.ended_early})")
            elif cap.ended_early:
                report.violations.append(f"capture ended by its bound before it was stopped ({cap.ended_early})")
            reports.append(report)
        return WireProof(reports)

