"""Twin vs live: the same chain file run on the local twin and against production, compared case by case.

    doc = differential(twin_results, live_results)      # two results.json documents (harness.report.results)
    write_differential(doc, Path("reports"))             # differential.json + differential.md

Both runs judge each case against the same expectation (the chain file's generated catalogue), so the pair of
results says where a difference comes from:

- ``agree`` — both as predicted (passed, or the same finding), or both refused the same way;
- ``DRIFT`` — the twin, running the configuration as read, behaves as predicted and production does not: production
  differs from its own configuration (a controller not reloaded, a certificate not rotated, a setting changed by hand
  and not in the resources read, …);
- ``EMULATION GAP`` — production behaves as predicted and the twin does not, or both fail the prediction the same way:
  the twin (or the behaviour model) is wrong — a fidelity bug to file with both results;
- ``twin only`` — the live run could not run the case (read-only: no key of a production identity, a hop the runner
  cannot reach); ``live only`` — the other way round; ``run in neither`` — skipped by both (by design).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.pki.x509 import write_atomic

__all__ = ["DIFF_JSON", "DIFF_MD", "VERDICTS", "classify", "differential", "write_differential"]

DIFF_JSON = "differential.json"
DIFF_MD = "differential.md"
VERDICTS = ("DRIFT", "EMULATION GAP", "agree", "twin only", "live only", "run in neither")

_AS_PREDICTED = ("passed", "finding")
_RAN = ("passed", "finding", "failed", "error")


def _seen(case: Mapping[str, Any] | None) -> str:
    seen = (case or {}).get("seen") or {}
    return str(seen.get("outcome_text") or (case or {}).get("message") or "")


def classify(twin: Mapping[str, Any] | None, live: Mapping[str, Any] | None) -> str:
    """The verdict for one case id from its twin and live records (None: the case is not in that run)."""
    t = (twin or {}).get("result")
    lv = (live or {}).get("result")
    if lv not in _RAN:
        return "twin only" if t in _RAN else "run in neither"
    if t not in _RAN:
        return "live only"
    if t in _AS_PREDICTED and lv in _AS_PREDICTED:
        same = t == lv and ((twin or {}).get("seen") or {}).get("finding") == ((live or {}).get("seen") or {}).get(
            "finding")
        return "agree" if same else "DRIFT"
    if t in _AS_PREDICTED:
        return "DRIFT"
    if lv in _AS_PREDICTED:
        return "EMULATION GAP"
    return "EMULATION GAP" if _seen(twin) == _seen(live) else "DRIFT"


def differential(twin: Mapping[str, Any], live: Mapping[str, Any], chain: str | None = None) -> dict[str, Any]:
    """The comparison of two results.json documents of the same chain file."""
    t_cases = {c["id"]: c for c in twin.get("cases", [])}
    l_cases = {c["id"]: c for c in live.get("cases", [])}
    rows = []
    for cid in sorted(set(t_cases) | set(l_cases)):
        tc, lc = t_cases.get(cid), l_cases.get(cid)
        verdict = classify(tc, lc)
        rows.append({"id": cid, "hop": (tc or lc or {}).get("hop"), "host": (tc or lc or {}).get("host"),
                     "verdict": verdict, "twin": (tc or {}).get("result", "absent"),
                     "live": (lc or {}).get("result", "absent"), "expected": (tc or lc or {}).get("expected"),
                     "twin_seen": _seen(tc), "live_seen": _seen(lc)})
    counts = {v: sum(1 for r in rows if r["verdict"] == v) for v in VERDICTS}
    return {"schema": "mtls-harness/differential/1", "twin_target": twin.get("target"),
            "live_target": live.get("target"), "chain": chain,
            "summary": counts, "cases": rows}


def markdown(doc: Mapping[str, Any]) -> str:
    s = doc["summary"]
    lines = [f"# Twin vs live — chain {doc.get('chain')}", "",
             " · ".join(f"{v}: {s[v]}" for v in VERDICTS), ""]
    odd = [r for r in doc["cases"] if r["verdict"] in ("DRIFT", "EMULATION GAP")]
    if odd:
        lines += ["| verdict | case | expected | twin saw | live saw |", "|---|---|---|---|---|"]
        lines += [f"| {r['verdict']} | `{r['id']}` | {r['expected']} | {r['twin']}: {r['twin_seen'] or '—'} | "
                  f"{r['live']}: {r['live_seen'] or '—'} |" for r in odd]
    else:
        lines.append("No case differs between the twin and production.")
    return "\n".join(lines) + "\n"


def write_differential(doc: Mapping[str, Any], directory: Path) -> tuple[Path, Path]:
    js, md = directory / DIFF_JSON, directory / DIFF_MD
    write_atomic(js, (json.dumps(doc, indent=2) + "\n").encode())
    write_atomic(md, markdown(doc).encode())
    return js, md
