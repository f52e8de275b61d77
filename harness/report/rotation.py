"""The rotation rehearsal's report: a timeline plot, the per-step table, the figures and every failed request.

    paths = write_rotation_report(result, Path("report"))       # timeline.png, steps.md, rotation.json, plan.yaml

- ``timeline.png`` (or ``.svg``): answered requests per second and failed ones over time, the steps marked where they
  were applied (numbered as in the table);
- ``steps.md``: the verdict, the figures, one row per step (when, how long the hot reload took, requests, failures,
  the rejections) and the probe table (what each hop served and accepted after each step, expected vs seen);
- ``rotation.json``: the same as data, plus every failed request with its time, hop and reason;
- ``plan.yaml``: the plan that ran, in the plan file format (the default plan too, ready to review and edit).

Nothing here holds key material: certificates appear by name and fingerprint only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from harness.errors import UsageError, need_extra

if TYPE_CHECKING:
    from harness.rotation.rehearsal import RehearsalResult

__all__ = ["plot_timeline", "steps_markdown", "write_rotation_report"]

#: width of one bar of the timeline, in seconds (finer for short rehearsals)
_MIN_BIN: Final = 0.25
_COLOURS: Final = {"ok": "#1a7f37", "failed": "#cf222e", "reset": "#bf8700", "step": "#57606a"}


def _bin_width(duration: float) -> float:
    return max(_MIN_BIN, round(duration / 120, 2))


def plot_timeline(result: RehearsalResult, path: Path) -> Path:
    """Requests/s and failures/s over time, steps marked; PNG or SVG by ``path``'s suffix."""
    need_extra("plot", "the rotation timeline plot")
    import matplotlib

    matplotlib.use("Agg")  # no display here, and no GUI toolkit wanted
    import matplotlib.pyplot as plt

    duration = max([r.end for r in result.records] + [s.ended for s in result.steps] + [1.0])
    width = _bin_width(duration)
    n_bins = int(duration / width) + 1
    series: dict[str, list[float]] = {k: [0.0] * n_bins for k in ("ok", "failed", "reset")}
    resets = {id(r) for s in result.steps for r in s.resets}
    for r in result.records:
        kind = "ok" if r.ok else "reset" if id(r) in resets else "failed"
        series[kind][min(int(r.end / width), n_bins - 1)] += 1 / width
    xs = [i * width for i in range(n_bins)]
    fig, ax = plt.subplots(figsize=(11, 4.2), dpi=110)
    try:
        ax.bar(xs, series["ok"], width=width, align="edge", color=_COLOURS["ok"], label="answered (ok) /s")
        ax.bar(xs, series["reset"], width=width, align="edge", bottom=series["ok"], color=_COLOURS["reset"],
               label="reset by an nginx reload /s")
        stacked = [a + b for a, b in zip(series["ok"], series["reset"], strict=True)]
        ax.bar(xs, series["failed"], width=width, align="edge", bottom=stacked, color=_COLOURS["failed"],
               label="failed /s")
        top = max([a + b for a, b in zip(stacked, series["failed"], strict=True)] + [1.0])
        for s in result.steps:
            if s.step is None:
                continue
            ax.axvline(s.started, color=_COLOURS["step"], linestyle="--", linewidth=0.8)
            ax.text(s.started, top * 1.02, str(s.index), ha="center", va="bottom", fontsize=8,
                    color="#cf222e" if s.failures or s.error else _COLOURS["step"])
        verdict = "PASS" if result.passed else "FAIL"
        ax.set_title(f"rotation rehearsal {verdict}: {result.plan.name} — {result.load.requests} requests, "
                     f"{result.failed_requests} failed (numbers: steps, see steps.md)", fontsize=9)
        ax.set_xlabel("seconds since the load started")
        ax.set_ylabel("requests per second")
        ax.set_ylim(0, top * 1.12)
        ax.set_xlim(0, duration)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def steps_markdown(result: RehearsalResult) -> str:
    """The verdict, the figures, the step table and the probe table, as markdown."""
    f = result.figures()
    out = [f"# Rotation rehearsal: {'PASS' if result.passed else 'FAIL'}", ""]
    out += [f"Plan: `{result.plan.name}` ({result.plan.source}), {f['steps']} steps.", ""]
    out += [f"- {r}" for r in result.reasons] + ([""] if result.reasons else [])
    out += ["## Figures", "", "| figure | value |", "|---|---|"]
    out += [f"| {k} | {_cell(v)} |" for k, v in f.items()]
    out += ["", "## Steps", "",
            "| # | step | at (s) | reload | hot reload (ms) | requests | failed | resets | rejections |",
            "|---|---|---|---|---|---|---|---|---|"]
    for s in result.steps:
        what = "baseline (current set)" if s.step is None else s.step.describe()
        how = s.error or (s.how + (" + recycle" if s.recycled else "")) or "—"
        rej = "; ".join(f"{w} ×{c}" for w, c in s.rejections()) or "—"
        reload_ms = f"{s.applied_in * 1000:.0f}" if s.step is not None else "—"
        out.append(f"| {s.index} | {_cell(what)} | {s.started:.2f} | {_cell(how)} | {reload_ms} | {s.requests} | "
                   f"{len(s.failures)} | {len(s.resets)} | {_cell(rej)} |")
    out += ["", "## Probes after each step", "",
            "Fresh handshakes after each step: the leaf each hop serves (by fingerprint), whether each link's caller "
            "connects with what it holds now, which client identities each checking hop accepts.", "",
            "| # | hop | check | expected | seen | detail |", "|---|---|---|---|---|---|"]
    for s in result.steps:
        for p in s.probes:
            mark = "" if p.matches else " ✗"
            seen = p.seen + (f" ({p.sha256[:16]}…)" if p.sha256 else "")
            out.append(f"| {p.step} | {p.hop} | {_cell(p.check)} | {_cell(p.expected)} | {_cell(seen)}{mark} | "
                       f"{_cell(p.detail)} |")
    if result.final:
        out += ["", "## Final state", ""] + [f"- {d}" for d in result.final]
    return "\n".join(out) + "\n"


def write_rotation_report(result: RehearsalResult, directory: Path,
                          plot_format: Literal["png", "svg"] = "png") -> dict[str, Path]:
    """Write the report files into ``directory`` (created); returns them by kind."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--report {directory}: is a file — name a directory for the report")
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "timeline": plot_timeline(result, directory / f"timeline.{plot_format}"),
        "steps": directory / "steps.md",
        "json": directory / "rotation.json",
        "plan": directory / "plan.yaml",
    }
    paths["steps"].write_text(steps_markdown(result))
    paths["json"].write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    paths["plan"].write_text(result.plan.as_yaml())
    return paths
