"""Kubernetes manifests for the ingress and pod hops: the ``kind`` target's workload and the AKS expectation.

One rendering of :mod:`harness.model.topology` (DESIGN.md, "One model, many renderings"):

- a ``Namespace`` for every non-built-in namespace the model uses;
- a ``Secret`` per :class:`~harness.model.topology.K8sSecret` in ``topology.ingress.secrets`` — ``kubernetes.io/tls``
with
  ``tls.crt`` (leaf + intermediates) and ``tls.key`` when it carries a leaf, ``Opaque`` otherwise; ``ca.crt`` holds
  the roots of its CAs (or, for ``malformed_ca``, PEM armour around bytes that are not a certificate) and ``ca.crl``
  the CRLs of one CA and those above it — the keys ingress-nginx reads for ``auth-tls-secret`` and ``proxy-ssl-secret``;
- the echo pod as a ``Deployment`` running ``python -m harness.pod.echo`` with the :data:`POD_TLS_SECRET` Secret
  mounted as files — that Secret follows ``topology.pod.listener`` (its leaf and client CA), superseding an entry of
  the same name in ``topology.ingress.secrets`` — and a ``Service`` per backend name the Ingresses use;
- every :class:`~harness.model.topology.Ingress` with ``ingressClassName: nginx``, its TLS host and secret and the FULL
  annotations (:meth:`~harness.model.topology.Ingress.full_annotations`).

:func:`validate_manifests` checks documents offline against the Kubernetes OpenAPI schemas that kubernetes-validate
ships (strict: unknown fields are errors). Secret data is base64 of PEM, private keys included: nothing here logs or
prints it, and validation errors about a Secret never quote its values.

The pinned ingress-nginx is the project's last release (it was retired upstream in March 2026); the ``kind`` target
downloads :func:`ingress_nginx_manifest_url` and must pass the bytes to :func:`verify_ingress_nginx_manifest` before
applying them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from harness.errors import InputError, UsageError, need_extra
from harness.model.controller import CONTROLLER_DEFAULTS
from harness.model.topology import Ingress, K8sSecret, Topology

if TYPE_CHECKING:
    from harness.pki.certset import CertSet

__all__ = [
    "BUILTIN_NAMESPACES",
    "ECHO_IMAGE",
    "INGRESS_NGINX_SHA256",
    "INGRESS_NGINX_SHA256_ENV",
    "INGRESS_NGINX_VERSION",
    "K8S_VERSION",
    "KIND_INGRESS_HOST_PORT",
    "MALFORMED_CA_PEM",
    "POD_PORT",
    "POD_TLS_DIR",
    "POD_TLS_SECRET",
    "dump_manifests",
    "ingress_nginx_manifest_url",
    "render_controller_args",
    "render_controller_config",
    "render_manifests",
    "validate_manifests",
    "verify_ingress_nginx_manifest",
]

#: Kubernetes minor the manifests target: the newest minor the pinned ingress-nginx supports (its README: v1.15.1 →
#: 1.31–1.35) with a node image built for kind v0.33.0 (kindest/node:v1.35.8, pinned in kind-config/). kind v0.33.0's
#: *default* node image is v1.37.0, which ingress-nginx was never tested on.
K8S_VERSION = "1.35"

#: the last ingress-nginx controller release (tag ``controller-v1.15.1``, 2026-03-19); the project is retired
INGRESS_NGINX_VERSION = "1.15.1"

#: sha256 of the kind provider ``deploy.yaml`` of :data:`INGRESS_NGINX_VERSION` (16634 bytes). Computed offline from
#: the git blob at tag controller-v1.15.1 (commit 0a5901f3c64f) — the bytes raw.githubusercontent.com serves for that
#: tag — and not yet checked against a live download: kind-config/README.md says how to verify or update it.
INGRESS_NGINX_SHA256 = "2a3ae008c8786431115502644e77ab398fdebfb721a5d1195ed3089cde3299df"

#: environment variable that overrides :data:`INGRESS_NGINX_SHA256` (for a user who pins another release)
INGRESS_NGINX_SHA256_ENV = "MTLS_HARNESS_INGRESS_NGINX_SHA256"

#: the image with the harness installed (the echo pod runs ``python -m harness.pod.echo`` from it); ``kind load
#: docker-image`` puts it on the node, hence ``imagePullPolicy: IfNotPresent``
ECHO_IMAGE = "mtls-harness:dev"

#: where the echo pod listens in its container; the Service's ``targetPort: https`` points here
POD_PORT = 8443

#: the Secret (in the pod's namespace) the echo pod's cert, key and client CA are mounted from
POD_TLS_SECRET = "echo-tls"

#: where that Secret is mounted in the pod
POD_TLS_DIR = "/tls"

#: host port (on 127.0.0.1) that kind-config/*.yaml map to the node's 443, where ingress-nginx's kind provider
#: listens with ``hostPort: 443``; unprivileged, so rootless Docker/Podman can bind it
KIND_INGRESS_HOST_PORT = 18443

#: what ``malformed_ca`` puts in ``ca.crt``: PEM armour around base64 of a sentence, not DER — ingress-nginx cannot
#: parse it and fails closed (the host answers 403)
MALFORMED_CA_PEM = (
    b"-----BEGIN CERTIFICATE-----\n"
    + base64.b64encode(b"this is not a certificate (mtls-harness malformed_ca)")
    + b"\n-----END CERTIFICATE-----\n"
)

#: namespaces every cluster already has; no Namespace object is rendered for them
BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

# the harness's own labels (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/)
_MANAGED = {"app.kubernetes.io/part-of": "mtls-harness", "app.kubernetes.io/managed-by": "mtls-harness"}
_NAME_LABEL = "app.kubernetes.io/name"
_INGRESS_CLASS = "nginx"  # the IngressClass ingress-nginx's deploy.yaml creates
_POD_UID = 65532  # any non-root uid; the image need not define it (runAsUser sets it)

# name rules the API server enforces (kubernetes.io/docs/concepts/overview/working-with-objects/names/) but the
# OpenAPI schemas do not, so kubernetes-validate would pass a name kubectl then refuses
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?$")
_RELEASE = re.compile(r"^(?:controller-)?v?(\d+\.\d+\.\d+)$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------
def render_manifests(
    topology: Topology,
    certs: CertSet,
    *,
    echo_image: str = ECHO_IMAGE,
    k8s_version: str = K8S_VERSION,
) -> list[dict[str, Any]]:
    """The ingress and pod hops as Kubernetes objects: Namespaces, Secrets, Deployment, Service(s), Ingress(es).

    Raises :class:`~harness.errors.UsageError` for a model Kubernetes would refuse or that cannot work (a bad name,
    an Ingress whose backend is not the echo pod, a duplicate object) and :class:`~harness.errors.InputError` for a
    cert file that cannot be read.
    """
    _check_version(k8s_version, need_schemas=False)
    if not echo_image or any(c.isspace() for c in echo_image):
        raise UsageError(f"echo image {echo_image!r} is not an image reference — pass e.g. {ECHO_IMAGE!r}")
    _check_model(topology)
    pod_secret = _pod_secret(topology)
    secrets = [pod_secret if s.ref == pod_secret.ref else s for s in topology.ingress.secrets]
    if pod_secret not in secrets:
        secrets.append(pod_secret)
    docs: list[dict[str, Any]] = [_namespace(ns) for ns in _namespaces(topology)]
    docs += [_secret(s, certs) for s in secrets]
    docs.append(_deployment(topology, pod_secret, certs, echo_image))
    docs += _services(topology)
    docs += [_ingress(ing) for ing in topology.ingress.in_controller_order()]  # oldest first, as created
    _check_unique(docs)
    return docs


def _meta(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {**_MANAGED, **labels}
    return meta


def _namespaces(topology: Topology) -> list[str]:
    used = {s.namespace for s in topology.ingress.secrets}
    used |= {i.namespace for i in topology.ingress.ingresses}
    used.add(topology.pod.namespace)
    return sorted(used - BUILTIN_NAMESPACES)


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name)}


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read {what} ({exc.strerror or exc})", "regenerate the cert set") from None


def _lookup(what: str, getter: Any, name: str | tuple[str, ...]) -> Any:
    """Call a cert-set accessor, turning an unknown name into one UsageError."""
    try:
        return getter(*name) if isinstance(name, tuple) else getter(name)
    except (KeyError, LookupError) as exc:
        raise UsageError(f"the cert set has no {what} {name!r} ({exc}) — add it to the topology's PKI plan") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _secret_data(secret: K8sSecret, certs: CertSet) -> dict[str, bytes]:
    data: dict[str, bytes] = {}
    if secret.tls is not None:
        leaf = _lookup("leaf", certs.leaf, secret.tls)
        data["tls.crt"] = _read(leaf.chain, f"the chain of leaf {secret.tls!r}")
        data["tls.key"] = _read(leaf.key, f"the key of leaf {secret.tls!r}")
    if secret.malformed_ca:
        data["ca.crt"] = MALFORMED_CA_PEM
    elif secret.ca:
        data["ca.crt"] = _read(_lookup("CA", certs.trust_bundle, secret.ca), f"the trust bundle of {secret.ca}")
    if secret.crl is not None:
        data["ca.crl"] = _lookup("CA", certs.crl_chain, secret.crl)  # the CA's CRL and those above it
    if not data:
        raise UsageError(
            f"Secret {secret.ref} has no content (no tls, ca, crl or malformed_ca) — give it at least one, or drop it"
        )
    return data


def _secret(secret: K8sSecret, certs: CertSet) -> dict[str, Any]:
    data = _secret_data(secret, certs)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(secret.name, secret.namespace),
        "type": "kubernetes.io/tls" if secret.tls is not None else "Opaque",
        "data": {k: _b64(v) for k, v in data.items()},
    }


def _pod_secret(topology: Topology) -> K8sSecret:
    """The echo pod's Secret, from the pod's listener: the leaf it serves and the CA it verifies clients with.

    The listener is the model's word on the pod (the local target's pod and every pod variant read it), so a
    ``topology.ingress.secrets`` entry with this Secret's name and namespace is superseded by this one.
    """
    listener = topology.pod.listener
    ca = (listener.client_ca,) if listener.client_ca is not None else ()
    return K8sSecret(POD_TLS_SECRET, topology.pod.namespace, tls=listener.server_cert, ca=ca)


def _deployment(topology: Topology, secret: K8sSecret, certs: CertSet, image: str) -> dict[str, Any]:
    pod, listener = topology.pod, topology.pod.listener
    args = [
        "--listen", f"0.0.0.0:{POD_PORT}",
        "--cert", f"{POD_TLS_DIR}/tls.crt",
        "--key", f"{POD_TLS_DIR}/tls.key",
        "--client-auth", listener.client_auth,
        "--min-version", listener.min_version,
        "--max-version", listener.max_version,
    ]  # fmt: skip
    if secret.ca:
        args += ["--client-ca", f"{POD_TLS_DIR}/ca.crt"]
    probe: dict[str, Any]
    if listener.client_auth == "required":  # the kubelet presents no client cert: an HTTPS probe would be refused
        probe = {"tcpSocket": {"port": "https"}}
    else:  # the kubelet's HTTPS probe skips server-cert verification
        probe = {"httpGet": {"scheme": "HTTPS", "path": "/", "port": "https"}}
    probe |= {"periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 2}
    # over public material only: a new cert or client CA rolls the pod (the echo server reads its files at start)
    public = _read(_lookup("leaf", certs.leaf, listener.server_cert).chain, "the pod's chain")
    if secret.ca:
        public += _read(_lookup("CA", certs.trust_bundle, secret.ca), "the pod's client CA")
    digest = hashlib.sha256(public).hexdigest()
    labels = {_NAME_LABEL: pod.name}
    container = {
        "name": "echo",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "harness.pod.echo"],
        "args": args,
        "ports": [{"name": "https", "containerPort": POD_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "volumeMounts": [{"name": "tls", "mountPath": POD_TLS_DIR, "readOnly": True}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(pod.name, pod.namespace, **labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {
                    "labels": {**_MANAGED, **labels},
                    "annotations": {"mtls-harness/public-certs-sha256": digest},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": _POD_UID,
                        "runAsGroup": _POD_UID,
                        "fsGroup": _POD_UID,  # the Secret's files are group-readable by the pod's user
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [{"name": "tls", "secret": {"secretName": secret.name, "defaultMode": 0o440}}],
                },
            },
        },
    }


def _services(topology: Topology) -> list[dict[str, Any]]:
    """One Service per backend name the Ingresses use, each selecting the echo pod."""
    ports: dict[str, list[int]] = {}
    for ing in topology.ingress.ingresses:
        ports.setdefault(ing.service, [])
        if ing.service_port not in ports[ing.service]:
            ports[ing.service].append(ing.service_port)
    pod = topology.pod
    docs = []
    for name, numbers in ports.items():
        entries = [
            {
                "name": "https" if i == 0 else f"https-{n}",
                "port": n,
                "targetPort": "https",
                "protocol": "TCP",
                "appProtocol": "https",
            }
            for i, n in enumerate(numbers)
        ]
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(name, pod.namespace),
                "spec": {"type": "ClusterIP", "selector": {_NAME_LABEL: pod.name}, "ports": entries},
            }
        )
    return docs


def _ingress(ing: Ingress) -> dict[str, Any]:
    meta = _meta(ing.name, ing.namespace)
    meta["annotations"] = ing.full_annotations()
    if ing.creation_timestamp:  # the API server sets its own on create; apply order keeps the model's order
        meta["creationTimestamp"] = ing.creation_timestamp
    backend = {"service": {"name": ing.service, "port": {"number": ing.service_port}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "ingressClassName": _INGRESS_CLASS,
            "tls": [{"hosts": [ing.host], "secretName": ing.tls_secret}],
            "rules": [
                {
                    "host": ing.host,
                    "http": {"paths": [{"path": ing.path, "pathType": ing.path_type, "backend": backend}]},
                }
            ],
        },
    }


def render_controller_config(topology: Topology) -> dict[str, Any]:
    """The ingress-nginx controller's ConfigMap with the settings the model holds, to apply after its deploy.yaml.

    The kind provider's deploy.yaml runs the controller with ``--configmap=$(POD_NAMESPACE)/ingress-nginx-controller``
    in namespace ``ingress-nginx`` and ships that ConfigMap empty; every key is written here explicitly (the
    controller's default for ``allow-cross-namespace-resources`` is "false"), so a reused cluster holds no leftovers.
    """
    flag = "true" if topology.ingress.allow_cross_namespace_resources else "false"
    ctl = topology.ingress.controller
    # every modelled key, the chain's value or the controller's default: the same values render_nginx renders
    data = {"allow-cross-namespace-resources": flag, **{key: ctl.get(key) for key in CONTROLLER_DEFAULTS}}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("ingress-nginx-controller", "ingress-nginx"),
        "data": data,
    }


def render_controller_args(topology: Topology) -> list[str]:
    """The controller flags the chain sets, to append to the kind deploy.yaml's controller container ``args``
    (that manifest has no ``--enable-ssl-passthrough``: deploy/static/provider/kind/deploy.yaml 425-434)."""
    return ["--enable-ssl-passthrough"] if topology.ingress.controller.enable_ssl_passthrough else []


# ---------------------------------------------------------------------------------------------------------------
# Model checks: what the API server or the chain would refuse, said before anything is applied
# ---------------------------------------------------------------------------------------------------------------
def _name_ok(kind: str, name: str, rule: re.Pattern[str], rule_name: str) -> None:
    if not isinstance(name, str) or not rule.match(name):
        raise UsageError(
            f"{kind} name {name!r} is not a valid {rule_name} (lowercase letters, digits and '-', at most 63 "
            "characters per label, starting and ending with a letter or digit) — rename it"
        )


def _check_model(topology: Topology) -> None:
    pod = topology.pod
    _name_ok("namespace", pod.namespace, _DNS1123_LABEL, "RFC 1123 label")
    _name_ok("Deployment", pod.name, _DNS1123_SUBDOMAIN, "RFC 1123 subdomain")
    _name_ok("label value", pod.name, _DNS1123_LABEL, "RFC 1123 label")
    for s in topology.ingress.secrets:
        _name_ok("namespace", s.namespace, _DNS1123_LABEL, "RFC 1123 label")
        _name_ok("Secret", s.name, _DNS1123_SUBDOMAIN, "RFC 1123 subdomain")
    if not topology.ingress.ingresses:
        raise UsageError("topology.ingress has no Ingress — add one (the default topology has 'echo')")
    for ing in topology.ingress.ingresses:
        _name_ok("namespace", ing.namespace, _DNS1123_LABEL, "RFC 1123 label")
        _name_ok("Ingress", ing.name, _DNS1123_SUBDOMAIN, "RFC 1123 subdomain")
        _name_ok("Service", ing.service, _DNS1035_LABEL, "RFC 1035 label")
        _name_ok("Ingress TLS secret", ing.tls_secret, _DNS1123_SUBDOMAIN, "RFC 1123 subdomain")
        host = ing.host.removeprefix("*.")
        if not _DNS1123_SUBDOMAIN.match(host) or re.fullmatch(r"[\d.]+", host):
            raise UsageError(f"Ingress {ing.name} host {ing.host!r} is not a DNS name (an IP is not allowed) — fix it")
        if not ing.path.startswith("/"):
            raise UsageError(f"Ingress {ing.name} path {ing.path!r} does not start with '/' — use e.g. '/'")
        if not 1 <= ing.service_port <= 65535:
            raise UsageError(f"Ingress {ing.name} service port {ing.service_port} is outside 1-65535 — fix it")
        if ing.namespace != pod.namespace:
            raise UsageError(
                f"Ingress {ing.namespace}/{ing.name} routes to Service {ing.service!r} in its own namespace, but the "
                f"echo pod runs in {pod.namespace!r} — put both in one namespace"
            )


def _check_unique(docs: Iterable[dict[str, Any]]) -> None:
    seen: set[tuple[str, str, str]] = set()
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        if key in seen:
            raise UsageError(
                f"two {key[0]} objects named {key[1]}/{key[2]} — kubectl apply would merge them; rename one"
            )
        seen.add(key)


# ---------------------------------------------------------------------------------------------------------------
# YAML and offline validation
# ---------------------------------------------------------------------------------------------------------------
def dump_manifests(docs: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML for ``kubectl apply -f -``. It holds private keys: write it to a 0600 file, never log it."""
    return yaml.safe_dump_all(list(docs), sort_keys=False, explicit_start=True, default_flow_style=False)


def _supported_versions() -> list[str]:
    need_extra("kind", "validating Kubernetes manifests")
    from kubernetes_validate.utils import all_versions

    minors = {".".join(v.split(".")[:2]) for v in all_versions()}
    return sorted(minors, key=lambda v: tuple(int(p) for p in v.split(".")))


def _check_version(version: str, *, need_schemas: bool = True) -> str:
    """``1.35`` for ``1.35``, ``v1.35`` or ``1.35.8`` if kubernetes-validate has schemas for it; else a UsageError.
    Without ``need_schemas`` (rendering, not validating) only the form is checked when the kind extra is missing."""
    m = _VERSION.match(version) if isinstance(version, str) else None
    minor = f"{m.group(1)}.{m.group(2)}" if m else None
    if not need_schemas and minor is not None and importlib.util.find_spec("kubernetes_validate") is None:
        return minor
    supported = _supported_versions()
    if minor is None or minor not in supported:
        raise UsageError(
            f"Kubernetes version {version!r} is not one kubernetes-validate has schemas for — use a minor version "
            f"from {supported[0]} to {supported[-1]} (e.g. {K8S_VERSION!r})"
        )
    return minor


def _describe(doc: Any, index: int) -> str:
    if not isinstance(doc, dict):
        return f"document {index}"
    meta: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
    ns = meta.get("namespace")
    name = meta.get("name", "<no name>")
    return f"{doc.get('kind', '<no kind>')}/{ns + '/' if ns else ''}{name}"


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def _problem(err: Any, secret: bool) -> str:
    """The validation error's message; for a Secret, one that names fields but never quotes a value."""
    where = _path(err.absolute_path)
    if not secret:
        return f"{where}: {err.message}"
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = set(err.schema.get("properties", {}))
        extra = sorted(str(k) for k in err.instance if k not in allowed)
        return f"{where}: unknown field(s) {extra}"
    return f"{where}: fails the schema's {err.validator!r} rule ({err.validator_value!r}); value not shown"


def validate_manifests(docs: Sequence[Any], k8s_version: str = K8S_VERSION) -> list[str]:
    """Check every document against Kubernetes ``k8s_version``'s OpenAPI schemas, offline and strict.

    Returns one line per invalid document (``Kind/namespace/name: path: problem``); an empty list means all pass.
    """
    need_extra("kind", "validating Kubernetes manifests")
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    version = _check_version(k8s_version)
    errors: list[str] = []
    for i, doc in enumerate(docs):
        what = _describe(doc, i)
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            errors.append(f"{what}: not a Kubernetes object (needs apiVersion and kind)")
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as err:
            errors.append(f"{what}: {_problem(err, secret=doc.get('kind') == 'Secret')}")
        except SchemaNotFoundError:
            errors.append(f"{what}: Kubernetes {version} has no kind {doc['kind']!r} in {doc['apiVersion']!r}")
    return errors


# ---------------------------------------------------------------------------------------------------------------
# The pinned ingress-nginx
# ---------------------------------------------------------------------------------------------------------------
def _release(version: str) -> str:
    m = _RELEASE.match(version) if isinstance(version, str) else None
    if m is None:
        raise UsageError(
            f"ingress-nginx version {version!r} is not a release number — use e.g. {INGRESS_NGINX_VERSION!r}"
        )
    return m.group(1)


def ingress_nginx_manifest_url(version: str = INGRESS_NGINX_VERSION) -> str:
    """The kind provider manifest of an ingress-nginx controller release (``1.15.1``, ``v1.15.1`` or the tag)."""
    return (
        "https://raw.githubusercontent.com/kubernetes/ingress-nginx/"
        f"controller-v{_release(version)}/deploy/static/provider/kind/deploy.yaml"
    )


def verify_ingress_nginx_manifest(data: bytes, sha256: str | None = None, *, version: str = "") -> None:
    """Refuse a downloaded ingress-nginx manifest unless its sha256 equals the pin.

    The pin is ``sha256`` if given, else ``$MTLS_HARNESS_INGRESS_NGINX_SHA256``, else :data:`INGRESS_NGINX_SHA256`.
    A missing or malformed pin is an error too: an unverified manifest is never applied.
    """
    release = version or INGRESS_NGINX_VERSION
    url = ingress_nginx_manifest_url(release)
    how = f"see kind-config/README.md ('Updating the ingress-nginx pin'), or set ${INGRESS_NGINX_SHA256_ENV}"
    pin = sha256 if sha256 is not None else os.environ.get(INGRESS_NGINX_SHA256_ENV, "")
    if not pin:
        if _release(release) != INGRESS_NGINX_VERSION:
            raise UsageError(
                f"no sha256 pin for ingress-nginx {release} (the built-in pin is for {INGRESS_NGINX_VERSION}) — {how}"
            )
        pin = INGRESS_NGINX_SHA256
    pin = pin.strip().lower()
    if not _SHA256_HEX.match(pin):
        raise UsageError(f"no valid sha256 pin for ingress-nginx {release} ({url}): got {pin!r} — {how}")
    seen = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(seen, pin):
        raise UsageError(
            f"ingress-nginx {release} manifest from {url} has sha256 {seen}, the pin is {pin} — the download "
            f"changed or the pin is for another release; check the file, then update the pin ({how})"
        )
