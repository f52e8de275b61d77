"""docs/behaviour.md stays true to the catalogue: every case it names exists, every row names one and a source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cases.catalogue import CATALOGUE

DOC = Path(__file__).resolve().parents[2] / "docs" / "behaviour.md"
IDS = {c.id for c in CATALOGUE}
SECTIONS = ("The ingress (ingress-nginx, rendered from its annotations)", "The gateway (App Gateway stand-in: Envoy)",
            "API Management (stand-in: Envoy)")


def _rows(section: str) -> list[list[str]]:
    body = DOC.read_text().split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in body.splitlines() if line.startswith("| ") and not line.startswith("| case")]
    return [[cell.strip() for cell in row.strip().strip("|").split(" | ")] for row in rows]


@pytest.mark.parametrize("section", SECTIONS)
def test_every_behaviour_row_names_existing_cases_and_a_source(section: str) -> None:
    rows = _rows(section)
    assert rows, f"no rows under {section}"
    for cells in rows:
        assert len(cells) == 4, cells
        covered = re.findall(r"`([^`]+)`", cells[3])
        assert covered, f"row without a covering case: {cells[0]}"
        assert [c for c in covered if c not in IDS] == [], cells[0]
        assert cells[2], f"row without a source: {cells[0]}"


def test_the_ingress_table_has_a_row_for_every_documented_ingress_nginx_behaviour() -> None:
    text = " ".join(cells[0] for cells in _rows(SECTIONS[0]))
    for behaviour in ("optional_no_ca", "verify-client off", "error-page", "pass-certificate-to-upstream",
                      "match-cn", "malformed CA secret", "another namespace", "proxy-ssl-verify", "passthrough",
                      "depth"):
        assert behaviour in text, behaviour


def test_every_catalogue_case_names_its_source() -> None:
    assert [c.id for c in CATALOGUE if not c.source.strip()] == []

