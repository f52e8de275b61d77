"""``python bench/run.py`` (``make bench``): time to feedback, each figure next to its floor from the same run.

    python bench/run.py                 # everything, about 4 minutes on 2 cores
    python bench/run.py --quick         # a fast pass (about a minute): fewer runs, shorter loops, no suite
    python bench/run.py --only cold_start,probe_rate --runs 20
    python bench/run.py --markdown table.md   # also write the tables as Markdown (BENCHMARKS.md)

Progress goes to stderr, the tables to stdout, every figure and raw sample to bench/results.json (git-ignored).
Benchmarks print figures; nothing here passes or fails on a speed. Exit code 1 only when a benchmark broke (its
error is printed and recorded), 2 for bad options.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the bench package importable
    sys.path.insert(0, str(REPO))

from bench import (  # noqa: E402
    chains,
    cold_start,
    containers,
    lanes,
    machine,
    probe_rate,
    report,
    rotation,
    suite,
    variants,
)
from bench.common import Bench, Progress, load_average  # noqa: E402

ORDER = ("cold_start", "probe_rate", "variants", "suite", "lanes", "chains", "containers", "rotation")
DEFAULT_OUT = REPO / "bench" / "results.json"
SCHEMA = "mtls-harness/bench/1"


def _names(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark {', '.join(unknown)} — choose from {', '.join(ORDER)}")
    return names


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a fast pass: 3 cold starts, 1 s loops, no suite runs")
    p.add_argument("--runs", type=int, metavar="N", help="cold starts to count (default 10; --quick 3)")
    p.add_argument("--seconds", type=float, metavar="S", help="length of each rate loop (default 2; --quick 1)")
    p.add_argument("--only", type=_names, metavar="A,B", help=f"run only these: {', '.join(ORDER)}")
    p.add_argument("--skip", type=_names, default=[], metavar="A,B", help="leave these out")
    p.add_argument("--no-experiments", action="store_true",
                   help="leave out the what-if rows (poll cap, probe verdict wait, pod TCP_NODELAY)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the JSON (default bench/results.json)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the tables as Markdown")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.runs is not None and not 1 <= args.runs <= 200:
        p.error(f"--runs {args.runs}: use 1..200")
    if args.seconds is not None and not 0.2 <= args.seconds <= 60:
        p.error(f"--seconds {args.seconds:g}: use 0.2..60")
    return args


def _figure(benches: dict[str, Bench], name: str, measure: str) -> float | None:
    b = benches.get(name)
    row = b.row(measure) if b is not None and not b.skipped else None
    return row.value if row is not None else None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    say = Progress(quiet=args.quiet)
    quick = args.quick
    runs = args.runs or (3 if quick else 10)
    seconds = args.seconds or (1.0 if quick else 2.0)
    experiments = not args.no_experiments
    wanted = [n for n in ORDER if (args.only is None or n in args.only) and n not in args.skip]
    say(f"bench: {', '.join(wanted)}{' (quick)' if quick else ''} — the machine is shared: figures are noisy, "
        "re-take them on a quiet machine")
    info = machine.describe()
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    done: dict[str, Bench] = {}
    broken: list[str] = []

    def chain_start() -> float | None:
        return _figure(done, "cold_start", "chain start (all four hops ready)")

    steps: dict[str, Callable[[], Bench]] = {
        "cold_start": lambda: cold_start.run(runs=runs, warmup=True, experiment=experiments, progress=say),
        "probe_rate": lambda: probe_rate.run(seconds=seconds, experiment=experiments, progress=say),
        "variants": lambda: variants.run(runs=2 if quick else 6, progress=say),
        "suite": lambda: _suite(done, quick, say),
        "lanes": lambda: lanes.run(progress=say),
        "chains": lambda: chains.run(runs=3 if quick else 10, live=not quick, progress=say),
        "containers": lambda: containers.run(runs=1 if quick else 2, warmup=not quick, local_start=chain_start(),
                                             suite=not quick, probe_seconds=_probe_seconds(done), progress=say),
        "rotation": lambda: rotation.run(duration=3.0 if quick else 8.0, chain_start=chain_start(), progress=say),
    }
    for name in wanted:
        t = time.perf_counter()
        try:
            done[name] = steps[name]()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            broken.append(name)
            say(f"{name}: FAILED — {type(exc).__name__}: {exc}")
            done[name] = Bench(name, name, skipped=f"failed: {type(exc).__name__}: {exc}",
                               details={"traceback": traceback.format_exc()},
                               seconds=time.perf_counter() - t)
    wall = time.perf_counter() - t0
    say(f"bench: done in {wall:.0f} s")

    benches = [done[n] for n in wanted]
    report.print_tables(benches, info)
    doc = {
        "schema": SCHEMA,
        "taken": started.isoformat(timespec="seconds"),
        "note": "taken on a machine shared with other users unless re-taken on a quiet one; compare ratios, not "
                "absolute times",
        "machine": info,
        "load_average_end": load_average(),
        "options": {"quick": quick, "runs": runs, "seconds": seconds, "experiments": experiments, "only": wanted},
        "wall_s": round(wall, 1),
        "benchmarks": [b.as_dict() for b in benches],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    say(f"bench: wrote {args.out}")
    if args.markdown is not None:
        args.markdown.write_text(report.markdown(benches) + "\n")
        say(f"bench: wrote {args.markdown}")
    return 1 if broken else 0


def _probe_seconds(done: dict[str, Bench]) -> float | None:
    """Seconds per harness probe (a handshake and a GET through three hops), from the probe-rate benchmark."""
    rate = _figure(done, "probe_rate", "apim: harness probe (handshake + GET)")
    return (1 / rate) if rate else None


def _suite(done: dict[str, Bench], quick: bool, say: Callable[[str], None]) -> Bench:
    if quick:
        b = Bench(suite.NAME, suite.TITLE, skipped="--quick: the full suite takes about a minute serial and another "
                                                   "with -n 2; run without --quick (or --only suite)")
        say(f"suite: skipped — {b.skipped}")
        return b
    chain = _figure(done, "cold_start", "chain start (all four hops ready)")
    return suite.run(parallel=True, chain_start=chain, probe_seconds=_probe_seconds(done), progress=say)


if __name__ == "__main__":
    sys.exit(main())
