"""Findings as the reports show them: the property, the hop, what gets through, the setting and its ``file:line``,
whether the chain file accepts it (and why), and the cases that observed it.

    records = finding_records(predict(topology), where=loaded.where, accepted=loaded.accepted)
    doc = document(case_records, target="local", findings=records)     # adds observed_by from the case records
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from harness.findings.predict import Finding, Setting, predict

__all__ = ["chain_findings", "finding_lines", "finding_records", "observe", "stale_acceptances"]


def finding_records(findings: Iterable[Finding], *, where: Callable[[Setting], str] | None = None,
                    accepted: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """One record per finding (the shape results.json's ``findings`` holds)."""
    accepted = accepted or {}
    out = []
    for f in findings:
        out.append({
            "id": f.id, "property": f.property.id, "statement": f.property.statement, "hop": f.hop,
            "lets_through": f.lets_through, "setting": f.setting.text,
            "where": where(f.setting) if where is not None else "the reference chain (mtls-harness init writes it)",
            "source": f.source, "accepted": f.id in accepted, "reason": accepted.get(f.id),
            "observed_by": [],
        })
    return out


def chain_findings(loaded: Any) -> list[dict[str, Any]]:
    """The findings of a loaded chain file (:class:`harness.chainfile.load.LoadedChain`): each with the ``file:line``
    of its setting, and accepted or not by the file's ``accept:``."""
    return finding_records(predict(loaded.topology), where=loaded.where, accepted=loaded.accepted)


def stale_acceptances(findings: Sequence[Mapping[str, Any]], accepted: Mapping[str, str]) -> list[str]:
    """The accepted ids that are no finding of this chain (an acceptance left behind after a fix)."""
    have = {f["id"] for f in findings}
    return sorted(a for a in accepted if a not in have)


def observe(findings: list[dict[str, Any]], cases: Iterable[Mapping[str, Any]]) -> None:
    """Fill each finding's ``observed_by`` with the ids of the cases whose verdict was that finding."""
    by_id = {f["id"]: f for f in findings}
    for rec in cases:
        seen = rec.get("seen") or {}
        if rec.get("result") == "finding" and seen.get("finding") in by_id:
            by_id[seen["finding"]]["observed_by"].append(rec.get("id"))


def finding_lines(findings: Sequence[Mapping[str, Any]], *, ran: bool = True) -> list[str]:
    """The terminal's lines for the findings: open ones first (``ran``: after a run, say which cases observed
    each)."""
    lines = []
    for f in sorted(findings, key=lambda f: (f["accepted"], f["hop"], f["id"])):
        word = f"ACCEPTED ({f['reason']})" if f["accepted"] else "FINDING"
        seen = (f"observed by {len(f['observed_by'])} case(s): {', '.join(f['observed_by'][:3])}"
                + (", …" if len(f["observed_by"]) > 3 else "")) if f["observed_by"] else \
            "predicted from the configuration; no case of this run observed it"
        lines += [f"{word} {f['id']}: {f['statement']} — broken at {f['hop']}",
                  f"    lets through: {f['lets_through']}",
                  f"    set by {f['setting']}", f"    at {f['where']}", *([f"    {seen}"] if ran else [])]
    return lines
