"""Controller flags and ConfigMap keys reach nginx.conf and the kind manifests alike; the controller's Ingress order,
admission refusals and unmodelled-annotation warnings (issue 19; docs/fidelity.md). No process is started.

Expected values are written here from ingress-nginx controller-v1.15.1 (config.go NewDefault, nginx.tmpl), not
imported from the code under test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.model.topology import Topology, default_topology
from harness.pki.certset import cert_set_for
from harness.render.k8s import render_controller_args, render_controller_config
from harness.render.nginx import HeadersMore, render_nginx
from harness.render.nginx_admission import admission_refusal, annotation_warnings


def _conf(t: Topology, tmp_path: Path) -> str:
    cfg = render_nginx(t, cert_set_for(t.pki), listen=("127.0.0.1", 18443), pod=("127.0.0.1", 19443),
                       workdir=tmp_path / "ingress")
    return cfg.conf_path.read_text()


def test_chain_controller_keys_render_into_nginx_and_the_configmap_alike(tmp_path: Path) -> None:
    t = default_topology().with_controller(ssl_protocols="TLSv1.3", ssl_session_tickets="true", use_http2="false",
                                           upstream_keepalive_connections="100", hsts_max_age="600")
    conf = _conf(t, tmp_path)
    data = render_controller_config(t)["data"]
    assert data["ssl-protocols"] == "TLSv1.3"
    assert "ssl_protocols TLSv1.3;" in conf
    assert data["ssl-session-tickets"] == "true"
    assert "ssl_session_tickets on;" in conf
    assert data["use-http2"] == "false"
    assert "ssl http2" not in conf  # nginx 1.22: http2 is a listen parameter
    assert data["upstream-keepalive-connections"] == "100"
    assert "keepalive 100;" in conf
    assert 'Strict-Transport-Security "max-age=600; includeSubDomains"' in conf


def test_controller_defaults_are_written_out(tmp_path: Path) -> None:
    conf = _conf(default_topology(), tmp_path)
    data = render_controller_config(default_topology())["data"]
    # config.go 769, 765, 888-891; nginx.tmpl 534-539
    assert data["annotations-risk-level"] == "High"
    assert data["allow-snippet-annotations"] == "false"
    for line in ("keepalive 320;", "keepalive_time 1h;", "keepalive_timeout  60s;", "keepalive_requests 10000;",
                 "proxy_ssl_session_reuse off;", "proxy_ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;"):
        assert line in conf


def test_the_server_header_is_cleared_with_the_headers_more_module(tmp_path: Path) -> None:
    # nginx.tmpl 338-341 (server-tokens false, config.go 828): server_tokens off + more_clear_headers Server
    t = default_topology()
    module = "/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so"
    cfg = render_nginx(t, cert_set_for(t.pki), listen=("127.0.0.1", 18443), pod=("127.0.0.1", 19443),
                       workdir=tmp_path / "ingress", headers_more=HeadersMore(module=module))
    conf = cfg.conf_path.read_text()
    assert f"\nload_module {module};\n" in conf
    assert "server_tokens off;" in conf
    assert "more_clear_headers Server;" in conf


def test_without_the_headers_more_module_the_conf_says_the_server_header_stays(tmp_path: Path) -> None:
    conf = _conf(default_topology(), tmp_path)
    assert "server_tokens off;" in conf
    assert "more_clear_headers" not in conf
    assert "load_module" not in conf
    assert "`Server: nginx` is still sent" in conf


def test_the_passthrough_flag_reaches_the_controller_args_and_the_model() -> None:
    t = default_topology().with_ingress_annotations(ssl_passthrough="True")
    assert render_controller_args(t) == []
    assert not t.passthrough  # flags.go 150: off by default
    on = t.with_controller(enable_ssl_passthrough=True)
    assert render_controller_args(on) == ["--enable-ssl-passthrough"]
    assert on.passthrough  # Go ParseBool("True") is true


def test_ingresses_are_taken_oldest_first_then_namespace_name_descending() -> None:
    t = default_topology()
    a = dataclasses.replace(t.ingress.primary, name="a", creation_timestamp="2026-01-01T00:00:00Z")
    b = dataclasses.replace(t.ingress.primary, name="b", creation_timestamp="2026-01-01T00:00:00Z")
    old = dataclasses.replace(t.ingress.primary, name="z", creation_timestamp="2025-12-31T23:59:59Z")
    undated = dataclasses.replace(t.ingress.primary, name="new")
    hop = dataclasses.replace(t.ingress, ingresses=(undated, a, b, old))
    assert [i.name for i in hop.in_controller_order()] == ["z", "b", "a", "new"]  # store.go 1102-1115: in > jn


@pytest.mark.parametrize(("annotation", "value", "rule"), [
    ("configuration-snippet", "return 418;", "allow-snippet-annotations"),
    ("auth-tls-match-cn", "CN=(?<=x)apim", "RE2"),
    ("auth-tls-match-cn", "CN=(a)\\1", "RE2"),
])
def test_the_webhook_refusal_is_one_line_naming_annotation_value_and_rule(annotation: str, value: str,
                                                                          rule: str, tmp_path: Path) -> None:
    t = default_topology().with_ingress_annotations(**{annotation.replace("-", "_"): value})
    line = admission_refusal(t.ingress.primary, t.ingress.controller)
    assert line is not None
    assert "\n" not in line
    assert annotation in line
    assert repr(value) in line
    assert rule in line
    with pytest.raises(UsageError, match="admission webhook refuses"):
        _conf(t, tmp_path)


def test_a_risk_level_below_the_annotation_refuses_it() -> None:
    t = default_topology().with_controller(annotations_risk_level="Medium")
    line = admission_refusal(t.ingress.primary, t.ingress.controller)  # proxy-ssl-name is High (risk.md 91)
    assert line is not None
    assert "proxy-ssl-name" in line
    assert "annotations-risk-level Medium" in line


def test_unmodelled_annotations_are_warnings_by_name() -> None:
    t = default_topology().with_ingress_annotations(whitelist_source_range="10.0.0.0/8", rewrite_target="/")
    text = "\n".join(annotation_warnings(t.ingress))
    assert "nginx.ingress.kubernetes.io/whitelist-source-range" in text
    assert "nginx.ingress.kubernetes.io/rewrite-target" in text
    assert "auth-tls-secret" not in text
