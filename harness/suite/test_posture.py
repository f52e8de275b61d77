"""Posture checks against the real Azure chain: one test per check (harness/targets/azure/posture.py).

Runs only with ``--mtls-target azure`` (marker ``mtls_needs_azure``) and the azure config in
``MTLS_HARNESS_AZURE_CONFIG``; discovery is read-only (GET only; see docs/azure.md). A check whose component the
config does not name skips.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

try:
    from harness.targets.azure import CHECKS, Check, Discovery, discover, evaluate, expiry_table, load_azure_config
except ImportError as exc:  # the azure extra is not installed (a plain `pip install mtls-harness`)
    pytest.skip(f"the posture checks need the azure extra ({exc.name}): pip install 'mtls-harness[azure]'",
                allow_module_level=True)

pytestmark = pytest.mark.mtls_needs_azure


@pytest.fixture(scope="session")
def azure_discovery(record_testsuite_property: Callable[[str, object], None]) -> Discovery:
    path = os.environ.get("MTLS_HARNESS_AZURE_CONFIG")
    if not path:
        raise pytest.UsageError("--mtls-target azure needs MTLS_HARNESS_AZURE_CONFIG=azure.toml (see docs/azure.md); "
                                "mtls-harness run takes --config")
    config = load_azure_config(Path(path))
    disc = discover(config)
    record_testsuite_property("azure_discovery_at", disc.discovered_at)
    return disc


@pytest.fixture(scope="session")
def expiry_days() -> int:
    return load_azure_config(Path(os.environ["MTLS_HARNESS_AZURE_CONFIG"])).expiry_days


@pytest.mark.parametrize("check", CHECKS, ids=[c.id for c in CHECKS])
def test_posture(check: Check, azure_discovery: Discovery, expiry_days: int,
                 record_property: Callable[[str, object], None]) -> None:
    (verdict,) = evaluate(azure_discovery, expiry_days=expiry_days, checks=[check])
    record_property("posture_why", check.why)
    if check.id == "cert-expiry":
        record_property("expiry_table", expiry_table(azure_discovery))
    if verdict.status == "skip":
        pytest.skip(verdict.findings[0])
    assert verdict.status == "pass", verdict.line() + f"\n  why it matters: {check.why}"
