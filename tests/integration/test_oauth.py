"""OAuth at the APIM hop: the local issuer, negative tokens, the policy summary, the rendered filters, `up --oauth`

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in tests/unit/test_oauth.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.oauth.issuer import (
    LocalIssuer,
    bearer,
)
from harness.pki.certset import load_cert_set
from tests.unit.test_oauth import OAUTH, REPO


def test_up_with_oauth_makes_apim_demand_a_token_from_the_local_issuer() -> None:
    from harness.probe.handshake import probe

    proc = subprocess.Popen([sys.executable, "-m", "harness", "up", "--oauth", "--json", "--duration", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        doc = json.loads(line)
        apim = doc["hops"]["apim"]
        issuer = LocalIssuer.for_cert_set(load_cert_set(Path(doc["cert_dir"])))

        def call(headers: dict[str, str]) -> Any:
            return probe(apim["host"], apim["port"], server_name=apim["server_name"], trust=Path(apim["ca_bundle"]),
                         headers=headers)

        refused = call({})
        assert (refused.status, json.loads(refused.body)["message"]) == (
            401, "Unauthorized. Access token is missing or invalid."), refused.describe()
        accepted = call(bearer(issuer.mint(OAUTH)))
        assert accepted.status == 200, accepted.describe()
        assert accepted.json()["hop"] == "pod"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
