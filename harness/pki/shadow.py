"""The shadow PKI: stand-ins for the user's certificates, built from their public parts alone.

Nobody hands production private keys to a test tool. From the public certificates of a chain (each identity's
leaf + intermediates, each trust list's CA certificates) this module builds a cert set whose certificates have the
same subjects, SANs, EKUs, key types and sizes, validity windows, chain depths and path lengths, and the same trust
relations (who trusts which root), signed with keys the harness makes (files 0600). Where the user gives an
identity's private key (a test environment) the real certificates are used instead.

    result = build_cert_set([IdentityInput("apim-client", chain)], [TrustInput("ingress-ca", roots)], directory)
    result.certs.leaf("apim-client").chain                  # the shadow leaf + shadow intermediates
    result.certs.trust_bundle(result.trust["ingress-ca"])   # the shadow of the roots that trust list holds
    result.mode["apim-client"]                              # "shadow" or "real"

Rules:

- **Issuers are matched** by subject and signature (``verify_directly_issued_by``), else by subject and AKI/SKI.
  Every certificate of every identity chain and trust list joins one pool, so a trust list naming a CA whose
  identity leaves exist shares that CA's shadow: a shadow leaf verifies against the shadow of its real root and
  against no other.
- **A missing issuer** (a chain given without its root) gets a shadow root with the issuer's name, key type and a
  window covering what it signs; the real depth above it is unknown, so that is where the copy stops.
- **Real or shadow, per root.** A root's tree is used as the user's own certificates when every identity under it
  comes with its key and every CA above them was given; otherwise the whole tree is shadowed (a shadow leaf cannot
  be signed by a real CA, and a trust list holds one version of a root), and ``mode`` says so per identity.
- **Names from the chain file.** A CA takes the name of the trust list that holds it (single-cert lists first,
  then ``<list>``, ``<list>-2``… by position), else a name made from its common name.
- **Stable shadows.** Each shadow CA and leaf is kept under ``ca_cache`` keyed by the real certificate's
  fingerprint (and its shadow issuer's): a current and a next chain file that share a certificate share its shadow,
  so a leaf-only renewal rotates no root and a new intermediate keeps its root.
- A key that does not belong to its certificate, an encrypted key, a self-signed identity, an unsupported key type
  or a trust list with several roots is one :class:`~harness.errors.InputError` line.

The set's directory is reused when it already holds the same plan with the same real certificates (repeated runs
serve the same shadow certs); a different cert set there is replaced; any other non-empty directory is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import InputError
from harness.model.topology import CASpec, KeyType, LeafSpec, PKIPlan
from harness.pki.certset import CertSet, Supplied, generate_cert_set, load_cert_set, plan_digest
from harness.pki.x509 import (
    PrivateKey,
    Signed,
    cert_pem,
    fingerprint_sha256,
    issue_ca,
    issue_leaf,
    key_pem,
    new_key,
)

__all__ = ["IdentityInput", "ShadowResult", "TrustInput", "build_cert_set", "shadow_plan"]

Mode = Literal["shadow", "real"]


@dataclass(frozen=True)
class IdentityInput:
    """One identity of the chain file (a server or client cert)."""

    name: str  # the identity's name in the chain file; becomes the leaf name in the cert set
    chain: tuple[x509.Certificate, ...]  # leaf first, then intermediates, as the user's file gives them
    key: Path | PrivateKey | None = None  # its private key (a file, or already loaded) when the user gives one


@dataclass(frozen=True)
class TrustInput:
    """One trust list of the chain file (a CA Secret's ca.crt, App Gateway trusted roots…)."""

    name: str
    certs: tuple[x509.Certificate, ...]  # the CA certificates (roots and/or intermediates)


@dataclass(frozen=True)
class ShadowResult:
    certs: CertSet  # leaves named like the identities; certs.trust_bundle(trust[name]) gives that list's roots
    plan: PKIPlan
    trust: Mapping[str, str]  # trust list name -> the CA name to put in Listener.client_ca / Upstream.trusted_ca
    mode: Mapping[str, Mode]  # per identity
    #: CA name -> the user's certificate it stands for (None: a root nobody gave, synthesized from its children)
    real: Mapping[str, x509.Certificate | None] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# the CA pool
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _CA:
    subject: x509.Name
    cert: x509.Certificate | None  # None: a synthesized root for an issuer nobody gave
    key_id: bytes | None  # SKI (or, synthesized, the AKI its children name)
    name: str = ""
    parent: _CA | None = None
    children: list[x509.Certificate] = field(default_factory=list)  # what it signs (for a synthesized window)


def _ski(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return None


def _aki(cert: x509.Certificate) -> bytes | None:
    try:
        return cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and _signed_by(cert, cert)


class _Pool:
    def __init__(self) -> None:
        self.cas: dict[str, _CA] = {}  # fingerprint (or "synth:<dn>:<aki>") -> CA

    def add(self, cert: x509.Certificate) -> _CA:
        fp = fingerprint_sha256(cert)
        if fp not in self.cas:
            self.cas[fp] = _CA(cert.subject, cert, _ski(cert))
        return self.cas[fp]

    def issuer_of(self, cert: x509.Certificate) -> _CA:
        """The pool CA that signed ``cert`` (by signature, else by AKI/SKI, else by name), or a synthesized root."""
        named = [c for c in self.cas.values() if c.subject == cert.issuer and c.cert is not cert]
        real = [c for c in named if c.cert is not None]
        found = next((c for c in real if c.cert is not None and _signed_by(cert, c.cert)), None)
        aki = _aki(cert)
        if found is None:
            found = next((c for c in named if aki is not None and c.key_id == aki), None)
        if found is None and aki is None and named:
            found = named[0]
        if found is None:
            key = f"synth:{cert.issuer.rfc4514_string()}:{(aki or b'').hex()}"
            found = self.cas.setdefault(key, _CA(cert.issuer, None, aki))
        found.children.append(cert)
        return found


def _root(ca: _CA) -> _CA:
    while ca.parent is not None:
        ca = ca.parent
    return ca


def _line(ca: _CA) -> list[_CA]:
    out = [ca]
    while out[-1].parent is not None:
        out.append(out[-1].parent)
    return out


# ---------------------------------------------------------------------------------------------------------------
# profiles copied from real certificates
# ---------------------------------------------------------------------------------------------------------------
def _key_profile(cert: x509.Certificate, where: str) -> tuple[KeyType, int]:
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        return "rsa", pub.key_size
    if isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.key_size in (256, 384, 521):
        return "ecdsa", pub.curve.key_size
    raise InputError(where, f"has a {type(pub).__name__} key, which the shadow PKI cannot copy",
                     "give the certificate's private key to use it as is, or reissue it with an RSA or EC key")


def _cn(name: x509.Name, fallback: str) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else fallback


def _org(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return str(attrs[0].value) if attrs else "Contoso"


def _dn(name: x509.Name, where: str) -> str:
    text = name.rfc4514_string()
    try:
        back = x509.Name.from_rfc4514_string(text)
    except ValueError:
        back = None
    if back != name:
        raise InputError(where, f"has a subject the shadow PKI cannot copy exactly ({text})",
                         "give the certificate's private key to use it as is")
    return text


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for gn in san:
        if isinstance(gn, x509.DNSName):
            out.append(gn.value)
        elif isinstance(gn, x509.IPAddress):
            out.append(str(gn.value))
        elif isinstance(gn, x509.UniformResourceIdentifier):
            out.append(f"URI:{gn.value}")
        elif isinstance(gn, x509.RFC822Name):
            out.append(f"email:{gn.value}")
    return tuple(out)


def _ekus(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        return tuple(o.dotted_string for o in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return ()


def _path_length(cert: x509.Certificate) -> int:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return -1
    return -1 if bc.path_length is None else bc.path_length


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "ca"


def _ca_spec(ca: _CA) -> CASpec:
    parent = ca.parent.name if ca.parent else None
    if ca.cert is None:  # synthesized: the issuer's name, a window covering what it signs, no depth limit
        kt, size = _key_profile(ca.children[0], ca.name)
        return CASpec(ca.name, _cn(ca.subject, ca.name), parent, subject=_dn(ca.subject, ca.name), key_type=kt,
                      key_size=size, not_before=min(c.not_valid_before_utc for c in ca.children),
                      not_after=max(c.not_valid_after_utc for c in ca.children), path_length=-1)
    where = f"CA certificate {ca.subject.rfc4514_string()!r}"
    kt, size = _key_profile(ca.cert, where)
    return CASpec(ca.name, _cn(ca.subject, ca.name), parent, subject=_dn(ca.subject, where), key_type=kt,
                  key_size=size, not_before=ca.cert.not_valid_before_utc, not_after=ca.cert.not_valid_after_utc,
                  path_length=_path_length(ca.cert))


def _leaf_spec(name: str, cert: x509.Certificate, issuer: str) -> LeafSpec:
    where = f"identity {name!r}"
    kt, size = _key_profile(cert, where)
    ekus = _ekus(cert)
    usage: Literal["server", "client"] = (
        "client" if ekus and ExtendedKeyUsageOID.SERVER_AUTH.dotted_string not in ekus else "server")
    return LeafSpec(name, issuer, _cn(cert.subject, name), usage, _sans(cert), _org(cert.subject),
                    subject=_dn(cert.subject, where), ekus=ekus, key_type=kt, key_size=size,
                    not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc)


# ---------------------------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------------------------
def _read_key(ident: IdentityInput) -> PrivateKey:
    assert ident.key is not None
    where: Path | str = f"identity {ident.name!r}'s key"
    if isinstance(ident.key, Path):
        where = ident.key
        try:
            data = ident.key.read_bytes()
        except OSError as exc:
            raise InputError(ident.key, f"cannot be read ({exc.strerror})", f"check the key path of {ident.name!r}"
                             ) from None
        try:
            key: object = (serialization.load_pem_private_key(data, None) if b"-----BEGIN" in data
                           else serialization.load_der_private_key(data, None))
        except TypeError:
            raise InputError(ident.key, "is an encrypted private key", f"give {ident.name!r} an unencrypted key "
                             "file (kept 0600), or no key for a shadow") from None
        except ValueError:
            raise InputError(ident.key, "holds no readable private key", "give a PEM or DER private key") from None
    else:
        key = ident.key
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise InputError(where, f"is a {type(key).__name__}", "give an RSA or EC key")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, pub)
    if mine != ident.chain[0].public_key().public_bytes(serialization.Encoding.DER, pub):
        raise InputError(where, f"does not belong to identity {ident.name!r}'s certificate "
                         f"({ident.chain[0].subject.rfc4514_string()})",
                         "give the key that goes with that certificate, or no key to use a shadow")
    return key


@dataclass(frozen=True)
class _Shadow:
    plan: PKIPlan
    supplied: Mapping[str, Supplied]
    trust: Mapping[str, str]
    mode: Mapping[str, Mode]
    ids: Mapping[str, str]  # CA name -> what it stands for: the real cert's fingerprint, or "synth:<issuer>:<aki>"
    real: Mapping[str, x509.Certificate | None]


def shadow_plan(identities: Sequence[IdentityInput], trusts: Sequence[TrustInput]) -> tuple[
        PKIPlan, dict[str, str], dict[str, Mode]]:
    """The plan :func:`build_cert_set` generates (without writing anything): plan, trust map, mode per identity."""
    sh = _shadow(identities, trusts)
    return sh.plan, dict(sh.trust), dict(sh.mode)


def _shadow(identities: Sequence[IdentityInput], trusts: Sequence[TrustInput]) -> _Shadow:
    names = [i.name for i in identities]
    if len(set(names)) != len(names):
        twice = ", ".join(sorted(n for n in set(names) if names.count(n) > 1))
        raise InputError("identities", f"names repeat ({twice})", "give every identity its own name")
    for ident in identities:
        if not ident.chain:
            raise InputError(f"identity {ident.name!r}", "has no certificate", "give its PEM chain, leaf first")
        if _self_signed(ident.chain[0]):
            raise InputError(f"identity {ident.name!r}", "is a self-signed certificate",
                             "the harness models leaves issued by a CA: give the CA-issued cert")
    keys = {i.name: _read_key(i) for i in identities if i.key is not None}
    pool = _Pool()
    for cert in [c for i in identities for c in i.chain[1:]] + [c for t in trusts for c in t.certs]:
        pool.add(cert)
    for ca in list(pool.cas.values()):
        if ca.cert is not None and not _self_signed(ca.cert):
            ca.parent = pool.issuer_of(ca.cert)
    leaf_ca = {i.name: pool.issuer_of(i.chain[0]) for i in identities}
    # names: the trust list's name where a trust list names the CA (lists of one cert first, then the others in
    # order: <list>, <list>-2… by position), else from the CN; unique against each other and the identities
    taken = set(names)

    def claim(ca: _CA, base: str) -> None:
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        ca.name = name
        taken.add(name)

    for t in sorted(trusts, key=lambda t: len(t.certs) > 1):
        for i, cert in enumerate(t.certs):
            if not (ca := pool.add(cert)).name:
                claim(ca, t.name if i == 0 else f"{t.name}-{i + 1}")
    for ca in sorted(pool.cas.values(), key=lambda c: (len(_line(c)), c.subject.rfc4514_string())):
        if not ca.name:
            claim(ca, _slug(_cn(ca.subject, "ca")))
    # real or shadow, per root tree
    under: dict[str, list[str]] = {}
    for who, ca in leaf_ca.items():
        under.setdefault(_root(ca).name, []).append(who)
    real_roots = {r for r, idents in under.items()
                  if all(i in keys and all(c.cert is not None for c in _line(leaf_ca[i])) for i in idents)}
    mode: dict[str, Mode] = {i: "real" if _root(leaf_ca[i]).name in real_roots else "shadow" for i in names}
    plan_key: KeyType = _key_profile(identities[0].chain[0], identities[0].name)[0] if identities else "ecdsa"
    cas = tuple(_ca_spec(c) for c in sorted(pool.cas.values(), key=lambda c: c.name))
    leaves = tuple(_leaf_spec(i.name, i.chain[0], leaf_ca[i.name].name) for i in identities)
    plan = PKIPlan(cas=cas, leaves=leaves, key_type=plan_key)
    supplied: dict[str, Supplied] = {}
    for ca in pool.cas.values():
        if _root(ca).name in real_roots and ca.cert is not None:
            supplied[ca.name] = Supplied(ca.cert)
    for ident in identities:
        if mode[ident.name] == "real":
            supplied[ident.name] = Supplied(ident.chain[0], keys[ident.name])
    trust: dict[str, str] = {}
    for t in trusts:
        if not t.certs:
            raise InputError(f"trust list {t.name!r}", "holds no certificate", "give its CA certificates (PEM)")
        roots = list(dict.fromkeys(_root(pool.add(c)).name for c in t.certs))
        if len(roots) > 1:
            raise InputError(f"trust list {t.name!r}", f"holds {len(roots)} roots ({', '.join(roots)}); the "
                             "harness models one root per trust list", "keep one root in it")
        trust[t.name] = roots[0]
    ids = {ca.name: fp for fp, ca in pool.cas.items()}
    return _Shadow(plan, supplied, trust, mode, ids, {ca.name: ca.cert for ca in pool.cas.values()})


def _same_set(directory: Path, plan: PKIPlan, supplied: Mapping[str, Supplied]) -> bool:
    try:
        meta = json.loads((directory / "set.json").read_text())
    except (OSError, ValueError):
        return False
    want = {n: fingerprint_sha256(s.cert) for n, s in sorted(supplied.items())}
    return bool(meta.get("digest") == plan_digest(plan) and meta.get("supplied", {}) == want)


def _cached_ca(d: Path) -> Signed | None:
    try:
        cert = x509.load_pem_x509_certificate((d / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((d / "key.pem").read_bytes(), None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return None
    return Signed(cert, key)


def _stable_cas(sh: _Shadow, cache: Path) -> dict[str, Signed]:
    """The shadow of every CA that is not the user's own, one per real CA certificate: kept under ``cache`` by the
    real cert's fingerprint (and its parent shadow's), so the current and the next chain file get the very same
    shadow CA (cert and key) for a CA certificate they share — a leaf-only renewal rotates no root."""
    out: dict[str, Signed] = {}
    pending = [ca for ca in sh.plan.cas if ca.name not in sh.supplied]
    while pending:
        for ca in [c for c in pending if c.parent is None or c.parent in out]:
            pending.remove(ca)
            parent = out[ca.parent] if ca.parent else None
            profile = (sh.ids[ca.name], fingerprint_sha256(parent.cert) if parent else "", ca.subject,
                       ca.key_type, ca.key_size, ca.path_length)
            if sh.real.get(ca.name) is None:  # a root nobody gave: its window is where it was first needed
                ident = hashlib.sha256(repr(profile).encode()).hexdigest()[:24]
            else:
                ident = hashlib.sha256(repr((*profile, ca.not_before, ca.not_after)).encode()).hexdigest()[:24]
            d = cache / ident
            found = _cached_ca(d)
            if found is None:
                length = None if ca.path_length is None or ca.path_length < 0 else ca.path_length
                found = issue_ca(ca.common_name, ca.key_type or sh.plan.key_type, parent=parent, path_length=length,
                                 subject=x509.Name.from_rfc4514_string(ca.subject) if ca.subject else None,
                                 key=new_key(ca.key_type or sh.plan.key_type, size=ca.key_size),
                                 not_before=ca.not_before, not_after=ca.not_after)
                _keep_ca(d, found)
                found = _cached_ca(d) or found  # another process may have kept its own first
            out[ca.name] = found
        if pending and not any(c.parent is None or c.parent in out for c in pending):
            break  # a parent is the user's own CA without its key: generate_cert_set names it
    return out


def _stable_leaves(sh: _Shadow, cas: Mapping[str, Signed], cache: Path, fps: Mapping[str, str]) -> dict[str, Signed]:
    """The shadow of every identity that runs as a stand-in, one per real leaf certificate and shadow issuer (kept
    like the CAs): an identity whose certificate the next chain file does not change serves the same shadow."""
    out: dict[str, Signed] = {}
    for lf in sh.plan.leaves:
        if lf.name in sh.supplied or lf.issuer not in cas:
            continue
        issuer = cas[lf.issuer]
        ident = hashlib.sha256(repr((fps[lf.name], fingerprint_sha256(issuer.cert), lf.subject, lf.sans, lf.ekus,
                                     lf.key_type, lf.key_size, lf.not_before, lf.not_after)).encode()
                               ).hexdigest()[:24]
        d = cache / f"leaf-{ident}"
        found = _cached_ca(d)
        if found is None:
            found = issue_leaf(issuer, lf.common_name, lf.sans, (lf.usage,), lf.key_type or sh.plan.key_type,
                               organization=lf.organization,
                               subject=x509.Name.from_rfc4514_string(lf.subject) if lf.subject else None,
                               eku_oids=tuple(x509.ObjectIdentifier(o) for o in lf.ekus) if lf.ekus is not None
                               else None, key=new_key(lf.key_type or sh.plan.key_type, size=lf.key_size),
                               not_before=lf.not_before, not_after=lf.not_after, exact_sans=lf.subject is not None)
            _keep_ca(d, found)
            found = _cached_ca(d) or found
        out[lf.name] = found
    return out


def _keep_ca(d: Path, ca: Signed) -> None:
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".{d.name}.tmp-"))
    try:
        (tmp / "cert.pem").write_bytes(cert_pem(ca.cert))
        fd = os.open(tmp / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key_pem(ca.key))
        tmp.rename(d)
    except OSError:
        pass  # lost the race to another process (its CA is used), or an unwritable cache (this run's CA is used)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_cert_set(identities: Sequence[IdentityInput], trusts: Sequence[TrustInput], directory: Path, *,
                   ca_cache: Path | None = None) -> ShadowResult:
    """The cert set for a chain given by its public certificates (module docstring), written to ``directory``.

    Shadow CAs and leaves come from ``ca_cache`` (default: ``shadow-cas/`` next to ``directory``), one per real
    certificate, so two sets made from chain files that share a certificate share its shadow (cert and key)."""
    directory = Path(directory)
    if not identities and not trusts:
        raise InputError(directory, "was asked for a shadow set of no certificates",
                         "give at least one identity or trust list")
    sh = _shadow(identities, trusts)
    cache = Path(ca_cache) if ca_cache is not None else directory.parent / "shadow-cas"
    cas = _stable_cas(sh, cache)
    fps = {i.name: fingerprint_sha256(i.chain[0]) for i in identities}
    supplied = {**sh.supplied, **{n: Supplied(s.cert, s.key) for n, s in
                                  {**cas, **_stable_leaves(sh, cas, cache, fps)}.items()}}
    if directory.is_dir() and _same_set(directory, sh.plan, supplied):
        certs = load_cert_set(directory, sh.plan)
    else:
        if directory.is_dir() and any(directory.iterdir()) and not (directory / "set.json").is_file():
            raise InputError(directory, "holds files that are not a cert set",
                             "choose an empty directory (or one the harness made) for the shadow set")
        try:
            certs = generate_cert_set(sh.plan, directory, force=True, supplied=supplied)
        except ValueError as exc:  # a name that cannot be a file name
            raise InputError("identities", str(exc), "rename the identity in the chain file") from None
    return ShadowResult(certs, sh.plan, MappingProxyType(dict(sh.trust)), MappingProxyType(dict(sh.mode)),
                        MappingProxyType(dict(sh.real)))
