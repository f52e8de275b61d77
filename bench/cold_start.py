"""Chain cold start on the local target, per hop, against the bare start of the same binaries (bench/floors.py).

One run = one chain start (``with LocalTarget(topology, certs=…)``: ports, rendering, four spawns, one wait) and its
stop, then one start of each floor. Runs are interleaved, so a burst of load from the other users of the machine
lands on the chain and its floors alike. The first round is a warm-up (page cache for the 100 MB Envoy binary, the
harness's bytecode) and is not counted.

Floors: ``ingress`` ↔ bare nginx, ``apim``/``gateway`` ↔ bare Envoy, ``pod`` ↔ a bare Python TLS listener; the whole
chain ↔ the slowest of the three (the hops start in parallel, so a perfect chain start costs its slowest process).

Experiment (``--no-experiment`` turns it off): the same chain with the local target's readiness poll capped at
20 ms instead of 200 ms — how much of the chain figure is the poll's back-off, not the processes.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import floors
from bench.common import Bench, Row, Spread, child_cpu, proc_cpu, silent, time_row
from harness.model.topology import HOPS, default_topology

NAME = "cold_start"
TITLE = "chain cold start (local target)"
#: which floor each hop is measured against
HOP_FLOOR = {"pod": "python", "ingress": "nginx", "apim": "envoy", "gateway": "envoy"}


@contextlib.contextmanager
def _poll_capped(max_interval: float) -> Iterator[None]:
    """Within the block, LocalTarget's start waits with ``max_interval`` as the poll cap (bench-only experiment;
    the harness is not changed)."""
    import harness.targets.local as local
    from harness.runtime import wait_until

    original = local.wait_until
    local.wait_until = functools.partial(wait_until, max_interval=max_interval)  # type: ignore[assignment]
    try:
        yield
    finally:
        local.wait_until = original  # type: ignore[assignment]


def _chain_once(certs: Any) -> dict[str, float]:
    """One start and stop of the default chain: wall times, per-hop readiness, CPU."""
    from harness.targets.local import LocalTarget

    topology = default_topology()
    out: dict[str, float] = {}
    with child_cpu() as cpu:
        t0 = time.perf_counter()
        target = LocalTarget(topology, certs=certs)
        with target:
            out["start"] = time.perf_counter() - t0
            for hop in HOPS:
                out[f"hop:{hop}"] = target.start_times[hop]
                used = proc_cpu(target.pid(hop))
                if used is not None:
                    out[f"cpu:{hop}"] = used
            # what the parent did before the first spawn (binaries, ports, rendering): the wall time not covered
            # by the hops' spawn → ready clocks, which all start just before the spawns
            out["before_spawn"] = out["start"] - max(target.start_times[h] for h in HOPS)
            t1 = time.perf_counter()
        out["stop"] = time.perf_counter() - t1
    out["cpu"] = cpu["cpu_s"]
    return out


def _median(samples: list[float]) -> float:
    return Spread.of(samples).median


def run(*, runs: int = 10, warmup: bool = True, experiment: bool = True,
        progress: Callable[[str], None] = silent) -> Bench:
    from harness.pki.certset import cert_set_for

    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    t0 = time.perf_counter()
    certs = cert_set_for(default_topology().pki)
    cert_load = time.perf_counter() - t0
    pod_leaf = certs.leaf(default_topology().pod.listener.server_cert)
    chain: dict[str, list[float]] = {}
    capped: dict[str, list[float]] = {}
    bare: dict[str, list[float]] = {k: [] for k in floors.FLOORS}
    bare_cpu: dict[str, list[float]] = {k: [] for k in floors.FLOORS}
    root = Path(tempfile.mkdtemp(prefix="mtls-bench-cold-"))
    try:
        for i in range(runs + (1 if warmup else 0)):
            counted = not warmup or i > 0
            one = _chain_once(certs)
            two = None
            if experiment:
                with _poll_capped(0.02):
                    two = _chain_once(certs)
            this = {kind: floors.time_start(kind, root / f"floor-{kind}-{i}", cert=pod_leaf.chain, key=pod_leaf.key)
                    for kind in floors.FLOORS}
            if counted:
                for k, v in one.items():
                    chain.setdefault(k, []).append(v)
                for k, v in (two or {}).items():
                    capped.setdefault(k, []).append(v)
                for kind, st in this.items():
                    bare[kind].append(st.seconds)
                    if st.cpu_at_ready is not None:
                        bare_cpu[kind].append(st.cpu_at_ready)
            hops = ", ".join(f"{h} {one[f'hop:{h}'] * 1000:.0f}" for h in HOPS)
            floor_line = ", ".join(f"{k} {st.seconds * 1000:.0f}" for k, st in this.items())
            label = (f"run {i if warmup else i + 1}/{runs}") if counted else "warm-up"
            progress(f"cold start {label}: chain {one['start'] * 1000:.0f} ms ({hops})"
                     + (f", poll-capped {two['start'] * 1000:.0f} ms" if two else "") + f"; bare {floor_line} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    floor_med = {k: _median(v) for k, v in bare.items()}
    slowest = max(floors.FLOORS, key=lambda k: floor_med[k])
    rows: list[Row] = [
        time_row("chain start (all four hops ready)", chain["start"], floor=floor_med[slowest],
                 floor_name=f"slowest bare process, {slowest}",
                 note="LocalTarget.__enter__: ports, render, spawn ×4, one wait"),
        time_row("  parent work before the spawns", chain["before_spawn"],
                 note="the start beyond its slowest hop's spawn → ready: binaries, ports, the renders before it"),
    ]
    for hop in HOPS:
        kind = HOP_FLOOR[hop]
        rows.append(time_row(f"  hop {hop}: spawn → seen ready", chain[f"hop:{hop}"], floor=floor_med[kind],
                             floor_name=f"bare {kind}", note="as LocalTarget's poll saw it (start_times)"))
    if capped:
        rows.append(time_row("chain start, poll capped at 20 ms (experiment)", capped["start"],
                             floor=floor_med[slowest], floor_name=f"slowest bare process, {slowest}",
                             note="LocalTarget's wait_until max_interval 0.2 s → 0.02 s, nothing else changed"))
    rows.append(time_row("chain stop", chain["stop"], note="SIGTERM ×4, wait, remove the work dir"))
    for kind in floors.FLOORS:
        rows.append(time_row(f"floor: bare {kind} start", bare[kind],
                             note={"nginx": "return 200 server", "envoy": "direct_response listener, admin LIVE",
                                   "python": "stdlib TLS listener"}[kind]))
    for hop in HOPS:
        kind = HOP_FLOOR[hop]
        if chain.get(f"cpu:{hop}") and bare_cpu[kind]:
            rows.append(time_row(f"CPU used by {hop} until ready", chain[f"cpu:{hop}"], floor=bare_cpu[kind],
                                 floor_name=f"bare {kind}", note="/proc utime+stime of the hop's process"
                                 + (" (nginx master only)" if hop == "ingress" else "")))
    bare_total = sum(_median(bare_cpu[k]) for k in ("python", "nginx") if bare_cpu[k])
    bare_total += 2 * _median(bare_cpu["envoy"]) if bare_cpu["envoy"] else 0.0
    rows.append(time_row("CPU of one chain start+stop, all hops", chain["cpu"], floor=bare_total or None,
                         floor_name="bare python + nginx + 2 × envoy, to ready",
                         note="children's user+sys; 2 cores shared with other users"))
    bench.rows = rows
    bench.details = {
        "runs": runs, "warmup": warmup, "cert_set_load_s": round(cert_load, 4),
        "chain": {k: [round(x, 4) for x in v] for k, v in chain.items()},
        "chain_poll_capped": {k: [round(x, 4) for x in v] for k, v in capped.items()},
        "floors": {k: [round(x, 4) for x in v] for k, v in bare.items()},
        "floors_cpu_at_ready_s": {k: [round(x, 4) for x in v] for k, v in bare_cpu.items()},
    }
    bench.seconds = time.perf_counter() - t_bench
    return bench
