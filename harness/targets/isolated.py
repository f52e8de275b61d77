"""The local chain with every hop in its own network namespace (``--isolate``; Linux, root).

    with IsolatedTarget(topology) as chain:          # five namespaces, four veth links (harness.isolation.netns)
        chain.probe("gateway")                        # runs INSIDE the internet namespace
        chain.probe("apim", vantage="internet")       # unreachable: no route from the internet to APIM's subnet

Same processes as :class:`~harness.targets.local.LocalTarget` (real Envoy ×2, real nginx, the echo pod); each runs
inside its namespace (``ip netns exec`` as the argv prefix: the PID is the program's) and listens on its address on
the link to its caller. Envoy's admin stays on the namespace's own loopback.

Clients never run in the host namespace. A probe runner (``python -m harness.isolation.runner --serve
--require-isolated``) lives in each of the internet, gateway, apim and ingress namespaces; it refuses to start
unless its namespace is not the host's and has no default route. :meth:`IsolatedChain.probe` sends the request to
the runner in the namespace of the probed hop's real caller: the internet for the gateway (so every ``via=chain``
case and every request through the chain starts in the internet namespace), the gateway for apim, apim for the
ingress, the ingress for the pod — the same network position, trust and identity as the caller. ``vantage=``
picks another runner (``vantage="internet"`` shows that apim, the ingress and the pod are unreachable from there).
Readiness is checked without touching a link: Envoy's admin ``/ready`` through the runner in its namespace, nginx
and the pod by their LISTEN sockets in ``/proc/<pid>/net/tcp``.

``capture=True`` starts tcpdump on every link before any hop starts
(:class:`~harness.isolation.capture.LinkCaptures`), so
every TCP stream is seen from its SYN; :meth:`IsolatedTarget.wire_proof` stops the captures and judges them.

A deliberately plaintext backend: when the Ingress says ``backend-protocol: HTTP`` the pod is run as a plain HTTP
server (``python -m http.server``) — what a cluster with that annotation has behind it. :func:`plaintext_backend`
is that topology variant; its ingress→pod link must fail the wire proof.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, UsageError
from harness.isolation.netns import DEFAULT_SUBNET, ROLES, ChainNetwork, Role, check_available, processes_in, sweep
from harness.isolation.probe_runner import ProbeRunner
from harness.model.topology import HopName, KeyType, Topology
from harness.runtime import ManagedProcess
from harness.targets.base import RunningChain
from harness.targets.local import LocalTarget, ProcessHop

if TYPE_CHECKING:
    from harness.isolation.capture import LinkCaptures, WireProof
    from harness.pki.certset import CertSet
    from harness.probe.result import ProbeResult
    from harness.runtime.envoy import AdminPort

__all__ = ["CALLER_NAMESPACE", "IsolatedChain", "IsolatedTarget", "open_isolated", "plaintext_backend",
           "stop_all_isolated"]

#: the namespace each hop's real caller lives in: a direct probe of the hop runs there
CALLER_NAMESPACE: Final[Mapping[HopName, Role]] = {"gateway": "internet", "apim": "gateway", "ingress": "apim",
                                                   "pod": "ingress"}
#: namespaces that get a probe runner (the pod calls nobody)
RUNNER_NAMESPACES: Final[tuple[Role, ...]] = ("internet", "gateway", "apim", "ingress")
#: seconds a runner may take beyond the probe's own timeout (its first answer pays for Python's start and imports)
RUNNER_GRACE: Final = 20.0

_LIVE: weakref.WeakSet[IsolatedTarget] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_LIVE_EVER: list[bool] = []  # non-empty once the atexit hook is installed


@dataclass
class IsolatedChain(RunningChain):
    """A running chain whose probes run inside network namespaces (see the module docstring)."""

    namespaces: Mapping[str, str] = field(default_factory=dict)
    links: list[dict[str, object]] = field(default_factory=list)
    pids: Mapping[str, int] = field(default_factory=dict)
    #: ``ip netns exec <internet>``: how to run your own client (curl) where the harness runs its probes
    client_argv_prefix: list[str] = field(default_factory=list)
    #: (hop, namespace the probe ran in, target) for every probe, in order
    probe_log: list[tuple[str, str, str]] = field(default_factory=list)
    _runner: Callable[[Role, str, int, dict[str, Any]], ProbeResult] | None = field(default=None, repr=False,
                                                                                    compare=False)

    def probe(self, hop: HopName = "gateway", *, vantage: Role | None = None, **overrides: Any) -> ProbeResult:
        """Probe ``hop`` as its caller would — trust, name, identity *and* network position: the probe runs in
        the caller's namespace (:data:`CALLER_NAMESPACE`), or in ``vantage``'s."""
        ep = self.endpoint(hop)
        where: Role = vantage or CALLER_NAMESPACE[hop]
        if where not in RUNNER_NAMESPACES:
            raise UsageError(f"vantage {where!r} has no probe runner — use one of {', '.join(RUNNER_NAMESPACES)}")
        if self._runner is None:
            raise HarnessError("this isolated chain is stopped: nothing can probe it")
        kwargs = ep.probe_kwargs() | overrides
        result = self._runner(where, ep.host, ep.port, kwargs)
        self.probe_log.append((hop, self.namespaces.get(where, where), f"{ep.host}:{ep.port}"))
        return result

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"isolated": {"namespaces": dict(self.namespaces), "links": list(self.links),
                                                 "pids": dict(self.pids),
                                                 "client_argv_prefix": list(self.client_argv_prefix)}}


def plaintext_backend(topology: Topology) -> Topology:
    """The variant with a plaintext ingress→pod hop: ``backend-protocol: HTTP`` (the pod then speaks plain HTTP)."""
    return topology.with_ingress_annotations(backend_protocol="HTTP")


def _plain_backend(topology: Topology) -> bool:
    return (topology.ingress.primary.annotation("backend-protocol") or "").upper() == "HTTP"


def _listens(pid: int, port: int) -> bool:
    """True when the namespace of process ``pid`` has a TCP socket in LISTEN state on ``port`` (no connection)."""
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 3 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


class IsolatedTarget(LocalTarget):
    """``with IsolatedTarget(topology) as chain:`` — the local chain, one network namespace per hop."""

    name = "local-isolated"

    def __init__(self, topology: Topology | None = None, *, certs: CertSet | None = None,
                 workdir: Path | None = None, keep_workdir: bool = False, subnet: str = DEFAULT_SUBNET,
                 capture: bool = False, capture_dir: Path | None = None, lanes: Sequence[Topology] = (),
                 lane_hosts: Mapping[str, frozenset[str]] | None = None,
                 lane_entries: Mapping[str, frozenset[HopName]] | None = None) -> None:
        super().__init__(topology, certs=certs, workdir=workdir, keep_workdir=keep_workdir, lanes=lanes,
                         lane_hosts=lane_hosts, lane_entries=lane_entries)
        self.subnet = subnet
        self.capture = capture
        self._given_capture_dir = capture_dir
        self.capture_dir: Path | None = None
        self.network: ChainNetwork | None = None
        self.captures: LinkCaptures | None = None
        self._runners: dict[Role, ProbeRunner] = {}
        self._rundir: Path | None = None
        #: processes found in this chain's namespaces at stop after everything was stopped (killed then); empty
        self.leftovers: dict[int, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def _start(self) -> RunningChain:
        check_available()
        with _LIVE_LOCK:
            if not _LIVE_EVER:  # the exit safety net, installed with the first isolated chain
                atexit.register(stop_all_isolated)
                _LIVE_EVER.append(True)
            _LIVE.add(self)
        self._rundir = Path(tempfile.mkdtemp(prefix="mtls-harness-isolated-"))
        self.network = ChainNetwork(subnet=self.subnet)
        self.network.setup()
        if self.capture:
            from harness.isolation.capture import LinkCaptures

            self.capture_dir = self._given_capture_dir or self._rundir / "captures"
            self.captures = LinkCaptures(self.network, self.capture_dir).start()
        for role in RUNNER_NAMESPACES:
            namespace = self.network.namespaces[role]
            runner = ProbeRunner(f"namespace {namespace}", self.network.exec_argv(role, [
                sys.executable, "-m", "harness.isolation.runner", "--serve", "--require-isolated", "--netns",
                namespace]), self._rundir / "runners" / f"{role}.log")
            self._runners[role] = runner
            runner.start()
        return super()._start()

    def stop(self) -> None:
        """Hops, runners, captures, then the namespaces (and with them the veths); idempotent."""
        try:
            super().stop()
        finally:
            for runner in self._runners.values():
                runner.stop()
            self._runners.clear()
            if self.captures is not None:
                self.captures.stop()
            network, self.network = self.network, None
            if network is not None:
                self.leftovers = processes_in(set(network.inodes.values()))
                for pid in self.leftovers:  # only processes inside this run's own namespaces
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                network.destroy()
            if self._rundir is not None:
                shutil.rmtree(self._rundir, ignore_errors=True)
                self._rundir = None
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def wire_proof(self) -> WireProof:
        """Stop the link captures and judge them (:func:`harness.isolation.capture.LinkCaptures.analyze`)."""
        if self.captures is None:
            raise UsageError("this chain was started without capture=True: there is nothing to judge")
        return self.captures.analyze()

    @property
    def pids(self) -> dict[str, int]:
        """Every process this target runs: hops, probe runners, captures."""
        out = {name: p.pid for name, p in self._procs.items() if p.proc is not None}
        out |= {f"runner-{r}": w.pid for r, w in self._runners.items() if w.pid is not None}
        if self.captures is not None:
            out |= {c.process.name: c.process.pid for c in self.captures if c.process.proc is not None}
        return out

    # -- hooks (harness.targets.local) -------------------------------------------------------------------------------
    def _net(self) -> ChainNetwork:
        if self.network is None:
            raise HarnessError("the isolated chain's namespaces are not set up")
        return self.network

    def _host(self, hop: str) -> str:
        return self._net().address(_role(hop))

    def _argv(self, hop: str, argv: list[str]) -> list[str]:
        return self._net().exec_argv(_role(hop), argv)

    def _listening(self, hop: str, port: int) -> Callable[[], bool]:
        def check() -> bool:
            proc = self._procs.get(hop)
            return proc is not None and proc.proc is not None and _listens(proc.pid, port)

        return check

    def _envoy_ready(self, hop: str, config: AdminPort) -> Callable[[], bool]:
        def check() -> bool:
            answer = self._runners[_role(hop)].call({"op": "http_get", "host": "127.0.0.1",
                                                     "port": config.admin_port, "path": "/ready"}, RUNNER_GRACE)
            result = answer.get("result") or {}
            return result.get("status") == 200 and str(result.get("body", "")).strip() == "LIVE"

        return check

    def _running_chain(self, **fields: Any) -> RunningChain:
        net = self._net()
        return IsolatedChain(**fields, namespaces={str(k): v for k, v in net.namespaces.items()},
                             links=[lk.as_dict() for lk in net.links], pids=self.pids,
                             client_argv_prefix=net.exec_argv("internet", []), _runner=self._run_probe)

    def _pod(self) -> ProcessHop:
        if not _plain_backend(self.topology):
            return super()._pod()
        assert self.workdir is not None
        docroot = self.workdir / "plain-pod"
        docroot.mkdir(parents=True, exist_ok=True)
        port = self.ports["pod"]
        argv = [sys.executable, "-m", "http.server", "--bind", self._host("pod"), "--directory", str(docroot),
                str(port)]
        proc = ManagedProcess("pod", self._argv("pod", argv), log_path=self._log("pod"))
        return ProcessHop("pod", proc, self._listening("pod", port))

    # -- probing -------------------------------------------------------------------------------------------------
    def _run_probe(self, vantage: Role, host: str, port: int, kwargs: dict[str, Any]) -> ProbeResult:
        runner = self._runners.get(vantage)
        if runner is None:
            raise HarnessError(f"no probe runner in the {vantage} namespace (the chain is stopped?)")
        return runner.probe(host, port, kwargs, RUNNER_GRACE)

    def reconfigure(self, topology: Topology) -> RunningChain:
        chain = super().reconfigure(topology)
        if isinstance(chain, IsolatedChain):
            chain.pids = self.pids
        return chain


def _role(hop: str) -> Role:
    hop = hop.partition(".")[0]  # a process of the hop's own (an nginx of other settings: "ingress.g1") runs there
    if hop not in ROLES:
        raise UsageError(f"unknown hop {hop!r} — use one of {', '.join(ROLES)}")
    return hop


def stop_all_isolated() -> list[str]:
    """Safety net (pytest_sessionfinish, atexit): stop every isolated chain still up, then remove any namespace
    left with this run's prefix (:func:`harness.isolation.netns.sweep`); returns the swept names."""
    with _LIVE_LOCK:
        targets = list(_LIVE)
    for t in targets:
        with contextlib.suppress(Exception):
            t.stop()
    try:
        check_available()
    except UsageError:
        return []
    return sweep()



def open_isolated(name: str = "local", *, topology: Topology | None = None, key_type: KeyType = "ecdsa",
                  **options: Any) -> IsolatedTarget:
    """``open_target`` for ``--isolate``: the local target in namespaces. One-line UsageError when it cannot be:
    another target than local, or not Linux / not root (:class:`~harness.isolation.netns.IsolationUnavailable`)."""
    from harness.model.topology import default_topology

    if name != "local":
        raise UsageError(f"--isolate runs the local target in network namespaces; it cannot isolate the {name} "
                         "target — use --target local")
    check_available()
    return IsolatedTarget(topology or default_topology(key_type), **options)
