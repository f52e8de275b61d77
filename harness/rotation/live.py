"""The live part of a rotation rehearsal: the local chain on the current set, load through all four hops, each
step applied by hot reload, and the probes after each step (docs/rotation.md; the overview is
:mod:`harness.rotation.rehearsal`)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness.errors import HarnessError, UsageError
from harness.model.topology import HopName, Topology, default_topology
from harness.pki.certset import CertSet
from harness.probe.handshake import probe
from harness.probe.result import ProbeResult
from harness.rotation.load import LoadBounds, LoadGenerator, LoadTarget, attribute_response
from harness.rotation.plan import (
    LINKS,
    ROTATABLE_HOPS,
    CertPair,
    ChainState,
    Ref,
    RotationPlan,
    Step,
    accepts,
    client_trust,
    link_problems,
)
from harness.rotation.results import ProbeRow, RehearsalOptions, StepResult
from harness.runtime.envoy import rotate_envoy_secret
from harness.targets.base import RunningChain
from harness.targets.local import HOST, LocalTarget

__all__ = ["DWELL_GRACE", "LiveRun", "LiveSetup", "rehearsal_topology", "rehearsal_workdir"]

#: seconds a step's load may run past its window while no request has been answered since the step began
DWELL_GRACE = 2.0


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
def rehearsal_workdir(given: Path | None) -> Iterator[Path]:
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
class LiveSetup:
    target: LocalTarget
    chain: RunningChain
    pair: CertPair
    topology: Topology
    plan: RotationPlan
    states: Sequence[ChainState]
    options: RehearsalOptions


class LiveRun:
    def __init__(self, setup: LiveSetup, say: Callable[[str], None]) -> None:
        self.target, self.chain, self.pair, self.topology = setup.target, setup.chain, setup.pair, setup.topology
        self.plan, self.states, self.options, self.say = setup.plan, setup.states, setup.options, say
        self.client_trust = self.pair.trust_bundle(*(str(r) for r in client_trust(self.topology)))
        self.reloads: list[tuple[float, float]] = []  # nginx reload windows, seconds since the load started
        self.nginx = self.target.nginx_config()

    # -- applying ----------------------------------------------------------------------------------------------
    def _reload_nginx(self, load: LoadGenerator, state: ChainState | None) -> float:
        from harness.runtime.nginx import reload_nginx, render_ingress

        t0 = time.perf_counter()
        start = load.now()
        if state is not None:
            assert self.target.workdir is not None
            self.nginx = render_ingress(_ingress_topology(self.topology, state), self.pair,
                                      listen=(HOST, self.target.ports["ingress"]),
                                      pod=(HOST, self.target.ports["pod"]), workdir=self.target.workdir / "ingress")
        try:
            reload_nginx(self.nginx, self.target.pid("ingress"))
        finally:
            self.reloads.append((start, load.now()))
        return time.perf_counter() - t0

    def _apply(self, step: Step, state: ChainState, load: LoadGenerator) -> tuple[str, float]:
        from harness.render.envoy import SecretName

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


