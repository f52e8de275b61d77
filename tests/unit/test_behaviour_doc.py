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



def _every_case_rows() -> dict[str, tuple[str, str]]:
    body = DOC.read_text().split("## Every case and its cause", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    for line in body.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 3, line
        rows[cells[0].strip("`")] = (cells[1].strip("`"), cells[2])
    return rows


def test_every_case_id_is_documented_with_its_expectation_and_source() -> None:
    rows = _every_case_rows()
    assert sorted(set(IDS) - set(rows)) == [], "cases missing from docs/behaviour.md 'Every case and its cause'"
    assert sorted(set(rows) - set(IDS)) == [], "docs/behaviour.md names cases the catalogue does not have"
    for case in CATALOGUE:
        expected, source = rows[case.id]
        assert expected == str(case.expect), case.id
        assert source, case.id


def test_every_documented_rejection_names_its_deciding_hop_and_cause() -> None:
    for case_id, (expected, _source) in _every_case_rows().items():
        if expected.split("(", 1)[0] in ("http_reject", "tls_alert", "server_untrusted", "upstream_failure"):
            assert re.search(r" by \S+ for \S+$", expected), case_id


def test_the_measured_cause_strings_are_recorded() -> None:
    text = DOC.read_text()
    for measured in ("_certificate_has_expired", "_SAN_matcher", "(10:certificate has expired)",
                     "client sent no required SSL certificate", "PEER_DID_NOT_RETURN_A_CERTIFICATE",
                     "connect() failed (111: Connection refused)"):
        assert measured in text, measured
