"""docs/fidelity.md row 9 on real nginx and the echo pod: each connection case fails on the ingress as it was rendered
before row 9's directives (the rendered nginx.conf edited back before nginx starts or reloads) and passes as
rendered now. The cases themselves are in the catalogue (harness/cases/fidelity.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cases.fidelity import fidelity_cases
from harness.cases.model import Case, CaseResult, run_case
from harness.model.topology import default_topology
from harness.targets.local import LocalTarget

#: case id → the words its failure names on the old rendering
ROW9 = {
    "ingress-sends-no-server-header": "Server: nginx",
    "ingress-keeps-the-pod-connection-alive-between-requests": "did not keep the pod connection alive",
    "ingress-never-resumes-a-tls-session-to-the-pod": "resumed the TLS session",
    "ingress-tries-a-rejected-pod-cert-three-times": "tried the pod 1 time(s)",
}


def _before_row9(hop: str, config: Path | None, argv: list[str]) -> list[str]:
    """The ingress's nginx.conf without row 9's directives: Server header kept, no upstream keepalive, TLS sessions
    resumed (nginx's default), the pod listed once (one try)."""
    if hop == "ingress" and config is not None:
        text = config.read_text()
        text = text.replace("more_clear_headers Server;", "")
        text = text.replace("proxy_ssl_session_reuse off;", "proxy_ssl_session_reuse on;")
        text = re.sub(r"\n\s*keepalive(_time|_timeout|_requests)? [^;]+;", "", text)
        text = re.sub(r"(''\s+)'';", r"\1close;", text)
        servers = re.findall(r"\n\s*server \S+ max_fails=0;", text)
        assert len(servers) == 3, "the rendered upstream no longer lists the pod three times"
        text = text.replace(servers[0], "", 2)
        config.write_text(text)
    return argv


def _cases() -> dict[str, Case]:
    return {c.id: c for c in fidelity_cases() if c.id in ROW9}


def _run(case_id: str, *, before_row9: bool) -> CaseResult:
    target = LocalTarget(default_topology(), tamper=_before_row9 if before_row9 else None)
    with target as chain:
        return run_case(_cases()[case_id], chain, target.reconfigure)


def test_every_row9_case_is_in_the_catalogue() -> None:
    assert set(_cases()) == set(ROW9)


@pytest.mark.parametrize("case_id", sorted(ROW9))
def test_a_row9_case_fails_on_the_rendering_before_row9(case_id: str) -> None:
    result = _run(case_id, before_row9=True)
    assert not result.passed, result.message
    assert ROW9[case_id] in result.message, result.message


@pytest.mark.parametrize("case_id", sorted(ROW9))
def test_a_row9_case_passes_on_the_rendering_now(case_id: str) -> None:
    result = _run(case_id, before_row9=False)
    assert result.passed, result.message
