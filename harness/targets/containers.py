"""The containers target: the same chain as the local target, each hop a Docker container (testcontainers).

    client ──▶ 127.0.0.1:<published> ─▶ gateway ──▶ apim ──▶ ingress ──▶ pod        (private docker network)

The configs are the local target's renderings (:func:`render_envoy`, :func:`render_nginx`, the echo pod's command
line) with container addresses: every hop listens on :data:`HOP_PORT` in its own container; each Envoy's upstream
is the next hop's network alias (a ``STRICT_DNS`` cluster), nginx's is the pod container's address on the network
(an ssl-passthrough ``map`` could not resolve a name without a ``resolver``), so the pod starts and is ready first.
Only the gateway's port is published, on 127.0.0.1 (and the network's default host binding is 127.0.0.1 too); the
other hops exist only on a private network this target creates, so the RunningChain has one endpoint and cases that
probe an inner hop skip. The cert set and the work directory are bind-mounted at their host paths (the rendered
files name them by absolute path); containers run as this process's uid/gid, so 0600 keys stay 0600 and readable.

Images: :func:`harness.images.resolve_image` (official by default, ``MTLS_HARNESS_*_IMAGE`` to choose, the
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
import os
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, StartError, WaitTimeout
from harness.images import docker_client, pod_packages, resolve_image
from harness.render.envoy import DETAIL_HEADER
from harness.runtime.wait import wait_until
from harness.targets.base import HopEndpoint, OwnCertSet, RunningChain, TargetBase
from harness.targets.local import endpoints_for
from harness.topology import HOPS, HopName, Topology, default_topology

if TYPE_CHECKING:
    from harness.pki import CertSet
    from harness.render.envoy import EnvoyConfig
    from harness.render.nginx import NginxConfig

__all__ = [
    "HOP_PORT",
    "LABEL_RUN",
    "ContainersTarget",
    "configure_testcontainers",
    "envoy_container",
    "envoy_ready",
    "harness_labels",
    "remove_run",
    "sweep_stale",
]

#: the port every hop listens on inside its own container
HOP_PORT: Final = 8443
#: Envoy's admin interface, on the container's loopback only
ADMIN_PORT: Final = 9901
#: one start of the four containers (measured here: well under 5 s with local images)
START_TIMEOUT: Final = 60.0
LABEL_RUN: Final = "io.mtls-harness.run"
LABEL_TARGET: Final = "io.mtls-harness.target"
LABEL_PID: Final = "io.mtls-harness.pid"
LABEL_HOST: Final = "io.mtls-harness.host"
LABEL_HOP: Final = "io.mtls-harness.hop"
_POD_SOURCE: Final = "/opt/mtls-harness"  # where the harness package is mounted into the pod container
_ENVOY_READY: Final = "all dependencies initialized. starting workers"


# ---------------------------------------------------------------------------------------------------------------
# docker plumbing shared with the kind target
# ---------------------------------------------------------------------------------------------------------------
def harness_labels(target: str, run_id: str, **extra: str) -> dict[str, str]:
    """The labels on every container and network a target creates: what the cleanup sweeps look for."""
    return {LABEL_RUN: run_id, LABEL_TARGET: target, LABEL_PID: str(os.getpid()), LABEL_HOST: socket.gethostname(),
            **extra}


def configure_testcontainers(client: Any) -> None:
    """No Ryuk image here (no registry either): turn Ryuk off and connect through the docker host, unless the user
    chose otherwise in the environment. Our own labels and context managers do Ryuk's job."""
    from docker.errors import ImageNotFound
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ:
        try:
            client.images.get(testcontainers_config.ryuk_image)
        except ImageNotFound:
            os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
            testcontainers_config.ryuk_disabled = True
    if "TESTCONTAINERS_CONNECTION_MODE" not in os.environ:
        os.environ["TESTCONTAINERS_CONNECTION_MODE"] = ConnectionMode.docker_host.value
        testcontainers_config.connection_mode_override = ConnectionMode.docker_host


def _remove(client: Any, filters: dict[str, Any]) -> list[str]:
    from docker.errors import APIError, DockerException, NotFound

    removed: list[str] = []
    # ignore_removed: another run's cleanup may remove a container between the listing and its inspection
    for container in client.containers.list(all=True, filters=filters, ignore_removed=True):
        try:
            container.remove(force=True, v=True)
            removed.append(str(container.name))
        except NotFound:
            pass
        except APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise HarnessError(f"could not remove container {container.name}: {exc}") from None
    for network in client.networks.list(filters=filters):
        try:
            network.remove()
            removed.append(str(network.name))
        except NotFound:
            pass
        except DockerException as exc:  # still has an endpoint we did not create: leave it, say so
            raise HarnessError(f"could not remove docker network {network.name}: {exc}") from None
    return removed


def remove_run(client: Any, run_id: str) -> list[str]:
    """Remove every container, then every network, labelled with ``run_id``; their names."""
    return _remove(client, {"label": f"{LABEL_RUN}={run_id}"})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(client: Any) -> list[str]:
    """Remove containers and networks of runs whose owner process on this host is gone (a SIGKILLed harness)."""
    host = socket.gethostname()
    stale: set[str] = set()
    for obj in [*client.containers.list(all=True, filters={"label": LABEL_RUN}, ignore_removed=True),
                *client.networks.list(filters={"label": LABEL_RUN})]:
        labels = obj.attrs.get("Labels") or obj.attrs.get("Config", {}).get("Labels") or {}
        pid = labels.get(LABEL_PID, "")
        if labels.get(LABEL_HOST) == host and pid.isdigit() and not _pid_alive(int(pid)):
            stale.add(labels[LABEL_RUN])
    removed: list[str] = []
    for run_id in sorted(stale):
        with contextlib.suppress(HarnessError):  # a network still in use: the next sweep tries again
            removed += remove_run(client, run_id)
    return removed


@contextlib.contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """Let cleanup finish: a Ctrl-C (or SIGTERM) arriving meanwhile is held and re-raised once it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        held.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if held:
            raise KeyboardInterrupt(f"signal {signal.Signals(held[0]).name} during cleanup")


def _logs(container: Any, lines: int = 25) -> str:
    from docker.errors import DockerException
    from testcontainers.core.exceptions import ContainerStartException

    try:
        raw = container.get_wrapped_container().logs(tail=lines)
    except (DockerException, OSError, ContainerStartException):  # gone, or never created
        return ""
    return bytes(raw).decode(errors="replace").rstrip()


def _first_errors(container: Any, count: int = 3) -> str:
    """The first error lines of a container's whole log (a crash's cause scrolls out of the tail quickly)."""
    lines = [line for line in _logs(container, lines=2000).splitlines()
             if any(mark in line for mark in ("[error]", "[critical]", "[emerg]", "Error", "error:"))]
    return "".join(f"{line}\n" for line in lines[:count]) + ("…\n" if lines else "")


def envoy_container(image: str, config: EnvoyConfig, *, name: str, network: Any, alias: str,
                    labels: Mapping[str, str], mounts: Mapping[Path, str], publish: bool) -> Any:
    """An Envoy stand-in as a (not yet started) testcontainers DockerContainer: its rendered config at the host
    path, log level info (its start line is the readiness signal), ``publish`` → the listener on 127.0.0.1:<any>."""
    from testcontainers.core.container import DockerContainer

    uid = os.getuid()
    argv = replace(config, log_level="info").argv(Path("envoy"))
    container = (DockerContainer(image, labels=dict(labels), user=f"{uid}:{os.getgid()}")
                 .with_name(name).with_command(argv).with_network(network).with_network_aliases(alias)
                 # the official image's entrypoint switches to its own user unless ENVOY_UID says who to run as
                 .with_env("ENVOY_UID", str(uid)))
    for host_path, mode in mounts.items():
        container.with_volume_mapping(str(host_path), str(host_path), mode)
    if publish:
        _publish_on_loopback(container, HOP_PORT)
    return container


def _publish_on_loopback(container: Any, port: int) -> None:
    # docker-py takes (host_ip,) for "this address, any free port"; testcontainers' with_bind_ports has no way to
    # name the address and would publish on 0.0.0.0
    container.ports[f"{port}/tcp"] = ("127.0.0.1",)


def published_port(container: Any, port: int = HOP_PORT) -> int:
    """The host port of ``port``, checked to be bound on 127.0.0.1 only."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    bindings = (wrapped.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(f"{port}/tcp") or []
    ips = {b.get("HostIp") for b in bindings}
    if not bindings or ips != {"127.0.0.1"}:
        raise StartError(f"{wrapped.name}: port {port} is published on {sorted(map(str, ips)) or 'nothing'}, "
                         "expected 127.0.0.1 only")
    return int(bindings[0]["HostPort"])


def _log_has(container: Any, text: str) -> bool:
    return text in _logs(container, lines=400)


def envoy_ready(container: Any) -> Callable[[], bool]:
    """Envoy's own ready signal in its log: listeners, clusters and SDS secrets initialised, workers starting."""
    return lambda: _log_has(container, _ENVOY_READY)


def _file_has(path: Path, text: str) -> bool:
    with contextlib.suppress(OSError):
        return text in path.read_text(errors="replace")
    return False


@dataclass
class _Hop:
    name: HopName
    container: Any
    ready: Callable[[], bool]
    started_at: float = 0.0


def wait_for_hops(hops: list[_Hop], what: str, timeout: float, start_times: dict[str, float]) -> None:
    """Start every hop's container in order, then wait for all of them at once; a hop that exits ends the wait."""
    from docker.errors import DockerException

    for hop in hops:
        hop.started_at = time.perf_counter()
        try:
            hop.container.start()
        except (DockerException, OSError) as exc:
            raise StartError(f"{what}: the {hop.name} container ({hop.container.image}) did not start: "
                             f"{str(exc).splitlines()[0]}") from None
    pending = {h.name: h for h in hops}

    def all_ready() -> bool:
        for name in list(pending):
            if pending[name].ready():
                start_times[name] = time.perf_counter() - pending[name].started_at
                del pending[name]
        return not pending

    def dead() -> str | None:
        for h in pending.values():
            wrapped = h.container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status in ("exited", "dead"):
                code = wrapped.attrs.get("State", {}).get("ExitCode")
                return f"the {h.name} container ({h.container.image}) exited with code {code}"
        return None

    def tails() -> str:
        return "\n".join(f"[{n}] {_first_errors(h.container)}{_logs(h.container)}" for n, h in pending.items())

    try:
        wait_until(all_ready, what, timeout=timeout, log_tail=tails, alive=dead, retry_on=(OSError,))
    except WaitTimeout as exc:
        raise StartError(f"{what}: did not start (waiting for: {', '.join(pending) or 'nothing'})\n{exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# the target
# ---------------------------------------------------------------------------------------------------------------
class ContainersTarget(OwnCertSet, TargetBase):
    """``with ContainersTarget(topology) as chain:`` — the chain as four containers; only the gateway published."""

    name = "containers"

    def __init__(self, topology: Topology | None = None, *, certs: CertSet | None = None,
                 envoy_image: str | None = None, nginx_image: str | None = None, pod_image: str | None = None,
                 workdir: Path | None = None, keep_workdir: bool = False,
                 start_timeout: float = START_TIMEOUT) -> None:
        self.topology = topology or default_topology()
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
        self._containers: dict[HopName, Any] = {}
        self._nginx: NginxConfig | None = None
        self._envoy: dict[str, EnvoyConfig] = {}
        self.gateway_port: int | None = None
        self.chain: RunningChain | None = None
        #: seconds from each container's start to its own ready signal, and "chain" for the whole start
        self.start_times: dict[str, float] = {}

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def labels(self) -> dict[str, str]:
        return harness_labels(self.name, self.run_id)

    def stop(self) -> None:
        """Remove the containers (gateway first), the network, any stray of this run, then the work directory."""
        with _deferred_interrupts():
            self._stop_containers()
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

    def _stop_containers(self, hops: tuple[HopName, ...] = ("gateway", "apim", "ingress", "pod")) -> None:
        from docker.errors import DockerException

        for hop in hops:
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
        if self._given_workdir is not None:
            self.workdir = self._given_workdir.resolve()
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-containers-")).resolve()
        self._network = self._create_network()
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
        hops = [self._ingress(), self._envoy_hop("apim"), self._envoy_hop("gateway")]
        for hop in hops:
            self._containers[hop.name] = hop.container
        wait_for_hops(hops, "containers chain start", self.start_timeout, self.start_times)
        self.gateway_port = published_port(self._containers["gateway"])
        chain = self._publish()
        t0 = time.perf_counter()
        _wait_through_gateway(chain, self._containers, self.start_timeout)
        self.start_times["first-request"] = time.perf_counter() - t0

    def _publish(self) -> RunningChain:
        assert self.gateway_port is not None
        ports: dict[HopName, int] = dict.fromkeys(HOPS, self.gateway_port)
        gateway = endpoints_for(self.topology, self.certs, ports)["gateway"]
        endpoints: dict[HopName, HopEndpoint] = {"gateway": gateway}
        logs = {f"{hop}-access": cfg.access_log for hop, cfg in self._envoy.items()}
        if self._nginx is not None:
            logs["ingress-error"] = self._nginx.error_log
        self.chain = RunningChain(target=self.name, topology=self.topology, certs=self.certs, endpoints=endpoints,
                                  logs=logs)
        return self.chain

    def container_logs(self, hop: HopName, lines: int = 200) -> str:
        """The last ``lines`` of a hop container's output (stdout and stderr)."""
        container = self._containers.get(hop)
        return _logs(container, lines) if container is not None else ""

    # -- the four hops -------------------------------------------------------------------------------------------
    def _mounts(self) -> dict[Path, str]:
        assert self.workdir is not None
        return {self.certs.directory.resolve(): "ro", self.workdir: "rw"}

    def _base(self, image: str, hop: HopName) -> Any:
        from testcontainers.core.container import DockerContainer

        container = (DockerContainer(image, labels={**self.labels, LABEL_HOP: hop},
                                     user=f"{os.getuid()}:{os.getgid()}")
                     .with_name(f"mtls-harness-{self.run_id}-{hop}")
                     .with_network(self._network).with_network_aliases(hop))
        for host_path, mode in self._mounts().items():
            container.with_volume_mapping(str(host_path), str(host_path), mode)
        return container

    def _pod(self) -> _Hop:
        listener = self.topology.pod.listener
        leaf = self.certs.leaf(listener.server_cert)
        argv = ["python3", "-m", "harness.pod.echo", "--listen", f"0.0.0.0:{HOP_PORT}",
                "--cert", str(leaf.chain.resolve()), "--key", str(leaf.key.resolve()),
                "--client-auth", listener.client_auth,
                "--min-version", listener.min_version, "--max-version", listener.max_version]
        if listener.client_ca:
            argv += ["--client-ca", str(self.certs.trust_bundle(listener.client_ca).resolve())]
        container = (self._base(self.images["pod"], "pod").with_command(argv)
                     .with_env("PYTHONPATH", _POD_SOURCE).with_env("PYTHONDONTWRITEBYTECODE", "1")
                     .with_env("PYTHONUNBUFFERED", "1"))
        # the harness package and what the pod imports are mounted: the official python image has none of them,
        # and a locally built pod image may hold an older harness
        for top, path in pod_packages().items():
            container.with_volume_mapping(str(path), f"{_POD_SOURCE}/{top}", "ro")
        return _Hop("pod", container, lambda: _log_has(container, "listening on"))

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
        from harness.render.nginx import render_nginx

        assert self.workdir is not None
        self._nginx = render_nginx(self.topology, self.certs, listen=("0.0.0.0", HOP_PORT),
                                   pod=(self._pod_address(), HOP_PORT), workdir=self.workdir / "ingress")
        return self._nginx

    def _ingress(self) -> _Hop:
        config = self._render_ingress()
        container = self._base(self.images["nginx"], "ingress").with_command(config.argv(Path("nginx")))
        return _Hop("ingress", container, lambda: _file_has(config.error_log, "start worker process"))

    def _envoy_hop(self, hop: HopName) -> _Hop:
        from harness.render.envoy import render_envoy

        assert self.workdir is not None
        assert hop in ("gateway", "apim")
        upstream = "apim" if hop == "gateway" else "ingress"
        config = render_envoy(self.topology, hop, self.certs,
                              listen=("0.0.0.0", HOP_PORT), upstream=(upstream, HOP_PORT),
                              admin=("127.0.0.1", ADMIN_PORT), workdir=self.workdir / hop)
        self._envoy[hop] = config
        container = envoy_container(self.images["envoy"], config, name=f"mtls-harness-{self.run_id}-{hop}",
                                    network=self._network, alias=hop, labels={**self.labels, LABEL_HOP: hop},
                                    mounts=self._mounts(), publish=hop == "gateway")
        return _Hop(hop, container, envoy_ready(container))

    # -- variants ------------------------------------------------------------------------------------------------
    def reconfigure(self, topology: Topology) -> RunningChain:
        """Turn the running chain into ``topology``: an ingress-only change is a hot reload (re-render + SIGHUP to
        nginx in its container); anything else restarts the four containers on the same network."""
        if self.chain is None:
            raise RuntimeError("the containers chain is not running")
        old, self.topology = self.topology, topology
        if old.pki != topology.pki:
            self._certs = None
        only_ingress = (old.pki == topology.pki and old.pod == topology.pod and old.apim == topology.apim
                        and old.gateway == topology.gateway)
        if only_ingress and old.ingress != topology.ingress:
            self._reload_ingress()
            return self._publish()
        if old == topology:
            return self.chain
        self._stop_containers()
        self._envoy.clear()
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


def _wait_through_gateway(chain: RunningChain, containers: Mapping[HopName, Any], timeout: float) -> None:
    """The published gateway answers and every hop behind it is connected: any answer counts (a variant may reject
    the probe on purpose, with 400, 401, 403 or 502), except no connection at all, a connection closed before any
    TLS answer, and an Envoy hop's "connection refused" to its upstream (``x-harness-detail``), which only mean "not
    listening yet"."""
    seen: list[str] = []

    def answers() -> bool:
        result = chain.probe("gateway")
        seen[:] = [result.describe()]
        # no connection, or one closed before any TLS answer (docker-proxy accepts before Envoy listens): not yet
        if result.outcome.kind in ("unreachable", "protocol_error"):
            return False
        detail = result.headers.get(DETAIL_HEADER, "").lower()
        return not (result.outcome.kind == "upstream_failure" and "refused" in detail)

    def tails() -> str:
        last = f"last answer: {seen[0]}\n" if seen else ""
        return last + "\n".join(f"[{h}] {_logs(c, 10)}" for h, c in containers.items())

    try:
        wait_until(answers, "an answer through the gateway", timeout=timeout, log_tail=tails, max_interval=0.5)
    except WaitTimeout as exc:
        raise StartError(f"the chain's containers started but the gateway does not answer\n{exc}") from None
