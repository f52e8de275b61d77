"""What a probe returns: :class:`ProbeResult` (outcome, negotiated TLS, the peer chain, the HTTP answer, timing)
and :class:`CertInfo` for each certificate of the peer chain."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json as _json
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.probe.outcomes import (
    Outcome,
)

__all__ = ["CertInfo", "ProbeResult", "cert_info"]


@dataclass(frozen=True)
class CertInfo:
    """One certificate of a peer chain, as assertion messages and reports show it."""

    subject: str  # RFC 4514, as nginx's $ssl_client_s_dn and Envoy print it
    issuer: str
    sans: tuple[str, ...]  # "DNS:…", "IP:…", "URI:…"
    sha256: str  # lower-case hex of the DER, no colons
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "issuer": self.issuer, "sans": list(self.sans), "sha256": self.sha256,
                "serial": self.serial, "not_before": self.not_before.isoformat(),
                "not_after": self.not_after.isoformat()}

    def __str__(self) -> str:
        return (f"subject={self.subject!r} issuer={self.issuer!r} sans={','.join(self.sans) or '-'} "
                f"sha256={self.sha256[:16]}… not_after={self.not_after:%Y-%m-%d}")


@functools.lru_cache(maxsize=1024)
def cert_info(der: bytes) -> CertInfo:
    """Describe one DER certificate (remembered by its bytes: a run sees the same few server certificates hundreds
    of times, and parsing one costs about 0.2 ms)."""
    from cryptography import x509  # imported here: the echo pod imports this module and should start fast

    sha = hashlib.sha256(der).hexdigest()
    cert = x509.load_der_x509_certificate(der)
    sans: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound, ValueError):
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += [f"DNS:{v}" for v in ext.get_values_for_type(x509.DNSName)]
        sans += [f"IP:{v}" for v in ext.get_values_for_type(x509.IPAddress)]
        sans += [f"URI:{v}" for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
    return CertInfo(subject=cert.subject.rfc4514_string(), issuer=cert.issuer.rfc4514_string(), sans=tuple(sans),
                    sha256=sha, serial=cert.serial_number, not_before=cert.not_valid_before_utc,
                    not_after=cert.not_valid_after_utc)


@dataclass(frozen=True)
class ProbeResult:
    """What one probe saw. ``describe()`` is the line for assertion messages; ``as_dict()`` the record for reports."""

    outcome: Outcome
    tls_version: str | None
    cipher: str | None
    alpn: str | None
    peer_chain: tuple[CertInfo, ...]  # the server's chain as sent (leaf first), also when we refused it
    status: int | None
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    elapsed: float  # seconds, connect to last byte
    error: str | None  # the underlying exception text, for messages
    target: str = ""  # host:port probed
    server_name: str | None = None  # SNI / name checked
    client_cert: str | None = None  # path of the certificate presented (never the key)
    phase: str = ""  # where it ended: connect, handshake, verdict, request, response, done

    def json(self) -> Any:
        """The response body parsed as JSON (the echo pod's answer); HarnessError if it is not JSON."""
        try:
            return _json.loads(self.body)
        except ValueError as exc:
            raise HarnessError(f"the response body is not JSON ({exc}); the probe saw: {self.describe()}") from None

    def describe(self) -> str:
        tls = " ".join(x for x in (self.tls_version, self.cipher) if x) or "no TLS session"
        line = (f"{self.outcome} from {self.target or '?'} (sni={self.server_name or '-'}, "
                f"client cert={self.client_cert or 'none'}): {tls}, alpn={self.alpn or '-'}, "
                f"status={self.status if self.status is not None else '-'}, ended in {self.phase or '?'} "
                f"after {self.elapsed * 1000:.1f} ms")
        if self.error:
            line += f"; error: {self.error}"
        chain = [f"\n  peer[{i}] {c}" for i, c in enumerate(self.peer_chain)] or ["\n  peer: no certificate seen"]
        return line + "".join(chain)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serializable record (reports, ``--json``); the body as text, or base64 when it is not UTF-8."""
        try:
            body: dict[str, str] = {"body": self.body.decode()}
        except UnicodeDecodeError:
            body = {"body_base64": base64.b64encode(self.body).decode()}
        o = self.outcome
        return {"outcome": {"kind": o.kind, "status": o.status, "alert": o.alert, "reason": o.reason, "hop": o.hop,
                            "cause": o.cause},
                "target": self.target, "server_name": self.server_name, "client_cert": self.client_cert,
                "tls_version": self.tls_version, "cipher": self.cipher, "alpn": self.alpn,
                "peer_chain": [c.as_dict() for c in self.peer_chain], "status": self.status,
                "headers": dict(self.headers), **body, "elapsed": self.elapsed, "error": self.error,
                "phase": self.phase}


