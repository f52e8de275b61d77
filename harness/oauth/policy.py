"""What an APIM policy document's JWT checks allow: ``validate-jwt`` and ``validate-azure-ad-token``, read statically.

    for policy in validate_jwt_policy_summary(policy_xml):
        print(policy.describe())
        problems = policy.problems_with(claims)       # why a token with these claims would be refused

The document is parsed with the standard library's XML parser. APIM hands out two forms: ``format=xml`` (policy
expressions escaped, well-formed) and ``rawxml`` (expressions as typed, often NOT well-formed XML because of ``"``
and ``&&`` inside ``@(...)``); the escaped form is the one to read. Values that APIM resolves at run time — policy
expressions ``@(...)`` and named values ``{{name}}`` — are reported as they are written and marked dynamic; a claim
check that depends on one is reported as undecidable, never as passed.

Semantics, from the APIM policy reference: ``audiences`` — the token's ``aud`` must be one of them (none listed:
not checked by validate-jwt); ``issuers`` — ``iss`` must be one of them; ``required-claims/claim`` — ``match="all"``
(the default) needs every listed value in the claim, ``match="any"`` one of them, ``separator`` splits a
multi-valued string claim; ``failed-validation-httpcode`` defaults to 401. ``validate-azure-ad-token`` takes the
issuer from its ``tenant-id``'s Entra ID configuration and checks ``client-application-ids`` against the token's
client (``azp`` in v2.0 tokens, ``appid`` in v1.0).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from harness.errors import UsageError

__all__ = ["ELEMENTS", "JwtPolicy", "RequiredClaim", "is_dynamic", "validate_jwt_policy_summary"]

PolicyElement = Literal["validate-jwt", "validate-azure-ad-token"]
#: the policy elements that check a bearer token
ELEMENTS: Final[tuple[PolicyElement, ...]] = ("validate-jwt", "validate-azure-ad-token")
_ENTRA: Final = "https://login.microsoftonline.com"


def is_dynamic(value: str | None) -> bool:
    """True for a value APIM resolves at run time: a policy expression ``@(...)``/``@{...}`` or a named value."""
    return value is not None and (value.lstrip().startswith("@") or "{{" in value)


@dataclass(frozen=True)
class RequiredClaim:
    """One ``<required-claims><claim>`` element."""

    name: str
    values: tuple[str, ...]
    match: str = "all"
    separator: str | None = None

    def problem_with(self, claims: Mapping[str, Any]) -> str | None:
        """Why a token with ``claims`` fails this requirement (None when it passes)."""
        if any(is_dynamic(v) for v in self.values):
            return f"claim {self.name!r}: a required value is resolved at run time ({', '.join(self.values)})"
        present = claims.get(self.name)
        if present is None:
            return f"claim {self.name!r} is missing (required: {self.match} of {', '.join(self.values)})"
        items = present if isinstance(present, list) else [present]
        have: set[str] = set()
        for item in items:
            parts = str(item).split(self.separator) if self.separator else [str(item)]
            have.update(p.strip() for p in parts if p.strip())
        wanted = set(self.values)
        if self.match == "any" and not wanted & have:
            return f"claim {self.name!r} has none of {', '.join(self.values)} (has: {', '.join(sorted(have))})"
        if self.match != "any" and not wanted <= have:
            missing = ", ".join(sorted(wanted - have))
            return f"claim {self.name!r} lacks {missing} (has: {', '.join(sorted(have))})"
        return None


@dataclass(frozen=True)
class JwtPolicy:
    """One token-checking element of a policy document, as APIM would apply it."""

    element: PolicyElement
    where: str  # the path of sections above it, e.g. "inbound" or "inbound/choose/when"
    token_source: str  # "header Authorization", "query access_token", "expression @(...)"
    audiences: tuple[str, ...]
    issuers: tuple[str, ...]
    required_claims: tuple[RequiredClaim, ...]
    openid_config_urls: tuple[str, ...] = ()
    tenant_id: str | None = None  # validate-azure-ad-token
    client_application_ids: tuple[str, ...] = ()  # validate-azure-ad-token
    backend_application_ids: tuple[str, ...] = ()  # validate-azure-ad-token
    require_scheme: str | None = None
    require_expiration_time: bool = True
    require_signed_tokens: bool = True
    clock_skew: str | None = None
    failed_status: str = "401"
    failed_message: str | None = None  # None: APIM's default message, which depends on the failure

    @property
    def accepted_issuers(self) -> tuple[str, ...]:
        """Issuers a token may name: the listed ones; for validate-azure-ad-token with a literal tenant, Entra ID's
        v2.0 and v1.0 issuers for that tenant."""
        if self.issuers:
            return self.issuers
        if self.element == "validate-azure-ad-token" and self.tenant_id and not is_dynamic(self.tenant_id):
            return (f"{_ENTRA}/{self.tenant_id}/v2.0", f"https://sts.windows.net/{self.tenant_id}/")
        return ()

    def problems_with(self, claims: Mapping[str, Any]) -> list[str]:
        """Why a token with these (already signature-checked) claims would be refused by this element's static
        checks — audience, issuer, client application, required claims. Empty: nothing here refuses it. Time
        claims and signatures are not judged (they depend on the clock and the keys, not on the policy)."""
        out: list[str] = []
        aud = claims.get("aud")
        token_auds = set(aud if isinstance(aud, list) else [aud] if aud is not None else [])
        if self.audiences:
            if any(is_dynamic(a) for a in self.audiences):
                out.append(f"audience is resolved at run time ({', '.join(self.audiences)})")
            elif not token_auds & set(self.audiences):
                out.append(f"aud {sorted(map(str, token_auds))} is not among {', '.join(self.audiences)}")
        issuers = self.accepted_issuers
        if issuers:
            if any(is_dynamic(i) for i in issuers):
                out.append(f"issuer is resolved at run time ({', '.join(issuers)})")
            elif claims.get("iss") not in issuers:
                out.append(f"iss {claims.get('iss')!r} is not among {', '.join(issuers)}")
        if self.client_application_ids:
            client = claims.get("azp", claims.get("appid"))
            if any(is_dynamic(c) for c in self.client_application_ids):
                out.append(f"client application is resolved at run time ({', '.join(self.client_application_ids)})")
            elif client not in self.client_application_ids:
                out.append(f"client application {client!r} (azp/appid) is not among "
                           f"{', '.join(self.client_application_ids)}")
        if self.require_expiration_time and "exp" not in claims:
            out.append("exp is missing and require-expiration-time is true")
        out += [p for c in self.required_claims if (p := c.problem_with(claims))]
        return out

    def describe(self) -> str:
        """A few lines for a report: what the element accepts."""
        def show(values: tuple[str, ...]) -> str:
            return ", ".join(values) if values else "(not checked)"

        lines = [f"{self.element} in {self.where}: token from {self.token_source}; "
                 f"on failure {self.failed_status} {self.failed_message or '(APIM default message)'}",
                 f"  audiences: {show(self.audiences)}",
                 f"  issuers:   {show(self.accepted_issuers) if self.accepted_issuers else '(not checked)'}"
                 + (f" via {', '.join(self.openid_config_urls)}" if self.openid_config_urls else "")]
        if self.element == "validate-azure-ad-token":
            lines.append(f"  tenant: {self.tenant_id}; client applications: {show(self.client_application_ids)}")
        for c in self.required_claims:
            sep = f", separator {c.separator!r}" if c.separator else ""
            lines.append(f"  requires {c.name}: {c.match} of {', '.join(c.values)}{sep}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------------------------
def _walk(el: ET.Element, path: tuple[str, ...]) -> Iterator[tuple[ET.Element, tuple[str, ...]]]:
    for child in el:
        if child.tag in ELEMENTS:
            yield child, path
        else:
            yield from _walk(child, (*path, str(child.tag)))


def _texts(el: ET.Element, container: str, item: str) -> tuple[str, ...]:
    box = el.find(container)
    if box is None:
        return ()
    return tuple((x.text or "").strip() for x in box.findall(item) if (x.text or "").strip())


def _bool(el: ET.Element, name: str, default: bool, where: str) -> bool:
    raw = el.get(name)
    if raw is None or is_dynamic(raw):
        return default
    if raw.strip().lower() not in ("true", "false"):
        raise UsageError(f"{where}: {name}={raw!r} is not true or false — fix the policy document")
    return raw.strip().lower() == "true"


def _token_source(el: ET.Element, element: PolicyElement) -> str:
    if el.get("header-name"):
        return f"header {el.get('header-name')}"
    if el.get("query-parameter-name"):
        return f"query {el.get('query-parameter-name')}"
    if el.get("token-value"):
        return f"expression {el.get('token-value')}"
    return "header Authorization" if element == "validate-azure-ad-token" else "(none given: APIM rejects the policy)"


def _claims(el: ET.Element, where: str) -> tuple[RequiredClaim, ...]:
    box = el.find("required-claims")
    if box is None:
        return ()
    out = []
    for c in box.findall("claim"):
        name = c.get("name")
        if not name:
            raise UsageError(f"{where}: a <claim> in <required-claims> has no name attribute — fix the policy")
        match = (c.get("match") or "all").strip().lower()
        if match not in ("all", "any"):
            raise UsageError(f"{where}: claim {name!r} has match={match!r} — APIM knows 'all' and 'any'")
        values = tuple((v.text or "").strip() for v in c.findall("value"))
        out.append(RequiredClaim(name, values, match, c.get("separator") or None))
    return tuple(out)


def _policy(el: ET.Element, path: tuple[str, ...]) -> JwtPolicy:
    element: PolicyElement = "validate-jwt" if el.tag == "validate-jwt" else "validate-azure-ad-token"
    where = "/".join(path) or "(top level)"
    label = f"{element} in {where}"
    if element == "validate-azure-ad-token" and not el.get("tenant-id"):
        raise UsageError(f"{label}: tenant-id is missing (APIM requires it) — fix the policy document")
    return JwtPolicy(
        element=element,
        where=where,
        token_source=_token_source(el, element),
        audiences=_texts(el, "audiences", "audience"),
        issuers=_texts(el, "issuers", "issuer"),
        required_claims=_claims(el, label),
        openid_config_urls=tuple(u for x in el.findall("openid-config") if (u := (x.get("url") or "").strip())),
        tenant_id=el.get("tenant-id"),
        client_application_ids=_texts(el, "client-application-ids", "application-id"),
        backend_application_ids=_texts(el, "backend-application-ids", "application-id"),
        require_scheme=el.get("require-scheme"),
        require_expiration_time=_bool(el, "require-expiration-time", True, label),
        require_signed_tokens=_bool(el, "require-signed-tokens", True, label),
        clock_skew=el.get("clock-skew"),
        failed_status=(el.get("failed-validation-httpcode") or "401").strip(),
        failed_message=el.get("failed-validation-error-message"),
    )


def validate_jwt_policy_summary(policy_xml: str) -> tuple[JwtPolicy, ...]:
    """Every ``validate-jwt`` / ``validate-azure-ad-token`` element of an APIM policy document, in document order.

    Raises :class:`~harness.errors.UsageError` for a document that is not well-formed XML (with the hint to fetch
    the escaped ``format=xml`` form) or an element APIM itself would refuse (no tenant-id, a nameless claim).
    """
    if not isinstance(policy_xml, str) or not policy_xml.strip():
        raise UsageError("validate_jwt_policy_summary: the policy document is empty — pass the policy XML text")
    try:
        root = ET.fromstring(policy_xml)  # noqa: S314 - a policy document from our own APIM (expat: no entity bombs)
    except ET.ParseError as exc:
        raise UsageError(f"the policy document is not well-formed XML ({exc}) — fetch it with format=xml (policy "
                         "expressions escaped), not rawxml") from None
    if root.tag in ELEMENTS:
        return (_policy(root, ()),)
    start: tuple[str, ...] = () if root.tag == "policies" else (str(root.tag),)
    return tuple(_policy(el, path) for el, path in _walk(root, start))
