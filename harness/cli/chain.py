"""``mtls-harness init`` and ``mtls-harness chain``: your chain as a file (docs/chain-file.md).

    mtls-harness init [DIR] [--key-type ecdsa|rsa] [--oauth] [--force]   the reference chain as a chain file + certs
    mtls-harness chain schema                                            the chain file's JSON Schema
    mtls-harness chain check [FILE]                                      load it: warnings, identities, the hops

Exit codes: 0 fine, 2 unusable input (one ``error:`` line: file, key path and YAML line, the value, the fix).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.options import CHAIN_ENV, chain_path, print_chain_notes, print_help_for_no_action
from harness.errors import UsageError

if TYPE_CHECKING:
    from harness.model.topology import Topology

__all__ = ["register"]


def register(subparsers: Any) -> None:
    init = subparsers.add_parser(
        "init", help="write the reference chain as a chain file plus its certs, to edit into yours",
        description="Write the reference chain into DIR (default: ./mtls-chain): chain.yaml, its JSON Schema, the "
                    "APIM policy XML, the Kubernetes YAML (Ingress, Secrets) and the certificates (keys 0600). "
                    "With --from-azure: your production chain as discovery reads it (public parts only; "
                    "docs/azure.md). "
                    "`mtls-harness up --chain DIR/chain.yaml` runs it; docs/chain-file.md says how to make it yours.")
    init.add_argument("directory", nargs="?", type=Path, default=Path("mtls-chain"), metavar="DIR")
    init.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa", help="key type (default: ecdsa)")
    init.add_argument("--oauth", action="store_true", help="APIM's policy also validates an Entra ID token")
    init.add_argument("--force", action="store_true", help="replace what DIR holds")
    init.add_argument("--example", metavar="NAME", default=None,
                      help="write an example chain of examples/ instead: reference, partner-mtls, passthrough")
    init.add_argument("--from-azure", metavar="AZURE_TOML", type=Path, default=None,
                      help="write YOUR chain as discovery reads it from Azure and the cluster (the azure target's "
                           "config, docs/azure.md): public parts only, labelled stand-ins for what no API shows")
    init.set_defaults(func=cmd_init)

    chain = subparsers.add_parser("chain", help="the chain file: print its JSON Schema, or check one",
                                  description="The chain file (docs/chain-file.md).")
    sub = chain.add_subparsers(dest="chain_command", metavar="ACTION", parser_class=type(chain))
    chain.set_defaults(func=lambda _args: print_help_for_no_action(chain))
    schema = sub.add_parser("schema", help="print the chain file's JSON Schema (for editors and CI)")
    schema.set_defaults(func=cmd_schema)
    check = sub.add_parser("check", help="load a chain file: what is not modelled, each identity, each hop",
                           description=f"Load FILE (default: ${CHAIN_ENV}) as `up --chain` would, without starting "
                                       "anything (the Envoy and nginx configs are rendered into a throwaway "
                                       "folder, so what `up` refuses, check refuses). Exit 0 when it loads, 2 with "
                                       "the one line that says why not.")
    check.add_argument("chain", nargs="?", type=Path, metavar="FILE")
    check.add_argument("--json", action="store_true", help="print the result as one JSON document")
    check.set_defaults(func=cmd_check)



def _init_from_azure(args: argparse.Namespace) -> int:
    import sys

    from harness.targets.azure.config import load_azure_config
    from harness.targets.azure.discovery import discover

    if args.example is not None or args.oauth or args.key_type != "ecdsa":
        raise UsageError("--from-azure writes the chain Azure holds: drop --example, --oauth and --key-type")
    if not args.from_azure.is_file():
        raise UsageError(f"--from-azure {args.from_azure}: no such file — give the azure target's TOML config "
                         "(docs/azure.md)")
    from harness.targets.azure.chain import write_discovered_chain

    config = load_azure_config(args.from_azure)
    parts = [f"{k} {v}" for k, v in (("App Gateway", config.app_gateway), ("APIM", config.apim),
                                     ("AKS", config.aks)) if v]
    print(f"mtls-harness: discovering {', '.join(parts) or 'nothing'} in resource group {config.resource_group} "
          "(read-only) …", file=sys.stderr, flush=True)
    disc = discover(config)
    found = write_discovered_chain(args.directory, disc, config, force=args.force)
    path = found.path
    print(f"wrote {path} (chain {found.document.name!r} from {config.where}; public parts only, "
          f"the discovery in {path.parent / 'discovery.json'})" if path else "")
    if found.notes:
        print(f"review these {len(found.notes)} stand-ins and assumptions (also at the top of chain.yaml):")
        for note in found.notes:
            print(f"  - {note}")
    print(f"the twin:  mtls-harness run --chain {path}")
    print(f"live:      mtls-harness run --target azure --config {args.from_azure} --chain {path} --twin")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    if args.from_azure is not None:
        return _init_from_azure(args)
    from harness.chainfile.init import write_chain
    from harness.model.topology import default_topology
    from harness.pki.certset import cert_set_for

    topology = default_topology(args.key_type)
    if args.example is not None:
        from harness.chainfile.examples import example_topology

        topology = example_topology(args.example)
    if args.oauth:
        from harness.oauth.issuer import with_oauth

        topology = with_oauth(topology)
    path = write_chain(args.directory, topology, cert_set_for(topology.pki), force=args.force)
    print(f"wrote {path} (chain {topology.name!r}; certs in {path.parent / 'certs'}, keys 0600)")
    print(f"run it: mtls-harness up --chain {path}")
    return 0


def cmd_schema(_args: argparse.Namespace) -> int:
    from harness.model.chainfile import chain_json_schema

    print(json.dumps(chain_json_schema(), indent=2))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from harness.chainfile.load import load_chain

    path = chain_path(args)
    if path is None:
        raise UsageError(f"chain check: no chain file — give FILE or set ${CHAIN_ENV}")
    loaded = load_chain(path)
    t = loaded.topology
    hops = {hop: {"host": t.listener_of(hop).hostname, "serves": t.listener_of(hop).server_cert,
                  "client_auth": t.listener_of(hop).client_auth, "client_ca": t.listener_of(hop).client_ca,
                  "client_auth_by": "TLS handshake" if t.listener_of(hop).client_auth != "none" else ""}
            for hop in t.iter_hops()}
    hops["apim"].update(_apim_client_auth(t))
    # every other host the controller serves, with its own client-cert check (its cases end @<host>)
    hosts = {h: {"host": h, "serves": (v := t.focus_on(h)).listener_of("ingress").server_cert,
                 "client_auth": v.listener_of("ingress").client_auth, "client_ca": v.listener_of("ingress").client_ca,
                 "client_auth_by": "TLS handshake" if v.listener_of("ingress").client_auth != "none" else ""}
             for h in t.ingress.hosts[1:]}
    from harness.report.findings import chain_findings, finding_lines, stale_acceptances

    findings = chain_findings(loaded)
    if args.json:
        print(json.dumps({"chain": str(loaded.path), "name": t.name, "identities": dict(loaded.mode),
                          "warnings": list(loaded.warnings), "hops": hops, "ingress_hosts": hosts,
                          "apis": [{"name": a.name, "path": a.path, "backend_host": a.hostname,
                                    "validate_certificate_chain": a.verify_chain,
                                    "validate_certificate_name": a.verify_name} for a in t.apim.apis],
                          "cert_set": str(loaded.certs.directory), "findings": findings}))
        return 0
    print_chain_notes(loaded)
    rows: list[tuple[str, dict[str, str | None]]] = [*hops.items()]
    rows[3:3] = [("  +host", info) for info in hosts.values()]  # after the ingress's home host
    for hop, info in rows:
        by = f" by the {info['client_auth_by']}" if info["client_auth_by"] else ""
        ca = f" (CA {info['client_ca']})" if info["client_ca"] and info["client_auth"] != "none" else ""
        print(f"{hop:8} {info['host']}  serves {info['serves']}  client auth {info['client_auth']}{by}{ca}")
        if hop == "apim":
            for api in t.apim.apis:
                checks = ", ".join(f"{what} {'on' if on else 'OFF'}" for what, on in (
                    ("chain check", api.verify_chain), ("name check", api.verify_chain and api.verify_name)))
                print(f"  +api   {api.path} → https://{api.hostname}/  ({api.name}: {checks})")
    if findings:
        print(f"{len(findings)} finding(s) predicted from the configuration (`mtls-harness run --chain` observes "
              "them; a run exits 1 for each one not accepted):")
        for line in finding_lines(findings, ran=False):
            print(f"  {line}")
    for stale in stale_acceptances(findings, loaded.accepted):
        print(f"  accept: {stale!r} is not a finding of this chain: remove the stale acceptance")
    return 0


def _apim_client_auth(t: Topology) -> dict[str, str]:
    """APIM's client-cert check as the service does it: negotiateClientCertificate asks for the cert in the TLS
    handshake, the validate-client-certificate policy (or its context.Request.Certificate form) decides: 401 for a
    missing cert or one not from the CA certificates (learn.microsoft.com/azure/api-management/
    api-management-howto-mutual-certificates-for-clients)."""
    apim = t.apim
    if apim.validate_client_certificate and apim.negotiate_client_certificate:
        return {"client_auth": "required", "client_auth_by": "policy validate-client-certificate (HTTP 401)"}
    if apim.validate_client_certificate:
        return {"client_auth": "required",
                "client_auth_by": "policy validate-client-certificate without negotiateClientCertificate: no "
                                  "cert reaches it, every request gets 401"}
    if apim.negotiate_client_certificate:
        return {"client_auth": "optional",
                "client_auth_by": "TLS handshake (negotiateClientCertificate; no policy verifies the cert)"}
    return {}
