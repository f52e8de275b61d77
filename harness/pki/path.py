"""RFC 5280 path validation as a consumer does it, for :mod:`harness.pki.check`.

``cryptography.x509.verification`` stops at the first problem and says it in prose; :func:`path_findings` runs it as
the consumer would (its trust anchors, expected name, verify depth), then looks past leaf problems that the direct
checks already name (validity, EKU, CA:TRUE, SAN) to find what only path building sees: an unknown issuer, a missing
intermediate, a self-signed leaf, a chain deeper than allowed, violated name constraints.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509 import verification as xv

__all__ = [
    "WEAK_HASHES",
    "Consumer",
    "Finding",
    "Severity",
    "covers",
    "is_self_signed",
    "issued_by",
    "path_findings",
    "sans_of",
]

Severity = Literal["error", "warning", "info"]

#: signature hashes that are a finding, and the finding's code
WEAK_HASHES = {"sha1": "sha1-signature", "md5": "sha1-signature"}

#: path-validator messages for leaf problems the direct checks report by name
_EXPLAINED = ("not valid at validation time", "required EKU not found", "basicConstraints.cA must not be asserted",
              "no matching subjectAltName", "Forbidden signature algorithm")



@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message}


@dataclass(frozen=True)
class Consumer:
    """Who verifies a leaf and how: its trust anchors, the names it expects, its verify depth."""

    label: str  # e.g. "apim → ingress (auth-tls-secret)"
    trust: tuple[x509.Certificate, ...]
    role: Literal["server", "client"]
    hostnames: tuple[str, ...] = ()
    max_depth: int | None = None  # intermediates allowed (nginx ssl_verify_depth, cryptography max_chain_depth)
    depth_source: str = ""  # where max_depth comes from, for the message
    verifies: bool = True  # False: the consumer has verification off (the check still runs, as a warning)


def sans_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(v) for v in ext.get_values_for_type(x509.DNSName)) + tuple(
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    )


def covers(sans: Iterable[str], host: str) -> bool:
    """RFC 6125 matching: exact (case-insensitive) or a wildcard for exactly one left-most label."""
    host = host.lower().rstrip(".")
    for san in sans:
        s = san.lower().rstrip(".")
        if s == host:
            return True
        if s.startswith("*.") and "." in host and host.split(".", 1)[1] == s[2:]:
            return True
    return False


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issued_by(cert: x509.Certificate, candidates: Iterable[x509.Certificate]) -> x509.Certificate | None:
    for ca in candidates:
        if ca.subject == cert.issuer and ca is not cert:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
    return None


def _verify(cert: x509.Certificate, chain: list[x509.Certificate], c: Consumer, at: dt.datetime, *,
            strict: bool, depth: int | None) -> list[x509.Certificate]:
    """Run the RFC 5280 path validator; raise VerificationError. ``strict=False`` keeps only path building and
    CA-side checks (time set by the caller, EE extensions permitted), to look past a leaf problem already found."""
    b = xv.PolicyBuilder().store(xv.Store(list(c.trust))).time(at)
    if depth is not None:
        b = b.max_chain_depth(depth)
    ca_policy = xv.ExtensionPolicy.webpki_defaults_ca()
    if not strict:
        return b.extension_policies(ca_policy=ca_policy, ee_policy=xv.ExtensionPolicy.permit_all()) \
            .build_client_verifier().verify(cert, chain).chain
    ee = xv.ExtensionPolicy.webpki_defaults_ee()
    if c.role == "server":
        host = c.hostnames[0] if c.hostnames else next(iter(sans_of(cert)), None)
        try:
            subject = _subject(host) if host is not None else None
        except ValueError:  # not a valid DNS name (e.g. an underscore): the SAN check reports it; build the path
            subject = None
        if subject is None:
            return _verify(cert, chain, c, at, strict=False, depth=depth)
        b = b.extension_policies(ca_policy=ca_policy, ee_policy=ee)
        try:
            return b.build_server_verifier(subject).verify(cert, chain)
        except ValueError as exc:  # the validator cannot parse a name in the cert (e.g. a SAN with "_")
            raise xv.VerificationError(f"the validator cannot read the certificate: {exc}") from None
    # a client cert need not carry a SAN (the EKU check stays: permit_all would drop it)
    ee = ee.may_be_present(x509.SubjectAlternativeName, xv.Criticality.AGNOSTIC, None)
    verifier = b.extension_policies(ca_policy=ca_policy, ee_policy=ee).build_client_verifier()
    return verifier.verify(cert, chain).chain


def _subject(host: str) -> xv.Subject:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def path_findings(cert: x509.Certificate, chain: list[x509.Certificate], c: Consumer,
                   known: list[x509.Certificate], at: dt.datetime) -> list[Finding]:
    """Path validation as ``c`` does it; errors already found by direct checks are looked past."""
    roots = "; ".join(t.subject.rfc4514_string() for t in c.trust) or "nothing"
    try:
        _verify(cert, chain, c, at, strict=True, depth=c.max_depth)
        return []
    except xv.VerificationError as exc:
        first = str(exc)
    if "name constraint" in first:
        return [Finding("name-constraints", "error", f"{c.label}: {first}")]
    # look past leaf problems (time, EKU, CA:TRUE, SAN) that direct checks already name
    nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
    when = min(max(at, nb + dt.timedelta(minutes=1)), na - dt.timedelta(minutes=1))
    try:
        _verify(cert, chain, c, when, strict=False, depth=c.max_depth)
        return [] if any(p in first for p in _EXPLAINED) else [Finding("path-invalid", "error", f"{c.label}: {first}")]
    except xv.VerificationError as exc:
        msg = str(exc)
    if "name constraint" in msg:
        return [Finding("name-constraints", "error", f"{c.label}: {msg}")]
    if "exceeds max depth" in msg:
        try:
            needed = len(_verify(cert, chain, c, when, strict=False, depth=None)) - 2
            need = f"needs verify depth {needed}"
        except xv.VerificationError:
            need = "is deeper"
        src = f" ({c.depth_source})" if c.depth_source else ""
        return [Finding("chain-too-deep", "error", f"the path {need}; {c.label} allows {c.max_depth}{src}")]
    if "Forbidden signature algorithm" in msg:
        h = cert.signature_hash_algorithm
        if h is not None and h.name in WEAK_HASHES:
            return []  # the leaf's own signature: already a finding
        return [Finding("sha1-signature", "error", f"a CA cert in the path has a forbidden signature: {msg}")]
    if "no interior errors" not in msg:  # an intermediate or root is at fault (expired, bad extensions, ...)
        return [Finding("path-invalid", "error", f"{c.label}: {msg}")]
    if is_self_signed(cert):
        return [Finding("self-signed", "error", f"self-signed; {c.label} trusts {roots}")]
    if known:
        try:
            built = _verify(cert, chain + known, c, when, strict=False, depth=None)
            missing = [x.subject.rfc4514_string() for x in built[1:-1] if x not in chain]
            return [Finding("missing-intermediate", "error",
                            f"the chain lacks {', '.join(missing) or 'an intermediate'}: {c.label} cannot reach "
                            f"{roots} without it")]
        except xv.VerificationError:
            pass
    return [Finding("unknown-issuer", "error",
                    f"issuer {cert.issuer.rfc4514_string()} does not lead to {c.label}'s trust anchor ({roots})")]
