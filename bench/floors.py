"""The floors: the same binaries the chain runs, started with trivial configs written here.

- nginx: one plain-HTTP server that answers ``return 200``; same binary, same ``-p/-c/-g "daemon off;"`` command line
  shape, one worker, as the ingress stand-in;
- Envoy: one plain-HTTP listener with a ``direct_response`` route and an admin interface; same binary and flags
  (``--disable-hot-restart --concurrency 1 -l warning``) as the gateway/apim stand-ins, ready when admin ``/ready``
  answers LIVE — the signal the local target waits for;
- Python: the venv's interpreter binding one TLS socket with the pod's cert (stdlib only) — the floor of the echo pod,
  which is that plus the harness import and an HTTP server.

Each floor is a context manager over :class:`~harness.runtime.ManagedProcess`, so it is stopped by PID whatever
happens; :func:`time_start` measures spawn → ready with a 5 ms poll.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench.common import HOST, poll_ready, proc_cpu, tcp_open
from harness.runtime import ManagedProcess, free_ports
from harness.runtime.binaries import find_envoy, find_nginx

FloorKind = Literal["nginx", "envoy", "python"]
FLOORS: tuple[FloorKind, ...] = ("nginx", "envoy", "python")
#: a floor that is not up in this long is broken, not slow
READY_TIMEOUT = 20.0


@dataclass
class Floor:
    """A running floor process: how to tell it is ready, and (nginx) the files :func:`reload_nginx` needs."""

    kind: FloorKind
    process: ManagedProcess
    ready: Callable[[], bool]
    port: int
    nginx_config: object | None = None  # a harness.render.nginx.NginxConfig for the nginx floor


def nginx_conf(prefix: Path, port: int) -> str:
    """The minimal nginx.conf: one worker, one server, ``return 200``; every path under ``prefix``."""
    lines = []
    if os.geteuid() == 0:  # as the ingress stand-in does: as root, workers run as the same user
        lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};")
    lines += [
        "worker_processes 1;",
        f"pid {prefix / 'nginx.pid'};",
        f"error_log {prefix / 'error.log'} notice;",
        "events { worker_connections 64; }",
        "http {",
        "    access_log off;",
        *(f"    {k}_temp_path {prefix / 'tmp' / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "    server {",
        f"        listen {HOST}:{port};",
        '        return 200 "floor\\n";',
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def envoy_bootstrap(port: int, admin_port: int) -> dict[str, object]:
    """The minimal Envoy bootstrap: an admin interface and one listener whose only route is a direct_response."""
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "floor",
            "address": {"socket_address": {"address": HOST, "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": hcm,
                    "stat_prefix": "floor",
                    "route_config": {"virtual_hosts": [{
                        "name": "all", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"},
                                    "direct_response": {"status": 200, "body": {"inline_string": "floor\n"}}}],
                    }]},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                },
            }]}],
        }]},
    }


#: the Python floor: bind one TLS-wrapped listening socket with the given cert, then wait to be stopped
_PY_FLOOR = """
import signal, socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
sock = ctx.wrap_socket(socket.create_server(("127.0.0.1", int(sys.argv[3]))), server_side=True)
signal.sigwait([signal.SIGTERM])
"""


def _admin_live(admin_port: int) -> bool:
    import http.client

    conn = http.client.HTTPConnection(HOST, admin_port, timeout=0.5)
    try:
        conn.request("GET", "/ready")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read().strip() == b"LIVE"
    except OSError:
        return False
    finally:
        conn.close()


def prepare(kind: FloorKind, workdir: Path, *, cert: Path | None = None, key: Path | None = None) -> Floor:
    """Write ``kind``'s trivial config into ``workdir`` and return the (not yet started) floor process."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{kind}.log"
    if kind == "nginx":
        from harness.render.nginx import NginxConfig

        (port,) = free_ports(1, HOST)
        (workdir / "tmp").mkdir(exist_ok=True)
        conf = workdir / "nginx.conf"
        conf.write_text(nginx_conf(workdir, port))
        config = NginxConfig(conf_path=conf, prefix=workdir, pid_path=workdir / "nginx.pid",
                             error_log=workdir / "error.log", listen_port=port)
        proc = ManagedProcess("floor-nginx", config.argv(find_nginx()), log_path=log)
        return Floor(kind, proc, lambda: tcp_open(port), port, config)
    if kind == "envoy":
        port, admin = free_ports(2, HOST)
        conf = workdir / "envoy.json"
        conf.write_text(json.dumps(envoy_bootstrap(port, admin), indent=1))
        argv = [str(find_envoy()), "-c", str(conf), "--disable-hot-restart", "--concurrency", "1", "-l", "warning"]
        proc = ManagedProcess("floor-envoy", argv, log_path=log)
        return Floor(kind, proc, lambda: _admin_live(admin), port)
    if cert is None or key is None:
        raise ValueError("the python floor needs a cert and key (the pod's)")
    (port,) = free_ports(1, HOST)
    proc = ManagedProcess("floor-python", [sys.executable, "-c", _PY_FLOOR, str(cert), str(key), str(port)],
                          log_path=log)
    return Floor(kind, proc, lambda: tcp_open(port), port)


@contextlib.contextmanager
def running(floor: Floor) -> Iterator[float]:
    """Start ``floor``, yield the seconds from spawn to ready, stop it on exit (by its PID)."""
    with floor.process:
        try:
            seconds = poll_ready(floor.ready, timeout=READY_TIMEOUT, alive=floor.process.exit_reason)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{floor.kind} floor did not start: {exc}\n{floor.process.log_tail(10)}") from None
        yield seconds


@dataclass(frozen=True)
class Start:
    """One cold start of a floor."""

    seconds: float  # spawn → ready
    cpu_at_ready: float | None  # CPU seconds the process had used when it was first seen ready
    stop_seconds: float


def time_start(kind: FloorKind, workdir: Path, *, cert: Path | None = None, key: Path | None = None) -> Start:
    """One cold start of a floor, then its stop."""
    floor = prepare(kind, workdir, cert=cert, key=key)
    with running(floor) as seconds:
        cpu = proc_cpu(floor.process.pid)
        t_stop = time.perf_counter()
    return Start(seconds, cpu, time.perf_counter() - t_stop)
