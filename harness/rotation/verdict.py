"""The verdict of a rotation rehearsal: each request assigned to the step it ran under, and the reasons a
rehearsal fails (static errors, failed requests and resets, probes that disagree with the plan, final-state gaps)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.rotation.load import LoadGenerator, RequestRecord
from harness.rotation.plan import (
    StaticReport,
)
from harness.rotation.results import RehearsalOptions, StepResult

__all__ = ["RESET_GRACE", "assign_requests", "final_evidence", "verdict_reasons"]

#: a failed request this soon after an nginx reload ended, reset by the closing keep-alive connection, is a reset
RESET_GRACE = 1.0
#: reasons that mean "the connection was closed under the request", not a certificate decision
_RESET_MARKERS = ("connection_termination", "connection reset", "Server disconnected")


# ---------------------------------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------------------------------
def _window(r: RequestRecord, steps: list[StepResult], broken: Sequence[bool]) -> StepResult:
    """The step a request belongs to: the one during which it ended. While step k is being applied both its state
    and the one before are live (old nginx workers finish their connections, Envoy's pooled connections stay, a
    handshake the pod began before its reload): a request that began before step k was in effect belongs to the step
    before when only that state is broken (in the plan's model)."""
    k = next((i for i in range(len(steps) - 1, -1, -1) if r.end >= steps[i].started), 0)
    s = steps[k]
    if k > 0 and r.start < s.effective and broken[steps[k - 1].index] and not broken[s.index]:
        return steps[k - 1]
    return s


def assign_requests(records: list[RequestRecord], steps: list[StepResult], reloads: list[tuple[float, float]],
            end: float, broken: Sequence[bool]) -> None:
    """Each answered request to its step (:func:`_window`); failures split into rotation failures and resets."""
    for k, s in enumerate(steps):
        s.ended = steps[k + 1].started if k + 1 < len(steps) else end
    for r in records:
        window = _window(r, steps, broken)
        window.requests += 1
        if r.ok:
            continue
        in_reload = any(a <= r.end <= b + RESET_GRACE for a, b in reloads)
        if in_reload and any(m in (r.reason or "") for m in _RESET_MARKERS):
            window.resets.append(r)
        else:
            window.failures.append(r)


def verdict_reasons(static: StaticReport, steps: list[StepResult], final: list[str], load: LoadGenerator, *,
             options: RehearsalOptions, n: int) -> list[str]:
    out = [f"static: {e}" for e in static.errors]
    for s in steps:
        where = s.label if s.step is None else f"step {s.index}/{n} ({s.step.describe()})"
        if s.error:
            out.append(f"{where}: {s.error}")
        if s.failures:
            top = "; ".join(f"{w} ×{c}" for w, c in s.rejections()[:3])
            out.append(f"{where}: {len(s.failures)} failed requests — {top}")
        if s.resets and options.strict_resets:
            out.append(f"{where}: {len(s.resets)} requests reset by an nginx reload (strict)")
        for p in s.probes:
            if p.check.startswith("link") and p.seen == "refused":
                out.append(f"{where}: {p.check}: a new connection is refused — {p.detail}")
            elif not p.matches:
                out.append(f"{where}: probe {p.check} at the {p.hop}: the plan expects {p.expected}, the handshake "
                           f"shows {p.seen} ({p.detail}) — the change did not take effect as planned")
    out += [f"final state: {d}" for d in final]
    if load.worker_errors():
        out.append(f"load generator error: {load.worker_errors()[0]!r}")
    if steps and steps[-1].index < n and not steps[-1].error:
        out.append(f"the rehearsal stopped after step {steps[-1].index} of {n}")
    return out


def final_evidence(final: list[str], last: StepResult) -> list[str]:
    """The final-state gaps, each with what the last probes showed about it: the leaf a hop serves for a "still
    serves" gap, the client certs it accepts for a client-trust gap (no probe shows what a hop presents or which
    roots it trusts for its upstream beyond the link probe, so those gaps stand alone)."""
    out = []
    for gap in final:
        hop = gap.split()[1]
        if " still serves " in gap:
            seen = [f"serves {p.seen}" for p in last.probes if p.hop == hop and p.check == "serves"]
        elif gap.split(" — ")[0].endswith("for client certs"):
            seen = [f"{p.check} {p.seen}" for p in last.probes if p.hop == hop and p.check.startswith("accepts")]
        else:
            seen = []
        out.append(gap + (f" (probe: {', '.join(seen)})" if seen else ""))
    return out


