"""``certs check --chain``: the user's own certificates judged by the chain's trust relations and names.

    report = check_chain_certs(loaded.certs, loaded.topology)   # loaded = load_chain("chain.yaml")

A chain file's cert set may run stand-ins (the shadow PKI), but a check of the chain is a check of the user's
certificates: each row is the certificate the chain file names (its real fingerprint, its file as ``source``),
verified as its consumers in the topology verify it — the trust list's real root, the names the next hop expects,
ingress-nginx's verify depth — with the same rules as :func:`harness.pki.check.check_cert_set`. The stand-ins copy
the profile, not the flaws: a SHA-1 signature or a Key Usage the shadow drops is found here only.

A root the chain file does not carry (the shadow PKI synthesized it) is no anchor: consumers under it are checked
against the topmost CA the chain file does give, and a note says so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from harness.chainfile.certs import ChainCertSet
from harness.model.topology import Topology
from harness.pki.check import CertRow, CheckReport, Consumer, Finding, check_ca, check_leaf, topology_consumers
from harness.pki.path import is_self_signed

__all__ = ["check_chain_certs"]

_RUNS = {"real": "real: runs with the key given", "shadow": "shadow: a stand-in with its profile runs"}


def _anchor_names(cs: ChainCertSet) -> dict[str, str]:
    """Plan CA name -> the CA whose real certificate stands as its anchor: itself, or for a synthesized root the
    first CA under it that the chain file gives."""
    plan, cas = cs.plan, cs.origin.cas
    out = {c.name: c.name for c in plan.cas if cas.get(c.name) is not None}
    for c in plan.cas:
        if cas.get(c.name) is None:
            below = [x.name for x in plan.cas if x.parent == c.name and cas.get(x.name) is not None]
            if below:
                out[c.name] = below[0]
    return out


def check_chain_certs(cs: ChainCertSet, topology: Topology, *, min_days: int = 30, at: dt.datetime | None = None,
                      lint: bool = True) -> CheckReport:
    """Every CA certificate and identity the chain file gives (module docstring)."""
    at = at or dt.datetime.now(dt.UTC)
    plan, origin = cs.plan, cs.origin
    notes: list[str] = []
    real = {n: pair[0] for n, pair in origin.cas.items() if pair is not None}
    anchors = _anchor_names(cs)
    for c in plan.cas:
        if origin.cas.get(c.name) is None:
            notes.append(f"the root above {', '.join(x.name for x in plan.cas if x.parent == c.name) or 'them'} "
                         f"({c.subject or c.common_name}) is not in the chain file: paths are checked up to "
                         f"{anchors.get(c.name, 'nothing')} (add the root under certificates.trust to check fully)")
    rows: list[CertRow] = []
    for c in plan.cas:
        pair = origin.cas.get(c.name)
        if pair is None:
            continue
        cert, source = pair
        parent = real.get(c.parent) if c.parent else None
        row = check_ca(cert, name=c.name, parent=parent, min_days=min_days, at=at, lint=lint, source=source)
        if parent is None and not is_self_signed(cert):  # issued by a root the chain file does not carry
            note = Finding("missing-intermediate", "warning", f"its issuer {cert.issuer.rfc4514_string()} is not in "
                           "the chain file: verifiers need it to reach a root")
            row = dataclasses.replace(row, role="intermediate",
                                      findings=(*[f for f in row.findings if f.code != "unknown-issuer"], note))
        rows.append(row)
    anchor_certs = {n: real[a] for n, a in anchors.items()}
    consumers = topology_consumers(topology, anchor_certs)
    known = list(real.values())
    for spec in plan.leaves:
        ident = origin.identities.get(spec.name)
        if ident is None:
            continue
        cons = consumers.get(spec.name) or [Consumer(
            label=f"{plan.root_of(spec.issuer)} (own root; no hop uses this identity)",
            trust=tuple(t for t in (anchor_certs.get(plan.root_of(spec.issuer)),) if t is not None),
            role=spec.usage)]
        row = check_leaf(ident.chain[0], name=spec.name, consumers=cons, chain=ident.chain[1:], key=ident.key,
                         known_cas=known, min_days=min_days, at=at, lint=lint, source=ident.source)
        how = _RUNS[origin.mode.get(spec.name, "shadow")]
        row = dataclasses.replace(row, findings=(*row.findings, Finding("runs-as", "info", how)))
        rows.append(row)
    notes.append("checked the chain file's own certificates (" + ", ".join(
        f"{n}={m}" for n, m in origin.mode.items()) + ")")
    return CheckReport(tuple(rows), min_days, tuple(notes))

