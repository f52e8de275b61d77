"""The kind target's command lines — kind v0.33's CLI (kubernetes-sigs/kind pkg/cmd/kind/{create,get,load,delete}/…)
and kubectl's documented flags — and the one-command runner and the controller-flag patch it uses."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from harness.errors import StartError, ToolMissingError

if TYPE_CHECKING:
    from harness.model.topology import Topology

__all__ = ["CLUSTER_WAIT", "CONTROLLER_WAIT", "find_tool", "kind_create_argv", "kind_delete_argv",
           "kind_get_clusters_argv", "kind_kubeconfig_argv", "kind_load_argv", "kubectl_apply_argv",
           "kubectl_wait_controller_argv"]

#: kind create's own wait for the control-plane node (a first run also pulls the node image: minutes)
CLUSTER_WAIT: Final = "300s"
CONTROLLER_WAIT: Final = 240  # seconds for the ingress-nginx controller pod
_KIND_HINT: Final = ("install kind v0.33.0 (the node image in kind-config/ is built for it): "
                     "https://kind.sigs.k8s.io/docs/user/quick-start/#installation, e.g. "
                     "`go install sigs.k8s.io/kind@v0.33.0`")
_KUBECTL_HINT: Final = "install kubectl: https://kubernetes.io/docs/tasks/tools/ (or set PATH to one)"


# ---------------------------------------------------------------------------------------------------------------
# the command lines (kind v0.33 CLI: pkg/cmd/kind/{create,get,load,delete}/…; kubectl's documented flags)
# ---------------------------------------------------------------------------------------------------------------
def find_tool(name: str, hint: str) -> str:
    """The absolute path of ``name`` on PATH, or a :class:`ToolMissingError` with ``hint``."""
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(name, hint)
    return found


def kind_get_clusters_argv(kind: str) -> list[str]:
    return [kind, "get", "clusters"]


def kind_create_argv(kind: str, name: str, config: Path, kubeconfig: Path, wait: str = CLUSTER_WAIT) -> list[str]:
    """``kind create cluster``: ``--name`` overrides the config's ``name:``; ``--kubeconfig`` keeps the user's own
    kubeconfig untouched; ``--wait`` blocks until the control-plane node is Ready."""
    return [kind, "create", "cluster", "--name", name, "--config", str(config), "--kubeconfig", str(kubeconfig),
            "--wait", wait]


def kind_kubeconfig_argv(kind: str, name: str) -> list[str]:
    """``kind get kubeconfig`` prints the cluster's kubeconfig (API server on 127.0.0.1, from kind-config)."""
    return [kind, "get", "kubeconfig", "--name", name]


def kind_load_argv(kind: str, image: str, name: str) -> list[str]:
    return [kind, "load", "docker-image", image, "--name", name]


def kind_delete_argv(kind: str, name: str, kubeconfig: Path) -> list[str]:
    return [kind, "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)]


def kubectl_apply_argv(kubectl: str, kubeconfig: Path, manifest: Path) -> list[str]:
    return [kubectl, "--kubeconfig", str(kubeconfig), "apply", "-f", str(manifest)]


def kubectl_wait_controller_argv(kubectl: str, kubeconfig: Path, timeout: int = CONTROLLER_WAIT) -> list[str]:
    """The ingress-nginx controller pod Ready (the selector ingress-nginx's own kind instructions use)."""
    return [kubectl, "--kubeconfig", str(kubeconfig), "--namespace", "ingress-nginx", "wait",
            "--for=condition=ready", "pod", "--selector=app.kubernetes.io/component=controller",
            f"--timeout={timeout}s"]


def _run(argv: list[str], what: str, timeout: float, stdin: bytes | None = None) -> str:
    """Run one command; its stdout. Fails with the command and its stderr tail (nothing we pass holds a key)."""
    try:
        out = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise StartError(f"{what}: `{' '.join(argv)}` did not finish in {timeout:g}s") from None
    except OSError as exc:
        raise StartError(f"{what}: could not run {argv[0]}: {exc}") from None
    if out.returncode != 0:
        tail = out.stderr.decode(errors="replace").strip()[-1500:]
        raise StartError(f"{what}: `{' '.join(argv)}` exited with code {out.returncode}\n{tail}")
    return out.stdout.decode(errors="replace")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _with_controller_args(data: bytes, topology: Topology) -> bytes:
    """The verified deploy.yaml with the chain's controller flags appended to the controller container's args."""
    import yaml

    from harness.render.k8s import render_controller_args

    extra = render_controller_args(topology)
    if not extra:
        return data
    docs = list(yaml.safe_load_all(data))
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container.get("name") == "controller":
                    container["args"] = [*container.get("args", []), *extra]
    return yaml.safe_dump_all(docs, sort_keys=False).encode()


@dataclass(frozen=True)
class _Network:
    """kind's docker network, which exists already: testcontainers only needs its name."""

    name: str


def _api_error(exc: Exception) -> str:
    """An ApiException's status and reason only: its body may quote the object sent (a Secret's data)."""
    return f"{getattr(exc, 'status', '?')} {getattr(exc, 'reason', type(exc).__name__)}"
