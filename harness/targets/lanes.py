"""Lanes: every variant of the chain at once, on the chain's own processes (issue 21: variants are hosts, not restarts).

A real cluster runs hundreds of Ingresses on one controller. A lane is one variant topology served beside the chain
itself: its own port on every hop — an Envoy listener with its own clusters on the gateway and on apim, an nginx
``server`` block set with its own balancer on the ingress, one more listener of the pod — so a case on a variant
probes its lane, and nothing reloads or restarts. Each lane has its own TLS contexts (listener, cluster, session cache
zone, pod context): no session state passes between variants.

Only what is global to a process needs a process of its own. For the ingress that is the controller's settings: its
ConfigMap keys and flags (``--enable-ssl-passthrough`` among them), the ``http {}`` block of nginx.conf.
:func:`plan_lanes` puts each lane's ingress in the nginx process whose settings it shares and says why any other
process exists; a lane with ssl-passthrough gets its own SNI router (a ``stream`` server) on its own port there.
The Envoy stand-ins and the pod have no such setting: every lane shares them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from harness.errors import HarnessError, LaneRefused, UsageError
from harness.model.topology import HOPS, HopName, Topology
from harness.targets.base import lane_key

if TYPE_CHECKING:
    from pathlib import Path

    from harness.model.controller import ControllerSettings
    from harness.pki.certset import CertSet
    from harness.render.envoy_gateway import GatewayApiEnvoy
    from harness.targets.base import RunningChain

__all__ = ["HOME_INGRESS", "Lane", "LanePlan", "controller_difference", "gateway_api_ingress", "lane_key", "lay_out",
           "own_hops",
           "plan_lanes", "pod_lane_specs"]

T = TypeVar("T")

#: the nginx process that serves the chain itself (and every lane with the chain's controller settings)
HOME_INGRESS = "ingress"


@dataclass
class Lane:
    """One variant served by the chain's processes: its topology, its cert set, its port on each hop, and the nginx
    process that serves its ingress."""

    index: int
    topology: Topology
    certs: CertSet
    ports: dict[HopName, int]
    ingress: str = HOME_INGRESS
    chain: RunningChain | None = None
    #: the ingress hosts its cases probe (None: all of them); only these and the home host get server blocks
    hosts: frozenset[str] | None = None
    #: the hops that serve it on a listener of its own; on the others (the variant is the chain itself from there
    #: on towards the pod) its port is the chain's own (:func:`own_hops`)
    own: frozenset[HopName] = frozenset(HOPS)
    #: the hops in front of every hop its cases connect to: no listener, no endpoint (a probe there is an error)
    front: frozenset[HopName] = frozenset()

    @property
    def served(self) -> Topology:
        """The topology the lane's ingress renders: its variant with only the Ingresses of the hosts its cases probe
        and the home host's (a controller with 20 hosts would otherwise repeat all 20 in every lane). Every other
        hop, and the lane's own view (:attr:`topology`), keep the whole variant."""
        hop = self.topology.ingress
        if self.hosts is None:
            return self.topology
        keep = {hop.ingresses[0].host, *self.hosts}
        kept = tuple(i for i in hop.ingresses if i.host in keep)
        if len(kept) == len(hop.ingresses):
            return self.topology
        focus = hop.focus if hop.focus in keep else None
        return self.topology.replace(ingress=dataclasses.replace(hop, ingresses=kept, focus=focus))


@dataclass
class LanePlan:
    """The lanes of a chain and the nginx processes they need: ``ingress_processes`` maps each process beyond the
    home one to why it cannot be the home one (listed in the report); ``dropped`` a variant that could not be made a
    lane to why (it runs as a chain of its own)."""

    lanes: list[Lane] = field(default_factory=list)
    ingress_processes: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    _refused: list[Lane] = field(default_factory=list, repr=False)

    def in_process(self, name: str) -> list[Lane]:
        """The lanes whose ingress server blocks the nginx process ``name`` serves."""
        return [lane for lane in self.lanes if lane.ingress == name and "ingress" in lane.own]

    def on(self, hop: HopName) -> list[Lane]:
        """The lanes with a listener of their own on ``hop``."""
        return [lane for lane in self.lanes if hop in lane.own]

    def blame(self, lanes: Sequence[Lane], exc: LaneRefused) -> NoReturn:
        """Re-raise a renderer's refusal of its ``exc.lane``-th lane of ``lanes``, remembering which lane it was."""
        self._refused[:] = [lanes[exc.lane - 1]]
        raise exc

    def render(self, render: Callable[[], T]) -> T:
        """``render()`` (every process's config, with the lanes), again without each lane a renderer refuses (its
        reason kept in :attr:`dropped`) — at most once per lane. A refusal no lane is blamed for is the chain's own:
        a UsageError."""
        for _ in range(len(self.lanes) + 1):
            self._refused.clear()
            try:
                return render()
            except LaneRefused as exc:
                if not self._refused:
                    raise UsageError(str(exc)) from None
                lane = self._refused[0]
                self.lanes.remove(lane)
                self.dropped[lane_key(lane.topology)] = str(exc)
        raise AssertionError("unreachable: every lane was dropped")  # pragma: no cover

    def summary(self) -> dict[str, Any]:
        """What the report says of the layout: how many lanes, the processes beyond the chain's own and why, the
        variants that run as chains of their own and why."""
        return {"lanes": len(self.lanes), "ingress_processes": dict(self.ingress_processes),
                "not_lanes": len(self.dropped), "not_lanes_why": sorted(set(self.dropped.values()))}


def _settings_diff(a: ControllerSettings, b: ControllerSettings) -> str:
    keys = sorted(set(a.config) | set(b.config))
    changed = [f"{k}={b.config.get(k, '(default)')}" for k in keys if a.config.get(k) != b.config.get(k)]
    if a.enable_ssl_passthrough != b.enable_ssl_passthrough:
        changed.append(f"--enable-ssl-passthrough={str(b.enable_ssl_passthrough).lower()}")
    return ", ".join(changed) or "the same settings"


def controller_difference(home: Topology, variant: Topology) -> str | None:
    """What ``variant``'s ingress controller settings change from ``home``'s — its ConfigMap keys (the modelled ones
    and ``allow-cross-namespace-resources``) and its flags — or None when they are the same: the settings one
    ingress-nginx controller applies to every Ingress it serves."""
    a, b = home.ingress, variant.ingress
    changed = [] if _group(home) == _group(variant) else [_settings_diff(a.controller, b.controller)]
    if a.allow_cross_namespace_resources != b.allow_cross_namespace_resources:
        changed.append(f"allow-cross-namespace-resources={str(b.allow_cross_namespace_resources).lower()}")
    return ", ".join(changed) or None


def _group(topology: Topology) -> tuple[object, ...]:
    """What must be equal for two lanes' ingresses to share an nginx process: the controller's flags and ConfigMap
    (a lane with ssl-passthrough gets its own SNI router on its own port, in the process of its settings). A Gateway
    API ingress has no process-wide setting the harness models: every lane is a listener of the one Envoy."""
    ctl = topology.ingress.controller
    if topology.ingress.gateway_api is not None:
        return ("gateway-api", topology.ingress.gateway_api)
    return ctl.enable_ssl_passthrough, tuple(sorted(ctl.config.items()))


def own_hops(home: Topology, variant: Topology) -> frozenset[HopName]:
    """The hops where ``variant`` needs a listener of its own: where its configuration differs from ``home``'s, and
    every hop in front of one that does (its path must lead there). Behind the last difference the variant IS the
    chain, and its path goes on through the chain's own listeners. Another PKI plan changes every hop's files."""
    if variant.pki != home.pki:
        return frozenset(HOPS)
    own: set[HopName] = set()
    if variant.pod != home.pod:
        own.add("pod")
    if own or variant.ingress != home.ingress:
        own.add("ingress")
    if own or variant.apim != home.apim:
        own.add("apim")
    if own or variant.gateway != home.gateway:
        own.add("gateway")
    return frozenset(own)


def in_front(entries: frozenset[HopName] | None) -> frozenset[HopName]:
    """The hops in front of the first of ``entries`` (the hops a lane's cases connect to): a path from the client to
    them never passes there. None: the cases may connect anywhere."""
    if not entries:
        return frozenset()
    first = min(HOPS.index(h) for h in entries)
    return frozenset(HOPS[:first])


def plan_lanes(home: Topology, variants: Sequence[Topology], ports: Sequence[int],
               certs_for: dict[str, CertSet], *, hosts: Mapping[str, frozenset[str]] | None = None,
               home_ports: Mapping[HopName, int] | None = None,
               entries: Mapping[str, frozenset[HopName]] | None = None) -> LanePlan:
    """Lay ``variants`` out as lanes beside ``home``: lane ``i`` takes ports ``ports[4*(i-1):4*i]`` (gateway, apim,
    ingress, pod); ``certs_for`` maps a variant's key to its cert set. Duplicates and the home topology itself are
    left out (a case on the home topology probes the chain). With ``home_ports`` (the chain's own port on each hop),
    a lane has listeners only on :func:`own_hops` and goes on through the chain's own listeners behind them. With
    ``entries`` (by variant key, the hops its cases connect to: harness.cases.model.lane_entries) and
    ``home_ports``, a lane has no listener in front of the first of them either (:attr:`Lane.front`): a variant whose
    cases all probe the ingress needs no gateway or apim listener."""
    plan = LanePlan()
    seen = {lane_key(home)}
    groups: dict[tuple[object, ...], str] = {}
    home_settings = home.ingress.controller
    home_group = _group(home)
    it = iter(ports)
    for topology in variants:
        key = lane_key(topology)
        if key in seen:
            continue
        seen.add(key)
        lane_ports: dict[HopName, int] = {hop: next(it) for hop in HOPS}
        own = frozenset(HOPS) if home_ports is None else own_hops(home, topology)
        front = in_front(entries.get(key)) if entries is not None and home_ports is not None else frozenset()
        own -= front
        lane_ports |= {hop: home_ports[hop] for hop in HOPS if hop not in own and home_ports is not None}
        group = _group(topology)
        if "ingress" not in own or group == home_group:
            process = HOME_INGRESS
        elif group in groups:
            process = groups[group]
        else:
            process = groups[group] = f"{HOME_INGRESS}.g{len(plan.ingress_processes) + 1}"
            plan.ingress_processes[process] = (
                f"other controller settings ({_settings_diff(home_settings, topology.ingress.controller)}): the "
                "ConfigMap and the flags are the whole nginx process's")
        plan.lanes.append(Lane(len(plan.lanes) + 1, topology, certs_for[key], lane_ports, process,
                               hosts=None if hosts is None else hosts.get(key), own=own, front=front))
    return plan


def lay_out(home: Topology, home_certs: CertSet, variants: Sequence[Topology],
            ports: Callable[[int], Sequence[int]], *, hosts: Mapping[str, frozenset[str]] | None = None,
            home_ports: Mapping[HopName, int] | None = None,
            entries: Mapping[str, frozenset[HopName]] | None = None) -> LanePlan:
    """The lanes for ``variants`` beside ``home``: each variant's cert set (the chain's when its PKI plan is the
    same; a plan that cannot be issued drops the variant, with why), then :func:`plan_lanes` with ``ports(n)`` — four
    ports for each of the ``n`` lanes."""
    if not variants:
        return LanePlan()
    from harness.pki.certset import cert_set_for

    certs: dict[str, CertSet] = {}
    dropped: dict[str, str] = {}
    for topology in variants:
        key = lane_key(topology)
        if key in certs or key in dropped or topology == home:
            continue
        try:
            certs[key] = home_certs if topology.pki == home.pki else cert_set_for(topology.pki)
        except (HarnessError, KeyError, ValueError) as exc:
            dropped[key] = f"its cert set could not be issued: {exc}"
    kept = [t for t in variants if lane_key(t) in certs]
    plan = plan_lanes(home, kept, ports(len(certs)), certs, hosts=hosts, home_ports=home_ports, entries=entries)
    plan.dropped.update(dropped)
    return plan


def pod_lane_specs(plan: LanePlan, listen: Callable[[Lane], str]) -> list[dict[str, Any]]:
    """The echo pod's ``--lanes`` file: one listener per lane (at ``listen(lane)``) with that lane's pod settings; a
    lane whose pod cert the cert set lacks is refused (:meth:`LanePlan.blame`)."""
    specs: list[dict[str, Any]] = []
    lanes = plan.on("pod")
    for n, lane in enumerate(lanes, 1):
        listener = lane.topology.pod.listener
        try:
            leaf = lane.certs.leaf(listener.server_cert)
            ca = lane.certs.trust_bundle(listener.client_ca) if listener.client_ca else None
        except KeyError as exc:
            plan.blame(lanes, LaneRefused(n, f"the pod of lane {lane.index}: {exc}"))
        specs.append({"listen": listen(lane), "cert": str(leaf.chain.resolve()), "key": str(leaf.key.resolve()),
                      "client_ca": str(ca.resolve()) if ca else None, "client_auth": listener.client_auth,
                      "min_version": listener.min_version, "max_version": listener.max_version})
    return specs




def gateway_api_ingress(plan: LanePlan, topology: Topology, certs: CertSet, *, listen: tuple[str, int],
                        pod: tuple[str, int], admin: tuple[str, int], workdir: Path) -> GatewayApiEnvoy:
    """The ingress hop as a Gateway API implementation's data plane, rendered into ``workdir``: the chain's Ingresses
    migrated (:func:`harness.render.envoy_gateway.twin_of`), configured as the implementation configures Envoy, with
    the hop trace; every lane of ``plan`` a listener of the same Envoy on its own port, at ``listen``'s and ``pod``'s
    addresses. A lane whose twin cannot be built or rendered is blamed (:meth:`LanePlan.blame`)."""
    from harness.render.envoy_gateway import GatewayApiLane, render_envoy_gateway, twin_of

    twin = twin_of(topology, certs)
    lanes = plan.on("ingress")
    extra = []
    for lane in lanes:
        try:
            t = twin_of(lane.served, lane.certs)
        except UsageError as exc:
            plan.blame([lane], LaneRefused(1, str(exc)))
        extra.append(GatewayApiLane(t.documents, t.secrets, (listen[0], lane.ports["ingress"]),
                                    t.upstreams((pod[0], lane.ports["pod"])), t.secret_cas))
    try:
        return render_envoy_gateway(twin.documents, secrets=twin.secrets, listen=listen, admin=admin,
                                    upstreams=twin.upstreams(pod), workdir=workdir, trace=True,
                                    secret_cas=twin.secret_cas, lanes=extra)
    except LaneRefused as exc:
        plan.blame(lanes, exc)
