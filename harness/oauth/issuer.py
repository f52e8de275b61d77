"""OAuth at the APIM hop: a local Entra ID issuer, negative tokens, and what an APIM JWT policy allows.

    issuer = LocalIssuer.for_cert_set(chain.certs)          # keys live beside the cert set (0600)
    token = issuer.mint(OAuth())                             # shaped like an Entra ID v2.0 access token
    chain.probe("apim", headers=bearer(token))

The local target's APIM stand-in checks tokens with Envoy's ``jwt_authn`` filter against :meth:`LocalIssuer.jwks`
(see :mod:`harness.render.envoy_oauth`). Every token is issued with PyJWT: RS256 with the issuer's 2048-bit RSA key,
``kid`` = the key's RFC 7638 thumbprint, claims as Entra ID v2.0 puts them in an access token (``iss``
``https://login.microsoftonline.com/<tid>/v2.0``, ``aud`` ``api://<app id>``, ``tid``, ``scp`` or ``roles``,
``iat``/``nbf``/``exp``, ``ver`` ``2.0``).

Negative tokens, for the local target and for a real tenant alike (none needs a secret of the tenant):

- :func:`resign` — the same claims signed by a key the tenant does not publish (the harness's own);
- :func:`expired_copy` — the claims moved into the past, re-signed by the harness (so against a real tenant it
  fails on the signature first: APIM reports one reason per token);
- :func:`tamper` — changed claims under the ORIGINAL header and signature (the signature no longer matches);
- :func:`unsigned_copy` — ``alg: none``, produced by PyJWT's ``"none"`` algorithm.

For the azure target: :func:`acquire_token` (azure-identity ``get_token`` for ``<app id uri>/.default``) and
:func:`validate_jwt_policy_summary`, which reads an APIM policy document's ``validate-jwt`` /
``validate-azure-ad-token`` elements (:mod:`harness.oauth.policy`).

Tokens are credentials: nothing here logs one; messages and reprs use :func:`redact` (a prefix and the length).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from harness.errors import HarnessError, UsageError, need_extra
from harness.model.topology import OAuth, Topology
from harness.oauth.policy import JwtPolicy, RequiredClaim, validate_jwt_policy_summary

__all__ = [
    "ALGORITHM",
    "DEFAULT_CLIENT_ID",
    "JwtPolicy",
    "LocalIssuer",
    "RequiredClaim",
    "acquire_token",
    "bearer",
    "entra_issuer",
    "expired_copy",
    "redact",
    "resign",
    "tamper",
    "unsigned_copy",
    "unverified_parts",
    "validate_jwt_policy_summary",
    "with_oauth",
]

#: Entra ID signs access tokens with RS256
ALGORITHM: Final = "RS256"
#: the client application (``azp``) the local issuer's tokens name: a placeholder GUID, no real app registration
DEFAULT_CLIENT_ID: Final = "0c9d8e7f-6a5b-4c3d-8e2f-1a0b9c8d7e6f"
#: Entra ID's v2.0 access tokens live one hour by default; the local issuer does the same
DEFAULT_LIFETIME: Final = dt.timedelta(hours=1)
#: RSA key size Entra ID uses for its signing keys
KEY_BITS: Final = 2048
_KEY_FILE: Final = "signing-key.pem"
_AUTHORITY: Final = "https://login.microsoftonline.com"


def entra_issuer(tenant: str) -> str:
    """Entra ID's v2.0 issuer for a tenant ID: ``https://login.microsoftonline.com/<tenant>/v2.0``."""
    if not tenant or any(c.isspace() or c == "/" for c in tenant):
        raise UsageError(f"tenant {tenant!r} is not a tenant ID — pass the directory (tenant) GUID")
    return f"{_AUTHORITY}/{tenant}/v2.0"


def with_oauth(topology: Topology, oauth: OAuth | None = None) -> Topology:
    """``topology`` with APIM's bearer-token check on (``oauth`` or the default :class:`OAuth`)."""
    import dataclasses

    return topology.replace(apim=dataclasses.replace(topology.apim, oauth=oauth or OAuth()))


def redact(token: str) -> str:
    """What a message may show of a token: its first 12 characters and its length."""
    return f"{token[:12]}…({len(token)} chars)" if len(token) > 12 else "…"


def bearer(token: str) -> dict[str, str]:
    """The request header that carries ``token`` (``Authorization: Bearer <token>``)."""
    if not token or any(c.isspace() for c in token):
        raise UsageError(f"bearer: {redact(token)} is not a compact JWT (empty or has whitespace)")
    return {"authorization": f"Bearer {token}"}


def _epoch(when: dt.datetime) -> int:
    if when.tzinfo is None:
        raise UsageError(f"{when!r} has no time zone — pass an aware datetime (datetime.now(timezone.utc))")
    return int(when.timestamp())


# ---------------------------------------------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------------------------------------------
def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _thumbprint(public: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url): the required members in lexical order, no whitespace."""
    nums = public.public_numbers()
    canonical = json.dumps({"e": _b64url_uint(nums.e), "kty": "RSA", "n": _b64url_uint(nums.n)},
                           separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def _load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The RSA key at ``path``; created (0600 from the start) when absent. Several processes may race: the first
    link wins and every process then reads that one file."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".signing-key.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            with contextlib.suppress(FileExistsError):  # another process linked its key first: use that one
                os.link(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise UsageError(f"{path}: the token signing key is readable by others (mode {mode:04o}) — "
                         f"chmod 600 {path}, or delete it to have a new one generated")
    try:
        # the harness's own key (made above, 0600): OpenSSL's full RSA check (primality, ~35 ms a load) adds nothing
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None,
                                                    unsafe_skip_rsa_key_validation=True)
    except ValueError:
        raise UsageError(f"{path}: not a PEM private key — delete it to have a new one generated") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise UsageError(f"{path}: not an RSA key (Entra ID signs with RSA) — delete it to have a new one generated")
    return loaded


class LocalIssuer:
    """A local stand-in for an Entra ID tenant's token service: one RSA signing key (in ``directory``, 0600), its
    JWKS, and tokens shaped like Entra ID v2.0 access tokens.

    Two issuers in different directories are strangers: a token of one does not verify with the other's JWKS (that
    is how "signed by an unknown key" is made: :meth:`stranger`).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._key = _load_or_create_key(self.directory / _KEY_FILE)
        self.kid = _thumbprint(self._key.public_key())

    def __repr__(self) -> str:
        return f"LocalIssuer({str(self.directory)!r}, kid={self.kid!r})"

    @classmethod
    def for_cert_set(cls, certs: object) -> LocalIssuer:
        """The issuer whose key lives with a cert set (``<set>/oauth/``), so every process of a run shares it."""
        directory = getattr(certs, "directory", None)
        if not isinstance(directory, str | os.PathLike):
            raise UsageError(f"LocalIssuer.for_cert_set: {certs!r} has no directory — pass a "
                             "harness.pki.certset.CertSet")
        return cls(Path(directory) / "oauth")

    def stranger(self) -> LocalIssuer:
        """Another issuer (its own key and kid) whose JWKS nobody publishes: its tokens are "signed by an unknown
        key" wherever this issuer's JWKS is trusted."""
        return LocalIssuer(self.directory / "unknown-signer")

    # -- keys ----------------------------------------------------------------------------------------------------
    def jwk(self) -> dict[str, Any]:
        """The public key as Entra ID publishes its keys: kty, use, kid, alg, n, e (built by PyJWT)."""
        doc = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"kty": doc["kty"], "use": "sig", "kid": self.kid, "alg": ALGORITHM, "n": doc["n"], "e": doc["e"]}

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set a verifier trusts (``{"keys": [jwk]}``)."""
        return {"keys": [self.jwk()]}

    def write_jwks(self, path: Path) -> Path:
        """Write :meth:`jwks` to ``path`` (0644: public keys only), atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as fh:
                json.dump(self.jwks(), fh, indent=2)
                fh.write("\n")
            os.rename(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    # -- tokens --------------------------------------------------------------------------------------------------
    def claims(
        self,
        oauth: OAuth,
        *,
        scopes: Iterable[str] | None = None,
        roles: Iterable[str] | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        tenant: str | None = None,
        client_id: str = DEFAULT_CLIENT_ID,
        issued_at: dt.datetime | None = None,
        not_before: dt.datetime | None = None,
        expires: dt.datetime | None = None,
        lifetime: dt.timedelta = DEFAULT_LIFETIME,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The claims of an Entra ID v2.0 access token for ``oauth``'s API, valid now unless told otherwise.

        ``scopes``/``roles`` default to what ``oauth`` requires (a token that passes); ``()`` leaves the claim out.
        A token with roles and no scopes is an app-only token (``idtyp: app``), as Entra ID issues them.
        ``extra`` adds or replaces claims; a value of None removes one (e.g. ``{"exp": None}``).
        """
        now = dt.datetime.now(dt.UTC)
        iat = issued_at or now
        nbf = not_before or iat
        exp = expires or (iat + lifetime)
        tid = tenant or oauth.tenant
        scp = tuple(scopes) if scopes is not None else ((oauth.required_scope,) if oauth.required_scope else ())
        rls = tuple(roles) if roles is not None else ((oauth.required_role,) if oauth.required_role else ())
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tid}/{client_id}"))
        out: dict[str, Any] = {
            "aud": audience or oauth.audience,
            "iss": issuer or (oauth.expected_issuer if tenant is None else entra_issuer(tid)),
            "iat": _epoch(iat),
            "nbf": _epoch(nbf),
            "exp": _epoch(exp),
            "azp": client_id,
            "azpacr": "1",
            "oid": object_id,
            "sub": object_id,
            "tid": tid,
            "uti": base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode(),
            "ver": "2.0",
        }
        if scp:
            out["scp"] = " ".join(scp)  # Entra ID: one space-separated string
        if rls:
            out["roles"] = list(rls)  # Entra ID: a JSON array
        if rls and not scp:
            out["idtyp"] = "app"
        for name, value in (extra or {}).items():
            if value is None:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """``claims`` as a compact JWS signed by this issuer (RS256, ``typ: JWT``, ``kid`` of this key)."""
        return jwt.encode(dict(claims), self._key, algorithm=ALGORITHM,
                          headers={"typ": "JWT", "kid": self.kid, **(headers or {})})

    def mint(self, oauth: OAuth, **claim_options: Any) -> str:
        """A signed access token for ``oauth``'s API: :meth:`claims` (same keyword arguments), then :meth:`sign`."""
        return self.sign(self.claims(oauth, **claim_options))


# ---------------------------------------------------------------------------------------------------------------
# negative tokens (no secret of the real issuer needed)
# ---------------------------------------------------------------------------------------------------------------
def unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A token's header and claims, read WITHOUT verifying anything (for building negative tokens and reports)."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise UsageError(f"{redact(token)} is not a compact JWT ({exc}) — pass the access token itself, "
                         "without the 'Bearer ' prefix") from None
    return header, claims


def _changed(claims: Mapping[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(claims)
    for name, value in (changes or {}).items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def resign(token: str, issuer: LocalIssuer, changes: Mapping[str, Any] | None = None) -> str:
    """The same claims (with ``changes``; None removes a claim) signed by ``issuer``'s key and kid: a token the
    real issuer never made, which a verifier that trusts only the real JWKS must refuse."""
    _, claims = unverified_parts(token)
    return issuer.sign(_changed(claims, changes))


def expired_copy(token: str, issuer: LocalIssuer, *, expired_for: dt.timedelta = dt.timedelta(hours=1)) -> str:
    """A copy whose validity window ended ``expired_for`` ago (its original length kept), re-signed by ``issuer``."""
    if expired_for <= dt.timedelta(0):
        raise UsageError(f"expired_copy: expired_for={expired_for} must be positive")
    _, claims = unverified_parts(token)
    try:
        start = int(claims.get("nbf", claims.get("iat", 0)))
        span = int(claims["exp"]) - start if "exp" in claims and start else int(DEFAULT_LIFETIME.total_seconds())
    except (TypeError, ValueError):
        raise UsageError(f"expired_copy: {redact(token)} has non-numeric time claims") from None
    span = max(span, 60)
    exp = int(dt.datetime.now(dt.UTC).timestamp()) - int(expired_for.total_seconds())
    return issuer.sign(_changed(claims, {"exp": exp, "nbf": exp - span, "iat": exp - span}))


def tamper(token: str, changes: Mapping[str, Any]) -> str:
    """``token`` with its claims changed (None removes one) under the ORIGINAL header and signature.

    This is the one place a token is put together from parts: a tampered token is by definition one no signer
    made. The payload segment is the changed claims in PyJWT's own JSON and base64url encoding.
    """
    if not changes:
        raise UsageError("tamper: no changes given — name at least one claim to change")
    header_b64, _, rest = token.partition(".")
    _, _, signature_b64 = rest.partition(".")
    _, claims = unverified_parts(token)
    payload = json.dumps(_changed(claims, changes), separators=(",", ":")).encode()
    return f"{header_b64}.{jwt.utils.base64url_encode(payload).decode()}.{signature_b64}"


def unsigned_copy(token: str) -> str:
    """The same claims with ``alg: none`` and an empty signature (PyJWT's ``"none"`` algorithm)."""
    _, claims = unverified_parts(token)
    return jwt.encode(claims, "", algorithm="none")  # PyJWT: the "none" algorithm takes an empty key


# ---------------------------------------------------------------------------------------------------------------
# a real tenant
# ---------------------------------------------------------------------------------------------------------------
class TokenCredentialLike(Protocol):
    """azure.core.credentials.TokenCredential: what azure-identity's credentials implement."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Any: ...


def default_scope(app_id_uri: str) -> str:
    """The client-credentials / ``.default`` scope for an API: ``<app id uri>/.default``."""
    uri = (app_id_uri or "").strip()
    if not uri or any(c.isspace() for c in uri):
        raise UsageError(f"app ID URI {app_id_uri!r} is empty or has whitespace — pass the API's Application ID URI "
                         "(e.g. api://<app id>) from its app registration's 'Expose an API' page")
    if uri.endswith("/.default"):
        return uri
    return uri.rstrip("/") + "/.default"


def acquire_token(credential: TokenCredentialLike, app_id_uri: str) -> str:
    """A real access token for the API ``app_id_uri`` from Entra ID (``credential.get_token("<uri>/.default")``).

    Any azure-identity credential works (DefaultAzureCredential, ClientSecretCredential, a managed identity). A
    failure becomes one :class:`HarnessError` naming the scope and the fix; the token itself is never shown.
    """
    need_extra("azure", "a live Entra ID token")
    from azure.core.exceptions import AzureError

    scope = default_scope(app_id_uri)
    try:
        access = credential.get_token(scope)
    except AzureError as exc:
        first = (str(getattr(exc, "message", None) or exc).strip().splitlines() or ["no detail"])[0]
        raise HarnessError(f"could not get a token for {scope}: {first} — check the Application ID URI, that the "
                           "caller may request it (an app role or API permission granted), and the credential "
                           "(az login, AZURE_CLIENT_ID/AZURE_TENANT_ID)") from None
    token = getattr(access, "token", None)
    if not isinstance(token, str) or token.count(".") != 2:
        raise HarnessError(f"{type(credential).__name__}.get_token({scope!r}) returned no compact JWT — "
                           "is it a TokenCredential from azure-identity?")
    return token
