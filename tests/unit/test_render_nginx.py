"""The rendered nginx.conf, parsed: each ingress-nginx annotation → the directive the controller renders.

Expected directives are ingress-nginx's (rootfs/etc/nginx/template/nginx.tmpl, internal/ingress/annotations/authtls and
proxyssl, test/e2e/annotations/authtls.go, docs/user-guide/nginx-configuration/annotations.md) — see
docs/ingress-nginx-fidelity.md. Every rendering is also checked by the real ``nginx -t``.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.errors import UsageError
from harness.model.topology import K8sSecret, Topology, default_topology
from harness.pki.certset import CertSet
from harness.render.nginx import NginxConfig
from harness.runtime.binaries import find_nginx
from harness.runtime.nginx import render_ingress

HOST = "echo.aks.contoso.example"
LISTEN = ("127.0.0.1", 18443)
POD = ("127.0.0.1", 19443)


# ---------------------------------------------------------------------------------------------------------------
# a small nginx.conf parser: directives with arguments and blocks
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def all(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str) -> Directive:
        found = self.all(name)
        assert len(found) == 1, f"expected one {name!r} in {self.name} {self.args}, found {len(found)}"
        return found[0]

    def args_of(self, name: str) -> list[str]:
        return self.one(name).args

    def walk(self) -> Iterator[Directive]:
        for d in self.block or []:
            yield d
            yield from d.walk()


def _tokens(text: str) -> Iterator[str]:
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            yield c
            i += 1
        elif c in "\"'":
            j, out = i + 1, []
            while text[j] != c:
                if text[j] == "\\":
                    j += 1
                out.append(text[j])
                j += 1
            yield "\0" + "".join(out)  # a quoted word (may be empty)
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                j += 1
            yield text[i:j]
            i = j


def parse_conf(text: str) -> Directive:
    stack = [Directive("main", [], [])]
    words: list[str] = []
    for tok in _tokens(text):
        if tok == ";":
            stack[-1].block.append(Directive(words[0], [w.lstrip("\0") for w in words[1:]]))  # type: ignore[union-attr]
            words = []
        elif tok == "{":
            d = Directive(words[0], [w.lstrip("\0") for w in words[1:]], [])
            stack[-1].block.append(d)  # type: ignore[union-attr]
            stack.append(d)
            words = []
        elif tok == "}":
            assert not words, f"unterminated directive {words}"
            stack.pop()
        else:
            words.append(tok)
    assert len(stack) == 1
    assert not words
    return stack[0]


@dataclass
class Rendered:
    config: NginxConfig
    conf: Directive
    text: str
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def http(self) -> Directive:
        return self.conf.one("http")

    def server(self, host: str = HOST) -> Directive:
        for s in self.http.all("server"):
            if s.all("server_name") and s.args_of("server_name") == [host]:
                return s
        raise AssertionError(f"no server for {host}")

    def location(self, path: str = "/", host: str = HOST) -> Directive:
        for loc in self.server(host).all("location"):
            if loc.args == [path]:
                return loc
        raise AssertionError(f"no location {path} in {host}")

    def proxy_headers(self, path: str = "/") -> dict[str, str]:
        return {d.args[0].lower(): d.args[1] for d in self.location(path).all("proxy_set_header")}


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(mtls_cert_set: CertSet) -> CertSet:
    return mtls_cert_set


@pytest.fixture
def base() -> Topology:
    return default_topology()


RenderFn = Callable[..., Rendered]


@pytest.fixture
def render(certs: CertSet, tmp_path: Path) -> Iterator[RenderFn]:
    def _render(topology: Topology, *, check: bool = True) -> Rendered:
        config = render_ingress(topology, certs, listen=LISTEN, pod=POD, workdir=tmp_path / "ingress")
        text = config.conf_path.read_text()
        if check:
            result = subprocess.run(config.test_argv(find_nginx()), capture_output=True, text=True, timeout=30,
                                    check=False)
            assert result.returncode == 0, result.stderr
        return Rendered(config, parse_conf(text), text)

    return _render


def with_secrets(topology: Topology, *secrets: K8sSecret, drop: str | None = None) -> Topology:
    hop = topology.ingress
    kept = tuple(s for s in hop.secrets if s.name not in {x.name for x in secrets} and s.name != drop)
    return topology.replace(ingress=dataclasses.replace(hop, secrets=kept + secrets))


def only_auth(topology: Topology) -> Topology:
    """The default chain without the proxy-ssl annotations (to look at auth-tls alone)."""
    return topology.with_ingress_annotations(proxy_ssl_secret=None, proxy_ssl_verify=None, proxy_ssl_name=None,
                                             proxy_ssl_server_name=None, proxy_ssl_verify_depth=None,
                                             proxy_ssl_protocols=None)


def test_a_negative_verify_depth_is_refused(render: RenderFn, base: Topology) -> None:
    with pytest.raises(UsageError, match="auth-tls-verify-depth"):
        render(base.with_ingress_annotations(auth_tls_verify_depth="-1"))


def test_an_error_page_the_validator_refuses_rejects_the_ingress(render: RenderFn, base: Topology) -> None:
    with pytest.raises(UsageError, match="auth-tls-error-page"):
        render(base.with_ingress_annotations(auth_tls_error_page="javascript:alert(1)"))


@pytest.mark.parametrize("value", ["apim-client", "CN=(unclosed"])
def test_a_match_cn_without_cn_prefix_or_valid_regex_rejects_the_ingress(
    render: RenderFn, base: Topology, value: str
) -> None:
    with pytest.raises(UsageError, match="auth-tls-match-cn"):
        render(base.with_ingress_annotations(auth_tls_match_cn=value))


def test_a_backend_protocol_the_stand_in_cannot_speak_is_refused(render: RenderFn, base: Topology) -> None:
    with pytest.raises(UsageError, match="GRPC"):
        render(base.with_ingress_annotations(backend_protocol="GRPC"))


def test_a_non_boolean_ssl_passthrough_rejects_the_ingress(render: RenderFn, base: Topology) -> None:
    with pytest.raises(UsageError, match="ssl-passthrough"):
        render(base.with_ingress_annotations(ssl_passthrough="yes"))


def test_a_validator_refused_auth_tls_secret_rejects_the_ingress_with_one_clear_error(
    render: RenderFn, base: Topology
) -> None:
    with pytest.raises(UsageError) as err:
        render(base.with_ingress_annotations(auth_tls_secret="default/ca;evil"))
    assert "nginx.ingress.kubernetes.io/auth-tls-secret" in str(err.value)
    assert "default/echo" in str(err.value)


