"""Fixtures shared by the tests of the harness itself (tests/unit, tests/integration)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.model.topology import default_pki_plan
from harness.pki.certset import CertSet, generate_cert_set, load_cert_set


# --- PKI (tests/*/test_pki*.py, test_certcheck.py, test_certs_cli.py) -------------------------------------------
@pytest.fixture(scope="session")
def pki_set(tmp_path_factory: pytest.TempPathFactory) -> CertSet:
    """A default ECDSA cert set generated once per session into a private temp dir (not the shared cache)."""
    return generate_cert_set(default_pki_plan("ecdsa"), tmp_path_factory.mktemp("pki") / "set")


@pytest.fixture
def pki_set_copy(pki_set: CertSet, tmp_path: Path) -> CertSet:
    """A throw-away copy of :func:`pki_set` that a test may damage (swap a leaf for a fault, delete files)."""
    target = tmp_path / "set"
    shutil.copytree(pki_set.directory, target, ignore=shutil.ignore_patterns("faults", "bundles"))
    return load_cert_set(target)
