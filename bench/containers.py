"""Containers target start time (the same chain as four Docker containers), when Docker and the images are here;
and (not with --quick) the whole handshake suite on it, against one chain start + one probe per case.

Runs only with a reachable Docker engine and the images ``mtls-harness images build`` makes (passed explicitly, so
nothing is pulled); otherwise the benchmark is skipped with the reason. One round is a warm-up. The floor is the local
target's chain start measured in the same bench run (the same four processes without Docker), so the ratio is what
the container runtime adds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Bench, Row, silent, time_row

NAME = "containers"
TITLE = "containers target start (Docker)"


def why_not() -> str | None:
    """None when the benchmark can run, else the reason it cannot."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is not installed"
    try:
        from harness.targets.containers import ContainersTarget  # noqa: F401
    except ImportError:
        return "harness/targets/containers.py is absent"
    from harness.images.resolve import ROLES, docker_client, local_image_tag
    from harness.pytest_plugin import _docker_reachable

    if not _docker_reachable():
        return "no reachable Docker engine (apt-get install docker.io; start dockerd)"
    client = docker_client()
    try:
        missing = [local_image_tag(r) for r in ROLES if not client.images.list(name=local_image_tag(r))]
    finally:
        client.close()
    if missing:
        return f"images missing: {', '.join(missing)} (run `mtls-harness images build`)"
    return None


#: one run of the whole suite on containers may take this long (about four minutes here with -n 2)
SUITE_TIMEOUT = 900.0


def _suite_rows(start: float, probe_seconds: float | None, progress: Callable[[str], None]) -> tuple[list[Row],
                                                                                                      dict[str, Any]]:
    """The whole suite on containers with ``-n 2``: its wall time against the floor of one chain start (per worker)
    and one probe per case, and what each case and each distinct variant cost."""
    from bench.suite import read_results, run_suite

    tmp = Path(tempfile.mkdtemp(prefix="mtls-bench-containers-suite-"))
    try:
        progress("containers suite -n 2: python -m harness run --target containers -n 2 (about four minutes)")
        wall, code, tail = run_suite(tmp / "report", 2, progress, timeout=SUITE_TIMEOUT, target="containers")
        facts = read_results(tmp / "report")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = facts.get("summary") or {}
    total, ran = summary.get("total") or 0, summary.get("ran") or 0
    progress(f"containers suite -n 2: {wall:.1f} s, exit {code}, {ran} of {total} ran")
    floor = start + ran * probe_seconds / 2 if probe_seconds is not None and ran else None
    variants = facts.get("distinct_variants_run") or 0
    rows = [
        Row("containers suite -n 2: wall time", wall, "s", floor=floor,
            floor_name=f"1 chain start + {ran} probes / 2 workers" if floor else None,
            note=f"{ran} of {total} cases ran ({summary.get('passed')} passed), exit {code}"),
        Row("containers suite -n 2: wall per case run", wall / ran if ran else None, "s"),
        Row("containers suite: variant cases' share of the case time",
            (facts.get("case_seconds") or {}).get("variant cases"), "s",
            note=f"{facts.get('variant_cases')} cases on {variants} distinct variants, each a lane of the same "
                 f"containers ({(facts.get('layout') or {}).get('lanes', '?')} lanes)"),
    ]
    return rows, {"wall_s": round(wall, 2), "exit": code, "log_tail": tail, **facts}


def run(*, runs: int = 3, warmup: bool = True, local_start: float | None = None, suite: bool = False,
        probe_seconds: float | None = None, progress: Callable[[str], None] = silent) -> Bench:
    """Start/stop times; with ``suite``, also the whole handshake suite on containers (``probe_seconds``: the local
    probe rate, for its floor)."""
    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    reason = why_not()
    if reason is not None:
        bench.skipped = reason
        progress(f"containers: skipped — {reason}")
        return bench
    from harness.images.resolve import local_image_tag
    from harness.model.topology import default_topology
    from harness.targets.containers import ContainersTarget

    images = {"envoy_image": local_image_tag("envoy"), "nginx_image": local_image_tag("nginx"),
              "pod_image": local_image_tag("pod")}
    samples: dict[str, list[float]] = {}
    for i in range(runs + (1 if warmup else 0)):
        counted = not warmup or i > 0
        target = ContainersTarget(default_topology(), **images)
        t0 = time.perf_counter()
        with target as chain:
            up = time.perf_counter() - t0
            seen = chain.probe("gateway")
            times = dict(target.start_times)
            t1 = time.perf_counter()
        down = time.perf_counter() - t1
        if counted:
            samples.setdefault("start", []).append(up)
            samples.setdefault("stop", []).append(down)
            for k, v in times.items():
                samples.setdefault(k, []).append(v)
        progress(f"containers {'warm-up' if not counted else f'run {i + (0 if warmup else 1)}/{runs}'}: "
                 f"up in {up:.2f} s (first request {times.get('first-request', 0):.2f} s), stop {down:.2f} s, "
                 f"probe {seen.outcome}")
    rows = [time_row("containers chain start (through the gateway)", samples["start"], floor=local_start,
                     floor_name="local target chain start" if local_start else None,
                     note="network, 4 containers, own ready signals, one request through the gateway")]
    for hop in ("pod", "ingress", "apim", "gateway", "first-request"):
        if hop in samples:
            rows.append(time_row(f"  {hop}: start → ready" if hop != "first-request" else
                                 "  first request through the gateway", samples[hop]))
    rows.append(time_row("containers chain stop", samples["stop"], note="stop 4 containers, remove the network"))
    bench.details = {"runs": runs, "images": images, "samples": {k: [round(x, 4) for x in v]
                                                                 for k, v in samples.items()}}
    if suite:
        start = sorted(samples["start"])[len(samples["start"]) // 2]
        more, bench.details["suite"] = _suite_rows(start, probe_seconds, progress)
        rows += more
    bench.rows = rows
    bench.seconds = time.perf_counter() - t_bench
    return bench
