"""The kind target's lanes: every variant the session needs, served at once by the chain's one ingress-nginx, its
echo pod and its two Envoy containers (issue 21: variants are hosts, not restarts).

The real controller routes by host name, so a lane whose ingress differs from the chain's gets host names of its own
and a cert set issued for them (:func:`harness.render.k8s_lanes.lane_topology`): its Ingresses and Secrets are
applied beside the chain's, once, on the same controller; its path has its own listener on the gateway and apim
Envoy containers (:class:`~harness.render.envoy.EnvoyLane`, port 8443 + i, as on the containers target) and on the
echo pod (its ``--lanes``, one more port of the pod's Services). A lane that differs only on the gateway or apim
keeps the chain's host names and goes on through the chain's ingress and pod.

What cannot be a lane here is said, with why (:attr:`LanePlan.dropped`), and runs as a chain of its own
(``reconfigure``): a variant with other controller settings — ConfigMap keys, ``allow-cross-namespace-resources``,
flags such as ``--enable-ssl-passthrough`` — because one controller applies them to every Ingress it serves. A
second controller would need its own ``--ingress-class``, ``--controller-class`` and ``--election-id``
(ingress-nginx docs/user-guide/multiple-ingress.md at controller-v1.15.1) and a host port of its own on the one
node (the kind manifest binds ``hostPort: 443``, deploy/static/provider/kind/deploy.yaml): not built.

A case reaches a renamed lane by its variant (:func:`lane_key` of the variant it asked for) and its own host names:
:class:`KindLaneChain` turns the variant's hosts into the lane's — in :meth:`~KindLaneChain.on_host` and in a probe's
``server_name`` and ``http_host`` — so a case that sends another host's SNI, or a Host header of its own, probes the
lane's counterpart of that host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, UsageError
from harness.model.topology import HOPS, HopName, Topology
from harness.render.k8s import KIND_INGRESS_HOST_PORT, POD_PORT
from harness.render.k8s_lanes import MAX_POD_LANES, POD_NODE_PORT, K8sLane, lane_host, lane_topology
from harness.targets.base import ChainLimits, RunningChain, lane_key
from harness.targets.docker import HOP_PORT, ContainerChain
from harness.targets.lanes import HOME_INGRESS, Lane, LanePlan, controller_difference, own_hops
from harness.targets.local import endpoints_for

if TYPE_CHECKING:
    from harness.pki.certset import CertSet
    from harness.probe.result import ProbeResult

__all__ = ["INGRESS_NODE_PORT", "KindLane", "KindLaneChain", "kind_chain", "lane_chains", "lane_host_certificates",
           "plan_kind_lanes",
           "pod_node_port", "wait_lane_hosts"]

#: where apim reaches the ingress on the node: ingress-nginx's kind manifest runs the controller with hostPort 443
INGRESS_NODE_PORT: Final = 443

_SECOND_CONTROLLER: Final = (
    "kind runs ONE ingress-nginx controller, whose ConfigMap and flags apply to every Ingress it serves; a second "
    "controller (its own IngressClass, --controller-class, --election-id and host port: ingress-nginx "
    "docs/user-guide/multiple-ingress.md) is not built, so it runs as a chain of its own")


@dataclass
class KindLane(Lane):
    """A lane of the kind chain: ``topology`` is the lane's own (renamed) copy of ``variant``, the topology its cases
    ask for; ``renamed`` maps the variant's ingress hosts to the lane's ({} when the lane keeps the chain's ingress);
    ``slot``: its pod listener's (port :data:`POD_PORT` ``+ slot``; 0: the chain's own pod)."""

    variant: Topology | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)
    slot: int = 0

    def k8s(self) -> K8sLane:
        """What the manifests need of it (the Ingresses it serves only: :attr:`Lane.served`)."""
        return K8sLane(self.index, self.slot, self.served, self.certs)


def plan_kind_lanes(home: Topology, home_certs: CertSet, variants: Sequence[Topology], *,
                    hosts: Mapping[str, frozenset[str]] | None = None,
                    certs_for: Callable[[Any], CertSet] | None = None) -> LanePlan:
    """The kind lanes for ``variants`` beside ``home`` (duplicates and ``home`` itself left out). Lane ``i``'s
    Envoy listeners are on port :data:`HOP_PORT` ``+ i`` of the gateway and apim containers where it differs there
    or behind; a lane whose ingress differs gets its own host names (``l<i>-…``), its own cert set for them
    (``certs_for(plan)``, default :func:`~harness.pki.certset.cert_set_for`) and a pod listener of its own. ``hosts``:
    the ingress hosts each variant's cases probe (by :func:`lane_key`), renamed into :attr:`Lane.hosts`."""
    from harness.pki.certset import cert_set_for

    issue = certs_for or cert_set_for
    plan = LanePlan()
    seen = {lane_key(home)}
    slots = 0
    for variant in variants:
        key = lane_key(variant)
        if key in seen:
            continue
        seen.add(key)
        if variant.ingress.gateway_api is not None:
            plan.dropped[key] = "a Gateway API ingress: the kind target runs ingress-nginx only"
            continue
        own = own_hops(home, variant)
        index = len(plan.lanes) + 1
        topology, certs, slot = variant, home_certs, 0
        renamed: dict[str, str] = {}
        if "ingress" in own:
            diff = controller_difference(home, variant)
            if diff is not None:
                plan.dropped[key] = f"other controller settings ({diff}): {_SECOND_CONTROLLER}"
                continue
            if slots >= MAX_POD_LANES:
                plan.dropped[key] = (f"more than {MAX_POD_LANES} lanes need a pod listener of their own: the probe "
                                     "reaches each through a node port of the static band 30000-30085")
                continue
            try:
                topology, renamed = lane_topology(variant, index, slots + 1)
                certs = issue(topology.pki)
            except (HarnessError, KeyError, ValueError) as exc:
                plan.dropped[key] = f"its lane (own host names and cert set) could not be made: {exc}"
                continue
            slots += 1
            slot = slots
            own = frozenset(HOPS)  # its own cert set: its own listener on every hop
        elif variant.pki != home.pki:  # pragma: no cover - another plan changes every hop (own_hops)
            raise AssertionError("a variant with another PKI plan differs at the ingress")
        ports: dict[HopName, int] = {
            "gateway": HOP_PORT + index if "gateway" in own else HOP_PORT,
            "apim": HOP_PORT + index if "apim" in own else HOP_PORT,
            "ingress": INGRESS_NODE_PORT,
            "pod": POD_PORT + slot}
        probed = None if hosts is None or key not in hosts else frozenset(renamed.get(h, h) for h in hosts[key])
        plan.lanes.append(KindLane(index, topology, certs, ports, HOME_INGRESS, hosts=probed, own=own,
                                   variant=variant, renamed=renamed, slot=slot))
    return plan


@dataclass
class KindLaneChain(ContainerChain):
    """A lane of the kind chain, as its cases see it: its topology and cert set are the lane's own (renamed host
    names); a host of the variant the case asked for (``on_host``, a probe's ``server_name`` / ``http_host``) is
    turned into the lane's (:func:`~harness.render.k8s_lanes.lane_host`; any letter case)."""

    renamed: Mapping[str, str] = field(default_factory=dict)
    index: int = 0

    def lane_name(self, name: str) -> str:
        """The lane's name for the variant's host ``name`` (``name`` itself when it is none of the variant's)."""
        if name in self.renamed:
            return self.renamed[name]
        if name.lower() in {h.lower() for h in self.renamed}:
            return lane_host(name, self.index)
        return name

    def on_host(self, host: str | None) -> RunningChain:
        return super().on_host(None if host is None else self.lane_name(host))

    def probe(self, hop: HopName = "gateway", **overrides: Any) -> ProbeResult:
        if self.renamed:
            if isinstance(overrides.get("server_name"), str):
                overrides["server_name"] = self.lane_name(overrides["server_name"])
            if isinstance(overrides.get("http_host"), str):
                name, colon, port = overrides["http_host"].partition(":")
                overrides["http_host"] = f"{self.lane_name(name)}{colon}{port}"
        return super().probe(hop, **overrides)


def kind_chain(topology: Topology, certs: CertSet, *, target: str, gateway: tuple[str, int], apim: tuple[str, int],
               node: str, pod_node_port: int, runner: Callable[[str, int, dict[str, Any]], ProbeResult] | None,
               limits: ChainLimits, lane: KindLane | None = None) -> ContainerChain:
    """The running kind chain (or one lane of it, with ``lane``): the gateway at ``gateway`` (the chain's: its
    published 127.0.0.1 port; a lane's: its listener on the gateway container, from the probe container), apim at
    ``apim`` on kind's network, the ingress on 127.0.0.1 (kind-config's port mapping of the node's 443), the pod at
    ``node:pod_node_port``. Without a ``runner`` (no probe container) apim and the pod have no endpoint and a lane
    cannot be made."""
    ports: dict[HopName, int] = {"gateway": gateway[1], "apim": apim[1], "ingress": KIND_INGRESS_HOST_PORT,
                                 "pod": pod_node_port}
    eps = endpoints_for(topology, certs, ports)
    where: dict[HopName, str] = {"gateway": gateway[0], "apim": apim[0], "ingress": "127.0.0.1", "pod": node}
    reachable = HOPS if runner is not None else ("gateway", "ingress")
    endpoints = {hop: dataclasses.replace(eps[hop], host=where[hop]) for hop in reachable}
    if lane is None:
        return ContainerChain(target=target, topology=topology, certs=certs, endpoints=endpoints, limits=limits,
                              _runner=runner, inside=frozenset({"apim", "pod"}))
    if runner is None:
        raise UsageError("a kind lane is probed from the probe container, and none runs")
    return KindLaneChain(target=target, topology=topology, certs=certs, endpoints=endpoints, limits=limits,
                         _runner=runner, inside=frozenset({"gateway", "apim", "pod"}), renamed=lane.renamed,
                         index=lane.index)


def lane_chains(plan: LanePlan, make: Callable[[KindLane], ContainerChain]) -> dict[str, RunningChain]:
    """Every lane's chain by the key of the variant its cases ask for (:func:`lane_key`); each kept on its lane."""
    out: dict[str, RunningChain] = {}
    for lane in plan.lanes:
        assert isinstance(lane, KindLane)
        assert lane.variant is not None
        lane.chain = make(lane)
        out[lane_key(lane.variant)] = lane.chain
    return out


def lane_host_certificates(plan: LanePlan) -> dict[str, str]:
    """Every lane host the controller serves, with the SHA-256 of the certificate it serves it with once it has
    synced the host: its TLS Secret's. A host whose certificate does not cover it (RFC 6125,
    :func:`harness.pki.path.covers`) is left out: ingress-nginx serves it its default certificate, on purpose."""
    from cryptography import x509

    from harness.pki.path import covers, sans_of

    expect: dict[str, str] = {}
    for lane in plan.lanes:
        if "ingress" not in lane.own:
            continue
        for host in lane.served.ingress.hosts:
            leaf = lane.certs.leaf(lane.topology.focus_on(host).ingress.tls_leaf)
            if covers(sans_of(x509.load_pem_x509_certificate(leaf.cert.read_bytes())), host):
                expect[host] = leaf.fingerprint_sha256
    return expect


def wait_lane_hosts(plan: LanePlan, probe_ingress: Callable[[str], ProbeResult], timeout: float) -> None:
    """Wait until the controller serves every lane host (:func:`lane_host_certificates`) with its TLS Secret's
    certificate: before it has synced a host it answers with its default certificate. ``probe_ingress(host)``: a
    handshake with the ingress, SNI ``host``. A StartError names the hosts still served another certificate."""
    from harness.errors import StartError, WaitTimeout
    from harness.runtime.wait import wait_until

    expect = lane_host_certificates(plan)
    seen: dict[str, str] = {}

    def served() -> bool:
        for host in [h for h, fp in expect.items() if seen.get(h) != fp]:
            result = probe_ingress(host)
            seen[host] = result.peer_chain[0].sha256 if result.peer_chain else result.describe()
        return all(seen.get(h) == fp for h, fp in expect.items())

    if not expect:
        return
    try:
        wait_until(served, f"the ingress serving the {len(expect)} lane host(s) with their certificates",
                   timeout=timeout, interval=0.5, max_interval=2.0,
                   log_tail=lambda: ", ".join(f"{h}: {v[:16]}" for h, v in seen.items() if v != expect[h]))
    except WaitTimeout as exc:
        raise StartError(str(exc)) from None


def pod_node_port(lane: KindLane | None) -> int:
    """The node port the probe reaches a lane's pod listener on (the chain's own pod: :data:`POD_NODE_PORT`)."""
    return POD_NODE_PORT + (lane.slot if lane is not None else 0)
