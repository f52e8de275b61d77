"""The catalogue generated from the chain (harness.cases.catalogue.catalogue_for).

For the reference chain it is the hand-written catalogue as it stood before generation (issue 17): every case, field
by field, against tests/unit/data/reference_catalogue.json — a snapshot written from the catalogue BEFORE
catalogue_for existed (its variants compared by the model they produce on the reference chain). For another chain,
the cross-domain cases come from ITS trust domains and name its CAs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from harness.cases.catalogue import catalogue_for
from harness.cases.model import Case, needs_reference
from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.model.topology import default_topology

SNAPSHOT = Path(__file__).with_name("data") / "reference_catalogue.json"
REF = default_topology()


def _model_hash(t: Any) -> str:
    # IngressHop.focus, gateway_api and gateway_api_manifests, and Apim.apis/focus/home came after the snapshot; their
    # defaults (the home host, ingress-nginx, no other API) are the model the snapshot holds
    text = repr(t).replace(", apis=(), focus=None, home=None", "") \
        .replace(", gateway_api=None, gateway_api_manifests=None", "").replace(", focus=None", "")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _row(c: Case) -> dict[str, Any]:
    return {"id": c.id, "hop": c.hop, "group": c.group, "column": c.column, "expect": str(c.expect),
            "source": c.source, "via": c.via, "identity": c.identity,
            "probe": json.loads(json.dumps(c.probe, sort_keys=True, default=list)),
            "variant": getattr(c.variant, "__name__", None) if c.variant else None,
            "variant_model": _model_hash(c.variant(REF)) if c.variant else None,
            "endpoint": c.endpoint, "caller_trust": c.caller_trust,
            "check": getattr(c.check, "__name__", None) if c.check else None}


def test_the_reference_chains_generated_catalogue_is_todays_case_by_case() -> None:
    before = json.loads(SNAPSHOT.read_text())
    now = [_row(c) for c in catalogue_for(REF)]
    assert [r["id"] for r in now] == [r["id"] for r in before]
    for was, got in zip(before, now, strict=True):
        assert got == was, was["id"]


@pytest.fixture(scope="module")
def partner(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = tmp_path_factory.mktemp("chain") / "partner"
    assert main(["init", str(directory), "--example", "partner-mtls"]) == 0
    return load_chain(directory / "chain.yaml")


def test_another_chains_cross_domain_cases_name_its_own_trust_domains(partner: Any) -> None:
    t = partner.topology
    generated = {c.id: c for c in catalogue_for(t) if c.column == "another trust domain"}
    # the partner example's gateway is Strict with its partner CA: the gateway's cases are about THAT domain, and a
    # valid client leaf of every other domain of its plan is presented there
    gateway = sorted(i for i in generated if i.startswith("gateway-strict-refuses-client-cert-from-"))
    own = t.pki.root_of(t.gateway.listener.client_ca or "")
    assert gateway
    assert f"gateway-strict-refuses-client-cert-from-{own}" not in gateway
    for case_id in gateway:
        case = generated[case_id]
        assert case.identity is not None
        assert t.pki.root_of(t.pki.leaf(case.identity).issuer) == case_id.removeprefix(
            "gateway-strict-refuses-client-cert-from-")
    # and none of them needs a name of the reference chain
    assert [i for i, c in generated.items() if needs_reference(c, t)] == []


def test_a_foreign_client_cert_from_the_root_the_probe_trusts_is_refused_as_self_signed_in_chain() -> None:
    """The passthrough example's pod verifies apim-client-ca, and its own server cert is pod-ca's: the probe trusts
    pod-ca, so OpenSSL sends ingress-client (pod-ca) with pod-ca's root, and the pod's verify error is
    "self-signed certificate in certificate chain" (measured there), not a missing issuer."""
    t = REF.with_hop("pod", listener__client_auth="required", listener__client_ca="apim-client-ca")
    generated = {c.id: c for c in catalogue_for(t) if c.column == "another trust domain" and c.hop == "pod"}
    assert generated["pod-refuses-client-cert-from-pod-ca"].expect.cause == "self-signed-in-chain"
    assert generated["pod-refuses-client-cert-from-consumer-ca"].expect.cause == "unknown-issuer"
