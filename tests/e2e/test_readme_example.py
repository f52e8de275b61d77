"""The pytest example in README.md, run as written (the test below checks the README still shows this code), and
proof that the example can fail: run without its variant — the unchanged chain handed back as if it were the
variant, the trap ``mtls_chain_for`` used to set on read-only targets — it must fail."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.mtls_e2e
def test_my_ingress_admits_only_the_partner_cn(mtls_chain, mtls_chain_for):  # type: ignore[no-untyped-def]
    # mtls_chain: the running chain on --mtls-target; mtls_chain_for(topology): a variant — the lane that serves it
    # when a collected case needs it (local, containers), else a chain of its own, started once and reused
    variant = mtls_chain_for(mtls_chain.topology.with_ingress_annotations(auth_tls_match_cn="CN=partner"))
    seen = variant.probe("ingress")  # as apim, the ingress's real caller: a valid cert, but not the partner's CN
    assert seen.status == 403, seen.describe()
    assert b"client certificate unauthorized" in seen.body, seen.describe()  # the ingress's own answer


@pytest.mark.mtls_e2e
def test_the_readme_example_fails_without_its_variant(mtls_chain, mtls_chain_for):  # type: ignore[no-untyped-def]
    # the unchanged chain in place of the variant: apim's valid cert is admitted (200), so the example must fail
    with pytest.raises(AssertionError, match=r"ok\(200\)"):
        test_my_ingress_admits_only_the_partner_cn(mtls_chain, lambda topology: mtls_chain)


def test_the_readme_shows_the_example_as_it_runs() -> None:
    source = inspect.getsource(test_my_ingress_admits_only_the_partner_cn)
    body = [line.strip() for line in source.splitlines()[2:] if line.strip()]
    readme = [line.strip() for line in README.read_text().splitlines()]
    for line in body:
        assert line in readme, line
