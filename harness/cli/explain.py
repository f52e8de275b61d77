"""``mtls-harness explain [--chain FILE] CASE_ID``: what a case will send, what it expects on YOUR chain, and why.

    mtls-harness explain ingress-rejects-client-cert-unknown-ca-tls1.2 --chain chain.yaml
    mtls-harness explain gateway-refuses-tls1.0 --json

It prints the probe (which hop, how it is reached, the identity presented, the TLS and HTTP options, the variant of
the chain it runs on), the expectation the catalogue writes with its source, and — when a setting of your chain
changes it — the finding, its rule and source, the setting with its ``file:line``, and the outcomes that then count
as a finding, a pass or a failure (docs/findings.md). Nothing is started. Exit 0; 2 for an unknown case id or an
unusable chain file (one line).
"""

from __future__ import annotations

import argparse
import difflib
import json
from typing import Any

from harness.cli.options import add_chain_option, load_chain_option
from harness.errors import UsageError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "explain", help="what a case sends, what it expects on your chain, the rules and their sources",
        description="Explain CASE_ID on your chain (--chain FILE, else $MTLS_HARNESS_CHAIN, else the reference "
                    "chain): the probe, the expected outcome with its source, and the finding of your "
                    "configuration that changes it, with the setting's file and line. Starts nothing.",
        epilog="examples:\n  mtls-harness explain ingress-rejects-missing-client-cert-tls1.2 --chain chain.yaml\n"
               "  mtls-harness explain gateway-refuses-tls1.0 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case_id", metavar="CASE_ID", help="a case id, as the report and `mtls-harness run` print it")
    add_chain_option(p)
    p.add_argument("--json", action="store_true", help="print the explanation as one JSON document")
    p.set_defaults(func=cmd_explain)


def _case(case_id: str, topology: Any) -> Any:
    """The case ``case_id`` of the catalogue generated for ``topology`` (its hosts' cases end ``@<host>``)."""
    from harness.cases.catalogue import catalogue_for

    by_id = {c.id: c for c in catalogue_for(topology)}
    if case_id in by_id:
        return by_id[case_id]
    close = difflib.get_close_matches(case_id, list(by_id), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "the report, results.json and `mtls-harness run` name them"
    raise UsageError(f"explain: {case_id!r} is not a case id of the {len(by_id)} generated for this chain — {hint}")


def _identity_words(identity: str | None, caller: str | None) -> str:
    if identity is None:
        return "no client certificate"
    base, _, fault = identity.partition("~")
    own = " (the caller's own)" if identity == caller else ""
    return f"{base}{own}" + (f" with the {fault} fault (harness/pki/faults.py)" if fault else "")


def explain(case: Any, loaded: Any, topology: Any) -> dict[str, Any]:
    """The explanation of ``case`` on ``topology`` (``loaded``: its chain file, or None for the reference)."""
    from harness.cases.model import DEFAULT_IDENTITY, needs_reference
    from harness.findings.predict import CaseFacts, prediction_for

    doc: dict[str, Any] = {"case": case.id, "hop": case.hop, "group": case.group, "column": case.column,
                           "chain": str(loaded.path) if loaded is not None else "the reference chain",
                           "expected": str(case.expect), "source": case.source}
    topology = topology.focus_on(case.host)  # a case of another ingress host: the views of that host
    skip = needs_reference(case, topology)
    if skip is not None:
        doc["skips"] = skip
        return doc
    t = case.variant(topology) if case.variant is not None else topology
    target = "gateway" if case.via == "chain" else (case.endpoint or case.hop)
    caller = t.caller_of(target).client_cert
    identity = caller if case.identity == DEFAULT_IDENTITY else case.identity
    options = {k: v for k, v in case.probe.items() if k != "headers"}
    doc["probe"] = {
        "to": target, "host": t.listener_of(target).hostname,
        "how": "a request through the gateway, as the internet client" if case.via == "chain" else
        f"directly to the {target}, as its caller ({'the client' if target == 'gateway' else 'the hop before'})",
        "presents": _identity_words(identity, caller), "options": options,
        "variant": getattr(case.variant, "__name__", "variant").strip("_").replace("_", " ")
        if case.variant is not None else None,
        "trusts": "the caller's configured CA" if case.caller_trust else f"the root of {target}'s server cert",
    }
    p = prediction_for(t, CaseFacts(case.expect, identity, case.probe.get("max_version"), target))
    if p is not None and p.finding is None:
        doc["rule"] = {"rule": p.rule, "passes_if": [str(p.refused)] if p.refused is not None else []}
    elif p is not None and p.finding is not None:
        f = p.finding
        doc["finding"] = {
            "id": f.id, "property": f.property.statement, "rule_source": f.source,
            "setting": f.setting.text,
            "where": loaded.where(f.setting) if loaded is not None else "the reference chain",
            "lets_through": f.lets_through,
            "finding_if": [str(o) for o in (p.through,) if o is not None]
            + ([f"anything but {p.gone}"] if p.gone is not None else []),
            "passes_if": [str(p.refused)] if p.refused is not None else [],
            "intermittent": f.intermittent,
        }
    return doc


def _print(doc: dict[str, Any]) -> None:
    print(f"{doc['case']}  ({doc['hop']}, {doc['group']}: {doc['column']}) on {doc['chain']}")
    if "skips" in doc:
        print(f"  skips on this chain (by design): {doc['skips']}")
        print(f"  expected where it runs: {doc['expected']}\n  source: {doc['source']}")
        return
    pr = doc["probe"]
    print(f"  probe:     {pr['how']}: {pr['to']} at {pr['host']}")
    print(f"             presents {pr['presents']}; trusts {pr['trusts']}")
    if pr["options"]:
        print(f"             options {', '.join(f'{k}={v}' for k, v in pr['options'].items())}")
    print(f"  chain:     {'variant: ' + pr['variant'] if pr['variant'] else 'as it is (no variant)'}")
    print(f"  catalogue: {doc['expected']}\n             source: {doc['source']}")
    if "rule" in doc:
        print(f"  your chain changes it (no weakness): {doc['rule']['rule']}")
        print(f"  verdict:   PASS if {' or '.join(doc['rule']['passes_if'])}; FAIL otherwise")
        return
    f = doc.get("finding")
    if f is None:
        print("  your chain: no setting of it changes this expectation — the case passes only on exactly that "
              "outcome, decided by that hop for that cause")
        return
    print(f"  your chain changes it: FINDING {f['id']}")
    print(f"             property: {f['property']} (source: {f['rule_source']})")
    print(f"             set by {f['setting']}\n             at {f['where']}")
    print(f"             lets through: {f['lets_through']}")
    rules = [f"FINDING if {' or '.join(f['finding_if'])}"] if f["finding_if"] else []
    if f["passes_if"]:
        why = ("the weak path was not taken this time" if f.get("intermittent") else
               "refused all the same, by another check")
        rules.append(f"PASS if {' or '.join(f['passes_if'])} ({why})")
    print(f"  verdict:   {'; '.join(rules)}; FAIL otherwise")


def cmd_explain(args: argparse.Namespace) -> int:
    loaded = load_chain_option(args)
    if loaded is not None:
        topology = loaded.topology
    else:
        from harness.model.topology import default_topology

        topology = default_topology()
    case = _case(args.case_id, topology)
    doc = explain(case, loaded, topology)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print(doc)
    return 0
