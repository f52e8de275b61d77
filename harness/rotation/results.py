"""What a rotation rehearsal returns: its options, the probe rows and step results, and the overall result
(figures, verdict lines, the JSON document the report writes)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError
from harness.rotation.load import LoadBounds, LoadSummary, RequestRecord
from harness.rotation.plan import (
    RotationPlan,
    StaticReport,
    Step,
)

__all__ = ["ProbeRow", "RehearsalOptions", "RehearsalResult", "StepResult"]



@dataclass(frozen=True)
class RehearsalOptions:
    duration: float = 30.0  # seconds of load over the whole rehearsal (spread over the baseline and each step)
    workers: int = 4  # load threads (half of them open a new connection per request)
    rate: float | None = 150.0  # total requests per second; None: as fast as the chain answers
    max_requests: int = 200_000
    min_dwell: float = 0.5  # seconds of load after each step at least, whatever the duration
    strict_resets: bool = True  # count requests reset by an nginx reload as failures (pass only with zero failed)
    lint: bool = True  # pkilint in the static checks
    min_days: int = 30  # the next set's certs must be valid this many more days

    def __post_init__(self) -> None:
        if not 0 < self.duration <= 3600:
            raise UsageError(f"rotate: duration {self.duration:g}s — use a positive number up to 3600")
        if not 0 < self.min_dwell <= 60:
            raise UsageError(f"rotate: min_dwell {self.min_dwell:g}s — use 0..60 seconds")
        LoadBounds(workers=self.workers, rate=self.rate, max_requests=self.max_requests)  # same limits, same errors


@dataclass(frozen=True)
class ProbeRow:
    """One probe after one step: what the plan's model expects and what the handshake showed."""

    step: int
    hop: str
    check: str  # "serves", "link apim→ingress", "accepts next:apim-client"
    expected: str
    seen: str
    detail: str = ""  # the probe's outcome, for the table
    sha256: str = ""  # "serves": the fingerprint of the leaf the handshake showed

    @property
    def matches(self) -> bool:
        return self.expected == self.seen

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "hop": self.hop, "check": self.check, "expected": self.expected,
                "seen": self.seen, "matches": self.matches, "detail": self.detail, "sha256": self.sha256}


@dataclass
class StepResult:
    """One window of the rehearsal: the baseline (index 0) or a step, from its start to the next one's."""

    index: int
    step: Step | None
    started: float  # seconds since the load started, when the step began to be applied
    effective: float = 0.0  # when the hot reload (and the recycle) had completed: the step's state is in effect
    ended: float = 0.0
    applied_in: float = 0.0  # seconds the hot reload took (rename + Envoy's ack, or nginx -t + SIGHUP + new workers)
    how: str = ""
    recycled: bool = False  # an extra nginx reload closed apim's pooled connections after the step
    error: str | None = None  # the step could not be applied
    requests: int = 0
    failures: list[RequestRecord] = field(default_factory=list)
    resets: list[RequestRecord] = field(default_factory=list)
    probes: list[ProbeRow] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "before any step" if self.step is None else f"step {self.index}"

    def rejections(self) -> list[tuple[str, int]]:
        """The failures grouped by hop and reason, most frequent first: ``[('ingress 400 "…"', 347)]``."""
        return Counter(r.describe() for r in self.failures).most_common()

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "step": self.step.describe() if self.step else None,
                "started_s": round(self.started, 3), "effective_s": round(self.effective, 3),
                "ended_s": round(self.ended, 3),
                "applied_in_ms": round(self.applied_in * 1000, 1), "how": self.how, "recycled": self.recycled,
                "error": self.error, "requests": self.requests, "failed": len(self.failures),
                "resets": len(self.resets), "rejections": [{"what": w, "count": n} for w, n in self.rejections()],
                "probes": [p.as_dict() for p in self.probes]}


@dataclass
class RehearsalResult:
    plan: RotationPlan
    static: StaticReport
    steps: list[StepResult]
    load: LoadSummary
    records: list[RequestRecord]
    final: list[str]  # how the chain's final state falls short of the goal
    reasons: list[str]  # why it failed; empty when it passed
    chain_start: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def failed_requests(self) -> int:
        return sum(len(s.failures) for s in self.steps)

    @property
    def resets(self) -> int:
        return sum(len(s.resets) for s in self.steps)

    def figures(self) -> dict[str, Any]:
        applied = [s.applied_in for s in self.steps if s.step is not None and s.error is None]
        nginx = [s.applied_in for s in self.steps if s.step is not None and s.step.hop == "ingress"]
        envoy = [s.applied_in for s in self.steps if s.step is not None and s.step.hop in ("gateway", "apim")]
        pod = [s.applied_in for s in self.steps if s.step is not None and s.step.hop == "pod"]
        return {
            "requests": self.load.requests,
            "failed_requests": self.failed_requests,
            "reload_resets": self.resets,
            "duration_s": round(self.load.duration, 3),
            "rate_per_s": round(self.load.rate, 1),
            "workers": self.load.workers,
            "by_mode": dict(self.load.by_mode),
            "steps": len(self.plan.steps),
            "chain_start_ms": round(self.chain_start * 1000, 1),
            "reload_ms_max": round(max(applied, default=0.0) * 1000, 1),
            "nginx_reload_ms": [round(x * 1000, 1) for x in nginx],
            "envoy_sds_ms": [round(x * 1000, 1) for x in envoy],
            "pod_reload_ms": [round(x * 1000, 1) for x in pod],
        }

    def verdict_lines(self) -> list[str]:
        f = self.figures()
        head = "PASS" if self.passed else "FAIL"
        lines = [f"rehearsal {head}: plan {self.plan.name!r}, {f['steps']} steps, {f['requests']} requests in "
                 f"{f['duration_s']:.1f} s ({f['rate_per_s']:.0f}/s through four hops), "
                 f"{f['failed_requests']} failed, {f['reload_resets']} reset by an nginx reload"]
        lines += [f"  - {r}" for r in self.reasons]
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons), "plan": self.plan.name,
                "plan_source": self.plan.source, "figures": self.figures(), "static": self.static.as_dict(),
                "steps": [s.as_dict() for s in self.steps], "final_state": list(self.final),
                "failed_requests": [r.as_dict() for s in self.steps for r in s.failures],
                "reload_resets": [r.as_dict() for s in self.steps for r in s.resets]}


