"""``mtls-harness selftest``: break the local chain on purpose, one named way at a time, and show that the case
catalogue catches each break.

    mtls-harness selftest [--list] [--only NAME]... [--case PATTERN]... [--exclude-case PATTERN]... [--json]
                          [--allow-pending]

First the catalogue runs on the unmutated local chain (the baseline: every case must pass there), then once per
mutant (harness.selftest.mutants). Progress goes to stderr; the result table (or, with ``--json``, one JSON document)
to stdout.

Exit codes: 0 every mutant was caught; 1 a mutant survived (not caught), was not applied, or its chain did not start,
or the baseline failed; 2 bad input (an unknown mutant name, a case pattern that matches no case); 130 interrupted.
``--allow-pending`` lets a mutant that declares why it survives today (``pending``) survive without failing the run —
and fails the run when such a mutant is caught, so the stale note gets removed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.selftest.run import CatalogueRun, MutantResult

__all__ = ["SCHEMA", "cmd_selftest", "register", "verdict"]

SCHEMA = "mtls-harness/selftest/1"
_EXAMPLES = """examples:
  mtls-harness selftest --list                    the mutants, their kind and what each breaks
  mtls-harness selftest                           every mutant (CI: add --allow-pending)
  mtls-harness selftest --only ingress-crl-dropped --json
  mtls-harness selftest --only gateway-upstream-ca-unchecked --case 'gateway-refuses-apim-cert-*'"""


def _names(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def register(subparsers: Any) -> None:
    """Add ``selftest`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "selftest", help="apply named misconfigurations to the local chain and show the case catalogue catches each",
        description="Run the case catalogue on the unmutated local chain, then once per mutant (a named\n"
                    "misconfiguration: a config mutant changes the chain's model, a render mutant edits what the\n"
                    "renderers wrote), and report which mutants the catalogue caught, with the failing case ids.\n"
                    "Exit 0: all caught; 1: a mutant survived, was not applied or did not start, or the baseline\n"
                    "failed; 2: bad input.",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--only", action="append", type=_names, default=[], metavar="NAME",
                   help="run only this mutant (repeat, or comma-separate; see --list)")
    p.add_argument("--case", action="append", default=[], metavar="PATTERN",
                   help="run only the catalogue cases whose id matches (fnmatch, e.g. 'ingress-*'; repeatable)")
    p.add_argument("--exclude-case", action="append", default=[], metavar="PATTERN",
                   help="leave out the catalogue cases whose id matches (fnmatch; repeatable)")
    p.add_argument("--json", action="store_true",
                   help=f"print one JSON document (schema {SCHEMA}) instead of the table")
    p.add_argument("--allow-pending", action="store_true",
                   help="a mutant with a pending note (it survives until a known case lands) may survive; such a "
                        "mutant that is caught fails the run (remove its note)")
    p.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                   help="key type of the cert set (default: ecdsa)")
    p.set_defaults(func=cmd_selftest)


def _list(json_out: bool) -> int:
    from harness.selftest.mutants import MUTANTS

    if json_out:
        print(json.dumps({"schema": SCHEMA, "mutants": [
            {"name": m.name, "kind": m.kind, "hop": m.hop, "ingress": m.ingress, "what": m.what, "why": m.why,
             "pending": m.pending}
            for m in MUTANTS]}, indent=2))
        return 0
    width = max(len(m.name) for m in MUTANTS)
    for m in MUTANTS:
        print(f"{m.name:<{width}}  {m.kind:<6}  {m.what}" + ("  [pending]" if m.pending else ""))
    return 0


def _progress(text: str) -> None:
    print(text, end="", file=sys.stderr, flush=True)


def verdict(result: MutantResult, allow_pending: bool) -> str | None:
    """Why this mutant fails the self-test, or None."""
    pending = result.mutant.pending
    if result.status == "caught":
        if allow_pending and pending:
            return "caught although it is marked pending — remove its pending note in harness/selftest/mutants.py"
        return None
    if result.status == "survived" and allow_pending and pending:
        return None
    return result.describe()


def cmd_selftest(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args.json)
    from harness.cases.catalogue import CATALOGUE
    from harness.model.topology import default_topology
    from harness.selftest.mutants import MUTANTS
    from harness.selftest.run import run_catalogue, run_mutant, select_cases

    known = {m.name: m for m in MUTANTS}
    wanted = [n for group in args.only for n in group]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(f"--only {','.join(unknown)}: no such mutant — see `mtls-harness selftest --list` "
                         f"(known: {', '.join(known)})")
    mutants = [known[n] for n in dict.fromkeys(wanted)] if wanted else list(MUTANTS)
    ids = {c.id for c in CATALOGUE}
    for option, patterns in (("--case", args.case), ("--exclude-case", args.exclude_case)):
        for pattern in patterns:
            if not select_cases(CATALOGUE, include=[pattern]):
                raise UsageError(f"{option} {pattern!r}: matches none of the {len(ids)} case ids — give an fnmatch "
                                 "pattern of case ids, e.g. 'ingress-rejects-*'")
    cases = select_cases(CATALOGUE, include=args.case, exclude=args.exclude_case)
    if not cases:
        raise UsageError("--case/--exclude-case leave no case to run — widen --case or narrow --exclude-case")

    t0 = time.perf_counter()
    _progress(f"baseline (unmutated chain), {len(cases)} cases: ")
    baseline = run_catalogue(cases, default_topology(args.key_type), progress=_progress)
    _progress(f" {len(baseline.passed)} passed, {len(baseline.failed)} failed, {len(baseline.skipped)} skipped "
              f"({baseline.seconds:.1f} s)\n")
    if baseline.findings:  # the reference chain has no weakness its configuration predicts: a finding here is a bug
        baseline.failed += [c for seen in baseline.findings.values() for c in seen]
        for fid, seen in baseline.findings.items():
            for case_id in seen:
                baseline.messages[case_id] = f"{case_id}: FINDING {fid} on the unmutated reference chain"
    if baseline.error is not None or baseline.failed:
        for case_id in baseline.failed:
            print(baseline.messages[case_id], file=sys.stderr)
        reason = baseline.error or (f"{len(baseline.failed)} cases fail on the unmutated chain: "
                                    f"{', '.join(baseline.failed)}")
        print(f"mtls-harness: error: the baseline failed, so no mutant can be judged — {reason}", file=sys.stderr)
        return 1
    results = []
    for i, mutant in enumerate(mutants, 1):
        _progress(f"[{i}/{len(mutants)}] {mutant.name} ({mutant.kind}, {mutant.hop}): ")
        result = run_mutant(mutant, cases, baseline, key_type=args.key_type, progress=_progress)
        results.append(result)
        _progress(f" {result.status} ({result.run.seconds:.1f} s)\n")
    wall = time.perf_counter() - t0
    failures = {r.mutant.name: why for r in results if (why := verdict(r, args.allow_pending))}
    if args.json:
        print(json.dumps(_document(baseline, results, failures, wall, len(cases)), indent=2))
    else:
        _table(results, failures, wall, len(cases))
    for name, why in failures.items():
        print(f"mtls-harness: error: mutant {name}: {why}", file=sys.stderr)
    return 1 if failures else 0


def _document(baseline: CatalogueRun, results: list[MutantResult], failures: dict[str, str], wall: float,
              n: int) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "cases": n,
        "wall_seconds": round(wall, 1),
        "baseline": {"passed": len(baseline.passed), "failed": baseline.failed, "skipped": baseline.skipped,
                     "seconds": round(baseline.seconds, 1)},
        # the baselines of the chains with another ingress (a mutant of the Gateway API twin is judged on its own)
        "other_baselines": {kind: {"passed": len(run.passed), "failed": run.failed, "skipped": run.skipped,
                                   "findings": run.findings, "seconds": round(run.seconds, 1)}
                            for kind, run in baseline.others.items()},
        "mutants": [{
            "name": r.mutant.name, "kind": r.mutant.kind, "hop": r.mutant.hop, "ingress": r.mutant.ingress,
            "what": r.mutant.what,
            "status": r.status, "caught_as": r.caught_as, "caught_by": r.caught_by,
            "findings": r.run.findings, "predicted_findings": r.predicted, "cases_run": r.run.ran,
            "cases_failed": len(r.run.failed), "skipped": r.run.skipped, "edits": r.edits,
            "pending": r.mutant.pending, "error": r.run.error, "fails_selftest": r.mutant.name in failures,
            "seconds": round(r.run.seconds, 1)} for r in results],
        "ok": not failures,
    }


def _table(results: list[MutantResult], failures: dict[str, str], wall: float, n: int) -> None:
    width = max(len(r.mutant.name) for r in results)
    for r in results:
        mark = "FAIL" if r.mutant.name in failures else "ok  "
        print(f"{mark} {r.mutant.name:<{width}}  {r.mutant.kind:<6}  {r.describe()}")
    caught = sum(r.status == "caught" for r in results)
    as_finding = sum(r.status == "caught" and r.caught_as == "finding" for r in results)
    print(f"{caught} of {len(results)} mutants caught by the catalogue ({n} cases per run): {as_finding} config "
          f"mutants as FINDINGS, {caught - as_finding} render mutants as FAILURES; wall time {wall:.0f} s")
