"""The attach target: its TOML config, and attaching FOR REAL to a running local chain and probing through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from harness.cases.catalogue import CATALOGUE
from harness.cases.model import Skip, run_case
from harness.errors import HarnessError, InputError, Unavailable, UsageError
from harness.model.topology import default_topology
from harness.pki.certset import cert_set_for
from harness.probe.outcomes import http_reject
from harness.pytest_plugin import require_chain_components
from harness.targets import open_target
from harness.targets.attach import (
    AttachTarget,
    attach_config_from_up_json,
    load_attach_config,
    main,
    parse_attach_config,
)
from harness.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certs():
    return cert_set_for(default_topology().pki)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "attach.toml"
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------------------------------------------
# the file
# ------------------------------------------------------------------------------------------------------------------
def test_config_resolves_relative_paths_against_the_file(tmp_path, certs):
    (tmp_path / "ca.pem").write_bytes(certs.trust_bundle("ingress-ca").read_bytes())
    path = _write(tmp_path, '[hops.ingress]\nhost = "127.0.0.1"\nport = 8443\n'
                            'server_name = "echo.aks.contoso.example"\nca_bundle = "ca.pem"\n')
    cfg = load_attach_config(path)
    assert list(cfg.hops) == ["ingress"]
    hop = cfg.hops["ingress"]
    assert (hop.host, hop.port, hop.server_name) == ("127.0.0.1", 8443, "echo.aks.contoso.example")
    assert hop.ca_bundle == tmp_path / "ca.pem"
    assert cfg.negatives == "generate"


def test_server_name_defaults_to_the_host(tmp_path):
    cfg = parse_attach_config({"hops": {"gateway": {"host": "api.contoso.example", "port": 443}}}, tmp_path)
    assert cfg.hops["gateway"].server_name == "api.contoso.example"


@pytest.mark.parametrize(("doc", "says"), [
    ({"hops": {"gateway": {"port": 443}}}, "hops.gateway.host: is missing"),
    ({"hops": {"gateway": {"host": "h", "port": 70000}}}, "hops.gateway.port: must be a TCP port number"),
    ({"hops": {"gateway": {"host": "h", "port": "443"}}}, "hops.gateway.port: must be a TCP port number"),
    ({"hops": {"edge": {"host": "h", "port": 1}}}, "unknown hop 'edge'"),
    ({"hops": {"gateway": {"host": "h", "port": 1, "sni": "x"}}}, "unknown key(s) sni"),
    ({"hops": {}}, "no hop is configured"),
    ({"negatives": "some", "hops": {"gateway": {"host": "h", "port": 1}}}, "negatives: must be"),
    ({"hops": {"gateway": {"host": "h", "port": 1}}, "proxy": 1}, "unknown top-level key(s)"),
])
def test_bad_config_is_one_usage_error_naming_the_key(tmp_path, doc, says):
    with pytest.raises(UsageError) as info:
        parse_attach_config(doc, tmp_path, tmp_path / "attach.toml")
    message = str(info.value)
    assert says in message
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "attach.toml"))


def test_missing_ca_bundle_file_names_the_key_and_the_path(tmp_path):
    with pytest.raises(InputError) as info:
        parse_attach_config({"hops": {"apim": {"host": "h", "port": 1, "ca_bundle": "nope.pem"}}}, tmp_path)
    assert str(tmp_path / "nope.pem") in str(info.value)
    assert "hops.apim.ca_bundle" in str(info.value)


def test_invalid_toml_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is not valid TOML"):
        load_attach_config(_write(tmp_path, "[hops.gateway\nhost=1"))


def test_attach_without_a_config_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("MTLS_HARNESS_ATTACH_CONFIG", raising=False)
    with pytest.raises(UsageError, match="MTLS_HARNESS_ATTACH_CONFIG"):
        open_target("attach")


def test_cli_exits_2_with_one_line_for_a_bad_attach_config(tmp_path, monkeypatch, capsys):
    from harness.cli.main import main as cli_main

    monkeypatch.setenv("MTLS_HARNESS_ATTACH_CONFIG", str(_write(tmp_path, '[hops.gateway]\nport = 443\n')))
    assert cli_main(["up", "--target", "attach", "--duration", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "hops.gateway.host: is missing" in err


def test_up_json_converts_to_a_config_the_loader_reads(tmp_path, certs):
    ing = certs.leaf("apim-client")
    doc = {"target": "local", "cert_dir": str(certs.directory), "hops": {
        "ingress": {"hop": "ingress", "host": "127.0.0.1", "port": 18443, "server_name": "echo.aks.contoso.example",
                    "ca_bundle": str(certs.trust_bundle("ingress-ca")), "client_cert": str(ing.chain),
                    "client_key": str(ing.key)}}}
    cfg = load_attach_config(_write(tmp_path, attach_config_from_up_json(doc)))
    hop = cfg.hops["ingress"]
    assert (hop.port, hop.client_cert, hop.client_key) == (18443, ing.chain, ing.key)
    assert cfg.cas["apim-client-ca"] == (certs.ca_cert("apim-client-ca"), certs.ca_key("apim-client-ca"))
    bare = load_attach_config(_write(tmp_path, attach_config_from_up_json(doc, include_ca_keys=False)))
    assert dict(bare.cas) == {}


def test_up_json_without_hops_is_refused():
    with pytest.raises(UsageError, match="up --json"):
        attach_config_from_up_json({"target": "local"})


def test_converter_command_reads_up_json_and_writes_toml(tmp_path, certs, capsys):
    up = tmp_path / "up.json"
    up.write_text(json.dumps({"hops": {"gateway": {"host": "127.0.0.1", "port": 1443,
                                                   "server_name": "api.contoso.example"}}}) + "\n")
    assert main(["--from-up-json", str(up)]) == 0
    cfg = parse_attach_config(__import__("tomllib").loads(capsys.readouterr().out), tmp_path)
    assert cfg.hops["gateway"].port == 1443
    up.write_text("not json")
    assert main(["--from-up-json", str(up)]) == 2


# ------------------------------------------------------------------------------------------------------------------
# identities and negatives (no chain needed)
# ------------------------------------------------------------------------------------------------------------------
def test_identity_from_a_pfx_needs_the_password_variable_to_be_set(tmp_path, certs, monkeypatch):
    leaf = certs.leaf("apim-client")
    pfx = tmp_path / "apim-client.pfx"
    key = serialization.load_pem_private_key(leaf.key.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
    pfx.write_bytes(pkcs12.serialize_key_and_certificates(
        b"apim-client", key, cert, None, serialization.BestAvailableEncryption(b"s3cret-pw")))
    doc = {"hops": {"ingress": {"host": "127.0.0.1", "port": 1, "pfx": str(pfx), "pfx_password_env": "T_PFX_PW"}}}
    monkeypatch.delenv("T_PFX_PW", raising=False)
    with pytest.raises(UsageError, match="T_PFX_PW is not set") as info, \
            AttachTarget(parse_attach_config(doc, tmp_path)):
        pass
    assert "s3cret" not in str(info.value)
    monkeypatch.setenv("T_PFX_PW", "wrong")
    with pytest.raises(InputError, match="wrong password"), AttachTarget(parse_attach_config(doc, tmp_path)):
        pass
    monkeypatch.setenv("T_PFX_PW", "s3cret-pw")
    with AttachTarget(parse_attach_config(doc, tmp_path)) as chain:
        presented = chain.certs.leaf("apim-client")
        assert presented.fingerprint_sha256 == leaf.fingerprint_sha256
        assert chain.endpoint("ingress").client_key == presented.key
        assert oct(presented.key.stat().st_mode & 0o777) == "0o600"
        workdir = presented.key.parents[3]
    assert not workdir.exists()  # keys from the PFX are gone with the target


def test_negatives_without_the_ca_key_are_keyless_faults_only(tmp_path, certs):
    leaf = certs.leaf("apim-client")
    doc = {"hops": {"ingress": {"host": "127.0.0.1", "port": 1, "client_cert": str(leaf.chain),
                                "client_key": str(leaf.key)}}}
    with AttachTarget(parse_attach_config(doc, tmp_path)) as chain:
        rogue = chain.certs.leaf("apim-client~unknown-ca")
        rogue_cert = x509.load_pem_x509_certificate(rogue.cert.read_bytes())
        real = x509.load_pem_x509_certificate(leaf.cert.read_bytes())
        assert rogue_cert.subject == real.subject  # looks like the real identity
        assert rogue_cert.issuer != real.issuer  # but nobody issued it
        with pytest.raises(Unavailable, match="holds no key for apim-client-ca"):
            chain.certs.leaf("apim-client~expired")
        with pytest.raises(Unavailable, match="gives no identity for 'consumer-client'"):
            chain.certs.leaf("consumer-client")
    doc["negatives"] = "none"
    with AttachTarget(parse_attach_config(doc, tmp_path)) as chain, pytest.raises(Unavailable, match="negatives"):
        chain.certs.leaf("apim-client~unknown-ca")


def test_attached_chain_is_read_only_and_variant_cases_skip(tmp_path, certs):
    doc = {"hops": {"gateway": {"host": "127.0.0.1", "port": 1, "server_name": "api.contoso.example"}}}
    target = AttachTarget(parse_attach_config(doc, tmp_path))
    with target as chain:
        assert chain.mutable is False
        assert list(chain.endpoints) == ["gateway"]
        with pytest.raises(UsageError, match="read-only"):
            target.reconfigure(chain.topology)
        variant_case = next(c for c in CATALOGUE if c.variant is not None)
        with pytest.raises(Skip, match="read-only") as skipped:
            run_case(variant_case, chain, lambda t: pytest.fail("must not start a variant"))
        assert skipped.value.declared, "the attach target declares that it is read-only"
        ingress_case = next(c for c in CATALOGUE if c.hop == "ingress" and c.variant is None)
        with pytest.raises(Skip, match="gives no endpoint for the ingress hop") as skipped:
            run_case(ingress_case, chain, lambda t: chain)
        assert skipped.value.declared, "the attach target declares the hops its config does not name"


# ------------------------------------------------------------------------------------------------------------------
# for real: attach to a running local chain
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_chain(request: pytest.FixtureRequest) -> Iterator:
    require_chain_components(request.config)
    with LocalTarget(default_topology()) as chain:
        yield chain


@pytest.fixture
def attached(local_chain, tmp_path):
    path = _write(tmp_path, attach_config_from_up_json(local_chain.as_dict()))
    with open_target("attach", config=path) as chain:
        yield chain


def test_attached_ingress_rejects_generated_unknown_ca_cert(attached):
    rogue = attached.certs.leaf("apim-client~unknown-ca")
    seen = attached.probe("ingress", client_cert=rogue.chain, client_key=rogue.key)
    assert http_reject(400, "The SSL certificate error").matches(seen.outcome), seen.describe()
    none = attached.probe("ingress", client_cert=None, client_key=None)
    assert http_reject(400, "No required SSL certificate was sent").matches(none.outcome), none.describe()


def test_catalogue_cases_run_on_attach_with_the_ca_keys_from_up_json(attached):
    by_id = {c.id: c for c in CATALOGUE}
    for case_id in ("ingress-accepts-apims-client-cert-tls1.3", "ingress-rejects-client-cert-expired-tls1.3",
                    "ingress-rejects-client-cert-unknown-ca-tls1.2"):
        result = run_case(by_id[case_id], attached, lambda t: pytest.fail("attach starts no variant"))
        assert result.passed, result.message


def test_harness_errors_from_attach_are_one_line(tmp_path):
    with pytest.raises(HarnessError) as info:
        load_attach_config(tmp_path / "absent.toml")
    assert "\n" not in str(info.value)


def _toml_blocks(after: str) -> list[str]:
    text = (REPO / "docs" / "azure.md").read_text()
    section = text.split(after, 1)[1]
    return [b.split("```", 1)[0] for b in section.split("```toml\n")[1:]]


def test_docs_attach_example_is_a_valid_config(tmp_path):
    import tomllib

    block = _toml_blocks("## The attach config")[0]
    doc = tomllib.loads(block)
    for hop in doc["hops"].values():  # the files it names, as empty placeholders: only the format is checked here
        for key in ("ca_bundle", "pfx", "client_cert", "client_key"):
            if key in hop:
                (tmp_path / hop[key]).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / hop[key]).touch()
    for ca in doc.get("cas", {}).values():
        for p in ca.values():
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).touch()
    cfg = parse_attach_config(doc, tmp_path)
    assert list(cfg.hops) == ["gateway", "apim", "ingress"]
    assert cfg.hops["ingress"].pfx_password_env == "APIM_CLIENT_PFX_PASSWORD"
    assert "apim-client-ca" in cfg.cas
