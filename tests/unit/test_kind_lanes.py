"""The kind target's lanes, offline (harness.targets.kind_lanes, harness.render.k8s_lanes): no kind and no control
plane exist here, so what is checked is what the target would apply — every lane of the reference catalogue rendered
and validated against the Kubernetes 1.35 schemas — and how a case finds its lane under the lane's host names."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

import pytest
from cryptography import x509

from harness.cases.catalogue import catalogue_for, open_host_of
from harness.cases.model import lanes_for
from harness.errors import StartError, UsageError
from harness.model.topology import default_topology
from harness.pki.certset import cert_set_for
from harness.pki.path import covers
from harness.render.k8s import validate_manifests
from harness.render.k8s_lanes import MAX_POD_LANES, POD_NODE_PORT, lane_host, lane_topology
from harness.targets.base import ChainLimits, HopUnreachable, lane_key
from harness.targets.kind import LIMITS, KindTarget
from harness.targets.kind_lanes import KindLane, KindLaneChain, plan_kind_lanes

HOME = default_topology()
IMAGE = "mtls-harness/pod:0.1.0-local"


@pytest.fixture(scope="module")
def reference() -> tuple[KindTarget, list[dict[str, Any]], dict[int, list[dict[str, Any]]]]:
    """The kind target with every variant of the reference catalogue as lanes: its plan and its manifests."""
    variants, hosts = lanes_for(catalogue_for(HOME), HOME)
    target = KindTarget(HOME, lanes=variants, lane_hosts=hosts)
    target.plan_lanes(probe=True)
    docs = target._manifests(IMAGE)
    return target, docs, target.lane_manifests()


def _kind_lanes(target: KindTarget) -> list[KindLane]:
    return [lane for lane in target.lane_plan.lanes if isinstance(lane, KindLane)]


def _sans(pem_b64: str) -> list[str]:
    cert = x509.load_pem_x509_certificate(base64.b64decode(pem_b64))
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                    .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return []


def test_every_lane_of_the_reference_catalogue_renders_and_validates_offline(reference) -> None:
    target, docs, own = reference
    renamed = [lane for lane in _kind_lanes(target) if lane.renamed]
    assert len(renamed) >= 40, "most reference variants differ at the ingress"
    assert sorted(own) == sorted(lane.index for lane in renamed)  # every ingress lane has objects of its own
    everything = [*docs, *(d for objects in own.values() for d in objects)]
    assert validate_manifests(everything) == []
    for lane in renamed:
        kinds = {d["kind"] for d in own[lane.index]}
        assert kinds == {"Secret", "Ingress"}, (lane.index, kinds)
    # one controller, applied once: the chain's ConfigMap only, and no IngressClass of a second controller
    assert [d["metadata"]["name"] for d in everything if d["kind"] == "ConfigMap"
            and d["metadata"]["namespace"] == "ingress-nginx"] == ["ingress-nginx-controller"]
    assert {d["spec"]["ingressClassName"] for d in everything if d["kind"] == "Ingress"} == {"nginx"}


def test_a_broken_lane_manifest_fails_validation(reference) -> None:
    # the check above means something only if a lane object Kubernetes would refuse is caught
    _, _, own = reference
    ingress = json.loads(json.dumps(next(d for objects in own.values() for d in objects if d["kind"] == "Ingress")))
    ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] = {"number": "8444"}
    assert validate_manifests([ingress]) != []


def test_every_host_belongs_to_one_lane_and_no_lane_takes_the_chains(reference) -> None:
    target, docs, own = reference
    owner: dict[str, set[int]] = defaultdict(set)
    for index, objects in [(0, docs), *own.items()]:
        for d in objects:
            if d["kind"] == "Ingress":
                for rule in d["spec"]["rules"]:
                    owner[rule["host"]].add(index)
    shared = {host: lanes for host, lanes in owner.items() if len(lanes) > 1}
    assert not shared, f"hosts served for more than one lane: {shared}"
    assert owner[HOME.ingress.host] == {0}
    for lane in _kind_lanes(target):
        for host in lane.served.ingress.hosts:
            assert owner[host] == ({lane.index} if lane.renamed else {0})
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
             for objects in (docs, *own.values()) for d in objects]
    assert len(names) == len(set(names))


def test_every_lane_tls_secret_covers_exactly_the_lane_hosts_its_variant_covered(reference) -> None:
    """The lane's cert set is issued for its own names: a Secret's certificate covers, among every host the cluster
    serves, exactly the lane's counterparts of the hosts the variant's certificate covered (none, for a variant
    whose point is a certificate that does not cover its host)."""
    target, docs, own = reference
    every_host = {r["host"] for objects in (docs, *own.values()) for d in objects if d["kind"] == "Ingress"
                  for r in d["spec"]["rules"]}
    checked = 0
    for lane in _kind_lanes(target):
        if not lane.renamed:
            continue
        assert lane.variant is not None
        secrets = {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in own[lane.index]
                   if d["kind"] == "Secret"}
        variant_certs = cert_set_for(lane.variant.pki)
        for d in own[lane.index]:
            if d["kind"] != "Ingress":
                continue
            secret = secrets.get((d["metadata"]["namespace"], d["spec"]["tls"][0]["secretName"]))
            if secret is None or "tls.crt" not in secret["data"]:
                continue  # a variant whose TLS Secret is missing on purpose
            covered = {h for h in every_host if covers(_sans(secret["data"]["tls.crt"]), h)}
            original = next(s for s in lane.variant.ingress.secrets
                            if s.name + f"-l{lane.index}" == secret["metadata"]["name"])
            assert original.tls is not None
            before = _sans(base64.b64encode(variant_certs.leaf(original.tls).cert.read_bytes()).decode())
            expected = {lane.renamed[h] for h in lane.variant.ingress.hosts if covers(before, h)}
            assert covered == expected, (lane.index, covered, expected)
            checked += 1
    assert checked >= 40


def test_variants_one_controller_cannot_serve_are_dropped_with_why(reference) -> None:
    target, _, _ = reference
    dropped = target.lane_plan.dropped
    why = " | ".join(dropped.values())
    for setting in ("--enable-ssl-passthrough=true", "allow-cross-namespace-resources=true", "keep-alive=0"):
        assert setting in why
    assert all("kind runs ONE ingress-nginx controller" in reason for reason in dropped.values())
    assert all(key not in {lane_key(lane.variant) for lane in _kind_lanes(target)} for key in dropped)
    summary = target.lane_plan.summary()
    assert summary["not_lanes"] == len(dropped)
    assert summary["lanes"] == len(target.lane_plan.lanes)


def test_without_a_probe_container_or_lanes_every_variant_runs_by_reconfigure() -> None:
    variants, hosts = lanes_for(catalogue_for(HOME), HOME)
    target = KindTarget(HOME, lanes=variants, lane_hosts=hosts)
    plan = target.plan_lanes(probe=False)
    assert plan.lanes == []
    assert set(plan.dropped.values()) == {"no probe container (it needs root): a lane's gateway and apim listen "
                                          "only on the `kind` docker network"}
    no_lanes = KindTarget(HOME)  # --mtls-no-lanes: the plugin passes no variants
    assert no_lanes.plan_lanes(probe=True).lanes == []
    assert all(d["kind"] != "ConfigMap" or "lanes" not in d["metadata"]["name"] for d in no_lanes._manifests(IMAGE))


def test_the_pods_lane_listeners_match_the_mounted_files_the_services_and_the_node_ports(reference) -> None:
    target, docs, _ = reference
    pod_lanes = [lane for lane in _kind_lanes(target) if lane.slot]
    specs = json.loads(next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "echo-lanes")
                       ["data"]["lanes.json"])
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--lanes", "/lanes/lanes.json"]
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "lanes")
    mounted = {f"/lanes/{item['path']}" for source in volume["projected"]["sources"]
               for kind in ("secret", "configMap") if kind in source for item in source[kind]["items"]}
    for spec in specs:
        for key in ("cert", "key", "client_ca"):
            assert spec[key] is None or spec[key] in mounted, spec
    listen = sorted(int(s["listen"].rsplit(":", 1)[1]) for s in specs)
    assert listen == sorted(lane.ports["pod"] for lane in pod_lanes)
    probe = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "echo-probe")
    assert probe["spec"]["type"] == "NodePort"
    node_ports = {p["targetPort"]: p["nodePort"] for p in probe["spec"]["ports"]}
    assert node_ports.pop("https") == POD_NODE_PORT
    assert sorted(node_ports) == listen
    assert len(set(node_ports.values())) == len(node_ports)
    assert all(POD_NODE_PORT < n <= POD_NODE_PORT + MAX_POD_LANES for n in node_ports.values())
    backend = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "echo")
    assert sorted(p["port"] for p in backend["spec"]["ports"] if p["name"].startswith("lane-")) == listen


def test_lane_names_keep_the_parent_domain_and_refuse_what_is_no_dns_label() -> None:
    assert lane_host("echo.aks.contoso.example", 3) == "l3-echo.aks.contoso.example"
    assert lane_host("*.apps.example", 12) == "*.l12-apps.example"
    assert lane_host("ECHO.AKS.CONTOSO.EXAMPLE", 3) == "l3-ECHO.AKS.CONTOSO.EXAMPLE"
    with pytest.raises(UsageError, match="not a DNS label"):
        lane_host("x" * 62 + ".example", 4)
    t, renamed = lane_topology(HOME, 5, 2)
    assert renamed == {HOME.ingress.host: "l5-echo.aks.contoso.example"}
    assert t.ingress.host == t.apim.upstream.hostname == "l5-echo.aks.contoso.example"  # apim calls the lane's host
    assert "l5-echo.aks.contoso.example" in t.pki.leaf("ingress-server").sans
    assert t.pod.listener.hostname == HOME.pod.listener.hostname  # the pod keeps its name: only ingress hosts move
    assert t.ingress.primary.annotation("auth-tls-secret") == "default/apim-client-ca-l5"
    assert t.ingress.primary.tls_secret == "ingress-tls-l5"
    assert t.ingress.primary.service_port == 8443 + 2


def _lane_chain(records: list[tuple[str, int, dict[str, Any]]]) -> Any:
    variants, hosts = lanes_for(catalogue_for(HOME), HOME)
    target = KindTarget(HOME, lanes=variants, lane_hosts=hosts)
    target.plan_lanes(probe=True)
    target.gateway_port = 40000

    class Recorder:
        def probe(self, host: str, port: int, kwargs: dict[str, Any]) -> Any:
            records.append((host, port, kwargs))
            return None

    target._prober = Recorder()  # type: ignore[assignment]
    return target, target._publish()


def test_a_case_reaches_its_lane_by_its_variant_and_the_lanes_host_names() -> None:
    """The runner asks for a lane by the variant it built (lane_key) and views it for the case's host; a case's
    own SNI and Host header name the variant's hosts: all of them become the lane's."""
    from harness.cases.catalogue import _an_open_host  # the variant of the SNI/Host mismatch cases

    records: list[tuple[str, int, dict[str, Any]]] = []
    target, chain = _lane_chain(records)
    variant = _an_open_host(HOME)
    lane = chain.lanes[lane_key(variant)]
    assert isinstance(lane, KindLaneChain)
    open_host = open_host_of(HOME)
    view = lane.on_host(open_host)
    assert view.endpoint("ingress").server_name == lane.lane_name(open_host) != open_host
    assert view.endpoint("ingress").host == "127.0.0.1"  # the node's 443 through kind-config's port mapping
    lane.probe("apim", server_name=open_host, http_host=f"{HOME.ingress.host}:443")
    lane.probe("gateway", server_name="OPEN-" + HOME.ingress.host.upper())
    (host, port, kwargs), (gw_host, gw_port, gw_kwargs) = records
    assert (host, port) == (target._alias("apim"), lane.endpoint("apim").port)
    assert kwargs["server_name"] == f"l{lane.index}-open-echo.aks.contoso.example"
    assert kwargs["http_host"] == f"l{lane.index}-echo.aks.contoso.example:443"
    assert gw_kwargs["server_name"] == f"l{lane.index}-OPEN-ECHO.AKS.CONTOSO.EXAMPLE"  # its letter case kept
    assert gw_host == target._alias("gateway")
    assert gw_port != 8443


def test_with_the_probe_container_apim_and_the_pod_are_reachable_and_without_it_declared_unreachable() -> None:
    records: list[tuple[str, int, dict[str, Any]]] = []
    target, chain = _lane_chain(records)
    assert chain.limits == ChainLimits()
    assert chain.endpoint("apim").host == target._alias("apim")
    assert (chain.endpoint("pod").host, chain.endpoint("pod").port) == (target.node, POD_NODE_PORT)
    chain.probe("pod")
    assert records[-1][:2] == (target.node, POD_NODE_PORT)
    gateway_only = HOME.with_hop("gateway", listener__min_version="1.3")
    lane = chain.lanes[lane_key(gateway_only)]
    assert lane.topology == gateway_only  # a lane that keeps the chain's ingress keeps its names
    assert lane.endpoint("pod").port == POD_NODE_PORT  # … and its pod
    alone = KindTarget(HOME)  # without root: no probe container, so no lanes either (plan_lanes)
    alone.gateway_port = 40000
    bare = alone._publish()
    assert bare.limits == LIMITS
    assert set(bare.endpoints) == {"gateway", "ingress"}
    for hop in ("apim", "pod"):
        with pytest.raises(HopUnreachable, match="no probe container") as info:
            bare.endpoint(hop)
        assert info.value.declared


def test_a_lane_the_cluster_refuses_is_dropped_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    variants, hosts = lanes_for(catalogue_for(HOME), HOME)
    target = KindTarget(HOME, lanes=variants, lane_hosts=hosts)
    target.plan_lanes(probe=True)
    target._manifests(IMAGE)
    victim = next(lane for lane in _kind_lanes(target) if lane.renamed)
    applied: list[str] = []

    def apply(docs: list[dict[str, Any]]) -> None:
        names = [d["metadata"]["name"] for d in docs]
        if f"{victim.topology.ingress.primary.name}" in names:
            raise StartError("applying Ingress default/echo-l1 failed: 400 admission webhook denied the request")
        applied.extend(names)

    monkeypatch.setattr(target, "_apply", apply)
    before = len(target.lane_plan.lanes)
    target._apply_lanes()
    assert len(target.lane_plan.lanes) == before - 1
    assert victim not in target.lane_plan.lanes
    assert victim.variant is not None
    assert "admission webhook denied" in target.lane_plan.dropped[lane_key(victim.variant)]
    assert applied


def test_kinds_own_network_variable_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIND_EXPERIMENTAL_DOCKER_NETWORK", "kind-other")
    assert KindTarget().network == "kind-other"
    monkeypatch.delenv("KIND_EXPERIMENTAL_DOCKER_NETWORK")
    assert KindTarget().network == "kind"


def test_more_pod_lanes_than_the_static_node_port_band_are_dropped_with_why() -> None:
    variants = [HOME.with_ingress_annotations(auth_tls_verify_depth=str(n)) for n in range(2, MAX_POD_LANES + 4)]
    plan = plan_kind_lanes(HOME, cert_set_for(HOME.pki), variants, certs_for=lambda pki: cert_set_for(HOME.pki))
    assert len(plan.lanes) == MAX_POD_LANES
    assert len(plan.dropped) == len(variants) - MAX_POD_LANES
    assert all("static band 30000-30085" in why for why in plan.dropped.values())


def test_the_start_waits_until_every_lane_host_is_served_its_own_certificate(reference) -> None:
    """Before the controller has synced a host it serves its default certificate; the wait ends only when every
    lane host shows its TLS Secret's certificate, and names the hosts that never do."""
    from types import SimpleNamespace

    from harness.targets.kind_lanes import lane_host_certificates, wait_lane_hosts

    target, _, _ = reference
    expect = lane_host_certificates(target.lane_plan)
    assert len(expect) >= 40
    calls: dict[str, int] = defaultdict(int)

    def synced_on_second_look(host: str) -> Any:
        calls[host] += 1
        fp = expect[host] if calls[host] > 1 else "0" * 64  # the controller's default certificate first
        return SimpleNamespace(peer_chain=[SimpleNamespace(sha256=fp)], describe=lambda: fp)

    wait_lane_hosts(target.lane_plan, synced_on_second_look, timeout=10.0)
    assert set(calls) == set(expect)
    assert all(n == 2 for n in calls.values())  # a host already served right is not probed again
    stuck = next(iter(expect))

    def never_synced(host: str) -> Any:
        fp = "f" * 64 if host == stuck else expect[host]
        return SimpleNamespace(peer_chain=[SimpleNamespace(sha256=fp)], describe=lambda: fp)

    with pytest.raises(StartError, match=stuck):
        wait_lane_hosts(target.lane_plan, never_synced, timeout=1.0)
