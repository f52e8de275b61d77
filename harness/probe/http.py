"""HTTP for the probe: one request and one complete response over an already connected (TLS) socket, and the
table that turns an HTTP answer into an outcome.

HTTP/1.1 is written and parsed here (``Connection: close``; body by Content-Length, chunked, or to EOF); HTTP/2 is
one stream with the ``h2`` state machine. Both are bounded: :data:`MAX_HEAD` bytes of status line and headers,
:data:`MAX_BODY` bytes of body, a caller-given deadline on every socket call. Bytes that are not the HTTP we asked
for raise :class:`ProtocolViolation`; a close before any byte raises :class:`EOFError`; :mod:`harness.probe.handshake`
turns
both into outcomes. A complete answer is classified by :func:`classify_response` (re-exported by
:mod:`harness.probe.handshake`, whose docstring has the whole outcome table).
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import json
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from harness.model.wire import DETAIL_HEADER
from harness.probe.causes import detail_attribution
from harness.probe.outcomes import Outcome, http_reject, ok, upstream_failure

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "UPSTREAM_DETAILS",
    "UPSTREAM_FAILURES",
    "USER_AGENT",
    "ProtocolViolation",
    "Request",
    "classify_response",
    "exchange_h1",
    "exchange_h2",
    "page_reason",
]

MAX_HEAD: Final = 64 * 1024
MAX_BODY: Final = 16 * 1024 * 1024
USER_AGENT: Final = "mtls-harness-probe/0.1"
#: 1xx answers skipped before the final one
_MAX_INTERIM: Final = 8
_STATUS_LINE: Final = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?")
#: connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2)
_H2_DROP: Final = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"})

#: a stand-in proxy may report Envoy's %RESPONSE_CODE_DETAILS% in this response header

#: fragments of Envoy response-code details that mean "this proxy could not complete its upstream connection"
#: (``via_upstream`` — the upstream's own answer — is deliberately absent: an app's own 503 is not a failure)
UPSTREAM_DETAILS: Final = ("TLS_error", "upstream_reset_before_response_started", "no_healthy_upstream",
                           "upstream_response_timeout", "upstream_connect")

#: (status, body marker or None, who answers like that) — an HTTP answer that means a proxy's upstream failed
UPSTREAM_FAILURES: Final = (
    (502, None, "nginx proxy_pass / App Gateway backend: Bad Gateway"),
    (504, None, "nginx / App Gateway: Gateway Timeout"),
    (500, "BackendConnectionFailure", "APIM: backend TLS or connection failure"),
    (503, "upstream connect error", "Envoy: upstream connect error or disconnect/reset before headers"),
)

Left = Callable[[], float]  # seconds left before the probe's deadline; raises TimeoutError when none are
Response = tuple[int, dict[str, str], bytes]


class ProtocolViolation(Exception):
    """The peer answered with something other than the HTTP response asked for."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    authority: str  # Host header / :authority
    headers: Mapping[str, str]  # the caller's; they replace the defaults of the same name
    body: bytes

    @property
    def sends_length(self) -> bool:
        """Add Content-Length: there is a body (or the method expects one) and the caller chose no framing."""
        framed = any(n.lower() in ("content-length", "transfer-encoding") for n in self.headers)
        return not framed and (bool(self.body) or self.method in ("POST", "PUT", "PATCH"))


def _send(sock: Any, data: bytes, left: Left) -> None:
    sock.settimeout(left())
    sock.sendall(data)


def _send_then_read(sock: Any, data: bytes, left: Left, read: Callable[[], Response]) -> Response:
    """Send ``data``, then ``read()`` the response. When the send fails because the server stopped reading, the
    server may have answered already (a 413 before the whole body, a TLS 1.3 alert): read that before giving up."""
    try:
        _send(sock, data, left)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
            raise
        try:
            return read()
        except ssl.SSLError as alert:
            if isinstance(alert, ssl.SSLEOFError):
                raise exc from None
            raise alert from None
        except (OSError, EOFError, ProtocolViolation):
            raise exc from None
    return read()


class _Reader:
    def __init__(self, sock: Any, left: Left, initial: bytes) -> None:
        self.sock = sock
        self.left = left
        self.buf = bytearray(initial)
        self.total = len(initial)

    def fill(self) -> bool:
        self.sock.settimeout(self.left())
        try:
            data = self.sock.recv(65536)
        except ssl.SSLEOFError:  # a close without close_notify: the end, as for the many servers that do that
            data = b""
        if not data:
            return False
        if self.total == 0 and data[:1] in (b"\x15", b"\x16") and data[1:2] == b"\x03":
            raise ProtocolViolation("the server answered with TLS records, not HTTP: it is a TLS port")
        self.buf += data
        self.total += len(data)
        return True

    def _eof(self) -> Exception:
        if self.total == 0:
            return EOFError("closed by the server")
        return ProtocolViolation(f"incomplete HTTP response: the server closed after {self.total} bytes")

    def until(self, sep: bytes, limit: int) -> bytes:
        while True:
            idx = self.buf.find(sep)
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[: idx + len(sep)]
                return out
            if len(self.buf) > limit:
                raise ProtocolViolation(f"no {sep!r} within {limit} bytes: not an HTTP response")
            if not self.fill():
                raise self._eof()

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self.fill():
                raise self._eof()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def rest(self, limit: int) -> bytes:
        while self.fill():
            if len(self.buf) > limit:
                raise ProtocolViolation(f"response body larger than {limit} bytes")
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.split(b"\r\n")
    m = _STATUS_LINE.fullmatch(lines[0])
    if not m:
        raise ProtocolViolation(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolViolation(f"malformed header line: {line[:60]!r}")
        key, val = name.decode("latin-1").lower(), value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {val}" if key in headers else val
    return int(m.group(1)), headers


def _chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while True:
        size_line = reader.until(b"\r\n", 1024).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProtocolViolation(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD):  # trailers, up to the empty line
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise ProtocolViolation(f"response body larger than {MAX_BODY} bytes")
        body += reader.exact(size)
        if reader.exact(2) != b"\r\n":
            raise ProtocolViolation("chunk not followed by CRLF")


def _h1_request(req: Request) -> bytes:
    fields = {"host": ("Host", req.authority), "user-agent": ("User-Agent", USER_AGENT),
              "accept": ("Accept", "*/*"), "connection": ("Connection", "close")}
    if req.sends_length:
        fields["content-length"] = ("Content-Length", str(len(req.body)))
    for name, value in req.headers.items():
        fields[name.lower()] = (name, value)
    lines = [f"{req.method} {req.path} HTTP/1.1"] + [f"{n}: {v}" for n, v in fields.values()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + req.body


def exchange_h1(sock: Any, left: Left, req: Request, *, early: bytes = b"", state: dict[str, Any]) -> Response:
    """Send one HTTP/1.1 request on ``sock`` and read the whole response (``early``: bytes already read)."""

    def read() -> Response:
        state["phase"] = "response"
        return _read_h1(_Reader(sock, left, early), req.method)

    return _send_then_read(sock, _h1_request(req), left, read)


def _read_h1(reader: _Reader, method: str) -> Response:
    for _ in range(_MAX_INTERIM + 1):
        status, resp_headers = _parse_head(reader.until(b"\r\n\r\n", MAX_HEAD))
        if not (100 <= status < 200) or status == 101:
            break
    else:
        raise ProtocolViolation(f"more than {_MAX_INTERIM} interim (1xx) responses")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, resp_headers, b""
    if "chunked" in resp_headers.get("transfer-encoding", "").lower():
        return status, resp_headers, _chunked(reader)
    if "content-length" in resp_headers:
        try:
            length = int(resp_headers["content-length"].split(",")[0])
        except ValueError:
            raise ProtocolViolation(f"bad Content-Length {resp_headers['content-length']!r}") from None
        if not 0 <= length <= MAX_BODY:
            raise ProtocolViolation(f"Content-Length {length} outside 0..{MAX_BODY}")
        return status, resp_headers, reader.exact(length)
    return status, resp_headers, reader.rest(MAX_BODY)


def exchange_h2(sock: Any, left: Left, req: Request, *, early: bytes = b"", state: dict[str, Any]) -> Response:
    """Send one request as HTTP/2 stream 1 and read the whole response (``early``: bytes already read, such as
    the server's SETTINGS)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    fields = {":method": req.method, ":scheme": "https", ":authority": req.authority, ":path": req.path,
              "user-agent": USER_AGENT, "accept": "*/*"}
    if req.sends_length:
        fields["content-length"] = str(len(req.body))
    for name, value in req.headers.items():
        if name.lower() not in _H2_DROP:
            fields[name.lower()] = value
    conn.send_headers(sid, list(fields.items()), end_stream=not req.body)
    _send(sock, conn.data_to_send(), left)
    pending = memoryview(req.body)
    status: int | None = None
    resp_headers: dict[str, str] = {}
    data = bytearray()
    ended = False
    settings_seen = False  # the body waits for the server's SETTINGS: its stream window may be below 65535
    inbound = early
    state["phase"] = "response"
    while not ended:
        while pending and settings_seen:
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, len(pending))
            if room <= 0:
                break
            conn.send_data(sid, bytes(pending[:room]), end_stream=room == len(pending))
            pending = pending[room:]
        if out := conn.data_to_send():
            _send(sock, out, left)
        if inbound:
            chunk, inbound = inbound, b""
        else:
            sock.settimeout(left())
            chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed by the server") if status is None else ProtocolViolation(
                "HTTP/2 connection closed before the response ended")
        try:
            events = conn.receive_data(chunk)
        except h2.exceptions.ProtocolError as exc:
            raise ProtocolViolation(f"HTTP/2 protocol error: {exc}") from None
        for ev in events:
            if isinstance(ev, h2.events.RemoteSettingsChanged):
                settings_seen = True
            elif isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                for k, v in ev.headers or []:
                    key, val = str(k), str(v)
                    if key == ":status":
                        status = int(val)
                    elif not key.startswith(":"):
                        resp_headers[key] = f"{resp_headers[key]}, {val}" if key in resp_headers else val
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                data += ev.data or b""
                if len(data) > MAX_BODY:
                    raise ProtocolViolation(f"response body larger than {MAX_BODY} bytes")
                conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                ended = True
            elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                raise ProtocolViolation(f"HTTP/2 stream reset by the server (error code {ev.error_code})")
            elif isinstance(ev, h2.events.ConnectionTerminated) and not ended:
                raise ProtocolViolation(f"HTTP/2 GOAWAY from the server (error code {ev.error_code})")
    if status is None:
        raise ProtocolViolation("HTTP/2 stream ended without a :status")
    conn.close_connection()
    with contextlib.suppress(OSError):  # the answer is complete; a failed GOAWAY changes nothing
        _send(sock, conn.data_to_send(), left)
    return status, resp_headers, bytes(data)


# ---------------------------------------------------------------------------------------------------------------
# HTTP answers → outcomes
# ---------------------------------------------------------------------------------------------------------------
def page_reason(status: int, headers: Mapping[str, str], body: bytes) -> str | None:
    """The key sentence of an error page: JSON ``message`` (APIM; also ``error.message``, ``error``, RFC 7807
    ``detail``/``title``; None for JSON with none of them), the nginx ``<center>`` line, ``<title>``, first line."""
    text = body[:65536].decode(errors="replace").strip()
    if not text:
        return None
    if text.startswith(("{", "[")) or "json" in headers.get("content-type", ""):
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        else:
            inner = doc.get("error") if isinstance(doc, dict) else None
            candidates = (doc.get("message"), inner.get("message") if isinstance(inner, dict) else inner,
                          doc.get("detail"), doc.get("title")) if isinstance(doc, dict) else ()
            return next((m for m in candidates if isinstance(m, str) and m), None)
    if "<" in text:
        centers = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                   for c in re.findall(r"<center>(.*?)</center>", text, re.S | re.I)]
        for c in centers:  # nginx: <h1>400 Bad Request</h1>, then the sentence, then the server's name
            if c and not re.match(rf"{status}\b", c) and not c.lower().startswith(("nginx", "microsoft")):
                return c
        for tag in ("title", "h1"):
            m = re.search(rf"<{tag}[^>]*>(.*?)</{tag}>", text, re.S | re.I)
            if m:
                return re.sub(rf"^{status}\s+", "", html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).strip())
    first = next(line.strip() for line in text.splitlines() if line.strip())
    return first[:200]


def classify_response(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    """The outcome of a complete HTTP answer (the table in this module's docstring, HTTP rows); a stand-in's detail
    header, where present, names the hop that made the answer and its cause (:mod:`harness.probe.causes`)."""
    if 200 <= status < 400:
        return ok(status)
    return _attributed(_classify_error(status, headers, body), headers)


def _attributed(outcome: Outcome, headers: Mapping[str, str]) -> Outcome:
    found = detail_attribution(headers)
    if found is None:
        return outcome
    hop, cause = found
    return dataclasses.replace(outcome, hop=hop, cause=cause)


def _classify_error(status: int, headers: Mapping[str, str], body: bytes) -> Outcome:
    detail = headers.get(DETAIL_HEADER, "")
    if detail and any(d in detail for d in UPSTREAM_DETAILS):
        return upstream_failure(status, detail)
    reason = page_reason(status, headers, body)
    head = body[:65536].decode(errors="replace")
    for code, marker, _who in UPSTREAM_FAILURES:
        if status == code and (marker is None or marker in head):
            return upstream_failure(status, reason)
    return http_reject(status, reason)
