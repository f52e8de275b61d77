"""The kind target: the ingress and pod hops on a kind cluster, gateway and APIM as Envoy containers beside it.

    client ──▶ 127.0.0.1:<published> ─▶ gateway ──▶ apim ──(kind network)──▶ <cluster>-control-plane:443
                                                                     ingress-nginx (hostPort 443) ──▶ echo pod

What ``with KindTarget(topology, lanes=variants) as chain:`` does, in order (each step bounded in time):

1. finds ``kind``, ``kubectl`` and a Docker engine (a missing one is one :class:`ToolMissingError` line);
2. lays the variants out as lanes (:mod:`harness.targets.kind_lanes`: one ingress-nginx serves them all, each under
   host names of its own), renders the Kubernetes manifests of the chain and its lanes (:func:`render_manifests`,
   :func:`~harness.render.k8s_lanes.render_lanes`) and validates them offline (:func:`validate_manifests`) before
   touching anything;
3. creates the cluster from ``kind-config/kind-cluster.yaml`` — or, with ``keep_cluster`` (``--keep-cluster``,
   ``MTLS_HARNESS_KIND_KEEP_CLUSTER=1``), reuses one of that name and leaves it running afterwards. Without it an
   existing cluster of that name is an error: the target never deletes a cluster it did not create;
4. installs the pinned ingress-nginx: the kind provider manifest, downloaded (or read from
   ``MTLS_HARNESS_INGRESS_NGINX_MANIFEST`` on an air-gapped machine) and refused unless its sha256 equals the pin
   (:func:`verify_ingress_nginx_manifest`), applied with ``kubectl apply``; waits for the controller;
5. ``kind load docker-image`` of the echo image (the ``images build`` pod image: it has the harness inside), then
   server-side apply of the controller ConfigMap, Namespaces, Secrets, Deployment, Services and Ingresses with the
   ``kubernetes`` client (kubeconfig from ``kind get kubeconfig``), then each lane's Secrets and Ingresses (one the
   cluster refuses drops that lane, with why); waits for the Deployment and for the ingress to answer on
   127.0.0.1:18443 (kind-config's loopback port mapping) — the chain's host with APIM's client certificate, every
   lane host with its own certificate;
6. starts apim and gateway as Envoy containers (testcontainers) on kind's ``kind`` network
   (``KIND_EXPERIMENTAL_DOCKER_NETWORK`` is honoured) — apim's upstream is the control-plane node's port 443, every
   lane a listener of its own on both — and the probe container (:class:`~harness.targets.docker.ProbeContainer`,
   root only) on the same network; waits for a request through the published gateway to reach the pod.

Endpoints: the gateway (127.0.0.1, published) and the ingress (127.0.0.1:18443) from this process; apim (its network
alias) and the pod (the node's port of the ``echo-probe`` NodePort Service: where kube-proxy forwards to the pod's own
listener) from the probe container, where their callers sit. Without root there is no probe container: apim and the
pod are declared unreachable, and there are no lanes (a lane's gateway is reached only from inside). Cert rotation on
kind (:meth:`KindTarget.rotate_ingress_cert`) updates the Ingress's TLS Secret and waits until a handshake shows the
new certificate. Not run on the machine that wrote it (no kind, no cluster there): the manifests, the lane layout and
the probe container are checked offline and against real containers; docs/containers.md says what was.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from harness.errors import HarnessError, LaneRefused, StartError, ToolMissingError, UsageError, WaitTimeout
from harness.images.resolve import docker_client, local_image_tag, resolve_image
from harness.model.topology import HOPS, HopName, Topology, default_topology
from harness.render.envoy import EnvoyLane, render_envoy
from harness.runtime.wait import wait_until
from harness.targets.base import ChainLimits, HopEndpoint, OwnCertSet, RunningChain, TargetBase, apim_jwks, lane_key
from harness.targets.docker import (
    HOP_PORT,
    LABEL_HOP,
    ContainerHop,
    ProbeContainer,
    can_probe,
    configure_testcontainers,
    deferred_interrupts,
    envoy_container,
    envoy_ready,
    harness_labels,
    published_port,
    remove_run,
    sweep_stale,
    wait_for_hops,
    wait_through_gateway,
)
from harness.targets.kind_cli import (
    _KIND_HINT,
    _KUBECTL_HINT,
    CONTROLLER_WAIT,
    _api_error,
    _Network,
    _run,
    _truthy,
    _with_controller_args,
    find_tool,
    kind_create_argv,
    kind_delete_argv,
    kind_get_clusters_argv,
    kind_kubeconfig_argv,
    kind_load_argv,
    kubectl_apply_argv,
    kubectl_wait_controller_argv,
)
from harness.targets.kind_lanes import (
    INGRESS_NODE_PORT,
    KindLane,
    kind_chain,
    lane_chains,
    plan_kind_lanes,
    pod_node_port,
    wait_lane_hosts,
)
from harness.targets.lanes import LanePlan
from harness.targets.local import endpoints_for

if TYPE_CHECKING:
    from harness.pki.certset import CertSet
    from harness.probe.result import ProbeResult
    from harness.render.envoy import EnvoyConfig

__all__ = [
    "DEFAULT_CLUSTER",
    "KindTarget",
    "find_tool",
    "kind_create_argv",
    "kind_delete_argv",
    "kind_get_clusters_argv",
    "kind_kubeconfig_argv",
    "kind_load_argv",
    "kubectl_apply_argv",
    "kubectl_wait_controller_argv",
]

DEFAULT_CLUSTER: Final = "mtls-harness"
KEEP_ENV: Final = "MTLS_HARNESS_KIND_KEEP_CLUSTER"
MANIFEST_ENV: Final = "MTLS_HARNESS_INGRESS_NGINX_MANIFEST"
#: kind's own override of its docker network's name (kind: pkg/cluster/internal/providers/docker/network.go)
KIND_NETWORK_ENV: Final = "KIND_EXPERIMENTAL_DOCKER_NETWORK"
_CONFIG: Final = Path(__file__).resolve().parents[2] / "kind-config" / "kind-cluster.yaml"
_FIELD_MANAGER: Final = "mtls-harness"
ROLLOUT_TIMEOUT: Final = 180.0
INGRESS_TIMEOUT: Final = 120.0


# ---------------------------------------------------------------------------------------------------------------
# the target
# ---------------------------------------------------------------------------------------------------------------
#: what the kind target cannot run without its probe container: the gateway and the ingress are published on
#: 127.0.0.1; apim is an Envoy container on the `kind` network and the pod is inside the cluster
LIMITS = ChainLimits(unreachable={
    "apim": "the apim hop listens only on the `kind` docker network, and no probe container runs there (it needs "
            "root to remove its default routes: run as root, or see docs/containers.md)",
    "pod": "the pod listens only inside the kind cluster (and on the node's port of its NodePort Service, on the "
           "`kind` docker network), and no probe container runs there (it needs root: run as root, or see "
           "docs/containers.md)"})
#: why no variant is a lane without the probe container
_NO_PROBER: Final = ("no probe container (it needs root): a lane's gateway and apim listen only on the `kind` docker "
                     "network")


class KindTarget(OwnCertSet, TargetBase):
    """``with KindTarget(topology) as chain:`` — ingress-nginx + the echo pod on kind, Envoy hops beside it."""

    name = "kind"

    def __init__(self, topology: Topology | None = None, *, certs: CertSet | None = None,
                 cluster_name: str = DEFAULT_CLUSTER, config: Path | None = None, keep_cluster: bool | None = None,
                 envoy_image: str | None = None, echo_image: str | None = None,
                 ingress_nginx_manifest: Path | None = None, start_timeout: float = 120.0,
                 lanes: Sequence[Topology] = (), lane_hosts: Mapping[str, frozenset[str]] | None = None) -> None:
        self.topology = topology or default_topology()
        #: the variants to serve beside the chain, each a lane on the same controller, pod and Envoy containers
        #: (harness.targets.kind_lanes); ``lane_hosts``: the ingress hosts each one's cases probe, None: all
        self.variants = tuple(lanes)
        self.lane_hosts = lane_hosts
        self.lane_plan = LanePlan()
        self._lane_docs: dict[int, list[dict[str, Any]]] = {}
        self._prober: ProbeContainer | None = None
        self._certs = certs
        self.cluster_name = cluster_name
        self.config = Path(config) if config is not None else _CONFIG
        self.keep_cluster = _truthy(os.environ.get(KEEP_ENV)) if keep_cluster is None else keep_cluster
        self._envoy_wanted = envoy_image
        self._echo_wanted = echo_image
        manifest = ingress_nginx_manifest or os.environ.get(MANIFEST_ENV)
        self.ingress_nginx_manifest = Path(manifest) if manifest else None
        self.start_timeout = start_timeout
        self.run_id = secrets.token_hex(4)
        self.network = os.environ.get(KIND_NETWORK_ENV) or "kind"
        self.kind = self.kubectl = ""
        self.workdir: Path | None = None
        self.created_cluster = False
        self._client: Any = None
        self._api: Any = None
        self._dynamic: Any = None
        self._containers: dict[HopName, Any] = {}
        self.gateway_port: int | None = None
        self.chain: RunningChain | None = None
        self.start_times: dict[str, float] = {}

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "kubeconfig"

    @property
    def node(self) -> str:
        """The control-plane node container: its name is its DNS name on the kind network."""
        return f"{self.cluster_name}-control-plane"

    # -- lifecycle -----------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove the Envoy containers; delete the cluster only if this target created it and may not keep it."""
        with deferred_interrupts():
            if self._prober is not None:
                self._prober.stop()
                self._prober = None
            for container in self._containers.values():
                with contextlib.suppress(Exception):  # already gone: remove_run checks afterwards
                    container.stop()
            self._containers.clear()
            if self._client is not None:
                try:
                    remove_run(self._client, self.run_id)
                finally:
                    self._client.close()
                    self._client = None
            if self._api is not None:
                with contextlib.suppress(Exception):
                    self._api.close()
                self._api = None
            if self.created_cluster and not self.keep_cluster and self.workdir is not None:
                with contextlib.suppress(HarnessError):
                    _run(kind_delete_argv(self.kind, self.cluster_name, self.kubeconfig), "kind delete", 300)
                self.created_cluster = False
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
            self.chain = None

    def _tools(self) -> None:
        self.kind = find_tool("kind", _KIND_HINT)
        self.kubectl = find_tool("kubectl", _KUBECTL_HINT)
        self._client = docker_client()

    def _start(self) -> RunningChain:
        if self.topology.ingress.gateway_api is not None:
            raise UsageError(f"the kind target runs ingress-nginx only: a Gateway API ingress "
                             f"({self.topology.ingress.kind}) runs on the local and containers targets "
                             "(--mtls-target local|containers, optionally --mtls-isolate; docs/gateway-api.md)")
        t0 = time.perf_counter()
        self._tools()
        if not self.config.is_file():
            raise UsageError(f"kind config {self.config} does not exist — pass config= (kind-config/kind-cluster.yaml "
                             "in the repository)")
        configure_testcontainers(self._client)
        sweep_stale(self._client)
        envoy_image = resolve_image(self._client, "envoy", self._envoy_wanted)
        echo_image = self._echo_image()
        self.plan_lanes()
        docs = self._manifests(echo_image)  # rendered and validated before anything is created
        self.workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-kind-")).resolve()
        self._cluster()
        self._install_ingress_nginx()
        _run(kind_load_argv(self.kind, echo_image, self.cluster_name), "kind load docker-image", 600)
        self._apply(docs)
        self._apply_lanes()
        self._wait_rollout()
        self._wait_ingress()
        self._wait_lane_hosts()
        self._envoy_hops(envoy_image)
        self.start_times["chain"] = time.perf_counter() - t0
        return self.chain or self._publish()

    # -- lanes ---------------------------------------------------------------------------------------------------
    def plan_lanes(self, *, probe: bool | None = None) -> LanePlan:
        """Lay the variants out as lanes (:func:`plan_kind_lanes`); with no probe container (``probe``: whether one
        can run, default :func:`can_probe`) none is a lane, each dropped with why."""
        if not self.variants:
            self.lane_plan = LanePlan()
        elif can_probe() if probe is None else probe:
            self.lane_plan = plan_kind_lanes(self.topology, self.certs, self.variants, hosts=self.lane_hosts)
        else:
            self.lane_plan = LanePlan(dropped={lane_key(t): _NO_PROBER for t in self.variants
                                               if lane_key(t) != lane_key(self.topology)})
        return self.lane_plan

    def _kind_lanes(self) -> list[KindLane]:
        return [lane for lane in self.lane_plan.lanes if isinstance(lane, KindLane)]

    def _apply_lanes(self) -> None:
        """Each lane's Secrets and Ingresses; one the cluster refuses (ingress-nginx's admission webhook) drops its
        lane, with the refusal as the reason (its objects already applied stay: they name hosts no one probes)."""
        for lane in self._kind_lanes():
            docs = self._lane_docs.get(lane.index)
            if not docs:
                continue
            try:
                self._apply(docs)
            except StartError as exc:
                self.lane_plan.lanes.remove(lane)
                assert lane.variant is not None
                self.lane_plan.dropped[lane_key(lane.variant)] = f"the cluster refused its objects: {exc}"

    def _wait_lane_hosts(self) -> None:
        """Every lane host served with its own certificate (:func:`wait_lane_hosts`), on 127.0.0.1:18443."""
        wait_lane_hosts(self.lane_plan, lambda host: self._probe_ingress(
            server_name=host, verify=False, client_cert=None, client_key=None), timeout=INGRESS_TIMEOUT)

    # -- cluster and workload ------------------------------------------------------------------------------------
    def _echo_image(self) -> str:
        from docker.errors import ImageNotFound

        wanted = self._echo_wanted or os.environ.get("MTLS_HARNESS_POD_IMAGE") or local_image_tag("pod")
        try:
            self._client.images.get(wanted)
        except ImageNotFound:
            raise ToolMissingError(f"image {wanted}", "kind loads the echo pod's image from this machine and it "
                                   "needs the harness inside: run `mtls-harness images build --only pod`, or set "
                                   "MTLS_HARNESS_POD_IMAGE to an image that has it") from None
        return wanted

    def _manifests(self, echo_image: str) -> list[dict[str, Any]]:
        from harness.render.k8s import render_controller_config, render_manifests, validate_manifests
        from harness.render.k8s_lanes import render_lanes

        docs = [render_controller_config(self.topology), *render_manifests(self.topology, self.certs,
                                                                           echo_image=echo_image)]
        lanes = [lane.k8s() for lane in self._kind_lanes() if "ingress" in lane.own]
        docs, self._lane_docs = render_lanes(docs, self.topology, lanes)
        errors = validate_manifests([*docs, *(d for own in self._lane_docs.values() for d in own)])
        if errors:
            raise UsageError("the rendered manifests do not validate: " + "; ".join(errors))
        return docs

    def lane_manifests(self) -> dict[int, list[dict[str, Any]]]:
        """Each lane's own documents (its Secrets and Ingresses) by lane index, as :meth:`_manifests` rendered them."""
        return dict(self._lane_docs)

    def _cluster(self) -> None:
        existing = _run(kind_get_clusters_argv(self.kind), "kind get clusters", 60).split()
        if self.cluster_name in existing:
            if not self.keep_cluster:
                raise UsageError(f"a kind cluster named {self.cluster_name!r} already exists — pass --keep-cluster "
                                 f"(or {KEEP_ENV}=1) to reuse it and leave it running, or delete it: "
                                 f"kind delete cluster --name {self.cluster_name}")
        else:
            self.created_cluster = True
            t0 = time.perf_counter()
            _run(kind_create_argv(self.kind, self.cluster_name, self.config, self.kubeconfig), "kind create cluster",
                 900)
            self.start_times["cluster"] = time.perf_counter() - t0
        kubeconfig = _run(kind_kubeconfig_argv(self.kind, self.cluster_name), "kind get kubeconfig", 60)
        fd = os.open(self.kubeconfig, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the cluster's admin key
        with os.fdopen(fd, "w") as fh:
            fh.write(kubeconfig)
        from kubernetes import config, dynamic

        self._api = config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]
        self._dynamic = dynamic.DynamicClient(self._api)  # type: ignore[no-untyped-call]

    def _manifest_bytes(self) -> bytes:
        from harness.render.k8s import ingress_nginx_manifest_url, verify_ingress_nginx_manifest

        if self.ingress_nginx_manifest is not None:
            try:
                data = self.ingress_nginx_manifest.read_bytes()
            except OSError as exc:
                raise UsageError(f"{self.ingress_nginx_manifest}: {exc.strerror} — set {MANIFEST_ENV} to a copy of "
                                 f"{ingress_nginx_manifest_url()}") from None
        else:
            url = ingress_nginx_manifest_url()
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 - a fixed https URL
                    data = resp.read()
            except OSError as exc:
                raise StartError(f"could not download {url}: {exc} — on an air-gapped machine set {MANIFEST_ENV} "
                                 "to a local copy (it is checked against the same pin)") from None
        verify_ingress_nginx_manifest(data)
        return data

    def _install_ingress_nginx(self) -> None:
        assert self.workdir is not None
        manifest = self.workdir / "ingress-nginx.yaml"
        manifest.write_bytes(_with_controller_args(self._manifest_bytes(), self.topology))
        t0 = time.perf_counter()
        _run(kubectl_apply_argv(self.kubectl, self.kubeconfig, manifest), "kubectl apply (ingress-nginx)", 300)
        _run(kubectl_wait_controller_argv(self.kubectl, self.kubeconfig), "ingress-nginx controller ready",
             CONTROLLER_WAIT + 30)
        self.start_times["ingress-nginx"] = time.perf_counter() - t0

    def _apply(self, docs: list[dict[str, Any]]) -> None:
        """Server-side apply, in order; an Ingress is retried while ingress-nginx's admission webhook starts."""
        from kubernetes.client.exceptions import ApiException

        for doc in docs:
            kind, meta = doc["kind"], doc["metadata"]
            what = f"{kind} {meta.get('namespace', '')}/{meta['name']}".replace(" /", " ")
            resource = self._dynamic.resources.get(api_version=doc["apiVersion"], kind=kind)

            deadline = time.monotonic() + 90
            while True:  # bounded by the deadline
                try:
                    self._dynamic.server_side_apply(resource, body=doc, namespace=meta.get("namespace"),
                                                    field_manager=_FIELD_MANAGER, force_conflicts=True)
                    break
                except ApiException as exc:
                    # ingress-nginx's admission webhook refuses Ingresses with 500/503 until its endpoint is up
                    webhook_starting = kind == "Ingress" and exc.status in (500, 503)
                    if not webhook_starting or time.monotonic() > deadline:
                        raise StartError(f"applying {what} failed: {_api_error(exc)}") from None
                    time.sleep(2)

    def _delete(self, docs: Iterable[dict[str, Any]]) -> None:
        """Delete objects this target applied (a former lane's); one already gone is fine, any other failure is
        left for the cluster's deletion (they are labelled ``app.kubernetes.io/managed-by: mtls-harness``)."""
        from kubernetes.client.exceptions import ApiException

        for doc in docs:
            meta = doc["metadata"]
            with contextlib.suppress(ApiException):
                resource = self._dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
                self._dynamic.delete(resource, name=meta["name"], namespace=meta.get("namespace"))

    def _wait_rollout(self) -> None:
        from kubernetes import client

        apps = client.AppsV1Api(self._api)
        pod = self.topology.pod

        def available() -> bool:
            d: Any = apps.read_namespaced_deployment(pod.name, pod.namespace)
            status = d.status
            return bool(status.observed_generation and status.observed_generation >= d.metadata.generation
                        and (status.updated_replicas or 0) >= (d.spec.replicas or 1)
                        and (status.available_replicas or 0) >= (d.spec.replicas or 1))

        t0 = time.perf_counter()
        try:
            wait_until(available, f"Deployment {pod.namespace}/{pod.name} available", timeout=ROLLOUT_TIMEOUT,
                       interval=0.5, max_interval=2.0, log_tail=self._pod_events)
        except WaitTimeout as exc:
            raise StartError(str(exc)) from None
        self.start_times["rollout"] = time.perf_counter() - t0

    def _pod_events(self) -> str:
        from kubernetes import client

        core = client.CoreV1Api(self._api)
        pod = self.topology.pod
        lines: list[str] = []
        with contextlib.suppress(Exception):
            for ev in core.list_namespaced_event(pod.namespace).items[-10:]:
                lines.append(f"{ev.involved_object.kind}/{ev.involved_object.name}: {ev.reason}: {ev.message}")
        return "\n".join(lines)

    def _ingress_endpoint(self) -> HopEndpoint:
        from harness.render.k8s import KIND_INGRESS_HOST_PORT

        ports: dict[HopName, int] = dict.fromkeys(HOPS, KIND_INGRESS_HOST_PORT)
        return endpoints_for(self.topology, self.certs, ports)["ingress"]

    def _probe_ingress(self, **overrides: Any) -> ProbeResult:
        from harness.probe.handshake import probe

        ep = self._ingress_endpoint()
        kwargs: dict[str, Any] = {"server_name": ep.server_name, "trust": ep.trust, "client_cert": ep.client_cert,
                                  "client_key": ep.client_key} | overrides
        return probe(ep.host, ep.port, **kwargs)

    def _wait_ingress(self) -> None:
        """ingress-nginx answers for the host, with APIM's client cert, with the pod's JSON (127.0.0.1:18443)."""
        seen: list[str] = []

        def answers() -> bool:
            result = self._probe_ingress()
            seen[:] = [result.describe()]
            return result.outcome.kind == "ok"

        try:
            wait_until(answers, "the ingress on 127.0.0.1 answering from the pod", timeout=INGRESS_TIMEOUT,
                       interval=0.5, max_interval=2.0, log_tail=lambda: seen[0] if seen else "")
        except WaitTimeout as exc:
            raise StartError(str(exc)) from None

    # -- the Envoy hops ------------------------------------------------------------------------------------------
    def _envoy_hops(self, image: str) -> None:
        """apim and the gateway on kind's network, every lane a listener of its own on each (port 8443 + i; a lane
        the Envoy renderer refuses is dropped, with why), then the probe container beside them."""
        assert self.workdir is not None
        labels = harness_labels(self.name, self.run_id)
        mounts = self._mounts()
        hops: list[ContainerHop] = []
        configs = self.lane_plan.render(lambda: [self._envoy_config("apim"), self._envoy_config("gateway")])
        for hop, config in zip(("apim", "gateway"), configs, strict=True):
            container = envoy_container(image, config, name=self._alias(hop), network=_Network(self.network),
                                        alias=self._alias(hop), labels={**labels, LABEL_HOP: hop}, mounts=mounts,
                                        publish=hop == "gateway")
            self._containers[hop] = container  # type: ignore[index]
            hops.append(ContainerHop(hop, container, envoy_ready(container)))
        wait_for_hops(hops, "kind chain Envoy hops", self.start_timeout, self.start_times)
        self.gateway_port = published_port(self._containers["gateway"])
        self._start_prober()
        wait_through_gateway(self._publish(), self._containers, self.start_timeout)

    def _envoy_config(self, hop: Literal["apim", "gateway"]) -> EnvoyConfig:
        """``hop``'s Envoy config with its lanes: apim calls the node's 443 (the controller picks the lane by its
        SNI), the gateway calls apim's listener of the same lane."""
        assert self.workdir is not None
        upstream = (self.node, INGRESS_NODE_PORT) if hop == "apim" else (self._alias("apim"), HOP_PORT)
        lanes = self.lane_plan.on(hop)
        extra = [EnvoyLane(lane.topology, lane.certs, listen=("0.0.0.0", lane.ports[hop]),
                           upstream=(upstream[0], lane.ports["ingress" if hop == "apim" else "apim"]),
                           jwks=apim_jwks(lane.topology, lane.certs)) for lane in lanes]
        try:
            return render_envoy(self.topology, hop, self.certs, listen=("0.0.0.0", HOP_PORT), upstream=upstream,
                                admin=("127.0.0.1", 9901), workdir=self.workdir / hop,
                                jwks=apim_jwks(self.topology, self.certs), lanes=extra)
        except LaneRefused as exc:
            self.lane_plan.blame(lanes, exc)

    def _alias(self, hop: str) -> str:
        """A container's name and network alias on kind's network (shared with other runs: the run id keeps it
        apart)."""
        return f"mtls-harness-{self.run_id}-{hop}"

    def _mounts(self) -> dict[Path, str]:
        """The cert sets (the chain's and its lanes') read-only, the work directory read-write."""
        assert self.workdir is not None
        sets = {self.certs.directory.resolve(), *(lane.certs.directory.resolve() for lane in self.lane_plan.lanes)}
        return {**dict.fromkeys(sorted(sets), "ro"), self.workdir: "rw"}

    def _start_prober(self) -> None:
        """The probe container on kind's network (:class:`ProbeContainer`), of the echo image; root only."""
        if self._prober is not None or not can_probe():
            return
        assert self.workdir is not None
        prober = ProbeContainer(self._echo_image(), name=self._alias("probe"), network=_Network(self.network),
                                labels=harness_labels(self.name, self.run_id), mounts=self._mounts(),
                                log=self.workdir / "probe-runner.log")
        self._prober = prober
        prober.start()

    def _run_probe(self, host: str, port: int, kwargs: dict[str, Any]) -> ProbeResult:
        if self._prober is None:
            raise HarnessError("the kind chain's probe container is stopped")
        return self._prober.probe(host, port, kwargs)

    def _publish(self) -> RunningChain:
        """The running chain and its lanes (:func:`kind_chain`): apim and the pod from the probe container when it
        runs, else declared unreachable (:data:`LIMITS`)."""
        assert self.gateway_port is not None
        runner = self._run_probe if self._prober is not None else None
        limits = ChainLimits() if runner is not None else LIMITS
        common: dict[str, Any] = {"target": self.name, "node": self.node, "runner": runner, "limits": limits}
        chain = kind_chain(self.topology, self.certs, gateway=("127.0.0.1", self.gateway_port),
                           apim=(self._alias("apim"), HOP_PORT), pod_node_port=pod_node_port(None), **common)
        chain.lanes = lane_chains(self.lane_plan, lambda lane: kind_chain(
            lane.topology, lane.certs, gateway=(self._alias("gateway"), lane.ports["gateway"]),
            apim=(self._alias("apim"), lane.ports["apim"]), pod_node_port=pod_node_port(lane), lane=lane, **common))
        chain.layout = self.lane_plan.summary() if self.variants else {}
        self.chain = chain
        return chain

    # -- variants and rotation -----------------------------------------------------------------------------------
    def reconfigure(self, topology: Topology) -> RunningChain:
        """Re-apply the manifests for ``topology`` (ingress-nginx reloads by itself; a changed pod cert rolls the
        Deployment), and restart the Envoy containers when their part of the model changed."""
        if self.chain is None:
            raise RuntimeError("the kind chain is not running")
        lane = self.chain.lanes.get(lane_key(topology))
        if lane is not None:
            return lane  # served all along under its own host names: nothing is applied or restarts
        if self.lane_plan.lanes:
            for served in self.chain.lanes.values():
                served.evict("the kind chain was reconfigured into a variant it did not serve as a lane: its lanes "
                             "are gone")
            self._delete(d for docs in self._lane_docs.values() for d in docs)
            self.lane_plan = LanePlan()
        old, self.topology = self.topology, topology
        if old.pki != topology.pki:
            self._certs = None
            if self._prober is not None:  # it mounts the cert sets it was started with
                self._prober.stop()
                self._prober = None
        image = next(iter(self._containers.values())).image if self._containers else None
        self._apply(self._manifests(self._echo_image()))
        self._wait_rollout()
        self._wait_ingress()
        if image is not None and (old.pki != topology.pki or old.apim != topology.apim
                                  or old.gateway != topology.gateway):
            for container in self._containers.values():
                with contextlib.suppress(Exception):
                    container.stop()
            self._containers.clear()
            self._envoy_hops(image)
        self._start_prober()
        return self._publish()

    def rotate_ingress_cert(self, leaf_name: str, *, ingress: str | None = None,
                            timeout: float = INGRESS_TIMEOUT) -> ProbeResult:
        """Put cert-set leaf ``leaf_name`` into the Ingress's TLS Secret and wait until the ingress serves it: the
        proof is a handshake whose peer certificate has the new leaf's SHA-256. Returns that probe."""
        from kubernetes import client

        ing = next((i for i in self.topology.ingress.ingresses if ingress in (None, i.name)), None)
        if ing is None:
            raise UsageError(f"no Ingress named {ingress!r} in the topology")
        leaf = self.certs.leaf(leaf_name)
        data = {"tls.crt": base64.b64encode(leaf.chain.read_bytes()).decode(),
                "tls.key": base64.b64encode(leaf.key.read_bytes()).decode()}
        core = client.CoreV1Api(self._api)
        try:
            core.patch_namespaced_secret(ing.tls_secret, ing.namespace, {"data": data})
        except client.exceptions.ApiException as exc:
            raise StartError(f"updating Secret {ing.namespace}/{ing.tls_secret} failed: {_api_error(exc)}") from None
        seen: list[ProbeResult] = []

        def serves_new() -> bool:
            result = self._probe_ingress(server_name=ing.host)
            seen[:] = [result]
            return bool(result.peer_chain) and result.peer_chain[0].sha256 == leaf.fingerprint_sha256

        try:
            wait_until(serves_new, f"ingress serving {leaf_name} for {ing.host}", timeout=timeout, interval=0.5,
                       max_interval=2.0, log_tail=lambda: seen[0].describe() if seen else "")
        except WaitTimeout as exc:
            raise StartError(str(exc)) from None
        return seen[0]
