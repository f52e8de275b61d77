"""Free loopback ports, handed out under a lock so parallel workers (pytest-xdist) never get the same one.

nginx cannot bind port 0 and report back, and the chain's hops must know each other's ports before they start (so
they can start at once, in parallel). So ports are picked by the kernel (bind to port 0), then recorded in a small
registry under an exclusive file lock; a port handed out in the last :data:`HOLD_SECONDS` is never handed out again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["free_port", "free_ports", "port_open"]

#: how long a handed-out port stays reserved for the process that asked for it
HOLD_SECONDS = 120.0

_REGISTRY = Path(tempfile.gettempdir()) / f"mtls-harness-ports-{os.getuid()}.json"


def _kernel_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    return 32768, 60999


def _scan(host: str, count: int, taken: set[int]) -> list[int]:
    """``count`` ports of the ephemeral range that bind on ``host`` and are not ``taken`` (bounded: the range)."""
    import random

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = _ephemeral_range()
    start = random.randint(low, high)
    found: list[int] = []
    for offset in range(high - low + 1):
        port = low + (start - low + offset) % (high - low + 1)
        if port in taken:
            continue
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise OSError(f"could not find {count} free ports on {host}: the ephemeral range {low}-{high} is used up")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Return ``count`` distinct free TCP ports on ``host``, reserved against other harness processes."""
    lock_path = _REGISTRY.with_suffix(".lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        now = time.time()
        held: dict[str, float] = {}
        with contextlib.suppress(OSError, ValueError):
            held = {k: v for k, v in json.loads(_REGISTRY.read_text()).items() if now - v < HOLD_SECONDS}
        ports: list[int] = []
        for _ in range(count * 50):  # bounded: the kernel rarely repeats itself
            port = _kernel_port(host)
            if str(port) not in held and port not in ports:
                ports.append(port)
                if len(ports) == count:
                    break
        else:
            # the kernel keeps handing out ports held for others (many chains with many lanes in the last
            # HOLD_SECONDS): walk the ephemeral range from a random point instead, each port tried once
            ports += _scan(host, count - len(ports), {int(k) for k in held} | set(ports))
        for port in ports:
            held[str(port)] = int(now)  # whole seconds: a hold of minutes needs no more, and ints encode fast
        tmp = _REGISTRY.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(held, separators=(",", ":")))
        os.replace(tmp, _REGISTRY)
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One free port; see :func:`free_ports`."""
    return free_ports(1, host)[0]


def port_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port`` (a readiness check: connect, then close)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
