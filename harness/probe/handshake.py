"""The probe: one TLS handshake with a chosen identity, trust, name and versions, one HTTP request, one outcome.

    result = probe("127.0.0.1", 8443, server_name="echo.aks.contoso.example", trust=bundle,
                   client_cert=leaf.chain, client_key=leaf.key)
    assert ok(200).matches(result.outcome), result.describe()

Every test, the CLI, the rotation rehearsal and the load generator call :func:`probe`. It uses the stdlib ``ssl``
module with the version bounds, SNI, ALPN and trust set explicitly, writes the HTTP/1.1 request itself (or one
HTTP/2 stream with ``h2`` when ALPN picks ``h2``) and turns whatever happened into one
:class:`~harness.probe.outcomes.Outcome`. Nothing is retried: one call is one TCP connection.

How an outcome is decided (first match wins):

=========================================  ==========================================================================
seen                                       outcome
=========================================  ==========================================================================
connect refused / unreachable / timed out  ``unreachable(reason)``
our verification of the server's chain     ``server_untrusted(reason)``, reason = OpenSSL's verify message
fails                                      ("certificate has expired", "unable to get local issuer certificate",
                                           "Hostname mismatch, …"); hop ``client``, cause from
                                           :func:`harness.probe.causes.cause_of`
a TLS alert received (during the           ``tls_alert(name)``, name from :data:`ALERTS` (OpenSSL reason
handshake or on the first read after it)   ``TLSV13_ALERT_CERTIFICATE_REQUIRED`` → ``certificate_required``)
any other TLS failure, EOF or reset        ``protocol_error(reason)`` (e.g. ``WRONG_VERSION_NUMBER``: the port
without an alert, an unparseable response  answered in plaintext)
``plaintext=True`` and the server says     ``protocol_error(reason)`` (see :func:`probe`)
"plain HTTP … HTTPS port", closes, or
answers with TLS bytes
HTTP 2xx/3xx                               ``ok(status)``
an :data:`DETAIL_HEADER` naming a proxy's  ``upstream_failure(status, detail)``
own upstream failure (:data:`UPSTREAM_
DETAILS`)
a row of :data:`UPSTREAM_FAILURES`         ``upstream_failure(status, page reason)``: 502/504 (nginx, App Gateway),
                                           500 + ``BackendConnectionFailure`` (APIM), 503 + "upstream connect error"
                                           (Envoy)
any other 4xx/5xx                          ``http_reject(status, page reason)``
=========================================  ==========================================================================

The page reason is the key sentence of the error page (:func:`page_reason`): the nginx-style ``<center>`` line
("No required SSL certificate was sent"), the JSON ``message`` (APIM), or the first line of a text body
("client certificate unauthorized").

TLS 1.3 and client certificates: the server judges our certificate only after our Finished, i.e. after
``do_handshake()`` has returned here. Its alert then arrives on the first read. If we had already sent the request
and the server closes with that request unread, its kernel answers with a reset that can destroy the alert before we
read it (measured here: 9 of 200 probes against a server that closes at once saw a bare EOF). So on TLS 1.3, when the
server asked for a client certificate (seen in the handshake), the probe first waits up to :data:`TLS13_VERDICT_WAIT`
seconds for the server's first post-handshake record: session tickets (sent once our Finished is accepted: go on at
once) or the alert. nginx and the pod send tickets; an Envoy listener with session resumption disabled sends none,
so a probe of such a listener pays the whole wait.

The peer chain is captured from the same handshake, also when we refused it: CPython 3.11/3.12 keep the chain the
server sent in ``SSLSocket._sslobj.get_unverified_chain()`` even after a failed verification (public as
``SSLSocket.get_unverified_chain()`` from 3.13), so no second handshake is needed and the chain reported is the
very one refused.

Key material never enters a result: the client key's path is used to load the key and nowhere else.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from harness.errors import InputError, UsageError
from harness.probe.causes import cause_of
from harness.probe.http import (
    UPSTREAM_DETAILS,
    UPSTREAM_FAILURES,
    ProtocolViolation,
    Request,
    classify_response,
    exchange_h1,
    exchange_h2,
    page_reason,
)
from harness.probe.outcomes import (
    Outcome,
    protocol_error,
    server_untrusted,
    tls_alert,
    unreachable,
)
from harness.probe.result import CertInfo, ProbeResult, cert_info

__all__ = [
    "ALERTS",
    "TLS13_VERDICT_WAIT",
    "UPSTREAM_DETAILS",
    "UPSTREAM_FAILURES",
    "CertInfo",
    "ProbeResult",
    "cert_info",
    "classify_response",
    "page_reason",
    "probe",
]

#: OpenSSL reasons for a *received* alert → RFC 8446 alert names (anything else matching ``*_ALERT_*`` is
#: lower-cased by :func:`_alert_name`; the table also covers reasons without ``ALERT`` in them)
ALERTS: Final[Mapping[str, str]] = MappingProxyType({
    "SSLV3_ALERT_UNEXPECTED_MESSAGE": "unexpected_message",
    "SSLV3_ALERT_BAD_RECORD_MAC": "bad_record_mac",
    "TLSV1_ALERT_DECRYPTION_FAILED": "decryption_failed",
    "TLSV1_ALERT_RECORD_OVERFLOW": "record_overflow",
    "SSLV3_ALERT_DECOMPRESSION_FAILURE": "decompression_failure",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake_failure",
    "SSLV3_ALERT_NO_CERTIFICATE": "no_certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": "unsupported_certificate",
    "SSLV3_ALERT_CERTIFICATE_REVOKED": "certificate_revoked",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "certificate_expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown",
    "SSLV3_ALERT_ILLEGAL_PARAMETER": "illegal_parameter",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
    "TLSV1_ALERT_DECODE_ERROR": "decode_error",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt_error",
    "TLSV1_ALERT_EXPORT_RESTRICTION": "export_restriction",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY": "insufficient_security",
    "TLSV1_ALERT_INTERNAL_ERROR": "internal_error",
    "TLSV1_ALERT_INAPPROPRIATE_FALLBACK": "inappropriate_fallback",
    "TLSV1_ALERT_USER_CANCELLED": "user_canceled",
    "TLSV1_ALERT_NO_RENEGOTIATION": "no_renegotiation",
    "TLSV13_ALERT_MISSING_EXTENSION": "missing_extension",
    "TLSV1_UNSUPPORTED_EXTENSION": "unsupported_extension",
    "TLSV1_CERTIFICATE_UNOBTAINABLE": "certificate_unobtainable",
    "TLSV1_UNRECOGNIZED_NAME": "unrecognized_name",
    "TLSV1_BAD_CERTIFICATE_STATUS_RESPONSE": "bad_certificate_status_response",
    "TLSV1_BAD_CERTIFICATE_HASH_VALUE": "bad_certificate_hash_value",
    "TLSV1_ALERT_UNKNOWN_PSK_IDENTITY": "unknown_psk_identity",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required",
    "TLSV1_ALERT_NO_APPLICATION_PROTOCOL": "no_application_protocol",
})

#: longest wait, on TLS 1.3, for the server's verdict on our certificate before the request is sent (see above);
#: servers that send session tickets (OpenSSL, BoringSSL, so nginx, Envoy and the pod) end it at once
TLS13_VERDICT_WAIT: Final = 0.25

_VERSIONS: Final = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
#: OpenSSL reasons that mean our own context cannot offer anything: a usage error, not a server decision
_LOCAL_CONFIG_REASONS: Final = frozenset({"NO_PROTOCOLS_AVAILABLE", "NO_CIPHERS_AVAILABLE",
                                          "UNSUPPORTED_PROTOCOL_VERSION"})
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
#: the probe's phases, as messages name them
_PHASES: Final = {"connect": "connect", "handshake": "TLS handshake", "request": "request", "response": "response",
                  "verdict": "wait for the server's verdict on our certificate (TLS 1.3)"}
_CONTEXT_CACHE_SIZE: Final = 256  # a catalogue pass uses ~80 distinct contexts; the selftest runs 17 passes
_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()
_TOKEN: Final = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_PLAIN_HTTPS_PORT: Final = "plain HTTP request was sent to HTTPS port"


# ---------------------------------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------------------------------
def _alert_name(exc: ssl.SSLError) -> str | None:
    """The name of the alert the server sent, or None when ``exc`` is not a received alert."""
    reason = exc.reason or ""
    if reason in ALERTS:
        return ALERTS[reason]
    m = re.fullmatch(r"(?:SSLV3|TLSV1|TLSV13)_ALERT_([A-Z_]+)", reason)
    if m:
        return m.group(1).lower()
    # a reason code this Python's table does not know: OpenSSL's text still says "tlsv1 alert <name>"
    m = re.search(r"\b(?:sslv3|tlsv1|tlsv13) alert ([a-z ]+?)(?: \(|$)", str(exc))
    return m.group(1).replace(" ", "_") if m else None


def _classify_exception(exc: BaseException, phase_key: str, plaintext: bool) -> Outcome:
    phase = _PHASES.get(phase_key, phase_key)
    if isinstance(exc, ssl.SSLCertVerificationError):
        # the deciding hop is our own client: its verify message is the cause (harness.probe.causes)
        message = exc.verify_message or exc.reason or str(exc)
        return server_untrusted(message, hop="client", cause=cause_of(message))
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        name = _alert_name(exc)
        if name:
            return tls_alert(name)
        if exc.reason == "WRONG_VERSION_NUMBER":
            return protocol_error("WRONG_VERSION_NUMBER: the server did not answer with TLS (a plaintext port?)")
        return protocol_error(f"{exc.reason or type(exc).__name__} during the {phase}")
    if isinstance(exc, ProtocolViolation):
        return protocol_error(str(exc))
    if isinstance(exc, TimeoutError):
        return protocol_error(f"timed out during the {phase}")
    when = "before an HTTP response" if phase_key in ("request", "response") else f"during the {phase}"
    why = "" if plaintext else " (no TLS alert)"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | EOFError):
        return protocol_error(f"connection closed by the server {when}{why}")
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return protocol_error(f"connection reset by the server {when}{why}")
    return protocol_error(f"{type(exc).__name__} during the {phase}: {exc}")


# ---------------------------------------------------------------------------------------------------------------
# input checks and the TLS context
# ---------------------------------------------------------------------------------------------------------------
def _check_inputs(host: str, port: int, *, method: str, path: str, headers: Mapping[str, str], timeout: float,
                  min_version: str, max_version: str, alpn: Sequence[str]) -> None:
    if not host:
        raise UsageError("probe: host is empty — give an address such as 127.0.0.1")
    if not 0 < port < 65536:
        raise UsageError(f"probe: port {port} is out of range — use 1..65535")
    for label, version in (("min_version", min_version), ("max_version", max_version)):
        if version not in _VERSIONS:
            raise UsageError(f"probe: {label}={version!r} is not a TLS version — use one of {', '.join(_VERSIONS)}")
    if _VERSIONS[min_version] > _VERSIONS[max_version]:
        raise UsageError(f"probe: min_version {min_version} is above max_version {max_version} — swap them")
    if timeout <= 0:
        raise UsageError(f"probe: timeout {timeout} must be positive")
    if not _TOKEN.match(method):
        raise UsageError(f"probe: method {method!r} is not an HTTP token — use e.g. GET or POST")
    if not path or any(c in path for c in " \r\n\t") or not (path.startswith("/") or path == "*"):
        raise UsageError(f"probe: path {path!r} must start with '/' and hold no whitespace — URL-encode it")
    for name, value in headers.items():
        if not _TOKEN.match(name) or any(c in value for c in "\r\n\0"):
            raise UsageError(f"probe: header {name!r} has a bad name or a CR/LF/NUL in its value")
    if any(not p or len(p) > 255 for p in alpn):
        raise UsageError(f"probe: ALPN protocol names must be 1..255 bytes, got {list(alpn)!r}")


def _need_file(path: Path, what: str) -> None:
    if not Path(path).is_file():
        raise InputError(path, f"the {what} file does not exist", "check the path, or generate a cert set with "
                         "`mtls-harness certs generate`")


def _no_password() -> bytes:
    raise InputError("client_key", "the client key is encrypted", "give an unencrypted PEM key")


def _file_key(path: Path | None) -> tuple[str, int, int, int] | None:
    if path is None:
        return None
    try:
        st = Path(path).stat()
    except OSError:
        return (str(path), -1, -1, -1)
    return (str(path), st.st_ino, st.st_size, st.st_mtime_ns)


def _cached_context(*, trust: Path | None, client_cert: Path | None, client_key: Path | None, min_version: str,
                    max_version: str, alpn: Sequence[str], verify: bool) -> ssl.SSLContext:
    """Contexts are reused while their files are unchanged (same inode, size and mtime): loading a key and a trust
    bundle costs about 2 ms, a fifth of a probe. A reused client context still makes full handshakes (Python
    resumes a session only when given one), and a rotated file (renamed into place or rewritten) gets a new one."""
    key = (_file_key(trust), _file_key(client_cert), _file_key(client_key), min_version, max_version, tuple(alpn),
           verify)
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.pop(key, None)
        if ctx is not None:
            _CONTEXTS[key] = ctx  # most recently used last
            return ctx
    ctx = _context(trust=trust, client_cert=client_cert, client_key=client_key, min_version=min_version,
                   max_version=max_version, alpn=alpn, verify=verify)
    with _CONTEXTS_LOCK:
        _CONTEXTS[key] = ctx
        while len(_CONTEXTS) > _CONTEXT_CACHE_SIZE:
            _CONTEXTS.pop(next(iter(_CONTEXTS)))
    return ctx


def _context(*, trust: Path | None, client_cert: Path | None, client_key: Path | None, min_version: str,
             max_version: str, alpn: Sequence[str], verify: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _install_cert_request_watch(ctx)
    if verify:
        if trust is not None:
            _need_file(trust, "trust bundle")
            try:
                ctx.load_verify_locations(cafile=str(trust))
            except ssl.SSLError as exc:
                raise InputError(trust, f"holds no usable PEM certificate ({exc.reason})",
                                 "give a PEM bundle of CA certificates") from None
        else:
            ctx.load_default_certs()
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if min_version in ("1.0", "1.1"):
        # OpenSSL 3 offers no cipher suite below TLS 1.2 at the default security level 1
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # TLSVersion.TLSv1/TLSv1_1 warn: deliberate here, to show they are refused
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = _VERSIONS[min_version]
        ctx.maximum_version = _VERSIONS[max_version]
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if client_key is not None and client_cert is None:
        raise UsageError("probe: client_key given without client_cert — give both, or neither")
    if client_cert is not None:
        _need_file(client_cert, "client certificate")
        if client_key is not None:
            _need_file(client_key, "client key")
        try:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None, password=_no_password)
        except ssl.SSLError as exc:
            raise InputError(client_cert, f"cannot be used with its key ({exc.reason})",
                             "give the PEM chain and the matching unencrypted PEM key") from None
    return ctx


def _peer_chain(sock: ssl.SSLSocket) -> tuple[CertInfo, ...]:
    getter = getattr(sock, "get_unverified_chain", None)  # Python 3.13+
    sslobj = getattr(sock, "_sslobj", None)
    if getter is None and sslobj is not None:
        getter = getattr(sslobj, "get_unverified_chain", None)  # 3.10-3.12, still there after a failed verify
    if getter is None:
        return ()
    try:
        raw = getter() or []
    except (ssl.SSLError, ValueError, AttributeError):
        return ()
    out: list[CertInfo] = []
    for item in raw:
        der = item if isinstance(item, bytes) else item.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
        with contextlib.suppress(ValueError):
            out.append(cert_info(der))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# the probe
# ---------------------------------------------------------------------------------------------------------------
class _Deadline:
    def __init__(self, timeout: float) -> None:
        self.end = time.monotonic() + timeout

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("probe deadline reached")
        return left


_HANDSHAKE_RECORD: Final = 22  # TLS ContentType handshake
_CERTIFICATE_REQUEST: Final = 13  # HandshakeType certificate_request
#: sockets whose server sent a CertificateRequest (filled by the context's message callback)
_CERT_REQUESTED: weakref.WeakSet[Any] = weakref.WeakSet()


def _watch_cert_request(conn: Any, direction: str, _version: Any, content_type: Any, msg_type: Any,
                        _data: bytes) -> None:
    if direction == "read" and content_type == _HANDSHAKE_RECORD and msg_type == _CERTIFICATE_REQUEST:
        _CERT_REQUESTED.add(conn)


def _install_cert_request_watch(ctx: ssl.SSLContext) -> bool:
    """Tell, per connection, whether the server asked for a client certificate. Uses CPython's private
    ``SSLContext._msg_callback`` (there since 3.8); without it every TLS 1.3 probe waits for a verdict."""
    try:
        ctx._msg_callback = _watch_cert_request  # type: ignore[attr-defined]
    except AttributeError:
        return False
    return True


def _await_tls13_verdict(sock: ssl.SSLSocket, deadline: _Deadline, watched: bool,
                         wait: float = TLS13_VERDICT_WAIT) -> bytes:
    """On TLS 1.3, when the server asked for a client certificate, read its first post-handshake record (tickets
    or an alert) before sending anything; returns application data that came instead (an HTTP/2 SETTINGS)."""
    if wait <= 0 or sock.version() != "TLSv1.3" or (watched and sock not in _CERT_REQUESTED):
        return b""
    readable, _, _ = select.select([sock], [], [], min(wait, deadline.left()))
    if not readable:
        return b""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except ssl.SSLWantReadError:  # only session tickets so far: the server accepted our Finished
        return b""
    finally:
        sock.setblocking(True)
    if data == b"":
        raise EOFError("closed by the server")
    return data


def probe(host: str, port: int, *, server_name: str | None, trust: Path | None, client_cert: Path | None = None,
          client_key: Path | None = None, min_version: str = "1.2", max_version: str = "1.3",
          alpn: Sequence[str] = ("http/1.1",), method: str = "GET", path: str = "/",
          headers: Mapping[str, str] = _NO_HEADERS, body: bytes = b"", http_host: str | None = None,
          timeout: float = 5.0, verify: bool = True, plaintext: bool = False,
          verdict_wait: float | None = None) -> ProbeResult:
    """Connect to ``host:port``, handshake, send one request, classify; never raises for what the server does.

    - ``server_name``: SNI and the name the server's certificate is checked against. ``None`` sends no SNI and checks
      the certificate against ``host`` (an IP address then needs an IP SAN).
    - ``trust``: PEM file of trust anchors; ``None`` uses the system store. ``verify=False`` accepts any server cert.
    - ``client_cert`` (PEM chain, leaf first) and ``client_key``: the identity presented; ``None`` presents none.
    - ``min_version``/``max_version``: "1.0".."1.3". Below 1.2 the cipher list is opened with ``@SECLEVEL=0``
      (OpenSSL 3 offers no suite below TLS 1.2 at the default level), so a refusal is the server's.
    - ``alpn``: protocols offered; when the server picks ``h2`` the request goes as one HTTP/2 stream.
    - ``http_host``: the Host header / ``:authority``; default ``server_name`` (or ``host``), with ``:port`` unless
      the port is 443, as curl and httpx send it.
    - ``timeout``: one deadline for the whole probe (connect, handshake, request, response).
    - ``verdict_wait``: how long to wait, on TLS 1.3 when the server asked for a client cert, for a rejection alert
      before sending (default :data:`TLS13_VERDICT_WAIT`); 0 for a server known to answer a bad cert with an HTTP
      page rather than an alert (nginx with ssl_verify_client, the Envoy stand-ins) — targets set it per hop.
    - ``plaintext=True`` sends the request as plain HTTP over TCP, to show a TLS port refuses it. nginx answers
      400 "The plain HTTP request was sent to HTTPS port", Envoy closes the connection, a TLS server may answer with
      a TLS alert record: all of these are ``protocol_error`` (so one expectation covers every hop); a server that
      really speaks plain HTTP gets the ordinary HTTP classification.

    Bad arguments (unknown version, missing file, key not matching the cert) raise :class:`~harness.errors.UsageError`
    / :class:`~harness.errors.InputError`; everything the network or the server does becomes the result's outcome.
    """
    _check_inputs(host, port, method=method, path=path, headers=headers, timeout=timeout, min_version=min_version,
                  max_version=max_version, alpn=alpn)
    ctx = None if plaintext else _cached_context(trust=trust, client_cert=client_cert, client_key=client_key,
                                                 min_version=min_version, max_version=max_version, alpn=alpn,
                                                 verify=verify)
    name = server_name or host
    host_part = f"[{name}]" if ":" in name else name
    req = Request(method, path, http_host or (host_part if port == 443 else f"{host_part}:{port}"), headers, body)
    started = time.monotonic()
    deadline = _Deadline(timeout)
    state: dict[str, Any] = {"phase": "connect", "chain": (), "version": None, "cipher": None, "alpn": None}
    response: tuple[int, dict[str, str], bytes] | None = None
    error: BaseException | None = None
    outcome: Outcome | None = None
    raw: socket.socket | None = None
    tls: ssl.SSLSocket | None = None
    try:
        try:
            raw = socket.create_connection((host, port), timeout=deadline.left())
            # no Nagle: our request must not wait for the ACK of our Finished (a server that sends no session
            # ticket delays that ACK by 40 ms; measured against Envoy)
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            error, outcome = exc, unreachable(f"timed out connecting to {host}:{port}")
        except socket.gaierror as exc:
            error, outcome = exc, unreachable(f"cannot resolve {host!r}: {exc.strerror}")
        except OSError as exc:
            error, outcome = exc, unreachable(exc.strerror or str(exc))
        if raw is None:
            pass
        elif ctx is None:
            state["phase"] = "request"
            response = exchange_h1(raw, deadline.left, req, state=state)
        else:
            state["phase"] = "handshake"
            raw.settimeout(deadline.left())
            tls = ctx.wrap_socket(raw, server_hostname=name, do_handshake_on_connect=False)
            raw = None  # owned by ``tls`` now
            try:
                tls.do_handshake()
            finally:
                state["chain"] = _peer_chain(tls)
            state.update(version=tls.version(), cipher=(tls.cipher() or (None,))[0],
                         alpn=tls.selected_alpn_protocol(), phase="verdict")
            watched = getattr(ctx, "_msg_callback", None) is _watch_cert_request
            early = _await_tls13_verdict(tls, deadline, watched,
                                         TLS13_VERDICT_WAIT if verdict_wait is None else verdict_wait)
            state["phase"] = "request"
            if state["alpn"] == "h2":
                response = exchange_h2(tls, deadline.left, req, early=early, state=state)
            else:
                response = exchange_h1(tls, deadline.left, req, early=early, state=state)
            state["phase"] = "done"
    except ssl.SSLError as exc:
        if exc.reason in _LOCAL_CONFIG_REASONS:
            raise UsageError(f"probe: this OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer TLS "
                             f"{min_version}..{max_version} with the given settings ({exc.reason})") from None
        error = exc
    except (OSError, EOFError, ProtocolViolation) as exc:
        error = exc
    finally:
        for s in (tls, raw):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
    status, resp_headers, resp_body = response if response is not None else (None, {}, b"")
    if outcome is None:
        if status is not None:
            outcome = classify_response(status, resp_headers, resp_body)
            if plaintext and status == 400 and _PLAIN_HTTPS_PORT in resp_body.decode(errors="replace"):
                outcome = protocol_error(page_reason(status, resp_headers, resp_body) or _PLAIN_HTTPS_PORT)
        else:
            assert error is not None
            outcome = _classify_exception(error, state["phase"], plaintext)
    return ProbeResult(
        outcome=outcome, tls_version=state["version"], cipher=state["cipher"], alpn=state["alpn"],
        peer_chain=state["chain"], status=status, headers=resp_headers, body=resp_body,
        elapsed=time.monotonic() - started,
        error=f"{type(error).__name__}: {error}" if error is not None else None,
        target=f"{host}:{port}", server_name=server_name, client_cert=str(client_cert) if client_cert else None,
        phase=state["phase"],
    )
