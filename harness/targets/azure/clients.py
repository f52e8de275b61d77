"""The Azure and Kubernetes clients the azure target reads with — read-only by construction.

Every Azure SDK client is built here with :class:`ReadOnlyPolicy` as its first per-call policy: a request whose
method is not GET or HEAD is refused before it leaves the process, unless it is one of the POSTs listed in
:data:`READ_ONLY_POSTS` (operations that only report). AKS ``runCommand`` is a POST that starts a pod in the
cluster: it passes only when the config says ``[runner] allow_run_command = true``. The Kubernetes client is a
:class:`ReadOnlyApiClient` that refuses everything but GET and HEAD in the same way.

Deliberately never called (all POST, all return secrets): APIM ``listSecrets`` (named values, subscriptions,
tenant access), AKS ``listClusterUserCredential`` / ``listClusterAdminCredential``, Key Vault ``get_secret`` (a
certificate's private key). A kubeconfig comes from ``az aks get-credentials`` run by the user, not from us.

Errors become one :class:`~harness.errors.UsageError` line naming what failed and the fix (:func:`explain`).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from harness.errors import HarnessError, UsageError
from harness.targets.azure.config import AzureConfig

if TYPE_CHECKING:
    from azure.keyvault.certificates import CertificateClient
    from azure.mgmt.apimanagement import ApiManagementClient
    from azure.mgmt.containerservice import ContainerServiceClient
    from azure.mgmt.network import NetworkManagementClient
    from kubernetes.client import ApiClient

__all__ = [
    "READ_ONLY_POSTS",
    "RUN_COMMAND",
    "AzureClients",
    "ReadOnlyPolicy",
    "ReadOnlyViolation",
    "build_kube_client",
    "explain",
]

#: POSTs that only report: (name, path pattern). Everything else that is not GET/HEAD is refused.
READ_ONLY_POSTS: Final = (
    ("App Gateway backend health",
     re.compile(r"/providers/Microsoft\.Network/applicationGateways/[^/]+/backendhealth$", re.IGNORECASE)),
)
#: AKS run command: a POST that runs a pod in the cluster (to read a private cluster) — opt-in only
RUN_COMMAND: Final = re.compile(r"/providers/Microsoft\.ContainerService/managedClusters/[^/]+/runCommand$",
                                re.IGNORECASE)

#: bounded retries for every client (transient ARM/Key Vault errors only; 4xx are never retried by azure-core)
RETRY_TOTAL: Final = 2
#: seconds to connect / to read one response
CONNECT_TIMEOUT: Final = 10
READ_TIMEOUT: Final = 60


class ReadOnlyViolation(HarnessError):
    """The azure target was about to send a request that could change something; it was not sent."""


class ReadOnlyPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]
    """Refuses any request but GET/HEAD and the listed read-only POSTs, before it is sent."""

    def __init__(self, *, allow_run_command: bool = False) -> None:
        super().__init__()
        self.allow_run_command = allow_run_command

    def allowed(self, method: str, url: str) -> bool:
        method = method.upper()
        if method in ("GET", "HEAD"):
            return True
        path = urlsplit(url).path.rstrip("/")
        if method == "POST":
            if any(rx.search(path) for _, rx in READ_ONLY_POSTS):
                return True
            if self.allow_run_command and RUN_COMMAND.search(path):
                return True
        return False

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]
        req = request.http_request
        if self.allowed(req.method, req.url):
            return
        path = urlsplit(req.url).path
        if req.method.upper() == "POST" and RUN_COMMAND.search(path.rstrip("/")):
            raise ReadOnlyViolation(f"refused POST {path}: AKS run command starts a pod in the cluster — set "
                                    "[runner] allow_run_command = true in the azure config to allow it")
        raise ReadOnlyViolation(f"refused {req.method} {path}: the azure target is read-only (only GET/HEAD and "
                                f"{', '.join(n for n, _ in READ_ONLY_POSTS)} are sent)")


class _TenantCredential:
    """A credential that asks every token for one tenant (``--tenant``); DefaultAzureCredential takes no tenant_id."""

    def __init__(self, inner: TokenCredential, tenant_id: str) -> None:
        self._inner = inner
        self._tenant = tenant_id

    def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                  enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        return self._inner.get_token(*scopes, claims=claims, tenant_id=tenant_id or self._tenant,
                                     enable_cae=enable_cae, **kwargs)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def default_credential(config: AzureConfig) -> TokenCredential:
    """DefaultAzureCredential: environment, workload/managed identity (CI), Azure CLI (``az login``), …"""
    from azure.identity import DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if config.managed_identity_client_id:
        kwargs["managed_identity_client_id"] = config.managed_identity_client_id
    if config.tenant_id:
        kwargs["additionally_allowed_tenants"] = [config.tenant_id]
        cred: TokenCredential = DefaultAzureCredential(**kwargs)
        return _TenantCredential(cred, config.tenant_id)
    return DefaultAzureCredential(**kwargs)


class AzureClients:
    """Builds (once each) the SDK clients discovery needs, all with the read-only policy and bounded retries."""

    def __init__(self, config: AzureConfig, credential: TokenCredential | None = None) -> None:
        self.config = config
        self._credential = credential
        self._made: dict[str, Any] = {}

    @property
    def credential(self) -> TokenCredential:
        if self._credential is None:
            self._credential = default_credential(self.config)
        return self._credential

    def _common(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "per_call_policies": [ReadOnlyPolicy(allow_run_command=self.config.allow_run_command)],
            "retry_total": RETRY_TOTAL,
            "retry_backoff_factor": 0.5,
            "retry_backoff_max": 5,
            "connection_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
        }
        if self.config.ca_bundle is not None:
            kwargs["connection_verify"] = str(self.config.ca_bundle)
        return kwargs

    def _arm(self, key: str, cls: Any) -> Any:
        if key not in self._made:
            rm = self.config.resource_manager
            self._made[key] = cls(self.credential, self.config.subscription_id, base_url=rm,
                                  credential_scopes=[f"{rm}/.default"], **self._common())
        return self._made[key]

    def network(self) -> NetworkManagementClient:
        from azure.mgmt.network import NetworkManagementClient

        return self._arm("network", NetworkManagementClient)  # type: ignore[no-any-return]

    def apim(self) -> ApiManagementClient:
        from azure.mgmt.apimanagement import ApiManagementClient

        return self._arm("apim", ApiManagementClient)  # type: ignore[no-any-return]

    def aks(self) -> ContainerServiceClient:
        from azure.mgmt.containerservice import ContainerServiceClient

        return self._arm("aks", ContainerServiceClient)  # type: ignore[no-any-return]

    def certificates(self, vault: str) -> CertificateClient:
        from azure.keyvault.certificates import CertificateClient

        key = f"kv:{vault}"
        if key not in self._made:
            url = self.config.vault_url(vault)
            # the challenge names vault.azure.net; a private-endpoint or test URL has another host, so the check
            # that the challenge's resource matches the URL only applies to the public vault URL
            standard = (urlsplit(url).hostname or "").endswith(".vault.azure.net")
            self._made[key] = CertificateClient(url, self.credential, verify_challenge_resource=standard,
                                                **self._common())
        return self._made[key]  # type: ignore[no-any-return]

    def close(self) -> None:
        for client in self._made.values():
            with contextlib.suppress(Exception):
                client.close()
        self._made.clear()


# ------------------------------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------------------------------
def _read_only_api_client() -> type[ApiClient]:
    from kubernetes.client import ApiClient

    class ReadOnlyApiClient(ApiClient):
        """The kubernetes ApiClient, refusing every method but GET and HEAD before anything is sent."""

        def call_api(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            if method.upper() not in ("GET", "HEAD"):
                raise ReadOnlyViolation(f"refused {method} {urlsplit(url).path}: the azure target only reads "
                                        "the cluster")
            return super().call_api(method, url, *args, **kwargs)

    return ReadOnlyApiClient


def build_kube_client(config: AzureConfig) -> ApiClient:
    """A read-only Kubernetes client from ``[kubernetes]``: a kubeconfig (+context), or host + token variable + CA."""
    from kubernetes import config as kube_config
    from kubernetes.client import Configuration

    cfg = Configuration()
    if config.kube_host:
        cfg.host = config.kube_host
        if config.kube_token_env:
            token = os.environ.get(config.kube_token_env)
            if not token:
                raise UsageError(f"{config.where}: kubernetes.token_env: the environment variable "
                                 f"{config.kube_token_env} is not set — export the cluster token in it")
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
        if config.kube_ca_bundle:
            cfg.ssl_ca_cert = str(config.kube_ca_bundle)
    elif config.kubeconfig:
        try:
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(config.kubeconfig), context=config.kube_context, client_configuration=cfg)
        except (kube_config.ConfigException, OSError, ValueError) as exc:
            raise UsageError(f"{config.kubeconfig}: not a usable kubeconfig ({str(exc).splitlines()[0]}) — run "
                             "`az aks get-credentials` (and `kubelogin convert-kubeconfig -l azurecli`)") from None
    else:
        raise UsageError(f"{config.where}: no [kubernetes] kubeconfig or host — add kubeconfig = \"~/.kube/config\" "
                         "(from `az aks get-credentials`) to read the ingress")
    cfg.retries = RETRY_TOTAL
    return _read_only_api_client()(cfg)


# ------------------------------------------------------------------------------------------------------------------
# errors → one line
# ------------------------------------------------------------------------------------------------------------------
def _code(exc: HttpResponseError) -> str:
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    return str(code or getattr(exc, "status_code", None) or "error")


@contextlib.contextmanager
def explain(what: str, fix: str, config: AzureConfig) -> Iterator[None]:
    """Turn the SDK's exceptions while reading ``what`` into one UsageError/HarnessError line with ``fix``."""
    try:
        yield
    except ResourceNotFoundError as exc:
        raise UsageError(f"{what} was not found (ARM: {_code(exc)}) — {fix}") from None
    except ClientAuthenticationError as exc:
        if exc.response is None:  # the credential failed: nothing was sent
            raise UsageError(
                "no Azure credential: DefaultAzureCredential found none that works (environment, managed identity, "
                "Azure CLI, …) — run `az login` (with --tenant / tenant_id for another tenant), or give the runner "
                "a managed identity (managed_identity_client_id in the azure config)") from None
        raise UsageError(f"reading {what} was refused ({exc.status_code} {_code(exc)}) — the identity needs the "
                         "Reader role on the resource group (and Key Vault Certificate User on the vaults)") from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise UsageError(f"reading {what} was refused (403 {_code(exc)}) — grant the identity Reader on resource "
                             f"group {config.resource_group} (Key Vault: Certificate User / get+list permission)"
                             ) from None
        raise HarnessError(f"reading {what} failed: HTTP {exc.status_code} {_code(exc)}") from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise HarnessError(f"cannot reach Azure while reading {what} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]}) — run from a runner with access, check [endpoints]"
                           ) from None
