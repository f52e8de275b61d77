"""Cross-domain cases and the attribution of trace-header stripping.

**Cross-domain.** Every verifying hop trusts ONE trust domain of the chain's PKI plan. A VALID leaf of any OTHER
domain must be refused there — presented as a client cert (gateway in Strict mode, APIM's validate-client-certificate,
the ingress, the pod) and served as a server cert (each caller's upstream check). The fault catalogue's unknown CA is a
rogue root that no bundle holds, so an over-broad trust bundle (every CA of the set in the ingress's ``ca.crt``, a
common production mistake) passes it; these cases catch it: the refusal must come from the right hop for
``unknown-issuer`` (``not-trusted`` where the Envoy stand-ins' Lua can say no more). An over-broad verifier refuses a
server leaf presented as a client for its EKU, or a cert for another name — another cause, so the case fails.

The cases are generated from the chain: each verifying hop's OWN domain is the root of the CA it is configured to
trust (its client CA, or the root of the cert it serves), and one case is made per other trust domain of the chain's
PKI plan that has a leaf for that use. The ids name the foreign domain by its root CA name in the chain's plan, e.g.
``ingress-refuses-client-cert-from-consumer-ca`` on the reference chain
(:func:`harness.model.topology.default_pki_plan`) — on yours, your CA names.

**Stripping.** The gateway strips every client-supplied ``x-mtls-trace-*`` header; apim strips its own and later
hops'; the ingress replaces its own. Each stand-in names the trace headers that arrived from its caller in its own
trace entry (``stripped=…``), so a case proves WHICH hop removed a forged header: a gateway that stopped stripping
fails the gateway's case (apim's entry then shows it had to strip them), not silently passes because apim did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from harness.cases.model import CERT_ERROR, Case
from harness.model.topology import HopName, LeafSpec, PKIPlan, Topology, default_topology
from harness.model.wire import PROXY_HOPS, STRIPPED_FIELD, header_name
from harness.probe.outcomes import Outcome, http_reject, ok, server_untrusted, tls_alert, upstream_failure

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult
    from harness.targets.base import RunningChain

__all__ = ["FAKE_CERT_SOURCE", "SPOOF", "apim_validates", "consumer_identity", "cross_domain_cases", "foreign_leaves",
           "gateway_strict", "passthrough_to_the_pod", "serve_leaf", "stripped_by", "stripping_cases",
           "trusted_identity"]


# ------------------------------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------------------------------
def gateway_strict(t: Topology) -> Topology:
    """App Gateway mTLS "Strict": the gateway demands a client cert of the consumer CA. A chain whose gateway is
    Strict already keeps its own trusted client CA and client identity."""
    if t.gateway.listener.client_auth == "required" and t.gateway.listener.client_ca and t.client.client_cert:
        return t
    client = dataclasses.replace(t.client, client_cert="consumer-client")
    strict = t.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")
    return strict.replace(client=client)


def apim_validates(t: Topology) -> Topology:
    """APIM with certificate negotiation and the validate-client-certificate policy (a chain whose APIM does both
    already is kept as it is)."""
    if t.apim.negotiate_client_certificate and t.apim.validate_client_certificate:
        return t
    return t.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)


def trusted_identity(t: Topology, hop: HopName, fallback: str) -> str:
    """A VALID client identity of ``t`` that ``hop`` trusts: the chain's own caller identity when ``hop``'s client CA
    issued it, else the first client leaf of the plan under that CA's root; ``fallback`` (a reference name, which
    then skips by design on a chain without it) when the hop verifies no client cert."""
    ca = t.listener_of(hop).client_ca
    if not ca:
        return fallback
    try:
        root = t.pki.root_of(ca)
        own = t.caller_of(hop).client_cert
        if own and t.pki.root_of(t.pki.leaf(own).issuer) == root:
            return own
        return next(lf.name for lf in t.pki.leaves if lf.usage == "client" and t.pki.root_of(lf.issuer) == root)
    except (KeyError, StopIteration):
        return fallback


def passthrough_to_the_pod(t: Topology) -> Topology:
    """ssl-passthrough turned on (the annotation and the controller flag): the pod terminates APIM's TLS session, so
    it requires a client cert of the CA that issued APIM's, and APIM trusts the CA of the pod's cert (the reference
    chain's apim-client-ca and pod-ca; on yours, your CAs)."""
    try:
        client_ca = t.pki.leaf(t.apim.upstream.client_cert or "apim-client").issuer
        pod_ca = t.pki.leaf(t.pod.listener.server_cert).issuer
    except KeyError:
        client_ca, pod_ca = "apim-client-ca", "pod-ca"  # reference names: skips by design on a chain without them
    t = t.with_ingress_annotations(ssl_passthrough="true").with_controller(enable_ssl_passthrough=True)
    t = t.with_hop("pod", listener__client_auth="required", listener__client_ca=client_ca)
    return t.with_hop("apim", upstream__trusted_ca=pod_ca)


def consumer_identity(t: Topology, hop: HopName = "gateway") -> str:
    """The client identity the gateway (Strict) or APIM's validate-client-certificate accepts on ``t``: on the
    reference chain ``consumer-client``; on yours, one its configured client CA issued."""
    variant = gateway_strict if hop == "gateway" else apim_validates
    return trusted_identity(variant(t), hop, "consumer-client")


def serve_leaf(hop: HopName, leaf: str) -> Callable[[Topology], Topology]:
    """A variant where ``hop`` serves the leaf ``leaf`` (a valid cert of another trust domain) instead of its own."""

    def variant(t: Topology) -> Topology:
        if hop == "ingress":
            return t.replace(ingress=t.ingress.serving(leaf))
        return t.with_hop(hop, listener__server_cert=leaf)

    variant.__name__ = f"{hop}_serves_{leaf.replace('-', '_')}"
    return variant


# ------------------------------------------------------------------------------------------------------------------
# cross-domain cases
# ------------------------------------------------------------------------------------------------------------------
def foreign_leaves(plan: PKIPlan, own_root: str, usage: str) -> list[tuple[str, LeafSpec]]:
    """(root, leaf) for every trust domain of ``plan`` other than ``own_root`` that has a leaf of ``usage`` — a VALID
    cert for that use. (A server leaf presented as a client cert is refused for its EKU by nginx whatever the trust
    bundle holds — measured: ``(26:unsuitable certificate purpose)`` — so it would prove nothing about trust.)"""
    out: dict[str, LeafSpec] = {}
    for leaf in plan.leaves:
        root = plan.root_of(leaf.issuer)
        if root != own_root and leaf.usage == usage and root not in out:
            out[root] = leaf
    return list(out.items())


#: why a client certificate of the root the sender also trusts arrives with that root (docs/behaviour.md)
AUTO_CHAIN_SOURCE: Final = ("; cause: OpenSSL completes a certificate sent without its chain from the sender's "
                            "trust store (ssl_add_cert_chain, unless SSL_MODE_NO_AUTO_CHAIN), so the verifier meets "
                            "the self-signed root (measured: the passthrough example's pod)")
#: why apim sees the controller's fake certificate (docs/fidelity.md row 3)
FAKE_CERT_SOURCE: Final = ("; cause: ingress-nginx serves its fake certificate when the Secret's cert does not cover "
                           "the host (controller.go 1448-1495 at controller-v1.15.1; docs/fidelity.md row 3), and "
                           "apim's detail header calls it self-signed (measured)")
_SRC: Final = "issue 15 (an over-broad trust bundle passes every unknown-CA case); "
#: (hop, id stem, variant that makes it verify client certs, expected refusal, evidence source)
_CLIENT_SIDE: Final[tuple[tuple[HopName, str, Callable[[Topology], Topology] | None, Outcome, str], ...]] = (
    ("gateway", "gateway-strict-refuses-client-cert-from", gateway_strict,
     http_reject(400, CERT_ERROR, hop="gateway", cause="not-trusted"),
     "DESIGN.md App Gateway Strict row; cause: the stand-in's detail header"),
    ("apim", "apim-refuses-client-cert-from", apim_validates,
     http_reject(401, hop="apim", cause="not-trusted"),
     "DESIGN.md APIM validate-client-certificate row; cause: the stand-in's detail header"),
    ("ingress", "ingress-refuses-client-cert-from", None,
     http_reject(400, CERT_ERROR, hop="ingress", cause="unknown-issuer"),
     "ingress-nginx auth-tls-secret ca.crt; cause: nginx error.log at info (measured)"),
    ("pod", "pod-refuses-client-cert-from", None,
     tls_alert("unknown_ca", hop="pod", cause="unknown-issuer"),
     "Python ssl CERT_OPTIONAL verifies a presented cert; cause: the pod's log (measured)"),
)
#: (hop serving, id stem, expected refusal by its caller, evidence source)
_SERVER_SIDE: Final[tuple[tuple[HopName, str, Outcome, str], ...]] = (
    ("gateway", "client-refuses-gateway-cert-from",
     server_untrusted(hop="client", cause="unknown-issuer"), "DESIGN.md: public listener; cause: OpenSSL's verify"),
    ("apim", "gateway-refuses-apim-cert-from", upstream_failure(502, hop="gateway", cause="unknown-issuer"),
     "DESIGN.md App Gateway backend row; cause: the stand-in's detail header (measured)"),
    ("ingress", "apim-refuses-ingress-cert-from",
     upstream_failure(500, hop="apim", cause="unknown-issuer"),
     "DESIGN.md APIM backend TLS row; cause: the stand-in's detail header (measured)"),
    ("pod", "ingress-refuses-pod-cert-from", upstream_failure(502, hop="ingress", cause="unknown-issuer"),
     "DESIGN.md nginx upstream row; cause: nginx error.log (measured)"),
)


def _client_root(t: Topology, hop: HopName) -> str | None:
    """The root of the CA ``hop`` verifies client certs with on ``t`` (None: it verifies none, or the CA is not in
    the plan)."""
    ca = t.listener_of(hop).client_ca
    try:
        return t.pki.root_of(ca) if ca else None
    except KeyError:
        return None


def cross_domain_cases(topology: Topology | None = None) -> Iterator[Case]:
    """A valid leaf of every other trust domain of ``topology``'s plan (default: the reference chain), presented
    (client side) and served (server side) at each verifier."""
    t = topology or default_topology()
    plan = t.pki
    for hop, stem, variant, expect, src in _CLIENT_SIDE:
        try:
            own = _client_root(variant(t) if variant is not None else t, hop)
        except KeyError:  # the variant names an identity of the reference chain this chain does not have
            continue
        if own is None:
            continue
        for root, leaf in foreign_leaves(plan, own, "client"):
            want, why = expect, src
            if expect.cause == "unknown-issuer" and root == t.server_ca_of(hop):
                # the probe trusts this root for the hop's server cert, so OpenSSL chains it into the client
                # certificate it sends: the verifier meets a self-signed root, not a missing issuer
                want, why = dataclasses.replace(expect, cause="self-signed-in-chain"), src + AUTO_CHAIN_SOURCE
            yield Case(f"{stem}-{root}", hop, "client-cert", "another trust domain", want, _SRC + why,
                       variant=variant, identity=leaf.name,
                       probe={"min_version": "1.3", "max_version": "1.3"} if hop == "pod" else {})
    ingress_host = t.ingress.primary.host
    for hop, stem, expect, src in _SERVER_SIDE:
        own = t.server_ca_of(hop)
        for root, leaf in foreign_leaves(plan, own, "server"):
            want, why = expect, src
            if hop == "ingress" and ingress_host not in leaf.sans:
                # the controller serves its fake certificate instead of a cert that does not cover the host
                want, why = upstream_failure(500, hop="apim", cause="self-signed"), FAKE_CERT_SOURCE[2:]
            yield Case(f"{stem}-{root}", hop, "server-cert", "another trust domain", want, _SRC + why,
                       via="chain", variant=serve_leaf(hop, leaf.name), caller_trust=True)


# ------------------------------------------------------------------------------------------------------------------
# stripping
# ------------------------------------------------------------------------------------------------------------------
FORGED: Final = "tls=forged; verify=SUCCESS; peer_subject=CN=forged"
SPOOF: Final = {header_name(h): FORGED for h in PROXY_HOPS}


def _trace(r: ProbeResult) -> dict[str, dict[str, str]]:
    return dict((r.json() or {}).get("trace") or {})


def stripped_by(first: str, sent: tuple[str, ...]) -> Callable[[ProbeResult, RunningChain], str | None]:
    """The check: hop ``first`` names every forged header it received (``sent``) as stripped, no hop after it saw one
    of them arrive, and no forged value reached the pod."""

    def check(r: ProbeResult, c: RunningChain) -> str | None:
        trace = _trace(r)
        forged = {h: v for h, v in trace.items() if "forged" in "".join(v.values())}
        if forged:
            return f"a forged trace header reached the pod: {forged}"
        own = trace.get(first, {}).get(STRIPPED_FIELD, "")
        if sorted(filter(None, own.split(","))) != sorted(sent):
            return (f"{first} names {own or 'nothing'} as stripped, expected {','.join(sent)}: it did not see or "
                    "did not remove the forged headers")
        later = PROXY_HOPS[PROXY_HOPS.index(first) + 1:]
        leaked = {h: trace.get(h, {}).get(STRIPPED_FIELD) for h in later if trace.get(h, {}).get(STRIPPED_FIELD)}
        if leaked:
            return (f"{first} forwarded forged trace headers: a later hop had to strip them ({leaked}) — the "
                    f"stripping is {first}'s job")
        return None

    check.__name__ = f"stripped_by_{first}"
    return check


def stripping_cases() -> Iterator[Case]:
    """One case per stripping hop (the gateway's is in the catalogue's trace group under its historic id)."""
    src = "DESIGN.md: the gateway strips inbound trace headers; harness/model/wire.py (apim strips its own and later)"
    apim_sent = tuple(PROXY_HOPS[1:])
    yield Case("apim-strips-forged-trace-headers-of-its-own-and-later-hops", "apim", "trace", "spoofed trace",
               ok(200), src, probe={"headers": {header_name(h): FORGED for h in apim_sent}},
               check=stripped_by("apim", apim_sent))
    yield Case("ingress-replaces-a-forged-own-trace-header", "ingress", "trace", "spoofed trace", ok(200),
               src + "; the ingress's proxy_set_header replaces its own header",
               probe={"headers": {header_name("ingress"): FORGED}}, check=stripped_by("ingress", ("ingress",)))
