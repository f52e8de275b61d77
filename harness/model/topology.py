"""The chain as data: one model that every renderer, target and test reads.

    internet client ──TLS──▶ gateway ──TLS──▶ apim ──mTLS──▶ ingress ──TLS/mTLS──▶ pod

Each hop has a :class:`Listener` (what it serves and which client certs it asks for) and, except the pod, an
:class:`Upstream` (how it talks to the next hop). The ingress is held the way Kubernetes holds it: an
:class:`Ingress` with ingress-nginx annotations plus the :class:`K8sSecret` objects they name, so the nginx renderer,
the Kubernetes renderer and the Azure expectations all read the same annotations.

Certificates are referred to by *name*: a leaf name (``"apim-client"``) or a CA name (``"apim-client-ca"``) from
the topology's :class:`PKIPlan`. A cert set (:mod:`harness.pki.certset`) turns names into files.

Everything here is frozen; variants are made with :func:`dataclasses.replace` or the ``with_*`` helpers, so a test
can say what differs from the default chain in one line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from harness.model.controller import CONTROLLER_DEFAULTS, ControllerSettings, parse_go_bool

__all__ = [
    "ANNOTATION_PREFIX",
    "HOPS",
    "VERIFY_CLIENT_MODES",
    "Api",
    "Apim",
    "CASpec",
    "ClientAuth",
    "Gateway",
    "GatewayApiManifests",
    "HopName",
    "Ingress",
    "IngressHop",
    "K8sSecret",
    "KeyType",
    "LeafSpec",
    "Listener",
    "OAuth",
    "PKIPlan",
    "Pod",
    "TLSVersion",
    "Topology",
    "Upstream",
    "default_pki_plan",
    "default_topology",
]

TLSVersion = Literal["1.0", "1.1", "1.2", "1.3"]
#: ingress-nginx's auth-tls-verify-client values; anything else reads as "on" (authtls/main.go)
VERIFY_CLIENT_MODES: tuple[str, ...] = ("on", "off", "optional", "optional_no_ca")
ClientAuth = Literal["none", "optional", "required"]
KeyType = Literal["ecdsa", "rsa"]
HopName = Literal["gateway", "apim", "ingress", "pod"]
Usage = Literal["server", "client"]

#: the hops in request order
HOPS: tuple[HopName, ...] = ("gateway", "apim", "ingress", "pod")

#: ingress-nginx's annotation prefix (the controller's default ``--annotations-prefix``)
ANNOTATION_PREFIX = "nginx.ingress.kubernetes.io/"

# ---------------------------------------------------------------------------------------------------------------
# PKI plan: which CAs and leaves the chain needs
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CASpec:
    """A certificate authority. ``parent=None`` is a self-signed root; otherwise an intermediate under ``parent``."""

    name: str
    common_name: str
    parent: str | None = None
    # Optional profile overrides (the shadow PKI copies them from a real certificate; None = the harness default):
    subject: str | None = None  # RFC 4514 subject DN; replaces O=Contoso,CN=<common_name>
    key_type: KeyType | None = None  # else the plan's key_type
    key_size: int | None = None  # RSA modulus bits, or the EC curve size (256, 384, 521)
    not_before: dt.datetime | None = None  # validity window (UTC); else the harness's CA lifetime
    not_after: dt.datetime | None = None
    path_length: int | None = None  # basicConstraints pathLen; None = as deep as the plan needs; -1 = no limit


@dataclass(frozen=True)
class LeafSpec:
    """An end-entity certificate: ``usage`` sets the EKU (serverAuth or clientAuth)."""

    name: str
    issuer: str
    common_name: str
    usage: Usage
    # DNS names and IP addresses; "URI:<uri>" and "email:<address>" for those types; () = the common name, unless
    # ``subject`` is given (a copied profile): then () means no subjectAltName extension, as in the original
    sans: tuple[str, ...] = ()
    organization: str = "Contoso"
    # Optional profile overrides (the shadow PKI copies them from a real certificate; None = the harness default):
    subject: str | None = None  # RFC 4514 subject DN; replaces O=<organization>,CN=<common_name>
    ekus: tuple[str, ...] | None = None  # dotted EKU OIDs, replacing the one ``usage`` implies; () = no EKU extension
    key_type: KeyType | None = None  # else the plan's key_type
    key_size: int | None = None  # RSA modulus bits, or the EC curve size (256, 384, 521)
    not_before: dt.datetime | None = None  # validity window (UTC); else now - 1 h for LEAF_DAYS
    not_after: dt.datetime | None = None


@dataclass(frozen=True)
class PKIPlan:
    """Every CA and leaf a topology refers to. ``key_type`` applies to all of them (ECDSA P-256 is the fast default)."""

    cas: tuple[CASpec, ...]
    leaves: tuple[LeafSpec, ...]
    key_type: KeyType = "ecdsa"

    def ca(self, name: str) -> CASpec:
        for c in self.cas:
            if c.name == name:
                return c
        raise KeyError(f"no CA named {name!r} in the PKI plan (have: {', '.join(c.name for c in self.cas)})")

    def leaf(self, name: str) -> LeafSpec:
        """The spec of leaf ``name``; a fault variant ``"<leaf>~<fault>"`` answers with its original's spec."""
        base = name.partition("~")[0]
        for lf in self.leaves:
            if lf.name == base:
                return lf
        raise KeyError(f"no leaf named {name!r} in the PKI plan (have: {', '.join(x.name for x in self.leaves)})")

    def root_of(self, ca_name: str) -> str:
        """The self-signed root above ``ca_name`` (itself if it is a root)."""
        ca = self.ca(ca_name)
        while ca.parent is not None:
            ca = self.ca(ca.parent)
        return ca.name


# ---------------------------------------------------------------------------------------------------------------
# Hops
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Listener:
    """The TLS server side of a hop."""

    server_cert: str  # leaf name: chain + key served
    hostname: str  # the name clients connect with (SNI) and that the cert's SAN must cover
    client_auth: ClientAuth = "none"
    client_ca: str | None = None  # CA name whose root verifies client certs
    min_version: TLSVersion = "1.2"
    max_version: TLSVersion = "1.3"
    alpn: tuple[str, ...] = ("http/1.1",)


@dataclass(frozen=True)
class Upstream:
    """The TLS client side of a hop: how it reaches the next one.

    ``verify_chain`` / ``verify_name`` mirror APIM's ``tls.validateCertificateChain`` / ``validateCertificateName`` and
    App Gateway's ``validateCertChainAndExpiry`` / ``validateSNI``; turning one off is a finding, not a default.
    """

    hostname: str  # expected SAN on the next hop's server cert, sent as SNI
    trusted_ca: str | None  # CA name whose root the hop trusts for the next hop's server cert
    client_cert: str | None = None  # leaf name presented to the next hop
    verify_chain: bool = True
    verify_name: bool = True
    min_version: TLSVersion = "1.2"
    max_version: TLSVersion = "1.3"


@dataclass(frozen=True)
class Gateway:
    """The App Gateway stand-in. ``listener.client_auth == "required"`` is App Gateway's mTLS "Strict" mode."""

    listener: Listener
    upstream: Upstream
    #: request-line substrings a WAF-style rule answers 403 for (case-insensitive); proves the gateway terminates TLS
    waf_block: tuple[str, ...] = ("<script", "union select", "../../")


#: placeholder Entra ID identifiers for the local issuer (random v4 GUIDs: no real tenant or app registration)
OAUTH_TENANT = "3f6c1d2e-8a4b-4c6d-9e1f-2a3b4c5d6e7f"
OAUTH_APP_ID = "b7e4a9c2-5d1f-4e8a-9b3c-6d2e1f4a7b8c"


@dataclass(frozen=True)
class OAuth:
    """Entra ID bearer tokens checked at APIM, as a ``validate-jwt`` / ``validate-azure-ad-token`` policy does.

    A token must be signed by the tenant's key, name ``audience`` (``api://<app id>``) and ``issuer`` (the tenant's v2.0
    issuer when None), be inside its nbf/exp window, and carry every required claim value that is set: ``scp`` (a
    delegated scope) and/or ``roles`` (an app role), like ``<required-claims>`` with ``match="all"``. ``enabled=False``
    is the same as no OAuth at all (a switch that keeps the settings).
    """

    tenant: str = OAUTH_TENANT
    audience: str = f"api://{OAUTH_APP_ID}"
    issuer: str | None = None
    required_scope: str | None = "Echo.Read"
    required_role: str | None = None
    enabled: bool = True

    @property
    def expected_issuer(self) -> str:
        """``issuer``, or Entra ID's v2.0 issuer for ``tenant`` (``https://login.microsoftonline.com/<tid>/v2.0``)."""
        return self.issuer or f"https://login.microsoftonline.com/{self.tenant}/v2.0"

    @property
    def required_claims(self) -> tuple[tuple[str, str], ...]:
        """``(claim, value)`` pairs a token must carry: ``("scp", scope)``, ``("roles", role)``."""
        pairs = (("scp", self.required_scope), ("roles", self.required_role))
        return tuple((claim, value) for claim, value in pairs if value)


@dataclass(frozen=True)
class Api:
    """An API of APIM beside the one its ``upstream`` serves: requests under ``path`` (its URL suffix, e.g.
    ``/payments``) go to its backend at ``hostname``, another ingress host of the chain. The service's client
    certificate, CA certificates and protocol range are the home API's (:meth:`Apim.backend_of`); its own are the host
    name and the backend entity's two TLS checks."""

    name: str
    path: str
    hostname: str
    verify_chain: bool = True
    verify_name: bool = True


@dataclass(frozen=True)
class Apim:
    """The API Management stand-in (internal VNet mode).

    ``negotiate_client_certificate`` makes the TLS listener ask for a client cert (APIM's hostname setting);
    ``validate_client_certificate`` is the ``validate-client-certificate`` policy, answering 401 when the cert is
    missing or does not chain to ``listener.client_ca``. The policy without negotiation always answers 401.
    ``oauth`` adds the ``validate-jwt`` policy (401 for a missing or invalid bearer token); both checks hold on their
    own when both are on.
    """

    listener: Listener
    upstream: Upstream
    negotiate_client_certificate: bool = False
    validate_client_certificate: bool = False
    oauth: OAuth | None = None
    #: the other APIs, each to its own ingress host (``upstream`` is the home API's: the catch-all route)
    apis: tuple[Api, ...] = ()
    #: set on a view of one API (Topology.focus_on): its name; ``upstream`` then holds its backend and ``home`` the
    #: home API's. Renderers and targets only ever see a topology without a focus
    focus: str | None = None
    home: Upstream | None = None

    @property
    def path(self) -> str:
        """The URL suffix of the viewed API ("/" for the home API): a request through the chain is sent under it."""
        return next((a.path for a in self.apis if a.name == self.focus), "/") if self.focus else "/"

    def backend_of(self, api: Api) -> Upstream:
        """How APIM calls ``api``'s backend: the service's client certificate, CA and protocols, the API's host name
        and checks (on a view: the home API's, held in ``home``)."""
        base = self.home if self.home is not None else self.upstream
        return dataclasses.replace(base, hostname=api.hostname, verify_chain=api.verify_chain,
                                   verify_name=api.verify_name)

    def unfocused(self) -> Apim:
        """The APIM without a view: the home API's backend back in ``upstream``. A variant's change to the viewed
        backend is kept: its host and checks in the API's entry, the rest (client certificate, CA, protocols — the
        service's) in the home backend."""
        if self.focus is None or self.home is None:
            return self
        up, home = self.upstream, self.home
        apis = tuple(dataclasses.replace(a, hostname=up.hostname, verify_chain=up.verify_chain,
                                         verify_name=up.verify_name) if a.name == self.focus else a
                     for a in self.apis)
        home = dataclasses.replace(up, hostname=home.hostname, verify_chain=home.verify_chain,
                                   verify_name=home.verify_name)
        return dataclasses.replace(self, upstream=home, apis=apis, focus=None, home=None)

    def focused(self, host: str | None) -> Apim:
        """The view of the API whose backend is ``host`` (the APIM without a view when none is, or for None)."""
        base = self.unfocused()
        api = next((a for a in base.apis if a.hostname == host), None) if host else None
        if api is None:
            return base
        return dataclasses.replace(base, upstream=base.backend_of(api), focus=api.name, home=base.upstream)


@dataclass(frozen=True)
class K8sSecret:
    """A Kubernetes Secret built from the cert set: ``tls.crt``/``tls.key`` from a leaf, ``ca.crt`` from CA roots,
    ``ca.crl`` from the CRLs of CA ``crl`` and every CA above it (nginx checks the whole chain). ``malformed_ca``
    writes a ``ca.crt`` that is not a certificate (fail-closed case)."""

    name: str
    namespace: str = "default"
    tls: str | None = None
    ca: tuple[str, ...] = ()
    crl: str | None = None
    malformed_ca: bool = False
    #: the version of this Secret the controller synced before this one (an UPDATE): when this version cannot be
    #: stored, the controller keeps serving that one (store/backend_ssl.go 38-50)
    last_good: K8sSecret | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def _frozen(mapping: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


def _timestamp(value: str) -> str:
    """An RFC 3339 UTC timestamp as a sortable string (metav1.Time has second precision; "Z" and "+00:00" agree)."""
    return value.replace("+00:00", "Z").split(".")[0].rstrip("Z")


@dataclass(frozen=True)
class Ingress:
    """A networking.k8s.io/v1 Ingress as ingress-nginx reads it. Annotation keys are stored without the prefix."""

    name: str
    host: str
    tls_secret: str
    service: str
    service_port: int
    namespace: str = "default"
    path: str = "/"
    annotations: Mapping[str, str] = field(default_factory=_frozen)
    #: Prefix | Exact | ImplementationSpecific (networking.k8s.io/v1 HTTPIngressPath.pathType)
    path_type: str = "Prefix"
    #: metadata.creationTimestamp (RFC 3339, e.g. "2026-01-02T03:04:05Z"); None: created when applied, after every
    #: Ingress that has one. The controller merges the Ingresses of a host oldest first (store.go 1102-1115)
    creation_timestamp: str | None = None

    def annotation(self, key: str, default: str | None = None) -> str | None:
        return self.annotations.get(key, default)

    def verify_client(self) -> str:
        """``auth-tls-verify-client`` as the controller reads it: one of :data:`VERIFY_CLIENT_MODES`; unset or any
        other value is ``on`` (ingress-nginx authtls/main.go)."""
        raw = self.annotation("auth-tls-verify-client")
        return raw if raw in VERIFY_CLIENT_MODES else "on"

    def full_annotations(self) -> dict[str, str]:
        """The annotations as they appear in the manifest (with :data:`ANNOTATION_PREFIX`)."""
        return {ANNOTATION_PREFIX + k: v for k, v in self.annotations.items()}

    def with_annotations(self, **changes: str | None) -> Ingress:
        """A copy with annotations set (underscores in keyword names become dashes; ``None`` removes one)."""
        ann = dict(self.annotations)
        for key, value in changes.items():
            name = key.replace("_", "-")
            if value is None:
                ann.pop(name, None)
            else:
                ann[name] = value
        return dataclasses.replace(self, annotations=_frozen(ann))


@dataclass(frozen=True)
class GatewayApiManifests:
    """YOUR Gateway API resources for the ingress hop, as you apply them (a Gateway, its HTTPRoutes, policies and CA
    ConfigMaps): the chain's Gateway API ingress serves them instead of the migration of its Ingresses. They stand for
    ``ingresses``, ``secrets`` and ``pki`` (what they are expected to keep, and the certificates their CA ConfigMaps
    copy): a variant that changes any of them is served by the migration of its own Ingresses
    (:func:`harness.render.envoy_gateway.twin_of`)."""

    #: the documents, as canonical JSON (hashable, comparable)
    documents_json: str
    #: where they were read from (files), for messages
    source: str
    ingresses: tuple[Ingress, ...]
    secrets: tuple[K8sSecret, ...]
    pki: PKIPlan

    @classmethod
    def of(cls, documents: list[dict[str, Any]], source: str, topology: Topology) -> GatewayApiManifests:
        """``documents`` (read from ``source``) standing for ``topology``'s Ingresses, Secrets and cert set."""
        import json

        return cls(json.dumps(documents, sort_keys=True, separators=(",", ":")), source, topology.ingress.ingresses,
                   topology.ingress.secrets, topology.pki)

    def serves(self, topology: Topology) -> bool:
        """Whether these resources stand for ``topology``'s Ingresses, Secrets and cert set (not a variant's)."""
        hop = topology.ingress
        return hop.ingresses == self.ingresses and hop.secrets == self.secrets and topology.pki == self.pki


@dataclass(frozen=True)
class IngressHop:
    """The AKS ingress: one controller's Ingress objects and the Secrets they use.

    The Ingresses may be on several hosts; the renderers serve them all, as the controller does (one nginx server per
    host). Every view below (``primary``, ``host``, ``auth_tls_ingress``, ``passthrough``, ``tls_leaf``) is about ONE
    host — auth-tls and passthrough apply per host — the ``focus`` host, or when ``focus`` is None the home host: the
    first Ingress's, the one APIM's backend names. :meth:`Topology.focus_on` turns the views to another host.
    """

    ingresses: tuple[Ingress, ...]
    secrets: tuple[K8sSecret, ...]
    #: the ingress server cert the controller serves for the host (from the Ingress' tls secret)
    server_cert: str = "ingress-server"
    #: the controller's ConfigMap key allow-cross-namespace-resources (default false: an auth-tls-secret or
    #: proxy-ssl-secret in another namespace is refused)
    allow_cross_namespace_resources: bool = False
    #: the controller's flags and other ConfigMap keys
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    #: the host the views are about; None: the home host (the first Ingress's)
    focus: str | None = None
    #: the Gateway API implementation serving these Ingresses migrated to Gateway API resources
    #: (:func:`harness.render.gateway_api.translate`), e.g. ``"envoy-gateway"``; None: ingress-nginx serves them
    gateway_api: str | None = None
    #: with ``gateway_api``: your own Gateway API resources, served instead of the migration of the Ingresses
    gateway_api_manifests: GatewayApiManifests | None = None

    @property
    def kind(self) -> str:
        """``ingress-nginx``, or ``gateway-api:<implementation>`` (what the report and the case ids' sources say)."""
        return "ingress-nginx" if self.gateway_api is None else f"gateway-api:{self.gateway_api}"

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host of the Ingresses, the home host first (model order)."""
        return tuple(dict.fromkeys(i.host for i in self.ingresses))

    @property
    def on_host(self) -> tuple[Ingress, ...]:
        """The Ingresses of the viewed host, in model order."""
        return tuple(i for i in self.ingresses if i.host == self.host)

    @property
    def primary(self) -> Ingress:
        """The viewed host's first Ingress (model order): the one the host's variants change."""
        return self.on_host[0]

    @property
    def tls_leaf(self) -> str:
        """The leaf the viewed host serves: ``server_cert`` on the home host, else its TLS Secret's."""
        if self.focus is None:
            return self.server_cert
        found = self.secret(f"{self.primary.namespace}/{self.primary.tls_secret}")
        return found.tls if found is not None and found.tls else self.server_cert

    def serving(self, leaf: str) -> IngressHop:
        """The viewed host's TLS Secret holding ``leaf`` (a Secret shared by several hosts changes for all)."""
        tls = self.primary.tls_secret
        secrets = tuple(dataclasses.replace(s, tls=leaf) if s.name == tls else s for s in self.secrets)
        return dataclasses.replace(self, secrets=secrets,
                                   server_cert=leaf if self.focus is None else self.server_cert)

    def in_controller_order(self) -> tuple[Ingress, ...]:
        """The Ingresses as the controller lists them (store.go 1102-1115): oldest creationTimestamp first; equal
        timestamps by ``namespace/name`` DESCENDING (``in > jn``); Ingresses without a timestamp last, in model
        order (an apply creates them now)."""
        dated = sorted((i for i in self.ingresses if i.creation_timestamp), key=lambda i: f"{i.namespace}/{i.name}",
                       reverse=True)
        dated.sort(key=lambda i: _timestamp(i.creation_timestamp or ""))  # stable: ties keep the name order
        return (*dated, *(i for i in self.ingresses if not i.creation_timestamp))

    def auth_tls_ingress(self) -> Ingress:
        """The Ingress whose ``auth-tls-*`` annotations the host gets: the first, in controller order, whose auth-tls
        Secret holds a CA (controller.go 766-775), else the primary."""
        for cand in self.in_controller_order():
            if cand.host != self.host:
                continue
            found = self.secret(cand.annotation("auth-tls-secret") or "")
            if found is not None and found.ca:
                return cand
        return self.primary

    @property
    def passthrough(self) -> bool:
        """ssl-passthrough as the controller applies it: only with ``--enable-ssl-passthrough``; any Ingress of the
        host with the annotation (Go ParseBool) turns it on (controller.go 1384-1436); the backend is the Ingress
        owning ``/`` (controller.go 666-682), so without one nothing is passed through."""
        if not self.controller.enable_ssl_passthrough or self.gateway_api is not None:
            return False
        on = any(parse_go_bool(i.annotation("ssl-passthrough")) for i in self.on_host)
        return on and any(i.path == "/" for i in self.on_host)

    @property
    def host(self) -> str:
        return self.focus or self.ingresses[0].host

    def secret(self, ref_or_name: str) -> K8sSecret | None:
        """Look a secret up by ``ns/name`` or bare name (namespace of the primary Ingress)."""
        ns, _, name = ref_or_name.rpartition("/")
        ns = ns or self.primary.namespace
        for s in self.secrets:
            if s.name == name and s.namespace == ns:
                return s
        return None


@dataclass(frozen=True)
class Pod:
    """The HTTPS echo backend. Behind TLS passthrough the pod itself must verify APIM's client cert."""

    listener: Listener
    name: str = "echo"
    namespace: str = "default"


# ---------------------------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Topology:
    """The whole chain. ``client`` is how the internet client reaches the gateway (its trust and identity)."""

    name: str
    pki: PKIPlan
    client: Upstream
    gateway: Gateway
    apim: Apim
    ingress: IngressHop
    pod: Pod

    # -- views ---------------------------------------------------------------------------------------------------
    @property
    def passthrough(self) -> bool:
        """True when the ingress passes TLS through to the pod (:attr:`IngressHop.passthrough`)."""
        return self.ingress.passthrough

    def caller_of(self, hop: HopName) -> Upstream:
        """How the hop before ``hop`` talks to it: its trusted CA, expected name and client identity."""
        if hop == "gateway":
            return self.client
        if hop == "apim":
            return self.gateway.upstream
        if hop == "ingress" or self.passthrough:
            return self.apim.upstream  # behind ssl-passthrough the pod's TLS session is APIM's
        return self.ingress_upstream()

    def ingress_upstream(self) -> Upstream:
        """The ingress→pod upstream as the annotations configure it (proxy-ssl-*), in the model's terms."""
        ing = self.ingress.primary
        secret = self.ingress.secret(ing.annotation("proxy-ssl-secret") or "")
        verify = ing.annotation("proxy-ssl-verify", "off") == "on"
        return Upstream(
            hostname=ing.annotation("proxy-ssl-name") or self.pod.listener.hostname,
            trusted_ca=(secret.ca[0] if secret and secret.ca else None) if verify else None,
            client_cert=secret.tls if secret else None,
            verify_chain=verify,
            verify_name=verify,
        )

    def listener_of(self, hop: HopName) -> Listener:
        """The listener of ``hop``; for the ingress, derived from its annotations."""
        if hop == "gateway":
            return self.gateway.listener
        if hop == "apim":
            return self.apim.listener
        if hop == "pod" or (hop == "ingress" and self.passthrough):
            # behind TLS passthrough the ingress's port carries the pod's own TLS session
            return self.pod.listener if hop == "pod" else dataclasses.replace(self.pod.listener,
                                                                               hostname=self.ingress.host)
        ing = self.ingress.auth_tls_ingress()
        auth_secret = self.ingress.secret(ing.annotation("auth-tls-secret") or "")
        mode = ing.verify_client() if auth_secret else "off"
        client_auth: ClientAuth = {"off": "none", "optional": "optional", "optional_no_ca": "optional"}.get(
            mode, "required"
        )  # type: ignore[assignment]
        return Listener(
            server_cert=self.ingress.tls_leaf,
            hostname=ing.host,
            client_auth=client_auth,
            client_ca=auth_secret.ca[0] if auth_secret and auth_secret.ca else None,
        )

    def server_ca_of(self, hop: HopName) -> str:
        """The root CA name that issued ``hop``'s server cert (what a direct probe must trust)."""
        leaf = self.pki.leaf(self.listener_of(hop).server_cert)
        return self.pki.root_of(leaf.issuer)

    def iter_hops(self) -> Iterator[HopName]:
        yield from HOPS

    # -- variants ------------------------------------------------------------------------------------------------
    def replace(self, **changes: object) -> Topology:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_hop(self, hop: Literal["gateway", "apim", "pod"], **changes: Any) -> Topology:
        """A variant with fields of ``hop`` changed; ``listener__x=`` / ``upstream__x=`` reach one level down, e.g.
        ``t.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")``."""
        part = getattr(self, hop)
        direct = {k: v for k, v in changes.items() if "__" not in k}
        for sub in ("listener", "upstream"):
            nested = {k.split("__", 1)[1]: v for k, v in changes.items() if k.startswith(sub + "__")}
            if nested:
                direct[sub] = dataclasses.replace(getattr(part, sub), **nested)
        return dataclasses.replace(self, **{hop: dataclasses.replace(part, **direct)})

    def with_gateway_api_manifests(self, documents: list[dict[str, Any]], source: str) -> Topology:
        """This chain with YOUR Gateway API resources served as its (Gateway API) ingress: see
        :class:`GatewayApiManifests`."""
        mine = GatewayApiManifests.of(documents, source, self)
        return dataclasses.replace(self, ingress=dataclasses.replace(self.ingress, gateway_api_manifests=mine))

    def on_gateway_api(self, implementation: str = "envoy-gateway") -> Topology:
        """This chain with its ingress hop migrated to Gateway API: the same Ingresses, Secrets and certificates,
        served by ``implementation`` as :func:`harness.render.gateway_api.translate` writes them."""
        return dataclasses.replace(self, ingress=dataclasses.replace(self.ingress, gateway_api=implementation))

    def with_controller(self, *, enable_ssl_passthrough: bool | None = None, **config: str | None) -> Topology:
        """A variant with the ingress controller's flag and ConfigMap keys changed (``ssl_protocols="TLSv1.3"``:
        underscores become dashes; ``None`` removes a key, so it takes the controller's default)."""
        ctl = self.ingress.controller
        data = dict(ctl.config)
        for key, value in config.items():
            name = key.replace("_", "-")
            if name not in CONTROLLER_DEFAULTS:
                raise ValueError(f"ConfigMap key {name!r} is not modelled (known: {', '.join(CONTROLLER_DEFAULTS)})")
            if value is None:
                data.pop(name, None)
            else:
                data[name] = value
        flag = ctl.enable_ssl_passthrough if enable_ssl_passthrough is None else enable_ssl_passthrough
        new = ControllerSettings(enable_ssl_passthrough=flag, config=MappingProxyType(data))
        return dataclasses.replace(self, ingress=dataclasses.replace(self.ingress, controller=new))

    def with_ingress_annotations(self, **changes: str | None) -> Topology:
        """A variant whose primary Ingress (of the viewed host) has these annotations set or removed (``None``)."""
        old = self.ingress.primary
        ingresses = tuple(i.with_annotations(**changes) if i is old else i for i in self.ingress.ingresses)
        return dataclasses.replace(self, ingress=dataclasses.replace(self.ingress, ingresses=ingresses))

    def focus_on(self, host: str | None) -> Topology:
        """The same chain with its ingress views turned to ``host`` (None or the home host: the home host), and APIM's
        to the API whose backend that host is, when one is (:meth:`Apim.focused`). Nothing that runs changes: every
        host and API is served all along."""
        hop = self.ingress
        if host is not None and host not in hop.hosts:
            raise KeyError(f"no Ingress on host {host!r} (have: {', '.join(hop.hosts)})")
        focus = None if host is None or host == hop.ingresses[0].host else host
        if focus == hop.focus:
            return self
        return dataclasses.replace(self, ingress=dataclasses.replace(hop, focus=focus), apim=self.apim.focused(focus))


# ---------------------------------------------------------------------------------------------------------------
# The default chain
# ---------------------------------------------------------------------------------------------------------------
PUBLIC_HOST = "api.contoso.example"
APIM_HOST = "apim.internal.contoso.example"
INGRESS_HOST = "echo.aks.contoso.example"
POD_HOST = "echo.default.svc.cluster.local"


def default_pki_plan(key_type: KeyType = "ecdsa") -> PKIPlan:
    """One CA per trust domain, as a real deployment has them (RFC 2606 ``.example`` names throughout).

    - ``public-root`` → ``public-issuing``: the gateway's public cert (real public certs come from an intermediate);
    - ``apim-ca``: APIM's custom-domain cert, which the gateway trusts;
    - ``apim-client-ca``: APIM's client cert, which the ingress trusts (``auth-tls-secret`` ``ca.crt``);
    - ``ingress-ca``: the ingress server cert, which APIM trusts;
    - ``pod-ca``: the pod's cert and the ingress's client cert towards the pod (``proxy-ssl-secret``);
    - ``consumer-ca``: the internet client's cert, for the gateway's mTLS and APIM's validate-client-certificate.
    """
    cas = (
        CASpec("public-root", "Contoso Public Root CA"),
        CASpec("public-issuing", "Contoso Public Issuing CA 1", parent="public-root"),
        CASpec("apim-ca", "Contoso APIM CA"),
        CASpec("apim-client-ca", "Contoso APIM Client CA"),
        CASpec("ingress-ca", "Contoso AKS Ingress CA"),
        CASpec("pod-ca", "Contoso AKS Workload CA"),
        CASpec("consumer-ca", "Contoso Consumer CA"),
    )
    leaves = (
        LeafSpec("gateway-server", "public-issuing", PUBLIC_HOST, "server", (PUBLIC_HOST,)),
        LeafSpec("apim-server", "apim-ca", APIM_HOST, "server", (APIM_HOST,)),
        LeafSpec("apim-client", "apim-client-ca", "apim-client", "client", ("apim-client.contoso.example",)),
        LeafSpec("ingress-server", "ingress-ca", INGRESS_HOST, "server", (INGRESS_HOST,)),
        # behind TLS passthrough the pod answers for the ingress host too
        LeafSpec("pod-server", "pod-ca", POD_HOST, "server", (POD_HOST, "echo", INGRESS_HOST)),
        LeafSpec("ingress-client", "pod-ca", "ingress-nginx", "client", ("ingress-nginx.contoso.example",)),
        LeafSpec("consumer-client", "consumer-ca", "consumer-1", "client", ("consumer-1.contoso.example",)),
    )
    return PKIPlan(cas=cas, leaves=leaves, key_type=key_type)


def default_topology(key_type: KeyType = "ecdsa") -> Topology:
    """The reference chain: TLS to the gateway, re-encrypt to APIM, mTLS to the ingress, re-encrypt to the pod."""
    pki = default_pki_plan(key_type)
    ingress = Ingress(
        name="echo",
        host=INGRESS_HOST,
        tls_secret="ingress-tls",
        service="echo",
        service_port=8443,
        annotations=_frozen(
            {
                "auth-tls-secret": "default/apim-client-ca",
                "auth-tls-verify-client": "on",
                "auth-tls-verify-depth": "1",
                "auth-tls-pass-certificate-to-upstream": "true",
                "backend-protocol": "HTTPS",
                "proxy-ssl-secret": "default/pod-tls-client",
                "proxy-ssl-verify": "on",
                "proxy-ssl-verify-depth": "1",
                "proxy-ssl-name": POD_HOST,
                "proxy-ssl-server-name": "on",
                "proxy-ssl-protocols": "TLSv1.2 TLSv1.3",
            }
        ),
    )
    secrets = (
        K8sSecret("ingress-tls", tls="ingress-server"),
        K8sSecret("apim-client-ca", ca=("apim-client-ca",)),
        K8sSecret("pod-tls-client", tls="ingress-client", ca=("pod-ca",)),
        K8sSecret("echo-tls", tls="pod-server", ca=("pod-ca",)),  # the pod verifies the ingress's client cert
    )
    return Topology(
        name="default",
        pki=pki,
        client=Upstream(hostname=PUBLIC_HOST, trusted_ca="public-root"),
        gateway=Gateway(
            listener=Listener("gateway-server", PUBLIC_HOST, alpn=("h2", "http/1.1")),
            upstream=Upstream(APIM_HOST, trusted_ca="apim-ca"),
        ),
        apim=Apim(
            listener=Listener("apim-server", APIM_HOST, client_ca="consumer-ca", alpn=("h2", "http/1.1")),
            upstream=Upstream(INGRESS_HOST, trusted_ca="ingress-ca", client_cert="apim-client"),
        ),
        ingress=IngressHop(ingresses=(ingress,), secrets=secrets),
        pod=Pod(listener=Listener("pod-server", POD_HOST, client_auth="optional", client_ca="pod-ca")),
    )
