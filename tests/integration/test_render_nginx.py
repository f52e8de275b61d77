"""The rendered nginx.conf, parsed: each ingress-nginx annotation → the directive the controller renders

The tests that start processes (nginx, Envoy, Docker, a subprocess); the others are in
tests/unit/test_render_nginx.py."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from harness.errors import ToolMissingError
from harness.model.topology import K8sSecret, Topology, default_topology
from harness.pki.certset import CertSet
from tests.unit.test_render_nginx import HOST, RenderFn, base, certs, render, with_secrets


# ---------------------------------------------------------------------------------------------------------------
# process, listener, global TLS
# ---------------------------------------------------------------------------------------------------------------
def test_nginx_runs_in_the_foreground_from_its_workdir(render: RenderFn, tmp_path: Path) -> None:
    r = render(default_topology())
    nginx = Path("/usr/sbin/nginx")
    argv = r.config.argv(nginx)
    assert argv[0] == str(nginx)
    assert argv[argv.index("-c") + 1] == str(r.config.conf_path)
    assert argv[argv.index("-g") + 1] == "daemon off;"
    assert "-t" in r.config.test_argv(nginx)
    prefix = (tmp_path / "ingress").resolve()
    assert r.config.prefix == prefix
    assert r.conf.args_of("pid") == [str(r.config.pid_path)]
    assert r.config.pid_path.is_relative_to(prefix)
    assert r.conf.args_of("worker_processes") == ["1"]
    for temp in ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path",
                 "scgi_temp_path"):
        assert Path(r.http.args_of(temp)[0]).is_relative_to(prefix)


def test_error_log_is_at_info_where_client_cert_failures_are_logged(render: RenderFn) -> None:
    r = render(default_topology())
    assert r.conf.args_of("error_log") == [str(r.config.error_log), "info"]


def test_tls_1_2_and_1_3_are_enabled_as_ingress_nginx_default_ssl_protocols(render: RenderFn) -> None:
    r = render(default_topology())
    assert r.http.args_of("ssl_protocols") == ["TLSv1.2", "TLSv1.3"]


def test_host_server_listens_on_loopback_with_ssl_and_http2(render: RenderFn) -> None:
    r = render(default_topology())
    assert r.server().args_of("listen") == ["127.0.0.1:18443", "ssl", "http2"]
    assert r.config.listen_port == 18443


def test_host_serves_the_chain_and_key_of_its_ingress_tls_secret(render: RenderFn, certs: CertSet) -> None:
    r = render(default_topology())
    cert_file = Path(r.server().args_of("ssl_certificate")[0])
    assert r.server().args_of("ssl_certificate_key") == [str(cert_file)]
    leaf = certs.leaf("ingress-server")
    served = x509.load_pem_x509_certificates(cert_file.read_bytes())
    assert served == x509.load_pem_x509_certificates(leaf.chain.read_bytes())
    assert leaf.key.read_bytes().strip() in cert_file.read_bytes()


def test_host_without_a_usable_tls_secret_gets_the_fake_certificate(render: RenderFn, base: Topology) -> None:
    r = render(with_secrets(base, drop="ingress-tls"))
    served = x509.load_pem_x509_certificates(Path(r.server().args_of("ssl_certificate")[0]).read_bytes())[0]
    assert "CN=Kubernetes Ingress Controller Fake Certificate" in served.subject.rfc4514_string()


def test_private_keys_are_0600_and_never_inside_nginx_conf(render: RenderFn, certs: CertSet) -> None:
    r = render(default_topology())
    ssl_dir = r.config.prefix / "ssl"
    assert stat.S_IMODE(ssl_dir.stat().st_mode) == 0o700
    for f in ssl_dir.iterdir():
        if b"PRIVATE KEY" in f.read_bytes():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert "PRIVATE KEY" not in r.text
    assert certs.leaf("ingress-server").key.read_text().splitlines()[1] not in r.text


def test_re_rendering_replaces_files_atomically_and_leaves_no_temp_files(render: RenderFn) -> None:
    first = render(default_topology())
    inode = first.config.conf_path.stat().st_ino
    second = render(default_topology().with_ingress_annotations(auth_tls_verify_client="optional"))
    assert second.config.conf_path.stat().st_ino != inode  # a new file renamed into place, not rewritten
    assert second.server().args_of("ssl_verify_client") == ["optional"]
    leftovers = [p.name for p in second.config.prefix.rglob(".*") if p.is_file()]
    assert leftovers == []


# ---------------------------------------------------------------------------------------------------------------
# auth-tls-*
# ---------------------------------------------------------------------------------------------------------------
def test_auth_tls_secret_alone_renders_verify_on_and_depth_1(render: RenderFn, base: Topology, certs: CertSet) -> None:
    # e2e authtls.go "should set sslClientCertificate, sslVerifyClient and sslVerifyDepth with auth-tls-secret"
    variant = base.with_ingress_annotations(auth_tls_verify_client=None, auth_tls_verify_depth=None)
    server = render(variant).server()
    assert server.args_of("ssl_verify_client") == ["on"]
    assert server.args_of("ssl_verify_depth") == ["1"]
    ca_file = Path(server.args_of("ssl_client_certificate")[0])
    # a CA-only Secret is stored as ca-<ns>-<name>.pem (internal/net/ssl/ssl.go ConfigureCACert) holding ca.crt
    assert ca_file.name == "ca-default-apim-client-ca.pem"
    assert ca_file.read_bytes() == certs.trust_bundle("apim-client-ca").read_bytes()


def test_a_ca_secret_with_a_keypair_is_stored_as_ns_name_pem(render: RenderFn, base: Topology, certs: CertSet) -> None:
    # e2e authtls.go assertSslClientCertificateConfig:
    #   ssl_client_certificate /etc/ingress-controller/ssl/<ns>-<name>.pem
    variant = with_secrets(base, K8sSecret("apim-client-ca", tls="ingress-server", ca=("apim-client-ca",)))
    ca_file = Path(render(variant).server().args_of("ssl_client_certificate")[0])
    assert ca_file.name == "default-apim-client-ca.pem"
    data = ca_file.read_bytes()
    assert certs.trust_bundle("apim-client-ca").read_bytes().strip() in data
    assert certs.leaf("ingress-server").cert.read_bytes().strip() in data
    assert stat.S_IMODE(ca_file.stat().st_mode) == 0o600


@pytest.mark.parametrize(("value", "rendered"), [
    ("on", "on"), ("off", "off"), ("optional", "optional"), ("optional_no_ca", "optional_no_ca"),
    ("bogus", "on"), ("ON", "on"), ("optional-no-ca", "on"),
])
def test_verify_client_values_and_invalid_ones_falling_back_to_on(render: RenderFn, base: Topology, value: str,
                                                                    rendered: str) -> None:
    server = render(base.with_ingress_annotations(auth_tls_verify_client=value)).server()
    assert server.args_of("ssl_verify_client") == [rendered]


@pytest.mark.parametrize(("value", "rendered"), [("2", "2"), ("5", "5"), ("0", "1"), ("abc", "1"), ("1.5", "1")])
def test_verify_depth_values_with_zero_and_invalid_falling_back_to_1(render: RenderFn, base: Topology, value: str,
                                                                     rendered: str) -> None:
    server = render(base.with_ingress_annotations(auth_tls_verify_depth=value)).server()
    assert server.args_of("ssl_verify_depth") == [rendered]


def test_error_page_renders_error_page_495_496(render: RenderFn, base: Topology) -> None:
    url = "http://errors.contoso.example/cert"
    server = render(base.with_ingress_annotations(auth_tls_error_page=url)).server()
    assert server.args_of("error_page") == ["495", "496", "=", url]


def test_pass_certificate_to_upstream_adds_the_escaped_cert_header(render: RenderFn, base: Topology) -> None:
    on = render(base.with_ingress_annotations(auth_tls_pass_certificate_to_upstream="true")).proxy_headers()
    assert on["ssl-client-cert"] == "$ssl_client_escaped_cert"
    off = render(base.with_ingress_annotations(auth_tls_pass_certificate_to_upstream="false")).proxy_headers()
    assert "ssl-client-cert" not in off


def test_a_ca_always_sends_verify_subject_and_issuer_headers(render: RenderFn, base: Topology) -> None:
    headers = render(base.with_ingress_annotations(auth_tls_pass_certificate_to_upstream=None)).proxy_headers()
    assert headers["ssl-client-verify"] == "$ssl_client_verify"
    assert headers["ssl-client-subject-dn"] == "$ssl_client_s_dn"
    assert headers["ssl-client-issuer-dn"] == "$ssl_client_i_dn"
    assert "ssl-client-cert" not in headers


def test_without_auth_tls_secret_there_is_no_client_cert_config_at_all(render: RenderFn, base: Topology) -> None:
    for variant in (base.with_ingress_annotations(auth_tls_secret=None),
                    base.with_ingress_annotations(auth_tls_secret="")):  # an empty value counts as absent
        r = render(variant)
        names = {d.name for d in r.server().walk()}
        assert not names & {"ssl_client_certificate", "ssl_verify_client", "ssl_verify_depth", "return"}
        assert not {h for h in r.proxy_headers() if h.startswith("ssl-client-")}


def test_match_cn_renders_an_unanchored_if_on_the_subject_dn_answering_403(render: RenderFn, base: Topology) -> None:
    server = render(base.with_ingress_annotations(auth_tls_match_cn="CN=(apim|other)")).server()
    cond = server.one("if")
    assert cond.args == ["(", "$ssl_client_s_dn", "!~", "CN=(apim|other)", ")"]
    assert cond.args_of("return") == ["403", "client certificate unauthorized"]


@pytest.mark.parametrize("case", ["missing", "malformed", "no-namespace", "cross-namespace", "neither-keypair-nor-ca"])
def test_an_unusable_auth_tls_secret_fails_the_host_closed(render: RenderFn, base: Topology, case: str) -> None:
    if case == "missing":
        variant = base.with_ingress_annotations(auth_tls_secret="default/nope")
    elif case == "malformed":
        variant = with_secrets(base, K8sSecret("apim-client-ca", ca=("apim-client-ca",), malformed_ca=True))
    elif case == "no-namespace":  # k8s.ParseNameNS wants exactly ns/name
        variant = base.with_ingress_annotations(auth_tls_secret="apim-client-ca")
    elif case == "cross-namespace":
        variant = with_secrets(base, K8sSecret("apim-client-ca", namespace="security", ca=("apim-client-ca",)))
        variant = variant.with_ingress_annotations(auth_tls_secret="security/apim-client-ca")
    else:  # a Secret with neither keypair nor ca.crt
        variant = with_secrets(base, K8sSecret("apim-client-ca", crl="apim-client-ca"))
    r = render(variant)
    server = r.server()
    assert [d.args for d in server.all("return")] == [["403"]]
    assert not server.all("ssl_client_certificate")
    assert not server.all("ssl_verify_client")


def test_allow_cross_namespace_resources_accepts_a_ca_secret_from_another_namespace(
    render: RenderFn, base: Topology
) -> None:
    variant = with_secrets(base, K8sSecret("apim-client-ca", namespace="security", ca=("apim-client-ca",)))
    variant = variant.with_ingress_annotations(auth_tls_secret="security/apim-client-ca")
    variant = variant.replace(ingress=dataclasses.replace(variant.ingress, allow_cross_namespace_resources=True))
    server = render(variant).server()
    assert Path(server.args_of("ssl_client_certificate")[0]).name == "ca-security-apim-client-ca.pem"
    assert not server.all("return")


def test_a_ca_secret_without_ca_crt_silently_disables_mtls(render: RenderFn, base: Topology) -> None:
    # controller.go: "Secret %q has no 'ca.crt' key, mutual authentication disabled for Ingress %q"
    server = render(with_secrets(base, K8sSecret("apim-client-ca", tls="ingress-server"))).server()
    assert not server.all("ssl_client_certificate")
    assert not server.all("return")


def test_a_crl_in_the_ca_secret_renders_ssl_crl(render: RenderFn, base: Topology, certs: CertSet) -> None:
    variant = with_secrets(base, K8sSecret("apim-client-ca", ca=("apim-client-ca",), crl="apim-client-ca"))
    crl_file = Path(render(variant).server().args_of("ssl_crl")[0])
    assert crl_file.name == "crl-default-apim-client-ca.pem"  # ssl.go ConfigureCRL
    assert crl_file.read_bytes() == certs.crl("apim-client-ca").read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# backend-protocol and proxy-ssl-*
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "scheme"), [("HTTPS", "https"), ("https", "https"), (None, "http"),
                                               ("bogus", "http")])
def test_backend_protocol_picks_the_scheme_to_upstream_balancer(render: RenderFn, base: Topology, value: str | None,
                                                                 scheme: str) -> None:
    r = render(base.with_ingress_annotations(backend_protocol=value))
    assert r.location().args_of("proxy_pass") == [f"{scheme}://upstream_balancer"]
    upstream = r.http.one("upstream")
    assert upstream.args == ["upstream_balancer"]
    # three entries for the controller's proxy_next_upstream_tries 3 (config.go 868; balancer.lua 354)
    assert [d.args for d in upstream.all("server")] == [["127.0.0.1:19443", "max_fails=0"]] * 3


def test_proxy_ssl_secret_alone_renders_the_proxy_ssl_defaults(render: RenderFn, base: Topology) -> None:
    variant = base.with_ingress_annotations(proxy_ssl_verify=None, proxy_ssl_verify_depth=None, proxy_ssl_name=None,
                                            proxy_ssl_server_name=None, proxy_ssl_protocols=None)
    r = render(variant)
    for block in (r.server(), r.location()):
        pem = Path(block.args_of("proxy_ssl_trusted_certificate")[0])
        assert pem.name == "default-pod-tls-client.pem"
        assert block.args_of("proxy_ssl_certificate") == [str(pem)]
        assert block.args_of("proxy_ssl_certificate_key") == [str(pem)]
        assert block.args_of("proxy_ssl_ciphers") == ["DEFAULT"]
        assert block.args_of("proxy_ssl_protocols") == ["TLSv1.2"]
        assert block.args_of("proxy_ssl_verify") == ["off"]
        assert block.args_of("proxy_ssl_verify_depth") == ["1"]
        assert not block.all("proxy_ssl_name")
    assert r.location().args_of("proxy_ssl_server_name") == ["off"]


def test_proxy_ssl_annotations_render_their_directives(render: RenderFn, base: Topology) -> None:
    variant = base.with_ingress_annotations(proxy_ssl_verify_depth="2", proxy_ssl_ciphers="HIGH:!AES",
                                            proxy_ssl_protocols="TLSv1.3 TLSv1.2")
    loc = render(variant).location()
    assert loc.args_of("proxy_ssl_verify") == ["on"]
    assert loc.args_of("proxy_ssl_verify_depth") == ["2"]
    assert loc.args_of("proxy_ssl_ciphers") == ["HIGH:!AES"]
    assert loc.args_of("proxy_ssl_protocols") == ["TLSv1.2", "TLSv1.3"]  # proxyssl sortProtocols
    assert loc.args_of("proxy_ssl_name") == ["echo.default.svc.cluster.local"]
    assert loc.args_of("proxy_ssl_server_name") == ["on"]


@pytest.mark.parametrize(("annotation", "value", "directive", "default"), [
    ("proxy_ssl_protocols", "SSLv3", "proxy_ssl_protocols", ["TLSv1.2"]),
    ("proxy_ssl_ciphers", "ALL;evil", "proxy_ssl_ciphers", ["DEFAULT"]),
    ("proxy_ssl_verify", "yes", "proxy_ssl_verify", ["off"]),
    ("proxy_ssl_verify_depth", "deep", "proxy_ssl_verify_depth", ["1"]),
    ("proxy_ssl_server_name", "true", "proxy_ssl_server_name", ["off"]),
])
def test_invalid_proxy_ssl_values_fall_back_to_their_defaults(
    render: RenderFn, base: Topology, annotation: str, value: str, directive: str, default: list[str]
) -> None:
    loc = render(base.with_ingress_annotations(**{annotation: value})).location()
    assert loc.args_of(directive) == default


def test_proxy_ssl_verify_renders_nothing_when_the_secret_has_no_ca(render: RenderFn, base: Topology) -> None:
    # ingress-nginx #4503; nginx.tmpl renders proxy_ssl_verify only with ProxySSL.CAFileName, and the secret store
    # writes the PEM (and so proxy_ssl_certificate) only when the Secret has a ca.crt
    r = render(with_secrets(base, K8sSecret("pod-tls-client", tls="ingress-client")))
    for d in (*r.server().walk(),):
        assert d.name not in {"proxy_ssl_verify", "proxy_ssl_trusted_certificate", "proxy_ssl_certificate"}
    assert r.location().args_of("proxy_ssl_name") == ["echo.default.svc.cluster.local"]


@pytest.mark.parametrize("annotation", ["default/nope", "other/pod-tls-client"])
def test_an_unusable_proxy_ssl_secret_denies_the_location_with_503(
    render: RenderFn, base: Topology, annotation: str
) -> None:
    loc = render(base.with_ingress_annotations(proxy_ssl_secret=annotation)).location()
    assert loc.args_of("return") == ["503"]
    assert not loc.all("proxy_pass")
    assert not loc.all("proxy_ssl_verify")


# ---------------------------------------------------------------------------------------------------------------
# several Ingresses, hop trace, passthrough
# ---------------------------------------------------------------------------------------------------------------
def test_two_ingresses_on_one_host_share_one_server_block(render: RenderFn, base: Topology) -> None:
    primary = base.ingress.primary
    other = dataclasses.replace(primary, name="metrics", path="/metrics", service="metrics").with_annotations(
        auth_tls_secret=None)
    r = render(base.replace(ingress=dataclasses.replace(base.ingress, ingresses=(primary, other))))
    servers = [s for s in r.http.all("server") if s.args_of("server_name") == [HOST]]
    assert len(servers) == 1
    # a Prefix path is split in two (ingress-nginx location.go 34-100; e2e pathtype_prefix.go 35-70)
    assert [loc.args for loc in servers[0].all("location")] == [["/"], ["=", "/metrics"], ["/metrics/"]]
    assert servers[0].args_of("ssl_verify_client") == ["on"]  # auth-tls applies to the whole host
    upstream_names = [d.args[1] for d in r.location("/metrics/").all("set") if d.args[0] == "$proxy_upstream_name"]
    assert upstream_names == ["default-metrics-8443"]  # controller/util.go upstreamName: <ns>-<service>-<port>


def test_the_ingress_trace_header_names_the_session_variables(render: RenderFn) -> None:
    from harness.model.wire import FIELDS, RESUMED_FIELD, STRIPPED_FIELD, parse_entry

    value = render(default_topology()).proxy_headers()["x-mtls-trace-ingress"]
    entry = parse_entry(value)
    assert tuple(entry) == (*FIELDS, STRIPPED_FIELD, RESUMED_FIELD)
    assert entry[RESUMED_FIELD] == "$ssl_session_reused"
    assert entry["tls"] == "$ssl_protocol"
    assert entry["verify"] == "$ssl_client_verify"
    assert entry["peer_subject"] == "$ssl_client_s_dn"
    assert entry["peer_issuer"] == "$ssl_client_i_dn"


def test_ssl_passthrough_routes_the_host_by_sni_in_a_stream_block(render: RenderFn, base: Topology) -> None:
    r = render(base.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True))
    modules = [Path(m.args[0]) for m in r.conf.all("load_module")]
    assert all(m.is_file() for m in modules)
    # at most the stream module (none when built in) and the headers-more module (more_clear_headers Server)
    assert len([m for m in modules if m.name == "ngx_stream_module.so"]) <= 1
    assert len(modules) <= 2
    stream = r.conf.one("stream")
    front = stream.one("server")
    assert front.args_of("listen") == ["127.0.0.1:18443"]
    assert front.args_of("ssl_preread") == ["on"]
    routes = {d.name: d.args for d in stream.one("map").block or []}
    # a case-sensitive regex (the parser here keeps a quoted token's mark and drops the backslashes): exact SNI,
    # as ingress-nginx's pkg/tcpproxy/tcp.go 44-56 compares it
    assert {k.lstrip("\x00"): v for k, v in routes.items()}.get(f"~^{HOST}$") == ["127.0.0.1:19443"], routes
    internal = routes["default"][0]
    assert r.server().args_of("listen")[0] == internal != "127.0.0.1:18443"
    # stable across re-renders (hot reload)
    again = render(base.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True))
    assert again.server().args_of("listen")[0] == internal


def test_passthrough_without_the_stream_module_names_the_package(render: RenderFn, base: Topology, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # an nginx built without the stream module (a stand-in binary that only answers -V like such a build)
    fake = tmp_path / "nginx-without-stream"
    fake.write_text("#!/bin/sh\necho 'nginx version: nginx/1.22.1' >&2\n"
                    "echo 'configure arguments: --with-http_ssl_module' >&2\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MTLS_HARNESS_NGINX", str(fake))
    with pytest.raises(ToolMissingError, match="libnginx-mod-stream"):
        render(base.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True),
               check=False)


def test_fail_closed_and_optional_renderings_pass_nginx_t(render: RenderFn, base: Topology) -> None:
    # render() runs the real `nginx -t` on each
    render(base.with_ingress_annotations(auth_tls_secret="default/nope"))
    render(base.with_ingress_annotations(auth_tls_verify_client="optional_no_ca", auth_tls_match_cn="CN=a\\.b"))
    render(base.with_ingress_annotations(proxy_ssl_secret="default/nope"))
    assert os.path.exists(render(base).config.conf_path)
