"""The API's APIM policy XML as the user keeps it: what the APIM stand-in enforces from it.

Read (APIM policy reference, learn.microsoft.com/azure/api-management/api-management-policies):

- ``validate-client-certificate`` — the client cert must chain to the service's CA certificates (``validate-trust``)
  and be inside its dates; the stand-in answers 401 otherwise;
- the expression form: a ``choose/when`` whose condition reads ``context.Request.Certificate`` (e.g.
  ``context.Request.Certificate == null || !context.Request.Certificate.Verify()``) — modelled as the same check;
- ``validate-jwt`` / ``validate-azure-ad-token`` — an Entra ID bearer token (tenant, audience, issuer, ``scp`` /
  ``roles``), read with :func:`harness.oauth.policy.validate_jwt_policy_summary`;
- ``authentication-certificate certificate-id=NAME`` — the client certificate APIM presents to the backend (NAME must
  equal an identity name of the chain file); ``thumbprint=HEX`` names it by its SHA-1 thumbprint (the identity whose
  certificate has it); ``body=`` (an inline PFX) is not modelled.

Every other element is returned as a warning naming it (the stand-in does not enforce it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from harness.errors import InputError, UsageError
from harness.model.topology import Apim, OAuth
from harness.oauth.policy import validate_jwt_policy_summary

__all__ = ["PolicyFacts", "policy_xml", "read_policy"]

_SECTIONS = {"policies", "inbound", "backend", "outbound", "on-error", "base"}
_READ = {"validate-client-certificate", "validate-jwt", "validate-azure-ad-token", "authentication-certificate"}
_FLOW = {"choose", "when", "otherwise", "return-response", "set-status", "forward-request"}
_CERT_EXPR = "context.Request.Certificate"
_ENTRA = "https://login.microsoftonline.com/"


@dataclass(frozen=True)
class PolicyFacts:
    validate_client_certificate: bool
    oauth: OAuth | None
    authentication_certificate: str | None
    warnings: tuple[str, ...]
    #: ``authentication-certificate thumbprint=…`` (upper-case hex, no separators), when the policy names it so
    authentication_thumbprint: str | None = None


def _tenant_from(urls: tuple[str, ...]) -> str | None:
    for url in urls:
        if url.startswith(_ENTRA):
            return url.removeprefix(_ENTRA).split("/", 1)[0]
    return None


def _oauth(xml: str, where: str, warnings: list[str]) -> OAuth | None:
    try:
        found = validate_jwt_policy_summary(xml)
    except UsageError as exc:
        raise InputError(where, str(exc).split(" — ")[0], "fix the policy XML") from None
    if not found:
        return None
    jwt = found[0]
    if len(found) > 1:
        warnings.append(f"{where}: {len(found) - 1} more token checks after the first are not modelled")
    tenant = jwt.tenant_id or _tenant_from(jwt.openid_config_urls)
    if tenant is None:
        raise InputError(where, f"{jwt.element} names no Entra ID tenant (tenant-id or an openid-config URL under "
                         f"{_ENTRA})", "give the tenant (the stand-in issues the tokens for it)")
    if not jwt.audiences:
        raise InputError(where, f"{jwt.element} lists no audience", "add <audiences><audience>api://…</audience>")
    for what, extra in (("audiences", jwt.audiences[1:]), ("issuers", jwt.issuers[1:]),
                        ("client-application-ids", jwt.client_application_ids)):
        if extra:
            warnings.append(f"{where}: {jwt.element} {what} {', '.join(extra)} not modelled (the first one is)")
    claims = {c.name: c for c in jwt.required_claims}
    for name in claims.keys() - {"scp", "roles"}:
        warnings.append(f"{where}: {jwt.element} required claim {name!r} is not modelled")
    issuer = jwt.issuers[0] if jwt.issuers else None
    if issuer == f"{_ENTRA}{tenant}/v2.0":
        issuer = None  # Entra ID's own v2.0 issuer: the model's default
    return OAuth(tenant=tenant, audience=jwt.audiences[0], issuer=issuer,
                 required_scope=claims["scp"].values[0] if "scp" in claims else None,
                 required_role=claims["roles"].values[0] if "roles" in claims else None)


def _walk(el: ET.Element, where: str, facts: dict[str, object], warnings: list[str]) -> None:
    for child in el:
        tag = str(child.tag)
        if tag == "validate-client-certificate":
            facts["vcc"] = True
            for attr in ("validate-revocation", "ignore-error"):
                if child.get(attr, "false").lower() == "true":
                    warnings.append(f"{where}: validate-client-certificate {attr}=\"true\" is not modelled")
            if child.find("identities") is not None:
                warnings.append(f"{where}: validate-client-certificate <identities> (thumbprint / subject / issuer "
                                "matching) is not modelled: any cert from the CA certificates passes")
        elif tag == "authentication-certificate":
            cert_id, thumbprint = child.get("certificate-id"), child.get("thumbprint")
            if cert_id is not None:
                facts["auth"] = cert_id
            elif thumbprint is not None:
                facts["thumbprint"] = thumbprint.replace(":", "").replace(" ", "").upper()
            else:
                raise InputError(where, "authentication-certificate has neither certificate-id nor thumbprint (an "
                                 "inline body= PFX is not modelled)", "name the chain file's identity in "
                                 "certificate-id, or give the certificate's thumbprint")
        elif tag in _READ:
            continue
        elif tag == "when" and _CERT_EXPR in (child.get("condition") or ""):
            facts["vcc"] = True
            warnings.append(f"{where}: the expression {child.get('condition')!r} is modelled as validate-client-"
                            "certificate (trust and dates): check other conditions in it yourself")
        elif tag in _SECTIONS or tag in _FLOW:
            _walk(child, where, facts, warnings)
        else:
            warnings.append(f"{where}: policy element <{tag}> is not modelled (the stand-in does not enforce it)")


def read_policy(path: Path) -> PolicyFacts:
    """What the stand-in enforces from the policy file at ``path``."""
    if not path.is_file():
        raise InputError(path, "(apim.policy) does not exist", "fix the path (relative to the chain file)")
    xml = path.read_text(encoding="utf-8")
    try:
        root = ET.fromstring(xml)  # noqa: S314 - the user's own policy file (expat: no external entities)
    except ET.ParseError as exc:
        raise InputError(path, f"is not well-formed XML ({exc})",
                         "export the policy with format=xml (expressions escaped), not rawxml") from None
    warnings: list[str] = []
    facts: dict[str, object] = {}
    _walk(_wrap(root), str(path), facts, warnings)
    return PolicyFacts(bool(facts.get("vcc")), _oauth(xml, str(path), warnings),
                       str(facts["auth"]) if "auth" in facts else None, tuple(warnings),
                       str(facts["thumbprint"]) if "thumbprint" in facts else None)


def _wrap(root: ET.Element) -> ET.Element:
    holder = ET.Element("_")
    holder.append(root)
    return holder


def policy_xml(apim: Apim, auth_certificate: str | None = None) -> str:
    """The policy document that makes APIM do what ``apim`` says (the inverse of :func:`read_policy`)."""
    inbound = ["        <base />"]
    if apim.validate_client_certificate:
        inbound.append('        <validate-client-certificate validate-revocation="false" validate-trust="true" '
                       'validate-not-before="true" validate-not-after="true" ignore-error="false" />')
    oauth = apim.oauth
    if oauth is not None and oauth.enabled:
        config = f"{_ENTRA}{oauth.tenant}/v2.0/.well-known/openid-configuration"
        lines = ['        <validate-jwt header-name="Authorization" failed-validation-httpcode="401" '
                 'require-scheme="Bearer">',
                 f"            <openid-config url={quoteattr(config)} />",
                 f"            <audiences><audience>{escape(oauth.audience)}</audience></audiences>"]
        if oauth.issuer is not None:
            lines.append(f"            <issuers><issuer>{escape(oauth.issuer)}</issuer></issuers>")
        if oauth.required_claims:
            lines.append("            <required-claims>")
            lines += [f'                <claim name="{c}" match="all"><value>{escape(v)}</value></claim>'
                      for c, v in oauth.required_claims]
            lines.append("            </required-claims>")
        lines.append("        </validate-jwt>")
        inbound += lines
    backend = ["        <base />"]
    if auth_certificate is not None:
        backend.insert(0, f"        <authentication-certificate certificate-id={quoteattr(auth_certificate)} />")
    return "\n".join(["<policies>", "    <inbound>", *inbound, "    </inbound>", "    <backend>", *backend,
                      "    </backend>", "    <outbound>", "        <base />", "    </outbound>", "    <on-error>",
                      "        <base />", "    </on-error>", "</policies>", ""])
