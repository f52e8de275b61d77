"""Which hop decided a refusal, and why — read from that hop's own evidence after a probe.

The probe already fills ``hop``/``cause`` where the answer itself says (a stand-in's ``x-harness-detail`` header, our
own client's verify error: :mod:`harness.probe.causes`). Everything else is in a hop's logs, read from the mark
taken before the probe (:meth:`harness.targets.base.RunningChain.evidence_mark`):

=================  ===========================================================================================
log                decision lines (measured here; docs/behaviour.md)
=================  ===========================================================================================
``ingress-error``  ``client SSL certificate verify error: (10:certificate has expired)``, ``client sent no
                   required SSL certificate``, ``upstream SSL certificate verify error: (…)``, ``upstream SSL
                   certificate does not match "…"``, ``connect() failed (111: Connection refused) while
                   connecting to upstream``, ``SSL_do_handshake() failed (…unsupported protocol)``, ``client
                   attempted to request the server name different from the one that was negotiated`` (421); a
                   ``connect() failed (32: Broken pipe)`` or ``(104: …reset…)`` is the pod hanging up: the pod's
                   line, when there is one, is the decision
``ingress-access`` ingress-nginx's ``log-format-upstream`` line with ``$upstream_addr`` ``-``: the ingress answered
                   itself (``return 403``), the cause is its page
``ingress``        (a Gateway API ingress: Envoy at ``connection:debug``) ``verify cert failed: X509_verify_cert:
                   certificate verification error at depth 0: certificate has expired`` — its check of a client
                   certificate, or (when the request failed further on) of the pod's — and
                   ``PEER_DID_NOT_RETURN_A_CERTIFICATE``
``ingress-status`` (a Gateway API ingress: its listeners' state, read whole) ``listen 127.0.0.1:8443 listener
                   https-1 (host): Programmed=False InvalidCACertificateRef: …`` — a refused connection to that port
                   is the ingress's decision: it left the listener out
``pod``            ``handshake failed: SSLCertVerificationError: certificate has expired``, ``handshake failed:
                   SSLError: PEER_DID_NOT_RETURN_A_CERTIFICATE`` (alerts the pod *received* are not its decisions)
=================  ===========================================================================================

A TLS alert is sent by the TLS terminator of the probed port (the pod behind ssl-passthrough): the alert's hop is
that terminator, its cause the terminator's log line if it wrote one, else the alert's meaning
(:data:`harness.probe.causes.ALERT_CAUSES`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from harness.probe.causes import ALERT_CAUSES, cause_of
from harness.probe.outcomes import Outcome

__all__ = ["Attribution", "attribute"]

_NGINX_DECISIONS: Final = re.compile(
    r"client SSL certificate verify error: \(\d+:[^)]*\)"
    r"|client sent no required SSL certificate"
    r"|upstream SSL certificate verify error: \(\d+:[^)]*\)"
    r'|upstream SSL certificate does not match "[^"]*"'
    r"|connect\(\) failed \(\d+: [^)]*\) while connecting to upstream"
    r"|SSL_do_handshake\(\) failed \(SSL: error:[0-9A-Fa-f]+:SSL routines::unsupported protocol\)"
    r"|client attempted to request the server name different from the one that was negotiated")
# the pod's own verdicts; "…ALERT…" reasons are alerts the pod received (another hop decided), EOF is a side effect
_POD_DECISIONS: Final = re.compile(r"handshake failed: (?:SSLCertVerificationError: .*"
                                   r"|SSLError: (?!.*ALERT)(?:PEER_DID_NOT_RETURN_A_CERTIFICATE|UNSUPPORTED_PROTOCOL)"
                                   r"[^\n]*)")
# a Gateway API ingress (Envoy, harness.render.envoy_gateway) logs its verdicts at connection:debug (measured here:
# source/common/tls/cert_validator/default_validator.cc and the TLS socket's "TLS_error" line)
_ENVOY_DECISIONS: Final = re.compile(r"verify cert failed: [^\n]*?(?=:TLS_error_end|$)"
                                     r"|PEER_DID_NOT_RETURN_A_CERTIFICATE", re.MULTILINE)
# the pod hung up on the ingress mid-handshake (measured: a pod refusing nginx's client cert under TLS 1.3 shows as
# EPIPE or ECONNRESET on nginx's side): the pod's own log line, when it wrote one, is the decision
_HUNG_UP: Final = re.compile(r"connect\(\) failed \((?:32|104): ")
# ingress-nginx log-format-upstream: … "$request" $status … [$proxy_upstream_name] [$alt] $upstream_addr …
_ACCESS: Final = re.compile(r'"[^"]*" (\d{3}) \d+ .*\[[^\]]*\] \[[^\]]*\] (\S+) \S+ \S+ (\S+) \S+$')


#: the causes a log line may name for each alert the hop sent (RFC 8446 6.2; OpenSSL's ssl_verify_alarm_type, and
#: BoringSSL's as measured here: an untrusted, self-signed or too deep chain is unknown_ca); an alert not listed fits
#: any
_ALERT_FITS: Final[Mapping[str, frozenset[str]]] = MappingProxyType({
    "protocol_version": frozenset({"protocol-version"}),
    "certificate_required": frozenset({"no-client-cert"}),
    "unknown_ca": frozenset({"unknown-issuer", "self-signed", "self-signed-in-chain", "too-deep", "crl-missing"}),
    "certificate_expired": frozenset({"expired", "not-yet-valid"}),
    "unsupported_certificate": frozenset({"wrong-eku"}),
    "certificate_revoked": frozenset({"revoked"}),
})


@dataclass(frozen=True)
class Attribution:
    """The outcome with ``hop``/``cause`` filled, and the evidence line they come from (for the case's message)."""

    outcome: Outcome
    evidence: str


def attribute(seen: Outcome, evidence: Mapping[str, str], *, terminator: str, headers: Mapping[str, str],
              page: str | None, target: str | None = None) -> Attribution:
    """Fill ``seen.hop``/``seen.cause`` from ``evidence`` (log name → text written during the probe).

    ``terminator`` is the hop whose TLS stack answered the probe's handshake; ``headers`` the answer's headers (the
    detail header, already read by the probe); ``page`` the answer's page reason; ``target`` the probed
    ``host:port`` (a refused connection is the ingress's decision when its state says it left that port's listener
    out).
    """
    if seen.kind == "unreachable" and terminator == "ingress" and target:
        port = target.rpartition(":")[2]
        line = next((ln for ln in evidence.get("ingress-status", "").splitlines()
                     if ln.startswith("listen ") and ln.split()[1].rpartition(":")[2] == port
                     and "Programmed=False" in ln), None)
        if line is not None:
            return Attribution(dataclasses.replace(seen, hop="ingress", cause="invalid-ca-ref"),
                               f"ingress's listener state: {line}")
    if seen.hop is not None:
        detail = headers.get("x-harness-detail")
        return Attribution(seen, f"{seen.hop}'s detail header: {detail}" if detail else f"{seen.hop}: {seen.reason}")
    if seen.kind == "tls_alert":
        line = _last(_POD_DECISIONS, evidence.get("pod", "")) if terminator == "pod" else \
            (_last(_NGINX_DECISIONS, evidence.get("ingress-error", ""))
             or _last(_ENVOY_DECISIONS, evidence.get("ingress", ""))) if terminator == "ingress" else None
        if line and cause_of(line) not in _ALERT_FITS.get(seen.alert or "", (cause_of(line),)):
            line = None  # a line this alert cannot stand for is another handshake's (one logged late)
        cause = cause_of(line) if line else ALERT_CAUSES.get(seen.alert or "")
        where = f"{terminator}'s log: {line}" if line else f"the alert {seen.alert} {terminator} sent"
        return Attribution(dataclasses.replace(seen, hop=terminator, cause=cause), where)
    if seen.kind not in ("http_reject", "upstream_failure"):
        return Attribution(seen, "")
    line = _last(_NGINX_DECISIONS, evidence.get("ingress-error", ""))
    pod_line = _last(_POD_DECISIONS, evidence.get("pod", ""))
    if line and not (pod_line and _HUNG_UP.search(line)):
        return Attribution(dataclasses.replace(seen, hop="ingress", cause=cause_of(line)),
                           f"ingress's error log: {line}")
    line = pod_line
    if line:
        return Attribution(dataclasses.replace(seen, hop="pod", cause=cause_of(line)), f"pod's log: {line}")
    line = _last(_ENVOY_DECISIONS, evidence.get("ingress", "")) if seen.kind == "upstream_failure" else None
    if line:  # a Gateway API ingress's check of the pod's certificate
        return Attribution(dataclasses.replace(seen, hop="ingress", cause=cause_of(line)), f"ingress's log: {line}")
    for access in reversed(evidence.get("ingress-envoy", "").splitlines()):
        if f'" {seen.status} flags=NR ' in access:  # a Gateway API ingress answered itself: no route matched
            return Attribution(dataclasses.replace(seen, hop="ingress", cause="no-route"),
                               f"ingress's access log (no route): {access.strip()}")
        if f'" {seen.status} flags=- details=direct_response ' in access:  # … or its route's backend is invalid
            state = next((ln for ln in evidence.get("ingress-status", "").splitlines()
                          if "the route answers 500" in ln), None)
            if state is not None:
                return Attribution(dataclasses.replace(seen, hop="ingress", cause="invalid-ca-ref"),
                                   f"ingress's access log ({access.strip()}) and listener state: {state}")
    for access in reversed(evidence.get("ingress-access", "").splitlines()):
        m = _ACCESS.search(access)
        if m and int(m.group(1)) == seen.status and m.group(2) == "-":
            cause = cause_of(page) or {403: "forbidden", 404: "no-route"}.get(seen.status)
            return Attribution(dataclasses.replace(seen, hop="ingress", cause=cause),
                               f"ingress's access log (answered itself, no upstream): {access.strip()}")
    return Attribution(seen, "no hop's evidence names this answer")


def _last(pattern: re.Pattern[str], text: str) -> str | None:
    found = pattern.findall(text)
    return found[-1] if found else None
