"""What each case expects when the ingress hop is a Gateway API implementation (issue 20): the chain's Ingresses
migrated (:func:`harness.render.gateway_api.translate`) and served as Envoy Gateway, or Application Gateway for
Containers (its own FrontendTLSPolicy and BackendTLSPolicy), configures real Envoy
(:mod:`harness.render.envoy_gateway`).

    case = on_gateway_api(case, topology)  # the case, carrying its Envoy Gateway expectation beside ingress-nginx's
    case.expectation(topology)           # (outcome, source) for the chain's ingress kind, or a Skip reason

The same security property, the implementation's own way of saying it — each rule with its source:

- a client certificate the ingress refuses is a TLS alert, not nginx's 400 page (Gateway API v1.5 GEP-91: the
  handshake is rejected; Envoy Gateway ``AllowValidOnly`` → ``require_client_certificate``), the alert and Envoy's
  reason as measured here (BoringSSL);
- a pod certificate the ingress refuses is Envoy's 503 "upstream connect error", its reason in Envoy's log;
- the ingress's Secret that does not cover the host is served all the same (Envoy has one certificate for the filter
  chain), so APIM refuses it for its NAME, not as nginx's self-signed fake certificate;
- what Gateway API has no field for — the client certificate or its verify result passed to the pod, an error page,
  the controller's own Secret and merging rules — does not apply, and says so: a property it loses is named a GAP
  (``GAP``), an ingress-nginx behaviour with no counterpart ``NGINX_ONLY``. The losses a probe can show (verify depth,
  CRL, match-cn, optional → AllowInsecureFallback) are findings of the chain (harness.findings.predict).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from harness.cases.cross_domain import FAKE_CERT_SOURCE
from harness.cases.model import Case
from harness.model.topology import Topology
from harness.probe.outcomes import Outcome, http_reject, tls_alert, upstream_failure

__all__ = ["GAP", "NGINX_ONLY", "on_gateway_api"]

_EG: Final = "envoyproxy/gateway d32f282942"
#: Application Gateway for Containers: its docs show the missing-certificate alert; its data plane answers as Envoy
#: does ("no healthy upstream", the same docs' troubleshooting output), so the other answers are Envoy's as measured
#: here — on Envoy, not on AGC itself (there is no Azure here)
_AGC: Final = ("Microsoft Learn, Application Gateway for Containers how-to-frontend-mtls-gateway-api (no client "
               "certificate: 'tlsv13 alert certificate required'); the rest as its Envoy data plane answers, measured "
               "here on Envoy, not on AGC")
_ALERTS_SOURCE: Final = (f"Gateway API v1.5 GEP-91 (the handshake is rejected); {_EG} internal/xds/translator/"
                         "listener.go 929-1047 (AllowValidOnly → require_client_certificate); alert and reason: "
                         "BoringSSL as measured here (Envoy's connection:debug log)")
#: the alert Envoy (BoringSSL) sends for each cause nginx names, and the cause Envoy's own log gives (measured:
#: tests/integration/test_gateway_api_chain.py)
_CLIENT_ALERTS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType({
    "unknown-issuer": ("unknown_ca", "unknown-issuer"), "expired": ("certificate_expired", "expired"),
    "not-yet-valid": ("certificate_expired", "not-yet-valid"), "wrong-eku": ("unsupported_certificate", "wrong-eku"),
    "self-signed": ("unknown_ca", "unknown-issuer"), "revoked": ("certificate_revoked", "revoked"),
})
#: BoringSSL reports a self-signed pod certificate as an unknown issuer (as the Envoy stand-ins do)
_SERVER_CAUSES: Final[Mapping[str, str]] = MappingProxyType({"self-signed": "unknown-issuer"})

GAP: Final = "Gateway API gap"
NGINX_ONLY: Final = "ingress-nginx only"
_PASSES_NOTHING: Final = (f"{GAP}: Gateway API passes neither the client certificate nor its verify result to the "
                          "backend (no equivalent of auth-tls-pass-certificate-to-upstream or the ssl-client-* "
                          "headers; ingress2gateway drops them) — the migration ledger reports it lost")
_LAST_GOOD: Final = (f"{NGINX_ONLY}: the controller keeping the last good Secret (store/backend_ssl.go); a Gateway "
                     "API implementation reads the Secret as it is now, and an invalid CA reference fails the "
                     "listener (InvalidCACertificateRef)")
#: cases that cannot apply to a Gateway API ingress, and why
_NOT_APPLICABLE: Final[Mapping[str, str]] = MappingProxyType({
    "ingress-verified-identity-is-apims-client-cert": _PASSES_NOTHING,
    "ingress-optional-accepts-missing-client-cert": _PASSES_NOTHING,
    "ingress-optional-passes-verified-identity": _PASSES_NOTHING,
    "ingress-optional-no-ca-lets-unknown-ca-through-marked-failed": _PASSES_NOTHING,
    "ingress-passes-client-cert-to-upstream": _PASSES_NOTHING,
    "ingress-error-page-redirects-missing-client-cert": (
        f"{GAP}: auth-tls-error-page has no Gateway API equivalent — a refused certificate is a TLS alert, so no "
        "page can be shown"),
    "ingress-proxy-ssl-verify-off-accepts-any-pod-cert": (
        f"{GAP}: Gateway API has no TLS to a backend without verifying it — without a BackendTLSPolicy the Gateway "
        "speaks plain HTTP to the pod (the migration ledger reports the unverified hop lost)"),
    "ingress-allows-cross-namespace-ca-secret-when-enabled": (
        f"{NGINX_ONLY}: the ConfigMap key allow-cross-namespace-resources (Gateway API: ReferenceGrant)"),
    "ingress-proxy-ssl-verify-without-name-fails-on-upstream-balancer": (
        f"{NGINX_ONLY}: nginx's upstream_balancer name (#4928); a BackendTLSPolicy always names its hostname"),
    "ingress-refuses-plain-http": (
        f"{NGINX_ONLY}: nginx's 400 page for plain HTTP on its TLS port; an Envoy TLS listener closes the connection"),
    "ingress-serves-the-fake-cert-when-the-secret-does-not-cover-the-host": (
        f"{NGINX_ONLY}: the controller's fake certificate; Envoy serves the listener's certificateRefs as they are "
        "(apim-refuses-ingress-cert-wrong-san checks the name)"),
    "ingress-oldest-ingress-sets-auth-tls-for-the-host": (
        f"{NGINX_ONLY}: the controller's merging of Ingresses on one host; a Gateway listener has one validation"),
    "ingress-keeps-the-last-good-ca-and-still-refuses-no-cert": _LAST_GOOD,
    "ingress-keeps-the-last-good-ca-when-the-secret-update-is-malformed": _LAST_GOOD,
    "ingress-sends-no-server-header": f"{NGINX_ONLY}: nginx's server_tokens",
    "ingress-never-resumes-a-tls-session-to-the-pod": (
        f"{NGINX_ONLY}: nginx's proxy_ssl_session_reuse off, rendered by ingress-nginx; Envoy's upstream TLS "
        "session cache is its own"),
    "ingress-tries-a-rejected-pod-cert-three-times": (
        f"{NGINX_ONLY}: proxy-next-upstream-tries (nginx's retries); Envoy Gateway's retries are a "
        "BackendTrafficPolicy"),
    "ingress-reaches-a-tls1.3-only-pod-without-proxy-ssl-settings": (
        f"{GAP}: backend-protocol HTTPS without proxy-ssl-verify is TLS to the pod without a check; Gateway API has "
        "none — without a BackendTLSPolicy the Gateway speaks plain HTTP to the pod"),
    "apim-makes-a-full-handshake-on-every-new-connection-to-the-ingress": (
        f"{NGINX_ONLY}: reads nginx's $ssl_session_reused; Envoy Gateway turns downstream session resumption off "
        f"({_EG} internal/xds/translator/listener.go 1049-1059)"),
})


_PER_PORT_SOURCE: Final = (
    "Gateway API v1.5.1 apis/v1/gateway_types.go 645-668 (FrontendTLSConfig: client-certificate validation per port, "
    "not per host) and GEP-91 (\"Connection coalescing security issue\": why it is per port) — the open host on the "
    f"same port asks for a certificate too; {_ALERTS_SOURCE}")
#: the cases where ingress-nginx fails a host closed for its CA Secret (``return 403``); the migration references the
#: CA as the Secret is (harness.render.gateway_api._fail_closed_ref), so the Gateway's listener is invalid
_INVALID_CA_CASES: Final = frozenset({"ingress-fails-closed-without-ca-secret",
                                      "ingress-fails-closed-with-malformed-ca-secret",
                                      "ingress-refuses-cross-namespace-ca-secret"})
#: such a listener is left out of the data plane: nothing accepts the connection, the listener's state says why
_LEFT_OUT: Final = Outcome("unreachable", reason="refused", hop="ingress", cause="invalid-ca-ref")
_LEFT_OUT_SOURCE: Final = (
    "Gateway API conformance GatewayFrontendInvalidDefaultClientCertificateValidation (an invalid caCertificateRef: "
    "ResolvedRefs False with InvalidCACertificateRef, Accepted False with NoValidCACertificate, and the HTTPS "
    f"request fails); {_EG} internal/gatewayapi/listener.go 327-330 (a listener with an invalid frontend CA is left "
    "out of the data plane: the port refuses the connection) and validate.go 750-775 (the reasons); a "
    "cross-namespace reference without a ReferenceGrant is RefNotPermitted (GEP-91)")


def _passthrough_reason(case: Case, topology: Topology) -> str | None:
    """Why ``case`` does not apply: its variant of ``topology`` is about ssl-passthrough (the controller flag, or the
    annotation with or without it)."""
    try:
        v = case.variant(topology) if case.variant is not None else topology
    except KeyError:
        return None  # a reference name the chain lacks: the case skips by design anyway
    if v.ingress.controller.enable_ssl_passthrough or any(i.annotation("ssl-passthrough")
                                                          for i in v.ingress.ingresses):
        return (f"{NGINX_ONLY}: ssl-passthrough is a controller flag; its Gateway API twin (a TLS listener and a "
                "TLSRoute) is not modelled")
    return None


def _expectation(case: Case, topology: Topology) -> tuple[Outcome, str] | str | None:
    """Envoy Gateway's outcome for ``case`` and its source, a reason it does not apply, or None: the same."""
    reason = _NOT_APPLICABLE.get(case.id.partition("@")[0]) or _passthrough_reason(case, topology)
    if reason is not None:
        return reason
    if case.id.partition("@")[0] in _INVALID_CA_CASES:
        return _LEFT_OUT, _LEFT_OUT_SOURCE
    if case.id.partition("@")[0] == "ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-verified-session":
        return (http_reject(404, hop="ingress", cause="no-route"),
                f"{_EG} internal/xds/translator/listener.go 578-600 (one route configuration per HTTPS listener: a "
                "Host of another listener matches no route) — not the 421 of conformance "
                "HTTPRouteHTTPSListenerDetectMisdirectedRequests, which Envoy Gateway does not implement there (no "
                "421 in internal/xds/translator); measured here on the twin (access log flags=NR)")
    if case.id.partition("@")[0] == "ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-tls-session":
        # the open host shares the port, so its handshake already asks for a certificate: no request is sent
        return tls_alert("certificate_required", hop="ingress", cause="no-client-cert"), _PER_PORT_SOURCE
    e = case.expect
    if e.kind == "http_reject" and e.hop == "ingress" and e.status == 400 and case.via == "direct":
        if e.cause == "no-client-cert":
            alert = "handshake_failure" if case.probe.get("max_version") in ("1.0", "1.1", "1.2") else \
                "certificate_required"
            return tls_alert(alert, hop="ingress", cause="no-client-cert"), _ALERTS_SOURCE
        if e.cause is not None and e.cause in _CLIENT_ALERTS:
            alert, cause = _CLIENT_ALERTS[e.cause]
            if "too-deep" in str(case.identity):
                cause = "unknown-issuer"  # refused only where a depth is set (never, on Gateway API: a finding)
            return tls_alert(alert, hop="ingress", cause=cause), _ALERTS_SOURCE
    if e.kind == "upstream_failure" and e.hop == "ingress":
        return (upstream_failure(503, hop="ingress", cause=_SERVER_CAUSES.get(e.cause or "", e.cause)),
                f"{_EG} internal/xds/translator/translator.go 1364-1420 (BackendTLSPolicy: CA, SAN); Envoy's 503 "
                "\"upstream connect error\" and its connection:debug reason, measured here")
    if e.kind == "upstream_failure" and e.hop == "apim" and FAKE_CERT_SOURCE[2:] in case.source:
        # ingress-nginx would serve its fake certificate (self-signed); Envoy serves the Secret's certificate as it is,
        # so APIM refuses THAT certificate: for its name, or (another CA's) for its issuer
        cause = "name-mismatch" if case.id.startswith("apim-refuses-ingress-cert-wrong-san") else "unknown-issuer"
        return (upstream_failure(e.status, hop="apim", cause=cause),
                "Envoy serves a filter chain's certificate whatever the SNI (one certificate, no fake one to fall "
                "back to); APIM's check refuses it, its reason in APIM's detail header (measured here)")
    return None


def _on_agc(found: tuple[Outcome, str] | str) -> tuple[Outcome, str] | str:
    """Envoy Gateway's expectation as Application Gateway for Containers': the same outcome, its own source."""
    if isinstance(found, str):
        return found.replace("Envoy Gateway", "Application Gateway for Containers")
    return found[0], f"{_AGC}; {found[1]}"


def on_gateway_api(case: Case, topology: Topology) -> Case:
    """``case`` of ``topology``'s catalogue, carrying its expectation on each Gateway API implementation (module
    doc): Envoy Gateway, and Application Gateway for Containers."""
    found = _expectation(case, topology)
    if found is None:
        return case
    eg = found
    if case.id.partition("@")[0] == "ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-tls-session" \
            and topology.ingress.auth_tls_ingress().verify_client() in ("optional", "optional_no_ca"):
        # Envoy Gateway migrates optional to AllowInsecureFallback: the handshake does not require a certificate,
        # and the open host's listener has no route for the other host (AGC has no fallback: still the alert)
        eg = (http_reject(404, hop="ingress", cause="no-route"),
              f"{_EG} internal/gatewayapi/helpers.go 605-622 (AllowInsecureFallback: no certificate required) and "
              "internal/xds/translator/listener.go 578-600 (a Host of another listener matches no route: 404)")
    return dataclasses.replace(case, by_ingress=MappingProxyType({"gateway-api:envoy-gateway": eg,
                                                                  "gateway-api:agc": _on_agc(found)}))
