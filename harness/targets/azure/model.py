"""What discovery found, as plain data: JSON-serialisable, and never a secret (certificates are public; keys,
passwords and tokens are never read into these objects).

:class:`Discovery` holds one section per component plus :attr:`Discovery.certificates`, the one expiry table across
every plane (App Gateway, APIM, Key Vault, cluster secrets, certs served on the wire).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = [
    "AksFacts",
    "ApimBackend",
    "ApimCertificate",
    "ApimFacts",
    "ApimHostname",
    "ApimPolicy",
    "AppGatewayFacts",
    "BackendSetting",
    "CertFact",
    "Discovery",
    "GatewayListener",
    "GatewaySslCertificate",
    "IngressFacts",
    "KeyVaultCertificate",
    "SslProfile",
    "cert_fact",
    "certs_from_base64",
    "is_versioned_secret_id",
    "pem",
]

Plane = Literal["app-gateway", "apim", "key-vault", "cluster-secret", "served"]


@dataclass(frozen=True)
class CertFact:
    """One certificate somewhere in the chain: a row of the expiry table."""

    plane: Plane
    where: str  # e.g. "agw-chain sslCertificates/gw-cert", "default/ingress-tls tls.crt"
    subject: str
    issuer: str
    not_after: str  # ISO 8601, UTC
    sha256: str = ""  # lower-case hex of the DER ("" when the plane reports only a thumbprint)
    thumbprint: str = ""  # SHA-1, upper-case hex, as Azure shows it

    def days_left(self, now: dt.datetime) -> float:
        return (dt.datetime.fromisoformat(self.not_after) - now).total_seconds() / 86400


def _iso(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat()


def cert_fact(plane: Plane, where: str, cert: x509.Certificate) -> CertFact:
    return CertFact(plane=plane, where=where, subject=cert.subject.rfc4514_string(),
                    issuer=cert.issuer.rfc4514_string(), not_after=_iso(cert.not_valid_after_utc),
                    sha256=cert.fingerprint(hashes.SHA256()).hex(),
                    thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper())  # noqa: S303 - Azure's thumbprint


def certs_from_base64(data: str | bytes | None) -> list[x509.Certificate]:
    """Certificates from what Azure returns: base64 PKCS#7 (App Gateway publicCertData), base64 DER (a trusted root,
    Key Vault ``cer``) or PEM."""
    if not data:
        return []
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        if b"PKCS7" in raw:
            return list(pkcs7.load_pem_pkcs7_certificates(raw))
        return list(x509.load_pem_x509_certificates(raw))
    der = base64.b64decode(raw) if not raw.startswith(b"\x30") else raw
    try:
        return [x509.load_der_x509_certificate(der)]
    except ValueError:
        return list(pkcs7.load_der_pkcs7_certificates(der))


def is_versioned_secret_id(secret_id: str | None) -> bool:
    """``https://<vault>/secrets/<name>/<version>`` pins one version: a renewed certificate is not picked up."""
    if not secret_id:
        return False
    parts = [p for p in secret_id.split("://", 1)[-1].split("/")[1:] if p]
    return len(parts) >= 3 and parts[0] in ("secrets", "certificates")


# ------------------------------------------------------------------------------------------------------------------
# App Gateway
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GatewayListener:
    name: str
    protocol: str
    host_names: tuple[str, ...]
    port: int | None
    frontend: str  # "public" / "private" / ""
    frontend_address: str | None
    ssl_certificate: str | None
    ssl_profile: str | None
    #: a request routing rule of this listener redirects (an HTTP listener that only sends clients to HTTPS)
    redirects: bool = False


@dataclass(frozen=True)
class GatewaySslCertificate:
    name: str
    key_vault_secret_id: str | None
    versioned: bool
    #: the public certificates of publicCertData as PEM, the leaf first ("" when it did not parse)
    pem: str = ""


@dataclass(frozen=True)
class BackendSetting:
    name: str
    protocol: str
    port: int | None
    host_name: str | None
    pick_host_name_from_backend_address: bool
    trusted_root_certificates: tuple[str, ...]
    validate_cert_chain_and_expiry: bool  # absent means true (the documented default)
    validate_sni: bool  # absent means true
    sni_name: str | None


@dataclass(frozen=True)
class SslProfile:
    name: str
    verify_client_auth_mode: str | None  # "Strict" / "Passthrough"
    verify_client_cert_issuer_dn: bool
    verify_client_revocation: str | None
    min_protocol_version: str | None
    #: the trusted client certificate (CA) names this profile verifies clients against
    trusted_client_certificates: tuple[str, ...] = ()


@dataclass(frozen=True)
class AppGatewayFacts:
    name: str
    id: str
    operational_state: str | None
    listeners: tuple[GatewayListener, ...]
    ssl_certificates: tuple[GatewaySslCertificate, ...]
    backend_settings: tuple[BackendSetting, ...]
    trusted_root_certificates: tuple[str, ...]
    ssl_policy_type: str | None
    ssl_policy_name: str | None
    min_protocol_version: str | None  # explicit, or implied by the predefined policy; None when no policy is set
    ssl_profiles: tuple[SslProfile, ...]
    trusted_root_pems: dict[str, str] = field(default_factory=dict)  # name → PEM (public certificates)
    #: trustedClientCertificates: name → PEM of the client CA certificates App Gateway's mTLS trusts
    trusted_client_pems: dict[str, str] = field(default_factory=dict)
    #: the SKU tier (Standard_v2, WAF_v2): whether a WAF sits in front
    sku_tier: str | None = None


# ------------------------------------------------------------------------------------------------------------------
# APIM
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApimHostname:
    type: str
    host_name: str
    negotiate_client_certificate: bool
    key_vault_id: str | None
    versioned: bool
    certificate_expiry: str | None
    certificate_thumbprint: str | None
    certificate_subject: str | None


@dataclass(frozen=True)
class ApimBackend:
    name: str
    url: str | None
    protocol: str | None
    validate_certificate_chain: bool  # absent means true
    validate_certificate_name: bool  # absent means true
    certificate_ids: tuple[str, ...]


@dataclass(frozen=True)
class ApimCertificate:
    name: str
    subject: str | None
    thumbprint: str | None
    expiration_date: str | None
    key_vault_secret_id: str | None
    versioned: bool
    #: keyVault.lastStatus: did APIM's last refresh from Key Vault work ("Success"/"Failed", its message)
    last_status: str | None = None
    last_status_message: str | None = None


@dataclass(frozen=True)
class ApimApi:
    name: str
    path: str | None
    service_url: str | None  # the API's backend URL (serviceUrl), when it names one


@dataclass(frozen=True)
class ApimPolicy:
    scope: str  # "global" or "api:<name>"
    validate_client_certificate: bool
    authentication_certificate: bool
    validate_jwt: bool  # validate-jwt or validate-azure-ad-token
    #: the policy document as the service keeps it (rawxml), for a chain file written from discovery
    xml: str = ""


@dataclass(frozen=True)
class ApimFacts:
    name: str
    id: str
    sku: str | None
    virtual_network_type: str | None
    private_ip_addresses: tuple[str, ...]
    gateway_url: str | None
    hostnames: tuple[ApimHostname, ...]
    #: customProperties after ``…Gateway.Security.``: ``Protocols.Tls10`` (client side), ``Backend.Protocols.Tls10``
    #: (towards backends), ``Ciphers.TripleDes168`` — kept apart, never collapsed onto one key
    tls_settings: dict[str, str]
    backends: tuple[ApimBackend, ...]
    certificates: tuple[ApimCertificate, ...]
    policies: tuple[ApimPolicy, ...]
    apis: tuple[ApimApi, ...] = ()
    #: the Consumption tier's enableClientCertificate (its gateway then asks every client for a certificate)
    enable_client_certificate: bool = False


# ------------------------------------------------------------------------------------------------------------------
# AKS, Key Vault, the ingress
# ------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AksFacts:
    name: str
    id: str
    kubernetes_version: str | None
    fqdn: str | None
    private_fqdn: str | None
    enable_private_cluster: bool
    authorized_ip_ranges: tuple[str, ...]
    enable_private_cluster_public_fqdn: bool
    disable_run_command: bool
    private_dns_zone: str | None


@dataclass(frozen=True)
class KeyVaultCertificate:
    vault: str
    name: str
    id: str  # versioned id of the current version
    secret_id: str | None
    current_version: str
    versions: int
    subject: str | None
    not_before: str | None
    expires_on: str | None
    thumbprint: str | None
    lifetime_actions: tuple[str, ...]  # e.g. "AutoRenew at 80% lifetime"
    auto_renew: bool
    #: the policy's issuer: "Self", an integrated CA provider, or "Unknown" (a CA Key Vault cannot ask: no renewal)
    issuer_name: str | None = None
    #: the current version's certificate (``cer``) as PEM: public
    pem: str | None = None


@dataclass(frozen=True)
class IngressFacts:
    namespace: str
    name: str
    hosts: tuple[str, ...]
    tls_secret: str | None
    annotations: dict[str, str]  # nginx.ingress.kubernetes.io/* only, prefix removed
    addresses: tuple[str, ...]  # status.loadBalancer.ingress[].ip / hostname
    ca_secret: str | None  # auth-tls-secret
    ca_subjects: tuple[str, ...]  # subjects in that secret's ca.crt
    ca_error: str | None  # missing secret, no ca.crt, not PEM (ingress-nginx then fails closed: 403)
    secret_sha256: str | None  # tls.crt leaf in the TLS secret
    served_sha256: str | None  # the leaf the ingress served for the host (None: not reachable from here)
    served_error: str | None = None


@dataclass
class Discovery:
    subscription_id: str
    resource_group: str
    discovered_at: str
    app_gateway: AppGatewayFacts | None = None
    apim: ApimFacts | None = None
    aks: AksFacts | None = None
    key_vault_certificates: list[KeyVaultCertificate] = field(default_factory=list)
    ingresses: list[IngressFacts] = field(default_factory=list)
    certificates: list[CertFact] = field(default_factory=list)  # the expiry table
    #: the Ingress objects as the cluster holds them, reduced to what one applies (status and bookkeeping dropped)
    ingress_manifests: list[dict[str, Any]] = field(default_factory=list)
    #: the Secrets those Ingresses name, public keys only: ``namespace/name`` → {"tls.crt"|"ca.crt": PEM text}
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not read, and why

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.as_dict(), indent=indent, sort_keys=False)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
