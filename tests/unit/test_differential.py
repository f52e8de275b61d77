"""Twin vs live (harness/report/differential.py): each pair of results is one verdict, written from what the two runs
mean — the twin runs the configuration as read, production is what it is — not from the code's own table."""

from __future__ import annotations

import json

import pytest

from harness.report.differential import classify, differential, markdown, write_differential


def _case(result: str, seen: str = "", finding: str | None = None) -> dict[str, object]:
    return {"id": "c", "hop": "ingress", "host": None, "result": result, "expected": "http_reject(400)",
            "seen": {"outcome_text": seen, "finding": finding}}


@pytest.mark.parametrize(("twin", "live", "verdict"), [
    (_case("passed"), _case("passed"), "agree"),
    (_case("finding", finding="f@ingress"), _case("finding", finding="f@ingress"), "agree"),
    # production lets through what its own configuration refuses (the twin refused it): drift
    (_case("passed"), _case("failed", "ok(200)"), "DRIFT"),
    # production shows a weakness its configuration does not have, or lacks one it has: drift either way
    (_case("passed"), _case("finding", finding="f@ingress"), "DRIFT"),
    (_case("finding", finding="f@ingress"), _case("passed"), "DRIFT"),
    (_case("finding", finding="f@ingress"), _case("finding", finding="g@ingress"), "DRIFT"),
    # production behaves as configured and the twin does not: the twin is wrong
    (_case("failed", "ok(200)"), _case("passed"), "EMULATION GAP"),
    (_case("error", "no answer"), _case("passed"), "EMULATION GAP"),
    # both miss the prediction the same way: the model is wrong, the twin reproduced production
    (_case("failed", "ok(200)"), _case("failed", "ok(200)"), "EMULATION GAP"),
    (_case("failed", "ok(200)"), _case("failed", "tls_alert(handshake_failure)"), "DRIFT"),
    (_case("passed"), _case("skipped"), "twin only"),
    (_case("passed"), None, "twin only"),
    (_case("skipped"), _case("passed"), "live only"),
    (_case("skipped"), _case("skipped"), "run in neither"),
])
def test_each_pair_of_results_is_one_verdict(twin, live, verdict) -> None:
    assert classify(twin, live) == verdict


def test_the_differential_lists_every_case_of_both_runs_and_writes_json_and_markdown(tmp_path) -> None:
    twin = {"target": "local", "cases": [{**_case("passed"), "id": "a"}, {**_case("passed"), "id": "b"},
                                         {**_case("passed"), "id": "only-twin"}]}
    live = {"target": "azure", "cases": [{**_case("passed"), "id": "a"}, {**_case("failed", "ok(200)"), "id": "b"}]}
    doc = differential(twin, live, "rg-chain")
    assert [(r["id"], r["verdict"]) for r in doc["cases"]] == [("a", "agree"), ("b", "DRIFT"),
                                                               ("only-twin", "twin only")]
    assert doc["summary"]["DRIFT"] == 1
    assert (doc["twin_target"], doc["live_target"], doc["chain"]) == ("local", "azure", "rg-chain")
    js, md = write_differential(doc, tmp_path)
    assert json.loads(js.read_text())["cases"][1]["live_seen"] == "ok(200)"
    text = md.read_text()
    assert "| DRIFT | `b` |" in text
    assert "`a`" not in text  # agreeing cases are counted, not listed
    assert "No case differs" in markdown(differential(twin, twin))
