"""Lanes: every variant of the chain at once, on the chain's own processes (issue 21: variants are hosts, not restarts).

A real cluster runs hundreds of Ingresses on one controller. A lane is one variant topology served beside the chain
itself: its own port on every hop — an Envoy listener with its own clusters on the gateway and on apim, an nginx
``server`` block set with its own balancer on the ingress, one more listener of the pod — so a case on a variant
probes its lane, and nothing reloads or restarts. Each lane has its own TLS contexts (listener, cluster, session cache
zone, pod context): no session state passes between variants.

Only what is global to a process needs a process of its own. For the ingress that is the controller's settings (its
ConfigMap keys and flags: the ``http {}`` block of nginx.conf) and ssl-passthrough (the controller's SNI router: the
``stream {}`` block). :func:`plan_lanes` puts each lane's ingress in the nginx process whose settings it shares and
says why any other process exists. The Envoy stand-ins and the pod have no such setting: every lane shares them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from harness.errors import HarnessError, LaneRefused, UsageError
from harness.model.topology import HOPS, HopName, Topology
from harness.render.nginx import uses_passthrough
from harness.targets.base import lane_key

if TYPE_CHECKING:
    from harness.model.controller import ControllerSettings
    from harness.pki.certset import CertSet
    from harness.targets.base import RunningChain

__all__ = ["HOME_INGRESS", "Lane", "LanePlan", "lane_key", "lay_out", "plan_lanes", "pod_lane_specs"]

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
        return [lane for lane in self.lanes if lane.ingress == name]

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


def _group(topology: Topology) -> tuple[object, ...]:
    """What must be equal for two lanes' ingresses to share an nginx process."""
    ctl = topology.ingress.controller
    return ctl.enable_ssl_passthrough, tuple(sorted(ctl.config.items())), uses_passthrough(topology)


def plan_lanes(home: Topology, variants: Sequence[Topology], ports: Sequence[int],
               certs_for: dict[str, CertSet]) -> LanePlan:
    """Lay ``variants`` out as lanes beside ``home``: lane ``i`` takes ports ``ports[4*(i-1):4*i]`` (gateway, apim,
    ingress, pod); ``certs_for`` maps a variant's key to its cert set. Duplicates and the home topology itself are
    left out (a case on the home topology probes the chain)."""
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
        passthrough = uses_passthrough(topology)
        group = _group(topology)
        if group == home_group and not passthrough:
            process = HOME_INGRESS
        elif group in groups and not passthrough:
            process = groups[group]
        else:
            process = f"{HOME_INGRESS}.g{len(plan.ingress_processes) + 1}"
            if not passthrough:
                groups[group] = process
            why = ("ssl-passthrough: the controller's SNI router sits in front of all its TLS servers, and the "
                   "harness renders one router (an nginx stream block) per nginx process" if passthrough else
                   f"other controller settings ({_settings_diff(home_settings, topology.ingress.controller)}): the "
                   "ConfigMap and the flags are the whole nginx process's")
            plan.ingress_processes[process] = why
        plan.lanes.append(Lane(len(plan.lanes) + 1, topology, certs_for[key], lane_ports, process))
    return plan


def lay_out(home: Topology, home_certs: CertSet, variants: Sequence[Topology],
            ports: Callable[[int], Sequence[int]]) -> LanePlan:
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
    plan = plan_lanes(home, kept, ports(len(certs)), certs)
    plan.dropped.update(dropped)
    return plan


def pod_lane_specs(plan: LanePlan, listen: Callable[[Lane], str]) -> list[dict[str, Any]]:
    """The echo pod's ``--lanes`` file: one listener per lane (at ``listen(lane)``) with that lane's pod settings; a
    lane whose pod cert the cert set lacks is refused (:meth:`LanePlan.blame`)."""
    specs: list[dict[str, Any]] = []
    for n, lane in enumerate(plan.lanes, 1):
        listener = lane.topology.pod.listener
        try:
            leaf = lane.certs.leaf(listener.server_cert)
            ca = lane.certs.trust_bundle(listener.client_ca) if listener.client_ca else None
        except KeyError as exc:
            plan.blame(plan.lanes, LaneRefused(n, f"the pod of lane {lane.index}: {exc}"))
        specs.append({"listen": listen(lane), "cert": str(leaf.chain.resolve()), "key": str(leaf.key.resolve()),
                      "client_ca": str(ca.resolve()) if ca else None, "client_auth": listener.client_auth,
                      "min_version": listener.min_version, "max_version": listener.max_version})
    return specs
