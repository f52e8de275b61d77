"""Which pytest-xdist worker runs which case: whole lanes to one worker, so each worker's chain serves only its own
cases' variants (issue 21; harness.targets.lanes).

Under ``--dist loadgroup`` (what ``mtls-harness run -n N`` and the Makefile's suite runs pass) the handshake cases
are split into one group per worker (:func:`worker_groups`): every case of a variant in the same group, the groups'
costs even. Each worker works the split out from its own collection (the pytest plugin, ``pytest_collection_finish``)
and, at its first test, starts its chain with only its group's lanes. The controller collects nothing: it tells a
test's case by the test's name (:func:`cases_by_test_name`) and hands each group to one worker
(:class:`LaneScheduling`). A case a worker is sent from another group still runs, on a variant chain of its own.

xdist's own loadgroup reads a group from an ``@group`` its worker adds to the node id; pytest 9.2 no longer lets a
plugin change a node id, so that grouping is silently lost there (pytest-xdist#1386): the scheduler here does not
rely on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from harness.targets.base import lane_key

if TYPE_CHECKING:
    import pytest

    from harness.cases.model import Case
    from harness.model.topology import Topology

__all__ = ["GROUP_PREFIX", "LANE_COST", "LaneScheduling", "case_groups", "cases_by_test_name", "lanes_split",
           "param_id", "worker_groups"]

GROUP_PREFIX = "mtls-lanes-"
#: what a lane costs at the chain's start, in cases (measured: ~5 ms a lane, ~4 ms a case; BENCHMARKS.md)
LANE_COST = 1.5
#: the targets whose chains serve variants as lanes
LANE_TARGETS = ("local", "containers", "kind")


def param_id(case_id: str) -> str:
    """A generated case's test id: its id spelled as the catalogue's test names are (``-`` and ``.`` as ``_``), and
    its host, when it has one, as it is written (``ingress_accepts_tls1_3@reports.aks.contoso.example``)."""
    base, at, host = case_id.partition("@")
    return base.replace("-", "_").replace(".", "_") + at + host


def lanes_split(config: pytest.Config) -> int:
    """How many groups the session's cases are split into, one per xdist worker: the worker count under ``--dist
    loadgroup`` on a target that serves lanes, else 0 (every worker serves every lane, as a session without xdist
    does). In the controller and in each worker alike."""
    workerinput = getattr(config, "workerinput", None)  # set on a worker only (an env variable is inherited)
    if workerinput is not None:  # a worker: its own options say dist "no"; xdist keeps the choice as loadgroup
        count = int(workerinput.get("workercount", 0) or 0)
        grouped = bool(getattr(config.option, "loadgroup", False))
    else:
        count = int(getattr(config.option, "numprocesses", 0) or 0)
        grouped = config.getoption("dist", "no") == "loadgroup"
    if (count < 2 or not grouped or config.getoption("--mtls-no-lanes", False)
            or config.getoption("--mtls-target") not in LANE_TARGETS):
        return 0
    return count


def worker_groups(cases: Sequence[tuple[str, str | None]], workers: int) -> list[int]:
    """For each ``(case id, lane key or None)``, the worker group (0 … workers-1) it runs in: every case of a lane in
    the same group, so a worker starts only its groups' lanes; the groups' costs (a case 1, a lane :data:`LANE_COST`
    more) as even as a greedy split makes them. The same whatever order the cases come in: every worker computes it
    from its own collection, and xdist requires them all to collect the same node ids."""
    lanes: dict[str, list[int]] = {}
    home: list[int] = []
    for n, (_, lane) in enumerate(cases):
        (lanes.setdefault(lane, []) if lane is not None else home).append(n)
    load = [0.0] * workers
    out = [0] * len(cases)

    def place(members: list[int], cost: float) -> None:
        group = min(range(workers), key=lambda g: (load[g], g))
        load[group] += cost
        for n in members:
            out[n] = group

    for key in sorted(lanes, key=lambda k: (-(len(lanes[k]) + LANE_COST), k)):
        place(lanes[key], len(lanes[key]) + LANE_COST)
    for n in sorted(home, key=lambda n: cases[n][0]):
        place([n], 1.0)
    return out


def case_groups(cases: Sequence[tuple[str, Case]], workers: int, topology: Topology) -> dict[str, str]:
    """By test node id, the group of each ``(node id, case)`` on the chain ``topology``: :func:`worker_groups` over
    the cases' lanes (:func:`harness.cases.model.variant_of`)."""
    from harness.cases.model import variant_of

    keyed = []
    for _, case in cases:
        variant = variant_of(case, topology)
        keyed.append((case.id, lane_key(variant) if variant is not None else None))
    groups = worker_groups(keyed, workers)
    return {nodeid: f"{GROUP_PREFIX}{g}" for (nodeid, _), g in zip(cases, groups, strict=True)}


def cases_by_test_name(config: pytest.Config) -> dict[str, Case]:
    """The e2e case each test of the suite runs, by its name as a node id ends (``test_<case>[<target>]``,
    ``test_generated_case[<target>-<case>]``, as harness/suite/test_handshakes.py and the plugin name them): what
    the xdist controller, which collects nothing, knows of a test."""
    from harness.cases.catalogue import CATALOGUE
    from harness.report.collect import CHAIN_CASES

    target = config.getoption("--mtls-target")
    chain = config.stash[CHAIN_CASES]()
    out: dict[str, Case] = {}
    for case in CATALOGUE:
        if case.id in chain:  # a case the chain's catalogue lacks skips: it needs no lane
            out[f"test_{case.id.replace('-', '_').replace('.', '_')}[{target}]"] = chain[case.id]
    reference = {c.id for c in CATALOGUE}
    for case in chain.values():
        if case.id not in reference:
            out[f"test_generated_case[{target}-{param_id(case.id)}]"] = case
    return out


LaneScheduling: Any = None
try:
    from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - xdist is a dependency
    pass
else:
    class _LaneScheduling(LoadGroupScheduling):  # type: ignore[misc]
        """xdist's loadgroup, with the suite's cases in one group per worker, whole lanes together
        (:func:`worker_groups`): the first ``N`` work units are those groups, so each worker gets one and starts only
        its lanes. A case's group is told by its test's name; any other test keeps loadgroup's own scope.
        ``topology()``: the chain the session runs."""

        def __init__(self, config: pytest.Config, log: Any, *, topology: Callable[[], Topology]) -> None:
            super().__init__(config, log)
            self._topology = topology
            self._lane_groups: dict[str, str] = {}

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                ids: list[str] = next(iter(self.registered_collections.values()), [])
                by_name = cases_by_test_name(self.config)
                cases = [(n, by_name[n.rpartition("::")[2]]) for n in ids if n.rpartition("::")[2] in by_name]
                self._lane_groups = case_groups(cases, lanes_split(self.config), self._topology())
            super().schedule()

        def _split_scope(self, nodeid: str) -> str:
            group = self._lane_groups.get(nodeid)
            return group if group is not None else str(super()._split_scope(nodeid))

    LaneScheduling = _LaneScheduling
