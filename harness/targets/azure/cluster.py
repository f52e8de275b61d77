"""The ingress as the cluster holds it, and the cert it really serves.

Read with the kubernetes client (GET only, :class:`~.clients.ReadOnlyApiClient`): every Ingress (or those of one
namespace), its ingress-nginx annotations, the TLS secret's ``tls.crt`` and the ``auth-tls-secret``'s ``ca.crt``.
A Secret's other keys (``tls.key``) are dropped the moment the response is parsed and never stored. Then one TLS
handshake per host to the ingress address shows the certificate actually served, which must be the secret's
(ingress-nginx keeps serving an old cert or CA until it reloads: REFERENCES.md issue 2).

Private cluster without a kubeconfig: with ``[runner] allow_run_command = true`` the same objects are read through
AKS run command (``kubectl get … -o json``; a POST that starts a short-lived pod in the cluster — opt-in only).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from harness.errors import HarnessError, UsageError
from harness.model.topology import ANNOTATION_PREFIX
from harness.targets.azure.config import AzureConfig
from harness.targets.azure.model import Discovery, IngressFacts, cert_fact

__all__ = ["SERVED_TIMEOUT", "fetch_served_cert", "ingress_facts", "read_cluster"]

#: seconds for one handshake to the ingress to fetch its served certificate
SERVED_TIMEOUT = 5.0
#: seconds for a run command to finish (the SDK polls; bounded)
RUN_COMMAND_TIMEOUT = 120.0
_SECRET_KEYS_KEPT = ("tls.crt", "ca.crt")


def fetch_served_cert(address: str, port: int, server_name: str) -> x509.Certificate:
    """The leaf a TLS server presents for ``server_name`` (no verification: we look, we do not trust)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=SERVED_TIMEOUT) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server sent no certificate")
    return x509.load_der_x509_certificate(der)


def _secret_certs(secret: Mapping[str, Any] | None, key: str) -> list[x509.Certificate]:
    data = (secret or {}).get("data") or {}
    if key not in data:
        return []
    return list(x509.load_pem_x509_certificates(base64.b64decode(data[key])))


def _public_only(secret: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The secret with only its public keys (tls.crt, ca.crt): tls.key never leaves this function."""
    if secret is None:
        return None
    data = secret.get("data") or {}
    return {"metadata": secret.get("metadata", {}), "data": {k: data[k] for k in _SECRET_KEYS_KEPT if k in data}}


#: metadata an applied manifest does not carry (the API server's bookkeeping), and kubectl's copy of the last apply
_BOOKKEEPING = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink")
_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _keep_manifest(ing: Mapping[str, Any], ns: str, name: str, disc: Discovery) -> None:
    """The Ingress as one applies it: apiVersion, kind, metadata without the server's bookkeeping, spec."""
    meta = {k: v for k, v in (ing.get("metadata") or {}).items() if k not in _BOOKKEEPING and v is not None}
    meta["name"], meta["namespace"] = name, ns
    if meta.get("annotations"):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != _LAST_APPLIED}
    disc.ingress_manifests.append({"apiVersion": ing.get("apiVersion") or "networking.k8s.io/v1",
                                   "kind": "Ingress", "metadata": meta, "spec": ing.get("spec") or {}})


def ingress_facts(ing: Mapping[str, Any], get_secret: Any, disc: Discovery, config: AzureConfig) -> IngressFacts:
    """Facts of one Ingress (a dict as the API serves it); ``get_secret(ns, name)`` → public-only dict or None."""
    meta = ing.get("metadata", {})
    ns, name = meta.get("namespace", "default"), meta.get("name", "")
    ann = {k[len(ANNOTATION_PREFIX):]: str(v) for k, v in (meta.get("annotations") or {}).items()
           if k.startswith(ANNOTATION_PREFIX)}
    spec = ing.get("spec", {})
    hosts = tuple(r["host"] for r in spec.get("rules", []) if r.get("host"))
    tls = (spec.get("tls") or [{}])[0]
    tls_secret = tls.get("secretName")
    lb = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    addresses = tuple(a.get("ip") or a.get("hostname") for a in lb if a.get("ip") or a.get("hostname"))
    secret_sha = None
    if tls_secret:
        leafs = _secret_certs(get_secret(ns, tls_secret), "tls.crt")
        if leafs:
            secret_sha = leafs[0].fingerprint(hashes.SHA256()).hex()
            disc.certificates.append(cert_fact("cluster-secret", f"{ns}/{tls_secret} tls.crt", leafs[0]))
    ca_ref = ann.get("auth-tls-secret")
    ca_subjects: tuple[str, ...] = ()
    ca_error = None
    if ca_ref:
        ca_ns, _, ca_name = ca_ref.rpartition("/")
        ca_ns = ca_ns or ns
        secret = get_secret(ca_ns, ca_name)
        if secret is None:
            ca_error = f"secret {ca_ns}/{ca_name} does not exist"
        else:
            try:
                cas = _secret_certs(secret, "ca.crt")
            except ValueError:
                cas, ca_error = [], f"secret {ca_ns}/{ca_name} ca.crt is not PEM certificates"
            if not cas and ca_error is None:
                ca_error = f"secret {ca_ns}/{ca_name} has no ca.crt"
            ca_subjects = tuple(c.subject.rfc4514_string() for c in cas)
            for c in cas:
                disc.certificates.append(cert_fact("cluster-secret", f"{ca_ns}/{ca_name} ca.crt", c))
    _keep_manifest(ing, ns, name, disc)
    refs = [f"{ns}/{t['secretName']}" for t in spec.get("tls") or [] if t.get("secretName")]
    for key in ("auth-tls-secret", "proxy-ssl-secret"):
        if ann.get(key):
            ref_ns, _, ref_name = ann[key].rpartition("/")
            refs.append(f"{ref_ns or ns}/{ref_name}")
    for ref in refs:
        if ref not in disc.secrets:
            ref_ns, _, ref_name = ref.partition("/")
            data = ((get_secret(ref_ns, ref_name) or {}).get("data") or {})
            public = {k: base64.b64decode(data[k]).decode(errors="replace") for k in _SECRET_KEYS_KEPT if k in data}
            if public:
                disc.secrets[ref] = public
    served_sha, served_error = None, None
    address = config.ingress_address or (addresses[0] if addresses else None)
    if hosts and address:
        try:
            served = fetch_served_cert(address, config.ingress_port, hosts[0])
            served_sha = served.fingerprint(hashes.SHA256()).hex()
            disc.certificates.append(cert_fact("served", f"{hosts[0]} at {address}:{config.ingress_port}", served))
        except (OSError, ValueError) as exc:
            served_error = f"{address}:{config.ingress_port}: {exc}"
    elif hosts:
        served_error = "no address to reach the ingress (no status.loadBalancer, no runner.ingress_address)"
    return IngressFacts(namespace=ns, name=name, hosts=hosts, tls_secret=tls_secret, annotations=ann,
                        addresses=addresses, ca_secret=ca_ref, ca_subjects=ca_subjects, ca_error=ca_error,
                        secret_sha256=secret_sha, served_sha256=served_sha, served_error=served_error)


# ------------------------------------------------------------------------------------------------------------------
# sources: the API server, or AKS run command
# ------------------------------------------------------------------------------------------------------------------
def _plain(api_client: Any, obj: object) -> dict[str, Any]:
    """A kubernetes model object as the API serves it (camelCase JSON), so every source is read one way."""
    return dict(api_client.sanitize_for_serialization(obj))


def _via_api(config: AzureConfig, disc: Discovery) -> None:
    from kubernetes.client import CoreV1Api, NetworkingV1Api
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from harness.targets.azure.clients import build_kube_client

    api_client = build_kube_client(config)
    timeout = (5, 30)
    try:
        net, core = NetworkingV1Api(api_client), CoreV1Api(api_client)
        if config.kube_namespace:
            listing = net.list_namespaced_ingress(config.kube_namespace, _request_timeout=timeout)
        else:
            listing = net.list_ingress_for_all_namespaces(_request_timeout=timeout)
        ingresses = [_plain(api_client, i) for i in listing.items]

        def get_secret(ns: str, name: str) -> dict[str, Any] | None:
            try:
                obj = core.read_namespaced_secret(name, ns, _request_timeout=timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return _public_only(_plain(api_client, obj))

        for ing in ingresses:
            disc.ingresses.append(ingress_facts(ing, get_secret, disc, config))
    except ApiException as exc:
        if exc.status in (401, 403):
            raise UsageError(f"the cluster refused to list ingresses/secrets ({exc.status} {exc.reason}) — give the "
                             "identity a role that can get/list ingresses and get secrets (read-only)") from None
        raise HarnessError(f"reading the cluster failed: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise HarnessError(f"cannot reach the cluster's API server ({type(exc).__name__}) — run from a runner "
                           "inside the VNet, or allow run command ([runner] allow_run_command)") from None
    finally:
        api_client.close()  # type: ignore[no-untyped-call]


def _run(config: AzureConfig, clients: Any, command: str) -> str:
    from azure.mgmt.containerservice.models import RunCommandRequest

    from harness.targets.azure.clients import explain

    assert config.aks
    with explain(f"run command on AKS cluster {config.aks!r}", "the identity needs "
                 "Microsoft.ContainerService/managedClusters/runcommand/action; the cluster must not disable it",
                 config):
        poller = clients.aks().managed_clusters.begin_run_command(
            config.resource_group, config.aks, RunCommandRequest(command=command))
        result = poller.result(timeout=RUN_COMMAND_TIMEOUT)
    if result.exit_code not in (0, None):
        raise HarnessError(f"run command `{command}` exited {result.exit_code}: {(result.logs or '')[:300]}")
    return str(result.logs or "")


def _via_run_command(config: AzureConfig, disc: Discovery, clients: Any) -> None:
    scope = f"-n {config.kube_namespace}" if config.kube_namespace else "-A"
    doc = json.loads(_run(config, clients, f"kubectl get ingress {scope} -o json"))

    def get_secret(ns: str, name: str) -> dict[str, Any] | None:
        data = {}
        for key in _SECRET_KEYS_KEPT:  # ask for the public keys only, one by one: tls.key is never printed
            out = _run(config, clients, f"kubectl get secret {name} -n {ns} --ignore-not-found "
                                        f"-o jsonpath='{{.data.{key.replace('.', chr(92) + '.')}}}'").strip()
            if out:
                data[key] = out
        return {"data": data} if data else None

    for ing in doc.get("items", []):
        disc.ingresses.append(ingress_facts(ing, get_secret, disc, config))


def read_cluster(config: AzureConfig, disc: Discovery, clients: Any = None) -> None:
    """Fill ``disc.ingresses`` from the API server, or via run command when only that is allowed."""
    if config.kube_host or config.kubeconfig:
        _via_api(config, disc)
    elif config.allow_run_command and config.aks:
        from harness.targets.azure.clients import AzureClients

        own = clients is None
        clients = clients or AzureClients(config)
        try:
            _via_run_command(config, disc, clients)
        finally:
            if own:
                clients.close()
    else:
        disc.notes.append("the ingress was not read: no [kubernetes] kubeconfig/host and run command not allowed")
