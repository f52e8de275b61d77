"""The chain's Ingresses as Gateway API resources, and what that translation keeps, changes and loses (issue 20).

    translation = translate(topology, certs, implementation="envoy-gateway")
    translation.documents    # Gateway, HTTPRoutes, BackendTLSPolicies, the CA ConfigMaps they name
    translation.ledger       # one Property per security property of the Ingresses: kept / changed / lost

The Ingresses are read as the controller reads them (:func:`harness.render.nginx_ingress.plan_servers`: the same
annotation parsing, defaults and Secret checks the nginx rendering uses), then written in the Gateway API v1.5
standard channel (``gateway.networking.k8s.io/v1``; field names from ``apis/v1/gateway_types.go`` and
``apis/v1/backendtlspolicy_types.go`` at v1.5.1):

- each host: an ``HTTPS`` listener on 443 with the host's TLS Secret (``tls.mode: Terminate``);
- ``auth-tls-secret`` + ``auth-tls-verify-client``: ``spec.tls.frontend.default.validation`` with the CA in a ConfigMap
  (key ``ca.crt``, the Core support level) and ``mode`` ``AllowValidOnly`` (``on``) or ``AllowInsecureFallback``
  (``optional``);
- the client certificate the ingress presents to the pod (``proxy-ssl-secret``'s ``tls.crt``/``tls.key``):
  ``spec.tls.backend.clientCertificateRef`` (what ingress2gateway drops with a warning);
- ``proxy-ssl-*`` with a CA: a ``BackendTLSPolicy`` on the Service (``validation.caCertificateRefs``, ``hostname`` =
  ``proxy-ssl-name``, else the Service's cluster name);
- each Ingress path: an ``HTTPRoute`` rule to its Service.

The ledger is the translation's own account, from the two APIs' documented fields — not a run. A run of the catalogue on
the Gateway API chain (a Gateway API ingress rendered to real Envoy, as Envoy Gateway configures it) is what the rest of
issue 20 builds; docs/gateway-api.md says what is and is not there yet.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.errors import UsageError
from harness.model.topology import Topology
from harness.pki.certset import CertSet
from harness.render.nginx_ingress import AuthTLS, ServerPlan, plan_servers

__all__ = ["IMPLEMENTATIONS", "Property", "Translation", "translate"]

GATEWAY_API: Final = "gateway.networking.k8s.io/v1"
#: the implementations the resources are written for, by ``--to gateway-api:<name>``: the GatewayClass they use
#: (Envoy Gateway's quick start names its GatewayClass ``eg``: gateway.envoyproxy.io docs, "Quickstart")
IMPLEMENTATIONS: Final = {"envoy-gateway": "eg"}
Verdict = Literal["kept", "changed", "lost"]

_SPEC = "Gateway API v1.5.1 apis/v1/gateway_types.go"
_FRONTEND = f"{_SPEC} 728-817 (FrontendTLSValidation: caCertificateRefs, mode AllowValidOnly|AllowInsecureFallback)"
_CONFORMANCE = ("Gateway API conformance GatewayFrontendClientCertificateValidation (a cert of another CA must fail "
                "the TLS handshake; any HTTP answer fails the test)")


@dataclass(frozen=True)
class Property:
    """One security property of the Ingresses and what becomes of it: ``ingress`` is what the Ingress says (its
    annotation and value), ``gateway`` what the Gateway API resources say, ``verdict`` kept / changed / lost, ``source``
    where both sides are documented."""

    name: str
    host: str
    ingress: str
    gateway: str
    verdict: Verdict
    source: str

    def as_dict(self) -> dict[str, str]:
        return {"property": self.name, "host": self.host, "ingress": self.ingress, "gateway": self.gateway,
                "verdict": self.verdict, "source": self.source}


@dataclass
class Translation:
    implementation: str
    documents: list[dict[str, Any]] = field(default_factory=list)
    ledger: list[Property] = field(default_factory=list)

    @property
    def lost(self) -> list[Property]:
        return [p for p in self.ledger if p.verdict == "lost"]


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "mtls-harness"}}


def _secret_name(ref: str) -> tuple[str, str]:
    namespace, _, name = ref.rpartition("/")
    return namespace, name


def _ca_pem(path: Path) -> str:
    """The CA certificates of a file the controller wrote for a Secret — only certificates with ``CA:TRUE``: the
    proxy-ssl file holds the client certificate and its KEY too (ingress-nginx writes one PEM), none of which may
    leave."""
    found = []
    for cert in x509.load_pem_x509_certificates(path.read_bytes()):
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca:
            found.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(found)


def _ca_configmap(ref: str, path: Path, namespace: str, out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ConfigMap holding the CA bundle of Secret ``ref`` under ``ca.crt`` (the Core support level of
    caCertificateRefs), and the reference to it."""
    pem = _ca_pem(path)
    _, secret = _secret_name(ref)
    name = f"{secret}-ca"
    out.setdefault(name, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace),
                          "data": {"ca.crt": pem}})
    return {"group": "", "kind": "ConfigMap", "name": name}


def _client_auth(server: ServerPlan) -> tuple[str, AuthTLS | None]:
    auth = server.auth
    if auth is None or auth.ca_file is None:
        return "off", None
    return auth.verify_client, auth


def _frontend(servers: list[ServerPlan], namespace: str, configmaps: dict[str, dict[str, Any]],
              ledger: list[Property]) -> dict[str, Any] | None:
    """``spec.tls.frontend``: Gateway API validates client certificates per PORT, not per host (GEP-91 moved it off
    the listener to close a connection-coalescing bypass), so every host on 443 gets the first checking host's CA and
    mode; a host that checked with another CA, or not at all, is a lost property."""
    checking = [s for s in servers if _client_auth(s)[0] in ("on", "optional", "optional_no_ca")]
    if not checking:
        return None
    first = checking[0]
    mode, auth = _client_auth(first)
    assert auth is not None
    assert auth.ca_file is not None
    ref = _ca_configmap(auth.secret, auth.ca_file, namespace, configmaps)
    fallback = mode != "on"
    for server in servers:
        other_mode, other = _client_auth(server)
        if server is first:
            continue
        if other is None or other.secret != auth.secret or other_mode != mode:
            ledger.append(Property(
                "client certificate checked per host", server.host,
                f"auth-tls-verify-client {other_mode}" + (f" with {other.secret}" if other else ""),
                f"the port's validation: {auth.secret}, {'AllowInsecureFallback' if fallback else 'AllowValidOnly'}",
                "lost", f"{_SPEC} 645-668 (FrontendTLSConfig: default and perPort, no per-host setting); GEP-91"))
    return {"default": {"validation": {"caCertificateRefs": [ref],
                                       "mode": "AllowInsecureFallback" if fallback else "AllowValidOnly"}}}


def _client_cert_rows(server: ServerPlan, ledger: list[Property]) -> None:
    mode, auth = _client_auth(server)
    host = server.host
    if auth is None:
        ledger.append(Property("client certificate required", host, "auth-tls-verify-client: off (no CA)",
                               "no frontend validation", "kept", _FRONTEND))
        return
    if mode == "on":
        ledger.append(Property(
            "client certificate required", host, f"auth-tls-verify-client: on, auth-tls-secret {auth.secret}",
            "frontend validation AllowValidOnly", "changed",
            f"{_FRONTEND}; {_CONFORMANCE}: a missing or untrusted client cert is refused in the TLS handshake (an "
            "alert), no longer with ingress-nginx's HTTP 400 page"))
    elif mode == "optional":
        ledger.append(Property(
            "client certificate required", host, "auth-tls-verify-client: optional", "AllowInsecureFallback",
            "changed", f"{_FRONTEND}; conformance GatewayFrontendClientCertificateValidationInsecureFallback: both "
            "let a request without a valid cert through; the pod no longer learns the verify result (no "
            "ssl-client-verify header)"))
    else:
        ledger.append(Property(
            "client certificate required", host, f"auth-tls-verify-client: {mode}",
            "AllowInsecureFallback (no mode asks for a cert without checking it)", "lost", _FRONTEND))
    if auth.verify_depth >= 0:  # always: the controller renders its default (1) when the annotation is unset
        ledger.append(Property(
            "client certificate chain depth", host, f"auth-tls-verify-depth: {auth.verify_depth}",
            "no depth field (the implementation's own limit)", "lost",
            f"{_SPEC} 728-817 (FrontendTLSValidation has no depth); ingress-nginx annotations docs "
            "(auth-tls-verify-depth, default 1)"))
    if auth.match_cn:
        ledger.append(Property("client certificate CN match", host, f"auth-tls-match-cn: {auth.match_cn}",
                               "no subject or CN match", "lost",
                               f"{_SPEC} 728-817: caCertificateRefs and mode only, no subject or CN match"))
    if auth.pass_certificate:
        ledger.append(Property("client certificate passed to the pod", host,
                               "auth-tls-pass-certificate-to-upstream: true", "not expressible", "lost",
                               "gateway-api #3402, #5083 (forwarding the client certificate upstream)"))
    if auth.error_page:
        ledger.append(Property("error page for a refused client certificate", host,
                               f"auth-tls-error-page: {auth.error_page}",
                               "none: the refusal is a TLS alert", "lost", _CONFORMANCE))
    if auth.crl_file is not None:
        ledger.append(Property("revoked client certificates refused (CRL)", host, f"{auth.secret} has ca.crl",
                               "no CRL in the standard API", "lost",
                               f"{_SPEC} 728-817 (no CRL or OCSP field)"))


def _backend(server: ServerPlan, namespace: str, configmaps: dict[str, dict[str, Any]],
             policies: dict[str, dict[str, Any]], ledger: list[Property]) -> str | None:
    """The pod hop: a BackendTLSPolicy per Service when the ingress can check the pod's cert, and the name of the
    client-certificate Secret the gateway presents (``spec.tls.backend.clientCertificateRef``)."""
    host = server.host
    client_cert: str | None = None
    for loc in server.locations:
        if loc.default_backend or loc.service in policies:
            continue
        p = loc.proxy_ssl
        https = loc.backend_protocol == "HTTPS"
        policy_src = ("Gateway API v1.5.1 apis/v1/backendtlspolicy_types.go 58-250 (BackendTLSPolicy: targetRefs, "
                      "validation.caCertificateRefs or wellKnownCACertificates, hostname)")
        if p is not None and p.pem_file is not None:
            client_cert = p.secret
        if not https:
            ledger.append(Property("the hop to the pod is TLS", host, f"backend-protocol: {loc.backend_protocol}",
                                   "plain HTTP to the Service", "kept", policy_src))
            continue
        if p is None or p.ca_file is None:
            ledger.append(Property(
                "the hop to the pod is TLS", host, "backend-protocol: HTTPS without a proxy-ssl CA",
                "no BackendTLSPolicy: the gateway speaks plain HTTP to the Service", "lost",
                f"{policy_src}: a BackendTLSPolicy always validates (caCertificateRefs or wellKnownCACertificates); "
                "without one the backend connection is not TLS"))
            continue
        ref = _ca_configmap(p.secret, p.ca_file, namespace, configmaps)
        hostname = p.name or f"{loc.service}.{loc.namespace}.svc.cluster.local"
        policies[loc.service] = {
            "apiVersion": GATEWAY_API, "kind": "BackendTLSPolicy", "metadata": _meta(f"{loc.service}-tls", namespace),
            "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": loc.service}],
                     "validation": {"caCertificateRefs": [ref], "hostname": hostname}}}
        verified = p.verify == "on"
        ledger.append(Property(
            "the pod's certificate is verified", host,
            f"proxy-ssl-verify: {p.verify}, proxy-ssl-secret {p.secret}" + (f", proxy-ssl-name {p.name}" if p.name
                                                                              else ""),
            f"BackendTLSPolicy {loc.service}-tls: caCertificateRefs {ref['name']}, hostname {hostname}",
            "kept" if verified else "changed",
            policy_src + ("" if verified else ": stricter than before — the pod's cert is now checked")))
    if client_cert is not None:
        ledger.append(Property("the ingress presents a client certificate to the pod", host,
                               f"proxy-ssl-secret {client_cert} (tls.crt, tls.key)",
                               f"spec.tls.backend.clientCertificateRef {_secret_name(client_cert)[1]}", "kept",
                               f"{_SPEC} 526-553 (GatewayBackendTLS.clientCertificateRef); conformance "
                               "GatewayBackendClientCertificateFeature"))
    return client_cert


def translate(topology: Topology, certs: CertSet, *, implementation: str = "envoy-gateway") -> Translation:
    """The Gateway API resources equivalent to ``topology``'s Ingresses and the ledger of what changes (module doc).
    Raises :class:`UsageError` for an implementation it cannot write for, or an Ingress the controller refuses."""
    if implementation not in IMPLEMENTATIONS:
        raise UsageError(f"--to gateway-api:{implementation}: not available — choose one of "
                         f"{', '.join(IMPLEMENTATIONS)} (Application Gateway for Containers' FrontendTLSPolicy and "
                         "alb BackendTLSPolicy are not written yet: docs/gateway-api.md)")
    hop = topology.ingress
    with tempfile.TemporaryDirectory(prefix="mtls-harness-gwapi-") as tmp:
        servers = plan_servers(hop, certs, Path(tmp), _write, allow_cross_namespace=hop.allow_cross_namespace_resources)
        return _translate(topology, servers, implementation)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _translate(topology: Topology, servers: list[ServerPlan], implementation: str) -> Translation:
    out = Translation(implementation)
    ingresses = topology.ingress.ingresses
    namespace = ingresses[0].namespace
    name = f"{ingresses[0].name}-gateway"
    configmaps: dict[str, dict[str, Any]] = {}
    policies: dict[str, dict[str, Any]] = {}
    routes: list[dict[str, Any]] = []
    listeners: list[dict[str, Any]] = []
    client_certs: list[str] = []
    tls_secret = {i.host: i.tls_secret for i in reversed(ingresses) if i.tls_secret}
    for n, server in enumerate(servers, 1):
        listener = f"https-{n}"
        if server.passthrough:
            out.ledger.append(Property(
                "TLS passed through to the pod", server.host, "ssl-passthrough: true",
                "not written (a TLS listener with a TLSRoute)", "lost",
                f"{_SPEC} (TLSModeType Passthrough); the harness writes HTTPS listeners only"))
        listeners.append({"name": listener, "protocol": "HTTPS", "port": 443, "hostname": server.host,
                          "tls": {"mode": "Terminate",
                                  "certificateRefs": [{"kind": "Secret", "name": tls_secret.get(server.host, "")}]},
                          "allowedRoutes": {"namespaces": {"from": "Same"}}})
        _client_cert_rows(server, out.ledger)
        cert = _backend(server, namespace, configmaps, policies, out.ledger)
        if cert is not None and cert not in client_certs:
            client_certs.append(cert)
        rules = [{"matches": [{"path": {"type": "Exact" if loc.exact else "PathPrefix",
                                        "value": loc.path.rstrip("/") or "/"}}],
                  "backendRefs": [{"name": loc.service, "port": loc.service_port}]}
                 for loc in server.locations if not loc.default_backend]
        if rules:
            routes.append({"apiVersion": GATEWAY_API, "kind": "HTTPRoute",
                           "metadata": _meta(f"{name}-{n}", namespace),
                           "spec": {"parentRefs": [{"name": name, "sectionName": listener}],
                                    "hostnames": [server.host], "rules": rules}})
    ctl = topology.ingress.controller
    if "ssl-protocols" in ctl.config:
        out.ledger.append(Property(
            "TLS versions the ingress accepts", "*", f"ConfigMap ssl-protocols: {ctl.get('ssl-protocols')}",
            "not written (the implementation's own TLS settings)", "lost",
            f"{_SPEC} (ListenerTLSConfig.options is implementation-specific)"))
    spec: dict[str, Any] = {"gatewayClassName": IMPLEMENTATIONS[implementation], "listeners": listeners}
    tls: dict[str, Any] = {}
    frontend = _frontend(servers, namespace, configmaps, out.ledger)
    if frontend is not None:
        tls["frontend"] = frontend
    if client_certs:
        tls["backend"] = {"clientCertificateRef": {"kind": "Secret", "name": _secret_name(client_certs[0])[1]}}
        for other in client_certs[1:]:
            out.ledger.append(Property(
                "the ingress presents a client certificate to the pod", "*", f"proxy-ssl-secret {other}",
                f"one clientCertificateRef per Gateway ({_secret_name(client_certs[0])[1]})", "lost",
                f"{_SPEC} 526-553"))
    if tls:
        spec["tls"] = tls
    gateway = {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": _meta(name, namespace), "spec": spec}
    out.documents = [*configmaps.values(), gateway, *routes, *policies.values()]
    return out
