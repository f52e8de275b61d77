"""pytest plugin: options, markers and fixtures (thin wrappers over the library; everything works outside pytest too).

Fixtures, in layers (override the settings ones in a conftest.py):

- ``mtls_target_name`` / ``mtls_key_type`` (session): settings from ``--target`` / ``--key-type``;
- ``mtls_topology`` (session): the topology the session's chain runs (default: :func:`default_topology`);
- ``cert_set`` (session): the generated cert set for that topology, cached on disk across runs;
- ``chain`` (session): the running chain — started once per session (per xdist worker), stopped at the end;
- ``chain_for`` (session): ``chain_for(variant_topology)`` → a running variant chain, started on demand and kept
  while it is among the few most recently used, so a variant costs one start however many cases use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness.errors import HarnessError, ToolMissingError, UsageError
from harness.model.topology import Topology, default_topology
from harness.runtime import process_mark, stop_all
from harness.targets import TARGET_NAMES, RunningChain, open_target

__all__ = ["MARKERS", "VariantChains", "require_chain_components"]

MARKERS = {
    "e2e": "a handshake case run against a live chain on the selected --target",
    "needs_root": "needs root (network namespaces, captures); skipped otherwise",
    "needs_chain": "needs nginx and Envoy to run the local chain; skipped otherwise",
    "needs_docker": "needs a reachable Docker engine; skipped otherwise",
    "needs_azure": "runs only with --target azure",
    "needs_kind": "runs only with --target kind",
}

#: how many variant chains stay up at once (each is four processes)
VARIANT_CACHE = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mtls-harness", "mTLS chain harness")
    group.addoption("--target", choices=TARGET_NAMES, default=os.environ.get("MTLS_HARNESS_TARGET", "local"),
                    help="where the chain runs: local (default), containers, kind, azure, attach")
    group.addoption("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                    help="key type of the generated cert set (default: ecdsa)")
    group.addoption("--require-tools", action="store_true", default=bool(os.environ.get("MTLS_HARNESS_REQUIRE_TOOLS")),
                    help="fail instead of skipping when root, Docker, nginx or Envoy is missing (CI sets this)")
    group.addoption("--isolate", action="store_true", default=bool(os.environ.get("MTLS_HARNESS_ISOLATE")),
                    help="local target only: every hop in its own network namespace, every probe inside a namespace "
                         "with no default route (Linux, root; docs/isolation.md)")
    group.addoption("--mtls-chain", metavar="FILE", default=os.environ.get("MTLS_HARNESS_CHAIN") or None,
                    help="run your chain file (docs/chain-file.md) instead of the reference chain "
                         "(default: $MTLS_HARNESS_CHAIN)")
    group.addoption("--mtls-report", metavar="DIR", default=None,
                    help="write the e2e cases' report to DIR: results.json, index.html, junit.xml (harness.report)")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if config.getoption("--isolate", False) and config.getoption("--target", "local") != "local":
        raise pytest.UsageError("--isolate runs the local target in network namespaces — use it with --target local")
    if config.getoption("--mtls-report", None):
        from harness.report.collect import install

        install(config)


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
    """Skip with ``reason`` — or fail when --require-tools says the environment must have everything."""
    if config.getoption("--require-tools"):
        pytest.fail(f"{reason} (--require-tools is set, so this is an error, not a skip)", pytrace=False)
    pytest.skip(reason)


def require_chain_components(config: pytest.Config) -> None:
    """Skip (or fail, with --require-tools) unless nginx and Envoy are installed: for fixtures that start a chain."""
    from harness.runtime.binaries import missing_chain_components

    missing = missing_chain_components()
    if missing:
        _missing(config, missing)


def pytest_runtest_setup(item: pytest.Item) -> None:
    config = item.config
    target = config.getoption("--target")
    if item.get_closest_marker("needs_root") and os.geteuid() != 0:
        _missing(config, "needs root (network namespaces / packet capture): run as root or with sudo")
    if item.get_closest_marker("needs_chain"):
        require_chain_components(config)
    if item.get_closest_marker("needs_docker") and not _docker_reachable():
        _missing(config, "needs a running Docker engine (apt-get install docker.io; dockerd)")
    if item.get_closest_marker("needs_azure") and target != "azure":
        pytest.skip("runs only with --target azure")
    if item.get_closest_marker("needs_kind") and target != "kind":
        pytest.skip("runs only with --target kind")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that take ``mtls_target`` are parametrized by the selected target, so their ids end in ``[local]``."""
    if "mtls_target" in metafunc.fixturenames:
        target = metafunc.config.getoption("--target")
        metafunc.parametrize("mtls_target", [target], ids=[target], scope="session")


_PROCESS_MARK = pytest.StashKey[int]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_PROCESS_MARK] = process_mark()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Safety net: whatever a failing fixture of THIS session left running is stopped here (a nested session, e.g.
    pytester's, leaves the outer session's chains alone)."""
    stop_all(since=session.config.stash.get(_PROCESS_MARK, 0))
    # --isolate and namespace tests: chains, runners, captures, then this run's namespaces (only names with its prefix)
    if "harness.isolation.netns" in sys.modules:
        from harness.targets.isolated import stop_all_isolated

        stop_all_isolated()


# ------------------------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mtls_target_name(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--target"))


@pytest.fixture(scope="session")
def mtls_key_type(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--key-type"))


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
        config.stash[_CHAIN_KEY] = loaded
    return config.stash[_CHAIN_KEY]


@pytest.fixture(scope="session")
def mtls_topology(request: pytest.FixtureRequest, mtls_key_type: str) -> Topology:
    loaded = _chain_file(request.config)
    return loaded.topology if loaded is not None else default_topology(mtls_key_type)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def cert_set(request: pytest.FixtureRequest, mtls_topology: Topology) -> Any:
    from harness.pki.certset import cert_set_for

    loaded = _chain_file(request.config)
    return loaded.certs if loaded is not None else cert_set_for(mtls_topology.pki)


def _open_target(config: pytest.Config, name: str, topology: Topology) -> Any:
    """The selected target; with --isolate the local chain in network namespaces (skips where it cannot run)."""
    loaded = _chain_file(config)
    own = {"certs": loaded.certs} if (loaded is not None and name in ("local", "containers", "kind")
                                       and topology.pki == loaded.topology.pki) else {}
    if not config.getoption("--isolate"):
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
def chain(request: pytest.FixtureRequest, mtls_target_name: str, mtls_topology: Topology) -> Iterator[RunningChain]:
    """The running chain on the selected target, shared by the whole session (per xdist worker)."""
    target = _open_target(request.config, mtls_target_name, mtls_topology)
    running = _enter(request.config, target)
    try:
        yield running
    finally:
        target.__exit__(None, None, None)


class VariantChains:
    """Variant chains started on demand; with more than ``size`` up, the least recently used one is turned into the
    new variant by ``reconfigure`` (local target, with or without --isolate: only the hops that differ restart, an
    ingress-only change is an nginx hot reload) or stopped (other targets: the containers target's reconfigure
    restarts all four containers for anything but an ingress change, and was not measured against the suite)."""

    def __init__(self, config: pytest.Config, target_name: str, size: int = VARIANT_CACHE) -> None:
        self._config = config
        self._target_name = target_name
        self._size = size
        self._up: OrderedDict[str, tuple[Any, RunningChain]] = OrderedDict()

    def __call__(self, topology: Topology) -> RunningChain:
        key = repr(topology)
        if key in self._up:
            self._up.move_to_end(key)
            return self._up[key][1]
        while len(self._up) >= self._size:
            _, (old, _) = self._up.popitem(last=False)
            if self._target_name == "local" and len(self._up) < self._size:
                return self._reuse(old, key, topology)
            old.__exit__(None, None, None)
        target = _open_target(self._config, self._target_name, topology)
        running = _enter(self._config, target)
        self._up[key] = (target, running)
        return running

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
            _, (target, _) = self._up.popitem()
            with contextlib.suppress(Exception):
                target.__exit__(None, None, None)


@pytest.fixture(scope="session")
def chain_for(request: pytest.FixtureRequest, mtls_target_name: str) -> Iterator[Callable[[Topology], RunningChain]]:
    """``chain_for(topology)`` → a running chain for a variant topology (started once, reused while recent)."""
    variants = VariantChains(request.config, mtls_target_name)
    try:
        yield variants
    finally:
        variants.close()
