"""Docker plumbing the containers and kind targets share: labels and the cleanup sweeps, the Envoy container, the
published gateway port, readiness of a set of containers, Ctrl-C held off while the Docker API creates things, and
the probe container (:class:`ProbeContainer`): the inner hops' callers' place on the chain's docker network, where a
:class:`ContainerChain` probes them from.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError, StartError, WaitTimeout
from harness.model.topology import HopName
from harness.model.wire import DETAIL_HEADER
from harness.runtime.wait import wait_until
from harness.targets.base import RunningChain

if TYPE_CHECKING:
    from harness.isolation.probe_runner import ProbeRunner
    from harness.probe.result import ProbeResult
    from harness.render.envoy import EnvoyConfig

__all__ = [
    "ADMIN_PORT",
    "HOP_PORT",
    "LABEL_HOP",
    "LABEL_RUN",
    "POD_SOURCE",
    "RUNNER_GRACE",
    "ContainerChain",
    "ContainerHop",
    "ProbeContainer",
    "can_probe",
    "configure_testcontainers",
    "container_log_tail",
    "deferred_interrupts",
    "envoy_container",
    "envoy_ready",
    "file_has",
    "harness_labels",
    "log_has",
    "published_port",
    "remove_run",
    "sweep_stale",
    "wait_for_hops",
    "wait_through_gateway",
]

#: the port every hop listens on inside its own container
HOP_PORT: Final = 8443
#: Envoy's admin interface, on the container's loopback only
ADMIN_PORT: Final = 9901
LABEL_RUN: Final = "io.mtls-harness.run"
LABEL_TARGET: Final = "io.mtls-harness.target"
LABEL_PID: Final = "io.mtls-harness.pid"
LABEL_HOST: Final = "io.mtls-harness.host"
LABEL_HOP: Final = "io.mtls-harness.hop"
_ENVOY_READY: Final = "all dependencies initialized. starting workers"
#: where the harness package is mounted into a container of the pod image (the pod, the probe container)
POD_SOURCE: Final = "/opt/mtls-harness"
#: seconds a probe through the probe container may take beyond its own timeout (docker exec, JSON both ways)
RUNNER_GRACE: Final = 10.0


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
def deferred_interrupts() -> Iterator[None]:
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


def container_log_tail(container: Any, lines: int = 25) -> str:
    from docker.errors import DockerException
    from testcontainers.core.exceptions import ContainerStartException

    try:
        raw = container.get_wrapped_container().logs(tail=lines)
    except (DockerException, OSError, ContainerStartException):  # gone, or never created
        return ""
    return bytes(raw).decode(errors="replace").rstrip()


def _first_errors(container: Any, count: int = 3) -> str:
    """The first error lines of a container's whole log (a crash's cause scrolls out of the tail quickly)."""
    lines = [line for line in container_log_tail(container, lines=2000).splitlines()
             if any(mark in line for mark in ("[error]", "[critical]", "[emerg]", "Error", "error:"))]
    return "".join(f"{line}\n" for line in lines[:count]) + ("…\n" if lines else "")


def envoy_container(image: str, config: EnvoyConfig | list[str], *, name: str, network: Any, alias: str,
                    labels: Mapping[str, str], mounts: Mapping[Path, str], publish: bool) -> Any:
    """An Envoy as a (not yet started) testcontainers DockerContainer: a stand-in's rendered config at the host
    path, log level info (its start line is the readiness signal), or a command line as given (the Gateway API
    ingress's); ``publish`` → the listener on 127.0.0.1:<any>."""
    from testcontainers.core.container import DockerContainer

    uid = os.getuid()
    argv = config if isinstance(config, list) else replace(config, log_level="info").argv(Path("envoy"))
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


def log_has(container: Any, text: str) -> bool:
    return text in container_log_tail(container, lines=400)


def envoy_ready(container: Any, log: Path | None = None) -> Callable[[], bool]:
    """Envoy's own ready signal in its log (the container's, or ``log`` when it logs to a file): listeners, clusters
    and SDS secrets initialised, workers starting."""
    if log is not None:
        return lambda: file_has(log, _ENVOY_READY)
    return lambda: log_has(container, _ENVOY_READY)


def file_has(path: Path, text: str) -> bool:
    with contextlib.suppress(OSError):
        return text in path.read_text(errors="replace")
    return False


@dataclass
class ContainerHop:
    name: str  # the hop, or a process of its own beside it ("ingress.g1")
    container: Any
    ready: Callable[[], bool]
    started_at: float = 0.0


def wait_for_hops(hops: list[ContainerHop], what: str, timeout: float, start_times: dict[str, float]) -> None:
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
        return "\n".join(f"[{n}] {_first_errors(h.container)}{container_log_tail(h.container)}"
                         for n, h in pending.items())

    try:
        wait_until(all_ready, what, timeout=timeout, log_tail=tails, alive=dead, retry_on=(OSError,))
    except WaitTimeout as exc:
        raise StartError(f"{what}: did not start (waiting for: {', '.join(pending) or 'nothing'})\n{exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# the target
# ---------------------------------------------------------------------------------------------------------------


def wait_through_gateway(chain: RunningChain, containers: Mapping[Any, Any], timeout: float) -> None:
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
        return last + "\n".join(f"[{h}] {container_log_tail(c, 10)}" for h, c in containers.items())

    try:
        wait_until(answers, "an answer through the gateway", timeout=timeout, log_tail=tails, max_interval=0.5)
    except WaitTimeout as exc:
        raise StartError(f"the chain's containers started but the gateway does not answer\n{exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# the probe container: where the inner hops' callers sit
# ---------------------------------------------------------------------------------------------------------------
def can_probe() -> bool:
    """Whether this machine can run the probe container: root (``nsenter`` removes its default routes) and the
    tools."""
    import shutil

    return os.geteuid() == 0 and all(shutil.which(tool) for tool in ("nsenter", "ip", "docker"))


def _drop_default_routes(pid: int) -> None:
    """Remove the IPv4 and the IPv6 default route from the network namespace of process ``pid`` (a container's).
    A dual-stack network (kind's is: kind pkg/cluster/internal/providers/docker/network.go) gives the container an
    IPv6 default route too; either one would let a client reach addresses beyond the docker network."""
    import subprocess

    for family in ("-4", "-6"):
        done = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", family, "route", "del", "default"],
                              capture_output=True, text=True, check=False, timeout=10)
        # "No such process" / "No such file or directory": that family has no default route (or no address at all)
        if done.returncode != 0 and not any(s in done.stderr for s in ("No such process", "No such file")):
            raise StartError(f"could not remove the probe container's {family[1:]}-family default route: "
                             f"{done.stderr.strip()}")


class ProbeContainer:
    """A container of the pod image on a chain's docker network, with its default routes removed (from the host, by
    ``nsenter`` into its network namespace: root only), running the probe runner under ``docker exec``
    (:class:`~harness.isolation.probe_runner.ProbeRunner`): the chain's private hops are probed from inside its
    network, by a client in a namespace with no default route (the runner checks that itself,
    ``--require-isolated``). ``mounts``: host paths mounted read-only at the same path (the cert sets the probes
    name by absolute path); the harness package is mounted at :data:`POD_SOURCE`, so the image's own copy (if any)
    does not matter. ``start()`` / ``stop()``; ``stop()`` is safe at any point."""

    def __init__(self, image: str, *, name: str, network: Any, labels: Mapping[str, str], mounts: Iterable[Path],
                 log: Path) -> None:
        self.image = image
        self.name = name
        self.network = network
        self.labels = {**labels, LABEL_HOP: "probe"}
        self.mounts = sorted(set(mounts))
        self.log = log
        self._container: Any = None
        self._runner: ProbeRunner | None = None

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        from harness.images.resolve import PROBE_MODULE, pod_packages
        from harness.isolation.probe_runner import ProbeRunner

        container = (DockerContainer(self.image, labels=dict(self.labels), user=f"{os.getuid()}:{os.getgid()}")
                     .with_name(self.name).with_network(self.network)
                     .with_command(["python3", "-c", "import time; time.sleep(86400)"])
                     .with_env("PYTHONPATH", POD_SOURCE).with_env("PYTHONDONTWRITEBYTECODE", "1"))
        for host_path in self.mounts:
            container.with_volume_mapping(str(host_path), str(host_path), "ro")
        for top, path in pod_packages().items():
            container.with_volume_mapping(str(path), f"{POD_SOURCE}/{top}", "ro")
        with deferred_interrupts():
            container.start()
        self._container = container
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        _drop_default_routes(int(wrapped.attrs["State"]["Pid"]))
        argv = ["docker", "exec", "-i", wrapped.name, "python3", "-m", PROBE_MODULE, "--serve", "--require-isolated",
                "--in-container"]
        self._runner = ProbeRunner(f"container {wrapped.name}", argv, self.log)
        self._runner.start()

    @property
    def running(self) -> bool:
        return self._runner is not None

    def probe(self, host: str, port: int, kwargs: dict[str, Any]) -> ProbeResult:
        """One probe of ``host:port`` (a name on the chain's network) from inside the probe container."""
        if self._runner is None:
            raise HarnessError(f"the probe runner in container {self.name} is stopped")
        return self._runner.probe(host, port, kwargs, RUNNER_GRACE)

    def stop(self) -> None:
        from docker.errors import DockerException

        if self._runner is not None:
            self._runner.stop()
            self._runner = None
        if self._container is not None:
            with contextlib.suppress(DockerException, OSError):  # already gone: the run's label sweep checks
                self._container.stop()
            self._container = None


@dataclass
class ContainerChain(RunningChain):
    """A chain whose private hops are probed from its probe container (``_runner``), where their callers sit; the
    hops not in ``inside`` (a published gateway, kind's ingress on 127.0.0.1) from this process, as the internet
    reaches them. Without a runner every hop is probed from this process (only the published ones have endpoints)."""

    _runner: Callable[[str, int, dict[str, Any]], ProbeResult] | None = field(default=None, repr=False,
                                                                                  compare=False)
    #: the hops probed from the probe container
    inside: frozenset[HopName] = frozenset({"apim", "ingress", "pod"})

    def probe(self, hop: HopName = "gateway", **overrides: Any) -> ProbeResult:
        if hop not in self.inside or self._runner is None:
            return super().probe(hop, **overrides)
        ep = self.endpoint(hop)
        return self._runner(ep.host, ep.port, ep.probe_kwargs() | overrides)
