"""The local target: the whole chain as child processes on 127.0.0.1.

    pod (python -m harness.pod.echo) ◀── nginx (ingress) ◀── Envoy (apim) ◀── Envoy (gateway) ◀── client

All four start at once (their ports are reserved first, so every hop knows the next one's port), then one wait
covers them all. A failed start stops whatever did start and raises :class:`~harness.errors.StartError` with the
failing process's log tail.

``LocalTarget(topology, lanes=variants)`` serves each variant beside the chain as a lane of the same processes, on
ports of its own (:mod:`harness.targets.lanes`): ``chain.lanes[lane_key(variant)]`` is its running chain, and
:meth:`LocalTarget.reconfigure` to a lane's topology returns it without touching anything. Any other variant is
reached by reconfiguring: nginx by re-render + SIGHUP (hot reload), Envoy and the pod by a restart of that hop only
(the lanes are then gone, their handles evicted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from harness.errors import HarnessError, LaneRefused, StartError, UsageError, WaitTimeout
from harness.model.topology import HOPS, HopName, Topology, default_topology
from harness.render.envoy import EnvoyLane, render_envoy
from harness.runtime import ManagedProcess, free_ports, port_open, wait_until
from harness.runtime.binaries import find_envoy, find_nginx
from harness.targets.base import HopEndpoint, OwnCertSet, RunningChain, TargetBase, apim_jwks
from harness.targets.lanes import (
    HOME_INGRESS,
    Lane,
    LanePlan,
    gateway_api_ingress,
    lane_key,
    lay_out,
    pod_lane_specs,
)

if TYPE_CHECKING:
    from harness.pki.certset import CertSet
    from harness.render.envoy import CertFiles, EnvoyConfig
    from harness.render.envoy_gateway import GatewayApiEnvoy
    from harness.render.nginx import NginxConfig, NginxLane
    from harness.runtime.envoy import AdminPort

__all__ = ["LocalTarget", "ProcessHop", "Tamper", "endpoints_for"]

HOST = "127.0.0.1"
#: how long one start of the chain may take before it is called failed (it takes well under a second here)
START_TIMEOUT = 20.0


class Tamper(Protocol):
    """A hook between rendering and running (the self-test's RENDER mutants): called for every hop each time its
    config is rendered and before its process (re)starts or reloads, with the rendered config file (``None`` for the
    pod, whose settings are its command line) and the command line; edits the file in place and returns the command
    line to run. It makes the running chain differ from the model on purpose — never set it in normal use."""

    def __call__(self, hop: str, config: Path | None, argv: list[str]) -> list[str]: ...


@dataclass
class ProcessHop:
    """One running process of the chain and how to tell that it is ready."""

    name: str
    process: ManagedProcess
    ready: Callable[[], bool]


def endpoints_for(topology: Topology, certs: CertSet, ports: dict[HopName, int],
                  host: str = HOST) -> dict[HopName, HopEndpoint]:
    """Each hop's endpoint as its caller sees it: the caller's trust anchor, expected name and client identity."""
    out: dict[HopName, HopEndpoint] = {}
    for hop in HOPS:
        caller = topology.caller_of(hop)
        # a direct probe trusts the root that really issued the hop's cert, whatever its caller is configured with:
        # the suite asks "does the hop serve a valid chain", the caller's own trust is tested through the chain
        trust = certs.trust_bundle(topology.server_ca_of(hop))
        leaf = certs.leaf(caller.client_cert) if caller.client_cert else None
        # the stand-ins answer a bad client cert with an HTTP page, never a TLS alert: no need to wait for one
        # (ingress-nginx too, unless it passes TLS through; a Gateway API ingress refuses with an alert)
        http_verdict = hop in ("gateway", "apim") or (hop == "ingress" and not topology.passthrough
                                                      and topology.ingress.gateway_api is None)
        out[hop] = HopEndpoint(
            hop=hop,
            host=host,
            port=ports[hop],
            server_name=topology.listener_of(hop).hostname,
            trust=trust,
            client_cert=leaf.chain if leaf else None,
            client_key=leaf.key if leaf else None,
            verdict_wait=0.0 if http_verdict else None,
        )
    return out


class LocalTarget(OwnCertSet, TargetBase):
    """``with LocalTarget(topology) as chain:`` — the chain from real Envoy, real nginx and the echo pod."""

    name = "local"

    def __init__(self, topology: Topology | None = None, *, certs: CertSet | None = None,
                 workdir: Path | None = None, keep_workdir: bool = False, tamper: Tamper | None = None,
                 lanes: Sequence[Topology] = (), lane_hosts: Mapping[str, frozenset[str]] | None = None,
                 lane_entries: Mapping[str, frozenset[HopName]] | None = None) -> None:
        self.topology = topology or default_topology()
        #: the variants to serve beside the chain, each on its own ports of the same processes (harness.targets.lanes);
        #: ``lane_hosts``: the ingress hosts each one's cases probe (harness.cases.model.lanes_for), None: all
        self.variants = tuple(lanes)
        self.lane_hosts = lane_hosts
        #: the hops each variant's cases connect to (harness.cases.model.lane_entries): no listener in front of them
        self.lane_entries = lane_entries
        self.lane_plan = LanePlan()
        self._nginx_extra: dict[str, NginxConfig] = {}
        self._internal_ports: dict[int, int] = {}
        self.tamper = tamper
        self._certs = certs
        self._given_workdir = workdir
        self.keep_workdir = keep_workdir
        self.workdir: Path | None = None
        self.ports: dict[str, int] = {}
        self._procs: dict[str, ManagedProcess] = {}
        self._nginx: NginxConfig | None = None
        self._gateway_api: GatewayApiEnvoy | None = None
        self._envoy: dict[str, EnvoyConfig] = {}
        self.chain: RunningChain | None = None
        #: seconds each hop took from spawn to ready in the last start
        self.start_times: dict[str, float] = {}
        #: when each hop's process was spawned (perf_counter), for :attr:`start_times`
        self._spawned: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process — the stop signal to all of them in reverse start order (gateway first), then wait for
        each — then remove the work directory."""
        order = ("gateway", "apim", "ingress", *sorted(n for n in self._procs if n.startswith("ingress.")), "pod")
        names = [n for n in dict.fromkeys((*order, *self._procs)) if n in self._procs]
        for name in names:
            self._procs[name].begin_stop()
        for name in names:
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        self._nginx_extra.clear()
        if self.workdir is not None and not self.keep_workdir and self._given_workdir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        self.chain = None

    def _start(self) -> RunningChain:
        envoy, nginx = find_envoy(), find_nginx()  # fail with an install hint before anything starts
        if self._given_workdir is not None:
            self.workdir = self._given_workdir
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-local-"))
        names = ("pod", "ingress", "apim", "gateway", "apim-admin", "gateway-admin", "ingress-admin")
        self.ports = dict(zip(names, free_ports(len(names), HOST), strict=True))
        self.lane_plan = lay_out(self.topology, self.certs, self.variants, lambda n: free_ports(4 * n, HOST),
                                 hosts=self.lane_hosts, home_ports={h: self.ports[h] for h in HOPS},
                                 entries=self.lane_entries)
        try:
            self._launch(self._render_all(nginx, envoy))
        except StartError as exc:
            if not self.lane_plan.lanes:
                raise
            # a lane Envoy or nginx refused at start takes the chain with it: start the chain alone, and let each
            # variant run as a chain of its own (as before lanes), saying why
            why = f"the chain did not start with its lanes: {str(exc).splitlines()[0]}"
            for name in list(self._procs):
                self._procs.pop(name).stop()
            self._nginx_extra.clear()
            self.lane_plan = LanePlan(dropped={lane_key(lane.topology): why for lane in self.lane_plan.lanes})
            self._launch(self._render_all(nginx, envoy))
        return self._publish()

    # -- lanes: the variants served beside the chain (harness.targets.lanes) -------------------------------------
    def _render_all(self, nginx: Path, envoy: Path) -> list[ProcessHop]:
        """Every process of the chain rendered with its lanes (a lane a renderer refuses is dropped, with why), each
        spawned as soon as it is rendered: the pod (quick to render, a Python start to load) and the Envoys (which take
        longest to load their listeners) first, then the ingress, rendered while they load (:meth:`_launch` waits for
        them all)."""
        return self.lane_plan.render(lambda: self._spawning([
            lambda: [self._pod()], lambda: [self._envoy_hop("gateway", envoy)],
            lambda: [self._envoy_hop("apim", envoy)], lambda: self._ingresses(nginx, envoy)]))

    def _spawning(self, makers: list[Callable[[], list[ProcessHop]]]) -> list[ProcessHop]:
        """Render and spawn each maker's hops in turn; when one fails (a renderer refusing a lane), the hops spawned
        before it are stopped again, so the lanes can be laid out anew without them."""
        hops: list[ProcessHop] = []
        try:
            for make in makers:
                for hop in make():
                    self._spawn(hop)
                    hops.append(hop)
        except BaseException:
            for hop in hops:
                self._procs.pop(hop.name, None)
                hop.process.stop()
            raise
        return hops

    def _spawn(self, hop: ProcessHop) -> None:
        self._procs[hop.name] = hop.process
        self._spawned[hop.name] = time.perf_counter()
        hop.process.start()

    def _ingresses(self, nginx: Path, envoy: Path) -> list[ProcessHop]:
        """The home nginx (the chain and every lane with its controller settings) and one nginx per other group; a
        Gateway API ingress: one Envoy, every lane a listener of it."""
        if self.topology.ingress.gateway_api is not None:
            return [self._gateway_api_ingress(envoy)]
        out = [self._ingress(nginx)]
        for name in self.lane_plan.ingress_processes:
            lanes = self.lane_plan.in_process(name)
            if lanes:
                out.append(self._extra_ingress(nginx, name, lanes))
        return out

    def _extra_ingress(self, nginx: Path, name: str, lanes: list[Lane]) -> ProcessHop:
        """An nginx of its own for lanes whose controller settings differ from the chain's: the first lane is its
        home server set, the others its lanes."""
        from harness.runtime.nginx import render_ingress

        assert self.workdir is not None
        first, rest = lanes[0], lanes[1:]
        try:
            config = render_ingress(first.served, first.certs,
                                    listen=(self._host("ingress"), first.ports["ingress"]),
                                    pod=(self._host("pod"), first.ports["pod"]), workdir=self.workdir / name,
                                    lanes=self._nginx_lanes(rest))
        except LaneRefused as exc:
            self.lane_plan.blame(rest, exc)
        except UsageError as exc:
            self.lane_plan.blame([first], LaneRefused(1, str(exc)))
        self._nginx_extra[name] = config
        argv = config.argv(nginx)
        if self.tamper is not None:
            argv = self.tamper("ingress", config.conf_path, argv)
        proc = ManagedProcess(name, self._argv("ingress", argv), log_path=self._log(name))
        return ProcessHop(name, proc, self._listening(name, first.ports["ingress"]))

    def _nginx_lanes(self, lanes: Sequence[Lane]) -> list[NginxLane]:
        from harness.render.nginx import NginxLane

        return [NginxLane(lane.served, lane.certs, listen=(self._host("ingress"), lane.ports["ingress"]),
                          pod=(self._host("pod"), lane.ports["pod"]), internal_port=self._internal_port(lane))
                for lane in lanes]

    def _internal_port(self, lane: Lane) -> int | None:
        """Where a passthrough lane's TLS servers listen behind its SNI router (one free port per lane)."""
        from harness.render.nginx import uses_passthrough

        if not uses_passthrough(lane.served):
            return None
        if lane.index not in self._internal_ports:
            self._internal_ports[lane.index] = free_ports(1, HOST)[0]
        return self._internal_ports[lane.index]

    def _pod_lanes(self) -> Path | None:
        """The pod's ``--lanes`` file: one listener per lane, each with the lane's pod settings."""
        if not self.lane_plan.on("pod"):
            return None
        import json

        from harness.pki.x509 import write_atomic

        assert self.workdir is not None
        specs = pod_lane_specs(self.lane_plan, lambda lane: f"{self._host('pod')}:{lane.ports['pod']}")
        path = self.workdir / "pod" / "lanes.json"
        write_atomic(path, json.dumps(specs, indent=1).encode())
        return path

    def _publish(self) -> RunningChain:
        assert self.workdir is not None
        ports: dict[HopName, int] = {h: self.ports[h] for h in HOPS}
        endpoints = {h: dataclasses.replace(ep, host=self._host(h))
                     for h, ep in endpoints_for(self.topology, self.certs, ports).items()}
        lanes: dict[str, RunningChain] = {}
        for lane in self.lane_plan.lanes:
            lane_eps = {h: dataclasses.replace(ep, host=self._host(h))
                        for h, ep in endpoints_for(lane.topology, lane.certs, lane.ports).items()
                        if h not in lane.front}
            lane.chain = self._running_chain(target=self.name, topology=lane.topology, certs=lane.certs,
                                             endpoints=lane_eps, logs=self._evidence_logs(lane.ingress),
                                             states=self._states(), unserved=dict.fromkeys(
                                                 lane.front, f"lane {lane.index} has no listener on this hop: its "
                                                 "cases were planned to connect only behind it"))
            lanes[lane_key(lane.topology)] = lane.chain
        self.chain = self._running_chain(
            target=self.name,
            topology=self.topology,
            certs=self.certs,
            endpoints=endpoints,
            logs=self._evidence_logs(),
            states=self._states(),
            lanes=lanes,
            layout=self.lane_plan.summary() if self.variants else {},
        )
        return self.chain

    def _evidence_logs(self, ingress: str = HOME_INGRESS) -> dict[str, Path]:
        """Every log a case reads its evidence from: each process's output (the pod logs failed handshakes), nginx's
        error and access logs, the Envoy stand-ins' access logs. ``ingress``: the nginx process whose logs are the
        ingress's (a lane's own process, when its controller settings are not the chain's)."""
        logs: dict[str, Path] = {name: p.log_path for name, p in self._procs.items() if name in HOPS}
        nginx = self._nginx if ingress == HOME_INGRESS else self._nginx_extra.get(ingress)
        if ingress in self._procs:
            logs["ingress"] = self._procs[ingress].log_path
        if nginx is not None:
            logs |= {"ingress-error": nginx.error_log, "ingress-access": nginx.access_log}
        if self._gateway_api is not None and self.topology.ingress.gateway_api is not None:
            logs["ingress-envoy"] = self._gateway_api.access_log
        for hop in ("gateway", "apim"):
            config = self._envoy.get(hop)
            if config is not None:
                logs[f"{hop}-access"] = config.access_log
        return logs

    def _states(self) -> dict[str, Path]:
        """A Gateway API ingress's listener states: the evidence of a listener its implementation left out."""
        served = self._gateway_api if self.topology.ingress.gateway_api is not None else None
        return served.states() if served is not None else {}

    def _launch(self, hops: list[ProcessHop]) -> None:
        """Spawn every hop not spawned yet, then wait for all of them together; a failure names the hop and shows its
        log. :attr:`start_times` gets each hop's time from its spawn to seen ready."""
        for hop in hops:
            if hop.process.proc is None:
                self._spawn(hop)
        pending = {h.name: h for h in hops}

        def all_ready() -> bool:
            for name in list(pending):
                with contextlib.suppress(OSError):
                    if pending[name].ready():
                        self.start_times[name] = time.perf_counter() - self._spawned[name]
                        del pending[name]
            return not pending

        def dead() -> str | None:
            for h in pending.values():
                reason = h.process.exit_reason()
                if reason is not None:
                    return reason
            return None

        def tails() -> str:
            return "\n".join(f"[{n}] {pending[n].process.log_tail(15)}" for n in pending)

        try:
            # poll often: each hop is ready within tens of milliseconds, a 200 ms back-off would only add latency
            wait_until(all_ready, "local chain start", timeout=START_TIMEOUT, log_tail=tails, alive=dead,
                       max_interval=0.02)
        except WaitTimeout as exc:
            waiting = ", ".join(pending) or "nothing"
            hint = ""
            if "inotify" in str(exc):  # Envoy watches each SDS file: one inotify instance per secret
                hint = ("\nhint: the machine ran out of inotify instances (Envoy needs ~5 per process): raise "
                        "fs.inotify.max_user_instances (e.g. `sysctl -w fs.inotify.max_user_instances=1024`) or run "
                        "fewer chains at once (fewer -n workers)")
            raise StartError(f"the local chain did not start (waiting for: {waiting})\n{exc}{hint}") from None

    # -- hooks: where a hop listens, how its process is run, how readiness is seen ----------------------------------
    # (harness.targets.isolated overrides these to put each hop in its own network namespace)
    def _host(self, hop: str) -> str:
        """The address ``hop`` listens on and its caller connects to."""
        return HOST

    def _argv(self, hop: str, argv: list[str]) -> list[str]:
        """The command line that runs ``hop``'s process; a subclass may prefix it (e.g. ``ip netns exec NS``)."""
        return argv

    def _listening(self, hop: str, port: int) -> Callable[[], bool]:
        """A readiness check: True once ``hop`` accepts connections on ``port``."""
        host = self._host(hop)
        return lambda: port_open(host, port)

    def _envoy_ready(self, hop: str, config: AdminPort) -> Callable[[], bool]:
        """A readiness check for an Envoy hop: its admin /ready answers LIVE."""
        from harness.runtime.envoy import envoy_ready

        return lambda: envoy_ready(config)

    def _running_chain(self, **fields: Any) -> RunningChain:
        """The chain object handed to callers (a subclass may return a RunningChain subclass)."""
        return RunningChain(**fields)

    # -- the four hops -------------------------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        assert self.workdir is not None
        return self.workdir / "logs" / f"{name}.log"

    def _pod_files(self, leaf: CertFiles, client_ca: Path | None) -> tuple[Path, Path, Path | None]:
        """The pod's certificates where a mounted Secret puts them (``workdir/pod/tls.crt``, ``tls.key`` 0600,
        ``ca.crt``), each replaced by a rename so a reload never reads half a file."""
        from harness.pki.x509 import write_atomic

        assert self.workdir is not None
        mount = self.workdir / "pod"
        write_atomic(mount / "tls.crt", leaf.chain.read_bytes())
        write_atomic(mount / "tls.key", leaf.key.read_bytes(), mode=0o600)
        if client_ca is None:
            return mount / "tls.crt", mount / "tls.key", None
        write_atomic(mount / "ca.crt", client_ca.read_bytes())
        return mount / "tls.crt", mount / "tls.key", mount / "ca.crt"

    def _pod(self) -> ProcessHop:
        listener = self.topology.pod.listener
        cert, key, ca = self._pod_files(self.certs.leaf(listener.server_cert),
                                        self.certs.trust_bundle(listener.client_ca) if listener.client_ca else None)
        argv = [sys.executable, "-m", "harness.pod.echo", "--listen", f"{self._host('pod')}:{self.ports['pod']}",
                "--cert", str(cert), "--key", str(key), "--client-auth", listener.client_auth,
                "--min-version", listener.min_version, "--max-version", listener.max_version]
        if ca is not None:
            argv += ["--client-ca", str(ca)]
        lanes = self._pod_lanes()
        if lanes is not None:
            argv += ["--lanes", str(lanes)]
        if self.tamper is not None:
            argv = self.tamper("pod", None, argv)
        proc = ManagedProcess("pod", self._argv("pod", argv), log_path=self._log("pod"))
        return ProcessHop("pod", proc, self._listening("pod", self.ports["pod"]))

    def reload_pod(self, leaf: CertFiles, client_ca: Path | None, *, timeout: float = 10.0) -> None:
        """Hot-reload the running pod (rotation rehearsal): write the leaf it serves and the CA bundle it checks
        client certs against into its mounted files, SIGHUP it, and return once it logs the reload. A pod that
        refuses the files, or does not answer in ``timeout`` seconds, raises :class:`HarnessError`; the files it
        refused stay written (as a bad Secret update would), the pod keeps serving the old ones."""
        proc = self._procs.get("pod")
        if proc is None:
            raise RuntimeError("the local chain's pod is not running (start it first)")
        if (client_ca is None) != (self.topology.pod.listener.client_ca is None):
            raise UsageError("reload_pod: give client_ca exactly when the pod checks client certs")
        log = self._log("pod")

        def reload_lines() -> list[str]:  # the pod's "reloaded certificates …" / "reload failed …" lines
            text = log.read_text(errors="replace") if log.is_file() else ""
            return [ln for ln in text.splitlines() if ln.startswith("pod: reload")]

        seen = len(reload_lines())
        self._pod_files(leaf, client_ca)
        proc.send_signal(signal.SIGHUP)

        def outcome() -> str:
            lines = reload_lines()
            return lines[seen] if len(lines) > seen else ""

        line = wait_until(outcome, "the pod to reload its certificates", timeout=timeout, log_tail=proc.log_tail,
                          alive=proc.exit_reason)  # WaitTimeout (a HarnessError) when it never answers
        if "reload failed" in line:
            raise HarnessError(re.sub(r" at=[0-9.]+$", "", line.removeprefix("pod: ")))

    def _ingress(self, nginx: Path) -> ProcessHop:
        from harness.runtime.nginx import render_ingress

        assert self.workdir is not None
        home = self.lane_plan.in_process(HOME_INGRESS)
        try:
            self._nginx = render_ingress(self.topology, self.certs,
                                         listen=(self._host("ingress"), self.ports["ingress"]),
                                         pod=(self._host("pod"), self.ports["pod"]), workdir=self.workdir / "ingress",
                                         lanes=self._nginx_lanes(home))
        except LaneRefused as exc:
            self.lane_plan.blame(home, exc)
        argv = self._nginx.argv(nginx)
        if self.tamper is not None:
            argv = self.tamper("ingress", self._nginx.conf_path, argv)
        proc = ManagedProcess("ingress", self._argv("ingress", argv), log_path=self._log("ingress"))
        return ProcessHop("ingress", proc, self._listening("ingress", self.ports["ingress"]))

    def _gateway_api_ingress(self, envoy: Path) -> ProcessHop:
        """The ingress hop as a Gateway API implementation's data plane: the chain's Ingresses migrated
        (:func:`harness.render.envoy_gateway.twin_of`), rendered as Envoy Gateway configures real Envoy."""
        assert self.workdir is not None
        config = gateway_api_ingress(self.lane_plan, self.topology, self.certs,
                                     listen=(self._host("ingress"), self.ports["ingress"]),
                                     pod=(self._host("pod"), self.ports["pod"]),
                                     admin=(HOST, self.ports["ingress-admin"]), workdir=self.workdir / "ingress")
        self._gateway_api = config
        argv = config.argv(envoy)
        if self.tamper is not None:
            argv = self.tamper("ingress", config.config_path, argv)
        proc = ManagedProcess("ingress", self._argv("ingress", argv), log_path=self._log("ingress"))
        # ready by its admin: a listener the implementation leaves out (an invalid CA reference) is never listening
        return ProcessHop("ingress", proc, self._envoy_ready("ingress", config))

    def _envoy_hop(self, hop: Literal["gateway", "apim"], envoy: Path) -> ProcessHop:
        assert self.workdir is not None
        nxt: HopName = "apim" if hop == "gateway" else "ingress"
        lanes = self.lane_plan.on(hop)
        try:
            config = render_envoy(self.topology, hop, self.certs, listen=(self._host(hop), self.ports[hop]),
                                  upstream=(self._host(nxt), self.ports[nxt]),
                                  admin=(HOST, self.ports[f"{hop}-admin"]), workdir=self.workdir / hop,
                                  jwks=apim_jwks(self.topology, self.certs),
                                  lanes=[EnvoyLane(lane.topology, lane.certs, listen=(self._host(hop), lane.ports[hop]),
                                                   upstream=(self._host(nxt), lane.ports[nxt]),
                                                   jwks=apim_jwks(lane.topology, lane.certs)) for lane in lanes])
        except LaneRefused as exc:
            self.lane_plan.blame(lanes, exc)
        self._envoy[hop] = config
        argv = config.argv(envoy)
        if self.tamper is not None:
            argv = self.tamper(hop, config.config_path, argv)
        proc = ManagedProcess(hop, self._argv(hop, argv), log_path=self._log(hop))
        return ProcessHop(hop, proc, self._envoy_ready(hop, config))

    # -- variants ------------------------------------------------------------------------------------------------
    def reconfigure(self, topology: Topology) -> RunningChain:
        """Turn the running chain into ``topology``, touching only the hops whose part of the model changed."""
        if self.chain is None:
            raise RuntimeError("the local chain is not running")
        lane = self.chain.lanes.get(lane_key(topology))
        if lane is not None:
            return lane  # served all along on its own ports: nothing restarts
        if self.lane_plan.lanes:  # the processes change: the lanes they served are gone
            for served in self.chain.lanes.values():
                served.evict("the chain was reconfigured into a variant it did not serve as a lane: its lanes are "
                             "gone")
            self.lane_plan = LanePlan()
        old, self.topology = self.topology, topology
        if old.pki != topology.pki:
            self._certs = None
        changed = {
            "pod": old.pod != topology.pod or old.pki != topology.pki,
            "ingress": old.ingress != topology.ingress or old.pod.listener.hostname != topology.pod.listener.hostname
            or old.pki != topology.pki,
            "apim": old.apim != topology.apim or old.pki != topology.pki,
            "gateway": old.gateway != topology.gateway or old.pki != topology.pki,
        }
        restart: list[ProcessHop] = []
        if changed["pod"]:
            self._procs.pop("pod").stop()
            restart.append(self._pod())
        if changed["apim"]:
            self._procs.pop("apim").stop()
            restart.append(self._envoy_hop("apim", find_envoy()))
        if changed["gateway"]:
            self._procs.pop("gateway").stop()
            restart.append(self._envoy_hop("gateway", find_envoy()))
        if restart:
            self._launch(restart)
        if changed["ingress"]:
            self._reload_ingress()
        return self._publish()

    def _reload_ingress(self) -> None:
        from harness.runtime.nginx import reload_nginx, render_ingress

        if self.topology.ingress.gateway_api is not None or self._gateway_api is not None:
            # Envoy from a static bootstrap (or a switch between ingress kinds): a new process; the ports stay
            self._procs.pop("ingress").stop()
            self._gateway_api = None
            self._launch(self._ingresses(find_nginx(), find_envoy()))
            return
        assert self.workdir is not None
        self._nginx = render_ingress(self.topology, self.certs, listen=(self._host("ingress"), self.ports["ingress"]),
                                   pod=(self._host("pod"), self.ports["pod"]), workdir=self.workdir / "ingress")
        if self.tamper is not None:  # a reload keeps the master's command line: only the file can differ
            self.tamper("ingress", self._nginx.conf_path, [])
        reload_nginx(self._nginx, self._procs["ingress"].pid, run_in=lambda argv: self._argv("ingress", argv))

    # -- access for hot-reload callers (the rotation rehearsal) ---------------------------------------------------
    def envoy_config(self, hop: Literal["gateway", "apim"]) -> EnvoyConfig:
        """The rendered config of a running Envoy hop: its SDS files are what ``rotate_envoy_secret`` swaps."""
        try:
            return self._envoy[hop]
        except KeyError:
            raise RuntimeError(f"the local chain has no running Envoy {hop!r} (start it first)") from None

    def nginx_config(self) -> NginxConfig:
        """The ingress's rendered nginx config (re-render into ``workdir / "ingress"`` and ``reload_nginx`` it)."""
        if self._nginx is None:
            raise RuntimeError("the local chain's ingress is not running (start it first)")
        return self._nginx

    def pid(self, hop: str) -> int:
        """The PID of a running hop's process; for the ingress, nginx's master (the one SIGHUP reloads)."""
        try:
            return self._procs[hop].pid
        except KeyError:
            raise RuntimeError(f"the local chain has no running {hop!r} (running: {', '.join(self._procs)})") from None
