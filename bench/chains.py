"""Cost as the chain grows: for the reference chain and each example chain file, how many cases the catalogue
generated for it has, how long generating it (and predicting its findings) takes, and the wall time of a real run
(``python -m harness run --chain FILE -n 2``) with its cost per case that ran.

Floor for the run's cost per case: the reference chain's own cost per case in the same bench run (a chain of your own
should cost about what the reference does per case; what it adds is the cases it generates).

And a chain whose controller serves 20 ingress hosts (the reference example plus 19 hosts written by
bench/hosts.py, each with its own certificate, TLS Secret and Ingress): the catalogue repeats each host's
client-cert, TLS-version and pod-cert cases on it (docs/findings.md), so the row shows what an added host costs —
cases, generation time, run wall time — next to the reference chain's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Bench, Row, silent, time_row
from bench.hosts import write_hosts
from bench.suite import run_suite

NAME = "chains"
TITLE = "cost as the chain grows: cases generated, generation time, run wall time per case"
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("partner-mtls", "passthrough")
#: the many-host chain: the reference example's host and this many more
EXTRA_HOSTS = 19


def _generate(chain: Path | None, runs: int) -> tuple[int, list[float], int]:
    """(cases generated, seconds per generation, findings predicted) for ``chain`` (None: the reference)."""
    from harness.cases.catalogue import catalogue_for
    from harness.chainfile.load import load_chain
    from harness.findings.predict import predict
    from harness.model.topology import default_topology

    topology = load_chain(chain).topology if chain is not None else default_topology()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        cases = catalogue_for(topology)
        found = predict(topology)
        samples.append(time.perf_counter() - t0)
    return len(cases), samples, len(found)


def _run(chain: Path | None, report: Path, progress: Callable[[str], None]) -> tuple[float, dict[str, Any]]:
    """One real run (bench.suite.run_suite: bounded, its process group stopped on timeout); (wall, summary)."""
    extra = ("-n", "2", *(("--chain", str(chain)) if chain is not None else ()))
    wall, _code, tail = run_suite(report, None, progress, extra=extra)
    results = report / "results.json"
    if not results.is_file():
        raise RuntimeError(f"the run wrote no results.json: {tail}")
    return wall, json.loads(results.read_text())["summary"]


def run(*, runs: int = 5, live: bool = True, progress: Callable[[str], None] = silent) -> Bench:
    bench = Bench(NAME, TITLE)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mtls-bench-chains-") as tmp:
        chains: dict[str, Path | None] = {"reference": None}
        for example in EXAMPLES:
            out = Path(tmp) / example
            subprocess.run([sys.executable, "-m", "harness", "init", str(out), "--example", example], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
            chains[example] = out / "chain.yaml"
        many = Path(tmp) / "hosts-20"
        subprocess.run([sys.executable, "-m", "harness", "init", str(many), "--example", "reference"], cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
        write_hosts(many, [f"team-{n:02d}.aks.contoso.example" for n in range(1, EXTRA_HOSTS + 1)])
        chains[f"{EXTRA_HOSTS + 1} ingress hosts"] = many / "chain.yaml"
        reference_per_case: float | None = None
        reference_wall: float | None = None
        for name, chain in chains.items():
            progress(f"chains: {name}: generating the catalogue ({runs} times)")
            n, samples, findings = _generate(chain, runs)
            bench.rows.append(Row(f"{name}: cases generated", float(n), "count",
                                  note=f"{findings} finding(s) predicted"))
            bench.rows.append(time_row(f"{name}: generate catalogue + predict findings", [s * 1000 for s in samples],
                                       unit="ms"))
            bench.details[name] = {"cases": n, "findings": findings, "generate_s": samples}
            if not live:
                continue
            progress(f"chains: {name}: run -n 2")
            wall, summary = _run(chain, Path(tmp) / f"report-{name}", progress)
            ran = max(1, int(summary.get("ran") or 0))
            per_case = wall / ran
            if name == "reference":
                reference_per_case, reference_wall = per_case, wall
            bench.rows.append(time_row(f"{name}: run -n 2 wall time", [wall], note=(
                f"{summary.get('ran')} ran, {summary.get('skipped_by_design')} skipped by design, "
                f"{summary.get('finding', 0)} findings, {summary.get('failed')} failed")))
            bench.rows.append(time_row(f"{name}: cost per case that ran", [per_case * 1000], unit="ms",
                                       floor=None if reference_per_case is None else reference_per_case * 1000,
                                       floor_name="the reference chain's cost per case"))
            if name.endswith("ingress hosts") and reference_wall is not None:
                bench.rows.append(time_row(f"{name}: run wall time per added host",
                                           [(wall - reference_wall) / EXTRA_HOSTS], note=(
                                               f"({wall:.1f} s - the reference's {reference_wall:.1f} s) / "
                                               f"{EXTRA_HOSTS} hosts")))
            bench.details[name].update(run_wall_s=wall, summary=summary)
    bench.seconds = time.perf_counter() - t_start
    return bench
