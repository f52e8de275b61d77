"""The auto-loaded plugin claims only mtls-prefixed names: installed into someone's venv, it must not collide with a
project that has its own ``--target`` option, ``chain`` fixture and ``needs_root`` marker (issue 16)."""

from __future__ import annotations

import weakref

import pytest

import harness.runtime.process as process_registry

PROJECT_CONFTEST = '''
import pytest

def pytest_addoption(parser):
    parser.addoption("--target", default="staging", help="the project's own deployment target")
    parser.addoption("--isolate", action="store_true", help="the project's own flag")

def pytest_configure(config):
    config.addinivalue_line("markers", "needs_root: the project's own marker (it does NOT mean skip)")

@pytest.fixture
def chain():
    return ["the", "project's", "own", "chain"]

@pytest.fixture
def cert_set():
    return {"project": "certs"}
'''

PROJECT_TESTS = '''
import pytest

def test_own_option(request):
    assert request.config.getoption("--target") == "prod"

@pytest.mark.needs_root
def test_own_chain_fixture_and_marker(chain, cert_set):
    assert chain == ["the", "project's", "own", "chain"]
    assert cert_set == {"project": "certs"}

def test_the_plugin_is_loaded_next_to_it(request):
    assert request.config.pluginmanager.has_plugin("mtls_harness"), "the plugin did not load"
    assert request.config.getoption("--mtls-target") == "local"
    assert request.config.getoption("--mtls-isolate") is False
'''


@pytest.fixture(autouse=True)
def own_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_registry, "_LIVE", weakref.WeakSet())


def test_a_project_with_its_own_target_option_and_chain_fixture_runs_next_to_the_plugin(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MTLS_HARNESS_TARGET", raising=False)
    pytester.makeconftest(PROJECT_CONFTEST)
    pytester.makepyfile(test_project=PROJECT_TESTS)
    # the plugin comes in through its pytest11 entry point, as in any venv it is installed in
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly", "--strict-markers", "--target", "prod")
    result.assert_outcomes(passed=3)


def test_the_plugins_own_names_are_all_prefixed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    config = pytester.parseconfigure()
    group = config._parser.getgroup("mtls-harness")  # the plugin's option group
    names = [name for opt in group.options for name in opt.names()]
    assert names, "the plugin registered no options"
    assert all(name.startswith("--mtls-") for name in names), names
    markers = [line.split(":")[0] for line in config.getini("markers")]
    ours = [m for m in markers if m.startswith("mtls_") or m in ("e2e", "needs_root", "needs_chain", "needs_docker")]
    assert ours, "the plugin registered no markers"
    assert all(m.startswith("mtls_") for m in ours), ours
    fixtures = config.pluginmanager.get_plugin("mtls_harness")
    declared = [n for n in dir(fixtures) if hasattr(getattr(fixtures, n), "_pytestfixturefunction")
                or type(getattr(fixtures, n)).__name__ == "FixtureFunctionDefinition"]
    assert declared, "no fixture found in the plugin"
    assert all(n.startswith("mtls_") for n in declared), declared
