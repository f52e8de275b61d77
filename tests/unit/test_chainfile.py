"""The chain file: init → load gives the reference topology back; every bad file is one line and exit 2.

Expectations are written out here (the reference chain's names from docs/design.md and the ingress-nginx annotation
table), never read from the code under test.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.chainfile.load import load_chain
from harness.cli.main import main
from harness.model.topology import default_topology
from harness.oauth.issuer import with_oauth


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("chain") / "ref"
    assert main(["init", str(directory)]) == 0
    return directory


def _check(capsys: pytest.CaptureFixture[str], path: Path) -> tuple[int, str]:
    code = main(["chain", "check", str(path)])
    err = capsys.readouterr().err.strip()
    return code, err


def _copy(reference: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "c"
    shutil.copytree(reference, target)
    return target


def test_init_then_load_gives_back_the_reference_topology_in_every_field(reference: Path) -> None:
    loaded = load_chain(reference / "chain.yaml")
    assert loaded.topology == default_topology()
    assert loaded.warnings == ()
    assert set(loaded.mode.values()) == {"real"}  # every identity came with its key: the user's own certs run


def test_init_with_oauth_round_trips_the_validate_jwt_policy(tmp_path: Path) -> None:
    assert main(["init", str(tmp_path / "o"), "--oauth"]) == 0
    policy = (tmp_path / "o" / "apim-policy.xml").read_text()
    assert "<validate-jwt" in policy
    assert "Echo.Read" in policy
    assert load_chain(tmp_path / "o" / "chain.yaml").topology == with_oauth(default_topology())


def test_init_writes_keys_0600_and_refuses_a_folder_with_files(reference: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    for key in [*reference.glob("certs/*.key"), reference / "k8s" / "secrets.yaml"]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert main(["init", str(reference)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "already holds files" in err
    assert "--force" in err


def test_the_chain_file_uses_the_products_words(reference: Path) -> None:
    doc = yaml.safe_load((reference / "chain.yaml").read_text())
    assert doc["gateway"]["backend_settings"]["trusted_root_certificates"] == ["apim-ca"]
    assert doc["apim"]["backend"]["url"] == "https://echo.aks.contoso.example/"
    ingress = next(yaml.safe_load_all((reference / "k8s" / "ingress.yaml").read_text()))
    assert ingress["kind"] == "Ingress"
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-secret"] == \
        "default/apim-client-ca"


def test_schema_command_prints_a_json_schema_with_every_hop(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chain", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert {"certificates", "gateway", "apim", "ingress", "pod"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


# ---------------------------------------------------------------------------------------------------------------
# bad files: one line, exit 2, the value and the fix
# ---------------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _check(capsys, tmp_path / "nope.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "nope.yaml: does not exist" in err
    assert "init" in err


def test_unknown_key_names_the_key_its_line_and_the_known_ones(reference: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(reference, tmp_path)
    text = (d / "chain.yaml").read_text().replace("  listener_certificate: gateway-server\n",
                                                  "  listener_certificate: gateway-server\n  listner_port: 443\n")
    (d / "chain.yaml").write_text(text)
    line = text.splitlines().index("  listner_port: 443") + 1
    code, err = _check(capsys, d / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert f"chain.yaml:{line}: gateway.listner_port: unknown key" in err
    assert "known here: host_names, listener_certificate" in err


def test_wrong_type_names_the_value(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(reference, tmp_path)
    text = (d / "chain.yaml").read_text().replace("  client_auth: optional\n", "  client_auth: maybe\n")
    (d / "chain.yaml").write_text(text)
    code, err = _check(capsys, d / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "pod.client_auth" in err
    assert "'maybe'" in err
    assert "'none', 'optional' or 'required'" in err


def test_bad_yaml_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "chain.yaml").write_text("name: x\ngateway:\n  host_names: [a\n  b: c\n")
    code, err = _check(capsys, tmp_path / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert re.search(r"chain\.yaml:\d+: is not valid YAML", err)


def test_unknown_identity_name_names_the_key_and_the_ones_there_are(reference: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(reference, tmp_path)
    text = (d / "chain.yaml").read_text().replace("custom_domain_certificate: apim-server",
                                                  "custom_domain_certificate: apim-srv")
    (d / "chain.yaml").write_text(text)
    code, err = _check(capsys, d / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "apim.custom_domain_certificate: 'apim-srv' is not an identity" in err
    assert "apim-server" in err


def _pfx_chain(reference: Path, d: Path, password: bytes) -> None:
    cert = (reference / "certs" / "apim-client.pem").read_bytes()
    from cryptography import x509

    chain = x509.load_pem_x509_certificates(cert)
    key = serialization.load_pem_private_key((reference / "certs" / "apim-client.key").read_bytes(), None)
    blob = pkcs12.serialize_key_and_certificates(b"apim-client", key, chain[0], chain[1:],  # type: ignore[arg-type]
                                                 serialization.BestAvailableEncryption(password))
    (d / "certs" / "apim-client.pfx").write_bytes(blob)
    text = (d / "chain.yaml").read_text().replace(
        "    apim-client:\n      pem: certs/apim-client.pem\n      key: certs/apim-client.key\n",
        "    apim-client:\n      pfx: certs/apim-client.pfx\n      password_env: APIM_CLIENT_PFX_PASSWORD\n")
    (d / "chain.yaml").write_text(text)


def test_pfx_with_the_password_from_the_environment_loads(reference: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy(reference, tmp_path)
    _pfx_chain(reference, d, b"s3cret")
    monkeypatch.setenv("APIM_CLIENT_PFX_PASSWORD", "s3cret")
    assert load_chain(d / "chain.yaml").topology == default_topology()


def test_wrong_pfx_password(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    d = _copy(reference, tmp_path)
    _pfx_chain(reference, d, b"s3cret")
    monkeypatch.setenv("APIM_CLIENT_PFX_PASSWORD", "N0t-Th1s-0ne")
    code, err = _check(capsys, d / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "apim-client.pfx" in err
    assert "wrong password" in err
    assert "password_env" in err
    assert "N0t-Th1s-0ne" not in err  # the password itself is never printed


def test_a_cert_that_does_not_match_its_key(reference: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    d = _copy(reference, tmp_path)
    (d / "certs" / "apim-server.key").write_bytes((d / "certs" / "ingress-server.key").read_bytes())
    code, err = _check(capsys, d / "chain.yaml")
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "apim-server" in err
    assert "does not match its key" in err
    assert "PRIVATE KEY" not in err


# ---------------------------------------------------------------------------------------------------------------
# what the harness does not model is a warning by name
# ---------------------------------------------------------------------------------------------------------------
def test_unmodelled_settings_are_warnings_by_name(reference: Path, tmp_path: Path) -> None:
    d = _copy(reference, tmp_path)
    (d / "apim-policy.xml").write_text(
        "<policies><inbound><base /><rate-limit calls=\"5\" renewal-period=\"60\" />"
        "<choose><when condition=\"@(context.Request.Certificate == null)\">"
        "<return-response><set-status code=\"403\" /></return-response></when></choose>"
        "</inbound><backend><base /></backend><outbound><base /></outbound></policies>")
    text = (d / "chain.yaml").read_text().replace("ingress:\n", "ingress:\n  config_map:\n    proxy-body-size: 8m\n")
    (d / "chain.yaml").write_text(text)
    ingress = next(yaml.safe_load_all((d / "k8s" / "ingress.yaml").read_text()))
    ingress["metadata"]["annotations"]["kubernetes.io/ingress.class"] = "nginx"
    (d / "k8s" / "ingress.yaml").write_text(yaml.safe_dump(ingress) + "---\nkind: ConfigMap\nmetadata: {name: x}\n")
    loaded = load_chain(d / "chain.yaml")
    text = "\n".join(loaded.warnings)
    assert "<rate-limit>" in text
    assert "proxy-body-size" in text
    assert "kubernetes.io/ingress.class" in text
    assert "ConfigMap is not modelled" in text
    # the expression form of the client-cert check is the check; without negotiation APIM answers 401 to everything
    assert loaded.topology.apim.validate_client_certificate is True
    assert "negotiate_client_certificate is false" in text


def test_secrets_in_the_manifests_are_matched_to_the_chain_files_names(reference: Path, tmp_path: Path) -> None:
    d = _copy(reference, tmp_path)
    docs = list(yaml.safe_load_all((d / "k8s" / "secrets.yaml").read_text()))
    ca = next(s for s in docs if s["metadata"]["name"] == "apim-client-ca")
    assert base64.b64decode(ca["data"]["ca.crt"]) == (d / "certs" / "apim-client-ca.pem").read_bytes()
    loaded = load_chain(d / "chain.yaml")
    secret = loaded.topology.ingress.secret("default/apim-client-ca")
    assert secret is not None
    assert secret.ca == ("apim-client-ca",)


@pytest.mark.parametrize("example", ["reference", "partner-mtls", "passthrough"])
def test_the_committed_examples_are_what_init_writes(tmp_path: Path, example: str) -> None:
    repo = Path(__file__).resolve().parents[2] / "examples" / example
    assert main(["init", str(tmp_path / example), "--example", example]) == 0
    for name in ("chain.yaml", "apim-policy.xml", "k8s/ingress.yaml"):
        assert (repo / name).read_text() == (tmp_path / example / name).read_text(), name
