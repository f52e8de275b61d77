"""The chain file of the chain discovery found: ``mtls-harness init --from-azure azure.toml DIR``.

    written = write_discovered_chain(Path("prod-chain"), discover(config), config)
    load_chain(written.path)              # the twin: the same chain, run locally with the shadow PKI

What Azure and the cluster say goes in as read: App Gateway's listener (host names, SSL policy, the SSL profile's
client-auth mode and trusted client CAs, the WAF tier), its HTTPS backend setting towards APIM (host name, trusted
roots, validation flags); APIM's proxy host names, client-certificate negotiation, TLS settings per side, the home
API's policy XML, the backend entity (URL, TLS checks, client certificate) and the other APIs; the cluster's
Ingresses as applied and the public keys of the Secrets they name. Certificates are public parts only (App Gateway's
``publicCertData``, Key Vault ``cer``, the Secrets' ``tls.crt``/``ca.crt``): the twin runs on stand-ins (shadow PKI).

What no API says is written as a labelled stand-in and listed in :attr:`DiscoveredChain.notes` (and at the top of
``chain.yaml``): the pod's listener (no Azure or Kubernetes API shows a pod's TLS settings), a certificate whose body
Azure does not return (APIM's CA store, a hostname certificate not in a listed vault), the internet client's own
certificate. Each stand-in certificate is ``certs/<name>.stand-in.pem``: the right names, issued under the right CA
name, signed by a throwaway key — review them before committing the chain file.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.chainfile.certs import slug
from harness.chainfile.init import write_chain_files
from harness.errors import HarnessError, InputError, UsageError
from harness.model.chainfile import (
    ApimBackend,
    ApimSpec,
    ApiSpec,
    BackendSettings,
    Certificates,
    ChainFile,
    ClientAuthConfig,
    ClientSpec,
    GatewaySpec,
    IdentityFile,
    IngressSpec,
    PodSpec,
    SecretRef,
    SslPolicy,
    TrustFile,
    Waf,
    chain_json_schema,
    dump_chain_text,
)
from harness.model.topology import Topology
from harness.pki.x509 import cert_pem
from harness.targets.azure.config import AzureConfig
from harness.targets.azure.model import ApimPolicy, AppGatewayFacts, BackendSetting, Discovery, GatewayListener

__all__ = ["DiscoveredChain", "apim_host_sent", "chain_from_discovery", "config_drift", "write_discovered_chain"]

_TLS = ("TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3")


@dataclass
class DiscoveredChain:
    document: ChainFile
    files: dict[str, str] = field(default_factory=dict)  # relative path → text (public material only)
    notes: list[str] = field(default_factory=list)  # what was not discovered, and what stands in for it
    path: Path | None = None  # DIR/chain.yaml once written


def _pems(text: str) -> list[x509.Certificate]:
    return list(x509.load_pem_x509_certificates(text.encode())) if text and "BEGIN CERTIFICATE" in text else []


def _stand_in(cn: str, names: tuple[str, ...], usage: str, issuer: x509.Name, *, ca: bool = False) -> x509.Certificate:
    """A public certificate with the right names under the right issuer name, signed by a throwaway key (never kept):
    what the shadow PKI needs to mint the twin's certificate where Azure does not return the real one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = issuer if ca else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        eku = ExtendedKeyUsageOID.SERVER_AUTH if usage == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                                            critical=False)
    return builder.sign(key, hashes.SHA256())


class _Builder:
    """Collects identities and trust lists (public PEM files) under unique names."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.identities: dict[str, IdentityFile] = {}
        self.trust: dict[str, TrustFile] = {}
        self.notes: list[str] = []
        self._ca_by_fp: dict[str, str] = {}
        self._known: dict[str, x509.Certificate] = {}  # every certificate seen, by SHA-1 thumbprint (upper hex)

    def _free(self, name: str) -> str:
        unique, n = slug(name), 2
        while unique in self.identities or unique in self.trust:
            unique, n = f"{slug(name)}-{n}", n + 1
        return unique

    def see(self, certs: Iterable[x509.Certificate]) -> None:
        for c in certs:
            self._known[c.fingerprint(hashes.SHA1()).hex().upper()] = c  # noqa: S303 - Azure's thumbprint

    def by_thumbprint(self, thumbprint: str | None) -> x509.Certificate | None:
        return self._known.get((thumbprint or "").upper())

    def identity(self, name: str, chain: list[x509.Certificate], *, stand_in: bool = False) -> str:
        name = self._free(name)
        path = f"certs/{name}{'.stand-in' if stand_in else ''}.pem"
        self.files[path] = cert_pem(*chain).decode()
        self.identities[name] = IdentityFile(pem=path)
        self.see(chain)
        top = chain[-1]
        if top.subject != top.issuer and not any(c.subject == top.issuer for c in self._known.values()):
            self.anchor_name(top.issuer, f"{name}-issuer")
        return name

    def trust_list(self, name: str, certs: list[x509.Certificate], *, stand_in: bool = False) -> str:
        fp = "".join(c.fingerprint(hashes.SHA256()).hex() for c in certs)
        if fp in self._ca_by_fp:
            return self._ca_by_fp[fp]
        name = self._free(name)
        path = f"certs/{name}{'.stand-in' if stand_in else ''}.pem"
        self.files[path] = cert_pem(*certs).decode()
        self.trust[name] = TrustFile(pem=path)
        self._ca_by_fp[fp] = name
        self.see(certs)
        return name

    def anchor_name(self, issuer: x509.Name, name: str) -> str:
        """A trust list for a CA known only by name: a stand-in CA certificate with that subject."""
        for ca in self._known.values():
            if ca.subject == issuer:
                return self._trust_of(ca) or self.trust_list(name, [ca])
        self.notes.append(f"CA {issuer.rfc4514_string()!r}: its certificate was not found in what discovery read — "
                          f"a stand-in with its name is trust list {slug(name)!r}")
        return self.trust_list(name, [_stand_in("", (), "", issuer, ca=True)], stand_in=True)

    def _trust_of(self, ca: x509.Certificate) -> str | None:
        fp = ca.fingerprint(hashes.SHA256()).hex()
        return self._ca_by_fp.get(fp)

    def trust_for(self, chain: list[x509.Certificate], name: str) -> str:
        """The trust list a caller of this identity needs: the chain's root, or (missing) its issuer by name."""
        top = chain[-1]
        if top.subject == top.issuer:
            return self._trust_of(top) or self.trust_list(name, [top])
        return self.anchor_name(top.issuer, name)


def _tls_min(settings: Mapping[str, str], prefix: str) -> str:
    for version, key in (("TLSv1_0", "Protocols.Tls10"), ("TLSv1_1", "Protocols.Tls11")):
        if settings.get(prefix + key, "").lower() == "true":
            return version
    return "TLSv1_2"


def _policy_version(value: str | None) -> str:
    return value if value in _TLS else "TLSv1_2"


def apim_host_sent(disc: Discovery) -> str | None:
    """APIM's host name as App Gateway reaches it: the name its https backend setting sends, else a custom domain
    (a Key Vault certificate) over the built-in ``*.azure-api.net`` one."""
    apim = disc.apim
    if apim is None:
        return None
    proxies = [h for h in apim.hostnames if h.type.lower() == "proxy"]
    gw = disc.app_gateway
    sent = [s.sni_name or s.host_name for s in (gw.backend_settings if gw else ())
            if s.protocol.lower() == "https" and (s.sni_name or s.host_name)]
    names = [h.host_name for h in sorted(proxies, key=lambda h: h.key_vault_id is None)]
    return next((n for n in sent if n in names), None) or (names[0] if names else None)


def _kv_pem(disc: Discovery, secret_id: str | None) -> list[x509.Certificate]:
    """The Key Vault certificate a secret id names (``https://<vault>…/secrets/<name>[/<version>]``), when read."""
    if not secret_id:
        return []
    host, _, path = secret_id.split("://", 1)[-1].partition("/")
    parts = [p for p in path.split("/") if p]
    if len(parts) < 2:
        return []
    vault, name = host.split(".", 1)[0], parts[1]
    for c in disc.key_vault_certificates:
        if c.vault == vault and c.name == name and c.pem:
            return _pems(c.pem)
    return []


def _listener(gw: AppGatewayFacts) -> GatewayListener:
    https = [lst for lst in gw.listeners if lst.protocol.lower() == "https"]
    if not https:
        raise UsageError(f"App Gateway {gw.name} has no HTTPS listener — the chain file describes an HTTPS chain")
    # the internet's listener (public frontend) first, one with an SSL profile first among those
    return sorted(https, key=lambda x: (x.frontend != "public", x.ssl_profile is None))[0]


def _backend_setting(gw: AppGatewayFacts, apim_names: list[str], notes: list[str]) -> BackendSetting | None:
    https = [s for s in gw.backend_settings if s.protocol.lower() == "https"]
    if not https:
        notes.append(f"App Gateway {gw.name}: no Https backend setting — the chain file cannot describe a plaintext "
                     "hop (posture check appgw-backend-https fails it); the twin re-encrypts")
        return None
    return sorted(https, key=lambda s: (s.sni_name or s.host_name) not in apim_names)[0]


def _home_policy(policies: tuple[ApimPolicy, ...], home_api: str | None) -> ApimPolicy | None:
    scoped = [p for p in policies if home_api is not None and p.scope == f"api:{home_api}"]
    return scoped[0] if scoped else next((p for p in policies if p.scope == "global"), None)


def _backend_id(xml: str) -> str | None:
    found = re.search(r"<set-backend-service\b[^>]*\bbackend-id\s*=\s*\"([^\"]+)\"", xml)
    return found.group(1) if found else None


def _home_ingress(disc: Discovery, host: str | None) -> dict[str, Any]:
    """The (first) Ingress of ``host`` as discovery kept it."""
    return next(m for m in disc.ingress_manifests
                if any(r.get("host") == host for r in (m.get("spec") or {}).get("rules") or []))


def _secret_ref(ingress: Mapping[str, Any], annotation: str) -> str:
    """``namespace/name`` of the Secret an ingress-nginx annotation names ("" without it)."""
    meta = ingress.get("metadata") or {}
    ref = str((meta.get("annotations") or {}).get(f"nginx.ingress.kubernetes.io/{annotation}") or "")
    if not ref:
        return ""
    return ref if "/" in ref else f"{meta.get('namespace', 'default')}/{ref}"


def chain_from_discovery(disc: Discovery, config: AzureConfig) -> DiscoveredChain:
    """The chain file document and its files for what ``disc`` found (see the module's docstring)."""
    gw, apim = disc.app_gateway, disc.apim
    missing = [what for what, have in (("App Gateway", gw), ("API Management service", apim),
                                       ("Ingress in the cluster", disc.ingress_manifests)) if not have]
    if missing:
        raise UsageError(f"{config.where}: discovery found no {', no '.join(missing)} — a chain file needs App "
                         "Gateway, APIM and the cluster's Ingresses (set app_gateway, apim and [kubernetes])")
    assert gw is not None
    assert apim is not None
    b = _Builder()
    for certs in disc.secrets.values():
        b.see(c for text in certs.values() for c in _pems(text))
    for kv in disc.key_vault_certificates:
        b.see(_pems(kv.pem or ""))
    for pems in (gw.trusted_root_pems, gw.trusted_client_pems):
        for text in pems.values():
            b.see(_pems(text))

    # ---- the ingress: the Ingresses as applied, the Secrets they name (public keys) -----------------------------
    ingress_hosts = [r["host"] for m in disc.ingress_manifests for r in (m.get("spec") or {}).get("rules") or []
                     if r.get("host")]
    secrets: dict[str, SecretRef] = {}
    secret_ids: dict[str, str] = {}  # ns/name → the identity of its tls.crt
    secret_cas: dict[str, str] = {}  # ns/name → the trust list of its ca.crt
    for ref, keys in sorted(disc.secrets.items()):
        name = ref.partition("/")[2]
        tls = b.identity(name, _pems(keys.get("tls.crt", ""))) if _pems(keys.get("tls.crt", "")) else None
        cas = [b.trust_list(f"{name}-ca" if tls else name, _pems(keys["ca.crt"]))] if _pems(keys.get("ca.crt", "")) \
            else []
        secrets[ref] = SecretRef(tls=tls, ca=cas)
        if tls:
            secret_ids[ref] = tls
        if cas:
            secret_cas[ref] = cas[0]

    # ---- App Gateway ---------------------------------------------------------------------------------------------
    lst = _listener(gw)
    apim_names = [h.host_name for h in apim.hostnames if h.type.lower() == "proxy"]
    setting = _backend_setting(gw, apim_names, b.notes)
    sent = apim_host_sent(disc) or (apim_names[0] if apim_names else f"{apim.name}.azure-api.net")
    gw_host = lst.host_names[0] if lst.host_names else None
    if gw_host is None:
        gw_host = f"{gw.name}.example"
        b.notes.append(f"App Gateway listener {lst.name} names no host (a basic listener): {gw_host} stands in")
    cert = next((c for c in gw.ssl_certificates if c.name == lst.ssl_certificate), None)
    chain = _pems(cert.pem) if cert else []
    if not chain and cert is not None:
        chain = _kv_pem(disc, cert.key_vault_secret_id)
    if chain:
        gw_cert = b.identity(f"gateway-{cert.name if cert else 'listener'}", chain)
    else:
        b.notes.append(f"App Gateway listener {lst.name}: its certificate was not read — a stand-in for {gw_host}")
        chain = [_stand_in(gw_host, (gw_host,), "server", x509.Name([x509.NameAttribute(
            NameOID.COMMON_NAME, "App Gateway listener CA (not discovered)")]))]
        gw_cert = b.identity("gateway-listener", chain, stand_in=True)
    client_root = b.trust_for(chain, "gateway-listener-root")
    profile = next((p for p in gw.ssl_profiles if p.name == lst.ssl_profile), None)
    mode = (profile.verify_client_auth_mode or "none") if profile else "none"
    mode = mode if mode in ("Strict", "Passthrough") else "none"
    client_cas = [b.trust_list(f"gateway-client-{n}", _pems(gw.trusted_client_pems[n]))
                  for n in (profile.trusted_client_certificates if profile else ()) if n in gw.trusted_client_pems]
    client_cert = None
    if mode == "Strict" and client_cas:
        issuer = _pems(gw.trusted_client_pems[next(n for n in profile.trusted_client_certificates  # type: ignore[union-attr]
                                                     if n in gw.trusted_client_pems)])[0].subject
        client_cert = b.identity("internet-client", [_stand_in("internet-client", (), "client", issuer)],
                                 stand_in=True)
        b.notes.append("the internet client's certificate is yours to hold, not Azure's: a stand-in issued under "
                       f"{issuer.rfc4514_string()!r} presents to the gateway")
    elif mode == "Strict":
        b.notes.append(f"App Gateway SSL profile {lst.ssl_profile}: Strict with no trusted client CA the gateway holds "
                       "— the chain file cannot say Strict without one; written as none (posture check "
                       "appgw-edge-client-auth fails it)")
        mode = "none"
    min_tls = _policy_version((profile.min_protocol_version if profile else None) or gw.min_protocol_version)
    backend_roots: list[str] = []
    if setting is not None:
        for n in setting.trusted_root_certificates:
            if n in gw.trusted_root_pems:
                backend_roots.append(b.trust_list(f"gateway-backend-{n}", _pems(gw.trusted_root_pems[n])))
    gateway = GatewaySpec(
        host_names=list(lst.host_names) or [gw_host], listener_certificate=gw_cert,
        ssl_policy=SslPolicy(min_protocol_version=min_tls),  # type: ignore[arg-type]
        client_auth=ClientAuthConfig(mode=mode, trusted_client_certificates=client_cas),  # type: ignore[arg-type]
        waf=Waf(enabled="waf" in (gw.sku_tier or "").lower()),
        backend_settings=BackendSettings(
            host_name=(setting.sni_name or setting.host_name or sent) if setting else sent,
            trusted_root_certificates=backend_roots,
            validate_cert_chain_and_expiry=setting.validate_cert_chain_and_expiry if setting else True,
            validate_sni=setting.validate_sni if setting else True))
    if "waf" in (gw.sku_tier or "").lower():
        b.notes.append("the WAF policy's rules are not read: the twin's WAF blocks the stand-in's patterns only")

    # ---- APIM ----------------------------------------------------------------------------------------------------
    hostname = next((h for h in apim.hostnames if h.host_name == sent), None)
    domain_chain = _kv_pem(disc, hostname.key_vault_id if hostname else None)
    if domain_chain:
        apim_cert = b.identity("apim-custom-domain", domain_chain)
    else:
        issuer = (_pems(gw.trusted_root_pems[setting.trusted_root_certificates[0]])[0].subject
                  if setting and setting.trusted_root_certificates
                  and setting.trusted_root_certificates[0] in gw.trusted_root_pems
                  else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "APIM custom domain CA (not discovered)")]))
        apim_cert = b.identity("apim-custom-domain", [_stand_in(sent, (sent,), "server", issuer)], stand_in=True)
        b.notes.append(f"APIM host name {sent}: its certificate is not in a listed Key Vault — a stand-in issued "
                       f"under {issuer.rfc4514_string()!r} (add the vault to key_vaults to read it)")
    # the home API: the one whose backend reaches an ingress host
    by_name = {be.name: be for be in apim.backends}
    home_api, home_url, entity = None, None, None
    for api in apim.apis:
        pol = _home_policy(apim.policies, api.name)
        be = by_name.get(_backend_id(pol.xml) or "") if pol else None
        url = (be.url if be else None) or api.service_url
        if url and urlsplit(url).hostname in ingress_hosts:
            home_api, home_url, entity = api.name, url, be
            break
    if home_url is None:
        entity = next((be for be in apim.backends if be.url and urlsplit(be.url).hostname in ingress_hosts), None)
        home_url = entity.url if entity else None
    if home_url is None:
        raise UsageError(f"APIM {apim.name}: no API or backend reaches an ingress host ({', '.join(ingress_hosts)}) "
                         "— check [kubernetes] namespace, or the API's serviceUrl")
    if not home_url.startswith("https://"):
        b.notes.append(f"APIM reaches {home_url} in plaintext — written as https:// (posture check apim-backend-https "
                       "fails it)")
        home_url = "https://" + home_url.split("://", 1)[-1]
    policy = _home_policy(apim.policies, home_api)
    files: dict[str, str] = {}
    if policy is not None and policy.xml:
        files["apim-policy.xml"] = policy.xml
        if policy.scope == f"api:{home_api}" and "<base" in policy.xml and any(p.scope == "global"
                                                                              for p in apim.policies):
            b.notes.append(f"apim-policy.xml is API {home_api}'s policy; the global policy its <base /> pulls in is "
                           "not merged into it")
    # the backend's client certificate: the entity's credentials, or the policy's authentication-certificate
    wanted = [i.rsplit("/", 1)[-1] for i in (entity.certificate_ids if entity else ())]
    if policy is not None and policy.authentication_certificate:
        found = re.search(r"<authentication-certificate\b[^>]*\bcertificate-id\s*=\s*\"([^\"]+)\"", policy.xml)
        wanted += [found.group(1)] if found else []
    backend_client = None
    for name in dict.fromkeys(wanted):
        meta = next((c for c in apim.certificates if c.name == name), None)
        chain = _kv_pem(disc, meta.key_vault_secret_id if meta else None)
        if chain:
            backend_client = b.identity(name, chain)
        else:  # issued under the CA the home Ingress verifies APIM's client certificate with (auth-tls-secret)
            ca_ref = secret_cas.get(_secret_ref(_home_ingress(disc, urlsplit(home_url).hostname), "auth-tls-secret"))
            issuer = _pems(b.files[b.trust[ca_ref].pem or ""])[0].subject if ca_ref else x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, "APIM client CA (not discovered)")])
            backend_client = b.identity(name, [_stand_in(name, (), "client", issuer)], stand_in=True)
            b.notes.append(f"APIM certificate {name}: its body is not readable (not in a listed Key Vault) — a "
                           f"stand-in issued under {issuer.rfc4514_string()!r}")
    # what APIM trusts for the backend: a CA-store root matched by thumbprint to a certificate discovery holds
    roots = [fact for fact in disc.certificates if fact.plane == "apim" and " CA store " in fact.where]
    backend_root = None
    for fact in roots:
        ca = b.by_thumbprint(fact.thumbprint)
        if ca is not None:
            backend_root = b.trust_list("apim-backend-root", [ca])
            break
    if backend_root is None:
        home_host = urlsplit(home_url).hostname
        tls_ref = next((f"{m['metadata']['namespace']}/{t['secretName']}" for m in disc.ingress_manifests
                        for t in (m.get("spec") or {}).get("tls") or []
                        if home_host in (t.get("hosts") or []) and t.get("secretName")), None)
        chain = _pems(disc.secrets.get(tls_ref or "", {}).get("tls.crt", ""))
        if chain:
            backend_root = b.trust_for(chain, "apim-backend-root")
            b.notes.append("APIM's CA store returns no certificate body: the ingress certificate's own CA is taken as "
                           "the one APIM trusts for the backend")
    validates = bool(policy and policy.validate_client_certificate)
    apim_cas = client_cas if validates else []
    if validates:
        b.notes.append("APIM's CA certificates return no body: validate-client-certificate is taken to trust the CAs "
                       "App Gateway's SSL profile trusts")
    negotiate = bool(hostname and hostname.negotiate_client_certificate) or apim.enable_client_certificate
    others: list[ApiSpec] = []
    for api in apim.apis:
        if api.name == home_api:
            continue
        pol = _home_policy(apim.policies, api.name)
        be = by_name.get(_backend_id(pol.xml) or "") if pol else None
        url = (be.url if be else None) or api.service_url
        host = urlsplit(url).hostname if url else None
        if not url or host not in ingress_hosts or host == urlsplit(home_url).hostname or not api.path:
            continue
        if not url.startswith("https://"):
            b.notes.append(f"APIM API {api.name} reaches {url} in plaintext — written as https:// (posture check "
                           "apim-backend-https fails it)")
            url = "https://" + url.split("://", 1)[-1]
        if any(o.backend_url == url or urlsplit(o.backend_url).hostname == host for o in others):
            continue
        others.append(ApiSpec(name=slug(api.name)[:63], path="/" + api.path.strip("/"), backend_url=url,
                              validate_certificate_chain=be.validate_certificate_chain if be else True,
                              validate_certificate_name=be.validate_certificate_name if be else True))
    apim_spec = ApimSpec(
        host_names=[sent, *(n for n in apim_names if n != sent)], custom_domain_certificate=apim_cert,
        negotiate_client_certificate=negotiate, ca_certificates=apim_cas,
        min_protocol_version=_tls_min(apim.tls_settings, ""),  # type: ignore[arg-type]
        policy="apim-policy.xml" if "apim-policy.xml" in files else None,
        backend=ApimBackend(
            url=home_url,
            validate_certificate_chain=entity.validate_certificate_chain if entity else True,
            validate_certificate_name=entity.validate_certificate_name if entity else True,
            client_certificate=backend_client, trusted_root=backend_root,
            min_protocol_version=_tls_min(apim.tls_settings, "Backend.")),  # type: ignore[arg-type]
        apis=others)

    # ---- the pod: no API shows its listener ----------------------------------------------------------------------
    home_host = urlsplit(home_url).hostname
    home = _home_ingress(disc, home_host)
    meta = home["metadata"]
    ann = {k.rsplit("/", 1)[-1]: v for k, v in (meta.get("annotations") or {}).items()
           if k.startswith("nginx.ingress.kubernetes.io/")}
    rule = next(r for r in home["spec"]["rules"] if r.get("host") == home_host)
    service = (((rule.get("http") or {}).get("paths") or [{}])[0].get("backend") or {}).get("service") or {}
    svc = service.get("name") or "backend"
    pod_host = ann.get("proxy-ssl-name") or f"{svc}.{meta['namespace']}.svc.cluster.local"
    proxy_ref = _secret_ref(home, "proxy-ssl-secret") or None
    pod_ca = secret_cas.get(proxy_ref or "")
    issuer = (_pems(b.files[b.trust[pod_ca].pem or ""])[0].subject if pod_ca else
              x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pod CA (not discovered)")]))
    pod_cert = b.identity(f"pod-{svc}", [_stand_in(pod_host, (pod_host,), "server", issuer)], stand_in=True)
    nginx_client = secret_ids.get(proxy_ref or "")
    pod_client_ca = None
    if nginx_client is not None:
        pod_client_ca = b.trust_for(_pems(b.files[b.identities[nginx_client].pem or ""]), f"{nginx_client}-issuer")
    b.notes.append(f"the pod behind {home_host} is not discovered (no Azure or Kubernetes API shows a pod's TLS "
                   f"listener): a stand-in for {pod_host} issued under {issuer.rfc4514_string()!r}"
                   + (f", requiring the client certificate of Secret {proxy_ref} (ingress-nginx presents it)"
                      if pod_client_ca else ", asking no client certificate") + " — review pod: in chain.yaml")
    pod = PodSpec(name=svc, namespace=meta["namespace"], host=pod_host, listener_certificate=pod_cert,
                  client_auth="required" if pod_client_ca else "none", client_ca=pod_client_ca)
    b.notes.append("the ingress-nginx ConfigMap and controller flags are not read: the controller's defaults are "
                   "assumed (add ingress.config_map to the chain file)")

    files["k8s/ingress.yaml"] = yaml.safe_dump_all(disc.ingress_manifests, sort_keys=False)
    document = ChainFile(
        name=slug(f"{config.resource_group}"),
        certificates=Certificates(identities=b.identities, trust=b.trust),
        client=ClientSpec(trusted_root=client_root, host_name=gw_host, certificate=client_cert),
        gateway=gateway, apim=apim_spec,
        ingress=IngressSpec(manifests=["k8s"], secrets=secrets),
        pod=pod)
    return DiscoveredChain(document, {**b.files, **files}, b.notes)


def _chain_text(found: DiscoveredChain, disc: Discovery, config: AzureConfig) -> str:
    text = dump_chain_text(found.document)
    head, _, body = text.partition("\n")
    head2, _, body = body.partition("\n")
    lines = [f"# written by `mtls-harness init --from-azure` from {config.where}, resource group "
             f"{config.resource_group}, discovered {disc.discovered_at}",
             "# public parts only; review the stand-ins below before you commit this file:"]
    lines += [f"#   - {n}" for n in found.notes] or ["#   (none)"]
    return "\n".join([head, head2, *lines, body])


def write_discovered_chain(directory: Path, disc: Discovery, config: AzureConfig, *,
                           force: bool = False) -> DiscoveredChain:
    """Write the chain of ``disc`` as a chain-file folder (built aside, renamed into place: nothing half-written)."""
    found = chain_from_discovery(disc, config)
    files = {path: (text.encode(), 0o644) for path, text in found.files.items()}
    files["chain.schema.json"] = (json.dumps(chain_json_schema(), indent=2).encode() + b"\n", 0o644)
    files["chain.yaml"] = (_chain_text(found, disc, config).encode(), 0o644)
    files["discovery.json"] = (disc.to_json().encode() + b"\n", 0o644)
    from harness.chainfile.load import load_chain

    def check(path: Path) -> None:
        """It must load as written (the twin runs from it): checked in the folder built aside, before the rename."""
        try:
            load_chain(path)
        except (InputError, UsageError) as exc:
            raise HarnessError(f"the chain file written from discovery does not load ({exc}) — nothing was "
                               "written; this is a harness bug: please report it with this line") from None

    found.path = write_chain_files(directory, files, force=force, check=check)
    return found


def _settings(topology: Topology) -> dict[str, object]:
    """The chain's settings by dotted name, certificates left out (a rotation changes them by design)."""
    out: dict[str, object] = {}
    for hop, lst in (("gateway", topology.gateway.listener), ("apim", topology.apim.listener)):
        out |= {f"{hop}.listener.{k}": getattr(lst, k) for k in ("hostname", "client_auth", "min_version",
                                                                  "max_version", "alpn")}
    for hop, up in (("client", topology.client), ("gateway", topology.gateway.upstream),
                    ("apim", topology.apim.upstream)):
        out |= {f"{hop}.upstream.{k}": getattr(up, k) for k in ("hostname", "verify_chain", "verify_name",
                                                                 "min_version", "max_version")}
    out["gateway.waf"] = bool(topology.gateway.waf_block)
    out["apim.negotiate_client_certificate"] = topology.apim.negotiate_client_certificate
    out["apim.validate_client_certificate"] = topology.apim.validate_client_certificate
    for api in topology.apim.apis:
        out[f"apim.apis.{api.name}"] = (api.path, api.hostname, api.verify_chain, api.verify_name)
    for ing in topology.ingress.ingresses:
        where = f"ingress {ing.namespace}/{ing.name}"
        out[f"{where}.host"] = ing.host
        out |= {f"{where}.annotation {k}": v for k, v in ing.annotations.items()}
    return out


def config_drift(reviewed: Topology, current: Topology) -> list[str]:
    """What Azure and the cluster say today that the reviewed chain file does not: one line per setting (the live
    run judged the reviewed file's expectations, so each line is a place they may be stale)."""
    a, b = _settings(reviewed), _settings(current)
    return [f"{key}: the chain file says {a.get(key, '(absent)')!r}, Azure and the cluster now "
            f"{b.get(key, '(absent)')!r}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
