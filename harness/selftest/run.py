"""Running the case catalogue on the local chain, unmutated and once per mutant.

One local chain per run, with every case's variant served beside it as a lane of the same processes
(:mod:`harness.targets.lanes`): a case on a variant probes its lane, and nothing restarts or reloads while the
catalogue runs. A variant that cannot be a lane (``LocalTarget.lane_plan.dropped`` says why) is reached by
``reconfigure`` instead, as before lanes.

The order: cases on the chain as it is first, then the variants that change only the ingress, then the rest — each
group in catalogue order (the order in which changes reach a real chain; with lanes it no longer decides what runs
where). A proxy that would resume a TLS session across its next hop's certificate change is caught without a reload:
``apim-makes-a-full-handshake-on-every-new-connection-to-the-ingress`` runs on a lane whose ingress closes every
connection and reads nginx's ``$ssl_session_reused`` for each new one.

A mutant is **caught** when a case that passed on the unmutated chain (the baseline, run first in the same order)
fails on the mutated one. The baseline is of the chain with the mutant's ingress (``Mutant.ingress``): a mutant of
the Gateway API twin is judged against the catalogue on ``default_topology().on_gateway_api()``, run once, when the
first such mutant needs it, and kept with the reference baseline (``CatalogueRun.others``). There the cases whose
verdict is a finding the twin's configuration predicts (what the migration cannot carry over) are no baseline pass:
they judge no mutant.

A render mutant whose edit never found its text is **not applied** (the renderer moved on; the mutant must be
updated); a mutated chain that does not start, or one whose baseline errs or has a failed case, is an **error**.
Either is a failed self-test.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness.cases.model import Case, Skip, lane_entries, lanes_for, run_case
from harness.errors import HarnessError
from harness.findings.predict import predict
from harness.model.topology import KeyType, Topology
from harness.selftest.mutants import Mutant
from harness.targets.base import RunningChain, lane_key
from harness.targets.local import LocalTarget

__all__ = ["CatalogueRun", "MutantResult", "Status", "order_cases", "run_catalogue", "run_mutant", "select_cases"]

Status = Literal["caught", "misjudged", "survived", "not-applied", "error"]


@dataclass
class CatalogueRun:
    """The outcome of one catalogue run: the ids of the cases that passed, failed or skipped (with the reason)."""

    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)  # failed case id → the runner's message
    #: finding id → the cases whose verdict was that finding (the weakness the chain's configuration predicts, seen)
    findings: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None  # the chain could not start or change
    ingress: str = "ingress-nginx"  # the ingress of the chain it ran on (``Ingress.kind``)
    #: as a baseline: the same cases' baselines on the chains with another ingress (kind → run), each run when the
    #: first mutant of that ingress needs it (:func:`run_mutant`)
    others: dict[str, CatalogueRun] = field(default_factory=dict)

    @property
    def ran(self) -> int:
        return len(self.passed) + len(self.failed) + sum(len(v) for v in self.findings.values())

    def summary(self) -> str:
        found = sum(len(v) for v in self.findings.values())
        return (f"{len(self.passed)} passed, {len(self.failed)} failed, " + (f"{found} findings, " if found else "")
                + f"{len(self.skipped)} skipped ({self.seconds:.1f} s)")


@dataclass
class MutantResult:
    mutant: Mutant
    status: Status
    run: CatalogueRun
    caught_by: list[str]  # cases that passed on the baseline and fail here
    edits: int = 0  # how many rendered files or command lines a render mutant changed
    #: the findings the mutated chain's configuration has (id → the setting), predicted from its model
    predicted: dict[str, str] = field(default_factory=dict)

    @property
    def caught_as(self) -> Literal["finding", "failure"] | None:
        """How the catalogue saw it: a CONFIG mutant must show as a FINDING (the weakness its settings predict,
        observed), a RENDER mutant as a FAILURE (the emulation no longer does what the chain says)."""
        if self.run.findings:
            return "finding"
        return "failure" if self.caught_by else None

    def describe(self) -> str:
        if self.status in ("caught", "misjudged"):
            failed = (f"failed {len(self.caught_by)} of {self.run.ran} cases: {_shown(self.caught_by)}"
                      if self.caught_by else "")
            found = "; ".join(f"FINDING {fid} ({self.predicted.get(fid, '?')}) observed by {len(ids)} cases: "
                              f"{_shown(ids)}" for fid, ids in self.run.findings.items())
            text = f"caught as {found}" + (f"; also {failed}" if failed else "") if found else f"caught: {failed}"
            if self.status == "misjudged":
                want = "a FINDING" if self.mutant.kind == "config" else "a FAILURE, with no finding"
                return f"MISJUDGED: a {self.mutant.kind} mutant must be caught as {want} — {text}"
            return text
        if self.status == "survived":
            return f"NOT CAUGHT: all {self.run.ran} cases passed" + (
                f" (pending: {self.mutant.pending})" if self.mutant.pending else "")
        if self.status == "not-applied":
            return ("NOT APPLIED: its edit found nothing to change in any rendered file or command line — update "
                    "the mutant to what the renderer writes now")
        return f"ERROR: {self.run.error}"


def _shown(ids: Sequence[str]) -> str:
    return ", ".join(ids[:4]) + (f", … (+{len(ids) - 4})" if len(ids) > 4 else "")


def select_cases(catalogue: Sequence[Case], include: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[Case]:
    """The cases whose id matches any ``include`` pattern (all when none) and no ``exclude`` pattern (fnmatch)."""
    inc, exc = list(include), list(exclude)
    return [c for c in catalogue
            if (not inc or any(fnmatch.fnmatchcase(c.id, p) for p in inc))
            and not any(fnmatch.fnmatchcase(c.id, p) for p in exc)]


def _group(case: Case, base: Topology) -> int:
    if case.variant is None:
        return 0
    changed = case.variant(base)
    only_ingress = (changed.replace(ingress=base.ingress) == base) if changed.ingress != base.ingress else False
    return 1 if only_ingress or changed == base else 2


def order_cases(cases: Sequence[Case], base: Topology) -> list[Case]:
    """The run order (module docstring): the chain as it is, then ingress-only variants, then the rest."""
    return sorted(cases, key=lambda c: _group(c, base))  # sorted() is stable: catalogue order within a group


class _Tamper:
    """A render mutant's edit as a :class:`~harness.targets.local.Tamper`, counting the edits that changed
    something."""

    def __init__(self, mutant: Mutant) -> None:
        assert mutant.edit is not None
        self._edit = mutant.edit
        self.edits = 0

    def __call__(self, hop: str, config: Path | None, argv: list[str]) -> list[str]:
        argv, changed = self._edit(hop, config, argv)
        self.edits += changed
        return argv


def run_catalogue(cases: Sequence[Case], base: Topology, *, tamper: _Tamper | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> CatalogueRun:
    """Run ``cases`` in :func:`order_cases` order on one local chain whose model is ``base``, every case's variant
    served beside it as a lane of the same processes (harness.targets.lanes), so no case restarts anything."""
    out = CatalogueRun(ingress=base.ingress.kind)
    t0 = time.perf_counter()
    variants, hosts = lanes_for(cases, base)
    target = LocalTarget(base, tamper=tamper, lanes=variants, lane_hosts=hosts, lane_entries=lane_entries(cases, base))
    try:
        chain = target.__enter__()
    except HarnessError as exc:
        out.error = f"the chain did not start: {exc}"
        out.seconds = time.perf_counter() - t0
        return out
    current = [base]

    def switch(topology: Topology) -> RunningChain:
        assert target.chain is not None
        lane = target.chain.lanes.get(lane_key(topology))
        if lane is not None and lane.evicted is None:
            return lane
        if topology != current[0]:
            target.reconfigure(topology)  # a variant that could not be a lane (target.lane_plan.dropped says why)
            current[0] = topology
        assert target.chain is not None
        return target.chain

    try:
        for case in order_cases(cases, base):
            try:
                # a variant case reads the base model from the chain it is given and asks switch() for its variant:
                # the handle from the start carries the base model (it is not probed); the others probe the chain
                # switched back to the base
                result = run_case(case, chain if case.variant is not None else switch(base), switch)
            except Skip as exc:
                out.skipped[case.id] = str(exc)
                continue
            if result.verdict == "finding" and result.finding is not None:
                out.findings.setdefault(result.finding.id, []).append(case.id)
            elif result.passed:
                out.passed.append(case.id)
            else:
                out.failed.append(case.id)
                out.messages[case.id] = result.message
            progress({"passed": ".", "failed": "F", "finding": "!"}[result.verdict])
    except HarnessError as exc:
        out.error = f"the chain could not be changed into a case's variant: {exc}"
    finally:
        target.__exit__(None, None, None)
        out.seconds = time.perf_counter() - t0
    return out


def _baseline_for(mutant: Mutant, cases: Sequence[Case], baseline: CatalogueRun, key_type: KeyType,
                  progress: Callable[[str], None]) -> CatalogueRun:
    """The baseline of the chain ``mutant`` is applied to: ``baseline`` when it ran on the same ingress, else the one
    kept in ``baseline.others``, run now if no mutant needed it before."""
    if mutant.ingress == baseline.ingress:
        return baseline
    if mutant.ingress not in baseline.others:
        progress(f"baseline on the unmutated {mutant.ingress} chain: ")
        own = run_catalogue(cases, mutant.unmutated(key_type), progress=progress)
        progress(f" {own.summary()}; mutated: ")
        baseline.others[mutant.ingress] = own
    return baseline.others[mutant.ingress]


def _baseline_problem(baseline: CatalogueRun) -> str | None:
    if baseline.error is not None:
        return f"the baseline on the unmutated {baseline.ingress} chain failed: {baseline.error}"
    if baseline.failed:
        return (f"{len(baseline.failed)} cases fail on the unmutated {baseline.ingress} chain, so no mutant of it can "
                f"be judged: {_shown(baseline.failed)} — " + baseline.messages[baseline.failed[0]].splitlines()[0])
    return None


def run_mutant(mutant: Mutant, cases: Sequence[Case], baseline: CatalogueRun, *, key_type: KeyType = "ecdsa",
               progress: Callable[[str], None] = lambda _: None) -> MutantResult:
    """Apply ``mutant`` to the local chain with its ingress, run ``cases`` on it, and judge it against the baseline
    of that chain (``baseline``, or one run for the mutant's ingress and kept in ``baseline.others``)."""
    own = _baseline_for(mutant, cases, baseline, key_type, progress)
    if (problem := _baseline_problem(own)) is not None:
        return MutantResult(mutant, "error", CatalogueRun(error=problem, ingress=own.ingress), [])
    base = mutant.mutated(key_type)
    tamper = _Tamper(mutant) if mutant.edit is not None else None
    run = run_catalogue(cases, base, tamper=tamper, progress=progress)
    passed_before = set(own.passed)
    caught_by = [c for c in run.failed if c in passed_before]
    run.findings = {fid: kept for fid, ids in run.findings.items() if (kept := [c for c in ids if c in passed_before])}
    edits = tamper.edits if tamper is not None else 0
    predicted = {f.id: f.setting.text for f in predict(base)}
    result = MutantResult(mutant, "survived", run, caught_by, edits, predicted)
    if run.error is not None:
        result.status = "error"
    elif tamper is not None and edits == 0:
        result.status = "not-applied"
    elif result.caught_as is not None:
        wanted = "finding" if mutant.kind == "config" else "failure"
        result.status = "caught" if result.caught_as == wanted else "misjudged"
    return result
