"""The split of the catalogue between xdist workers (harness.xdist_lanes.worker_groups): whole lanes to one worker,
so each starts only its own cases' lanes; the same split whatever order the cases come in."""

from __future__ import annotations

import random

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import variant_of
from harness.model.topology import default_topology
from harness.targets.base import lane_key
from harness.xdist_lanes import LANE_COST, worker_groups


def _reference() -> list[tuple[str, str | None]]:
    home = default_topology()
    out = []
    for case in CATALOGUE:
        variant = variant_of(case, home)
        out.append((case.id, lane_key(variant) if variant is not None else None))
    return out


def test_every_case_of_a_lane_runs_in_one_group() -> None:
    cases = _reference()
    groups = worker_groups(cases, 2)
    where: dict[str, set[int]] = {}
    for (_, lane), group in zip(cases, groups, strict=True):
        if lane is not None:
            where.setdefault(lane, set()).add(group)
    assert len(where) > 40  # the reference catalogue's variants
    assert all(len(g) == 1 for g in where.values()), {k: v for k, v in where.items() if len(v) > 1}
    assert {g for s in where.values() for g in s} == {0, 1}


def test_the_groups_cost_about_the_same() -> None:
    cases = _reference()
    for workers in (2, 3, 4):
        groups = worker_groups(cases, workers)
        lanes = {}
        for (_, lane), group in zip(cases, groups, strict=True):
            if lane is not None:
                lanes[lane] = group
        cost = [groups.count(g) + LANE_COST * sum(1 for v in lanes.values() if v == g) for g in range(workers)]
        # greedy: no group costs more than the cheapest plus one unit (a lane's cases or a case)
        biggest_unit = max(sum(1 for _, lane in cases if lane == key) + LANE_COST for key in lanes)
        assert max(cost) - min(cost) <= biggest_unit, cost


def test_the_split_does_not_depend_on_the_order_of_the_cases() -> None:
    cases = _reference()
    split = dict(zip((c for c, _ in cases), worker_groups(cases, 2), strict=True))
    shuffled = list(cases)
    random.Random(7).shuffle(shuffled)
    assert dict(zip((c for c, _ in shuffled), worker_groups(shuffled, 2), strict=True)) == split


def test_home_cases_alone_are_dealt_out_evenly() -> None:
    cases = [(f"case-{n}", None) for n in range(9)]
    assert sorted(worker_groups(cases, 3).count(g) for g in range(3)) == [3, 3, 3]
    assert worker_groups([], 2) == []
