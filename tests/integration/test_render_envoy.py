"""The rendered Envoy configs: their structure, that real Envoy accepts them (``--mode validate``), the SDS files,

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_render_envoy.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.model.topology import Topology
from harness.pki.certset import CertSet
from tests.unit.test_render_envoy import (
    VARIANTS,
    bootstrap,
    certs,
    connection_manager,
    downstream_tls,
    envoy_validate,
    render,
    topology,
)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_envoy_accepts_rendered_config(name: str, topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    hop, changes = VARIANTS[name]
    config = render(topology.with_hop(hop, **changes), hop, certs, tmp_path)
    result = envoy_validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_envoy_validate_catches_a_broken_config(topology: Topology, certs: CertSet, tmp_path: Path) -> None:
    """The validate step is a real check: a config with a bad Lua script does not pass."""
    config = render(topology, "gateway", certs, tmp_path)
    boot = bootstrap(config)
    lua = connection_manager(boot)["http_filters"][0]["typed_config"]["default_source_code"]
    assert "function envoy_on_request" in lua["inline_string"]
    lua["inline_string"] = lua["inline_string"].replace("function envoy_on_request", "function envoy_on_request(((")
    config.config_path.write_text(json.dumps(boot))  # JSON, as rendered: Envoy parses a file by its name
    result = envoy_validate(config)
    assert result.returncode != 0
    assert "script load error" in result.stdout + result.stderr


def test_rendering_again_into_the_same_workdir_replaces_the_files(topology: Topology, certs: CertSet,
                                                                  tmp_path: Path) -> None:
    render(topology, "gateway", certs, tmp_path)
    t = topology.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")
    config = render(t, "gateway", certs, tmp_path)
    assert "combined_validation_context" in downstream_tls(bootstrap(config))["common_tls_context"]
    assert envoy_validate(config).returncode == 0
