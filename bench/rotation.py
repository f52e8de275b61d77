"""The rotation rehearsal (harness/rotation/rehearsal.py) once, short: throughput through four hops under hot reloads,
failures.

The current set is the suite's cached default set; the next one is generated for the run (same plan, new keys and
CAs); the plan is the default one (trust the new CAs, swap the leaves, untrust the old CAs, hop by hop). The load is
the rehearsal's own (bounded: ``duration`` seconds, its rate cap), pkilint off. Figures: requests, failures, the
achieved rate against the rate asked for, reload times per step kind, and the rehearsal's wall time against its load
duration plus one chain start (the floor of a rehearsal that only applies its steps).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Bench, Row, rate_row, silent, time_row

NAME = "rotation"
TITLE = "rotation rehearsal (local chain under load)"


def run(*, duration: float = 8.0, chain_start: float | None = None,
        progress: Callable[[str], None] = silent) -> Bench:
    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    if importlib.util.find_spec("harness.rotation.rehearsal") is None:
        bench.skipped = "harness/rotation/rehearsal.py is absent"
        progress(f"rotation: skipped — {bench.skipped}")
        return bench
    from harness.model.topology import default_pki_plan, default_topology
    from harness.pki.certset import cert_set_for, generate_cert_set
    from harness.rotation.rehearsal import RehearsalOptions, rehearse

    options = RehearsalOptions(duration=duration, lint=False)
    tmp = Path(tempfile.mkdtemp(prefix="mtls-bench-rotation-"))
    try:
        current = cert_set_for(default_topology().pki)
        nxt = generate_cert_set(default_pki_plan("ecdsa"), tmp / "next")
        progress(f"rotation: rehearsal, default plan, {duration:g} s of load at {options.rate or 'unpaced'} req/s")
        t0 = time.perf_counter()
        result = rehearse(current, nxt, None, options=options, workdir=tmp / "work")
        wall = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    f = result.figures()
    progress(f"rotation: {'PASS' if result.passed else 'FAIL'} in {wall:.1f} s — {f['requests']} requests, "
             f"{f['failed_requests']} failed, {f['rate_per_s']:.0f}/s")
    floor = duration + (chain_start or 0.0) if chain_start is not None else None
    reloads = f.get("nginx_reload_ms", []) + f.get("envoy_sds_ms", [])
    rows: list[Row] = [
        Row("rehearsal wall time", wall, "s", floor=floor,
            floor_name="load duration + 1 chain start" if floor else None,
            note=f"{f['steps']} steps, verdict {'PASS' if result.passed else 'FAIL'}, static checks + probes"),
        rate_row("rehearsal load rate (4 hops)", f["rate_per_s"], floor=options.rate,
                 floor_name="rate asked for" if options.rate else None,
                 note=f"{f['workers']} workers, half new-connection; {f['requests']} requests"),
        Row("rehearsal failed requests", float(f["failed_requests"]), "count",
            note=f"{f['reload_resets']} reset by an nginx reload"),
    ]
    if f.get("nginx_reload_ms"):
        rows.append(time_row("  step applied: nginx reload", f["nginx_reload_ms"], unit="ms"))
    if f.get("envoy_sds_ms"):
        rows.append(time_row("  step applied: Envoy SDS swap", f["envoy_sds_ms"], unit="ms"))
    bench.rows = rows
    bench.details = {"passed": result.passed, "reasons": list(result.reasons), "figures": f, "wall_s": round(wall, 3),
                     "reload_ms_all": reloads, "options": {"duration": duration, "rate": options.rate,
                                                           "workers": options.workers}}
    bench.seconds = time.perf_counter() - t_bench
    return bench
