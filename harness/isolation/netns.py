"""Network namespaces for the isolated chain: one per hop plus the internet, a veth pair per link, nothing else.

    with ChainNetwork.create() as net:             # five namespaces, four links, no default route anywhere
        argv = net.exec_argv("gateway", ["envoy", "-c", "gateway.yaml"])   # runs inside the gateway namespace
        net.address("apim")                        # 192.0.2.6: where apim listens, on its link to the gateway

The links form a line, and nothing else joins the namespaces::

    internet ──192.0.2.0/30── gateway ──192.0.2.4/30── apim ──192.0.2.8/30── ingress ──192.0.2.12/30── pod
       .1                  .2      .5                .6    .9               .10     .13              .14

Each namespace knows only its connected /30s: there is no default route anywhere, IPv4 forwarding is switched off in
every namespace (a new namespace inherits ``net.ipv4.ip_forward`` from the host here, so it is set explicitly) and
IPv6 is off (no link-local addresses, no router solicitations on the wire). So the internet namespace reaches the
gateway and nothing behind it, the gateway reaches apim, and so on: exactly the reachability of the Azure chain,
where APIM's internal VNet and the AKS ingress's private IP are not routable from the internet. The addresses come
from a documentation range (RFC 5737) and only ever exist inside these namespaces.

Veth pairs are created directly inside their namespaces (``ip link add … netns A type veth peer … netns B``), so
no interface ever appears in the host namespace. Deleting the namespaces (after every process inside has stopped)
removes the veths with them. Names carry a per-run prefix (:func:`run_prefix`); the safety net (:func:`sweep`) only
ever removes names with that prefix.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from harness.errors import HarnessError, StartError, UsageError

__all__ = [
    "DEFAULT_SUBNET",
    "DOCUMENTATION_RANGES",
    "LINKS",
    "ROLES",
    "ChainNetwork",
    "IsolationUnavailable",
    "Link",
    "Role",
    "check_available",
    "namespace_inode",
    "own_namespaces",
    "processes_in",
    "run_prefix",
    "sweep",
]

Role = Literal["internet", "gateway", "apim", "ingress", "pod"]
#: the namespaces, outermost first
ROLES: Final[tuple[Role, ...]] = ("internet", "gateway", "apim", "ingress", "pod")
#: the links, as (client side, server side): each hop is reachable only from the namespace of its real caller
LINKS: Final[tuple[tuple[Role, Role], ...]] = (("internet", "gateway"), ("gateway", "apim"), ("apim", "ingress"),
                                               ("ingress", "pod"))
#: RFC 5737 (IPv4) documentation ranges: never routed on the internet, so a leak could not reach anyone
DOCUMENTATION_RANGES: Final = tuple(ipaddress.IPv4Network(n) for n in
                                    ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
#: where the four /30 links are cut from unless told otherwise
DEFAULT_SUBNET: Final = "192.0.2.0/24"
#: seconds any one ``ip``/``sysctl`` command may take
COMMAND_TIMEOUT: Final = 20.0
#: seconds the veths may take to come up after ``link set up`` (the kernel's link watcher runs about once a second)
CARRIER_TIMEOUT: Final = 10.0

_RUN_ID_ENV: Final = "MTLS_HARNESS_RUN_ID"
_RUN_ID_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
_RUN_ID: Final = f"{os.getpid():x}{secrets.token_hex(2)}"
_COUNTER = itertools.count(1)
_LIVE: weakref.WeakSet[ChainNetwork] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_ATEXIT_HOOKED: list[bool] = []  # non-empty once the exit hook is installed
_NETNS_DIR: Final = Path("/run/netns")


class IsolationUnavailable(UsageError):
    """Namespaces cannot be made here (not Linux, not root, no ``ip``). The message is one line with the fix."""


def run_prefix() -> str:
    """The prefix of every namespace this process creates: ``mtlsh-<run id>``.

    The run id is ``$MTLS_HARNESS_RUN_ID`` when set (lower-case letters, digits and dashes, at most 24), else
    this process's id plus four random hex digits, so two runs never share a prefix.
    """
    given = os.environ.get(_RUN_ID_ENV)
    if given is not None and not _RUN_ID_RE.match(given):
        raise UsageError(f"{_RUN_ID_ENV}={given!r} is not a usable run id — use 1-24 lower-case letters, digits "
                         "or dashes, starting with a letter or digit")
    return f"mtlsh-{given or _RUN_ID}"


def check_available() -> None:
    """Raise :class:`IsolationUnavailable` unless namespaces can be made here (Linux, root, ``ip`` installed)."""
    if not sys.platform.startswith("linux"):
        raise IsolationUnavailable(f"--isolate needs Linux network namespaces; this is {sys.platform} — run "
                                   "without --isolate (the chain then runs on 127.0.0.1)")
    if os.geteuid() != 0:
        raise IsolationUnavailable("--isolate needs root to create network namespaces — run as root "
                                   "(e.g. sudo mtls-harness up --isolate) or without --isolate")
    if shutil.which("ip") is None:
        raise IsolationUnavailable("--isolate needs the `ip` command — install iproute2 (apt-get install iproute2)")


def _run(argv: Sequence[str], what: str, *, stdin: str | None = None) -> str:
    """Run one command with a time bound; a failure raises StartError naming ``what``, the command and stderr."""
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StartError(f"{what}: `{' '.join(argv)}` failed: {exc}") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise StartError(f"{what}: `{' '.join(argv)}` exited with {done.returncode}: "
                         f"{' / '.join(detail[-3:]) or 'no output'}")
    return done.stdout


def own_namespaces(prefix: str | None = None) -> list[str]:
    """The namespaces (``ip netns list``) whose names start with ``prefix`` (default: this run's) plus a dash."""
    prefix = (prefix or run_prefix()) + "-"
    out = _run(["ip", "netns", "list"], "listing network namespaces")
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [n for n in names if n.startswith(prefix)]


def sweep(prefix: str | None = None) -> list[str]:
    """Safety net: delete every namespace whose name starts with ``prefix`` (default: this run's); return them.

    Only names with the prefix are touched, never anyone else's. A namespace still holding a process lives on
    (unnamed) until that process exits; stop processes first.
    """
    removed = []
    for name in own_namespaces(prefix):
        with contextlib.suppress(StartError):
            _run(["ip", "netns", "delete", name], f"removing namespace {name}")
            removed.append(name)
    return removed


def namespace_inode(name: str) -> int | None:
    """The inode that identifies the named namespace (as ``/proc/PID/ns/net`` shows it), or None if it is gone."""
    try:
        return os.stat(_NETNS_DIR / name).st_ino
    except OSError:
        return None


def processes_in(inodes: set[int]) -> dict[int, int]:
    """Every process (pid → namespace inode) that lives in one of the namespaces with these inodes."""
    out: dict[int, int] = {}
    if not inodes:
        return out
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ino = os.stat(entry / "ns" / "net").st_ino
            if ino in inodes:
                out[int(entry.name)] = ino
    return out


@dataclass(frozen=True)
class Link:
    """One veth pair: the caller's end and the hop's end, each with its address on the link's /30."""

    client: Role
    server: Role
    client_if: str
    server_if: str
    client_addr: str
    server_addr: str
    prefixlen: int

    @property
    def name(self) -> str:
        """``internet→gateway``: how reports and failure messages name the link."""
        return f"{self.client}→{self.server}"

    def as_dict(self) -> dict[str, object]:
        return {"link": self.name, "client": self.client, "server": self.server, "client_if": self.client_if,
                "server_if": self.server_if, "client_addr": self.client_addr, "server_addr": self.server_addr,
                "prefixlen": self.prefixlen}


def _plan_links(subnet: str, tag: str) -> tuple[Link, ...]:
    try:
        net = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise UsageError(f"isolation subnet {subnet!r} is not a network ({exc}) — give e.g. {DEFAULT_SUBNET}") from None
    if not isinstance(net, ipaddress.IPv4Network) or not any(net.subnet_of(r) for r in DOCUMENTATION_RANGES):
        ranges = ", ".join(str(r) for r in DOCUMENTATION_RANGES)
        raise UsageError(f"isolation subnet {subnet} is outside the documentation ranges ({ranges}) — pick one "
                         "inside them, so no address could ever belong to a real host")
    if net.prefixlen > 28:
        raise UsageError(f"isolation subnet {subnet} is too small for four /30 links — use a /28 or larger")
    links = []
    for i, ((client, server), sub) in enumerate(zip(LINKS, net.subnets(new_prefix=30), strict=False)):
        a, b = list(sub.hosts())
        # interface names: at most 15 bytes (IFNAMSIZ); unique per instance, though they only exist in namespaces
        links.append(Link(client, server, f"mh{tag}{i}c", f"mh{tag}{i}s", str(a), str(b), 30))
    return tuple(links)


class ChainNetwork:
    """Five namespaces and four veth links (see the module docstring). A context manager; :meth:`destroy` is
    idempotent and also runs at interpreter exit for any network still standing."""

    def __init__(self, *, subnet: str = DEFAULT_SUBNET, prefix: str | None = None) -> None:
        self.prefix = prefix or run_prefix()
        self.tag = secrets.token_hex(3)
        self.index = next(_COUNTER)
        self.links = _plan_links(subnet, self.tag)
        self.namespaces: dict[Role, str] = {r: f"{self.prefix}-{self.index}-{r}" for r in ROLES}
        self.inodes: dict[Role, int] = {}
        #: seconds the last :meth:`setup` took
        self.setup_seconds: float | None = None
        self._created: list[str] = []

    # -- lifecycle -----------------------------------------------------------------------------------------------
    @classmethod
    def create(cls, *, subnet: str = DEFAULT_SUBNET, prefix: str | None = None) -> ChainNetwork:
        """Check this host can do it, then build the namespaces and links; a failure removes what was made."""
        check_available()
        net = cls(subnet=subnet, prefix=prefix)
        net.setup()
        return net

    def setup(self) -> None:
        t0 = time.perf_counter()
        _register(self)
        try:
            self._setup()
        except BaseException:
            self.destroy()
            raise
        self.setup_seconds = time.perf_counter() - t0

    def _setup(self) -> None:
        for role in ROLES:  # one by one, so a failure knows exactly which names exist
            name = self.namespaces[role]
            _run(["ip", "netns", "add", name], f"creating namespace {name}")
            self._created.append(name)
            ino = namespace_inode(name)
            if ino is not None:
                self.inodes[role] = ino
        for role in ROLES:
            # no forwarding (inherited from the host otherwise), no IPv6 (no link-local chatter, nothing to route)
            _run(["ip", "netns", "exec", self.namespaces[role], "sysctl", "-q", "-e", "-w", "net.ipv4.ip_forward=0",
                  "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
                 f"configuring namespace {self.namespaces[role]}")
        pairs = "".join(f"link add {lk.client_if} netns {self.namespaces[lk.client]} type veth peer name "
                        f"{lk.server_if} netns {self.namespaces[lk.server]}\n" for lk in self.links)
        _run(["ip", "-batch", "-"], "creating the veth links", stdin=pairs)
        for role in ROLES:
            lines = ["link set lo up"]
            for lk in self.links:
                for side, ifname, addr in (("client", lk.client_if, lk.client_addr),
                                           ("server", lk.server_if, lk.server_addr)):
                    if getattr(lk, side) == role:
                        lines += [f"addr add {addr}/{lk.prefixlen} dev {ifname}", f"link set {ifname} up"]
            _run(["ip", "-n", self.namespaces[role], "-batch", "-"], f"addressing namespace {self.namespaces[role]}",
                 stdin="\n".join(lines) + "\n")
        self._await_carrier()

    def _await_carrier(self) -> None:
        """Wait until every veth is operationally up. The kernel attaches a veth's queue only when its link watcher
        runs (rate-limited to once a second), and drops what is sent before: measured here, up to ~1 s."""
        pending = {self.namespaces[r]: {lk.client_if for lk in self.links if lk.client == r}
                   | {lk.server_if for lk in self.links if lk.server == r} for r in ROLES}
        deadline = time.monotonic() + CARRIER_TIMEOUT
        while pending:
            for ns in list(pending):
                out = _run(["ip", "-n", ns, "-o", "link", "show", "up"], f"reading links in {ns}")
                up = {m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)(?:@[^:]+)?:.*\bstate UP\b", out, re.M)}
                pending[ns] -= up
                if not pending[ns]:
                    del pending[ns]
            if not pending:
                return
            if time.monotonic() >= deadline:
                left = "; ".join(f"{ns}: {', '.join(sorted(ifs))}" for ns, ifs in pending.items())
                raise StartError(f"veth links not up after {CARRIER_TIMEOUT:g}s ({left}) — see `ip -n NS link`")
            time.sleep(0.05)

    def destroy(self) -> list[str]:
        """Delete this network's namespaces (veths go with them once no process is inside); return the names."""
        removed = []
        for name in reversed(self._created):
            try:
                _run(["ip", "netns", "delete", name], f"removing namespace {name}")
            except StartError:
                if namespace_inode(name) is not None:
                    raise
            removed.append(name)
        self._created.clear()
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return removed

    def __enter__(self) -> ChainNetwork:
        if not self._created:
            check_available()
            self.setup()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.destroy()

    # -- views ---------------------------------------------------------------------------------------------------
    def link(self, client: Role, server: Role) -> Link:
        for lk in self.links:
            if (lk.client, lk.server) == (client, server):
                return lk
        raise UsageError(f"there is no link {client}→{server} — links: {', '.join(lk.name for lk in self.links)}")

    def address(self, role: Role) -> str:
        """Where ``role`` listens: its address on the link to its caller (the internet: its own address)."""
        if role == "internet":
            return self.links[0].client_addr
        return next(lk.server_addr for lk in self.links if lk.server == role)

    def exec_argv(self, role: Role, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``role``'s namespace (``ip netns exec`` execs it: the PID stays the program's)."""
        if role not in self.namespaces:
            raise UsageError(f"unknown namespace role {role!r} — use one of {', '.join(ROLES)}")
        return ["ip", "netns", "exec", self.namespaces[role], *argv]

    def run(self, role: Role, argv: Sequence[str]) -> str:
        """Run a short command inside ``role``'s namespace and return its output (time-bounded)."""
        return _run(self.exec_argv(role, argv), f"running {argv[0]} in {self.namespaces[role]}")

    def default_routes(self, role: Role) -> list[str]:
        """The default routes (IPv4 and IPv6) in ``role``'s namespace: always empty for a network made here."""
        out = _run(["ip", "-n", self.namespaces[role], "-4", "route", "show", "default"], "reading routes")
        out6 = ""
        with contextlib.suppress(StartError):  # IPv6 is off: `ip -6` may find nothing to show
            out6 = _run(["ip", "-n", self.namespaces[role], "-6", "route", "show", "default"], "reading routes")
        return [line for line in (out + out6).splitlines() if line.strip()]

    def leftovers(self) -> dict[int, int]:
        """Processes still inside any of this network's namespaces (pid → namespace inode)."""
        return processes_in(set(self.inodes.values()))

    def as_dict(self) -> dict[str, object]:
        return {"prefix": self.prefix, "namespaces": dict(self.namespaces), "links": [lk.as_dict() for lk in
                                                                                      self.links],
                "setup_ms": round(self.setup_seconds * 1000, 1) if self.setup_seconds is not None else None}


def _register(net: ChainNetwork) -> None:
    with _LIVE_LOCK:
        _LIVE.add(net)
        if not _ATEXIT_HOOKED:
            atexit.register(_destroy_all)
            _ATEXIT_HOOKED.append(True)


def _destroy_all() -> None:
    with _LIVE_LOCK:
        nets = list(_LIVE)
    for net in nets:
        with contextlib.suppress(HarnessError, OSError):
            net.destroy()
