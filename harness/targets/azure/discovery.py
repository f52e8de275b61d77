"""Discovery: read the chain's Azure resources (and its ingress) into a :class:`~.model.Discovery`. Read-only.

    disc = discover(load_azure_config(Path("azure.toml")))       # DefaultAzureCredential
    print(disc.to_json())

App Gateway, APIM and AKS come from their management SDKs (GET only); Key Vault certificates from
azure-keyvault-certificates (certificate, versions and policy: public parts only, never the secret); the ingress
from the cluster with the kubernetes client (:mod:`.cluster`). A part the config does not name is not read.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from azure.core.credentials import TokenCredential
from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning

from harness.errors import HarnessError
from harness.targets.azure.clients import AzureClients, explain
from harness.targets.azure.config import AzureConfig
from harness.targets.azure.model import (
    AksFacts,
    ApimApi,
    ApimBackend,
    ApimCertificate,
    ApimFacts,
    ApimHostname,
    ApimPolicy,
    AppGatewayFacts,
    BackendSetting,
    CertFact,
    Discovery,
    GatewayListener,
    GatewaySslCertificate,
    KeyVaultCertificate,
    SslProfile,
    cert_fact,
    certs_from_base64,
    is_versioned_secret_id,
    pem,
)

__all__ = ["PREDEFINED_MIN_TLS", "discover", "read_aks", "read_apim", "read_app_gateway", "read_key_vault"]

#: the minimum protocol of each predefined App Gateway TLS policy (Azure docs: "Application Gateway TLS policy
#: overview", predefined policies table)
PREDEFINED_MIN_TLS = {
    "AppGwSslPolicy20150501": "TLSv1_0",
    "AppGwSslPolicy20170401": "TLSv1_1",
    "AppGwSslPolicy20170401S": "TLSv1_2",
    "AppGwSslPolicy20220101": "TLSv1_2",
    "AppGwSslPolicy20220101S": "TLSv1_2",
}

#: how many pages of one list are followed at most (every list here is a handful of items)
MAX_ITEMS = 500


def _name(resource_id: str | None) -> str | None:
    return resource_id.rstrip("/").rsplit("/", 1)[-1] if resource_id else None


def _ref_id(ref: Any) -> str | None:
    return getattr(ref, "id", None) if ref is not None else None


def _bounded(items: Any) -> list[Any]:
    out = []
    for i, item in enumerate(items):
        if i >= MAX_ITEMS:
            raise HarnessError(f"more than {MAX_ITEMS} items in one list: refusing to page further")
        out.append(item)
    return out


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        v = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return v.astimezone(dt.UTC).isoformat()
    return str(value)


def _s(value: Any) -> str | None:
    """An SDK enum or string as its wire value ("Https", not "ApplicationGatewayProtocol.HTTPS")."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _leaf_of(certs: list[Any]) -> Any:
    """The end-entity certificate of a chain given in any order: the one that issued none of the others."""
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers]
    return leaves[0] if leaves else (certs[0] if certs else None)


def _true_unless_false(value: Any) -> bool:
    return value is not False


# ------------------------------------------------------------------------------------------------------------------
# App Gateway
# ------------------------------------------------------------------------------------------------------------------
def read_app_gateway(clients: AzureClients, disc: Discovery) -> None:
    cfg = clients.config
    assert cfg.app_gateway
    with explain(f"App Gateway {cfg.app_gateway!r} in resource group {cfg.resource_group!r}",
                 f"check app_gateway in {cfg.where} (`az network application-gateway list -g {cfg.resource_group} "
                 "-o table`)", cfg):
        gw = clients.network().application_gateways.get(cfg.resource_group, cfg.app_gateway)
    ports = {p.id: p.port for p in gw.frontend_ports or []}
    frontends = {}
    for f in gw.frontend_ip_configurations or []:
        public = f.public_ip_address is not None
        frontends[f.id] = ("public" if public else "private", None if public else f.private_ip_address)
    redirecting = {_name(_ref_id(r.http_listener)) for r in gw.request_routing_rules or []
                   if r.redirect_configuration is not None}
    listeners = []
    for lst in gw.http_listeners or []:
        fe = frontends.get(_ref_id(lst.frontend_ip_configuration), ("", None))
        names = tuple(lst.host_names or ()) or ((lst.host_name,) if lst.host_name else ())
        listeners.append(GatewayListener(
            name=lst.name, protocol=_s(lst.protocol) or "", host_names=names,
            port=ports.get(_ref_id(lst.frontend_port)), frontend=fe[0], frontend_address=fe[1],
            ssl_certificate=_name(_ref_id(lst.ssl_certificate)), ssl_profile=_name(_ref_id(lst.ssl_profile)),
            redirects=lst.name in redirecting))
    ssl_certs = []
    for c in gw.ssl_certificates or []:
        # PKCS#7 is a set: its order means nothing; data that does not parse is a note, never the end of discovery
        found = _certs_or_note(c.public_cert_data, f"App Gateway {gw.name} sslCertificates/{c.name} publicCertData",
                               disc)
        leaf = _leaf_of(found)
        ordered = [leaf, *(x for x in found if x is not leaf)] if leaf is not None else []
        ssl_certs.append(GatewaySslCertificate(c.name, c.key_vault_secret_id,
                                               is_versioned_secret_id(c.key_vault_secret_id),
                                               b"".join(pem(x) for x in ordered).decode()))
        if leaf is not None:
            disc.certificates.append(cert_fact("app-gateway", f"{gw.name} sslCertificates/{c.name}", leaf))
    roots = []
    root_pems: dict[str, str] = {}
    for r in gw.trusted_root_certificates or []:
        roots.append(r.name)
        found = _certs_or_note(r.data, f"App Gateway {gw.name} trustedRootCertificates/{r.name} data", disc)
        if found:
            root_pems[r.name] = b"".join(pem(c) for c in found).decode()
        for cert in found:
            disc.certificates.append(cert_fact("app-gateway", f"{gw.name} trustedRootCertificates/{r.name}", cert))
    settings = []
    for s in gw.backend_http_settings_collection or []:
        settings.append(BackendSetting(
            name=s.name, protocol=_s(s.protocol) or "", port=s.port, host_name=s.host_name,
            pick_host_name_from_backend_address=bool(s.pick_host_name_from_backend_address),
            trusted_root_certificates=tuple(n for n in (_name(_ref_id(t)) for t in s.trusted_root_certificates or [])
                                            if n),
            validate_cert_chain_and_expiry=_true_unless_false(s.validate_cert_chain_and_expiry),
            validate_sni=_true_unless_false(s.validate_sni), sni_name=s.sni_name))
    policy = gw.ssl_policy
    policy_name = _s(policy.policy_name) if policy is not None else None
    min_tls = ((_s(policy.min_protocol_version) if policy is not None else None)
               or PREDEFINED_MIN_TLS.get(policy_name or ""))
    profiles = []
    for p in gw.ssl_profiles or []:
        auth = p.client_auth_configuration
        pp = p.ssl_policy
        pname = _s(pp.policy_name) if pp is not None else None
        profiles.append(SslProfile(
            name=p.name,
            verify_client_auth_mode=_s(auth.verify_client_auth_mode) if auth else None,
            verify_client_cert_issuer_dn=bool(auth and auth.verify_client_cert_issuer_dn),
            verify_client_revocation=_s(auth.verify_client_revocation) if auth else None,
            min_protocol_version=((_s(pp.min_protocol_version) if pp is not None else None)
                                  or PREDEFINED_MIN_TLS.get(pname or "")),
            trusted_client_certificates=tuple(n for n in (_name(_ref_id(t)) for t in
                                                          p.trusted_client_certificates or []) if n)))
    client_pems: dict[str, str] = {}
    for t in gw.trusted_client_certificates or []:  # the client CAs App Gateway's mTLS verifies against
        found = _certs_or_note(t.data, f"App Gateway {gw.name} trustedClientCertificates/{t.name} data", disc)
        if found:
            client_pems[t.name] = b"".join(pem(c) for c in found).decode()
        for cert in found:
            disc.certificates.append(cert_fact("app-gateway", f"{gw.name} trustedClientCertificates/{t.name}", cert))
    disc.app_gateway = AppGatewayFacts(
        name=gw.name or cfg.app_gateway, id=gw.id or "",
        operational_state=_s(gw.operational_state),
        listeners=tuple(listeners), ssl_certificates=tuple(ssl_certs), backend_settings=tuple(settings),
        trusted_root_certificates=tuple(roots), ssl_policy_type=_s(policy.policy_type) if policy is not None
        else None, ssl_policy_name=policy_name, min_protocol_version=min_tls,
        ssl_profiles=tuple(profiles), trusted_root_pems=root_pems, trusted_client_pems=client_pems,
        sku_tier=_s(gw.sku.tier) if gw.sku is not None else None)


# ------------------------------------------------------------------------------------------------------------------
# APIM
# ------------------------------------------------------------------------------------------------------------------
_POLICY_TAGS = {"validate-client-certificate", "authentication-certificate", "validate-jwt", "validate-azure-ad-token"}


#: APIM's documented expression form of a client-certificate check: a ``choose/when`` on the request's certificate
#: (learn.microsoft.com "How to secure APIs using client certificate authentication": ``context.Request.Certificate
#: == null || context.Request.Certificate.Thumbprint != "…"``)
_CERT_CONDITION = re.compile(r"<when\s+condition\s*=\s*\"[^\"]*context\.Request\.Certificate")


def _policy_facts(scope: str, xml: str) -> ApimPolicy:
    """Which of the TLS/identity policies the XML uses (by element name, anywhere in any section), and the
    expression form of the client-certificate check."""
    try:
        elements = list(ET.fromstring(xml).iter())  # noqa: S314 - the service's own policy document
        tags = {el.tag for el in elements}
        expression = any(el.tag == "when" and "context.Request.Certificate" in (el.get("condition") or "")
                         for el in elements)
    except ET.ParseError:  # rawxml may hold C# expressions that are not well-formed XML: fall back to a tag scan
        tags = set(re.findall(r"<\s*([a-z-]+)", xml))
        expression = bool(_CERT_CONDITION.search(xml))
    tags &= _POLICY_TAGS
    return ApimPolicy(scope=scope, validate_client_certificate="validate-client-certificate" in tags or expression,
                      authentication_certificate="authentication-certificate" in tags,
                      validate_jwt=bool(tags & {"validate-jwt", "validate-azure-ad-token"}), xml=xml)


def _certs_or_note(data: str | bytes | None, where: str, disc: Discovery) -> list[x509.Certificate]:
    """The certificates in ``data``; when it does not parse, a note naming ``where`` and none (the rest of the
    discovery goes on). A certificate cryptography only warns about today (a serial number that is not positive,
    which RFC 5280 4.1.2.2 forbids and a future cryptography release refuses) is read, and noted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CryptographyDeprecationWarning)
        try:
            found = certs_from_base64(data)
        except (ValueError, TypeError) as exc:  # binascii.Error is a ValueError
            disc.notes.append(f"{where}: does not parse as a certificate ({exc}); not read")
            return []
    for w in {str(w.message).split(".")[0] for w in caught if issubclass(w.category, CryptographyDeprecationWarning)}:
        disc.notes.append(f"{where}: {w} — RFC 5280 forbids it and a future cryptography release will refuse it: "
                          "reissue the certificate")
    return found


def read_apim(clients: AzureClients, disc: Discovery) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    cfg = clients.config
    assert cfg.apim
    rg, name = cfg.resource_group, cfg.apim
    api = clients.apim()
    fix = f"check apim in {cfg.where} (`az apim list -g {rg} -o table`)"
    with explain(f"API Management service {name!r} in resource group {rg!r}", fix, cfg):
        svc = api.api_management_service.get(rg, name)
    with explain(f"the backends of API Management service {name!r}", fix, cfg):
        backends = _bounded(api.backend.list_by_service(rg, name))
    with explain(f"the certificates of API Management service {name!r}", fix, cfg):
        certificates = _bounded(api.certificate.list_by_service(rg, name))
    policies = []
    apis: list[ApimApi] = []
    with explain(f"the policies of API Management service {name!r}", fix, cfg):
        try:
            glob = api.policy.get(rg, name, "policy", format="rawxml")
            policies.append(_policy_facts("global", glob.value or ""))
        except ResourceNotFoundError:
            pass  # no global policy
        for a in _bounded(api.api.list_by_service(rg, name)):
            apis.append(ApimApi(a.name or "", a.path, a.service_url))
            try:
                pol = api.api_policy.get(rg, name, a.name, "policy", format="rawxml")
            except ResourceNotFoundError:
                continue  # the API has no policy of its own
            policies.append(_policy_facts(f"api:{a.name}", pol.value or ""))
    hostnames = []
    for h in svc.hostname_configurations or []:
        info = h.certificate
        hostnames.append(ApimHostname(
            type=_s(h.type) or "", host_name=h.host_name,
            negotiate_client_certificate=bool(h.negotiate_client_certificate), key_vault_id=h.key_vault_id,
            versioned=is_versioned_secret_id(h.key_vault_id),
            certificate_expiry=_iso(info.expiry) if info else None,
            certificate_thumbprint=info.thumbprint if info else None,
            certificate_subject=info.subject if info else None))
        if info is not None and info.expiry is not None:
            disc.certificates.append(CertFact("apim", f"{name} hostname {h.host_name}", info.subject or "",
                                              "", _iso(info.expiry) or "", thumbprint=info.thumbprint or ""))
    for c in svc.certificates or []:  # the service's CA store (Root / CertificateAuthority)
        info = c.certificate
        if info is not None and info.expiry is not None:
            disc.certificates.append(CertFact("apim", f"{name} CA store {_s(c.store_name)}", info.subject or "", "",
                                              _iso(info.expiry) or "", thumbprint=info.thumbprint or ""))
    certs = []
    for c in certificates:
        kv = c.key_vault.secret_identifier if c.key_vault is not None else None
        status = c.key_vault.last_status if c.key_vault is not None else None
        certs.append(ApimCertificate(c.name, c.subject, c.thumbprint, _iso(c.expiration_date), kv,
                                     is_versioned_secret_id(kv), last_status=_s(status.code) if status else None,
                                     last_status_message=status.message if status else None))
        if c.expiration_date is not None:
            disc.certificates.append(CertFact("apim", f"{name} certificates/{c.name}", c.subject or "", "",
                                              _iso(c.expiration_date) or "", thumbprint=c.thumbprint or ""))
    facts = []
    for b in backends:
        tls, creds = b.tls, b.credentials
        facts.append(ApimBackend(
            name=b.name, url=b.url, protocol=_s(b.protocol),
            validate_certificate_chain=_true_unless_false(tls.validate_certificate_chain if tls else None),
            validate_certificate_name=_true_unless_false(tls.validate_certificate_name if tls else None),
            certificate_ids=tuple(creds.certificate_ids or ()) if creds else ()))
    # customProperties: …Gateway.Security.Protocols.Tls10 (clients), …Security.Backend.Protocols.Tls10 (backends),
    # …Security.Ciphers.TripleDes168 (API Management service REST reference, customProperties) — kept apart
    tls_settings = {k.split(".Security.", 1)[1]: str(v) for k, v in (svc.custom_properties or {}).items()
                    if ".Security." in k and (".Protocols." in k or ".Ciphers." in k)}
    disc.apim = ApimFacts(
        name=svc.name or name, id=svc.id or "", sku=_s(svc.sku.name) if svc.sku else None,
        virtual_network_type=_s(svc.virtual_network_type),
        private_ip_addresses=tuple(svc.private_ip_addresses or ()), gateway_url=svc.gateway_url,
        hostnames=tuple(hostnames), tls_settings=tls_settings, backends=tuple(facts), certificates=tuple(certs),
        policies=tuple(policies), apis=tuple(apis),
        enable_client_certificate=bool(getattr(svc, "enable_client_certificate", False)))


# ------------------------------------------------------------------------------------------------------------------
# AKS
# ------------------------------------------------------------------------------------------------------------------
def read_aks(clients: AzureClients, disc: Discovery) -> None:
    cfg = clients.config
    assert cfg.aks
    with explain(f"AKS cluster {cfg.aks!r} in resource group {cfg.resource_group!r}",
                 f"check aks in {cfg.where} (`az aks list -g {cfg.resource_group} -o table`)", cfg):
        mc = clients.aks().managed_clusters.get(cfg.resource_group, cfg.aks)
    access = mc.api_server_access_profile
    disc.aks = AksFacts(
        name=mc.name or cfg.aks, id=mc.id or "", kubernetes_version=mc.kubernetes_version, fqdn=mc.fqdn,
        private_fqdn=mc.private_fqdn,
        enable_private_cluster=bool(access and access.enable_private_cluster),
        authorized_ip_ranges=tuple(access.authorized_ip_ranges or ()) if access else (),
        enable_private_cluster_public_fqdn=bool(access and access.enable_private_cluster_public_fqdn),
        disable_run_command=bool(access and access.disable_run_command),
        private_dns_zone=access.private_dns_zone if access else None)


# ------------------------------------------------------------------------------------------------------------------
# Key Vault
# ------------------------------------------------------------------------------------------------------------------
def _action(a: Any) -> str:
    kind = _s(a.action) or ""
    if a.lifetime_percentage is not None:
        return f"{kind} at {a.lifetime_percentage}% lifetime"
    if a.days_before_expiry is not None:
        return f"{kind} {a.days_before_expiry} days before expiry"
    return kind


def read_key_vault(clients: AzureClients, disc: Discovery, vault: str) -> None:

    cfg = clients.config
    kv = clients.certificates(vault)
    fix = f"check key_vaults in {cfg.where} (`az keyvault list -g {cfg.resource_group} -o table`)"
    with explain(f"the certificates of Key Vault {vault!r}", fix, cfg):
        names = [p.name for p in _bounded(kv.list_properties_of_certificates()) if p.name]
        for cname in names:
            cert = kv.get_certificate(cname)
            versions = _bounded(kv.list_properties_of_certificate_versions(cname))
            policy = kv.get_certificate_policy(cname)
            actions = tuple(_action(a) for a in policy.lifetime_actions or ())
            props = cert.properties
            if props is None:
                continue
            subject = None
            found = _certs_or_note(bytes(cert.cer), f"Key Vault {vault}/certificates/{cname} cer", disc) \
                if cert.cer else []
            if found:
                leaf = found[0]
                subject = leaf.subject.rfc4514_string()
                disc.certificates.append(cert_fact("key-vault", f"{vault}/certificates/{cname}", leaf))
            disc.key_vault_certificates.append(KeyVaultCertificate(
                vault=vault, name=cname, id=cert.id or "", secret_id=cert.secret_id,
                current_version=props.version or "", versions=len(versions), subject=subject,
                not_before=_iso(props.not_before), expires_on=_iso(props.expires_on),
                thumbprint=props.x509_thumbprint.hex().upper() if props.x509_thumbprint else None,
                lifetime_actions=actions, auto_renew=any(a.startswith("AutoRenew") for a in actions),
                issuer_name=policy.issuer_name, pem=pem(found[0]).decode() if found else None))


# ------------------------------------------------------------------------------------------------------------------
# everything
# ------------------------------------------------------------------------------------------------------------------
def discover(config: AzureConfig, credential: TokenCredential | None = None, *, cluster: bool = True,
             clients: AzureClients | None = None) -> Discovery:
    """Read every part the config names. ``credential`` defaults to DefaultAzureCredential (``--tenant`` aware)."""
    own = clients is None
    clients = clients or AzureClients(config, credential)
    disc = Discovery(subscription_id=config.subscription_id, resource_group=config.resource_group,
                     discovered_at=dt.datetime.now(dt.UTC).isoformat())
    try:
        if config.app_gateway:
            with _unexpected(f"App Gateway {config.app_gateway!r}"):
                read_app_gateway(clients, disc)
        if config.apim:
            with _unexpected(f"API Management service {config.apim!r}"):
                read_apim(clients, disc)
        if config.aks:
            with _unexpected(f"AKS cluster {config.aks!r}"):
                read_aks(clients, disc)
        for vault in config.key_vaults:
            with _unexpected(f"Key Vault {vault!r}"):
                read_key_vault(clients, disc, vault)
        _note_unread_vaults(config, disc)
        if cluster:
            from harness.targets.azure.cluster import read_cluster

            with _unexpected("the cluster's Ingresses and Secrets"):
                read_cluster(config, disc, clients)
    finally:
        if own:
            clients.close()
    return disc


@contextlib.contextmanager
def _unexpected(what: str) -> Iterator[None]:
    """Anything but a harness error while reading ``what`` (a value shaped otherwise than discovery expects) is one
    line naming the resource and where it was read, never a traceback."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as exc:  # any SDK or parsing surprise becomes one line
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/harness/" in f.filename.replace("\\", "/")]
        at = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
        # the message only, never the payload an SDK error may quote ("… Data: {…}")
        message = (str(exc).splitlines() or [""])[0].split(" Data: ")[0][:200]
        raise HarnessError(f"discovery of {what} met a value it cannot read: {type(exc).__name__}: {message}{at} — "
                           "run with the resource's JSON (`az resource show --ids …`) at hand and report it") from None


def _note_unread_vaults(config: AzureConfig, disc: Discovery) -> None:
    """A secret id pointing at a vault the config does not list is reported, not followed."""
    ids = [c.key_vault_secret_id for c in (disc.app_gateway.ssl_certificates if disc.app_gateway else ())]
    if disc.apim:
        ids += [h.key_vault_id for h in disc.apim.hostnames] + [c.key_vault_secret_id for c in disc.apim.certificates]
    for sid in filter(None, ids):
        host = sid.split("://", 1)[-1].split("/", 1)[0]
        vault = host.split(".", 1)[0]
        if vault not in config.key_vaults:
            disc.notes.append(f"{sid}: vault {vault!r} is not in key_vaults — its certificate was not read")
