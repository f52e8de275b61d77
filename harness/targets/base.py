"""What every target gives the suite: a running chain, described the same way wherever it runs.

A target is a context manager. ``with target as chain:`` stands the chain up (cleaning up a half-start before the
error propagates) and yields a :class:`RunningChain`; leaving the block stops everything the target started.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import HarnessError, InputError, Unavailable, UsageError
from harness.model.topology import HOPS, HopName, Topology

if TYPE_CHECKING:
    from harness.pki.certset import CertSet
    from harness.probe.result import ProbeResult

__all__ = ["CONFIG_ENV", "TARGET_NAMES", "ChainLimits", "EvictedChainError", "HopEndpoint", "HopUnreachable",
           "OwnCertSet", "RunningChain", "Target", "TargetBase", "config_error", "config_file",
           "config_path_from_env", "lane_key", "read_toml_config"]

#: every target the harness knows, in the order the CLI lists them
TARGET_NAMES = ("local", "containers", "kind", "azure", "attach")

#: the environment variable each config-driven target reads its TOML file from (the CLI's --config sets it)
CONFIG_ENV = {"attach": "MTLS_HARNESS_ATTACH_CONFIG", "azure": "MTLS_HARNESS_AZURE_CONFIG"}


def config_path_from_env(target: str) -> Path:
    """The config file of ``target`` (attach, azure) from its environment variable; one UsageError if unset."""
    env = os.environ.get(CONFIG_ENV[target])
    if not env:
        raise UsageError(f"the {target} target needs a config file — pass --config {target}.toml "
                         f"(or set {CONFIG_ENV[target]}) (format: docs/azure.md)")
    return Path(env)


def read_toml_config(path: Path, what: str) -> dict[str, Any]:
    """A TOML config file as a dict; a missing file or bad syntax is one InputError naming ``what`` it is."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "does not exist", f"pass the {what} config (see docs/azure.md)") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"is not valid TOML ({exc})", "fix the syntax (see docs/azure.md)") from None


def config_error(source: Path | None, key: str, problem: str, fix: str) -> UsageError:
    """One line: where in the config (``file: key``, or the key alone for a config from no file), what is wrong with
    the value, and the fix."""
    return UsageError(f"{source}: {key}: {problem} — {fix}" if source else f"{key}: {problem} — {fix}")


def config_file(value: Any, base: Path, source: Path | None, key: str, what: str) -> Path:
    """A file path from a config value (``~`` expanded, relative to the config's directory) that must exist."""
    if not isinstance(value, str) or not value:
        raise config_error(source, key, f"must be a file path, not {value!r}", "give the path as a string")
    p = Path(os.path.expanduser(value))
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise InputError(p, f"does not exist (named by {key})", f"fix the path in the {what} config")
    return p


@dataclass(frozen=True)
class HopEndpoint:
    """Where a hop listens and how its caller talks to it: the trust for its server cert and the caller's identity."""

    hop: HopName
    host: str
    port: int
    server_name: str
    trust: Path | None
    client_cert: Path | None = None
    client_key: Path | None = None
    #: seconds a probe waits for a TLS 1.3 client-cert rejection alert (None: the probe's default; 0 when the
    #: target knows the hop answers a bad cert with an HTTP page, as nginx and the Envoy stand-ins do)
    verdict_wait: float | None = None

    def probe_kwargs(self) -> dict[str, Any]:
        """The probe() keyword arguments that make a probe of this hop look like its caller."""
        kwargs: dict[str, Any] = {"server_name": self.server_name, "trust": self.trust,
                                  "client_cert": self.client_cert, "client_key": self.client_key}
        if self.verdict_wait is not None:
            kwargs["verdict_wait"] = self.verdict_wait
        return kwargs

    def as_dict(self) -> dict[str, Any]:
        return {
            "hop": self.hop,
            "host": self.host,
            "port": self.port,
            "server_name": self.server_name,
            "url": f"https://{self.server_name}:{self.port}/",
            "ca_bundle": str(self.trust) if self.trust else None,
            "client_cert": str(self.client_cert) if self.client_cert else None,
            "client_key": str(self.client_key) if self.client_key else None,
        }


@dataclass(frozen=True)
class ChainLimits:
    """What a target declares it cannot run, and why — a case that needs one of these skips *by design*; any other
    skip is a surprise (a dropped hop, a chain that became read-only) and fails the run under ``--mtls-require-tools``.

    ``unreachable``: hop → why the runner cannot probe it directly (e.g. only the gateway is published);
    ``read_only``: why no variant of the chain can be made (None: variants can be made);
    ``lacks``: a behaviour the target's components cannot show (:data:`SERVER_HEADER_REMOVAL`) → why."""

    unreachable: Mapping[HopName, str] = field(default_factory=dict)
    read_only: str | None = None
    lacks: Mapping[str, str] = field(default_factory=dict)


#: ``ChainLimits.lacks`` key: the ingress cannot drop nginx's ``Server`` header (no headers-more module)
SERVER_HEADER_REMOVAL = "server-header-removal"


class HopUnreachable(Unavailable):
    """A hop the runner cannot probe on this chain. ``declared``: the target said so (:class:`ChainLimits`)."""

    def __init__(self, message: str, *, declared: bool) -> None:
        super().__init__(message)
        self.declared = declared


class LaneHopNotServed(HarnessError):
    """A probe of a hop a lane has no listener on: its cases were planned to connect only behind it
    (harness.cases.model.lane_entries) — a test that does otherwise must say so there, so it fails rather than
    skips."""


class EvictedChainError(HarnessError):
    """A handle to a variant chain that has since been stopped or turned into another variant."""


#: the key of :meth:`RunningChain.evidence_mark` holding when it was taken (epoch milliseconds)
_MARK_TIME = "@ms"
#: a log line's own time stamp: a Gateway API ingress's Envoy (``[1796408251.192][debug]…``), the pod (``… at=…``)
_LEADING_STAMP = re.compile(r"^\[(\d{9,11})\.(\d{3})\]")
_TRAILING_STAMP = re.compile(r" at=(\d{9,11})\.(\d{3})$")


def _fresh(text: str, since_ms: int | None) -> str:
    """``text`` without its lines stamped before ``since_ms`` (and without the pod's stamp, which no reader needs)."""
    if since_ms is None or ("at=" not in text and not text.startswith("[")):
        return text
    kept = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        stamp = _LEADING_STAMP.match(body) or _TRAILING_STAMP.search(body)
        if stamp is not None and int(stamp.group(1)) * 1000 + int(stamp.group(2)) < since_ms:
            continue
        kept.append(_TRAILING_STAMP.sub("", body) + line[len(body):])
    return "".join(kept)


@dataclass
class RunningChain:
    """A chain that is up: its topology, its cert set, and an endpoint per hop (reachable ones only)."""

    target: str
    topology: Topology
    certs: CertSet
    endpoints: Mapping[HopName, HopEndpoint]
    logs: Mapping[str, Path] = field(default_factory=dict)
    #: what a hop's control plane reports of its state, read whole with the logs (``ingress-status``: a Gateway API
    #: ingress's listeners, programmed or not and why)
    states: Mapping[str, Path] = field(default_factory=dict)
    #: True when a case may change the chain (swap a cert, change an annotation); False on attach/azure
    mutable: bool = True
    #: what this target declares it cannot run (see :class:`ChainLimits`)
    limits: ChainLimits = field(default_factory=ChainLimits)
    #: why this handle may no longer be used (set when the chain behind it was evicted), else None
    evicted: str | None = None
    #: the variants served beside this chain by its own processes, by :func:`lane_key`
    lanes: Mapping[str, RunningChain] = field(default_factory=dict)
    #: how the variants were laid out (:meth:`harness.targets.lanes.LanePlan.summary`), for the report; {} without
    layout: Mapping[str, Any] = field(default_factory=dict)
    #: hops a lane was laid out without (in front of every hop its cases connect to), with why: probing one is the
    #: layout's error, not a limit of the target (:class:`LaneHopNotServed`)
    unserved: Mapping[HopName, str] = field(default_factory=dict)

    @property
    def entry(self) -> HopEndpoint:
        return self.endpoints["gateway"]

    def endpoint(self, hop: HopName) -> HopEndpoint:
        """``hop``'s endpoint; :class:`HopUnreachable` (with the target's declared reason, when it declared one) if the
        runner cannot reach it, :class:`EvictedChainError` if this handle's chain was evicted."""
        if self.evicted is not None:
            raise EvictedChainError(self.evicted)
        try:
            return self.endpoints[hop]
        except KeyError:
            pass
        if hop in self.unserved:
            raise LaneHopNotServed(self.unserved[hop])
        why = self.limits.unreachable.get(hop)
        if why is not None:
            raise HopUnreachable(why, declared=True) from None
        raise HopUnreachable(f"the {hop} hop is not reachable on the {self.target} target and the target did not "
                             f"declare why (reachable: {', '.join(self.endpoints)})", declared=False) from None

    def on_host(self, host: str | None) -> RunningChain:
        """This chain viewed for the ingress host ``host`` (None: the home host): its topology focused there
        (:meth:`~harness.model.topology.Topology.focus_on`) and its ingress endpoint named for it — SNI and Host
        ``host``, trusting the root of the cert that host serves. Every host is served all along: nothing restarts."""
        view = self.topology.focus_on(host)
        if view is self.topology:
            return self
        endpoints = dict(self.endpoints)
        ep = endpoints.get("ingress")
        if ep is not None:
            trust = ep.trust
            if view.server_ca_of("ingress") != self.topology.server_ca_of("ingress"):
                trust = self.certs.trust_bundle(view.server_ca_of("ingress"))
            endpoints["ingress"] = dataclasses.replace(ep, server_name=view.ingress.host, trust=trust)
        return dataclasses.replace(self, topology=view, endpoints=endpoints)

    def evict(self, why: str) -> None:
        """Retire this handle: every later probe raises :class:`EvictedChainError` with ``why``."""
        self.evicted = why

    def probe(self, hop: HopName = "gateway", **overrides: Any) -> ProbeResult:
        """Probe ``hop`` as its caller would (its trust, name and identity); keyword arguments override any of them."""
        from harness.probe.handshake import probe

        ep = self.endpoint(hop)
        kwargs = ep.probe_kwargs() | overrides
        return probe(ep.host, ep.port, **kwargs)

    # -- evidence: what each hop wrote about a request, read back after the probe ------------------------------
    def evidence_mark(self) -> dict[str, int]:
        """The current size of every log this chain exposes, and the time (pass it to :meth:`evidence_since` after
        a probe)."""
        mark: dict[str, int] = {_MARK_TIME: time.time_ns() // 1_000_000}
        for name, path in self.logs.items():
            try:
                mark[name] = path.stat().st_size
            except OSError:
                mark[name] = 0
        return mark

    def evidence_since(self, mark: Mapping[str, int], *, limit: int = 256 * 1024) -> dict[str, str]:
        """The text each log gained since ``mark`` (at most ``limit`` bytes each), keyed by log name
        (``ingress-error``, ``ingress-access``, ``pod``, ``gateway-access``, …); logs that did not grow are left out.
        A line stamped with its time (the pod's ``at=…``, a Gateway API ingress's ``[epoch]``) from before the mark
        is left out too: a hop may log a refusal just after its caller saw it, that is after the next mark.
        A target whose hops' logs are out of reach exposes none, and this returns ``{}``."""
        out: dict[str, str] = {}
        since = mark.get(_MARK_TIME)
        for name, path in self.logs.items():
            start = mark.get(name, 0)
            try:
                with path.open("rb") as fh:
                    size = fh.seek(0, 2)
                    if size < start:  # the log was replaced (a restarted hop): read the new file from its start
                        start = 0
                    if size == start:
                        continue
                    fh.seek(start)
                    text = fh.read(limit).decode(errors="replace")
            except OSError:
                continue
            text = _fresh(text, since)
            if text:
                out[name] = text
        for name, path in self.states.items():
            try:
                out[name] = path.read_bytes()[:limit].decode(errors="replace")
            except OSError:
                continue
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "topology": self.topology.name,
            "cert_dir": str(self.certs.directory),
            "hops": {h: self.endpoints[h].as_dict() for h in HOPS if h in self.endpoints},
            "logs": {k: str(v) for k, v in self.logs.items()},
        }


def lane_key(topology: Topology) -> str:
    """How a variant is told apart from another: two topologies with the same key are the same variant (the key
    of :attr:`RunningChain.lanes`). Remembered on the topology (immutable: its repr never changes), as a lane's key is
    asked for hundreds of times and a topology's repr takes a tenth of a millisecond."""
    known = topology.__dict__.get("_lane_key")
    if known is None:
        known = topology.__dict__["_lane_key"] = repr(topology)  # beside the frozen fields, not one of them
    return str(known)


class Target(Protocol):
    """A place the chain runs. ``__enter__`` returns the running chain; ``__exit__`` stops what it started."""

    name: str

    def __enter__(self) -> RunningChain: ...

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def reconfigure(self, topology: Topology) -> RunningChain:
        """Make the running chain match ``topology`` as cheaply as the target allows (hot reload, else restart)."""
        ...


class TargetBase:
    """The lifecycle every target shares: ``__enter__`` runs ``_start()`` and, if it fails half-way, ``stop()``
    before the error propagates; ``__exit__`` runs ``stop()``. ``stop()`` must be safe to call at any point."""

    def _start(self) -> RunningChain:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> RunningChain:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class OwnCertSet:
    """For targets that run the chain themselves (local, containers, kind): ``certs`` is the set given to the
    target, else the one the topology's PKI plan needs, generated (or taken from the cache) on first use."""

    topology: Topology
    _certs: CertSet | None

    @property
    def certs(self) -> CertSet:
        if self._certs is None:
            from harness.pki.certset import cert_set_for

            self._certs = cert_set_for(self.topology.pki)
        return self._certs


def apim_jwks(topology: Topology, certs: CertSet) -> dict[str, Any] | None:
    """The key set apim's validate-jwt trusts (the local issuer's, kept with the cert set), or None without OAuth."""
    if topology.apim.oauth is None or not topology.apim.oauth.enabled:
        return None
    key = str(certs.directory)
    if key not in _JWKS:  # the issuer's RSA key is loaded once per cert set, not once per lane (~35 ms each)
        from harness.oauth.issuer import LocalIssuer  # PyJWT only where OAuth is on

        _JWKS[key] = LocalIssuer.for_cert_set(certs).jwks()
    return _JWKS[key]


_JWKS: dict[str, dict[str, Any]] = {}
