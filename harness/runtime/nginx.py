"""nginx control: the stream and headers-more modules' paths, the ssl-passthrough port, ``nginx -t`` and the SIGHUP
hot reload.

The files are rendered by :mod:`harness.render.nginx`; :func:`render_ingress` adds what only this machine can tell
(which nginx binary and modules, which free port) and renders.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from harness.errors import StartError, ToolMissingError
from harness.model.topology import Topology
from harness.pki.certset import CertSet
from harness.pki.x509 import write_atomic
from harness.render.nginx import (
    HEADERS_MORE_INSTALL_HINT,
    STREAM_INSTALL_HINT,
    HeadersMore,
    NginxConfig,
    NginxLane,
    Passthrough,
    render_nginx,
    uses_passthrough,
)
from harness.runtime.binaries import find_nginx
from harness.runtime.ports import free_port
from harness.runtime.wait import wait_until

__all__ = ["headers_more_module", "passthrough_for", "reload_nginx", "render_ingress", "stream_module_path"]


def render_ingress(
    topology: Topology, certs: CertSet, *, listen: tuple[str, int], pod: tuple[str, int], workdir: Path,
    clear_server_header: bool = True, lanes: Sequence[NginxLane] = (),
) -> NginxConfig:
    """:func:`~harness.render.nginx.render_nginx`, with the stream module and internal port ssl-passthrough needs and
    the headers-more module that removes the ``Server`` header as the controller does (nginx.tmpl 338-341).

    Where the installed nginx has no headers-more module, the ingress still sends ``Server: nginx``: one line on
    stderr says so (once per process) and the rendered nginx.conf says so in a comment. ``clear_server_header=False``
    is for a target whose nginx image may not hold the module (containers: an official image has none).
    """
    wanted = uses_passthrough(topology) or any(uses_passthrough(lane.topology) for lane in lanes)
    passthrough = passthrough_for(Path(workdir).resolve() / "run") if wanted else None
    headers_more: HeadersMore | None = None
    if clear_server_header:
        nginx = find_nginx()
        if nginx not in _HEADERS_MORE_CACHE:
            # the first render of this process checks the topology before nginx runs (`nginx -V`): an Ingress the
            # controller refuses fails here with its one-line reason; the render below overwrites every file
            render_nginx(topology, certs, listen=listen, pod=pod, workdir=workdir, passthrough=passthrough)
        headers_more = headers_more_module(nginx)
    return render_nginx(topology, certs, listen=listen, pod=pod, workdir=workdir, passthrough=passthrough,
                        headers_more=headers_more, lanes=lanes)


def passthrough_for(run_dir: Path) -> Passthrough:
    """The stream module of the installed nginx and the internal port (kept in ``run_dir`` across re-renders)."""
    return Passthrough(stream_module=stream_module_path(find_nginx()), internal_port=_internal_port(run_dir))


_STREAM_CACHE: dict[Path, str | None] = {}
_HEADERS_MORE_CACHE: dict[Path, HeadersMore | None] = {}
_VERSION_INFO: dict[Path, str] = {}
#: the dynamic module file Debian's libnginx-mod-http-headers-more-filter installs in nginx's modules path
HEADERS_MORE_SO = "ngx_http_headers_more_filter_module.so"


def _version_info(nginx: Path) -> str:
    """``nginx -V`` (its configure arguments), run once per binary."""
    if nginx not in _VERSION_INFO:
        try:
            out = subprocess.run([str(nginx), "-V"], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ToolMissingError("nginx", f"could not run `{nginx} -V`: {exc}") from None
        _VERSION_INFO[nginx] = out.stderr + out.stdout
    return _VERSION_INFO[nginx]


def _modules_dir(nginx: Path, info: str) -> Path:
    modules = re.search(r"--modules-path=(\S+)", info)
    return Path(modules.group(1)) if modules else nginx.parent.parent / "lib" / "nginx" / "modules"


def headers_more_module(nginx: Path) -> HeadersMore | None:
    """The headers-more module of ``nginx`` (built in, or the dynamic module in its modules path, found the way the
    stream module is), or None when it has none — then one line on stderr says so and what to install."""
    if nginx in _HEADERS_MORE_CACHE:
        return _HEADERS_MORE_CACHE[nginx]
    info = _version_info(nginx)
    found: HeadersMore | None = None
    if re.search(r"--add-module=\S*headers-more", info):
        found = HeadersMore(module=None)
    else:
        candidate = _modules_dir(nginx, info) / HEADERS_MORE_SO
        if candidate.is_file():
            found = HeadersMore(module=str(candidate))
    if found is None:
        sys.stderr.write(f"mtls-harness: {nginx} has no headers-more module, so the ingress sends `Server: nginx` "
                         f"(ingress-nginx sends none) — {HEADERS_MORE_INSTALL_HINT}\n")
    _HEADERS_MORE_CACHE[nginx] = found
    return found


def stream_module_path(nginx: Path) -> str | None:
    """The ``load_module`` argument the stream module needs, or None when ``nginx`` has it built in.

    Raises :class:`ToolMissingError` naming the package when the module is neither built in nor installed.
    """
    if nginx in _STREAM_CACHE:
        return _STREAM_CACHE[nginx]
    info = _version_info(nginx)
    result: str | None
    if re.search(r"--with-stream(\s|$)", info):
        result = None
    elif "--with-stream=dynamic" in info:
        candidate = _modules_dir(nginx, info) / "ngx_stream_module.so"
        if not candidate.is_file():
            raise ToolMissingError("nginx stream module", f"{candidate} is missing — {STREAM_INSTALL_HINT}")
        result = str(candidate)
    else:
        raise ToolMissingError("nginx stream module", f"{nginx} was built without it — {STREAM_INSTALL_HINT}")
    _STREAM_CACHE[nginx] = result
    return result




def _internal_port(run_dir: Path) -> int:
    """The port the TLS-terminating servers listen on behind the passthrough router; kept across re-renders."""
    record = run_dir / "https-internal.port"
    with contextlib.suppress(OSError, ValueError):
        return int(record.read_text())
    port = free_port()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(record, f"{port}\n".encode())
    return port




def _workers(master: int) -> dict[int, str]:
    """The master's children and their titles ("nginx: worker process", "… is shutting down") from /proc."""
    out: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == master:
                out[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):
            continue
    return out


def reload_nginx(config: NginxConfig, pid: int, *, timeout: float = 10.0,
                 run_in: Callable[[list[str]], list[str]] | None = None) -> None:
    """Check the rendered config with ``nginx -t``, send SIGHUP to the master ``pid`` and wait until a worker with
    the new config runs and the old workers stopped accepting (they finish in-flight requests, none is dropped).

    ``run_in`` wraps the ``nginx -t`` command line so it runs where the master does (``ip netns exec NS …`` for a
    master in a network namespace: its listen addresses exist only there). Raises :class:`StartError` with nginx's
    message when the new config is invalid (the old one keeps serving).
    """
    nginx = find_nginx()
    argv = config.test_argv(nginx)
    check = subprocess.run(run_in(argv) if run_in else argv, capture_output=True, text=True, timeout=30,
                           check=False)
    if check.returncode != 0:
        raise StartError(f"nginx -t refused the re-rendered {config.conf_path}; nginx keeps the old config:\n"
                         f"{(check.stderr or check.stdout).strip()}")
    linux = sys.platform.startswith("linux")
    old = set(_workers(pid)) if linux else set()
    offset = config.error_log.stat().st_size if config.error_log.exists() else 0
    os.kill(pid, signal.SIGHUP)

    def log_since() -> str:
        with open(config.error_log, "rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")

    def reloaded() -> bool:
        text = log_since()
        if "[emerg]" in text:
            raise StartError(f"nginx refused the reload: {text.strip().splitlines()[-1]}")
        if not linux:
            return "start worker process" in text
        workers = _workers(pid)
        fresh = [p for p, title in workers.items() if p not in old and "shutting down" not in title]
        stale = [p for p, title in workers.items() if p in old and "shutting down" not in title]
        return bool(fresh) and not stale

    def master_alive() -> str | None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"nginx master {pid} is gone"
        return None

    wait_until(reloaded, f"nginx (pid {pid}) reload of {config.conf_path}", timeout=timeout,
               retry_on=(OSError,), alive=master_alive, log_tail=lambda: log_since()[-2000:])
