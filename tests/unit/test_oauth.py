"""OAuth at the APIM hop: the local issuer, negative tokens, the policy summary, the rendered filters, `up --oauth`.

Tokens are checked with PyJWT against the issuer's published JWKS (an independent verifier); the APIM stand-in's own
verdicts on them are the e2e cases (``pytest tests/e2e -k oauth``). ``acquire_token`` runs the real azure-identity
ClientSecretCredential (and MSAL) against a fake Entra ID token endpoint on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import trustme
import yaml

from harness.errors import HarnessError, UsageError
from harness.model.topology import OAuth, default_topology
from harness.oauth.issuer import (
    LocalIssuer,
    acquire_token,
    bearer,
    entra_issuer,
    expired_copy,
    redact,
    resign,
    tamper,
    unsigned_copy,
    unverified_parts,
    validate_jwt_policy_summary,
    with_oauth,
)
from harness.pki.certset import CertSet, load_cert_set
from harness.render.envoy import render_envoy
from harness.targets.base import apim_jwks

REPO = Path(__file__).resolve().parents[2]
OAUTH = OAuth()


@pytest.fixture
def issuer(tmp_path: Path) -> LocalIssuer:
    return LocalIssuer(tmp_path / "issuer")


def _verify(token: str, issuer: LocalIssuer, oauth: OAuth = OAUTH, **options: Any) -> dict[str, Any]:
    """Verify as a relying party would: the key by kid from the published JWKS, RS256 only, aud and iss checked."""
    kid = jwt.get_unverified_header(token).get("kid")
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(issuer.jwks()).keys}
    if kid not in keys:
        raise jwt.InvalidKeyError(f"kid {kid!r} is not in the JWKS")
    return jwt.decode(token, keys[kid].key, algorithms=["RS256"], audience=oauth.audience,
                      issuer=oauth.expected_issuer, options={"require": ["exp", "iat", "nbf"]}, **options)


# ------------------------------------------------------------------------------------------------------------------
# minting
# ------------------------------------------------------------------------------------------------------------------
def test_minted_token_verifies_against_the_published_jwks_and_looks_like_entra_v2(issuer: LocalIssuer) -> None:
    token = issuer.mint(OAUTH)
    header = jwt.get_unverified_header(token)
    claims = _verify(token, issuer)
    assert header == {"alg": "RS256", "typ": "JWT", "kid": issuer.kid}
    assert claims["iss"] == f"https://login.microsoftonline.com/{OAUTH.tenant}/v2.0"
    assert claims["aud"].startswith("api://")
    assert claims["tid"] == OAUTH.tenant
    assert claims["ver"] == "2.0"
    assert claims["scp"] == "Echo.Read"
    assert "roles" not in claims
    assert claims["nbf"] == claims["iat"]
    assert claims["exp"] - claims["iat"] == 3600


def test_app_only_token_carries_roles_as_a_list_and_no_scope(issuer: LocalIssuer) -> None:
    claims = _verify(issuer.mint(OAUTH, scopes=(), roles=("Echo.Invoke", "Echo.Admin")), issuer)
    assert claims["roles"] == ["Echo.Invoke", "Echo.Admin"]
    assert "scp" not in claims
    assert claims["idtyp"] == "app"


def test_the_published_jwks_has_one_rsa_signing_key_named_by_its_kid(issuer: LocalIssuer) -> None:
    (key,) = issuer.jwks()["keys"]
    assert {k: key[k] for k in ("kty", "use", "alg", "kid", "e")} == {
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": issuer.kid, "e": "AQAB"}
    assert jwt.PyJWK.from_dict(key).key.key_size == 2048


def test_kid_is_the_rfc7638_thumbprint() -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from harness.oauth.issuer import _thumbprint

    # RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint
    n = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
         "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZ"
         "Hzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kE"
         "gU8awapJzKnqDKgw")
    modulus = int.from_bytes(jwt.utils.base64url_decode(n), "big")
    assert _thumbprint(rsa.RSAPublicNumbers(65537, modulus).public_key()) == \
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_claims_can_be_replaced_and_removed(issuer: LocalIssuer) -> None:
    token = issuer.mint(OAUTH, extra={"exp": None, "name": "Echo Tester"})
    _, claims = unverified_parts(token)
    assert "exp" not in claims
    assert claims["name"] == "Echo Tester"
    with pytest.raises(jwt.MissingRequiredClaimError):
        _verify(token, issuer)


def test_tokens_for_another_tenant_name_its_issuer(issuer: LocalIssuer) -> None:
    other = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
    _, claims = unverified_parts(issuer.mint(OAUTH, tenant=other))
    assert claims["iss"] == entra_issuer(other)
    assert claims["tid"] == other
    with pytest.raises(jwt.InvalidIssuerError):
        _verify(issuer.mint(OAUTH, tenant=other), issuer)


def test_time_bounds_are_honoured_by_a_verifier(issuer: LocalIssuer) -> None:
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(issuer.mint(OAUTH, issued_at=now - dt.timedelta(hours=2)), issuer)
    with pytest.raises(jwt.ImmatureSignatureError):
        _verify(issuer.mint(OAUTH, not_before=now + dt.timedelta(hours=1), expires=now + dt.timedelta(hours=2)),
                issuer)


def test_a_naive_datetime_is_one_clear_error(issuer: LocalIssuer) -> None:
    with pytest.raises(UsageError, match="no time zone"):
        issuer.mint(OAUTH, issued_at=dt.datetime(2026, 1, 1))


# ------------------------------------------------------------------------------------------------------------------
# the signing key
# ------------------------------------------------------------------------------------------------------------------
def test_signing_key_is_private_and_shared_by_every_issuer_on_the_directory(tmp_path: Path) -> None:
    first = LocalIssuer(tmp_path / "iss")
    second = LocalIssuer(tmp_path / "iss")
    key_file = tmp_path / "iss" / "signing-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.kid == second.kid
    assert _verify(first.mint(OAUTH), second)
    assert [p.name for p in (tmp_path / "iss").iterdir()] == ["signing-key.pem"]  # no temp file left


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    LocalIssuer(tmp_path / "iss")
    (tmp_path / "iss" / "signing-key.pem").chmod(0o644)
    with pytest.raises(UsageError, match=r"readable by others.*chmod 600"):
        LocalIssuer(tmp_path / "iss")


def test_a_damaged_signing_key_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "iss").mkdir()
    fd = os.open(tmp_path / "iss" / "signing-key.pem", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(UsageError, match="not a PEM private key"):
        LocalIssuer(tmp_path / "iss")


def test_issuer_for_a_cert_set_lives_beside_it(pki_set: CertSet) -> None:
    issuer = LocalIssuer.for_cert_set(pki_set)
    assert issuer.directory == pki_set.directory / "oauth"
    assert LocalIssuer.for_cert_set(load_cert_set(pki_set.directory)).kid == issuer.kid
    with pytest.raises(UsageError, match="has no directory"):
        LocalIssuer.for_cert_set(object())


def test_messages_show_tokens_only_redacted(issuer: LocalIssuer) -> None:
    token = issuer.mint(OAUTH)
    shown = redact(token)
    assert token not in shown
    assert shown.startswith(token[:12])
    assert str(len(token)) in shown
    assert bearer(token) == {"authorization": f"Bearer {token}"}
    with pytest.raises(UsageError) as info:
        bearer(token + " x")
    assert token not in str(info.value)


# ------------------------------------------------------------------------------------------------------------------
# negative tokens
# ------------------------------------------------------------------------------------------------------------------
def test_stranger_signs_with_a_key_the_jwks_does_not_publish(issuer: LocalIssuer) -> None:
    stranger = issuer.stranger()
    token = stranger.mint(OAUTH)
    assert stranger.kid != issuer.kid
    assert jwt.get_unverified_header(token)["kid"] == stranger.kid
    with pytest.raises(jwt.InvalidKeyError):
        _verify(token, issuer)
    assert _verify(token, stranger)


def test_resign_keeps_the_claims_under_the_harness_key(issuer: LocalIssuer) -> None:
    original = issuer.mint(OAUTH)
    harness_key = issuer.stranger()
    forged = resign(original, harness_key, {"scp": "Echo.Read Echo.Admin"})
    _, before = unverified_parts(original)
    header, after = unverified_parts(forged)
    assert header["kid"] == harness_key.kid
    assert after == before | {"scp": "Echo.Read Echo.Admin"}
    with pytest.raises(jwt.InvalidKeyError):
        _verify(forged, issuer)


def test_expired_copy_has_the_original_lifetime_in_the_past(issuer: LocalIssuer) -> None:
    original = issuer.mint(OAUTH, lifetime=dt.timedelta(minutes=75))
    copy = expired_copy(original, issuer, expired_for=dt.timedelta(minutes=10))
    _, claims = unverified_parts(copy)
    now = dt.datetime.now(dt.UTC).timestamp()
    assert claims["exp"] < now - 500
    assert claims["exp"] - claims["nbf"] == 75 * 60
    with pytest.raises(jwt.ExpiredSignatureError):
        _verify(copy, issuer)
    with pytest.raises(UsageError):
        expired_copy(original, issuer, expired_for=dt.timedelta(0))


def test_tamper_keeps_the_original_header_and_signature(issuer: LocalIssuer) -> None:
    original = issuer.mint(OAUTH)
    forged = tamper(original, {"scp": "Echo.Read Echo.Admin", "azpacr": None})
    assert forged.split(".")[0] == original.split(".")[0]
    assert forged.split(".")[2] == original.split(".")[2]
    _, claims = unverified_parts(forged)
    assert claims["scp"] == "Echo.Read Echo.Admin"
    assert "azpacr" not in claims
    with pytest.raises(jwt.InvalidSignatureError):
        _verify(forged, issuer)
    with pytest.raises(UsageError, match="no changes"):
        tamper(original, {})


def test_unsigned_copy_is_alg_none_and_refused_by_a_verifier(issuer: LocalIssuer) -> None:
    original = issuer.mint(OAUTH)
    unsigned = unsigned_copy(original)
    header, claims = unverified_parts(unsigned)
    assert header["alg"] == "none"
    assert unsigned.endswith(".")  # no signature at all
    assert claims == unverified_parts(original)[1]
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(unsigned, issuer.jwk()["n"], algorithms=["RS256"])


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer eyJ0eXAiOiJKV1QifQ.e30.x"])
def test_something_that_is_not_a_jwt_is_one_clear_error(garbage: str) -> None:
    with pytest.raises(UsageError, match="not a compact JWT"):
        unverified_parts(garbage)


# ------------------------------------------------------------------------------------------------------------------
# acquire_token: the real azure-identity credential against a fake Entra ID on 127.0.0.1
# ------------------------------------------------------------------------------------------------------------------
class _FakeEntra:
    """OpenID configuration + v2.0 token endpoint for any tenant; tokens minted by a LocalIssuer for the scope's
    API. ``fail`` makes the token endpoint answer like Entra ID does to a bad client secret."""

    def __init__(self, issuer: LocalIssuer) -> None:
        self.issuer = issuer
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.fail = False
        self.ca = trustme.CA()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path, {}))
                tenant = self.path.split("/")[1]
                base = f"{fake.authority}/{tenant}"
                self._json(200, {"issuer": f"{base}/v2.0", "token_endpoint": f"{base}/oauth2/v2.0/token",
                                 "authorization_endpoint": f"{base}/oauth2/v2.0/authorize"})

            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers.get("content-length", 0))).decode())
                fake.requests.append(("POST", self.path, form))
                if fake.fail:
                    self._json(401, {"error": "invalid_client", "error_description":
                                     "AADSTS7000215: Invalid client secret provided."})
                    return
                audience = form["scope"][0].removesuffix("/.default")
                token = fake.issuer.mint(OAuth(audience=audience), scopes=(), roles=("Echo.Invoke",))
                self._json(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1").configure_cert(ctx)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def authority(self) -> str:
        return f"https://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def fake_entra(issuer: LocalIssuer, tmp_path: Path) -> Iterator[tuple[_FakeEntra, Path]]:
    fake = _FakeEntra(issuer)
    ca_file = tmp_path / "fake-entra-ca.pem"
    fake.ca.cert_pem.write_to_path(str(ca_file))
    fake.thread.start()
    try:
        yield fake, ca_file
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def _credential(fake: _FakeEntra, ca_file: Path, secret: str = "s3cret-value") -> Any:
    from azure.identity import ClientSecretCredential

    return ClientSecretCredential(OAUTH.tenant, "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f", secret,
                                  authority=fake.authority, disable_instance_discovery=True,
                                  connection_verify=str(ca_file), retry_total=0)


def test_acquire_token_asks_for_the_default_scope_and_returns_the_access_token(
        fake_entra: tuple[_FakeEntra, Path], issuer: LocalIssuer) -> None:
    fake, ca_file = fake_entra
    credential = _credential(fake, ca_file)
    try:
        token = acquire_token(credential, "api://echo-api/")
    finally:
        credential.close()
    posts = [form for method, _, form in fake.requests if method == "POST"]
    assert [(f["grant_type"], f["scope"]) for f in posts] == [(["client_credentials"], ["api://echo-api/.default"])]
    claims = _verify(token, issuer, OAuth(audience="api://echo-api"))
    assert claims["roles"] == ["Echo.Invoke"]


def test_acquire_token_failure_is_one_error_naming_the_scope_without_secrets(
        fake_entra: tuple[_FakeEntra, Path]) -> None:
    fake, ca_file = fake_entra
    fake.fail = True
    credential = _credential(fake, ca_file, secret="do-not-print-me")
    try:
        with pytest.raises(HarnessError) as info:
            acquire_token(credential, "api://echo-api")
    finally:
        credential.close()
    message = str(info.value)
    assert "api://echo-api/.default" in message
    assert "AADSTS7000215" in message
    assert "do-not-print-me" not in message


@pytest.mark.parametrize("uri", ["", "  ", "api://echo api"])
def test_acquire_token_refuses_an_unusable_app_id_uri_before_asking(uri: str) -> None:
    class NeverCalled:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            raise AssertionError("the credential must not be asked")

    with pytest.raises(UsageError, match="Application ID URI"):
        acquire_token(NeverCalled(), uri)


# ------------------------------------------------------------------------------------------------------------------
# the policy summary (documents shaped like APIM's format=xml export)
# ------------------------------------------------------------------------------------------------------------------
API_POLICY = """<policies>
  <inbound>
    <base />
    <validate-jwt header-name="Authorization" failed-validation-httpcode="401"
                  failed-validation-error-message="Unauthorized. Access token is missing or invalid."
                  require-scheme="Bearer" clock-skew="30">
      <openid-config url="https://login.microsoftonline.com/{TID}/v2.0/.well-known/openid-configuration" />
      <audiences>
        <audience>api://{APP}</audience>
      </audiences>
      <issuers>
        <issuer>https://login.microsoftonline.com/{TID}/v2.0</issuer>
      </issuers>
      <required-claims>
        <claim name="scp" match="any" separator=" ">
          <value>Echo.Read</value>
          <value>Echo.ReadWrite</value>
        </claim>
      </required-claims>
    </validate-jwt>
    <choose>
      <when condition="@(context.Request.Method == &quot;POST&quot;)">
        <validate-azure-ad-token tenant-id="{TID}" output-token-variable-name="jwt">
          <client-application-ids>
            <application-id>0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f</application-id>
          </client-application-ids>
          <audiences>
            <audience>api://{APP}</audience>
          </audiences>
          <required-claims>
            <claim name="roles" match="all">
              <value>Echo.Write</value>
            </claim>
          </required-claims>
        </validate-azure-ad-token>
      </when>
    </choose>
  </inbound>
  <backend><base /></backend>
  <outbound><base /></outbound>
  <on-error><base /></on-error>
</policies>""".replace("{TID}", OAUTH.tenant).replace("{APP}", OAUTH.audience.removeprefix("api://"))


def test_policy_summary_reads_both_token_policies_in_document_order() -> None:
    jwt_policy, aad_policy = validate_jwt_policy_summary(API_POLICY)
    assert (jwt_policy.element, jwt_policy.where) == ("validate-jwt", "inbound")
    assert jwt_policy.token_source == "header Authorization"
    assert jwt_policy.audiences == (OAUTH.audience,)
    assert jwt_policy.issuers == (f"https://login.microsoftonline.com/{OAUTH.tenant}/v2.0",)
    assert jwt_policy.openid_config_urls[0].endswith("/v2.0/.well-known/openid-configuration")
    assert [(c.name, c.match, c.separator, c.values) for c in jwt_policy.required_claims] == [
        ("scp", "any", " ", ("Echo.Read", "Echo.ReadWrite"))]
    assert (jwt_policy.failed_status, jwt_policy.failed_message) == (
        "401", "Unauthorized. Access token is missing or invalid.")
    assert (jwt_policy.require_scheme, jwt_policy.clock_skew, jwt_policy.require_expiration_time) == (
        "Bearer", "30", True)
    assert (aad_policy.element, aad_policy.where) == ("validate-azure-ad-token", "inbound/choose/when")
    assert aad_policy.token_source == "header Authorization"  # the element's documented default
    assert aad_policy.client_application_ids == ("0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f",)
    assert aad_policy.accepted_issuers == (
        f"https://login.microsoftonline.com/{OAUTH.tenant}/v2.0", f"https://sts.windows.net/{OAUTH.tenant}/")
    text = jwt_policy.describe()
    assert "requires scp: any of Echo.Read, Echo.ReadWrite" in text


def test_policy_summary_judges_the_local_issuers_tokens(issuer: LocalIssuer) -> None:
    jwt_policy, aad_policy = validate_jwt_policy_summary(API_POLICY)
    token_claims = unverified_parts(issuer.mint(OAUTH))[1]
    assert jwt_policy.problems_with(token_claims) == []
    assert aad_policy.problems_with(token_claims) == ["claim 'roles' is missing (required: all of Echo.Write)"]
    app = unverified_parts(issuer.mint(OAUTH, scopes=(), roles=("Echo.Write",)))[1]
    assert aad_policy.problems_with(app) == []
    wrong = unverified_parts(issuer.mint(OAUTH, audience="api://other", scopes=("Echo.Readers",),
                                         tenant="9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"))[1]
    problems = jwt_policy.problems_with(wrong)
    assert [p.split(" ")[0] for p in problems] == ["aud", "iss", "claim"], problems
    assert "has none of Echo.Read, Echo.ReadWrite" in problems[2]
    no_exp = unverified_parts(issuer.mint(OAUTH, extra={"exp": None}))[1]
    assert jwt_policy.problems_with(no_exp) == ["exp is missing and require-expiration-time is true"]


def test_policy_summary_marks_run_time_values_undecidable_not_passed() -> None:
    doc = """<policies><inbound><validate-jwt header-name="Authorization">
      <audiences><audience>@(context.Request.OriginalUrl.Host)</audience></audiences>
      <required-claims><claim name="groups"><value>{{finance-group-id}}</value></claim></required-claims>
    </validate-jwt></inbound></policies>"""
    (policy,) = validate_jwt_policy_summary(doc)
    problems = policy.problems_with({"aud": "apim.contoso.example", "groups": ["x"], "exp": 1})
    assert [p.split(" ")[0] for p in problems] == ["audience", "claim"]
    assert all("run time" in p for p in problems)


def test_policy_summary_of_a_document_without_token_policies_is_empty() -> None:
    assert validate_jwt_policy_summary("<policies><inbound><base /></inbound></policies>") == ()


@pytest.mark.parametrize(("doc", "message"), [
    ('<policies><inbound><when condition="@(a == "b")"/></inbound></policies>', "format=xml"),
    ("", "empty"),
    ("<policies><inbound><validate-azure-ad-token><client-application-ids /></validate-azure-ad-token>"
     "</inbound></policies>", "tenant-id is missing"),
    ('<validate-jwt header-name="Authorization"><required-claims><claim name="scp" match="some"><value>x</value>'
     "</claim></required-claims></validate-jwt>", "match='some'"),
    ('<validate-jwt header-name="Authorization" require-expiration-time="yes"/>', "not true or false"),
])
def test_an_unusable_policy_document_is_one_clear_error(doc: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_jwt_policy_summary(doc)


# ------------------------------------------------------------------------------------------------------------------
# the APIM stand-in's configuration, and `up --oauth` for real
# ------------------------------------------------------------------------------------------------------------------
def _bootstrap(topology: Any, hop: str, certs: CertSet, workdir: Path) -> dict[str, Any]:
    config = render_envoy(topology, hop, certs, listen=("127.0.0.1", 8443), upstream=("127.0.0.1", 9443),  # type: ignore[arg-type]
                          admin=("127.0.0.1", 9901), workdir=workdir,
                          jwks=apim_jwks(topology, certs))
    doc: dict[str, Any] = yaml.safe_load(config.config_path.read_text())
    return doc


def _http_filters(doc: dict[str, Any]) -> list[dict[str, Any]]:
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    filters: list[dict[str, Any]] = hcm["http_filters"]
    return filters


def test_apim_stand_in_takes_the_token_only_from_the_authorization_header_after_the_cert_check(
        pki_set: CertSet, tmp_path: Path) -> None:
    doc = _bootstrap(with_oauth(default_topology()), "apim", pki_set, tmp_path / "apim")
    filters = _http_filters(doc)
    names = [f["typed_config"]["@type"].rsplit(".", 1)[-1] for f in filters]
    assert names == ["Lua", "JwtAuthentication", "Lua", "Router"]
    provider = filters[1]["typed_config"]["providers"]["entra"]
    # no from_params: Envoy's default would also read ?access_token=, APIM's header-name="Authorization" does not
    assert provider["from_headers"] == [{"name": "Authorization", "value_prefix": "Bearer "}]
    assert "from_params" not in provider
    assert provider["require_expiration"] is True
    jwks_file = Path(provider["local_jwks"]["filename"])
    assert json.loads(jwks_file.read_text()) == LocalIssuer.for_cert_set(pki_set).jwks()
    assert "PRIVATE" not in jwks_file.read_text()


@pytest.mark.parametrize("oauth", [None, OAuth(enabled=False)], ids=["no-oauth", "oauth-disabled"])
def test_without_oauth_the_stand_ins_render_no_token_check(pki_set: CertSet, tmp_path: Path,
                                                           oauth: OAuth | None) -> None:
    import dataclasses

    topology = default_topology()
    topology = topology.replace(apim=dataclasses.replace(topology.apim, oauth=oauth))
    for hop in ("apim", "gateway"):
        text = json.dumps(_bootstrap(topology, hop, pki_set, tmp_path / hop))
        assert "jwt_authn" not in text, hop
        assert not (tmp_path / hop / "jwks.json").exists()


