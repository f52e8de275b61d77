"""A run on a chain with a weakness in its own configuration (the partner-mtls example: ingress-nginx
``auth-tls-verify-client: optional_no_ca``): the weakness is a FINDING, with its manifest line, observed by the case
whose refusal it defeats; a case it does not defeat still passes; the run exits 1 until the chain file accepts it.

Expected behaviour: nginx ``ssl_verify_client optional_no_ca`` lets a certificate with an unknown issuer through and
still refuses an expired one with 400 (ngx_ssl_verify_error_optional, nginx src/event/ngx_event_openssl.h).
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FINDING = "ingress-requires-a-verified-client-cert@ingress"
CASES = "ingress_rejects_client_cert_unknown_ca_tls1_2 or ingress_rejects_client_cert_expired_tls1_2"


def _run(chain: Path, report: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", "run", "--chain", str(chain), "-k", CASES,
                           "--report", str(report)], capture_output=True, text=True, cwd=REPO, check=False,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_a_finding_is_reported_with_its_line_and_fails_the_run_until_accepted(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "harness", "init", str(tmp_path / "p"), "--example", "partner-mtls"],
                         capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    chain = tmp_path / "p" / "chain.yaml"

    first = _run(chain, tmp_path / "r1")
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-2000:]
    assert f"FINDING {FINDING}" in first.stdout
    assert f"{tmp_path / 'p' / 'k8s' / 'ingress.yaml'}:11" in first.stdout
    doc = json.loads((tmp_path / "r1" / "results.json").read_text())
    results = {c["id"]: c["result"] for c in doc["cases"]}
    assert results == {"ingress-rejects-client-cert-unknown-ca-tls1.2": "finding",
                       "ingress-rejects-client-cert-expired-tls1.2": "passed"}
    assert doc["findings"][0]["observed_by"] == ["ingress-rejects-client-cert-unknown-ca-tls1.2"]
    assert doc["summary"]["findings_open"] == 1
    props = {p.get("name"): p.get("value")
             for p in ET.parse(tmp_path / "r1" / "junit.xml").iter("property")
             if p.get("name") in ("mtls_verdict", "mtls_finding") and p.get("value") in ("finding", FINDING)}
    assert props == {"mtls_verdict": "finding", "mtls_finding": FINDING}
    assert "FINDINGS" in (tmp_path / "r1" / "index.html").read_text()
    summary = (tmp_path / "r1" / "summary.md").read_text()  # what the PR workflows post (deploy/ci/)
    assert summary.startswith("## mTLS chain: FINDINGS")
    assert f"| **open** | `{FINDING}` |" in summary
    assert f"`{tmp_path / 'p' / 'k8s' / 'ingress.yaml'}:11`" in summary

    chain.write_text(chain.read_text() + f"accept:\n  - finding: {FINDING}\n"
                     "    reason: partners are pinned by match-cn until their CA is onboarded\n")
    second = _run(chain, tmp_path / "r2")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert f"ACCEPTED (partners are pinned by match-cn until their CA is onboarded) {FINDING}" in second.stdout
