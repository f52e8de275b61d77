"""The azure target's config file (TOML): which resources to read, and how the runner reaches each hop.

    subscription_id = "00000000-0000-0000-0000-000000000000"
    resource_group  = "rg-chain"
    app_gateway = "agw-chain"      # any of the four may be left out: that part is simply not discovered
    apim        = "apim-chain"
    aks         = "aks-chain"
    key_vaults  = ["kv-chain"]

    [kubernetes]                   # the ingress is read with this kubeconfig (az aks get-credentials; kubelogin)
    kubeconfig = "~/.kube/config"

    [runner.hops.ingress]          # attach-format overrides: what discovery cannot know (client identities, trust)
    client_cert = "apim-client.pem"

docs/azure.md has the full format. Nothing in this file is a secret: a PFX password is named by an environment
variable, never written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.targets.base import config_error, config_file, read_toml_config

__all__ = ["DEFAULT_EXPIRY_DAYS", "AzureConfig", "load_azure_config", "parse_azure_config"]

#: a certificate expiring within this many days is a posture finding (Key Vault renews at 80 % of the lifetime by
#: default and App Gateway polls a versionless secret every 4 h, so 30 days leaves time for a failed renewal)
DEFAULT_EXPIRY_DAYS = 30

_TOP = {"subscription_id", "resource_group", "tenant_id", "app_gateway", "apim", "aks", "key_vaults",
        "expiry_days", "managed_identity_client_id", "kubernetes", "runner", "endpoints"}
_KUBE = {"kubeconfig", "context", "namespace", "host", "ca_bundle", "token_env"}
_RUNNER = {"allow_run_command", "hops", "ingress_address", "ingress_port"}
_ENDPOINTS = {"resource_manager", "key_vault", "ca_bundle"}


@dataclass(frozen=True)
class AzureConfig:
    subscription_id: str
    resource_group: str
    app_gateway: str | None = None
    apim: str | None = None
    aks: str | None = None
    key_vaults: tuple[str, ...] = ()
    tenant_id: str | None = None
    managed_identity_client_id: str | None = None
    expiry_days: int = DEFAULT_EXPIRY_DAYS
    # kubernetes: a kubeconfig (+context), or host + token env var name + CA bundle
    kubeconfig: Path | None = None
    kube_context: str | None = None
    kube_namespace: str | None = None  # None: every namespace
    kube_host: str | None = None
    kube_ca_bundle: Path | None = None
    kube_token_env: str | None = None
    # runner hints
    allow_run_command: bool = False  # AKS runCommand is a POST that starts a pod: only with this explicit opt-in
    ingress_address: str | None = None  # where the runner reaches the ingress (default: the Ingress' LB address)
    ingress_port: int = 443
    hops: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # attach-format tables, merged over discovery
    # endpoint overrides (sovereign clouds, private endpoints, a corporate TLS proxy's CA)
    resource_manager: str = "https://management.azure.com"
    key_vault_urls: Mapping[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None
    source: Path | None = None
    base: Path = Path()

    def vault_url(self, vault: str) -> str:
        return self.key_vault_urls.get(vault, f"https://{vault}.vault.azure.net")

    @property
    def where(self) -> str:
        return str(self.source) if self.source else "azure config"


def _str(doc: Mapping[str, Any], key: str, src: Path | None, *, required: bool = False,
         prefix: str = "") -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise config_error(src, prefix + key, "is missing", f"add {key} = \"…\" (see docs/azure.md)")
        return None
    if not isinstance(value, str) or not value.strip():
        raise config_error(src, prefix + key, f"must be a non-empty string, not {value!r}", "quote the name")
    return value.strip()


def _only(doc: Mapping[str, Any], allowed: set[str], src: Path | None, where: str) -> None:
    unknown = set(doc) - allowed
    if unknown:
        raise config_error(src, where or ", ".join(sorted(unknown)), f"unknown key(s) {', '.join(sorted(unknown))}",
                           f"allowed: {', '.join(sorted(allowed))}")


def parse_azure_config(doc: Mapping[str, Any], base: Path, source: Path | None = None) -> AzureConfig:
    _only(doc, _TOP, source, "")
    kube = doc.get("kubernetes", {})
    runner = doc.get("runner", {})
    endpoints = doc.get("endpoints", {})
    for name, table, allowed in (("kubernetes", kube, _KUBE), ("runner", runner, _RUNNER),
                                 ("endpoints", endpoints, _ENDPOINTS)):
        if not isinstance(table, Mapping):
            raise config_error(source, name, "must be a table", f"write [{name}]")
        _only(table, allowed, source, name)
    vaults = doc.get("key_vaults", [])
    if isinstance(vaults, str):
        vaults = [vaults]
    if not isinstance(vaults, list) or not all(isinstance(v, str) and v for v in vaults):
        raise config_error(source, "key_vaults", f"must be a list of vault names, not {vaults!r}",
                           "key_vaults = [\"kv-x\"]")
    days = doc.get("expiry_days", DEFAULT_EXPIRY_DAYS)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise config_error(source, "expiry_days", f"must be a whole number of days, not {days!r}",
                           "e.g. expiry_days = 30")
    allow = runner.get("allow_run_command", False)
    if not isinstance(allow, bool):
        raise config_error(source, "runner.allow_run_command", f"must be true or false, not {allow!r}",
                           "it is off by default")
    hops = runner.get("hops", {})
    if not isinstance(hops, Mapping) or not all(isinstance(v, Mapping) for v in hops.values()):
        raise config_error(source, "runner.hops", "must be tables of attach hop settings",
                           "write [runner.hops.ingress]")
    kv_urls = endpoints.get("key_vault", {})
    if not isinstance(kv_urls, Mapping) or not all(isinstance(v, str) for v in kv_urls.values()):
        raise config_error(source, "endpoints.key_vault", "must map vault names to URLs",
                           "{ \"kv-x\" = \"https://…\" }")
    port = runner.get("ingress_port", 443)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise config_error(source, "runner.ingress_port", f"must be a TCP port number, not {port!r}", "use 1-65535")
    return AzureConfig(
        subscription_id=str(_str(doc, "subscription_id", source, required=True)),
        resource_group=str(_str(doc, "resource_group", source, required=True)),
        app_gateway=_str(doc, "app_gateway", source),
        apim=_str(doc, "apim", source),
        aks=_str(doc, "aks", source),
        key_vaults=tuple(vaults),
        tenant_id=_str(doc, "tenant_id", source),
        managed_identity_client_id=_str(doc, "managed_identity_client_id", source),
        expiry_days=days,
        kubeconfig=config_file(kube["kubeconfig"], base, source, "kubernetes.kubeconfig",
                               "azure") if "kubeconfig" in kube else None,
        kube_context=_str(kube, "context", source, prefix="kubernetes."),
        kube_namespace=_str(kube, "namespace", source, prefix="kubernetes."),
        kube_host=_str(kube, "host", source, prefix="kubernetes."),
        kube_ca_bundle=config_file(kube["ca_bundle"], base, source, "kubernetes.ca_bundle",
                                   "azure") if "ca_bundle" in kube else None,
        kube_token_env=_str(kube, "token_env", source, prefix="kubernetes."),
        allow_run_command=allow,
        ingress_address=_str(runner, "ingress_address", source, prefix="runner."),
        ingress_port=port,
        hops={k: dict(v) for k, v in hops.items()},
        resource_manager=(_str(endpoints, "resource_manager", source, prefix="endpoints.")
                          or "https://management.azure.com").rstrip("/"),
        key_vault_urls={k: v.rstrip("/") for k, v in kv_urls.items()},
        ca_bundle=config_file(endpoints["ca_bundle"], base, source, "endpoints.ca_bundle",
                              "azure") if "ca_bundle" in endpoints
        else None,
        source=source,
        base=base,
    )


def load_azure_config(path: Path) -> AzureConfig:

    path = Path(path)
    return parse_azure_config(read_toml_config(path, "azure"), path.resolve().parent, path)
