"""The hop × case matrix: one grid per case group, rows = hops, columns = the group's case columns.

The grid is built once from the results document (:func:`grids`) and drawn twice: as rich tables in the terminal
(:func:`print_matrix`) and as HTML tables (:mod:`harness.report.html`). A cell holds every case of its hop and column,
folded by what was seen: two cases that both passed with ``400 no cert`` read ``✓ 400 no cert ×2``; a failure shows
what was seen instead of what was expected (``✗ ok 200``); the expectation is one click (HTML) or one traceback
(terminal) away.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.model.topology import HOPS
from harness.report.results import STATUSES, count, headline

__all__ = ["SYMBOLS", "Cell", "CellLine", "Grid", "by_hop", "cell_status", "chain_line", "grids", "print_matrix"]

#: the mark in front of a cell line, per result (ASCII stand-ins for a terminal that cannot print them)
SYMBOLS: Final = {"passed": "✓", "failed": "✗", "error": "✗", "finding": "!", "skipped": "–"}
_ASCII: Final = {"passed": "ok", "failed": "FAIL", "error": "ERR", "finding": "FIND", "skipped": "skip"}
_STYLE: Final = {"passed": "green", "failed": "bold red", "error": "bold red", "finding": "bold yellow",
                  "skipped": "dim"}


@dataclass(frozen=True)
class CellLine:
    """Cases of one cell that ended alike: result, the words shown, how many, which."""

    status: str
    text: str
    case_ids: tuple[str, ...]

    def render(self, symbols: Mapping[str, str] = SYMBOLS) -> str:
        times = f" ×{len(self.case_ids)}" if len(self.case_ids) > 1 else ""
        return f"{symbols[self.status]} {self.text}{times}"


@dataclass(frozen=True)
class Cell:
    lines: tuple[CellLine, ...]

    @property
    def status(self) -> str:
        return cell_status(line.status for line in self.lines)


@dataclass(frozen=True)
class Grid:
    """One case group: its columns in catalogue order and one row per hop that has cases in the group."""

    group: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, tuple[Cell | None, ...]], ...]


def cell_status(statuses: Iterable[str]) -> str:
    """A cell's (or an edge's) colour: failed if any failed, then error, passed if any passed, skipped otherwise."""
    present = set(statuses)
    return next((s for s in STATUSES if s in present), "skipped")


def _line_text(record: Mapping[str, Any]) -> str:
    status = record["result"]
    if status == "skipped":
        return "skipped"
    seen = record.get("seen")
    if seen is None:
        return "error" if status == "error" else "no answer"
    return str(seen.get("label") or seen.get("outcome_text") or "?")


def _cell(records: Sequence[Mapping[str, Any]]) -> Cell:
    folded: dict[tuple[str, str], list[str]] = {}
    for r in records:
        folded.setdefault((str(r["result"]), _line_text(r)), []).append(str(r["id"]))
    order = {s: i for i, s in enumerate(STATUSES)}
    lines = [CellLine(status, text, tuple(ids)) for (status, text), ids in folded.items()]
    return Cell(tuple(sorted(lines, key=lambda ln: order.get(ln.status, 9))))


def grids(cases: Sequence[Mapping[str, Any]]) -> list[Grid]:
    """The matrix of ``cases`` (records of the results document), groups and columns in the order first seen."""
    by_group: dict[str, dict[str, dict[str, list[Mapping[str, Any]]]]] = {}
    spelling: dict[tuple[str, str], str] = {}  # columns differing only in case are one column ("unknown CA"/"ca")
    for r in cases:
        group = str(r["group"])
        column = spelling.setdefault((group, str(r["column"]).casefold()), str(r["column"]))
        by_group.setdefault(group, {}).setdefault(column, {}).setdefault(str(r["hop"]), []).append(r)
    out: list[Grid] = []
    for group, columns in by_group.items():
        hops: list[str] = [h for h in HOPS if any(h in cells for cells in columns.values())]
        hops += sorted({h for cells in columns.values() for h in cells} - set(hops))
        rows = tuple((hop, tuple(_cell(columns[c][hop]) if hop in columns[c] else None for c in columns))
                     for hop in hops)
        out.append(Grid(group, tuple(columns), rows))
    return out


def by_hop(cases: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Counts per hop (the TLS session into that hop): ``{hop: {"total", "passed", "failed", ...}}``, every hop."""
    return {hop: count(r for r in cases if r["hop"] == hop) for hop in HOPS}


def _edge_word(counts: Mapping[str, int], symbols: Mapping[str, str]) -> str:
    ran = counts["passed"] + counts["failed"] + counts["error"]
    if ran == 0:
        return f"{symbols['skipped']} 0"
    bad = counts["failed"] + counts["error"]
    return f"{symbols['failed']} {bad}/{ran}" if bad else f"{symbols['passed']} {ran}"


def chain_line(doc: Mapping[str, Any], symbols: Mapping[str, str] = SYMBOLS) -> Text:
    """``client ─✓ 31─▶ gateway ─✗ 2/40─▶ apim …``: the chain with the cases of each hop's inbound session."""
    stats = by_hop(doc["cases"])
    dash, arrow = ("─", "─▶ ") if symbols is SYMBOLS else ("-", "-> ")
    text = Text("client")
    for hop in HOPS:
        counts = stats[hop]
        status = cell_status(s for s in STATUSES if counts[s]) if counts["total"] else "skipped"
        text.append(f" {dash}")
        text.append(_edge_word(counts, symbols), style=_STYLE[status])
        text.append(arrow)
        text.append(hop, style="bold")
    return text


def _width(grid: Grid, index: int, symbols: Mapping[str, str]) -> int:
    lines = [ln.render(symbols) for _, cells in grid.rows if (c := cells[index]) for ln in c.lines]
    return max([len(grid.columns[index])] + [len(s) for s in lines])


def _chunks(grid: Grid, room: int, symbols: Mapping[str, str]) -> list[list[int]]:
    """Column indexes split so each table fits ``room`` characters (each column costs its width + 3)."""
    chunks: list[list[int]] = [[]]
    used = 0
    for i in range(len(grid.columns)):
        w = min(_width(grid, i, symbols), 28) + 3
        if chunks[-1] and used + w > room:
            chunks.append([])
            used = 0
        chunks[-1].append(i)
        used += w
    return chunks


def _table(grid: Grid, indexes: list[int], symbols: Mapping[str, str], title: str | None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_lines=True, expand=False)
    table.add_column("hop", style="bold", no_wrap=True)
    for i in indexes:
        table.add_column(grid.columns[i], max_width=28)
    for hop, cells in grid.rows:
        row: list[Text | str] = [hop]
        for i in indexes:
            cell = cells[i]
            if cell is None:
                row.append("")
                continue
            text = Text()
            for n, line in enumerate(cell.lines):
                text.append(("\n" if n else "") + line.render(symbols), style=_STYLE[line.status])
            row.append(text)
        table.add_row(*row)
    return table


def _symbols_for(console: Console) -> Mapping[str, str]:
    try:
        ("".join(SYMBOLS.values()) + "─▶×").encode(console.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return _ASCII
    return SYMBOLS


def print_matrix(doc: Mapping[str, Any], console: Console) -> None:
    """Print the matrix of ``doc`` (a results document) as one rich table per case group, then the chain line."""
    symbols = _symbols_for(console)
    cases = doc["cases"]
    if not cases:
        console.print("no mTLS cases ran — nothing to show")
        return
    for grid in grids(cases):
        room = max(40, console.width - 12)
        chunks = _chunks(grid, room, symbols)
        for n, indexes in enumerate(chunks):
            more = f" ({n + 1}/{len(chunks)})" if len(chunks) > 1 else ""
            console.print(_table(grid, indexes, symbols, f"{grid.group}{more}"))
    s = doc["summary"]
    console.print(chain_line(doc, symbols))
    parts = [f"{s[k]} {k}" for k in STATUSES if s.get(k)]
    if "ran" in s:  # the skip accounting (results documents written before it have only the counts)
        console.print(f"{headline(doc)} — {', '.join(parts)}")
    else:
        console.print(f"{s['total']} mTLS cases on the {doc.get('target', '?')} target: {', '.join(parts)}")
