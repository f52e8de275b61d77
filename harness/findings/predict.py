"""The security properties, the findings a chain's configuration has, and what a case will see because of them.

    for f in predict(topology):            # what the chain's own settings let through, and which setting does it
        print(f.id, f.hop, f.lets_through, f.setting.text)
    p = prediction_for(topology, CaseFacts(expect, identity, max_version, target))  # None: the case is unaffected

Each rule below names its public source. The rules read the model the way the renderers do (the ingress's
annotations as ingress-nginx parses them, the listeners' floors, the upstream checks) and say nothing about how a
target runs the chain: a target that behaves otherwise FAILS the case, which is the point of the prediction.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

import re2

from harness.model.topology import HopName, Ingress, TLSVersion, Topology, Upstream
from harness.probe.outcomes import Outcome, http_reject, ok, tls_alert, upstream_failure

__all__ = ["PROPERTIES", "CaseFacts", "Finding", "Prediction", "Property", "Setting", "predict", "prediction_for"]

SRC_NGINX: Final = "kubernetes/ingress-nginx controller-v1.15.1"


@dataclass(frozen=True)
class Property:
    """A security property of the chain, as the report words it."""

    id: str
    statement: str
    source: str


#: every property a finding can break (docs/findings.md lists them with their cases)
PROPERTIES: Final[tuple[Property, ...]] = (
    Property("ingress-requires-a-verified-client-cert",
             "the ingress refuses a request without a client certificate its CA issued",
             f"ingress-nginx annotations docs, auth-tls-verify-client (on, off, optional, optional_no_ca); nginx "
             f"ngx_http_ssl_module ssl_verify_client; {SRC_NGINX} authtls/main.go"),
    Property("ingress-trusts-only-its-callers-ca",
             "the ingress's client CA Secret holds only the CA of the hop that calls it",
             "issue 15 (an over-broad ca.crt is a common production mistake); ingress-nginx auth-tls-secret ca.crt"),
    Property("ingress-verify-depth-fits-the-pki",
             "the ingress accepts client chains no deeper than its caller's certificate needs",
             "ingress-nginx annotations docs, auth-tls-verify-depth (default 1); OpenSSL X509_VERIFY_PARAM_set_depth "
             "counts intermediates (docs/behaviour.md, measured)"),
    Property("every-hop-verifies-its-upstream-cert",
             "every hop refuses a next-hop server certificate it should not trust",
             "ingress-nginx proxy-ssl-verify (default off); APIM backend tls validateCertificateChain / "
             "validateCertificateName; App Gateway backend settings validateCertChainAndExpiry / validateSNI"),
    Property("no-hop-accepts-tls-below-1.2",
             "no hop accepts TLS 1.0 or 1.1",
             "RFC 8996 (TLS 1.0 and 1.1 deprecated); App Gateway SSL policy minProtocolVersion; APIM protocol "
             "settings; ingress-nginx ssl-protocols"),
    Property("a-client-cert-is-verified-behind-the-gateway",
             "a client certificate App Gateway passes through is verified by APIM",
             "App Gateway mutual authentication, Passthrough mode: the gateway asks for a client certificate and "
             "does not verify it (docs/fidelity.md); APIM validate-client-certificate"),
)
_PROPERTY: Final = {p.id: p for p in PROPERTIES}


@dataclass(frozen=True)
class Setting:
    """The configuration that causes a finding, in the products' words, and how to find it in a chain file."""

    text: str  # "nginx.ingress.kubernetes.io/auth-tls-verify-client: optional on Ingress default/echo"
    #: key path in the chain file: ("gateway", "ssl_policy", "min_protocol_version"), ("apim", "apis", 0, …)
    chain_key: tuple[str | int, ...] | None = None
    annotation: tuple[str, str] | None = None  # (Ingress ns/name, annotation key without the prefix)
    secret: str | None = None  # a Secret ns/name


@dataclass(frozen=True)
class Finding:
    """A property the chain's configuration breaks at ``hop``: what gets through, and the setting that lets it."""

    property: Property
    hop: HopName
    lets_through: str
    setting: Setting
    #: the causes for which ``hop`` no longer refuses (expectations naming one of them are affected)
    defeats: frozenset[str] = frozenset()
    #: which expectations it affects: client certs, next-hop server certs, protocol versions, or none (predicted only)
    scope: Literal["client-cert", "upstream-cert", "protocol", "none"] = "none"
    #: client-cert scope: only identities issued under these roots (None: any identity)
    roots: frozenset[str] | None = None
    #: client-cert scope: only identities with this fault (None: any)
    fault: str | None = None
    #: protocol scope: the lowest version the hop accepts
    floor: TLSVersion | None = None
    #: the rejection the hop still gives instead (auth-tls-match-cn refuses a subject it does not match)
    instead: Outcome | None = None
    #: client-cert scope: a request WITHOUT a certificate is refused ``instead`` (match-cn refuses the empty subject)
    no_cert_refused: bool = False
    #: the ingress host whose annotations cause it, when not the home host (the one APIM's backend names)
    host: str | None = None
    #: seen only when the weak path was taken first (a pooled connection another host opened): a case it affects
    #: passes when the hop still refuses, and is a FINDING when it lets the request through
    intermittent: bool = False
    #: the source of this rule, when it adds to its property's (a behaviour the property's source does not name)
    rule_source: str | None = None

    @builtins.property
    def source(self) -> str:
        """The property's source, and this rule's own when it has one (what the report and ``explain`` cite)."""
        return self.property.source + (f"; {self.rule_source}" if self.rule_source else "")

    @builtins.property  # (the field above is named property)
    def id(self) -> str:
        """Stable id, the one a chain file's ``accept:`` names: ``<property>@<hop>``, and ``:<host>`` for an ingress
        host other than the home host."""
        return f"{self.property.id}@{self.hop}" + (f":{self.host}" if self.host else "")


@dataclass(frozen=True)
class CaseFacts:
    """What a case expects and sends, as far as a finding can change it."""

    expect: Outcome
    identity: str | None  # the leaf presented ("<leaf>~<fault>"), None for no client certificate
    max_version: str | None = None  # the highest TLS version the probe offers (None: the default)
    target: str | None = None  # the hop the probe connects to ("gateway" for a request through the chain)


@dataclass(frozen=True)
class Prediction:
    """What a case sees on a chain with ``finding``: ``through`` (the weakness observed: a FINDING) or ``refused``
    (the hop still refuses, for another reason: the case passes). Without a finding, a behaviour ``rule`` of the
    chain's configuration changes what the case sees (``refused``), and no weakness is involved."""

    finding: Finding | None
    through: Outcome | None
    refused: Outcome | None = None
    #: a finding observed as the expected refusal being GONE, whatever follows (a TLS floor: the hop no longer
    #: answers protocol_version; what the handshake then does depends on the cipher lists, docs/findings.md)
    gone: Outcome | None = None
    #: the behaviour rule (with its source) when no finding is involved
    rule: str | None = None


_CLIENT_CERT_CAUSES: Final = frozenset({"unknown-issuer", "self-signed", "self-signed-in-chain", "expired",
                                        "not-yet-valid", "wrong-eku", "revoked", "too-deep", "not-trusted"})
_SERVER_CERT_CAUSES: Final = frozenset({"unknown-issuer", "self-signed", "self-signed-in-chain", "expired",
                                        "not-yet-valid", "wrong-eku", "name-mismatch"})
#: the verify errors nginx forgives under ``ssl_verify_client optional_no_ca`` (ngx_ssl_verify_error_optional in
#: nginx src/event/ngx_event_openssl.h: self-signed leaf or chain, issuer not found, leaf signature unverifiable);
#: an expired, not-yet-valid, wrong-EKU or revoked certificate is still refused with 400 (measured here: the
#: partner-mtls example, docs/findings.md). ``too-deep`` is in: OpenSSL reports the missing issuer first.
_NO_CA_FORGIVES: Final = frozenset({"unknown-issuer", "self-signed", "self-signed-in-chain", "too-deep"})
_VERSIONS: Final[tuple[TLSVersion, ...]] = ("1.0", "1.1", "1.2", "1.3")
_MATCH_CN_REFUSAL: Final = http_reject(403, "client certificate unauthorized", hop="ingress", cause="match-cn")


# ------------------------------------------------------------------------------------------------------------------
# the rules
# ------------------------------------------------------------------------------------------------------------------
def predict(t: Topology) -> tuple[Finding, ...]:
    """Every finding of ``t``'s configuration, in hop order; the ingress's per host (each host's annotations are its
    own: the home host's findings first, without a host in their id, then each other host's)."""
    home = t.focus_on(None)
    ingress = [*_host_findings(home)]
    for host in home.ingress.hosts[1:]:
        ingress += [dataclasses.replace(f, host=host) for f in _host_findings(home.focus_on(host))]
    return (tuple(_upstreams(home)) + tuple(_floors(home)) + tuple(_gateway_passthrough(home)) +
            tuple(ingress) + tuple(_shared_upstream_pool(home)) + tuple(_ingress_floor(home)))


#: why one host's unverified upstream connection serves another host's requests
KEEPALIVE_SOURCE: Final = (
    "nginx's upstream keepalive cache is keyed by the peer's address only (ngx_http_upstream_keepalive_module; "
    "Kong/kong#4001 and api7/apisix-nginx-module#117 patch nginx for exactly this), and ingress-nginx sends every "
    "host through one upstream_balancer with keepalive (nginx.tmpl; ConfigMap upstream-keepalive-connections, "
    "default 320); measured here: tests/integration/test_hosts_run.py")


def _verifies_upstream(v: Topology) -> bool | None:
    """Whether the viewed host's ingress verifies the pod's certificate; None when it opens no TLS to the pod."""
    ing = v.ingress.primary
    if v.passthrough or (ing.annotation("backend-protocol") or "HTTP").upper() not in ("HTTPS", "GRPCS"):
        return None
    return ing.annotation("proxy-ssl-verify") == "on"


def _shared_upstream_pool(home: Topology) -> Iterator[Finding]:
    """A host that verifies the pod's certificate, on a controller where another host reaches the same pod WITHOUT
    verifying: the connection the lax host opened stays in the keepalive pool and serves the strict host's next
    request, whose certificate check never runs (every host's backend here is the one echo pod)."""
    if int(home.ingress.controller.get("upstream-keepalive-connections") or 0) <= 0:
        return
    views = [home.focus_on(h) for h in home.ingress.hosts]
    lax = [v for v in views if _verifies_upstream(v) is False]
    if not lax:
        return
    opener = lax[0]
    ing = opener.ingress.primary
    for v in views:
        if _verifies_upstream(v) is not True:
            continue
        yield Finding(_PROPERTY["every-hop-verifies-its-upstream-cert"], "ingress",
                      f"any pod server certificate, over a keepalive connection that {opener.ingress.host} opened "
                      f"without verifying it — and the pod then sees that host's TLS session and client certificate "
                      f"(fix: proxy-ssl-verify on every host reaching the same pods, or "
                      f"upstream-keepalive-connections: 0)",
                      _annotation_setting(ing, "proxy-ssl-verify", ing.annotation("proxy-ssl-verify")),
                      _SERVER_CERT_CAUSES, "upstream-cert",
                      host=None if v.ingress.focus is None else v.ingress.host, intermittent=True,
                      rule_source=KEEPALIVE_SOURCE)


def _host_findings(t: Topology) -> Iterator[Finding]:
    """The findings of the ingress host ``t`` is focused on."""
    if t.ingress.gateway_api is not None:
        yield from _gateway_api_client_auth(t)
        yield from _ingress_trust(t)
        yield from _ingress_upstream(t)
        yield from _api_upstream(t)
        return
    yield from _ingress_client_auth(t)
    yield from _ingress_trust(t)
    yield from _ingress_depth(t)
    yield from _ingress_upstream(t)
    yield from _api_upstream(t)


def _ref(ing: Ingress) -> str:
    return f"{ing.namespace}/{ing.name}"


def _annotation_setting(ing: Ingress, key: str, shown: str | None) -> Setting:
    value = f"{key}: {shown}" if shown is not None else f"{key} not set"
    return Setting(f"nginx.ingress.kubernetes.io/{value} on Ingress {_ref(ing)}", annotation=(_ref(ing), key))


def _match_cn_refuses_empty(ing: Ingress) -> bool:
    """auth-tls-match-cn renders ``if ($ssl_client_s_dn !~ pattern) return 403``: with no certificate the DN is empty,
    refused unless the pattern matches the empty string (nginx.tmpl 918; RE2 as the webhook checks it)."""
    pattern = (ing.annotation("auth-tls-match-cn") or "").removeprefix("CN=")
    try:
        return not re2.search(pattern, "")
    except re2.error:
        return True


def _ingress_client_auth(t: Topology) -> Iterator[Finding]:
    if t.passthrough:
        return  # the pod terminates TLS: the ingress decides nothing about client certificates
    prop = _PROPERTY["ingress-requires-a-verified-client-cert"]
    ing = t.ingress.auth_tls_ingress()
    secret = t.ingress.secret(ing.annotation("auth-tls-secret") or "")
    raw, mode = ing.annotation("auth-tls-verify-client"), ing.verify_client()
    match_cn = bool(ing.annotation("auth-tls-match-cn"))
    if secret is None or not secret.ca:
        if ing.annotation("auth-tls-secret"):
            return  # a named Secret that is missing or holds no CA fails closed (403): the catalogue checks it
        yield Finding(prop, "ingress", "a request with no client certificate, or with any certificate",
                      _annotation_setting(ing, "auth-tls-secret", None),
                      _CLIENT_CERT_CAUSES | {"no-client-cert"}, "client-cert")
        return
    if mode == "on":
        return
    if mode == "off" and match_cn:
        return  # nothing is asked, so match-cn refuses every request: a broken chain, not a weak one
    instead = _MATCH_CN_REFUSAL if match_cn else None
    no_cert_refused = match_cn and _match_cn_refuses_empty(ing)
    if mode in ("optional_no_ca", "off"):
        what = ("a client certificate its CA did not issue (self-signed, or from any unknown CA: optional_no_ca "
                "forgives a missing issuer)" if mode == "optional_no_ca" else
                "any client certificate (off: nginx does not even ask for one)")
        what += ", as long as its subject matches auth-tls-match-cn" if match_cn else ""
        what += "" if no_cert_refused else ", and a request without one"
        defeats = (_NO_CA_FORGIVES if mode == "optional_no_ca" else _CLIENT_CERT_CAUSES) | {"no-client-cert"}
    elif no_cert_refused:
        return  # optional: a bad certificate is still refused, and match-cn refuses a request without one
    else:
        what, defeats = "a request with no client certificate", frozenset({"no-client-cert"})
    yield Finding(prop, "ingress", what, _annotation_setting(ing, "auth-tls-verify-client", raw),
                  frozenset(defeats), "client-cert", instead=instead, no_cert_refused=no_cert_refused)


#: Gateway API's frontend validation (v1.5 FrontendTLSValidation) and what Envoy Gateway renders from it
GATEWAY_API_SOURCE: Final = ("Gateway API v1.5 apis/v1/gateway_types.go 728-817 (FrontendTLSValidation: "
                             "caCertificateRefs and mode only — per port, GEP-91); envoyproxy/gateway d32f282942 "
                             "internal/gatewayapi/helpers.go 605-622 (AllowInsecureFallback → Request: accepted "
                             "untrusted)")


def _checks_client_certs(v: Topology) -> bool:
    """Whether the viewed host's Ingress asks for client certificates against a CA Secret."""
    ing = v.ingress.auth_tls_ingress()
    return v.ingress.secret(ing.annotation("auth-tls-secret") or "") is not None and ing.verify_client() != "off"


def _gateway_api_client_auth(t: Topology) -> Iterator[Finding]:
    """The client-certificate check of a Gateway API ingress that the chain's Ingresses were migrated to
    (harness.render.gateway_api.translate): per PORT, so the first host that checks decides for every host (GEP-91);
    ``optional`` becomes AllowInsecureFallback, which lets any certificate and none through; verify depth, a CRL and
    auth-tls-match-cn have no field, so what they refused gets through."""
    prop = _PROPERTY["ingress-requires-a-verified-client-cert"]
    checking = [v for v in (t.focus_on(h) for h in t.ingress.hosts) if _checks_client_certs(v)]
    ing = t.ingress.auth_tls_ingress()
    src = GATEWAY_API_SOURCE
    if not checking:
        yield Finding(prop, "ingress", "a request with no client certificate, or with any certificate",
                      _annotation_setting(ing, "auth-tls-secret", None),
                      _CLIENT_CERT_CAUSES | {"no-client-cert"}, "client-cert", rule_source=src)
        return
    first = checking[0].ingress.auth_tls_ingress()
    secret = checking[0].ingress.secret(first.annotation("auth-tls-secret") or "")
    # Application Gateway for Containers has no fallback mode: its FrontendTLSPolicy always verifies (Microsoft Learn,
    # how-to-frontend-mtls-gateway-api), so an optional check is migrated stricter, not weaker
    if first.verify_client() != "on" and t.ingress.gateway_api != "agc":
        yield Finding(prop, "ingress", "any client certificate, and none (AllowInsecureFallback accepts a certificate "
                      "it cannot verify)",
                      dataclasses.replace(_annotation_setting(first, "auth-tls-verify-client",
                                                              first.annotation("auth-tls-verify-client")),
                                          text=f"nginx.ingress.kubernetes.io/auth-tls-verify-client: "
                                               f"{first.annotation('auth-tls-verify-client')} on Ingress "
                                               f"{_ref(first)}, migrated to the Gateway's validation mode "
                                               "AllowInsecureFallback"),
                      _CLIENT_CERT_CAUSES | {"no-client-cert"}, "client-cert", rule_source=src)
        if first.annotation("auth-tls-match-cn"):
            yield _match_cn_lost(first, prop, src)
        return
    yield Finding(_PROPERTY["ingress-verify-depth-fits-the-pki"], "ingress",
                  "a client certificate chain of any depth under the trusted root",
                  Setting("Gateway API frontend validation has no verify depth (auth-tls-verify-depth is lost in the "
                          f"migration of Ingress {_ref(first)})", annotation=(_ref(first), "auth-tls-verify-depth")),
                  frozenset({"unknown-issuer", "too-deep"}), "client-cert", fault="too-deep", rule_source=src)
    if secret is not None and secret.crl:
        yield Finding(prop, "ingress", "a revoked client certificate",
                      Setting(f"Gateway API has no CRL field: Secret {secret.namespace}/{secret.name} ca.crl is lost "
                              "in the migration", secret=f"{secret.namespace}/{secret.name}"),
                      frozenset({"revoked"}), "client-cert", fault="revoked", rule_source=src)
    if first.annotation("auth-tls-match-cn"):
        yield _match_cn_lost(first, prop, src)


def _match_cn_lost(first: Ingress, prop: Property, src: str) -> Finding:
    return Finding(prop, "ingress", "a client certificate of any subject its CA issued",
                   Setting(f"nginx.ingress.kubernetes.io/auth-tls-match-cn on Ingress {_ref(first)} has no Gateway "
                           "API equivalent (lost in the migration)", annotation=(_ref(first), "auth-tls-match-cn")),
                   frozenset({"match-cn"}), "client-cert", rule_source=src)


def _ingress_trust(t: Topology) -> Iterator[Finding]:
    """The auth-tls CA Secret holds the roots of other trust domains of this chain (a root that issues some leaf of
    the plan, other than the root of the ingress's caller's client certificate)."""
    if t.passthrough:
        return
    ing = t.ingress.auth_tls_ingress()
    secret = t.ingress.secret(ing.annotation("auth-tls-secret") or "")
    caller = t.apim.upstream.client_cert
    if secret is None or not secret.ca or caller is None:
        return
    own = t.pki.root_of(t.pki.leaf(caller).issuer)
    issuing_roots = {t.pki.root_of(lf.issuer) for lf in t.pki.leaves}
    extra = frozenset(r for r in (_root_or_none(t, c) for c in secret.ca) if r and r != own and r in issuing_roots)
    if not extra:
        return
    yield Finding(_PROPERTY["ingress-trusts-only-its-callers-ca"], "ingress",
                  f"a valid client certificate of another trust domain of this chain ({', '.join(sorted(extra))})",
                  Setting(f"Secret {secret.namespace}/{secret.name} ca.crt holds {', '.join(secret.ca)} "
                          f"(the caller's client certificate needs only {own})", secret=f"{secret.namespace}/"
                          f"{secret.name}"),
                  frozenset({"unknown-issuer"}), "client-cert", roots=extra,
                  instead=_MATCH_CN_REFUSAL if ing.annotation("auth-tls-match-cn") and t.ingress.gateway_api is None
                  else None)


def _root_or_none(t: Topology, ca: str) -> str | None:
    try:
        return t.pki.root_of(ca)
    except KeyError:
        return None


def _intermediates(t: Topology, leaf: str) -> int:
    ca, n = t.pki.ca(t.pki.leaf(leaf).issuer), 0
    while ca.parent is not None:
        n, ca = n + 1, t.pki.ca(ca.parent)
    return n




def _ingress_depth(t: Topology) -> Iterator[Finding]:
    if t.passthrough:
        return
    ing = t.ingress.auth_tls_ingress()
    raw = ing.annotation("auth-tls-verify-depth")
    caller = t.apim.upstream.client_cert
    if raw is None or not raw.isdigit() or caller is None:
        return
    depth, needed = int(raw), max(1, _intermediates(t, caller))
    if depth <= needed:
        return
    yield Finding(_PROPERTY["ingress-verify-depth-fits-the-pki"], "ingress",
                  f"a client certificate {depth} intermediates below the trusted root (the caller's needs {needed})",
                  _annotation_setting(ing, "auth-tls-verify-depth", raw), frozenset({"unknown-issuer", "too-deep"}),
                  # depth > needed >= 1, so the ``too-deep`` fault (two intermediates, harness/pki/faults.py) gets in
                  "client-cert", fault="too-deep")


def _upstreams(t: Topology) -> Iterator[Finding]:
    prop = _PROPERTY["every-hop-verifies-its-upstream-cert"]
    checks: tuple[tuple[HopName, Upstream, tuple[str, str, str]], ...] = (
        ("gateway", t.gateway.upstream, ("backend_settings", "validate_cert_chain_and_expiry", "validate_sni")),
        ("apim", t.apim.upstream, ("backend", "validate_certificate_chain", "validate_certificate_name")))
    for hop, up, (part, chain_key, name_key) in checks:
        yield from _upstream_checks(prop, hop, up, (hop, part), chain_key=chain_key, name_key=name_key)


def _upstream_checks(prop: Property, hop: HopName, up: Upstream, at: tuple[str | int, ...], *, chain_key: str,
                     name_key: str) -> Iterator[Finding]:
    where = ".".join(str(k) if isinstance(k, str) else f"[{k}]" for k in at).replace(".[", "[")
    if not up.verify_chain:
        yield Finding(prop, hop, "any next-hop server certificate (unknown CA, expired, self-signed, wrong name)",
                      Setting(f"{where}.{chain_key}: false", chain_key=(*at, chain_key)),
                      _SERVER_CERT_CAUSES, "upstream-cert")
    elif not up.verify_name:
        yield Finding(prop, hop, f"a next-hop certificate that does not cover {up.hostname}",
                      Setting(f"{where}.{name_key}: false", chain_key=(*at, name_key)),
                      frozenset({"name-mismatch"}), "upstream-cert")


def _api_upstream(t: Topology) -> Iterator[Finding]:
    """The backend checks of the API whose backend is the viewed host (Apim.focused)."""
    names = [a.name for a in t.apim.apis]
    if t.apim.focus is None or t.apim.focus not in names:
        return
    yield from _upstream_checks(_PROPERTY["every-hop-verifies-its-upstream-cert"], "apim", t.apim.upstream,
                                ("apim", "apis", names.index(t.apim.focus)), chain_key="validate_certificate_chain",
                                name_key="validate_certificate_name")


def _ingress_upstream(t: Topology) -> Iterator[Finding]:
    prop = _PROPERTY["every-hop-verifies-its-upstream-cert"]
    if t.passthrough:
        return  # the pod's TLS goes to APIM: the ingress verifies nothing
    ing = t.ingress.primary
    verify = ing.annotation("proxy-ssl-verify")
    if verify != "on":
        yield Finding(prop, "ingress", "any pod server certificate (unknown CA, expired, self-signed, wrong name)",
                      _annotation_setting(ing, "proxy-ssl-verify", verify)
                      if verify is not None else dataclasses.replace(
                          _annotation_setting(ing, "proxy-ssl-verify", None),
                          text=f"nginx.ingress.kubernetes.io/proxy-ssl-verify not set (ingress-nginx defaults to off) "
                               f"on Ingress {_ref(ing)}"),
                      _SERVER_CERT_CAUSES, "upstream-cert")


def _floors(t: Topology) -> Iterator[Finding]:
    prop = _PROPERTY["no-hop-accepts-tls-below-1.2"]
    floors: tuple[tuple[HopName, TLSVersion, tuple[str, ...]], ...] = (
        ("gateway", t.gateway.listener.min_version, ("gateway", "ssl_policy", "min_protocol_version")),
        ("apim", t.apim.listener.min_version, ("apim", "min_protocol_version")),
        ("pod", t.pod.listener.min_version, ("pod", "min_protocol_version")))
    for hop, floor, key in floors:
        if floor in ("1.0", "1.1"):
            yield Finding(prop, hop, f"a client offering only TLS {floor}",
                          Setting(f"{'.'.join(key)}: TLSv{floor.replace('.', '_')}", chain_key=key),
                          frozenset({"protocol-version"}), "protocol", floor=floor)


def _ingress_floor(t: Topology) -> Iterator[Finding]:
    """ssl-protocols is the controller's (a ConfigMap key): one finding for every host it serves."""
    prop = _PROPERTY["no-hop-accepts-tls-below-1.2"]
    protocols = t.ingress.controller.get("ssl-protocols").split()
    low = [v for v, name in (("1.0", "TLSv1"), ("1.1", "TLSv1.1")) if name in protocols]
    if low and not t.passthrough and t.ingress.gateway_api is None:
        yield Finding(prop, "ingress", f"a client offering only TLS {low[0]}",
                      Setting(f"ingress-nginx ConfigMap ssl-protocols: {' '.join(protocols)}",
                              chain_key=("ingress", "config_map", "ssl-protocols")),
                      frozenset({"protocol-version"}), "protocol", floor=low[0])  # type: ignore[arg-type]


def _gateway_passthrough(t: Topology) -> Iterator[Finding]:
    if t.gateway.listener.client_auth == "optional" and not t.apim.validate_client_certificate:
        yield Finding(_PROPERTY["a-client-cert-is-verified-behind-the-gateway"], "gateway",
                      "any client certificate, and none: the gateway passes it on unverified and APIM checks nothing",
                      Setting("gateway.client_auth.mode: Passthrough (and no validate-client-certificate in the APIM "
                              "policy)", chain_key=("gateway", "client_auth", "mode")))


# ------------------------------------------------------------------------------------------------------------------
# what a case sees because of them
# ------------------------------------------------------------------------------------------------------------------
def _fault(identity: str | None) -> str | None:
    return identity.partition("~")[2] or None if identity else None


def prediction_for(t: Topology, facts: CaseFacts, findings: tuple[Finding, ...] | None = None) -> Prediction | None:
    """What a case with ``facts`` sees on ``t`` (the chain the case runs on, its variant applied) when a finding of
    ``t`` defeats the rejection the case expects; None when no finding does (the case's own expectation stands)."""
    expect = facts.expect
    ruled = (_match_cn_without_a_cert(t, facts) or _gateway_presents_its_own_cert(t, facts)
             or _pod_requires_a_cert(t, facts))
    if ruled is not None:
        return ruled
    if not expect.is_rejection or expect.hop is None or expect.cause is None:
        return None
    for f in predict(t) if findings is None else findings:
        if f.hop != expect.hop or expect.cause not in f.defeats or not _in_scope(t, f, facts):
            continue
        if f.host is not None and f.host != t.ingress.focus:
            continue  # another host's (its annotations, its API's backend checks)
        if f.host is None and f.hop == "ingress" and f.setting.chain_key is None and t.ingress.focus is not None:
            continue  # the home host's annotations (a ConfigMap key, chain_key, holds for every host)
        if f.host is None and f.hop == "apim" and f.scope == "upstream-cert" and t.apim.focus is not None:
            continue  # the home API's backend checks: the viewed API has its own
        if f.scope == "protocol":
            return Prediction(f, ok(200), gone=expect)
        if f.intermittent:
            return Prediction(f, ok(200), expect)  # refused as expected unless a lax host's connection is reused
        if facts.identity is None and f.no_cert_refused:
            return Prediction(f, None, f.instead)  # refused all the same, by another check
        return Prediction(f, ok(200), f.instead if facts.identity is not None else None)
    return None


def _match_cn_without_a_cert(t: Topology, facts: CaseFacts) -> Prediction | None:
    """A request to the ingress WITHOUT a client certificate where auth-tls-match-cn is set and the verify mode lets
    it past the TLS stage (optional, optional_no_ca, off): the subject DN is empty and the match-cn check answers 403
    (nginx.tmpl 918 renders ``if ($ssl_client_s_dn !~ pattern) return 403``; measured on the partner-mtls example) —
    whatever the case expected after that stage. With ``on`` nginx answers 400 first."""
    if facts.target != "ingress" or facts.identity is not None or t.passthrough or t.ingress.gateway_api is not None:
        return None
    if facts.expect.cause == "misdirected":
        return None  # nginx answers 421 when it picks the server, before any location rule (ngx_http_request.c)
    ing = t.ingress.auth_tls_ingress()
    secret = t.ingress.secret(ing.annotation("auth-tls-secret") or "")
    mode = ing.verify_client()
    if secret is None or not secret.ca or mode == "on" or not ing.annotation("auth-tls-match-cn"):
        return None
    if not _match_cn_refuses_empty(ing) or facts.expect == _MATCH_CN_REFUSAL:
        return None
    return Prediction(None, None, _MATCH_CN_REFUSAL, rule=(
        f"auth-tls-verify-client {mode} with auth-tls-match-cn on Ingress {_ref(ing)}: a request without a client "
        f"certificate has an empty subject, and match-cn refuses it with 403 ({SRC_NGINX} nginx.tmpl 918)"))


def _gateway_presents_its_own_cert(t: Topology, facts: CaseFacts) -> Prediction | None:
    """A request through the gateway to an APIM that validates client certificates: App Gateway does not forward the
    client's certificate in the TLS session to its backend; APIM sees the gateway's OWN backend client certificate
    when the backend settings name one (App Gateway backend settings, client certificate), and nothing otherwise. So
    APIM's answer is about the gateway's certificate: ok when APIM's CA issued it, 401 not-trusted when not."""
    expect = facts.expect
    own = t.gateway.upstream.client_cert
    if facts.target not in ("gateway", "apim") or not t.apim.validate_client_certificate:
        return None
    # without negotiateClientCertificate APIM never asks: context.Request.Certificate is null for every caller
    blind = not t.apim.negotiate_client_certificate
    if facts.target == "apim" and facts.identity is not None and not blind:
        return None  # a probe at APIM presenting a certificate of its own: the case's expectation is about that one
    if own is None or blind:
        if expect.kind != "ok" and expect.hop not in ("apim", "ingress", "pod"):
            return None  # the gateway decides first
        if expect.kind not in ("ok", "http_reject", "upstream_failure"):
            return None  # refused in the handshake, before APIM's policy runs
        if expect.hop == "apim" and expect.cause == "no-client-cert":
            return None  # the case's own expectation
        why = ("APIM validates a client certificate (validate-client-certificate) but negotiateClientCertificate is "
               "false on its host name: it never asks for one, the policy sees none" if blind else
               "APIM validates a client certificate (validate-client-certificate, negotiateClientCertificate) but App "
               "Gateway presents none (gateway.backend_settings.client_certificate is empty, and App Gateway does not "
               "forward the client's certificate in TLS)")
        return Prediction(None, None, http_reject(401, hop="apim", cause="no-client-cert"), rule=(
            f"{why}: APIM refuses every request with 401 (APIM docs, How to secure APIs using client certificate "
            "authentication)"))
    if not t.apim.negotiate_client_certificate:
        return None
    if facts.target != "gateway" or expect.hop != "apim" or expect.cause != "no-client-cert":
        return None
    try:
        trusted = t.apim.listener.client_ca is not None and \
            t.pki.root_of(t.pki.leaf(own).issuer) == t.pki.root_of(t.apim.listener.client_ca)
    except KeyError:
        trusted = False
    return Prediction(None, None, ok(200) if trusted else http_reject(401, hop="apim", cause="not-trusted"), rule=(
        f"App Gateway presents its own backend client certificate ({own}) to APIM, which "
        f"{'trusts' if trusted else 'does not trust'} it (gateway.backend_settings.client_certificate; App Gateway "
        "does not forward the client's certificate in TLS)"))


def _pod_requires_a_cert(t: Topology, facts: CaseFacts) -> Prediction | None:
    """A pod that REQUIRES a client certificate (pod.client_auth: required) refuses a connection without one: a
    direct probe without a cert gets its TLS 1.3 ``certificate_required`` alert, and a request through the chain whose
    ingress presents no client cert (no proxy-ssl-secret) gets the ingress's 502 (both measured: the pod's log names
    the missing cert; Python ssl CERT_REQUIRED)."""
    if t.pod.listener.client_auth != "required" or facts.expect.kind != "ok":
        return None
    why = "pod.client_auth: required"
    if facts.target == "pod" and facts.identity is None and facts.max_version in (None, "1.3"):
        return Prediction(None, None, tls_alert("certificate_required", hop="pod", cause="no-client-cert"),
                          rule=f"{why}: a connection without a client certificate is refused in the handshake")
    if facts.target not in ("gateway", "apim", "ingress") or t.passthrough:
        return None
    up = t.ingress_upstream()
    if up.client_cert is None:
        return Prediction(None, None, upstream_failure(502, hop="pod", cause="no-client-cert"), rule=(
            f"{why}, and the ingress presents no client certificate to the pod (no proxy-ssl-secret): the pod "
            "refuses the ingress's connection, which answers 502"))
    root = _root_or_none(t, t.pki.leaf(up.client_cert).issuer)
    if root is None or root == _root_or_none(t, t.pod.listener.client_ca or ""):
        return None
    # nginx loads proxy_ssl_trusted_certificate only with proxy-ssl-verify on (ngx_http_proxy_module); OpenSSL then
    # completes the client certificate from that store, root included (ssl_add_cert_chain)
    chained = up.verify_chain and up.trusted_ca is not None and _root_or_none(t, up.trusted_ca) == root
    return Prediction(None, None, upstream_failure(
        502, hop="pod", cause="self-signed-in-chain" if chained else "unknown-issuer"), rule=(
        f"{why} with pod.client_ca {t.pod.listener.client_ca}, and the ingress presents {up.client_cert} (issued "
        f"under {root}; proxy-ssl-secret): the pod refuses the ingress's connection, which answers 502"
        + ("; the pod sees the self-signed root because nginx completes its certificate from the proxy-ssl trust "
           "store (measured: the passthrough example without its controller flag)" if chained else "")))


def _in_scope(t: Topology, f: Finding, facts: CaseFacts) -> bool:
    kind = facts.expect.kind
    if f.scope == "client-cert":
        if kind not in ("http_reject", "tls_alert"):
            return False
        if facts.identity is None:
            return "no-client-cert" in f.defeats and facts.expect.cause == "no-client-cert"
        fault = _fault(facts.identity)
        if f.fault is not None and fault != f.fault:
            return False
        if f.roots is not None:
            if fault is not None:
                return False
            try:
                return t.pki.root_of(t.pki.leaf(facts.identity).issuer) in f.roots
            except KeyError:
                return False
        return True
    if f.scope == "upstream-cert":
        return kind == "upstream_failure"
    if f.scope == "protocol":
        offered = facts.max_version
        return (kind == "tls_alert" and offered in _VERSIONS and f.floor is not None
                and _VERSIONS.index(offered) >= _VERSIONS.index(f.floor))
    return False
