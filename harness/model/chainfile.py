"""The chain file: one chain in the words of the real products, as YAML (docs/chain-file.md).

This module is the file's *shape*: pydantic models of every key, the JSON Schema editors complete from
(:func:`chain_json_schema`), parsing YAML text into a :class:`ChainFile` with one-line errors that name the file, the
key path, the YAML line, the bad value and the fix (:func:`parse_chain_text`), and writing one back
(:func:`dump_chain_text`). It reads no file: resolving the certificate files, the Kubernetes YAML and the APIM policy
into a :class:`~harness.model.topology.Topology` is :mod:`harness.chainfile`'s job.

Names inside the file are the chain's own: ``certificates.identities`` names server and client certificates,
``certificates.trust`` names CA certificates (roots or intermediates); every other key that takes a certificate
refers to one of those names.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.errors import InputError

__all__ = [
    "CHAIN_FILE_VERSION",
    "TLS_NAMES",
    "ApimBackend",
    "ApimSpec",
    "BackendSettings",
    "Certificates",
    "ChainFile",
    "ClientAuthConfig",
    "ClientSpec",
    "GatewaySpec",
    "IdentityFile",
    "IngressSpec",
    "PodSpec",
    "SecretRef",
    "SslPolicy",
    "TrustFile",
    "Waf",
    "chain_json_schema",
    "dump_chain_text",
    "line_of",
    "parse_chain_text",
]

CHAIN_FILE_VERSION = 1

#: App Gateway's protocol names (``sslPolicy.minProtocolVersion``) → the model's TLS versions
TLS_NAMES: dict[str, str] = {"TLSv1_0": "1.0", "TLSv1_1": "1.1", "TLSv1_2": "1.2", "TLSv1_3": "1.3"}
TLSName = Literal["TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"]

#: the WAF rule substrings of the reference chain (request-line substrings answered 403)
DEFAULT_WAF_BLOCK = ("<script", "union select", "../../")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------------------
# certificates
# ---------------------------------------------------------------------------------------------------------------
class IdentityFile(_Strict):
    """A server or client certificate: exactly one of ``pem`` (leaf first, then intermediates), ``pfx`` (password
    from the environment variable ``password_env``) or ``secret`` (a Kubernetes Secret manifest file, or a folder
    with ``tls.crt``/``tls.key``). ``key`` is the private key (PEM) when the certificate file has none."""

    pem: str | None = None
    key: str | None = None
    pfx: str | None = None
    password_env: str | None = None
    secret: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IdentityFile:
        given = [k for k in ("pem", "pfx", "secret") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of pem, pfx, secret (got {', '.join(given) or 'none'})")
        if self.password_env is not None and self.pfx is None:
            raise ValueError("password_env is for pfx only")
        return self


class TrustFile(_Strict):
    """CA certificates someone trusts: ``pem`` (one or more CA certificates) or ``secret`` (a Secret manifest file or
    folder; its ``ca.crt``). ``key`` is the CA's private key, given only in test environments (fault variants)."""

    pem: str | None = None
    secret: str | None = None
    key: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> TrustFile:
        if (self.pem is None) == (self.secret is None):
            raise ValueError("give exactly one of pem, secret")
        return self


class Certificates(_Strict):
    identities: dict[str, IdentityFile] = Field(default_factory=dict)
    trust: dict[str, TrustFile] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# hops
# ---------------------------------------------------------------------------------------------------------------
class ClientSpec(_Strict):
    """The internet client in front of the gateway: what it trusts and (for App Gateway Strict) what it presents."""

    trusted_root: str | None = None
    host_name: str | None = None  # default: the gateway's first host name
    certificate: str | None = None
    verify_chain: bool = True
    verify_name: bool = True
    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"


class SslPolicy(_Strict):
    """App Gateway's ``sslPolicy``; ``max_protocol_version`` is the harness's (App Gateway has none)."""

    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"


class ClientAuthConfig(_Strict):
    """App Gateway's SSL profile ``clientAuthConfiguration``: ``verifyClientAuthMode`` and the trusted client CAs."""

    mode: Literal["none", "Strict", "Passthrough"] = "none"
    trusted_client_certificates: list[str] = Field(default_factory=list)


class Waf(_Strict):
    enabled: bool = True
    #: request-line substrings answered 403 (the stand-in's rules; a real WAF policy is not read)
    block_patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_WAF_BLOCK))


class BackendSettings(_Strict):
    """App Gateway's ``backendHttpSettings`` towards APIM."""

    host_name: str
    trusted_root_certificates: list[str] = Field(default_factory=list)
    validate_cert_chain_and_expiry: bool = True
    validate_sni: bool = True
    client_certificate: str | None = None
    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"


class GatewaySpec(_Strict):
    host_names: list[str] = Field(min_length=1)
    listener_certificate: str
    enable_http2: bool = True
    ssl_policy: SslPolicy = SslPolicy()
    client_auth: ClientAuthConfig = ClientAuthConfig()
    waf: Waf = Waf()
    backend_settings: BackendSettings


class ApimBackend(_Strict):
    """APIM's backend entity: ``url``, ``tls.validateCertificateChain`` / ``validateCertificateName``, the client
    certificate of ``credentials.certificateIds`` and the CA certificate it trusts for the backend."""

    url: str = Field(pattern=r"^https://[^/:]+(:\d+)?(/.*)?$")
    validate_certificate_chain: bool = True
    validate_certificate_name: bool = True
    client_certificate: str | None = None
    trusted_root: str | None = None
    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"


class ApiSpec(_Strict):
    """Another API of the APIM service: requests under ``path`` (its URL suffix) go to ``backend_url``, whose host
    must be an ingress host of ``ingress.manifests``. It uses the service's client certificate and backend CA
    (``apim.backend``); its backend entity's own TLS checks are these two."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    path: str = Field(pattern=r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
    backend_url: str = Field(pattern=r"^https://[^/:]+(:\d+)?(/.*)?$")
    validate_certificate_chain: bool = True
    validate_certificate_name: bool = True


class ApimSpec(_Strict):
    host_names: list[str] = Field(min_length=1)
    custom_domain_certificate: str
    negotiate_client_certificate: bool = False
    enable_http2: bool = True
    #: the service's CA certificates: what validate-client-certificate checks client certs against
    ca_certificates: list[str] = Field(default_factory=list)
    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"
    #: the API's policy XML file as you keep it (validate-client-certificate, validate-jwt, …)
    policy: str | None = None
    backend: ApimBackend
    #: the service's other APIs, each to another ingress host (``backend`` is the home API: every other path)
    apis: list[ApiSpec] = Field(default_factory=list)


class SecretRef(_Strict):
    """A Secret not in the manifests (made by ``kubectl create secret`` or cert-manager): what it holds."""

    tls: str | None = None
    ca: list[str] = Field(default_factory=list)


class IngressSpec(_Strict):
    #: who serves the Ingresses: ingress-nginx, or (after a migration) a Gateway API implementation serving the
    #: Gateway API resources ``mtls-harness migrate`` writes from them (docs/gateway-api.md)
    controller: Literal["ingress-nginx", "gateway-api"] = "ingress-nginx"
    #: with ``controller: gateway-api``: the implementation (its GatewayClass and how it configures its data plane)
    implementation: Literal["envoy-gateway", "agc"] | None = None
    #: with ``controller: gateway-api``: YOUR Gateway API resources as you apply them (files or folders of *.yaml):
    #: the ingress hop serves them instead of the migration of the Ingresses, which still say what must hold
    gateway_api_manifests: list[str] = Field(default_factory=list)
    enable_ssl_passthrough: bool = False
    config_map: dict[str, str] = Field(default_factory=dict)
    #: the Kubernetes YAML you apply: files (multi-document) or folders of *.yaml / *.yml
    manifests: list[str] = Field(default_factory=list)
    #: Secrets the manifests do not hold, keyed ``namespace/name``
    secrets: dict[str, SecretRef] = Field(default_factory=dict)


class PodSpec(_Strict):
    name: str = "echo"
    namespace: str = "default"
    host: str
    listener_certificate: str
    client_auth: Literal["none", "optional", "required"] = "none"
    client_ca: str | None = None
    min_protocol_version: TLSName = "TLSv1_2"
    max_protocol_version: TLSName = "TLSv1_3"
    alpn: list[str] = Field(default_factory=lambda: ["http/1.1"])


class Accepted(_Strict):
    """A finding the owner of the chain accepts, with the reason the report shows (docs/findings.md)."""

    finding: str = Field(pattern=r"^[a-z0-9.-]+@(gateway|apim|ingress|pod)$",
                         description="the finding's id, <property>@<hop>, as the report prints it")
    reason: str = Field(min_length=1)


class ChainFile(_Strict):
    """One chain: App Gateway → API Management → AKS ingress → pod."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="mtls-harness chain file")

    version: Literal[1] = 1
    name: str = Field(min_length=1)
    certificates: Certificates
    client: ClientSpec = ClientSpec()
    gateway: GatewaySpec
    apim: ApimSpec
    ingress: IngressSpec
    pod: PodSpec
    #: findings accepted by id, each with its reason (a run still reports them, and exits 0 for them)
    accept: list[Accepted] = Field(default_factory=list)


def chain_json_schema() -> dict[str, Any]:
    """The JSON Schema of the chain file (draft 2020-12), for editors (yaml-language-server) and CI checks."""
    schema = ChainFile.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


# ---------------------------------------------------------------------------------------------------------------
# parsing with one-line errors
# ---------------------------------------------------------------------------------------------------------------
def _node_at(root: yaml.Node | None, loc: Sequence[int | str]) -> tuple[yaml.Node | None, bool]:
    """The YAML node at ``loc`` (the deepest one found) and whether it was found whole."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next(((k, v) for k, v in node.value if k.value == part), None)
            if nxt is None:
                return node, False
            node = nxt[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node, False
    return node, True


def _key_node(root: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    """The KEY node of the last element of ``loc`` (an unknown key's own line)."""
    parent, whole = _node_at(root, loc[:-1])
    if whole and isinstance(parent, yaml.MappingNode):
        for k, _ in parent.value:
            if k.value == loc[-1]:
                return k  # type: ignore[no-any-return]
    return None


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The pydantic model that holds the last key of ``loc`` (for the list of known keys)."""
    current: Any = ChainFile
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        else:
            args = typing.get_args(current)
            current = args[-1] if args else None
        while typing.get_origin(current) in (typing.Union, types.UnionType):
            current = next(a for a in typing.get_args(current) if a is not type(None))
    if typing.get_origin(current) in (list, dict):
        current = typing.get_args(current)[-1]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fix(err: Any, loc: Sequence[int | str]) -> str:
    kind = err["type"]
    if kind == "missing":
        return "add it (docs/chain-file.md lists every key)"
    if kind == "extra_forbidden":
        model = _model_at(loc)
        known = ", ".join(model.model_fields) if model else ""
        return f"remove it or fix its spelling{f' (known here: {known})' if known else ''}"
    if kind == "literal_error":
        return f"use {err['ctx']['expected']}"
    if kind.endswith(("_type", "_parsing")):
        return f"give a {kind.removesuffix('_type').removesuffix('_parsing').replace('_', ' ')} here"
    return "fix the value (docs/chain-file.md)"


def _one_line(source: str, root: yaml.Node | None, exc: ValidationError) -> InputError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if p != "__root__")
    path = ".".join(str(p) for p in loc) or "(top level)"
    node = _key_node(root, loc) if err["type"] == "extra_forbidden" else _node_at(root, loc)[0]
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    msg = str(err["msg"]).removeprefix("Value error, ")
    value = "" if err["type"] == "missing" else f" (got {err['input']!r:.80})"
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return InputError(f"{source}{line}", f"{path}: {msg}{value}", _fix(err, loc))


def line_of(text: str, loc: Sequence[int | str]) -> int | None:
    """The 1-based YAML line of the value at key path ``loc`` (None when the path is not in the text)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    node, whole = _node_at(root, loc)
    return node.start_mark.line + 1 if whole and node is not None else None


def parse_chain_text(text: str, source: str = "<chain file>") -> ChainFile:
    """A chain file's YAML text as a :class:`ChainFile`; raises :class:`InputError` with one line otherwise."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"{source}{line}", f"is not valid YAML ({problem})",
                         "fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None
    if not isinstance(data, dict):
        raise InputError(source, f"is not a YAML mapping (got {type(data).__name__})",
                         "start from `mtls-harness init` or docs/chain-file.md")
    try:
        return ChainFile.model_validate(data)
    except ValidationError as exc:
        raise _one_line(source, root, exc) from None


def dump_chain_text(chain: ChainFile) -> str:
    """The chain file as YAML (keys in the models' order; defaults left out)."""
    data = chain.model_dump(mode="json", exclude_defaults=True)
    data = {"version": CHAIN_FILE_VERSION, **data}
    header = ("# mtls-harness chain file (docs/chain-file.md); JSON Schema: `mtls-harness chain schema`\n"
              "# yaml-language-server: $schema=chain.schema.json\n")
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
