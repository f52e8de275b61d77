"""The fidelity cases: the ingress behaves as the ingress-nginx controller (controller-v1.15.1) renders it.

One or more cases per difference of issue 19 (docs/fidelity.md, the ledger, names each case and its source).
A change the controller's admission webhook refuses is modelled as what the cluster then holds: the previous
configuration (``kubectl apply`` failed) — the case checks that the chain still answers as before AND that the
refusal line names the annotation, its value and the rule.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from harness.cases.cross_domain import passthrough_to_the_pod
from harness.cases.model import NO_CERT, Case, Group, Skip
from harness.errors import HarnessError
from harness.model.topology import Topology
from harness.model.wire import RESUMED_FIELD
from harness.probe.outcomes import http_reject, ok, server_untrusted, upstream_failure
from harness.render.nginx_admission import admission_refusal
from harness.targets.base import SERVER_HEADER_REMOVAL

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
    return passthrough_to_the_pod(t)


def _tls13_only_pod_backend_protocol_alone(t: Topology) -> Topology:
    """backend-protocol HTTPS and no proxy-ssl-* (the common case); the pod speaks TLS 1.3 only."""
    drop = {k.replace("-", "_"): None for k in t.ingress.primary.annotations if k.startswith("proxy-ssl-")}
    return t.with_ingress_annotations(**drop).with_hop("pod", listener__min_version="1.3")


def _tls_secret_for_another_host(t: Topology) -> Topology:
    """The Ingress TLS Secret holds a cert that does not name the host (a valid cert, the wrong SAN)."""
    name = f"{t.ingress.tls_leaf}~wrong-san"
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


# -- row 9: connections to the pod -----------------------------------------------------------------------------------
#: ingress-nginx's defaults (config.go 866-868: proxy-next-upstream "error timeout", 3 tries)
TRIES = 3
#: the pauses between bounded re-reads of a log the check needs (nginx writes its access log after the answer went
#: out): the first after 5 ms, doubling up to ~1.6 s in all
LOG_PAUSES: Final = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.32, 0.32, 0.32)
#: at most this many requests to meet a connection the ingress opened for the request (each one closes the one it
#: came on, so idle pooled connections drain)
FRESH_TRIES = 8


def _pod_serves_unknown_ca(t: Topology) -> Topology:
    return t.with_hop("pod", listener__server_cert=f"{t.listener_of('pod').server_cert}~unknown-ca")


def _as_apim(c: RunningChain) -> dict[str, Any]:
    """probe() arguments presenting the ingress's caller's client cert (what the case's own probe presented)."""
    name = c.topology.caller_of("ingress").client_cert
    if name is None:
        return {"client_cert": None, "client_key": None}
    leaf = c.certs.leaf(name)
    return {"client_cert": leaf.chain, "client_key": leaf.key}


def _pod_entry(r: ProbeResult) -> dict[str, str]:
    """The pod's own trace entry (its connection facts: harness.model.wire.POD_FIELDS), {} when the pod did not
    answer."""
    try:
        entry = ((r.json() or {}).get("trace") or {}).get("pod") or {}
    except HarnessError:  # not the pod's JSON: no entry
        return {}
    return {str(k): str(v) for k, v in entry.items()}


def _no_server_header(r: ProbeResult, c: RunningChain) -> str | None:
    """Neither the ingress's own page (the case's probe) nor the pod's answer through it has a Server header."""
    lacking = c.limits.lacks.get(SERVER_HEADER_REMOVAL)
    if lacking is not None:
        raise Skip(lacking, declared=True)
    if "server" in r.headers:
        return f"the ingress's own {r.status} page has `Server: {r.headers['server']}`; ingress-nginx sends none"
    proxied = c.probe("ingress", **_as_apim(c))
    if proxied.status != 200:
        return f"the pod's answer through the ingress: {proxied.describe()}"
    if "server" in proxied.headers:
        return (f"the pod's answer through the ingress has `Server: {proxied.headers['server']}`; ingress-nginx "
                "sends none")
    return None


def _same_pod_connection(r: ProbeResult, c: RunningChain) -> str | None:
    """A second request through the ingress reaches the pod on the connection the first one used."""
    first = _pod_entry(r)
    second = _pod_entry(c.probe("ingress", **_as_apim(c)))
    if not first.get("connection") or not second.get("connection"):
        return f"the pod reported no connection (first {first or 'no answer'}, second {second or 'no answer'})"
    if first["connection"] != second["connection"]:
        return (f"the second request reached the pod on connection {second['connection']}, the first on "
                f"{first['connection']}: the ingress did not keep the pod connection alive")
    if int(second["connection_requests"]) != int(first["connection_requests"]) + 1:
        return f"request {second['connection_requests']} on connection {second['connection']}, expected the next one"
    return None


def _full_handshake_on_a_new_connection(r: ProbeResult, c: RunningChain) -> str | None:
    """The case's probe asked the pod to close its connection (``/close``); the next connection the ingress opens to
    the pod is a full handshake (the pod's ``session_reused`` is false)."""
    first = _pod_entry(r)
    if first.get("session_reused") != "false":
        return f"the pod's connection {first.get('connection', '?')} resumed a TLS session ({first or 'no answer'})"
    for _ in range(FRESH_TRIES):
        seen = _pod_entry(c.probe("ingress", path="/close", **_as_apim(c)))
        if not seen:
            return "the pod did not answer through the ingress"
        if seen["connection_requests"] == "1" and seen["connection"] != first.get("connection"):
            if seen["session_reused"] != "false":
                return (f"the ingress's new connection {seen['connection']} to the pod resumed the TLS session of "
                        f"an earlier one; ingress-nginx never resumes to a pod")
            return None
    return f"no request in {FRESH_TRIES} came on a connection the ingress opened for it"


def _ingress_closes_each_connection(t: Topology) -> Topology:
    """The controller's ConfigMap ``keep-alive: "0"``: nginx closes each client connection after its answer, so apim
    opens a new TLS connection to the ingress for every request."""
    return t.with_controller(keep_alive="0")


def _apim_full_handshake_each_time(r: ProbeResult, c: RunningChain) -> str | None:
    """Every request through the chain reached the ingress on a new connection from apim (the lane's ingress keeps
    none alive); none of them resumed apim's earlier TLS session: a resumed session skips the ingress's
    certificate, so a cert the ingress started serving since would never be verified (issue 15). Behind
    ssl-passthrough apim's session ends at the pod: the pod closes each connection (``/close``) and its own entry
    says whether the next one resumed."""
    if c.topology.passthrough:
        return _apim_full_handshake_at_the_pod(c)
    seen = [r] + [c.probe("gateway") for _ in range(FRESH_TRIES - 1)]
    for n, answer in enumerate(seen, 1):
        ingress = ((answer.json() or {}).get("trace") or {}).get("ingress")
        if answer.status != 200 or ingress is None:
            return f"request {n} through the chain: {answer.describe()}"
        if RESUMED_FIELD not in ingress:
            raise Skip(f"the {c.target} chain's ingress trace has no `{RESUMED_FIELD}` field: whether apim resumed "
                       "its TLS session cannot be seen", declared=True)
        if ingress[RESUMED_FIELD] != ".":
            return (f"request {n}: apim resumed its TLS session to the ingress ({RESUMED_FIELD}="
                    f"{ingress[RESUMED_FIELD]!r}): a resumed session skips the ingress's certificate check")
    return None


def _apim_full_handshake_at_the_pod(c: RunningChain) -> str | None:
    close = c.topology.apim.path.rstrip("/") + "/close"
    fresh = 0
    for n in range(1, FRESH_TRIES + 1):
        pod = _pod_entry(c.probe("gateway", path=close))
        if not pod:
            return f"request {n} through the chain: the pod did not answer"
        if pod.get("session_reused") != "false":
            return (f"request {n}: apim resumed its TLS session to the pod behind ssl-passthrough (pod connection "
                    f"{pod.get('connection', '?')}): a resumed session skips the pod's certificate check")
        fresh += pod.get("connection_requests") == "1"
    if fresh < 2:
        return f"only {fresh} of {FRESH_TRIES} requests came on a new connection: nothing could be resumed"
    return None


def _tried(times: int) -> Check:
    """One request through the ingress to a pod whose cert it rejects: ``times`` upstream tries in the ingress's
    access log line for that request ($upstream_status in ingress-nginx's log-format-upstream) and as many
    ``upstream SSL certificate verify error`` lines in its error log. (Not the pod's log: nginx checks the pod's cert
    after the handshake completed, so the pod sees a handshake succeed and the connection close.)"""

    def check(r: ProbeResult, c: RunningChain) -> str | None:
        if "ingress-access" not in c.logs or "ingress-error" not in c.logs:
            raise Skip(f"the {c.target} target exposes no ingress access and error logs: the tries cannot be "
                       "counted", declared=True)
        rid = f"mtls-tries-{uuid.uuid4().hex}"
        mark = c.evidence_mark()
        again = c.probe("ingress", headers={"x-request-id": rid}, **_as_apim(c))
        if again.status != 502:
            return f"the request to count the tries on got {again.describe()}"
        line, refused = "", 0
        for pause in (*LOG_PAUSES, None):
            logs = c.evidence_since(mark)
            line = next((x for x in logs.get("ingress-access", "").splitlines() if x.endswith(" " + rid)), "")
            refused = logs.get("ingress-error", "").count("upstream SSL certificate verify error")
            if line or pause is None:
                break
            time.sleep(pause)
        found = re.search(r"((?:\d{3}|-)(?:, (?:\d{3}|-))*) " + re.escape(rid) + "$", line)
        if not found:
            return f"no access log line for request {rid} (seen: {line!r})"
        statuses = found.group(1).split(", ")
        if len(statuses) != times:
            return (f"the ingress tried the pod {len(statuses)} time(s) ($upstream_status {found.group(1)!r}), "
                    f"expected {times}")
        if refused != times:
            return f"the ingress logged {refused} upstream verify error(s) for the request, expected {times}"
        return None

    return check


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
    # 9 connections to the pod, and the Server header
    yield Case("ingress-sends-no-server-header", "ingress", g, "no Server header",
               http_reject(400, NO_CERT, hop="ingress", cause="no-client-cert"),
               f"{SRC} config.go 828 (server-tokens false); nginx.tmpl 338-341 (more_clear_headers Server)",
               identity=None, check=_no_server_header)
    yield Case("ingress-keeps-the-pod-connection-alive-between-requests", "ingress", g, "upstream keepalive",
               ok(200), f"{SRC} config.go 888-891 (upstream-keepalive-*); nginx.tmpl 380-388, 534-539",
               check=_same_pod_connection)
    yield Case("ingress-never-resumes-a-tls-session-to-the-pod", "ingress", g, "no upstream resumption", ok(200),
               f"{SRC} nginx.tmpl 504 with lua-nginx-module ngx_http_lua_balancer.c@v0.10.28 830-855 (no session "
               "saved or set); openresty/lua-resty-core#67", probe={"path": "/close"},
               check=_full_handshake_on_a_new_connection)
    yield Case("apim-makes-a-full-handshake-on-every-new-connection-to-the-ingress", "apim", g,
               "no upstream resumption", ok(200),
               "issue 15 (a resumed upstream session passed an untrusted ingress cert after a reload); Envoy "
               "UpstreamTlsContext max_session_keys (docs/design.md); the ingress's evidence: nginx "
               f"$ssl_session_reused; keep-alive 0: {SRC} config.go 809, nginx.tmpl 263", via="chain",
               variant=_ingress_closes_each_connection, check=_apim_full_handshake_each_time)
    yield Case("ingress-tries-a-rejected-pod-cert-three-times", "ingress", g, "upstream tries",
               upstream_failure(502, hop="ingress", cause="unknown-issuer"),
               f"{SRC} config.go 866-868 (proxy-next-upstream error timeout, 3 tries); balancer.lua 354 "
               "(set_more_tries); nginx ngx_http_upstream.c@release-1.27.1 1794-1800, 1830-1832; cause: nginx "
               "error.log (measured)", variant=_pod_serves_unknown_ca, check=_tried(TRIES))
