"""The handshake suite: one test per catalogue case (harness/cases/catalogue.py), on whichever --target is selected.

Each test is named after the behaviour it checks and parametrized by the target, e.g.
``test_ingress_rejects_client_cert_unknown_ca_tls1_2[local]``; the same ids run on every target.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Case, Skip, run_case
from harness.model.topology import Topology
from harness.report.collect import CASE_ATTR, remember_result
from harness.targets.base import RunningChain


def _make(case: Case) -> Callable[..., None]:
    @pytest.mark.e2e
    def test(mtls_target: str, chain: RunningChain, chain_for: Callable[[Topology], RunningChain],
             request: pytest.FixtureRequest) -> None:
        try:
            result = run_case(case, chain, chain_for)
        except Skip as why:
            pytest.skip(str(why))
        remember_result(request.node, result)  # for the report (harness.report.collect)
        assert result.passed, result.message

    test.__doc__ = f"{case.hop}: {case.column} → {case.expect} ({case.source})"
    setattr(test, CASE_ATTR, case)
    return test


def case_test_name(case: Case) -> str:
    return "test_" + case.id.replace("-", "_").replace(".", "_")


for _case in CATALOGUE:
    globals()[case_test_name(_case)] = _make(_case)
