"""Posture checks as data: each a row with an id, why it matters (REFERENCES.md issue numbers) and a verdict
computed from a :class:`~.model.Discovery` — never from a live call.

    for verdict in evaluate(discovery, expiry_days=30):
        print(verdict.line())

A check whose component was not discovered is ``skipped`` (with the reason), not passed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from harness.targets.azure.config import DEFAULT_EXPIRY_DAYS
from harness.targets.azure.model import Discovery

__all__ = ["CHECKS", "Check", "Verdict", "evaluate", "expiry_table"]

Status = Literal["pass", "fail", "skip"]
_TLS_ORDER = {"TLSv1_0": 0, "TLSv1_1": 1, "TLSv1_2": 2, "TLSv1_3": 3}


@dataclass(frozen=True)
class Options:
    expiry_days: int = DEFAULT_EXPIRY_DAYS
    now: dt.datetime | None = None


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    why: str  # the failure it prevents, with REFERENCES.md issue numbers
    refs: tuple[int, ...]
    run: Callable[[Discovery, Options], list[str] | None]  # findings (empty: pass), None: not applicable


@dataclass(frozen=True)
class Verdict:
    check: Check
    status: Status
    findings: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        head = f"[{self.status.upper():4}] {self.check.id}: {self.check.title}"
        return head + "".join(f"\n        - {f}" for f in self.findings)

    def as_dict(self) -> dict[str, object]:
        return {"id": self.check.id, "status": self.status, "findings": list(self.findings),
                "title": self.check.title, "why": self.check.why, "refs": list(self.check.refs)}


# ------------------------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------------------------
def _apim_backend_tls(d: Discovery, o: Options) -> list[str] | None:
    if d.apim is None:
        return None
    out = []
    for b in d.apim.backends:
        if not (b.url or "").lower().startswith("https://"):
            continue  # an http backend is the gateway check's business; APIM tls flags only apply to https
        off = [n for n, v in (("validateCertificateChain", b.validate_certificate_chain),
                              ("validateCertificateName", b.validate_certificate_name)) if not v]
        if off:
            out.append(f"backend {b.name} ({b.url}): {' and '.join(off)} false — any cert the ingress serves is "
                       "accepted")
    return out


def _appgw_backend_https(d: Discovery, o: Options) -> list[str] | None:
    if d.app_gateway is None:
        return None
    return [f"backend setting {s.name}: protocol {s.protocol} on port {s.port} — the hop to APIM is plaintext"
            for s in d.app_gateway.backend_settings if s.protocol.lower() != "https"]


def _appgw_backend_validation(d: Discovery, o: Options) -> list[str] | None:
    if d.app_gateway is None:
        return None
    out = []
    for s in d.app_gateway.backend_settings:
        if s.protocol.lower() != "https":
            continue
        if not s.validate_cert_chain_and_expiry:
            out.append(f"backend setting {s.name}: validateCertChainAndExpiry false")
        if not s.validate_sni:
            out.append(f"backend setting {s.name}: validateSNI false")
    return out


def _appgw_min_tls(d: Discovery, o: Options) -> list[str] | None:
    gw = d.app_gateway
    if gw is None:
        return None
    out = []
    if gw.min_protocol_version is None:
        out.append("no TLS policy set: the default depends on the API version that created the gateway "
                   "(AppGwSslPolicy20150501, TLS 1.0, before 2023-02-01) — set AppGwSslPolicy20220101 or newer")
    elif _TLS_ORDER.get(gw.min_protocol_version, 0) < 2:
        out.append(f"gateway TLS policy {gw.ssl_policy_name or gw.ssl_policy_type}: minimum "
                   f"{gw.min_protocol_version}")
    for p in gw.ssl_profiles:
        if p.min_protocol_version is not None and _TLS_ORDER.get(p.min_protocol_version, 0) < 2:
            out.append(f"SSL profile {p.name}: minimum {p.min_protocol_version}")
    return out


#: APIM customProperties (after ``…Gateway.Security.``) that let a weak protocol or cipher in when "True"; the API
#: Management service REST reference names them and documents the default as true only for services created before
#: 2018-04-01 — an unset one is not judged here (the creation date is not read)
_APIM_WEAK: tuple[tuple[str, str], ...] = (
    ("Protocols.Tls10", "clients may use TLS 1.0"), ("Protocols.Tls11", "clients may use TLS 1.1"),
    ("Protocols.Ssl30", "clients may use SSL 3.0"),
    ("Backend.Protocols.Tls10", "APIM may reach its backends with TLS 1.0"),
    ("Backend.Protocols.Tls11", "APIM may reach its backends with TLS 1.1"),
    ("Backend.Protocols.Ssl30", "APIM may reach its backends with SSL 3.0"),
    ("Ciphers.TripleDes168", "the 3DES cipher (TLS_RSA_WITH_3DES_EDE_CBC_SHA, Sweet32) is enabled"))


def _apim_min_tls(d: Discovery, o: Options) -> list[str] | None:
    if d.apim is None:
        return None
    return [f"{d.apim.name} customProperties …Security.{key}: True — {what}" for key, what in _APIM_WEAK
            if d.apim.tls_settings.get(key, "").strip().lower() == "true"]


def _apim_plaintext_backends(d: Discovery, o: Options) -> list[str] | None:
    if d.apim is None:
        return None
    out = [f"API {a.name}: serviceUrl {a.service_url} — the hop from APIM to the backend is plaintext"
           for a in d.apim.apis if (a.service_url or "").lower().startswith("http://")]
    out += [f"backend {b.name}: url {b.url} — the hop from APIM to the backend is plaintext"
            for b in d.apim.backends if (b.url or "").lower().startswith("http://")]
    return out


def _appgw_public_http(d: Discovery, o: Options) -> list[str] | None:
    if d.app_gateway is None:
        return None
    return [f"listener {lst.name}: {lst.protocol} on the public frontend, port {lst.port} — requests reach the chain "
            "in plaintext (a listener whose routing rule only redirects to HTTPS is fine)"
            for lst in d.app_gateway.listeners
            if lst.frontend == "public" and lst.protocol.lower() == "http" and not lst.redirects]


def _keyvault_renewal(d: Discovery, o: Options) -> list[str] | None:
    if not d.key_vault_certificates:
        return None
    return [f"Key Vault {c.vault}/certificates/{c.name}: issuer Unknown — Key Vault cannot renew it (a CA it is not "
            "integrated with); its expiry is a manual rotation" for c in d.key_vault_certificates
            if (c.issuer_name or "").lower() == "unknown"]


def _apim_keyvault_refresh(d: Discovery, o: Options) -> list[str] | None:
    linked = [c for c in (d.apim.certificates if d.apim else ()) if c.key_vault_secret_id]
    if not linked:
        return None
    return [f"APIM certificate {c.name}: Key Vault refresh {c.last_status}"
            f"{(' (' + c.last_status_message + ')') if c.last_status_message else ''} — APIM keeps serving the old "
            "version: grant its identity get on the vault's secrets and check the secret id"
            for c in linked if c.last_status is not None and c.last_status.lower() != "success"]


def _appgw_edge_client_auth(d: Discovery, o: Options) -> list[str] | None:
    """Where the gateway asks for client certificates, every public HTTPS listener must: one without an SSL profile
    (it asks for none) is a way around the others. A Strict profile must name a client CA the gateway holds; a
    Passthrough one asks and verifies nothing, so APIM must check the certificate itself. A gateway that asks for
    client certificates nowhere is not judged here."""
    gw = d.app_gateway
    if gw is None:
        return None
    apim_checks = d.apim is not None and any(p.validate_client_certificate for p in d.apim.policies)
    profiles = {p.name: p for p in gw.ssl_profiles}
    public = [lst for lst in gw.listeners if lst.frontend == "public" and lst.protocol.lower() == "https"]
    asking = [lst.name for lst in public if lst.ssl_profile in profiles
              and (profiles[lst.ssl_profile].verify_client_auth_mode or "").lower() in ("strict", "passthrough")]
    out = []
    for lst in public:
        profile = profiles.get(lst.ssl_profile or "")
        mode = profile.verify_client_auth_mode if profile is not None else None
        if profile is None:
            if asking:
                out.append(f"listener {lst.name}: no SSL profile — it asks for no client certificate while "
                           f"{', '.join(asking)} demand(s) one: a way around the gateway's mTLS")
        elif (mode or "").lower() == "strict" and not [
                n for n in profile.trusted_client_certificates if n in gw.trusted_client_pems]:
            out.append(f"listener {lst.name}: SSL profile {profile.name} is Strict but names no trusted client "
                       "certificate App Gateway holds — no client certificate can be verified")
        elif (mode or "").lower() == "passthrough" and not apim_checks:
            out.append(f"listener {lst.name}: SSL profile {profile.name} in Passthrough mode and no APIM policy "
                       "validates the client certificate — any certificate, or none, gets through")
    return out


def _public(address: str) -> bool:
    """An IP address routable from the internet (a host name: unknown here, so not judged)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_global


def _ingress_private(d: Discovery, o: Options) -> list[str] | None:
    if not d.ingresses:
        return None
    return [f"ingress {ing.namespace}/{ing.name} ({', '.join(ing.hosts)}): load balancer address {a} is public — "
            "clients can reach the cluster around App Gateway's WAF and mTLS and APIM's checks"
            for ing in d.ingresses for a in ing.addresses if _public(a)]


def _versionless_ids(d: Discovery, o: Options) -> list[str] | None:
    if d.app_gateway is None and d.apim is None:
        return None
    out = []
    if d.app_gateway:
        out += [f"App Gateway sslCertificates/{c.name}: {c.key_vault_secret_id}"
                for c in d.app_gateway.ssl_certificates if c.versioned]
    if d.apim:
        out += [f"APIM hostname {h.host_name}: {h.key_vault_id}" for h in d.apim.hostnames if h.versioned]
        out += [f"APIM certificates/{c.name}: {c.key_vault_secret_id}" for c in d.apim.certificates if c.versioned]
    return [f"{f} pins one version — a renewed certificate is never picked up" for f in out]


def _expiry(d: Discovery, o: Options) -> list[str] | None:
    if not d.certificates:
        return None
    now = o.now or dt.datetime.now(dt.UTC)
    out = []
    for c in sorted(d.certificates, key=lambda c: c.not_after):
        left = c.days_left(now)
        if left < o.expiry_days:
            state = "EXPIRED" if left < 0 else f"expires in {left:.0f} days"
            out.append(f"[{c.plane}] {c.where}: {c.subject} {state} ({c.not_after[:10]})")
    return out


def _aks_api_server(d: Discovery, o: Options) -> list[str] | None:
    if d.aks is None:
        return None
    if d.aks.enable_private_cluster or d.aks.authorized_ip_ranges:
        return []
    return [f"cluster {d.aks.name}: API server {d.aks.fqdn} is public and has no authorized IP ranges"]


def _apim_internal(d: Discovery, o: Options) -> list[str] | None:
    if d.apim is None:
        return None
    if (d.apim.virtual_network_type or "None") == "Internal":
        return []
    return [f"{d.apim.name}: virtualNetworkType {d.apim.virtual_network_type or 'None'} — the gateway is reachable "
            "without passing App Gateway (and its WAF and mTLS)"]


def _apim_negotiation(d: Discovery, o: Options) -> list[str] | None:
    if d.apim is None:
        return None
    scopes = [p.scope for p in d.apim.policies if p.validate_client_certificate]
    if not scopes:
        return []
    proxies = [h for h in d.apim.hostnames if h.type.lower() == "proxy"]
    if any(h.negotiate_client_certificate for h in proxies):
        return []
    if (d.apim.sku or "").lower() == "consumption" and d.apim.enable_client_certificate:
        return []  # the Consumption tier asks for client certificates with enableClientCertificate instead
    return [f"validate-client-certificate in {', '.join(scopes)} but no proxy hostname negotiates a client "
            f"certificate ({', '.join(h.host_name for h in proxies) or 'no proxy hostname'}) — every call gets 401"]


def _ingress_serves_secret(d: Discovery, o: Options) -> list[str] | None:
    if not d.ingresses:
        return None
    out = []
    for ing in d.ingresses:
        if ing.ca_error:
            out.append(f"ingress {ing.namespace}/{ing.name}: {ing.ca_error} — ingress-nginx answers 403 for the host")
        if ing.served_sha256 and ing.secret_sha256 and ing.served_sha256 != ing.secret_sha256:
            out.append(f"ingress {ing.namespace}/{ing.name}: serves {ing.served_sha256[:16]}…, its secret "
                       f"{ing.tls_secret} holds {ing.secret_sha256[:16]}… (not reloaded?)")
    return out


CHECKS: tuple[Check, ...] = (
    Check("apim-backend-tls-validation", "APIM validates the ingress's server certificate",
          "validateCertificateChain/validateCertificateName false accept any cert, so a wrong or spoofed ingress "
          "goes unnoticed; APIM v2 also ignores the global CA store (REFERENCES.md issue 10)", (10,),
          _apim_backend_tls),
    Check("appgw-backend-https", "App Gateway re-encrypts to APIM",
          "an Http backend setting sends the request in plaintext inside the VNet (REFERENCES.md issue 7)", (7,),
          _appgw_backend_https),
    Check("appgw-backend-cert-validation", "App Gateway validates APIM's certificate (chain, expiry, SNI)",
          "validateCertChainAndExpiry/validateSNI false hide the 'not whitelisted' / CN mismatch failures "
          "(REFERENCES.md issues 7, 8)", (7, 8), _appgw_backend_validation),
    Check("appgw-min-tls", "App Gateway accepts TLS 1.2 or newer only",
          "TLS 1.0/1.1 are retired on App Gateway since 2025-08-31; an unset policy falls back to the creating API "
          "version's default", (), _appgw_min_tls),
    Check("apim-min-tls", "APIM accepts TLS 1.2 or newer only, and no 3DES, on both sides",
          "APIM's TLS settings are per side: clients (…Security.Protocols.*) and backends "
          "(…Security.Backend.Protocols.*), plus …Security.Ciphers.TripleDes168 (API Management service REST "
          "reference, customProperties; RFC 8996 deprecates TLS 1.0/1.1)", (), _apim_min_tls),
    Check("apim-backend-https", "APIM reaches every backend over HTTPS",
          "an API serviceUrl or backend url with http:// is a plaintext hop inside the VNet — every hop must be "
          "encrypted (DESIGN.md)", (), _apim_plaintext_backends),
    Check("appgw-no-public-http", "App Gateway takes no plaintext request from the internet",
          "a public Http listener that does not redirect to HTTPS lets requests (and credentials in them) travel "
          "unencrypted (App Gateway docs: HTTP to HTTPS redirection)", (), _appgw_public_http),
    Check("appgw-edge-client-auth", "App Gateway's mTLS has no way around it and verifies what it asks for",
          "where the gateway demands client certificates, a public listener without an SSL profile asks for none; "
          "a Strict profile without a trusted client CA verifies nothing; Passthrough mode asks and verifies nothing "
          "unless APIM validates the certificate (App Gateway mutual authentication docs)", (),
          _appgw_edge_client_auth),
    Check("ingress-private-address", "The ingress is reachable only from inside the network",
          "an Ingress whose load balancer address is public (an AKS app-routing NGINX defaults to a public one) "
          "lets clients bypass App Gateway and APIM; the chain assumes APIM is the ingress's only caller", (),
          _ingress_private),
    Check("keyvault-renewal", "Key Vault can renew the chain's certificates",
          "a certificate whose policy issuer is Unknown comes from a CA Key Vault is not integrated with: it is "
          "never renewed automatically (Key Vault certificate issuers docs; REFERENCES.md issue 9)", (9,),
          _keyvault_renewal),
    Check("apim-keyvault-refresh", "APIM's Key Vault certificates refresh",
          "keyVault.lastStatus of an APIM certificate says whether its last fetch from Key Vault worked (API "
          "Management certificates REST reference, KeyVaultLastAccessStatusContractProperties); a failed one leaves "
          "the old version in service until it expires (REFERENCES.md issue 9)", (9,), _apim_keyvault_refresh),
    Check("keyvault-versionless-ids", "Key Vault references are versionless",
          "App Gateway and APIM do not pick up a renewed Key Vault certificate through a versioned secret id "
          "(REFERENCES.md issue 9)", (9,), _versionless_ids),
    Check("cert-expiry", "No certificate in the chain expires soon",
          "one expiry table across App Gateway, APIM, Key Vault, cluster secrets and served certs; rotation "
          "failures surface as expiry (REFERENCES.md issue 9)", (9,), _expiry),
    Check("aks-api-server-exposure", "The AKS API server is private or restricted",
          "a public API server without authorized IP ranges is open to the internet", (), _aks_api_server),
    Check("apim-internal-vnet", "APIM is in Internal VNet mode",
          "in External or no VNet mode APIM is reachable around App Gateway (REFERENCES.md issue 10)", (10,),
          _apim_internal),
    Check("apim-client-cert-negotiation", "APIM negotiates the client certificate its policy validates",
          "validate-client-certificate without negotiateClientCertificate on the hostname never sees a cert "
          "(REFERENCES.md issue 10)", (10,), _apim_negotiation),
    Check("ingress-serves-secret-cert", "The ingress serves its secret's cert and has its CA secret",
          "ingress-nginx keeps an old cert/CA until reload; a missing CA secret fails the host closed "
          "(REFERENCES.md issues 2, 6)", (2, 6), _ingress_serves_secret),
)


def evaluate(discovery: Discovery, *, expiry_days: int = DEFAULT_EXPIRY_DAYS, now: dt.datetime | None = None,
             checks: Iterable[Check] = CHECKS) -> list[Verdict]:
    """Every check's verdict on ``discovery``."""
    opts = Options(expiry_days=expiry_days, now=now)
    out = []
    for check in checks:
        findings = check.run(discovery, opts)
        if findings is None:
            out.append(Verdict(check, "skip", ("not discovered: the config does not name this component",)))
        else:
            out.append(Verdict(check, "fail" if findings else "pass", tuple(findings)))
    return out


def expiry_table(discovery: Discovery, now: dt.datetime | None = None) -> list[dict[str, object]]:
    """The expiry table, soonest first: plane, where, subject, not_after, days_left."""
    now = now or dt.datetime.now(dt.UTC)
    return [{"plane": c.plane, "where": c.where, "subject": c.subject, "not_after": c.not_after,
             "days_left": round(c.days_left(now), 1)}
            for c in sorted(discovery.certificates, key=lambda c: c.not_after)]
