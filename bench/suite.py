"""The full handshake suite on the local target, as a user runs it: ``python -m harness run --report DIR``.

Serial and ``-n 2`` (pytest-xdist), one warm-up run of each and then :data:`RUNS` runs of each, interleaved; the
figure is the median. Each run is a subprocess bounded in time (SIGINT, then SIGKILL of its process group: the run's
own children stop with it), with Python's bytecode caches on, as a user's install has them (:func:`user_env`). The
case count and the per-case durations come from the last run's results.json.

Floor (from figures measured in the same bench run, when those benchmarks ran): one chain start + one harness probe
per case (the apim probe rate: a full handshake and a GET through three hops). Every variant the suite needs is a
lane of the chain's own processes (harness.targets.lanes, started with the chain), so no variant costs a switch any
more; the run's results.json says how the variants were laid out. ``-n 2`` also pays for pytest-xdist starting its
workers (each imports and collects the suite): the row "xdist: start of 2 workers, no test" measures that.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Bench, Row, Spread, silent, time_row

NAME = "suite"
TITLE = "handshake suite wall time (local target)"
REPO = Path(__file__).resolve().parents[1]
#: one suite run may take this long before it is stopped (it takes about a minute here)
TIMEOUT = 300.0


#: runs of each suite figure (after one warm-up run of each): the median is the figure
RUNS = 3


def user_env() -> dict[str, str]:
    """The environment a user runs the harness in: Python's bytecode caches on. A wheel install ships compiled
    bytecode and a checkout writes ``__pycache__`` on its first run; a machine that sets PYTHONDONTWRITEBYTECODE (this
    one does) would otherwise compile every module of the harness in every process of every run (~0.3 s each)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_suite(report: Path, workers: int | None, progress: Callable[[str], None],
              timeout: float = TIMEOUT, extra: tuple[str, ...] = (), target: str = "local") -> tuple[float, int, str]:
    """Run the suite once on ``target`` (``extra``: more ``run`` options, e.g. ``--chain FILE``); (wall seconds, exit
    code, log tail)."""
    argv = [sys.executable, "-m", "harness", "run", "--target", target, "--report", str(report), *extra]
    if workers:
        argv += ["-n", str(workers)]
    log = report.with_suffix(".log")
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=user_env())
        next_note = 30.0
        while True:
            try:
                code = proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.perf_counter() - t0
                if elapsed >= next_note:
                    progress(f"suite {'-n ' + str(workers) if workers else 'serial'}: still running ({elapsed:.0f} s)")
                    next_note += 30.0
                if elapsed > timeout:
                    progress(f"suite: stopping after {timeout:g} s")
                    os.killpg(proc.pid, signal.SIGINT)  # pytest unwinds: its chains stop
                    try:
                        code = proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                        code = proc.wait(timeout=15)
                    break
    wall = time.perf_counter() - t0
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-3:])
    return wall, code, tail


def read_results(report: Path) -> dict[str, Any]:
    path = report / "results.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    cases = doc.get("cases", [])
    durations = [c["duration_s"] for c in cases if c.get("duration_s") is not None]
    by_variant: dict[str, float] = collections.defaultdict(float)
    for c in cases:
        by_variant["(default chain)" if c.get("variant") is None else "variant cases"] += c.get("duration_s") or 0.0
    top = sorted(((c.get("duration_s") or 0.0, c["id"]) for c in cases), reverse=True)[:5]
    bad = [c for c in cases if c.get("result") in ("failed", "error")]
    reasons = collections.Counter(((c.get("message") or "").strip().splitlines() or ["(no message)"])[-1][:200]
                                  for c in bad)
    return {
        "summary": doc.get("summary", {}),
        "pytest_exit": doc.get("pytest_exit"),
        "duration_s": doc.get("duration_s"),
        "case_seconds_total": round(sum(durations), 3),
        "case_seconds": {k: round(v, 3) for k, v in by_variant.items()},
        "case_spread": Spread.of(durations).__dict__ if durations else None,
        "slowest_cases": [{"id": i, "s": round(s, 3)} for s, i in top],
        "not_passed": [{"id": c["id"], "result": c.get("result")} for c in bad[:10]],
        "not_passed_reasons": [{"reason": r, "cases": n} for r, n in reasons.most_common(5)],
        "variant_cases": sum(1 for c in cases if c.get("variant") is not None),
        "layout": doc.get("layout"),
        "distinct_variants_run": len({c.get("variant") for c in cases if c.get("variant") is not None}),
    }


def run(*, parallel: bool = True, chain_start: float | None = None, probe_seconds: float | None = None,
        progress: Callable[[str], None] = silent) -> Bench:
    """``chain_start`` (s) and ``probe_seconds`` (s per probe) make the floor estimate; None leaves it out."""
    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mtls-bench-suite-"))
    rows: list[Row] = []
    details: dict[str, Any] = {}
    try:
        modes: tuple[int | None, ...] = (None, 2) if parallel else (None,)
        walls: dict[int | None, list[float]] = {w: [] for w in modes}
        # a warm-up of each (bytecode caches written, cert sets issued), then the runs interleaved so a burst of load
        # on this shared box hits both
        for n in range(RUNS + 1):
            for workers in modes:
                label = f"-n {workers}" if workers else "serial"
                what = "warm-up" if n == 0 else f"run {n}/{RUNS}"
                progress(f"suite {label} ({what}): python -m harness run --target local --report …")
                report = tmp / f"{'parallel' if workers else 'serial'}-{n}"
                wall, code, tail = run_suite(report, workers, progress)
                facts = read_results(report)
                total = (facts.get("summary") or {}).get("total")
                passed = (facts.get("summary") or {}).get("passed")
                progress(f"suite {label} ({what}): {wall:.1f} s, exit {code}, {passed}/{total} passed")
                if n == 0:
                    continue
                walls[workers].append(wall)
                if n == RUNS:
                    details[label] = {"wall_s": round(statistics.median(walls[workers]), 3),
                                      "walls_s": [round(w, 3) for w in walls[workers]], "exit": code,
                                      "log_tail": tail, **facts}
        for workers in modes:
            label = f"-n {workers}" if workers else "serial"
            total = (details[label].get("summary") or {}).get("total")
            passed = (details[label].get("summary") or {}).get("passed")
            floor = None
            if chain_start is not None and probe_seconds is not None and total:
                floor = chain_start + total * probe_seconds / (workers or 1)
            row = time_row(f"suite {label}: wall time", walls[workers], floor=floor,
                           floor_name=(f"1 chain start + {total} probes" + (f" / {workers} workers" if workers
                                                                            else "")) if floor else None,
                           note=f"{total} cases, {passed} passed, exit {details[label]['exit']} (last run); "
                                "bytecode caches on")
            rows.append(row)
        if parallel and "serial" in details and "-n 2" in details:
            s, p = details["serial"]["wall_s"], details["-n 2"]["wall_s"]
            rows.append(Row("suite: -n 2 speed-up over serial", s / p if p else None, "count",
                            note="2 cores, shared with the other users of this machine"))
        serial = details.get("serial", {})
        if serial.get("summary"):
            total = serial["summary"].get("total") or 0
            rows.append(Row("suite serial: wall per case", serial["wall_s"] / total if total else None, "s"))
            rows.append(Row("suite serial: sum of case durations", serial.get("case_seconds_total"), "s",
                            note="; ".join(f"{k} {v:.1f} s" for k, v in serial.get("case_seconds", {}).items())))
        layout = details.get("serial", {}).get("layout") or {}
        if layout:
            rows.append(Row("suite serial: variants served as lanes of the chain's processes", layout.get("lanes"),
                            "count", note=f"{len(layout.get('ingress_processes') or {})} nginx of their own; "
                                          f"{layout.get('not_lanes', 0)} variant(s) ran as chains of their own"))
        if parallel:
            progress("suite: xdist's own start (-n 2, no test selected)")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                            "-p", "no:anyio", "harness/suite", "-k", "mtls_bench_selects_nothing"], cwd=REPO,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, check=False,
                           env=user_env())
            rows.append(Row("xdist: start of 2 workers, no test", time.perf_counter() - t0, "s",
                            note="what -n 2 pays before its first case: two Python workers importing and collecting"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    bench.rows = rows
    bench.details = details
    bench.seconds = time.perf_counter() - t_bench
    return bench
