"""The outcome vocabulary every probe result and every expectation is written in.

- ``ok(status)`` — handshake and HTTP completed;
- ``http_reject(status, reason)`` — the hop answered with an error page (nginx 400 "No required SSL certificate
  was sent", App Gateway 400, APIM 401, WAF 403);
- ``tls_alert(name)`` — the server aborted the handshake with a TLS alert (certificate_required, unknown_ca, …);
- ``server_untrusted(reason)`` — our client refused the server's certificate;
- ``upstream_failure(status)`` — a proxy could not complete TLS to its upstream (nginx 502, App Gateway 502, APIM 500);
- ``unreachable(reason)`` — no TCP connection at all (refused, no route): a network boundary, not a TLS decision;
- ``protocol_error(reason)`` — the peer did not speak TLS/HTTP as expected (plaintext on a TLS port and the like).

An expectation may leave ``status``/``alert``/``reason`` unset to accept any value; :meth:`Outcome.matches` compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Kind",
    "Outcome",
    "http_reject",
    "ok",
    "protocol_error",
    "server_untrusted",
    "tls_alert",
    "unreachable",
    "upstream_failure",
]

Kind = Literal["ok", "http_reject", "tls_alert", "server_untrusted", "upstream_failure", "unreachable",
               "protocol_error"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    status: int | None = None
    alert: str | None = None
    reason: str | None = None

    def matches(self, seen: Outcome) -> bool:
        """True when ``seen`` satisfies this expectation (unset fields accept anything; ``reason`` is a substring)."""
        if self.kind != seen.kind:
            return False
        if self.status is not None and self.status != seen.status:
            return False
        if self.alert is not None and self.alert != seen.alert:
            return False
        return not (self.reason is not None and self.reason.lower() not in (seen.reason or "").lower())

    def __str__(self) -> str:
        args = [str(x) for x in (self.status, self.alert) if x is not None]
        if self.reason:
            args.append(repr(self.reason))
        return f"{self.kind}({', '.join(args)})"


def ok(status: int | None = 200) -> Outcome:
    return Outcome("ok", status=status)


def http_reject(status: int | None = None, reason: str | None = None) -> Outcome:
    return Outcome("http_reject", status=status, reason=reason)


def tls_alert(name: str | None = None, reason: str | None = None) -> Outcome:
    return Outcome("tls_alert", alert=name, reason=reason)


def server_untrusted(reason: str | None = None) -> Outcome:
    return Outcome("server_untrusted", reason=reason)


def upstream_failure(status: int | None = None, reason: str | None = None) -> Outcome:
    return Outcome("upstream_failure", status=status, reason=reason)


def unreachable(reason: str | None = None) -> Outcome:
    return Outcome("unreachable", reason=reason)


def protocol_error(reason: str | None = None) -> Outcome:
    return Outcome("protocol_error", reason=reason)
