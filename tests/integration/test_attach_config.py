"""The attach target: its TOML config, and attaching FOR REAL to a running local chain and probing through it

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_attach_config.py."""

from __future__ import annotations

import json
import subprocess
import sys

from harness.probe.outcomes import ok
from harness.targets.attach import (
    load_attach_config,
)
from tests.unit.test_attach_config import REPO, _write, attached, local_chain


def test_attach_to_local_chain_probes_gateway_and_ingress_ok(attached, local_chain):
    assert attached.target == "attach"
    assert {h: (e.host, e.port) for h, e in attached.endpoints.items()} == {
        h: (e.host, e.port) for h, e in local_chain.endpoints.items()}
    gateway = attached.probe("gateway")
    assert ok(200).matches(gateway.outcome), gateway.describe()
    ingress = attached.probe("ingress")  # with APIM's client cert, from the attach config
    assert ok(200).matches(ingress.outcome), ingress.describe()
    assert attached.endpoint("ingress").client_cert != local_chain.endpoint("ingress").client_cert  # its own copy


def test_python_m_converter_on_real_up_json(local_chain, tmp_path):
    up = tmp_path / "up.json"
    up.write_text(json.dumps(local_chain.as_dict()) + "\n")
    out = subprocess.run([sys.executable, "-m", "harness.targets.attach", "--from-up-json", str(up)],
                         capture_output=True, text=True, check=True, cwd=REPO, timeout=60)
    cfg = load_attach_config(_write(tmp_path, out.stdout))
    assert list(cfg.hops) == ["gateway", "apim", "ingress", "pod"]
    assert cfg.hops["gateway"].port == local_chain.endpoint("gateway").port
