"""``mtls-harness rotate``: rehearse a certificate rotation on the local chain under load before the change window.

    mtls-harness rotate --current DIR --next DIR [--plan PLAN.yaml] [--duration S] [--report DIR]
    mtls-harness rotate --chain FILE --next DIR|NEXT_CHAIN.yaml [--current DIR] [...]
                        [--workers N] [--rate R] [--tolerate-reload-resets] [--no-lint] [--show-plan] [--json]

Static checks of the next set and of the plan's overlap, then the live rehearsal (progress on stderr), then the
verdict on stdout. Exit codes: 0 pass, 1 the rehearsal failed, 2 unusable input (one ``error:`` line naming the
value and the fix). ``--show-plan`` prints the plan (the default one when no --plan is given) and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from harness.cli.options import add_chain_option, load_chain_option
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.chainfile.load import LoadedChain
    from harness.model.topology import PKIPlan

__all__ = ["cmd_rotate", "register"]


def register(subparsers: Any) -> None:
    """Add ``rotate`` to the main CLI's subparsers."""
    rot = subparsers.add_parser(
        "rotate", help="rehearse a certificate rotation on the local chain under load",
        description="Check the next cert set and the plan statically, then stand the local chain up with the "
                    "current set, drive bounded load through all four hops and apply the plan's steps one at a time "
                    "by hot reload (Envoy SDS rename, nginx SIGHUP, the pod's files + SIGHUP), probing what each "
                    "hop serves and accepts after each step. Exit 0 when no request failed and the final state is "
                    "the plan's goal, 1 otherwise, 2 for unusable input. The plan format is in docs/rotation.md.")
    rot.add_argument("--current", type=Path, metavar="DIR",
                     help="the cert set in service now (with --chain: default the chain file's certificates)")
    rot.add_argument("--next", type=Path, required=True, metavar="DIR|CHAIN", dest="next_set",
                     help="the cert set to rotate to (`mtls-harness certs generate DIR` makes one), or with --chain "
                          "a chain file naming the renewed certificates with the same identity and trust names")
    add_chain_option(rot)
    rot.add_argument("--plan", type=Path, metavar="PLAN.yaml",
                     help="the ordered steps (default: trust new CAs, swap leaves, untrust old CAs, hop by hop)")
    rot.add_argument("--duration", type=float, default=30.0, metavar="S",
                     help="seconds of load over the rehearsal, spread over its steps (default: 30)")
    rot.add_argument("--report", type=Path, metavar="DIR",
                     help="write timeline.png, steps.md, rotation.json and plan.yaml there")
    rot.add_argument("--workers", type=int, default=4, metavar="N",
                     help="load threads, half of them with a new connection per request (default: 4, max 16)")
    rot.add_argument("--rate", type=float, default=150.0, metavar="R",
                     help="total requests per second (default: 150; 0: as fast as the chain answers)")
    rot.add_argument("--tolerate-reload-resets", action="store_true",
                     help="do not fail the verdict for requests reset while nginx reloads (still reported apart); "
                          "by default every failed request fails the rehearsal")
    rot.add_argument("--no-lint", action="store_true", help="skip pkilint in the static checks (faster)")
    rot.add_argument("--show-plan", action="store_true", help="print the plan as YAML and exit (nothing runs)")
    rot.add_argument("--json", action="store_true", help="print the result as one JSON document (no key material)")
    rot.set_defaults(func=cmd_rotate)


def _interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so every `with` block stops what it started (load, chain)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _same_names(label: str, given: Path, plan: PKIPlan, loaded: LoadedChain) -> None:
    """The set names every CA and identity of the chain, each CA under the same parent (one line naming the file the
    user gave — a chain file or a set directory — never a cache folder)."""
    want = {c.name: c.parent for c in loaded.topology.pki.cas}
    have = {c.name: c.parent for c in plan.cas}
    file = given.is_file()
    for name in [lf.name for lf in loaded.topology.pki.leaves if lf.name not in {x.name for x in plan.leaves}]:
        raise UsageError(f"{label} {given}: has no identity {name!r}, which chain {loaded.path} names — "
                         + ("give the next chain file the same identity names" if file else
                            "give a set with the chain's identity names"))
    for name in sorted(set(want) - set(have)):
        extra = sorted(set(have) - set(want))
        raise UsageError(
            f"{label} {given}: has no CA {name!r} (the name chain {loaded.path} gives it"
            + (f"; this file has {', '.join(extra)} instead" if extra else "") + ") — "
            + ("a CA named by no trust list is named from its common name, which a renewal may change: list that "
               "CA under certificates.trust with the same name in both chain files" if file else
               "give a set with the chain's CA names"))
    for name in sorted(n for n in want if want[n] != have[n]):
        raise UsageError(f"{label} {given}: CA {name!r} is issued by {have[name] or 'itself'}, in chain "
                         f"{loaded.path} by {want[name] or 'itself'} — the rehearsal rotates certificates, not the "
                         "shape of the PKI: keep each CA under the same parent name")


def cmd_rotate(args: argparse.Namespace) -> int:
    from harness.pki.certset import load_cert_set
    from harness.rotation.rehearsal import RehearsalOptions, load_plan, rehearsal_topology, rehearse

    options = RehearsalOptions(duration=args.duration, workers=args.workers, rate=args.rate or None,
                               strict_resets=not args.tolerate_reload_resets, lint=not args.no_lint)
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise UsageError(f"--report {args.report}: is a file — name a directory for the report")
    loaded = load_chain_option(args)
    if loaded is None:
        if args.current is None:
            raise UsageError("rotate: give --current DIR (the cert set in service), or --chain FILE")
        current = load_cert_set(args.current)
        nxt = load_cert_set(args.next_set)
        topology = rehearsal_topology(current)
    else:
        from harness.chainfile.load import load_chain

        current = loaded.certs if args.current is None else load_cert_set(args.current)
        nxt = load_chain(args.next_set).certs if args.next_set.is_file() else load_cert_set(args.next_set)
        for label, cs, given in (("--current", current, args.current or loaded.path), ("--next", nxt, args.next_set)):
            _same_names(label, given, cs.plan, loaded)
        topology = loaded.topology.replace(pki=current.plan)
    plan = load_plan(args.plan, topology) if args.plan is not None else None
    if args.show_plan:
        import tempfile

        from harness.rotation.plan import CertPair
        from harness.rotation.rehearsal import default_plan

        with tempfile.TemporaryDirectory(prefix="mtls-harness-plan-") as tmp:
            shown = plan or default_plan(topology, CertPair(current, nxt, Path(tmp)))
        print(shown.as_yaml(), end="")
        return 0
    _interrupt_on_sigterm()
    result = rehearse(current, nxt, plan, topology=topology, options=options, progress=_progress)
    if args.report is not None:
        from harness.report.rotation import write_rotation_report

        paths = write_rotation_report(result, args.report)
        _progress(f"report: {', '.join(str(p) for p in paths.values())}")
    if args.json:
        print(json.dumps(result.as_dict()))
    else:
        print("\n".join(result.verdict_lines()))
    return 0 if result.passed else 1
