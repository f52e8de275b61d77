"""The kind target, offline: no kind binary and no control plane exist here (docs/containers.md)

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_kind_target.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness.errors import StartError, UsageError
from harness.model.topology import default_topology
from harness.targets.kind import (
    DEFAULT_CLUSTER,
    KindTarget,
    kubectl_apply_argv,
    kubectl_wait_controller_argv,
)
from tests.unit.test_kind_target import KIND_CONFIG, _calls, _fake_tool, _one_error_line, _parse, _up_kind, fake_kind


def test_kubectl_arguments_parse_with_the_real_kubectl(tmp_path: Path) -> None:
    """kubectl parses flags before it contacts a server: pointed at a closed port on 127.0.0.1, a valid command
    line ends in "connection refused", an invalid one in "unknown flag"."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "not-a-secret"}}]}))
    manifest = tmp_path / "m.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n")

    def run(argv: list[str]) -> str:
        out = subprocess.run([*argv, "--request-timeout=5s"], capture_output=True, text=True, timeout=60,
                             check=False)
        return out.stderr

    bad = run([kubectl, "--kubeconfig", str(kubeconfig), "wait", "--no-such-flag"])
    assert "unknown flag" in bad
    for argv in (kubectl_apply_argv(kubectl, kubeconfig, manifest),
                 kubectl_wait_controller_argv(kubectl, kubeconfig, timeout=5)):
        err = run(argv)
        assert "unknown" not in err, (argv, err)
        assert "connection refused" in err, (argv, err)


def test_up_target_kind_without_kind_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    line = _one_error_line(_up_kind({**os.environ, "PATH": str(empty)}))
    assert "kind not found" in line
    assert "kind.sigs.k8s.io" in line


def test_without_kubectl_the_error_names_kubectl(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "kind", "raise SystemExit(0)\n")
    line = _one_error_line(_up_kind({**os.environ, "PATH": str(bindir)}))
    assert "kubectl not found" in line


def test_without_a_docker_engine_the_error_names_it(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "kind", "raise SystemExit(0)\n")
    _fake_tool(bindir, "kubectl", "raise SystemExit(0)\n")
    env = {**os.environ, "PATH": str(bindir), "DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    line = _one_error_line(_up_kind(env))
    assert "a running Docker engine not found" in line
    assert "none.sock" in line


@pytest.mark.mtls_needs_docker
def test_an_existing_cluster_is_not_taken_over_without_keep_cluster(fake_kind: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KIND_CLUSTERS", f"other\n{DEFAULT_CLUSTER}")
    with pytest.raises(UsageError, match="--keep-cluster") as info, KindTarget(default_topology()):
        pass
    assert f"kind delete cluster --name {DEFAULT_CLUSTER}" in str(info.value)
    verbs = [c[:2] for c in _calls(fake_kind)]
    assert verbs == [["get", "clusters"]]  # neither created nor deleted


@pytest.mark.mtls_needs_docker
def test_a_cluster_it_failed_to_create_is_deleted_with_the_same_name(fake_kind: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KIND_CLUSTERS", "")
    with pytest.raises(StartError, match="node image not available offline"), \
            KindTarget(default_topology(), cluster_name="mtls-test"):
        pass
    calls = _calls(fake_kind)
    assert [c[:2] for c in calls] == [["get", "clusters"], ["create", "cluster"], ["delete", "cluster"]]
    create, delete = _parse(["kind", *calls[1]]), _parse(["kind", *calls[2]])
    assert create.name == delete.name == "mtls-test"
    assert create.config == str(KIND_CONFIG)
    assert create.kubeconfig == delete.kubeconfig


@pytest.mark.mtls_needs_docker
def test_the_probe_container_on_a_dual_stack_network_like_kinds_drops_both_default_routes_and_probes_the_pod(
        fake_kind: Path) -> None:
    """The kind target's probe container, for real: kind's docker network is dual-stack (kind
    pkg/cluster/internal/providers/docker/network.go gives it an IPv6 ULA subnet), so the container gets an IPv4 AND
    an IPv6 default route. The shared ProbeContainer removes both — its runner refuses to start with either
    (--require-isolated) — and then reaches an echo pod on that network by its name, as it reaches the node's port
    on kind. The network and the containers are this test's own (labelled with its run id) and removed after it."""
    import secrets

    from testcontainers.core.container import DockerContainer

    from harness.images.resolve import docker_client, local_image_tag, pod_packages
    from harness.pki.certset import cert_set_for
    from harness.runtime.wait import wait_until
    from harness.targets.docker import (
        POD_SOURCE,
        ProbeContainer,
        can_probe,
        configure_testcontainers,
        harness_labels,
        log_has,
        remove_run,
    )
    from harness.targets.kind import _Network
    from harness.targets.local import endpoints_for

    if not can_probe():
        pytest.skip("the probe container needs root (nsenter) and nsenter, ip, docker")
    topology = default_topology()
    certs = cert_set_for(topology.pki)
    run_id = secrets.token_hex(4)
    labels = harness_labels("kind", run_id)
    client = docker_client()
    configure_testcontainers(client)  # no Ryuk image here, and no registry to pull one from
    name = f"mtls-harness-{run_id}-kindlike"
    prober = None
    workdir: Path | None = None
    try:
        from docker.types import IPAMConfig, IPAMPool

        client.networks.create(name, driver="bridge", enable_ipv6=True, labels=labels, options={
            "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"}, ipam=IPAMConfig(pool_configs=[
                IPAMPool(subnet=f"fd00:6d74:{int(run_id[:4], 16):x}::/64")]))
        listener = topology.pod.listener
        leaf = certs.leaf(listener.server_cert)
        pod = (DockerContainer(local_image_tag("pod"), labels={**labels}, user=f"{os.getuid()}:{os.getgid()}")
               .with_name(f"mtls-harness-{run_id}-node").with_network(_Network(name))
               .with_network_aliases("node-standin").with_env("PYTHONPATH", POD_SOURCE)
               .with_command(["python3", "-m", "harness.pod.echo", "--listen", "0.0.0.0:30000",
                              "--cert", str(leaf.chain.resolve()), "--key", str(leaf.key.resolve()),
                              "--client-auth", listener.client_auth,
                              "--client-ca", str(certs.trust_bundle(listener.client_ca or "").resolve())]))
        pod.with_volume_mapping(str(certs.directory.resolve()), str(certs.directory.resolve()), "ro")
        for top, path in pod_packages().items():
            pod.with_volume_mapping(str(path), f"{POD_SOURCE}/{top}", "ro")
        pod.start()
        wait_until(lambda: log_has(pod, "listening on"), "the echo pod", timeout=30.0)
        workdir = Path(tempfile.mkdtemp(prefix="mtls-harness-kindprobe-"))
        prober = ProbeContainer(local_image_tag("pod"), name=f"mtls-harness-{run_id}-probe", network=_Network(name),
                                labels=labels, mounts=[certs.directory.resolve()], log=workdir / "runner.log")
        prober.start()  # the runner exits at once (3) if a default route of either family is left
        ep = endpoints_for(topology, certs, {"gateway": 0, "apim": 0, "ingress": 0, "pod": 30000})["pod"]
        result = prober.probe("node-standin", 30000, ep.probe_kwargs())
        assert result.outcome.kind == "ok", result.describe()
        probe_box = client.containers.get(f"mtls-harness-{run_id}-probe")
        code, out = probe_box.exec_run(["python3", "-c", "print(open('/proc/net/route').read());"
                                        "print('--');print(open('/proc/net/ipv6_route').read())"])
        assert code == 0
        v4, _, v6 = out.decode().partition("--")
        assert all(line.split()[1] != "00000000" for line in v4.splitlines()[1:] if line.strip()), v4
        assert not [line for line in v6.splitlines() if line.startswith("0" * 32 + " 00 ")
                    and not line.rstrip().endswith(" lo")], v6  # no ::/0 route but the kernel's own on lo
        assert any(line.startswith("fd006d74") for line in v6.splitlines()), f"the network is dual-stack: {v6}"
    finally:
        if prober is not None:
            prober.stop()
        try:
            remove_run(client, run_id)
            left = client.containers.list(all=True, filters={"label": f"io.mtls-harness.run={run_id}"})
            assert not left, [c.name for c in left]
        finally:
            client.close()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
