"""The fault catalogue: bad variants of a leaf, each rejected by a real verifier for one stated reason.

:func:`build_fault` returns the variant's material; :meth:`harness.pki.certset.CertSet.fault` writes it to disk
atomically
and caches it. Every variant keeps the original leaf's subject, SANs and EKU except where the fault is exactly that.

- ``unknown-ca``: same subject/SANs/EKU, issued by a fresh rogue root nobody trusts
  → "unable to get local issuer certificate";
- ``expired``: right issuer, notAfter yesterday → "certificate has expired";
- ``not-yet-valid``: right issuer, notBefore in 30 days → "certificate is not yet valid";
- ``wrong-san``: right issuer, SAN (and CN) for another host → "Hostname mismatch";
- ``self-signed``: signed by its own key → "self-signed certificate";
- ``wrong-eku``: serverAuth-only for a client leaf, clientAuth-only for a server leaf
  → "unsuitable certificate purpose" (OpenSSL 3.0's text);
- ``ca-as-leaf``: right issuer, basicConstraints CA:TRUE → the RFC 5280 path validator ("basicConstraints.cA must
  not be asserted"); OpenSSL accepts it in a handshake;
- ``missing-intermediate``: the chain file lacks the intermediate (a new one under the right root when the leaf's issuer
  is a root) → "unable to get local issuer certificate";
- ``revoked``: right issuer, serial listed in the issuer's CRL → "certificate revoked" (with CRL checking on);
- ``intermediate-issued``: issued by a new intermediate under the right root, chain carries it → refused at verify
  depth 0, accepted at depth 1 and up;
- ``too-deep``: two new intermediates under the right root, chain carries both → refused at verify depth 1
  (ingress-nginx's default), accepted at depth 2;
- ``weak-key``: RSA 1024 → "ee key too small" (loading it) / "EE certificate key too weak" (verifying it);
- ``sha1``: SHA-1 signature → "ca md too weak" (loading it) / "CA signature digest algorithm too weak" (verifying it);
- ``key-mismatch``: the key file holds another key → "key values mismatch".

Verify depth counts intermediates between the leaf and the trusted root. Measured here with nginx 1.22 on OpenSSL 3.0
(``ssl_verify_depth``, which ingress-nginx's ``auth-tls-verify-depth`` sets), ``openssl verify -verify_depth`` and
cryptography's ``max_chain_depth``: all three accept one intermediate at depth 1 and refuse two.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, get_args

from cryptography import x509

from harness.model.topology import KeyType, LeafSpec
from harness.pki.x509 import Signed, issue_ca, issue_leaf, new_key, now

__all__ = ["FAULTS", "Fault", "FaultMaterial", "build_fault"]

Fault = Literal[
    "unknown-ca",
    "expired",
    "not-yet-valid",
    "wrong-san",
    "self-signed",
    "wrong-eku",
    "ca-as-leaf",
    "missing-intermediate",
    "revoked",
    "too-deep",
    "intermediate-issued",
    "weak-key",
    "sha1",
    "key-mismatch",
]

#: every fault kind, in catalogue order
FAULTS: tuple[Fault, ...] = get_args(Fault)

#: the host a "wrong-san" variant names instead (RFC 2606 ``.example``; never one the topology uses)
WRONG_SAN_HOST = "unrelated-host.contoso.example"


@dataclass(frozen=True)
class FaultMaterial:
    """What a fault variant consists of. ``chain`` is what the file ``chain.pem`` holds (leaf first);
    ``extra`` maps a file name to PEM certs stored beside it (the rogue CA, the intermediates left out)."""

    leaf: x509.Certificate
    key: Signed  # .key is what key.pem holds (for key-mismatch: not the cert's key)
    chain: tuple[x509.Certificate, ...]
    extra: dict[str, tuple[x509.Certificate, ...]] = field(default_factory=dict)


def build_fault(
    kind: Fault,
    spec: LeafSpec,
    key_type: KeyType,
    *,
    issuer: Signed,
    intermediates: tuple[Signed, ...],
    root: Signed,
    revoked_serial: int | None,
) -> FaultMaterial:
    """Make the ``kind`` variant of leaf ``spec``.

    ``issuer`` is the leaf's CA; ``intermediates`` are the CAs from the issuer up to (not including) ``root``, nearest
    first (empty when the issuer is the root). ``revoked_serial`` is the serial the issuer's CRL lists for this leaf.
    """
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r} (known: {', '.join(FAULTS)})")
    usages: tuple[Literal["server", "client"], ...] = (spec.usage,)

    def leaf(by: Signed | None, **kw: object) -> Signed:
        return issue_leaf(
            by, spec.common_name, spec.sans, usages, key_type, organization=spec.organization, **kw  # type: ignore[arg-type]
        )

    def normal_chain(lf: Signed) -> tuple[x509.Certificate, ...]:
        return (lf.cert, *(c.cert for c in intermediates))

    if kind == "unknown-ca":
        rogue = issue_ca("Rogue CA (trusted by nobody)", key_type, organization="Rogue")
        lf = leaf(rogue)
        return FaultMaterial(lf.cert, lf, (lf.cert,), {"ca.pem": (rogue.cert,)})
    if kind == "expired":
        t = now()
        lf = leaf(issuer, not_before=t - dt.timedelta(days=400), not_after=t - dt.timedelta(days=1))
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "not-yet-valid":
        t = now()
        lf = leaf(issuer, not_before=t + dt.timedelta(days=30), not_after=t + dt.timedelta(days=400))
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "wrong-san":
        lf = issue_leaf(issuer, WRONG_SAN_HOST, (WRONG_SAN_HOST,), usages, key_type, organization=spec.organization)
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "self-signed":
        lf = leaf(None)
        return FaultMaterial(lf.cert, lf, (lf.cert,))
    if kind == "wrong-eku":
        other: Literal["server", "client"] = "client" if spec.usage == "server" else "server"
        lf = issue_leaf(
            issuer, spec.common_name, spec.sans, (other,), key_type, organization=spec.organization
        )
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "ca-as-leaf":
        lf = leaf(issuer, is_ca=True)
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "missing-intermediate":
        if intermediates:
            lf = leaf(issuer)
            left_out = tuple(c.cert for c in intermediates)
        else:
            mid = issue_ca(f"{_cn(root)} Issuing CA (left out)", key_type, parent=root, path_length=0)
            lf = leaf(mid)
            left_out = (mid.cert,)
        return FaultMaterial(lf.cert, lf, (lf.cert,), {"intermediates.pem": left_out})
    if kind == "revoked":
        if revoked_serial is None:
            raise ValueError(f"no serial reserved in the CRL for leaf {spec.name!r}")
        lf = leaf(issuer, serial=revoked_serial)
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "intermediate-issued":
        mid = issue_ca(f"{_cn(root)} Issuing CA (fault)", key_type, parent=root, path_length=0)
        lf = leaf(mid)
        return FaultMaterial(lf.cert, lf, (lf.cert, mid.cert))
    if kind == "too-deep":
        upper = issue_ca(f"{_cn(root)} Policy CA (fault)", key_type, parent=root, path_length=1)
        lower = issue_ca(f"{_cn(root)} Issuing CA (fault)", key_type, parent=upper, path_length=0)
        lf = leaf(lower)
        return FaultMaterial(lf.cert, lf, (lf.cert, lower.cert, upper.cert))
    if kind == "weak-key":
        lf = leaf(issuer, key=new_key("rsa", rsa_bits=1024))
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    if kind == "sha1":
        lf = leaf(issuer, hash_algorithm="sha1")
        return FaultMaterial(lf.cert, lf, normal_chain(lf))
    # key-mismatch: a good cert, and a key file with another key of the same type
    lf = leaf(issuer)
    return FaultMaterial(lf.cert, Signed(lf.cert, new_key(key_type)), normal_chain(lf))


def _cn(ca: Signed) -> str:
    attrs = ca.cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else "CA"

