"""``mtls-harness migrate --to gateway-api[:envoy-gateway] [--chain FILE]``: the chain's Ingresses as Gateway API
resources, and the ledger of what the migration keeps, changes and loses.

    mtls-harness migrate --chain chain.yaml --to gateway-api:envoy-gateway --out gateway-api/
    mtls-harness migrate --to gateway-api --json

Writes ``DIR/gateway-api.yaml`` (the Gateway, its HTTPRoutes, the BackendTLSPolicies and the CA ConfigMaps they name;
Secrets are referenced by name, never copied) and prints one line per security property: kept, changed (how) or lost,
with the source of both sides. Exit 1 when a property is lost, 0 otherwise, 2 for bad input (one line). The ledger
is the translation's, from the two APIs' documented fields: running the catalogue on the Gateway API chain is the part
of issue 20 not built yet (docs/gateway-api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.cli.options import add_chain_option, load_chain_option
from harness.errors import UsageError

__all__ = ["register"]

OUTPUT = "gateway-api.yaml"


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "migrate", help="your Ingresses as Gateway API resources, and what the migration keeps, changes and loses",
        description="Write the Gateway API resources equivalent to your chain's Ingresses and annotations "
                    "(--chain FILE, else $MTLS_HARNESS_CHAIN, else the reference chain) and print, per security "
                    "property, whether the migration keeps it, changes it or loses it, with sources. Exit 1 when "
                    "a property is lost. Starts nothing.",
        epilog="examples:\n  mtls-harness migrate --chain chain.yaml --to gateway-api:envoy-gateway --out gw/\n"
               "  mtls-harness migrate --to gateway-api --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chain_option(p)
    p.add_argument("--to", required=True, metavar="gateway-api[:IMPL]",
                   help="the ingress to migrate to: gateway-api (Envoy Gateway) or gateway-api:envoy-gateway")
    p.add_argument("--out", type=Path, default=Path("gateway-api"), metavar="DIR",
                   help=f"where {OUTPUT} is written (default: ./gateway-api)")
    p.add_argument("--force", action="store_true", help=f"replace an existing DIR/{OUTPUT}")
    p.add_argument("--json", action="store_true", help="print the ledger as one JSON document")
    p.set_defaults(func=cmd_migrate)


def _implementation(value: str) -> str:
    kind, _, impl = value.partition(":")
    if kind != "gateway-api":
        raise UsageError(f"--to {value}: the only migration is to gateway-api — use --to gateway-api or "
                         "--to gateway-api:envoy-gateway")
    return impl or "envoy-gateway"


def cmd_migrate(args: argparse.Namespace) -> int:
    import yaml

    from harness.pki.x509 import write_atomic
    from harness.render.gateway_api import translate

    implementation = _implementation(args.to)
    target = Path(args.out) / OUTPUT
    if target.exists() and not args.force:
        raise UsageError(f"--out {args.out}: {target} exists — pass --force to replace it, or another --out")
    loaded = load_chain_option(args)
    if loaded is not None:
        topology, certs = loaded.topology, loaded.certs
    else:
        from harness.model.topology import default_topology
        from harness.pki.certset import cert_set_for

        topology = default_topology()
        certs = cert_set_for(topology.pki)
    translation = translate(topology, certs, implementation=implementation)
    text = ("# Written by mtls-harness migrate from the chain's Ingresses (docs/gateway-api.md). The Secrets are "
            "referenced by name, as they are in the cluster.\n"
            + yaml.safe_dump_all(translation.documents, sort_keys=False, width=120))
    write_atomic(target, text.encode())
    counts = {v: sum(1 for p in translation.ledger if p.verdict == v) for v in ("kept", "changed", "lost")}
    if args.json:
        print(json.dumps({"schema": "mtls-harness/migrate/1", "to": f"gateway-api:{implementation}",
                          "chain": topology.name, "written": str(target), "counts": counts,
                          "ledger": [p.as_dict() for p in translation.ledger]}, indent=2))
    else:
        width = max((len(p.name) for p in translation.ledger), default=0)
        for p in translation.ledger:
            print(f"{p.verdict.upper():<7} {p.name:<{width}}  {p.host}: {p.ingress} → {p.gateway}")
            print(f"{'':<8}{'':<{width}}  source: {p.source}")
        print(f"wrote {target} ({len(translation.documents)} resources for gateway-api:{implementation})")
        print(f"migration ledger: {counts['kept']} kept, {counts['changed']} changed, {counts['lost']} lost — the "
              "translation's own account (the catalogue's run on the Gateway API chain is not built yet)",
              file=sys.stderr if counts["lost"] else sys.stdout)
    return 1 if counts["lost"] else 0
