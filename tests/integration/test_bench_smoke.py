"""The bench harness runs and its results have the agreed shape. No timing is asserted (STYLE.md: speed targets live
in bench/, which prints figures): only that the figures exist, are positive, and are reported next to a floor."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bench import cold_start, report, run
from bench.common import Bench, Row, Spread, bounded_loop, time_row


@pytest.mark.mtls_needs_chain
def test_cold_start_with_one_run_reports_the_chain_each_hop_and_the_floors() -> None:
    bench = cold_start.run(runs=1, warmup=False, experiment=False)

    assert isinstance(bench, Bench)
    assert bench.skipped is None
    doc = json.loads(json.dumps(bench.as_dict()))  # JSON-ready as results.json stores it
    assert set(doc) == {"name", "title", "skipped", "seconds", "rows", "details"}
    measures = [r["measure"] for r in doc["rows"]]
    chain = bench.row("chain start (all four hops ready)")
    assert chain is not None
    assert chain.value > 0
    assert chain.floor > 0
    assert chain.ratio > 0
    assert chain.spread is not None
    assert chain.spread.n == 1
    for hop in ("gateway", "apim", "ingress", "pod"):
        assert any(m.strip().startswith(f"hop {hop}:") for m in measures), hop
    for kind in ("nginx", "envoy", "python"):
        assert f"floor: bare {kind} start" in measures
        assert len(doc["details"]["floors"][kind]) == 1
    for row in doc["rows"]:
        assert set(row) >= {"measure", "value", "unit", "spread", "floor", "floor_name", "ratio", "note"}
        assert row["value"] is None or row["value"] >= 0


def test_tables_render_every_row_for_the_terminal_and_as_markdown() -> None:
    from rich.console import Console

    bench = Bench("x", "example")
    bench.rows = [time_row("a time", [0.2, 0.3, 0.4], floor=[0.1], floor_name="bare"),
                  Row("a rate", 50.0, "/s", floor=200.0, floor_name="s_time", lower_is_better=False)]
    skipped = Bench("y", "skipped one", skipped="no docker")
    out = io.StringIO()
    report.print_tables([bench, skipped], {"cores": 2, "versions": {}}, console=Console(file=out, width=200))
    text = out.getvalue()
    for part in ("a time", "3.0×", "a rate", "4.0×", "skipped — no docker"):
        assert part in text
    md = report.markdown([bench, skipped])
    assert md.count("\n| a ") == 2
    assert "skipped: no docker" in md


def test_spread_and_bounded_loop_shapes() -> None:
    s = Spread.of([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    assert (s.n, s.min, s.max, s.median, s.p90) == (10, 1.0, 10.0, 5.5, 9.0)
    loop = bounded_loop(lambda: True, seconds=5.0, max_count=7)
    assert (loop.count, loop.ok) == (7, 7)


def test_bad_options_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run.parse(["--only", "nonsense"])
    assert exc.value.code == 2
    assert "unknown benchmark nonsense" in capsys.readouterr().err


def test_chains_bench_reports_cases_generated_per_chain_without_running_them() -> None:
    from bench import chains

    bench = chains.run(runs=1, live=False)
    assert bench.skipped is None
    generated = {r.measure: r.value for r in bench.rows if r.measure.endswith(": cases generated")}
    assert set(generated) == {"reference: cases generated", "partner-mtls: cases generated",
                              "passthrough: cases generated", "20 ingress hosts: cases generated"}
    today = len(json.loads((Path(__file__).parents[1] / "unit" / "data" / "reference_catalogue.json").read_text()))
    assert generated["reference: cases generated"] == today  # today's catalogue (tests/unit/data)
    # the reference's cases and more for each of its 19 other hosts
    assert generated["20 ingress hosts: cases generated"] > today + 19
    assert all(v is not None and v > 0 for v in generated.values())
    timing = bench.row("partner-mtls: generate catalogue + predict findings")
    assert timing is not None
    assert timing.value is not None
    assert timing.value > 0
