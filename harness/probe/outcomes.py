"""The outcome vocabulary every probe result and every expectation is written in.

- ``ok(status)`` — handshake and HTTP completed;
- ``http_reject(status, reason)`` — the hop answered with an error page (nginx 400 "No required SSL certificate
  was sent", App Gateway 400, APIM 401, WAF 403);
- ``tls_alert(name)`` — the server aborted the handshake with a TLS alert (certificate_required, unknown_ca, …);
- ``server_untrusted(reason)`` — our client refused the server's certificate;
- ``upstream_failure(status)`` — a proxy could not complete TLS to its upstream (nginx 502, App Gateway 502, APIM 500);
- ``unreachable(reason)`` — no TCP connection at all (refused, no route): a network boundary, not a TLS decision;
- ``protocol_error(reason)`` — the peer did not speak TLS/HTTP as expected (plaintext on a TLS port and the like).

Beside what the probe saw, an outcome carries the hop that decided it (``hop``: ``gateway``, ``apim``, ``ingress``,
``pod``, or ``client`` for the probe's own verification) and the cause that hop reported (``cause``: a token of
:data:`harness.probe.causes.CAUSES`, e.g. ``expired``, ``unknown-issuer``, ``name-mismatch``) — filled from that hop's
own evidence (a stand-in's detail header, nginx's error log, the pod's log), never guessed from the status.

An expectation may leave ``status``/``alert``/``reason``/``hop``/``cause`` unset to accept any value;
:meth:`Outcome.matches` compares.
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
    #: the hop whose own evidence decided this outcome (None: no hop reported one)
    hop: str | None = None
    #: the cause that hop reported, as a token of harness.probe.causes.CAUSES (None: none reported)
    cause: str | None = None

    def matches(self, seen: Outcome) -> bool:
        """True when ``seen`` satisfies this expectation (unset fields accept anything; ``reason`` is a substring)."""
        if self.kind != seen.kind:
            return False
        if self.status is not None and self.status != seen.status:
            return False
        if self.alert is not None and self.alert != seen.alert:
            return False
        if self.reason is not None and self.reason.lower() not in (seen.reason or "").lower():
            return False
        return self.attribution_matches(seen)

    def attribution_matches(self, seen: Outcome) -> bool:
        """True when ``seen`` names the hop and cause this expectation names (unset fields accept anything)."""
        if self.hop is not None and self.hop != seen.hop:
            return False
        return self.cause is None or self.cause == seen.cause

    @property
    def is_rejection(self) -> bool:
        """A refusal by some hop (what must name its cause and deciding hop), not a success or a network fault."""
        return self.kind in ("http_reject", "tls_alert", "server_untrusted", "upstream_failure")

    def attribution(self) -> str:
        """``"by ingress for expired"`` — the deciding hop and cause, or what is missing of them."""
        return f"by {self.hop or '(no hop reported)'} for {self.cause or '(no cause reported)'}"

    def __str__(self) -> str:
        args = [str(x) for x in (self.status, self.alert) if x is not None]
        if self.reason:
            args.append(repr(self.reason))
        text = f"{self.kind}({', '.join(args)})"
        if self.hop or self.cause:
            text += " " + self.attribution()
        return text


def ok(status: int | None = 200) -> Outcome:
    return Outcome("ok", status=status)


def http_reject(status: int | None = None, reason: str | None = None, *,
                hop: str | None = None, cause: str | None = None) -> Outcome:
    return Outcome("http_reject", status=status, reason=reason, hop=hop, cause=cause)


def tls_alert(name: str | None = None, reason: str | None = None, *,
              hop: str | None = None, cause: str | None = None) -> Outcome:
    return Outcome("tls_alert", alert=name, reason=reason, hop=hop, cause=cause)


def server_untrusted(reason: str | None = None, *,
                     hop: str | None = None, cause: str | None = None) -> Outcome:
    return Outcome("server_untrusted", reason=reason, hop=hop, cause=cause)


def upstream_failure(status: int | None = None, reason: str | None = None, *,
                     hop: str | None = None, cause: str | None = None) -> Outcome:
    return Outcome("upstream_failure", status=status, reason=reason, hop=hop, cause=cause)


def unreachable(reason: str | None = None) -> Outcome:
    return Outcome("unreachable", reason=reason)


def protocol_error(reason: str | None = None) -> Outcome:
    return Outcome("protocol_error", reason=reason)
