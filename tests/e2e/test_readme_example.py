"""The pytest example in README.md, run as written (the test below checks the README still shows this code)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.e2e
def test_my_ingress_rejects_a_partner_cert(chain, chain_for):  # type: ignore[no-untyped-def]
    # chain: the running chain on --target; chain_for(topology): a variant, started once and reused
    variant = chain_for(chain.topology.with_ingress_annotations(auth_tls_verify_depth="2"))
    if "ingress" not in variant.endpoints:  # containers, azure: only the gateway is reachable from here
        pytest.skip(f"the ingress is private on the {variant.target} target")
    partner = variant.certs.fault("unknown-ca", like="apim-client")
    seen = variant.probe("ingress", client_cert=partner.chain, client_key=partner.key)
    assert seen.outcome.kind == "http_reject" and seen.status == 400, seen.describe()  # noqa: PT018


def test_the_readme_shows_the_example_as_it_runs() -> None:
    source = inspect.getsource(test_my_ingress_rejects_a_partner_cert)
    body = [line.strip() for line in source.splitlines()[2:] if line.strip()]
    readme = [line.strip() for line in README.read_text().splitlines()]
    for line in body:
        line = line.split("  # noqa")[0]  # noqa: PLW2901
        assert line in readme, line
