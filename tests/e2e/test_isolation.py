"""Isolation and wire proof (``pytest tests/e2e --mtls-isolate``): the chain with each hop in its own namespace.

- from the internet namespace only the gateway answers; apim, the ingress and the pod are unreachable — the probe's
  ``unreachable`` outcome, no TLS at all — while their real callers reach them and complete a TLS handshake;
- every probe runs inside a namespace with no default route (never in the host's);
- while the catalogue's happy-path cases run, every link carries TLS and nothing else; a plaintext ingress→pod hop
  fails that proof, naming the link.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Skip, run_case
from harness.isolation.capture import WireProofError, summarize
from harness.model.topology import Topology
from harness.targets.base import RunningChain
from harness.targets.isolated import IsolatedChain, IsolatedTarget, plaintext_backend

pytestmark = [pytest.mark.mtls_e2e, pytest.mark.mtls_needs_root]

#: the happy path: cases that expect success and need no variant of the chain
HAPPY = [c for c in CATALOGUE if c.expect.kind == "ok" and c.variant is None]


@pytest.fixture(autouse=True)
def _only_with_isolate(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--mtls-isolate"):
        pytest.skip("runs only with --mtls-isolate (each hop in its own network namespace)")


@pytest.fixture
def isolated(mtls_chain: RunningChain) -> IsolatedChain:
    assert isinstance(mtls_chain, IsolatedChain), f"--mtls-isolate is on but the chain is {type(mtls_chain).__name__}"
    return mtls_chain


def _no_variants(topology: Topology) -> RunningChain:
    raise AssertionError("a happy-path case asked for a variant chain")


# ------------------------------------------------------------------------------------------------------------------
# reachability
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hop", ["apim", "ingress", "pod"])
def test_inner_hop_is_unreachable_from_the_internet(isolated: IsolatedChain, hop: str) -> None:
    seen = isolated.probe(hop, vantage="internet", timeout=3.0)
    assert seen.outcome.kind == "unreachable", seen.describe()
    assert seen.phase == "connect", seen.describe()
    assert seen.tls_version is None, "a TLS session means the hop was reached"
    assert seen.peer_chain == (), "a certificate means the hop was reached"
    # the hop is up: its real caller reaches it and gets a TLS session — so the above is the network, not TLS
    from_caller = isolated.probe(hop)
    assert from_caller.tls_version is not None, from_caller.describe()
    assert from_caller.outcome.kind != "unreachable", from_caller.describe()


def test_the_gateway_is_reachable_from_the_internet_and_the_chain_works(isolated: IsolatedChain) -> None:
    seen = isolated.probe()
    assert seen.outcome.kind == "ok", seen.describe()
    assert seen.status == 200
    trace = seen.json()["trace"]
    assert [h for h in ("gateway", "apim", "ingress", "pod") if trace.get(h, {}).get("tls", "").startswith("TLSv1.")] \
        == ["gateway", "apim", "ingress", "pod"], trace
    hop, namespace, target = isolated.probe_log[-1]
    assert (hop, namespace) == ("gateway", isolated.namespaces["internet"])
    assert target.startswith("192.0.2.2:")


def test_probes_run_inside_namespaces_without_a_default_route(isolated: IsolatedChain) -> None:
    host = os.stat("/proc/self/ns/net").st_ino
    for role in ("internet", "gateway", "apim", "ingress"):
        pid = isolated.pids[f"runner-{role}"]
        runner_ns = os.stat(f"/proc/{pid}/ns/net").st_ino
        assert runner_ns == os.stat(f"/run/netns/{isolated.namespaces[role]}").st_ino, role
        assert runner_ns != host, f"the {role} runner is in the host namespace"
    for name in isolated.namespaces.values():
        routes = subprocess.run(["ip", "-n", name, "route", "show", "default"], capture_output=True, text=True,
                                timeout=20, check=True).stdout
        assert routes.strip() == "", f"{name} has a default route: {routes}"


def test_each_hop_process_runs_in_its_own_namespace(isolated: IsolatedChain) -> None:
    for hop in ("gateway", "apim", "ingress", "pod"):
        ino = os.stat(f"/proc/{isolated.pids[hop]}/ns/net").st_ino
        assert ino == os.stat(f"/run/netns/{isolated.namespaces[hop]}").st_ino, hop


# ------------------------------------------------------------------------------------------------------------------
# wire proof
# ------------------------------------------------------------------------------------------------------------------
def test_every_link_carries_only_tls_while_the_happy_path_runs(mtls_topology: Topology, tmp_path: Path,
                                                                record_property: Callable[[str, object], None]) -> None:
    assert len(HAPPY) >= 10
    target = IsolatedTarget(mtls_topology, capture=True, capture_dir=tmp_path / "captures")  # pcaps kept
    with target as chain:
        results, undeclared = [], []
        for case in HAPPY:
            try:
                results.append(run_case(case, chain, _no_variants))
            except Skip as skip:  # a case that does not apply to this chain's ingress kind, which says why
                if not skip.declared:
                    undeclared.append(f"{case.id}: {skip}")
        assert undeclared == []
        assert len(results) >= 10
        failed = [r.message for r in results if not r.passed]
        assert failed == [], "\n".join(failed)
        proof = target.wire_proof()
    summary = summarize(proof)
    record_property("mtls_wire_proof", json.dumps(summary))
    proof.assert_clean()
    assert [x["link"] for x in summary["links"]] == ["internet→gateway", "gateway→apim", "apim→ingress",
                                                      "ingress→pod"]
    for link in summary["links"]:
        assert link["tls_streams"] >= 1, link
        assert link["plaintext_found"] == "none", link
        assert link["tls_versions"], link
        assert link["records"].get("application_data", 0) >= 2, link
        assert link["dropped_by_kernel"] == 0, link


def test_a_plaintext_backend_fails_the_wire_proof_naming_the_ingress_pod_link(mtls_topology: Topology,
                                                                              tmp_path: Path) -> None:
    target = IsolatedTarget(plaintext_backend(mtls_topology), capture=True, capture_dir=tmp_path / "captures")
    with target as chain:
        seen = chain.probe()
        assert seen.outcome.kind == "ok", seen.describe()  # the request works: only the wire shows the leak
        proof = target.wire_proof()
    assert [lk.link for lk in proof.failing] == ["ingress→pod"]
    with pytest.raises(WireProofError, match="ingress→pod") as exc:
        proof.assert_clean()
    print(exc.value)
    assert "GET / HTTP/1.1" in str(exc.value)
    assert summarize(proof)["failing_links"] == ["ingress→pod"]
