"""Options and helpers the commands share: ``--config`` for the attach and azure targets, ``--chain`` (every command
that runs or judges a chain), SIGTERM handling."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from harness.errors import UsageError
from harness.targets.base import CONFIG_ENV

if TYPE_CHECKING:
    from harness.chainfile.load import LoadedChain

__all__ = ["CHAIN_ENV", "add_chain_option", "add_config_option", "apply_config_option", "chain_path",
           "load_chain_option",
           "print_chain_notes", "print_help_for_no_action", "terminate_on_sigterm"]

#: the environment variable --chain defaults to (harness.chainfile.load.CHAIN_ENV, named here for --help)
CHAIN_ENV = "MTLS_HARNESS_CHAIN"


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so `with` blocks unwind and every child is stopped."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, handler)


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


def add_chain_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chain", type=Path, metavar="FILE", default=None,
                        help=f"your chain file (docs/chain-file.md; `mtls-harness init` writes one); default: "
                             f"${CHAIN_ENV}, else the reference chain")


def chain_path(args: argparse.Namespace) -> Path | None:
    """``--chain``, else ``$MTLS_HARNESS_CHAIN``, else None (the reference chain)."""
    given: Path | None = getattr(args, "chain", None)
    if given is None and os.environ.get(CHAIN_ENV):
        given = Path(os.environ[CHAIN_ENV])
    return given


def load_chain_option(args: argparse.Namespace) -> LoadedChain | None:
    """The chain file of ``--chain`` / ``$MTLS_HARNESS_CHAIN`` loaded, its warnings on stderr; None without one."""
    path = chain_path(args)
    if path is None:
        return None
    from harness.chainfile.load import load_chain

    loaded = load_chain(path)
    print_chain_notes(loaded)
    return loaded


def print_chain_notes(loaded: LoadedChain) -> None:
    """What the harness does not model (by name) and, per identity, whether it runs the user's cert or a stand-in."""
    import sys

    for warning in loaded.warnings:
        print(f"mtls-harness: warning: {warning}", file=sys.stderr)
    modes = ", ".join(f"{name}={mode}" for name, mode in loaded.mode.items())
    print(f"mtls-harness: chain {loaded.topology.name!r} from {loaded.path}; identities: {modes}", file=sys.stderr)


def print_help_for_no_action(parser: argparse.ArgumentParser) -> int:
    """A command group called without its subcommand: its help on stderr, exit 2."""
    parser.print_help(sys.stderr)
    return 2
