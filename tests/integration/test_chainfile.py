"""The process-starting half of tests/unit/test_chainfile.py: chain files stood up for real (Envoy, nginx, the pod).

Expected answers: App Gateway Strict without a client cert → 400 "No required SSL certificate was sent" from the
gateway (REFERENCES.md, ronaldbosma/mtls-with-apim-and-agw); behind ssl-passthrough the pod sees APIM's client cert
(docs/design.md, "Behind passthrough the ingress's listener is the pod's").
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness.chainfile.load import load_chain
from harness.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]
APPGW_SERVER = "Microsoft-Azure-Application-Gateway/v2"  # App Gateway's Server header (docs/behaviour.md)


def _init(tmp_path: Path, example: str) -> Path:
    out = subprocess.run([sys.executable, "-m", "harness", "init", str(tmp_path / example), "--example", example],
                         capture_output=True, text=True, cwd=REPO, check=False, timeout=120)
    assert out.returncode == 0, out.stderr
    return tmp_path / example / "chain.yaml"


def test_init_then_up_chain_answers_through_all_four_hops(tmp_path: Path) -> None:
    chain_file = _init(tmp_path, "reference")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--chain", str(chain_file), "--json",
                             "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        doc = json.loads(line)
        assert doc["cert_dir"].endswith(tuple("0123456789abcdef"))  # the chain's own set, not the generated one
        assert "/chains/" in doc["cert_dir"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize("example", ["reference", "partner-mtls", "passthrough"])
def test_each_example_comes_up_and_answers_through_the_chain(tmp_path: Path, example: str) -> None:
    loaded = load_chain(_init(tmp_path, example))
    with LocalTarget(loaded.topology, certs=loaded.certs) as chain:
        result = chain.probe("gateway")
        assert result.outcome.kind == "ok", result.describe()
        doc = result.json()
        # behind ssl-passthrough the ingress does not terminate TLS, so it adds no trace entry of its own
        hops = {"gateway", "apim", "pod"} if example == "passthrough" else {"gateway", "apim", "ingress", "pod"}
        assert set(doc["trace"]) == hops, doc["trace"]
        if example == "passthrough":  # the pod itself verified APIM's client cert
            assert doc["peer"]["sha256"] == chain.certs.leaf("apim-client").fingerprint_sha256
        if example == "partner-mtls":
            refused = chain.probe("gateway", client_cert=None, client_key=None)
            assert refused.outcome.kind == "http_reject", refused.describe()
            assert refused.status == 400
            assert "No required SSL certificate was sent" in (refused.outcome.reason or "")
            assert refused.headers.get("server") == APPGW_SERVER  # the gateway decided, not a later hop
