"""Low-level X.509 building blocks for :mod:`harness.pki.certset`: keys, CA and leaf certificates, CRLs, atomic file
writes.

Everything is built with ``cryptography`` directly rather than trustme: trustme gives every leaf the serverAuth,
clientAuth *and* codeSigning EKUs, while this harness needs role-specific EKUs (a clientAuth-only cert served as a
server cert is one of the faults) and control over validity, path length and signature hash.

Profile (RFC 5280, what a private enterprise CA issues):

- roots: self-signed, basicConstraints CA:TRUE (critical, no path length limit), keyUsage keyCertSign+cRLSign
  (critical), SKI, 10 years starting :data:`CA_BACKDATE` ago;
- intermediates: CA:TRUE with ``path_length`` (0 for an issuing CA), SKI + AKI, 5 years starting :data:`CA_BACKDATE`
  ago;
- leaves: CA:FALSE (critical), keyUsage digitalSignature (+keyEncipherment for RSA), one EKU for the role, SANs,
  SKI + AKI, :data:`LEAF_DAYS` days;
- every validity starts :data:`BACKDATE` in the past so a peer with a slightly slow clock accepts a fresh cert.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.model.topology import KeyType

__all__ = [
    "BACKDATE",
    "CA_BACKDATE",
    "CA_DAYS",
    "INTERMEDIATE_DAYS",
    "LEAF_DAYS",
    "PrivateKey",
    "Signed",
    "cert_pem",
    "fingerprint_sha256",
    "issue_ca",
    "issue_leaf",
    "key_pem",
    "make_crl",
    "new_key",
    "now",
    "write_atomic",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
Usage = Literal["server", "client"]

#: leaf lifetime: inside the 90-398 day range public and private issuers use (CA/B Forum's ceiling is 398)
LEAF_DAYS = 397
#: root lifetime
CA_DAYS = 3650
#: intermediate lifetime (shorter than its root's)
INTERMEDIATE_DAYS = 1825
#: how far in the past a leaf's validity starts (clock skew between peers)
BACKDATE = dt.timedelta(hours=1)
#: how far in the past a CA's validity starts: a CA is older than what it issues (so an "expired" leaf, valid from
#: 400 days ago until yesterday, was issued inside its CA's lifetime, as a real one would have been)
CA_BACKDATE = dt.timedelta(days=730)

_EKU = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}


@dataclass(frozen=True)
class Signed:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


#: EC curves by key size (the NIST curves TLS stacks accept)
_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}


def new_key(key_type: KeyType, rsa_bits: int = 2048, *, size: int | None = None) -> PrivateKey:
    """ECDSA (P-256 by default, fast: ~0.1 ms) or RSA (``rsa_bits``; 2048 takes tens of ms). ``size`` overrides the
    RSA modulus or picks the EC curve (256, 384 or 521)."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=size or rsa_bits)
    if size is not None and size not in _CURVES:
        raise ValueError(f"EC key size {size}: use 256, 384 or 521 (P-256, P-384, P-521)")
    return ec.generate_private_key(_CURVES[size or 256])


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _general_names(sans: tuple[str, ...]) -> list[x509.GeneralName]:
    """DNS names and IP addresses; ``URI:<uri>`` and ``email:<address>`` for those SAN types."""
    out: list[x509.GeneralName] = []
    for san in sans:
        if san.startswith("URI:"):
            out.append(x509.UniformResourceIdentifier(san[4:]))
            continue
        if san.startswith("email:"):
            out.append(x509.RFC822Name(san[6:]))
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            out.append(x509.DNSName(san))
    return out


def _builder(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None,
    issuer_cert: x509.Certificate | None,
    self_aki: bool = False,
) -> x509.CertificateBuilder:
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    elif self_aki:  # a self-signed leaf names its own key, as `openssl req -x509` does
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    return b


# AlgorithmIdentifier DER for the two SHA-1 signature algorithms (RFC 5758 / RFC 4055 OIDs)
_SHA1_ALG_ID = {
    "ecdsa": bytes.fromhex("300906072a8648ce3d0401"),  # ecdsa-with-SHA1, no parameters
    "rsa": bytes.fromhex("300d06092a864886f70d0101050500"),  # sha1WithRSAEncryption, NULL parameters
}


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(content)) + content


def _der_split(data: bytes) -> tuple[int, bytes, bytes]:
    """One TLV from the front of ``data``: (tag, content, rest). Short and long definite lengths only (DER)."""
    tag, first = data[0], data[1]
    if first < 0x80:
        start, length = 2, first
    else:
        count = first & 0x7F
        start, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    return tag, data[start : start + length], data[start + length :]


def _resign_sha1(cert: x509.Certificate, signer: PrivateKey) -> x509.Certificate:
    """The same certificate signed with SHA-1 (the "sha1" fault).

    cryptography 50 refuses SHA-1 for certificate signing, but still signs raw data with it: swap the TBS's signature
    AlgorithmIdentifier (its third element) for the SHA-1 one, sign the new TBS, and assemble the Certificate SEQUENCE.
    """
    alg_id = _SHA1_ALG_ID["rsa" if isinstance(signer, rsa.RSAPrivateKey) else "ecdsa"]
    _, tbs_content, _ = _der_split(cert.tbs_certificate_bytes)
    version_tlv_len = len(tbs_content) - len(_der_split(tbs_content)[2])
    rest = tbs_content[version_tlv_len:]
    serial_len = len(rest) - len(_der_split(rest)[2])
    after_alg = _der_split(rest[serial_len:])[2]
    tbs = _der_tlv(0x30, tbs_content[:version_tlv_len] + rest[:serial_len] + alg_id + after_alg)
    if isinstance(signer, rsa.RSAPrivateKey):
        signature = signer.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    else:
        signature = signer.sign(tbs, ec.ECDSA(hashes.SHA1()))  # noqa: S303
    der = _der_tlv(0x30, tbs + alg_id + _der_tlv(0x03, b"\x00" + signature))
    return x509.load_der_x509_certificate(der)


def issue_ca(
    common_name: str,
    key_type: KeyType,
    *,
    parent: Signed | None = None,
    path_length: int | None = None,
    organization: str = "Contoso",
    days: int | None = None,
    subject: x509.Name | None = None,
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Signed:
    """A root (``parent=None``, self-signed) or an intermediate under ``parent``. ``subject``, ``key`` and the
    validity window override the harness's profile (the shadow PKI copies them from a real CA)."""
    key = key if key is not None else new_key(key_type)
    start = not_before if not_before is not None else now() - CA_BACKDATE
    days = days if days is not None else (CA_DAYS if parent is None else INTERMEDIATE_DAYS)
    subject = subject if subject is not None else _name(common_name, organization)
    end = not_after if not_after is not None else start + dt.timedelta(days=days)
    if parent is not None and not_after is None:  # an intermediate never outlives its issuer
        end = min(end, parent.cert.not_valid_after_utc)
    b = _builder(
        subject=subject,
        issuer=parent.cert.subject if parent else subject,
        public_key=key.public_key(),
        not_before=start,
        not_after=end,
        serial=None,
        issuer_cert=parent.cert if parent else None,
    )
    b = b.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True).add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    signer = parent.key if parent else key
    return Signed(b.sign(signer, hashes.SHA256()), key)


def issue_leaf(
    issuer: Signed | None,
    common_name: str,
    sans: tuple[str, ...],
    usages: tuple[Usage, ...],
    key_type: KeyType,
    *,
    organization: str = "Contoso",
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    is_ca: bool = False,
    hash_algorithm: Literal["sha256", "sha1"] = "sha256",
    subject: x509.Name | None = None,
    eku_oids: tuple[x509.ObjectIdentifier, ...] | None = None,
    exact_sans: bool = False,
) -> Signed:
    """An end-entity certificate. ``issuer=None`` makes it self-signed (the "self-signed" fault).

    ``is_ca=True`` (the "ca-as-leaf" fault) marks it CA:TRUE with keyCertSign, everything else unchanged.
    ``subject`` replaces O=<organization>,CN=<common_name>; ``eku_oids`` replaces the EKUs ``usages`` imply (``()``:
    no EKU extension). Empty ``sans`` put the common name in the SAN unless ``exact_sans`` (then: no SAN).
    """
    key = key if key is not None else new_key(key_type)
    start = not_before if not_before is not None else now() - BACKDATE
    end = not_after if not_after is not None else start + dt.timedelta(days=LEAF_DAYS)
    subject = subject if subject is not None else _name(common_name, organization)
    b = _builder(
        subject=subject,
        issuer=issuer.cert.subject if issuer else subject,
        public_key=key.public_key(),
        not_before=start,
        not_after=end,
        serial=serial,
        issuer_cert=issuer.cert if issuer else None,
        self_aki=issuer is None,
    )
    rsa_key = isinstance(key, rsa.RSAPrivateKey)
    b = b.add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True).add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=rsa_key,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=is_ca,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    ekus = list(eku_oids) if eku_oids is not None else [_EKU[u] for u in usages]
    if ekus:
        b = b.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    names = sans or (() if exact_sans else (common_name,))
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
    signer = issuer.key if issuer else key
    cert = b.sign(signer, hashes.SHA256())
    if hash_algorithm == "sha1":
        cert = _resign_sha1(cert, signer)
    return Signed(cert, key)


def make_crl(
    ca: Signed, revoked_serials: tuple[int, ...], *, days: int = LEAF_DAYS, number: int = 1
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing ``revoked_serials`` (reason keyCompromise), with AKI and cRLNumber."""
    start = now() - BACKDATE
    ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(start)
        .next_update(start + dt.timedelta(days=days))
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in revoked_serials:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(start)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return b.sign(ca.key, hashes.SHA256())


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (the files are 0600; nginx and Envoy read them without a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temp file beside ``path`` with ``mode``, then rename it into place (readers never see a
    partial file; concurrent writers of identical content are harmless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
