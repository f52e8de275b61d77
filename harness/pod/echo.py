"""The echo pod: an HTTPS backend that answers every request with what it saw, as JSON.

    python -m harness.pod.echo --listen 127.0.0.1:8443 --cert chain.pem --key key.pem \\
        [--client-ca bundle.pem] [--client-auth none|optional|required] [--min-version 1.2] [--max-version 1.3] \\
        [--ready-file PATH]

Every method and path gets ``200`` and the document :func:`echo_document` builds: the request line, the pod's own
TLS session (version, cipher, SNI, ALPN), the client certificate it verified (``peer``), all request headers
(names lower-cased) and the hop trace — the ``x-mtls-trace-*`` entries of the proxies in front
(:mod:`harness.model.wire`) plus the pod's own entry in the same field names, with the connection the request came on
(``connection``: the pod's number for it; ``connection_requests``: the request's place on it; ``session_reused``:
whether its handshake resumed a TLS session), so a test sees upstream keep-alive and resumption.
``/status/NNN`` answers with status NNN (so a test can show that an app's own 503 is passed through, not rewritten);
``/close`` answers the echo with ``Connection: close`` and closes the connection (so a test can end a pooled one).

ingress-nginx passes the client certificate it verified as ``ssl-client-cert`` (URL-escaped PEM) but nginx 1.22 has
no SHA-256 variable, so the pod fills the ingress entry's ``peer_sha256`` from that header when it is empty.

Built on the stdlib ``ThreadingHTTPServer``: no dependency, starts in about a tenth of a second, and the stdlib
``ssl`` server is OpenSSL — the same library as nginx. Each connection's handshake runs in that connection's thread
(never in the accept loop, so a stalled client blocks nobody) with a :data:`HANDSHAKE_TIMEOUT`. Request bodies are
capped at :data:`MAX_BODY` (``413`` above). One line per request and per failed handshake goes to stderr; no key
material is ever logged. SIGTERM and SIGINT stop it at once (exit code 0).

SIGHUP reloads ``--cert``, ``--key`` and ``--client-ca`` from their paths, as an app watching a mounted Kubernetes
Secret does (cert-manager rotates those in place): new handshakes use the new files, connections already open keep
theirs. It logs ``reloaded certificates (generation N, serving sha256 …)``; files it cannot use are logged as
``reload failed (generation N): …`` and the pod keeps serving what it had, as nginx does with a bad reload.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final

from harness.model.wire import FIELDS, POD_FIELDS, parse_headers

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_BODY", "EchoServer", "echo_document", "main", "make_context"]

#: the largest request body the pod reads; larger ones get 413
MAX_BODY: Final = 1024 * 1024
#: seconds a client may take to complete the TLS handshake
HANDSHAKE_TIMEOUT: Final = 10.0
#: seconds an idle keep-alive connection is kept
IDLE_TIMEOUT: Final = 30.0
#: ingress-nginx's header with the verified client cert (auth-tls-pass-certificate-to-upstream)
CLIENT_CERT_HEADER: Final = "ssl-client-cert"

#: a refused (413) body is read and dropped up to this many bytes, within this many seconds per read
_DRAIN_MAX: Final = 8 * 1024 * 1024
_DRAIN_TIMEOUT: Final = 2.0
_VERSIONS: Final = {"1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1, "1.2": ssl.TLSVersion.TLSv1_2,
                    "1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_AUTH: Final = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_STATUS_PATH: Final = re.compile(r"/status/(\d{3})")
_CLOSE_PATH: Final = "/close"


#: also append the log lines here (``--log FILE``: a pod in a container, whose stderr the harness cannot tail)
_LOG_FILE: list[Path] = []


def _log(line: str, *, at: float | None = None) -> None:
    # stamped with the epoch time (of the event, ``at``, else now): a line written after its probe ended is not
    # taken for the next probe's (harness.targets.base.RunningChain.evidence_since)
    line = f"{line} at={at if at is not None else time.time():.3f}"
    sys.stderr.write(f"pod: {line}\n")
    sys.stderr.flush()
    for path in _LOG_FILE:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"pod: {line}\n")


def _cert_facts(der: bytes) -> dict[str, Any]:
    """subject, issuer (RFC 4514, as nginx and Envoy print them), sha256 (hex of the DER), serial."""
    from cryptography import x509  # imported on first use (and warmed up in a thread at start)

    cert = x509.load_der_x509_certificate(der)
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "sha256": hashlib.sha256(der).hexdigest(), "serial": cert.serial_number}


def _escaped_pem_sha256(value: str) -> str | None:
    """SHA-256 of the first certificate in an URL-escaped PEM (``$ssl_client_escaped_cert``), or None."""
    return _pem_sha256(urllib.parse.unquote(value))


def _pem_sha256(pem: str) -> str | None:
    """SHA-256 of the first certificate in PEM text, or None when there is none."""
    try:
        start = pem.index("-----BEGIN CERTIFICATE-----")
        end = pem.index("-----END CERTIFICATE-----", start) + len("-----END CERTIFICATE-----")
        return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[start:end])).hexdigest()
    except ValueError:
        return None


def echo_document(*, method: str, path: str, headers: Sequence[tuple[str, str]], tls: dict[str, str | None],
                  peer_der: bytes | None, body: bytes, connection: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON the pod answers with (pure: the handler gathers the facts, this arranges them). ``connection``: the
    :data:`~harness.model.wire.POD_FIELDS` of the connection the request came on (empty when not given)."""
    merged: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    trace: dict[str, dict[str, str]] = dict(parse_headers(merged))
    if CLIENT_CERT_HEADER in merged:
        ingress = trace.setdefault("ingress", {})
        if not ingress.get("peer_sha256"):
            ingress["peer_sha256"] = _escaped_pem_sha256(merged[CLIENT_CERT_HEADER]) or ""
    peer = _cert_facts(peer_der) if peer_der else None
    own = {"tls": tls.get("version") or "", "cipher": tls.get("cipher") or "", "sni": tls.get("sni") or "",
           "peer_sha256": peer["sha256"] if peer else "", "peer_subject": peer["subject"] if peer else "",
           "peer_issuer": peer["issuer"] if peer else "", "verify": "SUCCESS" if peer else "NONE"}
    trace["pod"] = {f: own[f] for f in FIELDS} | {f: (connection or {}).get(f, "") for f in POD_FIELDS}
    return {"hop": "pod", "method": method, "path": path, "tls": tls, "peer": peer, "headers": merged,
            "trace": trace, "body_length": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


class _Stop(BaseException):
    """Raised by the SIGTERM/SIGINT handler to leave serve_forever at once. A BaseException, as KeyboardInterrupt is:
    socketserver's ``_handle_request_noblock`` catches every ``Exception`` raised while it starts a connection's thread
    (and serves on), so a SIGTERM landing there — likelier under load, where the thread start waits — was swallowed and
    the pod kept running (seen: ``tests/integration/test_causes.py`` found the pod alive 5 s after SIGTERM in CI)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out as two writes: with Nagle on, a keep-alive client's delayed ACK stalls each answer ~40 ms
    disable_nagle_algorithm = True
    server_version = "mtls-harness-echo/0.1"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: EchoServer

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method gets the echo, not a 501
            return self._echo
        raise AttributeError(name)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.isdigit():
            self._answer(400, {"error": f"bad Content-Length {raw!r}"}, close=True)
            return None
        if int(raw) > MAX_BODY:
            self._answer(413, {"error": f"request body larger than {MAX_BODY} bytes"}, close=True)
            self._drain(int(raw))
            return None
        return self.rfile.read(int(raw))

    def _drain(self, length: int) -> None:
        """Read (and drop) a refused body, bounded, so the client reads the 413 instead of a reset."""
        self.request.settimeout(_DRAIN_TIMEOUT)
        left = min(length, _DRAIN_MAX)
        try:
            while left > 0:
                chunk = self.rfile.read1(min(left, 65536))
                if not chunk:
                    return
                left -= len(chunk)
        except OSError:
            return

    def _read_chunked(self) -> bytes | None:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                self._answer(400, {"error": "bad chunk size"}, close=True)
                return None
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY:
                self._answer(413, {"error": f"request body larger than {MAX_BODY} bytes"}, close=True)
                return None
            body += self.rfile.read(size)
            self.rfile.readline(8)

    def _tls_facts(self) -> dict[str, str | None]:
        sock: ssl.SSLSocket = self.request
        cipher = sock.cipher()
        return {"version": sock.version(), "cipher": cipher[0] if cipher else None,
                "sni": self.server.sni_of(sock), "alpn": sock.selected_alpn_protocol()}

    def _echo(self) -> None:
        body = self._read_body()
        if body is None:
            return
        status = 200
        m = _STATUS_PATH.fullmatch(urllib.parse.urlsplit(self.path).path)
        if m:
            status = int(m.group(1))
            if not 200 <= status <= 599:
                self._answer(400, {"error": f"/status/{status}: use a status from 200 to 599"})
                return
        conn = self.server.connection_of(self.request)
        conn.requests += 1
        facts = {"connection": str(conn.number), "connection_requests": str(conn.requests),
                 "session_reused": "true" if self.request.session_reused else "false"}
        doc = echo_document(method=self.command, path=self.path, headers=list(self.headers.items()),
                            tls=self._tls_facts(), peer_der=self.request.getpeercert(binary_form=True), body=body,
                            connection=facts)
        self._answer(status, doc, close=urllib.parse.urlsplit(self.path).path == _CLOSE_PATH)

    def _answer(self, status: int, doc: dict[str, Any], *, close: bool = False) -> None:
        data = json.dumps(doc).encode() if status not in (204, 304) else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        sock: ssl.SSLSocket = self.request
        der = sock.getpeercert(binary_form=True)
        peer = hashlib.sha256(der).hexdigest()[:16] if der else "none"
        conn = self.server.connection_of(sock)
        _log(f'{self.client_address[0]}:{self.client_address[1]} "{self.requestline}" {code} '
             f"tls={sock.version()} sni={self.server.sni_of(sock) or '-'} peer={peer} conn={conn.number} "
             f"resumed={'yes' if sock.session_reused else 'no'}")

    def log_message(self, format: str, *args: Any) -> None:
        _log(f"{self.client_address[0]}:{self.client_address[1]} " + (format % args))


class _Connection:
    """The pod's number for one accepted connection and how many requests came on it."""

    __slots__ = ("accepted", "number", "requests")

    def __init__(self, number: int) -> None:
        self.number, self.requests = number, 0
        #: when it was accepted (before its client could see any outcome): the stamp of its handshake's log line
        self.accepted = time.time()


class EchoServer(ThreadingHTTPServer):
    """The pod's server: TLS wrapped per connection, handshakes in the connection's thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sni: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._connections: weakref.WeakKeyDictionary[Any, _Connection] = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)
        self.use_context(context)
        super().__init__(address, _Handler)

    def use_context(self, context: ssl.SSLContext) -> None:
        """New connections handshake with ``context`` (one attribute swap: a connection gets the old or the new)."""
        context.sni_callback = self._remember_sni
        self.context = context

    def server_bind(self) -> None:
        # HTTPServer.server_bind would resolve the host's FQDN (a DNS lookup at start): not needed, not wanted
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def _remember_sni(self, sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        if name:
            self._sni[sock] = name

    def sni_of(self, sock: ssl.SSLSocket) -> str | None:
        return self._sni.get(sock)

    def connection_of(self, sock: ssl.SSLSocket) -> _Connection:
        """The pod's record of ``sock`` (numbered when it was accepted)."""
        conn = self._connections.get(sock)
        if conn is None:
            conn = self._connections[sock] = _Connection(next(self._numbers))
        return conn

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.connection_of(wrapped)  # numbered and stamped as it is accepted
        return wrapped, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        conn = self.connection_of(request)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
            # stamped with the connection's accept time: its client may have seen the refusal, and started another
            # probe, before this thread got to write the line
            _log(f"{client_address[0]}:{client_address[1]} conn={conn.number} handshake failed: "
                 f"{type(exc).__name__}: {reason}", at=conn.accepted)
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        _log(f"{client_address[0]}:{client_address[1]} connection error: {type(exc).__name__}: {exc}")


def make_context(*, cert: Path, key: Path, client_ca: Path | None, client_auth: str, min_version: str = "1.2",
                 max_version: str = "1.3") -> ssl.SSLContext:
    """The pod's server context; ValueError with a one-line reason for an unusable input."""
    if client_auth not in _CLIENT_AUTH:
        raise ValueError(f"--client-auth {client_auth!r}: use none, optional or required")
    if client_auth != "none" and client_ca is None:
        raise ValueError(f"--client-auth {client_auth} needs --client-ca (the CA bundle client certs must chain to)")
    for label, v in (("--min-version", min_version), ("--max-version", max_version)):
        if v not in _VERSIONS:
            raise ValueError(f"{label} {v!r}: use one of {', '.join(_VERSIONS)}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if min_version in ("1.0", "1.1"):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version, ctx.maximum_version = _VERSIONS[min_version], _VERSIONS[max_version]
    for label, path in (("--cert", cert), ("--key", key), ("--client-ca", client_ca)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{label} {path}: no such file")
    try:
        ctx.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        raise ValueError(f"--cert {cert} / --key {key}: unusable ({exc.reason}); give a PEM chain and its "
                         "unencrypted key") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except ssl.SSLError as exc:
            raise ValueError(f"--client-ca {client_ca}: no usable PEM certificate ({exc.reason})") from None
    ctx.verify_mode = _CLIENT_AUTH[client_auth]
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{value!r}: use HOST:PORT, e.g. 127.0.0.1:8443 or [::1]:8443")
    return host, int(port)


def _write_ready(path: Path, host: str, port: int) -> None:
    """``HOST:PORT`` of the bound socket (the real port when 0 was asked), written atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"[{host}]:{port}\n" if ":" in host else f"{host}:{port}\n")
    os.replace(tmp, path)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


class _Reloader:
    """SIGHUP: rebuild the server context from the same paths; keep the old one if the files are unusable."""

    def __init__(self, server: EchoServer, options: dict[str, Any]) -> None:
        self.server, self.options, self.generation = server, options, 0

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.generation += 1
        try:
            ctx = make_context(**self.options)
            served = _pem_sha256(Path(self.options["cert"]).read_text()) or "?"
        except (ValueError, OSError) as exc:
            _log(f"reload failed (generation {self.generation}): {exc}; still serving the previous certificates")
            return
        self.server.use_context(ctx)
        _log(f"reloaded certificates (generation {self.generation}, serving sha256 {served})")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.pod.echo", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_parse_listen, required=True, help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--cert", type=Path, required=True, help="PEM chain served: leaf first, then intermediates")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key of the leaf")
    parser.add_argument("--client-ca", type=Path, help="PEM bundle client certificates must chain to")
    parser.add_argument("--client-auth", choices=list(_CLIENT_AUTH), default="none")
    parser.add_argument("--min-version", choices=list(_VERSIONS), default="1.2")
    parser.add_argument("--max-version", choices=list(_VERSIONS), default="1.3")
    parser.add_argument("--ready-file", type=Path, help="written with HOST:PORT once the socket listens")
    parser.add_argument("--log", type=Path, help="also append each log line to this file")
    parser.add_argument("--lanes", type=Path,
                        help="JSON list of more listeners served by this process, each with its own TLS settings: "
                             '[{"listen": "HOST:PORT", "cert": …, "key": …, "client_ca": … or null, "client_auth": …, '
                             '"min_version": …, "max_version": …}] (the harness\'s variants, issue 21)')
    args = parser.parse_args(argv)
    if args.log is not None:
        _LOG_FILE[:] = [args.log]
    started = time.monotonic()
    options = {"cert": args.cert, "key": args.key, "client_ca": args.client_ca, "client_auth": args.client_auth,
               "min_version": args.min_version, "max_version": args.max_version}
    try:
        server = EchoServer(args.listen, make_context(**options))
        lanes = [_lane_server(spec) for spec in _read_lanes(args.lanes)] if args.lanes else []
    except (ValueError, OSError) as exc:
        _log(f"error: {exc}")
        return 2
    for lane in lanes:
        threading.Thread(target=lane.serve_forever, kwargs={"poll_interval": 0.5}, name="lane", daemon=True).start()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _Reloader(server, options))
    try:
        host, port = str(server.server_address[0]), int(server.server_address[1])
        if args.ready_file is not None:
            _write_ready(args.ready_file, host, port)
        _log(f"listening on {host}:{port} (client-auth {args.client_auth}, TLS {args.min_version}-"
             f"{args.max_version}) after {(time.monotonic() - started) * 1000:.0f} ms")
        threading.Thread(target=_warm_up, name="warm-up", daemon=True).start()
        server.serve_forever(poll_interval=0.5)
    except _Stop as stop:
        _log(f"stopping on {stop}")
    finally:
        server.server_close()
        for lane in lanes:
            lane.server_close()
    return 0


def _read_lanes(path: Path) -> list[dict[str, Any]]:
    """The ``--lanes`` file: a JSON list of listener settings; ValueError with a one-line reason otherwise."""
    try:
        specs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--lanes {path}: not a readable JSON file ({exc})") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ValueError(f"--lanes {path}: must be a JSON list of objects (one per listener)")
    return specs


def _lane_server(spec: dict[str, Any]) -> EchoServer:
    """One more listener of this process, with its own TLS context (nothing of its sessions reaches another's)."""
    try:
        listen = _parse_listen(str(spec["listen"]))
        ca = spec.get("client_ca")
        ctx = make_context(cert=Path(spec["cert"]), key=Path(spec["key"]), client_ca=Path(ca) if ca else None,
                           client_auth=str(spec.get("client_auth", "none")),
                           min_version=str(spec.get("min_version", "1.2")),
                           max_version=str(spec.get("max_version", "1.3")))
    except KeyError as exc:
        raise ValueError(f"--lanes: a listener lacks {exc.args[0]!r}") from None
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"--lanes: {exc}") from None
    return EchoServer(listen, ctx)


def _warm_up() -> None:
    """Import cryptography off the request path, so the first mTLS request does not pay for it."""
    from cryptography import x509  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
