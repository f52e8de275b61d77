"""Lanes (harness.targets.lanes): which variants share which process (what the renderers write for a lane is
checked with the real nginx and Envoy in tests/integration/test_lanes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from harness.cases.cross_domain import passthrough_to_the_pod
from harness.model.topology import default_topology
from harness.targets.base import lane_key
from harness.targets.lanes import HOME_INGRESS, plan_lanes

HOME = default_topology()
OPTIONAL = HOME.with_ingress_annotations(auth_tls_verify_client="optional")
TLS13 = HOME.with_controller(ssl_protocols="TLSv1.3")
TLS13_OPTIONAL = OPTIONAL.with_controller(ssl_protocols="TLSv1.3")
PASSTHROUGH = passthrough_to_the_pod(HOME)
PASSTHROUGH_TLS13 = passthrough_to_the_pod(HOME).with_hop("gateway", listener__min_version="1.3")


def _plan(*variants: Any) -> Any:
    return plan_lanes(HOME, list(variants), list(range(1000, 1000 + 4 * len(variants))),
                      {lane_key(v): object() for v in variants})  # type: ignore[misc]


def test_duplicates_and_the_chain_itself_are_no_lanes_and_each_lane_has_four_ports_of_its_own() -> None:
    plan = _plan(OPTIONAL, HOME, OPTIONAL, TLS13)
    assert [lane.topology for lane in plan.lanes] == [OPTIONAL, TLS13]
    assert [lane.ports for lane in plan.lanes] == [
        {"gateway": 1000, "apim": 1001, "ingress": 1002, "pod": 1003},
        {"gateway": 1004, "apim": 1005, "ingress": 1006, "pod": 1007}]


def test_only_controller_settings_need_an_nginx_of_their_own() -> None:
    plan = _plan(OPTIONAL, TLS13, TLS13_OPTIONAL, PASSTHROUGH, PASSTHROUGH_TLS13)
    where = {lane_key(lane.topology): lane.ingress for lane in plan.lanes}
    assert where[lane_key(OPTIONAL)] == HOME_INGRESS  # annotations are server blocks: the chain's own nginx
    assert where[lane_key(TLS13)] == where[lane_key(TLS13_OPTIONAL)] != HOME_INGRESS  # same ConfigMap: one process
    assert "ssl-protocols=TLSv1.3" in plan.ingress_processes[where[lane_key(TLS13)]]
    # the passthrough lanes share the controller flag: one process, each lane its own SNI router there
    assert where[lane_key(PASSTHROUGH)] == where[lane_key(PASSTHROUGH_TLS13)] not in (HOME_INGRESS,
                                                                                       where[lane_key(TLS13)])
    assert "--enable-ssl-passthrough=true" in plan.ingress_processes[where[lane_key(PASSTHROUGH)]]
    assert len(plan.ingress_processes) == 2


def test_a_lane_has_listeners_only_where_it_differs_and_in_front_of_that() -> None:
    home_ports = {"gateway": 1, "apim": 2, "ingress": 3, "pod": 4}
    gateway_only = HOME.with_hop("gateway", listener__min_version="1.3")
    pod_only = HOME.with_hop("pod", listener__client_auth="required")
    plan = plan_lanes(HOME, [gateway_only, OPTIONAL, pod_only], list(range(1000, 1012)),
                      {lane_key(v): object() for v in (gateway_only, OPTIONAL, pod_only)},  # type: ignore[misc]
                      home_ports=home_ports)
    own = {lane_key(lane.topology): (lane.own, lane.ports) for lane in plan.lanes}
    assert own[lane_key(gateway_only)] == (frozenset({"gateway"}),
                                           {"gateway": 1000, "apim": 2, "ingress": 3, "pod": 4})
    assert own[lane_key(OPTIONAL)][0] == frozenset({"gateway", "apim", "ingress"})
    assert own[lane_key(OPTIONAL)][1]["pod"] == 4
    assert own[lane_key(pod_only)][0] == frozenset({"gateway", "apim", "ingress", "pod"})


def test_the_reports_layout_names_each_process_of_its_own_and_why() -> None:
    from harness.report.results import document, layout_lines

    plan = _plan(OPTIONAL, TLS13, PASSTHROUGH, PASSTHROUGH_TLS13)
    plan.dropped["x"] = "its cert set could not be issued: no CA 'nope'"
    doc = document([], target="local", layout=plan.summary())
    assert doc["layout"]["lanes"] == 4
    lines = layout_lines(doc["layout"])
    assert lines[0].startswith("variants: 4 served as lanes of the chain's own processes")
    assert any(line.strip().startswith("1 nginx of their own") and "--enable-ssl-passthrough=true" in line
               for line in lines)
    assert any(line.strip().startswith("1 nginx of their own") and "ssl-protocols=TLSv1.3" in line for line in lines)
    assert lines[-1].strip() == ("1 variant(s) ran as chains of their own: its cert set could not be issued: "
                                 "no CA 'nope'")
    assert "layout" not in document([], target="local")  # no lanes asked for: nothing said
    from harness.report.html import render_html

    page = render_html(doc)
    assert "variants: 4 served as lanes of the chain" in page
    assert "--enable-ssl-passthrough=true" in page


def test_a_lane_has_no_listener_in_front_of_the_hops_its_cases_connect_to() -> None:
    from harness.targets.lanes import in_front

    assert in_front(frozenset({"ingress"})) == frozenset({"gateway", "apim"})
    assert in_front(frozenset({"ingress", "apim"})) == frozenset({"gateway"})
    assert in_front(frozenset({"gateway", "pod"})) == frozenset()
    assert in_front(None) == in_front(frozenset()) == frozenset()
    home_ports = {"gateway": 1, "apim": 2, "ingress": 3, "pod": 4}
    pod_only = HOME.with_hop("pod", listener__client_auth="required")
    variants = [OPTIONAL, pod_only, TLS13]
    entries = {lane_key(OPTIONAL): frozenset({"ingress"}), lane_key(pod_only): frozenset({"apim", "pod"})}
    plan = plan_lanes(HOME, variants, list(range(1000, 1012)), {lane_key(v): object() for v in variants},  # type: ignore[misc]
                      home_ports=home_ports, entries=entries)
    by = {lane_key(lane.topology): lane for lane in plan.lanes}
    assert (by[lane_key(OPTIONAL)].own, by[lane_key(OPTIONAL)].front) == (frozenset({"ingress"}),
                                                                            frozenset({"gateway", "apim"}))
    assert by[lane_key(pod_only)].own == frozenset({"apim", "ingress", "pod"})
    assert by[lane_key(pod_only)].front == frozenset({"gateway"})
    # a variant none of whose cases were named keeps every listener in front of its difference
    assert by[lane_key(TLS13)].own == frozenset({"gateway", "apim", "ingress"})
    assert not by[lane_key(TLS13)].front
    # without the chain's own ports nothing is trimmed (the containers target's lanes)
    plan = plan_lanes(HOME, variants, list(range(1000, 1012)), {lane_key(v): object() for v in variants},  # type: ignore[misc]
                      entries=entries)
    assert all(lane.own == frozenset(("gateway", "apim", "ingress", "pod")) for lane in plan.lanes)
    assert not any(lane.front for lane in plan.lanes)


def test_a_probe_of_a_hop_a_lane_was_laid_out_without_fails_and_does_not_skip() -> None:
    from harness.errors import HarnessError, Unavailable
    from harness.targets.base import LaneHopNotServed, RunningChain

    chain = RunningChain(target="local", topology=HOME, certs=object(), endpoints={},  # type: ignore[arg-type]
                         unserved={"gateway": "lane 3 has no listener on this hop"})
    with pytest.raises(LaneHopNotServed, match="lane 3") as raised:
        chain.endpoint("gateway")
    # a HarnessError fails the test; an Unavailable would have skipped it
    assert isinstance(raised.value, HarnessError)
    assert not isinstance(raised.value, Unavailable)
