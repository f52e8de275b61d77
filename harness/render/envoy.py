"""The App Gateway and API Management stand-ins as Envoy static configs, with their certs delivered as SDS files.

    config = render_envoy(topology, "gateway", certs, listen=(HOST, 8443), upstream=(HOST, 9443),
                          admin=(HOST, 9901), workdir=tmp / "gateway")
    with ManagedProcess("gateway", config.argv(find_envoy()), log_path=tmp / "gateway.log") as proc:
        wait_until(lambda: envoy_ready(config), "gateway admin /ready", alive=proc.exit_reason)
        rotate_envoy_secret(config, "server", certs.leaf("gateway-server-next"))

One bootstrap per hop: a TLS listener (tls_inspector, so %REQUESTED_SERVER_NAME% is filled) with one HTTP connection
manager whose only route goes to one upstream cluster over TLS. Every cert and trust anchor Envoy uses is an SDS
secret read from a file in :attr:`EnvoyConfig.sds_dir` (:data:`SECRETS`), so any of them can be swapped while Envoy
runs: :func:`rotate_envoy_secret` writes the new file beside the old one and renames it in — Envoy watches the
directory for renames and does not see an in-place rewrite.

How each hop answers like the real component (the Lua side is :mod:`harness.render.envoy_lua`):

- client certificates are requested with ``trust_chain_verification: ACCEPT_UNTRUSTED``, never demanded by TLS, so
  the decision is an HTTP answer: App Gateway Strict → 400 pages, APIM's validate-client-certificate → 401 JSON.
  Session resumption is off on such listeners: Envoy does not carry the verify result into a resumed session;
- a failed upstream connection (TLS error or refused: flags UF/UH/URX/UC) becomes App Gateway's 502 page or APIM's
  500 JSON through ``local_reply_config``; the header ``x-harness-detail`` keeps Envoy's flags and response-code
  details so a probe can still tell "upstream certificate rejected" from "connection refused". An upstream's own
  error status is never rewritten (local_reply_config only sees Envoy's own replies);
- the hop-trace header (:mod:`harness.model.wire`) is added on the route; the gateway first removes every inbound trace
  header, apim the ones of its own and later hops;
- apim with ``topology.apim.oauth``: the ``validate-jwt`` policy after the client-cert check, against a JWKS file
  written into the work dir (:mod:`harness.render.envoy_oauth`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol, get_args

from harness.errors import LaneRefused, UsageError
from harness.model.topology import Listener, TLSVersion, Topology, Upstream
from harness.model.wire import APPGW_SERVER, DETAIL_HEADER, PROXY_HOPS, header_name
from harness.render.envoy_lua import (
    APIM_500_JSON,
    LUA_METADATA_KEY,
    LUA_METADATA_NAMESPACE,
    LUA_STRIPPED_KEY,
    apim_lua,
    appgw_page,
    gateway_lua,
)
from harness.render.envoy_oauth import jwt_filters, jwt_reply_mapper

__all__ = [
    "SECRETS",
    "UPSTREAM_FAILURE_FLAGS",
    "CertFiles",
    "CertSource",
    "EnvoyConfig",
    "EnvoyHop",
    "EnvoyLane",
    "SecretName",
    "render_envoy",
    "sds_secret_text",
    "tls_certificate_files",
    "write_sds_file",
]

EnvoyHop = Literal["gateway", "apim"]
#: the SDS secrets a stand-in may have: its server cert, the CA its listener checks client certs against, the client
#: cert it presents upstream, and the CA it checks the upstream's server cert against
SecretName = Literal["server", "client-ca", "upstream-client", "upstream-ca"]
SECRETS: Final[tuple[SecretName, ...]] = get_args(SecretName)

#: Envoy response flags that mean "could not get a response from the upstream connection":
#: UF connect or TLS failure, UH no healthy host, URX retries exhausted, UC upstream closed the connection
UPSTREAM_FAILURE_FLAGS: Final = ("UF", "UH", "URX", "UC")

_TLS: Final[Mapping[str, str]] = {"1.0": "TLSv1_0", "1.1": "TLSv1_1", "1.2": "TLSv1_2", "1.3": "TLSv1_3"}
_TYPE = "type.googleapis.com/envoy.extensions."
_CLUSTER = "upstream"
#: the hop-trace fields (harness.model.wire.FIELDS) as Envoy substitution commands; verify comes from the Lua filter
TRACE_VALUE: Final = "; ".join([
    "tls=%DOWNSTREAM_TLS_VERSION%",
    "cipher=%DOWNSTREAM_TLS_CIPHER%",
    "sni=%REQUESTED_SERVER_NAME%",
    "peer_sha256=%DOWNSTREAM_PEER_FINGERPRINT_256%",
    "peer_subject=%DOWNSTREAM_PEER_SUBJECT%",
    "peer_issuer=%DOWNSTREAM_PEER_ISSUER%",
    f"verify=%DYNAMIC_METADATA({LUA_METADATA_NAMESPACE}:{LUA_METADATA_KEY})%",
    f"stripped=%DYNAMIC_METADATA({LUA_METADATA_NAMESPACE}:{LUA_STRIPPED_KEY})%",
])
#: the detail header on a stand-in's own upstream-failure answer: the deciding hop, Envoy's flags and details, and
#: the upstream TLS failure reason (the verify error, e.g. "…certificate_has_expired…"; measured in docs/behaviour.md)
_DETAIL_VALUE: Final = ("hop={hop}; flags=%RESPONSE_FLAGS%; details=%RESPONSE_CODE_DETAILS%; "
                        "upstream=%UPSTREAM_TRANSPORT_FAILURE_REASON%")


class CertFiles(Protocol):
    """What a cert set's leaf gives (harness.pki.certset.LeafFiles): the chain served or presented, and its key."""

    @property
    def chain(self) -> Path: ...

    @property
    def key(self) -> Path: ...


class CertSource(Protocol):
    """The part of harness.pki.certset.CertSet the renderer uses."""

    def leaf(self, name: str) -> Any: ...

    def trust_bundle(self, *ca_names: str) -> Path: ...


@dataclass(frozen=True)
class EnvoyConfig:
    """A rendered stand-in: where its files are and how to run it."""

    hop: EnvoyHop
    config_path: Path  # the static bootstrap (YAML)
    sds_dir: Path  # the directory Envoy watches for the SDS files (one per secret, <name>.json)
    admin_port: int
    listen_port: int
    #: the SDS secrets this config has (a listener without client auth has no "client-ca", and so on)
    secrets: tuple[SecretName, ...] = ("server", "upstream-ca")
    log_level: str = "warning"
    #: worker threads: one is plenty for a test chain and keeps several Envoys on a small host from competing
    concurrency: int = 1

    def argv(self, envoy: Path) -> list[str]:
        """The full command line. ``--disable-hot-restart``: several Envoys share this host, and hot restart would
        make them fight over one shared-memory base id."""
        return [str(envoy), "-c", str(self.config_path), "--disable-hot-restart",
                "--concurrency", str(self.concurrency), "-l", self.log_level,
                "--file-flush-interval-msec", "500"]  # the access log is there to read right after a failed probe

    def sds_path(self, which: SecretName) -> Path:
        return self.sds_dir / f"{which}.json"

    @property
    def access_log(self) -> Path:
        """One line per request: status, response flags, response-code details, upstream TLS failure reason."""
        return self.config_path.parent / f"{self.hop}-access.log"


# ---------------------------------------------------------------------------------------------------------------
# checks on the input
# ---------------------------------------------------------------------------------------------------------------
def _address(value: object, what: str) -> tuple[str, int]:
    if not (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)
            and not isinstance(value[1], bool)):
        raise UsageError(f"render_envoy: {what}={value!r} is not a (host, port) pair — pass e.g. ('127.0.0.1', 8443)")
    host, port = value
    if not host or not 0 < port < 65536:
        raise UsageError(f"render_envoy: {what}={value!r} needs a host and a port in 1..65535")
    return host, port


def _versions(lo: TLSVersion, hi: TLSVersion, where: str) -> dict[str, str]:
    if lo not in _TLS or hi not in _TLS:
        raise UsageError(f"{where}: TLS versions {lo!r}..{hi!r} — use one of {', '.join(_TLS)}")
    if float(lo) > float(hi):
        raise UsageError(f"{where}: min_version {lo} is above max_version {hi} — no version could be negotiated")
    return {"tls_minimum_protocol_version": _TLS[lo], "tls_maximum_protocol_version": _TLS[hi]}


def _leaf(certs: CertSource, name: str, role: str) -> CertFiles:
    try:
        leaf: CertFiles = certs.leaf(name)
    except KeyError as exc:
        raise UsageError(f"{role}: no leaf {name!r} in the cert set ({exc.args[0] if exc.args else exc}) — "
                         "name a leaf of the topology's PKI plan") from None
    return leaf


def _bundle(certs: CertSource, ca: str, role: str) -> Path:
    try:
        return certs.trust_bundle(ca)
    except KeyError as exc:
        raise UsageError(f"{role}: no CA {ca!r} in the cert set ({exc.args[0] if exc.args else exc}) — "
                         "name a CA of the topology's PKI plan") from None


# ---------------------------------------------------------------------------------------------------------------
# SDS files
# ---------------------------------------------------------------------------------------------------------------
def _secret_resource(which: SecretName, source: CertFiles | Path) -> dict[str, Any]:
    """The SDS file for one secret: a DiscoveryResponse-shaped document that names the PEM files (no key inline)."""
    secret: dict[str, Any] = {"@type": _TYPE + "transport_sockets.tls.v3.Secret", "name": which}
    if which in ("server", "upstream-client"):
        if isinstance(source, Path) or not (hasattr(source, "chain") and hasattr(source, "key")):
            raise UsageError(f"secret {which!r} is a certificate: pass a cert set leaf (with .chain and .key), "
                             f"not {source!r}")
        chain, key = Path(source.chain), Path(source.key)
        for path in (chain, key):
            if not path.is_file():
                raise UsageError(f"secret {which!r}: {path} does not exist — regenerate the cert set")
        secret["tls_certificate"] = tls_certificate_files(source)
    else:
        if not isinstance(source, Path):
            raise UsageError(f"secret {which!r} is a trust bundle: pass a PEM file path "
                             f"(certs.trust_bundle(...)), not {source!r}")
        if not source.is_file():
            raise UsageError(f"secret {which!r}: {source} does not exist — pass certs.trust_bundle(<ca>)")
        secret["validation_context"] = {"trusted_ca": {"filename": str(source.resolve())}}
    return {"resources": [secret]}


def tls_certificate_files(leaf: CertFiles) -> dict[str, Any]:
    """An Envoy ``TlsCertificate`` naming a leaf's chain and key files (the key by path: never inline)."""
    return {"certificate_chain": {"filename": str(Path(leaf.chain).resolve())},
            "private_key": {"filename": str(Path(leaf.key).resolve())}}


def sds_secret_text(which: SecretName, source: CertFiles | Path) -> str:
    """The SDS file's text for one secret (what :func:`write_sds_file` writes and a hot swap renames in)."""
    return json.dumps(_secret_resource(which, source), indent=2) + "\n"


def write_sds_file(path: Path, text: str) -> None:
    """Write an SDS file by rename (what Envoy watches for); public so a hot swap writes it the same way."""
    _write_atomic(path, text)


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file in ``path``'s directory, then rename it over ``path`` (what Envoy watches for)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # no secret inside (keys are referenced by path); readable by an Envoy in a container
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sds_ref(sds_dir: Path, which: SecretName) -> dict[str, Any]:
    return {
        "name": which,
        "sds_config": {
            "path_config_source": {"path": str(sds_dir / f"{which}.json"), "watched_directory": {"path": str(sds_dir)}},
            "resource_api_version": "V3",
        },
    }


@dataclass(frozen=True)
class _Refs:
    """How one listener's and its clusters' TLS contexts name their certificates: as SDS secrets read from files in
    ``sds_dir`` (the home lane: a rotation swaps them while Envoy runs), or, for a lane (:class:`EnvoyLane`), as the
    PEM files themselves — no file watch, so a hundred lanes do not cost a hundred inotify instances."""

    sds_dir: Path
    sources: Mapping[SecretName, CertFiles | Path]
    static: bool = False

    def certificate(self, which: SecretName) -> dict[str, Any]:
        if not self.static:
            return {"tls_certificate_sds_secret_configs": [_sds_ref(self.sds_dir, which)]}
        leaf = self.sources[which]
        assert not isinstance(leaf, Path)
        return {"tls_certificates": [tls_certificate_files(leaf)]}

    def validation(self, which: SecretName, default: dict[str, Any]) -> dict[str, Any]:
        if not self.static:
            return {"combined_validation_context": {"default_validation_context": default,
                                                    "validation_context_sds_secret_config": _sds_ref(self.sds_dir,
                                                                                                     which)}}
        bundle = self.sources[which]
        assert isinstance(bundle, Path)
        return {"validation_context": {**default, "trusted_ca": {"filename": str(bundle.resolve())}}}


# ---------------------------------------------------------------------------------------------------------------
# the bootstrap
# ---------------------------------------------------------------------------------------------------------------
def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _asks_client_cert(topology: Topology, hop: EnvoyHop) -> bool:
    if hop == "gateway":
        return topology.gateway.listener.client_auth != "none"
    apim = topology.apim
    return apim.negotiate_client_certificate or apim.listener.client_auth != "none"


def _downstream_tls(listener: Listener, refs: _Refs, ask_client_cert: bool, where: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        "tls_params": _versions(listener.min_version, listener.max_version, f"{where}.listener"),
        **refs.certificate("server"),
    }
    if listener.alpn:
        common["alpn_protocols"] = list(listener.alpn)
    tls: dict[str, Any] = {"common_tls_context": common, "require_client_certificate": False}
    if ask_client_cert:
        # Ask for a cert, accept whatever comes: the Lua filter answers like the real component (400 / 401).
        common |= refs.validation("client-ca", {"trust_chain_verification": "ACCEPT_UNTRUSTED"})
        tls["disable_stateless_session_resumption"] = True
        tls["disable_stateful_session_resumption"] = True
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TYPE + "transport_sockets.tls.v3.DownstreamTlsContext", **tls}}


def _upstream_tls(up: Upstream, refs: _Refs, where: str) -> dict[str, Any]:
    common: dict[str, Any] = {
        # Envoy's upstream default maximum is TLS 1.2: always say what the model says
        "tls_params": _versions(up.min_version, up.max_version, f"{where}.upstream"),
        "alpn_protocols": ["http/1.1"],
    }
    if up.client_cert is not None:
        common |= refs.certificate("upstream-client")
    if up.verify_chain:
        default_vc: dict[str, Any] = {}
        if up.verify_name:
            # SNI alone checks nothing: the name is checked only by a SAN matcher
            default_vc["match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": up.hostname}}]
        common |= refs.validation("upstream-ca", default_vc)
    # verify_chain off: no validation context at all, so the name is not checked either, whatever verify_name says.
    # Envoy cannot check a name alone: it refuses a SAN matcher without a trusted CA, and ACCEPT_UNTRUSTED accepts a
    # SAN mismatch too (measured). The real App Gateway / APIM can; the behaviour table records the difference.
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TYPE + "transport_sockets.tls.v3.UpstreamTlsContext",
                             "sni": up.hostname, "common_tls_context": common,
                             # no TLS session resumption upstream: a resumed session skips the next hop's cert, so
                             # after that hop's cert changed (an ingress hot reload keeps nginx's session cache) the
                             # new cert would never be verified; every new connection is a full, verified handshake
                             "max_session_keys": 0}}


def _cluster(up: Upstream, upstream: tuple[str, int], refs: _Refs, where: str,
             name: str = _CLUSTER) -> dict[str, Any]:
    host, port = upstream
    try:
        ipaddress.ip_address(host)
        discovery: dict[str, Any] = {"type": "STATIC"}
    except ValueError:  # a container name on a docker network
        discovery = {"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"}
    return {
        "name": name,
        **discovery,
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [
            {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}]},
        "transport_socket": _upstream_tls(up, refs, where),
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": _TYPE + "upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}},
        }},
    }


def _header(key: str, value: str) -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _local_reply(hop: EnvoyHop, jwt: bool = False) -> dict[str, Any]:
    if hop == "gateway":
        status, body, ctype = 502, appgw_page("502 Bad Gateway"), "text/html"
    else:
        status, body, ctype = 500, APIM_500_JSON, "application/json"
    return {"mappers": [*([jwt_reply_mapper(DETAIL_HEADER)] if jwt else []), {
        "filter": {"response_flag_filter": {"flags": list(UPSTREAM_FAILURE_FLAGS)}},
        "status_code": status,
        "headers_to_add": [_header(DETAIL_HEADER, _DETAIL_VALUE.format(hop=hop))],
        "body_format_override": {"text_format_source": {"inline_string": body}, "content_type": ctype},
    }]}


def _access_log(path: Path) -> list[dict[str, Any]]:
    fmt = ('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
           "flags=%RESPONSE_FLAGS% details=%RESPONSE_CODE_DETAILS% tls=%DOWNSTREAM_TLS_VERSION% "
           "upstream_failure=%UPSTREAM_TRANSPORT_FAILURE_REASON%\n")
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": _TYPE + "access_loggers.file.v3.FileAccessLog", "path": str(path),
        "log_format": {"text_format_source": {"inline_string": fmt}}}}]


def _route(cluster: str, up: Upstream, *, prefix_rewrite: str | None = None) -> dict[str, Any]:
    # the next hop routes by Host (APIM custom domain, ingress server_name): send the name it serves
    route: dict[str, Any] = {"cluster": cluster, "host_rewrite_literal": up.hostname, "timeout": "30s",
                             # one retry when the upstream drops the request unanswered — a pooled keep-alive
                             # connection the ingress closes as nginx reloads — as an HTTP client retries a GET on a
                             # stale connection; a TLS failure fails again the same way, so no outcome changes.
                             # The retry goes at once, as such a client's does: Envoy's default back-off (a random
                             # wait up to 25 ms, router.proto RetryPolicy.retry_back_off) is the minimum here
                             "retry_policy": {"retry_on": "reset", "num_retries": 1,
                                              "retry_back_off": {"base_interval": "0.001s",
                                                                 "max_interval": "0.002s"}}}
    if prefix_rewrite is not None:
        route["prefix_rewrite"] = prefix_rewrite
    return route


def _connection_manager(topology: Topology, hop: EnvoyHop, up: Upstream, log_path: Path,
                        jwks: Path | None = None, *, suffix: str = "") -> dict[str, Any]:
    own = header_name(hop)
    later = PROXY_HOPS[PROXY_HOPS.index(hop):]  # the gateway strips every trace header, apim its own and later ones
    if hop == "gateway":
        lua = gateway_lua(strict=topology.gateway.listener.client_auth == "required",
                          waf_block=topology.gateway.waf_block)
    else:
        lua = apim_lua(validate=topology.apim.validate_client_certificate)
    hcm: dict[str, Any] = {
        "@type": _TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": hop,
        "codec_type": "AUTO",
        "access_log": _access_log(log_path),
        "route_config": {
            "name": f"{hop}-routes{suffix}",
            "request_headers_to_remove": [header_name(h) for h in later],  # runs before request_headers_to_add
            "request_headers_to_add": [_header(own, TRACE_VALUE)],
            "virtual_hosts": [{"name": hop, "domains": ["*"], "routes": [
                # APIM's other APIs: a request under an API's URL suffix goes to its backend, the suffix removed
                # (APIM forwards the operation's path below the backend URL)
                *({"match": {"path_separated_prefix": api.path.rstrip("/")},
                   "route": _route(f"{_CLUSTER}-{api.name}{suffix}", topology.apim.backend_of(api),
                                   prefix_rewrite="/")}
                  for api in (topology.apim.apis if hop == "apim" else ())),
                {"match": {"prefix": "/"}, "route": _route(_CLUSTER + suffix, up)},
            ]}],
        },
        "http_filters": [
            {"name": "envoy.filters.http.lua",
             "typed_config": {"@type": _TYPE + "filters.http.lua.v3.Lua",
                              "default_source_code": {"inline_string": lua}}},
            # validate-jwt after validate-client-certificate: each check holds on its own (envoy_oauth.py)
            *(jwt_filters(topology.apim.oauth, jwks) if jwks is not None and topology.apim.oauth else []),
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": _TYPE + "filters.http.router.v3.Router"}},
        ],
        "local_reply_config": _local_reply(hop, jwt=jwks is not None),
    }
    if hop == "gateway":
        hcm["server_name"] = APPGW_SERVER  # on the gateway's own answers; a backend's Server header passes
        hcm["server_header_transformation"] = "APPEND_IF_ABSENT"
    else:
        hcm["server_header_transformation"] = "PASS_THROUGH"  # APIM adds no Server header of its own
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}


@dataclass(frozen=True)
class EnvoyLane:
    """One more path through the same Envoy process (issue 21: variants are hosts, not restarts): the hop as
    ``topology`` configures it, listening on its own ``listen`` port and sending to its own ``upstream`` — its own
    listener, clusters and TLS contexts, so nothing of one lane's sessions reaches another's."""

    topology: Topology
    certs: CertSource
    listen: tuple[str, int]
    upstream: tuple[str, int]
    jwks: Mapping[str, Any] | None = None


def _check(topology: Topology, hop: EnvoyHop) -> None:
    """The model errors render_envoy refuses, one UsageError each."""
    part = topology.gateway if hop == "gateway" else topology.apim
    listener, up = part.listener, part.upstream
    if _asks_client_cert(topology, hop) and not listener.client_ca:
        raise UsageError(f"{hop}.listener: client certificates are requested but client_ca is not set — name the "
                         "CA whose root verifies them (e.g. client_ca='consumer-ca')")
    if up.verify_chain and not up.trusted_ca:
        raise UsageError(f"{hop}.upstream: verify_chain is on but trusted_ca is not set — name the CA that issued "
                         "the next hop's server cert, or set verify_chain=False (an insecure configuration)")
    if hop == "apim" and topology.apim.focus is not None:
        raise UsageError("render_envoy: the topology is a view of one API (Topology.focus_on) — render the chain "
                         "itself (focus_on(None))")
    for api in topology.apim.apis if hop == "apim" else ():
        backend = topology.apim.backend_of(api)
        if backend.verify_chain and not backend.trusted_ca:
            raise UsageError(f"apim API {api.name}: verify_chain is on but the service's backend CA (trusted_ca) is "
                             "not set — name the CA that issued the ingress's server cert")


def _sources(topology: Topology, hop: EnvoyHop, certs: CertSource) -> dict[SecretName, CertFiles | Path]:
    """The certificates and trust bundles ``hop``'s listener and clusters use, by secret name."""
    part = topology.gateway if hop == "gateway" else topology.apim
    listener, up = part.listener, part.upstream
    apis = [topology.apim.backend_of(api) for api in (topology.apim.apis if hop == "apim" else ())]
    sources: dict[SecretName, CertFiles | Path] = {"server": _leaf(certs, listener.server_cert, f"{hop}.listener")}
    if _asks_client_cert(topology, hop):
        sources["client-ca"] = _bundle(certs, listener.client_ca or "", f"{hop}.listener.client_ca")
    if up.client_cert is not None:
        sources["upstream-client"] = _leaf(certs, up.client_cert, f"{hop}.upstream.client_cert")
    if up.verify_chain or any(backend.verify_chain for backend in apis):
        sources["upstream-ca"] = _bundle(certs, up.trusted_ca or "", f"{hop}.upstream.trusted_ca")
    return sources


def _lane(topology: Topology, hop: EnvoyHop, refs: _Refs, *, listen: tuple[str, int], upstream: tuple[str, int],
          access_log: Path, jwks: Path | None, suffix: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One path through the hop: its listener and its clusters (names end in ``suffix``)."""
    part = topology.gateway if hop == "gateway" else topology.apim
    listener, up = part.listener, part.upstream
    apis = [(api, topology.apim.backend_of(api)) for api in (topology.apim.apis if hop == "apim" else ())]
    where = hop + (f" lane{suffix}" if suffix else "")
    out = {
        "name": f"{hop}-https{suffix}",
        "address": _socket_address(*listen),
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": _TYPE + "filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": [{
            "filters": [_connection_manager(topology, hop, up, access_log, jwks, suffix=suffix)],
            "transport_socket": _downstream_tls(listener, refs, _asks_client_cert(topology, hop), where),
        }],
    }
    clusters = [_cluster(up, upstream, refs, where, name=_CLUSTER + suffix),
                *(_cluster(backend, upstream, refs, f"{where}.apis.{api.name}", name=f"{_CLUSTER}-{api.name}{suffix}")
                  for api, backend in apis)]
    return out, clusters


def _jwks_file(topology: Topology, hop: EnvoyHop, jwks: Mapping[str, Any] | None, workdir: Path) -> Path | None:
    if not (hop == "apim" and topology.apim.oauth is not None and topology.apim.oauth.enabled):
        return None
    if jwks is None:
        raise UsageError("apim has validate-jwt (topology.apim.oauth) but render_envoy got no jwks= — pass the "
                         "issuer's key set (harness.oauth.issuer.LocalIssuer.for_cert_set(certs).jwks())")
    path = workdir / "jwks.json"  # validate-jwt: the issuer's public keys, beside the bootstrap
    _write_atomic(path, json.dumps(jwks, indent=2) + "\n")
    return path


def render_envoy(
    topology: Topology,
    hop: EnvoyHop,
    certs: CertSource,
    *,
    listen: tuple[str, int],
    upstream: tuple[str, int],
    admin: tuple[str, int],
    workdir: Path,
    jwks: Mapping[str, Any] | None = None,
    lanes: Sequence[EnvoyLane] = (),
) -> EnvoyConfig:
    """Write the bootstrap and SDS files for ``hop``'s stand-in into ``workdir`` (created; files replaced).

    ``listen`` is where the hop's TLS listener binds, ``upstream`` where the next hop listens, ``admin`` the admin
    interface (keep it on loopback). ``jwks`` is the key set apim's validate-jwt trusts (needed only with
    ``topology.apim.oauth``). Raises :class:`~harness.errors.UsageError` for an unknown hop, a bad address,
    an impossible TLS version range, a cert or CA name the cert set lacks, or client auth without a client CA.

    ``lanes``: more paths through the same process, each the hop of another topology (a variant) on its own port
    (:class:`EnvoyLane`); the returned config is the home lane's (its SDS files are the ones a rotation swaps). Every
    lane shares the home lane's access log: a case reads only the lines its own request added.
    """
    if hop not in ("gateway", "apim"):
        raise UsageError(f"render_envoy: hop {hop!r} is not an Envoy stand-in — use 'gateway' or 'apim'")
    listen, upstream, admin = (_address(listen, "listen"), _address(upstream, "upstream"), _address(admin, "admin"))
    _check(topology, hop)
    workdir = Path(workdir).resolve()
    sds_dir = workdir / "sds"
    sds_dir.mkdir(parents=True, exist_ok=True)
    sources = _sources(topology, hop, certs)
    # ".json": Envoy picks its parser by the file's name, and the same compact JSON named ".yaml" went through the
    # YAML parser — measured here, 0.33 s against 0.23 s to load a gateway with 81 lane listeners (envoy --mode
    # init_only)
    config = EnvoyConfig(hop=hop, config_path=workdir / f"{hop}-envoy.json", sds_dir=sds_dir,
                         admin_port=admin[1], listen_port=listen[1], secrets=tuple(sources))
    for which, source in sources.items():
        _write_atomic(config.sds_path(which), sds_secret_text(which, source))
    listeners, clusters = [], []
    home = _lane(topology, hop, _Refs(sds_dir, sources), listen=listen, upstream=upstream,
                 access_log=config.access_log, jwks=_jwks_file(topology, hop, jwks, workdir), suffix="")
    listeners.append(home[0])
    clusters += home[1]
    for i, lane in enumerate(lanes, 1):
        where = f"render_envoy lane {i}"
        lane_dir = workdir / "lanes" / f"l{i}"
        lane_dir.mkdir(parents=True, exist_ok=True)
        try:
            _check(lane.topology, hop)
            one = _lane(lane.topology, hop, _Refs(lane_dir, _sources(lane.topology, hop, lane.certs), static=True),
                        listen=_address(lane.listen, f"{where} listen"),
                        upstream=_address(lane.upstream, f"{where} upstream"), access_log=config.access_log,
                        jwks=_jwks_file(lane.topology, hop, lane.jwks, lane_dir), suffix=f"-l{i}")
        except (UsageError, KeyError) as exc:
            raise LaneRefused(i, f"{where}: {exc}") from None
        listeners.append(one[0])
        clusters += one[1]

    bootstrap = {
        "node": {"id": f"mtls-harness-{hop}", "cluster": f"mtls-harness-{topology.name}"},
        "admin": {"address": _socket_address(*admin)},
        # a connection ceiling (and no start-up warning about its absence)
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections",
            "typed_config": {"@type": _TYPE + "resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                             "max_active_downstream_connections": 10000}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    # compact JSON, which Envoy's YAML parser reads as it is (YAML 1.2 holds JSON): dumping YAML costs ~0.3 s for a
    # chain with 80 lanes, indented JSON (Python's encoder) ~0.2 s, compact JSON (the C encoder) a few ms
    _write_atomic(config.config_path, json.dumps(bootstrap, separators=(",", ":")) + "\n")
    return config
