"""The process-starting half of tests/unit/test_chain_usability.py (issue 16's usability findings), on real nginx,
Envoy and the echo pod.

Expected answers: a case needing a reference name the chain lacks skips by design with the issue-17 reason, so
`--mtls-require-tools` passes; App Gateway Strict answers 200 with the client's cert and 400 "No required SSL
certificate was sent" without (REFERENCES.md, ronaldbosma/mtls-with-apim-and-agw).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

import harness.runtime.process as process_registry
from harness.cli.main import main

REPO = Path(__file__).resolve().parents[2]
ISSUE_17 = "this case is not generated from your chain yet (docs/chain-file.md#run---chain-today)"


@pytest.fixture(autouse=True)
def own_process_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nested pytest session of `run` stops the processes it started: give it a registry of its own."""
    monkeypatch.setattr(process_registry, "_LIVE", weakref.WeakSet())


def _init(tmp_path: Path, *extra: str) -> Path:
    out = subprocess.run([sys.executable, "-m", "harness", "init", str(tmp_path / "c"), *extra],
                         capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    return tmp_path / "c" / "chain.yaml"


def test_run_chain_with_other_names_runs_the_cases_generated_for_them(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The catalogue is generated from the chain (issue 17): a cross-domain case presents the chain's OWN leaf of
    the foreign domain (fab-consumer-client); a case whose variant still needs a reference name (the gateway made
    Strict with the reference's consumer-client, on a chain whose gateway is not Strict) skips by design."""
    chain = _init(tmp_path)
    text = chain.read_text()
    for name in ("apim-client", "consumer-client"):  # identities renamed; paths keep their names
        text = re.sub(rf"(?<![\w/.-]){name}(?![\w.-])", f"fab-{name}", text)
    chain.write_text(text)
    report = tmp_path / "report"
    code = main(["run", "--chain", str(chain), "--report", str(report), "-k",
                 "ingress_accepts_apims_client_cert_tls1_2 or ingress_refuses_client_cert_from_consumer_ca or "
                 "gateway_strict_accepts_valid_client_cert_tls1_2",
                 "--", "--mtls-require-tools", "-p", "no:randomly"])
    capsys.readouterr()
    results = json.loads((report / "results.json").read_text())
    assert code == 0, results["summary"]
    by_id = {c["id"]: c for c in results["cases"]}
    assert by_id["ingress-accepts-apims-client-cert-tls1.2"]["passed"] is True
    assert by_id["ingress-accepts-apims-client-cert-tls1.2"]["identity"] == "fab-apim-client"
    foreign = by_id["ingress-refuses-client-cert-from-consumer-ca"]
    assert (foreign["result"], foreign["identity"]) == ("passed", "fab-consumer-client")
    skipped = by_id["gateway-strict-accepts-valid-client-cert-tls1.2"]
    assert skipped["by_design"] is True
    assert results["summary"]["by_design_reasons"] == {
        f"needs the reference chain's consumer-client; {ISSUE_17}": 1}


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl (the line up prints is a curl command)")
def test_up_prints_a_curl_line_that_passes_a_strict_gateway_and_says_when_it_stopped(tmp_path: Path) -> None:
    chain = _init(tmp_path, "--example", "partner-mtls")  # App Gateway Strict with a partner's CA
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--chain", str(chain), "--duration", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = ""
        assert proc.stdout is not None
        for _ in range(200):  # bounded: the table, the cert set line, then the try line
            line = proc.stdout.readline()
            if not line or line.startswith("try: "):
                break
        assert line.startswith("try: curl --cert "), line
        argv = shlex.split(line.removeprefix("try: "))
        ok = subprocess.run([*argv, "-s", "-o", "/dev/null", "-w", "%{http_code}"], capture_output=True, text=True,
                            check=False, timeout=30)
        assert ok.stdout == "200", ok.stderr
        i = argv.index("--cert")
        bare = argv[:i] + argv[i + 4:]  # without --cert/--key
        refused = subprocess.run([*bare, "-s"], capture_output=True, text=True, check=False, timeout=30)
        assert "No required SSL certificate was sent" in refused.stdout
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=15)
    assert proc.returncode == 0
    assert "stopped after 20 s (--duration)" in err
