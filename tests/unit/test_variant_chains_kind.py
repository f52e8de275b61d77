"""On kind a variant that is not a lane of the session's chain skips, declared, with the reason: a second KindTarget
would find the session's cluster and refuse it, and reconfiguring the session's own would take its lanes down
(harness.pytest_plugin.VariantChains). No cluster is needed to see it: nothing is started."""

from __future__ import annotations

import pytest

from harness.model.topology import default_topology
from harness.pytest_plugin import KIND_NOT_A_LANE, VariantChains
from harness.targets.base import RunningChain, lane_key


def _chain(lanes: dict[str, RunningChain]) -> RunningChain:
    return RunningChain(target="kind", topology=default_topology(), certs=object(), endpoints={},  # type: ignore[arg-type]
                        lanes=lanes)


def test_a_variant_that_is_no_lane_of_the_kind_chain_skips_with_the_reason() -> None:
    served = default_topology().with_ingress_annotations(auth_tls_verify_client="optional")
    dropped = default_topology().with_controller(keep_alive="0")
    lane = _chain({})
    base = _chain({lane_key(served): lane})
    variants = VariantChains(None, "kind", base=base)  # type: ignore[arg-type]  # no target is opened
    assert variants(served) is lane
    assert variants(base.topology) is base
    with pytest.raises(pytest.skip.Exception, match="the kind target runs one cluster"):
        variants(dropped)
    assert "not a lane" in KIND_NOT_A_LANE
