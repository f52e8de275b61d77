"""Cross-domain cases and the attribution of trace-header stripping.

**Cross-domain.** Every verifying hop trusts ONE trust domain of the chain's PKI plan. A VALID leaf of any OTHER
domain must be refused there — presented as a client cert (gateway in Strict mode, APIM's validate-client-certificate,
the ingress, the pod) and served as a server cert (each caller's upstream check). The fault catalogue's unknown CA is a
rogue root that no bundle holds, so an over-broad trust bundle (every CA of the set in the ingress's ``ca.crt``, a
common production mistake) passes it; these cases catch it: the refusal must come from the right hop for
``unknown-issuer`` (``not-trusted`` where the Envoy stand-ins' Lua can say no more). An over-broad verifier refuses a
server leaf presented as a client for its EKU, or a cert for another name — another cause, so the case fails.

The ids name the foreign domain by its root CA in the reference plan (:func:`harness.model.topology.default_pki_plan`),
e.g. ``ingress-refuses-client-cert-from-consumer-ca``.

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
from harness.model.topology import HopName, LeafSpec, PKIPlan, Topology, default_pki_plan, default_topology
from harness.model.wire import PROXY_HOPS, STRIPPED_FIELD, header_name
from harness.probe.outcomes import Outcome, http_reject, ok, server_untrusted, tls_alert, upstream_failure

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult
    from harness.targets.base import RunningChain

__all__ = ["FAKE_CERT_SOURCE", "SPOOF", "apim_validates", "cross_domain_cases", "foreign_leaves", "gateway_strict",
           "serve_leaf", "stripped_by", "stripping_cases"]


# ------------------------------------------------------------------------------------------------------------------
# variants
# ------------------------------------------------------------------------------------------------------------------
def gateway_strict(t: Topology) -> Topology:
    """App Gateway mTLS "Strict": the gateway demands a client cert of the consumer CA."""
    client = dataclasses.replace(t.client, client_cert="consumer-client")
    strict = t.with_hop("gateway", listener__client_auth="required", listener__client_ca="consumer-ca")
    return strict.replace(client=client)


def apim_validates(t: Topology) -> Topology:
    """APIM with certificate negotiation and the validate-client-certificate policy."""
    return t.with_hop("apim", negotiate_client_certificate=True, validate_client_certificate=True)


def serve_leaf(hop: HopName, leaf: str) -> Callable[[Topology], Topology]:
    """A variant where ``hop`` serves the leaf ``leaf`` (a valid cert of another trust domain) instead of its own."""

    def variant(t: Topology) -> Topology:
        if hop == "ingress":
            secrets = tuple(dataclasses.replace(s, tls=leaf) if s.name == t.ingress.primary.tls_secret else s
                            for s in t.ingress.secrets)
            return t.replace(ingress=dataclasses.replace(t.ingress, server_cert=leaf, secrets=secrets))
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


#: why apim sees the controller's fake certificate (docs/fidelity.md row 3)
FAKE_CERT_SOURCE: Final = ("; cause: ingress-nginx serves its fake certificate when the Secret's cert does not cover "
                           "the host (controller.go 1448-1495 at controller-v1.15.1; docs/fidelity.md row 3), and "
                           "apim's detail header calls it self-signed (measured)")
_SRC: Final = "issue 15 (an over-broad trust bundle passes every unknown-CA case); "
#: (hop, its client-CA root in the reference chain, id stem, variant, expected refusal, evidence source)
_CLIENT_SIDE: Final[tuple[tuple[HopName, str, str, Callable[[Topology], Topology] | None, Outcome, str], ...]] = (
    ("gateway", "consumer-ca", "gateway-strict-refuses-client-cert-from", gateway_strict,
     http_reject(400, CERT_ERROR, hop="gateway", cause="not-trusted"),
     "DESIGN.md App Gateway Strict row; cause: the stand-in's detail header"),
    ("apim", "consumer-ca", "apim-refuses-client-cert-from", apim_validates,
     http_reject(401, hop="apim", cause="not-trusted"),
     "DESIGN.md APIM validate-client-certificate row; cause: the stand-in's detail header"),
    ("ingress", "apim-client-ca", "ingress-refuses-client-cert-from", None,
     http_reject(400, CERT_ERROR, hop="ingress", cause="unknown-issuer"),
     "ingress-nginx auth-tls-secret ca.crt; cause: nginx error.log at info (measured)"),
    ("pod", "pod-ca", "pod-refuses-client-cert-from", None,
     tls_alert("unknown_ca", hop="pod", cause="unknown-issuer"),
     "Python ssl CERT_OPTIONAL verifies a presented cert; cause: the pod's log (measured)"),
)
#: (hop serving, its server root, id stem, expected refusal by its caller, evidence source)
_SERVER_SIDE: Final[tuple[tuple[HopName, str, str, Outcome, str], ...]] = (
    ("gateway", "public-root", "client-refuses-gateway-cert-from",
     server_untrusted(hop="client", cause="unknown-issuer"), "DESIGN.md: public listener; cause: OpenSSL's verify"),
    ("apim", "apim-ca", "gateway-refuses-apim-cert-from", upstream_failure(502, hop="gateway", cause="unknown-issuer"),
     "DESIGN.md App Gateway backend row; cause: the stand-in's detail header (measured)"),
    ("ingress", "ingress-ca", "apim-refuses-ingress-cert-from",
     upstream_failure(500, hop="apim", cause="unknown-issuer"),
     "DESIGN.md APIM backend TLS row; cause: the stand-in's detail header (measured)"),
    ("pod", "pod-ca", "ingress-refuses-pod-cert-from", upstream_failure(502, hop="ingress", cause="unknown-issuer"),
     "DESIGN.md nginx upstream row; cause: nginx error.log (measured)"),
)


def cross_domain_cases() -> Iterator[Case]:
    """A valid leaf of every other trust domain, presented (client side) and served (server side) at each verifier."""
    plan = default_pki_plan()
    for hop, own, stem, variant, expect, src in _CLIENT_SIDE:
        for root, leaf in foreign_leaves(plan, own, "client"):
            yield Case(f"{stem}-{root}", hop, "client-cert", "another trust domain", expect, _SRC + src,
                       variant=variant, identity=leaf.name,
                       probe={"min_version": "1.3", "max_version": "1.3"} if hop == "pod" else {})
    ingress_host = default_topology().ingress.primary.host
    for hop, own, stem, expect, src in _SERVER_SIDE:
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
