"""Read user-supplied certificates and keys: PEM files, PKCS#12/PFX (Key Vault, APIM), Kubernetes secret files.

Every unusable input raises :class:`~harness.errors.InputError` naming the file, what is wrong and the fix; nothing
here ever puts key material into a message.

    ident = load_identity(Path("apim-client.pfx"), password="…")   # cert + chain + key from a PFX
    ident = load_identity(Path("secret-dir"))                       # tls.crt / tls.key (a Kubernetes TLS secret)
    ident = load_identity(Path("leaf.pem"), key_path=Path("leaf.key"))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.errors import InputError

__all__ = [
    "PFX_SUFFIXES",
    "Identity",
    "K8sSecretFiles",
    "is_k8s_secret_dir",
    "load_identity",
    "load_k8s_secret",
    "load_pkcs12",
    "read_crl",
    "read_pem_certs",
    "read_private_key",
]

PFX_SUFFIXES = (".pfx", ".p12")
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"
_PEM_KEY_MARKERS = (b"PRIVATE KEY-----",)


@dataclass(frozen=True)
class Identity:
    """A certificate as something presents it: the leaf, the intermediates sent after it, and (maybe) its key."""

    source: Path
    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()
    key: PrivateKeyTypes | None = None
    #: extra CA certs carried along (a PFX's additional certs beyond the chain, a secret's ca.crt)
    ca_certs: tuple[x509.Certificate, ...] = ()
    crl: x509.CertificateRevocationList | None = None


@dataclass(frozen=True)
class K8sSecretFiles:
    """The files of a Kubernetes secret as mounted or exported (``kubectl get secret -o json`` decoded)."""

    directory: Path
    tls_crt: tuple[x509.Certificate, ...]
    tls_key: PrivateKeyTypes | None
    ca_crt: tuple[x509.Certificate, ...]
    ca_crl: x509.CertificateRevocationList | None
    #: why ca.crt could not be read (ingress-nginx then fails closed: ``return 403`` for the host); None when it could
    ca_crt_error: str | None = None


def _read(path: Path, what: str) -> bytes:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", f"check the path to the {what}")
    if path.is_dir():
        raise InputError(path, "is a directory", f"pass the {what} file itself")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(path, "is empty", f"pass a file that holds the {what}")
    return data


def _has_key(data: bytes) -> bool:
    return any(m in data for m in _PEM_KEY_MARKERS)


def read_pem_certs(path: Path, what: str = "certificate") -> list[x509.Certificate]:
    """All certificates in a PEM file (at least one)."""
    data = _read(path, what)
    if _PEM_CERT not in data:
        if _has_key(data):
            raise InputError(path, "holds a private key but no certificate",
                             "pass the certificate file (give the key with --key)")
        raise InputError(path, "is not PEM (no '-----BEGIN CERTIFICATE-----' block)",
                         "convert it, e.g. `openssl x509 -inform DER -in FILE -out FILE.pem`")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise InputError(path, f"holds a malformed PEM certificate ({exc})", "re-export the certificate") from None


def read_private_key(path: Path, password: str | None = None) -> PrivateKeyTypes:
    """A PEM (PKCS#8 or traditional) private key, optionally encrypted."""
    data = _read(path, "private key")
    if not _has_key(data):
        raise InputError(path, "holds no PEM private key", "pass the key file (-----BEGIN PRIVATE KEY-----)")
    try:
        return serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        raise InputError(path, "is an encrypted private key", "pass its passphrase with --password") from None
    except ValueError:
        if password:
            raise InputError(path, "could not be decrypted with the given password (or is malformed)",
                             "pass the right passphrase with --password") from None
        raise InputError(path, "holds a malformed private key", "re-export the key as PEM") from None


def read_crl(path: Path) -> x509.CertificateRevocationList:
    """A CRL in PEM (or DER) form."""
    data = _read(path, "CRL")
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise InputError(path, "is not a CRL (PEM '-----BEGIN X509 CRL-----' or DER)",
                         "pass the CRL file the CA published") from None


def load_pkcs12(path: Path, password: str | None) -> Identity:
    """A PKCS#12/PFX bundle (what Key Vault exports and APIM/App Gateway import): cert, chain, key."""
    data = _read(path, "PFX/PKCS#12 bundle")
    try:
        p12 = pkcs12.load_pkcs12(data, password.encode() if password is not None else None)
    except ValueError as exc:
        if "password" in str(exc).lower():
            if password is None:
                raise InputError(path, "is password-protected", "pass its password with --password") from None
            raise InputError(path, "could not be opened: wrong password",
                             "pass the PFX's password with --password") from None
        raise InputError(path, "is not a PKCS#12/PFX file", "export it again as .pfx (PKCS#12)") from None
    if p12.cert is None:
        raise InputError(path, "holds no certificate", "export the PFX with its certificate")
    extra = tuple(c.certificate for c in p12.additional_certs)
    chain = tuple(c for c in extra if c.subject != c.issuer)  # intermediates are what a peer is sent
    roots = tuple(c for c in extra if c.subject == c.issuer)
    return Identity(source=Path(path), cert=p12.cert.certificate, chain=chain, key=p12.key, ca_certs=roots)


def is_k8s_secret_dir(path: Path) -> bool:
    return Path(path).is_dir() and any((Path(path) / n).exists() for n in ("tls.crt", "tls.key", "ca.crt"))


def load_k8s_secret(directory: Path) -> K8sSecretFiles:
    """A directory with a Kubernetes secret's files: ``tls.crt`` / ``tls.key`` (a TLS secret), ``ca.crt`` (the CA a
    consumer trusts, as ingress-nginx's auth-tls-secret and proxy-ssl-secret read it) and ``ca.crl``."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError(d, "is not a directory", "pass the directory holding tls.crt / tls.key / ca.crt")
    names = {p.name for p in d.iterdir()}
    if not names & {"tls.crt", "tls.key", "ca.crt"}:
        raise InputError(d, "holds none of tls.crt, tls.key, ca.crt",
                         "write the secret's keys as files (kubectl get secret NAME -o json | jq …)")
    if "tls.key" in names and "tls.crt" not in names:
        raise InputError(d / "tls.key", "has no certificate beside it (tls.crt is missing)",
                         "add tls.crt, the certificate that goes with this key")
    tls_crt = tuple(read_pem_certs(d / "tls.crt", "tls.crt certificate")) if "tls.crt" in names else ()
    tls_key = read_private_key(d / "tls.key") if "tls.key" in names else None
    ca_crt: tuple[x509.Certificate, ...] = ()
    ca_error = None
    if "ca.crt" in names:  # a malformed ca.crt is a finding about the secret, not unusable input
        try:
            ca_crt = tuple(read_pem_certs(d / "ca.crt", "ca.crt CA bundle"))
        except InputError as exc:
            ca_error = exc.problem
    ca_crl = read_crl(d / "ca.crl") if "ca.crl" in names else None
    return K8sSecretFiles(d, tls_crt, tls_key, ca_crt, ca_crl, ca_error)


def load_identity(path: Path, *, key_path: Path | None = None, password: str | None = None) -> Identity:
    """A leaf (+chain, +key) from a PFX, a Kubernetes secret directory, or a PEM file (leaf first, then the
    intermediates; a private key in the same file is used when ``key_path`` is not given)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", "check the path to the certificate")
    if path.is_dir():
        secret = load_k8s_secret(path)
        if not secret.tls_crt:
            raise InputError(path, "has no tls.crt", "add the secret's tls.crt (a secret with only ca.crt holds "
                             "no certificate of its own)")
        secret_key = read_private_key(key_path, password) if key_path else secret.tls_key
        return Identity(path, secret.tls_crt[0], secret.tls_crt[1:], secret_key, secret.ca_crt, secret.ca_crl)
    if path.suffix.lower() in PFX_SUFFIXES:
        ident = load_pkcs12(path, password)
        if key_path is not None:
            ident = Identity(ident.source, ident.cert, ident.chain, read_private_key(key_path, password),
                             ident.ca_certs)
        return ident
    certs = read_pem_certs(path)
    key: PrivateKeyTypes | None = None
    if key_path is not None:
        key = read_private_key(key_path, password)
    elif _has_key(path.read_bytes()):
        key = read_private_key(path, password)
    return Identity(path, certs[0], tuple(certs[1:]), key)
