"""Network namespaces for --isolate: real `ip netns`, veth links, processes inside them — and nothing left behind
after a normal stop, a failed start, a SIGINT to `mtls-harness up --isolate`, or a whole pytest session.

Every client here runs inside a namespace the test created (never from the host namespace), and every address is
from 192.0.2.0/24 (RFC 5737). The expected addresses below are the design's link plan (docs/isolation.md), written
out by hand.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.isolation.netns import (
    ChainNetwork,
    IsolationUnavailable,
    check_available,
    processes_in,
    run_prefix,
)
from harness.isolation.runner import isolation_problem

REPO = Path(__file__).resolve().parents[2]
#: the link plan of docs/isolation.md: each namespace's addresses
PLAN = {
    "internet": {"192.0.2.1/30"},
    "gateway": {"192.0.2.2/30", "192.0.2.5/30"},
    "apim": {"192.0.2.6/30", "192.0.2.9/30"},
    "ingress": {"192.0.2.10/30", "192.0.2.13/30"},
    "pod": {"192.0.2.14/30"},
}

needs_root = pytest.mark.mtls_needs_root


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=20).stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


@pytest.fixture(scope="module")
def network():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    with ChainNetwork.create() as net:
        yield net


def _listener(net: ChainNetwork, role: str, host: str) -> tuple[subprocess.Popen[str], int]:
    """A bare TCP listener inside ``role``'s namespace; returns the process and its port."""
    code = textwrap.dedent(f"""
        import socket, sys, time
        s = socket.socket(); s.bind(({host!r}, 0)); s.listen(16)
        print(s.getsockname()[1], flush=True)
        s.settimeout(0.2)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                c, _ = s.accept(); c.close()
            except OSError:
                pass
    """)
    proc = subprocess.Popen(net.exec_argv(role, [sys.executable, "-c", code]), stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    assert ready, "the listener did not start"
    return proc, int(proc.stdout.readline())


def _connect_from(net: ChainNetwork, role: str, host: str, port: int) -> str:
    """Connect from inside ``role``'s namespace; 'connected' or the errno name (a time-bounded single attempt)."""
    code = textwrap.dedent(f"""
        import errno, socket
        try:
            socket.create_connection(({host!r}, {port}), timeout=2).close(); print("connected")
        except TimeoutError:
            print("timeout")
        except OSError as e:
            print(errno.errorcode.get(e.errno, str(e)))
    """)
    return net.run(role, [sys.executable, "-c", code]).strip()  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------------
# bad input and unavailable isolation: one clear line
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("subnet", "says"), [
    ("10.0.0.0/24", "outside the documentation ranges"),
    ("192.0.2.0/29", "too small"),
    ("2001:db8::/64", "outside the documentation ranges"),
    ("not-a-net", "is not a network"),
    ("192.0.2.1/24", "is not a network"),
])
def test_a_subnet_outside_the_documentation_ranges_is_refused_in_one_line(subnet, says):
    with pytest.raises(UsageError, match=says) as exc:
        ChainNetwork(subnet=subnet)
    assert "\n" not in str(exc.value)


def test_isolation_without_root_fails_in_one_line_naming_root(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(IsolationUnavailable, match="needs root") as exc:
        check_available()
    assert "\n" not in str(exc.value)


def test_isolation_off_linux_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(IsolationUnavailable, match="needs Linux network namespaces"):
        check_available()


def test_up_isolate_without_root_exits_2_with_one_line(monkeypatch, capsys):
    from harness.cli.main import main

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["up", "--isolate", "--duration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtls-harness: error: --isolate needs root")
    assert "\n" not in err


def test_up_isolate_refuses_another_target_in_one_line(capsys):
    from harness.cli.main import main

    assert main(["up", "--isolate", "--target", "attach", "--duration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "use --target local" in err
    assert "\n" not in err


def test_run_prefix_comes_from_the_environment_and_is_validated(monkeypatch):
    monkeypatch.setenv("MTLS_HARNESS_RUN_ID", "ci-42")
    assert run_prefix() == "mtlsh-ci-42"
    monkeypatch.setenv("MTLS_HARNESS_RUN_ID", "Bad Id!")
    with pytest.raises(UsageError, match="not a usable run id"):
        run_prefix()


# ------------------------------------------------------------------------------------------------------------------
# the probe runner's own guard
# ------------------------------------------------------------------------------------------------------------------
def _fake_proc(tmp_path: Path, *, same_ns: bool, route: str = "", route6: str = "") -> Path:
    proc = tmp_path / "proc"
    (proc / "self" / "ns").mkdir(parents=True)
    (proc / "1" / "ns").mkdir(parents=True)
    (proc / "net").mkdir()
    (proc / "self" / "ns" / "net").write_text("a")
    if same_ns:
        os.link(proc / "self" / "ns" / "net", proc / "1" / "ns" / "net")
    else:
        (proc / "1" / "ns" / "net").write_text("b")
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    (proc / "net" / "route").write_text(header + route)
    (proc / "net" / "ipv6_route").write_text(route6)
    return proc


def test_runner_guard_refuses_the_host_namespace(tmp_path):
    proc = _fake_proc(tmp_path, same_ns=True)
    assert isolation_problem(proc=proc) == "this process is in the host's network namespace"


def test_runner_guard_refuses_a_namespace_with_a_default_route(tmp_path):
    default = "eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
    assert "IPv4 default route" in isolation_problem(proc=_fake_proc(tmp_path, same_ns=False, route=default))
    v6 = f"{'0' * 32} 00 {'0' * 32} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n"
    assert "IPv6 default route" in isolation_problem(proc=_fake_proc(tmp_path / "6", same_ns=False, route6=v6))


def test_runner_guard_accepts_a_namespace_with_only_connected_routes(tmp_path):
    connected = "veth0\t0002000C\t00000000\t0001\t0\t0\t0\tFCFFFFFF\t0\t0\t0\n"
    assert isolation_problem(proc=_fake_proc(tmp_path, same_ns=False, route=connected)) is None


# ------------------------------------------------------------------------------------------------------------------
# the isolated chain leaves nothing behind
# ------------------------------------------------------------------------------------------------------------------
def _nothing_left(names: list[str], inodes: set[int], pids: list[int]) -> None:
    listed = _ip("netns", "list")
    assert not [n for n in names if n in listed], f"namespaces left: {listed}"
    assert processes_in(inodes) == {}, "a process still holds a namespace (and its veths) alive"
    assert not [p for p in pids if _alive(p)], "a process of the chain is still running"


