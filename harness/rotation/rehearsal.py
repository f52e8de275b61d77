"""The certificate rotation rehearsal: apply a rotation plan to the real local chain under load, and judge it.

    result = rehearse(load_cert_set(cur), load_cert_set(nxt), plan=None, options=RehearsalOptions(duration=30))
    result.passed, result.verdict_lines()

1. Static checks (:func:`~harness.rotation.plan.static_checks`): the next set against the chain (chain to each
   consumer's anchor, SANs, EKU, expiry window, key match, lint) and the plan walked step by step on a model of the
   chain — which link a new connection would break at which step, and what the final state lacks.
2. Live: the local chain (real Envoy ×2, real nginx, the echo pod) starts on the current set; a bounded load
   (:mod:`harness.rotation.load`: keep-alive and new-connection workers) runs through all four hops; each step is
   applied by
   hot reload — Envoy: :func:`~harness.render.envoy.rotate_envoy_secret` (a new SDS file renamed into the watched
   directory); ingress: the Secrets re-rendered and :func:`~harness.render.nginx.reload_nginx` (SIGHUP); pod: its
   mounted files replaced and SIGHUP (:meth:`~harness.targets.local.LocalTarget.reload_pod`) — never an in-place
   rewrite, never a restart. After each step, probes make fresh handshakes: which server cert each hop serves
   (fingerprint from the handshake, proving the reload took effect), whether each link's caller would connect now,
   and which client identities each checking hop accepts.
3. Verdict: pass only with zero failed requests, probes that agree with the plan's model at every step, and a final
   state at the goal (every certificate of the trust domains the plan touches from the next set, the old roots no
   longer trusted).

Pooled connections: Envoy keeps its upstream connections across an SDS update (only new connections use the new
secret, envoyproxy/envoy#28386), so a step could "work" only because apim→ingress connections opened before it are
reused — and break hours later. After a step that changes how apim connects to the ingress, the rehearsal reloads
nginx once more (a graceful SIGHUP that closes idle keep-alive connections), so apim reconnects with what it now
has. The gateway→apim link cannot be recycled without a restart; its new-connection behaviour is shown by the link
probe. The local ingress opens a new connection to the pod per request (no upstream keep-alive), so a pod step meets
fresh handshakes at once; ingress-nginx pools them (``upstream-keepalive-connections``), which the ingress→pod link
probe stands in for. An nginx reload can reset a request that apim sends on a keep-alive connection nginx is just
closing (Envoy has a retry policy of one attempt on a reset, so this is rare): such resets within a reload are
reported separately and fail the verdict too, unless ``strict_resets`` is turned off.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.model.topology import Topology
from harness.pki.certset import CertSet
from harness.rotation.live import LiveRun, LiveSetup, rehearsal_topology, rehearsal_workdir
from harness.rotation.plan import (
    CertPair,
    RotationPlan,
    Step,
    default_plan,
    goal_state,
    link_problems,
    load_plan,
    parse_plan,
    plan_scope,
    simulate,
    state_differences,
    static_checks,
)
from harness.rotation.results import ProbeRow, RehearsalOptions, RehearsalResult, StepResult
from harness.rotation.verdict import assign_requests, final_evidence, verdict_reasons
from harness.targets.local import LocalTarget

__all__ = [
    "ProbeRow",
    "RehearsalOptions",
    "RehearsalResult",
    "RotationPlan",
    "Step",
    "StepResult",
    "default_plan",
    "load_plan",
    "parse_plan",
    "rehearsal_topology",
    "rehearse",
]


def rehearse(current: CertSet, nxt: CertSet, plan: RotationPlan | None = None, *,
             topology: Topology | None = None, options: RehearsalOptions | None = None,
             workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> RehearsalResult:
    """Rehearse rotating the chain from ``current`` to ``nxt`` by ``plan`` (default: :func:`default_plan`)."""
    options = options or RehearsalOptions()
    say = progress or (lambda _line: None)
    topology = topology or rehearsal_topology(current)
    with rehearsal_workdir(workdir) as wd:
        pair = CertPair(current, nxt, wd / "certs")
        plan = plan or default_plan(topology, pair)
        states = simulate(plan, topology)
        static = static_checks(pair, topology, plan, states, lint=options.lint, min_days=options.min_days)
        say(f"plan {plan.name!r}: {len(plan.steps)} steps; static checks: {len(static.errors)} errors, "
            f"{len(static.warnings)} warnings, {len(static.predicted)} predicted broken links, "
            f"{len(static.final)} final-state gaps")
        for line in static.warnings:  # errors are in the verdict; warnings only here (and in --json)
            say(f"  warning: {line}")
        for i, p in static.predicted:
            say(f"  predicted: {'before any step' if i == 0 else f'step {i}'}: {p}")
        t0 = time.perf_counter()
        target = LocalTarget(topology, certs=current, workdir=wd / "chain")
        with target as chain:
            chain_start = time.perf_counter() - t0
            say(f"chain up in {chain_start * 1000:.0f} ms; load: {options.workers} workers, "
                f"{options.rate or 'unpaced'} requests/s, {options.duration:g} s")
            live = LiveRun(LiveSetup(target, chain, pair, topology, plan, states, options), say)
            steps, load = live.run()
        records = load.records()
        broken = [bool(link_problems(st, topology, pair)) for st in states]
        assign_requests(records, steps, live.reloads, max((r.end for r in records), default=0.0), broken)
        applied = states[steps[-1].index] if steps else states[0]
        final = state_differences(applied, goal_state(topology, plan_scope(plan, topology)), pair)
        final = final_evidence(final, steps[-1]) if steps else final
        reasons = verdict_reasons(static, steps, final, load, options=options, n=len(plan.steps))
        return RehearsalResult(plan=plan, static=static, steps=steps, load=load.summary(), records=records,
                               final=final, reasons=reasons, chain_start=chain_start)
