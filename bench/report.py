"""Printing a bench run: a rich table per benchmark on the terminal, the same table as Markdown for BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.common import Bench, Row


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "/s":
        return f"{value:,.1f}/s" if value < 100 else f"{value:,.0f}/s"
    return f"{value:.2f}" if value != int(value) else f"{int(value)}"


def spread_text(row: Row) -> str:
    s = row.spread
    if s is None or s.n < 2:
        return ""
    return f"{fmt(s.min, row.unit)} / {fmt(s.p90, row.unit)} / {fmt(s.max, row.unit)} (n={s.n})"


def ratio_text(row: Row) -> str:
    r = row.ratio
    return "" if r is None else f"{r:.1f}×"


def cells(row: Row) -> list[str]:
    floor = "" if row.floor is None else f"{fmt(row.floor, row.unit)} ({row.floor_name})"
    return [row.measure, fmt(row.value, row.unit), spread_text(row), floor, ratio_text(row), row.note]


HEADERS = ["measure", "median / value", "min / p90 / max", "floor (same run)", "× floor", "note"]


def print_tables(benches: Sequence[Bench], machine: dict[str, Any], *, console: Any = None) -> None:
    import shutil

    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(shutil.get_terminal_size((170, 24)).columns, 150))
    v = machine.get("versions", {})
    console.print(f"[bold]mtls-harness bench[/] — {machine.get('cores')} cores, {machine.get('cpu_model')}, load "
                  f"{machine.get('load_average')}; envoy {v.get('envoy')}, nginx {v.get('nginx')}, "
                  f"{v.get('openssl (CLI)')}, python {v.get('python')}")
    for b in benches:
        if b.skipped:
            console.print(f"[yellow]{b.title}: skipped — {b.skipped}[/]")
            continue
        table = Table(title=f"{b.title}  ({b.seconds:.0f} s)", title_justify="left", show_lines=False)
        for i, h in enumerate(HEADERS):
            table.add_column(h, justify="right" if i in (1, 4) else "left", overflow="fold",
                             max_width=70 if h == "note" else None)
        for row in b.rows:
            table.add_row(*cells(row))
        console.print(table)
    console.print("× floor: cost relative to the floor measured in the same run (time ÷ floor time, or floor rate "
                  "÷ rate); 1.0× is the floor itself.")


def markdown(benches: Sequence[Bench]) -> str:
    lines: list[str] = []
    for b in benches:
        lines.append(f"**{b.title}**" + (f" — skipped: {b.skipped}" if b.skipped else f" ({b.seconds:.0f} s)"))
        lines.append("")
        if b.skipped:
            continue
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "|".join(["---", "---:", "---", "---", "---:", "---"]) + "|")
        for row in b.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells(row)) + " |")
        lines.append("")
    return "\n".join(lines)
