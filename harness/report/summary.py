"""``summary.md``: the run in Markdown for a pull request comment or a CI job summary — the headline, the findings
(setting and ``file:line``, open ones first), the failures, and what skipped by design.

    text = markdown(doc)        # doc: the results document (harness.report.results.document)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report.results import layout_lines

__all__ = ["SUMMARY_FILE", "markdown"]

SUMMARY_FILE = "summary.md"


def _cell(value: Any) -> str:
    return str(value if value is not None else "—").replace("|", "\\|").replace("\n", " ")


def markdown(doc: Mapping[str, Any]) -> str:
    s = doc["summary"]
    findings = doc.get("findings") or []
    open_ = [f for f in findings if not f["accepted"]]
    bad = [c for c in doc["cases"] if c["result"] in ("failed", "error")]
    verdict = "FAILED" if bad or doc.get("interrupted") else ("FINDINGS" if open_ else "passed")
    out = [f"## mTLS chain: {verdict}", "", f"{doc.get('headline', '')} — target `{doc.get('target')}`", "",
           f"passed {s.get('passed', 0)} · failed {s.get('failed', 0)} · error {s.get('error', 0)} · "
           f"finding {s.get('finding', 0)} · skipped {s.get('skipped', 0)}", ""]
    if findings:
        out += [f"### Findings ({len(open_)} open, {len(findings) - len(open_)} accepted)", "",
                "What the chain's own configuration lets through (docs/findings.md).", "",
                "| | finding | lets through | set by | at | observed by |", "|---|---|---|---|---|---|"]
        for f in sorted(findings, key=lambda f: (f["accepted"], f["hop"], f["id"])):
            word = f"accepted: {_cell(f['reason'])}" if f["accepted"] else "**open**"
            seen = ", ".join(f"`{c}`" for c in f["observed_by"][:3]) + (
                f" (+{len(f['observed_by']) - 3})" if len(f["observed_by"]) > 3 else "") or "predicted only"
            out.append(f"| {word} | `{f['id']}` | {_cell(f['lets_through'])} | `{_cell(f['setting'])}` | "
                       f"`{_cell(f['where'])}` | {seen} |")
        out.append("")
    if bad:
        out += [f"### Failures ({len(bad)})", "", "The chain did not do what its configuration says.", "",
                "| case | hop | expected | seen | why |", "|---|---|---|---|---|"]
        out += [f"| `{c['id']}` | {c['hop']} | `{_cell(c.get('expected'))}` | "
                f"`{_cell((c.get('seen') or {}).get('outcome_text'))}` | {_cell(c.get('message'))} |" for c in bad]
        out.append("")
    layout = layout_lines(doc.get("layout") or {})
    if layout:
        out += [f"- {line.strip()}" for line in layout] + [""]
    reasons = s.get("by_design_reasons") or {}
    if reasons:
        out += ["<details><summary>skipped by design</summary>", ""]
        out += [f"- {n} × {_cell(why)}" for why, n in reasons.items()]
        out += ["", "</details>", ""]
    return "\n".join(out)
