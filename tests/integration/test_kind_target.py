"""The kind target, offline: no kind binary and no control plane exist here (docs/containers.md)

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_kind_target.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
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
