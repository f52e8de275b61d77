"""Discovery with the REAL Azure SDK and kubernetes clients against a local HTTPS fake of ARM, Key Vault and the
Kubernetes API (tests/fakes/fake_azure.py): the facts found, read-only by construction, and the one-line errors."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from cryptography.hazmat.primitives import hashes

from harness.errors import UsageError
from harness.targets import open_target
from harness.targets.azure import AzureClients, ReadOnlyViolation, discover, parse_azure_config
from harness.targets.azure.clients import ReadOnlyPolicy, build_kube_client
from tests.fakes.fake_azure import (
    KUBE_TOKEN,
    NAMES,
    RG,
    TOKEN,
    FakeAzure,
    StaticCredential,
    bad_environment,
    config_doc,
    iter_json_strings,
)


@pytest.fixture(scope="module")
def bad_env():
    return bad_environment()


@pytest.fixture
def fake(bad_env, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    with FakeAzure(bad_env, tmp_path) as f:
        yield f
        assert f.errors == [], f.errors  # a fake that broke would make any assertion meaningless


def _config(fake, tmp_path, **overrides):
    return parse_azure_config(config_doc(fake, **overrides), tmp_path, tmp_path / "azure.toml")


@pytest.fixture
def discovery(fake, tmp_path):
    return discover(_config(fake, tmp_path), StaticCredential())


# ------------------------------------------------------------------------------------------------------------------
# the facts
# ------------------------------------------------------------------------------------------------------------------
def test_app_gateway_listeners_certs_backends_and_tls_policy_are_discovered(discovery):
    gw = discovery.app_gateway
    assert gw.name == NAMES["AGW"]
    assert [(lst.name, lst.frontend, lst.frontend_address, lst.port, lst.host_names) for lst in gw.listeners] == [
        ("public-https", "public", None, 443, ("api.contoso.example",)),
        ("private-https", "private", "10.20.0.10", 443, ("api.contoso.example",)),
        ("public-http", "public", None, 80, ("api.contoso.example",)),
    ]
    assert [lst.redirects for lst in gw.listeners] == [False, False, False]
    assert gw.listeners[0].ssl_profile == "mtls-strict"
    (cert,) = gw.ssl_certificates
    assert cert.name == "gw-cert"
    assert cert.versioned
    assert cert.key_vault_secret_id.endswith("/secrets/gw-cert/8a7b6c5d4e3f40718293a4b5c6d7e8f9")
    https, http = gw.backend_settings
    assert (https.name, https.protocol, https.host_name, https.trusted_root_certificates) == (
        "apim-https", "Https", "apim.internal.contoso.example", ("apim-root",))
    assert https.validate_cert_chain_and_expiry
    assert https.validate_sni
    assert (http.name, http.protocol, http.port) == ("legacy-http", "Http", 80)
    assert (gw.ssl_policy_name, gw.min_protocol_version) == ("AppGwSslPolicy20170401", "TLSv1_1")
    (profile,) = gw.ssl_profiles
    assert (profile.verify_client_auth_mode, profile.verify_client_revocation, profile.min_protocol_version) == (
        "Strict", "OCSP", "TLSv1_2")
    assert "BEGIN CERTIFICATE" in gw.trusted_root_pems["apim-root"]


def test_apim_backends_are_read_across_pages_with_their_tls_flags(discovery, fake):
    apim = discovery.apim
    assert (apim.virtual_network_type, apim.private_ip_addresses, apim.sku) == ("External", ("10.20.1.5",),
                                                                                "Developer")
    assert [b.name for b in apim.backends] == ["aks-echo", "status-page"]
    echo = apim.backends[0]
    assert (echo.validate_certificate_chain, echo.validate_certificate_name) == (False, True)
    assert echo.certificate_ids[0].endswith("/certificates/apim-client")
    assert apim.backends[1].validate_certificate_chain  # no tls block: validation on (the default)
    pages = [s for s in fake.requests("arm") if s.path.lower().endswith("/backends")]
    assert [s.query.get("$skiptoken") for s in pages] == [None, ["1"]]  # the nextLink was followed


def test_apim_hostnames_certificates_and_policies_are_discovered(discovery):
    apim = discovery.apim
    custom = next(h for h in apim.hostnames if h.host_name == "apim.internal.contoso.example")
    assert custom.negotiate_client_certificate is False
    assert custom.key_vault_id.endswith("/secrets/apim-cert")
    assert not custom.versioned
    assert custom.certificate_subject == "CN=apim.internal.contoso.example"
    # the bad environment lets clients use TLS 1.0 and 3DES but not backends: both sides kept apart
    assert (apim.tls_settings["Protocols.Tls10"], apim.tls_settings["Backend.Protocols.Tls10"]) == ("True", "False")
    assert apim.tls_settings["Ciphers.TripleDes168"] == "True"
    assert [(a.name, a.service_url) for a in apim.apis] == [
        ("echo", "https://echo.aks.contoso.example/"), ("health", "http://status.aks.contoso.example/")]
    (client,) = apim.certificates
    assert (client.name, client.versioned) == ("apim-client", False)
    by_scope = {p.scope: p for p in apim.policies}
    assert set(by_scope) == {"global", "api:echo"}  # the health API has no policy: the 404 is not an error
    assert by_scope["api:echo"].validate_client_certificate
    assert by_scope["api:echo"].authentication_certificate
    assert not by_scope["global"].validate_client_certificate


def test_aks_access_profile_is_discovered(discovery):
    aks = discovery.aks
    assert (aks.name, aks.kubernetes_version, aks.enable_private_cluster, aks.authorized_ip_ranges) == (
        NAMES["AKS"], "1.33.3", False, ())
    assert aks.fqdn.endswith(".hcp.westeurope.azmk8s.io")
    assert aks.disable_run_command is False


def test_key_vault_certificates_versions_and_lifetime_actions(discovery, bad_env):
    kv = {c.name: c for c in discovery.key_vault_certificates}
    assert set(kv) == {"gw-cert", "apim-cert", "apim-client"}
    gw = kv["gw-cert"]
    assert gw.versions == 2  # two pages of versions, one per page
    assert gw.current_version == "8a7b6c5d4e3f40718293a4b5c6d7e8f9"
    assert gw.secret_id.endswith("/secrets/gw-cert/8a7b6c5d4e3f40718293a4b5c6d7e8f9")
    assert gw.lifetime_actions == ("AutoRenew at 80% lifetime",)
    assert gw.auto_renew
    expected = bad_env.certs["gateway"].cert
    assert gw.thumbprint == expected.fingerprint(hashes.SHA1()).hex().upper()
    assert gw.expires_on[:10] == expected.not_valid_after_utc.date().isoformat()
    assert kv["apim-client"].lifetime_actions == ("EmailContacts at 90% lifetime",)
    assert not kv["apim-client"].auto_renew


def test_ingress_annotations_ca_secret_and_served_cert_are_discovered(discovery, bad_env):
    (ing,) = discovery.ingresses
    assert (ing.namespace, ing.name, ing.hosts, ing.tls_secret) == ("default", "echo", ("echo.aks.contoso.example",),
                                                                   "ingress-tls")
    assert ing.annotations["auth-tls-secret"] == "default/apim-client-ca"
    assert "kubernetes.io/ingress.class" not in ing.annotations  # only ingress-nginx's own annotations
    assert ing.addresses == ("10.20.2.50", "20.61.0.99")  # the bad environment adds a public one
    assert ing.ca_subjects == (bad_env.certs["apim-client-ca"].cert.subject.rfc4514_string(),)
    assert ing.secret_sha256 == bad_env.certs["ingress"].cert.fingerprint(hashes.SHA256()).hex()
    assert ing.served_sha256 == bad_env.served.cert.fingerprint(hashes.SHA256()).hex()
    assert ing.served_sha256 != ing.secret_sha256  # the bad cluster still serves a stale cert


def test_expiry_table_spans_every_plane(discovery):
    planes = {c.plane for c in discovery.certificates}
    assert planes == {"app-gateway", "apim", "key-vault", "cluster-secret", "served"}
    where = {c.where for c in discovery.certificates}
    assert f"{NAMES['AGW']} sslCertificates/gw-cert" in where
    assert f"{NAMES['KV']}/certificates/gw-cert" in where
    assert "default/apim-client-ca ca.crt" in where
    gw_row = next(c for c in discovery.certificates if c.where == f"{NAMES['AGW']} sslCertificates/gw-cert")
    assert gw_row.subject.startswith("CN=api.contoso.example")  # the leaf of the PKCS#7, not its root


def test_discovery_is_json_and_holds_no_secret(discovery, bad_env):
    doc = json.loads(discovery.to_json())
    assert doc["apim"]["backends"][0]["validate_certificate_chain"] is False
    text = json.dumps(doc)
    key_b64 = bad_env.secrets[("default", "ingress-tls")]["data"]["tls.key"]
    assert key_b64 not in text
    assert "PRIVATE KEY" not in text
    assert TOKEN not in text
    assert KUBE_TOKEN not in text
    assert all("PRIVATE" not in s for s in iter_json_strings(doc))


# ------------------------------------------------------------------------------------------------------------------
# read-only, by construction
# ------------------------------------------------------------------------------------------------------------------
def test_only_get_requests_reach_azure_and_the_cluster(discovery, fake):
    assert fake.methods() == {"GET"}
    assert {s.service for s in fake.seen} == {"arm", "vault", "kube"}
    assert all("api-version" in s.query for s in fake.requests("arm") + fake.requests("vault"))
    unauthorized = [s for s in fake.seen if not s.authorized]
    assert [(s.service, s.path) for s in unauthorized] == [("vault", "/certificates")]  # Key Vault's challenge


def test_a_write_is_refused_before_it_is_sent(fake, tmp_path):
    clients = AzureClients(_config(fake, tmp_path), StaticCredential())
    gw = clients.network().application_gateways.get(RG, NAMES["AGW"])
    with pytest.raises(ReadOnlyViolation, match=r"refused PUT .*read-only"):
        clients.network().application_gateways.begin_create_or_update(RG, NAMES["AGW"], gw)
    with pytest.raises(ReadOnlyViolation, match="refused DELETE"):
        clients.apim().backend.delete(RG, NAMES["APIM"], "aks-echo", if_match="*")
    assert fake.methods() == {"GET"}


def test_listed_read_only_post_passes_and_runs_its_lro(fake, tmp_path):
    clients = AzureClients(_config(fake, tmp_path), StaticCredential())
    health = clients.network().application_gateways.begin_backend_health(RG, NAMES["AGW"]).result(timeout=30)
    assert health.backend_address_pools[0].backend_http_settings_collection[0].servers[0].health == "Healthy"
    assert [s.method for s in fake.seen] == ["POST", "GET"]  # the action, then the Location poll


def test_run_command_is_refused_without_the_opt_in(fake, tmp_path):
    from azure.mgmt.containerservice.models import RunCommandRequest

    clients = AzureClients(_config(fake, tmp_path), StaticCredential())
    with pytest.raises(ReadOnlyViolation, match="allow_run_command = true"):
        clients.aks().managed_clusters.begin_run_command(RG, NAMES["AKS"], RunCommandRequest(command="kubectl get "
                                                                                             "pods"))
    assert fake.seen == []


def test_run_command_opt_in_reads_the_ingress_of_a_private_cluster(fake, tmp_path, bad_env):
    cfg = _config(fake, tmp_path, kubernetes=None,
                  runner={"allow_run_command": True, "ingress_address": "127.0.0.1",
                          "ingress_port": fake.ingress_port})
    disc = discover(cfg, StaticCredential())
    (ing,) = disc.ingresses
    assert ing.ca_subjects == (bad_env.certs["apim-client-ca"].cert.subject.rfc4514_string(),)
    assert ing.secret_sha256 == bad_env.certs["ingress"].cert.fingerprint(hashes.SHA256()).hex()
    posts = [s for s in fake.seen if s.method == "POST"]
    assert posts
    assert all(s.path.endswith("/runCommand") for s in posts)
    assert not fake.requests("kube")  # the API server was never contacted


def test_kubernetes_client_refuses_writes(fake, tmp_path):
    from kubernetes.client import CoreV1Api

    api = CoreV1Api(build_kube_client(_config(fake, tmp_path)))
    assert api.read_namespaced_secret("apim-client-ca", "default").metadata.name == "apim-client-ca"
    with pytest.raises(ReadOnlyViolation, match="refused DELETE"):
        api.delete_namespaced_secret("apim-client-ca", "default")
    assert fake.methods() == {"GET"}


def test_read_only_policy_allows_exactly_the_listed_posts():
    policy = ReadOnlyPolicy()
    base = "https://management.azure.com/subscriptions/s/resourceGroups/r/providers"
    assert policy.allowed("GET", f"{base}/Microsoft.Network/applicationGateways/a")
    assert policy.allowed("POST", f"{base}/Microsoft.Network/applicationGateways/a/backendhealth?api-version=1")
    assert not policy.allowed("POST", f"{base}/Microsoft.ApiManagement/service/x/namedValues/n/listValue")
    assert not policy.allowed("POST", f"{base}/Microsoft.ApiManagement/service/x/subscriptions/s/listSecrets")
    assert not policy.allowed("POST", f"{base}/Microsoft.ContainerService/managedClusters/c/listClusterUserCredential")
    assert not policy.allowed("POST", f"{base}/Microsoft.ContainerService/managedClusters/c/runCommand")
    assert ReadOnlyPolicy(allow_run_command=True).allowed(
        "POST", f"{base}/Microsoft.ContainerService/managedClusters/c/runCommand")
    assert not policy.allowed("PATCH", f"{base}/Microsoft.Network/applicationGateways/a")


# ------------------------------------------------------------------------------------------------------------------
# errors: one line, naming the thing and the fix
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "says"), [
    ("app_gateway", "App Gateway 'agw-wrong' in resource group 'rg-chain' was not found (ARM: ResourceNotFound)"),
    ("apim", "API Management service 'agw-wrong' in resource group 'rg-chain' was not found"),
    ("aks", "AKS cluster 'agw-wrong' in resource group 'rg-chain' was not found"),
])
def test_wrong_resource_name_is_one_clear_line(fake, tmp_path, key, says):
    with pytest.raises(UsageError) as info:
        discover(_config(fake, tmp_path, **{key: "agw-wrong"}), StaticCredential())
    message = str(info.value)
    assert says in message
    assert f"check {key} in {tmp_path / 'azure.toml'}" in message
    assert "\n" not in message


def test_tokens_are_never_logged(fake, tmp_path, caplog):
    with caplog.at_level(logging.DEBUG):
        discover(_config(fake, tmp_path), StaticCredential())
    assert caplog.records  # the SDKs did log their requests
    assert TOKEN not in caplog.text
    assert KUBE_TOKEN not in caplog.text


def test_unknown_config_key_is_refused(tmp_path):
    with pytest.raises(UsageError, match="unknown key"):
        parse_azure_config({"subscription_id": "s", "resource_group": "r", "appgw": "x"}, tmp_path)
    with pytest.raises(UsageError, match="subscription_id: is missing"):
        parse_azure_config({"resource_group": "r"}, tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# the azure target: discovery → attach
# ------------------------------------------------------------------------------------------------------------------
def test_azure_target_attaches_read_only_with_discovered_endpoints(fake, tmp_path, bad_env):
    ingress_ca = tmp_path / "ingress-ca.pem"
    ingress_ca.write_bytes(bad_env.certs["ingress-ca"].cert.public_bytes(__import__(
        "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM))
    runner = {"ingress_address": "127.0.0.1", "ingress_port": fake.ingress_port,
              "hops": {"ingress": {"ca_bundle": str(ingress_ca)}}}
    target = open_target("azure", config=_config(fake, tmp_path, runner=runner), credential=StaticCredential())
    with target as chain:
        assert (chain.target, chain.mutable) == ("azure", False)
        eps = {h: (e.host, e.port, e.server_name) for h, e in chain.endpoints.items()}
        assert eps == {
            "gateway": ("10.20.0.10", 443, "api.contoso.example"),  # the private frontend: the runner is inside
            "apim": ("10.20.1.5", 443, "apim.internal.contoso.example"),
            "ingress": ("127.0.0.1", fake.ingress_port, "echo.aks.contoso.example"),
        }
        apim_trust = chain.endpoint("apim").trust.read_text()  # App Gateway's trusted root for its https backend
        assert apim_trust == bad_env.certs["apim-ca"].cert.public_bytes(__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM).decode()
        assert chain.endpoint("ingress").trust == ingress_ca
        assert target.discovery.apim.name == NAMES["APIM"]
        workdir = chain.endpoint("apim").trust.parent
        with pytest.raises(UsageError, match="read-only"):
            target.reconfigure(chain.topology)
    assert not workdir.exists()
    assert fake.methods() == {"GET"}


def test_discovery_dataclasses_are_frozen(discovery):
    with pytest.raises(dataclasses.FrozenInstanceError):
        discovery.aks.enable_private_cluster = True  # type: ignore[misc]


@pytest.mark.parametrize("source", ["docs", "example"])
def test_documented_azure_configs_parse(tmp_path, source):
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    if source == "docs":
        text = (repo / "docs" / "azure.md").read_text().split("## The azure config", 1)[1]
        text = text.split("```toml\n", 1)[1].split("```", 1)[0]
    else:
        text = (repo / "deploy" / "ci" / "azure.example.toml").read_text()
    doc = tomllib.loads(text)
    home = tmp_path / "home"
    for rel in ("certs/ingress-ca.pem", "certs/apim-client.pfx"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").touch()
    if "ca_bundle" in doc.get("endpoints", {}):
        doc["endpoints"]["ca_bundle"] = str(tmp_path / "certs/ingress-ca.pem")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        cfg = parse_azure_config(doc, tmp_path)
    assert cfg.app_gateway
    assert cfg.apim
    assert cfg.aks
    assert cfg.allow_run_command is False
    assert cfg.hops["ingress"]["pfx_password_env"] == "APIM_CLIENT_PFX_PASSWORD"


def test_a_certificate_that_does_not_parse_is_a_note_and_the_rest_is_still_read(tmp_path, monkeypatch):
    """Issue 18: one App Gateway certificate whose publicCertData does not parse aborted the whole discovery."""
    monkeypatch.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    env = bad_environment()
    agw = next(v for k, v in env.arm.items() if "applicationgateways" in k)
    broken = dict(agw["properties"]["sslCertificates"][0], name="broken-cert")
    broken["properties"] = dict(broken["properties"], publicCertData="bm90IGEgcGtjczcgYmxvYg==")
    agw["properties"]["sslCertificates"].append(broken)
    with FakeAzure(env, tmp_path) as f:
        disc = discover(_config(f, tmp_path), StaticCredential())
        assert f.errors == []
    assert [c.name for c in disc.app_gateway.ssl_certificates] == ["gw-cert", "broken-cert"]
    (note,) = [n for n in disc.notes if "broken-cert" in n]
    assert note.startswith(f"App Gateway {NAMES['AGW']} sslCertificates/broken-cert publicCertData: does not parse")
    assert disc.apim is not None  # the rest of the discovery went on
    assert disc.aks is not None
    assert disc.key_vault_certificates


EXPRESSION_POLICY = """<policies>
  <inbound>
    <base />
    <choose>
      <when condition="@(context.Request.Certificate == null || context.Request.Certificate.NotAfter < DateTime.Now
                         || context.Request.Certificate.Thumbprint != &quot;8A7B6C5D4E3F4071&quot;)">
        <return-response><set-status code="403" reason="Invalid client certificate" /></return-response>
      </when>
    </choose>
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>"""


def test_the_expression_form_of_the_client_cert_check_and_consumptions_switch_are_read(tmp_path, monkeypatch):
    """Issue 18: APIM's documented expression form (a choose/when on context.Request.Certificate, here in rawxml:
    the `<` makes it not well-formed XML) is a client-certificate check; the Consumption tier asks for client
    certificates with enableClientCertificate, not with a hostname's negotiateClientCertificate."""
    from harness.targets.azure import evaluate

    monkeypatch.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    env = bad_environment()
    key = next(k for k in env.apim_policies if k.endswith("/apis/echo/policies/policy"))
    env.apim_policies[key] = EXPRESSION_POLICY
    apim = next(v for k, v in env.arm.items() if "microsoft.apimanagement" in k)
    apim["sku"] = {"name": "Consumption", "capacity": 0}
    apim["properties"]["enableClientCertificate"] = True
    with FakeAzure(env, tmp_path) as f:
        disc = discover(_config(f, tmp_path), StaticCredential())
        assert f.errors == []
    by_scope = {p.scope: p for p in disc.apim.policies}
    assert by_scope["api:echo"].validate_client_certificate
    assert not by_scope["global"].validate_client_certificate
    assert (disc.apim.sku, disc.apim.enable_client_certificate) == ("Consumption", True)
    verdicts = {v.check.id: v for v in evaluate(disc)}
    assert verdicts["apim-client-cert-negotiation"].status == "pass"
    developer = dataclasses.replace(disc, apim=dataclasses.replace(disc.apim, sku="Developer"))
    assert {v.check.id: v.status for v in evaluate(developer)}["apim-client-cert-negotiation"] == "fail"


def test_a_value_discovery_cannot_read_is_one_line_naming_the_resource(tmp_path, monkeypatch):
    """Issue 18: an exception inside discovery that is not the harness's own was a traceback."""
    from harness.errors import HarnessError

    monkeypatch.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    env = bad_environment()
    apim = next(v for k, v in env.arm.items() if "microsoft.apimanagement" in k)
    apim["properties"]["hostnameConfigurations"][0]["certificate"] = "not-an-object"
    with FakeAzure(env, tmp_path) as f, pytest.raises(HarnessError) as caught:
        discover(_config(f, tmp_path), StaticCredential())
    line = str(caught.value)
    assert "\n" not in line
    assert "Data:" not in line  # the payload the SDK quotes is not repeated
    assert line.startswith(f"discovery of API Management service {NAMES['APIM']!r} met a value it cannot read: ")


def test_a_key_vault_certificate_with_a_non_positive_serial_is_read_and_noted(tmp_path, monkeypatch):
    """Issue 18: cryptography only warns about a serial number that is not positive today (RFC 5280 4.1.2.2 forbids
    it) and will refuse it in a future release: discovery notes it instead of hiding a warning."""
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from harness.pki.x509 import Signed

    monkeypatch.setenv("FAKE_KUBE_TOKEN", KUBE_TOKEN)
    env = bad_environment()
    version, signed = env.kv["apim-cert"].versions[-1]
    der = signed.cert.public_bytes(serialization.Encoding.DER)
    serial = signed.cert.serial_number.to_bytes((signed.cert.serial_number.bit_length() + 8) // 8, "big")
    at = der.index(bytes([0x02, len(serial)]) + serial)
    negative = der[:at] + bytes([0x02, 1, 0xFF]) + der[at + 2 + len(serial):]  # INTEGER -1
    negative = negative[:2] + (len(negative) - 4).to_bytes(2, "big") + negative[4:]  # outer SEQUENCE length
    tbs_at = 4  # the TBSCertificate SEQUENCE (long form, 2 length bytes) follows the outer header
    tbs_len = int.from_bytes(negative[tbs_at + 2:tbs_at + 4], "big") - (len(der) - len(negative))
    negative = negative[:tbs_at + 2] + tbs_len.to_bytes(2, "big") + negative[tbs_at + 4:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cert = x509.load_der_x509_certificate(negative)
        assert cert.serial_number == -1
    env.kv["apim-cert"].versions[-1] = (version, Signed(cert, signed.key))
    with FakeAzure(env, tmp_path) as f:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # discovery must not leave the warning to the caller
            disc = discover(_config(f, tmp_path), StaticCredential())
        assert f.errors == []
    (note,) = [n for n in disc.notes if "apim-cert" in n]
    assert "serial number which wasn't positive" in note
    assert "reissue the certificate" in note
    assert any(c.name == "apim-cert" and c.subject for c in disc.key_vault_certificates)
