"""Discovery with the REAL Azure SDK and kubernetes clients against a local HTTPS fake of ARM, Key Vault and the
Kubernetes API: the tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_azure_discovery.py."""

from __future__ import annotations

import json

import pytest

from harness.errors import UsageError
from harness.targets.azure import discover
from tests.fakes.fake_azure import config_doc, config_toml
from tests.unit.test_azure_discovery import _config, bad_env, fake


def test_missing_credentials_are_one_clear_line_and_nothing_is_sent(fake, tmp_path, monkeypatch):
    # DefaultAzureCredential for real, with nothing it could use: no env credential, no managed identity (the "dev"
    # chain), no az/azd/pwsh on PATH, an empty HOME (no token caches)
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                "AZURE_USERNAME", "IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UsageError) as info:
        discover(_config(fake, tmp_path))
    message = str(info.value)
    assert message.startswith("no Azure credential")
    assert "az login" in message
    assert "\n" not in message
    assert fake.seen == []


def test_cli_reports_missing_credentials_in_one_line_with_exit_2(fake, tmp_path, monkeypatch, capsys):
    from harness.cli.main import main

    path = tmp_path / "azure.toml"
    path.write_text(config_toml(config_doc(fake)))
    monkeypatch.setenv("MTLS_HARNESS_AZURE_CONFIG", str(path))
    monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", "dev")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    assert main(["up", "--target", "azure", "--duration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtls-harness: error: no Azure credential")
    assert "\n" not in err
    assert fake.seen == []
