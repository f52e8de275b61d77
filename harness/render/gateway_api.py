"""The chain's Ingresses as Gateway API resources, and what a migration keeps, changes and loses (issue 20).

    translation = translate(topology, certs)                          # resources written from the Ingresses
    translation = translate(topology, certs, resources=documents)     # YOUR resources (or ingress2gateway's)
    translation.documents    # the Gateway API resources assessed
    translation.ledger       # one Property per security property of the Ingresses: kept / changed / lost

The Ingresses are read as the controller reads them (:func:`harness.render.nginx_ingress.plan_servers`: the same
annotation parsing, defaults and Secret checks the nginx rendering uses). Without ``resources`` they are written in the
Gateway API v1.5 standard channel (``gateway.networking.k8s.io/v1``; field names from ``apis/v1/gateway_types.go`` and
``apis/v1/backendtlspolicy_types.go`` at v1.5.1):

- each host: an ``HTTPS`` listener on 443 with the host's TLS Secret (``tls.mode: Terminate``);
- ``auth-tls-secret`` + ``auth-tls-verify-client``: ``spec.tls.frontend.default.validation`` with the CA in a ConfigMap
  (key ``ca.crt``, the Core support level) and ``mode`` ``AllowValidOnly`` (``on``) or ``AllowInsecureFallback``
  (``optional``); Gateway API validates per port, not per host (GEP-91), so the first checking host's setting;
- the client certificate the ingress presents to the pod (``proxy-ssl-secret``'s ``tls.crt``/``tls.key``):
  ``spec.tls.backend.clientCertificateRef`` (what ingress2gateway drops with a warning);
- ``proxy-ssl-*`` with a CA: a ``BackendTLSPolicy`` on the Service (``validation.caCertificateRefs``, ``hostname`` =
  ``proxy-ssl-name``, else the Service's cluster name);
- each Ingress path: an ``HTTPRoute`` rule to its Service.

Either way the ledger comes from ONE assessment (:func:`assess`) of the Ingresses against the Gateway API resources:
per host, the HTTPS listener that serves it, the client-certificate validation of its port (``spec.tls.frontend``, the
experimental per-listener ``frontendValidation`` of v1.1–v1.3, or Envoy Gateway's ``ClientTrafficPolicy``), the CA it
trusts, the BackendTLSPolicy of each backend Service and the Gateway's backend client certificate. It is the
resources' own account from the APIs' documented fields, not a run (the run: ``mtls-harness run --ingress
gateway-api``, and ``migrate --catalogue``; docs/gateway-api.md).

For Application Gateway for Containers (``implementation="agc"``) the checks are its own policies in
``alb.networking.azure.io/v1`` (:data:`ALB`): a FrontendTLSPolicy naming the CA Secret, one BackendTLSPolicy per
Service with ``sni``, ``verify`` and the client certificate; :class:`Resources` reads them into the same shapes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from harness.errors import UsageError
from harness.model.topology import Topology
from harness.pki.certset import CertSet
from harness.pki.x509 import write_atomic
from harness.render.nginx_ingress import MALFORMED_CA_PEM, AuthTLS, ServerPlan, plan_servers

__all__ = [
    "ALB",
    "IMPLEMENTATIONS",
    "Property",
    "Resources",
    "Translation",
    "assess",
    "ca_pem",
    "ca_problem",
    "host_matches",
    "listener_ca_problem",
    "parse_ingress_kind",
    "policy_ca_problem",
    "policy_for",
    "translate",
    "validation_of",
]

GATEWAY_API: Final = "gateway.networking.k8s.io/v1"
#: the implementations resources are written for, by ``--to gateway-api:<name>``: the GatewayClass they use
#: (Envoy Gateway's quick start names its GatewayClass ``eg``: gateway.envoyproxy.io docs, "Quickstart")
#: (Application Gateway for Containers: ``azure-alb-external``, Microsoft Learn "Frontend MTLS with Application Gateway
#: for Containers - Gateway API")
IMPLEMENTATIONS: Final = {"envoy-gateway": "eg", "agc": "azure-alb-external"}
#: Application Gateway for Containers' own policies (``alb.networking.azure.io/v1``): FrontendTLSPolicy
#: ``spec.targetRef`` (a Gateway, ``sectionNames``) and ``spec.default.verify.caCertificateRef`` (a Secret with
#: ``ca.crt``); BackendTLSPolicy ``spec.targetRef`` (a Service) and ``spec.default`` ``sni``, ``ports``,
#: ``clientCertificateRef``, ``verify.caCertificateRef``, ``verify.subjectAltName`` — field names from Microsoft Learn,
#: "Frontend MTLS with Application Gateway for Containers - Gateway API" and "Backend MTLS with Application Gateway
#: for Containers - Gateway API"
ALB: Final = "alb.networking.azure.io/v1"
_AGC_DOCS: Final = ("Microsoft Learn: Application Gateway for Containers, how-to-frontend-mtls-gateway-api and "
                    "how-to-backend-mtls-gateway-api (FrontendTLSPolicy, BackendTLSPolicy in "
                    "alb.networking.azure.io/v1)")
Verdict = Literal["kept", "changed", "lost"]

_SPEC = "Gateway API v1.5.1 apis/v1/gateway_types.go"
_FRONTEND = f"{_SPEC} 728-817 (FrontendTLSValidation: caCertificateRefs, mode AllowValidOnly|AllowInsecureFallback)"
_PER_PORT = f"{_SPEC} 645-668 (FrontendTLSConfig: default and perPort, no per-host setting); GEP-91"
_CONFORMANCE = ("Gateway API conformance GatewayFrontendClientCertificateValidation (a cert of another CA must fail "
                "the TLS handshake; any HTTP answer fails the test)")
_FALLBACK = "conformance GatewayFrontendClientCertificateValidationInsecureFallback"
_INVALID_CA = ("Gateway API conformance GatewayFrontendInvalidDefaultClientCertificateValidation (an invalid "
               "caCertificateRef: ResolvedRefs False, InvalidCACertificateRef; the HTTPS request must fail); "
               "envoyproxy/gateway d32f282942 internal/gatewayapi/listener.go 327-330 (such a listener is left out of "
               "the data plane)")
_POLICY = ("Gateway API v1.5.1 apis/v1/backendtlspolicy_types.go 58-250 (BackendTLSPolicy: targetRefs, "
           "validation.caCertificateRefs or wellKnownCACertificates, hostname)")
#: Envoy Gateway's ClientTrafficPolicy modes as the Gateway API modes they behave as (envoyproxy/gateway
#: api/v1alpha1/tls_types.go 190-275 and internal/gatewayapi/helpers.go 605-622, 672-681 at d32f282942: AllowValidOnly
#: is RequireAndVerify, AllowInsecureFallback is Request); VerifyIfGiven and RequireAny have no Gateway API twin
_EG_MODES: Final = {"RequireAndVerify": "AllowValidOnly", "Request": "AllowInsecureFallback"}
_CLIENT_CERT = (f"{_SPEC} 526-553 (GatewayBackendTLS.clientCertificateRef); conformance "
                "GatewayBackendClientCertificateFeature")


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


# ------------------------------------------------------------------------------------------------------------------
# the Ingress side
# ------------------------------------------------------------------------------------------------------------------
def _secret_name(ref: str) -> str:
    return ref.rpartition("/")[2]


def _ca_certs(pem: bytes) -> list[x509.Certificate]:
    """Only the certificates with ``CA:TRUE``: the file ingress-nginx writes for a proxy-ssl Secret holds the client
    certificate and its KEY too, none of which may leave."""
    found = []
    for cert in x509.load_pem_x509_certificates(pem):
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if is_ca:
            found.append(cert)
    return found


def _ca_pem_only(pem: bytes) -> bytes:
    """Only the CA certificates of a PEM bundle (nginx's proxy-ssl file also holds the client key and leaf)."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in _ca_certs(pem))


def _fingerprints(certs: Iterable[x509.Certificate]) -> frozenset[bytes]:
    return frozenset(c.fingerprint(hashes.SHA256()) for c in certs)


def _client_auth(server: ServerPlan) -> tuple[str, AuthTLS | None]:
    auth = server.auth
    if auth is None or auth.ca_file is None:
        return "off", None
    return auth.verify_client, auth


# ------------------------------------------------------------------------------------------------------------------
# writing the resources
# ------------------------------------------------------------------------------------------------------------------
def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/managed-by": "mtls-harness"}}


def _ca_configmap(ref: str, path: Path, namespace: str, out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A ConfigMap holding the CA certificates of Secret ``ref`` under ``ca.crt`` (the Core support level of
    caCertificateRefs), and the reference to it."""
    name = f"{_secret_name(ref)}-ca"
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in _ca_certs(path.read_bytes()))
    out.setdefault(name, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, namespace),
                          "data": {"ca.crt": pem}})
    return {"group": "", "kind": "ConfigMap", "name": name}


def _secret_ref(ref: str, namespace: str) -> dict[str, Any]:
    ns, _, name = ref.rpartition("/")
    return {"group": "", "kind": "Secret", "name": name, "namespace": ns or namespace}


def _fail_closed_ref(topology: Topology, server: ServerPlan, namespace: str,
                     configmaps: dict[str, dict[str, Any]], *, secret: bool = False) -> dict[str, Any] | None:
    """The CA reference of a host ingress-nginx fails closed for its ``auth-tls-secret`` (``return 403``: the Secret
    is missing, its ``ca.crt`` is malformed, or it is in another namespace), written as the Secret is — so the Gateway
    fails the listener closed too (:func:`ca_problem`): a ConfigMap copy that does not exist, one whose ``ca.crt`` is
    the same malformed text, one in the Secret's namespace with no ReferenceGrant. ``secret``: the Secret itself (what
    Application Gateway for Containers' FrontendTLSPolicy names). None when the host does not fail closed."""
    if not server.auth_error:
        return None
    value = next((i.annotation("auth-tls-secret") for i in topology.ingress.ingresses
                  if i.host == server.host and i.annotation("auth-tls-secret")), None)
    if not value:
        return None
    ns, _, name = value.rpartition("/")
    ns = ns or namespace
    if secret:
        return {"group": "", "kind": "Secret", "name": name, "namespace": ns}
    ref: dict[str, Any] = {"group": "", "kind": "ConfigMap", "name": f"{name}-ca"}
    if ns != namespace:
        return {**ref, "namespace": ns}
    held = next((s for s in topology.ingress.secrets if s.name == name and s.namespace == ns), None)
    if held is not None and held.malformed_ca:
        configmaps.setdefault(ref["name"], {"apiVersion": "v1", "kind": "ConfigMap",
                                            "metadata": _meta(ref["name"], namespace),
                                            "data": {"ca.crt": MALFORMED_CA_PEM.decode()}})
    return ref


def _agc_policies(topology: Topology, name: str, namespace: str, listeners: list[dict[str, Any]],
                  servers: list[ServerPlan]) -> list[dict[str, Any]]:
    """Application Gateway for Containers' FrontendTLSPolicy (the first checking host's CA Secret, for every listener:
    per port, as Gateway API's) and one alb BackendTLSPolicy per HTTPS backend Service with a proxy-ssl CA. AGC has no
    fallback mode: ``optional`` is written as a required check (the ledger says it is stricter)."""
    out: list[dict[str, Any]] = []
    checking = [s for s in servers if _client_auth(s)[0] != "off"]
    if checking:
        auth = _client_auth(checking[0])[1]
        assert auth is not None
        out.append({"apiVersion": ALB, "kind": "FrontendTLSPolicy", "metadata": _meta(f"{name}-mtls", namespace),
                    "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name,
                                           "namespace": namespace,
                                           "sectionNames": [str(ls["name"]) for ls in listeners]},
                             "default": {"verify": {"caCertificateRef": _secret_ref(auth.secret, namespace)}}}})
    else:
        broken = next(filter(None, (_fail_closed_ref(topology, s, namespace, {}, secret=True) for s in servers)),
                      None)
        if broken is not None:
            out.append({"apiVersion": ALB, "kind": "FrontendTLSPolicy", "metadata": _meta(f"{name}-mtls", namespace),
                        "spec": {"targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": name,
                                               "namespace": namespace,
                                               "sectionNames": [str(ls["name"]) for ls in listeners]},
                                 "default": {"verify": {"caCertificateRef": broken}}}})
    done: set[str] = set()
    for server in servers:
        for loc in server.locations:
            p = loc.proxy_ssl
            if loc.default_backend or loc.service in done or loc.backend_protocol != "HTTPS" or p is None \
                    or p.ca_file is None:
                continue
            done.add(loc.service)
            host = p.name or f"{loc.service}.{loc.namespace}.svc.cluster.local"
            default: dict[str, Any] = {"sni": host, "ports": [{"port": loc.service_port}],
                                       "verify": {"caCertificateRef": _secret_ref(p.secret, namespace),
                                                  "subjectAltName": host}}
            if p.pem_file is not None:
                default["clientCertificateRef"] = _secret_ref(p.secret, namespace)
            out.append({"apiVersion": ALB, "kind": "BackendTLSPolicy", "metadata": _meta(f"{loc.service}-tls",
                                                                                          namespace),
                        "spec": {"targetRef": {"group": "", "kind": "Service", "name": loc.service,
                                               "namespace": loc.namespace}, "default": default}})
    return out


def _write_resources(topology: Topology, servers: list[ServerPlan], implementation: str) -> list[dict[str, Any]]:
    ingresses = topology.ingress.ingresses
    namespace = ingresses[0].namespace
    name = f"{ingresses[0].name}-gateway"
    configmaps: dict[str, dict[str, Any]] = {}
    policies: dict[str, dict[str, Any]] = {}
    routes: list[dict[str, Any]] = []
    listeners: list[dict[str, Any]] = []
    client_cert: str | None = None
    tls_secret = {i.host: i.tls_secret for i in reversed(ingresses) if i.tls_secret}
    for n, server in enumerate(servers, 1):
        listener = f"https-{n}"
        listeners.append({"name": listener, "protocol": "HTTPS", "port": 443, "hostname": server.host,
                          "tls": {"mode": "Terminate",
                                  "certificateRefs": [{"kind": "Secret", "name": tls_secret.get(server.host, "")}]},
                          "allowedRoutes": {"namespaces": {"from": "Same"}}})
        rules = []
        for loc in server.locations:
            if loc.default_backend:
                continue
            rules.append({"matches": [{"path": {"type": "Exact" if loc.exact else "PathPrefix",
                                                "value": loc.path.rstrip("/") or "/"}}],
                          "backendRefs": [{"name": loc.service, "port": loc.service_port}]})
            p = loc.proxy_ssl
            if p is not None and p.pem_file is not None and client_cert is None:
                client_cert = _secret_name(p.secret)
            if loc.backend_protocol == "HTTPS" and p is not None and p.ca_file is not None \
                    and loc.service not in policies:
                ref = _ca_configmap(p.secret, p.ca_file, namespace, configmaps)
                policies[loc.service] = {
                    "apiVersion": GATEWAY_API, "kind": "BackendTLSPolicy",
                    "metadata": _meta(f"{loc.service}-tls", namespace),
                    "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": loc.service}],
                             "validation": {"caCertificateRefs": [ref],
                                            "hostname": p.name or f"{loc.service}.{loc.namespace}.svc.cluster.local"}}}
        if rules:
            routes.append({"apiVersion": GATEWAY_API, "kind": "HTTPRoute", "metadata": _meta(f"{name}-{n}", namespace),
                           "spec": {"parentRefs": [{"name": name, "sectionName": listener}],
                                    "hostnames": [server.host], "rules": rules}})
    spec: dict[str, Any] = {"gatewayClassName": IMPLEMENTATIONS[implementation], "listeners": listeners}
    if implementation == "agc":  # its own policies carry the client and backend checks
        gateway = {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": _meta(name, namespace), "spec": spec}
        return [gateway, *routes, *_agc_policies(topology, name, namespace, listeners, servers)]
    tls: dict[str, Any] = {}
    checking = [s for s in servers if _client_auth(s)[0] != "off"]
    if checking:  # validation is per port: the first checking host's CA and mode (the ledger says what that costs)
        mode, auth = _client_auth(checking[0])
        assert auth is not None
        assert auth.ca_file is not None
        ref = _ca_configmap(auth.secret, auth.ca_file, namespace, configmaps)
        tls["frontend"] = {"default": {"validation": {
            "caCertificateRefs": [ref], "mode": "AllowValidOnly" if mode == "on" else "AllowInsecureFallback"}}}
    else:  # a host ingress-nginx fails closed: its CA reference as the Secret is, so the listener fails closed too
        broken = next(filter(None, (_fail_closed_ref(topology, s, namespace, configmaps) for s in servers)), None)
        if broken is not None:
            tls["frontend"] = {"default": {"validation": {"caCertificateRefs": [broken], "mode": "AllowValidOnly"}}}
    if client_cert is not None:
        tls["backend"] = {"clientCertificateRef": {"kind": "Secret", "name": client_cert}}
    if tls:
        spec["tls"] = tls
    gateway = {"apiVersion": GATEWAY_API, "kind": "Gateway", "metadata": _meta(name, namespace), "spec": spec}
    return [*configmaps.values(), gateway, *routes, *policies.values()]


# ------------------------------------------------------------------------------------------------------------------
# reading resources: what serves a host, and how
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Resources:
    gateways: list[dict[str, Any]] = field(default_factory=list)
    routes: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    configmaps: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_traffic: list[dict[str, Any]] = field(default_factory=list)
    #: Application Gateway for Containers' FrontendTLSPolicies
    frontend_policies: list[dict[str, Any]] = field(default_factory=list)
    reference_grants: list[dict[str, Any]] = field(default_factory=list)
    #: the CA certificates (PEM) of Secrets the resources name by reference (``caCertificateRef`` of kind Secret):
    #: Secrets are never among the resources, the caller knows them (the chain's cert set)
    secret_cas: Mapping[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, documents: Iterable[Mapping[str, Any]], secret_cas: Mapping[str, bytes] | None = None) -> Resources:
        out = cls(secret_cas=dict(secret_cas or {}))
        for doc in documents:
            group = str(doc.get("apiVersion", "")).partition("/")[0]
            kind = doc.get("kind")
            if group == "gateway.networking.k8s.io" and kind == "Gateway":
                out.gateways.append(dict(doc))
            elif group == "gateway.networking.k8s.io" and kind == "HTTPRoute":
                out.routes.append(dict(doc))
            elif group == "gateway.networking.k8s.io" and kind == "BackendTLSPolicy":
                out.policies.append(dict(doc))
            elif group == "gateway.networking.k8s.io" and kind == "ReferenceGrant":
                out.reference_grants.append(dict(doc))
            elif kind == "ConfigMap":
                out.configmaps[str((doc.get("metadata") or {}).get("name", ""))] = dict(doc)
            elif group == "gateway.envoyproxy.io" and kind == "ClientTrafficPolicy":
                out.client_traffic.append(dict(doc))
            elif group == "alb.networking.azure.io" and kind == "FrontendTLSPolicy":
                out.frontend_policies.append(dict(doc))
            elif group == "alb.networking.azure.io" and kind == "BackendTLSPolicy":
                out.policies.append(_alb_backend_policy(doc))
        return out


def _alb_backend_policy(doc: Mapping[str, Any]) -> dict[str, Any]:
    """An alb BackendTLSPolicy in the standard policy's shape (``targetRefs``, ``validation.caCertificateRefs`` and
    ``hostname`` — its ``subjectAltName``, else its ``sni``), with its own ``sni`` and ``clientCertificateRef`` kept
    beside (AGC presents the client certificate per backend, not per Gateway)."""
    spec = doc.get("spec") or {}
    default = spec.get("default") or {}
    verify = default.get("verify") or {}
    ca = verify.get("caCertificateRef")
    return {"apiVersion": doc.get("apiVersion"), "kind": "BackendTLSPolicy", "metadata": doc.get("metadata") or {},
            "spec": {"targetRefs": [spec.get("targetRef") or {}],
                     "validation": {"caCertificateRefs": [ca] if ca else [],
                                    "hostname": verify.get("subjectAltName") or default.get("sni") or ""}},
            "sni": default.get("sni"), "clientCertificateRef": default.get("clientCertificateRef")}


def host_matches(pattern: str | None, host: str) -> bool:
    """Whether a Gateway API hostname (exact, ``*.`` wildcard, or none: every host) covers ``host``."""
    if not pattern:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host.count(".") >= pattern.count(".")
    return pattern == host


def _listener_for(res: Resources, host: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The Gateway and HTTPS listener serving ``host``: an exact hostname first, then a wildcard or none."""
    candidates = [(gw, ls) for gw in res.gateways for ls in (gw.get("spec") or {}).get("listeners") or []
                  if ls.get("protocol") == "HTTPS" and host_matches(ls.get("hostname"), host)]
    candidates.sort(key=lambda pair: 0 if pair[1].get("hostname") == host else 1)
    return candidates[0] if candidates else None


def validation_of(res: Resources, gateway: dict[str, Any], listener: dict[str, Any]) -> tuple[str, list[Any], str]:
    """(mode, caCertificateRefs, where) of the client-certificate check on ``listener``'s port: the Gateway's
    ``spec.tls.frontend`` (perPort, else default), the experimental listener ``tls.frontendValidation`` (v1.1–v1.3),
    Envoy Gateway's ClientTrafficPolicy on the Gateway; mode "none" when nothing asks for a certificate."""
    frontend = ((gateway.get("spec") or {}).get("tls") or {}).get("frontend") or {}
    port = listener.get("port")
    chosen = next(((pp.get("tls") or {}).get("validation") for pp in frontend.get("perPort") or []
                   if pp.get("port") == port), None) or (frontend.get("default") or {}).get("validation")
    if chosen:
        return str(chosen.get("mode") or "AllowValidOnly"), list(chosen.get("caCertificateRefs") or []), \
            f"spec.tls.frontend ({'perPort ' + str(port) if frontend.get('perPort') else 'default'})"
    legacy = (listener.get("tls") or {}).get("frontendValidation")
    if legacy:
        return "AllowValidOnly", list(legacy.get("caCertificateRefs") or []), "listener tls.frontendValidation"
    name = (gateway.get("metadata") or {}).get("name")
    for ctp in res.client_traffic:
        refs = (ctp.get("spec") or {}).get("targetRefs") or [(ctp.get("spec") or {}).get("targetRef") or {}]
        if any(r.get("kind") == "Gateway" and r.get("name") == name for r in refs):
            cv = ((ctp.get("spec") or {}).get("tls") or {}).get("clientValidation")
            if cv:
                # Envoy Gateway's modes (RequireAndVerify by default; the deprecated `optional: true` is Request)
                mode = str(cv.get("mode") or ("Request" if cv.get("optional") else "RequireAndVerify"))
                return (_EG_MODES.get(mode, mode), list(cv.get("caCertificateRefs") or []),
                        f"ClientTrafficPolicy tls.clientValidation mode {mode}")
    for ftp in res.frontend_policies:  # Application Gateway for Containers: a required check, no fallback mode
        ref = (ftp.get("spec") or {}).get("targetRef") or {}
        sections = ref.get("sectionNames") or []
        verify = (((ftp.get("spec") or {}).get("default") or {}).get("verify") or {}).get("caCertificateRef")
        if ref.get("kind") == "Gateway" and ref.get("name") == name and verify \
                and (not sections or listener.get("name") in sections):
            return "AllowValidOnly", [verify], "FrontendTLSPolicy (alb.networking.azure.io/v1) default.verify"
    return "none", [], "no client-certificate validation"


def _ca_of(res: Resources, refs: list[Any]) -> frozenset[bytes] | None:
    """The fingerprints of the CA certificates the refs name, when every ref is a ConfigMap among the resources."""
    found: list[x509.Certificate] = []
    for ref in refs:
        pem = ca_pem(res, ref)
        if pem is None:
            return None
        try:
            found += x509.load_pem_x509_certificates(pem)
        except ValueError:
            return None  # no valid CA: ca_problem says so
    return _fingerprints(found)


def ca_pem(res: Resources, ref: Mapping[str, Any]) -> bytes | None:
    """The ``ca.crt`` a caCertificateRef names: a ConfigMap among the resources, or a Secret the caller knows
    (:attr:`Resources.secret_cas`); None when neither holds it."""
    name = str(ref.get("name", ""))
    if ref.get("kind", "ConfigMap") == "Secret":
        return res.secret_cas.get(name)
    cm = res.configmaps.get(name) if ref.get("kind", "ConfigMap") == "ConfigMap" else None
    text = (cm.get("data") or {}).get("ca.crt") if cm is not None else None
    return str(text).encode() if text else None


def _granted(res: Resources, ref: Mapping[str, Any], namespace: str, from_kind: str) -> bool:
    """Whether a ReferenceGrant in ``ref``'s namespace lets a ``from_kind`` of ``namespace`` name it."""
    kind = str(ref.get("kind", "ConfigMap"))
    for grant in res.reference_grants:
        spec = grant.get("spec") or {}
        if (grant.get("metadata") or {}).get("namespace", "default") != ref.get("namespace"):
            continue
        if any(f.get("kind") == from_kind and f.get("namespace") == namespace for f in spec.get("from") or []) and \
                any(t.get("kind") == kind and t.get("name") in (None, ref.get("name")) for t in spec.get("to") or []):
            return True
    return False


def ca_problem(res: Resources, refs: list[Any], namespace: str, from_kind: str = "Gateway") -> str | None:
    """Why ``refs`` (caCertificateRefs of a ``from_kind`` in ``namespace``) give no valid CA — the listener condition
    reason Gateway API sets, then what is wrong — or None when they do. Such a listener fails closed: it is not
    programmed (gateway-api conformance GatewayFrontendInvalidDefaultClientCertificateValidation; Envoy Gateway
    d32f282942 internal/gatewayapi/listener.go 327-330 and validate.go 750-775)."""
    if not refs:
        return "InvalidCACertificateRef: no caCertificateRefs"
    for ref in refs:
        kind, name = str(ref.get("kind", "ConfigMap")), str(ref.get("name", ""))
        if kind not in ("ConfigMap", "Secret"):
            return f"InvalidCACertificateKind: {kind} {name!r} (ConfigMap or Secret)"
        if ref.get("namespace") not in (None, namespace) and not _granted(res, ref, namespace, from_kind):
            return (f"RefNotPermitted: {kind} {ref.get('namespace')}/{name} is in another namespace and no "
                    f"ReferenceGrant lets a {from_kind} of {namespace} name it")
        pem = ca_pem(res, ref)
        if pem is None:
            return f"InvalidCACertificateRef: {kind} {name!r} not found, or it holds no ca.crt"
        try:
            found = x509.load_pem_x509_certificates(pem)
        except ValueError:
            found = []
        if not found:
            return f"NoValidCACertificate: the ca.crt of {kind} {name!r} holds no valid certificate"
    return None


def listener_ca_problem(res: Resources, gateway: Mapping[str, Any], listener: Mapping[str, Any]) -> str | None:
    """:func:`ca_problem` of the client-certificate check on ``listener``'s port (None: no check, or a valid one)."""
    mode, refs, where = validation_of(res, dict(gateway), dict(listener))
    if mode == "none":
        return None
    namespace = str((gateway.get("metadata") or {}).get("namespace") or "default")
    return ca_problem(res, refs, namespace, "FrontendTLSPolicy" if where.startswith("FrontendTLSPolicy") else "Gateway")


def policy_ca_problem(res: Resources, policy: Mapping[str, Any]) -> str | None:
    """:func:`ca_problem` of a BackendTLSPolicy's CA references (None: valid, or the well-known CAs). Envoy Gateway
    then marks the route's backend invalid (``internal/gatewayapi/backendtlspolicy.go`` 319-360, ``route.go``
    2897-2912) and answers 500 for it (``route.go`` 380-397); conformance BackendTLSPolicyInvalidCACertificateRef asks
    for a 5xx."""
    validation = (policy.get("spec") or {}).get("validation") or {}
    if validation.get("wellKnownCACertificates"):
        return None
    namespace = str((policy.get("metadata") or {}).get("namespace") or "default")
    return ca_problem(res, list(validation.get("caCertificateRefs") or []), namespace, "BackendTLSPolicy")


def policy_for(res: Resources, service: str) -> dict[str, Any] | None:
    """The BackendTLSPolicy (standard, or an alb one in its shape) that targets Service ``service``."""
    for policy in res.policies:
        for ref in (policy.get("spec") or {}).get("targetRefs") or []:
            if ref.get("kind") == "Service" and ref.get("name") == service:
                return policy
    return None


# ------------------------------------------------------------------------------------------------------------------
# the assessment
# ------------------------------------------------------------------------------------------------------------------
def _client_check(server: ServerPlan, res: Resources, gateway: dict[str, Any], listener: dict[str, Any],
                  ledger: list[Property]) -> None:
    host = server.host
    mode, auth = _client_auth(server)
    gw_mode, refs, where = validation_of(res, gateway, listener)
    problem = listener_ca_problem(res, gateway, listener)
    if server.auth_error:  # ingress-nginx fails the host closed: so must the Gateway's listener
        said = f"the host fails closed: return 403 ({server.auth_error})"
        if problem is not None:
            ledger.append(Property(
                "a host with an unusable CA Secret fails closed", host, said,
                f"{where}: the listener is not programmed ({problem.partition(':')[0]}), so no connection is "
                "accepted", "changed", f"{_INVALID_CA}: a 403 page became a refused connection"))
        else:
            ledger.append(Property("a host with an unusable CA Secret fails closed", host, said, f"{where}: {gw_mode}",
                                   "lost", f"{_INVALID_CA}: the Gateway's CA reference resolves or there is none, "
                                   "so the host is served"))
        return
    said = f"auth-tls-verify-client: {mode}" + (f", auth-tls-secret {auth.secret}" if auth else "")
    seen = f"{where}: {gw_mode}"
    source = f"{_FRONTEND}; {_PER_PORT}"
    verdict: Verdict
    if mode == "on":
        verdict = "changed" if gw_mode == "AllowValidOnly" else "lost"
        refuser = _AGC_DOCS if where.startswith("FrontendTLSPolicy") else _CONFORMANCE
        why = (f"{refuser}: a missing or untrusted client cert is refused in the TLS handshake (an alert), no "
               "longer with ingress-nginx's HTTP 400 page") if verdict == "changed" else source
        ledger.append(Property("client certificate required", host, said, seen, verdict, why))
    elif mode == "optional":
        verdict = "changed" if gw_mode in ("AllowInsecureFallback", "AllowValidOnly", "VerifyIfGiven") else "lost"
        why = (f"{_FALLBACK}: both let a request without a valid cert through; the pod no longer learns the verify "
               "result" if gw_mode == "AllowInsecureFallback" else
               f"{source}: stricter — a request without a valid cert is now refused" if verdict == "changed"
               else f"{source}: nothing asks for a certificate")
        ledger.append(Property("client certificate required", host, said, seen, verdict, why))
    elif mode == "optional_no_ca":
        ledger.append(Property("client certificate required", host, said, seen, "lost",
                               f"{_FRONTEND}: no mode asks for a certificate without checking it"))
    else:
        ledger.append(Property("client certificate required", host, said, seen,
                               "kept" if gw_mode == "none" else "changed",
                               source if gw_mode == "none" else f"{source}: stricter"))
    if auth is None:
        return
    if problem is not None:  # e.g. the Secret as it is now, where ingress-nginx keeps its last good version
        ledger.append(Property("the client CAs trusted", host, f"{auth.secret}: the CA ingress-nginx holds",
                               f"the listener is not programmed ({problem})", "changed",
                               f"{_INVALID_CA}: the host is refused altogether"))
    ingress_cas = _fingerprints(_ca_certs(auth.ca_file.read_bytes())) if auth.ca_file else frozenset()
    gateway_cas = _ca_of(res, refs)
    if gw_mode != "none" and gateway_cas is not None and gateway_cas != ingress_cas:
        ledger.append(Property("the client CAs trusted", host, f"{auth.secret}: {len(ingress_cas)} CA(s)",
                               f"{len(gateway_cas)} CA(s), {len(gateway_cas - ingress_cas)} of them not trusted "
                               "before", "lost" if gateway_cas - ingress_cas else "changed", _FRONTEND))
    ledger.append(Property(
        "client certificate chain depth", host, f"auth-tls-verify-depth: {auth.verify_depth}",
        "no depth field (the implementation's own limit)", "lost",
        f"{_SPEC} 728-817 (FrontendTLSValidation has no depth); ingress-nginx annotations docs (auth-tls-verify-depth, "
        "default 1)"))
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
                               f"auth-tls-error-page: {auth.error_page}", "none: the refusal is a TLS alert", "lost",
                               _CONFORMANCE))
    if auth.crl_file is not None:
        ledger.append(Property("revoked client certificates refused (CRL)", host, f"{auth.secret} has ca.crl",
                               "no CRL in the standard API", "lost", f"{_SPEC} 728-817 (no CRL or OCSP field)"))


def _pod_hop(server: ServerPlan, res: Resources, gateway: dict[str, Any], ledger: list[Property]) -> None:
    host = server.host
    done: set[str] = set()
    presents: str | None = None
    for loc in server.locations:
        if loc.default_backend or loc.service in done:
            continue
        done.add(loc.service)
        p = loc.proxy_ssl
        if p is not None and p.pem_file is not None:
            presents = p.secret
        policy = policy_for(res, loc.service)
        validation = ((policy or {}).get("spec") or {}).get("validation") or {}
        if loc.backend_protocol != "HTTPS":
            ledger.append(Property("the hop to the pod is TLS", host, f"backend-protocol: {loc.backend_protocol}",
                                   "a BackendTLSPolicy" if policy else "plain HTTP to the Service",
                                   "changed" if policy else "kept", _POLICY))
            continue
        if policy is None:
            ledger.append(Property("the hop to the pod is TLS", host, f"backend-protocol: HTTPS to {loc.service}",
                                   f"no BackendTLSPolicy on Service {loc.service}: plain HTTP", "lost",
                                   f"{_POLICY}: without a policy the backend connection is not TLS"))
            continue
        hostname = str(validation.get("hostname", ""))
        refs = ", ".join(str(r.get("name")) for r in validation.get("caCertificateRefs") or [])
        checked = (f"BackendTLSPolicy {(policy.get('metadata') or {}).get('name')}: hostname {hostname}, "
                   + ("well-known CAs" if validation.get("wellKnownCACertificates") else f"caCertificateRefs {refs}"))
        if p is None or p.ca_file is None or p.verify != "on":
            ledger.append(Property("the pod's certificate is verified", host,
                                   f"proxy-ssl-verify: {p.verify if p else 'off'}", checked, "changed",
                                   f"{_POLICY}: stricter — the pod's cert is now checked"))
            continue
        said = f"proxy-ssl-verify: on, proxy-ssl-secret {p.secret}" + (f", proxy-ssl-name {p.name}" if p.name else "")
        problem = policy_ca_problem(res, policy)
        if problem is not None:  # the route's backend is invalid: the implementation answers 5xx itself
            ledger.append(Property("the pod's certificate is verified", host, said,
                                   f"{checked}: not accepted ({problem}), the route answers 500", "changed",
                                   "conformance BackendTLSPolicyInvalidCACertificateRef (a 5xx); envoyproxy/gateway "
                                   "d32f282942 internal/gatewayapi/route.go 380-397: the pod is no longer reached"))
            continue
        trusted = _ca_of(res, list(validation.get("caCertificateRefs") or []))
        before = _fingerprints(_ca_certs(p.ca_file.read_bytes()))
        if validation.get("wellKnownCACertificates") or (trusted is not None and trusted - before):
            verdict: Verdict = "lost"
            why = f"{_POLICY}: it trusts CAs the ingress did not (a pod cert from any of them is accepted)"
        elif p.name and hostname and hostname != p.name:
            verdict, why = "changed", f"{_POLICY}: the pod's cert is checked against {hostname}, not {p.name}"
        else:
            verdict, why = "kept", _POLICY
        ledger.append(Property("the pod's certificate is verified", host, said, checked, verdict, why))
    if presents is not None:
        ref = (((gateway.get("spec") or {}).get("tls") or {}).get("backend") or {}).get("clientCertificateRef")
        per_backend = next((pol["clientCertificateRef"] for pol in res.policies if pol.get("clientCertificateRef")),
                           None)
        ledger.append(Property(
            "the ingress presents a client certificate to the pod", host, f"proxy-ssl-secret {presents} (tls.crt, "
            "tls.key)", f"spec.tls.backend.clientCertificateRef {ref.get('name')}" if ref else
            f"alb BackendTLSPolicy clientCertificateRef {per_backend.get('name')}" if per_backend else
            "no spec.tls.backend.clientCertificateRef", "kept" if ref or per_backend else "lost",
            _AGC_DOCS if per_backend and not ref else _CLIENT_CERT))


def assess(topology: Topology, servers: list[ServerPlan], documents: Iterable[Mapping[str, Any]]) -> list[Property]:
    """The ledger: each security property of the Ingresses (``servers``, as the controller reads them) against the
    Gateway API ``documents``."""
    cas: dict[str, bytes] = {}
    for server in servers:  # the CA Secrets as the controller read them, for a caCertificateRef of kind Secret
        if server.auth is not None and server.auth.ca_file is not None:
            cas[_secret_name(server.auth.secret)] = server.auth.ca_file.read_bytes()
        for loc in server.locations:
            if loc.proxy_ssl is not None and loc.proxy_ssl.ca_file is not None:
                cas[_secret_name(loc.proxy_ssl.secret)] = _ca_pem_only(loc.proxy_ssl.ca_file.read_bytes())
    cas |= {s.name: MALFORMED_CA_PEM for s in topology.ingress.secrets if s.malformed_ca}  # its ca.crt as it is
    res = Resources.of(documents, cas)
    ledger: list[Property] = []
    for server in servers:
        if server.passthrough:
            ledger.append(Property("TLS passed through to the pod", server.host, "ssl-passthrough: true",
                                   "not assessed (a TLS listener with a TLSRoute)", "lost",
                                   f"{_SPEC} (TLSModeType Passthrough)"))
            continue
        found = _listener_for(res, server.host)
        if found is None:
            ledger.append(Property("the host is served over TLS", server.host, "an Ingress with a TLS Secret",
                                   "no HTTPS listener matches the host", "lost", _SPEC))
            continue
        gateway, listener = found
        _client_check(server, res, gateway, listener, ledger)
        _pod_hop(server, res, gateway, ledger)
    ctl = topology.ingress.controller
    if "ssl-protocols" in ctl.config:
        ledger.append(Property("TLS versions the ingress accepts", "*",
                               f"ConfigMap ssl-protocols: {ctl.get('ssl-protocols')}",
                               "the implementation's own TLS settings", "lost",
                               f"{_SPEC} (ListenerTLSConfig.options is implementation-specific)"))
    return ledger


def parse_ingress_kind(value: str, option: str = "--ingress") -> str | None:
    """``ingress-nginx`` → None; ``gateway-api[:<implementation>]`` → the implementation's name; anything else a
    :class:`UsageError` naming ``option`` and the choices."""
    kind, _, impl = value.partition(":")
    if kind == "ingress-nginx" and not impl:
        return None
    if kind == "gateway-api" and (impl or "envoy-gateway") in IMPLEMENTATIONS:
        return impl or "envoy-gateway"
    raise UsageError(f"{option} {value!r}: write ingress-nginx or gateway-api[:{'|'.join(IMPLEMENTATIONS)}]")


def translate(topology: Topology, certs: CertSet, *, implementation: str = "envoy-gateway",
              resources: Iterable[Mapping[str, Any]] | None = None) -> Translation:
    """The Gateway API resources for ``topology``'s Ingresses — written, or ``resources`` as given — and the ledger of
    what they keep, change and lose (module doc). Raises :class:`UsageError` for an implementation it cannot write
    for, or an Ingress the controller refuses."""
    if resources is None and implementation not in IMPLEMENTATIONS:
        raise UsageError(f"--to gateway-api:{implementation}: not available — choose one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    hop = topology.ingress
    with tempfile.TemporaryDirectory(prefix="mtls-harness-gwapi-") as tmp:
        servers = plan_servers(hop, certs, Path(tmp), write_atomic,
                               allow_cross_namespace=hop.allow_cross_namespace_resources)
        documents = ([dict(d) for d in resources] if resources is not None
                     else _write_resources(topology, servers, implementation))
        return Translation(implementation, documents, assess(topology, servers, documents))

