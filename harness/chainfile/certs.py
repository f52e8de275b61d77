"""A chain file's certificates → a PKI plan and a cert set the targets run with.

Identities (server and client certs: PEM chains, PFX, Kubernetes Secrets) and trust lists (CA certificates) are read
here; Secret manifests found in the Kubernetes YAML add identities and trust lists of their own unless their
certificates are already named in the chain file (matched by SHA-256 fingerprint). The plan takes every name from
the file: CAs by trust-list name (``<name>-2``… for the further certs of a list), intermediates found only inside an
identity's chain by a name made from their common name.

Where every identity comes with its private key (a test environment), the user's own certificates are the cert set
("real"); where one does not, the shadow PKI (:mod:`harness.pki.shadow`) makes stand-ins — per root: an identity
whose key is given runs real when every identity under its root has one. Either way the set is a
:class:`ChainCertSet` whose ``origin`` holds the user's certificates and files (``certs check --chain`` judges those).
Sets are written once per content under the cert cache's ``chains/`` folder (keys 0600) and reused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.chainfile.k8s import RawSecret, secret_manifest
from harness.errors import InputError
from harness.model.chainfile import Certificates, IdentityFile, TrustFile
from harness.model.topology import CASpec, KeyType, LeafSpec, PKIPlan
from harness.pki import shadow
from harness.pki.cache import cache_root
from harness.pki.certset import FORMAT, CertSet, load_cert_set
from harness.pki.load import load_k8s_secret, load_pkcs12, read_pem_certs, read_private_key
from harness.pki.x509 import cert_pem, fingerprint_sha256, key_pem

__all__ = ["CertMaterial", "ChainCertSet", "ChainCerts", "Identity", "Origin", "Trust", "build_chain_cert_set",
           "read_certificates", "secret_material", "slug"]

Mode = Literal["shadow", "real"]


@dataclass
class Identity:
    name: str
    chain: tuple[x509.Certificate, ...]  # leaf first
    key: PrivateKeyTypes | None
    source: str


@dataclass
class Trust:
    name: str
    certs: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes | None
    source: str


@dataclass
class CertMaterial:
    identities: dict[str, Identity] = field(default_factory=dict)
    trusts: dict[str, Trust] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """What a chain's cert set stands for: the user's own certificates, by plan name, with their files."""

    identities: Mapping[str, Identity]  # leaf name -> the user's identity (chain, key if given, source file)
    cas: Mapping[str, tuple[x509.Certificate, str] | None]  # CA name -> the user's cert and its file (None: a root
    # nobody gave, which the shadow PKI synthesized from what it signs)
    mode: Mapping[str, Mode]


class ChainCertSet(CertSet):
    """A cert set made from a chain file; ``origin`` holds the user's certificates it runs (real) or stands in for
    (shadow), so checks judge the user's certificates and name the user's files."""

    def __init__(self, cs: CertSet, origin: Origin) -> None:
        super().__init__(cs.directory, cs.plan, cs.revoked_serials)
        self.origin = origin


@dataclass(frozen=True)
class ChainCerts:
    certs: ChainCertSet
    trust: Mapping[str, tuple[str, ...]]  # trust-list name -> its CA names in the plan
    mode: Mapping[str, Mode]  # identity name -> how it is run


def _path(base: Path, value: str) -> Path:
    p = Path(os.path.expandvars(value)).expanduser()
    return p if p.is_absolute() else base / p


def _check_key(ident: Identity) -> None:
    if ident.key is None:
        return
    pub = ident.chain[0].public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    mine = ident.key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    if pub != mine:
        raise InputError(ident.source, f"identity {ident.name!r}: the certificate does not match its key",
                         "give the private key that belongs to this certificate (compare `openssl x509 -pubkey` "
                         "with `openssl pkey -pubout`)")


def _pem_certs(data: bytes, where: str, what: str) -> tuple[x509.Certificate, ...]:
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise InputError(where, f"{what} is not PEM certificates", "give the PEM text of the certificates") from None
    return certs


def _pem_key(data: bytes, where: str) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(data, None)
    except (ValueError, TypeError):
        raise InputError(where, "tls.key is not an unencrypted PEM private key",
                         "give the key as kubectl create secret tls writes it") from None


def secret_material(secret: RawSecret) -> tuple[Identity | None, tuple[x509.Certificate, ...] | None, bool]:
    """A Secret manifest's identity (tls.crt + tls.key), its CA certs and whether its ca.crt is malformed."""
    ident = None
    if secret.tls_crt is not None:
        chain = _pem_certs(secret.tls_crt, secret.source, f"Secret {secret.ref} tls.crt")
        key = _pem_key(secret.tls_key, secret.source) if secret.tls_key is not None else None
        ident = Identity(secret.name, chain, key, secret.source)
    cas: tuple[x509.Certificate, ...] | None = None
    malformed = False
    if secret.ca_crt is not None:
        try:
            cas = tuple(x509.load_pem_x509_certificates(secret.ca_crt))
        except ValueError:  # ingress-nginx then fails closed for the host (return 403): a case, not an input error
            malformed = True
    return ident, cas, malformed


def _identity(name: str, entry: IdentityFile, base: Path) -> Identity:
    key_path = _path(base, entry.key) if entry.key else None
    where = f"certificates.identities.{name}"
    if entry.pfx is not None:
        path = _path(base, entry.pfx)
        password = None
        if entry.password_env is not None:
            password = os.environ.get(entry.password_env)
            if password is None:
                raise InputError(path, f"({where}.password_env) ${entry.password_env} is not set",
                                 f"export {entry.password_env} with the PFX's password")
        try:
            p12 = load_pkcs12(path, password)
        except InputError as exc:
            raise InputError(path, f"({where}.pfx) {exc.problem}",
                             "set the environment variable named in password_env to the PFX's password") from None
        key = read_private_key(key_path) if key_path else p12.key
        ident = Identity(name, (p12.cert, *p12.chain), key, str(path))
    elif entry.secret is not None:
        path = _path(base, entry.secret)
        if path.is_dir():
            files = load_k8s_secret(path)
            if not files.tls_crt:
                raise InputError(path, f"({where}.secret) has no tls.crt", "point at a TLS Secret's folder")
            key = read_private_key(key_path) if key_path else files.tls_key
            ident = Identity(name, files.tls_crt, key, str(path))
        else:
            raw = secret_manifest(path, f"{where}.secret")
            found, _, _ = secret_material(raw)
            if found is None:
                raise InputError(path, f"({where}.secret) Secret {raw.ref} has no tls.crt",
                                 "point at a TLS Secret (type kubernetes.io/tls)")
            ident = Identity(name, found.chain, read_private_key(key_path) if key_path else found.key, str(path))
    else:
        path = _path(base, entry.pem or "")
        chain = tuple(read_pem_certs(path, f"{where}.pem certificate chain"))
        key = None
        if key_path is not None:
            key = read_private_key(key_path)
        elif b"PRIVATE KEY-----" in path.read_bytes():
            key = read_private_key(path)
        ident = Identity(name, chain, key, str(path))
    _check_key(ident)
    return ident


def _trust(name: str, entry: TrustFile, base: Path) -> Trust:
    where = f"certificates.trust.{name}"
    key = read_private_key(_path(base, entry.key)) if entry.key else None
    if entry.pem is not None:
        path = _path(base, entry.pem)
        return Trust(name, tuple(read_pem_certs(path, f"{where}.pem CA certificates")), key, str(path))
    path = _path(base, entry.secret or "")
    if path.is_dir():
        cas: tuple[x509.Certificate, ...] | None = load_k8s_secret(path).ca_crt
    else:
        _, cas, _ = secret_material(secret_manifest(path, f"{where}.secret"))
    if not cas:
        raise InputError(path, f"({where}.secret) has no readable ca.crt", "point at a Secret whose ca.crt holds "
                         "PEM CA certificates")
    return Trust(name, cas, key, str(path))


def read_certificates(certs: Certificates, base: Path) -> CertMaterial:
    """Every identity and trust list the chain file names (files relative to ``base``)."""
    out = CertMaterial()
    for name, trust_entry in certs.trust.items():
        out.trusts[name] = _trust(name, trust_entry, base)
    for name, ident_entry in certs.identities.items():
        out.identities[name] = _identity(name, ident_entry, base)
    return out


# ---------------------------------------------------------------------------------------------------------------
# the plan and the set
# ---------------------------------------------------------------------------------------------------------------
def _cn(cert: x509.Certificate, fallback: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else fallback


def slug(text: str) -> str:
    """A name for a file or a chain-file key made of ``text``: lower-case letters and digits joined by ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "ca"


def _self_signed(cert: x509.Certificate) -> bool:
    return cert.subject == cert.issuer


def _usage(cert: x509.Certificate) -> Literal["server", "client"]:
    try:
        ekus = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "server"
    return "server" if ExtendedKeyUsageOID.SERVER_AUTH in ekus else "client"


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
        str(v) for v in san.get_values_for_type(x509.IPAddress))


def _plan(mat: CertMaterial) -> tuple[PKIPlan, dict[str, x509.Certificate], dict[str, tuple[str, ...]]]:
    ca_certs: dict[str, x509.Certificate] = {}
    by_fp: dict[str, str] = {}
    trust_cas: dict[str, tuple[str, ...]] = {}

    def add(name: str, cert: x509.Certificate) -> str:
        fp = fingerprint_sha256(cert)
        if fp in by_fp:
            return by_fp[fp]
        unique, n = name, 2
        while unique in ca_certs or unique in mat.identities:
            unique, n = f"{name}-{n}", n + 1
        ca_certs[unique] = cert
        by_fp[fp] = unique
        return unique

    for trust in mat.trusts.values():
        trust_cas[trust.name] = tuple(add(trust.name, c) for c in trust.certs)
    for ident in mat.identities.values():
        for cert in ident.chain[1:]:
            add(slug(_cn(cert, "intermediate")), cert)
    by_subject = {c.subject: n for n, c in ca_certs.items()}
    cas = tuple(CASpec(n, _cn(c, n), None if _self_signed(c) else by_subject.get(c.issuer))
                for n, c in ca_certs.items())
    leaves = []
    for ident in mat.identities.values():
        leaf = ident.chain[0]
        issuer = by_subject.get(leaf.issuer)
        if issuer is None:
            raise InputError(ident.source, f"identity {ident.name!r} is issued by {leaf.issuer.rfc4514_string()!r}, "
                             "which no CA certificate of the chain file is",
                             "add the issuing CA under certificates.trust (or its chain to the identity's file)")
        orgs = leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        leaves.append(LeafSpec(ident.name, issuer, _cn(leaf, ident.name), _usage(leaf), _sans(leaf),
                               str(orgs[0].value) if orgs else ""))
    first = next(iter(ca_certs.values()), None)
    key_type: KeyType = "rsa" if first is not None and isinstance(first.public_key(), rsa.RSAPublicKey) else "ecdsa"
    return PKIPlan(cas=cas, leaves=tuple(leaves), key_type=key_type), ca_certs, trust_cas


def _cache_dir() -> Path:
    return cache_root() / "chains"


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _write_set(d: Path, plan: PKIPlan, ca_certs: Mapping[str, x509.Certificate], mat: CertMaterial) -> None:
    ca_keys = {n: t.key for n, t in mat.trusts.items() if t.key is not None}
    for name, cert in ca_certs.items():
        _write(d / "cas" / name / "cert.pem", cert_pem(cert))
        if name in ca_keys:
            _write(d / "cas" / name / "key.pem", key_pem(ca_keys[name]), 0o600)  # type: ignore[arg-type]
    expiry = min((c.not_valid_after_utc for c in ca_certs.values()), default=dt.datetime.max.replace(tzinfo=dt.UTC))
    for ident in mat.identities.values():
        leaf = ident.chain[0]
        chain = tuple(c for c in ident.chain if not _self_signed(c))
        _write(d / "leaves" / ident.name / "cert.pem", cert_pem(leaf))
        _write(d / "leaves" / ident.name / "chain.pem", cert_pem(*chain))
        _write(d / "leaves" / ident.name / "key.pem", key_pem(ident.key), 0o600)  # type: ignore[arg-type]
        expiry = min(expiry, leaf.not_valid_after_utc)
    meta = {"format": FORMAT, "plan": dataclasses.asdict(plan), "revoked_serials": {}, "expires": expiry.isoformat(),
            "source": "chain file (the user's certificates)"}
    _write(d / "set.json", json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")


def build_chain_cert_set(mat: CertMaterial) -> ChainCerts:
    """The cert set the chain runs with: the user's own certificates when every identity has its key, else the
    shadow PKI's stand-ins."""
    if any(i.key is None for i in mat.identities.values()):
        return _shadow(mat)
    plan, ca_certs, trust_cas = _plan(mat)
    blob = hashlib.sha256(json.dumps(dataclasses.asdict(plan), sort_keys=True).encode())
    for cert in [*ca_certs.values(), *(c for i in mat.identities.values() for c in i.chain)]:
        blob.update(fingerprint_sha256(cert).encode())
    blob.update(repr(sorted(n for n, t in mat.trusts.items() if t.key is not None)).encode())
    target = _cache_dir() / blob.hexdigest()[:16]
    if not (target / "set.json").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
        tmp.chmod(0o755)
        try:
            _write_set(tmp, plan, ca_certs, mat)
            tmp.rename(target)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "set.json").is_file():
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    mode: dict[str, Mode] = dict.fromkeys(mat.identities, "real")
    origin = Origin(dict(mat.identities), {n: (c, _source_of(mat, c)) for n, c in ca_certs.items()}, mode)
    return ChainCerts(ChainCertSet(load_cert_set(target, plan), origin), trust_cas, mode)


def _source_of(mat: CertMaterial, cert: x509.Certificate) -> str:
    """The file of the chain that gives ``cert``: a trust list's, else the identity file that carries it."""
    for trust in mat.trusts.values():
        if cert in trust.certs:
            return trust.source
    return next((i.source for i in mat.identities.values() if cert in i.chain), "")


def _shadow(mat: CertMaterial) -> ChainCerts:
    """Stand-ins per root where a key is missing; identities with their key (and their whole root given) run real."""
    identities = [shadow.IdentityInput(i.name, i.chain, i.key) for i in mat.identities.values()]  # type: ignore[arg-type]
    trusts = [shadow.TrustInput(t.name, t.certs) for t in mat.trusts.values()]
    blob = hashlib.sha256()
    for cert in [c for i in mat.identities.values() for c in i.chain] + [c for t in mat.trusts.values()
                                                                           for c in t.certs]:
        blob.update(fingerprint_sha256(cert).encode())
    blob.update(repr(sorted(i.name for i in mat.identities.values() if i.key is not None)).encode())
    result = shadow.build_cert_set(identities, trusts, _cache_dir() / f"shadow-{blob.hexdigest()[:16]}",
                                   ca_cache=_cache_dir() / "shadow-cas")
    origin = Origin(dict(mat.identities),
                    {n: None if c is None else (c, _source_of(mat, c)) for n, c in result.real.items()},
                    dict(result.mode))
    return ChainCerts(ChainCertSet(result.certs, origin), {k: (v,) for k, v in result.trust.items()},
                      dict(result.mode))
