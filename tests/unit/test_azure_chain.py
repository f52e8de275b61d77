"""The chain file written from a discovery (harness/targets/azure/chain.py), against the fake Azure's realistic
payloads read with the real SDKs: each setting lands where the chain file keeps it, certificates are the ones Azure
returned (public parts only), and what no API shows is a labelled stand-in."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from cryptography import x509

from harness.chainfile.load import load_chain
from harness.errors import InputError, UsageError
from harness.targets.azure import discover, parse_azure_config
from harness.targets.azure.chain import chain_from_discovery, config_drift, write_discovered_chain
from tests.fakes.fake_azure import KUBE_TOKEN, FakeAzure, StaticCredential, build_environment, config_doc


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = {}
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    try:
        for variant in ("good", "bad"):
            tmp = tmp_path_factory.mktemp(variant)
            env = build_environment(variant)
            with FakeAzure(env, tmp) as fake:
                config = parse_azure_config(config_doc(fake), tmp, tmp / "azure.toml")
                out[variant] = (env, config, discover(config, StaticCredential()))
    finally:
        mp.undo()
    return out


def _certs(text: str) -> list[x509.Certificate]:
    return list(x509.load_pem_x509_certificates(text.encode()))


def test_each_setting_read_from_azure_lands_in_the_chain_file(found) -> None:
    env, config, disc = found["good"]
    chain = chain_from_discovery(disc, config)
    doc, files = chain.document, chain.files
    gw = doc.gateway
    assert (gw.host_names, gw.client_auth.mode) == (["api.contoso.example"], "Strict")
    (client_ca,) = gw.client_auth.trusted_client_certificates
    assert _certs(files[doc.certificates.trust[client_ca].pem]) == [env.certs["consumer-ca"].cert]
    assert gw.ssl_policy.min_protocol_version == "TLSv1_2"  # the SSL profile's policy over the gateway's 2017 one
    assert gw.waf.enabled  # WAF_v2
    bs = gw.backend_settings
    assert bs.host_name == "apim.internal.contoso.example"
    assert _certs(files[doc.certificates.trust[bs.trusted_root_certificates[0]].pem]) == [env.certs["apim-ca"].cert]
    listener = _certs(files[doc.certificates.identities[gw.listener_certificate].pem])
    assert listener[0] == env.certs["gateway"].cert  # the leaf first, from publicCertData's unordered PKCS#7
    ap = doc.apim
    assert ap.host_names[0] == "apim.internal.contoso.example"  # the name App Gateway sends, not *.azure-api.net
    assert ap.negotiate_client_certificate
    assert _certs(files[doc.certificates.identities[ap.custom_domain_certificate].pem]) == [env.certs["apim"].cert]
    assert ap.backend.url == "https://echo.aks.contoso.example/"
    assert ap.backend.client_certificate == "apim-client"  # the policy's authentication-certificate certificate-id
    assert _certs(files[doc.certificates.identities["apim-client"].pem]) == [env.certs["apim-client"].cert]
    # APIM's CA store gives a thumbprint only: matched to the ingress CA the cluster's Secret holds
    assert _certs(files[doc.certificates.trust[ap.backend.trusted_root].pem]) == [env.certs["ingress-ca"].cert]
    assert "validate-client-certificate" in files["apim-policy.xml"]
    assert set(doc.ingress.secrets) == {"default/ingress-tls", "default/apim-client-ca", "default/pod-tls-client"}
    (ingress,) = list(yaml.safe_load_all(files["k8s/ingress.yaml"]))
    assert set(ingress["metadata"]) == {"name", "namespace", "annotations"}  # no uid, resourceVersion, status
    assert "status" not in ingress
    assert doc.pod.host == "echo.default.svc.cluster.local"  # proxy-ssl-name
    assert (doc.pod.client_auth, doc.pod.client_ca) == ("required", "pod-tls-client-ca")


def test_the_bad_environment_s_weak_settings_are_written_as_they_are(found) -> None:
    _, config, disc = found["bad"]
    doc = chain_from_discovery(disc, config).document
    assert doc.apim.min_protocol_version == "TLSv1_0"  # customProperties: clients may use TLS 1.0 …
    assert doc.apim.backend.min_protocol_version == "TLSv1_2"  # … backends may not: the two sides stay apart
    assert doc.apim.backend.validate_certificate_chain is False
    assert doc.apim.negotiate_client_certificate is False


def test_only_public_material_is_written_and_every_stand_in_is_named(found) -> None:
    env, config, disc = found["good"]
    chain = chain_from_discovery(disc, config)
    for path, text in chain.files.items():
        assert "PRIVATE KEY" not in text, path
    stand_ins = sorted(p for p in chain.files if ".stand-in." in p)
    assert stand_ins == ["certs/internet-client.stand-in.pem", "certs/pod-echo.stand-in.pem"]
    assert any(n.startswith("the pod behind echo.aks.contoso.example is not discovered") for n in chain.notes)
    assert any("internet client's certificate" in n for n in chain.notes)
    pod = _certs(chain.files["certs/pod-echo.stand-in.pem"])[0]
    assert pod.issuer == env.certs["pod-ca"].cert.subject  # under the CA the ingress verifies the pod with


def test_the_written_folder_loads_and_an_occupied_one_is_left_alone(found, tmp_path) -> None:
    _, config, disc = found["good"]
    written = write_discovered_chain(tmp_path / "chain", disc, config)
    assert written.path == tmp_path / "chain" / "chain.yaml"
    text = written.path.read_text()
    assert "# public parts only; review the stand-ins below" in text
    loaded = load_chain(written.path)
    assert loaded.topology.ingress.hosts == ("echo.aks.contoso.example",)
    assert set(loaded.mode.values()) == {"shadow"}  # no key given: the twin runs on stand-ins
    before = sorted(p.name for p in (tmp_path / "chain").iterdir())
    with pytest.raises(InputError, match="already holds files"):
        write_discovered_chain(tmp_path / "chain", disc, config)
    assert sorted(p.name for p in (tmp_path / "chain").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".chain.init-")]


def test_a_discovery_without_apim_is_one_clear_error(found) -> None:
    _, config, disc = found["good"]
    with pytest.raises(UsageError, match=r"discovery found no API Management service — .*\(set app_gateway, apim and "
                                         r"\[kubernetes\]\)"):
        chain_from_discovery(dataclasses.replace(disc, apim=None), config)


def test_config_drift_names_each_setting_azure_changed_since_the_reviewed_chain_file(found, tmp_path) -> None:
    _, config, disc = found["good"]
    written = write_discovered_chain(tmp_path / "chain", disc, config)
    assert written.path is not None
    today = load_chain(written.path).topology
    assert config_drift(today, today) == []
    reviewed = today.with_hop("apim", negotiate_client_certificate=False).with_ingress_annotations(
        auth_tls_verify_depth="2")
    lines = config_drift(reviewed, today)
    assert lines == [
        "apim.negotiate_client_certificate: the chain file says False, Azure and the cluster now True",
        "ingress default/echo.annotation auth-tls-verify-depth: the chain file says '2', Azure and the cluster now "
        "'1'",
    ]


def test_a_certificate_azure_does_not_return_is_a_stand_in_under_the_ca_that_verifies_it(found) -> None:
    """APIM's backend client certificate outside the listed vaults: its stand-in is issued under the CA of the home
    Ingress's auth-tls-secret — the CA that verifies it — not under another Secret's CA."""
    env, config, disc = found["good"]
    other_ca = disc.secrets["default/pod-tls-client"]["ca.crt"]  # a Secret sorting first, holding another CA
    without = dataclasses.replace(disc, key_vault_certificates=[c for c in disc.key_vault_certificates
                                                                 if c.name != "apim-client"],
                                  secrets={"default/aaa-other-ca": {"ca.crt": other_ca}, **disc.secrets})
    chain = chain_from_discovery(without, config)
    assert chain.document.apim.backend.client_certificate == "apim-client"
    stand_in = _certs(chain.files["certs/apim-client.stand-in.pem"])[0]
    assert stand_in.issuer == env.certs["apim-client-ca"].cert.subject
    assert any(n.startswith("APIM certificate apim-client: its body is not readable") for n in chain.notes)

