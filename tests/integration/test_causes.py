"""Causes on the real chain: a rejection for ANOTHER cause, or by another hop, fails its case; cross-domain cases catch
an over-broad trust bundle. The process-starting half of tests/unit/test_causes.py."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.cross_domain import serve_leaf
from harness.cases.model import Case, CaseResult, run_case
from harness.model.topology import Topology, default_topology
from harness.targets.local import LocalTarget

pytestmark = pytest.mark.mtls_needs_chain

BY_ID = {c.id: c for c in CATALOGUE}


@pytest.fixture(scope="module")
def local() -> Iterator[LocalTarget]:
    t = LocalTarget(default_topology())
    with t:
        yield t


def _run(case: Case, t: LocalTarget) -> CaseResult:
    """Run ``case`` as the suite does: its variant applied to the reference chain."""
    base = t.reconfigure(default_topology())
    return run_case(case, base, t.reconfigure)


def _pod_serves(fault: str) -> Callable[[Topology], Topology]:
    def variant(topo: Topology) -> Topology:
        return topo.with_hop("pod", listener__server_cert=f"{topo.pod.listener.server_cert}~{fault}")

    return variant


def test_the_expired_pod_cert_case_passes_for_its_own_cause(local: LocalTarget) -> None:
    result = _run(BY_ID["ingress-refuses-pod-cert-expired"], local)
    assert result.passed, result.message
    assert (result.seen.outcome.hop, result.seen.outcome.cause) == ("ingress", "expired")


def test_a_502_for_another_certificate_fault_fails_the_case_naming_both_causes(local: LocalTarget) -> None:
    # the same 502 from the same hop, but nginx refused the pod's cert for its NAME, not its dates
    case = dataclasses.replace(BY_ID["ingress-refuses-pod-cert-expired"], variant=_pod_serves("wrong-san"))
    result = _run(case, local)
    assert not result.passed
    assert result.seen.outcome.status == 502
    assert "expected by ingress for expired, seen by ingress for name-mismatch" in result.message
    assert "upstream SSL certificate does not match" in result.message  # the ingress's own log line, quoted


def test_a_502_because_the_pod_is_down_fails_the_case() -> None:
    case = BY_ID["ingress-refuses-pod-cert-expired"]
    assert case.variant is not None
    target = LocalTarget(case.variant(default_topology()))
    with target as chain:  # its own chain: this test stops its pod
        pid = target.pid("pod")
        os.kill(pid, signal.SIGTERM)  # the pod this test's target started, by its PID
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        assert not _alive(pid)
        result = run_case(dataclasses.replace(case, variant=None), chain, lambda topo: chain)
    assert not result.passed
    assert result.seen.outcome.status == 502
    assert "expected by ingress for expired, seen by ingress for connection-refused" in result.message
    assert "Connection refused" in result.message


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_ingress_trusting_every_ca_of_the_set_is_a_finding_of_the_cross_domain_cases(local: LocalTarget) -> None:
    cases = [c for c in CATALOGUE if c.id.startswith("ingress-refuses-client-cert-from-")]
    assert len(cases) >= 2
    every_ca = tuple(ca.name for ca in default_topology().pki.cas)

    def over_broad(topo: Topology) -> Topology:
        secrets = tuple(dataclasses.replace(s, ca=every_ca) if s.name == "apim-client-ca" else s
                        for s in topo.ingress.secrets)
        return topo.replace(ingress=dataclasses.replace(topo.ingress, secrets=secrets))

    for case in cases:
        assert _run(case, local).passed  # the correct ingress refuses
        broken = _run(dataclasses.replace(case, variant=over_broad), local)
        # the chain's own configuration lets the foreign cert in: not a pass, a FINDING (docs/findings.md)
        assert broken.verdict == "finding", broken.message
        assert broken.finding is not None
        assert broken.finding.id == "ingress-trusts-only-its-callers-ca@ingress"
        assert broken.seen.outcome.kind == "ok", broken.message  # the foreign cert got through


def test_a_hop_serving_a_cert_of_another_domain_is_refused_by_its_caller_for_the_issuer(local: LocalTarget) -> None:
    case = BY_ID["ingress-refuses-pod-cert-from-apim-ca"]
    result = _run(case, local)
    assert result.passed, result.message
    # the same foreign cert, with the ingress's proxy-ssl CA bundle trusting apim-ca too: no refusal at all

    def trusts_apim_ca(topo: Topology) -> Topology:
        proxy = topo.ingress.primary.annotation("proxy-ssl-secret") or ""
        name = proxy.split("/")[-1]
        secrets = tuple(dataclasses.replace(s, ca=(*s.ca, "apim-ca")) if s.name == name else s
                        for s in topo.ingress.secrets)
        return serve_leaf("pod", "apim-server")(topo.replace(ingress=dataclasses.replace(topo.ingress,
                                                                                      secrets=secrets)))

    broken = _run(dataclasses.replace(case, variant=trusts_apim_ca), local)
    assert not broken.passed, broken.message
