"""The containers target for real: four containers on a private docker network, only the gateway published.

Needs a Docker engine (marker needs_docker) and the images `mtls-harness images build` makes when no registry is
reachable (CI runs it first; the module builds whatever is missing). Every check that "nothing is left" asks the
engine for containers and networks by the labels the target puts on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import StartError, ToolMissingError
from harness.images.build import build_images
from harness.images.resolve import ROLES, docker_client, local_image_tag
from harness.model.topology import HOPS, default_topology
from harness.targets.containers import ContainersTarget
from harness.targets.docker import HOP_PORT, LABEL_HOP, LABEL_PID, LABEL_RUN

pytestmark = pytest.mark.mtls_needs_docker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client():
    from harness.pytest_plugin import _docker_reachable

    if not _docker_reachable():
        pytest.skip("needs a running Docker engine")  # the marker's own skip/fail happens before this fixture
    c = docker_client()
    missing = [r for r in ROLES if not c.images.list(name=local_image_tag(r).split(":")[0])]
    if missing:
        build_images(missing, progress=lambda line: None, client=c)
    yield c
    c.close()


def _ours(client, label: str) -> tuple[list[str], list[str]]:
    containers = [c.name for c in client.containers.list(all=True, filters={"label": label})]
    networks = [n.name for n in client.networks.list(filters={"label": label})]
    return containers, networks


@pytest.fixture(scope="module")
def running(client):
    target = ContainersTarget(default_topology())
    with target as chain:
        yield target, chain


def test_gateway_returns_the_pods_json_with_a_four_hop_tls_trace(running, record_property) -> None:
    target, chain = running
    record_property("start_times", json.dumps({k: round(v, 3) for k, v in target.start_times.items()}))
    result = chain.probe("gateway")
    assert result.outcome.kind == "ok", result.describe()
    doc = result.json()
    assert doc["hop"] == "pod"
    trace = doc["trace"]
    for hop in HOPS:
        assert trace[hop]["tls"].startswith("TLSv1."), (hop, trace.get(hop))
        assert trace[hop]["cipher"], (hop, trace[hop])
    topo = chain.topology
    apim_client = chain.certs.leaf(topo.apim.upstream.client_cert)
    assert trace["ingress"]["peer_sha256"] == apim_client.fingerprint_sha256
    assert trace["ingress"]["verify"] == "SUCCESS"
    assert doc["peer"]["sha256"] == chain.certs.leaf("ingress-client").fingerprint_sha256
    # the gateway's certificate is the one the topology names, served from inside its container
    assert result.peer_chain[0].sha256 == chain.certs.leaf(topo.gateway.listener.server_cert).fingerprint_sha256


def test_only_the_gateway_is_published_and_only_on_loopback(client, running) -> None:
    target, chain = running
    assert chain.entry.host == "127.0.0.1"
    # the inner hops by their network alias: only the probe container on the chain's network resolves them
    assert {hop: ep.host for hop, ep in chain.endpoints.items()} == {
        "gateway": "127.0.0.1", "apim": "apim", "ingress": "ingress", "pod": "pod"}
    by_hop = {}
    for c in client.containers.list(filters={"label": f"{LABEL_RUN}={target.run_id}"}):
        by_hop[c.labels[LABEL_HOP]] = c
    assert set(by_hop) == {*HOPS, "probe"}
    assert not by_hop["probe"].attrs["HostConfig"]["PortBindings"]
    gw_ports = by_hop["gateway"].attrs["NetworkSettings"]["Ports"]
    assert [(b["HostIp"], int(b["HostPort"])) for b in gw_ports[f"{HOP_PORT}/tcp"]] == \
           [("127.0.0.1", chain.entry.port)]
    for hop in ("apim", "ingress", "pod"):
        attrs = by_hop[hop].attrs
        assert not attrs["HostConfig"]["PortBindings"], (hop, attrs["HostConfig"]["PortBindings"])
        published = {p: b for p, b in (attrs["NetworkSettings"]["Ports"] or {}).items() if b}
        assert published == {}, (hop, published)
    for port in (HOP_PORT, 9901):  # what the private hops listen on inside their containers
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass


def test_inner_hops_are_probed_from_the_probe_container_which_has_no_default_route(client, running) -> None:
    """Issue 21: APIM's, the ingress's and the pod's callers sit on the chain's network — so does the probe, in a
    container whose default route the harness removed (its runner refuses to start with one: --require-isolated)."""
    from harness.cases.catalogue import CATALOGUE
    from harness.cases.model import run_case

    target, chain = running
    inner = next(c for c in CATALOGUE if c.variant is None and c.via != "chain" and (c.endpoint or c.hop) == "apim")
    result = run_case(inner, chain, lambda topo: chain)
    assert result.passed, result.message
    assert result.seen.target == f"apim:{HOP_PORT}"  # by its alias on the chain's network
    (probe,) = client.containers.list(filters={"label": [f"{LABEL_RUN}={target.run_id}", f"{LABEL_HOP}=probe"]})
    code, out = probe.exec_run(["python3", "-c", "print(open('/proc/net/route').read())"])
    assert code == 0
    routes = [line.split() for line in out.decode().splitlines()[1:] if line.strip()]
    assert routes, out
    assert all(r[1] != "00000000" for r in routes), out  # no default route: only the chain's subnet


def test_without_root_the_inner_hops_skip_by_design_with_a_reason(monkeypatch) -> None:
    from harness.cases.catalogue import CATALOGUE
    from harness.cases.model import Skip, run_case
    from harness.targets.base import HopUnreachable

    monkeypatch.setattr("harness.targets.containers.os.geteuid", lambda: 1000)  # nsenter needs root
    with ContainersTarget() as chain:
        inner = next(c for c in CATALOGUE if c.variant is None and c.via != "chain"
                     and (c.endpoint or c.hop) == "apim")
        with pytest.raises(Skip, match="the apim hop listens only on the run's private docker network") as skipped:
            run_case(inner, chain, lambda topo: chain)
        assert skipped.value.declared, "the containers target declares its private hops"
        with pytest.raises(HopUnreachable, match="no probe container runs there") as unreachable:
            chain.endpoint("pod")
        assert unreachable.value.declared


def test_an_ingress_only_change_is_a_hot_reload_in_the_running_container(client, running) -> None:
    target, chain = running
    before = {c.labels[LABEL_HOP]: c.id for c in
              client.containers.list(filters={"label": f"{LABEL_RUN}={target.run_id}"})}
    original = chain.topology
    try:
        variant = original.with_ingress_annotations(auth_tls_match_cn="CN=nobody-matches-this")
        changed = target.reconfigure(variant)
        denied = changed.probe("gateway")
        assert denied.status == 403, denied.describe()  # ingress-nginx's match-cn answer, passed back by both Envoys
        after = {c.labels[LABEL_HOP]: c.id for c in
                 client.containers.list(filters={"label": f"{LABEL_RUN}={target.run_id}"})}
        assert after == before  # nothing restarted
    finally:
        restored = target.reconfigure(original)
    assert restored.probe("gateway").outcome.kind == "ok"


def test_a_gateway_api_ingress_is_an_envoy_container_and_its_variants_are_listeners_of_it(client) -> None:
    """Issue 20 on containers: the ingress hop is real Envoy in a container of the envoy image, with the bootstrap the
    local target runs. A request crosses it with APIM's verified certificate in the trace; a missing client
    certificate, probed from the probe container as APIM calls, is a TLS alert with Envoy's own words in the log the
    evidence reads; the optional variant (AllowInsecureFallback) is a listener of the same container."""
    gateway_api = default_topology().on_gateway_api()
    optional = gateway_api.with_ingress_annotations(auth_tls_verify_client="optional")
    target = ContainersTarget(gateway_api, lanes=[optional])
    with target as chain:
        ours = client.containers.list(filters={"label": f"{LABEL_RUN}={target.run_id}"})
        (ingress,) = [c for c in ours if c.labels[LABEL_HOP] == "ingress"]
        assert ingress.image.id == client.images.get(target.images["envoy"]).id
        assert chain.layout["lanes"] == 1
        assert chain.layout["ingress_processes"] == {}
        seen = chain.probe("gateway")
        assert seen.outcome.kind == "ok", seen.describe()
        trace = (seen.json() or {})["trace"]["ingress"]
        assert (trace["verify"], trace["peer_subject"]) == ("SUCCESS", "CN=apim-client,O=Contoso")
        mark = chain.evidence_mark()
        refused = chain.probe("ingress", client_cert=None, client_key=None, min_version="1.3", max_version="1.3")
        assert (refused.outcome.kind, refused.outcome.alert) == ("tls_alert", "certificate_required"), \
            refused.describe()
        log = ""
        for _ in range(40):  # Envoy flushes its log file every 100 ms (--file-flush-interval-msec)
            log = chain.evidence_since(mark).get("ingress", "")
            if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log:
                break
            time.sleep(0.05)
        assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log, log[-2000:]
        (lax,) = chain.lanes.values()
        assert lax.topology == optional
        let_in = lax.probe("ingress", client_cert=None, client_key=None)
        assert let_in.outcome.kind == "ok", let_in.describe()
        assert (let_in.json() or {})["trace"]["ingress"]["verify"] == "NONE"
        lane_ep = lax.endpoint("ingress")
        assert (lane_ep.host, lane_ep.port != HOP_PORT) == ("ingress", True)  # the same container, its own port
    assert _ours(client, f"{LABEL_RUN}={target.run_id}") == ([], [])


def test_nothing_is_left_after_exit(client) -> None:
    target = ContainersTarget(default_topology())
    with target as chain:
        assert chain.probe("gateway").outcome.kind == "ok"
        label = f"{LABEL_RUN}={target.run_id}"
        containers, networks = _ours(client, label)
        assert len(containers) == 5  # the four hops and the probe container
        assert networks == [f"mtls-harness-{target.run_id}"]
        workdir = target.workdir
        assert workdir is not None
        assert workdir.is_dir()
    assert _ours(client, label) == ([], [])
    assert not workdir.exists()


def test_a_bad_image_name_is_one_clear_error_and_creates_nothing(client) -> None:
    target = ContainersTarget(default_topology(), envoy_image="mtls-harness/no-such-envoy:0")
    with pytest.raises(ToolMissingError) as info, target:
        pass
    assert "mtls-harness/no-such-envoy:0" in str(info.value)
    assert "\n" not in str(info.value)
    assert _ours(client, f"{LABEL_RUN}={target.run_id}") == ([], [])


def test_up_with_a_bad_image_exits_2_with_one_line(client) -> None:
    env = {**os.environ, "MTLS_HARNESS_NGINX_IMAGE": "mtls-harness/no-such-nginx:0"}
    out = subprocess.run([sys.executable, "-m", "harness", "up", "--target", "containers", "--duration", "0"],
                         capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "mtls-harness/no-such-nginx:0" in lines[0]


def test_a_failed_start_removes_the_containers_that_did_start(client) -> None:
    # the pod image exists but has no Envoy: pod and ingress start, apim cannot
    target = ContainersTarget(default_topology(), envoy_image=local_image_tag("pod"))
    with pytest.raises(StartError, match="apim container") as info, target:
        pass
    assert "envoy" in str(info.value)
    assert _ours(client, f"{LABEL_RUN}={target.run_id}") == ([], [])


def test_the_start_sweep_removes_only_runs_whose_owner_process_is_gone(client) -> None:
    from harness.targets.docker import harness_labels, sweep_stale

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead_pid = done.stdout.strip()  # a process that has exited
    dead = client.networks.create("mtls-harness-test-dead", labels=harness_labels("containers", "testdead")
                                  | {LABEL_PID: dead_pid})
    alive = client.networks.create("mtls-harness-test-alive", labels=harness_labels("containers", "testalive"))
    try:
        removed = sweep_stale(client)
        assert "mtls-harness-test-dead" in removed
        assert "mtls-harness-test-alive" not in removed
        assert _ours(client, f"{LABEL_RUN}=testalive") == ([], ["mtls-harness-test-alive"])
        assert _ours(client, f"{LABEL_RUN}=testdead") == ([], [])
    finally:
        for net in (dead, alive):
            with contextlib.suppress(Exception):
                net.remove()


def _wait_for(check, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _up(tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "up", "--target", "containers", "--json"],
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "up.err", "w"), text=True, cwd=REPO)


def test_sigint_of_up_removes_every_container_and_the_network(client, tmp_path: Path) -> None:
    proc = _up(tmp_path)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, (tmp_path / "up.err").read_text()
        assert json.loads(line)["target"] == "containers"
        label = f"{LABEL_PID}={proc.pid}"
        containers, networks = _ours(client, label)
        assert len(containers) == 5, containers  # the four hops and the probe container
        assert len(networks) == 1, networks
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 130), (tmp_path / "up.err").read_text()
        assert _ours(client, label) == ([], [])
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def test_sigint_during_the_start_removes_whatever_was_created(client, tmp_path: Path) -> None:
    proc = _up(tmp_path)
    label = f"{LABEL_PID}={proc.pid}"
    try:
        # interrupt as soon as the first labelled resource exists, while the rest is still being created
        _wait_for(lambda: any(_ours(client, label)), "the first container or network of the run")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) in (0, 130), (tmp_path / "up.err").read_text()
        assert _ours(client, label) == ([], [])
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def test_variants_are_lanes_of_the_same_containers_and_a_configmap_change_gets_its_own(client) -> None:
    """Issue 21 on containers: each variant on its own port of the same four containers (its gateway reached from the
    probe container: only the chain's own gateway port is published); a lane of other controller settings is served
    by one more nginx container; asking for a lane starts or restarts nothing."""
    from harness.targets.base import lane_key

    if os.geteuid() != 0:
        pytest.skip("lanes on containers need the probe container (root)")
    home = default_topology()
    optional = home.with_ingress_annotations(auth_tls_verify_client="optional")
    tls13 = home.with_controller(ssl_protocols="TLSv1.3")
    strict_gateway = home.with_hop("gateway", listener__min_version="1.3")
    target = ContainersTarget(home, lanes=[optional, tls13, strict_gateway])
    with target as chain:
        def containers() -> dict[str, str]:
            prefix = f"mtls-harness-{target.run_id}-"
            return {c.name.removeprefix(prefix): c.id
                    for c in client.containers.list(filters={"label": f"{LABEL_RUN}={target.run_id}"})}

        ours = containers()
        assert sorted(ours) == sorted(["gateway", "apim", "ingress", "ingress-g1", "pod", "probe"]), ours
        assert "ssl-protocols=TLSv1.3" in target.lane_plan.ingress_processes["ingress.g1"]
        assert chain.probe("ingress", client_cert=None, client_key=None).status == 400  # the chain: cert required
        lane = target.reconfigure(optional)
        assert lane is chain.lanes[lane_key(optional)]
        admitted = lane.probe("gateway")
        assert admitted.outcome.kind == "ok", admitted.describe()
        no_cert = lane.probe("ingress", client_cert=None, client_key=None)
        assert no_cert.outcome.kind == "ok", no_cert.describe()
        assert no_cert.json()["headers"].get("ssl-client-verify") == "NONE"
        old_tls = chain.lanes[lane_key(tls13)].probe("ingress", max_version="1.2")
        assert old_tls.outcome.kind == "tls_alert", old_tls.describe()
        assert chain.probe("ingress", max_version="1.2").outcome.kind == "ok"
        refused = chain.lanes[lane_key(strict_gateway)].probe("gateway", max_version="1.2")
        assert refused.outcome.kind == "tls_alert", refused.describe()
        assert containers() == ours  # nothing started or restarted
    assert _ours(client, f"{LABEL_RUN}={target.run_id}") == ([], [])



def test_a_reconfigure_to_another_pki_plan_mounts_the_new_cert_set_in_the_probe_container(client) -> None:
    """The inner hops are probed from the probe container with the cert set's files (mounted read-only at their own
    path): after a reconfigure to another PKI plan the probe of apim names the NEW set's identity and trust, so the
    probe container must have that set mounted too."""
    from harness.targets.docker import can_probe

    if not can_probe():
        pytest.skip("the probe container needs root, nsenter, ip and docker")
    rsa = default_topology("rsa")
    target = ContainersTarget(default_topology())
    with target:
        changed = target.reconfigure(rsa)
        seen = changed.probe("apim")
        assert seen.outcome.kind == "ok", seen.describe()
        # the apim it reached serves the RSA set's certificate
        assert seen.peer_chain[0].sha256 == changed.certs.leaf(rsa.apim.listener.server_cert).fingerprint_sha256
