"""The report collector: a pytest plugin object that turns the e2e suite's results into the report files.

It is active when ``--mtls-report DIR`` is given (the harness's pytest plugin installs it) or when ``mtls-harness run``
passes one to ``pytest.main``; either way the same object writes the same files, so ``pytest tests/e2e --mtls-report
DIR`` and ``mtls-harness run --report DIR`` report alike.

How a result travels, also under pytest-xdist:

1. the e2e test marks its function with its case (:data:`CASE_ATTR`) and hands the
   :class:`~harness.cases.model.CaseResult` to :func:`remember_result` (the item's stash);
2. in the process that ran the test, ``pytest_runtest_makereport`` turns case and result into plain JSON-ready
   facts (:mod:`harness.report.results`) and sets them as the report's ``mtls`` attribute — pytest's report
   serialisation (``pytest_report_to_serializable``, which xdist uses) keeps extra report attributes, so the facts
   reach the controller with the report;
3. in the controller, ``pytest_runtest_logreport`` folds the setup/call/teardown reports of each case into one record;
   ``pytest_sessionfinish`` writes ``results.json`` and ``index.html``, and pytest's junitxml writes ``junit.xml``
   (each testcase also gets the properties ``mtls_case``, ``mtls_hop``, ``mtls_group``, ``mtls_expected``).

Per-link capture summaries (the isolation mode) come in through :func:`add_links`; a worker writes them to a small
JSON file in the report directory that the controller merges into the document's ``links``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Generator, Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

import pytest

from harness.cases.model import DEFAULT_IDENTITY, Case, CaseResult
from harness.report.results import (
    case_facts,
    chain_facts,
    document,
    headline,
    layout_lines,
    redact,
    seen_facts,
    write_json,
    write_text,
)

__all__ = ["CASE_ATTR", "CASE_RESULT", "CHAIN_CASES", "IDENTITY_MODES", "SKIP_INFO", "ReportCollector", "add_links",
           "case_of", "find", "generated_for_chain", "install", "merge_links", "remember_result", "skip_case"]

#: per identity of the session's chain file, "real" or "shadow" (the pytest plugin sets it when --mtls-chain is given)
IDENTITY_MODES = pytest.StashKey[dict[str, str]]()
#: the plugin leaves here the chain's generated catalogue (id → case), computed on first use
CHAIN_CASES = pytest.StashKey[Callable[[], Mapping[str, Case]]]()
#: the plugin leaves here how to get the chain's findings (harness.report.findings records) and its accepted ids
FINDINGS = pytest.StashKey[Callable[[], tuple[list[dict[str, Any]], dict[str, str]]]]()
#: the attribute of an e2e test function that holds its :class:`~harness.cases.model.Case`
CASE_ATTR: Final = "mtls_case"
#: where an e2e test leaves its :class:`~harness.cases.model.CaseResult` (``item.stash[CASE_RESULT]``)
CASE_RESULT: Final = pytest.StashKey[CaseResult]()
#: why a case skipped and whether its target declared that limit (``item.stash[SKIP_INFO] = (reason, declared)``)
SKIP_INFO: Final = pytest.StashKey[tuple[str, bool]]()
HTML_FILE: Final = "index.html"
JUNIT_FILE: Final = "junit.xml"
_LINKS_GLOB: Final = ".mtls-links-*.json"
_MESSAGE_MAX: Final = 4000


def remember_result(node: pytest.Item, result: CaseResult) -> None:
    """Hand ``result`` to the report (a no-op for the test when no report is being written)."""
    node.stash[CASE_RESULT] = result


def skip_case(node: pytest.Item | None, reason: str, *, declared: bool) -> NoReturn:
    """Skip the running test because its target cannot run it. ``declared``: the target declared the limit (a skip
    *by design*, counted as such in the report); an undeclared one fails the test instead when
    ``--mtls-require-tools`` is set — a dropped hop or a chain turned read-only must not skip green."""
    if node is not None:
        node.stash[SKIP_INFO] = (reason, declared)
        if not declared and node.config.getoption("--mtls-require-tools", default=False):
            pytest.fail(f"undeclared skip: {reason} — the target did not declare this limit, so with "
                        "--mtls-require-tools it is an error, not a skip", pytrace=False)
    pytest.skip(reason)


def case_of(item: pytest.Item) -> Case | None:
    """The case an e2e test runs — the chain's generated version of it (its own names) — or None for any other
    test."""
    generated = getattr(getattr(item, "callspec", None), "params", {}).get("mtls_generated_case")
    if isinstance(generated, Case):
        return generated
    case = getattr(getattr(item, "function", None), CASE_ATTR, None)
    if not isinstance(case, Case):
        return None
    chain_cases = item.config.stash.get(CHAIN_CASES, None)
    return chain_cases().get(case.id, case) if chain_cases is not None else case


def generated_for_chain(item: pytest.Item) -> bool:
    """Whether the catalogue generated for the session's chain has the case ``item`` runs (always true without a
    chain file: the reference chain's catalogue is the one the suite is written from)."""
    case = getattr(getattr(item, "function", None), CASE_ATTR, None)
    chain_cases = item.config.stash.get(CHAIN_CASES, None)
    return not isinstance(case, Case) or chain_cases is None or case.id in chain_cases()


def find(config: pytest.Config) -> ReportCollector | None:
    """The collector registered with ``config``, if any."""
    return next((p for p in config.pluginmanager.get_plugins() if isinstance(p, ReportCollector)), None)


def install(config: pytest.Config, directory: Path | str | None = None) -> ReportCollector:
    """Register a collector writing to ``directory`` (default: ``--mtls-report``) unless one is registered already."""
    existing = find(config)
    if existing is not None:
        return existing
    raw = directory if directory is not None else config.getoption("--mtls-report")
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--mtls-report {path}: exists and is not a directory — give a directory for the "
                                "report files (it is created when missing)")
    collector = ReportCollector(path)
    config.pluginmanager.register(collector, "mtls-report-collector")
    return collector


def add_links(config: pytest.Config, links: Mapping[str, Mapping[str, Any]]) -> None:
    """Add per-link capture summaries (``{"gateway->apim": {"streams": 3, …}}``) to the report, if one is written."""
    collector = find(config)
    if collector is not None:
        collector.add_links(config, links)


def _merge_value(a: Any, b: Any) -> Any:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) or bool(b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return merge_links(a, b)
    if isinstance(a, list | tuple) or isinstance(b, list | tuple):
        united: dict[str, Any] = {}
        for item in [*(a if isinstance(a, list | tuple) else [a]), *(b if isinstance(b, list | tuple) else [b])]:
            united.setdefault(json.dumps(item, sort_keys=True, default=str), item)
        return list(united.values())
    return a if a == b else [a, b]


def merge_links(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two link summaries as one: counts add up, lists are united, a flag set in either stays set."""
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge_value(out[key], value) if key in out else value
    return out


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple | list) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr or "skipped")


def _crash_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", None) or report.longrepr or "failed")
    return str(redact(text))[:_MESSAGE_MAX]


class ReportCollector:
    """Collects the e2e cases' results during a pytest run and writes the report to ``directory``."""

    def __init__(self, directory: Path | str, *, show_matrix: bool = True) -> None:
        self.directory = Path(directory)
        self.show_matrix = show_matrix
        #: the results document, once the session has finished (controller only)
        self.document: dict[str, Any] | None = None
        #: the files written, once the session has finished
        self.written: list[Path] = []
        self.accepted: dict[str, str] = {}
        #: milliseconds it took to build and write the report
        self.report_ms: float | None = None
        self.interrupted = False
        self._records: dict[str, dict[str, Any]] = {}
        self._chain: dict[str, Any] | None = None
        self._chain_sent = False
        self._layout: dict[str, Any] | None = None
        self._layout_sent = False
        self._positions: dict[str, int] | None = None
        self._links: dict[str, Any] = {}
        self._link_files = itertools.count()
        self._started = time.monotonic()
        self._is_worker = False
        self._junit: Path | None = None
        #: how many e2e cases the run selected (None until known: xdist workers send it with their reports)
        self.selected: int | None = None

    # --- setup ------------------------------------------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        self._is_worker = hasattr(config, "workerinput")
        if self._is_worker:
            return
        if hasattr(config.option, "xmlpath"):  # absent with -p no:junitxml
            if config.option.xmlpath is None:  # set before junitxml's own pytest_configure reads it
                config.option.xmlpath = str(self.directory / JUNIT_FILE)
            self._junit = Path(config.option.xmlpath)
        with contextlib.suppress(OSError):
            for stale in self.directory.glob(_LINKS_GLOB):
                stale.unlink()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._started = time.monotonic()

    # --- in the process that runs the test ----------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        case = case_of(item)
        if case is None:
            return report
        ran = item.stash.get(CASE_RESULT, None)
        if ran is not None:
            case = ran.case  # as it ran: the expectation of the chain's ingress kind (Case.on)
        if report.when == "teardown":
            have = {name for name, _ in report.user_properties}
            props = [("mtls_case", case.id), ("mtls_hop", case.hop), ("mtls_group", case.group),
                     ("mtls_expected", str(case.expect))]
            if (result := item.stash.get(CASE_RESULT, None)) is not None:
                props.append(("mtls_seen", str(result.seen.outcome)))
                props.append(("mtls_verdict", result.verdict))  # passed / failed / finding (docs/findings.md)
                if result.finding is not None:
                    props.append(("mtls_finding", result.finding.id))
            report.user_properties.extend(p for p in props if p[0] not in have)
        if report.when == "call" or not report.passed:
            facts: dict[str, Any] = {"case": case_facts(case, self._identity(item, case)),
                                     "position": self._position(item)}
            facts["selected"] = self._selected_in(item.session)
            result = item.stash.get(CASE_RESULT, None)
            if report.when == "call" and result is not None:
                facts["seen"] = seen_facts(result)
            if report.skipped:
                facts["by_design"] = item.stash.get(SKIP_INFO, ("", False))[1]
            if not self._chain_sent and (topology := self._topology(item)) is not None:
                facts["chain"] = chain_facts(topology)
                self._chain_sent = True
            layout = getattr(getattr(item, "funcargs", {}).get("mtls_chain"), "layout", None)
            if not self._layout_sent and layout:
                facts["layout"] = dict(layout)  # how the variants ran: lanes, processes of their own, why
                self._layout_sent = True
            report.mtls = facts  # type: ignore[attr-defined]
        return report

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        """Each item's place in the collection as collected — before any plugin reorders the run (pytest-randomly
        shuffles ``session.items``), so the report's order does not depend on the run's order."""
        positions = self._positions if self._positions is not None else {}
        positions.setdefault(item.nodeid, len(positions))
        self._positions = positions

    def _position(self, item: pytest.Item) -> int:
        """The item's place in the collection (the same in every xdist worker): the report's order after the
        catalogue's."""
        if self._positions is None:
            self._positions = {it.nodeid: n for n, it in enumerate(item.session.items)}
        return self._positions.get(item.nodeid, len(self._positions))

    def _selected_in(self, session: pytest.Session) -> int:
        if self.selected is None:
            self.selected = sum(1 for it in session.items if case_of(it) is not None)
        return self.selected

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self._is_worker and session.items:  # without xdist: counted here (a controller collects nothing)
            self.selected = sum(1 for it in session.items if case_of(it) is not None)

    @staticmethod
    def _topology(item: pytest.Item) -> Any:
        funcargs = getattr(item, "funcargs", {})
        return getattr(funcargs.get("mtls_chain"), "topology", None)

    def _identity(self, item: pytest.Item, case: Case) -> str | None:
        """The leaf the case presented: its own, or (for "the caller's own") the one its chain gives the caller."""
        if case.identity != DEFAULT_IDENTITY:
            return case.identity
        topology = self._topology(item)
        if topology is None:
            return None
        try:
            if case.variant is not None:
                topology = case.variant(topology)
            hop = "gateway" if case.via == "chain" else (case.endpoint or case.hop)
            return str(topology.caller_of(hop).client_cert or "none")
        except Exception:  # a report must not fail a run: fall back to the catalogue's word
            return None

    # --- in the controller ----------------------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        facts = getattr(report, "mtls", None)
        if self._is_worker or not isinstance(facts, Mapping):
            return
        rec = self._records.setdefault(report.nodeid, {"nodeid": report.nodeid, "result": None, "passed": None,
                                                       "message": None, "by_design": None, "duration_s": 0.0,
                                                       "seen": None})
        if isinstance(facts.get("selected"), int):
            self.selected = max(self.selected or 0, facts["selected"])
        rec.update({k: v for k, v in facts["case"].items() if k not in rec or k == "identity"})
        rec.setdefault("_position", facts.get("position", 0))
        if facts.get("seen") is not None:
            rec["seen"] = facts["seen"]
        if facts.get("chain") and self._chain is None:
            self._chain = dict(facts["chain"])
        if facts.get("layout") and self._layout is None:
            self._layout = dict(facts["layout"])
        rec["duration_s"] = round(float(rec["duration_s"]) + float(report.duration or 0.0), 4)
        self._judge(rec, report, bool(facts.get("by_design")))

    @staticmethod
    def _judge(rec: dict[str, Any], report: pytest.TestReport, by_design: bool = False) -> None:
        if report.skipped and rec["result"] in (None, "skipped"):
            rec.update(result="skipped", passed=None, message=_skip_reason(report), by_design=by_design)
        elif report.when == "call" and report.passed:
            finding = (rec.get("seen") or {}).get("verdict") == "finding"
            rec.update(result="finding" if finding else "passed", passed=True,
                       message=f"FINDING {rec['seen'].get('finding')}" if finding else None)
        elif report.failed and report.when == "call" and rec["seen"] is not None:
            seen = rec["seen"]
            problem = seen.get("problem")
            extra = f" — {problem}" if problem and problem != "outcome differs" else ""
            rec.update(result="failed", passed=False,
                       message=f"expected {rec['expected']}, seen {seen['outcome_text']}{extra}")
        elif report.failed and rec["result"] != "failed":  # a teardown error does not hide the case's failure
            where = {"setup": "setting up", "call": "running", "teardown": "tearing down"}[report.when]
            rec.update(result="error", passed=False, message=f"error while {where} the case: {_crash_message(report)}")

    def pytest_keyboard_interrupt(self) -> None:
        self.interrupted = True

    def add_links(self, config: pytest.Config, links: Mapping[str, Mapping[str, Any]]) -> None:
        if not self._is_worker:
            self._links = merge_links(self._links, links)
            return
        worker = str(getattr(config, "workerinput", {}).get("workerid", "gw"))
        name = f".mtls-links-{worker}-{os.getpid()}-{next(self._link_files)}.json"
        write_text(self.directory / name, json.dumps(links))

    def _collect_worker_links(self) -> None:
        for path in sorted(self.directory.glob(_LINKS_GLOB)):
            with contextlib.suppress(OSError, ValueError):
                self._links = merge_links(self._links, json.loads(path.read_text()))
            path.unlink(missing_ok=True)

    def _ordered(self) -> list[dict[str, Any]]:
        from harness.cases.catalogue import CATALOGUE

        index = {c.id: i for i, c in enumerate(CATALOGUE)}
        done = [r for r in self._records.values() if r["result"] is not None]
        done.sort(key=lambda r: (index.get(str(r["id"]), len(index)), r["_position"], r["nodeid"]))
        tail = ("nodeid", "result", "passed", "message", "by_design", "duration_s", "seen")
        return [{k: v for k, v in r.items() if k not in (*tail, "_position")} | {k: r[k] for k in tail}
                for r in done]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self._is_worker:
            return
        from harness.report.html import render_html

        t0 = time.perf_counter()
        self._collect_worker_links()
        self._scrub_junit()
        interrupted = self.interrupted or exitstatus == pytest.ExitCode.INTERRUPTED
        if not self._records and not (interrupted and self.selected):
            return  # no e2e case ran: nothing to report (and no empty report that looks like a result)
        target = session.config.getoption("--mtls-target", default=None)
        findings, self.accepted = session.config.stash.get(FINDINGS, lambda: ([], {}))()
        doc = document(self._ordered(), target=str(target or "?"), pytest_exit=int(exitstatus),
                       duration_s=time.monotonic() - self._started, chain=self._chain, links=self._links,
                       selected=self.selected, interrupted=interrupted,
                       identities=session.config.stash.get(IDENTITY_MODES, None), findings=findings,
                       layout=self._layout)
        if doc["summary"].get("findings_open") and session.exitstatus == pytest.ExitCode.OK and not interrupted:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED  # a finding is its own verdict: exit 1 unless accepted
        self.directory.mkdir(parents=True, exist_ok=True)
        self.written = [write_json(doc, self.directory)]
        from harness.report.summary import SUMMARY_FILE, markdown

        write_text(self.directory / SUMMARY_FILE, markdown(doc))  # for a pull request comment or a CI job summary
        html_path = self.directory / HTML_FILE
        write_text(html_path, render_html(doc))
        self.written.append(html_path)
        self.report_ms = (time.perf_counter() - t0) * 1000
        doc["report_ms"] = round(self.report_ms, 1)
        self.document = doc

    def _scrub_junit(self) -> None:
        """pytest's JUnit XML quotes failure texts verbatim: drop any PEM block or key path from it (the file is
        already written: junitxml's sessionfinish runs before this trylast one)."""
        if self._junit is None or not self._junit.is_file():
            return
        text = self._junit.read_text(encoding="utf-8")
        clean = str(redact(text, keys_only=True)).replace("PRIVATE KEY", "[redacted]")
        if clean != text:
            write_text(self._junit, clean)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self._is_worker:
            return
        if self.document is None:
            terminalreporter.write_line(f"mTLS report: no e2e case ran — nothing written to {self.directory}")
            return
        from rich.console import Console

        from harness.report.matrix import print_matrix

        if self.show_matrix and self.document["cases"]:
            buffer = io.StringIO()
            width = shutil.get_terminal_size((120, 24)).columns
            markup = bool(getattr(terminalreporter, "hasmarkup", False))
            console = Console(file=buffer, width=width, force_terminal=markup, no_color=not markup,
                              color_system="standard" if markup else None, highlight=False)
            print_matrix(self.document, console)
            terminalreporter.write_sep("=", "mTLS hop × case matrix")
            terminalreporter.write(buffer.getvalue())
        files = [self.written[-1], self.written[0], *([self._junit] if self._junit and self._junit.is_file() else [])]
        summary = self.document["summary"]
        if summary["by_design_reasons"]:
            terminalreporter.write_line("skipped by design (the target declares it cannot run them):")
            for why, n in summary["by_design_reasons"].items():
                terminalreporter.write_line(f"  {n:>4} × {why}")
        from harness.report.findings import finding_lines, stale_acceptances

        if self.document.get("findings"):
            terminalreporter.write_sep("=", "findings: what the chain's own configuration lets through")
            for line in finding_lines(self.document["findings"]):
                terminalreporter.write_line(line, **({"red": True} if line.startswith("FINDING") else {}))
        for stale in stale_acceptances(self.document.get("findings", []), self.accepted):
            terminalreporter.write_line(f"accept: {stale!r} is not a finding of this chain: remove the stale "
                                        "acceptance from the chain file", yellow=True)
        for line in layout_lines(self.document.get("layout") or {}):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"mTLS: {headline(self.document)}",
                                    **({"red": True, "bold": True} if self.document["interrupted"] else {}))
        terminalreporter.write_line(f"mTLS report: {', '.join(str(p) for p in files)} — "
                                    f"{summary['total']} cases, written in {self.report_ms:.0f} ms")
