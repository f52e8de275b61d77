"""``mtls-harness up``: stand the chain up, print its endpoints, keep it running until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from harness.cli.options import (
    add_chain_option,
    add_config_option,
    apply_config_option,
    load_chain_option,
    terminate_on_sigterm,
)
from harness.errors import UsageError
from harness.model.topology import HOPS
from harness.targets.base import TARGET_NAMES, RunningChain

__all__ = ["OWN_CERT_TARGETS", "register", "try_curl"]

#: targets that run the chain themselves and so take the chain file's cert set
OWN_CERT_TARGETS = ("local", "containers", "kind")


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="stand the chain up and print its endpoints; Ctrl-C stops it",
                        description="Stand the chain up, print each hop's endpoint, CA bundle and client "
                                    "identity, and keep it running until Ctrl-C (or SIGTERM).")
    up.add_argument("--target", choices=TARGET_NAMES, default="local", help="where the chain runs (default: local)")
    up.add_argument("--json", action="store_true", help="print the endpoints as one JSON document (for scripts)")
    up.add_argument("--isolate", action="store_true",
                    help="every hop in its own network namespace, clients only inside them (Linux, root; "
                         "docs/isolation.md)")
    up.add_argument("--key-type", choices=("ecdsa", "rsa"), default="ecdsa",
                    help="key type of the generated cert set (default: ecdsa, P-256)")
    up.add_argument("--oauth", action="store_true",
                    help="APIM also demands an Entra ID bearer token (validate-jwt; tokens from the harness's local "
                         "issuer, see docs/oauth.md)")
    up.add_argument("--duration", type=float, metavar="SECONDS", default=None,
                    help="stop by itself after SECONDS (default: run until Ctrl-C)")
    add_config_option(up)
    add_chain_option(up)
    up.set_defaults(func=_cmd_up)


def _print_chain(chain: RunningChain, started_in: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 120)
    table = Table(title=f"mtls-harness: chain up on the {chain.target} target in {started_in * 1000:.0f} ms")
    for col in ("hop", "endpoint", "server name (SNI)", "its caller trusts", "its caller presents"):
        table.add_column(col, overflow="fold")
    for hop in HOPS:
        ep = chain.endpoints.get(hop)
        if ep is None:
            continue
        table.add_row(hop, f"{ep.host}:{ep.port}", ep.server_name, ep.trust.name if ep.trust else "-",
                      ep.client_cert.parent.name if ep.client_cert else "-")
    console.print(table)
    console.print(f"cert set: {chain.certs.directory} (trust bundles in bundles/, identities in leaves/)",
                  soft_wrap=True)
    console.print(try_curl(chain), soft_wrap=True)
    console.print("Ctrl-C stops the chain.")


def try_curl(chain: RunningChain) -> str:
    """The ``try: curl …`` line: with ``--cert``/``--key`` (the client identity's files, never their content) when the
    gateway asks for a client certificate (App Gateway mTLS Strict / Passthrough)."""
    gw = chain.entry
    inside = " ".join(getattr(chain, "client_argv_prefix", []))  # --isolate: clients run in the internet namespace
    cert = ""
    asks = chain.topology.gateway.listener.client_auth != "none"
    if asks and gw.client_cert is not None and gw.client_key is not None:
        cert = f"--cert {gw.client_cert} --key {gw.client_key} "
    line = (f"try: {inside + ' ' if inside else ''}curl {cert}--cacert {gw.trust} "
            f"--resolve {gw.server_name}:{gw.port}:{gw.host} https://{gw.server_name}:{gw.port}/")
    if asks and not cert:
        line += ("\n(the gateway asks for a client certificate: give curl --cert/--key of an identity its trusted "
                 "client CA issued — with --chain, set client.certificate)")
    return line


def _cmd_up(args: argparse.Namespace) -> int:
    from harness.targets import open_target

    apply_config_option(args.target, args.config)
    if args.isolate:  # the local chain with each hop in its own network namespace (docs/isolation.md)
        from harness.targets.isolated import open_isolated as open_target
    terminate_on_sigterm()
    t0 = time.perf_counter()
    topology = None
    options: dict[str, Any] = {}
    loaded = load_chain_option(args)
    if loaded is not None:
        if args.oauth:
            raise UsageError(f"--oauth with --chain {loaded.path}: the chain's APIM policy says whether tokens are "
                             "checked — add validate-jwt to it, or drop --oauth")
        topology = loaded.topology
        if args.target in OWN_CERT_TARGETS:  # the targets that run the chain with a cert set of their own
            options["certs"] = loaded.certs
    elif args.oauth:  # APIM's validate-jwt against the harness's local Entra ID issuer (docs/oauth.md)
        from harness.model.topology import default_topology
        from harness.oauth.issuer import with_oauth

        topology = with_oauth(default_topology(args.key_type))
    try:
        with open_target(args.target, topology=topology, key_type=args.key_type, **options) as chain:
            started_in = time.perf_counter() - t0
            if args.json:
                doc = chain.as_dict() | {"started_in_ms": round(started_in * 1000, 1)}
                print(json.dumps(doc), flush=True)
            else:
                _print_chain(chain, started_in)
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
            print(f"stopped after {args.duration:g} s (--duration); stopping the chain", file=sys.stderr)
    except KeyboardInterrupt:
        print("stopping the chain", file=sys.stderr)
    return 0
