"""The fidelity cases: the ingress behaves as the ingress-nginx controller (controller-v1.15.1) renders it.

One or more cases per difference of issue 19 (docs/fidelity.md, the ledger, names each case and its source).
A change the controller's admission webhook refuses is modelled as what the cluster then holds: the previous
configuration (``kubectl apply`` failed) — the case checks that the chain still answers as before AND that the
refusal line names the annotation, its value and the rule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import TYPE_CHECKING

from harness.cases.model import NO_CERT, Case, Group
from harness.model.topology import Topology
from harness.probe.outcomes import http_reject, ok, server_untrusted
from harness.render.nginx_admission import admission_refusal

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult
    from harness.targets.base import RunningChain

__all__ = ["fidelity_cases"]

#: the controller's default certificate's CN (internal/net/ssl/ssl.go getFakeHostSSLCert)
FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"
SRC = "ingress-nginx controller-v1.15.1"
Check = Callable[["ProbeResult", "RunningChain"], "str | None"]


# -- variants -------------------------------------------------------------------------------------------------------
def _passthrough_annotation_only(t: Topology) -> Topology:
    """ssl-passthrough annotated, but the controller runs without --enable-ssl-passthrough (the kind default)."""
    return t.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=False)


def _passthrough_enabled(t: Topology) -> Topology:
    t = t.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True)
    t = t.with_hop("pod", listener__client_auth="required", listener__client_ca="apim-client-ca")
    return t.with_hop("apim", upstream__trusted_ca="pod-ca")


def _tls13_only_pod_backend_protocol_alone(t: Topology) -> Topology:
    """backend-protocol HTTPS and no proxy-ssl-* (the common case); the pod speaks TLS 1.3 only."""
    drop = {k.replace("-", "_"): None for k in t.ingress.primary.annotations if k.startswith("proxy-ssl-")}
    return t.with_ingress_annotations(**drop).with_hop("pod", listener__min_version="1.3")


def _tls_secret_for_another_host(t: Topology) -> Topology:
    """The Ingress TLS Secret holds a cert that does not name the host (a valid cert, the wrong SAN)."""
    name = f"{t.ingress.server_cert}~wrong-san"
    tls = t.ingress.primary.tls_secret
    secrets = tuple(dataclasses.replace(s, tls=name) if s.name == tls else s for s in t.ingress.secrets)
    return t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))


def _older_optional_ingress(t: Topology) -> Topology:
    """A second Ingress on the host, created BEFORE the primary one, with auth-tls-verify-client optional."""
    primary = dataclasses.replace(t.ingress.primary, creation_timestamp="2026-01-02T00:00:00Z")
    annotations = MappingProxyType({**primary.annotations, "auth-tls-verify-client": "optional"})
    older = dataclasses.replace(primary, name="echo-reports", path="/reports",
                                creation_timestamp="2026-01-01T00:00:00Z", annotations=annotations)
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(primary, older)))


def _prefix_api(t: Topology) -> Topology:
    return t.replace(ingress=dataclasses.replace(
        t.ingress, ingresses=(dataclasses.replace(t.ingress.primary, path="/api", path_type="Prefix"),)))


def _ca_secret_updated_to_malformed(t: Topology) -> Topology:
    """The auth-tls CA Secret was synced good, then UPDATED to a ca.crt that is not a certificate."""
    ref = t.ingress.primary.annotation("auth-tls-secret") or ""
    good = t.ingress.secret(ref)
    secrets = tuple(dataclasses.replace(s, malformed_ca=True, last_good=s) if s is good else s
                    for s in t.ingress.secrets)
    return t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))


def _annotation_change(**changes: str) -> Callable[[Topology], Topology]:
    return lambda t: t.with_ingress_annotations(**changes)


def _applied(change: Callable[[Topology], Topology], name: str) -> Callable[[Topology], Topology]:
    """What the cluster holds after ``kubectl apply`` of ``change``: the change, or the old chain when the admission
    webhook refuses it."""

    def variant(t: Topology) -> Topology:
        new = change(t)
        refused = any(admission_refusal(i, new.ingress.controller) for i in new.ingress.ingresses)
        return t if refused else new

    variant.__name__ = name
    return variant


# -- checks ---------------------------------------------------------------------------------------------------------
def _refused(change: Callable[[Topology], Topology], *words: str) -> Check:
    """The chain answered as before (the case's outcome) and the refusal line names each of ``words``."""

    def check(r: ProbeResult, c: RunningChain) -> str | None:
        new = change(c.topology)
        lines = [x for x in (admission_refusal(i, new.ingress.controller) for i in new.ingress.ingresses) if x]
        if not lines:
            return "the change was accepted; ingress-nginx's admission webhook refuses it"
        missing = [w for w in words if w not in lines[0]]
        return f"the refusal line {lines[0]!r} does not name {missing}" if missing else None

    return check


def _served_fake_cert(r: ProbeResult, c: RunningChain) -> str | None:
    subject = r.peer_chain[0].subject if r.peer_chain else ""
    return None if FAKE_CN in subject else f"the ingress served {subject!r}, expected the fake certificate"


def _served_by_nginx(r: ProbeResult, c: RunningChain) -> str | None:
    subject = r.peer_chain[0].subject if r.peer_chain else ""
    want = c.certs.leaf(c.topology.ingress.server_cert).subject
    return None if subject == want else f"served {subject!r}: the TLS session did not end at the ingress ({want!r})"


def _pod_tls(version: str) -> Check:
    def check(r: ProbeResult, c: RunningChain) -> str | None:
        got = ((r.json() or {}).get("trace") or {}).get("pod", {}).get("tls")
        return None if got == version else f"the pod negotiated {got!r} with the ingress, expected {version}"

    return check


def _client_verify(value: str) -> Check:
    def check(r: ProbeResult, c: RunningChain) -> str | None:
        got = ((r.json() or {}).get("headers") or {}).get("ssl-client-verify")
        return None if got == value else f"ssl-client-verify {got!r}, expected {value!r}"

    return check


def _not_from_pod(r: ProbeResult, c: RunningChain) -> str | None:
    """The answer is nginx's own page (text/html), not the echo pod's JSON."""
    kind = r.headers.get("content-type", "")
    return f"the pod answered ({kind}): the request matched the Ingress" if "json" in kind else None


# -- the cases ------------------------------------------------------------------------------------------------------
def fidelity_cases() -> Iterator[Case]:
    g: Group = "ingress-nginx"
    # 1 ssl-passthrough
    yield Case("ingress-ignores-ssl-passthrough-without-the-controller-flag", "ingress", g, "passthrough flag off",
               ok(200), f"{SRC} pkg/flags/flags.go 150 (default false); docs annotations.md 594-600",
               variant=_passthrough_annotation_only, check=_served_by_nginx)
    yield Case("ingress-passthrough-matches-sni-exactly", "ingress", g, "passthrough SNI",
               server_untrusted(hop="client", cause="unknown-issuer"),
               f"{SRC} pkg/tcpproxy/tcp.go 44-56 (s.Hostname == host)", variant=_passthrough_enabled,
               probe={"server_name": "ECHO.AKS.CONTOSO.EXAMPLE"}, check=_served_by_nginx)
    # 2 TLS 1.3 to the pod with backend-protocol HTTPS alone
    yield Case("ingress-reaches-a-tls1.3-only-pod-without-proxy-ssl-settings", "pod", g, "upstream TLS 1.3",
               ok(200), f"{SRC} nginx.tmpl 950-961, 1431-1438; nginx 1.27.1 ngx_http_proxy_module.c 3736-3739",
               via="chain", variant=_tls13_only_pod_backend_protocol_alone, check=_pod_tls("TLSv1.3"))
    # 3 host certificate choice
    yield Case("ingress-serves-the-fake-cert-when-the-secret-does-not-cover-the-host", "ingress", g,
               "host certificate", server_untrusted(hop="client", cause="self-signed"),
               f"{SRC} controller.go 1465-1495; docs how-it-works.md 25-29",
               variant=_tls_secret_for_another_host, check=_served_fake_cert)
    # 4 annotations the webhook refuses
    snippet = _annotation_change(configuration_snippet="return 418;")
    yield Case("ingress-refuses-a-snippet-annotation-and-keeps-serving", "ingress", g, "admission", ok(200),
               f"{SRC} controller.go 402-404; config.go 765 (allow-snippet-annotations false)",
               variant=_applied(snippet, "ingress_snippet_refused"),
               check=_refused(snippet, "configuration-snippet", "return 418;", "allow-snippet-annotations"))
    # 5 Ingress order on a shared host
    yield Case("ingress-oldest-ingress-sets-auth-tls-for-the-host", "ingress", g, "ingress order", ok(200),
               f"{SRC} store.go 1102-1115; controller.go 766-775", variant=_older_optional_ingress, identity=None,
               check=_client_verify("NONE"))
    # 6 match-cn with RE2
    lookahead = _annotation_change(auth_tls_match_cn="CN=(?!apim-client)")
    yield Case("ingress-refuses-a-lookahead-match-cn-and-keeps-serving", "ingress", g, "match-cn RE2", ok(200),
               f"{SRC} parser/validators.go 127-139 (Go regexp = RE2 syntax)",
               variant=_applied(lookahead, "ingress_lookahead_match_cn_refused"),
               check=_refused(lookahead, "auth-tls-match-cn", "(?!apim-client)", "RE2"))
    # 7 paths
    yield Case("ingress-prefix-api-does-not-match-apix", "ingress", g, "path Prefix",
               http_reject(404, hop="ingress", cause="no-route"),
               f"{SRC} location.go 34-100; e2e pathtype_prefix.go 35-70; Kubernetes Ingress path types",
               variant=_prefix_api, probe={"path": "/apix"}, check=_not_from_pod)
    yield Case("ingress-prefix-api-matches-api-subpaths", "ingress", g, "path Prefix", ok(200),
               f"{SRC} e2e pathtype_prefix.go 35-70", variant=_prefix_api, probe={"path": "/api/items"})
    # 8 a Secret updated to something invalid
    yield Case("ingress-keeps-the-last-good-ca-when-the-secret-update-is-malformed", "ingress", g, "secret update",
               ok(200), f"{SRC} store/backend_ssl.go 38-50 (no sslStore.Update on error)",
               variant=_ca_secret_updated_to_malformed)
    yield Case("ingress-keeps-the-last-good-ca-and-still-refuses-no-cert", "ingress", g, "secret update",
               http_reject(400, NO_CERT, hop="ingress", cause="no-client-cert"), f"{SRC} store/backend_ssl.go 38-50",
               variant=_ca_secret_updated_to_malformed, identity=None)
