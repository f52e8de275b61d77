"""The case catalogue: every handshake case the suite and ``mtls-harness run`` share, as data.

The case model and the runner are :mod:`harness.cases.model`; the OAuth cases :mod:`harness.cases.oauth`.
Ids read as behaviour and are the same on every target; a case a target cannot run skips there with a reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from harness.cases.cross_domain import (
    FAKE_CERT_SOURCE,
    SPOOF,
    apim_validates,
    consumer_identity,
    cross_domain_cases,
    gateway_strict,
    passthrough_to_the_pod,
    stripped_by,
    stripping_cases,
    trusted_identity,
)
from harness.cases.fidelity import fidelity_cases
from harness.cases.gateway_api import on_gateway_api
from harness.cases.oauth import oauth_cases
from harness.model.controller import parse_go_bool
from harness.model.topology import HopName, Topology, default_topology
from harness.model.wire import PROXY_HOPS
from harness.probe.outcomes import (
    http_reject,
    ok,
    protocol_error,
    server_untrusted,
    tls_alert,
    upstream_failure,
)

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult
    from harness.targets.base import RunningChain

from harness.cases.model import CERT_ERROR, NO_CERT, Case

__all__ = ["CATALOGUE", "cases"]

# ------------------------------------------------------------------------------------------------------------------
# topology variants (small named functions, so ids and reports can say what changed)
# ------------------------------------------------------------------------------------------------------------------
_gateway_strict = gateway_strict
_apim_validates = apim_validates


def _serve(hop: HopName, fault: str) -> Callable[[Topology], Topology]:
    """A variant where ``hop`` serves a faulty server cert (``<its leaf>~<fault>``)."""

    def variant(t: Topology) -> Topology:
        if hop == "ingress":
            return t.replace(ingress=t.ingress.serving(f"{t.ingress.tls_leaf}~{fault}"))
        return t.with_hop(hop, listener__server_cert=f"{t.listener_of(hop).server_cert}~{fault}")

    variant.__name__ = f"{hop}_serves_{fault.replace('-', '_')}"
    return variant


def _annotations(**changes: str | None) -> Callable[[Topology], Topology]:
    def variant(t: Topology) -> Topology:
        return t.with_ingress_annotations(**changes)

    variant.__name__ = "ingress_" + "_".join(f"{k}" for k in changes)
    return variant


def _auth_secret(t: Topology) -> str:
    """The name of the ingress's auth-tls CA Secret on ``t`` (the reference chain's ``apim-client-ca``)."""
    ref = t.ingress.auth_tls_ingress().annotation("auth-tls-secret") or "apim-client-ca"
    return ref.rpartition("/")[2]


def _ingress_crl(t: Topology) -> Topology:
    """The auth-tls Secret with a ca.crl issued by the CA of the client identity the ingress trusts."""
    name = _auth_secret(t)
    try:
        issuer = t.pki.leaf(trusted_identity(t, "ingress", "apim-client")).issuer
    except KeyError:
        issuer = "apim-client-ca"  # a reference name: skips by design on a chain without it
    secrets = tuple(dataclasses.replace(s, crl=issuer) if s.name == name else s for s in t.ingress.secrets)
    return t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))


# ------------------------------------------------------------------------------------------------------------------
# the catalogue
# ------------------------------------------------------------------------------------------------------------------
CLIENT_FAULTS: tuple[tuple[str, str], ...] = (
    ("unknown-ca", "unknown CA"), ("expired", "expired"), ("not-yet-valid", "not yet valid"),
    ("wrong-eku", "wrong EKU"), ("self-signed", "self-signed"), ("revoked", "revoked"),
    ("too-deep", "deeper than verify depth"),
)
SERVER_FAULTS: tuple[tuple[str, str], ...] = (
    ("unknown-ca", "unknown CA"), ("wrong-san", "wrong name"), ("expired", "expired"),
    ("self-signed", "self-signed"), ("missing-intermediate", "missing intermediate"),
    ("not-yet-valid", "not yet valid"), ("wrong-eku", "wrong EKU"),
)

# The cause each verifier reports for each fault, as measured here (docs/behaviour.md, "Causes as each hop reports
# them"). OpenSSL (nginx, the pod, our client) and BoringSSL (Envoy) word some faults differently; an unknown CA and a
# missing intermediate read the same to every verifier ("no trusted issuer").
NGINX_CLIENT_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "unknown-issuer", "expired": "expired", "not-yet-valid": "not-yet-valid", "wrong-eku": "wrong-eku",
    "self-signed": "self-signed", "revoked": "revoked", "too-deep": "unknown-issuer",
})
#: the stand-ins' Lua sees only "validated or not" and the dates (harness/render/envoy_lua.py)
ENVOY_CLIENT_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "not-trusted", "expired": "expired", "not-yet-valid": "not-yet-valid", "wrong-eku": "not-trusted",
    "self-signed": "not-trusted",
})
POD_CLIENT_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "unknown-issuer", "expired": "expired", "not-yet-valid": "not-yet-valid", "wrong-eku": "wrong-eku",
    "self-signed": "self-signed",
})
ENVOY_SERVER_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "unknown-issuer", "wrong-san": "name-mismatch", "expired": "expired", "self-signed": "unknown-issuer",
    "missing-intermediate": "unknown-issuer", "not-yet-valid": "not-yet-valid", "wrong-eku": "wrong-eku",
})
NGINX_SERVER_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "unknown-issuer", "wrong-san": "name-mismatch", "expired": "expired", "self-signed": "self-signed",
    "missing-intermediate": "unknown-issuer", "not-yet-valid": "not-yet-valid", "wrong-eku": "wrong-eku",
})
OPENSSL_SERVER_CAUSES: Final[Mapping[str, str]] = MappingProxyType({
    "unknown-ca": "unknown-issuer", "wrong-san": "name-mismatch", "expired": "expired", "self-signed": "self-signed",
    "missing-intermediate": "unknown-issuer", "not-yet-valid": "not-yet-valid", "wrong-eku": "wrong-eku",
})
#: who checks each hop's server cert, and where that checker writes its reason
CALLER_OF: Final[Mapping[str, str]] = MappingProxyType({"gateway": "client", "apim": "gateway", "ingress": "apim",
                                                         "pod": "ingress"})
CAUSE_EVIDENCE: Final[Mapping[str, str]] = MappingProxyType({
    "client": "OpenSSL's verify message", "gateway": "the stand-in's detail header (Envoy response-code details)",
    "apim": "the stand-in's detail header (Envoy response-code details)", "ingress": "nginx error.log",
})
#: (hop serving the cert, case id stem, the status its caller answers, source)
UPSTREAM_CHECKS: Final[tuple[tuple[HopName, str, int, str], ...]] = (
    ("apim", "gateway-refuses-apim-cert", 502, "DESIGN.md App Gateway backend row; azure-docs #40941 #94687"),
    ("ingress", "apim-refuses-ingress-cert", 500, "DESIGN.md APIM backend TLS row; REFERENCES #10"),
    ("pod", "ingress-refuses-pod-cert", 502, "DESIGN.md nginx upstream row; ingress-nginx #4928"),
)
MATCH_CN_REJECT: Final = http_reject(403, "client certificate unauthorized", hop="ingress", cause="match-cn")
#: the ingress answers 403 itself (``return 403``), without contacting the pod: its access log says so
FAIL_CLOSED: Final = http_reject(403, hop="ingress", cause="forbidden")


def _client_cert_cases(t: Topology) -> Iterator[Case]:
    """Per verifying hop, the identity its caller presents on ``t`` (the chain's own names), with each fault."""
    apim_client = trusted_identity(t, "ingress", "apim-client")
    consumer, apim_consumer = consumer_identity(t, "gateway"), consumer_identity(t, "apim")
    # the ingress (ingress-nginx, ssl_verify_client on): nginx's 400 pages, TLS 1.2 and 1.3 alike
    src = "DESIGN.md nginx rows; ingress-nginx e2e authtls #1"
    for version in ("1.2", "1.3"):
        pv = {"min_version": version, "max_version": version}
        yield Case(f"ingress-rejects-missing-client-cert-tls{version}", "ingress", "client-cert", "none",
                   http_reject(400, NO_CERT, hop="ingress", cause="no-client-cert"), src, identity=None, probe=pv)
        yield Case(f"ingress-accepts-apims-client-cert-tls{version}", "ingress", "client-cert", "valid", ok(200),
                   src, probe=pv)
        for fault, column in CLIENT_FAULTS:
            variant = _ingress_crl if fault == "revoked" else None
            yield Case(f"ingress-rejects-client-cert-{fault}-tls{version}", "ingress", "client-cert", column,
                       http_reject(400, CERT_ERROR, hop="ingress", cause=NGINX_CLIENT_CAUSES[fault]),
                       src + "; cause: nginx error.log at info (measured)", variant=variant,
                       identity=f"{apim_client}~{fault}", probe=pv)
    # OpenSSL's verify depth counts the intermediates between the leaf and the trust anchor
    # (X509_VERIFY_PARAM_set_depth): ingress-nginx's default depth 1 admits ONE intermediate and refuses two
    # (measured here; see docs/behaviour.md)
    src = "OpenSSL X509_VERIFY_PARAM_set_depth; ingress-nginx auth-tls-verify-depth docs; #110 #3420"
    yield Case("ingress-accepts-intermediate-issued-client-cert-at-default-verify-depth-1", "ingress", "client-cert",
               "intermediate within depth", ok(200), src, identity=f"{apim_client}~intermediate-issued")
    yield Case("ingress-accepts-two-intermediates-at-verify-depth-2", "ingress", "client-cert",
               "deeper chain, depth raised", ok(200), src, variant=_annotations(auth_tls_verify_depth="2"),
               identity=f"{apim_client}~too-deep")

    # the gateway in App Gateway mTLS "Strict" mode: 400 pages like App Gateway's
    src = "DESIGN.md App Gateway Strict row (ronaldbosma/mtls-with-apim-and-agw)"
    for version in ("1.2", "1.3"):
        pv = {"min_version": version, "max_version": version}
        yield Case(f"gateway-strict-rejects-missing-client-cert-tls{version}", "gateway", "client-cert", "none",
                   http_reject(400, NO_CERT, hop="gateway", cause="no-client-cert"), src, variant=_gateway_strict,
                   identity=None, probe=pv)
        yield Case(f"gateway-strict-accepts-valid-client-cert-tls{version}", "gateway", "client-cert", "valid",
                   ok(200), src, variant=_gateway_strict, probe=pv)
        for fault, column in CLIENT_FAULTS:
            if fault in ("revoked", "too-deep"):
                continue  # App Gateway checks revocation by OCSP and sets no depth: not emulated (docs/behaviour.md)
            yield Case(f"gateway-strict-rejects-client-cert-{fault}-tls{version}", "gateway", "client-cert", column,
                       http_reject(400, CERT_ERROR, hop="gateway", cause=ENVOY_CLIENT_CAUSES[fault]),
                       src + "; cause: the stand-in's detail header", variant=_gateway_strict,
                       identity=f"{consumer}~{fault}", probe=pv)

    # APIM's validate-client-certificate policy: 401
    src = "DESIGN.md APIM validate-client-certificate row"
    yield Case("apim-rejects-missing-client-cert-with-401", "apim", "client-cert", "none",
               http_reject(401, hop="apim", cause="no-client-cert"), src, variant=_apim_validates, identity=None)
    yield Case("apim-accepts-valid-client-cert", "apim", "client-cert", "valid", ok(200), src,
               variant=_apim_validates, identity=apim_consumer)
    for fault, column in CLIENT_FAULTS:
        if fault in ("revoked", "too-deep"):
            continue
        yield Case(f"apim-rejects-client-cert-{fault}-with-401", "apim", "client-cert", column,
                   http_reject(401, hop="apim", cause=ENVOY_CLIENT_CAUSES[fault]),
                   src + "; cause: the stand-in's detail header", variant=_apim_validates,
                   identity=f"{apim_consumer}~{fault}")


def _server_cert_cases() -> Iterator[Case]:
    # from the client's side, at the public listener: our client must refuse the gateway's bad cert
    yield Case("client-trusts-gateways-public-cert", "gateway", "server-cert", "valid", ok(200),
               "DESIGN.md: public listener", via="chain")
    for fault, column in SERVER_FAULTS:
        yield Case(f"client-refuses-gateway-cert-{fault}", "gateway", "server-cert", column,
                   server_untrusted(hop="client", cause=OPENSSL_SERVER_CAUSES[fault]),
                   "azure-docs #62578 (no-SNI default / wrong cert served); cause: OpenSSL's verify message",
                   via="chain",
                   variant=_serve("gateway", fault))
    for hop, stem, status, src in UPSTREAM_CHECKS:
        caller = CALLER_OF[hop]
        for fault, column in SERVER_FAULTS:
            causes = NGINX_SERVER_CAUSES if caller == "ingress" else ENVOY_SERVER_CAUSES
            cause, why = causes[fault], f"; cause: {CAUSE_EVIDENCE[caller]} (measured)"
            if hop == "ingress" and fault == "wrong-san":
                # ingress-nginx never serves a Secret's cert that does not cover the host: it serves its fake
                # certificate instead, which apim refuses as self-signed (the name check: the passthrough case below)
                cause, why = "self-signed", FAKE_CERT_SOURCE
            yield Case(f"{stem}-{fault}", hop, "server-cert", column, upstream_failure(status, hop=caller, cause=cause),
                       src + why, via="chain", variant=_serve(hop, fault))
    # behind ssl-passthrough the pod's own cert reaches apim (the controller picks no cert): apim's name check
    yield Case("apim-refuses-pod-cert-wrong-san-behind-passthrough", "pod", "server-cert", "wrong name",
               upstream_failure(500, hop="apim", cause="name-mismatch"),
               "DESIGN.md APIM backend TLS row; docs/fidelity.md row 1 (passthrough); cause: the stand-in's detail "
               "header (measured)", via="chain", variant=_passthrough_serving_wrong_san)


def _passthrough_serving_wrong_san(t: Topology) -> Topology:
    return _serve("pod", "wrong-san")(_passthrough(t))


def _passthrough(t: Topology) -> Topology:
    """ssl-passthrough: the ingress routes the TLS stream by SNI; the pod terminates it and verifies APIM's cert."""
    return passthrough_to_the_pod(t)


def _pod_caller(c: RunningChain) -> str:
    """The client identity the pod trusts on the running chain (the ingress's proxy-ssl cert; APIM's behind
    passthrough)."""
    return trusted_identity(c.topology, "pod", "ingress-client")


def _pod_cases(t: Topology) -> Iterator[Case]:
    behind = trusted_identity(_passthrough(t), "pod", "apim-client")  # the pod's caller behind passthrough
    caller = trusted_identity(t, "pod", "ingress-client")
    # behind passthrough the pod's own TLS stack (Python's ssl, OpenSSL) decides: TLS alerts, not HTTP pages
    src = "OpenSSL ssl_verify_alarm_type (X509_V_ERR → alert); DESIGN.md passthrough variant"
    pv = {"min_version": "1.3", "max_version": "1.3"}
    yield Case("pod-behind-passthrough-accepts-apims-client-cert", "pod", "client-cert", "valid", ok(200), src,
               variant=_passthrough, endpoint="ingress", identity=behind, probe=pv)
    yield Case("pod-behind-passthrough-rejects-missing-client-cert", "pod", "client-cert", "none",
               tls_alert("certificate_required", hop="pod", cause="no-client-cert"), src, variant=_passthrough,
               endpoint="ingress", identity=None,
               probe=pv)
    alerts = {"unknown-ca": "unknown_ca", "expired": "certificate_expired", "not-yet-valid": "bad_certificate",
              "wrong-eku": "unsupported_certificate", "self-signed": "unknown_ca"}
    for fault, column in CLIENT_FAULTS:
        if fault not in alerts:
            continue  # the pod loads no CRL and sets no depth: those columns are the ingress's job
        yield Case(f"pod-behind-passthrough-rejects-client-cert-{fault}", "pod", "client-cert", column,
                   tls_alert(alerts[fault], hop="pod", cause=POD_CLIENT_CAUSES[fault]), src + "; cause: the pod's log",
                   variant=_passthrough, endpoint="ingress",
                   identity=f"{behind}~{fault}", probe=pv)
    # re-encrypt (the default): the pod asks for the ingress's proxy-ssl client cert (optional) and verifies it
    src = "ingress-nginx proxy-ssl-secret tls.crt → proxy_ssl_certificate; Python ssl CERT_OPTIONAL"
    yield Case("pod-accepts-the-ingress-proxy-ssl-client-cert", "pod", "client-cert", "valid", ok(200), src,
               check=lambda r, c: _expect_pod_peer(r, c, _pod_caller(c)))
    yield Case("pod-optional-client-auth-accepts-no-cert", "pod", "client-cert", "none", ok(200), src,
               identity=None, check=lambda r, c: None if (r.json() or {}).get("peer") is None else "the pod saw a peer")
    for fault, alert in (("unknown-ca", "unknown_ca"), ("expired", "certificate_expired")):
        yield Case(f"pod-rejects-presented-client-cert-{fault}", "pod", "client-cert", dict(CLIENT_FAULTS)[fault],
                   tls_alert(alert, hop="pod", cause=POD_CLIENT_CAUSES[fault]),
                   src + " (a presented cert is verified even when optional); cause: the pod's log",
                   identity=f"{caller}~{fault}", probe=pv)
    yield Case("chain-reaches-pod-through-passthrough", "pod", "trace", "passthrough end to end", ok(200),
               "DESIGN.md passthrough variant", via="chain", variant=_passthrough,
               check=lambda r, c: _expect_pod_peer(r, c, _pod_caller(c)))


def _protocol_cases() -> Iterator[Case]:
    src = "DESIGN.md: TLS floor 1.2 on every listener (App Gateway policy, APIM custom properties, ingress-nginx)"
    for hop in ("gateway", "apim", "ingress", "pod"):
        for version in ("1.0", "1.1"):
            yield Case(f"{hop}-refuses-tls{version}", hop, "protocol", f"TLS {version}",
                       tls_alert("protocol_version", hop=hop, cause="protocol-version"), src,
                       probe={"min_version": version, "max_version": version})
        for version in ("1.2", "1.3"):
            yield Case(f"{hop}-accepts-tls{version}", hop, "protocol", f"TLS {version}", ok(200), src,
                       probe={"min_version": version, "max_version": version},
                       check=_expect_version(f"TLSv{version}"))
        reason = "The plain HTTP request was sent to HTTPS port" if hop == "ingress" else None
        yield Case(f"{hop}-refuses-plain-http", hop, "protocol", "plain HTTP", protocol_error(reason),
                   "nginx 497 page; Envoy closes a non-TLS connection", probe={"plaintext": True})
        if hop == "gateway":
            yield Case("gateway-with-tls1.3-floor-refuses-tls1.2", hop, "protocol", "TLS 1.2 below floor",
                       tls_alert("protocol_version", hop="gateway", cause="protocol-version"),
                       "App Gateway SSL policy minProtocolVersion TLSv1_3",
                       variant=_tls13_floor, probe={"min_version": "1.2", "max_version": "1.2"})
            yield Case("chain-works-with-an-rsa-2048-cert-set", hop, "protocol", "RSA 2048 keys", ok(200),
                       "Key Vault / App Gateway certificates are commonly RSA 2048", via="chain", variant=_rsa,
                       check=_every_hop_tls)
        if hop != "pod":
            yield Case(f"{hop}-negotiates-http2", hop, "protocol", "HTTP/2 (ALPN h2)", ok(200),
                       "App Gateway, APIM and ingress-nginx all offer h2", probe={"alpn": ("h2", "http/1.1")},
                       check=_expect_alpn("h2"))


def _tls13_floor(t: Topology) -> Topology:
    """App Gateway's SSL policy with a TLS 1.3 minimum (AppGwSslPolicy20220101S allows it)."""
    return t.with_hop("gateway", listener__min_version="1.3")


def _rsa(t: Topology) -> Topology:
    return t.replace(pki=dataclasses.replace(t.pki, key_type="rsa"))


def _expect_version(version: str) -> Callable[[ProbeResult, RunningChain], str | None]:
    def check(r: ProbeResult, c: RunningChain) -> str | None:
        return None if r.tls_version == version else f"negotiated {r.tls_version}, expected {version}"

    return check


def _expect_alpn(proto: str) -> Callable[[ProbeResult, RunningChain], str | None]:
    def check(r: ProbeResult, c: RunningChain) -> str | None:
        return None if r.alpn == proto else f"ALPN {r.alpn!r}, expected {proto!r}"

    return check


def _expect_pod_peer(r: ProbeResult, c: RunningChain, leaf: str) -> str | None:
    want = c.certs.leaf(leaf).fingerprint_sha256
    got = ((r.json() or {}).get("peer") or {}).get("sha256")
    return None if got == want else f"the pod saw client cert {got}, expected {leaf} ({want})"


def _trace(r: ProbeResult) -> dict[str, dict[str, str]]:
    return dict((r.json() or {}).get("trace") or {})


def _every_hop_tls(r: ProbeResult, c: RunningChain) -> str | None:
    """Every hop recorded the TLS session it received. Behind ssl-passthrough the ingress forwards APIM's TLS session
    to the pod unopened (nginx stream): it records none, and the pod's entry is that session."""
    trace = _trace(r)
    hops = ("gateway", "apim", "pod") if c.topology.passthrough else ("gateway", "apim", "ingress", "pod")
    bad = [h for h in hops if not trace.get(h, {}).get("tls", "").startswith("TLSv1.")]
    if bad:
        return f"no TLS recorded at: {', '.join(bad)} (trace: {trace})"
    sni, host = trace.get("ingress", {}).get("sni"), c.topology.ingress.host
    if not c.topology.passthrough and sni != host:  # the request must have taken the path to THIS host (its API)
        return f"the ingress's TLS session was for {sni!r}, expected {host!r} (trace: {trace})"
    return None


def _ingress_saw_apim(r: ProbeResult, c: RunningChain) -> str | None:
    leaf = c.certs.leaf(c.topology.apim.upstream.client_cert or "apim-client")
    headers = (r.json() or {}).get("headers") or {}
    ingress = _trace(r).get("ingress", {})
    if ingress.get("verify") != "SUCCESS":
        return f"ingress verify={ingress.get('verify')!r}, expected SUCCESS"
    if headers.get("ssl-client-subject-dn") != leaf.subject:
        return f"ssl-client-subject-dn {headers.get('ssl-client-subject-dn')!r}, expected {leaf.subject!r}"
    return None




def _trace_cases() -> Iterator[Case]:
    src = "DESIGN.md: TLS on every hop"
    yield Case("every-hop-is-tls-end-to-end", "gateway", "trace", "TLS at every hop", ok(200), src, via="chain",
               check=_every_hop_tls)
    yield Case("ingress-verified-identity-is-apims-client-cert", "ingress", "trace", "identity at the pod", ok(200),
               src, via="chain", check=_ingress_saw_apim)
    yield Case("pod-sees-the-ingress-proxy-ssl-client-cert", "pod", "trace", "identity at the pod", ok(200), src,
               via="chain", check=lambda r, c: _expect_pod_peer(r, c, _pod_caller(c)))
    yield Case("gateway-strips-client-supplied-trace-headers", "gateway", "trace", "spoofed trace", ok(200),
               "REFERENCES #10 (header forwarding is spoofable)", via="chain", probe={"headers": SPOOF},
               check=stripped_by("gateway", tuple(PROXY_HOPS)))
    for name, path in (("script-injection", "/search?q=%3Cscript%3Ealert(1)%3C/script%3E"),
                       ("sql-injection", "/items?id=1%20UNION%20SELECT%20password"),
                       ("path-traversal", "/static/../../etc/passwd")):
        yield Case(f"gateway-waf-blocks-{name}", "gateway", "gateway", "WAF",
                   http_reject(403, hop="gateway", cause="waf"),
                   "App Gateway WAF: the gateway terminates TLS and inspects the request", via="chain",
                   probe={"path": path})


def _header(name: str, want: Callable[[str | None], bool], what: str) -> Callable[[ProbeResult, RunningChain],
                                                                                  str | None]:
    def check(r: ProbeResult, c: RunningChain) -> str | None:
        got = ((r.json() or {}).get("headers") or {}).get(name)
        return None if want(got) else f"upstream header {name}={got!r}, expected {what}"

    return check


def _two_ingresses_one_host(t: Topology) -> Topology:
    """A second Ingress on the same host with no auth-tls annotations (a health path): ingress-nginx #3964."""
    first = t.ingress.primary
    # only what routes to the pod: none of the auth-tls-* annotations
    health = dataclasses.replace(first, name="echo-health", path="/healthz",
                                 annotations=MappingProxyType({"backend-protocol": "HTTPS"}))
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(first, health)))


def open_host_of(t: Topology) -> str:
    """The second host :func:`_an_open_host` adds beside the chain's own: ``open-<host>``."""
    return f"open-{t.ingress.primary.host}"


def _an_open_host(t: Topology) -> Topology:
    """A second host on the same ingress that checks no client certificate (an Ingress of its own: the chain's with
    no auth-tls-* annotations), beside the chain's host that does: the SNI/Host mismatch of emissary #3340 and
    gateway-api #72. Its TLS Secret is the chain's (nginx serves its fake certificate for it: not what is tested)."""
    first = t.ingress.primary
    open_ = dataclasses.replace(first, name=f"{first.name}-open", host=open_host_of(t), annotations=MappingProxyType(
        {k: v for k, v in first.annotations.items() if not k.startswith("auth-tls-")}))
    return t.replace(ingress=dataclasses.replace(t.ingress, ingresses=(*t.ingress.ingresses, open_)))


def _misdirected_cases(t: Topology) -> Iterator[Case]:
    """A request for the chain's mTLS host on a TLS session whose SNI is another host of the same ingress that checks
    no client certificate (:func:`_an_open_host`): without a certificate, and with a verified one."""
    src = ("nginx src/http/ngx_http_request.c 2261-2280 at release-1.22.1 (ngx_http_set_virtual_server: the Host's "
           "server checks client certificates and is not the SNI's → 421); emissary #3340, gateway-api #72 (mTLS "
           "bypass by SNI/Host mismatch); cause: nginx error.log (measured)")
    probe = {"server_name": open_host_of(t), "http_host": t.ingress.host, "verify": False}
    yield Case("ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-tls-session", "ingress", "ingress-nginx",
               "per host", http_reject(421, hop="ingress", cause="misdirected"), src, variant=_an_open_host,
               identity=None, probe=probe)
    yield Case("ingress-refuses-a-request-for-its-mtls-host-on-another-hosts-verified-session", "ingress",
               "ingress-nginx", "per host", http_reject(421, hop="ingress", cause="misdirected"),
               "nginx src/http/ngx_http_request.c 2261-2280 at release-1.22.1 (the Host's server checks client "
               "certificates: 421 whatever the session verified); emissary #3340, gateway-api #72; cause: nginx "
               "error.log (measured)", variant=_an_open_host, probe=probe)


def _checks_client_certs(t: Topology) -> bool:
    """Whether the chain's host verifies client certificates (an auth-tls-secret with a CA, verify not off)."""
    ing = t.ingress.auth_tls_ingress()
    secret = t.ingress.secret(ing.annotation("auth-tls-secret") or "")
    return secret is not None and bool(secret.ca or secret.malformed_ca) and ing.verify_client() != "off"


def _proxy_ssl_verify_off_pod_unknown_ca(t: Topology) -> Topology:
    return _serve("pod", "unknown-ca")(t.with_ingress_annotations(proxy_ssl_verify=None))


def _apim_validates_without_negotiation(t: Topology) -> Topology:
    return _apim_validates(t).with_hop("apim", negotiate_client_certificate=False)


def _apim_negotiates(t: Topology) -> Topology:
    """Negotiation on, and no validate-client-certificate in the policy (a chain whose policy has one drops it)."""
    return t.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=False)


def _ca_secret(**changes: Any) -> Callable[[Topology], Topology]:
    def variant(t: Topology) -> Topology:
        name = _auth_secret(t)
        secrets = tuple(dataclasses.replace(s, **changes) if s.name == name else s for s in t.ingress.secrets)
        return t.replace(ingress=dataclasses.replace(t.ingress, secrets=secrets))

    variant.__name__ = "ca_secret_" + "_".join(changes)
    return variant


def _cross_namespace(allow: bool) -> Callable[[Topology], Topology]:
    def variant(t: Topology) -> Topology:
        name = _auth_secret(t)
        t = _ca_secret(namespace="security")(t).with_ingress_annotations(auth_tls_secret=f"security/{name}")
        return t.replace(ingress=dataclasses.replace(t.ingress, allow_cross_namespace_resources=allow))

    variant.__name__ = f"cross_namespace_ca_secret_{'allowed' if allow else 'refused'}"
    return variant


def _subject_parts(t: Topology, leaf: str) -> tuple[str, str]:
    """(CN, O) of ``leaf``'s subject on ``t`` — what ingress-nginx's match-cn regex sees in ``$ssl_client_s_dn``."""
    spec = t.pki.leaf(leaf)
    org = spec.organization
    if spec.subject:
        found = re.search(r"(?:^|,)\s*O=([^,]+)", spec.subject)
        org = found.group(1) if found else org
    return spec.common_name, org


def _ingress_nginx_cases(t: Topology) -> Iterator[Case]:
    caller = trusted_identity(t, "ingress", "apim-client")
    try:
        cn, org = _subject_parts(t, caller)
    except KeyError:
        cn, org = "apim-client", "Contoso"  # reference names: the cases skip by design on a chain without them
    cn_re = cn.replace(".", "\\.")
    prefix = cn_re.split("-")[0] if "-" in cn_re else cn_re[:-1]
    e2e = "ingress-nginx e2e authtls.go"
    docs = "ingress-nginx annotations docs"
    optional = _annotations(auth_tls_verify_client="optional")
    yield Case("ingress-optional-accepts-missing-client-cert", "ingress", "ingress-nginx", "verify optional",
               ok(200), docs + " (auth-tls-verify-client optional)", variant=optional, identity=None,
               check=_header("ssl-client-verify", lambda v: v == "NONE", "NONE"))
    yield Case("ingress-optional-still-rejects-client-cert-from-unknown-ca", "ingress", "ingress-nginx",
               "verify optional", http_reject(400, CERT_ERROR, hop="ingress", cause="unknown-issuer"),
               "nginx ssl_verify_client optional; cause: nginx error.log (measured)",
               variant=optional, identity=f"{caller}~unknown-ca")
    yield Case("ingress-optional-passes-verified-identity", "ingress", "ingress-nginx", "verify optional", ok(200),
               docs, variant=optional, check=_header("ssl-client-verify", lambda v: v == "SUCCESS", "SUCCESS"))
    yield Case("ingress-optional-no-ca-lets-unknown-ca-through-marked-failed", "ingress", "ingress-nginx",
               "verify optional_no_ca", ok(200), docs + " (optional_no_ca)",
               variant=_annotations(auth_tls_verify_client="optional_no_ca"), identity=f"{caller}~unknown-ca",
               check=_header("ssl-client-verify", lambda v: (v or "").startswith("FAILED"), "FAILED:…"))
    yield Case("ingress-verify-off-accepts-missing-client-cert", "ingress", "ingress-nginx", "verify off", ok(200),
               e2e + " #2 #5", variant=_annotations(auth_tls_verify_client="off"), identity=None)
    yield Case("ingress-invalid-verify-client-value-means-on", "ingress", "ingress-nginx", "verify invalid→on",
               http_reject(400, NO_CERT, hop="ingress", cause="no-client-cert"),
               "ingress-nginx authtls unit tests: invalid value → on",
               variant=_annotations(auth_tls_verify_client="sometimes"), identity=None)
    page = "https://errors.contoso.example/mtls"
    yield Case("ingress-error-page-redirects-missing-client-cert", "ingress", "ingress-nginx", "error page", ok(302),
               e2e + " #3", variant=_annotations(auth_tls_error_page=page), identity=None,
               check=lambda r, c: None if r.headers.get("location") == page else
               f"Location {r.headers.get('location')!r}, expected {page!r}")
    # the chain's own Ingress may not ask for it: then the case asks (a variant), as the does-not-pass case drops it
    passes = parse_go_bool(t.ingress.auth_tls_ingress().annotation("auth-tls-pass-certificate-to-upstream") or "")
    yield Case("ingress-passes-client-cert-to-upstream", "ingress", "ingress-nginx", "pass cert", ok(200), e2e + " #4",
               variant=None if passes else _annotations(auth_tls_pass_certificate_to_upstream="true"),
               check=_header("ssl-client-cert", lambda v: (v or "").startswith("-----BEGIN%20CERTIFICATE-----"),
                             "the URL-escaped PEM"))
    yield Case("ingress-does-not-pass-client-cert-unless-asked", "ingress", "ingress-nginx", "pass cert", ok(200),
               docs, variant=_annotations(auth_tls_pass_certificate_to_upstream=None),
               check=_header("ssl-client-cert", lambda v: v is None, "absent"))
    for name, regex, expect in (
        ("rejects-non-matching-cn", "CN=notgonnamatch", MATCH_CN_REJECT),
        ("accepts-matching-cn", f"CN={cn_re}", ok(200)),
        ("match-cn-is-unanchored-prefix", f"CN={prefix}", ok(200)),
        ("match-cn-spans-the-whole-dn", f"CN=.*O={org}", ok(200)),
        ("match-cn-alternation", f"CN=other|CN={cn_re}", ok(200)),
        ("match-cn-anchored-at-the-end-rejects", f"CN={prefix}$", MATCH_CN_REJECT),
    ):
        yield Case(f"ingress-{name}", "ingress", "ingress-nginx", "match-cn", expect, e2e + " #6 #7 #9",
                   variant=_annotations(auth_tls_match_cn=regex))
    yield Case("ingress-fails-closed-without-ca-secret", "ingress", "ingress-nginx", "CA secret", FAIL_CLOSED,
               "ingress-nginx: missing CA secret → return 403",
               variant=_annotations(auth_tls_secret="default/does-not-exist"))
    yield Case("ingress-fails-closed-with-malformed-ca-secret", "ingress", "ingress-nginx", "CA secret",
               FAIL_CLOSED, "ingress-nginx: malformed CA secret → return 403",
               variant=_ca_secret(malformed_ca=True))
    yield Case("ingress-refuses-cross-namespace-ca-secret", "ingress", "ingress-nginx", "CA secret", FAIL_CLOSED,
               "ingress-nginx: allow-cross-namespace-resources false", variant=_cross_namespace(False))
    yield Case("ingress-allows-cross-namespace-ca-secret-when-enabled", "ingress", "ingress-nginx", "CA secret",
               ok(200), "ingress-nginx: allow-cross-namespace-resources true", variant=_cross_namespace(True))
    yield Case("ingress-auth-tls-applies-to-every-ingress-on-the-host", "ingress", "ingress-nginx", "per host",
               http_reject(400, NO_CERT, hop="ingress", cause="no-client-cert"), "ingress-nginx #3964 #3200 #6013",
               variant=_two_ingresses_one_host,
               identity=None, probe={"path": "/healthz"})
    if _checks_client_certs(t):  # nginx's 421 needs a Host whose server verifies client certificates
        yield from _misdirected_cases(t)
    yield Case("ingress-proxy-ssl-verify-without-name-fails-on-upstream-balancer", "ingress", "ingress-nginx",
               "proxy-ssl", upstream_failure(502, hop="ingress", cause="name-mismatch"),
               "ingress-nginx #4928 #12883; cause: nginx error.log (measured)",
               variant=_annotations(proxy_ssl_name=None))
    yield Case("ingress-proxy-ssl-verify-off-accepts-any-pod-cert", "ingress", "ingress-nginx", "proxy-ssl", ok(200),
               "ingress-nginx: proxy-ssl-verify defaults to off (an insecure default this case documents)",
               variant=_proxy_ssl_verify_off_pod_unknown_ca)


def _apim_cases(t: Topology) -> Iterator[Case]:
    src = "APIM docs: negotiateClientCertificate is required for client certs over HTTP/2"
    h2 = {"alpn": ("h2",)}
    h1 = {"alpn": ("http/1.1",)}
    consumer = consumer_identity(t, "apim")  # the identity APIM's CA certificates trust on this chain
    for proto, pv in (("http1", h1), ("http2", h2)):
        yield Case(f"apim-negotiate-on-validates-client-cert-over-{proto}", "apim", "apim", f"negotiate on {proto}",
                   ok(200), src, variant=_apim_validates, identity=consumer, probe=pv)
        yield Case(f"apim-negotiate-off-never-sees-client-cert-over-{proto}", "apim", "apim",
                   f"negotiate off {proto}", http_reject(401, hop="apim", cause="no-client-cert"),
                   src + " (policy without negotiation → 401)",
                   variant=_apim_validates_without_negotiation,
                   identity=consumer, probe=pv)
        yield Case(f"apim-negotiate-on-without-policy-accepts-missing-cert-over-{proto}", "apim", "apim",
                   f"negotiate on {proto}", ok(200), "APIM: negotiation only requests a cert",
                   variant=_apim_negotiates,
                   identity=None, probe=pv)
    yield Case("apim-client-cert-layer-is-reached-through-the-gateway", "apim", "apim", "through gateway",
               http_reject(401, hop="apim", cause="no-client-cert"),
               "APIM validate-client-certificate behind App Gateway (no client cert forwarded)",
               via="chain", variant=_apim_validates)


CASE_BUILDERS: tuple[Callable[[Topology], Iterator[Case]], ...] = (
    _client_cert_cases, lambda _t: _server_cert_cases(), _pod_cases,
    lambda _t: _protocol_cases(), lambda _t: _trace_cases(), _ingress_nginx_cases,
    _apim_cases, oauth_cases, cross_domain_cases, lambda _t: stripping_cases(),
    lambda _t: fidelity_cases(),
)


def catalogue_for(topology: Topology | None = None) -> tuple[Case, ...]:
    """The catalogue generated for ``topology`` (default: the reference chain), in catalogue order; ids are unique.

    Generated from the chain: the cross-domain cases, per verifying hop and per other trust domain of the chain's
    own PKI plan (harness/cases/cross_domain.py). The other builders are written for the reference chain's names; a
    case that needs a name the chain lacks skips by design (:func:`harness.cases.model.needs_reference`). For the
    reference chain this is today's catalogue, case by case (tests/unit/test_catalogue_generated.py)."""
    t = topology or default_topology()
    out = [c for build in CASE_BUILDERS for c in build(t)]
    home = t.focus_on(None)
    for host in home.ingress.hosts[1:]:
        out += host_cases(home.focus_on(host))
    out = [on_gateway_api(c, home) for c in out]  # each case with its expectation on a Gateway API ingress
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            raise ValueError(f"duplicate case id {c.id}")
        seen.add(c.id)
    return tuple(out)


#: the groups of ingress cases repeated on every other host: what a host's own annotations decide (its auth-tls-*
#: client-certificate check, its TLS versions). The controller's merging and admission rules (group ingress-nginx)
#: do not depend on the host and run once, on the home host
HOST_GROUPS: Final = ("client-cert", "protocol")


#: through an API whose backend is the host: the chain end to end on that API's path
HOST_CHAIN_CASES: Final = ("every-hop-is-tls-end-to-end", "ingress-verified-identity-is-apims-client-cert")


def _for_host(c: Case, through_api: bool) -> Case | None:
    """``c`` as a case of a host other than the home one, or None when it is not about what a host decides.
    ``through_api``: an API of APIM has this host as its backend, so a request can reach it through the chain."""
    if c.hop == "ingress" and c.via == "direct" and c.endpoint is None and c.group in HOST_GROUPS:
        return c
    if c.group == "server-cert" and c.hop == "pod" and c.via == "chain" and c.expect.hop == "ingress":
        # the host's proxy-ssl-* judge the pod's cert: through its API, else probed at the ingress as APIM calls it
        return c if through_api else dataclasses.replace(c, via="direct", endpoint="ingress")
    if through_api and c.via == "chain" and (
            (c.group == "server-cert" and c.hop == "ingress") or c.id in HOST_CHAIN_CASES):
        return c  # APIM's backend checks of that API judge the host's own server cert; the chain on that path
    return None  # without an API to the host nothing but APIM's home backend calls it


def host_cases(view: Topology) -> list[Case]:
    """The cases of the ingress host ``view`` is focused on (:meth:`Topology.focus_on`), ids ``<case id>@<host>``:
    each probes that host on the same running chain — directly at the ingress as APIM would, or through the chain
    under the path of the API whose backend it is — and expects what THAT host's annotations (and that API's backend
    checks) mean."""
    host = view.ingress.host
    through_api = view.apim.focus is not None
    out = []
    for build in CASE_BUILDERS:
        for c in build(view):
            kept = _for_host(c, through_api)
            if kept is not None:
                out.append(dataclasses.replace(kept, id=f"{c.id}@{host}", host=host))
    return out


def cases() -> list[Case]:
    """Every case of the reference chain's catalogue, in catalogue order."""
    return list(catalogue_for())


CATALOGUE: tuple[Case, ...] = catalogue_for()
