"""mtls-harness: end-to-end mTLS tests for App Gateway → API Management → AKS ingress → pod chains.

Every user mistake (bad option, missing file, wrong password) ends in one ``error: …`` line and exit code 2; a
check that found problems exits 1; success exits 0. No traceback reaches the user for a HarnessError.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from harness import __version__
from harness.errors import HarnessError, UsageError
from harness.targets.base import CONFIG_ENV, TARGET_NAMES, RunningChain
from harness.topology import HOPS

__all__ = ["build_parser", "entry", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2 (argparse's own code for it)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `with` blocks unwind and every child is stopped."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


# ------------------------------------------------------------------------------------------------------------------
# up
# ------------------------------------------------------------------------------------------------------------------
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
    gw = chain.entry
    inside = " ".join(getattr(chain, "client_argv_prefix", []))  # --isolate: clients run in the internet namespace
    console.print(
        f"try: {inside + ' ' if inside else ''}curl --cacert {gw.trust} --resolve {gw.server_name}:{gw.port}:{gw.host} "
        f"https://{gw.server_name}:{gw.port}/", soft_wrap=True)
    console.print("Ctrl-C stops the chain.")


def apply_config_option(target: str, config: Path | None) -> None:
    """``--config FILE`` for the attach and azure targets: checked here, handed on through their variable."""
    if config is None:
        return
    if target not in CONFIG_ENV:
        raise UsageError(f"--config is for --target attach or azure, not {target!r} — drop --config or pick one")
    if not config.is_file():
        raise UsageError(f"--config {config}: no such file — give the TOML file (see docs/azure.md)")
    os.environ[CONFIG_ENV[target]] = str(config.resolve())


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", default=None,
                        help="the TOML config of --target attach or azure (docs/azure.md); default: "
                             "$MTLS_HARNESS_ATTACH_CONFIG / $MTLS_HARNESS_AZURE_CONFIG")


def _cmd_up(args: argparse.Namespace) -> int:
    from harness.targets import open_target

    apply_config_option(args.target, args.config)
    if args.isolate:  # the local chain with each hop in its own network namespace (docs/isolation.md)
        from harness.targets.isolated import open_isolated as open_target
    _terminate_on_sigterm()
    t0 = time.perf_counter()
    topology = None
    if args.oauth:  # APIM's validate-jwt against the harness's local Entra ID issuer (docs/oauth.md)
        from harness.oauth import with_oauth
        from harness.topology import default_topology

        topology = with_oauth(default_topology(args.key_type))
    try:
        with open_target(args.target, topology=topology, key_type=args.key_type) as chain:
            started_in = time.perf_counter() - t0
            if args.json:
                doc = chain.as_dict() | {"started_in_ms": round(started_in * 1000, 1)}
                print(json.dumps(doc), flush=True)
            else:
                _print_chain(chain, started_in)
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
    except KeyboardInterrupt:
        print("stopping the chain", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------------------------------------------
# parser
# ------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mtls-harness", description=__doc__.splitlines()[0] if __doc__ else None,
                     epilog="docs: README.md and docs/ in the repository; every command has --help")
    parser.add_argument("--version", action="version", version=f"mtls-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    up.set_defaults(func=_cmd_up)

    from harness import cli_certs, cli_images

    cli_certs.register(sub)
    cli_images.register(sub)
    from harness import cli_run

    cli_run.register(sub)
    from harness import cli_rotate

    cli_rotate.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"mtls-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except HarnessError as exc:
        print(f"mtls-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The console script and ``python -m harness``: ``main()``, with a Ctrl-C that lands after a command has
    already cleaned up (a signal held during cleanup is re-raised late) still ending in exit code 130."""
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    # Under `python -m`, CPython ends the process by SIGINT (exit -2, whatever code we pass) if a KeyboardInterrupt
    # ever escaped a nested exec() of source text, even one we caught: a Ctrl-C landing while a lazy import builds
    # a dataclass or namedtuple does that. Each exec() of source text clears that record first (run_eval_code_obj
    # in Python/pythonrun.c, 3.8-3.13), so the code we chose is the code the caller sees.
    exec("pass")  # noqa: S102 - a constant, see above
    sys.exit(code)
