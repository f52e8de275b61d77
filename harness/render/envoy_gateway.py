"""Gateway API resources as the Envoy config Envoy Gateway would give its data plane (issue 20: the Gateway API
ingress, run for real).

    config = render_envoy_gateway(documents, secrets={"ingress-tls": certs.leaf("ingress-server"), …},
                                  listen=(HOST, 8443), admin=(HOST, 9901), upstreams={"echo": (HOST, 9443)},
                                  workdir=tmp / "gateway-api")
    with ManagedProcess("ingress", config.argv(find_envoy()), log_path=…): …

What it writes, each from Envoy Gateway's translator (envoyproxy/gateway at d32f282942):

- one TLS listener (``tls_inspector``); one filter chain per HTTPS listener of the Gateway, matched by its hostname as
  SNI (``filter_chain_match.server_names``; none: every name);
- the listener's certificate from its ``certificateRefs`` Secret; the client-certificate check of its port
  (:func:`harness.render.gateway_api.validation_of`): ``AllowValidOnly`` is ``require_client_certificate: true`` with
  the CA as trust (RequireAndVerify), ``AllowInsecureFallback`` is ``require_client_certificate: false`` and
  ``ACCEPT_UNTRUSTED`` (Request) — ``internal/gatewayapi/helpers.go`` 605-622, 672-681,
  ``internal/xds/translator/listener.go`` 929-1047. So a refused client certificate is a TLS alert, not a page;
- TLS session resumption off downstream, both kinds, as Envoy Gateway's default (``listener.go`` 1049-1059);
- per HTTPS listener an HTTP connection manager whose routes are the HTTPRoutes attached to it (``parentRefs`` name and
  ``sectionName``, ``hostnames``), ``PathPrefix`` / ``Exact``, each to a cluster of its backend Service — one route
  configuration per HTTPS listener (``listener.go`` 578-600: "HTTPS Listener is 1:1 mapping to the filter chain"), so a
  Host of another listener on a session of this one matches no route: 404, not the other listener's backend (Envoy
  Gateway has no 421 for it); no Server header of its own (``listener.go`` 389, ``PASS_THROUGH``);
- per backend Service a cluster to ``upstreams[service]``; TLS only when a BackendTLSPolicy targets the Service: SNI
  its ``hostname``, the SAN checked against it (``auto_sni_san_validation``), its CA as trust, and the Gateway's
  ``spec.tls.backend.clientCertificateRef`` presented (``internal/xds/translator/translator.go`` 1364-1420). No
  policy: plain HTTP to the Service, as the Gateway API says.

Application Gateway for Containers' policies (read by :class:`~harness.render.gateway_api.Resources` into the same
shapes) render the same way: its FrontendTLSPolicy is a required check, its BackendTLSPolicy sends its own ``sni`` and
presents its own ``clientCertificateRef``; their CA Secrets come from ``secret_cas``.

Every certificate is named by file (no SDS): the harness's cert set holds them, and the renderer writes the CA
ConfigMaps' ``ca.crt`` beside the bootstrap. The access log has one line per request with Envoy's response flags and
the upstream TLS failure reason — the evidence a case reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from harness.errors import LaneRefused, UsageError
from harness.model.wire import header_name
from harness.pki.x509 import write_atomic
from harness.render.envoy import TRACE_VALUE, CertFiles, tls_certificate_files
from harness.render.envoy_lua import LUA_METADATA_KEY, LUA_METADATA_NAMESPACE, LUA_STRIPPED_KEY
from harness.render.gateway_api import (
    Resources,
    ca_pem,
    host_matches,
    listener_ca_problem,
    policy_ca_problem,
    policy_for,
    validation_of,
)
from harness.render.nginx_ingress import MALFORMED_CA_PEM

if TYPE_CHECKING:
    from harness.model.topology import Topology
    from harness.pki.certset import CertSet

__all__ = ["GatewayApiEnvoy", "GatewayApiLane", "Twin", "render_envoy_gateway", "twin_of"]

_TYPE: Final = "type.googleapis.com/envoy.extensions."


@dataclass(frozen=True)
class GatewayApiEnvoy:
    """A rendered Gateway API data plane: its bootstrap, admin port and access log."""

    config_path: Path
    admin_port: int
    access_log: Path
    #: each Gateway listener's state as the implementation reports it (``Programmed=True``, or ``Programmed=False``
    #: with the condition reason Gateway API gives): one line per listener, naming the address it is served on
    status_path: Path | None = None

    def states(self) -> dict[str, Path]:
        """Its listener states as a running chain's ``states`` (``ingress-status``)."""
        return {"ingress-status": self.status_path} if self.status_path is not None else {}

    def argv(self, envoy: Path, *, log_level: str = "warning", log_path: Path | None = None) -> list[str]:
        """Envoy's command line; ``log_path``: its log to that file, not stderr (a container's log is not a file the
        evidence can read); ``log_level="info"`` puts its ready line ("starting workers") in that log."""
        # connection:debug: Envoy's own words for each certificate it refuses, down- and upstream (the evidence a
        # case reads: harness.cases.evidence); each line stamped with the epoch time, so a line written after a
        # probe ended is not taken for the next probe's (harness.targets.base.RunningChain.evidence_since)
        return [str(envoy), "-c", str(self.config_path), "--disable-hot-restart", "--concurrency", "1",
                "-l", log_level, "--component-log-level", "connection:debug", "--file-flush-interval-msec", "100",
                "--log-format", "[%E.%e][%l][%n] %v",
                *(["--log-path", str(log_path)] if log_path is not None else [])]


def _ca_file(res: Resources, refs: list[Any], workdir: Path, what: str) -> Path:
    """The CA bundle the refs name, written beside the bootstrap: each a ConfigMap with ``ca.crt`` among the resources
    (the Core support level), or a Secret whose CA the caller gave (``secret_cas``: Application Gateway for
    Containers names Secrets)."""
    pem = b""
    for ref in refs:
        found = ca_pem(res, ref)
        if not found:
            raise UsageError(f"{what}: caCertificateRef {ref.get('kind', 'ConfigMap')} {ref.get('name')!r} holds no "
                             "ca.crt here — add the ConfigMap to the resources, or give the Secret's CA (secret_cas=) "
                             "(Gateway API: NoValidCACertificate fails the listener closed)")
        pem += found
    path = workdir / "ca" / f"{'-'.join(str(r.get('name')) for r in refs)}.pem"
    write_atomic(path, pem)
    return path


def _downstream(listener: dict[str, Any], mode: str, ca: Path | None,
                secrets: Mapping[str, CertFiles]) -> dict[str, Any]:
    refs = (listener.get("tls") or {}).get("certificateRefs") or []
    names = [str(r.get("name")) for r in refs]
    missing = [n for n in names if n not in secrets]
    if not names or missing:
        raise UsageError(f"listener {listener.get('name')!r}: certificateRefs {missing or names} — give the Secret's "
                         "certificate and key (secrets=)")
    common: dict[str, Any] = {"tls_certificates": [tls_certificate_files(secrets[n]) for n in names],
                              "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                             "tls_maximum_protocol_version": "TLSv1_3"},
                              "alpn_protocols": ["h2", "http/1.1"]}
    tls: dict[str, Any] = {"common_tls_context": common, "disable_stateful_session_resumption": True,
                           "disable_stateless_session_resumption": True}
    if mode != "none" and ca is not None:
        require = mode == "AllowValidOnly"
        context: dict[str, Any] = {"trusted_ca": {"filename": str(ca)}}
        if not require:
            context["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
        common["validation_context"] = context
        tls["require_client_certificate"] = require
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TYPE + "transport_sockets.tls.v3.DownstreamTlsContext", **tls}}


def _routes(res: Resources, gateway: dict[str, Any], listener: dict[str, Any]) -> list[dict[str, Any]]:
    name = (gateway.get("metadata") or {}).get("name")
    out: list[dict[str, Any]] = []
    for route in res.routes:
        spec = route.get("spec") or {}
        attached = any(p.get("name") == name and p.get("sectionName") in (None, listener.get("name"))
                       for p in spec.get("parentRefs") or [])
        host = listener.get("hostname")
        hostnames = spec.get("hostnames") or []
        if not attached or (host and hostnames and not any(_intersects(h, host) for h in hostnames)):
            continue  # a route attaches to a listener only where their hostnames intersect (Gateway API HTTPRoute)
        for rule in spec.get("rules") or []:
            backends = rule.get("backendRefs") or []
            if not backends:
                continue
            backend = backends[0]
            cluster = f"{backend.get('name')}:{backend.get('port')}"
            for match in rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]:
                path = (match.get("path") or {})
                value = str(path.get("value", "/"))
                how = ({"path": value} if path.get("type") == "Exact" else
                       {"prefix": "/"} if value == "/" else {"path_separated_prefix": value.rstrip("/")})
                out.append({"match": how, "route": {"cluster": cluster, "timeout": "30s"}})
    return out


def _intersects(route_host: str, listener_host: str) -> bool:
    return host_matches(route_host, listener_host) or host_matches(listener_host, route_host)


def _upstream(res: Resources, gateway: dict[str, Any], service: str, workdir: Path,
              secrets: Mapping[str, CertFiles]) -> dict[str, Any] | None:
    policy = policy_for(res, service)
    if policy is None:
        return None  # no BackendTLSPolicy: plain HTTP to the Service
    validation = (policy.get("spec") or {}).get("validation") or {}
    hostname = str(validation.get("hostname", ""))
    sni = str(policy.get("sni") or hostname)  # an alb BackendTLSPolicy may send another SNI than the SAN it checks
    ca = _ca_file(res, list(validation.get("caCertificateRefs") or []), workdir,
                  f"BackendTLSPolicy {(policy.get('metadata') or {}).get('name')}")
    context: dict[str, Any] = {"trusted_ca": {"filename": str(ca)}}
    if sni != hostname:
        context["match_typed_subject_alt_names"] = [{"san_type": "DNS", "matcher": {"exact": hostname}}]
    common: dict[str, Any] = {"validation_context": context,
                              "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                                             "tls_maximum_protocol_version": "TLSv1_3"},
                              "alpn_protocols": ["http/1.1"]}
    client = (((gateway.get("spec") or {}).get("tls") or {}).get("backend") or {}).get("clientCertificateRef") \
        or policy.get("clientCertificateRef")  # Application Gateway for Containers: per backend
    if client:
        name = str(client.get("name"))
        if name not in secrets:
            raise UsageError(f"Gateway spec.tls.backend.clientCertificateRef {name!r}: give the Secret's certificate "
                             "and key (secrets=)")
        common["tls_certificates"] = [tls_certificate_files(secrets[name])]
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": _TYPE + "transport_sockets.tls.v3.UpstreamTlsContext", "sni": sni,
                             "auto_sni_san_validation": sni == hostname, "common_tls_context": common}}


@dataclass(frozen=True)
class GatewayApiLane:
    """One more set of Gateway API resources served by the same Envoy, on its own port (a variant of the chain:
    :mod:`harness.targets.lanes`): its own listener and clusters, named with a ``-l<i>`` suffix."""

    documents: tuple[Mapping[str, Any], ...]
    secrets: Mapping[str, CertFiles]
    listen: tuple[str, int]
    upstreams: Mapping[str, tuple[str, int]]
    secret_cas: Mapping[str, bytes] = field(default_factory=dict)


#: the hop trace (harness.model.wire) as the ingress adds it: harness instrumentation, like the nginx twin's. The
#: verdict comes from this Lua (Envoy has no substitution for it): a presented certificate Envoy validated, one it
#: accepted untrusted (AllowInsecureFallback), or none; ``stripped`` when the caller sent an ingress trace header
_TRACE_LUA: Final = f"""
function envoy_on_request(handle)
  local ssl = handle:connection():ssl()
  local verdict = "NONE"
  if ssl ~= nil and ssl:peerCertificatePresented() then
    if ssl:peerCertificateValidated() then verdict = "SUCCESS" else verdict = "FAILED:certificate not trusted" end
  end
  handle:streamInfo():dynamicMetadata():set("{LUA_METADATA_NAMESPACE}", "{LUA_METADATA_KEY}", verdict)
  if handle:headers():get("{header_name("ingress")}") ~= nil then
    handle:streamInfo():dynamicMetadata():set("{LUA_METADATA_NAMESPACE}", "{LUA_STRIPPED_KEY}", "ingress")
  end
end
"""


def _trace_filters() -> list[dict[str, Any]]:
    return [{"name": "envoy.filters.http.lua", "typed_config": {
        "@type": _TYPE + "filters.http.lua.v3.Lua", "default_source_code": {"inline_string": _TRACE_LUA}}}]


def _listener(documents: Iterable[Mapping[str, Any]], *, secrets: Mapping[str, CertFiles], listen: tuple[str, int],
              upstreams: Mapping[str, tuple[str, int]], workdir: Path, access_log: Path, trace: bool,
              secret_cas: Mapping[str, bytes], status: list[str], suffix: str = "",
              ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The listener and clusters of the first Gateway of ``documents`` (module doc); each Gateway listener's state
    appended to ``status``. A listener whose client-certificate CA does not resolve is left out, as Envoy Gateway
    leaves it out (:func:`~harness.render.gateway_api.ca_problem`); with none left there is no Envoy listener: the
    port refuses connections."""
    res = Resources.of(documents, secret_cas)
    if not res.gateways:
        raise UsageError("render_envoy_gateway: no Gateway among the resources")
    gateway = res.gateways[0]
    workdir.mkdir(parents=True, exist_ok=True)
    chains: list[dict[str, Any]] = []
    services: set[tuple[str, int]] = set()
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        if listener.get("protocol") != "HTTPS":
            continue
        mode, refs, _ = validation_of(res, gateway, listener)
        said = f"listen {listen[0]}:{listen[1]} listener {listener.get('name')} ({listener.get('hostname') or '*'}):"
        # a listener whose CA does not resolve is left out of the data plane, as Envoy Gateway leaves it out
        problem = listener_ca_problem(res, gateway, listener)
        if problem is not None:
            status.append(f"{said} Programmed=False {problem}")
            continue
        status.append(f"{said} Programmed=True")
        ca = _ca_file(res, refs, workdir, f"listener {listener.get('name')}") if mode != "none" else None
        routes = _routes(res, gateway, listener)
        for r in routes:
            svc, _, port = r["route"]["cluster"].partition(":")
            policy = policy_for(res, svc)
            problem = policy_ca_problem(res, policy) if policy is not None else None
            if problem is not None:
                # the route's only backend is invalid: Envoy Gateway answers 500 itself (route.go 380-397)
                del r["route"]
                r["direct_response"] = {"status": 500}
                status.append(f"{said} route to Service {svc}: BackendTLSPolicy "
                              f"{(policy or {}).get('metadata', {}).get('name')}: Accepted=False {problem} — the "
                              "route answers 500")
                continue
            services.add((svc, int(port)))
            r["route"]["cluster"] += suffix
        host = listener.get("hostname")
        route_config: dict[str, Any] = {
            "name": f"{listener.get('name')}-routes{suffix}", "virtual_hosts": [
                {"name": str(listener.get("name")), "domains": [host, f"{host}:*"] if host else ["*"],
                 "routes": routes}]}
        if trace:
            route_config |= {"request_headers_to_remove": [header_name("ingress")],
                             "request_headers_to_add": [{"header": {"key": header_name("ingress"),
                                                                    "value": TRACE_VALUE},
                                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
        hcm = {"@type": _TYPE + "filters.network.http_connection_manager.v3.HttpConnectionManager",
               "stat_prefix": f"gateway-api-{listener.get('name')}{suffix}", "codec_type": "AUTO",
               # Envoy Gateway adds no Server header of its own (internal/xds/translator/listener.go 389)
               "server_header_transformation": "PASS_THROUGH",
               "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
                   "@type": _TYPE + "access_loggers.file.v3.FileAccessLog", "path": str(access_log),
                   "log_format": {"text_format_source": {"inline_string": (
                       '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)%" %RESPONSE_CODE% flags=%RESPONSE_FLAGS% '
                       "details=%RESPONSE_CODE_DETAILS% upstream_failure=%UPSTREAM_TRANSPORT_FAILURE_REASON%\n")}}}}],
               "route_config": route_config,
               "http_filters": [*(_trace_filters() if trace else []),
                                {"name": "envoy.filters.http.router",
                                 "typed_config": {"@type": _TYPE + "filters.http.router.v3.Router"}}]}
        chain: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                              "typed_config": hcm}],
                                 "transport_socket": _downstream(listener, mode, ca, secrets)}
        if host:
            chain["filter_chain_match"] = {"server_names": [host]}
        chains.append(chain)
    clusters = []
    for svc, port in sorted(services):
        if svc not in upstreams:
            raise UsageError(f"render_envoy_gateway: backend Service {svc!r} — give where it listens (upstreams=)")
        address, target = upstreams[svc]
        name = f"{svc}:{port}{suffix}"
        cluster: dict[str, Any] = {
            "name": name, "type": "STATIC", "connect_timeout": "5s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": address, "port_value": target}}}}]}]}}
        upstream = _upstream(res, gateway, svc, workdir, secrets)
        if upstream is not None:
            cluster["transport_socket"] = upstream
        clusters.append(cluster)
    if not chains:
        return None, clusters
    listener_config = {
        "name": f"gateway-api-https{suffix}",
        "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
        "listener_filters": [{"name": "envoy.filters.listener.tls_inspector", "typed_config": {
            "@type": _TYPE + "filters.listener.tls_inspector.v3.TlsInspector"}}],
        "filter_chains": chains}
    return listener_config, clusters


def render_envoy_gateway(documents: Iterable[Mapping[str, Any]], *, secrets: Mapping[str, CertFiles],
                         listen: tuple[str, int], admin: tuple[str, int], upstreams: Mapping[str, tuple[str, int]],
                         workdir: Path, trace: bool = False, secret_cas: Mapping[str, bytes] | None = None,
                         lanes: Sequence[GatewayApiLane] = ()) -> GatewayApiEnvoy:
    """Write the Envoy bootstrap for the first Gateway of ``documents`` into ``workdir`` (module doc). ``secrets``:
    each Secret name the resources reference → its certificate and key files; ``upstreams``: each backend Service →
    where it listens; ``secret_cas``: the ``ca.crt`` of each Secret a caCertificateRef names; ``trace``: add the
    ingress's hop-trace header (the chain's ingress hop); ``lanes``: more
    resource sets on their own ports. Raises :class:`UsageError` for a reference it cannot resolve, and
    :class:`~harness.errors.LaneRefused` naming the lane for one in a lane."""
    workdir = Path(workdir).resolve()
    access_log = workdir / "ingress-access.log"
    status: list[str] = []
    listener, clusters = _listener(documents, secrets=secrets, listen=listen, upstreams=upstreams, workdir=workdir,
                                   access_log=access_log, trace=trace, secret_cas=secret_cas or {}, status=status)
    listeners = [listener] if listener is not None else []
    for i, lane in enumerate(lanes, start=1):
        try:
            extra, more = _listener(lane.documents, secrets=lane.secrets, listen=lane.listen,
                                    upstreams=lane.upstreams, workdir=workdir / f"l{i}", access_log=access_log,
                                    trace=trace, secret_cas=lane.secret_cas, status=status, suffix=f"-l{i}")
        except UsageError as exc:
            raise LaneRefused(i, str(exc)) from None
        if extra is not None:
            listeners.append(extra)
        clusters += more
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}}
    config_path = workdir / "gateway-api-envoy.json"  # JSON by name too: Envoy's YAML parser is slower (envoy.py)
    write_atomic(config_path, (json.dumps(bootstrap, separators=(",", ":")) + "\n").encode())
    status_path = workdir / "gateway-status.txt"
    write_atomic(status_path, "".join(f"{line}\n" for line in status).encode())
    return GatewayApiEnvoy(config_path=config_path, admin_port=admin[1], access_log=access_log,
                           status_path=status_path)


@dataclass(frozen=True)
class Twin:
    """What the Gateway API twin of a chain's ingress hop is made of: the resources ``translate`` writes from its
    Ingresses, the Secrets they name (certificate and key files), and the backend Services they route to."""

    documents: tuple[Mapping[str, Any], ...]
    secrets: Mapping[str, CertFiles]
    services: frozenset[str]
    #: the ``ca.crt`` of each Secret with CA certificates (what a caCertificateRef of kind Secret names)
    secret_cas: Mapping[str, bytes] = field(default_factory=dict)

    def upstreams(self, pod: tuple[str, int]) -> dict[str, tuple[str, int]]:
        """Every backend Service at the pod's address (the twin's pod serves every Service, as nginx's does)."""
        return dict.fromkeys(self.services, pod)


def twin_of(topology: Topology, certs: CertSet, documents: Iterable[Mapping[str, Any]] | None = None) -> Twin:
    """The Gateway API twin of ``topology``'s ingress hop: ``documents`` as given, else the chain's own Gateway API
    resources when they stand for its Ingresses (``IngressHop.gateway_api_manifests``: not a variant's), else what
    :func:`harness.render.gateway_api.translate` writes for its implementation (``topology.ingress.gateway_api``)."""
    from harness.render.gateway_api import translate

    mine = topology.ingress.gateway_api_manifests
    if documents is None and mine is not None and mine.serves(topology):
        documents = json.loads(mine.documents_json)  # YOUR resources, as you apply them
    docs = (tuple(dict(d) for d in documents) if documents is not None else
            tuple(translate(topology, certs, implementation=topology.ingress.gateway_api or "envoy-gateway").documents))
    res = Resources.of(docs)
    services = frozenset(str(b.get("name")) for r in res.routes for rule in (r.get("spec") or {}).get("rules") or []
                         for b in rule.get("backendRefs") or [])
    secrets = {s.name: certs.leaf(s.tls) for s in topology.ingress.secrets if s.tls}
    # a malformed Secret's ca.crt as it is: a caCertificateRef naming it gives no valid CA (NoValidCACertificate)
    cas = {s.name: MALFORMED_CA_PEM if s.malformed_ca else certs.trust_bundle(*s.ca).read_bytes()
           for s in topology.ingress.secrets if s.ca or s.malformed_ca}
    return Twin(docs, secrets, services, cas)
