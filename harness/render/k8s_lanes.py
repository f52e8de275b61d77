"""The kind target's lanes as Kubernetes objects (issue 21: variants are hosts, not restarts).

A real ingress-nginx serves hundreds of Ingresses from one controller and tells them apart by host name: the TLS
server name picks the certificate and the server block, the Host header the rules (one nginx ``server`` per host,
docs/design.md). So a lane on kind is its variant under host names of its own, applied beside the chain once:

- :func:`lane_host`/:func:`lane_topology`: the variant with every ingress host renamed (``echo.aks.contoso.example``
  → ``l3-echo.aks.contoso.example``) wherever the model names it — the Ingresses, APIM's backend host names, the
  SANs and common names of its PKI plan (so its cert set is issued for exactly those names), annotation values —
  and its Ingresses, Secrets and the references to them suffixed ``-l<i>`` (names are unique per namespace); its
  Ingresses route to the echo pod's lane listener on :data:`POD_PORT` ``+ j`` (the pod's ``--lanes``);
- :func:`render_lanes`: the chain's manifests (:func:`harness.render.k8s.render_manifests`) with every lane's
  objects beside them: the lane's Secrets and Ingresses, one more port per lane on the pod's Services, the pod's
  ``--lanes`` file (a ConfigMap) and each lane's pod certificate (a Secret), both mounted through one projected
  volume; and the probe's way to the pod (:func:`probe_service`).

The probe reaches the pod where ingress-nginx reaches it — the pod's own TLS listener: the controller proxies to the
pod addresses of a Service's endpoints, not to its cluster IP (ingress-nginx docs/user-guide/nginx-configuration/
annotations.md "Service Upstream", at controller-v1.15.1), and a container on kind's docker network reaches a pod
through a ``NodePort`` Service: every node forwards that port to the Service's pods, at TCP level
(https://kubernetes.io/docs/concepts/services-networking/service/#type-nodeport), so the TLS session is still the
pod's. The node ports are fixed in the lower "static" band of the default range 30000-32767 (30000-30085), which the
API server keeps for ports chosen by hand and leaves to automatic allocation last (Kubernetes 1.27 blog "Avoid
Collisions Assigning Ports to NodePort Services", KEP-3668; the ingress-nginx kind manifest's LoadBalancer Service
takes its node ports automatically). Hence at most :data:`MAX_POD_LANES` lanes with a pod listener of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from harness.errors import UsageError
from harness.model.topology import K8sSecret, Topology
from harness.render.k8s import (
    _NAME_LABEL,
    POD_PORT,
    POD_TLS_SECRET,
    _check_model,
    _check_unique,
    _ingress,
    _meta,
    _namespace,
    _namespaces,
    _secret,
)

if TYPE_CHECKING:
    from harness.pki.certset import CertSet

__all__ = [
    "LANES_DIR",
    "MAX_POD_LANES",
    "POD_NODE_PORT",
    "K8sLane",
    "lane_host",
    "lane_topology",
    "pod_lane_spec",
    "probe_service",
    "rename_hosts",
    "render_lanes",
]

T = TypeVar("T")

#: the home pod's node port on the probe's Service; lane slot ``j`` is this + ``j``
POD_NODE_PORT: Final = 30000
#: the static band of the default node port range 30000-32767: 30000-30085 (band offset min(max(16, 2768/32), 128))
NODE_PORT_STATIC_BAND: Final = 86
#: lanes with a pod listener of their own one kind chain can serve (one static node port each, the home pod's too)
MAX_POD_LANES: Final = NODE_PORT_STATIC_BAND - 1
#: where the pod's lanes volume is mounted: ``lanes.json`` (its ``--lanes`` file) and ``l<i>/{tls.crt,tls.key,ca.crt}``
LANES_DIR: Final = "/lanes"
#: the annotation keys whose value names a Secret (``ns/name`` or ``name``)
_SECRET_REFS: Final = ("auth-tls-secret", "proxy-ssl-secret")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class K8sLane:
    """One lane as the manifests need it: its index (``-l<i>``), its pod slot (port :data:`POD_PORT` ``+ slot``,
    node port :data:`POD_NODE_PORT` ``+ slot``), its renamed topology (:func:`lane_topology`, with only the Ingresses
    it serves) and its cert set."""

    index: int
    slot: int
    topology: Topology
    certs: CertSet

    @property
    def pod_port(self) -> int:
        return POD_PORT + self.slot

    @property
    def node_port(self) -> int:
        return POD_NODE_PORT + self.slot


def lane_host(host: str, index: int) -> str:
    """Lane ``index``'s name for ``host``: its first label (after a wildcard's ``*.``) prefixed ``l<index>-``, so the
    name stays in the same parent domain (``echo.aks.contoso.example`` → ``l3-echo.aks.contoso.example``,
    ``*.apps.example`` → ``*.l3-apps.example``). Works on any letter case (a probe's SNI keeps its own)."""
    star = "*." if host.startswith("*.") else ""
    first, dot, rest = host.removeprefix(star).partition(".")
    label = f"l{index}-{first}"
    if not _DNS_LABEL.match(label.lower()):
        raise UsageError(f"host {host!r} cannot get a lane name: {label!r} is not a DNS label (at most 63 letters, "
                         "digits and '-') — shorten its first label")
    return f"{star}{label}{dot}{rest}"


def _rename_dn(dn: str, mapping: Mapping[str, str]) -> str:
    for old, new in mapping.items():
        dn = re.sub(rf"(^|[,+])CN={re.escape(old)}(?=$|[,+])", rf"\g<1>CN={new}", dn)
    return dn


def _walk(value: T, mapping: Mapping[str, str], name: str = "") -> T:
    if isinstance(value, str):
        if name == "subject":
            return _rename_dn(value, mapping)  # type: ignore[return-value]
        return mapping.get(value, value)  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(_walk(v, mapping) for v in value)  # type: ignore[return-value]
    if isinstance(value, MappingProxyType):
        return MappingProxyType({k: _walk(v, mapping) for k, v in value.items()})  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _walk(getattr(value, f.name), mapping, f.name) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes)
    return value


def rename_hosts(topology: Topology, mapping: Mapping[str, str]) -> Topology:
    """``topology`` with every string that IS one of ``mapping``'s host names replaced, wherever the model holds it
    (Ingress hosts, APIM's backends, leaf SANs and common names, annotation values, listener and upstream names), and
    ``CN=<host>`` in a copied subject DN. A string that merely contains a host name is left alone."""
    return _walk(topology, mapping)


def _ref(ref: str | None, suffix: str) -> str | None:
    if not ref:
        return ref
    ns, slash, name = ref.rpartition("/")
    return f"{ns}{slash}{name}{suffix}"


def _suffixed_secret(secret: K8sSecret, suffix: str) -> K8sSecret:
    last = _suffixed_secret(secret.last_good, suffix) if secret.last_good is not None else None
    return dataclasses.replace(secret, name=secret.name + suffix, last_good=last)


def lane_topology(variant: Topology, index: int, slot: int) -> tuple[Topology, dict[str, str]]:
    """Lane ``index``'s own copy of ``variant`` for kind, and its host map (the variant's ingress host → the lane's):
    every ingress host renamed (:func:`lane_host`, :func:`rename_hosts`), every Ingress and Secret name suffixed
    ``-l<index>`` (with the Ingresses' TLS and annotation references to them), every Ingress routed to the pod's
    lane listener ``POD_PORT + slot``. A UsageError when a name cannot be made."""
    mapping = {host: lane_host(host, index) for host in variant.ingress.hosts}
    t = rename_hosts(variant, mapping)
    suffix = f"-l{index}"
    hop = t.ingress
    ingresses = []
    for ing in hop.ingresses:
        refs = {key: _ref(ing.annotation(key), suffix) for key in _SECRET_REFS if ing.annotation(key)}
        ingresses.append(dataclasses.replace(ing.with_annotations(**refs), name=ing.name + suffix,
                                             tls_secret=ing.tls_secret + suffix, service_port=POD_PORT + slot))
    secrets = tuple(_suffixed_secret(s, suffix) for s in hop.secrets)
    return t.replace(ingress=dataclasses.replace(hop, ingresses=tuple(ingresses), secrets=secrets)), mapping


def _lane_pod_secret(lane: K8sLane) -> K8sSecret:
    listener = lane.topology.pod.listener
    ca = (listener.client_ca,) if listener.client_ca is not None else ()
    return K8sSecret(f"{POD_TLS_SECRET}-l{lane.index}", lane.topology.pod.namespace, tls=listener.server_cert, ca=ca)


def pod_lane_spec(lane: K8sLane) -> dict[str, Any]:
    """The lane's entry in the echo pod's ``--lanes`` file: its listener, with the files of its Secret as the
    projected volume mounts them under :data:`LANES_DIR`."""
    listener = lane.topology.pod.listener
    where = f"{LANES_DIR}/l{lane.index}"
    return {"listen": f"0.0.0.0:{lane.pod_port}", "cert": f"{where}/tls.crt", "key": f"{where}/tls.key",
            "client_ca": f"{where}/ca.crt" if listener.client_ca else None, "client_auth": listener.client_auth,
            "min_version": listener.min_version, "max_version": listener.max_version}


def probe_service(topology: Topology, lanes: Sequence[K8sLane] = ()) -> dict[str, Any]:
    """The ``<pod>-probe`` NodePort Service: the pod's own listener on node port :data:`POD_NODE_PORT`, each lane's
    on its own, for the probe container on kind's network (the ingress's Services stay ClusterIP)."""
    pod = topology.pod
    ports = [{"name": "https", "port": POD_PORT, "targetPort": "https", "nodePort": POD_NODE_PORT, "protocol": "TCP"}]
    ports += [{"name": f"lane-{lane.slot}", "port": lane.pod_port, "targetPort": lane.pod_port,
               "nodePort": lane.node_port, "protocol": "TCP"} for lane in lanes]
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(f"{pod.name}-probe", pod.namespace),
            "spec": {"type": "NodePort", "selector": {_NAME_LABEL: pod.name}, "ports": ports}}


def _lane_objects(lane: K8sLane) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The lane's pod Secret (first) and its Ingresses' Secrets and Ingresses."""
    _check_model(lane.topology)
    pod_secret = _lane_pod_secret(lane)
    secrets = [s for s in lane.topology.ingress.secrets if s.ref != pod_secret.ref]
    return ([_secret(pod_secret, lane.certs)],
            [_secret(s, lane.certs) for s in secrets]
            + [_ingress(ing) for ing in lane.topology.ingress.in_controller_order()])


def render_lanes(home_docs: Sequence[dict[str, Any]], home: Topology,
                 lanes: Sequence[K8sLane]) -> tuple[list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """The chain's documents (``home_docs``: the controller ConfigMap and :func:`render_manifests`' objects) with
    what its lanes share with it — every Namespace, the pod's lane Secrets and ``--lanes`` ConfigMap (before the
    Deployment, which mounts them), one port per lane on the pod's Services, the probe's NodePort Service — and
    each lane's own documents by index (its Ingresses' Secrets and its Ingresses: a refused one drops only that
    lane). A UsageError for a model Kubernetes would refuse or two objects of one name."""
    docs = [json.loads(json.dumps(d)) for d in home_docs]  # a deep copy: the caller's stay as they were
    own: dict[int, list[dict[str, Any]]] = {}
    shared: list[dict[str, Any]] = []
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    extra_ns: list[dict[str, Any]] = []
    for lane in lanes:
        pod_secret, objects = _lane_objects(lane)
        shared += pod_secret
        own[lane.index] = objects
        for ns in _namespaces(lane.topology):
            if ns not in namespaces:
                namespaces.add(ns)
                extra_ns.append(_namespace(ns))
    pod = home.pod
    if lanes:
        specs = [pod_lane_spec(lane) for lane in lanes]
        shared.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{pod.name}-lanes", pod.namespace),
                       "data": {"lanes.json": json.dumps(specs, indent=1)}})
    def backends(lane: K8sLane) -> set[tuple[str, str]]:
        return {(ing.service, ing.namespace) for ing in lane.topology.ingress.ingresses}

    for doc in docs:
        if doc["kind"] == "Deployment" and lanes:
            _mount_lanes(doc, pod.name, lanes)
        elif doc["kind"] == "Service":
            here = (doc["metadata"]["name"], doc["metadata"]["namespace"])
            doc["spec"]["ports"] += [{"name": f"lane-{lane.slot}", "port": lane.pod_port, "targetPort": lane.pod_port,
                                      "protocol": "TCP", "appProtocol": "https"} for lane in lanes
                                     if here in backends(lane)]
    missing = set().union(*(backends(lane) for lane in lanes)) - {
        (d["metadata"]["name"], d["metadata"]["namespace"]) for d in docs if d["kind"] == "Service"}
    if missing:
        name, ns = sorted(missing)[0]
        raise UsageError(f"a lane's Ingress routes to Service {ns}/{name}, which the chain's own Ingresses do not use "
                         "— the kind lanes add ports to the chain's Services only")
    first = next((i for i, d in enumerate(docs) if d["kind"] not in ("Namespace", "ConfigMap")), len(docs))
    out = [*extra_ns, *docs[:first], *shared, *docs[first:], probe_service(home, lanes)]
    _check_unique([*out, *(d for objects in own.values() for d in objects)])
    return out, own


def _mount_lanes(deployment: dict[str, Any], pod_name: str, lanes: Sequence[K8sLane]) -> None:
    """The pod's ``--lanes`` file and every lane's certificate files, through one projected volume at
    :data:`LANES_DIR`; an annotation over the lanes' public material rolls the pod when one changes."""
    template = deployment["spec"]["template"]
    container = template["spec"]["containers"][0]
    container["args"] += ["--lanes", f"{LANES_DIR}/lanes.json"]
    container["volumeMounts"].append({"name": "lanes", "mountPath": LANES_DIR, "readOnly": True})
    sources: list[dict[str, Any]] = [{"configMap": {"name": f"{pod_name}-lanes",
                                                    "items": [{"key": "lanes.json", "path": "lanes.json"}]}}]
    digest = hashlib.sha256()
    for lane in lanes:
        secret = _lane_pod_secret(lane)
        keys = ["tls.crt", "tls.key"] + (["ca.crt"] if secret.ca else [])
        sources.append({"secret": {"name": secret.name, "items": [{"key": k, "path": f"l{lane.index}/{k}"}
                                                                 for k in keys]}})
        digest.update(lane.certs.leaf(secret.tls or "").chain.read_bytes())
        if secret.ca:
            digest.update(lane.certs.trust_bundle(*secret.ca).read_bytes())
        digest.update(json.dumps(pod_lane_spec(lane), sort_keys=True).encode())
    template["spec"]["volumes"].append({"name": "lanes", "projected": {"sources": sources, "defaultMode": 0o440}})
    template["metadata"]["annotations"]["mtls-harness/lanes-sha256"] = digest.hexdigest()
