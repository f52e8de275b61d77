"""The handshake suite: one test per catalogue case (harness/cases/catalogue.py), on whichever --mtls-target is
selected.

Each test is named after the behaviour it checks and parametrized by the target, e.g.
``test_ingress_rejects_client_cert_unknown_ca_tls1_2[local]``; the same ids run on every target. On a chain file's
chain each runs the case as generated for that chain (its identities and trust domains,
:func:`harness.cases.catalogue.catalogue_for`); a case the reference catalogue does not have runs as
``test_generated_case[<target>-<case id with _>]`` (a case of another ingress host ends ``@<host>``). A case the target
cannot run skips with the target's reason — *by design* when the target declared the limit
(:class:`harness.targets.base.ChainLimits`), otherwise it fails under ``--mtls-require-tools``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Case, Skip, run_case
from harness.model.topology import Topology
from harness.report.collect import CASE_ATTR, case_of, generated_for_chain, remember_result, skip_case
from harness.targets.base import RunningChain


def _run(case: Case, chain: RunningChain, chain_for: Callable[[Topology], RunningChain],
         request: pytest.FixtureRequest) -> None:
    try:
        result = run_case(case, chain, chain_for)
    except Skip as why:
        skip_case(request.node, why.reason, declared=why.declared)
    remember_result(request.node, result)  # for the report (harness.report.collect)
    assert result.passed, result.message


def _make(case: Case) -> Callable[..., None]:
    @pytest.mark.mtls_e2e
    def test(mtls_target: str, mtls_chain: RunningChain, mtls_chain_for: Callable[[Topology], RunningChain],
             request: pytest.FixtureRequest) -> None:
        chain_case = case_of(request.node)  # the case as generated for the chain the session runs (its names)
        if chain_case is case and not generated_for_chain(request.node):
            skip_case(request.node, "not generated for this chain: the catalogue generated from it has no such case "
                      "(a trust domain or verifier it does not have)", declared=True)
        _run(chain_case or case, mtls_chain, mtls_chain_for, request)

    test.__doc__ = f"{case.hop}: {case.column} → {case.expect} ({case.source})"
    setattr(test, CASE_ATTR, case)
    return test


def case_test_name(case: Case) -> str:
    return "test_" + case.id.replace("-", "_").replace(".", "_")


for _case in CATALOGUE:
    globals()[case_test_name(_case)] = _make(_case)


@pytest.mark.mtls_e2e
def test_generated_case(mtls_generated_case: Case, mtls_target: str, mtls_chain: RunningChain,
                        mtls_chain_for: Callable[[Topology], RunningChain], request: pytest.FixtureRequest) -> None:
    """A case generated for the chain that the reference catalogue does not have (a trust domain of YOUR plan:
    ``ingress-refuses-client-cert-from-<your CA>``); parametrized by harness.pytest_plugin."""
    _run(mtls_generated_case, mtls_chain, mtls_chain_for, request)
