"""The case catalogue: every handshake case the suite and ``mtls-harness run`` share, as data.

A :class:`Case` says which hop it is about, how to reach it (``direct``: probe the hop itself as its caller would;
``chain``: send a request through the gateway), what to change in the chain first (``variant``), which client
identity to present, and the exact :class:`~harness.outcomes.Outcome` expected — with the source of that expectation.
Ids read as behaviour and are the same on every target; a case a target cannot run skips there with a reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from harness.outcomes import Outcome, http_reject, ok, server_untrusted, tls_alert, upstream_failure
from harness.topology import Apim, Gateway, HopName, Pod, Topology

if TYPE_CHECKING:
    from harness.probe import ProbeResult
    from harness.targets.base import RunningChain

__all__ = ["CATALOGUE", "DEFAULT_IDENTITY", "Case", "CaseResult", "Skip", "cases", "run_case"]

Group = Literal["client-cert", "server-cert", "protocol", "trace", "ingress-nginx", "apim", "gateway"]

#: sentinel: present the identity the hop's real caller presents
DEFAULT_IDENTITY = "<caller>"

# the sentences the real components answer with (DESIGN.md behaviour table)
NO_CERT = "No required SSL certificate was sent"
CERT_ERROR = "The SSL certificate error"


class Skip(Exception):
    """The case cannot run on this target (the reason says why); the suite turns it into a skip."""


@dataclass(frozen=True)
class Case:
    id: str
    hop: HopName
    group: Group
    column: str  # the matrix column this case fills
    expect: Outcome
    source: str  # where the expectation comes from (DESIGN.md table row, issue number, documentation)
    via: Literal["direct", "chain"] = "direct"
    variant: Callable[[Topology], Topology] | None = None
    identity: str | None = DEFAULT_IDENTITY  # leaf name (faults as "<leaf>~<fault>") or None for no client cert
    probe: Mapping[str, Any] = field(default_factory=dict)  # extra probe() arguments (versions, alpn, path, …)
    check: Callable[[ProbeResult, RunningChain], str | None] | None = None  # extra assertion → problem or None


@dataclass(frozen=True)
class CaseResult:
    case: Case
    passed: bool
    seen: ProbeResult
    message: str


# ------------------------------------------------------------------------------------------------------------------
# running one case
# ------------------------------------------------------------------------------------------------------------------
def _caller_identity(chain: RunningChain, hop: HopName) -> str | None:
    return chain.topology.caller_of(hop).client_cert


def run_case(case: Case, chain: RunningChain, chain_for: Callable[[Topology], RunningChain]) -> CaseResult:
    """Run ``case`` on ``chain`` (or on ``chain_for(variant)``); raise :class:`Skip` if the target cannot."""
    if case.variant is not None:
        if not chain.mutable:
            raise Skip(f"needs to change the chain ({case.column}); the {chain.target} target is read-only")
        chain = chain_for(case.variant(chain.topology))
    hop: HopName = "gateway" if case.via == "chain" else case.hop
    if hop not in chain.endpoints:
        raise Skip(f"the {hop} hop is not reachable from this runner on the {chain.target} target")
    kwargs: dict[str, Any] = dict(case.probe)
    identity = case.identity
    if case.via == "chain":
        identity = _caller_identity(chain, "gateway") if identity == DEFAULT_IDENTITY else identity
    elif identity == DEFAULT_IDENTITY:
        identity = _caller_identity(chain, hop)
    if identity is None:
        kwargs.update(client_cert=None, client_key=None)
    else:
        leaf = chain.certs.leaf(identity)
        kwargs.update(client_cert=leaf.chain, client_key=leaf.key)
    seen = chain.probe(hop, **kwargs)
    problem = None if case.expect.matches(seen.outcome) else "outcome differs"
    if problem is None and case.check is not None:
        problem = case.check(seen, chain)
    message = (f"{case.id}: {'PASS' if problem is None else 'FAIL — ' + problem}\n"
               f"  hop:      {case.hop} ({case.via}{', variant' if case.variant else ''})\n"
               f"  expected: {case.expect}   [source: {case.source}]\n"
               f"  seen:     {seen.describe()}")
    return CaseResult(case, problem is None, seen, message)


# ------------------------------------------------------------------------------------------------------------------
# topology variants (small named functions, so ids and reports can say what changed)
# ------------------------------------------------------------------------------------------------------------------
def _gateway_strict(t: Topology) -> Topology:
    listener = dataclasses.replace(t.gateway.listener, client_auth="required", client_ca="consumer-ca")
    client = dataclasses.replace(t.client, client_cert="consumer-client")
    return t.replace(gateway=dataclasses.replace(t.gateway, listener=listener), client=client)


def _apim_validates(t: Topology) -> Topology:
    return t.replace(apim=dataclasses.replace(t.apim, negotiate_client_certificate=True,
                                              validate_client_certificate=True))


def _serve(hop: HopName, fault: str) -> Callable[[Topology], Topology]:
    """A variant where ``hop`` serves a faulty server cert (``<its leaf>~<fault>``)."""

    def variant(t: Topology) -> Topology:
        if hop == "ingress":
            name = f"{t.ingress.server_cert}~{fault}"
            secrets = tuple(dataclasses.replace(s, tls=name) if s.name == t.ingress.primary.tls_secret else s
                            for s in t.ingress.secrets)
            return t.replace(ingress=dataclasses.replace(t.ingress, server_cert=name, secrets=secrets))
        parts: dict[str, Gateway | Apim | Pod] = {"gateway": t.gateway, "apim": t.apim, "pod": t.pod}
        part = parts[hop]
        listener = dataclasses.replace(part.listener, server_cert=f"{part.listener.server_cert}~{fault}")
        return t.replace(**{hop: dataclasses.replace(part, listener=listener)})

    variant.__name__ = f"{hop}_serves_{fault.replace('-', '_')}"
    return variant


def _annotations(**changes: str | None) -> Callable[[Topology], Topology]:
    def variant(t: Topology) -> Topology:
        return t.with_ingress_annotations(**changes)

    variant.__name__ = "ingress_" + "_".join(f"{k}" for k in changes)
    return variant


def _ingress_crl(t: Topology) -> Topology:
    secrets = tuple(dataclasses.replace(s, crl="apim-client-ca") if s.name == "apim-client-ca" else s
                    for s in t.ingress.secrets)
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
)


def _client_cert_cases() -> Iterator[Case]:
    # the ingress (ingress-nginx, ssl_verify_client on): nginx's 400 pages, TLS 1.2 and 1.3 alike
    src = "DESIGN.md nginx rows; ingress-nginx e2e authtls #1"
    for version in ("1.2", "1.3"):
        pv = {"min_version": version, "max_version": version}
        yield Case(f"ingress-rejects-missing-client-cert-tls{version}", "ingress", "client-cert", "none",
                   http_reject(400, NO_CERT), src, identity=None, probe=pv)
        yield Case(f"ingress-accepts-apims-client-cert-tls{version}", "ingress", "client-cert", "valid", ok(200),
                   src, probe=pv)
        for fault, column in CLIENT_FAULTS:
            variant = _ingress_crl if fault == "revoked" else None
            yield Case(f"ingress-rejects-client-cert-{fault}-tls{version}", "ingress", "client-cert", column,
                       http_reject(400, CERT_ERROR), src, variant=variant, identity=f"apim-client~{fault}", probe=pv)
    # OpenSSL's verify depth counts the intermediates between the leaf and the trust anchor (X509_VERIFY_PARAM_set_depth):
    # ingress-nginx's default depth 1 admits ONE intermediate and refuses two (measured; see docs/behaviour.md)
    src = "OpenSSL X509_VERIFY_PARAM_set_depth; ingress-nginx auth-tls-verify-depth docs; #110 #3420"
    yield Case("ingress-accepts-intermediate-issued-client-cert-at-default-verify-depth-1", "ingress", "client-cert",
               "intermediate within depth", ok(200), src, identity="apim-client~intermediate-issued")
    yield Case("ingress-accepts-two-intermediates-at-verify-depth-2", "ingress", "client-cert",
               "deeper chain, depth raised", ok(200), src, variant=_annotations(auth_tls_verify_depth="2"),
               identity="apim-client~too-deep")

    # the gateway in App Gateway mTLS "Strict" mode: 400 pages like App Gateway's
    src = "DESIGN.md App Gateway Strict row (ronaldbosma/mtls-with-apim-and-agw)"
    yield Case("gateway-strict-rejects-missing-client-cert", "gateway", "client-cert", "none",
               http_reject(400, NO_CERT), src, variant=_gateway_strict, identity=None)
    yield Case("gateway-strict-accepts-valid-client-cert", "gateway", "client-cert", "valid", ok(200), src,
               variant=_gateway_strict)
    for fault, column in CLIENT_FAULTS:
        if fault in ("revoked", "too-deep"):
            continue  # App Gateway checks revocation by OCSP and sets no depth: not emulated (see behaviour table)
        yield Case(f"gateway-strict-rejects-client-cert-{fault}", "gateway", "client-cert", column,
                   http_reject(400, CERT_ERROR), src, variant=_gateway_strict, identity=f"consumer-client~{fault}")

    # APIM's validate-client-certificate policy: 401
    src = "DESIGN.md APIM validate-client-certificate row"
    yield Case("apim-rejects-missing-client-cert-with-401", "apim", "client-cert", "none", http_reject(401), src,
               variant=_apim_validates, identity=None)
    yield Case("apim-accepts-valid-client-cert", "apim", "client-cert", "valid", ok(200), src,
               variant=_apim_validates, identity="consumer-client")
    for fault, column in CLIENT_FAULTS:
        if fault in ("revoked", "too-deep"):
            continue
        yield Case(f"apim-rejects-client-cert-{fault}-with-401", "apim", "client-cert", column, http_reject(401),
                   src, variant=_apim_validates, identity=f"consumer-client~{fault}")


def _server_cert_cases() -> Iterator[Case]:
    # from the client's side, at the public listener: our client must refuse the gateway's bad cert
    yield Case("client-trusts-gateways-public-cert", "gateway", "server-cert", "valid", ok(200),
               "DESIGN.md: public listener", via="chain")
    for fault, column in SERVER_FAULTS:
        yield Case(f"client-refuses-gateway-cert-{fault}", "gateway", "server-cert", column, server_untrusted(),
                   "azure-docs #62578 (no-SNI default / wrong cert served)", via="chain",
                   variant=_serve("gateway", fault))
    expectations: tuple[tuple[HopName, str, Outcome, str], ...] = (
        ("apim", "gateway-refuses-apim-cert", upstream_failure(502),
         "DESIGN.md App Gateway backend row; azure-docs #40941 #94687"),
        ("ingress", "apim-refuses-ingress-cert", upstream_failure(500),
         "DESIGN.md APIM backend TLS row; REFERENCES #10"),
        ("pod", "ingress-refuses-pod-cert", upstream_failure(502),
         "DESIGN.md nginx upstream row; ingress-nginx #4928"),
    )
    for hop, stem, outcome, src in expectations:
        for fault, column in SERVER_FAULTS:
            yield Case(f"{stem}-{fault}", hop, "server-cert", column, outcome, src, via="chain",
                       variant=_serve(hop, fault))


CASE_BUILDERS: tuple[Callable[[], Iterator[Case]], ...] = (_client_cert_cases, _server_cert_cases)


def cases() -> list[Case]:
    """Every case, in catalogue order; ids are unique."""
    out = [c for build in CASE_BUILDERS for c in build()]
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            raise ValueError(f"duplicate case id {c.id}")
        seen.add(c.id)
    return out


CATALOGUE: tuple[Case, ...] = tuple(cases())

_ = tls_alert  # re-exported vocabulary used by later case groups
