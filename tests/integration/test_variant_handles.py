"""``mtls_chain_for``'s variant chains (harness.pytest_plugin.VariantChains) on the real local chain: a handle to a
variant that has since been evicted — its processes reconfigured into another variant — refuses to probe, instead of
probing a chain that no longer matches the topology it carries (issue 15: before, it answered as the NEW variant)."""

from __future__ import annotations

import pytest

from harness.model.topology import default_topology
from harness.pytest_plugin import VariantChains
from harness.targets.base import EvictedChainError

pytestmark = pytest.mark.mtls_needs_chain


def test_an_evicted_variant_handle_refuses_to_probe(request: pytest.FixtureRequest) -> None:
    base = default_topology()
    strict = base.with_ingress_annotations(auth_tls_match_cn="CN=partner")
    optional = base.with_ingress_annotations(auth_tls_verify_client="optional")
    variants = VariantChains(request.config, "local", size=1)
    try:
        first = variants(strict)
        refused = first.probe("ingress")
        assert refused.status == 403, refused.describe()  # the strict variant: apim's CN is not the partner's
        assert b"client certificate unauthorized" in refused.body, refused.describe()
        second = variants(optional)  # the only slot: the strict chain is reconfigured into this one
        assert second is not first
        with pytest.raises(EvictedChainError, match=r"mtls_chain_for has since reconfigured into another variant"):
            first.probe("ingress")
        admitted = second.probe("ingress", client_cert=None, client_key=None)  # optional: no cert is let in
        assert admitted.status == 200, admitted.describe()
        again = variants(strict)  # asking again gives a live handle (the optional one is retired now)
        assert again.probe("ingress").status == 403
        with pytest.raises(EvictedChainError):
            second.probe("ingress")
    finally:
        variants.close()
