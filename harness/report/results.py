"""The results document: one JSON-ready record per case, the run's summary, and the files written from it.

Everything a report shows comes from this document (``results.json``), so the terminal matrix, the HTML page and
any later tool read the same facts. A record is built from the :class:`~harness.cases.model.Case` (what was expected,
where, and why) and the :class:`~harness.cases.model.CaseResult` (what the probe saw) — field by field, never by
dumping an
object, so nothing that is not listed here can reach a report: no key material, no key paths, no response bodies.
Free text that comes from outside (an exception message, a log tail) is passed through :func:`redact` first.

Schema ``mtls-harness/results/1``::

    {"schema", "generated", "target", "harness_version", "pytest_exit", "duration_s", "interrupted", "headline",
     "summary": {"total", "passed", "failed", "error", "skipped", "selected", "ran", "skipped_by_design",
                 "skipped_other", "not_run", "by_design_reasons": {reason: count}},
     "chain": {hop: {"server_name", "client_auth", "caller_presents_cert", "min_version", "max_version"},
               "ingress": {..., "hosts": [{"host", "client_auth", "api_path"}] (several hosts only)}},
     "cases": [{"id", "nodeid", "hop", "host", "endpoint", "via", "group", "column", "expected", "expected_outcome",
                "source", "variant", "identity", "result", "passed", "message", "by_design", "duration_s",
                "seen": {...}|null}],
     "links": {"gateway->apim": {"streams", "tls_versions", "bytes", "plaintext", ...}}    (optional)}

``result`` is ``passed``, ``failed`` (the hop answered differently), ``error`` (no answer to judge: the chain did not
start, the probe raised) or ``skipped``; ``passed`` is true/false, or null when skipped. ``by_design`` (skipped cases
only, else null): the target declared the limit that skipped it (:class:`harness.targets.base.ChainLimits`).
``host``: the ingress host a case probes when it is not the home host (ids end ``@<host>``), else null.

Skip accounting: ``selected`` is how many cases the run selected (null when unknown), ``ran`` how many were run to a
verdict (passed + failed + error), ``skipped_by_design`` the skips the target declared (their reasons counted in
``by_design_reasons``), ``skipped_other`` every other skip, ``not_run`` the selected cases that never reported (an
interrupted run). ``interrupted`` is true when the run was stopped (Ctrl-C); ``headline`` is the one line every report
shows: ``"120 of 166 ran on local, 46 skipped by design"`` or ``"interrupted: 12 of 166 cases ran on local …"``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.errors import HarnessError
from harness.model.topology import HOPS

if TYPE_CHECKING:
    from harness.cases.model import Case, CaseResult
    from harness.model.topology import Topology
    from harness.probe.outcomes import Outcome
    from harness.probe.result import CertInfo

__all__ = [
    "RESULTS_FILE",
    "SCHEMA",
    "STATUSES",
    "case_facts",
    "chain_facts",
    "count",
    "document",
    "headline",
    "layout_lines",
    "outcome_label",
    "redact",
    "seen_facts",
    "write_json",
    "write_text",
]

SCHEMA: Final = "mtls-harness/results/1"
RESULTS_FILE: Final = "results.json"
#: a case's result, in the order reports sort and count them
STATUSES: Final = ("failed", "error", "finding", "passed", "skipped")

#: short forms of the sentences the components answer with, for matrix cells ("400 no cert")
_SHORT_REASONS: Final = (
    ("no required ssl certificate was sent", "no cert"),
    ("the ssl certificate error", "cert error"),
    ("client certificate unauthorized", "unauthorized"),
    ("invalid client certificate", "invalid cert"),
    ("access token is missing or invalid", "bad token"),
    ("plain http request was sent to https port", "plain HTTP"),
    ("connection closed by the server", "closed"),
    ("certificate has expired", "expired"),
    ("certificate is not yet valid", "not yet valid"),
    ("unable to get local issuer certificate", "unknown issuer"),
    ("self-signed certificate", "self-signed"),
    ("self signed certificate", "self-signed"),
    ("hostname mismatch", "name mismatch"),
    ("san matcher", "name mismatch"),
    ("does not match", "name mismatch"),
    ("unsupported certificate purpose", "wrong EKU"),
    ("unsuitable certificate purpose", "wrong EKU"),
)
_KIND_LABELS: Final = {"upstream_failure": "upstream", "server_untrusted": "untrusted", "tls_alert": "alert",
                       "protocol_error": "protocol error", "unreachable": "unreachable", "ok": "ok"}

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
#: what is left of a block cut short (a truncated repr): its header, the base64 after it (also with escaped newlines)
#: and a stray header or footer
_PEM_REST = re.compile(r"-----BEGIN [A-Z0-9 ]+-----(?:\\[nr]|&#1[03];|[A-Za-z0-9+/=\s])*|-----END [A-Z0-9 ]+-----")
_ABS_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+~-]+/)+[\w.@+~-]+")
#: a report that contains this would carry a private key; writing it is refused outright
_KEY_MARKER: Final = "PRIVATE KEY"


# ------------------------------------------------------------------------------------------------------------------
# text
# ------------------------------------------------------------------------------------------------------------------
def redact(text: str | None, *, keys_only: bool = False) -> str | None:
    """``text`` with PEM blocks removed and absolute paths shortened; a path to a key file is not shown at all.

    Error messages and log tails may quote a config line (``ssl_certificate_key /…/key.pem``); reports keep the last
    two path components of other files (``apim-client/chain.pem``), enough to tell which leaf was used.
    ``keys_only``: leave other paths whole (for pytest's own JUnit text).
    """
    if text is None:
        return None

    def path(m: re.Match[str]) -> str:
        parts = m.group(0).rstrip("/").split("/")
        if "key" in parts[-1].lower():
            return "[key file]"
        return m.group(0) if keys_only else "…/" + "/".join(parts[-2:])

    text = _PEM_REST.sub("[PEM block removed]", _PEM_BLOCK.sub("[PEM block removed]", text))
    return _ABS_PATH.sub(path, text)


def _reason_label(reason: str | None, width: int = 18, *, known_only: bool = False) -> str:
    if not reason:
        return ""
    low = reason.lower().replace("_", " ")
    for needle, short in _SHORT_REASONS:
        if needle in low:
            return short
    if known_only:
        return ""
    reason = reason.split(". ")[0]
    return reason if len(reason) <= width else reason[: width - 1].rstrip() + "…"


def outcome_label(outcome: Mapping[str, Any] | Outcome | None) -> str:
    """A matrix cell's words for an outcome: ``400 no cert``, ``ok 200``, ``alert unknown_ca``, ``upstream 502
    expired`` (a known reason in short words, else the reason's first sentence, cut)."""
    if outcome is None:
        return "no answer"
    o = outcome if isinstance(outcome, Mapping) else _outcome_dict(outcome)
    kind, status, alert, reason = o.get("kind"), o.get("status"), o.get("alert"), o.get("reason")
    if kind == "http_reject":
        words = [str(status) if status is not None else "reject", _reason_label(reason)]
    elif kind == "tls_alert":
        words = ["alert", alert or _reason_label(reason) or "?"]
    elif kind == "ok":
        words = ["ok", str(status) if status is not None else ""]
    elif kind == "upstream_failure":  # the status, and why when it is a certificate verdict the table knows
        words = ["upstream", str(status) if status is not None else "", _reason_label(reason, known_only=True)]
    else:
        words = [_KIND_LABELS.get(str(kind), str(kind)), _reason_label(reason)]
    return " ".join(w for w in words if w)


def _outcome_dict(o: Outcome) -> dict[str, Any]:
    return {"kind": o.kind, "status": o.status, "alert": o.alert, "reason": o.reason}


# ------------------------------------------------------------------------------------------------------------------
# records
# ------------------------------------------------------------------------------------------------------------------
def _variant_name(case: Case) -> str | None:
    if case.variant is None:
        return None
    name = getattr(case.variant, "__name__", "variant")
    return None if name == "<lambda>" else name.lstrip("_")


def _probe_options(case: Case) -> dict[str, Any]:
    """The probe's own options a reader needs (versions, ALPN, path, plaintext, extra header names) — as text."""
    out: dict[str, Any] = {}
    for key, value in case.probe.items():
        if key == "headers" and isinstance(value, Mapping):
            out[key] = sorted(str(k) for k in value)
        elif isinstance(value, str | int | float | bool) or value is None:
            out[key] = value
        elif isinstance(value, Sequence):
            out[key] = [str(v) for v in value]
    return out


def case_facts(case: Case, identity: str | None = None) -> dict[str, Any]:
    """What the catalogue says about ``case`` (``identity``: the leaf it presented, when the caller resolved it)."""
    from harness.cases.model import DEFAULT_IDENTITY

    presented = case.identity if identity is None else identity
    return {
        "id": case.id, "hop": case.hop, "host": case.host, "endpoint": case.endpoint or case.hop, "via": case.via,
        "group": case.group,
        "column": case.column, "expected": str(case.expect), "expected_outcome": _outcome_dict(case.expect),
        "expected_label": outcome_label(case.expect), "source": case.source, "variant": _variant_name(case),
        "identity": ("the caller's own" if presented == DEFAULT_IDENTITY else presented) or "none",
        "probe": _probe_options(case),
    }


def _cert(c: CertInfo) -> dict[str, Any]:
    return {"subject": c.subject, "issuer": c.issuer, "sans": list(c.sans), "sha256": c.sha256,
            "serial": f"{c.serial:x}", "not_before": c.not_before.isoformat(), "not_after": c.not_after.isoformat()}


def _hop_trace(result: CaseResult) -> dict[str, dict[str, str]] | None:
    """The echo pod's hop trace (what each hop saw of its inbound TLS session), when the answer carries one."""
    from harness.model.wire import FIELDS

    if not result.seen.body.startswith(b"{"):
        return None
    try:
        doc = json.loads(result.seen.body)
    except ValueError:
        return None
    trace = doc.get("trace") if isinstance(doc, dict) else None
    if not isinstance(trace, dict):
        return None
    return {str(hop): {f: str(entry.get(f, "")) for f in FIELDS}
            for hop, entry in trace.items() if isinstance(entry, dict)}


def seen_facts(result: CaseResult) -> dict[str, Any]:
    """What the probe saw, as a record: outcome, handshake facts, peer chain, timing, the hop trace."""
    seen = result.seen
    first = result.message.splitlines()[0] if result.message else ""
    problem = first.partition(" — ")[2] if " — " in first else None
    return {
        "outcome": _outcome_dict(seen.outcome), "outcome_text": str(seen.outcome), "label": outcome_label(seen.outcome),
        "problem": redact(problem), "verdict": result.verdict,
        "finding": result.finding.id if result.finding is not None else None,
        "tls_version": seen.tls_version, "cipher": seen.cipher, "alpn": seen.alpn,
        "http_status": seen.status, "elapsed_ms": round(seen.elapsed * 1000, 2), "phase": seen.phase,
        "target": seen.target, "server_name": seen.server_name, "error": redact(seen.error),
        "peer_chain": [_cert(c) for c in seen.peer_chain], "hop_trace": _hop_trace(result),
    }


def chain_facts(topology: Topology) -> dict[str, dict[str, Any]]:
    """Per hop, what protects the session into it: its server name, client-auth mode and TLS bounds."""
    out: dict[str, dict[str, Any]] = {}
    for hop in HOPS:
        listener, caller = topology.listener_of(hop), topology.caller_of(hop)
        out[hop] = {"server_name": listener.hostname, "client_auth": listener.client_auth,
                    "caller_presents_cert": bool(caller.client_cert), "min_version": listener.min_version,
                    "max_version": listener.max_version}
    if len(topology.ingress.hosts) > 1:  # every host the controller serves: its client auth, the API that calls it
        views = [topology.focus_on(h) for h in topology.ingress.hosts]
        out["ingress"]["hosts"] = [{"host": v.ingress.host, "client_auth": v.listener_of("ingress").client_auth,
                                    "api_path": v.apim.path if v.apim.focus or v.ingress.focus is None else None}
                                   for v in views]
    return out


# ------------------------------------------------------------------------------------------------------------------
# the document
# ------------------------------------------------------------------------------------------------------------------
def count(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{"total", "passed", "failed", "error", "skipped"}`` over ``records``."""
    out = {"total": 0} | dict.fromkeys(STATUSES, 0)
    for r in records:
        out["total"] += 1
        out[str(r["result"])] = out.get(str(r["result"]), 0) + 1
    return out


def _accounting(records: Sequence[Mapping[str, Any]], selected: int | None, interrupted: bool) -> dict[str, Any]:
    """The skip accounting of ``summary`` (see the module docstring). A finished run with no ``selected`` count
    selected what it recorded; an interrupted one does not know."""
    counts = count(records)
    if selected is None and not interrupted:
        selected = counts["total"]
    by_design = [r for r in records if r["result"] == "skipped" and r.get("by_design")]
    reasons: dict[str, int] = {}
    for r in by_design:
        why = str(r.get("message") or "no reason given")
        reasons[why] = reasons.get(why, 0) + 1
    selected = max(selected, counts["total"]) if selected is not None else None
    return counts | {
        "selected": selected, "ran": counts["passed"] + counts["failed"] + counts["error"] + counts["finding"],
        "skipped_by_design": len(by_design), "skipped_other": counts["skipped"] - len(by_design),
        "not_run": None if selected is None else selected - counts["total"],
        "by_design_reasons": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def headline(doc: Mapping[str, Any]) -> str:
    """The run in one line: how many of the selected cases ran on which target, how many skipped and why in short."""
    s = doc["summary"]
    total = s.get("selected")
    of = f"{s['ran']} of {total if total is not None else '?'}"
    target = doc.get("target", "?")
    if doc.get("interrupted"):
        rest = [f"{s['skipped']} skipped" if s["skipped"] else "",
                f"{s['not_run']} not reached" if s.get("not_run") else ""]
        tail = ", ".join(x for x in rest if x)
        return f"interrupted: {of} cases ran on {target}" + (f" ({tail})" if tail else "")
    line = f"{of} ran on {target}, {s['skipped_by_design']} skipped by design"
    if s["skipped_other"]:
        line += f", {s['skipped_other']} skipped for reasons the target did not declare"
    if s.get("findings"):
        accepted = s["findings"] - s["findings_open"]
        line += f"; {s['findings']} finding(s) in the chain's configuration" + (f" ({accepted} accepted)"
                                                                                if accepted else "")
    return line


def document(records: Sequence[Mapping[str, Any]], *, target: str, pytest_exit: int | None = None,
             duration_s: float | None = None, chain: Mapping[str, Any] | None = None,
             links: Mapping[str, Any] | None = None, selected: int | None = None,
             interrupted: bool = False, identities: Mapping[str, str] | None = None,
             findings: Sequence[Mapping[str, Any]] | None = None,
             layout: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The results document for ``records`` (already in report order); ``selected``: how many cases the run
    selected; ``interrupted``: the run was stopped before it finished; ``layout``: how the variants ran (lanes of
    the chain's processes, the processes of their own and why: :meth:`harness.targets.lanes.LanePlan.summary`)."""
    from harness import __version__

    doc: dict[str, Any] = {
        "schema": SCHEMA, "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "target": target,
        "harness_version": __version__, "pytest_exit": pytest_exit,
        "duration_s": None if duration_s is None else round(duration_s, 2), "interrupted": interrupted,
        "summary": _accounting(records, selected, interrupted), "chain": dict(chain or {}), "cases": list(records),
    }
    if findings is not None:  # the chain's configuration's findings, with the cases that observed them
        from harness.report.findings import observe

        doc["findings"] = [dict(f, observed_by=list(f.get("observed_by", []))) for f in findings]
        observe(doc["findings"], records)
        doc["summary"]["findings"] = len(doc["findings"])
        doc["summary"]["findings_open"] = sum(1 for f in doc["findings"] if not f["accepted"])
    doc["headline"] = headline(doc)
    if links:
        doc["links"] = dict(links)
    if identities:  # a chain file's identities: "real" (the user's cert and key) or "shadow" (a stand-in)
        doc["identities"] = dict(identities)
    if layout:
        doc["layout"] = dict(layout)
    return doc


def layout_lines(layout: Mapping[str, Any]) -> list[str]:
    """The report's lines on how the variants ran: how many were lanes of the chain's own processes, which processes
    had to be their own and why, and the variants that ran as chains of their own and why."""
    if not layout:
        return []
    out = [f"variants: {layout.get('lanes', 0)} served as lanes of the chain's own processes (nothing restarted)"]
    by_reason: dict[str, list[str]] = {}
    for name, why in (layout.get("ingress_processes") or {}).items():
        by_reason.setdefault(why, []).append(name)
    for why, names in by_reason.items():
        out.append(f"  {len(names)} nginx of their own ({', '.join(names)}): {why}")
    if layout.get("not_lanes"):
        out.append(f"  {layout['not_lanes']} variant(s) ran as chains of their own: "
                   f"{'; '.join(layout.get('not_lanes_why') or [])}")
    return out


def _refuse_key_material(text: str, where: Path) -> None:
    if _KEY_MARKER in text:
        raise HarnessError(f"{where}: refusing to write a report that contains {_KEY_MARKER!r} — a record carried "
                           "key material; this is a bug in the report builder, please report it")


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temp file renamed into place), after checking for key material."""
    _refuse_key_material(text, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(doc: Mapping[str, Any], directory: Path) -> Path:
    """Write ``doc`` as ``directory/results.json``; returns the path."""
    path = directory / RESULTS_FILE
    write_text(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path
