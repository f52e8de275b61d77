"""Options and helpers the commands share: ``--config`` for the attach and azure targets, SIGTERM handling."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path
from types import FrameType

from harness.errors import UsageError
from harness.targets.base import CONFIG_ENV

__all__ = ["add_config_option", "apply_config_option", "terminate_on_sigterm"]


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
