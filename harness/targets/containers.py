"""The containers target: the same chain as the local target, each hop a Docker container (testcontainers).

    client ──▶ 127.0.0.1:<published> ─▶ gateway ──▶ apim ──▶ ingress ──▶ pod        (private docker network)

The configs are the local target's renderings (:func:`render_envoy`, :func:`render_nginx`, the echo pod's command
line) with container addresses: every hop listens on :data:`HOP_PORT` in its own container; each Envoy's upstream
is the next hop's network alias (a ``STRICT_DNS`` cluster), nginx's is the pod container's address on the network
(an ssl-passthrough ``map`` could not resolve a name without a ``resolver``), so the pod starts and is ready first.
Only the gateway's port is published, on 127.0.0.1 (and the network's default host binding is 127.0.0.1 too); the
other hops exist only on a private network this target creates. Their callers sit on that network, and so does the
probe: a fifth container of the pod image, whose default routes the harness removes (``nsenter``, root only), runs
the probe runner under ``docker exec`` (:class:`~harness.isolation.probe_runner.ProbeRunner`); without root the inner
hops are declared unreachable and their cases skip by design. The cert set and the work directory are bind-mounted
at their host paths (the rendered files name them by absolute path); containers run as this process's uid/gid, so
0600 keys stay 0600 and readable.

Variants are lanes (:mod:`harness.targets.lanes`): with the probe container, every variant the session needs is
served by the same containers on ports of its own (8443 + i; a lane's gateway too is probed from the probe container),
an ingress of other controller settings by one more nginx container (alias ``ingress-g<n>``); every lane's cert set is
mounted. Without it (no root) a variant is reached by :meth:`ContainersTarget.reconfigure`.

Images: :func:`harness.images.resolve.resolve_image` (official by default, ``MTLS_HARNESS_*_IMAGE`` to choose, the
``images build`` ones when no registry answers). Readiness: each container's own signal (the pod's "listening on"
line, nginx's "start worker process" in its error log, Envoy's "starting workers" line), then an answer from the
published gateway (any status: a variant may reject on purpose); a container that exits ends the wait at once with
its log.

Cleanup: every container and the network carry the labels :func:`harness_labels` makes (run id, owner pid, host).
``__exit__``, a failed start and Ctrl-C remove them; a label sweep then removes anything of this run a half-finished
API call left behind, and at the next start anything whose owner process on this host is gone (no Ryuk needed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, LaneRefused, StartError, UsageError
from harness.images.resolve import LABEL_HEADERS_MORE, docker_client, pod_packages, resolve_image
from harness.model.topology import HOPS, HopName, Topology, default_topology
from harness.render.envoy import EnvoyLane, render_envoy
from harness.runtime.wait import wait_until
from harness.targets.base import (
    SERVER_HEADER_REMOVAL,
    ChainLimits,
    HopEndpoint,
    OwnCertSet,
    RunningChain,
    TargetBase,
    apim_jwks,
    lane_key,
)
from harness.targets.docker import (
    ADMIN_PORT,
    HOP_PORT,
    LABEL_HOP,
    POD_SOURCE,
    ContainerChain,
    ContainerHop,
    ProbeContainer,
    can_probe,
    configure_testcontainers,
    container_log_tail,
    deferred_interrupts,
    envoy_container,
    envoy_ready,
    file_has,
    harness_labels,
    log_has,
    published_port,
    remove_run,
    sweep_stale,
    wait_for_hops,
    wait_through_gateway,
)
from harness.targets.lanes import HOME_INGRESS, Lane, LanePlan, gateway_api_ingress, lay_out, pod_lane_specs
from harness.targets.local import endpoints_for

if TYPE_CHECKING:
    from harness.pki.certset import CertSet
    from harness.probe.result import ProbeResult
    from harness.render.envoy import EnvoyConfig
    from harness.render.envoy_gateway import GatewayApiEnvoy
    from harness.render.nginx import NginxConfig, NginxLane

__all__ = ["ContainersTarget"]

#: one start of the four containers (measured here: well under 5 s with local images)
START_TIMEOUT: Final = 60.0


#: what the containers target cannot run without its probe container: only the gateway is published; the inner hops
#: listen on the run's private docker network, which this process (on the host) never joins
LIMITS = ChainLimits(unreachable={
    hop: f"the {hop} hop listens only on the run's private docker network, and no probe container runs there (it "
         "needs root to remove its default route: run as root, or see docs/containers.md)"
    for hop in ("apim", "ingress", "pod")})


#: a passthrough lane's internal port in the ingress container: this + its index (its public port is HOP_PORT + index)
INTERNAL_PORT_BASE: Final = HOP_PORT + 500


def _alias(process: str) -> str:
    """A hop process's container name part and network alias (``ingress.g1`` → ``ingress-g1``)."""
    return process.replace(".", "-")


class ContainersTarget(OwnCertSet, TargetBase):
    """``with ContainersTarget(topology) as chain:`` — the chain as four containers; only the gateway published."""

    name = "containers"

    def __init__(self, topology: Topology | None = None, *, certs: CertSet | None = None,
                 envoy_image: str | None = None, nginx_image: str | None = None, pod_image: str | None = None,
                 workdir: Path | None = None, keep_workdir: bool = False,
                 start_timeout: float = START_TIMEOUT, lanes: Sequence[Topology] = (),
                 lane_hosts: Mapping[str, frozenset[str]] | None = None) -> None:
        self.topology = topology or default_topology()
        #: the variants to serve beside the chain, each on its own port of the same containers (harness.targets.lanes);
        #: ``lane_hosts``: the ingress hosts each one's cases probe (harness.cases.model.lanes_for), None: all
        self.variants = tuple(lanes)
        self.lane_hosts = lane_hosts
        self.lane_plan = LanePlan()
        self._certs = certs
        self._wanted = {"envoy": envoy_image, "nginx": nginx_image, "pod": pod_image}
        self.images: dict[str, str] = {}
        self._given_workdir = workdir
        self.keep_workdir = keep_workdir
        self.start_timeout = start_timeout
        self.workdir: Path | None = None
        self.run_id = secrets.token_hex(4)
        self._client: Any = None
        self._network: Any = None
        self._containers: dict[str, Any] = {}
        self._nginx: NginxConfig | None = None
        self._gateway_api: GatewayApiEnvoy | None = None
        self._nginx_extra: dict[str, NginxConfig] = {}
        self._envoy: dict[str, EnvoyConfig] = {}
        self.gateway_port: int | None = None
        self.chain: RunningChain | None = None
        self._prober: ProbeContainer | None = None
        self._headers_more = False
        #: seconds from each container's start to its own ready signal, and "chain" for the whole start
        self.start_times: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        return harness_labels(self.name, self.run_id)

    def stop(self) -> None:
        """Remove the containers (gateway first), the network, any stray of this run, then the work directory."""
        with deferred_interrupts():
            self._stop_containers()
            self._stop_prober()
            if self._network is not None:
                with contextlib.suppress(Exception):
                    self._network.remove()
                self._network = None
            try:
                if self._client is not None:
                    remove_run(self._client, self.run_id)  # strays of a half-finished call; raises if one stays
            finally:
                if self._client is not None:
                    self._client.close()
                    self._client = None
                if self.workdir is not None and not self.keep_workdir and self._given_workdir is None:
                    shutil.rmtree(self.workdir, ignore_errors=True)
                    self.workdir = None
                self.chain = None

    # -- the probe container: the inner hops' callers' place ---------------------------------------------------------
    def _start_prober(self) -> None:
        """The probe container (:class:`~harness.targets.docker.ProbeContainer`) on the chain's network, with every
        cert set mounted; without root there is none, and the inner hops stay unreachable."""
        if not can_probe():
            return
        assert self.workdir is not None
        prober = ProbeContainer(self.images["pod"], name=f"mtls-harness-{self.run_id}-probe", network=self._network,
                                labels=self.labels, mounts=self._mounts(), log=self.workdir / "probe-runner.log")
        self._prober = prober
        prober.start()

    def _run_probe(self, host: str, port: int, kwargs: dict[str, Any]) -> ProbeResult:
        if self._prober is None:
            raise HarnessError("the containers chain's probe runner is stopped")
        return self._prober.probe(host, port, kwargs)

    def _stop_prober(self) -> None:
        if self._prober is not None:
            self._prober.stop()
            self._prober = None

    def _stop_containers(self) -> None:
        from docker.errors import DockerException

        order = ("gateway", "apim", "ingress", *sorted(n for n in self._containers if n.startswith("ingress.")), "pod")
        for hop in (*order, *self._containers):
            container = self._containers.pop(hop, None)
            if container is not None:
                with contextlib.suppress(DockerException, OSError):  # already gone: remove_run checks afterwards
                    container.stop()

    def _start(self) -> RunningChain:
        t0 = time.perf_counter()
        self._client = docker_client()
        configure_testcontainers(self._client)
        sweep_stale(self._client)
        for role, wanted in self._wanted.items():
            self.images[role] = resolve_image(self._client, role, wanted)  # type: ignore[arg-type]
        # a locally built nginx image carries the headers-more module when this machine's nginx has it
        self._headers_more = self._client.images.get(self.images["nginx"]).labels.get(LABEL_HEADERS_MORE) == "1"
        if self._given_workdir is not None:
            self.workdir = self._given_workdir.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-containers-")).resolve()
        self._network = self._create_network()
        if can_probe():  # a lane's hops, its gateway too, are probed from inside the network
            self.lane_plan = lay_out(self.topology, self.certs, self.variants,
                                     lambda n: [HOP_PORT + i for i in range(1, n + 1) for _ in HOPS],
                                     hosts=self.lane_hosts, home_ports=dict.fromkeys(HOPS, HOP_PORT))
        elif self.variants:
            why = "no probe container (it needs root): a lane's ports are reached only from inside the chain's network"
            self.lane_plan = LanePlan(dropped={lane_key(t): why for t in self.variants})
        self._start_prober()
        self._launch()
        self.start_times["chain"] = time.perf_counter() - t0
        return self.chain or self._publish()

    def _create_network(self) -> Any:
        from docker.errors import DockerException
        from testcontainers.core.network import Network

        network = Network(docker_network_kw={
            "driver": "bridge", "labels": self.labels,
            # defence in depth: a port published on this network without an address binds 127.0.0.1, not 0.0.0.0
            "options": {"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"},
        })
        network.name = f"mtls-harness-{self.run_id}"
        try:
            return network.create()
        except DockerException as exc:
            raise StartError(f"could not create docker network {network.name}: {exc}") from None

    def _launch(self) -> None:
        pod = self._pod()
        self._containers["pod"] = pod.container
        wait_for_hops([pod], "containers chain start", self.start_timeout, self.start_times)  # nginx needs its address
        hops = self.lane_plan.render(lambda: [*self._ingresses(), self._envoy_hop("apim"), self._envoy_hop("gateway")])
        for hop in hops:
            self._containers[hop.name] = hop.container
        wait_for_hops(hops, "containers chain start", self.start_timeout, self.start_times)
        self.gateway_port = published_port(self._containers["gateway"])
        chain = self._publish()
        t0 = time.perf_counter()
        wait_through_gateway(chain, self._containers, self.start_timeout)
        self.start_times["first-request"] = time.perf_counter() - t0

    def _publish(self) -> RunningChain:
        assert self.gateway_port is not None
        ports: dict[HopName, int] = dict.fromkeys(HOPS, self.gateway_port)
        gateway = endpoints_for(self.topology, self.certs, ports)["gateway"]
        endpoints: dict[HopName, HopEndpoint] = {"gateway": gateway}
        limits = LIMITS
        if self._prober is not None:  # the inner hops by their network alias, from the probe container
            inner = endpoints_for(self.topology, self.certs, dict.fromkeys(HOPS, HOP_PORT))
            endpoints |= {hop: dataclasses.replace(inner[hop], host=hop) for hop in ("apim", "ingress", "pod")}
            limits = ChainLimits()
        if not self._headers_more and self.topology.ingress.gateway_api is None:
            limits = dataclasses.replace(limits, lacks={SERVER_HEADER_REMOVAL: (
                f"the nginx image {self.images['nginx']} has no headers-more module, so the ingress sends "
                "`Server: nginx` (docs/fidelity.md row 9; `mtls-harness images build` on a machine with "
                "libnginx-mod-http-headers-more-filter makes one that has it)")})
        runner = self._run_probe if self._prober is not None else None
        lanes: dict[str, RunningChain] = {}
        for lane in self.lane_plan.lanes:  # every hop of a lane, its gateway too, from the probe container
            eps = endpoints_for(lane.topology, lane.certs, lane.ports)
            hosts: dict[HopName, str] = {"gateway": "gateway", "apim": "apim", "ingress": _alias(lane.ingress),
                                         "pod": "pod"}
            lane.chain = ContainerChain(target=self.name, topology=lane.topology, certs=lane.certs,
                                         endpoints={h: dataclasses.replace(ep, host=hosts[h]) for h, ep in eps.items()},
                                         logs=self._evidence_logs(lane.ingress), states=self._states(),
                                         limits=limits, _runner=runner, inside=frozenset(HOPS))
            lanes[lane_key(lane.topology)] = lane.chain
        self.chain = ContainerChain(target=self.name, topology=self.topology, certs=self.certs, endpoints=endpoints,
                                     logs=self._evidence_logs(), states=self._states(), limits=limits,
                                     _runner=runner, lanes=lanes,
                                     layout=self.lane_plan.summary() if self.variants else {})
        return self.chain

    def _evidence_logs(self, ingress: str = HOME_INGRESS) -> dict[str, Path]:
        logs = {f"{hop}-access": cfg.access_log for hop, cfg in self._envoy.items()}
        if self.topology.ingress.gateway_api is not None and self._gateway_api is not None:
            logs |= {"ingress": self._gateway_api_log(), "ingress-envoy": self._gateway_api.access_log}
        else:
            nginx = self._nginx if ingress == HOME_INGRESS else self._nginx_extra.get(ingress)
            if nginx is not None:
                logs |= {"ingress-error": nginx.error_log, "ingress-access": nginx.access_log}
        logs["pod"] = self._pod_log()
        return logs

    def _states(self) -> dict[str, Path]:
        """A Gateway API ingress's listener states: the evidence of a listener its implementation left out."""
        served = self._gateway_api if self.topology.ingress.gateway_api is not None else None
        return served.states() if served is not None else {}

    def container_logs(self, hop: HopName, lines: int = 200) -> str:
        """The last ``lines`` of a hop container's output (stdout and stderr)."""
        container = self._containers.get(hop)
        return container_log_tail(container, lines) if container is not None else ""

    # -- the four hops -------------------------------------------------------------------------------------------
    def _mounts(self) -> dict[Path, str]:
        """The cert sets (the chain's and its lanes') read-only, the work directory read-write."""
        assert self.workdir is not None
        sets = {self.certs.directory.resolve(), *(lane.certs.directory.resolve() for lane in self.lane_plan.lanes)}
        return {**dict.fromkeys(sorted(sets), "ro"), self.workdir: "rw"}

    def _base(self, image: str, hop: HopName, name: str | None = None) -> Any:
        from testcontainers.core.container import DockerContainer

        container = (DockerContainer(image, labels={**self.labels, LABEL_HOP: hop},
                                     user=f"{os.getuid()}:{os.getgid()}")
                     .with_name(f"mtls-harness-{self.run_id}-{_alias(name or hop)}")
                     .with_network(self._network).with_network_aliases(_alias(name or hop)))
        for host_path, mode in self._mounts().items():
            container.with_volume_mapping(str(host_path), str(host_path), mode)
        return container

    def _pod(self) -> ContainerHop:
        listener = self.topology.pod.listener
        leaf = self.certs.leaf(listener.server_cert)
        argv = ["python3", "-m", "harness.pod.echo", "--listen", f"0.0.0.0:{HOP_PORT}",
                "--cert", str(leaf.chain.resolve()), "--key", str(leaf.key.resolve()),
                "--client-auth", listener.client_auth,
                "--min-version", listener.min_version, "--max-version", listener.max_version]
        if listener.client_ca:
            argv += ["--client-ca", str(self.certs.trust_bundle(listener.client_ca).resolve())]
        assert self.workdir is not None
        argv += ["--log", str(self._pod_log())]  # its lines name the pod's decisions (evidence), like the local pod's
        if self.lane_plan.on("pod"):
            import json

            from harness.pki.x509 import write_atomic

            lanes = self.workdir / "pod-lanes.json"
            specs = self.lane_plan.render(lambda: pod_lane_specs(self.lane_plan,
                                                                 lambda lane: f"0.0.0.0:{lane.ports['pod']}"))
            write_atomic(lanes, json.dumps(specs, indent=1).encode())
            argv += ["--lanes", str(lanes)]
        container = (self._base(self.images["pod"], "pod").with_command(argv)
                     .with_env("PYTHONPATH", POD_SOURCE).with_env("PYTHONDONTWRITEBYTECODE", "1")
                     .with_env("PYTHONUNBUFFERED", "1"))
        # the harness package and what the pod imports are mounted: the official python image has none of them,
        # and a locally built pod image may hold an older harness
        for top, path in pod_packages().items():
            container.with_volume_mapping(str(path), f"{POD_SOURCE}/{top}", "ro")
        return ContainerHop("pod", container, lambda: log_has(container, "listening on"))

    def _pod_log(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "pod.log"

    def _pod_address(self) -> str:
        """The pod container's address on the run's network, for nginx. Not the alias: nginx resolves a name in
        ``upstream`` only at load, and the ssl-passthrough ``map`` would need a ``resolver`` at run time. Only the
        ingress container connects to it; the host never does."""
        wrapped = self._containers["pod"].get_wrapped_container()
        wrapped.reload()
        address = str(wrapped.attrs["NetworkSettings"]["Networks"][self._network.name]["IPAddress"])
        if not address:
            raise StartError(f"the pod container has no address on network {self._network.name}")
        return address

    def _render_ingress(self) -> NginxConfig:
        from harness.runtime.nginx import render_ingress

        assert self.workdir is not None
        home = self.lane_plan.in_process(HOME_INGRESS)
        # headers-more only in an `images build` image of an nginx that has it: the official nginx image carries none,
        # and then this ingress sends `Server: nginx` (docs/fidelity.md row 9; ChainLimits.lacks says so)
        try:
            self._nginx = render_ingress(self.topology, self.certs, listen=("0.0.0.0", HOP_PORT),
                                         pod=(self._pod_address(), HOP_PORT), workdir=self.workdir / "ingress",
                                         clear_server_header=self._headers_more, lanes=self._nginx_lanes(home))
        except LaneRefused as exc:
            self.lane_plan.blame(home, exc)
        return self._nginx

    def _nginx_lanes(self, lanes: Sequence[Lane]) -> list[NginxLane]:
        from harness.render.nginx import NginxLane

        pod = self._pod_address()
        from harness.render.nginx import uses_passthrough

        # a passthrough lane's TLS servers listen behind its SNI router on a port of the lane's own
        return [NginxLane(lane.served, lane.certs, listen=("0.0.0.0", lane.ports["ingress"]),
                          pod=(pod, lane.ports["pod"]),
                          internal_port=INTERNAL_PORT_BASE + lane.index if uses_passthrough(lane.served) else None)
                for lane in lanes]

    def _ingresses(self) -> list[ContainerHop]:
        """The chain's nginx container (with every lane of its controller settings) and one more per other group; a
        Gateway API ingress: one Envoy container, every lane a listener of it."""
        if self.topology.ingress.gateway_api is not None:
            return [self._gateway_api_ingress()]
        config = self._render_ingress()
        container = self._base(self.images["nginx"], "ingress").with_command(config.argv(Path("nginx")))
        out = [ContainerHop("ingress", container, lambda: file_has(config.error_log, "start worker process"))]
        for name in self.lane_plan.ingress_processes:
            lanes = self.lane_plan.in_process(name)
            if lanes:
                out.append(self._extra_ingress(name, lanes))
        return out

    def _gateway_api_ingress(self) -> ContainerHop:
        """The ingress hop as a Gateway API implementation's data plane: an Envoy container (the envoy image) with
        the bootstrap :func:`~harness.targets.lanes.gateway_api_ingress` renders, as the local target runs it. Its log
        goes to a file in the work directory: the evidence a case reads (the certificates it refused) and its ready
        line."""
        assert self.workdir is not None
        config = gateway_api_ingress(self.lane_plan, self.topology, self.certs, listen=("0.0.0.0", HOP_PORT),
                                     pod=(self._pod_address(), HOP_PORT), admin=("127.0.0.1", ADMIN_PORT),
                                     workdir=self.workdir / "ingress")
        self._gateway_api = config
        log = self._gateway_api_log()
        log.unlink(missing_ok=True)  # a restart's ready line is its own
        argv = config.argv(Path("envoy"), log_level="info", log_path=log)
        container = envoy_container(self.images["envoy"], argv, name=f"mtls-harness-{self.run_id}-ingress",
                                    network=self._network, alias="ingress",
                                    labels={**self.labels, LABEL_HOP: "ingress"}, mounts=self._mounts(),
                                    publish=False)
        return ContainerHop("ingress", container, envoy_ready(container, log))

    def _gateway_api_log(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "ingress" / "envoy.log"

    def _extra_ingress(self, name: str, lanes: list[Lane]) -> ContainerHop:
        """An nginx container of its own (network alias :func:`_alias`) for lanes whose controller settings differ
        from the chain's: the first lane is its home server set, the others its lanes."""
        from harness.runtime.nginx import render_ingress

        assert self.workdir is not None
        first, rest = lanes[0], lanes[1:]
        try:
            config = render_ingress(first.served, first.certs, listen=("0.0.0.0", first.ports["ingress"]),
                                    pod=(self._pod_address(), first.ports["pod"]), workdir=self.workdir / name,
                                    clear_server_header=self._headers_more, lanes=self._nginx_lanes(rest))
        except LaneRefused as exc:
            self.lane_plan.blame(rest, exc)
        except UsageError as exc:
            self.lane_plan.blame([first], LaneRefused(1, str(exc)))
        self._nginx_extra[name] = config
        container = self._base(self.images["nginx"], "ingress", name=name).with_command(config.argv(Path("nginx")))
        return ContainerHop(name, container, lambda: file_has(config.error_log, "start worker process"))

    def _envoy_hop(self, hop: HopName) -> ContainerHop:
        assert self.workdir is not None
        assert hop in ("gateway", "apim")
        upstream = "apim" if hop == "gateway" else "ingress"
        lanes = self.lane_plan.on(hop)
        try:
            config = render_envoy(self.topology, hop, self.certs,
                                  listen=("0.0.0.0", HOP_PORT), upstream=(upstream, HOP_PORT),
                                  admin=("127.0.0.1", ADMIN_PORT), workdir=self.workdir / hop,
                                  jwks=apim_jwks(self.topology, self.certs),
                                  lanes=[EnvoyLane(lane.topology, lane.certs, listen=("0.0.0.0", lane.ports[hop]),
                                                   upstream=(_alias(lane.ingress) if hop == "apim" else upstream,
                                                             lane.ports["apim" if hop == "gateway" else "ingress"]),
                                                   jwks=apim_jwks(lane.topology, lane.certs)) for lane in lanes])
        except LaneRefused as exc:
            self.lane_plan.blame(lanes, exc)
        self._envoy[hop] = config
        container = envoy_container(self.images["envoy"], config, name=f"mtls-harness-{self.run_id}-{hop}",
                                    network=self._network, alias=hop, labels={**self.labels, LABEL_HOP: hop},
                                    mounts=self._mounts(), publish=hop == "gateway")
        return ContainerHop(hop, container, envoy_ready(container))

    # -- variants ------------------------------------------------------------------------------------------------
    def reconfigure(self, topology: Topology) -> RunningChain:
        """Turn the running chain into ``topology``: an ingress-only change is a hot reload (re-render + SIGHUP to
        nginx in its container); anything else restarts the four containers on the same network."""
        if self.chain is None:
            raise RuntimeError("the containers chain is not running")
        lane = self.chain.lanes.get(lane_key(topology))
        if lane is not None:
            return lane  # served all along on its own ports: nothing restarts
        if self.lane_plan.lanes:
            for served in self.chain.lanes.values():
                served.evict("the chain was reconfigured into a variant it did not serve as a lane: its lanes are "
                             "gone")
            self.lane_plan = LanePlan()
        old, self.topology = self.topology, topology
        if old.pki != topology.pki:
            self._certs = None
        only_ingress = (old.ingress.gateway_api is None and topology.ingress.gateway_api is None  # nginx: reload
                        and old.pki == topology.pki and old.pod == topology.pod and old.apim == topology.apim
                        and old.gateway == topology.gateway)
        if only_ingress and old.ingress != topology.ingress:
            self._reload_ingress()
            return self._publish()
        if old == topology:
            return self.chain
        self._stop_containers()
        self._envoy.clear()
        self._nginx_extra.clear()
        if old.pki != topology.pki and self._prober is not None:
            # the probes name the new cert set's files by their path: the probe container must have it mounted
            self._stop_prober()
            self._start_prober()
        self._launch()
        return self._publish()

    def _reload_ingress(self) -> None:
        container = self._containers["ingress"]
        config = self._render_ingress()
        check = container.exec(config.test_argv(Path("nginx")))
        if check.exit_code != 0:
            raise StartError(f"nginx -t refused the re-rendered {config.conf_path}; nginx keeps the old config:\n"
                             f"{check.output.decode(errors='replace').strip()}")
        offset = config.error_log.stat().st_size if config.error_log.exists() else 0
        container.get_wrapped_container().kill(signal="SIGHUP")

        def reloaded() -> bool:
            with open(config.error_log, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode(errors="replace")
            if "[emerg]" in text:
                raise StartError(f"nginx refused the reload: {text.strip().splitlines()[-1]}")
            # a new worker runs the new config, and the old one has finished its requests and closed its
            # keep-alive connections (apim's pooled connection to it included): no later request sees the old config
            return "start worker process" in text and "exited with code" in text

        wait_until(reloaded, "ingress container reload (SIGHUP)", timeout=15.0, retry_on=(OSError,))
