"""The rotation plan: its file format, the chain state it moves through, the default plan and the static checks.

    pair = CertPair(load_cert_set(cur), load_cert_set(nxt), workdir)     # both sets, names as "current:x" / "next:x"
    plan = load_plan(Path("plan.yaml"), topology) or default_plan(topology, pair)
    states = simulate(plan, topology)                                     # the chain after each step (plan errors)
    report = static_checks(pair, topology, plan, states)                  # next set + overlap + final state

A plan is an ordered list of steps (docs/rotation.md has the format). Each step changes one thing at one hop:

- ``trust`` / ``untrust`` — add or remove CAs (their roots) in a hop's trust: the CA it checks client certificates
  against (``side: clients``) or the one it checks its upstream's server certificate against (``side: upstream``);
  the side is inferred from the CA's name when only one of them fits;
- ``serve`` — the server certificate the hop serves;
- ``present-client-cert`` — the client certificate the hop presents to its upstream.

The rehearsal rotates every hop, each without a restart: the gateway and apim (Envoy SDS), the ingress (nginx
reload) and the pod (its mounted files rewritten, then SIGHUP). The internet client's trust domain (``consumer-ca``)
stays on the current set; the internet client trusts both sets' public roots throughout.

State is compared by certificate fingerprint, so a "next" set that reuses a CA or a leaf of the current one needs no
step for it (the default plan leaves it out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import yaml
from cryptography import x509

from harness.errors import InputError, UsageError
from harness.model.topology import HopName, PKIPlan, Topology
from harness.pki.certset import CertSet
from harness.pki.check import CheckReport, check_cert_set
from harness.rotation.certs import SETS, CertPair, Ref, refs_text

__all__ = [
    "ACTIONS",
    "LINKS",
    "ROTATABLE_HOPS",
    "SETS",
    "Action",
    "CertPair",
    "ChainState",
    "HopState",
    "LinkProblem",
    "Ref",
    "RotationPlan",
    "Side",
    "StaticReport",
    "Step",
    "accepts",
    "client_trust",
    "default_plan",
    "goal_state",
    "initial_state",
    "link_problems",
    "load_plan",
    "parse_plan",
    "plan_scope",
    "simulate",
    "state_differences",
    "static_checks",
]

Action = Literal["trust", "untrust", "serve", "present-client-cert"]
Side = Literal["clients", "upstream"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
SIDES: Final[tuple[Side, ...]] = get_args(Side)
#: hops whose certificates reload without a restart (Envoy SDS rename, nginx SIGHUP, the pod's files + SIGHUP)
ROTATABLE_HOPS: Final[tuple[HopName, ...]] = ("gateway", "apim", "ingress", "pod")
#: every TLS link of the chain, caller first ("client" is the internet client)
LINKS: Final[tuple[tuple[str, HopName], ...]] = (("client", "gateway"), ("gateway", "apim"), ("apim", "ingress"),
                                                 ("ingress", "pod"))
_STEP_KEYS: Final = {"hop", "action", "leaf", "ca", "side", "note"}


# ---------------------------------------------------------------------------------------------------------------
# what each hop holds, in the topology's names
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slots:
    serve: str  # leaf served
    present: str | None  # leaf presented upstream
    clients: str | None  # root CA client certs are checked against (None: no check)
    upstream: str | None  # root CA the upstream's server cert is checked against (None: not verified)


def _slots(topology: Topology) -> dict[HopName, _Slots]:
    if topology.passthrough:
        raise UsageError("the rotation rehearsal does not support an ingress with ssl-passthrough (the pod would "
                         "serve the ingress host) — rehearse with TLS terminated at the ingress")
    plan = topology.pki
    out: dict[HopName, _Slots] = {}
    for hop in ("gateway", "apim", "ingress", "pod"):
        listener = topology.listener_of(hop)
        checks = listener.client_auth != "none" or (hop == "apim" and topology.apim.negotiate_client_certificate)
        clients = plan.root_of(listener.client_ca) if checks and listener.client_ca else None
        up = {"gateway": topology.gateway.upstream, "apim": topology.apim.upstream,
              "ingress": topology.ingress_upstream(), "pod": None}[hop]
        upstream = plan.root_of(up.trusted_ca) if up and up.verify_chain and up.trusted_ca else None
        out[hop] = _Slots(listener.server_cert, up.client_cert if up else None, clients, upstream)
    return out


def _leaf_root(plan: PKIPlan, leaf: str) -> str:
    return plan.root_of(plan.leaf(leaf).issuer)


def _rotatable_roots(topology: Topology) -> set[str]:
    """Roots whose every certificate in use is served or presented by a hop that reloads without a restart."""
    plan = topology.pki
    owners: dict[str, set[str]] = {}
    for hop, s in _slots(topology).items():
        for leaf in (s.serve, s.present):
            if leaf:
                owners.setdefault(_leaf_root(plan, leaf), set()).add(hop)
    if topology.client.client_cert:
        owners.setdefault(_leaf_root(plan, topology.client.client_cert), set()).add("client")
    return {root for root, who in owners.items() if who <= set(ROTATABLE_HOPS)}


# ---------------------------------------------------------------------------------------------------------------
# steps and plans
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One change at one hop. ``cas`` are root CAs (a plan naming an intermediate means its root)."""

    hop: HopName
    action: Action
    leaf: Ref | None = None
    cas: tuple[Ref, ...] = ()
    side: Side | None = None
    note: str = ""
    line: int | None = None  # where the step starts in the plan file

    def describe(self) -> str:
        """``ingress trust current:apim-client-ca + next:apim-client-ca (client certs)``."""
        if self.leaf is not None:
            return f"{self.hop} {self.action} {self.leaf}"
        what = "client certs" if self.side == "clients" else "upstream server cert"
        return f"{self.hop} {self.action} {refs_text(self.cas)} ({what})"

    def as_dict(self) -> dict[str, Any]:
        """The step as a plan file writes it."""
        out: dict[str, Any] = {"hop": self.hop, "action": self.action}
        if self.leaf is not None:
            out["leaf"] = str(self.leaf)
        if self.cas:
            out["ca"] = [str(c) for c in self.cas] if len(self.cas) > 1 else str(self.cas[0])
            out["side"] = self.side
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class RotationPlan:
    steps: tuple[Step, ...]
    name: str = "rotation"
    source: str = "<default>"

    def as_yaml(self) -> str:
        """The plan in the file format (docs/rotation.md)."""
        doc = {"name": self.name, "steps": [s.as_dict() for s in self.steps]}
        return yaml.safe_dump(doc, sort_keys=False, width=120, default_flow_style=None)


class _Lined(dict[str, Any]):
    """A YAML mapping that remembers its line (1-based)."""

    line: int | None = None


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_lined(loader: yaml.SafeLoader, node: yaml.MappingNode) -> _Lined:
    out = _Lined({str(k): v for k, v in loader.construct_mapping(node, deep=True).items()})
    out.line = node.start_mark.line + 1
    return out


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_lined)


def _names(items: Iterable[str]) -> str:
    return ", ".join(items)


def _parse_step(raw: object, index: int, topology: Topology, slots: Mapping[HopName, _Slots], where: str) -> Step:
    line = raw.line if isinstance(raw, _Lined) else None
    here = f"{where}: step {index}" + (f" (line {line})" if line else "")
    if not isinstance(raw, dict):
        raise UsageError(f"{here}: {raw!r} is not a mapping — write e.g. "
                         "{hop: ingress, action: trust, ca: [current:apim-client-ca, next:apim-client-ca]}")
    unknown = sorted(set(raw) - _STEP_KEYS)
    if unknown:
        raise UsageError(f"{here}: unknown key {unknown[0]!r} — a step has {_names(sorted(_STEP_KEYS))}")
    hop, action = raw.get("hop"), raw.get("action")
    if hop not in ROTATABLE_HOPS:
        raise UsageError(f"{here}: unknown hop {hop!r} — use one of {_names(ROTATABLE_HOPS)}")
    if action not in ACTIONS:
        raise UsageError(f"{here}: unknown action {action!r} — use one of {_names(ACTIONS)}")
    note = raw.get("note", "")
    if not isinstance(note, str):
        raise UsageError(f"{here}: note must be text, not {note!r}")
    plan, slot = topology.pki, slots[hop]
    if action in ("serve", "present-client-cert"):
        for key in ("ca", "side"):
            if key in raw:
                raise UsageError(f"{here}: {action} takes a leaf, not {key!r} — write leaf: next:<name>")
        if "leaf" not in raw:
            raise UsageError(f"{here}: {action} needs a leaf — write leaf: next:<name>")
        ref = Ref.parse(raw["leaf"], f"{here}: leaf")
        leaves = [lf.name for lf in plan.leaves]
        if ref.name not in leaves:
            raise UsageError(f"{here}: unknown leaf {str(ref)!r} — the sets have {_names(leaves)}")
        wanted = slot.serve if action == "serve" else slot.present
        if wanted is None:
            raise UsageError(f"{here}: the {hop} presents no client certificate upstream in this topology — "
                             "remove the step")
        if ref.name != wanted:
            verb = "serves" if action == "serve" else "presents"
            raise UsageError(f"{here}: the {hop} {verb} {wanted}, not {ref.name} — write leaf: {ref.set}:{wanted}")
        return Step(hop, action, leaf=ref, note=note, line=line)
    if "leaf" in raw:
        raise UsageError(f"{here}: {action} takes ca, not leaf — write ca: <set>:<ca name> or a list of them")
    cas = raw.get("ca")
    items = cas if isinstance(cas, list) else [cas] if cas is not None else []
    if not items:
        raise UsageError(f"{here}: {action} needs ca: one CA or a list, e.g. ca: [current:X, next:X]")
    refs = [Ref.parse(c, f"{here}: ca") for c in items]
    known = [c.name for c in plan.cas]
    for r in refs:
        if r.name not in known:
            raise UsageError(f"{here}: unknown CA {str(r)!r} — the sets have {_names(known)}")
    roots = tuple(dict.fromkeys(Ref(r.set, plan.root_of(r.name)) for r in refs))
    sides = {s: root for s, root in (("clients", slot.clients), ("upstream", slot.upstream)) if root}
    has = "; ".join(f"{s}: {root}" for s, root in sides.items()) or "no trust anchors"
    side = raw.get("side")
    if side is not None:
        if side not in SIDES:
            raise UsageError(f"{here}: unknown side {side!r} — use clients or upstream")
        if side not in sides:
            raise UsageError(f"{here}: the {hop} has no {side} trust in this topology (it has {has})")
        fits = [side] if all(r.name == sides[side] for r in roots) else []
    else:
        fits = [s for s, root in sides.items() if all(r.name == root for r in roots)]
    if not fits:
        raise UsageError(f"{here}: the {hop} trusts no CA like {refs_text(roots)} (it has {has}) — name one of those")
    if len(fits) > 1:
        raise UsageError(f"{here}: {refs_text(roots)} fits both trusts of the {hop} — add side: clients or upstream")
    return Step(hop, action, cas=roots, side=fits[0], note=note, line=line)


def parse_plan(text: str, topology: Topology, *, source: str = "<plan>") -> RotationPlan:
    """A plan from YAML text; every mistake is one :class:`UsageError` line naming the step, the value and the fix."""
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass that records lines
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{source}: not valid YAML{at} ({problem}) — fix the syntax (see docs/rotation.md)") \
            from None
    if not isinstance(doc, dict) or "steps" not in doc:
        raise UsageError(f"{source}: a plan is a mapping with a 'steps' list — see docs/rotation.md for an example")
    unknown = sorted(set(doc) - {"name", "description", "steps"})
    if unknown:
        raise UsageError(f"{source}: unknown key {unknown[0]!r} — a plan has name, description and steps")
    raw_steps = doc["steps"]
    if not isinstance(raw_steps, list) or not raw_steps:
        raise UsageError(f"{source}: 'steps' must be a non-empty list of steps — see docs/rotation.md")
    slots = _slots(topology)
    steps = tuple(_parse_step(s, i, topology, slots, source) for i, s in enumerate(raw_steps, 1))
    name = doc.get("name") or Path(source).stem
    plan = RotationPlan(steps, name=str(name), source=source)
    simulate(plan, topology)  # order-dependent mistakes (untrusting what is not trusted) are plan errors too
    return plan


def load_plan(path: Path, topology: Topology) -> RotationPlan:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such plan file", "pass a YAML plan (see fixtures/rotation/good.yaml)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot be read as text ({exc})", "pass a YAML plan file") from None
    return parse_plan(text, topology, source=str(path))


# ---------------------------------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HopState:
    """What one hop holds: the leaf it serves, the leaf it presents upstream, the roots it trusts on each side."""

    serve: Ref
    present: Ref | None = None
    clients: tuple[Ref, ...] = ()
    upstream: tuple[Ref, ...] = ()


ChainState = Mapping[HopName, HopState]


def _state(topology: Topology, pick: Any) -> dict[HopName, HopState]:
    out: dict[HopName, HopState] = {}
    for hop, s in _slots(topology).items():
        out[hop] = HopState(
            serve=pick(hop, s.serve, _leaf_root(topology.pki, s.serve)),
            present=pick(hop, s.present, _leaf_root(topology.pki, s.present)) if s.present else None,
            clients=(pick(hop, s.clients, s.clients),) if s.clients else (),
            upstream=(pick(hop, s.upstream, s.upstream),) if s.upstream else (),
        )
    return out


def initial_state(topology: Topology) -> dict[HopName, HopState]:
    """The chain on the current set."""
    return _state(topology, lambda _hop, name, _root: Ref("current", name))


def plan_scope(plan: RotationPlan, topology: Topology) -> set[str]:
    """The trust domains (root CA names) a plan touches: the ones it says it rotates."""
    out: set[str] = set()
    for step in plan.steps:
        if step.leaf is not None:
            out.add(_leaf_root(topology.pki, step.leaf.name))
        out.update(c.name for c in step.cas)
    return out


def goal_state(topology: Topology, scope: set[str]) -> dict[HopName, HopState]:
    """Where a rotation of the trust domains ``scope`` (root CA names) must end: at every hop that reloads, each of
    their certificates from the next set and only the next set's root trusted. The internet client keeps what it
    has (its trust store and certificate are not part of a plan)."""
    return _state(topology, lambda hop, name, root: Ref(
        "next" if root in scope and hop in ROTATABLE_HOPS else "current", name))


def client_trust(topology: Topology) -> tuple[Ref, ...]:
    """The internet client's trust for the gateway's cert: both sets' roots (its trust store is not in the plan)."""
    ca = topology.client.trusted_ca or topology.pki.leaf(topology.gateway.listener.server_cert).issuer
    root = topology.pki.root_of(ca)
    return (Ref("current", root), Ref("next", root))


def _apply(state: dict[HopName, HopState], step: Step, where: str) -> dict[HopName, HopState]:
    hs = state[step.hop]
    if step.action == "serve" and step.leaf is not None:
        hs = dataclasses.replace(hs, serve=step.leaf)
    elif step.action == "present-client-cert":
        hs = dataclasses.replace(hs, present=step.leaf)
    else:
        field = "clients" if step.side == "clients" else "upstream"
        have: tuple[Ref, ...] = getattr(hs, field)
        if step.action == "trust":
            new = tuple(dict.fromkeys((*have, *step.cas)))
        else:
            missing = [c for c in step.cas if c not in have]
            if missing:
                raise UsageError(f"{where}: the {step.hop} does not trust {missing[0]} at "
                                 f"this point (it trusts {refs_text(have)}) — remove the step or fix its CA")
            new = tuple(c for c in have if c not in step.cas)
            if not new:
                raise UsageError(f"{where}: the {step.hop} would trust no CA at all (an "
                                 "ingress then stops checking, an Envoy refuses the secret) — trust the next set's "
                                 "CA in an earlier step")
        hs = dataclasses.replace(hs, clients=new) if field == "clients" else dataclasses.replace(hs, upstream=new)
    return {**state, step.hop: hs}


def simulate(plan: RotationPlan, topology: Topology) -> list[dict[HopName, HopState]]:
    """The chain's state before any step (index 0) and after each step (index i)."""
    states = [initial_state(topology)]
    for i, step in enumerate(plan.steps, 1):
        where = f"{plan.source}: step {i}" + (f" (line {step.line})" if step.line else "") + f" ({step.describe()})"
        states.append(_apply(states[-1], step, where))
    return states


# ---------------------------------------------------------------------------------------------------------------
# judging a state
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkProblem:
    caller: str
    callee: HopName
    message: str

    def __str__(self) -> str:
        return f"{self.caller}→{self.callee}: {self.message}"


def link_problems(state: ChainState, topology: Topology, pair: CertPair) -> list[LinkProblem]:
    """What a new connection on each link would fail on in ``state`` (empty: every link handshakes)."""
    out: list[LinkProblem] = []
    for caller, callee in LINKS:
        served = state[callee].serve
        if caller == "client":
            trust: tuple[Ref, ...] = client_trust(topology)
            cc = topology.client.client_cert
            present = Ref("current", cc) if cc else None
        else:
            trust, present = state[caller].upstream, state[caller].present  # type: ignore[index]
        if trust and pair.root_fp(served) not in {pair.root_fp(t) for t in trust}:
            out.append(LinkProblem(caller, callee, f"the {caller} would refuse the {callee}'s server cert {served} "
                                                   f"(it trusts {refs_text(trust)})"))
        clients = state[callee].clients
        if clients and present is not None and pair.root_fp(present) not in {pair.root_fp(c) for c in clients}:
            out.append(LinkProblem(caller, callee, f"the {callee} would reject the {caller}'s client cert {present} "
                                                   f"(it trusts {refs_text(clients)})"))
    return out


def accepts(state: ChainState, hop: HopName, leaf: Ref, pair: CertPair) -> bool:
    """Whether ``hop`` in ``state`` accepts ``leaf`` as a client cert (a hop that checks none accepts any)."""
    clients = state[hop].clients
    return not clients or pair.root_fp(leaf) in {pair.root_fp(c) for c in clients}


def state_differences(state: ChainState, goal: ChainState, pair: CertPair) -> list[str]:
    """How ``state`` falls short of ``goal``, by certificate fingerprint, each with the step that fixes it."""
    out: list[str] = []
    for hop, want in goal.items():
        have = state[hop]
        for verb, action, a, b in (("serves", "serve", have.serve, want.serve),
                                   ("presents", "present-client-cert", have.present, want.present)):
            if a is not None and b is not None and pair.fingerprint(a) != pair.fingerprint(b):
                out.append(f"the {hop} still {verb} {a} — add {{hop: {hop}, action: {action}, leaf: {b}}}")
        for side, what in (("clients", "client certs"), ("upstream", "its upstream's server cert")):
            have_fp = {pair.root_fp(r): r for r in getattr(have, side)}
            want_fp = {pair.root_fp(r): r for r in getattr(want, side)}
            for fp, ref in have_fp.items():
                if fp not in want_fp:
                    out.append(f"the {hop} still trusts {ref} for {what} — add "
                               f"{{hop: {hop}, action: untrust, ca: {ref}}}")
            for fp, ref in want_fp.items():
                if fp not in have_fp:
                    out.append(f"the {hop} does not trust {ref} for {what} — add {{hop: {hop}, action: trust, "
                               f"ca: {ref}}}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# the default plan
# ---------------------------------------------------------------------------------------------------------------
def default_plan(topology: Topology, pair: CertPair) -> RotationPlan:
    """From the difference between the sets: trust the new roots next to the old ones (hop by hop), swap the leaves
    (server certs, then client certs), remove the old roots (hop by hop). Unchanged CAs and leaves get no step."""
    slots = _slots(topology)
    rotatable = _rotatable_roots(topology)
    plan = topology.pki
    trust: list[Step] = []
    serve: list[Step] = []
    present: list[Step] = []
    untrust: list[Step] = []
    for hop in ROTATABLE_HOPS:
        s = slots[hop]
        for side, root in (("clients", s.clients), ("upstream", s.upstream)):
            if root and root in rotatable and not pair.same(root, "ca"):
                cur, nxt = Ref("current", root), Ref("next", root)
                trust.append(Step(hop, "trust", cas=(cur, nxt), side=side))  # type: ignore[arg-type]
                untrust.append(Step(hop, "untrust", cas=(cur,), side=side))  # type: ignore[arg-type]
        if _leaf_root(plan, s.serve) in rotatable and not pair.same(s.serve, "leaf"):
            serve.append(Step(hop, "serve", leaf=Ref("next", s.serve)))
        if s.present and _leaf_root(plan, s.present) in rotatable and not pair.same(s.present, "leaf"):
            present.append(Step(hop, "present-client-cert", leaf=Ref("next", s.present)))
    steps = (*trust, *serve, *present, *untrust)
    return RotationPlan(steps, name=f"default ({len(steps)} steps from the difference between the sets)")


# ---------------------------------------------------------------------------------------------------------------
# static checks
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StaticReport:
    """The next set checked on its own (certcheck), the plan's overlap step by step, and its final state."""

    next_set: CheckReport
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    predicted: tuple[tuple[int, LinkProblem], ...]  # (step index, 0 = before any step; a link that would break)
    final: tuple[str, ...]  # how the plan's final state falls short of the goal

    @property
    def ok(self) -> bool:
        return not self.errors and not self.predicted and not self.final

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": list(self.errors), "warnings": list(self.warnings),
                "predicted": [{"step": i, "link": f"{p.caller}→{p.callee}", "problem": p.message}
                              for i, p in self.predicted],
                "final_state": list(self.final)}


def _leaf_expiry(cs: CertSet, name: str) -> Any:
    return x509.load_pem_x509_certificate(cs.leaf(name).cert.read_bytes()).not_valid_after_utc


def static_checks(pair: CertPair, topology: Topology, plan: RotationPlan, states: Sequence[ChainState], *,
                  lint: bool = True, min_days: int = 30) -> StaticReport:
    """Check the next set against the chain (chain to each consumer's anchor, SANs, EKU, expiry window, key match,
    lint), then walk the plan: which link a new connection would break at which step, and what the final state lacks.
    """
    report = check_cert_set(pair.sets["next"], topology, min_days=min_days, lint=lint)
    errors: list[str] = []
    warnings: list[str] = []
    for row in report.rows:
        for f in row.findings:
            line = f"next:{row.name}: {f.code}: {f.message}"
            if f.severity == "error":
                errors.append(line)
            elif f.severity == "warning":
                warnings.append(line)
    for lf in pair.base_plan.leaves:
        if _leaf_expiry(pair.sets["next"], lf.name) < _leaf_expiry(pair.sets["current"], lf.name):
            warnings.append(f"next:{lf.name} expires before current:{lf.name} does — is the next set older?")
    predicted: list[tuple[int, LinkProblem]] = []
    seen: set[str] = set()
    for i, st in enumerate(states):
        for p in link_problems(st, topology, pair):
            if str(p) not in seen:
                predicted.append((i, p))
            seen.add(str(p))
        seen &= {str(p) for p in link_problems(st, topology, pair)}
    final = state_differences(states[-1], goal_state(topology, plan_scope(plan, topology)), pair)
    return StaticReport(report, tuple(errors), tuple(warnings), tuple(predicted), tuple(final))
