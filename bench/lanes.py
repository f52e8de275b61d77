"""Lanes: the whole catalogue on one running chain, every variant a lane of the same processes (issue 21).

For the reference chain and for a chain whose controller serves 20 ingress hosts (the reference example plus 19
hosts written by bench/hosts.py), in this process:

- the chain's start with all its lanes (every variant its catalogue needs), next to the start of the chain alone: the
  difference over the lanes is what one more variant costs at start;
- every case of the catalogue run once, serially (:func:`harness.cases.model.run_case`, as the suite runs it; a case
  on a variant probes its lane), against the floor: one chain start (the chain alone) + one probe per case, the
  probe's cost measured here on the same chain (a handshake and a GET through all four hops);
- the per-case and per-variant figures: the case time over the cases, and the lanes' start cost over the lanes;
- the memory of every hop process (the nginx workers included): the sum of their peak resident sets (VmHWM) after
  the catalogue ran, and the same for the chain alone;
- for the 20-host chain, what each host beyond the reference's one adds: (its catalogue wall + start − the
  reference's) / 19.

The case count differs between the chains (the catalogue repeats each host's cases on it), so the cost per added
host includes its cases.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Bench, Row, silent, time_row

REPO = Path(__file__).resolve().parents[1]
NAME = "lanes"
TITLE = "the catalogue on one running chain with every variant as a lane (in-process, serial)"
EXTRA_HOSTS = 19
#: probes through the chain to time one probe (the floor's unit)
PROBES = 30
#: runs of the reference chain's figures (each a chain alone, then the chain with its lanes and every case): the
#: figure is the median, each run against the floor measured in it
REFERENCE_RUNS = 3


def _tree_memory_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of VmRSS, sum of VmHWM) in KiB over ``pids`` and their children (nginx's workers)."""
    seen: set[int] = set()
    todo = list(pids)
    rss = hwm = 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        rss += int(fields.get("VmRSS", "0 kB").split()[0])
        hwm += int(fields.get("VmHWM", "0 kB").split()[0])
        todo += [int(c) for c in children]
    return rss, hwm


def _pids(target: Any) -> list[int]:
    return [p.pid for p in target._procs.values() if p.proc is not None]


def _measure(name: str, chain_file: Path | None, progress: Callable[[str], None]) -> dict[str, Any]:
    from harness.cases.catalogue import catalogue_for
    from harness.cases.model import Skip, lane_entries, lanes_for, run_case
    from harness.chainfile.load import load_chain
    from harness.model.topology import default_topology
    from harness.targets.base import lane_key
    from harness.targets.local import LocalTarget

    loaded = load_chain(chain_file) if chain_file is not None else None
    topology = loaded.topology if loaded is not None else default_topology()
    own = {"certs": loaded.certs} if loaded is not None else {}
    cases = catalogue_for(topology)
    variants, hosts = lanes_for(cases, topology)

    progress(f"lanes: {name}: the chain alone")
    alone = LocalTarget(topology, **own)
    t0 = time.perf_counter()
    with alone as chain:
        start_alone = time.perf_counter() - t0
        chain.probe("gateway")  # warm: the first probe pays for imports
        t1 = time.perf_counter()
        for _ in range(PROBES):
            chain.probe("gateway")
        probe_s = (time.perf_counter() - t1) / PROBES
        _, hwm_alone = _tree_memory_kib(_pids(alone))

    progress(f"lanes: {name}: {len(cases)} cases, {len({lane_key(v) for v in variants})} variants as lanes")
    target = LocalTarget(topology, lanes=variants, lane_hosts=hosts, lane_entries=lane_entries(cases, topology), **own)
    t0 = time.perf_counter()
    with target as chain:
        start_lanes = time.perf_counter() - t0
        passed = failed = skipped = 0
        t1 = time.perf_counter()
        for case in cases:
            try:
                result = run_case(case, chain, lambda t: chain if t == topology else chain.lanes[lane_key(t)])
            except Skip:
                skipped += 1
                continue
            passed += result.passed
            failed += not result.passed
        cases_s = time.perf_counter() - t1
        rss, hwm = _tree_memory_kib(_pids(target))
        processes = len(target._procs)
    lanes = target.lane_plan.summary()
    return {"cases": len(cases), "passed": passed, "failed": failed, "skipped": skipped, "lanes": lanes["lanes"],
            "processes": processes, "not_lanes": lanes["not_lanes"], "start_alone_s": start_alone,
            "start_lanes_s": start_lanes, "cases_s": cases_s, "probe_s": probe_s, "rss_kib": rss,
            "hwm_kib": hwm, "hwm_alone_kib": hwm_alone}


def run(*, progress: Callable[[str], None] = silent) -> Bench:
    from bench.hosts import write_hosts

    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mtls-bench-lanes-"))
    try:
        many = tmp / "hosts"
        subprocess.run([sys.executable, "-m", "harness", "init", str(many), "--example", "reference"], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        write_hosts(many, [f"team-{n:02d}.aks.contoso.example" for n in range(1, EXTRA_HOSTS + 1)])
        runs: dict[str, list[dict[str, Any]]] = {
            "reference": [_measure(f"reference (run {n}/{REFERENCE_RUNS})", None, progress)
                          for n in range(1, REFERENCE_RUNS + 1)],
            f"{EXTRA_HOSTS + 1} ingress hosts": [_measure(f"{EXTRA_HOSTS + 1} ingress hosts", many / "chain.yaml",
                                                          progress)]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = {name: rs[-1] for name, rs in runs.items()}
    for name, rs in runs.items():
        f = rs[-1]
        ran = f["passed"] + f["failed"]
        totals = [r["start_lanes_s"] + r["cases_s"] for r in rs]
        floors = [r["start_alone_s"] + (r["passed"] + r["failed"]) * r["probe_s"] for r in rs]
        row = time_row(f"{name}: catalogue on one chain, serial (start + every case)", totals, floor=floors,
                       floor_name=f"1 chain start + {ran} probes",
                       note=f"{f['cases']} cases: {f['passed']} passed, {f['failed']} failed, {f['skipped']} skipped; "
                            f"{f['lanes']} lanes on {f['processes']} processes, {f['not_lanes']} variant(s) not "
                            f"lanes" + (f"; each run against its own floor: "
                                        f"{', '.join(f'{t / fl:.2f}×' for t, fl in zip(totals, floors, strict=True))}"
                                        if len(rs) > 1 else ""))
        bench.rows.append(row)
        bench.rows.append(time_row(f"{name}: per case that ran",
                                   [r["cases_s"] / max(1, r["passed"] + r["failed"]) * 1000 for r in rs], unit="ms",
                                   floor=[r["probe_s"] * 1000 for r in rs], floor_name="one probe through the chain"))
        bench.rows.append(time_row(f"{name}: chain start with its {f['lanes']} lanes", [r["start_lanes_s"] for r in rs],
                                   floor=[r["start_alone_s"] for r in rs], floor_name="the chain alone"))
        bench.rows.append(time_row(f"{name}: start cost per lane (variant)",
                                   [(r["start_lanes_s"] - r["start_alone_s"]) / max(1, r["lanes"]) * 1000 for r in rs],
                                   unit="ms"))
        bench.rows.append(Row(f"{name}: peak memory of all hop processes, MiB (sum of VmHWM)",
                              round(f["hwm_kib"] / 1024), "count", floor=round(f["hwm_alone_kib"] / 1024),
                              floor_name="the chain alone",
                              note=f"resident now {f['rss_kib'] / 1024:.0f} MiB"))
    ref, many_f = figures["reference"], figures[f"{EXTRA_HOSTS + 1} ingress hosts"]
    added = ((many_f["start_lanes_s"] + many_f["cases_s"]) - (ref["start_lanes_s"] + ref["cases_s"])) / EXTRA_HOSTS
    bench.rows.append(time_row(f"{EXTRA_HOSTS + 1} ingress hosts: cost per added host", [added], note=(
        f"(start + catalogue, {many_f['cases']} cases) − the reference's ({ref['cases']} cases), / {EXTRA_HOSTS}; "
        "target ≤ 0.5 s")))
    bench.details = {k: [{kk: round(vv, 4) if isinstance(vv, float) else vv for kk, vv in r.items()} for r in rs]
                     for k, rs in runs.items()}
    bench.seconds = time.perf_counter() - t_bench
    return bench
