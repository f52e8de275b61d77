"""pytest plugin: options, markers and fixtures (thin wrappers over the library; everything works outside pytest too).

Installed with the package (``pytest11`` entry point), so it loads in every pytest session of the venv it is
installed in: it claims only ``mtls``-prefixed names, so it cannot collide with a project's own options, fixtures or
markers (``tests/integration/test_plugin_names.py`` runs it next to a project with its own ``--target`` and ``chain``).
There are no short aliases: pytest refuses a second ``--target`` with an error at start-up, and a plugin cannot know
which names a project's conftest adds later. (``mtls-harness run`` has its own ``--target``: that command line is ours.)

Options: ``--mtls-target``, ``--mtls-key-type``, ``--mtls-require-tools``, ``--mtls-isolate``, ``--mtls-chain``,
``--mtls-no-lanes``, ``--mtls-report``.
Markers: ``mtls_e2e``, ``mtls_needs_root``, ``mtls_needs_chain``, ``mtls_needs_docker``, ``mtls_needs_azure``,
``mtls_needs_kind``.

Fixtures, in layers (override the settings ones in a conftest.py):

- ``mtls_target_name`` / ``mtls_key_type`` (session): settings from ``--mtls-target`` / ``--mtls-key-type``;
- ``mtls_topology`` (session): the topology the session's chain runs (default: :func:`default_topology`);
- ``mtls_cert_set`` (session): the generated cert set for that topology, cached on disk across runs;
- ``mtls_chain`` (session): the running chain — started once per session (per xdist worker), stopped at the end.
  On the local, containers and kind targets it serves, beside the chain, every variant the session's collected cases
  need (:func:`session_variants`): each a lane of the same processes on its own ports (:mod:`harness.targets.lanes`;
  on kind, host names of its own on the one controller: :mod:`harness.targets.kind_lanes`). Under xdist with
  ``--dist loadgroup`` (``mtls-harness run -n N``) each worker runs whole lanes and serves only its own
  (:mod:`harness.xdist_lanes`);
- ``mtls_chain_for`` (session): ``mtls_chain_for(variant_topology)`` → the lane that serves that variant, or, for a
  variant that is no lane (``--mtls-no-lanes``, another target, a topology no collected case asked for), a running
  variant chain, started on demand and kept while it is among the few most recently used.
  On a read-only target (attach, azure) it skips the test with the target's reason; a handle to a variant that has
  since been evicted refuses to probe (:class:`~harness.targets.base.EvictedChainError`).

A test that uses ``mtls_chain``/``mtls_chain_for`` and meets a hop the runner cannot reach (``Unavailable``) skips
with the reason — *by design* when the target declared it, else (a hop the target did not declare missing) it fails
under ``--mtls-require-tools`` like any undeclared skip.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import HarnessError, ToolMissingError, Unavailable, UsageError
from harness.model.topology import Topology, default_topology
from harness.report.collect import IDENTITY_MODES, case_of, generated_for_chain, skip_case
from harness.runtime import process_mark, stop_all
from harness.targets import TARGET_NAMES, RunningChain, open_target
from harness.targets.base import lane_key
from harness.xdist_lanes import LaneScheduling, case_groups, lanes_split, param_id

if TYPE_CHECKING:
    from harness.cases.model import Case as CaseType

__all__ = ["MARKERS", "VariantChains", "require_chain_components", "session_variants"]

MARKERS = {
    "mtls_e2e": "a handshake case run against a live chain on the selected --mtls-target",
    "mtls_needs_root": "needs root (network namespaces, captures); skipped otherwise",
    "mtls_needs_chain": "needs nginx and Envoy to run the local chain; skipped otherwise",
    "mtls_needs_docker": "needs a reachable Docker engine; skipped otherwise",
    "mtls_needs_azure": "runs only with --mtls-target azure",
    "mtls_needs_kind": "runs only with --mtls-target kind",
}

#: how many variant chains stay up at once (each is four processes)
VARIANT_CACHE = 3
#: why a variant that is not a lane of the kind chain skips there
KIND_NOT_A_LANE = ("the kind target runs one cluster and this variant is not a lane of it (other controller settings "
                   "need an ingress controller of their own, not built: docs/containers.md, 'Variants are lanes on "
                   "kind'; with --mtls-no-lanes no variant is); it runs on the local and containers targets")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mtls-harness", "mTLS chain harness")
    group.addoption("--mtls-target", choices=TARGET_NAMES, default=os.environ.get("MTLS_HARNESS_TARGET", "local"),
                    help="where the chain runs: local (default), containers, kind, azure, attach")
    group.addoption("--mtls-key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                    help="key type of the generated cert set (default: ecdsa)")
    group.addoption("--mtls-require-tools", action="store_true",
                    default=bool(os.environ.get("MTLS_HARNESS_REQUIRE_TOOLS")),
                    help="fail instead of skipping when root, Docker, nginx or Envoy is missing, or when a case skips "
                         "for a reason its target did not declare (CI sets MTLS_HARNESS_REQUIRE_TOOLS)")
    group.addoption("--mtls-isolate", action="store_true", default=bool(os.environ.get("MTLS_HARNESS_ISOLATE")),
                    help="local target only: every hop in its own network namespace, every probe inside a namespace "
                         "with no default route (Linux, root; docs/isolation.md)")
    group.addoption("--mtls-chain", metavar="FILE", default=os.environ.get("MTLS_HARNESS_CHAIN") or None,
                    help="run your chain file (docs/chain-file.md) instead of the reference chain "
                         "(default: $MTLS_HARNESS_CHAIN)")
    group.addoption("--mtls-no-lanes", action="store_true", default=bool(os.environ.get("MTLS_HARNESS_NO_LANES")),
                    help="local, containers and kind targets: run each variant as a chain of its own, started or "
                         "reconfigured when a case needs it, instead of serving every variant beside the chain from "
                         "the start (slower; for comparing)")
    group.addoption("--mtls-ingress", metavar="KIND", default=os.environ.get("MTLS_HARNESS_INGRESS") or None,
                    help="the ingress hop's kind: ingress-nginx, or gateway-api[:envoy-gateway|:agc] — the chain's "
                         "Ingresses migrated to Gateway API (docs/gateway-api.md); default: as the chain file says "
                         "($MTLS_HARNESS_INGRESS)")
    group.addoption("--mtls-gateway-resources", metavar="FILE", action="append", default=None,
                    help="with a Gateway API ingress: YOUR Gateway API resources (YAML files or folders; repeatable) "
                         "served as the chain's ingress instead of the migration of its Ingresses, which still say "
                         "what must hold (docs/gateway-api.md)")
    group.addoption("--mtls-report", metavar="DIR", default=None,
                    help="write the e2e cases' report to DIR: results.json, index.html, junit.xml (harness.report)")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("--mtls-isolate", False) and config.getoption("--mtls-target", "local") != "local":
        raise pytest.UsageError("--mtls-isolate runs the local target in network namespaces — use it with "
                                "--mtls-target local")
    from harness.report.collect import CHAIN_CASES

    memo: list[Mapping[str, CaseType]] = []

    def chain_cases() -> Mapping[str, CaseType]:
        if not memo:
            memo.append({c.id: c for c in chain_catalogue(config)})
        return memo[0]

    config.stash[CHAIN_CASES] = chain_cases
    if config.getoption("--mtls-report", None):
        from harness.report.collect import FINDINGS, install

        install(config)
        config.stash[FINDINGS] = lambda: _findings(config)


def chain_catalogue(config: pytest.Config) -> tuple[CaseType, ...]:
    """The catalogue generated for the session's chain (``--mtls-chain``, else the reference chain)."""
    from harness.cases.catalogue import CATALOGUE, catalogue_for

    loaded = _chain_file(config)
    if _ingress_kind(config) is not None or config.getoption("--mtls-gateway-resources", None):
        return catalogue_for(_on_ingress(config, loaded.topology if loaded is not None else default_topology()))
    # the reference chain's is CATALOGUE itself (the same cases for either key type: names and variants do not
    # depend on it)
    return catalogue_for(loaded.topology) if loaded is not None else CATALOGUE


def _ingress_kind(config: pytest.Config) -> str | None:
    """``--mtls-ingress``: None (as the chain says), ``ingress-nginx`` or a Gateway API implementation's name."""
    value = config.getoption("--mtls-ingress", None)
    if not value:
        return None
    from harness.render.gateway_api import parse_ingress_kind

    try:
        return parse_ingress_kind(str(value), "--mtls-ingress") or "ingress-nginx"
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None


def _on_ingress(config: pytest.Config, topology: Topology) -> Topology:
    """``topology`` with the ingress hop the options ask for: ``--mtls-ingress`` (its kind) and
    ``--mtls-gateway-resources`` (your Gateway API resources served as it)."""
    kind = _ingress_kind(config)
    t = _as_kind(topology, kind) if kind is not None else topology
    files = config.getoption("--mtls-gateway-resources", None)
    if not files:
        return t
    if t.ingress.gateway_api is None:
        raise pytest.UsageError("--mtls-gateway-resources: the ingress hop is ingress-nginx — add --mtls-ingress "
                                "gateway-api (or gateway-api:agc), or use a chain file with controller: gateway-api")
    from harness.chainfile.k8s import read_gateway_api

    paths = [(Path(f), "--mtls-gateway-resources") for f in files]
    try:
        documents = read_gateway_api(paths)
    except UsageError as exc:
        raise pytest.UsageError(str(exc)) from None
    return t.with_gateway_api_manifests(documents, ", ".join(str(p) for p, _ in paths))


def _as_kind(topology: Topology, kind: str) -> Topology:
    """``topology`` with its ingress hop served by ``kind`` (ingress-nginx, or a Gateway API implementation)."""
    if kind == "ingress-nginx":
        return topology.replace(ingress=dataclasses.replace(topology.ingress, gateway_api=None))
    if topology.ingress.controller.enable_ssl_passthrough:
        raise pytest.UsageError("--mtls-ingress gateway-api: this chain uses ssl-passthrough, whose Gateway API twin "
                                "(a TLS listener and a TLSRoute) is not modelled")
    return topology.on_gateway_api(kind)


def _findings(config: pytest.Config) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The findings of the chain the session runs (its configuration's, docs/findings.md) as report records, and the
    ids the chain file accepts."""
    from harness.findings.predict import predict
    from harness.report.findings import chain_findings, finding_records

    loaded = _chain_file(config)
    changed = _ingress_kind(config) is not None or config.getoption("--mtls-gateway-resources", None)
    if loaded is None or changed:
        return finding_records(predict(_session_topology(config))), dict(loaded.accepted) if loaded is not None else {}
    return chain_findings(loaded), dict(loaded.accepted)


def _docker_reachable() -> bool:
    if shutil.which("docker") is None and not os.path.exists("/var/run/docker.sock"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _missing(config: pytest.Config, reason: str) -> None:
    """Skip with ``reason`` — or fail when --mtls-require-tools says the environment must have everything."""
    if config.getoption("--mtls-require-tools"):
        pytest.fail(f"{reason} (--mtls-require-tools is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_chain_components(config: pytest.Config) -> None:
    """Skip (or fail, with --mtls-require-tools) unless nginx and Envoy are installed: for fixtures that start a
    chain."""
    from harness.runtime.binaries import missing_chain_components

    missing = missing_chain_components()
    if missing:
        _missing(config, missing)


def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    if _MY_GROUP not in config.stash and item.nodeid in config.stash.get(_GROUP_OF, {}):
        # before the chain starts (its fixture is set up after this hook): it serves this group's lanes only
        config.stash[_MY_GROUP] = config.stash[_GROUP_OF][item.nodeid]
    target = config.getoption("--mtls-target")
    if item.get_closest_marker("mtls_needs_root") and os.geteuid() != 0:
        _missing(config, "needs root (network namespaces / packet capture): run as root or with sudo")
    if item.get_closest_marker("mtls_needs_chain"):
        require_chain_components(config)
    if item.get_closest_marker("mtls_needs_docker") and not _docker_reachable():
        _missing(config, "needs a running Docker engine (apt-get install docker.io; dockerd)")
    if item.get_closest_marker("mtls_needs_azure") and target != "azure":
        pytest.skip("runs only with --mtls-target azure")
    if item.get_closest_marker("mtls_needs_kind") and target != "kind":
        pytest.skip("runs only with --mtls-target kind")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """A test on a live chain that meets something its target cannot give (an unreachable hop, a fault the attach
    config cannot make) skips with the reason; an undeclared one fails under --mtls-require-tools."""
    try:
        return (yield)
    except Unavailable as exc:
        if not {"mtls_chain", "mtls_chain_for"} & set(getattr(item, "fixturenames", ())):
            raise
        skip_case(item, str(exc), declared=getattr(exc, "declared", True))
        raise  # pragma: no cover - skip_case raises


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take ``mtls_target`` are parametrized by the selected target, so their ids end in ``[local]``; the
    suite's ``test_generated_case`` by the cases generated for the chain that the reference catalogue does not have
    (``test_generated_case[local-ingress_refuses_client_cert_from_partner_ca]``: the case id with ``_``, as the
    catalogue's own tests are named, so one ``-k`` word matches either; a host's case ends ``@<host>``)."""
    if "mtls_target" in metafunc.fixturenames:
        target = metafunc.config.getoption("--mtls-target")
        metafunc.parametrize("mtls_target", [target], ids=[target], scope="session")
    if "mtls_generated_case" in metafunc.fixturenames:
        from harness.cases.catalogue import CATALOGUE

        reference = {c.id for c in CATALOGUE}
        extra = [c for c in chain_catalogue(metafunc.config) if c.id not in reference]
        metafunc.parametrize("mtls_generated_case", extra, ids=[param_id(c.id) for c in extra])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A chain with no case beyond the reference catalogue's collects no ``test_generated_case`` at all (not an
    empty-parameter-set skip, which would count as a skip the target did not declare)."""
    from harness.cases.model import Case

    empty = [i for i in items if getattr(i, "originalname", "") == "test_generated_case"
             and not isinstance(getattr(getattr(i, "callspec", None), "params", {}).get("mtls_generated_case"), Case)]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]


# ------------------------------------------------------------------------------------------------------------------
# xdist: whole lanes to one worker, so each worker starts only its own cases' lanes (harness.xdist_lanes)
# ------------------------------------------------------------------------------------------------------------------
#: the group this worker runs: the group of the first grouped test it was sent
_MY_GROUP = pytest.StashKey[str]()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if LaneScheduling is None or not lanes_split(config):
        return None
    return LaneScheduling(config, log, topology=lambda: _session_topology(config))


def pytest_collection_finish(session: pytest.Session) -> None:
    """The cases the session will run — after every plugin's selection (``-k``, ``-m``, xdist) — whose variants
    the chain serves as lanes (:func:`session_variants`)."""
    config = session.config
    cases = [(i.nodeid, c) for c, i in ((case_of(i), i) for i in session.items
                                        if i.get_closest_marker("mtls_e2e") and generated_for_chain(i))
             if c is not None]
    workers = lanes_split(config)
    groups = config.stash[_GROUP_OF] = (case_groups(cases, workers, _session_topology(config)) if workers
                                        else {})
    config.stash[_SESSION_CASES] = [(c, groups.get(nodeid)) for nodeid, c in cases]


#: the session's cases (after every selection), each with its xdist group (harness.xdist_lanes)
_SESSION_CASES = pytest.StashKey[list[tuple["CaseType", str | None]]]()
#: an xdist worker's groups, by test node id (empty when the cases are not split)
_GROUP_OF = pytest.StashKey[dict[str, str]]()


def session_variants(config: pytest.Config, topology: Topology) -> dict[str, Any]:
    """The variant chains the session's cases will ask for (each case's variant of ``topology``, in case order) and
    the hosts each one's cases probe: the lanes the local, containers and kind targets serve beside the chain from its
    start (harness.targets.lanes), as the target's ``lanes=`` and ``lane_hosts=``; {} with --mtls-no-lanes. An xdist
    worker under ``--dist loadgroup`` serves only the lanes of its own group's cases (harness.xdist_lanes); a case
    of another group it is sent all the same runs on a variant chain of its own (:class:`VariantChains`)."""
    from harness.cases.model import lane_entries, lanes_for

    if config.getoption("--mtls-no-lanes", False):
        return {}
    cases: list[CaseType] = [c for c, group in config.stash.get(_SESSION_CASES, [])
                             if _MY_GROUP not in config.stash or group == config.stash[_MY_GROUP]]
    variants, hosts = lanes_for(cases, topology)
    return {"lanes": variants, "lane_hosts": hosts, "lane_entries": lane_entries(cases, topology)} if variants else {}


_PROCESS_MARK = pytest.StashKey[int]()
#: pytest sessions running in this process now (a pytester session runs inside another one)
_SESSIONS: list[pytest.Session] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_PROCESS_MARK] = process_mark()
    _SESSIONS.append(session)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: whatever a failing fixture of THIS session left running is stopped here (a nested session, e.g.
    pytester's, leaves the outer session's chains alone)."""
    stop_all(since=session.config.stash.get(_PROCESS_MARK, 0))
    outermost = _SESSIONS[:1] == [session]
    with contextlib.suppress(ValueError):
        _SESSIONS.remove(session)
    # --mtls-isolate and namespace tests: chains, runners, captures, then this run's namespaces (only names with its
    # prefix) — by the outermost session only: the namespaces and isolated chains of a run are not told apart per
    # session, so a nested one would sweep its parent's (found by running tests/unit in a random order)
    if outermost and "harness.isolation.netns" in sys.modules:
        from harness.targets.isolated import stop_all_isolated

        stop_all_isolated()


# ------------------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mtls_target_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--mtls-target"))


@pytest.fixture(scope="session")
def mtls_key_type(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--mtls-key-type"))


_CHAIN_KEY = pytest.StashKey[Any]()


def _chain_file(config: pytest.Config) -> Any:
    """The ``--mtls-chain`` file loaded once per session (None without one); a bad file stops the session."""
    if _CHAIN_KEY not in config.stash:
        path = config.getoption("--mtls-chain")
        loaded = None
        if path:
            from harness.chainfile.load import load_chain

            try:
                loaded = load_chain(path)
            except UsageError as exc:
                raise pytest.UsageError(f"--mtls-chain: {exc}") from None
            config.stash[IDENTITY_MODES] = dict(loaded.mode)
        config.stash[_CHAIN_KEY] = loaded
    return config.stash[_CHAIN_KEY]


_TOPOLOGY = pytest.StashKey[Topology]()


def _session_topology(config: pytest.Config) -> Topology:
    """The chain the session runs: the chain file's or the reference chain (``--mtls-key-type``), with the ingress the
    options ask for; worked out once per session."""
    if _TOPOLOGY not in config.stash:
        loaded = _chain_file(config)
        topology = (loaded.topology if loaded is not None
                    else default_topology(str(config.getoption("--mtls-key-type"))))  # type: ignore[arg-type]
        config.stash[_TOPOLOGY] = _on_ingress(config, topology)
    return config.stash[_TOPOLOGY]


@pytest.fixture(scope="session")
def mtls_topology(request: pytest.FixtureRequest, mtls_key_type: str) -> Topology:
    return _session_topology(request.config)


@pytest.fixture(scope="session")
def mtls_cert_set(request: pytest.FixtureRequest, mtls_topology: Topology) -> Any:
    from harness.pki.certset import cert_set_for

    loaded = _chain_file(request.config)
    return loaded.certs if loaded is not None else cert_set_for(mtls_topology.pki)


def _open_target(config: pytest.Config, name: str, topology: Topology,
                 lanes: Mapping[str, Any] | None = None) -> Any:
    """The selected target; with --mtls-isolate the local chain in network namespaces (skips where it cannot run).
    ``lanes``: the variants the local, containers and kind targets serve beside the chain (:func:`session_variants`)."""
    loaded = _chain_file(config)
    own: dict[str, Any] = {"certs": loaded.certs} if (loaded is not None and name in ("local", "containers", "kind")
                                                      and topology.pki == loaded.topology.pki) else {}
    if lanes and name == "local":
        own |= lanes
    elif lanes and name in ("containers", "kind"):  # their lanes have a listener on every hop in front of their own
        own |= {k: v for k, v in lanes.items() if k != "lane_entries"}
    if not config.getoption("--mtls-isolate"):
        try:
            return open_target(name, topology=topology, **own)
        except ToolMissingError as exc:  # e.g. the target's extra is not installed: skip with the pip command
            _missing(config, str(exc))
            raise  # pragma: no cover - _missing raises
    from harness.isolation.netns import IsolationUnavailable
    from harness.targets.isolated import open_isolated

    try:
        return open_isolated(name, topology=topology, **own)
    except IsolationUnavailable as exc:
        _missing(config, str(exc))
        raise  # pragma: no cover - _missing raises


def _enter(config: pytest.Config, target: Any) -> RunningChain:
    try:
        return target.__enter__()  # type: ignore[no-any-return]
    except ToolMissingError as exc:
        _missing(config, str(exc))
        raise  # pragma: no cover - _missing raises
    except HarnessError as exc:
        pytest.fail(f"the chain did not start: {exc}", pytrace=False)
        raise  # pragma: no cover


@pytest.fixture(scope="session")
def mtls_chain(request: pytest.FixtureRequest, mtls_target_name: str,
               mtls_topology: Topology) -> Iterator[RunningChain]:
    """The running chain on the selected target, shared by the whole session (per xdist worker); on the local target
    with every variant the session's cases need served beside it (harness.targets.lanes)."""
    target = _open_target(request.config, mtls_target_name, mtls_topology,
                          lanes=session_variants(request.config, mtls_topology))
    running = _enter(request.config, target)
    try:
        yield running
    finally:
        target.__exit__(None, None, None)


class VariantChains:
    """Variant chains started on demand; with more than ``size`` up, the least recently used one is turned into the
    new variant by ``reconfigure`` (local target, with or without --mtls-isolate: only the hops that differ restart, an
    ingress-only change is an nginx hot reload) or stopped (other targets: the containers target's reconfigure
    restarts all four containers for anything but an ingress change, and was not measured against the suite).

    The handle of an evicted variant is retired (:meth:`RunningChain.evict`): it refuses to probe, instead of probing
    a process that now runs another variant. ``base``: the session's chain — asked for its own topology, it is
    returned; on a read-only base (attach, azure) any other variant skips the test with the target's reason instead
    of handing back the unchanged chain as if it were the variant."""

    def __init__(self, config: pytest.Config, target_name: str, size: int = VARIANT_CACHE, *,
                 base: RunningChain | None = None, node: pytest.Item | None = None) -> None:
        self._config = config
        self._target_name = target_name
        self._size = size
        self._base = base
        #: the test calling it now (a skip is accounted to it)
        self.node = node
        self._up: OrderedDict[str, tuple[Any, RunningChain]] = OrderedDict()

    def __call__(self, topology: Topology) -> RunningChain:
        base = self._base
        if base is not None and topology == base.topology:
            return base
        if base is not None and not base.mutable:
            reason = base.limits.read_only
            why = reason or f"the {base.target} chain is read-only, and its target did not declare it"
            skip_case(self.node, why, declared=reason is not None)
        key = lane_key(topology)
        lane = base.lanes.get(key) if base is not None else None
        if lane is not None and lane.evicted is None:
            return lane  # served beside the chain from its start: nothing starts or reloads
        if key in self._up:
            self._up.move_to_end(key)
            return self._up[key][1]
        if self._target_name == "kind":
            # a second KindTarget would find the session's cluster and refuse it; reconfiguring the session's own
            # would take its lanes down under the cases still to come
            skip_case(self.node, KIND_NOT_A_LANE, declared=True)
        while len(self._up) >= self._size:
            _, (old, old_chain) = self._up.popitem(last=False)
            if self._target_name == "local" and len(self._up) < self._size:
                old_chain.evict(self._evicted("reconfigured into another variant"))
                return self._reuse(old, key, topology)
            old_chain.evict(self._evicted("stopped"))
            old.__exit__(None, None, None)
        target = _open_target(self._config, self._target_name, topology)
        running = _enter(self._config, target)
        self._up[key] = (target, running)
        return running

    def _evicted(self, what: str) -> str:
        return (f"this handle is for a variant chain that mtls_chain_for has since {what} (only {self._size} variants "
                "stay up at once) — call mtls_chain_for(topology) again for a handle to a running chain")

    def _reuse(self, target: Any, key: str, topology: Topology) -> RunningChain:
        try:
            running: RunningChain = target.reconfigure(topology)
        except BaseException as exc:
            target.__exit__(None, None, None)  # half-changed: stop it rather than guess its state
            if isinstance(exc, HarnessError):
                pytest.fail(f"the chain could not be changed into the variant: {exc}", pytrace=False)
            raise
        self._up[key] = (target, running)
        return running

    def close(self) -> None:
        while self._up:
            _, (target, running) = self._up.popitem()
            running.evict(self._evicted("stopped at the end of the session"))
            with contextlib.suppress(Exception):
                target.__exit__(None, None, None)


@pytest.fixture(scope="session")
def mtls_variants(request: pytest.FixtureRequest, mtls_target_name: str,
                  mtls_chain: RunningChain) -> Iterator[VariantChains]:
    """The session's variant chains (use :func:`mtls_chain_for`)."""
    variants = VariantChains(request.config, mtls_target_name, base=mtls_chain)
    try:
        yield variants
    finally:
        variants.close()


@pytest.fixture
def mtls_chain_for(request: pytest.FixtureRequest,
                   mtls_variants: VariantChains) -> Iterator[Callable[[Topology], RunningChain]]:
    """``mtls_chain_for(topology)`` → a running chain for a variant topology (started once, reused while recent)."""
    mtls_variants.node = request.node if isinstance(request.node, pytest.Item) else None
    try:
        yield mtls_variants
    finally:
        mtls_variants.node = None
