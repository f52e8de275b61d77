"""Causes: what a hop's own evidence says about why it refused, as one small vocabulary.

Each hop reports a refusal in its own words: Envoy (BoringSSL) in ``%RESPONSE_CODE_DETAILS%`` /
``%UPSTREAM_TRANSPORT_FAILURE_REASON%`` (``…CERTIFICATE_VERIFY_FAILED:verify_cert_failed:_X509_verify_cert:
_certificate_verification_error_at_depth_0:_certificate_has_expired…``), the stand-ins' Lua in the detail header
(``rejected=ClientCertificateNotTrusted``), nginx in its error log (``upstream SSL certificate verify error:
(10:certificate has expired)``), the pod (Python ``ssl``, OpenSSL) in its log (``handshake failed:
SSLCertVerificationError: certificate has expired``), and our own client in OpenSSL's verify message. :func:`cause_of`
turns any of those texts into one token of :data:`CAUSES`; the strings matched are the ones measured here
(docs/behaviour.md, "Causes as each hop reports them").

A cause is never inferred from a status code: text no row matches gives ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from harness.model.wire import DETAIL_HEADER

__all__ = ["ALERT_CAUSES", "CAUSES", "cause_of", "detail_attribution"]

#: every cause token, with what it means
CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-issuer": ("no trusted issuer for the chain (unknown CA, a CA of another trust domain, "
                       "missing intermediate)"),
    "self-signed": "the leaf is self-signed and not trusted",
    "self-signed-in-chain": "the chain ends in a self-signed root that is not trusted",
    "expired": "the certificate has expired",
    "not-yet-valid": "the certificate is not yet valid",
    "wrong-eku": "the certificate's extended key usage does not allow this use",
    "revoked": "the certificate is on the CA's CRL",
    "crl-missing": "the verifier has no CRL for an issuer in the chain",
    "too-deep": "the chain is longer than the verify depth",
    "name-mismatch": "the server certificate does not cover the name the caller expected",
    "not-trusted": "the verifier reports only 'not validated' (Envoy's Lua view of a client cert)",
    "no-client-cert": "no client certificate was sent where one is required",
    "protocol-version": "the TLS version offered is below the hop's floor",
    "connection-refused": "the hop could not connect to its upstream at all (nothing listening)",
    "upstream-reset": "the upstream closed the connection without an answer",
    "waf": "the WAF rule matched the request",
    "match-cn": "the client cert's subject DN does not match auth-tls-match-cn",
    "no-route": "the hop answered 404 itself: no location of the host matches the path (the default backend)",
    "misdirected": ("the Host names another server than the TLS session's SNI, and that server checks client "
                    "certificates: nginx answers 421 Misdirected Request rather than route it"),
    "invalid-ca-ref": ("the listener's client-certificate CA reference gives no valid CA (Gateway API "
                       "InvalidCACertificateRef, NoValidCACertificate, RefNotPermitted): the listener is not "
                       "programmed, so nothing accepts the connection"),
    "forbidden": "the hop answered 403 itself, without contacting its upstream (e.g. a fail-closed CA secret)",
    "token": "the bearer token was refused (the token cause carries jwt_authn's reason: token:<reason>)",
})

# (fragment, cause): first match wins; matched against the text lower-cased with "_" read as a space (Envoy writes
# "certificate_has_expired"). Order matters where one phrase contains another.
_FRAGMENTS: Final[tuple[tuple[str, str], ...]] = (
    ("self-signed certificate in certificate chain", "self-signed-in-chain"),
    ("self signed certificate in certificate chain", "self-signed-in-chain"),
    ("self-signed certificate", "self-signed"),
    ("self signed certificate", "self-signed"),
    ("unable to get local issuer certificate", "unknown-issuer"),
    ("unable to verify the first certificate", "unknown-issuer"),
    ("unable to get issuer certificate", "unknown-issuer"),
    ("certificate has expired", "expired"),
    ("clientcertificateexpired", "expired"),
    ("certificate is not yet valid", "not-yet-valid"),
    ("clientcertificatenotyetvalid", "not-yet-valid"),
    ("unsuitable certificate purpose", "wrong-eku"),
    ("unsupported certificate purpose", "wrong-eku"),
    ("certificate revoked", "revoked"),
    ("unable to get certificate crl", "crl-missing"),
    ("certificate chain too long", "too-deep"),
    ("san matcher", "name-mismatch"),
    ("upstream ssl certificate does not match", "name-mismatch"),
    ("hostname mismatch", "name-mismatch"),
    ("ip address mismatch", "name-mismatch"),
    ("certificate not trusted", "not-trusted"),
    ("clientcertificatenottrusted", "not-trusted"),
    ("client sent no required ssl certificate", "no-client-cert"),
    ("no required ssl certificate was sent", "no-client-cert"),
    ("peer did not return a certificate", "no-client-cert"),
    ("client-cert-missing", "no-client-cert"),
    ("clientcertificatenotfound", "no-client-cert"),
    ("unsupported protocol", "protocol-version"),
    ("connection refused", "connection-refused"),
    ("different from the one that was negotiated", "misdirected"),
    ("rejected=waf", "waf"),
    ("client certificate unauthorized", "match-cn"),
    ("upstream reset before response started{connection termination}", "upstream-reset"),
)

#: a TLS alert a hop sent → the cause it stands for (OpenSSL ssl_verify_alarm_type; RFC 8446 §6.2)
ALERT_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "protocol_version": "protocol-version",
    "certificate_required": "no-client-cert",
    "unknown_ca": "unknown-issuer",
    "certificate_expired": "expired",
    "unsupported_certificate": "wrong-eku",
    "certificate_revoked": "revoked",
})

_JWT: Final = re.compile(r"jwt_authn_access_denied\{([^}]*)\}")
_CLAIM: Final = re.compile(r"jwt-claim-missing; claim=(\w+)")
_DETAIL_HOP: Final = re.compile(r"(?:^|;\s*)hop=([a-z]+)")


def cause_of(text: str | None) -> str | None:
    """The cause token a hop's own words name, or None when no measured phrase is in ``text``."""
    if not text:
        return None
    jwt = _JWT.search(text)
    if jwt:
        return f"token:{jwt.group(1)}"
    claim = _CLAIM.search(text)
    if claim:
        return f"token:claim={claim.group(1)}"
    if "rejected=jwt-not-verified" in text:
        return "token:not-verified"
    low = text.lower().replace("_", " ")
    for fragment, cause in _FRAGMENTS:
        if fragment in low:
            return cause
    return None


def detail_attribution(headers: Mapping[str, str]) -> tuple[str, str | None] | None:
    """(hop, cause) from a stand-in's :data:`DETAIL_HEADER` (``hop=apim; flags=UF; details=…``), or None without
    one. The header is the deciding hop's own statement: only the stand-in that made the answer sets it."""
    detail = headers.get(DETAIL_HEADER)
    if not detail:
        return None
    hop = _DETAIL_HOP.search(detail)
    if hop is None:
        return None
    return hop.group(1), cause_of(detail)
