"""Static checks of a cert set (or one certificate) against the chain that uses it. Findings are data.

    report = check_cert_set(load_cert_set(path))           # every CA and leaf, against the default topology
    report.ok, [f.code for row in report.rows for f in row.findings]

Each leaf is checked the way its consumers verify it: the topology says who trusts what (``caller_of(hop)`` for a
server cert, ``listener_of(hop).client_ca`` for a client cert, ingress-nginx's ``auth-tls-verify-depth`` /
``proxy-ssl-verify-depth`` for the chain depth). Path building is ``cryptography.x509.verification`` (RFC 5280); it
does not look at CRLs, so revocation is checked here against the CRLs given. pkilint adds PKIX lint findings.

Finding codes are stable (tests and scripts match on them); the message is for people:

============================ ========= ========================================================================
code                         severity  meaning
============================ ========= ========================================================================
unknown-issuer               error     no path from the cert to the consumer's trust anchor
missing-intermediate         error     a path exists only with a CA cert the chain file does not carry
self-signed                  error     the leaf signs itself
chain-too-deep               error     the path needs more intermediates than the consumer's verify depth allows
name-constraints             error     a CA's name constraints exclude the leaf's names
wrong-eku                    error     the extendedKeyUsage lacks the role's purpose (serverAuth / clientAuth)
ca-as-leaf                   error     basicConstraints CA:TRUE on a leaf
san-mismatch                 error     a hostname the topology needs is not in the SANs
weak-key                     error     RSA < 2048 bits, EC < 256 bits
sha1-signature               error     signed with SHA-1 (or MD5)
revoked                      error     the serial is on the issuer's CRL
expired / not-yet-valid      error     outside the validity period now
key-mismatch                 error     the private key does not belong to the cert
path-invalid                 error     the path validator refused the chain for another reason (message says)
expires-soon                 warning   fewer than ``min_days`` days left
no-eku                       warning   no extendedKeyUsage (any use allowed)
crl-expired / crl-invalid    warning   the CRL is past nextUpdate / not signed by the cert's issuer
not-verified                 warning   the consumer does not verify this cert (verify off in the topology)
not-a-ca / ca-key-usage      error     a CA cert without CA:TRUE / keyCertSign
lint:<pkilint code>          warning   a pkilint finding (pkilint's ERROR/WARNING; NOTICE stays info)

Errors fail ``certs check`` (exit 1); warnings are shown and fail only with ``--strict``.
============================ ========= ========================================================================
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from harness.model.topology import HOPS, HopName, PKIPlan, Topology, default_topology
from harness.pki.certset import CertSet
from harness.pki.lint import lint_cert, lint_signer_signee
from harness.pki.load import Identity, read_crl, read_pem_certs, read_private_key
from harness.pki.path import (
    WEAK_HASHES,
    Consumer,
    Finding,
    Severity,
    covers,
    is_self_signed,
    issued_by,
    path_findings,
    sans_of,
)

__all__ = [
    "CertRow",
    "CheckReport",
    "Consumer",
    "Finding",
    "Role",
    "Severity",
    "check_ca",
    "check_ca_bundle",
    "check_cert_set",
    "check_identity",
    "check_leaf",
    "topology_consumers",
]

Role = Literal["server", "client", "root", "intermediate"]

#: RSA moduli below this are a finding (NIST SP 800-131A; OpenSSL's default security level 2 refuses them too)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
_RANK = {"error": 0, "warning": 1, "info": 2}
@dataclass(frozen=True)
class CertRow:
    """One certificate's result."""

    name: str
    role: Role
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    fingerprint_sha256: str
    serial: int
    source: str
    used_by: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()

    @property
    def ok(self) -> bool:
        """No error: nothing that breaks a handshake or the chain's trust (warnings do not count)."""
        return not any(f.severity == "error" for f in self.findings)

    @property
    def clean(self) -> bool:
        """No error and no warning (info notes do not count): what ``certs check --strict`` demands."""
        return not any(f.severity != "info" for f in self.findings)

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "fingerprint_sha256": self.fingerprint_sha256,
            "serial": format(self.serial, "x"),
            "source": self.source,
            "used_by": list(self.used_by),
            "ok": self.ok,
            "clean": self.clean,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class CheckReport:
    rows: tuple[CertRow, ...]
    min_days: int
    notes: tuple[str, ...] = field(default=())
    #: findings about the input as a whole rather than one cert (e.g. a Kubernetes secret's unreadable ca.crt)
    findings: tuple[Finding, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """No error anywhere (``certs check`` exits 0; warnings are shown but do not fail)."""
        return all(r.ok for r in self.rows) and not any(f.severity == "error" for f in self.findings)

    @property
    def clean(self) -> bool:
        """No error and no warning anywhere (``certs check --strict`` exits 0)."""
        return all(r.clean for r in self.rows) and not any(f.severity != "info" for f in self.findings)

    def count(self, severity: Severity) -> int:
        """How many findings of ``severity``, over every row and the report's own findings."""
        return sum(f.severity == severity for f in (*self.findings, *(f for r in self.rows for f in r.findings)))

    def row(self, name: str) -> CertRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row {name!r} (have: {', '.join(r.name for r in self.rows)})")

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "clean": self.clean, "errors": self.count("error"),
                "warnings": self.count("warning"), "min_days": self.min_days, "notes": list(self.notes),
                "findings": [f.to_json() for f in self.findings], "certs": [r.to_json() for r in self.rows]}


# ---------------------------------------------------------------------------------------------------------------
# small facts about a certificate
# ---------------------------------------------------------------------------------------------------------------
def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _row(cert: x509.Certificate, *, name: str, role: Role, source: str, findings: list[Finding],
         used_by: Sequence[str], at: dt.datetime) -> CertRow:
    ordered = sorted(dict.fromkeys(findings), key=lambda f: _RANK[f.severity])
    return CertRow(
        name=name,
        role=role,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=sans_of(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        days_left=(cert.not_valid_after_utc - at).days,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
        serial=cert.serial_number,
        source=source,
        used_by=tuple(used_by),
        findings=tuple(ordered),
    )


# ---------------------------------------------------------------------------------------------------------------
# checks every certificate gets
# ---------------------------------------------------------------------------------------------------------------
def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _common_findings(cert: x509.Certificate, at: dt.datetime, min_days: int) -> list[Finding]:
    out: list[Finding] = []
    na, nb = cert.not_valid_after_utc, cert.not_valid_before_utc
    if at > na:
        out.append(Finding("expired", "error", f"expired {na:%Y-%m-%d} ({(at - na).days} days ago)"))
    elif at < nb:
        out.append(Finding("not-yet-valid", "error", f"not valid before {nb:%Y-%m-%d %H:%M} UTC"))
    elif (na - at).days < min_days:
        out.append(Finding("expires-soon", "warning",
                           f"expires {na:%Y-%m-%d}: {(na - at).days} days left, fewer than {min_days}"))
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < MIN_RSA_BITS:
        out.append(Finding("weak-key", "error", f"RSA {pub.key_size}-bit key (minimum {MIN_RSA_BITS})"))
    elif isinstance(pub, ec.EllipticCurvePublicKey) and pub.key_size < MIN_EC_BITS:
        out.append(Finding("weak-key", "error", f"EC {pub.curve.name} key (minimum {MIN_EC_BITS} bits)"))
    elif isinstance(pub, dsa.DSAPublicKey):
        out.append(Finding("weak-key", "error", "DSA key (not accepted by TLS 1.3 peers)"))
    h = cert.signature_hash_algorithm
    if h is not None and h.name in WEAK_HASHES:
        out.append(Finding(WEAK_HASHES[h.name], "error",
                           f"signed with {h.name.upper()} (refused by OpenSSL security level 2 and RFC 9155)"))
    return out


def _lint_findings(cert: x509.Certificate, issuer: x509.Certificate | None) -> list[Finding]:
    """pkilint's findings, at most warnings: what breaks a handshake or the trust (EKU, CA:TRUE, the path, names,
    dates, keys, hashes) is judged by the checks above with the consumer's own rules; lint is RFC-conformance that
    TLS stacks accept, e.g. keyEncipherment on an EC key (RFC 8813 §3 forbids it; many enterprise CAs set it; an
    OpenSSL handshake and cryptography's verifier accept such a cert: tests/unit/test_certcheck_severity.py)."""
    found = lint_cert(cert) + (lint_signer_signee(issuer, cert) if issuer is not None else [])
    return [Finding(f"lint:{f.code}", "warning" if f.severity == "error" else f.severity, f"pkilint: {f.message}")
            for f in found]


def check_ca(
    cert: x509.Certificate,
    *,
    name: str,
    parent: x509.Certificate | None = None,
    min_days: int = 30,
    at: dt.datetime | None = None,
    lint: bool = True,
    source: str = "",
) -> CertRow:
    """A CA certificate: validity, key, signature, CA:TRUE + keyCertSign, issued by ``parent`` (None for a root)."""
    at = at or _now()
    out = _common_findings(cert, at, min_days)
    bc = _basic_constraints(cert)
    if bc is None or not bc.ca:
        out.append(Finding("not-a-ca", "error", "basicConstraints CA:TRUE is missing: it cannot issue certs"))
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            out.append(Finding("ca-key-usage", "error", "keyUsage lacks keyCertSign"))
    except x509.ExtensionNotFound:
        pass
    if parent is None and not is_self_signed(cert):
        out.append(Finding("unknown-issuer", "error", f"not self-signed: issued by {cert.issuer.rfc4514_string()}"))
    if parent is not None and issued_by(cert, [parent]) is None:
        out.append(Finding("unknown-issuer", "error",
                           f"not issued by its parent {parent.subject.rfc4514_string()}"))
    if lint:
        out += _lint_findings(cert, parent)
    return _row(cert, name=name, role="root" if parent is None else "intermediate", source=source, findings=out,
                used_by=(), at=at)


# ---------------------------------------------------------------------------------------------------------------
# leaves
# ---------------------------------------------------------------------------------------------------------------
def check_leaf(
    cert: x509.Certificate,
    *,
    name: str,
    consumers: Sequence[Consumer],
    chain: Sequence[x509.Certificate] = (),
    key: PrivateKeyTypes | None = None,
    crls: Sequence[x509.CertificateRevocationList] = (),
    known_cas: Sequence[x509.Certificate] = (),
    min_days: int = 30,
    at: dt.datetime | None = None,
    lint: bool = True,
    source: str = "",
) -> CertRow:
    """An end-entity certificate, as each of ``consumers`` verifies it.

    ``chain`` is what is presented after the leaf; ``known_cas`` are CA certs that exist but are not presented (to tell
    a missing intermediate from an unknown issuer); ``crls`` are checked when issued by the leaf's issuer.
    """
    if not consumers:
        raise ValueError(f"check_leaf({name!r}) needs at least one consumer (who verifies it, against which roots)")
    at = at or _now()
    role = consumers[0].role
    out = _common_findings(cert, at, min_days)
    bc = _basic_constraints(cert)
    if bc is not None and bc.ca:
        out.append(Finding("ca-as-leaf", "error", "basicConstraints CA:TRUE on a leaf (RFC 5280: an end entity "
                                                  "must not assert cA)"))
    roles = dict.fromkeys(c.role for c in consumers)
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        for r in roles:
            if _EKU[r] not in ekus and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in ekus:
                have = ", ".join(getattr(e, "_name", e.dotted_string) for e in ekus) or "none"
                out.append(Finding("wrong-eku", "error", f"used as a {r} cert but its EKU is {have} "
                                                         f"(needs {_EKU[r]._name})"))
    except x509.ExtensionNotFound:
        out.append(Finding("no-eku", "warning", "no extendedKeyUsage: any use is allowed"))
    sans = sans_of(cert)
    for c in consumers:
        for host in c.hostnames:
            if not covers(sans, host):
                out.append(Finding("san-mismatch", "error",
                                   f"{c.label} expects {host!r}; SANs are {', '.join(sans) or 'none'}"))
    if key is not None:
        mine = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        theirs = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        if mine != theirs:
            out.append(Finding("key-mismatch", "error", "the private key does not belong to this certificate"))
    pool = [*chain, *known_cas, *(t for c in consumers for t in c.trust)]
    issuer = issued_by(cert, pool)
    out += _crl_findings(cert, crls, issuer, at)
    found = {f.code for f in out}
    for c in consumers:
        out += [f for f in path_findings(cert, list(chain), c, list(known_cas), at) if f.code not in found]
        if not c.verifies:
            out.append(Finding("not-verified", "warning", f"{c.label} does not verify this certificate"))
    if lint:
        out += _lint_findings(cert, issuer)
    return _row(cert, name=name, role=role, source=source, findings=out, used_by=[c.label for c in consumers], at=at)


def _crl_findings(cert: x509.Certificate, crls: Sequence[x509.CertificateRevocationList],
                  issuer: x509.Certificate | None, at: dt.datetime) -> list[Finding]:
    out: list[Finding] = []
    for crl in crls:
        if crl.issuer != cert.issuer:
            continue
        if issuer is not None and not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            out.append(Finding("crl-invalid", "warning", "the CRL is not signed by the cert's issuer: ignored"))
            continue
        if crl.next_update_utc is not None and crl.next_update_utc < at:
            out.append(Finding("crl-expired", "warning", f"the CRL's nextUpdate {crl.next_update_utc:%Y-%m-%d} "
                                                         "has passed: verifiers with CRL checks refuse every cert"))
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        if entry is not None:
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
            except x509.ExtensionNotFound:
                reason = "unspecified"
            out.append(Finding("revoked", "error", f"serial {cert.serial_number:x} revoked "
                                                   f"{entry.revocation_date_utc:%Y-%m-%d} ({reason})"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# a whole set, against the topology that uses it
# ---------------------------------------------------------------------------------------------------------------
_PREV: dict[HopName, str] = {"gateway": "client", "apim": "gateway", "ingress": "apim", "pod": "ingress"}


def _depth(value: str | None) -> int:
    """ingress-nginx's verify-depth annotations: default 1; 0 or an invalid value also become 1."""
    try:
        depth = int(value or "1")
    except ValueError:
        return 1
    return depth if depth > 0 else 1


def topology_consumers(topology: Topology, ca_certs: Mapping[str, x509.Certificate]) -> dict[str, list[Consumer]]:
    """Leaf name → who verifies it in ``topology`` (trust anchors from ``ca_certs``, CA name → cert)."""
    plan = topology.pki
    ing = topology.ingress.primary
    out: dict[str, list[Consumer]] = {}

    def anchors(ca: str) -> tuple[x509.Certificate, ...]:
        return (ca_certs[plan.root_of(ca)],)

    for hop in HOPS:
        if hop == "pod" and topology.passthrough:
            continue  # behind ssl-passthrough the pod's cert is APIM's to verify: the ingress row above is that session
        listener, caller = topology.listener_of(hop), topology.caller_of(hop)
        served = listener.server_cert
        if hop == "ingress" and topology.passthrough:
            served = topology.pod.listener.server_cert  # the pod answers the ingress host itself
        leaf = plan.leaf(served)
        hosts = tuple(dict.fromkeys([listener.hostname] + ([caller.hostname] if caller.verify_name else [])))
        pod_upstream = hop == "pod" and not topology.passthrough
        out.setdefault(served, []).append(Consumer(
            label=f"{_PREV[hop]} → {hop}",
            trust=anchors(caller.trusted_ca or leaf.issuer),
            role="server",
            hostnames=hosts,
            max_depth=_depth(ing.annotation("proxy-ssl-verify-depth")) if pod_upstream else None,
            depth_source="proxy-ssl-verify-depth" if pod_upstream else "",
            verifies=caller.verify_chain and caller.trusted_ca is not None,
        ))
        if caller.client_cert:
            client = plan.leaf(caller.client_cert)
            checked = listener.client_auth != "none" and listener.client_ca is not None
            apim = topology.apim
            if hop == "apim" and apim.negotiate_client_certificate and apim.validate_client_certificate:
                # APIM: negotiateClientCertificate asks for the cert, the validate-client-certificate policy (or its
                # context.Request.Certificate form) checks it against the CA certificates: 401 otherwise
                checked = listener.client_ca is not None
            out.setdefault(client.name, []).append(Consumer(
                label=f"{hop} ← {_PREV[hop]} (client cert)",
                trust=anchors(listener.client_ca if checked and listener.client_ca else client.issuer),
                role="client",
                max_depth=_depth(ing.annotation("auth-tls-verify-depth")) if hop == "ingress" else None,
                depth_source="auth-tls-verify-depth" if hop == "ingress" else "",
                verifies=checked,
            ))
    return out


def _topology_for(plan: PKIPlan) -> Topology | None:
    """The default topology over ``plan`` when the plan has every CA and leaf name it refers to."""
    default = default_topology(plan.key_type)
    names = {c.name for c in plan.cas} | {lf.name for lf in plan.leaves}
    wanted = {c.name for c in default.pki.cas} | {lf.name for lf in default.pki.leaves}
    return default.replace(pki=plan) if wanted <= names else None


def check_cert_set(
    cs: CertSet,
    topology: Topology | None = None,
    *,
    min_days: int = 30,
    at: dt.datetime | None = None,
    lint: bool = True,
) -> CheckReport:
    """Every CA and leaf of ``cs``. Leaves are checked as ``topology`` uses them (default: the default topology when
    the set has its names); a leaf no hop uses is checked against its own root."""
    at = at or _now()
    plan = cs.plan
    notes: list[str] = []
    if topology is None:
        topology = _topology_for(plan)
        notes.append("checked against the default topology" if topology else
                     "the set's names do not match the default topology: each leaf is checked against its own root")
    ca_certs = {c.name: read_pem_certs(cs.ca_cert(c.name), "CA certificate")[0] for c in plan.cas}
    crls = [read_crl(p) for c in plan.cas if (p := cs.directory / "cas" / c.name / "crl.pem").is_file()]
    rows = [
        check_ca(ca_certs[c.name], name=c.name, parent=ca_certs[c.parent] if c.parent else None, min_days=min_days,
                 at=at, lint=lint, source=str(cs.ca_cert(c.name)))
        for c in plan.cas
    ]
    consumers = topology_consumers(topology, ca_certs) if topology else {}
    for spec in plan.leaves:
        files = cs.leaf(spec.name)
        cert = read_pem_certs(files.cert)[0]
        presented = read_pem_certs(files.chain, "certificate chain")
        extra = files.cert.parent / "intermediates.pem"
        known = [*ca_certs.values(), *(read_pem_certs(extra) if extra.is_file() else [])]
        cons = consumers.get(spec.name) or [Consumer(
            label=f"{plan.root_of(spec.issuer)} (own root; no hop uses this leaf)",
            trust=(ca_certs[plan.root_of(spec.issuer)],),
            role=spec.usage,
        )]
        row = check_leaf(cert, name=spec.name, consumers=cons, chain=presented[1:], key=read_private_key(files.key),
                         crls=crls, known_cas=known, min_days=min_days, at=at, lint=lint, source=str(files.cert))
        if presented[0] != cert:
            bad = Finding("chain-mismatch", "error", f"{files.chain.name} does not start with {files.cert.name}")
            row = dataclasses.replace(row, findings=(bad, *row.findings))
        rows.append(row)
    return CheckReport(tuple(rows), min_days, tuple(notes))


# ---------------------------------------------------------------------------------------------------------------
# one certificate, or one CA bundle
# ---------------------------------------------------------------------------------------------------------------
def _guess_role(cert: x509.Certificate, hostnames: Sequence[str]) -> Literal["server", "client"]:
    if hostnames:
        return "server"
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "server"
    return "client" if ExtendedKeyUsageOID.CLIENT_AUTH in ekus and ExtendedKeyUsageOID.SERVER_AUTH not in ekus \
        else "server"


def check_identity(
    ident: Identity,
    *,
    trust: Sequence[x509.Certificate],
    trust_label: str = "the given CA bundle",
    role: Literal["server", "client"] | None = None,
    hostnames: Sequence[str] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    min_days: int = 30,
    at: dt.datetime | None = None,
    lint: bool = True,
) -> CheckReport:
    """One leaf (from a PEM file, a PFX or a Kubernetes secret) against ``trust``. ``role`` defaults to what the
    hostnames or the EKU suggest."""
    role = role or _guess_role(ident.cert, hostnames)
    consumer = Consumer(label=f"a {role} verifier trusting {trust_label}", trust=tuple(trust), role=role,
                        hostnames=tuple(hostnames))
    all_crls = [*crls, *([ident.crl] if ident.crl is not None else [])]
    row = check_leaf(ident.cert, name=ident.source.name, consumers=[consumer], chain=ident.chain, key=ident.key,
                     crls=all_crls, known_cas=ident.ca_certs, min_days=min_days, at=at, lint=lint,
                     source=str(ident.source))
    notes = () if ident.key is not None else ("no private key given: key-match not checked (pass --key)",)
    return CheckReport((row,), min_days, notes)


def check_ca_bundle(certs: Sequence[x509.Certificate], *, source: str, min_days: int = 30,
                    at: dt.datetime | None = None, lint: bool = True) -> CheckReport:
    """The CA certs of a bundle (a secret's ``ca.crt``): each is a root, or an intermediate whose parent is in it."""
    rows = []
    for i, cert in enumerate(certs):
        parent = None if is_self_signed(cert) else issued_by(cert, certs)
        row = check_ca(cert, name=f"{Path(source).name}[{i}]", parent=parent, min_days=min_days, at=at, lint=lint,
                       source=source)
        if parent is None and not is_self_signed(cert):
            note = Finding("missing-intermediate", "warning", f"its issuer {cert.issuer.rfc4514_string()} is not in "
                           "the bundle: verifiers need it to reach a root")
            kept = [f for f in row.findings if f.code != "unknown-issuer"]
            row = dataclasses.replace(row, role="intermediate", findings=(*kept, note))
        rows.append(row)
    return CheckReport(tuple(rows), min_days)
