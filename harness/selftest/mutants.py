"""The mutant catalogue: named misconfigurations the self-test applies to its own local chain.

Two kinds, both needed:

- ``config``: the chain itself is configured insecurely — a change of the model (an annotation, an upstream check
  turned off, a TLS floor lowered). The catalogue then runs on that chain as its base, each case's own variant
  applied on top, exactly as it runs on a user's chain.
- ``render``: the chain says one thing and the running chain does another — the model is unchanged, but the file a
  renderer wrote (Envoy bootstrap, nginx.conf) or a process's command line is edited before the process starts or
  reloads (:class:`harness.targets.local.Tamper`). This is the mutation a renderer bug, or a stand-in that drifted
  from the component it stands for, would make; the test code is never touched.

A mutant runs on the reference chain with the ingress it names (``ingress``, an ``Ingress.kind``): ingress-nginx,
or a Gateway API implementation serving the same Ingresses migrated (``gateway-api:envoy-gateway`` is
``default_topology().on_gateway_api()``, its ingress hop real Envoy from :mod:`harness.render.envoy_gateway`).

A mutant is *caught* when at least one catalogue case that passes on the unmutated chain (the same ingress) fails on
the mutated one.
``pending`` says why a mutant is known to survive today (the case that would catch it is not in the catalogue yet);
see :mod:`harness.selftest.run` for how the run treats it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.model.topology import HopName, KeyType, Topology, default_topology
from harness.model.wire import header_name
from harness.render.gateway_api import IMPLEMENTATIONS

__all__ = ["MUTANTS", "Edit", "Mutant", "mutant_named"]

#: edits one rendered file or command line; returns the new command line and whether anything changed
Edit = Callable[[str, "Path | None", list[str]], tuple[list[str], bool]]


@dataclass(frozen=True)
class Mutant:
    name: str
    kind: Literal["config", "render"]
    hop: HopName
    what: str  # the misconfiguration, as a reviewer would name it
    why: str  # why it is insecure, with its public source
    topology: Callable[[Topology], Topology] | None = None  # config mutants
    edit: Edit | None = None  # render mutants
    #: why it survives the current catalogue (the missing case), or None when the catalogue must catch it
    pending: str | None = None
    #: the ingress of the chain it is applied to and judged on (``Ingress.kind``): ``ingress-nginx``, or
    #: ``gateway-api:<implementation>`` (the reference chain ``.on_gateway_api(<implementation>)``)
    ingress: str = "ingress-nginx"

    def __post_init__(self) -> None:
        if (self.kind == "config") != (self.topology is not None) or (self.kind == "render") != (self.edit is not None):
            raise ValueError(f"mutant {self.name}: a config mutant has a topology change, a render mutant an edit")
        kind, _, implementation = self.ingress.partition(":")
        if self.ingress != "ingress-nginx" and (kind != "gateway-api" or implementation not in IMPLEMENTATIONS):
            raise ValueError(f"mutant {self.name}: ingress {self.ingress!r} — write ingress-nginx or "
                             f"gateway-api:{'|'.join(IMPLEMENTATIONS)}")

    def unmutated(self, key_type: KeyType = "ecdsa") -> Topology:
        """The chain this mutant is applied to, as it is before: the reference chain with the mutant's ingress (its
        baseline runs here)."""
        base = default_topology(key_type)
        kind, _, implementation = self.ingress.partition(":")
        return base.on_gateway_api(implementation) if kind == "gateway-api" else base

    def mutated(self, key_type: KeyType = "ecdsa") -> Topology:
        """The chain's model with the mutant applied: a config mutant's change; a render mutant leaves the model as
        it is (its edit is of what the renderers write from it)."""
        base = self.unmutated(key_type)
        return self.topology(base) if self.topology is not None else base


# ------------------------------------------------------------------------------------------------------------------
# config mutants: the model, configured insecurely
# ------------------------------------------------------------------------------------------------------------------
def _annotation(**changes: str | None) -> Callable[[Topology], Topology]:
    return lambda t: t.with_ingress_annotations(**changes)


def _ingress_trusts_every_ca(t: Topology) -> Topology:
    """The auth-tls CA secret's ca.crt holds every root of the cert set, not only APIM's client CA."""
    roots = tuple(c.name for c in t.pki.cas if c.parent is None)
    ca_secret = t.ingress.primary.annotations.get("auth-tls-secret", "default/apim-client-ca").partition("/")[2]
    secrets = tuple(dataclasses.replace(s, ca=roots) if s.name == ca_secret else s for s in t.ingress.secrets)
    return t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))


# ------------------------------------------------------------------------------------------------------------------
# render mutants: edits of what the renderers wrote
# ------------------------------------------------------------------------------------------------------------------
def _envoy_edit(hop: str, change: Callable[[dict[str, Any]], bool]) -> Edit:
    """Edit ``hop``'s Envoy bootstrap (JSON, as the renderer writes it: Envoy parses a file by its name) with
    ``change`` (which says whether it changed anything)."""

    def edit(at: str, config: Path | None, argv: list[str]) -> tuple[list[str], bool]:
        if at != hop or config is None:
            return argv, False
        doc = json.loads(config.read_text(encoding="utf-8"))
        changed = change(doc)
        if changed:
            config.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
        return argv, changed

    return edit


def _nginx_edit(pattern: str, replacement: str) -> Edit:
    """Edit the ingress's nginx.conf: replace every match of ``pattern`` (multi-line regex)."""
    rx = re.compile(pattern, re.MULTILINE)

    def edit(at: str, config: Path | None, argv: list[str]) -> tuple[list[str], bool]:
        if at != "ingress" or config is None:
            return argv, False
        text = config.read_text(encoding="utf-8")
        new, count = rx.subn(replacement, text)
        if count:
            config.write_text(new, encoding="utf-8")
        return argv, bool(count)

    return edit


def _gateway_api_edit(change: Callable[[dict[str, Any]], bool]) -> Edit:
    """Edit the Gateway API ingress's Envoy bootstrap with ``change``: the JSON
    :func:`harness.render.envoy_gateway.render_envoy_gateway` writes, written back as JSON. Any other ingress file (an
    nginx.conf) is left alone."""

    def edit(at: str, config: Path | None, argv: list[str]) -> tuple[list[str], bool]:
        if at != "ingress" or config is None or config.suffix not in (".yaml", ".json"):
            return argv, False
        doc = json.loads(config.read_text(encoding="utf-8"))
        changed = change(doc)
        if changed:
            config.write_text(json.dumps(doc, separators=(",", ":")) + "\n", encoding="utf-8")
        return argv, changed

    return edit


def _walk(node: Any) -> Any:
    """Every dict inside a parsed YAML document."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _drop_session_key_limit(doc: dict[str, Any]) -> bool:
    """Upstream TLS contexts lose ``max_session_keys: 0``: Envoy's default (1) stores a session and resumes it."""
    changed = False
    for node in _walk(doc):
        if "max_session_keys" in node:
            del node["max_session_keys"]
            changed = True
    return changed


def _keep_inbound_trace_headers(doc: dict[str, Any]) -> bool:
    """The gateway's route config no longer removes client-supplied trace headers (its own is still overwritten)."""
    changed = False
    for node in _walk(doc):
        if node.get("request_headers_to_remove"):
            node["request_headers_to_remove"] = [h for h in node["request_headers_to_remove"]
                                                 if h == header_name("gateway")]
            changed = True
    return changed


def _accept_any_client_cert(doc: dict[str, Any]) -> bool:
    """The APIM stand-in's validate-client-certificate policy calls every presented certificate valid."""
    changed = False
    for node in _walk(doc):
        code = node.get("inline_string")
        if isinstance(code, str) and "ssl:peerCertificateValidated()" in code:
            node["inline_string"] = code.replace("ssl:peerCertificateValidated()", "true")
            changed = True
    return changed


def _drop_jwt_audiences(doc: dict[str, Any]) -> bool:
    """validate-jwt's provider keeps issuer and keys but no longer names the audience (jwt_authn skips the check)."""
    changed = False
    for node in _walk(doc):
        if "audiences" in node and "issuer" in node:
            del node["audiences"]
            changed = True
    return changed


def _pod_asks_no_client_cert(at: str, config: Path | None, argv: list[str]) -> tuple[list[str], bool]:
    """The pod's process runs with ``--client-auth none``: it never asks, so it takes whatever peer comes."""
    if at != "pod" or "--client-auth" not in argv:
        return argv, False
    i = argv.index("--client-auth") + 1
    if argv[i] == "none":
        return argv, False
    return [*argv[:i], "none", *argv[i + 1:]], True


def _downstream_contexts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every listener's DownstreamTlsContext (the main listener's and each lane's), not the clusters' upstream ones."""
    return [node for node in _walk(doc) if str(node.get("@type", "")).endswith(".DownstreamTlsContext")]


def _client_cert_not_required(doc: dict[str, Any]) -> bool:
    """``require_client_certificate: true`` becomes false: Envoy still asks for and verifies a certificate, but lets a
    connection without one through (the CA stays: an untrusted certificate is still refused)."""
    changed = False
    for context in _downstream_contexts(doc):
        if context.get("require_client_certificate") is True:
            context["require_client_certificate"] = False
            changed = True
    return changed


def _accept_untrusted_client_certs(doc: dict[str, Any]) -> bool:
    """A validation context that verifies the client's chain gets ``trust_chain_verification: ACCEPT_UNTRUSTED``: a
    certificate is still required, but one from any CA is let through (its failed verification only recorded)."""
    changed = False
    for context in _downstream_contexts(doc):
        validation = (context.get("common_tls_context") or {}).get("validation_context")
        if isinstance(validation, dict) and "trusted_ca" in validation \
                and validation.get("trust_chain_verification", "VERIFY_TRUST_CHAIN") == "VERIFY_TRUST_CHAIN":
            validation["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
            changed = True
    return changed


# ------------------------------------------------------------------------------------------------------------------
# the catalogue
# ------------------------------------------------------------------------------------------------------------------

MUTANTS: tuple[Mutant, ...] = (
    Mutant("ingress-proxy-ssl-verify-off", "config", "ingress",
           "ingress: proxy-ssl-verify removed (proxy_ssl_verify off towards the pod)",
           "ingress-nginx annotations docs: proxy-ssl-verify defaults to off; any pod cert is then accepted",
           topology=_annotation(proxy_ssl_verify=None)),
    Mutant("ingress-verify-client-optional", "config", "ingress",
           "ingress: auth-tls-verify-client optional (a request without a client cert reaches the pod)",
           "ingress-nginx annotations docs (auth-tls-verify-client); nginx ssl_verify_client optional",
           topology=_annotation(auth_tls_verify_client="optional")),
    Mutant("ingress-trusts-every-ca", "config", "ingress",
           "ingress: the auth-tls CA secret's ca.crt holds every root of the cert set",
           "issue 15 (an over-broad ca.crt is a common production mistake): any client of any domain gets in",
           topology=_ingress_trusts_every_ca),
    Mutant("ingress-verify-depth-raised", "config", "ingress",
           "ingress: auth-tls-verify-depth 2 (a client cert two intermediates deep is accepted)",
           "ingress-nginx annotations docs (auth-tls-verify-depth, default 1); OpenSSL X509_VERIFY_PARAM_set_depth",
           topology=_annotation(auth_tls_verify_depth="2")),
    Mutant("apim-upstream-name-unchecked", "config", "apim",
           "APIM: backend certificate name not validated (any ingress-ca cert is accepted for the ingress host)",
           "APIM backend tls validateCertificateName; Envoy checks a name only with match_typed_subject_alt_names "
           "(docs/design.md)",
           topology=lambda t: t.with_hop("apim", upstream__verify_name=False)),
    Mutant("gateway-upstream-ca-unchecked", "config", "gateway",
           "gateway: backend certificate chain not validated (App Gateway without a trusted root for APIM)",
           "App Gateway backend settings trustedRootCertificates; azure-docs #40941",
           topology=lambda t: t.with_hop("gateway", upstream__verify_chain=False)),
    Mutant("gateway-allows-tls1.0", "config", "gateway",
           "gateway: TLS 1.0 allowed on the public listener",
           "App Gateway SSL policy minProtocolVersion; RFC 8996 deprecates TLS 1.0 and 1.1",
           topology=lambda t: t.with_hop("gateway", listener__min_version="1.0")),
    Mutant("ingress-crl-dropped", "render", "ingress",
           "ingress: the CA secret has ca.crl, the rendered nginx.conf has no ssl_crl (a revoked cert is accepted)",
           "ingress-nginx: a CA secret's ca.crl renders ssl_crl (annotations docs, auth-tls-secret)",
           edit=_nginx_edit(r"^\s*ssl_crl\s[^;]*;\n", "")),
    Mutant("ingress-match-cn-ignored", "render", "ingress",
           "ingress: auth-tls-match-cn set, the rendered server block has no `if ($ssl_client_s_dn !~ …)` check",
           "ingress-nginx annotations docs (auth-tls-match-cn) and its e2e authtls.go",
           edit=_nginx_edit(r"^\s*if \( \$ssl_client_s_dn !~ [^\n]*\{\n[^}]*\}\n", "")),
    Mutant("gateway-keeps-trace-headers", "render", "gateway",
           "gateway: client-supplied hop-trace headers are not stripped",
           "REFERENCES #10 (forwarded identity headers are spoofable); docs/design.md 'TLS on every hop'",
           edit=_envoy_edit("gateway", _keep_inbound_trace_headers)),
    Mutant("apim-accepts-any-client-cert", "render", "apim",
           "APIM: validate-client-certificate treats every presented certificate as valid",
           "APIM validate-client-certificate policy docs (validate-trust, validate-revocation)",
           edit=_envoy_edit("apim", _accept_any_client_cert)),
    Mutant("pod-accepts-any-client-cert", "render", "pod",
           "pod: the process runs with --client-auth none while its chain says optional with pod-ca",
           "ingress-nginx proxy-ssl-secret (the ingress presents a client cert the pod should verify)",
           edit=_pod_asks_no_client_cert),
    Mutant("apim-jwt-audience-unchecked", "render", "apim",
           "APIM: validate-jwt without <audiences> (a token for another API is accepted)",
           "APIM validate-jwt policy docs (audiences); Envoy jwt_authn JwtProvider.audiences",
           edit=_envoy_edit("apim", _drop_jwt_audiences)),
    Mutant("upstream-tls-session-resumption", "render", "apim",
           "gateway and APIM stand-ins resume upstream TLS sessions (max_session_keys removed): after a hot reload "
           "of the next hop, a resumed session skips the verification of its new certificate",
           "issue 15 (3 of 5 random orders passed an untrusted ingress cert); Envoy UpstreamTlsContext "
           "max_session_keys (default 1)",
           edit=lambda at, config, argv: _envoy_edit(at, _drop_session_key_limit)(at, config, argv)
           if at in ("gateway", "apim") else (argv, False)),
    # the Gateway API twin (docs/gateway-api.md): the same chain with its ingress hop migrated to Envoy Gateway
    Mutant("ingress-gateway-api-client-cert-optional", "render", "ingress",
           "Gateway API ingress (Envoy Gateway): the Gateway says AllowValidOnly, its Envoy listener has "
           "require_client_certificate false (a request without a client cert reaches the pod)",
           "Gateway API FrontendTLSValidation mode AllowInsecureFallback (gateway_types.go), which Envoy Gateway "
           "renders as require_client_certificate false (internal/xds/translator/listener.go; docs/gateway-api.md); "
           "Envoy DownstreamTlsContext require_client_certificate docs",
           edit=_gateway_api_edit(_client_cert_not_required), ingress="gateway-api:envoy-gateway"),
    Mutant("ingress-gateway-api-trusts-any-client-ca", "render", "ingress",
           "Gateway API ingress (Envoy Gateway): the Gateway says AllowValidOnly with the caller's CA, its Envoy "
           "listener's validation context has trust_chain_verification ACCEPT_UNTRUSTED (a client cert from any CA "
           "reaches the pod)",
           "Envoy CertificateValidationContext trust_chain_verification docs (ACCEPT_UNTRUSTED: a failed chain "
           "verification is only recorded); Envoy Gateway sets it only for AllowInsecureFallback "
           "(internal/gatewayapi/helpers.go)",
           edit=_gateway_api_edit(_accept_untrusted_client_certs), ingress="gateway-api:envoy-gateway"),
)


def mutant_named(name: str) -> Mutant:
    for m in MUTANTS:
        if m.name == name:
            return m
    raise KeyError(name)
