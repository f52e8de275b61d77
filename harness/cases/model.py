"""The case model and its runner: a :class:`Case` says which hop it is about, how to reach it (``direct``: probe the
hop itself as its caller would; ``chain``: send a request through the gateway), what to change in the chain first
(``variant``), which client identity to present, and the exact :class:`~harness.probe.outcomes.Outcome` expected —
with the source of that expectation. :func:`run_case` runs one on a chain.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from harness.cases.evidence import Attribution, attribute
from harness.errors import HarnessError, Unavailable
from harness.findings.predict import CaseFacts, Finding, Prediction, predict, prediction_for
from harness.model.topology import HopName, Topology, default_topology
from harness.pki.path import covers
from harness.probe.outcomes import Outcome

if TYPE_CHECKING:
    from harness.probe.result import ProbeResult
    from harness.targets.base import RunningChain

__all__ = ["CERT_ERROR", "DEFAULT_IDENTITY", "NO_CERT", "Case", "CaseResult", "Group", "Skip", "needs_reference",
           "run_case"]

Group = Literal["client-cert", "server-cert", "protocol", "trace", "ingress-nginx", "apim", "gateway"]

#: sentinel: present the identity the hop's real caller presents
DEFAULT_IDENTITY = "<caller>"

# the sentences the real components answer with (DESIGN.md behaviour table)
NO_CERT = "No required SSL certificate was sent"
CERT_ERROR = "The SSL certificate error"


class Skip(Exception):
    """The case cannot run on this target (the reason says why); the suite turns it into a skip. A target that
    cannot give what a case asks for raises :class:`harness.errors.Unavailable`; :func:`run_case` turns it into this.

    ``declared``: the target declared this limit (its :class:`~harness.targets.base.ChainLimits`, or an
    ``Unavailable`` the target raised itself) — a skip *by design*. An undeclared skip (a hop missing that the target
    did not declare missing, a read-only chain that did not say so) fails the run under ``--mtls-require-tools``."""

    def __init__(self, reason: str, *, declared: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.declared = declared


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
    endpoint: HopName | None = None  # the endpoint to probe when it is not ``hop`` (the pod behind passthrough)
    #: request headers made when the case runs, on the chain it runs on (a freshly minted bearer token)
    headers_factory: Callable[[RunningChain], Mapping[str, str]] | None = None
    #: trust the probe with the caller's configured CA (``topology.caller_of(hop).trusted_ca``), not with the root of
    #: the cert the hop serves: a hop serving a valid cert of ANOTHER trust domain must be refused by its caller
    caller_trust: bool = False
    #: the ingress host the case is about (None: the home host, the one APIM's backend names); every host is served
    #: by the same running chain, so the case probes this host's name there (RunningChain.on_host)
    host: str | None = None
    #: by ingress kind (``gateway-api:envoy-gateway``): the outcome and its source where that ingress says the same
    #: thing its own way, or why the case does not apply there (harness.cases.gateway_api); ``expect`` is
    #: ingress-nginx's
    by_ingress: Mapping[str, tuple[Outcome, str] | str] = field(default_factory=dict)

    def on(self, topology: Topology) -> Case:
        """This case as it runs on ``topology``'s ingress kind: ``expect`` and ``source`` that kind's; raises
        :class:`Skip` (declared) when it does not apply there."""
        found = self.by_ingress.get(topology.ingress.kind)
        if found is None:
            return self
        if isinstance(found, str):
            raise Skip(f"on {topology.ingress.kind}: {found}", declared=True)
        return dataclasses.replace(self, expect=found[0], source=found[1])


#: the three words of a case's verdict (docs/findings.md): it behaved as predicted and nothing weak was seen; it
#: behaved otherwise (a fidelity failure); it let through what the chain's own configuration lets through
Verdict = Literal["passed", "failed", "finding"]


@dataclass(frozen=True)
class CaseResult:
    case: Case
    passed: bool  # the chain behaved as predicted (a FINDING passes: the weakness is the configuration's)
    seen: ProbeResult
    message: str
    verdict: Verdict = "passed"
    #: the finding of the chain's configuration this case observed (verdict "finding") or was judged by
    finding: Finding | None = None


# ------------------------------------------------------------------------------------------------------------------
# running one case
# ------------------------------------------------------------------------------------------------------------------
def _caller_identity(chain: RunningChain, hop: HopName) -> str | None:
    return chain.topology.caller_of(hop).client_cert


def run_case(case: Case, chain: RunningChain, chain_for: Callable[[Topology], RunningChain]) -> CaseResult:
    """Run ``case`` on ``chain`` (or on ``chain_for(variant)``); raise :class:`Skip` if the target cannot."""
    try:
        return _run(case, chain, chain_for)
    except Unavailable as exc:  # the target itself said it cannot (an unreachable hop says whether it declared it)
        raise Skip(str(exc), declared=getattr(exc, "declared", True)) from None
    except KeyError as exc:  # a check looked a reference name up (``c.certs.leaf("ingress-client")``)
        reason = _reference_lookup(exc, chain.topology)
        if reason is None:
            raise
        raise Skip(reason, declared=True) from None


# ------------------------------------------------------------------------------------------------------------------
# cases still written for the reference chain's names, on a chain with other names
# ------------------------------------------------------------------------------------------------------------------
_NAMED = re.compile(r"named '([^']+)'")


def _refs(t: Topology) -> list[str]:
    """Every identity, CA and Secret name ``t`` refers to (identities without their ``~fault``; Secrets as
    ``ns/name``), in model order."""
    out: list[str | None] = []
    for lst in (t.gateway.listener, t.apim.listener, t.pod.listener):
        out += [lst.server_cert, lst.client_ca]
    out.append(t.ingress.server_cert)
    for up in (t.client, t.gateway.upstream, t.apim.upstream):
        out += [up.client_cert, up.trusted_ca]
    for s in t.ingress.secrets:
        out += [s.tls, *s.ca, s.crl]
    for ing in t.ingress.ingresses:
        for key in ("auth-tls-secret", "proxy-ssl-secret"):
            ref = ing.annotation(key)
            if ref:
                out.append(ref if "/" in ref else f"{ing.namespace}/{ref}")
    return list(dict.fromkeys(n.partition("~")[0] for n in out if n))


def _has(t: Topology, name: str) -> bool:
    if "/" in name:
        return t.ingress.secret(name) is not None
    return any(c.name == name for c in t.pki.cas) or any(lf.name == name for lf in t.pki.leaves)


@functools.cache
def _reference() -> Topology:
    return default_topology()


def needs_reference(case: Case, topology: Topology) -> str | None:
    """Why ``case`` cannot run on ``topology`` — it names an identity, CA or Secret of the reference chain that
    ``topology`` does not have (the case is still written for the reference's names; ``catalogue_for`` generates the
    rest from the chain) — or None when it can. A name neither chain has is the case's own fault (a missing CA
    Secret) and runs."""
    wanted: list[str] = []
    if case.identity not in (None, DEFAULT_IDENTITY):
        wanted.append(case.identity.partition("~")[0])
    if case.variant is not None:
        try:
            wanted += _refs(case.variant(topology))
        except KeyError as exc:  # the variant itself looked a reference name up (PKIPlan.leaf / .ca)
            reason = _reference_lookup(exc, topology)
            if reason is None:
                raise
            return reason
    for name in wanted:
        if not _has(topology, name) and _has(_reference(), name):
            return _needs(name)
    return None


def _needs(name: str) -> str:
    return (f"needs the reference chain's {name}; this case is not generated from your chain yet "
            "(docs/chain-file.md#run---chain-today)")


def _reference_lookup(exc: KeyError, topology: Topology) -> str | None:
    """The skip reason when ``exc`` is a PKIPlan lookup of a reference name ``topology`` lacks, else None."""
    found = _NAMED.search(str(exc.args[0]) if exc.args else "")
    name = found.group(1).partition("~")[0] if found else ""
    return _needs(name) if name and not _has(topology, name) and _has(_reference(), name) else None


def variant_of(case: Case, topology: Topology) -> Topology | None:
    """The chain ``case`` runs on when the session's chain is ``topology``: its variant of the chain, viewed from the
    home host (what :func:`run_case` asks ``chain_for`` for), or None when it runs on the chain itself or cannot run
    here. The harness serves these beside the chain before the first case runs (harness.targets.lanes)."""
    if case.variant is None or (case.host is not None and case.host not in topology.ingress.hosts):
        return None
    if needs_reference(case, topology.focus_on(case.host)) is not None:
        return None  # it skips: the variant names what this chain does not have
    try:
        return case.variant(topology.focus_on(case.host)).focus_on(None)
    except (KeyError, ValueError, HarnessError):  # a case that skips here (a name this chain does not have)
        return None


def lanes_for(cases: Iterable[Case], topology: Topology) -> tuple[list[Topology], dict[str, frozenset[str]]]:
    """The variants ``cases`` ask for on the chain ``topology`` (:func:`harness.cases.model.variant_of`, in case
    order) and, by :func:`lane_key`, the ingress hosts each variant's cases probe (the home host for a case of
    none) — what a target needs to serve them as lanes."""
    from harness.targets.base import lane_key

    home = topology.ingress.ingresses[0].host
    variants: list[Topology] = []
    hosts: dict[str, set[str]] = {}
    for case in cases:
        variant = variant_of(case, topology)
        if variant is None:
            continue
        variants.append(variant)
        probed = {case.host or home}
        sni = case.probe.get("server_name")
        if isinstance(sni, str) and sni in variant.ingress.hosts:
            probed.add(sni)  # a case that sends another host's SNI probes that host too
        hosts.setdefault(lane_key(variant), set()).update(probed)
    return variants, {k: frozenset(v) for k, v in hosts.items()}


def entry_hop(case: Case) -> HopName:
    """The hop a case's probe connects to: the gateway for a case through the chain, else its endpoint or hop."""
    return "gateway" if case.via == "chain" else (case.endpoint or case.hop)


def lane_entries(cases: Iterable[Case], topology: Topology) -> dict[str, frozenset[HopName]]:
    """By :func:`lane_key`, the hops each variant's cases connect to (:func:`entry_hop`): a lane needs no listener in
    front of the first of them (harness.targets.lanes.plan_lanes)."""
    from harness.targets.base import lane_key

    entries: dict[str, set[HopName]] = {}
    for case in cases:
        variant = variant_of(case, topology)
        if variant is not None:
            entries.setdefault(lane_key(variant), set()).add(entry_hop(case))
    return {k: frozenset(v) for k, v in entries.items()}


def _run(case: Case, chain: RunningChain, chain_for: Callable[[Topology], RunningChain]) -> CaseResult:
    if case.host is not None and case.host not in chain.topology.ingress.hosts:
        raise Skip(f"no Ingress on host {case.host} in this chain (hosts: {', '.join(chain.topology.ingress.hosts)})",
                   declared=True)
    chain = chain.on_host(case.host)
    case = case.on(chain.topology)
    missing = needs_reference(case, chain.topology)
    if missing is not None:
        raise Skip(missing, declared=True)
    terminating = _needs_a_terminating_ingress(case, chain.topology) or _pod_cannot_pass_for_the_ingress(
        case, chain.topology)
    if terminating is not None:
        raise Skip(terminating, declared=True)
    if case.variant is not None:
        if not chain.mutable:
            declared = chain.limits.read_only
            raise Skip(declared or f"needs to change the chain ({case.column}), and the {chain.target} chain is "
                       "read-only without the target declaring it", declared=declared is not None)
        changed = case.variant(chain.topology)
        missing_crl = _missing_crl(changed, chain)
        if missing_crl is not None:
            raise Skip(missing_crl, declared=True)
        # the running chain is always viewed from its home host; the case's host is a view of it
        chain = chain_for(changed.focus_on(None)).on_host(case.host if case.host in changed.ingress.hosts else None)
    hop = entry_hop(case)
    chain.endpoint(hop)  # HopUnreachable (an Unavailable) when the runner cannot reach it
    kwargs: dict[str, Any] = dict(case.probe)
    if case.via == "chain" and chain.topology.apim.path != "/":
        # a case of another API's host goes through the chain under that API's URL suffix
        kwargs["path"] = chain.topology.apim.path.rstrip("/") + kwargs.get("path", "/")
    identity = case.identity
    if case.via == "chain":
        identity = _caller_identity(chain, "gateway") if identity == DEFAULT_IDENTITY else identity
    elif identity == DEFAULT_IDENTITY:
        identity = _caller_identity(chain, hop)
    if identity is None:
        kwargs.update(client_cert=None, client_key=None)
    else:
        leaf = _leaf_or_skip(chain, identity)
        kwargs.update(client_cert=leaf.chain, client_key=leaf.key)
    if case.caller_trust:
        trusted = chain.topology.caller_of(hop).trusted_ca  # the probed hop's caller: the client for a chain case
        if trusted:
            kwargs["trust"] = chain.certs.trust_bundle(trusted)
    if case.headers_factory is not None:
        kwargs["headers"] = {**kwargs.get("headers", {}), **case.headers_factory(chain)}
    predicted = prediction_for(chain.topology, CaseFacts(case.expect, identity, case.probe.get("max_version"),
                                                         hop))
    mark = chain.evidence_mark()
    seen = chain.probe(hop, **kwargs)
    # the logs are re-read until they name who decided what the case now expects (its prediction, when it has one)
    wanted = case.expect if predicted is None else next(
        (o for o in (predicted.refused, predicted.through) if o is not None and o.is_rejection),
        predicted.through or case.expect)
    found = _attributed(wanted, seen, chain, mark, hop)
    seen = dataclasses.replace(seen, outcome=found.outcome)  # what was seen, with who decided it and why
    verdict: Verdict
    if predicted is None:
        problem = _problem(case.expect, found.outcome, chain)
        if problem is None and case.check is not None:
            problem = case.check(seen, chain)
            pooled = _pooled(case, chain.topology) if problem is not None else None
            if pooled is not None:  # the pod saw another host's session, which the configuration lets happen
                predicted = Prediction(pooled, None)
        verdict, expected = ("passed" if problem is None else "failed"), f"{case.expect}   [source: {case.source}]"
        if predicted is not None:
            verdict, expected = "finding", (f"{expected}; what the pod saw of its TLS session differs ({problem}) — "
                                            f"finding {predicted.finding.id if predicted.finding else ''}: "
                                            f"{predicted.finding.lets_through if predicted.finding else ''}")
    else:
        verdict, problem = _judge_predicted(predicted, found.outcome, chain)
        expected = _predicted_line(case, predicted)
    evidence = f"\n  evidence: {found.evidence}" if found.evidence else ""
    head = {"passed": "PASS", "failed": f"FAIL — {problem}",
            "finding": f"FINDING — {predicted.finding.id if predicted and predicted.finding else ''}"}[verdict]
    message = (f"{case.id}: {head}\n"
               f"  hop:      {case.hop} ({case.via}{', variant ' + _variant_name(case) if case.variant else ''})\n"
               f"  expected: {expected}\n"
               f"  seen:     {seen.describe()}{evidence}{_trace_lines(seen)}")
    return CaseResult(case, verdict != "failed", seen, message, verdict,
                      predicted.finding if predicted is not None else None)  # a rule-only prediction: no finding


def _pooled(case: Case, t: Topology) -> Finding | None:
    """The keepalive-pool finding of the viewed host (harness.findings.predict), when ``case`` judges what the pod saw
    of its TLS session (a trace check): over a connection another host opened, the pod sees that host's session."""
    if case.group != "trace" or case.hop != "pod":
        return None
    host = t.ingress.focus
    return next((f for f in predict(t) if f.intermittent and f.hop == "ingress" and f.host == host), None)


def _judge_predicted(p: Prediction, seen: Outcome, chain: RunningChain) -> tuple[Verdict, str | None]:
    """A case a finding of the chain's configuration affects: the weak outcome seen is a FINDING; the rejection the
    hop still gives for another reason passes; anything else fails (the chain did not do what its settings say)."""
    if p.through is not None and _problem(p.through, seen, chain) is None:
        return "finding", None
    if p.gone is not None and _problem(p.gone, seen, chain) is not None and seen.kind != "unreachable":
        return "finding", None  # the refusal the setting removes is gone (what follows is the next check's)
    if p.refused is not None and _problem(p.refused, seen, chain) is None:
        return "passed", None
    wanted = " or ".join(str(o) for o in (p.through, p.refused) if o is not None)
    if p.gone is not None:
        wanted += f" (at least not {p.gone})"
    why = p.finding.setting.text if p.finding is not None else p.rule
    return "failed", f"the chain's configuration ({why}) predicts {wanted}, seen something else"


def _predicted_line(case: Case, p: Prediction) -> str:
    f = p.finding
    alternatives = " or ".join(str(o) for o in (p.through, p.refused) if o is not None)
    if f is None:
        return f"{alternatives}   [rule: {p.rule}. Without it: {case.expect}, source: {case.source}]"
    return (f"{alternatives}   [finding {f.id}: {f.property.statement} — broken by {f.setting.text}; lets "
            f"{f.lets_through} through. Without it: {case.expect}, source: {case.source}]")


#: the pauses between bounded re-reads of the logs when the deciding hop's line is not there yet (the pod logs a
#: failed handshake from its connection thread, nginx writes its access log after the answer has gone out): the
#: first after 5 ms, where such a line usually is, doubling up to ~1 s in all
EVIDENCE_PAUSES: Final = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.32)


def _terminator(chain: RunningChain, hop: HopName) -> str:
    """The hop whose TLS stack answers a probe of ``hop``'s port (the pod behind ssl-passthrough)."""
    return "pod" if hop == "ingress" and chain.topology.passthrough else hop


def _attributed(expect: Outcome, seen: ProbeResult, chain: RunningChain, mark: Mapping[str, int],
                hop: HopName) -> Attribution:
    """The seen outcome with the deciding hop and cause from that hop's evidence (harness.cases.evidence)."""
    from harness.probe.http import page_reason

    page = page_reason(seen.status, seen.headers, seen.body) if seen.status else None
    found = Attribution(seen.outcome, "")
    for pause in (*EVIDENCE_PAUSES, None):
        found = attribute(seen.outcome, chain.evidence_since(mark), terminator=_terminator(chain, hop),
                          headers=seen.headers, page=page, target=seen.target)
        # no log turns an answer that is no refusal (a 200) into one: re-reading only delays the verdict
        if not expect.is_rejection or not found.outcome.is_rejection or expect.attribution_matches(found.outcome) \
                or not chain.logs or pause is None:
            break
        time.sleep(pause)
    return found


def _problem(expect: Outcome, seen: Outcome, chain: RunningChain) -> str | None:
    """Why ``seen`` does not satisfy ``expect`` (None when it does): the outcome first, then who decided and why."""
    if not dataclasses.replace(expect, hop=None, cause=None).matches(seen):
        return "outcome differs"
    if expect.attribution_matches(seen):
        return None
    if seen.hop is None and seen.cause is None and not chain.logs:
        return None  # this target exposes no hop's evidence (attach, azure): the answer is all there is to judge
    if seen.kind == "tls_alert" and seen.hop == expect.hop and not chain.logs:
        # … nor a log naming the cause of an alert: the alert is the evidence, and one alert stands for several
        # causes (certificate_expired for expired and not yet valid; handshake_failure for any: RFC 8446 6.2)
        return None
    return (f"refused for another cause or by another hop: expected {expect.attribution()}, "
            f"seen {seen.attribution()}")


def _needs_a_terminating_ingress(case: Case, t: Topology) -> str | None:
    """Why ``case`` does not apply to a chain whose ingress passes TLS through (``t.passthrough``): it is about the
    ingress terminating TLS (its listener, its client-cert check, its upstream check), which such a chain does not
    do — the pod's cases cover that session. None when it applies (a case about passthrough itself, or one whose
    variant turns termination back on)."""
    if not t.passthrough or (case.hop != "ingress" and case.expect.hop != "ingress"):
        return None
    try:
        if case.variant is not None and (case.variant(_reference()).passthrough or not case.variant(t).passthrough):
            return None  # a case about passthrough itself, or one whose variant turns termination back on
    except KeyError:
        return None
    return ("the ingress passes TLS through on this chain (ssl-passthrough): a case about the ingress terminating TLS "
            "does not apply; the pod's cases cover that session")


def _names(leaf: Any, host: str) -> bool:
    """Whether ``leaf`` (a LeafSpec) names ``host`` (RFC 6125, :func:`harness.pki.path.covers`): its DNS SANs, or
    its common name when the plan gives it no SAN."""
    return covers([n for n in leaf.sans if ":" not in n] or ([] if leaf.subject else [leaf.common_name]), host)


def _pod_cannot_pass_for_the_ingress(case: Case, t: Topology) -> str | None:
    """Why a case whose variant turns ssl-passthrough on cannot run on ``t``: behind passthrough the pod answers for
    the ingress host with its own certificate, and ``t``'s pod certificate does not name that host (APIM and the
    probe would refuse it for its name, which says nothing about passthrough). None when it can."""
    if case.variant is None or t.passthrough:
        return None
    try:
        v = case.variant(t)
        leaf = t.pki.leaf(v.pod.listener.server_cert)
    except KeyError:
        return None
    if not v.passthrough or _names(leaf, v.ingress.host):
        return None
    return (f"behind ssl-passthrough the pod answers for the ingress host {v.ingress.host} with its own certificate, "
            f"and this chain's pod certificate ({leaf.name}) does not name it: a passthrough variant cannot run here")


def _leaf_or_skip(chain: RunningChain, identity: str) -> Any:
    """The cert and key files of ``identity``; a fault variant the cert set cannot make (a chain file's real identity
    whose CA key is not given: the fault must be issued by that CA) skips by design."""
    try:
        return chain.certs.leaf(identity)
    except HarnessError as exc:
        base, _, fault = identity.partition("~")
        if not fault:
            raise
        raise Skip(f"the {fault} variant of {base} must be issued by its CA, whose private key this chain's "
                   f"certificates do not give ({str(exc).split(' — ')[0]})", declared=True) from None


def _missing_crl(t: Topology, chain: RunningChain) -> str | None:
    """Why the chain cannot be changed into ``t``: a Secret of ``t`` names a CRL its cert set cannot give (a chain
    file's CA whose key is not there to sign one), or None."""
    for s in t.ingress.secrets:
        if s.crl:
            try:
                chain.certs.crl_chain(s.crl)
            except (HarnessError, KeyError):
                return (f"needs a CRL issued by {s.crl}, which this chain's certificates cannot give (no CA key to "
                        "sign one); a chain file's CRLs are not modelled yet")
    return None


def _variant_name(case: Case) -> str:
    return getattr(case.variant, "__name__", "variant").replace("_", " ").strip()


def _trace_lines(seen: ProbeResult) -> str:
    """What each hop saw of its inbound TLS session, when the request reached the pod (the echoed hop trace)."""
    try:
        trace = (seen.json() or {}).get("trace") or {}
    except Exception:  # not the pod's JSON: the request stopped before the pod
        return ""
    lines = []
    for hop in ("gateway", "apim", "ingress", "pod"):
        entry = trace.get(hop)
        if not entry:
            lines.append(f"    {hop:<8} (no trace entry)")
            continue
        peer = entry.get("peer_subject") or "no client cert"
        verify = f" verify={entry['verify']}" if entry.get("verify") else ""
        lines.append(f"    {hop:<8} {entry.get('tls') or 'no TLS'} {entry.get('cipher') or ''} peer={peer}{verify}")
    return "\n  trace (what each hop saw of its inbound TLS session):\n" + "\n".join(lines)
