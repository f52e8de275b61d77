"""``mtls-harness run``: the handshake suite through pytest, then the hop × case matrix and the report files.

    mtls-harness run [--target local] [-n auto|N] [--report DIR] [-k EXPR] [--chain FILE] [--twin] [-- PYTEST_ARGS...]

It runs the handshake suite that ships inside the package (``harness/suite``: the catalogue's cases and, on
``--target azure``, the posture checks) — from any directory, installed from a wheel or from a checkout — with
pytest's own progress (quiet), prints the matrix and the skip accounting ("N of M ran on T, K skipped by design"),
and writes ``DIR/junit.xml``, ``DIR/results.json``, ``DIR/index.html`` and ``DIR/summary.md`` (default ``DIR``:
``reports``). The report comes from the same collector ``pytest tests/e2e --mtls-report DIR`` uses, so both give the
same results.
``--target`` here is this command's own option; pytest gets it as ``--mtls-target`` (the plugin claims only
``mtls``-prefixed names).

Exit codes: 0 every selected case passed; 1 a case failed or errored, no case was selected, or every selected case was
skipped (a run that proved nothing is not a success); 2 bad input (an option, a report path that is a file, no suite
found, a pytest usage error); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.options import (
    add_chain_option,
    add_config_option,
    apply_config_option,
    chain_path,
    terminate_on_sigterm,
)
from harness.errors import UsageError
from harness.pki.x509 import write_atomic
from harness.targets.base import TARGET_NAMES

__all__ = ["SUITE", "cmd_run", "find_suite", "pytest_argv", "register"]

#: REPORT/config-drift.txt: the settings where Azure differs from the reviewed chain file (``--chain``), one a line
CONFIG_DRIFT_FILE = "config-drift.txt"
#: seconds the twin's child run gets to stop its chain after Ctrl-C (then SIGTERM, and as long again)
TWIN_STOP_TIMEOUT = 30.0
#: the suite's modules inside the package (harness/suite), in the order pytest gets them
SUITE = ("test_handshakes.py", "test_posture.py")
_EXAMPLES = """examples:
  mtls-harness run                              every case on the local target, report in reports/
  mtls-harness run -n auto -k ingress           the ingress cases, one chain per CPU (each with its cases' lanes)
  mtls-harness run --report out -- --mtls-require-tools -x
                                                extra pytest options after --"""


def _workers(value: str) -> str:
    """``-n``: ``auto`` or a whole number ≥ 0 (0: no worker processes)."""
    if value == "auto" or (value.isdigit() and int(value) >= 0):
        return value
    raise argparse.ArgumentTypeError(f"-n {value!r}: give 'auto' or a number of worker processes, e.g. -n 4")


def register(subparsers: Any) -> None:
    """Add ``run`` to the main CLI's subparsers."""
    run = subparsers.add_parser(
        "run", help="run the handshake suite and write the report (matrix, JUnit XML, results.json, HTML)",
        description="Run the e2e handshake suite (it ships inside the package: works from any directory) through\n"
                    "pytest, print the hop × case matrix and write DIR/junit.xml, DIR/results.json,\n"
                    "DIR/index.html and DIR/summary.md (Markdown, for a pull request comment).\n"
                    "Exit 0: all passed and no open finding; 1: a case failed, a finding of your chain's\n"
                    "configuration is not accepted (docs/findings.md), nothing ran, or (--twin) a case differs\n"
                    "between production and its twin; 2: bad input (with --target azure: no credential, a\n"
                    "resource that does not exist).",
        epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--target", choices=TARGET_NAMES, default="local", help="where the chain runs (default: local)")
    run.add_argument("-n", dest="workers", type=_workers, default=None, metavar="auto|N",
                     help="run the cases in N pytest-xdist worker processes, each with its own chain serving "
                          "only the variants (lanes) of the cases it runs")
    run.add_argument("--report", type=Path, default=Path("reports"), metavar="DIR",
                     help="where the report files go (default: reports/; created when missing)")
    run.add_argument("-k", dest="keyword", metavar="EXPR",
                     help="only the cases whose test name matches EXPR (pytest -k; names are the case ids with _, "
                          "e.g. -k 'ingress and expired')")
    add_config_option(run)
    add_chain_option(run)
    run.add_argument("--ingress", metavar="KIND", default=None,
                     help="the ingress hop's kind: ingress-nginx, or gateway-api[:envoy-gateway|:agc] — your Ingresses "
                          "migrated to Gateway API (or the chain file's ingress.gateway_api_manifests) and served as "
                          "that implementation does, on the local and containers targets; attach/azure judge your "
                          "running one by it (docs/gateway-api.md); default: as the chain file says")
    run.add_argument("--twin", action="store_true",
                     help="--target azure/attach: also run the chain file's whole catalogue on the local twin and "
                          "write DIR/differential.json and .md: per case agree, DRIFT (production differs from its "
                          "own configuration) or EMULATION GAP (the twin is wrong)")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS",
                     help="anything after -- goes to pytest unchanged (e.g. -- --mtls-require-tools -x)")
    run.set_defaults(func=cmd_run)


def find_suite() -> list[Path]:
    """The suite's module files inside the installed package (``harness/suite``), wherever it is installed."""
    spec = importlib.util.find_spec("harness.suite")
    folder = Path(next(iter(spec.submodule_search_locations or ()), "")) if spec is not None else None
    files = [folder / name for name in SUITE] if folder is not None else []
    if not files or not all(f.is_file() for f in files):
        where = folder if folder is not None else "harness.suite"
        raise UsageError(f"the handshake suite is missing from the installed package (looked in {where}) — "
                         "reinstall mtls-harness (pip install --force-reinstall mtls-harness)")
    return files


def _prepare_report_dir(directory: Path) -> Path:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--report {directory}: exists and is not a directory — give a directory for the report "
                         "files")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--report {directory}: cannot create it ({exc.strerror}) — give a writable directory") \
            from None
    _forget_previous_report(directory)
    return directory


def _forget_previous_report(directory: Path) -> None:
    """Remove the files of an earlier report in ``directory`` (only when its results.json is ours), so a run that
    ends before writing a new report cannot leave an old one looking current."""
    from harness.report.collect import HTML_FILE, JUNIT_FILE
    from harness.report.results import RESULTS_FILE, SCHEMA
    from harness.report.summary import SUMMARY_FILE

    results = directory / RESULTS_FILE
    try:
        ours = json.loads(results.read_text(encoding="utf-8")).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return
    if ours:
        for name in (RESULTS_FILE, HTML_FILE, JUNIT_FILE, SUMMARY_FILE):
            (directory / name).unlink(missing_ok=True)


def pytest_argv(args: argparse.Namespace, suite: list[Path], report: Path) -> list[str]:
    """The pytest command line ``run`` uses."""
    from harness.report.collect import JUNIT_FILE

    argv = [*(str(f) for f in suite), "-q", "--mtls-target", args.target, "--mtls-report", str(report),
            # the suite may sit in site-packages: pytest's cache would be written next to it
            "-p", "no:cacheprovider",
            # anyio's plugin (it comes with httpx) is for async tests, the suite has none: 0.15 s per process; and
            # pytest-randomly, a dev extra of this repository: where it is installed the run would not be in the
            # catalogue's order as it is everywhere else (the test suites run with it: `-p randomly` in the Makefile)
            "-p", "no:anyio", "-p", "no:randomly",
            "--junitxml", str(report / JUNIT_FILE),
            # xunit1: the testcase <properties> (mtls_case, mtls_hop, …) belong to that schema, not to xunit2's
            "-o", "junit_family=xunit1",
            # the harness package (this very CLI) is imported before pytest starts: its asserts need no rewriting
            "-W", "ignore:Module already imported so cannot be rewritten; harness:pytest.PytestAssertRewriteWarning"]
    if args.workers not in (None, "0"):
        # each worker starts the chain with only its own cases' lanes: whole lanes to one worker
        # (harness.xdist_lanes.worker_groups)
        argv += ["-n", args.workers, "--dist", "loadgroup"]
    if args.keyword is not None:
        argv += ["-k", args.keyword]
    gateway_api = False
    if getattr(args, "ingress", None):
        from harness.render.gateway_api import parse_ingress_kind

        # one line and exit 2 here, not an error per case
        gateway_api = parse_ingress_kind(args.ingress, "--ingress") is not None
        argv += ["--mtls-ingress", args.ingress]
    chain = chain_path(args)
    if chain is not None:
        from harness.chainfile.load import load_chain

        # checked here, once: inside pytest each xdist worker would report the same bad file as an error per case
        loaded = load_chain(chain)  # an unusable file: one line, exit 2
        gateway_api = gateway_api or (not getattr(args, "ingress", None)
                                      and loaded.topology.ingress.gateway_api is not None)
        argv += ["--mtls-chain", str(chain.resolve())]
    if gateway_api and args.target == "kind":
        raise UsageError("--target kind runs ingress-nginx only: a Gateway API ingress runs on --target local or "
                         "containers, and yours on a cluster is judged through --target attach "
                         "(docs/gateway-api.md, 'On your cluster')")
    return [*argv, *args.pytest_args]


def _no_case_ran(doc: dict[str, Any] | None) -> str | None:
    """Why this run proved nothing (every selected case skipped), or None."""
    if not doc or not doc["cases"]:
        return None
    s = doc["summary"]
    if s["passed"] + s["failed"] + s["error"]:
        return None
    first = next((c.get("message") for c in doc["cases"] if c.get("message")), "no reason given")
    return f"no case ran: all {s['skipped']} selected cases were skipped (first reason: {first})"


def _check_target_config(target: str) -> None:
    """The attach / azure config, read once here: a missing or unusable one is one line and exit 2 before pytest
    starts (inside pytest every case would report the same error)."""
    if target == "attach":
        from harness.targets.attach import load_attach_config
        from harness.targets.base import config_path_from_env

        load_attach_config(config_path_from_env(target))
    elif target == "azure":
        from harness.targets.azure.config import load_azure_config
        from harness.targets.base import config_path_from_env

        load_azure_config(config_path_from_env(target))


def _discover_chain(args: argparse.Namespace, report: Path) -> list[str]:
    """``--target azure``: discovery before any test starts — a missing credential, a wrong resource name or an
    unreachable endpoint is one line and exit 2 here, not an error per case. The chain file of what it found goes to
    REPORT/azure-chain: without ``--chain`` the live run judges its generated catalogue; with one (a chain file
    reviewed into the repo), the settings where Azure now differs from it are the config drift (returned, printed,
    REPORT/config-drift.txt)."""
    from harness.targets.azure.chain import write_discovered_chain
    from harness.targets.azure.config import load_azure_config
    from harness.targets.azure.discovery import discover
    from harness.targets.base import config_path_from_env

    config = load_azure_config(config_path_from_env("azure"))
    print(f"mtls-harness: discovering the chain in resource group {config.resource_group} (read-only) …",
          file=sys.stderr, flush=True)
    disc = discover(config)
    given = chain_path(args)
    try:
        found = write_discovered_chain(report / "azure-chain", disc, config, force=True)
    except UsageError as exc:  # e.g. no [kubernetes]: the posture checks still run on what was read
        print(f"mtls-harness: warning: no chain file from discovery ({exc}); the posture checks run"
              + ("" if given else ", and the live cases judge the reference chain's expectations"), file=sys.stderr)
        return []
    if given is None:
        args.chain = found.path
        print(f"mtls-harness: judging the discovered chain {found.document.name!r} ({found.path}; "
              f"{len(found.notes)} stand-ins listed at its top)", file=sys.stderr)
        return []
    from harness.chainfile.load import load_chain
    from harness.targets.azure.chain import config_drift

    assert found.path is not None
    drift = config_drift(load_chain(given).topology, load_chain(found.path).topology)
    for line in drift:
        print(f"mtls-harness: config drift: {line}", file=sys.stderr)
    write_atomic(report / CONFIG_DRIFT_FILE, "".join(f"{line}\n" for line in drift).encode())
    if drift:
        print(f"mtls-harness: {len(drift)} setting(s) in Azure differ from {given} — re-run `mtls-harness init "
              f"--from-azure` and review the change ({report / CONFIG_DRIFT_FILE})", file=sys.stderr)
    return drift


def _run_twin(args: argparse.Namespace, report: Path) -> dict[str, Any] | None:
    """The same chain file's whole catalogue on the local twin (a child ``mtls-harness run``), into REPORT/twin."""
    import subprocess

    from harness.report.results import RESULTS_FILE

    chain = chain_path(args)
    if chain is None:
        raise UsageError("--twin needs the chain file the twin runs: give --chain FILE (the azure target writes one "
                         "from discovery when --chain is left out)")
    twin = report / "twin"
    argv = [sys.executable, "-m", "harness", "run", "--target", "local", "--chain", str(chain.resolve()),
            "--report", str(twin)]
    if args.workers not in (None, "0"):
        argv += ["-n", args.workers]
    if args.keyword is not None:
        argv += ["-k", args.keyword]
    print(f"mtls-harness: the twin: the chain's catalogue on the local target (report in {twin}) …", file=sys.stderr,
          flush=True)
    child = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        returncode = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the child too: let it stop its chain, then make sure it is gone
        try:
            child.wait(timeout=TWIN_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.terminate()  # SIGTERM: the child unwinds (terminate_on_sigterm) and stops every hop it started
            child.wait(timeout=TWIN_STOP_TIMEOUT)
        raise
    if returncode == 130:
        raise KeyboardInterrupt
    try:
        doc: dict[str, Any] = json.loads((twin / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        print(f"mtls-harness: error: the twin wrote no report (exit {returncode}); no differential",
              file=sys.stderr)
        return None
    return doc


def _write_differential(twin: dict[str, Any], live: dict[str, Any] | None, report: Path, chain: str | None) -> bool:
    """Write and print the differential; True when a case differs (DRIFT or EMULATION GAP)."""
    from harness.report.differential import differential, write_differential

    if live is None:
        print("mtls-harness: error: the live run wrote no report; no differential", file=sys.stderr)
        return True
    doc = differential(twin, live, chain)
    js, md = write_differential(doc, report)
    s = doc["summary"]
    for row in doc["cases"]:
        if row["verdict"] in ("DRIFT", "EMULATION GAP"):
            print(f"{row['verdict']:<13} {row['id']}: expected {row['expected']}; twin {row['twin']}"
                  f"{' (' + row['twin_seen'] + ')' if row['twin'] != 'passed' else ''}, live {row['live']}"
                  f"{' (' + row['live_seen'] + ')' if row['live'] != 'passed' else ''}")
    print(f"twin vs live: {s['agree']} agree, {s['DRIFT']} DRIFT, {s['EMULATION GAP']} EMULATION GAP, "
          f"{s['twin only']} twin only (not run live), {s['live only']} live only — {js}, {md}")
    return bool(s["DRIFT"] or s["EMULATION GAP"])


def cmd_run(args: argparse.Namespace) -> int:
    import pytest

    from harness.cases.catalogue import CATALOGUE
    from harness.report.collect import ReportCollector

    terminate_on_sigterm()  # SIGTERM unwinds like Ctrl-C: every hop the run (or its twin) started is stopped
    apply_config_option(args.target, args.config)
    _check_target_config(args.target)
    if args.twin and args.target not in ("azure", "attach"):
        raise UsageError(f"--twin compares production with its twin: use it with --target azure or attach, not "
                         f"{args.target}")
    if args.twin and args.target == "attach" and chain_path(args) is None:
        raise UsageError("--twin with --target attach needs the chain file the twin runs: give --chain FILE")
    suite = find_suite()
    report = _prepare_report_dir(args.report)
    drift = _discover_chain(args, report) if args.target == "azure" else []
    twin = _run_twin(args, report) if args.twin else None
    if args.workers not in (None, "0") and importlib.util.find_spec("xdist") is None:
        raise UsageError("-n needs pytest-xdist — pip install pytest-xdist, or leave -n out")
    collector = ReportCollector(report)
    code = int(pytest.main(pytest_argv(args, suite, report), plugins=[collector]))
    if collector.interrupted:
        return 130
    if args.twin:
        from harness.chainfile.load import load_chain

        chain = chain_path(args)
        differs = twin is None or _write_differential(twin, collector.document, report,
                                                       load_chain(chain).topology.name if chain else None)
        if differs and code == pytest.ExitCode.OK:
            code = pytest.ExitCode.TESTS_FAILED
    if drift and code == pytest.ExitCode.OK:  # the live run judged expectations Azure no longer matches
        print(f"mtls-harness: error: {len(drift)} config drift line(s) — Azure changed since the chain file was "
              f"reviewed ({report / CONFIG_DRIFT_FILE})", file=sys.stderr)
        code = pytest.ExitCode.TESTS_FAILED
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        selection = f"-k {args.keyword!r}" if args.keyword is not None else "the selection"
        print(f"mtls-harness: error: no case selected — {selection} matched none of the {len(CATALOGUE)} cases "
              "(-k matches test names: the case ids with '_' for '-' and '.', e.g. -k 'ingress and expired')",
              file=sys.stderr)
        return 1
    if code == pytest.ExitCode.USAGE_ERROR:
        print("mtls-harness: error: pytest refused the options (see its message above)", file=sys.stderr)
        return 2
    if code == pytest.ExitCode.OK and (why := _no_case_ran(collector.document)):
        print(f"mtls-harness: error: {why}", file=sys.stderr)
        return 1
    if code == pytest.ExitCode.INTERRUPTED:
        print("mtls-harness: error: the run was interrupted (collection errors? see pytest's output above)",
              file=sys.stderr)
        return 1
    return code
