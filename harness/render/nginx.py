"""nginx.conf for the ingress stand-in, rendered the way ingress-nginx renders it from the Ingress annotations.

    cfg = render_nginx(topology, certs, listen=("127.0.0.1", 8443), pod=("127.0.0.1", 9443), workdir=tmp)
    with ManagedProcess("ingress", cfg.argv(find_nginx()), log_path=tmp / "nginx.out") as p:
        ...
        render_nginx(changed_topology, certs, ..., workdir=tmp)   # same workdir
        reload_nginx(cfg, p.pid)                                    # SIGHUP: new certs and config, no dropped request

The controller half (annotations → per-host plan, Secrets → files) lives in :mod:`harness.render.nginx_ingress`;
this module writes the text, mirroring ingress-nginx's ``rootfs/etc/nginx/template/nginx.tmpl`` directive for
directive where the annotations are concerned (docs/ingress-nginx-fidelity.md cites each). Where a static nginx 1.22
cannot do what the controller's Lua does, the rendering says so in a comment:

- per-host certificates: the controller serves them from Lua (``ssl_certificate_by_lua_file``); here each host's
  server block names its Secret's PEM file;
- the backend: the controller's ``upstream upstream_balancer`` picks endpoints in Lua; here it holds the pod's address.
  The name is kept, because nginx checks the backend cert against it when ``proxy-ssl-verify`` is on without
  ``proxy-ssl-name`` (ingress-nginx #4928: 502 "does not match 'upstream_balancer'");
- ``http2``: nginx 1.22 takes it as a ``listen`` parameter (the template's ``http2 on;`` needs nginx >= 1.25.1);
- ``error_log`` at ``info`` (the controller's default is ``notice``), because nginx logs client-certificate
  verify failures only at ``info``;
- ssl-passthrough: the controller's Go TCP proxy routes by SNI; here an nginx ``stream {}`` with ``ssl_preread`` does
  (Debian: ``apt-get install libnginx-mod-stream``);
- no ``Server`` header: the controller's nginx has the headers-more module built in and renders
  ``more_clear_headers Server`` (nginx.tmpl 338-341); here the dynamic module is loaded (Debian:
  ``apt-get install libnginx-mod-http-headers-more-filter``) — without it the header stays and the conf says so.

Everything the process needs is under ``workdir`` (the nginx prefix), so nginx runs without root. Every file is written
to a temp file and renamed into place, the PEM files first and nginx.conf last, so re-rendering into the same workdir
and sending SIGHUP (:func:`harness.runtime.nginx.reload_nginx`) is a hot reload.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import grp
import os
import pwd
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.errors import LaneRefused, UsageError
from harness.model.controller import ControllerSettings
from harness.model.topology import Topology
from harness.model.wire import header_name
from harness.pki.certset import CertSet
from harness.render.nginx_ingress import LocationPlan, ProxySSL, ServerPlan, plan_servers, wants_passthrough

__all__ = ["HEADERS_MORE_INSTALL_HINT", "STREAM_INSTALL_HINT", "HeadersMore", "NginxConfig", "NginxLane", "Passthrough",
           "render_nginx", "uses_passthrough"]

#: the controller's nginx (1.27.1, images/nginx/rootfs/build.sh:21) offers TLS 1.0-1.3 upstream when no
#: proxy_ssl_protocols is rendered (ngx_http_proxy_module.c@release-1.27.1 3736-3739); nginx 1.22's compiled-in
#: default has no TLSv1.3 (@release-1.22.1 3726-3728), so the controller's default is written out here
UPSTREAM_PROTOCOLS = "TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"
#: the controller's one upstream name (nginx.tmpl); a lane's balancer is this name with the lane's suffix
BALANCER = "upstream_balancer"
#: the controller's default certificate (internal/net/ssl/ssl.go getFakeHostSSLCert), served for unknown SNI
FAKE_CERT_CN = "Kubernetes Ingress Controller Fake Certificate"
STREAM_INSTALL_HINT = "install the nginx stream module: `apt-get install libnginx-mod-stream` (Debian/Ubuntu)"
HEADERS_MORE_INSTALL_HINT = ("install the headers-more module: `apt-get install libnginx-mod-http-headers-more-filter` "
                             "(Debian/Ubuntu)")


@dataclass(frozen=True)
class HeadersMore:
    """The headers-more module, which ``more_clear_headers Server`` needs: its ``load_module`` argument, or None when
    nginx has it built in (as the controller's nginx does: images/nginx/rootfs/build.sh)."""

    module: str | None


@dataclass(frozen=True)
class Passthrough:
    """What ssl-passthrough needs besides the model: the stream module's ``load_module`` argument (None when nginx
    has it built in) and the port the TLS-terminating servers listen on behind the SNI router."""

    stream_module: str | None
    internal_port: int


def uses_passthrough(topology: Topology) -> bool:
    """True when an Ingress of the topology turns ssl-passthrough on (a value the controller refuses is not: the
    render then refuses the Ingress with the reason)."""
    try:
        return any(wants_passthrough(ing) for ing in topology.ingress.ingresses)
    except UsageError:
        return False


@dataclass(frozen=True)
class NginxLane:
    """One more path through the same nginx (issue 21): the Ingresses of ``topology`` served on ``listen``, proxied
    to the pod at ``pod``."""

    topology: Topology
    certs: CertSet
    listen: tuple[str, int]
    pod: tuple[str, int]
    #: where the lane's TLS servers listen behind its SNI router when an Ingress of it uses ssl-passthrough
    internal_port: int | None = None


@dataclass(frozen=True)
class NginxConfig:
    """A rendered ingress stand-in: the files nginx needs, all under ``prefix``."""

    conf_path: Path
    prefix: Path
    pid_path: Path
    error_log: Path
    listen_port: int

    @property
    def access_log(self) -> Path:
        """One line per request in ingress-nginx's default ``log-format-upstream`` ($upstream_addr and
        $upstream_status are ``-`` when the ingress answered itself)."""
        return self.prefix / "logs" / "access.log"

    def argv(self, nginx: Path) -> list[str]:
        """Run in the foreground (master + one worker), so the process that starts it owns it."""
        return [str(nginx), "-p", f"{self.prefix}/", "-c", str(self.conf_path), "-g", "daemon off;"]

    def test_argv(self, nginx: Path) -> list[str]:
        """``nginx -t``: parse the config and load every certificate, without serving."""
        return [str(nginx), "-t", "-p", f"{self.prefix}/", "-c", str(self.conf_path)]


# ---------------------------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------------------------
def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temp file beside ``path`` (created with ``mode``), then rename it over ``path``: a reload
    reads the old file or the new one, never half of one. No fsync: the files live in a run's work directory, which
    is gone after the run — surviving a power cut is not their job, and 300 fsyncs cost a chain with lanes 0.1 s."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fake_certificate(ssl_dir: Path) -> Path:
    """The controller's default certificate (self-signed, CN "Kubernetes Ingress Controller Fake Certificate",
    O "Acme Co"), made once per workdir. ECDSA P-256 here (the controller uses RSA 2048): only its identity matters."""
    path = ssl_dir / "default-fake-certificate.pem"
    if path.is_file():
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CERT_CN)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_atomic(path, pem, 0o600)
    return path


# ---------------------------------------------------------------------------------------------------------------
# the stream module (ssl-passthrough)
# ---------------------------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------------------------------
def _q(value: str) -> str:
    """Go's ``%q`` for the template's ``quote`` (enough for the ASCII values validators let through)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


#: the ingress hop's trace entry (harness/model/wire.py). nginx 1.22 has only a SHA-1 client fingerprint
#: ($ssl_client_fingerprint) and no hash function, so peer_sha256 stays empty: the pod computes it from ssl-client-cert.
#: ``stripped`` names the ingress's own trace header when a caller sent one (the ingress replaces it): its evidence
#: that a forged header reached it, so a case can tell which hop stopped stripping.
TRACE_VALUE = ("tls=$ssl_protocol; cipher=$ssl_cipher; sni=$ssl_server_name; peer_sha256=; "
               "peer_subject=$ssl_client_s_dn; peer_issuer=$ssl_client_i_dn; verify=$ssl_client_verify; "
               "stripped=$mtls_trace_inbound; resumed=$ssl_session_reused")
#: ingress-nginx's default ``log-format-upstream`` (its configmap docs), the format its access log lines have
LOG_FORMAT_UPSTREAM = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
                       '"$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] '
                       '[$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length '
                       '$upstream_response_time $upstream_status $req_id')


def _proxy_ssl_server_lines(p: ProxySSL | None) -> list[str]:
    """nginx.tmpl, server block: all of it only when the Secret had a ca.crt (ProxySSL.CAFileName)."""
    lines: list[str] = []
    if p is not None and p.ca_file is not None:
        lines += _proxy_ssl_verify_lines(p)
        if p.name:
            lines += [f"proxy_ssl_name                          {p.name};",
                      f"proxy_ssl_server_name                   {p.server_name};"]
    if p is not None and p.pem_file is not None:
        lines += [f"proxy_ssl_certificate                   {p.pem_file};",
                  f"proxy_ssl_certificate_key               {p.pem_file};"]
    return lines


def _proxy_ssl_verify_lines(p: ProxySSL) -> list[str]:
    """The directives the template renders in both the server and the location block when ca.crt was usable."""
    return [f"proxy_ssl_trusted_certificate           {p.ca_file};",
            f"proxy_ssl_ciphers                       {p.ciphers};",
            f"proxy_ssl_protocols                     {p.protocols};",
            f"proxy_ssl_verify                        {p.verify};",
            f"proxy_ssl_verify_depth                  {p.verify_depth};"]


def _proxy_ssl_location_lines(p: ProxySSL | None) -> list[str]:
    """nginx.tmpl, location block: name and server_name are rendered whenever the Secret was usable."""
    if p is None:
        return []
    lines: list[str] = []
    if p.ca_file is not None:
        lines += _proxy_ssl_verify_lines(p)
    if p.name:
        lines.append(f"proxy_ssl_name                          {p.name};")
    if p.server_name:
        lines.append(f"proxy_ssl_server_name                   {p.server_name};")
    if p.pem_file is not None:
        lines += [f"proxy_ssl_certificate                   {p.pem_file};",
                  f"proxy_ssl_certificate_key               {p.pem_file};"]
    return lines


def _location(server: ServerPlan, loc: LocationPlan, https_upstreams: set[str], balancer: str) -> list[str]:
    where = f"= {loc.path}" if loc.exact else loc.path
    if loc.default_backend:  # the controller's default backend (no --default-backend-service): 404
        return [f"location {where} {{", "    # the host's root: ingress-nginx's default backend", "    return 404;",
                "}"]
    if loc.backend_protocol not in ("HTTP", "HTTPS", "AUTO_HTTP"):
        raise UsageError(
            f"Ingress {loc.namespace}/{loc.ingress}: backend-protocol {loc.backend_protocol} is not supported by the "
            "local ingress stand-in (the echo pod speaks HTTPS) — use HTTPS or HTTP"
        )
    scheme = {"HTTP": "http://", "HTTPS": "https://", "AUTO_HTTP": "$scheme://"}[loc.backend_protocol]
    if loc.upstream_name in https_upstreams:  # an SSLPassthrough upstream: buildProxyPass forces https://
        scheme = "https://"
    body = [
        f'set $namespace      {_q(loc.namespace)};',
        f'set $ingress_name   {_q(loc.ingress)};',
        f'set $service_name   {_q(loc.service)};',
        f'set $service_port   {_q(str(loc.service_port))};',
        f'set $location_path  {_q(loc.path)};',
        "",
        "set $proxy_upstream_name " + _q(loc.upstream_name) + ";",
        'set $proxy_alternative_upstream_name "";',
        "set $proxy_host          $proxy_upstream_name;",
        "set $pass_access_scheme  $scheme;",
        "set $pass_server_port    $server_port;",
        "set $best_http_host      $http_host;",
        "set $pass_port           $pass_server_port;",
        "",
        "proxy_set_header Host                   $best_http_host;",
    ]
    auth = server.auth
    if auth is not None and auth.ca_file is not None:
        body.append("# Pass the extracted client certificate to the backend")
        if auth.pass_certificate:
            body.append("proxy_set_header ssl-client-cert        $ssl_client_escaped_cert;")
        body += ["proxy_set_header ssl-client-verify      $ssl_client_verify;",
                 "proxy_set_header ssl-client-subject-dn  $ssl_client_s_dn;",
                 "proxy_set_header ssl-client-issuer-dn   $ssl_client_i_dn;"]
    body += [
        "proxy_set_header Upgrade                $http_upgrade;",
        "proxy_set_header Connection             $connection_upgrade;",
        "proxy_set_header X-Request-ID           $req_id;",
        "proxy_set_header X-Real-IP              $remote_addr;",
        "proxy_set_header X-Forwarded-For        $remote_addr;",
        "proxy_set_header X-Forwarded-Host       $best_http_host;",
        "proxy_set_header X-Forwarded-Port       $pass_port;",
        "proxy_set_header X-Forwarded-Proto      $pass_access_scheme;",
        "proxy_set_header X-Forwarded-Scheme     $pass_access_scheme;",
        "proxy_set_header X-Scheme               $pass_access_scheme;",
        'proxy_set_header Proxy                  "";',
        "# mtls-harness hop trace (not part of ingress-nginx); earlier hops' trace headers pass through untouched",
        f'proxy_set_header {header_name("ingress")}   "{TRACE_VALUE}";',
        "",
        "proxy_connect_timeout                   5s;",
        "proxy_send_timeout                      60s;",
        "proxy_read_timeout                      60s;",
        "proxy_http_version                      1.1;",
        "proxy_next_upstream                     error timeout;",
        "proxy_next_upstream_timeout             0;",
        "proxy_next_upstream_tries               3;",
        "",
    ]
    if loc.denied is None:
        body += [f"proxy_pass {scheme}{balancer};", "proxy_redirect                          off;"]
        if balancer != BALANCER and not (loc.proxy_ssl and loc.proxy_ssl.name) and not (
                server.proxy_ssl and server.proxy_ssl.name):
            # a lane's balancer has its own name (its own keep-alive pool); the name a backend cert is checked
            # against stays the controller's (ingress-nginx #4928), as proxy_pass would make it
            body.append(f"proxy_ssl_name                          {BALANCER};")
    else:
        body += [f"# Location denied. Reason: {_q(loc.denied)}", "return 503;"]
    body += _proxy_ssl_location_lines(loc.proxy_ssl)
    return [f"location {where} {{", *("    " + b if b else "" for b in body), "}"]


def _server(server: ServerPlan, listen: str, fake_cert: Path, ctl: ControllerSettings, *,
            balancer: str = BALANCER, session: Sequence[str] = ()) -> list[str]:
    cert = server.tls_pem or fake_cert
    http2 = " http2" if ctl.flag("use-http2") else ""
    lines = [
        f"server_name {_q(server.host)} ;",
        "# http2: a listen parameter in nginx 1.22 (nginx.tmpl's `http2 on;` needs nginx >= 1.25.1)",
        f"listen {listen} ssl{http2};",
        "",
        'set $proxy_upstream_name "-";',
        'set $proxy_alternative_upstream_name "";',
        "",
        *session,
    ]
    if not server.cert_covers_host:
        lines += ["# the TLS Secret's certificate does not cover this host: the controller serves its fake",
                  "# certificate (controller.go 1465-1495)", ""]
    if server.tls_pem is not None and ctl.flag("hsts"):
        # lua_ingress.lua 178-188: HSTS only over HTTPS for a host with a configured (non-fake) certificate
        hsts = f"max-age={ctl.get('hsts-max-age')}"
        hsts += "; includeSubDomains" if ctl.flag("hsts-include-subdomains") else ""
        hsts += "; preload" if ctl.flag("hsts-preload") else ""
        lines += [f'add_header Strict-Transport-Security "{hsts}" always;', ""]
    auth = server.auth
    if auth is not None and auth.match_cn:
        lines += [f"if ( $ssl_client_s_dn !~ {_q(auth.match_cn)} ) {{",
                  '    return 403 "client certificate unauthorized";', "}", ""]
    lines += ["# ingress-nginx: ssl_certificate_by_lua_file serves the host's Secret; a static file here",
              f"ssl_certificate     {cert};", f"ssl_certificate_key {cert};", ""]
    if server.auth_error:
        lines += [f"# {server.auth_error}", "return 403;"]
    elif auth is not None and auth.ca_file is not None:
        lines += [f"ssl_client_certificate                  {auth.ca_file};",
                  f"ssl_verify_client                       {auth.verify_client};",
                  f"ssl_verify_depth                        {auth.verify_depth};"]
        if auth.crl_file is not None:
            lines.append(f"ssl_crl                                 {auth.crl_file};")
        if auth.error_page:
            lines.append(f"error_page 495 496 = {auth.error_page};")
    if not ctl.flag("proxy-ssl-location-only"):  # controller.go 777-788
        lines += _proxy_ssl_server_lines(server.proxy_ssl)
    lines.append("")
    root = next((loc for loc in server.locations if loc.path == "/" and not loc.exact), None)
    https_upstreams = ({root.upstream_name} if root is not None and not root.default_backend
                       and server.passthrough_upstream_https and not server.passthrough else set())
    for loc in server.locations:
        lines += _location(server, loc, https_upstreams, balancer)
    return [f"## start server {server.host}", "server {", *("    " + x if x else "" for x in lines), "}",
            f"## end server {server.host}", ""]


def _lane_block(servers: list[ServerPlan], *, https_listen: str, pod: str, fake_cert: Path, ctl: ControllerSettings,
                keepalive: list[str], lane: int = 0) -> list[str]:
    """One path through the ingress: its balancer towards the pod, its catch-all server and its hosts' servers, all
    on ``https_listen``. Lane 0 is the chain itself; a lane ``i`` (a variant) gets its own balancer
    (``upstream_balancer_l<i>``: its own keep-alive pool) and its own TLS session cache zone, so no TLS state passes
    between variants."""
    balancer = BALANCER if lane == 0 else f"{BALANCER}_l{lane}"
    session = ([f"ssl_session_cache shared:SSL_l{lane}:{ctl.get('ssl-session-cache-size')};", ""]
               if lane and ctl.flag("ssl-session-cache") else [])
    http2 = " http2" if ctl.flag("use-http2") else ""
    out = [
        "# ingress-nginx balances in Lua behind this one name and retries on the balancer's next pick",
        "# (balancer.lua 354 set_more_tries); here the pod's address three times (= proxy_next_upstream_tries)",
        "# with max_fails=0, so a rejected pod cert is tried three times and never marks the pod down",
        f"upstream {balancer} {{",
        *(f"    server {pod} max_fails=0;" for _ in range(3)),
        *keepalive,
        "}",
        "",
        "# the catch-all server: unknown SNI gets the default (fake) certificate and a 404",
        "server {",
        '    server_name "_" ;',
        f"    listen {https_listen} default_server ssl{http2};",
        *(["    ssl_reject_handshake on;"] if ctl.flag("ssl-reject-handshake") else []),
        *("    " + x if x else "" for x in session),
        '    set $proxy_upstream_name "-";',
        '    set $proxy_alternative_upstream_name "";',
        "    location / {",
        "        return 404;",
        "    }",
        "}",
        "",
    ]
    for server in servers:
        out += _server(server, https_listen, fake_cert, ctl, balancer=balancer, session=session)
    return out


def _conf(
    *, prefix: Path, pid: Path, error_log: Path, servers: list[ServerPlan], https_listen: str, public: str,
    pod: str, fake_cert: Path, stream_module: str | None, passthrough: dict[str, str], ctl: ControllerSettings,
    headers_more: HeadersMore | None, lanes: Sequence[tuple[list[ServerPlan], str, str]] = (),
    routers: Sequence[tuple[int, tuple[str, str, dict[str, str]]]] = (),
) -> str:
    head = ["# Rendered by mtls-harness (harness/render/nginx.py) from Ingress annotations, after ingress-nginx's",
            "# nginx.tmpl. Do not edit: re-render and reload.", ""]
    if os.geteuid() == 0:  # as root, workers run as the same user (nobody could not read the 0700 workdir)
        head.append(f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};")
    if stream_module:
        head.append(f"load_module {stream_module};")
    if headers_more is not None and headers_more.module:
        head.append(f"load_module {headers_more.module};")
    head += [
        "worker_processes 1;",
        f"pid {pid};",
        "# info, not the controller's notice: nginx logs client-certificate verify failures only at info",
        f"error_log {error_log} info;",
        "",
        "events {",
        "    multi_accept        on;",
        "    worker_connections  16384;",
        "}",
        "",
    ]
    tmp = prefix / "tmp"
    keepalive = int(ctl.get("upstream-keepalive-connections"))
    keepalive_lines = [  # nginx.tmpl 534-539
        f"    keepalive {keepalive};",
        f"    keepalive_time {ctl.get('upstream-keepalive-time')};",
        f"    keepalive_timeout  {ctl.get('upstream-keepalive-timeout')}s;",
        f"    keepalive_requests {ctl.get('upstream-keepalive-requests')};",
    ] if keepalive > 0 else []
    session = ([f"ssl_session_cache shared:SSL:{ctl.get('ssl-session-cache-size')};",  # nginx.tmpl 461-464
                f"ssl_session_timeout {ctl.get('ssl-session-timeout')};"] if ctl.flag("ssl-session-cache") else [])
    http = [
        *(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"log_format upstreaminfo '{LOG_FORMAT_UPSTREAM}';",
        f"access_log {prefix / 'logs' / 'access.log'} upstreaminfo;",
        # nginx.tmpl 338-341 (server-tokens false, config.go 828): `server_tokens off` alone still sends
        # `Server: nginx`; more_clear_headers removes it from every answer, the ingress's own pages included
        "server_tokens off;",
        *(["more_clear_headers Server;"] if headers_more is not None else
          ["# NOT the controller: nginx has no headers-more module here, so `Server: nginx` is still sent"]),
        f"keepalive_timeout {ctl.get('keep-alive')}s;",  # nginx.tmpl 263
        "",
        "map $http_upgrade $connection_upgrade {",
        "    default          upgrade;",
        # nginx.tmpl 380-388: with upstream keepalive the upstream connection is kept ('' instead of close)
        "    ''               " + ("''" if keepalive > 0 else "close") + ";",
        "}",
        "# mtls-harness hop trace (not part of ingress-nginx): did a caller send the ingress's own trace header?",
        f"map $http_{header_name('ingress').replace('-', '_')} $mtls_trace_inbound {{",
        '    ""        "";',
        '    default   "ingress";',
        "}",
        "map $http_x_request_id $req_id {",
        "    default   $http_x_request_id;",
        '    ""        $request_id;',
        "}",
        "",
        "server_name_in_redirect off;",
        "port_in_redirect        off;",
        "",
        f"ssl_protocols {ctl.get('ssl-protocols')};",
        "ssl_early_data off;",
        *session,
        f"ssl_session_tickets {'on' if ctl.flag('ssl-session-tickets') else 'off'};",
        "ssl_buffer_size 4k;",
        f"ssl_ciphers '{ctl.get('ssl-ciphers')}';",
        "ssl_prefer_server_ciphers on;",
        "ssl_ecdh_curve auto;",
        f"ssl_certificate     {fake_cert};",
        f"ssl_certificate_key {fake_cert};",
        "",
        "# nginx.tmpl 504 renders `on`, but the controller's Lua balancer never saves or sets an upstream session",
        "# (lua-nginx-module ngx_http_lua_balancer.c@v0.10.28 830-855; openresty/lua-resty-core#67): no resumption",
        "proxy_ssl_session_reuse off;",
        "# the upstream protocols of the controller's nginx 1.27.1 when no proxy-ssl-secret renders its own",
        f"proxy_ssl_protocols {UPSTREAM_PROTOCOLS};",
        "",
    ]
    http += _lane_block(servers, https_listen=https_listen, pod=pod, fake_cert=fake_cert, ctl=ctl,
                        keepalive=keepalive_lines)
    for i, (lane_servers, lane_listen, lane_pod) in enumerate(lanes, 1):
        http += [f"# ---- lane {i} (a variant of the chain on its own port: mtls-harness, issue 21) ----", ""]
        try:
            http += _lane_block(lane_servers, https_listen=lane_listen, pod=lane_pod, fake_cert=fake_cert, ctl=ctl,
                                keepalive=keepalive_lines, lane=i)
        except UsageError as exc:
            raise LaneRefused(i, f"render_nginx lane {i}: {exc}") from None
    out = [*head, "http {", *("    " + x if x else "" for x in http), "}", ""]
    # one SNI router per path that has a passthrough host: the chain's own, then each lane's (its own port)
    paths = ([(public, https_listen, passthrough, "")] if passthrough else []) + [
        (lane_public, lane_https, lane_routes, f"_l{i}") for i, (lane_public, lane_https, lane_routes) in routers]
    if paths:
        stream = [
            "# ingress-nginx --enable-ssl-passthrough: its Go TCP proxy (pkg/tcpproxy) reads the SNI and pipes the",
            "# connection to the passthrough host's backend untouched; everything else goes to the TLS servers above",
        ]
        for path_public, path_https, routes, suffix in paths:
            # pkg/tcpproxy/tcp.go 44-56: the SNI must equal the host exactly (no wildcard, no case folding); nginx's
            # map compares plain strings case-insensitively, so each host is a case-sensitive regex
            stream += [
                f"map $ssl_preread_server_name $mtls_passthrough_backend{suffix} {{",
                *(f'    "~^{re.escape(host)}$" {addr};' for host, addr in routes.items()),
                f"    default {path_https};",
                "}",
                "server {",
                f"    listen {path_public};",
                "    ssl_preread on;",
                f"    proxy_pass $mtls_passthrough_backend{suffix};",
                "}",
            ]
        out += ["stream {", *("    " + x if x else "" for x in stream), "}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------------------
def render_nginx(
    topology: Topology, certs: CertSet, *, listen: tuple[str, int], pod: tuple[str, int], workdir: Path,
    passthrough: Passthrough | None = None, headers_more: HeadersMore | None = None,
    lanes: Sequence[NginxLane] = (),
) -> NginxConfig:
    """Write the ingress Secrets' PEM files and nginx.conf under ``workdir``, as ingress-nginx would render them.

    ``listen`` is where the ingress accepts TLS; ``pod`` is where every Ingress backend (the echo pod) listens.
    Raises :class:`~harness.errors.UsageError` for an Ingress ingress-nginx would reject outright (an annotation its
    validator refuses). An Ingress with ssl-passthrough needs ``passthrough`` (the stream module and the internal
    port, found by :func:`harness.runtime.nginx.passthrough_for`); :func:`harness.runtime.nginx.render_ingress` does
    both. ``headers_more`` (the module, found by :func:`harness.runtime.nginx.headers_more_module`) removes the
    ``Server`` header as the controller does; without it ``Server: nginx`` stays and nginx.conf says so.

    ``lanes``: more paths through the same nginx, each the Ingresses of another topology (a variant) on its own port
    towards its own pod address (:class:`NginxLane`). A lane must have the home topology's controller settings (its
    ConfigMap and flags are the process's) and no ssl-passthrough (the stream router is the process's too): one
    UsageError names the lane that does not.
    """
    prefix = Path(workdir).resolve()
    ssl_dir, run_dir, log_dir = prefix / "ssl", prefix / "run", prefix / "logs"
    for d, mode in ((prefix, 0o755), (ssl_dir, 0o700), (run_dir, 0o755), (log_dir, 0o755), (prefix / "tmp", 0o755)):
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    hop = topology.ingress
    servers = plan_servers(hop, certs, ssl_dir, _write_atomic,
                           allow_cross_namespace=hop.allow_cross_namespace_resources)
    fake_cert = _fake_certificate(ssl_dir)
    lane_blocks: list[tuple[list[ServerPlan], str, str]] = []
    routers: list[tuple[int, tuple[str, str, dict[str, str]]]] = []
    for i, lane in enumerate(lanes, 1):
        if lane.topology.ingress.controller != hop.controller:
            raise LaneRefused(i, f"render_nginx: lane {i} has other controller settings (ConfigMap / flags) than the "
                             "home chain — give it a process of its own")
        lane_ssl = prefix / "lanes" / f"l{i}" / "ssl"
        lane_ssl.mkdir(parents=True, exist_ok=True)
        lane_ssl.chmod(0o700)
        try:
            plans = plan_servers(lane.topology.ingress, lane.certs, lane_ssl, _write_atomic,
                                 allow_cross_namespace=lane.topology.ingress.allow_cross_namespace_resources)
        except (UsageError, KeyError) as exc:
            raise LaneRefused(i, f"render_nginx lane {i}: {exc}") from None
        lane_public, lane_https = _addr(*lane.listen), _addr(*lane.listen)
        routes = {p.host: _addr(*lane.pod) for p in plans if p.passthrough}
        if routes:  # the lane's own SNI router on its port, its TLS servers behind it on its internal port
            if passthrough is None or lane.internal_port is None:
                raise LaneRefused(i, f"render_nginx: lane {i} uses ssl-passthrough, which needs the stream module "
                                     "(passthrough=) and the lane's internal_port")
            lane_https = _addr(lane.listen[0], lane.internal_port)
            routers.append((i, (lane_public, lane_https, routes)))
        lane_blocks.append((plans, lane_https, _addr(*lane.pod)))
    public = _addr(*listen)
    passthrough_to = {s.host: _addr(*pod) for s in servers if s.passthrough}
    stream_module: str | None = None
    https_listen = public
    if passthrough_to:
        if passthrough is None:
            raise UsageError("an Ingress asks for ssl-passthrough, but render_nginx got no passthrough= (the stream "
                             "module and an internal port) — render through harness.runtime.nginx.render_ingress")
        https_listen = _addr(listen[0], passthrough.internal_port)
    if (passthrough_to or routers) and passthrough is not None:
        stream_module = passthrough.stream_module
    config = NginxConfig(
        conf_path=prefix / "nginx.conf",
        prefix=prefix,
        pid_path=run_dir / "nginx.pid",
        error_log=log_dir / "error.log",
        listen_port=listen[1],
    )
    text = _conf(prefix=prefix, pid=config.pid_path, error_log=config.error_log, servers=servers,
                 https_listen=https_listen, public=public, pod=_addr(*pod), fake_cert=fake_cert,
                 stream_module=stream_module, passthrough=passthrough_to, ctl=hop.controller,
                 headers_more=headers_more, lanes=lane_blocks, routers=routers)
    _write_atomic(config.conf_path, text.encode())
    return config
