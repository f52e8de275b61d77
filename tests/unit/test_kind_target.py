"""The kind target, offline: no kind binary and no control plane exist here (docs/containers.md).

What is checked without a cluster: the one-line errors for a missing kind / kubectl / Docker (`mtls-harness up
--target kind` exits 2), the command lines against kind's CLI as its source defines it, kubectl's arguments against
the real kubectl when one is installed, the manifests it would apply (validated offline), and — with a fake `kind`
on PATH that records its calls — that it refuses to take over a cluster it did not create and deletes one it did.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import ToolMissingError, UsageError
from harness.model.topology import default_topology
from harness.render.k8s import ECHO_IMAGE, validate_manifests
from harness.targets.kind import (
    DEFAULT_CLUSTER,
    KEEP_ENV,
    KindTarget,
    kind_create_argv,
    kind_delete_argv,
    kind_get_clusters_argv,
    kind_kubeconfig_argv,
    kind_load_argv,
)

REPO = Path(__file__).resolve().parents[2]
KIND_CONFIG = REPO / "kind-config" / "kind-cluster.yaml"


# ---------------------------------------------------------------------------------------------------------------
# kind's CLI, as kubernetes-sigs/kind defines it (cobra commands under pkg/cmd/kind/, v0.33): subcommands, their
# flags (long and short) and positional arguments. A model for checking our command lines, not an implementation.
# ---------------------------------------------------------------------------------------------------------------
class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Refused(message)


_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _duration(value: str) -> str:
    if not _GO_DURATION.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a Go duration")
    return value


def kind_cli() -> argparse.ArgumentParser:
    root = _Parser(prog="kind", add_help=False)
    root.add_argument("-v", "--verbosity", type=int)
    root.add_argument("-q", "--quiet", action="store_true")
    verbs = root.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    create = verbs.add_parser("create").add_subparsers(dest="what", required=True, parser_class=_Parser)
    cc = create.add_parser("cluster")  # createcluster.go: name/n, config, image, retain, wait, kubeconfig; no args
    cc.add_argument("-n", "--name")
    cc.add_argument("--config")
    cc.add_argument("--image")
    cc.add_argument("--retain", action="store_true")
    cc.add_argument("--wait", type=_duration)
    cc.add_argument("--kubeconfig")
    get = verbs.add_parser("get").add_subparsers(dest="what", required=True, parser_class=_Parser)
    get.add_parser("clusters")  # clusters.go: no flags, no args
    gk = get.add_parser("kubeconfig")  # kubeconfig.go: name/n, internal
    gk.add_argument("-n", "--name")
    gk.add_argument("--internal", action="store_true")
    load = verbs.add_parser("load").add_subparsers(dest="what", required=True, parser_class=_Parser)
    ld = load.add_parser("docker-image")  # docker-image.go: <IMAGE> [IMAGE...], name/n, nodes
    ld.add_argument("images", nargs="+")
    ld.add_argument("-n", "--name")
    ld.add_argument("--nodes")
    delete = verbs.add_parser("delete").add_subparsers(dest="what", required=True, parser_class=_Parser)
    dc = delete.add_parser("cluster")  # deletecluster.go: name/n, kubeconfig
    dc.add_argument("-n", "--name")
    dc.add_argument("--kubeconfig")
    return root


def _parse(argv: list[str]) -> argparse.Namespace:
    assert argv[0] == "kind"
    return kind_cli().parse_args(argv[1:])


def test_the_model_of_kinds_cli_refuses_what_kind_refuses() -> None:
    # the checks below mean something only if the model rejects flags kind does not have
    for bad in (["kind", "create", "cluster", "--nodes", "3"], ["kind", "get", "clusters", "extra"],
                ["kind", "create", "cluster", "--wait", "5"], ["kind", "load", "docker-image", "--name", "x"]):
        with pytest.raises(_Refused):
            _parse(bad)


def test_kind_command_lines_are_valid_for_kinds_cli(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    create = _parse(kind_create_argv("kind", DEFAULT_CLUSTER, KIND_CONFIG, kubeconfig))
    assert (create.verb, create.what, create.name, create.config) == ("create", "cluster", DEFAULT_CLUSTER,
                                                                     str(KIND_CONFIG))
    assert create.kubeconfig == str(kubeconfig)  # never the user's own ~/.kube/config
    assert create.wait
    assert Path(create.config).is_file()
    get = _parse(kind_kubeconfig_argv("kind", "c1"))
    assert (get.verb, get.what, get.name, get.internal) == ("get", "kubeconfig", "c1", False)
    assert _parse(kind_get_clusters_argv("kind")).what == "clusters"
    load = _parse(kind_load_argv("kind", "mtls-harness/pod:0.1.0-local", "c1"))
    assert (load.images, load.name) == (["mtls-harness/pod:0.1.0-local"], "c1")
    delete = _parse(kind_delete_argv("kind", "c1", kubeconfig))
    assert (delete.verb, delete.what, delete.name, delete.kubeconfig) == ("delete", "cluster", "c1", str(kubeconfig))


def test_the_manifests_it_applies_validate_offline() -> None:
    target = KindTarget(default_topology())
    docs = target._manifests("mtls-harness/pod:0.1.0-local")
    assert validate_manifests(docs) == []
    kinds = [d["kind"] for d in docs]
    assert kinds[0] == "ConfigMap"  # the controller's configuration first
    assert {"Secret", "Deployment", "Service", "Ingress"} <= set(kinds)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "mtls-harness/pod:0.1.0-local"
    assert ECHO_IMAGE != "mtls-harness/pod:0.1.0-local"  # so the line above shows the image was passed through


def test_a_model_kubernetes_would_refuse_is_a_usage_error_before_anything_runs() -> None:
    import dataclasses

    topo = default_topology()
    bad_pod = dataclasses.replace(topo.pod, name="Echo_Pod")
    with pytest.raises(UsageError, match="Echo_Pod"):
        KindTarget(dataclasses.replace(topo, pod=bad_pod))._manifests("img")


def test_keep_cluster_defaults_off_and_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEEP_ENV, raising=False)
    assert KindTarget().keep_cluster is False
    monkeypatch.setenv(KEEP_ENV, "1")
    assert KindTarget().keep_cluster is True
    assert KindTarget(keep_cluster=False).keep_cluster is False


# ---------------------------------------------------------------------------------------------------------------
# missing tools: one line, exit code 2
# ---------------------------------------------------------------------------------------------------------------
def _fake_tool(bindir: Path, name: str, script: str) -> Path:
    path = bindir / name
    path.write_text(f"#!{sys.executable}\n{script}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _up_kind(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "up", "--target", "kind", "--duration", "0"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False)


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mtls-harness: error: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# a fake kind that records its calls (needs Docker: the target checks its images first)
# ---------------------------------------------------------------------------------------------------------------
_RECORDING_KIND = """
import json, os, sys
with open(os.environ["FAKE_KIND_LOG"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if args[:2] == ["get", "clusters"]:
    print(os.environ.get("FAKE_KIND_CLUSTERS", ""))
    raise SystemExit(0)
if args[:2] == ["create", "cluster"]:
    print("ERROR: failed to create cluster: node image not available offline", file=sys.stderr)
    raise SystemExit(1)
raise SystemExit(0)
"""


@pytest.fixture
def fake_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from harness.pytest_plugin import _docker_reachable

    if not _docker_reachable():
        pytest.skip("needs a running Docker engine (the kind target resolves its images first)")
    from harness.images.resolve import docker_client, local_image_tag

    client = docker_client()
    try:
        missing = [r for r in ("envoy", "pod") if not client.images.list(name=local_image_tag(r).split(":")[0])]
    finally:
        client.close()
    if missing:
        from harness.images.build import build_images

        build_images(missing, progress=lambda line: None)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _fake_tool(bindir, "kind", _RECORDING_KIND)
    _fake_tool(bindir, "kubectl", "raise SystemExit(0)\n")
    log = tmp_path / "kind-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KIND_LOG", str(log))
    monkeypatch.delenv(KEEP_ENV, raising=False)
    return log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.mtls_needs_docker
def test_a_missing_echo_image_says_to_run_images_build(fake_kind: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MTLS_HARNESS_POD_IMAGE", "mtls-harness/no-such-pod:0")
    with pytest.raises(ToolMissingError, match="images build") as info, KindTarget(default_topology()):
        pass
    assert "mtls-harness/no-such-pod:0" in str(info.value)
    assert _calls(fake_kind) == []  # nothing ran against kind
