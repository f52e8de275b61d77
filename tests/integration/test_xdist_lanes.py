"""``-n N --dist loadgroup`` (what ``mtls-harness run -n N`` passes): each xdist worker runs whole lanes and starts
its chain with only its own cases' lanes (harness.xdist_lanes.LaneScheduling, worker_groups), on real pytest-xdist,
nginx and Envoy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "harness" / "suite" / "test_handshakes.py"
#: ~40 cases on ~30 variants: cert faults at three hops, and cases on the chain itself
SUBSET = "refuses_pod_cert or gateway_refuses_apim_cert or apim_refuses_ingress_cert or accepts_apims_client_cert"

#: written into each worker: what its chain served and what its cases needed
RECORDER = '''
import json, os
from harness.targets.base import lane_key
seen = {"lanes": None, "own_chains": 0, "cases": 0}
def pytest_runtest_teardown(item, nextitem):
    chain = item.funcargs.get("mtls_chain")
    variants = item.funcargs.get("mtls_chain_for")
    if chain is None or variants is None:
        return
    seen["lanes"] = sorted(chain.lanes)
    seen["own_chains"] = max(seen["own_chains"], len(variants._up))
    seen["cases"] += 1
def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    out = os.environ["MTLS_TEST_RECORD"]
    with open(os.path.join(out, worker + ".json"), "w") as fh:
        json.dump({k: sorted(v) if isinstance(v, set) else v for k, v in seen.items()}, fh)
'''


def _run(tmp_path: Path, *dist: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    (tmp_path / "plug").mkdir()
    (tmp_path / "plug" / "lane_recorder.py").write_text(RECORDER)
    record = tmp_path / "record"
    record.mkdir()
    # not this session's own xdist worker's variables (a run under `pytest -n` passes them on)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    env |= {"PYTHONPATH": str(tmp_path / "plug"), "MTLS_TEST_RECORD": str(record)}
    out = subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:randomly", "-p",
                          "no:cacheprovider", "-p", "lane_recorder", "-n", "2", *dist, "-k", SUBSET],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=600, check=False,
                         stdin=subprocess.DEVNULL)
    return out, {p.stem: json.loads(p.read_text()) for p in record.glob("gw*.json")}


@pytest.mark.mtls_needs_chain
def test_each_worker_serves_only_its_own_lanes_and_every_case_finds_its_lane(tmp_path: Path) -> None:
    out, workers = _run(tmp_path, "--dist", "loadgroup")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert set(workers) == {"gw0", "gw1"}, out.stdout[-2000:]
    lanes = {w: set(r["lanes"]) for w, r in workers.items()}
    assert lanes["gw0"], lanes
    assert lanes["gw1"], lanes
    assert not lanes["gw0"] & lanes["gw1"], "a lane was started by both workers"
    # no case had to start a variant chain of its own: its lane was in its worker's chain
    assert [r["own_chains"] for r in workers.values()] == [0, 0], workers
    assert sum(r["cases"] for r in workers.values()) >= 30


@pytest.mark.mtls_needs_chain
def test_without_loadgroup_every_worker_serves_every_lane(tmp_path: Path) -> None:
    out, workers = _run(tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert set(workers) == {"gw0", "gw1"}
    assert workers["gw0"]["lanes"] == workers["gw1"]["lanes"] != []


def _lane(case: Any, topology: Any) -> str | None:
    from harness.cases.model import variant_of
    from harness.targets.base import lane_key

    variant = variant_of(case, topology)
    return lane_key(variant) if variant is not None else None


def test_the_controller_tells_each_test_s_case_by_its_name_as_the_workers_collect_it(tmp_path: Path) -> None:
    """The xdist controller collects nothing: it finds a test's case from its node id's name
    (harness.xdist_lanes.cases_by_test_name). Every e2e test a session collects maps to the case it runs — for the
    reference chain and for a chain file whose catalogue has cases of its own (test_generated_case)."""
    import harness.pytest_plugin as plugin
    import harness.xdist_lanes as split
    from harness.report.collect import case_of, generated_for_chain

    init = subprocess.run([sys.executable, "-m", "harness", "init", str(tmp_path / "p"), "--example",
                           "partner-mtls"], capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert init.returncode == 0, init.stderr
    checked: dict[str, tuple[int, int]] = {}

    class Check:
        def __init__(self, label: str) -> None:
            self.label = label

        def pytest_collection_finish(self, session: pytest.Session) -> None:
            by_name = split.cases_by_test_name(session.config)
            topology = plugin._session_topology(session.config)
            e2e = [i for i in session.items if i.get_closest_marker("mtls_e2e") and generated_for_chain(i)]
            for item in e2e:
                mine, theirs = by_name[item.nodeid.rpartition("::")[2]], case_of(item)
                assert theirs is not None, item.nodeid
                assert mine.id == theirs.id, item.nodeid
                assert _lane(mine, topology) == _lane(theirs, topology), item.nodeid
            generated = sum(1 for i in e2e if i.nodeid.rpartition("::")[2].startswith("test_generated_case["))
            checked[self.label] = (len(e2e), generated)

    for label, extra in (("reference", []), ("partner", ["--mtls-chain", str(tmp_path / "p" / "chain.yaml")])):
        code = pytest.main([str(SUITE), "--collect-only", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                            *extra], plugins=[Check(label)])
        assert code == 0, label
    assert checked["reference"][0] >= 200, checked
    assert checked["reference"][1] == 0, checked
    assert checked["partner"][1] > 0, checked  # the partner's own trust domain: cases the reference lacks
