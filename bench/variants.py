"""Variant cost: how long the running local chain takes to become a different one.

Each measurement alternates between two states, ``runs`` times, on one running chain, and checks with a probe
(outside the timed part) that the change took effect:

- gateway server cert: :func:`rotate_envoy_secret` (SDS file renamed in; returns when Envoy's update counter moves),
  alternating the current set's ``gateway-server`` and a freshly generated set's — the probe sees the fingerprint;
- ingress re-render + :func:`reload_nginx` (``nginx -t``, SIGHUP, wait for the new worker), the nginx.conf unchanged
  in substance — floor: :func:`reload_nginx` of the bare nginx (bench/floors.py), same function, trivial config;
- :meth:`LocalTarget.reconfigure` with an ingress annotation change (auth-tls-verify-client on ↔ optional: nginx hot
  reload) — the probe without a client cert sees 400 ↔ 200;
- :meth:`LocalTarget.reconfigure` with an apim change (negotiate + validate-client-certificate: Envoy restart) —
  floor: the bare Envoy start (bench/floors.py).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import floors
from bench.common import Bench, silent, time_row
from harness.model.topology import Topology, default_topology

NAME = "variants"
TITLE = "variant cost on the running local chain"


def _apim_validates(t: Topology) -> Topology:
    return t.replace(apim=dataclasses.replace(t.apim, negotiate_client_certificate=True,
                                              validate_client_certificate=True))


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(*, runs: int = 6, progress: Callable[[str], None] = silent) -> Bench:
    from harness.model.topology import default_pki_plan
    from harness.pki.certset import cert_set_for, generate_cert_set
    from harness.runtime.envoy import rotate_envoy_secret
    from harness.runtime.nginx import reload_nginx, render_ingress
    from harness.targets.local import LocalTarget

    bench = Bench(NAME, TITLE)
    t_bench = time.perf_counter()
    base = default_topology()
    certs = cert_set_for(base.pki)
    tmp = Path(tempfile.mkdtemp(prefix="mtls-bench-variants-"))
    times: dict[str, list[float]] = {k: [] for k in ("sds", "render", "reload", "annotation", "apim", "floor_reload",
                                                     "floor_envoy")}
    checks: dict[str, list[str]] = {k: [] for k in ("sds", "annotation", "apim")}
    try:
        nxt = generate_cert_set(default_pki_plan("ecdsa"), tmp / "next")
        leaves = [certs.leaf("gateway-server"), nxt.leaf("gateway-server")]
        target = LocalTarget(base, certs=certs)
        with target as chain:
            gw = target.envoy_config("gateway")
            for i in range(runs):
                leaf = leaves[(i + 1) % 2]
                times["sds"].append(_timed(lambda leaf=leaf: rotate_envoy_secret(gw, "server", leaf)))
                seen = chain.probe("gateway", verify=False)
                fp = seen.peer_chain[0].sha256 if seen.peer_chain else "none"
                checks["sds"].append("ok" if fp == leaf.fingerprint_sha256 else f"served {fp[:12]}")

                ingress_dir = target.nginx_config().prefix
                t0 = time.perf_counter()
                cfg = render_ingress(target.topology, certs, listen=("127.0.0.1", chain.endpoints["ingress"].port),
                                   pod=("127.0.0.1", chain.endpoints["pod"].port), workdir=ingress_dir)
                times["render"].append(time.perf_counter() - t0)
                times["reload"].append(_timed(lambda cfg=cfg: reload_nginx(cfg, target.pid("ingress"))))
            progress(f"variants: gateway SDS swap ×{runs}, ingress re-render + reload ×{runs}")

            modes = ["optional", "on"]
            for i in range(runs):
                mode = modes[i % 2]
                topo = base.with_ingress_annotations(auth_tls_verify_client=mode)
                times["annotation"].append(_timed(lambda topo=topo: target.reconfigure(topo)))
                seen = target.chain.probe("ingress", client_cert=None, client_key=None)  # type: ignore[union-attr]
                want = 200 if mode == "optional" else 400
                checks["annotation"].append("ok" if seen.status == want else f"{mode}: {seen.outcome}")
            progress(f"variants: reconfigure ingress annotation ×{runs}")

            target.reconfigure(base)
            for i in range(runs):
                topo = _apim_validates(base) if i % 2 == 0 else base
                times["apim"].append(_timed(lambda topo=topo: target.reconfigure(topo)))
                seen = target.chain.probe("gateway")  # type: ignore[union-attr]
                want = 401 if i % 2 == 0 else 200  # the gateway presents no client cert: validate → 401
                checks["apim"].append("ok" if seen.status == want else f"{seen.outcome}")
            progress(f"variants: reconfigure apim (Envoy restart) ×{runs}")

        floor = floors.prepare("nginx", tmp / "floor-nginx")
        with floors.running(floor):
            for _ in range(runs):
                times["floor_reload"].append(_timed(lambda: reload_nginx(floor.nginx_config, floor.process.pid)))  # type: ignore[arg-type]
        for i in range(runs):
            times["floor_envoy"].append(floors.time_start("envoy", tmp / f"floor-envoy-{i}").seconds)
        progress(f"variants: floors (bare nginx reload, bare Envoy start) ×{runs}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def check_note(key: str) -> str:
        bad = [c for c in checks[key] if c != "ok"]
        return f"effect checked by probe: {len(checks[key]) - len(bad)}/{len(checks[key])} ok" + (
            f" ({bad[0]})" if bad else "")

    bench.rows = [
        time_row("gateway server cert swap (SDS rename)", times["sds"],
                 note="rotate_envoy_secret until update_success moves; " + check_note("sds")),
        time_row("ingress re-render (render_nginx)", times["render"], note="Secrets' PEM files + nginx.conf"),
        time_row("ingress reload (reload_nginx)", times["reload"], floor=times["floor_reload"],
                 floor_name="reload_nginx of the bare nginx", note="nginx -t, SIGHUP, new worker up, old ones idle"),
        time_row("reconfigure: ingress annotation (hot reload)", times["annotation"], floor=times["floor_reload"],
                 floor_name="reload_nginx of the bare nginx",
                 note="auth-tls-verify-client; " + check_note("annotation")),
        time_row("reconfigure: apim change (Envoy restart)", times["apim"], floor=times["floor_envoy"],
                 floor_name="bare Envoy start", note="negotiate + validate client cert; " + check_note("apim")),
        time_row("floor: reload_nginx, bare nginx", times["floor_reload"]),
        time_row("floor: bare Envoy start", times["floor_envoy"]),
    ]
    bench.details = {"runs": runs, "samples": {k: [round(x, 4) for x in v] for k, v in times.items()},
                     "checks": checks}
    bench.seconds = time.perf_counter() - t_bench
    return bench
