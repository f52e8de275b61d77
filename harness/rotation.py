"""The certificate rotation rehearsal: apply a rotation plan to the real local chain under load, and judge it.

    result = rehearse(load_cert_set(cur), load_cert_set(nxt), plan=None, options=RehearsalOptions(duration=30))
    result.passed, result.verdict_lines()

1. Static checks (:func:`~harness.rotation_plan.static_checks`): the next set against the chain (chain to each
   consumer's anchor, SANs, EKU, expiry window, key match, lint) and the plan walked step by step on a model of the
   chain — which link a new connection would break at which step, and what the final state lacks.
2. Live: the local chain (real Envoy ×2, real nginx, the echo pod) starts on the current set; a bounded load
   (:mod:`harness.load`: keep-alive and new-connection workers) runs through all four hops; each step is applied by
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

import contextlib
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.load import LoadBounds, LoadGenerator, LoadSummary, LoadTarget, RequestRecord, attribute_response
from harness.pki import CertSet
from harness.probe import ProbeResult, probe
from harness.rotation_plan import (
    LINKS,
    ROTATABLE_HOPS,
    CertPair,
    ChainState,
    Ref,
    RotationPlan,
    StaticReport,
    Step,
    accepts,
    client_trust,
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
from harness.targets.base import RunningChain
from harness.targets.local import HOST, LocalTarget
from harness.topology import HopName, Topology, default_topology

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

#: a failed request this soon after an nginx reload ended, reset by the closing keep-alive connection, is a reset
RESET_GRACE = 1.0
#: seconds a step's load may run past its window while no request has been answered since the step began
DWELL_GRACE = 2.0
#: reasons that mean "the connection was closed under the request", not a certificate decision
_RESET_MARKERS = ("connection_termination", "connection reset", "Server disconnected")


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


# ---------------------------------------------------------------------------------------------------------------
# set-up
# ---------------------------------------------------------------------------------------------------------------
def rehearsal_topology(current: CertSet) -> Topology:
    """The default chain over the current set's PKI plan (the set must have every name the chain uses)."""
    topology = default_topology(current.plan.key_type)
    have = {c.name for c in current.plan.cas} | {lf.name for lf in current.plan.leaves}
    missing = sorted(({c.name for c in topology.pki.cas} | {lf.name for lf in topology.pki.leaves}) - have)
    if missing:
        raise UsageError(f"{current.directory}: the set has no {missing[0]!r}, which the chain uses — generate the "
                         "sets with `mtls-harness certs generate DIR`")
    return topology.replace(pki=current.plan)


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    tmp = Path(tempfile.mkdtemp(prefix="mtls-harness-rotate-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ingress_topology(topology: Topology, state: ChainState) -> Topology:
    """The topology whose ingress Secrets hold what ``state`` says the ingress has (names of the cert pair)."""
    ing = topology.ingress
    primary, hs = ing.primary, state["ingress"]
    auth = ing.secret(primary.annotation("auth-tls-secret") or "")
    proxy = ing.secret(primary.annotation("proxy-ssl-secret") or "")
    tls_secret = ing.secret(primary.tls_secret)
    secrets = []
    for sec in ing.secrets:
        tls = f"current:{sec.tls}" if sec.tls else None
        ca = tuple(f"current:{c}" for c in sec.ca)
        if sec is tls_secret:
            tls = str(hs.serve)
        if sec is auth and sec.ca:
            ca = tuple(str(r) for r in hs.clients)
        if sec is proxy:
            tls = str(hs.present) if sec.tls and hs.present else tls
            ca = tuple(str(r) for r in hs.upstream) if sec.ca and hs.upstream else ca
        crl = f"{ca[0].partition(':')[0] if ca else 'current'}:{sec.crl}" if sec.crl else None
        secrets.append(replace(sec, tls=tls, ca=ca, crl=crl))
    return topology.replace(ingress=replace(ing, secrets=tuple(secrets), server_cert=str(hs.serve)))


# ---------------------------------------------------------------------------------------------------------------
# the live part
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _ProbeJob:
    check: str  # "link apim→ingress" or "accepts next:apim-client"
    callee: HopName  # the hop probed
    trust: Path | None  # the caller's trust for the callee's server cert (None: the caller does not verify)
    identity: Ref | None  # the client cert presented
    caller: str | None = None  # set for a link probe


@dataclass
class _Setup:
    target: LocalTarget
    chain: RunningChain
    pair: CertPair
    topology: Topology
    plan: RotationPlan
    states: Sequence[ChainState]
    options: RehearsalOptions


class _Live:
    def __init__(self, setup: _Setup, say: Callable[[str], None]) -> None:
        self.target, self.chain, self.pair, self.topology = setup.target, setup.chain, setup.pair, setup.topology
        self.plan, self.states, self.options, self.say = setup.plan, setup.states, setup.options, say
        self.client_trust = self.pair.trust_bundle(*(str(r) for r in client_trust(self.topology)))
        self.reloads: list[tuple[float, float]] = []  # nginx reload windows, seconds since the load started
        self.nginx = self.target.nginx_config()

    # -- applying ----------------------------------------------------------------------------------------------
    def _reload_nginx(self, load: LoadGenerator, state: ChainState | None) -> float:
        from harness.render.nginx import reload_nginx, render_nginx

        t0 = time.perf_counter()
        start = load.now()
        if state is not None:
            assert self.target.workdir is not None
            self.nginx = render_nginx(_ingress_topology(self.topology, state), self.pair,
                                      listen=(HOST, self.target.ports["ingress"]),
                                      pod=(HOST, self.target.ports["pod"]), workdir=self.target.workdir / "ingress")
        try:
            reload_nginx(self.nginx, self.target.pid("ingress"))
        finally:
            self.reloads.append((start, load.now()))
        return time.perf_counter() - t0

    def _apply(self, step: Step, state: ChainState, load: LoadGenerator) -> tuple[str, float]:
        from harness.render.envoy import SecretName, rotate_envoy_secret

        if step.hop == "ingress":
            return "nginx re-render + SIGHUP", self._reload_nginx(load, state)
        hs = state[step.hop]
        if step.hop == "pod":
            t0 = time.perf_counter()
            self.target.reload_pod(self.pair.leaf(str(hs.serve)),
                                   self.pair.trust_bundle(*(str(r) for r in hs.clients)) if hs.clients else None)
            return "pod files + SIGHUP", time.perf_counter() - t0
        which: SecretName
        source: Any
        if step.action == "serve":
            which, source = "server", self.pair.leaf(str(hs.serve))
        elif step.action == "present-client-cert":
            which, source = "upstream-client", self.pair.leaf(str(hs.present))
        elif step.side == "clients":
            which, source = "client-ca", self.pair.trust_bundle(*(str(r) for r in hs.clients))
        else:
            which, source = "upstream-ca", self.pair.trust_bundle(*(str(r) for r in hs.upstream))
        t0 = time.perf_counter()
        rotate_envoy_secret(self.target.envoy_config(step.hop), which, source, wait=10.0)
        return f"Envoy SDS rename ({which})", time.perf_counter() - t0

    # -- probing -----------------------------------------------------------------------------------------------
    def _identity(self, ref: Ref | None) -> tuple[Path | None, Path | None]:
        if ref is None:
            return None, None
        leaf = self.pair.leaf(str(ref))
        return leaf.chain, leaf.key

    def _run_probe(self, job: _ProbeJob) -> ProbeResult:
        ep = self.chain.endpoint(job.callee)
        cert, key = self._identity(job.identity)
        return probe(ep.host, ep.port, server_name=self.topology.caller_of(job.callee).hostname, trust=job.trust,
                     verify=job.trust is not None, timeout=5.0, client_cert=cert, client_key=key)

    @staticmethod
    def _refused_by(result: ProbeResult, callee: str) -> str | None:
        """Why ``callee`` (or its caller, refusing its cert) refused the connection; None when it let it through.
        A 5xx answer is the callee passing on a failure further down the chain (the ingress's 502 when the pod
        refuses it): the callee took the connection and the cert, and the probe of the next link shows the break."""
        o = result.outcome
        if o.kind == "ok":
            return None
        if result.status is None:
            return str(o)
        if result.status >= 500:
            return None
        hop, reason, _ = attribute_response(result.status, result.headers, result.body)
        return None if hop not in (callee, "unknown") else f'{hop} {result.status} "{reason}"'

    def _jobs(self, state: ChainState) -> list[_ProbeJob]:
        jobs: list[_ProbeJob] = []
        for caller, callee in LINKS:
            if caller == "client":
                cc = self.topology.client.client_cert
                jobs.append(_ProbeJob(f"link {caller}→{callee}", callee, self.client_trust,
                                      Ref("current", cc) if cc else None, caller=caller))
                continue
            hs = state[caller]  # type: ignore[index]
            trust = self.pair.trust_bundle(*(str(r) for r in hs.upstream)) if hs.upstream else None
            jobs.append(_ProbeJob(f"link {caller}→{callee}", callee, trust, hs.present, caller=caller))
        for hop in ROTATABLE_HOPS:
            caller_leaf = self.topology.caller_of(hop).client_cert
            if not state[hop].clients or caller_leaf is None:
                continue
            served_root = self.pair.root(state[hop].serve).name
            both = self.pair.trust_bundle(f"current:{served_root}", f"next:{served_root}")
            for ref in (Ref("current", caller_leaf), Ref("next", caller_leaf)):
                jobs.append(_ProbeJob(f"accepts {ref}", hop, both, ref))
        return jobs

    def probes(self, index: int, state: ChainState) -> list[ProbeRow]:
        jobs = self._jobs(state)
        with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="rotation-probe") as pool:
            results = list(pool.map(self._run_probe, jobs))
        model = {(p.caller, p.callee) for p in link_problems(state, self.topology, self.pair)}
        rows: list[ProbeRow] = []
        for job, result in zip(jobs, results, strict=True):
            refused = self._refused_by(result, job.callee)
            detail = refused or str(result.outcome)
            if job.caller is not None:
                sha = result.peer_chain[0].sha256 if result.peer_chain else ""
                rows.append(ProbeRow(index, job.callee, "serves", str(state[job.callee].serve),
                                     self.pair.identify(sha), detail=str(result.outcome), sha256=sha))
                want = "refused" if (job.caller, job.callee) in model else "connects"
                rows.append(ProbeRow(index, job.callee, job.check, want,
                                     "connects" if refused is None else "refused", detail=detail))
            else:
                assert job.identity is not None
                want = "accepted" if accepts(state, job.callee, job.identity, self.pair) else "rejected"
                rows.append(ProbeRow(index, job.callee, job.check, want,
                                     "accepted" if refused is None else "rejected", detail=detail))
        return rows

    # -- the run -----------------------------------------------------------------------------------------------
    def _dwell(self, load: LoadGenerator, until: float, answered_before: int) -> None:
        """Keep the load on until ``until`` and until at least one request has been answered since the step began
        (``answered_before`` were answered then): on a loaded machine a slow apply and its probes can use up a short
        window before any request completes, and a step with no load would prove nothing. At most
        :data:`DWELL_GRACE` seconds beyond ``until``."""
        next_tick = load.now() + 2.0
        hard = until + DWELL_GRACE

        def more() -> bool:
            now = load.now()
            return now < until or (now < hard and load.counts()[0] <= answered_before)

        while load.running and more():
            time.sleep(max(0.0, min(0.1, hard - load.now())))
            if load.now() >= next_tick:
                total, failed = load.counts()
                self.say(f"    {load.now():5.1f} s: {total} requests, {failed} failed")
                next_tick += 2.0

    @staticmethod
    def _needs_recycle(step: Step) -> bool:
        """A step that can break apim's new connections to the ingress (adding trust cannot)."""
        return step.hop == "apim" and step.action in ("present-client-cert", "untrust") and step.side != "clients"

    def run(self) -> tuple[list[StepResult], LoadGenerator]:
        n = len(self.plan.steps)
        window = max(self.options.min_dwell, self.options.duration / (n + 1))
        # the load's own hard bound: the planned duration plus room for slow reloads and probes
        bound = min(3600.0, self.options.duration + 10.0 * n + 30.0)
        entry = self.chain.entry
        cc = self.topology.client.client_cert
        cert, key = self._identity(Ref("current", cc) if cc else None)
        target = LoadTarget(entry.host, entry.port, entry.server_name, self.client_trust, cert, key)
        bounds = LoadBounds(workers=self.options.workers, duration=bound, max_requests=self.options.max_requests,
                            rate=self.options.rate)
        results: list[StepResult] = []
        with LoadGenerator(target, bounds) as load:
            base = StepResult(0, None, started=0.0, probes=self.probes(0, self.states[0]))
            results.append(base)
            self.say(f"  baseline: {self._probe_line(base)}")
            self._dwell(load, window, 0)
            for i, step in enumerate(self.plan.steps, 1):
                if not load.running:
                    results[-1].error = f"the load stopped at its bound ({load.stopped_by}) before step {i}"
                    break
                res = StepResult(i, step, started=load.now())
                results.append(res)
                total, failed = load.counts()
                self.say(f"step {i}/{n}: {step.describe()} ({total} requests so far, {failed} failed)")
                try:
                    res.how, res.applied_in = self._apply(step, self.states[i], load)
                    if self._needs_recycle(step):
                        self._reload_nginx(load, None)
                        res.recycled = True
                    res.effective = load.now()
                except HarnessError as exc:
                    res.error = f"could not apply: {exc}".splitlines()[0]
                    res.effective = load.now()
                    self.say(f"  {res.error}")
                    self._dwell(load, res.started + window, total)
                    break
                res.probes = self.probes(i, self.states[i])
                self.say(f"  applied in {res.applied_in * 1000:.0f} ms by {res.how}"
                         f"{' (+ nginx reload to recycle apim connections)' if res.recycled else ''}; "
                         f"{self._probe_line(res)}")
                self._dwell(load, res.started + window, total)
            load.stop()
        return results, load

    @staticmethod
    def _probe_line(res: StepResult) -> str:
        serves = ", ".join(f"{p.hop} {p.seen}" for p in res.probes if p.check == "serves")
        acc = ", ".join(f"{p.check.removeprefix('accepts ')} {p.seen} by the {p.hop}" for p in res.probes
                        if p.check.startswith("accepts"))
        bad = sum(not p.matches for p in res.probes)
        return f"serves: {serves}; {acc}" + (f"; {bad} probe(s) disagree with the plan" if bad else "")


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


def _assign(records: list[RequestRecord], steps: list[StepResult], reloads: list[tuple[float, float]],
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


def _reasons(static: StaticReport, steps: list[StepResult], final: list[str], load: LoadGenerator, *,
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


def _final_evidence(final: list[str], last: StepResult) -> list[str]:
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


def rehearse(current: CertSet, nxt: CertSet, plan: RotationPlan | None = None, *,
             topology: Topology | None = None, options: RehearsalOptions | None = None,
             workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> RehearsalResult:
    """Rehearse rotating the chain from ``current`` to ``nxt`` by ``plan`` (default: :func:`default_plan`)."""
    options = options or RehearsalOptions()
    say = progress or (lambda _line: None)
    topology = topology or rehearsal_topology(current)
    with _workdir(workdir) as wd:
        pair = CertPair(current, nxt, wd / "certs")
        plan = plan or default_plan(topology, pair)
        states = simulate(plan, topology)
        static = static_checks(pair, topology, plan, states, lint=options.lint, min_days=options.min_days)
        say(f"plan {plan.name!r}: {len(plan.steps)} steps; static checks: {len(static.errors)} errors, "
            f"{len(static.warnings)} warnings, {len(static.predicted)} predicted broken links, "
            f"{len(static.final)} final-state gaps")
        for i, p in static.predicted:
            say(f"  predicted: {'before any step' if i == 0 else f'step {i}'}: {p}")
        t0 = time.perf_counter()
        target = LocalTarget(topology, certs=current, workdir=wd / "chain")
        with target as chain:
            chain_start = time.perf_counter() - t0
            say(f"chain up in {chain_start * 1000:.0f} ms; load: {options.workers} workers, "
                f"{options.rate or 'unpaced'} requests/s, {options.duration:g} s")
            live = _Live(_Setup(target, chain, pair, topology, plan, states, options), say)
            steps, load = live.run()
        records = load.records()
        broken = [bool(link_problems(st, topology, pair)) for st in states]
        _assign(records, steps, live.reloads, max((r.end for r in records), default=0.0), broken)
        applied = states[steps[-1].index] if steps else states[0]
        final = state_differences(applied, goal_state(topology, plan_scope(plan, topology)), pair)
        final = _final_evidence(final, steps[-1]) if steps else final
        reasons = _reasons(static, steps, final, load, options=options, n=len(plan.steps))
        return RehearsalResult(plan=plan, static=static, steps=steps, load=load.summary(), records=records,
                               final=final, reasons=reasons, chain_start=chain_start)
