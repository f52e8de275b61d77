"""The OAuth cases: APIM's bearer-token check (``validate-jwt`` with Entra ID tokens), as catalogue cases.

Every case runs on a variant with ``topology.apim.oauth`` on and sends ``Authorization: Bearer <token>`` minted when
the case runs (:attr:`harness.cases.model.Case.headers_factory`), so time-bound tokens are fresh. Tokens come from the
local issuer whose JWKS the APIM stand-in trusts (:class:`harness.oauth.issuer.LocalIssuer`); each negative token
breaks one thing only. APIM answers every refusal with 401 and the policy's message (written here from APIM's
validate-jwt reference, not taken from the renderer); on the local target the stand-in's ``x-harness-detail``
header also carries Envoy's reason, which each negative case asserts as its cause (``token:<jwt_authn reason>``) with
apim as the deciding hop, so a token refused for the wrong reason fails its case.

Layer independence (variant: OAuth and validate-client-certificate both on): a good token does not get a bad client
cert through, and a good client cert does not get a bad token through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Final, Literal

from harness.cases.model import DEFAULT_IDENTITY, Case
from harness.errors import HarnessError
from harness.model.topology import OAuth, Topology, default_topology
from harness.oauth.issuer import LocalIssuer, bearer, tamper, unsigned_copy
from harness.probe.outcomes import Outcome, http_reject, ok

if TYPE_CHECKING:
    from harness.targets.base import RunningChain

__all__ = ["APIM_401_TOKEN_MESSAGE", "OTHER_TENANT", "REQUIRED_ROLE", "oauth_cases"]

#: another (placeholder) tenant: its tokens name another issuer
OTHER_TENANT: Final = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
#: the app role the role variant requires (an app-only token carries it in ``roles``)
REQUIRED_ROLE: Final = "Echo.Invoke"
#: APIM's validate-client-certificate answer (harness.render.envoy_lua)
_CERT_MESSAGE: Final = "Invalid client certificate"
#: the 401 message, written from its public source and NOT taken from the renderer under test (they would drift
#: together): the validate-jwt policy reference's Microsoft Entra ID example,
#: ``<validate-jwt header-name="Authorization" failed-validation-httpcode="401"
#: failed-validation-error-message="Unauthorized. Access token is missing or invalid.">``
#: (learn.microsoft.com/azure/api-management/validate-jwt-policy)
APIM_401_TOKEN_MESSAGE: Final = "Unauthorized. Access token is missing or invalid."

_SRC = "APIM validate-jwt reference: failed-validation-httpcode 401, the Entra ID example's error message"
_SRC_ENVOY = _SRC + "; reason from Envoy jwt_authn (measured)"

#: (issuer, the API's OAuth settings, now) → a compact JWT
TokenRecipe = Callable[[LocalIssuer, OAuth, dt.datetime], str]


# ------------------------------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------------------------------
def apim_validates_jwt(t: Topology) -> Topology:
    """OAuth on at APIM: the default :class:`OAuth` (scope Echo.Read required)."""
    return t.replace(apim=dataclasses.replace(t.apim, oauth=OAuth()))


def apim_validates_jwt_role(t: Topology) -> Topology:
    """OAuth on at APIM, requiring the app role :data:`REQUIRED_ROLE` instead of a scope."""
    return t.replace(apim=dataclasses.replace(t.apim, oauth=OAuth(required_scope=None,
                                                                  required_role=REQUIRED_ROLE)))


def apim_validates_jwt_and_client_cert(t: Topology) -> Topology:
    """OAuth and validate-client-certificate (with certificate negotiation) both on at APIM."""
    return t.replace(apim=dataclasses.replace(t.apim, oauth=OAuth(), negotiate_client_certificate=True,
                                              validate_client_certificate=True))


# ------------------------------------------------------------------------------------------------------------------
# tokens, minted when the case runs
# ------------------------------------------------------------------------------------------------------------------
def _bearer(recipe: TokenRecipe) -> Callable[[RunningChain], Mapping[str, str]]:
    def headers(chain: RunningChain) -> Mapping[str, str]:
        oauth = chain.topology.apim.oauth
        if oauth is None or not oauth.enabled:
            raise HarnessError(f"the chain on the {chain.target} target has no OAuth at APIM — this case needs the "
                               "variant that turns it on")
        return bearer(recipe(LocalIssuer.for_cert_set(chain.certs), oauth, dt.datetime.now(dt.UTC)))

    headers.__name__ = f"bearer_{getattr(recipe, '__name__', 'token')}"
    return headers


def valid(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o)


def expired(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, issued_at=now - dt.timedelta(hours=2), lifetime=dt.timedelta(hours=1))


def expired_10s_ago(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    # beyond APIM's default clock-skew of 0 (the stand-in allows 1 s), well within Envoy's own default of 60 s
    return i.mint(o, issued_at=now - dt.timedelta(hours=1, seconds=10), lifetime=dt.timedelta(hours=1))


def not_yet_valid(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, issued_at=now, not_before=now + dt.timedelta(hours=1), expires=now + dt.timedelta(hours=2))


def wrong_audience(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, audience="api://00000000-0000-0000-0000-000000000000")


def other_tenant(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, tenant=OTHER_TENANT)


def unknown_key(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.stranger().mint(o)


def alg_none(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return unsigned_copy(i.mint(o))


def tampered(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return tamper(i.mint(o), {"scp": "Echo.Read Echo.Admin"})


def no_expiry(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, extra={"exp": None})


def other_scope(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, scopes=("Echo.Write",))


def superstring_scope(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, scopes=("Echo.ReadWrite",))


def several_scopes(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, scopes=("Echo.Write", "Echo.Read", "User.Read"))


def app_with_role(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, scopes=(), roles=(REQUIRED_ROLE,))


def app_with_other_role(i: LocalIssuer, o: OAuth, now: dt.datetime) -> str:
    return i.mint(o, scopes=(), roles=("Echo.Admin",))


# ------------------------------------------------------------------------------------------------------------------
# the cases
# ------------------------------------------------------------------------------------------------------------------
def oauth_cases(t: Topology | None = None) -> Iterator[Case]:
    """The OAuth cases for chain ``t`` (default: the reference), in the catalogue's shape (register with
    ``CASE_BUILDERS``). On a chain whose APIM also validates client certificates, a case about the token presents the
    client identity APIM trusts, so the certificate layer does not answer first."""
    from harness.cases.cross_domain import consumer_identity

    chain = t or default_topology()
    consumer = consumer_identity(chain, "apim")
    validates = chain.apim.negotiate_client_certificate and chain.apim.validate_client_certificate

    def case(cid: str, column: str, expect: Outcome, recipe: TokenRecipe | None, *, reason: str | None = None,
             variant: Callable[[Topology], Topology] = apim_validates_jwt, source: str = _SRC_ENVOY,
             identity: str | None = DEFAULT_IDENTITY, via: Literal["direct", "chain"] = "direct") -> Case:
        """``reason``: the cause apim's detail header must name (jwt_authn's reason as ``token:<reason>``, or the
        client-cert cause), so a token refused for the wrong reason fails its case."""
        if reason is not None:
            expect = dataclasses.replace(expect, hop="apim", cause=reason)
        return Case(cid, "apim", "apim", f"OAuth: {column}", expect, source, via=via, variant=variant,
                    identity=identity, headers_factory=_bearer(recipe) if recipe else None)

    reject = http_reject(401, APIM_401_TOKEN_MESSAGE)

    yield case("apim-oauth-rejects-missing-token-with-401", "no token", reject, None, reason="token:Jwt_is_missing",
               identity=consumer if validates else None)
    yield case("apim-oauth-accepts-valid-entra-token", "valid", ok(200), valid, source=_SRC)
    yield case("apim-oauth-rejects-expired-token-with-401", "expired", reject, expired, reason="token:Jwt_is_expired")
    yield case("apim-oauth-rejects-token-expired-seconds-ago-without-clock-skew", "expired (skew)", reject,
               expired_10s_ago, reason="token:Jwt_is_expired",
               source=_SRC + " (clock-skew default 0 s); Envoy's own default skew is 60 s (measured)")
    yield case("apim-oauth-rejects-not-yet-valid-token-with-401", "not yet valid", reject, not_yet_valid,
               reason="token:Jwt_not_yet_valid")
    yield case("apim-oauth-rejects-token-for-another-audience-with-401", "wrong audience", reject, wrong_audience,
               reason="token:Audiences_in_Jwt_are_not_allowed",
               source=_SRC_ENVOY + " (jwt_authn's own answer is 403: mapped to 401)")
    yield case("apim-oauth-rejects-token-from-another-tenant-with-401", "wrong issuer", reject, other_tenant,
               reason="token:Jwt_issuer_is_not_configured")
    yield case("apim-oauth-rejects-token-signed-by-unknown-key-with-401", "unknown signing key", reject, unknown_key,
               reason="token:Jwks_doesn't_have_key_to_match_kid_or_alg_from_Jwt")
    yield case("apim-oauth-rejects-unsigned-alg-none-token-with-401", "alg none", reject, alg_none,
               reason="token:Jwt_is_not_in_the_form_of_Header.Payload.Signature_with_two_dots_and_3_sections",
               source=_SRC + " (require-signed-tokens default true); jwt_authn reads the unsigned token as "
                             "malformed (measured)")
    yield case("apim-oauth-rejects-tampered-claims-with-401", "tampered payload", reject, tampered,
               reason="token:Jwt_verification_fails")
    yield case("apim-oauth-rejects-token-without-expiry-with-401", "no exp", reject, no_expiry,
               reason="token:Jwt_verification_fails", source=_SRC + " (require-expiration-time default true)")
    yield case("apim-oauth-rejects-token-without-required-scope-with-401", "missing scope", reject, other_scope,
               reason="token:claim=scp", source=_SRC + " (<required-claims> scp)")
    yield case("apim-oauth-matches-required-scope-whole-not-as-substring", "missing scope", reject,
               superstring_scope, reason="token:claim=scp", source=_SRC + " (scp is space-separated values)")
    yield case("apim-oauth-accepts-required-scope-among-several", "valid", ok(200), several_scopes,
               source=_SRC + " (scp is space-separated values)")
    yield case("apim-oauth-accepts-app-token-with-required-role", "valid (role)", ok(200), app_with_role,
               variant=apim_validates_jwt_role, source=_SRC + " (<required-claims> roles)")
    yield case("apim-oauth-rejects-app-token-without-required-role-with-401", "missing role", reject,
               app_with_other_role, reason="token:claim=roles", variant=apim_validates_jwt_role,
               source=_SRC + " (<required-claims> roles)")

    # both layers on: neither masks the other
    both = apim_validates_jwt_and_client_cert
    src = "APIM validate-client-certificate and validate-jwt are separate inbound policies: each must pass"
    yield case("apim-oauth-and-client-cert-accepts-valid-token-with-valid-cert", "both layers", ok(200), valid,
               variant=both, source=src, identity=consumer)
    yield case("apim-oauth-valid-token-does-not-mask-untrusted-client-cert", "both layers",
               http_reject(401, _CERT_MESSAGE), valid, variant=both, source=src,
               identity=f"{consumer}~unknown-ca", reason="not-trusted")
    yield case("apim-oauth-valid-token-does-not-mask-missing-client-cert", "both layers",
               http_reject(401, _CERT_MESSAGE), valid, variant=both, source=src, identity=None,
               reason="no-client-cert")
    yield case("apim-oauth-valid-client-cert-does-not-mask-expired-token", "both layers", reject, expired,
               variant=both, source=src, identity=consumer, reason="token:Jwt_is_expired")
    yield case("apim-oauth-valid-client-cert-does-not-mask-missing-token", "both layers", reject, None,
               variant=both, source=src, identity=consumer, reason="token:Jwt_is_missing")

    # through the gateway: App Gateway passes the Authorization header and APIM's 401 unchanged
    src = "App Gateway forwards request headers and backend answers unchanged"
    yield case("chain-oauth-carries-bearer-token-through-gateway-to-apim", "through gateway", ok(200), valid,
               source=src, via="chain")
    yield case("chain-oauth-returns-apims-401-for-missing-token-through-gateway", "through gateway", reject, None,
               source=src, via="chain", reason="token:Jwt_is_missing")
